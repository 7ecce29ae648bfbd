//! What SendMail, SmartReply and SmartForward share ([MS-ASCMD] 2.2.1.17,
//! 2.2.1.19, 2.2.1.20): reading the request in both forms (MIME body with
//! query parameters before 14.0, ComposeMail WBXML from 14.0), then one
//! pipeline:
//!
//! 1. size check (`[smtp] max_message_size`, Status 122);
//! 2. open the device session (one writer per device) and ask the engine
//!    whether the ClientId was sent already (Status 118, nothing sent);
//! 3. SmartReply/SmartForward: fetch the original from IMAP (ItemId +
//!    FolderId, or LongId) and build the full message (`crate::reply`);
//! 4. `crate::outgoing::prepare` (From = the user's identity, Bcc out of the
//!    message, Date / Message-ID), then SMTP submission;
//! 5. keep the Sent copy in the store (`crate::sent_copy`), then record
//!    `MailSent` for the ClientId (both after the relay accepted: a failed
//!    submission leaves nothing, so the retry goes out);
//! 6. best effort, never failing the send: flag the original `\Answered` /
//!    `$Forwarded`, save the copy in Sent (created when missing; unless
//!    found there by its Message-ID, as the one owner of its save, its try
//!    claimed in the store: `SentCopies::save_now`) and drop its row, or,
//!    when that fails, leave the row to be saved later by
//!    `crate::sent_copy`; send the delivery receipt if configured.
//!
//! A kill of opush between the relay's acceptance and step 5's record is
//! the one place a retry sends the message again (nothing can tell
//! whether the relay got it), under the same Message-ID (derived from the
//! ClientId when the device gave none, `message_unique`); after the
//! record the retry gets Status 118 and the kept row brings the copy to
//! Sent once (docs/ARCHITECTURE.md, invariants).
//!
//! Each failure is a [`SendFailure`]; `crate::error` maps it to its Status
//! and logs it. This module never logs a password.

use std::path::PathBuf;
use std::time::Duration;

use opush_engine::{
    check_send, decide_sent, BackendItemId, ClientId, CollectionId, Decision, DecisionInput,
    MailAccepted, SendCheck, SendRequest, ServerId,
};
use opush_protocol::commands::compose::{ComposeRequest, Source};
use opush_protocol::commands::send_mail::SendMailRequest;
use opush_protocol::commands::smart_forward::SmartForwardRequest;
use opush_protocol::commands::smart_reply::SmartReplyRequest;
use opush_protocol::query::Command;
use opush_protocol::version::ProtocolVersion;

use super::sync::uid_of;
use super::{CommandContext, CommandError, EasResponse};
use crate::backends::imap::{utf7, Flag, ImapError, PooledSession, SpecialUse};
use crate::backends::smtp::{submit, SmtpError, SmtpLogin, SmtpSettings, SmtpTls, Submission};
use crate::config::{Config, IdentityConfig, TlsMode};
use crate::outgoing::{prepare, rfc5322_date, Outgoing, OutgoingError, Sender, Stamp};
use crate::reply::{self, ReplyError, SmartKind};
use crate::sent_copy::SaveNow;
use crate::session::{imap_error, now, session_error, Caller, EasServices, Recorder};

/// Why a message was not sent. Every variant has its own Status
/// (`crate::error`) and log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendFailure {
    /// Over `[smtp] max_message_size` (Status 122).
    #[error("message of {size} bytes is over the {limit}-byte limit")]
    TooLarge {
        /// Message size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Not a readable MIME message (Status 107).
    #[error("invalid MIME: {0}")]
    InvalidMime(String),
    /// No To, Cc or Bcc (Status 119).
    #[error("the message has no recipient")]
    NoRecipient,
    /// The relay refused recipients for good (Status 116); nothing was sent.
    #[error("recipients refused: {0}")]
    RecipientsRefused(String),
    /// The relay refused the sender or the message (Status 120).
    #[error("relay refused the message: {0}")]
    Refused(String),
    /// The relay cannot be reached or failed temporarily (Status 111: retry).
    #[error("relay unavailable: {0}")]
    RelayUnavailable(String),
    /// This ClientId was sent already (Status 118); not sent again.
    #[error("ClientId {0:?} was sent already")]
    PreviouslySent(String),
    /// The original of a SmartReply/SmartForward does not exist (Status 150).
    #[error("original message not found: {0}")]
    SourceNotFound(String),
    /// The reply or forward could not be built (Status 121).
    #[error("reply/forward not built: {0}")]
    ReplyFailed(String),
}

impl From<SendFailure> for CommandError {
    fn from(f: SendFailure) -> Self {
        CommandError::Send(f)
    }
}

/// What the send pipeline needs from the configuration.
#[derive(Debug, Clone)]
pub struct SendSettings {
    /// The relay.
    pub smtp: SmtpSettings,
    /// Authenticate to the relay with the device user's credentials.
    pub smtp_auth: bool,
    /// Largest message accepted (bytes).
    pub max_message_size: usize,
    /// Addresses and display names.
    pub identity: IdentityConfig,
    /// Right part of the Message-IDs opush creates.
    pub host: String,
    /// Sent folder name when the IMAP server marks none `\Sent`.
    pub sent_folder: String,
    /// Send delivery receipts.
    pub delivery_receipt: bool,
    /// Send read receipts.
    pub read_receipt: bool,
    /// Where the receipt templates are.
    pub templates: Option<PathBuf>,
}

impl SendSettings {
    /// The settings of a configuration.
    pub fn from_config(cfg: &Config) -> SendSettings {
        let host = host_of(&cfg.server.public_url);
        SendSettings {
            smtp: SmtpSettings {
                host: cfg.smtp.host.clone(),
                port: cfg.smtp.port,
                tls: match cfg.smtp.tls {
                    TlsMode::None => SmtpTls::None,
                    TlsMode::Starttls => SmtpTls::StartTls,
                    TlsMode::Tls => SmtpTls::Tls,
                },
                timeout: Duration::from_millis(cfg.smtp.timeout_ms),
                hello_name: host.clone(),
            },
            smtp_auth: cfg.smtp.auth,
            max_message_size: usize::try_from(cfg.smtp.max_message_size).unwrap_or(usize::MAX),
            identity: cfg.identity.clone(),
            host,
            sent_folder: cfg.imap.folder_sent.clone(),
            delivery_receipt: cfg.receipt.delivery,
            read_receipt: cfg.receipt.read,
            templates: cfg.receipt.templates.clone(),
        }
    }

    /// The identity `user` sends as.
    pub fn sender(&self, user: &str) -> Sender {
        let address = if user.contains('@') || self.identity.default_domain.is_empty() {
            user.to_owned()
        } else {
            format!("{user}@{}", self.identity.default_domain)
        };
        let display_name = self
            .identity
            .names
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(&address))
            .map(|(_, n)| n.clone())
            .unwrap_or_default();
        Sender {
            display_name,
            address,
        }
    }
}

impl SendSettings {
    /// Every address of `user` (Settings UserInformation, the drafts'
    /// From): the one [`SendSettings::sender`] gives, when it is one.
    pub fn addresses(&self, user: &str) -> Vec<String> {
        let address = self.sender(user).address;
        if address.contains('@') {
            vec![address]
        } else {
            Vec::new()
        }
    }
}

impl Default for SendSettings {
    fn default() -> Self {
        SendSettings::from_config(&Config::default())
    }
}

/// The host part of a URL (`https://mail.example.test:443/x` → `mail.example.test`).
fn host_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let host = if authority.starts_with('[') {
        authority
            .split_once(']')
            .map_or(authority, |(h, _)| h)
            .trim_start_matches('[')
    } else {
        authority.split(':').next().unwrap_or_default()
    };
    if host.is_empty() {
        "localhost".to_owned()
    } else {
        host.to_owned()
    }
}

/// What a successful send did (for tests and logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The Message-ID of the message sent.
    pub message_id: String,
    /// Envelope recipients.
    pub recipients: Vec<String>,
    /// The relay's answer.
    pub relay_reply: String,
    /// Whether a copy is in the Sent folder.
    pub saved_in_sent: bool,
    /// Whether the original was flagged (SmartReply/SmartForward).
    pub original_flagged: bool,
}

/// Handles SendMail, SmartReply and SmartForward requests.
pub async fn handle_compose(
    ctx: &CommandContext<'_>,
    eas: &EasServices,
    command: Command,
) -> Result<EasResponse, CommandError> {
    let req = read_request(ctx, command)?;
    compose(&req, command, &ctx.caller(), eas).await?;
    Ok(EasResponse::empty())
}

/// The request in either form.
fn read_request(
    ctx: &CommandContext<'_>,
    command: Command,
) -> Result<ComposeRequest, CommandError> {
    let invalid = |reason: String| CommandError::InvalidRequest { command, reason };
    if ctx.version >= ProtocolVersion::V14_0 {
        let doc = ctx
            .document
            .ok_or_else(|| invalid("empty body".to_owned()))?;
        let res = match command {
            Command::SmartReply => SmartReplyRequest::from_element(doc, ctx.version).map(|r| r.0),
            Command::SmartForward => {
                SmartForwardRequest::from_element(doc, ctx.version).map(|r| r.0)
            }
            _ => SendMailRequest::from_element(doc, ctx.version).map(|r| r.0),
        };
        res.map_err(|e| invalid(e.to_string()))
    } else {
        ComposeRequest::from_mime(ctx.request, ctx.body, command != Command::SendMail)
            .map_err(|e| invalid(e.to_string()))
    }
}

/// SendMail / SmartReply / SmartForward without HTTP. IMAP is reached as
/// the caller (`EasServices::imap_for`); with `[smtp] auth` the relay gets
/// the caller's credentials too.
pub async fn compose(
    req: &ComposeRequest,
    command: Command,
    caller: &Caller<'_>,
    eas: &EasServices,
) -> Result<Sent, CommandError> {
    let settings = &eas.send;
    let user = caller.user;
    let mut session = eas
        .sessions
        .open(caller.device_key()?)
        .await
        .map_err(session_error)?;
    // The device's lease, held until its `MailSent` is appended: a retry
    // of this request on another opush process (a load balancer retrying
    // it while the relay is still taking it) answers "retry later", then,
    // once this one is recorded, finds its ClientId sent (118).
    let lease = session.lease().await?;
    let client_id = req
        .client_id
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(bounded_client_id);
    // The size limit and the ClientId dedupe, recorded as a decision.
    let request = SendRequest {
        client_id: client_id.clone(),
        size: req.mime.len() as u64,
        max_size: settings.max_message_size as u64,
    };
    let mut rec = Recorder::new(&session, eas, command);
    let check = rec.decided(
        DecisionInput::SendCheck(request.clone()),
        Decision {
            response: check_send(rec.state(), &request),
            events: Vec::new(),
        },
    );
    let at = rec.at();
    session.commit_request(rec).await.map_err(session_error)?;
    let refused: Option<CommandError> = match check {
        SendCheck::Send => None,
        SendCheck::TooLarge => Some(
            SendFailure::TooLarge {
                size: req.mime.len(),
                limit: settings.max_message_size,
            }
            .into(),
        ),
        SendCheck::AlreadySent => Some(
            SendFailure::PreviouslySent(client_id.clone().map(|c| c.0).unwrap_or_default()).into(),
        ),
    };
    if let Some(e) = refused {
        lease.release().await;
        return Err(e);
    }

    let kind = match command {
        Command::SmartReply => Some(SmartKind::Reply),
        Command::SmartForward => Some(SmartKind::Forward),
        _ => None,
    };
    let mut imap: Option<PooledSession> = None;
    let mut original_at: Option<(String, u32)> = None;
    let mime: std::borrow::Cow<'_, [u8]> = match kind {
        None => std::borrow::Cow::Borrowed(&req.mime),
        Some(kind) => {
            let source = req
                .source
                .as_ref()
                .ok_or_else(|| CommandError::InvalidRequest {
                    command,
                    reason: "no Source".to_owned(),
                })?;
            let (raw, uid) = locate(session.state(), source)?;
            let conn = eas.imap_for(caller).await?;
            let conn = imap.insert(conn);
            check_validity(conn, &raw, source, session.state()).await?;
            let original = match conn
                .fetch_message(&raw, uid, settings.max_message_size as u64)
                .await
            {
                Ok(m) => m,
                Err(ImapError::NotFound(what)) => {
                    return Err(SendFailure::SourceNotFound(what).into())
                }
                Err(ImapError::TooLarge { size, limit }) => {
                    return Err(SendFailure::TooLarge {
                        size: usize::try_from(size).unwrap_or(usize::MAX),
                        limit: usize::try_from(limit).unwrap_or(usize::MAX),
                    }
                    .into())
                }
                Err(e) => return Err(imap_error(e)),
            };
            original_at = Some((raw, uid));
            let built = reply::build(kind, &req.mime, &original, req.replace_mime).map_err(
                |e| match e {
                    ReplyError::DeviceMime => SendFailure::InvalidMime(e.to_string()),
                    ReplyError::Original | ReplyError::Write(_) => {
                        SendFailure::ReplyFailed(e.to_string())
                    }
                },
            )?;
            std::borrow::Cow::Owned(built)
        }
    };

    let sender = settings.sender(user);
    let stamp = Stamp {
        date: rfc5322_date(i64::try_from(now().0 / 1000).unwrap_or(0)),
        unique: message_unique(user, caller.device_id, client_id.as_ref()),
        host: settings.host.clone(),
    };
    let out = prepare(&mime, &sender, &stamp, settings.max_message_size).map_err(|e| match e {
        OutgoingError::TooLarge(size, limit) => SendFailure::TooLarge { size, limit },
        OutgoingError::NoRecipient => SendFailure::NoRecipient,
        OutgoingError::Malformed(m) => SendFailure::InvalidMime(m.to_owned()),
    })?;
    drop(mime);
    crate::obs::summary::message_sent();

    let login = settings.smtp_auth.then(|| SmtpLogin {
        user,
        password: caller.password.expose(),
    });
    let accepted = submit(
        &settings.smtp,
        login.as_ref(),
        &Submission {
            envelope_from: &out.envelope_from,
            recipients: &out.recipients,
            message: &out.message,
        },
    )
    .await
    .map_err(|e| match e {
        // Not sent: the device's lease not proven (`crate::fence`).
        SmtpError::Fenced(f) => CommandError::LeaseLost(f),
        e => send_failure(e, out.message.len(), settings.max_message_size).into(),
    })?;
    tracing::info!(
        user,
        command = command.name(),
        message_id = %out.message_id,
        recipients = out.recipients.len(),
        relay = %accepted.reply,
        "message sent"
    );

    // The message is out: from here on nothing may fail the request. Its
    // Sent copy is kept in the store first, so that a kill before the copy
    // is in Sent leaves it to the next opush (`crate::sent_copy`).
    let mut kept = if req.save_in_sent_items {
        Some(
            eas.sent_copies
                .keep(
                    eas,
                    user,
                    caller.device_id,
                    &out.message_id,
                    out.sent_copy(),
                )
                .await,
        )
    } else {
        None
    };
    // The device's lease keeps other processes from carrying out this
    // device's changes, not from appending (a Sync that only brings new
    // mail): on a conflict the state is read again and `MailSent` appended
    // after theirs.
    for attempt in 1..=3 {
        let mut rec = Recorder::new(&session, eas, command);
        rec.decided(
            DecisionInput::Sent {
                client_id: client_id.clone(),
            },
            Decision {
                response: MailAccepted,
                events: decide_sent(client_id.as_ref(), at),
            },
        );
        match session.commit_request(rec).await {
            Ok(()) => break,
            Err(e) if attempt < 3 && e.is_retryable() => {
                tracing::warn!(user, error = %e, attempt, "sent ClientId not recorded yet, trying again");
                if let Err(e) = session.refresh().await {
                    tracing::warn!(user, error = %e, "device state not read again");
                }
            }
            Err(e) => {
                tracing::error!(user, error = %e, "sent ClientId not recorded: a retry would send again");
                break;
            }
        }
    }
    lease.release().await;
    drop(session);

    let mut sent = Sent {
        message_id: out.message_id.clone(),
        recipients: out.recipients.clone(),
        relay_reply: accepted.reply,
        saved_in_sent: false,
        original_flagged: false,
    };
    if (original_at.is_some() || req.save_in_sent_items) && imap.is_none() {
        match eas.imap_for(caller).await {
            Ok(c) => imap = Some(c),
            Err(e) => tracing::warn!(user, error = %e, "IMAP unavailable after send"),
        }
    }
    // The copy for Sent, saved later when it cannot be now.
    if let Some(conn) = imap.as_mut() {
        if let (Some((raw, uid)), Some(kind)) = (&original_at, kind) {
            let flag = match kind {
                SmartKind::Reply => Flag::Answered,
                SmartKind::Forward => Flag::Forwarded,
            };
            match conn.store_flags(raw, &[*uid], &[flag], true, None).await {
                Ok(_) => sent.original_flagged = true,
                Err(e) => tracing::warn!(user, error = %e, "original not flagged"),
            }
        }
        // Looked for by its Message-ID first, as this message's owner in
        // this process and with its try claimed in the store: an earlier
        // send of the same ClientId (cut by a kill after the relay took
        // it) may have left a copy in Sent, or a resumer trying to save
        // one (`crate::sent_copy`).
        if let Some(kept) = kept.as_mut() {
            match eas.sent_copies.save_now(eas, conn, kept).await {
                SaveNow::Saved | SaveNow::Settled => sent.saved_in_sent = true,
                SaveNow::LeftToResumer => {
                    tracing::info!(user, message_id = %out.message_id, "sent copy being saved by a resumer")
                }
                SaveNow::Failed(e) => {
                    tracing::warn!(user, error = %e, "sent copy not saved: retried in the background")
                }
            }
        }
    }
    if let Some(kept) = kept {
        drop(imap);
        if sent.saved_in_sent {
            eas.sent_copies.settled(eas, kept);
        } else {
            // Kept in the store already; saved in the background.
            eas.sent_copies.save_later(eas, user, caller.password, kept);
        }
    }
    if settings.delivery_receipt {
        if let Err(e) = delivery_receipt(settings, &sender, &out, &stamp).await {
            tracing::warn!(user, error = %e, "delivery receipt not sent");
        }
    }
    Ok(sent)
}

/// What a submission's failure means to the device.
fn send_failure(e: SmtpError, size: usize, limit: usize) -> SendFailure {
    match e {
        SmtpError::Unavailable(m) => SendFailure::RelayUnavailable(m),
        SmtpError::InvalidRecipients(_) | SmtpError::BadAddress(_) => {
            SendFailure::RecipientsRefused(e.to_string())
        }
        SmtpError::NoRecipient => SendFailure::NoRecipient,
        SmtpError::Refused { code: 552, .. } => SendFailure::TooLarge { size, limit },
        SmtpError::Refused { .. } | SmtpError::Auth(_) => SendFailure::Refused(e.to_string()),
        SmtpError::Fenced(f) => SendFailure::RelayUnavailable(f.to_string()),
    }
}

/// The IMAP folder and UID of the original: `ItemId` (a ServerId the device
/// has) or `LongId` (`"<CollectionId>:<UIDVALIDITY>/<UID>"` from Search).
fn locate(
    state: &opush_engine::DeviceState,
    source: &Source,
) -> Result<(String, u32), SendFailure> {
    let not_found = |what: &str| SendFailure::SourceNotFound(what.to_owned());
    if let Some(item) = source.item_id.as_deref() {
        let sid = ServerId::parse(item).ok_or_else(|| not_found(item))?;
        if let Some(folder) = source.folder_id.as_deref() {
            if CollectionId::parse(folder) != Some(sid.collection) {
                return Err(not_found(item));
            }
        }
        let raw = state
            .hierarchy
            .ids
            .get(&sid.collection)
            .ok_or_else(|| not_found(item))?;
        let id = state
            .collections
            .get(&sid.collection)
            .and_then(|c| c.by_n.get(&sid.n))
            .ok_or_else(|| not_found(item))?;
        let (_, uid) = uid_of(id).ok_or_else(|| not_found(item))?;
        return Ok((raw.0.clone(), uid));
    }
    if let Some(long) = source.long_id.as_deref() {
        let (collection, id) = long.split_once(':').ok_or_else(|| not_found(long))?;
        let collection = CollectionId::parse(collection).ok_or_else(|| not_found(long))?;
        let raw = state
            .hierarchy
            .ids
            .get(&collection)
            .ok_or_else(|| not_found(long))?;
        let (_, uid) = uid_of(&BackendItemId(id.to_owned())).ok_or_else(|| not_found(long))?;
        return Ok((raw.0.clone(), uid));
    }
    Err(not_found("no ItemId or LongId"))
}

/// A LongId names a UIDVALIDITY: a folder that was recreated since holds
/// other messages under the same UIDs.
async fn check_validity(
    conn: &mut PooledSession,
    raw: &str,
    source: &Source,
    state: &opush_engine::DeviceState,
) -> Result<(), CommandError> {
    let id = match (&source.item_id, &source.long_id) {
        (Some(item), _) => ServerId::parse(item).and_then(|sid| {
            state
                .collections
                .get(&sid.collection)
                .and_then(|c| c.by_n.get(&sid.n))
                .cloned()
        }),
        (None, Some(long)) => long
            .split_once(':')
            .map(|(_, id)| BackendItemId(id.to_owned())),
        (None, None) => None,
    };
    let Some((validity, _)) = id.as_ref().and_then(uid_of) else {
        return Ok(());
    };
    let status = match conn.status(raw).await {
        Ok(s) => s,
        Err(ImapError::NotFound(what)) => return Err(SendFailure::SourceNotFound(what).into()),
        Err(e) => return Err(imap_error(e)),
    };
    if status.uidvalidity != validity {
        return Err(SendFailure::SourceNotFound(format!(
            "{raw}: UIDVALIDITY is {} now, not {validity}",
            status.uidvalidity
        ))
        .into());
    }
    Ok(())
}

/// The Sent folder's name on the server (SPECIAL-USE `\Sent`, else the
/// configured name), if it exists.
pub(crate) async fn sent_folder(
    conn: &mut PooledSession,
    settings: &SendSettings,
) -> Result<Option<String>, ImapError> {
    let folders = conn.list_folders(false).await?;
    Ok(folders
        .iter()
        .find(|f| f.special == Some(SpecialUse::Sent))
        .or_else(|| {
            folders
                .iter()
                .find(|f| f.name.eq_ignore_ascii_case(&settings.sent_folder))
        })
        .map(|f| f.raw_name.clone()))
}

/// APPENDs the sent copy (`\Seen`) to the Sent folder, creating it when the
/// user has none, unless a message of its Message-ID is there already
/// (`Ok(false)`; one LIST, one SEARCH, one APPEND).
pub(crate) async fn save_in_sent(
    conn: &mut PooledSession,
    settings: &SendSettings,
    copy: &[u8],
    message_id: &str,
) -> Result<bool, ImapError> {
    let raw = match sent_folder(conn, settings).await? {
        Some(raw) => {
            if conn.has_message_id(&raw, message_id).await? {
                return Ok(false);
            }
            raw
        }
        None => {
            let raw = utf7::encode(&settings.sent_folder);
            match conn.create_folder(&raw).await {
                Ok(()) | Err(ImapError::AlreadyExists(_)) => {}
                Err(e) => return Err(e),
            }
            tracing::info!(folder = %settings.sent_folder, "Sent folder created");
            raw
        }
    };
    conn.append(&raw, &[Flag::Seen], None, copy)
        .await
        .map(|_| true)
}

/// Sends the sender a delivery receipt rendered from
/// `delivery_receipt.mustache` (null envelope sender, like a DSN).
async fn delivery_receipt(
    settings: &SendSettings,
    sender: &Sender,
    out: &Outgoing,
    stamp: &Stamp,
) -> Result<(), String> {
    let template = read_template(settings, "delivery_receipt.mustache")
        .unwrap_or_else(|| crate::receipt::DEFAULT_DELIVERY_TEMPLATE.to_owned());
    let text = crate::receipt::render(
        &template,
        &crate::receipt::delivery_data(&settings.smtp.host, &out.recipients),
    )
    .map_err(|e| e.to_string())?;
    let postmaster = Sender {
        display_name: "Mail Delivery System".to_owned(),
        address: format!("postmaster@{}", settings.host),
    };
    let message = crate::receipt::receipt_message(
        &postmaster,
        sender,
        &format!("Delivered: {}", subject_of(&out.message)),
        &out.message_id,
        &text,
        stamp,
    );
    let rcpt = [sender.address.clone()];
    submit(
        &settings.smtp,
        None,
        &Submission {
            envelope_from: "",
            recipients: &rcpt,
            message: &message,
        },
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

/// The keyword recording that a read receipt went out (RFC 3503).
const MDN_SENT: &str = "$MDNSent";

/// After the device marked a message read (`[receipt] read`): when the
/// message asks for a receipt (`Disposition-Notification-To`) and none was
/// sent yet (`$MDNSent`), sends one rendered from `read_receipt.mustache`
/// (`address`: the reader) and sets `$MDNSent`, so marking it read again
/// sends nothing. Best effort: a failure is logged, the Sync goes on.
pub async fn read_receipt(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
    settings: &SendSettings,
    user: &str,
) {
    if let Err(e) = try_read_receipt(imap, raw, uid, settings, user).await {
        tracing::warn!(user, error = %e, "read receipt not sent");
    }
}

async fn try_read_receipt(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
    settings: &SendSettings,
    user: &str,
) -> Result<(), String> {
    let meta = imap
        .fetch_meta(raw, &[uid])
        .await
        .map_err(|e| e.to_string())?;
    let Some(meta) = meta.first() else {
        return Ok(());
    };
    if meta
        .flags
        .keywords
        .iter()
        .any(|k| k.eq_ignore_ascii_case(MDN_SENT))
    {
        return Ok(());
    }
    // The header section is at the start; 64 KiB covers any sane one.
    let head = imap
        .fetch_partial(raw, uid, "", 0, 64 * 1024)
        .await
        .map_err(|e| e.to_string())?;
    let Some(parsed) = mail_parser::MessageParser::new().parse_headers(&head) else {
        return Ok(());
    };
    // mail-parser keeps unknown fields as text: read the value as a `To`.
    let Some(dnt) = parsed.header_raw("Disposition-Notification-To") else {
        return Ok(());
    };
    let as_to = format!("To:{dnt}\r\n\r\n");
    let Some(to) = mail_parser::MessageParser::new()
        .parse_headers(as_to.as_bytes())
        .and_then(|m| {
            m.to()
                .and_then(|a| a.first())
                .and_then(|a| a.address.as_deref())
                .map(str::to_owned)
        })
    else {
        return Ok(());
    };
    let reader = settings.sender(user);
    let template = read_template(settings, "read_receipt.mustache")
        .unwrap_or_else(|| crate::receipt::DEFAULT_READ_TEMPLATE.to_owned());
    let text = crate::receipt::render(&template, &crate::receipt::read_data(&reader.address))
        .map_err(|e| e.to_string())?;
    let at = now();
    let stamp = Stamp {
        date: rfc5322_date(i64::try_from(at.0 / 1000).unwrap_or(0)),
        unique: unique_id(),
        host: settings.host.clone(),
    };
    let message = crate::receipt::receipt_message(
        &reader,
        &Sender {
            display_name: String::new(),
            address: to.clone(),
        },
        &format!("Read: {}", parsed.subject().unwrap_or_default()),
        parsed.message_id().unwrap_or_default(),
        &text,
        &stamp,
    );
    submit(
        &settings.smtp,
        None,
        &Submission {
            envelope_from: "",
            recipients: &[to],
            message: &message,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    imap.store_flags(
        raw,
        &[uid],
        &[Flag::Keyword(MDN_SENT.to_owned())],
        true,
        None,
    )
    .await
    .map_err(|e| e.to_string())?;
    Ok(())
}

/// The decoded Subject of a message (empty when it has none).
pub(crate) fn subject_of(message: &[u8]) -> String {
    mail_parser::MessageParser::new()
        .parse_headers(message)
        .and_then(|m| m.subject().map(str::to_owned))
        .unwrap_or_default()
}

fn read_template(settings: &SendSettings, name: &str) -> Option<String> {
    let dir = settings.templates.as_ref()?;
    std::fs::read_to_string(dir.join(name)).ok()
}

/// The left part of the Message-ID opush gives a message the device sent
/// without one. With a ClientId it is the same on every try of that send
/// (a digest of user, device and ClientId): a send retried after a kill
/// between the relay's acceptance and the ClientId's record goes out again
/// (nothing tells whether the relay got it), and both deliveries then
/// carry one Message-ID, by which receivers can tell them as one (and a
/// Sent copy kept by the first try is recognised in Sent by the resumer).
/// Without a ClientId, random.
fn message_unique(user: &str, device_id: &str, client_id: Option<&ClientId>) -> String {
    match client_id {
        Some(c) => {
            let mut h = blake3::Hasher::new();
            for part in [user, device_id, c.0.as_str()] {
                h.update(&(part.len() as u64).to_le_bytes());
                h.update(part.as_bytes());
            }
            let hex = h.finalize().to_hex();
            format!("c.{}", &hex[..32])
        }
        None => unique_id(),
    }
}

/// A unique left part for a Message-ID.
fn unique_id() -> String {
    let mut b = [0u8; 12];
    if getrandom::fill(&mut b).is_err() {
        // Still unique enough within this process: time + counter.
        static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return format!("{}.{n}", now().0);
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}.{hex}", now().0)
}

/// Longest ClientId kept as sent, in bytes (MS-ASCMD gives a ComposeMail
/// ClientId up to 40 characters; a Sync one up to 64).
const MAX_CLIENT_ID: usize = 64;

/// The ClientId the device state remembers for the dedupe: as sent, or for
/// a longer one its digest, so a device cannot make its state (the last
/// 256 ClientIds, read with every request) megabytes large; the same long
/// ClientId still gives the same digest, so its retry is still caught.
fn bounded_client_id(sent: &str) -> ClientId {
    if sent.len() <= MAX_CLIENT_ID {
        ClientId(sent.to_owned())
    } else {
        ClientId(format!("blake3:{}", blake3::hash(sent.as_bytes()).to_hex()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_client_id_is_remembered_by_its_digest() {
        assert_eq!(bounded_client_id("send-1"), ClientId("send-1".to_owned()));
        let long = "x".repeat(1 << 20);
        let a = bounded_client_id(&long);
        assert!(a.0.len() < 80, "{} bytes remembered", a.0.len());
        assert_eq!(bounded_client_id(&long), a, "a retry must be recognised");
        assert_ne!(bounded_client_id(&format!("{long}y")), a);
    }

    #[test]
    fn a_client_id_gives_its_send_one_message_id() {
        let id = |c: &str| ClientId(c.to_owned());
        let a = message_unique("u@x", "DEV", Some(&id("c1")));
        assert_eq!(a, message_unique("u@x", "DEV", Some(&id("c1"))));
        assert_ne!(a, message_unique("u@x", "DEV", Some(&id("c2"))));
        assert_ne!(a, message_unique("u@x", "DEV2", Some(&id("c1"))));
        assert_ne!(a, message_unique("v@x", "DEV", Some(&id("c1"))));
        // Parts are length-prefixed: no two splits of one string collide.
        assert_ne!(
            message_unique("u@x", "DEVc", Some(&id("1"))),
            message_unique("u@x", "DEV", Some(&id("c1")))
        );
        assert_ne!(
            message_unique("u@x", "DEV", None),
            message_unique("u@x", "DEV", None)
        );
    }

    #[test]
    fn host_of_urls() {
        assert_eq!(host_of("https://mail.example.test/x"), "mail.example.test");
        assert_eq!(host_of("http://127.0.0.1:8082"), "127.0.0.1");
        assert_eq!(host_of("http://[::1]:8082/"), "::1");
        assert_eq!(host_of(""), "localhost");
    }

    #[test]
    fn identity_from_config() {
        let mut s = SendSettings::default();
        s.identity
            .names
            .insert("Alice@Example.test".into(), "Alice Émile".into());
        s.identity.default_domain = "example.test".into();
        assert_eq!(
            s.sender("alice"),
            Sender {
                display_name: "Alice Émile".into(),
                address: "alice@example.test".into()
            }
        );
        assert_eq!(s.sender("bob@other.test").display_name, "");
    }
}
