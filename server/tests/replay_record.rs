//! Records a real email session against the stack's Dovecot (user
//! load0049) through the handlers, exactly as requests record it (inside
//! `RequestMeta::scope`), exports it from the embedded store and replays it:
//! every decision must come out the same. With `UPDATE_REPLAY=1` the bundle
//! is also written to `tests/replay/email.bundle`, the checked-in bundle
//! that `replay/tests/bundles.rs` replays on every run with no service.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, services};

use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest};
use opush_protocol::commands::get_item_estimate::{EstimateCollection, GetItemEstimateRequest};
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{
    ClientCommand, SyncCollectionRequest, SyncCollectionResponse, SyncRequest,
};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::query::Command;
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::get_item_estimate::get_item_estimate;
use opush_server::commands::sync::sync;
use opush_server::session::{EasServices, RequestMeta};
use opush_tests::RawImap;

const USER: &str = "load0049@load.test";
const DEVICE: &str = "REPLAYREC";
const V: ProtocolVersion = ProtocolVersion::V14_1;

fn append(imap: &mut RawImap, i: u32) {
    let msg = format!(
        "From: Sender <sender@example.test>\r\nTo: <load0049@load.test>\r\nSubject: replay {i}\r\n\
Date: Sat, 28 Nov 2026 10:0{i}:00 +0000\r\nContent-Type: text/plain\r\n\r\nbody {i}\r\n"
    );
    let (_, ok) = imap.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

fn sync_req(inbox: &str, key: &str, commands: Option<Vec<ClientCommand>>) -> SyncRequest {
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(inbox.to_owned()),
            window_size: Some(2),
            deletes_as_moves: Some(false),
            commands,
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

async fn one(eas: &EasServices, req: SyncRequest) -> SyncCollectionResponse {
    let meta = RequestMeta::new(Command::Sync, V, b"sync");
    let mut res = meta
        .scope(sync(&req, V, &caller(USER, DEVICE), eas))
        .await
        .unwrap();
    res.collections.remove(0)
}

#[tokio::test]
async fn a_recorded_email_session_replays_identically() {
    let mut raw = RawImap::login(USER);
    let (_, ok) = raw.cmd("SELECT INBOX");
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    for i in 0..3 {
        append(&mut raw, i);
    }
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;

    let meta = RequestMeta::new(Command::FolderSync, V, b"foldersync");
    let fs = meta
        .scope(folder_sync(
            &FolderSyncRequest {
                sync_key: SyncKey("0".to_owned()),
            },
            &caller(USER, DEVICE),
            &eas,
        ))
        .await
        .unwrap();
    let inbox = fs
        .changes
        .unwrap()
        .iter()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 2 => Some(f.server_id.0.clone()),
            _ => None,
        })
        .unwrap();
    let k1 = one(&eas, sync_req(&inbox, "0", None)).await.sync_key.0;
    let r2 = one(&eas, sync_req(&inbox, &k1, None)).await;
    assert!(r2.more_available);
    // The answer is lost: the device presents k1 again.
    let again = one(&eas, sync_req(&inbox, &k1, None)).await;
    let k2 = again.sync_key.0;
    let r3 = one(&eas, sync_req(&inbox, &k2, None)).await;
    let k3 = r3.sync_key.0;
    // The device marks the first message read.
    let first = match &r2.commands.unwrap()[0] {
        opush_protocol::commands::sync::ServerCommand::Add { server_id, .. } => server_id.clone(),
        other => panic!("{other:?}"),
    };
    let change = ClientCommand::Change {
        server_id: first,
        application_data: ApplicationData::Email(Box::new(Email {
            read: Some(true),
            ..Email::default()
        })),
        class: None,
    };
    let r4 = one(&eas, sync_req(&inbox, &k3, Some(vec![change]))).await;
    assert_eq!(r4.status.map(|s| s.code()), Some(1));
    let meta = RequestMeta::new(Command::GetItemEstimate, V, b"estimate");
    meta.scope(get_item_estimate(
        &GetItemEstimateRequest {
            collections: vec![EstimateCollection {
                sync_key: SyncKey(r4.sync_key.0.clone()),
                collection_id: CollectionId(inbox.clone()),
                ..EstimateCollection::default()
            }],
        },
        V,
        &caller(USER, DEVICE),
        &eas,
    ))
    .await
    .unwrap();

    // Requests that changed nothing are traced in memory until the next
    // append: write them as the server does at shutdown.
    eas.sessions.flush().await;
    let bundle = opush_replay::export(eas.sessions.store(), USER, DEVICE, None, None)
        .await
        .unwrap();
    let report = opush_replay::run(&bundle).unwrap().unwrap();
    assert_eq!(report.requests, 7);
    assert!(report.decisions >= 7, "{report:?}");
    // Through the file format too.
    let back = opush_replay::Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(back, bundle);
    if std::env::var_os("UPDATE_REPLAY").is_some() {
        let path =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/replay/email.bundle");
        std::fs::write(path, bundle.to_json()).unwrap();
    }
}
