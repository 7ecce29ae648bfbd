//! Records, against the stack's Dovecot, the two sessions whose decisions
//! the last two gates of format 8 changed, exports each from the embedded
//! store and replays it: every decision must come out the same.
//!
//! - `stale-move` (user load1196): the device moves an item it shows with
//!   flags another IMAP client changed since, opush not having observed
//!   it (`Rules::move_judges_copy_by_moved_flags`).
//! - `refused-change` (user load1197): a Change refused with Status 7 (the
//!   server's version wins) in a window too small to carry the server's
//!   version; the other client then puts the flags back as the device had
//!   them before (`Rules::refused_change_refreshes_copy`).
//!
//! With `UPDATE_REPLAY=1` each bundle is also written to
//! `tests/replay/<name>.bundle`. The same file, built at the commit before
//! format 8's changes (df8a855, as for `retries-v7.bundle`) in a temporary
//! worktree, recorded the old answers (it asserts what its engine's format
//! answers): those are `tests/replay/stale-move-v7.bundle` and
//! `refused-change-v7.bundle`, which must keep replaying with the answers
//! format 7 gave (`replay/tests/bundles.rs`, `GATES`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services, sync_one, sync_req};

use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::move_items::{Move, MoveItemsRequest, MoveItemsResponse};
use opush_protocol::commands::sync::{
    ClientCommand, CommandResponse, ServerCommand, SyncCollectionResponse,
};
use opush_protocol::commands::{CollectionId, ServerId};
use opush_protocol::query::Command;
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::move_items::move_items;
use opush_server::session::{EasServices, RequestMeta};
use opush_tests::RawImap;

const V: ProtocolVersion = ProtocolVersion::V14_1;

/// Whether this engine answers as format 8 does.
const FORMAT_8: bool = opush_engine::FORMAT_VERSION >= 8;

fn subject_of(c: &ServerCommand) -> (ServerId, String) {
    match c {
        ServerCommand::Add {
            server_id,
            application_data: ApplicationData::Email(e),
        } => (server_id.clone(), e.subject.clone().unwrap_or_default()),
        other => panic!("{other:?}"),
    }
}

/// The ServerIds a Sync answer sends a Change for.
fn changed(r: &SyncCollectionResponse) -> Vec<ServerId> {
    r.commands
        .iter()
        .flatten()
        .filter_map(|c| match c {
            ServerCommand::Change { server_id, .. } => Some(server_id.clone()),
            _ => None,
        })
        .collect()
}

/// A Sync of `collection` with `key`, WindowSize `window`, `commands`.
async fn sync(
    eas: &EasServices,
    user: &str,
    device: &str,
    collection: &str,
    key: &str,
    window: u32,
    commands: Option<Vec<ClientCommand>>,
) -> SyncCollectionResponse {
    let mut req = sync_req(collection, key);
    req.collections[0].window_size = Some(window);
    req.collections[0].commands = commands;
    let meta = RequestMeta::new(Command::Sync, V, b"sync");
    meta.scope(sync_one(eas, &caller(user, device), &req)).await
}

/// Exports `device`'s session, replays it, and writes it under
/// `tests/replay/` with `UPDATE_REPLAY=1`.
async fn export_and_replay(
    eas: &EasServices,
    user: &str,
    device: &str,
    name: &str,
    requests: usize,
) {
    eas.sessions.flush().await;
    let bundle = opush_replay::export(eas.sessions.store(), user, device, None, None)
        .await
        .unwrap();
    let report = opush_replay::run(&bundle).unwrap().unwrap();
    assert_eq!(report.requests, requests, "{report:?}");
    let back = opush_replay::Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(back, bundle);
    if std::env::var_os("UPDATE_REPLAY").is_some() {
        let name = if FORMAT_8 {
            format!("{name}.bundle")
        } else {
            format!("{name}-v{}.bundle", opush_engine::FORMAT_VERSION)
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/replay")
            .join(name);
        std::fs::write(path, bundle.to_json()).unwrap();
    }
}

fn empty(raw: &mut RawImap, mailboxes: &[&str]) {
    for mailbox in mailboxes {
        raw.ok(&format!("SELECT \"{mailbox}\""));
        raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
        raw.cmd("EXPUNGE");
    }
}

#[tokio::test]
async fn a_move_of_an_item_with_flags_changed_behind_opush_replays() {
    const USER: &str = "load1196@load.test";
    const DEVICE: &str = "REPLAYSTALEMOVE";
    let mut raw = RawImap::login(USER);
    empty(&mut raw, &["INBOX", "Archive"]);
    raw.append_to_inbox("stale moved");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;

    let meta = RequestMeta::new(Command::FolderSync, V, b"foldersync");
    let folders = meta
        .scope(first_folder_sync(&eas, &caller(USER, DEVICE)))
        .await;
    let (inbox, archive) = (folders.of_type(2), folders.named("Archive"));
    let k1 = sync(&eas, USER, DEVICE, &inbox, "0", 50, None)
        .await
        .sync_key
        .0;
    let r2 = sync(&eas, USER, DEVICE, &inbox, &k1, 50, None).await;
    let items: Vec<(ServerId, String)> = r2.commands.iter().flatten().map(subject_of).collect();
    assert_eq!(items.len(), 1, "{items:?}");
    let a1 = sync(&eas, USER, DEVICE, &archive, "0", 50, None)
        .await
        .sync_key
        .0;
    let a2 = sync(&eas, USER, DEVICE, &archive, &a1, 50, None).await;
    assert!(a2.commands.is_none(), "{a2:?}");

    // Another client marks the message read; opush does not look before
    // the device moves it (the device still shows it unread).
    let uid = raw.inbox_uid("stale moved");
    raw.ok("SELECT INBOX");
    raw.ok(&format!("UID STORE {uid} +FLAGS.SILENT (\\Seen)"));
    let req = MoveItemsRequest {
        moves: vec![Move {
            src_msg_id: items[0].0.clone(),
            src_fld_id: CollectionId(inbox.clone()),
            dst_fld_id: CollectionId(archive.clone()),
        }],
    };
    let meta = RequestMeta::new(Command::MoveItems, V, b"moveitems");
    let mut res: MoveItemsResponse = meta
        .scope(move_items(&req, &caller(USER, DEVICE), &eas))
        .await
        .unwrap();
    let moved = res.responses.remove(0);
    assert_eq!(moved.status.code(), 3, "{moved:?}");
    let dst = moved.dst_msg_id.clone().unwrap();

    // The destination's next Sync: format 8 sends the moved copy's flags
    // (read); format 7 judged the copy current and sent nothing.
    let a3 = sync(&eas, USER, DEVICE, &archive, &a2.sync_key.0, 50, None).await;
    let dst_id = ServerId(dst.0.clone());
    if FORMAT_8 {
        assert_eq!(changed(&a3), vec![dst_id], "{a3:?}");
    } else {
        assert!(changed(&a3).is_empty(), "{a3:?}");
    }
    export_and_replay(&eas, USER, DEVICE, "stale-move", 7).await;
}

#[tokio::test]
async fn a_change_refused_in_a_small_window_replays() {
    const USER: &str = "load1197@load.test";
    const DEVICE: &str = "REPLAYREFUSED";
    let mut raw = RawImap::login(USER);
    empty(&mut raw, &["INBOX"]);
    for s in ["refused 1", "refused 2", "refused 3"] {
        raw.append_to_inbox(s);
    }
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;

    let meta = RequestMeta::new(Command::FolderSync, V, b"foldersync");
    let folders = meta
        .scope(first_folder_sync(&eas, &caller(USER, DEVICE)))
        .await;
    let inbox = folders.of_type(2);
    let k1 = sync(&eas, USER, DEVICE, &inbox, "0", 50, None)
        .await
        .sync_key
        .0;
    let r2 = sync(&eas, USER, DEVICE, &inbox, &k1, 50, None).await;
    let items: Vec<(ServerId, String)> = r2.commands.iter().flatten().map(subject_of).collect();
    assert_eq!(items.len(), 3, "{items:?}");
    let r3 = sync(&eas, USER, DEVICE, &inbox, &r2.sync_key.0, 50, None).await;
    assert!(r3.commands.is_none(), "{r3:?}");

    // Another client flags all three; a one-item window carries one of
    // the three Changes.
    raw.ok("SELECT INBOX");
    raw.ok("UID STORE 1:* +FLAGS.SILENT (\\Flagged)");
    let r4 = sync(&eas, USER, DEVICE, &inbox, &r3.sync_key.0, 1, None).await;
    let first = changed(&r4);
    assert_eq!(first.len(), 1, "{r4:?}");
    assert!(r4.more_available, "{r4:?}");
    // The device marks the two others read: both refused (Status 7, the
    // server's flags win), and the one-item window carries one of them.
    let others: Vec<ServerId> = items
        .iter()
        .map(|(s, _)| s.clone())
        .filter(|s| !first.contains(s))
        .collect();
    let read = |server_id: &ServerId| ClientCommand::Change {
        server_id: server_id.clone(),
        application_data: ApplicationData::Email(Box::new(Email {
            read: Some(true),
            ..Email::default()
        })),
        class: None,
    };
    let r5 = sync(
        &eas,
        USER,
        DEVICE,
        &inbox,
        &r4.sync_key.0,
        1,
        Some(others.iter().map(read).collect()),
    )
    .await;
    let statuses: Vec<u16> = r5
        .responses
        .iter()
        .flatten()
        .filter_map(|r| match r {
            CommandResponse::Change { status, .. } => Some(status.code()),
            _ => None,
        })
        .collect();
    assert_eq!(statuses, [7, 7], "{r5:?}");
    let carried = changed(&r5);
    assert_eq!(carried.len(), 1, "{r5:?}");
    let left = others
        .iter()
        .find(|s| !carried.contains(s))
        .unwrap()
        .clone();
    let subject = &items.iter().find(|(s, _)| *s == left).unwrap().1;

    // The other client unflags the one left behind: its flags are those the
    // device had before its refused change. Format 8 still owes the device
    // the server's version (unread); format 7 owed nothing, and the device
    // kept its refused change.
    let uid = raw.inbox_uid(subject);
    raw.ok("SELECT INBOX");
    raw.ok(&format!("UID STORE {uid} -FLAGS.SILENT (\\Flagged)"));
    let r6 = sync(&eas, USER, DEVICE, &inbox, &r5.sync_key.0, 50, None).await;
    if FORMAT_8 {
        assert!(changed(&r6).contains(&left), "{r6:?}");
    } else {
        assert!(!changed(&r6).contains(&left), "{r6:?}");
    }
    export_and_replay(&eas, USER, DEVICE, "refused-change", 7).await;
}
