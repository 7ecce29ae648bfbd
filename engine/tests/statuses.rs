//! One test per status the engine can produce, named after the spec
//! section, plus "a failed step changes nothing" checks.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use opush_engine::*;

const NOW: u64 = 1_000 * 24 * HOUR;

fn world() -> (Backend, Pair) {
    let backend = Backend::new();
    let mut pair = Pair::new(EngineConfig::default());
    pair.folder_sync(&backend);
    (backend, pair)
}

/// One INBOX message, INBOX and Archive each synced `syncs` times: the
/// world, and the ServerId under which the device holds the message.
fn one_message_synced(syncs: usize) -> (Backend, Pair, ServerId) {
    let (mut backend, mut pair) = world();
    backend.folders.get_mut(&INBOX).unwrap().add(NOW, 1);
    for col in [INBOX, ARCHIVE] {
        for _ in 0..syncs {
            pair.sync(&mut backend, col, 10, NOW, false);
        }
    }
    let sid = *pair.device.items.keys().next().unwrap();
    (backend, pair, sid)
}

fn sync_req(col: CollectionId, key: SyncKey, commands: Vec<ClientCommand>) -> SyncInput {
    SyncInput {
        request: SyncRequest {
            collection: col,
            sync_key: key,
            window_size: Some(10),
            filter: None,
            conflict: None,
            get_changes: true,
            commands,
        },
        outcomes: vec![],
    }
}

// [MS-ASCMD] 2.2.3.177.17 Sync Status 3: unknown SyncKey.
#[test]
fn sync_status_3_unknown_key() {
    let (mut backend, mut pair) = world();
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let before = pair.server.state.clone();
    let d = decide_sync(
        &pair.server.state,
        &sync_req(INBOX, SyncKey(999), vec![]),
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    assert_eq!(d.response.status, SyncStatus::InvalidSyncKey);
    assert_eq!(d.response.status.code(), 3);
    assert!(d.events.is_empty(), "a failed step changes nothing");
    assert_eq!(pair.server.state, before);
}

// [MS-ASCMD] 2.2.3.177.17 Sync Status 3: a key from before a reset is expired.
#[test]
fn sync_status_3_key_from_before_reset() {
    let (mut backend, mut pair) = world();
    backend.folders.get_mut(&INBOX).unwrap().add(NOW, 1);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let old = pair.device.keys[&INBOX];
    pair.device.keys.insert(INBOX, SyncKey::ZERO);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let d = decide_sync(
        &pair.server.state,
        &sync_req(INBOX, old, vec![]),
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    assert_eq!(d.response.status.code(), 3);
}

// [MS-ASCMD] Sync Status 12: CollectionId not in the hierarchy.
#[test]
fn sync_status_12_unknown_collection() {
    let (_, pair) = world();
    let d = decide_sync(
        &pair.server.state,
        &sync_req(CollectionId(77), SyncKey::ZERO, vec![]),
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    assert_eq!(d.response.status.code(), 12);
    assert!(d.events.is_empty());
}

// [MS-ASCMD] Sync Status 8 on Change/Delete/Fetch of an unknown ServerId.
#[test]
fn sync_status_8_object_not_found() {
    let (mut backend, mut pair) = world();
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let key = pair.device.keys[&INBOX];
    let sid = ServerId {
        collection: INBOX,
        n: 42,
    };
    let input = sync_req(
        INBOX,
        key,
        vec![
            ClientCommand::Change {
                server_id: sid,
                digest: Digest::of(b"x"),
            },
            ClientCommand::Delete { server_id: sid },
            ClientCommand::Fetch { server_id: sid },
        ],
    );
    assert!(plan_sync(&pair.server.state, &input.request).is_empty());
    let d = decide_sync(
        &pair.server.state,
        &input,
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    let statuses: Vec<u8> = d.response.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![8, 8, 8]);
}

// Sync Status 5 on the sized Fetches past the bytes budget
// (`ClientCommand::FetchSized`): in request order, the first found one is
// answered whatever its size, the next ones while the total fits; the
// others carry no content, the device asks them again.
#[test]
fn sync_status_5_fetches_past_the_bytes_budget() {
    let (mut backend, mut pair) = world();
    for _ in 0..5 {
        backend.folders.get_mut(&INBOX).unwrap().add(NOW, 1);
    }
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let key = pair.device.keys[&INBOX];
    let mut sids: Vec<ServerId> = pair.device.items.keys().copied().collect();
    sids.sort_by_key(|s| s.n);
    let missing = ServerId {
        collection: INBOX,
        n: 4242,
    };
    let sized = |server_id: ServerId, bytes: u32| ClientCommand::FetchSized { server_id, bytes };
    let input = sync_req(
        INBOX,
        key,
        vec![
            sized(missing, 10),
            sized(sids[0], 700),
            sized(sids[1], 200),
            sized(sids[2], 200),
            sized(sids[3], 50),
            ClientCommand::Fetch { server_id: sids[4] },
        ],
    );
    let config = EngineConfig {
        max_window_bytes: 1_000,
        ..EngineConfig::default()
    };
    assert!(plan_sync(&pair.server.state, &input.request).is_empty());
    let d = decide_sync(&pair.server.state, &input, Timestamp(NOW), &config).unwrap();
    let statuses: Vec<u8> = d.response.replies.iter().map(|r| r.status).collect();
    // 700 + 200 fit, 200 more would not, 50 still does; an unsized Fetch
    // (recorded before format version 8) is always answered.
    assert_eq!(statuses, vec![8, 1, 1, FETCH_DEFERRED, 1, 1]);
    let with_content: Vec<bool> = d
        .response
        .replies
        .iter()
        .map(|r| r.backend.is_some())
        .collect();
    assert_eq!(with_content, vec![false, true, true, false, true, true]);
    // The first one is answered however big it is; no budget, all are.
    let big = sync_req(
        INBOX,
        key,
        vec![sized(sids[0], u32::MAX), sized(sids[1], 1)],
    );
    let d = decide_sync(&pair.server.state, &big, Timestamp(NOW), &config).unwrap();
    let statuses: Vec<u8> = d.response.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![1, FETCH_DEFERRED]);
    let unbounded = EngineConfig {
        max_window_bytes: 0,
        ..EngineConfig::default()
    };
    let d = decide_sync(&pair.server.state, &big, Timestamp(NOW), &unbounded).unwrap();
    let statuses: Vec<u8> = d.response.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![1, 1]);
}

// [MS-ASCMD] Sync Status 7: the server object replaces the client's (Conflict 1, default).
#[test]
fn sync_status_7_conflict_server_wins() {
    let (mut backend, mut pair) = world();
    let uid = backend.folders.get_mut(&INBOX).unwrap().add(NOW, 1);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let sid = *pair.device.items.keys().next().unwrap();
    backend.folders.get_mut(&INBOX).unwrap().change(uid, 2);
    pair.server.append(&[Event::BackendObserved {
        req_id: 9,
        collection: INBOX,
        at: Timestamp(NOW),
        observation: backend.folders[&INBOX].observation(),
    }]);
    let key = pair.device.keys[&INBOX];
    let input = sync_req(
        INBOX,
        key,
        vec![ClientCommand::Change {
            server_id: sid,
            digest: Digest::of(b"mine"),
        }],
    );
    assert!(
        plan_sync(&pair.server.state, &input.request).is_empty(),
        "no backend write when the server wins"
    );
    let d = decide_sync(
        &pair.server.state,
        &input,
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    assert_eq!(d.response.replies[0].status, 7);
    assert!(
        matches!(d.response.changes.as_slice(), [ServerChange::Change { n, .. }] if *n == sid.n)
    );
    // Conflict 0: the client's change is applied.
    let mut input = input;
    input.request.conflict = Some(Conflict::ClientWins);
    assert_eq!(plan_sync(&pair.server.state, &input.request).len(), 1);
}

// [MS-ASCMD] Sync: a retried request gets the identical answer and no new effects.
#[test]
fn sync_retry_is_identical_and_idempotent() {
    let (mut backend, mut pair) = world();
    for i in 0..5 {
        backend.folders.get_mut(&INBOX).unwrap().add(NOW, i);
    }
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.device.local_add(INBOX, 99);
    let lost = pair.sync(&mut backend, INBOX, 3, NOW, true);
    let n_items = backend.folders[&INBOX].items.len();
    let again = pair.sync(&mut backend, INBOX, 3, NOW, false);
    assert_eq!(lost.response, again.response);
    assert_eq!(
        backend.folders[&INBOX].items.len(),
        n_items,
        "the Add was not performed twice"
    );
}

// Broken item: repeated retries shrink the window, then quarantine the item.
#[test]
fn sync_broken_item_is_quarantined() {
    let (mut backend, mut pair) = world();
    for i in 0..4 {
        backend.folders.get_mut(&INBOX).unwrap().add(NOW, i);
    }
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let mut sizes = Vec::new();
    let mut quarantined = Vec::new();
    for _ in 0..12 {
        let r = pair.sync(&mut backend, INBOX, 10, NOW, true);
        sizes.push(r.response.changes.len());
        quarantined.extend(r.response.quarantined.clone());
    }
    assert_eq!(&sizes[..3], &[4, 4, 4], "identical replays first");
    assert!(
        sizes.contains(&2) && sizes.contains(&1),
        "then a shrinking window: {sizes:?}"
    );
    assert_eq!(quarantined.len(), 1, "one item quarantined: {sizes:?}");
    pair.settle(&mut backend, INBOX, NOW);
    assert_eq!(pair.device.view(INBOX).len(), 3, "the others still arrive");
}

// [MS-ASCMD] 2.2.3.177.5 FolderSync Status 9.
#[test]
fn folder_sync_status_9() {
    let (_, pair) = world();
    let d = decide_folder_sync(&pair.server.state, SyncKey(12345));
    assert_eq!(d.response.status, 9);
    assert!(d.events.is_empty());
}

// [MS-ASCMD] FolderCreate 2 (exists), 3 (special), 5 (parent not found), 9, 10; FolderDelete 3, 4.
#[test]
fn folder_op_statuses() {
    let (_, pair) = world();
    let s = &pair.server.state;
    let key = pair.device.hierarchy_key;
    let create = |parent, name: &str, ft| FolderOp::Create {
        sync_key: key,
        parent,
        name: name.into(),
        folder_type: ft,
    };
    let status = |op: &FolderOp| plan_folder_op(s, op).err().map(|r| r.status);
    assert_eq!(
        status(&create(None, "Archive", FolderType::UserMail)),
        Some(2)
    );
    assert_eq!(status(&create(None, "X", FolderType::Inbox)), Some(3));
    assert_eq!(
        status(&create(Some(CollectionId(99)), "X", FolderType::UserMail)),
        Some(5)
    );
    assert_eq!(status(&create(None, "", FolderType::UserMail)), Some(10));
    assert_eq!(
        status(&FolderOp::Create {
            sync_key: SyncKey(999),
            parent: None,
            name: "X".into(),
            folder_type: FolderType::UserMail
        }),
        Some(9)
    );
    assert_eq!(
        status(&FolderOp::Delete {
            sync_key: key,
            id: INBOX
        }),
        Some(3)
    );
    assert_eq!(
        status(&FolderOp::Delete {
            sync_key: key,
            id: CollectionId(99)
        }),
        Some(4)
    );
    let ok = create(None, "New", FolderType::UserMail);
    assert!(plan_folder_op(s, &ok).is_ok());
    let folder = BackendFolder {
        id: BackendFolderId("New".into()),
        name: "New".into(),
        parent: None,
        folder_type: FolderType::UserMail,
    };
    let d = decide_folder_op(s, &ok, &FolderOutcome::Done(Some(folder)));
    assert_eq!(d.response.status, 1);
    assert_eq!(d.response.server_id, Some(CollectionId(4)));
    assert_eq!(
        decide_folder_op(s, &ok, &FolderOutcome::Failed)
            .response
            .status,
        6
    );
}

// [MS-ASPROV] / [MS-ASCMD] 2.2.2: 449 up to 12.1, 142/143/144/140 from 14.0.
#[test]
fn provisioning_statuses() {
    let cfg = EngineConfig::default();
    let mut s = DeviceState::default();
    let check = |s: &DeviceState, k: Option<u32>, v| {
        check_policy(s, Command::Sync, k.map(PolicyKey), v, &cfg)
    };
    assert_eq!(
        check(&s, None, ProtocolVersion::V12_1),
        PolicyCheck::Http449
    );
    assert_eq!(
        check(&s, None, ProtocolVersion::V14_1),
        PolicyCheck::Status(142)
    );
    assert_eq!(
        check_policy(&s, Command::Ping, None, ProtocolVersion::V12_1, &cfg),
        PolicyCheck::Http449,
        "an unprovisioned device's Ping is refused"
    );
    let req = ProvisionRequest {
        policy_key: None,
        policy_status: None,
        remote_wipe_status: None,
    };
    let d = decide_provision(&s, &req, PolicyKey(111), Timestamp(NOW), &cfg);
    assert_eq!(d.response.policy_key, Some(PolicyKey(111)));
    fold(&mut s, &d.events);
    assert_eq!(
        check(&s, Some(111), ProtocolVersion::V14_1),
        PolicyCheck::Status(142),
        "not acknowledged yet"
    );
    let wrong = ProvisionRequest {
        policy_key: Some(PolicyKey(5)),
        policy_status: Some(1),
        remote_wipe_status: None,
    };
    assert_eq!(
        decide_provision(&s, &wrong, PolicyKey(222), Timestamp(NOW), &cfg)
            .response
            .policy_status,
        Some(5)
    );
    let ack = ProvisionRequest {
        policy_key: Some(PolicyKey(111)),
        policy_status: Some(1),
        remote_wipe_status: None,
    };
    let d = decide_provision(&s, &ack, PolicyKey(222), Timestamp(NOW), &cfg);
    fold(&mut s, &d.events);
    assert_eq!(s.policy, PolicyState::Acknowledged(PolicyKey(222)));
    assert_eq!(
        check(&s, Some(222), ProtocolVersion::V14_1),
        PolicyCheck::Allowed
    );
    // A provisioned device's Ping without a key is served (as Exchange
    // does); any other command without a key, or a Ping with a wrong one, is not.
    let ping = |k: Option<u32>| {
        check_policy(
            &s,
            Command::Ping,
            k.map(PolicyKey),
            ProtocolVersion::V12_1,
            &cfg,
        )
    };
    assert_eq!(ping(None), PolicyCheck::Allowed);
    assert_eq!(ping(Some(7)), PolicyCheck::Http449);
    assert_eq!(
        check(&s, None, ProtocolVersion::V12_1),
        PolicyCheck::Http449
    );
    assert_eq!(
        check(&s, Some(7), ProtocolVersion::V14_1),
        PolicyCheck::Status(144)
    );
    // A provisioned device may omit its key on Ping (Exchange answers 200),
    // on no other command, and not with a wrong key.
    let ping = |s: &DeviceState, k: Option<u32>, v| {
        check_policy(s, Command::Ping, k.map(PolicyKey), v, &cfg)
    };
    assert_eq!(ping(&s, None, ProtocolVersion::V12_1), PolicyCheck::Allowed);
    assert_eq!(
        check(&s, None, ProtocolVersion::V12_1),
        PolicyCheck::Http449
    );
    assert_eq!(
        ping(&s, Some(7), ProtocolVersion::V14_1),
        PolicyCheck::Status(144)
    );
    apply(&mut s, &Event::PolicyChanged);
    assert_eq!(
        ping(&s, None, ProtocolVersion::V14_1),
        PolicyCheck::Status(142),
        "an outdated policy is not waved through"
    );
    assert_eq!(
        check(&s, Some(222), ProtocolVersion::V14_1),
        PolicyCheck::Status(143)
    );
    assert_eq!(
        check(&s, Some(222), ProtocolVersion::V12_0),
        PolicyCheck::Http449
    );
    apply(&mut s, &Event::WipeRequested { at: Timestamp(NOW) });
    assert_eq!(
        check(&s, Some(222), ProtocolVersion::V14_1),
        PolicyCheck::Status(140)
    );
    let d = decide_provision(&s, &req, PolicyKey(333), Timestamp(NOW), &cfg);
    assert!(d.response.remote_wipe);
    let wipe_ack = ProvisionRequest {
        policy_key: None,
        policy_status: None,
        remote_wipe_status: Some(1),
    };
    let d = decide_provision(&s, &wipe_ack, PolicyKey(333), Timestamp(NOW), &cfg);
    fold(&mut s, &d.events);
    assert_eq!(s.wipe, WipeState::Acknowledged);
}

// [MS-ASCMD] 2.2.3.177.10 Ping Status 1/2/3/5/6/7.
#[test]
fn ping_statuses() {
    let (mut backend, mut pair) = world();
    let cfg = EngineConfig::default();
    let now = Timestamp(NOW);
    let empty = PingRequest {
        heartbeat: None,
        folders: None,
    };
    assert_eq!(
        decide_ping(&pair.server.state, &empty, now, &cfg)
            .response
            .status(),
        3
    );
    let req = |hb, f: Vec<CollectionId>| PingRequest {
        heartbeat: Some(hb),
        folders: Some(f),
    };
    assert_eq!(
        decide_ping(&pair.server.state, &req(10, vec![INBOX]), now, &cfg).response,
        PingResponse::HeartbeatOutOfBounds(60)
    );
    assert_eq!(
        decide_ping(&pair.server.state, &req(9999, vec![INBOX]), now, &cfg).response,
        PingResponse::HeartbeatOutOfBounds(3540)
    );
    let many: Vec<CollectionId> = (0..301).map(CollectionId).collect();
    assert_eq!(
        decide_ping(&pair.server.state, &req(600, many), now, &cfg)
            .response
            .status(),
        6
    );
    assert_eq!(
        decide_ping(
            &pair.server.state,
            &req(600, vec![CollectionId(50)]),
            now,
            &cfg
        )
        .response
        .status(),
        7
    );
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let d = decide_ping(&pair.server.state, &req(600, vec![INBOX]), now, &cfg);
    assert_eq!(d.response.status(), 1);
    fold(&mut pair.server.state, &d.events);
    // Only items inside the filter window count.
    pair.device.filters.insert(INBOX, FilterType::OneDay);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    backend
        .folders
        .get_mut(&INBOX)
        .unwrap()
        .add(NOW - 5 * 24 * HOUR, 1);
    pair.server.append(&[Event::BackendObserved {
        req_id: 1,
        collection: INBOX,
        at: now,
        observation: backend.folders[&INBOX].observation(),
    }]);
    assert_eq!(
        decide_ping(&pair.server.state, &empty, now, &cfg)
            .response
            .status(),
        1,
        "old mail is outside the window"
    );
    backend.folders.get_mut(&INBOX).unwrap().add(NOW, 2);
    pair.server.append(&[Event::BackendObserved {
        req_id: 2,
        collection: INBOX,
        at: now,
        observation: backend.folders[&INBOX].observation(),
    }]);
    assert_eq!(
        decide_ping(&pair.server.state, &empty, now, &cfg).response,
        PingResponse::Changes(vec![INBOX])
    );
}

// [MS-ASCMD] 2.2.3.177.6 GetItemEstimate Status 1/2/3/4.
#[test]
fn get_item_estimate_statuses() {
    let (mut backend, mut pair) = world();
    let now = Timestamp(NOW);
    let est = |s: &DeviceState, c, k| {
        decide_get_item_estimate(
            s,
            &EstimateRequest {
                collection: c,
                sync_key: k,
                filter: None,
            },
            now,
        )
    };
    assert_eq!(
        est(&pair.server.state, CollectionId(50), SyncKey(1)).status,
        2
    );
    assert_eq!(est(&pair.server.state, INBOX, SyncKey(1)).status, 3);
    for i in 0..7 {
        backend.folders.get_mut(&INBOX).unwrap().add(NOW, i);
    }
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.server.append(&[Event::BackendObserved {
        req_id: 1,
        collection: INBOX,
        at: now,
        observation: backend.folders[&INBOX].observation(),
    }]);
    let key = pair.device.keys[&INBOX];
    assert_eq!(est(&pair.server.state, INBOX, SyncKey(4242)).status, 4);
    assert_eq!(
        est(&pair.server.state, INBOX, key),
        EstimateResponse {
            status: 1,
            estimate: Some(7)
        }
    );
}

// MoveItems: 1 invalid source, 2 invalid destination, 4 same folder, 5 failure, 3 success without echo.
#[test]
fn move_items_statuses_and_no_echo() {
    let (mut backend, mut pair, sid) = one_message_synced(2);
    let s = &pair.server.state;
    let st = |src, dst| {
        plan_move(s, &MoveRequest { src, dst })
            .err()
            .map(|r| r.status)
    };
    assert_eq!(
        st(
            ServerId {
                collection: INBOX,
                n: 99
            },
            ARCHIVE
        ),
        Some(1)
    );
    assert_eq!(st(sid, CollectionId(99)), Some(2));
    assert_eq!(st(sid, INBOX), Some(4));
    let req = MoveRequest {
        src: sid,
        dst: ARCHIVE,
    };
    assert_eq!(
        decide_move(s, &req, &MoveOutcome::Failed)
            .unwrap()
            .response
            .status,
        5
    );
    let f = backend.folders.get_mut(&INBOX).unwrap();
    let (_, r, c) = f.items.pop_first().unwrap().1;
    let a = backend.folders.get_mut(&ARCHIVE).unwrap();
    let uid = a.add(r, c);
    let item = ObservedItem {
        id: a.id(uid),
        version: ItemVersion(1),
        received_at: Timestamp(r),
        digest: None,
    };
    let d = decide_move(s, &req, &MoveOutcome::Moved(item)).unwrap();
    assert_eq!(d.response.status, 3);
    pair.server.append(&d.events);
    let dst = d.response.dst.unwrap();
    let content = pair.device.items.remove(&sid).unwrap();
    pair.device.items.insert(dst, content);
    for col in [INBOX, ARCHIVE] {
        let r = pair.sync(&mut backend, col, 10, NOW, false);
        assert!(
            r.response.changes.is_empty(),
            "the move is not echoed: {:?}",
            r.response.changes
        );
    }
}

// A MoveItems retried after its answer was lost (the move recorded, e.g.
// opush killed before answering) gets the first answer again: Status 3 and
// the same DstMsgId, with nothing to carry out (not Status 1, after which
// the device would keep a stale copy in the source and miss the moved one).
#[test]
fn a_retried_move_items_gets_its_first_answer() {
    let (mut backend, mut pair, sid) = one_message_synced(2);
    let req = MoveRequest {
        src: sid,
        dst: ARCHIVE,
    };
    let f = backend.folders.get_mut(&INBOX).unwrap();
    let (_, r, c) = f.items.pop_first().unwrap().1;
    let a = backend.folders.get_mut(&ARCHIVE).unwrap();
    let uid = a.add(r, c);
    let item = ObservedItem {
        id: a.id(uid),
        version: ItemVersion(1),
        received_at: Timestamp(r),
        digest: None,
    };
    let moved = MoveOutcome::Moved(item);
    let before = pair.server.state.clone();
    let first = decide_move(&before, &req, &moved).unwrap();
    assert_eq!(first.response.status, 3);
    pair.server.append(&first.events);
    let s = &pair.server.state;
    let again = plan_move(s, &req).expect_err("nothing to carry out again");
    assert_eq!(again, first.response);
    let d = decide_move(s, &req, &MoveOutcome::Failed).unwrap();
    assert_eq!(d.response, first.response);
    assert!(d.events.is_empty());
    // Formats before 8 answered the retry Status 1 and recorded no
    // MoveRemembered: their records replay so.
    let record = |state: &DeviceState, outcome: Option<MoveOutcome>, rules| {
        let input = DecisionInput::Move {
            request: req.clone(),
            outcome,
        };
        let record = DecisionRecord {
            at: Timestamp(NOW),
            config: EngineConfig::default(),
            input,
            output: DecisionOutput::Move(first.response.clone()),
        };
        redecide(state, &record, rules).unwrap()
    };
    let old = record(&before, Some(moved.clone()), Rules::of(7));
    assert_eq!(old.response, DecisionOutput::Move(first.response.clone()));
    assert_eq!(old.events, first.events[..1]);
    assert!(matches!(first.events[1], Event::MoveRemembered { .. }));
    let now = record(&before, Some(moved), Rules::CURRENT);
    assert_eq!(now.events, first.events);
    let old_retry = record(s, None, Rules::of(7));
    assert!(
        matches!(&old_retry.response, DecisionOutput::Move(r) if r.status == 1 && r.dst.is_none()),
        "{:?}",
        old_retry.response
    );
    assert_eq!(
        record(s, None, Rules::CURRENT).response,
        DecisionOutput::Move(first.response.clone())
    );
    // Another destination is not where it went.
    let other = MoveRequest {
        src: sid,
        dst: INBOX,
    };
    assert_eq!(plan_move(s, &other).err().map(|r| r.status), Some(1));
}

// A Delete of an item the backend no longer has (deleted or moved there,
// or by this very Delete, carried out before opush was killed and not
// recorded) succeeds with nothing to carry out, and the item is not sent
// back to the device as a Delete.
#[test]
fn a_delete_of_an_item_gone_from_the_backend_succeeds() {
    let (mut backend, mut pair) = world();
    let uid = backend.folders.get_mut(&INBOX).unwrap().add(NOW, 1);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let sid = *pair.device.items.keys().next().unwrap();
    let f = backend.folders.get_mut(&INBOX).unwrap();
    f.items.remove(&uid);
    f.cursor += 1;
    pair.server.append(&[Event::BackendObserved {
        req_id: 9,
        collection: INBOX,
        at: Timestamp(NOW),
        observation: backend.folders[&INBOX].observation(),
    }]);
    let key = pair.device.keys[&INBOX];
    let input = sync_req(INBOX, key, vec![ClientCommand::Delete { server_id: sid }]);
    assert!(plan_sync(&pair.server.state, &input.request).is_empty());
    let d = decide_sync(
        &pair.server.state,
        &input,
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    let statuses: Vec<u8> = d.response.replies.iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![1]);
    assert!(d.response.changes.is_empty(), "{:?}", d.response.changes);
    // Formats before 8 answered it Status 8 (object not found): their
    // records replay so.
    let record = DecisionRecord {
        at: Timestamp(NOW),
        config: EngineConfig::default(),
        input: DecisionInput::Sync(input.clone()),
        output: DecisionOutput::Sync(d.response.clone()),
    };
    let old = redecide(&pair.server.state, &record, Rules::of(7)).unwrap();
    let DecisionOutput::Sync(old_response) = &old.response else {
        panic!("{:?}", old.response)
    };
    let old_statuses: Vec<u8> = old_response.replies.iter().map(|r| r.status).collect();
    assert_eq!(old_statuses, vec![8]);
    let now = redecide(&pair.server.state, &record, Rules::CURRENT).unwrap();
    assert_eq!(now.response, record.output);
    assert_eq!(now.events, d.events);
    pair.server.append(&d.events);
    let next = d.response.sync_key.unwrap_or(key);
    let d = decide_sync(
        &pair.server.state,
        &sync_req(INBOX, next, vec![]),
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    assert!(d.response.changes.is_empty(), "{:?}", d.response.changes);
}

// Contacts created twice with new ClientIds (some Android versions) are deduplicated.
#[test]
fn contacts_add_dedupe_by_digest() {
    let (mut backend, mut pair) = world();
    pair.sync(&mut backend, CONTACTS, 10, NOW, false);
    pair.device.local_add(CONTACTS, 77);
    pair.sync(&mut backend, CONTACTS, 10, NOW, false);
    pair.device.local_add(CONTACTS, 77);
    let r = pair.sync(&mut backend, CONTACTS, 10, NOW, false);
    assert_eq!(backend.folders[&CONTACTS].items.len(), 1, "created once");
    assert_eq!(r.response.replies.len(), 1);
}

// Codec: a newer format version is rejected with a typed error.
#[test]
fn codec_rejects_newer_version_and_garbage() {
    let mut bytes = encode_event(&Event::PolicyChanged).unwrap();
    assert_eq!(decode_event(&bytes).unwrap(), Event::PolicyChanged);
    bytes[4..8].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    assert!(matches!(
        decode_event(&bytes),
        Err(CodecError::NewerVersion { .. })
    ));
    assert!(matches!(decode_event(b"xx"), Err(CodecError::BadHeader(_))));
    let mut bad = encode_event(&Event::PolicyChanged).unwrap();
    bad.truncate(9);
    assert!(decode_event(&bad).is_err());
    assert!(decode_snapshot(&bytes).is_err());
}

// [MS-ASCMD] Sync Status 5 on a command whose backend effect failed; the
// device keeps its item and may retry it later.
#[test]
fn sync_status_5_when_the_backend_fails() {
    let (mut backend, mut pair) = world();
    backend.folders.get_mut(&INBOX).unwrap().add(NOW, 1);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let key = pair.device.keys[&INBOX];
    let sid = *pair.device.items.keys().next().unwrap();
    let mut input = sync_req(
        INBOX,
        key,
        vec![
            ClientCommand::Add {
                client_id: ClientId("n1".into()),
                digest: Digest::of(b"new"),
            },
            ClientCommand::Delete { server_id: sid },
        ],
    );
    assert_eq!(plan_sync(&pair.server.state, &input.request).len(), 2);
    input.outcomes = vec![EffectOutcome::Failed, EffectOutcome::Failed];
    let d = decide_sync(
        &pair.server.state,
        &input,
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    let replies: Vec<(ReplyKind, u8)> = d
        .response
        .replies
        .iter()
        .map(|r| (r.kind, r.status))
        .collect();
    assert_eq!(replies, vec![(ReplyKind::Add, 5), (ReplyKind::Delete, 5)]);
    assert!(!d
        .events
        .iter()
        .any(|e| matches!(e, Event::ClientChangeApplied { .. })));
}

// A caller that breaks the plan/decide contract gets a StepError and no events.
#[test]
fn step_error_on_outcome_mismatch_changes_nothing() {
    let (mut backend, mut pair) = world();
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    let key = pair.device.keys[&INBOX];
    let mut input = sync_req(
        INBOX,
        key,
        vec![ClientCommand::Add {
            client_id: ClientId("n1".into()),
            digest: Digest::of(b"x"),
        }],
    );
    let cfg = EngineConfig::default();
    assert_eq!(
        decide_sync(&pair.server.state, &input, Timestamp(NOW), &cfg),
        Err(StepError::OutcomeMismatch {
            expected: 1,
            got: 0
        })
    );
    input.outcomes = vec![EffectOutcome::Deleted];
    assert_eq!(
        decide_sync(&pair.server.state, &input, Timestamp(NOW), &cfg),
        Err(StepError::OutcomeKind { index: 0 })
    );
}

// [MS-ASCMD] FolderUpdate Status 4 (no such folder), 2 (name taken), 5 (parent
// not found); a successful rename keeps the folder's ServerId.
#[test]
fn folder_update_statuses() {
    let (_, pair) = world();
    let s = &pair.server.state;
    let key = pair.device.hierarchy_key;
    let update = |id, parent, name: &str| FolderOp::Update {
        sync_key: key,
        id,
        parent,
        name: name.into(),
    };
    let status = |op: &FolderOp| plan_folder_op(s, op).err().map(|r| r.status);
    assert_eq!(status(&update(CollectionId(99), None, "X")), Some(4));
    assert_eq!(status(&update(ARCHIVE, None, "Contacts")), Some(2));
    assert_eq!(
        status(&update(ARCHIVE, Some(CollectionId(99)), "X")),
        Some(5)
    );
    assert_eq!(status(&update(INBOX, None, "X")), Some(3));
    let op = update(ARCHIVE, None, "Old mail");
    let folder = BackendFolder {
        id: BackendFolderId("Old mail".into()),
        name: "Old mail".into(),
        parent: None,
        folder_type: FolderType::UserMail,
    };
    let d = decide_folder_op(s, &op, &FolderOutcome::Done(Some(folder)));
    assert_eq!(d.response.status, 1);
    let mut state = s.clone();
    fold(&mut state, &d.events);
    assert_eq!(
        state.hierarchy.ids.get(&ARCHIVE),
        Some(&BackendFolderId("Old mail".into()))
    );
    assert_eq!(
        state
            .hierarchy
            .device
            .get(&ARCHIVE)
            .map(|f| f.name.as_str()),
        Some("Old mail")
    );
}

// [MS-ASCMD] 2.2.3.24 Change of a 16.x draft: the backend replaces the item
// (a new IMAP UID); the device keeps its ServerId, gets Status 1 for the
// Change, and neither a Delete nor an Add for it afterwards; a retry of the
// same request changes nothing more.
#[test]
fn sync_change_replaced_on_the_backend_keeps_the_server_id() {
    let (mut backend, mut pair) = world();
    backend.replace_on_update = true;
    backend.folders.get_mut(&INBOX).unwrap().add(NOW, 1);
    backend.folders.get_mut(&INBOX).unwrap().add(NOW, 2);
    pair.sync(&mut backend, INBOX, 10, NOW, false);
    pair.settle(&mut backend, INBOX, NOW);
    let (sid, _) = pair
        .device
        .items
        .iter()
        .find(|(_, (_, c))| *c == 1)
        .map(|(s, i)| (*s, i.clone()))
        .unwrap();
    pair.device.local_change(sid, 10);
    let r = pair.sync(&mut backend, INBOX, 10, NOW + 1, true);
    let replies: Vec<(ReplyKind, Option<ServerId>, u8)> = r
        .response
        .replies
        .iter()
        .map(|r| (r.kind, r.server_id, r.status))
        .collect();
    assert_eq!(replies, vec![(ReplyKind::Change, Some(sid), 1)]);
    // The response was lost: the retry is answered from the record, the
    // backend is not touched again.
    let uids_before: Vec<u64> = backend.folders[&INBOX].items.keys().copied().collect();
    let again = pair.sync(&mut backend, INBOX, 10, NOW + 2, false);
    assert_eq!(again.response.replies, r.response.replies);
    let uids_after: Vec<u64> = backend.folders[&INBOX].items.keys().copied().collect();
    assert_eq!(uids_before, uids_after);
    let new_id = backend.folders[&INBOX].id(*uids_after.last().unwrap());
    let col = &pair.server.state.collections[&INBOX];
    assert_eq!(col.by_n.get(&sid.n), Some(&new_id));
    // Later syncs send nothing about the replaced item.
    let next = pair.sync(&mut backend, INBOX, 10, NOW + 3, false);
    assert!(
        next.response.changes.is_empty(),
        "{:?}",
        next.response.changes
    );
    assert_eq!(pair.device.items.len(), 2);
    assert_eq!(pair.device.items[&sid].1, 10);
}

// A MoveItems of an item the backend no longer has in the source (expunged
// or moved by another client, the device not told yet) is Status 1, as
// MS-ASCMD says for an item moved out of its folder (Status 5 would have
// the device retry a move that can never succeed), and records nothing:
// the device's next Sync of the source removes the item.
#[test]
fn a_move_of_an_item_gone_from_the_backend_is_status_1() {
    let (_, pair, sid) = one_message_synced(2);
    let req = MoveRequest {
        src: sid,
        dst: ARCHIVE,
    };
    let s = &pair.server.state;
    plan_move(s, &req).expect("the device holds it: a move to carry out");
    let d = decide_move(s, &req, &MoveOutcome::Gone).unwrap();
    assert_eq!(d.response.status, 1);
    assert_eq!(d.response.dst, None);
    assert!(d.events.is_empty());
    let failed = decide_move(s, &req, &MoveOutcome::Failed).unwrap();
    assert_eq!(
        failed.response.status, 5,
        "a backend failure stays retryable"
    );
}

/// The backend id a server change is about.
fn change_id(c: &ServerChange) -> &BackendItemId {
    match c {
        ServerChange::Add { id, .. }
        | ServerChange::Change { id, .. }
        | ServerChange::Delete { id, .. }
        | ServerChange::SoftDelete { id, .. } => id,
    }
}

// A Change refused by the conflict rule (the server's version wins: Status
// 7) leaves the device holding its own change. From format 8 that copy is
// marked stale (`DeviceCopyStale`), so the server's version reaches the
// device even when the window that answered the 7 had no room for it and
// the backend's flags meanwhile came back to those the device had before;
// format 7 recorded nothing and such a device kept its refused change.
#[test]
fn a_conflict_refused_change_is_sent_back_even_after_the_server_flips_back() {
    let (mut backend, mut pair) = world();
    let f = backend.folders.get_mut(&INBOX).unwrap();
    let uids: Vec<u64> = (0..3).map(|i| f.add(NOW + i, 1)).collect();
    for _ in 0..3 {
        pair.sync(&mut backend, INBOX, 10, NOW, false);
    }
    // Another client changes all three; opush observes it.
    let f = backend.folders.get_mut(&INBOX).unwrap();
    for uid in &uids {
        f.change(*uid, 2);
    }
    pair.server.append(&[Event::BackendObserved {
        req_id: 90,
        collection: INBOX,
        at: Timestamp(NOW),
        observation: backend.folders[&INBOX].observation(),
    }]);
    let key = pair.device.keys[&INBOX];
    let state = pair.server.state.clone();
    let config = EngineConfig::default();
    // The item a one-item window does not carry: the device changes it.
    let mut dry = sync_req(INBOX, key, vec![]);
    dry.request.window_size = Some(1);
    let first = decide_sync(&state, &dry, Timestamp(NOW), &config).unwrap();
    let carried = change_id(&first.response.changes[0]).clone();
    let (sid, (x, _)) = pair
        .device
        .items
        .iter()
        .find(|(_, (id, _))| *id != carried)
        .map(|(s, v)| (*s, v.clone()))
        .unwrap();
    let mut input = sync_req(
        INBOX,
        key,
        vec![ClientCommand::Change {
            server_id: sid,
            digest: Digest::of(b"the device's own flags"),
        }],
    );
    input.request.window_size = Some(1);
    let now = decide_sync(&state, &input, Timestamp(NOW), &config).unwrap();
    assert_eq!(now.response.replies[0].status, 7);
    assert!(now.response.changes.iter().all(|c| *change_id(c) != x));
    assert!(now.events.contains(&Event::DeviceCopyStale {
        collection: INBOX,
        id: x.clone(),
    }));
    let record = DecisionRecord {
        at: Timestamp(NOW),
        config: config.clone(),
        input: DecisionInput::Sync(input.clone()),
        output: DecisionOutput::Sync(now.response.clone()),
    };
    let old = redecide(&state, &record, Rules::of(7)).unwrap();
    assert_eq!(old.response, DecisionOutput::Sync(now.response.clone()));
    assert!(!old
        .events
        .iter()
        .any(|e| matches!(e, Event::DeviceCopyStale { .. })));
    // The other client puts X's flags back as the device had them before
    // its change; then the device syncs on (confirming the window).
    // (IMAP versions are digests of the flags: the same flags, the same
    // version as the device had.)
    let uid = backend.folders[&INBOX].uid_of(&x).unwrap();
    let f = backend.folders.get_mut(&INBOX).unwrap();
    f.change(uid, 1);
    f.items.get_mut(&uid).unwrap().0 = 1;
    let next = now.response.sync_key.unwrap();
    let sends_x = |events: &[Event]| {
        let mut st = state.clone();
        fold(&mut st, events);
        fold(
            &mut st,
            &[Event::BackendObserved {
                req_id: 91,
                collection: INBOX,
                at: Timestamp(NOW),
                observation: backend.folders[&INBOX].observation(),
            }],
        );
        let d = decide_sync(&st, &sync_req(INBOX, next, vec![]), Timestamp(NOW), &config).unwrap();
        d.response.changes.iter().any(|c| *change_id(c) == x)
    };
    assert!(
        sends_x(&now.events),
        "format 8: the server's version goes back"
    );
    assert!(
        !sends_x(&old.events),
        "format 7 kept the device's refused change"
    );
}

// A device moves an item it shows with flags another client has changed
// since (opush has not observed the change): the moved copy is the
// device's, with the old flags. From format 8 it is judged against the
// moved message's flags as IMAP reports them after the MOVE, so it is
// stale and the destination's next Sync sends a Change; format 7 judged it
// against what opush had observed, and the device kept the old flags.
#[test]
fn a_moved_copy_with_outdated_flags_gets_the_moved_messages_flags() {
    let (mut backend, mut pair, sid) = one_message_synced(3);
    let req = MoveRequest {
        src: sid,
        dst: ARCHIVE,
    };
    // The message moves with flags changed behind opush's back (content 2).
    let f = backend.folders.get_mut(&INBOX).unwrap();
    let (_, r, _) = f.items.pop_first().unwrap().1;
    let a = backend.folders.get_mut(&ARCHIVE).unwrap();
    let uid = a.add(r, 2);
    let item = ObservedItem {
        id: a.id(uid),
        version: ItemVersion(2),
        received_at: Timestamp(r),
        digest: None,
    };
    let state = pair.server.state.clone();
    let moved = MoveOutcome::Moved(item);
    let now = decide_move(&state, &req, &moved).unwrap();
    assert_eq!(now.response.status, 3);
    let stale_of = |events: &[Event]| {
        events.iter().find_map(|e| match e {
            Event::ItemMovedByDevice { stale, .. } => Some(*stale),
            _ => None,
        })
    };
    assert_eq!(stale_of(&now.events), Some(true));
    let record = DecisionRecord {
        at: Timestamp(NOW),
        config: EngineConfig::default(),
        input: DecisionInput::Move {
            request: req.clone(),
            outcome: Some(moved),
        },
        output: DecisionOutput::Move(now.response.clone()),
    };
    let old = redecide(&state, &record, Rules::of(7)).unwrap();
    assert_eq!(stale_of(&old.events), Some(false));
    // The destination's next Sync sends the moved copy a Change.
    pair.server.append(&now.events);
    let key = pair.device.keys[&ARCHIVE];
    let d = decide_sync(
        &pair.server.state,
        &sync_req(ARCHIVE, key, vec![]),
        Timestamp(NOW),
        &EngineConfig::default(),
    )
    .unwrap();
    assert!(
        d.response
            .changes
            .iter()
            .any(|c| matches!(c, ServerChange::Change { n, .. } if Some(*n) == now.response.dst.map(|s| s.n))),
        "{:?}",
        d.response.changes
    );
}
