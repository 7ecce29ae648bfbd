//! Stored events outlive the binary that wrote them: events encoded by an
//! older format version must still decode to the same values. The golden
//! file `testdata/codec/v1_events.hex` holds one event of every variant as
//! format version 1 wrote it (one hex line each); `UPDATE_EXPECT=1` rewrites
//! it, which is only right when version 1 itself is being (re)defined.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use opush_engine::*;
use std::path::PathBuf;

fn sample_item(uid: u32) -> ObservedItem {
    ObservedItem {
        id: BackendItemId(format!("7/{uid}")),
        version: ItemVersion(u64::from(uid) * 3),
        received_at: Timestamp(1_700_000_000_000 + u64::from(uid)),
        digest: (uid % 2 == 0).then(|| Digest::of(&uid.to_le_bytes())),
    }
}

/// One event of every variant that format version 1 knows.
fn v1_events() -> Vec<Event> {
    let c = CollectionId(4);
    vec![
        Event::RequestReceived {
            req_id: 11,
            at: Timestamp(1_700_000_000_001),
            command: Command::Sync,
            protocol_version: ProtocolVersion::V14_1,
            request: Digest::of(b"request"),
        },
        Event::BackendObserved {
            req_id: 11,
            collection: c,
            at: Timestamp(1_700_000_000_002),
            observation: Observation {
                validity: 7,
                cursor: 99,
                kind: ObservationKind::Full,
                changed: vec![sample_item(1), sample_item(2)],
                vanished: vec![BackendItemId("7/3".into())],
            },
        },
        Event::SyncReset {
            collection: c,
            key: SyncKey(1),
            filter: FilterType::OneWeek,
            at: Timestamp(5),
        },
        Event::SyncKeyConfirmed {
            collection: c,
            key: SyncKey(1),
        },
        Event::SyncKeyIssued {
            collection: c,
            batch: Batch {
                key: SyncKey(2),
                changes: vec![
                    ServerChange::Add {
                        n: 1,
                        id: BackendItemId("7/1".into()),
                        version: ItemVersion(3),
                    },
                    ServerChange::Change {
                        n: 2,
                        id: BackendItemId("7/2".into()),
                        version: ItemVersion(6),
                    },
                    ServerChange::Delete {
                        n: 3,
                        id: BackendItemId("7/3".into()),
                    },
                    ServerChange::SoftDelete {
                        n: 4,
                        id: BackendItemId("7/4".into()),
                    },
                ],
                replies: vec![ClientReply {
                    kind: ReplyKind::Add,
                    client_id: Some(ClientId("c1".into())),
                    server_id: Some(ServerId {
                        collection: c,
                        n: 5,
                    }),
                    status: 1,
                    backend: None,
                }],
                more_available: true,
            },
        },
        Event::SyncRetried {
            collection: c,
            key: SyncKey(1),
        },
        Event::FilterChanged {
            collection: c,
            filter: FilterType::All,
            at: Timestamp(6),
        },
        Event::ClientChangeApplied {
            collection: c,
            n: 5,
            id: BackendItemId("7/5".into()),
            change: AppliedChange::Added {
                client_id: ClientId("c1".into()),
                item: sample_item(5),
            },
        },
        Event::ItemQuarantined {
            collection: c,
            id: BackendItemId("7/9".into()),
        },
        Event::ItemMovedByDevice {
            src: c,
            src_id: BackendItemId("7/1".into()),
            dst: CollectionId(5),
            dst_n: 1,
            item: sample_item(8),
            stale: true,
        },
        Event::HierarchyObserved {
            folders: vec![BackendFolder {
                id: BackendFolderId("INBOX".into()),
                name: "Inbox".into(),
                parent: None,
                folder_type: FolderType::Inbox,
            }],
        },
        Event::HierarchyReset { key: SyncKey(1) },
        Event::HierarchyKeyConfirmed { key: SyncKey(1) },
        Event::FolderHierarchyChanged {
            key: SyncKey(2),
            changes: vec![
                FolderChange::Add {
                    id: c,
                    parent: None,
                    name: "Inbox".into(),
                    folder_type: FolderType::Inbox,
                },
                FolderChange::Delete {
                    id: CollectionId(9),
                },
            ],
        },
        Event::FolderChangedByDevice {
            key: SyncKey(3),
            change: FolderChange::Update {
                id: c,
                parent: Some(CollectionId(1)),
                name: "Renamed".into(),
                folder_type: FolderType::UserMail,
            },
            folder: Some(BackendFolder {
                id: BackendFolderId("Parent/Renamed".into()),
                name: "Renamed".into(),
                parent: Some(BackendFolderId("Parent".into())),
                folder_type: FolderType::UserMail,
            }),
        },
        Event::PolicyKeyIssued {
            policy_key: PolicyKey(17),
        },
        Event::DeviceProvisioned {
            policy_key: PolicyKey(18),
        },
        Event::PolicyChanged,
        Event::WipeRequested { at: Timestamp(7) },
        Event::WipeAcknowledged { at: Timestamp(8) },
        Event::PingArmed {
            folders: vec![c, CollectionId(5)],
            heartbeat: 480,
        },
        Event::ResponseSent {
            req_id: 11,
            status: 200,
            digest: Digest::of(b"response"),
        },
    ]
}

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/codec/v1_events.hex")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn version_1_events_still_decode() {
    let events = v1_events();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        let text: String = events
            .iter()
            .map(|e| {
                let bytes = encode_event(e).unwrap();
                assert_eq!(
                    &bytes[4..8],
                    &1u32.to_le_bytes(),
                    "golden must be version 1"
                );
                hex(&bytes) + "\n"
            })
            .collect();
        std::fs::write(golden(), text).unwrap();
    }
    let text = std::fs::read_to_string(golden()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), events.len(), "one golden line per v1 variant");
    for (line, expected) in lines.iter().zip(&events) {
        let bytes = unhex(line);
        assert_eq!(&bytes[4..8], &1u32.to_le_bytes());
        assert_eq!(&decode_event(&bytes).unwrap(), expected);
    }
}

/// A state with every per-collection map filled: items on both sides and
/// on the server only, ServerId numbers, a pending batch, a soft-delete
/// index, content digests, a device-created item, a quarantined item.
fn snapshot_state() -> DeviceState {
    let c = CollectionId(1);
    let now = Timestamp(1_700_000_100_000);
    let mut s = DeviceState::default();
    fold(
        &mut s,
        &[
            Event::HierarchyObserved {
                folders: vec![BackendFolder {
                    id: BackendFolderId("INBOX".into()),
                    name: "Inbox".into(),
                    parent: None,
                    folder_type: FolderType::Inbox,
                }],
            },
            Event::BackendObserved {
                req_id: 1,
                collection: c,
                at: now,
                observation: Observation {
                    validity: 7,
                    cursor: 40,
                    kind: ObservationKind::Full,
                    // Numeric and string order differ from 10 on.
                    changed: (1..=25).map(sample_item).collect(),
                    vanished: vec![],
                },
            },
        ],
    );
    // The golden was written by an engine that paged in id order.
    let cfg = EngineConfig {
        page_order: PageOrder::ById,
        ..EngineConfig::default()
    };
    let mut key = SyncKey::ZERO;
    for _ in 0..3 {
        let input = SyncInput {
            request: SyncRequest {
                collection: c,
                sync_key: key,
                window_size: Some(7),
                filter: None,
                conflict: None,
                get_changes: true,
                commands: vec![],
            },
            outcomes: vec![],
        };
        let d = decide_sync(&s, &input, now, &cfg).unwrap();
        fold(&mut s, &d.events);
        key = d.response.sync_key.unwrap();
    }
    fold(
        &mut s,
        &[
            Event::ClientChangeApplied {
                collection: c,
                n: 99,
                id: BackendItemId("7/500".into()),
                change: AppliedChange::Added {
                    client_id: ClientId("client-1".into()),
                    item: sample_item(500),
                },
            },
            Event::ItemQuarantined {
                collection: c,
                id: BackendItemId("7/24".into()),
            },
        ],
    );
    s
}

fn snapshot_golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/codec/snapshot.hex")
}

/// Snapshots outlive the binary that wrote them too: one written by the
/// layout in force since format version 2 (`sent` included) decodes to
/// the same state, and today's encoder still writes exactly those bytes
/// (the in-memory maps may change; the archived layout may not without a
/// version bump and a reader of the old form). `UPDATE_SNAPSHOT_EXPECT=1`
/// rewrites the golden file: only right when a new layout is introduced.
#[test]
fn snapshots_keep_their_layout() {
    let state = snapshot_state();
    let c = &state.collections[&CollectionId(1)];
    assert!(c.pending.is_some() && !c.on_device.is_empty() && !c.dirty.is_empty());
    assert!(!c.digests.is_empty() && !c.client_ids.is_empty() && !c.quarantined.is_empty());
    if std::env::var_os("UPDATE_SNAPSHOT_EXPECT").is_some() {
        let bytes = encode_snapshot(&state).unwrap();
        std::fs::write(snapshot_golden(), hex(&bytes) + "\n").unwrap();
    }
    let golden = unhex(std::fs::read_to_string(snapshot_golden()).unwrap().trim());
    assert_eq!(decode_snapshot(&golden).unwrap(), state);
    // The header carries the format version (5 in the golden): a bump
    // that leaves the snapshot's layout alone, as 6 did, changes only it.
    assert_eq!(&golden[4..8], &5u32.to_le_bytes());
    let now = encode_snapshot(&state).unwrap();
    assert_eq!(&now[4..8], &FORMAT_VERSION.to_le_bytes());
    assert!(now[8..] == golden[8..], "the snapshot layout changed");
}
