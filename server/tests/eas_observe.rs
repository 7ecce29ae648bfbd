//! How Sync observes IMAP, against the real Dovecot (CONDSTORE + QRESYNC):
//! with `[imap] use_condstore` (a QRESYNC delta since the recorded modseq)
//! and without it (full UID + FLAGS listings), server-side flag changes,
//! expunges and new messages reach the device, and a Sync with nothing new
//! records no observation and no sync state (only the replay record of the
//! request itself, `RequestReceived`/`Decided`/`ResponseSent`).
//!
//! Works in its own `opush-observe-…` folder of load0031 (whose INBOX
//! belongs to eas_sync), deleted at the end.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::sync::{
    ServerCommand, SyncCollectionRequest, SyncCollectionResponse, SyncRequest,
};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_server::backends::imap::ImapPool;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::sync::sync;
use opush_server::session::EasServices;
use opush_storage::DeviceKey;
use opush_tests::{require, unique, RawImap, DOVECOT_IMAP};

const USER: &str = "load0031@load.test";

fn append(imap: &mut RawImap, folder: &str, subject: &str) {
    let msg =
        format!("From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\r\nbody\r\n");
    let (_, ok) = imap.cmd(&format!("APPEND {folder} {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

async fn sync_once(
    eas: &EasServices,
    device: &str,
    coll: &str,
    key: &str,
) -> SyncCollectionResponse {
    sync_with(eas, device, coll, key, Vec::new()).await
}

/// One Sync of `coll` with the given `Options` (none when empty).
async fn sync_with(
    eas: &EasServices,
    device: &str,
    coll: &str,
    key: &str,
    options: Vec<opush_protocol::commands::sync::SyncOptions>,
) -> SyncCollectionResponse {
    let req = SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(coll.to_owned()),
            window_size: Some(50),
            options,
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    };
    let mut res = sync(&req, ProtocolVersion::V14_1, &caller(USER, device), eas)
        .await
        .unwrap();
    res.collections.remove(0)
}

/// The events appended since `after` other than the request record
/// (`RequestReceived`, `Decided`, `ResponseSent`: the replay log).
async fn state_events_since(eas: &EasServices, device: &str, after: u64) -> Vec<String> {
    eas.sessions
        .store()
        .read_events(&DeviceKey::new(USER, device).unwrap(), after + 1)
        .await
        .unwrap()
        .iter()
        .map(|e| opush_engine::decode_event(&e.payload).unwrap())
        .filter(|e| {
            !matches!(
                e,
                opush_engine::Event::RequestReceived { .. }
                    | opush_engine::Event::Decided { .. }
                    | opush_engine::Event::ResponseSent { .. }
            )
        })
        .map(|e| format!("{e:?}").chars().take(60).collect())
        .collect()
}

async fn head(eas: &EasServices, device: &str) -> u64 {
    eas.sessions
        .store()
        .head(&DeviceKey::new(USER, device).unwrap())
        .await
        .unwrap()
}

async fn scenario(use_condstore: bool) {
    require(DOVECOT_IMAP);
    let folder = unique("opush-observe");
    let device = if use_condstore { "DEVOBS1" } else { "DEVOBS2" };
    let mut raw = RawImap::login(USER);
    let (_, ok) = raw.cmd(&format!("CREATE {folder}"));
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd(&format!("SUBSCRIBE {folder}"));
    for i in 0..3 {
        append(&mut raw, &folder, &format!("m{i}"));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut eas = services(&dir).await;
    let mut cfg = eas.imap.config().clone();
    cfg.use_condstore = use_condstore;
    eas.imap = std::sync::Arc::new(ImapPool::new(cfg));

    let coll = first_folder_sync(&eas, &caller(USER, device))
        .await
        .named(&folder);

    let r0 = sync_once(&eas, device, &coll, "0").await;
    let r1 = sync_once(&eas, device, &coll, &r0.sync_key.0).await;
    assert_eq!(r1.commands.as_ref().map(Vec::len), Some(3), "{r1:?}");
    // ServerIds by subject: ids[i] is message m{i} (they arrive newest first).
    let mut by_subject: Vec<(String, String)> = r1
        .commands
        .iter()
        .flatten()
        .map(|c| match c {
            ServerCommand::Add {
                server_id,
                application_data: ApplicationData::Email(e),
            } => (e.subject.clone().unwrap_or_default(), server_id.0.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    by_subject.sort();
    let ids: Vec<String> = by_subject.into_iter().map(|(_, id)| id).collect();
    // Confirms the batch; nothing new.
    let r2 = sync_once(&eas, device, &coll, &r1.sync_key.0).await;
    assert!(r2.commands.is_none(), "{r2:?}");
    let key = r2.sync_key.0.clone();

    // Nothing changed: the same key, no command, nothing appended.
    let before = head(&eas, device).await;
    let same = sync_once(&eas, device, &coll, &key).await;
    assert!(same.commands.is_none(), "{same:?}");
    assert_eq!(same.sync_key.0, key);
    assert_eq!(
        state_events_since(&eas, device, before).await,
        Vec::<String>::new(),
        "a no-change Sync records no observation nor sync state"
    );
    assert_eq!(
        head(&eas, device).await,
        before,
        "a no-change Sync appends nothing: its trace waits in memory"
    );
    eas.sessions.flush().await;
    assert!(
        head(&eas, device).await > before,
        "the deferred trace (Decided) is appended by a flush"
    );
    assert_eq!(
        state_events_since(&eas, device, before).await,
        Vec::<String>::new(),
        "the flush writes trace events only"
    );

    // Server side: m0 read, m1 expunged, m3 new.
    raw.cmd(&format!("SELECT {folder}"));
    raw.cmd("UID STORE 1 +FLAGS.SILENT (\\Seen)");
    raw.cmd("UID STORE 2 +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    append(&mut raw, &folder, "m3");
    let r3 = sync_once(&eas, device, &coll, &key).await;
    let cmds = r3.commands.clone().unwrap_or_default();
    assert_eq!(cmds.len(), 3, "{cmds:?}");
    assert!(
        cmds.iter().any(|c| matches!(c,
        ServerCommand::Change { server_id, application_data: ApplicationData::Email(e) }
            if server_id.0 == ids[0] && e.read == Some(true))),
        "{cmds:?}"
    );
    assert!(
        cmds.iter()
            .any(|c| matches!(c, ServerCommand::Delete { server_id, .. } if server_id.0 == ids[1])),
        "{cmds:?}"
    );
    assert!(
        cmds.iter().any(|c| matches!(c,
        ServerCommand::Add { application_data: ApplicationData::Email(e), .. }
            if e.subject.as_deref() == Some("m3"))),
        "{cmds:?}"
    );

    // The server-side changes were observed the configured way.
    let events = eas
        .sessions
        .store()
        .read_events(&DeviceKey::new(USER, device).unwrap(), 1)
        .await
        .unwrap();
    let kind = events
        .iter()
        .rev()
        .find_map(|e| match opush_engine::decode_event(&e.payload).unwrap() {
            opush_engine::Event::BackendObserved { observation, .. } => Some(observation.kind),
            _ => None,
        })
        .unwrap();
    let expected = if use_condstore {
        opush_engine::ObservationKind::Delta
    } else {
        opush_engine::ObservationKind::Full
    };
    assert_eq!(kind, expected);

    // Confirmed; then quiet again, without writes.
    let r4 = sync_once(&eas, device, &coll, &r3.sync_key.0).await;
    assert!(r4.commands.is_none(), "{r4:?}");
    let before = head(&eas, device).await;
    let quiet = sync_once(&eas, device, &coll, &r4.sync_key.0).await;
    assert!(quiet.commands.is_none());
    assert!(state_events_since(&eas, device, before).await.is_empty());

    raw.cmd("CLOSE");
    raw.cmd(&format!("DELETE {folder}"));
}

#[tokio::test]
async fn condstore_delta_and_no_write_without_changes() {
    scenario(true).await;
}

#[tokio::test]
async fn full_listing_without_condstore() {
    scenario(false).await;
}

// Responses are bounded by bytes as well as items: six 60 KB messages with a
// 150 KB budget and WindowSize 50 come two by two, with MoreAvailable; with
// bodies truncated to 500 bytes they fit in one window (the budget counts
// rendered sizes).
#[tokio::test]
async fn windows_are_cut_by_the_bytes_budget() {
    require(DOVECOT_IMAP);
    let folder = unique("opush-bytes");
    let device = "DEVBYTES";
    let mut raw = RawImap::login(USER);
    let (_, ok) = raw.cmd(&format!("CREATE {folder}"));
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd(&format!("SUBSCRIBE {folder}"));
    let filler = "x".repeat(76);
    let body: String = (0..780).map(|_| format!("{filler}\r\n")).collect();
    for i in 0..6 {
        let msg = format!("From: a@example.test\r\nSubject: big{i}\r\n\r\n{body}");
        let (_, ok) = raw.cmd(&format!("APPEND {folder} {{{}+}}\r\n{msg}", msg.len()));
        assert!(ok.starts_with("OK"), "append: {ok}");
    }
    let dir = tempfile::tempdir().unwrap();
    let mut eas = services(&dir).await;
    eas.engine.max_window_bytes = 150_000;
    let coll = first_folder_sync(&eas, &caller(USER, device))
        .await
        .named(&folder);
    let mut key = sync_once(&eas, device, &coll, "0").await.sync_key.0;
    let mut seen = Vec::new();
    for _ in 0..10 {
        let r = sync_once(&eas, device, &coll, &key).await;
        let n = r.commands.as_ref().map_or(0, Vec::len);
        assert!(n <= 2, "{n} messages of 60 KB in a 150 KB window");
        seen.push(n);
        key = r.sync_key.0.clone();
        if !r.more_available {
            break;
        }
    }
    assert_eq!(seen.iter().sum::<usize>(), 6, "{seen:?}");
    assert_eq!(seen[0], 2, "{seen:?}");

    // The budget counts what is rendered: bodies truncated to 500 bytes
    // leave room for all six messages in one window.
    let device = "DEVBYTES2";
    let options = || {
        vec![opush_protocol::commands::sync::SyncOptions {
            body_preferences: vec![opush_protocol::commands::airsyncbase::BodyPreference {
                body_type: 1,
                truncation_size: Some(500),
                ..Default::default()
            }],
            ..Default::default()
        }]
    };
    assert_eq!(
        first_folder_sync(&eas, &caller(USER, device))
            .await
            .named(&folder),
        coll
    );
    let key = sync_with(&eas, device, &coll, "0", options())
        .await
        .sync_key
        .0;
    let r = sync_with(&eas, device, &coll, &key, options()).await;
    let n = r.commands.as_ref().map_or(0, Vec::len);
    assert_eq!(n, 6, "truncated bodies: one window of six");
    assert!(!r.more_available);
    let body = |c: &opush_protocol::commands::sync::ServerCommand| match c {
        opush_protocol::commands::sync::ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        } => e
            .body
            .as_ref()
            .and_then(|b| b.data.as_ref())
            .map_or(0, String::len),
        _ => 0,
    };
    assert!(r.commands.iter().flatten().all(|c| body(c) <= 500));
    raw.cmd(&format!("DELETE {folder}"));
}

// [MS-ASCMD] 2.2.3.7.2 (16.0+): a draft added by the device is APPENDed to
// the Drafts folder (\Draft); a retried Add (same SyncKey, same ClientId)
// does not append it twice.
#[tokio::test]
async fn a_draft_added_by_the_device_reaches_drafts_once() {
    use opush_protocol::commands::airsyncbase::Body;
    use opush_protocol::commands::items::Email;
    use opush_protocol::commands::sync::{ClientCommand, CommandResponse};
    use opush_protocol::commands::ClientId;
    require(DOVECOT_IMAP);
    let device = "DEVDRAFT";
    let marker = unique("draft");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let fs = folder_sync(
        &FolderSyncRequest {
            sync_key: SyncKey("0".to_owned()),
        },
        &caller(USER, device),
        &eas,
    )
    .await
    .unwrap();
    let drafts = fs
        .changes
        .unwrap()
        .iter()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 3 => Some(f.server_id.0.clone()),
            _ => None,
        })
        .expect("a Drafts folder");
    let v16 = ProtocolVersion::V16_1;
    let run = |key: String, commands: Option<Vec<ClientCommand>>| {
        let eas = &eas;
        let drafts = drafts.clone();
        async move {
            let req = SyncRequest {
                collections: vec![SyncCollectionRequest {
                    sync_key: SyncKey(key),
                    collection_id: CollectionId(drafts),
                    window_size: Some(512),
                    get_changes: Some(false),
                    commands,
                    ..SyncCollectionRequest::default()
                }],
                ..SyncRequest::default()
            };
            sync(&req, v16, &caller(USER, device), eas)
                .await
                .unwrap()
                .collections
                .remove(0)
        }
    };
    let k1 = run("0".into(), None).await.sync_key.0;
    let add = vec![ClientCommand::Add {
        class: None,
        client_id: ClientId("c-1".into()),
        application_data: ApplicationData::Email(Box::new(Email {
            to: Some("bob@example.test".into()),
            subject: Some(marker.clone()),
            body: Some(Body {
                body_type: 1,
                data: Some("draft text".into()),
                ..Body::default()
            }),
            ..Email::default()
        })),
    }];
    let first = run(k1.clone(), Some(add.clone())).await;
    let added = |r: &SyncCollectionResponse| {
        r.responses
            .iter()
            .flatten()
            .find_map(|c| match c {
                CommandResponse::Add {
                    client_id,
                    server_id,
                    status,
                    ..
                } if client_id.0 == "c-1" => Some((status.code(), server_id.clone())),
                _ => None,
            })
            .expect("an Add response")
    };
    let (status, sid) = added(&first);
    assert_eq!(status, 1, "{first:?}");
    assert!(sid.is_some());
    let mut raw = RawImap::login(USER);
    let uids = raw.search_subject("Drafts", &marker);
    assert_eq!(uids.len(), 1, "the draft is in Drafts");
    // A lost answer: the same request again gets the same ServerId, no second copy.
    let again = run(k1, Some(add)).await;
    assert_eq!(added(&again), (1, sid));
    assert_eq!(raw.search_subject("Drafts", &marker).len(), 1);
    let text = raw.fetch_message(uids[0]);
    assert!(text.contains("draft text"), "{text}");
    raw.cmd("SELECT Drafts");
    raw.cmd(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", uids[0]));
    raw.cmd("EXPUNGE");
}
