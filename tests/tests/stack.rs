//! The test stack itself works: Dovecot authenticates and announces the IMAP
//! extensions opush relies on, and a message handed to Postfix arrives in the
//! recipient's Dovecot INBOX. Plain sockets, so a failure here points at the
//! stack, not at opush.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use opush_tests::{require, unique, RawImap, POSTFIX_SMTP};

#[test]
fn dovecot_authenticates_and_announces_extensions() {
    let mut imap = RawImap::connect();
    let (_, bad) = imap.cmd("LOGIN alice@example.test not-the-password");
    assert!(bad.starts_with("NO"), "wrong password accepted: {bad}");
    let mut imap = RawImap::login("alice@example.test");
    let (caps, _) = imap.cmd("CAPABILITY");
    let caps = caps.join(" ");
    for ext in [
        "CONDSTORE",
        "QRESYNC",
        "SPECIAL-USE",
        "IDLE",
        "NOTIFY",
        "MOVE",
        "UIDPLUS",
    ] {
        assert!(
            caps.split_whitespace().any(|c| c == ext),
            "missing {ext} in {caps}"
        );
    }
    let (list, _) = imap.cmd("LIST \"\" \"*\" RETURN (SPECIAL-USE)");
    let list = list.join("");
    for special in ["\\Drafts", "\\Sent", "\\Trash"] {
        assert!(list.contains(special), "no {special} folder in {list}");
    }
}

#[test]
fn postfix_delivers_into_dovecot() {
    let addr = require(POSTFIX_SMTP);
    let marker = unique("stack-test");
    let s = TcpStream::connect(addr).expect("connect smtp");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let expect = |r: &mut BufReader<TcpStream>, code: &str| loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("smtp read");
        assert!(l.starts_with(code), "expected {code}, got {l}");
        if l.as_bytes().get(3) != Some(&b'-') {
            break;
        }
    };
    expect(&mut r, "220");
    for (c, code) in [
        ("EHLO test.example.test".to_owned(), "250"),
        ("MAIL FROM:<bob@example.test>".to_owned(), "250"),
        ("RCPT TO:<load0050@load.test>".to_owned(), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        write!(w, "{c}\r\n").expect("write");
        expect(&mut r, code);
    }
    write!(w, "From: bob@example.test\r\nTo: load0050@load.test\r\nSubject: {marker}\r\n\r\nhello\r\n.\r\n").expect("write");
    expect(&mut r, "250");
    write!(w, "QUIT\r\n").expect("write");

    // Delivery is asynchronous: wait for the message in the recipient's INBOX.
    let mut imap = RawImap::login("load0050@load.test");
    let uids = imap.wait_for_subject("INBOX", &marker);
    assert_eq!(uids.len(), 1, "delivered more than once: {uids:?}");
    let msg = imap.fetch_message(uids[0]);
    assert!(msg.contains("hello"), "body lost: {msg}");
}
