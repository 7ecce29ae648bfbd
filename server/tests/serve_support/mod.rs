//! `opush serve` run in-process for a test (`serve::run_with`): the
//! configuration the test wrote, on an embedded store whose schema this
//! installs, listening before [`Served::start`] returns. Stopping it
//! ([`Served::stop`], or dropping it) ends the server.

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
        let storage = StorageConfig {
            path: store.to_path_buf(),
            ..StorageConfig::default()
        };
        Store::open(&storage)
            .await
            .unwrap()
            .install_schema()
            .await
            .unwrap();
        let addr = cfg.server.listen;
        let (stop, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            opush_server::serve::run_with(cfg, async move {
                let _ = rx.await;
            })
            .await
            .expect("opush serve failed");
        });
        for _ in 0..400 {
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Served {
                    addr,
                    stop: Some(stop),
                    task: Some(task),
                };
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("opush did not listen on {addr}");
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
