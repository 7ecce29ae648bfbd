//! [`Store`]: the closed set of backends and the one place that matches on
//! it. Each operation is one `match`; argument checks common to both
//! backends happen here once. No backend logic lives in this module.
//!
//! Cassandra's futures are boxed: the driver's are several kilobytes, and
//! unboxed they would size every caller's future for them, on the embedded
//! store too, where each request then copied them from frame to frame
//! (about a tenth of a paced no-change Sync's CPU). One allocation per
//! call is nothing beside a round trip to the cluster.

use std::time::Duration;

use crate::cassandra::CassandraStore;
use crate::embedded::EmbeddedStore;
use crate::model::validate_sent_copy_key;
use crate::schema::{MigrationOptions, MigrationReport, SchemaStatus, LATEST_SCHEMA};
use crate::{
    AppendBatch, BackendKind, Capture, DeviceChange, DeviceKey, DeviceRecord, Result, SentCopy,
    SentCopyInfo, SentCopyNote, Snapshot, StorageConfig, StorageError, StoredEvent,
};

/// The storage of opush. Cheap to clone; share one per process.
#[derive(Debug, Clone)]
pub enum Store {
    /// redb in a local directory.
    Embedded(EmbeddedStore),
    /// Apache Cassandra.
    Cassandra(CassandraStore),
}

impl Store {
    /// Opens the backend named by `config` (does not install a schema; see
    /// [`Store::schema_status`]).
    pub async fn open(config: &StorageConfig) -> Result<Store> {
        config.validate()?;
        match config.backend {
            BackendKind::Embedded => {
                let cfg = config.clone();
                let store = tokio::task::spawn_blocking(move || EmbeddedStore::open(&cfg))
                    .await
                    .map_err(|e| crate::StorageError::Backend(e.to_string()))??;
                Ok(Store::Embedded(store))
            }
            BackendKind::Cassandra => Ok(Store::Cassandra(CassandraStore::new(config)?)),
        }
    }

    /// Where the schema stands: install required, OK, update advised or required.
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        match self {
            Store::Embedded(s) => s.schema_status().await,
            Store::Cassandra(s) => Box::pin(s.schema_status()).await,
        }
    }

    /// Installs the latest schema on an empty store.
    pub async fn install_schema(&self) -> Result<()> {
        self.install_schema_version(LATEST_SCHEMA).await
    }

    /// Installs an older schema version on an empty store (used to test
    /// migrations, and to reproduce an old deployment).
    pub async fn install_schema_version(&self, version: u32) -> Result<()> {
        match self {
            Store::Embedded(s) => s.install_schema_version(version).await,
            Store::Cassandra(s) => Box::pin(s.install_schema_version(version)).await,
        }
    }

    /// Migrates to the latest schema, resuming where an interrupted run stopped.
    pub async fn update_schema(&self, opts: MigrationOptions) -> Result<MigrationReport> {
        match self {
            Store::Embedded(s) => s.update_schema(opts).await,
            Store::Cassandra(s) => Box::pin(s.update_schema(opts)).await,
        }
    }

    /// The device's head sequence (0 when it has no live events).
    pub async fn head(&self, device: &DeviceKey) -> Result<u64> {
        device.validate()?;
        match self {
            Store::Embedded(s) => s.head(device.clone()).await,
            Store::Cassandra(s) => Box::pin(s.head(device)).await,
        }
    }

    /// Appends the batch if the device head is still `batch.expected_head`;
    /// returns the new head. A concurrent writer gives `StorageError::Conflict`
    /// and nothing is written.
    pub async fn append(&self, batch: AppendBatch) -> Result<u64> {
        batch.device.validate()?;
        if batch.events.is_empty() {
            return Err(crate::StorageError::InvalidInput(
                "empty append batch".into(),
            ));
        }
        match self {
            Store::Embedded(s) => s.append(batch).await,
            Store::Cassandra(s) => Box::pin(s.append(&batch)).await,
        }
    }

    /// The device's live events with `seq >= from_seq`, in order.
    pub async fn read_events(&self, device: &DeviceKey, from_seq: u64) -> Result<Vec<StoredEvent>> {
        device.validate()?;
        match self {
            Store::Embedded(s) => s.read_events(device.clone(), from_seq).await,
            Store::Cassandra(s) => Box::pin(s.read_events(device, from_seq)).await,
        }
    }

    /// Replaces the latest snapshot of one collection of a device.
    ///
    /// A snapshot is a cache of what the device's events fold to, and the
    /// embedded store treats it as one: it is visible once this returns,
    /// but durable only at the next checkpoint (a crash before it keeps the
    /// previous snapshot, and a load folds the events after that one).
    pub async fn put_snapshot(
        &self,
        device: &DeviceKey,
        collection: &str,
        snapshot: Snapshot,
    ) -> Result<()> {
        device.validate()?;
        match self {
            Store::Embedded(s) => {
                s.put_snapshot(device.clone(), collection.to_owned(), snapshot)
                    .await
            }
            Store::Cassandra(s) => Box::pin(s.put_snapshot(device, collection, &snapshot)).await,
        }
    }

    /// The latest snapshot of one collection of a device.
    pub async fn get_snapshot(
        &self,
        device: &DeviceKey,
        collection: &str,
    ) -> Result<Option<Snapshot>> {
        device.validate()?;
        match self {
            Store::Embedded(s) => s.get_snapshot(device.clone(), collection.to_owned()).await,
            Store::Cassandra(s) => Box::pin(s.get_snapshot(device, collection)).await,
        }
    }

    /// Creates or replaces a device registry row (refreshing its TTL).
    pub async fn put_device(&self, record: DeviceRecord) -> Result<()> {
        record.key.validate()?;
        match self {
            Store::Embedded(s) => s.put_device(record).await,
            Store::Cassandra(s) => Box::pin(s.put_device(&record)).await,
        }
    }

    /// Changes a device registry row as stored when the change is written
    /// (see [`DeviceChange`]); the row afterwards (`None`: there is none, and
    /// the change created none). Concurrent changes of one row by several
    /// processes all take effect.
    pub async fn change_device(&self, change: DeviceChange) -> Result<Option<DeviceRecord>> {
        change.key.validate()?;
        if let Some(create) = &change.create {
            if create.key != change.key {
                return Err(StorageError::InvalidInput(
                    "device change: the row to create has another key".into(),
                ));
            }
        }
        match self {
            Store::Embedded(s) => s.change_device(change).await,
            Store::Cassandra(s) => Box::pin(s.change_device(&change)).await,
        }
    }

    /// One device registry row.
    pub async fn get_device(&self, key: &DeviceKey) -> Result<Option<DeviceRecord>> {
        key.validate()?;
        match self {
            Store::Embedded(s) => s.get_device(key.clone()).await,
            Store::Cassandra(s) => Box::pin(s.get_device(key)).await,
        }
    }

    /// The devices of one user.
    pub async fn list_devices(&self, user: &str) -> Result<Vec<DeviceRecord>> {
        match self {
            Store::Embedded(s) => s.list_devices(Some(user.to_owned())).await,
            Store::Cassandra(s) => Box::pin(s.list_devices(Some(user))).await,
        }
    }

    /// Every device of the server.
    pub async fn list_all_devices(&self) -> Result<Vec<DeviceRecord>> {
        match self {
            Store::Embedded(s) => s.list_devices(None).await,
            Store::Cassandra(s) => Box::pin(s.list_devices(None)).await,
        }
    }

    /// Stores a request/response body of the full-capture mode with its own TTL.
    pub async fn put_capture(
        &self,
        device: &DeviceKey,
        req_id: &str,
        kind: &str,
        bytes: Vec<u8>,
        ttl: Duration,
    ) -> Result<()> {
        device.validate()?;
        match self {
            Store::Embedded(s) => {
                s.put_capture(
                    device.clone(),
                    req_id.to_owned(),
                    kind.to_owned(),
                    bytes,
                    ttl,
                )
                .await
            }
            Store::Cassandra(s) => Box::pin(s.put_capture(device, req_id, kind, &bytes, ttl)).await,
        }
    }

    /// Every live capture of a device, ordered by request id then kind.
    pub async fn get_captures(&self, device: &DeviceKey) -> Result<Vec<Capture>> {
        device.validate()?;
        match self {
            Store::Embedded(s) => s.get_captures(device.clone()).await,
            Store::Cassandra(s) => Box::pin(s.get_captures(device)).await,
        }
    }

    /// Creates or replaces a pending Sent copy (user + Message-ID), with
    /// the `ttl_sent_copies_s` TTL counted from now. The sent-copy calls
    /// need schema v5 (`SchemaMismatch` before).
    pub async fn put_sent_copy(&self, copy: SentCopy) -> Result<()> {
        copy.validate()?;
        match self {
            Store::Embedded(s) => s.put_sent_copy(copy).await,
            Store::Cassandra(s) => Box::pin(s.put_sent_copy(&copy)).await,
        }
    }

    /// The live pending Sent copies of `user`, by Message-ID, without
    /// their messages (read by [`Store::sent_copy`] only).
    pub async fn sent_copies(&self, user: &str) -> Result<Vec<SentCopyInfo>> {
        validate_sent_copy_key(user, "-")?;
        match self {
            Store::Embedded(s) => s.sent_copies(Some(user.to_owned())).await,
            Store::Cassandra(s) => Box::pin(s.sent_copies(Some(user))).await,
        }
    }

    /// Every live pending Sent copy of the server, by user then
    /// Message-ID, without their messages.
    pub async fn all_sent_copies(&self) -> Result<Vec<SentCopyInfo>> {
        match self {
            Store::Embedded(s) => s.sent_copies(None).await,
            Store::Cassandra(s) => Box::pin(s.sent_copies(None)).await,
        }
    }

    /// One live pending Sent copy with its message (blake3-checked), or
    /// `None` when there is none (saved and deleted, or expired).
    pub async fn sent_copy(&self, user: &str, message_id: &str) -> Result<Option<SentCopy>> {
        validate_sent_copy_key(user, message_id)?;
        match self {
            Store::Embedded(s) => s.sent_copy(user.to_owned(), message_id.to_owned()).await,
            Store::Cassandra(s) => Box::pin(s.sent_copy(user, message_id)).await,
        }
    }

    /// Notes the outcome of a try of a pending Sent copy (or an
    /// administrator's "retry now"): writes `note` (its `last_try_ms`,
    /// `next_try_ms` and `last_error`; TTL unchanged) only while the copy's
    /// `last_try_ms` is still `seen` — the claim of the try being noted,
    /// so only its claimant writes it, as [`Store::claim_sent_copy_try`].
    /// `false` (nothing written) when the copy was claimed again, saved,
    /// or expired meanwhile. `InvalidInput` for an error longer than
    /// `MAX_SENT_ERROR_LEN` bytes or holding a NUL.
    pub async fn note_sent_copy_try(
        &self,
        user: &str,
        message_id: &str,
        seen: i64,
        note: SentCopyNote,
    ) -> Result<bool> {
        validate_sent_copy_key(user, message_id)?;
        crate::model::validate_sent_texts("", "", note.last_error.as_deref())?;
        match self {
            Store::Embedded(s) => {
                s.note_sent_copy_try(user.to_owned(), message_id.to_owned(), seen, note)
                    .await
            }
            Store::Cassandra(s) => {
                Box::pin(s.note_sent_copy_try(user, message_id, seen, &note)).await
            }
        }
    }

    /// Claims the next try of a pending Sent copy: sets its `tries` and
    /// `last_try_ms` (its TTL unchanged) only while its `last_try_ms` is
    /// still `seen`, the value the caller read. Of several opush processes
    /// resuming the same copy (one Cassandra behind them), one wins each
    /// try, and only it looks in Sent and APPENDs: never two copies.
    /// `false` (nothing written) when another process claimed it first, or
    /// there is no such live row (saved and deleted meanwhile, or expired).
    pub async fn claim_sent_copy_try(
        &self,
        user: &str,
        message_id: &str,
        seen: i64,
        (tries, at_ms): (u32, i64),
    ) -> Result<bool> {
        validate_sent_copy_key(user, message_id)?;
        match self {
            Store::Embedded(s) => {
                s.claim_sent_copy_try(user.to_owned(), message_id.to_owned(), seen, tries, at_ms)
                    .await
            }
            Store::Cassandra(s) => {
                Box::pin(s.claim_sent_copy_try(user, message_id, seen, (tries, at_ms))).await
            }
        }
    }

    /// Deletes a pending Sent copy (saved, found in Sent, or given up).
    /// Deleting one that is not there is not an error.
    pub async fn delete_sent_copy(&self, user: &str, message_id: &str) -> Result<()> {
        validate_sent_copy_key(user, message_id)?;
        match self {
            Store::Embedded(s) => {
                s.delete_sent_copy(user.to_owned(), message_id.to_owned())
                    .await
            }
            Store::Cassandra(s) => Box::pin(s.delete_sent_copy(user, message_id)).await,
        }
    }

    /// Whether other processes may serve the same devices from this store
    /// (Cassandra), so a request with backend effects must hold the
    /// device's lease ([`Store::take_lease`]). The embedded store is one
    /// process's: its session lock serializes a device already.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Cassandra(_))
    }

    /// Takes the device's lease for `holder` (a per-process id plus the
    /// request's) for `ttl`: `true` when taken (or already `holder`'s: a
    /// retried take), `false` (nothing written) while another holder's
    /// lease lives. On Cassandra a lightweight transaction on the
    /// `device_leases` row (`INSERT … IF NOT EXISTS USING TTL`; TTLs count
    /// whole seconds, rounded up), schema v4 (`SchemaMismatch` before); on
    /// the embedded store a map in memory (no I/O, any schema).
    pub async fn take_lease(
        &self,
        device: &DeviceKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        device.validate()?;
        validate_holder(holder)?;
        match self {
            Store::Embedded(s) => Ok(s.take_lease(device, holder, ttl)),
            Store::Cassandra(s) => Box::pin(s.take_lease(device, holder, ttl)).await,
        }
    }

    /// Extends `holder`'s live lease to `ttl` from now: `false` (nothing
    /// written) when the device has no live lease of `holder` (it expired,
    /// or another holder took it since).
    pub async fn renew_lease(
        &self,
        device: &DeviceKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        device.validate()?;
        validate_holder(holder)?;
        match self {
            Store::Embedded(s) => Ok(s.renew_lease(device, holder, ttl)),
            Store::Cassandra(s) => Box::pin(s.renew_lease(device, holder, ttl)).await,
        }
    }

    /// Ends `holder`'s lease: `true` when the device holds no lease of
    /// `holder` any more (released now, or it had expired), `false`
    /// (nothing written) while another holder's lease lives.
    pub async fn release_lease(&self, device: &DeviceKey, holder: &str) -> Result<bool> {
        device.validate()?;
        validate_holder(holder)?;
        match self {
            Store::Embedded(s) => Ok(s.release_lease(device, holder)),
            Store::Cassandra(s) => Box::pin(s.release_lease(device, holder)).await,
        }
    }

    /// Deletes expired rows now (the embedded store also does it in the
    /// background; Cassandra expires rows itself). Returns rows deleted.
    pub async fn purge_expired(&self) -> Result<u64> {
        match self {
            Store::Embedded(s) => s.purge_expired().await,
            Store::Cassandra(_) => Ok(0),
        }
    }

    /// Deletes every table of the store (the Cassandra keyspace, or the
    /// embedded file's content). For tests and decommissioning only.
    pub async fn destroy(&self) -> Result<()> {
        match self {
            Store::Embedded(s) => s.destroy().await,
            Store::Cassandra(s) => Box::pin(s.drop_keyspace()).await,
        }
    }
}

/// A lease holder: 1 to [`crate::MAX_ID_LEN`] bytes, no NUL.
fn validate_holder(holder: &str) -> Result<()> {
    if holder.is_empty() || holder.len() > crate::MAX_ID_LEN || holder.contains('\0') {
        return Err(crate::StorageError::InvalidInput(format!(
            "bad lease holder ({} bytes)",
            holder.len()
        )));
    }
    Ok(())
}
