//! Prometheus metrics, served as text at `/metrics` on the admin address.
//!
//! A small hand-written registry (a few counters, gauges and one histogram
//! family) rather than a metrics framework: the set is fixed and the
//! exposition format is simple. Process-wide, like the process it measures.
//!
//! Exposed: `opush_requests_total{command,code,status}` (`status`: the
//! response's EAS Status, the first `Status` element of its WBXML body —
//! the command's, or its first collection's — or `-` when it has none),
//! `opush_request_duration_seconds{command}` (histogram),
//! `opush_parked_pings`, `opush_devices`, `opush_devices_created_total`,
//! `opush_storage_errors_total`,
//! `opush_backend_errors_total{backend,kind}`, `opush_retries_total{what}`,
//! `opush_imap_logins_total{purpose}` (`pool`: a request's connection,
//! `verify`: a Basic-auth check, `push`: a watcher),
//! `opush_imap_pooled_connections`, `opush_imap_mailbox_opens_total`
//! (SELECT and EXAMINE commands sent: a Sync window on a connection that
//! has its folder selected sends none), `opush_imap_statuses_total` (STATUS
//! commands sent: a caught-up device's no-change Sync on the connection
//! that keeps its folder selected sends none), `opush_sent_copies_waiting`
//! (pending Sent copies in the store, counted by each sweep of
//! `crate::sent_copy`), `opush_sent_copies_to_inbox_total` (copies
//! delivered to their user's INBOX because they could not be saved in Sent).
//! Other modules update them with the functions below (one call each).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds of the latency buckets, in seconds (`+Inf` is implied).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

#[derive(Debug, Default, Clone)]
struct Histogram {
    buckets: [u64; LATENCY_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, secs: f64) {
        for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
            if secs <= *le {
                self.buckets[i] += 1;
            }
        }
        self.count += 1;
        self.sum += secs;
    }
}

#[derive(Debug, Default)]
struct Tables {
    requests: BTreeMap<(String, u16, Option<u16>), u64>,
    latency: BTreeMap<String, Histogram>,
    storage_errors: u64,
    backend_errors: BTreeMap<(&'static str, &'static str), u64>,
    retries: BTreeMap<&'static str, u64>,
    imap_logins: BTreeMap<&'static str, u64>,
    devices_created: u64,
}

static TABLES: Mutex<Tables> = Mutex::new(Tables {
    requests: BTreeMap::new(),
    latency: BTreeMap::new(),
    storage_errors: 0,
    backend_errors: BTreeMap::new(),
    retries: BTreeMap::new(),
    imap_logins: BTreeMap::new(),
    devices_created: 0,
});
static PARKED_PINGS: AtomicI64 = AtomicI64::new(0);
static DEVICES: AtomicI64 = AtomicI64::new(0);
static IMAP_POOLED: AtomicI64 = AtomicI64::new(0);
static SENT_COPIES_WAITING: AtomicI64 = AtomicI64::new(0);
static SENT_COPIES_TO_INBOX: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static IMAP_MAILBOX_OPENS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static IMAP_STATUSES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static FOLDERS_FROM_WATCHER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

fn tables() -> std::sync::MutexGuard<'static, Tables> {
    // Poisoned only if a metrics call panicked; the numbers stay usable.
    TABLES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records one answered request: its command (`-` when none), HTTP code,
/// EAS Status (when the body has one) and duration.
pub fn request_done(command: &str, code: u16, status: Option<u16>, took: Duration) {
    let mut t = tables();
    *t.requests
        .entry((command.to_owned(), code, status))
        .or_default() += 1;
    t.latency
        .entry(command.to_owned())
        .or_default()
        .observe(took.as_secs_f64());
}

/// A Ping parked (waiting for changes or its heartbeat).
pub fn parked_pings_inc() {
    PARKED_PINGS.fetch_add(1, Ordering::Relaxed);
}

/// A parked Ping ended (answered, replaced or cancelled).
pub fn parked_pings_dec() {
    PARKED_PINGS.fetch_sub(1, Ordering::Relaxed);
}

/// Counts one parked Ping for as long as it lives (dropped when the Ping
/// ends, however it ends).
#[derive(Debug)]
pub struct ParkedPing(());

impl ParkedPing {
    /// Counts a Ping as parked.
    #[allow(clippy::new_without_default, reason = "creating one has an effect")]
    pub fn new() -> ParkedPing {
        parked_pings_inc();
        ParkedPing(())
    }
}

impl Drop for ParkedPing {
    fn drop(&mut self) {
        parked_pings_dec();
    }
}

/// A device was seen for the first time (registered); returns `at` so the
/// call fits in the expression that creates the device's record.
pub fn device_created<T>(at: T) -> T {
    tables().devices_created += 1;
    at
}

/// The number of devices known: the in-memory registry's size, or the
/// store's device count (counted at start and every
/// [`crate::serve::DEVICE_RECOUNT`], kept current in between by
/// [`device_registered`]).
pub fn set_devices(n: usize) {
    DEVICES.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// The pending Sent copies the store holds (each sweep of
/// `crate::sent_copy` counts them).
pub fn set_sent_copies_waiting(n: usize) {
    SENT_COPIES_WAITING.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// A Sent copy that could not be saved in Sent was delivered to its
/// user's INBOX instead.
pub fn sent_copy_to_inbox() {
    SENT_COPIES_TO_INBOX.fetch_add(1, Ordering::Relaxed);
}

/// A device was written to the store's registry for the first time.
pub fn device_registered() {
    DEVICES.fetch_add(1, Ordering::Relaxed);
}

/// A store operation failed.
pub fn storage_error() {
    tables().storage_errors += 1;
}

/// A backend (`imap`, `smtp`, `sieve`, `dav`, `ldap`, `auth`; `engine` and `os`
/// for the server's own failures) failed, with the `kind` of failure
/// (`unavailable`, `protocol`, `rejected`, …).
pub fn backend_error(backend: &'static str, kind: &'static str) {
    *tables().backend_errors.entry((backend, kind)).or_default() += 1;
}

/// An operation was retried (`storage`, …).
pub fn retry(what: &'static str) {
    *tables().retries.entry(what).or_default() += 1;
}

/// An IMAP LOGIN is about to be sent (`pool`, `verify`, `push`).
pub fn imap_login(purpose: &'static str) {
    *tables().imap_logins.entry(purpose).or_default() += 1;
}

/// An IMAP SELECT or EXAMINE is about to be sent.
pub fn imap_mailbox_open() {
    IMAP_MAILBOX_OPENS.fetch_add(1, Ordering::Relaxed);
}

/// An IMAP STATUS is about to be sent.
pub fn imap_status() {
    IMAP_STATUSES.fetch_add(1, Ordering::Relaxed);
}

/// A Sync's or Ping's folder was taken as unchanged from its user's push
/// watcher, without asking IMAP (`[push] sync_watch_s`).
pub fn folder_from_watcher() {
    FOLDERS_FROM_WATCHER.fetch_add(1, Ordering::Relaxed);
}

/// How many times [`folder_from_watcher`] was counted (tests).
pub fn folders_from_watcher() -> u64 {
    FOLDERS_FROM_WATCHER.load(Ordering::Relaxed)
}

/// Connections open in the IMAP pool, over all users.
pub fn set_imap_pooled(n: usize) {
    IMAP_POOLED.store(i64::try_from(n).unwrap_or(i64::MAX), Ordering::Relaxed);
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The exposition text (Prometheus text format 0.0.4).
pub fn render() -> String {
    let t = tables();
    let mut out = String::with_capacity(4096);
    let o = &mut out;
    let _ = writeln!(o, "# HELP opush_requests_total EAS and Autodiscover requests answered, by command, HTTP code and EAS Status (- when the answer has none).");
    let _ = writeln!(o, "# TYPE opush_requests_total counter");
    for ((cmd, code, status), n) in &t.requests {
        let status = status.map_or("-".to_owned(), |s| s.to_string());
        let _ = writeln!(
            o,
            "opush_requests_total{{command=\"{}\",code=\"{code}\",status=\"{status}\"}} {n}",
            label(cmd)
        );
    }
    let _ = writeln!(
        o,
        "# HELP opush_request_duration_seconds Time to answer a request, by command."
    );
    let _ = writeln!(o, "# TYPE opush_request_duration_seconds histogram");
    for (cmd, h) in &t.latency {
        let cmd = label(cmd);
        for (le, n) in LATENCY_BUCKETS.iter().zip(h.buckets) {
            let _ = writeln!(
                o,
                "opush_request_duration_seconds_bucket{{command=\"{cmd}\",le=\"{le}\"}} {n}"
            );
        }
        let _ = writeln!(
            o,
            "opush_request_duration_seconds_bucket{{command=\"{cmd}\",le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(
            o,
            "opush_request_duration_seconds_sum{{command=\"{cmd}\"}} {}",
            h.sum
        );
        let _ = writeln!(
            o,
            "opush_request_duration_seconds_count{{command=\"{cmd}\"}} {}",
            h.count
        );
    }
    single(
        o,
        ("opush_parked_pings", "gauge"),
        "Ping requests and long-poll Syncs currently parked.",
        PARKED_PINGS.load(Ordering::Relaxed),
    );
    single(
        o,
        ("opush_devices", "gauge"),
        "Devices registered in the store (recounted hourly, new ones added as they come).",
        DEVICES.load(Ordering::Relaxed),
    );
    single(
        o,
        ("opush_devices_created_total", "counter"),
        "Devices registered (first request) by this process.",
        t.devices_created,
    );
    single(
        o,
        ("opush_sent_copies_waiting", "gauge"),
        "Sent copies pending in the store, not in Sent yet (counted at start-up and every sweep).",
        SENT_COPIES_WAITING.load(Ordering::Relaxed),
    );
    single(
        o,
        ("opush_sent_copies_to_inbox_total", "counter"),
        "Sent copies that could not be saved in Sent, delivered to their user's INBOX instead by this process.",
        SENT_COPIES_TO_INBOX.load(Ordering::Relaxed),
    );
    single(
        o,
        ("opush_imap_mailbox_opens_total", "counter"),
        "IMAP SELECT and EXAMINE commands sent.",
        IMAP_MAILBOX_OPENS.load(Ordering::Relaxed),
    );
    single(
        o,
        ("opush_imap_statuses_total", "counter"),
        "IMAP STATUS commands sent.",
        IMAP_STATUSES.load(Ordering::Relaxed),
    );
    single(
        o,
        ("opush_folders_from_watcher_total", "counter"),
        "Sync collections and Ping folders taken as unchanged from the user's push watcher, without an IMAP round trip.",
        FOLDERS_FROM_WATCHER.load(Ordering::Relaxed),
    );
    let _ = writeln!(
        o,
        "# HELP opush_storage_errors_total Store operations that failed: requests answered with a retry, and writes done without (snapshot, request trace, capture, device count)."
    );
    let _ = writeln!(o, "# TYPE opush_storage_errors_total counter");
    let _ = writeln!(o, "opush_storage_errors_total {}", t.storage_errors);
    let _ = writeln!(
        o,
        "# HELP opush_backend_errors_total Backend failures (requests failed by a backend, push watchers losing IMAP), by backend and kind of failure."
    );
    let _ = writeln!(o, "# TYPE opush_backend_errors_total counter");
    for ((b, k), n) in &t.backend_errors {
        let _ = writeln!(
            o,
            "opush_backend_errors_total{{backend=\"{b}\",kind=\"{k}\"}} {n}"
        );
    }
    let _ = writeln!(
        o,
        "# HELP opush_retries_total Operations retried, by what was retried."
    );
    let _ = writeln!(o, "# TYPE opush_retries_total counter");
    for (w, n) in &t.retries {
        let _ = writeln!(o, "opush_retries_total{{what=\"{w}\"}} {n}");
    }
    let _ = writeln!(
        o,
        "# HELP opush_imap_logins_total IMAP logins sent, by purpose (pool: a request's connection, verify: a Basic-auth check, push: a watcher)."
    );
    let _ = writeln!(o, "# TYPE opush_imap_logins_total counter");
    for (p, n) in &t.imap_logins {
        let _ = writeln!(o, "opush_imap_logins_total{{purpose=\"{p}\"}} {n}");
    }
    single(
        o,
        ("opush_imap_pooled_connections", "gauge"),
        "IMAP connections open in the request pool (idle, in use, logging in).",
        IMAP_POOLED.load(Ordering::Relaxed),
    );
    out
}

/// A family of one unlabelled sample: its HELP, TYPE and value together
/// (the exposition format wants a family's lines contiguous).
fn single(
    o: &mut impl std::fmt::Write,
    (name, kind): (&str, &str),
    help: &str,
    value: impl std::fmt::Display,
) {
    let _ = writeln!(o, "# HELP {name} {help}");
    let _ = writeln!(o, "# TYPE {name} {kind}");
    let _ = writeln!(o, "{name} {value}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    /// Every family is one block: `# HELP name`, `# TYPE name`, then only
    /// samples of `name` (histograms: `name_bucket`, `_sum`, `_count`).
    #[test]
    fn each_family_is_help_type_then_its_samples() {
        request_done("UnitTestFamily", 200, Some(1), Duration::from_millis(3));
        backend_error("imap", "unit_test");
        retry("unit_test");
        let text = render();
        let mut family: Option<String> = None;
        let mut lines = text.lines().peekable();
        let mut families = 0;
        while let Some(line) = lines.next() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap_or_default().to_owned();
                let ty = lines.next().unwrap_or_default();
                assert!(
                    ty.starts_with(&format!("# TYPE {name} ")),
                    "{name}: HELP not followed by its TYPE but {ty:?}"
                );
                family = Some(name);
                families += 1;
                continue;
            }
            let name = family
                .as_deref()
                .unwrap_or_else(|| panic!("{line:?} before any HELP"));
            let metric = line.split(['{', ' ']).next().unwrap_or_default();
            let own = [
                name.to_owned(),
                format!("{name}_bucket"),
                format!("{name}_sum"),
                format!("{name}_count"),
            ];
            assert!(
                own.iter().any(|m| m == metric),
                "{line:?} inside the family {name}"
            );
        }
        assert!(families >= 10, "{families} families");
    }

    #[test]
    fn counters_histograms_and_gauges_render() {
        let before = render();
        let series = "opush_requests_total{command=\"UnitTestCmd\",code=\"200\",status=\"1\"}";
        let failed = "opush_requests_total{command=\"UnitTestCmd\",code=\"200\",status=\"142\"}";
        let plain = "opush_requests_total{command=\"UnitTestCmd\",code=\"401\",status=\"-\"}";
        assert_eq!(value(&before, series), None);
        request_done("UnitTestCmd", 200, Some(1), Duration::from_millis(30));
        request_done("UnitTestCmd", 200, Some(1), Duration::from_secs(2));
        request_done("UnitTestCmd", 200, Some(142), Duration::from_millis(1));
        request_done("UnitTestCmd", 401, None, Duration::from_millis(1));
        let before_pings = PARKED_PINGS.load(Ordering::Relaxed);
        let guard = ParkedPing::new();
        assert_eq!(PARKED_PINGS.load(Ordering::Relaxed), before_pings + 1);
        drop(guard);
        parked_pings_inc();
        parked_pings_inc();
        parked_pings_dec();
        let text = render();
        assert_eq!(value(&text, series), Some(2.0));
        assert_eq!(value(&text, failed), Some(1.0));
        assert_eq!(value(&text, plain), Some(1.0));
        let bucket = |le: &str| {
            value(
                &text,
                &format!(
                    "opush_request_duration_seconds_bucket{{command=\"UnitTestCmd\",le=\"{le}\"}}"
                ),
            )
        };
        assert_eq!(bucket("0.025"), Some(2.0));
        assert_eq!(bucket("0.05"), Some(3.0));
        assert_eq!(bucket("2.5"), Some(4.0));
        assert_eq!(bucket("+Inf"), Some(4.0));
        let sum = value(
            &text,
            "opush_request_duration_seconds_sum{command=\"UnitTestCmd\"}",
        )
        .unwrap_or(0.0);
        assert!((sum - 2.032).abs() < 1e-9, "{sum}");
        // Other tests in this binary may park pings too; ours moved it by one.
        assert!(value(&text, "opush_parked_pings").is_some());
        for family in [
            "opush_devices",
            "opush_storage_errors_total",
            "# TYPE opush_backend_errors_total counter",
            "# TYPE opush_retries_total counter",
            "# TYPE opush_imap_logins_total counter",
            "opush_imap_pooled_connections",
        ] {
            assert!(text.contains(family), "{family}");
        }
    }

    #[test]
    fn imap_logins_count_by_purpose() {
        let series = "opush_imap_logins_total{purpose=\"verify\"}";
        let before = value(&render(), series).unwrap_or(0.0);
        imap_login("verify");
        imap_login("verify");
        // Other tests may log in too; ours added at least two.
        assert!(value(&render(), series).unwrap_or(0.0) >= before + 2.0);
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
