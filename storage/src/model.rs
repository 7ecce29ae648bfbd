//! The values that go in and out of the store: device keys, append batches,
//! stored events, snapshots, device registry records and captures. Payloads
//! are opaque bytes plus a format version: this crate never decodes them
//! (the `engine` crate owns their encoding).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::{Result, StorageError};

/// Longest user or device id accepted (bytes).
pub const MAX_ID_LEN: usize = 256;

/// One device of one user: the unit of the event log and of its head.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct DeviceKey {
    /// The authenticated user (e.g. `alice@example.com`).
    pub user: String,
    /// The EAS DeviceId.
    pub device_id: String,
}

impl DeviceKey {
    /// Builds a key, rejecting empty, too long or NUL-containing ids.
    pub fn new(user: impl Into<String>, device_id: impl Into<String>) -> Result<Self> {
        let key = DeviceKey {
            user: user.into(),
            device_id: device_id.into(),
        };
        key.validate()?;
        Ok(key)
    }

    /// Checks the key can be stored.
    pub fn validate(&self) -> Result<()> {
        for (what, s) in [("user", &self.user), ("device id", &self.device_id)] {
            if s.is_empty() || s.len() > MAX_ID_LEN || s.contains('\0') {
                return Err(StorageError::InvalidInput(format!(
                    "{what} must be 1-{MAX_ID_LEN} bytes without NUL"
                )));
            }
        }
        Ok(())
    }

    /// `user\0device_id`: the embedded store's key prefix for this device.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.user.len() + 1 + self.device_id.len());
        v.extend_from_slice(self.user.as_bytes());
        v.push(0);
        v.extend_from_slice(self.device_id.as_bytes());
        v
    }
}

impl fmt::Display for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.user, self.device_id)
    }
}

/// An event to append: its format version and its encoded bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Version of the encoding of `payload` (defined by `engine`).
    pub format_version: u16,
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// A write to one device's log, conditional on the device's head: it is
/// committed in one call, entirely or not at all, and only if the head is
/// still `expected_head` (0 = the device has no events).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendBatch {
    /// The device whose log grows.
    pub device: DeviceKey,
    /// The head sequence the caller folded its state from.
    pub expected_head: u64,
    /// Events, given sequences `expected_head + 1 ..` in order.
    pub events: Vec<NewEvent>,
}

impl AppendBatch {
    /// Starts a batch on top of `expected_head`.
    pub fn new(device: DeviceKey, expected_head: u64) -> Self {
        AppendBatch {
            device,
            expected_head,
            events: Vec::new(),
        }
    }

    /// Adds one event.
    pub fn event(mut self, format_version: u16, payload: impl Into<Vec<u8>>) -> Self {
        self.events.push(NewEvent {
            format_version,
            payload: payload.into(),
        });
        self
    }

    /// The head after a successful commit.
    pub fn new_head(&self) -> u64 {
        self.expected_head + self.events.len() as u64
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Position in the device's log, from 1.
    pub seq: u64,
    /// Version of the encoding of `payload`.
    pub format_version: u16,
    /// blake3 of `payload` (absent only on rows written at schema v1 and not yet migrated).
    pub digest: Option<[u8; 32]>,
    /// The encoded event.
    pub payload: Vec<u8>,
}

/// The latest folded state of one collection of one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snapshot {
    /// The head sequence the state was folded up to (events after it must be re-applied).
    pub seq: u64,
    /// Version of the encoding of `payload`.
    pub format_version: u16,
    /// The encoded state.
    pub payload: Vec<u8>,
}

/// Where a device stands in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum DeviceState {
    /// May sync.
    #[default]
    Allowed,
    /// Known but held back by an administrator.
    Quarantined,
    /// A remote wipe is pending.
    WipeRequested,
    /// The device acknowledged the wipe.
    Wiped,
}

impl DeviceState {
    /// Stable text form (stored in Cassandra).
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceState::Allowed => "allowed",
            DeviceState::Quarantined => "quarantined",
            DeviceState::WipeRequested => "wipe_requested",
            DeviceState::Wiped => "wiped",
        }
    }

    /// Parses [`DeviceState::as_str`].
    pub fn parse(s: &str) -> Result<Self> {
        Ok(match s {
            "allowed" => DeviceState::Allowed,
            "quarantined" => DeviceState::Quarantined,
            "wipe_requested" => DeviceState::WipeRequested,
            "wiped" => DeviceState::Wiped,
            _ => return Err(StorageError::Corrupt(format!("unknown device state {s:?}"))),
        })
    }
}

/// A device registry row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRecord {
    /// Who owns the device.
    pub key: DeviceKey,
    /// EAS DeviceType (e.g. `iPhone`).
    pub device_type: String,
    /// First request seen, Unix milliseconds.
    pub first_seen_ms: i64,
    /// Latest request seen, Unix milliseconds.
    pub last_seen_ms: i64,
    /// The current policy key, once provisioned.
    pub policy_key: Option<u32>,
    /// Allowed, quarantined, wipe requested or wiped.
    pub state: DeviceState,
    /// Free-form device information from Settings (Model, OS, UserAgent…).
    pub info: BTreeMap<String, String>,
}

/// A change to one device registry row, applied to the row *as stored when
/// it is written*: the embedded store applies it inside its write
/// transaction, Cassandra with a compare-and-set (a lightweight transaction
/// retried on a lost race). Two processes (or a request and an
/// administrator) changing different fields of one row at the same time
/// therefore both keep their change, where writing back a whole row read
/// earlier lost the other's (a quarantine or a wipe mark undone by a
/// request's last-seen update).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceChange {
    /// Whose row.
    pub key: DeviceKey,
    /// The row to create when there is none; without it a change to a
    /// missing row writes nothing.
    pub create: Option<DeviceRecord>,
    /// A new EAS DeviceType.
    pub device_type: Option<String>,
    /// A request seen at this time (Unix ms): the last-seen time becomes the
    /// later of the two, never earlier.
    pub seen_ms: Option<i64>,
    /// A new registry state.
    pub state: Option<DeviceState>,
    /// Device information entries set (others are kept).
    pub info: BTreeMap<String, String>,
}

impl DeviceChange {
    /// A change of the row of `key` that changes nothing yet.
    pub fn new(key: DeviceKey) -> Self {
        DeviceChange {
            key,
            create: None,
            device_type: None,
            seen_ms: None,
            state: None,
            info: BTreeMap::new(),
        }
    }

    /// The row after this change, from the row as stored (`None`: the row
    /// does not exist, and stays so unless [`DeviceChange::create`] is set).
    pub fn apply(&self, current: Option<DeviceRecord>) -> Option<DeviceRecord> {
        let mut row = current.or_else(|| self.create.clone())?;
        row.key = self.key.clone();
        if let Some(t) = &self.device_type {
            row.device_type = t.clone();
        }
        if let Some(at) = self.seen_ms {
            row.last_seen_ms = row.last_seen_ms.max(at);
        }
        if let Some(state) = self.state {
            row.state = state;
        }
        for (k, v) in &self.info {
            row.info.insert(k.clone(), v.clone());
        }
        Some(row)
    }
}

/// A request or response body kept by the full-capture mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    /// The request id the body belongs to.
    pub req_id: String,
    /// What it is (e.g. `request`, `response`).
    pub kind: String,
    /// When it was stored, Unix milliseconds.
    pub at_ms: i64,
    /// blake3 of `bytes`.
    pub digest: [u8; 32],
    /// The body.
    pub bytes: Vec<u8>,
}

/// Longest Message-ID accepted for a [`SentCopy`] (bytes; a header line's limit).
pub const MAX_MESSAGE_ID_LEN: usize = 998;

/// Longest `last_error` kept for a [`SentCopy`] (bytes): a longer one is
/// cut (at a character boundary) by the store's callers.
pub const MAX_SENT_ERROR_LEN: usize = 500;
/// Longest `subject` kept for a [`SentCopy`] (bytes).
pub const MAX_SENT_SUBJECT_LEN: usize = 200;

/// A sent message whose copy waits to be saved in the user's Sent folder
/// (the IMAP server was unavailable when it was sent): kept so that the
/// copy reaches Sent even when opush restarts meanwhile. Keyed by user and
/// Message-ID. The copy is user data the user asked to keep; no password
/// is ever part of it (nor of `last_error`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentCopy {
    /// Whose Sent folder it goes to.
    pub user: String,
    /// The message's Message-ID (how a try finds it already in Sent).
    pub message_id: String,
    /// The device that sent it (schema v5; empty in rows from before).
    pub device_id: String,
    /// Its Subject, for listings (schema v5; at most
    /// [`MAX_SENT_SUBJECT_LEN`] bytes; empty in rows from before).
    pub subject: String,
    /// When it was sent (the row was first written), Unix milliseconds.
    pub created_ms: i64,
    /// The end of its latest claimed try, Unix milliseconds (see
    /// `Store::claim_sent_copy_try`).
    pub last_try_ms: i64,
    /// Background tries so far.
    pub tries: u32,
    /// When the process holding it plans its next try, Unix milliseconds
    /// (schema v5; 0 = not recorded: due `wait_after(tries)` after
    /// `last_try_ms`).
    pub next_try_ms: i64,
    /// Why the latest try failed (schema v5): the IMAP server's answer or
    /// the connection's error, never a password; at most
    /// [`MAX_SENT_ERROR_LEN`] bytes.
    pub last_error: Option<String>,
    /// The message as it goes in Sent.
    pub bytes: Vec<u8>,
}

impl SentCopy {
    /// Checks the key and the texts can be stored.
    pub fn validate(&self) -> Result<()> {
        validate_sent_copy_key(&self.user, &self.message_id)?;
        validate_sent_texts(&self.device_id, &self.subject, self.last_error.as_deref())
    }

    /// Everything but the message (what listings and the sweep read).
    pub fn info(&self) -> SentCopyInfo {
        SentCopyInfo {
            user: self.user.clone(),
            message_id: self.message_id.clone(),
            device_id: self.device_id.clone(),
            subject: self.subject.clone(),
            size: self.bytes.len() as u64,
            created_ms: self.created_ms,
            last_try_ms: self.last_try_ms,
            tries: self.tries,
            next_try_ms: self.next_try_ms,
            last_error: self.last_error.clone(),
        }
    }
}

/// A pending Sent copy without its message: what `Store::sent_copies`
/// and `Store::all_sent_copies` read (the message's bytes are read by
/// `Store::sent_copy` only, when a try needs them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentCopyInfo {
    /// See [`SentCopy::user`].
    pub user: String,
    /// See [`SentCopy::message_id`].
    pub message_id: String,
    /// See [`SentCopy::device_id`].
    pub device_id: String,
    /// See [`SentCopy::subject`].
    pub subject: String,
    /// The message's size in bytes.
    pub size: u64,
    /// See [`SentCopy::created_ms`].
    pub created_ms: i64,
    /// See [`SentCopy::last_try_ms`].
    pub last_try_ms: i64,
    /// See [`SentCopy::tries`].
    pub tries: u32,
    /// See [`SentCopy::next_try_ms`].
    pub next_try_ms: i64,
    /// See [`SentCopy::last_error`].
    pub last_error: Option<String>,
}

impl SentCopyInfo {
    /// The copy, with its message.
    pub fn with_bytes(self, bytes: Vec<u8>) -> SentCopy {
        SentCopy {
            user: self.user,
            message_id: self.message_id,
            device_id: self.device_id,
            subject: self.subject,
            created_ms: self.created_ms,
            last_try_ms: self.last_try_ms,
            tries: self.tries,
            next_try_ms: self.next_try_ms,
            last_error: self.last_error,
            bytes,
        }
    }
}

/// What `Store::note_sent_copy_try` writes: the outcome of a try (or an
/// administrator's "retry now").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SentCopyNote {
    /// The new `last_try_ms`.
    pub last_try_ms: i64,
    /// The new `next_try_ms`.
    pub next_try_ms: i64,
    /// The new `last_error`.
    pub last_error: Option<String>,
}

/// Checks a sent copy's device id (at most [`MAX_ID_LEN`] bytes), subject
/// and error (at most [`MAX_SENT_SUBJECT_LEN`] / [`MAX_SENT_ERROR_LEN`]
/// bytes); none may hold a NUL.
pub fn validate_sent_texts(device_id: &str, subject: &str, error: Option<&str>) -> Result<()> {
    let bad = |what: &str, max: usize| {
        Err(StorageError::InvalidInput(format!(
            "sent copy {what} must be at most {max} bytes without NUL"
        )))
    };
    if device_id.len() > MAX_ID_LEN || device_id.contains('\0') {
        return bad("device id", MAX_ID_LEN);
    }
    if subject.len() > MAX_SENT_SUBJECT_LEN || subject.contains('\0') {
        return bad("subject", MAX_SENT_SUBJECT_LEN);
    }
    if error.is_some_and(|e| e.len() > MAX_SENT_ERROR_LEN || e.contains('\0')) {
        return bad("error", MAX_SENT_ERROR_LEN);
    }
    Ok(())
}

/// `s` cut to at most `max` bytes at a character boundary.
pub fn cut_to(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Checks a sent copy's user (as a [`DeviceKey`]'s) and Message-ID
/// (1-[`MAX_MESSAGE_ID_LEN`] bytes, no NUL).
pub fn validate_sent_copy_key(user: &str, message_id: &str) -> Result<()> {
    if user.is_empty() || user.len() > MAX_ID_LEN || user.contains('\0') {
        return Err(StorageError::InvalidInput(format!(
            "user must be 1-{MAX_ID_LEN} bytes without NUL"
        )));
    }
    if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID_LEN || message_id.contains('\0') {
        return Err(StorageError::InvalidInput(format!(
            "Message-ID must be 1-{MAX_MESSAGE_ID_LEN} bytes without NUL"
        )));
    }
    Ok(())
}

/// blake3 of a payload.
pub fn digest(bytes: &[u8]) -> [u8; 32] {
    *blake3::hash(bytes).as_bytes()
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
