//! `handle_settings` ([MS-ASCMD] 2.2.1.18): DeviceInformation kept in the
//! device registry of the store, UserInformation with the user's address,
//! DevicePassword acknowledged (never stored), and a clean "denied" status
//! for Oof, which this server does not manage.
//!
//! It must not store or log the DevicePassword, and only the device
//! information fields (model, OS, user agent…) reach the registry.

use std::collections::BTreeMap;

use opush_protocol::commands::settings::{
    DeviceInformation, OofResponse, SettingsRequest, SettingsResponse, UserInformation,
};
use opush_protocol::query::Command;
use opush_protocol::status::SettingsStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_storage::{DeviceRecord, DeviceState};

use super::{CommandContext, CommandError, EasResponse};
use crate::session::{Caller, EasServices};

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
        // The same addresses a draft's From is checked against (draft.rs).
        let addresses = eas.send.addresses(caller.user);
        let info = if version >= ProtocolVersion::V14_1 {
            UserInformation {
                primary_smtp_address: addresses.first().cloned(),
                smtp_addresses: addresses,
                accounts: None,
            }
        } else {
            UserInformation {
                smtp_addresses: addresses,
                primary_smtp_address: None,
                accounts: None,
            }
        };
        (SettingsStatus::Success, Some(info))
    });
    Ok(SettingsResponse {
        status: SettingsStatus::Success,
        // Out-of-office is not managed here (no Sieve vacation yet).
        oof: req.oof.as_ref().map(|_| OofResponse {
            status: SettingsStatus::DeniedByPolicy,
            get: None,
        }),
        device_password_status: req
            .device_password
            .as_ref()
            .map(|_| SettingsStatus::Success),
        user_information,
        device_information_status,
        rights_management: None,
    })
}

async fn store_device_information(
    caller: &Caller<'_>,
    device_type: &str,
    info: &DeviceInformation,
    eas: &EasServices,
) -> Result<SettingsStatus, CommandError> {
    let key = caller.device_key()?;
    let store = eas.sessions.store();
    let now_ms = i64::try_from(crate::session::now().0).unwrap_or(i64::MAX);
    let existing = store
        .get_device(&key)
        .await
        .map_err(|e| CommandError::StorageUnavailable(e.to_string()))?;
    let mut record = existing.unwrap_or_else(|| DeviceRecord {
        key: key.clone(),
        device_type: device_type.to_owned(),
        first_seen_ms: now_ms,
        last_seen_ms: now_ms,
        policy_key: None,
        state: DeviceState::Allowed,
        info: BTreeMap::new(),
    });
    record.last_seen_ms = now_ms;
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
            record.info.insert(name.to_owned(), v.clone());
        }
    }
    store
        .put_device(record)
        .await
        .map_err(|e| CommandError::StorageUnavailable(e.to_string()))?;
    Ok(SettingsStatus::Success)
}
