//! `handle_search` ([MS-ASCMD] 2.2.1.16) of the `Mailbox` store: the
//! `FreeText` of the query is searched with IMAP `SEARCH TEXT` (subject,
//! addresses and body) in the folders the query names — every
//! airsync:`CollectionId` under its `And`, each with its subfolders when the
//! options hold `DeepTraversal`; INBOX when it names none, or every mail
//! folder (as Find) when it names none under `DeepTraversal` — and, when it
//! has them, within its `GreaterThan` / `LessThan` of `DateReceived`
//! (exclusive, to the second; a comparison without a readable `Value` or of
//! another property is Status 2). A query for another `Class` than Email
//! finds nothing. Results come newest first (each folder by UID, merged
//! across folders by INTERNALDATE, the code Find uses), within `Range`
//! (`0-99` when absent), at most [`MAX_RESULTS`] and, past the first, while
//! their estimated Emails stay within `[devices] max_window_bytes` (the
//! answer's `Range` says how many came).
//!
//! A `ConversationId` under the query's `And` (14.0+) finds the messages of
//! that conversation ([`crate::email::conversation`]), in every mail folder
//! unless the query names CollectionIds, with its FreeText and dates when it
//! has them too. A ConversationId anywhere else is Status 8 (too complex,
//! [MS-ASCMD] 2.2.3.36.2), before 14.0 Status 2; one of another length than
//! the 16 bytes this server hands out finds nothing.
//!
//! Results are read from IMAP at request time; nothing is recorded. A
//! later page (a `Range` not starting at 0, without `RebuildResults`) is
//! cut from the matches the search's first page found
//! ([`crate::commands::find::SNAPSHOT_TTL`]), so its pages agree and IMAP
//! is not searched again for each. The
//! `LongId` is `"<CollectionId>:<UIDVALIDITY>/<UID>"`. Other stores and
//! queries with neither FreeText nor ConversationId answer a clean status,
//! never an error; a
//! CollectionId the device's hierarchy does not hold is 11 (FolderSync
//! required).

use opush_engine::{BackendItemId, CollectionId, DeviceState, FolderType};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::search::{SearchRequest, SearchResponse, SearchResult};
use opush_protocol::commands::Owned;
use opush_protocol::query::Command;
use opush_protocol::status::SearchStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::tags::{airsync, email, search as se};
use opush_protocol::wbxml::{encode_to_vec, Tag};

use super::find::{
    folders_of, merge, search_folders, Folder, MailQuery, SearchScope, Unsearchable,
};
use super::item_operations::parse_range;
use super::sync::{full_email, item_id};
use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::{ImapError, PooledSession, SearchQuery};
use crate::email::body::rendered_estimate;
use crate::email::conversation::CONVERSATION_ID_LEN;
use crate::session::{Caller, EasServices};

/// Most results returned by one Search (the default `Range` is 0-99).
pub const MAX_RESULTS: usize = 100;

/// Handles `Cmd=Search`.
pub async fn handle_search(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::Search, SearchRequest::from_element)?;
    let res = search(&req, ctx.version, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

fn find_text(el: &Owned, tag: opush_protocol::wbxml::Tag) -> Option<String> {
    if el.tag == tag {
        return el.text().map(str::to_owned);
    }
    el.elements().find_map(|c| find_text(c, tag))
}

/// A search that found nothing.
fn no_results() -> SearchResponse {
    SearchResponse {
        status: SearchStatus::Success,
        store_status: Some(SearchStatus::Success),
        results: Vec::new(),
        range: None,
        total: Some(0),
    }
}

fn status_only(status: SearchStatus) -> SearchResponse {
    SearchResponse {
        status: SearchStatus::Success,
        store_status: Some(status),
        results: Vec::new(),
        range: None,
        total: None,
    }
}

/// The device's INBOX: its CollectionId and IMAP name.
pub(crate) fn inbox(state: &DeviceState) -> Option<(CollectionId, String)> {
    state
        .hierarchy
        .folders
        .iter()
        .find(|(_, f)| f.folder_type == FolderType::Inbox)
        .map(|(b, f)| (f.id, b.0.clone()))
}

/// The messages of folder `raw` that match `query` (IMAP `UID SEARCH
/// CHARSET UTF-8`), newest (highest UID) first, with the folder's
/// UIDVALIDITY. Shared by Search and Find.
pub(crate) async fn matching_uids(
    imap: &mut PooledSession,
    raw: &str,
    query: &SearchQuery,
) -> Result<(u32, Vec<u32>), ImapError> {
    let mailbox = imap.select(raw).await?;
    let mut uids = imap.search(raw, query).await?;
    uids.sort_unstable_by(|a, b| b.cmp(a));
    Ok((mailbox.uidvalidity, uids))
}

/// What a `Mailbox` query asks, read from its tree.
#[derive(Debug, Default, PartialEq, Eq)]
struct MailboxQuery {
    /// Every airsync:`CollectionId` (folders searched together).
    ids: Vec<String>,
    /// The `FreeText`.
    text: Option<String>,
    /// `GreaterThan` / `LessThan` of `DateReceived`, Unix seconds.
    after: Option<i64>,
    before: Option<i64>,
    /// airsync:`Class` values.
    classes: Vec<String>,
    /// A `DeepTraversal` inside the query.
    deep: bool,
    /// The `ConversationId` (bytes as sent) under the query's `And`.
    conversation: Option<Vec<u8>>,
}

/// Reads a query; `Err(2)` for a date comparison without a readable
/// `Value` or on another property than `DateReceived`, `Err(8)` for a
/// `ConversationId` that is not a child of `And`.
fn mailbox_query(query: &Owned) -> Result<MailboxQuery, SearchStatus> {
    fn walk(el: &Owned, parent: Option<Tag>, q: &mut MailboxQuery) -> Result<(), SearchStatus> {
        let protocol_error = SearchStatus::from_code(2);
        match el.tag {
            t if t == se::CONVERSATION_ID => {
                if parent != Some(se::AND) {
                    return Err(SearchStatus::from_code(8));
                }
                if q.conversation.is_none() {
                    let bytes = match el.opaque() {
                        Some(b) => b.to_vec(),
                        None => el.text().unwrap_or_default().as_bytes().to_vec(),
                    };
                    q.conversation = Some(bytes);
                }
            }
            t if t == airsync::COLLECTION_ID => {
                q.ids.extend(el.text().map(|c| c.trim().to_owned()));
            }
            t if t == airsync::CLASS => q.classes.extend(el.text().map(str::to_owned)),
            t if t == se::DEEP_TRAVERSAL => q.deep = true,
            t if t == se::FREE_TEXT => {
                if q.text.is_none() {
                    q.text = el.text().map(str::to_owned);
                }
            }
            t if t == se::GREATER_THAN || t == se::LESS_THAN => {
                if !el.elements().any(|c| c.tag == email::DATE_RECEIVED) {
                    return Err(protocol_error);
                }
                let at = find_text(el, se::VALUE)
                    .and_then(|v| crate::dates::parse_eas_date(&v))
                    .ok_or(protocol_error)?;
                if t == se::GREATER_THAN {
                    q.after = Some(q.after.map_or(at, |a| a.max(at)));
                } else {
                    q.before = Some(q.before.map_or(at, |b| b.min(at)));
                }
            }
            _ => {
                for c in el.elements() {
                    walk(c, Some(el.tag), q)?;
                }
            }
        }
        Ok(())
    }
    let mut q = MailboxQuery::default();
    walk(query, None, &mut q)?;
    Ok(q)
}

/// Search without HTTP.
pub async fn search(
    req: &SearchRequest,
    version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<SearchResponse, CommandError> {
    if !req.name.eq_ignore_ascii_case("Mailbox") {
        return Ok(status_only(SearchStatus::from_code(2)));
    }
    let Some(query) = &req.query else {
        return Ok(status_only(SearchStatus::from_code(2)));
    };
    let q = match mailbox_query(query) {
        Ok(q) => q,
        Err(status) => return Ok(status_only(status)),
    };
    let text = q.text.as_deref().filter(|t| !t.trim().is_empty());
    if q.conversation.is_some() && version < ProtocolVersion::V14_0 {
        return Ok(status_only(SearchStatus::from_code(2)));
    }
    // A conversation this server never named (not 16 bytes) holds nothing.
    let conversation = match q
        .conversation
        .as_deref()
        .map(<[u8; CONVERSATION_ID_LEN]>::try_from)
    {
        None => None,
        Some(Ok(id)) => Some(id),
        Some(Err(_)) => return Ok(no_results()),
    };
    if text.is_none() && conversation.is_none() {
        return Ok(status_only(SearchStatus::from_code(8)));
    }
    // Only mail is searched here: a query for other classes finds nothing.
    let mail_class = q.classes.is_empty()
        || q.classes
            .iter()
            .any(|c| c.trim().eq_ignore_ascii_case("Email"));
    // DeepTraversal belongs in Options; some clients put it in the query. A
    // conversation without CollectionIds is looked for in every mail folder.
    let deep = q.deep
        || req.options.as_ref().is_some_and(|o| o.deep_traversal)
        || (conversation.is_some() && q.ids.is_empty());
    // A later page comes from the matches the first page found, unless the
    // device asks to rebuild them.
    let first_page = req.options.as_ref().is_some_and(|o| o.rebuild_results);
    let state = eas.device_state(caller).await?;
    // The folders: the query's CollectionIds (with their subfolders under
    // DeepTraversal); without one, INBOX, or every mail folder under
    // DeepTraversal (as Find).
    let ids: Vec<&str> = q.ids.iter().map(String::as_str).collect();
    let folders = if ids.is_empty() && !deep {
        match inbox(&state) {
            Some((collection, raw)) => vec![Folder { collection, raw }],
            None => return Ok(status_only(SearchStatus::from_code(11))),
        }
    } else {
        match folders_of(&state, &ids, deep) {
            Ok(folders) => folders,
            Err(Unsearchable::Unknown) => return Ok(status_only(SearchStatus::from_code(11))),
            Err(Unsearchable::NotMail) => return Ok(status_only(SearchStatus::from_code(2))),
        }
    };
    let range = req.options.as_ref().and_then(|o| o.range.clone());
    // The Range's bounds before the total is known (then clipped to it).
    let (start, end) = match range.as_deref().map(|r| parse_range(r, u64::MAX)) {
        None => (0, MAX_RESULTS),
        Some(Some((a, b))) => (
            usize::try_from(a).unwrap_or(usize::MAX),
            usize::try_from(b).unwrap_or(usize::MAX),
        ),
        Some(None) => return Ok(status_only(SearchStatus::from_code(2))),
    };
    let end = end.min(start.saturating_add(MAX_RESULTS));
    let mut imap = eas.imap_for(caller).await?;
    let mail_query = MailQuery {
        text: text.map(str::to_owned),
        conversation,
        after: q.after,
        before: q.before,
    };
    let scope = SearchScope {
        user: caller.user.to_owned(),
        device: caller.device_id.to_owned(),
        folders: folders.iter().map(|f| f.raw.clone()).collect(),
        query: mail_query.clone(),
    };
    let (total, lists) = if mail_class {
        search_folders(
            &mut imap,
            &folders,
            &mail_query,
            end,
            &scope,
            first_page || start == 0,
        )
        .await?
    } else {
        (0, Vec::new())
    };
    let merged = merge(&lists, end);
    let prefs = req
        .options
        .as_ref()
        .map(|o| o.body_preferences.clone())
        .unwrap_or_default();
    // The answer's bytes: results are added while their estimated Emails
    // (`rendered_estimate` of RFC822.SIZE for the BodyPreference) fit in
    // `[devices] max_window_bytes`, the first always; the Range says how
    // many came.
    let page: Vec<(&Folder, u32, &crate::backends::imap::MessageMeta)> = merged
        .into_iter()
        .skip(start)
        .map(|(list, meta)| {
            let m = &lists[list];
            (&folders[m.folder], m.uidvalidity, meta)
        })
        .collect();
    let budget = eas.engine.max_window_bytes;
    let max_message = imap.config().max_message_bytes;
    let mut spent = 0u64;
    let mut results = Vec::new();
    for (folder, uidvalidity, meta) in page {
        let size = u64::from(meta.size);
        let size = if size > max_message { 0 } else { size };
        let estimate = rendered_estimate(size, &prefs, version);
        if budget > 0 && !results.is_empty() && spent.saturating_add(estimate) > budget {
            tracing::info!(
                results = results.len(),
                "Search answer cut at the bytes budget"
            );
            break;
        }
        spent = spent.saturating_add(estimate);
        let id: BackendItemId = item_id(uidvalidity, meta.uid);
        let long_id = format!("{}:{}", folder.collection, id.0);
        let email =
            full_email(&mut imap, Some(&folder.raw), &id, &long_id, &prefs, version).await?;
        results.push(SearchResult {
            class: Some("Email".to_owned()),
            long_id: Some(long_id),
            collection_id: Some(folder.collection.to_string()),
            properties: Some(ApplicationData::Email(Box::new(email))),
        });
    }
    crate::obs::summary::search(results.len());
    Ok(SearchResponse {
        status: SearchStatus::Success,
        store_status: Some(SearchStatus::Success),
        range: (!results.is_empty()).then(|| format!("{start}-{}", start + results.len() - 1)),
        total: Some(u32::try_from(total).unwrap_or(u32::MAX)),
        results,
    })
}
