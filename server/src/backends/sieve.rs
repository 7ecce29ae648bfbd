//! ManageSieve client (RFC 5804), for the out-of-office script opush keeps
//! for a user (Settings `Oof`, `crate::oof`).
//!
//! One [`SieveClient`] is one connection, logged in as the device's user
//! with SASL PLAIN (the request's own credentials, as for IMAP; never
//! logged): LISTSCRIPTS, GETSCRIPT, PUTSCRIPT, CHECKSCRIPT, SETACTIVE. The
//! server's strings and literals are read whatever form it picks; opush
//! sends script bodies as non-synchronizing literals (`{n+}`, the only
//! client literal RFC 5804 has) and names as quoted strings.
//!
//! Errors tell an outage ([`SieveError::Unavailable`]: connect failure,
//! timeout, `BYE`, a dropped connection; the device retries) from a refusal
//! ([`SieveError::Auth`], [`SieveError::Rejected`]) and from a server this
//! client cannot follow ([`SieveError::Protocol`]). Every read and write is
//! bounded by the configured timeout.
//!
//! Transport: plain TCP, or STARTTLS with rustls (the IMAP client's trust
//! store: webpki roots plus `ca_file`). A password goes in clear only to a
//! loopback host unless `[sieve] allow_plaintext` says otherwise (checked
//! when the configuration is loaded, and again here).

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::imap::stream::ImapStream;

/// Largest literal or line accepted from the server (a script is bounded
/// by the server's own quota; this only stops a runaway peer).
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// Typed ManageSieve failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SieveError {
    /// The server refused the credentials (HTTP 401 for the device).
    #[error("ManageSieve authentication failed for {user}")]
    Auth {
        /// Login name (never the password).
        user: String,
    },
    /// Connect, I/O, timeout, `BYE`: retryable.
    #[error("ManageSieve server unavailable: {0}")]
    Unavailable(String),
    /// The server answered something this client cannot interpret.
    #[error("ManageSieve protocol error: {0}")]
    Protocol(String),
    /// The server answered `NO` (a script that does not compile, a quota,
    /// a name that does not exist…).
    #[error("ManageSieve server refused {command}: {code} {text}")]
    Rejected {
        /// Command name.
        command: &'static str,
        /// The response code (`NONEXISTENT`, `QUOTA`, …), empty when none.
        code: String,
        /// The server's human-readable text.
        text: String,
    },
    /// A value that cannot be sent (CR/LF/NUL in a name), or a set-up this
    /// client refuses (a password in clear to a remote host).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// A command that changes the user's scripts was not sent: the request
    /// could not prove it still holds its device's lease (`crate::fence`).
    #[error("ManageSieve {0}")]
    Fenced(crate::fence::Fenced),
}

impl SieveError {
    /// Whether retrying later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, SieveError::Unavailable(_))
    }

    /// A short name of the kind of failure, for metrics labels.
    pub fn kind(&self) -> &'static str {
        match self {
            SieveError::Auth { .. } => "auth",
            SieveError::Unavailable(_) => "unavailable",
            SieveError::Protocol(_) => "protocol",
            SieveError::Rejected { .. } => "rejected",
            SieveError::InvalidInput(_) => "invalid_input",
            SieveError::Fenced(_) => "fenced",
        }
    }
}

/// How to reach the ManageSieve server (the `[sieve]` section).
#[derive(Debug, Clone)]
pub struct SieveSettings {
    /// Host name or address.
    pub host: String,
    /// Port (4190 by default; the test stack's is 1190).
    pub port: u16,
    /// Upgrade the connection with STARTTLS before logging in.
    pub starttls: bool,
    /// Extra CA certificates (PEM) trusted for TLS.
    pub ca_file: Option<PathBuf>,
    /// Send the password without TLS to a host that is not loopback.
    pub allow_plaintext: bool,
    /// Bound on connecting and on each read or write.
    pub timeout: Duration,
}

impl SieveSettings {
    /// Whether the host is a loopback address or `localhost`.
    pub fn host_is_loopback(&self) -> bool {
        self.host.eq_ignore_ascii_case("localhost")
            || self
                .host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }
}

/// The login: the device user's own credentials, held for the request.
pub struct SieveLogin<'a> {
    /// The login name (as for IMAP).
    pub user: &'a str,
    /// The password, never logged.
    pub password: &'a str,
}

impl std::fmt::Debug for SieveLogin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SieveLogin")
            .field("user", &self.user)
            .field("password", &"*")
            .finish()
    }
}

/// One script of LISTSCRIPTS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptEntry {
    /// Its name.
    pub name: String,
    /// Whether it is the active script.
    pub active: bool,
}

/// One token of a server line.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// An atom (`OK`, `ACTIVE`, a response code…).
    Atom(String),
    /// A quoted string or a literal.
    Str(String),
    /// `(`…`)` around a response code, flattened.
    Open,
    /// `)`.
    Close,
}

/// The final line of a response.
#[derive(Debug)]
struct Completion {
    /// `OK`, `NO` or `BYE`.
    kind: String,
    /// The response code, e.g. `NONEXISTENT`, with its arguments.
    code: Vec<String>,
    /// The human-readable text.
    text: String,
}

/// A logged-in ManageSieve connection.
pub struct SieveClient {
    conn: BufReader<ImapStream>,
    timeout: Duration,
    /// The SIEVE capability: the extensions the server's scripts may use.
    extensions: Vec<String>,
}

impl std::fmt::Debug for SieveClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SieveClient")
            .field("extensions", &self.extensions)
            .finish_non_exhaustive()
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> SieveError {
    SieveError::Unavailable(format!("{what}: {e}"))
}

impl SieveClient {
    /// Connects, upgrades with STARTTLS when configured, and logs in.
    pub async fn connect(
        settings: &SieveSettings,
        login: &SieveLogin<'_>,
    ) -> Result<SieveClient, SieveError> {
        if !settings.starttls && !settings.allow_plaintext && !settings.host_is_loopback() {
            return Err(SieveError::InvalidInput(format!(
                "[sieve] host {} is not loopback: set starttls (or allow_plaintext)",
                settings.host
            )));
        }
        let addr = (settings.host.as_str(), settings.port);
        let tcp = tokio::time::timeout(settings.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| unavailable("connect", "timed out"))?
            .map_err(|e| unavailable(&format!("connect {}:{}", settings.host, settings.port), e))?;
        let _ = tcp.set_nodelay(true);
        let mut client = SieveClient {
            conn: BufReader::new(ImapStream::Plain(tcp)),
            timeout: settings.timeout,
            extensions: Vec::new(),
        };
        // The greeting is a capability listing.
        let (caps, done) = client.response().await?;
        client.expect_ok("greeting", done)?;
        client.read_capabilities(&caps);
        if settings.starttls {
            if !caps.iter().any(|l| first_atom_is(l, "STARTTLS")) {
                return Err(SieveError::Protocol(
                    "the server does not offer STARTTLS".into(),
                ));
            }
            client.send(b"STARTTLS\r\n").await?;
            let (_, done) = client.response().await?;
            client.expect_ok("STARTTLS", done)?;
            let stream = match client.conn.into_inner() {
                ImapStream::Plain(tcp) => tcp,
                ImapStream::Tls(_) => {
                    return Err(SieveError::Protocol("TLS negotiated twice".into()))
                }
            };
            let tls = tokio::time::timeout(
                settings.timeout,
                super::imap::stream::tls_connect(
                    &settings.host,
                    settings.ca_file.as_deref(),
                    "sieve",
                    stream,
                ),
            )
            .await
            .map_err(|_| unavailable("TLS handshake", "timed out"))?
            .map_err(|e| SieveError::Unavailable(e.to_string()))?;
            client.conn = BufReader::new(tls);
            // RFC 5804 2.2: the server sends its capabilities again.
            let (caps, done) = client.response().await?;
            client.expect_ok("STARTTLS capabilities", done)?;
            client.read_capabilities(&caps);
        }
        client.authenticate(login).await?;
        Ok(client)
    }

    /// The Sieve extensions the server supports (its `SIEVE` capability).
    pub fn extensions(&self) -> &[String] {
        &self.extensions
    }

    fn read_capabilities(&mut self, lines: &[Vec<Token>]) {
        for l in lines {
            if let [Token::Str(name), Token::Str(value), ..] = l.as_slice() {
                if name.eq_ignore_ascii_case("SIEVE") {
                    self.extensions = value.split_whitespace().map(str::to_owned).collect();
                }
            }
        }
    }

    async fn authenticate(&mut self, login: &SieveLogin<'_>) -> Result<(), SieveError> {
        let mut plain = Vec::with_capacity(login.user.len() + login.password.len() + 2);
        plain.push(0);
        plain.extend_from_slice(login.user.as_bytes());
        plain.push(0);
        plain.extend_from_slice(login.password.as_bytes());
        let mut line = b"AUTHENTICATE \"PLAIN\" \"".to_vec();
        line.extend_from_slice(
            base64::engine::general_purpose::STANDARD
                .encode(&plain)
                .as_bytes(),
        );
        line.extend_from_slice(b"\"\r\n");
        self.send(&line).await?;
        let (_, done) = self.response().await?;
        match done.kind.as_str() {
            "OK" => Ok(()),
            "NO" => Err(SieveError::Auth {
                user: login.user.to_owned(),
            }),
            _ => Err(SieveError::Unavailable(format!(
                "AUTHENTICATE: {} {}",
                done.kind, done.text
            ))),
        }
    }

    /// `LISTSCRIPTS`: every script of the user, the active one marked.
    pub async fn list_scripts(&mut self) -> Result<Vec<ScriptEntry>, SieveError> {
        self.send(b"LISTSCRIPTS\r\n").await?;
        let (lines, done) = self.response().await?;
        self.expect_ok("LISTSCRIPTS", done)?;
        lines
            .iter()
            .map(|l| match l.as_slice() {
                [Token::Str(name)] => Ok(ScriptEntry {
                    name: name.clone(),
                    active: false,
                }),
                [Token::Str(name), Token::Atom(a)] if a.eq_ignore_ascii_case("ACTIVE") => {
                    Ok(ScriptEntry {
                        name: name.clone(),
                        active: true,
                    })
                }
                other => Err(SieveError::Protocol(format!("LISTSCRIPTS line {other:?}"))),
            })
            .collect()
    }

    /// `GETSCRIPT`: the script's text, `None` when it does not exist.
    pub async fn get_script(&mut self, name: &str) -> Result<Option<String>, SieveError> {
        let mut line = b"GETSCRIPT ".to_vec();
        push_quoted(&mut line, name)?;
        line.extend_from_slice(b"\r\n");
        self.send(&line).await?;
        let (lines, done) = self.response().await?;
        if done.kind == "NO" && done.code.first().is_some_and(|c| c == "NONEXISTENT") {
            return Ok(None);
        }
        self.expect_ok("GETSCRIPT", done)?;
        match lines.as_slice() {
            [l] => match l.as_slice() {
                [Token::Str(text)] => Ok(Some(text.clone())),
                other => Err(SieveError::Protocol(format!("GETSCRIPT line {other:?}"))),
            },
            _ => Err(SieveError::Protocol(format!(
                "GETSCRIPT answered {} lines",
                lines.len()
            ))),
        }
    }

    /// `CHECKSCRIPT`: whether the server would accept `text` (a `NO` is
    /// [`SieveError::Rejected`] with the compiler's message).
    pub async fn check_script(&mut self, text: &str) -> Result<(), SieveError> {
        let mut line = b"CHECKSCRIPT ".to_vec();
        push_literal(&mut line, text);
        line.extend_from_slice(b"\r\n");
        self.send(&line).await?;
        let (_, done) = self.response().await?;
        self.expect_ok("CHECKSCRIPT", done)
    }

    /// `PUTSCRIPT`: stores (or replaces) the script `name`. The server
    /// compiles it first and keeps the old version when it does not.
    pub async fn put_script(&mut self, name: &str, text: &str) -> Result<(), SieveError> {
        crate::fence::check("PUTSCRIPT").map_err(SieveError::Fenced)?;
        let mut line = b"PUTSCRIPT ".to_vec();
        push_quoted(&mut line, name)?;
        line.push(b' ');
        push_literal(&mut line, text);
        line.extend_from_slice(b"\r\n");
        self.send(&line).await?;
        let (_, done) = self.response().await?;
        self.expect_ok("PUTSCRIPT", done)
    }

    /// `SETACTIVE`: makes `name` the active script; `""` deactivates all.
    pub async fn set_active(&mut self, name: &str) -> Result<(), SieveError> {
        crate::fence::check("SETACTIVE").map_err(SieveError::Fenced)?;
        let mut line = b"SETACTIVE ".to_vec();
        push_quoted(&mut line, name)?;
        line.extend_from_slice(b"\r\n");
        self.send(&line).await?;
        let (_, done) = self.response().await?;
        self.expect_ok("SETACTIVE", done)
    }

    /// `LOGOUT` (best effort: the connection is closed either way).
    pub async fn logout(mut self) {
        if self.send(b"LOGOUT\r\n").await.is_ok() {
            let _ = self.response().await;
        }
    }

    fn expect_ok(&self, command: &'static str, done: Completion) -> Result<(), SieveError> {
        match done.kind.as_str() {
            "OK" => Ok(()),
            "NO" => Err(SieveError::Rejected {
                command,
                code: done.code.join(" "),
                text: done.text,
            }),
            _ => Err(SieveError::Unavailable(format!(
                "{command}: BYE {}",
                done.text
            ))),
        }
    }

    async fn send(&mut self, bytes: &[u8]) -> Result<(), SieveError> {
        let w = self.conn.get_mut();
        tokio::time::timeout(self.timeout, async {
            w.write_all(bytes).await?;
            w.flush().await
        })
        .await
        .map_err(|_| unavailable("write", "timed out"))?
        .map_err(|e| unavailable("write", e))
    }

    /// Reads one response: its data lines, then the `OK`/`NO`/`BYE` line.
    async fn response(&mut self) -> Result<(Vec<Vec<Token>>, Completion), SieveError> {
        let timeout = self.timeout;
        tokio::time::timeout(timeout, self.response_untimed())
            .await
            .map_err(|_| unavailable("read", "timed out"))?
    }

    async fn response_untimed(&mut self) -> Result<(Vec<Vec<Token>>, Completion), SieveError> {
        let mut lines = Vec::new();
        let mut total = 0usize;
        loop {
            let (line, n) = self.read_line_tokens().await?;
            total += n;
            if total > MAX_RESPONSE_BYTES {
                return Err(SieveError::Protocol(format!(
                    "response over {MAX_RESPONSE_BYTES} bytes"
                )));
            }
            if let Some(Token::Atom(a)) = line.first() {
                let kind = a.to_ascii_uppercase();
                if matches!(kind.as_str(), "OK" | "NO" | "BYE") {
                    return Ok((lines, completion(kind, &line[1..])));
                }
            }
            lines.push(line);
        }
    }

    /// One line of tokens (a literal's bytes are part of its line).
    async fn read_line_tokens(&mut self) -> Result<(Vec<Token>, usize), SieveError> {
        let mut tokens = Vec::new();
        let mut read = 0usize;
        loop {
            let mut raw = Vec::new();
            let n = (&mut self.conn)
                .take(MAX_RESPONSE_BYTES as u64)
                .read_until(b'\n', &mut raw)
                .await
                .map_err(|e| unavailable("read", e))?;
            if n == 0 {
                return Err(SieveError::Unavailable(
                    "the server closed the connection".into(),
                ));
            }
            read += n;
            if raw.last() != Some(&b'\n') {
                return Err(SieveError::Protocol("line too long".into()));
            }
            raw.pop();
            if raw.last() == Some(&b'\r') {
                raw.pop();
            }
            match tokenize(&raw, &mut tokens)? {
                None => return Ok((tokens, read)),
                Some(len) => {
                    if len > MAX_RESPONSE_BYTES {
                        return Err(SieveError::Protocol(format!("literal of {len} bytes")));
                    }
                    let mut buf = vec![0; len];
                    self.conn
                        .read_exact(&mut buf)
                        .await
                        .map_err(|e| unavailable("read literal", e))?;
                    read += len;
                    tokens.push(Token::Str(String::from_utf8(buf).map_err(|_| {
                        SieveError::Protocol("a literal is not UTF-8".into())
                    })?));
                }
            }
        }
    }
}

fn first_atom_is(line: &[Token], name: &str) -> bool {
    matches!(line.first(), Some(Token::Str(s)) | Some(Token::Atom(s)) if s.eq_ignore_ascii_case(name))
}

fn completion(kind: String, rest: &[Token]) -> Completion {
    let mut code = Vec::new();
    let mut text = String::new();
    let mut in_code = false;
    for t in rest {
        match t {
            Token::Open => in_code = true,
            Token::Close => in_code = false,
            // The code's name upper-cased, its arguments as they are.
            Token::Atom(a) | Token::Str(a) if in_code => code.push(if code.is_empty() {
                a.to_ascii_uppercase()
            } else {
                a.clone()
            }),
            Token::Str(s) => text = s.clone(),
            Token::Atom(a) => {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(a);
            }
        }
    }
    Completion { kind, code, text }
}

/// Splits one line into tokens, appending to `out`. Returns the length of
/// the literal announced at the end of the line (`{n}` or `{n+}`), if any.
fn tokenize(line: &[u8], out: &mut Vec<Token>) -> Result<Option<usize>, SieveError> {
    let mut i = 0;
    while i < line.len() {
        match line[i] {
            b' ' => i += 1,
            b'(' => {
                out.push(Token::Open);
                i += 1;
            }
            b')' => {
                out.push(Token::Close);
                i += 1;
            }
            b'"' => {
                let mut s = Vec::new();
                i += 1;
                loop {
                    match line.get(i) {
                        None => return Err(SieveError::Protocol("unterminated string".into())),
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(b'\\') => {
                            let c = line
                                .get(i + 1)
                                .ok_or_else(|| SieveError::Protocol("bad escape".into()))?;
                            s.push(*c);
                            i += 2;
                        }
                        Some(c) => {
                            s.push(*c);
                            i += 1;
                        }
                    }
                }
                out.push(Token::Str(String::from_utf8(s).map_err(|_| {
                    SieveError::Protocol("a string is not UTF-8".into())
                })?));
            }
            b'{' => {
                let end = line[i..]
                    .iter()
                    .position(|&c| c == b'}')
                    .map(|p| i + p)
                    .ok_or_else(|| SieveError::Protocol("unterminated literal".into()))?;
                if end + 1 != line.len() {
                    return Err(SieveError::Protocol("text after a literal length".into()));
                }
                let digits = std::str::from_utf8(&line[i + 1..end])
                    .map_err(|_| SieveError::Protocol("bad literal length".into()))?;
                let n = digits
                    .trim_end_matches('+')
                    .parse::<usize>()
                    .map_err(|_| SieveError::Protocol(format!("literal length {digits:?}")))?;
                return Ok(Some(n));
            }
            _ => {
                let end = line[i..]
                    .iter()
                    .position(|&c| matches!(c, b' ' | b'(' | b')'))
                    .map_or(line.len(), |p| i + p);
                out.push(Token::Atom(
                    String::from_utf8_lossy(&line[i..end]).into_owned(),
                ));
                i = end;
            }
        }
    }
    Ok(None)
}

/// Appends `s` as a quoted string (RFC 5804 2.x: no CR, LF or NUL).
fn push_quoted(out: &mut Vec<u8>, s: &str) -> Result<(), SieveError> {
    if s.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
        return Err(SieveError::InvalidInput(format!(
            "script name {s:?} has CR, LF or NUL"
        )));
    }
    out.push(b'"');
    for b in s.bytes() {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    Ok(())
}

/// Appends `s` as a non-synchronizing literal.
fn push_literal(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(format!("{{{}+}}\r\n", s.len()).as_bytes());
    out.extend_from_slice(s.as_bytes());
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn lines_tokenize() {
        let mut t = Vec::new();
        assert_eq!(tokenize(br#""opush-oof" ACTIVE"#, &mut t).unwrap(), None);
        assert_eq!(
            t,
            [Token::Str("opush-oof".into()), Token::Atom("ACTIVE".into())]
        );
        let mut t = Vec::new();
        assert_eq!(tokenize(b"{12}", &mut t).unwrap(), Some(12));
        let mut t = Vec::new();
        tokenize(br#"NO (NONEXISTENT) "No \"such\" script""#, &mut t).unwrap();
        let c = completion("NO".into(), &t[1..]);
        assert_eq!(c.code, ["NONEXISTENT"]);
        assert_eq!(c.text, r#"No "such" script"#);
        assert!(tokenize(br#""open"#, &mut Vec::new()).is_err());
    }

    #[test]
    fn names_are_quoted_and_checked() {
        let mut out = Vec::new();
        push_quoted(&mut out, r#"a"b\c"#).unwrap();
        assert_eq!(out, br#""a\"b\\c""#);
        assert!(push_quoted(&mut Vec::new(), "a\r\nLOGOUT").is_err());
    }

    #[test]
    fn loopback_hosts() {
        let s = |host: &str| SieveSettings {
            host: host.into(),
            port: 4190,
            starttls: false,
            ca_file: None,
            allow_plaintext: false,
            timeout: Duration::from_secs(1),
        };
        assert!(s("127.0.0.1").host_is_loopback());
        assert!(s("::1").host_is_loopback());
        assert!(s("localhost").host_is_loopback());
        assert!(!s("mail.example.com").host_is_loopback());
        assert!(!s("10.0.0.1").host_is_loopback());
    }
}
