//! A sent message whose copy could not be saved in Sent when it was sent
//! (the IMAP server unavailable at that moment) reaches Sent once the
//! server is back, exactly once: the user never finds a sent mail missing
//! from Sent because Dovecot restarted (`opush_server::sent_copy`), nor
//! because opush itself stopped while the copy waited (the copy is kept in
//! the store; the next opush saves it on the user's next request, or at
//! start-up when IMAP is reached as the master user).
//!
//! Set-up: a private Dovecot per test (`scripts/dovecot-private`, ports
//! 11653-11656, their own mail stores) behind opush (`serve::run_with`,
//! embedded store), the stack's Postfix for SMTP. Each test's sender
//! (load0089-load0092) is in its private Dovecot; the mail itself goes
//! through Postfix to the sender's INBOX on the stack's Dovecot, which no
//! other test reads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_server::config::Config;
use opush_storage::{StorageConfig, Store};
use opush_tests::eas::EasClient;
use opush_tests::{
    demo_password, repo_root, require, unique, PrivateDovecot, RawImap, DOVECOT_IMAP, POSTFIX_SMTP,
};

const USER: &str = "load0089@load.test";
/// The sender of the restart tests.
const RESTART_USER: &str = "load0090@load.test";
const MASTER_USER: &str = "load0091@load.test";
const V2_USER: &str = "load0092@load.test";

mod serve_support;

/// opush's configuration against `dovecot`, on an embedded store at
/// `store`; `imap_extra` adds `[imap]` keys.
fn config(dovecot: &PrivateDovecot, store: &Path, imap_extra: &str) -> Config {
    let listen = SocketAddr::from(([127, 0, 0, 1], serve_support::free_port()));
    Config::from_toml(&format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://mail.example.test\"\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nhost = \"127.0.0.1\"\nport = {}\ntimeout_ms = 3000\n{imap_extra}\
         [policy]\nrequire_provisioning = false\n",
        store.display(),
        dovecot.port,
    ))
    .unwrap()
}

/// opush serving against `dovecot`, on an embedded store at `store`.
async fn serve(dovecot: &PrivateDovecot, store: &Path) -> serve_support::Served {
    serve_support::Served::start(config(dovecot, store, ""), store).await
}

/// The UIDs of `user`'s Sent (on the private Dovecot) whose Subject
/// contains `needle`.
fn in_sent_of(dovecot: &PrivateDovecot, user: &str, needle: &str) -> Vec<u32> {
    RawImap::login_to(dovecot.addr(), user).search_subject("Sent", needle)
}

/// A FolderSync from scratch: the credentials checked, the folders known.
async fn folder_sync(c: &mut EasClient) {
    let res = c
        .post_xml(
            "FolderSync",
            r#"<?xml version="1.0" encoding="utf-8"?><FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#,
        )
        .await;
    assert_eq!(res.status, 200, "FolderSync: {res:?}");
}

/// `user` sends a message to itself (Sent copy asked) while `dovecot` is
/// down, and it goes out through Postfix; its Subject.
async fn send_while_imap_is_down(
    c: &mut EasClient,
    dovecot: &PrivateDovecot,
    user: &str,
) -> String {
    dovecot.run("down");
    let subject = unique("sent-retry");
    let mime = format!(
        "From: {user}\r\nTo: {user}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nsent while IMAP was down\r\n"
    );
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(unique("cid")),
            save_in_sent_items: true,
            mime: mime.into_bytes(),
            ..ComposeRequest::default()
        })
        .to_element(ProtocolVersion::V14_1),
    );
    let res = c.post("SendMail", &body).await;
    assert_eq!(res.status, 200, "SendMail: {res:?}");
    assert!(res.body.is_empty(), "SendMail status: {}", res.xml());
    RawImap::login(user).wait_for_subject("INBOX", &subject);
    subject
}

/// Waits (`within`) for `subject` in `user`'s Sent; then checks it stays
/// there once (a later try would have come by then).
async fn in_sent_once(dovecot: &PrivateDovecot, user: &str, subject: &str, within: Duration) {
    let deadline = Instant::now() + within;
    let found = loop {
        let uids = in_sent_of(dovecot, user, subject);
        if !uids.is_empty() || Instant::now() > deadline {
            break uids;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(found.len(), 1, "the sent copy in Sent once: {found:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(in_sent_of(dovecot, user, subject).len(), 1, "still once");
}

/// The pending Sent copies the embedded store at `store` holds for `user`
/// (opush stopped).
async fn pending(store: &Path, user: &str) -> usize {
    let cfg = StorageConfig {
        path: store.to_path_buf(),
        ..StorageConfig::default()
    };
    let s = Store::open(&cfg).await.unwrap();
    s.sent_copies(user).await.unwrap().len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_copy_missed_while_imap_was_down_is_saved_once_it_is_back() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/sent-copy-retry"), 11653);
    dovecot.run("up");
    let store = tempfile::tempdir().unwrap();
    let served = serve(&dovecot, store.path()).await;
    let mut c = EasClient::new(served.addr, USER, &demo_password(), "SENTRETRY", "14.1");
    // Credentials checked (and cached) and the folders known while IMAP is up.
    folder_sync(&mut c).await;

    // IMAP goes down; the message still goes out through Postfix.
    let subject = send_while_imap_is_down(&mut c, &dovecot, USER).await;

    // Back up: the copy arrives in Sent within the retries' first waits
    // (1 s, 2 s, 4 s, ...), once.
    dovecot.run("up");
    in_sent_once(&dovecot, USER, &subject, Duration::from_secs(40)).await;
    served.stop().await;
    assert_eq!(pending(store.path(), USER).await, 0, "the row is deleted");
    dovecot.run("down");
}

/// opush stops while a copy waits (IMAP down): the next opush on the same
/// store saves it, once, when the user comes back (from another device:
/// the request's password logs in), and not before (no password to log in
/// with until then).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_copy_waiting_when_opush_stops_is_saved_by_the_next_one_on_the_users_request() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/sent-copy-restart"), 11654);
    dovecot.run("up");
    let store = tempfile::tempdir().unwrap();
    let cfg = config(&dovecot, store.path(), "");
    let first = serve_support::ServedProcess::start(cfg, store.path()).await;
    let mut c = EasClient::new(
        first.addr,
        RESTART_USER,
        &demo_password(),
        "SENTDUR1",
        "14.1",
    );
    folder_sync(&mut c).await;
    let subject = send_while_imap_is_down(&mut c, &dovecot, RESTART_USER).await;
    // opush stops (an upgrade, a crash) before IMAP is back.
    first.stop().await;
    assert_eq!(
        pending(store.path(), RESTART_USER).await,
        1,
        "kept in the store"
    );
    dovecot.run("up");

    let cfg = config(&dovecot, store.path(), "");
    let second = serve_support::ServedProcess::start(cfg, store.path()).await;
    // No request of the user yet: nothing to log in with.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        in_sent_of(&dovecot, RESTART_USER, &subject).is_empty(),
        "saved before the user came back?"
    );
    let mut other = EasClient::new(
        second.addr,
        RESTART_USER,
        &demo_password(),
        "SENTDUR2",
        "14.1",
    );
    folder_sync(&mut other).await;
    in_sent_once(&dovecot, RESTART_USER, &subject, Duration::from_secs(20)).await;
    second.stop().await;
    assert_eq!(
        pending(store.path(), RESTART_USER).await,
        0,
        "the row is deleted"
    );
    dovecot.run("down");
}

/// As above with `[imap] master_for_requests`: the next opush logs in as
/// the master user, so it saves the copy at start-up, before any request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_master_user_a_sent_copy_waiting_when_opush_stops_is_saved_at_the_next_start() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/sent-copy-master"), 11655);
    dovecot.run("up");
    let store = tempfile::tempdir().unwrap();
    let master = format!(
        "master_user = \"opush-master\"\nmaster_password = \"{}\"\nmaster_for_requests = true\n",
        demo_password()
    );
    let first =
        serve_support::ServedProcess::start(config(&dovecot, store.path(), &master), store.path())
            .await;
    let mut c = EasClient::new(
        first.addr,
        MASTER_USER,
        &demo_password(),
        "SENTDUR3",
        "14.1",
    );
    folder_sync(&mut c).await;
    let subject = send_while_imap_is_down(&mut c, &dovecot, MASTER_USER).await;
    first.stop().await;
    assert_eq!(
        pending(store.path(), MASTER_USER).await,
        1,
        "kept in the store"
    );
    dovecot.run("up");

    let second =
        serve_support::ServedProcess::start(config(&dovecot, store.path(), &master), store.path())
            .await;
    // No request at all.
    in_sent_once(&dovecot, MASTER_USER, &subject, Duration::from_secs(20)).await;
    second.stop().await;
    assert_eq!(
        pending(store.path(), MASTER_USER).await,
        0,
        "the row is deleted"
    );
    dovecot.run("down");
}

/// A store still at schema v2 (not updated since the previous opush) has
/// no room for the copy: it is retried from memory, and still reaches
/// Sent once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_schema_v2_store_the_copy_is_retried_from_memory() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/sent-copy-v2"), 11656);
    dovecot.run("up");
    let store = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        path: store.path().to_path_buf(),
        ..StorageConfig::default()
    };
    Store::open(&cfg)
        .await
        .unwrap()
        .install_schema_version(2)
        .await
        .unwrap();
    let served = serve(&dovecot, store.path()).await;
    let mut c = EasClient::new(served.addr, V2_USER, &demo_password(), "SENTDURV2", "14.1");
    folder_sync(&mut c).await;
    let subject = send_while_imap_is_down(&mut c, &dovecot, V2_USER).await;
    dovecot.run("up");
    in_sent_once(&dovecot, V2_USER, &subject, Duration::from_secs(40)).await;
    served.stop().await;
    dovecot.run("down");
}
