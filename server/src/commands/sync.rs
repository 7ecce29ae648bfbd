//! `handle_sync` for email collections ([MS-ASCMD] 2.2.1.21): observe the
//! IMAP folder (CONDSTORE/QRESYNC delta, or a UID + flags listing, which
//! works on every server; nothing recorded when nothing changed), carry
//! out the device's Read/Flag changes, deletes (moved to Trash, created
//! for a user without one, or expunged per `DeletesAsMoves`; never
//! expunged for want of a Trash) and, from 16.0, drafts it adds to or
//! edits in Drafts (`crate::draft`: IMAP APPEND with `\Draft`, an edit
//! replaces the message and keeps the ServerId, attachments added or
//! deleted, their FileReferences in the answer; a retried request is
//! answered from the record),
//! let `engine::decide_sync` choose the window (cut again when its rendered
//! Emails, estimated from sizes and BodyPreference, exceed `[devices]
//! max_window_bytes`), record the events, then fetch and
//! render the messages.
//!
//! Backend item ids are `"<UIDVALIDITY>/<UID>"`, so a UIDVALIDITY change
//! makes every item new (Deletes then Adds). An item's version is a digest
//! of its flags: a flag change on either side is a `Change`.
//! This module must not decide which items a device gets, nor keys; and it
//! renders a retried batch from the same recorded decision, so a retried
//! SyncKey gets the same answer.

use opush_engine::{
    decide_sync, plan_sync, BackendEffect, BackendItemId, ClientCommand as EngineCommand,
    CollectionId, Conflict, DecisionInput, Digest, EffectOutcome, Event, FilterType, ItemVersion,
    Observation, ObservationKind, ObservedItem, PageKey, PageOrder, ReplyKind, ServerChange,
    ServerId, SyncInput, SyncKey as EngineKey, SyncRequest as EngineRequest,
    SyncStatus as EngineStatus, Timestamp,
};
use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{
    ClientCommand, CommandResponse, ServerCommand, SyncCollectionRequest, SyncCollectionResponse,
    SyncRequest, SyncResponse,
};
use opush_protocol::commands::{
    ClientId as WireClientId, ServerId as WireServerId, SyncKey as WireKey,
};
use opush_protocol::query::Command;
use opush_protocol::status::SyncStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;

use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::{Flag, Flags, FolderStatus, MessageMeta, PooledSession, SpecialUse};
use crate::email::body::rendered_estimate;
use crate::email::{to_email, MessageInfo};
use crate::session::{imap_error, session_error, Caller, EasServices, Recorder};

/// Handles `Cmd=Sync`.
pub async fn handle_sync(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let invalid = |reason: String| CommandError::InvalidRequest {
        command: Command::Sync,
        reason,
    };
    let wire = match ctx.document {
        Some(doc) => {
            Some(SyncRequest::from_element(doc, ctx.version).map_err(|e| invalid(e.to_string()))?)
        }
        None => None,
    };
    if let Some(twice) = wire.as_ref().and_then(repeated_collection) {
        // Each copy would be answered in full (a copy at the previous key
        // gets the whole remembered answer again): one small request could
        // ask for the same large answer thousands of times.
        tracing::warn!(collection = %twice, "Sync lists a collection more than once: Status 4");
        return Ok(EasResponse::wbxml(
            SyncResponse {
                status: Some(SyncStatus::from_code(4)),
                limit: None,
                collections: Vec::new(),
            }
            .to_wbxml(ctx.version),
        ));
    }
    // Boxed: a long-poll Sync keeps this future while parked, so it holds
    // only what the wait needs, not the steps' state (see `sync_wait`).
    let req = match Box::pin(resolve_request(wire, &ctx.caller(), eas)).await? {
        Ok(req) => req,
        Err(answer) => return Ok(EasResponse::wbxml(answer.to_wbxml(ctx.version))),
    };
    if super::sync_wait::wants_wait(&req) {
        let release = || ctx.in_flight.release();
        let waited =
            super::sync_wait::sync_waiting(&req, ctx.version, &ctx.caller(), eas, release).await?;
        return Ok(match waited {
            Some(res) => EasResponse::wbxml(res.to_wbxml(ctx.version)),
            // [MS-ASCMD] 2.2.1.21.2: the empty Sync response.
            None => EasResponse::empty(),
        });
    }
    let res = Box::pin(sync(&req, ctx.version, &ctx.caller(), eas)).await?;
    // Written without the response tree: a window of hundreds of emails.
    Ok(EasResponse::wbxml(res.to_wbxml(ctx.version)))
}

/// A CollectionId the request lists more than once ([MS-ASCMD] Sync
/// Status 4, a semantic error in the request).
fn repeated_collection(req: &SyncRequest) -> Option<&str> {
    let mut seen = std::collections::HashSet::with_capacity(req.collections.len());
    req.collections
        .iter()
        .map(|c| c.collection_id.0.as_str())
        .find(|id| !seen.insert(*id))
}

/// Version the remembered request is encoded with (the richest form).
const REMEMBERED_VERSION: ProtocolVersion = ProtocolVersion::V16_1;

/// The request a Sync stands for ([MS-ASCMD] 2.2.3.125 Partial, 2.2.1.21
/// empty Sync): an empty body repeats the device's last full request, a
/// `Partial` one is merged into it (its collections replace or add to the
/// remembered ones), each remembered collection taking the SyncKey the
/// device last received. A full request (and the merge) is remembered,
/// without its commands, in the store (written only when it differs), so
/// this survives restarts. `Err` is the answer to send instead: Status 13
/// when nothing is remembered.
pub async fn resolve_request(
    wire: Option<SyncRequest>,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<Result<SyncRequest, SyncResponse>, CommandError> {
    let mut session = eas
        .sessions
        .open(caller.device_key()?)
        .await
        .map_err(session_error)?;
    let wire = match wire {
        Some(req) if !req.partial => {
            session
                .remember_sync_request(remembered_form(&req))
                .await
                .map_err(session_error)?;
            return Ok(Ok(req));
        }
        wire => wire,
    };
    let remembered = session
        .remembered_sync_request()
        .await
        .map_err(session_error)?
        .and_then(|bytes| {
            let doc = opush_protocol::wbxml::decode(&bytes).ok()?;
            SyncRequest::from_element(&doc, REMEMBERED_VERSION).ok()
        });
    let Some(mut req) = remembered else {
        // [MS-ASCMD] Sync Status 13: the request is incomplete; resend it whole.
        return Ok(Err(SyncResponse {
            status: Some(SyncStatus::from_code(13)),
            limit: None,
            collections: Vec::new(),
        }));
    };
    let state = session.state();
    for c in &mut req.collections {
        let latest = CollectionId::parse(&c.collection_id.0)
            .and_then(|id| state.collections.get(&id))
            .filter(|col| col.synced)
            .map(|col| col.last_key);
        if let Some(key) = latest {
            c.sync_key = WireKey(key.0.to_string());
        }
    }
    if let Some(partial) = wire {
        for c in partial.collections {
            match req
                .collections
                .iter_mut()
                .find(|r| r.collection_id == c.collection_id)
            {
                Some(slot) => *slot = c,
                None => req.collections.push(c),
            }
        }
        req.window_size = partial.window_size.or(req.window_size);
        req.wait = partial.wait;
        req.heartbeat_interval = partial.heartbeat_interval;
        session
            .remember_sync_request(remembered_form(&req))
            .await
            .map_err(session_error)?;
    }
    req.partial = false;
    Ok(Ok(req))
}

/// A request as remembered: commands dropped (they are not repeated) and
/// SyncKeys left out (the state knows the latest), so a device repeating
/// itself causes no write.
fn remembered_form(req: &SyncRequest) -> Vec<u8> {
    let mut r = req.clone();
    r.partial = false;
    for c in &mut r.collections {
        c.commands = None;
        c.sync_key = WireKey("0".to_owned());
    }
    let bytes = encode_to_vec(&r.to_element(REMEMBERED_VERSION));
    if bytes.len() > MAX_REMEMBERED_BYTES {
        // Nothing is remembered (an empty form does not decode): an empty
        // or Partial Sync then gets Status 13, resend the whole request.
        tracing::warn!(
            bytes = bytes.len(),
            "Sync request over {MAX_REMEMBERED_BYTES} bytes without its commands: not remembered"
        );
        return Vec::new();
    }
    bytes
}

/// Largest Sync request (without its commands) kept for the empty and
/// Partial Syncs that follow: a device's request of hundreds of folders
/// takes tens of KB; more would let one device keep megabytes in its row.
const MAX_REMEMBERED_BYTES: usize = 1 << 20;

/// The IMAP item id of a message.
pub fn item_id(uidvalidity: u32, uid: u32) -> BackendItemId {
    BackendItemId(format!("{uidvalidity}/{uid}"))
}

/// The UID of an item id (`None` when not an IMAP id).
pub fn uid_of(id: &BackendItemId) -> Option<(u32, u32)> {
    let (v, u) = id.0.split_once('/')?;
    Some((decimal_u32(v)?, decimal_u32(u)?))
}

/// `s.parse::<u32>()` (an optional `+`, then digits) without its generic
/// machinery: a Sync reads the UID of every item id several times.
fn decimal_u32(s: &str) -> Option<u32> {
    let digits = s.strip_prefix('+').unwrap_or(s).as_bytes();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, &b| {
        if b.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u32::from(b - b'0'))
        } else {
            None
        }
    })
}

/// The version of a message: a digest of the flags a device sees.
///
/// The digest of `"<seen><flagged><answered>|<keywords sorted, space-separated>"`
/// (`0`/`1` each), fed to blake3 piece by piece: no string is built for
/// each of the thousands of messages a window observes.
pub fn version_of(flags: &Flags) -> ItemVersion {
    if flags.keywords.is_empty() {
        let i = usize::from(flags.seen)
            | usize::from(flags.flagged) << 1
            | usize::from(flags.answered) << 2;
        return PLAIN_VERSIONS[i];
    }
    digest_version(flags)
}

/// The versions of the eight keyword-less flag sets, by
/// `seen | flagged << 1 | answered << 2`. Most messages carry no keyword:
/// their versions are digested once, not once per message observed or read
/// ahead, and such a version tells its flags back ([`decided_flags`]).
static PLAIN_VERSIONS: std::sync::LazyLock<[ItemVersion; 8]> = std::sync::LazyLock::new(|| {
    std::array::from_fn(|i| {
        digest_version(&Flags {
            seen: i & 1 != 0,
            flagged: i & 2 != 0,
            answered: i & 4 != 0,
            ..Flags::default()
        })
    })
});

/// Gives `meta` the flags of `version`, the one the engine decided to send
/// for it: a window sends what its recorded decision says, whatever the
/// message's flags are when it is rendered, so that a retried SyncKey (its
/// window rendered again, later) answers the same and the device holds the
/// version the engine records for it (a newer one is sent as a Change
/// after the next look). True when `meta` now has those flags: they were
/// its own, or `version` is one of a keyword-less set
/// ([`PLAIN_VERSIONS`]), the `\Seen`, `\Flagged` and `\Answered` of
/// which it then takes (its other flags, not versioned, stay). False for a
/// version with keywords that `meta` does not have: a digest cannot be read
/// back.
fn decided_flags(meta: &mut MessageMeta, version: ItemVersion) -> bool {
    if version_of(&meta.flags) == version {
        return true;
    }
    let Some(i) = PLAIN_VERSIONS.iter().position(|v| *v == version) else {
        return false;
    };
    meta.flags.seen = i & 1 != 0;
    meta.flags.flagged = i & 2 != 0;
    meta.flags.answered = i & 4 != 0;
    meta.flags.keywords.clear();
    true
}

/// [`version_of`] computed: the digest itself.
fn digest_version(flags: &Flags) -> ItemVersion {
    let mut h = blake3::Hasher::new();
    let bit = |b: bool| if b { b'1' } else { b'0' };
    h.update(&[
        bit(flags.seen),
        bit(flags.flagged),
        bit(flags.answered),
        b'|',
    ]);
    let mut sorted: Vec<&str>;
    let keywords: &[String] = &flags.keywords;
    let words: &mut dyn Iterator<Item = &str> = if keywords.is_sorted() {
        &mut keywords.iter().map(String::as_str)
    } else {
        sorted = keywords.iter().map(String::as_str).collect();
        sorted.sort_unstable();
        &mut sorted.iter().copied()
    };
    for (i, w) in words.enumerate() {
        if i > 0 {
            h.update(b" ");
        }
        h.update(w.as_bytes());
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d.as_bytes()[..8]);
    ItemVersion(u64::from_le_bytes(b))
}

/// The observed form of a listed message.
pub fn observed(uidvalidity: u32, m: &MessageMeta) -> ObservedItem {
    let received_at = match m.is_dated() {
        true => Timestamp(
            u64::try_from(m.internal_date.max(0))
                .unwrap_or(0)
                .saturating_mul(1000),
        ),
        false => Timestamp::UNDATED,
    };
    ObservedItem {
        id: item_id(uidvalidity, m.uid),
        version: version_of(&m.flags),
        received_at,
        digest: None,
    }
}

/// Observes an IMAP folder for `collection`, as an event to record, or
/// `None` when the folder holds nothing the device state does not already
/// say (a no-change Sync then writes nothing).
///
/// Freshness first, asked now (so a change made before this request is
/// always seen):
/// - when the connection has the folder selected already (the windows of
///   an initial sync), a NOOP brings the session's view of it up to date
///   (`Session::refresh`): no new SELECT, which on Dovecot would also make
///   the window's first FETCH several times slower. A view whose
///   HIGHESTMODSEQ the NOOP left unknown is completed by a STATUS of the
///   selected mailbox, and SELECTed again only if that fails too;
/// - otherwise, with CONDSTORE/QRESYNC (`[imap] use_condstore`, server
///   support) and an earlier observation under the same UIDVALIDITY, a
///   `STATUS` (one round trip; the caller's, for Ping) whose UIDVALIDITY and
///   HIGHESTMODSEQ are the recorded ones proves nothing changed; else a
///   SELECT.
///
/// Then, with CONDSTORE and a recorded cursor under the same UIDVALIDITY:
/// nothing when the HIGHESTMODSEQ is the cursor, else the changes and
/// VANISHED UIDs since it, on the same selection, are a `Delta` (VANISHED
/// kept for the items the device state knows, whatever UIDNEXT the session
/// saw). Otherwise (no CONDSTORE, first look, UIDVALIDITY changed: a
/// resync) a `Full` UID + FLAGS listing.
pub async fn observe(
    imap: &mut PooledSession,
    raw: &str,
    collection: CollectionId,
    state: &opush_engine::DeviceState,
    req_id: u64,
    at: Timestamp,
) -> Result<Option<Event>, CommandError> {
    observe_after(imap, raw, collection, state, req_id, at, None).await
}

/// [`observe`] for a caller that has just asked the folder's `STATUS`
/// (Ping): `status` stands for the freshness check.
pub async fn observe_after(
    imap: &mut PooledSession,
    raw: &str,
    collection: CollectionId,
    state: &opush_engine::DeviceState,
    req_id: u64,
    at: Timestamp,
    status: Option<&FolderStatus>,
) -> Result<Option<Event>, CommandError> {
    let at_req = (req_id, at);
    let look = Look {
        filter: None,
        status,
    };
    observe_keeping(imap, raw, (collection, state), at_req, look, None).await
}

/// What a Sync brings to an observation beyond the folder.
struct Look<'a> {
    /// The request's FilterType (None: the collection's stays).
    filter: Option<FilterType>,
    /// The folder's `STATUS`, just asked by the caller (Ping).
    status: Option<&'a FolderStatus>,
}

/// What an initial sync's observation keeps, and may use to list a big
/// folder faster (see [`list_split`]).
struct Keep<'a> {
    /// A full listing's messages: the first windows are read ahead with
    /// their metadata.
    listed: &'a mut Vec<MessageMeta>,
    /// A connection of the caller's user being opened with the folder
    /// selected (`open_ahead`), to list part of the folder; taken when it
    /// does.
    helper: &'a mut Option<Opening>,
    /// Where the helper goes once the listing is made: the read-ahead
    /// connections.
    opened: &'a mut Vec<Opening>,
}

/// [`observe_after`], handing a full listing's messages to `keep` (an
/// initial sync reads its first windows ahead with their metadata).
async fn observe_keeping(
    imap: &mut PooledSession,
    raw: &str,
    (collection, state): (CollectionId, &opush_engine::DeviceState),
    (req_id, at): (u64, Timestamp),
    Look { filter, status }: Look<'_>,
    mut keep: Option<Keep<'_>>,
) -> Result<Option<Event>, CommandError> {
    let known = state.collections.get(&collection);
    let use_condstore = imap.condstore();
    // Dates are listed only when the FilterType in force has a window:
    // without one the engine needs none (`Timestamp::UNDATED`), and they
    // are most of a listing's cost on Dovecot. A window about to take
    // effect over undated items first lists the folder again, with dates,
    // whatever CONDSTORE says: the engine applies it to what it knows.
    let in_force = filter.or(known.map(|c| c.filter)).unwrap_or_default();
    let time_filtered = known.is_none_or(|c| c.folder_type.is_time_filtered());
    let dated = time_filtered && in_force.cutoff(at).is_some();
    let redate = dated && known.is_some_and(|c| c.filter != in_force && c.has_undated());
    let live = imap
        .refresh(raw)
        .await
        .map_err(imap_error)?
        .filter(|v| v.highestmodseq.is_some() || !use_condstore);
    let mailbox = match live {
        Some(view) => view,
        None => {
            let selected = imap.selected_mailbox() == Some(raw);
            if let (true, Some(c), false, false) = (use_condstore, known, selected, redate) {
                if c.validity.is_some() && c.cursor > 0 {
                    let fresh = match status {
                        Some(st) => *st,
                        None => imap.status(raw).await.map_err(imap_error)?,
                    };
                    if c.validity == Some(u64::from(fresh.uidvalidity))
                        && fresh.highestmodseq == Some(c.cursor)
                    {
                        return Ok(None);
                    }
                }
            }
            imap.select(raw).await.map_err(imap_error)?;
            imap.selected_view(raw).unwrap_or_default()
        }
    };
    let validity = u64::from(mailbox.uidvalidity);
    let event = |observation: Observation| Event::BackendObserved {
        req_id,
        collection,
        at,
        observation,
    };
    if let (true, Some(c), Some(highest)) = (use_condstore, known, mailbox.highestmodseq) {
        if c.validity == Some(validity) && c.cursor > 0 && !redate {
            if highest == c.cursor {
                return Ok(None);
            }
            match imap.changes_since(raw, c.cursor).await {
                Ok(changes) => {
                    let observation = Observation {
                        validity,
                        cursor: changes.state.highestmodseq.unwrap_or(highest),
                        kind: ObservationKind::Delta,
                        changed: changes
                            .changed
                            .iter()
                            .map(|m| observed(mailbox.uidvalidity, m))
                            .collect(),
                        vanished: vanished_known(c, mailbox.uidvalidity, &changes.vanished),
                    };
                    return Ok((!is_noop(c, &observation)).then(|| event(observation)));
                }
                // No QRESYNC on this server: the full listing below.
                Err(crate::backends::imap::ImapError::Unsupported(_)) => {}
                Err(e) => return Err(imap_error(e)),
            }
        }
    }
    let helper = keep
        .as_mut()
        .and_then(|k| k.helper.take().map(|h| (h, &mut *k.opened)));
    let list = match helper {
        Some((helper, opened)) => list_split(imap, (raw, dated), &mailbox, helper, opened).await?,
        None => imap
            .list_messages(raw, None, dated)
            .await
            .map_err(imap_error)?,
    };
    let observation = Observation {
        validity,
        cursor: mailbox.highestmodseq.filter(|_| use_condstore).unwrap_or(0),
        kind: ObservationKind::Full,
        changed: list
            .iter()
            .map(|m| observed(mailbox.uidvalidity, m))
            .collect(),
        vanished: Vec::new(),
    };
    if let Some(keep) = keep {
        *keep.listed = list;
    }
    Ok(match known {
        Some(c) if is_noop(c, &observation) => None,
        _ => Some(event(observation)),
    })
}

/// Folders with fewer messages are listed on one connection: the second
/// would not be logged in before the first is done.
const SPLIT_LISTING_FROM: u32 = 2_000;
/// The same for a listing without INTERNALDATE, five times cheaper per
/// message on Dovecot: below this, the request's connection has listed its
/// part before the other one has started on its own.
const SPLIT_UNDATED_LISTING_FROM: u32 = 10_000;

/// The full listing of `raw` (selected on `imap`, as `view`) made on two
/// connections at once when the folder is big: Dovecot lists a folder on
/// one core per connection, and at 10,000 messages the listing is most of
/// an initial sync's SyncKey 0. `imap` lists the lower half of the messages
/// (three fifths when the helper is still logging in; up to the UID at that
/// position), `helper` (a connection of the
/// same user being opened with the folder selected: `open_ahead`) the UIDs
/// above, if it is ready by the time `imap` is done with its part and its
/// UIDVALIDITY is `view`'s; otherwise `imap` lists them too. The helper
/// then goes to `opened` (ready, or still opening).
///
/// The union is a full listing as of `view` or later, which is what the
/// observation's cursor (`view`'s HIGHESTMODSEQ) needs: every UID at or
/// below the split is `imap`'s answer, every UID above is the helper's,
/// listed after a NOOP that follows `view` (the helper starts once the
/// split is known), a message expunged before its part was listed is
/// absent (vanished), and a change made after `view` (flags, expunge, new
/// message) has a MODSEQ above the cursor, so the next look reports it
/// again, whichever part saw it.
async fn list_split(
    imap: &mut PooledSession,
    (raw, dated): (&str, bool),
    view: &crate::backends::imap::MailboxView,
    helper: Opening,
    opened: &mut Vec<Opening>,
) -> Result<Vec<MessageMeta>, CommandError> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let n = view.exists.unwrap_or(0);
    // Half each when the helper is ready now (it was idle in the pool);
    // else it starts later (a login): three fifths here.
    let at = match helper.is_finished() {
        true => n / 2,
        false => n / 5 * 3,
    };
    let from = match dated {
        true => SPLIT_LISTING_FROM,
        false => SPLIT_UNDATED_LISTING_FROM,
    };
    let split = match n >= from {
        true => imap.uid_at(raw, at).await.map_err(imap_error)?,
        false => None,
    };
    let Some(split) = split else {
        opened.push(helper);
        return imap
            .list_messages(raw, None, dated)
            .await
            .map_err(imap_error);
    };
    // Whoever sets it first lists the UIDs above `split`.
    let claimed = std::sync::Arc::new(AtomicBool::new(false));
    let upper = {
        let (claimed, raw, validity) = (claimed.clone(), raw.to_owned(), view.uidvalidity);
        tokio::spawn(async move {
            let mut helper = helper.await.unwrap_or_else(|e| {
                Err(crate::backends::imap::ImapError::Protocol(format!(
                    "listing connection: {e}"
                )))
            })?;
            if claimed.swap(true, Ordering::SeqCst) {
                return Ok((helper, None));
            }
            // Its view brought up to date first (a NOOP): it was selected
            // before the request's own look, maybe long before (idle in the
            // pool), and a message added or expunged meanwhile, below the
            // cursor, would otherwise never be seen.
            let list = match helper.refresh(&raw).await {
                Ok(Some(v)) if v.uidvalidity == validity => {
                    helper
                        .list_uid_range(&raw, (split.saturating_add(1), None), dated)
                        .await
                }
                Ok(_) => Err(crate::backends::imap::ImapError::Protocol(
                    "listing connection: another UIDVALIDITY".into(),
                )),
                Err(e) => Err(e),
            };
            if list.is_ok() {
                helper.count_split_listing();
            }
            Ok::<_, crate::backends::imap::ImapError>((helper, Some(list)))
        })
    };
    if imap.holds_listing_for_helper() {
        // Test hook (`ImapPool::hold_listings_for_helper`): the helper takes
        // the upper part first, every time.
        while !claimed.load(Ordering::SeqCst) && !upper.is_finished() {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }
    let mut list = imap
        .list_uid_range(raw, (1, Some(split)), dated)
        .await
        .map_err(imap_error)?;
    let rest = if claimed.swap(true, Ordering::SeqCst) {
        // The helper took them: its answer.
        match upper.await {
            Ok(Ok((helper, Some(Ok(rest))))) => {
                opened.push(tokio::spawn(async move { Ok(helper) }));
                Some(rest)
            }
            // Its listing failed (or saw another UIDVALIDITY): the rest is
            // listed here, and that connection is not reused.
            _ => None,
        }
    } else {
        opened.push(tokio::spawn(async move {
            match upper.await {
                Ok(Ok((helper, _))) => Ok(helper),
                Ok(Err(e)) => Err(e),
                Err(e) => Err(crate::backends::imap::ImapError::Protocol(format!(
                    "listing connection: {e}"
                ))),
            }
        }));
        None
    };
    let rest = match rest {
        Some(rest) => rest,
        None => imap
            .list_uid_range(raw, (split.saturating_add(1), None), dated)
            .await
            .map_err(imap_error)?,
    };
    list.extend(rest);
    Ok(list)
}

/// The items of `c` on the server (under `uidvalidity`) whose UIDs the
/// VANISHED `ranges` (sorted, disjoint) name, by UID. The server's ranges may cover UIDs that
/// never existed (`1:4000000000`), so the cheaper side is walked: the
/// ranges' UIDs looked up when they are fewer than the items, otherwise
/// the items tested against the ranges.
fn vanished_known(
    c: &opush_engine::CollectionState,
    uidvalidity: u32,
    ranges: &[std::ops::RangeInclusive<u32>],
) -> Vec<BackendItemId> {
    let on_server = |id: &BackendItemId| c.items.get(id).is_some_and(|i| i.server.is_some());
    let total: u64 = ranges
        .iter()
        .map(|r| u64::from(r.start().abs_diff(*r.end())) + 1)
        .sum();
    let mut uids: Vec<u32> = if total <= c.items.len() as u64 {
        ranges
            .iter()
            .flat_map(|r| r.clone())
            .filter(|uid| on_server(&item_id(uidvalidity, *uid)))
            .collect()
    } else {
        c.items
            .iter()
            .filter(|(_, i)| i.server.is_some())
            .filter_map(|(id, _)| uid_of(id))
            .filter(|(v, uid)| {
                // Sorted and disjoint: the one range that may hold `uid`.
                let i = ranges.partition_point(|r| r.start() <= uid);
                *v == uidvalidity && i > 0 && ranges[i - 1].contains(uid)
            })
            .map(|(_, uid)| uid)
            .collect()
    };
    uids.sort_unstable();
    uids.dedup();
    uids.into_iter()
        .map(|uid| item_id(uidvalidity, uid))
        .collect()
}

/// Whether the watcher's `status` of a folder shows it as the device last
/// synced it into `c` (`[push] sync_watch_s`): the same UIDVALIDITY, and
/// its HIGHESTMODSEQ the collection's cursor, with the collection's
/// FilterType kept (a new one may list the folder again). What a STATUS
/// of the folder equal to these would mean in [`observe_keeping`].
pub(crate) fn unchanged_since(
    status: Option<FolderStatus>,
    c: Option<&opush_engine::CollectionState>,
    filter: Option<FilterType>,
) -> bool {
    let (Some(st), Some(c)) = (status, c) else {
        return false;
    };
    c.cursor > 0
        && c.validity == Some(u64::from(st.uidvalidity))
        && st.highestmodseq == Some(c.cursor)
        && filter.is_none_or(|f| f == c.filter)
}

/// True when folding `obs` would change nothing in `c`.
fn is_noop(c: &opush_engine::CollectionState, obs: &Observation) -> bool {
    if c.validity != Some(obs.validity) || c.cursor != obs.cursor || !obs.vanished.is_empty() {
        return false;
    }
    let same = obs.changed.iter().all(|o| {
        c.items.get(&o.id).and_then(|i| i.server).is_some_and(|s| {
            s.version == o.version && (s.received_at == o.received_at || !o.received_at.is_dated())
        })
    });
    match obs.kind {
        ObservationKind::Delta => same,
        ObservationKind::Full => {
            same && c.items.values().filter(|i| i.server.is_some()).count() == obs.changed.len()
        }
    }
}

/// What one collection of the request needs beyond the engine.
struct Prepared<'r> {
    wire: &'r SyncCollectionRequest,
    raw: Option<String>,
    request: EngineRequest,
}

/// Sync without HTTP.
pub async fn sync(
    req: &SyncRequest,
    version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<SyncResponse, CommandError> {
    let mut session = eas
        .sessions
        .open(caller.device_key()?)
        .await
        .map_err(session_error)?;
    // Device changes are carried out on IMAP (step 3) before the append:
    // the device's lease keeps another opush process from doing the same
    // at once (a no-change Sync takes none: no cost there).
    let changes = req
        .collections
        .iter()
        .any(|c| c.commands.as_ref().is_some_and(|cmds| !cmds.is_empty()));
    let lease = if changes {
        Some(session.lease().await?)
    } else {
        None
    };
    let mut rec = Recorder::exclusive(&mut session, eas, Command::Sync);
    let ahead = Ahead {
        cache: eas.imap.read_ahead(),
        device: caller.device_key()?.to_string(),
        wait: std::time::Duration::from_millis(eas.imap.config().timeout_ms),
    };
    // A connection that kept one of these folders selected (a device's
    // last Sync) answers a no-change Sync with a NOOP (see the end).
    let folders: Vec<String> = req
        .collections
        .iter()
        .filter_map(|w| CollectionId::parse(&w.collection_id.0))
        .filter_map(|c| rec.state().hierarchy.ids.get(&c).map(|b| b.0.clone()))
        .collect();
    let mut imap = Conn {
        eas,
        caller,
        folders,
        session: None,
    };
    // Without the user's watcher (`[push] sync_watch_s`) every Sync asks
    // IMAP: its connection is taken at once, as always.
    if eas.push.settings().sync_watch.is_zero() {
        imap.get().await?;
    }
    // The Trash folder, looked up (LIST) only when a delete moves a message.
    let mut trash: Option<Option<String>> = None;
    let at = rec.at();
    let req_id = rec.req_id();
    let mut answers = Vec::new();
    for wire in &req.collections {
        let prepared = prepare(wire, rec.state(), req.window_size);
        let Some(mut prepared) = prepared else {
            answers.push((wire, None, None));
            continue;
        };
        let first = prepared.request.sync_key == EngineKey::ZERO;
        let window = prepared
            .request
            .window_size
            .unwrap_or(eas.engine.default_window)
            .clamp(1, eas.engine.max_window.max(1)) as usize;
        // An initial sync: the connections its first read-aheads will use
        // log in and select the folder now, beside this Sync's listing.
        // One of them may first list part of a big folder (`list_split`).
        // The request's own connection first: the read-aheads would
        // otherwise take the user's last free ones, and the request would
        // wait for them while their helper waits for its listing.
        if first && prepared.raw.is_some() {
            imap.get().await?;
        }
        let (mut helper, mut opened) = match (&prepared.raw, first) {
            (Some(raw), true) => open_ahead(raw, caller, eas, false),
            _ => (None, Vec::new()),
        };
        // 2. Observe: not when the user's watcher shows the folder as the
        // device last synced it (`[push] sync_watch_s`) and nothing else
        // needs IMAP.
        let commands = wire.commands.as_ref().is_some_and(|c| !c.is_empty());
        if let Some(raw) = &prepared.raw {
            let collection = prepared.request.collection;
            let quiet = !first
                && !commands
                && unchanged_since(
                    eas.push.quiet_status(caller.user, raw),
                    rec.state().collections.get(&collection),
                    prepared.request.filter,
                );
            let mut listed = Vec::new();
            let keep = first.then_some(Keep {
                listed: &mut listed,
                helper: &mut helper,
                opened: &mut opened,
            });
            let observed = if quiet {
                crate::obs::metrics::folder_from_watcher();
                Ok(None)
            } else {
                observe_keeping(
                    imap.get().await?,
                    raw,
                    (collection, rec.state()),
                    (req_id, at),
                    Look {
                        filter: prepared.request.filter,
                        status: None,
                    },
                    keep,
                )
                .await
            };
            let observed = match observed {
                Ok(observed) => observed,
                // The folder was deleted (or renamed) by another client
                // since the device's last FolderSync: this collection is
                // answered Status 12 (the hierarchy changed, [MS-ASCMD]
                // 2.2.3.177.17), nothing it carries is carried out, and
                // the other collections go on. A transient error instead
                // would have the device retry for ever.
                Err(e) if e.is_mailbox_missing() => {
                    tracing::info!(folder = %raw, "the folder is gone: Status 12");
                    answers.push((wire, None, None));
                    continue;
                }
                Err(e) => return Err(e),
            };
            opened.extend(helper.take());
            if let Some(ev) = observed {
                if first {
                    let filter = prepared
                        .request
                        .filter
                        .or_else(|| rec.state().collections.get(&collection).map(|c| c.filter));
                    let request = (filter, prepared.request.window_size, window);
                    let listing = (raw.as_str(), listed);
                    let to = (&ahead, &mut opened, caller);
                    read_ahead_first(&ev, listing, request, at, to, eas);
                }
                rec.observed(ev);
            }
        }
        // The sizes of the messages the device Fetches, for the engine's
        // bytes budget (their metadata serves the rendering too).
        let prefs = body_preferences(wire);
        let fetched = match prepared.raw.as_deref() {
            Some(raw) => {
                let to = (&mut prepared.request, (prefs.as_slice(), version));
                size_fetches(&mut imap, raw, rec.state(), to).await?
            }
            None => Metas::default(),
        };
        // 3. Carry out the device's changes.
        let effects = plan_sync(rec.state(), &prepared.request);
        let mut outcomes = Vec::with_capacity(effects.len());
        let draft_author = crate::draft::Author::of(&eas.send, caller.user);
        let author = DraftAuthor {
            author: &draft_author,
            user: caller.user,
            device_id: caller.device_id,
            host: &eas.send.host,
        };
        for effect in &effects {
            let moves = prepared.wire.deletes_as_moves.unwrap_or(true);
            let imap = imap.get().await?;
            if trash.is_none() && moves && matches!(effect, BackendEffect::Delete { .. }) {
                trash = Some(trash_for_deletes(imap).await?);
            }
            let outcome = perform(
                imap,
                effect,
                &prepared,
                rec.state(),
                trash.as_ref().and_then(|t| t.as_deref()),
                version,
                &author,
            )
            .await;
            // `[receipt] read`: a message the device marked read may ask for a receipt.
            if let (true, EffectOutcome::Updated(_), BackendEffect::Update { collection, id, .. }) =
                (eas.send.read_receipt, &outcome, effect)
            {
                let read = change_for(&prepared, rec.state(), *collection, id)
                    .is_some_and(|e| e.read == Some(true));
                if let (true, Some(raw), Some((_, uid))) =
                    (read, prepared.raw.as_deref(), uid_of(id))
                {
                    // Boxed: an SMTP submission's futures would otherwise
                    // size every Sync's (copied whole on each request).
                    let receipt =
                        super::compose::read_receipt(imap, raw, uid, &eas.send, caller.user);
                    Box::pin(receipt).await;
                }
            }
            outcomes.push(outcome);
        }
        // 4. Decide.
        // The device's next windows (`window` above): after this one
        // (MoreAvailable) or, after SyncKey 0, its first ones, of the size
        // it asks (at SyncKey 0 devices mostly ask none: the default then;
        // a larger guess cost more than it saved at WindowSize 100, see
        // docs/BENCHMARKS.md).
        let mut input = SyncInput {
            request: prepared.request,
            outcomes,
        };
        let mismatch = |e: opush_engine::StepError| CommandError::BackendFailed {
            backend: "engine",
            kind: "plan_mismatch",
            reason: format!("sync: {e}"),
        };
        let mut decision = decide_sync(rec.state(), &input, at, &eas.engine).map_err(mismatch)?;
        // What was read ahead for this window (waiting for a fetch under
        // way): bodies as they are, metadata only where current.
        let (mut metas, bodies) = match prepared.raw.as_deref() {
            Some(raw) => take_read_ahead(&ahead, raw, &decision.response).await,
            None => Default::default(),
        };
        // A window whose messages exceed the bytes budget is decided again,
        // smaller (the engine then answers MoreAvailable). The metadata
        // fetched for the sizes serves the rendering too. The Fetches the
        // engine answered come first: the window gets what they left (its
        // first message goes whatever its size).
        if let Some(raw) = prepared.raw.as_deref() {
            let max_message = eas.imap.config().max_message_bytes;
            let spent: u64 = decision
                .response
                .replies
                .iter()
                .filter(|r| r.kind == ReplyKind::Fetch && r.status == 1)
                .filter_map(|r| r.backend.as_ref().and_then(uid_of))
                .filter_map(|(_, uid)| fetched.get(&uid))
                .map(|m| fetch_estimate(m, max_message, (&prefs, version)))
                .sum();
            let budget = match eas.engine.max_window_bytes {
                0 => 0,
                b => b.saturating_sub(spent).max(1),
            };
            let cut = window_cut(
                &mut imap,
                raw,
                &decision.response,
                budget,
                (&prefs, version),
                &mut metas,
            );
            if let Some(n) = cut.await? {
                input.request.window_size = Some(n);
                decision = decide_sync(rec.state(), &input, at, &eas.engine).map_err(mismatch)?;
            }
        }
        let response = rec.decided(DecisionInput::Sync(input), decision);
        // A device caught up on a mail folder: the user's watcher keeps
        // watching it, for the next no-change Syncs (`[push] sync_watch_s`;
        // not during an initial sync, whose windows it would slow down).
        let watching = !eas.push.settings().sync_watch.is_zero();
        if let (true, false, false, Some(raw)) = (
            watching,
            first,
            response.more_available,
            prepared.raw.as_deref(),
        ) {
            let login = super::ping::watch_login(caller, eas);
            eas.push.keep_watching(caller.user, login, raw);
        }
        // 8. The next windows are decided by the next Syncs, but their
        // likely messages are known now: read them ahead on other
        // connections while this window is rendered, recorded and read by
        // the device (a cache of IMAP data: see `backends::imap::ahead`).
        // A window that ends the sync: what is still read ahead will not
        // be asked for.
        let next = (response.more_available || first) && response.status == EngineStatus::Success;
        match (next, prepared.raw.as_deref()) {
            (true, Some(raw)) => {
                let to = (response.collection, raw, window);
                read_ahead_next(&ahead, rec.state(), to, &mut opened, caller, eas);
            }
            (false, Some(raw)) => ahead.cache.forget(&ahead.device, raw),
            (_, None) => {}
        }
        for (uid, m) in fetched.into_iter() {
            metas.entry(uid).or_insert(m);
        }
        answers.push((wire, Some(prepared.raw), Some((response, (metas, bodies)))));
    }
    // 5. Record before answering, and 7. fetch and render meanwhile: the
    // append waits on the disk, the rendering on IMAP and the CPU; the
    // answer leaves only once both are done (a new SyncKey is never sent
    // before its events are durable).
    let more = answers.iter().any(|(_, _, response)| {
        response
            .as_ref()
            .is_some_and(|(r, _)| r.more_available && r.status == EngineStatus::Success)
    });
    // Only SyncKey 0 requests: nothing was synced yet.
    let initial = req
        .collections
        .iter()
        .all(|c| c.sync_key.0 == "0" || c.sync_key.0.is_empty());
    // 16.x drafts that gained attachments: the answer names their FileReferences.
    let drafts: Vec<crate::draft::AddedAttachments<'_>> = answers
        .iter()
        .map(|(wire, _, response)| match response {
            Some((r, _)) => crate::draft::added_attachments(wire, rec.state(), r),
            None => Default::default(),
        })
        .collect();
    let render_all = async {
        let mut collections = Vec::with_capacity(answers.len());
        for ((wire, raw, response), drafts) in answers.into_iter().zip(drafts) {
            let Some((r, (metas, bodies))) = response else {
                collections.push(SyncCollectionResponse {
                    sync_key: WireKey(String::new()),
                    collection_id: wire.collection_id.clone(),
                    status: Some(SyncStatus::from_code(12)),
                    ..SyncCollectionResponse::default()
                });
                continue;
            };
            let prefs = body_preferences(wire);
            collections.push(
                render(
                    &mut imap,
                    r,
                    Source {
                        raw: raw.flatten().as_deref(),
                        metas,
                        bodies,
                        drafts,
                    },
                    &prefs,
                    version,
                    wire,
                )
                .await?,
            );
        }
        Ok::<_, CommandError>(collections)
    };
    let (committed, rendered) = tokio::join!(session.commit_request(rec), render_all);
    committed.map_err(session_error)?;
    if let Some(lease) = lease {
        lease.release().await;
    }
    let collections = rendered?;
    // A caught-up device's next Sync most likely finds nothing. INBOX
    // stays selected on this connection, and that Sync is a NOOP there
    // (`Session::refresh`; the pool hands it this connection, see
    // `imap_selecting`). A STATUS of INBOX costs Dovecot (maildir,
    // mailbox list index) a read of the whole UID list once the connection
    // has the list index open: 2-9 ms at 10,000 messages
    // (docs/BENCHMARKS.md, "Session 7: no-change STATUS"). Any other
    // folder is left, off the answer's path, so that Sync is one STATUS
    // (Dovecot answers it from the list index) and the folder can be
    // deleted elsewhere without ending this connection (Dovecot says BYE
    // to a session whose selected mailbox was deleted; INBOX cannot be).
    // Only with UNSELECT: CLOSE would expunge. Not after SyncKey 0 alone:
    // the device asks its first window next (and another device's windows
    // may be using this selection).
    // (A Sync that needed no connection has none to leave.)
    if let Some(mut imap) = imap.session.take() {
        let leave = imap
            .selected_mailbox()
            .is_some_and(|m| !m.eq_ignore_ascii_case("INBOX"));
        if !more && !initial && leave && imap.has("UNSELECT") {
            tokio::spawn(async move {
                let _ = imap.unselect().await;
            });
        }
    }
    drop(session);
    Ok(SyncResponse {
        status: None,
        limit: None,
        collections,
    })
}

/// The Sync's pooled IMAP connection, checked out when first needed (the
/// pool hands one that has the request's folders selected, see
/// `EasServices::imap_selecting`). A no-change Sync that the user's
/// watcher answers (`[push] sync_watch_s`) reads and carries out nothing
/// on IMAP: it takes no connection, and a user whose devices Sync without
/// changes leaves the pool's connections to expire. Without the watcher,
/// and before an initial sync opens its read-aheads (which would take the
/// user's last free connections), it is taken at the start.
struct Conn<'a, 'c> {
    eas: &'a EasServices,
    caller: &'a Caller<'c>,
    /// The mail folders of the request, for the pool's choice.
    folders: Vec<String>,
    session: Option<PooledSession>,
}

impl Conn<'_, '_> {
    /// The connection, checked out now if it was not yet (boxed: the pool's
    /// checkout would otherwise size every Sync's future, copied whole on
    /// each request).
    async fn get(&mut self) -> Result<&mut PooledSession, CommandError> {
        let session = match self.session.take() {
            Some(session) => session,
            None => Box::pin(self.eas.imap_selecting(self.caller, &self.folders)).await?,
        };
        Ok(self.session.insert(session))
    }
}

/// Message metadata by UID, fetched once per window.
type Metas = crate::backends::imap::UidMap<MessageMeta>;
/// Whole messages by UID.
type Bodies = crate::backends::imap::UidMap<Vec<u8>>;

/// Where a window's rendering looks for messages read ahead.
struct Ahead<'a> {
    cache: &'a crate::backends::imap::ahead::ReadAhead,
    device: String,
    /// Longest wait for a read-ahead still running (the IMAP timeout).
    wait: std::time::Duration,
}

/// What was read ahead for the window `r` adds, waiting for a fetch still
/// under way: every body (a message's content never changes under one
/// UIDVALIDITY), and the metadata of the messages with the flags the
/// engine decided to send (`decided_flags`: their own when their version
/// is the Add's, learnt by the look this window was decided on, or those
/// the version tells). Metadata whose flags cannot be told (keywords
/// changed since) is fetched again.
async fn take_read_ahead(
    ahead: &Ahead<'_>,
    raw: &str,
    r: &opush_engine::SyncResponse,
) -> (Metas, Bodies) {
    let versions = added_versions(r);
    let validity = r.changes.iter().find_map(|c| match c {
        ServerChange::Add { id, .. } => uid_of(id).map(|(v, _)| v),
        _ => None,
    });
    let Some(validity) = validity else {
        return Default::default();
    };
    let uids: Vec<u32> = versions.keys().copied().collect();
    let mut got = ahead
        .cache
        .take(&ahead.device, raw, validity, &uids, ahead.wait)
        .await;
    got.metas
        .retain(|uid, m| versions.get(uid).is_some_and(|v| decided_flags(m, *v)));
    (got.metas, got.bodies)
}

/// The version each message `r` adds is sent at, by UID (those of the
/// first Add's UIDVALIDITY).
fn added_versions(r: &opush_engine::SyncResponse) -> crate::backends::imap::UidMap<ItemVersion> {
    let mut validity = None;
    let mut versions = crate::backends::imap::UidMap::default();
    for change in &r.changes {
        if let ServerChange::Add { id, version, .. } = change {
            if let Some((v, uid)) = uid_of(id) {
                if *validity.get_or_insert(v) == v {
                    versions.insert(uid, *version);
                }
            }
        }
    }
    versions
}

/// How many windows a device's read-ahead holds: [`ahead::DEPTH`], and
/// at most one fewer than the user's connections (`[imap] pool_size`): a
/// read-ahead must not hold the one the device's next Sync needs.
///
/// [`ahead::DEPTH`]: crate::backends::imap::ahead::DEPTH
fn ahead_depth(eas: &EasServices) -> usize {
    crate::backends::imap::ahead::DEPTH.min(eas.imap.config().pool_size.saturating_sub(1))
}

/// A connection of the caller's user opened for a read-ahead, or being
/// opened.
type Opening = tokio::task::JoinHandle<Result<PooledSession, crate::backends::imap::ImapError>>;

/// Longest wait for a pool slot when opening a read-ahead connection at
/// SyncKey 0 (a login itself takes milliseconds).
const OPEN_AHEAD_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Opens, in the background, the connection an initial sync's
/// read-aheads will take turns on (the device's lane, see
/// `backends::imap::ahead`), logged in with `raw` selected, so the
/// read-ahead that follows the SyncKey 0 listing starts fetching at once.
/// It is first (returned apart) the listing's helper ([`list_split`]).
/// One, not one per read-ahead: each Dovecot session that reads a big
/// folder's messages pays for its UID list again. Nothing more is done on
/// them meanwhile: on Dovecot's maildir a session's first access to a
/// message loads the folder's UID list (~14 ms of its CPU at 10,000
/// messages), and paid here it slowed the listing more than it saved the
/// first read-aheads (two cores; docs/BENCHMARKS.md, session 7). It is
/// its own pooled connection (growing the pool at once, within its
/// bounds); not used, it goes back to the pool idle when its handle is
/// dropped. Opened only when no read-ahead of this device is held (a
/// device repeating SyncKey 0 has its connection). `spare`: opened ahead
/// of the SyncKey 0 (`prewarm_initial_sync`), whose own `open_ahead` then
/// waits for this login instead of starting another (each login is a
/// Dovecot process started beside that Sync's listing: ~6 ms of its CPU).
fn open_ahead(
    raw: &str,
    caller: &Caller<'_>,
    eas: &EasServices,
    spare: bool,
) -> (Option<Opening>, Vec<Opening>) {
    let depth = ahead_depth(eas);
    let Ok(device) = caller.device_key() else {
        return (None, Vec::new());
    };
    if depth == 0 || eas.imap.read_ahead().entries(&device.to_string()) > 0 {
        return (None, Vec::new());
    }
    // One lane per device, whatever the depth.
    let mut opened: Vec<Opening> = (0..depth.min(1))
        .map(|_| {
            let pool = eas.imap.clone();
            let (user, password) = (caller.user.to_owned(), caller.password.clone());
            let raw = raw.to_owned();
            tokio::spawn(crate::origin::carry(async move {
                let checkout = async {
                    match (pool.config().master_for_requests, spare) {
                        (true, false) => pool.get_master_eager(&user).await,
                        (true, true) => pool.get_master_spare(&user).await,
                        (false, false) => pool.get_eager(&user, &password).await,
                        (false, true) => pool.get_spare(&user, &password).await,
                    }
                };
                // A window waits for this connection from the start: not
                // for a pool slot the user's other work holds (the window
                // then fetches its messages itself).
                let mut imap = tokio::time::timeout(OPEN_AHEAD_WAIT, checkout)
                    .await
                    .map_err(|_| {
                        crate::backends::imap::ImapError::Unavailable(
                            "no IMAP connection free for a read-ahead".into(),
                        )
                    })??;
                // Selects it unless this (pooled) connection has it already.
                if imap.selected_view(&raw).is_none() {
                    imap.select(&raw).await?;
                }
                Ok(imap)
            }))
        })
        .collect();
    let helper = (!opened.is_empty()).then(|| opened.remove(0));
    (helper, opened)
}

/// Logs in, in the background, the connections a device's initial sync of
/// INBOX reads ahead on ([`open_ahead`]: INBOX selected), when the device
/// asks for its folder hierarchy from scratch (FolderSync with SyncKey 0):
/// its Syncs of SyncKey 0 follow at once, and a login (~10 ms on Dovecot:
/// a process started, the password checked) is then made before that
/// Sync's listing instead of beside it, so the listing's helper
/// ([`list_split`]) is ready in time. They wait in the pool as idle
/// connections, closed after `[imap] pool_idle_timeout_s` when unused.
pub(crate) fn prewarm_initial_sync(caller: &Caller<'_>, eas: &EasServices) {
    // Detached: each connection goes back to the pool when its task ends.
    // Spare: this Sync's own `open_ahead` waits for their logins instead
    // of starting more (`ImapPool::get_spare`).
    let (helper, opened) = open_ahead("INBOX", caller, eas, true);
    drop((helper, opened));
}

/// A full listing at SyncKey 0 (`ev`, its messages `listed`) names the
/// first windows' messages already: they are read ahead while it is
/// folded and recorded, and the listing is kept so those read-aheads fetch
/// only the bodies. The first window of the size asked (`asked`, `window`
/// when the device named one); a device that asks none at SyncKey 0 (most
/// do not) gets the default first, then up to the largest window, so that
/// a device asking large windows finds its first one read ahead whole, and
/// one asking small ones its next few (a read-ahead a window does not use
/// waits for the next ones).
fn read_ahead_first(
    ev: &Event,
    (raw, listed): (&str, Vec<MessageMeta>),
    (filter, asked, window): (Option<FilterType>, Option<u32>, usize),
    at: Timestamp,
    (ahead, opened, caller): (&Ahead<'_>, &mut Vec<Opening>, &Caller<'_>),
    eas: &EasServices,
) {
    let sizes = match asked {
        Some(_) => (window, window),
        None => {
            let max = eas.engine.max_window.max(1) as usize;
            (window, max.saturating_sub(window).max(window))
        }
    };
    let most = sizes.0 + sizes.1 * ahead_depth(eas).saturating_sub(1);
    if let (Event::BackendObserved { observation, .. }, false) = (ev, listed.is_empty()) {
        let validity = u32::try_from(observation.validity).unwrap_or(0);
        let listing = (raw.to_owned(), validity);
        ahead
            .cache
            .keep_listing(ahead.device.clone(), listing, listed);
    }
    if let Some(guess) = initial_guess(ev, (filter, eas.engine.page_order), at, most) {
        start_read_ahead(ahead, guess, (raw, sizes), opened, caller, eas);
    }
}

/// The messages a SyncKey 0's first windows will carry (their UIDVALIDITY
/// and UIDs, `most` at most), from the full listing `ev` observed, before
/// it is folded: after a SyncKey 0 every listed message the `filter`
/// window keeps is due, in the engine's candidate order (`order`, newest
/// first as the server decides). A guess only, as [`next_window_guess`]: `None` for anything
/// but a full listing.
fn initial_guess(
    ev: &Event,
    (filter, order): (Option<FilterType>, PageOrder),
    at: Timestamp,
    most: usize,
) -> Option<(u32, Vec<u32>)> {
    let Event::BackendObserved { observation, .. } = ev else {
        return None;
    };
    if observation.kind != ObservationKind::Full || most == 0 {
        return None;
    }
    let cutoff = filter.and_then(|f| f.cutoff(at));
    let mut due: Vec<(PageKey<'_>, &ObservedItem)> = observation
        .changed
        .iter()
        .filter(|o| cutoff.is_none_or(|c| o.received_at >= c))
        .map(|o| (order.key(&o.id), o))
        .collect();
    if due.len() > most {
        due.select_nth_unstable_by(most - 1, |a, b| a.0.cmp(&b.0));
        due.truncate(most);
    }
    due.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut validity = None;
    let uids: Vec<u32> = due
        .iter()
        .filter_map(|(_, o)| uid_of(&o.id))
        .filter(|(v, _)| *validity.get_or_insert(*v) == *v)
        .map(|(_, u)| u)
        .collect();
    Some((validity?, uids)).filter(|(_, u)| !u.is_empty())
}

/// Starts reading ahead the next windows (of `window` items) of
/// `collection` (folder `raw`), guessed from `state` (the state with this
/// window decided): [`start_read_ahead`].
fn read_ahead_next(
    ahead: &Ahead<'_>,
    state: &opush_engine::DeviceState,
    (collection, raw, window): (CollectionId, &str, usize),
    opened: &mut Vec<Opening>,
    caller: &Caller<'_>,
    eas: &EasServices,
) {
    let depth = ahead_depth(eas);
    if depth == 0 {
        return;
    }
    if let Some(guess) =
        next_window_guess(state, (collection, eas.engine.page_order), depth * window)
    {
        start_read_ahead(ahead, guess, (raw, (window, window)), opened, caller, eas);
    }
}

/// Starts reading ahead `uids` (under `validity`) of folder `raw`, in
/// entries of `first` messages, then `rest` each, as many as the cache
/// holds per device ([`ahead_depth`]), taking turns on the device's lane
/// (`opened`'s connection, then the one the lane used last, from the
/// pool); messages already being read ahead are not asked again.
fn start_read_ahead(
    ahead: &Ahead<'_>,
    (validity, uids): (u32, Vec<u32>),
    (raw, (first, rest)): (&str, (usize, usize)),
    opened: &mut Vec<Opening>,
    caller: &Caller<'_>,
    eas: &EasServices,
) {
    let depth = ahead_depth(eas);
    let (covered, held) = ahead.cache.covered(&ahead.device, raw, validity);
    let fresh: Vec<u32> = uids.into_iter().filter(|u| !covered.contains(u)).collect();
    let (head, tail) = fresh.split_at(first.max(1).min(fresh.len()));
    let chunks = std::iter::once(head)
        .chain(tail.chunks(rest.max(1)))
        .filter(|c| !c.is_empty());
    for chunk in chunks.take(depth.saturating_sub(held)) {
        let opening = opened.pop();
        let ready = opening.is_some();
        let connect: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match opening
        {
            Some(opening) => Box::pin(async move {
                opening.await.unwrap_or_else(|e| {
                    Err(crate::backends::imap::ImapError::Protocol(format!(
                        "read-ahead connection: {e}"
                    )))
                })
            }),
            None => {
                let pool = eas.imap.clone();
                let (user, password) = (caller.user.to_owned(), caller.password.clone());
                let lane = ahead.device.clone();
                // Its own connection at once: waiting `pool_grow_after_ms`
                // for one to come back would leave it behind the window it
                // prepares. The lane's, when idle.
                Box::pin(async move {
                    if pool.config().master_for_requests {
                        pool.get_master_lane(&user, &lane).await
                    } else {
                        pool.get_lane(&user, &password, &lane).await
                    }
                })
            }
        };
        ahead.cache.start(
            ahead.device.clone(),
            (raw.to_owned(), validity),
            chunk.to_vec(),
            // Large messages are rendered from their skeleton, not read
            // ahead.
            (large_above(eas.imap.config().max_message_bytes), ready),
            connect,
        );
    }
}

/// The UIDs (and their UIDVALIDITY) the next window of `collection` will
/// most likely add, `window` at most: the dirty items after the issued
/// batch that are on the server and not on the device, in the engine's
/// candidate order. A guess only: it decides what is fetched early, never
/// what is sent.
fn next_window_guess(
    state: &opush_engine::DeviceState,
    (collection, order): (CollectionId, PageOrder),
    window: usize,
) -> Option<(u32, Vec<u32>)> {
    let c = state.collections.get(&collection)?;
    let issued: std::collections::HashSet<&BackendItemId, foldhash::fast::RandomState> = c
        .pending
        .iter()
        .flat_map(|p| p.batch.changes.iter().map(ServerChange::id))
        .collect();
    let mut validity = None;
    let mut uids = Vec::with_capacity(window);
    for id in c.dirty.iter_in(order) {
        if uids.len() >= window {
            break;
        }
        if issued.contains(id) {
            continue;
        }
        let due = c
            .items
            .get(id)
            .is_some_and(|i| i.server.is_some() && i.device.is_none() && !i.filtered_out);
        let Some((v, uid)) = uid_of(id).filter(|_| due) else {
            continue;
        };
        if *validity.get_or_insert(v) == v {
            uids.push(uid);
        }
    }
    Some((validity?, uids)).filter(|(_, u)| !u.is_empty())
}

/// The number of leading changes of `r` whose rendered Emails fit in
/// `budget` bytes (at least one), when fewer than all of them do. What an
/// Email adds is estimated from its RFC822.SIZE and the body preference
/// (`email::body::rendered_estimate`: a truncated body counts its
/// truncation size, a MIME body the whole message): no body is fetched.
/// Metadata already in `metas` (read ahead) is used; what it fetched is
/// left there (the rendering uses it).
async fn window_cut(
    imap: &mut Conn<'_, '_>,
    raw: &str,
    r: &opush_engine::SyncResponse,
    budget: u64,
    (prefs, version): (&[BodyPreference], ProtocolVersion),
    metas: &mut Metas,
) -> Result<Option<u32>, CommandError> {
    let uid = |c: &ServerChange| match c {
        ServerChange::Add { id, .. } => uid_of(id).map(|(_, u)| u),
        _ => None,
    };
    let uids: Vec<u32> = r.changes.iter().filter_map(uid).collect();
    if budget == 0 || uids.len() < 2 {
        return Ok(None);
    }
    // Those read ahead (and current) are not asked again.
    let missing: Vec<u32> = uids
        .iter()
        .copied()
        .filter(|u| !metas.contains_key(u))
        .collect();
    if !missing.is_empty() {
        let imap = imap.get().await?;
        for m in imap.fetch_meta(raw, &missing).await.map_err(imap_error)? {
            metas.insert(m.uid, m);
        }
    }
    let mut total = 0u64;
    for (i, change) in r.changes.iter().enumerate() {
        total += uid(change)
            .and_then(|u| metas.get(&u))
            .map_or(0, |m| rendered_estimate(u64::from(m.size), prefs, version));
        if total > budget && i > 0 {
            return Ok(u32::try_from(i).ok());
        }
    }
    Ok(None)
}

/// What the answer to a Fetch of a message is estimated to add: the
/// rendered Email for the BodyPreference (`rendered_estimate`), a message
/// over `[imap] max_message_bytes` counting as that many bytes (its
/// rendering from the skeleton reads no more, `large_email`).
fn fetch_estimate(
    m: &MessageMeta,
    max_message: u64,
    (prefs, version): (&[BodyPreference], ProtocolVersion),
) -> u64 {
    let size = u64::from(m.size);
    rendered_estimate(size.min(max_message), prefs, version)
}

/// Turns each `<Fetch>` of `request` into a `FetchSized` with the bytes
/// its answer is estimated to add (`fetch_estimate` of the message's
/// RFC822.SIZE, which never changes under a UID), so that the engine keeps
/// the Fetches of one answer within `[engine] max_window_bytes` and
/// answers the rest Status 5 (`opush_engine::FETCH_DEFERRED`), which the
/// device asks again. The sizes come in one `UID FETCH`; the metadata is
/// returned for the rendering. A Fetch of an item the folder does not
/// hold stays as it is (the engine answers it 8), as does one whose
/// message vanished (0 bytes: it is sent without a body).
async fn size_fetches(
    imap: &mut Conn<'_, '_>,
    raw: &str,
    state: &opush_engine::DeviceState,
    (request, (prefs, version)): (&mut EngineRequest, (&[BodyPreference], ProtocolVersion)),
) -> Result<Metas, CommandError> {
    let mut metas = Metas::default();
    let collection = request.collection;
    let Some(c) = state.collections.get(&collection) else {
        return Ok(metas);
    };
    let uid_for = |sid: &ServerId| {
        let id = c
            .by_n
            .get(&sid.n)
            .filter(|_| sid.collection == collection)?;
        uid_of(id).map(|(_, uid)| uid)
    };
    let mut uids: Vec<u32> = request
        .commands
        .iter()
        .filter_map(|cmd| match cmd {
            EngineCommand::Fetch { server_id } => uid_for(server_id),
            _ => None,
        })
        .collect();
    if uids.is_empty() {
        return Ok(metas);
    }
    uids.sort_unstable();
    uids.dedup();
    let imap = imap.get().await?;
    for m in imap.fetch_meta(raw, &uids).await.map_err(imap_error)? {
        metas.insert(m.uid, m);
    }
    let max_message = imap.config().max_message_bytes;
    for cmd in &mut request.commands {
        let EngineCommand::Fetch { server_id } = cmd else {
            continue;
        };
        let Some(uid) = uid_for(server_id) else {
            continue;
        };
        let bytes = metas
            .get(&uid)
            .map_or(0, |m| fetch_estimate(m, max_message, (prefs, version)));
        *cmd = EngineCommand::FetchSized {
            server_id: *server_id,
            bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
        };
    }
    Ok(metas)
}

fn prepare<'r>(
    wire: &'r SyncCollectionRequest,
    state: &opush_engine::DeviceState,
    global_window: Option<u32>,
) -> Option<Prepared<'r>> {
    let collection = CollectionId::parse(&wire.collection_id.0)?;
    let sync_key = EngineKey::parse(&wire.sync_key.0)?;
    let raw = state.hierarchy.ids.get(&collection).map(|b| b.0.clone());
    let filter = wire
        .options
        .first()
        .and_then(|o| o.filter_type)
        .and_then(FilterType::from_u8);
    let conflict = wire.options.first().and_then(|o| o.conflict).map(|c| {
        if c == 0 {
            Conflict::ClientWins
        } else {
            Conflict::ServerWins
        }
    });
    let commands = wire
        .commands
        .iter()
        .flatten()
        .filter_map(|c| match c {
            ClientCommand::Add {
                client_id,
                application_data,
                ..
            } => Some(EngineCommand::Add {
                client_id: opush_engine::ClientId(client_id.0.clone()),
                digest: Digest::of(format!("{application_data:?}").as_bytes()),
            }),
            ClientCommand::Change {
                server_id,
                application_data,
                ..
            } => Some(EngineCommand::Change {
                server_id: ServerId::parse(&server_id.0)?,
                digest: Digest::of(format!("{application_data:?}").as_bytes()),
            }),
            ClientCommand::Delete { server_id, .. } => Some(EngineCommand::Delete {
                server_id: ServerId::parse(&server_id.0)?,
            }),
            ClientCommand::Fetch { server_id } => Some(EngineCommand::Fetch {
                server_id: ServerId::parse(&server_id.0)?,
            }),
        })
        .collect();
    Some(Prepared {
        wire,
        raw,
        request: EngineRequest {
            collection,
            sync_key,
            window_size: wire.window_size.or(global_window),
            filter,
            conflict,
            get_changes: wire.get_changes.unwrap_or(sync_key != EngineKey::ZERO),
            commands,
        },
    })
}

fn body_preferences(wire: &SyncCollectionRequest) -> Vec<BodyPreference> {
    wire.options
        .iter()
        .find(|o| o.class.as_deref().is_none_or(|c| c == "Email"))
        .map(|o| o.body_preferences.clone())
        .unwrap_or_default()
}

async fn trash_folder(imap: &mut PooledSession) -> Result<Option<String>, CommandError> {
    let folders = imap.list_folders(false).await.map_err(imap_error)?;
    Ok(folders
        .into_iter()
        .find(|f| f.special == Some(SpecialUse::Trash))
        .map(|f| f.raw_name))
}

/// Where the device's deletes go under `DeletesAsMoves`: the Trash folder
/// ([`trash_folder`]), created (`[imap] folder_trash`, subscribed) for a
/// user who has none, since the device shows the message in Deleted Items
/// and must find it there. `None`: there is none and it could not be
/// created; each delete then fails and the message stays where it is
/// (never expunged in place of the move).
async fn trash_for_deletes(imap: &mut PooledSession) -> Result<Option<String>, CommandError> {
    if let Some(trash) = trash_folder(imap).await? {
        return Ok(Some(trash));
    }
    match imap.create_special_folder(SpecialUse::Trash).await {
        Ok(name) => {
            tracing::info!(target: "MAIL.DATA", folder = %name, "no Trash folder: created it for the device's deletes");
            Ok(Some(name))
        }
        Err(e) if e.is_retryable() => Err(imap_error(e)),
        Err(e) => {
            // Another client may have created one meanwhile.
            let found = trash_folder(imap).await?;
            if found.is_none() {
                tracing::warn!(target: "MAIL.DATA", error = %e, "no Trash folder and it cannot be created: the device's deletes fail");
            }
            Ok(found)
        }
    }
}

/// Carries out one planned effect; a failure is an outcome, not an error.
/// Who adds or edits a draft: the user's identities, and the device (a new
/// draft's Message-ID names user, device and ClientId).
struct DraftAuthor<'a> {
    author: &'a crate::draft::Author,
    user: &'a str,
    device_id: &'a str,
    host: &'a str,
}

async fn perform(
    imap: &mut PooledSession,
    effect: &BackendEffect,
    prepared: &Prepared<'_>,
    state: &opush_engine::DeviceState,
    trash: Option<&str>,
    version: ProtocolVersion,
    author: &DraftAuthor<'_>,
) -> EffectOutcome {
    let Some(raw) = prepared.raw.as_deref() else {
        return EffectOutcome::Failed;
    };
    match effect {
        BackendEffect::Create {
            collection,
            client_id,
            digest,
        } => {
            // [MS-ASCMD] 16.0+: a device may add drafts; other adds of mail
            // are refused.
            let drafts = state
                .collections
                .get(collection)
                .is_some_and(|c| c.folder_type == opush_engine::FolderType::Drafts);
            let Some(email) = add_for(prepared, client_id) else {
                return EffectOutcome::Failed;
            };
            if !drafts || version < ProtocolVersion::V16_0 {
                return EffectOutcome::Failed;
            }
            let message_id = crate::draft::new_draft_id(
                author.user,
                author.device_id,
                &client_id.0,
                &digest.0,
                author.host,
            );
            let message = crate::draft::new_draft(author.author, email, &message_id);
            if message.len() as u64 > imap.config().max_message_bytes {
                tracing::warn!(target: "MAIL.DATA", folder = raw, bytes = message.len(), "new draft too large, not added");
                return EffectOutcome::Failed;
            }
            // A retried Add whose APPEND was made but not recorded (opush
            // killed in between) finds its draft instead of adding another.
            let found = match imap.with_message_id(raw, &message_id).await {
                Ok(uids) => uids.into_iter().max(),
                Err(_) => return EffectOutcome::Failed,
            };
            let uid = match found {
                Some(uid) => uid,
                None => match imap
                    .append(raw, &[Flag::Draft, Flag::Seen], None, &message)
                    .await
                {
                    Ok(Some(uid)) => uid,
                    _ => return EffectOutcome::Failed,
                },
            };
            let Ok(mailbox) = imap.select(raw).await else {
                return EffectOutcome::Failed;
            };
            match imap.fetch_meta(raw, &[uid]).await {
                Ok(metas) => match metas.first() {
                    Some(m) => EffectOutcome::Created(observed(mailbox.uidvalidity, m)),
                    None => EffectOutcome::Failed,
                },
                Err(_) => EffectOutcome::Failed,
            }
        }
        BackendEffect::Update {
            collection,
            id,
            digest,
        } => {
            let Some((_, uid)) = uid_of(id) else {
                return EffectOutcome::Failed;
            };
            let Some(email) = change_for(prepared, state, *collection, id) else {
                return EffectOutcome::Failed;
            };
            // [MS-ASCMD] 16.0+: a draft's recipients, subject or body edited.
            let drafts = state
                .collections
                .get(collection)
                .is_some_and(|c| c.folder_type == opush_engine::FolderType::Drafts);
            if drafts && version >= ProtocolVersion::V16_0 && crate::draft::edits_content(email) {
                let sid = state
                    .collections
                    .get(collection)
                    .and_then(|c| c.items.get(id))
                    .map(|i| ServerId {
                        collection: *collection,
                        n: i.n,
                    })
                    .map(|s| s.to_string())
                    .unwrap_or_default();
                let message_id = crate::draft::edited_draft_id(
                    author.user,
                    author.device_id,
                    &sid,
                    &digest.0,
                    author.host,
                );
                return crate::draft::replace_draft(
                    imap,
                    raw,
                    (uid, &sid),
                    author.author,
                    email,
                    &message_id,
                )
                .await;
            }
            let mut set = Vec::new();
            let mut clear = Vec::new();
            if let Some(read) = email.read {
                if read {
                    set.push(Flag::Seen)
                } else {
                    clear.push(Flag::Seen)
                }
            }
            if let Some(flag) = &email.flag {
                if flag.status == Some(2) {
                    set.push(Flag::Flagged)
                } else {
                    clear.push(Flag::Flagged)
                }
            }
            // The device's list replaces the message's categories; other
            // keywords (other clients' `$MDNSent`, `NonJunk`…) stay.
            if let Some(categories) = &email.categories {
                let current = imap
                    .fetch_meta(raw, &[uid])
                    .await
                    .ok()
                    .and_then(|m| m.into_iter().next())
                    .map(|m| m.flags.keywords)
                    .unwrap_or_default();
                let (remove, add) = crate::email::categories::replace(&current, categories);
                clear.extend(remove.into_iter().map(Flag::Keyword));
                set.extend(add.into_iter().map(Flag::Keyword));
            }
            if !set.is_empty()
                && imap
                    .store_flags(raw, &[uid], &set, true, None)
                    .await
                    .is_err()
            {
                return EffectOutcome::Failed;
            }
            if !clear.is_empty()
                && imap
                    .store_flags(raw, &[uid], &clear, false, None)
                    .await
                    .is_err()
            {
                return EffectOutcome::Failed;
            }
            match imap.fetch_meta(raw, &[uid]).await {
                Ok(metas) => match metas.first() {
                    Some(m) => EffectOutcome::Updated(version_of(&m.flags)),
                    None => EffectOutcome::Failed,
                },
                Err(_) => EffectOutcome::Failed,
            }
        }
        BackendEffect::Delete { id, .. } => {
            let Some((_, uid)) = uid_of(id) else {
                return EffectOutcome::Failed;
            };
            // DeletesAsMoves (the default): to Trash; a delete in Trash
            // itself, or without DeletesAsMoves, is for good. Without a
            // Trash folder (none could be created) the delete fails: the
            // device believes the message went to Deleted Items.
            let as_moves = prepared.wire.deletes_as_moves.unwrap_or(true);
            let done = match trash {
                Some(t) if as_moves && t != raw => {
                    imap.move_messages(raw, &[uid], t).await.map(|_| ())
                }
                None if as_moves => return EffectOutcome::Failed,
                _ => imap.expunge(raw, &[uid]).await,
            };
            match done {
                Ok(()) => EffectOutcome::Deleted,
                Err(_) => EffectOutcome::Failed,
            }
        }
    }
}

/// The Email of the device's `<Add>` with `client_id`.
fn add_for<'r>(
    prepared: &'r Prepared<'_>,
    client_id: &opush_engine::ClientId,
) -> Option<&'r Email> {
    prepared
        .wire
        .commands
        .iter()
        .flatten()
        .find_map(|c| match c {
            ClientCommand::Add {
                client_id: wire_id,
                application_data: ApplicationData::Email(e),
                ..
            } if wire_id.0 == client_id.0 => Some(e.as_ref()),
            _ => None,
        })
}

/// The Email of the device's `<Change>` for backend item `id`.
fn change_for<'r>(
    prepared: &'r Prepared<'_>,
    state: &opush_engine::DeviceState,
    collection: CollectionId,
    id: &BackendItemId,
) -> Option<&'r Email> {
    let col = state.collections.get(&collection)?;
    let n = col.items.get(id)?.n;
    prepared
        .wire
        .commands
        .iter()
        .flatten()
        .find_map(|c| match c {
            ClientCommand::Change {
                server_id,
                application_data: ApplicationData::Email(e),
                ..
            } if ServerId::parse(&server_id.0).map(|s| s.n) == Some(n) => Some(e.as_ref()),
            _ => None,
        })
}

/// Where a window's messages come from: the folder, the metadata and
/// messages fetched already (the window cut, the read-ahead).
struct Source<'a> {
    raw: Option<&'a str>,
    metas: Metas,
    bodies: Bodies,
    /// Drafts whose Add/Change added attachments (`crate::draft`).
    drafts: crate::draft::AddedAttachments<'a>,
}

async fn render(
    imap: &mut Conn<'_, '_>,
    r: opush_engine::SyncResponse,
    Source {
        raw,
        metas,
        bodies,
        drafts,
    }: Source<'_>,
    prefs: &[BodyPreference],
    version: ProtocolVersion,
    wire: &SyncCollectionRequest,
) -> Result<SyncCollectionResponse, CommandError> {
    crate::obs::summary::sync(&r);
    let collection = r.collection;
    let sid = |n: u32| WireServerId(ServerId { collection, n }.to_string());
    let mut pf = Prefetch::new(imap, raw, &r, metas, bodies).await?;
    let mut commands = Vec::with_capacity(r.changes.len());
    for change in &r.changes {
        commands.push(match change {
            ServerChange::Add { n, id, .. } => {
                let server_id = sid(*n);
                let email = pf
                    .email(imap.get().await?, id, &server_id.0, prefs, version)
                    .await?;
                ServerCommand::Add {
                    server_id,
                    application_data: ApplicationData::Email(Box::new(email)),
                }
            }
            ServerChange::Change { n, id, .. } => ServerCommand::Change {
                server_id: sid(*n),
                application_data: ApplicationData::Email(Box::new(pf.flags_email(id))),
            },
            ServerChange::Delete { n, .. } => ServerCommand::Delete {
                server_id: sid(*n),
                instance_id: None,
            },
            ServerChange::SoftDelete { n, .. } => ServerCommand::SoftDelete { server_id: sid(*n) },
        });
    }
    let mut responses = Vec::new();
    for reply in &r.replies {
        let status = SyncStatus::from_code(reply.status.into());
        let server_id = reply.server_id.map(|s| WireServerId(s.to_string()));
        // 16.x: the FileReferences of the attachments a draft's command added.
        let added = match (raw, reply.server_id.and_then(|s| drafts.get(&s.n))) {
            (Some(raw), Some((uid, email))) => {
                let sid = server_id.as_ref().map_or("", |s| s.0.as_str());
                crate::draft::attachment_refs(imap.get().await?, raw, *uid, sid, email).await
            }
            _ => None,
        };
        match reply.kind {
            ReplyKind::Add => responses.push(CommandResponse::Add {
                class: None,
                client_id: WireClientId(
                    reply
                        .client_id
                        .as_ref()
                        .map(|c| c.0.clone())
                        .unwrap_or_default(),
                ),
                server_id,
                status,
                application_data: added,
            }),
            ReplyKind::Change if reply.status != 1 || added.is_some() => {
                responses.push(CommandResponse::Change {
                    class: None,
                    server_id: server_id.unwrap_or_default(),
                    status,
                    instance_id: None,
                    application_data: added,
                })
            }
            ReplyKind::Delete if reply.status != 1 => responses.push(CommandResponse::Delete {
                server_id: server_id.unwrap_or_default(),
                status,
                instance_id: None,
            }),
            ReplyKind::Fetch => {
                let data = match (&reply.backend, &server_id) {
                    (Some(id), Some(s)) if reply.status == 1 => {
                        Some(ApplicationData::Email(Box::new(
                            pf.email(imap.get().await?, id, &s.0, prefs, version)
                                .await?,
                        )))
                    }
                    _ => None,
                };
                responses.push(CommandResponse::Fetch {
                    server_id: server_id.unwrap_or_default(),
                    status,
                    application_data: data,
                });
            }
            ReplyKind::Change | ReplyKind::Delete => {}
        }
    }
    let ok = r.status == EngineStatus::Success;
    Ok(SyncCollectionResponse {
        class: None,
        sync_key: WireKey(r.sync_key.map(|k| k.0.to_string()).unwrap_or_default()),
        collection_id: wire.collection_id.clone(),
        status: Some(SyncStatus::from_code(r.status.code().into())),
        more_available: ok && r.more_available,
        responses: (!responses.is_empty()).then_some(responses),
        commands: (ok && !commands.is_empty()).then_some(commands),
    })
}

async fn meta_of(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
) -> Result<Option<MessageMeta>, CommandError> {
    Ok(imap
        .fetch_meta(raw, &[uid])
        .await
        .map_err(imap_error)?
        .into_iter()
        .next())
}

fn info_of(server_id: &str, meta: Option<&MessageMeta>) -> MessageInfo {
    MessageInfo {
        server_id: server_id.to_owned(),
        internal_date: meta.map_or(0, |m| m.internal_date),
        seen: meta.is_some_and(|m| m.flags.seen),
        flagged: meta.is_some_and(|m| m.flags.flagged),
        keywords: meta.map(|m| m.flags.keywords.clone()).unwrap_or_default(),
    }
}

/// The whole item (Add, Fetch): headers, flags, body, attachments.
pub(crate) async fn full_email(
    imap: &mut PooledSession,
    raw: Option<&str>,
    id: &BackendItemId,
    server_id: &str,
    prefs: &[BodyPreference],
    version: ProtocolVersion,
) -> Result<Email, CommandError> {
    let item = full_email_checked(imap, raw, id, (server_id, prefs, version), false).await?;
    Ok(item.map_or_else(|empty| empty, |(email, _)| email))
}

/// [`full_email`], telling a large message that could not be rendered
/// (its skeleton past `[imap] max_message_bytes`: very many parts) by
/// `Err`, which holds the item without body that Sync sends for it. With
/// `stream_mime`, a large message's whole MIME body that can be sent as
/// it is (UTF-8, no NUL) is left to the caller to stream: its `Data` is
/// `None` and the message's size is given.
pub(crate) async fn full_email_checked(
    imap: &mut PooledSession,
    raw: Option<&str>,
    id: &BackendItemId,
    (server_id, prefs, version): (&str, &[BodyPreference], ProtocolVersion),
    stream_mime: bool,
) -> Result<Result<(Email, Option<u32>), Email>, CommandError> {
    let (Some(raw), Some((_, uid))) = (raw, uid_of(id)) else {
        let email = to_email(b"", &info_of(server_id, None), prefs, version);
        return Ok(Ok((email, None)));
    };
    let meta = meta_of(imap, raw, uid).await?;
    let info = info_of(server_id, meta.as_ref());
    let limit = imap.config().max_message_bytes;
    if let Some(size) = meta.as_ref().map(|m| m.size) {
        if u64::from(size) > large_above(limit) {
            let how = (prefs, version, stream_mime);
            return large_email(imap, (raw, uid, size), &info, how).await;
        }
    }
    // A message that vanished is still sent (empty body): one bad message
    // must not block the collection.
    let bytes = match imap.fetch_message(raw, uid, limit).await {
        Ok(b) => b,
        Err(e) if e.is_retryable() => return Err(imap_error(e)),
        Err(_) => Vec::new(),
    };
    Ok(Ok((to_email(&bytes, &info, prefs, version), None)))
}

/// Messages above this many bytes (or above `[imap] max_message_bytes`
/// when that is lower: [`large_above`]) are rendered from their skeleton
/// (`email::skeleton`, read a chunk at a time) rather than read and
/// parsed whole. Read whole, a message costs about four times its size
/// while it is rendered (the IMAP literal, mail-parser's decoded parts,
/// the body, the WBXML): 4 MiB keeps that near 16 MB a message, about
/// what a window of small messages costs (`PREFETCH_BYTES`), while the
/// skeleton's four or more `UID FETCH` round trips are paid only by the
/// few messages that big (a phone's photos, not its mail).
pub(crate) const LARGE_MESSAGE: u64 = 4 * 1024 * 1024;

/// Bytes of a text part kept in a large message's skeleton when the
/// device asks for its whole body: a bigger text body is sent Truncated
/// (the device reads the rest with ItemOperations, MIME).
pub(crate) const BODY_KEEP: usize = 1024 * 1024;

/// Least bytes of a text part kept in a large message's skeleton: room for
/// a Preview of an HTML body after its markup.
const PREVIEW_KEEP: usize = 64 * 1024;

/// The size above which a message is rendered from its skeleton
/// ([`LARGE_MESSAGE`], lower when `[imap] max_message_bytes` is).
pub(crate) fn large_above(max_message: u64) -> u64 {
    LARGE_MESSAGE.min(max_message)
}

/// Bytes of each text part a large message's skeleton keeps for `prefs`:
/// what the largest TruncationSize of a text or HTML body needs once
/// transfer-encoded (quoted-printable triples a byte at most), at least
/// [`PREVIEW_KEEP`], at most [`BODY_KEEP`] (also when a whole body is
/// asked), and at most a quarter of `[imap] max_message_bytes` (`limit`,
/// the skeleton's own bound). A MIME body needs the text for its Preview
/// only.
fn text_keep(prefs: &[BodyPreference], limit: u64) -> usize {
    use crate::email::body::TYPE_MIME;
    let wanted = |p: &BodyPreference| match p.truncation_size {
        _ if p.body_type == TYPE_MIME => PREVIEW_KEEP,
        Some(t) => (t as usize).saturating_mul(3),
        None => BODY_KEEP,
    };
    let keep = prefs
        .iter()
        .map(wanted)
        .max()
        .unwrap_or(BODY_KEEP)
        .clamp(PREVIEW_KEEP, BODY_KEEP);
    keep.min(usize::try_from(limit / 4).unwrap_or(usize::MAX))
}

/// The item of a large message ([`large_above`]), rendered from its
/// skeleton (`email::to_email_large`): headers, text body as far as the
/// device's truncation needs, attachments listed as the whole message
/// would list them. A MIME body reads the message's first bytes only, as
/// many as it sends (at most `[imap] max_message_bytes`: past it the
/// body is Truncated), or, with `stream_mime`, none when the whole of it
/// is sent and can be streamed as it is (`full_email_checked`). `Err`
/// (the item without body) when the skeleton cannot be made.
async fn large_email(
    imap: &mut PooledSession,
    (raw, uid, size): (&str, u32, u32),
    info: &MessageInfo,
    (prefs, version, stream_mime): (&[BodyPreference], ProtocolVersion, bool),
) -> Result<Result<(Email, Option<u32>), Email>, CommandError> {
    use crate::email::body::{choose_preference, TYPE_MIME};
    use crate::email::skeleton::Scanner;
    use crate::email::{to_email_large, Large};
    let limit = imap.config().max_message_bytes;
    let scanner = Scanner::with_text(super::attachment::KEEP, text_keep(prefs, limit));
    let scanned = match super::attachment::read_skeleton(imap, (raw, uid, size), scanner, limit)
        .await
    {
        Ok(s) => s,
        Err(e) if e.is_retryable() => return Err(imap_error(e)),
        Err(e) => {
            tracing::warn!(item = %info.server_id, size, error = %e, "large message without skeleton: sent without body");
            None
        }
    };
    let Some(super::attachment::Scanned { skel, leaves, utf8 }) = scanned else {
        return Ok(Err(to_email(b"", info, prefs, version)));
    };
    let mut large = Large {
        leaves: &leaves,
        size: u64::from(size),
        mime: &[],
    };
    let email = to_email_large(&skel, &large, info, prefs, version);
    let native = email.native_body_type.unwrap_or(1);
    let Some(pref) = email
        .body
        .as_ref()
        .filter(|b| b.body_type == TYPE_MIME)
        .and_then(|_| choose_preference(prefs, native))
    else {
        return Ok(Ok((email, None)));
    };
    let whole = pref.truncation_size.is_none_or(|t| t >= size);
    if stream_mime && whole && utf8 {
        let mut email = email;
        if let Some(b) = email.body.as_mut() {
            b.data = None;
            b.truncated = Some(false);
            b.estimated_data_size = Some(u64::from(size));
        }
        return Ok(Ok((email, Some(size))));
    }
    // As many bytes as the body sends, and a character's worth more (a
    // cut in the middle of one must be seen as such).
    let wanted = match pref.truncation_size {
        Some(t) if pref.all_or_none == Some(true) && t < size => 0,
        Some(t) => u64::from(t).saturating_add(4),
        None => u64::from(size),
    };
    let wanted = wanted.min(u64::from(size)).min(limit) as u32;
    if wanted == 0 {
        return Ok(Ok((email, None)));
    }
    let prefix = match imap.fetch_partial(raw, uid, "", 0, wanted).await {
        Ok(p) => p,
        Err(e) if e.is_retryable() => return Err(imap_error(e)),
        Err(_) => return Ok(Ok((email, None))),
    };
    large.mime = &prefix;
    let email = to_email_large(&skel, &large, info, prefs, version);
    Ok(Ok((email, None)))
}

/// Most messages fetched by one `UID FETCH` while rendering a window.
const PREFETCH_MESSAGES: usize = 100;
/// Most bytes (RFC822.SIZE) fetched by one `UID FETCH` while rendering: a
/// window of large messages is fetched a few at a time, so memory stays
/// bounded by this, not by the window.
const PREFETCH_BYTES: u64 = 8 * 1024 * 1024;

/// What rendering a window needs from IMAP, fetched in few round trips: the
/// metadata of every message the window names that the window cut or the
/// read-ahead did not bring, in one `UID FETCH`, then the messages to send
/// in full that were not read ahead, in batches bounded by count and bytes,
/// in the order they are rendered (one round trip per message made a window
/// of 100 cost ~100 round trips; a batch costs about one). A window read
/// ahead whole costs no round trip.
struct Prefetch<'r> {
    raw: Option<&'r str>,
    metas: crate::backends::imap::UidMap<MessageMeta>,
    /// UIDs whose whole message is rendered, in render order.
    order: Vec<u32>,
    /// Index in `order` of the first UID not fetched yet.
    next: usize,
    bodies: crate::backends::imap::UidMap<Vec<u8>>,
    /// How many more times each message of `order` is rendered: a request
    /// may Fetch one item more than once, and each answer gets its body.
    uses: crate::backends::imap::UidMap<u32>,
}

impl<'r> Prefetch<'r> {
    async fn new(
        imap: &mut Conn<'_, '_>,
        raw: Option<&'r str>,
        r: &opush_engine::SyncResponse,
        mut metas: Metas,
        bodies: Bodies,
    ) -> Result<Prefetch<'r>, CommandError> {
        let mut order = Vec::new();
        let mut wanted = Vec::new();
        for change in &r.changes {
            match change {
                ServerChange::Add { id, .. } => {
                    if let Some((_, uid)) = uid_of(id) {
                        order.push(uid);
                        wanted.push(uid);
                    }
                }
                ServerChange::Change { id, .. } => wanted.extend(uid_of(id).map(|(_, u)| u)),
                ServerChange::Delete { .. } | ServerChange::SoftDelete { .. } => {}
            }
        }
        for reply in &r.replies {
            if let (ReplyKind::Fetch, 1, Some(id)) = (reply.kind, reply.status, &reply.backend) {
                if let Some((_, uid)) = uid_of(id) {
                    order.push(uid);
                    wanted.push(uid);
                }
            }
        }
        // Those the window cut fetched already are not asked again; those
        // of a listing made without dates are (DateReceived).
        wanted.retain(|uid| !metas.get(uid).is_some_and(MessageMeta::is_dated));
        if let (Some(raw), false) = (raw, wanted.is_empty()) {
            let imap = imap.get().await?;
            for m in imap.fetch_meta(raw, &wanted).await.map_err(imap_error)? {
                metas.insert(m.uid, m);
            }
        }
        // Every message is sent with the flags decided for it when they
        // can be told (`decided_flags`), else with those it has now.
        let mut decided = added_versions(r);
        for change in &r.changes {
            if let ServerChange::Change { id, version, .. } = change {
                if let Some((_, uid)) = uid_of(id) {
                    decided.insert(uid, *version);
                }
            }
        }
        for (uid, v) in decided.iter() {
            if let Some(m) = metas.get_mut(uid) {
                decided_flags(m, *v);
            }
        }
        let mut uses = crate::backends::imap::UidMap::default();
        for uid in &order {
            *uses.entry(*uid).or_insert(0) += 1;
        }
        Ok(Prefetch {
            raw,
            metas,
            order,
            next: 0,
            bodies,
            uses,
        })
    }

    /// Fetches the next batch of `order` (at least one message, then up to
    /// the count and byte bounds), skipping vanished and oversized messages.
    async fn fetch_next(
        &mut self,
        imap: &mut PooledSession,
        raw: &str,
    ) -> Result<(), CommandError> {
        let mut batch = Vec::new();
        let mut bytes = 0u64;
        while let Some(&uid) = self.order.get(self.next) {
            if self.bodies.contains_key(&uid) || batch.contains(&uid) {
                // Read ahead already, or asked twice.
                self.next += 1;
                continue;
            }
            let Some(size) = self.metas.get(&uid).map(|m| u64::from(m.size)) else {
                self.next += 1;
                continue;
            };
            if size > large_above(imap.config().max_message_bytes) {
                // Rendered from its skeleton (`large_email`).
                self.next += 1;
                continue;
            }
            if !batch.is_empty()
                && (batch.len() >= PREFETCH_MESSAGES || bytes + size > PREFETCH_BYTES)
            {
                break;
            }
            batch.push(uid);
            bytes += size;
            self.next += 1;
        }
        match imap.fetch_messages(raw, &batch).await {
            Ok(found) => self.bodies.extend(found),
            Err(e) if e.is_retryable() => return Err(imap_error(e)),
            // A batch the server refuses is sent without bodies: one bad
            // message must not block the collection.
            Err(_) => {}
        }
        Ok(())
    }

    /// The whole item (Add, Fetch). A message that vanished or is too big
    /// is still sent, with an empty body.
    async fn email(
        &mut self,
        imap: &mut PooledSession,
        id: &BackendItemId,
        server_id: &str,
        prefs: &[BodyPreference],
        version: ProtocolVersion,
    ) -> Result<Email, CommandError> {
        let (Some(raw), Some((_, uid))) = (self.raw, uid_of(id)) else {
            return Ok(to_email(b"", &info_of(server_id, None), prefs, version));
        };
        let large = large_above(imap.config().max_message_bytes);
        if let Some(size) = self.metas.get(&uid).map(|m| m.size) {
            if u64::from(size) > large && !self.bodies.contains_key(&uid) {
                let info = info_of(server_id, self.metas.get(&uid));
                let how = (prefs, version, false);
                let item = large_email(imap, (raw, uid, size), &info, how).await?;
                return Ok(item.map_or_else(|empty| empty, |(email, _)| email));
            }
        }
        // Render order is fetch order: the next batch holds the message
        // unless it vanished (then it is never found and the loop ends when
        // `next` passes it).
        while !self.bodies.contains_key(&uid) && self.order[self.next..].contains(&uid) {
            self.fetch_next(imap, raw).await?;
        }
        // The last rendering of a message takes its body; an earlier one
        // (the same item fetched twice) a copy.
        let left = self.uses.get_mut(&uid).map_or(0, |n| {
            *n = n.saturating_sub(1);
            *n
        });
        let bytes = if left > 0 {
            self.bodies.get(&uid).cloned()
        } else {
            self.bodies.remove(&uid)
        }
        .unwrap_or_default();
        Ok(to_email(
            &bytes,
            &info_of(server_id, self.metas.get(&uid)),
            prefs,
            version,
        ))
    }

    /// A flags-only Change: Read, Flag, Categories.
    fn flags_email(&self, id: &BackendItemId) -> Email {
        let meta = uid_of(id).and_then(|(_, uid)| self.metas.get(&uid));
        flags_only(&info_of("", meta))
    }
}

fn flags_only(info: &MessageInfo) -> Email {
    let full = to_email(b"", info, &[], ProtocolVersion::V2_5);
    Email {
        read: full.read,
        flag: full.flag,
        categories: full.categories,
        ..Email::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// The UID reader agrees with `str::parse` on ids of every shape.
        #[test]
        fn uid_of_reads_as_parse(
            v in prop_oneof!["[0-9]{1,11}", "\\+?[0-9]{0,3}", "[+0-9a-z -]{0,6}", Just("4294967295".to_owned()), Just("4294967296".to_owned())],
            u in prop_oneof!["[0-9]{1,11}", "\\+?[0-9]{0,3}", "[+0-9a-z /-]{0,6}"],
        ) {
            let id = BackendItemId(format!("{v}/{u}"));
            let by_parse = id.0.split_once('/').and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)));
            prop_assert_eq!(uid_of(&id), by_parse);
        }
    }

    fn meta(flags: Flags) -> MessageMeta {
        MessageMeta {
            uid: 7,
            flags,
            internal_date: 1_700_000_000,
            size: 1234,
            modseq: Some(9),
        }
    }

    /// A version of keyword-less flags gives them back, whatever flags the
    /// message has now (keywords dropped, unversioned flags kept); a
    /// version with keywords gives back only the message's own.
    #[test]
    fn decided_flags_tells_keyword_less_versions_back() {
        let now = Flags {
            seen: true,
            flagged: false,
            answered: true,
            draft: true,
            keywords: vec!["$label1".to_owned()],
            ..Flags::default()
        };
        for i in 0..8 {
            let decided = Flags {
                seen: i & 1 != 0,
                flagged: i & 2 != 0,
                answered: i & 4 != 0,
                ..Flags::default()
            };
            let mut m = meta(now.clone());
            assert!(decided_flags(&mut m, version_of(&decided)));
            assert_eq!(version_of(&m.flags), version_of(&decided), "{i}");
            assert!(m.flags.draft, "unversioned flags stay");
            assert!(m.flags.keywords.is_empty());
            assert_eq!((m.uid, m.size, m.internal_date), (7, 1234, 1_700_000_000));
        }
        // The message's own version: unchanged.
        let mut m = meta(now.clone());
        assert!(decided_flags(&mut m, version_of(&now)));
        assert_eq!(m.flags, now);
        // Another keyword set cannot be told back: left as it is.
        let other = Flags {
            keywords: vec!["$label2".to_owned()],
            ..Flags::default()
        };
        let mut m = meta(now.clone());
        assert!(!decided_flags(&mut m, version_of(&other)));
        assert_eq!(m.flags, now);
    }

    /// The digest as first defined: one formatted string, hashed whole.
    /// Versions are recorded in the log, so this must never change.
    fn version_by_string(flags: &Flags) -> ItemVersion {
        let mut keywords = flags.keywords.clone();
        keywords.sort();
        let text = format!(
            "{}{}{}|{}",
            u8::from(flags.seen),
            u8::from(flags.flagged),
            u8::from(flags.answered),
            keywords.join(" ")
        );
        let d = blake3::hash(text.as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&d.as_bytes()[..8]);
        ItemVersion(u64::from_le_bytes(b))
    }

    fn listing(kind: ObservationKind, items: &[(u32, u64)]) -> Event {
        Event::BackendObserved {
            req_id: 1,
            collection: CollectionId(1),
            at: Timestamp(0),
            observation: Observation {
                validity: 7,
                cursor: 0,
                kind,
                changed: items
                    .iter()
                    .map(|(uid, at)| ObservedItem {
                        id: item_id(7, *uid),
                        version: ItemVersion(0),
                        received_at: Timestamp(*at),
                        digest: None,
                    })
                    .collect(),
                vanished: Vec::new(),
            },
        }
    }

    #[test]
    fn initial_guess_takes_the_first_ids_the_filter_keeps() {
        const DAY: u64 = 86_400_000;
        let now = Timestamp(100 * DAY);
        // UIDs 1..=12, received one a day, the newest last.
        let items: Vec<(u32, u64)> = (1..=12).map(|u| (u, (88 + u64::from(u)) * DAY)).collect();
        let full = listing(ObservationKind::Full, &items);
        let newest = PageOrder::NewestFirst;
        // Every message, newest first (UID descending).
        assert_eq!(
            initial_guess(&full, (None, newest), now, 5),
            Some((7, vec![12, 11, 10, 9, 8]))
        );
        // In id order ("7/1" < "7/10" < "7/11" < "7/12" < "7/2" …), as
        // engines before format 6 paged.
        assert_eq!(
            initial_guess(&full, (None, PageOrder::ById), now, 5),
            Some((7, vec![1, 10, 11, 12, 2]))
        );
        assert_eq!(
            initial_guess(&full, (Some(FilterType::All), newest), now, 100).map(|(_, u)| u.len()),
            Some(12)
        );
        // Three days: only what was received since day 97 (UIDs 9..=12).
        assert_eq!(
            initial_guess(&full, (Some(FilterType::ThreeDays), newest), now, 3),
            Some((7, vec![12, 11, 10]))
        );
        // Nothing in the window, nothing asked, or not a full listing: no guess.
        assert_eq!(
            initial_guess(
                &full,
                (Some(FilterType::OneDay), newest),
                Timestamp(400 * DAY),
                5
            ),
            None
        );
        assert_eq!(initial_guess(&full, (None, newest), now, 0), None);
        assert_eq!(
            initial_guess(
                &listing(ObservationKind::Delta, &items),
                (None, newest),
                now,
                5
            ),
            None
        );
    }

    proptest! {
        #[test]
        fn version_of_is_the_recorded_digest(
            seen in any::<bool>(),
            flagged in any::<bool>(),
            answered in any::<bool>(),
            keywords in proptest::collection::vec("[$A-Za-z0-9 ]{0,6}", 0..5),
        ) {
            let flags = Flags { seen, flagged, answered, keywords, ..Flags::default() };
            prop_assert_eq!(version_of(&flags), version_by_string(&flags));
        }
    }

    /// A collection holding UIDs `on_server` (under UIDVALIDITY 7), plus
    /// UID 50 known as vanished already and UID 60 under UIDVALIDITY 6.
    fn collection(on_server: &[u32]) -> opush_engine::CollectionState {
        let mut c = opush_engine::CollectionState::new(opush_engine::FolderType::Inbox);
        let side = Some(opush_engine::ServerSide {
            version: ItemVersion(1),
            received_at: Timestamp(0),
        });
        for uid in on_server {
            let item = opush_engine::Item {
                server: side,
                ..opush_engine::Item::default()
            };
            c.items.insert(item_id(7, *uid), item);
        }
        c.items
            .insert(item_id(7, 50), opush_engine::Item::default());
        let old = opush_engine::Item {
            server: side,
            ..opush_engine::Item::default()
        };
        c.items.insert(item_id(6, 60), old);
        c
    }

    #[test]
    fn vanished_keeps_the_known_items_whatever_the_ranges_cover() {
        let c = collection(&[3, 4, 9, 10, 11, 1000]);
        let ids = |uids: &[u32]| uids.iter().map(|u| item_id(7, *u)).collect::<Vec<_>>();
        // Few UIDs in the ranges: looked up one by one.
        assert_eq!(
            vanished_known(&c, 7, &[2..=4, 10..=10, 50..=50]),
            ids(&[3, 4, 10])
        );
        // Ranges far wider than the items (UIDs that never existed, far
        // above any UIDNEXT a session saw): the items are walked instead.
        assert_eq!(
            vanished_known(&c, 7, &[1..=9, 11..=4_000_000_000]),
            ids(&[3, 4, 9, 11, 1000])
        );
        assert_eq!(vanished_known(&c, 7, &[60..=60]), Vec::new());
        assert_eq!(vanished_known(&c, 7, &[]), Vec::new());
    }

    #[test]
    fn version_of_known_values() {
        let mut f = Flags::default();
        assert_eq!(version_of(&f), version_by_string(&f));
        f.seen = true;
        f.keywords = vec!["b".into(), "a".into()];
        assert_eq!(version_of(&f), version_by_string(&f));
        let sorted = Flags {
            keywords: vec!["a".into(), "b".into()],
            ..f.clone()
        };
        assert_eq!(version_of(&f), version_of(&sorted));
    }

    /// The versions of keyword-less flags come from a table: every one of
    /// them, whatever the flags the digest leaves out, is the digest.
    #[test]
    fn version_of_every_keyword_less_flag_set() {
        for bits in 0..64u8 {
            let f = Flags {
                seen: bits & 1 != 0,
                flagged: bits & 2 != 0,
                answered: bits & 4 != 0,
                deleted: bits & 8 != 0,
                draft: bits & 16 != 0,
                forwarded: bits & 32 != 0,
                keywords: Vec::new(),
            };
            assert_eq!(version_of(&f), version_by_string(&f), "{f:?}");
        }
    }
}
