//! Sync as a long poll ([MS-ASCMD] 2.2.3.198 `Wait` (12.1+, minutes),
//! 2.2.3.88.2 `HeartbeatInterval` (14.0+, seconds), 3.1.5.4): a Sync that
//! has nothing to send waits on the push hub, like a parked Ping, and
//! answers as soon as one of its folders has something (a normal Sync
//! response, from a Sync run again), or with the empty Sync response
//! (2.2.1.21.2: HTTP 200, no body) when the interval ends.
//!
//! Steps: `engine::decide_sync_wait` validates (recorded as a `SyncWait`
//! decision: an interval out of range is Status 14 with `Limit`, both
//! elements Status 4). Then each collection's mailbox is STATUSed — the
//! marks the wait starts from, taken *before* the Sync observes, so a
//! change in between is re-checked rather than missed — and the Sync runs
//! as usual (`sync::sync`, recorded like any Sync). When its answer changes
//! nothing on the device (every collection Status 1, the SyncKey it came
//! with, no commands, no responses, no MoreAvailable), it parks: gives back
//! its `[server] max_in_flight` permit, takes a `[push] max_parked` slot,
//! holds no device session and no IMAP connection. A watcher mark that
//! differs from its own runs the Sync again (recorded as a later decision
//! of the same request, with its own time); an answer the device would act
//! on is sent, otherwise the wait goes on. A newer request of the same
//! device (`PushHub::supersede`, from the dispatch) ends it with the empty
//! response, as the deadline does.
//!
//! This module decides nothing itself: the engine validates and decides
//! every Sync; it only chooses when to ask again.

use std::time::Duration;

use opush_engine::{
    decide_sync_wait, CollectionId, DecisionInput, SyncWaitRequest, SyncWaitResponse,
};
use opush_protocol::commands::sync::{SyncRequest, SyncResponse};
use opush_protocol::query::Command;
use opush_protocol::status::SyncStatus;
use opush_protocol::version::ProtocolVersion;
use tokio::time::Instant;

use super::sync::sync;
use super::CommandError;
use crate::backends::imap::ImapError;
use crate::push::{Mark, Wake, WatchKey, WatchLogin};
use crate::session::{imap_error, now, session_error, Caller, EasServices, Recorder, RequestMeta};

/// Whether `req` asks for a long poll (`Wait` or `HeartbeatInterval`).
pub fn wants_wait(req: &SyncRequest) -> bool {
    req.wait.is_some() || req.heartbeat_interval.is_some()
}

/// A Sync with `Wait` or `HeartbeatInterval`, without HTTP. `None` is the
/// empty Sync response (the interval ended, or the device sent another
/// request). `on_park` runs once, when the Sync parks (the HTTP layer
/// releases its in-flight permit there).
pub async fn sync_waiting(
    req: &SyncRequest,
    version: ProtocolVersion,
    caller: &Caller<'_>,
    eas: &EasServices,
    on_park: impl FnOnce(),
) -> Result<Option<SyncResponse>, CommandError> {
    let request = SyncWaitRequest {
        wait: req.wait,
        heartbeat: req.heartbeat_interval,
    };
    let decision = Box::pin(async {
        let mut session = eas
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        let mut rec = Recorder::new(&session, eas, Command::Sync);
        let d = decide_sync_wait(&request, rec.at(), &eas.engine);
        let decision = rec.decided(DecisionInput::SyncWait(request), d);
        session.commit_request(rec).await.map_err(session_error)?;
        Ok::<_, CommandError>(decision)
    })
    .await?;
    let seconds = match decision {
        SyncWaitResponse::Park { seconds, .. } => seconds,
        SyncWaitResponse::NoWait => {
            return Box::pin(sync(req, version, caller, eas)).await.map(Some)
        }
        SyncWaitResponse::OutOfRange { limit } => {
            return Ok(Some(answer(SyncStatus::from_code(14), Some(limit))))
        }
        SyncWaitResponse::Both => return Ok(Some(answer(SyncStatus::from_code(4), None))),
    };
    let deadline = Instant::now() + Duration::from_secs(u64::from(seconds));
    let marks = Box::pin(marks(req, caller, eas)).await?;
    let first = Box::pin(sync(req, version, caller, eas)).await?;
    if marks.is_empty() || !changes_nothing(req, &first) {
        return Ok(Some(first));
    }
    drop(first);
    let (user, device_id) = (caller.user, caller.device_id);
    let parked = eas.push.park(user, device_id).map_err(|e| {
        tracing::warn!(error = %e, "Sync not parked");
        CommandError::Throttled(Duration::from_secs(60))
    })?;
    on_park();
    let _parked_gauge = crate::obs::metrics::ParkedPing::new();
    let login = if eas.imap.config().master_user.is_some() {
        WatchLogin::Master
    } else {
        WatchLogin::Password(caller.password.clone())
    };
    let mut sub = eas.push.subscribe(user, login, marks);
    loop {
        match sub.wait(deadline, &parked).await {
            Wake::Timeout => return Ok(None),
            Wake::Superseded => {
                tracing::debug!(user, device = device_id, "parked Sync superseded");
                return Ok(None);
            }
            Wake::Changed => {}
        }
        let keys = sub.changed();
        let seen = sub.current(&keys);
        // The Sync again, as a later decision of this request (its own time).
        let again = Box::pin(async {
            match RequestMeta::current() {
                Some(mut meta) => {
                    meta.at = now();
                    meta.scope(sync(req, version, caller, eas)).await
                }
                None => sync(req, version, caller, eas).await,
            }
        });
        match again.await {
            Ok(res) if !changes_nothing(req, &res) => return Ok(Some(res)),
            // Nothing the device would sync (flags outside the window, …).
            Ok(_) => sub.rebase(seen),
            Err(e) => {
                // The watcher saw a change that cannot be looked at now (IMAP
                // or the store failing): look again shortly.
                tracing::warn!(user, device = device_id, error = %e, "Sync re-check failed");
                let pause = Instant::now() + Duration::from_secs(1);
                tokio::time::sleep_until(pause.min(deadline)).await;
            }
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
    }
}

/// A Sync answer with a top-level Status only.
fn answer(status: SyncStatus, limit: Option<u32>) -> SyncResponse {
    SyncResponse {
        status: Some(status),
        limit,
        collections: Vec::new(),
    }
}

/// True when `res` would change nothing on the device: no top-level
/// Status, every collection Status 1 with the SyncKey the request came
/// with, no commands, no responses, no MoreAvailable.
pub fn changes_nothing(req: &SyncRequest, res: &SyncResponse) -> bool {
    res.status.is_none()
        && res.collections.iter().all(|c| {
            let same_key = req
                .collections
                .iter()
                .any(|r| r.collection_id == c.collection_id && r.sync_key == c.sync_key);
            c.status.is_none_or(|s| s.code() == 1)
                && same_key
                && c.commands.is_none()
                && c.responses.is_none()
                && !c.more_available
        })
}

/// The STATUS of the mailbox of each collection of `req` (the marks a wait
/// starts from); a mailbox that is gone is marked so. Empty when no
/// collection has a mailbox (nothing to wait on).
async fn marks(
    req: &SyncRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<Vec<(WatchKey, Option<Mark>)>, CommandError> {
    let mailboxes: Vec<String> = {
        let session = eas
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        let state = session.state();
        let mut raw: Vec<String> = req
            .collections
            .iter()
            .filter_map(|c| CollectionId::parse(&c.collection_id.0))
            .filter_map(|id| state.hierarchy.ids.get(&id).map(|b| b.0.clone()))
            .collect();
        raw.sort();
        raw.dedup();
        raw
    };
    if mailboxes.is_empty() {
        return Ok(Vec::new());
    }
    let mut imap = eas.imap_for(caller).await?;
    let mut marks = Vec::with_capacity(mailboxes.len());
    for raw in mailboxes {
        let mark = match imap.status(&raw).await {
            Ok(st) => Mark::Mail(st),
            Err(ImapError::NotFound(_)) => Mark::Gone,
            Err(e) => return Err(imap_error(e)),
        };
        marks.push((WatchKey::Mail(raw), Some(mark)));
    }
    Ok(marks)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use opush_protocol::commands::sync::{SyncCollectionRequest, SyncCollectionResponse};
    use opush_protocol::commands::{CollectionId as WireId, SyncKey};

    fn request(key: &str) -> SyncRequest {
        SyncRequest {
            collections: vec![SyncCollectionRequest {
                sync_key: SyncKey(key.into()),
                collection_id: WireId("5".into()),
                ..SyncCollectionRequest::default()
            }],
            wait: Some(1),
            ..SyncRequest::default()
        }
    }

    fn response(key: &str, status: u16) -> SyncResponse {
        SyncResponse {
            status: None,
            limit: None,
            collections: vec![SyncCollectionResponse {
                sync_key: SyncKey(key.into()),
                collection_id: WireId("5".into()),
                status: Some(SyncStatus::from_code(status)),
                ..SyncCollectionResponse::default()
            }],
        }
    }

    #[test]
    fn only_an_answer_that_moves_nothing_waits() {
        let req = request("7");
        assert!(changes_nothing(&req, &response("7", 1)));
        assert!(!changes_nothing(&req, &response("8", 1)), "a new SyncKey");
        assert!(!changes_nothing(&req, &response("7", 3)), "an error status");
        let mut more = response("7", 1);
        more.collections[0].more_available = true;
        assert!(!changes_nothing(&req, &more));
        let top = answer(SyncStatus::from_code(14), Some(59));
        assert!(!changes_nothing(&req, &top));
    }
}
