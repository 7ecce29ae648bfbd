//! `DeviceState` and the total fold `apply(&mut DeviceState, &Event)`.
//!
//! Every event sequence folds without failing or panicking: unknown
//! collections, keys that do not match, items that vanished — all are
//! ignored or handled as documented. This module decides nothing; it only
//! records what `decide_*` chose and what backends showed. All maps are
//! ordered (BTreeMap) so iteration, and therefore every decision, is
//! deterministic.

use crate::dirty::DirtySet;
use crate::event::{
    AppliedChange, BackendFolder, Batch, Event, FolderChange, ObservationKind, ObservedItem,
    ServerChange,
};
use crate::types::{
    BackendFolderId, BackendItemId, ClientId, CollectionId, Digest, FilterType, FolderType,
    ItemVersion, PolicyKey, SyncKey, Timestamp,
};
use rkyv::{Archive, Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// The backend side of an item.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerSide {
    /// Current version.
    pub version: ItemVersion,
    /// Date for the filter window.
    pub received_at: Timestamp,
}

/// The device side of an item (as confirmed by the device's next SyncKey).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeviceSide {
    /// Version the device holds.
    pub version: ItemVersion,
    /// `received_at` when it was sent (key of the soft-delete index).
    pub received_at: Timestamp,
    /// The device's copy is older than `version` says (it moved an item it
    /// had not received the latest change of): a Change is due.
    pub stale: bool,
}

/// One item of a collection, both sides.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Item {
    /// ServerId number, 0 until first sent.
    pub n: u32,
    /// What the backend has (None: vanished).
    pub server: Option<ServerSide>,
    /// What the device has (None: not on the device).
    pub device: Option<DeviceSide>,
    /// Known to be outside the filter window and not on the device.
    pub filtered_out: bool,
}

/// The still-unconfirmed answer of a collection.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Pending {
    /// The batch issued with `batch.key`.
    pub batch: Batch,
    /// How many times the device presented the previous key again.
    pub retries: u32,
}

/// Sync state of one collection for one device.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct CollectionState {
    /// EAS folder type (decides filter window and dedupe).
    pub folder_type: FolderType,
    /// FilterType in force.
    pub filter: FilterType,
    /// Backend validity seen last.
    pub validity: Option<u64>,
    /// Backend cursor seen last.
    pub cursor: u64,
    /// Items by backend identity.
    pub items: BTreeMap<BackendItemId, Item>,
    /// ServerId number → backend identity.
    pub by_n: BTreeMap<u32, BackendItemId>,
    /// Items on the device ordered by `received_at` (soft-delete scan).
    pub on_device: BTreeSet<(Timestamp, BackendItemId)>,
    /// Items that may need sending, walkable in either page order.
    pub dirty: DirtySet,
    /// Next ServerId number.
    pub next_n: u32,
    /// Whether the device bootstrapped this collection (SyncKey 0).
    pub synced: bool,
    /// The confirmed SyncKey (what the device holds for sure).
    pub current: SyncKey,
    /// Highest key ever issued (keys never repeat).
    pub last_key: SyncKey,
    /// The issued-but-unconfirmed batch.
    pub pending: Option<Pending>,
    /// ClientId of device-created items → ServerId number.
    pub client_ids: BTreeMap<ClientId, u32>,
    /// Content digests (contacts dedupe) → backend identity.
    pub digests: BTreeMap<Digest, BackendItemId>,
    /// Items skipped after repeated delivery failures.
    pub quarantined: BTreeSet<BackendItemId>,
}

impl CollectionState {
    /// An empty collection.
    pub fn new(folder_type: FolderType) -> CollectionState {
        CollectionState {
            folder_type,
            filter: FilterType::All,
            validity: None,
            cursor: 0,
            items: BTreeMap::new(),
            by_n: BTreeMap::new(),
            on_device: BTreeSet::new(),
            dirty: DirtySet::new(),
            next_n: 1,
            synced: false,
            current: SyncKey::ZERO,
            last_key: SyncKey::ZERO,
            pending: None,
            client_ids: BTreeMap::new(),
            digests: BTreeMap::new(),
            quarantined: BTreeSet::new(),
        }
    }

    /// Cutoff of the filter window at `at` (None: no window for this folder).
    pub fn cutoff(&self, at: Timestamp) -> Option<Timestamp> {
        if self.folder_type.is_time_filtered() {
            self.filter.cutoff(at)
        } else {
            None
        }
    }

    /// Whether an item the backend holds has no date yet
    /// ([`Timestamp::UNDATED`]): a filter window needs the folder listed
    /// with dates before it takes effect. O(items): asked when a device
    /// changes its FilterType, not per Sync.
    pub fn has_undated(&self) -> bool {
        self.items
            .values()
            .any(|i| i.server.is_some_and(|s| !s.received_at.is_dated()))
    }

    /// Whether `item` needs attention, ignoring time (used to keep `dirty`).
    fn needs_attention(item: &Item) -> bool {
        match (item.server, item.device) {
            (Some(_), None) => !item.filtered_out,
            (Some(s), Some(d)) => s.version != d.version || d.stale,
            (None, Some(_)) => true,
            (None, None) => false,
        }
    }

    fn refresh(&mut self, id: &BackendItemId) {
        let Some(item) = self.items.get(id) else {
            self.dirty.remove(id);
            return;
        };
        if Self::needs_attention(item) {
            self.dirty.insert(id);
            return;
        }
        // Looks settled — unless the device may hold it from the unconfirmed
        // batch: then the next page (which sees that batch) decides.
        let in_pending = self
            .pending
            .as_ref()
            .is_some_and(|p| p.batch.changes.iter().any(|c| c.id() == id));
        if in_pending {
            self.dirty.insert(id);
            return;
        }
        if item.server.is_none() && item.device.is_none() {
            let n = item.n;
            self.items.remove(id);
            self.dirty.remove(id);
            if n != 0 && self.by_n.get(&n) == Some(id) {
                self.by_n.remove(&n);
            }
            self.quarantined.remove(id);
            self.digests.retain(|_, v| v != id);
            return;
        }
        self.dirty.remove(id);
    }

    /// Drops an item the device no longer has and the backend no longer
    /// shows under this id (a move made by the device).
    fn forget(&mut self, id: &BackendItemId) {
        let Some(item) = self.items.remove(id) else {
            return;
        };
        if let Some(d) = item.device {
            self.on_device.remove(&(d.received_at, id.clone()));
        }
        if item.n != 0 && self.by_n.get(&item.n) == Some(id) {
            self.by_n.remove(&item.n);
        }
        self.dirty.remove(id);
        self.quarantined.remove(id);
    }

    fn set_device(&mut self, id: &BackendItemId, device: Option<DeviceSide>) {
        let Some(item) = self.items.get_mut(id) else {
            return;
        };
        if let Some(old) = item.device {
            self.on_device.remove(&(old.received_at, id.clone()));
        }
        item.device = device;
        if let Some(new) = device {
            self.on_device.insert((new.received_at, id.clone()));
        }
    }

    fn assign_n(&mut self, id: &BackendItemId, n: u32) {
        if n == 0 {
            return;
        }
        let Some(item) = self.items.get_mut(id) else {
            return;
        };
        if item.n != n {
            if item.n != 0 && self.by_n.get(&item.n) == Some(id) {
                self.by_n.remove(&item.n);
            }
            item.n = n;
            self.by_n.insert(n, id.clone());
        }
        self.next_n = self.next_n.max(n.saturating_add(1));
    }

    fn upsert_server(&mut self, obs: &ObservedItem, at: Timestamp) {
        let cutoff = self.cutoff(at);
        let item = self.items.entry(obs.id.clone()).or_default();
        // An undated observation keeps the date known already.
        let received_at = match item.server {
            Some(s) if !obs.received_at.is_dated() => s.received_at,
            _ => obs.received_at,
        };
        // A date observed for an item the device holds undated: its
        // soft-delete index entry moves to the date.
        let redated = item
            .device
            .filter(|d| !d.received_at.is_dated() && received_at.is_dated())
            .map(|d| DeviceSide { received_at, ..d });
        let new_side = Some(ServerSide {
            version: obs.version,
            received_at,
        });
        let changed = item.server != new_side;
        let version_changed = item.server.map(|s| s.version) != Some(obs.version);
        item.server = new_side;
        if version_changed {
            // A changed item may now be deliverable: release its quarantine.
            self.quarantined.remove(&obs.id);
        }
        if changed {
            item.filtered_out = item.device.is_none() && cutoff.is_some_and(|c| received_at < c);
        }
        if let Some(d) = obs.digest {
            self.digests.insert(d, obs.id.clone());
        }
        if let Some(d) = redated {
            self.set_device(&obs.id, Some(d));
        }
        if changed {
            self.refresh(&obs.id);
        }
    }

    fn vanish(&mut self, id: &BackendItemId) {
        if let Some(item) = self.items.get_mut(id) {
            item.server = None;
            self.refresh(id);
        }
    }

    fn observe(&mut self, at: Timestamp, obs: &crate::event::Observation) {
        if self.validity.is_some_and(|v| v != obs.validity) {
            let ids: Vec<BackendItemId> = self.items.keys().cloned().collect();
            for id in &ids {
                self.vanish(id);
            }
        }
        self.validity = Some(obs.validity);
        match obs.kind {
            // Nothing known yet (a first listing): nothing can be gone.
            ObservationKind::Full if self.items.is_empty() => {}
            ObservationKind::Full => {
                let present: BTreeSet<&BackendItemId> = obs.changed.iter().map(|i| &i.id).collect();
                let gone: Vec<BackendItemId> = self
                    .items
                    .iter()
                    .filter(|(id, it)| it.server.is_some() && !present.contains(id))
                    .map(|(id, _)| id.clone())
                    .collect();
                for id in &gone {
                    self.vanish(id);
                }
            }
            ObservationKind::Delta => {
                for id in &obs.vanished {
                    self.vanish(id);
                }
            }
        }
        if !(self.items.is_empty() && self.insert_first(at, &obs.changed)) {
            for it in &obs.changed {
                self.upsert_server(it, at);
            }
        }
        self.cursor = obs.cursor;
    }

    /// The upserts of `changed` into a collection that has no items yet
    /// (a first listing: 10,000 messages at a device's SyncKey 0), done in
    /// bulk: the items and the dirty set are built from the sorted ids in
    /// one go instead of inserted one by one. The result is the one
    /// `upsert_server` gives item after item (tested); a listing that
    /// names one id twice is left to it (false, nothing done).
    fn insert_first(&mut self, at: Timestamp, changed: &[ObservedItem]) -> bool {
        let cutoff = self.cutoff(at);
        let mut rows: Vec<(BackendItemId, Item)> = changed
            .iter()
            .map(|o| {
                let item = Item {
                    n: 0,
                    server: Some(ServerSide {
                        version: o.version,
                        received_at: o.received_at,
                    }),
                    device: None,
                    filtered_out: cutoff.is_some_and(|c| o.received_at < c),
                };
                (o.id.clone(), item)
            })
            .collect();
        rows.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        if rows.windows(2).any(|w| w[0].0 == w[1].0) {
            return false;
        }
        // What `refresh` does to each: due unless filtered out, and a
        // filtered-out one stays dirty while the pending batch names it.
        let pending = self.pending.as_ref();
        let mut due = Vec::with_capacity(rows.len());
        for (id, item) in &rows {
            let named = || pending.is_some_and(|p| p.batch.changes.iter().any(|c| c.id() == id));
            if !item.filtered_out || named() {
                due.push(id.clone());
            } else {
                self.dirty.remove(id);
            }
        }
        if !self.quarantined.is_empty() {
            for (id, _) in &rows {
                self.quarantined.remove(id);
            }
        }
        for o in changed {
            if let Some(d) = o.digest {
                self.digests.insert(d, o.id.clone());
            }
        }
        if self.dirty.is_empty() {
            self.dirty = due.into_iter().collect();
        } else {
            self.dirty.extend(due);
        }
        self.items = rows.into_iter().collect();
        true
    }

    fn reset(&mut self, key: SyncKey, filter: FilterType, at: Timestamp) {
        self.filter = filter;
        self.synced = true;
        self.current = key;
        self.last_key = self.last_key.max(key);
        self.pending = None;
        self.on_device.clear();
        self.quarantined.clear();
        self.client_ids.clear();
        let cutoff = self.cutoff(at);
        // What `refresh` would do to each item, in one pass in key order:
        // with no device side and no pending batch, an item is either due
        // (dirty), settled, or gone from both sides (dropped). The dirty
        // set is kept when it already is the due items (a first listing
        // just made it so), else built in one go from the sorted ids.
        let mut due: Vec<&BackendItemId> = Vec::with_capacity(self.dirty.len());
        let mut gone = Vec::new();
        for (id, item) in self.items.iter_mut() {
            item.device = None;
            item.filtered_out = match item.server {
                Some(s) => cutoff.is_some_and(|c| s.received_at < c),
                None => false,
            };
            if Self::needs_attention(item) {
                due.push(id);
            } else if item.server.is_none() {
                gone.push(id.clone());
            }
        }
        let same = due.len() == self.dirty.len()
            && due.iter().zip(self.dirty.iter()).all(|(a, b)| *a == b);
        if !same {
            self.dirty = due.into_iter().cloned().collect();
        }
        for id in &gone {
            self.refresh(id);
        }
    }

    fn change_filter(&mut self, filter: FilterType, at: Timestamp) {
        self.filter = filter;
        let cutoff = self.cutoff(at);
        let ids: Vec<BackendItemId> = self.items.keys().cloned().collect();
        for id in &ids {
            if let Some(item) = self.items.get_mut(id) {
                item.filtered_out = match (item.server, item.device) {
                    (Some(s), None) => cutoff.is_some_and(|c| s.received_at < c),
                    _ => false,
                };
            }
            self.refresh(id);
        }
    }

    fn confirm(&mut self, key: SyncKey) {
        let Some(p) = self.pending.take_if(|p| p.batch.key == key) else {
            return;
        };
        for ch in &p.batch.changes {
            let id = ch.id();
            match ch {
                ServerChange::Add { version, .. } | ServerChange::Change { version, .. } => {
                    let received_at = self
                        .items
                        .get(id)
                        .and_then(|i| i.server.map(|s| s.received_at))
                        .unwrap_or_default();
                    self.set_device(
                        id,
                        Some(DeviceSide {
                            version: *version,
                            received_at,
                            stale: false,
                        }),
                    );
                }
                ServerChange::Delete { .. } => self.set_device(id, None),
                ServerChange::SoftDelete { .. } => {
                    self.set_device(id, None);
                    if let Some(item) = self.items.get_mut(id) {
                        item.filtered_out = true;
                    }
                }
            }
            self.refresh(id);
        }
        self.current = key;
    }

    fn issue(&mut self, batch: &Batch) {
        for ch in &batch.changes {
            self.assign_n(ch.id(), ch.n());
        }
        self.last_key = self.last_key.max(batch.key);
        // A batch re-issued after delivery failures keeps the retry count.
        let retries = self.pending.as_ref().map_or(0, |p| p.retries);
        self.pending = Some(Pending {
            batch: batch.clone(),
            retries,
        });
    }

    /// Item `n` is `item` on both sides (a device's add or replacement).
    fn bind(&mut self, n: u32, item: &ObservedItem) {
        let it = self.items.entry(item.id.clone()).or_default();
        it.server = Some(ServerSide {
            version: item.version,
            received_at: item.received_at,
        });
        it.filtered_out = false;
        self.set_device(
            &item.id,
            Some(DeviceSide {
                version: item.version,
                received_at: item.received_at,
                stale: false,
            }),
        );
        self.assign_n(&item.id, n);
        if let Some(d) = item.digest {
            self.digests.insert(d, item.id.clone());
        }
        self.refresh(&item.id);
    }

    fn client_change(&mut self, n: u32, id: &BackendItemId, change: &AppliedChange) {
        match change {
            AppliedChange::Added { client_id, item } => {
                self.bind(n, item);
                self.client_ids.insert(client_id.clone(), n);
            }
            AppliedChange::Changed { version } => {
                let received_at = match self.items.get_mut(id) {
                    Some(it) => {
                        let received_at = it.server.map(|s| s.received_at).unwrap_or_default();
                        it.server = Some(ServerSide {
                            version: *version,
                            received_at,
                        });
                        received_at
                    }
                    None => return,
                };
                self.set_device(
                    id,
                    Some(DeviceSide {
                        version: *version,
                        received_at,
                        stale: false,
                    }),
                );
                self.refresh(id);
            }
            AppliedChange::Deleted => {
                if let Some(it) = self.items.get_mut(id) {
                    it.server = None;
                }
                self.set_device(id, None);
                self.refresh(id);
            }
            AppliedChange::Replaced { item } => {
                if item.id == *id {
                    // Replaced by itself: only the version moved.
                    self.client_change(
                        n,
                        id,
                        &AppliedChange::Changed {
                            version: item.version,
                        },
                    );
                    return;
                }
                // The old item is gone from both sides; its number moves on.
                self.forget(id);
                self.bind(n, item);
            }
        }
    }
}

/// A folder as the engine tracks it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Folder {
    /// Its CollectionId / folder ServerId.
    pub id: CollectionId,
    /// DisplayName.
    pub name: String,
    /// Parent backend folder.
    pub parent: Option<BackendFolderId>,
    /// Type.
    pub folder_type: FolderType,
}

/// A folder as the device knows it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeviceFolder {
    /// ParentId.
    pub parent: Option<CollectionId>,
    /// DisplayName.
    pub name: String,
    /// Type.
    pub folder_type: FolderType,
}

/// The folder hierarchy of one device.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Hierarchy {
    /// Backend folders by backend identity.
    pub folders: BTreeMap<BackendFolderId, Folder>,
    /// CollectionId → backend identity (live folders only).
    pub ids: BTreeMap<CollectionId, BackendFolderId>,
    /// Every backend identity ever seen → its CollectionId (stable ids).
    pub assigned: BTreeMap<BackendFolderId, CollectionId>,
    /// Next CollectionId.
    pub next_id: u32,
    /// The device's confirmed view.
    pub device: BTreeMap<CollectionId, DeviceFolder>,
    /// FolderSync done at least once.
    pub synced: bool,
    /// Confirmed hierarchy SyncKey.
    pub current: SyncKey,
    /// Highest hierarchy key issued.
    pub last_key: SyncKey,
    /// Issued, unconfirmed changes.
    pub pending: Option<(SyncKey, Vec<FolderChange>)>,
}

impl Default for Hierarchy {
    fn default() -> Self {
        Hierarchy {
            folders: BTreeMap::new(),
            ids: BTreeMap::new(),
            assigned: BTreeMap::new(),
            next_id: 1,
            device: BTreeMap::new(),
            synced: false,
            current: SyncKey::ZERO,
            last_key: SyncKey::ZERO,
            pending: None,
        }
    }
}

impl Hierarchy {
    fn id_for(&mut self, backend: &BackendFolderId) -> CollectionId {
        if let Some(id) = self.assigned.get(backend) {
            return *id;
        }
        let id = CollectionId(self.next_id);
        self.next_id = self.next_id.saturating_add(1);
        self.assigned.insert(backend.clone(), id);
        id
    }

    fn observe(&mut self, folders: &[BackendFolder]) {
        let mut next: BTreeMap<BackendFolderId, Folder> = BTreeMap::new();
        for f in folders {
            let id = self.id_for(&f.id);
            next.insert(
                f.id.clone(),
                Folder {
                    id,
                    name: f.name.clone(),
                    parent: f.parent.clone(),
                    folder_type: f.folder_type,
                },
            );
        }
        self.ids = next.iter().map(|(b, f)| (f.id, b.clone())).collect();
        self.folders = next;
    }

    /// The ParentId of a backend folder's parent.
    pub fn parent_id(&self, parent: &Option<BackendFolderId>) -> Option<CollectionId> {
        parent
            .as_ref()
            .and_then(|p| self.folders.get(p))
            .map(|f| f.id)
    }

    fn apply_changes(&mut self, changes: &[FolderChange]) {
        for ch in changes {
            match ch {
                FolderChange::Add {
                    id,
                    parent,
                    name,
                    folder_type,
                }
                | FolderChange::Update {
                    id,
                    parent,
                    name,
                    folder_type,
                } => {
                    self.device.insert(
                        *id,
                        DeviceFolder {
                            parent: *parent,
                            name: name.clone(),
                            folder_type: *folder_type,
                        },
                    );
                }
                FolderChange::Delete { id } => {
                    self.device.remove(id);
                }
            }
        }
    }
}

/// Provisioning state ([MS-ASPROV] 3.1.5.1).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum PolicyState {
    /// Never provisioned.
    #[default]
    Initial,
    /// Phase 1 done: temporary key sent, waiting for the acknowledgement.
    Pending(PolicyKey),
    /// Acknowledged: the final key.
    Acknowledged(PolicyKey),
    /// The server's policy changed since the device acknowledged this key.
    Outdated(PolicyKey),
}

/// Remote wipe state ([MS-ASPROV] 3.1.5.2).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum WipeState {
    /// No wipe.
    #[default]
    None,
    /// Requested, not yet acknowledged.
    Requested,
    /// The device acknowledged.
    Acknowledged,
}

/// Everything the engine knows about one device.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct DeviceState {
    /// Provisioning.
    pub policy: PolicyState,
    /// Remote wipe.
    pub wipe: WipeState,
    /// Folder hierarchy.
    pub hierarchy: Hierarchy,
    /// Per-collection sync state.
    pub collections: BTreeMap<CollectionId, CollectionState>,
    /// Last armed Ping (folders, heartbeat seconds).
    pub ping: Option<(Vec<CollectionId>, u32)>,
    /// Number of events folded (for snapshots).
    pub applied: u64,
    /// ClientIds of the last messages sent, oldest first, at most
    /// [`crate::MAX_SENT_CLIENT_IDS`].
    pub sent: Vec<ClientId>,
}

impl DeviceState {
    fn collection_mut(&mut self, id: CollectionId) -> &mut CollectionState {
        let folder_type = self
            .hierarchy
            .ids
            .get(&id)
            .and_then(|b| self.hierarchy.folders.get(b))
            .map_or(FolderType::Unknown, |f| f.folder_type);
        self.collections
            .entry(id)
            .or_insert_with(|| CollectionState::new(folder_type))
    }
}

/// Folds one event into the state. Total: never fails, never panics.
pub fn apply(state: &mut DeviceState, event: &Event) {
    state.applied = state.applied.saturating_add(1);
    match event {
        Event::RequestReceived { .. }
        | Event::ResponseSent { .. }
        | Event::Decided { .. }
        | Event::PolicyChecked { .. }
        | Event::Displaced { .. } => {}
        Event::BackendObserved {
            collection,
            at,
            observation,
            ..
        } => {
            state.collection_mut(*collection).observe(*at, observation);
        }
        Event::SyncReset {
            collection,
            key,
            filter,
            at,
        } => {
            state.collection_mut(*collection).reset(*key, *filter, *at);
        }
        Event::SyncKeyConfirmed { collection, key } => {
            if let Some(c) = state.collections.get_mut(collection) {
                c.confirm(*key);
            }
        }
        Event::SyncKeyIssued { collection, batch } => {
            if let Some(c) = state.collections.get_mut(collection) {
                c.issue(batch);
            }
        }
        Event::SyncRetried { collection, key } => {
            if let Some(c) = state.collections.get_mut(collection) {
                if c.current == *key {
                    if let Some(p) = c.pending.as_mut() {
                        p.retries = p.retries.saturating_add(1);
                    }
                }
            }
        }
        Event::FilterChanged {
            collection,
            filter,
            at,
        } => {
            if let Some(c) = state.collections.get_mut(collection) {
                c.change_filter(*filter, *at);
            }
        }
        Event::ClientChangeApplied {
            collection,
            n,
            id,
            change,
        } => {
            if let Some(c) = state.collections.get_mut(collection) {
                c.client_change(*n, id, change);
            }
        }
        Event::ItemQuarantined { collection, id } => {
            if let Some(c) = state.collections.get_mut(collection) {
                if c.items.contains_key(id) {
                    c.quarantined.insert(id.clone());
                }
            }
        }
        Event::ItemMovedByDevice {
            src,
            src_id,
            dst,
            dst_n,
            item,
            stale,
        } => {
            if let Some(c) = state.collections.get_mut(src) {
                c.forget(src_id);
            }
            let d = state.collection_mut(*dst);
            d.client_change(
                *dst_n,
                &item.id,
                &AppliedChange::Added {
                    client_id: ClientId(String::new()),
                    item: item.clone(),
                },
            );
            d.client_ids.remove(&ClientId(String::new()));
            if *stale {
                if let Some(dev) = d.items.get_mut(&item.id).and_then(|i| i.device.as_mut()) {
                    dev.stale = true;
                }
                d.refresh(&item.id);
            }
        }
        Event::DeviceCopyStale { collection, id } => {
            if let Some(c) = state.collections.get_mut(collection) {
                if let Some(dev) = c.items.get_mut(id).and_then(|i| i.device.as_mut()) {
                    dev.stale = true;
                }
                c.refresh(id);
            }
        }
        Event::MoveRemembered { src, dst } => {
            // A retry of this move is answered with the same DstMsgId
            // (`move_items::plan_move`).
            if let Some(d) = state.collections.get_mut(&dst.collection) {
                d.client_ids
                    .insert(crate::move_items::moved_key(*src), dst.n);
            }
        }
        Event::HierarchyObserved { folders } => state.hierarchy.observe(folders),
        Event::HierarchyReset { key } => {
            let h = &mut state.hierarchy;
            h.device.clear();
            h.pending = None;
            h.synced = true;
            h.current = *key;
            h.last_key = h.last_key.max(*key);
        }
        Event::HierarchyKeyConfirmed { key } => {
            let h = &mut state.hierarchy;
            if let Some((k, changes)) = h.pending.take_if(|(k, _)| k == key) {
                h.apply_changes(&changes);
                h.current = k;
            }
        }
        Event::FolderHierarchyChanged { key, changes } => {
            let h = &mut state.hierarchy;
            h.last_key = h.last_key.max(*key);
            h.pending = Some((*key, changes.clone()));
        }
        Event::FolderChangedByDevice {
            key,
            change,
            folder,
        } => {
            let h = &mut state.hierarchy;
            match (change, folder) {
                (FolderChange::Delete { id }, _) => {
                    if let Some(b) = h.ids.remove(id) {
                        h.folders.remove(&b);
                    }
                }
                (FolderChange::Add { id, .. } | FolderChange::Update { id, .. }, Some(f)) => {
                    if let Some(old) = h.ids.get(id).cloned() {
                        h.folders.remove(&old);
                    }
                    h.assigned.insert(f.id.clone(), *id);
                    h.next_id = h.next_id.max(id.0.saturating_add(1));
                    h.ids.insert(*id, f.id.clone());
                    h.folders.insert(
                        f.id.clone(),
                        Folder {
                            id: *id,
                            name: f.name.clone(),
                            parent: f.parent.clone(),
                            folder_type: f.folder_type,
                        },
                    );
                }
                _ => {}
            }
            h.apply_changes(std::slice::from_ref(change));
            h.pending = None;
            h.current = *key;
            h.last_key = h.last_key.max(*key);
            if let FolderChange::Delete { id } = change {
                state.collections.remove(id);
            }
        }
        Event::PolicyKeyIssued { policy_key } => state.policy = PolicyState::Pending(*policy_key),
        Event::DeviceProvisioned { policy_key } => {
            state.policy = PolicyState::Acknowledged(*policy_key)
        }
        Event::PolicyChanged => {
            if let PolicyState::Acknowledged(k) = state.policy {
                state.policy = PolicyState::Outdated(k);
            }
        }
        Event::WipeRequested { .. } => state.wipe = WipeState::Requested,
        Event::WipeAcknowledged { .. } => {
            if state.wipe == WipeState::Requested {
                state.wipe = WipeState::Acknowledged;
            }
        }
        Event::PingArmed { folders, heartbeat } => state.ping = Some((folders.clone(), *heartbeat)),
        Event::MailSent { client_id, .. } => crate::send::remember_sent(state, client_id),
    }
}

/// Folds a sequence of events from `state`.
pub fn fold<'a>(state: &mut DeviceState, events: impl IntoIterator<Item = &'a Event>) {
    for e in events {
        apply(state, e);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::PageOrder;
    use crate::event::{Observation, ServerChange};

    fn item(uid: u32, received_at: u64) -> ObservedItem {
        ObservedItem {
            id: BackendItemId(format!("7/{uid}")),
            version: ItemVersion(u64::from(uid) * 5),
            received_at: Timestamp(received_at),
            digest: (uid % 4 == 0).then(|| Digest::of(&uid.to_le_bytes())),
        }
    }

    /// A collection with no items but with leftovers the bulk path must
    /// treat as `upsert_server` does: a FilterType window, a pending batch
    /// naming one filtered-out item, a stale dirty id and a quarantined one.
    fn empty_collection() -> CollectionState {
        let mut c = CollectionState::new(FolderType::Inbox);
        c.filter = FilterType::OneDay;
        c.pending = Some(Pending {
            batch: Batch {
                key: SyncKey(3),
                changes: vec![ServerChange::SoftDelete {
                    n: 4,
                    id: BackendItemId("7/2".into()),
                }],
                replies: vec![],
                more_available: false,
            },
            retries: 0,
        });
        c.dirty.insert(&BackendItemId("7/1".into()));
        c.dirty.insert(&BackendItemId("9/9".into()));
        c.quarantined.insert(BackendItemId("7/12".into()));
        c
    }

    // A first listing folded in bulk gives exactly the state the item by
    // item upserts give; one naming an id twice takes the item by item path.
    #[test]
    fn a_first_listing_in_bulk_is_the_same_as_item_by_item() {
        let at = Timestamp(10 * Timestamp::DAY_MS);
        let old = at.minus_days(3).0;
        let listing: Vec<ObservedItem> = (1..=40)
            .rev()
            .map(|uid| item(uid, if uid % 3 == 1 { old } else { at.0 }))
            .collect();
        let mut twice = listing.clone();
        twice.push(item(5, old));
        for changed in [listing, twice] {
            let obs = Observation {
                validity: 7,
                cursor: 3,
                kind: ObservationKind::Full,
                changed: changed.clone(),
                vanished: vec![],
            };
            let mut bulk = empty_collection();
            bulk.observe(at, &obs);
            let mut one_by_one = empty_collection();
            one_by_one.validity = Some(7);
            for it in &changed {
                one_by_one.upsert_server(it, at);
            }
            one_by_one.cursor = 3;
            assert_eq!(bulk, one_by_one);
            let newest = |c: &CollectionState| -> Vec<BackendItemId> {
                c.dirty.iter_in(PageOrder::NewestFirst).cloned().collect()
            };
            assert_eq!(newest(&bulk), newest(&one_by_one));
            assert!(bulk.dirty.contains(&BackendItemId("7/2".into())));
            assert!(!bulk.dirty.contains(&BackendItemId("7/1".into())));
            // And the reset that follows keeps or rebuilds the same set.
            let mut again = one_by_one.clone();
            bulk.reset(SyncKey(4), FilterType::OneDay, at);
            again.dirty.insert(&BackendItemId("7/1".into()));
            again.reset(SyncKey(4), FilterType::OneDay, at);
            assert_eq!(bulk, again);
            assert_eq!(newest(&bulk), newest(&again));
        }
    }

    // An undated listing never erases a date; a dated one dates the items,
    // and an item the device holds undated moves in the soft-delete index.
    #[test]
    #[allow(clippy::unwrap_used, reason = "a test: a missing side is a failure")]
    fn undated_observations_keep_dates_and_dated_ones_move_the_index() {
        let at = Timestamp(10 * Timestamp::DAY_MS);
        let mut c = CollectionState::new(FolderType::Inbox);
        let undated = |uid| ObservedItem {
            received_at: Timestamp::UNDATED,
            ..item(uid, 0)
        };
        c.upsert_server(&undated(1), at);
        c.upsert_server(&item(2, 5), at);
        assert!(c.has_undated());
        let id = |uid: u32| BackendItemId(format!("7/{uid}"));
        // The device gets both while 1 is undated.
        for uid in [1, 2] {
            let received_at = c.items[&id(uid)].server.unwrap().received_at;
            c.set_device(
                &id(uid),
                Some(DeviceSide {
                    version: item(uid, 0).version,
                    received_at,
                    stale: false,
                }),
            );
        }
        assert!(c.on_device.contains(&(Timestamp::UNDATED, id(1))));
        // Undated again: 2 keeps its date, nothing moves.
        c.upsert_server(&undated(2), at);
        assert_eq!(c.items[&id(2)].server.unwrap().received_at, Timestamp(5));
        assert!(c.on_device.contains(&(Timestamp(5), id(2))));
        // Dated: 1 gets its date on both sides and in the index.
        c.upsert_server(&item(1, 7), at);
        assert!(!c.has_undated());
        assert_eq!(c.items[&id(1)].server.unwrap().received_at, Timestamp(7));
        assert_eq!(c.items[&id(1)].device.unwrap().received_at, Timestamp(7));
        let index: Vec<_> = c.on_device.iter().cloned().collect();
        assert_eq!(index, vec![(Timestamp(5), id(2)), (Timestamp(7), id(1))]);
    }
}
