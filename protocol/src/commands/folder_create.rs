//! FolderCreate (MS-ASCMD 2.2.1.3): create a folder under a parent.
//!
//! Exists to type the request and response; it must not create anything.

use super::tree;
use super::{eas_document, CommandError, ServerId, SyncKey};
use crate::status::FolderCreateStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::folderhierarchy as fh;
use crate::wbxml::Element;

/// FolderCreate request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FolderCreateRequest {
    /// The hierarchy `SyncKey`.
    pub sync_key: SyncKey,
    /// `ParentId` (`0` for the root).
    pub parent_id: ServerId,
    /// `DisplayName`.
    pub display_name: String,
    /// `Type` (12 user mail, 13 user calendar, 14 user contacts, …).
    pub folder_type: u8,
}

/// FolderCreate response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderCreateResponse {
    /// `Status`.
    pub status: FolderCreateStatus,
    /// New hierarchy `SyncKey` (on success).
    pub sync_key: Option<SyncKey>,
    /// `ServerId` of the new folder (on success).
    pub server_id: Option<ServerId>,
}

impl FolderCreateRequest {
    /// Reads a `FolderCreate` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_CREATE)?;
        Ok(FolderCreateRequest {
            sync_key: SyncKey(tree::req_text(el, fh::SYNC_KEY)?),
            parent_id: ServerId(tree::req_text(el, fh::PARENT_ID)?),
            display_name: tree::req_text(el, fh::DISPLAY_NAME)?,
            folder_type: tree::req_num(el, fh::TYPE)?,
        })
    }

    /// Builds the `FolderCreate` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        Element::new(fh::FOLDER_CREATE)
            .with(tree::text_el(fh::SYNC_KEY, &self.sync_key))
            .with(tree::text_el(fh::PARENT_ID, &self.parent_id))
            .with(tree::text_el(fh::DISPLAY_NAME, &self.display_name))
            .with(tree::text_el(fh::TYPE, self.folder_type))
    }
}

impl FolderCreateResponse {
    /// Reads a `FolderCreate` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_CREATE)?;
        Ok(FolderCreateResponse {
            status: FolderCreateStatus::from_code(tree::req_num(el, fh::STATUS)?),
            sync_key: tree::opt_text(el, fh::SYNC_KEY)?.map(SyncKey),
            server_id: tree::opt_text(el, fh::SERVER_ID)?.map(ServerId),
        })
    }

    /// Builds the `FolderCreate` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fh::FOLDER_CREATE);
        el.push(tree::text_el(fh::STATUS, self.status.code()));
        tree::push_opt(&mut el, fh::SYNC_KEY, self.sync_key.as_ref());
        tree::push_opt(&mut el, fh::SERVER_ID, self.server_id.as_ref());
        el
    }
}

eas_document!(FolderCreateRequest, fh::FOLDER_CREATE);
eas_document!(FolderCreateResponse, fh::FOLDER_CREATE);
