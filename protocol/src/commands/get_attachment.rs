//! GetAttachment (MS-ASCMD 2.2.1.8): fetch an attachment by the
//! `AttachmentName` query parameter; no request body, and the response body
//! is the attachment itself. Removed in 14.0 (ItemOperations replaces it).
//!
//! Exists so the handler gets a typed request from the request line. It must
//! not read the attachment.

use super::{require_version, Command, CommandError};
use crate::query::RequestLine;
use crate::version::ProtocolVersion;

/// GetAttachment request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GetAttachmentRequest {
    /// `AttachmentName` (the FileReference of the attachment).
    pub attachment_name: String,
}

impl GetAttachmentRequest {
    /// Builds the request from the request line; fails from 14.0 on and
    /// when `AttachmentName` is missing.
    pub fn from_request_line(
        line: &RequestLine,
        version: ProtocolVersion,
    ) -> Result<Self, CommandError> {
        if version >= ProtocolVersion::V14_0 {
            return Err(CommandError::CommandNotInVersion {
                command: Command::GetAttachment,
                version,
            });
        }
        require_version(Command::GetAttachment, version, ProtocolVersion::V2_5)?;
        let attachment_name = line
            .params
            .attachment_name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or(CommandError::MissingQueryParameter("AttachmentName"))?;
        Ok(GetAttachmentRequest { attachment_name })
    }
}
