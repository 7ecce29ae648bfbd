//! The HTTP front end's routes against the real server and the real Dovecot:
//! OPTIONS, Autodiscover (any case), plain and base64 dispatch, unknown
//! command, missing parameters, bad versions, undecodable bodies, graceful
//! shutdown.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;

use http_support::*;
use opush_protocol::autodiscover::{
    AutodiscoverRequest, AutodiscoverResponse, MOBILESYNC_RESPONSE_SCHEMA,
};
use opush_protocol::wbxml::{decode, tags};

const ALICE: &str = "alice@example.test";

fn auth() -> String {
    basic(ALICE, PASSWORD)
}

// [MS-ASHTTP] 2.2.4: OPTIONS lists versions and the commands implemented.
#[tokio::test]
async fn options_advertises_versions_and_commands() {
    let srv = start(settings()).await;
    let a = auth();
    for path in [
        "/Microsoft-Server-ActiveSync",
        "/Microsoft-Server-ActiveSync/",
        "/opush/ActiveSyncServlet/",
    ] {
        let res = request(srv.addr, "OPTIONS", path, &[("Authorization", &a)], b"").await;
        assert_eq!(res.status, 200, "{path}");
        assert_eq!(
            res.header("MS-ASProtocolVersions"),
            Some("2.5,12.0,12.1,14.0,14.1,16.0,16.1")
        );
        let commands = res.header("MS-ASProtocolCommands").unwrap();
        for c in [
            "Sync",
            "FolderSync",
            "Provision",
            "Ping",
            "ItemOperations",
            "Settings",
            "Search",
            "Find",
        ] {
            assert!(
                commands.split(',').any(|x| x == c),
                "{c} missing in {commands}"
            );
        }
        // [MS-ASHTTP] 2.2.4.1.2.1: only the commands the server supports.
        for c in [
            "MeetingResponse",
            "ResolveRecipients",
            "ValidateCert",
            "GetHierarchy",
            "CreateCollection",
            "DeleteCollection",
            "MoveCollection",
        ] {
            assert!(
                !commands.split(',').any(|x| x == c),
                "{c} advertised in {commands} but not implemented"
            );
        }
        assert!(res.header("MS-Server-ActiveSync").is_some());
        assert!(res.header("Allow").unwrap().contains("POST"));
        assert!(res.header("Public").unwrap().contains("OPTIONS"));
    }
    // Unauthenticated OPTIONS is challenged, as Exchange does.
    let res = request(
        srv.addr,
        "OPTIONS",
        "/Microsoft-Server-ActiveSync",
        &[],
        b"",
    )
    .await;
    assert_eq!(res.status, 401);
    srv.stop().await;
}

#[tokio::test]
async fn other_methods_and_paths() {
    let srv = start(settings()).await;
    let res = request(srv.addr, "GET", "/Microsoft-Server-ActiveSync", &[], b"").await;
    assert_eq!(res.status, 405);
    assert_eq!(res.header("Allow"), Some("OPTIONS,POST"));
    let res = request(srv.addr, "GET", "/nothing-here", &[], b"").await;
    assert_eq!(res.status, 404);
    srv.stop().await;
}

// [MS-ASCMD] 2.2.1.1: the mobilesync response points at public_url.
#[tokio::test]
async fn autodiscover_answers_mobilesync_on_every_path_spelling() {
    let srv = start(settings()).await;
    let a = auth();
    let body = AutodiscoverRequest {
        email_address: ALICE.into(),
        acceptable_response_schema: Some(MOBILESYNC_RESPONSE_SCHEMA.into()),
    }
    .to_xml();
    for path in [
        "/autodiscover/autodiscover.xml",
        "/Autodiscover/Autodiscover.xml",
        "/AUTODISCOVER/AUTODISCOVER.XML",
        "/opush/Autodiscover/",
    ] {
        let res = request(
            srv.addr,
            "POST",
            path,
            &[("Authorization", &a), ("Content-Type", "text/xml")],
            body.as_bytes(),
        )
        .await;
        assert_eq!(res.status, 200, "{path}");
        assert!(res.header("Content-Type").unwrap().starts_with("text/xml"));
        let parsed = AutodiscoverResponse::parse(&res.body).unwrap();
        assert_eq!(parsed.email_address, ALICE);
        assert_eq!(parsed.servers.len(), 1);
        assert_eq!(parsed.servers[0].server_type, "MobileSync");
        assert_eq!(
            parsed.servers[0].url,
            "https://mail.example.test/Microsoft-Server-ActiveSync"
        );
    }
    // GET is a clean 4xx, not a 500.
    let res = request(
        srv.addr,
        "GET",
        "/autodiscover/autodiscover.xml",
        &[("Authorization", &a)],
        b"",
    )
    .await;
    assert_eq!(res.status, 405);
    // Another response schema: Autodiscover error 601.
    let other = AutodiscoverRequest {
        email_address: ALICE.into(),
        acceptable_response_schema: Some(
            "http://schemas.microsoft.com/exchange/autodiscover/outlook/responseschema/2006a"
                .into(),
        ),
    }
    .to_xml();
    let res = request(
        srv.addr,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[("Authorization", &a)],
        other.as_bytes(),
    )
    .await;
    assert_eq!(res.status, 200);
    let text = String::from_utf8(res.body).unwrap();
    assert!(text.contains("<ErrorCode>601</ErrorCode>"), "{text}");
    // Not XML: 400.
    let res = request(
        srv.addr,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[("Authorization", &a)],
        b"<Autodiscover><Request>",
    )
    .await;
    assert_eq!(res.status, 400);
    // No credentials: 401.
    let res = request(
        srv.addr,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[],
        body.as_bytes(),
    )
    .await;
    assert_eq!(res.status, 401);
    srv.stop().await;
}

// XML 1.0 has no form for most control characters, not even a character
// reference: an address holding one is Autodiscover error 600, never echoed.
#[tokio::test]
async fn autodiscover_never_echoes_control_characters() {
    let srv = start(settings()).await;
    let a = auth();
    let request_with = |address: &str| {
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\
             <Autodiscover xmlns=\"http://schemas.microsoft.com/exchange/autodiscover/mobilesync/requestschema/2006\">\
             <Request><EMailAddress>{address}</EMailAddress>\
             <AcceptableResponseSchema>{MOBILESYNC_RESPONSE_SCHEMA}</AcceptableResponseSchema>\
             </Request></Autodiscover>"
        )
    };
    for address in [
        "alice&#1;@example.test",
        "alice\u{1}@example.test",
        "alice&#x1b;[2J@example.test",
        "alice&#10;@example.test",
    ] {
        let res = request(
            srv.addr,
            "POST",
            "/autodiscover/autodiscover.xml",
            &[("Authorization", &a), ("Content-Type", "text/xml")],
            request_with(address).as_bytes(),
        )
        .await;
        assert_eq!(res.status, 200, "{address:?}");
        let text = String::from_utf8(res.body).unwrap();
        assert!(
            !text
                .chars()
                .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')),
            "{address:?}: a control character in {text:?}"
        );
        assert!(!text.contains("alice"), "{address:?} echoed: {text}");
        assert!(
            text.contains("<ErrorCode>600</ErrorCode>"),
            "{address:?}: {text}"
        );
    }
    // A non-ASCII address is no control character: answered as usual.
    let res = request(
        srv.addr,
        "POST",
        "/autodiscover/autodiscover.xml",
        &[("Authorization", &a), ("Content-Type", "text/xml")],
        request_with("jürgen@exämple.test").as_bytes(),
    )
    .await;
    assert_eq!(res.status, 200);
    let parsed = AutodiscoverResponse::parse(&res.body).unwrap();
    assert_eq!(parsed.email_address, "jürgen@exämple.test");
    srv.stop().await;
}

fn root_name(body: &[u8]) -> String {
    let doc = decode(body).unwrap();
    doc.tag.name().unwrap().to_owned()
}

// [MS-ASHTTP] 2.2.1.1.1.1: a wp8 capture's base64 query and body reach FolderSync.
#[tokio::test]
async fn base64_query_dispatches_to_folder_sync() {
    let srv = start(settings()).await;
    let a = auth();
    let target = format!("/Microsoft-Server-ActiveSync?{WP8_QUERY}");
    let res = request(
        srv.addr,
        "POST",
        &target,
        &[
            ("Authorization", &a),
            ("Content-Type", "application/vnd.ms-sync"),
            ("User-Agent", "WP8-test"),
        ],
        &wp8_folder_sync_body(),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("Content-Type"),
        Some("application/vnd.ms-sync.wbxml")
    );
    assert_eq!(root_name(&res.body), "FolderSync");
    // The registry saw the device, its version and agent.
    let rec = srv
        .devices
        .get(ALICE, WP8_DEVICE_ID)
        .expect("device recorded");
    assert_eq!(rec.device_type, "WP8");
    assert_eq!(rec.user_agent.as_deref(), Some("WP8-test"));
    assert_eq!(rec.protocol_version.as_str(), "14.0");
    srv.stop().await;
}

#[tokio::test]
async fn plain_query_dispatches_to_folder_sync() {
    let srv = start(settings()).await;
    let a = auth();
    let res = request(
        srv.addr,
        "POST",
        "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice@example.test&DeviceId=PLAIN01&DeviceType=iPhone",
        &[("Authorization", &a), ("MS-ASProtocolVersion", "14.1"), ("Content-Type", "application/vnd.ms-sync.wbxml")],
        &wp8_folder_sync_body(),
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(root_name(&res.body), "FolderSync");
    assert_eq!(
        srv.devices
            .get(ALICE, "PLAIN01")
            .unwrap()
            .protocol_version
            .as_str(),
        "14.1"
    );
    srv.stop().await;
}

/// A request target, its headers and its body.
type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Vec<u8>);

#[tokio::test]
async fn malformed_requests_get_400_never_500() {
    let srv = start(settings()).await;
    let a = auth();
    let h = [
        ("Authorization", a.as_str()),
        ("MS-ASProtocolVersion", "14.1"),
    ];
    let cases: [Case<'_>; 6] = [
        // Unknown command.
        (
            "/Microsoft-Server-ActiveSync?Cmd=Frobnicate&User=alice&DeviceId=D1&DeviceType=SP",
            &h,
            vec![],
        ),
        // Missing DeviceId.
        (
            "/Microsoft-Server-ActiveSync?Cmd=Sync&User=alice&DeviceType=SP",
            &h,
            vec![],
        ),
        // No query at all.
        ("/Microsoft-Server-ActiveSync", &h, vec![]),
        // Undecodable base64 query.
        ("/Microsoft-Server-ActiveSync?%%%%", &h, vec![]),
        // Garbage WBXML body.
        (
            "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId=D1&DeviceType=SP",
            &h,
            b"\x03\x01\x6a\x00\x07\x56\x52\x03not closed".to_vec(),
        ),
        // Protocol version outside the list.
        (
            "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId=D1&DeviceType=SP",
            &[
                ("Authorization", a.as_str()),
                ("MS-ASProtocolVersion", "13.0"),
            ],
            wp8_folder_sync_body(),
        ),
    ];
    for (target, headers, body) in cases {
        let res = request(srv.addr, "POST", target, headers, &body).await;
        assert_eq!(res.status, 400, "{target}");
    }
    // Missing version header.
    let res = request(
        srv.addr,
        "POST",
        "/Microsoft-Server-ActiveSync?Cmd=FolderSync&User=alice&DeviceId=D1&DeviceType=SP",
        &[("Authorization", a.as_str())],
        &wp8_folder_sync_body(),
    )
    .await;
    assert_eq!(res.status, 400);
    srv.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_stops_accepting() {
    let srv = start(settings()).await;
    let addr = srv.addr;
    let a = auth();
    assert_eq!(
        request(
            addr,
            "OPTIONS",
            "/Microsoft-Server-ActiveSync",
            &[("Authorization", &a)],
            b""
        )
        .await
        .status,
        200
    );
    srv.stop().await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "listener still open after shutdown"
    );
}

#[test]
fn wp8_body_is_a_folder_sync() {
    let body = wp8_folder_sync_body();
    let doc = decode(&body).unwrap();
    assert_eq!(doc.tag, tags::folderhierarchy::FOLDER_SYNC);
}
