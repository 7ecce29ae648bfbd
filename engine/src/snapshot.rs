//! Snapshots of a whole `DeviceState`, so loading a device does not re-fold
//! its full log. Same versioned header as events (`b"OPSN"` + version).
//!
//! A snapshot is a cache: folding the log from scratch must give the same
//! state (property-tested). Decoding validates the bytes (bytecheck) and
//! rejects newer versions; it never trusts storage blindly.

use crate::event::{payload, with_header, CodecError, SNAPSHOT_MAGIC};
use crate::state::DeviceState;

/// Encodes a snapshot.
pub fn encode_snapshot(state: &DeviceState) -> Result<Vec<u8>, CodecError> {
    let bytes = rkyv::to_bytes::<rkyv::rancor::Error>(state)
        .map_err(|e| CodecError::Encode(e.to_string()))?;
    Ok(with_header(SNAPSHOT_MAGIC, &bytes))
}

/// Decodes a snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<DeviceState, CodecError> {
    let aligned = payload(SNAPSHOT_MAGIC, "snapshot", bytes)?;
    rkyv::from_bytes::<DeviceState, rkyv::rancor::Error>(&aligned)
        .map_err(|e| CodecError::Corrupt(e.to_string()))
}
