//! FolderDelete (MS-ASCMD 2.2.1.4): delete a folder by ServerId.
//!
//! Exists to type the request and response; it must not delete anything.

use super::tree;
use super::{eas_document, CommandError, ServerId, SyncKey};
use crate::status::FolderDeleteStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::folderhierarchy as fh;
use crate::wbxml::Element;

/// FolderDelete request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FolderDeleteRequest {
    /// The hierarchy `SyncKey`.
    pub sync_key: SyncKey,
    /// `ServerId` of the folder.
    pub server_id: ServerId,
}

/// FolderDelete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderDeleteResponse {
    /// `Status`.
    pub status: FolderDeleteStatus,
    /// New hierarchy `SyncKey` (on success).
    pub sync_key: Option<SyncKey>,
}

impl FolderDeleteRequest {
    /// Reads a `FolderDelete` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_DELETE)?;
        Ok(FolderDeleteRequest {
            sync_key: SyncKey(tree::req_text(el, fh::SYNC_KEY)?),
            server_id: ServerId(tree::req_text(el, fh::SERVER_ID)?),
        })
    }

    /// Builds the `FolderDelete` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        Element::new(fh::FOLDER_DELETE)
            .with(tree::text_el(fh::SYNC_KEY, &self.sync_key))
            .with(tree::text_el(fh::SERVER_ID, &self.server_id))
    }
}

impl FolderDeleteResponse {
    /// Reads a `FolderDelete` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_DELETE)?;
        Ok(FolderDeleteResponse {
            status: FolderDeleteStatus::from_code(tree::req_num(el, fh::STATUS)?),
            sync_key: tree::opt_text(el, fh::SYNC_KEY)?.map(SyncKey),
        })
    }

    /// Builds the `FolderDelete` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fh::FOLDER_DELETE);
        el.push(tree::text_el(fh::STATUS, self.status.code()));
        tree::push_opt(&mut el, fh::SYNC_KEY, self.sync_key.as_ref());
        el
    }
}

eas_document!(FolderDeleteRequest, fh::FOLDER_DELETE);
eas_document!(FolderDeleteResponse, fh::FOLDER_DELETE);
