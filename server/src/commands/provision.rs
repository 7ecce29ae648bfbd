//! `handle_provision`: the two-step policy download / acknowledgement
//! ([MS-ASPROV] 3.2.5.1), the remote wipe order and its acknowledgement,
//! and (14.1+) the DeviceInformation sent along, kept in the device
//! registry the way Settings keeps it.
//!
//! The decision is `engine::decide_provision`; this module only parses,
//! draws the new policy key, records the events (before answering) and
//! renders. It must not check the policy key of other commands (that is the
//! provisioning gate in `crate::device` / `engine::check_policy`).

use opush_engine::{decide_provision, DecisionInput, PolicyKey, ProvisionRequest as EngineRequest};
use opush_protocol::commands::provision::{
    PolicyData, PolicyResponse, ProvisionRequest, ProvisionResponse, POLICY_TYPE_WBXML,
    POLICY_TYPE_XML,
};
use opush_protocol::commands::Owned;
use opush_protocol::query::Command;
use opush_protocol::status::{PolicyStatus, ProvisionStatus};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::tags::provision as pv;
use opush_protocol::wbxml::{encode_to_vec, Element};

use super::settings::store_device_information;
use super::{CommandContext, CommandError, EasResponse};
use crate::session::{session_error, Caller, EasServices, Recorder};

/// The `EASProvisionDoc` settings of a policy, in document order, from
/// `(setting, value)` pairs such as `(provision::MIN_DEVICE_PASSWORD_LENGTH, "4")`.
pub fn policy_document(settings: &[(opush_protocol::wbxml::Tag, String)]) -> Vec<Owned> {
    settings
        .iter()
        .map(|(tag, value)| Element::with_text(*tag, value.clone()))
        .collect()
}

/// A permissive default policy (no password, attachments allowed): the
/// document of the default `[policy]` section.
pub fn default_policy() -> Vec<Owned> {
    policy_from_config(&crate::config::PolicyConfig::default())
}

/// The `EASProvisionDoc` of the `[policy]` section ([MS-ASPROV] 2.2.2.27).
pub fn policy_from_config(p: &crate::config::PolicyConfig) -> Vec<Owned> {
    let flag = |b: bool| if b { "1" } else { "0" }.to_owned();
    let mut settings = vec![
        (pv::DEVICE_PASSWORD_ENABLED, flag(p.device_password_enabled)),
        (
            pv::ALPHANUMERIC_DEVICE_PASSWORD_REQUIRED,
            flag(p.alphanumeric_device_password_required),
        ),
        (pv::ATTACHMENTS_ENABLED, flag(p.attachments_enabled)),
        (
            pv::MIN_DEVICE_PASSWORD_LENGTH,
            p.min_device_password_length.to_string(),
        ),
        (
            pv::MAX_INACTIVITY_TIME_DEVICE_LOCK,
            p.max_inactivity_time_device_lock_s.to_string(),
        ),
        (
            pv::MAX_DEVICE_PASSWORD_FAILED_ATTEMPTS,
            p.max_device_password_failed_attempts.to_string(),
        ),
        (
            pv::ALLOW_SIMPLE_DEVICE_PASSWORD,
            flag(p.allow_simple_device_password),
        ),
        (
            pv::REQUIRE_DEVICE_ENCRYPTION,
            flag(p.require_device_encryption),
        ),
    ];
    if p.device_password_expiration_days > 0 {
        settings.push((
            pv::DEVICE_PASSWORD_EXPIRATION,
            p.device_password_expiration_days.to_string(),
        ));
    }
    if p.max_attachment_size > 0 {
        settings.push((pv::MAX_ATTACHMENT_SIZE, p.max_attachment_size.to_string()));
    }
    policy_document(&settings)
}

/// Handles `Cmd=Provision`.
pub async fn handle_provision(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::Provision, ProvisionRequest::from_element)?;
    let res = provision(
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

/// The Provision exchange without HTTP: keeps the DeviceInformation sent
/// along, loads the device, decides, records the events, returns the
/// response model.
pub async fn provision(
    req: &ProvisionRequest,
    version: ProtocolVersion,
    caller: &Caller<'_>,
    device_type: &str,
    eas: &EasServices,
) -> Result<ProvisionResponse, CommandError> {
    // Kept in the device registry as Settings keeps it (a 14.1+ device sends
    // it in its first Provision, [MS-ASPROV] 2.2.2.53), and first: a store
    // failure then fails the command before any policy event is recorded.
    let device_information_status = match &req.device_information {
        None => None,
        Some(info) => Some(
            store_device_information(caller, device_type, info, eas)
                .await?
                .code(),
        ),
    };
    let wanted_type = req
        .policy
        .as_ref()
        .map(|p| p.policy_type.clone())
        .unwrap_or_else(|| POLICY_TYPE_WBXML.to_owned());
    let known_type = wanted_type == POLICY_TYPE_WBXML
        || (wanted_type == POLICY_TYPE_XML && version <= ProtocolVersion::V2_5);
    let mut session = eas
        .sessions
        .open(caller.device_key()?)
        .await
        .map_err(session_error)?;
    let engine_req = EngineRequest {
        policy_key: req
            .policy
            .as_ref()
            .and_then(|p| p.policy_key)
            .map(PolicyKey),
        policy_status: req.policy.as_ref().and_then(|p| p.status),
        remote_wipe_status: req
            .remote_wipe_status
            .or(req.account_only_remote_wipe_status),
    };
    let new_key = PolicyKey(new_policy_key()?);
    let mut rec = Recorder::new(&session, eas, Command::Provision);
    let decision = decide_provision(rec.state(), &engine_req, new_key, rec.at(), &eas.engine);
    if !known_type && req.remote_wipe_status.is_none() && !decision.response.remote_wipe {
        // The decision is not used: nothing is recorded.
        return Ok(ProvisionResponse {
            status: ProvisionStatus::Success,
            device_information_status,
            policy: Some(PolicyResponse {
                policy_type: wanted_type,
                status: PolicyStatus::UnknownPolicyType,
                policy_key: None,
                data: None,
            }),
            remote_wipe: false,
            account_only_remote_wipe: false,
        });
    }
    let input = DecisionInput::Provision {
        request: engine_req,
        new_key,
    };
    let r = rec.decided(input, decision);
    session.commit_request(rec).await.map_err(session_error)?;
    let policy = r.policy_status.map(|status| PolicyResponse {
        policy_type: wanted_type.clone(),
        status: PolicyStatus::from_code(status.into()),
        policy_key: r.policy_key.map(|k| k.0),
        data: r
            .include_policy
            .then(|| PolicyData::EasProvisionDoc(eas.policy.clone())),
    });
    Ok(ProvisionResponse {
        status: ProvisionStatus::from_code(r.status.into()),
        device_information_status,
        policy,
        remote_wipe: r.remote_wipe,
        account_only_remote_wipe: false,
    })
}

/// A fresh non-zero policy key (0 means "no key" on the wire).
fn new_policy_key() -> Result<u32, CommandError> {
    loop {
        let k = getrandom::u32().map_err(|e| CommandError::BackendFailed {
            backend: "os",
            kind: "randomness",
            reason: e.to_string(),
        })?;
        if k != 0 {
            return Ok(k);
        }
    }
}
