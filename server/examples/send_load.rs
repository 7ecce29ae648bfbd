//! `send_load`: SendMail throughput through to the stack's Postfix.
//!
//! Runs the SendMail pipeline the HTTP handler runs (`commands::compose`:
//! device session on a fresh embedded store, ClientId check, message
//! preparation, SMTP submission to 127.0.0.1:1025, the `MailSent` append)
//! for `--messages` messages from `--concurrency` devices of one user at
//! once, and prints messages/s accepted by the relay and the per-message
//! latency (p50/p99). `--save` also APPENDs each copy to Sent over IMAP.
//! The HTTP front end is measured on its own (`benches/http_front.rs`).
//!
//! Sender load0043@load.test, recipient load0044@load.test (the reserved
//! send-test users; every message has a unique subject). Bounded: it sends
//! exactly `--messages` messages and stops.
//!
//! ```text
//! cargo run --release -p opush-server --example send_load -- --messages 500 --concurrency 8
//! ```

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a measurement tool: a panic is a failed run"
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use opush_protocol::commands::compose::ComposeRequest;
use opush_protocol::query::Command;
use opush_server::backends::imap::ImapPool;
use opush_server::commands::compose::{compose, SendSettings};
use opush_server::commands::provision::default_policy;
use opush_server::config::{ImapConfig, Secret};
use opush_server::push::{PushHub, PushSettings};
use opush_server::session::{Caller, EasServices, Sessions};
use opush_storage::{StorageConfig, Store};

const SENDER: &str = "load0043@load.test";
const RCPT: &str = "load0044@load.test";

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| v.parse().expect("a number"))
        .unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let messages = arg("--messages", 200);
    let concurrency = arg("--concurrency", 4).max(1);
    let save = std::env::args().any(|a| a == "--save");
    let size = arg("--size", 2_000);

    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StorageConfig {
        path: dir.path().to_path_buf(),
        ..StorageConfig::default()
    })
    .await
    .unwrap();
    store.install_schema().await.unwrap();
    let imap = ImapConfig::default();
    let eas = Arc::new(EasServices {
        sessions: Sessions::new(Arc::new(store), 100, 1_000),
        engine: opush_engine::EngineConfig::default(),
        policy: default_policy(),
        imap: Arc::new(ImapPool::new(imap.clone())),
        push: PushHub::new(PushSettings::default(), imap),
        send: SendSettings::default(),
        sent_copies: opush_server::sent_copy::SentCopies::default(),
        oof: opush_server::oof::OofService::default(),
    });
    let password = Secret::new(std::env::var("OPUSH_DEMO_PASSWORD").unwrap_or("opush-demo".into()));
    let run = format!("{}", std::process::id());
    let body = "z".repeat(size);

    let started = Instant::now();
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let eas = eas.clone();
        let password = password.clone();
        let run = run.clone();
        let body = body.clone();
        let share = messages / concurrency + usize::from(w < messages % concurrency);
        workers.push(tokio::spawn(async move {
            let device = format!("SENDLOAD{w}");
            let caller = Caller::new(SENDER, &device, &password);
            let mut latencies = Vec::with_capacity(share);
            for n in 0..share {
                let mime = format!(
                    "To: {RCPT}\r\nSubject: send_load {run} {w}/{n}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{body}\r\n"
                );
                let req = ComposeRequest {
                    client_id: Some(format!("{run}-{w}-{n}")),
                    save_in_sent_items: save,
                    mime: mime.into_bytes(),
                    ..ComposeRequest::default()
                };
                let t = Instant::now();
                compose(&req, Command::SendMail, &caller, &eas)
                    .await
                    .expect("send");
                latencies.push(t.elapsed());
            }
            latencies
        }));
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(messages);
    for w in workers {
        latencies.extend(w.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or_default()
    };
    println!(
        "send_load: {} messages of ~{} bytes, concurrency {concurrency}, save_in_sent {save}: {:.1} s, {:.1} messages/s, latency p50 {:.1} ms, p99 {:.1} ms",
        latencies.len(),
        size + 120,
        elapsed.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64(),
        pct(0.5).as_secs_f64() * 1000.0,
        pct(0.99).as_secs_f64() * 1000.0,
    );
}
