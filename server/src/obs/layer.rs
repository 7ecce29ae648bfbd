//! The `tracing` layer that writes opush's log lines:
//! `HH:MM:SS.mmm [LEVEL] {LOGGER} [t<thread>/c<Command>/r<request>/<user>] message`
//! (UTC time), or one JSON object per line with the same fields.
//!
//! Filtering is by named logger ([`super::logger`]), read from the process'
//! [`Levels`] on every event so a level change takes effect at once.
//! Fields whose name says they hold a secret (`password`, `authorization`,
//! …) print as `*`.

use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::Layer;

use super::logger::{Levels, Logger, LoggerLevel};
use super::rotate::RotatingFile;
use super::scope;

/// Where the lines go.
#[derive(Clone)]
pub enum Output {
    /// Standard error.
    Stderr,
    /// A rotated, compressed file.
    File(Arc<RotatingFile>),
    /// A buffer (tests).
    Memory(Arc<Mutex<Vec<u8>>>),
}

impl fmt::Debug for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Output::Stderr => f.write_str("Stderr"),
            Output::File(r) => write!(f, "File({})", r.path().display()),
            Output::Memory(_) => f.write_str("Memory"),
        }
    }
}

impl Output {
    fn write(&self, line: &str) {
        match self {
            Output::Stderr => {
                let _ = std::io::stderr().lock().write_all(line.as_bytes());
            }
            Output::File(f) => {
                if let Err(e) = f.write_line(line.as_bytes()) {
                    let _ = writeln!(std::io::stderr(), "opush: log file: {e}: {line}");
                }
            }
            Output::Memory(buf) => buf
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend_from_slice(line.as_bytes()),
        }
    }
}

/// The line layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The text line of the issue.
    Text,
    /// One JSON object per line.
    Json,
}

/// The layer.
#[derive(Debug)]
pub struct LogLayer {
    levels: &'static Levels,
    output: Output,
    format: Format,
}

impl LogLayer {
    /// A layer filtering with `levels` and writing to `output`.
    pub fn new(levels: &'static Levels, output: Output, format: Format) -> LogLayer {
        LogLayer {
            levels,
            output,
            format,
        }
    }
}

/// The most verbose level any logger is at (third-party crates are held to INFO).
pub fn max_level(levels: &Levels) -> LevelFilter {
    match Logger::ALL.into_iter().map(|l| levels.get(l)).max() {
        Some(LoggerLevel::Trace) => LevelFilter::TRACE,
        Some(LoggerLevel::Debug) => LevelFilter::DEBUG,
        Some(LoggerLevel::Info) => LevelFilter::INFO,
        _ => LevelFilter::WARN,
    }
}

fn passes(levels: &Levels, meta: &Metadata<'_>) -> bool {
    let (logger, third_party) = Logger::of_target(meta.target());
    if third_party && *meta.level() > Level::INFO {
        return false;
    }
    levels.enabled(logger, meta.level())
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if meta.is_span() {
            // Lines carry their context from the request scope, not spans.
            return Interest::never();
        }
        // Levels change at run time: ask `enabled` every time.
        Interest::sometimes()
    }

    fn enabled(&self, meta: &Metadata<'_>, _ctx: Context<'_, S>) -> bool {
        // Events, and the hints of `tracing::enabled!` (neither event nor span).
        !meta.is_span() && passes(self.levels, meta)
    }

    fn max_level_hint(&self) -> Option<LevelFilter> {
        Some(max_level(self.levels))
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() == "storage::retry" {
            super::metrics::retry("storage");
        }
        if !passes(self.levels, meta) {
            return;
        }
        let (logger, _) = Logger::of_target(meta.target());
        let mut fields = Fields::default();
        event.record(&mut fields);
        let line = match self.format {
            Format::Text => text_line(now_ms(), meta.level(), logger, &fields.text()),
            Format::Json => json_line(now_ms(), meta.level(), logger, &fields),
        };
        self.output.write(&line);
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0))
}

/// `HH:MM:SS.mmm` (UTC) of a Unix time in milliseconds.
pub fn clock(unix_ms: u64) -> String {
    let ms = unix_ms % 1000;
    let s = (unix_ms / 1000) % 86_400;
    format!("{:02}:{:02}:{:02}.{ms:03}", s / 3600, (s / 60) % 60, s % 60)
}

fn context() -> String {
    let mut out = format!("t{}/", scope::thread_no());
    if scope::with_current(|s| s.write_context(&mut out)).is_none() {
        out.push_str("c-/r-/-");
    }
    out
}

/// One text line, newline included. Control characters are escaped (the
/// context's user too); a `message` that spans lines goes on to lines
/// that start with [`CONTINUATION`], so that what a device sent cannot
/// start a line that reads as the server's.
pub fn text_line(unix_ms: u64, level: &Level, logger: Logger, message: &str) -> String {
    let mut out = format!("{} [{}] {{{}}} [", clock(unix_ms), level, logger.name());
    escape_controls(&mut out, &context());
    out.push_str("] ");
    escape_message(&mut out, message);
    out.push('\n');
    out
}

fn json_line(unix_ms: u64, level: &Level, logger: Logger, fields: &Fields) -> String {
    let mut out = String::with_capacity(128);
    let _ = write!(
        out,
        "{{\"time\":\"{}\",\"level\":\"{level}\",\"logger\":\"{}\",\"context\":",
        clock(unix_ms),
        logger.name()
    );
    json_str(&mut out, &context());
    out.push_str(",\"message\":");
    json_str(&mut out, &fields.message);
    for (k, v) in &fields.rest {
        out.push(',');
        json_str(&mut out, k);
        out.push(':');
        json_str(&mut out, v);
    }
    out.push_str("}\n");
    out
}

fn json_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Whether a field of this name holds a secret and must print as `*`.
pub fn is_secret_field(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "secret",
        "authorization",
        "credential",
        "token",
    ]
    .iter()
    .any(|s| n.contains(s))
}

#[derive(Debug, Default)]
struct Fields {
    message: String,
    rest: Vec<(String, String)>,
}

impl Fields {
    /// The text form: the message, then `key=value` fields, each value on
    /// the line (its control characters escaped). Values carry what
    /// devices sent (an ItemId, a CollectionId, a reason quoting them): a
    /// newline in one must not start a line of its own that reads as the
    /// server's. The message may span lines (REQUEST.FULL: headers and
    /// the body as XML, whose text is the device's); the text line writes
    /// it with every line after the first behind [`CONTINUATION`].
    fn text(&self) -> String {
        let mut out = self.message.clone();
        for (k, v) in &self.rest {
            if !out.is_empty() {
                out.push(' ');
            }
            let _ = write!(out, "{k}=");
            escape_controls(&mut out, v);
        }
        out
    }
}

/// What a text line's message writes at the start of each line it spans
/// after its first. A log line starts with its time (a digit): no text a
/// device sent, wherever it ends up in a message, can start one.
pub const CONTINUATION: &str = "  ";

/// `s` with `\n`, `\r` and the other control characters but tab escaped.
fn escape_controls(out: &mut String, s: &str) {
    for c in s.chars() {
        escape_char(out, c);
    }
}

/// A message: as [`escape_controls`], but a line feed goes on to a line
/// that starts with [`CONTINUATION`]; line feeds at the end are dropped.
/// A message is the code's text, but it often quotes what devices sent
/// (REQUEST.FULL's XML, a `{}` in a format string).
fn escape_message(out: &mut String, s: &str) {
    for c in s.trim_end_matches('\n').chars() {
        if c == '\n' {
            out.push('\n');
            out.push_str(CONTINUATION);
        } else {
            escape_char(out, c);
        }
    }
}

fn escape_char(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push('\t'),
        c if c.is_control() => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        if field.name() == "message" {
            self.message = value;
        } else if is_secret_field(field.name()) {
            self.rest.push((field.name().to_owned(), "*".to_owned()));
        } else {
            self.rest.push((field.name().to_owned(), value));
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn clock_is_utc_time_of_day_with_millis() {
        assert_eq!(clock(0), "00:00:00.000");
        // 2026-11-29T13:05:09.042Z
        assert_eq!(clock(1_795_957_509_042), "13:05:09.042");
    }

    fn capture(levels: &'static Levels, format: Format, f: impl FnOnce()) -> String {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let layer = LogLayer::new(levels, Output::Memory(buf.clone()), format);
        let subscriber = tracing_subscriber::registry().with(layer);
        tracing::subscriber::with_default(subscriber, f);
        let bytes = buf.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    fn check_line(line: &str, level: &str, logger: &str, ctx_tail: &str, message: &str) {
        // HH:MM:SS.mmm [LEVEL] {LOGGER} [t<n>/c<Cmd>/r<n>/<user>] message
        let (time, rest) = line.split_at(12);
        let b = time.as_bytes();
        assert!(
            b.iter().enumerate().all(|(i, c)| match i {
                2 | 5 => *c == b':',
                8 => *c == b'.',
                _ => c.is_ascii_digit(),
            }),
            "time in {line:?}"
        );
        let rest = rest
            .strip_prefix(&format!(" [{level}] {{{logger}}} [t"))
            .unwrap_or_else(|| panic!("level/logger in {line:?}"));
        let (thread, rest) = rest.split_once('/').unwrap();
        assert!(thread.parse::<u64>().is_ok(), "{line:?}");
        let (ctx, msg) = rest.split_once("] ").unwrap();
        assert!(ctx.ends_with(ctx_tail), "context {ctx:?} in {line:?}");
        assert_eq!(msg, message);
    }

    #[test]
    fn each_logger_writes_the_line_format_and_filters_by_its_level() {
        static LEVELS: Levels = Levels::new(LoggerLevel::Info);
        let out = capture(&LEVELS, Format::Text, || {
            tracing::info!(target: "BREAKDOWN", "REQUEST:3");
            tracing::debug!(target: "REQUEST.FULL", "hidden at info");
            tracing::warn!(target: "REQUEST.FULL", "warn always passes");
            tracing::info!(target: "opush_server::http::auth", user = "bob", password = "hunter2", "login");
            tracing::debug!(target: "hyper::proto", "third party debug");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        check_line(lines[0], "INFO", "BREAKDOWN", "c-/r-/-", "REQUEST:3");
        check_line(
            lines[1],
            "WARN",
            "REQUEST.FULL",
            "c-/r-/-",
            "warn always passes",
        );
        check_line(
            lines[2],
            "INFO",
            "AUTHENTICATION",
            "c-/r-/-",
            "login user=bob password=*",
        );
        assert!(!out.contains("hunter2"));
    }

    #[test]
    fn a_field_value_cannot_start_a_line_of_its_own() {
        static LEVELS: Levels = Levels::new(LoggerLevel::Info);
        // What a device may put in an ItemId (percent-encoded) or a
        // CollectionId: once a second line forged as the server's.
        let forged = "2:1\n00:00:00.000 [ERROR] {BACKEND} [t1/c-/r-/-] forged\r\x1b[2J";
        let out = capture(&LEVELS, Format::Text, || {
            tracing::warn!(error = %format!("original message not found: {forged}"), "not sent");
            tracing::warn!(collection = forged, "twice");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        check_line(
            lines[0],
            "WARN",
            "CONTAINER",
            "c-/r-/-",
            "not sent error=original message not found: 2:1\\n00:00:00.000 [ERROR] {BACKEND} [t1/c-/r-/-] forged\\r\\u{1b}[2J",
        );
        assert!(lines[1].ends_with("twice collection=2:1\\n00:00:00.000 [ERROR] {BACKEND} [t1/c-/r-/-] forged\\r\\u{1b}[2J"), "{out}");
    }

    #[test]
    fn device_text_in_a_message_cannot_start_a_line_of_its_own() {
        static LEVELS: Levels = Levels::new(LoggerLevel::Debug);
        // A Sync whose Subject a device wrote, printed by REQUEST.FULL as
        // XML (a line feed stays raw in XML text), and a message that
        // quotes device text through its format string.
        let forged = "00:00:00.000 [ERROR] {BACKEND} [t1/c-/r-/-] forged";
        let xml = format!(
            "<?xml version=\"1.0\"?>\n<Sync>\n  <Subject>hi\n{forged}\r\u{1b}[2J</Subject>\n</Sync>\n"
        );
        let out = capture(&LEVELS, Format::Text, || {
            tracing::debug!(target: "REQUEST.FULL", "request Cmd=Sync\n  user-agent: x\n{xml}");
            tracing::warn!("no such folder: {}", format!("7\n{forged}"));
        });
        let starts: Vec<&str> = out
            .lines()
            .filter(|l| l.as_bytes().first().is_some_and(u8::is_ascii_digit))
            .collect();
        assert_eq!(starts.len(), 2, "{out}");
        assert!(starts[0].contains("{REQUEST.FULL}") && starts[1].contains("{CONTAINER}"));
        for line in out.lines().filter(|l| !starts.contains(l)) {
            assert!(line.starts_with(CONTINUATION), "{line:?} in {out}");
        }
        assert!(out.contains(&format!(
            "\n{CONTINUATION}{forged}\\r\\u{{1b}}[2J</Subject>\n"
        )));
        assert!(!out.contains('\r') && !out.contains('\u{1b}'), "{out:?}");
        // Each line ends where it did: no blank line after the XML.
        assert!(out.contains(&format!("\n{CONTINUATION}</Sync>\n")), "{out}");
        assert!(
            out.ends_with(&format!("\n{CONTINUATION}{forged}\n")),
            "{out}"
        );
        assert_eq!(out.lines().count(), 9, "{out}");
    }

    #[tokio::test]
    async fn a_user_with_a_line_feed_stays_on_the_line() {
        static LEVELS: Levels = Levels::new(LoggerLevel::Info);
        let buf = Arc::new(Mutex::new(Vec::new()));
        let layer = LogLayer::new(&LEVELS, Output::Memory(buf.clone()), Format::Text);
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        scope::run(scope::RequestScope::new(), async {
            scope::set_user("bob\n00:00:00.000 [ERROR] x");
            tracing::info!(target: "SUMMARY.IN", "CHANGE: 1");
        })
        .await;
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        assert_eq!(out.lines().count(), 1, "{out}");
        assert!(
            out.contains("/bob\\n00:00:00.000 [ERROR] x] CHANGE: 1"),
            "{out}"
        );
    }

    #[test]
    fn a_level_change_takes_effect_at_once_and_every_logger_has_a_switch() {
        static LEVELS: Levels = Levels::new(LoggerLevel::Warn);
        for logger in Logger::ALL {
            let out = capture(&LEVELS, Format::Text, || {
                LEVELS.set(logger, LoggerLevel::Warn);
                tracing::callsite::rebuild_interest_cache();
                log_to(logger, "off");
                LEVELS.set(logger, LoggerLevel::Debug);
                tracing::callsite::rebuild_interest_cache();
                log_to(logger, "on");
                LEVELS.set(logger, LoggerLevel::Warn);
            });
            let lines: Vec<&str> = out.lines().collect();
            assert_eq!(lines.len(), 1, "{logger}: {out}");
            check_line(lines[0], "DEBUG", logger.name(), "c-/r-/-", "on");
        }
    }

    /// `tracing` targets are static: one call site per logger.
    fn log_to(logger: Logger, msg: &str) {
        match logger {
            Logger::Authentication => tracing::debug!(target: "AUTHENTICATION", "{msg}"),
            Logger::Breakdown => tracing::debug!(target: "BREAKDOWN", "{msg}"),
            Logger::Configuration => tracing::debug!(target: "CONFIGURATION", "{msg}"),
            Logger::Container => tracing::debug!(target: "CONTAINER", "{msg}"),
            Logger::ImapCommand => tracing::debug!(target: "IMAP.COMMAND", "{msg}"),
            Logger::MailData => tracing::debug!(target: "MAIL.DATA", "{msg}"),
            Logger::Migration => tracing::debug!(target: "MIGRATION", "{msg}"),
            Logger::Backend => tracing::debug!(target: "BACKEND", "{msg}"),
            Logger::RequestFull => tracing::debug!(target: "REQUEST.FULL", "{msg}"),
            Logger::RequestTrimmed => tracing::debug!(target: "REQUEST.TRIMMED", "{msg}"),
            Logger::Resources => tracing::debug!(target: "RESOURCES", "{msg}"),
            Logger::SummaryIn => tracing::debug!(target: "SUMMARY.IN", "{msg}"),
            Logger::SummaryOut => tracing::debug!(target: "SUMMARY.OUT", "{msg}"),
        }
    }

    #[tokio::test]
    async fn lines_inside_a_request_carry_its_context() {
        static LEVELS: Levels = Levels::new(LoggerLevel::Info);
        let buf = Arc::new(Mutex::new(Vec::new()));
        let layer = LogLayer::new(&LEVELS, Output::Memory(buf.clone()), Format::Text);
        let _guard = tracing::subscriber::set_default(tracing_subscriber::registry().with(layer));
        let req = scope::RequestScope::new();
        let id = req.id();
        scope::run(req, async {
            scope::set_command("Sync");
            scope::set_user("bob@example.test");
            tracing::info!(target: "SUMMARY.IN", "CHANGE: 1, DELETE: 0, FETCH: 0");
        })
        .await;
        let out = String::from_utf8(buf.lock().unwrap().clone()).unwrap();
        check_line(
            out.trim_end(),
            "INFO",
            "SUMMARY.IN",
            &format!("cSync/r{id}/bob@example.test"),
            "CHANGE: 1, DELETE: 0, FETCH: 0",
        );
    }

    #[test]
    fn json_lines_hold_the_same_fields() {
        static LEVELS: Levels = Levels::new(LoggerLevel::Info);
        let out = capture(&LEVELS, Format::Json, || {
            tracing::info!(target: "CONTAINER", port = 8082, "say \"hi\"");
        });
        assert!(out.starts_with("{\"time\":\""), "{out}");
        assert!(
            out.contains("\"level\":\"INFO\",\"logger\":\"CONTAINER\",\"context\":\"t"),
            "{out}"
        );
        assert!(
            out.contains("\"message\":\"say \\\"hi\\\"\",\"port\":\"8082\"}\n"),
            "{out}"
        );
    }
}
