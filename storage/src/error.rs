//! The one error type of the storage crate. Every backend failure is mapped
//! here into a variant the server can act on (retry, conflict, admin-only
//! mode); callers must never need to look at driver or redb error types.

use thiserror::Error;

/// What went wrong in a storage operation. Clone: a group commit's one
/// failure is every caller's in that group.
#[derive(Debug, Clone, Error)]
pub enum StorageError {
    /// A conditional append found another head than the one it was built on:
    /// a concurrent writer appended first. Nothing was written.
    #[error("conflict on device {device}: expected head {expected}, found {actual}")]
    Conflict {
        /// The device (user and device id) whose log moved.
        device: String,
        /// The head sequence the batch was built on.
        expected: u64,
        /// The head sequence found in the store.
        actual: u64,
    },
    /// The store could not be reached or did not answer in time. The
    /// operation may be retried; an append that reports this either fully
    /// happened or did not happen at all.
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    /// Stored bytes failed a check (digest mismatch, bad row layout).
    #[error("corrupt data: {0}")]
    Corrupt(String),
    /// The schema is missing or at a version this code cannot use.
    #[error("schema mismatch: {0}")]
    SchemaMismatch(String),
    /// A caller passed a value the store cannot hold (e.g. a NUL in a user name).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The configuration cannot be used.
    #[error("configuration: {0}")]
    Config(String),
    /// Any other backend failure that retrying will not fix.
    #[error("storage backend: {0}")]
    Backend(String),
}

impl StorageError {
    /// True when the same operation may succeed if tried again later.
    pub fn is_retryable(&self) -> bool {
        matches!(self, StorageError::Unavailable(_))
    }
}

/// Result of a storage operation.
pub type Result<T> = std::result::Result<T, StorageError>;
