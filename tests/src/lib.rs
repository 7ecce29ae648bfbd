//! Shared helpers for the integration tests that run against real services
//! (Dovecot, Postfix, Cassandra …) started by `scripts/stack`.
//!
//! A test that needs a service calls [`require`]: when the service does not
//! answer, the test fails with the command that starts it. It never skips:
//! a missing service is a failed test, in CI and on a laptop alike.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::time::Duration;

/// A service of the test stack: its name in `scripts/stack` and its address.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The plug-in name, as in `scripts/stack up <name>`.
    pub name: &'static str,
    /// Where it listens (loopback only).
    pub addr: &'static str,
}

/// Dovecot IMAP (CONDSTORE, QRESYNC, NOTIFY, SPECIAL-USE).
pub const DOVECOT_IMAP: Service = Service {
    name: "dovecot",
    addr: "127.0.0.1:1143",
};
/// Postfix relay for loopback clients, delivering into Dovecot over LMTP.
pub const POSTFIX_SMTP: Service = Service {
    name: "postfix",
    addr: "127.0.0.1:1025",
};
/// Postfix submission with SASL authentication through Dovecot.
pub const POSTFIX_SUBMISSION: Service = Service {
    name: "postfix",
    addr: "127.0.0.1:1587",
};
/// Apache Cassandra 5.0, native protocol.
pub const CASSANDRA: Service = Service {
    name: "cassandra",
    addr: "127.0.0.1:9042",
};

/// The password of every user of the test stack (`OPUSH_DEMO_PASSWORD`).
pub fn demo_password() -> String {
    std::env::var("OPUSH_DEMO_PASSWORD").unwrap_or_else(|_| "opush-demo".to_owned())
}

/// Fails the calling test unless `svc` accepts a TCP connection.
pub fn require(svc: Service) -> SocketAddr {
    let addr: SocketAddr = match svc.addr.parse() {
        Ok(a) => a,
        Err(e) => panic!("bad address {} for {}: {e}", svc.addr, svc.name),
    };
    if let Err(e) = TcpStream::connect_timeout(&addr, Duration::from_secs(3)) {
        panic!(
            "service `{}` is not answering on {} ({e}): run `scripts/stack up {}` (scripts/test does it for you)",
            svc.name, svc.addr, svc.name
        );
    }
    addr
}

/// The workspace root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The real-device traffic corpus in `../shared/corpus`, beside the clone.
/// Fails the calling test when it is missing.
pub fn corpus_dir() -> PathBuf {
    let dir = repo_root().join("../shared/corpus/real-devices");
    assert!(
        dir.is_dir(),
        "the traffic corpus is missing at {}",
        dir.display()
    );
    dir
}
