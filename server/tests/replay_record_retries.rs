//! Records, against the stack's Dovecot (user load1216), a session holding
//! the two decisions format 8 changed: a device's Delete of an item IMAP no
//! longer has, and a MoveItems sent again after its answer was lost. It is
//! exported from the embedded store and replayed: every decision must come
//! out the same. With `UPDATE_REPLAY=1` the bundle is also written to
//! `tests/replay/retries.bundle`, which `replay/tests/bundles.rs` replays
//! on every run with no service.
//!
//! The same file, built at the commit before format 8's changes (df8a855)
//! in a temporary worktree, recorded the old answers (it asserts what its
//! engine's format answers): that is `tests/replay/retries-v7.bundle`
//! (written there as `retries-v7.bundle`), which must keep replaying with
//! the answers format 7 gave.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services, sync_one, sync_req};

use opush_protocol::commands::move_items::{Move, MoveItemsRequest, MoveItemsResponse};
use opush_protocol::commands::sync::{ClientCommand, CommandResponse, ServerCommand};
use opush_protocol::commands::{CollectionId, ServerId};
use opush_protocol::query::Command;
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::move_items::move_items;
use opush_server::session::{EasServices, RequestMeta};
use opush_tests::RawImap;

const USER: &str = "load1216@load.test";
const DEVICE: &str = "REPLAYRETRY";
const V: ProtocolVersion = ProtocolVersion::V14_1;

/// Whether this engine answers as format 8 does (a Delete of a vanished
/// item succeeds, a retried move gets its first answer).
const FORMAT_8: bool = opush_engine::FORMAT_VERSION >= 8;

fn subject_of(c: &ServerCommand) -> (ServerId, String) {
    match c {
        ServerCommand::Add {
            server_id,
            application_data: opush_protocol::commands::items::ApplicationData::Email(e),
        } => (server_id.clone(), e.subject.clone().unwrap_or_default()),
        other => panic!("{other:?}"),
    }
}

async fn move_one(
    eas: &EasServices,
    src: &ServerId,
    from: &str,
    to: &str,
) -> opush_protocol::commands::move_items::MoveResult {
    let req = MoveItemsRequest {
        moves: vec![Move {
            src_msg_id: src.clone(),
            src_fld_id: CollectionId(from.to_owned()),
            dst_fld_id: CollectionId(to.to_owned()),
        }],
    };
    let meta = RequestMeta::new(Command::MoveItems, V, b"moveitems");
    let mut res: MoveItemsResponse = meta
        .scope(move_items(&req, &caller(USER, DEVICE), eas))
        .await
        .unwrap();
    res.responses.remove(0)
}

#[tokio::test]
async fn a_session_with_a_vanished_delete_and_a_retried_move_replays() {
    let mut raw = RawImap::login(USER);
    for mailbox in ["INBOX", "Archive"] {
        raw.ok(&format!("SELECT \"{mailbox}\""));
        raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
        raw.cmd("EXPUNGE");
    }
    for s in ["retry gone", "retry moved", "retry kept"] {
        raw.append_to_inbox(s);
    }
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let who = caller(USER, DEVICE);

    let meta = RequestMeta::new(Command::FolderSync, V, b"foldersync");
    let folders = meta.scope(first_folder_sync(&eas, &who)).await;
    let (inbox, archive) = (folders.of_type(2), folders.named("Archive"));
    let sync = |key: String, commands: Option<Vec<ClientCommand>>| {
        let mut req = sync_req(&inbox, &key);
        req.collections[0].commands = commands;
        req.collections[0].deletes_as_moves = Some(false);
        let meta = RequestMeta::new(Command::Sync, V, b"sync");
        let (eas, who) = (&eas, &who);
        async move { meta.scope(sync_one(eas, who, &req)).await }
    };
    let k1 = sync("0".to_owned(), None).await.sync_key.0;
    let r2 = sync(k1, None).await;
    let items: Vec<(ServerId, String)> = r2.commands.unwrap().iter().map(subject_of).collect();
    assert_eq!(items.len(), 3, "{items:?}");
    let sid = |s: &str| items.iter().find(|(_, x)| x == s).unwrap().0.clone();

    // The message leaves IMAP behind opush's back; then the device deletes it.
    let gone = raw.inbox_uid("retry gone");
    raw.ok(&format!("UID STORE {gone} +FLAGS.SILENT (\\Deleted)"));
    raw.ok("EXPUNGE");
    let delete = ClientCommand::Delete {
        server_id: sid("retry gone"),
        class: None,
        instance_id: None,
    };
    let r3 = sync(r2.sync_key.0, Some(vec![delete])).await;
    let failed: Vec<u16> = r3
        .responses
        .iter()
        .flatten()
        .filter_map(|r| match r {
            CommandResponse::Delete { status, .. } => Some(status.code()),
            _ => None,
        })
        .collect();
    // Format 7 answered "object not found"; format 8 succeeds (no answer).
    assert_eq!(failed, if FORMAT_8 { vec![] } else { vec![8] }, "{r3:?}");

    // A move, then the same move again (its answer was lost).
    let first = move_one(&eas, &sid("retry moved"), &inbox, &archive).await;
    assert_eq!(first.status.code(), 3, "{first:?}");
    assert!(first.dst_msg_id.is_some(), "{first:?}");
    let again = move_one(&eas, &sid("retry moved"), &inbox, &archive).await;
    if FORMAT_8 {
        assert_eq!(again, first);
    } else {
        assert_eq!(again.status.code(), 1, "{again:?}");
    }

    eas.sessions.flush().await;
    let bundle = opush_replay::export(eas.sessions.store(), USER, DEVICE, None, None)
        .await
        .unwrap();
    let report = opush_replay::run(&bundle).unwrap().unwrap();
    assert_eq!(report.requests, 6, "{report:?}");
    let back = opush_replay::Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(back, bundle);
    if std::env::var_os("UPDATE_REPLAY").is_some() {
        let name = if FORMAT_8 {
            "retries.bundle".to_owned()
        } else {
            format!("retries-v{}.bundle", opush_engine::FORMAT_VERSION)
        };
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/replay")
            .join(name);
        std::fs::write(path, bundle.to_json()).unwrap();
    }
}
