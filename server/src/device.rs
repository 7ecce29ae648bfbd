//! The device registry as the HTTP front end uses it on every request: record
//! that a device was seen (last seen, user agent, protocol version), decide
//! whether it may talk to us (allowed, quarantined, blocked), and the
//! provisioning gate's verdicts (MS-ASPROV: HTTP 449 up to 12.1, Status
//! 140/142/143/144 from 14.0; the verdict itself comes from the device's
//! event-sourced state, `EasServices::provision_verdict`).
//!
//! The registry is a trait: [`StoreDeviceRegistry`] keeps the devices in the
//! store's registry rows (production), [`MemoryDeviceRegistry`] in memory
//! (admin-only mode, HTTP-layer tests).
//! This module must not decide *policies* (that is Provision's job).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use futures::future::BoxFuture;
use opush_protocol::version::ProtocolVersion;

/// Whether a device may sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceAccess {
    /// Normal traffic.
    Allowed,
    /// Unknown device held until an administrator allows it
    /// (`[devices] allow_unknown = false`).
    Quarantined,
    /// Explicitly blocked by an administrator.
    Blocked,
}

/// What one request tells us about its device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceSeen {
    /// The authenticated user (`user@domain`).
    pub user: String,
    /// `DeviceId`.
    pub device_id: String,
    /// `DeviceType`.
    pub device_type: String,
    /// `User-Agent`, if sent.
    pub user_agent: Option<String>,
    /// The request's protocol version.
    pub protocol_version: ProtocolVersion,
    /// When the request arrived.
    pub at: SystemTime,
}

/// A device as the registry knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The user owning this partnership.
    pub user: String,
    /// `DeviceId`.
    pub device_id: String,
    /// `DeviceType` (last seen).
    pub device_type: String,
    /// `User-Agent` (last seen).
    pub user_agent: Option<String>,
    /// Protocol version of the last request.
    pub protocol_version: ProtocolVersion,
    /// First request.
    pub first_seen: SystemTime,
    /// Last request.
    pub last_seen: SystemTime,
    /// Access state.
    pub access: DeviceAccess,
}

/// A registry failure (the store behind it is down or refused the write).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    /// The backing store cannot be reached; retry later.
    #[error("device registry unavailable: {0}")]
    Unavailable(String),
    /// The registry is full (bounded in-process registry).
    #[error("device registry full ({0} devices)")]
    Full(usize),
    /// The user or device id cannot name a device (too long, NUL…).
    #[error("invalid device: {0}")]
    Invalid(String),
}

/// The registry the request path talks to.
pub trait DeviceRegistry: Send + Sync {
    /// Records a request of a device and returns its record. An unknown
    /// device is created `Allowed` when `allow_unknown`, `Quarantined`
    /// otherwise.
    fn record_request(
        &self,
        seen: DeviceSeen,
        allow_unknown: bool,
    ) -> BoxFuture<'_, Result<DeviceRecord, RegistryError>>;
}

/// An in-process registry, bounded and forgotten on restart: for servers
/// without a store (admin-only mode) and for tests of the HTTP layer.
#[derive(Debug)]
pub struct MemoryDeviceRegistry {
    devices: Mutex<HashMap<(String, String), DeviceRecord>>,
    max_devices: usize,
}

impl MemoryDeviceRegistry {
    /// A registry holding at most `max_devices` devices.
    pub fn new(max_devices: usize) -> Self {
        MemoryDeviceRegistry {
            devices: Mutex::new(HashMap::new()),
            max_devices,
        }
    }

    /// The record of a device, if known.
    pub fn get(&self, user: &str, device_id: &str) -> Option<DeviceRecord> {
        self.lock()
            .get(&(user.to_owned(), device_id.to_owned()))
            .cloned()
    }

    /// Sets a known device's access (administration). Returns false if unknown.
    pub fn set_access(&self, user: &str, device_id: &str, access: DeviceAccess) -> bool {
        self.update(user, device_id, |r| r.access = access)
    }

    fn update(&self, user: &str, device_id: &str, f: impl FnOnce(&mut DeviceRecord)) -> bool {
        match self
            .lock()
            .get_mut(&(user.to_owned(), device_id.to_owned()))
        {
            Some(r) => {
                f(r);
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), DeviceRecord>> {
        // A panic while holding this lock cannot leave a record half-written
        // (every update is a plain field store), so a poisoned lock is usable.
        self.devices
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn record_now(
        &self,
        seen: DeviceSeen,
        allow_unknown: bool,
    ) -> Result<DeviceRecord, RegistryError> {
        let mut devices = self.lock();
        let key = (seen.user.clone(), seen.device_id.clone());
        if let Some(r) = devices.get_mut(&key) {
            r.device_type = seen.device_type;
            if seen.user_agent.is_some() {
                r.user_agent = seen.user_agent;
            }
            r.protocol_version = seen.protocol_version;
            r.last_seen = seen.at;
            return Ok(r.clone());
        }
        if devices.len() >= self.max_devices {
            return Err(RegistryError::Full(self.max_devices));
        }
        let record = DeviceRecord {
            user: seen.user,
            device_id: seen.device_id,
            device_type: seen.device_type,
            user_agent: seen.user_agent,
            protocol_version: seen.protocol_version,
            first_seen: seen.at,
            last_seen: seen.at,
            access: if allow_unknown {
                DeviceAccess::Allowed
            } else {
                DeviceAccess::Quarantined
            },
        };
        devices.insert(key, record.clone());
        crate::obs::metrics::set_devices(devices.len());
        Ok(record)
    }
}

impl DeviceRegistry for MemoryDeviceRegistry {
    fn record_request(
        &self,
        seen: DeviceSeen,
        allow_unknown: bool,
    ) -> BoxFuture<'_, Result<DeviceRecord, RegistryError>> {
        let res = self.record_now(seen, allow_unknown);
        Box::pin(async move { res })
    }
}

/// The device registry on the store's registry rows (`put/get_device`).
///
/// A device is created on its first request (allowed or quarantined per
/// `[devices] allow_unknown`) and its row updated with the request's device
/// type, `User-Agent`, protocol version and time. So that a request does not
/// cost a store write, an allowed device whose type, agent and version did
/// not change is written at most once per `write_every` (its last-seen time
/// is that precise); the same period bounds how long an administrator's
/// change of an allowed device takes to apply. A device that is not allowed
/// is re-read on each of its requests, so allowing it applies at once.
/// Each write changes only what the request saw (type, agent, version,
/// time) on the row as stored ([`opush_storage::Store::change_device`]), so
/// what Settings, administrators and other processes put there (device
/// information, access, wipe state) is kept.
pub struct StoreDeviceRegistry {
    store: std::sync::Arc<opush_storage::Store>,
    write_every: std::time::Duration,
    max_cached: usize,
    cache: Mutex<HashMap<(String, String), Cached>>,
}

#[derive(Clone)]
struct Cached {
    record: DeviceRecord,
    written: tokio::time::Instant,
}

impl std::fmt::Debug for StoreDeviceRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreDeviceRegistry")
            .field("write_every", &self.write_every)
            .finish_non_exhaustive()
    }
}

/// Registry-row `info` key of the last request's `User-Agent` header.
pub const INFO_USER_AGENT: &str = "HttpUserAgent";
/// Registry-row `info` key of the last request's protocol version.
pub const INFO_PROTOCOL_VERSION: &str = "ProtocolVersion";

fn millis(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn from_millis(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(u64::try_from(ms).unwrap_or(0))
}

impl StoreDeviceRegistry {
    /// A registry over `store`, writing an unchanged allowed device at most
    /// once per `write_every`, caching about `max_cached` devices.
    pub fn new(
        store: std::sync::Arc<opush_storage::Store>,
        write_every: std::time::Duration,
        max_cached: usize,
    ) -> Self {
        StoreDeviceRegistry {
            store,
            write_every,
            max_cached: max_cached.max(1),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets what is cached of a device, so its next request reads the
    /// registry row again (after an administrator changed it).
    pub fn forget(&self, user: &str, device_id: &str) {
        self.lock().remove(&(user.to_owned(), device_id.to_owned()));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), Cached>> {
        // Entries are replaced whole; a poisoned lock holds consistent data.
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The answer from memory when nothing needs writing.
    fn fresh(&self, seen: &DeviceSeen, now: tokio::time::Instant) -> Option<DeviceRecord> {
        let mut cache = self.lock();
        let c = cache.get_mut(&(seen.user.clone(), seen.device_id.clone()))?;
        let unchanged = c.record.device_type == seen.device_type
            && (seen.user_agent.is_none() || seen.user_agent == c.record.user_agent)
            && c.record.protocol_version == seen.protocol_version;
        if unchanged
            && c.record.access == DeviceAccess::Allowed
            && now.duration_since(c.written) < self.write_every
        {
            c.record.last_seen = seen.at;
            return Some(c.record.clone());
        }
        None
    }

    async fn record_slow(
        &self,
        seen: DeviceSeen,
        allow_unknown: bool,
    ) -> Result<DeviceRecord, RegistryError> {
        use opush_storage::DeviceState as Row;
        let unavailable =
            |e: opush_storage::StorageError| RegistryError::Unavailable(e.to_string());
        let key = opush_storage::DeviceKey::new(&seen.user, &seen.device_id)
            .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        let at = millis(seen.at);
        let new_device = self
            .store
            .get_device(&key)
            .await
            .map_err(unavailable)?
            .is_none();
        // Only what this request saw is changed, on the row as stored: an
        // administrator's change or another process's made meanwhile is kept.
        let mut change = opush_storage::DeviceChange::new(key.clone());
        change.create = Some(opush_storage::DeviceRecord {
            first_seen_ms: at,
            key,
            device_type: seen.device_type.clone(),
            last_seen_ms: at,
            policy_key: None,
            state: if allow_unknown {
                Row::Allowed
            } else {
                Row::Quarantined
            },
            info: std::collections::BTreeMap::new(),
        });
        change.device_type = Some(seen.device_type.clone());
        change.seen_ms = Some(at);
        change.info.insert(
            INFO_PROTOCOL_VERSION.to_owned(),
            seen.protocol_version.as_str().to_owned(),
        );
        if let Some(agent) = &seen.user_agent {
            change
                .info
                .insert(INFO_USER_AGENT.to_owned(), agent.clone());
        }
        let row = self
            .store
            .change_device(change)
            .await
            .map_err(unavailable)?
            .ok_or_else(|| RegistryError::Unavailable("device row not written".into()))?;
        if new_device {
            crate::obs::metrics::device_created(());
            crate::obs::metrics::device_registered();
        }
        let record = DeviceRecord {
            user: seen.user.clone(),
            device_id: seen.device_id.clone(),
            device_type: row.device_type,
            user_agent: row.info.get(INFO_USER_AGENT).cloned(),
            protocol_version: seen.protocol_version,
            first_seen: from_millis(row.first_seen_ms),
            last_seen: from_millis(row.last_seen_ms),
            // A wipe needs the device to reach Provision: it stays allowed.
            access: match row.state {
                Row::Quarantined => DeviceAccess::Quarantined,
                Row::Allowed | Row::WipeRequested | Row::Wiped => DeviceAccess::Allowed,
            },
        };
        let now = tokio::time::Instant::now();
        let mut cache = self.lock();
        if cache.len() >= self.max_cached {
            cache.retain(|_, c| now.duration_since(c.written) < self.write_every);
            if cache.len() >= self.max_cached {
                cache.clear();
            }
        }
        cache.insert(
            (seen.user, seen.device_id),
            Cached {
                record: record.clone(),
                written: now,
            },
        );
        Ok(record)
    }
}

impl DeviceRegistry for StoreDeviceRegistry {
    fn record_request(
        &self,
        seen: DeviceSeen,
        allow_unknown: bool,
    ) -> BoxFuture<'_, Result<DeviceRecord, RegistryError>> {
        Box::pin(async move {
            if let Some(record) = self.fresh(&seen, tokio::time::Instant::now()) {
                return Ok(record);
            }
            self.record_slow(seen, allow_unknown).await
        })
    }
}

/// The provisioning gate's verdict for one request (MS-ASPROV 3.2.5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProvisionVerdict {
    /// The request may proceed.
    Pass,
    /// An administrator asked for a remote wipe (Status 140): the device
    /// must Provision to receive it.
    RemoteWipe,
    /// The device never completed Provision, or sent no key (Status 142).
    NotProvisioned,
    /// The server policy changed since the device's key (Status 143).
    PolicyRefresh,
    /// The device sent a key the server does not know (Status 144).
    InvalidPolicyKey,
}

impl ProvisionVerdict {
    /// The MS-ASCMD common status used from 14.0 on.
    pub fn status(self) -> Option<u16> {
        match self {
            ProvisionVerdict::Pass => None,
            ProvisionVerdict::RemoteWipe => Some(140),
            ProvisionVerdict::NotProvisioned => Some(142),
            ProvisionVerdict::PolicyRefresh => Some(143),
            ProvisionVerdict::InvalidPolicyKey => Some(144),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn seen(device_id: &str) -> DeviceSeen {
        DeviceSeen {
            user: "alice@example.test".into(),
            device_id: device_id.into(),
            device_type: "WP8".into(),
            user_agent: Some("agent/1".into()),
            protocol_version: ProtocolVersion::V14_0,
            at: SystemTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn unknown_device_quarantined_unless_allowed() {
        let reg = MemoryDeviceRegistry::new(4);
        assert_eq!(
            reg.record_now(seen("q"), false).unwrap().access,
            DeviceAccess::Quarantined
        );
        assert_eq!(
            reg.record_now(seen("a"), true).unwrap().access,
            DeviceAccess::Allowed
        );
        // A known device keeps its state whatever the switch says now.
        assert_eq!(
            reg.record_now(seen("q"), true).unwrap().access,
            DeviceAccess::Quarantined
        );
    }

    #[test]
    fn record_updates_last_seen_agent_and_version() {
        let reg = MemoryDeviceRegistry::new(4);
        reg.record_now(seen("d"), true).unwrap();
        let mut later = seen("d");
        later.at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(60);
        later.user_agent = Some("agent/2".into());
        later.protocol_version = ProtocolVersion::V16_1;
        let r = reg.record_now(later, true).unwrap();
        assert_eq!(r.first_seen, SystemTime::UNIX_EPOCH);
        assert_eq!(
            r.last_seen.duration_since(r.first_seen).unwrap().as_secs(),
            60
        );
        assert_eq!(r.user_agent.as_deref(), Some("agent/2"));
        assert_eq!(r.protocol_version, ProtocolVersion::V16_1);
    }

    #[test]
    fn registry_is_bounded() {
        let reg = MemoryDeviceRegistry::new(1);
        reg.record_now(seen("a"), true).unwrap();
        assert_eq!(reg.record_now(seen("b"), true), Err(RegistryError::Full(1)));
        // Known devices still get through.
        assert!(reg.record_now(seen("a"), true).is_ok());
    }

    #[test]
    fn verdict_statuses() {
        use ProvisionVerdict::*;
        assert_eq!(Pass.status(), None);
        assert_eq!(RemoteWipe.status(), Some(140));
        assert_eq!(NotProvisioned.status(), Some(142));
        assert_eq!(PolicyRefresh.status(), Some(143));
        assert_eq!(InvalidPolicyKey.status(), Some(144));
    }
}
