//! Bad input and failures over HTTP (issue #5 "Tests"): a malformed body
//! gets 400 and the server goes on serving; a wrong password gets 401; a
//! stopped Dovecot gets 503 with Retry-After, and service comes back when
//! Dovecot does, without restarting opush; the provisioning sequence
//! (449 or Status 142 → Provision → acknowledge → served) per version.
//!
//! Reserved Dovecot user: load0040. The stopped-Dovecot test runs its own
//! private Dovecot (`scripts/dovecot-private`, port 11501) so the shared
//! one is never stopped.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use opush_tests::eas::{find_text, EasClient};
use opush_tests::{repo_root, PrivateDovecot, RawImap};
use support::*;

const USER: &str = "load0040@load.test";
const FOLDER_SYNC_0: &str =
    "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>";

async fn folder_sync_ok(c: &mut EasClient) {
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    folder_sync(&res);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_get_400_and_the_server_goes_on() {
    let opush = start(Options::default()).await;
    let mut c = opush.client(USER, "E2EBAD", "14.1");
    folder_sync_ok(&mut c).await;
    let bad: [&[u8]; 4] = [
        b"hello, not wbxml",
        // A WBXML header, then a Sync start tag with content and no end.
        b"\x03\x01\x6a\x00\x45\x5c",
        // A valid header with a tag on a code page that does not exist.
        b"\x03\x01\x6a\x00\x00\x7f\x45\x01",
        // Valid WBXML of the wrong command (FolderSync body sent as Sync).
        &opush_tests::eas::wbxml_of(FOLDER_SYNC_0),
    ];
    for (i, body) in bad.iter().enumerate() {
        let res = c.post("Sync", body).await;
        assert!(
            res.status == 400 || (res.status == 200 && i == 3),
            "body {i}: HTTP {}",
            res.status
        );
        if res.status == 200 {
            // A well-formed but wrong document gets an EAS error status.
            let status = find_text(&res.element(), "Status");
            assert!(
                status.as_deref().is_some_and(|s| s != "1"),
                "body {i}: {}",
                res.xml()
            );
        }
    }
    // Unknown command and missing parameters are 400 too, never 500.
    let q = c.plain_query("NoSuchCommand", "");
    assert_eq!(c.post_query(&q, true, b"").await.status, 400);
    let res = c
        .post_query("Cmd=Sync&User=x&DeviceType=y", true, b"")
        .await;
    assert_eq!(res.status, 400);
    // Still serving.
    folder_sync_ok(&mut c).await;
    opush.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_gets_401() {
    let opush = start(Options::default()).await;
    let mut c = EasClient::new(opush.addr, USER, "not-the-password", "E2E401", "14.1");
    let res = c.options().await;
    assert_eq!(res.status, 401);
    assert!(res.header("WWW-Authenticate").is_some());
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    assert_eq!(res.status, 401);
    // No credentials at all: 401 as well; the right password then works.
    let mut anon = opush.client(USER, "E2E401", "14.1");
    anon.authorization = String::new();
    let res = anon
        .send("OPTIONS", "/Microsoft-Server-ActiveSync", &[], b"")
        .await;
    assert_eq!(res.status, 401);
    let mut good = opush.client(USER, "E2E401", "14.1");
    folder_sync_ok(&mut good).await;
    opush.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_dovecot_gets_503_then_service_resumes() {
    const PORT: u16 = 11501;
    let dir = repo_root().join("target/tmp/e2e-dovecot-11501");
    std::fs::create_dir_all(&dir).unwrap();
    let dovecot = PrivateDovecot::new(dir, PORT);
    dovecot.run("up");
    let addr = format!("127.0.0.1:{PORT}").parse().unwrap();
    // A message to see, on the private server.
    let mut imap = RawImap::login_to(addr, USER);
    opush_tests::fill::ensure(&mut imap, "INBOX", 3, "e2e-private-v1", |i| {
        opush_tests::fill::text_message("e2e-private-v1", i)
    });
    drop(imap);

    let opush = start(Options {
        imap_port: PORT,
        ..Options::default()
    })
    .await;
    // A 12.1 and a 14.1 device, both synced once.
    let mut devices = Vec::new();
    for v in ["12.1", "14.1"] {
        let mut c = opush.client(USER, &format!("E2E503{}", v.replace('.', "")), v);
        let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
        let fs = folder_sync(&res);
        let inbox = folder_of_type(&fs, 2).unwrap();
        let res = c.post_xml("Sync", &sync_xml(&inbox, "0", 0, "")).await;
        let key = sync_response(&res, v).collections[0].sync_key.0.clone();
        devices.push((v, c, inbox, key));
    }

    dovecot.run("down");
    // The backend is out, the credentials are not wrong: 503 + Retry-After
    // (before 14.0), Status 111 "retry later" in the answer from 14.0
    // ([MS-ASCMD] 2.2.2), never 401 nor 500.
    for (v, c, inbox, key) in &mut devices {
        for _ in 0..2 {
            let res = c.post_xml("Sync", &sync_xml(inbox, key, 50, "")).await;
            if *v == "12.1" {
                assert_eq!(res.status, 503, "{v}");
                assert!(res.header("Retry-After").is_some());
            } else if res.status == 200 {
                let el = res.element();
                assert_eq!(
                    find_text(&el, "Status").as_deref(),
                    Some("111"),
                    "{}",
                    res.xml()
                );
            } else {
                assert_eq!(res.status, 503, "{v}");
            }
        }
    }
    // A login not in the auth cache (load0039 is this suite's other user).
    let mut fresh = opush.client("load0039@load.test", "E2E503B", "14.1");
    let res = fresh.options().await;
    assert_eq!(
        res.status, 503,
        "a login that cannot be checked is not a 401"
    );
    assert!(res.header("Retry-After").is_some());

    dovecot.run("up");
    // Same server process: the next Sync is served, with the 3 messages.
    for (v, c, inbox, key) in &mut devices {
        let res = c.post_xml("Sync", &sync_xml(inbox, key, 50, "")).await;
        let r = sync_response(&res, v);
        assert_eq!(
            r.collections[0].status.map(|s| s.code()),
            Some(1),
            "{}",
            res.xml()
        );
        assert_eq!(r.collections[0].commands.as_ref().map(Vec::len), Some(3));
    }
    assert_eq!(fresh.options().await.status, 200);
    opush.stop().await;
}

/// The provisioning sequence of a device that has never provisioned.
async fn provisioning(v: &str) {
    let opush = start(Options {
        require_provisioning: true,
        ..Options::default()
    })
    .await;
    let mut c = opush.client(USER, &format!("E2EPROV{}", v.replace('.', "")), v);
    // Not provisioned: 449 (before 14.0) or Status 142 in the answer.
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    if v.starts_with("12") {
        assert_eq!(res.status, 449, "{v}");
    } else {
        assert!(
            res.status == 449
                || (res.status == 200
                    && find_text(&res.element(), "Status").as_deref() == Some("142")),
            "{v}: HTTP {}",
            res.status
        );
    }
    // Provision: the policy and a temporary key.
    let res = c
        .post_xml(
            "Provision",
            "<Provision xmlns=\"Provision:\"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>\
             </Policy></Policies></Provision>",
        )
        .await;
    assert_eq!(res.status, 200);
    let el = res.element();
    assert_eq!(
        find_text(&el, "Status").as_deref(),
        Some("1"),
        "{}",
        res.xml()
    );
    let temp = find_text(&el, "PolicyKey").expect("a temporary policy key");
    assert!(find_text(&el, "EASProvisionDoc").is_some() || res.xml().contains("EASProvisionDoc"));
    // Acknowledge: the final key.
    c.policy_key = Some(temp.clone());
    let res = c
        .post_xml(
            "Provision",
            &format!(
                "<Provision xmlns=\"Provision:\"><Policies><Policy><PolicyType>MS-EAS-Provisioning-WBXML</PolicyType>\
                 <PolicyKey>{temp}</PolicyKey><Status>1</Status></Policy></Policies></Provision>"
            ),
        )
        .await;
    assert_eq!(res.status, 200);
    let el = res.element();
    let key = find_text(&el, "PolicyKey").expect("the final policy key");
    assert_ne!(key, temp);
    c.policy_key = Some(key);
    folder_sync_ok(&mut c).await;
    // A stale key is refused again.
    c.policy_key = Some(temp);
    let res = c.post_xml("FolderSync", FOLDER_SYNC_0).await;
    assert!(
        res.status == 449
            || (res.status == 200 && find_text(&res.element(), "Status").as_deref() == Some("144")),
        "{v}: stale key answered HTTP {}",
        res.status
    );
    opush.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_12_1() {
    provisioning("12.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_14_1() {
    provisioning("14.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provisioning_16_1() {
    provisioning("16.1").await;
}
