//! Memory of the pending Sent copies with many queued (docs/BENCHMARKS.md,
//! "Session 17: Sent copies queued"): an embedded store holding
//! `OPUSH_BENCH_SENT_COPIES` copies (default 1000) of
//! `OPUSH_BENCH_SENT_KB` KiB each (default 1024) for one user — a user
//! whose Sent is over quota — then the process's peak RSS (`VmHWM`, reset
//! through `/proc/self/clear_refs` before each phase) while
//!
//! 1. the sweep's and the listing's read, `all_sent_copies()` (no message
//!    read), three times;
//! 2. a resumer's round of tries: each copy's message read
//!    (`sent_copy`) and dropped before the next;
//! 3. for comparison, every message held at once (what reading whole rows,
//!    as session 16's `all_sent_copies` did, costs): only with
//!    `OPUSH_BENCH_SENT_HOLD=1`.
//!
//! The store goes in a temporary directory under `OPUSH_BENCH_DIR` (default
//! the system's), removed at the end. Linux only (`/proc`).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "bench code: a panic is a failed run"
)]

use std::time::Instant;

use opush_storage::{SentCopy, StorageConfig, Store};

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `VmRSS` and `VmHWM` of this process, MiB.
fn rss() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb = |key: &str| {
        status
            .lines()
            .find(|l| l.starts_with(key))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1024.0
    };
    (kb("VmRSS:"), kb("VmHWM:"))
}

/// Resets `VmHWM` to the current RSS.
fn reset_peak() {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else to parse.
    let copies = env_or("OPUSH_BENCH_SENT_COPIES", 1000);
    let kb = env_or("OPUSH_BENCH_SENT_KB", 1024);
    let hold = std::env::var("OPUSH_BENCH_SENT_HOLD").is_ok_and(|v| v == "1");
    let base = std::env::var("OPUSH_BENCH_DIR").map_or_else(|_| std::env::temp_dir(), Into::into);
    let dir = tempfile::tempdir_in(base).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = Store::open(&StorageConfig {
            path: dir.path().to_path_buf(),
            ..StorageConfig::default()
        })
        .await
        .unwrap();
        store.install_schema().await.unwrap();
        let user = "load1330@load.test";
        let started = Instant::now();
        for i in 0..copies {
            let mut bytes = format!(
                "Message-ID: <bench{i}@load.test>\r\nSubject: queued {i}\r\n\r\n"
            )
            .into_bytes();
            bytes.resize(kb * 1024, b'x');
            store
                .put_sent_copy(SentCopy {
                    user: user.into(),
                    message_id: format!("<bench{i}@load.test>"),
                    device_id: "BENCHDEV".into(),
                    subject: format!("queued {i}"),
                    created_ms: 1_800_000_000_000,
                    last_try_ms: 1_800_000_000_000,
                    tries: 3,
                    next_try_ms: 0,
                    last_error: Some("IMAP server refused APPEND: Quota exceeded".into()),
                    bytes,
                })
                .await
                .unwrap();
        }
        let (rss_after, _) = rss();
        println!(
            "stored {copies} copies of {kb} KiB ({:.0} MiB) in {:.1} s; RSS now {rss_after:.0} MiB",
            (copies * kb) as f64 / 1024.0,
            started.elapsed().as_secs_f64()
        );

        reset_peak();
        let (before, _) = rss();
        let t = Instant::now();
        for _ in 0..3 {
            let listed = store.all_sent_copies().await.unwrap();
            assert_eq!(listed.len(), copies);
        }
        let (_, peak) = rss();
        println!(
            "all_sent_copies x3: {:.1} ms each; RSS {before:.0} MiB before, peak {peak:.0} MiB (+{:.0})",
            t.elapsed().as_secs_f64() * 1000.0 / 3.0,
            peak - before
        );

        reset_peak();
        let (before, _) = rss();
        let t = Instant::now();
        for i in 0..copies {
            let c = store
                .sent_copy(user, &format!("<bench{i}@load.test>"))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(c.bytes.len(), kb * 1024);
        }
        let (_, peak) = rss();
        println!(
            "each copy read in turn (a round of tries): {:.1} ms each; RSS {before:.0} MiB before, peak {peak:.0} MiB (+{:.0})",
            t.elapsed().as_secs_f64() * 1000.0 / copies as f64,
            peak - before
        );

        if hold {
            reset_peak();
            let (before, _) = rss();
            let mut all = Vec::with_capacity(copies);
            for i in 0..copies {
                all.push(
                    store
                        .sent_copy(user, &format!("<bench{i}@load.test>"))
                        .await
                        .unwrap()
                        .unwrap(),
                );
            }
            let (_, peak) = rss();
            println!(
                "every message held at once (whole rows): RSS {before:.0} MiB before, peak {peak:.0} MiB (+{:.0})",
                peak - before
            );
            drop(all);
        }
        store.destroy().await.unwrap();
    });
    drop(dir);
}
