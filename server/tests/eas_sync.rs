//! Email Sync end to end against the real Dovecot of the test stack
//! (`scripts/stack up dovecot`) and the embedded store in a temp dir,
//! through the handlers' typed entry points (FolderSync → Sync 0 → Sync in
//! windows → retried SyncKey → server-side and device-side changes), for
//! protocol versions 12.1, 14.1 and 16.1. The IMAP side is checked with the
//! independent `RawImap` client.
//!
//! Reserved Dovecot users: load0031 (12.1), load0032 (14.1), load0033 (16.1).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::commands::get_item_estimate::{EstimateCollection, GetItemEstimateRequest};
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::move_items::{Move, MoveItemsRequest};
use opush_protocol::commands::sync::{
    ClientCommand, ServerCommand, SyncCollectionRequest, SyncCollectionResponse, SyncOptions,
    SyncRequest,
};
use opush_protocol::commands::{CollectionId, ServerId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::get_item_estimate::get_item_estimate;
use opush_server::commands::move_items::move_items;
use opush_server::commands::sync::sync;
use opush_server::session::EasServices;
use opush_tests::{unique, RawImap};

fn reset_inbox(imap: &mut RawImap) {
    let (_, ok) = imap.cmd("SELECT INBOX");
    assert!(ok.starts_with("OK"), "{ok}");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    let (_, ok) = imap.cmd("EXPUNGE");
    assert!(ok.starts_with("OK"), "{ok}");
}

fn append(imap: &mut RawImap, subject_header: &str, body: &str) {
    let msg = format!(
        "From: Sender <sender@example.test>\r\nTo: Dest <dest@load.test>\r\nSubject: {subject_header}\r\n\
Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
    );
    let (_, ok) = imap.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

fn request(
    inbox: &str,
    key: &str,
    window: u32,
    commands: Option<Vec<ClientCommand>>,
) -> SyncRequest {
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(inbox.to_owned()),
            window_size: Some(window),
            deletes_as_moves: Some(false),
            get_changes: None,
            options: vec![SyncOptions {
                body_preferences: vec![BodyPreference {
                    body_type: 1,
                    truncation_size: Some(5),
                    all_or_none: None,
                    preview: None,
                }],
                ..SyncOptions::default()
            }],
            commands,
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

fn email(cmd: &ServerCommand) -> &Email {
    match cmd {
        ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        }
        | ServerCommand::Change {
            application_data: ApplicationData::Email(e),
            ..
        } => e,
        other => panic!("not an email command: {other:?}"),
    }
}

fn server_id(cmd: &ServerCommand) -> String {
    match cmd {
        ServerCommand::Add { server_id, .. }
        | ServerCommand::Change { server_id, .. }
        | ServerCommand::Delete { server_id, .. }
        | ServerCommand::SoftDelete { server_id } => server_id.0.clone(),
    }
}

async fn one(
    eas: &EasServices,
    user: &str,
    version: ProtocolVersion,
    req: SyncRequest,
) -> SyncCollectionResponse {
    let mut res = sync(&req, version, &caller(user, "DEVSYNC"), eas)
        .await
        .unwrap();
    assert_eq!(res.collections.len(), 1);
    res.collections.remove(0)
}

async fn scenario(user: &str, version: ProtocolVersion) {
    let mut raw = RawImap::login(user);
    reset_inbox(&mut raw);
    let tag = unique("sync");
    for i in 0..4 {
        append(&mut raw, &format!("{tag} plain {i}"), "Hello world body");
    }
    // "Été ☀" encoded (RFC 2047), to be decoded on the way out.
    append(
        &mut raw,
        &format!("=?UTF-8?B?w4l0w6kg4piA?= {tag}"),
        "caf\u{e9}",
    );

    // A subscribed folder to move into (kept between runs; emptied here).
    raw.cmd("CREATE eas-moves");
    raw.cmd("SUBSCRIBE eas-moves");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;

    // FolderSync 0: INBOX is there with Type 2.
    let folders = first_folder_sync(&eas, &caller(user, "DEVSYNC")).await;
    let moves_folder = folders.named("eas-moves");
    let inbox = folders.of_type(2);

    // Sync 0: a key, no items.
    let r0 = one(&eas, user, version, request(&inbox, "0", 3, None)).await;
    assert_eq!(r0.status.map(|s| s.code()), Some(1));
    assert!(r0.commands.is_none());
    let k1 = r0.sync_key.0.clone();

    // Window of 3 out of 5, then the rest.
    let r1 = one(&eas, user, version, request(&inbox, &k1, 3, None)).await;
    assert!(r1.more_available);
    let adds1 = r1.commands.clone().unwrap();
    assert_eq!(adds1.len(), 3);
    // A lost answer: the same key gets the same answer.
    let again = one(&eas, user, version, request(&inbox, &k1, 3, None)).await;
    assert_eq!(again, r1);
    let r2 = one(
        &eas,
        user,
        version,
        request(&inbox, &r1.sync_key.0, 3, None),
    )
    .await;
    assert!(!r2.more_available);
    let adds2 = r2.commands.clone().unwrap();
    assert_eq!(adds2.len(), 2);
    let all: Vec<&ServerCommand> = adds1.iter().chain(adds2.iter()).collect();
    let subjects: Vec<String> = all
        .iter()
        .map(|c| email(c).subject.clone().unwrap())
        .collect();
    // Newest first: the last appended comes first.
    let newest_first: Vec<String> = std::iter::once(format!("Été ☀ {tag}"))
        .chain((0..4).rev().map(|i| format!("{tag} plain {i}")))
        .collect();
    assert_eq!(subjects, newest_first);
    let first = email(all[1]);
    assert_eq!(first.read, Some(false));
    let body = first.body.clone().unwrap();
    assert_eq!(body.truncated, Some(true));
    assert_eq!(body.data.as_deref(), Some("Hello"));

    // Server side: mark one read, expunge another, append a new one.
    let uids = raw.search_subject("INBOX", &format!("{tag} plain"));
    assert_eq!(uids.len(), 4);
    raw.cmd(&format!("UID STORE {} +FLAGS (\\Seen)", uids[0]));
    raw.cmd(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", uids[1]));
    raw.cmd(&format!("UID EXPUNGE {}", uids[1]));
    append(&mut raw, &format!("{tag} late"), "new");
    let r3 = one(
        &eas,
        user,
        version,
        request(&inbox, &r2.sync_key.0, 50, None),
    )
    .await;
    let cmds = r3.commands.clone().unwrap();
    let n_change = cmds
        .iter()
        .filter(|c| matches!(c, ServerCommand::Change { .. }))
        .count();
    let n_delete = cmds
        .iter()
        .filter(|c| matches!(c, ServerCommand::Delete { .. }))
        .count();
    let n_add = cmds
        .iter()
        .filter(|c| matches!(c, ServerCommand::Add { .. }))
        .count();
    assert_eq!((n_add, n_change, n_delete), (1, 1, 1), "{cmds:?}");
    let change = cmds
        .iter()
        .find(|c| matches!(c, ServerCommand::Change { .. }))
        .unwrap();
    assert_eq!(email(change).read, Some(true));

    // Device side: flag + mark read the "late" one, delete the changed one.
    let late = cmds
        .iter()
        .find(|c| matches!(c, ServerCommand::Add { .. }))
        .unwrap();
    let late_id = server_id(late);
    let changed_id = server_id(change);
    let device = vec![
        ClientCommand::Change {
            class: None,
            server_id: ServerId(late_id.clone()),
            application_data: ApplicationData::Email(Box::new(Email {
                read: Some(true),
                flag: Some(opush_protocol::commands::items::Flag {
                    status: Some(2),
                    flag_type: Some("Follow up".to_owned()),
                    ..Default::default()
                }),
                ..Email::default()
            })),
        },
        ClientCommand::Delete {
            class: None,
            server_id: ServerId(changed_id),
            instance_id: None,
        },
    ];
    let r4 = one(
        &eas,
        user,
        version,
        request(&inbox, &r3.sync_key.0, 50, Some(device)),
    )
    .await;
    assert_eq!(r4.status.map(|s| s.code()), Some(1));
    assert!(
        r4.commands.is_none(),
        "own changes are not echoed: {:?}",
        r4.commands
    );
    let late_uid = raw.search_subject("INBOX", &format!("{tag} late"));
    let (flags, _) = raw.cmd(&format!("UID FETCH {} FLAGS", late_uid[0]));
    let flags = flags.concat();
    assert!(
        flags.contains("\\Seen") && flags.contains("\\Flagged"),
        "{flags}"
    );
    assert!(raw
        .search_subject("INBOX", &format!("{tag} plain 0"))
        .is_empty());

    // Nothing more to say.
    let r5 = one(
        &eas,
        user,
        version,
        request(&inbox, &r4.sync_key.0, 50, None),
    )
    .await;
    assert!(r5.commands.is_none(), "{:?}", r5.commands);

    // GetItemEstimate counts what the next Sync would send.
    let estimate = |key: String| GetItemEstimateRequest {
        collections: vec![EstimateCollection {
            collection_id: CollectionId(inbox.clone()),
            sync_key: SyncKey(key),
            ..EstimateCollection::default()
        }],
    };
    let e0 = get_item_estimate(
        &estimate(r5.sync_key.0.clone()),
        version,
        &caller(user, "DEVSYNC"),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(e0.responses[0].estimate, Some(0));
    append(&mut raw, &format!("{tag} estimated"), "x");
    append(&mut raw, &format!("{tag} estimated 2"), "x");
    let e2 = get_item_estimate(
        &estimate(r5.sync_key.0.clone()),
        version,
        &caller(user, "DEVSYNC"),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(e2.responses[0].estimate, Some(2));
    assert_eq!(e2.responses[0].status.code(), 1);
    let r6 = one(
        &eas,
        user,
        version,
        request(&inbox, &r5.sync_key.0, 50, None),
    )
    .await;
    assert_eq!(r6.commands.as_ref().map(Vec::len), Some(2));

    // MoveItems: the "late" message goes to eas-moves on the IMAP side.
    let mv = MoveItemsRequest {
        moves: vec![Move {
            src_msg_id: ServerId(late_id.clone()),
            src_fld_id: CollectionId(inbox.clone()),
            dst_fld_id: CollectionId(moves_folder.clone()),
        }],
    };
    let moved = move_items(&mv, &caller(user, "DEVSYNC"), &eas)
        .await
        .unwrap();
    assert_eq!(moved.responses[0].status.code(), 3, "{moved:?}");
    let dst_id = moved.responses[0].dst_msg_id.clone().unwrap();
    assert!(
        dst_id.0.starts_with(&format!("{moves_folder}:")),
        "{dst_id:?}"
    );
    assert!(raw
        .search_subject("INBOX", &format!("{tag} late"))
        .is_empty());
    assert_eq!(
        raw.search_subject("eas-moves", &format!("{tag} late"))
            .len(),
        1
    );
    // The source's next Sync neither resends it nor reports it deleted.
    let r7 = one(
        &eas,
        user,
        version,
        request(&inbox, &r6.sync_key.0, 50, None),
    )
    .await;
    assert!(r7.commands.is_none(), "{:?}", r7.commands);
    // An unknown source is status 1.
    let bad = MoveItemsRequest {
        moves: vec![Move {
            src_msg_id: ServerId(format!("{inbox}:999999")),
            src_fld_id: CollectionId(inbox.clone()),
            dst_fld_id: CollectionId(moves_folder.clone()),
        }],
    };
    let bad = move_items(&bad, &caller(user, "DEVSYNC"), &eas)
        .await
        .unwrap();
    assert_eq!(bad.responses[0].status.code(), 1);
    // Empty the move target for the next run.
    raw.cmd("SELECT eas-moves");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
}

#[tokio::test]
async fn bootstrap_windows_retry_and_changes_both_ways_12_1() {
    scenario("load0031@load.test", ProtocolVersion::V12_1).await;
}

#[tokio::test]
async fn bootstrap_windows_retry_and_changes_both_ways_14_1() {
    scenario("load0032@load.test", ProtocolVersion::V14_1).await;
}

#[tokio::test]
async fn bootstrap_windows_retry_and_changes_both_ways_16_1() {
    scenario("load0033@load.test", ProtocolVersion::V16_1).await;
}
