//! `handle_get_attachment` ([MS-ASCMD] 2.2.1.8, 12.1 and older): the raw
//! bytes of the attachment named by `AttachmentName`, which is the
//! FileReference a Sync listed.
//!
//! Read-only: nothing is recorded. A name that is not a FileReference at
//! all is a bad request (HTTP 400, the reason in the log); a well-formed
//! reference to an attachment that is not there (any more) is HTTP 500 with
//! no body, which is what the protocol specifies for a failed GetAttachment
//! (MS-ASCMD 2.2.1.8), logged with its reason; a backend outage is a
//! retryable error.

use opush_protocol::commands::get_attachment::GetAttachmentRequest;
use opush_protocol::query::Command;
use opush_protocol::version::ProtocolVersion;

use super::{CommandContext, CommandError, EasResponse};
use crate::email::{attachment_content, AttachmentContent, FileReference};
use crate::session::{imap_error, Caller, EasServices};

/// Handles `Cmd=GetAttachment`.
pub async fn handle_get_attachment(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = GetAttachmentRequest::from_request_line(ctx.request, ctx.version).map_err(|e| {
        CommandError::InvalidRequest {
            command: Command::GetAttachment,
            reason: e.to_string(),
        }
    })?;
    let malformed = |what: &str| CommandError::InvalidRequest {
        command: Command::GetAttachment,
        reason: format!("AttachmentName is not a FileReference ({what})"),
    };
    let fref = FileReference::parse(&req.attachment_name)
        .ok_or_else(|| malformed("collection:item:attachment expected"))?;
    if opush_engine::ServerId::parse(&fref.server_id).is_none() {
        return Err(malformed("bad item id"));
    }
    let found = get_attachment(&req.attachment_name, ctx.version, &ctx.caller(), eas).await?;
    if found.is_none() {
        tracing::info!(
            attachment = %fref,
            "GetAttachment of an attachment that is not there: HTTP 500 (MS-ASCMD 2.2.1.8)"
        );
    }
    Ok(match found {
        Some(att) => EasResponse {
            http_status: 200,
            content_type: None,
            headers: vec![("Content-Type", att.content_type)],
            body: att.data,
        },
        None => EasResponse {
            http_status: 500,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
        },
    })
}

/// The attachment named by a FileReference, `None` when there is none.
pub async fn get_attachment(
    attachment_name: &str,
    _version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<Option<AttachmentContent>, CommandError> {
    let Some(fref) = FileReference::parse(attachment_name) else {
        return Ok(None);
    };
    let state = eas.device_state(caller).await?;
    let Some(sid) = opush_engine::ServerId::parse(&fref.server_id) else {
        return Ok(None);
    };
    let raw = state
        .hierarchy
        .ids
        .get(&sid.collection)
        .map(|b| b.0.clone());
    let id = state
        .collections
        .get(&sid.collection)
        .and_then(|c| c.by_n.get(&sid.n))
        .cloned();
    let (Some(raw), Some(id)) = (raw, id) else {
        return Ok(None);
    };
    let mut imap = eas.imap_for(caller).await?;
    let Some(uid) = super::item_operations::still_there(&mut imap, &raw, &id).await? else {
        return Ok(None);
    };
    let limit = imap.config().max_message_bytes;
    let bytes = match imap.fetch_message(&raw, uid, limit).await {
        Ok(b) => b,
        Err(e) if e.is_retryable() => return Err(imap_error(e)),
        Err(_) => return Ok(None),
    };
    Ok(attachment_content(&bytes, fref.index))
}
