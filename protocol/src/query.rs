//! The EAS request line (MS-ASHTTP 2.2.1.1.1): the query of
//! `/Microsoft-Server-ActiveSync?…` in its plain form (`Cmd=Sync&User=…`) and
//! its base64 form (MS-ASHTTP 2.2.1.1.1.1), decoded into one [`RequestLine`].
//!
//! Exists so the server routes on a typed [`Command`] and never on strings.
//! It must not look at headers or bodies, and never panics or allocates
//! without bound on hostile input (every length is checked against the input).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;

use crate::version::{ProtocolVersion, VersionError};

/// Every MS-ASCMD command that can appear in `Cmd=` or in the base64 command
/// code, including the 2.5-era hierarchy commands that only have a code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Command {
    /// Sync (code 0).
    Sync,
    /// SendMail (code 1).
    SendMail,
    /// SmartForward (code 2).
    SmartForward,
    /// SmartReply (code 3).
    SmartReply,
    /// GetAttachment (code 4).
    GetAttachment,
    /// GetHierarchy (code 5, protocol 2.5 only).
    GetHierarchy,
    /// CreateCollection (code 6, protocol 2.5 only).
    CreateCollection,
    /// DeleteCollection (code 7, protocol 2.5 only).
    DeleteCollection,
    /// MoveCollection (code 8, protocol 2.5 only).
    MoveCollection,
    /// FolderSync (code 9).
    FolderSync,
    /// FolderCreate (code 10).
    FolderCreate,
    /// FolderDelete (code 11).
    FolderDelete,
    /// FolderUpdate (code 12).
    FolderUpdate,
    /// MoveItems (code 13).
    MoveItems,
    /// GetItemEstimate (code 14).
    GetItemEstimate,
    /// MeetingResponse (code 15).
    MeetingResponse,
    /// Search (code 16).
    Search,
    /// Settings (code 17).
    Settings,
    /// Ping (code 18).
    Ping,
    /// ItemOperations (code 19).
    ItemOperations,
    /// Provision (code 20).
    Provision,
    /// ResolveRecipients (code 21).
    ResolveRecipients,
    /// ValidateCert (code 22).
    ValidateCert,
    /// Find (code 23, protocol 16.1).
    Find,
}

impl Command {
    /// Every command, in command-code order.
    pub const ALL: [Command; 24] = [
        Command::Sync,
        Command::SendMail,
        Command::SmartForward,
        Command::SmartReply,
        Command::GetAttachment,
        Command::GetHierarchy,
        Command::CreateCollection,
        Command::DeleteCollection,
        Command::MoveCollection,
        Command::FolderSync,
        Command::FolderCreate,
        Command::FolderDelete,
        Command::FolderUpdate,
        Command::MoveItems,
        Command::GetItemEstimate,
        Command::MeetingResponse,
        Command::Search,
        Command::Settings,
        Command::Ping,
        Command::ItemOperations,
        Command::Provision,
        Command::ResolveRecipients,
        Command::ValidateCert,
        Command::Find,
    ];

    /// The `Cmd=` name.
    pub fn name(self) -> &'static str {
        match self {
            Command::Sync => "Sync",
            Command::SendMail => "SendMail",
            Command::SmartForward => "SmartForward",
            Command::SmartReply => "SmartReply",
            Command::GetAttachment => "GetAttachment",
            Command::GetHierarchy => "GetHierarchy",
            Command::CreateCollection => "CreateCollection",
            Command::DeleteCollection => "DeleteCollection",
            Command::MoveCollection => "MoveCollection",
            Command::FolderSync => "FolderSync",
            Command::FolderCreate => "FolderCreate",
            Command::FolderDelete => "FolderDelete",
            Command::FolderUpdate => "FolderUpdate",
            Command::MoveItems => "MoveItems",
            Command::GetItemEstimate => "GetItemEstimate",
            Command::MeetingResponse => "MeetingResponse",
            Command::Search => "Search",
            Command::Settings => "Settings",
            Command::Ping => "Ping",
            Command::ItemOperations => "ItemOperations",
            Command::Provision => "Provision",
            Command::ResolveRecipients => "ResolveRecipients",
            Command::ValidateCert => "ValidateCert",
            Command::Find => "Find",
        }
    }

    /// The base64 query command code (MS-ASHTTP 2.2.1.1.1.1.2).
    pub fn code(self) -> u8 {
        // Variants are declared in code order and codes are 0..=23 without gaps.
        self as u8
    }

    /// The command of a base64 query command code.
    pub fn from_code(code: u8) -> Result<Self, QueryError> {
        Self::ALL
            .get(usize::from(code))
            .copied()
            .ok_or(QueryError::UnknownCommandCode(code))
    }
}

impl FromStr for Command {
    type Err = QueryError;

    /// Parses a `Cmd=` value. Exact names first; devices are known to vary
    /// the case, so a case-insensitive match is accepted too.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .or_else(|| {
                Self::ALL
                    .into_iter()
                    .find(|c| c.name().eq_ignore_ascii_case(s))
            })
            .ok_or_else(|| QueryError::UnknownCommand(truncate(s)))
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a request line was rejected. The server answers 400 to all of these
/// (501 for an unknown command).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// The query is empty.
    #[error("empty query")]
    Empty,
    /// `Cmd=` names no MS-ASCMD command (e.g. `OPTIONS`, which is an HTTP method).
    #[error("unknown command {0:?}")]
    UnknownCommand(String),
    /// The base64 command code is not in MS-ASHTTP 2.2.1.1.1.1.2.
    #[error("unknown command code {0}")]
    UnknownCommandCode(u8),
    /// A required plain parameter is missing.
    #[error("missing query parameter {0}")]
    Missing(&'static str),
    /// A parameter appears twice.
    #[error("duplicate query parameter {0}")]
    Duplicate(String),
    /// A parameter value is empty or malformed.
    #[error("invalid value for query parameter {0}")]
    InvalidValue(&'static str),
    /// A `%` escape is malformed or decodes to invalid UTF-8.
    #[error("bad percent-encoding in query")]
    PercentEncoding,
    /// The base64 text does not decode.
    #[error("query is not valid base64")]
    Base64,
    /// The base64 query ends before a field it announces.
    #[error("base64 query truncated in {0}")]
    Truncated(&'static str),
    /// The policy key length is neither 0 nor 4.
    #[error("base64 query policy key length {0} (expected 0 or 4)")]
    PolicyKeyLength(u8),
    /// A base64 parameter tag is not in MS-ASHTTP 2.2.1.1.1.1.3.
    #[error("unknown base64 query parameter tag {0}")]
    UnknownParameterTag(u8),
    /// The protocol version byte is unknown.
    #[error(transparent)]
    Version(#[from] VersionError),
    /// A string field is not UTF-8.
    #[error("query field {0} is not UTF-8")]
    Utf8(&'static str),
    /// A value is too long to fit the base64 form's one-byte length.
    #[error("query field {0} longer than 255 bytes")]
    TooLong(&'static str),
}

fn truncate(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Command parameters shared by both query forms (MS-ASHTTP 2.2.1.1.1.2.5 and
/// 2.2.1.1.1.1.3).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryParams {
    /// `AttachmentName` (GetAttachment).
    pub attachment_name: Option<String>,
    /// `CollectionId` (SmartForward, SmartReply).
    pub collection_id: Option<String>,
    /// `CollectionName` (base64 tag 2, protocol 2.5).
    pub collection_name: Option<String>,
    /// `ItemId` (SmartForward, SmartReply).
    pub item_id: Option<String>,
    /// `LongId` (SmartForward, SmartReply).
    pub long_id: Option<String>,
    /// `ParentId` (base64 tag 5, protocol 2.5).
    pub parent_id: Option<String>,
    /// `Occurrence` (SmartForward, SmartReply).
    pub occurrence: Option<String>,
    /// `SaveInSent=T` or Options bit 0x01.
    pub save_in_sent: bool,
    /// `AcceptMultiPart=T` or Options bit 0x02.
    pub accept_multi_part: bool,
}

/// Which form the query had.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryForm {
    /// `Cmd=…&User=…&DeviceId=…&DeviceType=…`.
    Plain,
    /// MS-ASHTTP 2.2.1.1.1.1.
    Base64,
}

/// The decoded request line, whatever its form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestLine {
    /// The query form it came from.
    pub form: QueryForm,
    /// The command.
    pub command: Command,
    /// `User=` (plain) or the `User` parameter (base64; usually absent, the
    /// user then comes from `Authorization`).
    pub user: Option<String>,
    /// `DeviceId=`; for the base64 form, the device id bytes in lowercase hex.
    pub device_id: String,
    /// `DeviceType=`.
    pub device_type: String,
    /// Only in the base64 form (the plain form uses `MS-ASProtocolVersion`).
    pub protocol_version: Option<ProtocolVersion>,
    /// Only in the base64 form (the plain form uses `X-MS-PolicyKey`).
    pub policy_key: Option<u32>,
    /// Only in the base64 form: the Windows locale id (e.g. 0x040C).
    pub locale: Option<u16>,
    /// Command parameters.
    pub params: QueryParams,
}

impl RequestLine {
    /// Parses a query (the part after `?`), guessing the form: a query with
    /// `=` followed by a name is plain, anything else is base64.
    pub fn parse(query: &str) -> Result<Self, QueryError> {
        if query.is_empty() {
            return Err(QueryError::Empty);
        }
        if is_plain(query) {
            Self::parse_plain(query)
        } else {
            let raw = Base64Query::decode_str(query)?;
            Ok(raw.into_request_line())
        }
    }

    /// The protocol version of the request: the base64 query's byte, else the
    /// `MS-ASProtocolVersion` header (required with the plain form).
    pub fn protocol_version_with_header(
        &self,
        header: Option<&str>,
    ) -> Result<ProtocolVersion, QueryError> {
        match (self.protocol_version, header) {
            (Some(v), _) => Ok(v),
            (None, Some(h)) => Ok(h.parse()?),
            (None, None) => Err(QueryError::Missing("MS-ASProtocolVersion")),
        }
    }

    /// Parses the plain form. Parameter names are matched case-insensitively,
    /// in any order; unknown parameters are ignored.
    pub fn parse_plain(query: &str) -> Result<Self, QueryError> {
        let mut cmd = None;
        let mut user = None;
        let mut device_id = None;
        let mut device_type = None;
        let mut params = QueryParams::default();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_decode(value)?;
            let slot: &mut Option<String> = match name.to_ascii_lowercase().as_str() {
                "cmd" => &mut cmd,
                "user" => &mut user,
                "deviceid" => &mut device_id,
                "devicetype" => &mut device_type,
                "attachmentname" => &mut params.attachment_name,
                "collectionid" => &mut params.collection_id,
                "collectionname" => &mut params.collection_name,
                "itemid" => &mut params.item_id,
                "longid" => &mut params.long_id,
                "parentid" => &mut params.parent_id,
                "occurrence" => &mut params.occurrence,
                "saveinsent" => {
                    params.save_in_sent = parse_flag(&value, "SaveInSent")?;
                    continue;
                }
                "acceptmultipart" => {
                    params.accept_multi_part = parse_flag(&value, "AcceptMultiPart")?;
                    continue;
                }
                _ => continue,
            };
            if slot.is_some() {
                return Err(QueryError::Duplicate(truncate(name)));
            }
            *slot = Some(value);
        }
        let cmd = cmd.ok_or(QueryError::Missing("Cmd"))?;
        let command: Command = cmd.parse()?;
        let device_id = device_id.ok_or(QueryError::Missing("DeviceId"))?;
        if device_id.is_empty() || device_id.len() > 128 {
            return Err(QueryError::InvalidValue("DeviceId"));
        }
        let device_type = device_type.ok_or(QueryError::Missing("DeviceType"))?;
        if device_type.is_empty() {
            return Err(QueryError::InvalidValue("DeviceType"));
        }
        let user = user.ok_or(QueryError::Missing("User"))?;
        Ok(RequestLine {
            form: QueryForm::Plain,
            command,
            user: Some(user),
            device_id,
            device_type,
            protocol_version: None,
            policy_key: None,
            locale: None,
            params,
        })
    }

    /// Renders the plain form (percent-encoding values).
    pub fn to_plain(&self) -> String {
        let mut out = format!("Cmd={}", self.command.name());
        let mut push = |name: &str, value: &str| {
            out.push('&');
            out.push_str(name);
            out.push('=');
            percent_encode_into(value, &mut out);
        };
        push("User", self.user.as_deref().unwrap_or(""));
        push("DeviceId", &self.device_id);
        push("DeviceType", &self.device_type);
        let p = &self.params;
        for (name, value) in [
            ("AttachmentName", &p.attachment_name),
            ("CollectionId", &p.collection_id),
            ("CollectionName", &p.collection_name),
            ("ItemId", &p.item_id),
            ("LongId", &p.long_id),
            ("ParentId", &p.parent_id),
            ("Occurrence", &p.occurrence),
        ] {
            if let Some(value) = value {
                push(name, value);
            }
        }
        if p.save_in_sent {
            push("SaveInSent", "T");
        }
        if p.accept_multi_part {
            push("AcceptMultiPart", "T");
        }
        out
    }
}

fn is_plain(query: &str) -> bool {
    // Base64 text may end with '=' padding but never has "name=" followed by
    // more text with an '&' or a known parameter name.
    query.split('&').any(|pair| {
        pair.split_once('=').is_some_and(|(name, rest)| {
            !name.is_empty()
                && name.bytes().all(|b| b.is_ascii_alphabetic())
                && matches!(
                    name.to_ascii_lowercase().as_str(),
                    "cmd" | "user" | "deviceid" | "devicetype"
                )
                && !rest.starts_with('=')
        })
    })
}

fn parse_flag(value: &str, name: &'static str) -> Result<bool, QueryError> {
    match value {
        "T" | "t" | "1" | "true" => Ok(true),
        "F" | "f" | "0" | "false" => Ok(false),
        _ => Err(QueryError::InvalidValue(name)),
    }
}

/// Percent-decodes a query value (`+` is a space, as HTML forms encode it).
pub fn percent_decode(value: &str) -> Result<String, QueryError> {
    unescape(value, true)
}

/// Percent-decodes `%XX` escapes only, `+` kept: a `+` in the base64 query
/// is a base64 digit, not a form-encoded space.
fn unescape_base64(query: &str) -> Result<String, QueryError> {
    unescape(query, false)
}

fn unescape(value: &str, plus_is_space: bool) -> Result<String, QueryError> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or(QueryError::PercentEncoding)?;
                let hi = hex_val(hex[0]).ok_or(QueryError::PercentEncoding)?;
                let lo = hex_val(hex[1]).ok_or(QueryError::PercentEncoding)?;
                out.push(hi << 4 | lo);
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| QueryError::PercentEncoding)
}

fn percent_encode_into(value: &str, out: &mut String) {
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0x0f)]));
        }
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Lowercase hex of bytes (how a binary base64 device id is rendered).
pub fn to_hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(HEX[usize::from(b >> 4)].to_ascii_lowercase()));
        s.push(char::from(HEX[usize::from(b & 0x0f)].to_ascii_lowercase()));
    }
    s
}

/// Options bit: save the message in Sent Items.
pub const OPTION_SAVE_IN_SENT: u8 = 0x01;
/// Options bit: answer ItemOperations in multipart form.
pub const OPTION_ACCEPT_MULTI_PART: u8 = 0x02;

/// The base64 query form, field by field (MS-ASHTTP 2.2.1.1.1.1), with the
/// device id as raw bytes so it round-trips.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base64Query {
    /// Protocol version byte.
    pub protocol_version: ProtocolVersion,
    /// Command code byte.
    pub command: Command,
    /// Locale, little-endian u16.
    pub locale: u16,
    /// Device id bytes (often a GUID).
    pub device_id: Vec<u8>,
    /// Policy key (absent when its length byte is 0).
    pub policy_key: Option<u32>,
    /// Device type (ASCII).
    pub device_type: String,
    /// `User` parameter (tag 8).
    pub user: Option<String>,
    /// Other parameters.
    pub params: QueryParams,
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self, field: &'static str) -> Result<u8, QueryError> {
        let b = *self
            .bytes
            .get(self.pos)
            .ok_or(QueryError::Truncated(field))?;
        self.pos += 1;
        Ok(b)
    }

    fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], QueryError> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or(QueryError::Truncated(field))?;
        let s = self
            .bytes
            .get(self.pos..end)
            .ok_or(QueryError::Truncated(field))?;
        self.pos = end;
        Ok(s)
    }

    fn done(&self) -> bool {
        self.pos >= self.bytes.len()
    }
}

fn utf8(bytes: &[u8], field: &'static str) -> Result<String, QueryError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| QueryError::Utf8(field))
}

impl Base64Query {
    /// Decodes the query text (standard base64, padding optional; a
    /// percent-encoded query is decoded first). The base64 text is the whole
    /// query (MS-ASHTTP 2.2.1.1.1.1), so a client may escape its `+`, `/`
    /// and `=` (`%2B`, `%2F`, `%3D`) or leave them: both read the same, and
    /// a `+` stays a `+` (never a form-encoded space) beside an escape.
    pub fn decode_str(query: &str) -> Result<Self, QueryError> {
        let text = if query.contains('%') {
            unescape_base64(query)?
        } else {
            query.to_owned()
        };
        let text = text.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(text)
            .map_err(|_| QueryError::Base64)?;
        Self::decode_bytes(&bytes)
    }

    /// Decodes the binary form.
    pub fn decode_bytes(bytes: &[u8]) -> Result<Self, QueryError> {
        let mut r = Reader { bytes, pos: 0 };
        let protocol_version = ProtocolVersion::from_query_byte(r.u8("protocol version")?)?;
        let command = Command::from_code(r.u8("command code")?)?;
        let locale = u16::from_le_bytes([r.u8("locale")?, r.u8("locale")?]);
        let n = r.u8("device id length")?;
        let device_id = r.take(usize::from(n), "device id")?.to_vec();
        let policy_key = match r.u8("policy key length")? {
            0 => None,
            4 => {
                let k = r.take(4, "policy key")?;
                Some(u32::from_le_bytes([k[0], k[1], k[2], k[3]]))
            }
            other => return Err(QueryError::PolicyKeyLength(other)),
        };
        let n = r.u8("device type length")?;
        let device_type = utf8(r.take(usize::from(n), "device type")?, "DeviceType")?;
        let mut user = None;
        let mut params = QueryParams::default();
        while !r.done() {
            let tag = r.u8("parameter tag")?;
            let n = r.u8("parameter length")?;
            let value = r.take(usize::from(n), "parameter value")?;
            let slot = match tag {
                0 => &mut params.attachment_name,
                1 => &mut params.collection_id,
                2 => &mut params.collection_name,
                3 => &mut params.item_id,
                4 => &mut params.long_id,
                5 => &mut params.parent_id,
                6 => &mut params.occurrence,
                7 => {
                    let bits = value.first().copied().unwrap_or(0);
                    params.save_in_sent = bits & OPTION_SAVE_IN_SENT != 0;
                    params.accept_multi_part = bits & OPTION_ACCEPT_MULTI_PART != 0;
                    continue;
                }
                8 => &mut user,
                other => return Err(QueryError::UnknownParameterTag(other)),
            };
            *slot = Some(utf8(value, "parameter")?);
        }
        Ok(Base64Query {
            protocol_version,
            command,
            locale,
            device_id,
            policy_key,
            device_type,
            user,
            params,
        })
    }

    /// Encodes the binary form.
    pub fn encode_bytes(&self) -> Result<Vec<u8>, QueryError> {
        fn len(n: usize, field: &'static str) -> Result<u8, QueryError> {
            u8::try_from(n).map_err(|_| QueryError::TooLong(field))
        }
        let mut out = vec![self.protocol_version.query_byte(), self.command.code()];
        out.extend_from_slice(&self.locale.to_le_bytes());
        out.push(len(self.device_id.len(), "DeviceId")?);
        out.extend_from_slice(&self.device_id);
        match self.policy_key {
            None => out.push(0),
            Some(k) => {
                out.push(4);
                out.extend_from_slice(&k.to_le_bytes());
            }
        }
        out.push(len(self.device_type.len(), "DeviceType")?);
        out.extend_from_slice(self.device_type.as_bytes());
        let p = &self.params;
        for (tag, value) in [
            (0u8, &p.attachment_name),
            (1, &p.collection_id),
            (2, &p.collection_name),
            (3, &p.item_id),
            (4, &p.long_id),
            (5, &p.parent_id),
            (6, &p.occurrence),
        ] {
            if let Some(v) = value {
                out.push(tag);
                out.push(len(v.len(), "parameter")?);
                out.extend_from_slice(v.as_bytes());
            }
        }
        let bits = if p.save_in_sent {
            OPTION_SAVE_IN_SENT
        } else {
            0
        } | if p.accept_multi_part {
            OPTION_ACCEPT_MULTI_PART
        } else {
            0
        };
        if bits != 0 {
            out.extend_from_slice(&[7, 1, bits]);
        }
        if let Some(u) = &self.user {
            out.push(8);
            out.push(len(u.len(), "User")?);
            out.extend_from_slice(u.as_bytes());
        }
        Ok(out)
    }

    /// Encodes the query text (standard base64 with padding).
    pub fn encode_str(&self) -> Result<String, QueryError> {
        Ok(base64::engine::general_purpose::STANDARD.encode(self.encode_bytes()?))
    }

    /// The form-independent view.
    pub fn into_request_line(self) -> RequestLine {
        RequestLine {
            form: QueryForm::Base64,
            command: self.command,
            user: self.user,
            device_id: to_hex(&self.device_id),
            device_type: self.device_type,
            protocol_version: Some(self.protocol_version),
            policy_key: self.policy_key,
            locale: Some(self.locale),
            params: self.params,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn command_codes_match_ms_ashttp() {
        assert_eq!(Command::Sync.code(), 0);
        assert_eq!(Command::GetAttachment.code(), 4);
        assert_eq!(Command::FolderSync.code(), 9);
        assert_eq!(Command::Provision.code(), 20);
        assert_eq!(Command::Find.code(), 23);
        assert_eq!(
            Command::from_code(24),
            Err(QueryError::UnknownCommandCode(24))
        );
    }

    #[test]
    fn plain_query_any_order_and_percent_decoding() {
        let q = RequestLine::parse("User=dom%5Cexta&DeviceId=Appl1&DeviceType=iPad&Cmd=SmartReply&ItemId=5%3A12&SaveInSent=T").unwrap();
        assert_eq!(q.command, Command::SmartReply);
        assert_eq!(q.user.as_deref(), Some("dom\\exta"));
        assert_eq!(q.params.item_id.as_deref(), Some("5:12"));
        assert!(q.params.save_in_sent);
        assert_eq!(RequestLine::parse(&q.to_plain()), Ok(q));
    }

    #[test]
    fn version_from_query_or_header() {
        let plain = RequestLine::parse("Cmd=Sync&User=a&DeviceId=b&DeviceType=c").unwrap();
        assert_eq!(
            plain.protocol_version_with_header(Some("14.1")),
            Ok(ProtocolVersion::V14_1)
        );
        assert_eq!(
            plain.protocol_version_with_header(None),
            Err(QueryError::Missing("MS-ASProtocolVersion"))
        );
        assert!(plain.protocol_version_with_header(Some("9.9")).is_err());
        let b64 = RequestLine::parse("jAAMBBCkufmbxGcztuQus5kI+d1IBG1/bn0DV1A4").unwrap();
        assert_eq!(
            b64.protocol_version_with_header(Some("12.1")),
            Ok(ProtocolVersion::V14_0)
        );
    }

    #[test]
    fn plain_query_errors() {
        assert_eq!(
            RequestLine::parse("Cmd=OPTIONS&User=a&DeviceId=b&DeviceType=c"),
            Err(QueryError::UnknownCommand("OPTIONS".into()))
        );
        assert_eq!(
            RequestLine::parse("Cmd=Sync&User=a&DeviceType=c"),
            Err(QueryError::Missing("DeviceId"))
        );
        assert_eq!(
            RequestLine::parse("Cmd=Sync&Cmd=Ping&User=a&DeviceId=b&DeviceType=c"),
            Err(QueryError::Duplicate("Cmd".into()))
        );
        assert_eq!(
            RequestLine::parse("Cmd=Sync&User=a%4&DeviceId=b&DeviceType=c"),
            Err(QueryError::PercentEncoding)
        );
    }

    // [MS-ASHTTP] 2.2.1.1.1.1: the base64 query is the whole query string;
    // percent-escaping part of it (here the `=` padding) must not turn its
    // `+` digits into spaces.
    #[test]
    fn base64_query_with_plus_and_escaped_padding() {
        let q = Base64Query {
            protocol_version: ProtocolVersion::V14_1,
            command: Command::Sync,
            locale: 0x0409,
            // 0xFB 0xEF 0xBE at offset 6 is "++++" in base64; 31 bytes in
            // all end in "==".
            device_id: vec![0, 0xFB, 0xEF, 0xBE, 0xFB, 0xEF, 0xBE],
            policy_key: Some(0xFFFF_FFFF),
            device_type: "iPhone".into(),
            user: Some("alice".into()),
            params: QueryParams::default(),
        };
        let text = q.encode_str().unwrap();
        assert!(text.contains('+') && text.ends_with('='), "{text}");
        let escaped = text.replace('=', "%3D");
        assert_eq!(Base64Query::decode_str(&escaped), Ok(q.clone()));
        assert_eq!(
            RequestLine::parse(&escaped).unwrap(),
            RequestLine::parse(&text).unwrap()
        );
        // Every digit escaped, or only some: the same request.
        let all = text
            .replace('+', "%2B")
            .replace('/', "%2F")
            .replace('=', "%3d");
        assert_eq!(Base64Query::decode_str(&all), Ok(q.clone()));
        let some = text.replacen('+', "%2B", 1).replace('=', "%3D");
        assert_eq!(Base64Query::decode_str(&some), Ok(q));
        // The plain form keeps reading `+` as a space.
        let line = RequestLine::parse("Cmd=Sync&User=a+b%40c&DeviceId=d&DeviceType=e").unwrap();
        assert_eq!(line.user.as_deref(), Some("a b@c"));
    }

    #[test]
    fn base64_truncation_is_an_error() {
        let full = Base64Query {
            protocol_version: ProtocolVersion::V14_1,
            command: Command::SmartForward,
            locale: 0x0409,
            device_id: vec![1, 2, 3],
            policy_key: Some(7),
            device_type: "SP".into(),
            user: Some("u".into()),
            params: QueryParams {
                item_id: Some("1:2".into()),
                save_in_sent: true,
                ..QueryParams::default()
            },
        };
        let bytes = full.encode_bytes().unwrap();
        assert_eq!(Base64Query::decode_bytes(&bytes), Ok(full));
        // The fixed part is 16 bytes here; any shorter prefix is incomplete,
        // and so is a prefix that cuts a parameter.
        for n in (0..16).chain([17, 18, 19, 20]) {
            assert!(
                Base64Query::decode_bytes(&bytes[..n]).is_err(),
                "prefix {n} decoded"
            );
        }
        assert_eq!(
            Base64Query::decode_bytes(&[141, 0, 9, 4, 200]),
            Err(QueryError::Truncated("device id"))
        );
        assert_eq!(
            Base64Query::decode_bytes(&[141, 0, 9, 4, 0, 3, 1, 2, 3]),
            Err(QueryError::PolicyKeyLength(3))
        );
    }
}
