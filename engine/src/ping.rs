//! Ping and GetItemEstimate: which folders have something the next Sync
//! would actually send, and how much.
//!
//! Both reuse the Sync change scan (dirty set + soft-delete range), so they
//! respect each collection's FilterType window and cost nothing when nothing
//! changed. The Ping wait itself (parking, heartbeat expiry) is the server's
//! job: the engine says which deadline (`now + heartbeat`) and which folders.

use crate::decision::{Decision, EngineConfig};
use crate::event::Event;
use crate::folder_sync::{device_folders, hierarchy_out_of_date};
use crate::state::DeviceState;
use crate::sync::Overlay;
use crate::types::{CollectionId, FilterType, SyncKey, Timestamp};

/// Whether the next Sync of `collection` would send something (with the
/// pending batch assumed delivered).
pub fn has_changes(state: &DeviceState, collection: CollectionId, now: Timestamp) -> bool {
    count_changes(state, collection, now, None, 1) > 0
}

fn count_changes(
    state: &DeviceState,
    collection: CollectionId,
    now: Timestamp,
    filter: Option<FilterType>,
    limit: usize,
) -> usize {
    let Some(c) = state.collections.get(&collection) else {
        return 0;
    };
    if !c.synced {
        return 0;
    }
    let ov = Overlay::confirmed(c);
    let filter = filter.unwrap_or(c.filter);
    let cutoff = if c.folder_type.is_time_filtered() {
        filter.cutoff(now)
    } else {
        None
    };
    ov.count(cutoff, limit)
}

/// A Ping request; both fields absent means "same as last time".
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PingRequest {
    /// HeartbeatInterval in seconds.
    pub heartbeat: Option<u32>,
    /// Folders to watch.
    pub folders: Option<Vec<CollectionId>>,
}

/// Ping response model ([MS-ASCMD] 2.2.3.177.10).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum PingResponse {
    /// Nothing yet: park until `deadline` (status 1 at expiry) or until the
    /// watcher fires, then call [`ping_changes`] after folding observations.
    Wait {
        /// Folders armed.
        folders: Vec<CollectionId>,
        /// Heartbeat in seconds.
        heartbeat: u32,
        /// `now + heartbeat`.
        deadline: Timestamp,
    },
    /// Status 2: these folders have changes.
    Changes(Vec<CollectionId>),
    /// Status 3: an empty Ping and nothing remembered.
    MissingParameters,
    /// Status 5 with the bound to use (HeartbeatInterval).
    HeartbeatOutOfBounds(u32),
    /// Status 6 with MaxFolders.
    TooManyFolders(usize),
    /// Status 7: FolderSync first.
    HierarchyOutOfDate,
}

impl PingResponse {
    /// Ping Status value.
    pub fn status(&self) -> u8 {
        match self {
            PingResponse::Wait { .. } => 1,
            PingResponse::Changes(_) => 2,
            PingResponse::MissingParameters => 3,
            PingResponse::HeartbeatOutOfBounds(_) => 5,
            PingResponse::TooManyFolders(_) => 6,
            PingResponse::HierarchyOutOfDate => 7,
        }
    }
}

/// Folders among `folders` whose next Sync would send something.
pub fn ping_changes(
    state: &DeviceState,
    folders: &[CollectionId],
    now: Timestamp,
) -> Vec<CollectionId> {
    folders
        .iter()
        .copied()
        .filter(|f| has_changes(state, *f, now))
        .collect()
}

/// Decides a Ping after the server folded the current observations.
pub fn decide_ping(
    state: &DeviceState,
    req: &PingRequest,
    now: Timestamp,
    config: &EngineConfig,
) -> Decision<PingResponse> {
    let none = |r| Decision {
        response: r,
        events: vec![],
    };
    let remembered = state.ping.as_ref();
    let heartbeat = match req.heartbeat.or(remembered.map(|r| r.1)) {
        Some(h) => h,
        None => return none(PingResponse::MissingParameters),
    };
    let folders = match req
        .folders
        .clone()
        .or_else(|| remembered.map(|r| r.0.clone()))
    {
        Some(f) if !f.is_empty() => f,
        _ => return none(PingResponse::MissingParameters),
    };
    if heartbeat < config.min_heartbeat {
        return none(PingResponse::HeartbeatOutOfBounds(config.min_heartbeat));
    }
    if heartbeat > config.max_heartbeat {
        return none(PingResponse::HeartbeatOutOfBounds(config.max_heartbeat));
    }
    if folders.len() > config.max_ping_folders {
        return none(PingResponse::TooManyFolders(config.max_ping_folders));
    }
    let known = device_folders(state);
    if hierarchy_out_of_date(state) || folders.iter().any(|f| !known.contains_key(f)) {
        return none(PingResponse::HierarchyOutOfDate);
    }
    let mut events = Vec::new();
    if remembered.is_none_or(|(f, hb)| *f != folders || *hb != heartbeat) {
        events.push(Event::PingArmed {
            folders: folders.clone(),
            heartbeat,
        });
    }
    let changed = ping_changes(state, &folders, now);
    let response = if changed.is_empty() {
        PingResponse::Wait {
            folders,
            heartbeat,
            deadline: now.plus_ms(u64::from(heartbeat) * 1000),
        }
    } else {
        PingResponse::Changes(changed)
    };
    Decision { response, events }
}

/// One collection of a GetItemEstimate request.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EstimateRequest {
    /// CollectionId.
    pub collection: CollectionId,
    /// SyncKey the device holds.
    pub sync_key: SyncKey,
    /// FilterType option, if given.
    pub filter: Option<FilterType>,
}

/// GetItemEstimate response ([MS-ASCMD] 2.2.3.177.6).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EstimateResponse {
    /// 1 success, 2 invalid collection, 3 sync state not primed (SyncKey 0
    /// or never synced), 4 invalid SyncKey.
    pub status: u8,
    /// Estimate (with status 1).
    pub estimate: Option<u64>,
}

/// Decides one collection of GetItemEstimate (no events).
pub fn decide_get_item_estimate(
    state: &DeviceState,
    req: &EstimateRequest,
    now: Timestamp,
) -> EstimateResponse {
    let fail = |status| EstimateResponse {
        status,
        estimate: None,
    };
    if !state.hierarchy.ids.contains_key(&req.collection) {
        return fail(2);
    }
    let Some(c) = state.collections.get(&req.collection).filter(|c| c.synced) else {
        return fail(3);
    };
    if req.sync_key == SyncKey::ZERO {
        return fail(3);
    }
    let pending_key = c.pending.as_ref().map(|p| p.batch.key);
    if req.sync_key != c.current && Some(req.sync_key) != pending_key {
        return fail(4);
    }
    let n = count_changes(state, req.collection, now, req.filter, usize::MAX);
    EstimateResponse {
        status: 1,
        estimate: Some(n as u64),
    }
}
