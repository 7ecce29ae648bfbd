//! Snapshots of a whole `DeviceState`, so loading a device does not re-fold
//! its full log. Same versioned header as events (`b"OPSN"` + version).
//!
//! A snapshot is a cache: folding the log from scratch must give the same
//! state (property-tested). Decoding validates the bytes (bytecheck) and
//! rejects newer versions; it never trusts storage blindly. The large
//! per-collection maps are rebuilt from the validated archive in key order
//! (bulk-built), which is several times faster than inserting one by one.

use crate::event::{payload, with_header, CodecError, SNAPSHOT_MAGIC};
use crate::state::{CollectionState, DeviceState};
use crate::types::{BackendItemId, Timestamp};
use rkyv::rancor::Error as RkyvError;
use rkyv::Archived;
use std::collections::{BTreeMap, BTreeSet};

/// The oldest format version whose `DeviceState` layout this build reads
/// (version 2 added `sent`); older snapshots are refused, never misread, and
/// the caller folds the events instead (a snapshot is only a cache).
const OLDEST_SNAPSHOT_LAYOUT: u32 = 2;

fn check_layout(bytes: &[u8]) -> Result<(), CodecError> {
    if let Some(v) = bytes.get(4..8) {
        let mut b = [0u8; 4];
        b.copy_from_slice(v);
        let version = u32::from_le_bytes(b);
        if version != 0 && version < OLDEST_SNAPSHOT_LAYOUT && &bytes[..4] == SNAPSHOT_MAGIC {
            return Err(CodecError::UnsupportedVersion(version));
        }
    }
    Ok(())
}

/// Encodes a snapshot.
pub fn encode_snapshot(state: &DeviceState) -> Result<Vec<u8>, CodecError> {
    let bytes =
        rkyv::to_bytes::<RkyvError>(state).map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(with_header(SNAPSHOT_MAGIC, &bytes))
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
    let dirty = a.dirty.iter().map(id).collect();
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

/// Decodes a snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<DeviceState, CodecError> {
    check_layout(bytes)?;
    let aligned = payload(SNAPSHOT_MAGIC, "snapshot", bytes)?;
    let a = rkyv::access::<Archived<DeviceState>, RkyvError>(&aligned).map_err(corrupt)?;
    let collections = a
        .collections
        .iter()
        .map(|(k, v)| {
            Ok((
                rkyv::deserialize::<_, RkyvError>(k).map_err(corrupt)?,
                collection(v)?,
            ))
        })
        .collect::<Result<BTreeMap<_, _>, CodecError>>()?;
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

/// Validates a snapshot without building the state (cheap integrity check
/// for storage and replay tools).
pub fn check_snapshot(bytes: &[u8]) -> Result<(), CodecError> {
    check_layout(bytes)?;
    let aligned = payload(SNAPSHOT_MAGIC, "snapshot", bytes)?;
    rkyv::access::<Archived<DeviceState>, RkyvError>(&aligned)
        .map(|_| ())
        .map_err(corrupt)
}
