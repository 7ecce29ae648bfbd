//! Full-capture mode over HTTP against the real Dovecot, on both stores:
//! a device listed in `[capture] devices` and one switched on from the admin
//! address have every request and response kept with its headers (bodies
//! byte-identical to the wire, `Authorization` as `*`, a Settings device
//! password masked), `opush replay export` puts them in the bundle, `replay
//! show` prints them and `replay run` still replays; a device not captured
//! (or switched off) has none; captured rows expire after `[capture] ttl_s`
//! on the embedded store and on Cassandra; a bundle exported from a running
//! server (Cassandra) already joins each capture to its request.
//!
//! Reserved Dovecot users: load0051, load0052, load0053.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::net::SocketAddr;
use std::time::Duration;

use opush_replay::{export, run, show, Bundle};
use opush_server::config::Config;
use opush_server::serve::run_with;
use opush_storage::{DeviceKey, StorageConfig, Store};
use opush_tests::eas::{EasClient, HttpResponse};
use opush_tests::{demo_password, require, CASSANDRA, DOVECOT_IMAP};
use serde::Deserialize;
use tokio::sync::oneshot;

async fn free_port() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("nothing listens on {addr}");
}

/// A running opush with its admin address.
struct Server {
    addr: SocketAddr,
    admin: SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), opush_server::serve::ServeError>>,
}

impl Server {
    async fn start(storage_toml: &str, capture_toml: &str) -> Server {
        let (port, admin_port) = (free_port().await, free_port().await);
        let cfg = Config::from_toml(&format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\n\
             public_url = \"https://mail.example.test\"\nmax_request_body = 65536\n\
             [storage]\n{storage_toml}\n\
             [imap]\nhost = \"127.0.0.1\"\nport = 1143\n\
             [policy]\nrequire_provisioning = false\n\
             [capture]\n{capture_toml}\n"
        ))
        .unwrap();
        let storage = StorageConfig::deserialize(toml::Value::Table(cfg.storage.clone())).unwrap();
        {
            let store = Store::open(&storage).await.unwrap();
            store.install_schema().await.unwrap();
        }
        let (stop, rx) = oneshot::channel::<()>();
        let (addr, admin) = (cfg.server.listen, cfg.server.admin_listen);
        let task = tokio::spawn(run_with(cfg, async move {
            let _ = rx.await;
        }));
        wait_listening(addr).await;
        wait_listening(admin).await;
        Server {
            addr,
            admin,
            stop,
            task,
        }
    }

    async fn admin(&self, method: &str, path: &str) -> HttpResponse {
        let mut c = EasClient::new(self.admin, "x", "x", "x", "14.1");
        c.send(method, path, &[], b"").await
    }

    /// Graceful stop: deferred trace events are flushed to the store.
    async fn stop(self) {
        let _ = self.stop.send(());
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
}

/// What a device sent and got, in order.
#[derive(Default)]
struct Exchanges(Vec<(String, Vec<u8>, HttpResponse)>);

impl Exchanges {
    async fn post(&mut self, c: &mut EasClient, cmd: &str, body: Vec<u8>) -> HttpResponse {
        let res = c.post(cmd, &body).await;
        self.0.push((cmd.to_owned(), body, res.clone()));
        res
    }
}

fn wbxml(xml: &str) -> Vec<u8> {
    opush_protocol::xml::xml_to_wbxml(xml).unwrap()
}

fn inbox_of(res: &HttpResponse) -> String {
    let xml = res.xml();
    let at = xml.find("<Type>2</Type>").expect("no Inbox");
    let add = xml[..at].rfind("<ServerId>").unwrap() + "<ServerId>".len();
    xml[add..add + xml[add..].find('<').unwrap()].to_owned()
}

/// A session of FolderSync, two Syncs, a Settings carrying a device
/// password, an undecodable body (400) and one too large (413).
async fn session(c: &mut EasClient, device_password: &str) -> Exchanges {
    let mut x = Exchanges::default();
    let fs = x
        .post(
            c,
            "FolderSync",
            wbxml(r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#),
        )
        .await;
    assert_eq!(fs.status, 200);
    let inbox = inbox_of(&fs);
    let sync = |key: &str| {
        wbxml(&format!(
            r#"<Sync xmlns="AirSync:"><Collections><Collection><SyncKey>{key}</SyncKey><CollectionId>{inbox}</CollectionId><WindowSize>5</WindowSize></Collection></Collections></Sync>"#
        ))
    };
    let s0 = x.post(c, "Sync", sync("0")).await;
    assert_eq!(s0.status, 200);
    let key = opush_tests::eas::find_text(&s0.element(), "SyncKey").unwrap();
    let s1 = x.post(c, "Sync", sync(&key)).await;
    assert_eq!(s1.status, 200);
    let settings = x
        .post(
            c,
            "Settings",
            wbxml(&format!(
                r#"<Settings xmlns="Settings:"><DevicePassword><Set><Password>{device_password}</Password></Set></DevicePassword></Settings>"#
            )),
        )
        .await;
    assert_eq!(settings.status, 200);
    let bad = x
        .post(c, "FolderSync", b"\x03\x01\x6a\x00\xff\xff".to_vec())
        .await;
    assert_eq!(bad.status, 400);
    // Over `[server] max_request_body`: refused before the provisioning
    // gate records the request, so the log does not hold it.
    let big = x.post(c, "Sync", vec![0u8; 70_000]).await;
    assert_eq!(big.status, 413);
    x
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Every exchange is in the bundle: byte-identical, except the masked
/// Settings request; `Authorization` is `*` in the heads.
fn check_bundle(bundle: &Bundle, sent: &Exchanges, secret: &str) {
    let ids: Vec<String> = {
        let mut ids: Vec<String> = bundle.captures.iter().map(|c| c.req_id.clone()).collect();
        ids.dedup();
        ids
    };
    assert_eq!(ids.len(), sent.0.len(), "one capture per request: {ids:?}");
    for (cmd, body, res) in &sent.0 {
        let found = ids.iter().find(|id| {
            bundle.capture_of(id, "response").as_deref() == Some(res.body.as_slice())
                && bundle
                    .capture_of(id, "response-head")
                    .is_some_and(|h| h.starts_with(format!("HTTP/1.1 {}", res.status).as_bytes()))
                && (bundle.capture_of(id, "request").as_deref() == Some(body.as_slice())
                    || cmd == "Settings"
                    || (res.status == 413
                        && bundle
                            .capture_of(id, "request")
                            .is_some_and(|b| b.is_empty())))
        });
        let id = found.unwrap_or_else(|| panic!("{cmd} exchange not captured identically"));
        let head = String::from_utf8(bundle.capture_of(id, "request-head").unwrap()).unwrap();
        assert!(
            head.starts_with("POST /Microsoft-Server-ActiveSync?Cmd="),
            "{head}"
        );
        assert!(head.contains("\n  authorization: *"), "{head}");
        assert!(!head.contains("Basic "), "{head}");
        if cmd == "Settings" {
            let kept = bundle.capture_of(id, "request").unwrap();
            assert!(!contains(&kept, secret.as_bytes()), "device password kept");
            assert!(head.contains("X-Opush-Capture: secrets masked"), "{head}");
        }
    }
    for c in &bundle.captures {
        let bytes = bundle.capture_of(&c.req_id, &c.kind).unwrap();
        for s in [secret.to_owned(), demo_password()] {
            assert!(!contains(&bytes, s.as_bytes()), "{} in {}", s, c.kind);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captured_devices_keep_every_exchange_and_others_none() {
    require(DOVECOT_IMAP);
    let dir = tempfile::tempdir().unwrap();
    let store_toml = format!(
        "backend = \"embedded\"\npath = \"{}\"",
        dir.path().join("store").display()
    );
    let (conf_user, admin_user, off_user) = (
        "load0051@load.test",
        "load0052@load.test",
        "load0053@load.test",
    );
    let server = Server::start(
        &store_toml,
        &format!("devices = [\"{conf_user}/CAPCONF\"]\nttl_s = 3600"),
    )
    .await;
    let listed = server.admin("GET", "/capture").await;
    assert_eq!(
        String::from_utf8_lossy(&listed.body).lines().next(),
        Some(format!("{conf_user}/CAPCONF config").as_str())
    );
    let on = server
        .admin(
            "PUT",
            &format!("/capture/{}/CAPADMIN", admin_user.replace('@', "%40")),
        )
        .await;
    assert_eq!(on.status, 200, "{:?}", String::from_utf8_lossy(&on.body));
    assert!(
        String::from_utf8_lossy(&server.admin("GET", "/capture").await.body)
            .contains(&format!("{admin_user}/CAPADMIN admin\n"))
    );
    assert_eq!(server.admin("PUT", "/capture/nobody/").await.status, 404);

    let password = demo_password();
    let secret = "Dev1ce-Pa55!";
    let mut conf = EasClient::new(server.addr, conf_user, &password, "CAPCONF", "14.1");
    let mut admin = EasClient::new(server.addr, admin_user, &password, "CAPADMIN", "14.1");
    let mut off = EasClient::new(server.addr, off_user, &password, "CAPOFF", "14.1");
    let conf_x = session(&mut conf, secret).await;
    let admin_x = session(&mut admin, secret).await;
    let _ = session(&mut off, secret).await;
    // Switched off: later requests are not kept.
    let del = server
        .admin("DELETE", &format!("/capture/{admin_user}/CAPADMIN"))
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(
        server
            .admin("DELETE", &format!("/capture/{admin_user}/CAPADMIN"))
            .await
            .status,
        404
    );
    let after = admin
        .post(
            "FolderSync",
            &wbxml(r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#),
        )
        .await;
    assert_eq!(after.status, 200);
    server.stop().await;

    let store = Store::open(&StorageConfig {
        path: dir.path().join("store"),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    let bundle = export(&store, conf_user, "CAPCONF", None, None)
        .await
        .unwrap();
    check_bundle(&bundle, &conf_x, secret);
    let again = Bundle::from_json(&bundle.to_json()).unwrap();
    assert_eq!(again, bundle);
    let report = run(&again).unwrap().unwrap();
    assert!(report.decisions >= 3, "{report:?}");
    let text = show(&again, None).unwrap();
    assert!(text.contains("request head:"), "{text}");
    assert!(text.contains("response body:"), "{text}");
    assert!(
        text.contains("captured requests the log does not record"),
        "the 413 is shown: {text}"
    );
    assert!(!text.contains(secret));

    let bundle = export(&store, admin_user, "CAPADMIN", None, None)
        .await
        .unwrap();
    check_bundle(&bundle, &admin_x, secret);

    let off_key = DeviceKey::new(off_user, "CAPOFF").unwrap();
    assert_eq!(store.get_captures(&off_key).await.unwrap(), vec![]);
    let off_bundle = export(&store, off_user, "CAPOFF", None, None)
        .await
        .unwrap();
    assert!(off_bundle.captures.is_empty());
    assert!(off_bundle.events.len() > 3, "the device's log is there");
}

/// Captured rows expire after `[capture] ttl_s`; `export` returns the
/// bundle without them.
async fn captures_expire(
    store_toml: &str,
    open: impl std::future::Future<Output = Store>,
    user: &str,
    live: Option<&Store>,
) {
    let server = Server::start(
        store_toml,
        &format!("devices = [\"{user}/CAPTTL\"]\nttl_s = 2"),
    )
    .await;
    let mut c = EasClient::new(server.addr, user, &demo_password(), "CAPTTL", "14.1");
    let body = wbxml(r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#);
    let res = c.post("FolderSync", &body).await;
    assert_eq!(res.status, 200);
    if let Some(store) = live {
        // A request that changes nothing (its trace would otherwise wait
        // in memory for the next change), exported from the running
        // server: its trace is in the store already, joined to its capture.
        let key = opush_tests::eas::find_text(&res.element(), "SyncKey").unwrap();
        let again = wbxml(&format!(
            r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>{key}</SyncKey></FolderSync>"#
        ));
        let res2 = c.post("FolderSync", &again).await;
        assert_eq!(res2.status, 200);
        let bundle = export(store, user, "CAPTTL", None, None).await.unwrap();
        assert!(bundle.unlogged_captures().is_empty(), "{bundle:?}");
        let req_id = bundle
            .decoded()
            .unwrap()
            .into_iter()
            .filter_map(|(_, e)| match e {
                opush_engine::Event::RequestReceived { req_id, .. } => Some(req_id),
                _ => None,
            })
            .nth(1)
            .expect("the no-change request is in the live log");
        assert_eq!(bundle.capture(req_id, "request"), Some(again));
        assert_eq!(bundle.capture(req_id, "response"), Some(res2.body.clone()));
        assert!(bundle.decoded().unwrap().iter().any(|(_, e)| matches!(
            e,
            opush_engine::Event::ResponseSent { req_id: r, .. } if *r == req_id
        )));
    }
    server.stop().await;
    let store = open.await;
    let key = DeviceKey::new(user, "CAPTTL").unwrap();
    let caps = store.get_captures(&key).await.unwrap();
    assert_eq!(caps.len(), if live.is_some() { 8 } else { 4 }, "{caps:?}");
    assert!(caps.iter().any(|c| c.kind == "request" && c.bytes == body));
    assert!(caps
        .iter()
        .any(|c| c.kind == "response" && c.bytes == res.body));
    tokio::time::sleep(Duration::from_millis(3_200)).await;
    assert_eq!(store.get_captures(&key).await.unwrap(), vec![]);
    let bundle = export(&store, user, "CAPTTL", None, None).await.unwrap();
    assert!(bundle.captures.is_empty());
    assert!(!bundle.events.is_empty(), "the log outlives the captures");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_expire_on_the_embedded_store() {
    require(DOVECOT_IMAP);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("store");
    let toml = format!("backend = \"embedded\"\npath = \"{}\"", path.display());
    let open = async {
        Store::open(&StorageConfig {
            path: path.clone(),
            ..StorageConfig::default()
        })
        .await
        .unwrap()
    };
    captures_expire(&toml, open, "load0054@load.test", None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn captures_expire_on_cassandra() {
    require(DOVECOT_IMAP);
    require(CASSANDRA);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let keyspace = format!(
        "opush_capture_{}",
        &blake3::hash(format!("{nanos}-{}", std::process::id()).as_bytes()).to_hex()[..12]
    );
    let password =
        std::env::var("OPUSH_CASSANDRA_PASSWORD").unwrap_or_else(|_| "opush-test".into());
    let toml = format!(
        "backend = \"cassandra\"\nseeds = [\"127.0.0.1\"]\nport = 9042\nkeyspace = \"{keyspace}\"\n\
         user = \"opush\"\npassword = \"{password}\"\nread_timeout_ms = 10000"
    );
    let config = StorageConfig::deserialize(toml::Value::Table(toml.parse().unwrap())).unwrap();
    let open = async { Store::open(&config).await.unwrap() };
    let live = Store::open(&config).await.unwrap();
    captures_expire(&toml, open, "load0055@load.test", Some(&live)).await;
    Store::open(&config).await.unwrap().destroy().await.unwrap();
}
