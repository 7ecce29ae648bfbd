//! The per-device event log: every fact the engine learns or decides, and
//! the versioned binary encoding storage keeps opaquely.
//!
//! Events are facts, never commands: `apply` folds them and never fails.
//! Encoding is rkyv behind an 8-byte header (`b"OPEV"` + little-endian u32
//! [`FORMAT_VERSION`]); a newer version is rejected with a typed error, never
//! misread. This module must not interpret events (that is `state`).

use crate::record::DecisionRecord;
use crate::types::{
    BackendFolderId, BackendItemId, ClientId, CollectionId, Command, Digest, FilterType,
    FolderType, ItemVersion, PolicyKey, ProtocolVersion, ServerId, SyncKey, Timestamp,
};
use rkyv::{Archive, Deserialize, Serialize};

/// Version of the event encoding. Bump it when an event's layout changes and
/// keep a decoder for every older version.
///
/// History (each version reads every older one):
/// * 1: the first layout.
/// * 2: adds [`Event::MailSent`] and [`Event::Decided`] at the end of the
///   enum. The archived size of `Event` is unchanged and no older variant
///   changed, so version-1 event bytes decode as they are (checked by
///   `tests/codec_compat.rs` against golden version-1 bytes); a version-1
///   binary refuses version-2 records as newer instead of misreading them.
///   Snapshots: `DeviceState` gained `sent` in this version; the snapshot
///   decoder still reads the older layout.
/// * 3: adds the `SendCheck` and `Sent` variants at the end of
///   [`crate::DecisionInput`] and [`crate::DecisionOutput`] (SendMail,
///   SmartReply and SmartForward recorded as decisions), and
///   `AppliedChange::Replaced` (an edited 16.x draft). Their archived
///   sizes are unchanged (`record.rs` checks them), so version-2 records
///   decode as they are (`tests/replay/email-v2.bundle` replays); a
///   version-2 binary refuses version-3 records as newer.
/// * 4: adds `SyncWait` at the end of [`crate::DecisionInput`] and
///   [`crate::DecisionOutput`] (a Sync's `Wait`/`HeartbeatInterval`,
///   `crate::decide_sync_wait`); archived sizes unchanged, so version-3
///   records decode as they are.
/// * 5: adds [`Event::PolicyChecked`] at the end of [`Event`] (the
///   provisioning gate's per-request check without a copy of the whole
///   configuration; older logs keep their `Decided` form, which still
///   replays).
/// * 6: adds `EngineConfig::page_order` (new decisions page newest first,
///   [`crate::PageOrder`]) in what was padding of the archived
///   `EngineConfig`: archived sizes unchanged, and an older record, whose
///   padding is zero, reads as `PageOrder::ById`, the order it was
///   decided in (`tests/replay/email-v3.bundle` replays). A version-5
///   binary refuses version-6 records as newer.
/// * 7: adds `Oof` at the end of [`crate::DecisionInput`] and
///   [`crate::DecisionOutput`] (Settings out-of-office, [`crate::decide_oof`]);
///   archived sizes unchanged (`record.rs` checks them), so version-6
///   records decode as they are; a version-6 binary refuses version-7
///   records as newer.
/// * 8: decisions change, gated by [`crate::Rules`] so that older records
///   replay as decided: a device's Delete of an item gone from the backend
///   succeeds (was Status 8), and a MoveItems retried after its answer was
///   lost gets its first answer (was Status 1), for which a move records
///   [`Event::MoveRemembered`] (added at the end of [`Event`], archived
///   size unchanged). The layout of every older event is unchanged, so
///   version-7 records decode as they are (`tests/replay/retries-v7.bundle`
///   replays with the old answers); a version-7 binary refuses version-8
///   records as newer. Also in 8: `FetchSized` at the end of
///   [`crate::ClientCommand`] (a Sync `<Fetch>` with its estimated size,
///   under the window's bytes budget; the archived command keeps its size
///   and alignment, `sync.rs` checks them); `MoveOutcome::Gone` at the
///   end of [`crate::MoveOutcome`] (a MoveItems of a message no longer in
///   its folder: Status 1); a device's moved copy judged against the
///   moved message's flags, and a refused or failed Change recording
///   [`Event::DeviceCopyStale`] (added at the end of [`Event`]), both
///   gated in [`crate::Rules`]. Records written by builds between the two changes
///   (session 14) and this version say format 7 but hold the new answers:
///   those diverge under replay.
/// * 9: adds [`Event::Displaced`] at the end of [`Event`] (archived size
///   unchanged): trace events of requests that changed nothing, deferred
///   by one opush process while another appended to the same device's log,
///   are stored after the other's events behind this marker instead of
///   being dropped, and replay re-decides them on the state they were
///   decided on. No decision changes; version-8 records decode and replay
///   as they are; a version-8 binary refuses version-9 records as newer.
///
/// Every change of what a decision returns or records for the same state
/// and input bumps this version and is gated in [`crate::Rules`]
/// (docs/ARCHITECTURE.md, "Replay"); `replay/tests/bundles.rs` replays a
/// golden bundle of every format that changed a decision.
///
/// `Event::Decided` embeds [`crate::DecisionRecord`], hence `EngineConfig`
/// and the input/response types of every `decide_*`: a field added to any
/// of them changes the event layout like a field added to an event does.
///
/// New variants go at the end of [`Event`] and keep their inline size small
/// (box large payloads) so the archived size of `Event` does not grow.
pub const FORMAT_VERSION: u32 = 9;

const EVENT_MAGIC: &[u8; 4] = b"OPEV";
pub(crate) const SNAPSHOT_MAGIC: &[u8; 4] = b"OPSN";

/// An item as the backend shows it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ObservedItem {
    /// Backend identity.
    pub id: BackendItemId,
    /// Current version.
    pub version: ItemVersion,
    /// Date used by the FilterType window (mail: received; calendar: end).
    pub received_at: Timestamp,
    /// Content digest when the backend can give one cheaply (contacts).
    pub digest: Option<Digest>,
}

/// Whether an observation lists everything or only what changed.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObservationKind {
    /// `changed` is the complete content of the folder; absent items vanished.
    Full,
    /// `changed`/`vanished` since the previous cursor (IMAP QRESYNC, DAV sync-token).
    Delta,
}

/// What the backend contains for one collection, as seen by the server.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Observation {
    /// Backend validity (IMAP UIDVALIDITY); a change means every item is new.
    pub validity: u64,
    /// Backend cursor after this observation (HIGHESTMODSEQ, sync-token digest).
    pub cursor: u64,
    /// Full listing or delta.
    pub kind: ObservationKind,
    /// Items present (full) or added/changed (delta).
    pub changed: Vec<ObservedItem>,
    /// Items gone (delta only; ignored for a full listing).
    pub vanished: Vec<BackendItemId>,
}

/// A folder as the backend lists it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BackendFolder {
    /// Backend identity (must survive renames for a rename to be an Update).
    pub id: BackendFolderId,
    /// DisplayName.
    pub name: String,
    /// Parent folder, `None` at the root.
    pub parent: Option<BackendFolderId>,
    /// EAS Type chosen by the server (special folders from configuration).
    pub folder_type: FolderType,
}

/// One server-side change sent to the device in a Sync response.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum ServerChange {
    /// `<Add>`: content to fetch is `id` at `version`.
    Add {
        /// ServerId number.
        n: u32,
        /// Backend identity.
        id: BackendItemId,
        /// Version sent.
        version: ItemVersion,
    },
    /// `<Change>`.
    Change {
        /// ServerId number.
        n: u32,
        /// Backend identity.
        id: BackendItemId,
        /// Version sent.
        version: ItemVersion,
    },
    /// `<Delete>`: the item is gone from the backend.
    Delete {
        /// ServerId number.
        n: u32,
        /// Backend identity.
        id: BackendItemId,
    },
    /// `<SoftDelete>`: the item left the FilterType window.
    SoftDelete {
        /// ServerId number.
        n: u32,
        /// Backend identity.
        id: BackendItemId,
    },
}

impl ServerChange {
    /// The backend identity the change is about.
    pub fn id(&self) -> &BackendItemId {
        match self {
            ServerChange::Add { id, .. }
            | ServerChange::Change { id, .. }
            | ServerChange::Delete { id, .. }
            | ServerChange::SoftDelete { id, .. } => id,
        }
    }

    /// The ServerId number.
    pub fn n(&self) -> u32 {
        match self {
            ServerChange::Add { n, .. }
            | ServerChange::Change { n, .. }
            | ServerChange::Delete { n, .. }
            | ServerChange::SoftDelete { n, .. } => *n,
        }
    }
}

/// Which client command a reply answers.
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    /// `<Add>`
    Add,
    /// `<Change>`
    Change,
    /// `<Delete>`
    Delete,
    /// `<Fetch>`
    Fetch,
}

/// The answer to one client command, kept in the batch so a retried request
/// gets exactly the same replies.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ClientReply {
    /// Which command.
    pub kind: ReplyKind,
    /// ClientId of an Add.
    pub client_id: Option<ClientId>,
    /// ServerId concerned (assigned one for an Add).
    pub server_id: Option<ServerId>,
    /// Sync Status of the command ([MS-ASCMD] 2.2.3.177.17).
    pub status: u8,
    /// Backend item to fetch content from (Fetch).
    pub backend: Option<BackendItemId>,
}

/// What one SyncKey carries: the answer to replay byte-for-byte on a retry.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    /// The SyncKey issued with the batch.
    pub key: SyncKey,
    /// Server changes, in response order.
    pub changes: Vec<ServerChange>,
    /// Replies to client commands, in request order.
    pub replies: Vec<ClientReply>,
    /// MoreAvailable.
    pub more_available: bool,
}

/// One folder-hierarchy change for FolderSync.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum FolderChange {
    /// `<Add>`
    Add {
        /// ServerId of the folder.
        id: CollectionId,
        /// ParentId (`None` = "0").
        parent: Option<CollectionId>,
        /// DisplayName.
        name: String,
        /// Type.
        folder_type: FolderType,
    },
    /// `<Update>` (rename or move).
    Update {
        /// ServerId of the folder.
        id: CollectionId,
        /// ParentId.
        parent: Option<CollectionId>,
        /// DisplayName.
        name: String,
        /// Type.
        folder_type: FolderType,
    },
    /// `<Delete>`
    Delete {
        /// ServerId of the folder.
        id: CollectionId,
    },
}

/// What a client command did to the backend (recorded after the server
/// performed the planned effect).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum AppliedChange {
    /// The device created the item (or it was deduplicated onto `item`).
    Added {
        /// The device's ClientId.
        client_id: ClientId,
        /// The backend item now carrying it.
        item: ObservedItem,
    },
    /// The device changed the item; the backend now has `version`.
    Changed {
        /// New version.
        version: ItemVersion,
    },
    /// The device deleted the item.
    Deleted,
    /// The device changed the item and the backend replaced it by `item`
    /// (an edited draft gets a new IMAP UID): the ServerId moves to `item`,
    /// the old backend item is gone.
    Replaced {
        /// The backend item now carrying the ServerId.
        item: ObservedItem,
    },
}

/// Every fact of a device's life. See the crate docs for the fold rules.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A request arrived (log/replay only; does not change sync state).
    RequestReceived {
        /// Server-chosen request id.
        req_id: u64,
        /// Arrival time.
        at: Timestamp,
        /// Command.
        command: Command,
        /// MS-ASProtocolVersion.
        protocol_version: ProtocolVersion,
        /// blake3 of the decoded request (bodies stay out of the log).
        request: Digest,
    },
    /// The backend content of a collection was observed.
    BackendObserved {
        /// Request that observed it.
        req_id: u64,
        /// Collection.
        collection: CollectionId,
        /// Observation time (for the filter window).
        at: Timestamp,
        /// What was seen.
        observation: Observation,
    },
    /// SyncKey 0: the device starts this collection over.
    SyncReset {
        /// Collection.
        collection: CollectionId,
        /// The first key issued.
        key: SyncKey,
        /// FilterType in force.
        filter: FilterType,
        /// Time of the reset.
        at: Timestamp,
    },
    /// The device used the key of the pending batch: it has that batch.
    SyncKeyConfirmed {
        /// Collection.
        collection: CollectionId,
        /// The confirmed key.
        key: SyncKey,
    },
    /// A new SyncKey and the batch it carries (becomes the pending batch).
    SyncKeyIssued {
        /// Collection.
        collection: CollectionId,
        /// The batch.
        batch: Batch,
    },
    /// The device presented the previous key again (lost response).
    SyncRetried {
        /// Collection.
        collection: CollectionId,
        /// The key it presented.
        key: SyncKey,
    },
    /// The device asked for another FilterType (no reset, see crate docs).
    FilterChanged {
        /// Collection.
        collection: CollectionId,
        /// New FilterType.
        filter: FilterType,
        /// When.
        at: Timestamp,
    },
    /// A device-side change was carried out on the backend.
    ClientChangeApplied {
        /// Collection.
        collection: CollectionId,
        /// ServerId number of the item.
        n: u32,
        /// Backend identity of the item.
        id: BackendItemId,
        /// What happened.
        change: AppliedChange,
    },
    /// An item kept failing delivery: skipped until it changes.
    ItemQuarantined {
        /// Collection.
        collection: CollectionId,
        /// Item.
        id: BackendItemId,
    },
    /// The device moved an item (MoveItems); not echoed back to it.
    ItemMovedByDevice {
        /// Source collection.
        src: CollectionId,
        /// Source item.
        src_id: BackendItemId,
        /// Destination collection.
        dst: CollectionId,
        /// ServerId number in the destination.
        dst_n: u32,
        /// The item in the destination.
        item: ObservedItem,
        /// The device's copy was older than the backend's: send a Change.
        stale: bool,
    },
    /// The backend folder list was observed.
    HierarchyObserved {
        /// Full list.
        folders: Vec<BackendFolder>,
    },
    /// FolderSync with SyncKey 0.
    HierarchyReset {
        /// First hierarchy key.
        key: SyncKey,
    },
    /// The device used the pending hierarchy key.
    HierarchyKeyConfirmed {
        /// Key.
        key: SyncKey,
    },
    /// A hierarchy key was issued with these changes.
    FolderHierarchyChanged {
        /// New hierarchy key.
        key: SyncKey,
        /// Changes sent.
        changes: Vec<FolderChange>,
    },
    /// The device created/renamed/deleted a folder and the backend did it;
    /// the device already knows, so this is applied to its view directly.
    FolderChangedByDevice {
        /// New hierarchy key given in the response.
        key: SyncKey,
        /// The change as the device sees it.
        change: FolderChange,
        /// The backend folder (None for a delete).
        folder: Option<BackendFolder>,
    },
    /// Provision phase 1: a temporary policy key was sent.
    PolicyKeyIssued {
        /// Temporary key.
        policy_key: PolicyKey,
    },
    /// Provision phase 2: the device acknowledged; final key.
    DeviceProvisioned {
        /// Final key.
        policy_key: PolicyKey,
    },
    /// The server's policy changed: the device must provision again.
    PolicyChanged,
    /// An administrator asked for a remote wipe.
    WipeRequested {
        /// When.
        at: Timestamp,
    },
    /// The device acknowledged the wipe.
    WipeAcknowledged {
        /// When.
        at: Timestamp,
    },
    /// A Ping was armed with these folders (remembered for empty Pings).
    PingArmed {
        /// Folders.
        folders: Vec<CollectionId>,
        /// HeartbeatInterval in seconds.
        heartbeat: u32,
    },
    /// A response left (log/replay only).
    ResponseSent {
        /// Request id.
        req_id: u64,
        /// Status sent.
        status: u16,
        /// blake3 of the rendered body.
        digest: Digest,
    },
    /// SendMail/SmartReply/SmartForward handed a message with this ClientId
    /// to the relay (a retry with the same ClientId is not sent again).
    MailSent {
        /// The request's `ClientId`.
        client_id: ClientId,
        /// When the relay accepted it.
        at: Timestamp,
    },
    /// A decision's inputs and response (log/replay only; does not change
    /// sync state). The `events` events that follow it in the log are the
    /// ones the decision produced, so replay can re-run it (see
    /// [`crate::redecide`]) and compare both.
    Decided {
        /// Request the decision belongs to.
        req_id: u64,
        /// Number of events right after this one that the decision produced.
        events: u32,
        /// Inputs and response (boxed: keeps `Event` small).
        record: Box<DecisionRecord>,
    },
    /// The provisioning gate's check of one request (format version 5),
    /// the compact form of a `Decided` with a
    /// [`crate::DecisionInput::PolicyCheck`] input: every request has one,
    /// so it keeps only what [`crate::check_policy`] reads of the
    /// configuration (`require_provisioning`), not a whole
    /// [`crate::EngineConfig`]. [`Event::decision`] gives it back as a
    /// [`DecisionRecord`]; replay re-runs it like any decision. It produces
    /// no events.
    PolicyChecked {
        /// Request the check belongs to.
        req_id: u64,
        /// The check's `now`.
        at: Timestamp,
        /// The command about to run.
        command: Command,
        /// `X-MS-PolicyKey`.
        header_key: Option<PolicyKey>,
        /// The version the check was asked at.
        version: ProtocolVersion,
        /// `[policy] require_provisioning` in force.
        require_provisioning: bool,
        /// The verdict.
        check: crate::PolicyCheck,
    },
    /// The device moved `src` to `dst` (format version 8, right after the
    /// move's [`Event::ItemMovedByDevice`]): the destination remembers it,
    /// so the same MoveItems sent again (its answer lost) gets the same
    /// DstMsgId ([`crate::plan_move`]). Moves recorded before format 8
    /// have no such event: their retries answer as format 7 did.
    MoveRemembered {
        /// The ServerId the device moved.
        src: ServerId,
        /// The ServerId it got in the destination.
        dst: ServerId,
    },
    /// The device's copy of `id` is not what the server last sent it
    /// (format version 8): the server refused or failed a Change the
    /// device had already applied to its copy. The server's version is
    /// sent to it again, whatever the versions say
    /// ([`crate::Rules::refused_change_refreshes_copy`]).
    DeviceCopyStale {
        /// The collection.
        collection: CollectionId,
        /// The item.
        id: BackendItemId,
    },
    /// The next `events` events (format version 9) trace requests that
    /// changed nothing (`RequestReceived`, `Decided`, `PolicyChecked`,
    /// `ResponseSent`) and were decided on the device's state as of stored
    /// event `base`, not on the state folded up to here: an opush process
    /// deferred them in memory on that head while another process on the
    /// same store appended after it, so they are stored after that
    /// process's events. Replay re-decides them on the state folded up to
    /// `base`. Changes no sync state.
    Displaced {
        /// The sequence of the last stored event of the state they were
        /// decided on (0: the empty log).
        base: u64,
        /// How many events follow that were decided there.
        events: u32,
    },
}

impl Event {
    /// The decision this event records, with its request id and the number
    /// of events after it that the decision produced: a `Decided`'s record,
    /// or the record a `PolicyChecked` stands for (the configuration's
    /// other fields at their defaults: the check does not read them).
    pub fn decision(&self) -> Option<(u64, u32, std::borrow::Cow<'_, DecisionRecord>)> {
        match self {
            Event::Decided {
                req_id,
                events,
                record,
            } => Some((*req_id, *events, std::borrow::Cow::Borrowed(record))),
            Event::PolicyChecked {
                req_id,
                at,
                command,
                header_key,
                version,
                require_provisioning,
                check,
            } => Some((
                *req_id,
                0,
                std::borrow::Cow::Owned(DecisionRecord {
                    at: *at,
                    config: crate::EngineConfig {
                        require_provisioning: *require_provisioning,
                        ..crate::EngineConfig::default()
                    },
                    input: crate::DecisionInput::PolicyCheck {
                        command: *command,
                        header_key: *header_key,
                        version: *version,
                    },
                    output: crate::DecisionOutput::PolicyCheck(*check),
                }),
            )),
            _ => None,
        }
    }
}

/// Errors decoding stored bytes.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CodecError {
    /// Fewer than 8 bytes or a wrong magic.
    #[error("not an opush {0} record")]
    BadHeader(&'static str),
    /// Written by a newer opush.
    #[error("format version {found} is newer than supported {supported}")]
    NewerVersion {
        /// Version in the record.
        found: u32,
        /// Highest version this build reads.
        supported: u32,
    },
    /// Version too old and no longer readable (none so far).
    #[error("format version {0} is not supported")]
    UnsupportedVersion(u32),
    /// The payload failed validation.
    #[error("corrupt payload: {0}")]
    Corrupt(String),
    /// Encoding failed (should not happen with in-memory values).
    #[error("encoding failed: {0}")]
    Encode(String),
}

#[cfg(test)]
pub(crate) fn with_header(magic: &[u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks the header: the format version it names.
fn header_version(magic: &[u8; 4], what: &'static str, bytes: &[u8]) -> Result<u32, CodecError> {
    if bytes.len() < 8 || &bytes[..4] != magic {
        return Err(CodecError::BadHeader(what));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(&bytes[4..8]);
    match u32::from_le_bytes(v) {
        0 => Err(CodecError::UnsupportedVersion(0)),
        found if found > FORMAT_VERSION => Err(CodecError::NewerVersion {
            found,
            supported: FORMAT_VERSION,
        }),
        version => Ok(version),
    }
}

/// Checks the header and returns an aligned copy of the payload.
pub(crate) fn payload(
    magic: &[u8; 4],
    what: &'static str,
    bytes: &[u8],
) -> Result<rkyv::util::AlignedVec<16>, CodecError> {
    header_version(magic, what, bytes)?;
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len() - 8);
    aligned.extend_from_slice(&bytes[8..]);
    Ok(aligned)
}

/// `magic`, the format version, then `value`'s archive, written in place
/// into one buffer of `capacity` bytes to start with: no second copy of
/// the archive (a large observation or snapshot). The archive's bytes are
/// those `rkyv::to_bytes` gives: the 8-byte header keeps every position at
/// the same alignment (nothing archived here is aligned to more than 8,
/// which `archive_follows_the_header_unchanged` checks).
pub(crate) fn encode_with_header<T>(
    magic: &[u8; 4],
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, CodecError>
where
    T: for<'a> rkyv::Serialize<
        rkyv::api::high::HighSerializer<
            Vec<u8>,
            rkyv::ser::allocator::ArenaHandle<'a>,
            rkyv::rancor::Error,
        >,
    >,
{
    let mut out = Vec::with_capacity(capacity.max(64));
    out.extend_from_slice(magic);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    rkyv::api::high::to_bytes_in::<_, rkyv::rancor::Error>(value, out)
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Encodes one event for the log.
pub fn encode_event(event: &Event) -> Result<Vec<u8>, CodecError> {
    encode_with_header(EVENT_MAGIC, event, event_size_hint(event))
}

/// A first guess of an event's encoded size: what the items of an
/// observation or a batch take (about 48 bytes each), else a little.
fn event_size_hint(event: &Event) -> usize {
    let items = match event {
        Event::BackendObserved { observation, .. } => {
            observation.changed.len() + observation.vanished.len()
        }
        Event::SyncKeyIssued { batch, .. } => batch.changes.len() + batch.replies.len(),
        Event::Decided { record, .. } => match &record.output {
            crate::record::DecisionOutput::Sync(r) => 2 * r.changes.len() + r.replies.len(),
            _ => 0,
        },
        _ => 0,
    };
    256 + items.saturating_mul(48)
}

/// The format version an encoded event was written at (its header), the
/// version whose [`crate::Rules`] a decision it records was decided under.
/// Rejects what [`decode_event`] rejects for its header.
pub fn event_format(bytes: &[u8]) -> Result<u32, CodecError> {
    header_version(EVENT_MAGIC, "event", bytes)
}

/// Decodes one event; rejects newer versions and corrupt bytes.
pub fn decode_event(bytes: &[u8]) -> Result<Event, CodecError> {
    let aligned = payload(EVENT_MAGIC, "event", bytes)?;
    rkyv::from_bytes::<Event, rkyv::rancor::Error>(&aligned)
        .map_err(|e| CodecError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    /// The archived size of `Event` as earlier versions laid it out: a
    /// variant added at the end must not grow it, or older records would
    /// no longer decode as they are.
    #[test]
    fn the_archived_event_keeps_its_size() {
        assert_eq!(std::mem::size_of::<super::ArchivedEvent>(), 104);
    }

    /// Written after the 8-byte header, an archive keeps the bytes it has
    /// alone: nothing in it needs more than 8-byte alignment, and the
    /// header-first encoder gives what `rkyv::to_bytes` gives.
    #[test]
    #[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    fn archive_follows_the_header_unchanged() {
        use super::*;
        assert!(std::mem::align_of::<ArchivedEvent>() <= 8);
        assert!(std::mem::align_of::<crate::state::ArchivedDeviceState>() <= 8);
        let item = |i: u32| ObservedItem {
            id: BackendItemId(format!("1700000000/{i}")),
            version: ItemVersion(u64::from(i) * 7),
            received_at: Timestamp(1_000 + u64::from(i)),
            digest: (i % 3 == 0).then(|| Digest::of(&i.to_le_bytes())),
        };
        let events = [
            Event::PolicyChanged,
            Event::BackendObserved {
                req_id: 3,
                collection: CollectionId(2),
                at: Timestamp(9),
                observation: Observation {
                    validity: 1_700_000_000,
                    cursor: 77,
                    kind: ObservationKind::Full,
                    changed: (1..=3000).map(item).collect(),
                    vanished: vec![BackendItemId("1700000000/9999".into())],
                },
            },
            Event::SyncKeyIssued {
                collection: CollectionId(2),
                batch: Batch {
                    key: SyncKey(5),
                    changes: (1..=600)
                        .map(|n| ServerChange::Add {
                            n,
                            id: item(n).id,
                            version: ItemVersion(u64::from(n)),
                        })
                        .collect(),
                    replies: vec![],
                    more_available: true,
                },
            },
        ];
        for e in &events {
            let alone = rkyv::to_bytes::<rkyv::rancor::Error>(e).unwrap();
            let encoded = encode_event(e).unwrap();
            assert_eq!(&encoded[..8], &with_header(EVENT_MAGIC, &[])[..]);
            assert_eq!(&encoded[8..], alone.as_slice());
            assert_eq!(&decode_event(&encoded).unwrap(), e);
        }
    }
}
