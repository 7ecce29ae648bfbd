//! The per-user watcher task: one IMAP connection of its own (not from the
//! request pool, which it would hold forever), kept while the user has
//! parked Pings.
//!
//! Each round it STATUSes every watched mailbox (MESSAGES, UIDNEXT,
//! UIDVALIDITY, UNSEEN and, with CONDSTORE, HIGHESTMODSEQ, so flag changes
//! count too), LISTs the folders when the hierarchy is watched and a check
//! is due, and publishes the marks, then waits ([`super::WatcherKind`]):
//! IDLE on the mailbox when exactly one is watched and the server has IDLE;
//! NOTIFY (RFC 5465, `[push] use_notify`) on all of them when several are
//! watched and the server has it (Dovecot advertises it after login), or
//! for a single one with `[push] notify_hierarchy`; else
//! `[imap] poll_interval_s`. A NOTIFY watcher that watches the hierarchy
//! also asks for the personal namespace's folder events: a LIST
//! notification makes the next round LIST the folders at once (the
//! periodic `[push] hierarchy_check_s` LIST stays as the fallback). NOTIFY and IDLE only say *that* something
//! happened: the marks always come from the next round's own STATUS, so a
//! notification never has to be parsed for figures. A change in the
//! watched set ends the wait at once (IDLE is ended with DONE). DAV
//! collections are polled through the hub's [`super::dav::TokenSource`] in
//! the same round (a watcher with DAV keys waits at most the poll interval).
//!
//! On any IMAP failure the connection is dropped and re-opened after a
//! pause that doubles up to `[push] reconnect_max_s` (a connection the
//! server ended during IDLE or NOTIFY too: a server going down says BYE and
//! may still accept a login for a moment); marks are kept, so
//! the first STATUS after the outage reveals what changed during it. No
//! loop here is unbounded in time: every IMAP step has the `[imap]`
//! timeout, every wait a deadline. Must not log passwords (the login is in
//! memory only) nor decide anything about EAS.

use crate::backends::imap::{IdleOutcome, ImapClient, ImapError, Session};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::{hierarchy_mark, Inner, Mark, UserWatch, WatchKey, WatchLogin, WatcherKind};

async fn login(hub: &Inner, watch: &UserWatch) -> Result<Session, ImapError> {
    let login = async {
        match watch.login() {
            Some(WatchLogin::Password(p)) => ImapClient::login(hub.imap(), watch.user(), &p).await,
            Some(WatchLogin::Master) | None => {
                ImapClient::login_master(hub.imap(), watch.user()).await
            }
        }
    };
    match hub.login_gate() {
        Some(gate) => gate.run("push", login).await,
        None => {
            crate::obs::metrics::imap_login("push");
            login.await
        }
    }
}

/// One round of STATUS over the watched mailboxes (and DAV collections).
async fn status_round(
    hub: &Inner,
    watch: &UserWatch,
    session: &mut Session,
    list: bool,
) -> Result<(), ImapError> {
    for key in watch.keys() {
        match &key {
            WatchKey::Hierarchy => {
                if list {
                    let folders = session.list_folders(false).await?;
                    watch.observe(&key, hierarchy_mark(&folders));
                }
            }
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
    // When the folders were last listed (the hierarchy check).
    let mut last_list: Option<Instant> = None;
    tracing::debug!(user = %watch.user(), "push watcher started");
    loop {
        // Whatever the watcher does next, its marks may fall behind until
        // it waits again on a fresh round.
        watch.unsettle();
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
        let needs_imap = keys
            .iter()
            .any(|k| matches!(k, WatchKey::Mail(_) | WatchKey::Hierarchy));
        if needs_imap && session.is_none() {
            match login(&hub, &watch).await {
                Ok(s) => {
                    session = Some(s);
                    watch.set_connected(true);
                    watch.logged_in();
                }
                Err(e) => {
                    tracing::warn!(user = %watch.user(), error = %e, retry_in = ?backoff, "push watcher cannot log in");
                    crate::obs::metrics::backend_error("imap", e.kind());
                    crate::obs::metrics::retry("imap");
                    watch.set_connected(false);
                    let _ = tokio::time::timeout(backoff, watch.replanned()).await;
                    backoff = (backoff * 2).min(settings.reconnect_max);
                    continue;
                }
            }
        }
        let mail: Vec<String> = keys
            .iter()
            .filter_map(|k| match k {
                WatchKey::Mail(raw) => Some(raw.clone()),
                _ => None,
            })
            .collect();
        let has_dav = keys.iter().any(|k| matches!(k, WatchKey::Dav(_)));
        let hierarchy = keys.contains(&WatchKey::Hierarchy);
        let notify_ok = |s: &Session| settings.use_notify && s.has("NOTIFY") && s.has("IDLE");
        let kind = match session.as_ref() {
            Some(s)
                if mail.len() == 1
                    && !has_dav
                    && settings.use_idle
                    && s.has("IDLE")
                    && !(settings.notify_hierarchy && hierarchy && notify_ok(s)) =>
            {
                WatcherKind::Idle
            }
            Some(s) if !mail.is_empty() && notify_ok(s) => WatcherKind::Notify,
            _ => WatcherKind::Poll,
        };
        let list_due = kind == WatcherKind::Poll
            || last_list.is_none_or(|t: Instant| t.elapsed() >= settings.hierarchy_check);
        // Read before the round: opush's own changes after it make the
        // marks of this wait stand for nothing (`PushHub::quiet_status`).
        let opush_changes = super::changes_by_opush(watch.user());
        let round_began = Instant::now();
        // IDLE: the mailbox is selected first, so its STATUS is read on the
        // selection and a change after it is told when the IDLE starts.
        let selected = match (kind, session.as_mut(), mail.first()) {
            (WatcherKind::Idle, Some(s), Some(raw)) => match s.select_for_idle(raw).await {
                Ok(()) => Ok(true),
                // Marked gone by the round; the IDLE fails and the watcher polls.
                Err(ImapError::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            },
            _ => Ok(kind == WatcherKind::Notify),
        };
        let settles = matches!(selected, Ok(true));
        let round = match (selected, session.as_mut()) {
            (Err(e), _) => Err(e),
            // NOTIFY first, so what changes during the round is reported.
            (Ok(_), Some(s)) if kind == WatcherKind::Notify => {
                match s.notify_set(&mail, hierarchy).await {
                    Ok(()) => status_round(&hub, &watch, s, list_due).await,
                    Err(e) => Err(e),
                }
            }
            (Ok(_), Some(s)) => status_round(&hub, &watch, s, list_due).await,
            (Ok(_), None) => Ok(()),
        };
        if let Err(e) = round {
            tracing::warn!(user = %watch.user(), error = %e, retry_in = ?backoff, "push watcher lost IMAP");
            crate::obs::metrics::backend_error("imap", e.kind());
            crate::obs::metrics::retry("imap");
            session = None;
            watch.set_connected(false);
            watch.set_kind(WatcherKind::Starting);
            let _ = tokio::time::timeout(backoff, watch.replanned()).await;
            backoff = (backoff * 2).min(settings.reconnect_max);
            continue;
        }
        if list_due {
            last_list = Some(Instant::now());
        }
        watch.set_kind(kind);
        backoff = settings.reconnect_min;
        // How long the server may be left to tell: bounded by IDLE's
        // limit, by DAV polling, and by the next hierarchy check.
        let mut wait = if has_dav {
            settings.poll_interval
        } else {
            settings.idle_max
        };
        // Marks that stand for STATUS (`PushHub::quiet_status`) are read
        // again at least this often, news or not.
        if !settings.sync_watch.is_zero() {
            wait = wait.min(super::SYNC_WATCH_REFRESH);
        }
        if keys.contains(&WatchKey::Hierarchy) {
            let since = last_list.map_or(Duration::ZERO, |t| t.elapsed());
            wait = wait.min(settings.hierarchy_check.saturating_sub(since));
        }
        if settles && !has_dav {
            watch.settle(opush_changes, round_began);
        }
        let waited = match (kind, session.as_mut()) {
            (WatcherKind::Idle, Some(s)) => {
                let raw = mail.first().cloned().unwrap_or_default();
                s.idle_wait_until(&raw, wait, watch.replanned())
                    .await
                    .map(|_| ())
            }
            (WatcherKind::Notify, Some(s)) => s
                .notify_wait_until(&mail, hierarchy, wait, watch.replanned())
                .await
                .map(|outcome| {
                    // The server named a folder: LIST in the next round.
                    if outcome == IdleOutcome::Hierarchy {
                        last_list = None;
                    }
                }),
            _ => {
                let _ = tokio::time::timeout(settings.poll_interval, watch.replanned()).await;
                Ok(())
            }
        };
        watch.unsettle();
        if let Err(e) = waited {
            tracing::warn!(user = %watch.user(), error = %e, ?kind, "push watcher wait failed");
            if session.as_ref().is_some_and(Session::is_usable) {
                // E.g. the mailbox went away: poll instead of waiting again at once.
                let _ = tokio::time::timeout(settings.poll_interval, watch.replanned()).await;
            } else {
                // The connection is lost (a server going down says BYE
                // first): pause before logging in again, as after any other
                // failure. A login at once lands on the server still going
                // down, on a session that may outlive it (Dovecot 2.3 keeps
                // such an imap process after its master exited).
                session = None;
                watch.set_connected(false);
                watch.set_kind(WatcherKind::Starting);
                let _ = tokio::time::timeout(backoff, watch.replanned()).await;
                backoff = (backoff * 2).min(settings.reconnect_max);
            }
        }
        // A session used for hours is still good; one that failed is dropped above.
        if session.as_ref().is_some_and(|s| !s.is_usable()) {
            session = None;
            watch.set_connected(false);
        }
    }
}
