//! `handle_search` ([MS-ASCMD] 2.2.1.16) of the `Mailbox` store: the
//! `FreeText` of the query is searched with IMAP `SEARCH TEXT` (subject,
//! addresses and body) in the folder named by the query's `CollectionId`
//! (INBOX when absent); results come newest first within `Range`, at
//! most [`MAX_RESULTS`] and, past the first, while their estimated Emails
//! stay within `[devices] max_window_bytes` (the answer's `Range` says how
//! many came).
//!
//! Results are read from IMAP at request time; nothing is recorded. The
//! `LongId` is `"<CollectionId>:<UIDVALIDITY>/<UID>"`. Other stores and
//! queries without FreeText answer a clean status, never an error.

use opush_engine::{BackendItemId, CollectionId, DeviceState, FolderType};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::search::{SearchRequest, SearchResponse, SearchResult};
use opush_protocol::commands::Owned;
use opush_protocol::query::Command;
use opush_protocol::status::SearchStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;
use opush_protocol::wbxml::tags::{airsync, search as se};

use super::item_operations::parse_range;
use super::sync::{full_email, item_id};
use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::{ImapError, PooledSession, SearchQuery};
use crate::email::body::rendered_estimate;
use crate::session::{imap_error, Caller, EasServices};

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

/// The messages of folder `raw` whose headers or body contain `text`
/// (IMAP `UID SEARCH CHARSET UTF-8 TEXT`), newest (highest UID) first,
/// with the folder's UIDVALIDITY. Shared by Search and Find.
pub(crate) async fn matching_uids(
    imap: &mut PooledSession,
    raw: &str,
    text: &str,
) -> Result<(u32, Vec<u32>), ImapError> {
    let mailbox = imap.select(raw).await?;
    let mut uids = imap
        .search(
            raw,
            &SearchQuery {
                text: Some(text.to_owned()),
                ..SearchQuery::default()
            },
        )
        .await?;
    uids.sort_unstable_by(|a, b| b.cmp(a));
    Ok((mailbox.uidvalidity, uids))
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
    let Some(text) = find_text(query, se::FREE_TEXT).filter(|t| !t.trim().is_empty()) else {
        return Ok(status_only(SearchStatus::from_code(8)));
    };
    let state = eas.device_state(caller).await?;
    let mut imap = eas.imap_for(caller).await?;
    // The folder: the query's CollectionId, else INBOX.
    let wanted = find_text(query, airsync::COLLECTION_ID).and_then(|c| CollectionId::parse(&c));
    let (collection, raw) = match wanted {
        Some(c) => match state.hierarchy.ids.get(&c) {
            Some(b) => (c, b.0.clone()),
            None => return Ok(status_only(SearchStatus::from_code(11))),
        },
        None => match inbox(&state) {
            Some(found) => found,
            None => return Ok(status_only(SearchStatus::from_code(11))),
        },
    };
    let (uidvalidity, uids) = matching_uids(&mut imap, &raw, &text)
        .await
        .map_err(imap_error)?;
    let total = uids.len();
    let range = req.options.as_ref().and_then(|o| o.range.clone());
    let (start, end) = match range.as_deref().map(|r| parse_range(r, total as u64)) {
        None => (0, total),
        Some(Some((a, b))) => (a as usize, b as usize),
        Some(None) => (0, 0),
    };
    let end = end.min(start + MAX_RESULTS);
    let prefs = req
        .options
        .as_ref()
        .map(|o| o.body_preferences.clone())
        .unwrap_or_default();
    // The answer's bytes: results are added while their estimated Emails
    // (`rendered_estimate` of RFC822.SIZE for the BodyPreference) fit in
    // `[devices] max_window_bytes`, the first always; the Range says how
    // many came.
    let page = uids.get(start..end).unwrap_or_default();
    let sizes: std::collections::HashMap<u32, u64> = if page.is_empty() {
        Default::default()
    } else {
        imap.fetch_meta(&raw, page)
            .await
            .map_err(imap_error)?
            .into_iter()
            .map(|m| (m.uid, u64::from(m.size)))
            .collect()
    };
    let budget = eas.engine.max_window_bytes;
    let max_message = imap.config().max_message_bytes;
    let mut spent = 0u64;
    let mut results = Vec::new();
    for uid in page {
        let size = sizes.get(uid).copied().unwrap_or(0);
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
        let id: BackendItemId = item_id(uidvalidity, *uid);
        let long_id = format!("{collection}:{}", id.0);
        let email = full_email(&mut imap, Some(&raw), &id, &long_id, &prefs, version).await?;
        results.push(SearchResult {
            class: Some("Email".to_owned()),
            long_id: Some(long_id),
            collection_id: Some(collection.to_string()),
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
