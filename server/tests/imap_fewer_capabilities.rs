//! opush against IMAP servers without UNSELECT (RFC 3691) or UIDPLUS
//! (RFC 4315): leaving a mailbox it selected read-write must not CLOSE it,
//! and deleting a message must not EXPUNGE the others marked `\Deleted`,
//! since both remove every `\Deleted` message there (RFC 3501 6.4.2,
//! 6.4.3), including those another client only marked. Every other test
//! talks to the stack's Dovecot, which has both, so these paths are met
//! here only.
//!
//! Private Dovecots started with `scripts/dovecot-private
//! --drop-capability`, ports 11762 (no UNSELECT) and 11763 (no UIDPLUS);
//! users load1347 and load1348 in their own mail stores.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use opush_server::backends::imap::{Flag, ImapClient};
use opush_server::config::{Config, Secret};
use opush_tests::{demo_password, repo_root, PrivateDovecot, RawImap};

const USER: &str = "load1347@load.test";

async fn login(dovecot: &PrivateDovecot, user: &str) -> opush_server::backends::imap::Session {
    let mut cfg = Config::default().imap;
    cfg.port = dovecot.port;
    cfg.timeout_ms = 10_000;
    ImapClient::login(&cfg, user, &Secret::new(demo_password()))
        .await
        .expect("login to the private Dovecot")
}

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
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/no-unselect"), 11762)
        .without_capability("UNSELECT");
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

    let mut s = login(&dovecot, USER).await;
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

#[tokio::test]
async fn a_delete_expunges_only_its_message_without_uidplus() {
    const USER: &str = "load1348@load.test";
    let dovecot = PrivateDovecot::new(repo_root().join("target/tmp/no-uidplus"), 11763)
        .without_capability("UIDPLUS");
    dovecot.run("up");
    let mut raw = RawImap::login_to(dovecot.addr(), USER);
    raw.cmd("DELETE Box");
    raw.ok("CREATE Box");
    for subject in ["marked by another client", "deleted by the device", "kept"] {
        append(&mut raw, "Box", subject);
    }
    raw.ok("SELECT Box");
    raw.ok("UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    raw.ok("UNSELECT");

    let mut s = login(&dovecot, USER).await;
    assert!(!s.has("UIDPLUS"), "the server must not advertise UIDPLUS");
    s.expunge("Box", &[2]).await.unwrap();
    assert_eq!(exists(&mut raw, "Box"), 2, "only the device's message goes");
    raw.ok("SELECT Box");
    let (lines, _) = raw.cmd("UID SEARCH DELETED");
    assert!(
        lines.concat().contains("SEARCH 1"),
        "the other client's mark is back: {lines:?}"
    );
}
