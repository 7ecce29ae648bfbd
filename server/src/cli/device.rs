//! `opush device wipe|allow|quarantine --user U --device D [--config F]` and
//! `opush device list [--user U] [--config F]`: device administration from
//! the command line (`opush_server::admin` holds the logic and the answer
//! text).
//!
//! The command first opens the configured store itself. When it cannot —
//! the embedded store is held by a running `opush serve` — it asks that
//! server through its admin address (`[server] admin_listen`, `POST
//! /devices/USER/DEVICE/ACTION`, `GET /devices[/USER]`), which carries the
//! action out with its own sessions and registry cache. With Cassandra the
//! store opens and is changed directly; a running server sees a wipe on the
//! device's next request and an access change within `[devices]
//! registry_write_every_s`.

use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;
use opush_server::admin::{self, Action as AdminAction};
use opush_server::config::Config;
use opush_server::session::Sessions;
use opush_storage::{StorageConfig, Store};
use serde::Deserialize as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What to do with a device.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Ask for a remote wipe ([MS-ASPROV] RemoteWipe) on the next request.
    Wipe(Target),
    /// Allow a (quarantined) device to sync.
    Allow(Target),
    /// Hold a device back (quarantine) until allowed again.
    Quarantine(Target),
    /// List the devices (of one user, or all): user, device, type, state,
    /// last seen (Unix ms), policy key.
    List(Listing),
}

/// Which device, and where the store is.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The device's user (`user@domain`, as it logs in).
    #[arg(long)]
    pub user: String,
    /// The DeviceId.
    #[arg(long)]
    pub device: String,
    /// Configuration file (default: built-in configuration and OPUSH_* variables).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Whose devices, and where the store is.
#[derive(Debug, clap::Args)]
pub struct Listing {
    /// Only this user's devices.
    #[arg(long)]
    pub user: Option<String>,
    /// Configuration file (default: built-in configuration and OPUSH_* variables).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Runs one device action and returns the exit code.
pub fn run(action: Action) -> ExitCode {
    block_on("opush device", run_async(&action))
}

/// Runs an administration command's future on a runtime of its own: what
/// it returns printed on stdout (success) or stderr after `name` (failure).
pub(crate) fn block_on(
    name: &str,
    command: impl std::future::Future<Output = Result<String, String>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match command.await {
            Ok(message) => {
                print!("{}", with_newline(message));
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprint!("{name}: {}", with_newline(message));
                ExitCode::FAILURE
            }
        }
    })
}

pub(crate) fn with_newline(mut s: String) -> String {
    if !s.is_empty() && !s.ends_with('\n') {
        s.push('\n');
    }
    s
}

/// Where the command reaches the devices.
pub(crate) enum Via {
    /// The store itself.
    Store(Arc<Store>),
    /// A running server's admin address (the store was held).
    Server(SocketAddr),
}

pub(crate) async fn reach(config: Option<&Path>) -> Result<Via, String> {
    let cfg = match config {
        Some(p) => Config::load(p),
        None => Config::from_env(),
    }
    .map_err(|e| e.to_string())?;
    let storage = StorageConfig::deserialize(toml::Value::Table(cfg.storage.clone()))
        .map_err(|e| format!("[storage]: {e}"))?;
    match Store::open(&storage).await {
        Ok(store) => Ok(Via::Store(Arc::new(store))),
        Err(open_err) => {
            let admin = cfg.server.admin_listen;
            match tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(admin),
            )
            .await
            {
                Ok(Ok(_)) => Ok(Via::Server(admin)),
                _ => Err(format!(
                    "cannot open the store ({open_err}) and no server answers at the admin \
                     address {admin} ([server] admin_listen)"
                )),
            }
        }
    }
}

async fn run_async(action: &Action) -> Result<String, String> {
    let (admin_action, t) = match action {
        Action::Wipe(t) => (AdminAction::Wipe, t),
        Action::Allow(t) => (AdminAction::Allow, t),
        Action::Quarantine(t) => (AdminAction::Quarantine, t),
        Action::List(l) => {
            return match reach(l.config.as_deref()).await? {
                Via::Store(store) => admin::list(&store, l.user.as_deref())
                    .await
                    .map(|rows| admin::describe(&rows))
                    .map_err(|e| e.to_string()),
                Via::Server(addr) => {
                    let path = match &l.user {
                        Some(u) => format!("/devices/{}", encode(u)),
                        None => "/devices".to_owned(),
                    };
                    http(addr, "GET", &path).await
                }
            };
        }
    };
    match reach(t.config.as_deref()).await? {
        Via::Store(store) => {
            let sessions = Sessions::new(store, 0, 1);
            admin::run(&sessions, admin_action, &t.user, &t.device)
                .await
                .map_err(|e| e.to_string())
        }
        Via::Server(addr) => {
            let path = format!(
                "/devices/{}/{}/{}",
                encode(&t.user),
                encode(&t.device),
                admin_action.name()
            );
            http(addr, "POST", &path).await
        }
    }
}

/// Percent-encodes a path segment (everything but RFC 3986 unreserved).
pub(crate) fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// One HTTP/1.1 request to the admin address; the body on 200, else an
/// error with the status line and body.
pub(crate) async fn http(addr: SocketAddr, method: &str, path: &str) -> Result<String, String> {
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let req = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await?;
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("the server at {addr} did not answer within 30 s"))?
        .map_err(|e| format!("admin address {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(body.to_owned())
    } else {
        Err(format!(
            "the server at {addr} answered {status}: {}",
            body.trim_end()
        ))
    }
}
