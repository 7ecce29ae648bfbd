//! Empty-bodied and `Partial` Sync over HTTP ([MS-ASCMD] 2.2.1.21,
//! 2.2.3.125) against the real server, the embedded store and Dovecot: an
//! empty Sync before any full one gets Status 13; after a full Sync it
//! repeats that request with the keys the device last received (a new
//! message arrives through it), a `Partial` Sync adds a collection to the
//! remembered ones, and the remembered request survives a server restart
//! over the same store.
//!
//! Works in two `opush-cached-…` folders of load0033 (whose INBOX belongs
//! to eas_sync), deleted at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
mod http_support;

use std::sync::Arc;

use http_support::*;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest, FolderSyncResponse};
use opush_protocol::commands::sync::{
    ServerCommand, SyncCollectionRequest, SyncCollectionResponse, SyncRequest, SyncResponse,
};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec};
use opush_server::http::HttpSettings;
use opush_tests::{unique, RawImap};

const USER: &str = "load0033@load.test";
const DEVICE: &str = "DEVCACHED";
const V: ProtocolVersion = ProtocolVersion::V14_1;

async fn post(srv: &TestServer, cmd: &str, body: &[u8]) -> Resp {
    let auth = basic(USER, PASSWORD);
    let target = format!(
        "/Microsoft-Server-ActiveSync?Cmd={cmd}&User=load0033&DeviceId={DEVICE}&DeviceType=SP"
    );
    let headers = [
        ("Authorization", auth.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
    ];
    let res = request(srv.addr, "POST", &target, &headers, body).await;
    assert_eq!(res.status, 200, "{res:?}");
    res
}

async fn sync_body(srv: &TestServer, body: &[u8]) -> SyncResponse {
    let res = post(srv, "Sync", body).await;
    SyncResponse::from_element(&decode(&res.body).unwrap(), V).unwrap()
}

fn collection(id: &str, key: &str) -> SyncCollectionRequest {
    SyncCollectionRequest {
        sync_key: SyncKey(key.to_owned()),
        collection_id: CollectionId(id.to_owned()),
        window_size: Some(20),
        ..SyncCollectionRequest::default()
    }
}

async fn full(srv: &TestServer, cols: Vec<SyncCollectionRequest>, partial: bool) -> SyncResponse {
    let req = SyncRequest {
        collections: cols,
        partial,
        ..SyncRequest::default()
    };
    sync_body(srv, &encode_to_vec(&req.to_element(V))).await
}

fn of<'a>(res: &'a SyncResponse, id: &str) -> &'a SyncCollectionResponse {
    res.collections
        .iter()
        .find(|c| c.collection_id.0 == id)
        .unwrap_or_else(|| panic!("collection {id} in {res:?}"))
}

fn subjects(c: &SyncCollectionResponse) -> Vec<String> {
    c.commands
        .iter()
        .flatten()
        .filter_map(|cmd| match cmd {
            ServerCommand::Add {
                application_data: opush_protocol::commands::items::ApplicationData::Email(e),
                ..
            } => e.subject.clone(),
            _ => None,
        })
        .collect()
}

fn append(raw: &mut RawImap, folder: &str, subject: &str) {
    let msg = format!("From: a@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n");
    let (_, ok) = raw.cmd(&format!("APPEND {folder} {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "{ok}");
}

async fn start_over(dir: &tempfile::TempDir) -> TestServer {
    let eas = Arc::new(eas_support::services(dir).await);
    start_with_eas(
        HttpSettings {
            require_provisioning: false,
            ..settings()
        },
        eas,
    )
    .await
}

#[tokio::test]
async fn empty_and_partial_sync_repeat_the_remembered_request() {
    let mut raw = RawImap::login(USER);
    let (a, b) = (unique("opush-cached-a"), unique("opush-cached-b"));
    for f in [&a, &b] {
        raw.cmd(&format!("CREATE {f}"));
        raw.cmd(&format!("SUBSCRIBE {f}"));
        append(&mut raw, f, &format!("first in {f}"));
    }
    let dir = tempfile::tempdir().unwrap();
    let srv = start_over(&dir).await;

    // Nothing remembered yet: Status 13.
    let r = sync_body(&srv, b"").await;
    assert_eq!(r.status.map(|s| s.code()), Some(13), "{r:?}");

    let fs = post(
        &srv,
        "FolderSync",
        &encode_to_vec(
            &FolderSyncRequest {
                sync_key: SyncKey("0".to_owned()),
            }
            .to_element(V),
        ),
    )
    .await;
    let fs = FolderSyncResponse::from_element(&decode(&fs.body).unwrap(), V).unwrap();
    let id = |name: &str| {
        fs.changes
            .iter()
            .flatten()
            .find_map(|c| match c {
                FolderChange::Add(f) if f.display_name == name => Some(f.server_id.0.clone()),
                _ => None,
            })
            .unwrap()
    };
    let (ca, cb) = (id(&a), id(&b));

    // Full Syncs of A: bootstrap, then its message.
    let r0 = full(&srv, vec![collection(&ca, "0")], false).await;
    let k1 = of(&r0, &ca).sync_key.0.clone();
    let r1 = full(&srv, vec![collection(&ca, &k1)], false).await;
    assert_eq!(subjects(of(&r1, &ca)), vec![format!("first in {a}")]);

    // A new message; an empty Sync stands for the last request with the
    // key the device received.
    append(&mut raw, &a, "second");
    let e1 = sync_body(&srv, b"").await;
    assert_eq!(of(&e1, &ca).status.map(|s| s.code()), Some(1), "{e1:?}");
    assert_eq!(subjects(of(&e1, &ca)), vec!["second".to_owned()]);

    // Partial: B joins (bootstrap key 0); A keeps going from the remembered request.
    let p = full(&srv, vec![collection(&cb, "0")], true).await;
    assert_eq!(p.collections.len(), 2, "{p:?}");
    assert_eq!(of(&p, &ca).status.map(|s| s.code()), Some(1));
    assert_ne!(of(&p, &cb).sync_key.0, "0");
    srv.stop().await;

    // After a restart over the same store, an empty Sync still knows both.
    let srv = start_over(&dir).await;
    let e2 = sync_body(&srv, b"").await;
    assert_eq!(e2.collections.len(), 2, "{e2:?}");
    assert_eq!(of(&e2, &cb).status.map(|s| s.code()), Some(1), "{e2:?}");
    assert_eq!(subjects(of(&e2, &cb)), vec![format!("first in {b}")]);
    srv.stop().await;

    for f in [&a, &b] {
        raw.cmd(&format!("DELETE {f}"));
    }
}
