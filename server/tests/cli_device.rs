//! `opush device wipe|quarantine|allow|list` as an administrator runs it:
//! the real binary over an embedded store in a temp dir, first with no
//! server running (the command opens the store: the wipe lands in the
//! device's log, a second one says it is pending, an unknown device fails,
//! access changes reach the registry row), then while an in-process
//! `opush serve` holds the store (the command goes through its admin
//! address and a real device, over HTTP against Dovecot, sees each change
//! on its next request). Reserved Dovecot user: load0058.

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
    let mut args = args.to_vec();
    args.extend(["--user", USER]);
    opush_any(config, &args)
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

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn opush_any(config: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_opush"))
        .args(args)
        .arg("--config")
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

// While `opush serve` holds the embedded store, `opush device …` goes
// through its admin address: the running server quarantines, allows and
// wipes at once (its next answer to the device shows it), lists devices,
// and an unknown device still fails clearly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_administration_while_the_server_runs() {
    let imap = opush_tests::require(opush_tests::DOVECOT_IMAP);
    let user = "load0058@load.test";
    let device = "CLISERVE1";
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("opush.toml");
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
             [imap]\nhost = \"127.0.0.1\"\nport = {}\n[policy]\nrequire_provisioning = false\n",
            data.display(),
            imap.port()
        ),
    )
    .unwrap();
    open(&data).await.install_schema().await.unwrap();
    let cfg = opush_server::config::Config::load(&config).unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(opush_server::serve::run_with(cfg, async move {
        let _ = stop_rx.await;
    }));
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut client =
        opush_tests::eas::EasClient::new(addr, user, &opush_tests::demo_password(), device, "12.1");
    let folder_sync = "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>";
    let mut first = None;
    for _ in 0..200 {
        if std::net::TcpStream::connect(addr).is_ok() {
            first = Some(client.post_xml("FolderSync", folder_sync).await.status);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert_eq!(first, Some(200), "the device syncs");
    let cli = |args: Vec<&'static str>| {
        let config = config.clone();
        async move {
            tokio::task::spawn_blocking(move || opush_any(&config, &args))
                .await
                .unwrap()
        }
    };
    let admin = |action: &'static str, device: &'static str| {
        cli(vec![
            "device",
            action,
            "--user",
            "load0058@load.test",
            "--device",
            device,
        ])
    };

    let (ok, text) = cli(vec!["device", "list", "--user", "load0058@load.test"]).await;
    assert!(ok, "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("load0058@load.test CLISERVE1 ") && l.contains(" allowed ")),
        "{text}"
    );

    let (ok, text) = admin("quarantine", "CLISERVE1").await;
    assert!(ok && text.contains("quarantined"), "{text}");
    let res = client.post_xml("FolderSync", folder_sync).await;
    assert_eq!(
        res.status, 403,
        "a quarantined 12.1 device is refused at once"
    );

    let (ok, text) = admin("allow", "CLISERVE1").await;
    assert!(ok && text.contains("allowed"), "{text}");
    assert_eq!(client.post_xml("FolderSync", folder_sync).await.status, 200);

    let (ok, text) = admin("wipe", "CLISERVE1").await;
    assert!(ok && text.contains("remote wipe requested"), "{text}");
    let res = client.post_xml("FolderSync", folder_sync).await;
    assert_eq!(
        res.status, 449,
        "the wipe reaches the device through Provision"
    );

    let (ok, text) = admin("wipe", "NOPE").await;
    assert!(!ok, "{text}");
    assert!(text.contains("no device NOPE"), "{text}");

    let _ = stop_tx.send(());
    server.await.unwrap().unwrap();
    // The wipe is in the device's log, written by the server.
    let store = open(&data).await;
    let key = DeviceKey::new(user, device).unwrap();
    let s = Sessions::new(store.clone(), 0, 4);
    assert_eq!(
        s.open(key).await.unwrap().state().wipe,
        WipeState::Requested
    );
}
