//! Snapshots of a whole `DeviceState`, so loading a device does not re-fold
//! its full log. Same versioned header as events (`b"OPSN"` + version).
//!
//! A snapshot is a cache: folding the log from scratch must give the same
//! state (property-tested). Decoding validates the bytes (bytecheck) and
//! rejects newer versions; it never trusts storage blindly. The large
//! per-collection maps are rebuilt from the validated archive in key order
//! (bulk-built), which is several times faster than inserting one by one.

use crate::dirty::DirtySet;
use crate::event::{encode_with_header, payload, CodecError, SNAPSHOT_MAGIC};
use crate::state::{CollectionState, DeviceState};
use crate::types::{BackendItemId, Timestamp};
use rkyv::rancor::Error as RkyvError;
use rkyv::Archived;
use std::collections::{BTreeMap, BTreeSet};

/// Encodes a snapshot (into one buffer sized by [`snapshot_size_hint`]).
pub fn encode_snapshot(state: &DeviceState) -> Result<Vec<u8>, CodecError> {
    let hint = snapshot_size_hint(state);
    encode_with_header(SNAPSHOT_MAGIC, state, hint.saturating_add(hint / 4))
}

/// About how many bytes the snapshot of `state` takes: ~170 per item of a
/// collection (the item, its ServerId number and its place in the
/// soft-delete index once synced: the engine bench measures 165), ~100 per
/// ClientId or digest, plus a little. What a snapshot costs to write and
/// to read is proportional to it.
pub fn snapshot_size_hint(state: &DeviceState) -> usize {
    let collections: usize = state
        .collections
        .values()
        .map(|c| {
            256 + c.items.len().saturating_mul(170)
                + (c.client_ids.len() + c.digests.len()).saturating_mul(100)
        })
        .sum();
    1024 + state.hierarchy.folders.len().saturating_mul(200) + collections
}

fn corrupt(e: RkyvError) -> CodecError {
    CodecError::Corrupt(e.to_string())
}

fn id(a: &Archived<BackendItemId>) -> BackendItemId {
    BackendItemId(a.0.as_str().to_owned())
}

fn collection(a: &Archived<CollectionState>) -> Result<CollectionState, CodecError> {
    let items = a
        .items
        .iter()
        .map(|(k, v)| Ok((id(k), rkyv::deserialize::<_, RkyvError>(v)?)))
        .collect::<Result<BTreeMap<_, _>, RkyvError>>()
        .map_err(corrupt)?;
    let by_n = a.by_n.iter().map(|(n, v)| (n.to_native(), id(v))).collect();
    let on_device: BTreeSet<(Timestamp, BackendItemId)> = a
        .on_device
        .iter()
        .map(|t| (Timestamp(t.0 .0.to_native()), id(&t.1)))
        .collect();
    let dirty = DirtySet::from_sorted_ids(a.dirty.ids().map(id).collect());
    let quarantined = a.quarantined.iter().map(id).collect();
    Ok(CollectionState {
        folder_type: rkyv::deserialize::<_, RkyvError>(&a.folder_type).map_err(corrupt)?,
        filter: rkyv::deserialize::<_, RkyvError>(&a.filter).map_err(corrupt)?,
        validity: rkyv::deserialize::<_, RkyvError>(&a.validity).map_err(corrupt)?,
        cursor: a.cursor.to_native(),
        items,
        by_n,
        on_device,
        dirty,
        next_n: a.next_n.to_native(),
        synced: a.synced,
        current: rkyv::deserialize::<_, RkyvError>(&a.current).map_err(corrupt)?,
        last_key: rkyv::deserialize::<_, RkyvError>(&a.last_key).map_err(corrupt)?,
        pending: rkyv::deserialize::<_, RkyvError>(&a.pending).map_err(corrupt)?,
        client_ids: rkyv::deserialize::<_, RkyvError>(&a.client_ids).map_err(corrupt)?,
        digests: rkyv::deserialize::<_, RkyvError>(&a.digests).map_err(corrupt)?,
        quarantined,
    })
}

/// `DeviceState` as snapshots stored it before `sent` (the ClientIds of
/// sent mail) was added: same fields, same order, so its archive is the old
/// layout. Kept so snapshots written before that change still load.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct DeviceStateV1 {
    policy: crate::state::PolicyState,
    wipe: crate::state::WipeState,
    hierarchy: crate::state::Hierarchy,
    collections: BTreeMap<crate::types::CollectionId, CollectionState>,
    ping: Option<(Vec<crate::types::CollectionId>, u32)>,
    applied: u64,
}

/// The collections of either snapshot layout (their type did not change).
fn collections(
    a: &Archived<BTreeMap<crate::types::CollectionId, CollectionState>>,
) -> Result<BTreeMap<crate::types::CollectionId, CollectionState>, CodecError> {
    a.iter()
        .map(|(k, v)| {
            Ok((
                rkyv::deserialize::<_, RkyvError>(k).map_err(corrupt)?,
                collection(v)?,
            ))
        })
        .collect()
}

/// Decodes a snapshot (the current layout, or the one before `sent`).
pub fn decode_snapshot(bytes: &[u8]) -> Result<DeviceState, CodecError> {
    let aligned = payload(SNAPSHOT_MAGIC, "snapshot", bytes)?;
    let a = match rkyv::access::<Archived<DeviceState>, RkyvError>(&aligned) {
        Ok(a) => a,
        Err(e) => return decode_v1(&aligned).map_err(|_| corrupt(e)),
    };
    let collections = collections(&a.collections)?;
    Ok(DeviceState {
        policy: rkyv::deserialize::<_, RkyvError>(&a.policy).map_err(corrupt)?,
        wipe: rkyv::deserialize::<_, RkyvError>(&a.wipe).map_err(corrupt)?,
        hierarchy: rkyv::deserialize::<_, RkyvError>(&a.hierarchy).map_err(corrupt)?,
        collections,
        ping: rkyv::deserialize::<_, RkyvError>(&a.ping).map_err(corrupt)?,
        applied: a.applied.to_native(),
        sent: rkyv::deserialize::<_, RkyvError>(&a.sent).map_err(corrupt)?,
    })
}

fn decode_v1(aligned: &[u8]) -> Result<DeviceState, CodecError> {
    let a = rkyv::access::<Archived<DeviceStateV1>, RkyvError>(aligned).map_err(corrupt)?;
    let collections = collections(&a.collections)?;
    Ok(DeviceState {
        policy: rkyv::deserialize::<_, RkyvError>(&a.policy).map_err(corrupt)?,
        wipe: rkyv::deserialize::<_, RkyvError>(&a.wipe).map_err(corrupt)?,
        hierarchy: rkyv::deserialize::<_, RkyvError>(&a.hierarchy).map_err(corrupt)?,
        collections,
        ping: rkyv::deserialize::<_, RkyvError>(&a.ping).map_err(corrupt)?,
        applied: a.applied.to_native(),
        sent: Vec::new(),
    })
}

/// Validates a snapshot without building the state (cheap integrity check
/// for storage and replay tools).
pub fn check_snapshot(bytes: &[u8]) -> Result<(), CodecError> {
    let aligned = payload(SNAPSHOT_MAGIC, "snapshot", bytes)?;
    match rkyv::access::<Archived<DeviceState>, RkyvError>(&aligned) {
        Ok(_) => Ok(()),
        Err(e) => rkyv::access::<Archived<DeviceStateV1>, RkyvError>(&aligned)
            .map(|_| ())
            .map_err(|_| corrupt(e)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use crate::event::{with_header, Event};
    use crate::types::{BackendFolderId, FolderType, PolicyKey};

    // A snapshot written before `sent` existed still loads, with no ClientIds.
    #[test]
    fn snapshots_of_the_layout_before_sent_still_load() {
        let mut state = DeviceState::default();
        crate::state::fold(
            &mut state,
            &[
                Event::PolicyKeyIssued {
                    policy_key: PolicyKey(7),
                },
                Event::HierarchyObserved {
                    folders: vec![crate::event::BackendFolder {
                        id: BackendFolderId("INBOX".into()),
                        name: "Inbox".into(),
                        parent: None,
                        folder_type: FolderType::Inbox,
                    }],
                },
            ],
        );
        let old = DeviceStateV1 {
            policy: state.policy,
            wipe: state.wipe,
            hierarchy: state.hierarchy.clone(),
            collections: state.collections.clone(),
            ping: state.ping.clone(),
            applied: state.applied,
        };
        let bytes = with_header(SNAPSHOT_MAGIC, &rkyv::to_bytes::<RkyvError>(&old).unwrap());
        // The old bytes do not pass as the current layout: the V1 path reads them.
        let aligned = payload(SNAPSHOT_MAGIC, "snapshot", &bytes).unwrap();
        assert!(rkyv::access::<Archived<DeviceState>, RkyvError>(&aligned).is_err());
        check_snapshot(&bytes).unwrap();
        assert_eq!(decode_snapshot(&bytes).unwrap(), state);
        // And the current layout round-trips as before.
        state.sent.push(crate::types::ClientId("c1".into()));
        let now = encode_snapshot(&state).unwrap();
        assert_eq!(decode_snapshot(&now).unwrap(), state);
        assert!(decode_snapshot(&now[..now.len() - 3]).is_err());
    }
}
