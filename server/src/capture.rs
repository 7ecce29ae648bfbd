//! Full-capture mode: for the devices switched on (`[capture] devices` at
//! start, `PUT /capture/USER/DEVICE` on the admin address at run time),
//! every request and response is kept in the store with its headers, under
//! the request id the device log uses, so `opush replay export` puts the
//! bodies in the bundle and `opush replay show` prints them. Off by default:
//! the event log itself keeps only digests of bodies (docs/DESIGN.md).
//!
//! What is kept, per request, as four capture rows of the store
//! (`put_capture`, with the `[capture] ttl_s` TTL on both backends):
//! `request-head` (request line and headers, `Authorization` and any
//! secret-named header as `*`), `request` (the body as received),
//! `response-head` (status line and headers) and `response` (the body as
//! sent). Bodies are byte-identical to the wire except that a WBXML body
//! carrying a secret element (Settings `DevicePassword`, an ItemOperations
//! or Search `Password`) is re-encoded with its text as `*`, and a body
//! longer than `[capture] max_body_bytes` is cut to that size; the head then
//! says so in an `X-Opush-Capture` line.
//!
//! The device's request trace (`RequestReceived`, `Decided`,
//! `ResponseSent`), which the server otherwise defers until a state change,
//! is appended after each captured request, so a bundle exported from a
//! running server (Cassandra) joins every capture to its request.
//!
//! Run-time switches live in this process only: a restart returns to the
//! configured set (a debugging switch left on by mistake does not outlive
//! the process; put the device in `[capture] devices` to keep it).
//! Requests refused before authentication are never captured (an unknown
//! caller cannot make opush write), nor are requests without a device id
//! (Autodiscover, a bare OPTIONS).
//!
//! It decides nothing about requests and must never fail one: a capture
//! that cannot be written is a WARN line and a storage error in the metrics.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use opush_storage::{DeviceKey, Store};

use crate::config::CaptureConfig;

/// The store row kinds of one captured request.
pub const KINDS: [&str; 4] = ["request-head", "request", "response-head", "response"];

/// Why a device is captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Listed in `[capture] devices`.
    Config,
    /// Switched on from the admin address.
    Admin,
}

impl Source {
    fn name(self) -> &'static str {
        match self {
            Source::Config => "config",
            Source::Admin => "admin",
        }
    }
}

/// The devices under full capture and how their bodies are kept.
#[derive(Debug)]
pub struct Captures {
    on: Mutex<BTreeMap<(String, String), Source>>,
    /// Fast path: false while no device is captured (no lock per request).
    any: AtomicBool,
    ttl: Duration,
    max_body: usize,
}

impl Default for Captures {
    fn default() -> Self {
        Captures::from_config(&CaptureConfig::default())
    }
}

/// One request and its answer, as the HTTP layer saw them.
#[derive(Debug)]
pub struct Exchange<'a> {
    /// The request id (the device log's, when the request was recorded).
    pub req_id: u64,
    /// Request line and headers, secrets already masked.
    pub request_head: String,
    /// The request body as received (empty when it was not read).
    pub request_body: &'a [u8],
    /// Whether the request body is WBXML.
    pub request_wbxml: bool,
    /// Status line and headers.
    pub response_head: String,
    /// The response body as sent.
    pub response_body: &'a [u8],
    /// Whether the response body is WBXML.
    pub response_wbxml: bool,
}

fn key(user: &str, device: &str) -> (String, String) {
    (user.to_ascii_lowercase(), device.to_owned())
}

impl Captures {
    /// The configured set (an invalid entry is refused by
    /// `Config::validate` and skipped here).
    pub fn from_config(cfg: &CaptureConfig) -> Captures {
        let on: BTreeMap<_, _> = cfg
            .device_pairs()
            .unwrap_or_default()
            .into_iter()
            .map(|(u, d)| (key(&u, &d), Source::Config))
            .collect();
        Captures {
            any: AtomicBool::new(!on.is_empty()),
            on: Mutex::new(on),
            ttl: Duration::from_secs(cfg.ttl_s.max(1)),
            max_body: usize::try_from(cfg.max_body_bytes).unwrap_or(usize::MAX),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(String, String), Source>> {
        // Poisoned only if a holder panicked; the map stays consistent.
        self.on.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether `user`'s `device` is captured now.
    pub fn is_on(&self, user: &str, device: &str) -> bool {
        self.any.load(Ordering::Relaxed) && self.map().contains_key(&key(user, device))
    }

    /// Switches capture on for a device (admin address); false if it was on.
    pub fn enable(&self, user: &str, device: &str) -> Result<bool, String> {
        DeviceKey::new(user, device).map_err(|e| e.to_string())?;
        let mut map = self.map();
        let fresh = map.insert(key(user, device), Source::Admin).is_none();
        self.any.store(true, Ordering::Relaxed);
        Ok(fresh)
    }

    /// Switches capture off for a device (until a restart, for a
    /// configured one); false if it was not captured.
    pub fn disable(&self, user: &str, device: &str) -> bool {
        let mut map = self.map();
        let was = map.remove(&key(user, device)).is_some();
        self.any.store(!map.is_empty(), Ordering::Relaxed);
        was
    }

    /// One `user/device source` line per captured device, then the TTL and size cap.
    pub fn describe(&self) -> String {
        let mut out = String::new();
        for ((user, device), source) in self.map().iter() {
            out.push_str(&format!("{user}/{device} {}\n", source.name()));
        }
        out.push_str(&format!(
            "# ttl_s {} max_body_bytes {}\n",
            self.ttl.as_secs(),
            self.max_body
        ));
        out
    }

    /// The TTL of captured rows.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The four rows of an exchange: `(kind, bytes)`.
    pub fn rows(&self, x: &Exchange<'_>) -> [(&'static str, Vec<u8>); 4] {
        let (req, req_note) = self.keep(x.request_body, x.request_wbxml);
        let (res, res_note) = self.keep(x.response_body, x.response_wbxml);
        let head = |h: &str, note: Option<String>| {
            let mut h = h.to_owned();
            if let Some(n) = note {
                h.push_str(&format!("\nX-Opush-Capture: {n}"));
            }
            h.into_bytes()
        };
        [
            (KINDS[0], head(&x.request_head, req_note)),
            (KINDS[1], req),
            (KINDS[2], head(&x.response_head, res_note)),
            (KINDS[3], res),
        ]
    }

    /// A body as it is kept, and what was done to it, if anything.
    fn keep(&self, body: &[u8], wbxml: bool) -> (Vec<u8>, Option<String>) {
        let mut out = None;
        if wbxml && !body.is_empty() {
            if let Ok(doc) = opush_protocol::wbxml::decode(body) {
                let mut doc = doc.into_owned();
                if opush_protocol::xml::mask_secrets(&mut doc) {
                    out = Some((
                        opush_protocol::wbxml::encode_to_vec(&doc),
                        "secrets masked (body re-encoded)".to_owned(),
                    ));
                }
            }
        }
        let (mut bytes, mut note) = match out {
            Some((b, n)) => (b, Some(n)),
            None => (body.to_vec(), None),
        };
        if bytes.len() > self.max_body {
            let cut = format!("cut to {} of {} bytes", self.max_body, bytes.len());
            bytes.truncate(self.max_body);
            note = Some(match note {
                Some(n) => format!("{n}; {cut}"),
                None => cut,
            });
        }
        (bytes, note)
    }

    /// Stores an exchange of `user`'s `device` (best effort: a failure is
    /// logged and counted, never the request's).
    pub async fn store(&self, store: &Store, user: &str, device: &str, x: &Exchange<'_>) {
        let key = match DeviceKey::new(user, device) {
            Ok(k) => k,
            Err(e) => {
                tracing::warn!(error = %e, "capture not stored: bad device key");
                return;
            }
        };
        let req_id = x.req_id.to_string();
        for (kind, bytes) in self.rows(x) {
            let put = store.put_capture(&key, &req_id, kind, bytes, self.ttl);
            if let Err(e) = crate::obs::timed(crate::obs::Category::Storage, put).await {
                crate::obs::metrics::storage_error();
                tracing::warn!(target: "BACKEND", device = %key, req_id = %req_id, error = %e, "capture not stored");
                return;
            }
        }
    }

    /// Stores an exchange, then appends the device's deferred request trace
    /// so the store holds the request's events next to its capture.
    pub async fn store_and_flush(
        &self,
        sessions: &crate::session::Sessions,
        user: &str,
        device: &str,
        x: &Exchange<'_>,
    ) {
        self.store(sessions.store(), user, device, x).await;
        if let Ok(key) = DeviceKey::new(user, device) {
            sessions.flush_device(&key).await;
        }
    }
}

/// Decodes `%XX` escapes of a path segment (the admin address's user and
/// device); `None` for a broken escape or non-UTF-8.
pub fn percent_decode(segment: &str) -> Option<String> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn captures(max: u64) -> Captures {
        Captures::from_config(&CaptureConfig {
            devices: vec!["Alice@Example.test/DEV1".into()],
            ttl_s: 60,
            max_body_bytes: max,
        })
    }

    #[test]
    fn switches_on_and_off() {
        let c = captures(100);
        assert!(c.is_on("alice@example.test", "DEV1"));
        assert!(
            !c.is_on("alice@example.test", "dev1"),
            "device ids are exact"
        );
        assert!(!c.is_on("bob@example.test", "DEV1"));
        assert_eq!(c.enable("bob@example.test", "D2"), Ok(true));
        assert_eq!(c.enable("bob@example.test", "D2"), Ok(false));
        assert!(c.enable("bob@example.test", "").is_err());
        assert!(c.is_on("BOB@example.test", "D2"));
        let listed = c.describe();
        assert!(
            listed.contains("alice@example.test/DEV1 config\n"),
            "{listed}"
        );
        assert!(listed.contains("bob@example.test/D2 admin\n"), "{listed}");
        assert!(c.disable("alice@example.test", "DEV1"));
        assert!(!c.disable("alice@example.test", "DEV1"));
        assert!(c.disable("bob@example.test", "D2"));
        assert!(!c.is_on("bob@example.test", "D2"));
        assert!(!c.any.load(Ordering::Relaxed));
    }

    #[test]
    fn bodies_are_kept_as_sent_unless_secret_or_too_long() {
        let c = captures(1000);
        let sync = opush_protocol::xml::xml_to_wbxml(
            r#"<FolderSync xmlns="FolderHierarchy:"><SyncKey>0</SyncKey></FolderSync>"#,
        )
        .unwrap();
        let settings = opush_protocol::xml::xml_to_wbxml(
            r#"<Settings xmlns="Settings:"><DevicePassword><Set><Password>hunter2</Password></Set></DevicePassword></Settings>"#,
        )
        .unwrap();
        let rows = c.rows(&Exchange {
            req_id: 7,
            request_head: "POST /x".into(),
            request_body: &settings,
            request_wbxml: true,
            response_head: "HTTP/1.1 200".into(),
            response_body: &sync,
            response_wbxml: true,
        });
        assert_eq!(rows[3].1, sync, "an ordinary body is byte-identical");
        assert!(!rows[1].1.windows(7).any(|w| w == b"hunter2"));
        let xml = opush_protocol::xml::wbxml_to_xml(&rows[1].1).unwrap();
        assert!(xml.contains("<Password>*</Password>"), "{xml}");
        let head = String::from_utf8(rows[0].1.clone()).unwrap();
        assert!(
            head.ends_with("X-Opush-Capture: secrets masked (body re-encoded)"),
            "{head}"
        );
        assert_eq!(rows[2].1, b"HTTP/1.1 200");

        let small = captures(4);
        let rows = small.rows(&Exchange {
            req_id: 8,
            request_head: "POST /x".into(),
            request_body: b"0123456789",
            request_wbxml: false,
            response_head: "HTTP/1.1 200".into(),
            response_body: b"",
            response_wbxml: false,
        });
        assert_eq!(rows[1].1, b"0123");
        assert!(String::from_utf8(rows[0].1.clone())
            .unwrap()
            .contains("cut to 4 of 10 bytes"));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%40b.test").as_deref(), Some("a@b.test"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%4"), None);
        assert_eq!(percent_decode("bad%zz"), None);
    }
}
