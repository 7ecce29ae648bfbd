//! FolderUpdate (MS-ASCMD 2.2.1.6): rename and/or move a folder.
//!
//! Exists to type the request and response; it must not change anything.

use super::tree;
use super::{eas_document, CommandError, ServerId, SyncKey};
use crate::status::FolderUpdateStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::folderhierarchy as fh;
use crate::wbxml::Element;

/// FolderUpdate request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FolderUpdateRequest {
    /// The hierarchy `SyncKey`.
    pub sync_key: SyncKey,
    /// `ServerId` of the folder.
    pub server_id: ServerId,
    /// New `ParentId`.
    pub parent_id: ServerId,
    /// New `DisplayName`.
    pub display_name: String,
}

/// FolderUpdate response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderUpdateResponse {
    /// `Status`.
    pub status: FolderUpdateStatus,
    /// New hierarchy `SyncKey` (on success).
    pub sync_key: Option<SyncKey>,
}

impl FolderUpdateRequest {
    /// Reads a `FolderUpdate` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_UPDATE)?;
        Ok(FolderUpdateRequest {
            sync_key: SyncKey(tree::req_text(el, fh::SYNC_KEY)?),
            server_id: ServerId(tree::req_text(el, fh::SERVER_ID)?),
            parent_id: ServerId(tree::req_text(el, fh::PARENT_ID)?),
            display_name: tree::req_text(el, fh::DISPLAY_NAME)?,
        })
    }

    /// Builds the `FolderUpdate` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        Element::new(fh::FOLDER_UPDATE)
            .with(tree::text_el(fh::SYNC_KEY, &self.sync_key))
            .with(tree::text_el(fh::SERVER_ID, &self.server_id))
            .with(tree::text_el(fh::PARENT_ID, &self.parent_id))
            .with(tree::text_el(fh::DISPLAY_NAME, &self.display_name))
    }
}

impl FolderUpdateResponse {
    /// Reads a `FolderUpdate` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_UPDATE)?;
        Ok(FolderUpdateResponse {
            status: FolderUpdateStatus::from_code(tree::req_num(el, fh::STATUS)?),
            sync_key: tree::opt_text(el, fh::SYNC_KEY)?.map(SyncKey),
        })
    }

    /// Builds the `FolderUpdate` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fh::FOLDER_UPDATE);
        el.push(tree::text_el(fh::STATUS, self.status.code()));
        tree::push_opt(&mut el, fh::SYNC_KEY, self.sync_key.as_ref());
        el
    }
}

eas_document!(FolderUpdateRequest, fh::FOLDER_UPDATE);
eas_document!(FolderUpdateResponse, fh::FOLDER_UPDATE);
