//! EAS `Status` values (MS-ASCMD 2.2.2 and 2.2.3.177.x, MS-ASPROV 2.2.2.54),
//! one enum per command plus the common codes 101–177 every command may use.
//!
//! Exists so the server names the status it answers and clients match on
//! names. Conversion from a number is total (unknown values are kept in
//! `Other`) so decoding a response never fails on a new code. Mapping
//! internal errors to statuses is the server's job, not this module's.

macro_rules! status_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $code:expr,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
            /// A common status (MS-ASCMD 2.2.2), 101–177.
            Common(CommonStatus),
            /// Any other value, kept as received.
            Other(u16),
        }

        impl $name {
            /// The numeric value.
            pub fn code(self) -> u16 {
                match self {
                    $($name::$variant => $code,)*
                    $name::Common(c) => c.code(),
                    $name::Other(n) => n,
                }
            }

            /// The status of a numeric value (total).
            pub fn from_code(code: u16) -> Self {
                match code {
                    $($code => $name::$variant,)*
                    n => match CommonStatus::from_code(n) {
                        Some(c) => $name::Common(c),
                        None => $name::Other(n),
                    },
                }
            }
        }

        impl From<CommonStatus> for $name {
            fn from(c: CommonStatus) -> Self {
                $name::Common(c)
            }
        }
    };
}

macro_rules! common_status {
    ($($variant:ident = $code:expr,)*) => {
        /// The common status codes of MS-ASCMD 2.2.2 (usable by any command).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[allow(missing_docs, reason = "variant names are the spec's names")]
        pub enum CommonStatus {
            $($variant,)*
        }

        impl CommonStatus {
            /// Every common status.
            pub const ALL: &'static [CommonStatus] = &[$(CommonStatus::$variant,)*];

            /// The numeric value.
            pub fn code(self) -> u16 {
                match self {
                    $(CommonStatus::$variant => $code,)*
                }
            }

            /// The common status of a numeric value, if it is one.
            pub fn from_code(code: u16) -> Option<Self> {
                match code {
                    $($code => Some(CommonStatus::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

common_status! {
    InvalidContent = 101,
    InvalidWbxml = 102,
    InvalidXml = 103,
    InvalidDateTime = 104,
    InvalidCombinationOfIds = 105,
    InvalidIds = 106,
    InvalidMime = 107,
    DeviceIdMissingOrInvalid = 108,
    DeviceTypeMissingOrInvalid = 109,
    ServerError = 110,
    ServerErrorRetryLater = 111,
    ActiveDirectoryAccessDenied = 112,
    MailboxQuotaExceeded = 113,
    MailboxServerOffline = 114,
    SendQuotaExceeded = 115,
    MessageRecipientUnresolved = 116,
    MessageReplyNotAllowed = 117,
    MessagePreviouslySent = 118,
    MessageHasNoRecipient = 119,
    MailSubmissionFailed = 120,
    MessageReplyFailed = 121,
    AttachmentIsTooLarge = 122,
    UserHasNoMailbox = 123,
    UserCannotBeAnonymous = 124,
    UserPrincipalCouldNotBeFound = 125,
    UserDisabledForSync = 126,
    UserOnNewMailboxCannotSync = 127,
    UserOnLegacyMailboxCannotSync = 128,
    DeviceIsBlockedForThisUser = 129,
    AccessDenied = 130,
    AccountDisabled = 131,
    SyncStateNotFound = 132,
    SyncStateLocked = 133,
    SyncStateCorrupt = 134,
    SyncStateAlreadyExists = 135,
    SyncStateVersionInvalid = 136,
    CommandNotSupported = 137,
    VersionNotSupported = 138,
    DeviceNotFullyProvisionable = 139,
    RemoteWipeRequested = 140,
    LegacyDeviceOnStrictPolicy = 141,
    DeviceNotProvisioned = 142,
    PolicyRefresh = 143,
    InvalidPolicyKey = 144,
    ExternallyManagedDevicesNotAllowed = 145,
    NoRecurrenceInCalendar = 146,
    UnexpectedItemClass = 147,
    RemoteServerHasNoSsl = 148,
    InvalidStoredRequest = 149,
    ItemNotFound = 150,
    TooManyFolders = 151,
    NoFoldersFound = 152,
    ItemsLostAfterMove = 153,
    FailureInMoveOperation = 154,
    MoveCommandDisallowedForNonPersistentMoveAction = 155,
    MoveCommandInvalidDestinationFolder = 156,
    AvailabilityTooManyRecipients = 160,
    AvailabilityDlLimitReached = 161,
    AvailabilityTransientFailure = 162,
    AvailabilityFailure = 163,
    BodyPartPreferenceTypeNotSupported = 164,
    DeviceInformationRequired = 165,
    InvalidAccountId = 166,
    AccountSendDisabled = 167,
    IrmFeatureDisabled = 168,
    IrmTransientError = 169,
    IrmPermanentError = 170,
    IrmInvalidTemplateId = 171,
    IrmOperationNotPermitted = 172,
    NoPicture = 173,
    PictureTooLarge = 174,
    PictureLimitReached = 175,
    BodyPartConversationTooLarge = 176,
    MaximumDevicesReached = 177,
}

status_enum! {
    /// Sync Status (MS-ASCMD 2.2.3.177.17).
    SyncStatus {
        /// Success.
        Success = 1,
        /// Invalid or mismatched synchronization key: the device resyncs.
        InvalidSyncKey = 3,
        /// Protocol error (malformed request).
        ProtocolError = 4,
        /// Server error; retry.
        ServerError = 5,
        /// Error converting a client object.
        ConversionError = 6,
        /// Conflict between client and server object.
        Conflict = 7,
        /// Object not found.
        ObjectNotFound = 8,
        /// The user may be out of disk space.
        OutOfDiskSpace = 9,
        /// Folder hierarchy changed: FolderSync required.
        FolderHierarchyChanged = 12,
        /// Empty or partial Sync request without a cached one.
        IncompleteRequest = 13,
        /// Wait or HeartbeatInterval out of range (Limit gives the bound).
        InvalidWaitOrHeartbeat = 14,
        /// Too many collections.
        TooManyCollections = 15,
        /// Retry.
        Retry = 16,
    }
}

status_enum! {
    /// FolderSync Status (MS-ASCMD 2.2.3.177.5).
    FolderSyncStatus {
        /// Success.
        Success = 1,
        /// Server error.
        ServerError = 6,
        /// Synchronization key mismatch or invalid: the device starts over at 0.
        InvalidSyncKey = 9,
        /// Incorrectly formatted request.
        BadRequest = 10,
        /// Unknown error.
        UnknownError = 11,
        /// Code unknown.
        CodeUnknown = 12,
    }
}

status_enum! {
    /// FolderCreate Status (MS-ASCMD 2.2.3.177.3).
    FolderCreateStatus {
        /// Success.
        Success = 1,
        /// A folder with that name exists.
        FolderExists = 2,
        /// The parent is a special (recipient information cache) folder.
        SpecialFolder = 3,
        /// The parent folder does not exist.
        ParentNotFound = 5,
        /// Server error.
        ServerError = 6,
        /// Synchronization key mismatch or invalid.
        InvalidSyncKey = 9,
        /// Malformed request.
        BadRequest = 10,
        /// Unknown error.
        UnknownError = 11,
        /// Code unknown.
        CodeUnknown = 12,
    }
}

status_enum! {
    /// FolderDelete Status (MS-ASCMD 2.2.3.177.4).
    FolderDeleteStatus {
        /// Success.
        Success = 1,
        /// A special folder cannot be deleted.
        SpecialFolder = 3,
        /// The folder does not exist.
        FolderNotFound = 4,
        /// Server error.
        ServerError = 6,
        /// Synchronization key mismatch or invalid.
        InvalidSyncKey = 9,
        /// Malformed request.
        BadRequest = 10,
        /// Unknown error.
        UnknownError = 11,
    }
}

status_enum! {
    /// FolderUpdate Status (MS-ASCMD 2.2.3.177.6).
    FolderUpdateStatus {
        /// Success.
        Success = 1,
        /// A folder with that name exists.
        FolderExists = 2,
        /// A special folder cannot be updated.
        SpecialFolder = 3,
        /// The folder does not exist.
        FolderNotFound = 4,
        /// The parent folder does not exist.
        ParentNotFound = 5,
        /// Server error.
        ServerError = 6,
        /// Synchronization key mismatch or invalid.
        InvalidSyncKey = 9,
        /// Malformed request.
        BadRequest = 10,
        /// Unknown error.
        UnknownError = 11,
    }
}

status_enum! {
    /// GetItemEstimate Status (MS-ASCMD 2.2.3.177.7).
    GetItemEstimateStatus {
        /// Success.
        Success = 1,
        /// A collection is invalid or not found.
        InvalidCollection = 2,
        /// The sync state is not primed (no Sync with key 0 yet).
        SyncStateNotPrimed = 3,
        /// Invalid synchronization key.
        InvalidSyncKey = 4,
    }
}

status_enum! {
    /// ItemOperations Status (MS-ASCMD 2.2.3.177.8).
    ItemOperationsStatus {
        /// Success.
        Success = 1,
        /// Protocol error.
        ProtocolError = 2,
        /// Server error.
        ServerError = 3,
        /// Document library access: bad URI.
        BadUri = 4,
        /// Document library: access denied.
        AccessDenied = 5,
        /// Object not found.
        ObjectNotFound = 6,
        /// Failed to connect to the server.
        ConnectionFailed = 7,
        /// Invalid byte range.
        InvalidByteRange = 8,
        /// Unknown store.
        UnknownStore = 9,
        /// Empty file.
        EmptyFile = 10,
        /// Requested data too large.
        DataTooLarge = 11,
        /// I/O failure while downloading.
        IoFailure = 12,
        /// Item failed conversion.
        ConversionFailure = 14,
        /// Invalid attachment or attachment id.
        InvalidAttachment = 15,
        /// Access to the resource is denied.
        ResourceAccessDenied = 16,
        /// Partial success.
        PartialSuccess = 17,
        /// Credentials required.
        CredentialsRequired = 18,
    }
}

status_enum! {
    /// MeetingResponse Status (MS-ASCMD 2.2.3.177.9).
    MeetingResponseStatus {
        /// Success.
        Success = 1,
        /// Invalid meeting request.
        InvalidMeetingRequest = 2,
        /// Error in the user's mailbox.
        MailboxError = 3,
        /// Server error.
        ServerError = 4,
    }
}

status_enum! {
    /// MoveItems Status (MS-ASCMD 2.2.3.177.10).
    MoveItemsStatus {
        /// Invalid source collection id or item id.
        InvalidSource = 1,
        /// Invalid destination collection id.
        InvalidDestination = 2,
        /// Success.
        Success = 3,
        /// Source and destination are the same.
        SameSourceAndDestination = 4,
        /// A failure occurred (e.g. several destinations).
        Failure = 5,
        /// Source or destination item locked.
        Locked = 7,
    }
}

status_enum! {
    /// Ping Status (MS-ASCMD 2.2.3.177.11).
    PingStatus {
        /// The heartbeat interval expired with no change.
        HeartbeatExpired = 1,
        /// Changes occurred in the listed folders.
        ChangesOccurred = 2,
        /// Parameters missing: resend them in full.
        MissingParameters = 3,
        /// Syntax error.
        SyntaxError = 4,
        /// Heartbeat interval out of range (HeartbeatInterval gives the bound).
        InvalidHeartbeatInterval = 5,
        /// Too many folders (MaxFolders gives the bound).
        TooManyFolders = 6,
        /// Folder hierarchy sync required.
        FolderSyncRequired = 7,
        /// Server error.
        ServerError = 8,
    }
}

status_enum! {
    /// Provision Status and RemoteWipe Status (MS-ASPROV 2.2.2.54.1).
    ProvisionStatus {
        /// Success.
        Success = 1,
        /// Protocol error.
        ProtocolError = 2,
        /// General server error.
        ServerError = 3,
    }
}

status_enum! {
    /// Provision Policy Status (MS-ASPROV 2.2.2.54.2).
    PolicyStatus {
        /// Success.
        Success = 1,
        /// No policy for this client.
        NoPolicy = 2,
        /// Unknown PolicyType.
        UnknownPolicyType = 3,
        /// Policy data corrupted on the server.
        PolicyCorrupted = 4,
        /// The acknowledged policy key does not match.
        PolicyKeyMismatch = 5,
    }
}

status_enum! {
    /// ResolveRecipients Status (MS-ASCMD 2.2.3.177.12).
    ResolveRecipientsStatus {
        /// Success.
        Success = 1,
        /// The recipient is ambiguous.
        Ambiguous = 2,
        /// Ambiguous, partial list returned.
        AmbiguousPartial = 3,
        /// Not resolved.
        NotResolved = 4,
        /// Protocol error.
        ProtocolError = 5,
        /// Server error.
        ServerError = 6,
        /// No valid certificate.
        NoValidCertificate = 7,
        /// Certificate limit reached.
        CertificateLimitReached = 8,
    }
}

status_enum! {
    /// Search Status (MS-ASCMD 2.2.3.177.13).
    SearchStatus {
        /// Success.
        Success = 1,
        /// Invalid request.
        InvalidRequest = 2,
        /// Server error.
        ServerError = 3,
        /// Bad link.
        BadLink = 4,
        /// Access denied.
        AccessDenied = 5,
        /// Not found.
        NotFound = 6,
        /// Connection failed.
        ConnectionFailed = 7,
        /// Query too complex.
        TooComplex = 8,
        /// Timed out.
        TimedOut = 10,
        /// FolderSync required.
        FolderSyncRequired = 11,
        /// End of retrievable range.
        EndOfRange = 12,
        /// Access blocked.
        AccessBlocked = 13,
        /// Credentials required.
        CredentialsRequired = 14,
    }
}

status_enum! {
    /// SendMail, SmartReply, SmartForward Status (MS-ASCMD 2.2.3.177.14, .16):
    /// these commands use the common codes only.
    ComposeMailStatus {
        /// Success (never sent on the wire: a success has no body).
        Success = 1,
    }
}

status_enum! {
    /// Settings Status (MS-ASCMD 2.2.3.177.15).
    SettingsStatus {
        /// Success.
        Success = 1,
        /// Protocol error.
        ProtocolError = 2,
        /// Access denied.
        AccessDenied = 3,
        /// Server unavailable.
        ServerUnavailable = 4,
        /// Invalid arguments.
        InvalidArguments = 5,
        /// Conflicting arguments.
        ConflictingArguments = 6,
        /// Denied by policy.
        DeniedByPolicy = 7,
    }
}

status_enum! {
    /// ValidateCert Status (MS-ASCMD 2.2.3.177.18).
    ValidateCertStatus {
        /// Success.
        Success = 1,
        /// Protocol error.
        ProtocolError = 2,
        /// The signature cannot be validated.
        SignatureNotValidated = 3,
        /// Untrusted source.
        UntrustedSource = 4,
        /// The chain could not be built.
        ChainNotCreated = 5,
        /// Not valid for signing.
        NotForSigning = 6,
        /// Expired.
        Expired = 7,
        /// Time nesting invalid.
        TimeNesting = 8,
        /// Purpose invalid.
        InvalidPurpose = 9,
        /// Missing information.
        MissingInformation = 10,
        /// Wrong role.
        WrongRole = 11,
        /// Fields do not match.
        NotMatching = 12,
        /// Revoked.
        Revoked = 13,
        /// No revocation server reachable.
        RevocationServerUnreachable = 14,
        /// Revoked CA in the chain.
        ChainRevoked = 15,
        /// Revocation status unknown.
        RevocationUnknown = 16,
        /// Unknown error.
        UnknownError = 17,
    }
}

status_enum! {
    /// Find Status (MS-ASCMD 2.2.3.177.2).
    FindStatus {
        /// Success.
        Success = 1,
        /// Invalid request.
        InvalidRequest = 2,
        /// FolderSync required.
        FolderSyncRequired = 3,
        /// The requested Range does not begin with 0.
        InvalidRange = 4,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknowns_are_kept() {
        for n in 0..300u16 {
            assert_eq!(SyncStatus::from_code(n).code(), n);
            assert_eq!(PingStatus::from_code(n).code(), n);
            assert_eq!(ProvisionStatus::from_code(n).code(), n);
        }
        assert_eq!(SyncStatus::from_code(3), SyncStatus::InvalidSyncKey);
        assert_eq!(MoveItemsStatus::from_code(3), MoveItemsStatus::Success);
        assert_eq!(
            SyncStatus::from_code(142),
            SyncStatus::Common(CommonStatus::DeviceNotProvisioned)
        );
        assert_eq!(SyncStatus::from_code(99), SyncStatus::Other(99));
        assert_eq!(CommonStatus::ALL.len(), 74);
    }
}
