//! `apply` is total: any sequence of events — including nonsense ones
//! (unknown collections, keys that were never issued, items that never
//! existed) — folds without panicking, and encoding round-trips every event.
//! Also: ServerIds past 65,535 in one collection, and the wire parsers
//! reject bad input with `None`.
#![allow(clippy::unwrap_used)]

use opush_engine::*;
use proptest::prelude::*;

fn id() -> impl Strategy<Value = BackendItemId> {
    (0u8..6).prop_map(|i| BackendItemId(format!("1/{i}")))
}

fn col() -> impl Strategy<Value = CollectionId> {
    (0u32..4).prop_map(CollectionId)
}

fn item() -> impl Strategy<Value = ObservedItem> {
    (id(), 0u64..4, 0u64..10).prop_map(|(id, v, r)| ObservedItem {
        id,
        version: ItemVersion(v),
        received_at: Timestamp(r * 86_400_000),
        digest: None,
    })
}

fn change() -> impl Strategy<Value = ServerChange> {
    (0u8..4, 0u32..8, id(), 0u64..4).prop_map(|(k, n, id, v)| match k {
        0 => ServerChange::Add {
            n,
            id,
            version: ItemVersion(v),
        },
        1 => ServerChange::Change {
            n,
            id,
            version: ItemVersion(v),
        },
        2 => ServerChange::Delete { n, id },
        _ => ServerChange::SoftDelete { n, id },
    })
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        (
            col(),
            prop::collection::vec(item(), 0..5),
            prop::collection::vec(id(), 0..3),
            any::<bool>(),
            0u64..3
        )
            .prop_map(|(collection, changed, vanished, full, validity)| {
                Event::BackendObserved {
                    req_id: 0,
                    collection,
                    at: Timestamp(5 * 86_400_000),
                    observation: Observation {
                        validity,
                        cursor: 0,
                        kind: if full {
                            ObservationKind::Full
                        } else {
                            ObservationKind::Delta
                        },
                        changed,
                        vanished,
                    },
                }
            }),
        (col(), 0u64..6, 0u8..9).prop_map(|(collection, k, f)| Event::SyncReset {
            collection,
            key: SyncKey(k),
            filter: FilterType::from_u8(f).unwrap(),
            at: Timestamp(5 * 86_400_000)
        }),
        (col(), 0u64..6).prop_map(|(collection, k)| Event::SyncKeyConfirmed {
            collection,
            key: SyncKey(k)
        }),
        (
            col(),
            0u64..6,
            prop::collection::vec(change(), 0..4),
            any::<bool>()
        )
            .prop_map(|(collection, k, changes, more)| {
                Event::SyncKeyIssued {
                    collection,
                    batch: Batch {
                        key: SyncKey(k),
                        changes,
                        replies: vec![],
                        more_available: more,
                    },
                }
            }),
        (col(), 0u64..6).prop_map(|(collection, k)| Event::SyncRetried {
            collection,
            key: SyncKey(k)
        }),
        (col(), 0u8..9).prop_map(|(collection, f)| Event::FilterChanged {
            collection,
            filter: FilterType::from_u8(f).unwrap(),
            at: Timestamp(9 * 86_400_000)
        }),
        (col(), 0u32..8, id(), item(), 0u8..4).prop_map(|(collection, n, id, item, k)| {
            Event::ClientChangeApplied {
                collection,
                n,
                id,
                change: match k {
                    0 => AppliedChange::Added {
                        client_id: ClientId("c".into()),
                        item,
                    },
                    1 => AppliedChange::Changed {
                        version: item.version,
                    },
                    2 => AppliedChange::Replaced { item },
                    _ => AppliedChange::Deleted,
                },
            }
        }),
        (col(), id()).prop_map(|(collection, id)| Event::ItemQuarantined { collection, id }),
        (col(), id(), col(), 0u32..8, item(), any::<bool>()).prop_map(
            |(src, src_id, dst, dst_n, item, stale)| {
                Event::ItemMovedByDevice {
                    src,
                    src_id,
                    dst,
                    dst_n,
                    item,
                    stale,
                }
            }
        ),
        (col(), 0u32..8, col(), 0u32..8).prop_map(|(sc, sn, dc, dn)| Event::MoveRemembered {
            src: ServerId {
                collection: sc,
                n: sn
            },
            dst: ServerId {
                collection: dc,
                n: dn
            },
        }),
        (col(), id()).prop_map(|(collection, id)| Event::DeviceCopyStale { collection, id }),
        (0u64..8, 0u32..8).prop_map(|(base, events)| Event::Displaced { base, events }),
        (0u32..3).prop_map(|n| Event::HierarchyObserved {
            folders: (0..n)
                .map(|i| BackendFolder {
                    id: BackendFolderId(format!("f{i}")),
                    name: format!("F{i}"),
                    parent: (i > 0).then(|| BackendFolderId(format!("f{}", i - 1))),
                    folder_type: FolderType::UserMail,
                })
                .collect()
        }),
        (0u64..4).prop_map(|k| Event::HierarchyReset { key: SyncKey(k) }),
        (0u64..4).prop_map(|k| Event::HierarchyKeyConfirmed { key: SyncKey(k) }),
        (0u64..4, col()).prop_map(|(k, id)| Event::FolderHierarchyChanged {
            key: SyncKey(k),
            changes: vec![FolderChange::Delete { id }]
        }),
        (0u64..4, col(), any::<bool>()).prop_map(|(k, id, del)| Event::FolderChangedByDevice {
            key: SyncKey(k),
            change: if del {
                FolderChange::Delete { id }
            } else {
                FolderChange::Update {
                    id,
                    parent: None,
                    name: "x".into(),
                    folder_type: FolderType::UserMail,
                }
            },
            folder: (!del).then(|| BackendFolder {
                id: BackendFolderId("x".into()),
                name: "x".into(),
                parent: None,
                folder_type: FolderType::UserMail
            }),
        }),
        any::<u32>().prop_map(|k| Event::PolicyKeyIssued {
            policy_key: PolicyKey(k)
        }),
        any::<u32>().prop_map(|k| Event::DeviceProvisioned {
            policy_key: PolicyKey(k)
        }),
        Just(Event::PolicyChanged),
        Just(Event::WipeRequested { at: Timestamp(1) }),
        Just(Event::WipeAcknowledged { at: Timestamp(2) }),
        (prop::collection::vec(col(), 0..3), any::<u32>())
            .prop_map(|(folders, heartbeat)| Event::PingArmed { folders, heartbeat }),
        (0u8..4).prop_map(|c| Event::MailSent {
            client_id: ClientId(format!("c{c}")),
            at: Timestamp(3)
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn any_event_sequence_folds(events in prop::collection::vec(event(), 0..40)) {
        let mut state = DeviceState::default();
        for e in &events {
            let back = decode_event(&encode_event(e).unwrap()).unwrap();
            prop_assert_eq!(&back, e);
            apply(&mut state, e);
        }
        // Decisions on whatever state results never panic either.
        let cfg = EngineConfig::default();
        for c in 0..4 {
            for k in 0..6 {
                let input = SyncInput {
                    request: SyncRequest {
                        collection: CollectionId(c),
                        sync_key: SyncKey(k),
                        window_size: Some(2),
                        filter: None,
                        conflict: None,
                        get_changes: true,
                        commands: vec![],
                    },
                    outcomes: vec![],
                };
                let _ = decide_sync(&state, &input, Timestamp(7 * 86_400_000), &cfg).unwrap();
            }
        }
        let snap = decode_snapshot(&encode_snapshot(&state).unwrap()).unwrap();
        prop_assert_eq!(snap, state);
    }
}

#[test]
fn more_than_65535_items_in_one_collection() {
    let mut s = DeviceState::default();
    apply(
        &mut s,
        &Event::HierarchyObserved {
            folders: vec![BackendFolder {
                id: BackendFolderId("INBOX".into()),
                name: "Inbox".into(),
                parent: None,
                folder_type: FolderType::Inbox,
            }],
        },
    );
    let col = CollectionId(1);
    let n_items = 70_000u64;
    let observation = Observation {
        validity: 1,
        cursor: 1,
        kind: ObservationKind::Full,
        changed: (0..n_items)
            .map(|i| ObservedItem {
                id: BackendItemId(format!("1/{i:06}")),
                version: ItemVersion(1),
                received_at: Timestamp(0),
                digest: None,
            })
            .collect(),
        vanished: vec![],
    };
    apply(
        &mut s,
        &Event::BackendObserved {
            req_id: 1,
            collection: col,
            at: Timestamp(0),
            observation,
        },
    );
    let cfg = EngineConfig::default();
    let mut key = SyncKey::ZERO;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..200 {
        let input = SyncInput {
            request: SyncRequest {
                collection: col,
                sync_key: key,
                window_size: Some(512),
                filter: None,
                conflict: None,
                get_changes: true,
                commands: vec![],
            },
            outcomes: vec![],
        };
        let d = decide_sync(&s, &input, Timestamp(0), &cfg).unwrap();
        for ch in &d.response.changes {
            assert!(seen.insert(ch.n()), "ServerId reused");
        }
        fold(&mut s, &d.events);
        let next = d.response.sync_key.unwrap();
        if next == key {
            break;
        }
        key = next;
    }
    assert_eq!(seen.len() as u64, n_items);
    assert_eq!(seen.last().copied(), Some(70_000));
    let sid = ServerId {
        collection: col,
        n: 70_000,
    };
    assert_eq!(ServerId::parse(&sid.to_string()), Some(sid));
}

#[test]
fn wire_parsers_reject_bad_input() {
    assert_eq!(SyncKey::parse("0"), Some(SyncKey::ZERO));
    assert_eq!(SyncKey::parse("17"), Some(SyncKey(17)));
    for bad in ["", "-1", "1a", "{guid}1", "99999999999999999999999"] {
        assert_eq!(SyncKey::parse(bad), None, "{bad}");
    }
    assert_eq!(
        ServerId::parse("5:12"),
        Some(ServerId {
            collection: CollectionId(5),
            n: 12
        })
    );
    for bad in ["5", "5:", ":12", "5:12:1", "a:1", "5:99999999999"] {
        assert_eq!(ServerId::parse(bad), None, "{bad}");
    }
    assert_eq!(FilterType::from_u8(9), None);
    assert_eq!(FolderType::from_code(0), None);
    assert_eq!(FolderType::from_code(12).map(FolderType::code), Some(12));
}
