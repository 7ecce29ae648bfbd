//! Filling test mailboxes in bulk, once: the integration tests and the load
//! tool need thousands of messages, and appending them one by one on every
//! run would dominate the suite's time. A mailbox is filled with IMAP
//! MULTIAPPEND (many messages per command) and reused on the next run when
//! it already holds exactly the expected messages (count and the subject of
//! the last one, which carries a content marker).
//!
//! Only for test data: it deletes and recreates a mailbox whose content does
//! not match.

use crate::RawImap;

/// A plain-text message number `i` of a filled mailbox, about 1.5 KB, with
/// `marker` in its subject (`"<marker> <i>"`).
pub fn text_message(marker: &str, i: usize) -> String {
    let mut body = String::with_capacity(1400);
    for line in 0..18 {
        body.push_str(&format!(
            "Line {line} of message {i}: the quick brown fox jumps over the lazy dog.\r\n"
        ));
    }
    format!(
        "From: Filler <filler@example.test>\r\nTo: Reader <reader@load.test>\r\n\
Subject: {marker} {i}\r\nMessage-ID: <{marker}-{i}@opush.test>\r\n\
Date: Sat, 28 Nov 2026 10:{:02}:{:02} +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n{body}",
        (i / 60) % 60,
        i % 60
    )
}

/// Whether `mailbox` holds exactly `n` messages, the last one's subject
/// ending in `"<marker> <n-1>"`.
pub fn holds(imap: &mut RawImap, mailbox: &str, n: usize, marker: &str) -> bool {
    let (lines, ok) = imap.cmd(&format!("STATUS \"{mailbox}\" (MESSAGES)"));
    if !ok.starts_with("OK") {
        return false;
    }
    let count = lines
        .iter()
        .find_map(|l| l.split("MESSAGES ").nth(1))
        .and_then(|r| {
            r.trim_end()
                .trim_end_matches(')')
                .trim()
                .parse::<usize>()
                .ok()
        });
    if count != Some(n) {
        return false;
    }
    if n == 0 {
        return true;
    }
    let (_, ok) = imap.cmd(&format!("EXAMINE \"{mailbox}\""));
    if !ok.starts_with("OK") {
        return false;
    }
    let (lines, _) = imap.cmd(&format!("FETCH {n} BODY.PEEK[HEADER.FIELDS (SUBJECT)]"));
    let want = format!("{marker} {}", n - 1);
    lines
        .concat()
        .lines()
        .any(|l| l.trim_end().ends_with(&want))
}

/// Makes `mailbox` hold exactly the messages `make(0..n)`, unless it already
/// does (see [`holds`]). Returns true when it was (re)filled.
pub fn ensure(
    imap: &mut RawImap,
    mailbox: &str,
    n: usize,
    marker: &str,
    make: impl Fn(usize) -> String,
) -> bool {
    if holds(imap, mailbox, n, marker) {
        return false;
    }
    if mailbox.eq_ignore_ascii_case("INBOX") {
        imap.cmd("SELECT INBOX");
        imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
        let (_, ok) = imap.cmd("EXPUNGE");
        assert!(ok.starts_with("OK"), "emptying INBOX: {ok}");
        imap.cmd("UNSELECT");
    } else {
        imap.cmd("UNSELECT");
        imap.cmd(&format!("DELETE \"{mailbox}\""));
        let (_, ok) = imap.cmd(&format!("CREATE \"{mailbox}\""));
        assert!(ok.starts_with("OK"), "create {mailbox}: {ok}");
        imap.cmd(&format!("SUBSCRIBE \"{mailbox}\""));
    }
    append_all(imap, mailbox, (0..n).map(make));
    assert!(
        holds(imap, mailbox, n, marker),
        "{mailbox} does not hold the {n} messages just appended"
    );
    true
}

/// Appends messages with MULTIAPPEND, about 1 MB per command.
pub fn append_all(imap: &mut RawImap, mailbox: &str, messages: impl Iterator<Item = String>) {
    let mut cmd = String::new();
    let flush = |imap: &mut RawImap, cmd: &mut String| {
        if cmd.is_empty() {
            return;
        }
        let (_, ok) = imap.cmd(&format!("APPEND \"{mailbox}\"{cmd}"));
        assert!(ok.starts_with("OK"), "append to {mailbox}: {ok}");
        cmd.clear();
    };
    for m in messages {
        cmd.push_str(&format!(" {{{}+}}\r\n{m}", m.len()));
        if cmd.len() > 1 << 20 {
            flush(imap, &mut cmd);
        }
    }
    flush(imap, &mut cmd);
}
