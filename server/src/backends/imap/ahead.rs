//! Messages read ahead for a device's next Sync window.
//!
//! During an initial sync a device asks window after window. As soon as
//! the engine has decided one window, the server can fetch the messages
//! the next windows will most likely carry ([`DEPTH`] windows ahead, one
//! after the other on one pooled connection, the device's lane, so Dovecot
//! is kept busy by one session, as by a raw fetch: each further session
//! reading a big maildir folder pays for its UID list again), while it
//! renders and records this one and the device reads it. This is
//! only a cache of IMAP data: an entry holds, keyed by device, mailbox,
//! UIDVALIDITY and UID, each message's metadata (`UID FLAGS MODSEQ
//! INTERNALDATE RFC822.SIZE`) and whole body (`BODY.PEEK[]`). A message's
//! content, size and INTERNALDATE never change under one UIDVALIDITY (RFC
//! 3501 2.3.1.1), so a cached body is always the one a fetch would return;
//! its flags may change, so a window uses cached flags only when their
//! version is the one the engine decided to send (`commands::sync`), and
//! fetches them otherwise. Which items a window carries is still decided by
//! the engine: the guess only decides what is fetched early; a message it
//! missed is fetched as usual and a guess the window does not use is
//! dropped.
//!
//! An initial sync's SyncKey 0 lists the whole folder (`UID FLAGS MODSEQ
//! RFC822.SIZE`, and INTERNALDATE when a FilterType window needs it: see
//! `commands::sync::observe`); that listing is kept per device (one, at
//! most [`MAX_LISTED`] messages, counted against [`MAX_TOTAL_BYTES`],
//! dropped with the sync's end or unused for [`MAX_AGE`]), and a
//! read-ahead whose messages it all lists fetches only their bodies (with
//! their INTERNALDATE when the listing had none): the same rule as for any
//! cached metadata applies to its flags.
//!
//! Bounds: at most [`DEPTH`] entries per device (a new guess beyond them
//! replaces the oldest), each at most [`MAX_ENTRY_BYTES`] (RFC822.SIZE, asked before the bodies; a
//! message above the caller's size limit is not read ahead), all together
//! at most [`MAX_TOTAL_BYTES`] (an entry reserves the most it may hold
//! until its sizes are known, then what it holds; no new read-ahead beyond
//! the total), and an entry not used within [`MAX_AGE`] is dropped. The
//! fetching task gives its connection back to the pool, marked for the
//! device's lane, before it reports the fetch done, so the device's next
//! read-ahead finds it idle. Must
//! not: block a request on a read-ahead for longer than the IMAP timeout,
//! or log message content.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{ImapError, MessageMeta, PooledSession};

/// Windows read ahead per device: entries held (or fetching) at once.
pub const DEPTH: usize = 2;
/// Most bytes (RFC822.SIZE) one read-ahead entry holds.
pub const MAX_ENTRY_BYTES: u64 = 8 * 1024 * 1024;
/// Most bytes all read-aheads hold together.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// An entry not taken within this is dropped.
pub const MAX_AGE: Duration = Duration::from_secs(30);
/// Most messages a kept listing holds (a bigger one is not kept).
pub const MAX_LISTED: usize = 200_000;
/// What one message of a kept listing counts against [`MAX_TOTAL_BYTES`].
const LISTED_BYTES: u64 = 128;

/// What a read-ahead fetched: metadata and whole messages by UID. A UID
/// may have its metadata without its body (cut by the bounds); a UID
/// missing from both vanished or was never asked.
#[derive(Debug, Default)]
pub struct Fetched {
    /// Metadata by UID, as fetched (flags possibly stale by now).
    pub metas: super::UidMap<MessageMeta>,
    /// Whole messages (`BODY.PEEK[]`) by UID.
    pub bodies: super::UidMap<Vec<u8>>,
}

/// Where a read-ahead is.
#[derive(Clone)]
enum Phase {
    /// Waiting for a pooled connection: a request does not wait for it
    /// (the connection it would wait for may be its own).
    Connecting,
    /// Fetching: a request waits for it.
    Fetching,
    /// Done (its connection is back in the pool).
    Done(Arc<Mutex<Fetched>>),
}

struct Entry {
    mailbox: String,
    uidvalidity: u32,
    uids: Vec<u32>,
    since: Instant,
    /// Bytes reserved against [`MAX_TOTAL_BYTES`]: the most the entry may
    /// hold until its sizes are known, then what it holds. Shared with the
    /// fetching task, which lowers it; given back (swapped to 0) once.
    reserved: Arc<AtomicU64>,
    phase: watch::Receiver<Phase>,
}

/// The metadata of every message of a mailbox, as an initial sync's
/// SyncKey 0 listed it: what its read-aheads need not fetch again (flags
/// possibly stale by now: used as any read-ahead metadata, see the module
/// docs).
struct Listing {
    mailbox: String,
    uidvalidity: u32,
    metas: Arc<super::UidMap<MessageMeta>>,
    /// Last used.
    since: Instant,
    /// Counted against [`MAX_TOTAL_BYTES`].
    bytes: u64,
}

/// The read-ahead cache (shared by every request; cheap to clone).
#[derive(Clone, Default)]
pub struct ReadAhead {
    /// Entries by device, oldest first, at most [`DEPTH`] each.
    entries: Arc<Mutex<HashMap<String, Vec<Entry>>>>,
    total: Arc<AtomicU64>,
    /// Listings by device, one each.
    listings: Arc<Mutex<HashMap<String, Listing>>>,
    /// Lanes by device, one each (of the mailbox it reads ahead).
    lanes: Arc<Mutex<HashMap<String, LaneSlot>>>,
}

/// The order a device's read-aheads of one mailbox fetch in: one after
/// the other, each on the connection the one before used (the pool keeps
/// it marked for this lane, see `ImapPool::get_lane`), so one Dovecot
/// session serves a whole initial sync, as one does the raw fetch. On
/// Dovecot's maildir a session's first read of a folder's messages costs
/// it 15-25 ms of CPU at 10,000 messages (it reads the folder's UID
/// list), so each further session reading ahead cost that again, and a
/// login; Dovecot was the initial sync's bottleneck (docs/BENCHMARKS.md,
/// session 12). Taking turns costs little waiting: a device asks its
/// windows one after the other, and the next read-ahead is queued while
/// this one is fetched. Between turns the connection is in the pool, so
/// the user's requests can still have it when no other is idle.
#[derive(Default)]
struct Lane {
    /// The end of the queue: done when the read-ahead started last is.
    /// Each read-ahead joins the queue when it starts, so turns go in
    /// that order.
    tail: Mutex<Option<tokio::sync::oneshot::Receiver<()>>>,
    /// Whether its turns have a connection: one opened for them, or the
    /// last turn's (the pool keeps it for the lane). A read-ahead joining
    /// a live lane needs no connection a request may be holding, so
    /// requests wait for it from its start, as for one with a connection
    /// opened for it.
    live: std::sync::atomic::AtomicBool,
}

/// A read-ahead's place in its lane: what it waits for (the previous
/// one's end; nothing for the first) and what it signals when done.
type Turn = (
    Option<tokio::sync::oneshot::Receiver<()>>,
    tokio::sync::oneshot::Sender<()>,
);

impl Lane {
    fn join(&self) -> Turn {
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        let (done, next) = tokio::sync::oneshot::channel();
        (tail.replace(next), done)
    }
}

struct LaneSlot {
    mailbox: String,
    uidvalidity: u32,
    lane: Arc<Lane>,
    /// Last given a read-ahead.
    since: Instant,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("bytes", &self.total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReadAhead {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<Entry>>> {
        // A poisoned map only means a request panicked while holding this
        // short lock; the map itself is consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, entry: &Entry) {
        let bytes = entry.reserved.swap(0, Ordering::Relaxed);
        self.total.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes reserved by the entries and listings now held.
    pub fn bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    fn lock_listings(&self) -> std::sync::MutexGuard<'_, HashMap<String, Listing>> {
        self.listings.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `metas`, the full listing of `mailbox` under `uidvalidity`
    /// just observed for `device`, for its next read-aheads (they then
    /// fetch the bodies alone), in place of the device's previous one.
    /// Not kept beyond [`MAX_LISTED`] messages or when the cache is full.
    pub fn keep_listing(
        &self,
        device: String,
        (mailbox, uidvalidity): (String, u32),
        metas: Vec<MessageMeta>,
    ) {
        let old = self.lock_listings().remove(&device);
        if let Some(old) = old {
            self.total.fetch_sub(old.bytes, Ordering::Relaxed);
        }
        if metas.len() > MAX_LISTED {
            return;
        }
        let bytes = metas.len() as u64 * LISTED_BYTES;
        if self.total.fetch_add(bytes, Ordering::Relaxed) + bytes > MAX_TOTAL_BYTES {
            self.total.fetch_sub(bytes, Ordering::Relaxed);
            return;
        }
        let listing = Listing {
            mailbox,
            uidvalidity,
            metas: Arc::new(metas.into_iter().map(|m| (m.uid, m)).collect()),
            since: Instant::now(),
            bytes,
        };
        let replaced = self.lock_listings().insert(device, listing);
        if let Some(old) = replaced {
            self.total.fetch_sub(old.bytes, Ordering::Relaxed);
        }
    }

    /// `device`'s kept listing of `mailbox` under `uidvalidity`, if any.
    fn listed(
        &self,
        device: &str,
        mailbox: &str,
        uidvalidity: u32,
    ) -> Option<Arc<super::UidMap<MessageMeta>>> {
        let mut listings = self.lock_listings();
        let l = listings
            .get_mut(device)
            .filter(|l| l.mailbox == mailbox && l.uidvalidity == uidvalidity)?;
        l.since = Instant::now();
        Some(l.metas.clone())
    }

    /// Drops the listings unused for [`MAX_AGE`] and, with `of`, that
    /// device's listing of that mailbox.
    fn drop_listings(&self, of: Option<(&str, &str)>, now: Instant) {
        let mut freed = 0;
        self.lock_listings().retain(|d, l| {
            let gone = of.is_some_and(|(device, mailbox)| d == device && l.mailbox == mailbox)
                || now.duration_since(l.since) > MAX_AGE;
            if gone {
                freed += l.bytes;
            }
            !gone
        });
        self.total.fetch_sub(freed, Ordering::Relaxed);
    }

    /// How many entries `device` has (held or fetching), of any mailbox.
    pub fn entries(&self, device: &str) -> usize {
        self.lock().get(device).map_or(0, Vec::len)
    }

    /// The UIDs of `mailbox` (under `uidvalidity`) that `device`'s entries
    /// read ahead or are reading ahead, and how many entries it has (of
    /// any mailbox): what a new guess need not start again, and whether
    /// there is room for one.
    pub fn covered(&self, device: &str, mailbox: &str, uidvalidity: u32) -> (super::UidSet, usize) {
        let entries = self.lock();
        let Some(list) = entries.get(device) else {
            return Default::default();
        };
        let mut uids = super::UidSet::default();
        for e in list
            .iter()
            .filter(|e| e.mailbox == mailbox && e.uidvalidity == uidvalidity)
        {
            match &*e.phase.borrow() {
                // Done: what it holds (the bounds may have left some out).
                Phase::Done(f) => {
                    let f = f.lock().unwrap_or_else(|e| e.into_inner());
                    uids.extend(f.bodies.keys().copied());
                }
                Phase::Connecting | Phase::Fetching => uids.extend(e.uids.iter().copied()),
            }
        }
        (uids, list.len())
    }

    /// Starts reading ahead, for `device`, the messages `uids` of `mailbox`
    /// (UIDVALIDITY `uidvalidity`) in a background task, on the session
    /// `connect` gives (one of this device's user, from the pool: the task
    /// waits for it, the caller does not). Their metadata is asked first:
    /// messages above `max_message_bytes` (the caller gives Sync's large
    /// message size) are left out and the bodies are
    /// cut at [`MAX_ENTRY_BYTES`]. Nothing starts when the cache is full.
    /// Beside the device's other entries; the oldest is dropped when it
    /// has [`DEPTH`] already. With `opened`, `connect` gives a connection
    /// opened for this purpose beforehand (not one a request may be
    /// holding), so a request waits for the entry from the start; so it
    /// does when the device's lane is live (its turns have a connection:
    /// this one waits for it, see `Lane` below).
    pub fn start<C>(
        &self,
        device: String,
        (mailbox, uidvalidity): (String, u32),
        uids: Vec<u32>,
        (max_message_bytes, opened): (u64, bool),
        connect: C,
    ) where
        C: std::future::Future<Output = Result<PooledSession, ImapError>> + Send + 'static,
    {
        if uids.is_empty() {
            return;
        }
        // Each entry reserves the most it may hold until its sizes are known.
        if self.total.fetch_add(MAX_ENTRY_BYTES, Ordering::Relaxed) + MAX_ENTRY_BYTES
            > MAX_TOTAL_BYTES
        {
            self.total.fetch_sub(MAX_ENTRY_BYTES, Ordering::Relaxed);
            self.sweep();
            return;
        }
        let listed = self.listed(&device, &mailbox, uidvalidity);
        let reserved = Arc::new(AtomicU64::new(MAX_ENTRY_BYTES));
        let lane = self.lane(&device, &mailbox, uidvalidity);
        if opened {
            lane.live.store(true, Ordering::SeqCst);
        }
        let waited_for = lane.live.load(Ordering::SeqCst);
        let (turn, done) = lane.join();
        let lane_name = device.clone();
        let (tx, rx) = watch::channel(if waited_for {
            Phase::Fetching
        } else {
            Phase::Connecting
        });
        {
            let mut entries = self.lock();
            let now = Instant::now();
            self.drop_stale(&mut entries, now);
            let list = entries.entry(device).or_default();
            while list.len() >= DEPTH {
                let old = list.remove(0);
                self.release(&old);
            }
            list.push(Entry {
                mailbox: mailbox.clone(),
                uidvalidity,
                uids: uids.clone(),
                since: now,
                reserved: reserved.clone(),
                phase: rx,
            });
        }
        let total = self.total.clone();
        // On behalf of the request's device (a login it makes names it).
        tokio::spawn(crate::origin::carry(async move {
            // This lane's turn: after the read-aheads started before (the
            // one before ended, or was dropped), on the connection they
            // used when it is idle.
            if let Some(previous) = turn {
                let _ = previous.await;
            }
            let connected = connect.await;
            lane.live.store(connected.is_ok(), Ordering::SeqCst);
            let fetched = match connected {
                // Taken or dropped while it waited (the window did not
                // wait for it, or the sync ended): nobody will read what
                // it would fetch.
                Ok(imap) if tx.is_closed() => {
                    drop(imap);
                    drop(done);
                    return;
                }
                Ok(mut imap) => {
                    let _ = tx.send(Phase::Fetching);
                    let limits = Limits {
                        max_message_bytes,
                        reserved: &reserved,
                        total: &total,
                    };
                    let what = (mailbox.as_str(), uidvalidity, uids.as_slice());
                    let res = fetch_bounded(&mut imap, what, listed.as_deref(), limits).await;
                    // Back to the pool, marked for the lane's next turn,
                    // before anyone hears of it (a connection that failed
                    // is dropped there).
                    imap.mark_lane(&lane_name);
                    drop(imap);
                    drop(done);
                    res
                }
                Err(e) => Err(e),
            };
            let fetched = fetched.unwrap_or_else(|e| {
                tracing::debug!(target: "BACKEND", error = %e, "read-ahead failed");
                Fetched::default()
            });
            let _ = tx.send(Phase::Done(Arc::new(Mutex::new(fetched))));
        }));
    }

    /// What was read ahead for `device` among `uids` of `mailbox` under
    /// `uidvalidity`, waiting (at most `wait` in all) for fetches still
    /// running, not for those still waiting for a connection. Every entry
    /// of the device that holds any of `uids` gives them up; the messages
    /// it holds beyond them stay, as an entry of their own, for the next
    /// windows (a window smaller than the guess, or cut by bytes), and the
    /// device's other entries stay as they are.
    pub async fn take(
        &self,
        device: &str,
        mailbox: &str,
        uidvalidity: u32,
        uids: &[u32],
        wait: Duration,
    ) -> Fetched {
        let wanted: super::UidSet = uids.iter().copied().collect();
        let taken: Vec<Entry> = {
            let mut entries = self.lock();
            let Some(list) = entries.get_mut(device) else {
                return Fetched::default();
            };
            let (fit, rest): (Vec<Entry>, Vec<Entry>) =
                std::mem::take(list).into_iter().partition(|e| {
                    e.mailbox == mailbox
                        && e.uidvalidity == uidvalidity
                        && e.uids.iter().any(|u| wanted.contains(u))
                });
            if rest.is_empty() {
                entries.remove(device);
            } else {
                *list = rest;
            }
            fit
        };
        let deadline = Instant::now() + wait;
        let mut out = Fetched::default();
        for entry in taken {
            self.release(&entry);
            let mut phase = entry.phase;
            let ready = tokio::time::timeout_at(
                deadline,
                phase.wait_for(|p| !matches!(p, Phase::Fetching)),
            )
            .await;
            let done = match ready {
                Ok(Ok(p)) => match &*p {
                    Phase::Done(f) => f.clone(),
                    Phase::Connecting | Phase::Fetching => continue,
                },
                _ => continue,
            };
            let rest = {
                let mut all = done.lock().unwrap_or_else(|e| e.into_inner());
                for uid in uids {
                    if let Some(m) = all.metas.remove(uid) {
                        out.metas.insert(*uid, m);
                    }
                    if let Some(b) = all.bodies.remove(uid) {
                        out.bodies.insert(*uid, b);
                    }
                }
                let bodies = std::mem::take(&mut all.bodies);
                let metas = std::mem::take(&mut all.metas)
                    .into_iter()
                    .filter(|(uid, _)| bodies.contains_key(uid))
                    .collect();
                Fetched { metas, bodies }
            };
            if !rest.bodies.is_empty() {
                self.put_back(device, &entry.mailbox, uidvalidity, entry.since, rest);
            }
        }
        out
    }

    fn lock_lanes(&self) -> std::sync::MutexGuard<'_, HashMap<String, LaneSlot>> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `device`'s lane for `mailbox` under `uidvalidity`, a new one in
    /// place of any other.
    fn lane(&self, device: &str, mailbox: &str, uidvalidity: u32) -> Arc<Lane> {
        let now = Instant::now();
        let mut lanes = self.lock_lanes();
        lanes.retain(|_, l| now.duration_since(l.since) <= MAX_AGE);
        let slot = lanes.entry(device.to_owned()).or_insert_with(|| LaneSlot {
            mailbox: mailbox.to_owned(),
            uidvalidity,
            lane: Arc::default(),
            since: now,
        });
        if slot.mailbox != mailbox || slot.uidvalidity != uidvalidity {
            slot.mailbox = mailbox.to_owned();
            slot.uidvalidity = uidvalidity;
            slot.lane = Arc::default();
        }
        slot.since = now;
        slot.lane.clone()
    }

    /// How many devices have a lane (for tests).
    pub fn lanes(&self) -> usize {
        self.lock_lanes().len()
    }

    /// Drops `device`'s entries of `mailbox` (its sync of it is done: what
    /// they still hold will not be asked for), and its lane.
    pub fn forget(&self, device: &str, mailbox: &str) {
        {
            let mut lanes = self.lock_lanes();
            if lanes.get(device).is_some_and(|l| l.mailbox == mailbox) {
                lanes.remove(device);
            }
        }
        self.drop_listings(Some((device, mailbox)), Instant::now());
        let mut entries = self.lock();
        let Some(list) = entries.get_mut(device) else {
            return;
        };
        list.retain(|e| {
            let keep = e.mailbox != mailbox;
            if !keep {
                self.release(e);
            }
            keep
        });
        if list.is_empty() {
            entries.remove(device);
        }
    }

    /// Keeps `rest`, the messages of a taken entry its window did not use,
    /// as the device's oldest entry (its age counted from the original
    /// start), reserving the bytes it holds.
    fn put_back(
        &self,
        device: &str,
        mailbox: &str,
        uidvalidity: u32,
        since: Instant,
        rest: Fetched,
    ) {
        let bytes: u64 = rest.bodies.values().map(|b| b.len() as u64).sum();
        let mut uids: Vec<u32> = rest.bodies.keys().copied().collect();
        uids.sort_unstable();
        let (tx, rx) = watch::channel(Phase::Done(Arc::new(Mutex::new(rest))));
        // The receiver keeps the last value: nothing more will be sent.
        drop(tx);
        self.total.fetch_add(bytes, Ordering::Relaxed);
        let entry = Entry {
            mailbox: mailbox.to_owned(),
            uidvalidity,
            uids,
            since,
            reserved: Arc::new(AtomicU64::new(bytes)),
            phase: rx,
        };
        let mut entries = self.lock();
        let list = entries.entry(device.to_owned()).or_default();
        list.insert(0, entry);
        while list.len() > DEPTH {
            if let Some(newest) = list.pop() {
                self.release(&newest);
            }
        }
    }

    /// The UIDs whose metadata and body `device`'s read-ahead holds, once
    /// its entries are done (waiting at most `wait` in all, whatever their
    /// phase), sorted; those of an entry not done by then are left out.
    /// The entries stay. For tests and diagnostics.
    pub async fn held(&self, device: &str, wait: Duration) -> Vec<u32> {
        let phases: Vec<watch::Receiver<Phase>> = self
            .lock()
            .get(device)
            .map(|list| list.iter().map(|e| e.phase.clone()).collect())
            .unwrap_or_default();
        let deadline = Instant::now() + wait;
        let mut uids = Vec::new();
        for mut phase in phases {
            let done =
                tokio::time::timeout_at(deadline, phase.wait_for(|p| matches!(p, Phase::Done(_))));
            let fetched = match done.await {
                Ok(Ok(p)) => match &*p {
                    Phase::Done(f) => f.clone(),
                    Phase::Connecting | Phase::Fetching => continue,
                },
                _ => continue,
            };
            let f = fetched.lock().unwrap_or_else(|e| e.into_inner());
            uids.extend(f.bodies.keys().filter(|u| f.metas.contains_key(u)));
        }
        uids.sort_unstable();
        uids
    }

    /// Drops entries older than [`MAX_AGE`].
    fn sweep(&self) {
        self.drop_listings(None, Instant::now());
        let now = Instant::now();
        self.lock_lanes()
            .retain(|_, l| now.duration_since(l.since) <= MAX_AGE);
        let mut entries = self.lock();
        self.drop_stale(&mut entries, Instant::now());
    }

    /// Drops the entries of `entries` (held locked) older than [`MAX_AGE`]
    /// at `now`, giving their reservations back.
    fn drop_stale(&self, entries: &mut HashMap<String, Vec<Entry>>, now: Instant) {
        entries.retain(|_, list| {
            list.retain(|e| {
                let keep = now.duration_since(e.since) <= MAX_AGE;
                if !keep {
                    self.release(e);
                }
                keep
            });
            !list.is_empty()
        });
    }
}

/// The bounds of one read-ahead's fetch.
struct Limits<'a> {
    /// Bigger messages are not read ahead: Sync renders them from their
    /// skeleton, read a chunk at a time (`commands::sync::large_above`,
    /// lower than `[imap] max_message_bytes`).
    max_message_bytes: u64,
    /// The entry's reservation, lowered to what it holds once the sizes are known.
    reserved: &'a AtomicU64,
    /// The cache's total.
    total: &'a AtomicU64,
}

/// Metadata first (from `listed`, the device's kept listing, when it has
/// every UID: then no FETCH), then the leading messages that fit in
/// [`MAX_ENTRY_BYTES`] in one `UID FETCH`; checks UIDVALIDITY. A listed
/// message whose body does not come back was expunged since: left out.
async fn fetch_bounded(
    imap: &mut PooledSession,
    (mailbox, uidvalidity, uids): (&str, u32, &[u32]),
    listed: Option<&super::UidMap<MessageMeta>>,
    limits: Limits<'_>,
) -> Result<Fetched, ImapError> {
    let known: Option<super::UidMap<MessageMeta>> =
        listed.and_then(|l| uids.iter().map(|u| Some((*u, l.get(u)?.clone()))).collect());
    let from_listing = known.is_some();
    let mut metas = match known {
        Some(metas) => metas,
        None => {
            let metas = imap.fetch_meta(mailbox, uids).await?;
            if imap.selected_uidvalidity(mailbox) != Some(uidvalidity) {
                return Ok(Fetched::default());
            }
            metas.into_iter().map(|m| (m.uid, m)).collect()
        }
    };
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for uid in uids {
        let Some(size) = metas.get(uid).map(|m| u64::from(m.size)) else {
            continue;
        };
        if size > limits.max_message_bytes {
            continue;
        }
        if bytes + size > MAX_ENTRY_BYTES {
            break;
        }
        bytes += size;
        batch.push(*uid);
    }
    // Keep reserved only what the entry will hold (unless already released:
    // the entry was taken or replaced meanwhile, and gave its bytes back).
    let lowered = limits
        .reserved
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| {
            (r > 0).then_some(bytes.min(r))
        });
    if let Ok(was) = lowered {
        limits
            .total
            .fetch_sub(was - bytes.min(was), Ordering::Relaxed);
    }
    // A listing made without dates: the bodies come with them.
    let dated = batch
        .iter()
        .any(|u| metas.get(u).is_some_and(|m| !m.is_dated()));
    let (bodies, dates) = imap.fetch_messages_dated(mailbox, &batch, dated).await?;
    if imap.selected_uidvalidity(mailbox) != Some(uidvalidity) {
        return Ok(Fetched::default());
    }
    for (uid, date) in dates {
        if let Some(m) = metas.get_mut(&uid) {
            m.internal_date = date;
        }
    }
    if from_listing {
        let asked: super::UidSet = batch.iter().copied().collect();
        metas.retain(|uid, _| bodies.contains_key(uid) || !asked.contains(uid));
    }
    Ok(Fetched { metas, bodies })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metas(n: u32) -> Vec<MessageMeta> {
        (1..=n)
            .map(|uid| MessageMeta {
                uid,
                size: 100,
                ..MessageMeta::default()
            })
            .collect()
    }

    #[test]
    fn a_kept_listing_is_counted_replaced_and_forgotten() {
        let cache = ReadAhead::default();
        cache.keep_listing("d1".into(), ("INBOX".into(), 7), metas(10));
        assert_eq!(cache.bytes(), 10 * LISTED_BYTES);
        assert_eq!(cache.listed("d1", "INBOX", 7).map(|l| l.len()), Some(10));
        // Another mailbox or UIDVALIDITY, another device: not this listing.
        assert!(cache.listed("d1", "INBOX", 8).is_none());
        assert!(cache.listed("d1", "Sent", 7).is_none());
        assert!(cache.listed("d2", "INBOX", 7).is_none());
        // A device's next listing replaces its previous one.
        cache.keep_listing("d1".into(), ("INBOX".into(), 7), metas(4));
        assert_eq!(cache.bytes(), 4 * LISTED_BYTES);
        cache.keep_listing("d2".into(), ("INBOX".into(), 7), metas(3));
        assert_eq!(cache.bytes(), 7 * LISTED_BYTES);
        // The end of a device's sync of the mailbox drops its listing only.
        cache.forget("d1", "Sent");
        assert_eq!(cache.bytes(), 7 * LISTED_BYTES);
        cache.forget("d1", "INBOX");
        assert_eq!(cache.bytes(), 3 * LISTED_BYTES);
        assert!(cache.listed("d1", "INBOX", 7).is_none());
        assert!(cache.listed("d2", "INBOX", 7).is_some());
    }

    #[test]
    fn a_listing_beyond_the_bounds_is_not_kept() {
        let cache = ReadAhead::default();
        let too_many = MAX_LISTED as u32 + 1;
        cache.keep_listing("d1".into(), ("INBOX".into(), 7), metas(too_many));
        assert_eq!(cache.bytes(), 0);
        assert!(cache.listed("d1", "INBOX", 7).is_none());
        // Nor one that would take the cache past its total.
        cache
            .total
            .store(MAX_TOTAL_BYTES - LISTED_BYTES, Ordering::Relaxed);
        cache.keep_listing("d1".into(), ("INBOX".into(), 7), metas(2));
        assert!(cache.listed("d1", "INBOX", 7).is_none());
        assert_eq!(cache.bytes(), MAX_TOTAL_BYTES - LISTED_BYTES);
    }
}
