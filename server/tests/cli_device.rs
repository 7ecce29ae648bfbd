//! `opush device wipe|quarantine|allow` as an administrator runs it: the
//! real binary over an embedded store in a temp dir (no server running, as
//! the embedded store requires). The wipe lands in the device's log, a
//! second one says it is pending, an unknown device fails, and access
//! changes reach the registry row.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;

use opush_engine::{Event, PolicyKey, WipeState};
use opush_server::session::Sessions;
use opush_storage::{DeviceKey, DeviceRecord, DeviceState, StorageConfig, Store};

const USER: &str = "carol@example.test";
const DEVICE: &str = "CLIDEV1";

async fn open(dir: &std::path::Path) -> Arc<Store> {
    let store = Store::open(&StorageConfig {
        path: dir.to_path_buf(),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    Arc::new(store)
}

fn opush(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opush"))
        .args(args)
        .args(["--user", USER, "--config"])
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn wipe_and_access_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("opush.toml");
    std::fs::write(
        &config,
        format!(
            "[storage]\nbackend = \"embedded\"\npath = \"{}\"\n",
            data.display()
        ),
    )
    .unwrap();
    let key = DeviceKey::new(USER, DEVICE).unwrap();
    {
        let store = open(&data).await;
        store.install_schema().await.unwrap();
        let sessions = Sessions::new(store.clone(), 0, 4);
        let mut s = sessions.open(key.clone()).await.unwrap();
        s.commit(&[Event::DeviceProvisioned {
            policy_key: PolicyKey(7),
        }])
        .await
        .unwrap();
        drop(s);
        store
            .put_device(DeviceRecord {
                key: key.clone(),
                device_type: "SP".into(),
                first_seen_ms: 1,
                last_seen_ms: 1,
                policy_key: Some(7),
                state: DeviceState::Allowed,
                info: BTreeMap::new(),
            })
            .await
            .unwrap();
    }

    let (ok, text) = opush(&config, &["device", "wipe", "--device", DEVICE]);
    assert!(ok, "{text}");
    assert!(text.contains("remote wipe requested"), "{text}");
    let (ok, text) = opush(&config, &["device", "wipe", "--device", DEVICE]);
    assert!(ok, "{text}");
    assert!(text.contains("already pending"), "{text}");
    let (ok, text) = opush(&config, &["device", "wipe", "--device", "NOPE"]);
    assert!(!ok, "{text}");
    assert!(text.contains("no device NOPE"), "{text}");
    let (ok, text) = opush(&config, &["device", "quarantine", "--device", DEVICE]);
    assert!(ok && text.contains("quarantined"), "{text}");

    let store = open(&data).await;
    let s = Sessions::new(store.clone(), 0, 4);
    let state = s.open(key.clone()).await.unwrap().state().clone();
    assert_eq!(state.wipe, WipeState::Requested);
    let events = store.read_events(&key, 1).await.unwrap();
    assert_eq!(events.len(), 2, "one wipe event, not two");
    let row = store.get_device(&key).await.unwrap().unwrap();
    assert_eq!(row.state, DeviceState::Quarantined);
}
