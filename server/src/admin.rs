//! Device administration on the store: remote wipe, allow, quarantine and
//! listing; and the Sent copies waiting to be saved ([`list_sent`],
//! [`sent_action`]: `opush sent list|drop|retry`, `GET /sent-copies`). Exists
//! so the command line (`opush device …`), the admin HTTP
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
    DeviceChange, DeviceKey, DeviceRecord, DeviceState as RegistryState, SentCopyInfo,
    StorageError, Store,
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
    /// No Sent copy of that Message-ID waits for that user.
    #[error("no Sent copy {message_id} waits for user {user}")]
    UnknownSentCopy {
        /// User.
        user: String,
        /// Message-ID.
        message_id: String,
    },
    /// A try of the copy is under way: asked again after it.
    #[error("a try of {message_id} is under way until {until}: ask again after it")]
    SentCopyBusy {
        /// Message-ID.
        message_id: String,
        /// The end of the try's claim (UTC).
        until: String,
    },
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

/// The Sent copies waiting to be saved, of `user` (every user's when
/// `None`), ordered by user then time queued; their messages are not read.
pub async fn list_sent(store: &Store, user: Option<&str>) -> Result<Vec<SentCopyInfo>, AdminError> {
    let mut rows = match user {
        Some(u) => store.sent_copies(u).await.map_err(|e| match e {
            StorageError::InvalidInput(m) => AdminError::InvalidDevice(m),
            e => AdminError::Storage(e),
        })?,
        None => store.all_sent_copies().await?,
    };
    rows.sort_by(|a, b| {
        (&a.user, a.created_ms, &a.message_id).cmp(&(&b.user, b.created_ms, &b.message_id))
    });
    Ok(rows)
}

/// When a waiting copy is tried next, as the listing says it: `trying`
/// while a try's claim holds (until its end at most), else its next try
/// as noted by the process holding it, or [`crate::sent_copy::wait_after`]
/// its tries after its last claim ended (`now` when that has passed).
pub fn next_try(c: &SentCopyInfo, now_ms: i64) -> String {
    if c.next_try_ms == 0 && c.last_try_ms > now_ms {
        return "trying".to_owned();
    }
    let at = if c.next_try_ms != 0 {
        c.next_try_ms
    } else {
        let wait = crate::sent_copy::wait_after(c.tries);
        c.last_try_ms
            .saturating_add(i64::try_from(wait.as_millis()).unwrap_or(i64::MAX))
    };
    if at <= now_ms {
        "now".to_owned()
    } else {
        opush_storage::schema::format_ms(at)
    }
}

/// One line per waiting Sent copy: `user device message-id size queued
/// tries next-try "subject" "last error"` (times UTC, `-` for what a row
/// from before schema v5 lacks; the texts quoted and escaped as Rust
/// strings). Empty when none waits.
pub fn describe_sent(rows: &[SentCopyInfo], now_ms: i64) -> String {
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_owned()
        } else {
            s.split_whitespace().collect::<Vec<_>>().join("_")
        }
    };
    let mut out = String::new();
    for c in rows {
        out.push_str(&format!(
            "{} {} {} {} {} {} {} {:?} {:?}\n",
            dash(&c.user),
            dash(&c.device_id),
            dash(&c.message_id),
            c.size,
            opush_storage::schema::format_ms(c.created_ms),
            c.tries,
            next_try(c, now_ms),
            c.subject,
            c.last_error.as_deref().unwrap_or("-"),
        ));
    }
    out
}

/// An administrative action on one waiting Sent copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SentAction {
    /// Forget it: it is never saved (the user keeps no copy in Sent).
    Drop,
    /// Try it now (its user's resumer, at once when this process has it).
    Retry,
}

impl SentAction {
    /// The action of its name (`drop`, `retry`).
    pub fn parse(name: &str) -> Option<SentAction> {
        match name {
            "drop" => Some(SentAction::Drop),
            "retry" => Some(SentAction::Retry),
            _ => None,
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            SentAction::Drop => "drop",
            SentAction::Retry => "retry",
        }
    }
}

/// Carries out `action` on a waiting Sent copy in the store and returns
/// the sentence the administrator reads. A running server's resumers see
/// a dropped copy gone at their next try, and a copy to retry due at their
/// next look ([`DeviceAdmin::sent_action`] tells this process's at once).
pub async fn sent_action(
    store: &Store,
    action: SentAction,
    user: &str,
    message_id: &str,
) -> Result<String, AdminError> {
    opush_storage::validate_sent_copy_key(user, message_id)
        .map_err(|e| AdminError::InvalidDevice(e.to_string()))?;
    let unknown = || AdminError::UnknownSentCopy {
        user: user.to_owned(),
        message_id: message_id.to_owned(),
    };
    match action {
        SentAction::Drop => {
            let there = store
                .sent_copies(user)
                .await?
                .into_iter()
                .any(|c| c.message_id == message_id);
            if !there {
                return Err(unknown());
            }
            store.delete_sent_copy(user, message_id).await?;
            tracing::warn!(target: "CONFIGURATION", user, message_id, "waiting sent copy dropped by an administrator: never saved in Sent");
            Ok(format!(
                "sent copy {message_id} of {user} dropped: it will not be saved in Sent"
            ))
        }
        SentAction::Retry => {
            match crate::sent_copy::retry_now_in_store(store, user, message_id).await? {
                crate::sent_copy::RetryNow::Due => Ok(format!(
                    "sent copy {message_id} of {user} is due now: tried at the next look at it \
                     (at once by a server holding its user's resumer; else on the user's next \
                     request, or the next sweep with the IMAP master user)"
                )),
                crate::sent_copy::RetryNow::Gone => Err(unknown()),
                crate::sent_copy::RetryNow::Trying(until) => Err(AdminError::SentCopyBusy {
                    message_id: message_id.to_owned(),
                    until: opush_storage::schema::format_ms(until),
                }),
            }
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

    /// [`list_sent`] rendered by [`describe_sent`].
    pub async fn list_sent(&self, user: Option<&str>) -> Result<String, AdminError> {
        let rows = list_sent(self.eas.sessions.store(), user).await?;
        Ok(describe_sent(&rows, crate::sent_copy::now_ms()))
    }

    /// [`sent_action`], then this process's resumer of the user is told
    /// of a copy to retry (it tries it at once).
    pub async fn sent_action(
        &self,
        action: SentAction,
        user: &str,
        message_id: &str,
    ) -> Result<String, AdminError> {
        let line = sent_action(self.eas.sessions.store(), action, user, message_id).await?;
        if action == SentAction::Retry {
            self.eas.sent_copies.retry_now(&self.eas, user, message_id);
        }
        Ok(line)
    }
}
