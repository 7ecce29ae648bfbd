//! `handle_folder_sync`: the mail folder hierarchy from IMAP LIST with
//! SPECIAL-USE (configured Drafts/Sent/Trash names as fallback, INBOX
//! fixed), observed, diffed by `engine::decide_folder_sync`, recorded, then
//! rendered ([MS-ASCMD] 2.2.1.5).
//!
//! This module maps IMAP folders to backend folders and engine changes to
//! wire changes; it must not decide which changes a device gets nor assign
//! folder ids (the engine does both). Users without a Sent (or any special)
//! folder simply get no such folder.

use opush_engine::{
    decide_folder_sync, BackendFolder, BackendFolderId, Event, FolderChange, FolderType, SyncKey,
};
use opush_protocol::commands::folder_sync::{
    Folder as WireFolder, FolderChange as WireChange, FolderSyncRequest, FolderSyncResponse,
};
use opush_protocol::commands::{ServerId as WireServerId, SyncKey as WireSyncKey};
use opush_protocol::query::Command;
use opush_protocol::status::FolderSyncStatus;
use opush_protocol::wbxml::encode_to_vec;

use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::{Folder as ImapFolder, SpecialUse};
use crate::session::{device_key, imap_error, session_error, EasServices};

/// The folders a device sees: selectable, and subscribed unless special
/// (INBOX and the special folders are always shown).
pub fn backend_folders(list: &[ImapFolder]) -> Vec<BackendFolder> {
    let shown: Vec<&ImapFolder> = list
        .iter()
        .filter(|f| f.selectable && (f.subscribed || f.special.is_some()))
        .collect();
    shown
        .iter()
        .map(|f| BackendFolder {
            id: BackendFolderId(f.raw_name.clone()),
            name: f.leaf_name().to_owned(),
            parent: f
                .parent
                .as_ref()
                .filter(|p| shown.iter().any(|s| &s.raw_name == *p))
                .map(|p| BackendFolderId(p.clone())),
            folder_type: folder_type(f.special),
        })
        .collect()
}

/// The EAS Type of a mail folder.
pub fn folder_type(special: Option<SpecialUse>) -> FolderType {
    match special {
        Some(SpecialUse::Inbox) => FolderType::Inbox,
        Some(SpecialUse::Drafts) => FolderType::Drafts,
        Some(SpecialUse::Sent) => FolderType::SentItems,
        Some(SpecialUse::Trash) => FolderType::DeletedItems,
        Some(SpecialUse::Junk | SpecialUse::Archive) | None => FolderType::UserMail,
    }
}

/// Handles `Cmd=FolderSync`.
pub async fn handle_folder_sync(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let invalid = |reason: String| CommandError::InvalidRequest {
        command: Command::FolderSync,
        reason,
    };
    let doc = ctx
        .document
        .ok_or_else(|| invalid("empty body".to_owned()))?;
    let req =
        FolderSyncRequest::from_element(doc, ctx.version).map_err(|e| invalid(e.to_string()))?;
    let res = folder_sync(&req, &ctx.user.user, &ctx.request.device_id, eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// FolderSync without HTTP: observe IMAP, decide, record, answer.
pub async fn folder_sync(
    req: &FolderSyncRequest,
    user: &str,
    device_id: &str,
    eas: &EasServices,
) -> Result<FolderSyncResponse, CommandError> {
    let Some(key) = SyncKey::parse(&req.sync_key.0) else {
        return Ok(status_only(FolderSyncStatus::InvalidSyncKey));
    };
    let folders = {
        let mut imap = eas.imap.get_master(user).await.map_err(imap_error)?;
        imap.list_folders(false).await.map_err(imap_error)?
    };
    let observed = backend_folders(&folders);
    let mut session = eas
        .sessions
        .open(device_key(user, device_id)?)
        .await
        .map_err(session_error)?;
    let mut events = Vec::new();
    let known = session
        .state()
        .hierarchy
        .folders
        .iter()
        .map(|(id, f)| (id, &f.name, &f.parent, f.folder_type));
    // Record the listing only when it differs from what the log already says.
    if known.ne(observed_sorted(&observed)) {
        events.push(Event::HierarchyObserved { folders: observed });
    }
    // Decide on the state as it will be once the observation is recorded.
    let mut state = session.state().clone();
    opush_engine::fold(&mut state, &events);
    let decision = decide_folder_sync(&state, key);
    events.extend(decision.events);
    session.commit(&events).await.map_err(session_error)?;
    let r = decision.response;
    if r.status != 1 {
        return Ok(status_only(FolderSyncStatus::from_code(r.status.into())));
    }
    Ok(FolderSyncResponse {
        status: FolderSyncStatus::Success,
        sync_key: r.sync_key.map(|k| WireSyncKey(k.0.to_string())),
        changes: Some(r.changes.iter().map(wire_change).collect()),
    })
}

fn observed_sorted(
    list: &[BackendFolder],
) -> Vec<(
    &BackendFolderId,
    &String,
    &Option<BackendFolderId>,
    FolderType,
)> {
    let mut v: Vec<_> = list
        .iter()
        .map(|f| (&f.id, &f.name, &f.parent, f.folder_type))
        .collect();
    v.sort_by(|a, b| a.0.cmp(b.0));
    v
}

fn status_only(status: FolderSyncStatus) -> FolderSyncResponse {
    FolderSyncResponse {
        status,
        sync_key: None,
        changes: None,
    }
}

/// An engine folder change as the wire carries it.
pub fn wire_change(change: &FolderChange) -> WireChange {
    let folder = |id: &opush_engine::CollectionId,
                  parent: &Option<opush_engine::CollectionId>,
                  name: &str,
                  t: FolderType| WireFolder {
        server_id: WireServerId(id.to_string()),
        parent_id: WireServerId(parent.map_or_else(|| "0".to_owned(), |p| p.to_string())),
        display_name: name.to_owned(),
        folder_type: t.code(),
    };
    match change {
        FolderChange::Add {
            id,
            parent,
            name,
            folder_type,
        } => WireChange::Add(folder(id, parent, name, *folder_type)),
        FolderChange::Update {
            id,
            parent,
            name,
            folder_type,
        } => WireChange::Update(folder(id, parent, name, *folder_type)),
        FolderChange::Delete { id } => WireChange::Delete(WireServerId(id.to_string())),
    }
}
