//! Shared harness of the `http_*` tests: starts the real server in-process
//! on 127.0.0.1:0 against the real Dovecot of `scripts/stack up dovecot`,
//! speaks raw HTTP/1.1 (so tests can stall a body or send garbage), and
//! captures the tracing output in a buffer.
//!
//! It must not fake Dovecot: a missing Dovecot fails the test with the
//! command to run.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::io::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opush_protocol::headers::{BasicCredentials, Login, Password};
use opush_server::config::ImapConfig;
use opush_server::device::MemoryDeviceRegistry;
use opush_server::http::imap_login::ImapLoginVerifier;
use opush_server::http::{serve, AppState, HttpSettings, ServeMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// Dovecot of `scripts/stack`.
pub const IMAP_PORT: u16 = 1143;
/// Demo users' password.
pub const PASSWORD: &str = "opush-demo";
/// A wp8 capture's base64 query (FolderSync, 14.0, policy key 2104393581).
pub const WP8_QUERY: &str = "jAkMBBCkufmbxGcztuQus5kI+d1IBG1/bn0DV1A4";
/// The device id inside [`WP8_QUERY`].
pub const WP8_DEVICE_ID: &str = "a4b9f99bc46733b6e42eb39908f9dd48";
/// The corpus directory of that capture.
pub fn wp8_dir() -> std::path::PathBuf {
    opush_tests::corpus_dir().join("wp8-exchange-contact-create-modify-delete")
}

/// The first FolderSync request body of the wp8 capture.
pub fn wp8_folder_sync_body() -> Vec<u8> {
    let path = wp8_dir().join("001-FolderSync-request.wbxml");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Panics with the fix when Dovecot is not listening.
pub async fn require_dovecot() {
    if TcpStream::connect(("127.0.0.1", IMAP_PORT)).await.is_err() {
        panic!(
            "Dovecot is not listening on 127.0.0.1:{IMAP_PORT}: run `scripts/stack up dovecot` first"
        );
    }
}

/// Settings for tests: small limits, loop detection off unless asked.
pub fn settings() -> HttpSettings {
    HttpSettings {
        public_url: "https://mail.example.test".into(),
        max_in_flight: 16,
        max_request_body: 64 * 1024,
        loop_max_repeats: 0,
        ..HttpSettings::default()
    }
}

/// A running server.
pub struct TestServer {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its in-memory device registry (servers from [`start`] and
    /// [`start_with_imap_port`]; [`start_with_eas`] uses the store's).
    pub devices: Arc<MemoryDeviceRegistry>,
    /// Its state.
    pub app: Arc<AppState>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    /// Triggers the graceful shutdown and waits for the server to stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("server did not stop within 10 s")
                .expect("server task panicked");
        }
    }
}

/// Starts a server verifying logins on Dovecot.
pub async fn start(settings: HttpSettings) -> TestServer {
    require_dovecot().await;
    start_with_imap_port(settings, IMAP_PORT, ServeMode::Ready).await
}

/// Starts a server whose IMAP is at `imap_port` (possibly closed).
pub async fn start_with_imap_port(
    settings: HttpSettings,
    imap_port: u16,
    mode: ServeMode,
) -> TestServer {
    init_logs();
    let devices = Arc::new(MemoryDeviceRegistry::new(1000));
    let app = AppState::new(settings, verifier(imap_port), devices.clone(), mode);
    listen(app, devices).await
}

/// Logins verified by IMAP LOGIN on `127.0.0.1:imap_port`.
fn verifier(imap_port: u16) -> Arc<ImapLoginVerifier> {
    Arc::new(ImapLoginVerifier::new(ImapConfig {
        host: "127.0.0.1".into(),
        port: imap_port,
        login_with_domain: true,
        timeout_ms: 10_000,
        ..ImapConfig::default()
    }))
}

/// Serves `app` on a free loopback port until the server is stopped.
async fn listen(app: Arc<AppState>, devices: Arc<MemoryDeviceRegistry>) -> TestServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(serve(listener, app.clone(), async move {
        let _ = rx.await;
    }));
    TestServer {
        addr,
        devices,
        app,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// Starts a server with the EAS command services (store, engine, IMAP),
/// verifying logins on the stack's Dovecot.
pub async fn start_with_eas(
    settings: HttpSettings,
    eas: Arc<opush_server::session::EasServices>,
) -> TestServer {
    require_dovecot().await;
    init_logs();
    // As in production: the devices live in the store's registry rows
    // (`devices` below stays empty for such a server).
    let registry = Arc::new(opush_server::device::StoreDeviceRegistry::new(
        eas.sessions.store().clone(),
        std::time::Duration::from_secs(
            opush_server::config::DevicesConfig::default().registry_write_every_s,
        ),
        1000,
    ));
    let devices = Arc::new(MemoryDeviceRegistry::new(1));
    let app = AppState::with_eas(
        settings,
        verifier(IMAP_PORT),
        registry,
        ServeMode::Ready,
        Some(eas),
    );
    listen(app, devices).await
}

/// A port nothing listens on.
pub async fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap().port()
}

/// `Authorization` value for a login and password.
pub fn basic(login: &str, password: &str) -> String {
    BasicCredentials {
        login: Login::parse(login),
        password: Password::new(password),
    }
    .to_header_value()
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    /// Status code.
    pub status: u16,
    /// Headers in order.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Resp {
    /// A header value (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// The request head (without the blank line) for `method target`.
pub fn head(
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
) -> Vec<u8> {
    let mut out = Vec::new();
    write!(
        out,
        "{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
    )
    .unwrap();
    for (n, v) in headers {
        write!(out, "{n}: {v}\r\n").unwrap();
    }
    if let Some(n) = content_length {
        write!(out, "Content-Length: {n}\r\n").unwrap();
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// `OPTIONS /Microsoft-Server-ActiveSync` with this `Authorization`
/// header: the cheapest authenticated request.
#[allow(dead_code, reason = "not every test binary using this module calls it")]
pub async fn options_as(addr: SocketAddr, authorization: &str) -> Resp {
    request(
        addr,
        "OPTIONS",
        "/Microsoft-Server-ActiveSync",
        &[("Authorization", authorization)],
        b"",
    )
    .await
}

/// Sends one request and reads the whole response.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let mut bytes = head(method, target, headers, Some(body.len()));
    bytes.extend_from_slice(body);
    // The server may answer (413) and close before reading everything.
    let _ = s.write_all(&bytes).await;
    read_response(&mut s).await
}

/// Reads a response until the server closes the connection.
pub async fn read_response(s: &mut TcpStream) -> Resp {
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => raw.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("no complete response within 20 s");
    parse_response(&raw)
}

fn parse_response(raw: &[u8]) -> Resp {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..end]).unwrap();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line.split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let mut body = raw[end + 4..].to_vec();
    let chunked = headers
        .iter()
        .any(|(n, v)| n.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"));
    if chunked {
        body = dechunk(&body);
    }
    Resp {
        status,
        headers,
        body,
    }
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(i) = b.windows(2).position(|w| w == b"\r\n") {
        let n = usize::from_str_radix(std::str::from_utf8(&b[..i]).unwrap().trim(), 16).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&b[i + 2..i + 2 + n]);
        b = &b[i + 2 + n + 2..];
    }
    out
}

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct BufWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for BufWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Installs (once per test binary) a subscriber writing every event, at
/// TRACE level, into a buffer.
pub fn init_logs() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = BufWriter(buf.clone());
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("a subscriber is already set");
        buf
    });
}

/// Everything logged so far by this test binary.
pub fn logs() -> String {
    let buf = LOGS.get().expect("init_logs not called");
    String::from_utf8_lossy(&buf.lock().unwrap()).into_owned()
}
