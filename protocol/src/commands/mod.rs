//! Typed requests and responses for every MS-ASCMD command, one module per
//! command, built on the WBXML tree of `crate::wbxml`.
//!
//! Each module has `XxxRequest` / `XxxResponse` with
//! `from_element(&Element, ProtocolVersion)` and `to_element(ProtocolVersion)`
//! (both directions for both: the server decodes requests and encodes
//! responses, tests and the load tool do the reverse). [`EasDocument`] adds
//! `decode`/`encode` from and to WBXML bytes.
//!
//! Decoding policy: a required element that is missing, a value that does not
//! parse, or an element the request's protocol version does not have is a
//! [`CommandError`]; unknown extra elements are ignored, except inside item
//! payloads where they are kept (see [`items::ApplicationData`]). These
//! modules must not decide anything (that is `engine/`) or do I/O.

use std::fmt;

use crate::version::ProtocolVersion;
use crate::wbxml::{self, DecodeError, Element, Tag};

pub mod airsyncbase;
pub mod calendar;
pub mod compose;
pub mod contacts;
pub mod dispatch;
pub mod find;
pub mod folder_create;
pub mod folder_delete;
pub mod folder_sync;
pub mod folder_update;
pub mod get_attachment;
pub mod get_item_estimate;
pub mod item_operations;
pub mod items;
pub mod meeting_response;
pub mod move_items;
pub mod notes;
pub mod ping;
pub mod provision;
pub mod resolve_recipients;
pub mod search;
pub mod send_mail;
pub mod settings;
pub mod smart_forward;
pub mod smart_reply;
pub mod sync;
pub mod tasks;
pub(crate) mod tree;
pub mod validate_cert;

pub use crate::query::Command;
pub use dispatch::Request;
pub use tree::Owned;

/// Why a WBXML document is not a valid request or response of a command.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The bytes are not WBXML.
    #[error(transparent)]
    Wbxml(#[from] DecodeError),
    /// The element is not the one expected here (e.g. the root).
    #[error("expected element {expected}, found {found}")]
    UnexpectedElement {
        /// Expected tag.
        expected: Tag,
        /// Tag found.
        found: Tag,
    },
    /// A required element is missing.
    #[error("missing element {0}")]
    Missing(Tag),
    /// A value does not parse.
    #[error("invalid value {value:?} in {tag}")]
    InvalidValue {
        /// The element.
        tag: Tag,
        /// The value (truncated).
        value: String,
    },
    /// The element does not exist in this protocol version.
    #[error("{tag} is not allowed in protocol version {version}")]
    NotInVersion {
        /// The element.
        tag: Tag,
        /// The version of the request.
        version: ProtocolVersion,
    },
    /// The command does not exist in this protocol version.
    #[error("command {command} is not available in protocol version {version}")]
    CommandNotInVersion {
        /// The command.
        command: Command,
        /// The version of the request.
        version: ProtocolVersion,
    },
    /// A query parameter the command needs is missing (GetAttachment, and the
    /// MIME forms of SendMail/SmartReply/SmartForward).
    #[error("missing query parameter {0}")]
    MissingQueryParameter(&'static str),
    /// More occurrences of an element than the schema allows.
    #[error("too many {0} elements")]
    TooMany(Tag),
}

/// A typed EAS document (request or response body).
pub trait EasDocument: Sized {
    /// The root element's tag.
    const ROOT: Tag;

    /// Reads the typed value from a decoded tree.
    fn from_element(el: &Element<'_>, version: ProtocolVersion) -> Result<Self, CommandError>;

    /// Builds the tree for `version` (elements that version lacks are left
    /// out); it may borrow the value's strings.
    fn to_element(&self, version: ProtocolVersion) -> Element<'_>;

    /// Decodes WBXML bytes.
    fn decode(bytes: &[u8], version: ProtocolVersion) -> Result<Self, CommandError> {
        let root = wbxml::decode(bytes)?;
        Self::from_element(&root, version)
    }

    /// Encodes to WBXML bytes.
    fn encode(&self, version: ProtocolVersion) -> Vec<u8> {
        wbxml::encode_to_vec(&self.to_element(version))
    }
}

/// Implements [`EasDocument`] for types with inherent
/// `from_element`/`to_element` of the usual signatures.
macro_rules! eas_document {
    ($ty:ty, $root:expr) => {
        impl $crate::commands::EasDocument for $ty {
            const ROOT: $crate::wbxml::Tag = $root;

            fn from_element(
                el: &$crate::wbxml::Element<'_>,
                version: $crate::version::ProtocolVersion,
            ) -> Result<Self, $crate::commands::CommandError> {
                <$ty>::from_element(el, version)
            }

            fn to_element(
                &self,
                version: $crate::version::ProtocolVersion,
            ) -> $crate::wbxml::Element<'_> {
                <$ty>::to_element(self, version)
            }
        }
    };
}
pub(crate) use eas_document;

macro_rules! string_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
        pub struct $name(pub String);

        impl $name {
            /// The value as sent.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                $name(s.to_owned())
            }
        }

        impl From<String> for $name {
            fn from(s: String) -> Self {
                $name(s)
            }
        }
    };
}

string_id!(
    /// A `SyncKey` (Sync, FolderSync, GetItemEstimate, …). `"0"` starts over.
    SyncKey
);
string_id!(
    /// A `CollectionId` (a folder's server id as used by Sync).
    CollectionId
);
string_id!(
    /// A `ServerId` (an item's or folder's id on the server).
    ServerId
);
string_id!(
    /// A `ClientId` (the device's temporary id for an item it adds).
    ClientId
);
string_id!(
    /// A `LongId` (a Search result reference).
    LongId
);

impl SyncKey {
    /// The initial key `"0"`.
    pub fn initial() -> Self {
        SyncKey("0".to_owned())
    }

    /// True for `"0"`.
    pub fn is_initial(&self) -> bool {
        self.0 == "0"
    }
}

/// Fails when `command` is not in `version` (Find is 16.1 only, etc.).
pub(crate) fn require_version(
    command: Command,
    version: ProtocolVersion,
    since: ProtocolVersion,
) -> Result<(), CommandError> {
    if version < since {
        Err(CommandError::CommandNotInVersion { command, version })
    } else {
        Ok(())
    }
}

/// Fails when `tag` is present in `el` and `version` is older than `since`.
pub(crate) fn since(
    el: &Element<'_>,
    tag: Tag,
    version: ProtocolVersion,
    since: ProtocolVersion,
) -> Result<(), CommandError> {
    if version < since && el.child(tag).is_some() {
        Err(CommandError::NotInVersion { tag, version })
    } else {
        Ok(())
    }
}
