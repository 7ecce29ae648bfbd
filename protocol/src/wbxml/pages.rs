//! The 26 EAS code pages of [MS-ASWBXML] section 2.1.2.1 (EAS 16.1): the tag
//! constants used everywhere (`tags::airsync::SYNC_KEY`, …) and the lookup
//! tables the codec and the XML form need (token → name, name → token,
//! page → namespace). One macro generates both, so they cannot disagree.
//!
//! This module holds data only: it must not know about byte encodings.

use super::Tag;

/// One WBXML code page: its number, its EAS namespace name and its tags.
#[derive(Debug)]
pub struct CodePage {
    /// The page number used with SWITCH_PAGE (0–25).
    pub id: u8,
    /// The namespace name as in [MS-ASWBXML] (`AirSync`, `Email2`, …).
    pub namespace: &'static str,
    /// The Rust module holding this page's constants (`airsync`, …).
    pub module: &'static str,
    /// `(token, name)` pairs in token order.
    pub entries: &'static [(u8, &'static str)],
    by_token: [Option<&'static str>; 64],
}

impl CodePage {
    /// The element name of `token` (low six bits) on this page.
    pub fn name(&self, token: u8) -> Option<&'static str> {
        self.by_token[usize::from(token & 0x3F)]
    }

    /// The token of the element called `name` on this page.
    pub fn token(&self, name: &str) -> Option<u8> {
        self.entries
            .iter()
            .find(|(_, n)| *n == name)
            .map(|(t, _)| *t)
    }
}

const fn index_tokens(entries: &'static [(u8, &'static str)]) -> [Option<&'static str>; 64] {
    let mut out: [Option<&'static str>; 64] = [None; 64];
    let mut i = 0;
    while i < entries.len() {
        out[(entries[i].0 & 0x3F) as usize] = Some(entries[i].1);
        i += 1;
    }
    out
}

macro_rules! code_pages {
    ($(
        $(#[$meta:meta])*
        $page:literal $module:ident $ns:literal {
            $( $konst:ident = $token:literal $name:literal ),* $(,)?
        }
    )*) => {
        /// Tag constants, one module per code page, named after the
        /// [MS-ASWBXML] element names in UPPER_SNAKE_CASE.
        pub mod tags {
            $(
                $(#[$meta])*
                #[doc = concat!("Code page ", stringify!($page), ": `", $ns, "`.")]
                pub mod $module {
                    use crate::wbxml::Tag;
                    /// This code page's number.
                    pub const PAGE: u8 = $page;
                    $(
                        #[doc = concat!("`", $ns, ":", $name, "` (token ", stringify!($token), ").")]
                        pub const $konst: Tag = Tag::new($page, $token);
                    )*
                }
            )*
        }

        /// Every code page, indexed by page number.
        pub static CODE_PAGES: &[CodePage] = &[
            $(
                CodePage {
                    id: $page,
                    namespace: $ns,
                    module: stringify!($module),
                    entries: &[ $( ($token, $name) ),* ],
                    by_token: index_tokens(&[ $( ($token, $name) ),* ]),
                },
            )*
        ];
    };
}

/// The code page numbered `id`, if EAS defines it.
pub fn code_page(id: u8) -> Option<&'static CodePage> {
    CODE_PAGES.get(usize::from(id)).filter(|p| p.id == id)
}

/// The code page whose namespace is `namespace` (`"AirSync"`, also accepted
/// with the trailing colon used in XML, `"AirSync:"`), ASCII case-insensitive.
pub fn code_page_by_namespace(namespace: &str) -> Option<&'static CodePage> {
    let ns = namespace.strip_suffix(':').unwrap_or(namespace);
    CODE_PAGES
        .iter()
        .find(|p| p.namespace.eq_ignore_ascii_case(ns))
}

/// The tag called `name` on page `page`.
pub fn tag_by_name(page: u8, name: &str) -> Option<Tag> {
    code_page(page)?.token(name).map(|t| Tag::new(page, t))
}

code_pages! {
    0 airsync "AirSync" {
        SYNC = 0x05 "Sync",
        RESPONSES = 0x06 "Responses",
        ADD = 0x07 "Add",
        CHANGE = 0x08 "Change",
        DELETE = 0x09 "Delete",
        FETCH = 0x0A "Fetch",
        SYNC_KEY = 0x0B "SyncKey",
        CLIENT_ID = 0x0C "ClientId",
        SERVER_ID = 0x0D "ServerId",
        STATUS = 0x0E "Status",
        COLLECTION = 0x0F "Collection",
        CLASS = 0x10 "Class",
        VERSION = 0x11 "Version",
        COLLECTION_ID = 0x12 "CollectionId",
        GET_CHANGES = 0x13 "GetChanges",
        MORE_AVAILABLE = 0x14 "MoreAvailable",
        WINDOW_SIZE = 0x15 "WindowSize",
        COMMANDS = 0x16 "Commands",
        OPTIONS = 0x17 "Options",
        FILTER_TYPE = 0x18 "FilterType",
        TRUNCATION = 0x19 "Truncation",
        RTF_TRUNCATION = 0x1A "RTFTruncation",
        CONFLICT = 0x1B "Conflict",
        COLLECTIONS = 0x1C "Collections",
        APPLICATION_DATA = 0x1D "ApplicationData",
        DELETES_AS_MOVES = 0x1E "DeletesAsMoves",
        NOTIFY_GUID = 0x1F "NotifyGUID",
        SUPPORTED = 0x20 "Supported",
        SOFT_DELETE = 0x21 "SoftDelete",
        MIME_SUPPORT = 0x22 "MIMESupport",
        MIME_TRUNCATION = 0x23 "MIMETruncation",
        WAIT = 0x24 "Wait",
        LIMIT = 0x25 "Limit",
        PARTIAL = 0x26 "Partial",
        CONVERSATION_MODE = 0x27 "ConversationMode",
        MAX_ITEMS = 0x28 "MaxItems",
        HEARTBEAT_INTERVAL = 0x29 "HeartbeatInterval",
    }
    1 contacts "Contacts" {
        ANNIVERSARY = 0x05 "Anniversary",
        ASSISTANT_NAME = 0x06 "AssistantName",
        ASSISTANT_PHONE_NUMBER = 0x07 "AssistantPhoneNumber",
        BIRTHDAY = 0x08 "Birthday",
        BODY = 0x09 "Body",
        BODY_SIZE = 0x0A "BodySize",
        BODY_TRUNCATED = 0x0B "BodyTruncated",
        BUSINESS2_PHONE_NUMBER = 0x0C "Business2PhoneNumber",
        BUSINESS_ADDRESS_CITY = 0x0D "BusinessAddressCity",
        BUSINESS_ADDRESS_COUNTRY = 0x0E "BusinessAddressCountry",
        BUSINESS_ADDRESS_POSTAL_CODE = 0x0F "BusinessAddressPostalCode",
        BUSINESS_ADDRESS_STATE = 0x10 "BusinessAddressState",
        BUSINESS_ADDRESS_STREET = 0x11 "BusinessAddressStreet",
        BUSINESS_FAX_NUMBER = 0x12 "BusinessFaxNumber",
        BUSINESS_PHONE_NUMBER = 0x13 "BusinessPhoneNumber",
        CAR_PHONE_NUMBER = 0x14 "CarPhoneNumber",
        CATEGORIES = 0x15 "Categories",
        CATEGORY = 0x16 "Category",
        CHILDREN = 0x17 "Children",
        CHILD = 0x18 "Child",
        COMPANY_NAME = 0x19 "CompanyName",
        DEPARTMENT = 0x1A "Department",
        EMAIL1_ADDRESS = 0x1B "Email1Address",
        EMAIL2_ADDRESS = 0x1C "Email2Address",
        EMAIL3_ADDRESS = 0x1D "Email3Address",
        FILE_AS = 0x1E "FileAs",
        FIRST_NAME = 0x1F "FirstName",
        HOME2_PHONE_NUMBER = 0x20 "Home2PhoneNumber",
        HOME_ADDRESS_CITY = 0x21 "HomeAddressCity",
        HOME_ADDRESS_COUNTRY = 0x22 "HomeAddressCountry",
        HOME_ADDRESS_POSTAL_CODE = 0x23 "HomeAddressPostalCode",
        HOME_ADDRESS_STATE = 0x24 "HomeAddressState",
        HOME_ADDRESS_STREET = 0x25 "HomeAddressStreet",
        HOME_FAX_NUMBER = 0x26 "HomeFaxNumber",
        HOME_PHONE_NUMBER = 0x27 "HomePhoneNumber",
        JOB_TITLE = 0x28 "JobTitle",
        LAST_NAME = 0x29 "LastName",
        MIDDLE_NAME = 0x2A "MiddleName",
        MOBILE_PHONE_NUMBER = 0x2B "MobilePhoneNumber",
        OFFICE_LOCATION = 0x2C "OfficeLocation",
        OTHER_ADDRESS_CITY = 0x2D "OtherAddressCity",
        OTHER_ADDRESS_COUNTRY = 0x2E "OtherAddressCountry",
        OTHER_ADDRESS_POSTAL_CODE = 0x2F "OtherAddressPostalCode",
        OTHER_ADDRESS_STATE = 0x30 "OtherAddressState",
        OTHER_ADDRESS_STREET = 0x31 "OtherAddressStreet",
        PAGER_NUMBER = 0x32 "PagerNumber",
        RADIO_PHONE_NUMBER = 0x33 "RadioPhoneNumber",
        SPOUSE = 0x34 "Spouse",
        SUFFIX = 0x35 "Suffix",
        TITLE = 0x36 "Title",
        WEB_PAGE = 0x37 "WebPage",
        YOMI_COMPANY_NAME = 0x38 "YomiCompanyName",
        YOMI_FIRST_NAME = 0x39 "YomiFirstName",
        YOMI_LAST_NAME = 0x3A "YomiLastName",
        COMPRESSED_RTF = 0x3B "CompressedRTF",
        PICTURE = 0x3C "Picture",
        ALIAS = 0x3D "Alias",
        WEIGHTED_RANK = 0x3E "WeightedRank",
    }
    2 email "Email" {
        ATTACHMENT = 0x05 "Attachment",
        ATTACHMENTS = 0x06 "Attachments",
        ATT_NAME = 0x07 "AttName",
        ATT_SIZE = 0x08 "AttSize",
        ATT0_ID = 0x09 "Att0Id",
        ATT_METHOD = 0x0A "AttMethod",
        ATT_REMOVED = 0x0B "AttRemoved",
        BODY = 0x0C "Body",
        BODY_SIZE = 0x0D "BodySize",
        BODY_TRUNCATED = 0x0E "BodyTruncated",
        DATE_RECEIVED = 0x0F "DateReceived",
        DISPLAY_NAME = 0x10 "DisplayName",
        DISPLAY_TO = 0x11 "DisplayTo",
        IMPORTANCE = 0x12 "Importance",
        MESSAGE_CLASS = 0x13 "MessageClass",
        SUBJECT = 0x14 "Subject",
        READ = 0x15 "Read",
        TO = 0x16 "To",
        CC = 0x17 "Cc",
        FROM = 0x18 "From",
        REPLY_TO = 0x19 "ReplyTo",
        ALL_DAY_EVENT = 0x1A "AllDayEvent",
        CATEGORIES = 0x1B "Categories",
        CATEGORY = 0x1C "Category",
        DT_STAMP = 0x1D "DtStamp",
        END_TIME = 0x1E "EndTime",
        INSTANCE_TYPE = 0x1F "InstanceType",
        BUSY_STATUS = 0x20 "BusyStatus",
        LOCATION = 0x21 "Location",
        MEETING_REQUEST = 0x22 "MeetingRequest",
        ORGANIZER = 0x23 "Organizer",
        RECURRENCE_ID = 0x24 "RecurrenceId",
        REMINDER = 0x25 "Reminder",
        RESPONSE_REQUESTED = 0x26 "ResponseRequested",
        RECURRENCES = 0x27 "Recurrences",
        RECURRENCE = 0x28 "Recurrence",
        TYPE = 0x29 "Type",
        UNTIL = 0x2A "Until",
        OCCURRENCES = 0x2B "Occurrences",
        INTERVAL = 0x2C "Interval",
        DAY_OF_WEEK = 0x2D "DayOfWeek",
        DAY_OF_MONTH = 0x2E "DayOfMonth",
        WEEK_OF_MONTH = 0x2F "WeekOfMonth",
        MONTH_OF_YEAR = 0x30 "MonthOfYear",
        START_TIME = 0x31 "StartTime",
        SENSITIVITY = 0x32 "Sensitivity",
        TIME_ZONE = 0x33 "TimeZone",
        GLOBAL_OBJ_ID = 0x34 "GlobalObjId",
        THREAD_TOPIC = 0x35 "ThreadTopic",
        MIME_DATA = 0x36 "MIMEData",
        MIME_TRUNCATED = 0x37 "MIMETruncated",
        MIME_SIZE = 0x38 "MIMESize",
        INTERNET_CPID = 0x39 "InternetCPID",
        FLAG = 0x3A "Flag",
        STATUS = 0x3B "Status",
        CONTENT_CLASS = 0x3C "ContentClass",
        FLAG_TYPE = 0x3D "FlagType",
        COMPLETE_TIME = 0x3E "CompleteTime",
        DISALLOW_NEW_TIME_PROPOSAL = 0x3F "DisallowNewTimeProposal",
    }
    3 airnotify "AirNotify" {
        NOTIFY = 0x05 "Notify",
        NOTIFICATION = 0x06 "Notification",
        VERSION = 0x07 "Version",
        LIFETIME = 0x08 "Lifetime",
        DEVICE_INFO = 0x09 "DeviceInfo",
        ENABLE = 0x0A "Enable",
        FOLDER = 0x0B "Folder",
        SERVER_ID = 0x0C "ServerId",
        DEVICE_ADDRESS = 0x0D "DeviceAddress",
        VALID_CARRIER_PROFILES = 0x0E "ValidCarrierProfiles",
        CARRIER_PROFILE = 0x0F "CarrierProfile",
        STATUS = 0x10 "Status",
        RESPONSES = 0x11 "Responses",
        DEVICES = 0x12 "Devices",
        DEVICE = 0x13 "Device",
        ID = 0x14 "Id",
        EXPIRY = 0x15 "Expiry",
        NOTIFY_GUID = 0x16 "NotifyGUID",
        DEVICE_FRIENDLY_NAME = 0x17 "DeviceFriendlyName",
    }
    4 calendar "Calendar" {
        TIME_ZONE = 0x05 "TimeZone",
        ALL_DAY_EVENT = 0x06 "AllDayEvent",
        ATTENDEES = 0x07 "Attendees",
        ATTENDEE = 0x08 "Attendee",
        EMAIL = 0x09 "Email",
        NAME = 0x0A "Name",
        BODY = 0x0B "Body",
        BODY_TRUNCATED = 0x0C "BodyTruncated",
        BUSY_STATUS = 0x0D "BusyStatus",
        CATEGORIES = 0x0E "Categories",
        CATEGORY = 0x0F "Category",
        COMPRESSED_RTF = 0x10 "CompressedRTF",
        DT_STAMP = 0x11 "DtStamp",
        END_TIME = 0x12 "EndTime",
        EXCEPTION = 0x13 "Exception",
        EXCEPTIONS = 0x14 "Exceptions",
        DELETED = 0x15 "Deleted",
        EXCEPTION_START_TIME = 0x16 "ExceptionStartTime",
        LOCATION = 0x17 "Location",
        MEETING_STATUS = 0x18 "MeetingStatus",
        ORGANIZER_EMAIL = 0x19 "OrganizerEmail",
        ORGANIZER_NAME = 0x1A "OrganizerName",
        RECURRENCE = 0x1B "Recurrence",
        TYPE = 0x1C "Type",
        UNTIL = 0x1D "Until",
        OCCURRENCES = 0x1E "Occurrences",
        INTERVAL = 0x1F "Interval",
        DAY_OF_WEEK = 0x20 "DayOfWeek",
        DAY_OF_MONTH = 0x21 "DayOfMonth",
        WEEK_OF_MONTH = 0x22 "WeekOfMonth",
        MONTH_OF_YEAR = 0x23 "MonthOfYear",
        REMINDER = 0x24 "Reminder",
        SENSITIVITY = 0x25 "Sensitivity",
        SUBJECT = 0x26 "Subject",
        START_TIME = 0x27 "StartTime",
        UID = 0x28 "UID",
        ATTENDEE_STATUS = 0x29 "AttendeeStatus",
        ATTENDEE_TYPE = 0x2A "AttendeeType",
        DISALLOW_NEW_TIME_PROPOSAL = 0x33 "DisallowNewTimeProposal",
        RESPONSE_REQUESTED = 0x34 "ResponseRequested",
        APPOINTMENT_REPLY_TIME = 0x35 "AppointmentReplyTime",
        RESPONSE_TYPE = 0x36 "ResponseType",
        CALENDAR_TYPE = 0x37 "CalendarType",
        IS_LEAP_MONTH = 0x38 "IsLeapMonth",
        FIRST_DAY_OF_WEEK = 0x39 "FirstDayOfWeek",
        ONLINE_MEETING_CONF_LINK = 0x3A "OnlineMeetingConfLink",
        ONLINE_MEETING_EXTERNAL_LINK = 0x3B "OnlineMeetingExternalLink",
        CLIENT_UID = 0x3C "ClientUid",
    }
    5 moveitems "Move" {
        MOVE_ITEMS = 0x05 "MoveItems",
        MOVE = 0x06 "Move",
        SRC_MSG_ID = 0x07 "SrcMsgId",
        SRC_FLD_ID = 0x08 "SrcFldId",
        DST_FLD_ID = 0x09 "DstFldId",
        RESPONSE = 0x0A "Response",
        STATUS = 0x0B "Status",
        DST_MSG_ID = 0x0C "DstMsgId",
    }
    6 getitemestimate "GetItemEstimate" {
        GET_ITEM_ESTIMATE = 0x05 "GetItemEstimate",
        VERSION = 0x06 "Version",
        COLLECTIONS = 0x07 "Collections",
        COLLECTION = 0x08 "Collection",
        CLASS = 0x09 "Class",
        COLLECTION_ID = 0x0A "CollectionId",
        DATE_TIME = 0x0B "DateTime",
        ESTIMATE = 0x0C "Estimate",
        RESPONSE = 0x0D "Response",
        STATUS = 0x0E "Status",
    }
    7 folderhierarchy "FolderHierarchy" {
        FOLDERS = 0x05 "Folders",
        FOLDER = 0x06 "Folder",
        DISPLAY_NAME = 0x07 "DisplayName",
        SERVER_ID = 0x08 "ServerId",
        PARENT_ID = 0x09 "ParentId",
        TYPE = 0x0A "Type",
        RESPONSE = 0x0B "Response",
        STATUS = 0x0C "Status",
        CONTENT_CLASS = 0x0D "ContentClass",
        CHANGES = 0x0E "Changes",
        ADD = 0x0F "Add",
        DELETE = 0x10 "Delete",
        UPDATE = 0x11 "Update",
        SYNC_KEY = 0x12 "SyncKey",
        FOLDER_CREATE = 0x13 "FolderCreate",
        FOLDER_DELETE = 0x14 "FolderDelete",
        FOLDER_UPDATE = 0x15 "FolderUpdate",
        FOLDER_SYNC = 0x16 "FolderSync",
        COUNT = 0x17 "Count",
        VERSION = 0x18 "Version",
    }
    8 meetingresponse "MeetingResponse" {
        CALENDAR_ID = 0x05 "CalendarId",
        COLLECTION_ID = 0x06 "CollectionId",
        MEETING_RESPONSE = 0x07 "MeetingResponse",
        REQUEST_ID = 0x08 "RequestId",
        REQUEST = 0x09 "Request",
        RESULT = 0x0A "Result",
        STATUS = 0x0B "Status",
        USER_RESPONSE = 0x0C "UserResponse",
        VERSION = 0x0D "Version",
        INSTANCE_ID = 0x0E "InstanceId",
        PROPOSED_START_TIME = 0x10 "ProposedStartTime",
        PROPOSED_END_TIME = 0x11 "ProposedEndTime",
        SEND_RESPONSE = 0x12 "SendResponse",
    }
    9 tasks "Tasks" {
        BODY = 0x05 "Body",
        BODY_SIZE = 0x06 "BodySize",
        BODY_TRUNCATED = 0x07 "BodyTruncated",
        CATEGORIES = 0x08 "Categories",
        CATEGORY = 0x09 "Category",
        COMPLETE = 0x0A "Complete",
        DATE_COMPLETED = 0x0B "DateCompleted",
        DUE_DATE = 0x0C "DueDate",
        UTC_DUE_DATE = 0x0D "UtcDueDate",
        IMPORTANCE = 0x0E "Importance",
        RECURRENCE = 0x0F "Recurrence",
        TYPE = 0x10 "Type",
        START = 0x11 "Start",
        UNTIL = 0x12 "Until",
        OCCURRENCES = 0x13 "Occurrences",
        INTERVAL = 0x14 "Interval",
        DAY_OF_MONTH = 0x15 "DayOfMonth",
        DAY_OF_WEEK = 0x16 "DayOfWeek",
        WEEK_OF_MONTH = 0x17 "WeekOfMonth",
        MONTH_OF_YEAR = 0x18 "MonthOfYear",
        REGENERATE = 0x19 "Regenerate",
        DEAD_OCCUR = 0x1A "DeadOccur",
        REMINDER_SET = 0x1B "ReminderSet",
        REMINDER_TIME = 0x1C "ReminderTime",
        SENSITIVITY = 0x1D "Sensitivity",
        START_DATE = 0x1E "StartDate",
        UTC_START_DATE = 0x1F "UtcStartDate",
        SUBJECT = 0x20 "Subject",
        COMPRESSED_RTF = 0x21 "CompressedRTF",
        ORDINAL_DATE = 0x22 "OrdinalDate",
        SUB_ORDINAL_DATE = 0x23 "SubOrdinalDate",
        CALENDAR_TYPE = 0x24 "CalendarType",
        IS_LEAP_MONTH = 0x25 "IsLeapMonth",
        FIRST_DAY_OF_WEEK = 0x26 "FirstDayOfWeek",
    }
    10 resolverecipients "ResolveRecipients" {
        RESOLVE_RECIPIENTS = 0x05 "ResolveRecipients",
        RESPONSE = 0x06 "Response",
        STATUS = 0x07 "Status",
        TYPE = 0x08 "Type",
        RECIPIENT = 0x09 "Recipient",
        DISPLAY_NAME = 0x0A "DisplayName",
        EMAIL_ADDRESS = 0x0B "EmailAddress",
        CERTIFICATES = 0x0C "Certificates",
        CERTIFICATE = 0x0D "Certificate",
        MINI_CERTIFICATE = 0x0E "MiniCertificate",
        OPTIONS = 0x0F "Options",
        TO = 0x10 "To",
        CERTIFICATE_RETRIEVAL = 0x11 "CertificateRetrieval",
        RECIPIENT_COUNT = 0x12 "RecipientCount",
        MAX_CERTIFICATES = 0x13 "MaxCertificates",
        MAX_AMBIGUOUS_RECIPIENTS = 0x14 "MaxAmbiguousRecipients",
        CERTIFICATE_COUNT = 0x15 "CertificateCount",
        AVAILABILITY = 0x16 "Availability",
        START_TIME = 0x17 "StartTime",
        END_TIME = 0x18 "EndTime",
        MERGED_FREE_BUSY = 0x19 "MergedFreeBusy",
        PICTURE = 0x1A "Picture",
        MAX_SIZE = 0x1B "MaxSize",
        DATA = 0x1C "Data",
        MAX_PICTURES = 0x1D "MaxPictures",
    }
    11 validatecert "ValidateCert" {
        VALIDATE_CERT = 0x05 "ValidateCert",
        CERTIFICATES = 0x06 "Certificates",
        CERTIFICATE = 0x07 "Certificate",
        CERTIFICATE_CHAIN = 0x08 "CertificateChain",
        CHECK_CRL = 0x09 "CheckCRL",
        STATUS = 0x0A "Status",
    }
    12 contacts2 "Contacts2" {
        CUSTOMER_ID = 0x05 "CustomerId",
        GOVERNMENT_ID = 0x06 "GovernmentId",
        IM_ADDRESS = 0x07 "IMAddress",
        IM_ADDRESS2 = 0x08 "IMAddress2",
        IM_ADDRESS3 = 0x09 "IMAddress3",
        MANAGER_NAME = 0x0A "ManagerName",
        COMPANY_MAIN_PHONE = 0x0B "CompanyMainPhone",
        ACCOUNT_NAME = 0x0C "AccountName",
        NICK_NAME = 0x0D "NickName",
        MMS = 0x0E "MMS",
    }
    13 ping "Ping" {
        PING = 0x05 "Ping",
        AUTD_STATE = 0x06 "AutdState",
        STATUS = 0x07 "Status",
        HEARTBEAT_INTERVAL = 0x08 "HeartbeatInterval",
        FOLDERS = 0x09 "Folders",
        FOLDER = 0x0A "Folder",
        ID = 0x0B "Id",
        CLASS = 0x0C "Class",
        MAX_FOLDERS = 0x0D "MaxFolders",
    }
    14 provision "Provision" {
        PROVISION = 0x05 "Provision",
        POLICIES = 0x06 "Policies",
        POLICY = 0x07 "Policy",
        POLICY_TYPE = 0x08 "PolicyType",
        POLICY_KEY = 0x09 "PolicyKey",
        DATA = 0x0A "Data",
        STATUS = 0x0B "Status",
        REMOTE_WIPE = 0x0C "RemoteWipe",
        EAS_PROVISION_DOC = 0x0D "EASProvisionDoc",
        DEVICE_PASSWORD_ENABLED = 0x0E "DevicePasswordEnabled",
        ALPHANUMERIC_DEVICE_PASSWORD_REQUIRED = 0x0F "AlphanumericDevicePasswordRequired",
        REQUIRE_STORAGE_CARD_ENCRYPTION = 0x10 "RequireStorageCardEncryption",
        PASSWORD_RECOVERY_ENABLED = 0x11 "PasswordRecoveryEnabled",
        ATTACHMENTS_ENABLED = 0x13 "AttachmentsEnabled",
        MIN_DEVICE_PASSWORD_LENGTH = 0x14 "MinDevicePasswordLength",
        MAX_INACTIVITY_TIME_DEVICE_LOCK = 0x15 "MaxInactivityTimeDeviceLock",
        MAX_DEVICE_PASSWORD_FAILED_ATTEMPTS = 0x16 "MaxDevicePasswordFailedAttempts",
        MAX_ATTACHMENT_SIZE = 0x17 "MaxAttachmentSize",
        ALLOW_SIMPLE_DEVICE_PASSWORD = 0x18 "AllowSimpleDevicePassword",
        DEVICE_PASSWORD_EXPIRATION = 0x19 "DevicePasswordExpiration",
        DEVICE_PASSWORD_HISTORY = 0x1A "DevicePasswordHistory",
        ALLOW_STORAGE_CARD = 0x1B "AllowStorageCard",
        ALLOW_CAMERA = 0x1C "AllowCamera",
        REQUIRE_DEVICE_ENCRYPTION = 0x1D "RequireDeviceEncryption",
        ALLOW_UNSIGNED_APPLICATIONS = 0x1E "AllowUnsignedApplications",
        ALLOW_UNSIGNED_INSTALLATION_PACKAGES = 0x1F "AllowUnsignedInstallationPackages",
        MIN_DEVICE_PASSWORD_COMPLEX_CHARACTERS = 0x20 "MinDevicePasswordComplexCharacters",
        ALLOW_WIFI = 0x21 "AllowWiFi",
        ALLOW_TEXT_MESSAGING = 0x22 "AllowTextMessaging",
        ALLOW_POPIMAP_EMAIL = 0x23 "AllowPOPIMAPEmail",
        ALLOW_BLUETOOTH = 0x24 "AllowBluetooth",
        ALLOW_IRDA = 0x25 "AllowIrDA",
        REQUIRE_MANUAL_SYNC_WHEN_ROAMING = 0x26 "RequireManualSyncWhenRoaming",
        ALLOW_DESKTOP_SYNC = 0x27 "AllowDesktopSync",
        MAX_CALENDAR_AGE_FILTER = 0x28 "MaxCalendarAgeFilter",
        ALLOW_HTML_EMAIL = 0x29 "AllowHTMLEmail",
        MAX_EMAIL_AGE_FILTER = 0x2A "MaxEmailAgeFilter",
        MAX_EMAIL_BODY_TRUNCATION_SIZE = 0x2B "MaxEmailBodyTruncationSize",
        MAX_EMAIL_HTML_BODY_TRUNCATION_SIZE = 0x2C "MaxEmailHTMLBodyTruncationSize",
        REQUIRE_SIGNED_SMIME_MESSAGES = 0x2D "RequireSignedSMIMEMessages",
        REQUIRE_ENCRYPTED_SMIME_MESSAGES = 0x2E "RequireEncryptedSMIMEMessages",
        REQUIRE_SIGNED_SMIME_ALGORITHM = 0x2F "RequireSignedSMIMEAlgorithm",
        REQUIRE_ENCRYPTION_SMIME_ALGORITHM = 0x30 "RequireEncryptionSMIMEAlgorithm",
        ALLOW_SMIME_ENCRYPTION_ALGORITHM_NEGOTIATION = 0x31 "AllowSMIMEEncryptionAlgorithmNegotiation",
        ALLOW_SMIME_SOFT_CERTS = 0x32 "AllowSMIMESoftCerts",
        ALLOW_BROWSER = 0x33 "AllowBrowser",
        ALLOW_CONSUMER_EMAIL = 0x34 "AllowConsumerEmail",
        ALLOW_REMOTE_DESKTOP = 0x35 "AllowRemoteDesktop",
        ALLOW_INTERNET_SHARING = 0x36 "AllowInternetSharing",
        UNAPPROVED_IN_ROM_APPLICATION_LIST = 0x37 "UnapprovedInROMApplicationList",
        APPLICATION_NAME = 0x38 "ApplicationName",
        APPROVED_APPLICATION_LIST = 0x39 "ApprovedApplicationList",
        HASH = 0x3A "Hash",
        ACCOUNT_ONLY_REMOTE_WIPE = 0x3B "AccountOnlyRemoteWipe",
    }
    15 search "Search" {
        SEARCH = 0x05 "Search",
        STORES = 0x06 "Stores",
        STORE = 0x07 "Store",
        NAME = 0x08 "Name",
        QUERY = 0x09 "Query",
        OPTIONS = 0x0A "Options",
        RANGE = 0x0B "Range",
        STATUS = 0x0C "Status",
        RESPONSE = 0x0D "Response",
        RESULT = 0x0E "Result",
        PROPERTIES = 0x0F "Properties",
        TOTAL = 0x10 "Total",
        EQUAL_TO = 0x11 "EqualTo",
        VALUE = 0x12 "Value",
        AND = 0x13 "And",
        OR = 0x14 "Or",
        FREE_TEXT = 0x15 "FreeText",
        SUBSTRING_OP = 0x16 "SubstringOp",
        DEEP_TRAVERSAL = 0x17 "DeepTraversal",
        LONG_ID = 0x18 "LongId",
        REBUILD_RESULTS = 0x19 "RebuildResults",
        LESS_THAN = 0x1A "LessThan",
        GREATER_THAN = 0x1B "GreaterThan",
        SCHEMA = 0x1C "Schema",
        SUPPORTED = 0x1D "Supported",
        USER_NAME = 0x1E "UserName",
        PASSWORD = 0x1F "Password",
        CONVERSATION_ID = 0x20 "ConversationId",
        PICTURE = 0x21 "Picture",
        MAX_SIZE = 0x22 "MaxSize",
        MAX_PICTURES = 0x23 "MaxPictures",
    }
    16 gal "GAL" {
        DISPLAY_NAME = 0x05 "DisplayName",
        PHONE = 0x06 "Phone",
        OFFICE = 0x07 "Office",
        TITLE = 0x08 "Title",
        COMPANY = 0x09 "Company",
        ALIAS = 0x0A "Alias",
        FIRST_NAME = 0x0B "FirstName",
        LAST_NAME = 0x0C "LastName",
        HOME_PHONE = 0x0D "HomePhone",
        MOBILE_PHONE = 0x0E "MobilePhone",
        EMAIL_ADDRESS = 0x0F "EmailAddress",
        PICTURE = 0x10 "Picture",
        STATUS = 0x11 "Status",
        DATA = 0x12 "Data",
    }
    17 airsyncbase "AirSyncBase" {
        BODY_PREFERENCE = 0x05 "BodyPreference",
        TYPE = 0x06 "Type",
        TRUNCATION_SIZE = 0x07 "TruncationSize",
        ALL_OR_NONE = 0x08 "AllOrNone",
        BODY = 0x0A "Body",
        DATA = 0x0B "Data",
        ESTIMATED_DATA_SIZE = 0x0C "EstimatedDataSize",
        TRUNCATED = 0x0D "Truncated",
        ATTACHMENTS = 0x0E "Attachments",
        ATTACHMENT = 0x0F "Attachment",
        DISPLAY_NAME = 0x10 "DisplayName",
        FILE_REFERENCE = 0x11 "FileReference",
        METHOD = 0x12 "Method",
        CONTENT_ID = 0x13 "ContentId",
        CONTENT_LOCATION = 0x14 "ContentLocation",
        IS_INLINE = 0x15 "IsInline",
        NATIVE_BODY_TYPE = 0x16 "NativeBodyType",
        CONTENT_TYPE = 0x17 "ContentType",
        PREVIEW = 0x18 "Preview",
        BODY_PART_PREFERENCE = 0x19 "BodyPartPreference",
        BODY_PART = 0x1A "BodyPart",
        STATUS = 0x1B "Status",
        ADD = 0x1C "Add",
        DELETE = 0x1D "Delete",
        CLIENT_ID = 0x1E "ClientId",
        CONTENT = 0x1F "Content",
        LOCATION = 0x20 "Location",
        ANNOTATION = 0x21 "Annotation",
        STREET = 0x22 "Street",
        CITY = 0x23 "City",
        STATE = 0x24 "State",
        COUNTRY = 0x25 "Country",
        POSTAL_CODE = 0x26 "PostalCode",
        LATITUDE = 0x27 "Latitude",
        LONGITUDE = 0x28 "Longitude",
        ACCURACY = 0x29 "Accuracy",
        ALTITUDE = 0x2A "Altitude",
        ALTITUDE_ACCURACY = 0x2B "AltitudeAccuracy",
        LOCATION_URI = 0x2C "LocationUri",
        INSTANCE_ID = 0x2D "InstanceId",
    }
    18 settings "Settings" {
        SETTINGS = 0x05 "Settings",
        STATUS = 0x06 "Status",
        GET = 0x07 "Get",
        SET = 0x08 "Set",
        OOF = 0x09 "Oof",
        OOF_STATE = 0x0A "OofState",
        START_TIME = 0x0B "StartTime",
        END_TIME = 0x0C "EndTime",
        OOF_MESSAGE = 0x0D "OofMessage",
        APPLIES_TO_INTERNAL = 0x0E "AppliesToInternal",
        APPLIES_TO_EXTERNAL_KNOWN = 0x0F "AppliesToExternalKnown",
        APPLIES_TO_EXTERNAL_UNKNOWN = 0x10 "AppliesToExternalUnknown",
        ENABLED = 0x11 "Enabled",
        REPLY_MESSAGE = 0x12 "ReplyMessage",
        BODY_TYPE = 0x13 "BodyType",
        DEVICE_PASSWORD = 0x14 "DevicePassword",
        PASSWORD = 0x15 "Password",
        DEVICE_INFORMATION = 0x16 "DeviceInformation",
        MODEL = 0x17 "Model",
        IMEI = 0x18 "IMEI",
        FRIENDLY_NAME = 0x19 "FriendlyName",
        OS = 0x1A "OS",
        OS_LANGUAGE = 0x1B "OSLanguage",
        PHONE_NUMBER = 0x1C "PhoneNumber",
        USER_INFORMATION = 0x1D "UserInformation",
        EMAIL_ADDRESSES = 0x1E "EmailAddresses",
        SMTP_ADDRESS = 0x1F "SMTPAddress",
        USER_AGENT = 0x20 "UserAgent",
        ENABLE_OUTBOUND_SMS = 0x21 "EnableOutboundSMS",
        MOBILE_OPERATOR = 0x22 "MobileOperator",
        PRIMARY_SMTP_ADDRESS = 0x23 "PrimarySmtpAddress",
        ACCOUNTS = 0x24 "Accounts",
        ACCOUNT = 0x25 "Account",
        ACCOUNT_ID = 0x26 "AccountId",
        ACCOUNT_NAME = 0x27 "AccountName",
        USER_DISPLAY_NAME = 0x28 "UserDisplayName",
        SEND_DISABLED = 0x29 "SendDisabled",
        RIGHTS_MANAGEMENT_INFORMATION = 0x2B "RightsManagementInformation",
    }
    19 documentlibrary "DocumentLibrary" {
        LINK_ID = 0x05 "LinkId",
        DISPLAY_NAME = 0x06 "DisplayName",
        IS_FOLDER = 0x07 "IsFolder",
        CREATION_DATE = 0x08 "CreationDate",
        LAST_MODIFIED_DATE = 0x09 "LastModifiedDate",
        IS_HIDDEN = 0x0A "IsHidden",
        CONTENT_LENGTH = 0x0B "ContentLength",
        CONTENT_TYPE = 0x0C "ContentType",
    }
    20 itemoperations "ItemOperations" {
        ITEM_OPERATIONS = 0x05 "ItemOperations",
        FETCH = 0x06 "Fetch",
        STORE = 0x07 "Store",
        OPTIONS = 0x08 "Options",
        RANGE = 0x09 "Range",
        TOTAL = 0x0A "Total",
        PROPERTIES = 0x0B "Properties",
        DATA = 0x0C "Data",
        STATUS = 0x0D "Status",
        RESPONSE = 0x0E "Response",
        VERSION = 0x0F "Version",
        SCHEMA = 0x10 "Schema",
        PART = 0x11 "Part",
        EMPTY_FOLDER_CONTENTS = 0x12 "EmptyFolderContents",
        DELETE_SUB_FOLDERS = 0x13 "DeleteSubFolders",
        USER_NAME = 0x14 "UserName",
        PASSWORD = 0x15 "Password",
        MOVE = 0x16 "Move",
        DST_FLD_ID = 0x17 "DstFldId",
        CONVERSATION_ID = 0x18 "ConversationId",
        MOVE_ALWAYS = 0x19 "MoveAlways",
    }
    21 composemail "ComposeMail" {
        SEND_MAIL = 0x05 "SendMail",
        SMART_FORWARD = 0x06 "SmartForward",
        SMART_REPLY = 0x07 "SmartReply",
        SAVE_IN_SENT_ITEMS = 0x08 "SaveInSentItems",
        REPLACE_MIME = 0x09 "ReplaceMime",
        TYPE = 0x0A "Type",
        SOURCE = 0x0B "Source",
        FOLDER_ID = 0x0C "FolderId",
        ITEM_ID = 0x0D "ItemId",
        LONG_ID = 0x0E "LongId",
        INSTANCE_ID = 0x0F "InstanceId",
        MIME = 0x10 "Mime",
        CLIENT_ID = 0x11 "ClientId",
        STATUS = 0x12 "Status",
        ACCOUNT_ID = 0x13 "AccountId",
        FORWARDEES = 0x15 "Forwardees",
        FORWARDEE = 0x16 "Forwardee",
        FORWARDEE_NAME = 0x17 "ForwardeeName",
        FORWARDEE_EMAIL = 0x18 "ForwardeeEmail",
    }
    22 email2 "Email2" {
        UM_CALLER_ID = 0x05 "UmCallerID",
        UM_USER_NOTES = 0x06 "UmUserNotes",
        UM_ATT_DURATION = 0x07 "UmAttDuration",
        UM_ATT_ORDER = 0x08 "UmAttOrder",
        CONVERSATION_ID = 0x09 "ConversationId",
        CONVERSATION_INDEX = 0x0A "ConversationIndex",
        LAST_VERB_EXECUTED = 0x0B "LastVerbExecuted",
        LAST_VERB_EXECUTION_TIME = 0x0C "LastVerbExecutionTime",
        RECEIVED_AS_BCC = 0x0D "ReceivedAsBcc",
        SENDER = 0x0E "Sender",
        CALENDAR_TYPE = 0x0F "CalendarType",
        IS_LEAP_MONTH = 0x10 "IsLeapMonth",
        ACCOUNT_ID = 0x11 "AccountId",
        FIRST_DAY_OF_WEEK = 0x12 "FirstDayOfWeek",
        MEETING_MESSAGE_TYPE = 0x13 "MeetingMessageType",
        IS_DRAFT = 0x15 "IsDraft",
        BCC = 0x16 "Bcc",
        SEND = 0x17 "Send",
    }
    23 notes "Notes" {
        SUBJECT = 0x05 "Subject",
        MESSAGE_CLASS = 0x06 "MessageClass",
        LAST_MODIFIED_DATE = 0x07 "LastModifiedDate",
        CATEGORIES = 0x08 "Categories",
        CATEGORY = 0x09 "Category",
    }
    24 rightsmanagement "RightsManagement" {
        RIGHTS_MANAGEMENT_SUPPORT = 0x05 "RightsManagementSupport",
        RIGHTS_MANAGEMENT_TEMPLATES = 0x06 "RightsManagementTemplates",
        RIGHTS_MANAGEMENT_TEMPLATE = 0x07 "RightsManagementTemplate",
        RIGHTS_MANAGEMENT_LICENSE = 0x08 "RightsManagementLicense",
        EDIT_ALLOWED = 0x09 "EditAllowed",
        REPLY_ALLOWED = 0x0A "ReplyAllowed",
        REPLY_ALL_ALLOWED = 0x0B "ReplyAllAllowed",
        FORWARD_ALLOWED = 0x0C "ForwardAllowed",
        MODIFY_RECIPIENTS_ALLOWED = 0x0D "ModifyRecipientsAllowed",
        EXTRACT_ALLOWED = 0x0E "ExtractAllowed",
        PRINT_ALLOWED = 0x0F "PrintAllowed",
        EXPORT_ALLOWED = 0x10 "ExportAllowed",
        PROGRAMMATIC_ACCESS_ALLOWED = 0x11 "ProgrammaticAccessAllowed",
        OWNER = 0x12 "Owner",
        CONTENT_EXPIRY_DATE = 0x13 "ContentExpiryDate",
        TEMPLATE_ID = 0x14 "TemplateID",
        TEMPLATE_NAME = 0x15 "TemplateName",
        TEMPLATE_DESCRIPTION = 0x16 "TemplateDescription",
        CONTENT_OWNER = 0x17 "ContentOwner",
        REMOVE_RIGHTS_MANAGEMENT_PROTECTION = 0x18 "RemoveRightsManagementProtection",
    }
    25 find "Find" {
        FIND = 0x05 "Find",
        SEARCH_ID = 0x06 "SearchId",
        EXECUTE_SEARCH = 0x07 "ExecuteSearch",
        MAIL_BOX_SEARCH_CRITERION = 0x08 "MailBoxSearchCriterion",
        QUERY = 0x09 "Query",
        STATUS = 0x0A "Status",
        FREE_TEXT = 0x0B "FreeText",
        OPTIONS = 0x0C "Options",
        RANGE = 0x0D "Range",
        DEEP_TRAVERSAL = 0x0E "DeepTraversal",
        RESPONSE = 0x11 "Response",
        RESULT = 0x12 "Result",
        PROPERTIES = 0x13 "Properties",
        PREVIEW = 0x14 "Preview",
        HAS_ATTACHMENTS = 0x15 "HasAttachments",
        TOTAL = 0x16 "Total",
        DISPLAY_CC = 0x17 "DisplayCc",
        DISPLAY_BCC = 0x18 "DisplayBcc",
        GAL_SEARCH_CRITERION = 0x19 "GalSearchCriterion",
        MAX_PICTURES = 0x20 "MaxPictures",
        MAX_SIZE = 0x21 "MaxSize",
        PICTURE = 0x22 "Picture",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn pages_are_numbered_by_position() {
        assert_eq!(CODE_PAGES.len(), 26);
        for (i, page) in CODE_PAGES.iter().enumerate() {
            assert_eq!(
                usize::from(page.id),
                i,
                "page {} out of place",
                page.namespace
            );
        }
    }

    #[test]
    fn tokens_and_names_are_unique_and_round_trip() {
        for page in CODE_PAGES {
            let mut tokens = HashSet::new();
            let mut names = HashSet::new();
            for &(token, name) in page.entries {
                assert!(
                    (0x05..=0x3F).contains(&token),
                    "{}:{name} token {token:#x}",
                    page.namespace
                );
                assert!(
                    tokens.insert(token),
                    "{}: duplicate token {token:#x}",
                    page.namespace
                );
                assert!(
                    names.insert(name),
                    "{}: duplicate name {name}",
                    page.namespace
                );
                assert_eq!(page.name(token), Some(name));
                assert_eq!(page.token(name), Some(token));
                let tag = Tag::new(page.id, token);
                assert_eq!(tag.name(), Some(name));
                assert_eq!(tag.page_name(), Some(page.namespace));
                assert_eq!(tag_by_name(page.id, name), Some(tag));
            }
            for token in 0..64u8 {
                if !tokens.contains(&token) {
                    assert_eq!(
                        page.name(token),
                        None,
                        "{} token {token:#x}",
                        page.namespace
                    );
                }
            }
        }
    }

    #[test]
    fn namespaces_resolve() {
        assert_eq!(code_page_by_namespace("AirSync:").map(|p| p.id), Some(0));
        assert_eq!(code_page_by_namespace("Move").map(|p| p.id), Some(5));
        assert_eq!(code_page_by_namespace("GAL").map(|p| p.id), Some(16));
        assert_eq!(code_page_by_namespace("Find:").map(|p| p.id), Some(25));
        assert!(code_page_by_namespace("Nope").is_none());
        assert!(code_page(26).is_none());
    }

    #[test]
    fn constants_match_the_spec_examples() {
        assert_eq!(tags::airsync::SYNC, Tag::new(0, 0x05));
        assert_eq!(tags::airsync::SYNC_KEY.name(), Some("SyncKey"));
        assert_eq!(tags::folderhierarchy::FOLDER_SYNC, Tag::new(7, 0x16));
        assert_eq!(tags::composemail::MIME, Tag::new(21, 0x10));
        assert_eq!(tags::find::PICTURE, Tag::new(25, 0x22));
        assert_eq!(tags::email::STATUS.name(), Some("Status"));
    }
}
