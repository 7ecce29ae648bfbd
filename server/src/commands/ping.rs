//! `handle_ping` ([MS-ASCMD] 2.2.1.13): answer at once, naming every
//! watched folder with changes, when one already has something its next
//! Sync would send, else
//! park on the user's push watcher until a change, the heartbeat, or the
//! device's next request.
//!
//! A body-less Ping reuses the last parameters; a `<Ping/>` element with
//! neither HeartbeatInterval nor Folders is Status 3 (MS-ASCMD 2.2.1.13:
//! an XML body MUST carry one of them), whatever is remembered.
//!
//! Steps: `engine::decide_ping` validates (heartbeat bounds → 5, folder
//! count → 6, unknown folders or an out-of-date hierarchy → 7, nothing
//! given and nothing remembered → 3) and records `PingArmed`. Then, per
//! watched mailbox, STATUS (the watcher mark this Ping starts from) *before*
//! the observation (recorded as `BackendObserved`), so a change between the
//! two is re-checked rather than missed. `engine::ping_changes` says which
//! folders the next Sync would fill (it applies each collection's filter
//! window), so a change the device would not see does not wake it.
//!
//! While parked, the Ping holds neither the device session (the device's
//! other requests must not wait behind it) nor an `[server] max_in_flight`
//! permit (it takes a `[push] max_parked` slot instead) nor an IMAP
//! connection. A newer request of the same device ends it with Status 1
//! (nothing to report: the device is busy elsewhere and pings again). A
//! device pinging faster than `[push] max_pings_per_minute` gets 503 +
//! Retry-After; a Ping refused before it parks (Status 3, 5, 6, 7) does
//! not count, so the corrected Ping the status asks for is served, unless
//! it repeats the device's last refused Ping (a device stuck sending the
//! same wrong Ping is damped); one that does not follow the schema (Status
//! 4) always counts. No Ping is answered later than its heartbeat.

use std::time::Duration;

use opush_engine::{
    decide_ping, hierarchy_out_of_date, ping_changes, CollectionId, Decision, DecisionInput, Event,
    PingResponse as Model,
};
use opush_protocol::commands::ping::{PingRequest, PingResponse};
use opush_protocol::commands::CollectionId as WireId;
use opush_protocol::query::Command;
use opush_protocol::status::PingStatus;
use opush_protocol::wbxml::encode_to_vec;
use tokio::time::Instant;

use super::folder_sync::{backend_folders, differs_from_log};
use super::sync::{observe_after, unchanged_since};
use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::ImapError;
use crate::push::{hierarchy_mark, Mark, Wake, WatchKey, WatchLogin};
use crate::session::{imap_error, now, session_error, Caller, EasServices, Recorder};

/// Handles `Cmd=Ping`.
pub async fn handle_ping(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
) -> Result<EasResponse, CommandError> {
    // An empty body is "same as last time" (MS-ASCMD 3.1.5.8).
    let req = match ctx.document {
        None => PingRequest::default(),
        Some(doc) => match PingRequest::from_element(doc, ctx.version) {
            // A Ping element, though, MUST carry HeartbeatInterval, Folders
            // or both (2.2.1.13): `<Ping/>` omits the required parameters.
            Ok(r) if r.heartbeat_interval.is_none() && r.folders.is_none() => {
                tracing::warn!("Ping element with neither HeartbeatInterval nor Folders");
                let arrived = Instant::now();
                let caller = ctx.caller();
                if let Some(wait) = eas.push.damp(caller.user, caller.device_id, arrived) {
                    return Err(CommandError::Throttled(wait));
                }
                let res = answer(PingStatus::MissingParameters);
                return Ok(render(ctx, refused(eas, &caller, &r, arrived, res)));
            }
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "Ping request does not follow the schema");
                // No status tells how to correct it: each one counts
                // towards the damping (a device looping on it is slowed).
                let caller = ctx.caller();
                if let Some(wait) = eas.push.damp(caller.user, caller.device_id, Instant::now()) {
                    return Err(CommandError::Throttled(wait));
                }
                return Ok(render(ctx, answer(PingStatus::SyntaxError)));
            }
        },
    };
    let release = || ctx.in_flight.release();
    let res = ping(&req, &ctx.caller(), eas, release).await?;
    Ok(render(ctx, res))
}

fn render(ctx: &CommandContext<'_>, res: PingResponse) -> EasResponse {
    EasResponse::wbxml(encode_to_vec(&res.to_element(ctx.version)))
}

fn answer(status: PingStatus) -> PingResponse {
    PingResponse {
        status,
        folders: Vec::new(),
        max_folders: None,
        heartbeat_interval: None,
    }
}

fn changes(folders: &[CollectionId]) -> PingResponse {
    PingResponse {
        folders: folders.iter().map(|c| WireId(c.to_string())).collect(),
        ..answer(PingStatus::ChangesOccurred)
    }
}

fn from_model(model: &Model) -> PingResponse {
    match model {
        Model::Wait { .. } => answer(PingStatus::HeartbeatExpired),
        Model::Changes(c) => changes(c),
        Model::MissingParameters => answer(PingStatus::MissingParameters),
        Model::HeartbeatOutOfBounds(bound) => PingResponse {
            heartbeat_interval: Some(*bound),
            ..answer(PingStatus::InvalidHeartbeatInterval)
        },
        Model::TooManyFolders(max) => PingResponse {
            max_folders: Some(u32::try_from(*max).unwrap_or(u32::MAX)),
            ..answer(PingStatus::TooManyFolders)
        },
        Model::HierarchyOutOfDate => answer(PingStatus::FolderSyncRequired),
    }
}

/// `res`, a refusal before parking (Status 3, 5, 6, 7): the damping takes
/// back the Ping counted at `arrived` unless the device repeats its last
/// refused Ping.
fn refused(
    eas: &EasServices,
    caller: &Caller<'_>,
    req: &PingRequest,
    arrived: Instant,
    res: PingResponse,
) -> PingResponse {
    let what = refusal(req, &res);
    eas.push
        .refused(caller.user, caller.device_id, arrived, what);
    res
}

/// What identifies a refused Ping for the damping: the request as sent
/// and the answer's status.
fn refusal(req: &PingRequest, res: &PingResponse) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&[u8::from(req.heartbeat_interval.is_some())]);
    h.update(&req.heartbeat_interval.unwrap_or(0).to_le_bytes());
    match &req.folders {
        None => {
            h.update(&[0]);
        }
        Some(folders) => {
            h.update(&[1]);
            h.update(&(folders.len() as u64).to_le_bytes());
            for f in folders {
                for part in [f.id.0.as_bytes(), f.class.as_bytes()] {
                    h.update(&(part.len() as u64).to_le_bytes());
                    h.update(part);
                }
            }
        }
    }
    h.update(&res.status.code().to_le_bytes());
    *h.finalize().as_bytes()
}

/// What a look at the backends found.
enum Check {
    /// These folders have something for the next Sync (maybe none).
    Changes(Vec<CollectionId>),
    /// A watched folder is gone: FolderSync first.
    Gone,
}

/// Observes `folders` of the device (those with a mailbox), records the
/// observations and asks the engine which ones the next Sync would fill.
/// Each mailbox is STATUSed before it is observed; with `marks`, those
/// STATUS figures are returned (the marks a parked Ping starts from).
async fn check(
    caller: &Caller<'_>,
    eas: &EasServices,
    folders: &[CollectionId],
    only: Option<&[WatchKey]>,
    mut marks: Option<&mut Vec<(WatchKey, Option<Mark>)>>,
) -> Result<Check, CommandError> {
    let mut session = eas
        .sessions
        .open(caller.device_key()?)
        .await
        .map_err(session_error)?;
    let mut rec = Recorder::new(&session, eas, Command::Ping);
    // A re-check happens later than the request: its own time.
    let at = now();
    let mut imap = None;
    let mut gone = false;
    // The connection that kept one of these folders selected, if one is
    // idle: its STATUS is a NOOP and a STATUS of the selected mailbox.
    let selecting: Vec<String> = folders
        .iter()
        .filter_map(|c| rec.state().hierarchy.ids.get(c).map(|b| b.0.clone()))
        .collect();
    // The folder list first (before the mailboxes' marks): on the first
    // look, and when the watcher saw it change.
    if only.is_none_or(|keys| keys.contains(&WatchKey::Hierarchy)) {
        let session = imap.insert(eas.imap_selecting(caller, &selecting).await?);
        let list = session.list_folders(false).await.map_err(imap_error)?;
        if let Some(marks) = marks.as_deref_mut() {
            marks.push((WatchKey::Hierarchy, Some(hierarchy_mark(&list))));
        }
        let observed = backend_folders(&list);
        if differs_from_log(rec.state(), &observed) {
            rec.observed(Event::HierarchyObserved { folders: observed });
        }
        // A folder created, deleted or renamed on the IMAP side since the
        // device's last FolderSync: it must FolderSync first.
        gone |= hierarchy_out_of_date(rec.state());
    }
    for c in folders {
        let Some(raw) = rec.state().hierarchy.ids.get(c).map(|b| b.0.clone()) else {
            continue;
        };
        let key = WatchKey::Mail(raw.clone());
        if only.is_some_and(|keys| !keys.contains(&key)) {
            continue;
        }
        // With `[push] sync_watch_s`: the user's watcher's figures stand for
        // the STATUS when they show the folder as the device last synced it
        // (`PushHub::quiet_status`). The Ping starts from them; a later
        // change moves the watcher's mark and wakes it.
        if let Some(st) = eas.push.quiet_status(caller.user, &raw) {
            let col = rec.state().collections.get(c);
            if col.is_some_and(|col| col.synced) && unchanged_since(Some(st), col, None) {
                crate::obs::metrics::folder_from_watcher();
                if let Some(marks) = marks.as_deref_mut() {
                    marks.push((key, Some(Mark::Mail(st))));
                }
                continue;
            }
        }
        if imap.is_none() {
            imap = Some(eas.imap_selecting(caller, &selecting).await?);
        }
        let Some(session) = imap.as_mut() else {
            continue;
        };
        let mark = match session.status(&raw).await {
            Ok(st) => Mark::Mail(st),
            Err(ImapError::NotFound(_)) => Mark::Gone,
            Err(e) => return Err(imap_error(e)),
        };
        let exists = mark != Mark::Gone;
        // The STATUS just asked is the observation's freshness check.
        let status = match &mark {
            Mark::Mail(st) => Some(*st),
            _ => None,
        };
        if let Some(marks) = marks.as_deref_mut() {
            marks.push((key, Some(mark)));
        }
        if !exists {
            gone = true;
            continue;
        }
        if !rec.state().collections.get(c).is_some_and(|col| col.synced) {
            continue;
        }
        let ev = observe_after(
            session,
            &raw,
            *c,
            rec.state(),
            rec.req_id(),
            at,
            status.as_ref(),
        )
        .await?;
        if let Some(ev) = ev {
            rec.observed(ev);
        }
    }
    drop(imap);
    let changed = rec.decided_at(
        DecisionInput::PingChanges {
            folders: folders.to_vec(),
        },
        at,
        |state| Decision {
            response: ping_changes(state, folders, at),
            events: Vec::new(),
        },
    );
    session.commit_request(rec).await.map_err(session_error)?;
    Ok(if gone && changed.is_empty() {
        Check::Gone
    } else {
        Check::Changes(changed)
    })
}

/// How the user's watcher logs in for `caller`: through `[imap]
/// master_user` when one is configured, else with the caller's password
/// (held in memory by the watcher only).
pub(crate) fn watch_login(caller: &Caller<'_>, eas: &EasServices) -> WatchLogin {
    if eas.imap.config().master_user.is_some() {
        WatchLogin::Master
    } else {
        WatchLogin::Password(caller.password.clone())
    }
}

/// Ping without HTTP. `on_park` runs once, when the Ping parks (the HTTP
/// layer releases its in-flight permit there). The user's watcher logs in
/// through `[imap] master_user` when one is configured, else with the
/// caller's password (held in memory by the watcher only).
pub async fn ping(
    req: &PingRequest,
    caller: &Caller<'_>,
    eas: &EasServices,
    on_park: impl FnOnce(),
) -> Result<PingResponse, CommandError> {
    let (user, device_id) = (caller.user, caller.device_id);
    let login = watch_login(caller, eas);
    let arrived = Instant::now();
    if let Some(wait) = eas.push.damp(user, device_id, arrived) {
        return Err(CommandError::Throttled(wait));
    }
    let folders = match &req.folders {
        None => None,
        Some(list) => {
            let mut ids = Vec::with_capacity(list.len());
            for f in list {
                match CollectionId::parse(&f.id.0) {
                    Some(id) => ids.push(id),
                    // Not an id this server hands out: the device's hierarchy is stale.
                    None => {
                        let res = answer(PingStatus::FolderSyncRequired);
                        return Ok(refused(eas, caller, req, arrived, res));
                    }
                }
            }
            Some(ids)
        }
    };
    let engine_req = opush_engine::PingRequest {
        heartbeat: req.heartbeat_interval,
        folders,
    };
    // Boxed, like the checks below: a parked Ping's future keeps only what
    // it waits with, not the state of the steps that came before.
    let decision = Box::pin(async {
        let mut session = eas
            .sessions
            .open(caller.device_key()?)
            .await
            .map_err(session_error)?;
        let mut rec = Recorder::new(&session, eas, Command::Ping);
        let d = decide_ping(rec.state(), &engine_req, rec.at(), &eas.engine);
        let decision = rec.decided(DecisionInput::Ping(engine_req), d);
        // The folders this Ping watches (given, or remembered).
        let watched = rec
            .state()
            .ping
            .as_ref()
            .map(|p| p.0.clone())
            .unwrap_or_default();
        // Recorded (PingArmed included) before anything is answered.
        session.commit_request(rec).await.map_err(session_error)?;
        Ok::<_, CommandError>((decision, watched))
    })
    .await?;
    let (decision, watched) = decision;
    let (folders, heartbeat) = match &decision {
        Model::Wait {
            folders, heartbeat, ..
        } => (folders.clone(), *heartbeat),
        // Already pending before any new observation (a window the device
        // has not fetched yet): answered at once, naming as well the other
        // watched folders that changed meanwhile, so that the device syncs
        // them in the same round rather than after one more Ping.
        Model::Changes(c) => {
            let others: Vec<CollectionId> =
                watched.into_iter().filter(|f| !c.contains(f)).collect();
            let mut all = c.clone();
            if !others.is_empty() {
                match Box::pin(check(caller, eas, &others, None, None)).await {
                    Ok(Check::Changes(more)) => all.extend(more),
                    // Reported by the next Ping (FolderSync first).
                    Ok(Check::Gone) => {}
                    Err(e) => {
                        tracing::warn!(user, device = device_id, error = %e, "Ping: other folders not looked at");
                    }
                }
            }
            return Ok(changes(&all));
        }
        _ => return Ok(refused(eas, caller, req, arrived, from_model(&decision))),
    };
    let deadline = Instant::now() + Duration::from_secs(u64::from(heartbeat));
    let mut marks = Vec::new();
    match Box::pin(check(caller, eas, &folders, None, Some(&mut marks))).await? {
        Check::Gone => {
            let res = answer(PingStatus::FolderSyncRequired);
            return Ok(refused(eas, caller, req, arrived, res));
        }
        Check::Changes(c) if !c.is_empty() => return Ok(changes(&c)),
        Check::Changes(_) => {}
    }
    let parked = eas.push.park(user, device_id).map_err(|e| {
        tracing::warn!(error = %e, "Ping not parked");
        CommandError::Throttled(Duration::from_secs(60))
    })?;
    on_park();
    let _parked_gauge = crate::obs::metrics::ParkedPing::new();
    let mut sub = eas.push.subscribe(user, login, marks);
    loop {
        match sub.wait(deadline, &parked).await {
            Wake::Timeout => return Ok(answer(PingStatus::HeartbeatExpired)),
            Wake::Superseded => {
                tracing::debug!(user, device = device_id, "parked Ping superseded");
                return Ok(answer(PingStatus::HeartbeatExpired));
            }
            Wake::Changed => {}
        }
        let keys = sub.changed();
        let seen = sub.current(&keys);
        let recheck = Box::pin(check(caller, eas, &folders, Some(&keys), None));
        match tokio::time::timeout_at(deadline, recheck).await {
            Err(_) => return Ok(answer(PingStatus::HeartbeatExpired)),
            Ok(Ok(Check::Gone)) => return Ok(answer(PingStatus::FolderSyncRequired)),
            Ok(Ok(Check::Changes(c))) if !c.is_empty() => return Ok(changes(&c)),
            // Nothing the device would sync (flags outside the window, …).
            Ok(Ok(Check::Changes(_))) => sub.rebase(seen),
            Ok(Err(e)) => {
                // The watcher saw a change but it cannot be looked at now
                // (IMAP or the store failing): look again shortly.
                tracing::warn!(user, device = device_id, error = %e, "Ping re-check failed");
                let pause = Instant::now() + Duration::from_secs(1);
                tokio::time::sleep_until(pause.min(deadline)).await;
            }
        }
    }
}
