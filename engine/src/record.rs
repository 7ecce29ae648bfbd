//! Decision records: every input one `decide_*` call was given (the
//! engine-level request, the outcomes of the effects the server carried out,
//! `now` and the configuration) together with the response it returned, so
//! that a recorded session can be re-run decision by decision.
//!
//! The server logs one [`Event::Decided`] carrying a [`DecisionRecord`]
//! right before the events that decision produced; [`redecide`] calls the
//! same `decide_*` function again on the state folded up to that point.
//! This module decides nothing itself and must not mutate state.

use crate::decision::{Decision, EngineConfig, Rules, StepError};
use crate::event::Event;
use crate::folder_sync::{
    decide_folder_op, decide_folder_sync, plan_folder_op, FolderOp, FolderOpResponse,
    FolderOutcome, FolderSyncResponse,
};
use crate::move_items::{decide_move_as, plan_move_as, MoveOutcome, MoveRequest, MoveResponse};
use crate::oof::{decide_oof, OofDecision, OofRequest};
use crate::ping::{
    decide_get_item_estimate, decide_ping, ping_changes, EstimateRequest, EstimateResponse,
    PingRequest, PingResponse,
};
use crate::provision::{
    check_policy, decide_provision, PolicyCheck, ProvisionRequest, ProvisionResponse,
};
use crate::send::{check_send, decide_sent, MailAccepted, SendCheck, SendRequest};
use crate::state::DeviceState;
use crate::sync::{decide_sync_as, plan_sync_as, SyncInput, SyncResponse};
use crate::sync_wait::{decide_sync_wait, SyncWaitRequest, SyncWaitResponse};
use crate::types::{
    ClientId, CollectionId, Command, PolicyKey, ProtocolVersion, SyncKey, Timestamp,
};
use rkyv::{Archive, Deserialize, Serialize};

/// The input of one engine decision: which `decide_*` function and
/// everything it takes besides the state, `now` and the configuration.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum DecisionInput {
    /// [`decide_sync`](crate::decide_sync) for one collection (the effects' outcomes included).
    Sync(SyncInput),
    /// [`decide_folder_sync`] with the SyncKey presented.
    FolderSync {
        /// Hierarchy SyncKey presented.
        sync_key: SyncKey,
    },
    /// FolderCreate/Delete/Update: [`decide_folder_op`] with the outcome of
    /// the planned effect, or `None` when [`plan_folder_op`] refused it
    /// (nothing was carried out).
    FolderOp {
        /// The operation.
        op: FolderOp,
        /// The effect's outcome.
        outcome: Option<FolderOutcome>,
    },
    /// One `<Move>`: [`decide_move`](crate::decide_move) with the outcome, or `None` when
    /// [`plan_move`](crate::plan_move) refused it.
    Move {
        /// The move.
        request: MoveRequest,
        /// The effect's outcome.
        outcome: Option<MoveOutcome>,
    },
    /// [`decide_provision`] with the policy key the server drew.
    Provision {
        /// The request.
        request: ProvisionRequest,
        /// The fresh key offered to the decision.
        new_key: PolicyKey,
    },
    /// [`decide_ping`].
    Ping(PingRequest),
    /// [`ping_changes`] when a parked Ping's watcher fired.
    PingChanges {
        /// Folders watched.
        folders: Vec<CollectionId>,
    },
    /// [`decide_get_item_estimate`] for one collection.
    GetItemEstimate(EstimateRequest),
    /// [`check_policy`] before a command.
    PolicyCheck {
        /// The command about to run.
        command: Command,
        /// `X-MS-PolicyKey`.
        header_key: Option<PolicyKey>,
        /// MS-ASProtocolVersion.
        version: ProtocolVersion,
    },
    /// [`check_send`] before SendMail/SmartReply/SmartForward submits
    /// (format version 3).
    SendCheck(SendRequest),
    /// [`decide_sent`] once the relay accepted the message (format version 3).
    Sent {
        /// The request's ClientId, if any.
        client_id: Option<ClientId>,
    },
    /// [`decide_sync_wait`]: a Sync's `Wait`/`HeartbeatInterval` (format
    /// version 4).
    SyncWait(SyncWaitRequest),
    /// [`decide_oof`]: a Settings `Oof` Get or Set and its outcome (format
    /// version 7).
    Oof(OofRequest),
}

impl DecisionInput {
    /// A short name for transcripts and divergence reports.
    pub fn name(&self) -> &'static str {
        match self {
            DecisionInput::Sync(_) => "Sync",
            DecisionInput::FolderSync { .. } => "FolderSync",
            DecisionInput::FolderOp { op, .. } => match op {
                FolderOp::Create { .. } => "FolderCreate",
                FolderOp::Delete { .. } => "FolderDelete",
                FolderOp::Update { .. } => "FolderUpdate",
            },
            DecisionInput::Move { .. } => "MoveItems",
            DecisionInput::Provision { .. } => "Provision",
            DecisionInput::Ping(_) => "Ping",
            DecisionInput::PingChanges { .. } => "PingChanges",
            DecisionInput::GetItemEstimate(_) => "GetItemEstimate",
            DecisionInput::PolicyCheck { .. } => "PolicyCheck",
            DecisionInput::SendCheck(_) => "SendCheck",
            DecisionInput::Sent { .. } => "Sent",
            DecisionInput::SyncWait(_) => "SyncWait",
            DecisionInput::Oof(_) => "Oof",
        }
    }
}

/// The response model a decision returned (the same variants as
/// [`DecisionInput`]).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum DecisionOutput {
    /// Sync, one collection.
    Sync(SyncResponse),
    /// FolderSync.
    FolderSync(FolderSyncResponse),
    /// FolderCreate/Delete/Update.
    FolderOp(FolderOpResponse),
    /// One move.
    Move(MoveResponse),
    /// Provision.
    Provision(ProvisionResponse),
    /// Ping.
    Ping(PingResponse),
    /// Folders with changes.
    PingChanges(Vec<CollectionId>),
    /// GetItemEstimate, one collection.
    GetItemEstimate(EstimateResponse),
    /// The policy check.
    PolicyCheck(PolicyCheck),
    /// The send check (format version 3).
    SendCheck(SendCheck),
    /// The message was accepted and its ClientId remembered (format version 3).
    Sent(MailAccepted),
    /// The long-poll decision of a Sync (format version 4).
    SyncWait(SyncWaitResponse),
    /// The status of a Settings `Oof` (format version 7).
    Oof(OofDecision),
}

/// One decision as the log keeps it.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DecisionRecord {
    /// The `now` the decision was given.
    pub at: Timestamp,
    /// The configuration in force.
    pub config: EngineConfig,
    /// The input.
    pub input: DecisionInput,
    /// The response model it returned.
    pub output: DecisionOutput,
}

impl DecisionRecord {
    /// The [`Event::Decided`] for this record, announcing that the next
    /// `n_events` events of the log are the ones the decision produced.
    pub fn into_event(self, req_id: u64, n_events: usize) -> Event {
        Event::Decided {
            req_id,
            events: u32::try_from(n_events).unwrap_or(u32::MAX),
            record: Box::new(self),
        }
    }
}

/// Runs the decision described by `record` again on `state` (the state
/// folded up to the `Decided` event) under `rules`, those of the format
/// the record was written at (`Rules::of(event_format(bytes))`): the
/// response model and the events, to compare with what was recorded. Pure,
/// like every `decide_*`.
pub fn redecide(
    state: &DeviceState,
    record: &DecisionRecord,
    rules: Rules,
) -> Result<Decision<DecisionOutput>, StepError> {
    let now = record.at;
    let config = &record.config;
    let plain = |response: DecisionOutput| Decision {
        response,
        events: Vec::new(),
    };
    Ok(match &record.input {
        DecisionInput::Sync(input) => {
            let planned = plan_sync_as(state, &input.request, rules).len();
            if planned != input.outcomes.len() {
                return Err(StepError::OutcomeMismatch {
                    expected: planned,
                    got: input.outcomes.len(),
                });
            }
            map(
                decide_sync_as(state, input, now, config, rules)?,
                DecisionOutput::Sync,
            )
        }
        DecisionInput::FolderSync { sync_key } => map(
            decide_folder_sync(state, *sync_key),
            DecisionOutput::FolderSync,
        ),
        DecisionInput::FolderOp { op, outcome } => match (outcome, plan_folder_op(state, op)) {
            (Some(o), Ok(_)) => map(decide_folder_op(state, op, o), DecisionOutput::FolderOp),
            (None, Err(r)) => plain(DecisionOutput::FolderOp(r)),
            // A refused plan never has an outcome and an accepted one always does.
            (o, plan) => return Err(outcome_mismatch(plan.is_ok(), o.is_some())),
        },
        DecisionInput::Move { request, outcome } => {
            match (outcome, plan_move_as(state, request, rules)) {
                (Some(o), Ok(_)) => map(
                    decide_move_as(state, request, o, rules)?,
                    DecisionOutput::Move,
                ),
                (None, Err(r)) => plain(DecisionOutput::Move(r)),
                (o, plan) => return Err(outcome_mismatch(plan.is_ok(), o.is_some())),
            }
        }
        DecisionInput::Provision { request, new_key } => map(
            decide_provision(state, request, *new_key, now, config),
            DecisionOutput::Provision,
        ),
        DecisionInput::Ping(request) => map(
            decide_ping(state, request, now, config),
            DecisionOutput::Ping,
        ),
        DecisionInput::PingChanges { folders } => plain(DecisionOutput::PingChanges(ping_changes(
            state, folders, now,
        ))),
        DecisionInput::GetItemEstimate(request) => plain(DecisionOutput::GetItemEstimate(
            decide_get_item_estimate(state, request, now),
        )),
        DecisionInput::PolicyCheck {
            command,
            header_key,
            version,
        } => plain(DecisionOutput::PolicyCheck(check_policy(
            state,
            *command,
            *header_key,
            *version,
            config,
        ))),
        DecisionInput::SendCheck(request) => {
            plain(DecisionOutput::SendCheck(check_send(state, request)))
        }
        DecisionInput::Sent { client_id } => Decision {
            response: DecisionOutput::Sent(MailAccepted),
            events: decide_sent(client_id.as_ref(), now),
        },
        DecisionInput::SyncWait(request) => map(
            decide_sync_wait(request, now, config),
            DecisionOutput::SyncWait,
        ),
        DecisionInput::Oof(request) => plain(DecisionOutput::Oof(decide_oof(request))),
    })
}

fn map<R>(d: Decision<R>, f: impl FnOnce(R) -> DecisionOutput) -> Decision<DecisionOutput> {
    Decision {
        response: f(d.response),
        events: d.events,
    }
}

macro_rules! output_from {
    ($($ty:ty => $variant:ident),* $(,)?) => {
        $(impl From<$ty> for DecisionOutput {
            fn from(r: $ty) -> DecisionOutput {
                DecisionOutput::$variant(r)
            }
        })*
    };
}

output_from! {
    SyncResponse => Sync,
    FolderSyncResponse => FolderSync,
    FolderOpResponse => FolderOp,
    MoveResponse => Move,
    ProvisionResponse => Provision,
    PingResponse => Ping,
    Vec<CollectionId> => PingChanges,
    EstimateResponse => GetItemEstimate,
    PolicyCheck => PolicyCheck,
    SendCheck => SendCheck,
    MailAccepted => Sent,
    SyncWaitResponse => SyncWait,
    OofDecision => Oof,
}

/// A recorded outcome that does not fit the plan: an accepted plan needs one
/// outcome, a refused plan none.
fn outcome_mismatch(plan_accepted: bool, has_outcome: bool) -> StepError {
    StepError::OutcomeMismatch {
        expected: usize::from(plan_accepted),
        got: usize::from(has_outcome),
    }
}

#[cfg(test)]
mod tests {
    /// The archived sizes of the record types as format version 2 laid them
    /// out: a variant added at the end must not grow them, or version-2
    /// records would no longer decode as they are.
    #[test]
    fn archived_sizes_are_those_of_version_2() {
        assert_eq!(std::mem::size_of::<super::ArchivedDecisionInput>(), 96);
        assert_eq!(std::mem::size_of::<super::ArchivedDecisionOutput>(), 64);
        assert_eq!(std::mem::size_of::<super::ArchivedDecisionRecord>(), 208);
        assert_eq!(
            std::mem::size_of::<crate::decision::ArchivedEngineConfig>(),
            40
        );
    }

    /// Format 6's `page_order` sits in what older engines wrote as zeroed
    /// padding, and zero is `ById`: their records read as decided in id
    /// order. The one byte that differs between the two orders is that
    /// padding byte, 30 bytes into the archived configuration.
    #[test]
    #[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    fn page_order_lives_in_former_padding() {
        use crate::decision::{EngineConfig, PageOrder};
        let encode = |page_order| {
            let config = EngineConfig {
                page_order,
                ..EngineConfig::default()
            };
            rkyv::to_bytes::<rkyv::rancor::Error>(&config)
                .unwrap()
                .to_vec()
        };
        let (by_id, newest) = (encode(PageOrder::ById), encode(PageOrder::NewestFirst));
        assert_eq!(by_id.len(), 40);
        let differ: Vec<usize> = (0..40).filter(|&i| by_id[i] != newest[i]).collect();
        assert_eq!(differ, [30]);
        assert_eq!(by_id[30], 0);
        // The bytes before format 6 had zero there: they read as ById.
        let mut old = newest.clone();
        old[30] = 0;
        let back = rkyv::from_bytes::<EngineConfig, rkyv::rancor::Error>(&old).unwrap();
        assert_eq!(back.page_order, PageOrder::ById);
        assert_eq!(
            back,
            EngineConfig {
                page_order: PageOrder::ById,
                ..EngineConfig::default()
            }
        );
    }
}
