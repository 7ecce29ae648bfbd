//! opush against an IMAP server without UNSELECT (RFC 3691): leaving a
//! mailbox it selected read-write must not CLOSE it, since CLOSE expunges
//! every `\Deleted` message there (RFC 3501 6.4.2), including those
//! another client only marked. Every other test talks to the stack's
//! Dovecot, which has UNSELECT, so this path is met here only.
//!
//! A private Dovecot started with `scripts/dovecot-private --no-unselect`,
//! port 11762; user load1347 in its own mail store.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use opush_server::backends::imap::{Flag, ImapClient};
use opush_server::config::{Config, Secret};
use opush_tests::{demo_password, repo_root, PrivateDovecot, RawImap};

const USER: &str = "load1347@load.test";

fn append(raw: &mut RawImap, mailbox: &str, subject: &str) {
    let msg = format!("From: a@example.test\r\nSubject: {subject}\r\n\r\nbody\r\n");
    let (_, ok) = raw.cmd(&format!("APPEND {mailbox} {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

/// The number of messages in `mailbox`.
fn exists(raw: &mut RawImap, mailbox: &str) -> usize {
    let (lines, ok) = raw.cmd(&format!("STATUS {mailbox} (MESSAGES)"));
    assert!(ok.starts_with("OK"), "{ok}");
    let line = lines.concat();
    let n = line
        .split("MESSAGES ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no MESSAGES: {line}"));
    n.trim().parse().unwrap()
}

#[tokio::test]
async fn leaving_a_folder_expunges_nothing_without_unselect() {
    let dovecot =
        PrivateDovecot::new(repo_root().join("target/tmp/no-unselect"), 11762).without_unselect();
    dovecot.run("up");
    let mut raw = RawImap::login_to(dovecot.addr(), USER);
    for f in ["Kept", "Keep"] {
        raw.cmd(&format!("DELETE {f}"));
    }
    raw.ok("CREATE Keep");
    raw.ok("SUBSCRIBE Keep");
    append(&mut raw, "Keep", "marked by another client");
    append(&mut raw, "Keep", "read by the device");
    // Another client marks the first one \Deleted, without expunging it.
    raw.ok("SELECT Keep");
    raw.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    raw.ok("UNSELECT");

    let mut cfg = Config::default().imap;
    cfg.port = dovecot.port;
    cfg.timeout_ms = 10_000;
    let mut s = ImapClient::login(&cfg, USER, &Secret::new(demo_password()))
        .await
        .expect("login to the private Dovecot");
    assert!(!s.has("UNSELECT"), "the server must not advertise UNSELECT");
    // A flag change selects the folder read-write; the rename leaves it.
    s.store_flags("Keep", &[2], &[Flag::Seen], true, None)
        .await
        .unwrap();
    s.rename_folder("Keep", "Kept", &[]).await.unwrap();
    assert_eq!(
        exists(&mut raw, "Kept"),
        2,
        "the message another client marked was expunged"
    );
    dovecot.run("down");
}
