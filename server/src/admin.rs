//! Device administration on the store: remote wipe, allow and quarantine.
//! Exists so the command line (`opush device …`) and, later, the SSH
//! console share one implementation of each action.
//!
//! A wipe is an event of the device's log (`Event::WipeRequested`), so the
//! engine sees it on the device's next request (Status 140 / HTTP 449, then
//! `<RemoteWipe/>` in Provision) and replay shows it; the registry row
//! mirrors it for listings. Access is a registry field. Nothing here talks
//! to the device or to a backend.

use std::sync::Arc;

use opush_engine::{Event, WipeState};
use opush_storage::{DeviceKey, DeviceRecord, DeviceState as RegistryState, StorageError, Store};

use crate::session::{now, SessionError, Sessions};

/// Why an administrative action failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The user/device pair names no device the store knows.
    #[error("no device {device} for user {user}")]
    UnknownDevice {
        /// User.
        user: String,
        /// Device id.
        device: String,
    },
    /// The user or device id cannot name a device.
    #[error("invalid device: {0}")]
    InvalidDevice(String),
    /// The store failed (nothing was written).
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// The device log could not be read or appended to.
    #[error(transparent)]
    Session(#[from] SessionError),
}

/// What a wipe request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WipeOutcome {
    /// Recorded now; the device gets it on its next request.
    Requested,
    /// A wipe was already pending: nothing written.
    AlreadyPending,
    /// The device already acknowledged a wipe; a new one is recorded.
    RequestedAgain,
}

fn key(user: &str, device: &str) -> Result<DeviceKey, AdminError> {
    DeviceKey::new(user, device).map_err(|e| AdminError::InvalidDevice(e.to_string()))
}

/// Records a remote wipe for a device the store knows (it has a registry
/// row or a log).
pub async fn request_wipe(
    store: Arc<Store>,
    user: &str,
    device: &str,
) -> Result<WipeOutcome, AdminError> {
    let key = key(user, device)?;
    let record = store.get_device(&key).await?;
    if record.is_none() && store.head(&key).await? == 0 {
        return Err(AdminError::UnknownDevice {
            user: user.to_owned(),
            device: device.to_owned(),
        });
    }
    let sessions = Sessions::new(store.clone(), 0, 1);
    let mut session = sessions.open(key).await?;
    let outcome = match session.state().wipe {
        WipeState::Requested => WipeOutcome::AlreadyPending,
        WipeState::Acknowledged => WipeOutcome::RequestedAgain,
        WipeState::None => WipeOutcome::Requested,
    };
    if outcome != WipeOutcome::AlreadyPending {
        session
            .commit(&[Event::WipeRequested { at: now() }])
            .await?;
    }
    drop(session);
    if let Some(mut record) = record {
        if record.state != RegistryState::WipeRequested {
            record.state = RegistryState::WipeRequested;
            store.put_device(record).await?;
        }
    }
    Ok(outcome)
}

/// Sets a known device's access (allowed or quarantined) in the registry.
pub async fn set_access(
    store: &Store,
    user: &str,
    device: &str,
    allowed: bool,
) -> Result<DeviceRecord, AdminError> {
    let key = key(user, device)?;
    let Some(mut record) = store.get_device(&key).await? else {
        return Err(AdminError::UnknownDevice {
            user: user.to_owned(),
            device: device.to_owned(),
        });
    };
    record.state = if allowed {
        RegistryState::Allowed
    } else {
        RegistryState::Quarantined
    };
    store.put_device(record.clone()).await?;
    Ok(record)
}
