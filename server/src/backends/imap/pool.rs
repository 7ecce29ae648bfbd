//! A bounded pool of authenticated IMAP sessions, per user and overall.
//!
//! Why it is shaped this way: a LOGIN costs the IMAP server a password hash
//! (milliseconds alone, a second or more when a burst of them queues on a
//! busy machine), while a pooled session is back in well under a
//! millisecond after the STATUS of a no-change Sync. So a request never
//! waits for a login it does not need:
//!
//! - a user with no open session logs in in the foreground (nothing else
//!   could serve the request, and a refused password is its answer);
//! - otherwise a request first waits up to `[imap] pool_grow_after_ms` for
//!   one of the user's busy sessions to come back; past it, **one**
//!   background login per user grows the pool, and the request takes
//!   whichever comes first, a returned session or the new one;
//! - the verifier of Basic auth hands its freshly logged-in session to the
//!   pool ([`ImapPool::adopt`]) instead of logging out.
//!
//! Bounds a sysadmin tunes (`docs/CONFIGURATION.md`): at most
//! `pool_size` sessions per user and `max_connections` over all users
//! (past it, the oldest idle session of any user is closed to make room;
//! with none idle the request waits), at most `max_logins_in_flight`
//! logins at once to the server ([`LoginGate`], shared with the verifier
//! and the push watchers:
//! a login storm after a restart queues here instead of swamping the
//! server's password hashing), idle sessions closed after
//! `pool_idle_timeout_s`. Every wait ends at `timeout_ms` with
//! `Unavailable`.
//!
//! Idle sessions are reused only for the same credentials: the pool keys
//! them by a keyed blake3 digest of the password (random per-process key,
//! memory only, never logged). A session that hit a timeout or I/O error,
//! or whose request was cancelled mid-command, is dropped, so the next
//! request reconnects; so is an idle one the server ended meanwhile (a
//! `BYE` or a close waiting on its socket, looked at before it is lent:
//! after an IMAP server restart no request fails on a dead connection).

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};
use tokio::time::Instant;

use super::{ImapClient, ImapError, Session};
use crate::config::{ImapConfig, Secret};

type Digest = [u8; 32];

struct Idle {
    session: Session,
    since: Instant,
    digest: Digest,
    /// The read-ahead lane (a device) that last fetched on it, if any.
    lane: Option<Arc<str>>,
}

/// Which idle session a checkout takes first.
#[derive(Clone, Copy, Default)]
struct Prefer<'a> {
    /// One that has one of these mailboxes selected (a request: its
    /// Sync is then a NOOP on the kept selection), among those no
    /// read-ahead lane uses first.
    mailboxes: &'a [String],
    /// The one this read-ahead lane (a device) used last: that Dovecot
    /// session has the folder's messages at hand (see
    /// `backends::imap::ahead`).
    lane: Option<&'a str>,
}

#[derive(Default)]
struct UserState {
    idle: Vec<Idle>,
    /// Sessions of this user that exist or are being logged in: idle,
    /// lent out, or reserved for a login (`<= pool_size`).
    open: usize,
    /// Background logins under way for this user.
    growing: usize,
    /// `Grow::Now` checkouts of this user waiting for a session: a login
    /// under way serves one of them before another login starts.
    eager: usize,
}

struct UserPool {
    state: Mutex<UserState>,
    /// Signalled when a session goes back to idle, a new one lands, or a
    /// reservation is given up.
    returned: Notify,
}

impl UserPool {
    fn lock(&self) -> MutexGuard<'_, UserState> {
        // Plain counters and sessions: a panic elsewhere leaves them usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Bounds the logins in flight to the IMAP server (`[imap]
/// max_logins_in_flight`). Shared by the pool, the Basic-auth verifier and
/// the push hub's watchers.
#[derive(Clone, Debug)]
pub struct LoginGate {
    permits: Arc<Semaphore>,
    timeout: Duration,
}

impl LoginGate {
    /// A gate letting `max` logins through at once; a login waits for its
    /// turn at most `timeout`.
    pub fn new(max: usize, timeout: Duration) -> LoginGate {
        LoginGate {
            permits: Arc::new(Semaphore::new(max.max(1))),
            timeout,
        }
    }

    /// Runs `login` once a slot is free; `Unavailable` when none frees up
    /// within the timeout. `purpose` labels the login metric.
    pub async fn run<T>(
        &self,
        purpose: &'static str,
        login: impl std::future::Future<Output = Result<T, ImapError>>,
    ) -> Result<T, ImapError> {
        let _slot = tokio::time::timeout(self.timeout, self.permits.acquire())
            .await
            .map_err(|_| {
                ImapError::Unavailable(
                    "too many IMAP logins in flight (max_logins_in_flight)".into(),
                )
            })?
            .map_err(|_| ImapError::Unavailable("login gate closed".into()))?;
        crate::obs::metrics::imap_login(purpose);
        login.await
    }
}

/// Connections open over all users, against `[imap] max_connections`.
struct Global {
    open: Mutex<usize>,
    /// Signalled when a connection closes or goes idle (room under the cap,
    /// or one to close to make room), for requests waiting at the cap.
    freed: Notify,
    /// Requests waiting at the cap (returns signal `freed` only then).
    waiting: std::sync::atomic::AtomicUsize,
}

struct Shared {
    cfg: ImapConfig,
    key: Digest,
    users: Mutex<HashMap<String, Arc<UserPool>>>,
    global: Global,
    gate: LoginGate,
    /// Logins the pool did itself (tests and the load tool read it).
    logins: AtomicU64,
    /// SELECT/EXAMINE commands sent on lent sessions, counted as they come back.
    opens: AtomicU64,
    /// STATUS commands sent on lent sessions, counted as they come back.
    statuses: AtomicU64,
    /// Sessions lent out.
    lends: AtomicU64,
    /// Folder listings whose upper part another connection made.
    split_listings: AtomicU64,
    /// Test hook ([`ImapPool::hold_listings_for_helper`]): off unless a
    /// test sets it.
    hold_listings: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn users(&self) -> MutexGuard<'_, HashMap<String, Arc<UserPool>>> {
        self.users.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn global_open(&self) -> MutexGuard<'_, usize> {
        self.global.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes one unit of the global budget; false at the cap.
    fn reserve_global(&self) -> bool {
        let mut open = self.global_open();
        if *open >= self.cfg.max_connections {
            return false;
        }
        *open += 1;
        crate::obs::metrics::set_imap_pooled(*open);
        true
    }

    /// Gives back `n` units of the global budget.
    fn release_global(&self, n: usize) {
        if n == 0 {
            return;
        }
        let mut open = self.global_open();
        *open = open.saturating_sub(n);
        crate::obs::metrics::set_imap_pooled(*open);
        drop(open);
        self.global.freed.notify_waiters();
    }

    /// Closes the oldest idle session of any user; false when none is idle.
    fn evict_oldest_idle(&self) -> bool {
        let users = self.users();
        let mut oldest: Option<(Instant, &Arc<UserPool>)> = None;
        for pool in users.values() {
            let st = pool.lock();
            if let Some(since) = st.idle.iter().map(|i| i.since).min() {
                if oldest.is_none_or(|(o, _)| since < o) {
                    oldest = Some((since, pool));
                }
            }
        }
        let Some((since, pool)) = oldest else {
            return false;
        };
        let mut st = pool.lock();
        let Some(pos) = st.idle.iter().position(|i| i.since == since) else {
            return false;
        };
        let evicted = st.idle.swap_remove(pos);
        st.open -= 1;
        drop(st);
        drop(users);
        drop(evicted);
        self.release_global(1);
        true
    }
}

/// Counts a request waiting at the global cap while it lives.
struct AtCap<'a>(&'a std::sync::atomic::AtomicUsize);

impl<'a> AtCap<'a> {
    fn new(waiting: &'a std::sync::atomic::AtomicUsize) -> AtCap<'a> {
        waiting.fetch_add(1, Ordering::SeqCst);
        AtCap(waiting)
    }
}

impl Drop for AtCap<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Longest a request waits for a busy session of its user to come back
/// before a login grows the pool, when `[imap] pool_grow_after_ms` is not set.
pub const GROW_AFTER: Duration = Duration::from_millis(20);

/// The pool; cheap to clone (shared).
#[derive(Clone)]
pub struct ImapPool {
    shared: Arc<Shared>,
    read_ahead: super::ahead::ReadAhead,
}

impl std::fmt::Debug for ImapPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImapPool")
            .field("host", &self.shared.cfg.host)
            .finish_non_exhaustive()
    }
}

/// A session borrowed from the pool; returned to it on drop if still usable.
pub struct PooledSession {
    session: Option<Session>,
    user_pool: Arc<UserPool>,
    shared: Arc<Shared>,
    digest: Digest,
    /// The session's SELECT/EXAMINE count when lent (see [`ImapPool::mailbox_opens`]).
    opens_at: u64,
    /// The session's STATUS count when lent (see [`ImapPool::statuses`]).
    statuses_at: u64,
    /// The read-ahead lane it goes back to the pool marked with.
    lane: Option<Arc<str>>,
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
    /// Counts a listing this session made the upper part of (see
    /// [`ImapPool::split_listings`]).
    pub fn count_split_listing(&self) {
        self.shared.split_listings.fetch_add(1, Ordering::Relaxed);
    }

    /// Whether a split listing on this session waits for its helper
    /// connection to take the upper part ([`ImapPool::hold_listings_for_helper`]).
    pub fn holds_listing_for_helper(&self) -> bool {
        self.shared.hold_listings.load(Ordering::Relaxed)
    }

    /// The `[imap]` configuration of the pool it came from.
    pub fn config(&self) -> &ImapConfig {
        &self.shared.cfg
    }

    /// Drops the session instead of returning it to the pool.
    pub fn discard(mut self) {
        self.session = None;
    }
}

impl PooledSession {
    /// Closes the user's idle sessions that have `raw` selected (the
    /// server said it is gone: each of them is stale).
    fn close_idle_selecting(&self, raw: &str) {
        let closed: Vec<Idle> = {
            let mut st = self.user_pool.lock();
            let (stale, kept): (Vec<Idle>, Vec<Idle>) = std::mem::take(&mut st.idle)
                .into_iter()
                .partition(|it| it.session.selected_mailbox() == Some(raw));
            st.idle = kept;
            st.open -= stale.len();
            stale
        };
        if closed.is_empty() {
            return;
        }
        tracing::debug!(
            target: "IMAP.COMMAND",
            mailbox = raw,
            closed = closed.len(),
            "mailbox gone: idle sessions that had it selected closed"
        );
        let n = closed.len();
        drop(closed);
        self.shared.release_global(n);
        self.user_pool.returned.notify_one();
    }

    /// Marks it as the read-ahead lane `lane`'s (a device): back in the
    /// pool, that lane's next read-ahead takes it first, and requests
    /// take it only when no other is idle.
    pub fn mark_lane(&mut self, lane: &str) {
        if self.lane.as_deref() != Some(lane) {
            self.lane = Some(Arc::from(lane));
        }
    }

    /// The read-ahead lane it is marked with, if any.
    pub fn lane(&self) -> Option<&str> {
        self.lane.as_deref()
    }
}

impl Drop for PooledSession {
    fn drop(&mut self) {
        let mut gone = None;
        if let Some(s) = &mut self.session {
            let opens = s.mailbox_opens().saturating_sub(self.opens_at);
            self.shared.opens.fetch_add(opens, Ordering::Relaxed);
            let statuses = s.statuses().saturating_sub(self.statuses_at);
            self.shared.statuses.fetch_add(statuses, Ordering::Relaxed);
            gone = s.take_gone();
        }
        if let Some(raw) = gone {
            // Another client deleted it: every idle session of the user
            // that has it selected would fail its next command once.
            self.close_idle_selecting(&raw);
        }
        match self.session.take() {
            Some(mut session) if session.is_usable() => {
                session.unsynced();
                self.user_pool.lock().idle.push(Idle {
                    session,
                    since: Instant::now(),
                    digest: self.digest,
                    lane: self.lane.take(),
                });
                self.user_pool.returned.notify_one();
                if self.shared.global.waiting.load(Ordering::SeqCst) > 0 {
                    // Someone at the cap can close this one to make room.
                    self.shared.global.freed.notify_waiters();
                }
            }
            closed => {
                drop(closed);
                self.user_pool.lock().open -= 1;
                self.shared.release_global(1);
                // A waiter may now open one in its place.
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

/// When a checkout that finds none of the user's sessions idle logs in
/// another one (up to `pool_size`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Grow {
    /// After `pool_grow_after_ms` of waiting for one to come back: a
    /// request's default (steady traffic reuses, never logs in).
    AfterWait,
    /// At once, even while another of the user's sessions is logging in:
    /// work that runs beside the user's own request (read-aheads, which
    /// come in twos and would otherwise log in one after the other) —
    /// unless the logins under way are as many as such checkouts waiting
    /// (connections opened ahead for them, `Spare`): then it waits for one.
    Now,
    /// As `Now`, for a connection opened ahead of work that may follow
    /// (an initial sync's read-aheads, opened at the device's first
    /// FolderSync): its login counts for the `Now` checkouts that come
    /// while it is under way.
    Spare,
}

/// A `Grow::Now` checkout counted in its user's `eager` while it lasts.
struct Eager(Arc<UserPool>);

impl Eager {
    fn new(pool: Arc<UserPool>) -> Eager {
        pool.lock().eager += 1;
        Eager(pool)
    }
}

impl Drop for Eager {
    fn drop(&mut self) {
        let mut st = self.0.lock();
        st.eager = st.eager.saturating_sub(1);
    }
}

/// What a checkout decided under the user's lock.
#[allow(
    clippy::large_enum_variant,
    reason = "made and matched at once, never stored"
)]
enum Step {
    /// An idle session (and the read-ahead lane it is marked with).
    Reuse(Session, Option<Arc<str>>),
    /// A slot is reserved: log in now and hand the session to the caller.
    LoginHere,
    /// A slot is reserved: log in in the background, into the idle list.
    LoginBehind,
    /// The global cap is reached: make room.
    Evict,
    Wait,
}

impl ImapPool {
    /// A pool for the given `[imap]` configuration.
    pub fn new(cfg: ImapConfig) -> ImapPool {
        let gate = LoginGate::new(
            cfg.max_logins_in_flight,
            Duration::from_millis(cfg.timeout_ms),
        );
        ImapPool {
            shared: Arc::new(Shared {
                cfg,
                key: random_key(),
                users: Mutex::new(HashMap::new()),
                global: Global {
                    open: Mutex::new(0),
                    freed: Notify::new(),
                    waiting: std::sync::atomic::AtomicUsize::new(0),
                },
                gate,
                logins: AtomicU64::new(0),
                opens: AtomicU64::new(0),
                statuses: AtomicU64::new(0),
                lends: AtomicU64::new(0),
                split_listings: AtomicU64::new(0),
                hold_listings: std::sync::atomic::AtomicBool::new(false),
            }),
            read_ahead: super::ahead::ReadAhead::default(),
        }
    }

    /// Messages read ahead for devices' next Sync windows.
    pub fn read_ahead(&self) -> &super::ahead::ReadAhead {
        &self.read_ahead
    }

    /// The configuration in use.
    pub fn config(&self) -> &ImapConfig {
        &self.shared.cfg
    }

    /// The gate every login to this IMAP server goes through.
    pub fn login_gate(&self) -> &LoginGate {
        &self.shared.gate
    }

    /// Logins the pool has done since it was created (not the verifier's).
    pub fn logins(&self) -> u64 {
        self.shared.logins.load(Ordering::Relaxed)
    }

    /// SELECT and EXAMINE commands its sessions sent while lent out,
    /// counted when each comes back (tests read it: a Sync window on a
    /// connection that has its folder selected sends none).
    pub fn mailbox_opens(&self) -> u64 {
        self.shared.opens.load(Ordering::Relaxed)
    }

    /// STATUS commands its sessions sent while lent out, counted when each
    /// comes back (tests read it: a caught-up device's no-change Sync on
    /// the connection that keeps its folder selected sends none).
    pub fn statuses(&self) -> u64 {
        self.shared.statuses.load(Ordering::Relaxed)
    }

    /// Sessions lent out since the pool was created (tests read it: a
    /// no-change Sync that the user's watcher answers borrows none).
    pub fn lends(&self) -> u64 {
        self.shared.lends.load(Ordering::Relaxed)
    }

    /// Full folder listings made on two connections at once (an initial
    /// sync's, `commands::sync::list_split`); tests read it.
    pub fn split_listings(&self) -> u64 {
        self.shared.split_listings.load(Ordering::Relaxed)
    }

    /// Test hook, inert unless called: from now on a split folder listing
    /// (`commands::sync::list_split`) lists the request's own part only
    /// once the helper connection has taken the upper part (or failed), so
    /// every big initial listing is split, whatever the timing. Production
    /// never calls it: there the request lists at once and the helper takes
    /// the upper part only if it is ready in time.
    pub fn hold_listings_for_helper(&self) {
        self.shared.hold_listings.store(true, Ordering::Relaxed);
    }

    /// Connections open over all users (idle, lent out, logging in).
    pub fn open_total(&self) -> usize {
        *self.shared.global_open()
    }

    fn digest(&self, password: &Secret) -> Digest {
        *blake3::keyed_hash(&self.shared.key, password.expose().as_bytes()).as_bytes()
    }

    fn master_digest(&self) -> Digest {
        *blake3::keyed_hash(&self.shared.key, b"\0master").as_bytes()
    }

    fn user_pool(&self, user: &str) -> Arc<UserPool> {
        let mut users = self.shared.users();
        users
            .entry(user.to_string())
            .or_insert_with(|| {
                Arc::new(UserPool {
                    state: Mutex::new(UserState::default()),
                    returned: Notify::new(),
                })
            })
            .clone()
    }

    /// A session for `user` authenticated with `password` (reused or new).
    /// A wrong password is `Auth` even if a session for another password is idle.
    pub async fn get(&self, user: &str, password: &Secret) -> Result<PooledSession, ImapError> {
        self.get_with(user, password, Grow::AfterWait, Prefer::default())
            .await
    }

    /// [`ImapPool::get`], taking among the idle sessions, when one has, the
    /// most recently returned that has one of `mailboxes` selected: a Sync
    /// of that folder is then a NOOP on the kept selection instead of a
    /// STATUS or a SELECT (see `commands::sync`).
    pub async fn get_selecting(
        &self,
        user: &str,
        password: &Secret,
        mailboxes: &[String],
    ) -> Result<PooledSession, ImapError> {
        let prefer = Prefer {
            mailboxes,
            lane: None,
        };
        self.get_with(user, password, Grow::AfterWait, prefer).await
    }

    /// [`ImapPool::get`] for work that wants a connection of its own (a
    /// read-ahead beside the device's Sync): with none of the user's
    /// sessions idle it grows the pool at once instead of first waiting
    /// `pool_grow_after_ms` for one to come back — within the same bounds
    /// (`pool_size`, `max_connections`, the login gate).
    pub async fn get_eager(
        &self,
        user: &str,
        password: &Secret,
    ) -> Result<PooledSession, ImapError> {
        self.get_with(user, password, Grow::Now, Prefer::default())
            .await
    }

    /// [`ImapPool::get_eager`] for the read-ahead lane `lane` (a device):
    /// the idle session that lane used last, if any (see
    /// `backends::imap::ahead`).
    pub async fn get_lane(
        &self,
        user: &str,
        password: &Secret,
        lane: &str,
    ) -> Result<PooledSession, ImapError> {
        let prefer = Prefer {
            mailboxes: &[],
            lane: Some(lane),
        };
        self.get_with(user, password, Grow::Now, prefer).await
    }

    /// [`ImapPool::get_eager`] for a connection opened ahead of work that
    /// may follow: a `get_eager` that comes while its login is under way
    /// waits for that login instead of starting one more.
    pub async fn get_spare(
        &self,
        user: &str,
        password: &Secret,
    ) -> Result<PooledSession, ImapError> {
        self.get_with(user, password, Grow::Spare, Prefer::default())
            .await
    }

    async fn get_with(
        &self,
        user: &str,
        password: &Secret,
        grow: Grow,
        prefer: Prefer<'_>,
    ) -> Result<PooledSession, ImapError> {
        let digest = self.digest(password);
        let (shared, u, p) = (self.shared.clone(), user.to_string(), password.clone());
        // A login this checkout starts (here or behind) is made for the
        // device of the request asking, if any (`crate::origin`). The
        // session may later serve another device of the user: the address
        // only matters at login.
        let client = crate::origin::current();
        self.checkout(user, digest, (grow, prefer), move || {
            let (shared, u, p) = (shared.clone(), u.clone(), p.clone());
            async move { ImapClient::login_for(&shared.cfg, &u, &p, client).await }
        })
        .await
    }

    /// A session for `user` through the master user (background push).
    pub async fn get_master(&self, user: &str) -> Result<PooledSession, ImapError> {
        self.get_master_with(user, Grow::AfterWait, Prefer::default())
            .await
    }

    /// [`ImapPool::get_master`] preferring a session that has one of
    /// `mailboxes` selected, as [`ImapPool::get_selecting`].
    pub async fn get_master_selecting(
        &self,
        user: &str,
        mailboxes: &[String],
    ) -> Result<PooledSession, ImapError> {
        let prefer = Prefer {
            mailboxes,
            lane: None,
        };
        self.get_master_with(user, Grow::AfterWait, prefer).await
    }

    /// [`ImapPool::get_master`] growing at once, as [`ImapPool::get_eager`].
    pub async fn get_master_eager(&self, user: &str) -> Result<PooledSession, ImapError> {
        self.get_master_with(user, Grow::Now, Prefer::default())
            .await
    }

    /// [`ImapPool::get_master`] as [`ImapPool::get_lane`].
    pub async fn get_master_lane(
        &self,
        user: &str,
        lane: &str,
    ) -> Result<PooledSession, ImapError> {
        let prefer = Prefer {
            mailboxes: &[],
            lane: Some(lane),
        };
        self.get_master_with(user, Grow::Now, prefer).await
    }

    /// [`ImapPool::get_master`] as [`ImapPool::get_spare`].
    pub async fn get_master_spare(&self, user: &str) -> Result<PooledSession, ImapError> {
        self.get_master_with(user, Grow::Spare, Prefer::default())
            .await
    }

    async fn get_master_with(
        &self,
        user: &str,
        grow: Grow,
        prefer: Prefer<'_>,
    ) -> Result<PooledSession, ImapError> {
        let digest = self.master_digest();
        let (shared, u) = (self.shared.clone(), user.to_string());
        self.checkout(user, digest, (grow, prefer), move || {
            let (shared, u) = (shared.clone(), u.clone());
            async move { ImapClient::login_master(&shared.cfg, &u).await }
        })
        .await
    }

    /// Takes `session`, just logged in as `user` with `password` (the
    /// Basic-auth verifier's), into the pool when the user's requests would
    /// use it and there is room; otherwise hands it back (`Some`: log it out).
    pub fn adopt(&self, user: &str, password: &Secret, session: Session) -> Option<Session> {
        if self.shared.cfg.master_for_requests || !session.is_usable() {
            return Some(session);
        }
        let digest = self.digest(password);
        let pool = self.user_pool(user);
        let mut st = pool.lock();
        if st.open >= self.shared.cfg.pool_size || !self.shared.reserve_global() {
            return Some(session);
        }
        st.open += 1;
        st.idle.push(Idle {
            session,
            since: Instant::now(),
            digest,
            lane: None,
        });
        drop(st);
        pool.returned.notify_one();
        None
    }

    async fn checkout<F, Fut>(
        &self,
        user: &str,
        digest: Digest,
        (grow, prefer): (Grow, Prefer<'_>),
        login: F,
    ) -> Result<PooledSession, ImapError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<Session, ImapError>> + Send + 'static,
    {
        let cfg = &self.shared.cfg;
        let pool = self.user_pool(user);
        let start = Instant::now();
        let deadline = start + Duration::from_millis(cfg.timeout_ms);
        let grow_at = match grow {
            Grow::AfterWait => start + Duration::from_millis(cfg.pool_grow_after_ms),
            Grow::Now | Grow::Spare => start,
        };
        // Counted among the user's eager checkouts while it waits.
        let _eager = (grow == Grow::Now).then(|| Eager::new(pool.clone()));
        let max_idle = Duration::from_secs(cfg.pool_idle_timeout_s);
        // This checkout has a login of its own under way (`Grow::Now` then
        // waits for it like everybody else instead of starting another).
        let mut started = false;
        loop {
            // Registered before looking, so a return in between is not missed.
            let mut returned = Box::pin(pool.returned.notified());
            returned.as_mut().enable();
            let now = Instant::now();
            let (step, closed) = {
                let mut st = pool.lock();
                // Expired, broken, or opened with other credentials (an
                // old password): closed, so they leave room.
                let before = st.idle.len();
                let mut closed = Vec::new();
                let mut i = 0;
                while i < st.idle.len() {
                    let it = &st.idle[i];
                    let stale = now.duration_since(it.since) >= max_idle || !it.session.is_usable();
                    let other = it.digest != digest;
                    if stale || other {
                        closed.push(st.idle.swap_remove(i));
                    } else {
                        i += 1;
                    }
                }
                st.open -= before - st.idle.len();
                // A read-ahead lane: the one it used last. Otherwise the
                // most recently returned one that has one of the preferred
                // mailboxes selected, else the most recently returned one
                // (its connection is warm), leaving those a lane used to
                // their lane while there are others. One the server ended
                // meanwhile (a restart) is closed, and the next one looked
                // at.
                let taken = loop {
                    let selects = |it: &Idle| {
                        it.session
                            .selected_mailbox()
                            .is_some_and(|m| prefer.mailboxes.iter().any(|p| p == m))
                    };
                    let preferred = match prefer.lane {
                        Some(lane) => st
                            .idle
                            .iter()
                            .rposition(|it| it.lane.as_deref() == Some(lane)),
                        None => st
                            .idle
                            .iter()
                            .rposition(|it| it.lane.is_none() && selects(it))
                            .or_else(|| st.idle.iter().rposition(selects))
                            .or_else(|| st.idle.iter().rposition(|it| it.lane.is_none())),
                    };
                    let candidate = match preferred {
                        Some(i) => Some(st.idle.remove(i)),
                        None => st.idle.pop(),
                    };
                    match candidate {
                        Some(mut it) => {
                            if !it.session.ended_by_server() {
                                break Some(it);
                            }
                            st.open -= 1;
                            closed.push(it);
                        }
                        None => break None,
                    }
                };
                let step = if let Some(it) = taken {
                    Step::Reuse(it.session, it.lane)
                } else if st.open >= cfg.pool_size {
                    Step::Wait
                } else if st.open == 0
                    || ((st.growing == 0
                        || (grow == Grow::Spare && !started)
                        || (grow == Grow::Now && !started && st.growing < st.eager))
                        && now >= grow_at)
                {
                    if self.shared.reserve_global() {
                        st.open += 1;
                        if st.open == 1 {
                            Step::LoginHere
                        } else {
                            st.growing += 1;
                            Step::LoginBehind
                        }
                    } else {
                        Step::Evict
                    }
                } else {
                    Step::Wait
                };
                (step, closed.len())
            };
            self.shared.release_global(closed);
            match step {
                Step::Reuse(session, lane) => {
                    return Ok(self.lend(pool.clone(), session, digest, lane))
                }
                Step::LoginHere => {
                    // Not waiting: a notification goes to someone who is.
                    drop(returned);
                    // Boxed: a login's futures are kilobytes, and every
                    // checkout (mostly a reuse) would otherwise carry them.
                    let here = self.login_here(pool.clone(), digest, login());
                    return Box::pin(here).await;
                }
                Step::LoginBehind => {
                    self.login_behind(pool.clone(), user, digest, login());
                    started = true;
                    continue;
                }
                Step::Evict => {
                    let at_cap = AtCap::new(&self.shared.global.waiting);
                    let mut freed = Box::pin(self.shared.global.freed.notified());
                    freed.as_mut().enable();
                    let evicted = self.shared.evict_oldest_idle();
                    if !evicted {
                        tokio::select! {
                            _ = freed => {}
                            _ = returned => {}
                            _ = tokio::time::sleep_until(deadline) => {}
                        }
                    }
                    drop(at_cap);
                    if evicted || Instant::now() < deadline {
                        continue;
                    }
                    return Err(self.busy(user));
                }
                Step::Wait => {}
            }
            let wake = if now < grow_at {
                grow_at.min(deadline)
            } else if grow == Grow::Now && !started {
                // Waiting for a login under way: if another checkout takes
                // it, this one logs in its own after a short while.
                (now + Duration::from_millis(cfg.pool_grow_after_ms)).min(deadline)
            } else {
                deadline
            };
            tokio::select! {
                _ = returned => {}
                _ = tokio::time::sleep_until(wake) => {
                    if wake >= deadline {
                        return Err(self.busy(user));
                    }
                }
            }
        }
    }

    fn busy(&self, user: &str) -> ImapError {
        let cfg = &self.shared.cfg;
        ImapError::Unavailable(format!(
            "no IMAP connection of {user} free within {} ms ({} per user, {} in all)",
            cfg.timeout_ms, cfg.pool_size, cfg.max_connections
        ))
    }

    /// Logs in for the caller, on a slot it reserved.
    async fn login_here(
        &self,
        pool: Arc<UserPool>,
        digest: Digest,
        login: impl std::future::Future<Output = Result<Session, ImapError>>,
    ) -> Result<PooledSession, ImapError> {
        self.shared.logins.fetch_add(1, Ordering::Relaxed);
        let login = self.shared.gate.run("pool", login);
        match crate::obs::timed(crate::obs::Category::Imap, login).await {
            Ok(session) => Ok(self.lend(pool, session, digest, None)),
            Err(e) => {
                pool.lock().open -= 1;
                self.shared.release_global(1);
                pool.returned.notify_one();
                Err(e)
            }
        }
    }

    /// Logs in in the background, on a slot reserved for it; the session
    /// lands in the idle list for whichever request of the user wants one.
    fn login_behind(
        &self,
        pool: Arc<UserPool>,
        user: &str,
        digest: Digest,
        login: impl std::future::Future<Output = Result<Session, ImapError>> + Send + 'static,
    ) {
        self.shared.logins.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let user = user.to_string();
        tokio::spawn(async move {
            let res = shared.gate.run("pool", login).await;
            let mut st = pool.lock();
            st.growing -= 1;
            match res {
                Ok(session) => st.idle.push(Idle {
                    session,
                    since: Instant::now(),
                    digest,
                    lane: None,
                }),
                Err(e) => {
                    st.open -= 1;
                    drop(st);
                    shared.release_global(1);
                    tracing::debug!(target: "BACKEND", user = %user, error = %e, "IMAP pool did not grow");
                }
            }
            pool.returned.notify_one();
        });
    }

    fn lend(
        &self,
        user_pool: Arc<UserPool>,
        session: Session,
        digest: Digest,
        lane: Option<Arc<str>>,
    ) -> PooledSession {
        self.shared.lends.fetch_add(1, Ordering::Relaxed);
        PooledSession {
            opens_at: session.mailbox_opens(),
            statuses_at: session.statuses(),
            session: Some(session),
            user_pool,
            shared: self.shared.clone(),
            digest,
            lane,
        }
    }

    /// Closes idle sessions older than the idle timeout; returns how many.
    /// Call it periodically (the push hub or a maintenance task).
    pub fn reap(&self) -> usize {
        let max_idle = Duration::from_secs(self.shared.cfg.pool_idle_timeout_s);
        let now = Instant::now();
        let mut closed = Vec::new();
        {
            let mut users = self.shared.users();
            users.retain(|_, pool| {
                let mut st = pool.lock();
                let mut i = 0;
                while i < st.idle.len() {
                    if now.duration_since(st.idle[i].since) >= max_idle {
                        closed.push(st.idle.swap_remove(i));
                        st.open -= 1;
                    } else {
                        i += 1;
                    }
                }
                // Kept while in use: a request holding this pool (between
                // looking it up and locking it) must find it in the map.
                st.open > 0 || Arc::strong_count(pool) > 1
            });
        }
        let n = closed.len();
        drop(closed);
        self.shared.release_global(n);
        n
    }

    /// Idle sessions currently held for `user`.
    pub fn idle_count(&self, user: &str) -> usize {
        let pool = self.shared.users().get(user).cloned();
        pool.map(|p| p.lock().idle.len()).unwrap_or(0)
    }

    /// Sessions open for `user` (idle, lent out, logging in).
    pub fn open_count(&self, user: &str) -> usize {
        let pool = self.shared.users().get(user).cloned();
        pool.map(|p| p.lock().open).unwrap_or(0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[tokio::test]
    async fn the_login_gate_lets_at_most_max_through_and_times_out_the_rest() {
        let gate = LoginGate::new(2, Duration::from_secs(5));
        let now = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..6)
            .map(|_| {
                let (gate, now, most) = (gate.clone(), now.clone(), most.clone());
                tokio::spawn(async move {
                    gate.run("test", async {
                        let n = now.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(n, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        now.fetch_sub(1, Ordering::SeqCst);
                        Ok::<_, ImapError>(())
                    })
                    .await
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 2);
        // A login that cannot get a slot in time is `Unavailable`.
        let gate = LoginGate::new(1, Duration::from_millis(30));
        let held = gate.clone();
        let blocker = tokio::spawn(async move {
            held.run("test", async {
                tokio::time::sleep(Duration::from_millis(500)).await;
                Ok::<_, ImapError>(())
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(5)).await;
        let err = gate
            .run("test", async { Ok::<_, ImapError>(()) })
            .await
            .unwrap_err();
        assert!(matches!(err, ImapError::Unavailable(_)), "{err:?}");
        blocker.await.unwrap().unwrap();
    }
}
