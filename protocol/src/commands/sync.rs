//! Sync (MS-ASCMD 2.2.1.21): the request (collections with SyncKey, options
//! and client commands) and the response (server commands, responses to the
//! client's commands, MoreAvailable).
//!
//! Exists so the engine receives a typed Sync and returns a typed answer.
//! An empty request body (allowed from 12.1, "repeat the last request") is
//! the server's concern: this module only sees WBXML bodies.
//! Version rules applied: `Class` in a request collection only before 12.1;
//! `Wait`, `Partial`, global `WindowSize` from 12.1; `HeartbeatInterval`,
//! `ConversationMode`, `MaxItems`, `Options/Class` from 14.0; `InstanceId`
//! from 16.0; AirSyncBase preferences from 12.0.

use super::airsyncbase::BodyPreference;
use super::items::ApplicationData;
use super::tree::{self, Owned};
use super::{eas_document, since, ClientId, CollectionId, CommandError, ServerId, SyncKey};
use crate::status::SyncStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::{airsync as s, airsyncbase as asb};
use crate::wbxml::{Element, Writer};

use ProtocolVersion::{V12_0, V12_1, V14_0, V16_0};

/// Sync request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncRequest {
    /// `Collections/Collection`.
    pub collections: Vec<SyncCollectionRequest>,
    /// `Wait` in minutes (12.1+).
    pub wait: Option<u32>,
    /// `HeartbeatInterval` in seconds (14.0+).
    pub heartbeat_interval: Option<u32>,
    /// Global `WindowSize` (12.1+).
    pub window_size: Option<u32>,
    /// `Partial` (12.1+): merge with the cached request.
    pub partial: bool,
}

/// Sync `Options` (several, one per Class, from 14.0).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncOptions {
    /// `Class` (14.0+, e.g. `SMS`).
    pub class: Option<String>,
    /// `FilterType` (0 all … 8 incomplete tasks).
    pub filter_type: Option<u8>,
    /// AirSyncBase `BodyPreference` (12.0+).
    pub body_preferences: Vec<BodyPreference>,
    /// AirSyncBase `BodyPartPreference` (14.1+).
    pub body_part_preferences: Vec<BodyPreference>,
    /// `Conflict` (0 client wins, 1 server wins).
    pub conflict: Option<u8>,
    /// `MIMESupport` (0 never, 1 S/MIME only, 2 always).
    pub mime_support: Option<u8>,
    /// `MIMETruncation`.
    pub mime_truncation: Option<u8>,
    /// `Truncation` (2.5).
    pub truncation: Option<u8>,
    /// `MaxItems` (14.0+, recipient information cache).
    pub max_items: Option<u32>,
}

/// A client command in a Sync request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCommand {
    /// `Add`: a new item from the device.
    Add {
        /// `Class` (before 12.1).
        class: Option<String>,
        /// `ClientId`.
        client_id: ClientId,
        /// `ApplicationData`.
        application_data: ApplicationData,
    },
    /// `Change`: an item changed on the device.
    Change {
        /// `Class` (before 12.1).
        class: Option<String>,
        /// `ServerId`.
        server_id: ServerId,
        /// `ApplicationData`.
        application_data: ApplicationData,
    },
    /// `Delete`.
    Delete {
        /// `Class` (before 12.1).
        class: Option<String>,
        /// `ServerId`.
        server_id: ServerId,
        /// AirSyncBase `InstanceId` (16.0+, a recurring-event occurrence).
        instance_id: Option<String>,
    },
    /// `Fetch`: send this item in full.
    Fetch {
        /// `ServerId`.
        server_id: ServerId,
    },
}

/// `Collection` of a Sync request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncCollectionRequest {
    /// `Class` (2.5 and 12.0 only).
    pub class: Option<String>,
    /// `SyncKey`.
    pub sync_key: SyncKey,
    /// `CollectionId`.
    pub collection_id: CollectionId,
    /// `Supported` (the ghosted properties), kept as its children.
    pub supported: Option<Vec<Owned>>,
    /// `DeletesAsMoves`.
    pub deletes_as_moves: Option<bool>,
    /// `GetChanges`.
    pub get_changes: Option<bool>,
    /// `WindowSize`.
    pub window_size: Option<u32>,
    /// `ConversationMode` (14.0+).
    pub conversation_mode: Option<bool>,
    /// `Options`.
    pub options: Vec<SyncOptions>,
    /// `Commands` (None when the element is absent).
    pub commands: Option<Vec<ClientCommand>>,
}

/// Sync response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncResponse {
    /// Top-level `Status` (only for whole-request errors).
    pub status: Option<SyncStatus>,
    /// `Limit` (with status 14 or 15).
    pub limit: Option<u32>,
    /// `Collections/Collection`.
    pub collections: Vec<SyncCollectionResponse>,
}

/// A server command in a Sync response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerCommand {
    /// `Add`.
    Add {
        /// `ServerId`.
        server_id: ServerId,
        /// `ApplicationData`.
        application_data: ApplicationData,
    },
    /// `Change`.
    Change {
        /// `ServerId`.
        server_id: ServerId,
        /// `ApplicationData`.
        application_data: ApplicationData,
    },
    /// `Delete`.
    Delete {
        /// `ServerId`.
        server_id: ServerId,
        /// `InstanceId` (16.0+).
        instance_id: Option<String>,
    },
    /// `SoftDelete` (left the filter window).
    SoftDelete {
        /// `ServerId`.
        server_id: ServerId,
    },
}

/// A response to one client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandResponse {
    /// Answer to an `Add`.
    Add {
        /// `Class` (before 12.1).
        class: Option<String>,
        /// `ClientId` echoed.
        client_id: ClientId,
        /// `ServerId` assigned (absent on failure).
        server_id: Option<ServerId>,
        /// `Status`.
        status: SyncStatus,
        /// `ApplicationData` (16.0+: the `Attachments` a draft's `Add`
        /// added, each with its `ClientId` and new `FileReference`).
        application_data: Option<ApplicationData>,
    },
    /// Answer to a failed (or 16.x) `Change`.
    Change {
        /// `Class` (before 12.1).
        class: Option<String>,
        /// `ServerId`.
        server_id: ServerId,
        /// `Status`.
        status: SyncStatus,
        /// `InstanceId` (16.0+).
        instance_id: Option<String>,
        /// `ApplicationData` (16.0+: the attachments a draft's `Change`
        /// added, as for `Add`).
        application_data: Option<ApplicationData>,
    },
    /// Answer to a failed `Delete` (16.0+ for calendar occurrences).
    Delete {
        /// `ServerId`.
        server_id: ServerId,
        /// `Status`.
        status: SyncStatus,
        /// `InstanceId` (16.0+).
        instance_id: Option<String>,
    },
    /// Answer to a `Fetch`.
    Fetch {
        /// `ServerId`.
        server_id: ServerId,
        /// `Status`.
        status: SyncStatus,
        /// The item (on success).
        application_data: Option<ApplicationData>,
    },
}

/// `Collection` of a Sync response.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SyncCollectionResponse {
    /// `Class` (before 12.1).
    pub class: Option<String>,
    /// The new `SyncKey` (empty when the answer has none).
    pub sync_key: SyncKey,
    /// `CollectionId`.
    pub collection_id: CollectionId,
    /// `Status`.
    pub status: Option<SyncStatus>,
    /// `MoreAvailable`.
    pub more_available: bool,
    /// `Responses` (None when absent).
    pub responses: Option<Vec<CommandResponse>>,
    /// `Commands` (None when absent).
    pub commands: Option<Vec<ServerCommand>>,
}

fn status_of(el: &Element<'_>) -> Result<SyncStatus, CommandError> {
    Ok(SyncStatus::from_code(tree::req_num(el, s::STATUS)?))
}

fn opt_status(el: &Element<'_>) -> Result<Option<SyncStatus>, CommandError> {
    Ok(tree::opt_num::<u16>(el, s::STATUS)?.map(SyncStatus::from_code))
}

fn instance_id(el: &Element<'_>, v: ProtocolVersion) -> Result<Option<String>, CommandError> {
    since(el, asb::INSTANCE_ID, v, V16_0)?;
    tree::opt_text(el, asb::INSTANCE_ID)
}

fn class_before_12_1(el: &Element<'_>, v: ProtocolVersion) -> Result<Option<String>, CommandError> {
    if v >= V12_1 && el.child(s::CLASS).is_some() {
        return Err(CommandError::NotInVersion {
            tag: s::CLASS,
            version: v,
        });
    }
    tree::opt_text(el, s::CLASS)
}

fn push_class<'a>(el: &mut Element<'a>, class: &'a Option<String>, v: ProtocolVersion) {
    if v < V12_1 {
        tree::push_str(el, s::CLASS, class.as_deref());
    }
}

fn application_data(el: &Element<'_>, v: ProtocolVersion) -> Result<ApplicationData, CommandError> {
    ApplicationData::from_element(
        el.child(s::APPLICATION_DATA)
            .ok_or(CommandError::Missing(s::APPLICATION_DATA))?,
        v,
    )
}

impl SyncOptions {
    /// Reads an `Options` element (also used by GetItemEstimate).
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        since(el, s::CLASS, v, V14_0)?;
        since(el, s::MAX_ITEMS, v, V14_0)?;
        since(el, asb::BODY_PREFERENCE, v, V12_0)?;
        since(el, asb::BODY_PART_PREFERENCE, v, ProtocolVersion::V14_1)?;
        Ok(SyncOptions {
            class: tree::opt_text(el, s::CLASS)?,
            filter_type: tree::opt_num(el, s::FILTER_TYPE)?,
            body_preferences: el
                .children_with(asb::BODY_PREFERENCE)
                .map(BodyPreference::from_element)
                .collect::<Result<_, _>>()?,
            body_part_preferences: el
                .children_with(asb::BODY_PART_PREFERENCE)
                .map(BodyPreference::from_element)
                .collect::<Result<_, _>>()?,
            conflict: tree::opt_num(el, s::CONFLICT)?,
            mime_support: tree::opt_num(el, s::MIME_SUPPORT)?,
            mime_truncation: tree::opt_num(el, s::MIME_TRUNCATION)?,
            truncation: tree::opt_num(el, s::TRUNCATION)?,
            max_items: tree::opt_num(el, s::MAX_ITEMS)?,
        })
    }

    /// Builds the `Options` element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(s::OPTIONS);
        if v >= V14_0 {
            tree::push_opt(&mut el, s::CLASS, self.class.as_deref());
        }
        tree::push_opt(&mut el, s::FILTER_TYPE, self.filter_type);
        // The order devices use (Android, iOS): MIME settings before bodies.
        tree::push_opt(&mut el, s::MIME_TRUNCATION, self.mime_truncation);
        tree::push_opt(&mut el, s::MIME_SUPPORT, self.mime_support);
        if v >= V12_0 {
            for p in &self.body_preferences {
                el.push(p.to_element(asb::BODY_PREFERENCE));
            }
        }
        if v >= ProtocolVersion::V14_1 {
            for p in &self.body_part_preferences {
                el.push(p.to_element(asb::BODY_PART_PREFERENCE));
            }
        }
        tree::push_opt(&mut el, s::CONFLICT, self.conflict);
        tree::push_opt(&mut el, s::TRUNCATION, self.truncation);
        if v >= V14_0 {
            tree::push_opt(&mut el, s::MAX_ITEMS, self.max_items);
        }
        el
    }
}

impl ClientCommand {
    fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Option<Self>, CommandError> {
        Ok(Some(match el.tag {
            s::ADD => ClientCommand::Add {
                class: class_before_12_1(el, v)?,
                client_id: ClientId(tree::req_text(el, s::CLIENT_ID)?),
                application_data: application_data(el, v)?,
            },
            s::CHANGE => ClientCommand::Change {
                class: class_before_12_1(el, v)?,
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                application_data: application_data(el, v)?,
            },
            s::DELETE => ClientCommand::Delete {
                class: class_before_12_1(el, v)?,
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                instance_id: instance_id(el, v)?,
            },
            s::FETCH => ClientCommand::Fetch {
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
            },
            _ => return Ok(None),
        }))
    }

    fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        match self {
            ClientCommand::Add {
                class,
                client_id,
                application_data,
            } => {
                let mut el = Element::new(s::ADD);
                push_class(&mut el, class, v);
                el.push(tree::text_el(s::CLIENT_ID, client_id));
                el.push(application_data.to_element(v));
                el
            }
            ClientCommand::Change {
                class,
                server_id,
                application_data,
            } => {
                let mut el = Element::new(s::CHANGE);
                push_class(&mut el, class, v);
                el.push(tree::text_el(s::SERVER_ID, server_id));
                el.push(application_data.to_element(v));
                el
            }
            ClientCommand::Delete {
                class,
                server_id,
                instance_id,
            } => {
                let mut el = Element::new(s::DELETE);
                push_class(&mut el, class, v);
                el.push(tree::text_el(s::SERVER_ID, server_id));
                if v >= V16_0 {
                    tree::push_opt(&mut el, asb::INSTANCE_ID, instance_id.as_deref());
                }
                el
            }
            ClientCommand::Fetch { server_id } => {
                Element::new(s::FETCH).with(tree::text_el(s::SERVER_ID, server_id))
            }
        }
    }
}

impl SyncCollectionRequest {
    fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        since(el, s::CONVERSATION_MODE, v, V14_0)?;
        let commands = match el.child(s::COMMANDS) {
            None => None,
            Some(c) => Some(
                c.elements()
                    .map(|e| ClientCommand::from_element(e, v))
                    .filter_map(Result::transpose)
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(SyncCollectionRequest {
            class: class_before_12_1(el, v)?,
            sync_key: SyncKey(tree::req_text(el, s::SYNC_KEY)?),
            collection_id: CollectionId(tree::req_text(el, s::COLLECTION_ID)?),
            supported: el.child(s::SUPPORTED).map(tree::owned_children),
            deletes_as_moves: tree::opt_bool(el, s::DELETES_AS_MOVES)?,
            get_changes: tree::opt_bool(el, s::GET_CHANGES)?,
            window_size: tree::opt_num(el, s::WINDOW_SIZE)?,
            conversation_mode: tree::opt_bool(el, s::CONVERSATION_MODE)?,
            options: el
                .children_with(s::OPTIONS)
                .map(|o| SyncOptions::from_element(o, v))
                .collect::<Result<_, _>>()?,
            commands,
        })
    }

    fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(s::COLLECTION);
        push_class(&mut el, &self.class, v);
        el.push(tree::text_el(s::SYNC_KEY, &self.sync_key));
        el.push(tree::text_el(s::COLLECTION_ID, &self.collection_id));
        if let Some(sup) = &self.supported {
            let mut e = Element::new(s::SUPPORTED);
            for x in sup {
                e.push(x.clone());
            }
            el.push(e);
        }
        tree::push_bool_empty_true(&mut el, s::DELETES_AS_MOVES, self.deletes_as_moves);
        tree::push_bool_empty_true(&mut el, s::GET_CHANGES, self.get_changes);
        tree::push_opt(&mut el, s::WINDOW_SIZE, self.window_size);
        if v >= V14_0 {
            tree::push_bool(&mut el, s::CONVERSATION_MODE, self.conversation_mode);
        }
        for o in &self.options {
            el.push(o.to_element(v));
        }
        if let Some(cmds) = &self.commands {
            let mut c = Element::new(s::COMMANDS);
            for cmd in cmds {
                c.push(cmd.to_element(v));
            }
            el.push(c);
        }
        el
    }
}

impl SyncRequest {
    /// Reads a `Sync` request.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, s::SYNC)?;
        since(el, s::WAIT, v, V12_1)?;
        since(el, s::PARTIAL, v, V12_1)?;
        since(el, s::WINDOW_SIZE, v, V12_1)?;
        since(el, s::HEARTBEAT_INTERVAL, v, V14_0)?;
        let collections = match el.child(s::COLLECTIONS) {
            None => Vec::new(),
            Some(c) => c
                .children_with(s::COLLECTION)
                .map(|c| SyncCollectionRequest::from_element(c, v))
                .collect::<Result<_, _>>()?,
        };
        Ok(SyncRequest {
            collections,
            wait: tree::opt_num(el, s::WAIT)?,
            heartbeat_interval: tree::opt_num(el, s::HEARTBEAT_INTERVAL)?,
            window_size: tree::opt_num(el, s::WINDOW_SIZE)?,
            partial: tree::opt_bool(el, s::PARTIAL)?.unwrap_or(false),
        })
    }

    /// Builds the `Sync` request element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(s::SYNC);
        if !self.collections.is_empty() {
            let mut cs = Element::new(s::COLLECTIONS);
            for c in &self.collections {
                cs.push(c.to_element(v));
            }
            el.push(cs);
        }
        if v >= V12_1 {
            tree::push_opt(&mut el, s::WAIT, self.wait);
        }
        if v >= V14_0 {
            tree::push_opt(&mut el, s::HEARTBEAT_INTERVAL, self.heartbeat_interval);
        }
        if v >= V12_1 {
            tree::push_opt(&mut el, s::WINDOW_SIZE, self.window_size);
            tree::push_flag(&mut el, s::PARTIAL, self.partial);
        }
        el
    }
}

/// The `ApplicationData` of a `Responses` entry (16.0+), if any.
fn application_data_of(
    el: &Element<'_>,
    v: ProtocolVersion,
) -> Result<Option<ApplicationData>, CommandError> {
    el.child(s::APPLICATION_DATA)
        .map(|a| ApplicationData::from_element(a, v))
        .transpose()
}

impl CommandResponse {
    fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Option<Self>, CommandError> {
        Ok(Some(match el.tag {
            s::ADD => CommandResponse::Add {
                class: tree::opt_text(el, s::CLASS)?,
                client_id: ClientId(tree::req_text(el, s::CLIENT_ID)?),
                server_id: tree::opt_text(el, s::SERVER_ID)?.map(ServerId),
                status: status_of(el)?,
                application_data: application_data_of(el, v)?,
            },
            s::CHANGE => CommandResponse::Change {
                class: tree::opt_text(el, s::CLASS)?,
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                status: status_of(el)?,
                instance_id: instance_id(el, v)?,
                application_data: application_data_of(el, v)?,
            },
            s::DELETE => CommandResponse::Delete {
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                status: status_of(el)?,
                instance_id: instance_id(el, v)?,
            },
            s::FETCH => CommandResponse::Fetch {
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                status: status_of(el)?,
                application_data: el
                    .child(s::APPLICATION_DATA)
                    .map(|a| ApplicationData::from_element(a, v))
                    .transpose()?,
            },
            _ => return Ok(None),
        }))
    }

    fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        match self {
            CommandResponse::Add {
                class,
                client_id,
                server_id,
                status,
                application_data,
            } => {
                let mut el = Element::new(s::ADD);
                push_class(&mut el, class, v);
                el.push(tree::text_el(s::CLIENT_ID, client_id));
                tree::push_opt(&mut el, s::SERVER_ID, server_id.as_ref());
                el.push(tree::text_el(s::STATUS, status.code()));
                if let (true, Some(data)) = (v >= V16_0, application_data) {
                    el.push(data.to_element(v));
                }
                el
            }
            CommandResponse::Change {
                class,
                server_id,
                status,
                instance_id,
                application_data,
            } => {
                let mut el = Element::new(s::CHANGE);
                push_class(&mut el, class, v);
                el.push(tree::text_el(s::SERVER_ID, server_id));
                el.push(tree::text_el(s::STATUS, status.code()));
                if v >= V16_0 {
                    tree::push_opt(&mut el, asb::INSTANCE_ID, instance_id.as_deref());
                    if let Some(data) = application_data {
                        el.push(data.to_element(v));
                    }
                }
                el
            }
            CommandResponse::Delete {
                server_id,
                status,
                instance_id,
            } => {
                let mut el = Element::new(s::DELETE);
                el.push(tree::text_el(s::SERVER_ID, server_id));
                el.push(tree::text_el(s::STATUS, status.code()));
                if v >= V16_0 {
                    tree::push_opt(&mut el, asb::INSTANCE_ID, instance_id.as_deref());
                }
                el
            }
            CommandResponse::Fetch {
                server_id,
                status,
                application_data,
            } => {
                let mut el = Element::new(s::FETCH);
                el.push(tree::text_el(s::SERVER_ID, server_id));
                el.push(tree::text_el(s::STATUS, status.code()));
                if let Some(a) = application_data {
                    el.push(a.to_element(v));
                }
                el
            }
        }
    }
}

impl ServerCommand {
    fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Option<Self>, CommandError> {
        Ok(Some(match el.tag {
            s::ADD => ServerCommand::Add {
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                application_data: application_data(el, v)?,
            },
            s::CHANGE => ServerCommand::Change {
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                application_data: application_data(el, v)?,
            },
            s::DELETE => ServerCommand::Delete {
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
                instance_id: instance_id(el, v)?,
            },
            s::SOFT_DELETE => ServerCommand::SoftDelete {
                server_id: ServerId(tree::req_text(el, s::SERVER_ID)?),
            },
            _ => return Ok(None),
        }))
    }

    fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        match self {
            ServerCommand::Add {
                server_id,
                application_data,
            } => Element::new(s::ADD)
                .with(tree::text_el(s::SERVER_ID, server_id))
                .with(application_data.to_element(v)),
            ServerCommand::Change {
                server_id,
                application_data,
            } => Element::new(s::CHANGE)
                .with(tree::text_el(s::SERVER_ID, server_id))
                .with(application_data.to_element(v)),
            ServerCommand::Delete {
                server_id,
                instance_id,
            } => {
                let mut el = Element::new(s::DELETE);
                el.push(tree::text_el(s::SERVER_ID, server_id));
                if v >= V16_0 {
                    tree::push_opt(&mut el, asb::INSTANCE_ID, instance_id.as_deref());
                }
                el
            }
            ServerCommand::SoftDelete { server_id } => {
                Element::new(s::SOFT_DELETE).with(tree::text_el(s::SERVER_ID, server_id))
            }
        }
    }
}

impl ServerCommand {
    /// Writes what [`ServerCommand::to_element`] builds: an Add or Change
    /// of an email without a tree, anything else from its tree.
    fn write(&self, w: &mut Writer<'_>, v: ProtocolVersion) {
        let (tag, server_id, application_data) = match self {
            ServerCommand::Add {
                server_id,
                application_data,
            } => (s::ADD, server_id, application_data),
            ServerCommand::Change {
                server_id,
                application_data,
            } => (s::CHANGE, server_id, application_data),
            other => return w.element(&other.to_element(v)),
        };
        w.start(tag);
        tree::write_str(w, s::SERVER_ID, Some(server_id.as_str()));
        application_data.write_as(w, s::APPLICATION_DATA, v);
        w.end();
    }

    fn encoded_len_hint(&self) -> usize {
        match self {
            ServerCommand::Add {
                application_data: ApplicationData::Email(e),
                ..
            }
            | ServerCommand::Change {
                application_data: ApplicationData::Email(e),
                ..
            } => e.encoded_len_hint() + 32,
            _ => 64,
        }
    }
}

impl SyncCollectionResponse {
    /// Writes what [`SyncCollectionResponse::to_element`] builds, its
    /// commands without a tree.
    fn write(&self, w: &mut Writer<'_>, v: ProtocolVersion) {
        w.start(s::COLLECTION);
        if v < V12_1 {
            tree::write_str(w, s::CLASS, self.class.as_deref());
        }
        if !self.sync_key.0.is_empty() {
            tree::write_str(w, s::SYNC_KEY, Some(self.sync_key.as_str()));
        }
        tree::write_str(w, s::COLLECTION_ID, Some(self.collection_id.as_str()));
        tree::write_opt(w, s::STATUS, self.status.map(SyncStatus::code));
        if self.more_available {
            w.empty(s::MORE_AVAILABLE);
        }
        if let Some(rs) = &self.responses {
            w.start(s::RESPONSES);
            for x in rs {
                w.element(&x.to_element(v));
            }
            w.end();
        }
        if let Some(cs) = &self.commands {
            w.start(s::COMMANDS);
            for x in cs {
                x.write(w, v);
            }
            w.end();
        }
        w.end();
    }

    fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        let responses = match el.child(s::RESPONSES) {
            None => None,
            Some(r) => Some(
                r.elements()
                    .map(|e| CommandResponse::from_element(e, v))
                    .filter_map(Result::transpose)
                    .collect::<Result<_, _>>()?,
            ),
        };
        let commands = match el.child(s::COMMANDS) {
            None => None,
            Some(r) => Some(
                r.elements()
                    .map(|e| ServerCommand::from_element(e, v))
                    .filter_map(Result::transpose)
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(SyncCollectionResponse {
            class: tree::opt_text(el, s::CLASS)?,
            sync_key: SyncKey(tree::opt_text(el, s::SYNC_KEY)?.unwrap_or_default()),
            collection_id: CollectionId(tree::req_text(el, s::COLLECTION_ID)?),
            status: opt_status(el)?,
            more_available: tree::has(el, s::MORE_AVAILABLE),
            responses,
            commands,
        })
    }

    fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(s::COLLECTION);
        push_class(&mut el, &self.class, v);
        // An empty key (an error answer without one) is left out.
        if !self.sync_key.0.is_empty() {
            el.push(tree::text_el(s::SYNC_KEY, &self.sync_key));
        }
        el.push(tree::text_el(s::COLLECTION_ID, &self.collection_id));
        tree::push_opt(&mut el, s::STATUS, self.status.map(SyncStatus::code));
        tree::push_flag(&mut el, s::MORE_AVAILABLE, self.more_available);
        if let Some(rs) = &self.responses {
            let mut r = Element::new(s::RESPONSES);
            for x in rs {
                r.push(x.to_element(v));
            }
            el.push(r);
        }
        if let Some(cs) = &self.commands {
            let mut c = Element::new(s::COMMANDS);
            for x in cs {
                c.push(x.to_element(v));
            }
            el.push(c);
        }
        el
    }
}

impl SyncResponse {
    /// Reads a `Sync` response.
    pub fn from_element(el: &Element<'_>, v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, s::SYNC)?;
        let collections = match el.child(s::COLLECTIONS) {
            None => Vec::new(),
            Some(c) => c
                .children_with(s::COLLECTION)
                .map(|c| SyncCollectionResponse::from_element(c, v))
                .collect::<Result<_, _>>()?,
        };
        Ok(SyncResponse {
            status: opt_status(el)?,
            limit: tree::opt_num(el, s::LIMIT)?,
            collections,
        })
    }

    /// The WBXML of [`SyncResponse::to_element`], written without building
    /// the tree of its commands (a window of hundreds of emails): the same
    /// bytes as `wbxml::encode_to_vec(&self.to_element(v))`, which tests
    /// check (protocol/tests/writer.rs).
    pub fn to_wbxml(&self, v: ProtocolVersion) -> Vec<u8> {
        let hint = self
            .collections
            .iter()
            .flat_map(|c| c.commands.iter().flatten())
            .map(ServerCommand::encoded_len_hint)
            .sum::<usize>()
            + 256;
        let mut out = Vec::with_capacity(hint);
        self.write(&mut Writer::new(&mut out), v);
        out
    }

    /// Writes the `Sync` response element ([`SyncResponse::to_wbxml`]).
    pub fn write(&self, w: &mut Writer<'_>, v: ProtocolVersion) {
        w.start(s::SYNC);
        tree::write_opt(w, s::STATUS, self.status.map(SyncStatus::code));
        tree::write_opt(w, s::LIMIT, self.limit);
        if !self.collections.is_empty() {
            w.start(s::COLLECTIONS);
            for c in &self.collections {
                c.write(w, v);
            }
            w.end();
        }
        w.end();
    }

    /// Builds the `Sync` response element.
    pub fn to_element(&self, v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(s::SYNC);
        tree::push_opt(&mut el, s::STATUS, self.status.map(SyncStatus::code));
        tree::push_opt(&mut el, s::LIMIT, self.limit);
        if !self.collections.is_empty() {
            let mut cs = Element::new(s::COLLECTIONS);
            for c in &self.collections {
                cs.push(c.to_element(v));
            }
            el.push(cs);
        }
        el
    }
}

eas_document!(SyncRequest, s::SYNC);
eas_document!(SyncResponse, s::SYNC);
