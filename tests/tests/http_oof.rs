//! Out-of-office from the device (Settings `Oof`) as a Sieve vacation
//! script over ManageSieve, and the conversation rules of ItemOperations
//! `Move` with `MoveAlways` in the same script, against a private Dovecot with LMTP, Pigeonhole
//! Sieve and ManageSieve (`scripts/dovecot-private --sieve`: IMAP 11695,
//! LMTP 11696, ManageSieve 11697). Replies really go out: a message is
//! delivered over LMTP to the user on the private instance, Dovecot's
//! vacation action sends the reply through the stack's Postfix, which
//! delivers it into the sender's INBOX on the shared Dovecot.
//!
//! Users: load1171, 1173, 1175, 1177, 1179, 1180 and 1298 live on the
//! private instance (out-of-office and conversation rules set there);
//! load1172, 1174, 1176, 1178 and 1299 send and receive the replies on the
//! shared one (load1176 also has a home on
//! the private instance, for the client's own test). The tests share the private
//! instance one at a time (`LOCK`), each starting from an empty home.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use opush_protocol::commands::folder_delete::FolderDeleteResponse;
use opush_protocol::commands::folder_update::FolderUpdateResponse;
use opush_protocol::commands::settings::{
    OofAudience, OofMessage, OofRequest, OofSettings, SettingsRequest, SettingsResponse,
};
use opush_protocol::wbxml::encode_to_vec;
use opush_server::backends::sieve::{SieveClient, SieveError, SieveLogin, SieveSettings};
use opush_tests::eas::EasClient;
use opush_tests::{
    demo_password, repo_root, require, unique, PrivateDovecot, RawImap, DOVECOT_IMAP, POSTFIX_SMTP,
};
use support::{version, Options};

/// The private instance's IMAP port (LMTP +1, ManageSieve +2).
const PORT: u16 = 11695;
/// A port in this file's range where nothing listens (ManageSieve "down").
const CLOSED_PORT: u16 = 11698;
/// The port of the tap that cuts ManageSieve connections.
const TAP_PORT: u16 = 11699;

/// One test at a time on the private instance.
static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The private instance, up, with `users`' homes (mail and scripts) emptied.
fn dovecot(users: &[&str]) -> PrivateDovecot {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let d = PrivateDovecot::new(repo_root().join("target/tmp/oof-sieve"), PORT).with_sieve();
    d.run("up");
    for u in users {
        let (local, domain) = u.split_once('@').unwrap();
        let home = d.dir.join("mail").join(domain).join(local);
        if home.exists() {
            std::fs::remove_dir_all(&home).unwrap();
        }
    }
    d
}

/// opush against the private instance, `[sieve]` on `sieve_port`.
async fn opush(sieve_port: u16, sieve_extra: &str) -> support::Opush {
    support::start(Options {
        imap_port: PORT,
        extra_toml: format!(
            "[sieve]\nenabled = true\nhost = \"127.0.0.1\"\nport = {sieve_port}\ntimeout_ms = 5000\n{sieve_extra}"
        ),
        ..Options::default()
    })
    .await
}

fn message(audience: OofAudience, enabled: bool, text: &str, body_type: &str) -> OofMessage {
    OofMessage {
        audience,
        enabled: Some(enabled),
        reply_message: Some(text.to_owned()),
        body_type: Some(body_type.to_owned()),
    }
}

/// A Settings request carrying `oof`; the HTTP answer.
async fn settings(c: &mut EasClient, oof: OofRequest) -> opush_tests::eas::HttpResponse {
    let v = version(&c.version);
    let req = SettingsRequest {
        oof: Some(oof),
        ..SettingsRequest::default()
    };
    c.post("Settings", &encode_to_vec(&req.to_element(v))).await
}

/// Settings Oof Set, which must succeed.
async fn set(c: &mut EasClient, s: &OofSettings) {
    let res = settings(c, OofRequest::Set(s.clone())).await;
    assert_eq!(res.status, 200, "Settings: {res:?}");
    let r = SettingsResponse::from_element(&res.element(), version(&c.version)).unwrap();
    assert_eq!(r.status.code(), 1, "{}", res.xml());
    assert_eq!(r.oof.unwrap().status.code(), 1, "Oof Set: {}", res.xml());
}

/// Settings Oof Get (text bodies), which must succeed.
async fn get(c: &mut EasClient) -> OofSettings {
    let res = settings(
        c,
        OofRequest::Get {
            body_type: "Text".to_owned(),
        },
    )
    .await;
    assert_eq!(res.status, 200, "Settings: {res:?}");
    let r = SettingsResponse::from_element(&res.element(), version(&c.version)).unwrap();
    let oof = r.oof.unwrap();
    assert_eq!(oof.status.code(), 1, "Oof Get: {}", res.xml());
    oof.get.unwrap()
}

/// `user` on ManageSieve at `port` (the stack password).
async fn manage_sieve(port: u16, user: &str) -> SieveClient {
    let password = demo_password();
    SieveClient::connect(
        &sieve_settings(port),
        &SieveLogin {
            user,
            password: &password,
        },
    )
    .await
    .unwrap()
}

fn sieve_settings(port: u16) -> SieveSettings {
    SieveSettings {
        host: "127.0.0.1".into(),
        port,
        starttls: false,
        ca_file: None,
        allow_plaintext: false,
        timeout: Duration::from_secs(5),
    }
}

/// The name of `user`'s active script, if any.
async fn active_script(user: &str) -> Option<String> {
    let mut c = manage_sieve(PORT + 2, user).await;
    let scripts = c.list_scripts().await.unwrap();
    scripts.into_iter().find(|s| s.active).map(|s| s.name)
}

/// Delivers a message from `from` to `to` over the private instance's
/// LMTP; returns its Message-ID.
fn deliver(d: &PrivateDovecot, from: &str, to: &str, subject: &str) -> String {
    let id = format!("{}@load.test", unique("oof-msg"));
    deliver_with(d, (from, to), (subject, &id, ""));
    id
}

/// [`deliver`] with Message-ID `id` and more header lines (`headers`,
/// each ending in CRLF); LMTP answers once the message is stored (or
/// filed).
fn deliver_with(
    d: &PrivateDovecot,
    (from, to): (&str, &str),
    (subject, id, headers): (&str, &str, &str),
) {
    let mut w = TcpStream::connect(d.lmtp_addr()).unwrap();
    w.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut r = BufReader::new(w.try_clone().unwrap());
    fn expect(r: &mut BufReader<TcpStream>, code: &str) {
        loop {
            let mut l = String::new();
            r.read_line(&mut l).unwrap();
            assert!(l.starts_with(code), "LMTP: expected {code}, got {l:?}");
            if l.as_bytes().get(3) == Some(&b' ') {
                return;
            }
        }
    }
    expect(&mut r, "220");
    for (line, code) in [
        ("LHLO tests.load.test".to_owned(), "250"),
        (format!("MAIL FROM:<{from}>"), "250"),
        (format!("RCPT TO:<{to}>"), "250"),
        ("DATA".to_owned(), "354"),
    ] {
        write!(w, "{line}\r\n").unwrap();
        expect(&mut r, code);
    }
    write!(
        w,
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nMessage-ID: <{id}>\r\n{headers}\
         Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nHello.\r\n.\r\n"
    )
    .unwrap();
    expect(&mut r, "250");
    write!(w, "QUIT\r\n").unwrap();
}

/// Waits (up to 30 s) for a message in `user`'s INBOX on the shared
/// Dovecot whose body contains `needle`; returns it whole.
fn reply_in_inbox(user: &str, needle: &str) -> String {
    let mut imap = RawImap::login(user);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        imap.ok("SELECT INBOX");
        let uids = imap.uid_search(&format!("BODY \"{needle}\""));
        if let Some(uid) = uids.first() {
            return imap.fetch_message(*uid);
        }
        assert!(
            Instant::now() < deadline,
            "no auto-reply containing {needle:?} reached {user}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What the private instance logged about the delivery of `msgid`, once
/// it logged where the message was stored (Dovecot's log process writes
/// shortly after LMTP answers).
fn delivery_log(d: &PrivateDovecot, msgid: &str) -> Vec<String> {
    let marker = format!("msgid=<{msgid}>");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let lines: Vec<String> = d
            .log()
            .lines()
            .filter(|l| l.contains(&marker))
            .map(str::to_owned)
            .collect();
        if lines.iter().any(|l| l.contains("stored mail into mailbox")) || Instant::now() > deadline
        {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

// Global out-of-office with internal and external texts (14.1): the script
// is opush's and active, Get answers exactly what was set, an internal
// sender gets the internal text through Postfix, and every Oof request is
// recorded and replays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_out_of_office_replies_and_reads_back_as_set_14_1() {
    let _one = LOCK.lock().await;
    let (user, sender) = ("load1171@load.test", "load1172@load.test");
    let d = dovecot(&[user]);
    let opush = opush(PORT + 2, "").await;
    let mut c = opush.client(user, "OOF141", "14.1");
    let internal = unique("internal-text");
    let external = unique("external-text");
    let s = OofSettings {
        state: Some(1),
        start_time: None,
        end_time: None,
        messages: vec![
            message(
                OofAudience::Internal,
                true,
                &format!("{internal}\nBack Monday \"for sure\" \\o/"),
                "Text",
            ),
            message(OofAudience::ExternalKnown, false, "known-text", "Text"),
            message(
                OofAudience::ExternalUnknown,
                true,
                &format!("<p>{external} &amp; more</p>"),
                "HTML",
            ),
        ],
    };
    set(&mut c, &s).await;
    assert_eq!(active_script(user).await.as_deref(), Some("opush-oof"));
    let mut back = get(&mut c).await;
    // HTML asked back as text is the text of the HTML; the rest is as set.
    assert_eq!(
        back.messages[2].reply_message.as_deref(),
        Some(format!("{external} & more").as_str())
    );
    back.messages[2] = s.messages[2].clone();
    assert_eq!(back, s);

    // A message from a colleague (same domain) gets the internal text,
    // under the original's subject.
    let subject = unique("hello");
    let msgid = deliver(&d, sender, user, &subject);
    let reply = reply_in_inbox(sender, &internal);
    assert!(reply.contains("Back Monday \"for sure\" \\o/"), "{reply}");
    assert!(
        reply.contains(&format!("Subject: Automatic reply: {subject}\r\n")),
        "{reply}"
    );
    assert!(
        reply.contains(&format!("<{msgid}>")),
        "In-Reply-To: {reply}"
    );
    assert!(reply.contains("Auto-Submitted: auto-replied"), "{reply}");
    assert!(!reply.contains(&external), "{reply}");
    // The original is kept in the user's INBOX.
    assert_eq!(
        RawImap::login_to(d.addr(), user)
            .search_subject("INBOX", "hello")
            .len(),
        1
    );

    // Recorded: both requests are Oof decisions, and the session replays.
    let store_dir = opush.stop_keeping_store().await;
    let store = opush_storage::Store::open(&opush_storage::StorageConfig {
        path: store_dir.path().to_path_buf(),
        ..opush_storage::StorageConfig::default()
    })
    .await
    .unwrap();
    let bundle = opush_replay::export(&store, user, "OOF141", None, None)
        .await
        .unwrap();
    let report = opush_replay::run(&bundle).unwrap();
    assert!(report.is_ok(), "{report:?}");
    let oofs = bundle
        .decoded()
        .unwrap()
        .into_iter()
        .filter(|(_, e)| {
            matches!(e, opush_engine::Event::Decided { record, .. }
                if matches!(record.input, opush_engine::DecisionInput::Oof(_)))
        })
        .count();
    assert_eq!(oofs, 2, "the Set and the Get recorded");
}

// An external sender gets the external text, the HTML sent as text (16.1).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_sender_gets_the_external_text_16_1() {
    let _one = LOCK.lock().await;
    let (user, sender) = ("load1173@load.test", "load1174@load.test");
    let d = dovecot(&[user]);
    // load.test senders count as external for this server.
    let opush = opush(PORT + 2, "internal_domains = [\"example.test\"]\n").await;
    let mut c = opush.client(user, "OOF161", "16.1");
    let internal = unique("internal-text");
    let external = unique("external-text");
    let s = OofSettings {
        state: Some(1),
        start_time: None,
        end_time: None,
        messages: vec![
            message(OofAudience::Internal, true, &internal, "Text"),
            message(
                OofAudience::ExternalUnknown,
                true,
                &format!("<html><body><b>{external}</b> &lt;away&gt;</body></html>"),
                "HTML",
            ),
        ],
    };
    set(&mut c, &s).await;
    deliver(&d, sender, user, &unique("question"));
    let reply = reply_in_inbox(sender, &external);
    // The HTML as set, and its text for mail programs without HTML.
    assert!(reply.contains("multipart/alternative"), "{reply}");
    assert!(reply.contains(&format!("{external} <away>")), "{reply}");
    assert!(
        reply.contains(&format!("<b>{external}</b> &lt;away&gt;")),
        "{reply}"
    );
    assert!(!reply.contains(&internal), "{reply}");
    // Get in HTML gives back the HTML exactly as set.
    let res = settings(
        &mut c,
        OofRequest::Get {
            body_type: "HTML".to_owned(),
        },
    )
    .await;
    let r = SettingsResponse::from_element(&res.element(), version("16.1")).unwrap();
    let back = r.oof.unwrap().get.unwrap();
    assert_eq!(back.messages[1], s.messages[1]);
    opush.stop().await;
}

// Time-based (12.1): outside the window nothing is sent, inside it the
// reply goes out; Get answers the window as set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_time_based_out_of_office_replies_only_within_its_window_12_1() {
    let _one = LOCK.lock().await;
    let (user, sender) = ("load1175@load.test", "load1176@load.test");
    let d = dovecot(&[user]);
    let opush = opush(PORT + 2, "").await;
    let mut c = opush.client(user, "OOF121", "12.1");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let eas_time = |secs: u64| opush_server::dates::eas_date(i64::try_from(secs).unwrap());
    let later = unique("later-text");
    let future = OofSettings {
        state: Some(2),
        start_time: Some(eas_time(now + 86_400)),
        end_time: Some(eas_time(now + 3 * 86_400)),
        messages: vec![message(OofAudience::Internal, true, &later, "Text")],
    };
    set(&mut c, &future).await;
    assert_eq!(get(&mut c).await, future);
    let msgid = deliver(&d, sender, user, &unique("too-early"));
    // The delivery is logged when LMTP answers: stored, no vacation action.
    let log = delivery_log(&d, &msgid);
    assert!(
        log.iter().any(|l| l.contains("stored mail into mailbox")),
        "{log:?}"
    );
    assert!(!log.iter().any(|l| l.contains("vacation")), "{log:?}");

    let now_text = unique("now-text");
    let current = OofSettings {
        state: Some(2),
        start_time: Some(eas_time(now - 3600)),
        end_time: Some(eas_time(now + 3600)),
        messages: vec![message(
            OofAudience::Internal,
            true,
            &format!("{now_text}\nSecond line, ${{1}} as written."),
            "Text",
        )],
    };
    set(&mut c, &current).await;
    assert_eq!(get(&mut c).await, current);
    deliver(&d, sender, user, &unique("in-time"));
    // Every line as written (the time window's block indents nothing).
    let reply = reply_in_inbox(sender, &now_text);
    assert!(
        reply.contains(&format!("{now_text}\r\nSecond line, ${{1}} as written.")),
        "{reply}"
    );

    // An end before the start: Status 6, nothing changed.
    let mut backwards = current.clone();
    backwards.end_time = Some(eas_time(now - 7200));
    let res = settings(&mut c, OofRequest::Set(backwards)).await;
    let r = SettingsResponse::from_element(&res.element(), version("12.1")).unwrap();
    assert_eq!(r.oof.unwrap().status.code(), 6, "{}", res.xml());
    assert_eq!(get(&mut c).await, current);
    opush.stop().await;
}

// The user's own filter (another active script) keeps filing mail while
// out-of-office is on, and is the active script again once it is off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_users_own_filters_keep_running_and_come_back_14_1() {
    let _one = LOCK.lock().await;
    let (user, sender) = ("load1177@load.test", "load1178@load.test");
    let d = dovecot(&[user]);
    let mut ms = manage_sieve(PORT + 2, user).await;
    ms.put_script(
        "my filters",
        "require [\"fileinto\", \"mailbox\"];\nif header :contains \"subject\" \"file-me\" {\n  fileinto :create \"Filed\";\n}\n",
    )
    .await
    .unwrap();
    ms.set_active("my filters").await.unwrap();
    ms.logout().await;

    let opush = opush(PORT + 2, "").await;
    let mut c = opush.client(user, "OOFKEEP", "14.1");
    let text = unique("away-text");
    let on = OofSettings {
        state: Some(1),
        start_time: None,
        end_time: None,
        messages: vec![message(OofAudience::Internal, true, &text, "Text")],
    };
    set(&mut c, &on).await;
    assert_eq!(active_script(user).await.as_deref(), Some("opush-oof"));
    // Setting it again keeps the user's script as the one to come back to.
    set(&mut c, &on).await;

    let subject = unique("file-me");
    deliver(&d, sender, user, &subject);
    reply_in_inbox(sender, &text);
    assert_eq!(
        RawImap::login_to(d.addr(), user)
            .search_subject("Filed", &subject)
            .len(),
        1,
        "the user's filter filed the message"
    );

    // Off, the state alone ([MS-ASCMD] 2.2.3.124): the messages stay for
    // the next time.
    set(
        &mut c,
        &OofSettings {
            state: Some(0),
            start_time: None,
            end_time: None,
            messages: Vec::new(),
        },
    )
    .await;
    assert_eq!(active_script(user).await.as_deref(), Some("my filters"));
    let off = OofSettings {
        state: Some(0),
        ..on.clone()
    };
    assert_eq!(get(&mut c).await, off);
    // The user's script is untouched.
    let mut ms = manage_sieve(PORT + 2, user).await;
    let mine = ms.get_script("my filters").await.unwrap().unwrap();
    assert!(mine.contains("fileinto :create \"Filed\""), "{mine}");
    opush.stop().await;
}

/// A tap in front of ManageSieve that forwards everything and cuts both
/// connections when the client sends a line starting with `cut_at`.
async fn cutting_tap(
    listen: u16,
    to: SocketAddr,
    cut_at: &'static str,
) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = tokio::net::TcpListener::bind(("127.0.0.1", listen))
        .await
        .unwrap();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = l.accept().await {
            let mut server = tokio::net::TcpStream::connect(to).await.unwrap();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.split();
                let (mut sr, mut sw) = server.split();
                let up = async {
                    let mut buf = vec![0u8; 65536];
                    loop {
                        let n = cr.read(&mut buf).await.unwrap_or(0);
                        if n == 0 || buf[..n].starts_with(cut_at.as_bytes()) {
                            return;
                        }
                        if sw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                };
                let down = async {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                };
                tokio::select! { () = up => {}, () = down => {} }
            });
        }
    })
}

// ManageSieve down: the device gets the retry answer (111 from 14.0, 503
// before) and nothing changes; cut between writing the script and
// activating it, the user's filters stay active and the retry completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manage_sieve_outage_is_a_retry_and_writes_nothing_half_way() {
    let _one = LOCK.lock().await;
    let user = "load1179@load.test";
    let d = dovecot(&[user]);
    let mut ms = manage_sieve(PORT + 2, user).await;
    ms.put_script("mine", "keep;\n").await.unwrap();
    ms.set_active("mine").await.unwrap();
    ms.logout().await;
    let on = OofSettings {
        state: Some(1),
        start_time: None,
        end_time: None,
        messages: vec![message(OofAudience::Internal, true, &unique("t"), "Text")],
    };

    // Nothing listens.
    let down = opush(CLOSED_PORT, "").await;
    let mut c = down.client(user, "OOFDOWN", "14.1");
    let res = settings(&mut c, OofRequest::Set(on.clone())).await;
    assert_eq!(res.status, 200, "{res:?}");
    assert!(res.xml().contains("<Status>111</Status>"), "{}", res.xml());
    let mut old = down.client(user, "OOFDOWN12", "12.1");
    let res = settings(&mut old, OofRequest::Set(on.clone())).await;
    assert_eq!(res.status, 503, "{res:?}");
    assert!(res.header("Retry-After").is_some(), "{res:?}");
    down.stop().await;
    assert_eq!(active_script(user).await.as_deref(), Some("mine"));
    let mut ms = manage_sieve(PORT + 2, user).await;
    assert_eq!(ms.get_script("opush-oof").await.unwrap(), None);
    ms.logout().await;

    // Cut after PUTSCRIPT, before SETACTIVE.
    let tap = cutting_tap(TAP_PORT, d.sieve_addr(), "SETACTIVE").await;
    let cut = opush(TAP_PORT, "").await;
    let mut c = cut.client(user, "OOFCUT", "14.1");
    let res = settings(&mut c, OofRequest::Set(on.clone())).await;
    assert!(res.xml().contains("<Status>111</Status>"), "{}", res.xml());
    cut.stop().await;
    tap.abort();
    assert_eq!(active_script(user).await.as_deref(), Some("mine"));

    // The device's retry completes it, the user's script still included.
    let up = opush(PORT + 2, "").await;
    let mut c = up.client(user, "OOFCUT", "14.1");
    assert_eq!(get(&mut c).await.state, Some(0), "not active yet");
    set(&mut c, &on).await;
    assert_eq!(get(&mut c).await, on);
    assert_eq!(active_script(user).await.as_deref(), Some("opush-oof"));
    let mut ms = manage_sieve(PORT + 2, user).await;
    let ours = ms.get_script("opush-oof").await.unwrap().unwrap();
    assert!(
        ours.contains("include :personal :optional \"mine\""),
        "{ours}"
    );
    up.stop().await;
}

/// `user`'s password on the private instance becomes `password` (its
/// passwd-file, which Dovecot re-reads when it changes); `dovecot()` puts
/// the stack password back.
fn change_password(d: &PrivateDovecot, user: &str, password: &str) {
    let out = std::process::Command::new("doveadm")
        .args([
            "-c",
            "/dev/null",
            "pw",
            "-s",
            "SHA512-CRYPT",
            "-p",
            password,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "doveadm pw");
    let hash = String::from_utf8(out.stdout).unwrap();
    let file = d.dir.join("users");
    let users = std::fs::read_to_string(&file).unwrap();
    let prefix = format!("{user}:");
    let changed: String = users
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                format!("{user}:{}::::::\n", hash.trim())
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(users, changed, "{user} in {}", file.display());
    std::fs::write(&file, changed).unwrap();
    // Dovecot notices a change by mtime (seconds) and size, and the size
    // is the same: another mtime than the file had when it was read. It
    // looks at most once a second.
    std::fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(std::time::SystemTime::now() - Duration::from_secs(3600))
        .unwrap();
    std::thread::sleep(Duration::from_millis(1100));
}

// The password changed since opush remembered the login: ManageSieve
// refuses the device's credentials, the device gets 401 and nothing is
// written. A wrong password is refused before (401), and ManageSieve
// itself answers it as `Auth`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_password_is_a_401_and_writes_nothing() {
    let _one = LOCK.lock().await;
    let user = "load1180@load.test";
    let d = dovecot(&[user]);
    let opush = opush(PORT + 2, "").await;
    let mut c = opush.client(user, "OOFPW", "14.1");
    // The login is checked and remembered (`[server] auth_cache_ttl_s`).
    assert_eq!(get(&mut c).await.state, Some(0));
    change_password(&d, user, "a-new-password");
    let on = OofSettings {
        state: Some(1),
        start_time: None,
        end_time: None,
        messages: vec![message(OofAudience::Internal, true, "x", "Text")],
    };
    let res = settings(&mut c, OofRequest::Set(on.clone())).await;
    assert_eq!(res.status, 401, "{res:?}");
    assert!(res.header("WWW-Authenticate").is_some(), "{res:?}");
    let mut wrong = EasClient::new(opush.addr, user, "not-the-password", "OOFPW2", "14.1");
    let res = settings(&mut wrong, OofRequest::Set(on)).await;
    assert_eq!(res.status, 401, "{res:?}");
    opush.stop().await;

    // Each refused login costs an auth penalty (private instances keep
    // it): Dovecot answers late.
    let mut slow = sieve_settings(PORT + 2);
    slow.timeout = Duration::from_secs(40);
    let err = SieveClient::connect(
        &slow,
        &SieveLogin {
            user,
            password: "not-the-password",
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        err,
        SieveError::Auth {
            user: user.to_owned()
        }
    );
    // The stack password back: no script was written.
    let _d = dovecot(&[]);
    let password = demo_password();
    let mut ms = SieveClient::connect(
        &slow,
        &SieveLogin {
            user,
            password: &password,
        },
    )
    .await
    .unwrap();
    assert_eq!(ms.list_scripts().await.unwrap(), []);
    ms.logout().await;
}

// The ManageSieve client against Dovecot's: scripts and names round-trip
// (UTF-8 literals, quotes), refusals carry the server's code, a missing
// script is `None`, STARTTLS and clear-text passwords are checked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_manage_sieve_client_round_trips_scripts_and_types_refusals() {
    let _one = LOCK.lock().await;
    // A user of the shared instance, with its own home on the private one.
    let user = "load1176@load.test";
    let _d = dovecot(&[user]);
    let mut c = manage_sieve(PORT + 2, user).await;
    assert!(c.extensions().iter().any(|e| e == "vacation"));
    assert_eq!(c.list_scripts().await.unwrap(), []);
    assert_eq!(c.get_script("nope").await.unwrap(), None);
    let text = "# café ☕ \"quoted\" \\ back\r\nkeep;\r\n";
    let name = "a \"quoted\" name";
    c.put_script(name, text).await.unwrap();
    assert_eq!(c.get_script(name).await.unwrap().as_deref(), Some(text));
    c.set_active(name).await.unwrap();
    let scripts = c.list_scripts().await.unwrap();
    assert_eq!(scripts.len(), 1);
    assert!(scripts[0].active && scripts[0].name == name, "{scripts:?}");
    // Does not compile: refused, the stored script unchanged.
    let err = c.put_script(name, "vacation;").await.unwrap_err();
    assert!(
        matches!(
            &err,
            SieveError::Rejected {
                command: "PUTSCRIPT",
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(c.get_script(name).await.unwrap().as_deref(), Some(text));
    assert!(c.check_script("keep;").await.is_ok());
    assert!(c.check_script("fileinto \"x\";").await.is_err());
    let err = c.set_active("nope").await.unwrap_err();
    assert!(
        matches!(&err, SieveError::Rejected { code, .. } if code == "NONEXISTENT"),
        "{err:?}"
    );
    assert!(matches!(
        c.put_script("a\r\nLOGOUT", "keep;").await,
        Err(SieveError::InvalidInput(_))
    ));
    c.set_active("").await.unwrap();
    assert!(c.list_scripts().await.unwrap().iter().all(|s| !s.active));
    c.logout().await;

    let password = demo_password();
    let login = SieveLogin {
        user,
        password: &password,
    };
    // The stack's ManageSieve has no TLS: STARTTLS asked is refused before
    // any password is sent.
    let mut tls = sieve_settings(PORT + 2);
    tls.starttls = true;
    assert!(matches!(
        SieveClient::connect(&tls, &login).await,
        Err(SieveError::Protocol(_))
    ));
    // No password in clear to a host that is not loopback.
    let mut remote = sieve_settings(4190);
    remote.host = "mail.example.org".into();
    assert!(matches!(
        SieveClient::connect(&remote, &login).await,
        Err(SieveError::InvalidInput(_))
    ));
    // Nothing listening: an outage.
    assert!(matches!(
        SieveClient::connect(&sieve_settings(CLOSED_PORT), &login).await,
        Err(SieveError::Unavailable(_))
    ));
}

// ItemOperations Move with MoveAlways (14.1, [MS-ASCMD] 2.2.3.118): the
// conversation's messages move now, and its later ones are filed into the
// same folder as they are delivered (a rule in opush's Sieve script),
// out-of-office on or off; another thread, and a message that names the
// root only later in its References, stay in INBOX. A retried Move (its
// answer lost) renews the rule. Users: load1298 (private), load1299 (the
// colleague writing, who gets the out-of-office replies).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_moved_always_takes_its_later_messages_14_1() {
    use opush_protocol::commands::item_operations::Operation;
    let _one = LOCK.lock().await;
    let (user, sender) = ("load1298@load.test", "load1299@load.test");
    let d = dovecot(&[user]);
    let mut imap = RawImap::login_to(d.addr(), user);
    // A non-ASCII name: IMAP's modified UTF-7, Sieve's UTF-8.
    let (name, folder) = ("Ignorés stuff", "Ignor&AOk-s stuff");
    for cmd in [
        format!("CREATE \"{folder}\""),
        format!("SUBSCRIBE \"{folder}\""),
    ] {
        let (_, ok) = imap.cmd(&cmd);
        assert!(ok.starts_with("OK"), "{cmd}: {ok}");
    }
    let marker = unique("thread");
    // A root with wildcards in its id: matched as written.
    let root = format!("{marker}*r?t@load.test");
    let id = |n: &str| format!("{marker}-{n}@load.test");
    let to = (sender, user);
    let refs = |ids: &[&str]| {
        let list: Vec<String> = ids.iter().map(|i| format!("<{i}>")).collect();
        format!("References: {}\r\n", list.join("\r\n "))
    };
    deliver_with(&d, to, (&format!("{marker} root"), &root, ""));
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} reply1"),
            &id("reply1"),
            &format!("In-Reply-To: <{root}>\r\n{}", refs(&[&root])),
        ),
    );
    deliver_with(&d, to, (&format!("{marker} other"), &id("other"), ""));

    let opush = opush(PORT + 2, "").await;
    let mut c = opush.client(user, "CONVRULE141", "14.1");
    let oof = OofSettings {
        state: Some(1),
        start_time: None,
        end_time: None,
        messages: vec![message(
            OofAudience::Internal,
            true,
            &unique("away"),
            "Text",
        )],
    };
    set(&mut c, &oof).await;
    let fs = support::folders(&mut c).await;
    let dst = support::folder_named(&fs, name).unwrap().0;
    let conversation =
        opush_server::email::conversation::conversation_id(None, None, Some(&format!("<{root}>")))
            .unwrap()
            .to_vec();
    let mv = || Operation::Move {
        conversation_id: conversation.clone(),
        dst_fld_id: dst.clone(),
        move_always: true,
    };
    let (status, _) = support::move_conversation(&mut c, "14.1", mv()).await;
    assert_eq!(status, 1);
    let subjects = |imap: &mut RawImap, f: &str| {
        let mut s: Vec<String> = imap
            .search_subject(f, &marker)
            .into_iter()
            .map(|uid| {
                let m = imap.fetch_message(uid);
                m.lines()
                    .find_map(|l| {
                        l.strip_prefix(&format!("Subject: {marker} "))
                            .map(|s| s.trim().to_owned())
                    })
                    .unwrap_or_default()
            })
            .collect();
        s.sort();
        s
    };
    assert_eq!(subjects(&mut imap, folder), ["reply1", "root"]);
    assert_eq!(subjects(&mut imap, "INBOX"), ["other"]);
    // Out-of-office is as it was.
    assert_eq!(get(&mut c).await.state, Some(1));

    // Later messages of the thread go to the folder on delivery; one that
    // names the root only after another id stays in INBOX.
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} reply2"),
            &id("reply2"),
            &refs(&[&root, &id("reply1")]),
        ),
    );
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} bare"),
            &id("bare"),
            &format!("In-Reply-To: <{root}>\r\n"),
        ),
    );
    // An empty References names no root: In-Reply-To's counts.
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} empty-refs"),
            &id("empty-refs"),
            &format!("References: \r\nIn-Reply-To: <{root}>\r\n"),
        ),
    );
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} elsewhere"),
            &id("elsewhere"),
            &refs(&[&id("x"), &root]),
        ),
    );
    assert_eq!(
        subjects(&mut imap, folder),
        ["bare", "empty-refs", "reply1", "reply2", "root"]
    );
    assert_eq!(subjects(&mut imap, "INBOX"), ["elsewhere", "other"]);

    // Out-of-office off: the script stays active for the rule.
    set(
        &mut c,
        &OofSettings {
            state: Some(0),
            ..oof.clone()
        },
    )
    .await;
    assert_eq!(get(&mut c).await.state, Some(0));
    assert_eq!(active_script(user).await.as_deref(), Some("opush-oof"));
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} reply3"),
            &id("reply3"),
            &refs(&[&root, &id("reply2")]),
        ),
    );
    assert_eq!(
        subjects(&mut imap, folder),
        ["bare", "empty-refs", "reply1", "reply2", "reply3", "root"]
    );

    // The Move again (its answer lost): all of the thread is there
    // already, the rule is renewed, still one.
    let (status, _) = support::move_conversation(&mut c, "14.1", mv()).await;
    assert_eq!(status, 1);
    let mut ms = manage_sieve(PORT + 2, user).await;
    let script = ms.get_script("opush-oof").await.unwrap().unwrap();
    assert_eq!(script.matches("\n# conversation ").count(), 1, "{script}");
    assert!(
        script.contains(&format!("fileinto \"{name}\";")),
        "{script}"
    );
    assert_eq!(active_script(user).await.as_deref(), Some("opush-oof"));
    drop(ms);

    // The device renames the folder: the rule follows it.
    let renamed = "Renamed";
    let xml = format!(
        "<FolderUpdate xmlns=\"FolderHierarchy:\"><SyncKey>{}</SyncKey><ServerId>{dst}</ServerId>\
         <ParentId>0</ParentId><DisplayName>{renamed}</DisplayName></FolderUpdate>",
        fs.sync_key.as_ref().unwrap().0
    );
    let res = c.post_xml("FolderUpdate", &xml).await;
    let r = FolderUpdateResponse::from_element(&res.element(), support::version("14.1")).unwrap();
    assert_eq!(r.status.code(), 1, "{}", res.xml());
    let key = r.sync_key.unwrap().0;
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} reply4"),
            &id("reply4"),
            &refs(&[&root, &id("reply3")]),
        ),
    );
    assert_eq!(subjects(&mut imap, renamed).len(), 7);
    assert_eq!(subjects(&mut imap, "INBOX"), ["elsewhere", "other"]);

    // It deletes the folder: the rule goes (the later messages stay in
    // INBOX), and opush's script, with nothing left to do, is no longer
    // the active one.
    let xml = format!(
        "<FolderDelete xmlns=\"FolderHierarchy:\"><SyncKey>{key}</SyncKey><ServerId>{dst}</ServerId></FolderDelete>"
    );
    let res = c.post_xml("FolderDelete", &xml).await;
    let r = FolderDeleteResponse::from_element(&res.element(), support::version("14.1")).unwrap();
    assert_eq!(r.status.code(), 1, "{}", res.xml());
    let mut ms = manage_sieve(PORT + 2, user).await;
    let script = ms.get_script("opush-oof").await.unwrap().unwrap();
    assert!(!script.contains("# conversation "), "{script}");
    assert_eq!(active_script(user).await, None);
    deliver_with(
        &d,
        to,
        (
            &format!("{marker} reply5"),
            &id("reply5"),
            &refs(&[&root, &id("reply4")]),
        ),
    );
    assert_eq!(
        subjects(&mut imap, "INBOX"),
        ["elsewhere", "other", "reply5"]
    );
    opush.stop().await;
}

// Five devices of one user each move a conversation with MoveAlways at
// the same moment: each Move reads opush's script, adds its rule and
// writes it whole, and all five rules are kept. opush makes the rewrites of
// a user's script take turns (`oof::ScriptWriters`); here Dovecot's
// ManageSieve logins also come a few ms apart, so without the turns a
// rule is lost only when two read-modify-writes still overlap, not on
// every run. Users: load1314 (private), load1315.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moves_from_several_devices_at_once_keep_every_rule_16_1() {
    use opush_protocol::commands::item_operations::Operation;
    let _one = LOCK.lock().await;
    let (user, sender) = ("load1314@load.test", "load1315@load.test");
    let d = dovecot(&[user]);
    let mut imap = RawImap::login_to(d.addr(), user);
    for cmd in ["CREATE Ignored", "SUBSCRIBE Ignored"] {
        let (_, ok) = imap.cmd(cmd);
        assert!(ok.starts_with("OK"), "{cmd}: {ok}");
    }
    let marker = unique("five");
    let roots: Vec<String> = (0..5).map(|i| format!("{marker}-{i}@load.test")).collect();
    for (i, root) in roots.iter().enumerate() {
        deliver_with(&d, (sender, user), (&format!("{marker} {i}"), root, ""));
    }
    // Each device's FolderSync, then its Move, all at once: a busy
    // user's IMAP pool grows at once, so the Moves overlap.
    let opush = support::start(Options {
        imap_port: PORT,
        imap_toml: "pool_size = 8\npool_grow_after_ms = 0\n".into(),
        extra_toml: format!(
            "[sieve]\nenabled = true\nhost = \"127.0.0.1\"\nport = {}\ntimeout_ms = 5000\n",
            PORT + 2
        ),
        ..Options::default()
    })
    .await;
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(roots.len()));
    let moves: Vec<_> = roots
        .iter()
        .enumerate()
        .map(|(i, root)| {
            let mut c = opush.client(user, &format!("FIVE{i}"), "16.1");
            let conversation = opush_server::email::conversation::conversation_id(
                None,
                None,
                Some(&format!("<{root}>")),
            )
            .unwrap()
            .to_vec();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                let fs = support::folders(&mut c).await;
                let dst = support::folder_named(&fs, "Ignored").unwrap().0;
                barrier.wait().await;
                let op = Operation::Move {
                    conversation_id: conversation,
                    dst_fld_id: dst,
                    move_always: true,
                };
                support::move_conversation(&mut c, "16.1", op).await.0
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for m in moves {
        statuses.push(m.await.unwrap());
    }
    assert_eq!(statuses, [1; 5]);
    let mut ms = manage_sieve(PORT + 2, user).await;
    let script = ms.get_script("opush-oof").await.unwrap().unwrap();
    assert_eq!(script.matches("\n# conversation ").count(), 5, "{script}");
    assert_eq!(imap.search_subject("Ignored", &marker).len(), 5);
    opush.stop().await;
}
