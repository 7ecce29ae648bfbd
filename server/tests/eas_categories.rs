//! Categories both ways against the real Dovecot: a phone's categories
//! with spaces and non-ASCII letters are stored as IMAP keywords in the
//! same Change as its Read flag (neither is lost), another client's
//! keywords (`$MDNSent`, `NonJunk`) are neither shown as categories nor
//! removed when the phone replaces the list, and what another client sets
//! reaches a second device as the same categories.
//!
//! Reserved Dovecot users: load1332.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, sync_one, sync_req};

use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{
    ClientCommand, ServerCommand, SyncCollectionResponse, SyncRequest,
};
use opush_protocol::commands::ServerId;
use opush_server::session::EasServices;
use opush_tests::{require, unique, RawImap, DOVECOT_IMAP};

const USER: &str = "load1332@load.test";

/// Syncs INBOX from SyncKey 0 to its end; its last key and every Add's
/// (ServerId, subject, categories).
async fn catch_up(
    eas: &EasServices,
    device: &str,
) -> (String, String, Vec<(String, String, Vec<String>)>) {
    let inbox = first_folder_sync(eas, &caller(USER, device))
        .await
        .of_type(2);
    let mut key = sync_one(eas, &caller(USER, device), &sync_req(&inbox, "0"))
        .await
        .sync_key
        .0;
    let mut adds = Vec::new();
    for _ in 0..10 {
        let r = sync_one(eas, &caller(USER, device), &sync_req(&inbox, &key)).await;
        for c in r.commands.iter().flatten() {
            if let ServerCommand::Add {
                server_id,
                application_data: ApplicationData::Email(e),
            } = c
            {
                let subject = e.subject.clone().unwrap_or_default();
                let cats = e.categories.clone().unwrap_or_default();
                adds.push((server_id.0.clone(), subject, cats));
            }
        }
        key = r.sync_key.0.clone();
        if !r.more_available {
            return (inbox, key, adds);
        }
    }
    panic!("the initial sync does not end");
}

/// A Sync of INBOX at `key` carrying one Change of `server_id`.
fn change(inbox: &str, key: &str, server_id: &str, email: Email) -> SyncRequest {
    let mut req = sync_req(inbox, key);
    req.collections[0].commands = Some(vec![ClientCommand::Change {
        class: None,
        server_id: ServerId(server_id.to_owned()),
        application_data: ApplicationData::Email(Box::new(email)),
    }]);
    req
}

/// The keywords and `\Seen` of the INBOX message with `uid`.
fn imap_flags(raw: &mut RawImap, uid: u32) -> Vec<String> {
    let (lines, _) = raw.cmd(&format!("UID FETCH {uid} (FLAGS)"));
    let line = lines
        .iter()
        .find(|l| l.contains("FLAGS ("))
        .unwrap_or_else(|| panic!("no FLAGS: {lines:?}"));
    let inner = line.split("FLAGS (").nth(1).unwrap();
    let inner = &inner[..inner.find(')').unwrap()];
    let mut flags: Vec<String> = inner.split_whitespace().map(str::to_owned).collect();
    flags.sort();
    flags
}

/// The categories a Change of `r` for `server_id` carries.
fn changed_categories(r: &SyncCollectionResponse, server_id: &str) -> Option<Vec<String>> {
    r.commands.iter().flatten().find_map(|c| match c {
        ServerCommand::Change {
            server_id: s,
            application_data: ApplicationData::Email(e),
        } if s.0 == server_id => Some(e.categories.clone().unwrap_or_default()),
        _ => None,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn categories_round_trip_without_touching_other_keywords() {
    require(DOVECOT_IMAP);
    let tag = unique("cat");
    let mut raw = RawImap::login(USER);
    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    let subject = format!("{tag} categorised");
    raw.append_to_inbox(&subject);
    let uid = raw.inbox_uid(&subject);
    // Another client's state on the message, and a one-word category.
    raw.ok(&format!(
        "UID STORE {uid} +FLAGS.SILENT ($MDNSent NonJunk Work)"
    ));

    let dir = tempfile::tempdir().unwrap();
    let eas = eas_support::services(&dir).await;
    let (inbox, key_a, adds) = catch_up(&eas, "DEVCATA").await;
    let (_, key_b, _) = catch_up(&eas, "DEVCATB").await;
    let (sid, _, shown) = adds
        .iter()
        .find(|(_, s, _)| *s == subject)
        .expect("the message on the device")
        .clone();
    assert_eq!(shown, vec!["Work".to_owned()], "only categories are shown");

    // The phone marks it read and sets three categories in one Change.
    let wanted: Vec<String> = ["Red category", "Büro", "$money"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let req = change(
        &inbox,
        &key_a,
        &sid,
        Email {
            read: Some(true),
            categories: Some(wanted.clone()),
            ..Email::default()
        },
    );
    let r = sync_one(&eas, &caller(USER, "DEVCATA"), &req).await;
    // A Change that succeeded has no reply.
    assert!(
        r.responses.as_ref().is_none_or(|v| v.is_empty()),
        "the Change failed: {:?}",
        r.responses
    );
    let key_a = r.sync_key.0.clone();

    // On IMAP: read, the new categories as atoms, the old one gone, the
    // other client's state kept.
    raw.ok("SELECT INBOX");
    let flags = imap_flags(&mut raw, uid);
    assert!(flags.contains(&"\\Seen".to_owned()), "{flags:?}");
    assert!(flags.contains(&"$MDNSent".to_owned()), "{flags:?}");
    assert!(flags.contains(&"NonJunk".to_owned()), "{flags:?}");
    assert!(!flags.contains(&"Work".to_owned()), "{flags:?}");
    assert_eq!(
        flags.len(),
        6,
        "\\Seen, two kept, three categories: {flags:?}"
    );

    // The other device sees the same categories, and nothing else.
    let r = sync_one(&eas, &caller(USER, "DEVCATB"), &sync_req(&inbox, &key_b)).await;
    let mut seen = changed_categories(&r, &sid).expect("a Change on the other device");
    seen.sort();
    let mut expected = wanted.clone();
    expected.sort();
    assert_eq!(seen, expected);
    let key_b = r.sync_key.0.clone();

    // The phone drops "Büro".
    let req = change(
        &inbox,
        &key_a,
        &sid,
        Email {
            categories: Some(vec!["Red category".to_owned(), "$money".to_owned()]),
            ..Email::default()
        },
    );
    let r = sync_one(&eas, &caller(USER, "DEVCATA"), &req).await;
    assert!(
        r.responses.as_ref().is_none_or(|v| v.is_empty()),
        "{:?}",
        r.responses
    );
    let flags = imap_flags(&mut raw, uid);
    assert!(flags.contains(&"$MDNSent".to_owned()), "{flags:?}");
    assert!(flags.contains(&"NonJunk".to_owned()), "{flags:?}");
    assert_eq!(flags.len(), 5, "{flags:?}");
    let r = sync_one(&eas, &caller(USER, "DEVCATB"), &sync_req(&inbox, &key_b)).await;
    let mut seen = changed_categories(&r, &sid).expect("a Change on the other device");
    seen.sort();
    assert_eq!(seen, vec!["$money".to_owned(), "Red category".to_owned()]);
}
