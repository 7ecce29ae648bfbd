//! Observability: the named loggers and their line format, the per-request
//! BREAKDOWN and SUMMARY lines, the access log, the Prometheus metrics and
//! the admin address that serves them and changes logger levels.
//!
//! The rest of the server uses it through small calls: `tracing` macros
//! with a logger name as target, [`timed`] around a boundary call (store,
//! IMAP, SMTP, a handler's data class), [`count`] in a handler, and the
//! `metrics` functions. It must not hold request logic, and it never writes
//! a password or an `Authorization` header.

pub mod access;
pub mod admin;
pub mod breakdown;
pub mod layer;
pub mod logger;
pub mod metrics;
pub mod rotate;
pub mod scope;
pub mod summary;

use std::path::PathBuf;

use opush_protocol::query::Command;
use tracing_subscriber::layer::SubscriberExt;

use crate::config::{Config, LoggingConfig};
pub use breakdown::Category;
pub use logger::{Levels, Logger, LoggerLevel};
pub use scope::{count, timed, Direction, Kind, RequestScope};

static LEVELS: Levels = Levels::new(LoggerLevel::Info);

/// The process' logger levels.
pub fn levels() -> &'static Levels {
    &LEVELS
}

/// Sets one logger's level now (admin address), with a CONFIGURATION line.
pub fn set_level(logger: Logger, level: LoggerLevel) {
    LEVELS.set(logger, level);
    tracing::callsite::rebuild_interest_cache();
    tracing::info!(target: "CONFIGURATION", "logger {} set to {}", logger.name(), level.name());
}

/// Sets every logger from `[logging]` (`level`, then `loggers` overrides).
pub fn apply_logging(cfg: &LoggingConfig) -> Result<(), String> {
    LEVELS.apply(
        &cfg.level,
        cfg.loggers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    )?;
    tracing::callsite::rebuild_interest_cache();
    Ok(())
}

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// A `[logging]` value is wrong.
    #[error("invalid [logging]: {0}")]
    Invalid(String),
    /// A log file cannot be opened.
    #[error("cannot open log file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

fn open(
    path: &str,
    cfg: &LoggingConfig,
) -> Result<std::sync::Arc<rotate::RotatingFile>, LoggingError> {
    rotate::RotatingFile::open(path, cfg.max_file_bytes, cfg.keep_files).map_err(|source| {
        LoggingError::File {
            path: path.into(),
            source,
        }
    })
}

/// Installs the log layer as the process' subscriber, configured by
/// `[logging]`. Returns false when a subscriber was already installed
/// (tests), in which case lines go there.
pub fn install(cfg: &LoggingConfig) -> Result<bool, LoggingError> {
    apply_logging(cfg).map_err(LoggingError::Invalid)?;
    let output = if cfg.file.is_empty() {
        layer::Output::Stderr
    } else {
        layer::Output::File(open(&cfg.file, cfg)?)
    };
    Ok(install_output(output, format_of(cfg)))
}

/// Installs the log layer writing to `output`; false if a subscriber was
/// already installed.
pub fn install_output(output: layer::Output, format: layer::Format) -> bool {
    let subscriber =
        tracing_subscriber::registry().with(layer::LogLayer::new(&LEVELS, output, format));
    tracing::subscriber::set_global_default(subscriber).is_ok()
}

fn format_of(cfg: &LoggingConfig) -> layer::Format {
    if cfg.format == "json" {
        layer::Format::Json
    } else {
        layer::Format::Text
    }
}

/// The access log of `[logging] access_log`, if one is configured.
pub fn access_log(cfg: &LoggingConfig) -> Result<Option<access::AccessLog>, LoggingError> {
    if cfg.access_log.is_empty() {
        return Ok(None);
    }
    Ok(Some(access::AccessLog::new(open(&cfg.access_log, cfg)?)))
}

/// Installs a SIGHUP handler now (call inside the runtime) and returns the
/// task that, on every SIGHUP, re-reads the configuration and applies its
/// `[logging]` levels (other sections need a restart).
#[cfg(unix)]
pub fn reload_on_sighup(
    config_path: Option<PathBuf>,
) -> std::io::Result<impl std::future::Future<Output = ()> + Send> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    Ok(async move {
        while hup.recv().await.is_some() {
            let cfg = match &config_path {
                Some(p) => Config::load(p),
                None => Config::from_env(),
            };
            match cfg
                .map_err(|e| e.to_string())
                .and_then(|c| apply_logging(&c.logging))
            {
                Ok(()) => {
                    tracing::info!(target: "CONFIGURATION", "SIGHUP: logger levels reloaded:\n{}", LEVELS.describe().trim_end())
                }
                Err(e) => {
                    tracing::warn!(target: "CONFIGURATION", error = %e, "SIGHUP: configuration not reloaded, levels unchanged")
                }
            }
        }
    })
}

/// The configuration as `section.key = value` pairs for the CONFIGURATION
/// logger, every secret (by key name, in every section, the free-form
/// `[storage]` table included) as `*`. A number or a boolean is never a
/// secret, whatever its key says: the device-password policy
/// (`policy.min_device_password_length = 4`) is printed for whoever
/// supports the device.
pub fn masked_config(cfg: &Config) -> String {
    fn walk(prefix: &str, v: &toml::Value, out: &mut Vec<String>) {
        match v {
            toml::Value::Table(t) => {
                for (k, v) in t {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    let plain = matches!(
                        v,
                        toml::Value::Boolean(_) | toml::Value::Integer(_) | toml::Value::Float(_)
                    );
                    if layer::is_secret_field(k) && !plain {
                        out.push(format!("{key} = *"));
                    } else {
                        walk(&key, v, out);
                    }
                }
            }
            other => out.push(format!("{prefix} = {other}")),
        }
    }
    let mut out = Vec::new();
    match toml::Value::try_from(cfg) {
        Ok(v) => walk("", &v, &mut out),
        Err(e) => out.push(format!("<not printable: {e}>")),
    }
    out.join(", ")
}

/// The category a command's handler time is filed under in BREAKDOWN.
pub fn command_category(command: Command) -> Category {
    match command {
        Command::FolderSync
        | Command::FolderCreate
        | Command::FolderDelete
        | Command::FolderUpdate
        | Command::GetHierarchy
        | Command::CreateCollection
        | Command::DeleteCollection
        | Command::MoveCollection => Category::Folders,
        Command::Provision | Command::Settings | Command::Ping | Command::ValidateCert => {
            Category::Device
        }
        Command::MeetingResponse => Category::Calendar,
        Command::ResolveRecipients => Category::Ldap,
        Command::Sync
        | Command::GetItemEstimate
        | Command::ItemOperations
        | Command::MoveItems
        | Command::Search
        | Command::Find
        | Command::GetAttachment
        | Command::SendMail
        | Command::SmartForward
        | Command::SmartReply => Category::Email,
    }
}

/// Whether a command reads or changes data, so its SUMMARY lines are
/// written even when nothing was counted.
pub fn is_data_command(command: Command) -> bool {
    !matches!(
        command,
        Command::Provision
            | Command::Settings
            | Command::Ping
            | Command::ValidateCert
            | Command::ResolveRecipients
    )
}

/// Writes the request's BREAKDOWN and, for data commands or when anything
/// was counted, its SUMMARY.IN / SUMMARY.OUT lines. Call at the end of the
/// request, inside its scope.
pub fn log_request_end(scope: &RequestScope, command: Option<Command>) {
    if LEVELS.enabled(Logger::Breakdown, &tracing::Level::INFO) {
        let tree = scope.breakdown().millis();
        tracing::info!(target: "BREAKDOWN", "{tree}");
    }
    let (input, output, counted) = scope.summary();
    if counted || command.is_some_and(is_data_command) {
        tracing::info!(target: "SUMMARY.IN", "{input}");
        tracing::info!(target: "SUMMARY.OUT", "{output}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn the_configuration_prints_secrets_as_a_star_and_the_password_policy_as_it_is() {
        let mut cfg = Config::default();
        cfg.imap.master_password = Some(Secret::new("hunter2-master"));
        cfg.ldap.bind_password = Some(Secret::new("hunter2-ldap"));
        cfg.policy.device_password_enabled = true;
        cfg.policy.min_device_password_length = 6;
        let text = masked_config(&cfg);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("imap.master_password = *"), "{text}");
        assert!(text.contains("ldap.bind_password = *"), "{text}");
        assert!(
            text.contains("policy.device_password_enabled = true"),
            "{text}"
        );
        assert!(
            text.contains("policy.min_device_password_length = 6"),
            "{text}"
        );
    }
}
