//! Sent copies that could not be saved in Sent with their send (the IMAP
//! server unavailable at that moment, or its APPEND failed, or opush
//! killed before it was made): kept in the store
//! (`opush_storage::SentCopy`, schema v3) and saved later, so the user
//! finds every sent mail in Sent even when opush stops meanwhile.
//!
//! - SendMail/SmartReply/SmartForward ([`SentCopies::keep`]) write the
//!   row (the message as it goes in Sent, never the password) as soon as
//!   the relay accepted the message, before the send is recorded and the
//!   copy APPENDed; once the copy is in Sent the row is deleted
//!   ([`SentCopies::settled`]), else it is handed to the user's resumer
//!   ([`SentCopies::save_later`]) before the request is answered. A kill
//!   anywhere after the relay's acceptance thus leaves the row for the
//!   next opush (`server/tests/crash_kill.rs`).
//! - One resumer task per user at a time works through the user's pending
//!   copies: at most [`SENT_COPY_RETRIES`] tries each, waiting 1 s after the
//!   send, then twice as long after each failed try, up to a minute (about
//!   5 minutes in all). Each try first looks for the copy by its
//!   Message-ID (an APPEND whose answer was lost may have saved it), so
//!   there is never a second one; a saved or found copy's row is deleted,
//!   a failed try is recorded in it (`tries`, `last_try_ms`). After the
//!   last try, or once the row is older than `[storage]
//!   ttl_sent_copies_s`, the copy is given up: an ERROR line, the row
//!   deleted.
//! - After a restart: passwords are not stored, so with `[imap]
//!   master_for_requests` (IMAP reached as the master user) every pending
//!   copy is resumed at start-up ([`SentCopies::resume_at_start`]);
//!   otherwise a user's copies are resumed on that user's next
//!   authenticated request, from any device ([`SentCopies::on_request`]:
//!   the request's password serves the tries; the store is looked at at
//!   most once per [`RECHECK`] per user). A resumer's waits go on from the
//!   tries recorded: a copy whose next try was due while opush was stopped
//!   is tried at once.
//! - When the store cannot keep the row (unavailable, or a schema v2 store
//!   not updated yet) the copy is still retried, from memory only (a WARN
//!   line says it would be lost if opush stopped).
//!
//! Several opush processes on one Cassandra each run their own resumers.
//! Each try is claimed in the store first
//! (`Store::claim_sent_copy_try`: a compare-and-set of the copy's last try,
//! a lightweight transaction on Cassandra), and only the process whose
//! claim lands looks in Sent and APPENDs; the others read the row again
//! and wait for the next try's time (by then it is saved, or theirs to
//! claim). A store error while claiming leaves the try to be made anyway
//! (logged): the one case two processes could both APPEND.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opush_storage::{SentCopy, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backends::imap::{ImapError, ImapPool, PooledSession};
use crate::commands::compose::{save_in_sent, sent_folder, SendSettings};
use crate::config::Secret;
use crate::session::EasServices;

/// Background tries of one sent copy before it is given up.
pub const SENT_COPY_RETRIES: u32 = 10;
const FIRST_WAIT: Duration = Duration::from_secs(1);
const LONGEST_WAIT: Duration = Duration::from_secs(60);
/// How long a look at a user's pending copies in the store stands: a
/// user's requests look again only after this (another process may have
/// left copies; this one's own are handed over directly).
pub const RECHECK: Duration = Duration::from_secs(15 * 60);
/// Users whose look is remembered, at most (older looks are forgotten
/// first; a forgotten user is only looked at again).
const MAX_CHECKED: usize = 100_000;

/// The wait after `tries` failed tries (and after the send's own, at 0):
/// 1 s, doubling, at most a minute.
pub fn wait_after(tries: u32) -> Duration {
    FIRST_WAIT
        .saturating_mul(1u32 << tries.min(6))
        .min(LONGEST_WAIT)
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> i64 {
    i64::try_from(crate::session::now().0).unwrap_or(i64::MAX)
}

/// The pending Sent copies of this process: one resumer per user.
pub struct SentCopies {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SentCopies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SentCopies")
            .field("ttl", &self.shared.ttl)
            .finish_non_exhaustive()
    }
}

impl Default for SentCopies {
    /// With the store's default TTL (7 days).
    fn default() -> Self {
        SentCopies::new(Duration::from_secs(
            opush_storage::StorageConfig::default().ttl_sent_copies_s,
        ))
    }
}

struct Shared {
    /// `[storage] ttl_sent_copies_s`: a copy older than this is given up.
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The running resumer of each user.
    resumers: HashMap<String, Resumer>,
    /// When each user's pending copies were last looked for in the store.
    checked: HashMap<String, std::time::Instant>,
    /// The start-up resume (master user), while it runs.
    startup: Option<JoinHandle<()>>,
    /// Set by [`SentCopies::stop`]: nothing starts any more.
    stopped: bool,
}

/// A user's running resumer, and what is handed to it.
struct Resumer {
    /// The password of the user's latest request (memory only; unused
    /// with `master_for_requests`).
    password: Option<Secret>,
    /// Copies handed over by sends of this process.
    incoming: Vec<Job>,
    /// Look for the user's copies in the store.
    rescan: bool,
    /// Wakes the resumer when something was handed over.
    wake: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

/// A sent copy kept in the store ([`SentCopies::keep`]) until it is in
/// Sent.
pub struct KeptCopy(Job);

impl std::fmt::Debug for KeptCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptCopy")
            .field("message_id", &self.0.copy.message_id)
            .field("stored", &self.0.stored)
            .finish_non_exhaustive()
    }
}

/// One pending copy, and whether its row is in the store.
struct Job {
    copy: SentCopy,
    stored: bool,
}

impl Job {
    /// When its next try is due: [`wait_after`] its tries, counted from
    /// its last one (at once when that time has passed).
    fn due(&self) -> Instant {
        let due_ms = self
            .copy
            .last_try_ms
            .saturating_add(i64::try_from(wait_after(self.copy.tries).as_millis()).unwrap_or(0));
        let wait = u64::try_from(due_ms.saturating_sub(now_ms())).unwrap_or(0);
        Instant::now() + Duration::from_millis(wait)
    }
}

/// What a resumer uses, taken from the services.
struct Backends {
    store: Arc<Store>,
    pool: Arc<ImapPool>,
    settings: SendSettings,
}

impl Backends {
    fn of(eas: &EasServices) -> Backends {
        Backends {
            store: eas.sessions.store().clone(),
            pool: eas.imap.clone(),
            settings: eas.send.clone(),
        }
    }
}

impl SentCopies {
    /// Pending copies given up once older than `ttl`.
    pub fn new(ttl: Duration) -> SentCopies {
        SentCopies {
            shared: Arc::new(Shared {
                ttl,
                state: Mutex::new(State::default()),
            }),
        }
    }

    /// Keeps the copy of a message the relay just accepted (`message_id`)
    /// in the store (awaited), before the send is recorded and the copy is
    /// APPENDed: if opush stops before the copy is in Sent, the row is
    /// resumed by the next opush (which looks for the copy by its
    /// Message-ID first, so it is never saved twice). Then either
    /// [`SentCopies::settled`] (saved in Sent at once) or
    /// [`SentCopies::save_later`].
    pub async fn keep(
        &self,
        eas: &EasServices,
        user: &str,
        message_id: &str,
        copy: Vec<u8>,
    ) -> KeptCopy {
        let at = now_ms();
        let copy = SentCopy {
            user: user.to_owned(),
            message_id: message_id.to_owned(),
            created_ms: at,
            last_try_ms: at,
            tries: 0,
            bytes: copy,
        };
        let stored = match eas.sessions.store().put_sent_copy(copy.clone()).await {
            Ok(()) => true,
            Err(e) => {
                crate::obs::metrics::storage_error();
                tracing::warn!(user, message_id, error = %e, "sent copy not kept in the store: retried from memory only (lost if opush stops)");
                false
            }
        };
        KeptCopy(Job { copy, stored })
    }

    /// The kept copy is in Sent: its row is deleted, in the background (a
    /// row left by a crash meanwhile is found in Sent by the next resumer,
    /// and deleted then).
    pub fn settled(&self, eas: &EasServices, kept: KeptCopy) {
        let KeptCopy(job) = kept;
        if !job.stored {
            return;
        }
        let store = eas.sessions.store().clone();
        tokio::spawn(async move { forget(&store, &job).await });
    }

    /// The kept copy could not be saved in Sent now: hands it to the
    /// user's resumer.
    pub fn save_later(&self, eas: &EasServices, user: &str, password: &Secret, kept: KeptCopy) {
        let KeptCopy(job) = kept;
        self.hand_over(eas, user, Some(password), Some(job));
    }

    /// An authenticated request of `user`: a running resumer gets its
    /// password; else, unless looked at within [`RECHECK`], a resumer
    /// starts and looks for the user's pending copies in the store. Cheap:
    /// no I/O on the request's path.
    pub fn on_request(&self, eas: &EasServices, user: &str, password: &Secret) {
        let mut state = self.shared.lock();
        if state.stopped {
            return;
        }
        if let Some(r) = state.resumers.get_mut(user) {
            if r.password.as_ref().map(Secret::expose) != Some(password.expose()) {
                r.password = Some(password.clone());
            }
            return;
        }
        if state
            .checked
            .get(user)
            .is_some_and(|at| at.elapsed() < RECHECK)
        {
            return;
        }
        drop(state);
        self.hand_over(eas, user, Some(password), None);
    }

    /// With `[imap] master_for_requests`: resumes every pending copy of
    /// the store, in the background (no password needed). Without it,
    /// does nothing: copies wait for their user's next request.
    pub fn resume_at_start(&self, eas: &EasServices) {
        if !eas.imap.config().master_for_requests {
            return;
        }
        let mut state = self.shared.lock();
        if state.stopped {
            return;
        }
        let this = SentCopies {
            shared: self.shared.clone(),
        };
        let backends = Backends::of(eas);
        let services = Arc::new(backends);
        let task = tokio::spawn(async move {
            match services.store.all_sent_copies().await {
                Ok(all) => {
                    let users: std::collections::BTreeSet<String> =
                        all.into_iter().map(|c| c.user).collect();
                    if !users.is_empty() {
                        tracing::info!(
                            users = users.len(),
                            "resuming pending sent copies at start-up"
                        );
                    }
                    for user in users {
                        this.spawn_or_wake(&services, &user, None, None);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pending sent copies not resumed at start-up: each user's next request resumes them")
                }
            }
        });
        state.startup = Some(task);
    }

    /// Stops every resumer (at shutdown): their copies stay in the store
    /// for the next start. Waits until they have let go of the store.
    pub async fn stop(&self) {
        let tasks: Vec<JoinHandle<()>> = {
            let mut state = self.shared.lock();
            state.stopped = true;
            let mut tasks: Vec<_> = state
                .resumers
                .drain()
                .filter_map(|(_, mut r)| r.task.take())
                .collect();
            tasks.extend(state.startup.take());
            tasks
        };
        for t in &tasks {
            t.abort();
        }
        for t in tasks {
            let _ = t.await;
        }
    }

    /// Users with a running resumer (tests, metrics).
    pub fn resuming(&self) -> usize {
        self.shared.lock().resumers.len()
    }

    fn hand_over(
        &self,
        eas: &EasServices,
        user: &str,
        password: Option<&Secret>,
        job: Option<Job>,
    ) {
        let backends = Arc::new(Backends::of(eas));
        self.spawn_or_wake(&backends, user, password, job);
    }

    /// Hands `job` (and `password`) to `user`'s resumer, starting one
    /// (which looks in the store first) when none runs.
    fn spawn_or_wake(
        &self,
        backends: &Arc<Backends>,
        user: &str,
        password: Option<&Secret>,
        job: Option<Job>,
    ) {
        let mut state = self.shared.lock();
        if state.stopped {
            if job.as_ref().is_some_and(|j| !j.stored) {
                tracing::error!(
                    user,
                    "sent copy given up: opush is stopping and the store did not keep it"
                );
            }
            return;
        }
        if let Some(r) = state.resumers.get_mut(user) {
            if let Some(p) = password {
                r.password = Some(p.clone());
            }
            r.incoming.extend(job);
            r.wake.notify_one();
            return;
        }
        let now = std::time::Instant::now();
        if state.checked.len() >= MAX_CHECKED {
            state
                .checked
                .retain(|_, at| now.duration_since(*at) < RECHECK);
            if state.checked.len() >= MAX_CHECKED {
                state.checked.clear();
            }
        }
        state.checked.insert(user.to_owned(), now);
        state.resumers.insert(
            user.to_owned(),
            Resumer {
                password: password.cloned(),
                incoming: job.into_iter().collect(),
                rescan: true,
                wake: Arc::new(Notify::new()),
                task: None,
            },
        );
        let task = tokio::spawn(resume(
            self.shared.clone(),
            backends.clone(),
            user.to_owned(),
        ));
        if let Some(r) = state.resumers.get_mut(user) {
            r.task = Some(task);
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A user's resumer: tries each pending copy when due until none is left.
async fn resume(shared: Arc<Shared>, backends: Arc<Backends>, user: String) {
    let mut jobs: BTreeMap<String, (Job, Instant)> = BTreeMap::new();
    loop {
        let (incoming, rescan, wake) = {
            let mut state = shared.lock();
            let Some(r) = state.resumers.get_mut(&user) else {
                return;
            };
            (
                std::mem::take(&mut r.incoming),
                std::mem::take(&mut r.rescan),
                r.wake.clone(),
            )
        };
        if rescan {
            match backends.store.sent_copies(&user).await {
                Ok(rows) => {
                    for copy in rows {
                        jobs.entry(copy.message_id.clone()).or_insert_with(|| {
                            let job = Job { copy, stored: true };
                            let due = job.due();
                            (job, due)
                        });
                    }
                }
                // A schema v2 store has none to read (`opush schema update`
                // is advised at start-up).
                Err(e @ opush_storage::StorageError::SchemaMismatch(_)) => {
                    tracing::debug!(user, error = %e, "no pending sent copies to read");
                }
                Err(e) => {
                    // Looked at again on the user's next request.
                    shared.lock().checked.remove(&user);
                    tracing::warn!(user, error = %e, "pending sent copies not read from the store");
                }
            }
        }
        for job in incoming {
            let due = job.due();
            jobs.insert(job.copy.message_id.clone(), (job, due));
        }
        let Some(next) = jobs.values().map(|(_, due)| *due).min() else {
            let mut state = shared.lock();
            let idle = state
                .resumers
                .get(&user)
                .is_none_or(|r| r.incoming.is_empty() && !r.rescan);
            if idle {
                state.resumers.remove(&user);
                return;
            }
            continue;
        };
        tokio::select! {
            () = tokio::time::sleep_until(next) => {}
            () = wake.notified() => continue,
        }
        let now = Instant::now();
        let due: Vec<String> = jobs
            .iter()
            .filter(|(_, (_, at))| *at <= now)
            .map(|(id, _)| id.clone())
            .collect();
        let password = shared
            .lock()
            .resumers
            .get(&user)
            .and_then(|r| r.password.clone());
        let mut conn = connect(&backends.pool, &user, password.as_ref()).await;
        for id in due {
            let Some((job, at)) = jobs.get_mut(&id) else {
                continue;
            };
            let attempt = job.copy.tries + 1;
            let at_ms = now_ms();
            // The try is claimed in the store first: of several opush
            // processes resuming this copy (one Cassandra behind them), only
            // the one whose claim lands looks in Sent and APPENDs.
            if job.stored {
                let claim = backends
                    .store
                    .claim_sent_copy_try(&user, &id, job.copy.last_try_ms, (attempt, at_ms))
                    .await;
                match claim {
                    Ok(true) => {}
                    Ok(false) => {
                        // Another process claimed it, saved it, or it expired:
                        // what the store holds now says which.
                        match pending_in_store(&backends.store, &user, &id).await {
                            Some(copy) => {
                                tracing::info!(user, message_id = %id, tries = copy.tries, "sent copy's try taken by another process");
                                job.copy.tries = copy.tries;
                                job.copy.last_try_ms = copy.last_try_ms;
                                *at = job.due();
                            }
                            None => {
                                tracing::info!(user, message_id = %id, "sent copy no longer pending in the store");
                                jobs.remove(&id);
                            }
                        }
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(user, message_id = %id, error = %e, "sent copy's try not claimed in the store: tried anyway")
                    }
                }
            }
            job.copy.tries = attempt;
            job.copy.last_try_ms = at_ms;
            let outcome = match conn.as_mut() {
                Ok(c) => save_once(c, &backends.settings, &job.copy.bytes, &id).await,
                Err(e) => Err(e.to_string()),
            };
            match outcome {
                Ok(saved) => {
                    let how = if saved { "saved" } else { "found there" };
                    tracing::info!(user, message_id = %id, attempt, "sent copy {how} in Sent on a later try");
                    forget(&backends.store, job).await;
                    jobs.remove(&id);
                }
                Err(e) => {
                    let age = now_ms().saturating_sub(job.copy.created_ms);
                    let too_old = u128::try_from(age).unwrap_or(0) >= shared.ttl.as_millis();
                    if attempt >= SENT_COPY_RETRIES || too_old {
                        tracing::error!(user, message_id = %id, tries = attempt, error = %e, "sent copy given up: not in Sent");
                        forget(&backends.store, job).await;
                        jobs.remove(&id);
                        continue;
                    }
                    tracing::warn!(user, message_id = %id, attempt, error = %e, "sent copy still not saved");
                    *at = job.due();
                }
            }
        }
    }
}

/// The copy `message_id` of `user` as the store holds it now (`None`:
/// not there any more, or the store could not be read: the copy is then
/// left to whoever holds it, and to the user's next look in the store).
async fn pending_in_store(store: &Store, user: &str, message_id: &str) -> Option<SentCopy> {
    match store.sent_copies(user).await {
        Ok(rows) => rows.into_iter().find(|c| c.message_id == message_id),
        Err(e) => {
            tracing::warn!(user, message_id, error = %e, "pending sent copies not read from the store");
            None
        }
    }
}

/// An IMAP session for a try: as the master user with
/// `master_for_requests`, else with the user's latest password.
async fn connect(
    pool: &ImapPool,
    user: &str,
    password: Option<&Secret>,
) -> Result<PooledSession, ImapError> {
    if pool.config().master_for_requests {
        return pool.get_master(user).await;
    }
    match password {
        Some(p) => pool.get(user, p).await,
        None => Err(ImapError::Auth {
            user: user.to_owned(),
        }),
    }
}

/// Deletes a settled copy's row (when it has one). A failure leaves the
/// row: a later resume finds the copy in Sent by its Message-ID.
async fn forget(store: &Store, job: &Job) {
    if !job.stored {
        return;
    }
    if let Err(e) = store
        .delete_sent_copy(&job.copy.user, &job.copy.message_id)
        .await
    {
        tracing::warn!(user = %job.copy.user, message_id = %job.copy.message_id, error = %e, "settled sent copy not deleted from the store");
    }
}

/// One later try: `Ok(false)` when the copy is in Sent already, `Ok(true)`
/// once saved.
async fn save_once(
    conn: &mut PooledSession,
    settings: &SendSettings,
    copy: &[u8],
    message_id: &str,
) -> Result<bool, String> {
    let tried = async {
        if let Some(raw) = sent_folder(conn, settings).await? {
            if conn.has_message_id(&raw, message_id).await? {
                return Ok(false);
            }
        }
        save_in_sent(conn, settings, copy).await.map(|()| true)
    };
    tried.await.map_err(|e: ImapError| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_a_minute() {
        let waits: Vec<u64> = (0..SENT_COPY_RETRIES)
            .map(|t| wait_after(t).as_secs())
            .collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16, 32, 60, 60, 60, 60]);
        assert_eq!(wait_after(u32::MAX), LONGEST_WAIT);
    }
}
