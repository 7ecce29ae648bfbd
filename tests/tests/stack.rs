//! The test stack itself works: Dovecot authenticates and announces the IMAP
//! extensions opush relies on, offers ManageSieve with the Sieve extensions
//! of opush's out-of-office script, a message handed to Postfix arrives in the
//! recipient's Dovecot INBOX, OpenLDAP slapd answers GAL searches for its
//! bind DN only, and Radicale serves each user's calendar and address book
//! (with alice's seeded events and contacts) to that user only. Plain
//! sockets (and the `ldap3` client), so a failure here points at the stack,
//! not at opush.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use ldap3::adapters::{Adapter, EntriesOnly, PagedResults};
use ldap3::{LdapConn, LdapConnSettings, Scope, SearchEntry};
use opush_tests::eas::basic;
use opush_tests::{
    demo_password, require, unique, RawImap, DOVECOT_MANAGESIEVE, LDAP_BIND_DN, LDAP_SUFFIX,
    POSTFIX_SMTP, RADICALE_DAV, SLAPD_LDAP,
};

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
fn dovecot_offers_manage_sieve_with_vacation() {
    let addr = require(DOVECOT_MANAGESIEVE);
    let s = TcpStream::connect(addr).expect("connect ManageSieve");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut r = BufReader::new(s);
    let mut greeting = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("read ManageSieve greeting");
        assert!(!l.is_empty(), "ManageSieve closed: {greeting:?}");
        let done = l.starts_with("OK");
        greeting.push(l);
        if done {
            break;
        }
    }
    let sieve = greeting
        .iter()
        .find_map(|l| l.strip_prefix("\"SIEVE\" "))
        .unwrap_or_else(|| panic!("no SIEVE capability: {greeting:?}"));
    for ext in ["vacation", "date", "relational", "envelope", "include"] {
        assert!(
            sieve.trim().trim_matches('"').split(' ').any(|e| e == ext),
            "missing {ext} in {sieve}"
        );
    }
    assert!(
        greeting
            .iter()
            .any(|l| l.starts_with("\"SASL\"") && l.contains("PLAIN")),
        "{greeting:?}"
    );
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

/// A connection to the stack's slapd, not yet bound.
fn ldap() -> LdapConn {
    let addr = require(SLAPD_LDAP);
    let settings = LdapConnSettings::new().set_conn_timeout(Duration::from_secs(5));
    LdapConn::with_settings(settings, &format!("ldap://{addr}")).expect("connect to slapd")
}

/// Every value of `attr` in `entry`, or a failure naming what the entry has.
fn attr<'e>(entry: &'e SearchEntry, attr: &str) -> &'e [String] {
    match entry.attrs.get(attr) {
        Some(v) => v,
        None => panic!("{} has no {attr}: {:?}", entry.dn, entry.attrs),
    }
}

#[test]
fn slapd_finds_alice_for_the_bind_dn() {
    let mut ldap = ldap();
    ldap.with_timeout(Duration::from_secs(10))
        .simple_bind(LDAP_BIND_DN, &demo_password())
        .expect("bind")
        .success()
        .expect("the bind DN is refused");
    let (entries, _) = ldap
        .with_timeout(Duration::from_secs(10))
        .search(
            &format!("ou=people,{LDAP_SUFFIX}"),
            Scope::Subtree,
            "(mail=alice@example.test)",
            vec!["*"],
        )
        .expect("search")
        .success()
        .expect("search refused");
    assert_eq!(entries.len(), 1, "alice should be found exactly once");
    let alice = SearchEntry::construct(entries.into_iter().next().expect("one entry"));
    assert_eq!(alice.dn, format!("uid=alice,ou=people,{LDAP_SUFFIX}"));
    for (name, value) in [
        ("cn", "Alice Archer"),
        ("givenName", "Alice"),
        ("sn", "Archer"),
        ("mail", "alice@example.test"),
        ("telephoneNumber", "+1 555 0100"),
        ("title", "Product Manager"),
        ("o", "Example Corp"),
    ] {
        assert_eq!(attr(&alice, name), [value], "{name} of {}", alice.dn);
    }
    assert!(
        !alice.attrs.contains_key("userPassword"),
        "the bind DN reads password hashes: {:?}",
        alice.attrs.keys()
    );

    // A GAL search has people to page through: a paged search (10 a page)
    // of everyone returns alice, bob and the generated people.
    let adapters: Vec<Box<dyn Adapter<_, _>>> = vec![
        Box::new(EntriesOnly::new()),
        Box::new(PagedResults::new(10)),
    ];
    let mut search = ldap
        .streaming_search_with(
            adapters,
            &format!("ou=people,{LDAP_SUFFIX}"),
            Scope::Subtree,
            "(objectClass=inetOrgPerson)",
            vec!["mail"],
        )
        .expect("paged search");
    let mut mails = Vec::new();
    while let Some(entry) = search.next().expect("next page") {
        mails.extend(
            SearchEntry::construct(entry)
                .attrs
                .remove("mail")
                .unwrap_or_default(),
        );
    }
    search.result().success().expect("paged search result");
    assert!(mails.len() >= 50, "only {} people: {mails:?}", mails.len());
    assert!(
        mails.iter().any(|m| m == "bob@example.test"),
        "no bob in {mails:?}"
    );
    ldap.unbind().expect("unbind");
}

#[test]
fn slapd_refuses_a_wrong_password_and_anonymous_reads() {
    let mut ldap = ldap();
    let res = ldap
        .with_timeout(Duration::from_secs(10))
        .simple_bind(LDAP_BIND_DN, "not-the-password")
        .expect("bind");
    assert_eq!(res.rc, 49, "expected invalidCredentials (49), got {res:?}");
    let res = ldap
        .with_timeout(Duration::from_secs(10))
        .simple_bind(
            &format!("uid=alice,ou=people,{LDAP_SUFFIX}"),
            "not-the-password",
        )
        .expect("bind");
    assert_eq!(res.rc, 49, "expected invalidCredentials (49), got {res:?}");

    // Anonymous (a fresh connection, no bind): the directory stays hidden.
    let mut anon = self::ldap();
    let ldap3::SearchResult(entries, res) = anon
        .with_timeout(Duration::from_secs(10))
        .search(
            LDAP_SUFFIX,
            Scope::Subtree,
            "(mail=alice@example.test)",
            vec!["*"],
        )
        .expect("anonymous search");
    assert!(
        entries.is_empty(),
        "an anonymous search found {} entries ({res:?})",
        entries.len()
    );
}

/// One HTTP/1.0 request to the stack's Radicale: the status and the body.
fn dav(
    method: &str,
    path: &str,
    login: Option<(&str, &str)>,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let addr: SocketAddr = require(RADICALE_DAV);
    let mut s = TcpStream::connect(addr).expect("connect radicale");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut req = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
    if let Some((user, password)) = login {
        req.push_str(&format!("Authorization: {}\r\n", basic(user, password)));
    }
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    req.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    s.write_all(req.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).expect("read response");
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {head}"));
    (status, body.to_owned())
}

/// The `<response>` of a multistatus whose href is `href`, or a failure.
fn dav_response<'b>(multistatus: &'b str, href: &str) -> &'b str {
    multistatus
        .split("<response>")
        .find(|r| r.contains(&format!("<href>{href}</href>")))
        .unwrap_or_else(|| panic!("no response for {href} in {multistatus}"))
}

const ALICE: &str = "alice@example.test";
const ALICE_HOME: &str = "/alice%40example.test/";

#[test]
fn radicale_lists_alice_calendar_and_address_book() {
    let propfind = r#"<?xml version="1.0" encoding="utf-8"?>
<propfind xmlns="DAV:"><prop><resourcetype/><displayname/></prop></propfind>"#;
    let (status, body) = dav(
        "PROPFIND",
        ALICE_HOME,
        Some((ALICE, &demo_password())),
        &[("Depth", "1"), ("Content-Type", "application/xml")],
        propfind,
    );
    assert_eq!(status, 207, "PROPFIND on alice's home: {body}");
    let calendar = dav_response(&body, &format!("{ALICE_HOME}calendar/"));
    assert!(
        calendar.contains(":calendar />") || calendar.contains(":calendar/>"),
        "calendar/ is not a calendar: {calendar}"
    );
    let contacts = dav_response(&body, &format!("{ALICE_HOME}contacts/"));
    assert!(
        contacts.contains(":addressbook />") || contacts.contains(":addressbook/>"),
        "contacts/ is not an address book: {contacts}"
    );

    // Wrong password: 401; another user: no access to alice's collections.
    let (status, _) = dav(
        "PROPFIND",
        ALICE_HOME,
        Some((ALICE, "not-the-password")),
        &[("Depth", "1")],
        "",
    );
    assert_eq!(status, 401, "a wrong password was not refused");
    let (status, body) = dav(
        "PROPFIND",
        &format!("{ALICE_HOME}calendar/"),
        Some(("bob@example.test", &demo_password())),
        &[("Depth", "1")],
        "",
    );
    assert_eq!(status, 403, "bob reads alice's calendar: {body}");
}

#[test]
fn radicale_serves_alice_seeded_events_and_contacts() {
    let query = r#"<?xml version="1.0" encoding="utf-8"?>
<C:calendar-query xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">
  <D:prop><D:getetag/><C:calendar-data/></D:prop>
  <C:filter><C:comp-filter name="VCALENDAR"><C:comp-filter name="VEVENT"/></C:comp-filter></C:filter>
</C:calendar-query>"#;
    let (status, body) = dav(
        "REPORT",
        &format!("{ALICE_HOME}calendar/"),
        Some((ALICE, &demo_password())),
        &[("Depth", "1"), ("Content-Type", "application/xml")],
        query,
    );
    assert_eq!(status, 207, "calendar-query on alice's calendar: {body}");
    let kickoff = dav_response(&body, &format!("{ALICE_HOME}calendar/seed-kickoff.ics"));
    assert!(
        kickoff.contains("UID:seed-kickoff@example.test")
            && kickoff.contains("SUMMARY:Project kickoff"),
        "the seeded event is not served: {kickoff}"
    );
    dav_response(&body, &format!("{ALICE_HOME}calendar/seed-standup.ics"));

    let (status, card) = dav(
        "GET",
        &format!("{ALICE_HOME}contacts/seed-bob.vcf"),
        Some((ALICE, &demo_password())),
        &[],
        "",
    );
    assert_eq!(status, 200, "GET of a seeded contact: {card}");
    assert!(
        card.contains("FN:Bob Baker") && card.contains("EMAIL;TYPE=INTERNET,WORK:bob@example.test"),
        "the seeded contact is not served: {card}"
    );
}
