//! The storage conformance suite: every behaviour of the `Store` API,
//! written once and run against both backends (`embedded::*` and
//! `cassandra::*`; the Cassandra half needs `scripts/stack up cassandra`
//! and fails, not skips, without it). Each Cassandra test uses its own
//! fresh keyspace and drops it.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Backend, TestStore};
use opush_storage::{
    digest, AppendBatch, DeviceChange, DeviceKey, DeviceRecord, DeviceState, MigrationOptions,
    SchemaStatus, SentCopy, SentCopyNote, Snapshot, StorageError, Store, LATEST_SCHEMA,
    LEASES_SCHEMA,
};

fn dev(user: &str, id: &str) -> DeviceKey {
    DeviceKey::new(user, id).unwrap()
}

fn payload(device: &DeviceKey, seq: u64) -> Vec<u8> {
    format!("event {seq} of {device}").into_bytes()
}

/// Appends `n` single-event batches and returns the head.
async fn append_n(store: &Store, device: &DeviceKey, n: u64) -> u64 {
    let mut head = store.head(device).await.unwrap();
    for _ in 0..n {
        let seq = head + 1;
        head = store
            .append(AppendBatch::new(device.clone(), head).event(1, payload(device, seq)))
            .await
            .unwrap();
    }
    head
}

macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Embedded).await })*
        }
        mod cassandra {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name(super::Backend::Cassandra).await })*
        }
    };
}

conformance!(
    append_and_read_in_order,
    concurrent_writers_exactly_one_wins,
    stale_head_and_bad_input_are_rejected,
    snapshots_keep_the_latest,
    device_registry,
    concurrent_device_changes_all_take_effect,
    captures_round_trip,
    rows_expire_after_their_ttl,
    schema_lifecycle,
    interrupted_migration_resumes,
    schema_changes_reach_the_same_store,
    sent_copies_round_trip,
    a_v2_store_gains_sent_copies_on_update,
    device_leases,
    a_v3_store_gains_leases_on_update,
    a_v4_store_gains_sent_copy_info_on_update,
);

async fn append_and_read_in_order(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let s = &t.store;
    let a = dev("alice@example.com", "ApplDEV1");
    let b = dev("alice@example.com", "ApplDEV10"); // a prefix of the other id must not mix logs
    assert_eq!(s.head(&a).await.unwrap(), 0);
    assert!(s.read_events(&a, 0).await.unwrap().is_empty());

    let batch = AppendBatch::new(a.clone(), 0)
        .event(3, b"one".to_vec())
        .event(4, b"two".to_vec());
    assert_eq!(s.append(batch).await.unwrap(), 2);
    let batch = AppendBatch::new(a.clone(), 2).event(3, b"three".to_vec());
    assert_eq!(s.append(batch).await.unwrap(), 3);
    append_n(s, &b, 5).await;

    let events = s.read_events(&a, 0).await.unwrap();
    let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    let payloads: Vec<&[u8]> = events.iter().map(|e| e.payload.as_slice()).collect();
    assert_eq!(payloads, vec![b"one".as_slice(), b"two", b"three"]);
    assert_eq!(
        events.iter().map(|e| e.format_version).collect::<Vec<_>>(),
        vec![3, 4, 3]
    );
    for e in &events {
        assert_eq!(e.digest, Some(digest(&e.payload)), "event {} digest", e.seq);
    }
    let tail = s.read_events(&a, 2).await.unwrap();
    assert_eq!(tail.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2, 3]);
    assert_eq!(s.head(&a).await.unwrap(), 3);
    assert_eq!(s.head(&b).await.unwrap(), 5);
    assert_eq!(s.read_events(&b, 0).await.unwrap().len(), 5);
    t.cleanup().await;
}

async fn concurrent_writers_exactly_one_wins(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let s = t.store.clone();
    let d = dev("bob", "dev-race");
    append_n(&s, &d, 2).await;
    for round in 0..5u64 {
        let head = s.head(&d).await.unwrap();
        let w1 = AppendBatch::new(d.clone(), head)
            .event(1, format!("writer one round {round}").into_bytes());
        let w2 = AppendBatch::new(d.clone(), head)
            .event(1, format!("writer two round {round}").into_bytes())
            .event(1, b"second event of writer two".to_vec());
        let (s1, s2) = (s.clone(), s.clone());
        let (r1, r2) = tokio::join!(
            tokio::spawn(async move { s1.append(w1).await }),
            tokio::spawn(async move { s2.append(w2).await })
        );
        let (r1, r2) = (r1.unwrap(), r2.unwrap());
        let (won, lost) = match (&r1, &r2) {
            (Ok(_), Err(_)) => (1, r2),
            (Err(_), Ok(_)) => (2, r1),
            other => panic!("round {round}: expected exactly one winner, got {other:?}"),
        };
        let new_head = s.head(&d).await.unwrap();
        match lost {
            Err(StorageError::Conflict {
                expected, actual, ..
            }) => {
                assert_eq!(expected, head);
                assert_eq!(actual, new_head, "the conflict reports the winner's head");
            }
            other => panic!("round {round}: loser got {other:?}"),
        }
        let events = s.read_events(&d, head + 1).await.unwrap();
        let expected_len = if won == 1 { 1 } else { 2 };
        assert_eq!(
            events.len(),
            expected_len,
            "round {round}: only the winner's events are stored"
        );
        assert_eq!(new_head, head + expected_len as u64);
        let who = if won == 1 { "writer one" } else { "writer two" };
        assert!(String::from_utf8_lossy(&events[0].payload).starts_with(who));
    }
    t.cleanup().await;
}

async fn stale_head_and_bad_input_are_rejected(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let s = &t.store;
    let d = dev("carol", "dev1");
    append_n(s, &d, 3).await;
    let err = s
        .append(AppendBatch::new(d.clone(), 1).event(1, b"late".to_vec()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Conflict {
                expected: 1,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    let err = s
        .append(AppendBatch::new(d.clone(), 7).event(1, b"ahead".to_vec()))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StorageError::Conflict {
                expected: 7,
                actual: 3,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(
        s.read_events(&d, 0).await.unwrap().len(),
        3,
        "failed appends wrote nothing"
    );
    let err = s.append(AppendBatch::new(d.clone(), 3)).await.unwrap_err();
    assert!(matches!(err, StorageError::InvalidInput(_)), "{err:?}");
    assert!(matches!(
        DeviceKey::new("a\0b", "x"),
        Err(StorageError::InvalidInput(_))
    ));
    assert!(matches!(
        DeviceKey::new("", "x"),
        Err(StorageError::InvalidInput(_))
    ));
    let bad = DeviceKey {
        user: "u".into(),
        device_id: "x".repeat(300),
    };
    assert!(matches!(
        s.head(&bad).await,
        Err(StorageError::InvalidInput(_))
    ));
    t.cleanup().await;
}

async fn snapshots_keep_the_latest(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let s = &t.store;
    let d = dev("dave", "dev1");
    assert_eq!(s.get_snapshot(&d, "inbox").await.unwrap(), None);
    let first = Snapshot {
        seq: 10,
        format_version: 1,
        payload: vec![1; 1000],
    };
    s.put_snapshot(&d, "inbox", first.clone()).await.unwrap();
    assert_eq!(s.get_snapshot(&d, "inbox").await.unwrap(), Some(first));
    let big: Vec<u8> = (0..2_000_000u32).map(|i| (i % 251) as u8).collect();
    let second = Snapshot {
        seq: 42,
        format_version: 2,
        payload: big,
    };
    s.put_snapshot(&d, "inbox", second.clone()).await.unwrap();
    let other = Snapshot {
        seq: 5,
        format_version: 1,
        payload: b"calendar".to_vec(),
    };
    s.put_snapshot(&d, "calendar", other.clone()).await.unwrap();
    assert_eq!(s.get_snapshot(&d, "inbox").await.unwrap(), Some(second));
    assert_eq!(s.get_snapshot(&d, "calendar").await.unwrap(), Some(other));
    assert_eq!(
        s.get_snapshot(&dev("dave", "dev2"), "inbox").await.unwrap(),
        None
    );
    t.cleanup().await;
}

fn record(user: &str, id: &str, state: DeviceState) -> DeviceRecord {
    let mut info = BTreeMap::new();
    info.insert("Model".to_string(), format!("model of {id}"));
    info.insert("OS".to_string(), "iOS 18.1".to_string());
    DeviceRecord {
        key: dev(user, id),
        device_type: "iPhone".into(),
        first_seen_ms: 1_700_000_000_000,
        last_seen_ms: 1_700_000_100_000,
        policy_key: None,
        state,
        info,
    }
}

async fn device_registry(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let s = &t.store;
    let a1 = record("erin", "phone", DeviceState::Allowed);
    let a2 = record("erin", "tablet", DeviceState::Quarantined);
    let b1 = record("erin2", "phone", DeviceState::WipeRequested);
    for r in [&a1, &a2, &b1] {
        s.put_device(r.clone()).await.unwrap();
    }
    assert_eq!(s.get_device(&a1.key).await.unwrap(), Some(a1.clone()));
    assert_eq!(s.get_device(&dev("erin", "watch")).await.unwrap(), None);
    let mut mine = s.list_devices("erin").await.unwrap();
    mine.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(
        mine,
        vec![a1.clone(), a2.clone()],
        "erin2's devices are not erin's"
    );
    let mut all = s.list_all_devices().await.unwrap();
    all.sort_by(|x, y| x.key.cmp(&y.key));
    assert_eq!(all, vec![a1.clone(), a2, b1]);

    let mut updated = a1.clone();
    updated.state = DeviceState::Wiped;
    updated.policy_key = Some(3_000_000_001);
    updated.last_seen_ms += 5;
    updated
        .info
        .insert("UserAgent".into(), "Apple-iPhone/2101".into());
    s.put_device(updated.clone()).await.unwrap();
    assert_eq!(s.get_device(&a1.key).await.unwrap(), Some(updated));
    t.cleanup().await;
}

/// Changes of one registry row made at once (a request's last-seen update,
/// Settings' device information, an administrator's quarantine) all take
/// effect: each is applied to the row as stored, not to a copy read before
/// the others were written.
async fn concurrent_device_changes_all_take_effect(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let key = dev("gina", "phone");
    let created = record("gina", "phone", DeviceState::Allowed);

    // A change of a missing row without a row to create writes nothing.
    let mut change = DeviceChange::new(key.clone());
    change.state = Some(DeviceState::Quarantined);
    assert_eq!(t.store.change_device(change.clone()).await.unwrap(), None);
    assert_eq!(t.store.get_device(&key).await.unwrap(), None);
    // A row to create under another key is refused.
    let mut wrong = DeviceChange::new(key.clone());
    wrong.create = Some(record("gina", "tablet", DeviceState::Allowed));
    assert!(matches!(
        t.store.change_device(wrong).await,
        Err(StorageError::InvalidInput(_))
    ));

    let mut first = DeviceChange::new(key.clone());
    first.create = Some(created.clone());
    assert_eq!(
        t.store.change_device(first).await.unwrap(),
        Some(created.clone())
    );

    let mut tasks = Vec::new();
    for i in 0..4i64 {
        for kind in ["request", "settings"] {
            let s = t.store.clone();
            let key = key.clone();
            tasks.push(tokio::spawn(async move {
                let mut c = DeviceChange::new(key);
                c.info.insert(format!("{kind}{i}"), format!("value {i}"));
                if kind == "request" {
                    c.seen_ms = Some(created.last_seen_ms + 10 + i);
                }
                s.change_device(c).await.unwrap()
            }));
        }
        if i == 1 {
            let (s, c) = (t.store.clone(), change.clone());
            tasks.push(tokio::spawn(
                async move { s.change_device(c).await.unwrap() },
            ));
        }
    }
    for task in tasks {
        let row = task.await.unwrap().expect("the row exists");
        assert_eq!(row.key, key);
    }
    let row = t.store.get_device(&key).await.unwrap().unwrap();
    let keys: Vec<&str> = row.info.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "Model",
            "OS",
            "request0",
            "request1",
            "request2",
            "request3",
            "settings0",
            "settings1",
            "settings2",
            "settings3"
        ],
        "every change's entry is kept"
    );
    assert_eq!(
        row.state,
        DeviceState::Quarantined,
        "the quarantine is kept"
    );
    assert_eq!(
        row.last_seen_ms,
        created.last_seen_ms + 13,
        "the latest request"
    );
    assert_eq!(row.first_seen_ms, created.first_seen_ms);

    // Last seen never goes back.
    let mut older = DeviceChange::new(key.clone());
    older.seen_ms = Some(created.last_seen_ms);
    older.state = Some(DeviceState::Allowed);
    let row = t.store.change_device(older).await.unwrap().unwrap();
    assert_eq!(row.last_seen_ms, created.last_seen_ms + 13);
    assert_eq!(row.state, DeviceState::Allowed);
    t.cleanup().await;
}

async fn captures_round_trip(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let s = &t.store;
    let d = dev("frank", "dev1");
    let ttl = Duration::from_secs(3600);
    s.put_capture(&d, "req-0002", "request", b"<Sync/>".to_vec(), ttl)
        .await
        .unwrap();
    s.put_capture(&d, "req-0001", "response", vec![3, 1, 106, 0], ttl)
        .await
        .unwrap();
    s.put_capture(&d, "req-0001", "request", vec![3, 1, 106, 0, 0], ttl)
        .await
        .unwrap();
    s.put_capture(
        &dev("frank", "dev2"),
        "req-0001",
        "request",
        b"other".to_vec(),
        ttl,
    )
    .await
    .unwrap();
    let caps = s.get_captures(&d).await.unwrap();
    let ids: Vec<(&str, &str)> = caps
        .iter()
        .map(|c| (c.req_id.as_str(), c.kind.as_str()))
        .collect();
    assert_eq!(
        ids,
        vec![
            ("req-0001", "request"),
            ("req-0001", "response"),
            ("req-0002", "request")
        ]
    );
    assert_eq!(caps[2].bytes, b"<Sync/>");
    for c in &caps {
        assert_eq!(c.digest, digest(&c.bytes));
        assert!(c.at_ms > 1_700_000_000_000);
    }
    t.cleanup().await;
}

async fn rows_expire_after_their_ttl(backend: Backend) {
    let t = TestStore::fresh_with(backend, |c| {
        c.ttl_events_s = 2;
        c.ttl_snapshots_s = 2;
        c.ttl_devices_s = 2;
        // Longer: the try below reads its remaining TTL about a second in
        // (Cassandra counts TTLs in whole seconds; at 2 s the row could be
        // gone by then on a loaded machine).
        c.ttl_sent_copies_s = 3;
        c.expiry_interval_s = 3600; // the test purges by hand
    })
    .await;
    let s = &t.store;
    s.install_schema().await.unwrap();
    let d = dev("gina", "dev1");
    append_n(s, &d, 3).await;
    s.put_snapshot(
        &d,
        "inbox",
        Snapshot {
            seq: 3,
            format_version: 1,
            payload: b"state".to_vec(),
        },
    )
    .await
    .unwrap();
    s.put_device(record("gina", "dev1", DeviceState::Allowed))
        .await
        .unwrap();
    s.put_capture(
        &d,
        "r1",
        "request",
        b"body".to_vec(),
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    s.put_capture(
        &d,
        "r2",
        "request",
        b"kept".to_vec(),
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    s.put_sent_copy(sent_copy("gina", "<m1@x>", 0))
        .await
        .unwrap();
    assert_eq!(s.read_events(&d, 0).await.unwrap().len(), 3);
    assert!(s.get_snapshot(&d, "inbox").await.unwrap().is_some());
    assert_eq!(s.sent_copies("gina").await.unwrap().len(), 1);
    // A try recorded keeps the row's TTL: it still expires on time.
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    assert!(s
        .claim_sent_copy_try("gina", "<m1@x>", 1_800_000_000_500, (1, 1_800_000_000_000))
        .await
        .unwrap());

    tokio::time::sleep(Duration::from_millis(4_200)).await;
    assert_eq!(
        s.read_events(&d, 0).await.unwrap(),
        vec![],
        "events expired"
    );
    assert_eq!(
        s.head(&d).await.unwrap(),
        0,
        "an expired device starts over"
    );
    assert_eq!(s.get_snapshot(&d, "inbox").await.unwrap(), None);
    assert_eq!(s.get_device(&d).await.unwrap(), None);
    assert!(s.list_devices("gina").await.unwrap().is_empty());
    let caps = s.get_captures(&d).await.unwrap();
    assert_eq!(
        caps.iter().map(|c| c.req_id.as_str()).collect::<Vec<_>>(),
        vec!["r2"]
    );
    assert!(s.sent_copies("gina").await.unwrap().is_empty());
    assert!(s.all_sent_copies().await.unwrap().is_empty());
    assert!(
        !s.claim_sent_copy_try("gina", "<m1@x>", 1_800_000_000_000, (2, 1_800_000_001_000))
            .await
            .unwrap(),
        "an expired copy is not there to try"
    );
    let purged = s.purge_expired().await.unwrap();
    if backend == Backend::Embedded {
        // 3 events, the head, the snapshot, the device, one capture and
        // the sent copy.
        assert_eq!(purged, 8);
    }
    // The device starts over from sequence 1.
    assert_eq!(
        s.append(AppendBatch::new(d.clone(), 0).event(1, b"again".to_vec()))
            .await
            .unwrap(),
        1
    );
    assert_eq!(s.read_events(&d, 0).await.unwrap().len(), 1);
    t.cleanup().await;
}

async fn schema_lifecycle(backend: Backend) {
    let t = TestStore::fresh_with(backend, |_| {}).await;
    let s = &t.store;
    assert_eq!(
        s.schema_status().await.unwrap(),
        SchemaStatus::InstallRequired {
            latest: LATEST_SCHEMA
        }
    );
    let d = dev("hank", "dev1");
    let err = s.head(&d).await.unwrap_err();
    assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
    s.install_schema().await.unwrap();
    match s.schema_status().await.unwrap() {
        SchemaStatus::Ok {
            version,
            installed_at_ms,
        } => {
            assert_eq!(version, LATEST_SCHEMA);
            assert!(installed_at_ms > 1_700_000_000_000);
        }
        other => panic!("after install: {other:?}"),
    }
    let err = s.install_schema().await.unwrap_err();
    assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
    let opts = MigrationOptions {
        batch_size: 10,
        page_size: 10,
        max_batches: None,
    };
    let report = s.update_schema(opts).await.unwrap();
    assert!(report.complete && report.rows == 0 && report.to == LATEST_SCHEMA);
    assert_eq!(append_n(s, &d, 1).await, 1);
    t.cleanup().await;
}

/// A store that checked the schema version (every request does) sees each
/// later change of it made through itself: an update's new row layout at
/// the next append, a destroyed schema at the next request, a new install.
async fn schema_changes_reach_the_same_store(backend: Backend) {
    let t = TestStore::fresh_with(backend, |_| {}).await;
    let s = &t.store;
    let d = dev("kate", "dev1");
    s.install_schema_version(1).await.unwrap();
    assert_eq!(append_n(s, &d, 2).await, 2);
    let events = s.read_events(&d, 0).await.unwrap();
    assert!(events.iter().all(|e| e.digest.is_none()), "v1 rows");
    let opts = MigrationOptions {
        batch_size: 10,
        page_size: 10,
        max_batches: None,
    };
    assert!(s.update_schema(opts).await.unwrap().complete);
    assert_eq!(append_n(s, &d, 1).await, 3);
    let last = s.read_events(&d, 3).await.unwrap();
    assert_eq!(
        last[0].digest,
        Some(digest(&last[0].payload)),
        "v2 row after the update"
    );
    if backend == Backend::Embedded {
        s.destroy().await.unwrap();
        let err = s.head(&d).await.unwrap_err();
        assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
        s.install_schema().await.unwrap();
        assert_eq!(s.head(&d).await.unwrap(), 0);
        assert_eq!(append_n(s, &d, 1).await, 1);
    }
    t.cleanup().await;
}

async fn interrupted_migration_resumes(backend: Backend) {
    let t = TestStore::fresh_with(backend, |c| {
        c.migration_batch_size = 10;
        c.migration_page_size = 7;
    })
    .await;
    let s = &t.store;
    s.install_schema_version(1).await.unwrap();
    assert_eq!(
        s.schema_status().await.unwrap(),
        SchemaStatus::UpdateRequired {
            current: 1,
            latest: LATEST_SCHEMA
        }
    );
    let devices = [dev("ivy", "a"), dev("ivy", "b"), dev("jack", "a")];
    // jack/a has more events than a migration step, so a step stops inside a partition.
    for (d, n) in devices.iter().zip([9u64, 4, 25]) {
        append_n(s, d, n).await;
    }
    for d in &devices {
        assert!(
            s.read_events(d, 0)
                .await
                .unwrap()
                .iter()
                .all(|e| e.digest.is_none()),
            "v1 rows have no digest"
        );
    }
    let opts = MigrationOptions {
        batch_size: 10,
        page_size: 7,
        max_batches: Some(2),
    };
    let first = s.update_schema(opts).await.unwrap();
    assert!(!first.complete, "{first:?}");
    assert_eq!(first.rows, 20);
    assert_eq!(first.to, 1);
    assert_eq!(
        s.schema_status().await.unwrap(),
        SchemaStatus::UpdateRequired {
            current: 1,
            latest: LATEST_SCHEMA
        }
    );

    // A new process (store) resumes from the recorded progress.
    let t = t.reopen().await;
    let s2 = &t.store;
    let opts = MigrationOptions {
        batch_size: 10,
        page_size: 7,
        max_batches: None,
    };
    let second = s2.update_schema(opts).await.unwrap();
    assert!(second.complete, "{second:?}");
    assert_eq!(
        first.rows + second.rows,
        38,
        "every row migrated exactly once"
    );
    match s2.schema_status().await.unwrap() {
        SchemaStatus::Ok { version, .. } => assert_eq!(version, LATEST_SCHEMA),
        other => panic!("after update: {other:?}"),
    }
    for (d, n) in devices.iter().zip([9u64, 4, 25]) {
        let events = s2.read_events(d, 0).await.unwrap();
        assert_eq!(events.len() as u64, n);
        for (i, e) in events.iter().enumerate() {
            assert_eq!(e.seq, i as u64 + 1);
            assert_eq!(e.payload, payload(d, e.seq));
            assert_eq!(
                e.digest,
                Some(digest(&e.payload)),
                "{d} event {} migrated",
                e.seq
            );
        }
    }
    // New appends carry digests too.
    assert_eq!(append_n(s2, &devices[0], 1).await, 10);
    let last = s2.read_events(&devices[0], 10).await.unwrap();
    assert_eq!(last[0].digest, Some(digest(&last[0].payload)));
    t.cleanup().await;
}

fn sent_copy(user: &str, message_id: &str, tries: u32) -> SentCopy {
    SentCopy {
        user: user.into(),
        message_id: message_id.into(),
        device_id: "ApplDEV1".into(),
        subject: format!("for {user}"),
        created_ms: 1_800_000_000_000,
        last_try_ms: 1_800_000_000_500,
        tries,
        next_try_ms: 0,
        last_error: None,
        bytes: format!("Message-ID: {message_id}\r\n\r\nfor {user}\r\n").into_bytes(),
    }
}

/// Pending Sent copies: put, listed per user and for all (without their
/// messages), read one by one with it, a try claimed and its failure
/// noted (only by the claim it names), replaced, deleted (twice: not an
/// error), bad keys and texts refused; a copy of a few MB comes back byte
/// for byte.
async fn sent_copies_round_trip(backend: Backend) {
    let t = TestStore::installed(backend).await;
    let s = &t.store;
    assert!(s.sent_copies("lena").await.unwrap().is_empty());
    let a = sent_copy("lena", "<a@example.test>", 0);
    let b = sent_copy("lena", "<b@example.test>", 3);
    // A user whose name starts with the other's must not mix with it.
    let c = sent_copy("lena2", "<a@example.test>", 0);
    for x in [&b, &a, &c] {
        s.put_sent_copy(x.clone()).await.unwrap();
    }
    assert_eq!(
        s.sent_copies("lena").await.unwrap(),
        vec![a.info(), b.info()]
    );
    assert_eq!(s.sent_copies("lena2").await.unwrap(), vec![c.info()]);
    let mut all = s.all_sent_copies().await.unwrap();
    all.sort_by(|x, y| (&x.user, &x.message_id).cmp(&(&y.user, &y.message_id)));
    assert_eq!(all, vec![a.info(), b.info(), c.info()]);
    assert_eq!(
        s.sent_copy("lena", "<a@example.test>").await.unwrap(),
        Some(a.clone())
    );
    assert_eq!(s.sent_copy("lena", "<z@example.test>").await.unwrap(), None);

    // A try is claimed against the last try read: of two processes that
    // read the same row, the second claim finds it changed and is refused.
    let seen = a.last_try_ms;
    assert!(s
        .claim_sent_copy_try("lena", "<a@example.test>", seen, (4, 1_800_000_009_000))
        .await
        .unwrap());
    assert!(
        !s.claim_sent_copy_try("lena", "<a@example.test>", seen, (4, 1_800_000_009_001))
            .await
            .unwrap(),
        "a try claimed twice from the same reading"
    );
    let tried = SentCopy {
        tries: 4,
        last_try_ms: 1_800_000_009_000,
        ..a.clone()
    };
    assert_eq!(s.sent_copies("lena").await.unwrap()[0], tried.info());
    // The try failed: its claimant notes why and when the next is due;
    // a note naming another claim is refused.
    let note = SentCopyNote {
        last_try_ms: 1_800_000_009_000,
        next_try_ms: 1_800_000_011_000,
        last_error: Some("IMAP server refused APPEND: [OVERQUOTA] Quota exceeded".into()),
    };
    assert!(!s
        .note_sent_copy_try("lena", "<a@example.test>", seen, note.clone())
        .await
        .unwrap());
    assert!(s
        .note_sent_copy_try("lena", "<a@example.test>", tried.last_try_ms, note.clone())
        .await
        .unwrap());
    let tried = SentCopy {
        next_try_ms: note.next_try_ms,
        last_error: note.last_error.clone(),
        ..tried
    };
    assert_eq!(s.sent_copies("lena").await.unwrap()[0], tried.info());
    assert_eq!(
        s.sent_copy("lena", "<a@example.test>").await.unwrap(),
        Some(tried.clone())
    );
    let err = s
        .note_sent_copy_try(
            "lena",
            "<a@example.test>",
            tried.last_try_ms,
            SentCopyNote {
                last_error: Some("x".repeat(opush_storage::MAX_SENT_ERROR_LEN + 1)),
                ..note.clone()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::InvalidInput(_)), "{err:?}");
    // Claimed against what is there now, the next try is (its error kept
    // until noted again; its next try no longer known).
    assert!(s
        .claim_sent_copy_try(
            "lena",
            "<a@example.test>",
            tried.last_try_ms,
            (5, 1_800_000_019_000)
        )
        .await
        .unwrap());
    let tried = SentCopy {
        tries: 5,
        last_try_ms: 1_800_000_019_000,
        next_try_ms: 0,
        ..tried
    };
    assert_eq!(s.sent_copies("lena").await.unwrap()[0], tried.info());

    // Put again: replaced, not doubled.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
    let replaced = SentCopy {
        bytes: big,
        ..b.clone()
    };
    s.put_sent_copy(replaced.clone()).await.unwrap();
    assert_eq!(
        s.sent_copies("lena").await.unwrap(),
        vec![tried.info(), replaced.info()]
    );
    assert_eq!(s.sent_copies("lena").await.unwrap()[1].size, 3_000_000);
    assert_eq!(
        s.sent_copy("lena", "<b@example.test>").await.unwrap(),
        Some(replaced)
    );

    s.delete_sent_copy("lena", "<b@example.test>")
        .await
        .unwrap();
    s.delete_sent_copy("lena", "<b@example.test>")
        .await
        .unwrap();
    assert_eq!(s.sent_copies("lena").await.unwrap(), vec![tried.info()]);
    assert_eq!(s.sent_copy("lena", "<b@example.test>").await.unwrap(), None);
    assert!(
        !s.claim_sent_copy_try("lena", "<b@example.test>", b.last_try_ms, (5, 1))
            .await
            .unwrap(),
        "a deleted copy is not tried"
    );
    assert_eq!(s.sent_copies("lena").await.unwrap().len(), 1);
    assert_eq!(s.sent_copies("lena2").await.unwrap(), vec![c.info()]);

    for (user, id) in [
        ("", "<x@y>"),
        ("lena", ""),
        ("lena", "<x\0y>"),
        ("a\0b", "<x@y>"),
    ] {
        let err = s.put_sent_copy(sent_copy(user, id, 0)).await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidInput(_)), "{err:?}");
    }
    for bad in [
        SentCopy {
            subject: "s".repeat(opush_storage::MAX_SENT_SUBJECT_LEN + 1),
            ..sent_copy("lena", "<t@y>", 0)
        },
        SentCopy {
            last_error: Some("a\0b".into()),
            ..sent_copy("lena", "<t@y>", 0)
        },
    ] {
        let err = s.put_sent_copy(bad).await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidInput(_)), "{err:?}");
    }
    let long = format!("<{}@y>", "x".repeat(1000));
    let err = s.delete_sent_copy("lena", &long).await.unwrap_err();
    assert!(matches!(err, StorageError::InvalidInput(_)), "{err:?}");
    t.cleanup().await;
}

/// A schema v2 store (the previous release's) still serves, `update`
/// advised; pending Sent copies are refused with `SchemaMismatch` until
/// the update adds their table, and the events stay as they were.
async fn a_v2_store_gains_sent_copies_on_update(backend: Backend) {
    let t = TestStore::fresh_with(backend, |_| {}).await;
    let s = &t.store;
    s.install_schema_version(2).await.unwrap();
    assert_eq!(
        s.schema_status().await.unwrap(),
        SchemaStatus::UpdateAdvised {
            current: 2,
            latest: LATEST_SCHEMA
        }
    );
    assert!(s.schema_status().await.unwrap().is_serviceable());
    let d = dev("mona", "dev1");
    assert_eq!(append_n(s, &d, 3).await, 3);
    let err = s
        .put_sent_copy(sent_copy("mona", "<m@x>", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
    let err = s.sent_copies("mona").await.unwrap_err();
    assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");

    let opts = MigrationOptions {
        batch_size: 10,
        page_size: 10,
        max_batches: None,
    };
    let report = s.update_schema(opts).await.unwrap();
    assert_eq!((report.from, report.to, report.rows), (2, LATEST_SCHEMA, 0));
    assert!(report.complete);
    match s.schema_status().await.unwrap() {
        SchemaStatus::Ok { version, .. } => assert_eq!(version, LATEST_SCHEMA),
        other => panic!("after update: {other:?}"),
    }
    s.put_sent_copy(sent_copy("mona", "<m@x>", 0))
        .await
        .unwrap();
    assert_eq!(s.sent_copies("mona").await.unwrap().len(), 1);
    let events = s.read_events(&d, 0).await.unwrap();
    assert_eq!(events.len(), 3);
    assert!(events.iter().all(|e| e.digest == Some(digest(&e.payload))));
    // A new process sees the same.
    let t = t.reopen().await;
    assert_eq!(t.store.sent_copies("mona").await.unwrap().len(), 1);
    t.cleanup().await;
}

/// A device lease: taken by one holder, refused to another while it
/// lives (a retried take by the holder succeeds), renewed only by its
/// holder, released only by its holder, and ended by its TTL.
async fn device_leases(backend: Backend) {
    let t = TestStore::fresh_with(backend, |_| {}).await;
    let s = &t.store;
    s.install_schema().await.unwrap();
    let (d, other) = (dev("nina", "dev1"), dev("nina", "dev2"));
    let long = Duration::from_secs(60);
    assert!(s.take_lease(&d, "p1:r1", long).await.unwrap(), "taken");
    assert!(
        s.take_lease(&d, "p1:r1", long).await.unwrap(),
        "a retried take by the holder"
    );
    assert!(
        !s.take_lease(&d, "p2:r9", long).await.unwrap(),
        "refused while held"
    );
    assert!(
        s.take_lease(&other, "p2:r9", long).await.unwrap(),
        "another device's lease is its own"
    );
    assert!(!s.renew_lease(&d, "p2:r9", long).await.unwrap());
    assert!(s.renew_lease(&d, "p1:r1", long).await.unwrap());
    assert!(
        !s.release_lease(&d, "p2:r9").await.unwrap(),
        "a non-holder's release is refused"
    );
    assert!(
        !s.take_lease(&d, "p3:r1", long).await.unwrap(),
        "still held after the refused release"
    );
    assert!(s.release_lease(&d, "p1:r1").await.unwrap(), "released");
    assert!(
        s.release_lease(&d, "p1:r1").await.unwrap(),
        "a retried release: nothing held any more"
    );
    assert!(!s.renew_lease(&d, "p1:r1", long).await.unwrap());
    assert!(s.take_lease(&d, "p3:r1", long).await.unwrap(), "free again");
    assert!(s.release_lease(&d, "p3:r1").await.unwrap());

    // A holder that never releases (crashed): its lease ends with its TTL
    // (Cassandra counts whole seconds).
    assert!(s
        .take_lease(&d, "p4:r1", Duration::from_secs(1))
        .await
        .unwrap());
    assert!(!s.take_lease(&d, "p5:r1", long).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    assert!(
        !s.renew_lease(&d, "p4:r1", long).await.unwrap(),
        "an expired lease is not renewed"
    );
    assert!(
        s.take_lease(&d, "p5:r1", long).await.unwrap(),
        "taken once the crashed holder's lease expired"
    );
    assert!(s.release_lease(&d, "p4:r1").await.is_ok_and(|ok| !ok));
    assert!(s.release_lease(&d, "p5:r1").await.unwrap());

    for bad in ["", "a\0b"] {
        let err = s.take_lease(&d, bad, long).await.unwrap_err();
        assert!(matches!(err, StorageError::InvalidInput(_)), "{err:?}");
    }
    t.cleanup().await;
}

/// A schema v3 store still serves; on Cassandra taking a device lease is
/// refused with `SchemaMismatch` (the server then serves without one)
/// until `update` adds the `device_leases` table. The embedded store's
/// leases are in memory, at any version.
async fn a_v3_store_gains_leases_on_update(backend: Backend) {
    let t = TestStore::fresh_with(backend, |_| {}).await;
    let s = &t.store;
    s.install_schema_version(LEASES_SCHEMA - 1).await.unwrap();
    assert_eq!(
        s.schema_status().await.unwrap(),
        SchemaStatus::UpdateAdvised {
            current: 3,
            latest: LATEST_SCHEMA
        }
    );
    let d = dev("olga", "dev1");
    assert_eq!(append_n(s, &d, 2).await, 2);
    let ttl = Duration::from_secs(60);
    match backend {
        Backend::Cassandra => {
            let err = s.take_lease(&d, "p1:r1", ttl).await.unwrap_err();
            assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
        }
        Backend::Embedded => {
            assert!(s.take_lease(&d, "p1:r1", ttl).await.unwrap());
            assert!(s.release_lease(&d, "p1:r1").await.unwrap());
        }
    }
    let opts = MigrationOptions {
        batch_size: 10,
        page_size: 10,
        max_batches: None,
    };
    let report = s.update_schema(opts).await.unwrap();
    assert_eq!((report.from, report.to, report.rows), (3, LATEST_SCHEMA, 0));
    assert!(s.take_lease(&d, "p1:r1", ttl).await.unwrap());
    assert!(!s.take_lease(&d, "p2:r1", ttl).await.unwrap());
    assert_eq!(s.read_events(&d, 0).await.unwrap().len(), 2);
    // Another process: on Cassandra it sees the lease; the embedded
    // store's leases were its process's memory only.
    let t = t.reopen().await;
    assert_eq!(
        t.store.take_lease(&d, "p2:r1", ttl).await.unwrap(),
        backend == Backend::Embedded
    );
    t.cleanup().await;
}

/// A schema v4 store (session 16's) still serves, `update` advised; the
/// sent-copy calls are refused with `SchemaMismatch` until the update to
/// v5. Copies kept before it (Cassandra: rows written as session 16 wrote
/// them, without the new columns) load after it, with their message's
/// size, no device, subject or error, and are tried, noted and deleted as
/// new ones. (The embedded store's v4 rows: `embedded::tests` in the
/// crate, which writes them in its redb file.)
async fn a_v4_store_gains_sent_copy_info_on_update(backend: Backend) {
    let t = TestStore::fresh_with(backend, |_| {}).await;
    let s = &t.store;
    s.install_schema_version(4).await.unwrap();
    assert_eq!(
        s.schema_status().await.unwrap(),
        SchemaStatus::UpdateAdvised {
            current: 4,
            latest: LATEST_SCHEMA
        }
    );
    let err = s
        .put_sent_copy(sent_copy("pia", "<new@x>", 0))
        .await
        .unwrap_err();
    assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
    let err = s.all_sent_copies().await.unwrap_err();
    assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
    let old = SentCopy {
        device_id: String::new(),
        subject: String::new(),
        ..sent_copy("pia", "<old@x>", 2)
    };
    if backend == Backend::Cassandra {
        let cfg = &t.config;
        let session = scylla::client::session_builder::SessionBuilder::new()
            .known_node(format!("{}:{}", cfg.seeds[0], cfg.port))
            .user(cfg.user.clone(), cfg.password.expose().to_owned())
            .build()
            .await
            .unwrap();
        session
            .query_unpaged(
                format!(
                    "INSERT INTO {}.sent_copies (user, message_id, created_ms, last_try_ms, tries, \
                     digest, bytes) VALUES (?, ?, ?, ?, ?, ?, ?) USING TTL 3600",
                    cfg.keyspace
                ),
                (
                    &old.user,
                    &old.message_id,
                    old.created_ms,
                    old.last_try_ms,
                    old.tries as i32,
                    digest(&old.bytes).to_vec(),
                    &old.bytes,
                ),
            )
            .await
            .unwrap();
    }
    let opts = MigrationOptions {
        batch_size: 10,
        page_size: 10,
        max_batches: None,
    };
    let report = s.update_schema(opts).await.unwrap();
    assert_eq!((report.from, report.to), (4, LATEST_SCHEMA));
    assert!(report.complete);
    s.put_sent_copy(sent_copy("pia", "<new@x>", 0))
        .await
        .unwrap();
    let listed = s.sent_copies("pia").await.unwrap();
    if backend == Backend::Cassandra {
        assert_eq!(report.rows, 1, "the old row's size written");
        assert_eq!(
            listed,
            vec![sent_copy("pia", "<new@x>", 0).info(), old.info()]
        );
        assert_eq!(
            s.sent_copy("pia", "<old@x>").await.unwrap(),
            Some(old.clone())
        );
        assert!(s
            .claim_sent_copy_try("pia", "<old@x>", old.last_try_ms, (3, 1_800_000_009_000))
            .await
            .unwrap());
        let note = SentCopyNote {
            last_try_ms: 1_800_000_009_000,
            next_try_ms: 1_800_000_012_000,
            last_error: Some("IMAP server unavailable: connection refused".into()),
        };
        assert!(s
            .note_sent_copy_try("pia", "<old@x>", 1_800_000_009_000, note.clone())
            .await
            .unwrap());
        let after = s.sent_copies("pia").await.unwrap();
        assert_eq!(after[1].last_error, note.last_error);
        assert_eq!(
            (after[1].tries, after[1].next_try_ms),
            (3, note.next_try_ms)
        );
        s.delete_sent_copy("pia", "<old@x>").await.unwrap();
    } else {
        assert_eq!(listed, vec![sent_copy("pia", "<new@x>", 0).info()]);
    }
    // A new process sees the same.
    let t = t.reopen().await;
    assert_eq!(
        t.store.sent_copies("pia").await.unwrap(),
        vec![sent_copy("pia", "<new@x>", 0).info()]
    );
    t.cleanup().await;
}
