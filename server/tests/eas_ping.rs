//! Ping and the push hub end to end against real Dovecot: the handler's
//! typed entry point (`commands::ping::ping`) over a fresh embedded store,
//! devices prepared with FolderSync + Sync, changes made with a plain IMAP
//! client. Covers a change in INBOX and in a subfolder, the heartbeat
//! expiring, bounds, two devices of one user sharing one watcher, a device
//! superseding its own Ping, an IMAP restart while parked (on a PRIVATE
//! Dovecot, `scripts/dovecot-private`, port 11520, never the shared one),
//! and a watcher whose sessions the server ended (kicked, private Dovecot
//! on port 11641) pausing before it logs in again.
//!
//! Also: several folders watched through IMAP NOTIFY (and STATUS polling
//! when it is switched off), and Status 7 when the folder hierarchy
//! changes on the IMAP side (before the Ping or while it is parked; at once
//! where NOTIFY reports folder events).
//!
//! Reserved Dovecot users: load0021–load0026, load0061–load0064, load0071–load0072, load0082 (load0027 is http_ping's, load0028 imap_backend's, load0029 http_ping's). Waits are bounded so a broken
//! hub fails the test instead of hanging it; they assert behaviour, not speed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;

use std::sync::Arc;
use std::time::Duration;

use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest};
use opush_protocol::commands::ping::{PingFolder, PingRequest, PingResponse};
use opush_protocol::commands::sync::{SyncCollectionRequest, SyncRequest};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_server::backends::imap::ImapPool;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::ping::ping;
use opush_server::commands::sync::sync;
use opush_server::config::ImapConfig;
use opush_server::push::{PushHub, PushSettings, WatcherKind};
use opush_server::session::EasServices;
use opush_tests::{repo_root, unique, PrivateDovecot, RawImap};

const V: ProtocolVersion = ProtocolVersion::V14_1;

/// The stack's services with test-sized push settings and heartbeats from 1 s.
async fn services(dir: &tempfile::TempDir, imap: Option<ImapConfig>) -> Arc<EasServices> {
    services_with(dir, imap, |_| {}).await
}

/// Like [`services`], with `tune` applied to the push settings.
async fn services_with(
    dir: &tempfile::TempDir,
    imap: Option<ImapConfig>,
    tune: impl FnOnce(&mut PushSettings),
) -> Arc<EasServices> {
    let mut eas = eas_support::services(dir).await;
    let imap = imap.unwrap_or_else(|| eas.imap.config().clone());
    eas.imap = Arc::new(ImapPool::new(imap.clone()));
    eas.engine.min_heartbeat = 1;
    let mut settings = PushSettings {
        poll_interval: Duration::from_secs(1),
        linger: Duration::from_millis(500),
        reconnect_max: Duration::from_secs(2),
        ..PushSettings::default()
    };
    tune(&mut settings);
    eas.push = PushHub::new(settings, imap);
    Arc::new(eas)
}

fn message(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.test>\r\nTo: Dest <dest@load.test>\r\nSubject: {subject}\r\n\
Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nbody\r\n"
    )
}

fn append(imap: &mut RawImap, mailbox: &str, subject: &str) {
    let msg = message(subject);
    let (_, ok) = imap.cmd(&format!("APPEND {mailbox} {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

fn empty(imap: &mut RawImap, mailbox: &str) {
    let (_, ok) = imap.cmd(&format!("SELECT {mailbox}"));
    assert!(ok.starts_with("OK"), "{ok}");
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    imap.cmd("UNSELECT");
}

/// FolderSync, then Sync every named folder to its end; returns their ids.
async fn prepare(eas: &EasServices, user: &str, device: &str, names: &[&str]) -> Vec<String> {
    let fs = folder_sync(
        &FolderSyncRequest {
            sync_key: SyncKey("0".to_owned()),
        },
        &eas_support::caller(user, device),
        eas,
    )
    .await
    .unwrap();
    let adds: Vec<_> = fs
        .changes
        .unwrap()
        .into_iter()
        .filter_map(|c| match c {
            FolderChange::Add(f) => Some(f),
            _ => None,
        })
        .collect();
    let mut ids = Vec::new();
    for name in names {
        let id = adds
            .iter()
            .find(|f| {
                if *name == "INBOX" {
                    f.folder_type == 2
                } else {
                    f.display_name == *name
                }
            })
            .unwrap_or_else(|| panic!("{name} not in the hierarchy"))
            .server_id
            .0
            .clone();
        let mut key = "0".to_owned();
        for _ in 0..20 {
            let req = SyncRequest {
                collections: vec![SyncCollectionRequest {
                    sync_key: SyncKey(key.clone()),
                    collection_id: CollectionId(id.clone()),
                    window_size: Some(100),
                    ..SyncCollectionRequest::default()
                }],
                ..SyncRequest::default()
            };
            let mut res = sync(&req, V, &eas_support::caller(user, device), eas)
                .await
                .unwrap();
            let c = res.collections.remove(0);
            assert_eq!(c.status.map(|s| s.code()), Some(1));
            let more = c.more_available || key == "0";
            key = c.sync_key.0;
            if !more {
                break;
            }
        }
        ids.push(id);
    }
    ids
}

fn request(heartbeat: Option<u32>, folders: &[&str]) -> PingRequest {
    PingRequest {
        heartbeat_interval: heartbeat,
        folders: (!folders.is_empty()).then(|| {
            folders
                .iter()
                .map(|f| PingFolder {
                    id: CollectionId((*f).to_owned()),
                    class: "Email".to_owned(),
                })
                .collect()
        }),
    }
}

type Answer = tokio::task::JoinHandle<PingResponse>;

fn spawn_ping(eas: &Arc<EasServices>, user: &str, device: &str, req: PingRequest) -> Answer {
    let (eas, user, device) = (eas.clone(), user.to_owned(), device.to_owned());
    tokio::spawn(async move {
        ping(&req, &eas_support::caller(&user, &device), &eas, || {})
            .await
            .unwrap()
    })
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..300 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

async fn answer(a: Answer) -> PingResponse {
    tokio::time::timeout(Duration::from_secs(30), a)
        .await
        .expect("Ping answered within 30 s")
        .unwrap()
}

fn ids(res: &PingResponse) -> Vec<&str> {
    res.folders.iter().map(|f| f.0.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_message_in_inbox_answers_a_parked_ping() {
    let user = "load0021@load.test";
    let mut raw = RawImap::login(user);
    empty(&mut raw, "INBOX");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir, None).await;
    let inbox = prepare(&eas, user, "PING1", &["INBOX"]).await.remove(0);

    let parked = spawn_ping(&eas, user, "PING1", request(Some(300), &[&inbox]));
    wait_until("the Ping parks", || eas.push.parked_count() == 1).await;
    assert!(!parked.is_finished());
    // The parked-Ping gauge of /metrics counts it (other tests may park too).
    let gauge = || {
        let text = opush_server::obs::metrics::render();
        text.lines()
            .find_map(|l| l.strip_prefix("opush_parked_pings ")?.parse::<i64>().ok())
            .unwrap_or(0)
    };
    wait_until("the gauge counts the Ping", || gauge() >= 1).await;
    append(&mut raw, "INBOX", &unique("ping-inbox"));
    let res = answer(parked).await;
    assert_eq!(res.status.code(), 2);
    assert_eq!(ids(&res), vec![inbox.as_str()]);

    // Not synced yet: an empty Ping (remembered folders) answers at once.
    let again = answer(spawn_ping(&eas, user, "PING1", PingRequest::default())).await;
    assert_eq!(again.status.code(), 2);
    assert_eq!(eas.push.parked_count(), 0);

    // The watcher closes once nobody listens.
    wait_until("the watcher closes", || eas.push.watcher_count() == 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_in_a_subfolder_is_reported_for_that_folder_only() {
    let user = "load0022@load.test";
    let mut raw = RawImap::login(user);
    raw.cmd("CREATE ping-sub");
    raw.cmd("SUBSCRIBE ping-sub");
    empty(&mut raw, "INBOX");
    empty(&mut raw, "ping-sub");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir, None).await;
    let ids_ = prepare(&eas, user, "PING2", &["INBOX", "ping-sub"]).await;
    let (inbox, sub) = (&ids_[0], &ids_[1]);

    // Two folders: the watcher polls STATUS (1 s in this test).
    let parked = spawn_ping(&eas, user, "PING2", request(Some(300), &[inbox, sub]));
    wait_until("the Ping parks", || eas.push.parked_count() == 1).await;
    append(&mut raw, "ping-sub", &unique("ping-sub"));
    let res = answer(parked).await;
    assert_eq!(res.status.code(), 2);
    assert_eq!(ids(&res), vec![sub.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_expiry_bounds_and_remembered_parameters() {
    let user = "load0023@load.test";
    let mut raw = RawImap::login(user);
    empty(&mut raw, "INBOX");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir, None).await;
    let inbox = prepare(&eas, user, "PING3", &["INBOX"]).await.remove(0);

    // Out of bounds: Status 5 with the bound.
    let low = answer(spawn_ping(&eas, user, "PING3", request(Some(0), &[&inbox]))).await;
    assert_eq!(low.status.code(), 5);
    assert_eq!(low.heartbeat_interval, Some(1));
    let high = answer(spawn_ping(
        &eas,
        user,
        "PING3",
        request(Some(5000), &[&inbox]),
    ))
    .await;
    assert_eq!(high.status.code(), 5);
    assert_eq!(high.heartbeat_interval, Some(3540));
    // Nothing remembered yet: Status 3.
    let missing = answer(spawn_ping(&eas, user, "PING3", PingRequest::default())).await;
    assert_eq!(missing.status.code(), 3);
    // An unknown folder: FolderSync first.
    let unknown = answer(spawn_ping(&eas, user, "PING3", request(Some(2), &["999"]))).await;
    assert_eq!(unknown.status.code(), 7);

    // No change: Status 1 when the heartbeat ends, not before.
    let started = std::time::Instant::now();
    let res = answer(spawn_ping(&eas, user, "PING3", request(Some(2), &[&inbox]))).await;
    assert_eq!(res.status.code(), 1);
    assert!(started.elapsed() >= Duration::from_secs(2));
    // The empty Ping reuses heartbeat and folders.
    let started = std::time::Instant::now();
    let res = answer(spawn_ping(&eas, user, "PING3", PingRequest::default())).await;
    assert_eq!(res.status.code(), 1);
    assert!(started.elapsed() >= Duration::from_secs(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_devices_of_one_user_share_one_watcher() {
    let user = "load0024@load.test";
    let mut raw = RawImap::login(user);
    empty(&mut raw, "INBOX");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir, None).await;
    let a = prepare(&eas, user, "PING4A", &["INBOX"]).await.remove(0);
    let b = prepare(&eas, user, "PING4B", &["INBOX"]).await.remove(0);

    let pa = spawn_ping(&eas, user, "PING4A", request(Some(300), &[&a]));
    let pb = spawn_ping(&eas, user, "PING4B", request(Some(300), &[&b]));
    // A Ping counts as parked just before it subscribes: wait for both
    // subscriptions rather than assume they follow at once.
    wait_until("both Pings park", || eas.push.parked_count() == 2).await;
    wait_until("both Pings subscribe", || {
        eas.push.watcher(user).is_some_and(|w| w.subscribers() == 2)
    })
    .await;
    assert_eq!(eas.push.watcher_count(), 1);
    append(&mut raw, "INBOX", &unique("ping-two"));
    let (ra, rb) = (answer(pa).await, answer(pb).await);
    assert_eq!((ra.status.code(), rb.status.code()), (2, 2));
    assert_eq!(ids(&ra), vec![a.as_str()]);
    assert_eq!(ids(&rb), vec![b.as_str()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_request_of_the_device_ends_its_parked_ping() {
    let user = "load0025@load.test";
    let mut raw = RawImap::login(user);
    empty(&mut raw, "INBOX");
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir, None).await;
    let inbox = prepare(&eas, user, "PING5", &["INBOX"]).await.remove(0);

    let first = spawn_ping(&eas, user, "PING5", request(Some(300), &[&inbox]));
    wait_until("the first Ping parks", || eas.push.parked_count() == 1).await;
    let second = spawn_ping(&eas, user, "PING5", PingRequest::default());
    let res = answer(first).await;
    assert_eq!(res.status.code(), 1);
    wait_until("the second Ping parks", || eas.push.parked_count() == 1).await;
    assert!(!second.is_finished());
    // Any other command (the dispatcher calls this) ends it too.
    eas.push.supersede(user, "PING5");
    assert_eq!(answer(second).await.status.code(), 1);
    assert_eq!(eas.push.parked_count(), 0);
}

/// The IMAP settings of the stack, pointed at a private Dovecot.
async fn private_imap(dovecot: &PrivateDovecot) -> ImapConfig {
    let dir = tempfile::tempdir().unwrap();
    ImapConfig {
        port: dovecot.port,
        timeout_ms: 5_000,
        ..eas_support::services(&dir).await.imap.config().clone()
    }
}

/// Empties `user`'s INBOX on `imap`, then `device` parks a Ping on it and
/// the user's watcher connects: the parked Ping, the watcher, the INBOX id.
async fn park_on_empty_inbox(
    eas: &Arc<EasServices>,
    imap: &ImapConfig,
    user: &str,
    device: &str,
) -> (Answer, Arc<opush_server::push::UserWatch>, String) {
    let mut s = opush_server::backends::imap::ImapClient::login_master(imap, user)
        .await
        .unwrap();
    s.empty_folder("INBOX").await.unwrap();
    s.logout().await;
    let inbox = prepare(eas, user, device, &["INBOX"]).await.remove(0);
    let parked = spawn_ping(eas, user, device, request(Some(120), &[&inbox]));
    wait_until("the Ping parks", || eas.push.parked_count() == 1).await;
    let watcher = eas.push.watcher(user).unwrap();
    wait_until("the watcher connects", || watcher.connected()).await;
    (parked, watcher, inbox)
}

/// A new message straight into `local`'s INBOX maildir on the private
/// Dovecot (works while it is down).
fn deliver_to_maildir(dovecot: &PrivateDovecot, local: &str, subject: &str) {
    let new = dovecot.dir.join(format!("mail/load.test/{local}/new"));
    std::fs::create_dir_all(&new).unwrap();
    let subject = unique(subject);
    std::fs::write(new.join(format!("{subject}.opush-test")), message(&subject)).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_made_while_imap_is_down_is_reported_after_reconnection() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let user = "load0026@load.test";
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/ping-private-dovecot"), 11520);
    dovecot.run("up");
    let imap = private_imap(&dovecot).await;
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir, Some(imap.clone())).await;
    let (parked, watcher, inbox) = park_on_empty_inbox(&eas, &imap, user, "PING6").await;

    dovecot.run("down");
    wait_until("the watcher notices", || !watcher.connected()).await;
    // Deliver straight into the maildir while the server is down.
    deliver_to_maildir(&dovecot, "load0026", "ping-outage");
    assert!(!parked.is_finished(), "the Ping waits through the outage");
    dovecot.run("up");
    let res = answer(parked).await;
    assert_eq!(res.status.code(), 2);
    assert_eq!(ids(&res), vec![inbox.as_str()]);
}

// A server going down says BYE to every session and may still accept a
// login for a moment (a session that then outlives it). A watcher whose
// connection the server ended pauses (`[push]` reconnect backoff) before it
// logs in again, then carries on: the parked Ping still hears of a change.
// Private Dovecot on port 11641, user load0082.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_the_server_disconnects_pauses_before_it_logs_in_again() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let user = "load0082@load.test";
    let dovecot = PrivateDovecot::new(
        repo_root().join("target/tmp/ping-kick-private-dovecot"),
        11641,
    );
    dovecot.run("up");
    let imap = private_imap(&dovecot).await;
    let dir = tempfile::tempdir().unwrap();
    let eas = services_with(&dir, Some(imap.clone()), |s| {
        s.reconnect_min = Duration::from_secs(3);
        s.reconnect_max = Duration::from_secs(3);
    })
    .await;
    let (parked, watcher, inbox) = park_on_empty_inbox(&eas, &imap, user, "KICK1").await;
    assert_eq!(watcher.logins(), 1);

    dovecot.run("kick");
    wait_until("the watcher notices", || {
        !watcher.connected() || watcher.logins() > 1
    })
    .await;
    // Well within the 3 s pause: no new login yet.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(watcher.logins(), 1, "the watcher logged in again at once");
    assert!(!parked.is_finished());

    wait_until("the watcher reconnects", || watcher.connected()).await;
    deliver_to_maildir(&dovecot, "load0082", "ping-kick");
    let res = answer(parked).await;
    assert_eq!(res.status.code(), 2);
    assert_eq!(ids(&res), vec![inbox.as_str()]);
}

/// Creates (and subscribes) `names`, emptied, for `user`.
fn folders(raw: &mut RawImap, names: &[&str]) {
    for name in names {
        raw.cmd(&format!("CREATE {name}"));
        raw.cmd(&format!("SUBSCRIBE {name}"));
        empty(raw, name);
    }
}

/// Deletes `name` if it exists (a previous run may have left it).
fn delete(raw: &mut RawImap, name: &str) {
    raw.cmd(&format!("UNSUBSCRIBE {name}"));
    raw.cmd(&format!("DELETE {name}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_folders_are_watched_through_notify() {
    let user = "load0061@load.test";
    let mut raw = RawImap::login(user);
    let (_, caps) = raw.cmd("CAPABILITY");
    empty(&mut raw, "INBOX");
    folders(&mut raw, &["notify-a", "notify-b", "notify-c"]);
    let dir = tempfile::tempdir().unwrap();
    // Polling every hour: only a notification can answer within the test.
    let eas = services_with(&dir, None, |s| s.poll_interval = Duration::from_secs(3600)).await;
    let ids_ = prepare(
        &eas,
        user,
        "NOTIFY1",
        &["INBOX", "notify-a", "notify-b", "notify-c"],
    )
    .await;
    let armed: Vec<&str> = ids_.iter().map(String::as_str).collect();
    let parked = spawn_ping(&eas, user, "NOTIFY1", request(Some(300), &armed));
    wait_until("the Ping subscribes", || {
        eas.push.watcher(user).is_some_and(|w| w.subscribers() == 1)
    })
    .await;
    let watcher = eas.push.watcher(user).unwrap();
    wait_until("the watcher waits", || {
        watcher.kind() != WatcherKind::Starting
    })
    .await;
    assert_eq!(
        watcher.kind(),
        WatcherKind::Notify,
        "the stack's Dovecot advertises NOTIFY ({caps})"
    );
    append(&mut raw, "notify-b", &unique("notify-b"));
    let res = answer(parked).await;
    assert_eq!(res.status.code(), 2);
    assert_eq!(ids(&res), vec![ids_[2].as_str()]);
    assert_eq!(watcher.kind(), WatcherKind::Notify);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_switched_off_falls_back_to_status_polling() {
    let user = "load0062@load.test";
    let mut raw = RawImap::login(user);
    empty(&mut raw, "INBOX");
    folders(&mut raw, &["poll-a"]);
    let dir = tempfile::tempdir().unwrap();
    let eas = services_with(&dir, None, |s| s.use_notify = false).await;
    let ids_ = prepare(&eas, user, "NOTIFY2", &["INBOX", "poll-a"]).await;
    let parked = spawn_ping(
        &eas,
        user,
        "NOTIFY2",
        request(Some(300), &[&ids_[0], &ids_[1]]),
    );
    wait_until("the Ping subscribes", || {
        eas.push.watcher(user).is_some_and(|w| w.subscribers() == 1)
    })
    .await;
    let watcher = eas.push.watcher(user).unwrap();
    wait_until("the watcher waits", || {
        watcher.kind() != WatcherKind::Starting
    })
    .await;
    assert_eq!(watcher.kind(), WatcherKind::Poll);
    append(&mut raw, "poll-a", &unique("poll-a"));
    let res = answer(parked).await;
    assert_eq!(res.status.code(), 2);
    assert_eq!(ids(&res), vec![ids_[1].as_str()]);
}

// [MS-ASCMD] 2.2.3.177.11 Ping Status 7: the folder hierarchy is out of date.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_created_or_deleted_on_the_imap_side_answers_status_7() {
    let user = "load0063@load.test";
    let mut raw = RawImap::login(user);
    empty(&mut raw, "INBOX");
    delete(&mut raw, "tree-new");
    folders(&mut raw, &["tree-old"]);
    let dir = tempfile::tempdir().unwrap();
    // The single-folder watcher IDLEs and lists the folders every second.
    let eas = services_with(&dir, None, |s| s.hierarchy_check = Duration::from_secs(1)).await;
    let inbox = prepare(&eas, user, "TREE1", &["INBOX"]).await.remove(0);

    // Created while parked.
    let parked = spawn_ping(&eas, user, "TREE1", request(Some(300), &[&inbox]));
    wait_until("the Ping subscribes", || {
        eas.push.watcher(user).is_some_and(|w| w.subscribers() == 1)
    })
    .await;
    folders(&mut raw, &["tree-new"]);
    assert_eq!(answer(parked).await.status.code(), 7);
    // Until the device runs FolderSync, every Ping says so at once.
    let again = answer(spawn_ping(&eas, user, "TREE1", PingRequest::default())).await;
    assert_eq!(again.status.code(), 7);

    // After a FolderSync the Ping parks again; a deletion ends it with 7.
    let inbox = prepare(&eas, user, "TREE1", &["INBOX"]).await.remove(0);
    let parked = spawn_ping(&eas, user, "TREE1", request(Some(300), &[&inbox]));
    wait_until("the Ping subscribes", || {
        eas.push.watcher(user).is_some_and(|w| w.subscribers() == 1)
    })
    .await;
    assert!(!parked.is_finished());
    delete(&mut raw, "tree-old");
    assert_eq!(answer(parked).await.status.code(), 7);
}

// [MS-ASCMD] 2.2.3.177.11: a Ping on a folder no longer in the hierarchy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_on_a_folder_deleted_before_it_answers_status_7() {
    let user = "load0064@load.test";
    let mut raw = RawImap::login(user);
    empty(&mut raw, "INBOX");
    folders(&mut raw, &["gone-sub"]);
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir, None).await;
    let ids_ = prepare(&eas, user, "TREE2", &["INBOX", "gone-sub"]).await;
    delete(&mut raw, "gone-sub");
    let res = answer(spawn_ping(
        &eas,
        user,
        "TREE2",
        request(Some(300), &[&ids_[1]]),
    ))
    .await;
    assert_eq!(res.status.code(), 7);
    assert_eq!(eas.push.parked_count(), 0);
}

// [MS-ASCMD] 2.2.3.177.11 Ping Status 7 as soon as the server says a folder
// appeared: NOTIFY with the personal namespace's folder events, for a
// single-folder watcher with `[push] notify_hierarchy` and for every
// several-folder watcher. The hierarchy check (the LIST fallback) and
// STATUS polling are an hour apart here, so only a notification answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_created_while_parked_answers_status_7_at_once_through_notify() {
    for (user, device, names, single) in [
        ("load0071@load.test", "TREE71", &["INBOX"][..], true),
        (
            "load0072@load.test",
            "TREE72",
            &["INBOX", "late-sub"][..],
            false,
        ),
    ] {
        let mut raw = RawImap::login(user);
        empty(&mut raw, "INBOX");
        delete(&mut raw, "late-new");
        if !single {
            folders(&mut raw, &["late-sub"]);
        }
        let dir = tempfile::tempdir().unwrap();
        let eas = services_with(&dir, None, |s| {
            s.hierarchy_check = Duration::from_secs(3600);
            s.poll_interval = Duration::from_secs(3600);
            s.notify_hierarchy = single;
        })
        .await;
        let park = |ids_: &[String]| {
            let armed: Vec<&str> = ids_.iter().map(String::as_str).collect();
            spawn_ping(&eas, user, device, request(Some(300), &armed))
        };
        let ids_ = prepare(&eas, user, device, names).await;
        let parked = park(&ids_);
        wait_until("the Ping subscribes", || {
            eas.push.watcher(user).is_some_and(|w| w.subscribers() == 1)
        })
        .await;
        let watcher = eas.push.watcher(user).unwrap();
        wait_until("the watcher waits", || {
            watcher.kind() != WatcherKind::Starting
        })
        .await;
        assert_eq!(watcher.kind(), WatcherKind::Notify, "{user}");
        folders(&mut raw, &["late-new"]);
        assert_eq!(answer(parked).await.status.code(), 7, "{user}");

        // After a FolderSync, the same NOTIFY still reports messages.
        let ids_ = prepare(&eas, user, device, names).await;
        let parked = park(&ids_);
        wait_until("the Ping parks", || eas.push.parked_count() == 1).await;
        append(&mut raw, "INBOX", &unique("late"));
        let res = answer(parked).await;
        assert_eq!(res.status.code(), 2, "{user}");
        assert_eq!(ids(&res), vec![ids_[0].as_str()], "{user}");
        delete(&mut raw, "late-new");
    }
}
