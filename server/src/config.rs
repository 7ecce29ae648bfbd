//! The `opush.toml` model: every section and key the server reads, their
//! defaults (the demo configuration of `scripts/stack`), and the
//! `OPUSH_<SECTION>_<KEY>` environment overrides.
//!
//! This module only parses and validates. It does not open sockets, read
//! other files, or log: secrets are held in [`Secret`], which never prints.
//! Every key is documented in `docs/CONFIGURATION.md`; keep both in step.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// Prefix of the environment variables that override configuration keys.
pub const ENV_PREFIX: &str = "OPUSH_";

/// Why the configuration could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
    /// The file (after environment overrides) is not valid TOML for this model.
    #[error("invalid configuration{}: {message}", origin.as_deref().map(|p| format!(" in {p}")).unwrap_or_default())]
    Parse {
        /// File path, if any.
        origin: Option<String>,
        /// Parser message (names the key).
        message: String,
    },
    /// An `OPUSH_*` variable names a key of a known section that does not exist.
    #[error("environment variable {var} does not name a configuration key")]
    UnknownEnv {
        /// Variable name.
        var: String,
    },
    /// A value is out of its allowed range or inconsistent with another.
    #[error("invalid value for {key}: {reason}")]
    Invalid {
        /// `section.key`.
        key: &'static str,
        /// Why.
        reason: String,
    },
}

/// A secret string (password). `Debug`, `Display` and `Serialize` print `*`.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    /// The secret value, for the one call that needs it (a login).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("*")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("*")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        // Accept any scalar: an environment override like `1234` parses as an integer.
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Scalar {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(Secret(match Scalar::deserialize(d)? {
            Scalar::S(s) => s,
            Scalar::I(i) => i.to_string(),
            Scalar::F(f) => f.to_string(),
            Scalar::B(b) => b.to_string(),
        }))
    }
}

/// Transport security towards a backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum TlsMode {
    /// Plain TCP (loopback or trusted network only).
    #[default]
    None,
    /// Plain TCP upgraded with STARTTLS.
    Starttls,
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Tls,
}

/// The whole `opush.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[storage]`: passed through to `opush-storage` (see docs/CONFIGURATION.md).
    pub storage: toml::Table,
    /// `[imap]`
    pub imap: ImapConfig,
    /// `[smtp]`
    pub smtp: SmtpConfig,
    /// `[dav]`
    pub dav: DavConfig,
    /// `[ldap]`
    pub ldap: LdapConfig,
    /// `[devices]`
    pub devices: DevicesConfig,
    /// `[policy]`
    pub policy: PolicyConfig,
    /// `[console]`
    pub console: ConsoleConfig,
    /// `[logging]`
    pub logging: LoggingConfig,
    /// `[push]`
    pub push: PushConfig,
    /// `[identity]`
    pub identity: IdentityConfig,
    /// `[receipt]`
    pub receipt: ReceiptConfig,
    /// `[capture]`
    pub capture: CaptureConfig,
    /// `[sieve]`
    pub sieve: SieveConfig,
}

/// `[sieve]`: out-of-office (Settings `Oof`) as a Sieve vacation script,
/// managed over ManageSieve (RFC 5804). Off unless enabled: without it
/// Settings `Oof` is refused (Status 7).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SieveConfig {
    /// Manage out-of-office over ManageSieve.
    pub enabled: bool,
    /// ManageSieve host name or address.
    pub host: String,
    /// ManageSieve port (4190 is the standard one).
    pub port: u16,
    /// Transport security: `none` or `starttls` (ManageSieve has no
    /// implicit-TLS port).
    pub tls: TlsMode,
    /// Extra CA certificates (PEM) trusted for STARTTLS.
    pub ca_file: Option<PathBuf>,
    /// Send passwords without TLS to a host that is not loopback.
    pub allow_plaintext: bool,
    /// Timeout of every network operation, milliseconds.
    pub timeout_ms: u64,
    /// The name of the script opush owns for each user.
    pub script: String,
    /// Domains whose senders get the internal message; empty: the domains
    /// of the user's own addresses.
    pub internal_domains: Vec<String>,
}

impl Default for SieveConfig {
    fn default() -> Self {
        SieveConfig {
            enabled: false,
            host: "127.0.0.1".into(),
            port: 4190,
            tls: TlsMode::None,
            ca_file: None,
            allow_plaintext: false,
            timeout_ms: 30_000,
            script: "opush-oof".into(),
            internal_domains: Vec::new(),
        }
    }
}

/// `[server]`: the HTTP front end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address the EAS/Autodiscover HTTP listener binds.
    pub listen: SocketAddr,
    /// Public base URL devices reach (Autodiscover answers with it).
    pub public_url: String,
    /// Address of the admin/metrics HTTP listener.
    pub admin_listen: SocketAddr,
    /// Maximum requests processed at once; more wait (then 503).
    pub max_in_flight: usize,
    /// Largest accepted request body, in bytes.
    pub max_request_body: u64,
    /// `Retry-After` (seconds) of 503 answers: overload, backend outage.
    pub retry_after_s: u64,
    /// Realm of the `WWW-Authenticate: Basic` challenge.
    pub realm: String,
    /// A successful login is remembered this many seconds (0: never; every
    /// request then logs in to IMAP).
    pub auth_cache_ttl_s: u64,
    /// Most logins remembered at once (the oldest are forgotten first).
    pub auth_cache_max_entries: usize,
    /// Loop detector: more than `loop_max_repeats` identical requests of a
    /// device within `loop_window_s` seconds are throttled (503 +
    /// `X-MS-ASThrottle`). 0 turns the detector off.
    pub loop_max_repeats: u32,
    /// The loop detector's window, seconds.
    pub loop_window_s: u64,
    /// Most threads of the blocking pool (embedded store calls): each
    /// keeps allocator pages of its own, so fewer threads hold less memory.
    pub blocking_threads: usize,
    /// A request head must arrive within this many seconds of its first
    /// byte (slow senders are closed with 408); a body or an answer must
    /// make progress within it.
    pub header_timeout_s: u64,
    /// An idle keep-alive connection is closed after this many seconds.
    pub keep_alive_s: u64,
    /// Reverse proxies (addresses or CIDR networks) whose `X-Forwarded-For`
    /// names the device's address; from any other peer the header is
    /// ignored. Empty: the TCP peer is the device.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            public_url: "http://127.0.0.1:8082".into(),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 8083)),
            max_in_flight: 1024,
            max_request_body: 32 * 1024 * 1024,
            retry_after_s: 30,
            realm: "opush".into(),
            auth_cache_ttl_s: 60,
            auth_cache_max_entries: 100_000,
            loop_max_repeats: 30,
            loop_window_s: 60,
            blocking_threads: 16,
            header_timeout_s: 30,
            keep_alive_s: 600,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[imap]`: the mail store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ImapConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// Extra CA certificates (PEM) trusted for TLS, besides the webpki roots.
    pub ca_file: Option<PathBuf>,
    /// Log in with `user@domain` (true) or with the local part only (false).
    pub login_with_domain: bool,
    /// Timeout of every network operation (connect, command, read), milliseconds.
    pub timeout_ms: u64,
    /// Master user for background push (`user*master` login), if any.
    pub master_user: Option<String>,
    /// Master user password.
    pub master_password: Option<Secret>,
    /// Separator between user and master user in the login name.
    pub master_separator: String,
    /// Command handlers reach IMAP through the master user instead of the
    /// device's own credentials (which are then only checked at login).
    pub master_for_requests: bool,
    /// Drafts folder name, used when the server has no `\Drafts` SPECIAL-USE.
    pub folder_drafts: String,
    /// Sent folder name, used when the server has no `\Sent` SPECIAL-USE.
    pub folder_sent: String,
    /// Trash folder name, used when the server has no `\Trash` SPECIAL-USE.
    pub folder_trash: String,
    /// Maximum open connections per user.
    pub pool_size: usize,
    /// An idle pooled connection is closed after this many seconds.
    pub pool_idle_timeout_s: u64,
    /// A request that finds all of its user's connections busy waits this
    /// long for one to come back before a background login grows the pool.
    pub pool_grow_after_ms: u64,
    /// Maximum pooled connections over all users (the oldest idle one of
    /// any user is closed to make room).
    pub max_connections: usize,
    /// Maximum logins in flight to the IMAP server at once (pool and
    /// Basic-auth checks); the others queue.
    pub max_logins_in_flight: usize,
    /// Most bytes of one message held: messages read whole (drafts,
    /// originals); the skeleton of a large message rendered for Sync
    /// (`commands::sync::large_above`) and its MIME body unless streamed.
    pub max_message_bytes: u64,
    /// Bytes of a message read per IMAP command when an attachment is
    /// streamed (ItemOperations, GetAttachment): each such read takes a
    /// pooled connection and gives it back; a streamed answer holds about
    /// three of them in memory.
    pub stream_chunk_bytes: u32,
    /// Use CONDSTORE/QRESYNC when the server offers them (false: always full listings).
    pub use_condstore: bool,
    /// Push: STATUS polling period when IDLE/NOTIFY are not used, seconds.
    pub poll_interval_s: u64,
    /// Name the device's address to the IMAP server before a login made
    /// for its request (RFC 2971 ID `x-originating-ip`/`-port`, when the
    /// server advertises ID), so a server that trusts opush (Dovecot's
    /// `login_trusted_networks`) logs it and keeps its auth penalty per
    /// device. Harmless to a server that does not trust opush.
    pub forward_client_ip: bool,
}

impl Default for ImapConfig {
    fn default() -> Self {
        ImapConfig {
            host: "127.0.0.1".into(),
            port: 1143,
            tls: TlsMode::None,
            ca_file: None,
            login_with_domain: true,
            timeout_ms: 30_000,
            master_user: None,
            master_password: None,
            master_separator: "*".into(),
            master_for_requests: false,
            folder_drafts: "Drafts".into(),
            folder_sent: "Sent".into(),
            folder_trash: "Trash".into(),
            pool_size: 4,
            pool_idle_timeout_s: 300,
            pool_grow_after_ms: 20,
            max_connections: 4096,
            max_logins_in_flight: 8,
            max_message_bytes: 32 * 1024 * 1024,
            stream_chunk_bytes: 1024 * 1024,
            use_condstore: true,
            poll_interval_s: 60,
            forward_client_ip: true,
        }
    }
}

/// `[smtp]`: mail submission.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// Transport security.
    pub tls: TlsMode,
    /// Authenticate with the device user's credentials.
    pub auth: bool,
    /// Largest message accepted by SendMail/SmartReply/SmartForward, bytes.
    pub max_message_size: u64,
    /// Timeout of every network operation, milliseconds.
    pub timeout_ms: u64,
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig {
            host: "127.0.0.1".into(),
            port: 1025,
            tls: TlsMode::None,
            auth: false,
            max_message_size: 10 * 1024 * 1024,
            timeout_ms: 30_000,
        }
    }
}

/// `[identity]`: who a user's messages come from (SendMail, SmartReply,
/// SmartForward set `From` to this identity).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct IdentityConfig {
    /// Domain added to a login without one to form the user's address
    /// (empty: the login is used as it is).
    pub default_domain: String,
    /// Display name per address, e.g. `"alice@example.test" = "Alice Martin"`.
    pub names: BTreeMap<String, String>,
}

/// `[receipt]`: receipts opush sends itself, rendered from templates.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct ReceiptConfig {
    /// Send the sender a delivery receipt (`delivery_receipt.mustache`) once
    /// the relay accepted a message.
    pub delivery: bool,
    /// Send read receipts (`read_receipt.mustache`) when asked to.
    pub read: bool,
    /// Directory of the templates; unset: the configuration file's directory.
    pub templates: Option<PathBuf>,
}

/// `[capture]`: the full-capture mode (`crate::capture`): every request
/// and response of the listed devices stored with its headers, for
/// debugging one device. Off by default; the admin address switches devices
/// on and off at run time (`PUT`/`DELETE /capture/USER/DEVICE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureConfig {
    /// Devices captured from the start, each `"user@domain/DeviceId"`.
    pub devices: Vec<String>,
    /// How long captured bodies are kept, seconds.
    pub ttl_s: u64,
    /// Largest body stored whole, bytes; a longer one is cut to this size.
    pub max_body_bytes: u64,
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            devices: Vec::new(),
            ttl_s: 24 * 3600,
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl CaptureConfig {
    /// The configured devices as `(user, device id)`.
    pub fn device_pairs(&self) -> Result<Vec<(String, String)>, String> {
        self.devices
            .iter()
            .map(|d| match d.split_once('/') {
                Some((u, dev)) if !u.trim().is_empty() && !dev.trim().is_empty() => {
                    Ok((u.trim().to_owned(), dev.trim().to_owned()))
                }
                _ => Err(format!("{d:?}: expected \"user@domain/DeviceId\"")),
            })
            .collect()
    }
}

/// `[dav]`: CalDAV/CardDAV server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct DavConfig {
    /// Base URL; unset disables calendar and contacts collections.
    pub url: Option<String>,
    /// Timeout of every request, milliseconds.
    pub timeout_ms: Option<u64>,
}

/// `[ldap]`: directory for ResolveRecipients / Search GAL.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LdapConfig {
    /// `ldap://` or `ldaps://` URL; unset disables GAL search.
    pub url: Option<String>,
    /// Search base; `%d` is replaced by the user's domain.
    pub base_dn: String,
    /// Search filter; `%q` is replaced by the (escaped) query.
    pub filter: String,
    /// Maximum entries returned.
    pub limit: u32,
    /// Bind DN, if the directory needs one.
    pub bind_dn: Option<String>,
    /// Bind password.
    pub bind_password: Option<Secret>,
}

impl Default for LdapConfig {
    fn default() -> Self {
        LdapConfig {
            url: None,
            base_dn: "dc=%d".into(),
            filter: "(|(mail=%q*)(cn=%q*)(sn=%q*)(givenName=%q*))".into(),
            limit: 100,
            bind_dn: None,
            bind_password: None,
        }
    }
}

/// `[devices]`: device admission and sync limits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// Accept devices never seen before (false: only pre-registered devices).
    pub allow_unknown: bool,
    /// WindowSize used when the device sends none.
    pub window_size: u32,
    /// Upper bound applied to the device's WindowSize.
    pub max_window_size: u32,
    /// Smallest Ping/Sync HeartbeatInterval accepted, seconds.
    pub heartbeat_min_s: u32,
    /// Largest Ping/Sync HeartbeatInterval accepted, seconds.
    pub heartbeat_max_s: u32,
    /// Bytes budget of one Sync window (0: none): a window whose messages
    /// would exceed it is cut with MoreAvailable.
    pub max_window_bytes: u64,
    /// An unchanged device's registry row is rewritten at most this often,
    /// seconds (the precision of its last-seen time).
    pub registry_write_every_s: u64,
    /// Most device states kept folded in memory between requests (the
    /// least recently used idle ones are dropped first and folded again
    /// from the store when needed).
    pub max_cached_states: usize,
    /// Bound on the estimated size of those states, MiB.
    pub max_cached_states_mb: u64,
    /// A snapshot of a device's state is written every this many events
    /// (0: never; a state is then folded from its whole log); for a large
    /// state, later, once the events since the last one outweigh it (at
    /// most 16 times this many events apart: see `session::snapshot_due`).
    pub snapshot_every: u64,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        DevicesConfig {
            allow_unknown: true,
            window_size: 100,
            max_window_size: 512,
            heartbeat_min_s: 60,
            heartbeat_max_s: 3540,
            max_window_bytes: 8 * 1024 * 1024,
            registry_write_every_s: 60,
            max_cached_states: 2_000,
            max_cached_states_mb: 64,
            snapshot_every: 100,
        }
    }
}

/// `[push]`: parked Pings and the per-user watchers behind them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// Most Pings parked at once (they do not count against
    /// `server.max_in_flight`); more get 503 + Retry-After.
    pub max_parked: usize,
    /// A user's watcher closes this many seconds after its last Ping left.
    pub linger_s: u64,
    /// Longest pause between two reconnection attempts of a watcher, seconds
    /// (the pause doubles from one second up to this).
    pub reconnect_max_s: u64,
    /// Watch a single folder with IMAP IDLE (false: always STATUS polling
    /// every `imap.poll_interval_s`).
    pub use_idle: bool,
    /// Pings one device may send per minute; more get 503 + Retry-After
    /// (tight-loop damping; 0 disables).
    pub max_pings_per_minute: u32,
    /// Watch several folders with IMAP NOTIFY (RFC 5465) when the server
    /// offers it (false: STATUS polling every `imap.poll_interval_s`).
    pub use_notify: bool,
    /// Longest pause between two folder-list checks (LIST) of a watcher
    /// waiting in IDLE or NOTIFY, seconds (a polling watcher lists every
    /// round): how soon a folder created or deleted on the IMAP side ends
    /// a parked Ping with Status 7.
    pub hierarchy_check_s: u64,
    /// A watcher of a single folder waits with NOTIFY and folder events
    /// instead of IDLE (where the server has NOTIFY): a folder created on
    /// the IMAP side ends the parked Ping with Status 7 at once instead of
    /// at the next hierarchy check, but Dovecot keeps an imap process for
    /// each such watcher (it cannot hibernate NOTIFY connections).
    pub notify_hierarchy: bool,
    /// Seconds a user's watcher keeps watching a mail folder after a Sync
    /// of it (0: off). While the watcher waits in IDLE or NOTIFY with
    /// nothing reported, a Sync without commands whose folder the watcher
    /// saw as the device last synced it is answered without an IMAP round
    /// trip. The price: a change another client made reaches such a Sync
    /// once the IMAP server has told the watcher (Dovecot: within about
    /// half a second), and a user who Syncs without Pinging keeps a watcher
    /// connection for this long.
    pub sync_watch_s: u64,
}

impl Default for PushConfig {
    fn default() -> Self {
        PushConfig {
            max_parked: 50_000,
            linger_s: 30,
            reconnect_max_s: 60,
            use_idle: true,
            max_pings_per_minute: 20,
            use_notify: true,
            hierarchy_check_s: 300,
            notify_hierarchy: false,
            sync_watch_s: 0,
        }
    }
}

/// `[policy]`: the Provision policy (MS-ASPROV EASProvisionDoc) sent to devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicyConfig {
    /// Require devices to provision before syncing (449 otherwise).
    pub require_provisioning: bool,
    /// DevicePasswordEnabled.
    pub device_password_enabled: bool,
    /// AlphanumericDevicePasswordRequired.
    pub alphanumeric_device_password_required: bool,
    /// AllowSimpleDevicePassword.
    pub allow_simple_device_password: bool,
    /// MinDevicePasswordLength.
    pub min_device_password_length: u32,
    /// MaxInactivityTimeDeviceLock, seconds.
    pub max_inactivity_time_device_lock_s: u32,
    /// MaxDevicePasswordFailedAttempts.
    pub max_device_password_failed_attempts: u32,
    /// DevicePasswordExpiration, days (0 = never).
    pub device_password_expiration_days: u32,
    /// RequireDeviceEncryption.
    pub require_device_encryption: bool,
    /// AttachmentsEnabled.
    pub attachments_enabled: bool,
    /// MaxAttachmentSize, bytes (0 = no limit).
    pub max_attachment_size: u64,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            require_provisioning: true,
            device_password_enabled: false,
            alphanumeric_device_password_required: false,
            allow_simple_device_password: true,
            min_device_password_length: 4,
            max_inactivity_time_device_lock_s: 900,
            max_device_password_failed_attempts: 8,
            device_password_expiration_days: 0,
            require_device_encryption: false,
            attachments_enabled: true,
            max_attachment_size: 0,
        }
    }
}

/// `[console]`: the SSH admin console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// Start the console.
    pub enable: bool,
    /// Bind address.
    pub address: String,
    /// TCP port.
    pub port: u16,
    /// Users (IMAP logins) allowed to use the console.
    pub admin_users: Vec<String>,
    /// SSH host key file (generated on first start if missing).
    pub host_key: Option<PathBuf>,
}

impl Default for ConsoleConfig {
    fn default() -> Self {
        ConsoleConfig {
            enable: false,
            address: "127.0.0.1".into(),
            port: 5665,
            admin_users: Vec::new(),
            host_key: None,
        }
    }
}

/// `[logging]`: levels, globally and per named logger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LoggingConfig {
    /// Default level: trace, debug, info, warn, error or off.
    pub level: String,
    /// Level per named logger (e.g. `"REQUEST.FULL" = "debug"`); the names
    /// are those of `crate::obs::Logger`.
    pub loggers: BTreeMap<String, String>,
    /// Output format: `text` or `json`.
    pub format: String,
    /// Log file (rotated and compressed); empty: standard error.
    pub file: String,
    /// Access log file in Apache combined format; empty: none.
    pub access_log: String,
    /// Size at which a log file is rotated, bytes.
    pub max_file_bytes: u64,
    /// Rotated (gzip) files kept per log.
    pub keep_files: usize,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: "info".into(),
            loggers: BTreeMap::new(),
            format: "text".into(),
            file: String::new(),
            access_log: String::new(),
            max_file_bytes: 64 * 1024 * 1024,
            keep_files: 7,
        }
    }
}

const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
const SECTIONS: [&str; 14] = [
    "server", "storage", "imap", "smtp", "dav", "ldap", "devices", "policy", "console", "logging",
    "push", "identity", "receipt", "capture",
];

impl Config {
    /// Reads `path`, applies `OPUSH_*` environment overrides and validates.
    pub fn load(path: impl AsRef<Path>) -> Result<Config, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut cfg =
            Self::from_toml_with_env(&text, Some(path.display().to_string()), std::env::vars())?;
        if cfg.receipt.templates.is_none() {
            cfg.receipt.templates = path.parent().map(Path::to_path_buf);
        }
        Ok(cfg)
    }

    /// The demo configuration with `OPUSH_*` environment overrides applied.
    pub fn from_env() -> Result<Config, ConfigError> {
        Self::from_toml_with_env("", None, std::env::vars())
    }

    /// Parses TOML text without environment overrides, then validates.
    pub fn from_toml(text: &str) -> Result<Config, ConfigError> {
        Self::from_toml_with_env(text, None, std::iter::empty())
    }

    /// Parses TOML text, applies the given `(name, value)` variables as
    /// overrides (only `OPUSH_<SECTION>_<KEY>` for a known section), validates.
    pub fn from_toml_with_env(
        text: &str,
        origin: Option<String>,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            origin: origin.clone(),
            message,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        let defaults =
            toml::Table::try_from(Config::default()).map_err(|e| parse_err(e.to_string()))?;
        let mut vars: Vec<(String, String)> = vars.into_iter().collect();
        vars.sort();
        for (var, value) in vars {
            let Some(rest) = var.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let rest = rest.to_ascii_lowercase();
            let Some((section, key)) = rest.split_once('_') else {
                continue;
            };
            if !SECTIONS.contains(&section) || key.is_empty() {
                continue;
            }
            let known_type = defaults
                .get(section)
                .and_then(|s| s.as_table())
                .and_then(|s| s.get(key));
            let parsed = env_value(&value, known_type);
            let entry = table
                .entry(section.to_string())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            let Some(section_table) = entry.as_table_mut() else {
                return Err(parse_err(format!("[{section}] is not a table")));
            };
            if known_type.is_none() && section != "storage" && !optional_key(section, key) {
                return Err(ConfigError::UnknownEnv { var });
            }
            section_table.insert(key.to_string(), parsed);
        }
        let config: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and cross-key consistency.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &'static str, reason: &str| {
            Err(ConfigError::Invalid {
                key,
                reason: reason.to_string(),
            })
        };
        if self.imap.port == 0 {
            return invalid("imap.port", "must not be 0");
        }
        if self.imap.timeout_ms == 0 {
            return invalid("imap.timeout_ms", "must be > 0");
        }
        if self.imap.pool_size == 0 || self.imap.pool_size > 64 {
            return invalid("imap.pool_size", "must be 1-64");
        }
        if self.imap.pool_idle_timeout_s == 0 || self.imap.pool_idle_timeout_s > 86_400 {
            return invalid("imap.pool_idle_timeout_s", "must be 1-86400 (one day)");
        }
        if self.imap.pool_grow_after_ms >= self.imap.timeout_ms {
            return invalid(
                "imap.pool_grow_after_ms",
                "must be below imap.timeout_ms (a request would give up first)",
            );
        }
        if self.imap.max_connections < self.imap.pool_size {
            return invalid("imap.max_connections", "must be >= imap.pool_size");
        }
        if self.imap.max_logins_in_flight == 0 || self.imap.max_logins_in_flight > 1024 {
            return invalid("imap.max_logins_in_flight", "must be 1-1024");
        }
        if !(1024..=1 << 31).contains(&self.imap.max_message_bytes) {
            return invalid("imap.max_message_bytes", "must be 1024-2147483648 (2 GiB)");
        }
        if !(64 * 1024..=64 << 20).contains(&self.imap.stream_chunk_bytes) {
            return invalid(
                "imap.stream_chunk_bytes",
                "must be 65536-67108864 (64 KiB-64 MiB)",
            );
        }
        if self.imap.master_user.is_some() != self.imap.master_password.is_some() {
            return invalid(
                "imap.master_user",
                "master_user and master_password go together",
            );
        }
        if self.imap.master_for_requests && self.imap.master_user.is_none() {
            return invalid(
                "imap.master_for_requests",
                "needs master_user and master_password",
            );
        }
        if self.imap.poll_interval_s == 0 {
            return invalid("imap.poll_interval_s", "must be > 0");
        }
        if self.push.max_parked == 0 {
            return invalid("push.max_parked", "must be >= 1");
        }
        if self.push.reconnect_max_s == 0 {
            return invalid("push.reconnect_max_s", "must be >= 1");
        }
        if self.smtp.port == 0 {
            return invalid("smtp.port", "must not be 0");
        }
        if self.sieve.port == 0 {
            return invalid("sieve.port", "must not be 0");
        }
        if self.sieve.timeout_ms == 0 {
            return invalid("sieve.timeout_ms", "must be > 0");
        }
        if self.sieve.tls == TlsMode::Tls {
            return invalid(
                "sieve.tls",
                "ManageSieve has no implicit TLS: none or starttls",
            );
        }
        if self.sieve.script.is_empty()
            || self
                .sieve
                .script
                .chars()
                .any(|c| c.is_control() || c == '/' || c == '"' || c == '\\')
        {
            return invalid(
                "sieve.script",
                "must be non-empty, without control characters, slashes, quotes or backslashes",
            );
        }
        if self.sieve.enabled && self.sieve.tls == TlsMode::None && !self.sieve.allow_plaintext {
            let settings = crate::backends::sieve::SieveSettings {
                host: self.sieve.host.clone(),
                port: self.sieve.port,
                starttls: false,
                ca_file: None,
                allow_plaintext: false,
                timeout: std::time::Duration::from_millis(self.sieve.timeout_ms),
            };
            if !settings.host_is_loopback() {
                return invalid(
                    "sieve.tls",
                    "passwords would go in clear to a host that is not loopback: \
                     set tls = \"starttls\" (or allow_plaintext = true)",
                );
            }
        }
        if let Err(e) = crate::origin::TrustedProxies::parse(&self.server.trusted_proxies) {
            return invalid("server.trusted_proxies", &e);
        }
        if self.server.max_in_flight == 0 {
            return invalid("server.max_in_flight", "must be >= 1");
        }
        if !(1..=3_600).contains(&self.server.header_timeout_s) {
            return invalid("server.header_timeout_s", "must be in 1..=3600");
        }
        if !(1..=86_400).contains(&self.server.keep_alive_s) {
            return invalid("server.keep_alive_s", "must be in 1..=86400");
        }
        if !(1..=86_400).contains(&self.server.retry_after_s) {
            return invalid("server.retry_after_s", "must be in 1..=86400");
        }
        if self.server.realm.trim().is_empty()
            || self
                .server
                .realm
                .chars()
                .any(|c| c == '"' || c == '\\' || c.is_control())
        {
            return invalid(
                "server.realm",
                "must be non-empty, without quotes, backslashes or control characters",
            );
        }
        if self.server.auth_cache_ttl_s > 86_400 {
            return invalid("server.auth_cache_ttl_s", "must be <= 86400 (one day)");
        }
        if self.server.auth_cache_max_entries == 0 {
            return invalid("server.auth_cache_max_entries", "must be >= 1");
        }
        if self.server.loop_max_repeats > 0 && self.server.loop_window_s == 0 {
            return invalid(
                "server.loop_window_s",
                "must be >= 1 when loop_max_repeats > 0",
            );
        }
        if self.devices.registry_write_every_s == 0 {
            return invalid("devices.registry_write_every_s", "must be >= 1");
        }
        if self.devices.max_cached_states == 0 {
            return invalid("devices.max_cached_states", "must be >= 1");
        }
        if self.devices.max_cached_states_mb == 0 {
            return invalid("devices.max_cached_states_mb", "must be >= 1");
        }
        if self.devices.window_size == 0 || self.devices.window_size > self.devices.max_window_size
        {
            return invalid("devices.window_size", "must be in 1..=max_window_size");
        }
        if self.devices.heartbeat_min_s == 0
            || self.devices.heartbeat_min_s > self.devices.heartbeat_max_s
        {
            return invalid("devices.heartbeat_min_s", "must be in 1..=heartbeat_max_s");
        }
        if self.ldap.url.is_some() && !self.ldap.filter.contains("%q") {
            return invalid("ldap.filter", "must contain %q");
        }
        if self.policy.min_device_password_length > 16 {
            return invalid(
                "policy.min_device_password_length",
                "must be <= 16 (MS-ASPROV)",
            );
        }
        for (name, level) in std::iter::once(("level", &self.logging.level))
            .chain(self.logging.loggers.iter().map(|(k, v)| (k.as_str(), v)))
        {
            if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
                return Err(ConfigError::Invalid {
                    key: "logging.level",
                    reason: format!("{name} = {level:?}: expected one of {}", LEVELS.join(", ")),
                });
            }
        }
        if let Some(name) = self
            .logging
            .loggers
            .keys()
            .find(|k| crate::obs::Logger::from_name(k).is_none())
        {
            return Err(ConfigError::Invalid {
                key: "logging.loggers",
                reason: format!(
                    "unknown logger {name:?}; known: {}",
                    crate::obs::Logger::ALL
                        .map(crate::obs::Logger::name)
                        .join(", ")
                ),
            });
        }
        if let Err(reason) = self.capture.device_pairs() {
            return Err(ConfigError::Invalid {
                key: "capture.devices",
                reason,
            });
        }
        if self.capture.ttl_s == 0 {
            return invalid("capture.ttl_s", "must be >= 1");
        }
        if !["text", "json"].contains(&self.logging.format.as_str()) {
            return invalid("logging.format", "expected text or json");
        }
        Ok(())
    }
}

/// Keys that are `None` by default (so absent from the serialized defaults).
fn optional_key(section: &str, key: &str) -> bool {
    matches!(
        (section, key),
        ("imap", "master_user" | "master_password" | "ca_file")
            | ("sieve", "ca_file")
            | ("dav", "url" | "timeout_ms")
            | ("ldap", "url" | "bind_dn" | "bind_password")
            | ("console", "host_key")
            | ("receipt", "templates")
    )
}

/// Interprets an environment value: as a string when the key is a string,
/// otherwise as a TOML value (number, bool, array, inline table), falling
/// back to a string.
fn env_value(raw: &str, known: Option<&toml::Value>) -> toml::Value {
    if let Some(toml::Value::String(_)) = known {
        return toml::Value::String(raw.to_string());
    }
    let doc = format!("v = {raw}");
    match doc.parse::<toml::Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.to_string())),
        Err(_) => toml::Value::String(raw.to_string()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn empty_file_is_the_demo_config() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8082");
        assert_eq!(c.imap.port, 1143);
        assert_eq!(c.smtp.max_message_size, 10 * 1024 * 1024);
        assert_eq!(c.console.port, 5665);
    }

    #[test]
    fn file_values_and_env_overrides() {
        let text = r#"
            [server]
            listen = "0.0.0.0:9000"
            [imap]
            host = "mail.example.test"
            tls = "starttls"
            [storage]
            backend = "cassandra"
            seeds = ["10.0.0.1:9042"]
            [logging.loggers]
            "IMAP.COMMAND" = "debug"
        "#;
        let c = Config::from_toml_with_env(
            text,
            None,
            env(&[
                ("OPUSH_IMAP_PORT", "993"),
                ("OPUSH_IMAP_TLS", "tls"),
                ("OPUSH_IMAP_LOGIN_WITH_DOMAIN", "false"),
                ("OPUSH_IMAP_MASTER_USER", "master"),
                ("OPUSH_IMAP_MASTER_PASSWORD", "12345"),
                ("OPUSH_STORAGE_KEYSPACE", "opush_test"),
                ("OPUSH_DEVICES_ALLOW_UNKNOWN", "false"),
                ("OPUSH_DEMO_PASSWORD", "ignored: not a section"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.imap.host, "mail.example.test");
        assert_eq!(c.imap.port, 993);
        assert_eq!(c.imap.tls, TlsMode::Tls);
        assert!(!c.imap.login_with_domain);
        assert_eq!(c.imap.master_user.as_deref(), Some("master"));
        assert_eq!(
            c.imap.master_password.as_ref().map(Secret::expose),
            Some("12345")
        );
        assert_eq!(c.storage["backend"].as_str(), Some("cassandra"));
        assert_eq!(c.storage["keyspace"].as_str(), Some("opush_test"));
        assert_eq!(c.logging.loggers["IMAP.COMMAND"], "debug");
        assert!(!c.devices.allow_unknown);
    }

    #[test]
    fn secrets_never_print() {
        let mut c = Config::default();
        c.imap.master_user = Some("m".into());
        c.imap.master_password = Some(Secret::new("hunter2"));
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("hunter2"), "{dbg}");
        assert_eq!(format!("{}", Secret::new("hunter2")), "*");
        let ser = toml::to_string(&c).unwrap();
        assert!(!ser.contains("hunter2"), "{ser}");
    }

    #[test]
    fn operational_knobs_reach_the_server_and_bad_values_are_refused() {
        let c = Config::from_toml_with_env(
            "[server]\nretry_after_s = 7\nrealm = \"Mail at Example\"\nloop_max_repeats = 5\n\
             loop_window_s = 20\nauth_cache_ttl_s = 0\n\
             [devices]\nregistry_write_every_s = 300\nmax_cached_states = 50\nsnapshot_every = 0\n",
            None,
            env(&[("OPUSH_SERVER_AUTH_CACHE_MAX_ENTRIES", "10")]),
        )
        .unwrap();
        let http = crate::serve::http_settings(&c);
        assert_eq!(http.retry_after, std::time::Duration::from_secs(7));
        assert_eq!(http.realm, "Mail at Example");
        assert_eq!(http.loop_max_repeats, 5);
        assert_eq!(http.loop_window, std::time::Duration::from_secs(20));
        assert_eq!(http.auth_cache_ttl, std::time::Duration::ZERO);
        assert_eq!(http.auth_cache_max_entries, 10);
        assert_eq!(c.devices.registry_write_every_s, 300);
        assert_eq!(c.devices.max_cached_states, 50);
        assert_eq!(c.devices.snapshot_every, 0);
        // The defaults are what the server used before they were keys.
        let d = crate::serve::http_settings(&Config::default());
        assert_eq!(d.retry_after, std::time::Duration::from_secs(30));
        assert_eq!((d.loop_max_repeats, d.realm.as_str()), (30, "opush"));
        for (toml, key) in [
            ("[server]\nretry_after_s = 0", "server.retry_after_s"),
            ("[server]\nrealm = \"a\\\"b\"", "server.realm"),
            ("[server]\nrealm = \" \"", "server.realm"),
            (
                "[server]\nauth_cache_ttl_s = 100000",
                "server.auth_cache_ttl_s",
            ),
            (
                "[server]\nauth_cache_max_entries = 0",
                "server.auth_cache_max_entries",
            ),
            ("[server]\nloop_window_s = 0", "server.loop_window_s"),
            (
                "[server]\ntrusted_proxies = [\"10.1.2.3/8\"]",
                "server.trusted_proxies",
            ),
            (
                "[server]\ntrusted_proxies = [\"proxy.example\"]",
                "server.trusted_proxies",
            ),
            (
                "[devices]\nregistry_write_every_s = 0",
                "devices.registry_write_every_s",
            ),
            (
                "[devices]\nmax_cached_states = 0",
                "devices.max_cached_states",
            ),
        ] {
            match Config::from_toml(toml) {
                Err(ConfigError::Invalid { key: k, .. }) => assert_eq!(k, key, "{toml}"),
                other => panic!("{toml}: {other:?}"),
            }
        }
        // Trusted proxies: addresses and networks, IPv4 and IPv6; the HTTP
        // layer gets them parsed.
        let c =
            Config::from_toml("[server]\ntrusted_proxies = [\"10.0.0.5\", \"fd00::/8\"]").unwrap();
        let proxies = crate::serve::http_settings(&c).trusted_proxies;
        assert!(proxies.trusts("10.0.0.5".parse().unwrap()));
        assert!(proxies.trusts("fd00::1".parse().unwrap()));
        assert!(!proxies.trusts("10.0.0.6".parse().unwrap()));
        assert!(Config::default().imap.forward_client_ip);
        // The loop detector may be off with any window.
        assert!(Config::from_toml("[server]\nloop_max_repeats = 0\nloop_window_s = 0").is_ok());
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(
            Config::from_toml("[imap]\nport = \"x\""),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_toml("[imap]\nprot = 1"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_toml("[nope]\na = 1"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_toml("[imap]\nport = 70000"),
            Err(ConfigError::Parse { .. })
        ));
        assert!(matches!(
            Config::from_toml("[devices]\nwindow_size = 1000"),
            Err(ConfigError::Invalid {
                key: "devices.window_size",
                ..
            })
        ));
        assert!(matches!(
            Config::from_toml("[logging]\nlevel = \"loud\""),
            Err(ConfigError::Invalid {
                key: "logging.level",
                ..
            })
        ));
        assert!(matches!(
            Config::from_toml("[logging.loggers]\nimap = \"debug\""),
            Err(ConfigError::Invalid {
                key: "logging.loggers",
                ..
            })
        ));
        assert!(matches!(
            Config::from_toml("[imap]\nmaster_user = \"m\""),
            Err(ConfigError::Invalid {
                key: "imap.master_user",
                ..
            })
        ));
        assert!(matches!(
            Config::from_toml("[imap]\nmaster_for_requests = true"),
            Err(ConfigError::Invalid {
                key: "imap.master_for_requests",
                ..
            })
        ));
        assert!(matches!(
            Config::from_toml_with_env("", None, env(&[("OPUSH_IMAP_HOSTNAME", "x")])),
            Err(ConfigError::UnknownEnv { .. })
        ));
        assert!(matches!(
            Config::load("/nonexistent/opush.toml"),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn imap_pool_bounds_are_validated() {
        let key = |toml: &str| match Config::from_toml(toml) {
            Err(ConfigError::Invalid { key, .. }) => Some(key),
            Ok(_) => None,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(key("[imap]\npool_size = 0"), Some("imap.pool_size"));
        assert_eq!(key("[imap]\npool_size = 65"), Some("imap.pool_size"));
        assert_eq!(
            key("[imap]\npool_idle_timeout_s = 0"),
            Some("imap.pool_idle_timeout_s")
        );
        assert_eq!(
            key("[imap]\ntimeout_ms = 100\npool_grow_after_ms = 100"),
            Some("imap.pool_grow_after_ms")
        );
        assert_eq!(
            key("[imap]\npool_size = 8\nmax_connections = 7"),
            Some("imap.max_connections")
        );
        assert_eq!(
            key("[imap]\nmax_logins_in_flight = 0"),
            Some("imap.max_logins_in_flight")
        );
        assert_eq!(
            key("[imap]\nmax_message_bytes = 1023"),
            Some("imap.max_message_bytes")
        );
        assert_eq!(
            key("[imap]\nstream_chunk_bytes = 1000"),
            Some("imap.stream_chunk_bytes")
        );
        assert_eq!(
            key("[imap]\nmax_message_bytes = 2147483649"),
            Some("imap.max_message_bytes")
        );
        let ok = Config::from_toml(
            "[imap]\npool_size = 2\npool_grow_after_ms = 0\nmax_connections = 2\nmax_logins_in_flight = 1",
        )
        .unwrap();
        assert_eq!(
            (
                ok.imap.pool_size,
                ok.imap.max_connections,
                ok.imap.max_logins_in_flight
            ),
            (2, 2, 1)
        );
    }

    #[test]
    fn sieve_is_off_by_default_and_keeps_passwords_off_the_network_in_clear() {
        let c = Config::default();
        assert!(!c.sieve.enabled);
        let c = Config::from_toml("[sieve]\nenabled = true\nport = 1190\n").unwrap();
        assert_eq!((c.sieve.host.as_str(), c.sieve.port), ("127.0.0.1", 1190));
        let invalid = |toml: &str| match Config::from_toml(toml) {
            Err(ConfigError::Invalid { key, .. }) => key,
            other => panic!("{toml}: {other:?}"),
        };
        assert_eq!(
            invalid("[sieve]\nenabled = true\nhost = \"mail.example.org\"\n"),
            "sieve.tls"
        );
        assert_eq!(invalid("[sieve]\ntls = \"tls\"\n"), "sieve.tls");
        assert_eq!(invalid("[sieve]\nscript = \"a/b\"\n"), "sieve.script");
        assert_eq!(invalid("[sieve]\ntimeout_ms = 0\n"), "sieve.timeout_ms");
        for ok in [
            "[sieve]\nenabled = true\nhost = \"mail.example.org\"\ntls = \"starttls\"\n",
            "[sieve]\nenabled = true\nhost = \"10.0.0.2\"\nallow_plaintext = true\n",
            "[sieve]\nenabled = true\nhost = \"::1\"\n",
        ] {
            Config::from_toml(ok).unwrap();
        }
    }

    #[test]
    fn documented_keys_match_the_model() {
        // Every key of the model appears in docs/CONFIGURATION.md as `section.key`.
        let doc = include_str!("../../docs/CONFIGURATION.md");
        let mut c = Config::default();
        c.imap.master_user = Some(String::new());
        c.imap.master_password = Some(Secret::default());
        c.imap.ca_file = Some(PathBuf::new());
        c.sieve.ca_file = Some(PathBuf::new());
        c.dav.url = Some(String::new());
        c.dav.timeout_ms = Some(0);
        c.ldap.url = Some(String::new());
        c.ldap.bind_dn = Some(String::new());
        c.ldap.bind_password = Some(Secret::default());
        c.console.host_key = Some(PathBuf::new());
        let t = toml::Table::try_from(c).unwrap();
        let mut missing = Vec::new();
        for (section, keys) in &t {
            for key in keys.as_table().into_iter().flat_map(|k| k.keys()) {
                let name = format!("`{section}.{key}`");
                if !doc.contains(&name) {
                    missing.push(name);
                }
            }
        }
        assert!(missing.is_empty(), "undocumented keys: {missing:?}");
    }
}
