//! `opush serve` run in-process for a test (`serve::run_with`): the
//! configuration the test wrote, on an embedded store whose schema this
//! installs (when it has none), listening before [`Served::start`]
//! returns. Stopping it ([`Served::stop`], or dropping it) ends the
//! server. [`ServedProcess`] runs it on a runtime of its own, which ends
//! with it as a process's would: whatever it left running in the
//! background stops too.

#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test support: not every test file uses every part; a panic is a test failure"
)]

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use opush_server::config::Config;
use opush_storage::{StorageConfig, Store};
use tokio::sync::oneshot;

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Installs the latest schema in the embedded store at `store`, unless it
/// has one (a store a previous server used is reopened as it is).
pub async fn install_schema(store: &Path) {
    let storage = StorageConfig {
        path: store.to_path_buf(),
        ..StorageConfig::default()
    };
    let opened = Store::open(&storage).await.unwrap();
    if matches!(
        opened.schema_status().await.unwrap(),
        opush_storage::SchemaStatus::InstallRequired { .. }
    ) {
        opened.install_schema().await.unwrap();
    }
}

/// Waits (10 s at most) until something listens on `addr`.
async fn wait_listening(addr: SocketAddr) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("opush did not listen on {addr}");
}

/// A running `opush serve`.
pub struct Served {
    /// Where it listens (`[server] listen`).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Served {
    /// Installs the schema in the embedded store at `store` (the path
    /// `cfg` names in `[storage]`), starts the server and waits until it
    /// listens (10 s at most).
    pub async fn start(cfg: Config, store: &Path) -> Served {
        install_schema(store).await;
        let addr = cfg.server.listen;
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            opush_server::serve::run_with(cfg, async move {
                let _ = rx.await;
            })
            .await
            .expect("opush serve failed");
        });
        wait_listening(addr).await;
        Served {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops it gracefully and waits (20 s at most) until it has: its
    /// store is then free to open.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("opush did not stop within 20 s")
                .expect("opush task panicked");
        }
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}

/// `opush serve` on a tokio runtime (and thread) of its own: stopping it
/// ends the runtime, and with it every task the server spawned, as the
/// end of an `opush` process would (a [`Served`] stopped leaves the
/// tasks it spawned running on the test's runtime).
pub struct ServedProcess {
    /// Where it listens (`[server] listen`).
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ServedProcess {
    /// As [`Served::start`], on a runtime of its own.
    pub async fn start(cfg: Config, store: &Path) -> ServedProcess {
        install_schema(store).await;
        let addr = cfg.server.listen;
        let (stop, rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            runtime
                .block_on(opush_server::serve::run_with(cfg, async move {
                    let _ = rx.await;
                }))
                .expect("opush serve failed");
            runtime.shutdown_timeout(Duration::from_secs(10));
        });
        wait_listening(addr).await;
        ServedProcess {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Stops it (gracefully, then its runtime) and waits until its store
    /// is free to open (30 s at most).
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            tokio::time::timeout(
                Duration::from_secs(30),
                tokio::task::spawn_blocking(move || thread.join()),
            )
            .await
            .expect("opush did not stop within 30 s")
            .unwrap()
            .expect("opush's thread panicked");
        }
    }
}

impl Drop for ServedProcess {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
    }
}
