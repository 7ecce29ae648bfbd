//! A sent message is in Sent exactly once when a kept copy of it and a
//! new send of it meet (`opush_server::sent_copy`, `commands::compose`),
//! and a copy no request can save reaches its user anyway.
//!
//! The state each test starts from is what a SendMail killed after the
//! relay accepted its message and after the copy was kept in the store,
//! but before its ClientId was recorded, leaves behind: a `SentCopy` row
//! (the message as it goes in Sent, its Message-ID) and no record of the
//! ClientId. The row is written into the embedded store directly (the
//! kill itself lands in a few milliseconds' window; `crash_kill.rs` shows
//! the windows around it); the device then retries the same SendMail,
//! which goes out again (nothing tells whether the relay got it) under
//! the same Message-ID, while the new opush's resumer saves the kept copy.
//!
//! Against the stack's Dovecot (127.0.0.1:1143) and Postfix: users
//! load1231–load1233, each test its own; embedded stores in temporary
//! directories.

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
use opush_storage::{SentCopy, StorageConfig, Store};
use opush_tests::eas::EasClient;
use opush_tests::{demo_password, require, unique, RawImap, DOVECOT_IMAP, POSTFIX_SMTP};

mod serve_support;

/// opush on the stack's Dovecot over the embedded store at `store`;
/// `extra` adds whole sections or `[imap]` keys (it follows `[imap]`).
fn config(store: &Path, storage_extra: &str, imap_extra: &str) -> Config {
    let listen = SocketAddr::from(([127, 0, 0, 1], serve_support::free_port()));
    Config::from_toml(&format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://mail.example.test\"\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n{storage_extra}\
         [imap]\nhost = \"127.0.0.1\"\nport = 1143\ntimeout_ms = 3000\n{imap_extra}\
         [policy]\nrequire_provisioning = false\n",
        store.display(),
    ))
    .unwrap()
}

fn master() -> String {
    format!(
        "master_user = \"opush-master\"\nmaster_password = \"{}\"\nmaster_for_requests = true\n",
        demo_password()
    )
}

/// A message of `user` to itself, with its own Message-ID (as devices
/// that set one send it; without one opush derives it from the ClientId,
/// the same on every retry).
fn message(user: &str, subject: &str, message_id: &str) -> String {
    format!(
        "From: {user}\r\nTo: {user}\r\nSubject: {subject}\r\nMessage-ID: <{message_id}>\r\n\
         Date: Mon, 30 Nov 2026 12:00:00 +0000\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\nsent, cut by a kill, sent again\r\n"
    )
}

/// Leaves in the store at `store` what a send killed after keeping its
/// copy leaves: the copy's row, kept `age` ago, never tried since.
async fn kept_by_a_killed_send(
    store: &Path,
    user: &str,
    message_id: &str,
    bytes: &str,
    age: Duration,
) {
    serve_support::install_schema(store).await;
    let cfg = StorageConfig {
        path: store.to_path_buf(),
        ..StorageConfig::default()
    };
    let s = Store::open(&cfg).await.unwrap();
    let at = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .saturating_sub(age)
            .as_millis(),
    )
    .unwrap();
    s.put_sent_copy(SentCopy {
        user: user.to_owned(),
        message_id: message_id.to_owned(),
        created_ms: at,
        last_try_ms: at,
        tries: 0,
        bytes: bytes.as_bytes().to_vec(),
        ..SentCopy::default()
    })
    .await
    .unwrap();
}

/// The pending copies of `user` in the store at `store` (opush stopped).
async fn pending(store: &Path, user: &str) -> usize {
    let cfg = StorageConfig {
        path: store.to_path_buf(),
        ..StorageConfig::default()
    };
    let s = Store::open(&cfg).await.unwrap();
    s.sent_copies(user).await.unwrap().len()
}

/// The device's retry of the SendMail (`client_id`, Sent copy asked):
/// sent again (200, no body), since its ClientId was never recorded.
async fn retry_send(c: &mut EasClient, client_id: &str, mime: &str) {
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(client_id.to_owned()),
            save_in_sent_items: true,
            mime: mime.as_bytes().to_vec(),
            ..ComposeRequest::default()
        })
        .to_element(ProtocolVersion::V14_1),
    );
    let res = c.post("SendMail", &body).await;
    assert_eq!(res.status, 200, "SendMail: {res:?}");
    assert!(res.body.is_empty(), "SendMail status: {}", res.xml());
}

/// `subject`'s copies in `user`'s Sent, once a second one would have come.
async fn copies_in_sent(imap: &mut RawImap, subject: &str) -> usize {
    tokio::time::sleep(Duration::from_secs(4)).await;
    imap.search_subject("Sent", subject).len()
}

/// The kept copy saved at start-up (master user) before the device's
/// retry comes: the retry goes out again, finds its copy in Sent by its
/// Message-ID and APPENDs none. (Before: two copies, the retry's APPEND
/// was blind.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_finds_the_copy_a_resumer_saved_before_it() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    const USER: &str = "load1231@load.test";
    let store = tempfile::tempdir().unwrap();
    let subject = unique("sentrace-before");
    let id = format!("{}@sentcopy.test", unique("mid"));
    let mime = message(USER, &subject, &id);
    kept_by_a_killed_send(store.path(), USER, &id, &mime, Duration::from_secs(30)).await;
    let served =
        serve_support::Served::start(config(store.path(), "", &master()), store.path()).await;
    let mut imap = RawImap::login(USER);
    assert_eq!(
        imap.wait_for_subject("Sent", &subject).len(),
        1,
        "saved at start-up"
    );
    let mut c = EasClient::new(served.addr, USER, &demo_password(), "SENTRACE1", "14.1");
    retry_send(&mut c, &unique("cid"), &mime).await;
    imap.wait_for_subject("INBOX", &subject);
    assert_eq!(
        copies_in_sent(&mut imap, &subject).await,
        1,
        "one copy in Sent"
    );
    served.stop().await;
    assert_eq!(pending(store.path(), USER).await, 0, "the row is deleted");
}

/// The retry is the user's first request to the new opush (no master
/// user): its password starts the resumer of the kept copy at the very
/// moment the retry goes out, so both save the same message at once. One
/// owner per Message-ID and a look in Sent before each APPEND leave one
/// copy. (Before: two.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_send_racing_the_resumer_of_its_kept_copy_leaves_one_copy() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    const USER: &str = "load1232@load.test";
    let mut imap = RawImap::login(USER);
    for round in 0..3 {
        let store = tempfile::tempdir().unwrap();
        let subject = unique("sentrace-at-once");
        let id = format!("{}@sentcopy.test", unique("mid"));
        let mime = message(USER, &subject, &id);
        kept_by_a_killed_send(store.path(), USER, &id, &mime, Duration::from_secs(30)).await;
        let served = serve_support::Served::start(config(store.path(), "", ""), store.path()).await;
        let mut c = EasClient::new(served.addr, USER, &demo_password(), "SENTRACE2", "14.1");
        retry_send(&mut c, &unique("cid"), &mime).await;
        imap.wait_for_subject("INBOX", &subject);
        let deadline = Instant::now() + Duration::from_secs(20);
        while imap.search_subject("Sent", &subject).is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            copies_in_sent(&mut imap, &subject).await,
            1,
            "one copy in Sent (round {round})"
        );
        served.stop().await;
        assert_eq!(pending(store.path(), USER).await, 0, "the row is deleted");
    }
}

/// Without the master user a kept copy waits for its user's next
/// request; when none comes before the store would drop it, the copy is
/// delivered to the user's INBOX through the relay, with a note, and its
/// row deleted: the user never silently loses it. (Before: the row
/// expired, an ERROR line at most.) `ttl_sent_copies_s = 8`: the give-up
/// age is 8 s less two sweeps of 2 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_no_request_comes_to_save_is_delivered_to_the_inbox_before_it_expires() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    const USER: &str = "load1233@load.test";
    let store = tempfile::tempdir().unwrap();
    let subject = unique("sentrace-to-inbox");
    let id = format!("{}@sentcopy.test", unique("mid"));
    let mime = message(USER, &subject, &id);
    kept_by_a_killed_send(store.path(), USER, &id, &mime, Duration::from_secs(1)).await;
    let served = serve_support::Served::start(
        config(store.path(), "ttl_sent_copies_s = 8\n", ""),
        store.path(),
    )
    .await;
    let mut imap = RawImap::login(USER);
    let note = format!("Not saved in Sent: {subject}");
    let found = imap.wait_for_subject("INBOX", &note);
    assert_eq!(found.len(), 1, "delivered to the INBOX");
    let text = imap.fetch_message(found[0]);
    assert!(text.contains("message/rfc822"), "{text}");
    assert!(
        text.contains(&format!("Message-ID: <{id}>")),
        "the message attached: {text}"
    );
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        imap.search_subject("INBOX", &note).len(),
        1,
        "delivered once"
    );
    assert!(imap.search_subject("Sent", &subject).is_empty());
    served.stop().await;
    assert_eq!(pending(store.path(), USER).await, 0, "the row is deleted");
}
