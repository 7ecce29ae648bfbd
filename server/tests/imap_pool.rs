//! The IMAP pool's bounds against the real Dovecot of `scripts/stack`
//! (127.0.0.1:1143): a warm pool under steady load logs in no more, the
//! global cap closes the oldest idle connection of another user, a
//! cancelled command's connection is not reused, and the Basic-auth
//! verifier's session is adopted by the pool, and a read-ahead grows the pool at once,
//! two read-aheads side by side; a request that names its folders gets the idle
//! connection that has one of them selected.
//!
//! Read-aheads that ask while connections opened ahead for them are logging in wait
//! for those logins.
//!
//! A folder another client deletes makes each idle connection that has it
//! selected stale: the first that fails closes the others.
//!
//! Users reserved for this file: load0081–load0085, load0094, load0098, load0060, load0079, load1312 (each test its own
//! pool, so counts are this test's alone). A missing Dovecot fails the tests.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use opush_protocol::headers::{Login, Password};
use opush_server::backends::imap::ImapPool;
use opush_server::config::{Config, ImapConfig, Secret};
use opush_server::http::auth::{CredentialVerifier, Verdict};
use opush_server::http::imap_login::ImapLoginVerifier;

fn password() -> Secret {
    Secret::new(opush_tests::demo_password())
}

fn cfg() -> ImapConfig {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let mut c = Config::default().imap;
    c.timeout_ms = 20_000;
    c
}

#[tokio::test]
async fn a_warm_pool_under_steady_load_logs_in_no_more() {
    const USER: &str = "load0081@load.test";
    let mut c = cfg();
    c.pool_size = 4;
    let pool = ImapPool::new(c);
    // Three requests of the user at a time, each holding its connection
    // for a STATUS, as no-change Syncs do.
    let round = |pool: ImapPool| async move {
        let workers: Vec<_> = (0..3)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    for _ in 0..40 {
                        let mut s = pool.get(USER, &password()).await.unwrap();
                        s.status("INBOX").await.unwrap();
                    }
                })
            })
            .collect();
        for w in workers {
            w.await.unwrap();
        }
    };
    // A background login the pool started to grow may still be under way
    // when the last request ends: every connection is back (idle) once it
    // lands. Bounded wait; nothing is decided by timing.
    let settled = |pool: ImapPool| async move {
        for _ in 0..400 {
            if pool.open_count(USER) == pool.idle_count(USER) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(
            pool.open_count(USER),
            pool.idle_count(USER),
            "a connection never came back"
        );
    };
    round(pool.clone()).await;
    settled(pool.clone()).await;
    let warm = pool.logins();
    assert!(
        (1..=3).contains(&warm),
        "{warm} logins for 3 concurrent requests"
    );
    // The same load again: served by the connections already open, growing
    // at most to the concurrency (3), never logging in and out per request.
    round(pool.clone()).await;
    settled(pool.clone()).await;
    assert!(
        pool.logins() <= 3,
        "{} logins for 3 concurrent requests over 240 (warm: {warm})",
        pool.logins()
    );
    assert!(pool.open_count(USER) <= 3);
}

#[tokio::test]
async fn the_global_cap_closes_the_oldest_idle_connection_of_another_user() {
    const A: &str = "load0082@load.test";
    const B: &str = "load0083@load.test";
    let mut c = cfg();
    c.pool_size = 2;
    c.max_connections = 2;
    c.pool_grow_after_ms = 0;
    let pool = ImapPool::new(c);
    let a1 = pool.get(A, &password()).await.unwrap();
    let a2 = pool.get(A, &password()).await.unwrap();
    // Both of A's in use, cap reached: B waits…
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move {
            let mut b = pool.get(B, &password()).await.unwrap();
            b.noop().await.unwrap();
            b
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiting.is_finished(), "B got a connection past the cap");
    assert_eq!(pool.open_total(), 2);
    // …until one of A's goes idle: it is closed to make room for B.
    drop(a1);
    let b = tokio::time::timeout(Duration::from_secs(20), waiting)
        .await
        .expect("B served once A's connection was idle")
        .unwrap();
    assert_eq!((pool.idle_count(A), pool.open_count(A)), (0, 1));
    assert_eq!(pool.open_total(), 2);
    drop((a2, b));
    assert_eq!((pool.idle_count(A), pool.idle_count(B)), (1, 1));
    // With both idle, a third user takes the place of the older (A's).
    let _c = pool.get("load0081@load.test", &password()).await.unwrap();
    assert_eq!((pool.idle_count(A), pool.idle_count(B)), (0, 1));
    assert_eq!(pool.open_total(), 2);
}

#[tokio::test]
async fn a_connection_whose_command_was_cancelled_is_not_reused() {
    const USER: &str = "load0084@load.test";
    let pool = ImapPool::new(cfg());
    let mut s = pool.get(USER, &password()).await.unwrap();
    s.noop().await.unwrap();
    // The request goes away while STATUS is on the wire: its reply would
    // be read by the next user of the connection.
    // (Polled once: the command is written, the reply not yet read.)
    let cancelled = s.status("INBOX").now_or_never();
    assert!(cancelled.is_none(), "STATUS answered on its first poll");
    assert!(!s.is_usable());
    drop(s);
    assert_eq!((pool.idle_count(USER), pool.open_count(USER)), (0, 0));
    // The next request gets a fresh, working connection.
    let mut s = pool.get(USER, &password()).await.unwrap();
    s.status("INBOX").await.unwrap();
    assert_eq!(pool.logins(), 2);
}

#[tokio::test]
async fn the_verifiers_session_is_adopted_by_the_pool() {
    const USER: &str = "load0085@load.test";
    let pool = Arc::new(ImapPool::new(cfg()));
    let verifier = ImapLoginVerifier::with_pool(pool.clone());
    let login = Login::parse(USER);
    let verdict = verifier
        .verify(&login, &Password::new(opush_tests::demo_password()))
        .await
        .unwrap();
    assert_eq!(verdict, Verdict::Accepted);
    assert_eq!(
        pool.idle_count(USER),
        1,
        "the checked session waits in the pool"
    );
    let mut s = pool.get(USER, &password()).await.unwrap();
    s.noop().await.unwrap();
    assert_eq!(
        pool.logins(),
        0,
        "the request used the verifier's connection"
    );
    drop(s);
    // A wrong password is refused and leaves nothing behind.
    let verdict = verifier
        .verify(&login, &Password::new("wrong"))
        .await
        .unwrap();
    assert_eq!(verdict, Verdict::Rejected);
    assert_eq!(pool.open_count(USER), 1);
}

/// A pool configuration of `pool_size` whose requests never grow the pool
/// (they would wait for a busy session longer than the 5 s timeout), once
/// `user` has logged in once (a user's first login ever, its mailbox
/// created, may be slow: not under that short timeout).
async fn never_growing(user: &str, pool_size: usize) -> ImapConfig {
    ImapPool::new(cfg())
        .get(user, &password())
        .await
        .unwrap()
        .status("INBOX")
        .await
        .unwrap();
    let mut c = cfg();
    c.pool_size = pool_size;
    c.pool_grow_after_ms = 600_000;
    c.timeout_ms = 5_000;
    c
}

#[tokio::test]
async fn a_read_ahead_gets_its_own_connection_without_waiting_to_grow() {
    const USER: &str = "load0098@load.test";
    let pool = ImapPool::new(never_growing(USER, 2).await);
    let mut held = pool.get(USER, &password()).await.unwrap();
    held.status("INBOX").await.unwrap();
    // With the only session busy, a request waits for it (and times out).
    let waited = pool.get(USER, &password()).await;
    assert!(
        waited.is_err(),
        "a request grew the pool before pool_grow_after_ms"
    );
    assert_eq!(pool.logins(), 1);
    // Work beside the request (a read-ahead) logs in its own at once.
    let mut own = pool.get_eager(USER, &password()).await.unwrap();
    own.status("INBOX").await.unwrap();
    assert_eq!(pool.logins(), 2);
    // Within pool_size: a third, eager or not, has to wait.
    assert!(pool.get_eager(USER, &password()).await.is_err());
    assert_eq!(pool.logins(), 2);
    drop(own);
    drop(held);
}

#[tokio::test]
async fn two_read_aheads_log_in_side_by_side_and_no_more() {
    const USER: &str = "load0094@load.test";
    let pool = Arc::new(ImapPool::new(never_growing(USER, 4).await));
    let held = pool.get(USER, &password()).await.unwrap();
    // The two read-aheads of an initial sync ask at once: both logins are
    // under way together (neither waits for the other's to finish).
    let eager =
        |pool: Arc<ImapPool>| tokio::spawn(async move { pool.get_eager(USER, &password()).await });
    let (a, b) = (eager(pool.clone()), eager(pool.clone()));
    for _ in 0..20 {
        if pool.open_count(USER) == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(
        pool.open_count(USER),
        3,
        "the second read-ahead waited for the first login"
    );
    let (mut a, mut b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    a.status("INBOX").await.unwrap();
    b.status("INBOX").await.unwrap();
    // One login each: growing at once never logs in more than it takes.
    assert_eq!(pool.logins(), 3);
    assert_eq!(pool.open_count(USER), 3);
    drop((a, b, held));
}

#[tokio::test]
async fn a_request_gets_the_idle_connection_that_has_its_folder_selected() {
    const USER: &str = "load0060@load.test";
    let pool = ImapPool::new(cfg());
    // Two connections: A selects INBOX, B (returned after A, so the most
    // recent) has nothing selected.
    let mut a = pool.get(USER, &password()).await.unwrap();
    let mut b = pool.get_eager(USER, &password()).await.unwrap();
    a.select("INBOX").await.unwrap();
    b.list_folders(false).await.unwrap();
    drop(a);
    drop(b);
    assert_eq!(pool.logins(), 2);
    let inbox = ["INBOX".to_owned()];
    for _ in 0..3 {
        let s = pool.get_selecting(USER, &password(), &inbox).await.unwrap();
        assert_eq!(s.selected_mailbox(), Some("INBOX"));
    }
    // Without a preference: the most recently returned one.
    let s = pool.get(USER, &password()).await.unwrap();
    assert_eq!(s.selected_mailbox(), Some("INBOX"));
    drop(s);
    // A folder nobody has selected: still a connection, no new login.
    let other = ["Sent".to_owned()];
    let s = pool.get_selecting(USER, &password(), &other).await.unwrap();
    drop(s);
    assert_eq!(pool.logins(), 2);
}

#[tokio::test]
async fn a_read_ahead_lane_gets_its_connection_back_and_requests_take_it_last() {
    const USER: &str = "load0080@load.test";
    let pool = ImapPool::new(cfg());
    // Two connections with INBOX selected; A, marked for the lane of
    // device DEVLANE, is returned last (the most recent).
    let mut a = pool.get(USER, &password()).await.unwrap();
    let mut b = pool.get_eager(USER, &password()).await.unwrap();
    a.select("INBOX").await.unwrap();
    b.select("INBOX").await.unwrap();
    a.mark_lane("DEVLANE");
    drop(b);
    drop(a);
    let inbox = ["INBOX".to_owned()];
    // A request takes B, though A is the most recent with INBOX.
    let request = pool.get_selecting(USER, &password(), &inbox).await.unwrap();
    assert_eq!(request.lane(), None, "a request takes the unmarked one");
    drop(request);
    // The lane takes A, though B is now the most recent.
    let lane = pool.get_lane(USER, &password(), "DEVLANE").await.unwrap();
    assert_eq!(lane.lane(), Some("DEVLANE"), "the lane gets its own back");
    assert_eq!(lane.selected_mailbox(), Some("INBOX"));
    drop(lane);
    // Another device's lane: no preference, the most recent (A).
    let other = pool.get_lane(USER, &password(), "DEVOTHER").await.unwrap();
    drop(other);
    // With B taken, a request still gets A: a lane never starves requests.
    let first = pool.get_selecting(USER, &password(), &inbox).await.unwrap();
    assert_eq!(first.lane(), None);
    let second = pool.get_selecting(USER, &password(), &inbox).await.unwrap();
    assert_eq!(second.lane(), Some("DEVLANE"));
    drop((first, second));
    assert_eq!(pool.logins(), 2, "no login beyond the two");
}

#[tokio::test]
async fn read_aheads_take_the_spare_logins_under_way_and_log_in_no_more() {
    const USER: &str = "load0079@load.test";
    let pool = Arc::new(ImapPool::new(never_growing(USER, 4).await));
    let held = pool.get(USER, &password()).await.unwrap();
    // A device's first FolderSync opens two connections ahead (spare),
    // dropped at once like `prewarm_initial_sync`'s; its SyncKey 0 asks
    // for two read-ahead connections while those logins are under way:
    // they wait for them instead of logging in more.
    let spare = |pool: Arc<ImapPool>| {
        tokio::spawn(async move { drop(pool.get_spare(USER, &password()).await) })
    };
    let spares = (spare(pool.clone()), spare(pool.clone()));
    for _ in 0..20 {
        if pool.open_count(USER) == 3 {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert_eq!(pool.open_count(USER), 3, "the spare logins are under way");
    let eager =
        |pool: Arc<ImapPool>| tokio::spawn(async move { pool.get_eager(USER, &password()).await });
    let (a, b) = (eager(pool.clone()), eager(pool.clone()));
    let (mut a, mut b) = (a.await.unwrap().unwrap(), b.await.unwrap().unwrap());
    a.status("INBOX").await.unwrap();
    b.status("INBOX").await.unwrap();
    spares.0.await.unwrap();
    spares.1.await.unwrap();
    assert_eq!(
        pool.logins(),
        3,
        "a read-ahead logged in beside a spare login"
    );
    assert_eq!(pool.open_count(USER), 3);
    drop((a, b, held));
}

/// Another client deletes a folder that three idle connections of the
/// user have selected. A device's Sync of it takes the connection that
/// has it selected and refreshes it (a NOOP), as `commands::sync` does:
/// on a stale connection that fails once ("Mailbox was deleted under
/// us", a retryable error: Status 111 for the device). The first such
/// failure closes the other idle connections that have it selected, so
/// the device's retry learns that the folder is gone instead of failing
/// again on the next stale one (three failures in a row before).
#[tokio::test]
async fn a_deleted_folder_fails_one_stale_connection_not_each() {
    const USER: &str = "load1312@load.test";
    const FOLDER: &str = "pool-gone";
    let mut raw = opush_tests::RawImap::login(USER);
    raw.try_cmd(&format!("DELETE \"{FOLDER}\"")).ok();
    raw.cmd(&format!("CREATE \"{FOLDER}\""));
    let mut c = cfg();
    c.pool_size = 4;
    let pool = ImapPool::new(c);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = pool.get_eager(USER, &password()).await.unwrap();
        s.select(FOLDER).await.unwrap();
        held.push(s);
    }
    drop(held);
    assert_eq!(pool.idle_count(USER), 3);
    raw.cmd(&format!("DELETE \"{FOLDER}\""));
    let wanted = [FOLDER.to_owned()];
    let mut failures = 0;
    let mut gone = false;
    for _ in 0..5 {
        let mut s = pool
            .get_selecting(USER, &password(), &wanted)
            .await
            .unwrap();
        let res = match s.refresh(FOLDER).await {
            Ok(Some(_)) => Ok(()),
            // Not selected (a new connection): a Sync SELECTs it.
            Ok(None) => s.select(FOLDER).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match res {
            Err(e) if e.is_retryable() => failures += 1,
            Err(opush_server::backends::imap::ImapError::NotFound(_)) => {
                gone = true;
                break;
            }
            other => panic!("a deleted folder: {other:?}"),
        }
    }
    assert!(gone, "the folder is never found gone");
    assert_eq!(failures, 1, "stale connections failed once each");
}
