//! The IMAP server sees the device's address, not opush's: before a login
//! made for a device's request opush sends `ID ("x-originating-ip" …)`
//! (RFC 2971), which a Dovecot that trusts opush (`login_trusted_networks`)
//! takes as the client's address: in its log (`rip=`) and for its per-IP
//! auth penalty (anvil), so one device's wrong password no longer delays
//! every other user's logins. Behind a reverse proxy listed in `[server]
//! trusted_proxies` the device's address is the one the proxy forwarded
//! (`X-Forwarded-For`); from anyone else that header is ignored.
//!
//! Set-up: a private Dovecot per test (`scripts/dovecot-private
//! --trusted-loopback`, ports 11657-11659, auth penalty on) behind opush
//! (`serve::run_with`, embedded store). The tests talk to opush from
//! 127.0.0.1, which plays the trusted proxy; the devices are 192.0.2.10 and
//! 192.0.2.20 (RFC 5737 documentation addresses). Users load0093 and
//! load0095 (and utf8pw3, for a password sent as a literal), in the
//! private instances only. Nothing here measures time:
//! Dovecot's log and `doveadm penalty` say which address it saw.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use opush_server::backends::imap::{ImapClient, ImapPool};
use opush_server::config::{Config, Secret};
use opush_server::origin::{self, ClientAddr};
use opush_tests::eas::{basic, EasClient};
use opush_tests::{
    demo_password, repo_root, require, PrivateDovecot, DOVECOT_IMAP, SPECIAL_PASSWORD_USERS,
};

mod serve_support;

const USER: &str = "load0093@load.test";
const OTHER_USER: &str = "load0095@load.test";

/// A private Dovecot trusting loopback (opush), its auth penalty on.
fn dovecot(name: &str, port: u16) -> PrivateDovecot {
    require(DOVECOT_IMAP);
    PrivateDovecot::new(repo_root().join("target/tmp").join(name), port).with_trusted_loopback()
}

/// opush against `dovecot` on an embedded store at `store`: every request
/// logs in (no auth cache), `server_extra` / `imap_extra` add keys.
fn config(dovecot: &PrivateDovecot, store: &Path, server_extra: &str, imap_extra: &str) -> Config {
    let listen = SocketAddr::from(([127, 0, 0, 1], serve_support::free_port()));
    Config::from_toml(&format!(
        "[server]\nlisten = \"{listen}\"\nadmin_listen = \"127.0.0.1:0\"\npublic_url = \"https://mail.example.test\"\n\
         auth_cache_ttl_s = 0\n{server_extra}\n\
         [storage]\nbackend = \"embedded\"\npath = \"{}\"\n\
         [imap]\nhost = \"127.0.0.1\"\nport = {}\ntimeout_ms = 10000\n{imap_extra}\n\
         [policy]\nrequire_provisioning = false\n",
        store.display(),
        dovecot.port,
    ))
    .unwrap()
}

/// An OPTIONS (which checks the credentials with an IMAP login) as `user`
/// with `password`, through a proxy saying the device is `forwarded_for`;
/// the HTTP status.
async fn options_from(addr: SocketAddr, user: &str, password: &str, forwarded_for: &str) -> u16 {
    let mut c = EasClient::new(addr, user, password, "CLIENTIP", "14.1");
    let headers = vec![
        ("Authorization".to_owned(), basic(user, password)),
        ("X-Forwarded-For".to_owned(), forwarded_for.to_owned()),
    ];
    c.send("OPTIONS", "/Microsoft-Server-ActiveSync", &headers, b"")
        .await
        .status
}

/// The `rip=` of every successful IMAP login of `user` in `dovecot`'s log
/// after byte `from`.
fn login_rips(dovecot: &PrivateDovecot, from: usize, user: &str) -> Vec<String> {
    let log = dovecot.log();
    let user_field = format!("user=<{user}>");
    log.get(from..)
        .unwrap_or("")
        .lines()
        .filter(|l| l.contains("imap-login: Info: Login: ") && l.contains(&user_field))
        .filter_map(|l| {
            let rip = l.split(", ").find_map(|f| f.strip_prefix("rip="))?;
            Some(rip.to_owned())
        })
        .collect()
}

/// Waits (10 s at most: Dovecot's log process writes behind) until
/// `dovecot`'s log has `n` logins of `user` after byte `from`; their `rip=`.
async fn wait_login_rips(
    dovecot: &PrivateDovecot,
    from: usize,
    user: &str,
    n: usize,
) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rips = login_rips(dovecot, from, user);
        if rips.len() >= n || Instant::now() > deadline {
            return rips;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn penalized(dovecot: &PrivateDovecot) -> Vec<String> {
    dovecot.penalties().into_iter().map(|(ip, _)| ip).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dovecot_sees_each_device_and_penalizes_only_the_one_with_a_wrong_password() {
    let dovecot = dovecot("client-ip-forwarded", 11657);
    dovecot.run("up");
    let from = dovecot.log().len();
    let store = tempfile::tempdir().unwrap();
    let served = serve_support::Served::start(
        config(
            &dovecot,
            store.path(),
            "trusted_proxies = [\"127.0.0.1\"]",
            "",
        ),
        store.path(),
    )
    .await;

    // Device A (192.0.2.10) logs in; an address the device itself put in
    // front of the proxy's (198.51.100.99) is not believed.
    let status = options_from(
        served.addr,
        USER,
        &demo_password(),
        "198.51.100.99, 192.0.2.10",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        wait_login_rips(&dovecot, from, USER, 1).await,
        ["192.0.2.10"]
    );

    // A wrong password from device A: Dovecot's penalty is on A's address.
    let status = options_from(served.addr, USER, "not-the-password", "192.0.2.10").await;
    assert_eq!(status, 401);

    // Device B (192.0.2.20), another user, logs in as itself.
    let status = options_from(served.addr, OTHER_USER, &demo_password(), "192.0.2.20").await;
    assert_eq!(status, 200);
    assert_eq!(
        wait_login_rips(&dovecot, from, OTHER_USER, 1).await,
        ["192.0.2.20"]
    );

    let penalized = penalized(&dovecot);
    assert!(
        penalized.iter().any(|ip| ip == "192.0.2.10"),
        "{penalized:?}"
    );
    for innocent in ["192.0.2.20", "127.0.0.1"] {
        assert!(
            !penalized.iter().any(|ip| ip == innocent),
            "{innocent} penalized: {penalized:?}"
        );
    }
    assert_eq!(
        login_rips(&dovecot, from, USER),
        ["192.0.2.10"],
        "no other login of A"
    );
    served.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_forward_client_ip_dovecot_sees_opush() {
    // Without LITERAL+ (a literal in LOGIN waits for the server's `+`),
    // for the pipelined ID below.
    let dovecot = dovecot("client-ip-off", 11658).without_literal_plus();
    dovecot.run("up");
    let from = dovecot.log().len();
    let store = tempfile::tempdir().unwrap();
    let served = serve_support::Served::start(
        config(
            &dovecot,
            store.path(),
            "trusted_proxies = [\"127.0.0.1\"]",
            "forward_client_ip = false",
        ),
        store.path(),
    )
    .await;
    let status = options_from(served.addr, OTHER_USER, &demo_password(), "192.0.2.10").await;
    assert_eq!(status, 200);
    assert_eq!(
        wait_login_rips(&dovecot, from, OTHER_USER, 1).await,
        ["127.0.0.1"]
    );
    // A wrong password now puts the penalty on opush's address: every
    // device behind it would wait.
    let status = options_from(served.addr, OTHER_USER, "not-the-password", "192.0.2.10").await;
    assert_eq!(status, 401);
    let penalized = penalized(&dovecot);
    assert!(
        penalized.iter().any(|ip| ip == "127.0.0.1"),
        "{penalized:?}"
    );
    assert!(
        !penalized.iter().any(|ip| ip == "192.0.2.10"),
        "{penalized:?}"
    );
    served.stop().await;

    // With the option on, an ID pipelined before a LOGIN whose password
    // goes as a synchronizing literal (not ASCII, no LITERAL+): the ID's
    // answer comes while LOGIN waits for the `+` and must not end it.
    let (user, password) = SPECIAL_PASSWORD_USERS[2];
    let mut cfg = Config::default().imap;
    cfg.port = dovecot.port;
    cfg.timeout_ms = 10_000;
    let from = dovecot.log().len();
    let device = ClientAddr {
        ip: "192.0.2.40".parse().unwrap(),
        port: Some(4711),
    };
    let session = ImapClient::login_for(&cfg, user, &Secret::new(password), Some(device))
        .await
        .unwrap();
    assert!(session.has("IMAP4REV1"));
    assert_eq!(
        wait_login_rips(&dovecot, from, user, 1).await,
        ["192.0.2.40"]
    );
    session.logout().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_peers_forwarded_for_is_ignored_and_pool_logins_name_their_request() {
    let dovecot = dovecot("client-ip-untrusted", 11659);
    dovecot.run("up");
    let from = dovecot.log().len();
    let store = tempfile::tempdir().unwrap();
    // Only 192.0.2.1 is a trusted proxy: 127.0.0.1 is a device like any
    // other, whatever it writes in X-Forwarded-For.
    let served = serve_support::Served::start(
        config(
            &dovecot,
            store.path(),
            "trusted_proxies = [\"192.0.2.1\"]",
            "",
        ),
        store.path(),
    )
    .await;
    let status = options_from(served.addr, USER, &demo_password(), "192.0.2.10").await;
    assert_eq!(status, 200);
    assert_eq!(
        wait_login_rips(&dovecot, from, USER, 1).await,
        ["127.0.0.1"]
    );
    served.stop().await;

    // The pool's logins name the device of the request asking, also from
    // a task the request spawned (a read-ahead) when it carries the
    // request's device; none outside a request (background work).
    let mut cfg = Config::default().imap;
    cfg.port = dovecot.port;
    cfg.timeout_ms = 10_000;
    let pool = ImapPool::new(cfg);
    let password = Secret::new(demo_password());
    let from = dovecot.log().len();
    let device = ClientAddr {
        ip: "192.0.2.30".parse().unwrap(),
        port: Some(40_000),
    };
    let s = origin::scope(device, pool.get_eager(OTHER_USER, &password))
        .await
        .unwrap();
    let (p, pw) = (pool.clone(), password.clone());
    let spawned = origin::scope(
        ClientAddr {
            ip: "2001:db8::31".parse().unwrap(),
            port: None,
        },
        async move {
            tokio::spawn(origin::carry(
                async move { p.get_eager(OTHER_USER, &pw).await },
            ))
            .await
        },
    )
    .await
    .unwrap()
    .unwrap();
    let background = pool.get_eager(OTHER_USER, &password).await.unwrap();
    let mut rips = wait_login_rips(&dovecot, from, OTHER_USER, 3).await;
    rips.sort();
    assert_eq!(rips, ["127.0.0.1", "192.0.2.30", "2001:db8::31"]);
    drop((s, spawned, background));
}
