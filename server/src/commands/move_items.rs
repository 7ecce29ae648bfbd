//! `handle_move_items` ([MS-ASCMD] 2.2.1.12): move messages between IMAP
//! folders (UID MOVE) and record where each landed, so the destination's
//! next Sync does not send the moved item back as new.
//!
//! `engine::plan_move` validates source and destination and
//! `engine::decide_move` records the outcome; this module only performs
//! the IMAP move. It must not answer before the events are durable.

use opush_engine::{
    decide_move, plan_move, CollectionId, Decision, DecisionInput, MoveOutcome, MoveRequest,
    ObservedItem, ServerId,
};
use opush_protocol::commands::move_items::{MoveItemsRequest, MoveItemsResponse, MoveResult};
use opush_protocol::commands::ServerId as WireServerId;
use opush_protocol::query::Command;
use opush_protocol::status::MoveItemsStatus;
use opush_protocol::wbxml::encode_to_vec;

use super::sync::{item_id, uid_of, version_of};
use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::{ImapError, PooledSession};
use crate::session::{session_error, Caller, EasServices};

/// Handles `Cmd=MoveItems`.
pub async fn handle_move_items(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(Command::MoveItems, MoveItemsRequest::from_element)?;
    let res = move_items(&req, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// MoveItems without HTTP.
pub async fn move_items(
    req: &MoveItemsRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<MoveItemsResponse, CommandError> {
    let (mut session, lease, mut rec) = eas.open_leased(caller, Command::MoveItems).await?;
    let mut imap = eas.imap_for(caller).await?;
    let mut responses = Vec::with_capacity(req.moves.len());
    for m in &req.moves {
        let fail = |status: u16| MoveResult {
            src_msg_id: m.src_msg_id.clone(),
            status: MoveItemsStatus::from_code(status),
            dst_msg_id: None,
        };
        let (Some(src), Some(dst)) = (
            ServerId::parse(&m.src_msg_id.0),
            CollectionId::parse(&m.dst_fld_id.0),
        ) else {
            responses.push(fail(if ServerId::parse(&m.src_msg_id.0).is_none() {
                1
            } else {
                2
            }));
            continue;
        };
        let engine_req = MoveRequest { src, dst };
        let outcome = match plan_move(rec.state(), &engine_req) {
            Err(r) => {
                let input = DecisionInput::Move {
                    request: engine_req,
                    outcome: None,
                };
                let r = rec.decided(
                    input,
                    Decision {
                        response: r,
                        events: Vec::new(),
                    },
                );
                // Status 3 here is a retried move made already: its DstMsgId.
                responses.push(MoveResult {
                    src_msg_id: m.src_msg_id.clone(),
                    status: MoveItemsStatus::from_code(r.status.into()),
                    dst_msg_id: r.dst.map(|d| WireServerId(d.to_string())),
                });
                continue;
            }
            Ok(effect) => {
                let src_raw = rec
                    .state()
                    .hierarchy
                    .ids
                    .get(&effect.src)
                    .map(|b| b.0.clone());
                match src_raw {
                    Some(src_raw) => {
                        let dst_raw = &effect.dst_folder.0;
                        let mut outcome = perform(&mut imap, &src_raw, &effect.id, dst_raw).await;
                        if matches!(outcome, MoveOutcome::Failed) && !imap.is_usable() {
                            // The connection broke (a session Dovecot says
                            // had a folder "deleted under" it): once more on
                            // a new one rather than Status 5 for every stale
                            // connection of the pool in turn.
                            imap = eas.imap_for(caller).await?;
                            outcome = perform(&mut imap, &src_raw, &effect.id, dst_raw).await;
                        }
                        outcome
                    }
                    // The source folder is gone from the hierarchy opush
                    // observed (deleted by another client): the item is
                    // gone with it (Status 1, invalid source), not a
                    // failure the device would retry for ever.
                    None => MoveOutcome::Gone,
                }
            }
        };
        let decision = decide_move(rec.state(), &engine_req, &outcome).map_err(|e| {
            CommandError::BackendFailed {
                backend: "engine",
                kind: "plan_mismatch",
                reason: format!("move: {e}"),
            }
        })?;
        let input = DecisionInput::Move {
            request: engine_req,
            outcome: Some(outcome),
        };
        let r = rec.decided(input, decision);
        responses.push(MoveResult {
            src_msg_id: m.src_msg_id.clone(),
            status: MoveItemsStatus::from_code(r.status.into()),
            dst_msg_id: r.dst.map(|d| WireServerId(d.to_string())),
        });
    }
    session.commit_request(rec).await.map_err(session_error)?;
    lease.release().await;
    let res = MoveItemsResponse { responses };
    crate::obs::summary::move_items(req, &res);
    Ok(res)
}

async fn perform(
    imap: &mut PooledSession,
    src_raw: &str,
    id: &opush_engine::BackendItemId,
    dst_raw: &str,
) -> MoveOutcome {
    let Some((validity, uid)) = uid_of(id) else {
        return MoveOutcome::Failed;
    };
    // The source deleted by another client, or deleted and created again
    // (its UIDs start over: this UID may now be another message): the
    // message the device moves is gone, and nothing is moved.
    match imap.writable_uidvalidity(src_raw).await {
        Ok(now) if now == validity => {}
        Ok(_) | Err(ImapError::NotFound(_)) => return MoveOutcome::Gone,
        Err(_) => return MoveOutcome::Failed,
    }
    let moved = match imap.move_messages(src_raw, &[uid], dst_raw).await {
        Ok(pairs) => pairs,
        Err(_) => return gone_or_failed(imap, src_raw, uid).await,
    };
    let Some(&(_, new_uid)) = moved.iter().find(|(old, _)| *old == uid) else {
        // Nothing moved: the message is gone from the source (a MOVE of a
        // UID the folder no longer has moves nothing), or the server did
        // not say where it went.
        return gone_or_failed(imap, src_raw, uid).await;
    };
    let Ok(status) = imap.status(dst_raw).await else {
        return MoveOutcome::Failed;
    };
    let meta = match imap.fetch_meta(dst_raw, &[new_uid]).await {
        Ok(m) => m.into_iter().next(),
        Err(_) => None,
    };
    let Some(meta) = meta else {
        return MoveOutcome::Failed;
    };
    MoveOutcome::Moved(ObservedItem {
        id: item_id(status.uidvalidity, new_uid),
        version: version_of(&meta.flags),
        received_at: opush_engine::Timestamp(
            u64::try_from(meta.internal_date.max(0))
                .unwrap_or(0)
                .saturating_mul(1000),
        ),
        digest: None,
    })
}

/// After a MOVE that moved nothing (or failed): `Gone` when `uid` is no
/// longer in `src_raw` (looked up again), else `Failed` (including when
/// the lookup fails: then the device retries).
async fn gone_or_failed(imap: &mut PooledSession, src_raw: &str, uid: u32) -> MoveOutcome {
    match imap.fetch_meta(src_raw, &[uid]).await {
        Ok(found) if found.iter().all(|m| m.uid != uid) => MoveOutcome::Gone,
        // The source folder itself is gone.
        Err(ImapError::NotFound(_)) => MoveOutcome::Gone,
        _ => MoveOutcome::Failed,
    }
}
