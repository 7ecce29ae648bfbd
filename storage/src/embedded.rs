//! The embedded backend: one redb file and its journal in a data directory,
//! zero set-up.
//!
//! Why redb: its commits are atomic and checksummed, and its B-tree makes
//! the per-device range scans cheap (see docs/STORAGE.md). redb has no TTL,
//! so every row carries its expiry time, reads skip expired rows, and a
//! background thread deletes them through an index keyed by expiry time.
//!
//! Durability comes from the journal (`journal.rs`): a group's rows
//! are appended to the journal and synced before the group is committed
//! in redb without durability and answered, and a checkpoint (a durable
//! redb commit) empties the journal every [`StorageConfig::checkpoint_ms`]
//! or [`CHECKPOINT_BYTES`]. "An acknowledged append survives `kill -9`"
//! holds through the journal's replay at the next open. The group commits
//! wait only for a checkpoint's first part (its redb commit, with the page
//! writes and the sync deferred, and a switch of journal files); the
//! checkpoint thread writes the pages out, syncs the redb file and empties
//! the retired journal file meanwhile (`redb_file.rs`).
//!
//! All keys are byte strings built here (`user \0 device \0 …`; ids never
//! contain NUL). Blocking redb calls run on tokio's blocking pool; this
//! module must not block an async worker thread.
//!
//! Appends are group-committed: redb has one write transaction at a
//! time, and each group costs a journal sync, so concurrent devices'
//! appends would each wait for all the syncs before theirs. One writer thread instead takes
//! every append queued while the previous commit ran (up to
//! [`GROUP_MAX_APPENDS`] / [`GROUP_MAX_BYTES`]), applies them in order in
//! one transaction — each still conditional on its device's head, seeing
//! the earlier ones of the group — and commits once. Each caller is
//! answered only after that commit returned, with its own outcome: a
//! conflict or bad input fails that append alone (it wrote nothing); a
//! failed commit, or any other error, fails every append of the group and
//! none of them is written. Device-registry rows, snapshots and captures
//! (written on a request's path too) join the same groups: none takes a
//! write transaction of its own, which would hold the groups back.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};

use crate::journal::{Journal, Row, Rows};
use crate::redb_file::{RedbFile, SyncHandle};

use crate::model::{digest, now_ms};
use crate::schema::{
    MigrationOptions, MigrationReport, SchemaStatus, LATEST_SCHEMA, MIN_SUPPORTED_SCHEMA,
};
use crate::schema::{SENT_COPIES_SCHEMA, SENT_COPY_INFO_SCHEMA};
use crate::{
    AppendBatch, Capture, DeviceChange, DeviceKey, DeviceRecord, Result, SentCopy, SentCopyInfo,
    SentCopyNote, Snapshot, StorageConfig, StorageError, StoredEvent,
};

const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const HEADS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("heads");
const EVENTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("events");
const SNAPSHOTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("snapshots");
const DEVICES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("devices");
const CAPTURES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("captures");
/// Pending Sent copies (schema v3): `user \0 message_id` →
/// expires ‖ created_ms ‖ last_try_ms ‖ tries ‖ blake3 ‖ bytes. From
/// schema v5 the message only: its `created_ms`, `last_try_ms` and `tries`
/// are those of the put, [`SENT_INFO`] holds the current ones.
const SENT_COPIES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sent_copies");
/// What a pending Sent copy's listing and tries read without its message
/// (schema v5), same key: see [`encode_sent_info`]. Claims and notes of
/// tries rewrite this row only (never the message's).
const SENT_INFO: TableDefinition<&[u8], &[u8]> = TableDefinition::new("sent_copy_info");
const EXPIRY: TableDefinition<&[u8], ()> = TableDefinition::new("expiry");

const META_VERSION: &str = "schema_version";
const META_INSTALLED: &str = "schema_installed_at_ms";
const META_MIGRATION_V2: &str = "migration_v1_v2_last_key";

/// Table tags in the expiry index.
const T_HEAD: u8 = 1;
const T_EVENT: u8 = 2;
const T_SNAPSHOT: u8 = 3;
const T_DEVICE: u8 = 4;
const T_CAPTURE: u8 = 5;
/// The expiry index itself (journal rows only).
const T_EXPIRY: u8 = 6;
const T_SENT_COPY: u8 = 7;
/// `sent_copy_info` (schema v5): expires with its `sent_copies` row (the
/// expiry index has the latter's entry only).
const T_SENT_INFO: u8 = 8;

/// Bytes before the copy in a `sent_copies` row.
const SENT_HEADER: usize = 8 + 8 + 8 + 4 + 32;

/// Event row layouts: 1 = schema v1 (no digest), 2 = schema v2 (digest).
const LAYOUT_V1: u8 = 1;
const LAYOUT_V2: u8 = 2;

fn backend<E: std::fmt::Display>(e: E) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn now_s() -> u64 {
    (now_ms().max(0) / 1000) as u64
}

fn corrupt(what: &str) -> StorageError {
    StorageError::Corrupt(format!("embedded store: malformed {what} row"))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(u64::from_le_bytes)
}

fn device_prefix(device: &DeviceKey) -> Vec<u8> {
    let mut k = device.to_bytes();
    k.push(0);
    k
}

fn event_key(device: &DeviceKey, seq: u64) -> Vec<u8> {
    let mut k = device_prefix(device);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

/// Upper bound of every key that starts with `prefix` (prefix ends with NUL
/// or is followed only by bytes; replacing its last byte by last+1 works for
/// our NUL-terminated prefixes).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// `user \0 message_id`: a pending Sent copy's key.
fn sent_key(user: &str, message_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.len() + 1 + message_id.len());
    k.extend_from_slice(user.as_bytes());
    k.push(0);
    k.extend_from_slice(message_id.as_bytes());
    k
}

fn encode_sent_copy(copy: &SentCopy, expires: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(SENT_HEADER + copy.bytes.len());
    v.extend_from_slice(&expires.to_le_bytes());
    v.extend_from_slice(&copy.created_ms.to_le_bytes());
    v.extend_from_slice(&copy.last_try_ms.to_le_bytes());
    v.extend_from_slice(&copy.tries.to_le_bytes());
    v.extend_from_slice(&digest(&copy.bytes));
    v.extend_from_slice(&copy.bytes);
    v
}

/// The message of a `sent_copies` row, its digest checked; `None` when
/// expired.
fn decode_sent_bytes<'a>(info: &SentCopyInfo, v: &'a [u8], now: u64) -> Result<Option<&'a [u8]>> {
    let bad = || corrupt("sent copy");
    let expires = u64_at(v, 0).ok_or_else(bad)?;
    if expires <= now {
        return Ok(None);
    }
    let dig = v.get(28..SENT_HEADER).ok_or_else(bad)?;
    let bytes = &v[SENT_HEADER..];
    if digest(bytes) != dig {
        return Err(StorageError::Corrupt(format!(
            "sent copy {} of {}: digest mismatch",
            info.message_id, info.user
        )));
    }
    Ok(Some(bytes))
}

/// Bytes before the texts in a `sent_copy_info` row.
const INFO_HEADER: usize = 8 + 8 + 8 + 4 + 8 + 8;

/// A `sent_copy_info` row: expires ‖ created_ms ‖ last_try_ms ‖ tries ‖
/// next_try_ms ‖ size, then the device id, the subject and the last error,
/// each a u16 length and its bytes (the error's length `u16::MAX` when
/// there is none).
fn encode_sent_info(info: &SentCopyInfo, expires: u64) -> Vec<u8> {
    let err = info.last_error.as_deref();
    let mut v = Vec::with_capacity(
        INFO_HEADER + 6 + info.device_id.len() + info.subject.len() + err.map_or(0, str::len),
    );
    v.extend_from_slice(&expires.to_le_bytes());
    v.extend_from_slice(&info.created_ms.to_le_bytes());
    v.extend_from_slice(&info.last_try_ms.to_le_bytes());
    v.extend_from_slice(&info.tries.to_le_bytes());
    v.extend_from_slice(&info.next_try_ms.to_le_bytes());
    v.extend_from_slice(&info.size.to_le_bytes());
    // Lengths are bounded by `validate_sent_texts` (at most 500 bytes).
    for text in [
        Some(info.device_id.as_str()),
        Some(info.subject.as_str()),
        err,
    ] {
        match text {
            Some(t) => {
                v.extend_from_slice(&(t.len().min(usize::from(u16::MAX - 1)) as u16).to_le_bytes());
                v.extend_from_slice(t.as_bytes());
            }
            None => v.extend_from_slice(&u16::MAX.to_le_bytes()),
        }
    }
    v
}

/// The user and Message-ID of a `user \0 message_id` key.
fn split_sent_key(key: &[u8]) -> Result<(String, String)> {
    let bad = || corrupt("sent copy");
    let sep = key.iter().position(|&c| c == 0).ok_or_else(bad)?;
    let user = String::from_utf8(key[..sep].to_vec()).map_err(|_| bad())?;
    let message_id = String::from_utf8(key[sep + 1..].to_vec()).map_err(|_| bad())?;
    Ok((user, message_id))
}

/// Decodes a `sent_copy_info` row; `None` when expired.
fn decode_sent_info(key: &[u8], v: &[u8], now: u64) -> Result<Option<SentCopyInfo>> {
    let bad = || corrupt("sent copy info");
    let expires = u64_at(v, 0).ok_or_else(bad)?;
    if expires <= now {
        return Ok(None);
    }
    let (user, message_id) = split_sent_key(key)?;
    let i64_at = |at| u64_at(v, at).map(|x| x as i64).ok_or_else(bad);
    let tries = v
        .get(24..28)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(bad)?;
    let mut at = INFO_HEADER;
    let mut text = || -> Result<Option<String>> {
        let len = v
            .get(at..at + 2)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_le_bytes)
            .ok_or_else(bad)?;
        at += 2;
        if len == u16::MAX {
            return Ok(None);
        }
        let end = at + usize::from(len);
        let t = v.get(at..end).ok_or_else(bad)?;
        at = end;
        String::from_utf8(t.to_vec()).map(Some).map_err(|_| bad())
    };
    let device_id = text()?.unwrap_or_default();
    let subject = text()?.unwrap_or_default();
    let last_error = text()?;
    Ok(Some(SentCopyInfo {
        user,
        message_id,
        device_id,
        subject,
        size: u64_at(v, 36).ok_or_else(bad)?,
        created_ms: i64_at(8)?,
        last_try_ms: i64_at(16)?,
        tries,
        next_try_ms: i64_at(28)?,
        last_error,
    }))
}

/// The `sent_copy_info` row a migration to v5 makes of a `sent_copies`
/// row of v3/v4 (its header, and the message's size).
fn info_of_v4_row(key: &[u8], v: &[u8]) -> Result<(u64, SentCopyInfo)> {
    let bad = || corrupt("sent copy");
    let expires = u64_at(v, 0).ok_or_else(bad)?;
    if v.len() < SENT_HEADER {
        return Err(bad());
    }
    let (user, message_id) = split_sent_key(key)?;
    let tries = v
        .get(24..28)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(bad)?;
    Ok((
        expires,
        SentCopyInfo {
            user,
            message_id,
            size: (v.len() - SENT_HEADER) as u64,
            created_ms: u64_at(v, 8).ok_or_else(bad)? as i64,
            last_try_ms: u64_at(v, 16).ok_or_else(bad)? as i64,
            tries,
            ..SentCopyInfo::default()
        },
    ))
}

fn sent_copies_need_v5(version: u32) -> StorageError {
    StorageError::SchemaMismatch(format!(
        "pending Sent copies need schema version {SENT_COPY_INFO_SCHEMA} (this store has {version}): run `opush schema update`"
    ))
}

fn check_part(what: &str, s: &str) -> Result<()> {
    if s.is_empty() || s.len() > crate::model::MAX_ID_LEN || s.contains('\0') {
        return Err(StorageError::InvalidInput(format!(
            "{what} must be 1-256 bytes without NUL"
        )));
    }
    Ok(())
}

fn index_expiry(
    txn: &WriteTransaction,
    rows: &mut Rows,
    expires: u64,
    table: u8,
    key: &[u8],
) -> Result<()> {
    let mut ix = txn.open_table(EXPIRY).map_err(backend)?;
    index_expiry_in(&mut ix, rows, expires, table, key)
}

/// The expiry index row of a row rewritten in place (a device's head, its
/// registry row, a snapshot): the row's previous expiry `old` (read from
/// the row being replaced) is dropped from the index, so the index keeps
/// one entry per row, not one per write until the old ones expire.
fn reindex_expiry_in(
    ix: &mut redb::Table<'_, &'static [u8], ()>,
    rows: &mut Rows,
    old: Option<u64>,
    expires: u64,
    table: u8,
    key: &[u8],
) -> Result<()> {
    if let Some(old) = old.filter(|o| *o != expires) {
        let mut k = Vec::with_capacity(9 + key.len());
        k.extend_from_slice(&old.to_be_bytes());
        k.push(table);
        k.extend_from_slice(key);
        ix.remove(k.as_slice()).map_err(backend)?;
        rows.remove(T_EXPIRY, &k);
    }
    index_expiry_in(ix, rows, expires, table, key)
}

/// [`index_expiry`] into an expiry table already open (an append opens it
/// once for all its rows).
fn index_expiry_in(
    ix: &mut redb::Table<'_, &'static [u8], ()>,
    rows: &mut Rows,
    expires: u64,
    table: u8,
    key: &[u8],
) -> Result<()> {
    let mut k = Vec::with_capacity(9 + key.len());
    k.extend_from_slice(&expires.to_be_bytes());
    k.push(table);
    k.extend_from_slice(key);
    ix.insert(k.as_slice(), ()).map_err(backend)?;
    rows.put(T_EXPIRY, &k, &[]);
    Ok(())
}

fn encode_event(layout: u8, format_version: u16, expires: u64, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(1 + 2 + 8 + 32 + payload.len());
    v.push(layout);
    v.extend_from_slice(&format_version.to_le_bytes());
    v.extend_from_slice(&expires.to_le_bytes());
    if layout == LAYOUT_V2 {
        v.extend_from_slice(&digest(payload));
    }
    v.extend_from_slice(payload);
    v
}

/// Decodes an event row; `None` when expired.
fn decode_event(seq: u64, v: &[u8], now: u64) -> Result<Option<StoredEvent>> {
    let layout = *v.first().ok_or_else(|| corrupt("event"))?;
    let fmt = v
        .get(1..3)
        .and_then(|s| s.try_into().ok())
        .map(u16::from_le_bytes)
        .ok_or_else(|| corrupt("event"))?;
    let expires = u64_at(v, 3).ok_or_else(|| corrupt("event"))?;
    if expires <= now {
        return Ok(None);
    }
    let (dig, payload) = match layout {
        LAYOUT_V1 => (None, &v[11..]),
        LAYOUT_V2 => {
            let d: [u8; 32] = v
                .get(11..43)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| corrupt("event"))?;
            let payload = &v[43..];
            if digest(payload) != d {
                return Err(StorageError::Corrupt(format!(
                    "event {seq}: digest mismatch"
                )));
            }
            (Some(d), payload)
        }
        _ => return Err(corrupt("event")),
    };
    Ok(Some(StoredEvent {
        seq,
        format_version: fmt,
        digest: dig,
        payload: payload.to_vec(),
    }))
}

/// Most devices whose head rows [`HeadCache`] keeps; past it, it starts
/// over (each device's next request reads its row again).
const HEAD_CACHE_MAX: usize = 100_000;

/// The heads rows (head, expiry in seconds) of the devices seen lately,
/// so a request's head check reads no redb table.
///
/// Exact, not a guess: redb locks the file to this process, and every
/// change of a heads row is made here — the group commit writes the rows
/// it committed before answering anyone, the expiry thread only removes
/// rows already expired (which read as head 0 here too, from their
/// expiry), and a schema change or a destroy clears the cache. A row read
/// from redb is put in only if no commit put one since the read began
/// (commits overwrite; reads only fill gaps) and the cache was not
/// cleared meanwhile (`generation`).
#[derive(Default)]
struct HeadCache {
    rows: HashMap<Vec<u8>, (u64, u64)>,
    /// Counts the clears: a read begun before one is not put in.
    generation: u64,
}

impl HeadCache {
    /// A row's head at `now`: 0 once it expired (as [`Inner::head_in`]).
    fn live((head, expires): (u64, u64), now: u64) -> u64 {
        if expires <= now {
            0
        } else {
            head
        }
    }

    fn get(&self, key: &[u8], now: u64) -> Option<u64> {
        self.rows.get(key).map(|row| Self::live(*row, now))
    }

    /// A row a commit wrote.
    fn committed(&mut self, key: Vec<u8>, row: (u64, u64)) {
        self.make_room();
        self.rows.insert(key, row);
    }

    /// A row read from redb by a read that began at `generation`.
    fn remember(&mut self, key: Vec<u8>, row: (u64, u64), generation: u64) {
        if generation == self.generation {
            self.make_room();
            self.rows.entry(key).or_insert(row);
        }
    }

    fn make_room(&mut self) {
        if self.rows.len() >= HEAD_CACHE_MAX {
            self.clear();
        }
    }

    fn clear(&mut self) {
        self.rows.clear();
        self.generation += 1;
    }
}

struct Inner {
    /// Each device's head row as last committed or read here (see
    /// [`HeadCache`]).
    heads: Mutex<HeadCache>,
    /// Device leases (`user \0 device` → holder and end), in memory: one
    /// process holds the file, and its session lock already serializes a
    /// device, so they are never written (nothing to recover after a crash).
    leases: Mutex<HashMap<String, (String, std::time::Instant)>>,
    db: Database,
    /// Held by every write transaction: the group commit (which appends to
    /// it) and the durable ones (which empty it). See [`crate::journal`].
    /// Shared with the checkpoint thread, which takes it only to record
    /// that it emptied the retired file.
    journal: Arc<Mutex<Journal>>,
    /// Defers a checkpoint's sync of the redb file, and performs it.
    sync: SyncHandle,
    /// The checkpoint thread's queue: the retired journal file of each
    /// checkpoint, to empty once the redb file is synced. Taken (closed)
    /// when the store is dropped.
    checkpoints: Option<mpsc::Sender<Arc<File>>>,
    /// The checkpoint thread, joined when the store is dropped.
    checkpointer: Option<JoinHandle<()>>,
    cfg: StorageConfig,
    /// Dropping it stops the expiry thread.
    _stop: mpsc::Sender<()>,
    /// The group-commit writer's queue; dropping it stops the writer.
    writes: mpsc::Sender<PendingWrite>,
    /// The installed schema version once read (low 32 bits; 0: not read
    /// since the last change) and a count of changes (high 32 bits). Every
    /// request checks the version, and reading it is a redb read
    /// transaction (~4 % of a no-change Sync's CPU): the file is this
    /// process's alone (redb locks it), so only [`Inner::install`],
    /// [`Inner::update`] and [`Inner::destroy`] change it, and each clears
    /// this after its commit, counting one more change, so that a version
    /// read before the change is never kept after it.
    schema: std::sync::atomic::AtomicU64,
}

/// Most appends committed in one transaction.
pub const GROUP_MAX_APPENDS: usize = 256;
/// Most event bytes committed in one transaction (a bigger single append
/// still goes, alone).
pub const GROUP_MAX_BYTES: usize = 16 * 1024 * 1024;
/// Journal size beyond which the writer checkpoints (a durable redb commit)
/// whatever [`StorageConfig::checkpoint_ms`] says: bounds the journal, the
/// memory redb holds for commits not yet on disk, and a replay after a
/// crash.
pub const CHECKPOINT_BYTES: u64 = 64 * 1024 * 1024;

/// A write the group commit carries: appends, and the other rows a request
/// writes (device registry, snapshots, captures), so that none of them
/// takes a write transaction of its own (redb has one at a time: each would
/// hold the group commits back) or a commit of its own.
enum Write {
    Append(AppendBatch),
    Device(DeviceRecord),
    /// A device row changed as stored ([`crate::Store::change_device`]).
    DeviceChange(Box<DeviceChange>),
    Snapshot(Box<SnapshotWrite>),
    Capture(Box<CaptureWrite>),
    /// A pending Sent copy put (schema v3).
    SentCopy(Box<SentCopy>),
    /// A try claimed: `(user, message_id, seen, tries, at_ms)`.
    SentCopyTried(Box<(String, String, i64, u32, i64)>),
    /// A try's outcome noted: `(user, message_id, seen, note)`.
    SentCopyNoted(Box<(String, String, i64, SentCopyNote)>),
    /// A pending Sent copy deleted: `(user, message_id)`.
    SentCopyDelete(Box<(String, String)>),
}

impl Write {
    /// Whether it needs the `sent_copies` table.
    fn needs_sent_copies(&self) -> bool {
        matches!(
            self,
            Write::SentCopy(_)
                | Write::SentCopyTried(_)
                | Write::SentCopyNoted(_)
                | Write::SentCopyDelete(_)
        )
    }
}

/// A snapshot to put ([`crate::Store::put_snapshot`]).
struct SnapshotWrite {
    device: DeviceKey,
    collection: String,
    snap: Snapshot,
}

/// A capture to put ([`crate::Store::put_capture`]).
struct CaptureWrite {
    device: DeviceKey,
    req_id: String,
    kind: String,
    bytes: Vec<u8>,
    ttl: Duration,
}

/// A write waiting for the group commit, and where its outcome goes (an
/// append's new head; 0 for a device row).
struct PendingWrite {
    write: Write,
    done: tokio::sync::oneshot::Sender<Result<u64>>,
}

impl PendingWrite {
    fn bytes(&self) -> usize {
        match &self.write {
            Write::Append(batch) => batch.events.iter().map(|e| e.payload.len()).sum(),
            Write::Device(_) | Write::DeviceChange(_) => 0,
            Write::Snapshot(w) => w.snap.payload.len(),
            Write::Capture(w) => w.bytes.len(),
            Write::SentCopy(c) => c.bytes.len(),
            Write::SentCopyTried(_) | Write::SentCopyNoted(_) | Write::SentCopyDelete(_) => 0,
        }
    }
}

/// The embedded store. Cheap to clone.
#[derive(Clone)]
pub struct EmbeddedStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("path", &self.inner.cfg.path)
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) `<cfg.path>/opush.redb` and starts the
    /// background expiry thread. Does not install a schema.
    pub fn open(cfg: &StorageConfig) -> Result<Self> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.path).map_err(|e| {
            StorageError::Config(format!("cannot create {}: {e}", cfg.path.display()))
        })?;
        let cache =
            usize::try_from(cfg.cache_mb.max(1).saturating_mul(1024 * 1024)).unwrap_or(usize::MAX);
        let redb_path = cfg.path.join("opush.redb");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&redb_path)
            .map_err(|e| StorageError::Backend(format!("{}: {e}", redb_path.display())))?;
        let (redb_file, sync) = RedbFile::new(file).map_err(backend)?;
        let db = Database::builder()
            .set_cache_size(cache)
            .create_with_backend(redb_file)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => StorageError::Unavailable(format!(
                    "{} is open in another process",
                    cfg.path.display()
                )),
                other => backend(other),
            })?;
        let journal = Arc::new(Mutex::new(replay_journal(&db, &cfg.path)?));
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let (append_tx, append_rx) = mpsc::channel::<PendingWrite>();
        let (ckpt_tx, ckpt_rx) = mpsc::channel::<Arc<File>>();
        let checkpointer = {
            let (sync, journal) = (sync.clone(), journal.clone());
            std::thread::Builder::new()
                .name("opush-storage-checkpoint".into())
                .spawn(move || checkpoint_loop(ckpt_rx, sync, journal))
                .map_err(backend)?
        };
        let inner = Arc::new(Inner {
            db,
            journal,
            sync,
            checkpoints: Some(ckpt_tx),
            checkpointer: Some(checkpointer),
            cfg: cfg.clone(),
            _stop: stop_tx,
            writes: append_tx,
            schema: std::sync::atomic::AtomicU64::new(0),
            heads: Mutex::new(HeadCache::default()),
            leases: Mutex::new(HashMap::new()),
        });
        let weak = Arc::downgrade(&inner);
        let every = Duration::from_secs(cfg.expiry_interval_s.max(1));
        std::thread::Builder::new()
            .name("opush-storage-expiry".into())
            .spawn(move || expiry_loop(weak, stop_rx, every))
            .map_err(backend)?;
        let weak = Arc::downgrade(&inner);
        let checkpoint_every = Duration::from_millis(cfg.checkpoint_ms.max(1));
        std::thread::Builder::new()
            .name("opush-storage-writer".into())
            .spawn(move || writer_loop(weak, append_rx, checkpoint_every))
            .map_err(backend)?;
        Ok(EmbeddedStore { inner })
    }

    /// Runs `f` on the blocking pool with the shared state.
    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || f(&inner))
            .await
            .map_err(|e| StorageError::Backend(format!("storage task failed: {e}")))?
    }

    /// See [`crate::Store::schema_status`].
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        self.run(|i| i.schema_status()).await
    }

    /// See [`crate::Store::install_schema_version`].
    pub async fn install_schema_version(&self, version: u32) -> Result<()> {
        self.run(move |i| i.install(version)).await
    }

    /// See [`crate::Store::update_schema`].
    pub async fn update_schema(&self, opts: MigrationOptions) -> Result<MigrationReport> {
        self.run(move |i| i.update(opts)).await
    }

    /// See [`crate::Store::head`].
    ///
    /// Every request reads its device's head (the session's check that no
    /// other writer moved it), so it is answered from `HeadCache` when it
    /// can: the blocking pool's hand-off costs two thread wake-ups, most of
    /// a paced no-change Sync's storage time.
    pub async fn head(&self, device: DeviceKey) -> Result<u64> {
        device.validate()?;
        let key = device.to_bytes();
        let now = now_s();
        let generation = {
            let heads = self.inner.lock_heads();
            if let Some(head) = heads.get(&key, now) {
                return Ok(head);
            }
            heads.generation
        };
        let row = self.run(move |i| i.head_row(&device)).await?;
        self.inner.lock_heads().remember(key, row, generation);
        Ok(HeadCache::live(row, now))
    }

    /// See [`crate::Store::append`]. Answered once the group commit that
    /// carries it is durable (see the module docs).
    pub async fn append(&self, batch: AppendBatch) -> Result<u64> {
        self.group_write(Write::Append(batch)).await
    }

    /// Queues `write` for the group commit; its outcome once committed.
    async fn group_write(&self, write: Write) -> Result<u64> {
        let (done, outcome) = tokio::sync::oneshot::channel();
        self.inner
            .writes
            .send(PendingWrite { write, done })
            .map_err(|_| StorageError::Backend("embedded store writer stopped".into()))?;
        outcome
            .await
            .map_err(|_| StorageError::Backend("embedded store writer stopped".into()))?
    }

    /// See [`crate::Store::read_events`].
    pub async fn read_events(&self, device: DeviceKey, from_seq: u64) -> Result<Vec<StoredEvent>> {
        self.run(move |i| i.read_events(&device, from_seq)).await
    }

    /// See [`crate::Store::put_snapshot`].
    pub async fn put_snapshot(
        &self,
        device: DeviceKey,
        collection: String,
        snap: Snapshot,
    ) -> Result<()> {
        let w = SnapshotWrite {
            device,
            collection,
            snap,
        };
        self.group_write(Write::Snapshot(Box::new(w)))
            .await
            .map(|_| ())
    }

    /// See [`crate::Store::get_snapshot`].
    pub async fn get_snapshot(
        &self,
        device: DeviceKey,
        collection: String,
    ) -> Result<Option<Snapshot>> {
        self.run(move |i| i.get_snapshot(&device, &collection))
            .await
    }

    /// See [`crate::Store::put_device`] (group-committed, like appends).
    pub async fn put_device(&self, rec: DeviceRecord) -> Result<()> {
        self.group_write(Write::Device(rec)).await.map(|_| ())
    }

    /// See [`crate::Store::change_device`]: applied inside the group
    /// commit's write transaction, to the row as it is there.
    pub async fn change_device(&self, change: DeviceChange) -> Result<Option<DeviceRecord>> {
        let key = change.key.clone();
        self.group_write(Write::DeviceChange(Box::new(change)))
            .await?;
        self.get_device(key).await
    }

    /// See [`crate::Store::get_device`].
    pub async fn get_device(&self, key: DeviceKey) -> Result<Option<DeviceRecord>> {
        self.run(move |i| i.get_device(&key)).await
    }

    /// See [`crate::Store::list_devices`].
    pub async fn list_devices(&self, user: Option<String>) -> Result<Vec<DeviceRecord>> {
        self.run(move |i| i.list_devices(user.as_deref())).await
    }

    /// See [`crate::Store::put_capture`].
    pub async fn put_capture(
        &self,
        device: DeviceKey,
        req_id: String,
        kind: String,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<()> {
        let w = CaptureWrite {
            device,
            req_id,
            kind,
            bytes,
            ttl,
        };
        self.group_write(Write::Capture(Box::new(w)))
            .await
            .map(|_| ())
    }

    /// See [`crate::Store::get_captures`].
    pub async fn get_captures(&self, device: DeviceKey) -> Result<Vec<Capture>> {
        self.run(move |i| i.get_captures(&device)).await
    }

    /// See [`crate::Store::put_sent_copy`] (group-committed).
    pub async fn put_sent_copy(&self, copy: SentCopy) -> Result<()> {
        self.group_write(Write::SentCopy(Box::new(copy)))
            .await
            .map(|_| ())
    }

    /// See [`crate::Store::sent_copies`] (every user's when `None`).
    pub async fn sent_copies(&self, user: Option<String>) -> Result<Vec<SentCopyInfo>> {
        self.run(move |i| i.sent_copies(user.as_deref())).await
    }

    /// See [`crate::Store::sent_copy`].
    pub async fn sent_copy(&self, user: String, message_id: String) -> Result<Option<SentCopy>> {
        self.run(move |i| i.sent_copy(&user, &message_id)).await
    }

    /// See [`crate::Store::note_sent_copy_try`] (group-committed).
    pub async fn note_sent_copy_try(
        &self,
        user: String,
        message_id: String,
        seen: i64,
        note: SentCopyNote,
    ) -> Result<bool> {
        let w = Write::SentCopyNoted(Box::new((user, message_id, seen, note)));
        self.group_write(w).await.map(|found| found == 1)
    }

    /// See [`crate::Store::claim_sent_copy_try`] (group-committed).
    pub async fn claim_sent_copy_try(
        &self,
        user: String,
        message_id: String,
        seen: i64,
        tries: u32,
        at_ms: i64,
    ) -> Result<bool> {
        let w = Write::SentCopyTried(Box::new((user, message_id, seen, tries, at_ms)));
        self.group_write(w).await.map(|found| found == 1)
    }

    /// See [`crate::Store::delete_sent_copy`] (group-committed).
    pub async fn delete_sent_copy(&self, user: String, message_id: String) -> Result<()> {
        self.group_write(Write::SentCopyDelete(Box::new((user, message_id))))
            .await
            .map(|_| ())
    }

    /// The lease table, however a panicking holder left it.
    fn leases(&self) -> MutexGuard<'_, HashMap<String, (String, std::time::Instant)>> {
        self.inner.leases.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`crate::Store::take_lease`] (in memory, no I/O).
    pub fn take_lease(&self, device: &DeviceKey, holder: &str, ttl: Duration) -> bool {
        let now = std::time::Instant::now();
        let mut leases = self.leases();
        match leases.get(&device.to_string()) {
            Some((h, until)) if *until > now && h != holder => false,
            _ => {
                leases.insert(device.to_string(), (holder.to_owned(), now + ttl));
                true
            }
        }
    }

    /// See [`crate::Store::renew_lease`] (in memory, no I/O).
    pub fn renew_lease(&self, device: &DeviceKey, holder: &str, ttl: Duration) -> bool {
        let now = std::time::Instant::now();
        match self.leases().get_mut(&device.to_string()) {
            Some((h, until)) if *until > now && h == holder => {
                *until = now + ttl;
                true
            }
            _ => false,
        }
    }

    /// See [`crate::Store::release_lease`] (in memory, no I/O).
    pub fn release_lease(&self, device: &DeviceKey, holder: &str) -> bool {
        let now = std::time::Instant::now();
        let mut leases = self.leases();
        let key = device.to_string();
        match leases.get(&key) {
            Some((h, until)) if *until > now && h != holder => false,
            _ => {
                leases.remove(&key);
                true
            }
        }
    }

    /// See [`crate::Store::destroy`].
    pub async fn destroy(&self) -> Result<()> {
        self.run(|i| i.destroy()).await
    }

    /// See [`crate::Store::purge_expired`].
    pub async fn purge_expired(&self) -> Result<u64> {
        self.run(|i| i.purge_expired(now_s())).await
    }
}

/// The group-commit writer: each turn, the appends queued so far in one
/// transaction and one commit. Ends when the store is dropped.
fn writer_loop(inner: Weak<Inner>, queue: mpsc::Receiver<PendingWrite>, every: Duration) {
    loop {
        // Idle with records in the journal: checkpoint once they are
        // `every` old, so a quiet store has its redb file up to date.
        let first = match queue.recv_timeout(every) {
            Ok(first) => first,
            Err(RecvTimeoutError::Timeout) => {
                if let Some(inner) = inner.upgrade() {
                    inner.checkpoint_if_due(every);
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        let mut bytes = first.bytes();
        let mut group = vec![first];
        while group.len() < GROUP_MAX_APPENDS && bytes < GROUP_MAX_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.bytes();
                    group.push(next);
                }
                Err(_) => break,
            }
        }
        let outcomes = match inner.upgrade() {
            Some(inner) => {
                let outcomes = inner.append_group(&group);
                inner.checkpoint_if_due(every);
                outcomes
            }
            None => vec![Err(StorageError::Unavailable("store closed".into())); group.len()],
        };
        // The store is not held while callers are answered: one that drops
        // it right after must find it closed (a reopen would fail otherwise).
        for (pending, outcome) in group.into_iter().zip(outcomes) {
            let _ = pending.done.send(outcome);
        }
    }
}

/// The checkpoint thread: for each checkpoint, once its commit is staged
/// (see [`Inner::checkpoint_if_due`]), writes it out to the redb file,
/// syncs, and empties the journal file the commit made redundant; the
/// group commits go on meanwhile. Ends when the store is dropped. A failure is logged and
/// leaves the retired file as it is (its records are replayed at the next
/// open; no later checkpoint can move the appends to it).
fn checkpoint_loop(
    jobs: mpsc::Receiver<Arc<File>>,
    sync: SyncHandle,
    journal: Arc<Mutex<Journal>>,
) {
    while let Ok(retired) = jobs.recv() {
        finish_checkpoint(&sync, &journal, &retired);
    }
}

/// A checkpoint's second part (see [`Inner::checkpoint_if_due`]): the
/// staged commit written out to the redb file and synced, then the retired
/// journal file emptied, in that order.
fn finish_checkpoint(sync: &SyncHandle, journal: &Mutex<Journal>, retired: &File) {
    let started = std::time::Instant::now();
    if let Err(e) = sync.sync_pending() {
        tracing::error!(target: "storage", error = %e, "checkpoint: cannot sync the redb file; the journal keeps the writes");
        return;
    }
    if let Err(e) = crate::journal::empty_file(retired) {
        tracing::error!(target: "storage", error = %e, "checkpoint: cannot empty the retired journal file");
        return;
    }
    if let Ok(mut j) = journal.lock() {
        j.retired_emptied();
    }
    tracing::debug!(target: "storage", us = started.elapsed().as_micros() as u64, "checkpoint: redb file written out and synced, retired journal file emptied");
}

/// Opens the journal in `dir` and replays its records into redb in one
/// durable commit (a crash or `kill -9` left groups that were acknowledged
/// but not yet written to the redb file, or not yet synced there), then
/// empties it.
fn replay_journal(db: &Database, dir: &Path) -> Result<Journal> {
    let io =
        |e: std::io::Error| StorageError::Backend(format!("journal in {}: {e}", dir.display()));
    let (mut journal, records) = Journal::open(dir).map_err(io)?;
    if records.is_empty() {
        return Ok(journal);
    }
    let txn = db.begin_write().map_err(backend)?;
    let mut applied = 0u64;
    {
        let open = |def| txn.open_table(def).map_err(backend);
        let mut tables = [
            open(HEADS)?,
            open(EVENTS)?,
            open(SNAPSHOTS)?,
            open(DEVICES)?,
            open(CAPTURES)?,
        ];
        let mut expiry = txn.open_table(EXPIRY).map_err(backend)?;
        // Opened only when a record has such rows (a journal of an older
        // schema has none, and must not create the table).
        let mut sent: Option<redb::Table<'_, &'static [u8], &'static [u8]>> = None;
        let mut info: Option<redb::Table<'_, &'static [u8], &'static [u8]>> = None;
        for record in &records {
            for row in crate::journal::rows(record).map_err(StorageError::Corrupt)? {
                let tag = match row {
                    Row::Put { table, .. } | Row::Remove { table, .. } => table,
                };
                // Tags 1-5 are the tables above, in order.
                let table = match tag {
                    T_HEAD | T_EVENT | T_SNAPSHOT | T_DEVICE | T_CAPTURE => {
                        tables.get_mut(usize::from(tag - T_HEAD))
                    }
                    T_SENT_COPY => {
                        if sent.is_none() {
                            sent = Some(txn.open_table(SENT_COPIES).map_err(backend)?);
                        }
                        sent.as_mut()
                    }
                    T_SENT_INFO => {
                        if info.is_none() {
                            info = Some(txn.open_table(SENT_INFO).map_err(backend)?);
                        }
                        info.as_mut()
                    }
                    _ => None,
                };
                match (row, table) {
                    (
                        Row::Put {
                            table: T_EXPIRY,
                            key,
                            ..
                        },
                        _,
                    ) => {
                        expiry.insert(key, ()).map_err(backend)?;
                    }
                    (
                        Row::Remove {
                            table: T_EXPIRY,
                            key,
                        },
                        _,
                    ) => {
                        expiry.remove(key).map_err(backend)?;
                    }
                    (Row::Put { key, value, .. }, Some(t)) => {
                        t.insert(key, value).map_err(backend)?;
                    }
                    (Row::Remove { key, .. }, Some(t)) => {
                        t.remove(key).map_err(backend)?;
                    }
                    (_, None) => {
                        return Err(StorageError::Corrupt(format!(
                            "journal: unknown table {tag}"
                        )))
                    }
                }
                applied += 1;
            }
        }
    }
    txn.commit().map_err(backend)?;
    journal.reset().map_err(io)?;
    tracing::info!(
        target: "storage",
        records = records.len(),
        rows = applied,
        "journal replayed (the store was not closed cleanly)"
    );
    Ok(journal)
}

impl Drop for Inner {
    /// A clean close leaves the redb file complete and the journal empty.
    fn drop(&mut self) {
        // The checkpoint thread finishes its work and stops first: it must
        // not empty a journal file after this store is gone (a store opened
        // next on the same directory appends to it).
        drop(self.checkpoints.take());
        if let Some(t) = self.checkpointer.take() {
            let _ = t.join();
        }
        let inner: &Inner = self;
        if let Ok(mut journal) = inner.journal.lock() {
            if let Err(e) = inner.checkpoint(&mut journal) {
                tracing::warn!(target: "storage", error = %e, "checkpoint at close failed; the journal is replayed at the next open");
            }
        }
    }
}

fn expiry_loop(inner: Weak<Inner>, stop: mpsc::Receiver<()>, every: Duration) {
    loop {
        match stop.recv_timeout(every) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        match inner.purge_expired(now_s()) {
            Ok(n) if n > 0 => tracing::debug!(target: "storage", rows = n, "expired rows deleted"),
            Ok(_) => {}
            Err(e) => tracing::warn!(target: "storage", error = %e, "expiry pass failed"),
        }
    }
}

impl Inner {
    fn installed(&self) -> Result<Option<(u32, i64)>> {
        let txn = self.db.begin_read().map_err(backend)?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(backend(e)),
        };
        let Some(v) = meta.get(META_VERSION).map_err(backend)? else {
            return Ok(None);
        };
        let version = v
            .value()
            .try_into()
            .map(u32::from_le_bytes)
            .map_err(|_| corrupt("meta"))?;
        let at = match meta.get(META_INSTALLED).map_err(backend)? {
            Some(a) => a
                .value()
                .try_into()
                .map(i64::from_le_bytes)
                .map_err(|_| corrupt("meta"))?,
            None => 0,
        };
        Ok(Some((version, at)))
    }

    fn destroy(&self) -> Result<()> {
        let done = self.durable_write(|| self.destroy_now());
        self.forget_schema();
        done
    }

    /// Clears the cached schema version: the next check reads it.
    fn forget_schema(&self) {
        use std::sync::atomic::Ordering;
        // The tables may have been dropped or rebuilt with the schema.
        self.lock_heads().clear();
        let _ = self
            .schema
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |s| {
                Some(((s >> 32).wrapping_add(1)) << 32)
            });
    }

    fn destroy_now(&self) -> Result<()> {
        let txn = self.db.begin_write().map_err(backend)?;
        for t in [
            HEADS,
            EVENTS,
            SNAPSHOTS,
            DEVICES,
            CAPTURES,
            SENT_COPIES,
            SENT_INFO,
        ] {
            txn.delete_table(t).map_err(backend)?;
        }
        txn.delete_table(EXPIRY).map_err(backend)?;
        txn.delete_table(META).map_err(backend)?;
        txn.commit().map_err(backend)
    }

    fn schema_status(&self) -> Result<SchemaStatus> {
        Ok(SchemaStatus::classify(
            self.installed()?,
            LATEST_SCHEMA,
            MIN_SUPPORTED_SCHEMA,
        ))
    }

    /// The installed version, or SchemaMismatch when there is none.
    fn require_schema(&self) -> Result<u32> {
        use std::sync::atomic::Ordering;
        let seen = self.schema.load(Ordering::SeqCst);
        match seen as u32 {
            0 => {}
            v => return Ok(v),
        }
        match self.installed()? {
            Some((v, _)) if v <= LATEST_SCHEMA => {
                // Kept only if no change was counted since `seen`.
                let _ = self.schema.compare_exchange(
                    seen,
                    seen | u64::from(v),
                    Ordering::SeqCst,
                    Ordering::SeqCst,
                );
                Ok(v)
            }
            Some((v, _)) => Err(StorageError::SchemaMismatch(format!(
                "schema version {v} is newer than this code"
            ))),
            None => Err(StorageError::SchemaMismatch(
                "no schema installed: run `opush schema install`".into(),
            )),
        }
    }

    fn install(&self, version: u32) -> Result<()> {
        if version == 0 || version > LATEST_SCHEMA {
            return Err(StorageError::InvalidInput(format!(
                "no schema version {version}"
            )));
        }
        if let Some((v, _)) = self.installed()? {
            return Err(StorageError::SchemaMismatch(format!(
                "schema version {v} already installed"
            )));
        }
        let done = self.durable_write(|| self.install_now(version));
        self.forget_schema();
        done?;
        tracing::info!(target: "MIGRATION", version, "embedded schema installed");
        Ok(())
    }

    fn install_now(&self, version: u32) -> Result<()> {
        let txn = self.db.begin_write().map_err(backend)?;
        {
            for t in [HEADS, EVENTS, SNAPSHOTS, DEVICES, CAPTURES] {
                txn.open_table(t).map_err(backend)?;
            }
            if version >= SENT_COPIES_SCHEMA {
                txn.open_table(SENT_COPIES).map_err(backend)?;
            }
            if version >= SENT_COPY_INFO_SCHEMA {
                txn.open_table(SENT_INFO).map_err(backend)?;
            }
            txn.open_table(EXPIRY).map_err(backend)?;
            let mut meta = txn.open_table(META).map_err(backend)?;
            meta.insert(META_VERSION, version.to_le_bytes().as_slice())
                .map_err(backend)?;
            meta.insert(META_INSTALLED, now_ms().to_le_bytes().as_slice())
                .map_err(backend)?;
        }
        txn.commit().map_err(backend)
    }

    fn update(&self, opts: MigrationOptions) -> Result<MigrationReport> {
        let done = self.update_rows(opts);
        self.forget_schema();
        done
    }

    fn update_rows(&self, opts: MigrationOptions) -> Result<MigrationReport> {
        let from = self.require_schema()?;
        let mut rows = 0;
        if from >= LATEST_SCHEMA {
            return Ok(MigrationReport {
                from,
                to: from,
                rows,
                complete: true,
            });
        }
        if from < 2 {
            match self.update_v1_v2(from, opts)? {
                (n, true) => rows += n,
                (n, false) => {
                    return Ok(MigrationReport {
                        from,
                        to: from,
                        rows: n,
                        complete: false,
                    })
                }
            }
        }
        // v2 -> v3: the pending Sent copies' table (no row to rewrite);
        // v3 -> v4 adds nothing here: the embedded store's device leases
        // live in memory (one process holds the file); v4 -> v5: a
        // `sent_copy_info` row for every pending copy.
        match self.update_v4_v5(from, opts)? {
            (n, true) => rows += n,
            (n, false) => {
                return Ok(MigrationReport {
                    from,
                    to: from,
                    rows: rows + n,
                    complete: false,
                })
            }
        }
        tracing::info!(
            target: "MIGRATION",
            from,
            rows,
            "update complete (tables sent_copies, sent_copy_info); schema version {LATEST_SCHEMA}"
        );
        Ok(MigrationReport {
            from,
            to: LATEST_SCHEMA,
            rows,
            complete: true,
        })
    }

    /// v2/v3/v4 -> v5: creates `sent_copies` and `sent_copy_info`, then
    /// writes the info row of every pending copy that has none yet,
    /// `opts.batch_size` per durable step (a resumed run skips those
    /// written: no progress key needed), reading each message's size from
    /// its row's length (the message is not copied). Records version 5 in
    /// the last step. Returns the rows written and whether it completed.
    fn update_v4_v5(&self, from: u32, opts: MigrationOptions) -> Result<(u64, bool)> {
        let batch = opts.batch_size.max(1) as usize;
        let mut rows = 0;
        let mut steps = 0u64;
        loop {
            if opts.max_batches.is_some_and(|m| steps >= m) {
                tracing::info!(target: "MIGRATION", from, rows, "v4->v5 interrupted; run update again to resume");
                return Ok((rows, false));
            }
            let journal = self.lock_journal()?;
            let txn = self.db.begin_write().map_err(backend)?;
            let (n, done) = {
                let copies = txn.open_table(SENT_COPIES).map_err(backend)?;
                let mut info = txn.open_table(SENT_INFO).map_err(backend)?;
                let mut todo = Vec::with_capacity(batch);
                let mut more = false;
                for item in copies.iter().map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    if info.get(k.value()).map_err(backend)?.is_some() {
                        continue;
                    }
                    if todo.len() >= batch {
                        more = true;
                        break;
                    }
                    let (expires, i) = info_of_v4_row(k.value(), v.value())?;
                    todo.push((k.value().to_vec(), encode_sent_info(&i, expires)));
                }
                for (k, v) in &todo {
                    info.insert(k.as_slice(), v.as_slice()).map_err(backend)?;
                }
                if !more {
                    let mut meta = txn.open_table(META).map_err(backend)?;
                    meta.insert(META_VERSION, LATEST_SCHEMA.to_le_bytes().as_slice())
                        .map_err(backend)?;
                    meta.insert(META_INSTALLED, now_ms().to_le_bytes().as_slice())
                        .map_err(backend)?;
                }
                (todo.len() as u64, !more)
            };
            txn.commit().map_err(backend)?;
            let mut journal = journal;
            journal.reset().map_err(backend)?;
            drop(journal);
            rows += n;
            steps += 1;
            tracing::info!(target: "MIGRATION", step = steps, rows_in_step = n, rows, "v4->v5 progress");
            if done {
                return Ok((rows, true));
            }
        }
    }

    /// v1 -> v2: adds the per-event blake3 digest (row layout 1 -> 2),
    /// `opts.batch_size` rows per durable step, resuming after the last
    /// key a previous run recorded. Returns the rows rewritten and whether
    /// it completed (version 2 recorded) or stopped at `opts.max_batches`.
    fn update_v1_v2(&self, from: u32, opts: MigrationOptions) -> Result<(u64, bool)> {
        let mut rows = 0;
        let batch = opts.batch_size.max(1) as usize;
        let mut steps = 0u64;
        loop {
            if opts.max_batches.is_some_and(|m| steps >= m) {
                tracing::info!(target: "MIGRATION", from, rows, "v1->v2 interrupted; run update again to resume");
                return Ok((rows, false));
            }
            let journal = self.lock_journal()?;
            let txn = self.db.begin_write().map_err(backend)?;
            let (n, done) = {
                let mut meta = txn.open_table(META).map_err(backend)?;
                let start: Vec<u8> = meta
                    .get(META_MIGRATION_V2)
                    .map_err(backend)?
                    .map(|v| v.value().to_vec())
                    .unwrap_or_default();
                let mut events = txn.open_table(EVENTS).map_err(backend)?;
                let mut todo: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(batch);
                let mut last = None;
                let mut more = false;
                for item in events.range::<&[u8]>(start.as_slice()..).map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    if k.value() == start.as_slice() {
                        continue; // already migrated in the previous step
                    }
                    if todo.len() >= batch {
                        more = true;
                        break;
                    }
                    let v = v.value();
                    if v.first() == Some(&LAYOUT_V1) {
                        let fmt = v.get(1..3).ok_or_else(|| corrupt("event"))?;
                        let expires = v.get(3..11).ok_or_else(|| corrupt("event"))?;
                        let payload = &v[11..];
                        let mut nv = Vec::with_capacity(v.len() + 33);
                        nv.push(LAYOUT_V2);
                        nv.extend_from_slice(fmt);
                        nv.extend_from_slice(expires);
                        nv.extend_from_slice(&digest(payload));
                        nv.extend_from_slice(payload);
                        todo.push((k.value().to_vec(), nv));
                    } else {
                        todo.push((k.value().to_vec(), Vec::new()));
                    }
                    last = Some(k.value().to_vec());
                }
                let n = todo.iter().filter(|(_, v)| !v.is_empty()).count() as u64;
                for (k, v) in &todo {
                    if !v.is_empty() {
                        events.insert(k.as_slice(), v.as_slice()).map_err(backend)?;
                    }
                }
                if let Some(last) = &last {
                    meta.insert(META_MIGRATION_V2, last.as_slice())
                        .map_err(backend)?;
                }
                if !more {
                    meta.remove(META_MIGRATION_V2).map_err(backend)?;
                    meta.insert(META_VERSION, 2u32.to_le_bytes().as_slice())
                        .map_err(backend)?;
                    meta.insert(META_INSTALLED, now_ms().to_le_bytes().as_slice())
                        .map_err(backend)?;
                }
                (n, !more)
            };
            txn.commit().map_err(backend)?;
            let mut journal = journal;
            journal.reset().map_err(backend)?;
            drop(journal);
            rows += n;
            steps += 1;
            tracing::info!(target: "MIGRATION", step = steps, rows_in_step = n, rows, "v1->v2 progress");
            if done {
                tracing::info!(target: "MIGRATION", rows, "v1->v2 complete; schema version 2");
                return Ok((rows, true));
            }
        }
    }

    fn head_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
        heads: &T,
        dev: &[u8],
        now: u64,
    ) -> Result<u64> {
        Self::head_row_in(heads, dev).map(|row| HeadCache::live(row, now))
    }

    /// A heads row: (head, expiry in seconds); (0, 0) when there is none.
    fn head_row_in<T: ReadableTable<&'static [u8], &'static [u8]>>(
        heads: &T,
        dev: &[u8],
    ) -> Result<(u64, u64)> {
        match heads.get(dev).map_err(backend)? {
            Some(v) => {
                let v = v.value();
                let head = u64_at(v, 0).ok_or_else(|| corrupt("head"))?;
                let expires = u64_at(v, 8).ok_or_else(|| corrupt("head"))?;
                Ok((head, expires))
            }
            None => Ok((0, 0)),
        }
    }

    /// The device's head row as stored: (head, expiry in seconds); (0, 0)
    /// when it has none.
    fn head_row(&self, device: &DeviceKey) -> Result<(u64, u64)> {
        device.validate()?;
        self.require_schema()?;
        let txn = self.db.begin_read().map_err(backend)?;
        let heads = txn.open_table(HEADS).map_err(backend)?;
        Self::head_row_in(&heads, &device.to_bytes())
    }

    fn lock_heads(&self) -> MutexGuard<'_, HeadCache> {
        self.heads.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies `group` in order in one write transaction and commits it
    /// once; one outcome per append (see the module docs).
    fn append_group(&self, group: &[PendingWrite]) -> Vec<Result<u64>> {
        let all = |e: StorageError| vec![Err(e); group.len()];
        let version = match self.require_schema() {
            Ok(v) => v,
            Err(e) => return all(e),
        };
        let layout = if version >= 2 { LAYOUT_V2 } else { LAYOUT_V1 };
        let now = now_s();
        let mut journal = match self.lock_journal() {
            Ok(j) => j,
            Err(e) => return all(e),
        };
        let mut txn = match self.db.begin_write() {
            Ok(t) => t,
            Err(e) => return all(backend(e)),
        };
        // Durable through the journal, not through redb (module docs).
        if let Err(e) = txn.set_durability(Durability::None) {
            return all(backend(e));
        }
        let mut rows = Rows::default();
        // Snapshots are caches: their rows stay out of the journal (below).
        let mut unjournaled = Rows::default();
        let mut wrote = false;
        let mut outcomes = Vec::with_capacity(group.len());
        // The heads rows this group writes, in order (for `HeadCache`).
        let mut moved = Vec::new();
        for pending in group {
            if pending.write.needs_sent_copies() && version < SENT_COPY_INFO_SCHEMA {
                outcomes.push(Err(sent_copies_need_v5(version)));
                continue;
            }
            let r = &mut rows;
            let outcome = match &pending.write {
                Write::Append(batch) => {
                    let ttl = self.cfg.ttl_events_s;
                    let head = Self::append_in(&txn, r, batch, layout, now, ttl);
                    if let Ok(h) = head {
                        moved.push((batch.device.to_bytes(), (h, now + ttl)));
                    }
                    head
                }
                Write::Device(rec) => {
                    Self::put_device_in(&txn, r, rec, now + self.cfg.ttl_devices_s).map(|()| 0)
                }
                Write::DeviceChange(change) => {
                    Self::change_device_in(&txn, r, change, now, self.cfg.ttl_devices_s).map(|()| 0)
                }
                Write::Snapshot(w) => {
                    let expires = now + self.cfg.ttl_snapshots_s;
                    Self::put_snapshot_in(&txn, &mut unjournaled, w, expires).map(|()| 0)
                }
                Write::Capture(w) => Self::put_capture_in(&txn, r, w, now).map(|()| 0),
                Write::SentCopy(c) => {
                    let expires = now + self.cfg.ttl_sent_copies_s;
                    Self::put_sent_copy_in(&txn, r, c, expires).map(|()| 0)
                }
                Write::SentCopyTried(t) => {
                    let (user, id, seen, tries, at_ms) = &**t;
                    let claim = (*seen, *tries, *at_ms);
                    Self::claim_sent_copy_try_in(&txn, r, user, id, claim, now).map(u64::from)
                }
                Write::SentCopyNoted(n) => {
                    let (user, id, seen, note) = &**n;
                    Self::note_sent_copy_try_in(&txn, r, user, id, *seen, note, now).map(u64::from)
                }
                Write::SentCopyDelete(d) => {
                    Self::delete_sent_copy_in(&txn, r, &d.0, &d.1).map(|()| 0)
                }
            };
            match outcome {
                Ok(head) => {
                    wrote = true;
                    outcomes.push(Ok(head));
                }
                // Found before anything of this append was written.
                Err(e @ (StorageError::Conflict { .. } | StorageError::InvalidInput(_))) => {
                    outcomes.push(Err(e))
                }
                // Anything else may have left part of it: nothing of the
                // group is committed.
                Err(e) => {
                    let _ = txn.abort();
                    return all(e);
                }
            }
        }
        if !wrote {
            // Only refusals: nothing to write.
            let _ = txn.abort();
            return outcomes;
        }
        // The journal record first: once it is synced the group is
        // durable, and only then is it committed (visible) and answered.
        // A group of snapshots only has nothing to journal: it is
        // committed at once, and on disk at the next checkpoint (a crash
        // before it keeps the previous snapshot: a load folds more events).
        let start = journal.len();
        if !rows.is_empty() {
            if let Err(e) = journal.append(&rows) {
                let _ = txn.abort();
                return all(backend(format!("journal write failed: {e}")));
            }
        }
        match txn.commit() {
            Ok(()) => {
                // Before anyone is answered: a caller's next head read
                // finds its own append.
                let mut heads = self.lock_heads();
                for (key, row) in moved {
                    heads.committed(key, row);
                }
                outcomes
            }
            Err(e) => {
                // Not committed: the record must not be replayed either.
                journal.rollback(start);
                all(backend(e))
            }
        }
    }

    /// The journal lock (see [`Inner::journal`]).
    fn lock_journal(&self) -> Result<MutexGuard<'_, Journal>> {
        self.journal
            .lock()
            .map_err(|_| StorageError::Backend("embedded store journal lock poisoned".into()))
    }

    /// A checkpoint, when the journal's oldest record is `every` old or the
    /// journal is over [`CHECKPOINT_BYTES`], and the previous checkpoint is
    /// done (its retired journal file emptied). On the writer's path only
    /// its first part: a durable redb commit run deferred (the pages and
    /// header it writes, the earlier non-durable commits' too, are staged
    /// in memory and its sync is noted), and the appends moved to the
    /// other journal file. The checkpoint thread then writes the staged
    /// pages out, syncs the redb file and empties the retired journal file,
    /// while group commits go on (see `redb_file.rs`). A failure is logged:
    /// the records stay in the journal, nothing is lost.
    fn checkpoint_if_due(&self, every: Duration) {
        let Ok(mut journal) = self.lock_journal() else {
            return;
        };
        if let Some(retired) = self.checkpoint_begin(&mut journal, every) {
            if let Some(jobs) = &self.checkpoints {
                let _ = jobs.send(retired);
            }
        }
    }

    /// A checkpoint's first part, if one is due: the deferred commit and
    /// the switch of journal files. Returns the retired file, for
    /// [`finish_checkpoint`]. The caller holds the journal lock.
    fn checkpoint_begin(&self, journal: &mut Journal, every: Duration) -> Option<Arc<File>> {
        let due = journal.len() >= CHECKPOINT_BYTES || journal.age().is_some_and(|a| a >= every);
        if !due || journal.len() == 0 || journal.retired() {
            return None;
        }
        let (started, journal_bytes) = (std::time::Instant::now(), journal.len());
        let committed = self
            .db
            .begin_write()
            .map_err(backend)
            .and_then(|txn| self.sync.deferred(|| txn.commit()).map_err(backend));
        if let Err(e) = committed {
            tracing::warn!(target: "storage", error = %e, "checkpoint failed; the journal keeps the writes");
            return None;
        }
        tracing::debug!(
            target: "storage",
            us = started.elapsed().as_micros() as u64,
            journal_bytes,
            staged_bytes = self.sync.staged_bytes(),
            "checkpoint: redb commit staged (the group commits waited this long)"
        );
        journal.switch()
    }

    /// A durable redb commit (it writes the earlier non-durable ones too),
    /// synced before it returns, then the journal emptied (at close). The
    /// caller holds the journal lock.
    fn checkpoint(&self, journal: &mut Journal) -> Result<()> {
        if journal.len() == 0 {
            return Ok(());
        }
        let txn = self.db.begin_write().map_err(backend)?;
        txn.commit().map_err(backend)?;
        journal.reset().map_err(backend)
    }

    /// Runs `f`, a durable write transaction of its own (schema changes,
    /// expiry passes), under the journal lock, and empties the journal
    /// after it: its durable commit wrote every earlier group to the redb
    /// file.
    fn durable_write<T>(&self, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let mut journal = self.lock_journal()?;
        let out = f()?;
        journal.reset().map_err(backend)?;
        Ok(out)
    }

    /// One conditional append inside `txn`. `Conflict` and `InvalidInput`
    /// come before any write.
    fn append_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        batch: &AppendBatch,
        layout: u8,
        now: u64,
        ttl_s: u64,
    ) -> Result<u64> {
        batch.device.validate()?;
        let expires = now + ttl_s;
        let dev = batch.device.to_bytes();
        {
            let mut heads = txn.open_table(HEADS).map_err(backend)?;
            let actual = Self::head_in(&heads, &dev, now)?;
            let old_expiry = heads
                .get(dev.as_slice())
                .map_err(backend)?
                .and_then(|v| u64_at(v.value(), 8));
            if actual != batch.expected_head {
                return Err(StorageError::Conflict {
                    device: batch.device.to_string(),
                    expected: batch.expected_head,
                    actual,
                });
            }
            let mut events = txn.open_table(EVENTS).map_err(backend)?;
            let mut ix = txn.open_table(EXPIRY).map_err(backend)?;
            for (i, ev) in batch.events.iter().enumerate() {
                let key = event_key(&batch.device, batch.expected_head + 1 + i as u64);
                let row = encode_event(layout, ev.format_version, expires, &ev.payload);
                events
                    .insert(key.as_slice(), row.as_slice())
                    .map_err(backend)?;
                rows.put(T_EVENT, &key, &row);
                index_expiry_in(&mut ix, rows, expires, T_EVENT, &key)?;
            }
            let mut hv = [0u8; 16];
            hv[..8].copy_from_slice(&batch.new_head().to_le_bytes());
            hv[8..].copy_from_slice(&expires.to_le_bytes());
            heads
                .insert(dev.as_slice(), hv.as_slice())
                .map_err(backend)?;
            rows.put(T_HEAD, &dev, &hv);
            reindex_expiry_in(&mut ix, rows, old_expiry, expires, T_HEAD, &dev)?;
        }
        Ok(batch.new_head())
    }

    fn read_events(&self, device: &DeviceKey, from_seq: u64) -> Result<Vec<StoredEvent>> {
        device.validate()?;
        self.require_schema()?;
        let now = now_s();
        let txn = self.db.begin_read().map_err(backend)?;
        let events = txn.open_table(EVENTS).map_err(backend)?;
        let prefix = device_prefix(device);
        let lo = event_key(device, from_seq);
        let hi = prefix_end(&prefix);
        let mut out = Vec::new();
        for item in events
            .range::<&[u8]>(lo.as_slice()..hi.as_slice())
            .map_err(backend)?
        {
            let (k, v) = item.map_err(backend)?;
            let seq = k
                .value()
                .get(prefix.len()..)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| corrupt("event key"))?;
            if let Some(ev) = decode_event(seq, v.value(), now)? {
                out.push(ev);
            }
        }
        Ok(out)
    }

    /// One snapshot put inside `txn` (group-committed). `InvalidInput`
    /// comes before any write.
    fn put_snapshot_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        w: &SnapshotWrite,
        expires: u64,
    ) -> Result<()> {
        let SnapshotWrite {
            device,
            collection,
            snap,
        } = w;
        device.validate()?;
        check_part("collection id", collection)?;
        let mut key = device_prefix(device);
        key.extend_from_slice(collection.as_bytes());
        let mut v = Vec::with_capacity(18 + snap.payload.len());
        v.extend_from_slice(&snap.seq.to_le_bytes());
        v.extend_from_slice(&snap.format_version.to_le_bytes());
        v.extend_from_slice(&expires.to_le_bytes());
        v.extend_from_slice(&snap.payload);
        let mut t = txn.open_table(SNAPSHOTS).map_err(backend)?;
        let old = t
            .insert(key.as_slice(), v.as_slice())
            .map_err(backend)?
            .and_then(|o| u64_at(o.value(), 10));
        rows.put(T_SNAPSHOT, &key, &v);
        let mut ix = txn.open_table(EXPIRY).map_err(backend)?;
        reindex_expiry_in(&mut ix, rows, old, expires, T_SNAPSHOT, &key)
    }

    fn get_snapshot(&self, device: &DeviceKey, collection: &str) -> Result<Option<Snapshot>> {
        device.validate()?;
        check_part("collection id", collection)?;
        self.require_schema()?;
        let mut key = device_prefix(device);
        key.extend_from_slice(collection.as_bytes());
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(SNAPSHOTS).map_err(backend)?;
        let Some(v) = t.get(key.as_slice()).map_err(backend)? else {
            return Ok(None);
        };
        let v = v.value();
        let seq = u64_at(v, 0).ok_or_else(|| corrupt("snapshot"))?;
        let fmt = v
            .get(8..10)
            .and_then(|s| s.try_into().ok())
            .map(u16::from_le_bytes)
            .ok_or_else(|| corrupt("snapshot"))?;
        let expires = u64_at(v, 10).ok_or_else(|| corrupt("snapshot"))?;
        if expires <= now_s() {
            return Ok(None);
        }
        Ok(Some(Snapshot {
            seq,
            format_version: fmt,
            payload: v[18..].to_vec(),
        }))
    }

    /// One device row inside `txn`; `InvalidInput` before any write.
    fn put_device_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        rec: &DeviceRecord,
        expires: u64,
    ) -> Result<()> {
        rec.key.validate()?;
        let key = rec.key.to_bytes();
        let mut v = expires.to_le_bytes().to_vec();
        serde_json::to_writer(&mut v, rec)
            .map_err(|e| StorageError::InvalidInput(format!("device row: {e}")))?;
        let mut t = txn.open_table(DEVICES).map_err(backend)?;
        let old = t
            .insert(key.as_slice(), v.as_slice())
            .map_err(backend)?
            .and_then(|o| u64_at(o.value(), 0));
        drop(t);
        rows.put(T_DEVICE, &key, &v);
        let mut ix = txn.open_table(EXPIRY).map_err(backend)?;
        reindex_expiry_in(&mut ix, rows, old, expires, T_DEVICE, &key)
    }

    /// One device row changed inside `txn`, from the row as it is there
    /// (earlier writes of the same group included).
    fn change_device_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        change: &DeviceChange,
        now: u64,
        ttl: u64,
    ) -> Result<()> {
        change.key.validate()?;
        let current = {
            let t = txn.open_table(DEVICES).map_err(backend)?;
            let v = t.get(change.key.to_bytes().as_slice()).map_err(backend)?;
            match v {
                Some(v) => Self::decode_device(v.value(), now)?,
                None => None,
            }
        };
        // Written even when unchanged: a write refreshes the row's expiry.
        match change.apply(current) {
            Some(row) => Self::put_device_in(txn, rows, &row, now + ttl),
            None => Ok(()),
        }
    }

    fn decode_device(v: &[u8], now: u64) -> Result<Option<DeviceRecord>> {
        let expires = u64_at(v, 0).ok_or_else(|| corrupt("device"))?;
        if expires <= now {
            return Ok(None);
        }
        serde_json::from_slice(&v[8..])
            .map(Some)
            .map_err(|_| corrupt("device"))
    }

    fn get_device(&self, key: &DeviceKey) -> Result<Option<DeviceRecord>> {
        key.validate()?;
        self.require_schema()?;
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(DEVICES).map_err(backend)?;
        let Some(v) = t.get(key.to_bytes().as_slice()).map_err(backend)? else {
            return Ok(None);
        };
        Self::decode_device(v.value(), now_s())
    }

    fn list_devices(&self, user: Option<&str>) -> Result<Vec<DeviceRecord>> {
        self.require_schema()?;
        let now = now_s();
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(DEVICES).map_err(backend)?;
        let mut out = Vec::new();
        let mut push = |v: &[u8]| -> Result<()> {
            if let Some(r) = Self::decode_device(v, now)? {
                out.push(r);
            }
            Ok(())
        };
        match user {
            Some(u) => {
                check_part("user", u)?;
                let mut lo = u.as_bytes().to_vec();
                lo.push(0);
                let hi = prefix_end(&lo);
                for item in t
                    .range::<&[u8]>(lo.as_slice()..hi.as_slice())
                    .map_err(backend)?
                {
                    push(item.map_err(backend)?.1.value())?;
                }
            }
            None => {
                for item in t.iter().map_err(backend)? {
                    push(item.map_err(backend)?.1.value())?;
                }
            }
        }
        Ok(out)
    }

    /// One capture put inside `txn` (group-committed) at `now`.
    /// `InvalidInput` comes before any write.
    fn put_capture_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        w: &CaptureWrite,
        now: u64,
    ) -> Result<()> {
        let CaptureWrite {
            device,
            req_id,
            kind,
            bytes,
            ttl,
        } = w;
        device.validate()?;
        check_part("request id", req_id)?;
        check_part("capture kind", kind)?;
        let expires = now + ttl.as_secs().max(1);
        let mut key = device_prefix(device);
        key.extend_from_slice(req_id.as_bytes());
        key.push(0);
        key.extend_from_slice(kind.as_bytes());
        let mut v = Vec::with_capacity(48 + bytes.len());
        v.extend_from_slice(&expires.to_le_bytes());
        v.extend_from_slice(&now_ms().to_le_bytes());
        v.extend_from_slice(&digest(bytes));
        v.extend_from_slice(bytes);
        let mut t = txn.open_table(CAPTURES).map_err(backend)?;
        t.insert(key.as_slice(), v.as_slice()).map_err(backend)?;
        rows.put(T_CAPTURE, &key, &v);
        index_expiry(txn, rows, expires, T_CAPTURE, &key)
    }

    fn get_captures(&self, device: &DeviceKey) -> Result<Vec<Capture>> {
        device.validate()?;
        self.require_schema()?;
        let now = now_s();
        let prefix = device_prefix(device);
        let hi = prefix_end(&prefix);
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(CAPTURES).map_err(backend)?;
        let mut out = Vec::new();
        for item in t
            .range::<&[u8]>(prefix.as_slice()..hi.as_slice())
            .map_err(backend)?
        {
            let (k, v) = item.map_err(backend)?;
            let (k, v) = (k.value(), v.value());
            let expires = u64_at(v, 0).ok_or_else(|| corrupt("capture"))?;
            if expires <= now {
                continue;
            }
            let at_ms = u64_at(v, 8).ok_or_else(|| corrupt("capture"))? as i64;
            let dig: [u8; 32] = v
                .get(16..48)
                .and_then(|s| s.try_into().ok())
                .ok_or_else(|| corrupt("capture"))?;
            let rest = &k[prefix.len()..];
            let sep = rest
                .iter()
                .position(|&c| c == 0)
                .ok_or_else(|| corrupt("capture key"))?;
            let req_id =
                String::from_utf8(rest[..sep].to_vec()).map_err(|_| corrupt("capture key"))?;
            let kind =
                String::from_utf8(rest[sep + 1..].to_vec()).map_err(|_| corrupt("capture key"))?;
            out.push(Capture {
                req_id,
                kind,
                at_ms,
                digest: dig,
                bytes: v[48..].to_vec(),
            });
        }
        Ok(out)
    }

    /// A pending Sent copy put inside `txn` (group-committed), replacing
    /// any row of the same user and Message-ID: its message in
    /// `sent_copies`, the rest in `sent_copy_info`. `InvalidInput` comes
    /// before any write.
    fn put_sent_copy_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        copy: &SentCopy,
        expires: u64,
    ) -> Result<()> {
        copy.validate()?;
        let key = sent_key(&copy.user, &copy.message_id);
        let v = encode_sent_copy(copy, expires);
        let info = encode_sent_info(&copy.info(), expires);
        let mut t = txn.open_table(SENT_COPIES).map_err(backend)?;
        let old = t
            .insert(key.as_slice(), v.as_slice())
            .map_err(backend)?
            .and_then(|o| u64_at(o.value(), 0));
        drop(t);
        let mut t = txn.open_table(SENT_INFO).map_err(backend)?;
        t.insert(key.as_slice(), info.as_slice()).map_err(backend)?;
        drop(t);
        rows.put(T_SENT_COPY, &key, &v);
        rows.put(T_SENT_INFO, &key, &info);
        let mut ix = txn.open_table(EXPIRY).map_err(backend)?;
        reindex_expiry_in(&mut ix, rows, old, expires, T_SENT_COPY, &key)
    }

    /// The live `sent_copy_info` row of a key whose `last_try_ms` is
    /// `seen`, as bytes (`None`: no live row, or another last try).
    fn info_row_if(
        t: &redb::Table<'_, &'static [u8], &'static [u8]>,
        key: &[u8],
        seen: i64,
        now: u64,
    ) -> Result<Option<Vec<u8>>> {
        let Some(v) = t.get(key).map_err(backend)? else {
            return Ok(None);
        };
        let v = v.value().to_vec();
        let expires = u64_at(&v, 0).ok_or_else(|| corrupt("sent copy info"))?;
        if expires <= now || v.len() < INFO_HEADER {
            return Ok(None);
        }
        let last = u64_at(&v, 16).map(|l| l as i64);
        Ok((last == Some(seen)).then_some(v))
    }

    /// A try claimed inside `txn`: the live info row whose `last_try_ms` is
    /// still `seen` rewritten with `tries` and `at_ms` (`next_try_ms` 0),
    /// its expiry kept
    /// (the message's row is not touched). `false` (nothing written) when
    /// there is no live row or its last try is not `seen` any more.
    fn claim_sent_copy_try_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        user: &str,
        message_id: &str,
        (seen, tries, at_ms): (i64, u32, i64),
        now: u64,
    ) -> Result<bool> {
        crate::model::validate_sent_copy_key(user, message_id)?;
        let key = sent_key(user, message_id);
        let mut t = txn.open_table(SENT_INFO).map_err(backend)?;
        let Some(mut v) = Self::info_row_if(&t, &key, seen, now)? else {
            return Ok(false);
        };
        v[16..24].copy_from_slice(&at_ms.to_le_bytes());
        v[24..28].copy_from_slice(&tries.to_le_bytes());
        // The next try is unknown until this one is noted.
        v[28..36].copy_from_slice(&0i64.to_le_bytes());
        t.insert(key.as_slice(), v.as_slice()).map_err(backend)?;
        rows.put(T_SENT_INFO, &key, &v);
        Ok(true)
    }

    /// A try's outcome noted inside `txn`: like a claim, on the live info
    /// row whose `last_try_ms` is still `seen`.
    fn note_sent_copy_try_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        user: &str,
        message_id: &str,
        seen: i64,
        note: &SentCopyNote,
        now: u64,
    ) -> Result<bool> {
        crate::model::validate_sent_copy_key(user, message_id)?;
        crate::model::validate_sent_texts("", "", note.last_error.as_deref())?;
        let key = sent_key(user, message_id);
        let mut t = txn.open_table(SENT_INFO).map_err(backend)?;
        let Some(v) = Self::info_row_if(&t, &key, seen, now)? else {
            return Ok(false);
        };
        let expires = u64_at(&v, 0).ok_or_else(|| corrupt("sent copy info"))?;
        let Some(mut info) = decode_sent_info(&key, &v, now)? else {
            return Ok(false);
        };
        info.last_try_ms = note.last_try_ms;
        info.next_try_ms = note.next_try_ms;
        info.last_error = note.last_error.clone();
        let v = encode_sent_info(&info, expires);
        t.insert(key.as_slice(), v.as_slice()).map_err(backend)?;
        rows.put(T_SENT_INFO, &key, &v);
        Ok(true)
    }

    /// A pending Sent copy deleted inside `txn` (both rows), with its
    /// expiry index entry. Nothing to delete is not an error.
    fn delete_sent_copy_in(
        txn: &WriteTransaction,
        rows: &mut Rows,
        user: &str,
        message_id: &str,
    ) -> Result<()> {
        crate::model::validate_sent_copy_key(user, message_id)?;
        let key = sent_key(user, message_id);
        let mut t = txn.open_table(SENT_INFO).map_err(backend)?;
        let had_info = t.remove(key.as_slice()).map_err(backend)?.is_some();
        drop(t);
        if had_info {
            rows.remove(T_SENT_INFO, &key);
        }
        let mut t = txn.open_table(SENT_COPIES).map_err(backend)?;
        let old = t
            .remove(key.as_slice())
            .map_err(backend)?
            .map(|o| u64_at(o.value(), 0));
        drop(t);
        let Some(old) = old else {
            return Ok(());
        };
        rows.remove(T_SENT_COPY, &key);
        if let Some(old) = old {
            let mut k = Vec::with_capacity(9 + key.len());
            k.extend_from_slice(&old.to_be_bytes());
            k.push(T_SENT_COPY);
            k.extend_from_slice(&key);
            let mut ix = txn.open_table(EXPIRY).map_err(backend)?;
            ix.remove(k.as_slice()).map_err(backend)?;
            rows.remove(T_EXPIRY, &k);
        }
        Ok(())
    }

    /// The schema version, which must have `sent_copy_info`.
    fn require_sent_info(&self) -> Result<()> {
        let version = self.require_schema()?;
        if version < SENT_COPY_INFO_SCHEMA {
            return Err(sent_copies_need_v5(version));
        }
        Ok(())
    }

    /// The live pending Sent copies of `user` (every user's when `None`),
    /// from `sent_copy_info` only (no message is read).
    fn sent_copies(&self, user: Option<&str>) -> Result<Vec<SentCopyInfo>> {
        self.require_sent_info()?;
        let now = now_s();
        let txn = self.db.begin_read().map_err(backend)?;
        let t = txn.open_table(SENT_INFO).map_err(backend)?;
        let mut out = Vec::new();
        let mut push = |k: &[u8], v: &[u8]| -> Result<()> {
            if let Some(c) = decode_sent_info(k, v, now)? {
                out.push(c);
            }
            Ok(())
        };
        match user {
            Some(u) => {
                let mut lo = u.as_bytes().to_vec();
                lo.push(0);
                let hi = prefix_end(&lo);
                for item in t
                    .range::<&[u8]>(lo.as_slice()..hi.as_slice())
                    .map_err(backend)?
                {
                    let (k, v) = item.map_err(backend)?;
                    push(k.value(), v.value())?;
                }
            }
            None => {
                for item in t.iter().map_err(backend)? {
                    let (k, v) = item.map_err(backend)?;
                    push(k.value(), v.value())?;
                }
            }
        }
        Ok(out)
    }

    /// One live pending Sent copy with its message (digest checked).
    fn sent_copy(&self, user: &str, message_id: &str) -> Result<Option<SentCopy>> {
        self.require_sent_info()?;
        let now = now_s();
        let key = sent_key(user, message_id);
        let txn = self.db.begin_read().map_err(backend)?;
        let info = {
            let t = txn.open_table(SENT_INFO).map_err(backend)?;
            let Some(v) = t.get(key.as_slice()).map_err(backend)? else {
                return Ok(None);
            };
            let Some(info) = decode_sent_info(&key, v.value(), now)? else {
                return Ok(None);
            };
            info
        };
        let t = txn.open_table(SENT_COPIES).map_err(backend)?;
        let Some(v) = t.get(key.as_slice()).map_err(backend)? else {
            return Ok(None);
        };
        let bytes = match decode_sent_bytes(&info, v.value(), now)? {
            Some(b) => b.to_vec(),
            None => return Ok(None),
        };
        Ok(Some(info.with_bytes(bytes)))
    }

    /// Deletes rows whose expiry is at or before `now` (seconds), in passes
    /// of bounded size so that writers are not held up for long.
    fn purge_expired(&self, now: u64) -> Result<u64> {
        let Some((version, _)) = self.installed()? else {
            return Ok(0);
        };
        let mut deleted = 0;
        loop {
            // Each pass is a durable commit of its own, under the journal
            // lock (it writes the groups before it too: the journal empties).
            let mut journal = self.lock_journal()?;
            let txn = self.db.begin_write().map_err(backend)?;
            let done = {
                let mut ix = txn.open_table(EXPIRY).map_err(backend)?;
                let hi = (now + 1).to_be_bytes();
                let mut keys = Vec::new();
                for item in ix.range::<&[u8]>(..hi.as_slice()).map_err(backend)? {
                    keys.push(item.map_err(backend)?.0.value().to_vec());
                    if keys.len() >= 1000 {
                        break;
                    }
                }
                for k in &keys {
                    ix.remove(k.as_slice()).map_err(backend)?;
                    let (tag, row) = (
                        k.get(8).copied().unwrap_or(0),
                        k.get(9..).unwrap_or_default(),
                    );
                    let (def, exp_at) = match tag {
                        T_HEAD => (HEADS, 8),
                        T_EVENT => (EVENTS, 3),
                        T_SNAPSHOT => (SNAPSHOTS, 10),
                        T_DEVICE => (DEVICES, 0),
                        T_CAPTURE => (CAPTURES, 0),
                        T_SENT_COPY => (SENT_COPIES, 0),
                        _ => continue,
                    };
                    let mut t = txn.open_table(def).map_err(backend)?;
                    // The row may have been rewritten with a later expiry since.
                    let expired = match t.get(row).map_err(backend)? {
                        Some(v) => u64_at(v.value(), exp_at).is_some_and(|e| e <= now),
                        None => false,
                    };
                    if expired {
                        t.remove(row).map_err(backend)?;
                        deleted += 1;
                        if tag == T_SENT_COPY {
                            drop(t);
                            // Its info row goes with it (a v3/v4 store has none).
                            if version >= SENT_COPY_INFO_SCHEMA {
                                let mut info = txn.open_table(SENT_INFO).map_err(backend)?;
                                info.remove(row).map_err(backend)?;
                            }
                        }
                    }
                }
                keys.len() < 1000
            };
            txn.commit().map_err(backend)?;
            journal.reset().map_err(backend)?;
            drop(journal);
            if done {
                return Ok(deleted);
            }
        }
    }
}

/// Opens the embedded store at `path` with default settings (for tools).
pub fn open_path(path: &Path) -> Result<EmbeddedStore> {
    EmbeddedStore::open(&StorageConfig {
        path: path.to_path_buf(),
        ..StorageConfig::default()
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn expiry_rows(db: &Database) -> Vec<Vec<u8>> {
        let txn = db.begin_read().unwrap();
        let ix = txn.open_table(EXPIRY).unwrap();
        ix.iter()
            .unwrap()
            .map(|r| r.unwrap().0.value().to_vec())
            .collect()
    }

    // A schema v4 store's pending copies (one row each, the message and
    // its header together) gain their info rows on `update`, one batch per
    // step and resumably; until then the sent-copy calls are refused. They
    // load afterwards with the size of their message, and expire with it.
    #[tokio::test]
    async fn v4_sent_copies_load_after_the_update_to_v5() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_path(dir.path()).unwrap();
        store.install_schema_version(4).await.unwrap();
        let copies: Vec<SentCopy> = (0..3)
            .map(|i| SentCopy {
                user: "olga@example.test".into(),
                message_id: format!("<m{i}@example.test>"),
                created_ms: 1_800_000_000_000 + i,
                last_try_ms: 1_800_000_001_000 + i,
                tries: 2,
                bytes: vec![b'x'; 1000 + i as usize],
                ..SentCopy::default()
            })
            .collect();
        {
            // As a session-16 binary writes them.
            let txn = store.inner.db.begin_write().unwrap();
            let expires = now_s() + 2;
            let mut rows = Rows::default();
            for c in &copies {
                let key = sent_key(&c.user, &c.message_id);
                let mut t = txn.open_table(SENT_COPIES).unwrap();
                t.insert(key.as_slice(), encode_sent_copy(c, expires).as_slice())
                    .unwrap();
                drop(t);
                index_expiry(&txn, &mut rows, expires, T_SENT_COPY, &key).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = store.sent_copies(None).await.unwrap_err();
        assert!(matches!(err, StorageError::SchemaMismatch(_)), "{err:?}");
        let opts = MigrationOptions {
            batch_size: 2,
            page_size: 10,
            max_batches: Some(1),
        };
        let first = store.update_schema(opts).await.unwrap();
        assert_eq!(
            (first.from, first.to, first.rows, first.complete),
            (4, 4, 2, false)
        );
        assert!(matches!(
            store.sent_copies(None).await.unwrap_err(),
            StorageError::SchemaMismatch(_)
        ));
        let rest = store
            .update_schema(MigrationOptions {
                max_batches: None,
                ..opts
            })
            .await
            .unwrap();
        assert_eq!(
            (rest.from, rest.to, rest.rows, rest.complete),
            (4, 5, 1, true)
        );
        let listed = store.sent_copies(None).await.unwrap();
        assert_eq!(
            listed,
            copies.iter().map(SentCopy::info).collect::<Vec<_>>()
        );
        assert_eq!(listed[2].size, 1002);
        for c in &copies {
            let got = store
                .sent_copy(c.user.clone(), c.message_id.clone())
                .await
                .unwrap();
            assert_eq!(got.as_ref(), Some(c));
        }
        // Tried and noted as a v5 row is.
        assert!(store
            .claim_sent_copy_try(
                copies[0].user.clone(),
                copies[0].message_id.clone(),
                copies[0].last_try_ms,
                3,
                1_800_000_009_000
            )
            .await
            .unwrap());
        // Expired with their messages (no info row left behind).
        tokio::time::sleep(Duration::from_millis(3_100)).await;
        assert!(store.sent_copies(None).await.unwrap().is_empty());
        store.purge_expired().await.unwrap();
        use redb::ReadableTableMetadata as _;
        let txn = store.inner.db.begin_read().unwrap();
        assert_eq!(txn.open_table(SENT_INFO).unwrap().len().unwrap(), 0);
        assert_eq!(txn.open_table(SENT_COPIES).unwrap().len().unwrap(), 0);
    }

    // A row rewritten in place (the head, the registry row) keeps one
    // expiry index entry, at its latest expiry; each event has its own.
    #[test]
    fn rewritten_rows_keep_one_expiry_index_entry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("t.redb")).unwrap();
        let device = DeviceKey::new("alice@example.test", "DEV1").unwrap();
        let record = DeviceRecord {
            key: device.clone(),
            device_type: "iPhone".into(),
            first_seen_ms: 1,
            last_seen_ms: 2,
            policy_key: None,
            state: crate::DeviceState::Allowed,
            info: Default::default(),
        };
        for (i, now) in [1_000u64, 2_000, 3_000].into_iter().enumerate() {
            let txn = db.begin_write().unwrap();
            let batch = AppendBatch::new(device.clone(), i as u64).event(1, b"e".to_vec());
            let rows = &mut Rows::default();
            Inner::append_in(&txn, rows, &batch, LAYOUT_V2, now, 10_000).unwrap();
            Inner::put_device_in(&txn, rows, &record, now + 50).unwrap();
            txn.commit().unwrap();
        }
        let rows = expiry_rows(&db);
        let tagged = |tag: u8| {
            rows.iter()
                .filter(|k| k[8] == tag)
                .map(|k| u64::from_be_bytes(k[..8].try_into().unwrap()))
                .collect::<Vec<_>>()
        };
        assert_eq!(tagged(T_HEAD), vec![13_000]);
        assert_eq!(tagged(T_DEVICE), vec![3_050]);
        assert_eq!(tagged(T_EVENT), vec![11_000, 12_000, 13_000]);
    }

    // Snapshots, captures, appends and device rows queued together ride
    // the same group commits (no write transaction of their own): each is
    // answered with its own outcome, a bad one fails alone, and what the
    // good ones wrote reads back, with one expiry entry per snapshot row.
    #[tokio::test]
    async fn snapshots_and_captures_join_the_group_commit() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_path(dir.path()).unwrap();
        store
            .install_schema_version(crate::LATEST_SCHEMA)
            .await
            .unwrap();
        let device = DeviceKey::new("alice@example.test", "DEV1").unwrap();
        let snap = |seq: u64| Snapshot {
            seq,
            format_version: 1,
            payload: vec![seq as u8; 1000],
        };
        let append = store.append(AppendBatch::new(device.clone(), 0).event(1, b"e".to_vec()));
        let first = store.put_snapshot(device.clone(), "state".into(), snap(1));
        let bad = store.put_snapshot(device.clone(), "bad\0id".into(), snap(2));
        let capture = store.put_capture(
            device.clone(),
            "r1".into(),
            "request".into(),
            b"body".to_vec(),
            Duration::from_secs(60),
        );
        let bad_capture = store.put_capture(
            device.clone(),
            String::new(),
            "request".into(),
            b"x".to_vec(),
            Duration::from_secs(60),
        );
        let second = store.put_snapshot(device.clone(), "state".into(), snap(2));
        let (a, f, b, c, bc, s) = tokio::join!(append, first, bad, capture, bad_capture, second);
        assert_eq!(a.unwrap(), 1);
        f.unwrap();
        assert!(matches!(b, Err(StorageError::InvalidInput(_))), "{b:?}");
        c.unwrap();
        assert!(matches!(bc, Err(StorageError::InvalidInput(_))), "{bc:?}");
        s.unwrap();
        let got = store
            .get_snapshot(device.clone(), "state".into())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((got.seq, got.payload), (2, vec![2u8; 1000]));
        let captures = store.get_captures(device.clone()).await.unwrap();
        assert_eq!(captures.len(), 1);
        assert_eq!(store.head(device.clone()).await.unwrap(), 1);
        let rows = expiry_rows(&store.inner.db);
        assert_eq!(rows.iter().filter(|k| k[8] == T_SNAPSHOT).count(), 1);
        assert_eq!(rows.iter().filter(|k| k[8] == T_CAPTURE).count(), 1);
    }

    // Pending Sent copies are journaled like appends: after a crash
    // before any checkpoint (the redb file as the schema's install left
    // it), the journal's replay brings back the copy, the try recorded on
    // it and the delete of another, and their expiry index entries.
    #[tokio::test]
    async fn sent_copies_survive_a_crash_through_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&StorageConfig {
            path: dir.path().to_path_buf(),
            checkpoint_ms: 3_600_000,
            ..StorageConfig::default()
        })
        .unwrap();
        store
            .install_schema_version(crate::LATEST_SCHEMA)
            .await
            .unwrap();
        let synced = std::fs::read(dir.path().join("opush.redb")).unwrap();
        let copy = |id: &str| SentCopy {
            user: "alice@example.test".into(),
            message_id: id.into(),
            created_ms: 1,
            last_try_ms: 2,
            tries: 0,
            bytes: format!("copy {id}").into_bytes(),
            ..SentCopy::default()
        };
        store.put_sent_copy(copy("<a@x>")).await.unwrap();
        store.put_sent_copy(copy("<b@x>")).await.unwrap();
        assert!(store
            .claim_sent_copy_try("alice@example.test".into(), "<a@x>".into(), 2, 3, 9)
            .await
            .unwrap());
        store
            .delete_sent_copy("alice@example.test".into(), "<b@x>".into())
            .await
            .unwrap();
        let crashed = tempfile::tempdir().unwrap();
        std::fs::write(crashed.path().join("opush.redb"), &synced).unwrap();
        for f in crate::journal::FILES {
            std::fs::copy(dir.path().join(f), crashed.path().join(f)).unwrap();
        }
        let reopened = open_path(crashed.path()).unwrap();
        let got = reopened.sent_copies(None).await.unwrap();
        let want = SentCopy {
            tries: 3,
            last_try_ms: 9,
            ..copy("<a@x>")
        };
        assert_eq!(got, vec![want.info()]);
        assert_eq!(
            reopened
                .sent_copy("alice@example.test".into(), "<a@x>".into())
                .await
                .unwrap(),
            Some(want)
        );
        let rows = expiry_rows(&reopened.inner.db);
        assert_eq!(rows.iter().filter(|k| k[8] == T_SENT_COPY).count(), 1);
        drop(store);
    }

    /// Opens a copy of a store's files as a crash would leave them: the
    /// redb file's bytes `redb`, the journal files as they are now in
    /// `live`. Returns each device's head and checks its events.
    async fn open_crashed(live: &Path, redb: &[u8], devices: &[DeviceKey]) -> Vec<u64> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("opush.redb"), redb).unwrap();
        for f in crate::journal::FILES {
            std::fs::copy(live.join(f), dir.path().join(f)).unwrap();
        }
        let store = open_path(dir.path()).unwrap();
        let mut heads = Vec::new();
        for d in devices {
            let head = store.head(d.clone()).await.unwrap();
            let events = store.read_events(d.clone(), 1).await.unwrap();
            let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, (1..=head).collect::<Vec<_>>(), "{d}");
            for e in &events {
                assert_eq!(e.payload, format!("{d} {}", e.seq).into_bytes());
            }
            heads.push(head);
        }
        heads
    }

    // A checkpoint's second part runs off the group commit's path: after
    // its first part (the redb commit, deferred: pages staged in memory,
    // sync noted) the appends go to the other journal file, and only once
    // the checkpoint thread has written the pages out and synced is the
    // retired file emptied. A crash (kill -9 or power cut) before that
    // leaves the redb file as the previous durable commit left it, with the
    // records since then split over the two journal files: every
    // acknowledged append must come back, oldest records first; and after
    // the second part, from the redb file and the new journal file alone.
    #[tokio::test]
    async fn a_crash_in_either_part_of_a_checkpoint_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&StorageConfig {
            path: dir.path().to_path_buf(),
            checkpoint_ms: 3_600_000,
            ..StorageConfig::default()
        })
        .unwrap();
        store
            .install_schema_version(crate::LATEST_SCHEMA)
            .await
            .unwrap();
        let devices: Vec<DeviceKey> = (0..2)
            .map(|i| DeviceKey::new("alice@example.test", format!("DEV{i}")).unwrap())
            .collect();
        let append = |n: usize, mut heads: Vec<u64>| {
            let (store, devices) = (store.clone(), devices.clone());
            async move {
                for _ in 0..n {
                    for (d, h) in devices.iter().zip(heads.iter_mut()) {
                        let batch = AppendBatch::new(d.clone(), *h)
                            .event(1, format!("{d} {}", *h + 1).into_bytes())
                            .event(1, format!("{d} {}", *h + 2).into_bytes());
                        *h = store.append(batch).await.unwrap();
                    }
                }
                heads
            }
        };
        let heads = append(3, vec![0; devices.len()]).await;
        // What the last durable commit (the schema's) left on disk: the
        // groups since are in redb's memory and the journal only.
        let synced = std::fs::read(dir.path().join("opush.redb")).unwrap();
        let inner = store.inner.clone();
        let retired = {
            let mut journal = inner.lock_journal().unwrap();
            inner
                .checkpoint_begin(&mut journal, Duration::ZERO)
                .unwrap()
        };
        let heads = append(2, heads).await;
        assert_eq!(heads, vec![10, 10]);
        // A crash before the second part: the redb file as last synced, or
        // as it is now (the same, while the pages are staged; were they
        // written, a kill -9 would find them).
        assert_eq!(open_crashed(dir.path(), &synced, &devices).await, heads);
        let written = std::fs::read(dir.path().join("opush.redb")).unwrap();
        assert_eq!(open_crashed(dir.path(), &written, &devices).await, heads);
        // The second part: synced, the retired file emptied; the records
        // since the switch are still needed.
        finish_checkpoint(&inner.sync, &inner.journal, &retired);
        assert!(!inner.lock_journal().unwrap().retired());
        let synced = std::fs::read(dir.path().join("opush.redb")).unwrap();
        assert_eq!(open_crashed(dir.path(), &synced, &devices).await, heads);
        drop(inner);
        drop(store);
    }

    // A read that began before a commit never puts back the head the
    // commit replaced, and one that began before a clear is not kept.
    #[test]
    fn a_head_read_does_not_undo_a_commit_or_a_clear() {
        let mut cache = HeadCache::default();
        let key = b"u\0d".to_vec();
        let g = cache.generation;
        cache.committed(key.clone(), (5, 100));
        cache.remember(key.clone(), (4, 100), g);
        assert_eq!(cache.get(&key, 10), Some(5));
        assert_eq!(cache.get(&key, 100), Some(0), "expired: head 0");
        let g = cache.generation;
        cache.clear();
        cache.remember(key.clone(), (4, 100), g);
        assert_eq!(cache.get(&key, 10), None);
        cache.remember(key.clone(), (4, 100), cache.generation);
        assert_eq!(cache.get(&key, 10), Some(4));
    }

    // The head read through the cache is the stored one: after appends,
    // after a conflict (nothing written), and after the schema is dropped
    // and installed again.
    #[tokio::test]
    async fn heads_from_the_cache_follow_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_path(dir.path()).unwrap();
        store.install_schema_version(LATEST_SCHEMA).await.unwrap();
        let device = DeviceKey::new("alice@example.test", "DEV1").unwrap();
        let stored = |store: &EmbeddedStore| {
            let (head, _) = store.inner.head_row(&device).unwrap();
            head
        };
        assert_eq!(store.head(device.clone()).await.unwrap(), 0);
        let batch = AppendBatch::new(device.clone(), 0)
            .event(1, b"a".to_vec())
            .event(1, b"b".to_vec());
        assert_eq!(store.append(batch).await.unwrap(), 2);
        assert_eq!(store.head(device.clone()).await.unwrap(), 2);
        let stale = AppendBatch::new(device.clone(), 1).event(1, b"c".to_vec());
        assert!(matches!(
            store.append(stale).await,
            Err(StorageError::Conflict { .. })
        ));
        assert_eq!(store.head(device.clone()).await.unwrap(), 2);
        assert_eq!(stored(&store), 2);
        store.destroy().await.unwrap();
        store.install_schema_version(LATEST_SCHEMA).await.unwrap();
        assert_eq!(store.head(device.clone()).await.unwrap(), 0, "a new store");
        let batch = AppendBatch::new(device.clone(), 0).event(1, b"a".to_vec());
        assert_eq!(store.append(batch).await.unwrap(), 1);
        assert_eq!(store.head(device.clone()).await.unwrap(), 1);
        assert_eq!(stored(&store), 1);
    }
}
