//! `handle_get_attachment` ([MS-ASCMD] 2.2.1.8, 12.1 and older): the raw
//! bytes of the attachment named by `AttachmentName`, which is the
//! FileReference a Sync listed.
//!
//! The bytes are streamed from IMAP as they go out
//! ([`super::attachment`]): the message is read twice, a chunk at a time
//! (each on a pooled connection taken for it alone), never held. Read-only: nothing is recorded. A name that is not a
//! FileReference at all is a bad request (HTTP 400, the reason in the
//! log); a well-formed reference to an attachment that is not there (any
//! more) is HTTP 500 with no body, which is what the protocol specifies
//! for a failed GetAttachment (MS-ASCMD 2.2.1.8), logged with its reason;
//! a backend outage is a retryable error. An IMAP failure once the answer
//! has begun closes the connection (fewer bytes than `Content-Length`).

use opush_protocol::commands::get_attachment::GetAttachmentRequest;
use opush_protocol::query::Command;
use opush_protocol::version::ProtocolVersion;

use super::attachment::{self, Located, Piece, Segment, Source};
use super::{CommandContext, CommandError, EasResponse, Tail};
use crate::backends::imap::ImapError;
use crate::email::{AttachmentContent, FileReference};
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
    let found = planned(&req.attachment_name, &ctx.caller(), eas).await?;
    let Some((source, piece)) = found else {
        tracing::info!(
            attachment = %fref,
            "GetAttachment of an attachment that is not there: HTTP 500 (MS-ASCMD 2.2.1.8)"
        );
        return Ok(EasResponse {
            http_status: 500,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
            tail: None,
        });
    };
    let content_type = piece.place.content_type.clone();
    let len = piece.len();
    Ok(EasResponse {
        http_status: 200,
        content_type: None,
        headers: vec![("Content-Type", content_type)],
        body: Vec::new(),
        tail: Some(Tail::new(
            len,
            attachment::stream(source, vec![Segment::Piece(piece)]),
        )),
    })
}

/// The attachment named by a FileReference, read whole; `None` when there
/// is none. (The HTTP handler streams it instead.)
pub async fn get_attachment(
    attachment_name: &str,
    _version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<Option<AttachmentContent>, CommandError> {
    let Some((source, piece)) = planned(attachment_name, caller, eas).await? else {
        return Ok(None);
    };
    let content_type = piece.place.content_type.clone();
    let data = attachment::read_all(source, piece).await?;
    Ok(Some(AttachmentContent { content_type, data }))
}

/// The first pass: the attachment to stream, and where its chunks' IMAP
/// connections come from (the first pass's goes back to the pool).
async fn planned(
    attachment_name: &str,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<Option<(Source, Piece)>, CommandError> {
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
    let Some((uidvalidity, _)) = super::sync::uid_of(&id) else {
        return Ok(None);
    };
    let mut imap = eas.imap_for(caller).await?;
    let Some(uid) = super::item_operations::still_there(&mut imap, &raw, &id).await? else {
        return Ok(None);
    };
    let limit = imap.config().max_message_bytes;
    let place = match attachment::locate(&mut imap, &raw, uid, fref.index, limit).await {
        Ok(Located::Found(place)) => place,
        Ok(Located::NoAttachment) => return Ok(None),
        Err(e) if e.is_retryable() => return Err(imap_error(e)),
        Err(ImapError::TooLarge { .. }) | Err(_) => return Ok(None),
    };
    drop(imap);
    let take = place.size;
    Ok(Some((
        Source::of(eas, caller),
        Piece {
            raw,
            uidvalidity,
            uid,
            place,
            skip: 0,
            take,
            base64: false,
        },
    )))
}
