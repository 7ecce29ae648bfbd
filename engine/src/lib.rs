//! The deterministic EAS sync state machine: events, state, `apply` and
//! `decide`. Time, identifiers and backend observations arrive as event
//! fields.
//!
//! Architecture invariant: no I/O, no clock, no randomness, never awaits.
//! `engine/clippy.toml` forbids the clock and RNG methods.
//!
//! # Model
//! A device's life is a log of [`Event`]s. [`apply`] folds one event into a
//! [`DeviceState`] and is total (any sequence folds, nothing panics). Each
//! `decide_*` function takes `&DeviceState`, the command input and `now`,
//! and returns a [`Decision`]: the response model plus the events recording
//! the decision. Decisions are a function of (state, input, now, config).
//!
//! Items are backend-neutral: a [`BackendItemId`] (IMAP "uidvalidity/uid",
//! DAV href), an [`ItemVersion`] that changes with the item, a
//! `received_at` for the FilterType window and optionally a content digest.
//! Observations ([`Observation`]) are a full listing or a delta since a
//! backend cursor. A validity change (UIDVALIDITY) makes every known item
//! vanish: the device receives Deletes then Adds through normal paging, which
//! every device handles, rather than Status 3 (which some clients handle by
//! dropping local changes). Since IMAP ids embed the validity this is also
//! what a full listing shows.
//!
//! Each collection keeps, per item, the backend side and the device side
//! (what the device confirmed) plus a `dirty` set of items whose sides may
//! differ, so a no-change Sync visits nothing. Pages are taken from `dirty`
//! in [`EngineConfig::page_order`]: newest first (IMAP UIDs descending), or
//! in id order for decisions recorded before format 6 ([`DirtySet`] keeps
//! both walks); the soft-delete scan walks the items on the device ordered
//! by `received_at` only below the window cutoff.
//!
//! # SyncKeys and acknowledgement
//! Keys are decimal counters per collection that never repeat (a reset
//! continues the count), so an old key is never mistaken for a live one.
//! Only the device's use of a key confirms the batch that issued it:
//! * SyncKey "0": `SyncReset` (device side emptied), a new key, no items.
//! * the pending batch's key: `SyncKeyConfirmed`, then client commands, then
//!   the next page as `SyncKeyIssued` (or the same key when nothing is due).
//! * the confirmed key while a batch is pending: the answer was lost; the
//!   same batch is returned (byte-identical rendering) and `SyncRetried` is
//!   recorded. After `retries_before_shrink` identical replays the batch is
//!   re-issued with half its changes; a one-item batch still failing after
//!   `retries_before_quarantine` more retries quarantines that item
//!   (reported in the response, skipped, released when the item changes).
//! * anything else: Status 3 ([MS-ASCMD] 2.2.3.177.17), the device resyncs.
//!
//! FilterType changes with a non-zero key do not reset the collection:
//! [MS-ASCMD] 2.2.3.68.2 says the server maintains the window — items
//! leaving it are sent as SoftDelete, items entering it as Add. The answer to
//! the request that changes the filter sets MoreAvailable so the device comes
//! back for newly included items. FilterType 8 (incomplete tasks) is "all".
//!
//! Conflicts ([MS-ASCMD] 2.2.3.34): by default (1) the server object wins —
//! the device's Change gets Status 7 and the server version is sent back; with
//! Conflict 0 the device's change is applied.
//!
//! Client Adds are idempotent by ClientId; in contacts folders an Add whose
//! content digest (blake3 of the ApplicationData, computed by the server)
//! matches an existing item is mapped onto it instead of creating a duplicate.
//!
//! # Effects, in order (the server carries them out)
//! 1. Parse, authenticate, [`check_policy`].
//! 2. Observe the backends; fold the observation as
//!    [`Event::BackendObserved`] / [`Event::HierarchyObserved`].
//! 3. For commands that change the backend (Sync `<Commands>`, MoveItems,
//!    Folder*): `plan_*` returns the backend effects; perform them in order
//!    and collect their outcomes. On a store shared by several server
//!    processes the server holds the device's lease from before this step
//!    until after step 5, so no other process performs the device's
//!    effects meanwhile.
//! 4. `decide_*` with the outcomes: response model + events.
//! 5. Append all events of steps 2-4 atomically. A new SyncKey reaches the
//!    device only after the events creating it are durable; if the append
//!    fails the device gets a retryable error and retries with its old key
//!    (step 3 effects are then found done: ClientId mapping, observations).
//! 6. Fold the events into the in-memory state.
//! 7. Fetch the content the response needs (Add/Change/Fetch bodies by
//!    backend id and version), render, send, then log `ResponseSent`.
//!    Fetching and rendering only read the backends, so the server may run
//!    them while the append of step 5 is in flight; the response is sent
//!    only once both are done.
//!
//! # API shape
//! * Sync: [`plan_sync`] → effects → [`decide_sync`] (one call per
//!   collection of the request). MoveItems: [`plan_move`] → [`decide_move`].
//!   Folder*: [`plan_folder_op`] → [`decide_folder_op`]. FolderSync:
//!   [`decide_folder_sync`]. Provision: [`check_policy`] before every
//!   command, [`decide_provision`]. Ping: [`decide_ping`], then
//!   [`ping_changes`] each time the watcher fires. GetItemEstimate:
//!   [`decide_get_item_estimate`] (no events). SendMail/SmartReply/
//!   SmartForward: [`check_send`] before submitting, [`decide_sent`] after
//!   the relay accepted (ClientId dedupe). Settings `Oof`: [`decide_oof`]
//!   once the Sieve script is written or read.
//! * `RequestReceived` and `ResponseSent` are written by the server around
//!   each request, and `Decided` (a [`DecisionRecord`]: input, `now`,
//!   configuration, response) right before the events of each decision.
//!   Fold rule: these three change no sync state; like every event they only
//!   count in `DeviceState::applied`. So a log folds to the same sync state
//!   with or without them, and replay re-runs each `Decided` with
//!   [`redecide`] on the state folded up to it.
//! * Snapshots: [`encode_snapshot`] / [`decode_snapshot`] for the whole
//!   device, [`check_snapshot`] validates without loading.
//!
//! # Costs (see docs/BENCHMARKS.md, "Engine")
//! A no-change Sync decide on 100,000 items is well under a microsecond;
//! a page of 100 costs the same at the start and the end of an initial sync;
//! state is about 300 bytes per synced item.
//!
//! # Known limits
//! * A lost FolderCreate/Update/Delete answer leads to FolderSync Status 9
//!   on the retry (the device resyncs its hierarchy).
//! * An item that ages out of the window while dirty and not yet on the
//!   device stays in `dirty` (skipped at no cost beyond a lookup) until it
//!   is observed again.

mod decision;
mod dirty;
mod event;
mod folder_sync;
mod move_items;
mod oof;
mod ping;
mod provision;
mod record;
mod send;
mod snapshot;
mod state;
mod sync;
mod sync_wait;
mod types;

pub use decision::{Decision, EngineConfig, PageOrder, Rules, StepError};
pub use dirty::{DirtySet, InOrder, PageKey};
pub use event::{
    decode_event, encode_event, event_format, AppliedChange, BackendFolder, Batch, ClientReply,
    CodecError, Event, FolderChange, Observation, ObservationKind, ObservedItem, ReplyKind,
    ServerChange, FORMAT_VERSION,
};
pub use folder_sync::{
    decide_folder_op, decide_folder_sync, device_folders, hierarchy_out_of_date, plan_folder_op,
    FolderEffect, FolderOp, FolderOpResponse, FolderOutcome, FolderSyncResponse,
};
pub use move_items::{decide_move, plan_move, MoveEffect, MoveOutcome, MoveRequest, MoveResponse};
pub use oof::{decide_oof, OofDecision, OofOutcome, OofRequest};
pub use ping::{
    decide_get_item_estimate, decide_ping, has_changes, ping_changes, EstimateRequest,
    EstimateResponse, PingRequest, PingResponse,
};
pub use provision::{
    check_policy, decide_provision, PolicyCheck, ProvisionRequest, ProvisionResponse,
};
pub use record::{redecide, DecisionInput, DecisionOutput, DecisionRecord};
pub use send::{
    check_send, decide_sent, MailAccepted, SendCheck, SendRequest, MAX_SENT_CLIENT_IDS,
};
pub use snapshot::{check_snapshot, decode_snapshot, encode_snapshot, snapshot_size_hint};
pub use state::{
    apply, fold, CollectionState, DeviceFolder, DeviceSide, DeviceState, Folder, Hierarchy, Item,
    Pending, PolicyState, ServerSide, WipeState,
};
pub use sync::{
    decide_sync, plan_sync, BackendEffect, ClientCommand, Conflict, EffectOutcome, SyncInput,
    SyncRequest, SyncResponse, SyncStatus, FETCH_DEFERRED,
};
pub use sync_wait::{
    decide_sync_wait, wait_bounds, SyncWaitRequest, SyncWaitResponse, MAX_WAIT_MINUTES,
    MIN_WAIT_MINUTES,
};
pub use types::{
    BackendFolderId, BackendItemId, ClientId, CollectionId, Command, Digest, FilterType,
    FolderType, ItemVersion, PolicyKey, ProtocolVersion, ServerId, SyncKey, Timestamp,
};
