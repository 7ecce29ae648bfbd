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
    decide_folder_sync, BackendFolder, BackendFolderId, DecisionInput, Event, FolderChange,
    FolderType, SyncKey,
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
use crate::session::{imap_error, session_error, Caller, EasServices};

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
    let req = ctx.request(Command::FolderSync, FolderSyncRequest::from_element)?;
    let res = folder_sync(&req, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// FolderSync without HTTP: observe IMAP, decide, record, answer.
pub async fn folder_sync(
    req: &FolderSyncRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<FolderSyncResponse, CommandError> {
    let Some(key) = SyncKey::parse(&req.sync_key.0) else {
        return Ok(status_only(FolderSyncStatus::InvalidSyncKey));
    };
    let folders = {
        let mut imap = eas.imap_for(caller).await?;
        // A device's first hierarchy: its initial Syncs follow at once.
        if key == SyncKey::ZERO {
            super::sync::prewarm_initial_sync(caller, eas);
        }
        imap.list_folders(false).await.map_err(imap_error)?
    };
    let observed = backend_folders(&folders);
    let (mut session, mut rec) = eas.open_recorded(caller, Command::FolderSync).await?;
    let known = session
        .state()
        .hierarchy
        .folders
        .iter()
        .map(|(id, f)| (id, &f.name, &f.parent, f.folder_type));
    // Record the listing only when it differs from what the log already says.
    if known.ne(observed_sorted(&observed)) {
        rec.observed(Event::HierarchyObserved { folders: observed });
    }
    // Decide on the state as it is once the observation is recorded.
    let decision = decide_folder_sync(rec.state(), key);
    let r = rec.decided(DecisionInput::FolderSync { sync_key: key }, decision);
    session.commit_request(rec).await.map_err(session_error)?;
    if r.status != 1 {
        return Ok(status_only(FolderSyncStatus::from_code(r.status.into())));
    }
    crate::obs::summary::folder_sync(&r.changes);
    Ok(FolderSyncResponse {
        status: FolderSyncStatus::Success,
        sync_key: r.sync_key.map(|k| WireSyncKey(k.0.to_string())),
        changes: Some(r.changes.iter().map(wire_change).collect()),
    })
}

/// Whether `observed` (from [`backend_folders`]) differs from the folders
/// the device's log last recorded: a FolderSync would record a new
/// `HierarchyObserved` (Ping uses it to answer Status 7).
pub(crate) fn differs_from_log(
    state: &opush_engine::DeviceState,
    observed: &[BackendFolder],
) -> bool {
    let known = state
        .hierarchy
        .folders
        .iter()
        .map(|(id, f)| (id, &f.name, &f.parent, f.folder_type));
    known.ne(observed_sorted(observed))
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

/// Carries out a FolderCreate/Delete/Update on IMAP and records it:
/// the hierarchy is observed first (so the engine validates against what
/// IMAP has now), then `engine::plan_folder_op` / `decide_folder_op`.
pub(crate) async fn folder_op(
    op: &opush_engine::FolderOp,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<opush_engine::FolderOpResponse, CommandError> {
    use opush_engine::{decide_folder_op, plan_folder_op, FolderEffect, FolderOutcome};
    // The device's lease first: the listing and the change are then this
    // request's alone among the opush processes on the store.
    let (mut session, lease, mut rec) = eas.open_leased(caller, folder_command(op)).await?;
    let mut imap = eas.imap_for(caller).await?;
    let listed = imap.list_folders(false).await.map_err(imap_error)?;
    rec.observed(Event::HierarchyObserved {
        folders: backend_folders(&listed),
    });
    let effect = match plan_folder_op(rec.state(), op) {
        Ok(effect) => effect,
        Err(res) => {
            let input = DecisionInput::FolderOp {
                op: op.clone(),
                outcome: None,
            };
            let res = rec.decided(
                input,
                opush_engine::Decision {
                    response: res,
                    events: Vec::new(),
                },
            );
            session.commit_request(rec).await.map_err(session_error)?;
            lease.release().await;
            return Ok(res);
        }
    };
    let raw_under = |parent: &Option<BackendFolderId>, name: &str| match parent
        .as_ref()
        .and_then(|p| listed.iter().find(|f| f.raw_name == p.0))
    {
        Some(p) => p.child_raw_name(name),
        None => crate::backends::imap::utf7::encode(name),
    };
    let outcome = match &effect {
        FolderEffect::Create { parent, name, .. } => {
            let raw = raw_under(parent, name);
            let exists = listed.iter().any(|f| f.raw_name == raw);
            let done = if exists {
                // An existing but unsubscribed folder is subscribed.
                imap.subscribe(&raw).await
            } else {
                match imap.create_folder(&raw).await {
                    Ok(()) => imap.subscribe(&raw).await,
                    Err(e) => Err(e),
                }
            };
            finish(&mut imap, done, &raw).await
        }
        FolderEffect::Delete { folder } => match imap.delete_folder(&folder.0).await {
            Ok(()) => FolderOutcome::Done(None),
            Err(_) => FolderOutcome::Failed,
        },
        FolderEffect::Update {
            folder,
            parent,
            name,
        } => {
            let raw = raw_under(parent, name);
            // Its subfolders move with it, and their subscriptions must too.
            let below: Vec<String> = listed
                .iter()
                .find(|f| f.raw_name == folder.0)
                .and_then(|f| f.delimiter)
                .map(|d| {
                    let prefix = format!("{}{d}", folder.0);
                    listed
                        .iter()
                        .filter(|f| f.subscribed && f.raw_name.starts_with(&prefix))
                        .map(|f| f.raw_name.clone())
                        .collect()
                })
                .unwrap_or_default();
            let done = imap.rename_folder(&folder.0, &raw, &below).await;
            finish(&mut imap, done, &raw).await
        }
    };
    // The conversation rules of opush's Sieve script follow the folder.
    let followed = match (&outcome, &effect) {
        (
            FolderOutcome::Done(_),
            FolderEffect::Update {
                folder,
                parent,
                name,
            },
        ) => Some((folder, Some(raw_under(parent, name)))),
        (FolderOutcome::Done(_), FolderEffect::Delete { folder }) => Some((folder, None)),
        _ => None,
    };
    if let Some((folder, new)) = followed {
        let delimiter = listed
            .iter()
            .find(|f| f.raw_name == folder.0)
            .and_then(|f| f.delimiter);
        refile_conversations(caller, eas, (&folder.0, new.as_deref(), delimiter)).await;
    }
    let decision = decide_folder_op(rec.state(), op, &outcome);
    let input = DecisionInput::FolderOp {
        op: op.clone(),
        outcome: Some(outcome),
    };
    let res = rec.decided(input, decision);
    session.commit_request(rec).await.map_err(session_error)?;
    lease.release().await;
    Ok(res)
}

/// After folder `old` (raw IMAP name) was renamed to `new` or deleted
/// (`None`): the conversation rules filing into it follow
/// (`oof::refile_conversations`), when `[sieve]` is on. The folder
/// operation is done whatever happens here: a failure is logged, and the
/// later messages of those conversations go to INBOX until the device
/// moves the conversation again.
async fn refile_conversations(
    caller: &Caller<'_>,
    eas: &EasServices,
    (old, new, delimiter): (&str, Option<&str>, Option<char>),
) {
    let Some(sieve) = &eas.oof.sieve else {
        return;
    };
    let (old, new) = (
        crate::oof::sieve_folder(old),
        new.map(crate::oof::sieve_folder),
    );
    let owner = super::settings::script_owner(caller, eas);
    let to = (old.as_str(), new.as_deref(), delimiter);
    match crate::oof::refile_conversations(&eas.oof, sieve, &owner.login(), to, &owner.addresses)
        .await
    {
        Ok(true) => {
            tracing::info!(target: "MAIL.DATA", folder = %old, "conversation rules follow the folder")
        }
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(target: "MAIL.DATA", folder = %old, error = %e, "conversation rules not updated for the folder")
        }
    }
}

/// The wire command of a folder operation.
fn folder_command(op: &opush_engine::FolderOp) -> Command {
    match op {
        opush_engine::FolderOp::Create { .. } => Command::FolderCreate,
        opush_engine::FolderOp::Delete { .. } => Command::FolderDelete,
        opush_engine::FolderOp::Update { .. } => Command::FolderUpdate,
    }
}

/// The folder as IMAP lists it after a create/rename.
async fn finish(
    imap: &mut crate::backends::imap::PooledSession,
    done: Result<(), crate::backends::imap::ImapError>,
    raw: &str,
) -> opush_engine::FolderOutcome {
    if done.is_err() {
        return opush_engine::FolderOutcome::Failed;
    }
    match imap.list_folders(false).await {
        Ok(list) => match backend_folders(&list).into_iter().find(|f| f.id.0 == raw) {
            Some(f) => opush_engine::FolderOutcome::Done(Some(f)),
            None => opush_engine::FolderOutcome::Failed,
        },
        Err(_) => opush_engine::FolderOutcome::Failed,
    }
}

/// A ParentId: `"0"` is the root; `Err` when it is not a folder id.
pub(crate) fn parent_of(id: &str) -> Result<Option<opush_engine::CollectionId>, ()> {
    if id == "0" || id.is_empty() {
        return Ok(None);
    }
    opush_engine::CollectionId::parse(id).map(Some).ok_or(())
}
