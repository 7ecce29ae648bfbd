//! Out-of-office (Settings `Oof`, [MS-ASCMD] 2.2.3.119) as a Sieve vacation
//! script on the user's mail server, managed over ManageSieve
//! ([`crate::backends::sieve`]).
//!
//! opush owns one script per user (`[sieve] script`, default `opush-oof`).
//! A Set rewrites it whole: a header of comments that keeps the settings
//! exactly as the device sent them (state, start and end times, each
//! audience's Enabled, ReplyMessage and BodyType; what a Set leaves out is
//! carried over from the script, [`merge`]), then the Sieve that acts on
//! them:
//! * state 1 (global) or 2 (time-based, a `currentdate` window in UTC):
//!   `vacation :days 1 :subject … :from <primary address> :addresses [<all
//!   the user's addresses>]` with the text of the audience the sender
//!   belongs to. Internal: the envelope sender's domain is one of the
//!   user's own domains (or `[sieve] internal_domains`). External: the
//!   AppliesToExternalUnknown message when enabled. opush cannot tell a
//!   "known" external sender (one in the user's contacts) from an unknown
//!   one, so an AppliesToExternalKnown message alone is kept and returned
//!   by Get but answers nobody. The reply's subject is "Automatic reply: "
//!   and the original's (Sieve `variables`); an HTML message goes as
//!   multipart/alternative (`vacation :mime`: its text, tags dropped, and
//!   the HTML as set).
//! * The user's own filters keep running: when another script was active
//!   (a webmail's filters), opush's script `include`s it (`:optional`, so
//!   that script being deleted later does not break delivery) after the
//!   vacation action and becomes the active script; the previous name is
//!   kept in the header. State 0 re-activates that previous script (or
//!   deactivates opush's when there was none) and leaves opush's script in
//!   place, inactive, with the settings for the next Get.
//!
//! Get reads only opush's own script's header; the state is 0 when that
//! script is not the active one (someone activated another since).
//!
//! The same script files the later messages of conversations a device moved
//! with ItemOperations `Move` and `MoveAlways` ([MS-ASCMD] 2.2.3.118): one
//! rule per conversation, kept in the header as `# conversation` lines
//! (root Message-ID, folder, last day) and acted on by `fileinto` after the
//! vacation part — a message whose thread root ([`crate::email::conversation::root`])
//! is the conversation's goes to the folder, and nothing else (the user's
//! own filters included) files it. A rule lasts [`RULE_DAYS`] from its last
//! Move (a `currentdate` test, and dropped at the next rewrite), at most
//! [`MAX_RULES`] of them (the oldest go first). The script stays active
//! while it holds a rule, whatever the out-of-office state, and then
//! `include`s the previous script as it does for out-of-office.
//!
//! Order of a Set: PUTSCRIPT (the server compiles it; nothing changes when
//! it does not), then SETACTIVE. A failure between the two leaves the old
//! active script running and opush's script updated but inactive: the
//! device gets the outage answer and its retry completes it.

use std::fmt::Write as _;

use opush_protocol::commands::settings::{OofAudience, OofMessage, OofSettings};

use crate::backends::sieve::{SieveClient, SieveError, SieveLogin, SieveSettings};
use crate::email::html::escape_text;

/// Longest ReplyMessage accepted, bytes (a Sieve script is small; Dovecot's
/// default `sieve_max_script_size` is 1 MiB).
pub const MAX_REPLY_BYTES: usize = 64 * 1024;

/// First line of every script opush writes.
const MAGIC: &str = "# opush-oof 1";

/// Days a conversation rule files messages after its last Move.
pub const RULE_DAYS: i64 = 30;

/// Most conversation rules kept in the script (the oldest dropped first):
/// Dovecot reads the script at every delivery.
pub const MAX_RULES: usize = 200;

/// What `[sieve]` configures, ready for requests.
#[derive(Debug, Clone, Default)]
pub struct OofService {
    /// The ManageSieve server; `None`: out-of-office is refused (Status 7).
    pub sieve: Option<SieveSettings>,
    /// The name of opush's script.
    pub script: String,
    /// Domains whose senders get the internal message; empty: the domains
    /// of the user's own addresses.
    pub internal_domains: Vec<String>,
    /// Log in with `user@domain` (as `[imap] login_with_domain`).
    pub login_with_domain: bool,
    /// One rewrite of a user's script at a time in this process: an Oof
    /// Set and a conversation Move (or two Moves) from the user's devices
    /// each read the script, change their part and write it whole, and
    /// the second would undo the first.
    pub writers: std::sync::Arc<ScriptWriters>,
}

/// Locks serializing the rewrites of a user's script (striped by user).
#[derive(Debug)]
pub struct ScriptWriters(Vec<tokio::sync::Mutex<()>>);

impl Default for ScriptWriters {
    fn default() -> Self {
        ScriptWriters((0..64).map(|_| tokio::sync::Mutex::new(())).collect())
    }
}

impl ScriptWriters {
    /// Held while `user`'s script is read, changed and written.
    pub async fn lock(&self, user: &str) -> tokio::sync::MutexGuard<'_, ()> {
        let stripe = blake3::hash(user.as_bytes()).as_bytes()[0] as usize % self.0.len();
        self.0[stripe].lock().await
    }
}

impl OofService {
    /// The service of a configuration.
    pub fn from_config(cfg: &crate::config::Config) -> OofService {
        let s = &cfg.sieve;
        OofService {
            sieve: s.enabled.then(|| SieveSettings {
                host: s.host.clone(),
                port: s.port,
                starttls: s.tls == crate::config::TlsMode::Starttls,
                ca_file: s.ca_file.clone(),
                allow_plaintext: s.allow_plaintext,
                timeout: std::time::Duration::from_millis(s.timeout_ms),
            }),
            script: s.script.clone(),
            internal_domains: s.internal_domains.clone(),
            login_with_domain: cfg.imap.login_with_domain,
            writers: Default::default(),
        }
    }

    /// The ManageSieve login of `user` (as IMAP's: with or without the
    /// domain).
    pub fn login_name(&self, user: &str) -> String {
        match self.login_with_domain {
            true => user.to_owned(),
            false => user.split('@').next().unwrap_or(user).to_owned(),
        }
    }
}

/// Why a Set cannot be written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OofInvalid {
    /// A malformed value (Status 5).
    #[error("invalid out-of-office setting: {0}")]
    Invalid(String),
    /// Values that contradict each other (Status 6).
    #[error("conflicting out-of-office settings: {0}")]
    Conflicting(String),
}

/// What opush's script remembers besides the device's settings.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StoredOof {
    /// The settings exactly as the device sent them.
    pub settings: OofSettings,
    /// The script that was active before opush's (and is included by it).
    pub previous: Option<String>,
    /// Conversations whose later messages are filed into a folder.
    pub rules: Vec<ConversationRule>,
}

impl StoredOof {
    /// Whether the script must be the active one: out-of-office is on or a
    /// conversation rule is kept.
    pub fn runs(&self) -> bool {
        self.settings.state.unwrap_or(0) != 0 || !self.rules.is_empty()
    }
}

/// A conversation moved with `MoveAlways`: its later messages go to
/// `folder`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationRule {
    /// The thread's root Message-ID, without its brackets.
    pub root: String,
    /// The folder, as Sieve's `fileinto` names it (UTF-8).
    pub folder: String,
    /// The last day the rule files messages (UTC, `YYYY-MM-DD`).
    pub until: String,
}

/// The user a request writes the script for: the ManageSieve login (the
/// request's credentials), the user's addresses and the request's time.
pub struct ScriptOwner<'a> {
    login_name: String,
    password: &'a str,
    /// The user's addresses, the primary first (Settings UserInformation's).
    pub addresses: Vec<String>,
    /// The request's Unix time.
    pub now: i64,
}

impl<'a> ScriptOwner<'a> {
    /// The owner of `user`'s script, logging in with `password`.
    pub fn new(
        service: &OofService,
        (user, password): (&str, &'a str),
        addresses: Vec<String>,
        now: i64,
    ) -> ScriptOwner<'a> {
        ScriptOwner {
            login_name: service.login_name(user),
            password,
            addresses,
            now,
        }
    }

    /// The ManageSieve login.
    pub fn login(&self) -> SieveLogin<'_> {
        SieveLogin {
            user: &self.login_name,
            password: self.password,
        }
    }
}

/// A folder as Sieve's `fileinto` names it (UTF-8) from its raw IMAP name
/// (modified UTF-7; as it is when it does not decode).
pub fn sieve_folder(raw: &str) -> String {
    crate::backends::imap::utf7::decode(raw).unwrap_or_else(|_| raw.to_owned())
}

/// A day (UTC, `YYYY-MM-DD`) of a Unix time.
pub fn utc_day(unix: i64) -> String {
    let (y, m, d) = crate::dates::civil_from_days(unix.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Adds (or renews) the rule filing conversation `root` into `folder` as
/// of day `today` ([`utc_day`]), and drops the rules past their last day
/// and the oldest beyond [`MAX_RULES`].
pub fn file_conversation(stored: &mut StoredOof, root: &str, folder: &str, today_unix: i64) {
    stored.rules.retain(|r| r.root != root);
    stored.rules.push(ConversationRule {
        root: root.to_owned(),
        folder: folder.to_owned(),
        until: utc_day(today_unix + RULE_DAYS * 86_400),
    });
    prune_rules(&mut stored.rules, &utc_day(today_unix));
}

/// Drops the rules whose last day is before `today`, then the ones that
/// end first beyond [`MAX_RULES`] (the order of the others kept).
pub fn prune_rules(rules: &mut Vec<ConversationRule>, today: &str) {
    rules.retain(|r| r.until.as_str() >= today);
    if rules.len() > MAX_RULES {
        // The MAX_RULES that end last, the later-added first among equals.
        let mut order: Vec<usize> = (0..rules.len()).collect();
        order.sort_by(|&a, &b| rules[b].until.cmp(&rules[a].until).then(b.cmp(&a)));
        let mut keep = vec![false; rules.len()];
        for &i in &order[..MAX_RULES] {
            keep[i] = true;
        }
        let mut i = 0;
        rules.retain(|_| {
            i += 1;
            keep[i - 1]
        });
    }
}

/// `s` as a Sieve `:matches` pattern matching itself only (`*`, `?` and
/// backslash escaped).
fn literal_pattern(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if matches!(c, '*' | '?' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Who the script is for.
#[derive(Debug, Clone)]
pub struct ScriptUser<'a> {
    /// The user's addresses, the primary first (Settings UserInformation's).
    pub addresses: &'a [String],
    /// Domains whose senders are internal.
    pub internal_domains: &'a [String],
}

/// An EAS time (`2026-11-30T09:00:00.000Z`) as the `iso8601` date part
/// Pigeonhole gives for `:zone "+0000"` (`2026-11-30T09:00:00Z`), which
/// compares as a string.
fn sieve_time(eas: &str) -> Result<String, OofInvalid> {
    let bad = || OofInvalid::Invalid(format!("time {eas:?}"));
    let b = eas.as_bytes();
    let digits =
        |r: std::ops::Range<usize>| b.get(r).is_some_and(|s| s.iter().all(u8::is_ascii_digit));
    let shape = b.len() >= 20
        && digits(0..4)
        && b[4] == b'-'
        && digits(5..7)
        && b[7] == b'-'
        && digits(8..10)
        && b[10] == b'T'
        && digits(11..13)
        && b[13] == b':'
        && digits(14..16)
        && b[16] == b':'
        && digits(17..19);
    if !shape {
        return Err(bad());
    }
    let rest = &eas[19..];
    let frac_ok = match rest.strip_suffix('Z') {
        Some("") => true,
        Some(f) => f.len() >= 2 && f.starts_with('.') && f[1..].bytes().all(|c| c.is_ascii_digit()),
        None => false,
    };
    if !frac_ok {
        return Err(bad());
    }
    let num = |r: std::ops::Range<usize>| eas[r].parse::<u32>().unwrap_or(99);
    if !(1..=12).contains(&num(5..7))
        || !(1..=31).contains(&num(8..10))
        || num(11..13) > 23
        || num(14..16) > 59
        || num(17..19) > 60
    {
        return Err(bad());
    }
    Ok(format!("{}Z", &eas[..19]))
}

/// Checks the values of a Set before anything is read or written: their
/// form, not whether they are complete (a Set may change only some
/// settings, [`merge`]).
pub fn validate(settings: &OofSettings) -> Result<(), OofInvalid> {
    if let Some(state) = settings.state {
        if state > 2 {
            return Err(OofInvalid::Invalid(format!("OofState {state}")));
        }
    }
    let start = settings.start_time.as_deref().map(sieve_time).transpose()?;
    let end = settings.end_time.as_deref().map(sieve_time).transpose()?;
    if let (Some(s), Some(e), Some(2)) = (&start, &end, settings.state) {
        if s >= e {
            return Err(OofInvalid::Conflicting(
                "EndTime is not after StartTime".into(),
            ));
        }
    }
    for m in &settings.messages {
        if let Some(r) = &m.reply_message {
            if r.len() > MAX_REPLY_BYTES {
                return Err(OofInvalid::Invalid(format!(
                    "ReplyMessage over {MAX_REPLY_BYTES} bytes"
                )));
            }
            if r.chars()
                .any(|c| c.is_control() && !matches!(c, '\r' | '\n' | '\t'))
            {
                return Err(OofInvalid::Invalid(
                    "ReplyMessage with control characters".into(),
                ));
            }
        }
        if let Some(t) = &m.body_type {
            if !t.eq_ignore_ascii_case("text") && !t.eq_ignore_ascii_case("html") {
                return Err(OofInvalid::Invalid(format!("BodyType {t:?}")));
            }
        }
    }
    let audiences: Vec<_> = settings.messages.iter().map(|m| m.audience).collect();
    for (i, a) in audiences.iter().enumerate() {
        if audiences[..i].contains(a) {
            return Err(OofInvalid::Conflicting(format!("two messages for {a:?}")));
        }
    }
    Ok(())
}

/// The settings after a Set: what the Set carries over what opush's script
/// held (`stored`, whose state counts only while `active`). [MS-ASCMD]
/// 2.2.3.124: OofState is optional; StartTime and EndTime are kept only
/// with OofState 2. An OofMessage replaces the stored one of its audience;
/// audiences the Set leaves out keep theirs.
pub fn merge(request: &OofSettings, stored: Option<&OofSettings>, active: bool) -> OofSettings {
    let state = request.state.unwrap_or_else(|| match stored {
        Some(s) if active => s.state.unwrap_or(0),
        _ => 0,
    });
    let (start_time, end_time) = if state == 2 {
        (
            request
                .start_time
                .clone()
                .or_else(|| stored.and_then(|s| s.start_time.clone())),
            request
                .end_time
                .clone()
                .or_else(|| stored.and_then(|s| s.end_time.clone())),
        )
    } else {
        (None, None)
    };
    let mut messages = request.messages.clone();
    for m in stored.map(|s| s.messages.as_slice()).unwrap_or_default() {
        if !messages.iter().any(|r| r.audience == m.audience) {
            messages.push(m.clone());
        }
    }
    OofSettings {
        state: Some(state),
        start_time,
        end_time,
        messages,
    }
}

/// Checks the merged settings are complete: a time-based state has its
/// window, the end after the start.
pub fn check_complete(settings: &OofSettings) -> Result<(), OofInvalid> {
    if settings.state != Some(2) {
        return Ok(());
    }
    let start = settings.start_time.as_deref().map(sieve_time).transpose()?;
    let end = settings.end_time.as_deref().map(sieve_time).transpose()?;
    match (start, end) {
        (Some(s), Some(e)) if s >= e => Err(OofInvalid::Conflicting(
            "EndTime is not after StartTime".into(),
        )),
        (Some(_), Some(_)) => Ok(()),
        _ => Err(OofInvalid::Invalid(
            "OofState 2 needs StartTime and EndTime".into(),
        )),
    }
}

fn hex(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for b in s.bytes() {
        let _ = write!(out, "{b:02x}");
    }
    out
}

fn unhex(s: &str) -> Option<String> {
    if s.len() % 2 != 0 {
        return None;
    }
    let bytes = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

/// A Sieve quoted string.
fn quoted(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

fn string_list(items: &[String]) -> String {
    let q: Vec<String> = items.iter().map(|s| quoted(s)).collect();
    format!("[{}]", q.join(", "))
}

fn audience_name(a: OofAudience) -> &'static str {
    match a {
        OofAudience::Internal => "internal",
        OofAudience::ExternalKnown => "external-known",
        OofAudience::ExternalUnknown => "external-unknown",
    }
}

fn audience_of(name: &str) -> Option<OofAudience> {
    Some(match name {
        "internal" => OofAudience::Internal,
        "external-known" => OofAudience::ExternalKnown,
        "external-unknown" => OofAudience::ExternalUnknown,
        _ => return None,
    })
}

/// The text a reply carries: HTML reduced to text.
fn reply_text(m: &OofMessage) -> String {
    let text = m.reply_message.clone().unwrap_or_default();
    if m.body_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("html"))
    {
        crate::email::html::strip_tags(&text).trim().to_owned()
    } else {
        text
    }
}

/// An HTML reply as the MIME entity `vacation :mime` sends: the text
/// (tags dropped) and the HTML as set, as multipart/alternative, so that a
/// mail program shows the HTML and any other the text. `None` for a text
/// reply.
fn reply_mime(m: &OofMessage) -> Option<String> {
    let html = m.reply_message.as_deref()?;
    if !m
        .body_type
        .as_deref()
        .is_some_and(|t| t.eq_ignore_ascii_case("html"))
    {
        return None;
    }
    let text = reply_text(m);
    // A boundary that is in neither part.
    let digest = blake3::hash(format!("{text}\0{html}").as_bytes());
    let boundary = format!("=_opush-oof-{}", &digest.to_hex()[..24]);
    let lines = |s: &str| s.lines().collect::<Vec<_>>().join("\r\n");
    Some(format!(
        "MIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\n\
         Content-Type: text/plain; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n\
         {}\r\n\
         --{boundary}\r\n\
         Content-Type: text/html; charset=utf-8\r\n\
         Content-Transfer-Encoding: 8bit\r\n\r\n\
         {}\r\n\
         --{boundary}--\r\n",
        lines(&text),
        lines(html)
    ))
}

/// The message of `audience` when it is enabled and has a text.
fn enabled(settings: &OofSettings, audience: OofAudience) -> Option<&OofMessage> {
    settings.messages.iter().find(|m| {
        m.audience == audience
            && m.enabled == Some(true)
            && m.reply_message
                .as_deref()
                .is_some_and(|r| !r.trim().is_empty())
    })
}

/// The whole script for `stored` (already [`validate`]d).
pub fn compose(stored: &StoredOof, user: &ScriptUser<'_>) -> Result<String, OofInvalid> {
    let s = &stored.settings;
    let mut out = String::new();
    let _ = writeln!(out, "{MAGIC}");
    out.push_str(
        "# Out-of-office set from an Exchange ActiveSync device, written by opush.\n\
         # opush rewrites this script whole at every change: edit it from the device.\n",
    );
    let _ = writeln!(out, "# state {}", s.state.unwrap_or(0));
    if let Some(t) = &s.start_time {
        let _ = writeln!(out, "# start {}", hex(t));
    }
    if let Some(t) = &s.end_time {
        let _ = writeln!(out, "# end {}", hex(t));
    }
    if let Some(p) = &stored.previous {
        let _ = writeln!(out, "# previous {}", hex(p));
    }
    for r in &stored.rules {
        let _ = writeln!(
            out,
            "# conversation {} {} {}",
            hex(&r.root),
            hex(&r.folder),
            hex(&r.until)
        );
    }
    for m in &s.messages {
        let enabled = match m.enabled {
            None => "-",
            Some(true) => "1",
            Some(false) => "0",
        };
        let _ = writeln!(
            out,
            "# message {} {enabled} {} {}",
            audience_name(m.audience),
            m.body_type.as_deref().map_or("-".to_owned(), hex),
            m.reply_message.as_deref().map_or("-".to_owned(), hex),
        );
    }
    let state = s.state.unwrap_or(0);
    let internal = enabled(s, OofAudience::Internal);
    let external = enabled(s, OofAudience::ExternalUnknown);
    let replies = state != 0 && (internal.is_some() || external.is_some());
    let runs = stored.runs();
    let mut require = Vec::new();
    if replies {
        require.extend(["vacation", "envelope", "variables"]);
        if state == 2 {
            require.extend(["date", "relational"]);
        }
    }
    if !stored.rules.is_empty() {
        require.extend(["fileinto", "date", "relational"]);
    }
    if stored.previous.is_some() && runs {
        require.push("include");
    }
    let mut r: Vec<String> = Vec::with_capacity(require.len());
    for name in require {
        if !r.iter().any(|n| n == name) {
            r.push(name.to_owned());
        }
    }
    if !r.is_empty() {
        let _ = writeln!(out, "require {};", string_list(&r));
    }
    if replies {
        let primary = user
            .addresses
            .first()
            .ok_or_else(|| OofInvalid::Invalid("the user has no address".into()))?;
        // The reply's subject is the original's after "Automatic reply: "
        // (as Exchange words it), read at delivery into a variable. With
        // "variables", every string of the script is expanded, so a "${"
        // in the user's text is written as "${dollar}{" (expansion is not
        // recursive: it comes out as "${").
        out.push_str(
            "set \"dollar\" \"$\";\n\
             set \"oof_subject\" \"Automatic reply\";\n\
             if header :matches \"subject\" \"?*\" {\n  set \"oof_subject\" \"Automatic reply: ${0}\";\n}\n",
        );
        let lit = |s: &str| quoted(&s.replace("${", "${dollar}{"));
        let list = |items: &[String]| {
            let q: Vec<String> = items.iter().map(|s| lit(s)).collect();
            format!("[{}]", q.join(", "))
        };
        let vacation = |m: &OofMessage| {
            let (mime, reason) = match reply_mime(m) {
                Some(entity) => (":mime ", entity),
                None => ("", reply_text(m)),
            };
            format!(
                "vacation :days 1 :subject \"${{oof_subject}}\" :from {} :addresses {} {mime}{};",
                lit(primary),
                list(user.addresses),
                lit(&reason)
            )
        };
        let mut body = String::new();
        match (internal, external) {
            (Some(i), Some(e)) => {
                let _ = write!(
                    body,
                    "if envelope :domain :is \"from\" {} {{\n  {}\n}} else {{\n  {}\n}}\n",
                    list(user.internal_domains),
                    vacation(i),
                    vacation(e)
                );
            }
            (Some(i), None) => {
                let _ = write!(
                    body,
                    "if envelope :domain :is \"from\" {} {{\n  {}\n}}\n",
                    list(user.internal_domains),
                    vacation(i)
                );
            }
            (None, Some(e)) => {
                let _ = write!(
                    body,
                    "if not envelope :domain :is \"from\" {} {{\n  {}\n}}\n",
                    list(user.internal_domains),
                    vacation(e)
                );
            }
            (None, None) => {}
        }
        if state == 2 {
            let start = sieve_time(s.start_time.as_deref().unwrap_or_default())?;
            let end = sieve_time(s.end_time.as_deref().unwrap_or_default())?;
            let _ = write!(
                out,
                "if allof (currentdate :zone \"+0000\" :value \"ge\" \"iso8601\" {},\n          currentdate :zone \"+0000\" :value \"lt\" \"iso8601\" {}) {{\n{}}}\n",
                quoted(&start),
                quoted(&end),
                // As it is: indenting its lines would change the texts
                // (a multi-line string's later lines, a MIME entity's
                // header lines).
                body
            );
        } else {
            out.push_str(&body);
        }
    }
    if !stored.rules.is_empty() {
        // A header that is absent or empty names no root
        // (`email::conversation::root` skips it).
        const NO_REFERENCES: &str =
            "anyof (not exists \"references\", header :is \"references\" \"\")";
        const NO_IN_REPLY_TO: &str =
            "anyof (not exists \"in-reply-to\", header :is \"in-reply-to\" \"\")";
        // With "variables" every string is expanded: "${" as in the texts.
        let text = |s: &str| match replies {
            true => quoted(&s.replace("${", "${dollar}{")),
            false => quoted(s),
        };
        out.push_str(
            "# Conversations moved from a device with MoveAlways: their later\n\
             # messages go where the conversation went.\n",
        );
        for rule in &stored.rules {
            let first = text(&format!("<{}>*", literal_pattern(&rule.root)));
            let _ = write!(
                out,
                "if allof (currentdate :zone \"+0000\" :value \"le\" \"date\" {},\n\
                 \x20         anyof (header :matches \"references\" {first},\n\
                 \x20                allof ({NO_REFERENCES}, header :matches \"in-reply-to\" {first}),\n\
                 \x20                allof ({NO_REFERENCES}, {NO_IN_REPLY_TO},\n\
                 \x20                       header :is \"message-id\" {}))) {{\n\
                 \x20 fileinto {};\n\
                 \x20 stop;\n}}\n",
                text(&rule.until),
                text(&format!("<{}>", rule.root)),
                text(&rule.folder),
            );
        }
    }
    if let (Some(p), true) = (&stored.previous, runs) {
        let _ = writeln!(
            out,
            "# The filters that were active before opush's script:\ninclude :personal :optional {};",
            if replies {
                quoted(&p.replace("${", "${dollar}{"))
            } else {
                quoted(p)
            }
        );
    }
    Ok(out)
}

/// Reads the header of a script opush wrote; `None` for any other script.
pub fn parse(text: &str) -> Option<StoredOof> {
    let mut lines = text.lines();
    if lines.next()? != MAGIC {
        return None;
    }
    let mut stored = StoredOof::default();
    for line in lines {
        let Some(rest) = line.strip_prefix("# ") else {
            break;
        };
        let mut f = rest.split(' ');
        match f.next() {
            Some("state") => stored.settings.state = f.next()?.parse().ok(),
            Some("start") => stored.settings.start_time = Some(unhex(f.next()?)?),
            Some("end") => stored.settings.end_time = Some(unhex(f.next()?)?),
            Some("previous") => stored.previous = Some(unhex(f.next()?)?),
            Some("conversation") => stored.rules.push(ConversationRule {
                root: unhex(f.next()?)?,
                folder: unhex(f.next()?)?,
                until: unhex(f.next()?)?,
            }),
            Some("message") => {
                let audience = audience_of(f.next()?)?;
                let enabled = match f.next()? {
                    "1" => Some(true),
                    "0" => Some(false),
                    _ => None,
                };
                let opt = |v: &str| {
                    if v == "-" {
                        Some(None)
                    } else {
                        unhex(v).map(Some)
                    }
                };
                let body_type = opt(f.next()?)?;
                let reply_message = opt(f.next()?)?;
                stored.settings.messages.push(OofMessage {
                    audience,
                    enabled,
                    reply_message,
                    body_type,
                });
            }
            _ => {}
        }
    }
    Some(stored)
}

/// The settings a Get answers, the ReplyMessages in `body_type` (as set
/// when the device asks for the type it set them in).
pub fn for_get(stored: Option<StoredOof>, active: bool, body_type: &str) -> OofSettings {
    let Some(stored) = stored else {
        return OofSettings {
            state: Some(0),
            start_time: None,
            end_time: None,
            messages: [
                OofAudience::Internal,
                OofAudience::ExternalKnown,
                OofAudience::ExternalUnknown,
            ]
            .into_iter()
            .map(|audience| OofMessage {
                audience,
                enabled: Some(false),
                reply_message: None,
                body_type: Some(body_type.to_owned()),
            })
            .collect(),
        };
    };
    let mut s = stored.settings;
    if !active {
        s.state = Some(0);
    }
    for m in &mut s.messages {
        let set_as = m.body_type.clone().unwrap_or_else(|| "Text".to_owned());
        if set_as.eq_ignore_ascii_case(body_type) {
            continue;
        }
        if let Some(r) = &m.reply_message {
            if body_type.eq_ignore_ascii_case("html") {
                m.reply_message = Some(format!(
                    "<html><body>{}</body></html>",
                    escape_text(r).replace('\n', "<br>")
                ));
            } else {
                m.reply_message = Some(crate::email::html::strip_tags(r).trim().to_owned());
            }
            m.body_type = Some(body_type.to_owned());
        }
    }
    s
}

/// What a Get or Set did, for the decision record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OofDone {
    /// The settings (Get) or `None` (Set).
    pub settings: Option<OofSettings>,
    /// The script written or read.
    pub script: Option<String>,
}

/// Reads opush's script (Get).
pub async fn get(
    service: &OofService,
    sieve: &SieveSettings,
    login: &SieveLogin<'_>,
    body_type: &str,
) -> Result<OofDone, SieveError> {
    let mut c = SieveClient::connect(sieve, login).await?;
    let scripts = c.list_scripts().await?;
    let active = scripts.iter().any(|s| s.active && s.name == service.script);
    let text = if scripts.iter().any(|s| s.name == service.script) {
        c.get_script(&service.script).await?
    } else {
        None
    };
    c.logout().await;
    let stored = text.as_deref().and_then(parse);
    Ok(OofDone {
        settings: Some(for_get(stored, active, body_type)),
        script: text,
    })
}

/// The rules' folders after the user's folder `old` was renamed to `new`
/// (`None`: deleted), its subfolders (below `delimiter`) with it: the
/// rules filing into a deleted folder are dropped (Dovecot would file
/// into INBOX). Whether any rule changed.
pub fn refile_rules(
    rules: &mut Vec<ConversationRule>,
    (old, new): (&str, Option<&str>),
    delimiter: Option<char>,
) -> bool {
    let under = |folder: &str| -> Option<usize> {
        if folder == old {
            return Some(old.len());
        }
        let d = delimiter?;
        let rest = folder.strip_prefix(old)?;
        rest.starts_with(d).then_some(old.len())
    };
    let before = rules.clone();
    rules.retain_mut(|r| match (under(&r.folder), new) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(at), Some(new)) => {
            r.folder = format!("{new}{}", &r.folder[at..]);
            true
        }
    });
    *rules != before
}

/// After the device renamed (or deleted) folder `old` (UTF-8, as Sieve
/// names it): the conversation rules that file into it (or its
/// subfolders) follow it ([`refile_rules`]). Nothing is written when no
/// rule names it. Whether the script was rewritten.
pub async fn refile_conversations(
    service: &OofService,
    sieve: &SieveSettings,
    login: &SieveLogin<'_>,
    (old, new, delimiter): (&str, Option<&str>, Option<char>),
    addresses: &[String],
) -> Result<bool, SieveError> {
    let _one = service.writers.lock(login.user).await;
    let mut c = SieveClient::connect(sieve, login).await?;
    let current = Current::read(&mut c, service).await?;
    let Some(mut stored) = current.ours.clone() else {
        c.logout().await;
        return Ok(false);
    };
    if !refile_rules(&mut stored.rules, (old, new), delimiter) {
        c.logout().await;
        return Ok(false);
    }
    if !current.ours_active {
        stored.settings.state = Some(0);
    }
    stored.previous = current.previous();
    let written = write(&mut c, service, (&stored, current.ours_active), addresses).await?;
    c.logout().await;
    Ok(written.is_ok())
}

/// opush's script as the server holds it, read before a rewrite.
struct Current {
    /// Every script's name.
    names: Vec<String>,
    /// The active script's name.
    active: Option<String>,
    /// opush's script is the active one.
    ours_active: bool,
    /// opush's script's header, when it has one.
    ours: Option<StoredOof>,
}

impl Current {
    async fn read(c: &mut SieveClient, service: &OofService) -> Result<Current, SieveError> {
        let scripts = c.list_scripts().await?;
        let active = scripts.iter().find(|s| s.active).map(|s| s.name.clone());
        let ours_active = active.as_deref() == Some(service.script.as_str());
        let ours = if scripts.iter().any(|s| s.name == service.script) {
            c.get_script(&service.script)
                .await?
                .as_deref()
                .and_then(parse)
        } else {
            None
        };
        Ok(Current {
            names: scripts.into_iter().map(|s| s.name).collect(),
            active,
            ours_active,
            ours,
        })
    }

    /// The script opush's includes (and gives back the active place to):
    /// the one recorded when opush's was activated, else the one active
    /// now; only if it still exists.
    fn previous(&self) -> Option<String> {
        let previous = match self.ours_active {
            true => self.ours.as_ref().and_then(|o| o.previous.clone()),
            false => self.active.clone(),
        };
        previous.filter(|p| self.names.iter().any(|n| n == p))
    }
}

/// The domains whose senders are internal: `[sieve] internal_domains`, or
/// those of the user's `addresses`.
fn internal_domains(service: &OofService, addresses: &[String]) -> Vec<String> {
    let mut domains = service.internal_domains.clone();
    if domains.is_empty() {
        for a in addresses {
            if let Some((_, d)) = a.rsplit_once('@') {
                let d = d.to_ascii_lowercase();
                if !domains.contains(&d) {
                    domains.push(d);
                }
            }
        }
    }
    domains
}

/// Writes `stored` as opush's script, then makes it the active one when it
/// [runs](StoredOof::runs) or gives the active place back to the previous
/// script when it no longer does. The script's text, or why it cannot be
/// written (nothing written then).
async fn write(
    c: &mut SieveClient,
    service: &OofService,
    (stored, ours_active): (&StoredOof, bool),
    addresses: &[String],
) -> Result<Result<String, OofInvalid>, SieveError> {
    let domains = internal_domains(service, addresses);
    let user = ScriptUser {
        addresses,
        internal_domains: &domains,
    };
    let text = match compose(stored, &user) {
        Ok(t) => t,
        Err(e) => return Ok(Err(e)),
    };
    c.put_script(&service.script, &text).await?;
    if stored.runs() {
        if !ours_active {
            c.set_active(&service.script).await?;
        }
    } else if ours_active {
        c.set_active(stored.previous.as_deref().unwrap_or(""))
            .await?;
    }
    Ok(Ok(text))
}

/// Writes opush's script and activates (or deactivates) it (Set;
/// `request` already [`validate`]d, then [`merge`]d over the stored
/// settings and [`check_complete`]d). The conversation rules are kept
/// (those past their last day, `now` a Unix time, dropped).
pub async fn set(
    service: &OofService,
    sieve: &SieveSettings,
    login: &SieveLogin<'_>,
    request: &OofSettings,
    (addresses, now): (&[String], i64),
) -> Result<Result<OofDone, OofInvalid>, SieveError> {
    let _one = service.writers.lock(login.user).await;
    let mut c = SieveClient::connect(sieve, login).await?;
    let current = Current::read(&mut c, service).await?;
    let settings = merge(
        request,
        current.ours.as_ref().map(|o| &o.settings),
        current.ours_active,
    );
    if let Err(e) = check_complete(&settings) {
        c.logout().await;
        return Ok(Err(e));
    }
    let mut rules = current
        .ours
        .as_ref()
        .map(|o| o.rules.clone())
        .unwrap_or_default();
    prune_rules(&mut rules, &utc_day(now));
    let stored = StoredOof {
        settings,
        previous: current.previous(),
        rules,
    };
    let written = write(&mut c, service, (&stored, current.ours_active), addresses).await?;
    c.logout().await;
    Ok(written.map(|text| OofDone {
        settings: None,
        script: Some(text),
    }))
}

/// Adds (or renews) the rule that files the later messages of the
/// conversation rooted at `root` into `folder` (ItemOperations `Move` with
/// `MoveAlways`; `now` a Unix time), the out-of-office settings kept as
/// they are in force (state 0 when opush's script is not the active one).
/// The script's text.
pub async fn file_conversation_always(
    service: &OofService,
    sieve: &SieveSettings,
    login: &SieveLogin<'_>,
    (root, folder): (&str, &str),
    (addresses, now): (&[String], i64),
) -> Result<Result<String, OofInvalid>, SieveError> {
    let _one = service.writers.lock(login.user).await;
    let mut c = SieveClient::connect(sieve, login).await?;
    let current = Current::read(&mut c, service).await?;
    let previous = current.previous();
    let mut stored = current.ours.clone().unwrap_or_default();
    if !current.ours_active {
        stored.settings.state = Some(0);
    }
    stored.previous = previous;
    file_conversation(&mut stored, root, folder, now);
    let written = write(&mut c, service, (&stored, current.ours_active), addresses).await?;
    c.logout().await;
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn msg(audience: OofAudience, on: bool, text: &str, body_type: &str) -> OofMessage {
        OofMessage {
            audience,
            enabled: Some(on),
            reply_message: Some(text.into()),
            body_type: Some(body_type.into()),
        }
    }

    fn timed() -> OofSettings {
        OofSettings {
            state: Some(2),
            start_time: Some("2026-11-30T09:00:00.000Z".into()),
            end_time: Some("2026-12-04T18:00:00.000Z".into()),
            messages: vec![
                msg(
                    OofAudience::Internal,
                    true,
                    "Back on \"Friday\" \\o/\nAsk Bob.",
                    "Text",
                ),
                msg(OofAudience::ExternalKnown, false, "known", "Text"),
                msg(
                    OofAudience::ExternalUnknown,
                    true,
                    "<p>Away &amp; out</p>",
                    "HTML",
                ),
            ],
        }
    }

    fn user() -> (Vec<String>, Vec<String>) {
        (vec!["u@load.test".into()], vec!["load.test".into()])
    }

    #[test]
    fn a_script_keeps_the_settings_exactly() {
        let (addresses, domains) = user();
        let stored = StoredOof {
            settings: timed(),
            previous: Some("roundcube \"filters\"".into()),
            rules: Vec::new(),
        };
        validate(&stored.settings).unwrap();
        let text = compose(
            &stored,
            &ScriptUser {
                addresses: &addresses,
                internal_domains: &domains,
            },
        )
        .unwrap();
        assert_eq!(parse(&text).unwrap(), stored);
        assert!(text.contains(r#""2026-11-30T09:00:00Z""#), "{text}");
        assert!(text.contains(r#"Back on \"Friday\" \\o/"#), "{text}");
        // A multi-line text inside the time window's block is as written.
        assert!(text.contains("\\\\o/\nAsk Bob.\";"), "{text}");
        // The HTML one goes as both forms; the subject is the original's.
        assert!(text.contains(":mime \"MIME-Version: 1.0\r\n"), "{text}");
        assert!(text.contains("multipart/alternative"), "{text}");
        assert!(text.contains("\r\n\r\nAway & out\r\n"), "{text}");
        assert!(text.contains("\r\n\r\n<p>Away &amp; out</p>\r\n"), "{text}");
        assert!(text.contains(r#":subject "${oof_subject}""#), "{text}");
        assert!(
            text.contains(r#"set "oof_subject" "Automatic reply: ${0}";"#),
            "{text}"
        );
        assert!(text.contains(r#"include :personal :optional "roundcube \"filters\"""#));
        assert!(parse("require \"vacation\";").is_none());
    }

    /// With `variables`, every string is expanded at delivery: a `${` the
    /// user wrote must come out as written, not as a variable.
    #[test]
    fn a_dollar_brace_in_the_text_is_not_a_variable() {
        let (addresses, domains) = user();
        let mut settings = timed();
        settings.messages[0].reply_message = Some("costs ${1} or ${price}".into());
        let text = compose(
            &StoredOof {
                settings,
                previous: None,
                rules: Vec::new(),
            },
            &ScriptUser {
                addresses: &addresses,
                internal_domains: &domains,
            },
        )
        .unwrap();
        assert!(
            text.contains(r#""costs ${dollar}{1} or ${dollar}{price}""#),
            "{text}"
        );
        assert!(text.contains("set \"dollar\" \"$\";"), "{text}");
    }

    #[test]
    fn a_get_answers_in_the_type_asked() {
        let stored = StoredOof {
            settings: timed(),
            previous: None,
            rules: Vec::new(),
        };
        let g = for_get(Some(stored.clone()), true, "Text");
        assert_eq!(g.messages[0], stored.settings.messages[0]);
        assert_eq!(g.messages[2].reply_message.as_deref(), Some("Away & out"));
        assert_eq!(for_get(Some(stored), false, "Text").state, Some(0));
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut s = timed();
        s.end_time = Some("2026-11-30T08:00:00.000Z".into());
        assert!(matches!(validate(&s), Err(OofInvalid::Conflicting(_))));
        assert!(matches!(
            check_complete(&s),
            Err(OofInvalid::Conflicting(_))
        ));
        s.end_time = Some("tomorrow".into());
        assert!(matches!(validate(&s), Err(OofInvalid::Invalid(_))));
        s.end_time = None;
        validate(&s).unwrap();
        assert!(matches!(
            check_complete(&merge(&s, None, false)),
            Err(OofInvalid::Invalid(_))
        ));
        let mut s = timed();
        s.messages[0].reply_message = Some("nul \0 inside".into());
        assert!(validate(&s).is_err());
        let mut s = timed();
        s.state = Some(3);
        assert!(validate(&s).is_err());
        let mut s = timed();
        s.messages[0].body_type = Some("RTF".into());
        assert!(validate(&s).is_err());
    }

    // [MS-ASCMD] 2.2.3.124: OofState optional, times kept with state 2 only;
    // audiences left out keep their messages.
    #[test]
    fn a_set_changes_what_it_carries() {
        let stored = timed();
        let only_state = OofSettings {
            state: Some(1),
            start_time: Some("2026-11-30T09:00:00.000Z".into()),
            end_time: Some("2026-12-30T09:00:00.000Z".into()),
            messages: Vec::new(),
        };
        let m = merge(&only_state, Some(&stored), true);
        assert_eq!((m.state, m.start_time, m.end_time), (Some(1), None, None));
        assert_eq!(m.messages, stored.messages);
        let new_internal = OofSettings {
            state: None,
            start_time: None,
            end_time: None,
            messages: vec![msg(OofAudience::Internal, false, "new", "Text")],
        };
        let m = merge(&new_internal, Some(&stored), true);
        assert_eq!(m.state, Some(2));
        assert_eq!(m.start_time, stored.start_time);
        assert_eq!(m.messages[0].reply_message.as_deref(), Some("new"));
        assert_eq!(m.messages.len(), 3);
        // Not active: the stored state no longer holds.
        assert_eq!(merge(&new_internal, Some(&stored), false).state, Some(0));
        // A complete Set is kept exactly.
        assert_eq!(merge(&stored, None, false), stored);
    }

    fn rule(root: &str, until: &str) -> ConversationRule {
        ConversationRule {
            root: root.into(),
            folder: "Archive/2026".into(),
            until: until.into(),
        }
    }

    /// 2026-11-30 00:00 UTC.
    const NOV_30: i64 = 1_795_996_800;

    #[test]
    fn conversation_rules_are_kept_in_the_header_and_filed_into() {
        let (addresses, domains) = user();
        let user = ScriptUser {
            addresses: &addresses,
            internal_domains: &domains,
        };
        // Out-of-office on (variables): a "${" and wildcards in the root
        // are matched literally.
        let mut stored = StoredOof {
            settings: timed(),
            previous: Some("webmail".into()),
            rules: Vec::new(),
        };
        file_conversation(
            &mut stored,
            "a*b?c${x}@example.test",
            "Archive/2026",
            NOV_30,
        );
        file_conversation(&mut stored, "plain@example.test", "Trash", NOV_30);
        assert_eq!(stored.rules[0].until, "2026-12-30");
        let text = compose(&stored, &user).unwrap();
        assert_eq!(parse(&text).unwrap(), stored);
        assert!(
            text.contains(r#"require ["vacation", "envelope", "variables", "date", "relational", "fileinto", "include"];"#),
            "{text}"
        );
        assert!(
            text.contains(
                r#"header :matches "references" "<a\\*b\\?c${dollar}{x}@example.test>*""#
            ),
            "{text}"
        );
        assert!(text.contains(r#"fileinto "Archive/2026";"#), "{text}");
        assert!(
            text.contains(r#":value "le" "date" "2026-12-30""#),
            "{text}"
        );
        assert!(
            text.contains(r#"header :is "message-id" "<plain@example.test>""#),
            "{text}"
        );
        // An empty References names no root: In-Reply-To's counts.
        assert!(
            text.contains(r#"allof (anyof (not exists "references", header :is "references" ""), header :matches "in-reply-to""#),
            "{text}"
        );
        // The rules come after the vacation part, the user's filters last.
        let (vacation, filing, include) = (
            text.find("vacation :days").unwrap(),
            text.find("fileinto \"Trash\"").unwrap(),
            text.find("include :personal").unwrap(),
        );
        assert!(vacation < filing && filing < include, "{text}");

        // Out-of-office off: the script still runs for its rules, with the
        // previous filters, and without "variables" the strings are plain.
        stored.settings.state = Some(0);
        assert!(stored.runs());
        let text = compose(&stored, &user).unwrap();
        assert!(!text.contains("vacation :days"), "{text}");
        assert!(
            text.contains(r#""<a\\*b\\?c${x}@example.test>*""#),
            "{text}"
        );
        assert!(
            text.contains("include :personal :optional \"webmail\";"),
            "{text}"
        );
        stored.rules.clear();
        assert!(!stored.runs());
        assert!(!compose(&stored, &user).unwrap().contains("include"));
    }

    #[test]
    fn conversation_rules_end_and_are_bounded() {
        let mut stored = StoredOof::default();
        file_conversation(&mut stored, "old@x", "A", NOV_30);
        // Renewed: one rule, the later day.
        file_conversation(&mut stored, "old@x", "B", NOV_30 + 86_400);
        assert_eq!(
            stored.rules,
            vec![ConversationRule {
                folder: "B".into(),
                ..rule("old@x", "2026-12-31")
            }]
        );
        // Past its last day it goes at the next rewrite.
        file_conversation(&mut stored, "new@x", "A", NOV_30 + 32 * 86_400);
        assert_eq!(stored.rules.len(), 1);
        assert_eq!(stored.rules[0].root, "new@x");

        let mut rules: Vec<ConversationRule> = (0..MAX_RULES + 3)
            .map(|i| {
                rule(
                    &format!("r{i}@x"),
                    if i < 5 { "2027-01-01" } else { "2027-02-01" },
                )
            })
            .collect();
        prune_rules(&mut rules, "2026-12-01");
        assert_eq!(rules.len(), MAX_RULES);
        // The three that end first went; the order of the others is kept.
        assert_eq!(rules[0].root, "r3@x");
        assert_eq!(rules[2].root, "r5@x");
        prune_rules(&mut rules, "2027-01-02");
        assert_eq!(rules.len(), MAX_RULES - 2);
        assert_eq!(utc_day(NOV_30), "2026-11-30");
    }

    #[test]
    fn rules_follow_a_renamed_folder_and_go_with_a_deleted_one() {
        let mut rules = vec![
            ConversationRule {
                folder: "Archive".into(),
                ..rule("a@x", "2027-01-01")
            },
            ConversationRule {
                folder: "Archive/2026".into(),
                ..rule("b@x", "2027-01-01")
            },
            ConversationRule {
                folder: "Archived".into(),
                ..rule("c@x", "2027-01-01")
            },
        ];
        assert!(refile_rules(
            &mut rules,
            ("Archive", Some("Old/Archive")),
            Some('/')
        ));
        let folders: Vec<&str> = rules.iter().map(|r| r.folder.as_str()).collect();
        assert_eq!(folders, ["Old/Archive", "Old/Archive/2026", "Archived"]);
        assert!(!refile_rules(&mut rules, ("Elsewhere", None), Some('/')));
        assert!(refile_rules(&mut rules, ("Old/Archive", None), Some('/')));
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0].folder, "Archived");
    }
}
