//! Message bodies read ahead for a device's next Sync window.
//!
//! During an initial sync a device asks window after window; while it
//! reads one answer, the server can already fetch the messages the next
//! window will most likely carry. This is only a cache of IMAP data: an
//! entry holds whole messages (`BODY.PEEK[]`) keyed by device, mailbox,
//! UIDVALIDITY and UID — and a message's content never changes under one
//! UIDVALIDITY (RFC 3501 2.3.1.1), so a cached body is always the one a
//! fetch would return. Flags are never cached (each window fetches them),
//! and which items a window carries is still decided by the engine: the
//! guess only decides what is fetched early; a message it missed is
//! fetched as usual and a guess the window does not use is dropped.
//!
//! Bounds: one entry per device (a new guess replaces the old), each at
//! most [`MAX_ENTRY_BYTES`] (RFC822.SIZE, checked before the fetch), all
//! together at most [`MAX_TOTAL_BYTES`] (no new read-ahead beyond it), and
//! an entry not used within [`MAX_AGE`] is dropped. Must not: block a
//! request on a read-ahead for longer than the IMAP timeout, or log
//! message content.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

use super::{ImapError, PooledSession};

/// Most bytes (RFC822.SIZE) one device's read-ahead holds.
pub const MAX_ENTRY_BYTES: u64 = 8 * 1024 * 1024;
/// Most bytes all read-aheads hold together.
pub const MAX_TOTAL_BYTES: u64 = 64 * 1024 * 1024;
/// An entry not taken within this is dropped.
pub const MAX_AGE: Duration = Duration::from_secs(30);

/// Where a read-ahead is.
#[derive(Clone)]
enum Phase {
    /// Waiting for a pooled connection: a request does not wait for it
    /// (the connection it would wait for may be its own).
    Connecting,
    /// Fetching: a request waits for it.
    Fetching,
    /// Done: bodies by UID.
    Done(Arc<Mutex<HashMap<u32, Vec<u8>>>>),
}

struct Entry {
    mailbox: String,
    uidvalidity: u32,
    uids: Vec<u32>,
    since: Instant,
    /// Bytes reserved against [`MAX_TOTAL_BYTES`] (released on drop of the entry).
    reserved: u64,
    phase: watch::Receiver<Phase>,
}

/// The read-ahead cache (shared by every request; cheap to clone).
#[derive(Clone, Default)]
pub struct ReadAhead {
    entries: Arc<Mutex<HashMap<String, Entry>>>,
    total: Arc<AtomicU64>,
}

impl std::fmt::Debug for ReadAhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReadAhead")
            .field("bytes", &self.total.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl ReadAhead {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // A poisoned map only means a request panicked while holding this
        // short lock; the map itself is consistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn release(&self, entry: &Entry) {
        self.total.fetch_sub(entry.reserved, Ordering::Relaxed);
    }

    /// Bytes reserved by the entries now held.
    pub fn bytes(&self) -> u64 {
        self.total.load(Ordering::Relaxed)
    }

    /// Starts reading ahead, for `device`, the messages `uids` of `mailbox`
    /// (UIDVALIDITY `uidvalidity`) in a background task, on the session
    /// `connect` gives (one of this device's user, from the pool: the task
    /// waits for it, the caller does not). Their sizes are asked first: the
    /// batch is cut at [`MAX_ENTRY_BYTES`]. Nothing starts when the cache is
    /// full. Replaces the device's previous entry.
    pub fn start<C>(
        &self,
        device: String,
        mailbox: String,
        uidvalidity: u32,
        uids: Vec<u32>,
        connect: C,
    ) where
        C: std::future::Future<Output = Result<PooledSession, ImapError>> + Send + 'static,
    {
        if uids.is_empty() {
            return;
        }
        // Each entry reserves the most it may hold.
        let reserved = MAX_ENTRY_BYTES;
        if self.total.fetch_add(reserved, Ordering::Relaxed) + reserved > MAX_TOTAL_BYTES {
            self.total.fetch_sub(reserved, Ordering::Relaxed);
            self.sweep();
            return;
        }
        let (tx, rx) = watch::channel(Phase::Connecting);
        {
            let mut entries = self.lock();
            let now = Instant::now();
            self.drop_stale(&mut entries, now);
            let entry = Entry {
                mailbox: mailbox.clone(),
                uidvalidity,
                uids: uids.clone(),
                since: now,
                reserved,
                phase: rx,
            };
            if let Some(old) = entries.insert(device, entry) {
                self.release(&old);
            }
        }
        tokio::spawn(async move {
            let fetched = match connect.await {
                Ok(mut imap) => {
                    let _ = tx.send(Phase::Fetching);
                    fetch_bounded(&mut imap, &mailbox, uidvalidity, &uids).await
                }
                Err(e) => Err(e),
            };
            let bodies = match fetched {
                Ok(b) => b,
                Err(e) => {
                    tracing::debug!(target: "BACKEND", error = %e, "read-ahead failed");
                    HashMap::new()
                }
            };
            let _ = tx.send(Phase::Done(Arc::new(Mutex::new(bodies))));
        });
    }

    /// The bodies read ahead for `device` among `uids` of `mailbox` under
    /// `uidvalidity`, waiting (at most `wait`) for a fetch still running,
    /// not for one still waiting for a connection. The device's entry is
    /// consumed; bodies of other UIDs are dropped.
    pub async fn take(
        &self,
        device: &str,
        mailbox: &str,
        uidvalidity: u32,
        uids: &[u32],
        wait: Duration,
    ) -> HashMap<u32, Vec<u8>> {
        let entry = {
            let mut entries = self.lock();
            let fits = entries.get(device).is_some_and(|e| {
                e.mailbox == mailbox
                    && e.uidvalidity == uidvalidity
                    && uids.iter().any(|u| e.uids.contains(u))
            });
            if !fits {
                return HashMap::new();
            }
            match entries.remove(device) {
                Some(e) => e,
                None => return HashMap::new(),
            }
        };
        self.release(&entry);
        let mut phase = entry.phase;
        let ready =
            tokio::time::timeout(wait, phase.wait_for(|p| !matches!(p, Phase::Fetching))).await;
        let bodies = match ready {
            Ok(Ok(p)) => match &*p {
                Phase::Done(b) => b.clone(),
                Phase::Connecting | Phase::Fetching => return HashMap::new(),
            },
            _ => return HashMap::new(),
        };
        let mut all = bodies.lock().unwrap_or_else(|e| e.into_inner());
        uids.iter()
            .filter_map(|u| all.remove(u).map(|b| (*u, b)))
            .collect()
    }

    /// Waits (at most `wait`) until `device`'s read-ahead, if one is
    /// fetching, is done, leaving its entry for [`ReadAhead::take`] (one
    /// still waiting for a connection is not waited for: the connection it
    /// waits for may be the one the caller is about to take). A Sync of
    /// the device calls it before taking an IMAP session: the read-ahead's
    /// session then comes back to the pool for it, and the two do not run
    /// against the same mailbox at once (on a busy server a SELECT and a
    /// FETCH of the same mailbox on two sessions slowed each other more
    /// than running them one after the other).
    pub async fn settled(&self, device: &str, wait: Duration) {
        let phase = self.lock().get(device).map(|e| e.phase.clone());
        if let Some(mut phase) = phase.filter(|p| matches!(*p.borrow(), Phase::Fetching)) {
            let _ =
                tokio::time::timeout(wait, phase.wait_for(|p| !matches!(p, Phase::Fetching))).await;
        }
    }

    /// Drops entries older than [`MAX_AGE`].
    fn sweep(&self) {
        let mut entries = self.lock();
        self.drop_stale(&mut entries, Instant::now());
    }

    /// Drops the entries of `entries` (held locked) older than [`MAX_AGE`]
    /// at `now`, giving their reservations back.
    fn drop_stale(&self, entries: &mut HashMap<String, Entry>, now: Instant) {
        entries.retain(|_, e| {
            let keep = now.duration_since(e.since) <= MAX_AGE;
            if !keep {
                self.release(e);
            }
            keep
        });
    }
}

/// Sizes first, then the leading messages that fit in [`MAX_ENTRY_BYTES`]
/// (at least one below it), in one `UID FETCH`; checks UIDVALIDITY.
async fn fetch_bounded(
    imap: &mut PooledSession,
    mailbox: &str,
    uidvalidity: u32,
    uids: &[u32],
) -> Result<HashMap<u32, Vec<u8>>, ImapError> {
    let metas = imap.fetch_meta(mailbox, uids).await?;
    if imap.selected_uidvalidity(mailbox) != Some(uidvalidity) {
        return Ok(HashMap::new());
    }
    let sizes: HashMap<u32, u64> = metas.iter().map(|m| (m.uid, u64::from(m.size))).collect();
    let mut batch = Vec::new();
    let mut bytes = 0u64;
    for uid in uids {
        let Some(size) = sizes.get(uid).copied() else {
            continue;
        };
        if bytes + size > MAX_ENTRY_BYTES {
            break;
        }
        bytes += size;
        batch.push(*uid);
    }
    imap.fetch_messages(mailbox, &batch).await
}
