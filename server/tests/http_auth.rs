//! Basic authentication through a real IMAP LOGIN on Dovecot: 401 only for a
//! refused password, both login spellings, 503 + Retry-After when IMAP is
//! down, the cache, and no password or Authorization value in the logs.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;

use http_support::*;
use opush_server::http::ServeMode;

const WRONG: &str = "Wr0ng-pa55word-xyzzy";

#[tokio::test]
async fn wrong_password_is_401_with_challenge() {
    let srv = start(settings()).await;
    let a = basic("alice@example.test", WRONG);
    let res = options_as(srv.addr, &a).await;
    assert_eq!(res.status, 401);
    assert_eq!(
        res.header("WWW-Authenticate"),
        Some("Basic realm=\"opush\"")
    );
    // A refused password is not cached.
    assert!(srv.app.auth.cache().is_empty());
    // Not Basic at all.
    let res = options_as(srv.addr, "Bearer abc").await;
    assert_eq!(res.status, 401);
    srv.stop().await;
}

#[tokio::test]
async fn both_login_spellings_are_accepted() {
    let srv = start(settings()).await;
    for login in [
        "alice@example.test",
        "example.test\\alice",
        "bob@example.test",
    ] {
        let a = basic(login, PASSWORD);
        let res = options_as(srv.addr, &a).await;
        assert_eq!(res.status, 200, "{login}");
    }
    assert_eq!(srv.app.auth.cache().len(), 3);
    // Another user's password is refused (the cache is keyed by login and password).
    let a = basic("bob@example.test", WRONG);
    let res = options_as(srv.addr, &a).await;
    assert_eq!(res.status, 401);
    srv.stop().await;
}

#[tokio::test]
async fn imap_outage_is_503_with_retry_after_not_401() {
    let port = closed_port().await;
    let srv = start_with_imap_port(settings(), port, ServeMode::Ready).await;
    let a = basic("alice@example.test", PASSWORD);
    let res = options_as(srv.addr, &a).await;
    assert_eq!(res.status, 503);
    assert_eq!(res.header("Retry-After"), Some("30"));
    assert_eq!(res.header("WWW-Authenticate"), None);
    srv.stop().await;
}

#[tokio::test]
async fn passwords_never_reach_the_log() {
    let srv = start(settings()).await;
    let good = basic("alice@example.test", PASSWORD);
    let bad = basic("alice@example.test", WRONG);
    let body = wp8_folder_sync_body();
    let target = format!("/Microsoft-Server-ActiveSync?{WP8_QUERY}");
    for a in [&good, &bad] {
        options_as(srv.addr, a).await;
        request(srv.addr, "POST", &target, &[("Authorization", a)], &body).await;
        request(
            srv.addr,
            "POST",
            "/Microsoft-Server-ActiveSync?Cmd=Nope&User=alice&DeviceId=D&DeviceType=T",
            &[("Authorization", a), ("MS-ASProtocolVersion", "14.1")],
            b"",
        )
        .await;
    }
    srv.stop().await;
    let logs = logs();
    // The capture works: the per-request lines are there.
    assert!(
        logs.contains("REQUEST.TRIMMED"),
        "no request line captured:\n{logs}"
    );
    assert!(
        logs.lines()
            .any(|l| l.contains("REQUEST.TRIMMED") && l.contains(" FolderSync ")),
        "{logs}"
    );
    assert!(logs.contains("alice@example.test"), "{logs}");
    assert!(logs.contains("status=401"), "{logs}");
    for secret in [
        PASSWORD,
        WRONG,
        good.as_str(),
        bad.as_str(),
        &good[6..],
        &bad[6..],
    ] {
        assert!(!logs.contains(secret), "{secret:?} found in the logs");
    }
}
