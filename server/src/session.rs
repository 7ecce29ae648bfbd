//! Loading a device's sync state and recording its decisions: the latest
//! snapshot plus the events after it, folded by `engine`; events appended
//! conditionally on the device head; one writer per device within the
//! process; a snapshot every `snapshot_every` events, or later while the
//! events since the last one are smaller than a snapshot of the state (see
//! `snapshot_due`).
//!
//! Exists so every command handler follows lifecycle steps 3 and 5 of
//! `docs/DESIGN.md` the same way, and records its request the same way: a
//! [`Recorder`] collects `RequestReceived`, the observations and one
//! `Decided` (inputs, `now`, configuration, response) before each
//! decision's events, so `opush replay` can re-run every decision. It must not decide anything (that is
//! `engine`) nor talk to the backends. A failed append changes nothing in
//! memory: the cached state is dropped and re-read from the store on the
//! next request, so another node's write (a `Conflict`) is never hidden.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opush_engine::{
    decode_event, decode_snapshot, encode_event, encode_snapshot, fold, Decision, DecisionInput,
    DecisionOutput, DecisionRecord, DeviceState, Digest, Event,
};
use opush_storage::{AppendBatch, DeviceKey, Snapshot, StorageError, Store};

use crate::obs::{timed, Category};
use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// Most trace events deferred per device before they are appended anyway.
pub const MAX_PENDING: usize = 256;
/// Oldest a deferred trace event gets before the device's next request
/// appends it.
pub const MAX_PENDING_AGE: std::time::Duration = std::time::Duration::from_secs(300);

/// How long one request's check of the store head stands for its later
/// session opens.
pub const HEAD_CHECK_REUSE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether an event only traces a request (the fold ignores it).
fn is_trace(e: &Event) -> bool {
    matches!(
        e,
        Event::RequestReceived { .. }
            | Event::Decided { .. }
            | Event::ResponseSent { .. }
            | Event::PolicyChecked { .. }
            | Event::Displaced { .. }
    )
}

/// Puts a state just read from the store in the slot, the deferred trace
/// events (marked as displaced when decided on another head) folded on
/// top: they are not in the store yet but count in `applied` once
/// appended, as they did in the state they were folded into before.
fn reloaded(slot: &mut Slot, mut loaded: Loaded) {
    displace_pending(slot, loaded.head);
    if !slot.pending.is_empty() {
        fold(Arc::make_mut(&mut loaded.state), &slot.pending);
    }
    slot.loaded = Some(loaded);
}

/// The slot's state was (re)loaded from the store at `head`: deferred trace
/// events decided on another head (another writer appended meanwhile, or
/// this process's append failed on a conflict) are marked as decided there
/// (`Event::Displaced`), so replay re-decides them on that state although
/// they are stored after the other writer's events.
fn displace_pending(slot: &mut Slot, head: u64) {
    let open = slot.pending.len().saturating_sub(slot.pending_open);
    if open == 0 || slot.pending_base == head {
        return;
    }
    tracing::debug!(
        events = open,
        base = slot.pending_base,
        head,
        "deferred trace events displaced: another writer moved the head"
    );
    let events = u32::try_from(open).unwrap_or(u32::MAX);
    slot.pending.insert(
        slot.pending_open,
        Event::Displaced {
            base: slot.pending_base,
            events,
        },
    );
    slot.pending_open = slot.pending.len();
}

/// The snapshot row name used for a whole device state.
pub const SNAPSHOT_NAME: &str = "device";

/// Why a session could not be loaded or a decision recorded.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The store failed (nothing was written).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// A stored event or snapshot does not decode.
    #[error("stored {what} at seq {seq} does not decode: {reason}")]
    Corrupt {
        /// `event` or `snapshot`.
        what: &'static str,
        /// Its sequence.
        seq: u64,
        /// The codec's message.
        reason: String,
    },
    /// An event could not be encoded (a bug, reported instead of a panic).
    #[error("event encoding failed: {0}")]
    Encode(String),
    /// The request did not carry out a backend effect because its device's
    /// lease was not proven ([`crate::fence`]): it records nothing.
    #[error("not recorded: {0}")]
    Fenced(crate::fence::Fenced),
}

impl SessionError {
    /// Whether the device should simply retry (store down, concurrent writer).
    pub fn is_retryable(&self) -> bool {
        match self {
            SessionError::Storage(e) => {
                e.is_retryable() || matches!(e, StorageError::Conflict { .. })
            }
            SessionError::Corrupt { .. } | SessionError::Encode(_) | SessionError::Fenced(_) => {
                false
            }
        }
    }
}

/// A device's folded state and the head it was folded up to.
///
/// The state is shared copy-on-write with the [`Recorder`]s of requests: a
/// request that changes nothing (a no-change Sync, an empty Ping) never
/// copies it, one that changes it copies it once (`Arc::make_mut`) and its
/// working copy becomes the session's state when its events are committed.
/// Sync borrows it instead ([`Recorder::exclusive`]): no copy at all.
#[derive(Debug, Clone, Default)]
struct Loaded {
    state: Arc<DeviceState>,
    head: u64,
    snapshot: SnapshotMark,
}

/// Where the last snapshot is and what was appended since.
#[derive(Debug, Clone, Copy, Default)]
struct SnapshotMark {
    /// The head it was taken at (0: none).
    seq: u64,
    /// Encoded bytes of the events appended after it.
    bytes_since: u64,
}

/// At most this many times `snapshot_every` events between two snapshots,
/// however small the events (an event folds in at most O(state)).
const SNAPSHOT_MAX_SPACING: u64 = 16;

/// States whose snapshot would be smaller than this (a few hundred items)
/// are snapshotted at the plain cadence: cheap either way.
const SNAPSHOT_SMALL_BYTES: usize = 64 * 1024;

/// Whether a snapshot is due at `head`: `every` events since the last one
/// (0: never), and, since writing one costs about what its size says,
/// only once the events since then weigh at least that much (or after
/// [`SNAPSHOT_MAX_SPACING`] × `every` events). Loading a device then reads
/// at most about twice a snapshot's bytes (the snapshot, then the events
/// after it), and snapshots cost at most about what the appends did: a
/// large state synced window after window is no longer written whole every
/// `every` events. Small states ([`SNAPSHOT_SMALL_BYTES`]) keep the plain
/// cadence.
fn snapshot_due(every: u64, head: u64, mark: SnapshotMark, state: &DeviceState) -> bool {
    let events = head.saturating_sub(mark.seq);
    if every == 0 || events < every {
        return false;
    }
    let size = opush_engine::snapshot_size_hint(state);
    size < SNAPSHOT_SMALL_BYTES
        || events >= every.saturating_mul(SNAPSHOT_MAX_SPACING)
        || mark.bytes_since >= size as u64
}

#[derive(Debug, Default)]
struct Slot {
    loaded: Option<Loaded>,
    /// The device (set when a request opens the slot; used by [`Sessions::flush`]).
    device: Option<DeviceKey>,
    /// Trace events (`RequestReceived`, `Decided`, `ResponseSent`) not yet
    /// appended: they change no sync state, so they ride along with the
    /// device's next state-changing append instead of costing a durable
    /// write each (see [`DeviceSession::commit`]).
    pending: Vec<Event>,
    /// When the oldest pending event was deferred.
    pending_since: Option<std::time::Instant>,
    /// Where in `pending` the events decided on `pending_base` start (the
    /// earlier ones are behind an `Event::Displaced` already).
    pending_open: usize,
    /// The head the state was folded up to when `pending[pending_open]`
    /// was deferred: the state those events were decided on.
    pending_base: u64,
    /// The device's remembered Sync request, once read from the store
    /// (`Some(None)`: read, there is none).
    sync_request: Option<Option<Vec<u8>>>,
    /// The HTTP request (obs scope id) that last checked `loaded` against
    /// the store's head, and when: one head read per request, however many
    /// times its handlers open the session (a request that waits, a parked
    /// Ping, checks again after [`HEAD_CHECK_REUSE`]).
    checked_in: Option<(u64, std::time::Instant)>,
    /// This process changed the remembered Sync request, a row beside the
    /// log, on a store other processes share (Cassandra): until an append
    /// succeeds, trace events are not deferred, so the head moves and
    /// every other process on the store drops what it cached of the device
    /// (its remembered request included) on the device's next request
    /// there.
    flush_next: bool,
}

/// The store row (a named snapshot) holding a device's last full Sync
/// request, without its commands, for empty and `Partial` Syncs.
pub const SYNC_REQUEST_ROW: &str = "sync-request";

/// A rough count of the bytes a folded device state holds (engine bench:
/// ~300 bytes per synced item with its indexes), for the cache's byte bound.
fn approx_state_bytes(state: &DeviceState) -> usize {
    let folders = state.hierarchy.ids.len().saturating_mul(256);
    let collections: usize = state
        .collections
        .values()
        .map(|c| {
            512 + c.items.len().saturating_mul(320)
                + c.client_ids.len().saturating_mul(64)
                + c.digests.len().saturating_mul(96)
        })
        .sum();
    2048 + folders + collections
}

/// One device's place in the cache.
struct CacheEntry {
    slot: Arc<AsyncMutex<Slot>>,
    /// Its key in [`SlotCache::order`] (last use), while it holds a state.
    tick: Option<u64>,
    /// [`approx_state_bytes`] of its state when last released.
    bytes: usize,
}

/// The device slots, with least-recently-used order over those holding a
/// folded state (the only large part: a slot without one holds at most
/// [`MAX_PENDING`] deferred trace events).
#[derive(Default)]
struct SlotCache {
    map: HashMap<String, CacheEntry>,
    /// Last use → device, oldest first.
    order: std::collections::BTreeMap<u64, String>,
    next_tick: u64,
    /// Sum of `bytes` over the entries in `order`.
    bytes: usize,
}

impl SlotCache {
    fn touch(&mut self, name: &str, bytes: Option<usize>) {
        let tick = self.next_tick;
        self.next_tick += 1;
        let Some(e) = self.map.get_mut(name) else {
            return;
        };
        if let Some(old) = e.tick.replace(tick) {
            self.order.remove(&old);
        } else {
            e.bytes = 0;
        }
        if let Some(b) = bytes {
            self.bytes = self.bytes.saturating_sub(e.bytes).saturating_add(b);
            e.bytes = b;
        }
        self.order.insert(tick, name.to_owned());
    }

    /// Drops the states of the least recently used idle devices until at
    /// most `max_states` states of at most `max_bytes` (estimated) remain.
    /// A device in use (held by a request, or locked) is skipped; a slot
    /// with deferred trace events keeps them (they are appended with the
    /// device's next write), others leave the map.
    fn evict(&mut self, max_states: usize, max_bytes: usize) {
        let mut skipped = Vec::new();
        while self.order.len() + skipped.len() > max_states || self.bytes > max_bytes {
            let Some((tick, name)) = self.order.pop_first() else {
                break;
            };
            let Some(e) = self.map.get_mut(&name) else {
                continue;
            };
            let idle = Arc::strong_count(&e.slot) == 1;
            let keep = match e.slot.try_lock() {
                Ok(mut slot) if idle => {
                    slot.loaded = None;
                    slot.sync_request = None;
                    !slot.pending.is_empty()
                }
                _ => {
                    skipped.push((tick, name));
                    continue;
                }
            };
            let freed = std::mem::take(&mut e.bytes);
            e.tick = None;
            self.bytes = self.bytes.saturating_sub(freed);
            if !keep {
                self.map.remove(&name);
            }
        }
        self.order.extend(skipped);
    }
}

/// The per-process registry of device sessions over one [`Store`].
pub struct Sessions {
    store: Arc<Store>,
    /// Lifetime of a device lease ([`DeviceSession::lease`]).
    lease_ttl: std::time::Duration,
    snapshot_every: u64,
    max_cached: usize,
    max_cached_bytes: usize,
    slots: Mutex<SlotCache>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions")
            .field("snapshot_every", &self.snapshot_every)
            .finish_non_exhaustive()
    }
}

impl Sessions {
    /// Sessions over `store`, snapshotting every `snapshot_every` events
    /// (0: never) and keeping the folded states of at most `max_cached`
    /// devices in memory (the least recently used are dropped first and
    /// reload from the store when their device comes back).
    pub fn new(store: Arc<Store>, snapshot_every: u64, max_cached: usize) -> Sessions {
        Sessions {
            store,
            lease_ttl: std::time::Duration::from_secs(30),
            snapshot_every,
            max_cached: max_cached.max(1),
            max_cached_bytes: usize::MAX,
            slots: Mutex::new(SlotCache::default()),
        }
    }

    /// Also bounds the cached states by their estimated size, in bytes
    /// (`[devices] max_cached_states_mb`).
    pub fn with_max_cached_bytes(mut self, bytes: usize) -> Sessions {
        self.max_cached_bytes = bytes.max(1);
        self
    }

    /// Sets the lifetime of the device leases requests take on a shared
    /// store (`[storage] lease_ttl_s`; they are renewed every third of it).
    pub fn with_lease_ttl(mut self, ttl: std::time::Duration) -> Sessions {
        self.lease_ttl = ttl.max(std::time::Duration::from_secs(1));
        self
    }

    /// Devices whose folded state is held in memory now, and its
    /// estimated size in bytes.
    pub fn cached(&self) -> (usize, usize) {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        (slots.order.len(), slots.bytes)
    }

    /// Called when a request releases a device: marks it most recently
    /// used with its state's size, then trims the cache.
    fn released(&self, name: &str, bytes: Option<usize>) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match bytes {
            Some(b) => slots.touch(name, Some(b)),
            None => {
                // No state kept (a failed append dropped it).
                if let Some(e) = slots.map.get_mut(name) {
                    if let Some(t) = e.tick.take() {
                        let b = std::mem::take(&mut e.bytes);
                        slots.order.remove(&t);
                        slots.bytes = slots.bytes.saturating_sub(b);
                    }
                }
            }
        }
        slots.evict(self.max_cached, self.max_cached_bytes);
    }

    /// The store.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Opens the device's session: waits for any other request of the same
    /// device in this process, then loads its state (from memory when this
    /// process wrote it last, else snapshot + events from the store).
    ///
    /// A state kept in memory is used only while the store's head is the
    /// one it was folded up to: another writer (an administrator's wipe from
    /// `opush device`, another node on the same Cassandra) makes it reload.
    /// That costs one head read per request (the provisioning gate, the
    /// handler and the response record of one HTTP request share it), and
    /// no write.
    pub async fn open(&self, device: DeviceKey) -> Result<DeviceSession<'_>, SessionError> {
        let slot = self.slot(&device);
        let mut guard = slot.lock_owned().await;
        let request = crate::obs::scope::with_current(|s| s.id());
        let checked = match (request, guard.checked_in) {
            (Some(r), Some((c, at))) => r == c && at.elapsed() < HEAD_CHECK_REUSE,
            _ => false,
        };
        if let (Some(loaded), false) = (&guard.loaded, checked) {
            if timed(Category::Storage, self.store.head(&device)).await? != loaded.head {
                guard.loaded = None;
                guard.sync_request = None;
            }
        }
        guard.device = Some(device.clone());
        if guard.loaded.is_none() {
            let loaded = timed(Category::Storage, self.load(&device)).await?;
            reloaded(&mut guard, loaded);
        }
        if !checked {
            guard.checked_in = request.map(|r| (r, std::time::Instant::now()));
        }
        Ok(DeviceSession {
            sessions: self,
            device,
            guard,
        })
    }

    /// Appends every device's deferred trace events (at shutdown, or before
    /// exporting a session from a running process's store).
    pub async fn flush(&self) {
        let slots: Vec<_> = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.map.values().map(|e| e.slot.clone()).collect()
        };
        for slot in slots {
            self.flush_slot(slot).await;
        }
    }

    /// Appends one device's deferred trace events now (a device under full
    /// capture: its log is complete in the store after each request, so a
    /// bundle exported from a running server joins every capture to its
    /// request).
    pub async fn flush_device(&self, device: &DeviceKey) {
        let slot = {
            let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            slots.map.get(&device.to_string()).map(|e| e.slot.clone())
        };
        if let Some(slot) = slot {
            self.flush_slot(slot).await;
        }
    }

    async fn flush_slot(&self, slot: Arc<AsyncMutex<Slot>>) {
        let guard = slot.lock_owned().await;
        let Some(device) = guard.device.clone() else {
            return;
        };
        if guard.pending.is_empty() {
            return;
        }
        let mut session = DeviceSession {
            sessions: self,
            device,
            guard,
        };
        // Another process may have appended since they were deferred (or
        // the state was dropped): read its events and append these after
        // them, marked as displaced (`DeviceSession::refresh`).
        let mut tries = 0;
        loop {
            let e = match session.append(&[]).await {
                Ok(()) => return,
                Err(e) => e,
            };
            tries += 1;
            let conflict = matches!(e, SessionError::Storage(StorageError::Conflict { .. }));
            let e = match conflict && tries < 3 {
                true => match session.refresh().await {
                    Ok(()) => continue,
                    Err(e) => e,
                },
                false => e,
            };
            tracing::warn!(device = %session.device, error = %e, "deferred trace events not written");
            crate::obs::metrics::storage_error();
            return;
        }
    }

    fn slot(&self, device: &DeviceKey) -> Arc<AsyncMutex<Slot>> {
        let name = device.to_string();
        // A poisoned map only means another request panicked while holding
        // this short lock; the map itself is still consistent.
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots
            .map
            .entry(name)
            .or_insert_with(|| CacheEntry {
                slot: Arc::default(),
                tick: None,
                bytes: 0,
            })
            .slot
            .clone()
    }

    async fn load(&self, device: &DeviceKey) -> Result<Loaded, SessionError> {
        let mut loaded = Loaded::default();
        if let Some(snap) = self.store.get_snapshot(device, SNAPSHOT_NAME).await? {
            match decode_snapshot(&snap.payload) {
                Ok(state) => {
                    loaded.state = Arc::new(state);
                    loaded.head = snap.seq;
                    loaded.snapshot.seq = snap.seq;
                }
                // A snapshot of an older layout is only a stale cache: fold
                // the whole log instead (the next commit writes a new one).
                Err(opush_engine::CodecError::UnsupportedVersion(v)) => {
                    tracing::info!(device = %device, version = v, "old snapshot layout ignored");
                }
                Err(e) => {
                    return Err(SessionError::Corrupt {
                        what: "snapshot",
                        seq: snap.seq,
                        reason: e.to_string(),
                    })
                }
            }
        }
        let stored = self.store.read_events(device, loaded.head + 1).await?;
        let mut events = Vec::with_capacity(stored.len());
        for ev in &stored {
            events.push(
                decode_event(&ev.payload).map_err(|e| SessionError::Corrupt {
                    what: "event",
                    seq: ev.seq,
                    reason: e.to_string(),
                })?,
            );
            loaded.head = ev.seq;
            loaded.snapshot.bytes_since += ev.payload.len() as u64;
        }
        if !events.is_empty() {
            fold(Arc::make_mut(&mut loaded.state), &events);
        }
        Ok(loaded)
    }
}

/// This process's id in lease holders (`<process>:<request id>`): random,
/// so two processes never share one (a restarted one gets a new id).
fn process_id() -> &'static str {
    static ID: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    ID.get_or_init(|| {
        let mut b = [0u8; 8];
        if getrandom::fill(&mut b).is_err() {
            // Still distinct from the other processes: pid and start time.
            return format!("{}-{}", std::process::id(), now().0);
        }
        b.iter().map(|x| format!("{x:02x}")).collect()
    })
}

/// A device lease held by one request ([`DeviceSession::lease`]), renewed
/// in the background every third of its TTL while held. Released by
/// [`DeviceLease::release`] after the request's append; dropped unreleased
/// (an error on the way), it is released in the background. Empty (holds
/// nothing) on the embedded store.
#[derive(Debug)]
#[must_use = "release the lease after the append"]
pub struct DeviceLease {
    held: Option<HeldLease>,
}

#[derive(Debug)]
struct HeldLease {
    store: Arc<Store>,
    device: DeviceKey,
    holder: String,
    renew: tokio::task::JoinHandle<()>,
    /// Its proof, and the request's fencing state it was installed in
    /// ([`crate::fence`]).
    clock: Arc<crate::fence::LeaseClock>,
    slot: Option<Arc<crate::fence::FenceSlot>>,
}

impl HeldLease {
    /// Stops renewing and fencing (the lease itself is released apart).
    fn stop(&self) {
        self.renew.abort();
        if let Some(slot) = &self.slot {
            slot.released(&self.clock);
        }
    }
}

impl DeviceLease {
    /// A lease taken by a request sent at `taken`: renewed in the
    /// background, and the current request's backend effects fenced by
    /// its proof ([`crate::fence`]).
    fn hold(
        store: Arc<Store>,
        device: DeviceKey,
        holder: String,
        ttl: std::time::Duration,
        taken: tokio::time::Instant,
    ) -> DeviceLease {
        let clock = crate::fence::LeaseClock::new(ttl, taken);
        let slot = RequestMeta::fence_slot();
        if let Some(slot) = &slot {
            slot.hold(clock.clone());
        }
        let renew = {
            let (store, device, holder) = (store.clone(), device.clone(), holder.clone());
            let clock = clock.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(ttl / 3).await;
                    let sent = tokio::time::Instant::now();
                    match store.renew_lease(&device, &holder, ttl).await {
                        Ok(true) => clock.renewed(sent),
                        Ok(false) => {
                            clock.lost();
                            tracing::warn!(
                                device = %device,
                                "device lease lost while its request runs (expired: the store was \
                                 unreachable for longer than lease_ttl_s); its further backend \
                                 effects are fenced"
                            );
                            return;
                        }
                        // Tried again at the next third: the lease lives
                        // until its TTL.
                        Err(e) => {
                            tracing::warn!(device = %device, error = %e, "device lease not renewed")
                        }
                    }
                }
            })
        };
        DeviceLease {
            held: Some(HeldLease {
                store,
                device,
                holder,
                renew,
                clock,
                slot,
            }),
        }
    }

    /// Ends the lease (after the request's append). A failure is logged:
    /// the lease then ends with its TTL.
    pub async fn release(mut self) {
        if let Some(h) = self.held.take() {
            h.stop();
            release_logged(&h.store, &h.device, &h.holder).await;
        }
    }
}

async fn release_logged(store: &Store, device: &DeviceKey, holder: &str) {
    match timed(Category::Storage, store.release_lease(device, holder)).await {
        Ok(true) => {}
        Ok(false) => tracing::warn!(
            device = %device,
            "device lease had expired and another request holds it now"
        ),
        Err(e) => {
            tracing::warn!(device = %device, error = %e, "device lease not released: it ends with its TTL")
        }
    }
}

impl Drop for DeviceLease {
    fn drop(&mut self) {
        if let Some(h) = self.held.take() {
            h.stop();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move { release_logged(&h.store, &h.device, &h.holder).await });
            }
        }
    }
}

/// One request's exclusive access to a device's state.
pub struct DeviceSession<'a> {
    sessions: &'a Sessions,
    device: DeviceKey,
    guard: OwnedMutexGuard<Slot>,
}

impl std::fmt::Debug for DeviceSession<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceSession")
            .field("device", &self.device.to_string())
            .field("head", &self.head())
            .finish_non_exhaustive()
    }
}

impl Drop for DeviceSession<'_> {
    fn drop(&mut self) {
        let bytes = self
            .guard
            .loaded
            .as_ref()
            .map(|l| approx_state_bytes(&l.state));
        self.sessions.released(&self.device.to_string(), bytes);
    }
}

impl DeviceSession<'_> {
    /// The device's current state.
    pub fn state(&self) -> &DeviceState {
        static EMPTY: std::sync::OnceLock<DeviceState> = std::sync::OnceLock::new();
        match &self.guard.loaded {
            Some(l) => &l.state,
            None => EMPTY.get_or_init(DeviceState::default),
        }
    }

    /// The device's current state, shared: for a handler that reads it
    /// after giving the session back (no copy; a later request that changes
    /// the state copies it then).
    pub fn shared_state(&self) -> Arc<DeviceState> {
        match &self.guard.loaded {
            Some(l) => l.state.clone(),
            None => Arc::default(),
        }
    }

    /// The head sequence the state was folded up to.
    pub fn head(&self) -> u64 {
        self.guard.loaded.as_ref().map_or(0, |l| l.head)
    }

    /// The device.
    pub fn device(&self) -> &DeviceKey {
        &self.device
    }

    /// Takes the device's lease across processes, for a request with
    /// backend effects: called once the request has its session (so this
    /// process's other requests of the device wait for the session lock,
    /// as before), before it observes or carries out anything, and
    /// released ([`DeviceLease::release`]) after its append. While the
    /// request runs, no other opush process on the store carries out this
    /// device's changes: theirs answer "retry later"
    /// ([`crate::commands::CommandError::DeviceBusy`]) without doing
    /// anything. Once taken, the device's head is read again and a state
    /// another process moved is reloaded: the request decides on what the
    /// previous holder appended (a SendMail retried on another node then
    /// finds its ClientId sent, a Delete finds the item gone).
    ///
    /// On the embedded store (one process: the session lock serializes a
    /// device already) it does nothing and costs nothing. A Cassandra
    /// keyspace still at schema v3 has no lease table: the request goes on
    /// without a lease, as before v4 (WARN once; `opush schema update`).
    pub async fn lease(&mut self) -> Result<DeviceLease, crate::commands::CommandError> {
        let store = self.sessions.store.clone();
        if !store.is_shared() {
            return Ok(DeviceLease { held: None });
        }
        let ttl = self.sessions.lease_ttl;
        let request = crate::obs::scope::with_current(|s| s.id()).unwrap_or_else(new_request_id);
        let holder = format!("{}:{request}", process_id());
        let taken = tokio::time::Instant::now();
        match timed(
            Category::Storage,
            store.take_lease(&self.device, &holder, ttl),
        )
        .await
        {
            Ok(true) => {}
            Ok(false) => return Err(crate::commands::CommandError::DeviceBusy),
            Err(StorageError::SchemaMismatch(m)) => {
                static WARNED: AtomicBool = AtomicBool::new(false);
                if !WARNED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        target: "MIGRATION",
                        error = %m,
                        "no device leases on this store: concurrent requests of one device on \
                         two opush processes may both carry out its changes (run `opush schema update`)"
                    );
                }
                return Ok(DeviceLease { held: None });
            }
            Err(e) => return Err(session_error(e.into())),
        }
        let lease = DeviceLease::hold(store.clone(), self.device.clone(), holder, ttl, taken);
        // Dropped on an error below: released in the background.
        self.refresh().await.map_err(session_error)?;
        Ok(lease)
    }

    /// Reads the device's head from the store and reloads the state when
    /// another writer moved it (or a failed append dropped it): the
    /// session then holds what the store has.
    pub async fn refresh(&mut self) -> Result<(), SessionError> {
        let head = timed(Category::Storage, self.sessions.store.head(&self.device)).await?;
        if self.guard.loaded.as_ref().map(|l| l.head) != Some(head) {
            let guard = &mut *self.guard;
            guard.loaded = None;
            guard.sync_request = None;
            let loaded = timed(Category::Storage, self.sessions.load(&self.device)).await?;
            reloaded(&mut self.guard, loaded);
        }
        Ok(())
    }

    /// The device's remembered Sync request (encoded), if any: read from
    /// the store once, then kept with the device's state.
    pub async fn remembered_sync_request(&mut self) -> Result<Option<Vec<u8>>, SessionError> {
        if let Some(cached) = &self.guard.sync_request {
            return Ok(cached.clone());
        }
        let row = self
            .sessions
            .store
            .get_snapshot(&self.device, SYNC_REQUEST_ROW)
            .await?
            .map(|snap| snap.payload);
        self.guard.sync_request = Some(row.clone());
        Ok(row)
    }

    /// Remembers the device's Sync request (encoded); written to the store
    /// only when it differs from the one remembered.
    pub async fn remember_sync_request(&mut self, request: Vec<u8>) -> Result<(), SessionError> {
        if self.remembered_sync_request().await?.as_deref() == Some(request.as_slice()) {
            return Ok(());
        }
        let snap = Snapshot {
            seq: self.head(),
            format_version: FORMAT_VERSION_U16,
            payload: request.clone(),
        };
        if let Err(e) = self
            .sessions
            .store
            .put_snapshot(&self.device, SYNC_REQUEST_ROW, snap)
            .await
        {
            self.guard.sync_request = None;
            return Err(e.into());
        }
        self.guard.sync_request = Some(Some(request));
        // One process holds an embedded store: nobody else caches the row.
        self.guard.flush_next = !matches!(*self.sessions.store, Store::Embedded(_));
        Ok(())
    }

    /// Appends `events` on top of the current head (all or nothing), then
    /// folds them into the state. On any failure the cached state is dropped
    /// and the caller answers with a retryable error. An empty list is a no-op.
    ///
    /// Events that only trace requests (`RequestReceived`, `Decided`,
    /// `ResponseSent`: the fold ignores them) are deferred in memory and
    /// appended, in order, in front of the device's next state-changing
    /// events — or once [`MAX_PENDING`] of them wait or the oldest is
    /// [`MAX_PENDING_AGE`] old, or at shutdown. A request that changes
    /// nothing (a no-change Sync, a Ping that finds nothing) then costs no
    /// durable write; a crash loses only the trace of such requests, never
    /// a decision that changed the device's state. On Cassandra, a request
    /// that changed the remembered Sync request appends them at once
    /// instead (other processes on the store see the head move and re-read
    /// that row).
    pub async fn commit(&mut self, events: &[Event]) -> Result<(), SessionError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.guard.loaded.is_some() && !self.guard.flush_next && events.iter().all(is_trace) {
            let slot = &mut *self.guard;
            if slot.pending_open == slot.pending.len() {
                slot.pending_base = slot.loaded.as_ref().map_or(0, |l| l.head);
            }
            slot.pending.extend_from_slice(events);
            let since = *slot
                .pending_since
                .get_or_insert_with(std::time::Instant::now);
            if let Some(loaded) = slot.loaded.as_mut() {
                fold(Arc::make_mut(&mut loaded.state), events);
            }
            if slot.pending.len() < MAX_PENDING && since.elapsed() < MAX_PENDING_AGE {
                return Ok(());
            }
            return self.append(&[]).await;
        }
        self.append(events).await
    }

    /// Appends the deferred trace events and then `events`, then folds
    /// `events` into the state.
    async fn append(&mut self, events: &[Event]) -> Result<(), SessionError> {
        self.append_then(events, Folded::No).await
    }

    /// [`DeviceSession::append`] where the caller may already hold the
    /// state with `events` folded: it then replaces the session's state
    /// instead of folding them a second time.
    async fn append_then(&mut self, events: &[Event], folded: Folded) -> Result<(), SessionError> {
        let pending = std::mem::take(&mut self.guard.pending);
        let (pending_since, pending_open) = (
            self.guard.pending_since.take(),
            std::mem::take(&mut self.guard.pending_open),
        );
        if pending.is_empty() && events.is_empty() {
            return Ok(());
        }
        let head = self.head();
        let mut batch = AppendBatch::new(self.device.clone(), head);
        let mut appended = 0u64;
        for ev in pending.iter().chain(events) {
            let bytes = encode_event(ev).map_err(|e| SessionError::Encode(e.to_string()))?;
            appended += bytes.len() as u64;
            batch = batch.event(FORMAT_VERSION_U16, bytes);
        }
        let new_head = match timed(Category::Storage, self.sessions.store.append(batch)).await {
            Ok(h) => h,
            Err(e) => {
                self.guard.loaded = None;
                if matches!(e, StorageError::Conflict { .. }) {
                    // Nothing was written: the deferred trace events wait
                    // for the next append, marked as displaced when the
                    // state is reloaded (`displace_pending`). The failed
                    // request's own events are not kept: it answers "retry
                    // later" and the device sends it again.
                    self.guard.pending = pending;
                    self.guard.pending_since = pending_since;
                    self.guard.pending_open = pending_open;
                }
                return Err(e.into());
            }
        };
        self.guard.flush_next = false;
        let Some(loaded) = self.guard.loaded.as_mut() else {
            return Ok(());
        };
        match folded {
            Folded::No => {
                if !events.is_empty() {
                    fold(Arc::make_mut(&mut loaded.state), events);
                }
            }
            Folded::Yes { state, unfolded } => {
                loaded.state = state;
                if unfolded > 0 {
                    let st = Arc::make_mut(&mut loaded.state);
                    st.applied = st.applied.saturating_add(unfolded);
                }
            }
        }
        loaded.head = new_head;
        loaded.snapshot.bytes_since += appended;
        let every = self.sessions.snapshot_every;
        if snapshot_due(every, new_head, loaded.snapshot, &loaded.state) {
            match encode_snapshot(&loaded.state) {
                Ok(payload) => {
                    let snap = Snapshot {
                        seq: new_head,
                        format_version: FORMAT_VERSION_U16,
                        payload,
                    };
                    // A snapshot is a cache: failing to write one only means
                    // the next load folds more events.
                    let put = self
                        .sessions
                        .store
                        .put_snapshot(&self.device, SNAPSHOT_NAME, snap);
                    match timed(Category::Storage, put).await {
                        Ok(()) => {
                            loaded.snapshot = SnapshotMark {
                                seq: new_head,
                                bytes_since: 0,
                            }
                        }
                        Err(e) => {
                            crate::obs::metrics::storage_error();
                            tracing::warn!(device = %self.device, error = %e, "snapshot not written")
                        }
                    }
                }
                Err(e) => tracing::warn!(device = %self.device, error = %e, "snapshot not encoded"),
            }
        }
        Ok(())
    }
}

impl DeviceSession<'_> {
    /// Commits what `rec` collected (`RequestReceived` first, then the
    /// observations and decisions in order) and marks the request as
    /// recorded, so its `ResponseSent` is logged after the answer.
    ///
    /// A recorder that changed nothing hands back no state (the session's
    /// is still right, and only trace events are committed: deferred). One
    /// that did holds the new state already folded: after the append it
    /// becomes the session's state, so nothing is folded twice. A state
    /// lent by [`Recorder::exclusive`] comes back here.
    pub async fn commit_request(&mut self, rec: Recorder) -> Result<(), SessionError> {
        // A request that did not carry out one of its effects (its lease not
        // proven) records nothing: what it did is what a kill at that
        // point leaves, found done by the device's retry. The session's
        // state is read again by the next request.
        if let Some(fenced) = rec.meta.fenced() {
            self.guard.loaded = None;
            self.guard.sync_request = None;
            // Earlier requests' deferred trace events stay: the next load
            // marks them displaced when the head moved meanwhile.
            return Err(SessionError::Fenced(fenced));
        }
        let Recorder {
            meta,
            state,
            events,
            unfolded,
            base_applied,
            lent,
            ..
        } = rec;
        // The recorder's state replaces the session's only if it grew from
        // it: the session folded nothing since (every fold counts in
        // `applied`), else its events are folded again as usual.
        if let Some((head, snapshot)) = lent {
            // The session lent its state for the request: it comes back
            // with the request's events folded (no copy was made).
            let all_trace = events.iter().all(is_trace);
            self.guard.loaded = Some(Loaded {
                state: Arc::clone(&state),
                head,
                snapshot,
            });
            if all_trace {
                drop(state);
                self.commit(&events).await?;
            } else {
                self.append_then(&events, Folded::Yes { state, unfolded })
                    .await?;
            }
            if events
                .iter()
                .any(|e| matches!(e, Event::RequestReceived { .. }))
            {
                meta.recorded.store(true, Ordering::Release);
            }
            return Ok(());
        }
        let take = match &self.guard.loaded {
            Some(l) => !Arc::ptr_eq(&l.state, &state) && l.state.applied == base_applied,
            None => false,
        };
        if !take || events.iter().all(is_trace) {
            drop(state);
            self.commit(&events).await?;
        } else {
            self.append_then(&events, Folded::Yes { state, unfolded })
                .await?;
        }
        if events
            .iter()
            .any(|e| matches!(e, Event::RequestReceived { .. }))
        {
            meta.recorded.store(true, Ordering::Release);
        }
        Ok(())
    }
}

/// Whether the events being appended are already folded into a state the
/// caller hands over.
enum Folded {
    /// No: fold them into the session's state.
    No,
    /// Yes: `state` is the session's state with every event folded except
    /// `unfolded` trace events (which only count in `applied`).
    Yes {
        state: Arc<DeviceState>,
        unfolded: u64,
    },
}

tokio::task_local! {
    /// The request being served by this task (set by the command dispatch).
    static REQUEST: RequestMeta;
}

/// One request as the device log records it: id, arrival time, command,
/// protocol version and the digest of its body (bodies stay out of the log).
#[derive(Debug, Clone)]
pub struct RequestMeta {
    /// Server-chosen id, unique within the process and increasing.
    pub req_id: u64,
    /// Arrival time: the `now` of every decision of the request.
    pub at: opush_engine::Timestamp,
    /// The command.
    pub command: opush_engine::Command,
    /// MS-ASProtocolVersion.
    pub protocol_version: opush_engine::ProtocolVersion,
    /// blake3 of the request body as received.
    pub request: Digest,
    recorded: Arc<AtomicBool>,
    /// Its lease's proof, checked before each backend effect
    /// ([`crate::fence`]).
    fence: Arc<crate::fence::FenceSlot>,
}

impl RequestMeta {
    /// A request arriving now.
    pub fn new(
        command: opush_protocol::query::Command,
        version: opush_protocol::version::ProtocolVersion,
        body: &[u8],
    ) -> RequestMeta {
        let at = now();
        RequestMeta {
            req_id: next_request_id(at),
            at,
            command: engine_command(command),
            protocol_version: engine_version(version),
            request: Digest::of(body),
            recorded: Arc::new(AtomicBool::new(false)),
            fence: Arc::default(),
        }
    }

    /// Runs `f` as this request: every [`Recorder`] created inside uses it.
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        REQUEST.scope(self, f).await
    }

    /// The request of the current task, if it runs inside [`RequestMeta::scope`].
    pub fn current() -> Option<RequestMeta> {
        REQUEST.try_with(Clone::clone).ok()
    }

    /// The fencing state of the current task's request, if it runs inside
    /// [`RequestMeta::scope`] ([`crate::fence::check`]).
    pub fn fence_slot() -> Option<Arc<crate::fence::FenceSlot>> {
        REQUEST.try_with(|m| m.fence.clone()).ok()
    }

    /// The backend effect this request did not carry out because its
    /// device's lease was not proven, if any: it then records nothing more
    /// and answers "retry later" ([`crate::fence`]).
    pub fn fenced(&self) -> Option<crate::fence::Fenced> {
        self.fence.refused()
    }

    /// Whether a handler committed this request's `RequestReceived`.
    pub fn was_recorded(&self) -> bool {
        self.recorded.load(Ordering::Acquire)
    }

    /// The `RequestReceived` event.
    pub fn received(&self) -> Event {
        Event::RequestReceived {
            req_id: self.req_id,
            at: self.at,
            command: self.command,
            protocol_version: self.protocol_version,
            request: self.request,
        }
    }
}

/// A fresh request id (for a request that never reaches a handler, e.g. a
/// captured request refused by the HTTP layer).
pub fn new_request_id() -> u64 {
    next_request_id(now())
}

/// A request id: the arrival time in microseconds, bumped past the last id
/// handed out so ids never repeat within the process.
fn next_request_id(at: opush_engine::Timestamp) -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let wanted = at.0.saturating_mul(1000);
    let mut prev = LAST.load(Ordering::Relaxed);
    loop {
        let id = wanted.max(prev.saturating_add(1));
        match LAST.compare_exchange_weak(prev, id, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return id,
            Err(p) => prev = p,
        }
    }
}

/// Collects what one request records in the device log, in order, on a
/// working copy of the device state: `RequestReceived` (once per request),
/// observations ([`Recorder::observed`]) and decisions
/// ([`Recorder::decided`]: a `Decided` event, then the decision's events).
/// [`DeviceSession::commit_request`] appends it all at once.
///
/// Every handler that asks the engine for a decision goes through it:
/// `let mut rec = Recorder::new(&session, eas, Command::X);`, then
/// `rec.observed(ev)` / `rec.decided(input, decision)`, then
/// `session.commit_request(rec)`. Outside [`RequestMeta::scope`] (tests and
/// tools calling a handler's core function) the request is recorded as a
/// 14.1 request with an empty body digest.
#[derive(Debug)]
pub struct Recorder {
    meta: RequestMeta,
    config: opush_engine::EngineConfig,
    /// Shared with the session until the first event that changes it.
    state: Arc<DeviceState>,
    events: Vec<Event>,
    /// Events in `events` not folded into `state` (trace events only).
    unfolded: u64,
    /// `applied` of the session's state when recording started.
    base_applied: u64,
    /// Set when the session lent its state ([`Recorder::exclusive`]): the
    /// head and snapshot mark it goes back with.
    lent: Option<(u64, SnapshotMark)>,
}

impl Recorder {
    /// Starts recording on `session`'s state (shared until a change copies it).
    pub fn new(
        session: &DeviceSession<'_>,
        eas: &EasServices,
        command: opush_protocol::query::Command,
    ) -> Recorder {
        let meta = RequestMeta::current().unwrap_or_else(|| {
            RequestMeta::new(
                command,
                opush_protocol::version::ProtocolVersion::V14_1,
                &[],
            )
        });
        let events = if meta.was_recorded() {
            Vec::new()
        } else {
            vec![meta.received()]
        };
        let unfolded = events.len() as u64;
        let state = session.shared_state();
        Recorder {
            meta,
            config: eas.engine.clone(),
            base_applied: state.applied,
            state,
            events,
            unfolded,
            lent: None,
        }
    }

    /// Starts recording on `session`'s state, lent to the recorder until
    /// [`DeviceSession::commit_request`] gives it back: the recorder's
    /// changes are folded in place, with no copy of the state. A copy is
    /// O(items): for a large folder synced window after window, copying
    /// (and dropping the old copy) at every window was most of the
    /// server's CPU. Meanwhile the session has no state; a request that
    /// fails before committing leaves it so, and the next request reloads
    /// the state from the store (snapshot + events), which is what a failed
    /// append does too.
    pub fn exclusive(
        session: &mut DeviceSession<'_>,
        eas: &EasServices,
        command: opush_protocol::query::Command,
    ) -> Recorder {
        let mut rec = Recorder::new(session, eas, command);
        if let Some(loaded) = session.guard.loaded.take() {
            rec.lent = Some((loaded.head, loaded.snapshot));
            // The only other reference is the one just taken from the session.
            rec.state = loaded.state;
        }
        rec
    }

    /// The working state: the session's plus everything recorded so far.
    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    /// The request's time, the `now` to give the engine.
    pub fn at(&self) -> opush_engine::Timestamp {
        self.meta.at
    }

    /// The request id (for `BackendObserved`).
    pub fn req_id(&self) -> u64 {
        self.meta.req_id
    }

    /// Records an observation (or any input event) and folds it.
    pub fn observed(&mut self, event: Event) {
        fold(Arc::make_mut(&mut self.state), std::slice::from_ref(&event));
        self.events.push(event);
    }

    /// Records a decision made on [`Recorder::state`] at [`Recorder::at`]
    /// from `input`: `Decided`, then its events (folded); returns the response.
    pub fn decided<R: Clone + Into<DecisionOutput>>(
        &mut self,
        input: DecisionInput,
        decision: Decision<R>,
    ) -> R {
        let record = DecisionRecord {
            at: self.meta.at,
            config: self.config.clone(),
            input,
            output: decision.response.clone().into(),
        };
        self.events
            .push(record.into_event(self.meta.req_id, decision.events.len()));
        self.unfolded += 1;
        if !decision.events.is_empty() {
            fold(Arc::make_mut(&mut self.state), &decision.events);
        }
        self.events.extend(decision.events);
        decision.response
    }

    /// Like [`Recorder::decided`] for a decision made later than the
    /// request (a parked Ping's re-check): `decide` runs on the working
    /// state and the record carries `at` as its `now`.
    pub fn decided_at<R: Clone + Into<DecisionOutput>>(
        &mut self,
        input: DecisionInput,
        at: opush_engine::Timestamp,
        decide: impl FnOnce(&DeviceState) -> Decision<R>,
    ) -> R {
        let decision = decide(&self.state);
        let saved = self.meta.at;
        self.meta.at = at;
        let response = self.decided(input, decision);
        self.meta.at = saved;
        response
    }

    /// Whether anything besides `RequestReceived` was recorded.
    pub fn is_empty(&self) -> bool {
        self.events
            .iter()
            .all(|e| matches!(e, Event::RequestReceived { .. }))
    }
}

/// Logs `ResponseSent` for a request whose handler recorded it (best
/// effort: the answer is already decided; a failure is only logged).
pub async fn record_response(
    eas: &EasServices,
    device: DeviceKey,
    meta: &RequestMeta,
    status: u16,
    body: &[u8],
) {
    if !meta.was_recorded() {
        return;
    }
    let event = Event::ResponseSent {
        req_id: meta.req_id,
        status,
        digest: Digest::of(body),
    };
    let done = match eas.sessions.open(device).await {
        Ok(mut session) => session.commit(&[event]).await,
        Err(e) => Err(e),
    };
    if let Err(e) = done {
        tracing::warn!(req_id = meta.req_id, error = %e, "ResponseSent not recorded");
        crate::obs::metrics::storage_error();
    }
}

/// The engine's format version as the store records it.
const FORMAT_VERSION_U16: u16 = {
    assert!(opush_engine::FORMAT_VERSION <= u16::MAX as u32);
    opush_engine::FORMAT_VERSION as u16
};

/// What the EAS command handlers share besides the HTTP context: the device
/// sessions, the engine's limits and the policy sent by Provision.
#[derive(Debug)]
pub struct EasServices {
    /// Device sessions over the store.
    pub sessions: Sessions,
    /// Engine limits and switches.
    pub engine: opush_engine::EngineConfig,
    /// The `EASProvisionDoc` settings sent on policy download.
    pub policy: Vec<opush_protocol::commands::Owned>,
    /// IMAP connections: handlers log in as the device's user
    /// ([`EasServices::imap_for`]); the master user serves background work.
    pub imap: Arc<crate::backends::imap::ImapPool>,
    /// SMTP relay, identities, size limit and receipts for SendMail,
    /// SmartReply and SmartForward.
    pub send: crate::commands::compose::SendSettings,
    /// The push hub parked Pings wait on.
    pub push: crate::push::PushHub,
    /// Sent copies waiting for the IMAP server, kept in the store and
    /// saved in the background (`crate::sent_copy`).
    pub sent_copies: crate::sent_copy::SentCopies,
    /// Out-of-office over ManageSieve (`[sieve]`; refused when off).
    pub oof: crate::oof::OofService,
}

/// Whom a command acts for: the authenticated user, the device, and the
/// password the user logged in with (memory only, prints `*`), so handlers
/// reach the mailbox as the user and not as a privileged account.
#[derive(Debug, Clone, Copy)]
pub struct Caller<'a> {
    /// The user's canonical name (`user@domain`).
    pub user: &'a str,
    /// The device id of the request line.
    pub device_id: &'a str,
    /// The verified password of this request.
    pub password: &'a crate::config::Secret,
}

impl<'a> Caller<'a> {
    /// A caller (tests and tools build one; requests get it from the context).
    pub fn new(user: &'a str, device_id: &'a str, password: &'a crate::config::Secret) -> Self {
        Caller {
            user,
            device_id,
            password,
        }
    }

    /// The store key of this caller's device.
    pub fn device_key(&self) -> Result<DeviceKey, crate::commands::CommandError> {
        device_key(self.user, self.device_id)
    }
}

/// The engine's name of a command (for the policy check and the log).
pub fn engine_command(command: opush_protocol::query::Command) -> opush_engine::Command {
    use opush_engine::Command as E;
    use opush_protocol::query::Command as P;
    match command {
        P::Sync => E::Sync,
        P::FolderSync => E::FolderSync,
        P::FolderCreate => E::FolderCreate,
        P::FolderDelete => E::FolderDelete,
        P::FolderUpdate => E::FolderUpdate,
        P::GetItemEstimate => E::GetItemEstimate,
        P::Ping => E::Ping,
        P::Provision => E::Provision,
        P::MoveItems => E::MoveItems,
        _ => E::Other,
    }
}

/// The engine's name of a protocol version.
pub fn engine_version(
    version: opush_protocol::version::ProtocolVersion,
) -> opush_engine::ProtocolVersion {
    use opush_engine::ProtocolVersion as E;
    use opush_protocol::version::ProtocolVersion as P;
    match version {
        P::V2_5 => E::V2_5,
        P::V12_0 => E::V12_0,
        P::V12_1 => E::V12_1,
        P::V14_0 => E::V14_0,
        P::V14_1 => E::V14_1,
        P::V16_0 => E::V16_0,
        P::V16_1 => E::V16_1,
    }
}

impl EasServices {
    /// The provisioning gate ([MS-ASPROV] 3.2.5.1): checks the policy key a
    /// request sent against the device's event-sourced state with
    /// `engine::check_policy` (a pending remote wipe first, then the
    /// acknowledged key when `require_provisioning`). Changes no state; the
    /// check is recorded as the request's first decision (`RequestReceived`
    /// and a `PolicyChecked` trace — the compact form of a `Decided`,
    /// without a copy of the configuration — deferred like every trace
    /// event) so `opush replay run` re-checks it.
    pub async fn provision_verdict(
        &self,
        caller: &Caller<'_>,
        command: opush_protocol::query::Command,
        policy_key: Option<u32>,
        require_provisioning: bool,
        meta: &RequestMeta,
    ) -> Result<crate::device::ProvisionVerdict, crate::commands::CommandError> {
        use crate::device::ProvisionVerdict;
        if command == opush_protocol::query::Command::Provision {
            return Ok(ProvisionVerdict::Pass);
        }
        let mut session = self
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        let config = opush_engine::EngineConfig {
            require_provisioning,
            ..self.engine.clone()
        };
        // Asked as 14.0+ so the verdict names its Status; the HTTP edge
        // sends 449 instead to older devices (`crate::error`).
        let (header_key, version) = (
            policy_key.map(opush_engine::PolicyKey),
            opush_engine::ProtocolVersion::V16_1,
        );
        let check = opush_engine::check_policy(
            session.state(),
            engine_command(command),
            header_key,
            version,
            &config,
        );
        let mut events = Vec::with_capacity(2);
        if !meta.was_recorded() {
            events.push(meta.received());
        }
        events.push(Event::PolicyChecked {
            req_id: meta.req_id,
            at: meta.at,
            command: engine_command(command),
            header_key,
            version,
            require_provisioning,
            check,
        });
        session.commit(&events).await.map_err(session_error)?;
        meta.recorded.store(true, Ordering::Release);
        Ok(match check {
            opush_engine::PolicyCheck::Allowed => ProvisionVerdict::Pass,
            opush_engine::PolicyCheck::Status(140) => ProvisionVerdict::RemoteWipe,
            opush_engine::PolicyCheck::Status(143) => ProvisionVerdict::PolicyRefresh,
            opush_engine::PolicyCheck::Status(144) => ProvisionVerdict::InvalidPolicyKey,
            opush_engine::PolicyCheck::Status(_) | opush_engine::PolicyCheck::Http449 => {
                ProvisionVerdict::NotProvisioned
            }
        })
    }

    /// The caller's device session (this request is its one writer) and a
    /// [`Recorder`] of `command` on it: the preamble of every command that
    /// observes, decides and records.
    pub async fn open_recorded(
        &self,
        caller: &Caller<'_>,
        command: opush_protocol::query::Command,
    ) -> Result<(DeviceSession<'_>, Recorder), crate::commands::CommandError> {
        let session = self
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        let rec = Recorder::new(&session, self, command);
        Ok((session, rec))
    }

    /// [`EasServices::open_recorded`] for a command with backend effects:
    /// the device's lease is taken ([`DeviceSession::lease`]) before the
    /// recorder copies the state. Release the lease after the append.
    pub async fn open_leased(
        &self,
        caller: &Caller<'_>,
        command: opush_protocol::query::Command,
    ) -> Result<(DeviceSession<'_>, DeviceLease, Recorder), crate::commands::CommandError> {
        let mut session = self
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        let lease = session.lease().await?;
        let rec = Recorder::new(&session, self, command);
        Ok((session, lease, rec))
    }

    /// The caller's device state, shared (no copy), for a read-only
    /// command that records nothing (the device's session is held only
    /// while it is looked up).
    pub async fn device_state(
        &self,
        caller: &Caller<'_>,
    ) -> Result<Arc<opush_engine::DeviceState>, crate::commands::CommandError> {
        let session = self
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        Ok(session.shared_state())
    }

    /// An IMAP session for a request: as the caller with its own password,
    /// or through the master user when `[imap] master_for_requests` is set.
    pub async fn imap_for(
        &self,
        caller: &Caller<'_>,
    ) -> Result<crate::backends::imap::PooledSession, crate::commands::CommandError> {
        self.imap_selecting(caller, &[]).await
    }

    /// [`EasServices::imap_for`], preferring an idle session that has one
    /// of `mailboxes` selected (see `ImapPool::get_selecting`).
    pub async fn imap_selecting(
        &self,
        caller: &Caller<'_>,
        mailboxes: &[String],
    ) -> Result<crate::backends::imap::PooledSession, crate::commands::CommandError> {
        let res = if self.imap.config().master_for_requests {
            self.imap.get_master_selecting(caller.user, mailboxes).await
        } else {
            self.imap
                .get_selecting(caller.user, caller.password, mailboxes)
                .await
        };
        res.map_err(|e| match e {
            crate::backends::imap::ImapError::Auth { user } => {
                crate::commands::CommandError::CredentialsRejected(user)
            }
            e => imap_error(e),
        })
    }
}

/// Maps an IMAP failure to the handler error (the device retries).
pub fn imap_error(e: crate::backends::imap::ImapError) -> crate::commands::CommandError {
    if let crate::backends::imap::ImapError::Fenced(f) = e {
        return crate::commands::CommandError::LeaseLost(f);
    }
    crate::commands::CommandError::BackendFailed {
        backend: "imap",
        kind: e.kind(),
        reason: e.to_string(),
    }
}

/// The store key of a user's device (a bad id is the request's fault).
pub fn device_key(user: &str, device_id: &str) -> Result<DeviceKey, crate::commands::CommandError> {
    DeviceKey::new(user, device_id).map_err(|e| crate::commands::CommandError::InvalidRequest {
        command: opush_protocol::query::Command::Sync,
        reason: format!("device key: {e}"),
    })
}

/// The engine's notion of now (Unix milliseconds), taken at the edge.
pub fn now() -> opush_engine::Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    opush_engine::Timestamp(ms)
}

/// Maps a session failure to the handler error (`crate::error` renders it).
pub fn session_error(e: SessionError) -> crate::commands::CommandError {
    if let SessionError::Fenced(f) = e {
        return crate::commands::CommandError::LeaseLost(f);
    }
    crate::commands::CommandError::StorageUnavailable(e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn cache_with(names: &[&str]) -> SlotCache {
        let mut cache = SlotCache::default();
        for name in names {
            let slot = Slot {
                loaded: Some(Loaded::default()),
                ..Slot::default()
            };
            cache.map.insert(
                (*name).to_owned(),
                CacheEntry {
                    slot: Arc::new(AsyncMutex::new(slot)),
                    tick: None,
                    bytes: 0,
                },
            );
            cache.touch(name, Some(1000));
        }
        cache
    }

    /// A state with `items` synced-looking items in one collection.
    fn state_with(items: u32) -> DeviceState {
        let mut state = DeviceState::default();
        let mut c = opush_engine::CollectionState::new(opush_engine::FolderType::Inbox);
        for i in 0..items {
            c.items.insert(
                opush_engine::BackendItemId(format!("1700000000/{i}")),
                opush_engine::Item::default(),
            );
        }
        state.collections.insert(opush_engine::CollectionId(1), c);
        state
    }

    #[test]
    fn large_states_are_snapshotted_once_the_events_outweigh_them() {
        let mark = |seq, bytes_since| SnapshotMark { seq, bytes_since };
        let small = state_with(10);
        let large = state_with(10_000);
        let size = opush_engine::snapshot_size_hint(&large) as u64;
        assert!(size > 1_000_000, "{size}");
        // Never with 0, never before `every` events.
        assert!(!snapshot_due(0, 500, mark(0, u64::MAX), &small));
        assert!(!snapshot_due(100, 99, mark(0, u64::MAX), &large));
        // A small state: every `every` events, whatever their size.
        assert!(snapshot_due(100, 100, mark(0, 10), &small));
        assert!(snapshot_due(100, 250, mark(150, 0), &small));
        // A large one: once the events since weigh a snapshot...
        assert!(!snapshot_due(100, 100, mark(0, size - 1), &large));
        assert!(snapshot_due(100, 100, mark(0, size), &large));
        assert!(!snapshot_due(100, 1_000, mark(100, size / 2), &large));
        // ...or after 16 times `every` events.
        assert!(!snapshot_due(100, 1_699, mark(100, 0), &large));
        assert!(snapshot_due(100, 1_700, mark(100, 0), &large));
    }

    fn has_state(cache: &SlotCache, name: &str) -> bool {
        cache
            .map
            .get(name)
            .is_some_and(|e| e.slot.try_lock().unwrap().loaded.is_some())
    }

    #[test]
    fn the_least_recently_used_idle_states_are_dropped_first() {
        let mut cache = cache_with(&["a", "b", "c", "d"]);
        // `a` used again: `b` is now the oldest.
        cache.touch("a", Some(1000));
        // `b` is held by a request, `c` has deferred trace events.
        let held = cache.map["b"].slot.clone();
        cache.map["c"]
            .slot
            .try_lock()
            .unwrap()
            .pending
            .push(Event::PingArmed {
                folders: Vec::new(),
                heartbeat: 60,
            });
        cache.evict(2, usize::MAX);
        assert_eq!(cache.order.len(), 2);
        assert!(has_state(&cache, "b"), "a held device keeps its state");
        assert!(has_state(&cache, "a"), "the most recent one stays");
        // `c` lost its state but keeps its pending events; `d` left.
        assert!(!has_state(&cache, "c"));
        assert_eq!(cache.map["c"].slot.try_lock().unwrap().pending.len(), 1);
        assert!(!cache.map.contains_key("d"));
        assert_eq!(cache.bytes, 2000);
        drop(held);

        // The byte bound alone.
        let mut cache = cache_with(&["x", "y", "z"]);
        cache.evict(usize::MAX, 2500);
        assert_eq!(cache.order.len(), 2);
        assert!(!cache.map.contains_key("x"));
        assert_eq!(cache.bytes, 2000);
    }

    /// A held lease is renewed while its request runs (here three TTLs
    /// long), so no other holder takes it meanwhile, and the request's
    /// effects are not fenced; released, it is free. A lease a renewal
    /// finds gone fences the request's effects. The embedded store's
    /// leases (in memory) stand in for Cassandra's.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_lease_is_renewed_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = opush_storage::StorageConfig {
            path: dir.path().to_path_buf(),
            ..opush_storage::StorageConfig::default()
        };
        let store = Arc::new(Store::open(&cfg).await.unwrap());
        store.install_schema().await.unwrap();
        let device = DeviceKey::new("ann@example.test", "DEV1").unwrap();
        // Renewed every second, unproven 1.5 s after the last renewal: a
        // renewal may come 500 ms late on a loaded machine.
        let ttl = std::time::Duration::from_secs(3);
        let meta = RequestMeta::new(
            opush_protocol::query::Command::Sync,
            opush_protocol::version::ProtocolVersion::V14_1,
            b"",
        );
        let now = tokio::time::Instant::now;
        meta.clone()
            .scope(async {
                assert!(store.take_lease(&device, "p:1", ttl).await.unwrap());
                let lease =
                    DeviceLease::hold(store.clone(), device.clone(), "p:1".into(), ttl, now());
                for _ in 0..3 {
                    tokio::time::sleep(ttl / 2).await;
                    assert!(
                        !store.take_lease(&device, "q:1", ttl).await.unwrap(),
                        "renewed: still held"
                    );
                    crate::fence::check("APPEND").unwrap();
                }
                lease.release().await;
                assert!(store.take_lease(&device, "q:1", ttl).await.unwrap());
                // Dropped unreleased (an error on the way): released in the
                // background.
                assert!(store.release_lease(&device, "q:1").await.unwrap());
                assert!(store.take_lease(&device, "p:2", ttl).await.unwrap());
                drop(DeviceLease::hold(
                    store.clone(),
                    device.clone(),
                    "p:2".into(),
                    ttl,
                    now(),
                ));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                assert!(store.take_lease(&device, "q:2", ttl).await.unwrap());
                crate::fence::check("APPEND").unwrap();
                assert!(meta.fenced().is_none());
                // Held by another holder before the renewal: lost, fenced.
                let lease =
                    DeviceLease::hold(store.clone(), device.clone(), "p:3".into(), ttl, now());
                tokio::time::sleep(ttl / 2).await;
                assert!(crate::fence::check("APPEND").is_err());
                assert_eq!(meta.fenced().unwrap().what, "APPEND");
                lease.release().await;
                crate::fence::check("APPEND").unwrap();
            })
            .await;
    }
}
