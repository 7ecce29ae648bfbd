//! `opush sent list [--user U] [--config F]` and `opush sent drop|retry
//! --user U --message-id ID [--config F]`: the Sent copies waiting to be
//! saved in their users' Sent folders (`opush_server::sent_copy`), for the
//! administrator whose user says "my sent mail is missing"
//! (`opush_server::admin` holds the logic and the answer text).
//!
//! Like `opush device`, the command opens the configured store itself and,
//! when a running `opush serve` holds it (the embedded store), asks that
//! server through its admin address (`GET /sent-copies[/USER]`, `POST
//! /sent-copies/USER/MESSAGE-ID/drop|retry`). With Cassandra the store is
//! changed directly: a running server's resumer finds a dropped copy gone
//! at its next try, and a copy to retry due at its next look at it.

use std::process::ExitCode;

use clap::Subcommand;
use opush_server::admin::{self, SentAction};

use super::device::{block_on, encode, http, reach, Via};

/// What to do with the waiting Sent copies.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// List the copies waiting (of one user, or all), one per line: user,
    /// device, Message-ID, size (bytes), queued since, tries, next try,
    /// "subject", "last error" (times UTC).
    List(Listing),
    /// Forget a waiting copy: it is never saved in Sent.
    Drop(Target),
    /// Try a waiting copy now (refused while a try of it is under way).
    Retry(Target),
}

/// Whose copies, and where the store is.
#[derive(Debug, clap::Args)]
pub struct Listing {
    /// Only this user's copies.
    #[arg(long)]
    pub user: Option<String>,
    /// Configuration file (default: built-in configuration and OPUSH_* variables).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Which copy, and where the store is.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The copy's user (`user@domain`, as it logs in).
    #[arg(long)]
    pub user: String,
    /// The copy's Message-ID, as listed.
    #[arg(long)]
    pub message_id: String,
    /// Configuration file (default: built-in configuration and OPUSH_* variables).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Runs one `opush sent` action and returns the exit code.
pub fn run(action: Action) -> ExitCode {
    block_on("opush sent", run_async(&action))
}

async fn run_async(action: &Action) -> Result<String, String> {
    let (sent_action, t) = match action {
        Action::Drop(t) => (SentAction::Drop, t),
        Action::Retry(t) => (SentAction::Retry, t),
        Action::List(l) => {
            return match reach(l.config.as_deref()).await? {
                Via::Store(store) => admin::list_sent(&store, l.user.as_deref())
                    .await
                    .map(|rows| admin::describe_sent(&rows, now_ms()))
                    .map_err(|e| e.to_string()),
                Via::Server(addr) => {
                    let path = match &l.user {
                        Some(u) => format!("/sent-copies/{}", encode(u)),
                        None => "/sent-copies".to_owned(),
                    };
                    http(addr, "GET", &path).await
                }
            };
        }
    };
    match reach(t.config.as_deref()).await? {
        Via::Store(store) => admin::sent_action(&store, sent_action, &t.user, &t.message_id)
            .await
            .map_err(|e| e.to_string()),
        Via::Server(addr) => {
            let path = format!(
                "/sent-copies/{}/{}/{}",
                encode(&t.user),
                encode(&t.message_id),
                sent_action.name()
            );
            http(addr, "POST", &path).await
        }
    }
}

/// Milliseconds since the Unix epoch (the listing's "now").
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
