//! What every `decide_*` returns and takes besides the state: the
//! [`Decision`] (response model + events to append), the [`EngineConfig`]
//! values the server passes in, and [`StepError`] for caller mistakes.
//!
//! Protocol outcomes (invalid SyncKey, unknown folder…) are statuses in the
//! response model, not errors; `StepError` means the caller broke the
//! plan/decide contract. A failed step returns no events: nothing changes.

use crate::event::{Event, FORMAT_VERSION};

/// The result of a decision: what to answer and what to record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<R> {
    /// The response model the server renders.
    pub response: R,
    /// Events to append (durably, before the response is sent).
    pub events: Vec<Event>,
}

/// Limits and policies chosen by configuration.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// WindowSize used when the request has none.
    pub default_window: u32,
    /// Server maximum WindowSize (the client's value is capped to it).
    pub max_window: u32,
    /// Identical replays of a lost answer before the window shrinks.
    pub retries_before_shrink: u32,
    /// Further retries of a one-item answer before that item is quarantined.
    pub retries_before_quarantine: u32,
    /// Lowest accepted Ping HeartbeatInterval (seconds).
    pub min_heartbeat: u32,
    /// Highest accepted Ping HeartbeatInterval (seconds).
    pub max_heartbeat: u32,
    /// Most folders one Ping may watch.
    pub max_ping_folders: usize,
    /// Whether devices must be provisioned.
    pub require_provisioning: bool,
    /// Accept a policy acknowledgement with status 2 (partially applied).
    pub allow_partial_compliance: bool,
    /// The order in which due items are paged to the device. Archived in
    /// what was padding before format version 6 (the archived size is
    /// unchanged, `record.rs` checks it), so a decision recorded by an
    /// older engine, whose padding is zero, reads as [`PageOrder::ById`]
    /// and replays in the order it was decided in.
    pub page_order: PageOrder,
    /// Bytes budget of one Sync window (0: none). The engine counts items;
    /// the shell, which knows item sizes, asks again with a smaller
    /// WindowSize when a window's content would exceed this.
    pub max_window_bytes: u64,
}

/// The order in which a Sync pages the items due in a collection (after
/// the SoftDeletes a FilterType window asks for, which go oldest first).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[rkyv(derive(Debug, PartialEq, Eq))]
#[repr(u8)]
pub enum PageOrder {
    /// In the byte order of the backend ids (`7/1`, `7/10`, `7/100`, `7/2`
    /// …): what engines before format version 6 did, kept so their
    /// recorded decisions replay. It scatters an IMAP mailbox: a phone's
    /// first windows hold old mail and today's comes last.
    ById = 0,
    /// Newest first: IMAP ids (`<uidvalidity>/<uid>`) by UID descending,
    /// which is arrival order, so the first window holds the latest mail
    /// and a phone shows today's mail while older mail is still coming;
    /// each window's UIDs are one contiguous range for the body FETCH. Ids
    /// of an older UIDVALIDITY (Deletes after a reset) come before the
    /// newer's Adds. Other ids (DAV hrefs) follow in byte order.
    /// [MS-ASCMD] sets no order; the Exchange 2010 captures in the corpus
    /// page oldest first (devices sort by date whatever the order), which
    /// leaves a phone without its recent mail until the last window.
    NewestFirst = 1,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            default_window: 100,
            max_window: 512,
            retries_before_shrink: 2,
            retries_before_quarantine: 3,
            min_heartbeat: 60,
            max_heartbeat: 3540,
            max_ping_folders: 300,
            require_provisioning: true,
            allow_partial_compliance: true,
            page_order: PageOrder::NewestFirst,
            max_window_bytes: 8 * 1024 * 1024,
        }
    }
}

/// The decision rules of one engine format version: a decision answers as
/// the format that recorded it did, so a recorded session replays byte for
/// byte whatever engine recorded it. The live server decides with
/// [`Rules::CURRENT`]; replay takes the format from each recorded event's
/// header ([`crate::event_format`]) and passes [`Rules::of`] it to
/// [`crate::redecide`].
///
/// The rule (docs/ARCHITECTURE.md, "Replay"): a change of what a decision
/// returns, or of the events it produces, for the same state and input
/// bumps [`FORMAT_VERSION`] and keeps the old behaviour behind a method
/// here, asked where the decision branches. Changes so far:
/// * format 6: a Sync pages newest first. Gated by the recorded
///   configuration ([`EngineConfig::page_order`]), not here: older records
///   read as [`PageOrder::ById`].
/// * format 8: [`Rules::delete_of_vanished_succeeds`],
///   [`Rules::retried_move_answered`],
///   [`Rules::move_judges_copy_by_moved_flags`] and
///   [`Rules::refused_change_refreshes_copy`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rules {
    format: u32,
}

impl Rules {
    /// The rules of this engine's [`FORMAT_VERSION`]: what the server
    /// decides with.
    pub const CURRENT: Rules = Rules {
        format: FORMAT_VERSION,
    };

    /// The rules a decision recorded at `format` was decided under. A
    /// format newer than this engine's reads as the current one (the
    /// decoder refuses such records before they get here).
    pub fn of(format: u32) -> Rules {
        Rules {
            format: format.min(FORMAT_VERSION),
        }
    }

    /// The format version these rules are those of.
    pub fn format(self) -> u32 {
        self.format
    }

    /// From format 8, a device's Delete of an item it holds whose backend
    /// side vanished (deleted or moved in IMAP, the device not told yet;
    /// or the effect of a killed try of the same Delete) succeeds with
    /// nothing to carry out. Formats 2-7 answered it Status 8 (object not
    /// found).
    pub fn delete_of_vanished_succeeds(self) -> bool {
        self.format >= 8
    }

    /// From format 8, a MoveItems the device sends again after its answer
    /// was lost gets its first answer (Status 3, the same DstMsgId), and a
    /// move records [`Event::MoveRemembered`] for that. Formats 2-7
    /// answered the retry Status 1 (invalid source) and recorded only
    /// [`Event::ItemMovedByDevice`].
    pub fn retried_move_answered(self) -> bool {
        self.format >= 8
    }

    /// From format 8, the device's copy of an item it moves (MoveItems)
    /// is judged against the moved message's flags as IMAP reports them
    /// right after the MOVE, not only against the flags opush last
    /// observed: flags changed by another client since the device's last
    /// Sync of the source make the copy stale, so the destination's next
    /// Sync sends the device a Change. Formats 2-7 compared with what opush
    /// had observed only, and a device that moved an item it showed with
    /// outdated flags kept them.
    pub fn move_judges_copy_by_moved_flags(self) -> bool {
        self.format >= 8
    }

    /// From format 8, a Change the server refuses (Status 7, the server's
    /// version wins a conflict) or fails to carry out records
    /// [`Event::DeviceCopyStale`]: the device applied its change to its
    /// copy already, so the server owes it its own version, sent by a later
    /// window if not this one, even when the flags the server knows come
    /// back to those the device had before. Formats 2-7 recorded nothing,
    /// and such a device could keep its refused change for good.
    pub fn refused_change_refreshes_copy(self) -> bool {
        self.format >= 8
    }
}

/// The caller broke the engine's contract (never a protocol status).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StepError {
    /// The outcomes do not match the planned effects.
    #[error("expected {expected} effect outcomes, got {got}")]
    OutcomeMismatch {
        /// Planned effects.
        expected: usize,
        /// Outcomes given.
        got: usize,
    },
    /// An outcome does not fit its effect (e.g. `Deleted` for a create).
    #[error("outcome {index} does not match its effect")]
    OutcomeKind {
        /// Position in the plan.
        index: usize,
    },
}
