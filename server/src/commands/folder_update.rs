//! `handle_folder_update` ([MS-ASCMD] 2.2.1.6): renames and/or moves an
//! IMAP folder (the new name is subscribed). The shared IMAP + engine steps
//! are in `folder_sync::folder_op`.

use opush_engine::{CollectionId, FolderOp, SyncKey};
use opush_protocol::commands::folder_update::{FolderUpdateRequest, FolderUpdateResponse};
use opush_protocol::commands::SyncKey as WireKey;
use opush_protocol::query::Command;
use opush_protocol::status::FolderUpdateStatus;
use opush_protocol::wbxml::encode_to_vec;

use super::folder_sync::{folder_op, parent_of};
use super::{CommandContext, CommandError, EasResponse};
use crate::session::{Caller, EasServices};

/// Handles `Cmd=FolderUpdate`.
pub async fn handle_folder_update(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::FolderUpdate, FolderUpdateRequest::from_element)?;
    let res = folder_update(&req, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// FolderUpdate without HTTP.
pub async fn folder_update(
    req: &FolderUpdateRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<FolderUpdateResponse, CommandError> {
    let fail = |status: u16| FolderUpdateResponse {
        status: FolderUpdateStatus::from_code(status),
        sync_key: None,
    };
    let Some(sync_key) = SyncKey::parse(&req.sync_key.0) else {
        return Ok(fail(9));
    };
    let Some(id) = CollectionId::parse(&req.server_id.0) else {
        return Ok(fail(4));
    };
    let Ok(parent) = parent_of(&req.parent_id.0) else {
        return Ok(fail(5));
    };
    let op = FolderOp::Update {
        sync_key,
        id,
        parent,
        name: req.display_name.clone(),
    };
    let r = folder_op(&op, caller, eas).await?;
    Ok(FolderUpdateResponse {
        status: FolderUpdateStatus::from_code(r.status.into()),
        sync_key: r.sync_key.map(|k| WireKey(k.0.to_string())),
    })
}
