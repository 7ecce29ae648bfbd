//! `opush serve`: configuration → storage → listener → graceful shutdown.
//!
//! Loads `opush.toml` (with `OPUSH_*` overrides), opens the store and checks
//! its schema: a missing, too old or unreachable store starts the server in
//! admin-only mode (every device request gets 503, with an ERROR log saying
//! why and which `opush schema …` command to run) rather than refusing to
//! start. Binds `[server] listen` and the admin address (`[server]
//! admin_listen`: metrics and logger levels, see `crate::obs::admin`),
//! serves until SIGTERM or ctrl-c, then lets in-flight requests finish.
//! SIGHUP re-reads the configuration's `[logging]` levels. It must not hold request logic (that is
//! `crate::http`) nor print secrets (the configuration's secrets print `*`).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use opush_storage::{SchemaStatus, StorageConfig, Store};
use serde::Deserialize;
use tokio::net::TcpListener;

use crate::backends::imap::ImapPool;
use crate::config::{Config, ConfigError};
use crate::device::{MemoryDeviceRegistry, StoreDeviceRegistry};
use crate::http::imap_login::ImapLoginVerifier;
use crate::http::{self, AppState, HttpSettings, ServeMode};
use crate::session::{EasServices, Sessions};

/// Why `opush serve` could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The listen address cannot be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// `[server] listen`.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The store could not be opened for device traffic.
    #[error("{0}")]
    Storage(String),
}

/// The HTTP settings of a configuration.
pub fn http_settings(cfg: &Config) -> HttpSettings {
    HttpSettings {
        public_url: cfg.server.public_url.clone(),
        max_in_flight: cfg.server.max_in_flight,
        max_request_body: cfg.server.max_request_body,
        allow_unknown_devices: cfg.devices.allow_unknown,
        require_provisioning: cfg.policy.require_provisioning,
        retry_after: Duration::from_secs(cfg.server.retry_after_s),
        realm: cfg.server.realm.clone(),
        auth_cache_ttl: Duration::from_secs(cfg.server.auth_cache_ttl_s),
        auth_cache_max_entries: cfg.server.auth_cache_max_entries,
        loop_window: Duration::from_secs(cfg.server.loop_window_s),
        loop_max_repeats: cfg.server.loop_max_repeats,
        timeouts: crate::http::conn::ConnTimeouts {
            header: Duration::from_secs(cfg.server.header_timeout_s),
            keep_alive: Duration::from_secs(cfg.server.keep_alive_s),
        },
        // Checked by `Config::validate`; an unchecked config trusts no proxy.
        trusted_proxies: crate::origin::TrustedProxies::parse(&cfg.server.trusted_proxies)
            .unwrap_or_default(),
    }
}

/// How often `opush_devices` is recounted from the store.
pub const DEVICE_RECOUNT: Duration = Duration::from_secs(3600);

/// The engine's limits and switches of a configuration (`[devices]`, `[policy]`).
pub fn engine_config(cfg: &Config) -> opush_engine::EngineConfig {
    opush_engine::EngineConfig {
        default_window: cfg.devices.window_size,
        max_window: cfg.devices.max_window_size,
        min_heartbeat: cfg.devices.heartbeat_min_s,
        max_heartbeat: cfg.devices.heartbeat_max_s,
        require_provisioning: cfg.policy.require_provisioning,
        max_window_bytes: cfg.devices.max_window_bytes,
        ..opush_engine::EngineConfig::default()
    }
}

/// Why device traffic must be refused, if it must: the store's schema
/// status, or the reason the store could not be opened.
pub async fn storage_mode(cfg: &Config) -> ServeMode {
    let storage = match StorageConfig::deserialize(toml::Value::Table(cfg.storage.clone())) {
        Ok(s) => s,
        Err(e) => return ServeMode::AdminOnly(format!("invalid [storage] configuration: {e}")),
    };
    let store = match Store::open(&storage).await {
        Ok(s) => s,
        Err(e) => {
            return ServeMode::AdminOnly(format!(
                "storage unavailable ({e}); fix [storage] and restart"
            ))
        }
    };
    match store.schema_status().await {
        Ok(status @ SchemaStatus::UpdateAdvised { current, .. }) => {
            if current < opush_storage::SENT_COPIES_SCHEMA {
                tracing::warn!(
                    target: "MIGRATION",
                    "storage schema {status}: Sent copies waiting for IMAP are kept in memory only \
                     (lost if opush stops) until `opush schema update`"
                );
            }
            if store.is_shared() {
                tracing::warn!(
                    target: "MIGRATION",
                    "storage schema {status}: no device leases until `opush schema update`: \
                     concurrent requests of one device on two opush processes may both carry \
                     out its changes"
                );
            } else {
                tracing::warn!(target: "MIGRATION", "storage schema {status}: run `opush schema update`");
            }
            ServeMode::Ready
        }
        Ok(status) if status.is_serviceable() => ServeMode::Ready,
        Ok(status @ SchemaStatus::InstallRequired { .. }) => ServeMode::AdminOnly(format!(
            "storage schema not installed ({status}); run `opush schema install`"
        )),
        Ok(status @ SchemaStatus::TooNew { .. }) => ServeMode::AdminOnly(format!(
            "storage schema newer than this opush ({status}); upgrade opush"
        )),
        Ok(status) => ServeMode::AdminOnly(format!(
            "storage schema too old ({status}); run `opush schema update`"
        )),
        Err(e) => ServeMode::AdminOnly(format!("cannot read the storage schema ({e})")),
    }
}

/// Turns transparent huge pages off for this process (Linux). mimalloc
/// asks for huge pages on its arenas; a 2 MiB page stays resident while any
/// of its small blocks is in use, which with thousands of parked Pings and
/// cached states made up about a third of the server's resident memory.
fn no_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "transparent huge pages left on");
    }
}

/// The EAS command services over the configured store and IMAP server.
async fn eas_services(cfg: &Config) -> Result<EasServices, ServeError> {
    let storage = StorageConfig::deserialize(toml::Value::Table(cfg.storage.clone()))
        .map_err(|e| ServeError::Storage(format!("invalid [storage] configuration: {e}")))?;
    let store = Store::open(&storage)
        .await
        .map_err(|e| ServeError::Storage(format!("storage unavailable: {e}")))?;
    let imap = Arc::new(ImapPool::new(cfg.imap.clone()));
    let push = crate::push::PushHub::new(
        crate::push::PushSettings::from_config(&cfg.push, &cfg.imap),
        cfg.imap.clone(),
    );
    push.set_login_gate(imap.login_gate().clone());
    let sent_copies =
        crate::sent_copy::SentCopies::new(Duration::from_secs(storage.ttl_sent_copies_s));
    Ok(EasServices {
        sessions: Sessions::new(
            Arc::new(store),
            cfg.devices.snapshot_every,
            cfg.devices.max_cached_states,
        )
        .with_max_cached_bytes(
            usize::try_from(cfg.devices.max_cached_states_mb.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
        )
        .with_lease_ttl(Duration::from_secs(storage.lease_ttl_s)),
        engine: engine_config(cfg),
        policy: crate::commands::provision::policy_from_config(&cfg.policy),
        imap,
        push,
        send: crate::commands::compose::SendSettings::from_config(cfg),
        sent_copies,
        oof: crate::oof::OofService::from_config(cfg),
    })
}

/// Runs the server until `shutdown` resolves.
pub async fn run_with(
    cfg: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    tracing::info!(target: "CONFIGURATION", "{}", crate::obs::masked_config(&cfg));
    let mode = storage_mode(&cfg).await;
    if let ServeMode::AdminOnly(reason) = &mode {
        tracing::error!("admin-only mode, no device traffic: {reason}");
    }
    let listener = TcpListener::bind(cfg.server.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: cfg.server.listen,
            source,
        })?;
    let eas = match &mode {
        ServeMode::Ready => Some(Arc::new(eas_services(&cfg).await?)),
        ServeMode::AdminOnly(_) => None,
    };
    // Devices live in the store's registry; without a store (admin-only
    // mode, no device traffic) an empty in-memory registry stands in.
    let store_registry = eas.as_ref().map(|eas| {
        Arc::new(StoreDeviceRegistry::new(
            eas.sessions.store().clone(),
            Duration::from_secs(cfg.devices.registry_write_every_s),
            1_000_000,
        ))
    });
    // The admin address administers devices through this process (its
    // sessions and registry cache), which holds the embedded store.
    let device_admin = match (&eas, &store_registry) {
        (Some(eas), Some(registry)) => Some(Arc::new(crate::admin::DeviceAdmin::new(
            eas.clone(),
            registry.clone(),
        ))),
        _ => None,
    };
    let devices: Arc<dyn crate::device::DeviceRegistry> = match store_registry {
        Some(registry) => registry,
        None => Arc::new(MemoryDeviceRegistry::new(1)),
    };
    if let Some(eas) = &eas {
        // Sent copies a previous run left waiting for IMAP: all of them now
        // when IMAP is reached as the master user; else each user's at
        // their next request.
        eas.sent_copies.resume_at_start(eas);
    }
    if let Some(eas) = &eas {
        // Idle pooled IMAP connections close after `[imap] pool_idle_timeout_s`
        // even for users who never come back (the pool only prunes on use).
        let pool = eas.imap.clone();
        let every = Duration::from_secs(cfg.imap.pool_idle_timeout_s.clamp(1, 60));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                pool.reap();
            }
        });
    }
    // Ended at shutdown (it holds the store, which must close with the server).
    let recount = eas.as_ref().map(|eas| {
        // `opush_devices`: the store's count, taken now and every
        // DEVICE_RECOUNT (devices expire, administrators remove them); new
        // devices are added as the registry writes them.
        let store = eas.sessions.store().clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(DEVICE_RECOUNT);
            loop {
                tick.tick().await;
                match store.list_all_devices().await {
                    Ok(all) => crate::obs::metrics::set_devices(all.len()),
                    Err(e) => {
                        crate::obs::metrics::storage_error();
                        tracing::warn!(target: "BACKEND", error = %e, "devices not counted");
                    }
                }
            }
        })
    });
    let flush_at_exit = eas.clone();
    let capture = eas
        .as_ref()
        .map(|_| Arc::new(crate::capture::Captures::from_config(&cfg.capture)));
    // Basic-auth logins share the pool's login gate, and the pool adopts
    // the sessions they open.
    let verifier = match &eas {
        Some(eas) => ImapLoginVerifier::with_pool(eas.imap.clone()),
        None => ImapLoginVerifier::new(cfg.imap.clone()),
    };
    let app = AppState::with_eas(http_settings(&cfg), Arc::new(verifier), devices, mode, eas);
    match crate::obs::access_log(&cfg.logging) {
        Ok(Some(log)) => {
            app.set_access_log(log);
        }
        Ok(None) => {}
        Err(e) => tracing::error!(target: "CONTAINER", error = %e, "no access log"),
    }
    if let Some(capture) = &capture {
        app.set_capture(capture.clone());
        let listed = capture.describe();
        if listed.lines().count() > 1 {
            tracing::info!(target: "CONFIGURATION", "full capture on for:\n{}", listed.trim_end());
        }
    }
    // Both listeners stop on the one shutdown signal.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    // Device traffic matters more than the admin address: a busy admin
    // port is an ERROR line, not a refusal to start.
    let admin = match TcpListener::bind(cfg.server.admin_listen).await {
        Ok(l) => {
            // The bound address: port 0 in the configuration is the system's choice.
            let bound = l.local_addr().unwrap_or(cfg.server.admin_listen);
            tracing::info!(target: "CONTAINER", admin_listen = %bound, "admin address: /metrics, /loggers, /capture, /devices");
            Some(tokio::spawn(crate::obs::admin::serve(
                l,
                capture,
                device_admin,
                stopped(stop_rx.clone()),
            )))
        }
        Err(e) => {
            tracing::error!(target: "CONTAINER", admin_listen = %cfg.server.admin_listen, error = %e, "admin address not served");
            None
        }
    };
    tracing::info!(
        target: "CONTAINER",
        listen = %cfg.server.listen,
        public_url = %cfg.server.public_url,
        "opush serving"
    );
    http::serve(listener, app, stopped(stop_rx)).await;
    if let Some(admin) = admin {
        let _ = admin.await;
    }
    if let Some(task) = recount {
        task.abort();
        let _ = task.await;
    }
    if let Some(eas) = flush_at_exit {
        // Pending sent copies stay in the store for the next start; their
        // resumers let go of it.
        eas.sent_copies.stop().await;
        // Requests that changed nothing left their trace in memory.
        eas.sessions.flush().await;
    }
    tracing::info!(target: "CONTAINER", "opush stopped");
    Ok(())
}

/// Resolves on SIGTERM or ctrl-c.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("ctrl-c: shutting down"),
        _ = term => tracing::info!("SIGTERM: shutting down"),
    }
}

/// `opush serve [--config FILE]`: loads the configuration, installs the
/// log subscriber, runs until a signal. Returns the process exit code.
pub fn main(config_path: Option<&Path>) -> ExitCode {
    let cfg = match config_path {
        Some(p) => Config::load(p),
        None => Config::from_env(),
    };
    let cfg = match cfg {
        Ok(c) => c,
        Err(e) => {
            eprintln!("opush serve: {e}");
            return ExitCode::FAILURE;
        }
    };
    // A subscriber may already be set (tests); then logs go there.
    if let Err(e) = crate::obs::install(&cfg.logging) {
        eprintln!("opush serve: {e}");
        return ExitCode::FAILURE;
    }
    no_transparent_huge_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(cfg.server.blocking_threads.max(1))
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opush serve: {}", ServeError::Runtime(e));
            return ExitCode::FAILURE;
        }
    };
    #[cfg(unix)]
    {
        let _in_runtime = runtime.enter();
        match crate::obs::reload_on_sighup(config_path.map(Path::to_path_buf)) {
            Ok(task) => {
                runtime.spawn(task);
            }
            Err(e) => {
                tracing::warn!(target: "CONFIGURATION", error = %e, "no SIGHUP handler: levels change through the admin address only")
            }
        }
    }
    let res = runtime.block_on(run_with(cfg, shutdown_signal()));
    // Give spawned connection tasks a moment to flush after graceful shutdown.
    runtime.shutdown_timeout(Duration::from_secs(5));
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("opush serve: {e}");
            ExitCode::FAILURE
        }
    }
}
