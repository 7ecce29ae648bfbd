//! `opush schema status|install|update`: the storage schema lifecycle from
//! the command line. It reads the `[storage]` section of the configuration
//! (with `OPUSH_*` overrides) and calls `opush_storage::Store`; the schema
//! logic itself lives in `storage/`, not here. It never prints the password.

use std::path::Path;
use std::process::ExitCode;

use opush_server::config::Config;
use opush_storage::{MigrationOptions, SchemaStatus, StorageConfig, Store};
use serde::Deserialize;

/// Exit code when the schema needs `install` or `update` before serving.
const EXIT_NEEDS_ACTION: u8 = 3;

/// Runs one schema action; `config` is the opush.toml path (default: built-in
/// configuration with environment overrides).
pub fn run(action: &str, config: Option<&Path>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("opush schema: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        match run_async(action, config).await {
            Ok(code) => code,
            Err(message) => {
                eprintln!("opush schema {action}: {message}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The `[storage]` section of the configuration as the storage crate reads it.
pub fn storage_config(config: Option<&Path>) -> Result<StorageConfig, String> {
    let cfg = match config {
        Some(p) => Config::load(p),
        None => Config::from_env(),
    }
    .map_err(|e| e.to_string())?;
    StorageConfig::deserialize(toml::Value::Table(cfg.storage))
        .map_err(|e| format!("[storage]: {e}"))
}

async fn run_async(action: &str, config: Option<&Path>) -> Result<ExitCode, String> {
    let storage = storage_config(config)?;
    let store = Store::open(&storage).await.map_err(|e| e.to_string())?;
    let status = store.schema_status().await.map_err(|e| e.to_string())?;
    match action {
        "status" => {
            println!("{status}");
            Ok(match status {
                SchemaStatus::Ok { .. } | SchemaStatus::UpdateAdvised { .. } => ExitCode::SUCCESS,
                _ => ExitCode::from(EXIT_NEEDS_ACTION),
            })
        }
        "install" => {
            if !matches!(status, SchemaStatus::InstallRequired { .. }) {
                println!("nothing to install: {status}");
                return Ok(ExitCode::SUCCESS);
            }
            store.install_schema().await.map_err(|e| e.to_string())?;
            println!(
                "{}",
                store.schema_status().await.map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        "update" => {
            let opts = MigrationOptions {
                batch_size: storage.migration_batch_size,
                page_size: storage.migration_page_size,
                max_batches: None,
            };
            let report = store.update_schema(opts).await.map_err(|e| e.to_string())?;
            println!(
                "schema {} -> {}: {} rows rewritten{}",
                report.from,
                report.to,
                report.rows,
                if report.complete {
                    ""
                } else {
                    " (interrupted: run update again to resume)"
                }
            );
            println!(
                "{}",
                store.schema_status().await.map_err(|e| e.to_string())?
            );
            Ok(ExitCode::SUCCESS)
        }
        other => Err(format!(
            "unknown action {other:?} (status, install or update)"
        )),
    }
}
