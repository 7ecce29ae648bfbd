//! `opush device wipe|allow|quarantine --user U --device D [--config F]`:
//! device administration from the command line, over the configured store
//! (`opush_server::admin` holds the logic). With the embedded store the
//! database is held by a running `opush serve`: the command then says so
//! and changes nothing (use it while the server is stopped, or with
//! Cassandra, where the running server sees the change on the device's next
//! request).

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Subcommand;
use opush_server::admin::{request_wipe, set_access, WipeOutcome};
use opush_storage::Store;

/// What to do with a device.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Ask for a remote wipe ([MS-ASPROV] RemoteWipe) on the next request.
    Wipe(Target),
    /// Allow a (quarantined) device to sync.
    Allow(Target),
    /// Hold a device back (quarantine) until allowed again.
    Quarantine(Target),
}

/// Which device, and where the store is.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The device's user (`user@domain`, as it logs in).
    #[arg(long)]
    pub user: String,
    /// The DeviceId.
    #[arg(long)]
    pub device: String,
    /// Configuration file (default: built-in configuration and OPUSH_* variables).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
}

/// Runs one device action and returns the exit code.
pub fn run(action: Action) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opush device: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match run_async(&action).await {
            Ok(message) => {
                println!("{message}");
                ExitCode::SUCCESS
            }
            Err(message) => {
                eprintln!("opush device: {message}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn open(config: Option<&Path>) -> Result<Arc<Store>, String> {
    let storage = super::schema::storage_config(config)?;
    Store::open(&storage).await.map(Arc::new).map_err(|e| {
        format!("cannot open the store ({e}); with the embedded store, stop `opush serve` first")
    })
}

async fn run_async(action: &Action) -> Result<String, String> {
    match action {
        Action::Wipe(t) => {
            let store = open(t.config.as_deref()).await?;
            let outcome = request_wipe(store, &t.user, &t.device)
                .await
                .map_err(|e| e.to_string())?;
            Ok(match outcome {
                WipeOutcome::Requested | WipeOutcome::RequestedAgain => format!(
                    "remote wipe requested for {} of {}: sent on its next request",
                    t.device, t.user
                ),
                WipeOutcome::AlreadyPending => format!(
                    "a remote wipe is already pending for {} of {}",
                    t.device, t.user
                ),
            })
        }
        Action::Allow(t) | Action::Quarantine(t) => {
            let allowed = matches!(action, Action::Allow(_));
            let store = open(t.config.as_deref()).await?;
            set_access(&store, &t.user, &t.device, allowed)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "{} of {} is now {}",
                t.device,
                t.user,
                if allowed { "allowed" } else { "quarantined" }
            ))
        }
    }
}
