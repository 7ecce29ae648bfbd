//! Ping over HTTP through `opush serve` (in-process, embedded store, the
//! stack's Dovecot): a parked Ping gives back its `[server] max_in_flight`
//! permit (with `max_in_flight = 1` other requests still get through), the
//! parked Pings have their own bound (`[push] max_parked = 1`: the next one
//! gets 503 + Retry-After), any other request of the same device ends
//! its parked Ping at once with Status 1, and a device that closes its
//! connection while parked frees its parked slot.
//!
//! Reserved Dovecot user: load0027.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;

use std::net::SocketAddr;
use std::time::Duration;

use http_support::*;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest, FolderSyncResponse};
use opush_protocol::commands::ping::{PingFolder, PingRequest, PingResponse};
use opush_protocol::commands::sync::{SyncCollectionRequest, SyncRequest, SyncResponse};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec};
use opush_server::config::Config;
use opush_server::serve::run_with;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const USER: &str = "load0027@load.test";
const V: ProtocolVersion = ProtocolVersion::V14_1;

fn target(cmd: &str, device: &str) -> String {
    format!("/Microsoft-Server-ActiveSync?Cmd={cmd}&User={USER}&DeviceId={device}&DeviceType=Test")
}

async fn call(addr: SocketAddr, cmd: &str, device: &str, body: &[u8]) -> Resp {
    let auth = basic(USER, PASSWORD);
    request(
        addr,
        "POST",
        &target(cmd, device),
        &[("Authorization", &auth), ("MS-ASProtocolVersion", "14.1")],
        body,
    )
    .await
}

fn folder_sync_body() -> Vec<u8> {
    encode_to_vec(
        &FolderSyncRequest {
            sync_key: SyncKey("0".into()),
        }
        .to_element(V),
    )
}

/// FolderSync + Sync of INBOX to its end; returns the INBOX id.
async fn prepare(addr: SocketAddr, device: &str) -> String {
    let res = call(addr, "FolderSync", device, &folder_sync_body()).await;
    assert_eq!(res.status, 200);
    let fs = FolderSyncResponse::from_element(&decode(&res.body).unwrap(), V).unwrap();
    let inbox = fs
        .changes
        .unwrap()
        .into_iter()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 2 => Some(f.server_id.0),
            _ => None,
        })
        .unwrap();
    let mut key = "0".to_owned();
    for _ in 0..20 {
        let req = SyncRequest {
            collections: vec![SyncCollectionRequest {
                sync_key: SyncKey(key.clone()),
                collection_id: CollectionId(inbox.clone()),
                window_size: Some(512),
                ..SyncCollectionRequest::default()
            }],
            ..SyncRequest::default()
        };
        let res = call(addr, "Sync", device, &encode_to_vec(&req.to_element(V))).await;
        assert_eq!(res.status, 200);
        let sr = SyncResponse::from_element(&decode(&res.body).unwrap(), V).unwrap();
        let c = &sr.collections[0];
        let more = c.more_available || key == "0";
        key = c.sync_key.0.clone();
        if !more {
            break;
        }
    }
    inbox
}

fn ping_body(inbox: &str) -> Vec<u8> {
    encode_to_vec(
        &PingRequest {
            heartbeat_interval: Some(300),
            folders: Some(vec![PingFolder {
                id: CollectionId(inbox.to_owned()),
                class: "Email".into(),
            }]),
        }
        .to_element(V),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_ping_frees_its_in_flight_slot_and_ends_on_the_next_request() {
    require_dovecot().await;
    let dir = tempfile::tempdir().unwrap();
    let port = closed_port().await;
    let cfg = Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nmax_in_flight = 1\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nport = {IMAP_PORT}\nmaster_user = \"opush-master\"\nmaster_password = \"{PASSWORD}\"\n\
         [devices]\nheartbeat_min_s = 1\n\
         [policy]\nrequire_provisioning = false\n\
         [push]\nmax_parked = 1\n",
        dir.path().display()
    ))
    .unwrap();
    {
        let store = opush_storage::Store::open(
            &serde::Deserialize::deserialize(toml::Value::Table(cfg.storage.clone())).unwrap(),
        )
        .await
        .unwrap();
        store.install_schema().await.unwrap();
    }
    let addr = cfg.server.listen;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_with(cfg, async move {
        let _ = rx.await;
    }));
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let inbox = prepare(addr, "HTTPPING1").await;

    // Park a Ping on its own connection. With max_in_flight = 1 the Ping
    // itself is refused (503) if it arrives while another request holds the
    // only slot: it is sent alone, and again until it is not refused.
    let body = ping_body(&inbox);
    let mut parked = None;
    for _ in 0..20 {
        match try_park(addr, "HTTPPING1", &body).await {
            Ok(task) => {
                parked = Some(task);
                break;
            }
            Err(early) => assert_eq!(early.status, 503, "the Ping answered instead of parking"),
        }
    }
    let parked = parked.expect("the Ping parks");

    // With max_in_flight = 1, another device gets through once the Ping parked.
    let mut served = false;
    for _ in 0..100 {
        let res = call(addr, "FolderSync", "HTTPPING2", &folder_sync_body()).await;
        if res.status == 200 {
            served = true;
            break;
        }
        assert_eq!(res.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the parked Ping still holds the only in-flight slot"
    );
    if parked.is_finished() {
        let early = parked.await.unwrap();
        let xml = opush_protocol::xml::wbxml_to_xml(&early.body).unwrap_or_default();
        panic!("the Ping answered early: HTTP {} {xml}", early.status);
    }

    // The parked bound is its own: a second parked Ping is refused.
    let inbox2 = prepare(addr, "HTTPPING2").await;
    let refused = call(addr, "Ping", "HTTPPING2", &ping_body(&inbox2)).await;
    assert_eq!(refused.status, 503);
    assert!(refused.header("Retry-After").is_some());
    assert!(!parked.is_finished());

    // Any request of the parked device ends its Ping with Status 1.
    let res = call(addr, "FolderSync", "HTTPPING1", &folder_sync_body()).await;
    assert_eq!(res.status, 200);
    let answer = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("the superseded Ping answers at once")
        .unwrap();
    assert_eq!(answer.status, 200);
    let ping = PingResponse::from_element(&decode(&answer.body).unwrap(), V).unwrap();
    assert_eq!(ping.status.code(), 1);

    // A device that goes away while its Ping is parked frees the parked
    // slot (max_parked = 1): the other device's Ping then parks.
    let gone = park_raw(addr, "HTTPPING1", &body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(gone);
    let mut other = None;
    for _ in 0..50 {
        match try_park(addr, "HTTPPING2", &ping_body(&inbox2)).await {
            Ok(task) => {
                other = Some(task);
                break;
            }
            Err(early) => assert_eq!(early.status, 503, "the Ping answered instead of parking"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        other.is_some(),
        "a closed connection's Ping still holds the parked slot"
    );

    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// Sends a Ping on a connection of its own; returns the connection.
async fn park_raw(addr: SocketAddr, device: &str, body: &[u8]) -> TcpStream {
    let auth = basic(USER, PASSWORD);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = head(
        "POST",
        &target("Ping", device),
        &[("Authorization", &auth), ("MS-ASProtocolVersion", "14.1")],
        Some(body.len()),
    );
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.unwrap();
    s
}

/// Sends a Ping; if it has no answer after 300 ms it is parked (the task
/// reads its answer), else the early answer.
async fn try_park(
    addr: SocketAddr,
    device: &str,
    body: &[u8],
) -> Result<tokio::task::JoinHandle<Resp>, Resp> {
    let mut s = park_raw(addr, device, body).await;
    let task = tokio::spawn(async move { read_response(&mut s).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    if task.is_finished() {
        Err(task.await.unwrap())
    } else {
        Ok(task)
    }
}
