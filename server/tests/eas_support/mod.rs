//! Shared set-up of the `eas_*` tests: the EAS services over a fresh
//! embedded store in a temporary directory and the stack's Dovecot, reached
//! as each test user with the demo password (the master user is configured,
//! as in production, for background work only), and the first FolderSync
//! of a device with its folders looked up by type or name.

#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use std::sync::{Arc, OnceLock};

use opush_server::backends::imap::ImapPool;
use opush_server::commands::provision::default_policy;
use opush_server::config::{ImapConfig, Secret};
use opush_server::push::{PushHub, PushSettings};
use opush_server::session::{Caller, EasServices, Sessions};
use opush_storage::{StorageConfig, Store};
use opush_tests::demo_password;

/// EAS services over the embedded store in `dir` (schema installed when
/// the store is new; an existing one is reopened as it is, as after a restart).
pub async fn services(dir: &tempfile::TempDir) -> EasServices {
    let config = StorageConfig {
        path: dir.path().to_path_buf(),
        ..StorageConfig::default()
    };
    let store = Store::open(&config).await.unwrap();
    if matches!(
        store.schema_status().await.unwrap(),
        opush_storage::SchemaStatus::InstallRequired { .. }
    ) {
        store.install_schema().await.unwrap();
    }
    let imap = ImapConfig {
        master_user: Some("opush-master".to_owned()),
        master_password: Some(Secret::new(demo_password())),
        ..ImapConfig::default()
    };
    EasServices {
        sessions: Sessions::new(Arc::new(store), 50, 64),
        engine: opush_engine::EngineConfig::default(),
        policy: default_policy(),
        imap: Arc::new(ImapPool::new(imap.clone())),
        push: PushHub::new(PushSettings::default(), imap),
        send: opush_server::commands::compose::SendSettings::default(),
        sent_copies: opush_server::sent_copy::SentCopies::default(),
        oof: opush_server::oof::OofService::default(),
    }
}

/// The caller of a handler-level test: `user` on `device_id` with the demo
/// password (what the HTTP layer hands the handlers after Basic auth).
#[allow(dead_code, reason = "not every test binary using this module calls it")]
pub fn caller<'a>(user: &'a str, device_id: &'a str) -> Caller<'a> {
    static PASSWORD: OnceLock<Secret> = OnceLock::new();
    Caller::new(
        user,
        device_id,
        PASSWORD.get_or_init(|| Secret::new(demo_password())),
    )
}

/// The folders a device learns from its first FolderSync (SyncKey 0).
#[allow(dead_code, reason = "not every test binary using this module calls it")]
pub struct Folders(pub Vec<opush_protocol::commands::folder_sync::Folder>);

#[allow(dead_code, reason = "not every test binary using this module calls it")]
impl Folders {
    /// The ServerId of the (first) folder of EAS type `folder_type` (2: Inbox).
    pub fn of_type(&self, folder_type: u8) -> String {
        self.find(|f| f.folder_type == folder_type)
            .unwrap_or_else(|| panic!("no folder of type {folder_type} in {:?}", self.0))
    }

    /// The ServerId of the folder whose DisplayName is `name`.
    pub fn named(&self, name: &str) -> String {
        self.find(|f| f.display_name == name)
            .unwrap_or_else(|| panic!("no folder {name:?} in {:?}", self.0))
    }

    fn find(
        &self,
        pred: impl Fn(&opush_protocol::commands::folder_sync::Folder) -> bool,
    ) -> Option<String> {
        self.0
            .iter()
            .find(|f| pred(f))
            .map(|f| f.server_id.0.clone())
    }
}

/// FolderSync 0 of `caller`: every folder it adds.
#[allow(dead_code, reason = "not every test binary using this module calls it")]
pub async fn first_folder_sync(eas: &EasServices, caller: &Caller<'_>) -> Folders {
    use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest};
    let fs = opush_server::commands::folder_sync::folder_sync(
        &FolderSyncRequest {
            sync_key: opush_protocol::commands::SyncKey("0".to_owned()),
        },
        caller,
        eas,
    )
    .await
    .unwrap();
    Folders(
        fs.changes
            .unwrap_or_default()
            .into_iter()
            .filter_map(|c| match c {
                FolderChange::Add(f) => Some(f),
                _ => None,
            })
            .collect(),
    )
}

/// A Sync of one collection with `key`, WindowSize 50, default options.
#[allow(dead_code, reason = "not every test binary using this module calls it")]
pub fn sync_req(collection: &str, key: &str) -> opush_protocol::commands::sync::SyncRequest {
    use opush_protocol::commands::sync::{SyncCollectionRequest, SyncRequest};
    use opush_protocol::commands::{CollectionId, SyncKey};
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(collection.to_owned()),
            window_size: Some(50),
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

/// `req` (one collection) sent by `caller` at 14.1; its collection's answer,
/// which must have Status 1.
#[allow(dead_code, reason = "not every test binary using this module calls it")]
pub async fn sync_one(
    eas: &EasServices,
    caller: &Caller<'_>,
    req: &opush_protocol::commands::sync::SyncRequest,
) -> opush_protocol::commands::sync::SyncCollectionResponse {
    let version = opush_protocol::version::ProtocolVersion::V14_1;
    let mut res = opush_server::commands::sync::sync(req, version, caller, eas)
        .await
        .unwrap();
    assert_eq!(res.collections.len(), 1);
    let r = res.collections.remove(0);
    assert_eq!(r.status.map(|s| s.code()), Some(1), "{r:?}");
    r
}
