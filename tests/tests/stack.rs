//! The test stack itself works: Dovecot authenticates and announces the IMAP
//! extensions opush relies on, and a message handed to Postfix arrives in the
//! recipient's Dovecot INBOX. Plain sockets, so a failure here points at the
//! stack, not at opush.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use opush_tests::{demo_password, require, DOVECOT_IMAP, POSTFIX_SMTP};

struct Imap {
    r: BufReader<TcpStream>,
    w: TcpStream,
    n: u32,
}

impl Imap {
    fn connect() -> Imap {
        let addr = require(DOVECOT_IMAP);
        let w = TcpStream::connect(addr).expect("connect imap");
        w.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut r = BufReader::new(w.try_clone().expect("clone"));
        let mut greeting = String::new();
        r.read_line(&mut greeting).expect("greeting");
        assert!(greeting.starts_with("* OK"), "greeting: {greeting}");
        Imap { r, w, n: 0 }
    }

    /// Sends a command, returns (untagged lines, tagged status line).
    fn cmd(&mut self, c: &str) -> (Vec<String>, String) {
        self.n += 1;
        let tag = format!("t{}", self.n);
        write!(self.w, "{tag} {c}\r\n").expect("write");
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            self.r.read_line(&mut l).expect("read");
            assert!(!l.is_empty(), "connection closed during {c}");
            if let Some(rest) = l.strip_prefix(&format!("{tag} ")) {
                return (lines, rest.trim_end().to_owned());
            }
            lines.push(l);
        }
    }
}

#[test]
fn dovecot_authenticates_and_announces_extensions() {
    let mut imap = Imap::connect();
    let (_, bad) = imap.cmd("LOGIN alice@example.test not-the-password");
    assert!(bad.starts_with("NO"), "wrong password accepted: {bad}");
    let (_, ok) = imap.cmd(&format!("LOGIN alice@example.test {}", demo_password()));
    assert!(ok.starts_with("OK"), "login: {ok}");
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
    let marker = format!(
        "stack-test-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let s = TcpStream::connect(addr).expect("connect smtp");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut w = s;
    let mut expect = |r: &mut BufReader<TcpStream>, code: &str| loop {
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

    // Delivery is asynchronous: poll the recipient's INBOX for the marker.
    let mut imap = Imap::connect();
    let (_, ok) = imap.cmd(&format!("LOGIN load0050@load.test {}", demo_password()));
    assert!(ok.starts_with("OK"), "login: {ok}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        imap.cmd("SELECT INBOX");
        let (found, _) = imap.cmd(&format!("UID SEARCH SUBJECT \"{marker}\""));
        let uids: Vec<&str> = found
            .iter()
            .filter_map(|l| l.strip_prefix("* SEARCH"))
            .flat_map(|l| l.split_whitespace())
            .collect();
        if !uids.is_empty() {
            assert_eq!(uids.len(), 1, "delivered more than once: {uids:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "message {marker} never arrived in Dovecot"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
