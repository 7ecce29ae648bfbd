//! Fault test on the real single Cassandra node: the node is stopped in the
//! middle of a stream of appends (`scripts/stack down cassandra`) and
//! started again (`scripts/stack up cassandra`). Every append must either
//! fully happen or report a retryable error, and appends must succeed again
//! after the restart without reopening the store. Slow (one node restart),
//! so it is one test. Needs `scripts/stack up cassandra` first.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, TestStore};
use opush_storage::{AppendBatch, DeviceKey, StorageError};

fn stack(action: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/stack");
    let status = std::process::Command::new("bash")
        .arg(script)
        .arg(action)
        .arg("cassandra")
        .status()
        .unwrap();
    assert!(status.success(), "scripts/stack {action} cassandra failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appends_survive_a_node_restart() {
    let t = TestStore::fresh_with(Backend::Cassandra, |c| {
        c.read_timeout_ms = 3_000;
        c.max_retries = 1;
    })
    .await;
    t.store.install_schema().await.unwrap();
    let store = t.store.clone();
    let device = DeviceKey::new("fault", "dev1").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let acked_count = Arc::new(AtomicU64::new(0));

    let appender = {
        let (store, device, stop, acked_count) = (
            store.clone(),
            device.clone(),
            stop.clone(),
            acked_count.clone(),
        );
        tokio::spawn(async move {
            let mut head = 0u64;
            let mut acked = BTreeSet::new(); // batch numbers acknowledged
            let mut failed = BTreeSet::new(); // batch numbers that reported an error
            let mut batch_no = 0u64;
            while !stop.load(Ordering::Relaxed) {
                batch_no += 1;
                let batch = AppendBatch::new(device.clone(), head)
                    .event(1, format!("b{batch_no}-0").into_bytes())
                    .event(1, format!("b{batch_no}-1").into_bytes());
                match store.append(batch).await {
                    Ok(h) => {
                        head = h;
                        acked.insert(batch_no);
                        acked_count.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        assert!(
                            e.is_retryable(),
                            "batch {batch_no}: non-retryable error {e:?}"
                        );
                        failed.insert(batch_no);
                        // Like the server: reload the head once the store answers again.
                        loop {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            match store.head(&device).await {
                                Ok(h) => {
                                    head = h;
                                    break;
                                }
                                Err(e) => assert!(e.is_retryable(), "head: {e:?}"),
                            }
                            if stop.load(Ordering::Relaxed) {
                                break;
                            }
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (acked, failed)
        })
    };

    let wait_acks = |n: u64, within: Duration| {
        let acked_count = acked_count.clone();
        async move {
            let start = Instant::now();
            let target = acked_count.load(Ordering::Relaxed) + n;
            while acked_count.load(Ordering::Relaxed) < target {
                assert!(
                    start.elapsed() < within,
                    "fewer than {n} appends acknowledged within {within:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_acks(20, Duration::from_secs(60)).await;
    tokio::task::spawn_blocking(|| stack("down")).await.unwrap();
    let during_outage = acked_count.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio::task::spawn_blocking(|| stack("up")).await.unwrap();
    // The same Store (no process restart) must write again.
    wait_acks(20, Duration::from_secs(180)).await;
    stop.store(true, Ordering::Relaxed);
    let (acked, failed) = appender.await.unwrap();
    assert!(
        !failed.is_empty(),
        "the outage was not noticed (acked {during_outage} before it)"
    );

    let events = store.read_events(&device, 1).await.unwrap();
    let head = store.head(&device).await.unwrap();
    assert_eq!(events.len() as u64, head);
    let mut present = BTreeSet::new();
    for (i, pair) in events.chunks(2).enumerate() {
        assert_eq!(
            pair.len(),
            2,
            "a batch of two was torn at seq {}",
            pair[0].seq
        );
        assert_eq!(pair[0].seq, 2 * i as u64 + 1);
        let p0 = String::from_utf8(pair[0].payload.clone()).unwrap();
        let p1 = String::from_utf8(pair[1].payload.clone()).unwrap();
        let n: u64 = p0
            .strip_prefix('b')
            .unwrap()
            .strip_suffix("-0")
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(p1, format!("b{n}-1"), "events of one batch stay together");
        present.insert(n);
    }
    for n in &acked {
        assert!(present.contains(n), "acknowledged batch {n} is missing");
    }
    for n in &present {
        assert!(
            acked.contains(n) || failed.contains(n),
            "batch {n} appeared from nowhere"
        );
    }
    // A failed batch that did land is consistent with "fully happened".
    let landed_after_error = failed.intersection(&present).count();
    eprintln!(
        "acked {} batches, {} errors ({landed_after_error} of them had landed)",
        acked.len(),
        failed.len()
    );
    let err = store
        .append(AppendBatch::new(device.clone(), 0).event(1, b"stale".to_vec()))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::Conflict { .. }), "{err:?}");
    t.cleanup().await;
}
