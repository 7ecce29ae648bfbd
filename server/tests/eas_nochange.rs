//! A caught-up device's no-change Sync costs Dovecot next to nothing, and
//! still sees every change. Its connection keeps the folder selected after
//! the last window, so the next Sync is a NOOP there: no STATUS and no
//! SELECT. A STATUS of INBOX would make Dovecot (maildir, mailbox list
//! index, as in the stack) re-read the folder's whole UID list once the
//! connection has the list index open, which a FolderSync's LIST on the
//! same pooled connection does: 2-9 ms at 10,000 messages, on every Sync
//! (docs/BENCHMARKS.md, "Session 7: no-change STATUS"). This test counts
//! the commands, never the time.
//!
//! Against the real Dovecot. After the no-change Syncs, another connection
//! flags, expunges and appends, and the next Sync on the kept selection
//! reports each exactly once. A retried SyncKey answers the same. Then the
//! device is caught up and quiet again.
//!
//! A STATUS of the mailbox a connection has selected (Ping's and a
//! waiting Sync's check) is a NOOP then that STATUS, current and keeping
//! the selection.
//!
//! Reserved Dovecot users: load0059, load0060.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use opush_protocol::commands::sync::{SyncCollectionRequest, SyncCollectionResponse, SyncRequest};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_server::session::EasServices;
use opush_tests::{require, unique, RawImap, DOVECOT_IMAP};

const USER: &str = "load0059@load.test";
const DEVICE: &str = "DEVNOCHANGE";

fn request(inbox: &str, key: &str) -> SyncRequest {
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(inbox.to_owned()),
            window_size: Some(10),
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

async fn one(eas: &EasServices, inbox: &str, key: &str) -> SyncCollectionResponse {
    eas_support::sync_one(eas, &caller(USER, DEVICE), &request(inbox, key)).await
}

use eas_support::DeviceFolder as Device;

/// (STATUS, SELECT/EXAMINE) the pool's connections have sent so far.
fn costs(eas: &EasServices) -> (u64, u64) {
    (eas.imap.statuses(), eas.imap.mailbox_opens())
}

/// `rounds` no-change Syncs: each answers nothing new and keeps the key's
/// meaning; returns the last key.
async fn quiet(eas: &EasServices, inbox: &str, mut key: String, rounds: usize) -> String {
    for _ in 0..rounds {
        let r = one(eas, inbox, &key).await;
        assert!(r.commands.as_ref().is_none_or(|c| c.is_empty()), "{r:?}");
        assert!(!r.more_available);
        key = r.sync_key.0;
    }
    key
}

#[tokio::test]
async fn a_caught_up_sync_is_a_noop_on_the_kept_selection_and_sees_every_change() {
    require(DOVECOT_IMAP);
    let tag = unique("nc");
    let mut raw = RawImap::login(USER);
    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    let m = |i: u32| format!("{tag} m{i:02}");
    for i in 0..25 {
        raw.append_to_inbox(&m(i));
    }

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    // The FolderSync's LIST runs on the pooled connection the Syncs then
    // use: Dovecot's list index is open there, as in production.
    let inbox = first_folder_sync(&eas, &caller(USER, DEVICE))
        .await
        .of_type(2);
    let mut device = Device::default();
    let mut key = one(&eas, &inbox, "0").await.sync_key.0;
    let mut windows = 0;
    loop {
        let r = one(&eas, &inbox, &key).await;
        device.apply(&r);
        key = r.sync_key.0.clone();
        windows += 1;
        assert!(windows < 10, "the initial sync does not end");
        if !r.more_available {
            break;
        }
    }
    assert_eq!(device.items.len(), 25);
    // Whatever runs in the background after a window (read-ahead) is back.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;

    // Caught up: the no-change Syncs send neither STATUS nor SELECT (each
    // is a NOOP on the selection the last window kept).
    let before = costs(&eas);
    key = quiet(&eas, &inbox, key, 5).await;
    assert_eq!(
        costs(&eas),
        before,
        "(STATUS, SELECT/EXAMINE) sent by 5 no-change Syncs of a caught-up device"
    );

    // Changes made by another session reach the device through that
    // selection, each once: a flag, an expunge, a new message.
    let flag = m(3);
    let gone = m(7);
    let u = raw.inbox_uid(&flag);
    raw.ok(&format!("UID STORE {u} +FLAGS (\\Flagged)"));
    let u = raw.inbox_uid(&gone);
    raw.ok(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
    raw.ok(&format!("UID EXPUNGE {u}"));
    let new = format!("{tag} new");
    raw.append_to_inbox(&new);
    let first = one(&eas, &inbox, &key).await;
    // A lost answer: the same key answers the same.
    let again = one(&eas, &inbox, &key).await;
    assert_eq!(again, first, "a retried SyncKey answers the same");
    assert_eq!(device.apply(&first), (1, 1, 1), "{first:?}");
    assert!(!first.more_available);
    key = first.sync_key.0.clone();
    assert_eq!(device.shown(&flag).map(|s| s.flagged), Some(true));
    assert_eq!(device.shown(&gone).map(|s| s.flagged), None);
    assert_eq!(device.shown(&new).map(|s| s.flagged), Some(false));
    assert_eq!(device.items.len(), 25);

    // Caught up again: quiet and cheap again.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let before = costs(&eas);
    quiet(&eas, &inbox, key, 5).await;
    assert_eq!(
        costs(&eas),
        before,
        "(STATUS, SELECT/EXAMINE) sent by 5 no-change Syncs after a change"
    );

    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
}

#[tokio::test]
async fn a_status_of_the_selected_mailbox_is_current_and_keeps_the_selection() {
    const OTHER: &str = "load0060@load.test";
    require(DOVECOT_IMAP);
    let tag = unique("ncs");
    let mut raw = RawImap::login(OTHER);
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let password = opush_server::config::Secret::new(opush_tests::demo_password());
    let mut s = eas.imap.get(OTHER, &password).await.unwrap();
    s.list_folders(false).await.unwrap();
    s.select("INBOX").await.unwrap();
    let before = s.status("INBOX").await.unwrap();
    // Another session appends, then marks the new message read.
    raw.append_to_inbox(&format!("{tag} a"));
    let added = s.status("INBOX").await.unwrap();
    assert_eq!(
        added.messages,
        before.messages + 1,
        "{before:?} → {added:?}"
    );
    assert_eq!(added.uidnext, before.uidnext + 1);
    assert_eq!(added.unseen, before.unseen + 1);
    assert!(added.highestmodseq > before.highestmodseq);
    let u = raw.inbox_uid(&format!("{tag} a"));
    raw.ok(&format!("UID STORE {u} +FLAGS (\\Seen)"));
    let seen = s.status("INBOX").await.unwrap();
    assert_eq!(seen.unseen, before.unseen, "{added:?} → {seen:?}");
    assert!(seen.highestmodseq > added.highestmodseq);
    // Still selected, never selected again.
    assert_eq!(s.selected_mailbox(), Some("INBOX"));
    assert_eq!(s.mailbox_opens(), 1);
    drop(s);
    raw.ok("SELECT INBOX");
    raw.ok(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
    raw.ok(&format!("UID EXPUNGE {u}"));
}
