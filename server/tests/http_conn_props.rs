//! Properties of the device-facing HTTP/1.1 head parser
//! (`opush_server::http::conn::parse_head`), which is our own code on the
//! open network: any bytes give an answer (never a panic), a head cut
//! anywhere before its end is "incomplete" rather than misread, and a
//! well-formed head reads back exactly what was written, whatever comes
//! after it. Pure logic: no server, no socket.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use opush_server::http::conn::{parse_head, Framing, HeadError, MAX_HEAD};
use proptest::prelude::*;

/// A header field a device might send: a token name (never one that
/// changes framing or connection handling) and a visible-ASCII value.
fn field() -> impl Strategy<Value = (String, String)> {
    (
        "[A-Za-z][A-Za-z0-9-]{0,20}".prop_filter(
            "framing and connection fields are set apart",
            |n| {
                !matches!(
                    n.to_ascii_lowercase().as_str(),
                    "content-length" | "transfer-encoding" | "connection" | "expect"
                )
            },
        ),
        "[!-~]([ -~]{0,40}[!-~])?",
    )
}

/// How the generated request frames its body.
#[derive(Debug, Clone)]
enum Body {
    None,
    Length(u64),
    Chunked,
}

fn body() -> impl Strategy<Value = Body> {
    prop_oneof![
        Just(Body::None),
        (0u64..1_000_000_000).prop_map(Body::Length),
        Just(Body::Chunked),
    ]
}

/// A well-formed HTTP/1.1 request head and what it says.
#[derive(Debug, Clone)]
struct Written {
    method: &'static str,
    path: String,
    query: String,
    fields: Vec<(String, String)>,
    body: Body,
    close: bool,
}

impl Written {
    fn bytes(&self) -> Vec<u8> {
        let mut s = format!("{} {}", self.method, self.path);
        if !self.query.is_empty() {
            s.push('?');
            s.push_str(&self.query);
        }
        s.push_str(" HTTP/1.1\r\n");
        for (n, v) in &self.fields {
            s.push_str(&format!("{n}: {v}\r\n"));
        }
        match self.body {
            Body::None => {}
            Body::Length(n) => s.push_str(&format!("Content-Length: {n}\r\n")),
            Body::Chunked => s.push_str("Transfer-Encoding: chunked\r\n"),
        }
        if self.close {
            s.push_str("Connection: close\r\n");
        }
        s.push_str("\r\n");
        s.into_bytes()
    }
}

fn written() -> impl Strategy<Value = Written> {
    (
        prop_oneof![Just("POST"), Just("OPTIONS"), Just("GET")],
        "(/[A-Za-z0-9._~-]{1,20}){1,3}",
        "([A-Za-z0-9]{1,8}=[A-Za-z0-9%+/=-]{0,30}(&[A-Za-z0-9]{1,8}=[A-Za-z0-9%]{0,10}){0,4})?",
        proptest::collection::vec(field(), 0..12),
        body(),
        any::<bool>(),
    )
        .prop_map(|(method, path, query, fields, body, close)| Written {
            method,
            path,
            query,
            fields,
            body,
            close,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever arrives, the parser answers: incomplete, a head, or an error
    /// that maps to a 4xx/5xx — and a head it accepts lies inside the input.
    #[test]
    fn any_bytes_get_an_answer(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        if let Ok(Some((_, len))) = parse_head(&bytes) {
            prop_assert!(len <= bytes.len());
        }
    }

    /// Heads made of request-like lines with random damage (bytes replaced,
    /// lines dropped) never panic either.
    #[test]
    fn damaged_heads_get_an_answer(w in written(), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        let mut bytes = w.bytes();
        let i = at.index(bytes.len());
        bytes[i] = b;
        if let Ok(Some((_, len))) = parse_head(&bytes) {
            prop_assert!(len <= bytes.len());
        }
    }

    /// A well-formed head reads back as written, its length is exactly its
    /// bytes (the body that follows is not consumed), and every strict
    /// prefix is "incomplete", never an error or a shorter head.
    #[test]
    fn a_head_reads_back_and_its_prefixes_are_incomplete(w in written(), tail in proptest::collection::vec(any::<u8>(), 0..64)) {
        let head = w.bytes();
        let mut input = head.clone();
        input.extend_from_slice(&tail);
        let (h, len) = parse_head(&input).unwrap().expect("a complete head");
        prop_assert_eq!(len, head.len());
        prop_assert_eq!(h.method.as_str(), w.method);
        prop_assert_eq!(&h.path, &w.path);
        prop_assert_eq!(&h.query, &w.query);
        prop_assert!(!h.http10);
        prop_assert_eq!(h.keep_alive, !w.close);
        prop_assert!(!h.expect_continue);
        match w.body {
            Body::None => prop_assert_eq!(h.framing, Framing::Length(0)),
            Body::Length(n) => prop_assert_eq!(h.framing, Framing::Length(n)),
            Body::Chunked => prop_assert_eq!(h.framing, Framing::Chunked),
        }
        for (n, v) in &w.fields {
            let values: Vec<&[u8]> = h.headers.get_all(n.as_str()).iter().map(|x| x.as_bytes()).collect();
            prop_assert!(values.contains(&v.as_bytes()), "{} lost", n);
        }
        for cut in 0..head.len() {
            prop_assert!(matches!(parse_head(&head[..cut]), Ok(None)), "prefix of {} bytes", cut);
        }
    }
}

/// A head that never ends is refused once it passes the limit, however it
/// is padded: the connection loop stops reading instead of buffering on.
#[test]
fn an_endless_head_is_too_large() {
    let mut line = b"POST /Microsoft-Server-ActiveSync HTTP/1.1\r\n".to_vec();
    while line.len() <= MAX_HEAD {
        line.extend_from_slice(b"X-Pad: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
    }
    assert!(matches!(parse_head(&line), Err(HeadError::TooLarge)));
    let blank = vec![b'\n'; MAX_HEAD + 1];
    assert!(matches!(parse_head(&blank), Err(HeadError::TooLarge)));
}
