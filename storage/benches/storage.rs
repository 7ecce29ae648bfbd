//! Storage benchmarks (criterion), per backend: conditional appends per
//! second for 1 and 100 concurrent devices, one Sync window's append (100
//! and 512 messages), reading back a 10,000-event
//! device log, loading a snapshot of a 100,000-item collection (~4 MB), and
//! a device lease taken, the head read and the lease released (what a
//! request with backend effects adds on a shared store).
//!
//! `STORE=embedded` (default), `STORE=cassandra` or `STORE=both`; the
//! Cassandra runs need `scripts/stack up cassandra` and use a fresh keyspace
//! that is dropped at the end. Figures go in docs/BENCHMARKS.md `## Storage`.

#![allow(clippy::unwrap_used)]
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use opush_storage::{
    AppendBatch, BackendKind, DeviceKey, Password, Snapshot, StorageConfig, Store,
};

const EVENT: &[u8] =
    b"SyncKeyIssued{collection: 7, key: 42, changes: [1, 2, 3, 4, 5, 6, 7, 8]} padding..";

fn backends() -> Vec<BackendKind> {
    match std::env::var("STORE").as_deref() {
        Ok("cassandra") => vec![BackendKind::Cassandra],
        Ok("both") => vec![BackendKind::Embedded, BackendKind::Cassandra],
        _ => vec![BackendKind::Embedded],
    }
}

fn config(kind: BackendKind, dir: &std::path::Path) -> StorageConfig {
    match kind {
        BackendKind::Embedded => StorageConfig {
            path: dir.to_path_buf(),
            ..StorageConfig::default()
        },
        BackendKind::Cassandra => {
            let suffix = blake3::hash(
                format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
            )
            .to_hex()[..10]
                .to_string();
            StorageConfig {
                backend: BackendKind::Cassandra,
                keyspace: format!("opush_bench_{suffix}"),
                user: "opush".into(),
                password: Password::new(
                    std::env::var("OPUSH_CASSANDRA_PASSWORD")
                        .unwrap_or_else(|_| "opush-test".into()),
                ),
                read_timeout_ms: 30_000,
                ..StorageConfig::default()
            }
        }
    }
}

fn name(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Embedded => "embedded",
        BackendKind::Cassandra => "cassandra",
    }
}

fn bench_storage(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for kind in backends() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(kind, dir.path());
        let store = rt.block_on(async {
            let s = Store::open(&cfg).await.unwrap();
            s.install_schema().await.unwrap();
            s
        });
        let b = name(kind);

        // 1. Appends, one device, one event per conditional append.
        let mut g = c.benchmark_group("storage_append");
        g.throughput(Throughput::Elements(1));
        let one = DeviceKey::new("bench", "single").unwrap();
        let mut head = 0u64;
        g.bench_function(BenchmarkId::new(b, "1_device"), |bench| {
            bench.iter(|| {
                head = rt
                    .block_on(
                        store.append(AppendBatch::new(one.clone(), head).event(1, EVENT.to_vec())),
                    )
                    .unwrap();
            })
        });

        // 2. 100 devices appending concurrently (one append each per iteration).
        let devices: Vec<DeviceKey> = (0..100)
            .map(|i| DeviceKey::new("bench", format!("dev{i:03}")).unwrap())
            .collect();
        let mut heads = vec![0u64; devices.len()];
        g.throughput(Throughput::Elements(devices.len() as u64));
        g.bench_function(BenchmarkId::new(b, "100_devices"), |bench| {
            bench.iter(|| {
                let new_heads = rt.block_on(async {
                    let tasks: Vec<_> = devices
                        .iter()
                        .zip(&heads)
                        .map(|(d, h)| {
                            let s = store.clone();
                            let batch = AppendBatch::new(d.clone(), *h).event(1, EVENT.to_vec());
                            tokio::spawn(async move { s.append(batch).await.unwrap() })
                        })
                        .collect();
                    let mut out = Vec::with_capacity(tasks.len());
                    for t in tasks {
                        out.push(t.await.unwrap());
                    }
                    out
                });
                heads = new_heads;
            })
        });

        // 3. One Sync window's append: the six events a window of 100 or 512
        // new messages records (RequestReceived, BackendObserved, Decided,
        // SyncKeyConfirmed, SyncKeyIssued, and a trace), with the sizes the
        // server writes (8.7 KB and 45 KB in all): the append a window's
        // answer waits for.
        for (window, sizes) in [
            (100u32, [60usize, 250, 4_300, 40, 4_000, 60]),
            (512, [60, 250, 23_000, 40, 22_000, 60]),
        ] {
            let dev = DeviceKey::new("bench", format!("window{window}")).unwrap();
            let events: Vec<Vec<u8>> = sizes
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (0..*n)
                        .map(|j| (j as u8).wrapping_mul(31).wrapping_add(i as u8))
                        .collect()
                })
                .collect();
            let mut head = 0u64;
            g.throughput(Throughput::Elements(1));
            g.bench_function(BenchmarkId::new(b, format!("window_{window}")), |bench| {
                bench.iter(|| {
                    let mut batch = AppendBatch::new(dev.clone(), head);
                    for e in &events {
                        batch = batch.event(1, e.clone());
                    }
                    head = rt.block_on(store.append(batch)).unwrap();
                })
            });
        }
        g.finish();

        // 4. Reading back a 10,000-event log.
        let log = DeviceKey::new("bench", "log10k").unwrap();
        rt.block_on(async {
            let mut h = 0;
            while h < 10_000 {
                let mut batch = AppendBatch::new(log.clone(), h);
                for _ in 0..100 {
                    batch = batch.event(1, EVENT.to_vec());
                }
                h = store.append(batch).await.unwrap();
            }
        });
        let mut g = c.benchmark_group("storage_read");
        g.throughput(Throughput::Elements(10_000));
        g.bench_function(BenchmarkId::new(b, "10k_events"), |bench| {
            bench.iter(|| {
                let events = rt.block_on(store.read_events(&log, 1)).unwrap();
                assert_eq!(events.len(), 10_000);
            })
        });
        g.finish();

        // 5. Loading the snapshot of a 100,000-item collection (40 bytes an item).
        let snap_dev = DeviceKey::new("bench", "snapshot").unwrap();
        let payload: Vec<u8> = (0..100_000u32)
            .flat_map(|i| {
                let mut item = [0u8; 40];
                item[..4].copy_from_slice(&i.to_le_bytes());
                item[4..36].copy_from_slice(blake3::hash(&i.to_le_bytes()).as_bytes());
                item[36..].copy_from_slice(&(!i).to_le_bytes());
                item
            })
            .collect();
        let bytes = payload.len() as u64;
        rt.block_on(store.put_snapshot(
            &snap_dev,
            "inbox",
            Snapshot {
                seq: 1,
                format_version: 1,
                payload,
            },
        ))
        .unwrap();
        let mut g = c.benchmark_group("storage_snapshot");
        g.throughput(Throughput::Bytes(bytes));
        g.bench_function(BenchmarkId::new(b, "load_100k_items"), |bench| {
            bench.iter(|| {
                let s = rt
                    .block_on(store.get_snapshot(&snap_dev, "inbox"))
                    .unwrap()
                    .unwrap();
                assert_eq!(s.payload.len() as u64, bytes);
            })
        });
        g.finish();

        // 6. The device lease around a request with backend effects: what a
        // Sync with Commands (MoveItems, SendMail…) adds on a shared store,
        // in sequence on its path: take (an LWT), the head read again,
        // release (an LWT). Beside it, the head read alone.
        let mut g = c.benchmark_group("storage_lease");
        g.throughput(Throughput::Elements(1));
        let leased = DeviceKey::new("bench", "leased").unwrap();
        let ttl = Duration::from_secs(30);
        let mut n = 0u64;
        g.bench_function(BenchmarkId::new(b, "take_head_release"), |bench| {
            bench.iter(|| {
                n += 1;
                let holder = format!("bench:{n}");
                rt.block_on(async {
                    assert!(store.take_lease(&leased, &holder, ttl).await.unwrap());
                    store.head(&leased).await.unwrap();
                    assert!(store.release_lease(&leased, &holder).await.unwrap());
                })
            })
        });
        g.bench_function(BenchmarkId::new(b, "head"), |bench| {
            bench.iter(|| rt.block_on(store.head(&leased)).unwrap())
        });
        g.finish();

        if kind == BackendKind::Cassandra {
            rt.block_on(store.destroy()).unwrap();
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    targets = bench_storage
}
criterion_main!(benches);
