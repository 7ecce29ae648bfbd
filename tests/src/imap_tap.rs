//! A recording relay between an IMAP client (opush) and a real IMAP server,
//! for tests about literals: it forwards every byte both ways unchanged and
//! records, on the client's side of the wire, every literal the client
//! sends: its size, whether it was non-synchronizing (`{n+}`), and whether
//! its bytes followed the server's continuation request (`+ …`) or were
//! sent along. [`TapStats::assert_synchronizing_only`] checks them against
//! a server without LITERAL+ and LITERAL-, [`TapStats::assert_literal_minus`]
//! against one with LITERAL- only (RFC 7888).
//!
//! Why: Dovecot, the test stack's server, reads a `{n+}` literal even when
//! it does not advertise LITERAL+ (it refuses only those over 4096 bytes
//! with `imap_literal_minus = yes`), so the server accepting a command does
//! not show the client would work with a server that lacks LITERAL+; nor
//! would it show that a client used LITERAL- where it could. The relay
//! sees what the client sent and when.
//!
//! A continuation request is handed on 20 ms after it arrives, so that
//! literal bytes a client sent without waiting reach the relay first and
//! are counted as a violation rather than slipping through by timing.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// How long a continuation request is held before it is handed on.
const CONTINUATION_DELAY: Duration = Duration::from_millis(20);

/// The largest non-synchronizing literal a LITERAL- server takes (RFC 7888 §4).
pub const LITERAL_MINUS_MAX: u64 = 4096;

/// One literal the client sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiteralSeen {
    /// The command it belongs to (`LOGIN`, `APPEND`, `UID SEARCH` …).
    pub command: String,
    /// Its announced size in bytes.
    pub size: u64,
    /// Non-synchronizing (`{n+}`) rather than `{n}`.
    pub non_sync: bool,
    /// Its bytes came after a continuation request the server sent for it
    /// (false for one sent along, as a `{n+}` literal is).
    pub waited: bool,
    /// The server ended the command at its announcement (a tagged NO or
    /// BAD instead of `+`) and no bytes were sent.
    pub refused: bool,
}

/// What the relay saw on all its connections so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TapStats {
    /// Client connections relayed.
    pub connections: usize,
    /// Synchronizing literals (`{n}`) sent by the client, by command
    /// (`LOGIN`, `APPEND`, `UID SEARCH` …).
    pub sync_literals: BTreeMap<String, usize>,
    /// Non-synchronizing literals (`{n+}`) sent by the client, by command.
    pub non_sync_literals: BTreeMap<String, usize>,
    /// Every literal the client sent, in order.
    pub literals: Vec<LiteralSeen>,
    /// Commands the client sent, by command (`LOGIN`, `CAPABILITY` …).
    pub commands: BTreeMap<String, usize>,
    /// Continuation requests (`+ …`) the server sent.
    pub continuations: usize,
    /// Server responses carrying a capability list (`* CAPABILITY` or a
    /// `[CAPABILITY …]` response code).
    pub capability_lists: usize,
    /// Whether any capability list named LITERAL+.
    pub literal_plus_advertised: bool,
    /// Whether any capability list named LITERAL-.
    pub literal_minus_advertised: bool,
    /// Synchronizing literals the server refused (a tagged NO or BAD
    /// instead of the continuation request), whose bytes were not sent.
    pub refused_literals: usize,
    /// BAD responses of the server (the start of each): a client that
    /// sent literal bytes the server did not ask for gets them, as the
    /// server reads those bytes as commands.
    pub bad_responses: Vec<String>,
    /// Literal data the client sent before the server asked for it, in
    /// order (no server takes that).
    pub violations: Vec<String>,
}

impl TapStats {
    /// Synchronizing literals sent with `command` (e.g. `"APPEND"`).
    pub fn sync(&self, command: &str) -> usize {
        self.sync_literals.get(command).copied().unwrap_or(0)
    }

    /// How many times the client sent `command` (e.g. `"CAPABILITY"`).
    pub fn sent(&self, command: &str) -> usize {
        self.commands.get(command).copied().unwrap_or(0)
    }

    /// Non-synchronizing literals sent with `command`.
    pub fn non_sync(&self, command: &str) -> usize {
        self.non_sync_literals.get(command).copied().unwrap_or(0)
    }

    /// The literals sent with `command`, in order.
    pub fn literals_of(&self, command: &str) -> Vec<&LiteralSeen> {
        self.literals
            .iter()
            .filter(|l| l.command == command)
            .collect()
    }

    /// Fails the calling test if the client sent a non-synchronizing
    /// literal, or literal data before the server asked for it, or if the
    /// server advertised LITERAL+/LITERAL- (the set-up is wrong then).
    pub fn assert_synchronizing_only(&self) {
        assert!(
            self.capability_lists > 0,
            "the relay saw no capability list: {self:?}"
        );
        assert!(
            !self.literal_plus_advertised && !self.literal_minus_advertised,
            "the IMAP server advertised LITERAL+ or LITERAL- (start it with \
             `scripts/dovecot-private --no-literal-plus`): {self:?}"
        );
        assert!(
            self.violations.is_empty() && self.non_sync_literals.is_empty(),
            "the client sent literals a server without LITERAL+ refuses: {self:?}"
        );
        assert!(
            self.bad_responses.is_empty(),
            "the server answered BAD: {self:?}"
        );
    }

    /// Fails the calling test unless the client used LITERAL- as RFC 7888
    /// §4 has it with a server that advertises LITERAL- and not LITERAL+
    /// (the set-up is checked too): every literal of at most 4096 bytes
    /// non-synchronizing (`{n+}`, not waiting: the round trip LITERAL- is
    /// for), every bigger one synchronizing (`{n+}` there is refused) with
    /// its bytes sent after the server's `+`, or not at all when the server
    /// refused the command.
    pub fn assert_literal_minus(&self) {
        assert!(
            self.capability_lists > 0,
            "the relay saw no capability list: {self:?}"
        );
        assert!(
            self.literal_minus_advertised && !self.literal_plus_advertised,
            "the IMAP server must advertise LITERAL- and not LITERAL+ (start it \
             with `scripts/dovecot-private --literal-minus`): {self:?}"
        );
        for l in &self.literals {
            if l.size <= LITERAL_MINUS_MAX {
                assert!(
                    l.non_sync && !l.waited,
                    "a {}-byte literal of {} was synchronizing: LITERAL- ignored: {self:?}",
                    l.size,
                    l.command
                );
            } else {
                assert!(
                    !l.non_sync,
                    "a {}-byte literal of {} was sent `{{n+}}` to a LITERAL- server: {self:?}",
                    l.size, l.command
                );
                assert!(
                    l.waited || l.refused,
                    "a {}-byte literal of {} did not wait for `+`: {self:?}",
                    l.size,
                    l.command
                );
            }
        }
        assert!(
            self.violations.is_empty(),
            "the client sent literal data before the server asked: {self:?}"
        );
        assert!(
            self.bad_responses.is_empty(),
            "the server answered BAD: {self:?}"
        );
    }
}

/// Per-connection counters the two directions share.
#[derive(Debug, Default)]
struct Wire {
    /// Continuation requests handed on to the client.
    continuations: AtomicU64,
    /// Tagged responses handed on to the client (a command that ended,
    /// e.g. refused instead of a continuation).
    completions: AtomicU64,
}

#[derive(Debug, Default)]
struct Shared {
    stats: Mutex<TapStats>,
    stop: AtomicBool,
    sockets: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, TapStats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A running relay on `127.0.0.1` (an ephemeral port) to one IMAP server.
/// Dropping it stops accepting and closes the relayed connections.
#[derive(Debug)]
pub struct LiteralTap {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl LiteralTap {
    /// Starts relaying to `upstream`; fails the test when it cannot listen.
    pub fn start(upstream: SocketAddr) -> LiteralTap {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the IMAP relay");
        let addr = listener.local_addr().expect("relay address");
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                relay(client, server, &s);
            }
        });
        LiteralTap { addr, shared }
    }

    /// Where the client connects.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A copy of what was seen so far.
    pub fn stats(&self) -> TapStats {
        self.shared.stats().clone()
    }
}

impl Drop for LiteralTap {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop up so that it sees `stop`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let sockets = self
            .shared
            .sockets
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for s in sockets.iter() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Starts the two pumps of one connection.
fn relay(client: TcpStream, server: TcpStream, shared: &Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let clones = (
        client.try_clone(),
        server.try_clone(),
        client.try_clone(),
        server.try_clone(),
    );
    let (Ok(c_read), Ok(s_write), Ok(c_keep), Ok(s_keep)) = clones else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    {
        let mut sockets = shared.sockets.lock().unwrap_or_else(|e| e.into_inner());
        sockets.push(c_keep);
        sockets.push(s_keep);
    }
    shared.stats().connections += 1;
    let wire = Arc::new(Wire::default());
    let (sh, w) = (shared.clone(), wire.clone());
    std::thread::spawn(move || {
        let mut scan = ClientScan::default();
        pump(c_read, s_write, |data| {
            let seen = (
                w.continuations.load(Ordering::SeqCst),
                w.completions.load(Ordering::SeqCst),
            );
            scan.feed(data, seen, &mut sh.stats());
            true
        });
    });
    let sh = shared.clone();
    std::thread::spawn(move || {
        let mut scan = ServerScan::default();
        pump(server, client, |data| {
            let found = scan.feed(data, &mut sh.stats());
            if found.continuations > 0 {
                std::thread::sleep(CONTINUATION_DELAY);
            }
            wire.continuations
                .fetch_add(found.continuations, Ordering::SeqCst);
            wire.completions
                .fetch_add(found.completions, Ordering::SeqCst);
            true
        });
    });
}

/// Copies `from` to `to`, showing each chunk to `look` before it is
/// written, until either side ends; then closes both.
fn pump(mut from: TcpStream, mut to: TcpStream, mut look: impl FnMut(&[u8]) -> bool) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !look(&buf[..n]) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

/// `{n}` / `{n+}` (also `~{n}`, literal8) at the end of `line` (CRLF
/// removed): the length and whether it is non-synchronizing.
fn literal_at_end(line: &[u8]) -> Option<(u64, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, non_sync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, true),
        None => (spec, false),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, non_sync))
}

/// The command of a client line that starts one: its second word, with
/// the third for `UID` commands (`UID SEARCH`).
fn command_of(line: &[u8]) -> String {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split(' ').skip(1);
    let first = words.next().unwrap_or("").to_ascii_uppercase();
    if first == "UID" {
        let second = words.next().unwrap_or("").to_ascii_uppercase();
        format!("UID {second}")
    } else {
        first
    }
}

/// One direction of an IMAP stream cut into lines, literal bytes skipped.
#[derive(Debug, Default)]
struct Framer {
    line: Vec<u8>,
    /// Literal bytes still to come.
    literal_left: u64,
}

impl Framer {
    /// Takes bytes of `data` from `*at` on, skipping literal bytes, until a
    /// line is complete: the line (CRLF removed, kept until
    /// the next call), or `None` once `data` is used up
    /// (a partial line is kept for the next chunk).
    fn line(&mut self, data: &[u8], at: &mut usize) -> Option<&[u8]> {
        if self.line.ends_with(b"\r\n") {
            self.line.clear();
        }
        while *at < data.len() {
            if self.literal_left > 0 {
                let take = usize::try_from(self.literal_left)
                    .unwrap_or(usize::MAX)
                    .min(data.len() - *at);
                self.literal_left -= take as u64;
                *at += take;
                continue;
            }
            self.line.push(data[*at]);
            *at += 1;
            if self.line.ends_with(b"\r\n") {
                return Some(&self.line[..self.line.len() - 2]);
            }
        }
        None
    }

    /// Drops what is gathered and any literal still expected.
    fn reset(&mut self) {
        self.line.clear();
        self.literal_left = 0;
    }
}

/// The client's side: lines and literals of the commands it sends.
#[derive(Debug)]
struct ClientScan {
    framer: Framer,
    /// The next line starts a command.
    at_command_start: bool,
    /// The command being sent.
    command: String,
    /// After a synchronizing literal's announcement: the server's
    /// (continuations, completions) counts at that moment, and the
    /// literal's place in [`TapStats::literals`].
    awaiting: Option<(u64, u64, usize)>,
}

impl Default for ClientScan {
    fn default() -> Self {
        ClientScan {
            framer: Framer::default(),
            at_command_start: true,
            command: String::new(),
            awaiting: None,
        }
    }
}

impl ClientScan {
    /// Looks at `data`, the next bytes from the client; `seen`: the
    /// server's (continuations, completions) handed on so far.
    fn feed(&mut self, data: &[u8], seen: (u64, u64), stats: &mut TapStats) {
        let mut i = 0;
        while i < data.len() {
            if let Some((conts, dones, at)) = self.awaiting.take() {
                let literal = stats.literals.get_mut(at);
                if seen.0 > conts {
                    if let Some(l) = literal {
                        l.waited = true;
                    }
                } else if seen.1 > dones {
                    // The server ended the command instead: what
                    // follows is the next command.
                    if let Some(l) = literal {
                        l.refused = true;
                    }
                    stats.refused_literals += 1;
                    self.framer.reset();
                    self.at_command_start = true;
                } else {
                    stats.violations.push(format!(
                        "{}: literal data sent before the server's continuation request",
                        self.command
                    ));
                }
            }
            let Some(line) = self.framer.line(data, &mut i) else {
                break;
            };
            if self.at_command_start {
                self.command = command_of(line);
                *stats.commands.entry(self.command.clone()).or_default() += 1;
            }
            match literal_at_end(line) {
                Some((n, non_sync)) => {
                    let counts = if non_sync {
                        &mut stats.non_sync_literals
                    } else {
                        self.awaiting = Some((seen.0, seen.1, stats.literals.len()));
                        &mut stats.sync_literals
                    };
                    *counts.entry(self.command.clone()).or_default() += 1;
                    stats.literals.push(LiteralSeen {
                        command: self.command.clone(),
                        size: n,
                        non_sync,
                        waited: false,
                        refused: false,
                    });
                    self.framer.literal_left = n;
                    self.at_command_start = false;
                }
                None => self.at_command_start = true,
            }
        }
    }
}

/// What one chunk from the server held.
#[derive(Debug, Default, PartialEq, Eq)]
struct Found {
    continuations: u64,
    completions: u64,
}

/// The server's side: lines and literals of its responses.
#[derive(Debug)]
struct ServerScan {
    framer: Framer,
    at_response_start: bool,
}

impl Default for ServerScan {
    fn default() -> Self {
        ServerScan {
            framer: Framer::default(),
            at_response_start: true,
        }
    }
}

impl ServerScan {
    fn feed(&mut self, data: &[u8], stats: &mut TapStats) -> Found {
        let mut found = Found::default();
        let mut i = 0;
        while let Some(line) = self.framer.line(data, &mut i) {
            if self.at_response_start {
                if line.starts_with(b"+") {
                    found.continuations += 1;
                    stats.continuations += 1;
                } else if !line.starts_with(b"*") {
                    found.completions += 1;
                }
                if line.split(|&b| b == b' ').nth(1) == Some(b"BAD") {
                    let start = &line[..line.len().min(200)];
                    stats
                        .bad_responses
                        .push(String::from_utf8_lossy(start).into_owned());
                }
            }
            let text = String::from_utf8_lossy(line).to_ascii_uppercase();
            if text.starts_with("* CAPABILITY ") || text.contains("[CAPABILITY ") {
                stats.capability_lists += 1;
                for c in text.split([' ', ']']) {
                    match c {
                        "LITERAL+" => stats.literal_plus_advertised = true,
                        "LITERAL-" => stats.literal_minus_advertised = true,
                        _ => {}
                    }
                }
            }
            match literal_at_end(line) {
                Some((n, _)) => {
                    self.framer.literal_left = n;
                    self.at_response_start = false;
                }
                None => self.at_response_start = true,
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(chunks: &[(&[u8], (u64, u64))]) -> TapStats {
        let mut scan = ClientScan::default();
        let mut stats = TapStats::default();
        for (data, seen) in chunks {
            scan.feed(data, *seen, &mut stats);
        }
        stats
    }

    #[test]
    fn literal_announcements_are_recognised() {
        assert_eq!(literal_at_end(b"A1 LOGIN {5}"), Some((5, false)));
        assert_eq!(literal_at_end(b"A1 APPEND X {12+}"), Some((12, true)));
        assert_eq!(literal_at_end(b"* 1 FETCH (BODY[] ~{3}"), Some((3, false)));
        assert_eq!(literal_at_end(b"A1 LOGIN {x}"), None);
        assert_eq!(literal_at_end(b"A1 LOGIN {}"), None);
        assert_eq!(literal_at_end(b"A1 NOOP"), None);
    }

    #[test]
    fn a_client_that_waits_for_the_continuation_is_clean() {
        let s = client(&[
            (b"O1 LOGIN {5}\r\n", (0, 0)),
            (b"j\xc3\xb6rg {3}\r\n", (1, 0)),
            (
                b"pw\xff\r\nO2 UID SEARCH CHARSET UTF-8 TEXT {2}\r\n",
                (2, 0),
            ),
            (b"\xc3\xbc\r\n", (3, 1)),
        ]);
        assert_eq!(s.sync("LOGIN"), 2);
        assert_eq!(s.sync("UID SEARCH"), 1);
        assert!(s.violations.is_empty(), "{s:?}");
        assert!(s.non_sync_literals.is_empty());
    }

    #[test]
    fn non_synchronizing_and_unasked_literals_are_violations() {
        let s = client(&[(b"O1 APPEND INBOX {4+}\r\nab\r\n\r\n", (0, 0))]);
        assert_eq!(s.non_sync_literals.get("APPEND"), Some(&1));
        // `{n}` followed at once by its bytes, in one chunk or the next.
        let s = client(&[(b"O1 LOGIN {1}\r\nx {1}\r\n", (0, 0)), (b"y\r\n", (0, 0))]);
        assert_eq!(s.violations.len(), 2, "{s:?}");
    }

    #[test]
    fn literal_data_is_not_read_as_commands() {
        // A message holding what looks like a literal announcement.
        let msg = b"Subject: {9+}\r\n\r\nO9 LOGIN {3}\r\n";
        let head = format!("O1 APPEND INBOX {{{}}}\r\n", msg.len()).into_bytes();
        let s = client(&[(&head, (0, 0)), (msg, (1, 0)), (b"\r\nO2 NOOP\r\n", (1, 1))]);
        assert_eq!(s.sync("APPEND"), 1);
        assert!(s.non_sync_literals.is_empty() && s.violations.is_empty());
    }

    #[test]
    fn each_literal_is_recorded_with_its_size_kind_and_wait() {
        let seen = |command: &str, size, non_sync, waited, refused| LiteralSeen {
            command: command.to_owned(),
            size,
            non_sync,
            waited,
            refused,
        };
        let s = client(&[
            // `{n+}` sent along; then `{n}` waiting for the `+`.
            (b"O1 LOGIN {3+}\r\nj\xc3\xb6 {2}\r\n", (0, 0)),
            (b"pw\r\nO2 APPEND Sent {1}\r\n", (1, 1)),
            // Not waited for: a violation.
            (b"x\r\nO3 APPEND Nowhere {5000}\r\n", (1, 1)),
            // Refused (a tagged NO instead of `+`): the next command.
            (b"O4 NOOP\r\n", (1, 2)),
        ]);
        assert_eq!(
            s.literals,
            vec![
                seen("LOGIN", 3, true, false, false),
                seen("LOGIN", 2, false, true, false),
                seen("APPEND", 1, false, false, false),
                seen("APPEND", 5000, false, false, true),
            ]
        );
        assert_eq!(s.violations.len(), 1, "{s:?}");
        assert_eq!((s.non_sync("LOGIN"), s.sync("LOGIN")), (1, 1));
        assert_eq!(
            (s.sent("LOGIN"), s.sent("APPEND"), s.sent("NOOP")),
            (1, 2, 1)
        );
        assert_eq!(s.literals_of("APPEND").len(), 2);
    }

    fn minus_server(literals: Vec<LiteralSeen>) -> TapStats {
        TapStats {
            capability_lists: 2,
            literal_minus_advertised: true,
            literals,
            ..TapStats::default()
        }
    }

    fn literal(size: u64, non_sync: bool, waited: bool) -> LiteralSeen {
        LiteralSeen {
            command: "APPEND".to_owned(),
            size,
            non_sync,
            waited,
            refused: false,
        }
    }

    #[test]
    fn literal_minus_use_is_checked_at_4096_bytes() {
        minus_server(vec![
            literal(0, true, false),
            literal(4096, true, false),
            literal(4097, false, true),
        ])
        .assert_literal_minus();
        for wrong in [
            // LITERAL- ignored.
            literal(4096, false, true),
            // `{n+}` over 4096.
            literal(4097, true, false),
            // `{n}` without waiting for the `+`.
            literal(4097, false, false),
        ] {
            let stats = minus_server(vec![wrong.clone()]);
            let failed = std::panic::catch_unwind(|| stats.assert_literal_minus());
            assert!(failed.is_err(), "{wrong:?} passed");
        }
        // A server that also advertises LITERAL+ is the wrong set-up.
        let mut both = minus_server(Vec::new());
        both.literal_plus_advertised = true;
        assert!(std::panic::catch_unwind(|| both.assert_literal_minus()).is_err());
    }

    #[test]
    fn a_refused_command_ends_the_wait() {
        let s = client(&[(b"O1 LOGIN {3}\r\n", (0, 0)), (b"O2 NOOP\r\n", (0, 1))]);
        assert!(s.violations.is_empty(), "{s:?}");
        assert_eq!(s.refused_literals, 1);
    }

    #[test]
    fn the_server_side_counts_continuations_outside_literals() {
        let mut scan = ServerScan::default();
        let mut stats = TapStats::default();
        let body = b"+ not a continuation\r\n";
        let mut data = format!("* 1 FETCH (BODY[] {{{}}}\r\n", body.len()).into_bytes();
        data.extend_from_slice(body);
        data.extend_from_slice(b")\r\n+ OK\r\nO1 OK done\r\n");
        let found = scan.feed(&data, &mut stats);
        assert_eq!(
            found,
            Found {
                continuations: 1,
                completions: 1
            }
        );
        scan.feed(b"* CAPABILITY IMAP4rev1 IDLE\r\n", &mut stats);
        assert_eq!(stats.capability_lists, 1);
        assert!(!stats.literal_plus_advertised);
        scan.feed(b"O2 OK [CAPABILITY IMAP4rev1 LITERAL+] in\r\n", &mut stats);
        assert!(stats.literal_plus_advertised);
        assert!(!stats.literal_minus_advertised);
        scan.feed(b"* OK [CAPABILITY IMAP4rev1 LITERAL-] hi\r\n", &mut stats);
        assert!(stats.literal_minus_advertised);
        assert!(stats.bad_responses.is_empty());
        scan.feed(
            b"* BAD Error in IMAP command\r\nFrom: BAD x\r\n",
            &mut stats,
        );
        assert_eq!(stats.bad_responses.len(), 2, "{stats:?}");
    }
}
