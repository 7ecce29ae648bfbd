//! FolderSync, FolderCreate, FolderDelete and FolderUpdate: hierarchy
//! SyncKeys, stable folder ServerIds, and the diff between the device's
//! confirmed view and the backend's folder list.
//!
//! Folder operations are two-step like Sync commands: `plan_folder_op`
//! validates and names the backend effect (or the failure status), the server
//! performs it, `decide_folder_op` records the outcome. A retried folder
//! operation whose answer was lost meets status 9 and the device resyncs the
//! hierarchy (documented limitation). Nothing here mutates state.

use crate::decision::Decision;
use crate::event::{BackendFolder, Event, FolderChange};
use crate::state::{DeviceFolder, DeviceState, Hierarchy};
use crate::types::{BackendFolderId, CollectionId, FolderType, SyncKey};
use std::collections::BTreeMap;

/// FolderSync response model.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FolderSyncResponse {
    /// Status: 1 success, 9 invalid SyncKey ([MS-ASCMD] 2.2.3.177.5).
    pub status: u8,
    /// Hierarchy SyncKey (None with status 9).
    pub sync_key: Option<SyncKey>,
    /// Changes, parents before children.
    pub changes: Vec<FolderChange>,
}

fn target(h: &Hierarchy) -> BTreeMap<CollectionId, DeviceFolder> {
    h.folders
        .values()
        .map(|f| {
            (
                f.id,
                DeviceFolder {
                    parent: h.parent_id(&f.parent),
                    name: f.name.clone(),
                    folder_type: f.folder_type,
                },
            )
        })
        .collect()
}

fn depth(t: &BTreeMap<CollectionId, DeviceFolder>, id: CollectionId) -> usize {
    let mut d = 0;
    let mut cur = t.get(&id).and_then(|f| f.parent);
    while let Some(p) = cur {
        d += 1;
        if d > t.len() {
            break; // a cycle in backend data: stop, never loop
        }
        cur = t.get(&p).and_then(|f| f.parent);
    }
    d
}

fn diff(device: &BTreeMap<CollectionId, DeviceFolder>, h: &Hierarchy) -> Vec<FolderChange> {
    let t = target(h);
    let mut adds: Vec<(usize, CollectionId)> = Vec::new();
    let mut out = Vec::new();
    for (id, f) in &t {
        match device.get(id) {
            None => adds.push((depth(&t, *id), *id)),
            Some(d) if d != f => out.push(FolderChange::Update {
                id: *id,
                parent: f.parent,
                name: f.name.clone(),
                folder_type: f.folder_type,
            }),
            Some(_) => {}
        }
    }
    adds.sort();
    let mut changes: Vec<FolderChange> = adds
        .into_iter()
        .filter_map(|(_, id)| {
            t.get(&id).map(|f| FolderChange::Add {
                id,
                parent: f.parent,
                name: f.name.clone(),
                folder_type: f.folder_type,
            })
        })
        .collect();
    changes.append(&mut out);
    for id in device.keys() {
        if !t.contains_key(id) {
            changes.push(FolderChange::Delete { id: *id });
        }
    }
    changes
}

fn with_changes(
    mut device: BTreeMap<CollectionId, DeviceFolder>,
    changes: &[FolderChange],
) -> BTreeMap<CollectionId, DeviceFolder> {
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
                device.insert(
                    *id,
                    DeviceFolder {
                        parent: *parent,
                        name: name.clone(),
                        folder_type: *folder_type,
                    },
                );
            }
            FolderChange::Delete { id } => {
                device.remove(id);
            }
        }
    }
    device
}

/// The device's folders, assuming the pending FolderSync answer arrived.
pub fn device_folders(state: &DeviceState) -> BTreeMap<CollectionId, DeviceFolder> {
    let h = &state.hierarchy;
    match &h.pending {
        Some((_, changes)) => with_changes(h.device.clone(), changes),
        None => h.device.clone(),
    }
}

/// Whether the device's hierarchy view (pending answer included) differs
/// from the backend's: Ping Status 7.
pub fn hierarchy_out_of_date(state: &DeviceState) -> bool {
    !state.hierarchy.synced || target(&state.hierarchy) != device_folders(state)
}

/// Decides a FolderSync (after the server folded a `HierarchyObserved`).
pub fn decide_folder_sync(state: &DeviceState, sync_key: SyncKey) -> Decision<FolderSyncResponse> {
    let h = &state.hierarchy;
    let mut events = Vec::new();
    let device = if sync_key == SyncKey::ZERO {
        let key = SyncKey(h.last_key.0.saturating_add(1));
        events.push(Event::HierarchyReset { key });
        BTreeMap::new()
    } else if !h.synced {
        return invalid();
    } else {
        match &h.pending {
            Some((k, changes)) if *k == sync_key => {
                events.push(Event::HierarchyKeyConfirmed { key: *k });
                with_changes(h.device.clone(), changes)
            }
            Some((k, changes)) if h.current == sync_key => {
                // Lost answer: the same changes again.
                return Decision {
                    response: FolderSyncResponse {
                        status: 1,
                        sync_key: Some(*k),
                        changes: changes.clone(),
                    },
                    events: vec![],
                };
            }
            None if h.current == sync_key => h.device.clone(),
            _ => return invalid(),
        }
    };
    let changes = diff(&device, h);
    let reset_key = events.iter().find_map(|e| match e {
        Event::HierarchyReset { key } => Some(*key),
        _ => None,
    });
    if changes.is_empty() {
        let key = reset_key.unwrap_or(sync_key);
        return Decision {
            response: FolderSyncResponse {
                status: 1,
                sync_key: Some(key),
                changes,
            },
            events,
        };
    }
    let key = SyncKey(reset_key.unwrap_or(h.last_key).0.saturating_add(1));
    events.push(Event::FolderHierarchyChanged {
        key,
        changes: changes.clone(),
    });
    Decision {
        response: FolderSyncResponse {
            status: 1,
            sync_key: Some(key),
            changes,
        },
        events,
    }
}

fn invalid() -> Decision<FolderSyncResponse> {
    // [MS-ASCMD] 2.2.3.177.5 FolderSync Status 9.
    Decision {
        response: FolderSyncResponse {
            status: 9,
            sync_key: None,
            changes: vec![],
        },
        events: vec![],
    }
}

/// A device request to change the hierarchy.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum FolderOp {
    /// FolderCreate.
    Create {
        /// Hierarchy SyncKey.
        sync_key: SyncKey,
        /// ParentId (None = "0").
        parent: Option<CollectionId>,
        /// DisplayName.
        name: String,
        /// Type.
        folder_type: FolderType,
    },
    /// FolderDelete.
    Delete {
        /// Hierarchy SyncKey.
        sync_key: SyncKey,
        /// ServerId.
        id: CollectionId,
    },
    /// FolderUpdate (rename and/or move).
    Update {
        /// Hierarchy SyncKey.
        sync_key: SyncKey,
        /// ServerId.
        id: CollectionId,
        /// New ParentId.
        parent: Option<CollectionId>,
        /// New DisplayName.
        name: String,
    },
}

/// The backend effect of a folder operation.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum FolderEffect {
    /// Create under `parent`.
    Create {
        /// Parent backend folder.
        parent: Option<BackendFolderId>,
        /// Name.
        name: String,
        /// Type.
        folder_type: FolderType,
    },
    /// Delete the folder.
    Delete {
        /// Backend folder.
        folder: BackendFolderId,
    },
    /// Rename/move the folder.
    Update {
        /// Backend folder.
        folder: BackendFolderId,
        /// New parent.
        parent: Option<BackendFolderId>,
        /// New name.
        name: String,
    },
}

/// Outcome of a folder effect.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum FolderOutcome {
    /// Created/updated: the folder as the backend now lists it.
    Done(Option<BackendFolder>),
    /// The backend failed.
    Failed,
}

/// Status of FolderCreate/Delete/Update ([MS-ASCMD] 2.2.3.177.2-4).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct FolderOpResponse {
    /// 1 success, 2 exists, 3 special folder, 4 not found, 5 parent not
    /// found, 6 server error, 9 invalid SyncKey, 10 malformed request.
    pub status: u8,
    /// New hierarchy SyncKey on success.
    pub sync_key: Option<SyncKey>,
    /// ServerId of a created folder.
    pub server_id: Option<CollectionId>,
}

fn fail(status: u8) -> FolderOpResponse {
    FolderOpResponse {
        status,
        sync_key: None,
        server_id: None,
    }
}

fn key_ok(h: &Hierarchy, key: SyncKey) -> bool {
    h.synced
        && key != SyncKey::ZERO
        && (h.current == key || h.pending.as_ref().is_some_and(|(k, _)| *k == key))
}

fn sibling_exists(
    h: &Hierarchy,
    parent: Option<CollectionId>,
    name: &str,
    except: Option<CollectionId>,
) -> bool {
    h.folders
        .values()
        .any(|f| Some(f.id) != except && h.parent_id(&f.parent) == parent && f.name == name)
}

/// Step 1: validates a folder operation; `Err` is the failure response.
pub fn plan_folder_op(
    state: &DeviceState,
    op: &FolderOp,
) -> Result<FolderEffect, FolderOpResponse> {
    let h = &state.hierarchy;
    let backend = |id: &CollectionId| h.ids.get(id).cloned();
    match op {
        FolderOp::Create {
            sync_key,
            parent,
            name,
            folder_type,
        } => {
            if !key_ok(h, *sync_key) {
                return Err(fail(9));
            }
            if name.is_empty() || name.len() > 256 {
                return Err(fail(10));
            }
            if folder_type.is_special() {
                return Err(fail(3));
            }
            let parent_b = match parent {
                None => None,
                Some(p) => Some(backend(p).ok_or_else(|| fail(5))?),
            };
            if sibling_exists(h, *parent, name, None) {
                return Err(fail(2));
            }
            Ok(FolderEffect::Create {
                parent: parent_b,
                name: name.clone(),
                folder_type: *folder_type,
            })
        }
        FolderOp::Delete { sync_key, id } => {
            if !key_ok(h, *sync_key) {
                return Err(fail(9));
            }
            let folder = backend(id).ok_or_else(|| fail(4))?;
            if h.folders
                .get(&folder)
                .is_some_and(|f| f.folder_type.is_special())
            {
                return Err(fail(3));
            }
            Ok(FolderEffect::Delete { folder })
        }
        FolderOp::Update {
            sync_key,
            id,
            parent,
            name,
        } => {
            if !key_ok(h, *sync_key) {
                return Err(fail(9));
            }
            if name.is_empty() || name.len() > 256 {
                return Err(fail(10));
            }
            let folder = backend(id).ok_or_else(|| fail(4))?;
            if h.folders
                .get(&folder)
                .is_some_and(|f| f.folder_type.is_special())
            {
                return Err(fail(3));
            }
            let parent_b = match parent {
                None => None,
                Some(p) if p == id => return Err(fail(10)),
                Some(p) => Some(backend(p).ok_or_else(|| fail(5))?),
            };
            if sibling_exists(h, *parent, name, Some(*id)) {
                return Err(fail(2));
            }
            Ok(FolderEffect::Update {
                folder,
                parent: parent_b,
                name: name.clone(),
            })
        }
    }
}

/// Step 2: records the outcome of a planned folder operation.
pub fn decide_folder_op(
    state: &DeviceState,
    op: &FolderOp,
    outcome: &FolderOutcome,
) -> Decision<FolderOpResponse> {
    let plan = plan_folder_op(state, op);
    let none = |r| Decision {
        response: r,
        events: vec![],
    };
    let effect = match plan {
        Ok(e) => e,
        Err(r) => return none(r),
    };
    let h = &state.hierarchy;
    let folder = match outcome {
        FolderOutcome::Failed => return none(fail(6)),
        FolderOutcome::Done(f) => f.clone(),
    };
    let sync_key = match op {
        FolderOp::Create { sync_key, .. }
        | FolderOp::Delete { sync_key, .. }
        | FolderOp::Update { sync_key, .. } => *sync_key,
    };
    let mut events = Vec::new();
    if h.pending.as_ref().is_some_and(|(k, _)| *k == sync_key) {
        events.push(Event::HierarchyKeyConfirmed { key: sync_key });
    }
    let key = SyncKey(h.last_key.0.saturating_add(1));
    let (change, server_id) = match (&effect, op, &folder) {
        (
            FolderEffect::Create { .. },
            FolderOp::Create {
                parent,
                name,
                folder_type,
                ..
            },
            Some(f),
        ) => {
            let id = h
                .assigned
                .get(&f.id)
                .copied()
                .unwrap_or(CollectionId(h.next_id));
            (
                FolderChange::Add {
                    id,
                    parent: *parent,
                    name: name.clone(),
                    folder_type: *folder_type,
                },
                Some(id),
            )
        }
        (FolderEffect::Delete { .. }, FolderOp::Delete { id, .. }, _) => {
            (FolderChange::Delete { id: *id }, None)
        }
        (
            FolderEffect::Update { .. },
            FolderOp::Update {
                id, parent, name, ..
            },
            Some(_),
        ) => {
            let folder_type = h
                .ids
                .get(id)
                .and_then(|b| h.folders.get(b))
                .map_or(FolderType::UserGeneric, |f| f.folder_type);
            (
                FolderChange::Update {
                    id: *id,
                    parent: *parent,
                    name: name.clone(),
                    folder_type,
                },
                None,
            )
        }
        _ => return none(fail(6)),
    };
    events.push(Event::FolderChangedByDevice {
        key,
        change,
        folder,
    });
    Decision {
        response: FolderOpResponse {
            status: 1,
            sync_key: Some(key),
            server_id,
        },
        events,
    }
}
