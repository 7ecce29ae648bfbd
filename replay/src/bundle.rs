//! The bundle file: a self-contained JSON document (binary payloads in
//! base64) holding the engine format version, the device, the snapshot the
//! events start from, the stored events exactly as stored, the state the
//! exporting binary folded at the end, and the captured bodies.
//!
//! JSON keeps checked-in bundles reviewable in a diff; the events stay the
//! stored bytes so a bundle tests the decoder as well as the engine.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use opush_engine::{
    decode_event, decode_snapshot, encode_snapshot, event_format, fold, DeviceState, Event,
    FORMAT_VERSION,
};
use opush_storage::{DeviceKey, Store};
use serde::{Deserialize, Serialize};

/// The `format` field of every bundle.
pub const BUNDLE_MAGIC: &str = "opush-replay-bundle/1";

/// Why a bundle cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// The store failed.
    #[error("storage: {0}")]
    Storage(#[from] opush_storage::StorageError),
    /// Not a bundle, or a damaged one.
    #[error("not a valid bundle: {0}")]
    Invalid(String),
    /// Written by a newer engine.
    #[error(
        "bundle written with engine format version {found}, newer than this opush \
         (reads up to {supported}): replay it with an opush at least as new as the one that exported it"
    )]
    NewerEngine {
        /// Version in the bundle.
        found: u32,
        /// Highest version this binary reads.
        supported: u32,
    },
    /// The device's log no longer holds the start of the stretch asked for.
    #[error(
        "the log of this device no longer reaches back to {0} (expired); export a later stretch"
    )]
    Incomplete(String),
}

/// One stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleEvent {
    /// Its sequence in the device log.
    pub seq: u64,
    /// The stored bytes (engine encoding), base64.
    pub payload: String,
}

impl BundleEvent {
    /// Decodes the event.
    pub fn decode(&self) -> Result<Event, BundleError> {
        let bytes = B64
            .decode(&self.payload)
            .map_err(|e| BundleError::Invalid(format!("event {}: {e}", self.seq)))?;
        decode_event(&bytes).map_err(|e| BundleError::Invalid(format!("event {}: {e}", self.seq)))
    }

    /// The engine format version the event was written at (its header):
    /// a decision it records is replayed under that format's rules.
    pub fn format_version(&self) -> Result<u32, BundleError> {
        let bytes = B64
            .decode(&self.payload)
            .map_err(|e| BundleError::Invalid(format!("event {}: {e}", self.seq)))?;
        event_format(&bytes).map_err(|e| BundleError::Invalid(format!("event {}: {e}", self.seq)))
    }
}

/// One captured request or response body (full-capture mode).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BundleCapture {
    /// The request id it belongs to.
    pub req_id: String,
    /// `request-head`, `request`, `response-head` or `response`.
    pub kind: String,
    /// When it was stored, Unix milliseconds (0 in older bundles).
    #[serde(default)]
    pub at_ms: i64,
    /// The body, base64.
    pub bytes: String,
}

/// A recorded stretch of one device's life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bundle {
    /// Always [`BUNDLE_MAGIC`].
    pub format: String,
    /// The engine format version of the exporting binary.
    pub engine_format_version: u32,
    /// The user.
    pub user: String,
    /// The device id.
    pub device: String,
    /// Sequence the start state was folded up to (0: the empty state).
    pub start_seq: u64,
    /// The start state (engine snapshot encoding), base64.
    pub start_state: String,
    /// The events after it, in log order.
    pub events: Vec<BundleEvent>,
    /// The state the exporting binary folded after the last event, base64.
    pub end_state: String,
    /// Captured bodies, if full capture was on.
    #[serde(default)]
    pub captures: Vec<BundleCapture>,
}

fn b64_state(state: &DeviceState) -> Result<String, BundleError> {
    encode_snapshot(state)
        .map(|b| B64.encode(b))
        .map_err(|e| BundleError::Invalid(e.to_string()))
}

/// The request time of an event, when it names one.
fn time_of(e: &Event) -> Option<u64> {
    match e {
        Event::RequestReceived { at, .. } => Some(at.0),
        Event::Decided { record, .. } => Some(record.at.0),
        Event::PolicyChecked { at, .. } => Some(at.0),
        _ => None,
    }
}

/// Reads the stretch of `user`/`device`'s log from `since` to `until`
/// (Unix milliseconds, by request time; `None`: the whole live log) from
/// either storage backend.
pub async fn export(
    store: &Store,
    user: &str,
    device: &str,
    since: Option<u64>,
    until: Option<u64>,
) -> Result<Bundle, BundleError> {
    let key = DeviceKey::new(user, device)?;
    let stored = store.read_events(&key, 1).await?;
    // The start: the empty state when the log still begins at 1, else the
    // stored snapshot if the events after it are all there.
    let (mut state, mut base_seq) = (DeviceState::default(), 0u64);
    if stored.first().is_some_and(|e| e.seq != 1) {
        let first = stored.first().map_or(0, |e| e.seq);
        match store.get_snapshot(&key, "device").await? {
            Some(snap) if snap.seq + 1 >= first => {
                state = decode_snapshot(&snap.payload)
                    .map_err(|e| BundleError::Invalid(format!("stored snapshot: {e}")))?;
                base_seq = snap.seq;
            }
            _ => return Err(BundleError::Incomplete(format!("event {}", first - 1))),
        }
    }
    let mut start_state = state.clone();
    let mut start_seq = base_seq;
    let mut events = Vec::new();
    // Every request the live log records (captures of other requests are
    // those the log never saw: refused before a handler, or failed).
    let mut logged = std::collections::BTreeSet::new();
    let mut started = since.is_none();
    let mut last_time = 0;
    // Events left in the displaced group being read (`Event::Displaced`).
    let mut displaced = 0u32;
    for (i, ev) in stored.iter().enumerate().filter(|(_, e)| e.seq > base_seq) {
        let event = decode_event(&ev.payload)
            .map_err(|e| BundleError::Invalid(format!("stored event {}: {e}", ev.seq)))?;
        if let Event::RequestReceived { req_id, .. } = &event {
            logged.insert(req_id.to_string());
        }
        // Cut only at a request's start, so no decision is split, and not
        // inside a displaced group (its marker would be left out): at the
        // marker instead, when the group's first request is in the stretch.
        let cut_at = match &event {
            Event::RequestReceived { at, .. } if displaced == 0 => Some(at.0),
            Event::Displaced { events, .. } => stored
                .iter()
                .skip(i + 1)
                .take(*events as usize)
                .filter_map(|e| decode_event(&e.payload).ok())
                .find_map(|e| match e {
                    Event::RequestReceived { at, .. } => Some(at.0),
                    _ => None,
                }),
            _ => None,
        };
        displaced = match &event {
            Event::Displaced { events, .. } => *events,
            _ => displaced.saturating_sub(1),
        };
        if let (Some(at), false) = (cut_at, started) {
            if since.is_some_and(|s| at >= s) {
                started = true;
                start_state = state.clone();
                start_seq = ev.seq - 1;
            }
        }
        if let Some(t) = time_of(&event) {
            last_time = t;
        }
        if matches!(event, Event::RequestReceived { .. }) && until.is_some_and(|u| last_time > u) {
            break;
        }
        if started {
            events.push(BundleEvent {
                seq: ev.seq,
                payload: B64.encode(&ev.payload),
            });
        }
        fold(&mut state, std::slice::from_ref(&event));
    }
    if !started {
        start_state = state.clone();
        start_seq = stored.last().map_or(base_seq, |e| e.seq);
    }
    let mut captures = Vec::new();
    let wanted: std::collections::BTreeSet<String> = events
        .iter()
        .filter_map(|e| match e.decode() {
            Ok(Event::RequestReceived { req_id, .. }) => Some(req_id.to_string()),
            _ => None,
        })
        .collect();
    let in_window = |at_ms: i64| {
        let at = u64::try_from(at_ms).unwrap_or(0);
        since.is_none_or(|s| at >= s) && until.is_none_or(|u| at <= u)
    };
    for c in store.get_captures(&key).await? {
        if wanted.contains(&c.req_id) || (!logged.contains(&c.req_id) && in_window(c.at_ms)) {
            captures.push(BundleCapture {
                req_id: c.req_id,
                kind: c.kind,
                at_ms: c.at_ms,
                bytes: B64.encode(&c.bytes),
            });
        }
    }
    Ok(Bundle {
        format: BUNDLE_MAGIC.to_owned(),
        engine_format_version: FORMAT_VERSION,
        user: user.to_owned(),
        device: device.to_owned(),
        start_seq,
        start_state: b64_state(&start_state)?,
        events,
        end_state: b64_state(&state)?,
        captures,
    })
}

impl Bundle {
    /// Parses a bundle, refusing one from a newer engine format.
    pub fn from_json(text: &str) -> Result<Bundle, BundleError> {
        // Look at the header first so a newer bundle is refused clearly even
        // if the rest of its layout changed.
        let head: serde_json::Value =
            serde_json::from_str(text).map_err(|e| BundleError::Invalid(e.to_string()))?;
        if head.get("format").and_then(|f| f.as_str()) != Some(BUNDLE_MAGIC) {
            return Err(BundleError::Invalid(format!(
                "missing \"format\": \"{BUNDLE_MAGIC}\""
            )));
        }
        let found = head
            .get("engine_format_version")
            .and_then(|v| v.as_u64())
            .ok_or_else(|| BundleError::Invalid("no engine_format_version".to_owned()))?;
        if found > u64::from(FORMAT_VERSION) {
            return Err(BundleError::NewerEngine {
                found: u32::try_from(found).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        serde_json::from_value(head).map_err(|e| BundleError::Invalid(e.to_string()))
    }

    /// The bundle as pretty JSON (one field per line, reviewable in a diff).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// The start state.
    pub fn start(&self) -> Result<DeviceState, BundleError> {
        state_of(&self.start_state, "start_state")
    }

    /// The end state as the exporting binary folded it.
    pub fn end(&self) -> Result<DeviceState, BundleError> {
        state_of(&self.end_state, "end_state")
    }

    /// The decoded events with their sequences.
    pub fn decoded(&self) -> Result<Vec<(u64, Event)>, BundleError> {
        self.events
            .iter()
            .map(|e| Ok((e.seq, e.decode()?)))
            .collect()
    }

    /// The captured body of `kind` for a request.
    pub fn capture(&self, req_id: u64, kind: &str) -> Option<Vec<u8>> {
        self.capture_of(&req_id.to_string(), kind)
    }

    /// The captured body of `kind` for a request id as the store names it.
    pub fn capture_of(&self, req_id: &str, kind: &str) -> Option<Vec<u8>> {
        self.captures
            .iter()
            .find(|c| c.req_id == req_id && c.kind == kind)
            .and_then(|c| B64.decode(&c.bytes).ok())
    }

    /// Request ids of captures whose request the bundle's events do not
    /// hold (refused before reaching a handler), oldest first.
    pub fn unlogged_captures(&self) -> Vec<String> {
        let logged: std::collections::BTreeSet<String> = self
            .events
            .iter()
            .filter_map(|e| match e.decode() {
                Ok(Event::RequestReceived { req_id, .. }) => Some(req_id.to_string()),
                _ => None,
            })
            .collect();
        let mut ids: Vec<(i64, String)> = self
            .captures
            .iter()
            .filter(|c| !logged.contains(&c.req_id))
            .map(|c| (c.at_ms, c.req_id.clone()))
            .collect();
        ids.sort();
        ids.dedup_by(|a, b| a.1 == b.1);
        ids.into_iter().map(|(_, id)| id).collect()
    }
}

fn state_of(text: &str, what: &str) -> Result<DeviceState, BundleError> {
    let bytes = B64
        .decode(text)
        .map_err(|e| BundleError::Invalid(format!("{what}: {e}")))?;
    decode_snapshot(&bytes).map_err(|e| BundleError::Invalid(format!("{what}: {e}")))
}
