//! Logs, access log and metrics of a whole device session against the real
//! Dovecot and Postfix (embedded store): `opush serve` in-process with an access log
//! and an admin address; every named logger switched to TRACE through the
//! admin address; a session of Autodiscover, Provision, FolderSync, Sync,
//! ItemOperations, Settings (with a device password), SendMail and a
//! wrong-password request; then:
//! - no password, nor any base64 form of it, appears in any log output
//!   (log lines, the access log) — `REQUEST.FULL` included;
//! - every line has the line format, and BREAKDOWN, SUMMARY, REQUEST.*,
//!   IMAP.COMMAND, AUTHENTICATION lines are there;
//! - the access log is in combined format;
//! - `/metrics` counters moved;
//! - SIGHUP re-reads the `[logging]` levels;
//! - with the device under full capture, no password is in what the store
//!   keeps of its requests and responses either.
//!
//! Reserved Dovecot user: bob@example.test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;
use http_support::{basic, request, Resp};

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_protocol::xml::{wbxml_to_xml, xml_to_wbxml};
use opush_server::config::Config;
use opush_server::obs::layer::{Format, Output};
use opush_server::serve::run_with;
use opush_storage::{StorageConfig, Store};
use opush_tests::{demo_password, require, unique, RawImap, DOVECOT_IMAP, POSTFIX_SMTP};
use serde::Deserialize;
use tokio::sync::oneshot;

const USER: &str = "bob@example.test";
const DEVICE: &str = "OBSDEVICE1";
const WRONG_PASSWORD: &str = "Wr0ng-Pa55word!";

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {addr}");
}

/// Every base64 form the password can take inside a base64 stream (three
/// alignments), and of `user:password` as in an Authorization header.
fn forbidden(password: &str) -> Vec<String> {
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let mut out = vec![
        password.to_owned(),
        b64(format!("{USER}:{password}").as_bytes()),
    ];
    for shift in 0..3 {
        let mut bytes = vec![b'x'; shift];
        bytes.extend_from_slice(password.as_bytes());
        let enc = b64(&bytes);
        // Drop the characters touched by the prefix and by the padding.
        let start = (shift * 4).div_ceil(3);
        let end = enc.trim_end_matches('=').len().saturating_sub(2);
        if end > start + 4 {
            out.push(enc[start..end].to_owned());
        }
    }
    out
}

fn eas_target(cmd: &str) -> String {
    format!(
        "/Microsoft-Server-ActiveSync?Cmd={cmd}&User={USER}&DeviceId={DEVICE}&DeviceType=TestPhone"
    )
}

struct Client {
    addr: SocketAddr,
    auth: String,
}

impl Client {
    async fn eas(&self, cmd: &str, xml: &str) -> (Resp, String) {
        self.eas_wbxml(cmd, xml_to_wbxml(xml).unwrap()).await
    }

    async fn eas_wbxml(&self, cmd: &str, body: Vec<u8>) -> (Resp, String) {
        let res = request(
            self.addr,
            "POST",
            &eas_target(cmd),
            &[
                ("Authorization", &self.auth),
                ("MS-ASProtocolVersion", "14.1"),
                ("Content-Type", "application/vnd.ms-sync.wbxml"),
                ("User-Agent", "ObsTest/1.0"),
            ],
            &body,
        )
        .await;
        assert_eq!(res.status, 200, "{cmd}: {res:?}");
        let xml = if res.body.is_empty() {
            String::new()
        } else {
            wbxml_to_xml(&res.body).unwrap()
        };
        (res, xml)
    }
}

/// The text of the first `<tag>` after `from` in `xml`.
fn text_after<'a>(xml: &'a str, from: usize, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = xml[from..].find(&open)? + from + open.len();
    let end = xml[start..].find('<')? + start;
    Some(&xml[start..end])
}

fn inbox_id(folder_sync_xml: &str) -> String {
    let type_pos = folder_sync_xml
        .find("<Type>2</Type>")
        .unwrap_or_else(|| panic!("no Inbox in {folder_sync_xml}"));
    let add = folder_sync_xml[..type_pos].rfind("<Add>").unwrap();
    text_after(folder_sync_xml, add, "ServerId")
        .unwrap()
        .to_owned()
}

fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

async fn admin(addr: SocketAddr, method: &str, path: &str, body: &str) -> Resp {
    request(addr, method, path, &[], body.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_session_logs_no_password_and_moves_the_metrics() {
    require(DOVECOT_IMAP);
    require(POSTFIX_SMTP);
    let password = demo_password();
    let logs = Arc::new(Mutex::new(Vec::new()));
    assert!(
        opush_server::obs::install_output(Output::Memory(logs.clone()), Format::Text),
        "another subscriber is installed in this test binary"
    );

    // A configuration with an access log and an admin address.
    let dir = tempfile::tempdir().unwrap();
    let (port, admin_port) = (free_port().await, free_port().await);
    let access_path = dir.path().join("logs/access.log");
    let config_text = format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
         public_url = \"https://mail.example.test\"\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nhost = \"127.0.0.1\"\nport = 1143\n\
         master_user = \"opush-master\"\nmaster_password = \"{password}\"\n\
         [policy]\nrequire_provisioning = false\n\
         [logging]\nlevel = \"info\"\naccess_log = \"{}\"\n",
        dir.path().join("store").display(),
        access_path.display()
    );
    let cfg = Config::from_toml(&config_text).unwrap();
    {
        let storage = StorageConfig::deserialize(toml::Value::Table(cfg.storage.clone())).unwrap();
        let store = Store::open(&storage).await.unwrap();
        store.install_schema().await.unwrap();
        // A device registered before start: `opush_devices` counts the store.
        store
            .put_device(opush_storage::DeviceRecord {
                key: opush_storage::DeviceKey::new(USER, "OBSEARLIER").unwrap(),
                device_type: "Old".into(),
                first_seen_ms: 1_700_000_000_000,
                last_seen_ms: 1_700_000_000_000,
                policy_key: None,
                state: opush_storage::DeviceState::Allowed,
                info: Default::default(),
            })
            .await
            .unwrap();
    }
    opush_server::obs::apply_logging(&cfg.logging).unwrap();
    // The free-form [storage] table may hold the Cassandra password; the
    // configuration line at start must mask it (the embedded store ignores it).
    let mut cfg = cfg;
    cfg.storage
        .insert("password".to_owned(), toml::Value::String(password.clone()));
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(run_with(cfg.clone(), async move {
        let _ = rx.await;
    }));
    let addr = cfg.server.listen;
    let admin_addr = cfg.server.admin_listen;
    wait_listening(addr).await;
    wait_listening(admin_addr).await;

    // Every logger to TRACE through the admin address.
    let before = admin(admin_addr, "GET", "/metrics", "").await;
    assert_eq!(before.status, 200);
    let mut before = String::from_utf8(before.body).unwrap();
    // The store's device count is taken at start (in the background).
    for _ in 0..100 {
        if metric(&before, "opush_devices") == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        before = String::from_utf8(admin(admin_addr, "GET", "/metrics", "").await.body).unwrap();
    }
    assert_eq!(metric(&before, "opush_devices"), 1.0, "{before}");
    for logger in opush_server::obs::Logger::ALL {
        let res = admin(
            admin_addr,
            "PUT",
            &format!("/loggers/{}", logger.name()),
            "trace",
        )
        .await;
        assert_eq!(res.status, 200, "{logger}");
    }
    assert_eq!(
        admin(admin_addr, "PUT", "/loggers/NOPE", "trace")
            .await
            .status,
        404
    );
    // Full capture of the session's device: what it stores is checked too.
    let on = admin(admin_addr, "PUT", &format!("/capture/{USER}/{DEVICE}"), "").await;
    assert_eq!(on.status, 200);
    let listed = String::from_utf8(admin(admin_addr, "GET", "/loggers", "").await.body).unwrap();
    assert!(listed.contains("REQUEST.FULL trace\n"), "{listed}");

    // A message in bob's Inbox to sync and fetch.
    let subject = unique("obs");
    let mut raw = RawImap::login(USER);
    let msg = format!(
        "From: alice@example.test\r\nTo: {USER}\r\nSubject: {subject}\r\n\r\nbody {subject}\r\n"
    );
    let (_, ok) = raw.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.contains("OK"), "{ok}");

    let c = Client {
        addr,
        auth: basic(USER, &password),
    };
    // Autodiscover (plain XML body).
    let auto = format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006\"><Request><EMailAddress>{USER}</EMailAddress><AcceptableResponseSchema>http://schemas.microsoft.com/exchange/autodiscover/mobilesync/responseschema/2006</AcceptableResponseSchema></Request></Autodiscover>"
    );
    let res = request(
        addr,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[("Authorization", &c.auth), ("Content-Type", "text/xml")],
        auto.as_bytes(),
    )
    .await;
    assert_eq!(res.status, 200);
    c.eas(
        "Provision",
        r#"<Provision xmlns="Provision:"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType></Policy></Policies></Provision>"#,
    )
    .await;
    let (_, fs) = c
        .eas(
            "FolderSync",
            r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#,
        )
        .await;
    let inbox = inbox_id(&fs);
    let sync = |key: &str| {
        format!(
            r#"<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>{key}</SyncKey><CollectionId>{inbox}</CollectionId><WindowSize>100</WindowSize></Collection></Collections></Sync>"#
        )
    };
    let (_, s0) = c.eas("Sync", &sync("0")).await;
    let key = text_after(&s0, 0, "SyncKey").unwrap().to_owned();
    let (_, s1) = c.eas("Sync", &sync(&key)).await;
    let at = s1
        .find(&subject)
        .expect("the new message is not in the Sync");
    let add = s1[..at].rfind("<Add>").unwrap();
    let server_id = text_after(&s1, add, "ServerId").unwrap().to_owned();
    let (_, io) = c
        .eas(
            "ItemOperations",
            &format!(
                r#"<ItemOperations xmlns="ItemOperations:" xmlns:airsync="AirSync:"><Fetch><Store>Mailbox</Store><airsync:CollectionId>{inbox}</airsync:CollectionId><airsync:ServerId>{server_id}</airsync:ServerId></Fetch></ItemOperations>"#
            ),
        )
        .await;
    assert!(io.contains(&subject), "{io}");
    // Settings carrying a device password: REQUEST.FULL must mask it.
    c.eas(
        "Settings",
        &format!(
            r#"<Settings xmlns="Settings:"><DevicePassword><Set><Password>{password}</Password></Set></DevicePassword><UserInformation><Get/></UserInformation></Settings>"#
        ),
    )
    .await;
    // SendMail (14.1 WBXML) to bob himself through Postfix.
    let send = SendMailRequest(ComposeRequest {
        client_id: Some(unique("obs-cid")),
        mime: format!("To: {USER}\r\nSubject: {subject}-sent\r\n\r\nsent\r\n").into_bytes(),
        ..ComposeRequest::default()
    });
    let (_, sent) = c
        .eas_wbxml(
            "SendMail",
            encode_to_vec(&send.to_element(ProtocolVersion::V14_1)),
        )
        .await;
    assert!(sent.is_empty(), "SendMail failed: {sent}");
    // A wrong password: 401, and it is not logged either.
    let res = request(
        addr,
        "POST",
        &eas_target("FolderSync"),
        &[
            ("Authorization", &basic(USER, WRONG_PASSWORD)),
            ("MS-ASProtocolVersion", "14.1"),
        ],
        &xml_to_wbxml(r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#)
            .unwrap(),
    )
    .await;
    assert_eq!(res.status, 401);
    // A FolderSync with an unknown SyncKey: HTTP 200, Status 9.
    let (_, bad_key) = c
        .eas(
            "FolderSync",
            r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>999</SyncKey></FolderSync>"#,
        )
        .await;
    assert!(bad_key.contains("<Status>9</Status>"), "{bad_key}");
    // An undecodable body: 400, and REQUEST.FULL still shows the request.
    let res = request(
        addr,
        "POST",
        &eas_target("FolderSync"),
        &[("Authorization", &c.auth), ("MS-ASProtocolVersion", "14.1")],
        b"\x03\x01\x6a\x00\xff\xff",
    )
    .await;
    assert_eq!(res.status, 400);

    // SIGHUP re-reads [logging] from the file.
    let config_path = dir.path().join("opush.toml");
    std::fs::write(
        &config_path,
        format!("{config_text}[logging.loggers]\n\"RESOURCES\" = \"debug\"\n"),
    )
    .unwrap();
    let reload = opush_server::obs::reload_on_sighup(Some(config_path)).unwrap();
    let reload = tokio::spawn(reload);
    let status = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut reloaded = false;
    for _ in 0..100 {
        let listed =
            String::from_utf8(admin(admin_addr, "GET", "/loggers", "").await.body).unwrap();
        if listed.contains("RESOURCES debug\n") && listed.contains("REQUEST.FULL info\n") {
            reloaded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(reloaded, "SIGHUP did not reload the levels");
    reload.abort();

    // Metrics moved.
    let after = String::from_utf8(admin(admin_addr, "GET", "/metrics", "").await.body).unwrap();
    let moved = |series: &str, by: f64| {
        let (b, a) = (metric(&before, series), metric(&after, series));
        assert!(a - b >= by, "{series}: {b} -> {a}\n{after}");
    };
    // By command, HTTP code and EAS Status.
    moved(
        "opush_requests_total{command=\"Sync\",code=\"200\",status=\"1\"}",
        2.0,
    );
    moved(
        "opush_requests_total{command=\"ItemOperations\",code=\"200\",status=\"1\"}",
        1.0,
    );
    moved(
        "opush_requests_total{command=\"FolderSync\",code=\"200\",status=\"1\"}",
        1.0,
    );
    moved(
        "opush_requests_total{command=\"FolderSync\",code=\"401\",status=\"-\"}",
        1.0,
    );
    moved(
        "opush_requests_total{command=\"SendMail\",code=\"200\",status=\"-\"}",
        1.0,
    );
    moved(
        "opush_requests_total{command=\"FolderSync\",code=\"200\",status=\"9\"}",
        1.0,
    );
    moved(
        "opush_request_duration_seconds_count{command=\"Sync\"}",
        2.0,
    );
    moved(
        "opush_request_duration_seconds_bucket{command=\"Sync\",le=\"+Inf\"}",
        2.0,
    );
    // The one registered before start and this session's device.
    assert_eq!(metric(&after, "opush_devices"), 2.0, "{after}");
    moved("opush_devices_created_total", 1.0);
    assert!(after.contains("# TYPE opush_parked_pings gauge"));

    tx.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    // No password in any output.
    let log_text = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    let access = std::fs::read_to_string(&access_path).unwrap();
    // Kept for a look after a failure.
    let keep = opush_tests::repo_root().join("target/tmp");
    let _ = std::fs::create_dir_all(&keep);
    let _ = std::fs::write(keep.join("obs_session.log"), &log_text);
    let _ = std::fs::write(keep.join("obs_session.access.log"), &access);
    for secret in forbidden(&password)
        .iter()
        .chain(&forbidden(WRONG_PASSWORD))
    {
        assert!(
            !log_text.contains(secret.as_str()),
            "{secret:?} in the logs"
        );
        assert!(
            !access.contains(secret.as_str()),
            "{secret:?} in the access log"
        );
    }
    // Nor in the captured requests and responses (full-capture mode).
    let storage = StorageConfig::deserialize(toml::Value::Table(cfg.storage.clone())).unwrap();
    let store = Store::open(&storage).await.unwrap();
    let captures = store
        .get_captures(&opush_storage::DeviceKey::new(USER, DEVICE).unwrap())
        .await
        .unwrap();
    assert!(captures.len() >= 4 * 8, "{} captures", captures.len());
    for c in &captures {
        let text = String::from_utf8_lossy(&c.bytes);
        for secret in forbidden(&password)
            .iter()
            .chain(&forbidden(WRONG_PASSWORD))
        {
            assert!(
                !c.bytes
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "{secret:?} in capture {} {}: {text}",
                c.req_id,
                c.kind
            );
        }
    }
    assert!(captures.iter().any(|c| c.kind == "request-head"
        && String::from_utf8_lossy(&c.bytes).contains("authorization: *")));
    // It was not silent: the masked password and the bodies are there.
    assert!(
        log_text.contains("<Password>*</Password>"),
        "REQUEST.FULL did not log Settings"
    );
    assert!(
        log_text.contains("authorization: *"),
        "REQUEST.FULL did not log headers"
    );
    assert!(
        log_text.contains("bytes of undecodable WBXML"),
        "REQUEST.FULL did not log the refused request"
    );
    assert!(
        log_text.contains("request Autodiscover"),
        "REQUEST.FULL did not log Autodiscover"
    );
    assert!(
        log_text.contains("storage.password = *") && log_text.contains("imap.master_password = "),
        "no masked configuration line"
    );

    // Every line has the format.
    let mut seen = std::collections::BTreeSet::new();
    for line in log_text
        .lines()
        .filter(|l| l.len() > 12 && l.as_bytes()[2] == b':')
    {
        let rest = &line[12..];
        let logger = rest
            .split_once(" {")
            .and_then(|(_, r)| r.split_once("} [t"))
            .map(|(l, _)| l)
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        assert!(
            opush_server::obs::Logger::from_name(logger).is_some(),
            "{line}"
        );
        seen.insert(logger.to_owned());
    }
    for logger in [
        "BREAKDOWN",
        "SUMMARY.IN",
        "SUMMARY.OUT",
        "REQUEST.FULL",
        "REQUEST.TRIMMED",
        "IMAP.COMMAND",
        "MAIL.DATA",
        "AUTHENTICATION",
        "CONFIGURATION",
        "CONTAINER",
    ] {
        assert!(seen.contains(logger), "no {logger} line in\n{log_text}");
    }
    // The Sync's context, breakdown and summary.
    let sync_lines: Vec<&str> = log_text
        .lines()
        .filter(|l| l.contains("/cSync/") && l.contains(&format!("/{USER}] ")))
        .collect();
    assert!(
        sync_lines.iter().any(|l| l.contains("{BREAKDOWN}")
            && l.contains("] REQUEST:")
            && l.contains("EMAIL:")
            && l.contains("IMAP:")
            && l.contains("STORAGE:")),
        "{sync_lines:#?}"
    );
    assert!(
        sync_lines.iter().any(|l| l.contains("{SUMMARY.OUT}")
            && l.contains("] CHANGE: ")
            && !l.contains("CHANGE: 0,")),
        "no SUMMARY.OUT with the new message: {sync_lines:#?}"
    );
    assert!(
        log_text.lines().any(|l| l.contains("/cSendMail/")
            && l.contains("{SUMMARY.IN}")
            && l.ends_with("] CHANGE: 1, DELETE: 0, FETCH: 0")),
        "no SendMail summary"
    );
    assert!(
        log_text
            .lines()
            .any(|l| l.contains("/cSendMail/") && l.contains("{BREAKDOWN}") && l.contains("SMTP:")),
        "no SMTP section in the SendMail breakdown"
    );
    assert!(
        log_text.lines().any(|l| l.contains("/cFolderSync/")
            && l.contains("{SUMMARY.OUT}")
            && !l.ends_with("] CHANGE: 0, DELETE: 0, FETCH: 0")),
        "no FolderSync summary with the folders sent"
    );
    assert!(
        log_text.lines().any(|l| l.contains("/cItemOperations/")
            && l.contains("{SUMMARY.OUT}")
            && l.ends_with("] CHANGE: 0, DELETE: 0, FETCH: 1")),
        "{log_text}"
    );

    // The access log: combined format, the user, no password.
    let lines: Vec<&str> = access.lines().collect();
    assert!(lines.len() >= 8, "{access}");
    let sync_line = lines
        .iter()
        .find(|l| l.contains("Cmd=Sync"))
        .expect("no Sync in the access log");
    assert!(
        sync_line.starts_with(&format!("127.0.0.1 - {USER} ["))
            && sync_line.contains(" +0000] \"POST /Microsoft-Server-ActiveSync?Cmd=Sync&")
            && sync_line.contains(" HTTP/1.1\" 200 ")
            && sync_line.ends_with(" \"-\" \"ObsTest/1.0\""),
        "{sync_line}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("127.0.0.1 - - [") && l.contains("\" 401 ")),
        "{access}"
    );
}
