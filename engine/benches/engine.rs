//! Criterion benches of the engine's hot paths on a 100,000-item collection:
//! a no-change Sync decide, the per-page cost of an initial sync in windows
//! of 100, the fold and encoding of a first full listing (SyncKey 0), and
//! snapshot encode/decode. Also prints the state size.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use opush_engine::*;

const N: u64 = 100_000;
const COL: CollectionId = CollectionId(1);

fn hierarchy() -> Event {
    Event::HierarchyObserved {
        folders: vec![BackendFolder {
            id: BackendFolderId("INBOX".into()),
            name: "Inbox".into(),
            parent: None,
            folder_type: FolderType::Inbox,
        }],
    }
}

fn observation() -> Observation {
    Observation {
        validity: 1,
        cursor: N,
        kind: ObservationKind::Full,
        changed: (0..N)
            .map(|i| ObservedItem {
                id: BackendItemId(format!("1700000000/{i}")),
                version: ItemVersion(i),
                received_at: Timestamp(1_000_000 + i),
                digest: None,
            })
            .collect(),
        vanished: vec![],
    }
}

fn request(key: SyncKey) -> SyncInput {
    SyncInput {
        request: SyncRequest {
            collection: COL,
            sync_key: key,
            window_size: Some(100),
            filter: None,
            conflict: None,
            get_changes: true,
            commands: vec![],
        },
        outcomes: vec![],
    }
}

/// A state with `N` items of which the device has none yet, reset.
fn fresh() -> DeviceState {
    let mut s = DeviceState::default();
    apply(&mut s, &hierarchy());
    apply(
        &mut s,
        &Event::BackendObserved {
            req_id: 1,
            collection: COL,
            at: Timestamp(2_000_000),
            observation: observation(),
        },
    );
    let d = decide_sync(
        &s,
        &request(SyncKey::ZERO),
        Timestamp(2_000_000),
        &EngineConfig::default(),
    )
    .unwrap();
    fold(&mut s, &d.events);
    s
}

/// Syncs until nothing is due (windows of 512), returns the state.
fn synced() -> DeviceState {
    let mut s = fresh();
    let cfg = EngineConfig::default();
    let mut key = s.collections[&COL].current;
    loop {
        let mut input = request(key);
        input.request.window_size = Some(512);
        let d = decide_sync(&s, &input, Timestamp(2_000_000), &cfg).unwrap();
        fold(&mut s, &d.events);
        let k = d.response.sync_key.unwrap();
        if k == key {
            return s;
        }
        key = k;
    }
}

// Measuring the state's heap needs a counting allocator; this is the only
// unsafe code, in a bench binary, delegating to the system allocator.
#[allow(unsafe_code)]
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::sync::atomic::{AtomicUsize, Ordering};

    pub static LIVE: AtomicUsize = AtomicUsize::new(0);

    pub struct Counting;

    // SAFETY: every call is forwarded unchanged to `System`.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            LIVE.fetch_add(layout.size(), Ordering::Relaxed);
            unsafe { System.alloc(layout) }
        }
        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    #[global_allocator]
    static GLOBAL: Counting = Counting;

    pub fn live() -> usize {
        LIVE.load(Ordering::Relaxed)
    }
}

fn benches(c: &mut Criterion) {
    let cfg = EngineConfig::default();
    let now = Timestamp(2_000_000);

    let state = synced();
    let key = state.collections[&COL].current;
    let empty_delta = Event::BackendObserved {
        req_id: 2,
        collection: COL,
        at: now,
        observation: Observation {
            validity: 1,
            cursor: N,
            kind: ObservationKind::Delta,
            changed: vec![],
            vanished: vec![],
        },
    };
    c.bench_function("sync_decide_no_change_100k", |b| {
        b.iter(|| {
            let d = decide_sync(black_box(&state), black_box(&request(key)), now, &cfg).unwrap();
            assert!(d.response.changes.is_empty());
            d
        })
    });
    c.bench_function("sync_apply_empty_delta_plus_decide_100k", |b| {
        let mut s = state.clone();
        b.iter(|| {
            apply(&mut s, black_box(&empty_delta));
            decide_sync(&s, &request(key), now, &cfg).unwrap()
        })
    });

    // Initial sync: the decide of one page at the start and near the end of
    // the collection (the cost must not grow), then a whole initial sync of
    // 100k items in windows of 100 (decide + fold of every page).
    let start = fresh();
    for (name, pages_done) in [
        ("initial_sync_page_decide_early_100k", 1usize),
        ("initial_sync_page_decide_late_100k", 900),
    ] {
        let mut s = start.clone();
        let mut key = s.collections[&COL].current;
        for _ in 0..pages_done {
            let d = decide_sync(&s, &request(key), now, &cfg).unwrap();
            fold(&mut s, &d.events);
            key = d.response.sync_key.unwrap();
        }
        // The device presents the key of the pending page: confirm + next page.
        c.bench_function(name, |b| {
            b.iter(|| {
                let d = decide_sync(black_box(&s), &request(key), now, &cfg).unwrap();
                assert_eq!(d.response.changes.len(), 100);
                d
            })
        });
    }
    let mut group = c.benchmark_group("initial_sync_full");
    group.sample_size(10);
    group.bench_function("initial_sync_100k_in_windows_of_100", |b| {
        b.iter_batched(
            || start.clone(),
            |mut s| {
                let mut key = s.collections[&COL].current;
                let mut pages = 0;
                loop {
                    let d = decide_sync(&s, &request(key), now, &cfg).unwrap();
                    fold(&mut s, &d.events);
                    let k = d.response.sync_key.unwrap();
                    if k == key {
                        break;
                    }
                    key = k;
                    pages += 1;
                }
                assert_eq!(pages, 1000);
                s
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.finish();

    // SyncKey 0 of a large folder: fold the first full listing, decide the
    // reset and fold it; and encode that listing for the log.
    let listing = Event::BackendObserved {
        req_id: 1,
        collection: COL,
        at: now,
        observation: observation(),
    };
    let mut group = c.benchmark_group("first_listing");
    group.sample_size(10);
    group.bench_function("fold_listing_and_reset_100k", |b| {
        let mut empty = DeviceState::default();
        apply(&mut empty, &hierarchy());
        b.iter_batched(
            || empty.clone(),
            |mut s| {
                apply(&mut s, &listing);
                let d = decide_sync(&s, &request(SyncKey::ZERO), now, &cfg).unwrap();
                fold(&mut s, &d.events);
                s
            },
            criterion::BatchSize::PerIteration,
        )
    });
    group.bench_function("encode_listing_event_100k", |b| {
        b.iter(|| encode_event(black_box(&listing)).unwrap())
    });
    group.finish();

    let before = counting::live();
    let copy = state.clone();
    let bytes_used = counting::live().saturating_sub(before);
    eprintln!(
        "state memory for {N} synced items: {} KiB ({} bytes/item, heap bytes requested)",
        bytes_used / 1024,
        bytes_used as u64 / N
    );
    drop(copy);
    let before = counting::live();
    let copy = start.clone();
    let bytes_used = counting::live().saturating_sub(before);
    eprintln!(
        "state memory for {N} items not yet sent: {} KiB",
        bytes_used / 1024
    );
    drop(copy);

    let bytes = encode_snapshot(&state).unwrap();
    eprintln!(
        "snapshot of {N} synced items: {} bytes ({} bytes/item)",
        bytes.len(),
        bytes.len() as u64 / N
    );
    c.bench_function("snapshot_check_100k", |b| {
        b.iter(|| check_snapshot(black_box(&bytes)).unwrap())
    });
    c.bench_function("snapshot_decode_100k", |b| {
        b.iter(|| decode_snapshot(black_box(&bytes)).unwrap())
    });
    c.bench_function("snapshot_encode_100k", |b| {
        b.iter(|| encode_snapshot(black_box(&state)).unwrap())
    });
}

criterion_group! {
    name = engine;
    config = Criterion::default().sample_size(20);
    targets = benches
}
criterion_main!(engine);
