//! ItemOperations (MS-ASCMD 2.2.1.10, 12.0+): Fetch (an item, an
//! attachment by FileReference, a Search result by LongId), EmptyFolderContents
//! and Move (14.0+, conversations).
//!
//! Exists to type the request and response. It must not fetch anything. A
//! fetched item's properties are an [`ApplicationData`]; attachment data
//! (`Data`, `Range`, `Total`, `Part`, `ContentType`) stays in its
//! `Properties` list. Credentials (`Password`) never print.

use super::airsyncbase::BodyPreference;
use super::items::ApplicationData;
use super::tree::{self, Owned};
use super::{eas_document, require_version, since, Command, CommandError};
use crate::headers::Password;
use crate::status::ItemOperationsStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{
    airsync as s, airsyncbase as asb, documentlibrary as dl, itemoperations as io, search,
};
use crate::wbxml::Element;

/// What a Fetch or its result designates.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchTarget {
    /// airsync:`CollectionId`.
    pub collection_id: Option<String>,
    /// airsync:`ServerId`.
    pub server_id: Option<String>,
    /// search:`LongId`.
    pub long_id: Option<String>,
    /// airsyncbase:`FileReference`.
    pub file_reference: Option<String>,
    /// documentlibrary:`LinkId`.
    pub link_id: Option<String>,
}

impl FetchTarget {
    fn read(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(FetchTarget {
            collection_id: tree::opt_text(el, s::COLLECTION_ID)?,
            server_id: tree::opt_text(el, s::SERVER_ID)?,
            long_id: tree::opt_text(el, search::LONG_ID)?,
            file_reference: tree::opt_text(el, asb::FILE_REFERENCE)?,
            link_id: tree::opt_text(el, dl::LINK_ID)?,
        })
    }

    fn write<'a>(&'a self, el: &mut Element<'a>) {
        tree::push_opt(el, s::COLLECTION_ID, self.collection_id.as_deref());
        tree::push_opt(el, s::SERVER_ID, self.server_id.as_deref());
        tree::push_opt(el, search::LONG_ID, self.long_id.as_deref());
        tree::push_opt(el, asb::FILE_REFERENCE, self.file_reference.as_deref());
        tree::push_opt(el, dl::LINK_ID, self.link_id.as_deref());
    }
}

/// Fetch `Options`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FetchOptions {
    /// `Schema`, kept as its element.
    pub schema: Option<Owned>,
    /// `Range` (`0-1023`).
    pub range: Option<String>,
    /// `UserName` (document libraries).
    pub user_name: Option<String>,
    /// `Password` (never printed).
    pub password: Option<Password>,
    /// airsyncbase `BodyPreference`.
    pub body_preferences: Vec<BodyPreference>,
    /// airsyncbase `BodyPartPreference` (14.1+).
    pub body_part_preferences: Vec<BodyPreference>,
    /// airsync `MIMESupport`.
    pub mime_support: Option<u8>,
}

/// One operation of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `Fetch`.
    Fetch {
        /// `Store` (`Mailbox` or `DocumentLibrary`).
        store: String,
        /// What to fetch.
        target: FetchTarget,
        /// `Options`.
        options: Option<Box<FetchOptions>>,
    },
    /// `EmptyFolderContents`.
    EmptyFolderContents {
        /// airsync:`CollectionId`.
        collection_id: String,
        /// `Options/DeleteSubFolders`.
        delete_sub_folders: bool,
    },
    /// `Move` (14.0+): a conversation.
    Move {
        /// `ConversationId` (opaque).
        conversation_id: Vec<u8>,
        /// `DstFldId`.
        dst_fld_id: String,
        /// `Options/MoveAlways`.
        move_always: bool,
    },
}

/// ItemOperations request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ItemOperationsRequest {
    /// The operations, in order.
    pub operations: Vec<Operation>,
}

/// One result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OperationResult {
    /// `Fetch`.
    Fetch {
        /// `Status`.
        status: ItemOperationsStatus,
        /// What was fetched.
        target: FetchTarget,
        /// airsync:`Class`.
        class: Option<String>,
        /// `Properties`.
        properties: Option<ApplicationData>,
    },
    /// `EmptyFolderContents`.
    EmptyFolderContents {
        /// `Status`.
        status: ItemOperationsStatus,
        /// airsync:`CollectionId`.
        collection_id: Option<String>,
    },
    /// `Move`.
    Move {
        /// `Status`.
        status: ItemOperationsStatus,
        /// `ConversationId`.
        conversation_id: Option<Vec<u8>>,
    },
}

/// ItemOperations response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemOperationsResponse {
    /// Global `Status`.
    pub status: ItemOperationsStatus,
    /// `Response` children.
    pub results: Vec<OperationResult>,
}

fn io_status(el: &Element<'_>) -> Result<ItemOperationsStatus, CommandError> {
    Ok(ItemOperationsStatus::from_code(tree::req_num(
        el,
        io::STATUS,
    )?))
}

impl FetchOptions {
    fn read(el: &Element<'_>) -> Result<Self, CommandError> {
        Ok(FetchOptions {
            schema: el.child(io::SCHEMA).map(tree::owned),
            range: tree::opt_text(el, io::RANGE)?,
            user_name: tree::opt_text(el, io::USER_NAME)?,
            password: tree::opt_text(el, io::PASSWORD)?.map(Password::new),
            body_preferences: el
                .children_with(asb::BODY_PREFERENCE)
                .map(BodyPreference::from_element)
                .collect::<Result<_, _>>()?,
            body_part_preferences: el
                .children_with(asb::BODY_PART_PREFERENCE)
                .map(BodyPreference::from_element)
                .collect::<Result<_, _>>()?,
            mime_support: tree::opt_num(el, s::MIME_SUPPORT)?,
        })
    }

    fn write(&self) -> Element<'_> {
        let mut el = Element::new(io::OPTIONS);
        if let Some(x) = &self.schema {
            el.push(x.clone());
        }
        tree::push_opt(&mut el, io::RANGE, self.range.as_deref());
        tree::push_opt(&mut el, io::USER_NAME, self.user_name.as_deref());
        tree::push_opt(
            &mut el,
            io::PASSWORD,
            self.password.as_ref().map(Password::expose),
        );
        for p in &self.body_preferences {
            el.push(p.to_element(asb::BODY_PREFERENCE));
        }
        for p in &self.body_part_preferences {
            el.push(p.to_element(asb::BODY_PART_PREFERENCE));
        }
        tree::push_opt(&mut el, s::MIME_SUPPORT, self.mime_support);
        el
    }
}

impl ItemOperationsRequest {
    /// Reads an `ItemOperations` request.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        require_version(Command::ItemOperations, v, ProtocolVersion::V12_0)?;
        tree::expect_tag(el, io::ITEM_OPERATIONS)?;
        let mut operations = Vec::new();
        for op in el.elements() {
            operations.push(match op.tag {
                io::FETCH => Operation::Fetch {
                    store: tree::req_text(op, io::STORE)?,
                    target: FetchTarget::read(op)?,
                    options: op
                        .child(io::OPTIONS)
                        .map(FetchOptions::read)
                        .transpose()?
                        .map(Box::new),
                },
                io::EMPTY_FOLDER_CONTENTS => Operation::EmptyFolderContents {
                    collection_id: tree::req_text(op, s::COLLECTION_ID)?,
                    delete_sub_folders: op
                        .child(io::OPTIONS)
                        .is_some_and(|o| tree::has(o, io::DELETE_SUB_FOLDERS)),
                },
                io::MOVE => {
                    since(el, io::MOVE, v, ProtocolVersion::V14_0)?;
                    Operation::Move {
                        conversation_id: tree::bytes(
                            op.child(io::CONVERSATION_ID)
                                .ok_or(CommandError::Missing(io::CONVERSATION_ID))?,
                        ),
                        dst_fld_id: tree::req_text(op, io::DST_FLD_ID)?,
                        move_always: op
                            .child(io::OPTIONS)
                            .is_some_and(|o| tree::has(o, io::MOVE_ALWAYS)),
                    }
                }
                _ => continue,
            });
        }
        Ok(ItemOperationsRequest { operations })
    }

    /// Builds the `ItemOperations` request element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(io::ITEM_OPERATIONS);
        for op in &self.operations {
            match op {
                Operation::Fetch {
                    store,
                    target,
                    options,
                } => {
                    let mut f = Element::new(io::FETCH);
                    f.push(tree::text_el(io::STORE, store));
                    target.write(&mut f);
                    if let Some(o) = options {
                        f.push(o.write());
                    }
                    el.push(f);
                }
                Operation::EmptyFolderContents {
                    collection_id,
                    delete_sub_folders,
                } => {
                    let mut e = Element::new(io::EMPTY_FOLDER_CONTENTS);
                    e.push(tree::text_el(s::COLLECTION_ID, collection_id));
                    if *delete_sub_folders {
                        e.push(
                            Element::new(io::OPTIONS).with(Element::new(io::DELETE_SUB_FOLDERS)),
                        );
                    }
                    el.push(e);
                }
                Operation::Move {
                    conversation_id,
                    dst_fld_id,
                    move_always,
                } if v >= ProtocolVersion::V14_0 => {
                    let mut m = Element::new(io::MOVE);
                    m.push(Element::with_opaque(
                        io::CONVERSATION_ID,
                        conversation_id.clone(),
                    ));
                    m.push(tree::text_el(io::DST_FLD_ID, dst_fld_id));
                    if *move_always {
                        m.push(Element::new(io::OPTIONS).with(Element::new(io::MOVE_ALWAYS)));
                    }
                    el.push(m);
                }
                Operation::Move { .. } => {}
            }
        }
        el
    }
}

impl ItemOperationsResponse {
    /// Reads an `ItemOperations` response.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, io::ITEM_OPERATIONS)?;
        let mut results = Vec::new();
        if let Some(r) = el.child(io::RESPONSE) {
            for op in r.elements() {
                results.push(match op.tag {
                    io::FETCH => OperationResult::Fetch {
                        status: io_status(op)?,
                        target: FetchTarget::read(op)?,
                        class: tree::opt_text(op, s::CLASS)?,
                        properties: op
                            .child(io::PROPERTIES)
                            .map(|p| ApplicationData::from_properties(p, v))
                            .transpose()?,
                    },
                    io::EMPTY_FOLDER_CONTENTS => OperationResult::EmptyFolderContents {
                        status: io_status(op)?,
                        collection_id: tree::opt_text(op, s::COLLECTION_ID)?,
                    },
                    io::MOVE => OperationResult::Move {
                        status: io_status(op)?,
                        conversation_id: op.child(io::CONVERSATION_ID).map(tree::bytes),
                    },
                    _ => continue,
                });
            }
        }
        Ok(ItemOperationsResponse {
            status: io_status(el)?,
            results,
        })
    }

    /// Builds the `ItemOperations` response element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(io::ITEM_OPERATIONS);
        el.push(tree::text_el(io::STATUS, self.status.code()));
        if !self.results.is_empty() {
            let mut r = Element::new(io::RESPONSE);
            for res in &self.results {
                r.push(match res {
                    OperationResult::Fetch {
                        status,
                        target,
                        class,
                        properties,
                    } => {
                        let mut f = Element::new(io::FETCH);
                        f.push(tree::text_el(io::STATUS, status.code()));
                        target.write(&mut f);
                        tree::push_opt(&mut f, s::CLASS, class.as_deref());
                        if let Some(p) = properties {
                            f.push(p.to_element_as(io::PROPERTIES, v));
                        }
                        f
                    }
                    OperationResult::EmptyFolderContents {
                        status,
                        collection_id,
                    } => {
                        let mut e = Element::new(io::EMPTY_FOLDER_CONTENTS);
                        e.push(tree::text_el(io::STATUS, status.code()));
                        tree::push_opt(&mut e, s::COLLECTION_ID, collection_id.as_deref());
                        e
                    }
                    OperationResult::Move {
                        status,
                        conversation_id,
                    } => {
                        let mut m = Element::new(io::MOVE);
                        m.push(tree::text_el(io::STATUS, status.code()));
                        tree::push_opaque(&mut m, io::CONVERSATION_ID, conversation_id.as_ref());
                        m
                    }
                });
            }
            el.push(r);
        }
        el
    }
}

eas_document!(ItemOperationsRequest, io::ITEM_OPERATIONS);
eas_document!(ItemOperationsResponse, io::ITEM_OPERATIONS);
