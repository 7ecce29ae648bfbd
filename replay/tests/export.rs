//! `export` reads a device's log from either storage backend: the events of
//! the checked-in bundle are stored in a fresh embedded store and in a fresh
//! Cassandra keyspace (the test stack's, `scripts/stack up cassandra`; the
//! test fails when it is missing), exported whole and from a later request
//! on, and the exports replay identically.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use opush_engine::Event;
use opush_replay::{export, run, Bundle};
use opush_storage::{AppendBatch, BackendKind, DeviceKey, Password, StorageConfig, Store};

fn checked_in() -> Bundle {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/replay/email.bundle");
    Bundle::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn round_trip(store: &Store) {
    store.install_schema().await.unwrap();
    let source = checked_in();
    assert_eq!(source.start_seq, 0, "the checked-in bundle starts empty");
    let key = DeviceKey::new("export@example.test", "EXPORTTEST").unwrap();
    let mut batch = AppendBatch::new(key.clone(), 0);
    for e in &source.events {
        batch = batch.event(
            opush_engine::FORMAT_VERSION as u16,
            B64.decode(&e.payload).unwrap(),
        );
    }
    store.append(batch).await.unwrap();

    let whole = export(store, "export@example.test", "EXPORTTEST", None, None)
        .await
        .unwrap();
    assert_eq!(whole.events, source.events);
    // The same state (the bytes differ when the checked-in bundle was
    // written by an older engine format: the snapshot header names it).
    assert_eq!(whole.end().unwrap(), source.end().unwrap());
    assert!(run(&whole).unwrap().is_ok());

    // From the third request on: the start state is folded up to it.
    let third = source
        .decoded()
        .unwrap()
        .into_iter()
        .filter_map(|(seq, e)| match e {
            Event::RequestReceived { at, .. } => Some((seq, at.0)),
            _ => None,
        })
        .nth(2)
        .unwrap();
    let later = export(
        store,
        "export@example.test",
        "EXPORTTEST",
        Some(third.1),
        None,
    )
    .await
    .unwrap();
    assert_eq!(later.start_seq, third.0 - 1);
    assert_eq!(later.events.first().unwrap().seq, third.0);
    assert_ne!(later.start_state, whole.start_state);
    let report = run(&later).unwrap().unwrap();
    assert!(report.decisions > 0);
}

#[tokio::test]
async fn export_from_the_embedded_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StorageConfig {
        path: dir.path().to_path_buf(),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    round_trip(&store).await;
}

#[tokio::test]
async fn export_from_cassandra() {
    let host = std::env::var("OPUSH_CASSANDRA_HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let addr = format!("{host}:9042");
    assert!(
        std::net::TcpStream::connect_timeout(
            &addr.parse().unwrap(),
            std::time::Duration::from_secs(2)
        )
        .is_ok(),
        "Cassandra is not reachable on {addr}: run `scripts/stack up cassandra`"
    );
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let suffix = blake3::hash(format!("{nanos}-{}", std::process::id()).as_bytes()).to_hex();
    let config = StorageConfig {
        backend: BackendKind::Cassandra,
        seeds: vec![host],
        port: 9042,
        keyspace: format!("opush_replay_{}", &suffix[..12]),
        user: "opush".into(),
        password: Password::new(
            std::env::var("OPUSH_CASSANDRA_PASSWORD").unwrap_or_else(|_| "opush-test".into()),
        ),
        read_timeout_ms: 10_000,
        ..StorageConfig::default()
    };
    let store = Store::open(&config).await.unwrap();
    round_trip(&store).await;
    store.destroy().await.unwrap();
}
