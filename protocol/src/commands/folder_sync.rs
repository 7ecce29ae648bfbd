//! FolderSync (MS-ASCMD 2.2.1.5): the folder hierarchy changes since a
//! SyncKey (Add, Update, Delete with a Count).
//!
//! Exists so the engine computes hierarchy changes on typed values. It must
//! not assign folder ids or keys: that is the engine's decision.

use super::tree;
use super::{eas_document, CommandError, ServerId, SyncKey};
use crate::status::FolderSyncStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::folderhierarchy as fh;
use crate::wbxml::Element;

/// FolderSync request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FolderSyncRequest {
    /// `SyncKey` (`0` for the initial hierarchy).
    pub sync_key: SyncKey,
}

/// A folder as FolderSync and FolderCreate describe it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Folder {
    /// `ServerId`.
    pub server_id: ServerId,
    /// `ParentId` (`0` for the root).
    pub parent_id: ServerId,
    /// `DisplayName`.
    pub display_name: String,
    /// `Type` (MS-ASCMD 2.2.3.186.3: 2 Inbox, 3 Drafts, 4 Deleted, 5 Sent,
    /// 6 Outbox, 8 Calendar, 9 Contacts, 12 user mail…).
    pub folder_type: u8,
}

/// One hierarchy change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FolderChange {
    /// `Add`.
    Add(Folder),
    /// `Update`.
    Update(Folder),
    /// `Delete`.
    Delete(ServerId),
}

/// FolderSync response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FolderSyncResponse {
    /// `Status`.
    pub status: FolderSyncStatus,
    /// The new `SyncKey` (absent on error).
    pub sync_key: Option<SyncKey>,
    /// `Changes` (absent on error).
    pub changes: Option<Vec<FolderChange>>,
}

impl Folder {
    /// Reads an `Add`/`Update` element.
    pub fn from_element(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(Folder {
            server_id: ServerId(tree::req_text(el, fh::SERVER_ID)?),
            parent_id: ServerId(tree::req_text(el, fh::PARENT_ID)?),
            display_name: tree::req_text(el, fh::DISPLAY_NAME)?,
            folder_type: tree::req_num(el, fh::TYPE)?,
        })
    }

    fn to_element(&self, tag: crate::wbxml::Tag) -> Element<'_> {
        Element::new(tag)
            .with(tree::text_el(fh::SERVER_ID, &self.server_id))
            .with(tree::text_el(fh::PARENT_ID, &self.parent_id))
            .with(tree::text_el(fh::DISPLAY_NAME, &self.display_name))
            .with(tree::text_el(fh::TYPE, self.folder_type))
    }
}

impl FolderSyncRequest {
    /// Reads a `FolderSync` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_SYNC)?;
        Ok(FolderSyncRequest {
            sync_key: SyncKey(tree::req_text(el, fh::SYNC_KEY)?),
        })
    }

    /// Builds the `FolderSync` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        Element::new(fh::FOLDER_SYNC).with(tree::text_el(fh::SYNC_KEY, &self.sync_key))
    }
}

impl FolderSyncResponse {
    /// Reads a `FolderSync` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, fh::FOLDER_SYNC)?;
        let changes = match el.child(fh::CHANGES) {
            None => None,
            Some(c) => {
                let mut list = Vec::new();
                for e in c.elements() {
                    match e.tag {
                        fh::ADD => list.push(FolderChange::Add(Folder::from_element(e)?)),
                        fh::UPDATE => list.push(FolderChange::Update(Folder::from_element(e)?)),
                        fh::DELETE => list.push(FolderChange::Delete(ServerId(tree::req_text(
                            e,
                            fh::SERVER_ID,
                        )?))),
                        _ => {}
                    }
                }
                Some(list)
            }
        };
        Ok(FolderSyncResponse {
            status: FolderSyncStatus::from_code(tree::req_num(el, fh::STATUS)?),
            sync_key: tree::opt_text(el, fh::SYNC_KEY)?.map(SyncKey),
            changes,
        })
    }

    /// Builds the `FolderSync` response element; `Count` is computed.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(fh::FOLDER_SYNC);
        el.push(tree::text_el(fh::STATUS, self.status.code()));
        tree::push_opt(&mut el, fh::SYNC_KEY, self.sync_key.as_ref());
        if let Some(changes) = &self.changes {
            let mut c = Element::new(fh::CHANGES);
            c.push(tree::text_el(fh::COUNT, changes.len()));
            for ch in changes {
                c.push(match ch {
                    FolderChange::Add(f) => f.to_element(fh::ADD),
                    FolderChange::Update(f) => f.to_element(fh::UPDATE),
                    FolderChange::Delete(id) => {
                        Element::new(fh::DELETE).with(tree::text_el(fh::SERVER_ID, id))
                    }
                });
            }
            el.push(c);
        }
        el
    }
}

eas_document!(FolderSyncRequest, fh::FOLDER_SYNC);
eas_document!(FolderSyncResponse, fh::FOLDER_SYNC);
