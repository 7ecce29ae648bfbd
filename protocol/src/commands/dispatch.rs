//! One `match` from the request line's [`Command`] to the typed request:
//! [`Request::decode`] reads a body (WBXML, or MIME for the pre-14.0
//! SendMail/SmartReply/SmartForward, or nothing for GetAttachment).
//!
//! Exists so the server's router has a single entry point with an explicit
//! arm for commands this model does not carry (the 2.5-only hierarchy
//! commands). It must not look at headers or state.

use super::compose::ComposeRequest;
use super::find::FindRequest;
use super::folder_create::FolderCreateRequest;
use super::folder_delete::FolderDeleteRequest;
use super::folder_sync::FolderSyncRequest;
use super::folder_update::FolderUpdateRequest;
use super::get_attachment::GetAttachmentRequest;
use super::get_item_estimate::GetItemEstimateRequest;
use super::item_operations::ItemOperationsRequest;
use super::meeting_response::MeetingResponseRequest;
use super::move_items::MoveItemsRequest;
use super::ping::PingRequest;
use super::provision::ProvisionRequest;
use super::resolve_recipients::ResolveRecipientsRequest;
use super::search::SearchRequest;
use super::send_mail::SendMailRequest;
use super::settings::SettingsRequest;
use super::smart_forward::SmartForwardRequest;
use super::smart_reply::SmartReplyRequest;
use super::sync::SyncRequest;
use super::validate_cert::ValidateCertRequest;
use super::{Command, CommandError, EasDocument};
use crate::query::RequestLine;
use crate::version::ProtocolVersion;

/// A typed request of any command.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "one request per HTTP call, moved once"
)]
pub enum Request {
    /// Sync with a body; `None` for an empty body (12.1+: repeat the cached request).
    Sync(Option<SyncRequest>),
    /// SendMail.
    SendMail(SendMailRequest),
    /// SmartForward.
    SmartForward(SmartForwardRequest),
    /// SmartReply.
    SmartReply(SmartReplyRequest),
    /// GetAttachment (no body).
    GetAttachment(GetAttachmentRequest),
    /// FolderSync.
    FolderSync(FolderSyncRequest),
    /// FolderCreate.
    FolderCreate(FolderCreateRequest),
    /// FolderDelete.
    FolderDelete(FolderDeleteRequest),
    /// FolderUpdate.
    FolderUpdate(FolderUpdateRequest),
    /// MoveItems.
    MoveItems(MoveItemsRequest),
    /// GetItemEstimate.
    GetItemEstimate(GetItemEstimateRequest),
    /// MeetingResponse.
    MeetingResponse(MeetingResponseRequest),
    /// Search.
    Search(SearchRequest),
    /// Settings.
    Settings(SettingsRequest),
    /// Ping with a body; `None` for an empty body (reuse the last one).
    Ping(Option<PingRequest>),
    /// ItemOperations.
    ItemOperations(ItemOperationsRequest),
    /// Provision.
    Provision(ProvisionRequest),
    /// ResolveRecipients.
    ResolveRecipients(ResolveRecipientsRequest),
    /// ValidateCert.
    ValidateCert(ValidateCertRequest),
    /// Find.
    Find(FindRequest),
}

impl Request {
    /// Decodes the body of `line.command` for `version`. SendMail,
    /// SmartReply and SmartForward bodies are MIME before 14.0, WBXML after.
    pub fn decode(
        line: &RequestLine,
        version: ProtocolVersion,
        body: &[u8],
    ) -> Result<Request, CommandError> {
        Self::decode_with_content_type(line, version, None, body)
    }

    /// Like [`Request::decode`], but a `Content-Type: message/rfc822` body
    /// is read as the MIME form whatever the version (clients may still send
    /// MIME with 14.x).
    pub fn decode_with_content_type(
        line: &RequestLine,
        version: ProtocolVersion,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<Request, CommandError> {
        let is_rfc822 = content_type
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| {
                c.trim()
                    .eq_ignore_ascii_case(crate::headers::CONTENT_TYPE_RFC822)
            });
        let mime_form = version < ProtocolVersion::V14_0 || is_rfc822;
        Ok(match line.command {
            Command::Sync if body.is_empty() && version >= ProtocolVersion::V12_1 => {
                Request::Sync(None)
            }
            Command::Sync => Request::Sync(Some(SyncRequest::decode(body, version)?)),
            Command::SendMail if mime_form => Request::SendMail(SendMailRequest(
                ComposeRequest::from_mime(line, body, false)?,
            )),
            Command::SendMail => Request::SendMail(SendMailRequest::decode(body, version)?),
            Command::SmartForward if mime_form => Request::SmartForward(SmartForwardRequest(
                ComposeRequest::from_mime(line, body, true)?,
            )),
            Command::SmartForward => {
                Request::SmartForward(SmartForwardRequest::decode(body, version)?)
            }
            Command::SmartReply if mime_form => Request::SmartReply(SmartReplyRequest(
                ComposeRequest::from_mime(line, body, true)?,
            )),
            Command::SmartReply => Request::SmartReply(SmartReplyRequest::decode(body, version)?),
            Command::GetAttachment => {
                Request::GetAttachment(GetAttachmentRequest::from_request_line(line, version)?)
            }
            Command::GetHierarchy
            | Command::CreateCollection
            | Command::DeleteCollection
            | Command::MoveCollection => {
                return Err(CommandError::CommandNotInVersion {
                    command: line.command,
                    version,
                })
            }
            Command::FolderSync => Request::FolderSync(FolderSyncRequest::decode(body, version)?),
            Command::FolderCreate => {
                Request::FolderCreate(FolderCreateRequest::decode(body, version)?)
            }
            Command::FolderDelete => {
                Request::FolderDelete(FolderDeleteRequest::decode(body, version)?)
            }
            Command::FolderUpdate => {
                Request::FolderUpdate(FolderUpdateRequest::decode(body, version)?)
            }
            Command::MoveItems => Request::MoveItems(MoveItemsRequest::decode(body, version)?),
            Command::GetItemEstimate => {
                Request::GetItemEstimate(GetItemEstimateRequest::decode(body, version)?)
            }
            Command::MeetingResponse => {
                Request::MeetingResponse(MeetingResponseRequest::decode(body, version)?)
            }
            Command::Search => Request::Search(SearchRequest::decode(body, version)?),
            Command::Settings => Request::Settings(SettingsRequest::decode(body, version)?),
            Command::Ping if body.is_empty() => Request::Ping(None),
            Command::Ping => Request::Ping(Some(PingRequest::decode(body, version)?)),
            Command::ItemOperations => {
                Request::ItemOperations(ItemOperationsRequest::decode(body, version)?)
            }
            Command::Provision => Request::Provision(ProvisionRequest::decode(body, version)?),
            Command::ResolveRecipients => {
                Request::ResolveRecipients(ResolveRecipientsRequest::decode(body, version)?)
            }
            Command::ValidateCert => {
                Request::ValidateCert(ValidateCertRequest::decode(body, version)?)
            }
            Command::Find => Request::Find(FindRequest::decode(body, version)?),
        })
    }

    /// The command of this request.
    pub fn command(&self) -> Command {
        match self {
            Request::Sync(_) => Command::Sync,
            Request::SendMail(_) => Command::SendMail,
            Request::SmartForward(_) => Command::SmartForward,
            Request::SmartReply(_) => Command::SmartReply,
            Request::GetAttachment(_) => Command::GetAttachment,
            Request::FolderSync(_) => Command::FolderSync,
            Request::FolderCreate(_) => Command::FolderCreate,
            Request::FolderDelete(_) => Command::FolderDelete,
            Request::FolderUpdate(_) => Command::FolderUpdate,
            Request::MoveItems(_) => Command::MoveItems,
            Request::GetItemEstimate(_) => Command::GetItemEstimate,
            Request::MeetingResponse(_) => Command::MeetingResponse,
            Request::Search(_) => Command::Search,
            Request::Settings(_) => Command::Settings,
            Request::Ping(_) => Command::Ping,
            Request::ItemOperations(_) => Command::ItemOperations,
            Request::Provision(_) => Command::Provision,
            Request::ResolveRecipients(_) => Command::ResolveRecipients,
            Request::ValidateCert(_) => Command::ValidateCert,
            Request::Find(_) => Command::Find,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn line(query: &str) -> RequestLine {
        RequestLine::parse(query).unwrap()
    }

    #[test]
    fn empty_bodies_and_mime_forms() {
        let v = ProtocolVersion::V12_1;
        let sync = line("Cmd=Sync&User=u&DeviceId=d&DeviceType=t");
        assert_eq!(Request::decode(&sync, v, b"").unwrap(), Request::Sync(None));
        let ping = line("Cmd=Ping&User=u&DeviceId=d&DeviceType=t");
        assert_eq!(Request::decode(&ping, v, b"").unwrap(), Request::Ping(None));

        let reply = line(
            "Cmd=SmartReply&User=u&DeviceId=d&DeviceType=t&ItemId=5:1&CollectionId=5&SaveInSent=T",
        );
        let Request::SmartReply(SmartReplyRequest(req)) =
            Request::decode(&reply, v, b"Subject: x\r\n\r\nhi").unwrap()
        else {
            panic!("not a SmartReply");
        };
        assert!(req.save_in_sent_items);
        assert_eq!(req.source.unwrap().item_id.as_deref(), Some("5:1"));
        let no_source = line("Cmd=SmartForward&User=u&DeviceId=d&DeviceType=t");
        assert_eq!(
            Request::decode(&no_source, v, b"x"),
            Err(CommandError::MissingQueryParameter("ItemId"))
        );

        let att = line("Cmd=GetAttachment&User=u&DeviceId=d&DeviceType=t&AttachmentName=1%3A2");
        assert_eq!(
            Request::decode(&att, v, b"").unwrap().command(),
            Command::GetAttachment
        );
        assert!(matches!(
            Request::decode(&att, ProtocolVersion::V14_0, b""),
            Err(CommandError::CommandNotInVersion { .. })
        ));
    }

    #[test]
    fn rfc822_content_type_selects_the_mime_form() {
        let send = line("Cmd=SendMail&User=u&DeviceId=d&DeviceType=t&SaveInSent=T");
        let mime = b"Subject: x\r\n\r\nhi";
        let Request::SendMail(SendMailRequest(req)) = Request::decode_with_content_type(
            &send,
            ProtocolVersion::V14_1,
            Some("message/rfc822; charset=utf-8"),
            mime,
        )
        .unwrap() else {
            panic!("not a SendMail");
        };
        assert_eq!(req.mime, mime.to_vec());
        assert!(req.save_in_sent_items);
        // Without the content type, 14.1 expects WBXML.
        assert!(matches!(
            Request::decode(&send, ProtocolVersion::V14_1, mime),
            Err(CommandError::Wbxml(_))
        ));
    }

    #[test]
    fn bad_bodies_are_errors() {
        let v = ProtocolVersion::V14_1;
        let fs = line("Cmd=FolderSync&User=u&DeviceId=d&DeviceType=t");
        assert!(matches!(
            Request::decode(&fs, v, b""),
            Err(CommandError::Wbxml(_))
        ));
        let ping_body = [0x03, 0x01, 0x6a, 0x00, 0x00, 0x0d, 0x05]; // <Ping/> on page 13
        assert!(matches!(
            Request::decode(&fs, v, &ping_body),
            Err(CommandError::UnexpectedElement { .. })
        ));
    }
}
