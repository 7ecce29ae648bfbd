//! Criterion benchmarks of the HTTP front end's per-request bookkeeping:
//! the auth cache lookup (salted blake3 digest + map), the loop detector,
//! and the status-only WBXML answer built by `error.rs`.
//!
//! Figures go to docs/BENCHMARKS.md (section "server: HTTP front end").
//! No timed assertions here or in tests.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use opush_protocol::headers::{Login, Password};
use opush_protocol::query::{Command, RequestLine};
use opush_server::error::status_document;
use opush_server::http::auth::AuthCache;
use opush_server::http::limits::LoopDetector;
use tokio::time::Instant;

fn bench(c: &mut Criterion) {
    let cache = AuthCache::new(Duration::from_secs(60), 100_000);
    let login = Login::parse("alice@example.test");
    let password = Password::new("opush-demo");
    let now = Instant::now();
    let digest = cache.digest(&login, &password);
    cache.remember(digest, now);
    c.bench_function("auth_cache_hit", |b| {
        b.iter(|| {
            let d = cache.digest(black_box(&login), black_box(&password));
            black_box(cache.is_fresh(&d, now))
        })
    });

    let loops = LoopDetector::new(Duration::from_secs(60), u32::MAX, 100_000);
    let body = vec![0x5au8; 2048];
    c.bench_function("loop_detector_hit_2k_body", |b| {
        b.iter(|| {
            let k = LoopDetector::key(
                "alice@example.test",
                "a4b9f99bc46733b6",
                "Sync",
                black_box(&body),
            );
            black_box(loops.hit(k, now))
        })
    });

    c.bench_function("request_line_base64_wp8", |b| {
        b.iter(|| {
            black_box(RequestLine::parse(black_box(
                "jAkMBBCkufmbxGcztuQus5kI+d1IBG1/bn0DV1A4",
            )))
        })
    });

    c.bench_function("status_document_sync_142", |b| {
        b.iter(|| black_box(status_document(black_box(Command::Sync), 142)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
