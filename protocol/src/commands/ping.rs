//! Ping (MS-ASCMD 2.2.1.13): the device asks to be told when one of its
//! folders changes, within a heartbeat interval.
//!
//! Exists to type the parked request and its answer. It must not wait or
//! watch anything: the push hub in `server/` does. An empty Ping body
//! ("same as last time") never reaches this module.

use super::tree;
use super::{eas_document, CollectionId, CommandError};
use crate::status::PingStatus;
use crate::version::ProtocolVersion;
use crate::wbxml::tags::ping as p;
use crate::wbxml::Element;

/// A folder to watch.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PingFolder {
    /// `Id` (the CollectionId).
    pub id: CollectionId,
    /// `Class` (`Email`, `Calendar`, `Contacts`, `Tasks`, `Notes`, `SMS`).
    pub class: String,
}

/// Ping request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PingRequest {
    /// `HeartbeatInterval` in seconds (absent: reuse the last one).
    pub heartbeat_interval: Option<u32>,
    /// `Folders` (absent: reuse the last list).
    pub folders: Option<Vec<PingFolder>>,
}

/// Ping response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PingResponse {
    /// `Status`.
    pub status: PingStatus,
    /// `Folders/Folder`: the changed folders (status 2).
    pub folders: Vec<CollectionId>,
    /// `MaxFolders` (status 6).
    pub max_folders: Option<u32>,
    /// `HeartbeatInterval`: the allowed bound (status 5).
    pub heartbeat_interval: Option<u32>,
}

impl PingRequest {
    /// Reads a `Ping` request.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, p::PING)?;
        let folders = match el.child(p::FOLDERS) {
            None => None,
            Some(f) => {
                let list: Vec<PingFolder> = f
                    .children_with(p::FOLDER)
                    .map(|f| {
                        Ok(PingFolder {
                            id: CollectionId(tree::req_text(f, p::ID)?),
                            class: tree::req_text(f, p::CLASS)?,
                        })
                    })
                    .collect::<Result<_, CommandError>>()?;
                // The schema asks one Folder at least (6.29).
                if list.is_empty() {
                    return Err(CommandError::Missing(p::FOLDER));
                }
                Some(list)
            }
        };
        let heartbeat_interval = match el.child(p::HEARTBEAT_INTERVAL) {
            None => None,
            Some(h) => Some(heartbeat(&tree::content(h)?)?),
        };
        Ok(PingRequest {
            heartbeat_interval,
            folders,
        })
    }

    /// Builds the `Ping` request element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(p::PING);
        tree::push_opt(&mut el, p::HEARTBEAT_INTERVAL, self.heartbeat_interval);
        if let Some(folders) = &self.folders {
            let mut fs = Element::new(p::FOLDERS);
            for f in folders {
                fs.push(
                    Element::new(p::FOLDER)
                        .with(tree::text_el(p::ID, &f.id))
                        .with(tree::text_el(p::CLASS, &f.class)),
                );
            }
            el.push(fs);
        }
        el
    }
}

/// A HeartbeatInterval (an `xs:integer`): an integer beyond `u32` either
/// way is taken as the nearest `u32` (0 or `u32::MAX`), so it is answered
/// as out of bounds (Status 5 and the bound), not as a syntax error;
/// anything that is no integer is [`CommandError::InvalidValue`].
fn heartbeat(text: &str) -> Result<u32, CommandError> {
    let t = text.trim();
    let (negative, digits) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(CommandError::InvalidValue {
            tag: p::HEARTBEAT_INTERVAL,
            value: t.chars().take(64).collect(),
        });
    }
    Ok(match negative {
        true => 0,
        false => digits.parse().unwrap_or(u32::MAX),
    })
}

impl PingResponse {
    /// Reads a `Ping` response.
    pub fn from_element(el: &Element<'_>, _v: ProtocolVersion) -> Result<Self, CommandError> {
        tree::expect_tag(el, p::PING)?;
        let folders = match el.child(p::FOLDERS) {
            None => Vec::new(),
            Some(f) => f
                .children_with(p::FOLDER)
                .map(|f| tree::content(f).map(CollectionId))
                .collect::<Result<_, _>>()?,
        };
        Ok(PingResponse {
            status: PingStatus::from_code(tree::req_num(el, p::STATUS)?),
            folders,
            max_folders: tree::opt_num(el, p::MAX_FOLDERS)?,
            heartbeat_interval: tree::opt_num(el, p::HEARTBEAT_INTERVAL)?,
        })
    }

    /// Builds the `Ping` response element.
    pub fn to_element(&self, _v: ProtocolVersion) -> Element<'_> {
        let mut el = Element::new(p::PING);
        el.push(tree::text_el(p::STATUS, self.status.code()));
        if !self.folders.is_empty() {
            let mut fs = Element::new(p::FOLDERS);
            for f in &self.folders {
                fs.push(tree::text_el(p::FOLDER, f));
            }
            el.push(fs);
        }
        tree::push_opt(&mut el, p::MAX_FOLDERS, self.max_folders);
        tree::push_opt(&mut el, p::HEARTBEAT_INTERVAL, self.heartbeat_interval);
        el
    }
}

eas_document!(PingRequest, p::PING);
eas_document!(PingResponse, p::PING);
