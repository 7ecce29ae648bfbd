//! The Cassandra backend (scylla driver, tested on Apache Cassandra 5.0).
//!
//! Layout: one partition per device in `events`, whose static columns
//! `head` and `head_writer` hold the device head; an append is one logged
//! batch on that partition conditioned on the head (a lightweight
//! transaction), so it is atomic and detects a concurrent writer. Every row
//! is written `USING TTL`. The session is built lazily and rebuilt when it
//! was never established; once built, the driver reconnects by itself.
//!
//! This module must not log the password, and must not decode payloads.

pub mod retry;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use scylla::client::caching_session::CachingSession;
use scylla::client::execution_profile::ExecutionProfile;
use scylla::client::session_builder::SessionBuilder;
use scylla::errors::{DbError, ExecutionError, RequestAttemptError};
use scylla::statement::batch::{Batch, BatchType};
use scylla::statement::{Consistency, SerialConsistency, Statement};
use scylla::value::CqlValue;
use tokio::sync::Mutex;

use crate::model::{digest, now_ms};
use crate::schema::{
    MigrationOptions, MigrationReport, SchemaStatus, LATEST_SCHEMA, LEASES_SCHEMA,
    MIN_SUPPORTED_SCHEMA, SENT_COPIES_SCHEMA, SENT_COPY_INFO_SCHEMA,
};
use crate::{
    AppendBatch, Capture, ConsistencyLevel, DeviceChange, DeviceKey, DeviceRecord, DeviceState,
    Result, SentCopy, SentCopyInfo, SentCopyNote, Snapshot, StorageConfig, StorageError,
    StoredEvent,
};

/// The columns schema v5 adds to `sent_copies`, and their types.
const SENT_INFO_COLUMNS: [(&str, &str); 5] = [
    ("device_id", "text"),
    ("subject", "text"),
    ("size", "bigint"),
    ("next_try_ms", "bigint"),
    ("last_error", "text"),
];

fn consistency(c: ConsistencyLevel) -> Consistency {
    match c {
        ConsistencyLevel::One => Consistency::One,
        ConsistencyLevel::Two => Consistency::Two,
        ConsistencyLevel::Three => Consistency::Three,
        ConsistencyLevel::Quorum => Consistency::Quorum,
        ConsistencyLevel::LocalQuorum => Consistency::LocalQuorum,
        ConsistencyLevel::EachQuorum => Consistency::EachQuorum,
        ConsistencyLevel::All => Consistency::All,
        ConsistencyLevel::LocalOne => Consistency::LocalOne,
    }
}

fn classify_text(text: String) -> StorageError {
    let lower = text.to_ascii_lowercase();
    if lower.contains("unconfigured table")
        || lower.contains("does not exist")
        || lower.contains("undefined column")
        || lower.contains("undefined name")
    {
        StorageError::SchemaMismatch(text)
    } else {
        StorageError::Unavailable(text)
    }
}

/// Maps a driver error to a storage error (retryable when the cluster may recover).
fn map_exec(e: ExecutionError) -> StorageError {
    match e {
        ExecutionError::LastAttemptError(RequestAttemptError::DbError(db, msg)) => match db {
            DbError::Unavailable { .. }
            | DbError::ReadTimeout { .. }
            | DbError::WriteTimeout { .. }
            | DbError::ReadFailure { .. }
            | DbError::WriteFailure { .. }
            | DbError::Overloaded
            | DbError::IsBootstrapping
            | DbError::ServerError
            | DbError::TruncateError => StorageError::Unavailable(format!("{db}: {msg}")),
            DbError::Invalid
            | DbError::ConfigError
            | DbError::AlreadyExists { .. }
            | DbError::SyntaxError => match classify_text(format!("{db}: {msg}")) {
                StorageError::Unavailable(t) => StorageError::Backend(t),
                other => other,
            },
            other => StorageError::Backend(format!("{other}: {msg}")),
        },
        ExecutionError::BadQuery(b) => StorageError::Backend(b.to_string()),
        other => classify_text(other.to_string()),
    }
}

fn map_any<E: std::fmt::Display>(e: E) -> StorageError {
    classify_text(e.to_string())
}

/// A lease's TTL in whole seconds (rounded up, at least 1).
fn lease_ttl(ttl: Duration) -> i32 {
    let secs = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
    ttl_i32(secs.max(1))
}

fn ttl_i32(secs: u64) -> i32 {
    secs.clamp(1, i32::MAX as u64) as i32
}

/// Timeout of CREATE/ALTER/DROP statements.
const DDL_TIMEOUT: Duration = Duration::from_secs(120);

static WRITER_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A value unique to one append attempt, stored beside the head so that a
/// retried LWT can tell "applied by my earlier attempt" from a real conflict.
fn writer_id() -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&std::process::id().to_le_bytes());
    h.update(&now_ms().to_le_bytes());
    h.update(&WRITER_COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    h.update(&nanos.to_le_bytes());
    h.finalize().as_bytes()[..16].to_vec()
}

struct Inner {
    cfg: StorageConfig,
    ks: String,
    session: Mutex<Option<Arc<CachingSession>>>,
    /// Cached schema version (0 = not read yet).
    version: AtomicU32,
}

/// The Cassandra store. Cheap to clone.
#[derive(Clone)]
pub struct CassandraStore {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for CassandraStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CassandraStore")
            .field("seeds", &self.inner.cfg.seeds)
            .field("keyspace", &self.inner.ks)
            .finish()
    }
}

impl CassandraStore {
    /// Prepares a store; the connection is made on first use (and retried
    /// on later calls while it cannot be made).
    pub fn new(cfg: &StorageConfig) -> Result<Self> {
        cfg.validate()?;
        Ok(CassandraStore {
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                ks: cfg.keyspace.clone(),
                session: Mutex::new(None),
                version: AtomicU32::new(0),
            }),
        })
    }

    async fn session(&self) -> Result<Arc<CachingSession>> {
        let mut guard = self.inner.session.lock().await;
        if let Some(s) = guard.as_ref() {
            return Ok(s.clone());
        }
        let cfg = &self.inner.cfg;
        let profile = ExecutionProfile::builder()
            .consistency(consistency(cfg.consistency))
            .serial_consistency(Some(SerialConsistency::Serial))
            .request_timeout(Some(Duration::from_millis(cfg.read_timeout_ms)))
            .retry_policy(Arc::new(retry::OpushRetryPolicy::new(
                cfg.retry_policy,
                cfg.max_retries,
            )))
            .build();
        let nodes: Vec<String> = cfg
            .seeds
            .iter()
            .map(|s| {
                if s.contains(':') {
                    s.clone()
                } else {
                    format!("{s}:{}", cfg.port)
                }
            })
            .collect();
        let mut builder = SessionBuilder::new()
            .known_nodes(&nodes)
            .default_execution_profile_handle(profile.into_handle())
            .connection_timeout(Duration::from_millis(
                cfg.read_timeout_ms.clamp(1000, 10_000),
            ));
        if !cfg.user.is_empty() {
            builder = builder.user(cfg.user.clone(), cfg.password.expose().to_owned());
        }
        let session = builder.build().await.map_err(|e| {
            StorageError::Unavailable(format!(
                "cannot connect to Cassandra at {}: {e}",
                nodes.join(",")
            ))
        })?;
        tracing::info!(target: "storage", seeds = ?nodes, keyspace = %self.inner.ks, "connected to Cassandra");
        let s = Arc::new(CachingSession::from(session, 256));
        *guard = Some(s.clone());
        Ok(s)
    }

    fn t(&self, table: &str) -> String {
        format!("{}.{}", self.inner.ks, table)
    }

    async fn exec(
        &self,
        cql: String,
        values: Vec<CqlValue>,
    ) -> Result<scylla::response::query_result::QueryResult> {
        let s = self.session().await?;
        let mut st = Statement::new(cql);
        st.set_is_idempotent(true);
        s.execute_unpaged(st, values).await.map_err(map_exec)
    }

    async fn ddl(&self, cql: String) -> Result<()> {
        let s = self.session().await?;
        let mut st = Statement::new(cql);
        // Schema changes wait for every node to agree: far slower than data requests.
        st.set_request_timeout(Some(DDL_TIMEOUT));
        s.get_session()
            .query_unpaged(st, ())
            .await
            .map_err(map_exec)?;
        Ok(())
    }

    async fn agree(&self) -> Result<()> {
        let s = self.session().await?;
        s.get_session()
            .await_schema_agreement()
            .await
            .map_err(map_any)?;
        Ok(())
    }

    async fn table_exists(&self, table: &str) -> Result<bool> {
        let r = self
            .exec(
                "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?".into(),
                vec![CqlValue::Text(self.inner.ks.clone()), CqlValue::Text(table.into())],
            )
            .await?;
        Ok(r.into_rows_result().map_err(map_any)?.rows_num() > 0)
    }

    async fn column_exists(&self, table: &str, column: &str) -> Result<bool> {
        let r = self
            .exec(
                "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?"
                    .into(),
                vec![
                    CqlValue::Text(self.inner.ks.clone()),
                    CqlValue::Text(table.into()),
                    CqlValue::Text(column.into()),
                ],
            )
            .await?;
        Ok(r.into_rows_result().map_err(map_any)?.rows_num() > 0)
    }

    async fn installed(&self) -> Result<Option<(u32, i64)>> {
        if !self.table_exists("meta").await? {
            return Ok(None);
        }
        let r = self
            .exec(
                format!(
                    "SELECT version, installed_at_ms FROM {} WHERE name = 'schema'",
                    self.t("meta")
                ),
                vec![],
            )
            .await?;
        let rows = r.into_rows_result().map_err(map_any)?;
        let row = rows
            .maybe_first_row::<(Option<i32>, Option<i64>)>()
            .map_err(map_any)?;
        Ok(match row {
            Some((Some(v), at)) => Some((v.max(0) as u32, at.unwrap_or(0))),
            _ => None,
        })
    }

    async fn version(&self) -> Result<u32> {
        let v = self.inner.version.load(Ordering::Acquire);
        if v != 0 {
            return Ok(v);
        }
        match self.installed().await? {
            Some((v, _)) if v <= LATEST_SCHEMA => {
                self.inner.version.store(v, Ordering::Release);
                Ok(v)
            }
            Some((v, _)) => Err(StorageError::SchemaMismatch(format!(
                "schema version {v} is newer than this code"
            ))),
            None => Err(StorageError::SchemaMismatch(format!(
                "no schema in keyspace {}: run `opush schema install`",
                self.inner.ks
            ))),
        }
    }

    /// See [`crate::Store::schema_status`].
    pub async fn schema_status(&self) -> Result<SchemaStatus> {
        Ok(SchemaStatus::classify(
            self.installed().await?,
            LATEST_SCHEMA,
            MIN_SUPPORTED_SCHEMA,
        ))
    }

    /// See [`crate::Store::install_schema_version`].
    pub async fn install_schema_version(&self, version: u32) -> Result<()> {
        if version == 0 || version > LATEST_SCHEMA {
            return Err(StorageError::InvalidInput(format!(
                "no schema version {version}"
            )));
        }
        if let Some((v, _)) = self.installed().await? {
            return Err(StorageError::SchemaMismatch(format!(
                "schema version {v} already installed"
            )));
        }
        let ks = &self.inner.ks;
        self.ddl(format!(
            "CREATE KEYSPACE IF NOT EXISTS {ks} WITH replication = {{'class': 'SimpleStrategy', 'replication_factor': {}}}",
            self.inner.cfg.replication_factor
        ))
        .await?;
        let digest_col = if version >= 2 { ", digest blob" } else { "" };
        for ddl in [
            format!(
                "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, version int, installed_at_ms bigint, \
                 progress_token bigint, progress_user text, progress_device text, progress_seq bigint)",
                self.t("meta")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (user text, device_id text, seq bigint, head bigint static, \
                 head_writer blob static, format_version smallint, payload blob{digest_col}, \
                 PRIMARY KEY ((user, device_id), seq)) WITH CLUSTERING ORDER BY (seq ASC)",
                self.t("events")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (user text, device_id text, collection text, seq bigint, \
                 format_version smallint, payload blob, PRIMARY KEY ((user, device_id), collection))",
                self.t("snapshots")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (user text, device_id text, device_type text, first_seen_ms bigint, \
                 last_seen_ms bigint, policy_key bigint, state text, info map<text, text>, \
                 PRIMARY KEY (user, device_id))",
                self.t("devices")
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {} (user text, device_id text, req_id text, kind text, at_ms bigint, \
                 digest blob, bytes blob, PRIMARY KEY ((user, device_id), req_id, kind))",
                self.t("captures")
            ),
        ] {
            self.ddl(ddl).await?;
        }
        if version >= SENT_COPIES_SCHEMA {
            self.ddl(self.sent_copies_ddl(version)).await?;
        }
        if version >= LEASES_SCHEMA {
            self.ddl(self.leases_ddl()).await?;
        }
        self.agree().await?;
        self.exec(
            format!(
                "INSERT INTO {} (name, version, installed_at_ms) VALUES ('schema', ?, ?)",
                self.t("meta")
            ),
            vec![CqlValue::Int(version as i32), CqlValue::BigInt(now_ms())],
        )
        .await?;
        self.inner.version.store(version, Ordering::Release);
        tracing::info!(target: "MIGRATION", version, keyspace = %ks, "cassandra schema installed");
        Ok(())
    }

    /// The pending Sent copies' table (schema v3): one partition per
    /// user; from v5 with [`SENT_INFO_COLUMNS`] too.
    fn sent_copies_ddl(&self, version: u32) -> String {
        let more: String = if version >= SENT_COPY_INFO_SCHEMA {
            SENT_INFO_COLUMNS
                .iter()
                .map(|(c, t)| format!("{c} {t}, "))
                .collect()
        } else {
            String::new()
        };
        format!(
            "CREATE TABLE IF NOT EXISTS {} (user text, message_id text, created_ms bigint, last_try_ms bigint, \
             tries int, digest blob, bytes blob, {more}PRIMARY KEY (user, message_id))",
            self.t("sent_copies")
        )
    }

    /// The device leases' table (schema v4): one row per device, written
    /// only with lightweight transactions, each with a TTL.
    fn leases_ddl(&self) -> String {
        format!(
            "CREATE TABLE IF NOT EXISTS {} (user text, device_id text, holder text, \
             PRIMARY KEY ((user, device_id)))",
            self.t("device_leases")
        )
    }

    /// Drops the keyspace and everything in it (tests and `schema` admin).
    pub async fn drop_keyspace(&self) -> Result<()> {
        self.ddl(format!("DROP KEYSPACE IF EXISTS {}", self.inner.ks))
            .await?;
        self.inner.version.store(0, Ordering::Release);
        Ok(())
    }

    /// See [`crate::Store::update_schema`].
    pub async fn update_schema(&self, opts: MigrationOptions) -> Result<MigrationReport> {
        let from = match self.installed().await? {
            Some((v, _)) => v,
            None => {
                return Err(StorageError::SchemaMismatch(
                    "no schema installed: run `opush schema install`".into(),
                ))
            }
        };
        if from >= LATEST_SCHEMA {
            return Ok(MigrationReport {
                from,
                to: from,
                rows: 0,
                complete: true,
            });
        }
        let mut rows = 0;
        if from < 2 {
            match self.update_v1_v2(opts).await? {
                (n, true) => rows += n,
                (n, false) => return Ok(self.interrupted(from, n)),
            }
        }
        // v2 -> v3: the pending Sent copies' table; v3 -> v4: the device
        // leases' table (no row to rewrite in either); v4 -> v5: the
        // listing columns of `sent_copies`, and the size of each copy
        // kept before.
        self.ddl(self.sent_copies_ddl(LATEST_SCHEMA)).await?;
        self.ddl(self.leases_ddl()).await?;
        self.agree().await?;
        for (column, ty) in SENT_INFO_COLUMNS {
            if !self.column_exists("sent_copies", column).await? {
                self.ddl(format!(
                    "ALTER TABLE {} ADD {column} {ty}",
                    self.t("sent_copies")
                ))
                .await?;
                self.agree().await?;
                tracing::info!(target: "MIGRATION", column, "v4->v5: column sent_copies.{column} added");
            }
        }
        rows += self.fill_sent_sizes(opts).await?;
        self.exec(
            format!(
                "UPDATE {} SET version = ?, installed_at_ms = ? WHERE name = 'schema'",
                self.t("meta")
            ),
            vec![
                CqlValue::Int(LATEST_SCHEMA as i32),
                CqlValue::BigInt(now_ms()),
            ],
        )
        .await?;
        self.inner.version.store(LATEST_SCHEMA, Ordering::Release);
        tracing::info!(
            target: "MIGRATION",
            from,
            "update complete (tables sent_copies, device_leases; sent_copies listing columns); schema version {LATEST_SCHEMA}"
        );
        Ok(MigrationReport {
            from,
            to: LATEST_SCHEMA,
            rows,
            complete: true,
        })
    }

    /// v4 -> v5: writes the `size` of every pending copy kept without one
    /// (reading its message, `opts.page_size` rows per page: copies are
    /// few, and this runs once), with the row's remaining TTL. Rerun, it
    /// skips the rows done. Returns the rows written.
    async fn fill_sent_sizes(&self, opts: MigrationOptions) -> Result<u64> {
        let mut st = Statement::new(format!(
            "SELECT user, message_id, size, TTL(digest), bytes FROM {}",
            self.t("sent_copies")
        ));
        st.set_page_size(opts.page_size.clamp(1, 100) as i32);
        let s = self.session().await?;
        let mut stream = s
            .execute_iter(st, Vec::<CqlValue>::new())
            .await
            .map_err(map_any)?
            .rows_stream::<(String, String, Option<i64>, Option<i32>, Option<Vec<u8>>)>()
            .map_err(map_any)?;
        let mut rows = 0;
        while let Some((user, message_id, size, ttl, bytes)) =
            stream.try_next().await.map_err(map_any)?
        {
            let (None, Some(ttl), Some(bytes)) = (size, ttl, bytes) else {
                continue;
            };
            if ttl <= 0 {
                continue;
            }
            self.exec(
                format!(
                    "UPDATE {} USING TTL ? SET size = ? WHERE user = ? AND message_id = ? IF EXISTS",
                    self.t("sent_copies")
                ),
                vec![
                    CqlValue::Int(ttl),
                    CqlValue::BigInt(i64::try_from(bytes.len()).unwrap_or(i64::MAX)),
                    CqlValue::Text(user),
                    CqlValue::Text(message_id),
                ],
            )
            .await?;
            rows += 1;
        }
        if rows > 0 {
            tracing::info!(target: "MIGRATION", rows, "v4->v5: sizes of pending sent copies written");
        }
        Ok(rows)
    }

    /// v1 -> v2: adds the per-event blake3 digest column and fills it,
    /// resumably (progress in `meta`). Returns the rows rewritten and
    /// whether it completed (version 2 recorded) or stopped at
    /// `opts.max_batches`.
    async fn update_v1_v2(&self, opts: MigrationOptions) -> Result<(u64, bool)> {
        // v1 -> v2: add the per-event blake3 digest column and fill it.
        if !self.column_exists("events", "digest").await? {
            self.ddl(format!("ALTER TABLE {} ADD digest blob", self.t("events")))
                .await?;
            self.agree().await?;
            tracing::info!(target: "MIGRATION", "v1->v2: column events.digest added");
        }
        self.inner.version.store(0, Ordering::Release);
        let mut progress = self.load_progress().await?;
        let batch = opts.batch_size.max(1) as usize;
        let mut rows = 0u64;
        let mut steps = 0u64;
        let mut pending: Vec<MigRow> = Vec::with_capacity(batch);

        // 1. The rest of the partition an interrupted run stopped in.
        if let Some(p) = &progress {
            let mut st = Statement::new(format!(
                "SELECT seq, payload, TTL(payload) FROM {} WHERE user = ? AND device_id = ? AND seq > ?",
                self.t("events")
            ));
            st.set_page_size(opts.page_size.max(1) as i32);
            let s = self.session().await?;
            let mut stream = s
                .execute_iter(
                    st,
                    vec![
                        CqlValue::Text(p.user.clone()),
                        CqlValue::Text(p.device.clone()),
                        CqlValue::BigInt(p.seq),
                    ],
                )
                .await
                .map_err(map_any)?
                .rows_stream::<(i64, Option<Vec<u8>>, Option<i32>)>()
                .map_err(map_any)?;
            let (token, user, device) = (p.token, p.user.clone(), p.device.clone());
            while let Some((seq, payload, ttl)) = stream.try_next().await.map_err(map_any)? {
                pending.push(MigRow {
                    token,
                    user: user.clone(),
                    device: device.clone(),
                    seq,
                    payload,
                    ttl,
                });
                if pending.len() >= batch {
                    if opts.max_batches.is_some_and(|m| steps >= m) {
                        return Ok((rows, false));
                    }
                    rows += self.flush(&mut pending, &mut progress).await?;
                    steps += 1;
                    tracing::info!(target: "MIGRATION", step = steps, rows, "v1->v2 progress");
                }
            }
        }
        // 2. Every partition after it, in token order.
        let start = progress.as_ref().map(|p| p.token);
        let (cql, values) = match start {
            Some(t) => (
                format!(
                    "SELECT token(user, device_id), user, device_id, seq, payload, TTL(payload) FROM {} \
                     WHERE token(user, device_id) > ?",
                    self.t("events")
                ),
                vec![CqlValue::BigInt(t)],
            ),
            None => (
                format!(
                    "SELECT token(user, device_id), user, device_id, seq, payload, TTL(payload) FROM {}",
                    self.t("events")
                ),
                vec![],
            ),
        };
        let mut st = Statement::new(cql);
        st.set_page_size(opts.page_size.max(1) as i32);
        let s = self.session().await?;
        let mut stream = s
            .execute_iter(st, values)
            .await
            .map_err(map_any)?
            .rows_stream::<(
                i64,
                String,
                String,
                Option<i64>,
                Option<Vec<u8>>,
                Option<i32>,
            )>()
            .map_err(map_any)?;
        while let Some((token, user, device, seq, payload, ttl)) =
            stream.try_next().await.map_err(map_any)?
        {
            let Some(seq) = seq else { continue }; // a partition holding only the static head
            if pending.len() >= batch {
                if opts.max_batches.is_some_and(|m| steps >= m) {
                    return Ok((rows, false));
                }
                rows += self.flush(&mut pending, &mut progress).await?;
                steps += 1;
                tracing::info!(target: "MIGRATION", step = steps, rows, "v1->v2 progress");
            }
            pending.push(MigRow {
                token,
                user,
                device,
                seq,
                payload,
                ttl,
            });
        }
        if !pending.is_empty() {
            if opts.max_batches.is_some_and(|m| steps >= m) {
                return Ok((rows, false));
            }
            rows += self.flush(&mut pending, &mut progress).await?;
            steps += 1;
            tracing::info!(target: "MIGRATION", step = steps, rows, "v1->v2 progress");
        }
        self.exec(
            format!(
                "INSERT INTO {} (name, version, installed_at_ms, progress_token, progress_user, progress_device, \
                 progress_seq) VALUES ('schema', ?, ?, null, null, null, null)",
                self.t("meta")
            ),
            vec![CqlValue::Int(2), CqlValue::BigInt(now_ms())],
        )
        .await?;
        self.inner.version.store(2, Ordering::Release);
        tracing::info!(target: "MIGRATION", rows, "v1->v2 complete; schema version 2");
        Ok((rows, true))
    }

    fn interrupted(&self, from: u32, rows: u64) -> MigrationReport {
        tracing::info!(target: "MIGRATION", rows, "v1->v2 interrupted; run update again to resume");
        MigrationReport {
            from,
            to: from,
            rows,
            complete: false,
        }
    }

    async fn load_progress(&self) -> Result<Option<Progress>> {
        let r = self
            .exec(
                format!(
                    "SELECT progress_token, progress_user, progress_device, progress_seq FROM {} WHERE name = 'schema'",
                    self.t("meta")
                ),
                vec![],
            )
            .await?;
        let rows = r.into_rows_result().map_err(map_any)?;
        let row = rows
            .maybe_first_row::<(Option<i64>, Option<String>, Option<String>, Option<i64>)>()
            .map_err(map_any)?;
        Ok(match row {
            Some((Some(token), Some(user), Some(device), Some(seq))) => Some(Progress {
                token,
                user,
                device,
                seq,
            }),
            _ => None,
        })
    }

    /// Writes the digests of `pending`, then records the last row as progress.
    async fn flush(
        &self,
        pending: &mut Vec<MigRow>,
        progress: &mut Option<Progress>,
    ) -> Result<u64> {
        let cql = format!(
            "UPDATE {} USING TTL ? SET digest = ? WHERE user = ? AND device_id = ? AND seq = ?",
            self.t("events")
        );
        let futs = pending.iter().map(|r| {
            let ttl = r
                .ttl
                .filter(|t| *t > 0)
                .unwrap_or_else(|| ttl_i32(self.inner.cfg.ttl_events_s));
            let d = digest(r.payload.as_deref().unwrap_or_default()).to_vec();
            self.exec(
                cql.clone(),
                vec![
                    CqlValue::Int(ttl),
                    CqlValue::Blob(d),
                    CqlValue::Text(r.user.clone()),
                    CqlValue::Text(r.device.clone()),
                    CqlValue::BigInt(r.seq),
                ],
            )
        });
        futures::future::try_join_all(futs).await?;
        let n = pending.len() as u64;
        if let Some(last) = pending.last() {
            self.exec(
                format!(
                    "UPDATE {} SET progress_token = ?, progress_user = ?, progress_device = ?, progress_seq = ? \
                     WHERE name = 'schema'",
                    self.t("meta")
                ),
                vec![
                    CqlValue::BigInt(last.token),
                    CqlValue::Text(last.user.clone()),
                    CqlValue::Text(last.device.clone()),
                    CqlValue::BigInt(last.seq),
                ],
            )
            .await?;
            *progress = Some(Progress {
                token: last.token,
                user: last.user.clone(),
                device: last.device.clone(),
                seq: last.seq,
            });
        }
        pending.clear();
        Ok(n)
    }

    fn key_values(device: &DeviceKey) -> Vec<CqlValue> {
        vec![
            CqlValue::Text(device.user.clone()),
            CqlValue::Text(device.device_id.clone()),
        ]
    }

    /// See [`crate::Store::head`].
    pub async fn head(&self, device: &DeviceKey) -> Result<u64> {
        self.version().await?;
        let r = self
            .exec(
                format!(
                    "SELECT head FROM {} WHERE user = ? AND device_id = ? LIMIT 1",
                    self.t("events")
                ),
                Self::key_values(device),
            )
            .await?;
        let rows = r.into_rows_result().map_err(map_any)?;
        let head = rows
            .maybe_first_row::<(Option<i64>,)>()
            .map_err(map_any)?
            .and_then(|(h,)| h);
        Ok(head.unwrap_or(0).max(0) as u64)
    }

    /// See [`crate::Store::append`].
    pub async fn append(&self, batch: &AppendBatch) -> Result<u64> {
        let version = self.version().await?;
        let ttl = ttl_i32(self.inner.cfg.ttl_events_s);
        let writer = writer_id();
        let mut b = Batch::new(BatchType::Logged);
        let mut values: Vec<Vec<CqlValue>> = Vec::with_capacity(batch.events.len() + 1);
        let cond = if batch.expected_head == 0 {
            "IF head = null"
        } else {
            "IF head = ?"
        };
        b.append_statement(
            format!(
                "UPDATE {} USING TTL ? SET head = ?, head_writer = ? WHERE user = ? AND device_id = ? {cond}",
                self.t("events")
            )
            .as_str(),
        );
        let mut v = vec![
            CqlValue::Int(ttl),
            CqlValue::BigInt(batch.new_head() as i64),
            CqlValue::Blob(writer.clone()),
            CqlValue::Text(batch.device.user.clone()),
            CqlValue::Text(batch.device.device_id.clone()),
        ];
        if batch.expected_head != 0 {
            v.push(CqlValue::BigInt(batch.expected_head as i64));
        }
        values.push(v);
        let insert = if version >= 2 {
            format!(
                "INSERT INTO {} (user, device_id, seq, format_version, payload, digest) VALUES (?, ?, ?, ?, ?, ?) \
                 USING TTL ?",
                self.t("events")
            )
        } else {
            format!(
                "INSERT INTO {} (user, device_id, seq, format_version, payload) VALUES (?, ?, ?, ?, ?) USING TTL ?",
                self.t("events")
            )
        };
        for (i, ev) in batch.events.iter().enumerate() {
            b.append_statement(insert.as_str());
            let mut v = vec![
                CqlValue::Text(batch.device.user.clone()),
                CqlValue::Text(batch.device.device_id.clone()),
                CqlValue::BigInt((batch.expected_head + 1 + i as u64) as i64),
                CqlValue::SmallInt(ev.format_version as i16),
                CqlValue::Blob(ev.payload.clone()),
            ];
            if version >= 2 {
                v.push(CqlValue::Blob(digest(&ev.payload).to_vec()));
            }
            v.push(CqlValue::Int(ttl));
            values.push(v);
        }
        // The writer id makes a retried attempt recognise its own success.
        b.set_is_idempotent(true);
        let s = self.session().await?;
        let res = s.batch(&b, values).await.map_err(map_exec)?;
        let rows = res.into_rows_result().map_err(map_any)?;
        let specs = rows.column_specs();
        let i_head = specs.get_by_name("head").map(|(i, _)| i);
        let i_writer = specs.get_by_name("head_writer").map(|(i, _)| i);
        let row = rows.first_row::<scylla::value::Row>().map_err(map_any)?;
        let applied = matches!(row.columns.first(), Some(Some(CqlValue::Boolean(true))));
        if applied {
            return Ok(batch.new_head());
        }
        let col = |i: Option<usize>| i.and_then(|i| row.columns.get(i).cloned().flatten());
        let actual = match col(i_head) {
            Some(CqlValue::BigInt(h)) => h.max(0) as u64,
            _ => 0,
        };
        if let Some(CqlValue::Blob(w)) = col(i_writer) {
            if w == writer && actual == batch.new_head() {
                return Ok(batch.new_head());
            }
        }
        Err(StorageError::Conflict {
            device: batch.device.to_string(),
            expected: batch.expected_head,
            actual,
        })
    }

    /// See [`crate::Store::read_events`].
    pub async fn read_events(&self, device: &DeviceKey, from_seq: u64) -> Result<Vec<StoredEvent>> {
        let version = self.version().await?;
        let cols = if version >= 2 {
            "seq, format_version, payload, digest"
        } else {
            "seq, format_version, payload"
        };
        let mut st = Statement::new(format!(
            "SELECT {cols} FROM {} WHERE user = ? AND device_id = ? AND seq >= ?",
            self.t("events")
        ));
        st.set_page_size(5000);
        let mut values = Self::key_values(device);
        values.push(CqlValue::BigInt(from_seq.min(i64::MAX as u64) as i64));
        let s = self.session().await?;
        let pager = s.execute_iter(st, values).await.map_err(map_any)?;
        let mut out = Vec::new();
        if version >= 2 {
            let mut stream = pager
                .rows_stream::<(Option<i64>, Option<i16>, Option<Vec<u8>>, Option<Vec<u8>>)>()
                .map_err(map_any)?;
            while let Some((seq, fmt, payload, dig)) = stream.try_next().await.map_err(map_any)? {
                let Some(seq) = seq else { continue };
                let payload = payload.unwrap_or_default();
                let dig = match dig {
                    Some(d) => {
                        let d: [u8; 32] = d.as_slice().try_into().map_err(|_| {
                            StorageError::Corrupt(format!("event {seq}: bad digest length"))
                        })?;
                        if digest(&payload) != d {
                            return Err(StorageError::Corrupt(format!(
                                "event {seq}: digest mismatch"
                            )));
                        }
                        Some(d)
                    }
                    None => None,
                };
                out.push(StoredEvent {
                    seq: seq as u64,
                    format_version: fmt.unwrap_or(0) as u16,
                    digest: dig,
                    payload,
                });
            }
        } else {
            let mut stream = pager
                .rows_stream::<(Option<i64>, Option<i16>, Option<Vec<u8>>)>()
                .map_err(map_any)?;
            while let Some((seq, fmt, payload)) = stream.try_next().await.map_err(map_any)? {
                let Some(seq) = seq else { continue };
                out.push(StoredEvent {
                    seq: seq as u64,
                    format_version: fmt.unwrap_or(0) as u16,
                    digest: None,
                    payload: payload.unwrap_or_default(),
                });
            }
        }
        Ok(out)
    }

    /// See [`crate::Store::put_snapshot`].
    pub async fn put_snapshot(
        &self,
        device: &DeviceKey,
        collection: &str,
        snap: &Snapshot,
    ) -> Result<()> {
        self.version().await?;
        let mut v = Self::key_values(device);
        v.extend([
            CqlValue::Text(collection.to_owned()),
            CqlValue::BigInt(snap.seq as i64),
            CqlValue::SmallInt(snap.format_version as i16),
            CqlValue::Blob(snap.payload.clone()),
            CqlValue::Int(ttl_i32(self.inner.cfg.ttl_snapshots_s)),
        ]);
        self.exec(
            format!(
                "INSERT INTO {} (user, device_id, collection, seq, format_version, payload) VALUES (?, ?, ?, ?, ?, ?) \
                 USING TTL ?",
                self.t("snapshots")
            ),
            v,
        )
        .await?;
        Ok(())
    }

    /// See [`crate::Store::get_snapshot`].
    pub async fn get_snapshot(
        &self,
        device: &DeviceKey,
        collection: &str,
    ) -> Result<Option<Snapshot>> {
        self.version().await?;
        let mut v = Self::key_values(device);
        v.push(CqlValue::Text(collection.to_owned()));
        let r = self
            .exec(
                format!(
                    "SELECT seq, format_version, payload FROM {} WHERE user = ? AND device_id = ? AND collection = ?",
                    self.t("snapshots")
                ),
                v,
            )
            .await?;
        let rows = r.into_rows_result().map_err(map_any)?;
        let row = rows
            .maybe_first_row::<(Option<i64>, Option<i16>, Option<Vec<u8>>)>()
            .map_err(map_any)?;
        Ok(row.map(|(seq, fmt, payload)| Snapshot {
            seq: seq.unwrap_or(0).max(0) as u64,
            format_version: fmt.unwrap_or(0) as u16,
            payload: payload.unwrap_or_default(),
        }))
    }

    /// See [`crate::Store::put_device`].
    pub async fn put_device(&self, rec: &DeviceRecord) -> Result<()> {
        self.version().await?;
        let mut v = Self::key_values(&rec.key);
        v.extend(Self::device_values(rec));
        v.push(CqlValue::Int(ttl_i32(self.inner.cfg.ttl_devices_s)));
        self.exec(
            format!(
                "INSERT INTO {} (user, device_id, device_type, first_seen_ms, last_seen_ms, policy_key, state, info) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
                self.t("devices")
            ),
            v,
        )
        .await?;
        Ok(())
    }

    /// See [`crate::Store::change_device`]: the row is read, changed, and
    /// written back with a lightweight transaction (Paxos, at the session's
    /// serial consistency) only if every column is still as read (`IF NOT
    /// EXISTS` for a new row); a lost race reads again. The whole row is
    /// written, so its TTL is refreshed like [`Self::put_device`]'s.
    pub async fn change_device(&self, change: &DeviceChange) -> Result<Option<DeviceRecord>> {
        self.version().await?;
        for _ in 0..DEVICE_CHANGE_TRIES {
            let r = self
                .exec(
                    format!(
                        "SELECT {DEVICE_COLS} FROM {} WHERE user = ? AND device_id = ?",
                        self.t("devices")
                    ),
                    Self::key_values(&change.key),
                )
                .await?;
            let rows = r.into_rows_result().map_err(map_any)?;
            let raw = rows.maybe_first_row::<DeviceRow>().map_err(map_any)?;
            let current = raw.clone().map(Self::device_from_row).transpose()?;
            let Some(new) = change.apply(current.clone()) else {
                return Ok(None);
            };
            if current.as_ref() == Some(&new) {
                // Nothing to change (a retried change that was applied
                // finds its own row here).
                return Ok(Some(new));
            }
            let mut v = Self::key_values(&change.key);
            let cols = Self::device_values(&new);
            let r = match raw {
                None => {
                    v.extend(cols);
                    v.push(CqlValue::Int(ttl_i32(self.inner.cfg.ttl_devices_s)));
                    self.exec(
                        format!(
                            "INSERT INTO {} ({DEVICE_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
                             IF NOT EXISTS USING TTL ?",
                            self.t("devices")
                        ),
                        v,
                    )
                    .await?
                }
                Some((_, _, device_type, first, last, policy, state, info)) => {
                    let mut values = vec![CqlValue::Int(ttl_i32(self.inner.cfg.ttl_devices_s))];
                    values.extend(cols);
                    values.extend(v);
                    // Each column as read: `= null` where it had no value.
                    let mut conds = Vec::with_capacity(6);
                    let mut cond = |name: &str, value: Option<CqlValue>| match value {
                        Some(value) => {
                            conds.push(format!("{name} = ?"));
                            values.push(value);
                        }
                        None => conds.push(format!("{name} = null")),
                    };
                    cond("device_type", device_type.map(CqlValue::Text));
                    cond("first_seen_ms", first.map(CqlValue::BigInt));
                    cond("last_seen_ms", last.map(CqlValue::BigInt));
                    cond("policy_key", policy.map(CqlValue::BigInt));
                    cond("state", state.map(CqlValue::Text));
                    cond("info", info.map(|m| Self::info_value(&m)));
                    self.exec(
                        format!(
                            "UPDATE {} USING TTL ? SET device_type = ?, first_seen_ms = ?, \
                             last_seen_ms = ?, policy_key = ?, state = ?, info = ? \
                             WHERE user = ? AND device_id = ? IF {}",
                            self.t("devices"),
                            conds.join(" AND ")
                        ),
                        values,
                    )
                    .await?
                }
            };
            let rows = r.into_rows_result().map_err(map_any)?;
            let row = rows.first_row::<scylla::value::Row>().map_err(map_any)?;
            if let [Some(CqlValue::Boolean(true)), ..] = row.columns.as_slice() {
                return Ok(Some(new));
            }
        }
        Err(StorageError::Unavailable(format!(
            "device row of {} kept changing under {DEVICE_CHANGE_TRIES} tries",
            change.key
        )))
    }

    /// The stored form of a device's information.
    fn info_value(info: &BTreeMap<String, String>) -> CqlValue {
        CqlValue::Map(
            info.iter()
                .map(|(k, v)| (CqlValue::Text(k.clone()), CqlValue::Text(v.clone())))
                .collect(),
        )
    }

    /// A row's columns after its key, in [`DEVICE_COLS`] order.
    fn device_values(rec: &DeviceRecord) -> Vec<CqlValue> {
        vec![
            CqlValue::Text(rec.device_type.clone()),
            CqlValue::BigInt(rec.first_seen_ms),
            CqlValue::BigInt(rec.last_seen_ms),
            // -1 = not provisioned yet (policy keys are u32).
            CqlValue::BigInt(rec.policy_key.map_or(-1, i64::from)),
            CqlValue::Text(rec.state.as_str().to_owned()),
            Self::info_value(&rec.info),
        ]
    }

    fn device_from_row(row: DeviceRow) -> Result<DeviceRecord> {
        let (user, device_id, device_type, first, last, policy, state, info) = row;
        Ok(DeviceRecord {
            key: DeviceKey { user, device_id },
            device_type: device_type.unwrap_or_default(),
            first_seen_ms: first.unwrap_or(0),
            last_seen_ms: last.unwrap_or(0),
            policy_key: policy.filter(|p| *p >= 0).map(|p| p as u32),
            state: DeviceState::parse(state.as_deref().unwrap_or("allowed"))?,
            info: info.unwrap_or_default(),
        })
    }

    /// See [`crate::Store::get_device`].
    pub async fn get_device(&self, key: &DeviceKey) -> Result<Option<DeviceRecord>> {
        self.version().await?;
        let r = self
            .exec(
                format!(
                    "SELECT {DEVICE_COLS} FROM {} WHERE user = ? AND device_id = ?",
                    self.t("devices")
                ),
                Self::key_values(key),
            )
            .await?;
        let rows = r.into_rows_result().map_err(map_any)?;
        rows.maybe_first_row::<DeviceRow>()
            .map_err(map_any)?
            .map(Self::device_from_row)
            .transpose()
    }

    /// See [`crate::Store::list_devices`] (all devices when `user` is `None`).
    pub async fn list_devices(&self, user: Option<&str>) -> Result<Vec<DeviceRecord>> {
        self.version().await?;
        let (cql, values) = match user {
            Some(u) => (
                format!(
                    "SELECT {DEVICE_COLS} FROM {} WHERE user = ?",
                    self.t("devices")
                ),
                vec![CqlValue::Text(u.to_owned())],
            ),
            None => (
                format!("SELECT {DEVICE_COLS} FROM {}", self.t("devices")),
                vec![],
            ),
        };
        let s = self.session().await?;
        let mut st = Statement::new(cql);
        st.set_page_size(1000);
        let mut stream = s
            .execute_iter(st, values)
            .await
            .map_err(map_any)?
            .rows_stream::<DeviceRow>()
            .map_err(map_any)?;
        let mut out = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(map_any)? {
            out.push(Self::device_from_row(row)?);
        }
        Ok(out)
    }

    /// See [`crate::Store::put_capture`].
    pub async fn put_capture(
        &self,
        device: &DeviceKey,
        req_id: &str,
        kind: &str,
        bytes: &[u8],
        ttl: Duration,
    ) -> Result<()> {
        self.version().await?;
        let mut v = Self::key_values(device);
        v.extend([
            CqlValue::Text(req_id.to_owned()),
            CqlValue::Text(kind.to_owned()),
            CqlValue::BigInt(now_ms()),
            CqlValue::Blob(digest(bytes).to_vec()),
            CqlValue::Blob(bytes.to_vec()),
            CqlValue::Int(ttl_i32(ttl.as_secs())),
        ]);
        self.exec(
            format!(
                "INSERT INTO {} (user, device_id, req_id, kind, at_ms, digest, bytes) VALUES (?, ?, ?, ?, ?, ?, ?) \
                 USING TTL ?",
                self.t("captures")
            ),
            v,
        )
        .await?;
        Ok(())
    }

    /// See [`crate::Store::get_captures`].
    pub async fn get_captures(&self, device: &DeviceKey) -> Result<Vec<Capture>> {
        self.version().await?;
        let s = self.session().await?;
        let st = Statement::new(format!(
            "SELECT req_id, kind, at_ms, digest, bytes FROM {} WHERE user = ? AND device_id = ?",
            self.t("captures")
        ));
        let mut stream = s
            .execute_iter(st, Self::key_values(device))
            .await
            .map_err(map_any)?
            .rows_stream::<(
                String,
                String,
                Option<i64>,
                Option<Vec<u8>>,
                Option<Vec<u8>>,
            )>()
            .map_err(map_any)?;
        let mut out = Vec::new();
        while let Some((req_id, kind, at, dig, bytes)) = stream.try_next().await.map_err(map_any)? {
            let bytes = bytes.unwrap_or_default();
            let dig: [u8; 32] = dig
                .as_deref()
                .and_then(|d| d.try_into().ok())
                .ok_or_else(|| StorageError::Corrupt("capture without digest".into()))?;
            if digest(&bytes) != dig {
                return Err(StorageError::Corrupt(format!(
                    "capture {req_id}/{kind}: digest mismatch"
                )));
            }
            out.push(Capture {
                req_id,
                kind,
                at_ms: at.unwrap_or(0),
                digest: dig,
                bytes,
            });
        }
        Ok(out)
    }
}

impl CassandraStore {
    /// The schema version, which must have the `sent_copies` table with
    /// its v5 columns. A cached older version is read again first: another
    /// process may have run `opush schema update` since.
    async fn require_sent_copies(&self) -> Result<()> {
        let mut version = self.version().await?;
        if version < SENT_COPY_INFO_SCHEMA {
            self.inner.version.store(0, Ordering::Release);
            version = self.version().await?;
        }
        if version < SENT_COPY_INFO_SCHEMA {
            return Err(StorageError::SchemaMismatch(format!(
                "pending Sent copies need schema version {SENT_COPY_INFO_SCHEMA} (keyspace {} has {version}): \
                 run `opush schema update`",
                self.inner.ks
            )));
        }
        Ok(())
    }

    /// See [`crate::Store::put_sent_copy`].
    pub async fn put_sent_copy(&self, copy: &SentCopy) -> Result<()> {
        self.require_sent_copies().await?;
        self.exec(
            format!(
                "INSERT INTO {} (user, message_id, created_ms, last_try_ms, tries, digest, bytes, \
                 device_id, subject, size, next_try_ms, last_error) \
                 VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) USING TTL ?",
                self.t("sent_copies")
            ),
            vec![
                CqlValue::Text(copy.user.clone()),
                CqlValue::Text(copy.message_id.clone()),
                CqlValue::BigInt(copy.created_ms),
                CqlValue::BigInt(copy.last_try_ms),
                CqlValue::Int(i32::try_from(copy.tries).unwrap_or(i32::MAX)),
                CqlValue::Blob(digest(&copy.bytes).to_vec()),
                CqlValue::Blob(copy.bytes.clone()),
                CqlValue::Text(copy.device_id.clone()),
                CqlValue::Text(copy.subject.clone()),
                CqlValue::BigInt(i64::try_from(copy.bytes.len()).unwrap_or(i64::MAX)),
                CqlValue::BigInt(copy.next_try_ms),
                CqlValue::Text(copy.last_error.clone().unwrap_or_default()),
                CqlValue::Int(ttl_i32(self.inner.cfg.ttl_sent_copies_s)),
            ],
        )
        .await?;
        Ok(())
    }

    /// See [`crate::Store::sent_copies`] (every user's when `None`): the
    /// rows' columns but the message (a row without a digest — what an
    /// update of a row deleted meanwhile would leave — is no copy).
    pub async fn sent_copies(&self, user: Option<&str>) -> Result<Vec<SentCopyInfo>> {
        self.require_sent_copies().await?;
        let cols = "user, message_id, created_ms, last_try_ms, tries, digest, device_id, subject, \
                    size, next_try_ms, last_error";
        let (cql, values) = match user {
            Some(u) => (
                format!(
                    "SELECT {cols} FROM {} WHERE user = ?",
                    self.t("sent_copies")
                ),
                vec![CqlValue::Text(u.to_owned())],
            ),
            None => (
                format!("SELECT {cols} FROM {}", self.t("sent_copies")),
                vec![],
            ),
        };
        let s = self.session().await?;
        let mut st = Statement::new(cql);
        st.set_page_size(1000);
        let mut stream = s
            .execute_iter(st, values)
            .await
            .map_err(map_any)?
            .rows_stream::<SentInfoRow>()
            .map_err(map_any)?;
        let mut out = Vec::new();
        while let Some(row) = stream.try_next().await.map_err(map_any)? {
            if let Some(info) = sent_info(row) {
                out.push(info);
            }
        }
        Ok(out)
    }

    /// See [`crate::Store::sent_copy`].
    pub async fn sent_copy(&self, user: &str, message_id: &str) -> Result<Option<SentCopy>> {
        self.require_sent_copies().await?;
        let r = self
            .exec(
                format!(
                    "SELECT user, message_id, created_ms, last_try_ms, tries, digest, device_id, subject, \
                     size, next_try_ms, last_error, bytes FROM {} WHERE user = ? AND message_id = ?",
                    self.t("sent_copies")
                ),
                vec![
                    CqlValue::Text(user.to_owned()),
                    CqlValue::Text(message_id.to_owned()),
                ],
            )
            .await?;
        let rows = r.into_rows_result().map_err(map_any)?;
        let Some((a, b, c, d, e, dig, f, g, h, i, j, bytes)) = rows
            .maybe_first_row::<(
                String,
                String,
                Option<i64>,
                Option<i64>,
                Option<i32>,
                Option<Vec<u8>>,
                Option<String>,
                Option<String>,
                Option<i64>,
                Option<i64>,
                Option<String>,
                Option<Vec<u8>>,
            )>()
            .map_err(map_any)?
        else {
            return Ok(None);
        };
        let (Some(want), Some(bytes)) = (dig.clone(), bytes) else {
            return Ok(None);
        };
        if digest(&bytes).as_slice() != want.as_slice() {
            return Err(StorageError::Corrupt(format!(
                "sent copy {b} of {a}: digest mismatch"
            )));
        }
        Ok(sent_info((a, b, c, d, e, dig, f, g, h, i, j)).map(|info| info.with_bytes(bytes)))
    }

    /// See [`crate::Store::note_sent_copy_try`]: like a claim, a
    /// lightweight transaction on `last_try_ms`, the row's TTL kept.
    pub async fn note_sent_copy_try(
        &self,
        user: &str,
        message_id: &str,
        seen: i64,
        note: &SentCopyNote,
    ) -> Result<bool> {
        self.require_sent_copies().await?;
        let key = vec![
            CqlValue::Text(user.to_owned()),
            CqlValue::Text(message_id.to_owned()),
        ];
        let Some(ttl) = self.sent_ttl_if(&key, seen).await? else {
            return Ok(false);
        };
        let mut values = vec![
            CqlValue::Int(ttl),
            CqlValue::BigInt(note.last_try_ms),
            CqlValue::BigInt(note.next_try_ms),
            // No error: an empty text (a null would need unset values).
            CqlValue::Text(note.last_error.clone().unwrap_or_default()),
        ];
        values.extend(key);
        values.push(CqlValue::BigInt(seen));
        let r = self
            .exec(
                format!(
                    "UPDATE {} USING TTL ? SET last_try_ms = ?, next_try_ms = ?, last_error = ? \
                     WHERE user = ? AND message_id = ? IF last_try_ms = ?",
                    self.t("sent_copies")
                ),
                values,
            )
            .await?;
        applied_or_own(r, note.last_try_ms)
    }

    /// The remaining TTL of a live copy whose `last_try_ms` is `seen`
    /// (`None`: none such). Read from `digest`, written with the message
    /// (the message itself is not read).
    async fn sent_ttl_if(&self, key: &[CqlValue], seen: i64) -> Result<Option<i32>> {
        let r = self
            .exec(
                format!(
                    "SELECT TTL(digest), last_try_ms FROM {} WHERE user = ? AND message_id = ?",
                    self.t("sent_copies")
                ),
                key.to_vec(),
            )
            .await?;
        let rows = r.into_rows_result().map_err(map_any)?;
        let found = rows
            .maybe_first_row::<(Option<i32>, Option<i64>)>()
            .map_err(map_any)?;
        Ok(match found {
            Some((Some(ttl), Some(last))) if ttl > 0 && last == seen => Some(ttl),
            _ => None,
        })
    }

    /// See [`crate::Store::claim_sent_copy_try`]: the row's remaining TTL
    /// and last try are read, then a lightweight transaction (Paxos, at
    /// the session's serial consistency) rewrites the two columns with that
    /// TTL only if `last_try_ms` is still `seen`.
    pub async fn claim_sent_copy_try(
        &self,
        user: &str,
        message_id: &str,
        seen: i64,
        (tries, at_ms): (u32, i64),
    ) -> Result<bool> {
        self.require_sent_copies().await?;
        let key = vec![
            CqlValue::Text(user.to_owned()),
            CqlValue::Text(message_id.to_owned()),
        ];
        let Some(ttl) = self.sent_ttl_if(&key, seen).await? else {
            return Ok(false);
        };
        let mut values = vec![
            CqlValue::Int(ttl),
            CqlValue::Int(i32::try_from(tries).unwrap_or(i32::MAX)),
            CqlValue::BigInt(at_ms),
        ];
        values.extend(key);
        values.push(CqlValue::BigInt(seen));
        let r = self
            .exec(
                format!(
                    "UPDATE {} USING TTL ? SET tries = ?, last_try_ms = ?, next_try_ms = 0 \
                     WHERE user = ? AND message_id = ? IF last_try_ms = ?",
                    self.t("sent_copies")
                ),
                values,
            )
            .await?;
        applied_or_own(r, at_ms)
    }

    /// See [`crate::Store::delete_sent_copy`].
    pub async fn delete_sent_copy(&self, user: &str, message_id: &str) -> Result<()> {
        self.require_sent_copies().await?;
        self.exec(
            format!(
                "DELETE FROM {} WHERE user = ? AND message_id = ?",
                self.t("sent_copies")
            ),
            vec![
                CqlValue::Text(user.to_owned()),
                CqlValue::Text(message_id.to_owned()),
            ],
        )
        .await?;
        Ok(())
    }

    /// The schema version, which must have the `device_leases` table (a
    /// cached older version is read again first, like
    /// `require_sent_copies`).
    async fn require_leases(&self) -> Result<()> {
        let mut version = self.version().await?;
        if version < LEASES_SCHEMA {
            self.inner.version.store(0, Ordering::Release);
            version = self.version().await?;
        }
        if version < LEASES_SCHEMA {
            return Err(StorageError::SchemaMismatch(format!(
                "device leases need schema version {LEASES_SCHEMA} (keyspace {} has {version}): \
                 run `opush schema update`",
                self.inner.ks
            )));
        }
        Ok(())
    }

    /// The outcome of a conditional write on `device_leases`: applied, or
    /// the holder the row has (`None` when there is no live row). A
    /// statement retried after it was applied finds its own holder there.
    fn lease_outcome(
        r: scylla::response::query_result::QueryResult,
    ) -> Result<(bool, Option<String>)> {
        let rows = r.into_rows_result().map_err(map_any)?;
        let row = rows.first_row::<scylla::value::Row>().map_err(map_any)?;
        Ok(match row.columns.as_slice() {
            [Some(CqlValue::Boolean(true)), ..] => (true, None),
            [_, .., Some(CqlValue::Text(holder))] => (false, Some(holder.clone())),
            _ => (false, None),
        })
    }

    /// See [`crate::Store::take_lease`]: `INSERT … IF NOT EXISTS USING
    /// TTL` (Paxos, at the session's serial consistency).
    pub async fn take_lease(
        &self,
        device: &DeviceKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        self.require_leases().await?;
        let mut values = Self::key_values(device);
        values.push(CqlValue::Text(holder.to_owned()));
        values.push(CqlValue::Int(lease_ttl(ttl)));
        let r = self
            .exec(
                format!(
                    "INSERT INTO {} (user, device_id, holder) VALUES (?, ?, ?) IF NOT EXISTS USING TTL ?",
                    self.t("device_leases")
                ),
                values,
            )
            .await?;
        Ok(match Self::lease_outcome(r)? {
            (true, _) => true,
            (false, found) => found.as_deref() == Some(holder),
        })
    }

    /// See [`crate::Store::renew_lease`]: `UPDATE … USING TTL … IF holder = ?`.
    pub async fn renew_lease(
        &self,
        device: &DeviceKey,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool> {
        self.require_leases().await?;
        let mut values = vec![
            CqlValue::Int(lease_ttl(ttl)),
            CqlValue::Text(holder.to_owned()),
        ];
        values.extend(Self::key_values(device));
        values.push(CqlValue::Text(holder.to_owned()));
        let r = self
            .exec(
                format!(
                    "UPDATE {} USING TTL ? SET holder = ? WHERE user = ? AND device_id = ? IF holder = ?",
                    self.t("device_leases")
                ),
                values,
            )
            .await?;
        // A retry of an applied renewal finds its own holder: still held.
        Ok(match Self::lease_outcome(r)? {
            (true, _) => true,
            (false, found) => found.as_deref() == Some(holder),
        })
    }

    /// See [`crate::Store::release_lease`]: `DELETE … IF holder = ?`.
    pub async fn release_lease(&self, device: &DeviceKey, holder: &str) -> Result<bool> {
        self.require_leases().await?;
        let mut values = Self::key_values(device);
        values.push(CqlValue::Text(holder.to_owned()));
        let r = self
            .exec(
                format!(
                    "DELETE FROM {} WHERE user = ? AND device_id = ? IF holder = ?",
                    self.t("device_leases")
                ),
                values,
            )
            .await?;
        // Not applied: another holder's row (refused), or no live row (it
        // expired, or a retry of this release already deleted it).
        Ok(match Self::lease_outcome(r)? {
            (true, _) => true,
            (false, found) => found.is_none(),
        })
    }
}

/// Tries of a device row change that keeps losing its compare-and-set.
const DEVICE_CHANGE_TRIES: usize = 16;

const DEVICE_COLS: &str =
    "user, device_id, device_type, first_seen_ms, last_seen_ms, policy_key, state, info";

type DeviceRow = (
    String,
    String,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<BTreeMap<String, String>>,
);

struct Progress {
    token: i64,
    user: String,
    device: String,
    seq: i64,
}

struct MigRow {
    token: i64,
    user: String,
    device: String,
    seq: i64,
    payload: Option<Vec<u8>>,
    ttl: Option<i32>,
}

/// The columns `sent_copies` lists (all but the message).
type SentInfoRow = (
    String,
    String,
    Option<i64>,
    Option<i64>,
    Option<i32>,
    Option<Vec<u8>>,
    Option<String>,
    Option<String>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

/// A listed `sent_copies` row (`None`: no digest, so no copy).
fn sent_info(row: SentInfoRow) -> Option<SentCopyInfo> {
    let (user, message_id, created, last_try, tries, dig, device, subject, size, next, error) = row;
    dig?;
    Some(SentCopyInfo {
        user,
        message_id,
        device_id: device.unwrap_or_default(),
        subject: subject.unwrap_or_default(),
        size: size.unwrap_or(0).max(0) as u64,
        created_ms: created.unwrap_or(0),
        last_try_ms: last_try.unwrap_or(0),
        tries: tries.unwrap_or(0).max(0) as u32,
        next_try_ms: next.unwrap_or(0),
        last_error: error.filter(|e| !e.is_empty()),
    })
}

/// Whether a conditional update on `last_try_ms` (a claim, a note) took:
/// the first column of its row is `[applied]`; when not applied the row's
/// current `last_try_ms` follows. Requests are retried (idempotent): a
/// retry of an update that was applied finds `written` there, its own.
fn applied_or_own(r: scylla::response::query_result::QueryResult, written: i64) -> Result<bool> {
    let rows = r.into_rows_result().map_err(map_any)?;
    let row = rows.first_row::<scylla::value::Row>().map_err(map_any)?;
    Ok(match row.columns.as_slice() {
        [Some(CqlValue::Boolean(true)), ..] => true,
        [_, Some(CqlValue::BigInt(last)), ..] => *last == written,
        _ => false,
    })
}
