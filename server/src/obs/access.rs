//! The access log: one line per HTTP request in Apache's combined format,
//! `host - user [dd/Mon/yyyy:HH:MM:SS +0000] "METHOD target HTTP/1.1" code bytes "referer" "user-agent"`,
//! written to a rotated, compressed file (`[logging] access_log`).
//!
//! The user is the authenticated login (never a password; the
//! `Authorization` header is never written). Quotes and control bytes in
//! header values are escaped as Apache does.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::Arc;

use super::rotate::RotatingFile;

/// What one access line says.
#[derive(Debug, Clone, Default)]
pub struct AccessRecord<'a> {
    /// The device's address, if known: the TCP peer's, or behind a trusted
    /// proxy the one it forwarded (`crate::origin`).
    pub remote: Option<IpAddr>,
    /// The authenticated user, if any.
    pub user: Option<&'a str>,
    /// Unix time of the request, milliseconds.
    pub unix_ms: u64,
    /// `POST`, `OPTIONS` …
    pub method: &'a str,
    /// Path and query as received.
    pub target: &'a str,
    /// HTTP status sent.
    pub status: u16,
    /// Response body bytes.
    pub bytes: usize,
    /// `Referer` header.
    pub referer: Option<&'a str>,
    /// `User-Agent` header.
    pub user_agent: Option<&'a str>,
}

pub use crate::dates::apache_time;

/// Apache's escaping of a logged string: `"` and `\` backslashed, control
/// and non-ASCII bytes as `\xhh`.
fn escape(out: &mut String, s: &str) {
    for b in s.bytes() {
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(b as char),
            _ => {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
    }
}

fn opt(out: &mut String, v: Option<&str>) {
    match v {
        Some(v) if !v.is_empty() => escape(out, v),
        _ => out.push('-'),
    }
}

/// The combined-format line, newline included.
pub fn combined_line(r: &AccessRecord<'_>) -> String {
    let mut out = String::with_capacity(160);
    match r.remote {
        Some(a) => {
            let _ = write!(out, "{a}");
        }
        None => out.push('-'),
    }
    out.push_str(" - ");
    match r.user {
        Some(u) if !u.is_empty() => escape(&mut out, &u.replace(' ', "%20")),
        _ => out.push('-'),
    }
    let _ = write!(out, " [{}] \"", apache_time(r.unix_ms));
    escape(&mut out, r.method);
    out.push(' ');
    escape(&mut out, r.target);
    out.push_str(" HTTP/1.1\" ");
    let _ = write!(out, "{} ", r.status);
    if r.bytes == 0 {
        out.push('-');
    } else {
        let _ = write!(out, "{}", r.bytes);
    }
    out.push_str(" \"");
    opt(&mut out, r.referer);
    out.push_str("\" \"");
    opt(&mut out, r.user_agent);
    out.push_str("\"\n");
    out
}

/// The access log file.
#[derive(Debug, Clone)]
pub struct AccessLog {
    file: Arc<RotatingFile>,
}

impl AccessLog {
    /// An access log writing to `file`.
    pub fn new(file: Arc<RotatingFile>) -> AccessLog {
        AccessLog { file }
    }

    /// The file.
    pub fn file(&self) -> &Arc<RotatingFile> {
        &self.file
    }

    /// Writes one request's line; a write failure goes to the CONTAINER logger.
    pub fn write(&self, r: &AccessRecord<'_>) {
        if let Err(e) = self.file.write_line(combined_line(r).as_bytes()) {
            tracing::warn!(target: "CONTAINER", file = %self.file.path().display(), error = %e, "access log not written");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_match_known_days() {
        assert_eq!(apache_time(0), "01/Jan/1970:00:00:00 +0000");
        assert_eq!(apache_time(1_795_957_509_042), "29/Nov/2026:13:05:09 +0000");
        // 2000-02-29 (leap day), 2100-03-01.
        assert_eq!(apache_time(951_782_400_000), "29/Feb/2000:00:00:00 +0000");
        assert_eq!(apache_time(4_107_542_400_000), "01/Mar/2100:00:00:00 +0000");
    }

    #[test]
    fn combined_format() {
        let r = AccessRecord {
            remote: "127.0.0.1".parse().ok(),
            user: Some("bob@example.test"),
            unix_ms: 1_795_957_509_042,
            method: "POST",
            target: "/Microsoft-Server-ActiveSync?Cmd=Sync&User=bob&DeviceId=D1&DeviceType=WP",
            status: 200,
            bytes: 1234,
            referer: None,
            user_agent: Some("Agent \"7\"\n"),
        };
        assert_eq!(
            combined_line(&r),
            "127.0.0.1 - bob@example.test [29/Nov/2026:13:05:09 +0000] \
             \"POST /Microsoft-Server-ActiveSync?Cmd=Sync&User=bob&DeviceId=D1&DeviceType=WP HTTP/1.1\" \
             200 1234 \"-\" \"Agent \\\"7\\\"\\x0a\"\n"
        );
        let anon = AccessRecord {
            method: "OPTIONS",
            target: "/",
            status: 401,
            ..AccessRecord::default()
        };
        assert_eq!(
            combined_line(&anon),
            "- - - [01/Jan/1970:00:00:00 +0000] \"OPTIONS / HTTP/1.1\" 401 - \"-\" \"-\"\n"
        );
    }
}
