//! Overload and misbehaving devices against the real server: in-flight limit
//! (503), body limit (413), a looping device (503 + X-MS-ASThrottle),
//! admin-only mode (503) and quarantined devices (the provisioning gate is
//! in http_provision.rs).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;

use std::time::Duration;

use http_support::*;
use opush_protocol::wbxml::{decode, tags};
use opush_server::device::DeviceAccess;
use opush_server::http::{HttpSettings, ServeMode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const ALICE: &str = "alice@example.test";

fn folder_sync_target(device: &str) -> String {
    format!(
        "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId={device}&DeviceType=SP"
    )
}

fn status(body: &[u8]) -> String {
    let doc = decode(body).unwrap();
    assert_eq!(doc.tag, tags::folderhierarchy::FOLDER_SYNC);
    doc.child_text(tags::folderhierarchy::STATUS)
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn in_flight_limit_gives_503_then_recovers() {
    let srv = start(HttpSettings {
        max_in_flight: 1,
        ..settings()
    })
    .await;
    let a = basic(ALICE, PASSWORD);
    // A request whose body never finishes holds the only slot.
    let mut slow = TcpStream::connect(srv.addr).await.unwrap();
    let headers = [
        ("Authorization", a.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
    ];
    slow.write_all(&head(
        "POST",
        &folder_sync_target("SLOW"),
        &headers,
        Some(100),
    ))
    .await
    .unwrap();
    slow.write_all(b"\x03\x01\x6a").await.unwrap();
    let mut saw_503 = None;
    for _ in 0..100 {
        let res = options_as(srv.addr, &a).await;
        if res.status == 503 {
            saw_503 = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = saw_503.expect("no 503 while the only slot was taken");
    assert!(res.header("Retry-After").is_some());
    // Abandoning the slow request frees the slot.
    drop(slow);
    let mut ok = false;
    for _ in 0..100 {
        let res = options_as(srv.addr, &a).await;
        if res.status == 200 {
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ok, "the slot was never released");
    srv.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let srv = start(HttpSettings {
        max_request_body: 1024,
        ..settings()
    })
    .await;
    let a = basic(ALICE, PASSWORD);
    let headers = [
        ("Authorization", a.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
    ];
    let res = request(
        srv.addr,
        "POST",
        &folder_sync_target("BIG"),
        &headers,
        &vec![b'x'; 2000],
    )
    .await;
    assert_eq!(res.status, 413);
    // Chunked, without Content-Length: counted while reading.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut bytes = head(
        "POST",
        &folder_sync_target("BIG"),
        &[
            ("Authorization", a.as_str()),
            ("MS-ASProtocolVersion", "14.1"),
            ("Transfer-Encoding", "chunked"),
        ],
        None,
    );
    for _ in 0..3 {
        bytes.extend_from_slice(b"200\r\n");
        bytes.extend_from_slice(&[b'x'; 0x200]);
        bytes.extend_from_slice(b"\r\n");
    }
    bytes.extend_from_slice(b"0\r\n\r\n");
    let _ = s.write_all(&bytes).await;
    assert_eq!(read_response(&mut s).await.status, 413);
    // Under the limit is fine.
    let res = request(
        srv.addr,
        "POST",
        &folder_sync_target("BIG"),
        &headers,
        &wp8_folder_sync_body(),
    )
    .await;
    assert_eq!(res.status, 200);
    srv.stop().await;
}

// [MS-ASHTTP] 2.2.2.1.2.4: a looping device gets 503 with X-MS-ASThrottle.
#[tokio::test]
async fn looping_device_is_throttled() {
    let srv = start(HttpSettings {
        loop_max_repeats: 3,
        ..settings()
    })
    .await;
    let a = basic(ALICE, PASSWORD);
    let headers = [
        ("Authorization", a.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
    ];
    let body = wp8_folder_sync_body();
    for _ in 0..3 {
        let res = request(
            srv.addr,
            "POST",
            &folder_sync_target("LOOP"),
            &headers,
            &body,
        )
        .await;
        assert_eq!(res.status, 200);
    }
    let res = request(
        srv.addr,
        "POST",
        &folder_sync_target("LOOP"),
        &headers,
        &body,
    )
    .await;
    assert_eq!(res.status, 503);
    assert_eq!(res.header("X-MS-ASThrottle"), Some("CommandFrequency"));
    let wait: u64 = res.header("Retry-After").unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // Another device of the same user is not affected.
    let res = request(
        srv.addr,
        "POST",
        &folder_sync_target("OTHER"),
        &headers,
        &body,
    )
    .await;
    assert_eq!(res.status, 200);
    srv.stop().await;
}

#[tokio::test]
async fn admin_only_mode_refuses_device_traffic() {
    require_dovecot().await;
    let srv = start_with_imap_port(
        settings(),
        IMAP_PORT,
        ServeMode::AdminOnly("storage schema missing: run `opush schema install`".into()),
    )
    .await;
    let a = basic(ALICE, PASSWORD);
    let headers = [
        ("Authorization", a.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
    ];
    let res = request(
        srv.addr,
        "POST",
        &folder_sync_target("ADM"),
        &headers,
        &wp8_folder_sync_body(),
    )
    .await;
    assert_eq!(res.status, 503);
    assert!(res.header("Retry-After").is_some());
    assert!(
        srv.devices.get(ALICE, "ADM").is_none(),
        "no device traffic in admin-only mode"
    );
    srv.stop().await;
    assert!(logs().contains("opush schema install"));
}

#[tokio::test]
async fn quarantined_devices_are_refused() {
    let srv = start(HttpSettings {
        allow_unknown_devices: false,
        ..settings()
    })
    .await;
    let a = basic(ALICE, PASSWORD);
    let body = wp8_folder_sync_body();
    // 14.1: Status 129 (device blocked for this user).
    let new = [
        ("Authorization", a.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
    ];
    let res = request(srv.addr, "POST", &folder_sync_target("Q1"), &new, &body).await;
    assert_eq!(res.status, 200);
    assert_eq!(status(&res.body), "129");
    assert_eq!(
        srv.devices.get(ALICE, "Q1").unwrap().access,
        DeviceAccess::Quarantined
    );
    // 12.1: HTTP 403.
    let old = [
        ("Authorization", a.as_str()),
        ("MS-ASProtocolVersion", "12.1"),
    ];
    let res = request(srv.addr, "POST", &folder_sync_target("Q2"), &old, &body).await;
    assert_eq!(res.status, 403);
    // Allowed by an administrator: served.
    assert!(srv.devices.set_access(ALICE, "Q1", DeviceAccess::Allowed));
    let res = request(srv.addr, "POST", &folder_sync_target("Q1"), &new, &body).await;
    assert_eq!(res.status, 200);
    assert_ne!(status(&res.body), "129");
    srv.stop().await;
}
