//! FolderCreate / FolderUpdate / FolderDelete against the real Dovecot and
//! the embedded store: a non-ASCII folder name (modified UTF-7 on the IMAP
//! side), creating an existing unsubscribed folder subscribes it, a
//! duplicate is status 2, a special folder cannot be deleted, and the
//! device's own changes are not sent back by the next FolderSync.
//!
//! Reserved Dovecot users: load0037, load1345.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, services};

use opush_protocol::commands::folder_create::FolderCreateRequest;
use opush_protocol::commands::folder_delete::FolderDeleteRequest;
use opush_protocol::commands::folder_sync::{FolderChange, FolderSyncRequest};
use opush_protocol::commands::folder_update::FolderUpdateRequest;
use opush_protocol::commands::{ServerId, SyncKey};
use opush_server::commands::folder_create::folder_create;
use opush_server::commands::folder_delete::folder_delete;
use opush_server::commands::folder_sync::folder_sync;
use opush_server::commands::folder_update::folder_update;
use opush_tests::RawImap;

const USER: &str = "load0037@load.test";
const DEVICE: &str = "DEVFOLDERS";

fn listing(raw: &mut RawImap, command: &str) -> String {
    let (lines, ok) = raw.cmd(command);
    assert!(ok.starts_with("OK"), "{command}: {ok}");
    lines.concat()
}

#[tokio::test]
async fn create_rename_delete_with_non_ascii_names() {
    let mut raw = RawImap::login(USER);
    for name in ["Caf&AOk- &JhU-", "eas-renamed", "eas-unsub"] {
        raw.cmd(&format!("DELETE \"{name}\""));
    }
    raw.cmd("CREATE eas-unsub");
    raw.cmd("UNSUBSCRIBE eas-unsub");

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let fs = folder_sync(
        &FolderSyncRequest {
            sync_key: SyncKey("0".to_owned()),
        },
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(fs.status.code(), 1);
    let changes = fs.changes.unwrap();
    assert!(
        !changes
            .iter()
            .any(|c| matches!(c, FolderChange::Add(f) if f.display_name == "eas-unsub")),
        "unsubscribed folders are hidden"
    );
    let inbox = changes
        .iter()
        .find_map(|c| match c {
            FolderChange::Add(f) if f.folder_type == 2 => Some(f.server_id.clone()),
            _ => None,
        })
        .unwrap();
    let key = fs.sync_key.unwrap();

    let create = |key: &SyncKey, name: &str| FolderCreateRequest {
        sync_key: key.clone(),
        parent_id: ServerId("0".to_owned()),
        display_name: name.to_owned(),
        folder_type: 12,
    };
    let c1 = folder_create(&create(&key, "Café ☕"), &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert_eq!(c1.status.code(), 1, "{c1:?}");
    let cafe = c1.server_id.clone().unwrap();
    let key = c1.sync_key.unwrap();
    assert!(listing(&mut raw, "LSUB \"\" \"*\"").contains("Caf&AOk- &JhU-"));

    // Already there but unsubscribed: subscribed, success.
    let c2 = folder_create(&create(&key, "eas-unsub"), &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert_eq!(c2.status.code(), 1, "{c2:?}");
    let key = c2.sync_key.unwrap();
    assert!(listing(&mut raw, "LSUB \"\" \"*\"").contains("eas-unsub"));

    // A duplicate is status 2 and changes nothing.
    let dup = folder_create(&create(&key, "Café ☕"), &caller(USER, DEVICE), &eas)
        .await
        .unwrap();
    assert_eq!(dup.status.code(), 2);

    let upd = folder_update(
        &FolderUpdateRequest {
            sync_key: key.clone(),
            server_id: cafe.clone(),
            parent_id: ServerId("0".to_owned()),
            display_name: "eas-renamed".to_owned(),
        },
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(upd.status.code(), 1, "{upd:?}");
    let key = upd.sync_key.unwrap();
    let list = listing(&mut raw, "LIST \"\" \"*\"");
    assert!(
        list.contains("eas-renamed") && !list.contains("Caf&AOk-"),
        "{list}"
    );

    // INBOX is special: status 3.
    let special = folder_delete(
        &FolderDeleteRequest {
            sync_key: key.clone(),
            server_id: inbox,
        },
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(special.status.code(), 3);

    let del = folder_delete(
        &FolderDeleteRequest {
            sync_key: key.clone(),
            server_id: cafe,
        },
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(del.status.code(), 1, "{del:?}");
    let key = del.sync_key.unwrap();
    assert!(!listing(&mut raw, "LIST \"\" \"*\"").contains("eas-renamed"));

    // The device's own changes are not echoed.
    let again = folder_sync(
        &FolderSyncRequest { sync_key: key },
        &caller(USER, DEVICE),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(again.status.code(), 1);
    assert_eq!(again.changes.map(|c| c.len()), Some(0));
    raw.cmd("DELETE eas-unsub");
}

/// A folder renamed by a device keeps its subfolders in every device's
/// list: RENAME moves them, and opush moves their subscriptions too
/// (Dovecot leaves them on the old names, and unsubscribed folders are
/// hidden). Reserved Dovecot user: load1345.
#[tokio::test]
async fn a_renamed_folder_keeps_its_subfolders() {
    const USER: &str = "load1345@load.test";
    let mut raw = RawImap::login(USER);
    for f in ["ren-b/Sub", "ren-b", "ren-a/Sub", "ren-a"] {
        raw.cmd(&format!("UNSUBSCRIBE \"{f}\""));
        raw.cmd(&format!("DELETE \"{f}\""));
    }
    for f in ["ren-a", "ren-a/Sub"] {
        raw.ok(&format!("CREATE \"{f}\""));
        raw.ok(&format!("SUBSCRIBE \"{f}\""));
    }
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let first = |key: &str, device: &'static str| {
        let eas = &eas;
        let key = SyncKey(key.to_owned());
        async move {
            folder_sync(
                &FolderSyncRequest { sync_key: key },
                &caller(USER, device),
                eas,
            )
            .await
            .unwrap()
        }
    };
    let fs = first("0", "DEVRENAME").await;
    let changes = fs.changes.clone().unwrap_or_default();
    let id_of = |name: &str| {
        changes
            .iter()
            .find_map(|c| match c {
                FolderChange::Add(f) if f.display_name == name => Some(f.server_id.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("{name} not listed: {changes:?}"))
    };
    let parent = id_of("ren-a");
    id_of("Sub");

    let upd = folder_update(
        &FolderUpdateRequest {
            sync_key: fs.sync_key.clone().unwrap(),
            server_id: parent.clone(),
            parent_id: ServerId("0".to_owned()),
            display_name: "ren-b".to_owned(),
        },
        &caller(USER, "DEVRENAME"),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(upd.status.code(), 1, "{upd:?}");
    let subscribed = listing(&mut raw, "LSUB \"\" \"*\"");
    assert!(subscribed.contains("ren-b/Sub"), "{subscribed}");
    assert!(!subscribed.contains("ren-a"), "{subscribed}");

    // The renaming device's next FolderSync still shows the subfolder
    // (under its new path), and so does another device's first one.
    let next = first(&upd.sync_key.unwrap().0, "DEVRENAME").await;
    let shown = next.changes.clone().unwrap_or_default().iter().any(
        |c| matches!(c, FolderChange::Add(f) | FolderChange::Update(f) if f.display_name == "Sub"),
    );
    let deleted = next
        .changes
        .clone()
        .unwrap_or_default()
        .iter()
        .any(|c| matches!(c, FolderChange::Delete(_)));
    assert!(shown || !deleted, "the subfolder was dropped: {next:?}");
    let other = first("0", "DEVRENAME2").await;
    assert!(
        other
            .changes
            .unwrap_or_default()
            .iter()
            .any(|c| matches!(c, FolderChange::Add(f) if f.display_name == "Sub")),
        "the subfolder is missing for another device"
    );
}
