//! The embedded store's group commit keeps the append contract: many
//! devices appending at once (so their appends share commits), with racing
//! writers on one device among them, lose nothing acknowledged, store
//! nothing twice, store nothing refused, and every acknowledged head is
//! found again after the store is closed and reopened; device-registry rows
//! written among them too.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use opush_storage::{
    digest, AppendBatch, DeviceKey, DeviceRecord, DeviceState, StorageConfig, StorageError, Store,
};

fn payload(device: &DeviceKey, seq: u64) -> Vec<u8> {
    format!("event {seq} of {device}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_are_all_durable_once_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        path: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let store = Store::open(&cfg).await.unwrap();
    store.install_schema().await.unwrap();

    // 60 devices, each appending 15 batches of 1–3 events as fast as its
    // previous append is acknowledged.
    let devices: Vec<DeviceKey> = (0..60)
        .map(|i| DeviceKey::new(format!("user{}", i % 7), format!("dev{i:02}")).unwrap())
        .collect();
    let mut tasks = Vec::new();
    for (i, d) in devices.iter().enumerate() {
        let (s, d) = (store.clone(), d.clone());
        tasks.push(tokio::spawn(async move {
            let mut head = 0;
            for round in 0..15u64 {
                if round == 7 {
                    // The registry row, written on a request's path.
                    let rec = DeviceRecord {
                        key: d.clone(),
                        device_type: "iPhone".into(),
                        first_seen_ms: 1_700_000_000_000,
                        last_seen_ms: 1_700_000_100_000,
                        policy_key: None,
                        state: DeviceState::Allowed,
                        info: [("round".to_owned(), round.to_string())].into(),
                    };
                    s.put_device(rec).await.unwrap();
                }
                let n = 1 + (i as u64 + round) % 3;
                let mut batch = AppendBatch::new(d.clone(), head);
                for k in 1..=n {
                    batch = batch.event(1, payload(&d, head + k));
                }
                head = s.append(batch).await.unwrap();
            }
            head
        }));
    }
    // Meanwhile, four writers race on one device from the same head each
    // round: exactly one wins, even when they share a commit.
    let raced = DeviceKey::new("racer", "shared").unwrap();
    let mut race_winners = Vec::new();
    let mut race_head = 0;
    for round in 0..10u64 {
        let attempts: Vec<_> = (0..4u64)
            .map(|w| {
                let s = store.clone();
                let batch = AppendBatch::new(raced.clone(), race_head)
                    .event(1, format!("round {round} writer {w}").into_bytes());
                tokio::spawn(async move { (w, s.append(batch).await) })
            })
            .collect();
        let mut won = Vec::new();
        for a in attempts {
            match a.await.unwrap() {
                (w, Ok(h)) => won.push((w, h)),
                (
                    _,
                    Err(StorageError::Conflict {
                        expected, actual, ..
                    }),
                ) => {
                    assert_eq!((expected, actual), (race_head, race_head + 1));
                }
                (_, Err(e)) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: {won:?}");
        race_head = won[0].1;
        race_winners.push(won[0].0);
    }
    let mut acked = BTreeMap::new();
    for (d, t) in devices.iter().zip(tasks) {
        acked.insert(d.clone(), t.await.unwrap());
    }
    drop(store);

    // Reopened: every acknowledged event, once, in order, intact.
    let store = Store::open(&cfg).await.unwrap();
    for (d, head) in &acked {
        let rec = store
            .get_device(d)
            .await
            .unwrap()
            .expect("its registry row");
        assert_eq!(rec.info.get("round").map(String::as_str), Some("7"));
        assert_eq!(store.head(d).await.unwrap(), *head, "{d}");
        let events = store.read_events(d, 1).await.unwrap();
        assert_eq!(events.len() as u64, *head, "{d}");
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.payload, payload(d, e.seq), "{d}");
            assert_eq!(e.digest, Some(digest(&e.payload)));
        }
    }
    let events = store.read_events(&raced, 1).await.unwrap();
    assert_eq!(events.len(), 10, "one event per round: the winner's");
    for (round, (e, w)) in events.iter().zip(&race_winners).enumerate() {
        assert_eq!(e.payload, format!("round {round} writer {w}").into_bytes());
    }
}
