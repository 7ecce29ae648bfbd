//! Multi-node lane (on demand: `--features cluster-tests`, with
//! `scripts/stack up cassandra-cluster`): with two of three nodes stopped,
//! `RETRY_OR_CL_DOWNGRADE` writes succeed at a lower consistency and log the
//! downgrade, while `ALWAYS_RETRY` fails with a retryable error after its
//! retries. Conditional appends (LWT, serial consistency) are never
//! downgraded and fail retryably. The stopped nodes are started again.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use opush_storage::{
    AppendBatch, ConsistencyLevel, DeviceKey, DeviceRecord, DeviceState, RetryPolicyKind,
    StorageConfig, Store,
};

#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn stack(action: &str, nodes: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/stack");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(action)
        .arg("cassandra-cluster")
        .env("CASSANDRA_CLUSTER_NODES", nodes)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "scripts/stack {action} cassandra-cluster ({nodes}) failed"
    );
}

fn record(id: &str) -> DeviceRecord {
    DeviceRecord {
        key: DeviceKey::new("cluster", id).unwrap(),
        device_type: "iPhone".into(),
        first_seen_ms: 1,
        last_seen_ms: 2,
        policy_key: Some(7),
        state: DeviceState::Allowed,
        info: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn downgrade_with_two_nodes_down() {
    let logs = Logs::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .init();

    let base = StorageConfig {
        seeds: vec!["127.0.0.1".into(), "127.0.0.2".into(), "127.0.0.3".into()],
        replication_factor: 3,
        consistency: ConsistencyLevel::Quorum,
        read_timeout_ms: 10_000,
        ..common::cassandra_config()
    };
    common::require_cassandra(&base);
    let admin = Store::open(&base).await.unwrap();
    admin.install_schema().await.unwrap();
    admin.put_device(record("before")).await.unwrap();
    let downgrading = Store::open(&StorageConfig {
        retry_policy: RetryPolicyKind::RetryOrClDowngrade,
        ..base.clone()
    })
    .await
    .unwrap();
    let always = Store::open(&StorageConfig {
        retry_policy: RetryPolicyKind::AlwaysRetry,
        ..base.clone()
    })
    .await
    .unwrap();
    // Connect both sessions while all nodes are up.
    downgrading.get_device(&record("before").key).await.unwrap();
    always.get_device(&record("before").key).await.unwrap();

    tokio::task::spawn_blocking(|| stack("down", "2 3"))
        .await
        .unwrap();
    let (logs2, downgrading2, always2) = (logs.clone(), downgrading.clone(), always.clone());
    let down = async move {
        let (logs, downgrading, always) = (logs2, downgrading2, always2);
        downgrading.put_device(record("downgraded")).await.unwrap();
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("downgrading consistency"),
            "no downgrade logged:\n{text}"
        );
        assert!(
            text.contains("initial_consistency=Quorum") && text.contains("new_consistency=One"),
            "{text}"
        );

        let err = always.put_device(record("always")).await.unwrap_err();
        assert!(err.is_retryable(), "{err:?}");
        let text = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("giving up after max retries"), "{text}");

        let d = DeviceKey::new("cluster", "lwt").unwrap();
        let err = downgrading
            .append(AppendBatch::new(d, 0).event(1, b"x".to_vec()))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "LWT with one replica: {err:?}");
    };
    let result = tokio::spawn(down).await;
    tokio::task::spawn_blocking(|| stack("up", ""))
        .await
        .unwrap();
    result.unwrap();
    assert!(admin
        .get_device(&record("downgraded").key)
        .await
        .unwrap()
        .is_some());
    admin.destroy().await.unwrap();
}
