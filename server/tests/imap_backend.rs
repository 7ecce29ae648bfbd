//! The IMAP connector against the real Dovecot of `scripts/stack` (127.0.0.1:1143).
//!
//! Each test works in its own `opush-test-…` folder of a user reserved for
//! this file (`load0047@load.test`; `load0028@load.test` for the view of
//! a kept selection), or on alice through the master user, and deletes
//! what it created. A missing Dovecot fails the tests (never skips).
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use std::time::Duration;

use opush_server::backends::imap::{
    utf7, Flag, IdleOutcome, ImapClient, ImapError, ImapPool, MessageMeta, SearchQuery, Session,
    SpecialUse,
};
use opush_server::config::{Config, ImapConfig, Secret, TlsMode};

const USER: &str = "load0047@load.test";

fn password() -> Secret {
    Secret::new(std::env::var("OPUSH_DEMO_PASSWORD").unwrap_or_else(|_| "opush-demo".into()))
}

fn cfg() -> ImapConfig {
    let mut c = Config::default().imap;
    c.timeout_ms = 20_000;
    c.master_user = Some("opush-master".into());
    c.master_password = Some(password());
    c
}

async fn require_dovecot() {
    if tokio::net::TcpStream::connect("127.0.0.1:1143")
        .await
        .is_err()
    {
        panic!("Dovecot is not reachable on 127.0.0.1:1143: run `scripts/stack up dovecot`");
    }
}

async fn login() -> Session {
    require_dovecot().await;
    ImapClient::login(&cfg(), USER, &password())
        .await
        .expect("login to Dovecot")
}

fn unique(tag: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("opush-test-{tag}-{}-{nanos}", std::process::id())
}

fn message(subject: &str, from: &str, body: &str) -> Vec<u8> {
    format!(
        "From: {from}\r\nTo: load0047@load.test\r\nSubject: {subject}\r\nDate: Tue, 14 Nov 2023 22:13:20 +0000\r\n\
         Message-ID: <{}@opush.test>\r\nImportance: high\r\nMIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{body}\r\n",
        subject.replace(' ', "-")
    )
    .into_bytes()
}

#[tokio::test]
async fn login_ok_wrong_password_and_outage_are_told_apart() {
    let s = login().await;
    assert!(s.has("IMAP4rev1"));
    assert!(
        s.qresync(),
        "Dovecot offers QRESYNC and the connector enables it"
    );

    let err = ImapClient::login(&cfg(), USER, &Secret::new("not-the-password"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ImapError::Auth { user } if user == USER),
        "{err:?}"
    );
    assert!(!err.is_retryable());

    // A closed port: bind, learn the port, close it.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut closed = cfg();
    closed.port = port;
    let err = ImapClient::login(&closed, USER, &password())
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::Unavailable(_)), "{err:?}");
    assert!(err.is_retryable());

    // Implicit TLS against the plain port: the handshake fails, which is an
    // outage (retryable), not a credential failure.
    let mut tls = cfg();
    tls.tls = TlsMode::Tls;
    let err = ImapClient::login(&tls, USER, &password())
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::Unavailable(_)), "{err:?}");
    // STARTTLS where the server (ssl = no) does not offer it: refused, typed.
    let mut starttls = cfg();
    starttls.tls = TlsMode::Starttls;
    let err = ImapClient::login(&starttls, USER, &password())
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::Unsupported(_)), "{err:?}");

    // login_with_domain = false logs in as the local part, which Dovecot does not know.
    let mut local = cfg();
    local.login_with_domain = false;
    assert!(matches!(
        ImapClient::login(&local, USER, &password()).await,
        Err(ImapError::Auth { .. })
    ));
    s.logout().await;
}

#[tokio::test]
async fn master_user_login() {
    require_dovecot().await;
    let mut s = ImapClient::login_master(&cfg(), "alice@example.test")
        .await
        .expect("master login");
    assert_eq!(s.user(), "alice@example.test");
    let folders = s.list_folders(false).await.unwrap();
    assert!(folders.iter().any(|f| f.special == Some(SpecialUse::Inbox)));

    let mut bad = cfg();
    bad.master_password = Some(Secret::new("wrong"));
    let err = ImapClient::login_master(&bad, "alice@example.test")
        .await
        .unwrap_err();
    assert!(matches!(err, ImapError::Auth { .. }), "{err:?}");
    let mut none = cfg();
    none.master_user = None;
    none.master_password = None;
    assert!(matches!(
        ImapClient::login_master(&none, "alice@example.test").await,
        Err(ImapError::Unsupported(_))
    ));
}

#[tokio::test]
async fn list_reports_special_use_and_status() {
    let mut s = login().await;
    let folders = s.list_folders(true).await.unwrap();
    for (role, name) in [
        (SpecialUse::Inbox, "INBOX"),
        (SpecialUse::Drafts, "Drafts"),
        (SpecialUse::Sent, "Sent"),
        (SpecialUse::Trash, "Trash"),
        (SpecialUse::Junk, "Junk"),
        (SpecialUse::Archive, "Archive"),
    ] {
        let f = folders
            .iter()
            .find(|f| f.special == Some(role))
            .unwrap_or_else(|| panic!("{role:?} missing: {folders:?}"));
        assert_eq!(f.raw_name, name);
        assert_eq!(f.delimiter, Some('/'));
        assert!(f.selectable);
    }
    let inbox = folders.iter().find(|f| f.raw_name == "INBOX").unwrap();
    let st = inbox.status.expect("LIST-STATUS gives INBOX status");
    assert!(
        st.uidvalidity > 0 && st.uidnext > 0 && st.highestmodseq.is_some(),
        "{st:?}"
    );
    assert_eq!(s.status("INBOX").await.unwrap().uidvalidity, st.uidvalidity);
    assert!(matches!(
        s.status("opush-test-no-such-folder").await,
        Err(ImapError::NotFound(_))
    ));
}

#[tokio::test]
async fn non_ascii_folder_create_rename_delete() {
    let mut s = login().await;
    let parent = unique("tree");
    s.create_folder(&parent).await.unwrap();
    let display = "Réunions 日本語 & co";
    let raw = format!("{parent}/{}", utf7::encode(display));
    assert!(raw.is_ascii());
    s.create_folder(&raw).await.unwrap();

    let folders = s.list_folders(false).await.unwrap();
    let f = folders
        .iter()
        .find(|f| f.raw_name == raw)
        .expect("created folder listed");
    assert_eq!(f.name, format!("{parent}/{display}"));
    assert_eq!(f.leaf_name(), display);
    assert_eq!(f.parent.as_deref(), Some(parent.as_str()));
    assert!(f.subscribed);

    // Creating it again: already exists (and subscribed).
    assert!(matches!(
        s.create_folder(&raw).await,
        Err(ImapError::AlreadyExists(_))
    ));
    // Existing but unsubscribed: CREATE subscribes it.
    s.unsubscribe(&raw).await.unwrap();
    let f = s
        .list_folders(false)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.raw_name == raw)
        .unwrap();
    assert!(!f.subscribed);
    s.create_folder(&raw).await.unwrap();
    let f = s
        .list_folders(false)
        .await
        .unwrap()
        .into_iter()
        .find(|f| f.raw_name == raw)
        .unwrap();
    assert!(f.subscribed);

    let renamed = f
        .delimiter
        .map(|d| format!("{parent}{d}{}", utf7::encode("Archivé ✓")))
        .unwrap();
    s.rename_folder(&raw, &renamed, &[]).await.unwrap();
    let folders = s.list_folders(false).await.unwrap();
    assert!(!folders.iter().any(|f| f.raw_name == raw));
    let f = folders
        .iter()
        .find(|f| f.raw_name == renamed)
        .expect("renamed folder listed");
    assert_eq!(f.leaf_name(), "Archivé ✓");
    assert!(f.subscribed);

    s.delete_folder(&renamed).await.unwrap();
    s.delete_folder(&parent).await.unwrap();
    let folders = s.list_folders(false).await.unwrap();
    assert!(!folders.iter().any(|f| f.raw_name.starts_with(&parent)));
    assert!(matches!(
        s.delete_folder(&parent).await,
        Err(ImapError::NotFound(_))
    ));
}

#[tokio::test]
async fn append_flags_changedsince_vanished_and_uidvalidity() {
    let mut s = login().await;
    let folder = unique("sync");
    s.create_folder(&folder).await.unwrap();
    let m1 = message("one", "alice@example.test", "first");
    let m2 = message("two", "bob@example.test", "second");
    let m3 = message("three", "carol@example.test", "third");
    let u1 = s
        .append(&folder, &[Flag::Seen], Some(1_700_000_000), &m1)
        .await
        .unwrap()
        .expect("APPENDUID");
    let u2 = s
        .append(
            &folder,
            &[Flag::Forwarded, Flag::Keyword("Work".into())],
            Some(1_700_000_100),
            &m2,
        )
        .await
        .unwrap()
        .expect("APPENDUID");
    let u3 = s
        .append(&folder, &[], None, &m3)
        .await
        .unwrap()
        .expect("APPENDUID");
    assert!(u1 < u2 && u2 < u3);

    let st = s.select(&folder).await.unwrap();
    assert_eq!(st.exists, 3);
    assert_eq!(st.uidnext, u3 + 1);
    assert!(st.uidvalidity > 0);
    let modseq0 = st.highestmodseq.expect("CONDSTORE HIGHESTMODSEQ");

    let list = s.list_messages(&folder, None, true).await.unwrap();
    assert_eq!(
        list.iter().map(|m| m.uid).collect::<Vec<_>>(),
        vec![u1, u2, u3]
    );
    assert!(list[0].flags.seen && !list[0].flags.flagged);
    assert_eq!(list[0].internal_date, 1_700_000_000);
    assert_eq!(list[0].size as usize, m1.len());
    assert!(list[1].flags.forwarded && !list[1].flags.seen);
    assert_eq!(list[1].flags.keywords, vec!["Work".to_string()]);
    assert!(list.iter().all(|m| m.modseq.is_some()));
    // Without dates: the same listing, INTERNALDATE not asked; the bodies
    // then bring them.
    let undated = s.list_messages(&folder, None, false).await.unwrap();
    assert!(undated.iter().all(|m| !m.is_dated()));
    let same = |m: &MessageMeta| (m.uid, m.flags.clone(), m.size, m.modseq);
    assert_eq!(
        undated.iter().map(same).collect::<Vec<_>>(),
        list.iter().map(same).collect::<Vec<_>>()
    );
    let (bodies, dates) = s
        .fetch_messages_dated(&folder, &[u1, u3], true)
        .await
        .unwrap();
    assert_eq!(bodies.len(), 2);
    assert_eq!(dates.get(&u1), Some(&1_700_000_000));
    assert_eq!(dates.get(&u3), Some(&list[2].internal_date));
    let (_, none) = s.fetch_messages_dated(&folder, &[u1], false).await.unwrap();
    assert!(none.is_empty());
    // FilterType window: only messages on/after 2023-11-14 + 1 day → the one appended now.
    let recent = s
        .list_messages(&folder, Some(1_700_000_000 + 86_400), true)
        .await
        .unwrap();
    assert_eq!(recent.iter().map(|m| m.uid).collect::<Vec<_>>(), vec![u3]);

    // A flag change shows up in CHANGEDSINCE.
    s.store_flags(&folder, &[u2], &[Flag::Flagged], true, None)
        .await
        .unwrap();
    let ch = s.changes_since(&folder, modseq0).await.unwrap();
    assert_eq!(
        ch.changed.iter().map(|m| m.uid).collect::<Vec<_>>(),
        vec![u2]
    );
    assert!(ch.changed[0].flags.flagged && ch.changed[0].flags.forwarded);
    assert!(ch.vanished.is_empty());
    let modseq1 = ch.state.highestmodseq.unwrap();
    assert!(modseq1 > modseq0);

    // Clearing a flag.
    s.store_flags(&folder, &[u1], &[Flag::Seen], false, None)
        .await
        .unwrap();
    let m = s.fetch_meta(&folder, &[u1]).await.unwrap();
    assert!(!m[0].flags.seen);

    // UNCHANGEDSINCE below u2's MODSEQ: refused for u2, applied to u3.
    let out = s
        .store_flags(&folder, &[u2, u3], &[Flag::Answered], true, Some(modseq0))
        .await
        .unwrap();
    assert!(out.modified.contains(&u2), "{out:?}");
    let metas = s.fetch_meta(&folder, &[u2, u3]).await.unwrap();
    assert!(!metas[0].flags.answered);

    // An expunge shows up as VANISHED.
    let before = s.examine(&folder).await.unwrap().highestmodseq.unwrap();
    s.expunge(&folder, &[u1]).await.unwrap();
    let ch = s.changes_since(&folder, before).await.unwrap();
    assert_eq!(ch.vanished, vec![u1..=u1]);
    assert!(ch.changed.iter().all(|m| m.uid != u1));
    assert_eq!(ch.state.exists, Some(2));

    // Bad keyword: typed error, nothing sent.
    assert!(matches!(
        s.store_flags(
            &folder,
            &[u2],
            &[Flag::Keyword("two words".into())],
            true,
            None
        )
        .await,
        Err(ImapError::InvalidInput(_))
    ));
    assert!(s.is_usable());

    // UIDVALIDITY changes when the folder is recreated.
    let v1 = st.uidvalidity;
    s.delete_folder(&folder).await.unwrap();
    s.create_folder(&folder).await.unwrap();
    let v2 = s.select(&folder).await.unwrap().uidvalidity;
    assert_ne!(v1, v2);
    assert!(matches!(
        s.select("opush-test-missing-folder").await,
        Err(ImapError::NotFound(_))
    ));
    s.delete_folder(&folder).await.unwrap();
}

/// A kept selection whose HIGHESTMODSEQ another session's changes made
/// unknown — read during a body FETCH, an expunge then a flag change, so
/// Dovecot sends no `HIGHESTMODSEQ` code (the flag change's MODSEQ is the
/// highest) and a NOOP after it has nothing to add — is brought up to date
/// by `refresh` without a new SELECT, to the mailbox's HIGHESTMODSEQ (the
/// second SELECT an initial sync's window made on a read-ahead's
/// connection under load, server/tests/eas_keepsel.rs).
#[tokio::test]
async fn refresh_learns_a_modseq_the_changes_left_unknown_without_a_select() {
    require_dovecot().await;
    const VIEW_USER: &str = "load0028@load.test";
    let mut kept = ImapClient::login(&cfg(), VIEW_USER, &password())
        .await
        .unwrap();
    let mut other = ImapClient::login(&cfg(), VIEW_USER, &password())
        .await
        .unwrap();
    assert!(kept.qresync(), "Dovecot enables QRESYNC");
    let folder = unique("view");
    other.create_folder(&folder).await.unwrap();
    let mut uids = Vec::new();
    for i in 0..4 {
        let m = message(&format!("view {i}"), "alice@example.test", "body");
        uids.push(other.append(&folder, &[], None, &m).await.unwrap().unwrap());
    }
    kept.select(&folder).await.unwrap();
    let opens = kept.mailbox_opens();
    let statuses = kept.statuses();

    other.expunge(&folder, &[uids[1]]).await.unwrap();
    other
        .store_flags(&folder, &[uids[2]], &[Flag::Seen], true, None)
        .await
        .unwrap();
    let bodies = kept.fetch_messages(&folder, &[uids[3]]).await.unwrap();
    assert_eq!(bodies.len(), 1);
    let seen = kept.selected_view(&folder).expect("still selected");
    assert_eq!(
        seen.highestmodseq, None,
        "Dovecot sent a HIGHESTMODSEQ code: this no longer makes the view unknown"
    );
    assert_eq!(seen.exists, Some(3));

    let view = kept
        .refresh(&folder)
        .await
        .unwrap()
        .expect("the selection is kept");
    other.unselect().await.unwrap();
    let truth = other.status(&folder).await.unwrap();
    assert_eq!(view.highestmodseq, truth.highestmodseq);
    assert!(view.highestmodseq.is_some());
    assert_eq!(view.exists, Some(truth.messages));
    assert_eq!(kept.mailbox_opens(), opens, "no SELECT");
    assert_eq!(kept.statuses(), statuses + 1, "one STATUS");
    // Known now: the next refresh is a NOOP alone.
    let again = kept.refresh(&folder).await.unwrap().unwrap();
    assert_eq!(again.highestmodseq, truth.highestmodseq);
    assert_eq!(kept.statuses(), statuses + 1);

    kept.logout().await;
    other.delete_folder(&folder).await.unwrap();
}

#[tokio::test]
async fn uid_ranges_list_only_their_uids() {
    let mut s = login().await;
    let f = unique("ranges");
    s.create_folder(&f).await.unwrap();
    let mut uids = Vec::new();
    for i in 0..5 {
        let m = message(&format!("range {i}"), "x@y.test", "r");
        uids.push(s.append(&f, &[], None, &m).await.unwrap().unwrap());
    }
    // A gap: UIDs need not follow the sequence numbers.
    s.expunge(&f, &[uids[1]]).await.unwrap();
    let left: Vec<u32> = [0, 2, 3, 4].iter().map(|&i| uids[i]).collect();
    assert_eq!(s.uid_at(&f, 2).await.unwrap(), Some(left[1]));
    assert_eq!(s.uid_at(&f, 4).await.unwrap(), Some(left[3]));
    assert_eq!(s.uid_at(&f, 5).await.unwrap(), None);
    assert_eq!(s.uid_at(&f, 0).await.unwrap(), None);
    let listed = |v: Vec<opush_server::backends::imap::MessageMeta>| -> Vec<u32> {
        v.iter().map(|m| m.uid).collect()
    };
    let lower = s
        .list_uid_range(&f, (1, Some(left[1])), true)
        .await
        .unwrap();
    let upper = s
        .list_uid_range(&f, (left[1] + 1, None), true)
        .await
        .unwrap();
    assert_eq!(listed(lower), left[..2].to_vec());
    assert_eq!(listed(upper.clone()), left[2..].to_vec());
    // Every item of a listing is there, as in the whole folder's.
    let all = s.list_messages(&f, None, true).await.unwrap();
    assert_eq!(upper[..], all[2..]);
    // `n:*` above every UID names the last message: left out.
    let past = s
        .list_uid_range(&f, (left[3] + 1, None), true)
        .await
        .unwrap();
    assert!(past.is_empty(), "{past:?}");
    assert!(s
        .list_uid_range(&f, (9, Some(3)), true)
        .await
        .unwrap()
        .is_empty());
    s.delete_folder(&f).await.unwrap();
}

#[tokio::test]
async fn move_between_folders_and_empty() {
    let mut s = login().await;
    let a = unique("move-a");
    let b = unique("move-b");
    s.create_folder(&a).await.unwrap();
    s.create_folder(&b).await.unwrap();
    let u1 = s
        .append(&a, &[], None, &message("move me", "x@y.test", "1"))
        .await
        .unwrap()
        .unwrap();
    let u2 = s
        .append(&a, &[], None, &message("move me too", "x@y.test", "2"))
        .await
        .unwrap()
        .unwrap();
    let pairs = s.move_messages(&a, &[u1, u2], &b).await.unwrap();
    assert_eq!(pairs.len(), 2);
    assert_eq!(pairs.iter().map(|p| p.0).collect::<Vec<_>>(), vec![u1, u2]);
    assert!(s.list_messages(&a, None, true).await.unwrap().is_empty());
    let in_b = s.list_messages(&b, None, true).await.unwrap();
    assert_eq!(
        in_b.iter().map(|m| m.uid).collect::<Vec<_>>(),
        pairs.iter().map(|p| p.1).collect::<Vec<_>>()
    );
    let h = s.fetch_headers(&b, &[pairs[0].1]).await.unwrap();
    assert_eq!(h[0].get("Message-ID"), Some("<move-me@opush.test>"));
    assert!(matches!(
        s.move_messages(&b, &[pairs[0].1], "opush-test-nowhere")
            .await,
        Err(ImapError::NotFound(_))
    ));

    assert_eq!(s.empty_folder(&b).await.unwrap(), 2);
    assert_eq!(s.status(&b).await.unwrap().messages, 0);
    s.delete_folder(&a).await.unwrap();
    s.delete_folder(&b).await.unwrap();
}

#[tokio::test]
async fn headers_structure_and_ranged_fetch_of_a_10mb_attachment() {
    let mut s = login().await;
    let folder = unique("big");
    s.create_folder(&folder).await.unwrap();
    // 10 MiB of pseudo-random bytes, base64 in 76-column lines.
    let mut x: u32 = 0x1234_5678;
    let raw: Vec<u8> = (0..10 * 1024 * 1024)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    let encoded = base64_lines(&raw);
    let mut msg = b"From: Alice <alice@example.test>\r\nTo: load0047@load.test\r\nSubject: big\r\n\
        Message-ID: <big@opush.test>\r\nMIME-Version: 1.0\r\n\
        Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n\
        Content-Type: text/plain; charset=us-ascii\r\n\r\nsee attachment\r\n--b1\r\n\
        Content-Type: application/octet-stream; name=\"big.bin\"\r\n\
        Content-Disposition: attachment; filename=\"big.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        .to_vec();
    msg.extend_from_slice(&encoded);
    msg.extend_from_slice(b"\r\n--b1--\r\n");
    let uid = s.append(&folder, &[], None, &msg).await.unwrap().unwrap();

    let h = s.fetch_headers(&folder, &[uid]).await.unwrap();
    assert_eq!(h.len(), 1);
    assert_eq!(h[0].get("subject"), Some("big"));
    assert_eq!(h[0].get("From"), Some("Alice <alice@example.test>"));
    assert_eq!(h[0].body.mime_type, "multipart/mixed");
    let att = h[0].body.find("2").expect("part 2");
    assert_eq!(att.mime_type, "application/octet-stream");
    assert_eq!(att.filename(), Some("big.bin"));
    assert_eq!(att.encoding, "base64");
    assert_eq!(att.disposition.as_deref(), Some("attachment"));
    assert_eq!(att.size as usize, encoded.len());
    assert_eq!(h[0].body.leaves().len(), 2);

    let chunk = 1024 * 1024;
    let mut got = Vec::new();
    loop {
        let part = s
            .fetch_partial(&folder, uid, "2", got.len() as u32, chunk)
            .await
            .unwrap();
        let n = part.len();
        got.extend_from_slice(&part);
        if n < chunk as usize {
            break;
        }
    }
    assert_eq!(got.len(), encoded.len());
    assert!(
        got == encoded,
        "ranged fetch differs from the appended attachment"
    );
    let text = s.fetch_partial(&folder, uid, "1", 0, 100).await.unwrap();
    assert_eq!(text, b"see attachment");

    assert!(matches!(
        s.fetch_message(&folder, uid, 1024 * 1024).await,
        Err(ImapError::TooLarge { limit, .. }) if limit == 1024 * 1024
    ));
    let whole = s
        .fetch_message(&folder, uid, 20 * 1024 * 1024)
        .await
        .unwrap();
    assert_eq!(whole, msg);
    assert!(matches!(
        s.fetch_partial(&folder, uid + 100, "1", 0, 10).await,
        Err(ImapError::NotFound(_))
    ));
    assert!(matches!(
        s.fetch_partial(&folder, uid, "1]", 0, 10).await,
        Err(ImapError::InvalidInput(_))
    ));
    s.delete_folder(&folder).await.unwrap();
}

fn base64_lines(data: &[u8]) -> Vec<u8> {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::with_capacity(data.len() * 4 / 3 + data.len() / 38);
    let mut col = 0;
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= c.len() {
                out.push(A[((n >> (18 - 6 * i)) & 63) as usize]);
            } else {
                out.push(b'=');
            }
        }
        col += 4;
        if col == 76 {
            out.extend_from_slice(b"\r\n");
            col = 0;
        }
    }
    out
}

#[tokio::test]
async fn search_by_subject_from_body_and_date() {
    let mut s = login().await;
    let folder = unique("search");
    s.create_folder(&folder).await.unwrap();
    let u1 = s
        .append(
            &folder,
            &[],
            Some(1_600_000_000),
            &message("alpha report", "carol@example.test", "has a needle"),
        )
        .await
        .unwrap()
        .unwrap();
    let u2 = s
        .append(
            &folder,
            &[],
            Some(1_700_000_000),
            &message("Bêta réunion", "dave@example.test", "nothing"),
        )
        .await
        .unwrap()
        .unwrap();
    let q = |f: fn(&mut SearchQuery)| {
        let mut q = SearchQuery::default();
        f(&mut q);
        q
    };
    assert_eq!(
        s.search(&folder, &q(|q| q.subject = Some("alpha".into())))
            .await
            .unwrap(),
        vec![u1]
    );
    assert_eq!(
        s.search(&folder, &q(|q| q.subject = Some("réunion".into())))
            .await
            .unwrap(),
        vec![u2]
    );
    assert_eq!(
        s.search(&folder, &q(|q| q.from = Some("dave".into())))
            .await
            .unwrap(),
        vec![u2]
    );
    assert_eq!(
        s.search(&folder, &q(|q| q.body = Some("needle".into())))
            .await
            .unwrap(),
        vec![u1]
    );
    assert_eq!(
        s.search(&folder, &q(|q| q.since = Some(1_650_000_000)))
            .await
            .unwrap(),
        vec![u2]
    );
    assert_eq!(
        s.search(&folder, &SearchQuery::default()).await.unwrap(),
        vec![u1, u2]
    );
    assert!(s
        .search(&folder, &q(|q| q.subject = Some("zzz-nothing".into())))
        .await
        .unwrap()
        .is_empty());
    assert!(matches!(
        s.search(&folder, &q(|q| q.subject = Some("a\r\nb".into())))
            .await,
        Err(ImapError::InvalidInput(_))
    ));
    s.delete_folder(&folder).await.unwrap();
}

#[tokio::test]
async fn idle_wakes_on_append_from_another_connection() {
    let mut watcher = login().await;
    let folder = unique("idle");
    watcher.create_folder(&folder).await.unwrap();
    assert_eq!(
        watcher
            .idle_wait(&folder, Duration::from_millis(500))
            .await
            .unwrap(),
        IdleOutcome::Timeout
    );

    let f = folder.clone();
    let waiting = tokio::spawn(async move {
        let out = watcher.idle_wait(&f, Duration::from_secs(30)).await;
        (watcher, out)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut writer = login().await;
    writer
        .append(&folder, &[], None, &message("wake up", "x@y.test", "ping"))
        .await
        .unwrap();
    let (mut watcher, out) = tokio::time::timeout(Duration::from_secs(40), waiting)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.unwrap(), IdleOutcome::Changed);
    // The session is usable after IDLE and sees the new message.
    assert_eq!(
        watcher
            .list_messages(&folder, None, true)
            .await
            .unwrap()
            .len(),
        1
    );
    watcher.delete_folder(&folder).await.unwrap();
}

#[tokio::test]
async fn pool_reuses_per_credentials_and_is_bounded() {
    require_dovecot().await;
    let mut c = cfg();
    c.pool_size = 1;
    c.timeout_ms = 5_000;
    let pool = ImapPool::new(c);
    {
        let mut s = pool.get(USER, &password()).await.unwrap();
        s.noop().await.unwrap();
        // The only connection is busy: the next one waits, then gives up.
        let err = pool.get(USER, &password()).await.unwrap_err();
        assert!(matches!(err, ImapError::Unavailable(_)), "{err:?}");
    }
    assert_eq!(pool.idle_count(USER), 1);
    // Same credentials: the idle session is reused.
    {
        let _s = pool.get(USER, &password()).await.unwrap();
        assert_eq!(pool.idle_count(USER), 0);
    }
    assert_eq!(pool.idle_count(USER), 1);
    // Other password: the idle session is not handed out; the server says no.
    let err = pool.get(USER, &Secret::new("wrong")).await.unwrap_err();
    assert!(matches!(err, ImapError::Auth { .. }), "{err:?}");
    let s = pool.get_master("alice@example.test").await.unwrap();
    assert_eq!(s.user(), "alice@example.test");
    s.discard();
    assert_eq!(pool.idle_count("alice@example.test"), 0);
}

#[tokio::test]
async fn pool_waits_for_a_busy_session_before_logging_in_another() {
    require_dovecot().await;
    // A user of its own: the idle count below is this test's alone.
    const GROWING: &str = "load0066@load.test";
    let mut c = cfg();
    c.pool_size = 4;
    let pool = ImapPool::new(c);
    let held = pool.get(GROWING, &password()).await.unwrap();
    // The first session comes back well within the pool's grace period:
    // the waiting request gets it instead of a second login.
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(2)).await;
        drop(held);
    });
    let mut second = pool.get(GROWING, &password()).await.unwrap();
    second.noop().await.unwrap();
    release.await.unwrap();
    drop(second);
    assert_eq!(pool.idle_count(GROWING), 1, "one connection served both");
    // A session held past the grace period: the pool grows.
    let held = pool.get(GROWING, &password()).await.unwrap();
    let other = pool.get(GROWING, &password()).await.unwrap();
    drop((held, other));
    assert_eq!(pool.idle_count(GROWING), 2);
}
