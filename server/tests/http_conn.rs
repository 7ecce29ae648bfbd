//! The HTTP/1.1 connection loop (server/src/http/conn.rs) against the real
//! server and Dovecot, over raw TCP: keep-alive and pipelined requests,
//! chunked bodies, `Expect: 100-continue` (answered only when the body is
//! read), malformed and oversized heads, slow heads (408), bodies slower than
//! the minimum rate, idle keep-alive
//! connections closed, shutdown with an idle connection open.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod http_support;

use std::time::Duration;

use http_support::*;
use opush_protocol::autodiscover::{
    AutodiscoverRequest, AutodiscoverResponse, MOBILESYNC_RESPONSE_SCHEMA,
};
use opush_server::http::conn::ConnTimeouts;
use opush_server::http::HttpSettings;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ALICE: &str = "alice@example.test";

/// Reads one response whose body is delimited by Content-Length (the
/// connection stays open): status, head text, body.
async fn read_one(s: &mut TcpStream, pending: &mut Vec<u8>) -> (u16, String, Vec<u8>) {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(end) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8(pending[..end].to_vec()).unwrap();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (n, v) = l.split_once(':')?;
                        n.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0);
                if pending.len() >= end + 4 + len {
                    let body = pending[end + 4..end + 4 + len].to_vec();
                    pending.drain(..end + 4 + len);
                    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
                    return (status, head, body);
                }
            }
            let mut buf = [0u8; 4096];
            let n = s.read(&mut buf).await.unwrap();
            assert!(
                n > 0,
                "connection closed before a whole response: {pending:?}"
            );
            pending.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no response within 20 s")
}

/// Waits for the server to close the connection (reading and dropping any bytes).
async fn closed(s: &mut TcpStream, within: Duration) -> Vec<u8> {
    let mut rest = Vec::new();
    tokio::time::timeout(within, async {
        let mut buf = [0u8; 4096];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => rest.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server did not close the connection");
    rest
}

fn options(auth: &str, close: bool) -> String {
    format!(
        "OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\nAuthorization: {auth}\r\n{}\r\n",
        if close { "Connection: close\r\n" } else { "" }
    )
}

fn autodiscover_body() -> String {
    AutodiscoverRequest {
        email_address: ALICE.into(),
        acceptable_response_schema: Some(MOBILESYNC_RESPONSE_SCHEMA.into()),
    }
    .to_xml()
}

fn timeouts(header_s: u64, keep_alive_s: u64) -> HttpSettings {
    HttpSettings {
        timeouts: ConnTimeouts {
            header: Duration::from_secs(header_s),
            keep_alive: Duration::from_secs(keep_alive_s),
        },
        ..settings()
    }
}

#[tokio::test]
async fn keep_alive_and_pipelined_requests_are_answered_in_order() {
    let srv = start(settings()).await;
    let a = basic(ALICE, PASSWORD);
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let mut pending = Vec::new();
    // Two requests one after the other on one connection.
    for _ in 0..2 {
        s.write_all(options(&a, false).as_bytes()).await.unwrap();
        let (status, head, _) = read_one(&mut s, &mut pending).await;
        assert_eq!(status, 200, "{head}");
        assert!(
            !head.to_ascii_lowercase().contains("connection: close"),
            "{head}"
        );
        assert!(head.to_ascii_lowercase().contains("\r\ndate: "), "{head}");
    }
    // Three at once: a 401, a 200, then one asking to close.
    let pipelined = format!(
        "{}{}{}",
        options(&basic(ALICE, "wrong"), false),
        options(&a, false),
        options(&a, true)
    );
    s.write_all(pipelined.as_bytes()).await.unwrap();
    let statuses = [
        read_one(&mut s, &mut pending).await.0,
        read_one(&mut s, &mut pending).await.0,
    ];
    assert_eq!(statuses, [401, 200]);
    let (status, head, _) = read_one(&mut s, &mut pending).await;
    assert_eq!(status, 200);
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    assert!(closed(&mut s, Duration::from_secs(5)).await.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn chunked_bodies_are_decoded_and_expect_continue_is_answered() {
    let srv = start(settings()).await;
    let a = basic(ALICE, PASSWORD);
    let body = autodiscover_body();
    let (first, second) = body.split_at(body.len() / 3);
    // Chunked, with a chunk extension and a trailer field, keep-alive.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let req = format!(
        "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\r\n\
         {:x};name=value\r\n{first}\r\n{:X}\r\n{second}\r\n0\r\nX-Trailer: 1\r\n\r\n",
        first.len(),
        second.len()
    );
    // Sent in small pieces: the decoder must wait for the rest.
    for piece in req.as_bytes().chunks(7) {
        s.write_all(piece).await.unwrap();
    }
    let mut pending = Vec::new();
    let (status, head, answer) = read_one(&mut s, &mut pending).await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        AutodiscoverResponse::parse(&answer).unwrap().email_address,
        ALICE
    );

    // Expect: 100-continue on the same connection: the interim answer
    // comes before the body is sent.
    let req = format!(
        "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Type: text/xml\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut interim = vec![0u8; 25];
    tokio::time::timeout(Duration::from_secs(20), s.read_exact(&mut interim))
        .await
        .expect("no 100 Continue")
        .unwrap();
    assert_eq!(interim, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).await.unwrap();
    let (status, _, answer) = read_one(&mut s, &mut pending).await;
    assert_eq!(status, 200);
    assert_eq!(
        AutodiscoverResponse::parse(&answer).unwrap().email_address,
        ALICE
    );

    // A stranger's body is never asked for: 401 without 100 Continue, and
    // the connection closes (its body was not read).
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let req = format!(
        "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
        basic(ALICE, "wrong"),
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let (status, head, _) = read_one(&mut s, &mut pending).await;
    assert_eq!(status, 401, "{head}");
    assert!(!String::from_utf8_lossy(&pending).contains("100 Continue"));
    assert!(
        head.to_ascii_lowercase().contains("connection: close"),
        "{head}"
    );
    closed(&mut s, Duration::from_secs(5)).await;

    // A broken chunk size is a clean 400 from the handler's body read.
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    let req = format!(
        "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut pending = Vec::new();
    let (status, _, _) = read_one(&mut s, &mut pending).await;
    assert_eq!(status, 400);
    closed(&mut s, Duration::from_secs(5)).await;
    srv.stop().await;
}

#[tokio::test]
async fn bad_heads_get_a_4xx_and_the_connection_closes() {
    let srv = start(settings()).await;
    let huge = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let cases: [(&str, &[u8], u16); 6] = [
        ("garbage", b"\x16\x03\x01\x02\x00\x01\x00\r\n\r\n", 400),
        ("bad target", b"GET nowhere HTTP/1.1\r\n\r\n", 400),
        // Once 505, as if the version were unsupported.
        (
            "space in the target",
            b"POST /Microsoft-Server-ActiveSync?@@@not base64@@@ HTTP/1.1\r\n\r\n",
            400,
        ),
        ("huge head", huge.as_bytes(), 431),
        (
            "gzip coding",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n",
            501,
        ),
        (
            "two lengths",
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
            400,
        ),
    ];
    for (name, raw, want) in cases {
        let mut s = TcpStream::connect(srv.addr).await.unwrap();
        let _ = s.write_all(raw).await;
        let rest = closed(&mut s, Duration::from_secs(10)).await;
        let text = String::from_utf8_lossy(&rest);
        assert!(
            text.starts_with(&format!("HTTP/1.1 {want} ")),
            "{name}: {text}"
        );
        assert!(
            text.to_ascii_lowercase().contains("connection: close"),
            "{name}: {text}"
        );
    }
    let log = logs();
    assert!(log.contains("refused: request head too large"), "{log}");
    srv.stop().await;
}

#[tokio::test]
async fn slow_heads_and_idle_connections_are_closed() {
    let srv = start(timeouts(1, 2)).await;
    // A head that never ends: 408 after the header timeout.
    let mut slow = TcpStream::connect(srv.addr).await.unwrap();
    slow.write_all(b"OPTIONS /Microsoft-Server-ActiveSync HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let rest = closed(&mut slow, Duration::from_secs(10)).await;
    assert!(
        String::from_utf8_lossy(&rest).starts_with("HTTP/1.1 408 "),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    // An idle connection: closed after keep_alive, without an answer.
    let mut idle = TcpStream::connect(srv.addr).await.unwrap();
    assert!(closed(&mut idle, Duration::from_secs(10)).await.is_empty());
    // A connection used once, then idle: closed too.
    let mut used = TcpStream::connect(srv.addr).await.unwrap();
    used.write_all(options(&basic(ALICE, PASSWORD), false).as_bytes())
        .await
        .unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_one(&mut used, &mut pending).await.0, 200);
    assert!(closed(&mut used, Duration::from_secs(10)).await.is_empty());
    srv.stop().await;
}

#[tokio::test]
async fn a_body_trickling_in_is_cut_off() {
    // One byte every 300 ms: always within the 1 s per-read timeout, far
    // below the minimum body rate. Without that rate the request would
    // hold its connection (and in-flight slot) for the 60,000 bytes it
    // announced, i.e. for hours.
    let srv = start(timeouts(1, 600)).await;
    let a = basic(ALICE, PASSWORD);
    let s = TcpStream::connect(srv.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let head = format!(
        "POST /autodiscover/autodiscover.xml HTTP/1.1\r\nHost: x\r\nAuthorization: {a}\r\nContent-Type: text/xml\r\nContent-Length: 60000\r\n\r\n<"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            if wr.write_all(b" ").await.is_err() {
                return;
            }
        }
    });
    let mut rest = Vec::new();
    tokio::time::timeout(Duration::from_secs(15), rd.read_to_end(&mut rest))
        .await
        .expect("a body trickling in at 3 B/s was still being read after 15 s")
        .ok();
    trickle.abort();
    let text = String::from_utf8_lossy(&rest);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 400 "),
        "{text}"
    );
    srv.stop().await;
}

#[tokio::test]
async fn shutdown_closes_idle_keep_alive_connections() {
    let srv = start(settings()).await;
    let mut s = TcpStream::connect(srv.addr).await.unwrap();
    s.write_all(options(&basic(ALICE, PASSWORD), false).as_bytes())
        .await
        .unwrap();
    let mut pending = Vec::new();
    assert_eq!(read_one(&mut s, &mut pending).await.0, 200);
    // The connection is idle and open (keep_alive 600 s): stopping must
    // not wait for it.
    srv.stop().await;
    assert!(closed(&mut s, Duration::from_secs(5)).await.is_empty());
}
