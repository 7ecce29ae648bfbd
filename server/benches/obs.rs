//! Cost of the observability layer per request: a log call whose logger is
//! off, a written line, a timed section, the end-of-request BREAKDOWN and
//! SUMMARY work, and an access log line. Numbers in docs/BENCHMARKS.md.

#![allow(missing_docs, reason = "criterion macros generate undocumented items")]
#![allow(clippy::unwrap_used, reason = "bench code: a panic is a failed run")]

use std::sync::{Arc, Mutex};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use opush_server::obs::access::{combined_line, AccessRecord};
use opush_server::obs::breakdown::{build, Category, Section};
use opush_server::obs::layer::{Format, Output};
use opush_server::obs::{levels, scope, Logger, LoggerLevel};

fn benches(c: &mut Criterion) {
    let buf = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    assert!(opush_server::obs::install_output(
        Output::Memory(buf.clone()),
        Format::Text
    ));
    for l in Logger::ALL {
        levels().set(l, LoggerLevel::Info);
    }
    tracing::callsite::rebuild_interest_cache();

    c.bench_function("log_call_logger_off", |b| {
        b.iter(|| tracing::debug!(target: "IMAP.COMMAND", ms = black_box(3u64), "UID FETCH"))
    });
    c.bench_function("log_line_written", |b| {
        b.iter(|| {
            tracing::info!(target: "SUMMARY.OUT", "CHANGE: {}, DELETE: 0, FETCH: 0", black_box(4));
            buf.lock().unwrap().clear();
        })
    });
    // A scope per iteration: the per-request set-up plus one section.
    c.bench_function("request_scope_with_one_timed_section", |b| {
        b.iter(|| {
            let req = scope::RequestScope::new();
            futures::executor::block_on(scope::run(
                req,
                scope::timed(Category::Imap, async { black_box(1) }),
            ))
        })
    });
    let sections: Vec<Section> = (0..20u64)
        .map(|i| Section {
            path: match i % 4 {
                0 => vec![Category::Email],
                1 => vec![Category::Email, Category::Imap],
                2 => vec![Category::Email, Category::Storage],
                _ => vec![Category::Storage],
            },
            micros: 1_000 + i * 137,
        })
        .collect();
    c.bench_function("breakdown_20_sections_rendered", |b| {
        b.iter(|| {
            build(black_box(250_000), black_box(&sections))
                .millis()
                .to_string()
        })
    });
    let record = AccessRecord {
        remote: "127.0.0.1".parse().ok(),
        user: Some("bob@example.test"),
        unix_ms: 1_795_957_509_042,
        method: "POST",
        target: "/Microsoft-Server-ActiveSync?Cmd=Sync&User=bob&DeviceId=D1&DeviceType=WP",
        status: 200,
        bytes: 1234,
        referer: None,
        user_agent: Some("Apple-iPhone9C1/1602.92"),
    };
    c.bench_function("access_line", |b| {
        b.iter(|| combined_line(black_box(&record)))
    });
}

criterion_group!(obs, benches);
criterion_main!(obs);
