//! Schema versions and their lifecycle, shared by both backends: what
//! `opush schema status` reports, and the options of a migration. The
//! backends hold the version-specific DDL and row rewriting; this module
//! must stay free of backend code.

use std::fmt;

/// Schema version written by `install` and reached by `update`.
pub const LATEST_SCHEMA: u32 = 5;
/// Oldest schema this code can serve with. Older ones need `update` first.
/// At version 2 everything works but pending Sent copies
/// ([`SENT_COPIES_SCHEMA`]) and device leases; at version 3 everything but
/// device leases ([`LEASES_SCHEMA`]); at version 4 everything but pending
/// Sent copies, whose rows gained their listing fields in
/// [`SENT_COPY_INFO_SCHEMA`]: `update` is advised.
pub const MIN_SUPPORTED_SCHEMA: u32 = 2;
/// First schema with the pending Sent copies (`sent_copies`); calls on
/// them fail with `SchemaMismatch` on an older one.
pub const SENT_COPIES_SCHEMA: u32 = 3;
/// First schema with the device leases (`device_leases`, Cassandra): on
/// an older one, taking a lease fails with `SchemaMismatch` (the server
/// then serves without, as before, and says so). The embedded store keeps
/// its leases in memory at any version.
pub const LEASES_SCHEMA: u32 = 4;
/// First schema whose pending Sent copies carry what an administrator
/// lists (device, subject, size, next try, last error) apart from the
/// message's bytes (embedded: the `sent_copy_info` table; Cassandra: more
/// columns of `sent_copies`). The sent-copy calls need it: on an older
/// store they fail with `SchemaMismatch` (the server then retries a copy
/// from memory only) until `opush schema update`.
pub const SENT_COPY_INFO_SCHEMA: u32 = 5;

/// What `schema status` finds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SchemaStatus {
    /// No schema: run `install`.
    InstallRequired {
        /// Version `install` would create.
        latest: u32,
    },
    /// Up to date.
    Ok {
        /// Installed version (= latest).
        version: u32,
        /// When it was installed or last updated, Unix milliseconds.
        installed_at_ms: i64,
    },
    /// Older than the latest but still usable: `update` is advised.
    UpdateAdvised {
        /// Installed version.
        current: u32,
        /// Latest version.
        latest: u32,
    },
    /// Too old to serve with: run `update` (the server stays admin-only).
    UpdateRequired {
        /// Installed version.
        current: u32,
        /// Latest version.
        latest: u32,
    },
    /// Newer than this code knows (a newer opush installed it).
    TooNew {
        /// Installed version.
        current: u32,
        /// Latest version known here.
        latest: u32,
    },
}

impl SchemaStatus {
    /// Classifies an installed version (`None` = nothing installed).
    pub fn classify(
        installed: Option<(u32, i64)>,
        latest: u32,
        min_supported: u32,
    ) -> SchemaStatus {
        match installed {
            None => SchemaStatus::InstallRequired { latest },
            Some((v, _)) if v > latest => SchemaStatus::TooNew { current: v, latest },
            Some((v, at)) if v == latest => SchemaStatus::Ok {
                version: v,
                installed_at_ms: at,
            },
            Some((v, _)) if v >= min_supported => {
                SchemaStatus::UpdateAdvised { current: v, latest }
            }
            Some((v, _)) => SchemaStatus::UpdateRequired { current: v, latest },
        }
    }

    /// True when the server may serve devices with this schema.
    pub fn is_serviceable(&self) -> bool {
        matches!(
            self,
            SchemaStatus::Ok { .. } | SchemaStatus::UpdateAdvised { .. }
        )
    }
}

impl fmt::Display for SchemaStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaStatus::InstallRequired { latest } => {
                write!(f, "install required (no schema; latest version {latest})")
            }
            SchemaStatus::Ok {
                version,
                installed_at_ms,
            } => {
                write!(
                    f,
                    "OK (version {version}, installed at {})",
                    format_ms(*installed_at_ms)
                )
            }
            SchemaStatus::UpdateAdvised { current, latest } => {
                write!(f, "update advised (current {current}, latest {latest})")
            }
            SchemaStatus::UpdateRequired { current, latest } => {
                write!(
                    f,
                    "update required (current {current} is too old, latest {latest})"
                )
            }
            SchemaStatus::TooNew { current, latest } => {
                write!(
                    f,
                    "schema version {current} is newer than this opush knows ({latest})"
                )
            }
        }
    }
}

/// Formats Unix milliseconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn format_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// How a migration runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationOptions {
    /// Rows rewritten per step; progress is recorded after each step.
    pub batch_size: u32,
    /// Rows read per page.
    pub page_size: u32,
    /// Stop after this many steps (an interruption, for tests and for
    /// spreading a long migration over several runs). `None` = run to the end.
    pub max_batches: Option<u64>,
}

/// What an `update` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MigrationReport {
    /// Version before.
    pub from: u32,
    /// Version after (equal to `from` if interrupted before the end).
    pub to: u32,
    /// Rows rewritten in this run.
    pub rows: u64,
    /// False when stopped by `max_batches`; run `update` again to resume.
    pub complete: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classify_covers_every_state() {
        assert_eq!(
            SchemaStatus::classify(None, 3, 2),
            SchemaStatus::InstallRequired { latest: 3 }
        );
        assert_eq!(
            SchemaStatus::classify(Some((1, 5)), 3, 2),
            SchemaStatus::UpdateRequired {
                current: 1,
                latest: 3
            }
        );
        assert_eq!(
            SchemaStatus::classify(Some((2, 5)), 3, 2),
            SchemaStatus::UpdateAdvised {
                current: 2,
                latest: 3
            }
        );
        assert_eq!(
            SchemaStatus::classify(Some((3, 5)), 3, 2),
            SchemaStatus::Ok {
                version: 3,
                installed_at_ms: 5
            }
        );
        assert_eq!(
            SchemaStatus::classify(Some((4, 5)), 3, 2),
            SchemaStatus::TooNew {
                current: 4,
                latest: 3
            }
        );
        assert!(SchemaStatus::classify(Some((2, 5)), 3, 2).is_serviceable());
        assert!(!SchemaStatus::classify(Some((1, 5)), 3, 2).is_serviceable());
    }

    #[test]
    fn formats_dates() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00Z");
        // 2026-11-28T21:30:05Z
        assert_eq!(format_ms(1_795_901_405_000), "2026-11-28T21:30:05Z");
        assert_eq!(format_ms(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
