//! An email folder synced with no FilterType window is listed without
//! INTERNALDATE (the engine holds its items undated), yet every message
//! reaches the device with its DateReceived, and a window the device asks
//! later applies to the real dates: the folder is listed again with them
//! first, so the old messages are soft-deleted and the recent ones stay.
//! Against the real Dovecot of the test stack and the embedded store.
//!
//! Reserved Dovecot user: load0073.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::sync::{
    ServerCommand, SyncCollectionRequest, SyncCollectionResponse, SyncOptions, SyncRequest,
};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::sync::sync;
use opush_server::dates::{eas_date, imap_date_time};
use opush_server::session::{device_key, EasServices};
use opush_tests::{unique, RawImap};

const USER: &str = "load0073@load.test";
const DEVICE: &str = "DEVUNDATED";

fn request(inbox: &str, key: &str, filter: Option<u8>) -> SyncRequest {
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(inbox.to_owned()),
            window_size: Some(50),
            options: vec![SyncOptions {
                filter_type: filter,
                ..SyncOptions::default()
            }],
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

async fn one(eas: &EasServices, req: SyncRequest) -> SyncCollectionResponse {
    let mut res = sync(&req, ProtocolVersion::V14_1, &caller(USER, DEVICE), eas)
        .await
        .unwrap();
    assert_eq!(res.collections.len(), 1);
    let c = res.collections.remove(0);
    assert_eq!(c.status.map(|s| s.code()), Some(1), "{c:?}");
    c
}

/// Whether the device's INBOX state holds an item the engine has no date for.
async fn undated(eas: &EasServices, inbox: &str) -> bool {
    let key = device_key(USER, DEVICE).unwrap();
    let session = eas.sessions.open(key).await.unwrap();
    let c = opush_engine::CollectionId::parse(inbox).unwrap();
    session.state().collections[&c].has_undated()
}

#[tokio::test]
async fn no_window_lists_undated_and_a_later_window_uses_the_real_dates() {
    let mut raw = RawImap::login(USER);
    let (_, ok) = raw.cmd("SELECT INBOX");
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    let (_, ok) = raw.cmd("EXPUNGE");
    assert!(ok.starts_with("OK"), "{ok}");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let tag = unique("undated");
    // Three messages received 40 days ago, two an hour ago.
    let mut dates = std::collections::BTreeMap::new();
    for (i, age_s) in [
        40 * 86_400,
        40 * 86_400 + 60,
        40 * 86_400 + 120,
        3_600,
        3_660,
    ]
    .into_iter()
    .enumerate()
    {
        let at = now - age_s;
        let subject = format!("{tag} {i}");
        let msg = format!(
            "From: a@example.test\r\nTo: {USER}\r\nSubject: {subject}\r\n\
             Content-Type: text/plain\r\n\r\nbody {i}\r\n"
        );
        let (_, ok) = raw.cmd(&format!(
            "APPEND INBOX \"{}\" {{{}+}}\r\n{msg}",
            imap_date_time(at),
            msg.len()
        ));
        assert!(ok.starts_with("OK"), "append: {ok}");
        dates.insert(subject, at);
    }

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let inbox = first_folder_sync(&eas, &caller(USER, DEVICE))
        .await
        .of_type(2);

    // FilterType 0 (no window): the listing has no dates...
    let k1 = one(&eas, request(&inbox, "0", Some(0))).await.sync_key.0;
    assert!(undated(&eas, &inbox).await, "listed with dates");
    // ...and the device still gets each message's INTERNALDATE.
    let r1 = one(&eas, request(&inbox, &k1, None)).await;
    let adds = r1.commands.unwrap();
    assert_eq!(adds.len(), 5);
    for cmd in &adds {
        let ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        } = cmd
        else {
            panic!("not an email Add: {cmd:?}");
        };
        let subject = e.subject.clone().unwrap();
        assert_eq!(
            e.date_received.as_deref(),
            Some(eas_date(dates[&subject]).as_str()),
            "{subject}"
        );
    }

    // A week's window: the folder is listed again with dates, and the
    // three old messages leave the device (SoftDelete), the others stay.
    let r2 = one(&eas, request(&inbox, &r1.sync_key.0, Some(3))).await;
    assert!(!undated(&eas, &inbox).await, "still undated");
    let mut key = r2.sync_key.0.clone();
    let mut commands = r2.commands.unwrap_or_default();
    let mut more = r2.more_available;
    while more {
        let r = one(&eas, request(&inbox, &key, Some(3))).await;
        commands.extend(r.commands.unwrap_or_default());
        key = r.sync_key.0.clone();
        more = r.more_available;
    }
    let soft: Vec<&ServerCommand> = commands
        .iter()
        .filter(|c| matches!(c, ServerCommand::SoftDelete { .. }))
        .collect();
    assert_eq!(soft.len(), 3, "{commands:?}");
    assert_eq!(commands.len(), 3, "only the soft deletes: {commands:?}");
    let old: Vec<String> = adds
        .iter()
        .filter_map(|c| match c {
            ServerCommand::Add {
                server_id,
                application_data: ApplicationData::Email(e),
                ..
            } if dates[e.subject.as_deref().unwrap()] < now - 86_400 * 7 => {
                Some(server_id.0.clone())
            }
            _ => None,
        })
        .collect();
    let mut gone: Vec<String> = soft
        .iter()
        .map(|c| match c {
            ServerCommand::SoftDelete { server_id } => server_id.0.clone(),
            _ => unreachable!(),
        })
        .collect();
    gone.sort();
    let mut old = old;
    old.sort();
    assert_eq!(gone, old);
}
