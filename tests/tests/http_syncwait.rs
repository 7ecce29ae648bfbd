//! Sync as a long poll over HTTP ([MS-ASCMD] 2.2.3.198 `Wait`, 2.2.3.88.2
//! `HeartbeatInterval`, 2.2.1.21.2 empty Sync response), for 14.1 and
//! 16.1, against the stack's Dovecot: a Sync with nothing to send waits
//! and answers with the new message when one arrives (checked by APPENDing
//! over IMAP while it waits), answers the empty response when its interval
//! ends, answers Status 14 + Limit (or 4 for both elements) at once for an
//! interval out of range, and ends with the empty response when the same
//! device sends another request.
//!
//! Reserved Dovecot users: load0086 (14.1), load0087 (16.1), load0088
//! (out of range).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::time::{Duration, Instant};

use opush_protocol::commands::sync::ServerCommand;
use opush_tests::eas::{find_text, EasClient, HttpResponse};
use opush_tests::{fill, unique, RawImap};
use support::*;

/// One-collection Sync with `long` (`<Wait>…</Wait>` or
/// `<HeartbeatInterval>…</HeartbeatInterval>`) after `<Collections>`.
fn waiting_sync(collection: &str, key: &str, long: &str) -> String {
    sync_xml(collection, key, 100, "").replace("</Collections>", &format!("</Collections>{long}"))
}

fn empty_inbox(user: &str) -> RawImap {
    let mut imap = RawImap::login(user);
    imap.cmd("SELECT INBOX");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    imap
}

async fn started() -> Opush {
    start(Options {
        extra_toml: "[devices]\nheartbeat_min_s = 1\n".into(),
        ..Options::default()
    })
    .await
}

/// FolderSync, then INBOX synced to its end: (INBOX id, SyncKey).
async fn caught_up(c: &mut EasClient, v: &str) -> (String, String) {
    let (inbox, key, _) = synced_folder_of_type(c, v, 2).await;
    (inbox, key)
}

/// Sends `xml` as a Sync on its own connection; returns the pending answer.
fn send_sync(c: &EasClient, xml: String) -> tokio::task::JoinHandle<(HttpResponse, Duration)> {
    let mut c = EasClient::new(
        c.addr,
        &c.login,
        &opush_tests::demo_password(),
        &c.device_id,
        &c.version,
    );
    tokio::spawn(async move {
        let t0 = Instant::now();
        let res = c.post_xml("Sync", &xml).await;
        (res, t0.elapsed())
    })
}

/// True when `task` is still waiting after `d`.
async fn still_waiting<T>(task: &tokio::task::JoinHandle<T>, d: Duration) -> bool {
    tokio::time::sleep(d).await;
    !task.is_finished()
}

async fn change_while_parked(user: &str, device: &str, v: &str, long: &str) {
    let marker = unique("syncwait");
    let mut imap = empty_inbox(user);
    let opush = started().await;
    let mut c = opush.client(user, device, v);
    let (inbox, key) = caught_up(&mut c, v).await;

    // Nothing to send: the Sync waits.
    let pending = send_sync(&c, waiting_sync(&inbox, &key, long));
    assert!(
        still_waiting(&pending, Duration::from_millis(1500)).await,
        "the Sync answered at once: {:?}",
        pending.await.map(|(r, _)| r.xml())
    );
    // A message arrives: the waiting Sync answers with it.
    fill::append_all(
        &mut imap,
        "INBOX",
        std::iter::once(fill::text_message(&marker, 1)),
    );
    let (res, _) = tokio::time::timeout(Duration::from_secs(60), pending)
        .await
        .expect("the parked Sync answers after the change")
        .unwrap();
    let r = sync_response(&res, v);
    let col = &r.collections[0];
    assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
    assert_ne!(col.sync_key.0, key, "a new SyncKey: {}", res.xml());
    let subjects: Vec<_> = col
        .commands
        .iter()
        .flatten()
        .filter_map(|cmd| match cmd {
            ServerCommand::Add {
                application_data: opush_protocol::commands::items::ApplicationData::Email(e),
                ..
            } => e.subject.clone(),
            _ => None,
        })
        .collect();
    assert_eq!(subjects, vec![format!("{marker} 1")], "{}", res.xml());
    let key = col.sync_key.0.clone();

    // The empty request repeats the remembered one, the interval included:
    // it waits again; another request of the device ends it (empty answer).
    let mut quiet = EasClient::new(c.addr, &c.login, &opush_tests::demo_password(), device, v);
    let pending = tokio::spawn(async move { quiet.post("Sync", b"").await });
    assert!(
        still_waiting(&pending, Duration::from_millis(1500)).await,
        "the empty Sync answered at once"
    );
    // The newer request: a Sync without an interval, which also shows the
    // SyncKey the device holds is still good.
    let res = c.post_xml("Sync", &sync_xml(&inbox, &key, 100, "")).await;
    let r = sync_response(&res, v);
    assert_eq!(
        r.collections[0].status.map(|s| s.code()),
        Some(1),
        "{}",
        res.xml()
    );
    assert_eq!(r.collections[0].sync_key.0, key);
    let ended = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("a newer request ends the parked Sync")
        .unwrap();
    assert_eq!(ended.status, 200);
    assert!(
        ended.body.is_empty(),
        "the empty Sync response: {}",
        ended.xml()
    );
    let store_dir = opush.stop_keeping_store().await;

    // The session replays: the long-poll decisions and the Sync run again
    // after the change are in the log and decide the same.
    let store = opush_storage::Store::open(&opush_storage::StorageConfig {
        path: store_dir.path().to_path_buf(),
        ..opush_storage::StorageConfig::default()
    })
    .await
    .unwrap();
    let bundle = opush_replay::export(&store, user, device, None, None)
        .await
        .unwrap();
    let report = opush_replay::run(&bundle).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let waits = bundle
        .decoded()
        .unwrap()
        .into_iter()
        .filter(|(_, e)| {
            matches!(e, opush_engine::Event::Decided { record, .. }
                if matches!(record.output, opush_engine::DecisionOutput::SyncWait(
                    opush_engine::SyncWaitResponse::Park { .. })))
        })
        .count();
    assert_eq!(waits, 2, "both waiting Syncs recorded their interval");
}

// [MS-ASCMD] 3.1.5.4: a change to a folder of a waiting Sync answers it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_sync_answers_the_change_14_1() {
    change_while_parked(
        "load0086@load.test",
        "SYNCWAIT141",
        "14.1",
        "<HeartbeatInterval>300</HeartbeatInterval>",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_sync_answers_the_change_16_1() {
    change_while_parked(
        "load0087@load.test",
        "SYNCWAIT161",
        "16.1",
        "<Wait>5</Wait>",
    )
    .await;
}

// [MS-ASCMD] 2.2.1.21.2: nothing changed in the interval → the empty
// Sync response; 2.2.3.198 / 2.2.3.88.2: out of range → Status 14 + Limit;
// both elements → Status 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_and_out_of_range_intervals() {
    let user = "load0088@load.test";
    empty_inbox(user);
    let opush = started().await;
    for (v, device) in [("14.1", "SYNCWAITT141"), ("16.1", "SYNCWAITT161")] {
        let mut c = opush.client(user, device, v);
        let (inbox, key) = caught_up(&mut c, v).await;

        let pending = send_sync(
            &c,
            waiting_sync(&inbox, &key, "<HeartbeatInterval>2</HeartbeatInterval>"),
        );
        let (res, waited) = tokio::time::timeout(Duration::from_secs(30), pending)
            .await
            .expect("answered after the interval")
            .unwrap();
        assert_eq!(res.status, 200);
        assert!(
            res.body.is_empty(),
            "{v}: the empty Sync response: {}",
            res.xml()
        );
        assert!(
            waited >= Duration::from_millis(1500),
            "{v}: answered after {waited:?}"
        );

        for (long, status, limit) in [
            ("<Wait>60</Wait>", "14", Some("59")),
            ("<Wait>0</Wait>", "14", Some("1")),
            (
                "<HeartbeatInterval>3541</HeartbeatInterval>",
                "14",
                Some("3540"),
            ),
            ("<HeartbeatInterval>0</HeartbeatInterval>", "14", Some("1")),
            (
                "<Wait>1</Wait><HeartbeatInterval>60</HeartbeatInterval>",
                "4",
                None,
            ),
        ] {
            let res = c.post_xml("Sync", &waiting_sync(&inbox, &key, long)).await;
            assert_eq!(res.status, 200);
            let root = res.element();
            assert_eq!(
                find_text(&root, "Status").as_deref(),
                Some(status),
                "{v} {long}: {}",
                res.xml()
            );
            assert_eq!(
                find_text(&root, "Limit").as_deref(),
                limit,
                "{v} {long}: {}",
                res.xml()
            );
        }
    }
    opush.stop().await;
}
