//! Shared set-up of the HTTP integration tests: opush started in-process
//! through `opush_server::serve::run_with` (the same path as `opush serve`)
//! on a free loopback port, over an embedded store in a temporary directory
//! (schema installed first), against a real Dovecot; typed views of the
//! answers a test reads most (FolderSync, Sync).
//!
//! It must not fake any service: a missing Dovecot fails the test.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

use std::net::SocketAddr;
use std::time::Duration;

use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncResponse};
use opush_protocol::commands::sync::{ServerCommand, SyncResponse};
use opush_protocol::headers::parse_protocol_version;
use opush_protocol::version::ProtocolVersion;
use opush_server::config::Config;
use opush_storage::{StorageConfig, Store};
use opush_tests::eas::{EasClient, HttpResponse};
use opush_tests::{demo_password, require, DOVECOT_IMAP};
use tokio::sync::oneshot;

/// What a test needs of its server.
#[derive(Debug, Clone)]
pub struct Options {
    /// IMAP port (1143: the shared Dovecot).
    pub imap_port: u16,
    /// `[policy] require_provisioning`.
    pub require_provisioning: bool,
    /// More configuration, appended to the file (whole sections, e.g.
    /// `"[devices]\nheartbeat_min_s = 1\n"`).
    pub extra_toml: String,
    /// More keys of the `[imap]` section (e.g. `"max_message_bytes = 4096\n"`).
    pub imap_toml: String,
    /// The keys of the `[storage]` section when not a fresh embedded
    /// store (e.g. [`Keyspace::toml`]: the schema is then the caller's).
    pub storage_toml: Option<String>,
    /// More keys of the `[server]` section (e.g. `"header_timeout_s = 2\n"`).
    /// Without `admin_listen` here the admin address is on port 0.
    pub server_toml: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            imap_port: 1143,
            require_provisioning: false,
            extra_toml: String::new(),
            imap_toml: String::new(),
            storage_toml: None,
            server_toml: String::new(),
        }
    }
}

/// A running opush.
pub struct Opush {
    /// Where it listens.
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Opush {
    /// A device of `user` (stack password) speaking `version`.
    pub fn client(&self, user: &str, device_id: &str, version: &str) -> EasClient {
        EasClient::new(self.addr, user, &demo_password(), device_id, version)
    }

    /// [`Opush::stop`], keeping the embedded store's directory (open it
    /// with `path` = the directory), e.g. to export a device's log.
    pub async fn stop_keeping_store(mut self) -> tempfile::TempDir {
        let dir = std::mem::replace(&mut self._dir, tempfile::tempdir().unwrap());
        self.stop().await;
        dir
    }

    /// Graceful shutdown, waiting for the server to stop.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(20), task)
                .await
                .expect("opush did not stop within 20 s")
                .expect("opush task panicked");
        }
    }
}

/// Installs (once) a log subscriber printing warnings and errors, which the
/// test harness shows for failing tests.
fn init_logs() {
    let _ = tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_test_writer()
            .finish(),
    );
}

/// Starts opush over a fresh embedded store.
pub async fn start(opts: Options) -> Opush {
    init_logs();
    if opts.imap_port == 1143 {
        require(DOVECOT_IMAP);
    }
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let storage = opts.storage_toml.clone().unwrap_or_else(|| {
        format!(
            "backend = \"embedded\"\npath = \"{}\"\n",
            dir.path().display()
        )
    });
    // The admin address on a port of the system's choosing, unless the
    // test names one: servers of tests running at once must not all try
    // the production default (8083), where only one gets it.
    let admin = if opts.server_toml.contains("admin_listen") {
        ""
    } else {
        "admin_listen = \"127.0.0.1:0\"\n"
    };
    let cfg = Config::from_toml(&format!(
        "[server]\nlisten = \"127.0.0.1:{port}\"\npublic_url = \"https://mail.example.test\"\n\
         max_in_flight = 256\n{admin}{}\
         [storage]\n{storage}\
         [imap]\nhost = \"127.0.0.1\"\nport = {}\n\
         master_user = \"opush-master\"\nmaster_password = \"{}\"\n{}\
         [policy]\nrequire_provisioning = {}\n{}",
        opts.server_toml,
        opts.imap_port,
        demo_password(),
        opts.imap_toml,
        opts.require_provisioning,
        opts.extra_toml,
    ))
    .unwrap();
    if opts.storage_toml.is_none() {
        let storage = StorageConfig {
            path: dir.path().to_path_buf(),
            ..StorageConfig::default()
        };
        let store = Store::open(&storage).await.unwrap();
        store.install_schema().await.unwrap();
    }
    let addr = cfg.server.listen;
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        opush_server::serve::run_with(cfg, async move {
            let _ = rx.await;
        })
        .await
        .expect("opush serve failed");
    });
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Opush {
                addr,
                shutdown: Some(tx),
                task: Some(task),
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("opush did not listen on {addr}");
}

/// A fresh keyspace `<prefix>_<random>` on the stack's Cassandra node
/// with the latest schema, for opush processes started with
/// [`Options::storage_toml`] = [`Keyspace::toml`]; [`Keyspace::remove`]
/// removes it, and so does dropping it (a test that failed before).
/// Fails the test when Cassandra does not answer.
pub struct Keyspace {
    /// The storage settings (as the servers read them).
    pub config: StorageConfig,
    /// The same as the keys of a `[storage]` section.
    pub toml: String,
    removed: bool,
}

impl Keyspace {
    /// Creates it and installs the schema.
    pub async fn fresh(prefix: &str) -> Keyspace {
        require(opush_tests::CASSANDRA);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let name = format!("{prefix}_{:x}{:x}", std::process::id(), nanos % (1 << 40));
        let password =
            std::env::var("OPUSH_CASSANDRA_PASSWORD").unwrap_or_else(|_| "opush-test".into());
        let config = StorageConfig {
            backend: opush_storage::BackendKind::Cassandra,
            seeds: vec!["127.0.0.1".into()],
            port: 9042,
            keyspace: name.clone(),
            user: "opush".into(),
            password: opush_storage::Password::new(password.clone()),
            read_timeout_ms: 10_000,
            ..StorageConfig::default()
        };
        let toml = format!(
            "backend = \"cassandra\"\nseeds = [\"127.0.0.1\"]\nport = 9042\nkeyspace = \"{name}\"\n\
             user = \"opush\"\npassword = \"{password}\"\nread_timeout_ms = 10000\n"
        );
        Store::open(&config)
            .await
            .unwrap()
            .install_schema()
            .await
            .unwrap();
        Keyspace {
            config,
            toml,
            removed: false,
        }
    }

    /// The store, opened as a third process would (`opush device …`).
    pub async fn open(&self) -> Store {
        Store::open(&self.config).await.unwrap()
    }

    /// Drops the keyspace.
    pub async fn remove(mut self) {
        self.open().await.destroy().await.unwrap();
        self.removed = true;
    }
}

impl Drop for Keyspace {
    /// A test that panicked before [`Keyspace::remove`]: the keyspace is
    /// dropped from a thread of its own (no runtime to await on here).
    fn drop(&mut self) {
        if self.removed {
            return;
        }
        let config = self.config.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(store) = Store::open(&config).await {
                    let _ = store.destroy().await;
                }
            });
        })
        .join();
    }
}

/// The typed protocol version of "12.1" etc.
pub fn version(v: &str) -> ProtocolVersion {
    parse_protocol_version(v).unwrap()
}

/// A FolderSync answer, checked for HTTP 200 and Status 1.
pub fn folder_sync(res: &HttpResponse) -> FolderSyncResponse {
    assert_eq!(res.status, 200, "FolderSync HTTP status");
    let r = FolderSyncResponse::from_element(&res.element(), ProtocolVersion::V14_1)
        .unwrap_or_else(|e| panic!("FolderSync answer ({e}): {}", res.xml()));
    assert_eq!(r.status.code(), 1, "FolderSync status: {}", res.xml());
    r
}

/// FolderSync from SyncKey 0: every folder.
pub async fn folders(c: &mut EasClient) -> FolderSyncResponse {
    let res = c
        .post_xml(
            "FolderSync",
            "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>",
        )
        .await;
    folder_sync(&res)
}

/// The ServerId of the first folder of EAS type `folder_type` (2 Inbox,
/// 3 Drafts, 5 Sent Items…).
pub fn folder_of_type(r: &FolderSyncResponse, folder_type: u8) -> Option<String> {
    r.changes.iter().flatten().find_map(|c| match c {
        FolderChange::Add(f) if f.folder_type == folder_type => Some(f.server_id.0.clone()),
        _ => None,
    })
}

/// [`folders`], then the folder of EAS type `folder_type` synced from
/// SyncKey 0 to its end: its CollectionId, the SyncKey to go on with and
/// every command it brought.
pub async fn synced_folder_of_type(
    c: &mut EasClient,
    v: &str,
    folder_type: u8,
) -> (String, String, Vec<ServerCommand>) {
    let fs = folders(c).await;
    let id = folder_of_type(&fs, folder_type)
        .unwrap_or_else(|| panic!("no folder of type {folder_type}: {fs:?}"));
    let res = c.post_xml("Sync", &sync_xml(&id, "0", 0, "")).await;
    let key = sync_response(&res, v).collections[0].sync_key.0.clone();
    let (key, commands) = sync_all(c, v, &id, key, 100).await;
    (id, key, commands)
}

/// (name, number, ContentId) of the attachments of an Email, the number
/// being the last field of the FileReference.
pub fn listed(
    email: &opush_protocol::commands::items::Email,
) -> Vec<(String, String, Option<String>)> {
    email
        .attachments
        .iter()
        .map(|a| {
            let r = a.file_reference.clone().unwrap_or_default();
            let number = r.rsplit(':').next().unwrap_or_default().to_owned();
            (
                a.display_name.clone().unwrap_or_default(),
                number,
                a.content_id.clone(),
            )
        })
        .collect()
}

/// `(ServerId, Type)` of the folder whose DisplayName is `name`.
pub fn folder_named(r: &FolderSyncResponse, name: &str) -> Option<(String, u8)> {
    r.changes.iter().flatten().find_map(|c| match c {
        FolderChange::Add(f) if f.display_name == name => {
            Some((f.server_id.0.clone(), f.folder_type))
        }
        _ => None,
    })
}

/// A Sync answer, checked for HTTP 200.
pub fn sync_response(res: &HttpResponse, v: &str) -> SyncResponse {
    assert_eq!(res.status, 200, "Sync HTTP status ({:?})", res.body);
    SyncResponse::from_element(&res.element(), version(v))
        .unwrap_or_else(|e| panic!("Sync answer ({e}): {}", res.xml()))
}

/// The ServerId of a server command.
pub fn server_id(c: &ServerCommand) -> &str {
    match c {
        ServerCommand::Add { server_id, .. }
        | ServerCommand::Change { server_id, .. }
        | ServerCommand::Delete { server_id, .. }
        | ServerCommand::SoftDelete { server_id } => &server_id.0,
    }
}

/// A one-collection Sync request (XML) with a plain-text body preference.
pub fn sync_xml(collection: &str, key: &str, window: u32, extra: &str) -> String {
    let get_changes = if key == "0" { "" } else { "<GetChanges/>" };
    let window = if key == "0" {
        String::new()
    } else {
        format!("<WindowSize>{window}</WindowSize>")
    };
    format!(
        "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\" xmlns:email=\"Email:\"><Collections><Collection>\
         <SyncKey>{key}</SyncKey><CollectionId>{collection}</CollectionId>{get_changes}{window}\
         <Options><airsyncbase:BodyPreference><airsyncbase:Type>1</airsyncbase:Type>\
         <airsyncbase:TruncationSize>200</airsyncbase:TruncationSize></airsyncbase:BodyPreference></Options>\
         {extra}</Collection></Collections></Sync>"
    )
}

/// Syncs `collection` from `key` to the end; returns the new key and every command.
pub async fn sync_all(
    c: &mut EasClient,
    v: &str,
    collection: &str,
    mut key: String,
    window: u32,
) -> (String, Vec<ServerCommand>) {
    let mut all = Vec::new();
    for _ in 0..1000 {
        let res = c
            .post_xml("Sync", &sync_xml(collection, &key, window, ""))
            .await;
        let r = sync_response(&res, v);
        let col = &r.collections[0];
        assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
        key = col.sync_key.0.clone();
        all.extend(col.commands.clone().unwrap_or_default());
        if !col.more_available {
            return (key, all);
        }
    }
    panic!("Sync of {collection} never ended");
}

/// ItemOperations with the one conversation `Move` `op` (protocol `v`):
/// its Status and echoed ConversationId.
pub async fn move_conversation(
    c: &mut EasClient,
    v: &str,
    op: opush_protocol::commands::item_operations::Operation,
) -> (u16, Option<Vec<u8>>) {
    use opush_protocol::commands::item_operations::{
        ItemOperationsRequest, ItemOperationsResponse, OperationResult,
    };
    let req = ItemOperationsRequest {
        operations: vec![op],
    };
    let v = version(v);
    let res = c
        .post(
            "ItemOperations",
            &opush_protocol::wbxml::encode_to_vec(&req.to_element(v)),
        )
        .await;
    assert_eq!(res.status, 200);
    let r = ItemOperationsResponse::from_element(&res.element(), v)
        .unwrap_or_else(|e| panic!("ItemOperations answer ({e}): {}", res.xml()));
    match r.results.first() {
        Some(OperationResult::Move {
            status,
            conversation_id,
        }) => (status.code(), conversation_id.clone()),
        other => panic!("not a Move result: {other:?}"),
    }
}
