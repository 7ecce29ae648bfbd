//! An authenticated IMAP connection and every operation the server needs.
//!
//! Each command runs under the configured timeout (`tokio::time`); after a
//! timeout or I/O error the session is marked broken and must not be reused
//! (the pool drops it). Must not: log command text (it may carry data a
//! user typed), panic on a server reply, allocate from unchecked server counts.

use std::collections::HashSet;
use std::ops::RangeInclusive;
use std::time::Duration;

use super::parse::{self, quote, uid_set};
use super::stream::ImapStream;
use super::utf7;
use super::view::{MailboxView, OwnChange, Tracker};
use super::wire;
use super::{
    Changes, Flag, Flags, Folder, FolderStatus, IdleOutcome, ImapError, MailboxState,
    MessageHeaders, MessageMeta, SearchQuery, SpecialUse, StoreOutcome, HEADER_FIELDS,
};
use crate::config::{ImapConfig, Secret};
use crate::origin::ClientAddr;
use async_imap::imap_proto;
use async_imap::imap_proto::{
    AttributeValue, MailboxDatum, NameAttribute, Response, ResponseCode, StatusAttribute,
};

/// Most UIDs accepted in one server-sent set (VANISHED, COPYUID, MODIFIED).
const MAX_UID_SET: usize = 10_000_000;

/// Reads one response ([`wire::Conn::next`]). I/O problems are
/// `Unavailable`, unparsable data `Protocol`.
macro_rules! read_next {
    ($inner:expr) => {
        async {
            match $inner.next().await {
                Ok(Some(r)) => Ok(r),
                Ok(None) => Err(ImapError::Unavailable("connection closed by server".into())),
                Err(e) => Err(io_error(e)),
            }
        }
    };
}

/// A piece of a command: text, or a literal (`{n}` + bytes).
#[derive(Debug, PartialEq, Eq)]
enum Part<'a> {
    Text(String),
    Literal(&'a [u8]),
}

/// The largest literal a LITERAL- server takes non-synchronizing (RFC 7888
/// §4: bigger ones must wait for the `+`; Dovecot ends the connection with
/// `* BYE [TOOBIG]` on a bigger `{n+}`).
const LITERAL_MINUS_MAX: usize = 4096;

/// How the server takes literals (RFC 7888), from its capabilities: every
/// literal a command carries goes by this (`Part::Literal` in
/// `Session::exec_inner`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LiteralMode {
    /// Neither LITERAL+ nor LITERAL-: `{n}`, bytes after the server's `+`.
    Sync,
    /// LITERAL- only: `{n+}` up to [`LITERAL_MINUS_MAX`] bytes, `{n}` above.
    Minus,
    /// LITERAL+ (it wins when both are advertised): always `{n+}`.
    Plus,
}

impl LiteralMode {
    /// The mode a server with capabilities `caps` (upper case) allows.
    fn of(caps: &HashSet<String>) -> LiteralMode {
        if caps.contains("LITERAL+") {
            LiteralMode::Plus
        } else if caps.contains("LITERAL-") {
            LiteralMode::Minus
        } else {
            LiteralMode::Sync
        }
    }

    /// Whether a literal of `len` bytes goes non-synchronizing (`{n+}`,
    /// the bytes right after the line, no round trip).
    fn non_synchronizing(self, len: usize) -> bool {
        match self {
            LiteralMode::Plus => true,
            LiteralMode::Minus => len <= LITERAL_MINUS_MAX,
            LiteralMode::Sync => false,
        }
    }
}

/// A capability list as names in upper case (`AUTH=PLAIN`, `LITERAL-` …).
pub(super) fn capability_names(list: &[imap_proto::Capability<'_>]) -> HashSet<String> {
    list.iter()
        .map(|c| match c {
            imap_proto::Capability::Imap4rev1 => "IMAP4REV1".to_string(),
            imap_proto::Capability::Auth(a) => format!("AUTH={}", a.to_ascii_uppercase()),
            imap_proto::Capability::Atom(a) => a.to_ascii_uppercase(),
        })
        .collect()
}

/// The pieces of `LOGIN login password` (RFC 3501 `astring`s): a quoted
/// string (`"` and `\` escaped) for printable ASCII, otherwise a literal of
/// the UTF-8 bytes (non-ASCII, controls such as TAB). A literal goes as the
/// capabilities of the server's greeting allow (LITERAL+ or LITERAL-:
/// `{n+}`, no round trip); without them (none in the greeting, or after
/// STARTTLS, which voids them) synchronizing, so a server without either
/// works too. `None` when a NUL, CR or LF makes the value impossible to
/// send (RFC 3501: no string may carry NUL; CR/LF would be taken apart).
fn login_command<'a>(login: &'a str, password: &'a str) -> Option<Vec<Part<'a>>> {
    if [login, password]
        .iter()
        .any(|v| v.contains(['\r', '\n', '\0']))
    {
        return None;
    }
    let mut parts = vec![Part::Text("LOGIN ".into())];
    for (i, v) in [login, password].into_iter().enumerate() {
        if i > 0 {
            parts.push(Part::Text(" ".into()));
        }
        match quote(v) {
            Ok(q) => parts.push(Part::Text(q)),
            Err(_) => parts.push(Part::Literal(v.as_bytes())),
        }
    }
    Some(parts)
}

/// `ID ("x-originating-ip" "<ip>" "x-originating-port" "<port>")` (RFC
/// 2971; the port only when known) naming the device a login is made for:
/// an IMAP server that trusts opush (Dovecot's `login_trusted_networks`)
/// then logs that address and keeps its per-IP auth penalty for it instead
/// of for opush's address. Servers that do not trust opush ignore the
/// fields. IPv6 addresses go without brackets, as Dovecot parses them.
pub(super) fn id_command(client: ClientAddr) -> String {
    let mut cmd = String::with_capacity(96);
    cmd.push_str("ID (\"x-originating-ip\" ");
    // An IP address is printable ASCII without `"` or `\`: quoted as is.
    push_quoted(&mut cmd, &client.ip.to_string());
    if let Some(port) = client.port {
        cmd.push_str(" \"x-originating-port\" ");
        push_quoted(&mut cmd, &port.to_string());
    }
    cmd.push(')');
    cmd
}

fn push_quoted(out: &mut String, v: &str) {
    match quote(v) {
        Ok(q) => out.push_str(&q),
        // Not reached for an address or a number; NIL keeps the command valid.
        Err(_) => out.push_str("NIL"),
    }
}

/// Owned summary of a command's tagged OK.
#[derive(Debug, Default)]
struct Done {
    text: String,
    append_uid: Option<u32>,
    copy_uids: Vec<(u32, u32)>,
    /// A `[CAPABILITY …]` response code (LOGIN's OK carries one on most
    /// servers: the capabilities after login).
    caps: Option<HashSet<String>>,
}

/// Receives each untagged response of a command as it arrives.
type Handler<'h> = &'h mut (dyn FnMut(&Response<'_>) -> Result<(), ImapError> + Send);

/// Whether the command `what` (as `Session::exec` names it) changes a
/// mailbox: the backend effects fenced by a request's device lease.
fn changes_mailbox(what: &str) -> bool {
    matches!(
        what,
        "APPEND"
            | "STORE"
            | "UID STORE"
            | "UID MOVE"
            | "UID COPY"
            | "EXPUNGE"
            | "UID EXPUNGE"
            | "CREATE"
            | "DELETE"
            | "RENAME"
            | "SUBSCRIBE"
            | "UNSUBSCRIBE"
    )
}

fn ignore(_: &Response<'_>) -> Result<(), ImapError> {
    Ok(())
}

/// COPYUID pairs of a response code, bounded by `limit`.
fn copy_uids(code: Option<&ResponseCode<'_>>, limit: usize) -> Result<Vec<(u32, u32)>, ImapError> {
    match code {
        Some(ResponseCode::CopyUid(_, from, to)) => {
            let from = parse::expand_uid_set(from, limit)?;
            let to = parse::expand_uid_set(to, limit)?;
            Ok(from.into_iter().zip(to).collect())
        }
        _ => Ok(Vec::new()),
    }
}

#[derive(Debug, Clone)]
struct Selected {
    raw: String,
    read_only: bool,
    /// The mailbox as this session knows it, from every response read.
    track: Tracker,
    /// No command ran since the SELECT or NOOP that brought the view up to
    /// date (see [`Session::current`]).
    synced: bool,
}

/// An authenticated IMAP connection (see the module docs for the rules).
pub struct Session {
    inner: wire::Conn,
    user: String,
    timeout: Duration,
    caps: HashSet<String>,
    condstore: bool,
    qresync: bool,
    selected: Option<Selected>,
    broken: bool,
    folder_names: [(SpecialUse, String); 3],
    /// The mailboxes of the NOTIFY SET in force (and whether it asks for
    /// hierarchy events), if any.
    notify_set: Option<(Vec<String>, bool)>,
    /// A change of another watched mailbox the server reported (under
    /// NOTIFY) while this session asked for something else: the next
    /// IDLE answers it at once ([`Session::idle_wait_until`]).
    news: bool,
    /// Tags of the commands sent since login (`O1`, `O2`, …; `async-imap`
    /// used `A0001`… for the login).
    tags: u64,
    /// SELECT and EXAMINE commands sent (tests and the pool count them).
    opens: u64,
    /// STATUS commands sent (tests and the pool count them).
    statuses: u64,
    /// A mailbox the server said is gone (deleted under this session
    /// while selected, or not there when opened): the pool closes its
    /// other idle sessions that have it selected ([`Session::take_gone`]).
    gone: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("user", &self.user)
            .field("qresync", &self.qresync)
            .field("selected", &self.selected.as_ref().map(|s| &s.raw))
            .field("broken", &self.broken)
            .finish()
    }
}

impl Session {
    /// LOGIN as `login` (for `user`) on a connection past its greeting,
    /// then CAPABILITY (unless LOGIN's answer listed them) and ENABLE. The
    /// password goes out quoted, or as a literal when it is not printable
    /// ASCII; it is never logged.
    /// `greeting_caps`: the capabilities the greeting listed (empty when it
    /// listed none, or after STARTTLS), which LOGIN's literals go by; those
    /// after login replace them.
    /// `id`: an ID command ([`id_command`]) sent just before LOGIN.
    pub(super) async fn login(
        stream: ImapStream,
        cfg: &ImapConfig,
        greeting_caps: HashSet<String>,
        login: &str,
        password: &Secret,
        user: String,
        id: Option<String>,
    ) -> Result<Session, ImapError> {
        let mut s = Session {
            inner: wire::Conn::new(stream),
            user,
            timeout: Duration::from_millis(cfg.timeout_ms),
            caps: greeting_caps,
            condstore: false,
            qresync: false,
            selected: None,
            broken: false,
            tags: 0,
            opens: 0,
            statuses: 0,
            gone: None,
            folder_names: [
                (SpecialUse::Drafts, cfg.folder_drafts.clone()),
                (SpecialUse::Sent, cfg.folder_sent.clone()),
                (SpecialUse::Trash, cfg.folder_trash.clone()),
            ],
            notify_set: None,
            news: false,
        };
        let Some(parts) = login_command(login, password.expose()) else {
            // Cannot be sent (the old client refused it the same way); the
            // HTTP layer already refuses such Basic credentials.
            return Err(ImapError::Auth { user: s.user });
        };
        if let Some(id) = id {
            // Pipelined before LOGIN, no round trip of its own (RFC 3501
            // 5.5: ID changes no state LOGIN depends on). Its answer (an
            // untagged ID, then OK, or NO/BAD from a server that will not
            // take it) comes first and LOGIN's read loop skips it: a
            // refused ID never fails the login.
            let tag = s.next_tag();
            s.write_raw(format!("{} {id}\r\n", tag.0).as_bytes())
                .await?;
        }
        // The capabilities after login (RFC 3501 6.2.2: they may differ
        // from the greeting's, LITERAL+/LITERAL- included): in LOGIN's OK
        // (`[CAPABILITY …]`) or an untagged CAPABILITY on most servers,
        // which spares the CAPABILITY command's round trip.
        let mut untagged = None;
        let logged_in = s
            .exec("LOGIN", parts, &mut |r| {
                if let Response::Capabilities(list) = r {
                    untagged = Some(capability_names(list));
                }
                Ok(())
            })
            .await;
        let sent_caps = match logged_in {
            Ok(done) => done.caps.or(untagged),
            // A NO is a credential failure, unless it says the server could
            // not check (RFC 5530 UNAVAILABLE / SERVERBUG): `no_error`.
            Err(
                ImapError::Rejected { .. } | ImapError::NotFound(_) | ImapError::AlreadyExists(_),
            ) => return Err(ImapError::Auth { user: s.user }),
            Err(e) => return Err(e),
        };
        // Every later literal goes by these.
        s.caps = match sent_caps {
            Some(caps) => caps,
            None => {
                let mut caps = HashSet::new();
                s.simple_with("CAPABILITY", "CAPABILITY".into(), &mut |r| {
                    if let Response::Capabilities(list) = r {
                        caps.extend(capability_names(list));
                    }
                    Ok(())
                })
                .await?;
                caps
            }
        };
        if cfg.use_condstore {
            if s.has("QRESYNC") {
                s.simple("ENABLE", "ENABLE QRESYNC".into()).await?;
                s.qresync = true;
                s.condstore = true;
            } else if s.has("CONDSTORE") {
                s.condstore = true;
            }
        }
        Ok(s)
    }

    /// The user this session belongs to.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether the server advertised capability `name` (case-insensitive).
    pub fn has(&self, name: &str) -> bool {
        self.caps.contains(&name.to_ascii_uppercase())
    }

    /// CONDSTORE in use (MODSEQ available).
    pub fn condstore(&self) -> bool {
        self.condstore
    }

    /// QRESYNC enabled ([`Session::changes_since`] available).
    pub fn qresync(&self) -> bool {
        self.qresync
    }

    /// The selected mailbox (raw name), if any.
    pub fn selected_mailbox(&self) -> Option<&str> {
        self.selected.as_ref().map(|s| s.raw.as_str())
    }

    /// UIDVALIDITY of `raw` when it is the selected mailbox.
    pub fn selected_uidvalidity(&self, raw: &str) -> Option<u32> {
        self.selected_view(raw).map(|v| v.uidvalidity)
    }

    /// What this session knows of `raw` when it is the selected mailbox,
    /// as of the last response read (see [`Session::refresh`] for a view
    /// that is current).
    pub fn selected_view(&self, raw: &str) -> Option<MailboxView> {
        self.trusted(raw).map(|s| s.track.view())
    }

    /// The selection of `raw`, unless the server said it went wrong (see
    /// `Tracker::lost`: the server still has it selected, so a STATUS or
    /// a new SELECT must treat it as selected, but its view is void).
    fn trusted(&self, raw: &str) -> Option<&Selected> {
        self.selected
            .as_ref()
            .filter(|s| s.raw == raw && !s.track.lost())
    }

    /// Forgets that the view of the selected mailbox was just brought up to
    /// date, so the next [`Session::current`] refreshes it (the pool calls
    /// it when the session comes back: it may wait there for minutes).
    pub(super) fn unsynced(&mut self) {
        if let Some(s) = self.selected.as_mut() {
            s.synced = false;
        }
    }

    /// The mailbox the server last said is gone, if any (once): deleted
    /// under this session while it had it selected, or not there when
    /// this session opened it. Other sessions of the user that have it
    /// selected are stale: each would fail its next command.
    pub(super) fn take_gone(&mut self) -> Option<String> {
        self.gone.take()
    }

    /// SELECT and EXAMINE commands this session has sent.
    pub fn mailbox_opens(&self) -> u64 {
        self.opens
    }

    /// STATUS commands this session has sent.
    pub fn statuses(&self) -> u64 {
        self.statuses
    }

    /// False once a timeout or I/O error left the connection in an unknown state.
    pub fn is_usable(&self) -> bool {
        !self.broken
    }

    /// Whether the server ended this connection while it waited between
    /// commands (an IMAP server restart or idle logout: `* BYE`, then the
    /// close), looked at without waiting; such a session is broken from
    /// then on. The pool asks before it lends an idle session: otherwise
    /// the request it goes to fails on its first command.
    pub(super) fn ended_by_server(&mut self) -> bool {
        if !self.broken && self.inner.ended_by_server() {
            self.broken = true;
            self.selected = None;
        }
        self.broken
    }

    // ----- command plumbing -------------------------------------------------

    async fn exec(
        &mut self,
        what: &'static str,
        parts: Vec<Part<'_>>,
        on: Handler<'_>,
    ) -> Result<Done, ImapError> {
        if self.broken {
            return Err(ImapError::Unavailable("connection already failed".into()));
        }
        // The one guard of every IMAP change a leased request makes: not
        // sent once its device's lease is not proven (`crate::fence`).
        if changes_mailbox(what) {
            crate::fence::check(what).map_err(ImapError::Fenced)?;
        }
        if let Some(s) = self.selected.as_mut() {
            s.synced = false;
        }
        let t = self.timeout;
        let started = tokio::time::Instant::now();
        // Set for the length of the command: if the caller's future is
        // dropped mid-command (a cancelled request), the reply is half read
        // and the connection must not go back to the pool.
        self.broken = true;
        let run = tokio::time::timeout(t, self.exec_inner(what, parts, on));
        let res = match crate::obs::timed(crate::obs::Category::Imap, run).await {
            Err(_) => Err(ImapError::Unavailable(format!(
                "{what} timed out after {t:?}"
            ))),
            Ok(r) => r,
        };
        self.broken = false;
        self.inner.release();
        // Whatever the outcome: the push hub stops taking its watcher's
        // figures for current (`crate::push::changed_by_opush`).
        if changes_mailbox(what) {
            crate::push::changed_by_opush(&self.user);
        }
        tracing::debug!(
            target: "IMAP.COMMAND",
            user = %self.user,
            ms = started.elapsed().as_millis() as u64,
            ok = res.is_ok(),
            "{what}"
        );
        if matches!(res, Err(ImapError::Unavailable(_) | ImapError::Protocol(_))) {
            if matches!(&res, Err(ImapError::Unavailable(m)) if deleted_under_us(m)) {
                self.gone = self.selected.as_ref().map(|s| s.raw.clone());
            }
            self.broken = true;
            self.selected = None;
        }
        res
    }

    async fn write_raw(&mut self, bytes: &[u8]) -> Result<(), ImapError> {
        self.inner
            .write_all(bytes)
            .await
            .map_err(|e| ImapError::Unavailable(format!("write: {e}")))
    }

    async fn flush(&mut self) -> Result<(), ImapError> {
        self.inner
            .flush()
            .await
            .map_err(|e| ImapError::Unavailable(format!("flush: {e}")))
    }

    fn next_tag(&mut self) -> imap_proto::RequestId {
        self.tags += 1;
        imap_proto::RequestId(format!("O{}", self.tags))
    }

    async fn exec_inner(
        &mut self,
        what: &'static str,
        parts: Vec<Part<'_>>,
        on: Handler<'_>,
    ) -> Result<Done, ImapError> {
        let mode = LiteralMode::of(&self.caps);
        let mut tag = None;
        let mut text = String::new();
        for part in parts {
            match part {
                Part::Text(t) => text.push_str(&t),
                Part::Literal(bytes) => {
                    let non_sync = mode.non_synchronizing(bytes.len());
                    text.push_str(&format!(
                        "{{{}{}}}",
                        bytes.len(),
                        if non_sync { "+" } else { "" }
                    ));
                    if tag.is_none() {
                        let id = self.next_tag();
                        text.insert(0, ' ');
                        text.insert_str(0, &id.0);
                        tag = Some(id);
                    }
                    text.push_str("\r\n");
                    self.write_raw(text.as_bytes()).await?;
                    if !non_sync {
                        self.flush().await?;
                    }
                    text.clear();
                    if !non_sync {
                        // Wait for the continuation request.
                        loop {
                            let r = read_next!(self.inner).await?;
                            match r.parsed() {
                                Response::Continue(_) => break,
                                // Only this command's own answer ends it (a
                                // command pipelined before it, ID before
                                // LOGIN, answers first).
                                Response::Done {
                                    tag: done,
                                    status,
                                    outcome,
                                } if Some(done) == tag.as_ref() => {
                                    let info = outcome.information.as_deref().unwrap_or("");
                                    return Err(no_error(
                                        what,
                                        status,
                                        outcome.code.as_ref(),
                                        info,
                                    ));
                                }
                                other => {
                                    track(&mut self.selected, other);
                                    on(other)?
                                }
                            }
                        }
                    }
                    self.write_raw(bytes).await?;
                }
            }
        }
        let id = match tag {
            None => {
                // One write for the whole line: each piece written apart
                // would wake the server for nothing (~0.5 ms per command on
                // a busy machine).
                let id = self.next_tag();
                text.insert(0, ' ');
                text.insert_str(0, &id.0);
                id
            }
            Some(id) => id,
        };
        text.push_str("\r\n");
        self.write_raw(text.as_bytes()).await?;
        self.flush().await?;
        loop {
            let r = read_next!(self.inner).await?;
            match r.parsed() {
                Response::Done {
                    tag,
                    status,
                    outcome,
                } if *tag == id => {
                    let info = outcome.information.as_deref().unwrap_or("");
                    if *status != imap_proto::Status::Ok {
                        return Err(no_error(what, status, outcome.code.as_ref(), info));
                    }
                    if let Some(s) = self.selected.as_mut() {
                        s.track.done(outcome.code.as_ref());
                    }
                    let append_uid = match &outcome.code {
                        Some(ResponseCode::AppendUid(_, uids)) => {
                            parse::expand_uid_set(uids, 1)?.first().copied()
                        }
                        _ => None,
                    };
                    let caps = match &outcome.code {
                        Some(ResponseCode::Capabilities(list)) => Some(capability_names(list)),
                        _ => None,
                    };
                    return Ok(Done {
                        text: info.to_string(),
                        append_uid,
                        copy_uids: copy_uids(outcome.code.as_ref(), MAX_UID_SET)?,
                        caps,
                    });
                }
                Response::Data {
                    status: imap_proto::Status::Bye,
                    outcome,
                } => {
                    let info = outcome.information.as_deref().unwrap_or("");
                    return Err(ImapError::Unavailable(format!(
                        "server closed the connection: {info}"
                    )));
                }
                other => {
                    track(&mut self.selected, other);
                    on(other)?
                }
            }
        }
    }

    async fn simple(&mut self, what: &'static str, cmd: String) -> Result<Done, ImapError> {
        self.exec(what, vec![Part::Text(cmd)], &mut ignore).await
    }

    async fn simple_with(
        &mut self,
        what: &'static str,
        cmd: String,
        on: Handler<'_>,
    ) -> Result<Done, ImapError> {
        self.exec(what, vec![Part::Text(cmd)], on).await
    }

    // ----- folders ------------------------------------------------------------

    /// LIST all mailboxes with SPECIAL-USE and subscription; with `with_status`
    /// and LIST-STATUS, also each mailbox's STATUS in the same round trip.
    pub async fn list_folders(&mut self, with_status: bool) -> Result<Vec<Folder>, ImapError> {
        let extended = self.has("LIST-EXTENDED");
        let mut cmd = String::from("LIST \"\" \"*\"");
        if extended {
            let mut opts = vec!["SUBSCRIBED"];
            if self.has("SPECIAL-USE") {
                opts.push("SPECIAL-USE");
            }
            let status_items = if self.condstore {
                "STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
            } else {
                "STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"
            };
            if with_status && self.has("LIST-STATUS") {
                opts.push(status_items);
            }
            cmd.push_str(&format!(" RETURN ({})", opts.join(" ")));
        }
        let mut folders = Vec::new();
        let mut statuses = Vec::new();
        self.simple_with("LIST", cmd, &mut |r| {
            match r {
                Response::MailboxData(MailboxDatum::List(l)) => {
                    let attributes: Vec<String> = l.name_attributes.iter().map(name_attr).collect();
                    let has = |a: &str| attributes.iter().any(|x| x.eq_ignore_ascii_case(a));
                    if has("\\NonExistent") {
                        return Ok(());
                    }
                    let raw = l.name.to_string();
                    let delimiter = l.delimiter.as_deref().and_then(|d| d.chars().next());
                    let special = if raw.eq_ignore_ascii_case("INBOX") {
                        Some(SpecialUse::Inbox)
                    } else {
                        l.name_attributes.iter().find_map(|a| match a {
                            NameAttribute::Drafts => Some(SpecialUse::Drafts),
                            NameAttribute::Sent => Some(SpecialUse::Sent),
                            NameAttribute::Trash => Some(SpecialUse::Trash),
                            NameAttribute::Junk => Some(SpecialUse::Junk),
                            NameAttribute::Archive => Some(SpecialUse::Archive),
                            _ => None,
                        })
                    };
                    let parent = delimiter
                        .and_then(|d| raw.rsplit_once(d))
                        .map(|(p, _)| p.to_string());
                    folders.push(Folder {
                        name: utf7::decode(&raw).unwrap_or_else(|_| raw.clone()),
                        delimiter,
                        special,
                        parent,
                        subscribed: !extended || has("\\Subscribed"),
                        selectable: !has("\\Noselect"),
                        attributes,
                        status: None,
                        raw_name: raw,
                    });
                }
                Response::MailboxData(MailboxDatum::Status { mailbox, status }) => {
                    statuses.push((mailbox.to_string(), folder_status(status)));
                }
                _ => {}
            }
            Ok(())
        })
        .await?;
        if !extended {
            let mut subscribed = HashSet::new();
            self.simple_with("LSUB", "LSUB \"\" \"*\"".into(), &mut |r| {
                if let Response::MailboxData(MailboxDatum::List(l)) = r {
                    subscribed.insert(l.name.to_string());
                }
                Ok(())
            })
            .await?;
            for f in &mut folders {
                f.subscribed = subscribed.contains(&f.raw_name);
            }
        }
        for (mailbox, st) in statuses {
            if let Some(f) = folders.iter_mut().find(|f| f.raw_name == mailbox) {
                f.status = Some(st);
            }
        }
        // Configured names stand in for roles the server does not mark.
        for (role, name) in &self.folder_names {
            if !folders.iter().any(|f| f.special == Some(*role)) {
                if let Some(f) = folders
                    .iter_mut()
                    .find(|f| f.special.is_none() && f.raw_name == *name)
                {
                    f.special = Some(*role);
                }
            }
        }
        Ok(folders)
    }

    async fn is_subscribed(&mut self, raw: &str) -> Result<bool, ImapError> {
        let mut found = false;
        self.simple_with("LSUB", format!("LSUB \"\" {}", quote(raw)?), &mut |r| {
            if let Response::MailboxData(MailboxDatum::List(l)) = r {
                found |= l.name == raw;
            }
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// CREATE and SUBSCRIBE. An existing unsubscribed mailbox is subscribed
    /// (`Ok`); an existing subscribed one is `AlreadyExists`.
    pub async fn create_folder(&mut self, raw: &str) -> Result<(), ImapError> {
        let q = quote(raw)?;
        match self.simple("CREATE", format!("CREATE {q}")).await {
            Ok(_) => {}
            Err(ImapError::AlreadyExists(_)) => {
                if self.is_subscribed(raw).await? {
                    return Err(ImapError::AlreadyExists(raw.to_string()));
                }
            }
            Err(e) => return Err(e),
        }
        self.subscribe(raw).await
    }

    /// The configured name (`[imap] folder_drafts` / `folder_sent` /
    /// `folder_trash`) that stands in for `role` when no folder is marked
    /// with it; `None` for the roles without one.
    pub fn configured_folder(&self, role: SpecialUse) -> Option<&str> {
        self.folder_names
            .iter()
            .find(|(r, _)| *r == role)
            .map(|(_, name)| name.as_str())
    }

    /// CREATE the configured folder for `role` ([`Session::configured_folder`])
    /// and SUBSCRIBE it; returns its name. Marked with the role in the same
    /// command (`CREATE name (USE (\Trash))`, RFC 6154) when the server
    /// advertises CREATE-SPECIAL-USE; a server that refuses the mark gets a
    /// plain CREATE. One created meanwhile by another client is `Ok` too.
    pub async fn create_special_folder(&mut self, role: SpecialUse) -> Result<String, ImapError> {
        let attr = match role {
            SpecialUse::Drafts => "\\Drafts",
            SpecialUse::Sent => "\\Sent",
            SpecialUse::Trash => "\\Trash",
            SpecialUse::Junk => "\\Junk",
            SpecialUse::Archive => "\\Archive",
            SpecialUse::Inbox => {
                return Err(ImapError::InvalidInput("INBOX cannot be created".into()))
            }
        };
        let name = self
            .configured_folder(role)
            .filter(|n| !n.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| ImapError::InvalidInput(format!("no folder name for {attr}")))?;
        let q = quote(&name)?;
        let mut created = Err(ImapError::Unsupported("CREATE-SPECIAL-USE".into()));
        if self.has("CREATE-SPECIAL-USE") {
            created = self
                .simple("CREATE", format!("CREATE {q} (USE ({attr}))"))
                .await;
        }
        if let Err(ImapError::Rejected { .. } | ImapError::Unsupported(_)) = created {
            created = self.simple("CREATE", format!("CREATE {q}")).await;
        }
        match created {
            Ok(_) | Err(ImapError::AlreadyExists(_)) => {}
            Err(e) => return Err(e),
        }
        self.subscribe(&name).await?;
        Ok(name)
    }

    /// UNSUBSCRIBE (best effort) and DELETE.
    pub async fn delete_folder(&mut self, raw: &str) -> Result<(), ImapError> {
        let q = quote(raw)?;
        if self.selected.as_ref().is_some_and(|s| s.raw == raw) {
            self.unselect().await?;
        }
        let _ = self.simple("UNSUBSCRIBE", format!("UNSUBSCRIBE {q}")).await;
        if self.broken {
            return Err(ImapError::Unavailable(
                "connection failed during UNSUBSCRIBE".into(),
            ));
        }
        self.simple("DELETE", format!("DELETE {q}"))
            .await
            .map(|_| ())
    }

    /// RENAME, moving the subscriptions along: the folder's, and those of
    /// its subfolders `subscribed_below` names (their raw names under
    /// `from`, as listed before). RENAME moves the subfolders too, but a
    /// server need not move their subscriptions (Dovecot 2.3 leaves them
    /// on the old names): a subfolder left unsubscribed would drop out of
    /// every device's folder list. A subfolder's subscription that cannot
    /// be moved is logged, not an error: the rename is done.
    pub async fn rename_folder(
        &mut self,
        from: &str,
        to: &str,
        subscribed_below: &[String],
    ) -> Result<(), ImapError> {
        let (qf, qt) = (quote(from)?, quote(to)?);
        // The folder or one of its subfolders selected here is renamed away
        // (a namesake that only begins the same is left too: harmless).
        if self
            .selected
            .as_ref()
            .is_some_and(|s| s.raw.starts_with(from))
        {
            self.unselect().await?;
        }
        self.simple("RENAME", format!("RENAME {qf} {qt}")).await?;
        let _ = self
            .simple("UNSUBSCRIBE", format!("UNSUBSCRIBE {qf}"))
            .await;
        if self.subscribe(to).await.is_err() && !self.broken {
            // Once more: a renamed folder left unsubscribed is hidden.
            self.subscribe(to).await?;
        }
        for below in subscribed_below {
            let Some(rest) = below.strip_prefix(from) else {
                continue;
            };
            let renamed = format!("{to}{rest}");
            let _ = self.unsubscribe(below).await;
            if let Err(e) = self.subscribe(&renamed).await {
                tracing::warn!(target: "BACKEND", folder = %renamed, error = %e, "subfolder of a renamed folder left unsubscribed");
            }
            if self.broken {
                return Err(ImapError::Unavailable(
                    "connection failed moving subscriptions".into(),
                ));
            }
        }
        Ok(())
    }

    /// SUBSCRIBE.
    pub async fn subscribe(&mut self, raw: &str) -> Result<(), ImapError> {
        self.simple("SUBSCRIBE", format!("SUBSCRIBE {}", quote(raw)?))
            .await
            .map(|_| ())
    }

    /// UNSUBSCRIBE.
    pub async fn unsubscribe(&mut self, raw: &str) -> Result<(), ImapError> {
        self.simple("UNSUBSCRIBE", format!("UNSUBSCRIBE {}", quote(raw)?))
            .await
            .map(|_| ())
    }

    /// STATUS (MESSAGES UIDNEXT UIDVALIDITY UNSEEN \[HIGHESTMODSEQ\]): the cheap poll.
    ///
    /// Always the server's current figures: STATUS of the mailbox this
    /// session has selected answers with the session's own view, which
    /// misses what other sessions changed since its last sync (RFC 3501
    /// 6.3.10: "SHOULD NOT" be used on the selected mailbox). So a NOOP
    /// first brings that view up to date and the selection is kept (a
    /// caught-up device's INBOX: its next Sync is a NOOP there, and on
    /// Dovecot a STATUS of a selected INBOX is cheap where an unselected
    /// one re-reads the UID list, see `commands::sync`). A selection the
    /// server said went wrong is left instead (UNSELECT; without it,
    /// re-EXAMINEd: never CLOSE, which would expunge).
    pub async fn status(&mut self, raw: &str) -> Result<FolderStatus, ImapError> {
        if self.trusted(raw).is_some() {
            self.noop().await?;
        } else if self.selected.as_ref().is_some_and(|s| s.raw == raw) {
            if self.has("UNSELECT") {
                self.unselect().await?;
            } else {
                self.open(raw, true).await?;
            }
        }
        self.send_status(raw).await
    }

    /// The STATUS command itself (of the selected mailbox too: see
    /// [`Session::status`] and [`Session::refresh`]).
    async fn send_status(&mut self, raw: &str) -> Result<FolderStatus, ImapError> {
        let items = if self.condstore {
            "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
        } else {
            "(MESSAGES UIDNEXT UIDVALIDITY UNSEEN)"
        };
        self.statuses += 1;
        crate::obs::metrics::imap_status();
        let mut found = None;
        let mut other = false;
        self.simple_with(
            "STATUS",
            format!("STATUS {} {items}", quote(raw)?),
            &mut |r| {
                // Under NOTIFY other mailboxes' STATUS may arrive meanwhile:
                // news for the next IDLE, not this answer.
                if let Response::MailboxData(MailboxDatum::Status { mailbox, status }) = r {
                    if mailbox == raw {
                        found = Some(folder_status(status));
                    } else {
                        other = true;
                    }
                }
                Ok(())
            },
        )
        .await?;
        if other && self.notify_set.is_some() {
            self.news = true;
        }
        found.ok_or_else(|| ImapError::Protocol("STATUS without a STATUS response".into()))
    }

    // ----- mailbox state ------------------------------------------------------

    /// SELECT (read-write).
    pub async fn select(&mut self, raw: &str) -> Result<MailboxState, ImapError> {
        self.open(raw, false).await
    }

    /// EXAMINE (read-only).
    pub async fn examine(&mut self, raw: &str) -> Result<MailboxState, ImapError> {
        self.open(raw, true).await
    }

    async fn open(&mut self, raw: &str, read_only: bool) -> Result<MailboxState, ImapError> {
        let verb = if read_only { "EXAMINE" } else { "SELECT" };
        // The mailbox it leaves: the one a "deleted under us" is about.
        let left = self.selected.take().map(|s| s.raw);
        self.opens += 1;
        crate::obs::metrics::imap_mailbox_open();
        let condstore = self.condstore;
        let mut st = MailboxState::default();
        let opened = self
            .simple_with(verb, format!("{verb} {}", quote(raw)?), &mut |r| {
                match r {
                    Response::MailboxData(MailboxDatum::Exists(n)) => st.exists = *n,
                    Response::Data { outcome, .. } => match outcome.code {
                        Some(ResponseCode::UidValidity(v)) => st.uidvalidity = v,
                        Some(ResponseCode::UidNext(v)) => st.uidnext = v,
                        Some(ResponseCode::HighestModSeq(v)) if condstore => {
                            st.highestmodseq = Some(v)
                        }
                        _ => {}
                    },
                    _ => {}
                }
                Ok(())
            })
            .await;
        match &opened {
            Err(ImapError::NotFound(_)) => self.gone = Some(raw.to_owned()),
            Err(ImapError::Unavailable(m)) if deleted_under_us(m) => self.gone = left,
            _ => {}
        }
        opened?;
        self.selected = Some(Selected {
            raw: raw.to_string(),
            read_only,
            track: Tracker::new(&st, condstore),
            synced: true,
        });
        Ok(st)
    }

    /// The view of the selected mailbox (call only while one is selected).
    fn view(&self) -> MailboxView {
        self.selected
            .as_ref()
            .map(|s| s.track.view())
            .unwrap_or_default()
    }

    /// `raw` selected, as it is (the view as of the last response read):
    /// a selection of it is kept (a read-only one too unless `writable`),
    /// otherwise it is SELECTed (read-write: one mode for every caller, so
    /// a window never flips between SELECT and EXAMINE).
    async fn ensure(&mut self, raw: &str, writable: bool) -> Result<MailboxView, ImapError> {
        match self.trusted(raw) {
            Some(s) if !writable || !s.read_only => Ok(s.track.view()),
            _ => {
                self.open(raw, false).await?;
                Ok(self.view())
            }
        }
    }

    /// The UIDVALIDITY of `raw`, selected for writing (a kept selection as
    /// it is): a caller about to change a message by a UID it recorded
    /// checks it first, since a folder deleted and created again under
    /// the same name numbers its messages from 1 again.
    pub async fn writable_uidvalidity(&mut self, raw: &str) -> Result<u32, ImapError> {
        Ok(self.ensure(raw, true).await?.uidvalidity)
    }

    /// `raw` selected and its view current: kept as it is right after the
    /// SELECT or NOOP that brought it up to date, refreshed with a NOOP if
    /// another command ran since, SELECTed if another mailbox (or none) is
    /// selected.
    async fn current(&mut self, raw: &str) -> Result<MailboxView, ImapError> {
        match self.trusted(raw) {
            Some(s) if s.synced => Ok(s.track.view()),
            Some(_) => {
                self.noop().await?;
                Ok(self.view())
            }
            _ => {
                self.open(raw, false).await?;
                Ok(self.view())
            }
        }
    }

    /// Brings the view of `raw` up to date when it is the selected mailbox
    /// (a NOOP: the server reports every change made meanwhile, by any
    /// session, and the view folds them in) and returns it; `None` when
    /// another mailbox, or none, is selected, or when the server said the
    /// selection went wrong (then a SELECT opens it again). Its
    /// [`MailboxView::highestmodseq`], when known, is the mailbox's
    /// HIGHESTMODSEQ now (see `view`). With CONDSTORE, one the NOOP leaves
    /// unknown — changes reported earlier without a `HIGHESTMODSEQ` code,
    /// which Dovecot leaves out when the last FETCH MODSEQ it sent is the
    /// highest — is asked with a STATUS of the selected mailbox, answered
    /// from the view just brought up to date (`Tracker::status`); still
    /// unknown after it, a SELECT tells it.
    pub async fn refresh(&mut self, raw: &str) -> Result<Option<MailboxView>, ImapError> {
        if self.trusted(raw).is_none() {
            return Ok(None);
        }
        self.noop().await?;
        let unknown = self
            .selected_view(raw)
            .is_some_and(|v| v.highestmodseq.is_none());
        if self.condstore && unknown {
            self.send_status(raw).await?;
        }
        Ok(self.selected_view(raw))
    }

    /// Marks the start of a change this session makes to `raw`, when it is
    /// the selected mailbox (see [`Tracker::begin_own`]).
    fn begin_own(&mut self, raw: &str, change: OwnChange) {
        if let Some(s) = self.selected.as_mut().filter(|s| s.raw == raw) {
            s.track.begin_own(change);
        }
    }

    /// The change begun with [`Session::begin_own`] is answered (or failed).
    fn end_own(&mut self) {
        if let Some(s) = self.selected.as_mut() {
            s.track.end_own();
        }
    }

    /// Leaves the selected mailbox: UNSELECT, or, on a server without it,
    /// CLOSE of a read-only selection. CLOSE of a read-write one would
    /// expunge every `\Deleted` message there, other clients' too (RFC 3501
    /// 6.4.2): such a selection is first EXAMINEd (which leaves it without
    /// expunging, 6.3.2). Nothing to do when none is selected.
    pub async fn unselect(&mut self) -> Result<(), ImapError> {
        let Some((raw, read_only)) = self.selected.as_ref().map(|s| (s.raw.clone(), s.read_only))
        else {
            return Ok(());
        };
        let cmd = if self.has("UNSELECT") {
            "UNSELECT"
        } else {
            if !read_only {
                self.open(&raw, true).await?;
            }
            "CLOSE"
        };
        self.simple("UNSELECT", cmd.into()).await?;
        self.selected = None;
        Ok(())
    }

    /// Changes since `modseq` (QRESYNC): `UID FETCH 1:* (…) (CHANGEDSINCE n
    /// VANISHED)` on the current view of `raw` (see `Session::current`:
    /// no SELECT when it is selected already). VANISHED comes as the
    /// server's ranges, unbounded by UIDNEXT (the caller intersects them
    /// with the UIDs it knows). `Unsupported` without QRESYNC: use
    /// [`Session::list_messages`] then.
    pub async fn changes_since(&mut self, raw: &str, modseq: u64) -> Result<Changes, ImapError> {
        if !self.qresync {
            return Err(ImapError::Unsupported("QRESYNC not available".into()));
        }
        let mut state = self.current(raw).await?;
        let mut changed = Vec::new();
        let mut vanished = Vec::new();
        self.simple_with(
            "UID FETCH",
            format!("UID FETCH 1:* (UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE) (CHANGEDSINCE {modseq} VANISHED)"),
            &mut |r| {
                match r {
                    // Only the answers: an unsolicited FETCH (a flag change
                    // reported meanwhile) lacks the size; its MODSEQ is above
                    // the view's, so the next look finds it.
                    Response::Fetch(_, attrs) if has_size(attrs) => changed.extend(meta_of(attrs)),
                    Response::Vanished { earlier: true, uids } => {
                        if vanished.len() + uids.len() > MAX_UID_SET {
                            return Err(ImapError::Protocol("VANISHED set too large".into()));
                        }
                        vanished.extend(uids.iter().cloned());
                    }
                    _ => {}
                }
                Ok(())
            },
        )
        .await?;
        let vanished = merged(vanished);
        changed.sort_by_key(|m: &MessageMeta| m.uid);
        changed.dedup_by_key(|m| m.uid);
        // The view before the FETCH: every change above it is in this
        // answer or found by the next look.
        if let Some(m) = changed.iter().filter_map(|m| m.modseq).max() {
            state.highestmodseq = state.highestmodseq.map(|h| h.max(m));
        }
        Ok(Changes {
            state,
            changed,
            vanished,
        })
    }

    fn meta_items(&self, dated: bool) -> &'static str {
        match (self.condstore, dated) {
            (true, true) => "(UID FLAGS MODSEQ INTERNALDATE RFC822.SIZE)",
            (false, true) => "(UID FLAGS INTERNALDATE RFC822.SIZE)",
            (true, false) => "(UID FLAGS MODSEQ RFC822.SIZE)",
            (false, false) => "(UID FLAGS RFC822.SIZE)",
        }
    }

    /// Metadata of the UIDs in `set`; without `dated`, no INTERNALDATE
    /// (`MessageMeta::UNDATED`).
    async fn fetch_metas(&mut self, set: &str, dated: bool) -> Result<Vec<MessageMeta>, ImapError> {
        let items = self.meta_items(dated);
        let mut out = Vec::new();
        self.simple_with("UID FETCH", format!("UID FETCH {set} {items}"), &mut |r| {
            // Not an unsolicited flag report (no size, no date) meanwhile.
            match r {
                Response::Fetch(_, attrs) if has_size(attrs) => {
                    out.extend(meta_of(attrs).map(|mut m| {
                        if !dated {
                            m.internal_date = MessageMeta::UNDATED;
                        }
                        m
                    }))
                }
                _ => {}
            }
            Ok(())
        })
        .await?;
        out.sort_by_key(|m| m.uid);
        out.dedup_by_key(|m| m.uid);
        Ok(out)
    }

    async fn uid_search(&mut self, parts: Vec<Part<'_>>) -> Result<Vec<u32>, ImapError> {
        let mut out = Vec::new();
        self.exec("UID SEARCH", parts, &mut |r| {
            if let Response::MailboxData(MailboxDatum::Search(v)) = r {
                if out.len() + v.len() > MAX_UID_SET {
                    return Err(ImapError::Protocol("SEARCH result too large".into()));
                }
                out.extend_from_slice(v);
            }
            Ok(())
        })
        .await?;
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// Full listing (the fallback without CONDSTORE), optionally only messages
    /// with INTERNALDATE on or after the day of `since` (FilterType window);
    /// without `dated`, no INTERNALDATE (`MessageMeta::UNDATED`).
    pub async fn list_messages(
        &mut self,
        raw: &str,
        since: Option<i64>,
        dated: bool,
    ) -> Result<Vec<MessageMeta>, ImapError> {
        let state = self.current(raw).await?;
        if state.exists == Some(0) {
            return Ok(Vec::new());
        }
        let set = match since {
            None => "1:*".to_string(),
            Some(t) => {
                let uids = self
                    .uid_search(vec![Part::Text(format!(
                        "UID SEARCH SINCE {}",
                        parse::format_search_date(t)
                    ))])
                    .await?;
                match uid_set(&uids) {
                    None => return Ok(Vec::new()),
                    Some(s) => s,
                }
            }
        };
        self.fetch_metas(&set, dated).await
    }

    /// The UID of the `seq`-th message of `raw` (`FETCH seq (UID)`, on the
    /// view as it is: no NOOP), `None` past the last one.
    pub async fn uid_at(&mut self, raw: &str, seq: u32) -> Result<Option<u32>, ImapError> {
        let view = self.ensure(raw, false).await?;
        if seq == 0 || view.exists.is_some_and(|n| seq > n) {
            return Ok(None);
        }
        let mut found = None;
        self.simple_with("FETCH", format!("FETCH {seq} (UID)"), &mut |r| {
            if let Response::Fetch(n, attrs) = r {
                if *n == seq {
                    found = attrs.iter().find_map(|a| match a {
                        AttributeValue::Uid(u) => Some(*u),
                        _ => None,
                    });
                }
            }
            Ok(())
        })
        .await?;
        Ok(found)
    }

    /// [`Session::list_messages`] of the messages whose UIDs are `from` or
    /// above, and `to` or below when given, on the view as it is (no NOOP).
    /// Only UIDs in the range: `n:*` names the last message even below `n`
    /// (RFC 3501 6.4.8), which is left out.
    pub async fn list_uid_range(
        &mut self,
        raw: &str,
        (from, to): (u32, Option<u32>),
        dated: bool,
    ) -> Result<Vec<MessageMeta>, ImapError> {
        let view = self.ensure(raw, false).await?;
        if view.exists == Some(0) || to.is_some_and(|t| t < from) {
            return Ok(Vec::new());
        }
        let set = match to {
            Some(t) => format!("{}:{t}", from.max(1)),
            None => format!("{}:*", from.max(1)),
        };
        let mut list = self.fetch_metas(&set, dated).await?;
        list.retain(|m| m.uid >= from && to.is_none_or(|t| m.uid <= t));
        Ok(list)
    }

    /// Metadata of the given UIDs (absent UIDs are skipped).
    pub async fn fetch_meta(
        &mut self,
        raw: &str,
        uids: &[u32],
    ) -> Result<Vec<MessageMeta>, ImapError> {
        let Some(set) = uid_set(uids) else {
            return Ok(Vec::new());
        };
        self.ensure(raw, false).await?;
        self.fetch_metas(&set, true).await
    }

    // ----- content ------------------------------------------------------------

    /// Header fields ([`HEADER_FIELDS`]) and BODYSTRUCTURE of the given UIDs
    /// (missing UIDs are simply absent from the result).
    pub async fn fetch_headers(
        &mut self,
        raw: &str,
        uids: &[u32],
    ) -> Result<Vec<MessageHeaders>, ImapError> {
        let Some(set) = uid_set(uids) else {
            return Ok(Vec::new());
        };
        self.ensure(raw, false).await?;
        let mut out = Vec::new();
        self.simple_with(
            "UID FETCH",
            format!(
                "UID FETCH {set} (UID BODY.PEEK[HEADER.FIELDS ({})] BODYSTRUCTURE)",
                HEADER_FIELDS.join(" ")
            ),
            &mut |r| {
                if let Response::Fetch(_, attrs) = r {
                    let h = message_headers(attrs);
                    if h.uid != 0 {
                        out.push(h);
                    }
                }
                Ok(())
            },
        )
        .await?;
        out.sort_by_key(|h| h.uid);
        Ok(out)
    }

    /// The threading header fields (`Message-ID`, `In-Reply-To`,
    /// `References`) of every message of a folder, for finding a
    /// conversation's messages (`body` is left empty).
    pub async fn fetch_thread_headers(
        &mut self,
        raw: &str,
    ) -> Result<Vec<MessageHeaders>, ImapError> {
        let state = self.ensure(raw, false).await?;
        if state.exists == Some(0) {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        self.simple_with(
            "UID FETCH",
            "UID FETCH 1:* (UID BODY.PEEK[HEADER.FIELDS (MESSAGE-ID IN-REPLY-TO REFERENCES)])"
                .to_owned(),
            &mut |r| {
                if let Response::Fetch(_, attrs) = r {
                    let h = message_headers(attrs);
                    if h.uid != 0 {
                        if out.len() >= MAX_UID_SET {
                            return Err(ImapError::Protocol("FETCH result too large".into()));
                        }
                        out.push(h);
                    }
                }
                Ok(())
            },
        )
        .await?;
        out.sort_by_key(|h| h.uid);
        Ok(out)
    }

    /// The whole message (`BODY.PEEK[]`), refused with `TooLarge` above `max_size`.
    pub async fn fetch_message(
        &mut self,
        raw: &str,
        uid: u32,
        max_size: u64,
    ) -> Result<Vec<u8>, ImapError> {
        let meta = self.fetch_meta(raw, &[uid]).await?;
        let size = meta
            .iter()
            .find(|m| m.uid == uid)
            .map(|m| u64::from(m.size))
            .ok_or_else(|| ImapError::NotFound(format!("UID {uid} in {raw}")))?;
        if size > max_size {
            return Err(ImapError::TooLarge {
                size,
                limit: max_size,
            });
        }
        self.fetch_section(raw, uid, "", None).await
    }

    /// A byte range of a section (`""` = whole message, `"1.2"` = a part, as
    /// encoded on the wire, `"HEADER"` or `"TEXT"` = the message's header or
    /// body): `BODY.PEEK[section]<offset.len>`. Reading past
    /// the end gives fewer (or zero) bytes.
    pub async fn fetch_partial(
        &mut self,
        raw: &str,
        uid: u32,
        section: &str,
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>, ImapError> {
        self.fetch_section(raw, uid, section, Some((offset, len)))
            .await
    }

    /// Whole messages of `uids` in one `UID FETCH` (`BODY.PEEK[]`), by UID.
    /// UIDs that no longer exist are simply absent. The caller bounds the
    /// batch (count and total RFC822.SIZE): every body is held in memory.
    pub async fn fetch_messages(
        &mut self,
        raw: &str,
        uids: &[u32],
    ) -> Result<crate::backends::imap::UidMap<Vec<u8>>, ImapError> {
        Ok(self.fetch_messages_dated(raw, uids, false).await?.0)
    }

    /// [`Session::fetch_messages`], with each message's INTERNALDATE too
    /// when `dated` (for messages listed without it), by UID.
    pub async fn fetch_messages_dated(
        &mut self,
        raw: &str,
        uids: &[u32],
        dated: bool,
    ) -> Result<
        (
            crate::backends::imap::UidMap<Vec<u8>>,
            crate::backends::imap::UidMap<i64>,
        ),
        ImapError,
    > {
        let mut out = super::UidMap::with_capacity_and_hasher(uids.len(), Default::default());
        let mut dates = super::UidMap::default();
        let Some(set) = uid_set(uids) else {
            return Ok((out, dates));
        };
        self.ensure(raw, false).await?;
        let items = if dated {
            "(UID INTERNALDATE BODY.PEEK[])"
        } else {
            "(UID BODY.PEEK[])"
        };
        self.simple_with("UID FETCH", format!("UID FETCH {set} {items}"), &mut |r| {
            if let Response::Fetch(_, attrs) = r {
                let mut uid = None;
                let mut body = None;
                let mut date = None;
                for a in attrs {
                    match a {
                        AttributeValue::Uid(u) => uid = Some(*u),
                        AttributeValue::BodySection { data, .. } => {
                            body = Some(data.as_deref().map(<[u8]>::to_vec).unwrap_or_default())
                        }
                        AttributeValue::InternalDate(d) => date = parse::parse_internal_date(d),
                        _ => {}
                    }
                }
                if let (Some(uid), Some(body)) = (uid, body) {
                    out.insert(uid, body);
                    if let Some(d) = date {
                        dates.insert(uid, d);
                    }
                }
            }
            Ok(())
        })
        .await?;
        Ok((out, dates))
    }

    async fn fetch_section(
        &mut self,
        raw: &str,
        uid: u32,
        section: &str,
        range: Option<(u32, u32)>,
    ) -> Result<Vec<u8>, ImapError> {
        // A part number, or the top-level HEADER or TEXT.
        let named = matches!(section, "HEADER" | "TEXT");
        if !named && !section.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
            return Err(ImapError::InvalidInput(format!("bad section {section:?}")));
        }
        self.ensure(raw, false).await?;
        let partial = range.map(|(o, l)| format!("<{o}.{l}>")).unwrap_or_default();
        let mut found: Option<Vec<u8>> = None;
        self.simple_with(
            "UID FETCH",
            format!("UID FETCH {uid} (UID BODY.PEEK[{section}]{partial})"),
            &mut |r| {
                if let Response::Fetch(_, attrs) = r {
                    if attrs
                        .iter()
                        .any(|a| matches!(a, AttributeValue::Uid(u) if *u == uid))
                    {
                        for a in attrs {
                            if let AttributeValue::BodySection { data, .. } = a {
                                found =
                                    Some(data.as_deref().map(<[u8]>::to_vec).unwrap_or_default());
                            }
                        }
                    }
                }
                Ok(())
            },
        )
        .await?;
        found.ok_or_else(|| ImapError::NotFound(format!("UID {uid} section [{section}] in {raw}")))
    }

    // ----- mutations ----------------------------------------------------------

    /// `UID STORE +FLAGS.SILENT` (add) or `-FLAGS.SILENT`, optionally
    /// `(UNCHANGEDSINCE n)` (CONDSTORE): conflicting UIDs come back in `modified`.
    pub async fn store_flags(
        &mut self,
        raw: &str,
        uids: &[u32],
        flags: &[Flag],
        add: bool,
        unchanged_since: Option<u64>,
    ) -> Result<StoreOutcome, ImapError> {
        let Some(set) = uid_set(uids) else {
            return Ok(StoreOutcome::default());
        };
        let names = flags
            .iter()
            .map(Flag::to_imap)
            .collect::<Result<Vec<_>, _>>()?;
        if names.is_empty() {
            return Ok(StoreOutcome::default());
        }
        let cond = match unchanged_since {
            Some(m) if self.condstore => format!(" (UNCHANGEDSINCE {m})"),
            Some(_) => {
                return Err(ImapError::Unsupported(
                    "UNCHANGEDSINCE needs CONDSTORE".into(),
                ))
            }
            None => String::new(),
        };
        self.ensure(raw, true).await?;
        let sign = if add { '+' } else { '-' };
        self.begin_own(raw, OwnChange::store(uids));
        let done = self
            .simple(
                "UID STORE",
                format!(
                    "UID STORE {set}{cond} {sign}FLAGS.SILENT ({})",
                    names.join(" ")
                ),
            )
            .await;
        self.end_own();
        let done = done?;
        Ok(StoreOutcome {
            modified: parse::parse_modified(&done.text, MAX_UID_SET)?,
        })
    }

    /// Moves messages (`UID MOVE`, or COPY + `\Deleted` + `UID EXPUNGE`).
    /// Returns `(old uid, new uid)` pairs when the server reports COPYUID.
    pub async fn move_messages(
        &mut self,
        raw: &str,
        uids: &[u32],
        dest: &str,
    ) -> Result<Vec<(u32, u32)>, ImapError> {
        let Some(set) = uid_set(uids) else {
            return Ok(Vec::new());
        };
        let qd = quote(dest)?;
        self.ensure(raw, true).await?;
        let limit = uids.len();
        let mut pairs = Vec::new();
        if self.has("MOVE") {
            self.begin_own(raw, OwnChange::Expunge);
            let done = self
                .simple_with("UID MOVE", format!("UID MOVE {set} {qd}"), &mut |r| {
                    if let Response::Data { outcome, .. } = r {
                        pairs.extend(copy_uids(outcome.code.as_ref(), limit)?);
                    }
                    Ok(())
                })
                .await;
            self.end_own();
            pairs.extend(done?.copy_uids);
        } else {
            self.begin_own(dest, OwnChange::Append);
            let done = self
                .simple("UID COPY", format!("UID COPY {set} {qd}"))
                .await;
            self.end_own();
            pairs.extend(done?.copy_uids);
            self.delete_set(raw, uids, &set).await?;
        }
        Ok(pairs)
    }

    /// Marks `\Deleted` and expunges `uids` (`set`) of the selected `raw`.
    async fn delete_set(&mut self, raw: &str, uids: &[u32], set: &str) -> Result<(), ImapError> {
        self.begin_own(raw, OwnChange::store(uids));
        let stored = self
            .simple(
                "UID STORE",
                format!("UID STORE {set} +FLAGS.SILENT (\\Deleted)"),
            )
            .await;
        self.end_own();
        stored?;
        self.begin_own(raw, OwnChange::Expunge);
        let expunged = if self.has("UIDPLUS") {
            self.simple("UID EXPUNGE", format!("UID EXPUNGE {set}"))
                .await
                .map(|_| ())
        } else {
            self.expunge_only(uids).await
        };
        self.end_own();
        expunged
    }

    /// EXPUNGE (no UIDPLUS) of the selected mailbox removing only `uids`
    /// (marked `\Deleted`): a plain EXPUNGE removes every `\Deleted`
    /// message, so those another client marked lose the flag for it and
    /// get it back after. (Another client marking one in between still
    /// loses it: only UIDPLUS closes that gap.)
    async fn expunge_only(&mut self, uids: &[u32]) -> Result<(), ImapError> {
        let marked = self
            .uid_search(vec![Part::Text("UID SEARCH DELETED".into())])
            .await?;
        let mut ours = uids.to_vec();
        ours.sort_unstable();
        let others: Vec<u32> = marked
            .into_iter()
            .filter(|u| ours.binary_search(u).is_err())
            .collect();
        let others = uid_set(&others);
        if let Some(o) = &others {
            self.simple(
                "UID STORE",
                format!("UID STORE {o} -FLAGS.SILENT (\\Deleted)"),
            )
            .await?;
        }
        let expunged = self.simple("EXPUNGE", "EXPUNGE".into()).await;
        if let Some(o) = &others {
            self.simple(
                "UID STORE",
                format!("UID STORE {o} +FLAGS.SILENT (\\Deleted)"),
            )
            .await?;
        }
        expunged.map(|_| ())
    }

    /// Marks `\Deleted` and expunges exactly these UIDs (UID EXPUNGE with
    /// UIDPLUS; otherwise EXPUNGE with the other `\Deleted` marks lifted for it).
    pub async fn expunge(&mut self, raw: &str, uids: &[u32]) -> Result<(), ImapError> {
        let Some(set) = uid_set(uids) else {
            return Ok(());
        };
        self.ensure(raw, true).await?;
        self.delete_set(raw, uids, &set).await
    }

    /// APPEND; returns the new UID when the server reports APPENDUID (UIDPLUS).
    pub async fn append(
        &mut self,
        raw: &str,
        flags: &[Flag],
        internal_date: Option<i64>,
        message: &[u8],
    ) -> Result<Option<u32>, ImapError> {
        let names = flags
            .iter()
            .map(Flag::to_imap)
            .collect::<Result<Vec<_>, _>>()?;
        let mut head = format!("APPEND {}", quote(raw)?);
        if !names.is_empty() {
            head.push_str(&format!(" ({})", names.join(" ")));
        }
        if let Some(t) = internal_date {
            head.push_str(&format!(" \"{}\"", parse::format_date_time(t)));
        }
        head.push(' ');
        self.begin_own(raw, OwnChange::Append);
        let done = self
            .exec(
                "APPEND",
                vec![Part::Text(head), Part::Literal(message)],
                &mut ignore,
            )
            .await;
        self.end_own();
        Ok(done?.append_uid)
    }

    /// `UID SEARCH CHARSET UTF-8 …`: UIDs matching every given criterion, ascending.
    /// Non-ASCII strings are sent as literals.
    pub async fn search(&mut self, raw: &str, q: &SearchQuery) -> Result<Vec<u32>, ImapError> {
        let strings: Vec<(&str, &String)> = [
            ("SUBJECT", &q.subject),
            ("FROM", &q.from),
            ("TO", &q.to),
            ("BODY", &q.body),
            ("TEXT", &q.text),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
        .collect();
        let mut parts = vec![Part::Text("UID SEARCH CHARSET UTF-8".into())];
        let mut n = 0;
        for (key, value) in &strings {
            if value.chars().any(|c| c == '\r' || c == '\n' || c == '\0') {
                return Err(ImapError::InvalidInput(format!(
                    "{key} contains a control character"
                )));
            }
            match quote(value) {
                Ok(qv) => parts.push(Part::Text(format!(" {key} {qv}"))),
                Err(_) => {
                    parts.push(Part::Text(format!(" {key} ")));
                    parts.push(Part::Literal(value.as_bytes()));
                }
            }
            n += 1;
        }
        if let Some(t) = q.since {
            parts.push(Part::Text(format!(
                " SINCE {}",
                parse::format_search_date(t)
            )));
            n += 1;
        }
        if let Some(t) = q.before {
            parts.push(Part::Text(format!(
                " BEFORE {}",
                parse::format_search_date(t)
            )));
            n += 1;
        }
        if n == 0 {
            parts.push(Part::Text(" ALL".into()));
        }
        self.ensure(raw, false).await?;
        self.uid_search(parts).await
    }

    /// Whether `raw` holds a message whose Message-ID is `message_id`
    /// (without angle brackets): `UID SEARCH HEADER Message-ID`, a
    /// substring match, so the brackets are searched for too.
    pub async fn has_message_id(&mut self, raw: &str, message_id: &str) -> Result<bool, ImapError> {
        Ok(!self.with_message_id(raw, message_id).await?.is_empty())
    }

    /// The UIDs of `raw`'s messages whose Message-ID is `message_id`
    /// (without angle brackets), as [`Session::has_message_id`] finds them.
    pub async fn with_message_id(
        &mut self,
        raw: &str,
        message_id: &str,
    ) -> Result<Vec<u32>, ImapError> {
        let wanted = format!("<{message_id}>");
        if wanted.chars().any(|c| c.is_control()) {
            return Err(ImapError::InvalidInput(
                "Message-ID contains a control character".into(),
            ));
        }
        let mut parts = vec![Part::Text("UID SEARCH HEADER Message-ID ".into())];
        match quote(&wanted) {
            Ok(q) => parts.push(Part::Text(q)),
            Err(_) => parts.push(Part::Literal(wanted.as_bytes())),
        }
        self.ensure(raw, false).await?;
        self.uid_search(parts).await
    }

    /// Deletes every message of the mailbox; returns how many there were.
    pub async fn empty_folder(&mut self, raw: &str) -> Result<u32, ImapError> {
        Ok(self.empty_folder_of(raw, None).await?.unwrap_or(0))
    }

    /// Like [`Session::empty_folder`], but only the folder whose
    /// UIDVALIDITY is `validity` (when given), read from the SELECT that
    /// opens it (no extra round trip): `None`, nothing deleted, when it
    /// differs. A folder deleted and created again under the same name
    /// (or another renamed to it) has another UIDVALIDITY; the caller
    /// that saw the old one must not empty the new one it never saw.
    pub async fn empty_folder_of(
        &mut self,
        raw: &str,
        validity: Option<u32>,
    ) -> Result<Option<u32>, ImapError> {
        let st = self.open(raw, false).await?;
        if validity.is_some_and(|v| v != st.uidvalidity) {
            return Ok(None);
        }
        if st.exists == 0 {
            return Ok(Some(0));
        }
        self.simple("STORE", "STORE 1:* +FLAGS.SILENT (\\Deleted)".into())
            .await?;
        self.simple("EXPUNGE", "EXPUNGE".into()).await?;
        self.selected = None;
        Ok(Some(st.exists))
    }

    /// NOOP (keeps the connection alive, checks it, and brings the view of
    /// the selected mailbox up to date: see [`Session::refresh`]).
    pub async fn noop(&mut self) -> Result<(), ImapError> {
        self.simple("NOOP", "NOOP".into()).await?;
        if let Some(s) = self.selected.as_mut() {
            s.synced = true;
        }
        Ok(())
    }

    /// LOGOUT (best effort) and close.
    pub async fn logout(mut self) {
        if !self.broken {
            let _ = self.simple("LOGOUT", "LOGOUT".into()).await;
        }
    }

    // ----- push ---------------------------------------------------------------

    /// Selects `raw` and IDLEs until the server reports a change or `wait`
    /// elapses. Each I/O step also has the configured timeout.
    pub async fn idle_wait(&mut self, raw: &str, wait: Duration) -> Result<IdleOutcome, ImapError> {
        self.idle_wait_until(raw, wait, std::future::pending::<()>())
            .await
    }

    /// Like [`Session::idle_wait`], but also ends the IDLE (cleanly, with
    /// DONE) as soon as `stop` resolves, answering `Timeout` then unless the
    /// server reported a change. The push hub uses it to re-plan its watch
    /// when the set of watched folders changes.
    pub async fn idle_wait_until(
        &mut self,
        raw: &str,
        wait: Duration,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<IdleOutcome, ImapError> {
        if !self.has("IDLE") {
            return Err(ImapError::Unsupported("IDLE not available".into()));
        }
        if self.broken {
            return Err(ImapError::Unavailable("connection already failed".into()));
        }
        self.ensure(raw, false).await?;
        self.idle_guarded(wait, stop).await
    }

    /// Selects `raw` for an IDLE to come, so that a [`Session::status`]
    /// before it is a NOOP and STATUS on the selection: a change made
    /// after them is then reported when the IDLE starts (one made between
    /// a STATUS of an unselected mailbox and its SELECT would be told by
    /// neither).
    pub async fn select_for_idle(&mut self, raw: &str) -> Result<(), ImapError> {
        self.ensure(raw, false).await.map(|_| ())
    }

    /// IDLE until an event, `wait` or `stop`, the connection marked broken
    /// meanwhile (a cancelled wait leaves it so: see `exec`) and after a
    /// failure that leaves its state unknown.
    async fn idle_guarded(
        &mut self,
        wait: Duration,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<IdleOutcome, ImapError> {
        // A change the server reported before: answered without waiting.
        if std::mem::take(&mut self.news) {
            return Ok(IdleOutcome::Changed);
        }
        let t = self.timeout;
        self.unsynced();
        self.broken = true; // until IDLE is done (see `exec`)
        let res = self.idle_inner(wait, t, stop).await;
        self.broken = false;
        self.inner.release();
        if matches!(res, Err(ImapError::Unavailable(_) | ImapError::Protocol(_))) {
            self.broken = true;
            self.selected = None;
        }
        res
    }

    /// NOTIFY ([RFC 5465]) on `mailboxes` (new and expunged messages, flag
    /// changes) and, with `hierarchy`, on the personal namespace's folder
    /// names and subscriptions, then IDLE without a selected mailbox until
    /// the server reports an event, `wait` passes or `stop` resolves. The
    /// NOTIFY SET is sent only when it differs from the one in force, so a
    /// change between two waits is reported by the server at the next IDLE.
    /// A folder event is [`IdleOutcome::Hierarchy`]. `Unsupported` when the
    /// server lacks NOTIFY or IDLE.
    pub async fn notify_wait_until(
        &mut self,
        mailboxes: &[String],
        hierarchy: bool,
        wait: Duration,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<IdleOutcome, ImapError> {
        self.notify_set(mailboxes, hierarchy).await?;
        self.idle_guarded(wait, stop).await
    }

    /// Sends `NOTIFY SET` for `mailboxes` (and, with `hierarchy`, folder
    /// name and subscription events of the personal namespace) unless it is
    /// already in force (call it before reading the marks a wait starts
    /// from).
    pub async fn notify_set(
        &mut self,
        mailboxes: &[String],
        hierarchy: bool,
    ) -> Result<(), ImapError> {
        if !self.has("NOTIFY") || !self.has("IDLE") {
            return Err(ImapError::Unsupported("NOTIFY not available".into()));
        }
        if self.broken {
            return Err(ImapError::Unavailable("connection already failed".into()));
        }
        // Events of the selected mailbox would need the `selected` filter.
        self.unselect().await?;
        if self
            .notify_set
            .as_ref()
            .is_some_and(|(m, h)| m.as_slice() == mailboxes && *h == hierarchy)
        {
            return Ok(());
        }
        let mut names = Vec::with_capacity(mailboxes.len());
        for m in mailboxes {
            names.push(quote(m)?);
        }
        // The `mailboxes` filter comes first: a mailbox named by both keeps
        // its message events (checked against Dovecot 2.3.19 in
        // server/tests/eas_ping.rs).
        let folders = if hierarchy {
            " (personal (MailboxName SubscriptionChange))"
        } else {
            ""
        };
        self.simple(
            "NOTIFY",
            format!(
                "NOTIFY SET (mailboxes ({}) (MessageNew MessageExpunge FlagChange)){folders}",
                names.join(" ")
            ),
        )
        .await?;
        self.notify_set = Some((mailboxes.to_vec(), hierarchy));
        Ok(())
    }

    async fn idle_inner(
        &mut self,
        wait: Duration,
        t: Duration,
        stop: impl std::future::Future<Output = ()> + Send,
    ) -> Result<IdleOutcome, ImapError> {
        let mut stop = std::pin::pin!(stop);
        let id = self.next_tag();
        let line = format!("{} IDLE\r\n", id.0);
        tokio::time::timeout(t, async {
            self.write_raw(line.as_bytes()).await?;
            self.flush().await
        })
        .await
        .map_err(|_| ImapError::Unavailable("IDLE timed out".into()))??;
        let mut changed = false;
        // A LIST under NOTIFY: a folder was created, deleted, renamed or
        // (un)subscribed.
        let mut folders = false;
        // The continuation request (pending news may come first).
        loop {
            let r = tokio::time::timeout(t, read_next!(self.inner))
                .await
                .map_err(|_| ImapError::Unavailable("IDLE continuation timed out".into()))??;
            match r.parsed() {
                Response::Continue(_) => break,
                Response::Done {
                    status, outcome, ..
                } => {
                    let info = outcome.information.as_deref().unwrap_or("");
                    return Err(no_error("IDLE", status, None, info));
                }
                other => {
                    changed |= is_change(other);
                    folders |= is_folder_event(other);
                }
            }
        }
        let deadline = tokio::time::Instant::now() + wait;
        while !changed {
            let next = tokio::select! {
                r = tokio::time::timeout_at(deadline, read_next!(self.inner)) => r,
                () = &mut stop => break,
            };
            match next {
                Err(_) => break,
                Ok(r) => {
                    let r = r?;
                    match r.parsed() {
                        Response::Data {
                            status: imap_proto::Status::Bye,
                            ..
                        } => {
                            return Err(ImapError::Unavailable(
                                "server closed the connection during IDLE".into(),
                            ));
                        }
                        other => {
                            changed |= is_change(other);
                            folders |= is_folder_event(other);
                        }
                    }
                }
            }
        }
        tokio::time::timeout(t, async {
            self.write_raw(b"DONE\r\n").await?;
            self.flush().await
        })
        .await
        .map_err(|_| ImapError::Unavailable("DONE timed out".into()))??;
        loop {
            let r = tokio::time::timeout(t, read_next!(self.inner))
                .await
                .map_err(|_| ImapError::Unavailable("IDLE completion timed out".into()))??;
            match r.parsed() {
                Response::Done {
                    tag,
                    status,
                    outcome,
                } if *tag == id => {
                    if *status != imap_proto::Status::Ok {
                        let info = outcome.information.as_deref().unwrap_or("");
                        return Err(no_error("IDLE", status, None, info));
                    }
                    break;
                }
                other => {
                    changed |= is_change(other);
                    folders |= is_folder_event(other);
                }
            }
        }
        if changed {
            // EXISTS/UIDNEXT cached from SELECT are stale.
            self.selected = None;
            Ok(if folders {
                IdleOutcome::Hierarchy
            } else {
                IdleOutcome::Changed
            })
        } else {
            Ok(IdleOutcome::Timeout)
        }
    }
}

/// `ranges` sorted by start, overlapping or adjacent ones merged (a
/// reversed one, `8:7`, is the same as `7:8`: RFC 3501 9, seq-range).
fn merged(ranges: Vec<RangeInclusive<u32>>) -> Vec<RangeInclusive<u32>> {
    let mut ranges: Vec<RangeInclusive<u32>> = ranges
        .into_iter()
        .map(|r| {
            let (a, b) = r.into_inner();
            a.min(b)..=a.max(b)
        })
        .collect();
    ranges.sort_unstable_by_key(|r| *r.start());
    let mut out: Vec<RangeInclusive<u32>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start().saturating_sub(1) <= *last.end() => {
                if r.end() > last.end() {
                    *last = *last.start()..=*r.end();
                }
            }
            _ => out.push(r),
        }
    }
    out
}

/// Folds an untagged response into the view of the selected mailbox, if
/// any (a STATUS only when it is of that mailbox).
fn track(selected: &mut Option<Selected>, r: &Response<'_>) {
    if let Some(s) = selected {
        match r {
            Response::MailboxData(MailboxDatum::Status { mailbox, status }) => {
                if *mailbox == s.raw {
                    s.track.status(status);
                }
            }
            other => s.track.seen(other),
        }
    }
}

/// Whether a FETCH response carries RFC822.SIZE (an answer to a metadata
/// FETCH, not an unsolicited flag report).
fn has_size(attrs: &[AttributeValue<'_>]) -> bool {
    attrs
        .iter()
        .any(|a| matches!(a, AttributeValue::Rfc822Size(_)))
}

fn io_error(e: std::io::Error) -> ImapError {
    if e.kind() == std::io::ErrorKind::Other {
        ImapError::Protocol(format!("read: {e}"))
    } else {
        ImapError::Unavailable(format!("read: {e}"))
    }
}

fn is_folder_event(r: &Response<'_>) -> bool {
    matches!(r, Response::MailboxData(MailboxDatum::List(_)))
}

fn is_change(r: &Response<'_>) -> bool {
    matches!(
        r,
        // STATUS and LIST arrive under NOTIFY.
        Response::MailboxData(
            MailboxDatum::Exists(_)
                | MailboxDatum::Recent(_)
                | MailboxDatum::Status { .. }
                | MailboxDatum::List(_)
        ) | Response::Expunge(_)
            | Response::Vanished { .. }
            | Response::Fetch(..)
    )
}

fn name_attr(a: &NameAttribute<'_>) -> String {
    match a {
        NameAttribute::NoInferiors => "\\Noinferiors".into(),
        NameAttribute::NoSelect => "\\Noselect".into(),
        NameAttribute::Marked => "\\Marked".into(),
        NameAttribute::Unmarked => "\\Unmarked".into(),
        NameAttribute::All => "\\All".into(),
        NameAttribute::Archive => "\\Archive".into(),
        NameAttribute::Drafts => "\\Drafts".into(),
        NameAttribute::Flagged => "\\Flagged".into(),
        NameAttribute::Junk => "\\Junk".into(),
        NameAttribute::Sent => "\\Sent".into(),
        NameAttribute::Trash => "\\Trash".into(),
        NameAttribute::Extension(s) => s.to_string(),
        _ => "\\Unknown".into(),
    }
}

fn folder_status(attrs: &[StatusAttribute]) -> FolderStatus {
    let mut st = FolderStatus::default();
    for a in attrs {
        match a {
            StatusAttribute::Messages(n) => st.messages = *n,
            StatusAttribute::UidNext(n) => st.uidnext = *n,
            StatusAttribute::UidValidity(n) => st.uidvalidity = *n,
            StatusAttribute::Unseen(n) => st.unseen = *n,
            StatusAttribute::HighestModSeq(n) => st.highestmodseq = Some(*n),
            _ => {}
        }
    }
    st
}

fn meta_of(attrs: &[AttributeValue<'_>]) -> Option<MessageMeta> {
    let mut m = MessageMeta::default();
    for a in attrs {
        match a {
            AttributeValue::Uid(u) => m.uid = *u,
            AttributeValue::Flags(f) => m.flags = Flags::from_imap(f.iter().map(|s| s.as_ref())),
            AttributeValue::ModSeq(v) => m.modseq = Some(*v),
            AttributeValue::InternalDate(d) => {
                m.internal_date = parse::parse_internal_date(d).unwrap_or(0)
            }
            AttributeValue::Rfc822Size(s) => m.size = *s,
            _ => {}
        }
    }
    (m.uid != 0).then_some(m)
}

fn no_error(
    what: &'static str,
    status: &imap_proto::Status,
    code: Option<&ResponseCode<'_>>,
    info: &str,
) -> ImapError {
    let info = without_timing(info);
    let upper = info.to_ascii_uppercase();
    match status {
        imap_proto::Status::Bad => ImapError::Protocol(format!("{what}: BAD {info}")),
        _ if matches!(code, Some(ResponseCode::TryCreate))
            || upper.contains("NONEXISTENT")
            || upper.contains("TRYCREATE")
            // imap-proto drops RFC 5530 codes it does not know; fall back to the text.
            || upper.contains("DOESN'T EXIST")
            || upper.contains("DOES NOT EXIST")
            || upper.contains("NO SUCH MAILBOX")
            || upper.contains("UNKNOWN MAILBOX") =>
        {
            ImapError::NotFound(format!("{what}: {info}"))
        }
        _ if upper.contains("ALREADYEXISTS") || upper.contains("ALREADY EXISTS") => {
            ImapError::AlreadyExists(format!("{what}: {info}"))
        }
        _ if upper.contains("UNAVAILABLE")
            || upper.contains("SERVERBUG")
            || upper.contains("INUSE")
            // Dovecot, to a session that had a folder open when another
            // client deleted it: this session's view is stale (it answers
            // so to every later command), so it is dropped and the
            // request retried on a new one.
            || upper.contains("DELETED UNDER US") =>
        {
            ImapError::Unavailable(format!("{what}: {info}"))
        }
        _ => ImapError::Rejected {
            command: what,
            text: info.to_string(),
        },
    }
}

/// `info` without the time Dovecot appends to its answers (`Quota exceeded
/// (0.001 + 0.000 secs).`), so that an error text kept for an
/// administrator (a Sent copy's last error) reads the same from one try to
/// the next.
fn without_timing(info: &str) -> &str {
    let t = info.trim_end();
    let Some(body) = t
        .strip_suffix(" secs).")
        .or_else(|| t.strip_suffix(" secs)"))
    else {
        return info;
    };
    let Some(open) = body.rfind(" (") else {
        return info;
    };
    let figures = &body[open + 2..];
    if !figures.is_empty()
        && figures
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | '+' | ' '))
    {
        &info[..open]
    } else {
        info
    }
}

/// Whether an `Unavailable` message is Dovecot's answer to a session whose
/// selected mailbox another client deleted: a `NO` ("Mailbox was deleted
/// under us", [`no_error`]), or, to a NOOP, a `BYE` ("IMAP session state
/// is inconsistent, please relogin.").
fn deleted_under_us(message: &str) -> bool {
    let upper = message.to_ascii_uppercase();
    upper.contains("DELETED UNDER US") || upper.contains("STATE IS INCONSISTENT")
}

/// The UID, the fetched header fields and (when asked for) the body
/// structure of one FETCH response; what was not fetched stays empty.
fn message_headers(attrs: &[AttributeValue<'_>]) -> MessageHeaders {
    let mut h = MessageHeaders::default();
    for a in attrs {
        match a {
            AttributeValue::Uid(u) => h.uid = *u,
            AttributeValue::BodySection { data: Some(d), .. } => {
                h.fields = parse::parse_header_fields(d)
            }
            AttributeValue::BodyStructure(bs) => {
                let root = if matches!(bs, imap_proto::BodyStructure::Multipart { .. }) {
                    ""
                } else {
                    "1"
                };
                h.body = parse::body_part(bs, root, 0);
            }
            _ => {}
        }
    }
    h
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn caps(names: &[&str]) -> HashSet<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn dovecot_timings_are_left_out_of_error_texts() {
        assert_eq!(
            without_timing(
                "Quota exceeded (mailbox for user is full) (0.002 + 0.000 + 0.001 secs)."
            ),
            "Quota exceeded (mailbox for user is full)"
        );
        assert_eq!(
            without_timing("Mailbox was deleted under us (0.001 secs)."),
            "Mailbox was deleted under us"
        );
        // Not a timing: kept as it is.
        assert_eq!(
            without_timing("Permission denied (see the log)."),
            "Permission denied (see the log)."
        );
        assert_eq!(without_timing("Done (1 secs)."), "Done");
        assert_eq!(without_timing("(0.1 secs)."), "(0.1 secs).");
        let rejected = no_error(
            "APPEND",
            &imap_proto::Status::No,
            None,
            "[OVERQUOTA] Quota exceeded (mailbox for user is full) (0.002 + 0.000 secs).",
        );
        match rejected {
            ImapError::Rejected { command, text } => {
                assert_eq!(command, "APPEND");
                assert_eq!(
                    text,
                    "[OVERQUOTA] Quota exceeded (mailbox for user is full)"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_folder_deleted_under_a_session_is_retried_and_a_missing_one_is_not_found() {
        let no = imap_proto::Status::No;
        // A stale session: dropped, the request retried on a new one.
        let stale = no_error(
            "STATUS",
            &no,
            None,
            "Mailbox was deleted under us (0.001 secs).",
        );
        assert!(stale.is_retryable(), "{stale:?}");
        // A new session then learns the folder is gone.
        let gone = no_error("STATUS", &no, None, "Mailbox doesn't exist: Projects");
        assert!(matches!(gone, ImapError::NotFound(_)), "{gone:?}");
        let other = no_error("STORE", &no, None, "Permission denied");
        assert!(matches!(other, ImapError::Rejected { .. }), "{other:?}");
    }

    #[test]
    fn the_id_command_names_the_client_quoted() {
        let v4 = ClientAddr {
            ip: "192.0.2.10".parse().unwrap(),
            port: Some(4711),
        };
        assert_eq!(
            id_command(v4),
            r#"ID ("x-originating-ip" "192.0.2.10" "x-originating-port" "4711")"#
        );
        // IPv6: no brackets, `::` kept; no port behind a proxy.
        let v6 = ClientAddr {
            ip: "2001:db8::1".parse().unwrap(),
            port: None,
        };
        assert_eq!(id_command(v6), r#"ID ("x-originating-ip" "2001:db8::1")"#);
        // An IPv4-mapped peer is named by its IPv4 address.
        let mapped = ClientAddr::from(
            "[::ffff:198.51.100.3]:993"
                .parse::<std::net::SocketAddr>()
                .unwrap(),
        );
        assert_eq!(
            id_command(mapped),
            r#"ID ("x-originating-ip" "198.51.100.3" "x-originating-port" "993")"#
        );
        // What the server reads back is what was meant (imap-proto parses
        // an ID parameter list the same way as the response's).
        let line = format!("* {}\r\n", id_command(v6));
        match Response::parse(line.as_bytes()) {
            Ok((_, Response::Id(Some(map)))) => {
                let ip = map.iter().find(|(k, _)| k.as_ref() == "x-originating-ip");
                assert_eq!(ip.map(|(_, v)| v.as_ref()), Some("2001:db8::1"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_literal_mode_comes_from_the_capabilities() {
        assert_eq!(LiteralMode::of(&caps(&["IMAP4REV1"])), LiteralMode::Sync);
        assert_eq!(LiteralMode::of(&caps(&[])), LiteralMode::Sync);
        assert_eq!(LiteralMode::of(&caps(&["LITERAL-"])), LiteralMode::Minus);
        assert_eq!(LiteralMode::of(&caps(&["LITERAL+"])), LiteralMode::Plus);
        // Both advertised: LITERAL+ wins (RFC 7888 §4).
        assert_eq!(
            LiteralMode::of(&caps(&["LITERAL-", "LITERAL+"])),
            LiteralMode::Plus
        );
    }

    #[test]
    fn literal_minus_is_non_synchronizing_up_to_4096_bytes() {
        for (len, plus, minus) in [
            (0, true, true),
            (1, true, true),
            (4096, true, true),
            (4097, true, false),
            (10 << 20, true, false),
        ] {
            assert_eq!(LiteralMode::Plus.non_synchronizing(len), plus, "{len}");
            assert_eq!(LiteralMode::Minus.non_synchronizing(len), minus, "{len}");
            assert!(!LiteralMode::Sync.non_synchronizing(len), "{len}");
        }
    }

    #[test]
    fn capability_names_are_upper_case() {
        let list = [
            imap_proto::Capability::Imap4rev1,
            imap_proto::Capability::Auth("plain".into()),
            imap_proto::Capability::Atom("literal-".into()),
        ];
        assert_eq!(
            capability_names(&list),
            caps(&["IMAP4REV1", "AUTH=PLAIN", "LITERAL-"])
        );
    }

    #[test]
    fn login_arguments_are_quoted_or_literal() {
        let text = |s: &str| Part::Text(s.to_owned());
        assert_eq!(
            login_command("u@example.test", r#"p@ss "quoted" \ back:slash 100%"#),
            Some(vec![
                text("LOGIN "),
                text(r#""u@example.test""#),
                text(" "),
                text(r#""p@ss \"quoted\" \\ back:slash 100%""#),
            ])
        );
        let pw = "Grüße пароль 密码🔑";
        assert_eq!(
            login_command("u@example.test", pw),
            Some(vec![
                text("LOGIN "),
                text(r#""u@example.test""#),
                text(" "),
                Part::Literal(pw.as_bytes()),
            ])
        );
        // A non-ASCII login and a TAB go as literals too.
        assert_eq!(
            login_command("jörg", "a\tb"),
            Some(vec![
                text("LOGIN "),
                Part::Literal("jörg".as_bytes()),
                text(" "),
                Part::Literal(b"a\tb"),
            ])
        );
        assert_eq!(
            login_command("u", "").as_deref().and_then(<[_]>::last),
            Some(&text(r#""""#))
        );
        for bad in ["a\rb", "a\nb", "a\0b"] {
            assert_eq!(login_command("u", bad), None, "{bad:?}");
            assert_eq!(login_command(bad, "pw"), None, "{bad:?}");
        }
    }

    #[test]
    fn vanished_ranges_are_sorted_and_merged() {
        assert_eq!(
            merged(vec![
                9..=12,
                1..=3,
                4..=4,
                11..=20,
                30..=31,
                // `8:7` as a parser may hand it over: the same as `7:8`.
                RangeInclusive::new(8, 7),
            ]),
            vec![1..=4, 7..=20, 30..=31]
        );
        assert_eq!(merged(vec![5..=u32::MAX, 1..=2]), vec![1..=2, 5..=u32::MAX]);
        assert!(merged(Vec::new()).is_empty());
    }
}
