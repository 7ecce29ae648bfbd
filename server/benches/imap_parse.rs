//! Parsing the FETCH responses of an initial sync (issue #5): a window's
//! metadata (`UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE`) and bodies
//! (`UID BODY[]` with a ~1.6 KB literal), 100 of each, with imap-proto's
//! general parser (what `async-imap` ran on every response) and with
//! `wire::lean_fetch` (what the session runs now). No server needed.
#![allow(
    clippy::unwrap_used,
    reason = "benchmark setup: a panic is a setup failure"
)]
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::hint::black_box;

use async_imap::imap_proto::Response;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use opush_server::backends::imap::wire::lean_fetch;

/// One response after another, as they come off the connection.
fn window(n: u32) -> (Vec<u8>, Vec<usize>) {
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for i in 1..=n {
        bytes.extend(
            format!(
                "* {i} FETCH (UID {} FLAGS (\\Seen $Forwarded) MODSEQ ({}) \
                 INTERNALDATE \"28-Nov-2026 10:{:02}:{:02} +0000\" RFC822.SIZE 1650)\r\n",
                1000 + i,
                50_000 + i,
                i % 60,
                (i * 7) % 60
            )
            .as_bytes(),
        );
        ends.push(bytes.len());
    }
    for i in 1..=n {
        let mut body = format!("From: Filler <filler@example.test>\r\nSubject: load {i}\r\n\r\n");
        while body.len() < 1600 {
            body.push_str("Line of message: the quick brown fox jumps over the lazy dog.\r\n");
        }
        bytes.extend(
            format!(
                "* {i} FETCH (UID {} BODY[] {{{}}}\r\n",
                1000 + i,
                body.len()
            )
            .as_bytes(),
        );
        bytes.extend(body.as_bytes());
        bytes.extend(b")\r\n");
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn parse(c: &mut Criterion) {
    let (bytes, ends) = window(100);
    let mut group = c.benchmark_group("imap_parse");
    group.throughput(Throughput::Elements(ends.len() as u64));
    group.bench_function("window_100/imap_proto", |b| {
        b.iter(|| {
            let mut start = 0;
            for &end in &ends {
                let (rest, r) = Response::parse(black_box(&bytes[start..])).unwrap();
                black_box(&r);
                start = bytes.len() - rest.len();
                assert_eq!(start, end);
            }
        })
    });
    group.bench_function("window_100/lean", |b| {
        b.iter(|| {
            let mut start = 0;
            for &end in &ends {
                let r = lean_fetch(black_box(&bytes[start..end])).unwrap();
                black_box(&r);
                start = end;
            }
        })
    });
    group.finish();
}

criterion_group!(benches, parse);
criterion_main!(benches);
