//! `opush serve` end to end, in-process: configuration → embedded store →
//! listener → graceful shutdown; a store without schema starts in
//! admin-only mode (503 + an ERROR naming `opush schema install`), and the
//! same configuration serves devices once the schema is installed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;

use std::time::Duration;

use http_support::*;
use opush_server::config::Config;
use opush_server::http::ServeMode;
use opush_server::serve::{run_with, storage_mode};
use opush_storage::{StorageConfig, Store};
use serde::Deserialize;
use tokio::sync::oneshot;

async fn config(dir: &std::path::Path) -> Config {
    let port = closed_port().await;
    Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://mail.example.test\"\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nhost = \"127.0.0.1\"\nport = {IMAP_PORT}\n\
         master_user = \"opush-master\"\nmaster_password = \"{PASSWORD}\"\n\
         [policy]\nrequire_provisioning = false\n",
        dir.display()
    ))
    .unwrap()
}

/// FolderSync with SyncKey 0, as a device sends it first (14.0, the wp8 query's version).
fn initial_folder_sync() -> Vec<u8> {
    use opush_protocol::commands::folder_sync::FolderSyncRequest;
    use opush_protocol::commands::SyncKey;
    let req = FolderSyncRequest {
        sync_key: SyncKey("0".to_owned()),
    };
    opush_protocol::wbxml::encode_to_vec(
        &req.to_element(opush_protocol::version::ProtocolVersion::V14_0),
    )
}

async fn wait_listening(addr: std::net::SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("opush serve did not listen on {addr}");
}

#[tokio::test]
async fn serve_runs_admin_only_without_schema_then_serves_once_installed() {
    require_dovecot().await;
    init_logs();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path()).await;
    let addr = cfg.server.listen;
    let a = basic("alice@example.test", PASSWORD);
    let target = format!("/Microsoft-Server-ActiveSync?{WP8_QUERY}");

    // No schema yet: admin-only.
    match storage_mode(&cfg).await {
        ServeMode::AdminOnly(reason) => {
            assert!(reason.contains("opush schema install"), "{reason}")
        }
        ServeMode::Ready => panic!("a store without schema must not serve devices"),
    }
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_with(cfg.clone(), async move {
        let _ = rx.await;
    }));
    wait_listening(addr).await;
    let res = request(
        addr,
        "POST",
        &target,
        &[("Authorization", &a)],
        &wp8_folder_sync_body(),
    )
    .await;
    assert_eq!(res.status, 503);
    assert!(res.header("Retry-After").is_some());
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(logs().contains("admin-only mode"));

    // Install the schema: the same configuration serves.
    {
        let storage = StorageConfig::deserialize(toml::Value::Table(cfg.storage.clone())).unwrap();
        let store = Store::open(&storage).await.unwrap();
        store.install_schema().await.unwrap();
    }
    assert_eq!(storage_mode(&cfg).await, ServeMode::Ready);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(run_with(cfg.clone(), async move {
        let _ = rx.await;
    }));
    wait_listening(addr).await;
    let res = request(
        addr,
        "OPTIONS",
        "/Microsoft-Server-ActiveSync",
        &[("Authorization", &a)],
        b"",
    )
    .await;
    assert_eq!(res.status, 200);
    let res = request(
        addr,
        "POST",
        &target,
        &[("Authorization", &a)],
        &initial_folder_sync(),
    )
    .await;
    assert_eq!(res.status, 200);
    // The FolderSync handler answered from Dovecot over HTTP: Status 1 and an Inbox (Type 2).
    let xml = opush_protocol::xml::wbxml_to_xml(&res.body).unwrap();
    assert!(xml.contains("<Status>1</Status>"), "{xml}");
    assert!(xml.contains("<Type>2</Type>"), "no Inbox in {xml}");
    // Graceful shutdown: the listener closes and run_with returns Ok.
    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), task)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
