//! `handle_folder_create` ([MS-ASCMD] 2.2.1.3): a new IMAP mail folder
//! (created and subscribed; an existing unsubscribed one is subscribed).
//! The shared IMAP + engine steps are in `folder_sync::folder_op`; this
//! module only maps the request and the answer.

use opush_engine::{FolderOp, FolderType, SyncKey};
use opush_protocol::commands::folder_create::{FolderCreateRequest, FolderCreateResponse};
use opush_protocol::commands::{ServerId as WireServerId, SyncKey as WireKey};
use opush_protocol::query::Command;
use opush_protocol::status::FolderCreateStatus;
use opush_protocol::wbxml::encode_to_vec;

use super::folder_sync::{folder_op, parent_of};
use super::{CommandContext, CommandError, EasResponse};
use crate::session::{Caller, EasServices};

/// Handles `Cmd=FolderCreate`.
pub async fn handle_folder_create(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::FolderCreate, FolderCreateRequest::from_element)?;
    let res = folder_create(&req, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// FolderCreate without HTTP.
pub async fn folder_create(
    req: &FolderCreateRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<FolderCreateResponse, CommandError> {
    let fail = |status: u16| FolderCreateResponse {
        status: FolderCreateStatus::from_code(status),
        sync_key: None,
        server_id: None,
    };
    let Some(sync_key) = SyncKey::parse(&req.sync_key.0) else {
        return Ok(fail(9));
    };
    let Ok(parent) = parent_of(&req.parent_id.0) else {
        return Ok(fail(5));
    };
    // Only mail folders live in IMAP.
    let folder_type = match FolderType::from_code(req.folder_type) {
        Some(FolderType::UserMail | FolderType::UserGeneric) => FolderType::UserMail,
        _ => return Ok(fail(10)),
    };
    let op = FolderOp::Create {
        sync_key,
        parent,
        name: req.display_name.clone(),
        folder_type,
    };
    let r = folder_op(&op, caller, eas).await?;
    Ok(FolderCreateResponse {
        status: FolderCreateStatus::from_code(r.status.into()),
        sync_key: r.sync_key.map(|k| WireKey(k.0.to_string())),
        server_id: r.server_id.map(|id| WireServerId(id.to_string())),
    })
}
