//! Fencing, with two opush processes (in-process servers) on one
//! Cassandra keyspace: one process acts for a device, or for a Sent copy,
//! at a time — even when its store is slow.
//!
//! - A leased request whose Cassandra stalls for longer than the lease's
//!   TTL does not carry out its backend effect once the other node may
//!   have taken the lease (`server/src/fence.rs`): node A's Cassandra and
//!   SMTP go through relays (`opush_tests::relay`) the test holds; the
//!   device's retry on node B does the effect; one message is delivered.
//! - A Sent copy whose APPEND hangs (held by an IMAP relay) longer than the
//!   old claim window (1-2 s) is not APPENDed by the other node meanwhile:
//!   a claim holds until its try's bound (`server/src/sent_copy.rs`).
//!
//! Needs Dovecot, Postfix and Cassandra (`scripts/stack up`); fails, never
//! skips, without them. Users load1286–load1289; keyspaces `fencing_*`
//! (each test its own, dropped at its end). The shared Cassandra is never
//! stopped: only this test's relay to it stalls.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::time::{Duration, Instant};

use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_tests::eas::{find_text, HttpResponse};
use opush_tests::relay::Relay;
use opush_tests::{require, unique, RawImap, CASSANDRA, DOVECOT_IMAP, POSTFIX_SMTP};
use support::*;

/// The `[storage]` keys of `keyspace` reached through `port` (a relay)
/// instead of 9042, with `extra` keys.
fn storage_via(keyspace: &Keyspace, port: u16, extra: &str) -> String {
    let toml = keyspace
        .toml
        .replace("port = 9042", &format!("port = {port}"))
        .replace("read_timeout_ms = 10000", "read_timeout_ms = 2000");
    format!("{toml}{extra}")
}

/// Retry later: HTTP 503, or a body whose top Status is 111.
fn retry_later(res: &HttpResponse) -> bool {
    res.status == 503
        || (res.status == 200
            && !res.body.is_empty()
            && find_text(&res.element(), "Status").as_deref() == Some("111"))
}

/// A SendMail on node A: A takes the device's lease, records its check
/// and starts the submission, whose `MAIL FROM` is held (a relay in front
/// of Postfix) while A's Cassandra is stalled for longer than the lease's
/// TTL (3 s). The device retries on node B, which takes the expired lease
/// and sends the message. When A's submission may go on, A must not send
/// the message a second time: its lease is not proven, so it stops
/// before DATA, answers "retry later" and records nothing. The device's
/// retry on A (Cassandra back) is answered Status 118 (B recorded the
/// ClientId). One message delivered, one copy in Sent. (Without the fence
/// A sent the message again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_whose_store_stalls_past_its_lease_does_not_carry_out_its_effect() {
    const USER: &str = "load1286@load.test";
    const RCPT: &str = "load1289@load.test";
    const V: &str = "14.1";
    let postfix = require(POSTFIX_SMTP);
    let cassandra = require(CASSANDRA);
    let keyspace = Keyspace::fresh("fencing").await;
    let cass_relay = Relay::start(cassandra).await;
    let smtp_relay = Relay::start(postfix).await;
    let lease = "lease_ttl_s = 3\n";
    let a = start(Options {
        storage_toml: Some(storage_via(&keyspace, cass_relay.port(), lease)),
        extra_toml: format!(
            "[smtp]\nhost = \"127.0.0.1\"\nport = {}\n",
            smtp_relay.port()
        ),
        ..Options::default()
    })
    .await;
    let b = start(Options {
        storage_toml: Some(format!("{}{lease}", keyspace.toml)),
        ..Options::default()
    })
    .await;
    let mut sender = RawImap::login(USER);
    let mut rcpt = RawImap::login(RCPT);
    let marker = unique("fencesend");
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(unique("cid")),
            mime: format!(
                "To: {RCPT}\r\nSubject: {marker}\r\nContent-Type: text/plain\r\n\r\nsent once\r\n"
            )
            .into_bytes(),
            save_in_sent_items: true,
            ..ComposeRequest::default()
        })
        .to_element(ProtocolVersion::V14_1),
    );
    let mut c = a.client(USER, "FENCE1", V);
    folders(&mut c).await;

    // A takes the lease, records its check, and starts submitting: its
    // MAIL FROM is held, and its store stalls.
    smtp_relay.hold_request_containing(b"MAIL FROM");
    let on_a = tokio::spawn({
        let body = body.clone();
        async move { c.post("SendMail", &body).await }
    });
    tokio::time::timeout(Duration::from_secs(20), smtp_relay.until_held())
        .await
        .expect("A submits the message");
    cass_relay.stall();
    let stalled = Instant::now();
    let probe = keyspace.open().await;
    let device = opush_storage::DeviceKey::new(USER, "FENCE1").unwrap();
    assert!(
        !probe
            .take_lease(&device, "probe:1", Duration::from_secs(1))
            .await
            .unwrap(),
        "A holds the device's lease while it submits"
    );
    // Past the lease's TTL (3 s, whole seconds): the device retries on B.
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let mut on_b = b.client(USER, "FENCE1", V);
    let res = loop {
        let res = on_b.post("SendMail", &body).await;
        if !retry_later(&res) {
            break res;
        }
        assert!(
            stalled.elapsed() < Duration::from_secs(20),
            "B never got the lease"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(res.status, 200, "{res:?}");
    assert!(res.body.is_empty(), "B sent it: {}", res.xml());
    assert_eq!(rcpt.wait_for_subject("INBOX", &marker).len(), 1);

    // A's submission may go on (its store still stalled).
    smtp_relay.release();
    let res = tokio::time::timeout(Duration::from_secs(60), on_a)
        .await
        .expect("A answered")
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rcpt.search_subject("INBOX", &marker).len(),
        1,
        "A sent the message a second time after losing its lease"
    );
    assert!(
        retry_later(&res),
        "A answers retry later: {} {:?}",
        res.status,
        res.body
    );

    // Cassandra back: the device's retry on A is known as sent.
    cass_relay.release();
    let mut c = a.client(USER, "FENCE1", V);
    let started = Instant::now();
    let res = loop {
        let res = c.post("SendMail", &body).await;
        if !retry_later(&res) || started.elapsed() > Duration::from_secs(30) {
            break res;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(res.status, 200);
    assert_eq!(
        find_text(&res.element(), "Status").as_deref(),
        Some("118"),
        "the retry is known as sent: {}",
        res.xml()
    );
    assert_eq!(sender.wait_for_subject("Sent", &marker).len(), 1);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        rcpt.search_subject("INBOX", &marker).len(),
        1,
        "delivered once"
    );
    assert_eq!(
        sender.search_subject("Sent", &marker).len(),
        1,
        "one copy in Sent"
    );
    a.stop().await;
    b.stop().await;
    keyspace.remove().await;
}

/// The SendMail's own try to save its copy in Sent on node A: its APPEND
/// is held by an IMAP relay for 3.5 s (its IMAP timeout is 5 s). Meanwhile
/// the user's request on node B starts B's resumer, which finds the copy
/// pending in the store. A claim now holds until its try's bound (twice
/// the IMAP timeout, plus a margin), so B does not try the copy while A's
/// APPEND hangs; A's copy lands, and B finds it saved. One copy in Sent.
/// (With a claim that held only until the next try was due, 1 s, B looked
/// in Sent, found nothing, and APPENDed a second copy.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_sent_copy_append_is_not_made_again_by_the_other_node() {
    require(POSTFIX_SMTP);
    const USER: &str = "load1287@load.test";
    const RCPT: &str = "load1288@load.test";
    let dovecot = require(DOVECOT_IMAP);
    let keyspace = Keyspace::fresh("fencing").await;
    let imap_relay = Relay::start(dovecot).await;
    let imap = "timeout_ms = 5000\n".to_owned();
    let a = start(Options {
        storage_toml: Some(keyspace.toml.clone()),
        imap_port: imap_relay.port(),
        imap_toml: imap.clone(),
        ..Options::default()
    })
    .await;
    let b = start(Options {
        storage_toml: Some(keyspace.toml.clone()),
        imap_toml: imap,
        ..Options::default()
    })
    .await;
    let mut sender = RawImap::login(USER);
    let marker = unique("fencecopy");
    let body = encode_to_vec(
        &SendMailRequest(ComposeRequest {
            client_id: Some(unique("cid")),
            mime: format!(
                "To: {RCPT}\r\nSubject: {marker}\r\nContent-Type: text/plain\r\n\r\none copy\r\n"
            )
            .into_bytes(),
            save_in_sent_items: true,
            ..ComposeRequest::default()
        })
        .to_element(ProtocolVersion::V14_1),
    );
    let mut on_a = a.client(USER, "FENCECOPY1", "14.1");
    folders(&mut on_a).await;
    imap_relay.hold_request_containing(b"APPEND");
    let sent = tokio::spawn(async move { on_a.post("SendMail", &body).await });
    tokio::time::timeout(Duration::from_secs(20), imap_relay.until_held())
        .await
        .expect("A's APPEND of the copy");
    // The user's request on B: B's resumer reads the pending copy.
    let mut on_b = b.client(USER, "FENCECOPY2", "14.1");
    folders(&mut on_b).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    imap_relay.release();
    let res = sent.await.unwrap();
    assert_eq!(res.status, 200, "{res:?}");
    assert!(res.body.is_empty(), "sent: {}", res.xml());
    assert_eq!(sender.wait_for_subject("Sent", &marker).len(), 1);
    // B's resumer looks again once A's claim ended (5 s × 2 + 3 s after
    // A's claim, plus 1 s): a second copy would be there by then.
    let mut pending = usize::MAX;
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        pending = keyspace.open().await.sent_copies(USER).await.unwrap().len();
        if pending == 0 {
            break;
        }
    }
    assert_eq!(pending, 0, "the copy is settled");
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        sender.search_subject("Sent", &marker).len(),
        1,
        "one copy in Sent"
    );
    let mut rcpt = RawImap::login(RCPT);
    assert_eq!(rcpt.wait_for_subject("INBOX", &marker).len(), 1);
    a.stop().await;
    b.stop().await;
    keyspace.remove().await;
}
