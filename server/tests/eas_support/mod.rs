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

/// What a device shows of one email.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(
    dead_code,
    reason = "not every test binary using this module reads each field"
)]
pub struct Shown {
    pub subject: String,
    pub read: bool,
    pub flagged: bool,
}

/// A device's copy of one mail folder, by ServerId, folded from the Sync
/// answers it got. An Add of a ServerId it holds, or a Change or Delete of
/// one it does not, fails the test (a duplicated or lost message).
#[derive(Debug, Default)]
#[allow(dead_code, reason = "not every test binary using this module uses it")]
pub struct DeviceFolder {
    pub items: std::collections::BTreeMap<String, Shown>,
}

#[allow(
    dead_code,
    reason = "not every test binary using this module calls each"
)]
impl DeviceFolder {
    /// Folds an answer in; returns how many (adds, changes, deletes) it held.
    pub fn apply(
        &mut self,
        r: &opush_protocol::commands::sync::SyncCollectionResponse,
    ) -> (usize, usize, usize) {
        use opush_protocol::commands::items::{ApplicationData, Email};
        use opush_protocol::commands::sync::ServerCommand;
        let flagged = |e: &Email| e.flag.as_ref().and_then(|f| f.status) == Some(2);
        let mut n = (0, 0, 0);
        for c in r.commands.iter().flatten() {
            match c {
                ServerCommand::Add {
                    server_id,
                    application_data: ApplicationData::Email(e),
                } => {
                    let shown = Shown {
                        subject: e.subject.clone().unwrap_or_default(),
                        read: e.read == Some(true),
                        flagged: flagged(e),
                    };
                    let old = self.items.insert(server_id.0.clone(), shown);
                    assert!(old.is_none(), "ServerId {} added twice", server_id.0);
                    n.0 += 1;
                }
                ServerCommand::Change {
                    server_id,
                    application_data: ApplicationData::Email(e),
                } => {
                    let item = self
                        .items
                        .get_mut(&server_id.0)
                        .unwrap_or_else(|| panic!("Change of unknown {}", server_id.0));
                    if let Some(read) = e.read {
                        item.read = read;
                    }
                    item.flagged = flagged(e);
                    n.1 += 1;
                }
                ServerCommand::Delete { server_id, .. }
                | ServerCommand::SoftDelete { server_id } => {
                    assert!(
                        self.items.remove(&server_id.0).is_some(),
                        "Delete of unknown {}",
                        server_id.0
                    );
                    n.2 += 1;
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        n
    }

    /// Subject → (read, flagged); a subject shown twice fails the test.
    pub fn subjects(&self) -> std::collections::BTreeMap<String, (bool, bool)> {
        let mut out = std::collections::BTreeMap::new();
        for s in self.items.values() {
            let dup = out.insert(s.subject.clone(), (s.read, s.flagged));
            assert!(dup.is_none(), "{} shown twice", s.subject);
        }
        out
    }

    /// The item showing `subject`, if any.
    pub fn shown(&self, subject: &str) -> Option<&Shown> {
        self.items.values().find(|s| s.subject == subject)
    }

    /// The ServerId of the item showing `subject`.
    pub fn id_of(&self, subject: &str) -> String {
        self.items
            .iter()
            .find(|(_, s)| s.subject == subject)
            .map(|(id, _)| id.clone())
            .unwrap_or_else(|| panic!("{subject} not on the device"))
    }
}
