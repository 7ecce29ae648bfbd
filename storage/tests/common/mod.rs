//! Test harness shared by the storage integration tests: opens a fresh
//! store of either backend (a temporary directory, or a fresh Cassandra
//! keyspace with a random suffix that is dropped afterwards) and fails —
//! never skips — when Cassandra is not running.

#![allow(dead_code, clippy::unwrap_used)]

use std::sync::atomic::{AtomicU64, Ordering};

use opush_storage::{BackendKind, Password, StorageConfig, Store};

/// Which backend a test runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Embedded,
    Cassandra,
}

/// A store plus what must be cleaned up after the test.
pub struct TestStore {
    pub store: Store,
    pub config: StorageConfig,
    _dir: Option<tempfile::TempDir>,
    _permit: Option<tokio::sync::SemaphorePermit<'static>>,
}

/// Schema changes on one small node are slow: at most two Cassandra tests at a time.
static CASSANDRA_SLOTS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(2);

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn unique_suffix() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let h = blake3::hash(format!("{nanos}-{}-{n}", std::process::id()).as_bytes());
    h.to_hex()[..12].to_string()
}

/// The Cassandra settings of the test stack (`scripts/stack up cassandra`).
pub fn cassandra_config() -> StorageConfig {
    StorageConfig {
        backend: BackendKind::Cassandra,
        seeds: vec![std::env::var("OPUSH_CASSANDRA_HOST").unwrap_or_else(|_| "127.0.0.1".into())],
        port: 9042,
        keyspace: format!("opush_t_{}", unique_suffix()),
        user: "opush".into(),
        password: Password::new(
            std::env::var("OPUSH_CASSANDRA_PASSWORD").unwrap_or_else(|_| "opush-test".into()),
        ),
        read_timeout_ms: 10_000,
        ..StorageConfig::default()
    }
}

/// Fails the test with the fix when nothing listens on the Cassandra port.
pub fn require_cassandra(cfg: &StorageConfig) {
    let addr = format!("{}:{}", cfg.seeds[0], cfg.port);
    let ok = std::net::TcpStream::connect_timeout(
        &addr.parse().unwrap(),
        std::time::Duration::from_secs(2),
    )
    .is_ok();
    assert!(
        ok,
        "Cassandra is not reachable on {addr}: run `scripts/stack up cassandra`"
    );
}

impl TestStore {
    /// A fresh, empty store (no schema installed) with `tweak` applied to its config.
    pub async fn fresh_with(backend: Backend, tweak: impl FnOnce(&mut StorageConfig)) -> TestStore {
        let mut permit = None;
        let (mut config, dir) = match backend {
            Backend::Embedded => {
                let dir = tempfile::tempdir().unwrap();
                let cfg = StorageConfig {
                    path: dir.path().to_path_buf(),
                    ..StorageConfig::default()
                };
                (cfg, Some(dir))
            }
            Backend::Cassandra => {
                let cfg = cassandra_config();
                require_cassandra(&cfg);
                permit = Some(CASSANDRA_SLOTS.acquire().await.unwrap());
                (cfg, None)
            }
        };
        tweak(&mut config);
        let store = Store::open(&config).await.unwrap();
        TestStore {
            store,
            config,
            _dir: dir,
            _permit: permit,
        }
    }

    /// A fresh store with the latest schema installed.
    pub async fn installed(backend: Backend) -> TestStore {
        let t = Self::fresh_with(backend, |_| {}).await;
        t.store.install_schema().await.unwrap();
        t
    }

    /// Closes the store and opens it again from the same config, as a new
    /// process would (the data directory or keyspace is kept).
    pub async fn reopen(self) -> TestStore {
        let TestStore {
            store,
            config,
            _dir,
            _permit,
        } = self;
        drop(store);
        let store = Store::open(&config).await.unwrap();
        TestStore {
            store,
            config,
            _dir,
            _permit,
        }
    }

    /// Drops the Cassandra keyspace (the temporary directory goes by itself).
    pub async fn cleanup(self) {
        if self.config.backend == BackendKind::Cassandra {
            self.store.destroy().await.unwrap();
        }
    }
}
