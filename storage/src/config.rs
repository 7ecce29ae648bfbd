//! The `[storage]` section of `opush.toml`: which backend, where, and the
//! TTLs, consistency and retry settings. It must never print the Cassandra
//! password: `Debug` masks it as `*`.

use std::fmt;
use std::path::PathBuf;

use serde::Deserialize;

/// Which backend holds the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// redb file in a local directory (default; zero set-up).
    #[default]
    Embedded,
    /// Apache Cassandra (or a compatible cluster) through the scylla driver.
    Cassandra,
}

/// Cassandra consistency level used for reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ConsistencyLevel {
    /// ONE
    One,
    /// TWO
    Two,
    /// THREE
    Three,
    /// QUORUM (default)
    #[default]
    Quorum,
    /// LOCAL_QUORUM
    LocalQuorum,
    /// EACH_QUORUM
    EachQuorum,
    /// ALL
    All,
    /// LOCAL_ONE
    LocalOne,
}

/// What the Cassandra backend does when a request fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RetryPolicyKind {
    /// Retry read timeouts, write timeouts and unavailable errors, up to
    /// `max_retries` times, at the same consistency.
    #[default]
    AlwaysRetry,
    /// Retry like `ALWAYS_RETRY`, but when too few replicas are up lower the
    /// consistency to what the alive replicas can give, logging each step.
    RetryOrClDowngrade,
}

/// A secret that `Debug` and `Display` print as `*`.
#[derive(Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Password(String);

impl Password {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Password(s.into())
    }
    /// The clear text, for the driver only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*")
    }
}

impl fmt::Display for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*")
    }
}

/// Default page cache of the embedded store, MiB: small enough for a
/// 1 GiB machine, large enough that the heads and recent events of a few
/// thousand active devices stay in memory.
pub const DEFAULT_CACHE_MB: u64 = 32;

/// The `[storage]` section.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// `embedded` or `cassandra`.
    pub backend: BackendKind,
    /// Data directory of the embedded store.
    pub path: PathBuf,
    /// Cassandra contact points (host or host:port).
    pub seeds: Vec<String>,
    /// Cassandra native port, used for seeds given without one.
    pub port: u16,
    /// Cassandra keyspace.
    pub keyspace: String,
    /// Replication factor used when `schema install` creates the keyspace.
    pub replication_factor: u32,
    /// Cassandra user (empty: no authentication).
    pub user: String,
    /// Cassandra password (never logged).
    pub password: Password,
    /// Consistency of reads and writes (`QUORUM` by default).
    pub consistency: ConsistencyLevel,
    /// `ALWAYS_RETRY` or `RETRY_OR_CL_DOWNGRADE`.
    pub retry_policy: RetryPolicyKind,
    /// Retries per request before the error is returned.
    pub max_retries: u32,
    /// Per-request timeout.
    pub read_timeout_ms: u64,
    /// TTL of events (and of the device head).
    pub ttl_events_s: u64,
    /// TTL of snapshots.
    pub ttl_snapshots_s: u64,
    /// TTL of device registry rows.
    pub ttl_devices_s: u64,
    /// TTL of a sent message's copy waiting for the Sent folder (counted
    /// from the send): a copy not saved by then is given up.
    pub ttl_sent_copies_s: u64,
    /// Rows rewritten per migration step (progress is saved after each).
    pub migration_batch_size: u32,
    /// Rows fetched per page while a migration reads.
    pub migration_page_size: u32,
    /// How often the embedded store deletes expired rows.
    pub expiry_interval_s: u64,
    /// Page cache of the embedded store, MiB (redb's own default is 1 GiB,
    /// which a busy server fills: most of its resident memory).
    pub cache_mb: u64,
    /// How long, at most, the embedded store keeps acknowledged writes in
    /// its journal only before a checkpoint writes them to the redb file
    /// (they are durable either way; a longer interval means fewer, larger
    /// redb commits and a longer replay after a crash).
    pub checkpoint_ms: u64,
    /// Lifetime of a device lease (Cassandra: a request with backend
    /// effects holds one so that two processes never carry out one
    /// device's changes at once). The holder renews it every third of it
    /// while its request runs, so it only bounds how long a crashed
    /// holder's lease keeps the device answering "retry later".
    pub lease_ttl_s: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            backend: BackendKind::Embedded,
            path: PathBuf::from("/var/lib/opush"),
            seeds: vec!["127.0.0.1".to_owned()],
            port: 9042,
            keyspace: "opush".to_owned(),
            replication_factor: 1,
            user: String::new(),
            password: Password::default(),
            consistency: ConsistencyLevel::Quorum,
            retry_policy: RetryPolicyKind::AlwaysRetry,
            max_retries: 3,
            read_timeout_ms: 5_000,
            ttl_events_s: 90 * 24 * 3600,
            ttl_snapshots_s: 90 * 24 * 3600,
            ttl_devices_s: 365 * 24 * 3600,
            ttl_sent_copies_s: 7 * 24 * 3600,
            migration_batch_size: 500,
            migration_page_size: 1_000,
            expiry_interval_s: 60,
            cache_mb: DEFAULT_CACHE_MB,
            checkpoint_ms: 1_000,
            lease_ttl_s: 30,
        }
    }
}

impl StorageConfig {
    /// Checks values that serde cannot.
    pub fn validate(&self) -> crate::Result<()> {
        let err = |m: &str| Err(crate::StorageError::Config(m.to_owned()));
        let ttls = [
            self.ttl_events_s,
            self.ttl_snapshots_s,
            self.ttl_devices_s,
            self.ttl_sent_copies_s,
        ];
        if ttls.contains(&0) {
            return err("TTLs must be at least one second");
        }
        // Cassandra's TTL limit is 20 years.
        let max_ttl = 20 * 365 * 24 * 3600;
        if ttls.iter().any(|t| *t > max_ttl) {
            return err("TTLs must be at most 20 years (630720000 s)");
        }
        if !(3..=3600).contains(&self.lease_ttl_s) {
            return err("lease_ttl_s must be 3-3600 seconds");
        }
        if self.migration_batch_size == 0 || self.migration_page_size == 0 {
            return err("migration_batch_size and migration_page_size must be positive");
        }
        if self.backend == BackendKind::Cassandra {
            if self.seeds.is_empty() {
                return err("cassandra backend needs at least one seed");
            }
            let ks_ok = !self.keyspace.is_empty()
                && self.keyspace.len() <= 48
                && self
                    .keyspace
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_')
                && self
                    .keyspace
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic());
            if !ks_ok {
                return err("keyspace must be 1-48 of [A-Za-z0-9_], starting with a letter");
            }
            if self.replication_factor == 0 {
                return err("replication_factor must be positive");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `storage.*` rows of docs/CONFIGURATION.md: (key, documented default).
    fn documented() -> Vec<(String, String)> {
        let doc = include_str!("../../docs/CONFIGURATION.md");
        doc.lines()
            .filter_map(|line| {
                let rest = line.strip_prefix("| `storage.")?;
                let (key, rest) = rest.split_once('`')?;
                let default = rest.split('`').nth(1)?;
                Some((key.to_owned(), default.to_owned()))
            })
            .collect()
    }

    #[test]
    fn documented_keys_and_defaults_are_the_model_s() {
        let rows = documented();
        assert!(rows.len() > 10, "no [storage] table found: {rows:?}");
        // Each documented key exists, and its documented default is the
        // default (set explicitly, it changes nothing).
        for (key, default) in &rows {
            let set: Result<StorageConfig, _> = toml::from_str(&format!("{key} = {default}"));
            match set {
                Ok(c) => assert_eq!(c, StorageConfig::default(), "storage.{key} = {default}"),
                Err(e) => panic!("documented storage.{key} = {default}: {e}"),
            }
        }
        // Each key of the model is documented: serde names them all when
        // it refuses an unknown one.
        let refused = toml::from_str::<StorageConfig>("not_a_key = 1")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let (_, expected) = refused
            .split_once("expected one of")
            .unwrap_or_else(|| panic!("unexpected error: {refused}"));
        let model: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
        assert!(model.len() > 10, "fields not named: {refused}");
        let missing: Vec<&&str> = model
            .iter()
            .filter(|k| !rows.iter().any(|(d, _)| d == *k))
            .collect();
        assert!(missing.is_empty(), "undocumented storage keys: {missing:?}");
    }
}
