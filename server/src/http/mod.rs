//! The HTTP front end (served by our own HTTP/1.1 connection loop, `conn`,
//! which keeps no buffer per waiting connection): routes `/Microsoft-Server-ActiveSync` (and
//! `/opush/ActiveSyncServlet/`), `/autodiscover/autodiscover.xml` (any case,
//! and `/opush/Autodiscover/`), and carries every request through the
//! lifecycle's first steps: in-flight limit, request line and headers, Basic
//! authentication, body size limit, loop throttling, device registry,
//! provisioning gate, body decoding, then the command dispatch. Each request
//! runs in its own observability scope (`crate::obs`): one REQUEST.TRIMMED
//! line, REQUEST.FULL bodies (secrets masked), BREAKDOWN and SUMMARY lines,
//! request metrics and one access log line (Apache combined format).
//!
//! It must not know what a command does (that is `crate::commands`), nor map
//! errors to codes itself (that is `crate::error`). It never logs the
//! `Authorization` header or a password.

pub mod auth;
mod autodiscover;
pub mod conn;
pub mod imap_login;
pub mod limits;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Buf, Bytes, BytesMut};
use futures::{Stream, StreamExt};
use opush_protocol::headers::{
    parse_protocol_version, PolicyKey, MS_AS_PROTOCOL_COMMANDS, MS_AS_PROTOCOL_VERSION,
    MS_AS_PROTOCOL_VERSIONS, MS_SERVER_ACTIVESYNC, X_MS_POLICY_KEY,
};
use opush_protocol::query::{QueryForm, RequestLine};
use opush_protocol::version::{ProtocolVersion, PROTOCOL_VERSIONS_HEADER};
use opush_protocol::wbxml;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use warp::http::{HeaderMap, Method};

use crate::commands::{self, body_is_wbxml, CommandContext, EasResponse};
use crate::device::{DeviceAccess, DeviceRegistry, DeviceSeen, ProvisionVerdict};
use crate::error::{self, ErrorContext, ErrorSettings, ServerError};
use auth::{AuthenticatedUser, Authenticator, CredentialVerifier};
use limits::LoopDetector;

/// What the HTTP layer needs from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSettings {
    /// Public base URL devices reach (`[server] public_url`); Autodiscover
    /// answers `<public_url>/Microsoft-Server-ActiveSync`.
    pub public_url: String,
    /// Requests processed at once (`[server] max_in_flight`); more get 503.
    pub max_in_flight: usize,
    /// Largest request body in bytes (`[server] max_request_body`); more gets 413.
    pub max_request_body: u64,
    /// How long a successful login is remembered.
    pub auth_cache_ttl: Duration,
    /// Bound on remembered logins.
    pub auth_cache_max_entries: usize,
    /// `Retry-After` sent with 503 answers.
    pub retry_after: Duration,
    /// Unknown devices are allowed (true) or quarantined (`[devices] allow_unknown`).
    pub allow_unknown_devices: bool,
    /// Devices must Provision first (`[policy] require_provisioning`).
    pub require_provisioning: bool,
    /// Window of the loop detector.
    pub loop_window: Duration,
    /// Identical requests allowed per window (0: no loop detection).
    pub loop_max_repeats: u32,
    /// Basic realm.
    pub realm: String,
    /// Header and keep-alive timeouts of the connection loop
    /// (`[server] header_timeout_s`, `keep_alive_s`).
    pub timeouts: conn::ConnTimeouts,
    /// Peers whose `X-Forwarded-For` is believed (`[server] trusted_proxies`).
    pub trusted_proxies: crate::origin::TrustedProxies,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            public_url: "http://127.0.0.1:8082".into(),
            max_in_flight: 1024,
            max_request_body: 32 * 1024 * 1024,
            auth_cache_ttl: Duration::from_secs(60),
            auth_cache_max_entries: 100_000,
            retry_after: Duration::from_secs(30),
            allow_unknown_devices: true,
            require_provisioning: false,
            loop_window: Duration::from_secs(60),
            loop_max_repeats: 30,
            realm: "opush".into(),
            timeouts: conn::ConnTimeouts::default(),
            trusted_proxies: crate::origin::TrustedProxies::default(),
        }
    }
}

impl HttpSettings {
    /// The MobileSync URL Autodiscover hands out.
    pub fn mobile_sync_url(&self) -> String {
        let base = self.public_url.trim_end_matches('/');
        if base
            .to_ascii_lowercase()
            .ends_with("/microsoft-server-activesync")
        {
            base.to_owned()
        } else {
            format!("{base}/Microsoft-Server-ActiveSync")
        }
    }
}

/// Whether device traffic is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServeMode {
    /// Normal operation.
    Ready,
    /// Storage is not usable (schema missing or too old): every device
    /// request gets 503 and an ERROR log with this reason.
    AdminOnly(String),
}

/// The state shared by all requests.
pub struct AppState {
    /// Settings.
    pub settings: HttpSettings,
    /// Authentication (verifier + cache).
    pub auth: Authenticator,
    /// The device registry.
    pub devices: Arc<dyn DeviceRegistry>,
    /// Ready or admin-only.
    pub mode: ServeMode,
    /// The EAS command services (store sessions, engine config, IMAP), when
    /// the server is ready for device traffic; `None` in admin-only mode.
    pub eas: Option<Arc<crate::session::EasServices>>,
    in_flight: Arc<Semaphore>,
    loops: LoopDetector,
    access_log: std::sync::OnceLock<crate::obs::access::AccessLog>,
    capture: std::sync::OnceLock<Arc<crate::capture::Captures>>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("settings", &self.settings)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// Builds the shared state.
    pub fn new(
        settings: HttpSettings,
        verifier: Arc<dyn CredentialVerifier>,
        devices: Arc<dyn DeviceRegistry>,
        mode: ServeMode,
    ) -> Arc<Self> {
        Self::with_eas(settings, verifier, devices, mode, None)
    }

    /// Builds the shared state with the EAS command services.
    pub fn with_eas(
        settings: HttpSettings,
        verifier: Arc<dyn CredentialVerifier>,
        devices: Arc<dyn DeviceRegistry>,
        mode: ServeMode,
        eas: Option<Arc<crate::session::EasServices>>,
    ) -> Arc<Self> {
        Arc::new(AppState {
            eas,
            auth: Authenticator::new(
                verifier,
                settings.auth_cache_ttl,
                settings.auth_cache_max_entries,
            ),
            devices,
            mode,
            in_flight: Arc::new(Semaphore::new(settings.max_in_flight)),
            loops: LoopDetector::new(settings.loop_window, settings.loop_max_repeats, 100_000),
            access_log: std::sync::OnceLock::new(),
            capture: std::sync::OnceLock::new(),
            settings,
        })
    }
}

impl AppState {
    /// Writes one access log line per request to `log` from now on (once;
    /// false if an access log was already set).
    pub fn set_access_log(&self, log: crate::obs::access::AccessLog) -> bool {
        self.access_log.set(log).is_ok()
    }

    /// Keeps the requests and responses of the devices `capture` names
    /// (full-capture mode, `crate::capture`) from now on (once; false if
    /// already set).
    pub fn set_capture(&self, capture: Arc<crate::capture::Captures>) -> bool {
        self.capture.set(capture).is_ok()
    }

    /// The full-capture switches, if set.
    pub fn capture(&self) -> Option<&Arc<crate::capture::Captures>> {
        self.capture.get()
    }
}

/// Answers one request in its own observability scope (the connection
/// loop, `conn`, calls it for every request).
async fn respond<S, B, E>(app: Arc<AppState>, req: Request, body: S) -> EasResponse
where
    S: Stream<Item = Result<B, E>> + Send,
    B: Buf,
    E: std::fmt::Display,
{
    let scope = crate::obs::RequestScope::new();
    // The device's address (behind a trusted proxy, the one it forwarded):
    // IMAP logins made for the request name it (`crate::origin`).
    let client = req
        .remote
        .map(|peer| app.settings.trusted_proxies.client_of(peer, &req.headers));
    let run = crate::obs::scope::run(scope.clone(), handle(app, &scope, req, client, body));
    match client {
        Some(c) => crate::origin::scope(c, run).await,
        None => run.await,
    }
}

/// Serves on `listener` until `shutdown` resolves, then lets in-flight
/// requests finish (the connection loop: `conn`).
pub async fn serve(
    listener: TcpListener,
    app: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    conn::serve(listener, app, shutdown).await;
}

/// Which endpoint a path names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Endpoint {
    ActiveSync,
    Autodiscover,
}

impl Endpoint {
    fn of(path: &str) -> Option<Endpoint> {
        let p = path.trim_end_matches('/');
        if p.eq_ignore_ascii_case("/Microsoft-Server-ActiveSync")
            || p.eq_ignore_ascii_case("/opush/ActiveSyncServlet")
        {
            Some(Endpoint::ActiveSync)
        } else if p.eq_ignore_ascii_case("/autodiscover/autodiscover.xml")
            || p.eq_ignore_ascii_case("/opush/Autodiscover")
        {
            Some(Endpoint::Autodiscover)
        } else {
            None
        }
    }
}

/// What the access log says about a request, filled in as it is known.
#[derive(Debug, Default)]
struct Access {
    ctx: ErrorContext,
    user: Option<String>,
    device: Option<String>,
    /// The request body, once read (for the full-capture mode).
    body: Option<Bytes>,
    /// The request's id in the device log, once assigned.
    req_id: Option<u64>,
}

/// The request line and headers as received.
struct Request {
    remote: Option<std::net::SocketAddr>,
    method: Method,
    path: String,
    query: String,
    headers: HeaderMap,
}

async fn handle<S, B, E>(
    app: Arc<AppState>,
    scope: &crate::obs::RequestScope,
    req: Request,
    client: Option<crate::origin::ClientAddr>,
    body: S,
) -> EasResponse
where
    S: Stream<Item = Result<B, E>> + Send,
    B: Buf,
    E: std::fmt::Display,
{
    let started = Instant::now();
    let unix_ms = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(0));
    let Request {
        remote: _,
        method,
        path,
        query,
        headers,
    } = req;
    let mut access = Access::default();
    // Sub-futures that finish before a Ping parks are boxed: an unboxed one
    // would keep its (large) state in every parked request's future.
    let res = Box::pin(process(
        &app,
        &mut access,
        &method,
        &path,
        &query,
        &headers,
        body,
    ))
    .await;
    let res = match res {
        Ok(res) => res,
        Err(err) => error::respond(
            &err,
            access.ctx,
            ErrorSettings {
                retry_after: app.settings.retry_after,
                realm: &app.settings.realm,
            },
        ),
    };
    let took = started.elapsed();
    let cmd = match (access.ctx.command, Endpoint::of(&path)) {
        (Some(c), _) => c.name(),
        (None, Some(Endpoint::Autodiscover)) => "Autodiscover",
        (None, _) => "-",
    };
    log_response(&res);
    Box::pin(capture(
        &app, &access, &method, &path, &query, &headers, &res,
    ))
    .await;
    tracing::info!(
        target: "REQUEST.TRIMMED",
        device = access.device.as_deref().unwrap_or("-"),
        status = res.http_status,
        bytes = res.body_len(),
        duration_ms = took.as_millis() as u64,
        "{method} {path} {cmd}"
    );
    let eas_status = (res.content_type == Some(opush_protocol::headers::CONTENT_TYPE_WBXML))
        .then(|| wbxml::first_status(&res.body))
        .flatten();
    crate::obs::metrics::request_done(cmd, res.http_status, eas_status, took);
    if let Some(log) = app.access_log.get() {
        let target = if query.is_empty() {
            path.clone()
        } else {
            format!("{path}?{query}")
        };
        log.write(&crate::obs::access::AccessRecord {
            remote: client.map(|c| c.ip),
            user: access.user.as_deref(),
            unix_ms,
            method: method.as_str(),
            target: &target,
            status: res.http_status,
            bytes: res.body_len() as usize,
            referer: headers.get("Referer").and_then(|v| v.to_str().ok()),
            user_agent: headers.get("User-Agent").and_then(|v| v.to_str().ok()),
        });
    }
    crate::obs::log_request_end(scope, access.ctx.command);
    res
}

/// Full-capture mode: stores the exchange when its device is captured.
async fn capture(
    app: &AppState,
    access: &Access,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    res: &EasResponse,
) {
    let (Some(captures), Some(eas), Some(user), Some(device)) = (
        app.capture(),
        app.eas.as_deref(),
        access.user.as_deref(),
        access.device.as_deref(),
    ) else {
        return;
    };
    if !captures.is_on(user, device) {
        return;
    }
    let target = if query.is_empty() {
        path.to_owned()
    } else {
        format!("{path}?{query}")
    };
    let response_head = captured_head(res);
    let request_body = access.body.as_deref().unwrap_or(&[]);
    let request_wbxml = access
        .ctx
        .command
        .zip(access.ctx.version)
        .is_some_and(|(c, v)| body_is_wbxml(c, v));
    let exchange = crate::capture::Exchange {
        req_id: access.req_id.unwrap_or_else(crate::session::new_request_id),
        request_head: format!("{method} {target} HTTP/1.1{}", masked_headers(headers)),
        request_body,
        request_wbxml,
        response_head,
        response_body: &res.body,
        response_wbxml: res.content_type == Some(opush_protocol::headers::CONTENT_TYPE_WBXML),
    };
    captures
        .store_and_flush(&eas.sessions, user, device, &exchange)
        .await;
}

/// An answer's status line and headers as the capture keeps them; a
/// streamed tail (an attachment read from IMAP as it goes out) is not
/// kept with the body: its length is named.
fn captured_head(res: &EasResponse) -> String {
    let mut head = format!("HTTP/1.1 {}", res.http_status);
    if let Some(ct) = res.content_type {
        head.push_str(&format!("\ncontent-type: {ct}"));
    }
    for (name, value) in &res.headers {
        head.push_str(&format!("\n{name}: {value}"));
    }
    if let Some(tail) = &res.tail {
        head.push_str(&format!(
            "\nX-Opush-Capture-Tail: {} bytes streamed after the body, not kept",
            tail.len()
        ));
    }
    head
}

/// The request's headers for REQUEST.FULL, `Authorization` as `*`.
fn masked_headers(headers: &HeaderMap) -> String {
    let mut out = String::new();
    for (name, value) in headers {
        let value = if name == warp::http::header::AUTHORIZATION
            || name == warp::http::header::PROXY_AUTHORIZATION
            || crate::obs::layer::is_secret_field(name.as_str())
        {
            "*"
        } else {
            value.to_str().unwrap_or("<not ASCII>")
        };
        out.push_str(&format!("\n  {name}: {value}"));
    }
    out
}

fn full_enabled() -> bool {
    tracing::enabled!(target: "REQUEST.FULL", tracing::Level::DEBUG)
}

/// REQUEST.FULL: the response, as masked XML when it is WBXML.
fn log_response(res: &EasResponse) {
    if !full_enabled() {
        return;
    }
    let body = if res.content_type == Some(opush_protocol::headers::CONTENT_TYPE_WBXML) {
        match wbxml::decode(&res.body) {
            Ok(doc) => opush_protocol::xml::element_to_xml_masked(&doc),
            Err(e) => format!("<undecodable WBXML: {e}>"),
        }
    } else {
        format!(
            "<{} bytes of {}>",
            res.body.len(),
            res.content_type.unwrap_or("no content")
        )
    };
    tracing::debug!(target: "REQUEST.FULL", status = res.http_status, "response {body}");
}

async fn process<S, B, E>(
    app: &AppState,
    access: &mut Access,
    method: &Method,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: S,
) -> Result<EasResponse, ServerError>
where
    S: Stream<Item = Result<B, E>> + Send,
    B: Buf,
    E: std::fmt::Display,
{
    let endpoint = Endpoint::of(path).ok_or_else(|| ServerError::NotFound(path.to_owned()))?;
    // Held until the answer is built (the body is read under it), unless
    // the command parks (Ping) and releases it.
    let permit = limits::InFlightPermit::new(
        app.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| ServerError::Overloaded(app.settings.max_in_flight))?,
    );
    match endpoint {
        Endpoint::Autodiscover => {
            crate::obs::scope::set_command("Autodiscover");
            if method != Method::POST {
                return Err(ServerError::MethodNotAllowed {
                    method: method.to_string(),
                    allow: "POST",
                });
            }
            let user = Box::pin(authenticate(app, access, headers)).await?;
            let limit = app
                .settings
                .max_request_body
                .min(opush_protocol::autodiscover::MAX_REQUEST_BYTES as u64);
            let body = read_body(body, limit, headers).await?;
            if full_enabled() {
                // The body (an e-mail address and a schema) is not logged.
                tracing::debug!(target: "REQUEST.FULL", "request Autodiscover{}\n<{} bytes of XML>", masked_headers(headers), body.len());
            }
            autodiscover::answer(&app.settings, &user, &body)
        }
        Endpoint::ActiveSync => {
            if method != Method::OPTIONS && method != Method::POST {
                return Err(ServerError::MethodNotAllowed {
                    method: method.to_string(),
                    allow: "OPTIONS,POST",
                });
            }
            if let ServeMode::AdminOnly(reason) = &app.mode {
                return Err(ServerError::AdminOnly(reason.clone()));
            }
            if method == Method::OPTIONS {
                // Devices send credentials with OPTIONS and use its 401 to
                // validate an account (as Exchange answers).
                authenticate(app, access, headers).await?;
                return Ok(options());
            }
            active_sync(app, access, query, headers, body, &permit).await
        }
    }
}

async fn authenticate(
    app: &AppState,
    access: &mut Access,
    headers: &HeaderMap,
) -> Result<AuthenticatedUser, ServerError> {
    let value = match headers.get(warp::http::header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| auth::AuthError::Malformed("Authorization is not ASCII".to_owned()))?,
        ),
    };
    let user = app.auth.authenticate(value).await?;
    crate::obs::scope::set_user(&user.user);
    access.user = Some(user.user.clone());
    if let Some(eas) = app.eas.as_deref() {
        // Sent copies a previous run left waiting for IMAP resume with the
        // password of the user's request (no I/O on its path).
        eas.sent_copies.on_request(eas, &user.user, &user.password);
    }
    Ok(user)
}

/// The OPTIONS answer (MS-ASHTTP 2.2.4).
fn options() -> EasResponse {
    EasResponse {
        http_status: 200,
        content_type: None,
        headers: vec![
            ("Allow", "OPTIONS,POST".to_owned()),
            ("Public", "OPTIONS,POST".to_owned()),
            (
                MS_SERVER_ACTIVESYNC,
                ProtocolVersion::LATEST.as_str().to_owned(),
            ),
            (MS_AS_PROTOCOL_VERSIONS, PROTOCOL_VERSIONS_HEADER.to_owned()),
            (
                MS_AS_PROTOCOL_COMMANDS,
                commands::protocol_commands_header().to_owned(),
            ),
            ("Cache-Control", "private".to_owned()),
        ],
        body: Vec::new(),
        tail: None,
    }
}

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ServerError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| ServerError::BadRequest(format!("header {name} is not ASCII"))),
    }
}

async fn active_sync<S, B, E>(
    app: &AppState,
    access: &mut Access,
    query: &str,
    headers: &HeaderMap,
    body: S,
    in_flight: &limits::InFlightPermit,
) -> Result<EasResponse, ServerError>
where
    S: Stream<Item = Result<B, E>> + Send,
    B: Buf,
    E: std::fmt::Display,
{
    // 1. Request line and headers.
    let request = RequestLine::parse(query)?;
    crate::obs::scope::set_command(request.command.name());
    access.ctx.command = Some(request.command);
    access.device = Some(request.device_id.clone());
    let version = match (request.form, request.protocol_version) {
        (QueryForm::Base64, Some(v)) => v,
        _ => {
            let value = header_str(headers, MS_AS_PROTOCOL_VERSION)?.ok_or_else(|| {
                ServerError::BadRequest(format!("missing {MS_AS_PROTOCOL_VERSION} header"))
            })?;
            parse_protocol_version(value).map_err(|e| {
                ServerError::BadRequest(format!(
                    "{e}; supported versions are {PROTOCOL_VERSIONS_HEADER}"
                ))
            })?
        }
    };
    access.ctx.version = Some(version);
    let policy_key = match header_str(headers, X_MS_POLICY_KEY)? {
        Some(v) => Some(
            v.parse::<PolicyKey>()
                .map_err(|e| ServerError::BadRequest(e.to_string()))?
                .0,
        ),
        None => request.policy_key,
    };

    // 2. Authentication, then the body (never read for a stranger).
    let user = Box::pin(authenticate(app, access, headers)).await?;
    if let Some(query_user) = &request.user {
        if !query_user.eq_ignore_ascii_case(&user.login.raw)
            && !query_user.eq_ignore_ascii_case(&user.login.user)
            && !query_user.eq_ignore_ascii_case(&user.user)
        {
            tracing::debug!(query_user = %query_user, user = %user.user, "User= differs from the authenticated login");
        }
    }
    let body = Box::pin(read_body(body, app.settings.max_request_body, headers)).await?;
    access.body = Some(body.clone());
    // REQUEST.FULL before any check that may refuse it (loop, registry,
    // provisioning gate, body decoding), so refused requests show too.
    if full_enabled() {
        let xml = if !body.is_empty() && body_is_wbxml(request.command, version) {
            match wbxml::decode(&body) {
                Ok(doc) => opush_protocol::xml::element_to_xml_masked(&doc),
                Err(e) => format!("<{} bytes of undecodable WBXML: {e}>", body.len()),
            }
        } else {
            format!("<{} bytes, not WBXML>", body.len())
        };
        tracing::debug!(target: "REQUEST.FULL", "request {query}{}\n{xml}", masked_headers(headers));
    }
    let meta = crate::session::RequestMeta::new(request.command, version, &body);
    access.req_id = Some(meta.req_id);

    // 3. A device repeating itself is slowed down.
    let key = LoopDetector::key(
        &user.user,
        &request.device_id,
        request.command.name(),
        &body,
    );
    if let Some(wait) = app.loops.hit(key, Instant::now()) {
        return Err(ServerError::Throttled(wait));
    }

    // 4. Device registry, access, provisioning.
    let device = Box::pin(
        app.devices.record_request(
            DeviceSeen {
                user: user.user.clone(),
                device_id: request.device_id.clone(),
                device_type: request.device_type.clone(),
                user_agent: header_str(headers, "User-Agent")
                    .ok()
                    .flatten()
                    .map(str::to_owned),
                protocol_version: version,
                at: SystemTime::now(),
            },
            app.settings.allow_unknown_devices,
        ),
    )
    .await?;
    if device.access != DeviceAccess::Allowed {
        return Err(ServerError::DeviceDenied(device.access));
    }
    if let Some(eas) = app.eas.as_deref() {
        // The device's own event-sourced state decides (engine::check_policy).
        let caller = crate::session::Caller::new(&user.user, &request.device_id, &user.password);
        match Box::pin(eas.provision_verdict(
            &caller,
            request.command,
            policy_key,
            app.settings.require_provisioning,
            &meta,
        ))
        .await?
        {
            ProvisionVerdict::Pass => {}
            verdict => {
                // The refusal is the request's answer: answered here so the
                // device log gets its ResponseSent (replay sees it).
                let res = error::respond(
                    &ServerError::ProvisionRequired(verdict),
                    access.ctx,
                    ErrorSettings {
                        retry_after: app.settings.retry_after,
                        realm: &app.settings.realm,
                    },
                );
                let device = crate::session::device_key(&user.user, &request.device_id)?;
                Box::pin(crate::session::record_response(
                    eas,
                    device,
                    &meta,
                    res.http_status,
                    &res.body,
                ))
                .await;
                return Ok(res);
            }
        }
    }

    // 5. The body must decode when the command's body is WBXML.
    let document = if !body.is_empty() && body_is_wbxml(request.command, version) {
        let doc = wbxml::decode(&body)
            .map_err(|e| ServerError::BadRequest(format!("undecodable WBXML body: {e}")))?;
        Some(doc.into_owned())
    } else {
        None
    };
    // The multipart ItemOperations answer, asked for by header or query;
    // a header value other than T or F asks for nothing (logged), rather
    // than failing every command of the device.
    let accept_multi_part = request.params.accept_multi_part
        || match header_str(headers, opush_protocol::headers::MS_AS_ACCEPT_MULTI_PART) {
            Ok(Some(v)) => {
                opush_protocol::headers::parse_accept_multi_part(v).unwrap_or_else(|e| {
                    tracing::debug!(target: "REQUEST.TRIMMED", "{e}: a WBXML answer");
                    false
                })
            }
            _ => false,
        };
    // 6. The command.
    let ctx = CommandContext {
        accept_multi_part,
        app,
        user: &user,
        device: &device,
        version,
        request: &request,
        policy_key,
        body: &body,
        document: document.as_ref(),
        in_flight,
        meta,
    };
    Ok(commands::dispatch(ctx).await?)
}

async fn read_body<S, B, E>(body: S, limit: u64, headers: &HeaderMap) -> Result<Bytes, ServerError>
where
    S: Stream<Item = Result<B, E>> + Send,
    B: Buf,
    E: std::fmt::Display,
{
    let declared = header_str(headers, "Content-Length")?
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ServerError::BadRequest("bad Content-Length".to_owned()))
        })
        .transpose()?;
    if declared.is_some_and(|n| n > limit) {
        return Err(ServerError::PayloadTooLarge { limit });
    }
    let initial = declared.unwrap_or(0).min(limit).min(1 << 20);
    let mut buf = BytesMut::with_capacity(usize::try_from(initial).unwrap_or(0));
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let mut chunk =
            chunk.map_err(|e| ServerError::BadRequest(format!("reading the body: {e}")))?;
        if (buf.len() + chunk.remaining()) as u64 > limit {
            return Err(ServerError::PayloadTooLarge { limit });
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            let n = part.len();
            buf.extend_from_slice(part);
            chunk.advance(n);
        }
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_captured_head_names_the_streamed_tail() {
        let tail = crate::commands::Tail::new(
            5,
            Box::pin(futures::stream::iter(vec![Ok(bytes::Bytes::from_static(
                b"hello",
            ))])),
        );
        let res = EasResponse {
            http_status: 200,
            content_type: None,
            headers: vec![("Content-Type", "text/plain".to_owned())],
            body: Vec::new(),
            tail: Some(tail),
        };
        assert_eq!(
            captured_head(&res),
            "HTTP/1.1 200\nContent-Type: text/plain\n\
             X-Opush-Capture-Tail: 5 bytes streamed after the body, not kept"
        );
        let whole = EasResponse { tail: None, ..res };
        assert_eq!(
            captured_head(&whole),
            "HTTP/1.1 200\nContent-Type: text/plain"
        );
    }

    #[test]
    fn endpoints_match_with_or_without_slash_and_any_case() {
        for p in [
            "/Microsoft-Server-ActiveSync",
            "/Microsoft-Server-ActiveSync/",
            "/microsoft-server-activesync",
            "/opush/ActiveSyncServlet/",
            "/opush/ActiveSyncServlet",
        ] {
            assert_eq!(Endpoint::of(p), Some(Endpoint::ActiveSync), "{p}");
        }
        for p in [
            "/autodiscover/autodiscover.xml",
            "/Autodiscover/Autodiscover.xml",
            "/AUTODISCOVER/AUTODISCOVER.XML",
            "/opush/Autodiscover/",
        ] {
            assert_eq!(Endpoint::of(p), Some(Endpoint::Autodiscover), "{p}");
        }
        for p in ["/", "/Microsoft-Server-ActiveSync/x", "/autodiscover"] {
            assert_eq!(Endpoint::of(p), None, "{p}");
        }
    }

    #[test]
    fn mobile_sync_url_from_public_url() {
        let mut s = HttpSettings {
            public_url: "https://mail.example.test/".into(),
            ..HttpSettings::default()
        };
        assert_eq!(
            s.mobile_sync_url(),
            "https://mail.example.test/Microsoft-Server-ActiveSync"
        );
        s.public_url = "https://mail.example.test/Microsoft-Server-ActiveSync".into();
        assert_eq!(
            s.mobile_sync_url(),
            "https://mail.example.test/Microsoft-Server-ActiveSync"
        );
    }
}
