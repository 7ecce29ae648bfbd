//! Handlers reach IMAP as the device's own user, with the password the
//! request authenticated with, against the real Dovecot: a wrong password
//! is refused by Dovecot (401 at the HTTP edge) even though the master user
//! is configured; with `[imap] master_for_requests` the master user serves
//! the handlers and the request's password is not used; without any master
//! user the handlers still work.
//!
//! Uses Dovecot user load0038 read-only (a FolderSync listing), shared with
//! eas_search, which only writes INBOX messages.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, services};

use opush_protocol::commands::folder_sync::FolderSyncRequest;
use opush_protocol::commands::SyncKey;
use opush_server::backends::imap::ImapPool;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::CommandError;
use opush_server::config::Secret;
use opush_server::session::{Caller, EasServices};
use opush_tests::{require, DOVECOT_IMAP};

const USER: &str = "load0038@load.test";

fn first() -> FolderSyncRequest {
    FolderSyncRequest {
        sync_key: SyncKey("0".to_owned()),
    }
}

async fn with_imap(
    dir: &tempfile::TempDir,
    edit: impl FnOnce(&mut opush_server::config::ImapConfig),
) -> EasServices {
    let mut eas = services(dir).await;
    let mut cfg = eas.imap.config().clone();
    edit(&mut cfg);
    eas.imap = std::sync::Arc::new(ImapPool::new(cfg));
    eas
}

#[tokio::test]
async fn handlers_log_in_as_the_device_user() {
    require(DOVECOT_IMAP);
    let bad = Secret::new("not-the-password");

    // Master user configured, but not for requests: the request's own
    // password decides.
    let dir = tempfile::tempdir().unwrap();
    let eas = with_imap(&dir, |_| {}).await;
    assert!(!eas.imap.config().master_for_requests);
    let res = folder_sync(&first(), &Caller::new(USER, "DEVCRED1", &bad), &eas).await;
    assert!(
        matches!(&res, Err(CommandError::CredentialsRejected(u)) if u.contains("load0038")),
        "{res:?}"
    );
    let ok = folder_sync(&first(), &caller(USER, "DEVCRED1"), &eas)
        .await
        .unwrap();
    assert_eq!(ok.status.code(), 1);
    assert!(ok.changes.is_some_and(|c| !c.is_empty()));

    // No master user at all: handlers still work with the device's password.
    let dir = tempfile::tempdir().unwrap();
    let eas = with_imap(&dir, |c| {
        c.master_user = None;
        c.master_password = None;
    })
    .await;
    let ok = folder_sync(&first(), &caller(USER, "DEVCRED2"), &eas)
        .await
        .unwrap();
    assert_eq!(ok.status.code(), 1);

    // `master_for_requests`: the master user logs in for the handler, the
    // request's password plays no part.
    let dir = tempfile::tempdir().unwrap();
    let eas = with_imap(&dir, |c| c.master_for_requests = true).await;
    let ok = folder_sync(&first(), &Caller::new(USER, "DEVCRED3", &bad), &eas)
        .await
        .unwrap();
    assert_eq!(ok.status.code(), 1);
}
