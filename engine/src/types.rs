//! Semantic value types shared by every engine module: the EAS names
//! (SyncKey, CollectionId, ServerId, ClientId, PolicyKey, FilterType, the
//! FolderSync Type values) and the backend-neutral item identity.
//!
//! These are the engine's own types; the server maps the wire types of
//! `opush-protocol` to and from them. Nothing here parses WBXML or talks to a
//! backend.

use rkyv::{Archive, Deserialize, Serialize};
use std::fmt;

/// Milliseconds since the Unix epoch (UTC). Always supplied by the caller.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// One day in milliseconds.
    pub const DAY_MS: u64 = 86_400_000;

    /// An item's date not observed yet: a listing made without dates (an
    /// email folder whose FilterType has no window does not need them at
    /// SyncKey 0, and Dovecot's INTERNALDATE is most of a listing's cost).
    /// It sorts after every date, so an undated item is inside any filter
    /// window and never soft-deleted by one; a later observation with the
    /// date replaces it (never the other way round), and the server lists
    /// the folder with dates before a window takes effect
    /// (`CollectionState::has_undated`).
    pub const UNDATED: Timestamp = Timestamp(u64::MAX);

    /// Whether this is a date (not [`Timestamp::UNDATED`]).
    pub fn is_dated(self) -> bool {
        self != Self::UNDATED
    }

    /// `self - days`, saturating at the epoch.
    pub fn minus_days(self, days: u64) -> Timestamp {
        Timestamp(self.0.saturating_sub(days.saturating_mul(Self::DAY_MS)))
    }

    /// `self + ms`, saturating.
    pub fn plus_ms(self, ms: u64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

/// A SyncKey (collection or hierarchy). `0` is the bootstrap key of
/// [MS-ASCMD] 2.2.3.186.3; every issued key is unique within the life of its
/// collection (keys never restart, even after a reset), so an old key can
/// never be mistaken for a current one. Rendered as decimal.
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct SyncKey(pub u64);

impl SyncKey {
    /// The bootstrap key "0".
    pub const ZERO: SyncKey = SyncKey(0);

    /// Parses the wire form; anything that is not a decimal u64 is `None`
    /// (the caller answers "invalid SyncKey").
    pub fn parse(s: &str) -> Option<SyncKey> {
        decimal(s, 20).map(SyncKey)
    }
}

/// The plain decimal wire form of the numeric identifiers: ASCII digits
/// only (no sign, no blanks), at most `max_len` of them, within `T`'s range.
fn decimal<T: std::str::FromStr>(s: &str, max_len: usize) -> Option<T> {
    if s.is_empty() || s.len() > max_len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

impl fmt::Display for SyncKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A folder's ServerId in the hierarchy, also the CollectionId of Sync.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct CollectionId(pub u32);

impl CollectionId {
    /// Parses the decimal wire form.
    pub fn parse(s: &str) -> Option<CollectionId> {
        decimal(s, 10).map(CollectionId)
    }
}

impl fmt::Display for CollectionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// An item's ServerId, `"<collection>:<n>"` like Exchange (e.g. `"5:12"`).
/// `n` is a u32, so collections may hold far more than 65,535 items.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct ServerId {
    /// The collection the item lives in.
    pub collection: CollectionId,
    /// The per-collection item number (starts at 1, never reused).
    pub n: u32,
}

impl ServerId {
    /// Parses `"<collection>:<n>"`.
    pub fn parse(s: &str) -> Option<ServerId> {
        let (c, n) = s.split_once(':')?;
        let collection = CollectionId::parse(c)?;
        Some(ServerId {
            collection,
            n: decimal(n, 10)?,
        })
    }
}

impl fmt::Display for ServerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.collection.0, self.n)
    }
}

/// The ClientId a device gives to an item it creates ([MS-ASCMD] 2.2.3.27.4).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct ClientId(pub String);

/// A policy key chosen by the server (a random u32 is an event field).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct PolicyKey(pub u32);

/// The backend's opaque identity of an item ("uidvalidity/uid" for IMAP, an
/// href for DAV). Two different items never share one.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct BackendItemId(pub String);

/// The backend's opaque identity of a folder (IMAP path, DAV collection href).
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct BackendFolderId(pub String);

/// Opaque version of an item; changes whenever the item changes (e.g. a hash
/// of IMAP flags + MODSEQ, or a DAV ETag digest).
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub struct ItemVersion(pub u64);

/// A blake3 digest (of content, of a response…).
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq, PartialOrd, Ord))]
pub struct Digest(pub [u8; 32]);

impl Digest {
    /// blake3 of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(*blake3::hash(bytes).as_bytes())
    }
}

/// `MS-ASProtocolVersion` values the engine distinguishes.
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum ProtocolVersion {
    /// 2.5
    V2_5,
    /// 12.0
    V12_0,
    /// 12.1
    V12_1,
    /// 14.0
    V14_0,
    /// 14.1
    V14_1,
    /// 16.0
    V16_0,
    /// 16.1
    V16_1,
}

impl ProtocolVersion {
    /// True from 14.0 on, where provisioning failures are EAS statuses
    /// 142-144 instead of HTTP 449 ([MS-ASPROV] 3.2.5.1.2, [MS-ASCMD] 2.2.2).
    pub fn uses_provision_statuses(self) -> bool {
        self >= ProtocolVersion::V14_0
    }
}

/// FilterType of [MS-ASCMD] 2.2.3.68.2 (days of items kept on the device).
#[derive(
    Archive,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum FilterType {
    /// 0: no filter.
    #[default]
    All,
    /// 1: one day.
    OneDay,
    /// 2: three days.
    ThreeDays,
    /// 3: one week.
    OneWeek,
    /// 4: two weeks.
    TwoWeeks,
    /// 5: one month.
    OneMonth,
    /// 6: three months.
    ThreeMonths,
    /// 7: six months.
    SixMonths,
    /// 8: incomplete tasks (the engine has no completion flag: treated as
    /// "all"; the task backend filters completed tasks out of observations).
    IncompleteTasks,
}

impl FilterType {
    /// From the wire value 0..=8.
    pub fn from_u8(v: u8) -> Option<FilterType> {
        Some(match v {
            0 => FilterType::All,
            1 => FilterType::OneDay,
            2 => FilterType::ThreeDays,
            3 => FilterType::OneWeek,
            4 => FilterType::TwoWeeks,
            5 => FilterType::OneMonth,
            6 => FilterType::ThreeMonths,
            7 => FilterType::SixMonths,
            8 => FilterType::IncompleteTasks,
            _ => return None,
        })
    }

    /// The window length in days, `None` when there is no time window.
    pub fn days(self) -> Option<u64> {
        match self {
            FilterType::All | FilterType::IncompleteTasks => None,
            FilterType::OneDay => Some(1),
            FilterType::ThreeDays => Some(3),
            FilterType::OneWeek => Some(7),
            FilterType::TwoWeeks => Some(14),
            FilterType::OneMonth => Some(30),
            FilterType::ThreeMonths => Some(90),
            FilterType::SixMonths => Some(180),
        }
    }

    /// The oldest `received_at` still inside the window at `now`.
    pub fn cutoff(self, now: Timestamp) -> Option<Timestamp> {
        self.days().map(|d| now.minus_days(d))
    }
}

/// FolderSync `Type` values ([MS-ASCMD] 2.2.3.186.3).
#[derive(
    Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash,
)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum FolderType {
    /// 1: user-created generic folder.
    UserGeneric,
    /// 2: default Inbox.
    Inbox,
    /// 3: default Drafts.
    Drafts,
    /// 4: default Deleted Items.
    DeletedItems,
    /// 5: default Sent Items.
    SentItems,
    /// 6: default Outbox.
    Outbox,
    /// 7: default Tasks.
    Tasks,
    /// 8: default Calendar.
    Calendar,
    /// 9: default Contacts.
    Contacts,
    /// 10: default Notes.
    Notes,
    /// 11: default Journal.
    Journal,
    /// 12: user-created mail folder.
    UserMail,
    /// 13: user-created calendar.
    UserCalendar,
    /// 14: user-created contacts.
    UserContacts,
    /// 15: user-created tasks.
    UserTasks,
    /// 16: user-created journal.
    UserJournal,
    /// 17: user-created notes.
    UserNotes,
    /// 18: unknown folder type.
    Unknown,
    /// 19: recipient information cache.
    RecipientInfo,
}

impl FolderType {
    /// The wire value.
    pub fn code(self) -> u8 {
        match self {
            FolderType::UserGeneric => 1,
            FolderType::Inbox => 2,
            FolderType::Drafts => 3,
            FolderType::DeletedItems => 4,
            FolderType::SentItems => 5,
            FolderType::Outbox => 6,
            FolderType::Tasks => 7,
            FolderType::Calendar => 8,
            FolderType::Contacts => 9,
            FolderType::Notes => 10,
            FolderType::Journal => 11,
            FolderType::UserMail => 12,
            FolderType::UserCalendar => 13,
            FolderType::UserContacts => 14,
            FolderType::UserTasks => 15,
            FolderType::UserJournal => 16,
            FolderType::UserNotes => 17,
            FolderType::Unknown => 18,
            FolderType::RecipientInfo => 19,
        }
    }

    /// From the wire value.
    pub fn from_code(v: u8) -> Option<FolderType> {
        Some(match v {
            1 => FolderType::UserGeneric,
            2 => FolderType::Inbox,
            3 => FolderType::Drafts,
            4 => FolderType::DeletedItems,
            5 => FolderType::SentItems,
            6 => FolderType::Outbox,
            7 => FolderType::Tasks,
            8 => FolderType::Calendar,
            9 => FolderType::Contacts,
            10 => FolderType::Notes,
            11 => FolderType::Journal,
            12 => FolderType::UserMail,
            13 => FolderType::UserCalendar,
            14 => FolderType::UserContacts,
            15 => FolderType::UserTasks,
            16 => FolderType::UserJournal,
            17 => FolderType::UserNotes,
            18 => FolderType::Unknown,
            19 => FolderType::RecipientInfo,
            _ => return None,
        })
    }

    /// Default (special) folders cannot be renamed or deleted by the device
    /// ([MS-ASCMD] FolderDelete/FolderUpdate Status 3).
    pub fn is_special(self) -> bool {
        matches!(self.code(), 2..=11 | 19)
    }

    /// Contacts folders get client-add deduplication by content digest.
    pub fn is_contacts(self) -> bool {
        matches!(self, FolderType::Contacts | FolderType::UserContacts)
    }

    /// The FilterType time window applies to email and calendar only
    /// ([MS-ASCMD] 2.2.3.68.2).
    pub fn is_time_filtered(self) -> bool {
        matches!(
            self,
            FolderType::UserGeneric
                | FolderType::Inbox
                | FolderType::Drafts
                | FolderType::DeletedItems
                | FolderType::SentItems
                | FolderType::Outbox
                | FolderType::UserMail
                | FolderType::Calendar
                | FolderType::UserCalendar
        )
    }
}

/// The EAS command a request carried (for the log and policy checks).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[rkyv(derive(Debug, PartialEq, Eq))]
pub enum Command {
    /// Sync
    Sync,
    /// FolderSync
    FolderSync,
    /// FolderCreate
    FolderCreate,
    /// FolderDelete
    FolderDelete,
    /// FolderUpdate
    FolderUpdate,
    /// GetItemEstimate
    GetItemEstimate,
    /// Ping
    Ping,
    /// Provision
    Provision,
    /// MoveItems
    MoveItems,
    /// Any other command (SendMail, ItemOperations…).
    Other,
}
