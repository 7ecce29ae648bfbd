//! The named loggers of opush and their run-time levels.
//!
//! Every log line belongs to one of thirteen named loggers (the names
//! administrators know from Opush: `AUTHENTICATION`, `REQUEST.FULL`, …).
//! Each logger has a level that can change while the server runs (admin
//! address, SIGHUP); WARN and ERROR always pass. Code logs to a logger by
//! using its name as the `tracing` target; events with any other target are
//! attributed to a logger by their module path ([`Logger::of_target`]).
//!
//! Pure data and atomics: no I/O here.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::Level;

/// A named logger.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Logger {
    /// Logins, credential checks, the auth cache.
    Authentication,
    /// Per-request timing tree.
    Breakdown,
    /// Configuration loading and changes (logger levels included).
    Configuration,
    /// The process: start, listeners, shutdown, anything unattributed.
    Container,
    /// Every IMAP command sent, with its duration.
    ImapCommand,
    /// Mail content handling (MIME parsing, conversion, submission).
    MailData,
    /// Storage schema installs and migrations.
    Migration,
    /// Backend connectors and the store (IMAP, SMTP, Cassandra…): failures, retries.
    Backend,
    /// Whole requests and responses as XML (secrets masked).
    RequestFull,
    /// One line per request: command, device, status, sizes, duration.
    RequestTrimmed,
    /// Resource use: pools, in-flight requests, caches.
    Resources,
    /// Per request, what the device sent: `CHANGE: n, DELETE: n, FETCH: n`.
    SummaryIn,
    /// Per request, what the server sent back: `CHANGE: n, DELETE: n, FETCH: n`.
    SummaryOut,
}

impl Logger {
    /// Every logger, in a stable order.
    pub const ALL: [Logger; 13] = [
        Logger::Authentication,
        Logger::Breakdown,
        Logger::Configuration,
        Logger::Container,
        Logger::ImapCommand,
        Logger::MailData,
        Logger::Migration,
        Logger::Backend,
        Logger::RequestFull,
        Logger::RequestTrimmed,
        Logger::Resources,
        Logger::SummaryIn,
        Logger::SummaryOut,
    ];

    /// The logger's name, also the `tracing` target that logs to it.
    pub const fn name(self) -> &'static str {
        match self {
            Logger::Authentication => "AUTHENTICATION",
            Logger::Breakdown => "BREAKDOWN",
            Logger::Configuration => "CONFIGURATION",
            Logger::Container => "CONTAINER",
            Logger::ImapCommand => "IMAP.COMMAND",
            Logger::MailData => "MAIL.DATA",
            Logger::Migration => "MIGRATION",
            Logger::Backend => "BACKEND",
            Logger::RequestFull => "REQUEST.FULL",
            Logger::RequestTrimmed => "REQUEST.TRIMMED",
            Logger::Resources => "RESOURCES",
            Logger::SummaryIn => "SUMMARY.IN",
            Logger::SummaryOut => "SUMMARY.OUT",
        }
    }

    /// The logger named `name` (case-insensitive).
    pub fn from_name(name: &str) -> Option<Logger> {
        Logger::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name))
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The logger an event with this `tracing` target belongs to, and
    /// whether the target is a third-party crate (whose events are held to
    /// INFO and above whatever the logger's level: their DEBUG/TRACE output
    /// is not written for operators and may show raw protocol data).
    pub fn of_target(target: &str) -> (Logger, bool) {
        if let Some(l) = Logger::from_name(target) {
            return (l, false);
        }
        const MAP: [(&str, Logger); 13] = [
            ("opush_server::http::auth", Logger::Authentication),
            ("opush_server::http::imap_login", Logger::Authentication),
            ("opush_server::config", Logger::Configuration),
            ("opush_server::backends::imap", Logger::Backend),
            ("opush_server::backends::smtp", Logger::Backend),
            ("opush_server::backends", Logger::Backend),
            ("opush_server::email", Logger::MailData),
            ("opush_server::outgoing", Logger::MailData),
            ("opush_server::session", Logger::Backend),
            ("opush_server::push", Logger::Backend),
            ("opush_server::http::limits", Logger::Resources),
            ("opush_storage", Logger::Backend),
            ("storage", Logger::Backend),
        ];
        for (prefix, logger) in MAP {
            if target == prefix
                || target
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with("::"))
            {
                return (logger, false);
            }
        }
        let ours = target.starts_with("opush") || target.starts_with("storage");
        (Logger::Container, !ours)
    }
}

impl fmt::Display for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A logger level as configured: WARN is the floor (ERROR and OFF mean WARN).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LoggerLevel {
    /// Only WARN and ERROR.
    Warn = 1,
    /// INFO and above.
    Info = 2,
    /// DEBUG and above.
    Debug = 3,
    /// Everything.
    Trace = 4,
}

impl LoggerLevel {
    /// Parses `trace`, `debug`, `info`, `warn`, `error`, `off` (any case);
    /// `error` and `off` give [`LoggerLevel::Warn`].
    pub fn parse(s: &str) -> Option<LoggerLevel> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "trace" => LoggerLevel::Trace,
            "debug" => LoggerLevel::Debug,
            "info" => LoggerLevel::Info,
            "warn" | "error" | "off" => LoggerLevel::Warn,
            _ => return None,
        })
    }

    /// The level's name in lower case.
    pub const fn name(self) -> &'static str {
        match self {
            LoggerLevel::Warn => "warn",
            LoggerLevel::Info => "info",
            LoggerLevel::Debug => "debug",
            LoggerLevel::Trace => "trace",
        }
    }

    fn from_u8(v: u8) -> LoggerLevel {
        match v {
            0 | 1 => LoggerLevel::Warn,
            2 => LoggerLevel::Info,
            3 => LoggerLevel::Debug,
            _ => LoggerLevel::Trace,
        }
    }

    /// Whether an event at `level` passes.
    pub fn allows(self, level: &Level) -> bool {
        rank(level) <= self as u8
    }
}

/// 0 for ERROR … 4 for TRACE.
fn rank(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 0,
        Level::WARN => 1,
        Level::INFO => 2,
        Level::DEBUG => 3,
        _ => 4,
    }
}

/// The current level of every logger; changed at run time, read on every event.
#[derive(Debug)]
pub struct Levels {
    levels: [AtomicU8; 13],
}

impl Default for Levels {
    fn default() -> Self {
        Levels::new(LoggerLevel::Info)
    }
}

impl Levels {
    /// Every logger at `level`.
    pub const fn new(level: LoggerLevel) -> Levels {
        let v = level as u8;
        Levels {
            levels: [
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
                AtomicU8::new(v),
            ],
        }
    }

    /// The level of `logger`.
    pub fn get(&self, logger: Logger) -> LoggerLevel {
        LoggerLevel::from_u8(self.levels[logger.index()].load(Ordering::Relaxed))
    }

    /// Sets the level of `logger`.
    pub fn set(&self, logger: Logger, level: LoggerLevel) {
        self.levels[logger.index()].store(level as u8, Ordering::Relaxed);
    }

    /// Whether an event of `logger` at `level` is written.
    pub fn enabled(&self, logger: Logger, level: &Level) -> bool {
        self.get(logger).allows(level)
    }

    /// Sets every logger from a default level and per-logger overrides
    /// (names case-insensitive). Nothing changes when any value is invalid.
    pub fn apply<'a>(
        &self,
        default: &str,
        overrides: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<(), String> {
        let default = LoggerLevel::parse(default)
            .ok_or_else(|| format!("unknown level {default:?} for logging.level"))?;
        let mut next = [default; 13];
        for (name, level) in overrides {
            let logger =
                Logger::from_name(name).ok_or_else(|| format!("unknown logger {name:?}"))?;
            next[logger.index()] = LoggerLevel::parse(level)
                .ok_or_else(|| format!("unknown level {level:?} for logger {name}"))?;
        }
        for logger in Logger::ALL {
            self.set(logger, next[logger.index()]);
        }
        Ok(())
    }

    /// `NAME level` lines for every logger.
    pub fn describe(&self) -> String {
        Logger::ALL
            .into_iter()
            .map(|l| format!("{} {}\n", l.name(), self.get(l).name()))
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_are_the_thirteen_of_the_issue() {
        let names: Vec<_> = Logger::ALL.iter().map(|l| l.name()).collect();
        assert_eq!(
            names.join(" "),
            "AUTHENTICATION BREAKDOWN CONFIGURATION CONTAINER IMAP.COMMAND MAIL.DATA \
             MIGRATION BACKEND REQUEST.FULL REQUEST.TRIMMED RESOURCES SUMMARY.IN SUMMARY.OUT"
        );
        for (i, l) in Logger::ALL.into_iter().enumerate() {
            assert_eq!(l.index(), i);
            assert_eq!(Logger::from_name(&l.name().to_lowercase()), Some(l));
        }
        assert_eq!(Logger::from_name("imap"), None);
    }

    #[test]
    fn warn_and_error_always_pass() {
        let levels = Levels::default();
        levels.apply("off", []).unwrap();
        for l in Logger::ALL {
            assert!(levels.enabled(l, &Level::WARN));
            assert!(levels.enabled(l, &Level::ERROR));
            assert!(!levels.enabled(l, &Level::INFO));
        }
    }

    #[test]
    fn apply_sets_defaults_and_overrides_or_nothing() {
        let levels = Levels::default();
        levels
            .apply("warn", [("request.full", "TRACE"), ("BREAKDOWN", "info")])
            .unwrap();
        assert!(levels.enabled(Logger::RequestFull, &Level::TRACE));
        assert!(levels.enabled(Logger::Breakdown, &Level::INFO));
        assert!(!levels.enabled(Logger::Breakdown, &Level::DEBUG));
        assert!(!levels.enabled(Logger::Container, &Level::INFO));
        // An invalid override changes nothing.
        assert!(levels.apply("trace", [("NOPE", "info")]).is_err());
        assert!(levels.apply("trace", [("BACKEND", "loud")]).is_err());
        assert!(levels.apply("loud", []).is_err());
        assert!(!levels.enabled(Logger::Container, &Level::INFO));
        assert!(levels.describe().contains("REQUEST.FULL trace\n"));
    }

    #[test]
    fn targets_map_to_loggers() {
        assert_eq!(Logger::of_target("MIGRATION"), (Logger::Migration, false));
        assert_eq!(
            Logger::of_target("opush_server::http::auth"),
            (Logger::Authentication, false)
        );
        assert_eq!(
            Logger::of_target("opush_server::backends::imap::session"),
            (Logger::Backend, false)
        );
        assert_eq!(
            Logger::of_target("storage::retry"),
            (Logger::Backend, false)
        );
        assert_eq!(
            Logger::of_target("opush_server::serve"),
            (Logger::Container, false)
        );
        assert_eq!(Logger::of_target("hyper::proto"), (Logger::Container, true));
        // A prefix only matches whole path segments.
        assert_eq!(
            Logger::of_target("opush_server::configx"),
            (Logger::Container, false)
        );
    }
}
