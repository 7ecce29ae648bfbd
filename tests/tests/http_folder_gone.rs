//! A folder another client deletes, or deletes and creates again under
//! the same name, while a device still holds it: over HTTP against the
//! stack's Dovecot.
//!
//! A folder created again numbers its messages from 1 again, under a new
//! UIDVALIDITY, so a ServerId the device holds from before can name a UID
//! that is now another message. Nothing the device asks of its old item
//! may reach that message (no Fetch of it in its place, no move of it),
//! and a folder that is gone is answered with the statuses that send a
//! device to FolderSync, not with "retry later" for ever.
//!
//! Reserved Dovecot user: load1291.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use opush_protocol::commands::get_item_estimate::GetItemEstimateResponse;
use opush_protocol::commands::item_operations::{ItemOperationsResponse, OperationResult};
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::move_items::MoveItemsResponse;
use opush_protocol::commands::sync::ServerCommand;
use opush_protocol::version::ProtocolVersion;
use opush_tests::eas::EasClient;
use opush_tests::{require, RawImap, DOVECOT_IMAP};
use support::*;

const USER: &str = "load1291@load.test";
const FOLDER: &str = "Gone Again";
const V: &str = "14.1";

fn message(subject: &str) -> String {
    format!(
        "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\
         Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{}@gone.test>\r\n\r\n\
         body of {subject}\r\n",
        subject.replace(' ', "-")
    )
}

fn append(imap: &mut RawImap, folder: &str, subject: &str) {
    let msg = message(subject);
    let (_, ok) = imap.cmd(&format!("APPEND \"{folder}\" {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

/// The folder deleted (if there) and created empty, in a new session each
/// (a Dovecot session that deleted a folder keeps its old index).
fn recreate(folder: &str) -> RawImap {
    let mut imap = RawImap::login(USER);
    imap.cmd(&format!("UNSUBSCRIBE \"{folder}\""));
    imap.cmd(&format!("DELETE \"{folder}\""));
    let mut imap = RawImap::login(USER);
    imap.ok(&format!("CREATE \"{folder}\""));
    imap.ok(&format!("SUBSCRIBE \"{folder}\""));
    RawImap::login(USER)
}

/// The subjects of the messages `cmds` add.
fn added_subjects(cmds: &[ServerCommand]) -> Vec<String> {
    cmds.iter()
        .filter_map(|c| match c {
            ServerCommand::Add {
                application_data: ApplicationData::Email(e),
                ..
            } => e.subject.clone(),
            _ => None,
        })
        .collect()
}

/// ItemOperations Fetch of `server_id`: its Status and the subject fetched.
async fn fetch(c: &mut EasClient, collection: &str, server_id: &str) -> (u16, Option<String>) {
    let res = c
        .post_xml(
            "ItemOperations",
            &format!(
                "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\" \
                 xmlns:airsyncbase=\"AirSyncBase:\"><Fetch><Store>Mailbox</Store>\
                 <airsync:CollectionId>{collection}</airsync:CollectionId>\
                 <airsync:ServerId>{server_id}</airsync:ServerId><Options>\
                 <airsyncbase:BodyPreference><airsyncbase:Type>1</airsyncbase:Type>\
                 </airsyncbase:BodyPreference></Options></Fetch></ItemOperations>"
            ),
        )
        .await;
    assert_eq!(res.status, 200);
    let r = ItemOperationsResponse::from_element(&res.element(), ProtocolVersion::V14_1).unwrap();
    match r.results.into_iter().next() {
        Some(OperationResult::Fetch {
            status, properties, ..
        }) => (
            status.code(),
            match properties {
                Some(ApplicationData::Email(e)) => e.subject,
                _ => None,
            },
        ),
        other => panic!("ItemOperations answered {other:?}: {}", res.xml()),
    }
}

/// MoveItems of `server_id` from `from` to `to`: its Status.
async fn move_item(c: &mut EasClient, server_id: &str, from: &str, to: &str) -> u16 {
    let res = c
        .post_xml(
            "MoveItems",
            &format!(
                "<MoveItems xmlns=\"Move:\"><Move><SrcMsgId>{server_id}</SrcMsgId>\
                 <SrcFldId>{from}</SrcFldId><DstFldId>{to}</DstFldId></Move></MoveItems>"
            ),
        )
        .await;
    assert_eq!(res.status, 200);
    let r = MoveItemsResponse::from_element(&res.element(), ProtocolVersion::V14_1).unwrap();
    r.responses[0].status.code()
}

/// GetItemEstimate of `collection` at `key`: its Status.
async fn estimate(c: &mut EasClient, collection: &str, key: &str) -> u16 {
    let res = c
        .post_xml(
            "GetItemEstimate",
            &format!(
                "<GetItemEstimate xmlns=\"GetItemEstimate:\" xmlns:airsync=\"AirSync:\"><Collections>\
                 <Collection><airsync:SyncKey>{key}</airsync:SyncKey><CollectionId>{collection}</CollectionId>\
                 <airsync:Options><airsync:FilterType>0</airsync:FilterType></airsync:Options>\
                 </Collection></Collections></GetItemEstimate>"
            ),
        )
        .await;
    assert_eq!(res.status, 200, "GetItemEstimate");
    let r = GetItemEstimateResponse::from_element(&res.element(), ProtocolVersion::V14_1).unwrap();
    r.responses[0].status.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_deleted_or_created_again_never_serves_or_moves_another_message() {
    require(DOVECOT_IMAP);
    let tag = opush_tests::unique("gone");
    let mut imap = recreate(FOLDER);
    let old = format!("{tag} old");
    append(&mut imap, FOLDER, &old);
    let opush = start(Options::default()).await;
    let mut c = opush.client(USER, &format!("GONE{}", std::process::id()), V);
    let fs = folders(&mut c).await;
    let (gone_id, _) = folder_named(&fs, FOLDER).expect("the folder is listed");
    let inbox = folder_of_type(&fs, 2).unwrap();
    let res = c.post_xml("Sync", &sync_xml(&gone_id, "0", 0, "")).await;
    let key = sync_response(&res, V).collections[0].sync_key.0.clone();
    let (key, commands) = sync_all(&mut c, V, &gone_id, key, 10).await;
    assert_eq!(commands.len(), 1, "{commands:?}");
    let old_id = server_id(&commands[0]).to_owned();
    assert_eq!(
        fetch(&mut c, &gone_id, &old_id).await,
        (1, Some(old.clone()))
    );

    // Another client deletes the folder and creates it again: its first
    // message has the UID the device's item had.
    let mut imap = recreate(FOLDER);
    let new = format!("{tag} new");
    append(&mut imap, FOLDER, &new);
    assert_eq!(
        imap.search_subject(FOLDER, &new),
        vec![1],
        "UIDs start over"
    );
    imap.ok("UNSELECT");

    // The device has not synced the hierarchy: its old item is not found,
    // never the new message in its place.
    assert_eq!(fetch(&mut c, &gone_id, &old_id).await, (6, None));
    // Nor is the new message moved in its place: the move answers the
    // item gone (Status 1) and the new message stays where it is.
    assert_eq!(move_item(&mut c, &old_id, &gone_id, &inbox).await, 1);
    assert_eq!(imap.search_subject(FOLDER, &new), vec![1]);
    assert!(imap.search_subject("INBOX", &tag).is_empty());
    imap.ok("UNSELECT");
    // The next Sync, carrying a Delete of the old item, deletes nothing
    // else, and shows the folder as it is now: the old item goes, the new
    // message comes (whatever the way: a new SyncKey 0 or changes).
    let delete = format!("<Commands><Delete><ServerId>{old_id}</ServerId></Delete></Commands>");
    let res = c
        .post_xml("Sync", &sync_xml(&gone_id, &key, 10, &delete))
        .await;
    assert_eq!(imap.search_subject(FOLDER, &new), vec![1], "{}", res.xml());
    assert!(
        imap.search_subject("Trash", &tag).is_empty(),
        "{}",
        res.xml()
    );
    imap.ok("UNSELECT");
    let r = sync_response(&res, V);
    let status = r.collections[0].status.map(|s| s.code());
    let shown: Vec<String> = match status {
        Some(1) => {
            let cmds = r.collections[0].commands.clone().unwrap_or_default();
            // The device deleted the old item itself: it is not added again.
            assert!(
                !cmds.iter().any(|c| server_id(c) == old_id),
                "the old item again: {}",
                res.xml()
            );
            added_subjects(&cmds)
        }
        Some(3) => {
            let res = c.post_xml("Sync", &sync_xml(&gone_id, "0", 0, "")).await;
            let key = sync_response(&res, V).collections[0].sync_key.0.clone();
            let (_, cmds) = sync_all(&mut c, V, &gone_id, key, 10).await;
            added_subjects(&cmds)
        }
        s => panic!(
            "Sync of the folder created again: Status {s:?}: {}",
            res.xml()
        ),
    };
    assert_eq!(shown, vec![new.clone()], "{}", res.xml());

    // Deleted for good: each command sends the device to FolderSync (or
    // says the item is gone) instead of "retry later" for ever.
    let mut imap = RawImap::login(USER);
    imap.ok(&format!("UNSUBSCRIBE \"{FOLDER}\""));
    imap.ok(&format!("DELETE \"{FOLDER}\""));
    let mut res = c.post_xml("Sync", &sync_xml(&gone_id, &key, 10, "")).await;
    // opush's session that had the folder open is stale now (Dovecot
    // answers it "Mailbox was deleted under us"): dropped, and the device
    // asked to retry, once.
    if sync_response(&res, V).status.map(|s| s.code()) == Some(111) {
        res = c.post_xml("Sync", &sync_xml(&gone_id, &key, 10, "")).await;
    }
    let r = sync_response(&res, V);
    assert_eq!(r.status.map(|s| s.code()), None, "{}", res.xml());
    assert_eq!(
        r.collections[0].status.map(|s| s.code()),
        Some(12),
        "{}",
        res.xml()
    );
    assert_eq!(estimate(&mut c, &gone_id, &key).await, 2);
    assert_eq!(fetch(&mut c, &gone_id, &old_id).await, (6, None));
    assert_eq!(move_item(&mut c, &old_id, &gone_id, &inbox).await, 1);
    let res = c
        .post_xml(
            "ItemOperations",
            &format!(
                "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\">\
                 <EmptyFolderContents><airsync:CollectionId>{gone_id}</airsync:CollectionId>\
                 </EmptyFolderContents></ItemOperations>"
            ),
        )
        .await;
    let r = ItemOperationsResponse::from_element(&res.element(), ProtocolVersion::V14_1).unwrap();
    assert!(
        matches!(
            r.results.first(),
            Some(OperationResult::EmptyFolderContents { status, .. }) if status.code() == 6
        ),
        "EmptyFolderContents of a deleted folder: {}",
        res.xml()
    );
    opush.stop().await;
}
