//! `handle_folder_delete` ([MS-ASCMD] 2.2.1.4): deletes an IMAP folder
//! (special folders are refused by the engine). The shared IMAP + engine
//! steps are in `folder_sync::folder_op`.

use opush_engine::{CollectionId, FolderOp, SyncKey};
use opush_protocol::commands::folder_delete::{FolderDeleteRequest, FolderDeleteResponse};
use opush_protocol::commands::SyncKey as WireKey;
use opush_protocol::query::Command;
use opush_protocol::status::FolderDeleteStatus;
use opush_protocol::wbxml::encode_to_vec;

use super::folder_sync::folder_op;
use super::{CommandContext, CommandError, EasResponse};
use crate::session::{Caller, EasServices};

/// Handles `Cmd=FolderDelete`.
pub async fn handle_folder_delete(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::FolderDelete, FolderDeleteRequest::from_element)?;
    let res = folder_delete(&req, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// FolderDelete without HTTP.
pub async fn folder_delete(
    req: &FolderDeleteRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<FolderDeleteResponse, CommandError> {
    let fail = |status: u16| FolderDeleteResponse {
        status: FolderDeleteStatus::from_code(status),
        sync_key: None,
    };
    let Some(sync_key) = SyncKey::parse(&req.sync_key.0) else {
        return Ok(fail(9));
    };
    let Some(id) = CollectionId::parse(&req.server_id.0) else {
        return Ok(fail(4));
    };
    let r = folder_op(&FolderOp::Delete { sync_key, id }, caller, eas).await?;
    Ok(FolderDeleteResponse {
        status: FolderDeleteStatus::from_code(r.status.into()),
        sync_key: r.sync_key.map(|k| WireKey(k.0.to_string())),
    })
}
