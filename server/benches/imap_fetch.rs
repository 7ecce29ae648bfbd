//! IMAP reference figures (issue #5): what one connection to the real Dovecot
//! of `scripts/stack` costs for the metadata of 10,000 messages, the
//! CONDSTORE/QRESYNC "nothing changed" probe and a STATUS poll.
//!
//! Needs `scripts/stack up dovecot` (panics otherwise). The first run fills
//! `opush-bench-10k` of `load0048@load.test` (kept for later runs).
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
#![allow(
    missing_docs,
    reason = "criterion_group! generates undocumented functions"
)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use opush_server::backends::imap::{ImapClient, Session};
use opush_server::config::{Config, Secret};

const USER: &str = "load0048@load.test";
const FOLDER: &str = "opush-bench-10k";
const N: u32 = 10_000;

async fn setup() -> Session {
    if tokio::net::TcpStream::connect("127.0.0.1:1143")
        .await
        .is_err()
    {
        panic!("Dovecot is not reachable on 127.0.0.1:1143: run `scripts/stack up dovecot`");
    }
    let pw =
        Secret::new(std::env::var("OPUSH_DEMO_PASSWORD").unwrap_or_else(|_| "opush-demo".into()));
    let mut cfg = Config::default().imap;
    cfg.timeout_ms = 120_000;
    let mut s = ImapClient::login(&cfg, USER, &pw).await.expect("login");
    let _ = s.create_folder(FOLDER).await;
    let have = s.status(FOLDER).await.expect("status").messages;
    if have != N {
        s.empty_folder(FOLDER).await.expect("empty");
        for i in 0..N {
            let msg = format!(
                "From: bench{i}@load.test\r\nTo: {USER}\r\nSubject: bench message {i}\r\n\
                 Message-ID: <bench-{i}@opush.test>\r\n\r\nbody {i}\r\n"
            );
            s.append(
                FOLDER,
                &[],
                Some(1_700_000_000 + i64::from(i)),
                msg.as_bytes(),
            )
            .await
            .expect("append");
        }
    }
    s
}

fn imap_reference(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut s = rt.block_on(setup());
    let modseq = rt
        .block_on(s.examine(FOLDER))
        .expect("examine")
        .highestmodseq
        .expect("CONDSTORE");
    let mut g = c.benchmark_group("imap");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("uid_fetch_meta_10k", |b| {
        b.iter(|| {
            let list = rt
                .block_on(s.list_messages(FOLDER, None, true))
                .expect("fetch");
            assert_eq!(list.len(), N as usize);
        })
    });
    // The listing of a folder with no FilterType window: no INTERNALDATE.
    g.bench_function("uid_fetch_meta_undated_10k", |b| {
        b.iter(|| {
            let list = rt
                .block_on(s.list_messages(FOLDER, None, false))
                .expect("fetch");
            assert_eq!(list.len(), N as usize);
        })
    });
    g.bench_function("changes_since_nothing_10k", |b| {
        b.iter(|| {
            let ch = rt
                .block_on(s.changes_since(FOLDER, modseq))
                .expect("changes");
            assert!(ch.changed.is_empty());
        })
    });
    g.bench_function("status_poll", |b| {
        b.iter(|| rt.block_on(s.status(FOLDER)).expect("status"))
    });
    g.bench_function("select_10k", |b| {
        b.iter(|| rt.block_on(s.select(FOLDER)).expect("select"))
    });
    let window: Vec<u32> = (5001..=5100).collect();
    g.bench_function("fetch_meta_100", |b| {
        b.iter(|| {
            let m = rt.block_on(s.fetch_meta(FOLDER, &window)).expect("meta");
            assert_eq!(m.len(), window.len());
        })
    });
    g.bench_function("fetch_messages_100", |b| {
        b.iter(|| {
            let m = rt
                .block_on(s.fetch_messages(FOLDER, &window))
                .expect("messages");
            assert_eq!(m.len(), window.len());
        })
    });
    g.finish();
}

criterion_group!(benches, imap_reference);
criterion_main!(benches);
