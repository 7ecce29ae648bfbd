//! `handle_find` ([MS-ASCMD] 2.2.1.2, EAS 16.1): mailbox search by
//! `FreeText`, matched by IMAP `UID SEARCH CHARSET UTF-8 TEXT` (subject,
//! addresses and body) through the code Search uses
//! (`search::matching_uids`).
//!
//! The folders searched: the query's `CollectionId`, with its subfolders
//! when `DeepTraversal` is set; every mail folder of the device's hierarchy
//! when the query names none. Results come newest first: each folder's
//! matches by UID, descending, merged across folders by INTERNALDATE. At
//! most [`MAX_RESULTS`] results per answer, within the requested `Range`
//! (`0-99` when absent, indexes up to 999), and while the answer stays
//! within `[devices] max_window_bytes` (the first result always; the
//! answer's `Range` says how many came, and the device asks the next page
//! from there); `Total` counts every match of the folders searched. A Find
//! without a `CollectionId` searches at most [`MAX_FIND_FOLDERS`] folders.
//! Each result's `Properties` are rendered by [`crate::email::find_properties`],
//! the code Sync renders mail with, its `Preview` being Sync's, from the
//! message's header and the first [`RESULT_PREFIX_BYTES`] of its body
//! only: a page costs what it shows, not the size of the messages.
//!
//! A result's `ServerId` is the one the device holds from Sync when it has
//! the message, else `"<CollectionId>:<UIDVALIDITY>/<UID>"` (the LongId form
//! of Search), which ItemOperations Fetch accepts too.
//!
//! Read-only: results are read from IMAP at request time and nothing is
//! decided by the engine. The request is recorded as every request is (the
//! provisioning gate's `RequestReceived` + `PolicyChecked`, then
//! `ResponseSent` with the answer's digest), which `opush replay` re-runs.
//!
//! Statuses ([MS-ASCMD] 2.2.3.177.2): 2 (invalid request) for a Find
//! without a mailbox criterion — the GAL criterion included, not offered
//! yet —, without FreeText or with an unusable one, for another Class than
//! Email, a CollectionId that is no mail folder, or a malformed Range; 3
//! (FolderSync required) before the first FolderSync or for a CollectionId
//! the device's hierarchy does not hold.
//! The failure status is both the global and the `Response` one. IMAP
//! down is the common 111 (retry later), as for every command. Before 16.1
//! the command is refused with the common 138 (VersionNotSupported).

use std::collections::BTreeSet;

use opush_engine::{BackendFolderId, BackendItemId, CollectionId, DeviceState, FolderType};
use opush_protocol::commands::find::{
    FindCriterion, FindRequest, FindResponse, FindResult, FindStoreResponse, MailboxSearch,
};
use opush_protocol::query::Command;
use opush_protocol::status::FindStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;

use super::search::matching_uids;
use super::sync::item_id;
use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::{MessageMeta, PooledSession};
use crate::email::{find_properties, MessageInfo};
use crate::session::{imap_error, Caller, EasServices};

/// Most results in one Find answer (each one is a message fetched).
pub const MAX_RESULTS: usize = 100;

/// Highest index a Find `Range` may name ([MS-ASCMD] 2.2.3.143.1:
/// `0 ≤ m ≤ n ≤ 999`).
pub const MAX_RANGE_INDEX: usize = 999;

/// The `Range` of a request without one.
pub const DEFAULT_RANGE: (usize, usize) = (0, 99);

/// Longest `FreeText` searched, in characters.
pub const MAX_FREE_TEXT_CHARS: usize = 256;

/// Most mail folders a Find without a `CollectionId` searches (one IMAP
/// SEARCH each): INBOX, Sent and Drafts first, then the others in
/// CollectionId order. Past it the other folders are not searched: their
/// matches are neither shown nor counted in `Total` (Find has no status
/// saying so; a device searches a folder by naming it).
pub const MAX_FIND_FOLDERS: usize = 30;

/// Bytes of a message's body read to render its result
/// (`BODY.PEEK[TEXT]<0.n>`): the start of its body, which the Preview (255
/// characters) is taken from. `HasAttachments` of a longer message comes
/// from its BODYSTRUCTURE.
pub const RESULT_PREFIX_BYTES: u32 = 64 * 1024;

/// Bytes of a message's header read to render its result
/// (`BODY.PEEK[HEADER]<0.n>`): the fields past it are not shown.
pub const RESULT_HEADER_BYTES: u32 = 1024 * 1024;

/// Handles `Cmd=Find`.
pub async fn handle_find(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    if ctx.version < ProtocolVersion::V16_1 {
        return Err(CommandError::VersionNotSupported {
            command: Command::Find,
            version: ctx.version,
        });
    }
    let req = ctx.request(Command::Find, FindRequest::from_element)?;
    let res = find(&req, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// A mailbox answer with `status` and no result.
fn failed(status: FindStatus) -> FindResponse {
    FindResponse {
        status,
        response: Some(FindStoreResponse {
            store: "Mailbox".to_owned(),
            status,
            results: Vec::new(),
            range: None,
            total: None,
        }),
    }
}

/// `"m-n"` with `0 ≤ m ≤ n ≤ 999` ([MS-ASCMD] 2.2.3.143.1), else `None`.
pub fn parse_find_range(range: &str) -> Option<(usize, usize)> {
    let (a, b) = range.trim().split_once('-')?;
    let digits = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|c| c.is_ascii_digit()))
            .then(|| s.parse::<usize>().ok())
            .flatten()
    };
    let (a, b) = (digits(a)?, digits(b)?);
    (a <= b && b <= MAX_RANGE_INDEX).then_some((a, b))
}

/// What the query's text must be to be searched: not empty once trimmed,
/// no control character (IMAP cannot carry it), at most
/// [`MAX_FREE_TEXT_CHARS`].
fn usable_text(m: &MailboxSearch) -> Option<&str> {
    let text = m.free_text.as_deref()?.trim();
    let ok = !text.is_empty()
        && !text.chars().any(char::is_control)
        && text.chars().count() <= MAX_FREE_TEXT_CHARS;
    ok.then_some(text)
}

fn is_mail(t: FolderType) -> bool {
    matches!(
        t,
        FolderType::Inbox
            | FolderType::Drafts
            | FolderType::DeletedItems
            | FolderType::SentItems
            | FolderType::Outbox
            | FolderType::UserMail
    )
}

/// One folder to search.
pub(crate) struct Folder {
    pub(crate) collection: CollectionId,
    pub(crate) raw: String,
}

/// Why a query's folders cannot be searched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unsearchable {
    /// A CollectionId the device's hierarchy does not hold.
    Unknown,
    /// A CollectionId that is no mail folder.
    NotMail,
}

impl From<Unsearchable> for FindStatus {
    fn from(u: Unsearchable) -> Self {
        match u {
            Unsearchable::Unknown => FindStatus::FolderSyncRequired,
            Unsearchable::NotMail => FindStatus::InvalidRequest,
        }
    }
}

/// The folders a query names (`ids`; each with its subfolders when `deep`),
/// in CollectionId order; every mail folder of the hierarchy (at most
/// [`MAX_FIND_FOLDERS`]) when it names none.
pub(crate) fn folders_of(
    state: &DeviceState,
    ids: &[&str],
    deep: bool,
) -> Result<Vec<Folder>, Unsearchable> {
    let h = &state.hierarchy;
    let mail: Vec<(CollectionId, &BackendFolderId)> = h
        .ids
        .iter()
        .filter(|(_, raw)| h.folders.get(*raw).is_some_and(|f| is_mail(f.folder_type)))
        .map(|(c, raw)| (*c, raw))
        .collect();
    let chosen: Vec<(CollectionId, &BackendFolderId)> = match ids {
        [] => {
            // INBOX, Sent, Drafts first, then by CollectionId; at most
            // MAX_FIND_FOLDERS (kept in CollectionId order for the merge).
            let rank = |raw: &BackendFolderId| match h.folders.get(raw).map(|f| f.folder_type) {
                Some(FolderType::Inbox) => 0,
                Some(FolderType::SentItems) => 1,
                Some(FolderType::Drafts) => 2,
                _ => 3,
            };
            let mut by_rank = mail;
            by_rank.sort_by_key(|(c, raw)| (rank(raw), *c));
            if by_rank.len() > MAX_FIND_FOLDERS {
                tracing::info!(
                    folders = by_rank.len(),
                    searched = MAX_FIND_FOLDERS,
                    "Find without a CollectionId: the first folders only"
                );
                by_rank.truncate(MAX_FIND_FOLDERS);
            }
            by_rank.sort_by_key(|(c, _)| *c);
            by_rank
        }
        ids => {
            let mut wanted: BTreeSet<&BackendFolderId> = BTreeSet::new();
            for c in ids {
                let top = CollectionId::parse(c.trim())
                    .filter(|id| h.ids.contains_key(id))
                    .ok_or(Unsearchable::Unknown)?;
                let (_, top_raw) = mail
                    .iter()
                    .find(|(id, _)| *id == top)
                    .ok_or(Unsearchable::NotMail)?;
                wanted.insert(*top_raw);
                if !deep {
                    continue;
                }
                // Descendants: any folder whose parent chain reaches `top`.
                let under_top = |raw: &BackendFolderId| {
                    let mut at = h.folders.get(raw).and_then(|f| f.parent.as_ref());
                    let mut hops = 0;
                    while let Some(p) = at {
                        if p == *top_raw {
                            return true;
                        }
                        hops += 1;
                        if hops > h.folders.len() {
                            return false;
                        }
                        at = h.folders.get(p).and_then(|f| f.parent.as_ref());
                    }
                    false
                };
                wanted.extend(mail.iter().map(|(_, raw)| *raw).filter(|r| under_top(r)));
            }
            mail.into_iter()
                .filter(|(_, raw)| wanted.contains(raw))
                .collect()
        }
    };
    Ok(chosen
        .into_iter()
        .map(|(collection, raw)| Folder {
            collection,
            raw: raw.0.clone(),
        })
        .collect())
}

/// The matches of one folder: newest (highest UID) first.
pub(crate) struct Matches {
    /// Index of the folder in the list searched.
    pub(crate) folder: usize,
    pub(crate) uidvalidity: u32,
    pub(crate) metas: Vec<MessageMeta>,
}

/// What a mailbox search looks for: `text` in headers or body (IMAP
/// `TEXT`), the messages of `conversation` (Search's `ConversationId`, see
/// [`crate::email::conversation`]), received after `after` and before
/// `before` (Unix seconds, both exclusive: Search's `GreaterThan` /
/// `LessThan` of `DateReceived`). A text, a conversation or both.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct MailQuery {
    pub(crate) text: Option<String>,
    pub(crate) conversation: Option<[u8; crate::email::conversation::CONVERSATION_ID_LEN]>,
    pub(crate) after: Option<i64>,
    pub(crate) before: Option<i64>,
}

impl MailQuery {
    /// Whether a message received at `date` (Unix seconds) is in the
    /// query's dates.
    fn in_dates(&self, date: i64) -> bool {
        self.after.is_none_or(|a| date > a) && self.before.is_none_or(|b| date < b)
    }
}

/// How long a search's matches serve its later pages.
pub const SNAPSHOT_TTL: std::time::Duration = std::time::Duration::from_secs(300);
/// Most searches whose matches are kept (all devices of the process).
pub const MAX_SNAPSHOTS: usize = 256;
/// Most UIDs one kept search may hold (a bigger one is searched again for
/// each page).
pub const MAX_SNAPSHOT_UIDS: usize = 100_000;

/// Which search a page belongs to: the device, the folders, the query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SearchScope {
    pub(crate) user: String,
    pub(crate) device: String,
    pub(crate) folders: Vec<String>,
    pub(crate) query: MailQuery,
}

/// The UIDs one folder matched, newest first (only those in the query's
/// dates when it has dates).
#[derive(Debug)]
struct FolderUids {
    folder: usize,
    uidvalidity: u32,
    uids: Vec<u32>,
}

/// One kept search: its scope, when it was made, its matches.
type Kept = (
    SearchScope,
    tokio::time::Instant,
    std::sync::Arc<Vec<FolderUids>>,
);

/// The matches of recent searches, so that the later pages of a search
/// (a `Range` not starting at 0) are cut from the matches its first page
/// found instead of searching every folder again (IMAP `SEARCH TEXT` reads
/// every message of a folder without a full-text index). A search's first
/// page always searches (a new search sees new mail); its pages then agree
/// with each other. Process memory, bounded by [`MAX_SNAPSHOTS`] and
/// [`MAX_SNAPSHOT_UIDS`], each kept [`SNAPSHOT_TTL`].
static SNAPSHOTS: std::sync::Mutex<Vec<Kept>> = std::sync::Mutex::new(Vec::new());

fn snapshots() -> std::sync::MutexGuard<'static, Vec<Kept>> {
    // Entries are replaced whole; a poisoned lock holds consistent data.
    SNAPSHOTS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A recent search's matches, if kept.
fn kept(scope: &SearchScope) -> Option<std::sync::Arc<Vec<FolderUids>>> {
    let now = tokio::time::Instant::now();
    let mut all = snapshots();
    all.retain(|(_, at, _)| now.duration_since(*at) < SNAPSHOT_TTL);
    all.iter()
        .find(|(s, _, _)| s == scope)
        .map(|(_, _, lists)| lists.clone())
}

/// Keeps a search's matches (replacing the same search's, the oldest
/// going first past [`MAX_SNAPSHOTS`]).
fn keep(scope: SearchScope, lists: std::sync::Arc<Vec<FolderUids>>) {
    if lists.iter().map(|l| l.uids.len()).sum::<usize>() > MAX_SNAPSHOT_UIDS {
        return;
    }
    let mut all = snapshots();
    all.retain(|(s, _, _)| *s != scope);
    if all.len() >= MAX_SNAPSHOTS {
        all.remove(0);
    }
    all.push((scope, tokio::time::Instant::now(), lists));
}

/// Searches `folders` for `q`: how many messages match in all, and each
/// folder's newest `end` matches with their metadata. IMAP's `SINCE` /
/// `BEFORE` compare days, so dates are asked a day wider and each match's
/// INTERNALDATE decides; a query with dates therefore reads the metadata
/// of every match (its `Total` counts exactly). A folder that vanished
/// since the last FolderSync holds nothing; IMAP down is the caller's
/// 111. A later page (`first_page` false) of a search kept by `scope`
/// takes the first page's matches (see [`SNAPSHOT_TTL`]); a match expunged
/// since is left out of the page.
pub(crate) async fn search_folders(
    imap: &mut PooledSession,
    folders: &[Folder],
    q: &MailQuery,
    end: usize,
    scope: &SearchScope,
    first_page: bool,
) -> Result<(usize, Vec<Matches>), CommandError> {
    let found = match (!first_page).then(|| kept(scope)).flatten() {
        Some(found) => found,
        None => {
            let found = std::sync::Arc::new(matching_in(imap, folders, q).await?);
            keep(scope.clone(), found.clone());
            found
        }
    };
    let total = found.iter().map(|f| f.uids.len()).sum();
    let mut lists = Vec::with_capacity(found.len());
    for f in found.iter() {
        let raw = &folders[f.folder].raw;
        let newest = &f.uids[..f.uids.len().min(end)];
        let mut metas = if newest.is_empty() {
            Vec::new()
        } else {
            match imap.fetch_meta(raw, newest).await {
                Ok(metas) => metas,
                Err(e) if e.is_retryable() => return Err(imap_error(e)),
                Err(_) => continue,
            }
        };
        metas.sort_unstable_by_key(|m| std::cmp::Reverse(m.uid));
        lists.push(Matches {
            folder: f.folder,
            uidvalidity: f.uidvalidity,
            metas,
        });
    }
    Ok((total, lists))
}

/// Every match of `q` in each of `folders`, newest first.
async fn matching_in(
    imap: &mut PooledSession,
    folders: &[Folder],
    q: &MailQuery,
) -> Result<Vec<FolderUids>, CommandError> {
    const DAY: i64 = 86_400;
    let query = crate::backends::imap::SearchQuery {
        text: q.text.clone(),
        since: q.after.map(|a| a.saturating_sub(DAY)),
        before: q.before.map(|b| b.saturating_add(2 * DAY)),
        ..Default::default()
    };
    let mut out = Vec::with_capacity(folders.len());
    for (i, f) in folders.iter().enumerate() {
        let found = match &q.conversation {
            None => matching_uids(imap, &f.raw, &query).await,
            Some(id) => in_conversation(imap, &f.raw, id, q.text.is_some().then_some(&query)).await,
        };
        let (uidvalidity, mut uids) = match found {
            Ok(found) => found,
            Err(e) if e.is_retryable() => return Err(imap_error(e)),
            Err(e) => {
                tracing::debug!(target: "MAIL.DATA", folder = f.raw, error = %e, "folder not searched");
                continue;
            }
        };
        if (q.after.is_some() || q.before.is_some()) && !uids.is_empty() {
            let metas = match imap.fetch_meta(&f.raw, &uids).await {
                Ok(metas) => metas,
                Err(e) if e.is_retryable() => return Err(imap_error(e)),
                Err(_) => continue,
            };
            uids = metas
                .iter()
                .filter(|m| q.in_dates(m.internal_date))
                .map(|m| m.uid)
                .collect();
            uids.sort_unstable_by(|a, b| b.cmp(a));
        }
        out.push(FolderUids {
            folder: i,
            uidvalidity,
            uids,
        });
    }
    Ok(out)
}

/// The messages of folder `raw` in conversation `id` (and matching `also`,
/// an IMAP SEARCH, when given), newest (highest UID) first, with the
/// folder's UIDVALIDITY. The threading headers of every message are read:
/// the id is a digest of the thread's root Message-ID, which no IMAP
/// SEARCH can look for.
async fn in_conversation(
    imap: &mut PooledSession,
    raw: &str,
    id: &[u8; crate::email::conversation::CONVERSATION_ID_LEN],
    also: Option<&crate::backends::imap::SearchQuery>,
) -> Result<(u32, Vec<u32>), crate::backends::imap::ImapError> {
    let (uidvalidity, searched) = match also {
        Some(query) => {
            let (v, uids) = matching_uids(imap, raw, query).await?;
            (
                v,
                Some(uids.into_iter().collect::<std::collections::HashSet<u32>>()),
            )
        }
        None => (imap.select(raw).await?.uidvalidity, None),
    };
    let headers = imap.fetch_thread_headers(raw).await?;
    let mut uids: Vec<u32> = conversation_uids(&headers, id)
        .into_iter()
        .filter(|u| searched.as_ref().is_none_or(|s| s.contains(u)))
        .collect();
    uids.sort_unstable_by(|a, b| b.cmp(a));
    Ok((uidvalidity, uids))
}

/// The UIDs of the messages (by their threading headers, from
/// `Session::fetch_thread_headers`) that belong to conversation `id`.
pub(crate) fn conversation_uids(
    headers: &[crate::backends::imap::MessageHeaders],
    id: &[u8],
) -> Vec<u32> {
    headers
        .iter()
        .filter(|h| {
            crate::email::conversation::conversation_id(
                h.get("References"),
                h.get("In-Reply-To"),
                h.get("Message-ID"),
            )
            .is_some_and(|c| c.as_slice() == id)
        })
        .map(|h| h.uid)
        .collect()
}

/// The first `n` matches of all folders, newest first: each folder's list
/// (newest UID first) merged by INTERNALDATE, ties to the lower folder.
/// The first `n` depend only on each folder's first `n`, so pages of one
/// search agree with each other.
pub(crate) fn merge(lists: &[Matches], n: usize) -> Vec<(usize, &MessageMeta)> {
    let mut heads = vec![0usize; lists.len()];
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let next = lists
            .iter()
            .enumerate()
            .filter_map(|(i, l)| l.metas.get(heads[i]).map(|m| (i, m)))
            .max_by(|(i, a), (j, b)| a.internal_date.cmp(&b.internal_date).then(j.cmp(i)));
        let Some((i, meta)) = next else {
            break;
        };
        heads[i] += 1;
        out.push((i, meta));
    }
    out
}

/// The ServerId of a result: the device's own when it holds the message
/// from Sync, else the LongId form `"<CollectionId>:<UIDVALIDITY>/<UID>"`.
fn server_id_of(state: &DeviceState, collection: CollectionId, id: &BackendItemId) -> String {
    let held = state
        .collections
        .get(&collection)
        .and_then(|c| c.items.get(id))
        .filter(|item| item.n != 0 && item.device.is_some());
    match held {
        Some(item) => format!("{}:{}", collection.0, item.n),
        None => format!("{}:{}", collection.0, id.0),
    }
}

/// Find without HTTP.
pub async fn find(
    req: &FindRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<FindResponse, CommandError> {
    let m = match &req.criterion {
        Some(FindCriterion::Mailbox(m)) => m,
        // GAL search is not offered yet; no criterion is a bad request.
        Some(FindCriterion::Gal(_)) | None => {
            return Ok(FindResponse::status_only(FindStatus::InvalidRequest))
        }
    };
    let Some(text) = usable_text(m) else {
        return Ok(failed(FindStatus::InvalidRequest));
    };
    if m.class
        .as_deref()
        .is_some_and(|c| !c.trim().eq_ignore_ascii_case("Email"))
    {
        return Ok(failed(FindStatus::InvalidRequest));
    }
    let (start, last) = match m.range.as_deref() {
        None => DEFAULT_RANGE,
        Some(r) => match parse_find_range(r) {
            Some(r) => r,
            None => return Ok(failed(FindStatus::InvalidRequest)),
        },
    };
    let state = eas.device_state(caller).await?;
    if !state.hierarchy.synced {
        return Ok(failed(FindStatus::FolderSyncRequired));
    }
    let ids: Vec<&str> = m.collection_id.as_deref().into_iter().collect();
    let folders = match folders_of(&state, &ids, m.deep_traversal) {
        Ok(folders) => folders,
        Err(u) => return Ok(failed(u.into())),
    };
    let mut imap = eas.imap_for(caller).await?;
    // Results past `start + MAX_RESULTS` are never shown.
    let end = last
        .saturating_add(1)
        .min(start.saturating_add(MAX_RESULTS));
    let q = MailQuery {
        text: Some(text.to_owned()),
        conversation: None,
        after: None,
        before: None,
    };
    let scope = SearchScope {
        user: caller.user.to_owned(),
        device: caller.device_id.to_owned(),
        folders: folders.iter().map(|f| f.raw.clone()).collect(),
        query: q.clone(),
    };
    let (total, lists) = search_folders(&mut imap, &folders, &q, end, &scope, start == 0).await?;
    let merged = merge(&lists, end);
    // The answer's bytes: results are added while they fit (the first
    // always), the Range saying how many were.
    let budget = eas.engine.max_window_bytes;
    let mut spent = 0u64;
    let mut results = Vec::new();
    for (list, meta) in merged.into_iter().skip(start) {
        let Matches {
            folder,
            uidvalidity,
            ..
        } = lists[list];
        let f = &folders[folder];
        let id = item_id(uidvalidity, meta.uid);
        let server_id = server_id_of(&state, f.collection, &id);
        let bytes = fetch_prefix(&mut imap, &f.raw, meta.uid).await?;
        let info = MessageInfo {
            server_id: server_id.clone(),
            internal_date: meta.internal_date,
            seen: meta.flags.seen,
            flagged: meta.flags.flagged,
            keywords: meta.flags.keywords.clone(),
        };
        let mut properties = find_properties(&bytes, &info, meta.flags.draft);
        // Attachments past the prefix: the BODYSTRUCTURE tells.
        if meta.size > RESULT_PREFIX_BYTES && properties.has_attachments == Some(false) {
            properties.has_attachments = Some(has_attachment(&mut imap, &f.raw, meta.uid).await?);
        }
        let result = FindResult {
            class: Some("Email".to_owned()),
            server_id: Some(server_id),
            collection_id: Some(f.collection.to_string()),
            properties: Some(properties),
        };
        let size = result_bytes(&result);
        if budget > 0 && !results.is_empty() && spent.saturating_add(size) > budget {
            tracing::info!(
                results = results.len(),
                bytes = spent,
                "Find answer cut at the bytes budget"
            );
            break;
        }
        spent = spent.saturating_add(size);
        results.push(result);
    }
    crate::obs::summary::search(results.len());
    Ok(FindResponse {
        status: FindStatus::Success,
        response: Some(FindStoreResponse {
            store: "Mailbox".to_owned(),
            status: FindStatus::Success,
            range: (!results.is_empty()).then(|| format!("{start}-{}", start + results.len() - 1)),
            total: Some(u32::try_from(total).unwrap_or(u32::MAX)),
            results,
        }),
    })
}

/// The message's header (its first [`RESULT_HEADER_BYTES`]) and the first
/// [`RESULT_PREFIX_BYTES`] of its body, as one message to render; empty
/// when it vanished (its result still shows, headers-less).
async fn fetch_prefix(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
) -> Result<Vec<u8>, CommandError> {
    let mut out = Vec::new();
    for (section, len) in [
        ("HEADER", RESULT_HEADER_BYTES),
        ("TEXT", RESULT_PREFIX_BYTES),
    ] {
        match imap.fetch_partial(raw, uid, section, 0, len).await {
            Ok(b) => out.extend_from_slice(&b),
            Err(e) if e.is_retryable() => return Err(imap_error(e)),
            Err(_) => return Ok(Vec::new()),
        }
    }
    Ok(out)
}

/// Whether the message's BODYSTRUCTURE has a part that is an attachment
/// (disposition `attachment`, or a file name on a part that is no inline
/// one), for a message longer than the prefix its result was rendered from.
async fn has_attachment(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
) -> Result<bool, CommandError> {
    let headers = match imap.fetch_headers(raw, &[uid]).await {
        Ok(h) => h,
        Err(e) if e.is_retryable() => return Err(imap_error(e)),
        Err(_) => return Ok(false),
    };
    Ok(headers.iter().any(|h| {
        h.body
            .leaves()
            .iter()
            .any(|p| match p.disposition.as_deref() {
                Some("attachment") => true,
                Some("inline") => false,
                _ => p.filename().is_some(),
            })
    }))
}

/// What a result adds to the answer, about: its text fields (the WBXML
/// around them is a few bytes a field).
fn result_bytes(r: &FindResult) -> u64 {
    let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
    let fixed = 64 + text(&r.server_id) + text(&r.collection_id);
    let props = r.properties.as_ref().map_or(0, |p| {
        text(&p.subject)
            + text(&p.date_received)
            + text(&p.display_to)
            + text(&p.display_cc)
            + text(&p.display_bcc)
            + text(&p.from)
            + text(&p.preview)
            + 64
    });
    u64::try_from(fixed + props).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    // [MS-ASCMD] 2.2.3.143.1: 0 ≤ m ≤ n ≤ 999.
    #[test]
    fn find_ranges() {
        assert_eq!(parse_find_range("0-99"), Some((0, 99)));
        assert_eq!(parse_find_range(" 2-3 "), Some((2, 3)));
        assert_eq!(parse_find_range("0-999"), Some((0, 999)));
        assert_eq!(parse_find_range("0-1000"), None);
        assert_eq!(parse_find_range("5-2"), None);
        assert_eq!(parse_find_range("-3"), None);
        assert_eq!(parse_find_range("+1-3"), None);
        assert_eq!(parse_find_range("a-b"), None);
        assert_eq!(parse_find_range("7"), None);
    }

    fn meta(uid: u32, date: i64) -> MessageMeta {
        MessageMeta {
            uid,
            flags: Default::default(),
            internal_date: date,
            size: 0,
            modseq: None,
        }
    }

    #[test]
    fn merge_is_newest_first_and_pages_agree() {
        let lists = [
            Matches {
                folder: 0,
                uidvalidity: 1,
                metas: vec![meta(9, 50), meta(8, 30), meta(7, 10)],
            },
            Matches {
                folder: 1,
                uidvalidity: 1,
                metas: vec![meta(4, 40), meta(3, 30), meta(2, 20)],
            },
        ];
        let order: Vec<(usize, u32)> = merge(&lists, 6)
            .into_iter()
            .map(|(l, m)| (l, m.uid))
            .collect();
        assert_eq!(order, vec![(0, 9), (1, 4), (0, 8), (1, 3), (1, 2), (0, 7)]);
        let short: Vec<(usize, u32)> = merge(&lists, 2)
            .into_iter()
            .map(|(l, m)| (l, m.uid))
            .collect();
        assert_eq!(short, order[..2]);
    }
}
