//! The per-device event log, snapshots, device registry, full-capture
//! bodies, pending Sent copies and device leases of opush, on an embedded store (default,
//! redb) or Apache Cassandra (scylla driver), with versioned schemas,
//! migrations and TTLs.
//!
//! Entry point: [`Store`], a closed enum over the two backends with one
//! `match` per operation (`dispatch.rs`). Writes to a device's log are an
//! [`AppendBatch`] value carrying its precondition (the device head),
//! committed in one call: a redb write transaction or a Cassandra
//! lightweight transaction. Payloads are opaque bytes plus a format version:
//! this crate must not depend on `engine` or decode what it stores.

pub mod cassandra;
mod config;
mod dispatch;
pub mod embedded;
mod error;
mod journal;
mod model;
mod redb_file;
pub mod schema;

pub use config::{BackendKind, ConsistencyLevel, Password, RetryPolicyKind, StorageConfig};
pub use dispatch::Store;
pub use error::{Result, StorageError};
pub use model::{
    cut_to, digest, validate_sent_copy_key, validate_sent_texts, AppendBatch, Capture,
    DeviceChange, DeviceKey, DeviceRecord, DeviceState, NewEvent, SentCopy, SentCopyInfo,
    SentCopyNote, Snapshot, StoredEvent, MAX_ID_LEN, MAX_MESSAGE_ID_LEN, MAX_SENT_ERROR_LEN,
    MAX_SENT_SUBJECT_LEN,
};
pub use schema::{
    MigrationOptions, MigrationReport, SchemaStatus, LATEST_SCHEMA, LEASES_SCHEMA,
    MIN_SUPPORTED_SCHEMA, SENT_COPIES_SCHEMA, SENT_COPY_INFO_SCHEMA,
};
