//! `handle_item_operations` ([MS-ASCMD] 2.2.1.10) for the mailbox store:
//! Fetch of a whole message by ServerId (or LongId), Fetch of an attachment by
//! FileReference (with an optional byte `Range`), EmptyFolderContents
//! (with `DeleteSubFolders`, the subfolders too, special folders spared;
//! never a folder created again under the name of the one the device
//! synced: its UIDVALIDITY is checked) and the conversation `Move` (14.0+).
//!
//! Content is read from IMAP at request time and never stored. An
//! attachment is streamed from IMAP as the answer goes out
//! ([`super::attachment`]: its message read twice a chunk at a time, each
//! chunk on a pooled connection taken for it alone, never held): inline, base64 in `Data` (the WBXML `Data` is an inline string,
//! so its bytes follow the WBXML before it as they come), or, when the
//! device accepts it (`MS-ASAcceptMultiPart: T` or `AcceptMultiPart=T`),
//! as a raw part of the multipart answer ([MS-ASCMD] 2.2.1.10.1.1), the
//! `Data` replaced by `Part`. A whole message's Fetch is built in memory
//! and stays in the WBXML part; a large one's (`sync::large_above`) is
//! rendered from its skeleton, and its whole MIME body (BodyPreference
//! Type 4), when it is UTF-8 without NUL, streams from IMAP into its
//! inline `Data` (an inline string: its length is the message's size)
//! in both forms of answer; any other MIME body of a large message is
//! read only as far as it is sent (its TruncationSize, at most `[imap]
//! max_message_bytes`, Truncated past it). Document libraries answer a clean failure
//! status, never an error. One answer holds about `[devices]
//! max_window_bytes` of fetched messages: past it, the other Fetches of
//! the request are answered DataTooLarge (the first is always served
//! whole); streamed attachments are not counted, never being held.

use opush_engine::{BackendItemId, DeviceState, ServerId};
use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::commands::item_operations::{
    FetchTarget, ItemOperationsRequest, ItemOperationsResponse, Operation, OperationResult,
};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::query::Command;
use opush_protocol::status::ItemOperationsStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::tags::{airsyncbase as asb, itemoperations as io};
use opush_protocol::wbxml::{encode_to_vec, Element};

use super::attachment::{self, Located, Piece, Segment, Source};
use super::sync::{full_email_checked, uid_of};
use super::{CommandContext, CommandError, EasResponse, Tail};
use crate::backends::imap::{Folder as ImapFolder, ImapError, PooledSession};
use crate::email::transfer::Encoding;
use crate::email::{AttachmentPlace, FileReference};
use crate::session::{imap_error, Caller, EasServices};

/// Handles `Cmd=ItemOperations`.
pub async fn handle_item_operations(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::ItemOperations, ItemOperationsRequest::from_element)?;
    let multipart = ctx.accept_multi_part;
    let planned = plan(&req, ctx.version, &ctx.caller(), eas, multipart).await?;
    let wbxml = encode_to_vec(&planned.response.to_element(ctx.version));
    let engine_error = |reason: String| CommandError::BackendFailed {
        backend: "engine",
        kind: "protocol",
        reason,
    };
    // Each inline `Data` (an attachment's, a large message's MIME body) is
    // a marker in the WBXML: the bytes before it go first, its content
    // streams in its place.
    let mime: Vec<(String, Piece)> = planned
        .mime
        .into_iter()
        .enumerate()
        .map(|(i, p)| (mime_marker(i), p))
        .collect();
    let (body, segments) = if multipart {
        let (first, mut segments) = split_at_markers(&wbxml, mime).map_err(engine_error)?;
        let part0 = first.len() as u64 + segments.iter().map(Segment::len).sum::<u64>();
        let mut lengths = vec![part0];
        lengths.extend(planned.pieces.iter().map(Piece::len));
        let mut body =
            opush_protocol::multipart::head(&lengths).map_err(|e| engine_error(e.to_string()))?;
        body.extend_from_slice(&first);
        segments.extend(planned.pieces.into_iter().map(Segment::Piece));
        (body, segments)
    } else {
        let mut marked: Vec<(String, Piece)> = planned
            .pieces
            .into_iter()
            .enumerate()
            .map(|(i, p)| (marker(i), p))
            .collect();
        marked.extend(mime);
        split_at_markers(&wbxml, marked).map_err(engine_error)?
    };
    let tail = if segments.is_empty() {
        None
    } else {
        let len = segments.iter().map(Segment::len).sum();
        let source = Source::of(eas, &ctx.caller());
        Some(Tail::new(len, attachment::stream(source, segments)))
    };
    Ok(EasResponse {
        http_status: 200,
        content_type: Some(if multipart {
            opush_protocol::multipart::CONTENT_TYPE_MULTIPART
        } else {
            opush_protocol::headers::CONTENT_TYPE_WBXML
        }),
        headers: Vec::new(),
        body,
        tail,
    })
}

/// The text standing in an inline `Data` for the `i`th attachment until
/// it is streamed (U+FFFF is no character any text holds).
fn marker(i: usize) -> String {
    format!("\u{FFFF}opush-data-{i}\u{FFFF}")
}

/// The text standing in the `Data` of the `i`th large message's MIME body
/// until it is streamed.
fn mime_marker(i: usize) -> String {
    format!("\u{FFFF}opush-mime-{i}\u{FFFF}")
}

/// `wbxml` cut at each marker of `marked` (in the order they appear in
/// it): its bytes up to the first, then what follows, each piece in
/// place of its marker.
fn split_at_markers(
    wbxml: &[u8],
    marked: Vec<(String, Piece)>,
) -> Result<(Vec<u8>, Vec<Segment>), String> {
    let mut found = Vec::with_capacity(marked.len());
    for (mark, piece) in marked {
        let at = memchr::memmem::find(wbxml, mark.as_bytes())
            .ok_or_else(|| "inline Data marker not found".to_owned())?;
        found.push((at, mark.len(), piece));
    }
    found.sort_by_key(|(at, _, _)| *at);
    let mut segments = Vec::with_capacity(2 * found.len() + 1);
    let mut first = None;
    let mut from = 0;
    for (at, len, piece) in found {
        let before = wbxml[from..at].to_vec();
        match first {
            None => first = Some(before),
            Some(_) => segments.push(Segment::Bytes(before)),
        }
        segments.push(Segment::Piece(piece));
        from = at + len;
    }
    let rest = wbxml[from..].to_vec();
    Ok(match first {
        None => (rest, segments),
        Some(first) => {
            segments.push(Segment::Bytes(rest));
            (first, segments)
        }
    })
}

/// An answer whose attachments are still to be read.
struct Planned {
    response: ItemOperationsResponse,
    /// The attachments, in the order of their `Data` (or `Part` 1, 2…).
    pieces: Vec<Piece>,
    /// The large messages whose MIME body streams in their `Data`
    /// ([`mime_marker`]), in both forms of answer.
    mime: Vec<Piece>,
    /// For each piece, the index of its Fetch result.
    results: Vec<usize>,
}

/// ItemOperations without HTTP: the attachments read whole, base64 in
/// their `Data`.
pub async fn item_operations(
    req: &ItemOperationsRequest,
    version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<ItemOperationsResponse, CommandError> {
    let planned = plan(req, version, caller, eas, false).await?;
    let mut response = planned.response;
    let source = Source::of(eas, caller);
    for (i, (piece, result)) in planned.pieces.into_iter().zip(planned.results).enumerate() {
        let data = attachment::read_all(source.clone(), piece).await?;
        let mark = marker(i);
        if let Some(OperationResult::Fetch {
            properties: Some(ApplicationData::Properties(props)),
            ..
        }) = response.results.get_mut(result)
        {
            for p in props.iter_mut() {
                if p.tag == io::DATA && p.text() == Some(mark.as_str()) {
                    *p = Element::with_text(
                        io::DATA,
                        String::from_utf8(data.clone()).unwrap_or_default(),
                    );
                }
            }
        }
    }
    for (i, piece) in planned.mime.into_iter().enumerate() {
        let data = attachment::read_all(source.clone(), piece).await?;
        let mark = mime_marker(i);
        for result in response.results.iter_mut() {
            if let OperationResult::Fetch {
                properties: Some(ApplicationData::Email(email)),
                ..
            } = result
            {
                if let Some(body) = email.body.as_mut() {
                    if body.data.as_deref() == Some(mark.as_str()) {
                        body.data = Some(String::from_utf8_lossy(&data).into_owned());
                    }
                }
            }
        }
    }
    Ok(response)
}

/// The answer, its attachments left to read: with `multipart`, each
/// attachment's `Data` is a `Part`, else a marker ([`marker`]).
async fn plan(
    req: &ItemOperationsRequest,
    version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
    multipart: bool,
) -> Result<Planned, CommandError> {
    // The state is looked at, nothing is recorded. A Move or an
    // EmptyFolderContents changes the mailbox: it holds the device's
    // session and lease (no other opush process carries out this device's
    // changes meanwhile) until the end.
    let effects = req.operations.iter().any(|op| {
        matches!(
            op,
            Operation::Move { .. } | Operation::EmptyFolderContents { .. }
        )
    });
    let (state, held) = if effects {
        let mut session = eas
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(crate::session::session_error)?;
        let lease = session.lease().await?;
        (session.shared_state(), Some((session, lease)))
    } else {
        (eas.device_state(caller).await?, None)
    };
    let mut imap = eas.imap_for(caller).await?;
    let mut results = Vec::with_capacity(req.operations.len());
    // Bytes of fetched content in the answer so far: past the budget, the
    // other Fetches are answered DataTooLarge (the device asks again for
    // them), so a request repeating one Fetch cannot make an answer of
    // gigabytes. The first Fetch is always served whole.
    let budget = eas.engine.max_window_bytes;
    let mut fetched: u64 = 0;
    let mut refused = 0usize;
    let mut pieces = Vec::new();
    let mut mime = Vec::new();
    let mut piece_results = Vec::new();
    for op in &req.operations {
        results.push(match op {
            Operation::Fetch {
                store,
                target,
                options,
            } => {
                let prefs = options
                    .as_ref()
                    .map(|o| o.body_preferences.clone())
                    .unwrap_or_default();
                let range = options.as_ref().and_then(|o| o.range.clone());
                if !store.eq_ignore_ascii_case("Mailbox") {
                    fetch_result(ItemOperationsStatus::UnknownStore, target, None)
                } else if budget > 0 && fetched > budget {
                    refused += 1;
                    fetch_result(ItemOperationsStatus::DataTooLarge, target, None)
                } else {
                    let before = pieces.len();
                    let wanted = Wanted {
                        range: range.as_deref(),
                        multipart,
                        pieces: &mut pieces,
                        mime: &mut mime,
                    };
                    let result = fetch(&mut imap, &state, target, &prefs, wanted, version).await?;
                    fetched = fetched.saturating_add(fetched_bytes(&result));
                    // Streamed attachments do not count: they are never
                    // held whole.
                    for _ in &pieces[before..] {
                        piece_results.push(results.len());
                    }
                    result
                }
            }
            Operation::EmptyFolderContents {
                collection_id,
                delete_sub_folders,
            } => {
                let collection = opush_engine::CollectionId::parse(collection_id);
                let raw = collection
                    .and_then(|c| state.hierarchy.ids.get(&c))
                    .map(|b| b.0.clone());
                // The UIDVALIDITY the device's last Sync of it saw (none
                // when it never synced it). A recorded one out of IMAP's
                // range is no folder's: stale, as any other mismatch.
                let seen = collection
                    .and_then(|c| state.collections.get(&c))
                    .and_then(|c| c.validity)
                    .map(|v| u32::try_from(v).unwrap_or(0));
                let status = match raw {
                    Some(raw) => {
                        match empty_folder(&mut imap, &raw, seen, *delete_sub_folders).await {
                            Ok(Emptied::Yes) => ItemOperationsStatus::Success,
                            // Deleted and created again, or another folder
                            // renamed to its name: not the folder the
                            // device knows, and nothing was deleted.
                            Ok(Emptied::NotTheSame) => ItemOperationsStatus::ObjectNotFound,
                            Err(e) if e.is_retryable() => return Err(imap_error(e)),
                            // Deleted by another client.
                            Err(ImapError::NotFound(_)) => ItemOperationsStatus::ObjectNotFound,
                            Err(_) => ItemOperationsStatus::ServerError,
                        }
                    }
                    None => ItemOperationsStatus::ObjectNotFound,
                };
                OperationResult::EmptyFolderContents {
                    status,
                    collection_id: Some(collection_id.clone()),
                }
            }
            Operation::Move {
                conversation_id,
                dst_fld_id,
                move_always,
            } => OperationResult::Move {
                status: move_conversation(
                    &mut imap,
                    &state,
                    (conversation_id, dst_fld_id, *move_always),
                    (caller, eas),
                )
                .await?,
                conversation_id: Some(conversation_id.clone()),
            },
        });
    }
    if refused > 0 {
        tracing::warn!(
            refused,
            budget,
            "ItemOperations answer over [devices] max_window_bytes: the other Fetches are DataTooLarge"
        );
    }
    if let Some((session, lease)) = held {
        lease.release().await;
        drop(session);
    }
    crate::obs::summary::item_operations(&req.operations, &results);
    Ok(Planned {
        response: ItemOperationsResponse {
            status: ItemOperationsStatus::Success,
            results,
        },
        pieces,
        mime,
        results: piece_results,
    })
}

/// Whether [`empty_folder`] emptied the folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Emptied {
    Yes,
    /// `raw` is now another folder than the one the device synced (another
    /// UIDVALIDITY): nothing deleted.
    NotTheSame,
}

/// [MS-ASCMD] 2.2.3.58 EmptyFolderContents: every message of `raw` is
/// deleted (expunged: the device empties a folder, Deleted Items mostly,
/// it does not move its contents) and, with `DeleteSubFolders`
/// (2.2.3.44), its subfolders too ([`subfolders_to_delete`]), deepest
/// first. The device learns of the folders gone at its next FolderSync
/// (the listing no longer has them). A subfolder another client deleted
/// meanwhile is no failure; any other failure to delete one is, once the
/// others were tried.
///
/// The CollectionId names the folder by its IMAP name only: when the
/// device synced it (`seen`, the UIDVALIDITY it saw) and `raw` now has
/// another (another client deleted it and created one of that name, or
/// renamed another to it), nothing is deleted, not even its subfolders:
/// the device never saw that folder's messages.
async fn empty_folder(
    imap: &mut PooledSession,
    raw: &str,
    seen: Option<u32>,
    delete_sub_folders: bool,
) -> Result<Emptied, ImapError> {
    if imap.empty_folder_of(raw, seen).await?.is_none() {
        tracing::warn!(target: "MAIL.DATA", folder = raw, "EmptyFolderContents of a folder replaced since the device synced it: nothing deleted");
        return Ok(Emptied::NotTheSame);
    }
    if !delete_sub_folders {
        return Ok(Emptied::Yes);
    }
    let listed = imap.list_folders(false).await?;
    let mut failed = None;
    for sub in subfolders_to_delete(&listed, raw) {
        match imap.delete_folder(sub).await {
            Ok(()) | Err(ImapError::NotFound(_)) => {}
            Err(e) if e.is_retryable() => return Err(e),
            Err(e) => {
                tracing::warn!(target: "MAIL.DATA", folder = sub, error = %e, "subfolder of an emptied folder not deleted");
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(Emptied::Yes), Err)
}

/// The subfolders of `raw` (at any depth) that emptying it with
/// DeleteSubFolders deletes, deepest first. A special folder (INBOX,
/// Drafts, Sent, Trash, Junk, Archive) is never one, even as a child of
/// the emptied folder (a server may put them all under INBOX): emptying
/// Deleted Items must not take the user's Sent mail with it; nor is a
/// folder holding one (it cannot go without it).
fn subfolders_to_delete<'f>(listed: &'f [ImapFolder], raw: &str) -> Vec<&'f str> {
    let below = |f: &ImapFolder| {
        f.delimiter.is_some_and(|d| {
            f.raw_name
                .strip_prefix(raw)
                .is_some_and(|rest| rest.starts_with(d) && rest.len() > d.len_utf8())
        })
    };
    let subfolders: Vec<&ImapFolder> = listed.iter().filter(|f| below(f)).collect();
    let kept: Vec<&ImapFolder> = subfolders
        .iter()
        .copied()
        .filter(|f| f.special.is_some())
        .collect();
    let holds = |f: &ImapFolder, k: &ImapFolder| {
        f.delimiter.is_some_and(|d| {
            k.raw_name
                .strip_prefix(f.raw_name.as_str())
                .is_some_and(|rest| rest.starts_with(d))
        })
    };
    let mut out: Vec<&str> = subfolders
        .into_iter()
        .filter(|f| f.special.is_none() && !kept.iter().any(|k| holds(f, k)))
        .map(|f| f.raw_name.as_str())
        .collect();
    // A child's name is its parent's and more: longest first is deepest first.
    out.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
    out
}

/// What a Fetch by FileReference is to give, and where its attachment
/// goes.
struct Wanted<'a> {
    /// `Options/Range`.
    range: Option<&'a str>,
    /// A multipart answer: `Part`, not `Data`.
    multipart: bool,
    /// The attachments to stream, in order.
    pieces: &'a mut Vec<Piece>,
    /// The large messages' MIME bodies to stream, in order.
    mime: &'a mut Vec<Piece>,
}

/// [MS-ASCMD] 2.2.3.117.1 ItemOperations `Move`: every message of the
/// conversation (see [`crate::email::conversation`]) in the device's mail
/// folders — except Sent Items, Deleted Items, Drafts, Outbox and the
/// destination itself — is moved (IMAP `UID MOVE`) to `DstFldId`. The
/// device learns of the moves by its next Sync of those folders.
///
/// `MoveAlways` is required (Status 155 without it, [MS-ASCMD] 2.2.3.118):
/// with `[sieve]` on, the conversation's later messages go to the same
/// folder as they are delivered (a rule in opush's Sieve script,
/// [`crate::oof`]). The rule is written before anything moves, so a
/// ManageSieve outage moves nothing and the device's retry does it all; a
/// retry after the moves (the answer lost) finds the conversation in the
/// destination only and writes the rule again (Success). Without `[sieve]`
/// the messages there are moved and the later ones are not. An unknown
/// destination is Status 156, a conversation with no message left
/// ObjectNotFound.
async fn move_conversation(
    imap: &mut PooledSession,
    state: &DeviceState,
    (conversation_id, dst_fld_id, move_always): (&[u8], &str, bool),
    (caller, eas): (&Caller<'_>, &EasServices),
) -> Result<ItemOperationsStatus, CommandError> {
    use opush_engine::FolderType;
    use opush_protocol::status::CommonStatus;
    if !move_always {
        return Ok(CommonStatus::MoveCommandDisallowedForNonPersistentMoveAction.into());
    }
    let mail = |t: FolderType| {
        matches!(
            t,
            FolderType::Inbox | FolderType::UserMail | FolderType::UserGeneric
        )
    };
    let dest = opush_engine::CollectionId::parse(dst_fld_id)
        .and_then(|c| state.hierarchy.ids.get(&c))
        .and_then(|raw| state.hierarchy.folders.get(raw).map(|f| (raw, f)))
        .filter(|(_, f)| mail(f.folder_type) || f.folder_type == FolderType::DeletedItems);
    let Some((dest, _)) = dest else {
        return Ok(CommonStatus::MoveCommandInvalidDestinationFolder.into());
    };
    let sources: Vec<&str> = state
        .hierarchy
        .ids
        .values()
        .filter(|raw| *raw != dest)
        .filter(|raw| {
            state
                .hierarchy
                .folders
                .get(*raw)
                .is_some_and(|f| mail(f.folder_type))
        })
        .map(|raw| raw.0.as_str())
        .collect();
    // 1. Where the conversation's messages are, and its root.
    let mut found: Vec<(&str, Vec<u32>)> = Vec::new();
    let mut root: Option<String> = None;
    for raw in sources {
        let headers = match imap.fetch_thread_headers(raw).await {
            Ok(h) => h,
            Err(e) if e.is_retryable() => return Err(imap_error(e)),
            // A folder that vanished meanwhile holds nothing to move.
            Err(_) => continue,
        };
        let uids = super::find::conversation_uids(&headers, conversation_id);
        if uids.is_empty() {
            continue;
        }
        if root.is_none() {
            root = conversation_root(&headers, &uids);
        }
        found.push((raw, uids));
    }
    // 2. The rule for its later messages.
    let mut ruled = false;
    if let Some(sieve) = &eas.oof.sieve {
        if root.is_none() {
            // All of it in the destination already: a Move done before.
            root = match imap.fetch_thread_headers(&dest.0).await {
                Ok(headers) => {
                    let uids = super::find::conversation_uids(&headers, conversation_id);
                    conversation_root(&headers, &uids)
                }
                Err(e) if e.is_retryable() => return Err(imap_error(e)),
                Err(_) => None,
            };
        }
        if let Some(root) = &root {
            let folder = crate::oof::sieve_folder(&dest.0);
            let owner = super::settings::script_owner(caller, eas);
            let written = crate::oof::file_conversation_always(
                &eas.oof,
                sieve,
                &owner.login(),
                (root, &folder),
                (&owner.addresses, owner.now),
            )
            .await
            .map_err(|e| super::settings::sieve_error(e, caller.user))?;
            match written {
                Ok(_) => {
                    ruled = true;
                    tracing::info!(target: "MAIL.DATA", folder = %folder, "conversation filed always: Sieve rule written");
                }
                // The out-of-office part cannot be written again (the
                // user has no address any more): the messages there still move.
                Err(e) => {
                    tracing::warn!(target: "MAIL.DATA", error = %e, "conversation rule not written");
                }
            }
        }
    }
    // 3. The messages there.
    let mut moved = 0usize;
    for (raw, uids) in found {
        match imap.move_messages(raw, &uids, &dest.0).await {
            Ok(_) => moved += uids.len(),
            Err(e) if e.is_retryable() => return Err(imap_error(e)),
            Err(e) => {
                tracing::warn!(target: "MAIL.DATA", folder = raw, error = %e, "conversation move failed");
                return Ok(CommonStatus::FailureInMoveOperation.into());
            }
        }
    }
    tracing::debug!(target: "MAIL.DATA", moved, ruled, "conversation moved");
    Ok(if moved == 0 && !ruled {
        ItemOperationsStatus::ObjectNotFound
    } else {
        ItemOperationsStatus::Success
    })
}

/// The root Message-ID of the conversation of the messages `uids` (of
/// `headers`), from the first that names one.
fn conversation_root(
    headers: &[crate::backends::imap::MessageHeaders],
    uids: &[u32],
) -> Option<String> {
    headers
        .iter()
        .filter(|h| uids.contains(&h.uid))
        .find_map(|h| {
            crate::email::conversation::root(
                h.get("References"),
                h.get("In-Reply-To"),
                h.get("Message-ID"),
            )
        })
        .map(str::to_owned)
}

/// About how many bytes a Fetch result adds to the answer (its content;
/// the fixed part of an item counts 1 KB).
fn fetched_bytes(result: &OperationResult) -> u64 {
    let OperationResult::Fetch { properties, .. } = result else {
        return 0;
    };
    let content = match properties {
        None => 0,
        Some(ApplicationData::Properties(props)) => {
            props.iter().filter_map(|p| p.text()).map(str::len).sum()
        }
        Some(ApplicationData::Email(email)) => email
            .body
            .as_ref()
            .and_then(|b| b.data.as_ref())
            .map_or(0, String::len),
        Some(_) => 0,
    };
    content as u64 + 1024
}

fn fetch_result(
    status: ItemOperationsStatus,
    target: &FetchTarget,
    properties: Option<ApplicationData>,
) -> OperationResult {
    OperationResult::Fetch {
        status,
        target: target.clone(),
        class: None,
        properties,
    }
}

/// The IMAP folder and item of a ServerId the device holds.
fn locate(state: &DeviceState, server_id: &str) -> Option<(String, BackendItemId)> {
    let sid = ServerId::parse(server_id)?;
    let raw = state.hierarchy.ids.get(&sid.collection)?.0.clone();
    let id = state
        .collections
        .get(&sid.collection)?
        .by_n
        .get(&sid.n)?
        .clone();
    Some((raw, id))
}

async fn fetch(
    imap: &mut PooledSession,
    state: &DeviceState,
    target: &FetchTarget,
    prefs: &[BodyPreference],
    wanted: Wanted<'_>,
    version: ProtocolVersion,
) -> Result<OperationResult, CommandError> {
    let range = wanted.range;
    if let Some(fref) = target.file_reference.as_deref() {
        let Some(fref) = FileReference::parse(fref) else {
            return Ok(fetch_result(
                ItemOperationsStatus::InvalidAttachment,
                target,
                None,
            ));
        };
        let Some((raw, id)) = locate(state, &fref.server_id) else {
            return Ok(fetch_result(
                ItemOperationsStatus::ObjectNotFound,
                target,
                None,
            ));
        };
        let (Some(uid), Some((uidvalidity, _))) =
            (still_there(imap, &raw, &id).await?, uid_of(&id))
        else {
            return Ok(fetch_result(
                ItemOperationsStatus::ObjectNotFound,
                target,
                None,
            ));
        };
        // The skeleton of a message of very many parts is bounded like
        // a message read whole.
        let limit = imap.config().max_message_bytes;
        let place = match attachment::locate(imap, &raw, uid, fref.index, limit).await {
            Ok(Located::Found(place)) => place,
            Ok(Located::NoAttachment) => {
                return Ok(fetch_result(
                    ItemOperationsStatus::InvalidAttachment,
                    target,
                    None,
                ))
            }
            Err(e) if e.is_retryable() => return Err(imap_error(e)),
            Err(ImapError::TooLarge { .. }) => {
                return Ok(fetch_result(
                    ItemOperationsStatus::DataTooLarge,
                    target,
                    None,
                ))
            }
            Err(_) => {
                return Ok(fetch_result(
                    ItemOperationsStatus::ObjectNotFound,
                    target,
                    None,
                ))
            }
        };
        let total = place.size;
        let (start, end) = match range.map(|r| parse_range(r, total)) {
            None => (0, total),
            Some(Some(r)) => r,
            Some(None) => {
                return Ok(fetch_result(
                    ItemOperationsStatus::InvalidByteRange,
                    target,
                    None,
                ))
            }
        };
        let mut props = vec![Element::with_text(
            asb::CONTENT_TYPE,
            place.content_type.clone(),
        )];
        if range.is_some() {
            props.push(Element::with_text(
                io::RANGE,
                format!("{start}-{}", end.saturating_sub(1)),
            ));
            props.push(Element::with_text(io::TOTAL, total.to_string()));
        }
        let n = wanted.pieces.len();
        props.push(if wanted.multipart {
            // Part 0 is the WBXML itself.
            Element::with_text(io::PART, (n + 1).to_string())
        } else {
            Element::with_text(io::DATA, marker(n))
        });
        wanted.pieces.push(Piece {
            raw,
            uidvalidity,
            uid,
            place,
            skip: start,
            take: end - start,
            base64: !wanted.multipart,
        });
        return Ok(fetch_result(
            ItemOperationsStatus::Success,
            target,
            Some(ApplicationData::Properties(props)),
        ));
    }
    if let (None, Some(long_id)) = (target.server_id.as_deref(), target.long_id.as_deref()) {
        return fetch_long_id(imap, state, target, long_id, (prefs, version), wanted.mime).await;
    }
    let Some(server_id) = target.server_id.as_deref() else {
        return Ok(fetch_result(
            ItemOperationsStatus::ObjectNotFound,
            target,
            None,
        ));
    };
    let Some((raw, id)) = locate(state, server_id) else {
        // A Find result the device does not hold from Sync carries the
        // LongId form as its ServerId (`commands/find.rs`).
        if server_id.contains('/') {
            let how = (prefs, version);
            return fetch_long_id(imap, state, target, server_id, how, wanted.mime).await;
        }
        return Ok(fetch_result(
            ItemOperationsStatus::ObjectNotFound,
            target,
            None,
        ));
    };
    fetch_email(
        imap,
        target,
        (&raw, &id),
        server_id,
        (prefs, version),
        wanted.mime,
    )
    .await
}

/// Fetch of a Search result by its LongId (`"<CollectionId>:<UIDVALIDITY>/<UID>"`,
/// as `commands/search.rs` makes them; a Find result's ServerId may have
/// that form too): the message must still be there
/// under the same UIDVALIDITY, else ObjectNotFound.
async fn fetch_long_id(
    imap: &mut PooledSession,
    state: &DeviceState,
    target: &FetchTarget,
    long_id: &str,
    how: (&[BodyPreference], ProtocolVersion),
    mime: &mut Vec<Piece>,
) -> Result<OperationResult, CommandError> {
    let not_found = || fetch_result(ItemOperationsStatus::ObjectNotFound, target, None);
    let located = long_id.split_once(':').and_then(|(collection, item)| {
        let raw = opush_engine::CollectionId::parse(collection)
            .and_then(|c| state.hierarchy.ids.get(&c))?
            .0
            .clone();
        let id = BackendItemId(item.to_owned());
        let (validity, uid) = uid_of(&id)?;
        Some((raw, id, validity, uid))
    });
    let Some((raw, id, _, _)) = located else {
        return Ok(not_found());
    };
    fetch_email(imap, target, (&raw, &id), long_id, how, mime).await
}

/// Whether the message `id` names is still in `raw` (the same UIDVALIDITY,
/// the UID still there); `None` when not (a retryable IMAP failure is an
/// error). A folder deleted and created again reuses UIDs from 1: without
/// the UIDVALIDITY check another message would be served under the old
/// item's ServerId.
pub(crate) async fn still_there(
    imap: &mut PooledSession,
    raw: &str,
    id: &BackendItemId,
) -> Result<Option<u32>, CommandError> {
    let Some((validity, uid)) = uid_of(id) else {
        return Ok(None);
    };
    let mailbox = match imap.select(raw).await {
        Ok(m) => m,
        Err(e) if e.is_retryable() => return Err(imap_error(e)),
        Err(_) => return Ok(None),
    };
    if mailbox.uidvalidity != validity {
        return Ok(None);
    }
    match imap.fetch_meta(raw, &[uid]).await {
        Ok(metas) if !metas.is_empty() => Ok(Some(uid)),
        Ok(_) => Ok(None),
        Err(e) if e.is_retryable() => Err(imap_error(e)),
        Err(_) => Ok(None),
    }
}

/// Fetch of a whole message by its ServerId (`shown_id`, as the device
/// names it): ObjectNotFound when it is no longer there. A large message
/// (`sync::large_above`) is rendered from its skeleton, and its whole MIME
/// body, when that is what is asked, streams from IMAP into its `Data`
/// (pushed on `mime`), never held; DataTooLarge when its skeleton passes
/// `[imap] max_message_bytes` (very many parts).
async fn fetch_email(
    imap: &mut PooledSession,
    target: &FetchTarget,
    (raw, id): (&str, &BackendItemId),
    shown_id: &str,
    (prefs, version): (&[BodyPreference], ProtocolVersion),
    mime: &mut Vec<Piece>,
) -> Result<OperationResult, CommandError> {
    let Some(uid) = still_there(imap, raw, id).await? else {
        return Ok(fetch_result(
            ItemOperationsStatus::ObjectNotFound,
            target,
            None,
        ));
    };
    let how = (shown_id, prefs, version);
    let (mut email, stream) = match full_email_checked(imap, Some(raw), id, how, true).await? {
        Ok(item) => item,
        Err(_) => {
            return Ok(fetch_result(
                ItemOperationsStatus::DataTooLarge,
                target,
                None,
            ))
        }
    };
    if let (Some(size), Some(body)) = (stream, email.body.as_mut()) {
        let size = u64::from(size);
        body.data = Some(mime_marker(mime.len()));
        mime.push(Piece {
            raw: raw.to_owned(),
            // `still_there` checked it against the folder's.
            uidvalidity: uid_of(id).map_or(0, |(validity, _)| validity),
            uid,
            place: AttachmentPlace {
                content_type: "message/rfc822".to_owned(),
                start: 0,
                end: size,
                encoding: Encoding::Identity,
                size,
            },
            skip: 0,
            take: size,
            base64: false,
        });
    }
    Ok(fetch_result(
        ItemOperationsStatus::Success,
        target,
        Some(ApplicationData::Email(Box::new(email))),
    ))
}

/// `"a-b"` (inclusive) → `[a, b+1)` clipped to `total`; `None` when invalid.
pub fn parse_range(range: &str, total: u64) -> Option<(u64, u64)> {
    let (a, b) = range.trim().split_once('-')?;
    let a: u64 = a.parse().ok()?;
    let b: u64 = b.parse().ok()?;
    if a > b || (a >= total && total > 0) {
        return None;
    }
    Some((a.min(total), b.saturating_add(1).min(total)))
}

#[cfg(test)]
mod tests {
    use super::{parse_range, subfolders_to_delete};
    use crate::backends::imap::{Folder, SpecialUse};

    fn folder(raw: &str, special: Option<SpecialUse>) -> Folder {
        Folder {
            name: raw.to_owned(),
            raw_name: raw.to_owned(),
            delimiter: Some('/'),
            special,
            parent: raw.rsplit_once('/').map(|(p, _)| p.to_owned()),
            attributes: Vec::new(),
            subscribed: true,
            selectable: true,
            status: None,
        }
    }

    // [MS-ASCMD] 2.2.3.44 DeleteSubFolders: the emptied folder's
    // subfolders go, deepest first; special folders (and the folders
    // holding one) stay, as do the folder itself and its namesakes.
    #[test]
    fn subfolders_to_delete_spare_the_special_folders() {
        let listed = vec![
            folder("INBOX", Some(SpecialUse::Inbox)),
            folder("INBOX/a", None),
            folder("INBOX/a/b", None),
            folder("INBOX/Trash", Some(SpecialUse::Trash)),
            folder("INBOX/Old", None),
            folder("INBOX/Old/Sent", Some(SpecialUse::Sent)),
            folder("INBOX/Old/x", None),
            folder("INBOXES", None),
            folder("Trash", Some(SpecialUse::Trash)),
        ];
        assert_eq!(
            subfolders_to_delete(&listed, "INBOX"),
            vec!["INBOX/Old/x", "INBOX/a/b", "INBOX/a"]
        );
        assert!(subfolders_to_delete(&listed, "Trash").is_empty());
        assert_eq!(subfolders_to_delete(&listed, "INBOX/a"), vec!["INBOX/a/b"]);
    }

    #[test]
    fn ranges_are_inclusive_and_clipped() {
        assert_eq!(parse_range("0-9", 100), Some((0, 10)));
        assert_eq!(parse_range("90-199", 100), Some((90, 100)));
        assert_eq!(parse_range("5-2", 100), None);
        assert_eq!(parse_range("100-120", 100), None);
        assert_eq!(parse_range("x-1", 100), None);
        assert_eq!(parse_range("0-0", 0), Some((0, 0)));
    }
}
