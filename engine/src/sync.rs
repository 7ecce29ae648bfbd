//! Sync, per collection: SyncKey bootstrap and advance, retries of a lost
//! answer, paging with WindowSize/MoreAvailable, client Add/Change/Delete/
//! Fetch (planned as backend effects, then decided from their outcomes),
//! conflicts, FilterType windows with SoftDelete, and broken-item quarantine.
//!
//! No O(collection) work on the decide path: only the `dirty` set, the
//! soft-delete index range below the window cutoff and the (bounded) pending
//! batch are visited. This module must not mutate state; it returns events.

use crate::decision::{Decision, EngineConfig, PageOrder, Rules, StepError};
use crate::event::{
    AppliedChange, Batch, ClientReply, Event, ObservedItem, ReplyKind, ServerChange,
};
use crate::state::{CollectionState, DeviceSide, DeviceState, ServerSide};
use crate::types::{
    BackendItemId, ClientId, CollectionId, Digest, FilterType, ItemVersion, ServerId, SyncKey,
    Timestamp,
};
use std::collections::{BTreeMap, BTreeSet};

/// Status values of a Sync collection / command ([MS-ASCMD] 2.2.3.177.17).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncStatus {
    /// 1
    Success,
    /// 3: invalid or expired SyncKey — the device returns to SyncKey 0.
    InvalidSyncKey,
    /// 5: server error (a backend effect failed).
    ServerError,
    /// 7: conflict; the server object replaced the client's.
    Conflict,
    /// 8: object not found.
    ObjectNotFound,
    /// 12: folder hierarchy changed (unknown CollectionId).
    HierarchyChanged,
}

impl SyncStatus {
    /// Wire value.
    pub fn code(self) -> u8 {
        match self {
            SyncStatus::Success => 1,
            SyncStatus::InvalidSyncKey => 3,
            SyncStatus::ServerError => 5,
            SyncStatus::Conflict => 7,
            SyncStatus::ObjectNotFound => 8,
            SyncStatus::HierarchyChanged => 12,
        }
    }
}

/// The Conflict option ([MS-ASCMD] 2.2.3.34).
#[derive(
    rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default,
)]
pub enum Conflict {
    /// 0: the client object replaces the server object.
    ClientWins,
    /// 1 (default): the server object replaces the client object.
    #[default]
    ServerWins,
}

/// A command the device sent inside `<Commands>`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ClientCommand {
    /// `<Add>` with the blake3 digest of its ApplicationData.
    Add {
        /// ClientId.
        client_id: ClientId,
        /// Content digest.
        digest: Digest,
    },
    /// `<Change>`.
    Change {
        /// ServerId.
        server_id: ServerId,
        /// Content digest.
        digest: Digest,
    },
    /// `<Delete>`.
    Delete {
        /// ServerId.
        server_id: ServerId,
    },
    /// `<Fetch>`, answered whatever its size (what engines before format
    /// version 8 recorded; the shell sends [`ClientCommand::FetchSized`]).
    Fetch {
        /// ServerId.
        server_id: ServerId,
    },
    /// `<Fetch>` with the bytes its answer would add, as the shell
    /// estimated them from the message's size and the BodyPreference
    /// (format version 8). The Fetches of one request share
    /// [`EngineConfig::max_window_bytes`]: in request order, the first one
    /// found is answered whatever its size, each next one only while the
    /// total stays within the budget; the rest are answered
    /// [`FETCH_DEFERRED`] without content, and the device fetches them
    /// again in a later request. A `u32` (saturated) so the archived
    /// command keeps its size and alignment (`archived_command_size`).
    FetchSized {
        /// ServerId.
        server_id: ServerId,
        /// Estimated bytes of the rendered item.
        bytes: u32,
    },
}

/// The Sync Status of a Fetch left out of an answer for its size (see
/// [`ClientCommand::FetchSized`]): 5, "server error ... frequently a
/// transient condition; retry" ([MS-ASCMD] 2.2.3.177.17), the status every
/// protocol version knows and devices retry; the item is unchanged.
pub const FETCH_DEFERRED: u8 = 5;

/// One collection of a Sync request, in engine terms.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyncRequest {
    /// CollectionId.
    pub collection: CollectionId,
    /// SyncKey presented.
    pub sync_key: SyncKey,
    /// WindowSize (None: configured default).
    pub window_size: Option<u32>,
    /// FilterType option (None: keep the current one).
    pub filter: Option<FilterType>,
    /// Conflict option (None: server wins).
    pub conflict: Option<Conflict>,
    /// GetChanges (EAS default: true except with SyncKey 0).
    pub get_changes: bool,
    /// Client commands.
    pub commands: Vec<ClientCommand>,
}

/// A backend action the server must perform before `decide_sync`.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum BackendEffect {
    /// Create an item from the device's `<Add>` (IMAP APPEND, DAV PUT).
    Create {
        /// Collection.
        collection: CollectionId,
        /// ClientId.
        client_id: ClientId,
        /// Content digest.
        digest: Digest,
    },
    /// Update an item (IMAP flags, DAV PUT).
    Update {
        /// Collection.
        collection: CollectionId,
        /// Item.
        id: BackendItemId,
        /// Content digest.
        digest: Digest,
    },
    /// Delete an item (IMAP move to Trash or expunge, DAV DELETE).
    Delete {
        /// Collection.
        collection: CollectionId,
        /// Item.
        id: BackendItemId,
    },
}

/// What happened when the server performed an effect.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum EffectOutcome {
    /// `Create` done: the new item.
    Created(ObservedItem),
    /// `Update` done: the new version.
    Updated(ItemVersion),
    /// `Delete` done.
    Deleted,
    /// The backend refused or failed.
    Failed,
    /// `Update` done by replacing the item with a new one (an edited draft:
    /// IMAP APPEND of the new message, expunge of the old): the device keeps
    /// its ServerId, now bound to `item`.
    Replaced(ObservedItem),
}

/// The input of `decide_sync`: the request plus the outcomes of the effects
/// `plan_sync` returned for it, in the same order.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyncInput {
    /// The request.
    pub request: SyncRequest,
    /// Outcomes, one per planned effect.
    pub outcomes: Vec<EffectOutcome>,
}

/// The Sync response model for one collection.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyncResponse {
    /// CollectionId.
    pub collection: CollectionId,
    /// Collection Status.
    pub status: SyncStatus,
    /// SyncKey to send (None with status 3/12).
    pub sync_key: Option<SyncKey>,
    /// Server changes (`<Commands>`); content to fetch for Add/Change.
    pub changes: Vec<ServerChange>,
    /// Replies to client commands (`<Responses>`).
    pub replies: Vec<ClientReply>,
    /// MoreAvailable.
    pub more_available: bool,
    /// Items quarantined by this decision (to report, not to send).
    pub quarantined: Vec<ServerId>,
}

enum KeyUse {
    Reset,
    Retry,
    Advance { confirm: bool },
    Invalid,
}

fn classify(c: Option<&CollectionState>, key: SyncKey) -> KeyUse {
    if key == SyncKey::ZERO {
        return KeyUse::Reset;
    }
    let Some(c) = c.filter(|c| c.synced) else {
        return KeyUse::Invalid;
    };
    match &c.pending {
        Some(p) if p.batch.key == key => KeyUse::Advance { confirm: true },
        Some(_) if c.current == key => KeyUse::Retry,
        None if c.current == key => KeyUse::Advance { confirm: false },
        _ => KeyUse::Invalid,
    }
}

/// Item sides as they will be once the events of this decision are applied.
pub(crate) struct Overlay<'a> {
    c: &'a CollectionState,
    /// Keys borrowed from the pending batch.
    device: BTreeMap<&'a BackendItemId, Option<DeviceSide>>,
    /// Items handled by client commands in this request: not sent back.
    claimed: BTreeSet<BackendItemId>,
}

impl<'a> Overlay<'a> {
    pub(crate) fn new(c: &'a CollectionState) -> Self {
        Overlay {
            c,
            device: BTreeMap::new(),
            claimed: BTreeSet::new(),
        }
    }

    /// Overlay of the pending batch as if confirmed.
    pub(crate) fn confirmed(c: &'a CollectionState) -> Self {
        let mut ov = Overlay::new(c);
        if let Some(p) = &c.pending {
            for ch in &p.batch.changes {
                let dev = match ch {
                    ServerChange::Add { id, version, .. }
                    | ServerChange::Change { id, version, .. } => {
                        let received_at = c
                            .items
                            .get(id)
                            .and_then(|i| i.server.map(|s| s.received_at))
                            .unwrap_or_default();
                        Some(DeviceSide {
                            version: *version,
                            received_at,
                            stale: false,
                        })
                    }
                    ServerChange::Delete { .. } | ServerChange::SoftDelete { .. } => None,
                };
                ov.device.insert(ch.id(), dev);
            }
        }
        ov
    }

    pub(crate) fn device_of(&self, id: &BackendItemId) -> Option<DeviceSide> {
        match self.device.get(&id) {
            Some(d) => *d,
            None => self.c.items.get(id).and_then(|i| i.device),
        }
    }

    /// What is due for `id`, with its ServerId number (0: not assigned).
    fn action(&self, id: &BackendItemId, cutoff: Option<Timestamp>) -> Option<(Action, u32)> {
        if (!self.claimed.is_empty() && self.claimed.contains(id))
            || (!self.c.quarantined.is_empty() && self.c.quarantined.contains(id))
        {
            return None;
        }
        let item = self.c.items.get(id)?;
        let dev = match self.device.get(&id) {
            Some(d) => *d,
            None => item.device,
        };
        self.action_of(id, item, dev, cutoff).map(|a| (a, item.n))
    }

    fn action_of(
        &self,
        id: &BackendItemId,
        item: &crate::state::Item,
        dev: Option<DeviceSide>,
        cutoff: Option<Timestamp>,
    ) -> Option<Action> {
        let in_window = |s: ServerSide| cutoff.is_none_or(|c| s.received_at >= c);
        match (item.server, dev) {
            (Some(s), None) if in_window(s) && !item.filtered_out => Some(Action::Add(s.version)),
            (Some(s), None) if in_window(s) && self.device.contains_key(&id) => {
                // Deleted/soft-deleted by the batch being confirmed, back in window.
                Some(Action::Add(s.version))
            }
            (Some(s), Some(_)) if !in_window(s) => Some(Action::SoftDelete),
            (Some(s), Some(d)) if s.version != d.version || d.stale => {
                Some(Action::Change(s.version))
            }
            (None, Some(_)) => Some(Action::Delete),
            _ => None,
        }
    }

    /// Visits candidate ids in response order: soft deletes first (oldest
    /// first), then dirty in `order`.
    fn for_each_candidate(
        &self,
        cutoff: Option<Timestamp>,
        order: PageOrder,
        mut f: impl FnMut(&BackendItemId, Action, u32) -> bool,
    ) {
        let mut seen: BTreeSet<&BackendItemId> = BTreeSet::new();
        if let Some(cut) = cutoff {
            for (t, id) in self.c.on_device.iter() {
                if *t >= cut {
                    break;
                }
                if let Some((a, n)) = self.action(id, cutoff) {
                    seen.insert(id);
                    if !f(id, a, n) {
                        return;
                    }
                }
            }
        }
        for id in self.c.dirty.iter_in(order) {
            if seen.contains(id) {
                continue;
            }
            if let Some((a, n)) = self.action(id, cutoff) {
                if !f(id, a, n) {
                    return;
                }
            }
        }
    }

    /// Counts what the next Sync would send (GetItemEstimate, Ping).
    pub(crate) fn count(&self, cutoff: Option<Timestamp>, limit: usize) -> usize {
        let mut n = 0usize;
        // Any order counts the same.
        self.for_each_candidate(cutoff, PageOrder::ById, |_, _, _| {
            n += 1;
            n < limit
        });
        n
    }
}

#[derive(Clone, Copy)]
enum Action {
    Add(ItemVersion),
    Change(ItemVersion),
    Delete,
    SoftDelete,
}

/// Computes one page of changes.
fn page(
    ov: &Overlay<'_>,
    (cutoff, order): (Option<Timestamp>, PageOrder),
    window: usize,
    next_n: &mut u32,
) -> (Vec<ServerChange>, bool) {
    let mut changes = Vec::new();
    let mut more = false;
    ov.for_each_candidate(cutoff, order, |id, action, item_n| {
        if changes.len() >= window {
            more = true;
            return false;
        }
        let n = if item_n != 0 {
            item_n
        } else {
            let n = *next_n;
            *next_n = next_n.saturating_add(1);
            n
        };
        let id = id.clone();
        changes.push(match action {
            Action::Add(version) => ServerChange::Add { n, id, version },
            Action::Change(version) => ServerChange::Change { n, id, version },
            Action::Delete => ServerChange::Delete { n, id },
            Action::SoftDelete => ServerChange::SoftDelete { n, id },
        });
        true
    });
    (changes, more)
}

fn lookup<'a>(
    c: &'a CollectionState,
    sid: &ServerId,
    collection: CollectionId,
) -> Option<&'a BackendItemId> {
    if sid.collection != collection {
        return None;
    }
    let id = c.by_n.get(&sid.n)?;
    c.items.get(id).filter(|i| i.server.is_some()).map(|_| id)
}

/// Like [`lookup`], for commands that need the device to hold the item: a
/// Change or Delete of an item the device confirmed it no longer has (it
/// received a Delete/SoftDelete) is answered "object not found" and never
/// reaches the backend.
fn lookup_on_device<'a>(
    ov: &Overlay<'a>,
    sid: &ServerId,
    collection: CollectionId,
) -> Option<&'a BackendItemId> {
    lookup(ov.c, sid, collection).filter(|id| ov.device_of(id).is_some())
}

/// An item the device still holds whose server side vanished (deleted or
/// moved in the backend, the device not told yet): a Delete of it has
/// nothing left to do and succeeds. This is also what a Delete retried
/// after its backend effect was carried out, but never recorded (opush
/// stopped in between), finds.
fn vanished_on_device<'a>(
    ov: &Overlay<'a>,
    sid: &ServerId,
    collection: CollectionId,
) -> Option<&'a BackendItemId> {
    if sid.collection != collection {
        return None;
    }
    let id = ov.c.by_n.get(&sid.n)?;
    ov.c.items
        .get(id)
        .filter(|i| i.server.is_none())
        .filter(|_| ov.device_of(id).is_some())
        .map(|_| id)
}

fn is_conflict(ov: &Overlay<'_>, id: &BackendItemId) -> bool {
    let server = ov.c.items.get(id).and_then(|i| i.server);
    matches!((server, ov.device_of(id)), (Some(s), Some(d)) if s.version != d.version || d.stale)
}

/// What a command will do, shared by plan and decide so they agree.
enum Planned<'a> {
    /// Answer with this reply, no backend effect.
    Reply(ClientReply),
    /// Dedupe onto an existing item.
    Dedupe {
        client_id: &'a ClientId,
        id: BackendItemId,
    },
    /// Needs this effect.
    Effect(BackendEffect),
    /// A Delete of an item already gone from the backend: success, no effect.
    Gone(BackendItemId),
    /// A Change refused: the server's version wins (Status 7); the device's
    /// copy of `id` holds the refused change.
    Conflict {
        /// The answer.
        reply: ClientReply,
        /// The item.
        id: BackendItemId,
    },
}

/// Plans the commands of `req` under `rules`; `budget` bounds the bytes
/// of the sized Fetches answered (0: none; see [`ClientCommand::FetchSized`]).
fn plan_commands<'a>(
    ov: &Overlay<'a>,
    req: &'a SyncRequest,
    rules: Rules,
    budget: u64,
) -> Vec<Planned<'a>> {
    let c = ov.c;
    // Bytes of the sized Fetches answered so far, and whether one was.
    let mut fetched: Option<u64> = None;
    let conflict = req.conflict.unwrap_or_default();
    let mut out = Vec::with_capacity(req.commands.len());
    let mut seen_client_ids: BTreeSet<&ClientId> = BTreeSet::new();
    for cmd in &req.commands {
        let p = match cmd {
            ClientCommand::Add { client_id, digest } => {
                if let Some(n) = c.client_ids.get(client_id) {
                    Planned::Reply(ClientReply {
                        kind: ReplyKind::Add,
                        client_id: Some(client_id.clone()),
                        server_id: Some(ServerId {
                            collection: req.collection,
                            n: *n,
                        }),
                        status: SyncStatus::Success.code(),
                        backend: None,
                    })
                } else if let Some(id) = c
                    .digests
                    .get(digest)
                    .filter(|_| c.folder_type.is_contacts())
                    .filter(|id| c.items.get(*id).is_some_and(|i| i.server.is_some()))
                    .filter(|_| !seen_client_ids.contains(client_id))
                {
                    Planned::Dedupe {
                        client_id,
                        id: id.clone(),
                    }
                } else {
                    Planned::Effect(BackendEffect::Create {
                        collection: req.collection,
                        client_id: client_id.clone(),
                        digest: *digest,
                    })
                }
            }
            ClientCommand::Change { server_id, digest } => {
                match lookup_on_device(ov, server_id, req.collection) {
                    None => not_found(ReplyKind::Change, server_id),
                    Some(id) if conflict == Conflict::ServerWins && is_conflict(ov, id) => {
                        Planned::Conflict {
                            reply: ClientReply {
                                kind: ReplyKind::Change,
                                client_id: None,
                                server_id: Some(*server_id),
                                status: SyncStatus::Conflict.code(),
                                backend: None,
                            },
                            id: id.clone(),
                        }
                    }
                    Some(id) => Planned::Effect(BackendEffect::Update {
                        collection: req.collection,
                        id: id.clone(),
                        digest: *digest,
                    }),
                }
            }
            ClientCommand::Delete { server_id } => {
                match lookup_on_device(ov, server_id, req.collection) {
                    Some(id) => Planned::Effect(BackendEffect::Delete {
                        collection: req.collection,
                        id: id.clone(),
                    }),
                    None => match vanished_on_device(ov, server_id, req.collection)
                        .filter(|_| rules.delete_of_vanished_succeeds())
                    {
                        Some(id) => Planned::Gone(id.clone()),
                        None => not_found(ReplyKind::Delete, server_id),
                    },
                }
            }
            ClientCommand::Fetch { server_id } => match lookup(c, server_id, req.collection) {
                None => not_found(ReplyKind::Fetch, server_id),
                Some(id) => Planned::Reply(ClientReply {
                    kind: ReplyKind::Fetch,
                    client_id: None,
                    server_id: Some(*server_id),
                    status: SyncStatus::Success.code(),
                    backend: Some(id.clone()),
                }),
            },
            ClientCommand::FetchSized { server_id, bytes } => {
                match lookup(c, server_id, req.collection) {
                    None => not_found(ReplyKind::Fetch, server_id),
                    Some(id) => {
                        let total = fetched.map_or(0, |f| f).saturating_add(u64::from(*bytes));
                        let fits = budget == 0 || fetched.is_none() || total <= budget;
                        if fits {
                            fetched = Some(total);
                        }
                        Planned::Reply(ClientReply {
                            kind: ReplyKind::Fetch,
                            client_id: None,
                            server_id: Some(*server_id),
                            status: if fits {
                                SyncStatus::Success.code()
                            } else {
                                FETCH_DEFERRED
                            },
                            backend: fits.then(|| id.clone()),
                        })
                    }
                }
            }
        };
        if let ClientCommand::Add { client_id, .. } = cmd {
            seen_client_ids.insert(client_id);
        }
        out.push(p);
    }
    out
}

fn not_found<'a>(kind: ReplyKind, sid: &ServerId) -> Planned<'a> {
    Planned::Reply(ClientReply {
        kind,
        client_id: None,
        server_id: Some(*sid),
        status: SyncStatus::ObjectNotFound.code(),
        backend: None,
    })
}

/// Step 1 of a Sync with client commands: the backend effects the server
/// must perform (in order) before calling [`decide_sync`]. Empty for a
/// retried request (its commands were already carried out), for SyncKey 0
/// and for an invalid key.
pub fn plan_sync(state: &DeviceState, req: &SyncRequest) -> Vec<BackendEffect> {
    plan_sync_as(state, req, Rules::CURRENT)
}

/// [`plan_sync`] as the format of `rules` decided it (replay).
pub(crate) fn plan_sync_as(
    state: &DeviceState,
    req: &SyncRequest,
    rules: Rules,
) -> Vec<BackendEffect> {
    if req.commands.is_empty() {
        // Effects come only from client commands: no overlay to build (a
        // window of an initial sync would build it for nothing).
        return Vec::new();
    }
    let c = state.collections.get(&req.collection);
    match (classify(c, req.sync_key), c) {
        (KeyUse::Advance { confirm }, Some(c)) => {
            let ov = if confirm {
                Overlay::confirmed(c)
            } else {
                Overlay::new(c)
            };
            // Fetches are answers, never effects: no budget needed here.
            plan_commands(&ov, req, rules, 0)
                .into_iter()
                .filter_map(|p| match p {
                    Planned::Effect(e) => Some(e),
                    _ => None,
                })
                .collect()
        }
        _ => Vec::new(),
    }
}

fn response(collection: CollectionId, status: SyncStatus) -> SyncResponse {
    SyncResponse {
        collection,
        status,
        sync_key: None,
        changes: Vec::new(),
        replies: Vec::new(),
        more_available: false,
        quarantined: Vec::new(),
    }
}

fn from_batch(collection: CollectionId, b: &Batch) -> SyncResponse {
    SyncResponse {
        collection,
        status: SyncStatus::Success,
        sync_key: Some(b.key),
        changes: b.changes.clone(),
        replies: b.replies.clone(),
        more_available: b.more_available,
        quarantined: Vec::new(),
    }
}

/// Step 2: decides the answer for one collection of a Sync request.
pub fn decide_sync(
    state: &DeviceState,
    input: &SyncInput,
    now: Timestamp,
    config: &EngineConfig,
) -> Result<Decision<SyncResponse>, StepError> {
    decide_sync_as(state, input, now, config, Rules::CURRENT)
}

/// [`decide_sync`] as the format of `rules` decided it (replay).
pub(crate) fn decide_sync_as(
    state: &DeviceState,
    input: &SyncInput,
    now: Timestamp,
    config: &EngineConfig,
    rules: Rules,
) -> Result<Decision<SyncResponse>, StepError> {
    let req = &input.request;
    let col = req.collection;
    if !state.hierarchy.ids.contains_key(&col) {
        // [MS-ASCMD] Sync Status 12: the folder hierarchy changed.
        return Ok(Decision {
            response: response(col, SyncStatus::HierarchyChanged),
            events: vec![],
        });
    }
    let c = state.collections.get(&col);
    match (classify(c, req.sync_key), c) {
        (KeyUse::Reset, _) => {
            let key = SyncKey(c.map_or(0, |c| c.last_key.0).saturating_add(1));
            let filter = req.filter.or(c.map(|c| c.filter)).unwrap_or_default();
            let mut resp = response(col, SyncStatus::Success);
            resp.sync_key = Some(key);
            Ok(Decision {
                response: resp,
                events: vec![Event::SyncReset {
                    collection: col,
                    key,
                    filter,
                    at: now,
                }],
            })
        }
        (KeyUse::Retry, Some(c)) => Ok(decide_retry(c, req, config)),
        (KeyUse::Advance { confirm }, Some(c)) => {
            decide_advance(c, input, confirm, now, config, rules)
        }
        _ => Ok(Decision {
            response: response(col, SyncStatus::InvalidSyncKey),
            events: vec![],
        }),
    }
}

fn decide_retry(
    c: &CollectionState,
    req: &SyncRequest,
    config: &EngineConfig,
) -> Decision<SyncResponse> {
    let col = req.collection;
    let Some(p) = &c.pending else {
        return Decision {
            response: response(col, SyncStatus::InvalidSyncKey),
            events: vec![],
        };
    };
    let mut events = vec![Event::SyncRetried {
        collection: col,
        key: req.sync_key,
    }];
    let attempt = p.retries.saturating_add(1);
    let len = p.batch.changes.len();
    let next_key = SyncKey(c.last_key.0.saturating_add(1));
    if attempt > config.retries_before_shrink && len > 1 {
        // The answer keeps failing: resend the first half only.
        let batch = Batch {
            key: next_key,
            changes: p.batch.changes[..len / 2].to_vec(),
            replies: p.batch.replies.clone(),
            more_available: true,
        };
        let resp = from_batch(col, &batch);
        events.push(Event::SyncKeyIssued {
            collection: col,
            batch,
        });
        return Decision {
            response: resp,
            events,
        };
    }
    let quarantine_at = config
        .retries_before_shrink
        .saturating_add(config.retries_before_quarantine);
    if let [ServerChange::Add { n, id, .. } | ServerChange::Change { n, id, .. }] =
        p.batch.changes.as_slice()
    {
        if attempt > quarantine_at {
            let batch = Batch {
                key: next_key,
                changes: Vec::new(),
                replies: p.batch.replies.clone(),
                more_available: true,
            };
            let mut resp = from_batch(col, &batch);
            resp.quarantined.push(ServerId {
                collection: col,
                n: *n,
            });
            events.push(Event::ItemQuarantined {
                collection: col,
                id: id.clone(),
            });
            events.push(Event::SyncKeyIssued {
                collection: col,
                batch,
            });
            return Decision {
                response: resp,
                events,
            };
        }
    }
    Decision {
        response: from_batch(col, &p.batch),
        events,
    }
}

fn decide_advance(
    c: &CollectionState,
    input: &SyncInput,
    confirm: bool,
    now: Timestamp,
    config: &EngineConfig,
    rules: Rules,
) -> Result<Decision<SyncResponse>, StepError> {
    let req = &input.request;
    let col = req.collection;
    let mut ov = if confirm {
        Overlay::confirmed(c)
    } else {
        Overlay::new(c)
    };
    let planned = plan_commands(&ov, req, rules, config.max_window_bytes);
    let n_effects = planned
        .iter()
        .filter(|p| matches!(p, Planned::Effect(_)))
        .count();
    if n_effects != input.outcomes.len() {
        return Err(StepError::OutcomeMismatch {
            expected: n_effects,
            got: input.outcomes.len(),
        });
    }
    let mut events = Vec::new();
    if confirm {
        events.push(Event::SyncKeyConfirmed {
            collection: col,
            key: req.sync_key,
        });
    }
    let filter_changed = req.filter.is_some_and(|f| f != c.filter);
    if let Some(filter) = req.filter.filter(|_| filter_changed) {
        events.push(Event::FilterChanged {
            collection: col,
            filter,
            at: now,
        });
    }
    let filter = req.filter.unwrap_or(c.filter);
    let cutoff = if c.folder_type.is_time_filtered() {
        filter.cutoff(now)
    } else {
        None
    };

    let mut next_n = c.next_n;
    let mut replies = Vec::with_capacity(planned.len());
    let mut outcomes = input.outcomes.iter().enumerate();
    for p in planned {
        match p {
            Planned::Reply(r) => replies.push(r),
            Planned::Conflict { reply, id } => {
                replies.push(reply);
                if rules.refused_change_refreshes_copy() {
                    events.push(Event::DeviceCopyStale {
                        collection: col,
                        id,
                    });
                }
            }
            Planned::Dedupe { client_id, id } => {
                let Some((item, s)) = c.items.get(&id).and_then(|i| i.server.map(|s| (i, s)))
                else {
                    replies.push(ClientReply {
                        kind: ReplyKind::Add,
                        client_id: Some(client_id.clone()),
                        server_id: None,
                        status: SyncStatus::ServerError.code(),
                        backend: None,
                    });
                    continue;
                };
                let n = if item.n != 0 {
                    item.n
                } else {
                    let n = next_n;
                    next_n = next_n.saturating_add(1);
                    n
                };
                ov.claimed.insert(id.clone());
                replies.push(ClientReply {
                    kind: ReplyKind::Add,
                    client_id: Some(client_id.clone()),
                    server_id: Some(ServerId { collection: col, n }),
                    status: SyncStatus::Success.code(),
                    backend: None,
                });
                let obs = ObservedItem {
                    id: id.clone(),
                    version: s.version,
                    received_at: s.received_at,
                    digest: None,
                };
                events.push(Event::ClientChangeApplied {
                    collection: col,
                    n,
                    id: id.clone(),
                    change: AppliedChange::Added {
                        client_id: client_id.clone(),
                        item: obs,
                    },
                });
            }
            Planned::Gone(id) => {
                let (reply, event) = device_delete_done(c, col, &mut ov, id);
                replies.push(reply);
                events.push(event);
            }
            Planned::Effect(effect) => {
                let Some((index, outcome)) = outcomes.next() else {
                    return Err(StepError::OutcomeMismatch {
                        expected: n_effects,
                        got: input.outcomes.len(),
                    });
                };
                match (effect, outcome) {
                    (effect, EffectOutcome::Failed) => {
                        replies.push(failed_reply(c, col, &effect));
                        // The device changed its copy; the change did not
                        // happen: it gets the server's version back.
                        if let BackendEffect::Update { id, .. } = effect {
                            if rules.refused_change_refreshes_copy() {
                                events.push(Event::DeviceCopyStale {
                                    collection: col,
                                    id,
                                });
                            }
                        }
                    }
                    (
                        BackendEffect::Create {
                            client_id, digest, ..
                        },
                        EffectOutcome::Created(item),
                    ) => {
                        let mut item = item.clone();
                        item.digest = item.digest.or(Some(digest));
                        let n = match c.items.get(&item.id).map(|i| i.n) {
                            Some(n) if n != 0 => n,
                            _ => {
                                let n = next_n;
                                next_n = next_n.saturating_add(1);
                                n
                            }
                        };
                        ov.claimed.insert(item.id.clone());
                        replies.push(ClientReply {
                            kind: ReplyKind::Add,
                            client_id: Some(client_id.clone()),
                            server_id: Some(ServerId { collection: col, n }),
                            status: SyncStatus::Success.code(),
                            backend: None,
                        });
                        events.push(Event::ClientChangeApplied {
                            collection: col,
                            n,
                            id: item.id.clone(),
                            change: AppliedChange::Added { client_id, item },
                        });
                    }
                    (
                        BackendEffect::Update { id, .. },
                        outcome @ (EffectOutcome::Updated(_) | EffectOutcome::Replaced(_)),
                    ) => {
                        let n = c.items.get(&id).map_or(0, |i| i.n);
                        ov.claimed.insert(id.clone());
                        let change = match outcome {
                            EffectOutcome::Replaced(item) => {
                                ov.claimed.insert(item.id.clone());
                                AppliedChange::Replaced { item: item.clone() }
                            }
                            EffectOutcome::Updated(version) => {
                                AppliedChange::Changed { version: *version }
                            }
                            _ => return Err(StepError::OutcomeKind { index }),
                        };
                        replies.push(ClientReply {
                            kind: ReplyKind::Change,
                            client_id: None,
                            server_id: Some(ServerId { collection: col, n }),
                            status: SyncStatus::Success.code(),
                            backend: None,
                        });
                        events.push(Event::ClientChangeApplied {
                            collection: col,
                            n,
                            id,
                            change,
                        });
                    }
                    (BackendEffect::Delete { id, .. }, EffectOutcome::Deleted) => {
                        let (reply, event) = device_delete_done(c, col, &mut ov, id);
                        replies.push(reply);
                        events.push(event);
                    }
                    _ => return Err(StepError::OutcomeKind { index }),
                }
            }
        }
    }
    let window = req
        .window_size
        .unwrap_or(config.default_window)
        .clamp(1, config.max_window.max(1)) as usize;
    let (changes, mut more) = if req.get_changes {
        page(&ov, (cutoff, config.page_order), window, &mut next_n)
    } else {
        (Vec::new(), false)
    };
    // A wider window takes effect once FilterChanged is folded: ask the
    // device to come back for the items now inside it.
    more |= filter_changed;
    let mut resp = response(col, SyncStatus::Success);
    if changes.is_empty() && replies.is_empty() && !more {
        resp.sync_key = Some(req.sync_key);
        return Ok(Decision {
            response: resp,
            events,
        });
    }
    let batch = Batch {
        key: SyncKey(c.last_key.0.saturating_add(1)),
        changes,
        replies,
        more_available: more,
    };
    let resp = from_batch(col, &batch);
    events.push(Event::SyncKeyIssued {
        collection: col,
        batch,
    });
    Ok(Decision {
        response: resp,
        events,
    })
}

/// A device's Delete done (carried out, or the item already gone from the
/// backend): the success reply and the event that forgets the item.
fn device_delete_done(
    c: &CollectionState,
    col: CollectionId,
    ov: &mut Overlay<'_>,
    id: BackendItemId,
) -> (ClientReply, Event) {
    let n = c.items.get(&id).map_or(0, |i| i.n);
    ov.claimed.insert(id.clone());
    let reply = ClientReply {
        kind: ReplyKind::Delete,
        client_id: None,
        server_id: Some(ServerId { collection: col, n }),
        status: SyncStatus::Success.code(),
        backend: None,
    };
    let event = Event::ClientChangeApplied {
        collection: col,
        n,
        id,
        change: AppliedChange::Deleted,
    };
    (reply, event)
}

fn failed_reply(c: &CollectionState, col: CollectionId, effect: &BackendEffect) -> ClientReply {
    let sid = |id: &BackendItemId| {
        c.items.get(id).map(|i| ServerId {
            collection: col,
            n: i.n,
        })
    };
    let (kind, client_id, server_id) = match effect {
        BackendEffect::Create { client_id, .. } => (ReplyKind::Add, Some(client_id.clone()), None),
        BackendEffect::Update { id, .. } => (ReplyKind::Change, None, sid(id)),
        BackendEffect::Delete { id, .. } => (ReplyKind::Delete, None, sid(id)),
    };
    ClientReply {
        kind,
        client_id,
        server_id,
        status: SyncStatus::ServerError.code(),
        backend: None,
    }
}

#[cfg(test)]
mod tests {
    /// Format version 8 added `FetchSized` at the end of `ClientCommand`:
    /// the archived command must keep the size and alignment of version 7,
    /// so that the commands recorded before read as they are.
    #[test]
    fn archived_command_size() {
        // Measured on the version-7 layout.
        assert_eq!(std::mem::size_of::<super::ArchivedClientCommand>(), 44);
        assert_eq!(std::mem::align_of::<super::ArchivedClientCommand>(), 4);
    }
}
