//! `handle_get_item_estimate` ([MS-ASCMD] 2.2.1.9): observe each mail
//! folder asked about, record the observation, and let
//! `engine::decide_get_item_estimate` count what the next Sync would send.
//!
//! It must not change the device's sync keys or items (the engine decision
//! has no events); only the observation is recorded.

use opush_engine::{
    decide_get_item_estimate, CollectionId, Decision, DecisionInput, EstimateRequest, FilterType,
    SyncKey,
};
use opush_protocol::commands::get_item_estimate::{
    EstimateResponse, GetItemEstimateRequest, GetItemEstimateResponse,
};
use opush_protocol::query::Command;
use opush_protocol::status::GetItemEstimateStatus;
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::encode_to_vec;

use super::sync::observe;
use super::{CommandContext, CommandError, EasResponse};
use crate::session::{session_error, Caller, EasServices};

/// Handles `Cmd=GetItemEstimate`.
pub async fn handle_get_item_estimate(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    let req = ctx.request(
        Command::GetItemEstimate,
        GetItemEstimateRequest::from_element,
    )?;
    let res = get_item_estimate(&req, ctx.version, &ctx.caller(), eas).await?;
    Ok(EasResponse::wbxml(encode_to_vec(
        &res.to_element(ctx.version),
    )))
}

/// GetItemEstimate without HTTP.
pub async fn get_item_estimate(
    req: &GetItemEstimateRequest,
    _version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<GetItemEstimateResponse, CommandError> {
    let (mut session, mut rec) = eas.open_recorded(caller, Command::GetItemEstimate).await?;
    let at = rec.at();
    let mut imap = None;
    let mut responses = Vec::with_capacity(req.collections.len());
    for c in &req.collections {
        let collection = CollectionId::parse(&c.collection_id.0);
        let sync_key = SyncKey::parse(&c.sync_key.0);
        let (Some(collection), Some(sync_key)) = (collection, sync_key) else {
            responses.push(EstimateResponse {
                status: GetItemEstimateStatus::from_code(if collection.is_none() { 2 } else { 4 }),
                class: None,
                collection_id: Some(c.collection_id.clone()),
                estimate: None,
            });
            continue;
        };
        if let Some(raw) = rec
            .state()
            .hierarchy
            .ids
            .get(&collection)
            .map(|b| b.0.clone())
        {
            if rec
                .state()
                .collections
                .get(&collection)
                .is_some_and(|col| col.synced)
            {
                if imap.is_none() {
                    imap = Some(eas.imap_for(caller).await?);
                }
                if let Some(session) = imap.as_mut() {
                    match observe(session, &raw, collection, rec.state(), rec.req_id(), at).await {
                        Ok(Some(ev)) => rec.observed(ev),
                        Ok(None) => {}
                        // Deleted by another client since the device's
                        // last FolderSync: an invalid collection (Status
                        // 2; the device syncs the hierarchy), not a
                        // failure the device would retry for ever.
                        Err(e) if e.is_mailbox_missing() => {
                            tracing::info!(folder = %raw, "the folder is gone: Status 2");
                            responses.push(EstimateResponse {
                                status: GetItemEstimateStatus::from_code(2),
                                class: None,
                                collection_id: Some(c.collection_id.clone()),
                                estimate: None,
                            });
                            continue;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        let filter = c
            .options
            .first()
            .and_then(|o| o.filter_type)
            .or(c.filter_type)
            .and_then(FilterType::from_u8);
        let request = EstimateRequest {
            collection,
            sync_key,
            filter,
        };
        let response = decide_get_item_estimate(rec.state(), &request, at);
        let r = rec.decided(
            DecisionInput::GetItemEstimate(request),
            Decision {
                response,
                events: Vec::new(),
            },
        );
        responses.push(EstimateResponse {
            status: GetItemEstimateStatus::from_code(r.status.into()),
            class: None,
            collection_id: Some(c.collection_id.clone()),
            estimate: r.estimate.map(|n| u32::try_from(n).unwrap_or(u32::MAX)),
        });
    }
    session.commit_request(rec).await.map_err(session_error)?;
    Ok(GetItemEstimateResponse { responses })
}
