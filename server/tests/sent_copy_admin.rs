//! The Sent copies waiting to be saved, as an administrator sees and
//! handles them (`opush sent list|drop|retry`, the real binary, through
//! the admin address of the running server that holds the embedded
//! store): a user over quota sends two messages; their copies wait, each
//! listed with its device, size, tries, next try, and the IMAP server's
//! refusal (`[OVERQUOTA] Quota exceeded`) as its last error. One is dropped (never saved);
//! once the quota is lifted the other, retried now, is in Sent exactly
//! once and the listing is empty.
//!
//! Set-up: a private Dovecot with a quota (`scripts/dovecot-private
//! --quota-kb`, port 11840, its own mail store) behind opush
//! (`serve::run_with`, embedded store), the stack's Postfix for SMTP (the
//! mail itself reaches the sender's INBOX on the stack's Dovecot). Users
//! load1321 (this test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_tests::eas::EasClient;
use opush_tests::{
    demo_password, repo_root, require, unique, PrivateDovecot, RawImap, DOVECOT_IMAP, POSTFIX_SMTP,
};

mod serve_support;

const USER: &str = "load1321@load.test";
const DEVICE: &str = "SENTADMIN1";

/// `opush ARGS --config CONFIG` (the real binary): success, and its output.
async fn opush(config: &Path, args: &[&str]) -> (bool, String) {
    let config = config.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(env!("CARGO_BIN_EXE_opush"))
            .args(&args)
            .arg("--config")
            .arg(&config)
            .output()
            .unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    })
    .await
    .unwrap()
}

/// The listing's line of the copy whose subject holds `needle`, split:
/// user, device, Message-ID, size, queued, tries, next try, then the rest
/// (`"subject" "last error"`).
fn line_of<'a>(listing: &'a str, needle: &str) -> Option<Vec<&'a str>> {
    listing
        .lines()
        .find(|l| l.contains(needle))
        .map(|l| l.splitn(8, ' ').collect())
}

/// Sends `subject` (a message bigger than the quota) from `c`, Sent copy
/// asked; the relay takes it whatever IMAP says.
async fn send(c: &mut EasClient, subject: &str) {
    let filler = "over quota. ".repeat(400);
    let mime = format!(
        "From: {USER}\r\nTo: {USER}\r\nSubject: {subject}\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\r\n{filler}\r\n"
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
}

/// Lists `USER`'s waiting copies until `done` holds for the listing (60 s
/// at most), and returns that listing.
async fn list_until(config: &Path, what: &str, done: impl Fn(&str) -> bool) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (ok, text) = opush(config, &["sent", "list", "--user", USER]).await;
        assert!(ok, "opush sent list: {text}");
        if done(&text) {
            return text;
        }
        assert!(Instant::now() < deadline, "{what}; last listing:\n{text}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_administrator_sees_why_copies_wait_drops_one_and_retries_the_other_once_fixed() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let mut dovecot = PrivateDovecot::new(repo_root().join("target/tmp/sent-copy-admin"), 11840)
        .with_quota_kb(Some(2));
    dovecot.run("up");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = dir.path().join("opush.toml");
    let (port, admin) = (serve_support::free_port(), serve_support::free_port());
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             public_url = \"https://mail.example.test\"\n\
             [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
             [imap]\nhost = \"127.0.0.1\"\nport = {}\ntimeout_ms = 3000\n\
             [policy]\nrequire_provisioning = false\n",
            data.display(),
            dovecot.port,
        ),
    )
    .unwrap();
    let cfg = opush_server::config::Config::load(&config).unwrap();
    let served = serve_support::Served::start(cfg, &data).await;
    let mut c = EasClient::new(served.addr, USER, &demo_password(), DEVICE, "14.1");
    let res = c
        .post_xml(
            "FolderSync",
            r#"<?xml version="1.0" encoding="utf-8"?><FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#,
        )
        .await;
    assert_eq!(res.status, 200, "FolderSync: {res:?}");

    // Nothing waits yet.
    let (ok, text) = opush(&config, &["sent", "list", "--user", USER]).await;
    assert!(ok && text.trim().is_empty(), "{text}");

    let (kept, dropped) = (unique("sent-admin-keep"), unique("sent-admin-drop"));
    send(&mut c, &kept).await;
    send(&mut c, &dropped).await;
    RawImap::login(USER).wait_for_subject("INBOX", &kept);

    // Both wait, each with the IMAP server's refusal; the kept one until
    // its fourth try has failed (its next try then 16 s away at least).
    let listing = list_until(&config, "both copies listed over quota", |t| {
        [&kept, &dropped]
            .iter()
            .all(|s| line_of(t, s).is_some_and(|f| f[5].parse::<u32>().is_ok_and(|n| n >= 4)))
            && t.matches("[OVERQUOTA] Quota exceeded").count() == 2
    })
    .await;
    let line = line_of(&listing, &kept).unwrap();
    assert_eq!(line[0], USER, "{listing}");
    assert_eq!(line[1], DEVICE, "{listing}");
    assert!(
        line[2].contains("@mail.example.test"),
        "Message-ID: {listing}"
    );
    assert!(line[3].parse::<u64>().unwrap() > 4_000, "size: {listing}");
    assert!(line[4].ends_with('Z'), "queued since: {listing}");
    assert!(
        line[7].contains(&format!("\"{kept}\""))
            && line[7].contains("Quota exceeded")
            && !line[7].contains(&demo_password()),
        "{listing}"
    );
    let kept_id = line[2].to_owned();
    let dropped_id = line_of(&listing, &dropped).unwrap()[2].to_owned();

    // Another user's listing does not show them; the whole listing does.
    let (ok, text) = opush(&config, &["sent", "list", "--user", "load1322@load.test"]).await;
    assert!(ok && text.trim().is_empty(), "{text}");
    let (ok, text) = opush(&config, &["sent", "list"]).await;
    assert!(
        ok && text.contains(&kept) && text.contains(&dropped),
        "{text}"
    );

    // Dropped: gone from the listing, and never saved.
    let (ok, text) = opush(
        &config,
        &["sent", "drop", "--user", USER, "--message-id", &dropped_id],
    )
    .await;
    assert!(ok && text.contains("dropped"), "{text}");
    let (ok, text) = opush(
        &config,
        &["sent", "drop", "--user", USER, "--message-id", &dropped_id],
    )
    .await;
    assert!(
        !ok && text.contains("no Sent copy"),
        "dropped twice: {text}"
    );

    // The quota lifted (its sessions end: new ones have no limit), the
    // other is retried now: in Sent once, well before its next try was due.
    dovecot.quota_kb = None;
    dovecot.run("up");
    dovecot.run("kick");
    let (ok, text) = opush(
        &config,
        &["sent", "retry", "--user", USER, "--message-id", &kept_id],
    )
    .await;
    assert!(ok && text.contains("due now"), "{text}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut imap = RawImap::login_to(dovecot.addr(), USER);
    while imap.search_subject("Sent", &kept).is_empty() {
        assert!(
            Instant::now() < deadline,
            "not in Sent 10 s after the retry"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    list_until(&config, "the listing empty once saved", |t| {
        t.trim().is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let mut imap = RawImap::login_to(dovecot.addr(), USER);
    assert_eq!(imap.search_subject("Sent", &kept).len(), 1, "in Sent once");
    assert!(
        imap.search_subject("Sent", &dropped).is_empty(),
        "the dropped one is not saved"
    );
    let (ok, text) = opush(
        &config,
        &["sent", "retry", "--user", USER, "--message-id", &kept_id],
    )
    .await;
    assert!(
        !ok && text.contains("no Sent copy"),
        "retried once saved: {text}"
    );
    served.stop().await;
    dovecot.run("down");
}
