//! The in-process servers of `support` (every test of this crate starts
//! its server there) leave the production admin port (8083) alone: two at
//! once both serve their admin address, on ports of the system's choosing,
//! where both on 8083 gave an ERROR line (and a test holding 8083, or an
//! opush running on the machine, took it from all of them).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::sync::{Arc, Mutex};

use opush_server::obs::layer::{Format, Output};
use support::{start, Options};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_servers_take_no_fixed_admin_port() {
    let log = Arc::new(Mutex::new(Vec::new()));
    assert!(opush_server::obs::install_output(
        Output::Memory(log.clone()),
        Format::Text
    ));
    let a = start(Options::default()).await;
    let b = start(Options::default()).await;
    a.stop().await;
    b.stop().await;
    let text = String::from_utf8(log.lock().unwrap().clone()).unwrap();
    assert!(!text.contains("admin address not served"), "{text}");
    let admin: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("admin address:"))
        .collect();
    assert_eq!(admin.len(), 2, "{text}");
    for line in admin {
        assert!(
            line.contains(" admin_listen=127.0.0.1:") && !line.ends_with(":8083"),
            "{line}"
        );
    }
}
