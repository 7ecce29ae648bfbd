//! Device administration on the store: remote wipe, allow, quarantine and
//! listing. Exists so the command line (`opush device …`), the admin HTTP
//! address of a running server (`POST /devices/USER/DEVICE/ACTION`, used by
//! the command line when the server holds the embedded store) and, later,
//! the SSH console share one implementation of each action and its answer
//! text ([`run`]).
//!
//! A wipe is an event of the device's log (`Event::WipeRequested`), so the
//! engine sees it on the device's next request (Status 140 / HTTP 449, then
//! `<RemoteWipe/>` in Provision) and replay shows it; the registry row
//! mirrors it for listings. Access is a registry field. Nothing here talks
//! to the device or to a backend.

use opush_engine::{Event, WipeState};
use opush_storage::{
    DeviceChange, DeviceKey, DeviceRecord, DeviceState as RegistryState, StorageError, Store,
};

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
/// row or a log), through `sessions` (a running server passes its own, so
/// its cached state of the device sees the wipe at once).
pub async fn request_wipe(
    sessions: &Sessions,
    user: &str,
    device: &str,
) -> Result<WipeOutcome, AdminError> {
    let key = key(user, device)?;
    let store = sessions.store().clone();
    let record = store.get_device(&key).await?;
    if record.is_none() && store.head(&key).await? == 0 {
        return Err(AdminError::UnknownDevice {
            user: user.to_owned(),
            device: device.to_owned(),
        });
    }
    let mut session = sessions.open(key.clone()).await?;
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
    if record.is_some() {
        // The registry's mirror of the wipe (the log holds the wipe itself).
        let mut change = DeviceChange::new(key);
        change.state = Some(RegistryState::WipeRequested);
        store.change_device(change).await?;
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
    let mut change = DeviceChange::new(key);
    change.state = Some(if allowed {
        RegistryState::Allowed
    } else {
        RegistryState::Quarantined
    });
    match store.change_device(change).await? {
        Some(record) => Ok(record),
        None => Err(AdminError::UnknownDevice {
            user: user.to_owned(),
            device: device.to_owned(),
        }),
    }
}

/// The devices of `user` (every device when `None`), ordered by user and id.
pub async fn list(store: &Store, user: Option<&str>) -> Result<Vec<DeviceRecord>, AdminError> {
    let mut rows = match user {
        Some(u) => store.list_devices(u).await?,
        None => store.list_all_devices().await?,
    };
    rows.sort_by(|a, b| (&a.key.user, &a.key.device_id).cmp(&(&b.key.user, &b.key.device_id)));
    Ok(rows)
}

/// One line per device: `user device type state last-seen(ms) policy-key`.
pub fn describe(rows: &[DeviceRecord]) -> String {
    let mut out = String::new();
    for r in rows {
        let state = match r.state {
            RegistryState::Allowed => "allowed",
            RegistryState::Quarantined => "quarantined",
            RegistryState::WipeRequested => "wipe-requested",
            RegistryState::Wiped => "wiped",
        };
        let policy = r.policy_key.map_or("-".to_owned(), |k| k.to_string());
        out.push_str(&format!(
            "{} {} {} {state} {} {policy}\n",
            r.key.user,
            r.key.device_id,
            if r.device_type.is_empty() {
                "-"
            } else {
                &r.device_type
            },
            r.last_seen_ms
        ));
    }
    out
}

/// An administrative action on one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Remote wipe on the next request.
    Wipe,
    /// Allow to sync.
    Allow,
    /// Hold back until allowed.
    Quarantine,
}

impl Action {
    /// The action of its name (`wipe`, `allow`, `quarantine`).
    pub fn parse(name: &str) -> Option<Action> {
        match name {
            "wipe" => Some(Action::Wipe),
            "allow" => Some(Action::Allow),
            "quarantine" => Some(Action::Quarantine),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Action::Wipe => "wipe",
            Action::Allow => "allow",
            Action::Quarantine => "quarantine",
        }
    }
}

/// Carries out `action` on a device and returns the sentence the
/// administrator reads.
pub async fn run(
    sessions: &Sessions,
    action: Action,
    user: &str,
    device: &str,
) -> Result<String, AdminError> {
    match action {
        Action::Wipe => Ok(match request_wipe(sessions, user, device).await? {
            WipeOutcome::Requested | WipeOutcome::RequestedAgain => {
                format!("remote wipe requested for {device} of {user}: sent on its next request")
            }
            WipeOutcome::AlreadyPending => {
                format!("a remote wipe is already pending for {device} of {user}")
            }
        }),
        Action::Allow | Action::Quarantine => {
            let allowed = action == Action::Allow;
            set_access(sessions.store(), user, device, allowed).await?;
            Ok(format!(
                "{device} of {user} is now {}",
                if allowed { "allowed" } else { "quarantined" }
            ))
        }
    }
}

/// Device administration inside a running server: its own sessions (one
/// writer per device in the process) and registry cache (forgotten after a
/// change, so the next request sees it).
pub struct DeviceAdmin {
    eas: std::sync::Arc<crate::session::EasServices>,
    registry: std::sync::Arc<crate::device::StoreDeviceRegistry>,
}

impl std::fmt::Debug for DeviceAdmin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceAdmin").finish_non_exhaustive()
    }
}

impl DeviceAdmin {
    /// Administration over a server's sessions and registry.
    pub fn new(
        eas: std::sync::Arc<crate::session::EasServices>,
        registry: std::sync::Arc<crate::device::StoreDeviceRegistry>,
    ) -> DeviceAdmin {
        DeviceAdmin { eas, registry }
    }

    /// [`run`], then the registry cache entry of the device is dropped.
    pub async fn run(
        &self,
        action: Action,
        user: &str,
        device: &str,
    ) -> Result<String, AdminError> {
        let res = run(&self.eas.sessions, action, user, device).await;
        self.registry.forget(user, device);
        res
    }

    /// [`list`] rendered by [`describe`].
    pub async fn list(&self, user: Option<&str>) -> Result<String, AdminError> {
        Ok(describe(&list(self.eas.sessions.store(), user).await?))
    }
}
