//! A device delete (DeletesAsMoves, the default) for a user without a
//! Trash folder: the device shows the message in Deleted Items, so it must
//! end up there, never expunged. Against a private Dovecot configured
//! without a `Trash` mailbox (`scripts/dovecot-private --no-trash`): the
//! shared one marks `Trash` `\Trash` and creates it again whenever it is
//! looked at, so there a user always has one.
//!
//! Reserved Dovecot users: load1337, load1338 (on the private instances).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, services, sync_one, sync_req, DeviceFolder};

use std::sync::Arc;

use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest};
use opush_protocol::commands::sync::{ClientCommand, CommandResponse};
use opush_protocol::commands::{ServerId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_server::backends::imap::ImapPool;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::sync::sync;
use opush_server::config::ImapConfig;
use opush_server::session::EasServices;
use opush_tests::{repo_root, unique, PrivateDovecot, RawImap};

/// The EAS services over a fresh store in `dir`, their IMAP on `dovecot`
/// with `folder_trash` as the configured Trash name.
async fn services_on(
    dir: &tempfile::TempDir,
    dovecot: &PrivateDovecot,
    folder_trash: &str,
) -> EasServices {
    let mut eas = services(dir).await;
    let imap = ImapConfig {
        port: dovecot.port,
        timeout_ms: 5_000,
        folder_trash: folder_trash.to_owned(),
        ..eas.imap.config().clone()
    };
    eas.imap = Arc::new(ImapPool::new(imap));
    eas
}

/// The mailboxes LIST shows (name → attributes line).
fn mailboxes(raw: &mut RawImap) -> Vec<String> {
    let (lines, ok) = raw.cmd("LIST \"\" \"*\" RETURN (SUBSCRIBED SPECIAL-USE)");
    assert!(ok.starts_with("OK"), "{ok}");
    lines.into_iter().map(|l| l.trim_end().to_owned()).collect()
}

/// What a device holds after [`set_up`].
struct Device {
    /// Its FolderSync key.
    folder_key: String,
    /// Its INBOX's CollectionId.
    inbox: String,
    /// Its INBOX's SyncKey.
    key: String,
    /// The message's ServerId.
    id: String,
    /// The message's subject.
    subject: String,
}

/// A user with no Trash folder and one message in INBOX, then a device
/// that synced the hierarchy and INBOX.
async fn set_up(raw: &mut RawImap, eas: &EasServices, user: &str, device: &str) -> Device {
    // A previous run may have created it.
    raw.cmd("DELETE Trash");
    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    raw.ok("UNSELECT");
    let listed = mailboxes(raw);
    assert!(
        !listed
            .iter()
            .any(|l| l.contains("\\Trash") || l.ends_with(" Trash")),
        "the user must have no Trash folder: {listed:?}"
    );
    let subject = unique("no-trash");
    raw.append_to_inbox(&subject);

    let fs = folder_sync(&folder_req("0"), &caller(user, device), eas)
        .await
        .unwrap();
    let folders = fs.changes.unwrap_or_default();
    assert!(
        folders
            .iter()
            .all(|c| matches!(c, FolderChange::Add(f) if f.folder_type != 4)),
        "no Deleted Items yet: {folders:?}"
    );
    let inbox = folders
        .iter()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 2 => Some(f.server_id.0.clone()),
            _ => None,
        })
        .unwrap();
    let r0 = sync_one(eas, &caller(user, device), &sync_req(&inbox, "0")).await;
    let r1 = sync_one(
        eas,
        &caller(user, device),
        &sync_req(&inbox, &r0.sync_key.0),
    )
    .await;
    let mut shown = DeviceFolder::default();
    shown.apply(&r1);
    Device {
        folder_key: fs.sync_key.unwrap().0,
        inbox,
        key: r1.sync_key.0.clone(),
        id: shown.id_of(&subject),
        subject,
    }
}

fn folder_req(key: &str) -> FolderSyncRequest {
    FolderSyncRequest {
        sync_key: SyncKey(key.to_owned()),
    }
}

/// The device deletes `id` of `inbox` (DeletesAsMoves absent: true).
fn delete(inbox: &str, key: &str, id: &str) -> opush_protocol::commands::sync::SyncRequest {
    let mut req = sync_req(inbox, key);
    req.collections[0].commands = Some(vec![ClientCommand::Delete {
        class: None,
        server_id: ServerId(id.to_owned()),
        instance_id: None,
    }]);
    req
}

// [MS-ASCMD] 2.2.3.43 DeletesAsMoves: the deleted message goes to the
// Deleted Items folder; a user without one gets it created.
#[tokio::test]
async fn a_delete_without_a_trash_folder_creates_it_and_moves_the_message_there() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let (user, device) = ("load1337@load.test", "NOTRASH1");
    let dovecot =
        PrivateDovecot::new(repo_root().join("target/tmp/no-trash-create"), 11760).without_trash();
    dovecot.run("up");
    let dir = tempfile::tempdir().unwrap();
    let eas = services_on(&dir, &dovecot, "Trash").await;
    let mut raw = RawImap::login_to(dovecot.addr(), user);
    let Device {
        folder_key,
        inbox,
        key,
        id,
        subject,
    } = set_up(&mut raw, &eas, user, device).await;

    let r2 = sync_one(&eas, &caller(user, device), &delete(&inbox, &key, &id)).await;
    assert!(r2.responses.is_none(), "the delete failed: {r2:?}");
    assert!(raw.search_subject("INBOX", &subject).is_empty());
    let listed = mailboxes(&mut raw);
    assert!(
        listed
            .iter()
            .any(|l| l.ends_with(" Trash") && l.contains("\\Subscribed")),
        "Trash created and subscribed: {listed:?}"
    );
    assert_eq!(
        raw.search_subject("Trash", &subject).len(),
        1,
        "the message is in Trash"
    );

    // The device learns of Deleted Items at its next FolderSync.
    let fs = folder_sync(&folder_req(&folder_key), &caller(user, device), &eas)
        .await
        .unwrap();
    let changes = fs.changes.unwrap_or_default();
    assert!(
        changes.iter().any(|c| matches!(
            c,
            FolderChange::Add(f) if f.display_name == "Trash" && f.folder_type == 4
        )),
        "{changes:?}"
    );
}

// The Trash folder cannot be created (the configured name is one the
// server refuses): the delete fails, the message stays in INBOX; without
// DeletesAsMoves it is deleted for good as before.
#[tokio::test]
async fn a_delete_whose_trash_folder_cannot_be_created_fails_and_keeps_the_message() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let (user, device) = ("load1338@load.test", "NOTRASH2");
    let dovecot =
        PrivateDovecot::new(repo_root().join("target/tmp/no-trash-refused"), 11761).without_trash();
    dovecot.run("up");
    let dir = tempfile::tempdir().unwrap();
    // Dovecot: "NO [CANNOT] Invalid mailbox name: Has adjacent hierarchy separators".
    let eas = services_on(&dir, &dovecot, "Deleted//Items").await;
    let mut raw = RawImap::login_to(dovecot.addr(), user);
    let Device {
        inbox,
        key,
        id,
        subject,
        ..
    } = set_up(&mut raw, &eas, user, device).await;

    let res = sync(
        &delete(&inbox, &key, &id),
        ProtocolVersion::V14_1,
        &caller(user, device),
        &eas,
    )
    .await
    .unwrap();
    let r2 = &res.collections[0];
    assert_eq!(r2.status.map(|s| s.code()), Some(1), "{r2:?}");
    let failed = r2.responses.as_deref().unwrap_or_default();
    assert!(
        matches!(
            failed,
            [CommandResponse::Delete { server_id, status, .. }]
                if server_id.0 == id && status.code() != 1
        ),
        "the delete is answered failed: {failed:?}"
    );
    assert_eq!(raw.search_subject("INBOX", &subject).len(), 1);
    let listed = mailboxes(&mut raw);
    assert!(
        !listed
            .iter()
            .any(|l| l.contains("\\Trash") || l.contains("Deleted")),
        "{listed:?}"
    );

    // DeletesAsMoves 0: deleted for good, no Trash needed.
    let mut again = delete(&inbox, &r2.sync_key.0, &id);
    again.collections[0].deletes_as_moves = Some(false);
    let r3 = sync_one(&eas, &caller(user, device), &again).await;
    assert!(r3.responses.is_none(), "{r3:?}");
    assert!(raw.search_subject("INBOX", &subject).is_empty());
}
