//! A sent message whose copy could not be saved in Sent when it was sent
//! (the IMAP server unavailable at that moment) reaches Sent once the
//! server is back, exactly once: the user never finds a sent mail missing
//! from Sent because Dovecot restarted (`commands::compose`,
//! `save_in_sent_later`).
//!
//! Set-up: a private Dovecot (`scripts/dovecot-private`, port 11648, its
//! own mail store) behind opush (`serve::run_with`, embedded store), the
//! stack's Postfix for SMTP. The sender is load0094 in the private
//! Dovecot; the mail itself goes through Postfix to load0094's INBOX on
//! the stack's Dovecot, which no other test reads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_server::config::Config;
use opush_tests::eas::EasClient;
use opush_tests::{
    demo_password, repo_root, require, unique, PrivateDovecot, RawImap, DOVECOT_IMAP, POSTFIX_SMTP,
};

const USER: &str = "load0094@load.test";

mod serve_support;

/// opush serving against `dovecot`, on an embedded store at `store`.
async fn serve(dovecot: &PrivateDovecot, store: &std::path::Path) -> serve_support::Served {
    let listen = SocketAddr::from(([127, 0, 0, 1], serve_support::free_port()));
    let cfg = Config::from_toml(&format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://mail.example.test\"\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nhost = \"127.0.0.1\"\nport = {}\ntimeout_ms = 3000\n\
         [policy]\nrequire_provisioning = false\n",
        store.display(),
        dovecot.port,
    ))
    .unwrap();
    serve_support::Served::start(cfg, store).await
}

/// The UIDs of Sent (on the private Dovecot) whose Subject contains `needle`.
fn in_sent(dovecot: &PrivateDovecot, needle: &str) -> Vec<u32> {
    RawImap::login_to(dovecot.addr(), USER).search_subject("Sent", needle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sent_copy_missed_while_imap_was_down_is_saved_once_it_is_back() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/sent-copy-retry"), 11648);
    dovecot.run("up");
    let store = tempfile::tempdir().unwrap();
    let served = serve(&dovecot, store.path()).await;
    let mut c = EasClient::new(served.addr, USER, &demo_password(), "SENTRETRY", "14.1");
    // Credentials checked (and cached) and the folders known while IMAP is up.
    let res = c
        .post_xml(
            "FolderSync",
            r#"<?xml version="1.0" encoding="utf-8"?><FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#,
        )
        .await;
    assert_eq!(res.status, 200, "FolderSync: {res:?}");

    // IMAP goes down; the message still goes out through Postfix.
    dovecot.run("down");
    let subject = unique("sent-retry");
    let mime = format!(
        "From: {USER}\r\nTo: {USER}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
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
    RawImap::login(USER).wait_for_subject("INBOX", &subject);

    // Back up: the copy arrives in Sent within the retries' first waits
    // (1 s, 2 s, 4 s, ...), once.
    dovecot.run("up");
    let deadline = Instant::now() + Duration::from_secs(40);
    let found = loop {
        let uids = in_sent(&dovecot, &subject);
        if !uids.is_empty() || Instant::now() > deadline {
            break uids;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(found.len(), 1, "the sent copy in Sent once: {found:?}");
    // No later try adds a second one (the next waits have passed by then).
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(in_sent(&dovecot, &subject).len(), 1, "still once");
    served.stop().await;
    dovecot.run("down");
}
