//! IMAP backend connector: login (credential check), folders, mailbox state
//! and CONDSTORE/QRESYNC changes, message metadata and content, mutations,
//! IDLE, and a per-user connection pool.
//!
//! Built on `async-imap` (tokio). Commands whose responses `async-imap` does
//! not model (CHANGEDSINCE … VANISHED, LIST … RETURN, partial FETCH,
//! APPENDUID/COPYUID, UNCHANGEDSINCE, SEARCH CHARSET with literals, IDLE with
//! a deadline) are sent as raw commands through its `run_command` /
//! `read_response` API and their `imap-proto` responses read here.
//!
//! Must not: depend on `opush-engine`/`opush-protocol`, log or store
//! passwords, panic on server input, wait without a `tokio::time` timeout.
//! Mailbox arguments are *raw* (modified UTF-7) names as returned in
//! [`Folder::raw_name`]; use [`utf7::encode`] to build new ones.

pub mod ahead;
pub(crate) mod parse;
pub mod pool;
mod session;
pub mod stream;
pub mod utf7;
mod view;
pub mod wire;

use std::collections::HashSet;
use std::time::Duration;

use async_imap::error::Error as AsyncImapError;
use async_imap::imap_proto;
use thiserror::Error;
use tokio::net::TcpStream;

use crate::config::{ImapConfig, Secret, TlsMode};
use crate::origin::ClientAddr;
use stream::ImapStream;

pub use parse::{format_date_time, format_search_date, parse_internal_date};
pub use pool::{ImapPool, PooledSession};
pub use session::Session;
pub use view::MailboxView;

/// A map keyed by UID: the sync path builds and probes several per window
/// (metadata, bodies, a listing of the whole mailbox), and SipHash, the
/// standard map's hasher, cost more than the lookups themselves. UIDs
/// come from the user's own IMAP server, and foldhash is still seeded per
/// process.
pub type UidMap<V> = std::collections::HashMap<u32, V, foldhash::fast::RandomState>;

/// A set of UIDs ([`UidMap`]'s hasher).
pub type UidSet = std::collections::HashSet<u32, foldhash::fast::RandomState>;

/// Everything that can go wrong talking to the IMAP server.
#[derive(Debug, Error)]
pub enum ImapError {
    /// The server rejected the credentials (a real authentication failure: HTTP 401).
    #[error("IMAP authentication failed for {user}")]
    Auth {
        /// Login name (never the password).
        user: String,
    },
    /// Connect, I/O, timeout or server-side outage: retryable.
    #[error("IMAP server unavailable: {0}")]
    Unavailable(String),
    /// The server answered something this client cannot interpret, or BAD.
    #[error("IMAP protocol error: {0}")]
    Protocol(String),
    /// Mailbox or message does not exist.
    #[error("IMAP mailbox or message not found: {0}")]
    NotFound(String),
    /// The mailbox already exists.
    #[error("IMAP mailbox already exists: {0}")]
    AlreadyExists(String),
    /// The server refused the command (NO) for another reason.
    #[error("IMAP server refused {command}: {text}")]
    Rejected {
        /// Command name.
        command: &'static str,
        /// Server text.
        text: String,
    },
    /// The message exceeds the size the caller accepts.
    #[error("message of {size} bytes exceeds the limit of {limit}")]
    TooLarge {
        /// Message size.
        size: u64,
        /// Limit.
        limit: u64,
    },
    /// The server lacks a needed extension, or the configuration asks for
    /// something not implemented (e.g. TLS).
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// The caller passed a value that cannot be sent (bad keyword, CRLF in a name…).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A command that changes the mailbox was not sent: the request could
    /// not prove it still holds its device's lease (`crate::fence`).
    #[error("IMAP {0}")]
    Fenced(crate::fence::Fenced),
}

impl ImapError {
    /// Whether retrying later (on a new connection) may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ImapError::Unavailable(_))
    }

    /// A short name of the kind of failure, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            ImapError::Auth { .. } => "auth",
            ImapError::Unavailable(_) => "unavailable",
            ImapError::Protocol(_) => "protocol",
            ImapError::NotFound(_) => "not_found",
            ImapError::AlreadyExists(_) => "already_exists",
            ImapError::Rejected { .. } => "rejected",
            ImapError::TooLarge { .. } => "too_large",
            ImapError::Unsupported(_) => "unsupported",
            ImapError::InvalidInput(_) => "invalid_input",
            ImapError::Fenced(_) => "fenced",
        }
    }
}

/// Role of a folder, from SPECIAL-USE (RFC 6154), or configured names as fallback.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpecialUse {
    /// INBOX.
    Inbox,
    /// `\Drafts`.
    Drafts,
    /// `\Sent`.
    Sent,
    /// `\Trash`.
    Trash,
    /// `\Junk`.
    Junk,
    /// `\Archive`.
    Archive,
}

/// STATUS of a mailbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FolderStatus {
    /// MESSAGES.
    pub messages: u32,
    /// UIDNEXT.
    pub uidnext: u32,
    /// UIDVALIDITY.
    pub uidvalidity: u32,
    /// UNSEEN.
    pub unseen: u32,
    /// HIGHESTMODSEQ (CONDSTORE servers).
    pub highestmodseq: Option<u64>,
}

/// A mailbox from LIST.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// Display name (modified UTF-7 decoded; the raw name if it does not decode).
    pub name: String,
    /// Name on the wire (modified UTF-7): the identity to pass back to this module.
    pub raw_name: String,
    /// Hierarchy delimiter.
    pub delimiter: Option<char>,
    /// Role, if any.
    pub special: Option<SpecialUse>,
    /// Raw name of the parent mailbox, if the name has a delimiter.
    pub parent: Option<String>,
    /// Name attributes as sent (`\HasNoChildren`, `\Sent`, …).
    pub attributes: Vec<String>,
    /// Subscribed (LSUB / `\Subscribed`).
    pub subscribed: bool,
    /// Not `\Noselect` / `\NonExistent`.
    pub selectable: bool,
    /// STATUS, when listed with status.
    pub status: Option<FolderStatus>,
}

impl Folder {
    /// Leaf display name (after the last delimiter).
    pub fn leaf_name(&self) -> &str {
        match self.delimiter {
            Some(d) => self.name.rsplit(d).next().unwrap_or(&self.name),
            None => &self.name,
        }
    }

    /// Raw name of a new child folder with display name `display`.
    pub fn child_raw_name(&self, display: &str) -> String {
        match self.delimiter {
            Some(d) => format!("{}{d}{}", self.raw_name, utf7::encode(display)),
            None => utf7::encode(display),
        }
    }
}

/// SELECT/EXAMINE result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MailboxState {
    /// UIDVALIDITY: when it changes every cached UID is void.
    pub uidvalidity: u32,
    /// UIDNEXT.
    pub uidnext: u32,
    /// HIGHESTMODSEQ; `None` without CONDSTORE (or `NOMODSEQ`).
    pub highestmodseq: Option<u64>,
    /// EXISTS.
    pub exists: u32,
}

/// Message flags (system flags, `$Forwarded`, other keywords = categories).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Flags {
    /// `\Seen`.
    pub seen: bool,
    /// `\Flagged`.
    pub flagged: bool,
    /// `\Answered`.
    pub answered: bool,
    /// `\Deleted`.
    pub deleted: bool,
    /// `\Draft`.
    pub draft: bool,
    /// `$Forwarded`.
    pub forwarded: bool,
    /// Other keywords (EAS Categories), as sent.
    pub keywords: Vec<String>,
}

impl Flags {
    fn from_imap<'a>(names: impl IntoIterator<Item = &'a str>) -> Flags {
        let mut f = Flags::default();
        for n in names {
            match n.to_ascii_lowercase().as_str() {
                "\\seen" => f.seen = true,
                "\\flagged" => f.flagged = true,
                "\\answered" => f.answered = true,
                "\\deleted" => f.deleted = true,
                "\\draft" => f.draft = true,
                "$forwarded" => f.forwarded = true,
                "\\recent" => {}
                _ if n.starts_with('\\') => {}
                _ => f.keywords.push(n.to_string()),
            }
        }
        f
    }
}

/// A flag to set or clear.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Flag {
    /// `\Seen`.
    Seen,
    /// `\Flagged`.
    Flagged,
    /// `\Answered`.
    Answered,
    /// `\Deleted`.
    Deleted,
    /// `\Draft`.
    Draft,
    /// `$Forwarded`.
    Forwarded,
    /// A keyword (must be an IMAP atom).
    Keyword(String),
}

impl Flag {
    fn to_imap(&self) -> Result<String, ImapError> {
        Ok(match self {
            Flag::Seen => "\\Seen".into(),
            Flag::Flagged => "\\Flagged".into(),
            Flag::Answered => "\\Answered".into(),
            Flag::Deleted => "\\Deleted".into(),
            Flag::Draft => "\\Draft".into(),
            Flag::Forwarded => "$Forwarded".into(),
            Flag::Keyword(k) if parse::is_atom(k) => k.clone(),
            Flag::Keyword(k) => {
                return Err(ImapError::InvalidInput(format!(
                    "keyword {k:?} is not an IMAP atom"
                )));
            }
        })
    }
}

/// Metadata of one message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageMeta {
    /// UID.
    pub uid: u32,
    /// Flags.
    pub flags: Flags,
    /// INTERNALDATE, Unix seconds ([`MessageMeta::UNDATED`]: not asked).
    pub internal_date: i64,
    /// RFC822.SIZE.
    pub size: u32,
    /// MODSEQ (CONDSTORE).
    pub modseq: Option<u64>,
}

impl MessageMeta {
    /// `internal_date` of a listing made without INTERNALDATE (Dovecot
    /// formats each one with a `localtime()` that, without `TZ` in its
    /// environment, stats /etc/localtime: two thirds of a 10,000-message
    /// listing's time).
    pub const UNDATED: i64 = i64::MIN;

    /// Whether `internal_date` was fetched.
    pub fn is_dated(&self) -> bool {
        self.internal_date != Self::UNDATED
    }
}

/// What changed in a mailbox since a MODSEQ.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Changes {
    /// The mailbox as the query saw it (its highest mod-sequence, when
    /// known, raised to the largest MODSEQ in `changed`).
    pub state: MailboxView,
    /// New or changed messages.
    pub changed: Vec<MessageMeta>,
    /// UIDs expunged since (QRESYNC `VANISHED (EARLIER)`), as the server's
    /// ranges sorted by start: they may name UIDs that never existed.
    pub vanished: Vec<std::ops::RangeInclusive<u32>>,
}

/// One MIME part from BODYSTRUCTURE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BodyPart {
    /// IMAP section number (`"1"`, `"2.1"`; `""` for a multipart root).
    pub section: String,
    /// `type/subtype`, lower case.
    pub mime_type: String,
    /// Content-Type parameters (names lower case).
    pub params: Vec<(String, String)>,
    /// Content-ID.
    pub content_id: Option<String>,
    /// Content-Description.
    pub description: Option<String>,
    /// Content-Transfer-Encoding, lower case.
    pub encoding: String,
    /// Encoded size in octets.
    pub size: u32,
    /// Lines (text and message parts).
    pub lines: Option<u32>,
    /// Content-Disposition type (`attachment`, `inline`), lower case.
    pub disposition: Option<String>,
    /// Content-Disposition parameters.
    pub disposition_params: Vec<(String, String)>,
    /// Sub-parts.
    pub children: Vec<BodyPart>,
}

impl BodyPart {
    /// The part's file name (disposition `filename` or type `name`).
    pub fn filename(&self) -> Option<&str> {
        self.disposition_params
            .iter()
            .chain(self.params.iter())
            .find(|(k, _)| k == "filename" || k == "name")
            .map(|(_, v)| v.as_str())
    }

    /// All leaf parts, depth first.
    pub fn leaves(&self) -> Vec<&BodyPart> {
        if self.children.is_empty() {
            vec![self]
        } else {
            self.children.iter().flat_map(BodyPart::leaves).collect()
        }
    }

    /// The part with the given section number.
    pub fn find(&self, section: &str) -> Option<&BodyPart> {
        if self.section == section {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(section))
    }
}

/// Envelope-ish headers and structure of a message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MessageHeaders {
    /// UID.
    pub uid: u32,
    /// Unfolded header fields as sent (RFC 2047 not decoded), in order.
    pub fields: Vec<(String, String)>,
    /// BODYSTRUCTURE.
    pub body: BodyPart,
}

impl MessageHeaders {
    /// First value of a header field (case-insensitive name).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The header fields [`Session::fetch_headers`] asks for.
pub const HEADER_FIELDS: &[&str] = &[
    "From",
    "To",
    "Cc",
    "Reply-To",
    "Subject",
    "Date",
    "Message-ID",
    "In-Reply-To",
    "References",
    "Importance",
    "X-Priority",
    "Content-Type",
];

/// Criteria of [`Session::search`]; all given criteria must match.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SearchQuery {
    /// SUBJECT contains.
    pub subject: Option<String>,
    /// FROM contains.
    pub from: Option<String>,
    /// TO contains.
    pub to: Option<String>,
    /// BODY contains.
    pub body: Option<String>,
    /// TEXT (headers or body) contains.
    pub text: Option<String>,
    /// Internal date on or after this day (Unix seconds).
    pub since: Option<i64>,
    /// Internal date before this day (Unix seconds).
    pub before: Option<i64>,
}

/// Result of [`Session::idle_wait`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdleOutcome {
    /// The server reported a change (EXISTS, EXPUNGE, FETCH, VANISHED).
    Changed,
    /// Nothing happened before the deadline.
    Timeout,
    /// A folder was created, deleted, renamed or (un)subscribed (NOTIFY
    /// with folder events), possibly besides message changes.
    Hierarchy,
}

/// Result of a conditional STORE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoreOutcome {
    /// UIDs not changed because their MODSEQ was above UNCHANGEDSINCE.
    pub modified: Vec<u32>,
}

/// Entry point: logins. Holds no state; see [`ImapPool`] for pooling.
#[derive(Debug, Clone, Copy)]
pub struct ImapClient;

impl ImapClient {
    /// Connects and logs in as `user` (credential check for Basic auth).
    ///
    /// `Auth` means the server said the credentials are wrong; `Unavailable`
    /// means it could not be asked (connection refused, timeout, auth backend down).
    pub async fn login(
        cfg: &ImapConfig,
        user: &str,
        password: &Secret,
    ) -> Result<Session, ImapError> {
        Self::login_for(cfg, user, password, None).await
    }

    /// [`ImapClient::login`] for a request of the device at `client`: with
    /// `[imap] forward_client_ip` and a server that advertises ID, an ID
    /// command naming that address goes before LOGIN (`session::id_command`).
    pub async fn login_for(
        cfg: &ImapConfig,
        user: &str,
        password: &Secret,
        client: Option<ClientAddr>,
    ) -> Result<Session, ImapError> {
        let name = login_name(cfg, user);
        Self::login_as(cfg, &name, password, user, client).await
    }

    /// Logs in as `user` through the configured master user (`user*master`).
    pub async fn login_master(cfg: &ImapConfig, user: &str) -> Result<Session, ImapError> {
        let (Some(master), Some(password)) = (&cfg.master_user, &cfg.master_password) else {
            return Err(ImapError::Unsupported(
                "no [imap] master_user configured".into(),
            ));
        };
        let name = format!(
            "{}{}{}",
            login_name(cfg, user),
            cfg.master_separator,
            master
        );
        // The master user is opush's own identity: its logins (background
        // work, or requests under `master_for_requests`) name no device.
        Self::login_as(cfg, &name, password, user, None).await
    }

    async fn login_as(
        cfg: &ImapConfig,
        login: &str,
        password: &Secret,
        user: &str,
        client: Option<ClientAddr>,
    ) -> Result<Session, ImapError> {
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let addr = (cfg.host.as_str(), cfg.port);
        let tcp = match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Err(_) => {
                return Err(ImapError::Unavailable(format!(
                    "connect to {}:{} timed out",
                    cfg.host, cfg.port
                )))
            }
            Ok(Err(e)) => {
                return Err(ImapError::Unavailable(format!(
                    "connect to {}:{}: {e}",
                    cfg.host, cfg.port
                )))
            }
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        // Whether the server takes ID (RFC 2971): from the greeting's
        // capabilities; a greeting that lists none gets no ID (it would
        // cost a CAPABILITY round trip).
        let (conn, greeting_caps, id_ok) = match cfg.tls {
            TlsMode::None => {
                let mut conn = async_imap::Client::new(ImapStream::Plain(tcp));
                let caps = read_greeting(&mut conn, timeout).await?;
                let id_ok = caps.contains("ID");
                (conn, caps, id_ok)
            }
            TlsMode::Tls => {
                let tls = tokio::time::timeout(timeout, stream::tls_handshake(cfg, tcp))
                    .await
                    .map_err(|_| ImapError::Unavailable("TLS handshake timed out".into()))??;
                let mut conn = async_imap::Client::new(tls);
                let caps = read_greeting(&mut conn, timeout).await?;
                let id_ok = caps.contains("ID");
                (conn, caps, id_ok)
            }
            TlsMode::Starttls => {
                let mut plain = async_imap::Client::new(ImapStream::Plain(tcp));
                // Its capabilities are void after STARTTLS (RFC 3501
                // 6.2.1): LOGIN then goes without them. Whether it takes
                // ID is still known from them: an attacker who removed it
                // would only make opush skip the ID.
                let id_ok = read_greeting(&mut plain, timeout).await?.contains("ID");
                let starttls = plain.run_command_and_check_ok("STARTTLS", None);
                match tokio::time::timeout(timeout, starttls).await {
                    Err(_) => return Err(ImapError::Unavailable("STARTTLS timed out".into())),
                    Ok(Err(AsyncImapError::Io(e))) => {
                        return Err(ImapError::Unavailable(format!("STARTTLS: {e}")))
                    }
                    Ok(Err(e)) => {
                        return Err(ImapError::Unsupported(format!(
                            "server refused STARTTLS: {e}"
                        )))
                    }
                    Ok(Ok(())) => {}
                }
                let ImapStream::Plain(tcp) = plain.into_inner() else {
                    return Err(ImapError::Protocol("STARTTLS on a TLS stream".into()));
                };
                let tls = tokio::time::timeout(timeout, stream::tls_handshake(cfg, tcp))
                    .await
                    .map_err(|_| ImapError::Unavailable("TLS handshake timed out".into()))??;
                (async_imap::Client::new(tls), HashSet::new(), id_ok)
            }
        };
        let id = client
            .filter(|_| cfg.forward_client_ip && id_ok)
            .map(session::id_command);
        // `async-imap` read the greeting (and STARTTLS) and left nothing
        // unread: the server sends nothing more until asked.
        Session::login(
            conn.into_inner(),
            cfg,
            greeting_caps,
            login,
            password,
            user.to_string(),
            id,
        )
        .await
    }
}

/// Reads the server's greeting: the capabilities it lists (`* OK
/// [CAPABILITY …]`, empty when it lists none), or an error for a BYE.
async fn read_greeting(
    client: &mut async_imap::Client<ImapStream>,
    timeout: Duration,
) -> Result<HashSet<String>, ImapError> {
    let greeting = tokio::time::timeout(timeout, client.read_response())
        .await
        .map_err(|_| ImapError::Unavailable("no IMAP greeting before timeout".into()))?
        .map_err(|e| ImapError::Unavailable(format!("reading greeting: {e}")))?
        .ok_or_else(|| ImapError::Unavailable("connection closed before greeting".into()))?;
    if let imap_proto::Response::Data {
        status: imap_proto::Status::Bye,
        ..
    } = greeting.parsed()
    {
        return Err(ImapError::Unavailable("server greeted with BYE".into()));
    }
    Ok(match greeting.parsed() {
        imap_proto::Response::Data { outcome, .. } => match &outcome.code {
            Some(imap_proto::ResponseCode::Capabilities(list)) => session::capability_names(list),
            _ => HashSet::new(),
        },
        _ => HashSet::new(),
    })
}

/// The login name for `user` under `login_with_domain`.
pub fn login_name(cfg: &ImapConfig, user: &str) -> String {
    if cfg.login_with_domain {
        user.to_string()
    } else {
        user.split('@').next().unwrap_or(user).to_string()
    }
}
