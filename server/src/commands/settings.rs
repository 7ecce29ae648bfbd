//! `handle_settings` ([MS-ASCMD] 2.2.1.18): DeviceInformation kept in the
//! device registry of the store, UserInformation with the user's address,
//! DevicePassword acknowledged (never stored), and Oof (out-of-office) as a
//! Sieve vacation script over ManageSieve (`crate::oof`) when `[sieve]` is
//! enabled, a clean "denied" status (7) otherwise. Every Oof request is
//! recorded as a decision (`opush_engine::decide_oof`) for `opush replay`;
//! a ManageSieve outage is the usual retry answer (111 / 503) and a
//! refused password a 401, with nothing recorded.
//!
//! It must not store or log the DevicePassword, and only the device
//! information fields (model, OS, user agent…) reach the registry, through
//! the one `store_device_information` Provision uses too.

use std::collections::BTreeMap;

use opush_engine::{Decision, DecisionInput, OofOutcome};
use opush_protocol::commands::settings::{
    Account, DeviceInformation, OofRequest, OofResponse, SettingsRequest, SettingsResponse,
    UserInformation,
};
use opush_protocol::query::Command;
use opush_protocol::status::SettingsStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_storage::{DeviceChange, DeviceRecord, DeviceState};

use super::{CommandContext, CommandError, EasResponse};
use crate::backends::sieve::SieveError;
use crate::oof::OofInvalid;
use crate::session::{session_error, Caller, EasServices, Recorder};

/// Handles `Cmd=Settings`.
pub async fn handle_settings(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::Settings, SettingsRequest::from_element)?;
    let res = settings(
        &req,
        ctx.version,
        &ctx.caller(),
        &ctx.request.device_type,
        eas,
    )
    .await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// Settings without HTTP.
pub async fn settings(
    req: &SettingsRequest,
    version: ProtocolVersion,
    caller: &Caller<'_>,
    device_type: &str,
    eas: &EasServices,
) -> Result<SettingsResponse, CommandError> {
    let device_information_status = match &req.device_information {
        None => None,
        Some(info) => Some(store_device_information(caller, device_type, info, eas).await?),
    };
    let user_information = req.user_information_get.then(|| {
        (
            SettingsStatus::Success,
            Some(user_information(caller, version, eas)),
        )
    });
    let oof = match &req.oof {
        None => None,
        Some(o) => Some(oof(o, caller, eas).await?),
    };
    Ok(SettingsResponse {
        status: SettingsStatus::Success,
        oof,
        device_password_status: req
            .device_password
            .as_ref()
            .map(|_| SettingsStatus::Success),
        user_information,
        device_information_status,
        rights_management: None,
    })
}

/// UserInformation/Get: the user's addresses, the same a draft's From is
/// checked against (draft.rs), as the one account opush knows of. From 14.1
/// the first is also the PrimarySmtpAddress and the configured display
/// name (`[identity]`) the UserDisplayName; an AccountId, AccountName or
/// SendDisabled would describe other (aggregated) accounts opush has none of.
fn user_information(
    caller: &Caller<'_>,
    version: ProtocolVersion,
    eas: &EasServices,
) -> UserInformation {
    let addresses = eas.send.addresses(caller.user);
    if addresses.is_empty() {
        return UserInformation::default();
    }
    let since_14_1 = version >= ProtocolVersion::V14_1;
    let display_name = eas.send.sender(caller.user).display_name;
    let account = Account {
        primary_smtp_address: addresses.first().cloned().filter(|_| since_14_1),
        user_display_name: Some(display_name).filter(|n| since_14_1 && !n.trim().is_empty()),
        smtp_addresses: addresses,
        ..Account::default()
    };
    UserInformation {
        accounts: vec![account],
    }
}

/// Oof Get or Set: the script read or written over ManageSieve, then the
/// decision recorded.
async fn oof(
    req: &OofRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<OofResponse, CommandError> {
    let service = &eas.oof;
    let set = matches!(req, OofRequest::Set(_));
    // A Set writes the user's Sieve script: under the device's session
    // and lease, so no other opush process writes it for this device at
    // once (a Get takes neither before it is recorded).
    let held = if set {
        let mut session = eas
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        let lease = session.lease().await?;
        Some((session, lease))
    } else {
        None
    };
    let (outcome, get) = match &service.sieve {
        None => (OofOutcome::NotConfigured, None),
        Some(sieve) => {
            let owner = script_owner(caller, eas);
            let login = owner.login();
            let done = match req {
                OofRequest::Get { body_type } => {
                    Ok(crate::oof::get(service, sieve, &login, body_type)
                        .await
                        .map_err(|e| sieve_error(e, caller.user))?)
                }
                OofRequest::Set(settings) => match crate::oof::validate(settings) {
                    Err(e) => Err(e),
                    Ok(()) => {
                        let to = (owner.addresses.as_slice(), owner.now);
                        crate::oof::set(service, sieve, &login, settings, to)
                            .await
                            .map_err(|e| sieve_error(e, caller.user))?
                    }
                },
            };
            match done {
                Ok(d) => (
                    OofOutcome::Done {
                        script: d
                            .script
                            .as_deref()
                            .map(|t| opush_engine::Digest::of(t.as_bytes())),
                    },
                    d.settings,
                ),
                Err(e) => {
                    tracing::info!(user = caller.user, error = %e, "out-of-office refused");
                    (
                        OofOutcome::Invalid {
                            conflicting: matches!(e, OofInvalid::Conflicting(_)),
                        },
                        None,
                    )
                }
            }
        }
    };
    let (mut session, lease) = match held {
        Some((session, lease)) => (session, Some(lease)),
        None => (
            eas.sessions
                .open(caller.device_key()?)
                .await
                .map_err(session_error)?,
            None,
        ),
    };
    let mut rec = Recorder::new(&session, eas, Command::Settings);
    let request = opush_engine::OofRequest { set, outcome };
    let decision = Decision {
        response: opush_engine::decide_oof(&request),
        events: Vec::new(),
    };
    let r = rec.decided(DecisionInput::Oof(request), decision);
    session.commit_request(rec).await.map_err(session_error)?;
    if let Some(lease) = lease {
        lease.release().await;
    }
    let status = SettingsStatus::from_code(r.status.into());
    Ok(OofResponse {
        get: if status == SettingsStatus::Success {
            get
        } else {
            None
        },
        status,
    })
}

/// The owner of the caller's Sieve script (Settings, ItemOperations,
/// FolderUpdate and FolderDelete write it).
pub(crate) fn script_owner<'a>(
    caller: &'a Caller<'_>,
    eas: &EasServices,
) -> crate::oof::ScriptOwner<'a> {
    let now = i64::try_from(crate::session::now().0 / 1000).unwrap_or(0);
    crate::oof::ScriptOwner::new(
        &eas.oof,
        (caller.user, caller.password.expose()),
        eas.send.addresses(caller.user),
        now,
    )
}

/// A ManageSieve failure as the command's error: a refused password is a
/// 401, anything else the retry answer (Settings, ItemOperations).
pub(crate) fn sieve_error(e: SieveError, user: &str) -> CommandError {
    match e {
        SieveError::Auth { .. } => CommandError::CredentialsRejected(user.to_owned()),
        SieveError::Fenced(f) => CommandError::LeaseLost(f),
        e => CommandError::BackendFailed {
            backend: "sieve",
            kind: e.kind(),
            reason: e.to_string(),
        },
    }
}

/// Longest DeviceInformation value kept, in characters: MS-ASCMD gives
/// each (Model, IMEI, FriendlyName, …) up to 1024. A device could otherwise
/// store most of a request body in its registry row, read with every
/// request and too big for one Cassandra mutation.
const MAX_INFO_CHARS: usize = 1024;

/// Keeps a DeviceInformation in the device registry (Settings, and
/// Provision from 14.1): only its fields, each cut at [`MAX_INFO_CHARS`],
/// on the row as stored. The status answered for it; a store failure is the
/// command's error.
pub(crate) async fn store_device_information(
    caller: &Caller<'_>,
    device_type: &str,
    info: &DeviceInformation,
    eas: &EasServices,
) -> Result<SettingsStatus, CommandError> {
    let key = caller.device_key()?;
    let store = eas.sessions.store();
    let now_ms = i64::try_from(crate::session::now().0).unwrap_or(i64::MAX);
    // Only the device information (and the time) is changed, on the row as
    // stored: its access and wipe state stay what they are there.
    let mut change = DeviceChange::new(key.clone());
    change.create = Some(DeviceRecord {
        key: key.clone(),
        device_type: device_type.to_owned(),
        first_seen_ms: now_ms,
        last_seen_ms: now_ms,
        policy_key: None,
        state: DeviceState::Allowed,
        info: BTreeMap::new(),
    });
    change.seen_ms = Some(now_ms);
    let fields = [
        ("Model", &info.model),
        ("IMEI", &info.imei),
        ("FriendlyName", &info.friendly_name),
        ("OS", &info.os),
        ("OSLanguage", &info.os_language),
        ("PhoneNumber", &info.phone_number),
        ("UserAgent", &info.user_agent),
        ("MobileOperator", &info.mobile_operator),
    ];
    for (name, value) in fields {
        if let Some(v) = value {
            let kept = match v.char_indices().nth(MAX_INFO_CHARS) {
                // Longer than the protocol allows: the rest is not kept.
                Some((cut, _)) => {
                    tracing::warn!(
                        field = name,
                        chars = v.chars().count(),
                        "DeviceInformation value over {MAX_INFO_CHARS} characters: truncated"
                    );
                    &v[..cut]
                }
                None => v.as_str(),
            };
            change.info.insert(name.to_owned(), kept.to_owned());
        }
    }
    store
        .change_device(change)
        .await
        .map_err(|e| CommandError::StorageUnavailable(e.to_string()))?;
    Ok(SettingsStatus::Success)
}
