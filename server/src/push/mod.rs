//! The push hub: where parked Pings wait for a change in the backends.
//!
//! One watcher per user (`imap::run`, a tokio task), shared by all of that
//! user's devices and parked Pings. A watcher keeps, for every watched
//! folder, the latest [`Mark`] it saw (IMAP STATUS figures, or a DAV
//! sync-token) and bumps a generation counter whenever one changes. A parked
//! Ping holds a [`Subscription`]: the marks *it* started from (taken before
//! its own observation, so a change in between is never missed, at worst
//! re-checked for nothing) and a receiver of that counter. It wakes when a
//! watcher's mark differs from its own, when its heartbeat ends, or when
//! another request of the same device supersedes it.
//!
//! Parked state is a few hundred bytes plus the HTTP connection: no thread,
//! no IMAP connection of its own. Watchers close `linger` after their last
//! subscriber left, reconnect with doubling backoff after an outage, and
//! keep their marks across reconnections, so a change made while the IMAP
//! server was down shows up as soon as STATUS works again.
//!
//! With `[push] sync_watch_s`, a Sync keeps its mail folder watched for
//! that long ([`PushHub::keep_watching`]), and a Sync without commands asks
//! the watcher first ([`PushHub::quiet_status`]): while the watcher waits
//! in IDLE or NOTIFY with nothing reported since its last round, and opush
//! itself changed none of the user's mailboxes since that round began
//! ([`changed_by_opush`]), its figures stand for a STATUS, and a folder
//! the device already has as it is needs no IMAP round trip. What that
//! trades: a change another client makes reaches such a Sync only once the
//! server told the watcher (Dovecot batches its IDLE and NOTIFY news for
//! about half a second); a Ping or a later Sync sees it then.
//!
//! This module also keeps the per-device bookkeeping of Ping: the one parked
//! Ping of a device (a newer request ends it), the bound on parked Pings
//! (`[push] max_parked`, separate from `[server] max_in_flight`) and the
//! answer-rate damping of devices that Ping in a tight loop. It decides
//! nothing about EAS (that is `engine` and `commands::ping`).

pub mod dav;
pub mod imap;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::backends::imap::FolderStatus;
use crate::config::{ImapConfig, PushConfig, Secret};

/// The push settings, from `[push]` and `[imap] poll_interval_s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushSettings {
    /// Most Pings parked at once.
    pub max_parked: usize,
    /// How long a watcher outlives its last subscriber.
    pub linger: Duration,
    /// STATUS polling period (several folders, or no IDLE).
    pub poll_interval: Duration,
    /// First pause before reconnecting.
    pub reconnect_min: Duration,
    /// Longest pause before reconnecting.
    pub reconnect_max: Duration,
    /// IDLE when a single mail folder is watched.
    pub use_idle: bool,
    /// Longest single IDLE (re-issued after it, RFC 2177 asks < 29 min).
    pub idle_max: Duration,
    /// Pings of one device per minute before damping (0: off).
    pub max_pings_per_minute: u32,
    /// NOTIFY (RFC 5465) for several folders where the server has it
    /// (false: STATUS polling).
    pub use_notify: bool,
    /// Longest time between two LISTs of a watcher that waits in IDLE or
    /// NOTIFY (hierarchy changes; a polling watcher LISTs every round).
    pub hierarchy_check: Duration,
    /// A single-folder watcher waits with NOTIFY (with folder events)
    /// instead of IDLE where the server has NOTIFY, so a folder created
    /// while a Ping is parked ends it at once (Dovecot cannot hibernate a
    /// NOTIFY connection).
    pub notify_hierarchy: bool,
    /// How long a Sync keeps its folder watched (`[push] sync_watch_s`;
    /// zero: Syncs neither watch nor use the watchers).
    pub sync_watch: Duration,
}

impl Default for PushSettings {
    fn default() -> Self {
        PushSettings::from_config(&PushConfig::default(), &ImapConfig::default())
    }
}

impl PushSettings {
    /// The settings of a configuration.
    pub fn from_config(push: &PushConfig, imap: &ImapConfig) -> Self {
        PushSettings {
            max_parked: push.max_parked.max(1),
            linger: Duration::from_secs(push.linger_s),
            poll_interval: Duration::from_secs(imap.poll_interval_s.max(1)),
            reconnect_min: Duration::from_secs(1),
            reconnect_max: Duration::from_secs(push.reconnect_max_s.max(1)),
            use_idle: push.use_idle,
            idle_max: Duration::from_secs(25 * 60),
            max_pings_per_minute: push.max_pings_per_minute,
            use_notify: push.use_notify,
            hierarchy_check: Duration::from_secs(push.hierarchy_check_s.max(1)),
            notify_hierarchy: push.notify_hierarchy,
            sync_watch: Duration::from_secs(push.sync_watch_s),
        }
    }
}

/// Mailbox changes opush itself carried out, counted per user (hashed into
/// a fixed table: users sharing a slot only cost each other answers from
/// their watchers). A watcher's marks stand for a STATUS only while the
/// user's count is what it was when the watcher's round began: a device
/// that moved a message and then Syncs the folder it moved it to finds it
/// there, even before the IMAP server told the watcher.
static OPUSH_CHANGES: [AtomicU64; 1024] = [const { AtomicU64::new(0) }; 1024];

fn change_slot(user: &str) -> usize {
    // FNV-1a over the name, case folded.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in user.bytes() {
        h ^= u64::from(b.to_ascii_lowercase());
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    (h % OPUSH_CHANGES.len() as u64) as usize
}

/// Counts a mailbox change opush carried out for `user` (the IMAP session
/// calls it after each command that changes a mailbox, whatever its
/// outcome).
pub fn changed_by_opush(user: &str) {
    OPUSH_CHANGES[change_slot(user)].fetch_add(1, Ordering::SeqCst);
}

/// The count of [`changed_by_opush`] for `user` now.
pub(crate) fn changes_by_opush(user: &str) -> u64 {
    OPUSH_CHANGES[change_slot(user)].load(Ordering::SeqCst)
}

/// With `[push] sync_watch_s`, the longest a watcher waits between two
/// rounds: its marks are read again at least this often, news or not.
pub const SYNC_WATCH_REFRESH: Duration = Duration::from_secs(60);

/// The oldest round whose marks [`PushHub::quiet_status`] takes: a
/// watcher whose server stopped telling it anything (a connection dead
/// without a word) stands for IMAP no longer than this.
const SYNC_WATCH_TRUST: Duration = Duration::from_secs(90);

/// What is watched in one folder.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum WatchKey {
    /// An IMAP mailbox by raw (modified UTF-7) name.
    Mail(String),
    /// A CalDAV/CardDAV collection by href (see [`dav`]).
    Dav(String),
    /// The user's mail folder list, as devices see it (see
    /// [`hierarchy_mark`]): a folder created, deleted or renamed on the
    /// IMAP side changes it.
    Hierarchy,
}

/// How a watcher waits for changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatcherKind {
    /// Not connected yet (or between connections).
    #[default]
    Starting,
    /// IMAP IDLE on the one watched mailbox.
    Idle,
    /// IMAP NOTIFY (RFC 5465) on every watched mailbox.
    Notify,
    /// STATUS polling every `[imap] poll_interval_s`.
    Poll,
}

/// The mark of a mail folder list: a digest of the folders devices see
/// (`commands::folder_sync::backend_folders`), in a stable order.
pub fn hierarchy_mark(list: &[crate::backends::imap::Folder]) -> Mark {
    let mut folders = crate::commands::folder_sync::backend_folders(list);
    folders.sort_by(|a, b| a.id.0.cmp(&b.id.0));
    let text = format!("{folders:?}");
    Mark::Hierarchy(blake3::hash(text.as_bytes()).to_hex().to_string())
}

/// The last state seen of a watched folder; any difference is a change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mark {
    /// IMAP STATUS figures (MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN, HIGHESTMODSEQ).
    Mail(FolderStatus),
    /// A DAV sync-token (or CTag).
    Token(String),
    /// A digest of the folder list ([`hierarchy_mark`]).
    Hierarchy(String),
    /// The folder no longer exists.
    Gone,
}

/// How a watcher logs in to IMAP: credentials live in memory only.
#[derive(Clone, PartialEq, Eq)]
pub enum WatchLogin {
    /// Through `[imap] master_user`.
    Master,
    /// With the user's own password (from the request that parked).
    Password(Secret),
}

impl std::fmt::Debug for WatchLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WatchLogin::Master => f.write_str("Master"),
            WatchLogin::Password(_) => f.write_str("Password(*)"),
        }
    }
}

/// Why a parked Ping stopped waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// A watched folder's mark differs from the subscription's.
    Changed,
    /// The deadline passed.
    Timeout,
    /// Another request of the same device arrived.
    Superseded,
}

/// Why a Ping may not park.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParkError {
    /// `[push] max_parked` Pings are already parked.
    #[error("{0} Pings already parked")]
    Full(usize),
}

#[derive(Debug, Default)]
struct Folder {
    refs: usize,
    mark: Option<Mark>,
}

#[derive(Debug, Default)]
struct WatchState {
    folders: HashMap<WatchKey, Folder>,
    subscribers: usize,
    running: bool,
    connected: bool,
    logins: u64,
    kind: WatcherKind,
    login: Option<WatchLogin>,
    /// While the watcher waits in IDLE or NOTIFY with nothing reported
    /// since its last round: [`changes_by_opush`] as that round began, and
    /// when it began.
    settled: Option<(u64, Instant)>,
}

/// One user's watcher: shared state between its task and the subscriptions.
#[derive(Debug)]
pub struct UserWatch {
    user: String,
    state: Mutex<WatchState>,
    generation: watch::Sender<u64>,
    /// Wakes the task when the watched set or the subscriber count changes.
    replan: Notify,
}

impl UserWatch {
    fn lock(&self) -> MutexGuard<'_, WatchState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The user.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The folders to watch, sorted.
    pub fn keys(&self) -> Vec<WatchKey> {
        let mut keys: Vec<WatchKey> = self.lock().folders.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Subscribers now.
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers
    }

    /// The login to use.
    pub fn login(&self) -> Option<WatchLogin> {
        self.lock().login.clone()
    }

    /// The last mark of `key`.
    pub fn mark(&self, key: &WatchKey) -> Option<Mark> {
        self.lock().folders.get(key).and_then(|f| f.mark.clone())
    }

    /// Records what the watcher saw; bumps the generation when it changed.
    pub fn observe(&self, key: &WatchKey, mark: Mark) {
        let changed = {
            let mut st = self.lock();
            match st.folders.get_mut(key) {
                Some(f) if f.mark.as_ref() != Some(&mark) => {
                    f.mark = Some(mark);
                    true
                }
                _ => false,
            }
        };
        if changed {
            self.generation.send_modify(|g| *g += 1);
        }
    }

    /// The watcher waits in IDLE or NOTIFY on marks it read in a round
    /// that began at `began`, when the user's count of mailbox changes by
    /// opush (`changes_by_opush`) was `opush_changes`.
    pub fn settle(&self, opush_changes: u64, began: Instant) {
        self.lock().settled = Some((opush_changes, began));
    }

    /// The watcher's marks may be behind: it stopped waiting (news, a
    /// re-plan, a failure) or has not waited yet.
    pub fn unsettle(&self) {
        self.lock().settled = None;
    }

    /// Whether the watcher waits on current marks (for tests).
    pub fn settled(&self) -> bool {
        self.lock().settled.is_some_and(|(n, began)| {
            n == changes_by_opush(&self.user) && began.elapsed() <= SYNC_WATCH_TRUST
        })
    }

    /// Records whether the watcher is connected (for logs and tests).
    pub fn set_connected(&self, connected: bool) {
        self.lock().connected = connected;
    }

    /// Whether the watcher is connected to its backend.
    pub fn connected(&self) -> bool {
        self.lock().connected
    }

    /// Counts one IMAP login of the watcher.
    pub fn logged_in(&self) {
        self.lock().logins += 1;
    }

    /// How many times the watcher logged in to IMAP (for logs and tests).
    pub fn logins(&self) -> u64 {
        self.lock().logins
    }

    /// Records how the watcher waits now.
    pub fn set_kind(&self, kind: WatcherKind) {
        self.lock().kind = kind;
    }

    /// How the watcher waits now (for logs and tests).
    pub fn kind(&self) -> WatcherKind {
        self.lock().kind
    }

    /// Resolves when the watched set or the subscriber count changes.
    pub async fn replanned(&self) {
        self.replan.notified().await;
    }
}

#[derive(Debug, Default)]
struct DeviceSlot {
    /// The parked Ping: its ticket and the signal that ends it.
    parked: Option<(u64, Arc<Notify>)>,
    /// When its last Pings arrived (damping).
    answers: VecDeque<Instant>,
    /// Its last refused Ping, as [`PushHub::refused`] was told it.
    refused: Option<[u8; 32]>,
}

pub(crate) struct Inner {
    settings: PushSettings,
    imap: Arc<ImapConfig>,
    watches: Mutex<HashMap<String, Arc<UserWatch>>>,
    devices: Mutex<HashMap<String, DeviceSlot>>,
    parked: Arc<Semaphore>,
    next_ticket: std::sync::atomic::AtomicU64,
    dav: Mutex<Option<Arc<dyn dav::TokenSource>>>,
    /// The folders Syncs keep watched, until when ([`PushHub::keep_watching`]).
    interests: Mutex<HashMap<(String, WatchKey), Interest>>,
    /// The request pool's login gate, so watchers' logins count against
    /// `[imap] max_logins_in_flight` too (none: not gated).
    login_gate: std::sync::OnceLock<crate::backends::imap::pool::LoginGate>,
}

/// The hub; cheap to clone (shared).
#[derive(Clone)]
pub struct PushHub {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for PushHub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PushHub")
            .field("settings", &self.inner.settings)
            .field("watchers", &self.watcher_count())
            .field("parked", &self.parked_count())
            .finish()
    }
}

fn device_name(user: &str, device: &str) -> String {
    format!("{user}\u{0}{device}")
}

impl PushHub {
    /// A hub watching the IMAP server of `imap`.
    pub fn new(settings: PushSettings, imap: ImapConfig) -> PushHub {
        PushHub {
            inner: Arc::new(Inner {
                parked: Arc::new(Semaphore::new(settings.max_parked)),
                settings,
                imap: Arc::new(imap),
                watches: Mutex::new(HashMap::new()),
                devices: Mutex::new(HashMap::new()),
                next_ticket: std::sync::atomic::AtomicU64::new(1),
                dav: Mutex::new(None),
                interests: Mutex::new(HashMap::new()),
                login_gate: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Watchers' logins wait their turn at `gate` (the request pool's), so
    /// a reconnect storm shares `[imap] max_logins_in_flight` with requests.
    pub fn set_login_gate(&self, gate: crate::backends::imap::pool::LoginGate) {
        let _ = self.inner.login_gate.set(gate);
    }

    /// The settings.
    pub fn settings(&self) -> &PushSettings {
        &self.inner.settings
    }

    /// Sets the source of DAV sync-tokens (the calendar/contacts connector).
    pub fn set_dav_source(&self, source: Arc<dyn dav::TokenSource>) {
        *self.inner.dav.lock().unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Watchers running now.
    pub fn watcher_count(&self) -> usize {
        self.inner
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// Pings parked now.
    pub fn parked_count(&self) -> usize {
        self.inner.settings.max_parked - self.inner.parked.available_permits()
    }

    /// The watcher of `user`, if one runs.
    pub fn watcher(&self, user: &str) -> Option<Arc<UserWatch>> {
        self.inner
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(user)
            .cloned()
    }

    /// A new request of `device` arrived: its parked Ping, if any, ends now.
    pub fn supersede(&self, user: &str, device: &str) {
        let devices = self.inner.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, signal)) = devices
            .get(&device_name(user, device))
            .and_then(|d| d.parked.as_ref())
        {
            signal.notify_one();
        }
    }

    /// Counts one Ping of `device` arriving at `now`; `Some(wait)` when the
    /// device is over `max_pings_per_minute` and should come back after
    /// `wait`. A Ping then refused before it parks is taken back by
    /// [`PushHub::refused`] unless it repeats the device's last refusal.
    pub fn damp(&self, user: &str, device: &str, now: Instant) -> Option<Duration> {
        let max = self.inner.settings.max_pings_per_minute;
        if max == 0 {
            return None;
        }
        let window = Duration::from_secs(60);
        let mut devices = self.inner.devices.lock().unwrap_or_else(|p| p.into_inner());
        if devices.len() > self.inner.settings.max_parked.saturating_mul(2).max(1024) {
            devices.retain(|_, d| {
                d.parked.is_some()
                    || d.answers
                        .back()
                        .is_some_and(|t| now.duration_since(*t) < window)
            });
        }
        let slot = devices.entry(device_name(user, device)).or_default();
        while slot
            .answers
            .front()
            .is_some_and(|t| now.duration_since(*t) >= window)
        {
            slot.answers.pop_front();
        }
        if slot.answers.len() >= max as usize {
            let first = slot.answers.front().copied().unwrap_or(now);
            return Some(window.saturating_sub(now.duration_since(first)));
        }
        slot.answers.push_back(now);
        None
    }

    /// The Ping of `device` counted by [`PushHub::damp`] at `at` was
    /// refused before it parked (Status 3, 5, 6 or 7; `what` identifies the
    /// request and its answer). The device is expected to correct it and
    /// Ping again at once ([MS-ASCMD] 2.2.3.177.11), so it does not count,
    /// unless it is the same refusal as the device's last one: a device
    /// sending the same refused Ping in a loop is still damped.
    pub fn refused(&self, user: &str, device: &str, at: Instant, what: [u8; 32]) {
        if self.inner.settings.max_pings_per_minute == 0 {
            return;
        }
        let mut devices = self.inner.devices.lock().unwrap_or_else(|p| p.into_inner());
        let slot = devices.entry(device_name(user, device)).or_default();
        if slot.refused.replace(what) == Some(what) {
            return;
        }
        if let Some(i) = slot.answers.iter().rposition(|t| *t == at) {
            slot.answers.remove(i);
        }
    }

    /// Parks a Ping of `device`: takes a parked slot (or fails when
    /// `max_parked` are parked) and supersedes the device's older Ping.
    pub fn park(&self, user: &str, device: &str) -> Result<Parked, ParkError> {
        let permit = self
            .inner
            .parked
            .clone()
            .try_acquire_owned()
            .map_err(|_| ParkError::Full(self.inner.settings.max_parked))?;
        let ticket = self
            .inner
            .next_ticket
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let signal = Arc::new(Notify::new());
        let name = device_name(user, device);
        let mut devices = self.inner.devices.lock().unwrap_or_else(|p| p.into_inner());
        let slot = devices.entry(name.clone()).or_default();
        if let Some((_, old)) = slot.parked.replace((ticket, signal.clone())) {
            old.notify_one();
        }
        Ok(Parked {
            hub: self.inner.clone(),
            device: name,
            ticket,
            signal,
            _permit: permit,
        })
    }

    /// Subscribes to changes of `keys` of `user`, starting from `marks`
    /// (the state the caller observed; a key without a mark counts as
    /// changed as soon as the watcher has one). Starts the user's watcher
    /// when none runs.
    pub fn subscribe(
        &self,
        user: &str,
        login: WatchLogin,
        marks: Vec<(WatchKey, Option<Mark>)>,
    ) -> Subscription {
        let watch = {
            let mut watches = self.inner.watches.lock().unwrap_or_else(|p| p.into_inner());
            let watch = watches
                .entry(user.to_owned())
                .or_insert_with(|| {
                    Arc::new(UserWatch {
                        user: user.to_owned(),
                        state: Mutex::new(WatchState::default()),
                        generation: watch::Sender::new(0),
                        replan: Notify::new(),
                    })
                })
                .clone();
            let mut st = watch.lock();
            st.subscribers += 1;
            // The first login offered wins; the master user beats a password
            // (it survives password changes).
            if st.login.is_none() || login == WatchLogin::Master {
                st.login = Some(login);
            }
            let mut new_key = false;
            for (key, _) in &marks {
                let f = st.folders.entry(key.clone()).or_default();
                f.refs += 1;
                new_key |= f.refs == 1;
            }
            if !st.running {
                st.running = true;
                tokio::spawn(imap::run(self.inner.clone(), watch.clone()));
            } else if new_key {
                watch.replan.notify_one();
            }
            drop(st);
            watch
        };
        let generation = watch.generation.subscribe();
        Subscription {
            watch,
            marks,
            generation,
        }
    }
}

/// A folder a Sync keeps watched: its subscription, and until when.
struct Interest {
    _subscription: Subscription,
    until: Instant,
}

impl PushHub {
    /// A Sync of `user`'s mail folder `raw` keeps it watched for `[push]
    /// sync_watch_s` from now (nothing when that is zero), starting the
    /// user's watcher when none runs. The watcher is not widened from
    /// IDLE on another folder to NOTIFY (Dovecot cannot hibernate a NOTIFY
    /// connection): such a folder's Syncs keep asking IMAP. At most
    /// `[push] max_parked` folders are kept watched this way.
    pub fn keep_watching(&self, user: &str, login: WatchLogin, raw: &str) {
        let keep = self.inner.settings.sync_watch;
        if keep.is_zero() {
            return;
        }
        let until = Instant::now() + keep;
        let key = WatchKey::Mail(raw.to_owned());
        let name = (user.to_owned(), key.clone());
        {
            let mut interests = self.inner.interests();
            if let Some(i) = interests.get_mut(&name) {
                i.until = until;
                return;
            }
            if interests.len() >= self.inner.settings.max_parked {
                return;
            }
        }
        if let Some(w) = self.watcher(user) {
            let st = w.lock();
            let mail = st
                .folders
                .keys()
                .filter(|k| matches!(k, WatchKey::Mail(_)))
                .count();
            if mail == 1 && !st.folders.contains_key(&key) {
                return;
            }
        }
        let subscription = self.subscribe(user, login, vec![(key, None)]);
        let mut interests = self.inner.interests();
        if let Some(i) = interests.get_mut(&name) {
            // Another Sync got there first: this subscription goes.
            i.until = until;
            return;
        }
        interests.insert(
            name.clone(),
            Interest {
                _subscription: subscription,
                until,
            },
        );
        drop(interests);
        let hub = self.inner.clone();
        tokio::spawn(async move {
            let mut until = until;
            loop {
                tokio::time::sleep_until(until).await;
                let mut interests = hub.interests();
                match interests.get(&name) {
                    Some(i) if i.until > Instant::now() => until = i.until,
                    _ => {
                        let gone = interests.remove(&name);
                        drop(interests);
                        drop(gone);
                        return;
                    }
                }
            }
        });
    }

    /// The figures of `user`'s mail folder `raw` that may stand for its
    /// STATUS now (`[push] sync_watch_s`): those of the user's watcher
    /// while it waits in IDLE or NOTIFY with nothing reported since the
    /// round that read them, that round began at most 90 s ago, and opush
    /// changed none of the user's mailboxes since. `None` otherwise; when only such
    /// a change stands in the way, the watcher is woken to read them again.
    pub fn quiet_status(&self, user: &str, raw: &str) -> Option<FolderStatus> {
        if self.inner.settings.sync_watch.is_zero() {
            return None;
        }
        let watch = self.watcher(user)?;
        let st = watch.lock();
        let (settled, began) = st.settled?;
        if began.elapsed() > SYNC_WATCH_TRUST {
            return None;
        }
        if settled != changes_by_opush(user) {
            drop(st);
            watch.replan.notify_one();
            return None;
        }
        match st
            .folders
            .get(&WatchKey::Mail(raw.to_owned()))?
            .mark
            .as_ref()?
        {
            Mark::Mail(status) => Some(*status),
            _ => None,
        }
    }
}

impl Inner {
    /// The folders Syncs keep watched.
    fn interests(&self) -> MutexGuard<'_, HashMap<(String, WatchKey), Interest>> {
        self.interests.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Called by a watcher task with no subscribers after its linger: the
    /// watcher leaves the hub (true) unless someone subscribed meanwhile.
    pub(crate) fn retire(&self, watch: &Arc<UserWatch>) -> bool {
        let mut watches = self.watches.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = watch.lock();
        if st.subscribers > 0 {
            return false;
        }
        st.running = false;
        if watches
            .get(&watch.user)
            .is_some_and(|w| Arc::ptr_eq(w, watch))
        {
            watches.remove(&watch.user);
        }
        true
    }

    pub(crate) fn settings(&self) -> &PushSettings {
        &self.settings
    }

    pub(crate) fn imap(&self) -> &ImapConfig {
        &self.imap
    }

    pub(crate) fn login_gate(&self) -> Option<&crate::backends::imap::pool::LoginGate> {
        self.login_gate.get()
    }

    pub(crate) fn dav(&self) -> Option<Arc<dyn dav::TokenSource>> {
        self.dav.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A parked Ping's place: the parked slot, and the device's "you are
/// superseded" signal. Dropping it frees both.
pub struct Parked {
    hub: Arc<Inner>,
    device: String,
    ticket: u64,
    signal: Arc<Notify>,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Parked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Parked")
            .field("ticket", &self.ticket)
            .finish_non_exhaustive()
    }
}

impl Parked {
    /// Resolves when another request of the device supersedes this Ping.
    pub async fn superseded(&self) {
        self.signal.notified().await;
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        let mut devices = self.hub.devices.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = devices.get_mut(&self.device) {
            if slot.parked.as_ref().is_some_and(|(t, _)| *t == self.ticket) {
                slot.parked = None;
                if slot.answers.is_empty() && slot.refused.is_none() {
                    devices.remove(&self.device);
                }
            }
        }
    }
}

/// A parked Ping's interest in some folders of its user's watcher.
pub struct Subscription {
    watch: Arc<UserWatch>,
    marks: Vec<(WatchKey, Option<Mark>)>,
    generation: watch::Receiver<u64>,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("user", &self.watch.user)
            .field("marks", &self.marks)
            .finish()
    }
}

impl Subscription {
    /// The keys whose watcher mark differs from the subscription's.
    pub fn changed(&self) -> Vec<WatchKey> {
        let st = self.watch.lock();
        self.marks
            .iter()
            .filter(|(key, mine)| {
                let theirs = st.folders.get(key).and_then(|f| f.mark.as_ref());
                theirs.is_some() && theirs != mine.as_ref()
            })
            .map(|(key, _)| key.clone())
            .collect()
    }

    /// The watcher's current marks of `keys` (to [`Subscription::rebase`]
    /// on after a re-check that started after they were taken).
    pub fn current(&self, keys: &[WatchKey]) -> Vec<(WatchKey, Option<Mark>)> {
        let st = self.watch.lock();
        keys.iter()
            .map(|k| (k.clone(), st.folders.get(k).and_then(|f| f.mark.clone())))
            .collect()
    }

    /// Takes `marks` (from [`Subscription::current`]) as the new starting
    /// point, after a re-check found nothing the device would sync.
    pub fn rebase(&mut self, marks: Vec<(WatchKey, Option<Mark>)>) {
        for (key, mark) in marks {
            if let Some((_, mine)) = self.marks.iter_mut().find(|(k, _)| *k == key) {
                *mine = mark;
            }
        }
    }

    /// Waits until a mark changes, `deadline` passes, or `parked` is
    /// superseded — whichever comes first.
    pub async fn wait(&mut self, deadline: Instant, parked: &Parked) -> Wake {
        let superseded = parked.superseded();
        let mut superseded = std::pin::pin!(superseded);
        loop {
            self.generation.borrow_and_update();
            if !self.changed().is_empty() {
                return Wake::Changed;
            }
            tokio::select! {
                biased;
                () = &mut superseded => return Wake::Superseded,
                () = tokio::time::sleep_until(deadline) => return Wake::Timeout,
                r = self.generation.changed() => {
                    if r.is_err() {
                        // The watcher is gone (cannot happen while subscribed):
                        // wait out the heartbeat.
                        tokio::select! {
                            () = &mut superseded => return Wake::Superseded,
                            () = tokio::time::sleep_until(deadline) => return Wake::Timeout,
                        }
                    }
                }
            }
        }
    }

    /// The user's watcher.
    pub fn watcher(&self) -> &Arc<UserWatch> {
        &self.watch
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let mut st = self.watch.lock();
        st.subscribers = st.subscribers.saturating_sub(1);
        let mut gone = false;
        for (key, _) in &self.marks {
            if let Some(f) = st.folders.get_mut(key) {
                f.refs = f.refs.saturating_sub(1);
                if f.refs == 0 {
                    st.folders.remove(key);
                    gone = true;
                }
            }
        }
        let idle = st.subscribers == 0;
        drop(st);
        if gone || idle {
            self.watch.replan.notify_one();
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn hub(max_answers: u32) -> PushHub {
        let settings = PushSettings {
            max_parked: 2,
            max_pings_per_minute: max_answers,
            ..PushSettings::default()
        };
        PushHub::new(settings, ImapConfig::default())
    }

    #[tokio::test]
    async fn parking_is_bounded_and_a_new_ping_supersedes_the_old() {
        let hub = hub(0);
        let a = hub.park("u", "d1").unwrap();
        let b = hub.park("u", "d1").unwrap();
        assert_eq!(hub.parked_count(), 2);
        assert_eq!(hub.park("u", "d2").unwrap_err(), ParkError::Full(2));
        // `b` superseded `a`: a's signal fired (stored permit).
        tokio::time::timeout(Duration::from_secs(1), a.superseded())
            .await
            .unwrap();
        drop(a);
        // Dropping the old one does not forget the new one.
        hub.supersede("u", "d1");
        tokio::time::timeout(Duration::from_secs(1), b.superseded())
            .await
            .unwrap();
        drop(b);
        assert_eq!(hub.parked_count(), 0);
    }

    #[test]
    fn damping_counts_answers_per_minute() {
        let hub = hub(3);
        let t0 = Instant::now();
        for i in 0..3 {
            assert_eq!(hub.damp("u", "d", t0 + Duration::from_secs(i)), None);
        }
        let wait = hub.damp("u", "d", t0 + Duration::from_secs(10)).unwrap();
        assert_eq!(wait, Duration::from_secs(50));
        assert_eq!(hub.damp("u", "other", t0), None);
        assert_eq!(hub.damp("u", "d", t0 + Duration::from_secs(61)), None);
        assert_eq!(self::hub(0).damp("u", "d", t0), None);
    }

    #[test]
    fn a_refused_ping_counts_only_when_it_repeats_the_last_refusal() {
        let hub = hub(2);
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        // Refused three ways, each corrected: none of them counts.
        for (i, what) in [[5u8; 32], [3; 32], [7; 32]].into_iter().enumerate() {
            let i = i as u64;
            assert_eq!(hub.damp("u", "d", at(i)), None);
            hub.refused("u", "d", at(i), what);
        }
        // Two served Pings fill the minute.
        assert_eq!(hub.damp("u", "d", at(3)), None);
        assert_eq!(hub.damp("u", "d", at(4)), None);
        assert_eq!(hub.damp("u", "d", at(5)), Some(Duration::from_secs(58)));

        // The same refusal again and again: counted from the second on.
        let hub = self::hub(2);
        for i in 0..3 {
            assert_eq!(hub.damp("u", "d", at(i)), None, "Ping {i}");
            hub.refused("u", "d", at(i), [5; 32]);
        }
        assert_eq!(hub.damp("u", "d", at(3)), Some(Duration::from_secs(58)));
        // Damping off: nothing is kept.
        let off = self::hub(0);
        off.refused("u", "d", at(0), [5; 32]);
        assert!(off.inner.devices.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn quiet_status_needs_a_settled_recent_watcher_and_no_change_by_opush() {
        let settings = PushSettings {
            sync_watch: Duration::from_secs(300),
            ..PushSettings::default()
        };
        let hub = PushHub::new(settings, ImapConfig::default());
        let user = "quiet-status-unit";
        let st = FolderStatus {
            messages: 3,
            uidnext: 4,
            uidvalidity: 9,
            highestmodseq: Some(17),
            ..FolderStatus::default()
        };
        // No watcher: nothing to go by.
        assert_eq!(hub.quiet_status(user, "INBOX"), None);
        // No IMAP server on this port: the watcher task never settles by
        // itself, and this current-thread test does not let it run between
        // the steps below.
        hub.keep_watching(user, WatchLogin::Master, "INBOX");
        let watch = hub.watcher(user).unwrap();
        watch.observe(&WatchKey::Mail("INBOX".into()), Mark::Mail(st));
        assert_eq!(hub.quiet_status(user, "INBOX"), None, "not waiting yet");
        watch.settle(changes_by_opush(user), Instant::now());
        assert_eq!(hub.quiet_status(user, "INBOX"), Some(st));
        assert_eq!(hub.quiet_status(user, "Other"), None, "not watched");
        // opush changed one of the user's mailboxes: marks of before stand
        // for nothing until a round reads them again.
        changed_by_opush(user);
        assert_eq!(hub.quiet_status(user, "INBOX"), None);
        watch.settle(changes_by_opush(user), Instant::now());
        assert_eq!(hub.quiet_status(user, "INBOX"), Some(st));
        // A round too old (a server that stopped telling anything).
        let old = Instant::now()
            .checked_sub(SYNC_WATCH_TRUST + Duration::from_secs(1))
            .unwrap();
        watch.settle(changes_by_opush(user), old);
        assert_eq!(hub.quiet_status(user, "INBOX"), None);
        watch.settle(changes_by_opush(user), Instant::now());
        watch.unsettle();
        assert_eq!(hub.quiet_status(user, "INBOX"), None);
        // Off: never.
        let off = hub_off_quiet(user, st);
        assert_eq!(off, None);
    }

    fn hub_off_quiet(user: &str, st: FolderStatus) -> Option<FolderStatus> {
        let hub = PushHub::new(PushSettings::default(), ImapConfig::default());
        let sub = hub.subscribe(
            user,
            WatchLogin::Master,
            vec![(WatchKey::Mail("INBOX".into()), None)],
        );
        sub.watcher()
            .observe(&WatchKey::Mail("INBOX".into()), Mark::Mail(st));
        sub.watcher().settle(changes_by_opush(user), Instant::now());
        hub.quiet_status(user, "INBOX")
    }

    #[tokio::test]
    async fn a_subscription_sees_marks_that_differ_from_its_own() {
        let hub = hub(0);
        let key = WatchKey::Mail("INBOX".into());
        let base = FolderStatus {
            messages: 1,
            uidnext: 2,
            ..FolderStatus::default()
        };
        // No IMAP server on this port: the watcher just keeps retrying.
        let mut sub = hub.subscribe(
            "u",
            WatchLogin::Master,
            vec![(key.clone(), Some(Mark::Mail(base)))],
        );
        let watch = hub.watcher("u").unwrap();
        watch.observe(&key, Mark::Mail(base));
        assert!(sub.changed().is_empty());
        let parked = hub.park("u", "d").unwrap();
        let soon = Instant::now() + Duration::from_millis(50);
        assert_eq!(sub.wait(soon, &parked).await, Wake::Timeout);
        let w2 = watch.clone();
        let later = FolderStatus { uidnext: 3, ..base };
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            w2.observe(&WatchKey::Mail("INBOX".into()), Mark::Mail(later));
        });
        let far = Instant::now() + Duration::from_secs(5);
        assert_eq!(sub.wait(far, &parked).await, Wake::Changed);
        assert_eq!(sub.changed(), vec![key.clone()]);
        let now = sub.current(&[key]);
        sub.rebase(now);
        assert!(sub.changed().is_empty());
        drop(sub);
        assert_eq!(watch.subscribers(), 0);
        assert!(watch.keys().is_empty());
    }
}
