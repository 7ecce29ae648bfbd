//! Ping over HTTP through `opush serve` (in-process, embedded store, the
//! stack's Dovecot): a parked Ping gives back its `[server] max_in_flight`
//! permit (with `max_in_flight = 1` other requests still get through), the
//! parked Pings have their own bound (`[push] max_parked = 1`: the next one
//! gets 503 + Retry-After), any other request of the same device ends
//! its parked Ping at once with Status 1, and a device that closes its
//! connection while parked frees its parked slot.
//!
//! The Ping statuses on the wire, for 12.1, 14.1 and 16.1 ([MS-ASCMD]
//! 2.2.3.177.11): 3 when a parameter is neither given nor remembered, 4
//! for a request that does not follow the schema (`Folders` without a
//! `Folder` too), 5 with the bound the interval crossed (`[devices]
//! heartbeat_min_s`/`heartbeat_max_s`) in HeartbeatInterval (an integer
//! beyond any `u32` too), 6 with MaxFolders, 7 for a folder the device does
//! not know; a server failure (IMAP down: a PRIVATE Dovecot,
//! `scripts/dovecot-private`, port 11640) is the common Status 111 from
//! 14.0 and HTTP 503 + Retry-After before (server/src/error.rs). The
//! `[push] max_pings_per_minute` damping does not count a refused Ping
//! unless the device repeats it.
//!
//! `<Ping/>` (a body with neither HeartbeatInterval nor Folders) is
//! Status 3 even when the last ones are remembered (MS-ASCMD 2.2.1.13);
//! a Ping without a body still reuses them.
//!
//! Reserved Dovecot users: load0027; load0029 for the statuses; load0081
//! for the damping of refused Pings; load1246 for `<Ping/>`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;

use std::net::SocketAddr;
use std::time::Duration;

use http_support::*;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest, FolderSyncResponse};
use opush_protocol::commands::ping::{PingFolder, PingRequest, PingResponse};
use opush_protocol::commands::sync::{SyncCollectionRequest, SyncRequest, SyncResponse};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{decode, encode_to_vec};
use opush_server::config::Config;
use opush_server::serve::run_with;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const USER: &str = "load0027@load.test";
const V: ProtocolVersion = ProtocolVersion::V14_1;

fn target(cmd: &str, device: &str) -> String {
    target_of(USER, cmd, device)
}

fn target_of(user: &str, cmd: &str, device: &str) -> String {
    format!("/Microsoft-Server-ActiveSync?Cmd={cmd}&User={user}&DeviceId={device}&DeviceType=Test")
}

async fn call(addr: SocketAddr, cmd: &str, device: &str, body: &[u8]) -> Resp {
    call_as(addr, (USER, V), cmd, device, body).await
}

/// A request of `user` speaking `version`.
async fn call_as(
    addr: SocketAddr,
    (user, version): (&str, ProtocolVersion),
    cmd: &str,
    device: &str,
    body: &[u8],
) -> Resp {
    let auth = basic(user, PASSWORD);
    request(
        addr,
        "POST",
        &target_of(user, cmd, device),
        &[
            ("Authorization", &auth),
            ("MS-ASProtocolVersion", version.as_str()),
        ],
        body,
    )
    .await
}

fn folder_sync_body() -> Vec<u8> {
    encode_to_vec(
        &FolderSyncRequest {
            sync_key: SyncKey("0".into()),
        }
        .to_element(V),
    )
}

/// FolderSync + Sync of INBOX to its end; returns the INBOX id.
async fn prepare(addr: SocketAddr, device: &str) -> String {
    prepare_as(addr, (USER, V), device).await
}

/// [`prepare`] for `user` speaking `version`.
async fn prepare_as(addr: SocketAddr, who: (&str, ProtocolVersion), device: &str) -> String {
    let res = call_as(addr, who, "FolderSync", device, &folder_sync_body()).await;
    assert_eq!(res.status, 200);
    let fs = FolderSyncResponse::from_element(&decode(&res.body).unwrap(), V).unwrap();
    let inbox = fs
        .changes
        .unwrap()
        .into_iter()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 2 => Some(f.server_id.0),
            _ => None,
        })
        .unwrap();
    let mut key = "0".to_owned();
    for _ in 0..20 {
        let req = SyncRequest {
            collections: vec![SyncCollectionRequest {
                sync_key: SyncKey(key.clone()),
                collection_id: CollectionId(inbox.clone()),
                window_size: Some(512),
                ..SyncCollectionRequest::default()
            }],
            ..SyncRequest::default()
        };
        let res = call_as(
            addr,
            who,
            "Sync",
            device,
            &encode_to_vec(&req.to_element(V)),
        )
        .await;
        assert_eq!(res.status, 200);
        let sr = SyncResponse::from_element(&decode(&res.body).unwrap(), V).unwrap();
        let c = &sr.collections[0];
        let more = c.more_available || key == "0";
        key = c.sync_key.0.clone();
        if !more {
            break;
        }
    }
    inbox
}

fn ping_body(inbox: &str) -> Vec<u8> {
    encode_to_vec(
        &PingRequest {
            heartbeat_interval: Some(300),
            folders: Some(vec![PingFolder {
                id: CollectionId(inbox.to_owned()),
                class: "Email".into(),
            }]),
        }
        .to_element(V),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_ping_frees_its_in_flight_slot_and_ends_on_the_next_request() {
    require_dovecot().await;
    let dir = tempfile::tempdir().unwrap();
    let (addr, tx, server) = serve(
        &dir,
        IMAP_PORT,
        (
            "max_in_flight = 1\n",
            "[devices]\nheartbeat_min_s = 1\n[push]\nmax_parked = 1\n",
        ),
    )
    .await;
    let inbox = prepare(addr, "HTTPPING1").await;

    // Park a Ping on its own connection. With max_in_flight = 1 the Ping
    // itself is refused (503) if it arrives while another request holds the
    // only slot: it is sent alone, and again until it is not refused.
    let body = ping_body(&inbox);
    let mut parked = None;
    for _ in 0..20 {
        match try_park(addr, "HTTPPING1", &body).await {
            Ok(task) => {
                parked = Some(task);
                break;
            }
            Err(early) => assert_eq!(early.status, 503, "the Ping answered instead of parking"),
        }
    }
    let parked = parked.expect("the Ping parks");

    // With max_in_flight = 1, another device gets through once the Ping parked.
    let mut served = false;
    for _ in 0..100 {
        let res = call(addr, "FolderSync", "HTTPPING2", &folder_sync_body()).await;
        if res.status == 200 {
            served = true;
            break;
        }
        assert_eq!(res.status, 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        served,
        "the parked Ping still holds the only in-flight slot"
    );
    if parked.is_finished() {
        let early = parked.await.unwrap();
        let xml = opush_protocol::xml::wbxml_to_xml(&early.body).unwrap_or_default();
        panic!("the Ping answered early: HTTP {} {xml}", early.status);
    }

    // The parked bound is its own: a second parked Ping is refused.
    let inbox2 = prepare(addr, "HTTPPING2").await;
    let refused = call(addr, "Ping", "HTTPPING2", &ping_body(&inbox2)).await;
    assert_eq!(refused.status, 503);
    assert!(refused.header("Retry-After").is_some());
    assert!(!parked.is_finished());

    // Any request of the parked device ends its Ping with Status 1.
    let res = call(addr, "FolderSync", "HTTPPING1", &folder_sync_body()).await;
    assert_eq!(res.status, 200);
    let answer = tokio::time::timeout(Duration::from_secs(10), parked)
        .await
        .expect("the superseded Ping answers at once")
        .unwrap();
    assert_eq!(answer.status, 200);
    let ping = PingResponse::from_element(&decode(&answer.body).unwrap(), V).unwrap();
    assert_eq!(ping.status.code(), 1);

    // A device that goes away while its Ping is parked frees the parked
    // slot (max_parked = 1): the other device's Ping then parks.
    let gone = park_raw(addr, "HTTPPING1", &body).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(gone);
    let mut other = None;
    for _ in 0..50 {
        match try_park(addr, "HTTPPING2", &ping_body(&inbox2)).await {
            Ok(task) => {
                other = Some(task);
                break;
            }
            Err(early) => assert_eq!(early.status, 503, "the Ping answered instead of parking"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        other.is_some(),
        "a closed connection's Ping still holds the parked slot"
    );

    let _ = tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// Sends a Ping on a connection of its own; returns the connection.
async fn park_raw(addr: SocketAddr, device: &str, body: &[u8]) -> TcpStream {
    let auth = basic(USER, PASSWORD);
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = head(
        "POST",
        &target("Ping", device),
        &[("Authorization", &auth), ("MS-ASProtocolVersion", "14.1")],
        Some(body.len()),
    );
    bytes.extend_from_slice(body);
    s.write_all(&bytes).await.unwrap();
    s
}

/// Sends a Ping; if it has no answer after 300 ms it is parked (the task
/// reads its answer), else the early answer.
async fn try_park(
    addr: SocketAddr,
    device: &str,
    body: &[u8],
) -> Result<tokio::task::JoinHandle<Resp>, Resp> {
    let mut s = park_raw(addr, device, body).await;
    let task = tokio::spawn(async move { read_response(&mut s).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    if task.is_finished() {
        Err(task.await.unwrap())
    } else {
        Ok(task)
    }
}

const STATUS_USER: &str = "load0029@load.test";
/// The versions whose Ping statuses are checked.
const VERSIONS: [ProtocolVersion; 3] = [
    ProtocolVersion::V12_1,
    ProtocolVersion::V14_1,
    ProtocolVersion::V16_1,
];

/// `opush serve` in-process on an embedded store in `dir`, against the
/// Dovecot on `imap_port`, with `server` TOML keys of `[server]` and
/// `extra` TOML appended; its address and what stops it.
async fn serve(
    dir: &tempfile::TempDir,
    imap_port: u16,
    (server, extra): (&str, &str),
) -> (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), opush_server::serve::ServeError>>,
) {
    let port = closed_port().await;
    let cfg = Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:0\"\n{server}\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nport = {imap_port}\ntimeout_ms = 5000\nmaster_user = \"opush-master\"\nmaster_password = \"{PASSWORD}\"\n\
         [policy]\nrequire_provisioning = false\n{extra}",
        dir.path().display()
    ))
    .unwrap();
    {
        let store = opush_storage::Store::open(
            &serde::Deserialize::deserialize(toml::Value::Table(cfg.storage.clone())).unwrap(),
        )
        .await
        .unwrap();
        store.install_schema().await.unwrap();
    }
    let addr = cfg.server.listen;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(run_with(cfg, async move {
        let _ = rx.await;
    }));
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    (addr, tx, server)
}

/// A Ping request of `heartbeat` and `folders` (Email).
fn ping_of(heartbeat: Option<u32>, folders: Option<&[&str]>) -> Vec<u8> {
    encode_to_vec(
        &PingRequest {
            heartbeat_interval: heartbeat,
            folders: folders.map(|f| {
                f.iter()
                    .map(|id| PingFolder {
                        id: CollectionId((*id).to_owned()),
                        class: "Email".into(),
                    })
                    .collect()
            }),
        }
        .to_element(V),
    )
}

/// The Ping answer of a 200 response.
fn ping_answer(res: &Resp, what: &str) -> PingResponse {
    assert_eq!(res.status, 200, "{what}: HTTP {}", res.status);
    let doc = decode(&res.body).unwrap_or_else(|e| panic!("{what}: not WBXML: {e}"));
    PingResponse::from_element(&doc, V).unwrap_or_else(|e| panic!("{what}: {e:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_statuses_on_the_wire_for_each_version() {
    use opush_protocol::wbxml::tags::ping as p;
    use opush_protocol::wbxml::Element;
    require_dovecot().await;
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, server) = serve(
        &dir,
        IMAP_PORT,
        (
            "",
            // The default Ping limiter stays on: refused Pings do not
            // count against it (they do not repeat one refusal).
            "[devices]\nheartbeat_min_s = 30\nheartbeat_max_s = 1200\n",
        ),
    )
    .await;
    for version in VERSIONS {
        let who = (STATUS_USER, version);
        let device = format!("PINGST{}", version.as_str().replace('.', ""));
        let device = device.as_str();
        let ping = |body: Vec<u8>| async move { call_as(addr, who, "Ping", device, &body).await };
        let v = version.as_str();

        // 3: nothing remembered yet, and a parameter not given.
        let inbox = prepare_as(addr, who, device).await;
        let a = ping_answer(&ping(Vec::new()).await, "empty Ping");
        assert_eq!(a.status.code(), 3, "{v}: empty Ping, nothing remembered");
        let a = ping_answer(&ping(ping_of(Some(300), None)).await, "no folders");
        assert_eq!(a.status.code(), 3, "{v}: heartbeat without folders");
        let a = ping_answer(&ping(ping_of(None, Some(&[&inbox]))).await, "no heartbeat");
        assert_eq!(a.status.code(), 3, "{v}: folders without heartbeat");

        // 4: not the schema.
        let not_a_number =
            Element::new(p::PING).with(Element::with_text(p::HEARTBEAT_INTERVAL, "soon"));
        let no_id = Element::new(p::PING)
            .with(Element::with_text(p::HEARTBEAT_INTERVAL, "300"))
            .with(
                Element::new(p::FOLDERS)
                    .with(Element::new(p::FOLDER).with(Element::with_text(p::CLASS, "Email"))),
            );
        let no_folder = Element::new(p::PING)
            .with(Element::with_text(p::HEARTBEAT_INTERVAL, "300"))
            .with(Element::new(p::FOLDERS));
        for (what, body) in [
            (
                "a heartbeat that is no number",
                encode_to_vec(&not_a_number),
            ),
            ("a folder without Id", encode_to_vec(&no_id)),
            ("Folders without a Folder", encode_to_vec(&no_folder)),
            ("a FolderSync document", folder_sync_body()),
        ] {
            let a = ping_answer(&ping(body).await, what);
            assert_eq!(a.status.code(), 4, "{v}: {what}");
            assert!(a.heartbeat_interval.is_none() && a.max_folders.is_none());
        }

        // 5: the bound crossed, from the configuration.
        let a = ping_answer(&ping(ping_of(Some(10), Some(&[&inbox]))).await, "short");
        assert_eq!(
            (a.status.code(), a.heartbeat_interval),
            (5, Some(30)),
            "{v}"
        );
        let a = ping_answer(&ping(ping_of(Some(5000), Some(&[&inbox]))).await, "long");
        assert_eq!(
            (a.status.code(), a.heartbeat_interval),
            (5, Some(1200)),
            "{v}"
        );
        assert!(a.max_folders.is_none());
        // An integer out of any u32 is out of bounds too, not a syntax error.
        for (text, bound) in [("-5", 30), ("99999999999999999999", 1200)] {
            let body = Element::new(p::PING)
                .with(Element::with_text(p::HEARTBEAT_INTERVAL, text))
                .with(
                    Element::new(p::FOLDERS).with(
                        Element::new(p::FOLDER)
                            .with(Element::with_text(p::ID, inbox.as_str()))
                            .with(Element::with_text(p::CLASS, "Email")),
                    ),
                );
            let a = ping_answer(&ping(encode_to_vec(&body)).await, text);
            assert_eq!(
                (a.status.code(), a.heartbeat_interval),
                (5, Some(bound)),
                "{v}: {text}"
            );
        }

        // 6: more folders than allowed, with the most allowed.
        let many = vec![inbox.as_str(); 301];
        let a = ping_answer(&ping(ping_of(Some(300), Some(&many))).await, "too many");
        assert_eq!((a.status.code(), a.max_folders), (6, Some(300)), "{v}");
        assert!(a.heartbeat_interval.is_none());

        // 7: a folder this device was not given (an id of this server's
        // form, and one of no form it hands out).
        for id in ["999", "not-an-id"] {
            let a = ping_answer(&ping(ping_of(Some(300), Some(&[id]))).await, id);
            assert_eq!(a.status.code(), 7, "{v}: folder {id}");
        }

        // None of these was remembered: still nothing to reuse.
        let a = ping_answer(&ping(Vec::new()).await, "empty Ping again");
        assert_eq!(a.status.code(), 3, "{v}: a refused Ping is not remembered");
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

/// Reserved for the empty Ping element.
const EMPTY_ELEMENT_USER: &str = "load1246@load.test";

/// Sends a Ping of `who` in a task of its own; fails unless it parks
/// (no answer within 500 ms). The task reads its answer.
async fn park_as(
    addr: SocketAddr,
    who: (&'static str, ProtocolVersion),
    device: &str,
    body: Vec<u8>,
) -> tokio::task::JoinHandle<Resp> {
    let device = device.to_owned();
    let task = tokio::spawn(async move { call_as(addr, who, "Ping", &device, &body).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    if task.is_finished() {
        let early = task.await.unwrap();
        let xml = opush_protocol::xml::wbxml_to_xml(&early.body).unwrap_or_default();
        panic!(
            "the Ping answered instead of parking: HTTP {} {xml}",
            early.status
        );
    }
    task
}

// [MS-ASCMD] 2.2.1.13: a Ping element MUST carry HeartbeatInterval,
// Folders or both; only a Ping without a body is "same as last time"
// (3.1.5.8). `<Ping/>` is Status 3 even with parameters remembered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_ping_element_is_status_3_and_an_empty_body_reuses_the_last() {
    use opush_protocol::wbxml::tags::ping as p;
    use opush_protocol::wbxml::Element;
    require_dovecot().await;
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, server) = serve(&dir, IMAP_PORT, ("", "")).await;
    let empty_element = encode_to_vec(&Element::new(p::PING));
    for version in VERSIONS {
        let who = (EMPTY_ELEMENT_USER, version);
        let v = version.as_str();
        let device = format!("PINGEL{}", v.replace('.', ""));
        let device = device.as_str();
        let inbox = prepare_as(addr, who, device).await;
        // Remembered: the Inbox, 300 s.
        let parked = park_as(addr, who, device, ping_of(Some(300), Some(&[&inbox]))).await;

        // `<Ping/>`: Status 3 at once, not the remembered Ping parked again.
        let res = tokio::time::timeout(
            Duration::from_secs(10),
            call_as(addr, who, "Ping", device, &empty_element),
        )
        .await
        .unwrap_or_else(|_| panic!("{v}: <Ping/> parked like a Ping without a body"));
        let a = ping_answer(&res, "<Ping/>");
        assert_eq!(a.status.code(), 3, "{v}: <Ping/>");
        assert!(a.heartbeat_interval.is_none() && a.max_folders.is_none() && a.folders.is_empty());
        // It is a request of the device: the parked Ping ended with 1.
        let ended = tokio::time::timeout(Duration::from_secs(10), parked)
            .await
            .expect("the parked Ping ends")
            .unwrap();
        assert_eq!(ping_answer(&ended, "parked").status.code(), 1, "{v}");

        // A Ping without a body still reuses the remembered ones: it parks,
        // until the next `<Ping/>` (Status 3 again) ends it.
        let parked = park_as(addr, who, device, Vec::new()).await;
        let res = call_as(addr, who, "Ping", device, &empty_element).await;
        assert_eq!(ping_answer(&res, "<Ping/> again").status.code(), 3, "{v}");
        let ended = tokio::time::timeout(Duration::from_secs(10), parked)
            .await
            .expect("the parked Ping ends")
            .unwrap();
        assert_eq!(ping_answer(&ended, "empty body").status.code(), 1, "{v}");
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_failure_answers_111_from_14_0_and_503_before() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let dovecot = opush_tests::PrivateDovecot::new(
        opush_tests::repo_root().join("target/tmp/http-ping-private-dovecot"),
        11640,
    );
    dovecot.run("up");
    let dir = tempfile::tempdir().unwrap();
    // The credentials checked by FolderSync stay cached through the outage.
    let (addr, stop, server) = serve(
        &dir,
        dovecot.port,
        (
            "auth_cache_ttl_s = 600\n",
            "[devices]\nheartbeat_min_s = 1\n[push]\nmax_pings_per_minute = 0\n",
        ),
    )
    .await;
    let mut devices = Vec::new();
    for version in VERSIONS {
        let device = format!("PINGDOWN{}", version.as_str().replace('.', ""));
        let inbox = prepare_as(addr, (STATUS_USER, version), &device).await;
        devices.push((version, device, inbox));
    }

    dovecot.run("down");
    for (version, device, inbox) in &devices {
        let who = (STATUS_USER, *version);
        let res = call_as(
            addr,
            who,
            "Ping",
            device,
            &ping_of(Some(60), Some(&[inbox])),
        )
        .await;
        if *version >= ProtocolVersion::V14_0 {
            let a = ping_answer(&res, "IMAP down");
            assert_eq!(a.status.code(), 111, "{}", version.as_str());
        } else {
            assert_eq!(res.status, 503, "{}", version.as_str());
            assert!(res.header("Retry-After").is_some());
            assert!(res.body.is_empty());
        }
    }

    // Back up: the same Ping is answered as usual (the heartbeat ends).
    dovecot.run("up");
    let (version, device, inbox) = &devices[0];
    let res = call_as(
        addr,
        (STATUS_USER, *version),
        "Ping",
        device,
        &ping_of(Some(1), Some(&[inbox])),
    )
    .await;
    let a = ping_answer(&res, "IMAP back");
    assert!(matches!(a.status.code(), 1 | 2), "{a:?}");
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}

const DAMP_USER: &str = "load0081@load.test";

/// 503 + Retry-After + `X-MS-ASThrottle` (the Ping damping).
fn assert_damped(res: &Resp, what: &str) {
    assert_eq!(res.status, 503, "{what}: HTTP {}", res.status);
    assert!(res.header("Retry-After").is_some(), "{what}");
    assert_eq!(
        res.header("X-MS-ASThrottle"),
        Some("CommandFrequency"),
        "{what}"
    );
}

// [MS-ASCMD] 2.2.3.177.11: after Status 3, 5, 6 or 7 the device corrects
// its Ping (after a FolderSync for 7) and sends it again at once. The
// damping of `[push] max_pings_per_minute` must not slow it for the
// refused ones; a device sending the same refused Ping again and again is
// still damped (503 + Retry-After + X-MS-ASThrottle, [MS-ASHTTP] 3.1.5.2.3).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_pings_do_not_count_against_the_damping_unless_repeated() {
    require_dovecot().await;
    let dir = tempfile::tempdir().unwrap();
    let (addr, stop, server) = serve(
        &dir,
        IMAP_PORT,
        (
            "",
            "[devices]\nheartbeat_min_s = 1\nheartbeat_max_s = 1200\n[push]\nmax_pings_per_minute = 3\n",
        ),
    )
    .await;
    let who = (DAMP_USER, V);
    let ping = |device: &'static str, body: Vec<u8>| async move {
        call_as(addr, who, "Ping", device, &body).await
    };

    // Refused four ways, each corrected by the next Ping.
    let inbox = prepare_as(addr, who, "DAMP1").await;
    let many = vec![inbox.as_str(); 301];
    for (what, body, status) in [
        ("nothing remembered", Vec::new(), 3),
        ("too long", ping_of(Some(5000), Some(&[&inbox])), 5),
        ("too many folders", ping_of(Some(60), Some(&many)), 6),
        ("unknown folder", ping_of(Some(60), Some(&["999"])), 7),
        ("too short", ping_of(Some(0), Some(&[&inbox])), 5),
    ] {
        let a = ping_answer(&ping("DAMP1", body).await, what);
        assert_eq!(a.status.code(), status, "{what}");
    }
    // The corrected Ping is served, as often as the damping allows.
    for i in 0..3 {
        let a = ping_answer(
            &ping("DAMP1", ping_of(Some(1), Some(&[&inbox]))).await,
            &format!("corrected Ping {i}"),
        );
        assert!(matches!(a.status.code(), 1 | 2), "{a:?}");
    }
    assert_damped(
        &ping("DAMP1", ping_of(Some(1), Some(&[&inbox]))).await,
        "a fourth Ping within the minute",
    );

    // The same refused Ping in a loop: the first refusal is free, the
    // repeats count.
    let inbox = prepare_as(addr, who, "DAMP2").await;
    let looping = ping_of(Some(5000), Some(&[&inbox]));
    for i in 0..4 {
        let a = ping_answer(&ping("DAMP2", looping.clone()).await, "refused again");
        assert_eq!(a.status.code(), 5, "refused Ping {i}");
    }
    assert_damped(&ping("DAMP2", looping).await, "the fifth same refused Ping");

    // A Ping that does not follow the schema (Status 4) cannot be corrected
    // by the status: each one counts.
    let malformed = encode_to_vec(
        &opush_protocol::wbxml::Element::new(opush_protocol::wbxml::tags::ping::PING).with(
            opush_protocol::wbxml::Element::with_text(
                opush_protocol::wbxml::tags::ping::HEARTBEAT_INTERVAL,
                "soon",
            ),
        ),
    );
    for i in 0..3 {
        let a = ping_answer(&ping("DAMP3", malformed.clone()).await, "malformed");
        assert_eq!(a.status.code(), 4, "malformed Ping {i}");
    }
    assert_damped(&ping("DAMP3", malformed).await, "a fourth malformed Ping");

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), server).await;
}
