//! The EAS command dispatch: one `match` on [`Command`] calling the
//! `handle_<command>` function of `commands/<command>.rs`, with the request
//! context every handler gets and the typed response or error it returns.
//!
//! A request reaches this module only after the HTTP layer has routed it,
//! parsed its request line and headers, authenticated the user, recorded the
//! device, passed the provisioning gate and checked that the body decodes.
//! Handlers must not build HTTP error answers themselves: they return a
//! [`CommandError`] and `crate::error` turns it into the EAS/HTTP answer.
//!
//! A `Cmd=` value that names no command never gets here: the request-line
//! parser reports it (`QueryError::UnknownCommand`) and the HTTP layer
//! answers 400 — that is the "unknown" arm of the dispatch.

pub mod attachment;
pub mod compose;
pub mod find;
pub mod folder_create;
pub mod folder_delete;
pub mod folder_sync;
pub mod folder_update;
pub mod get_attachment;
pub mod get_item_estimate;
pub mod item_operations;
pub mod move_items;
pub mod ping;
pub mod provision;
pub mod search;
pub mod send_mail;
pub mod settings;
pub mod smart_forward;
pub mod smart_reply;
pub mod sync;
pub mod sync_wait;

use bytes::Bytes;
use opush_protocol::headers::CONTENT_TYPE_WBXML;
use opush_protocol::query::{Command, RequestLine};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::Element;

use crate::device::DeviceRecord;
use crate::http::auth::AuthenticatedUser;
use crate::http::AppState;
use crate::session::EasServices;

/// Everything a handler may use for one request.
pub struct CommandContext<'a> {
    /// Shared server state: settings, device registry (and, as they land,
    /// the store, the engine and the backends).
    pub app: &'a AppState,
    /// The authenticated user.
    pub user: &'a AuthenticatedUser,
    /// The device, as recorded for this request.
    pub device: &'a DeviceRecord,
    /// The request's protocol version (header or base64 query).
    pub version: ProtocolVersion,
    /// The parsed request line (command, device, parameters).
    pub request: &'a RequestLine,
    /// The device accepts a multipart ItemOperations answer
    /// (`MS-ASAcceptMultiPart: T` or `AcceptMultiPart=T`).
    pub accept_multi_part: bool,
    /// The policy key the device sent, if any.
    pub policy_key: Option<u32>,
    /// The raw request body (already bounded by `[server] max_request_body`).
    pub body: &'a Bytes,
    /// The decoded WBXML body, for commands whose body is WBXML and was not empty.
    pub document: Option<&'a Element<'static>>,
    /// The request's `[server] max_in_flight` permit: a handler that parks
    /// (Ping) releases it for the time it waits.
    pub in_flight: &'a crate::http::limits::InFlightPermit,
    /// The request as the device log records it (id, arrival time, body
    /// digest); created by the HTTP layer so the full-capture mode files
    /// the bodies under the same id.
    pub meta: crate::session::RequestMeta,
}

impl CommandContext<'_> {
    /// The typed request of a command whose body is WBXML: `from_element`
    /// applied to the decoded body; an empty or undecodable body is
    /// `InvalidRequest` with the reason.
    pub fn request<T, E: std::fmt::Display>(
        &self,
        command: Command,
        from_element: impl FnOnce(&Element<'static>, ProtocolVersion) -> Result<T, E>,
    ) -> Result<T, CommandError> {
        let invalid = |reason: String| CommandError::InvalidRequest { command, reason };
        let doc = self
            .document
            .ok_or_else(|| invalid("empty body".to_owned()))?;
        from_element(doc, self.version).map_err(|e| invalid(e.to_string()))
    }

    /// Whom the request acts for (user, device, in-memory password).
    pub fn caller(&self) -> crate::session::Caller<'_> {
        crate::session::Caller {
            user: &self.user.user,
            device_id: &self.request.device_id,
            password: &self.user.password,
        }
    }
}

/// A handler's successful answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EasResponse {
    /// HTTP status (200 for every EAS answer, including error Status values).
    pub http_status: u16,
    /// `Content-Type`, if there is a body.
    pub content_type: Option<&'static str>,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// More body, streamed after `body` (an attachment read from IMAP as
    /// it goes out): `Content-Length` counts it.
    pub tail: Option<Tail>,
}

/// The stream of a [`Tail`]: chunks, or why it broke off.
pub type TailStream = std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, String>> + Send>>;

/// The streamed end of an answer's body: exactly `len` bytes, written by
/// the connection loop as they come. A stream that fails, or ends short or
/// long, makes the loop close the connection: the device sees the length
/// mismatch, never a truncated answer that looks whole.
#[derive(Clone)]
pub struct Tail {
    len: u64,
    source: std::sync::Arc<std::sync::Mutex<Option<TailStream>>>,
}

impl Tail {
    /// A tail of `len` bytes read from `stream`.
    pub fn new(len: u64, stream: TailStream) -> Tail {
        Tail {
            len,
            source: std::sync::Arc::new(std::sync::Mutex::new(Some(stream))),
        }
    }

    /// The bytes it announces.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when it announces no byte.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Its stream, once (`None` when taken already).
    pub fn take(&self) -> Option<TailStream> {
        self.source.lock().ok().and_then(|mut s| s.take())
    }
}

impl std::fmt::Debug for Tail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tail({} bytes)", self.len)
    }
}

impl PartialEq for Tail {
    fn eq(&self, other: &Tail) -> bool {
        std::sync::Arc::ptr_eq(&self.source, &other.source)
    }
}

impl Eq for Tail {}

impl EasResponse {
    /// The body's length, the streamed tail included.
    pub fn body_len(&self) -> u64 {
        self.body.len() as u64 + self.tail.as_ref().map_or(0, Tail::len)
    }

    /// A 200 answer with a WBXML body.
    pub fn wbxml(body: Vec<u8>) -> Self {
        EasResponse {
            http_status: 200,
            content_type: Some(CONTENT_TYPE_WBXML),
            headers: Vec::new(),
            body,
            tail: None,
        }
    }

    /// A 200 answer without a body (e.g. SendMail success before 14.0).
    pub fn empty() -> Self {
        EasResponse {
            http_status: 200,
            content_type: None,
            headers: Vec::new(),
            body: Vec::new(),
            tail: None,
        }
    }
}

/// Why a handler could not answer normally. `crate::error` maps each to the
/// EAS Status / HTTP code and logs the cause.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The command is routed but has no handler yet.
    #[error("command {0} is not implemented by this server")]
    NotImplemented(Command),
    /// The command does not exist in the request's protocol version (Find
    /// before 16.1).
    #[error("command {command} is not in protocol version {version}")]
    VersionNotSupported {
        /// The command.
        command: Command,
        /// The request's version.
        version: ProtocolVersion,
    },
    /// The request is well-formed WBXML but not a valid request for the command.
    #[error("invalid {command} request: {reason}")]
    InvalidRequest {
        /// The command.
        command: Command,
        /// What is wrong (logged, never sent).
        reason: String,
    },
    /// The backend refused the user's own credentials during the command
    /// (the password changed since the login was cached): HTTP 401.
    #[error("backend refused the credentials of {0}")]
    CredentialsRejected(String),
    /// A backend (IMAP, SMTP, DAV, LDAP) is unreachable; the device retries.
    /// Metrics label it `unknown`: prefer [`CommandError::BackendFailed`],
    /// which says which backend and how.
    #[error("backend unavailable: {0}")]
    BackendUnavailable(String),
    /// A backend (or the server's own machinery) failed during the command;
    /// the device retries. Counted in `opush_backend_errors_total` with its
    /// `backend` and `kind` labels.
    #[error("{backend} failed ({kind}): {reason}")]
    BackendFailed {
        /// Which backend: `imap`, `smtp`, `sieve`, `dav`, `ldap`, or `engine` / `os`
        /// for the server's own failures.
        backend: &'static str,
        /// What kind of failure (`unavailable`, `protocol`, …).
        kind: &'static str,
        /// What happened (logged, never sent).
        reason: String,
    },
    /// The store failed; nothing was written and the device retries.
    #[error("storage unavailable: {0}")]
    StorageUnavailable(String),
    /// The device should come back later (a device pinging in a tight loop,
    /// or all `[push] max_parked` slots taken): 503 + Retry-After.
    #[error("device asked to retry after {0:?}")]
    Throttled(std::time::Duration),
    /// SendMail/SmartReply/SmartForward did not send the message.
    #[error("message not sent: {0}")]
    Send(compose::SendFailure),
    /// Another opush process holds the device's lease (a request of the
    /// device with backend effects runs there): nothing was done, the
    /// device retries (503 + Retry-After, or Status 111 from 14.0).
    #[error("the device's lease is held by a request on another opush process")]
    DeviceBusy,
    /// The request did not carry out a backend effect because it could not
    /// prove it still held the device's lease (the store unreachable for
    /// most of `lease_ttl_s`, `crate::fence`): it recorded nothing, and the
    /// device retries (503 + Retry-After, or Status 111 from 14.0).
    #[error("{0}")]
    LeaseLost(crate::fence::Fenced),
}

impl CommandError {
    /// Whether IMAP said the mailbox does not exist (`NONEXISTENT`,
    /// `TRYCREATE`): a folder another client deleted or renamed.
    pub fn is_mailbox_missing(&self) -> bool {
        matches!(
            self,
            CommandError::BackendFailed {
                backend: "imap",
                kind: "not_found",
                ..
            }
        )
    }
}

/// A command handler's answer, type-erased.
type HandlerFuture<'a> = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<EasResponse, CommandError>> + Send + 'a>,
>;

/// A command handler: `handle_<command>` of `commands/<command>.rs`, its
/// future boxed.
pub type Handler = for<'a> fn(&'a CommandContext<'a>, &'a EasServices) -> HandlerFuture<'a>;

/// The handler of `command`; `None` for the commands this server does not
/// implement (answered 137 / HTTP 400). The one list of what is
/// implemented: [`dispatch`] routes by it and OPTIONS advertises what it
/// holds ([`protocol_commands_header`]), so the two cannot disagree.
///
/// Every command is listed so that adding a handler is a one-line change
/// and the compiler points at this match when `Command` grows. Each
/// handler future is boxed: the request path is one long chain of
/// futures, and naming every handler's type in it overflows the compiler's
/// query depth in the crates that embed the server.
pub fn handler(command: Command) -> Option<Handler> {
    let handler: Handler = match command {
        Command::Provision => |c, e| Box::pin(provision::handle_provision(c, e)),
        Command::FolderSync => |c, e| Box::pin(folder_sync::handle_folder_sync(c, e)),
        Command::FolderCreate => |c, e| Box::pin(folder_create::handle_folder_create(c, e)),
        Command::FolderDelete => |c, e| Box::pin(folder_delete::handle_folder_delete(c, e)),
        Command::FolderUpdate => |c, e| Box::pin(folder_update::handle_folder_update(c, e)),
        Command::Sync => |c, e| Box::pin(sync::handle_sync(c, e)),
        Command::GetItemEstimate => {
            |c, e| Box::pin(get_item_estimate::handle_get_item_estimate(c, e))
        }
        Command::ItemOperations => |c, e| Box::pin(item_operations::handle_item_operations(c, e)),
        Command::MoveItems => |c, e| Box::pin(move_items::handle_move_items(c, e)),
        Command::Settings => |c, e| Box::pin(settings::handle_settings(c, e)),
        Command::Search => |c, e| Box::pin(search::handle_search(c, e)),
        Command::Find => |c, e| Box::pin(find::handle_find(c, e)),
        Command::GetAttachment => |c, e| Box::pin(get_attachment::handle_get_attachment(c, e)),
        Command::Ping => |c, e| Box::pin(ping::handle_ping(c, e)),
        Command::SendMail => |c, e| Box::pin(send_mail::handle_send_mail(c, e)),
        Command::SmartReply => |c, e| Box::pin(smart_reply::handle_smart_reply(c, e)),
        Command::SmartForward => |c, e| Box::pin(smart_forward::handle_smart_forward(c, e)),
        Command::GetHierarchy
        | Command::CreateCollection
        | Command::DeleteCollection
        | Command::MoveCollection
        | Command::MeetingResponse
        | Command::ResolveRecipients
        | Command::ValidateCert => return None,
    };
    Some(handler)
}

/// The commands this server implements, in command-code order.
pub fn implemented() -> impl Iterator<Item = Command> {
    Command::ALL.into_iter().filter(|c| handler(*c).is_some())
}

/// The `MS-ASProtocolCommands` header of the OPTIONS answer ([MS-ASHTTP]
/// 2.2.4.1.2.1: the commands the server supports): [`implemented`],
/// comma separated.
pub fn protocol_commands_header() -> &'static str {
    static HEADER: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        implemented()
            .map(Command::name)
            .collect::<Vec<_>>()
            .join(",")
    });
    &HEADER
}

/// Routes a request to its command handler.
pub async fn dispatch(ctx: CommandContext<'_>) -> Result<EasResponse, CommandError> {
    let command = ctx.request.command;
    let Some(eas) = ctx.app.eas.as_deref() else {
        return Err(CommandError::NotImplemented(command));
    };
    let Some(handle) = handler(command) else {
        return Err(CommandError::NotImplemented(command));
    };
    // Any request of a device ends its parked Ping (MS-ASCMD: a device is
    // never stuck behind its own old Ping).
    eas.push.supersede(&ctx.user.user, &ctx.request.device_id);
    let handler = handle(&ctx, eas);
    // Every request runs as a recorded request: handlers that record a
    // decision (`session::Recorder`) log `RequestReceived` with it, and
    // `ResponseSent` follows once the answer is known.
    let meta = ctx.meta.clone();
    let res = meta
        .clone()
        .scope(crate::obs::timed(
            crate::obs::command_category(command),
            handler,
        ))
        .await;
    // A backend effect refused by the fence (`crate::fence`): whatever the
    // handler made of it, the device retries.
    let res = match meta.fenced() {
        Some(fenced) => Err(CommandError::LeaseLost(fenced)),
        None => res,
    };
    if meta.was_recorded() {
        if let Ok(device) = crate::session::device_key(&ctx.user.user, &ctx.request.device_id) {
            let (status, body) = match &res {
                Ok(r) => (r.http_status, r.body.as_slice()),
                // The HTTP layer maps the error (`crate::error`); the log
                // keeps 0: "failed after recording".
                Err(_) => (0, &[][..]),
            };
            Box::pin(crate::session::record_response(
                eas, device, &meta, status, body,
            ))
            .await;
        }
    }
    res
}

/// True when the command's request body is WBXML at this protocol version
/// (and so must decode): not GetAttachment (no body), not the MIME bodies of
/// SendMail/SmartReply/SmartForward before 14.0, not the 2.5 hierarchy
/// commands (no body).
pub fn body_is_wbxml(command: Command, version: ProtocolVersion) -> bool {
    match command {
        Command::GetAttachment
        | Command::GetHierarchy
        | Command::CreateCollection
        | Command::DeleteCollection
        | Command::MoveCollection => false,
        Command::SendMail | Command::SmartForward | Command::SmartReply => {
            version >= ProtocolVersion::V14_0
        }
        Command::Sync
        | Command::FolderSync
        | Command::FolderCreate
        | Command::FolderDelete
        | Command::FolderUpdate
        | Command::MoveItems
        | Command::GetItemEstimate
        | Command::MeetingResponse
        | Command::Search
        | Command::Settings
        | Command::Ping
        | Command::ItemOperations
        | Command::Provision
        | Command::ResolveRecipients
        | Command::ValidateCert
        | Command::Find => true,
    }
}

/// The (code page namespace, root element) of a command's WBXML response,
/// for the commands whose response has a top-level `Status` (MS-ASCMD
/// 2.2.1.x). `None`: the command answers errors with HTTP codes only.
pub fn response_root(command: Command) -> Option<(&'static str, &'static str)> {
    Some(match command {
        Command::Sync => ("AirSync", "Sync"),
        Command::FolderSync => ("FolderHierarchy", "FolderSync"),
        Command::FolderCreate => ("FolderHierarchy", "FolderCreate"),
        Command::FolderDelete => ("FolderHierarchy", "FolderDelete"),
        Command::FolderUpdate => ("FolderHierarchy", "FolderUpdate"),
        Command::GetItemEstimate => ("GetItemEstimate", "GetItemEstimate"),
        Command::Search => ("Search", "Search"),
        Command::Settings => ("Settings", "Settings"),
        Command::Ping => ("Ping", "Ping"),
        Command::ItemOperations => ("ItemOperations", "ItemOperations"),
        Command::Provision => ("Provision", "Provision"),
        Command::ResolveRecipients => ("ResolveRecipients", "ResolveRecipients"),
        Command::ValidateCert => ("ValidateCert", "ValidateCert"),
        Command::SendMail => ("ComposeMail", "SendMail"),
        Command::SmartForward => ("ComposeMail", "SmartForward"),
        Command::SmartReply => ("ComposeMail", "SmartReply"),
        Command::Find => ("Find", "Find"),
        Command::GetAttachment
        | Command::GetHierarchy
        | Command::CreateCollection
        | Command::DeleteCollection
        | Command::MoveCollection
        | Command::MoveItems
        | Command::MeetingResponse => return None,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use opush_protocol::wbxml::{code_page_by_namespace, tag_by_name};

    #[test]
    fn every_response_root_and_status_exist_in_the_code_pages() {
        let mut n_roots = 0;
        for command in Command::ALL {
            if let Some((ns, root)) = response_root(command) {
                let page = code_page_by_namespace(ns).unwrap();
                assert!(tag_by_name(page.id, root).is_some(), "{ns}:{root}");
                assert!(tag_by_name(page.id, "Status").is_some(), "{ns}:Status");
                n_roots += 1;
            }
        }
        assert_eq!(n_roots, 17);
    }

    // [MS-ASHTTP] 2.2.4.1.2.1: OPTIONS lists the commands the server
    // supports: each one advertised has a handler, and the ones without
    // (answered "not implemented") are not advertised.
    #[test]
    fn advertised_commands_are_the_dispatched_ones() {
        let advertised: Vec<&str> = protocol_commands_header().split(',').collect();
        for name in &advertised {
            let command = Command::ALL
                .into_iter()
                .find(|c| c.name() == *name)
                .unwrap_or_else(|| panic!("{name} is no command"));
            assert!(
                handler(command).is_some(),
                "{name} advertised, not dispatched"
            );
        }
        for command in Command::ALL {
            assert_eq!(
                advertised.contains(&command.name()),
                handler(command).is_some(),
                "{command}"
            );
        }
        assert!(advertised.contains(&"Find"));
        for absent in [
            "MeetingResponse",
            "ResolveRecipients",
            "ValidateCert",
            "GetHierarchy",
        ] {
            assert!(!advertised.contains(&absent), "{absent} advertised");
        }
    }

    #[test]
    fn mime_bodies_are_not_wbxml_before_14() {
        assert!(!body_is_wbxml(Command::SendMail, ProtocolVersion::V12_1));
        assert!(body_is_wbxml(Command::SendMail, ProtocolVersion::V14_0));
        assert!(body_is_wbxml(Command::Sync, ProtocolVersion::V2_5));
        assert!(!body_is_wbxml(
            Command::GetAttachment,
            ProtocolVersion::V16_1
        ));
    }
}

#[cfg(test)]
mod future_sizes {
    use super::*;
    use crate::session::EasServices;

    fn size_of_output<'a, F: std::future::Future>(
        _: impl Fn(&'a CommandContext<'a>, &'a EasServices) -> F,
    ) -> usize {
        std::mem::size_of::<F>()
    }

    /// A parked long-poll Sync keeps its handler's future (boxed by the
    /// dispatch) for the whole wait, like a parked Ping: the steps before
    /// parking are boxed so it holds no more than a Ping does.
    #[test]
    fn a_parked_sync_holds_no_more_than_a_parked_ping() {
        let sync = size_of_output(sync::handle_sync);
        let ping = size_of_output(ping::handle_ping);
        assert!(
            sync <= ping + 64,
            "Sync future {sync} B, Ping future {ping} B"
        );
    }
}
