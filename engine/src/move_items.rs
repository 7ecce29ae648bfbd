//! MoveItems: a move made by the device is recorded so that it is not
//! echoed back to that device as a Delete in the source and an Add in the
//! destination. Other devices of the user have their own state and simply
//! observe the backend (a vanish and a new item).
//!
//! Two-step like Sync commands; nothing here mutates state.

use crate::decision::{Decision, Rules, StepError};
use crate::event::{Event, ObservedItem};
use crate::state::DeviceState;
use crate::sync::Overlay;
use crate::types::{BackendFolderId, BackendItemId, ClientId, CollectionId, ServerId};

/// One `<Move>` of a MoveItems request.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MoveRequest {
    /// SrcMsgId.
    pub src: ServerId,
    /// DstFldId.
    pub dst: CollectionId,
}

/// The backend move to perform.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MoveEffect {
    /// Source collection.
    pub src: CollectionId,
    /// Item to move.
    pub id: BackendItemId,
    /// Destination backend folder.
    pub dst_folder: BackendFolderId,
}

/// Outcome of a move.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum MoveOutcome {
    /// Moved: the item in the destination.
    Moved(ObservedItem),
    /// The backend failed.
    Failed,
    /// The source message is no longer in its folder (expunged or moved
    /// by another client since the device last synced it; or moved by a
    /// try of this very MoveItems that was not recorded): nothing moved.
    /// Answered Status 1, which per MS-ASCMD covers an item "previously
    /// moved out of the folder" (the device stops retrying; its next Sync
    /// of the folder removes the item). Recorded from format 8; older
    /// records only hold `Moved` and `Failed`.
    Gone,
}

/// MoveItems Response for one move ([MS-ASCMD] 2.2.3.177.9).
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct MoveResponse {
    /// 1 invalid source, 2 invalid destination, 3 success, 4 same
    /// source and destination, 5 failure.
    pub status: u8,
    /// SrcMsgId.
    pub src: ServerId,
    /// DstMsgId on success.
    pub dst: Option<ServerId>,
}

/// The key under which the destination collection remembers that the
/// device moved `src` there (in `CollectionState::client_ids`, beside the
/// ClientIds of the device's Adds: a device's ClientId never starts with
/// a NUL). Kept until that collection is reset, like the ClientIds.
pub(crate) fn moved_key(src: ServerId) -> ClientId {
    ClientId(format!("\0moved {src}"))
}

/// Where the device moved `req.src` to `req.dst` before (a MoveItems
/// recorded, whose answer the device did not get), while the device still
/// holds it there.
fn moved_to(state: &DeviceState, req: &MoveRequest) -> Option<ServerId> {
    let d = state.collections.get(&req.dst)?;
    let n = *d.client_ids.get(&moved_key(req.src))?;
    let id = d.by_n.get(&n)?;
    d.items.get(id)?.device?;
    Some(ServerId {
        collection: req.dst,
        n,
    })
}

/// Step 1: the effect to perform, or the answer when there is none to
/// perform: a failure status, or Status 3 for a move made already (the
/// retry of a MoveItems whose answer was lost gets the same DstMsgId).
pub fn plan_move(state: &DeviceState, req: &MoveRequest) -> Result<MoveEffect, MoveResponse> {
    plan_move_as(state, req, Rules::CURRENT)
}

/// [`plan_move`] as the format of `rules` decided it (replay).
pub(crate) fn plan_move_as(
    state: &DeviceState,
    req: &MoveRequest,
    rules: Rules,
) -> Result<MoveEffect, MoveResponse> {
    let fail = |status| MoveResponse {
        status,
        src: req.src,
        dst: None,
    };
    let src_col = req.src.collection;
    let live = state.collections.get(&src_col).and_then(|c| {
        let id = c.by_n.get(&req.src.n)?;
        c.items.get(id)?.server?;
        Some(id)
    });
    let Some(id) = live else {
        let moved = moved_to(state, req).filter(|_| rules.retried_move_answered());
        return Err(match moved {
            // Moved by this device already: a retry whose answer was lost.
            Some(dst) => MoveResponse {
                status: 3,
                src: req.src,
                dst: Some(dst),
            },
            None => fail(1),
        });
    };
    let dst_folder = state.hierarchy.ids.get(&req.dst).ok_or_else(|| fail(2))?;
    if req.dst == src_col {
        return Err(fail(4));
    }
    Ok(MoveEffect {
        src: src_col,
        id: id.clone(),
        dst_folder: dst_folder.clone(),
    })
}

/// Step 2: records a performed move.
pub fn decide_move(
    state: &DeviceState,
    req: &MoveRequest,
    outcome: &MoveOutcome,
) -> Result<Decision<MoveResponse>, StepError> {
    decide_move_as(state, req, outcome, Rules::CURRENT)
}

/// [`decide_move`] as the format of `rules` decided it (replay).
pub(crate) fn decide_move_as(
    state: &DeviceState,
    req: &MoveRequest,
    outcome: &MoveOutcome,
    rules: Rules,
) -> Result<Decision<MoveResponse>, StepError> {
    let effect = match plan_move_as(state, req, rules) {
        Ok(e) => e,
        Err(r) => {
            return Ok(Decision {
                response: r,
                events: vec![],
            })
        }
    };
    let item = match outcome {
        MoveOutcome::Failed => {
            return Ok(Decision {
                response: MoveResponse {
                    status: 5,
                    src: req.src,
                    dst: None,
                },
                events: vec![],
            })
        }
        MoveOutcome::Gone => {
            return Ok(Decision {
                response: MoveResponse {
                    status: 1,
                    src: req.src,
                    dst: None,
                },
                events: vec![],
            })
        }
        MoveOutcome::Moved(item) => item,
    };
    let dst_n = state.collections.get(&req.dst).map_or(1, |d| {
        d.items
            .get(&item.id)
            .map(|i| i.n)
            .filter(|n| *n != 0)
            .unwrap_or(d.next_n)
    });
    let dst = ServerId {
        collection: req.dst,
        n: dst_n,
    };
    // The device's copy, assuming it received the pending batch (it names
    // the item by a ServerId, so it has it): stale when it differs from
    // what opush knows of the source or, from format 8, from the moved
    // message's flags as IMAP reported them after the MOVE (another client
    // may have changed them since opush last looked).
    let by_moved = rules.move_judges_copy_by_moved_flags();
    let stale = state.collections.get(&effect.src).is_none_or(|c| {
        let ov = Overlay::confirmed(c);
        let server = c.items.get(&effect.id).and_then(|i| i.server);
        match (server, ov.device_of(&effect.id)) {
            (Some(s), Some(d)) => {
                s.version != d.version || d.stale || (by_moved && d.version != item.version)
            }
            _ => true,
        }
    });
    let mut events = vec![Event::ItemMovedByDevice {
        src: effect.src,
        src_id: effect.id,
        dst: req.dst,
        dst_n,
        item: item.clone(),
        stale,
    }];
    if rules.retried_move_answered() {
        events.push(Event::MoveRemembered { src: req.src, dst });
    }
    Ok(Decision {
        response: MoveResponse {
            status: 3,
            src: req.src,
            dst: Some(dst),
        },
        events,
    })
}
