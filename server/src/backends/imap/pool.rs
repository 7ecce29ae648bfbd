//! A bounded per-user pool of authenticated IMAP sessions.
//!
//! At most `[imap] pool_size` sessions per user exist at once (further
//! requests wait, up to the command timeout, then get `Unavailable`). The
//! pool grows lazily: when no session is idle but another request of the
//! same user holds one, it first waits up to [`GROW_AFTER`] for that one to
//! come back — most requests hold a session for a STATUS or two, well under
//! a millisecond, while a new login costs a password hash on the server
//! (milliseconds alone, far more when a burst of devices logs in at once). Idle
//! sessions are reused while younger than `pool_idle_timeout_s` and only for
//! the same credentials: the pool keys them by a keyed blake3 digest of the
//! password (random per-process key, memory only, never logged). A session
//! that hit a timeout or I/O error is dropped, so the next request reconnects.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::{ImapClient, ImapError, Session};
use crate::config::{ImapConfig, Secret};

type Digest = [u8; 32];

struct Idle {
    session: Session,
    since: Instant,
    digest: Digest,
}

struct UserPool {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<Idle>>,
    /// Signalled when a session goes back to `idle`.
    returned: tokio::sync::Notify,
}

/// Longest a request waits for a busy session of its user to come back
/// before logging in another one.
pub const GROW_AFTER: Duration = Duration::from_millis(20);

/// The pool; cheap to clone (shared).
#[derive(Clone)]
pub struct ImapPool {
    cfg: Arc<ImapConfig>,
    key: Digest,
    users: Arc<Mutex<HashMap<String, Arc<UserPool>>>>,
    read_ahead: super::ahead::ReadAhead,
}

impl std::fmt::Debug for ImapPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapPool")
            .field("host", &self.cfg.host)
            .finish_non_exhaustive()
    }
}

/// A session borrowed from the pool; returned to it on drop if still usable.
pub struct PooledSession {
    session: Option<Session>,
    user_pool: Arc<UserPool>,
    digest: Digest,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for PooledSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PooledSession").field(&self.session).finish()
    }
}

impl Deref for PooledSession {
    type Target = Session;
    fn deref(&self) -> &Session {
        // Invariant: `session` is Some until drop.
        self.session
            .as_ref()
            .unwrap_or_else(|| unreachable!("session taken before drop"))
    }
}

impl DerefMut for PooledSession {
    fn deref_mut(&mut self) -> &mut Session {
        self.session
            .as_mut()
            .unwrap_or_else(|| unreachable!("session taken before drop"))
    }
}

impl PooledSession {
    /// Drops the session instead of returning it to the pool.
    pub fn discard(mut self) {
        self.session = None;
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            if session.is_usable() {
                if let Ok(mut idle) = self.user_pool.idle.lock() {
                    idle.push(Idle {
                        session,
                        since: Instant::now(),
                        digest: self.digest,
                    });
                }
                self.user_pool.returned.notify_one();
            }
        }
    }
}

fn random_key() -> Digest {
    let mut key = [0u8; 32];
    if getrandom::fill(&mut key).is_err() {
        // Fall back to std's per-process random SipHash keys.
        use std::hash::{BuildHasher, Hasher};
        for chunk in key.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u8(0);
            chunk.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    key
}

impl ImapPool {
    /// A pool for the given `[imap]` configuration.
    pub fn new(cfg: ImapConfig) -> ImapPool {
        ImapPool {
            cfg: Arc::new(cfg),
            key: random_key(),
            users: Arc::new(Mutex::new(HashMap::new())),
            read_ahead: super::ahead::ReadAhead::default(),
        }
    }

    /// Message bodies read ahead for devices' next Sync windows.
    pub fn read_ahead(&self) -> &super::ahead::ReadAhead {
        &self.read_ahead
    }

    /// The configuration in use.
    pub fn config(&self) -> &ImapConfig {
        &self.cfg
    }

    fn user_pool(&self, user: &str) -> Arc<UserPool> {
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(UserPool {
                    permits: Arc::new(Semaphore::new(self.cfg.pool_size)),
                    idle: Mutex::new(Vec::new()),
                    returned: tokio::sync::Notify::new(),
                })
            })
            .clone()
    }

    /// A session for `user` authenticated with `password` (reused or new).
    /// A wrong password is `Auth` even if a session for another password is idle.
    pub async fn get(&self, user: &str, password: &Secret) -> Result<PooledSession, ImapError> {
        let digest = *blake3::keyed_hash(&self.key, password.expose().as_bytes()).as_bytes();
        let cfg = self.cfg.clone();
        let (u, p) = (user.to_string(), password.clone());
        self.checkout(user, digest, move || async move {
            ImapClient::login(&cfg, &u, &p).await
        })
        .await
    }

    /// A session for `user` through the master user (background push).
    pub async fn get_master(&self, user: &str) -> Result<PooledSession, ImapError> {
        let digest = *blake3::keyed_hash(&self.key, b"\0master").as_bytes();
        let cfg = self.cfg.clone();
        let u = user.to_string();
        self.checkout(user, digest, move || async move {
            ImapClient::login_master(&cfg, &u).await
        })
        .await
    }

    async fn checkout<F, Fut>(
        &self,
        user: &str,
        digest: Digest,
        login: F,
    ) -> Result<PooledSession, ImapError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Session, ImapError>>,
    {
        let pool = self.user_pool(user);
        let wait = Duration::from_millis(self.cfg.timeout_ms);
        let permit = tokio::time::timeout(wait, pool.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                ImapError::Unavailable(format!(
                    "all {} IMAP connections of {user} busy",
                    self.cfg.pool_size
                ))
            })?
            .map_err(|_| ImapError::Unavailable("pool closed".into()))?;
        let max_idle = Duration::from_secs(self.cfg.pool_idle_timeout_s);
        let take_idle = || {
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            idle.retain(|i| now.duration_since(i.since) < max_idle && i.session.is_usable());
            let found = idle
                .iter()
                .position(|i| i.digest == digest)
                .map(|pos| idle.swap_remove(pos).session);
            if found.is_none() {
                // Sessions opened with other credentials (an old password) go,
                // so open connections stay within `pool_size`.
                idle.retain(|i| i.digest == digest);
            }
            found
        };
        let mut reused = take_idle();
        // Others of this user hold sessions (our own permit aside): one is
        // usually back sooner than a login would take.
        let busy = self.cfg.pool_size - pool.permits.available_permits() > 1;
        if reused.is_none() && busy {
            let deadline = Instant::now() + GROW_AFTER;
            while reused.is_none() {
                let back = pool.returned.notified();
                reused = take_idle();
                if reused.is_some() || tokio::time::timeout_at(deadline, back).await.is_err() {
                    break;
                }
                reused = take_idle();
            }
        }
        let session = match reused {
            Some(s) => s,
            None => crate::obs::timed(crate::obs::Category::Imap, login()).await?,
        };
        Ok(PooledSession {
            session: Some(session),
            user_pool: pool,
            digest,
            _permit: permit,
        })
    }

    /// Closes idle sessions older than the idle timeout; returns how many.
    /// Call it periodically (the push hub or a maintenance task).
    pub fn reap(&self) -> usize {
        let max_idle = Duration::from_secs(self.cfg.pool_idle_timeout_s);
        let now = Instant::now();
        let mut users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let mut closed = 0;
        users.retain(|_, pool| {
            let mut idle = pool.idle.lock().unwrap_or_else(|p| p.into_inner());
            let before = idle.len();
            idle.retain(|i| now.duration_since(i.since) < max_idle);
            closed += before - idle.len();
            !idle.is_empty() || pool.permits.available_permits() < self.cfg.pool_size
        });
        closed
    }

    /// Idle sessions currently held for `user`.
    pub fn idle_count(&self, user: &str) -> usize {
        let users = self.users.lock().unwrap_or_else(|p| p.into_inner());
        users
            .get(user)
            .map(|p| p.idle.lock().map(|i| i.len()).unwrap_or(0))
            .unwrap_or(0)
    }
}
