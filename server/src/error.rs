//! The one place where an internal error becomes what the device sees: an
//! HTTP code (400, 401, 403, 405, 413, 449, 503 …) or, from protocol 14.0 on,
//! an EAS `Status` in the command's WBXML response (MS-ASCMD 2.2.2). Every
//! cause is logged here, once, at a level that matches who is at fault.
//!
//! It must not decide *whether* something is an error (callers do), and it
//! must never put an internal message in a response body, nor a password
//! or an `Authorization` value in a log. It never answers 500: every error
//! the server knows is either the device's (4xx / Status) or retryable (503).

use std::time::Duration;

use opush_protocol::headers::{Throttle, X_MS_AS_THROTTLE};
use opush_protocol::query::{Command, QueryError};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{code_page_by_namespace, encode_to_vec, tag_by_name, Element};

use crate::commands::compose::SendFailure;
use crate::commands::{response_root, CommandError, EasResponse};
use crate::device::{DeviceAccess, ProvisionVerdict, RegistryError};
use crate::http::auth::AuthError;

/// Everything that stops a request before or during its command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerError {
    /// No route for the path.
    #[error("no route for {0}")]
    NotFound(String),
    /// The route exists but not for this method.
    #[error("method {method} not allowed (allowed: {allow})")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// The `Allow` header value.
        allow: &'static str,
    },
    /// The request line is missing or malformed (including an unknown `Cmd`).
    #[error("bad request line: {0}")]
    Query(#[from] QueryError),
    /// Any other malformed request (headers, body).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The body is over `[server] max_request_body`.
    #[error("request body over {limit} bytes")]
    PayloadTooLarge {
        /// The limit.
        limit: u64,
    },
    /// Authentication failed or could not be done.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Too many requests in flight.
    #[error("{0} requests already in flight")]
    Overloaded(usize),
    /// The device repeats the same request too often.
    #[error("device repeats the same request; throttled for {0:?}")]
    Throttled(Duration),
    /// The server runs in admin-only mode (no device traffic).
    #[error("admin-only mode: {0}")]
    AdminOnly(String),
    /// The device registry failed.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The device may not sync.
    #[error("device access is {0:?}")]
    DeviceDenied(DeviceAccess),
    /// The device must (re)provision first.
    #[error("provisioning required: {0:?}")]
    ProvisionRequired(ProvisionVerdict),
    /// The command handler failed.
    #[error(transparent)]
    Command(#[from] CommandError),
}

/// What is known about the request when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorContext {
    /// The command, once the request line parsed.
    pub command: Option<Command>,
    /// The protocol version, once known.
    pub version: Option<ProtocolVersion>,
}

/// Settings the answers depend on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorSettings<'a> {
    /// `Retry-After` for 503 answers.
    pub retry_after: Duration,
    /// The Basic realm of `WWW-Authenticate`.
    pub realm: &'a str,
}

/// Turns an error into the device's answer, logging its cause.
pub fn respond(err: &ServerError, ctx: ErrorContext, settings: ErrorSettings<'_>) -> EasResponse {
    let cmd = ctx.command.map(Command::name).unwrap_or("-");
    let retry = |secs: Duration| retry_after(secs.max(Duration::from_secs(1)));
    match err {
        ServerError::NotFound(_) => {
            tracing::debug!(error = %err, "not found");
            http(404, vec![])
        }
        ServerError::MethodNotAllowed { allow, .. } => {
            tracing::info!(error = %err, "method not allowed");
            http(405, vec![("Allow", (*allow).to_owned())])
        }
        ServerError::Query(_) | ServerError::BadRequest(_) => {
            tracing::warn!(cmd, error = %err, "bad request");
            http(400, vec![])
        }
        ServerError::PayloadTooLarge { .. } => {
            tracing::warn!(cmd, error = %err, "request body too large");
            http(413, vec![])
        }
        ServerError::Auth(AuthError::Unavailable(_)) => {
            crate::obs::metrics::backend_error("auth", "unavailable");
            tracing::error!(target: "AUTHENTICATION", cmd, error = %err, "cannot authenticate: credential backend down");
            http(503, vec![retry(settings.retry_after)])
        }
        ServerError::Auth(_) | ServerError::Command(CommandError::CredentialsRejected(_)) => {
            match err {
                ServerError::Auth(AuthError::Missing) => {
                    tracing::info!(target: "AUTHENTICATION", cmd, error = %err, "authentication required")
                }
                _ => {
                    tracing::warn!(target: "AUTHENTICATION", cmd, error = %err, "authentication failed")
                }
            }
            http(
                401,
                vec![(
                    "WWW-Authenticate",
                    format!("Basic realm=\"{}\"", settings.realm.replace('"', "")),
                )],
            )
        }
        ServerError::Overloaded(_) => {
            tracing::warn!(target: "RESOURCES", cmd, error = %err, "overloaded");
            http(503, vec![retry(settings.retry_after)])
        }
        ServerError::Throttled(wait) => {
            tracing::warn!(target: "RESOURCES", cmd, error = %err, "device throttled");
            http(
                503,
                vec![
                    retry(*wait),
                    (
                        X_MS_AS_THROTTLE,
                        Throttle::CommandFrequency.as_str().to_owned(),
                    ),
                ],
            )
        }
        ServerError::AdminOnly(_) => {
            tracing::error!(cmd, error = %err, "device traffic refused");
            http(503, vec![retry(settings.retry_after)])
        }
        ServerError::Registry(RegistryError::Invalid(_)) => {
            tracing::warn!(cmd, error = %err, "bad request");
            http(400, vec![])
        }
        ServerError::Registry(_) => {
            crate::obs::metrics::storage_error();
            tracing::error!(target: "BACKEND", cmd, error = %err, "device registry failure");
            http(503, vec![retry(settings.retry_after)])
        }
        ServerError::DeviceDenied(_) => {
            tracing::warn!(cmd, error = %err, "device refused");
            // [MS-ASCMD] 2.2.2: 129 DeviceIsBlockedForThisUser (14.0+); 403 before.
            status_or(ctx, 129, || http(403, vec![]))
        }
        ServerError::ProvisionRequired(verdict) => {
            tracing::info!(cmd, error = %err, "device must provision");
            // [MS-ASPROV] 3.2.5.1: HTTP 449 up to 12.1, Status 142/143/144 from 14.0.
            match verdict.status() {
                Some(code) => status_or(ctx, code, || http(449, vec![])),
                None => http(449, vec![]),
            }
        }
        ServerError::Command(CommandError::NotImplemented(_)) => {
            tracing::warn!(cmd, error = %err, "command not implemented");
            // [MS-ASCMD] 2.2.2: 137 CommandNotSupported (14.0+); 400 before.
            status_or(ctx, 137, || http(400, vec![]))
        }
        ServerError::Command(CommandError::VersionNotSupported { .. }) => {
            tracing::warn!(cmd, error = %err, "command not in the request's protocol version");
            // [MS-ASCMD] 2.2.2: 138 VersionNotSupported (14.0+); 400 before.
            status_or(ctx, 138, || http(400, vec![]))
        }
        ServerError::Command(CommandError::InvalidRequest { .. }) => {
            tracing::warn!(cmd, error = %err, "invalid command request");
            // [MS-ASCMD] 2.2.2: 103 InvalidXML (14.0+); 400 before.
            status_or(ctx, 103, || http(400, vec![]))
        }
        ServerError::Command(CommandError::Throttled(wait)) => {
            tracing::warn!(cmd, error = %err, "device asked to come back later");
            http(
                503,
                vec![
                    retry(*wait),
                    (
                        X_MS_AS_THROTTLE,
                        Throttle::CommandFrequency.as_str().to_owned(),
                    ),
                ],
            )
        }
        ServerError::Command(CommandError::DeviceBusy) => {
            tracing::warn!(cmd, error = %err, "device busy on another node, device will retry");
            // [MS-ASCMD] 2.2.2: 111 ServerErrorRetryLater (14.0+); 503 before.
            status_or(ctx, 111, || http(503, vec![retry(settings.retry_after)]))
        }
        ServerError::Command(CommandError::LeaseLost(_)) => {
            crate::obs::metrics::storage_error();
            tracing::error!(target: "BACKEND", cmd, error = %err, "device lease not proven: backend effect fenced, device will retry");
            // [MS-ASCMD] 2.2.2: 111 ServerErrorRetryLater (14.0+); 503 before.
            status_or(ctx, 111, || http(503, vec![retry(settings.retry_after)]))
        }
        ServerError::Command(CommandError::Send(failure)) => {
            send_failure(failure, err, ctx, settings)
        }
        ServerError::Command(
            e @ (CommandError::BackendUnavailable(_)
            | CommandError::BackendFailed { .. }
            | CommandError::StorageUnavailable(_)),
        ) => {
            match e {
                CommandError::StorageUnavailable(_) => crate::obs::metrics::storage_error(),
                CommandError::BackendFailed { backend, kind, .. } => {
                    crate::obs::metrics::backend_error(backend, kind)
                }
                _ => crate::obs::metrics::backend_error("unknown", "unavailable"),
            }
            tracing::error!(target: "BACKEND", cmd, error = %err, "command failed, device will retry");
            // [MS-ASCMD] 2.2.2: 111 ServerErrorRetryLater (14.0+); 503 before.
            status_or(ctx, 111, || http(503, vec![retry(settings.retry_after)]))
        }
    }
}

/// SendMail/SmartReply/SmartForward failures ([MS-ASCMD] 2.2.2 common
/// status codes from 14.0; HTTP codes before, where the response has no body).
fn send_failure(
    failure: &SendFailure,
    err: &ServerError,
    ctx: ErrorContext,
    settings: ErrorSettings<'_>,
) -> EasResponse {
    let cmd = ctx.command.map(Command::name).unwrap_or("-");
    match failure {
        SendFailure::PreviouslySent(_) => {
            tracing::info!(cmd, error = %err, "ClientId already sent, not sent again");
            // 118 MessagePreviouslySent; before 14.0 (no ClientId) plain success.
            status_or(ctx, 118, EasResponse::empty)
        }
        SendFailure::TooLarge { .. } => {
            tracing::warn!(cmd, error = %err, "message too large, not sent");
            // 122 AttachmentIsTooLarge (the message as a whole).
            status_or(ctx, 122, || http(413, vec![]))
        }
        SendFailure::InvalidMime(_) => {
            tracing::warn!(cmd, error = %err, "invalid MIME, not sent");
            status_or(ctx, 107, || http(400, vec![]))
        }
        SendFailure::NoRecipient => {
            tracing::warn!(cmd, error = %err, "message without recipient, not sent");
            status_or(ctx, 119, || http(400, vec![]))
        }
        SendFailure::RecipientsRefused(_) => {
            tracing::warn!(cmd, error = %err, "invalid recipient, not sent");
            // 116 MessageRecipientUnresolved.
            status_or(ctx, 116, || http(400, vec![]))
        }
        SendFailure::Refused(_) => {
            crate::obs::metrics::backend_error("smtp", "rejected");
            tracing::error!(cmd, error = %err, "relay refused the message");
            // 120 MailSubmissionFailed.
            status_or(ctx, 120, || http(400, vec![]))
        }
        SendFailure::RelayUnavailable(_) => {
            crate::obs::metrics::backend_error("smtp", "unavailable");
            tracing::error!(cmd, error = %err, "relay unavailable, device will retry");
            status_or(ctx, 111, || {
                http(
                    503,
                    vec![retry_after(
                        settings.retry_after.max(Duration::from_secs(1)),
                    )],
                )
            })
        }
        SendFailure::SourceNotFound(_) => {
            tracing::warn!(cmd, error = %err, "original message not found");
            // 150 ItemNotFound.
            status_or(ctx, 150, || http(400, vec![]))
        }
        SendFailure::ReplyFailed(_) => {
            tracing::error!(cmd, error = %err, "reply/forward could not be built");
            // 121 MessageReplyFailed.
            status_or(ctx, 121, || http(400, vec![]))
        }
    }
}

fn retry_after(wait: Duration) -> (&'static str, String) {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    ("Retry-After", secs.to_string())
}

fn http(status: u16, headers: Vec<(&'static str, String)>) -> EasResponse {
    EasResponse {
        http_status: status,
        content_type: None,
        headers,
        body: Vec::new(),
        tail: None,
    }
}

/// A 200 answer carrying `status` in the command's response root when the
/// version uses Status values for it (14.0+), else `fallback()`.
fn status_or(
    ctx: ErrorContext,
    status: u16,
    fallback: impl FnOnce() -> EasResponse,
) -> EasResponse {
    match (ctx.command, ctx.version) {
        (Some(command), Some(version)) if version >= ProtocolVersion::V14_0 => {
            match status_document(command, status) {
                Some(body) => EasResponse::wbxml(body),
                None => fallback(),
            }
        }
        _ => fallback(),
    }
}

/// `<Root><Status>n</Status></Root>` in WBXML for a command with a top-level Status.
pub fn status_document(command: Command, status: u16) -> Option<Vec<u8>> {
    let (namespace, root) = response_root(command)?;
    let page = code_page_by_namespace(namespace)?;
    let root = tag_by_name(page.id, root)?;
    let status_tag = tag_by_name(page.id, "Status")?;
    let doc = Element::new(root).with(Element::with_text(status_tag, status.to_string()));
    Some(encode_to_vec(&doc))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use opush_protocol::wbxml::{decode, tags};

    const SETTINGS: ErrorSettings<'static> = ErrorSettings {
        retry_after: Duration::from_secs(30),
        realm: "opush",
    };

    fn ctx(command: Command, version: ProtocolVersion) -> ErrorContext {
        ErrorContext {
            command: Some(command),
            version: Some(version),
        }
    }

    fn header<'a>(res: &'a EasResponse, name: &str) -> Option<&'a str> {
        res.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn status_of(res: &EasResponse) -> String {
        let doc = decode(&res.body).unwrap();
        doc.child_text(tags::folderhierarchy::STATUS)
            .or_else(|| doc.child_text(tags::airsync::STATUS))
            .unwrap()
            .to_owned()
    }

    // [MS-ASPROV] 3.2.5.1
    #[test]
    fn provisioning_449_before_14_status_after() {
        let err = ServerError::ProvisionRequired(ProvisionVerdict::NotProvisioned);
        let old = respond(
            &err,
            ctx(Command::FolderSync, ProtocolVersion::V12_1),
            SETTINGS,
        );
        assert_eq!(old.http_status, 449);
        let new = respond(
            &err,
            ctx(Command::FolderSync, ProtocolVersion::V14_0),
            SETTINGS,
        );
        assert_eq!(new.http_status, 200);
        assert_eq!(status_of(&new), "142");
        let err = ServerError::ProvisionRequired(ProvisionVerdict::InvalidPolicyKey);
        let sync = respond(&err, ctx(Command::Sync, ProtocolVersion::V16_1), SETTINGS);
        assert_eq!(status_of(&sync), "144");
        // No Status-bearing root (GetAttachment): HTTP 449 whatever the version.
        let att = respond(
            &err,
            ctx(Command::GetAttachment, ProtocolVersion::V14_1),
            SETTINGS,
        );
        assert_eq!(att.http_status, 449);
    }

    #[test]
    fn blocked_device_gets_129_or_403() {
        let err = ServerError::DeviceDenied(DeviceAccess::Quarantined);
        let new = respond(
            &err,
            ctx(Command::FolderSync, ProtocolVersion::V14_1),
            SETTINGS,
        );
        assert_eq!(status_of(&new), "129");
        let old = respond(
            &err,
            ctx(Command::FolderSync, ProtocolVersion::V12_0),
            SETTINGS,
        );
        assert_eq!(old.http_status, 403);
    }

    #[test]
    fn auth_answers() {
        let res = respond(
            &ServerError::Auth(AuthError::Rejected("alice".into())),
            ErrorContext::default(),
            SETTINGS,
        );
        assert_eq!(res.http_status, 401);
        assert_eq!(
            header(&res, "WWW-Authenticate"),
            Some("Basic realm=\"opush\"")
        );
        let res = respond(
            &ServerError::Auth(AuthError::Unavailable(
                crate::http::auth::VerifierUnavailable("down".into()),
            )),
            ErrorContext::default(),
            SETTINGS,
        );
        assert_eq!(res.http_status, 503);
        assert_eq!(header(&res, "Retry-After"), Some("30"));
        assert_eq!(header(&res, "WWW-Authenticate"), None);
        // A handler whose IMAP login is refused (password changed since the
        // login was cached) answers 401 too, at every version.
        let res = respond(
            &ServerError::Command(CommandError::CredentialsRejected("alice".into())),
            ctx(Command::Sync, ProtocolVersion::V16_1),
            SETTINGS,
        );
        assert_eq!(res.http_status, 401);
        assert!(header(&res, "WWW-Authenticate").is_some());
    }

    #[test]
    fn backend_failures_are_counted_by_backend_and_kind() {
        let series = "opush_backend_errors_total{backend=\"imap\",kind=\"protocol\"} ";
        let count = || {
            crate::obs::metrics::render()
                .lines()
                .find_map(|l| l.strip_prefix(series)?.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let before = count();
        let err = ServerError::Command(crate::session::imap_error(
            crate::backends::imap::ImapError::Protocol("garbage".into()),
        ));
        let res = respond(&err, ctx(Command::Sync, ProtocolVersion::V14_1), SETTINGS);
        assert_eq!(status_of(&res), "111");
        assert!(count() > before, "{}", crate::obs::metrics::render());
    }

    // A device busy on another opush process (its lease held there):
    // retry later, 111 from 14.0 (in the command's own answer), 503 +
    // Retry-After before; not counted as a storage error.
    #[test]
    fn device_busy_is_retry_later() {
        let err = ServerError::Command(CommandError::DeviceBusy);
        let res = respond(&err, ctx(Command::Sync, ProtocolVersion::V14_1), SETTINGS);
        assert_eq!(status_of(&res), "111");
        let res = respond(
            &err,
            ctx(Command::SendMail, ProtocolVersion::V16_1),
            SETTINGS,
        );
        let doc = decode(&res.body).unwrap();
        assert_eq!(doc.child_text(tags::composemail::STATUS), Some("111"));
        let res = respond(&err, ctx(Command::Sync, ProtocolVersion::V12_1), SETTINGS);
        assert_eq!(res.http_status, 503);
        assert_eq!(header(&res, "Retry-After"), Some("30"));
    }

    // [MS-ASCMD] 2.2.2: a command of a later protocol version (Find before
    // 16.1) is 138 VersionNotSupported from 14.0, HTTP 400 before.
    #[test]
    fn command_of_a_later_version_gets_138_or_400() {
        let err = ServerError::Command(CommandError::VersionNotSupported {
            command: Command::Find,
            version: ProtocolVersion::V14_1,
        });
        let res = respond(&err, ctx(Command::Find, ProtocolVersion::V14_1), SETTINGS);
        assert_eq!(res.http_status, 200);
        let doc = decode(&res.body).unwrap();
        assert_eq!(doc.tag, tags::find::FIND);
        assert_eq!(doc.child_text(tags::find::STATUS), Some("138"));
        let res = respond(&err, ctx(Command::Find, ProtocolVersion::V12_1), SETTINGS);
        assert_eq!(res.http_status, 400);
        assert!(res.body.is_empty());
    }

    #[test]
    fn throttled_device_gets_503_with_throttle_header() {
        let res = respond(
            &ServerError::Throttled(Duration::from_millis(2500)),
            ErrorContext::default(),
            SETTINGS,
        );
        assert_eq!(res.http_status, 503);
        assert_eq!(header(&res, "Retry-After"), Some("3"));
        assert_eq!(header(&res, "X-MS-ASThrottle"), Some("CommandFrequency"));
    }

    // [MS-ASCMD] 2.2.2 common status codes of SendMail/SmartReply/SmartForward.
    #[test]
    fn send_failures_have_their_own_status() {
        let cases = [
            (SendFailure::PreviouslySent("c".into()), "118", 200),
            (SendFailure::TooLarge { size: 2, limit: 1 }, "122", 413),
            (SendFailure::InvalidMime("x".into()), "107", 400),
            (SendFailure::NoRecipient, "119", 400),
            (SendFailure::RecipientsRefused("x".into()), "116", 400),
            (SendFailure::Refused("x".into()), "120", 400),
            (SendFailure::RelayUnavailable("x".into()), "111", 503),
            (SendFailure::SourceNotFound("x".into()), "150", 400),
            (SendFailure::ReplyFailed("x".into()), "121", 400),
        ];
        for (failure, status, old_http) in cases {
            let err = ServerError::Command(CommandError::Send(failure));
            for command in [
                Command::SendMail,
                Command::SmartReply,
                Command::SmartForward,
            ] {
                let new = respond(&err, ctx(command, ProtocolVersion::V14_1), SETTINGS);
                assert_eq!(new.http_status, 200);
                let doc = decode(&new.body).unwrap();
                assert_eq!(
                    doc.child_text(tags::composemail::STATUS),
                    Some(status),
                    "{err}"
                );
                let old = respond(&err, ctx(command, ProtocolVersion::V12_1), SETTINGS);
                assert_eq!(old.http_status, old_http, "{err}");
                assert!(old.body.is_empty());
            }
        }
    }

    #[test]
    fn never_500_and_bodies_hold_no_internal_message() {
        let errors = [
            ServerError::NotFound("/x".into()),
            ServerError::BadRequest("secret detail".into()),
            ServerError::Query(QueryError::UnknownCommand("Foo".into())),
            ServerError::PayloadTooLarge { limit: 1 },
            ServerError::Overloaded(3),
            ServerError::AdminOnly("schema missing".into()),
            ServerError::Registry(RegistryError::Full(1)),
            ServerError::Command(CommandError::NotImplemented(Command::Sync)),
            ServerError::Command(CommandError::VersionNotSupported {
                command: Command::Find,
                version: ProtocolVersion::V14_1,
            }),
            ServerError::Command(CommandError::StorageUnavailable("secret detail".into())),
        ];
        for err in &errors {
            for version in [ProtocolVersion::V12_1, ProtocolVersion::V16_1] {
                let res = respond(err, ctx(Command::Sync, version), SETTINGS);
                assert!(res.http_status < 500 || res.http_status == 503, "{err}");
                assert!(!String::from_utf8_lossy(&res.body).contains("secret"));
            }
        }
    }
}
