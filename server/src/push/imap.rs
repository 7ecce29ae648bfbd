//! The per-user watcher task: one IMAP connection of its own (not from the
//! request pool, which it would hold forever), kept while the user has
//! parked Pings.
//!
//! Each round it STATUSes every watched mailbox (MESSAGES, UIDNEXT,
//! UIDVALIDITY, UNSEEN and, with CONDSTORE, HIGHESTMODSEQ, so flag changes
//! count too) and publishes the marks, then waits: IDLE on the mailbox when
//! exactly one is watched and the server has IDLE, otherwise
//! `[imap] poll_interval_s`. A change in the watched set ends the wait at
//! once (IDLE is ended with DONE). DAV collections are polled through the
//! hub's [`super::dav::TokenSource`] in the same round.
//!
//! On any IMAP failure the connection is dropped and re-opened after a
//! pause that doubles up to `[push] reconnect_max_s`; marks are kept, so
//! the first STATUS after the outage reveals what changed during it. No
//! loop here is unbounded in time: every IMAP step has the `[imap]`
//! timeout, every wait a deadline. Must not log passwords (the login is in
//! memory only) nor decide anything about EAS.

use crate::backends::imap::{ImapClient, ImapError, Session};
use std::sync::Arc;

use super::{Inner, Mark, UserWatch, WatchKey, WatchLogin};

async fn login(hub: &Inner, watch: &UserWatch) -> Result<Session, ImapError> {
    match watch.login() {
        Some(WatchLogin::Password(p)) => ImapClient::login(hub.imap(), watch.user(), &p).await,
        Some(WatchLogin::Master) | None => ImapClient::login_master(hub.imap(), watch.user()).await,
    }
}

/// One round of STATUS over the watched mailboxes (and DAV collections).
async fn status_round(
    hub: &Inner,
    watch: &UserWatch,
    session: &mut Session,
) -> Result<(), ImapError> {
    for key in watch.keys() {
        match &key {
            WatchKey::Mail(raw) => match session.status(raw).await {
                Ok(st) => watch.observe(&key, Mark::Mail(st)),
                Err(ImapError::NotFound(_)) => watch.observe(&key, Mark::Gone),
                Err(e) => return Err(e),
            },
            WatchKey::Dav(href) => {
                if let Some(source) = hub.dav() {
                    match source.token(watch.user(), href).await {
                        Ok(Some(token)) => watch.observe(&key, Mark::Token(token)),
                        Ok(None) => watch.observe(&key, Mark::Gone),
                        Err(e) => {
                            tracing::debug!(user = %watch.user(), error = %e, "dav token poll failed");
                        }
                    }
                }
            }
        }
    }
    Ok(())
}

/// The watcher task of `watch`; returns when the watcher retires.
pub(crate) async fn run(hub: Arc<Inner>, watch: Arc<UserWatch>) {
    let settings = hub.settings().clone();
    let mut backoff = settings.reconnect_min;
    let mut session: Option<Session> = None;
    tracing::debug!(user = %watch.user(), "push watcher started");
    loop {
        if watch.subscribers() == 0 {
            if let Some(s) = session.take() {
                s.logout().await;
                watch.set_connected(false);
            }
            let _ = tokio::time::timeout(settings.linger, watch.replanned()).await;
            if watch.subscribers() == 0 && hub.retire(&watch) {
                tracing::debug!(user = %watch.user(), "push watcher closed");
                return;
            }
            continue;
        }
        let keys = watch.keys();
        let needs_imap = keys.iter().any(|k| matches!(k, WatchKey::Mail(_)));
        if needs_imap && session.is_none() {
            match login(&hub, &watch).await {
                Ok(s) => {
                    session = Some(s);
                    watch.set_connected(true);
                }
                Err(e) => {
                    tracing::warn!(user = %watch.user(), error = %e, retry_in = ?backoff, "push watcher cannot log in");
                    crate::obs::metrics::backend_error("imap");
                    crate::obs::metrics::retry("imap");
                    watch.set_connected(false);
                    let _ = tokio::time::timeout(backoff, watch.replanned()).await;
                    backoff = (backoff * 2).min(settings.reconnect_max);
                    continue;
                }
            }
        }
        let round = match session.as_mut() {
            Some(s) => status_round(&hub, &watch, s).await,
            None => Ok(()),
        };
        if let Err(e) = round {
            tracing::warn!(user = %watch.user(), error = %e, retry_in = ?backoff, "push watcher lost IMAP");
            crate::obs::metrics::backend_error("imap");
            crate::obs::metrics::retry("imap");
            session = None;
            watch.set_connected(false);
            let _ = tokio::time::timeout(backoff, watch.replanned()).await;
            backoff = (backoff * 2).min(settings.reconnect_max);
            continue;
        }
        backoff = settings.reconnect_min;
        let idle_folder = match (keys.as_slice(), session.as_ref()) {
            ([WatchKey::Mail(raw)], Some(s)) if settings.use_idle && s.has("IDLE") => {
                Some(raw.clone())
            }
            _ => None,
        };
        match (idle_folder, session.as_mut()) {
            (Some(raw), Some(s)) => {
                let stop = watch.replanned();
                if let Err(e) = s.idle_wait_until(&raw, settings.idle_max, stop).await {
                    tracing::warn!(user = %watch.user(), error = %e, "push watcher IDLE failed");
                    if s.is_usable() {
                        // E.g. the mailbox went away: poll instead of re-IDLing at once.
                        let _ =
                            tokio::time::timeout(settings.poll_interval, watch.replanned()).await;
                    } else {
                        session = None;
                        watch.set_connected(false);
                    }
                }
            }
            _ => {
                let _ = tokio::time::timeout(settings.poll_interval, watch.replanned()).await;
            }
        }
        // A session used for hours is still good; one that failed is dropped above.
        if session.as_ref().is_some_and(|s| !s.is_usable()) {
            session = None;
            watch.set_connected(false);
        }
    }
}
