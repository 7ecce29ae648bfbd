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
//!   a failed try is recorded in it (`tries`, `last_try_ms`; then its
//!   error and next try, which an
//!   administrator lists: `opush sent list`, `crate::admin`). After the
//!   last try, or once the row is older than `[storage]
//!   ttl_sent_copies_s`, the copy is delivered to the user's INBOX through
//!   the relay instead, with a note (no password needed), and the row
//!   deleted: a WARN line, never a silent loss.
//! - Exactly one copy in Sent, however a resumer and a new send of the
//!   same message meet (the same ClientId sent again after a kill between
//!   the relay's acceptance and its record): a send finding a row of its
//!   Message-ID takes it over instead of overwriting it; every save — the
//!   send's own ([`SentCopies::save_now`]) and each resumer try — is made
//!   by the one owner of the Message-ID in this process, claims its try in
//!   the store, and looks in Sent before it APPENDs.
//! - After a restart: passwords are not stored, so with `[imap]
//!   master_for_requests` (IMAP reached as the master user) every pending
//!   copy is resumed at start-up ([`SentCopies::resume_at_start`]);
//!   otherwise a user's copies are resumed on that user's next
//!   authenticated request, from any device ([`SentCopies::on_request`]:
//!   the request's password serves the tries; the store is looked at at
//!   most once per [`RECHECK`] per user). A resumer's waits go on from the
//!   tries recorded: a copy whose next try was due while opush was stopped
//!   is tried at once.
//! - Each process sweeps the store's pending copies at start-up and every
//!   [`sweep_every`]: the `opush_sent_copies_waiting` gauge; with the
//!   master user every user's copies resumed; without it a WARN line per
//!   copy waiting for its user, and a copy still waiting at
//!   [`give_up_age`] delivered to the INBOX as above.
//! - The store's listing of copies (`Store::sent_copies`) leaves their
//!   messages out: resumers and the sweep hold a copy's message only
//!   while they try it (read with `Store::sent_copy` then), so memory does
//!   not grow with the copies waiting (docs/BENCHMARKS.md, session 17).
//! - When the store cannot keep the row (unavailable, or a store of schema
//!   v4 or older not updated yet) the copy is still retried, from memory
//!   only (a WARN line says it would be lost if opush stopped).
//!
//! Several opush processes on one Cassandra each run their own resumers.
//! Each try is claimed in the store first
//! (`Store::claim_sent_copy_try`: a compare-and-set of the copy's last try,
//! a lightweight transaction on Cassandra), and only the process whose
//! claim lands looks in Sent and APPENDs; the others read the row again
//! and wait for the next try's time (by then it is saved, or theirs to
//! claim). A claim lasts as long as its try can: the try is bounded
//! ([`try_bound`], twice `[imap] timeout_ms`; cut there, its connection
//! dropped) and the claim writes its end (the bound plus
//! [`CLAIM_MARGIN`]) as the copy's `last_try_ms`, so no other process
//! tries the copy while an APPEND of it may still be under way. A store
//! error while claiming leaves the try to be made anyway (logged): the
//! one case two processes could both APPEND.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use opush_storage::{SentCopy, SentCopyInfo, SentCopyNote, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backends::imap::{ImapError, ImapPool, PooledSession};
use crate::commands::compose::{save_in_sent, SendSettings};
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

/// How long a try may take at most: twice `[imap] timeout_ms` (it LISTs
/// and SEARCHes, then APPENDs; one IMAP command gets `timeout_ms`). A try
/// still running then is given up (its connection dropped).
pub fn try_bound(imap: &crate::config::ImapConfig) -> Duration {
    Duration::from_millis(imap.timeout_ms.saturating_mul(2))
}

/// What a claim adds to its try's bound: the wall clocks of opush
/// processes may differ a little, and a dropped connection's last bytes
/// may still reach the IMAP server.
pub const CLAIM_MARGIN: Duration = Duration::from_secs(3);

/// Until when a claim made now reserves a copy (Unix ms, stored as the
/// copy's `last_try_ms`): the end of its try's [`try_bound`] plus
/// [`CLAIM_MARGIN`]. Another process tries the copy only [`wait_after`]
/// its tries after that; the claimant itself, once its try ended (not cut
/// by the bound), goes by its own clock ([`Job::due`]).
fn claim_until(bound: Duration) -> i64 {
    let hold = i64::try_from((bound + CLAIM_MARGIN).as_millis()).unwrap_or(i64::MAX);
    now_ms().saturating_add(hold)
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
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
    /// The owner of each copy's save in this process (user, Message-ID):
    /// the send's own save and the user's resumer take turns, each looking
    /// in Sent before it APPENDs ([`Owner`]).
    owners: Mutex<Owners>,
}

/// Each (user, Message-ID) being saved in this process, and its owner's lock.
type Owners = HashMap<(String, String), Arc<tokio::sync::Mutex<()>>>;

#[derive(Default)]
struct State {
    /// The running resumer of each user.
    resumers: HashMap<String, Resumer>,
    /// When each user's pending copies were last looked for in the store.
    checked: HashMap<String, std::time::Instant>,
    /// The start-up resume (master user), while it runs, or the sweep of
    /// copies waiting for their users (without it).
    startup: Option<JoinHandle<()>>,
    /// Copies already reported waiting for their user (one WARN each).
    warned: std::collections::HashSet<(String, String)>,
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
    /// Copies an administrator asked to retry now: read again from the
    /// store (where their next try is now).
    retry: Vec<String>,
    /// Wakes the resumer when something was handed over.
    wake: Arc<Notify>,
    task: Option<JoinHandle<()>>,
}

/// A sent copy kept in the store ([`SentCopies::keep`]) until it is in
/// Sent.
pub struct KeptCopy(Job);

/// What an administrator's "retry now" found ([`retry_now_in_store`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetryNow {
    /// Due now: the next look at it tries it.
    Due,
    /// No such copy waits (saved, dropped, or expired).
    Gone,
    /// A try of it is claimed until then (Unix ms): asked again after it.
    Trying(i64),
}

impl std::fmt::Debug for KeptCopy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeptCopy")
            .field("message_id", &self.0.copy.message_id)
            .field("stored", &self.0.stored)
            .finish_non_exhaustive()
    }
}

/// What [`SentCopies::save_now`] did.
#[derive(Debug)]
pub enum SaveNow {
    /// APPENDed to Sent.
    Saved,
    /// In Sent already (found by its Message-ID), or saved by another
    /// process meanwhile (its row gone).
    Settled,
    /// Another try of it is under way (a resumer's): left to the resumers.
    LeftToResumer,
    /// The try failed: left to the resumers.
    Failed(String),
}

/// One pending copy, and whether its row is in the store.
struct Job {
    copy: SentCopyInfo,
    /// Its message: held from the send while the send's own try runs, and
    /// for a copy the store could not keep; else read from the store for
    /// each try ([`Job::load`]) and dropped after it.
    bytes: Option<Vec<u8>>,
    stored: bool,
    /// Its row was kept by an earlier send of the same message.
    taken_over: bool,
    /// This process's own last try of it ended then, with no APPEND left
    /// under way (not cut by its bound, no connection lost mid-command):
    /// its next try goes by this instead of the claim's end.
    ended: Option<Instant>,
}

/// The owner of one copy's save in this process: held from the claim to
/// the end of the APPEND; the next owner then finds the copy in Sent.
struct Owner {
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
    shared: Arc<Shared>,
    key: (String, String),
}

impl Owner {
    async fn take(shared: &Arc<Shared>, user: &str, message_id: &str) -> Owner {
        let key = (user.to_owned(), message_id.to_owned());
        let lock = shared
            .owners()
            .entry(key.clone())
            .or_insert_with(|| Arc::new(tokio::sync::Mutex::new(())))
            .clone();
        let guard = lock.lock_owned().await;
        Owner {
            guard: Some(guard),
            shared: shared.clone(),
            key,
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut owners = self.shared.owners();
        if owners
            .get(&self.key)
            .is_some_and(|l| Arc::strong_count(l) == 1)
        {
            owners.remove(&self.key);
        }
    }
}

impl Job {
    /// A copy as the store lists it (its message read when tried).
    fn stored(copy: SentCopyInfo) -> Job {
        Job {
            copy,
            bytes: None,
            stored: true,
            taken_over: false,
            ended: None,
        }
    }

    /// Its message, read from the store when not held (`Ok(None)`: the
    /// copy is no longer in the store).
    async fn load(&mut self, store: &Store) -> Result<Option<&[u8]>, String> {
        if self.bytes.is_none() {
            match store
                .sent_copy(&self.copy.user, &self.copy.message_id)
                .await
            {
                Ok(Some(c)) => self.bytes = Some(c.bytes),
                Ok(None) => return Ok(None),
                Err(e) => return Err(format!("sent copy not read from the store: {e}")),
            }
        }
        Ok(self.bytes.as_deref())
    }

    /// After a try: a stored copy's message is not held between tries.
    fn unload(&mut self) {
        if self.stored {
            self.bytes = None;
        }
    }

    /// [`Job::due`] as Unix ms (what the store's `next_try_ms` says).
    fn due_ms(&self) -> i64 {
        let wait = self.due().saturating_duration_since(Instant::now());
        now_ms().saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
    }

    /// When its next try is due: [`wait_after`] its tries, counted from
    /// the end of its last claim (`last_try_ms`, [`claim_until`]: another
    /// process's try may run until then), or from the end of this
    /// process's own last try when that ended for sure (at once when that
    /// time has passed).
    fn due(&self) -> Instant {
        if let Some(end) = self.ended {
            return end + wait_after(self.copy.tries);
        }
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
    /// [`try_bound`].
    bound: Duration,
}

impl Backends {
    fn of(eas: &EasServices) -> Backends {
        Backends {
            store: eas.sessions.store().clone(),
            pool: eas.imap.clone(),
            settings: eas.send.clone(),
            bound: try_bound(eas.imap.config()),
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
                owners: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Keeps the copy of a message the relay just accepted (`message_id`)
    /// in the store (awaited), before the send is recorded and the copy is
    /// APPENDed: if opush stops before the copy is in Sent, the row is
    /// resumed by the next opush (which looks for the copy by its
    /// Message-ID first, so it is never saved twice). Then
    /// [`SentCopies::save_now`], and [`SentCopies::settled`] or
    /// [`SentCopies::save_later`].
    ///
    /// A row already kept under this Message-ID (a send of the same
    /// ClientId cut by a kill after the relay accepted it, now sent again)
    /// is taken over as it is, never overwritten: a resumer (of this
    /// process or another) may be trying it, and its claim in the row is
    /// what keeps the two from both APPENDing.
    pub async fn keep(
        &self,
        eas: &EasServices,
        user: &str,
        device_id: &str,
        message_id: &str,
        copy: Vec<u8>,
    ) -> KeptCopy {
        let at = now_ms();
        let store = eas.sessions.store();
        let subject = crate::commands::compose::subject_of(&copy).replace(['\r', '\n', '\0'], " ");
        let copy = SentCopy {
            user: user.to_owned(),
            message_id: message_id.to_owned(),
            device_id: if device_id.len() <= opush_storage::MAX_ID_LEN {
                device_id.replace('\0', " ")
            } else {
                String::new()
            },
            subject: opush_storage::cut_to(&subject, opush_storage::MAX_SENT_SUBJECT_LEN)
                .to_owned(),
            created_ms: at,
            // Reserved for the send's own try ([`SentCopies::save_now`]).
            last_try_ms: claim_until(try_bound(eas.imap.config())),
            tries: 0,
            next_try_ms: 0,
            last_error: None,
            bytes: copy,
        };
        if let Some(there) = pending_in_store(store, user, message_id).await {
            tracing::info!(
                user,
                message_id,
                tries = there.tries,
                "sent copy of this Message-ID already pending: taken over"
            );
            let bytes = copy.bytes;
            return KeptCopy(Job {
                copy: there,
                bytes: Some(bytes),
                stored: true,
                taken_over: true,
                ended: None,
            });
        }
        let stored = match store.put_sent_copy(copy.clone()).await {
            Ok(()) => true,
            Err(e) => {
                crate::obs::metrics::storage_error();
                tracing::warn!(user, message_id, error = %e, "sent copy not kept in the store: retried from memory only (lost if opush stops)");
                false
            }
        };
        let info = copy.info();
        KeptCopy(Job {
            copy: info,
            bytes: Some(copy.bytes),
            stored,
            taken_over: false,
            ended: None,
        })
    }

    /// The send's own try to save its kept copy in Sent, on the request's
    /// IMAP session: as the copy's owner in this process (a resumer of the
    /// same user waits its turn), with the try claimed in the store (a
    /// resumer of another process then leaves it), and only when the copy
    /// is not in Sent yet (looked for by its Message-ID: an earlier send of
    /// the same ClientId may have saved it). A taken-over row whose last
    /// try is still running elsewhere (claimed, its next try not due yet)
    /// is left to its resumer.
    pub async fn save_now(
        &self,
        eas: &EasServices,
        conn: &mut PooledSession,
        kept: &mut KeptCopy,
    ) -> SaveNow {
        let job = &mut kept.0;
        let user = job.copy.user.clone();
        let id = job.copy.message_id.clone();
        let _owner = Owner::take(&self.shared, &user, &id).await;
        let store = eas.sessions.store();
        if job.stored {
            if job.taken_over && job.due() > Instant::now() {
                return SaveNow::LeftToResumer;
            }
            let until = claim_until(try_bound(eas.imap.config()));
            let at_ms = until.max(job.copy.last_try_ms.saturating_add(1));
            match store
                .claim_sent_copy_try(&user, &id, job.copy.last_try_ms, (job.copy.tries, at_ms))
                .await
            {
                Ok(true) => job.copy.last_try_ms = at_ms,
                Ok(false) => {
                    return match pending_in_store(store, &user, &id).await {
                        Some(there) => {
                            job.copy = there;
                            SaveNow::LeftToResumer
                        }
                        None => SaveNow::Settled,
                    };
                }
                Err(e) => {
                    crate::obs::metrics::storage_error();
                    tracing::warn!(user, message_id = %id, error = %e, "sent copy's try not claimed in the store: tried anyway");
                }
            }
        }
        let bound = try_bound(eas.imap.config());
        let bytes = job.bytes.as_deref().unwrap_or_default();
        match save_once(conn, &eas.send, bytes, &id, bound).await {
            Ok(true) => SaveNow::Saved,
            Ok(false) => {
                tracing::info!(user, message_id = %id, "sent copy already in Sent (an earlier send of it)");
                SaveNow::Settled
            }
            Err(e) => {
                job.ended = (!e.uncertain).then(Instant::now);
                note_failure(store, job, &e.reason).await;
                SaveNow::Failed(e.reason)
            }
        }
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

    /// An administrator's "retry now" of a copy, made due in the store
    /// already ([`retry_now_in_store`]): this process's resumer of the
    /// user reads it again and tries it at once; without one, one starts
    /// with the IMAP master user (`[imap] master_for_requests`), else the
    /// user's next request starts it (no password is kept).
    pub fn retry_now(&self, eas: &EasServices, user: &str, message_id: &str) {
        let mut state = self.shared.lock();
        if state.stopped {
            return;
        }
        if let Some(r) = state.resumers.get_mut(user) {
            r.retry.push(message_id.to_owned());
            r.rescan = true;
            r.wake.notify_one();
            return;
        }
        state.checked.remove(user);
        drop(state);
        if eas.imap.config().master_for_requests {
            self.hand_over(eas, user, None, None);
        }
    }

    /// Starts the sweep of the store's pending copies (at start-up, then
    /// every [`sweep_every`]): with `[imap] master_for_requests` every
    /// user's copies are resumed (the master user logs in); without it,
    /// a copy waits for its user's next request ([`SentCopies::on_request`]):
    /// a WARN line says so once, and a copy still waiting at
    /// [`give_up_age`] (shortly before the store's TTL would drop it) is
    /// delivered to the user's INBOX instead, with a note, through the
    /// relay (no password needed), so it is never lost silently. The
    /// sweep also sets the `opush_sent_copies_waiting` gauge.
    pub fn resume_at_start(&self, eas: &EasServices) {
        let mut state = self.shared.lock();
        if state.stopped {
            return;
        }
        let this = SentCopies {
            shared: self.shared.clone(),
        };
        let services = Arc::new(Backends::of(eas));
        let master = eas.imap.config().master_for_requests;
        let every = sweep_every(self.shared.ttl);
        let task = tokio::spawn(async move {
            loop {
                this.sweep(&services, master).await;
                tokio::time::sleep(every).await;
            }
        });
        state.startup = Some(task);
    }

    /// One look at every pending copy of the store (see
    /// [`SentCopies::resume_at_start`]).
    async fn sweep(&self, backends: &Arc<Backends>, master: bool) {
        let all = match backends.store.all_sent_copies().await {
            Ok(all) => all,
            // A schema v2 store keeps none.
            Err(opush_storage::StorageError::SchemaMismatch(_)) => return,
            Err(e) => {
                tracing::warn!(error = %e, "pending sent copies not read from the store: looked at again later");
                return;
            }
        };
        crate::obs::metrics::set_sent_copies_waiting(all.len());
        let give_up_at =
            i64::try_from(give_up_age(self.shared.ttl).as_millis()).unwrap_or(i64::MAX);
        let mut resumed = std::collections::BTreeSet::new();
        for copy in all {
            if self.shared.lock().resumers.contains_key(&copy.user) {
                continue;
            }
            if master {
                if resumed.insert(copy.user.clone()) {
                    self.spawn_or_wake(backends, &copy.user, None, None);
                }
                continue;
            }
            let age = now_ms().saturating_sub(copy.created_ms);
            if age >= give_up_at {
                let mut job = Job::stored(copy);
                let _owner = Owner::take(&self.shared, &job.copy.user, &job.copy.message_id).await;
                let claimed = backends
                    .store
                    .claim_sent_copy_try(
                        &job.copy.user,
                        &job.copy.message_id,
                        job.copy.last_try_ms,
                        (
                            job.copy.tries,
                            claim_until(backends.bound).max(job.copy.last_try_ms.saturating_add(1)),
                        ),
                    )
                    .await;
                if matches!(claimed, Ok(true)) {
                    give_up(
                        backends,
                        &mut job,
                        "its user made no request to save it with (no IMAP master user)",
                    )
                    .await;
                }
                continue;
            }
            let mut state = self.shared.lock();
            if state.warned.len() >= MAX_CHECKED {
                state.warned.clear();
            }
            if state
                .warned
                .insert((copy.user.clone(), copy.message_id.clone()))
            {
                drop(state);
                tracing::warn!(
                    user = %copy.user,
                    message_id = %copy.message_id,
                    waiting_s = age / 1000,
                    give_up_in_s = give_up_at.saturating_sub(age) / 1000,
                    "sent copy waits for its user's next request to be saved in Sent (no IMAP master user); else delivered to the user's INBOX"
                );
            }
        }
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
                retry: Vec::new(),
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

    fn owners(&self) -> MutexGuard<'_, Owners> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A user's resumer: tries each pending copy when due until none is left.
async fn resume(shared: Arc<Shared>, backends: Arc<Backends>, user: String) {
    let mut jobs: BTreeMap<String, (Job, Instant)> = BTreeMap::new();
    loop {
        let (incoming, rescan, retry, wake) = {
            let mut state = shared.lock();
            let Some(r) = state.resumers.get_mut(&user) else {
                return;
            };
            (
                std::mem::take(&mut r.incoming),
                std::mem::take(&mut r.rescan),
                std::mem::take(&mut r.retry),
                r.wake.clone(),
            )
        };
        // Read again below, due now in the store; a copy the store does
        // not keep (memory only) is due now as it is.
        for id in retry {
            let Some((mut job, _)) = jobs.remove(&id) else {
                continue;
            };
            if !job.stored {
                tracing::info!(user, message_id = %id, "sent copy not in the store: retried now from memory");
                job.ended = None;
                jobs.insert(id, (job, Instant::now()));
            }
        }
        if rescan {
            match backends.store.sent_copies(&user).await {
                Ok(rows) => {
                    for copy in rows {
                        jobs.entry(copy.message_id.clone()).or_insert_with(|| {
                            let job = Job::stored(copy);
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
            // This process's send of the same message may be saving it:
            // one owner at a time, the next finds it in Sent.
            let _owner = Owner::take(&shared, &user, &id).await;
            let attempt = job.copy.tries + 1;
            let at_ms = claim_until(backends.bound).max(job.copy.last_try_ms.saturating_add(1));
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
                                job.copy = copy;
                                job.ended = None;
                                job.unload();
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
            job.copy.next_try_ms = 0;
            let outcome = match conn.as_mut() {
                Ok(c) => match job.load(&backends.store).await {
                    Ok(Some(bytes)) => {
                        save_once(c, &backends.settings, bytes, &id, backends.bound).await
                    }
                    Ok(None) => {
                        tracing::info!(user, message_id = %id, "sent copy no longer pending in the store");
                        jobs.remove(&id);
                        continue;
                    }
                    // Nothing was tried.
                    Err(reason) => Err(TryFailed {
                        reason,
                        uncertain: false,
                    }),
                },
                // No connection: nothing was tried.
                Err(e) => Err(TryFailed {
                    reason: e.to_string(),
                    uncertain: false,
                }),
            };
            match outcome {
                Ok(saved) => {
                    let how = if saved { "saved" } else { "found there" };
                    tracing::info!(user, message_id = %id, attempt, "sent copy {how} in Sent on a later try");
                    forget(&backends.store, job).await;
                    jobs.remove(&id);
                }
                Err(TryFailed {
                    reason: e,
                    uncertain,
                }) => {
                    job.ended = (!uncertain).then(Instant::now);
                    let age = now_ms().saturating_sub(job.copy.created_ms);
                    let too_old = u128::try_from(age).unwrap_or(0) >= shared.ttl.as_millis();
                    if attempt >= SENT_COPY_RETRIES || too_old {
                        let why = format!("not saved in Sent after {attempt} tries: {e}");
                        if !give_up(&backends, job, &why).await {
                            note_failure(&backends.store, job, &e).await;
                        }
                        jobs.remove(&id);
                        continue;
                    }
                    tracing::warn!(user, message_id = %id, attempt, error = %e, "sent copy still not saved");
                    note_failure(&backends.store, job, &e).await;
                    job.unload();
                    *at = job.due();
                }
            }
        }
    }
}

/// The copy `message_id` of `user` as the store lists it now (`None`:
/// not there any more, or the store could not be read: the copy is then
/// left to whoever holds it, and to the user's next look in the store).
async fn pending_in_store(store: &Store, user: &str, message_id: &str) -> Option<SentCopyInfo> {
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

/// The error a failed try leaves in the store: the IMAP server's answer or
/// the connection's error (never a password: [`crate::backends::imap`]
/// errors name the user at most), on one line, cut to
/// `MAX_SENT_ERROR_LEN` bytes.
pub fn error_text(reason: &str) -> String {
    let line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    opush_storage::cut_to(line.trim(), opush_storage::MAX_SENT_ERROR_LEN).to_owned()
}

/// Notes a failed try of a stored copy in its row: the error, and when the
/// next try is due ([`Job::due`]) when the try ended for sure (else 0: its
/// APPEND may still land until its claim ends, and no "retry now" may meet
/// it, [`retry_now_in_store`]). Written only while the row still holds
/// this try's claim (`Store::note_sent_copy_try`); a failure to write it
/// is logged (the listing then shows the previous try's).
async fn note_failure(store: &Store, job: &mut Job, reason: &str) {
    if !job.stored {
        return;
    }
    let note = SentCopyNote {
        last_try_ms: job.copy.last_try_ms,
        next_try_ms: if job.ended.is_some() { job.due_ms() } else { 0 },
        last_error: Some(error_text(reason)),
    };
    match store
        .note_sent_copy_try(
            &job.copy.user,
            &job.copy.message_id,
            job.copy.last_try_ms,
            note.clone(),
        )
        .await
    {
        Ok(true) => {
            job.copy.next_try_ms = note.next_try_ms;
            job.copy.last_error = note.last_error;
        }
        Ok(false) => {
            tracing::debug!(user = %job.copy.user, message_id = %job.copy.message_id, "sent copy's failed try not noted: claimed again or gone meanwhile");
        }
        Err(e) => {
            tracing::warn!(user = %job.copy.user, message_id = %job.copy.message_id, error = %e, "sent copy's failed try not noted in the store");
        }
    }
}

/// An administrator's "retry now" in the store: a copy whose last try is
/// over — its claim ended, or its claimant noted that the try ended for
/// sure (`next_try_ms` set) — is made due now for every
/// process (its `last_try_ms` set back so that [`wait_after`] its tries
/// ends now, its `next_try_ms` now; a compare-and-set like a claim, so a
/// claim landing meanwhile wins). A copy whose try is claimed and may
/// still run is left alone ([`RetryNow::Trying`]): a second APPEND must
/// never meet it.
pub async fn retry_now_in_store(
    store: &Store,
    user: &str,
    message_id: &str,
) -> Result<RetryNow, opush_storage::StorageError> {
    for _ in 0..3 {
        let Some(copy) = store
            .sent_copies(user)
            .await?
            .into_iter()
            .find(|c| c.message_id == message_id)
        else {
            return Ok(RetryNow::Gone);
        };
        let now = now_ms();
        if copy.last_try_ms > now && copy.next_try_ms == 0 {
            return Ok(RetryNow::Trying(copy.last_try_ms));
        }
        let wait = i64::try_from(wait_after(copy.tries).as_millis()).unwrap_or(0);
        let note = SentCopyNote {
            last_try_ms: now.saturating_sub(wait).min(copy.last_try_ms),
            next_try_ms: now,
            last_error: copy.last_error.clone(),
        };
        if store
            .note_sent_copy_try(user, message_id, copy.last_try_ms, note)
            .await?
        {
            return Ok(RetryNow::Due);
        }
    }
    // Claimed again each time: a try is under way.
    Ok(RetryNow::Trying(now_ms()))
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

/// How often each process looks at every pending copy of the store: a
/// quarter of the TTL, at most [`RECHECK`], at least a second.
pub fn sweep_every(ttl: Duration) -> Duration {
    (ttl / 4).clamp(Duration::from_secs(1), RECHECK)
}

/// The age at which a copy still not in Sent is delivered to its user's
/// INBOX instead: two sweeps before the store's TTL would drop it.
pub fn give_up_age(ttl: Duration) -> Duration {
    ttl.saturating_sub(sweep_every(ttl).saturating_mul(2))
}

/// A copy that cannot be saved in Sent: delivered to the user's INBOX
/// through the relay instead (null envelope sender, as a delivery
/// receipt; no password), wrapped with a note saying why, and its row
/// deleted. When the relay refuses it too, the row stays (tried again by
/// a later sweep or resume, until the store's TTL drops it): an ERROR
/// line. Whether it was delivered.
async fn give_up(backends: &Backends, job: &mut Job, why: &str) -> bool {
    let bytes = match job.load(&backends.store).await {
        Ok(Some(b)) => b.to_vec(),
        Ok(None) => return true,
        Err(e) => {
            tracing::error!(user = %job.copy.user, message_id = %job.copy.message_id, why, error = %e, "sent copy neither in Sent nor delivered to the INBOX: tried again later while the store keeps it");
            return false;
        }
    };
    job.unload();
    let user = &job.copy.user;
    let message_id = &job.copy.message_id;
    let to = backends.settings.sender(user);
    let note = inbox_note(&backends.settings, &to, &job.copy, &bytes, why);
    let rcpt = [to.address.clone()];
    let delivered = crate::backends::smtp::submit(
        &backends.settings.smtp,
        None,
        &crate::backends::smtp::Submission {
            envelope_from: "",
            recipients: &rcpt,
            message: &note,
        },
    )
    .await;
    match delivered {
        Ok(_) => {
            crate::obs::metrics::sent_copy_to_inbox();
            tracing::warn!(
                user,
                message_id,
                why,
                "sent copy not saved in Sent: delivered to the user's INBOX instead, with a note"
            );
            forget(&backends.store, job).await;
            true
        }
        Err(e) => {
            tracing::error!(user, message_id, why, error = %e, "sent copy neither in Sent nor delivered to the INBOX: tried again later while the store keeps it");
            false
        }
    }
}

/// The message delivered to the INBOX for a copy that could not be saved
/// in Sent: a short note, and the sent message attached as it is
/// (`message/rfc822`). Its Message-ID derives from the sent one, so a
/// second delivery of it is recognisably the same.
fn inbox_note(
    settings: &SendSettings,
    to: &crate::outgoing::Sender,
    copy: &SentCopyInfo,
    bytes: &[u8],
    why: &str,
) -> Vec<u8> {
    let subject = crate::commands::compose::subject_of(bytes);
    let mut boundary = format!("opush-sent-copy-{}", copy.created_ms);
    while bytes
        .windows(boundary.len())
        .any(|w| w == boundary.as_bytes())
    {
        boundary.push('x');
    }
    let date = crate::dates::rfc5322_date(now_ms() / 1000);
    let sent = crate::dates::rfc5322_date(copy.created_ms / 1000);
    let clean = |s: &str| s.replace(['\r', '\n'], " ");
    let mut out = format!(
        "From: Mail Delivery System <postmaster@{host}>\r\n\
         To: <{to}>\r\n\
         Subject: Not saved in Sent: {subject}\r\n\
         Date: {date}\r\n\
         Message-ID: <inbox-copy.{id}>\r\n\
         Auto-Submitted: auto-generated\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/mixed; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n\
         The message attached was sent on {sent}, but could not be saved in\r\n\
         your Sent folder ({why}).\r\n\
         It is delivered here instead so that you keep a copy: move it to Sent if\r\n\
         you like. Its recipients received it as usual.\r\n\r\n\
         --{boundary}\r\n\
         Content-Type: message/rfc822\r\n\
         Content-Transfer-Encoding: 8bit\r\n\
         Content-Disposition: attachment; filename=\"sent-message.eml\"\r\n\r\n",
        host = clean(&settings.host),
        to = clean(&to.address),
        subject = clean(&subject),
        id = clean(&copy.message_id),
        why = clean(why),
    )
    .into_bytes();
    out.extend_from_slice(bytes);
    if !bytes.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    out
}

/// A try that did not save the copy.
struct TryFailed {
    reason: String,
    /// Its APPEND may still land (cut by the try's bound, or the
    /// connection lost mid-command): the next try waits for the end of
    /// the claim ([`Job::due`]).
    uncertain: bool,
}

/// One try, bounded by `bound` ([`try_bound`]; a try still running then is
/// dropped, and its connection with it): `Ok(false)` when the copy is in
/// Sent already, `Ok(true)` once saved.
async fn save_once(
    conn: &mut PooledSession,
    settings: &SendSettings,
    copy: &[u8],
    message_id: &str,
    bound: Duration,
) -> Result<bool, TryFailed> {
    match tokio::time::timeout(bound, save_in_sent(conn, settings, copy, message_id)).await {
        Ok(Ok(saved)) => Ok(saved),
        Ok(Err(e)) => Err(TryFailed {
            uncertain: matches!(e, ImapError::Unavailable(_) | ImapError::Protocol(_)),
            reason: e.to_string(),
        }),
        Err(_) => Err(TryFailed {
            reason: format!("the try took longer than {bound:?}: given up"),
            uncertain: true,
        }),
    }
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
