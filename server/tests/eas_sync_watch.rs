//! `[push] sync_watch_s`: a caught-up device's no-change Sync is answered
//! from the user's push watcher, with no IMAP round trip, and still sees
//! every change: another client's once the IMAP server has told the
//! watcher, and opush's own (another device of the user marking a message
//! read) in the very next Sync, before the server tells the watcher
//! anything (Dovecot holds its IDLE news for about half a second).
//!
//! Against the real Dovecot. The watcher is the hub's own IMAP connection;
//! the no-change Syncs are counted by `opush_folders_from_watcher_total`
//! and by the pool's STATUS, SELECT and lending counters (they borrow no
//! pooled connection).
//!
//! A Ping of such a folder reads no STATUS: it starts from the watcher's
//! figures and is woken by the next change.
//!
//! Reserved Dovecot users: load1296.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, sync_req};

use std::time::{Duration, Instant};

use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::ping::{PingFolder, PingRequest};
use opush_protocol::commands::sync::{ClientCommand, SyncCollectionResponse};
use opush_protocol::commands::{CollectionId, ServerId};
use opush_protocol::status::PingStatus;
use opush_server::commands::ping::ping;
use opush_server::obs::metrics::folders_from_watcher;
use opush_server::push::{PushHub, PushSettings};
use opush_server::session::EasServices;
use opush_tests::{require, unique, RawImap, DOVECOT_IMAP};

const USER: &str = "load1296@load.test";

use eas_support::DeviceFolder as Device;

async fn services(dir: &tempfile::TempDir) -> EasServices {
    let mut eas = eas_support::services(dir).await;
    let settings = PushSettings {
        sync_watch: Duration::from_secs(300),
        linger: Duration::from_millis(500),
        ..PushSettings::default()
    };
    eas.engine.min_heartbeat = 1;
    eas.push = PushHub::new(settings, eas.imap.config().clone());
    eas
}

async fn one(eas: &EasServices, device: &str, inbox: &str, key: &str) -> SyncCollectionResponse {
    eas_support::sync_one(eas, &caller(USER, device), &sync_req(inbox, key)).await
}

/// FolderSync and Sync INBOX to its end; the device and its last key.
async fn catch_up(eas: &EasServices, device_id: &str) -> (String, Device, String) {
    let inbox = first_folder_sync(eas, &caller(USER, device_id))
        .await
        .of_type(2);
    let mut device = Device::default();
    let mut key = one(eas, device_id, &inbox, "0").await.sync_key.0;
    for _ in 0..10 {
        let r = one(eas, device_id, &inbox, &key).await;
        device.apply(&r);
        key = r.sync_key.0.clone();
        if !r.more_available {
            return (inbox, device, key);
        }
    }
    panic!("the initial sync does not end");
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// Syncs until an answer carries something (within 10 s: the watcher hears
/// of another client's change within about half a second on Dovecot).
async fn until_news(
    eas: &EasServices,
    (device_id, inbox): (&str, &str),
    key: &mut String,
    device: &mut Device,
) -> (usize, usize, usize) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(10) {
        let r = one(eas, device_id, inbox, key).await;
        *key = r.sync_key.0.clone();
        let n = device.apply(&r);
        if n != (0, 0, 0) {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no change reached the device within 10 s");
}

/// Once the user's watcher waits again, one no-change Sync of DEVWATCHA:
/// answered by the watcher, nothing in it; the next key.
async fn answered_by_watcher(
    eas: &EasServices,
    inbox: &str,
    key: &str,
    device: &mut Device,
) -> String {
    wait_until("the watcher waits", || {
        eas.push.watcher(USER).is_some_and(|w| w.settled())
    })
    .await;
    let from_watcher = folders_from_watcher();
    let r = one(eas, "DEVWATCHA", inbox, key).await;
    assert_eq!(device.apply(&r), (0, 0, 0), "{r:?}");
    assert!(
        folders_from_watcher() > from_watcher,
        "not from the watcher"
    );
    r.sync_key.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caught_up_syncs_are_answered_by_the_watcher_and_see_every_change() {
    require(DOVECOT_IMAP);
    let tag = unique("sw");
    let mut raw = RawImap::login(USER);
    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    let m = |i: u32| format!("{tag} m{i:02}");
    for i in 0..5 {
        raw.append_to_inbox(&m(i));
    }
    raw.ok("UNSELECT");

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let (inbox, mut a, mut key_a) = catch_up(&eas, "DEVWATCHA").await;
    let (_, mut b, key_b) = catch_up(&eas, "DEVWATCHB").await;
    assert_eq!(a.items.len(), 5);
    assert_eq!(b.items.len(), 5);
    wait_until("the user's watcher waits on INBOX", || {
        eas.push.watcher(USER).is_some_and(|w| w.settled())
    })
    .await;

    // Caught up: no-change Syncs, none of them asking IMAP, nor borrowing
    // a connection from the pool.
    let from_watcher = folders_from_watcher();
    let costs = (eas.imap.statuses(), eas.imap.mailbox_opens());
    let lends = eas.imap.lends();
    for _ in 0..10 {
        let r = one(&eas, "DEVWATCHA", &inbox, &key_a).await;
        assert_eq!(a.apply(&r), (0, 0, 0), "{r:?}");
        key_a = r.sync_key.0;
    }
    assert!(
        folders_from_watcher() >= from_watcher + 10,
        "10 no-change Syncs answered by the watcher: {} counted",
        folders_from_watcher() - from_watcher
    );
    assert_eq!((eas.imap.statuses(), eas.imap.mailbox_opens()), costs);
    assert_eq!(eas.imap.lends(), lends, "a pooled connection was borrowed");

    // Another client's changes reach the device, each once.
    raw.append_to_inbox(&format!("{tag} new"));
    let n = until_news(&eas, ("DEVWATCHA", &inbox), &mut key_a, &mut a).await;
    assert_eq!(n, (1, 0, 0));
    assert_eq!(a.shown(&format!("{tag} new")).map(|s| s.read), Some(false));
    raw.ok("SELECT INBOX");
    let u = raw.inbox_uid(&m(1));
    raw.ok(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
    raw.ok(&format!("UID EXPUNGE {u}"));
    raw.ok("UNSELECT");
    let n = until_news(&eas, ("DEVWATCHA", &inbox), &mut key_a, &mut a).await;
    assert_eq!(n, (0, 0, 1));
    assert_eq!(a.shown(&m(1)).map(|s| s.read), None);
    assert_eq!(a.items.len(), 5);

    // Quiet again: back to the watcher.
    key_a = answered_by_watcher(&eas, &inbox, &key_a, &mut a).await;

    // opush's own change: the other device marks m02 read. The next Sync
    // of this device carries it, before Dovecot has told the watcher.
    let sid = b.id_of(&m(2));
    let mut req = sync_req(&inbox, &key_b);
    req.collections[0].commands = Some(vec![ClientCommand::Change {
        class: None,
        server_id: ServerId(sid),
        application_data: ApplicationData::Email(Box::new(Email {
            read: Some(true),
            ..Email::default()
        })),
    }]);
    let r = eas_support::sync_one(&eas, &caller(USER, "DEVWATCHB"), &req).await;
    b.apply(&r);
    let r = one(&eas, "DEVWATCHA", &inbox, &key_a).await;
    assert_eq!(
        a.apply(&r),
        (0, 1, 0),
        "the other device's change, in the next Sync: {r:?}"
    );
    assert_eq!(a.shown(&m(2)).map(|s| s.read), Some(true));
    // A lost answer: the same key answers the same.
    let again = one(&eas, "DEVWATCHA", &inbox, &key_a).await;
    assert_eq!(again, r, "a retried SyncKey answers the same");
    key_a = r.sync_key.0.clone();

    // And the watcher takes over again once it read the change.
    key_a = answered_by_watcher(&eas, &inbox, &key_a, &mut a).await;
    assert_eq!(a.items.len(), 5);

    // A Ping of the caught-up folder reads no STATUS either: it starts from
    // the watcher's figures, and the next change wakes it.
    let costs = (eas.imap.statuses(), eas.imap.mailbox_opens());
    let from_watcher = folders_from_watcher();
    let req = PingRequest {
        heartbeat_interval: Some(60),
        folders: Some(vec![PingFolder {
            id: CollectionId(inbox.clone()),
            class: "Email".to_owned(),
        }]),
    };
    let who = caller(USER, "DEVWATCHA");
    let pinged = ping(&req, &who, &eas, || {});
    let poke = async {
        wait_until("the Ping parks", || eas.push.parked_count() == 1).await;
        assert_eq!(
            (eas.imap.statuses(), eas.imap.mailbox_opens()),
            costs,
            "(STATUS, SELECT) of a Ping whose folder the watcher has"
        );
        assert!(folders_from_watcher() > from_watcher);
        raw.append_to_inbox(&format!("{tag} pinged"));
    };
    let (answer, ()) = tokio::join!(
        async { tokio::time::timeout(Duration::from_secs(30), pinged).await },
        poke
    );
    let answer = answer.expect("the Ping answered within 30 s").unwrap();
    assert_eq!(answer.status, PingStatus::ChangesOccurred, "{answer:?}");
    assert_eq!(answer.folders, vec![CollectionId(inbox.clone())]);
    let r = one(&eas, "DEVWATCHA", &inbox, &key_a).await;
    assert_eq!(a.apply(&r), (1, 0, 0), "{r:?}");

    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
}
