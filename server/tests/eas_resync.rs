//! Resync cases against the real Dovecot and the embedded store: a
//! UIDVALIDITY change (folder deleted and recreated under the same name)
//! becomes Deletes then Adds, and a 2,000-message INBOX is sent in windows
//! with MoreAvailable, each item exactly once. A message added and one
//! expunged after the connections that list the upper part of a big folder
//! were opened (at the device's first FolderSync) are seen as they are.
//!
//! Reserved Dovecot users: load0035 (UIDVALIDITY), load0036 (2,000 messages),
//! load0068 (2,000 messages changed between FolderSync and SyncKey 0).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use std::collections::BTreeSet;

use opush_protocol::commands::sync::{
    ServerCommand, SyncCollectionRequest, SyncOptions, SyncRequest,
};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::sync::sync;
use opush_server::session::EasServices;
use opush_tests::RawImap;

fn append(imap: &mut RawImap, mailbox: &str, subject: &str) {
    let msg = format!(
        "From: a@example.test\r\nTo: b@load.test\r\nSubject: {subject}\r\n\r\nbody of {subject}\r\n"
    );
    let (_, ok) = imap.cmd(&format!("APPEND {mailbox} {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

/// `user`'s INBOX holding `n` messages (made of `tag` and a number when it
/// holds another count, or when one is older than 20 days: the split
/// listings are asked with a month's FilterType window, see [`req_dated`]),
/// selected on the connection returned.
fn inbox_of(user: &str, n: usize, tag: &str) -> RawImap {
    let mut raw = RawImap::login(user);
    raw.cmd("SELECT INBOX");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let old = format!(
        "BEFORE {}",
        opush_server::dates::imap_date(now - 20 * 86_400)
    );
    if raw.uid_search("ALL").len() != n || !raw.uid_search(&old).is_empty() {
        raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
        raw.cmd("EXPUNGE");
        for i in 0..n {
            append(&mut raw, "INBOX", &format!("{tag} {i:04}"));
        }
    }
    raw
}

fn req(collection: &str, key: &str, window: u32) -> SyncRequest {
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(collection.to_owned()),
            window_size: Some(window),
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

/// [`req`] with FilterType 5 (one month): the folder is listed with its
/// messages' dates, as `list_split` splits from 2,000 messages (without a
/// window, from 10,000).
fn req_dated(collection: &str, key: &str, window: u32) -> SyncRequest {
    let mut r = req(collection, key, window);
    r.collections[0].options = vec![SyncOptions {
        filter_type: Some(5),
        ..SyncOptions::default()
    }];
    r
}

async fn collection_named(eas: &EasServices, user: &str, device: &str, name: &str) -> String {
    first_folder_sync(eas, &caller(user, device))
        .await
        .named(name)
}

// [MS-ASCMD] 2.2.3.177.17: the server resyncs without Status 3 when the
// backend's UIDVALIDITY changes: old items are deleted, new ones added.
#[tokio::test]
async fn a_uidvalidity_change_is_deletes_then_adds() {
    let user = "load0035@load.test";
    let version = ProtocolVersion::V14_1;
    let mut raw = RawImap::login(user);
    raw.cmd("DELETE eas-uv");
    let (_, ok) = raw.cmd("CREATE eas-uv");
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd("SUBSCRIBE eas-uv");
    append(&mut raw, "eas-uv", "before one");
    append(&mut raw, "eas-uv", "before two");

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let coll = collection_named(&eas, user, "DEVUV", "eas-uv").await;
    let r0 = sync(&req(&coll, "0", 50), version, &caller(user, "DEVUV"), &eas)
        .await
        .unwrap();
    let r1 = sync(
        &req(&coll, &r0.collections[0].sync_key.0, 50),
        version,
        &caller(user, "DEVUV"),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(r1.collections[0].commands.as_ref().map(Vec::len), Some(2));

    // Recreate the folder: same name, new UIDVALIDITY.
    let (_, ok) = raw.cmd("DELETE eas-uv");
    assert!(ok.starts_with("OK"), "{ok}");
    std::thread::sleep(std::time::Duration::from_millis(1100));
    raw.cmd("CREATE eas-uv");
    raw.cmd("SUBSCRIBE eas-uv");
    append(&mut raw, "eas-uv", "after");

    let r2 = sync(
        &req(&coll, &r1.collections[0].sync_key.0, 50),
        version,
        &caller(user, "DEVUV"),
        &eas,
    )
    .await
    .unwrap();
    assert_eq!(r2.collections[0].status.map(|s| s.code()), Some(1));
    let cmds = r2.collections[0].commands.clone().unwrap();
    let deletes = cmds
        .iter()
        .filter(|c| matches!(c, ServerCommand::Delete { .. }))
        .count();
    let adds = cmds
        .iter()
        .filter(|c| matches!(c, ServerCommand::Add { .. }))
        .count();
    assert_eq!((deletes, adds), (2, 1), "{cmds:?}");
}

#[tokio::test]
async fn a_two_thousand_message_inbox_is_sent_in_windows() {
    let user = "load0036@load.test";
    let n_messages = 2_000;
    let _raw = inbox_of(user, n_messages, "bulk");

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    // A first device, then a second one: by its SyncKey 0 the pool holds
    // the connections the first one used (logged in, INBOX selected), so
    // one of them lists the upper part of the folder beside the request's
    // own (`list_split`) before that one is done with its part.
    initial_sync_in_windows(&eas, user, "DEVBULK", n_messages).await;
    let split = eas.imap.split_listings();
    initial_sync_in_windows(&eas, user, "DEVBULK2", n_messages).await;
    assert_eq!(eas.imap.split_listings(), split + 1);
}

/// Syncs a new device's INBOX of `n_messages` from SyncKey 0 in windows of
/// 512: every message once, in 4 windows, newest first (message `i` of
/// the fill is the `i`-th appended, so UID order: the first window holds
/// the last 512, in descending order, and so on).
async fn initial_sync_in_windows(eas: &EasServices, user: &str, device: &str, n_messages: usize) {
    let version = ProtocolVersion::V16_1;
    let inbox = collection_named(eas, user, device, "INBOX").await;
    let r0 = sync(
        &req_dated(&inbox, "0", 512),
        version,
        &caller(user, device),
        eas,
    )
    .await
    .unwrap();
    let mut key = r0.collections[0].sync_key.0.clone();
    let mut seen = BTreeSet::new();
    let mut order = Vec::with_capacity(n_messages);
    let mut n_rounds = 0;
    loop {
        n_rounds += 1;
        assert!(n_rounds <= 10, "too many rounds");
        let r = sync(
            &req_dated(&inbox, &key, 512),
            version,
            &caller(user, device),
            eas,
        )
        .await
        .unwrap();
        let c = &r.collections[0];
        let cmds = c.commands.clone().unwrap_or_default();
        assert!(cmds.len() <= 512);
        for cmd in &cmds {
            let ServerCommand::Add {
                server_id,
                application_data,
                ..
            } = cmd
            else {
                panic!("{cmd:?}");
            };
            assert!(
                seen.insert(server_id.0.clone()),
                "sent twice: {server_id:?}"
            );
            let opush_protocol::commands::items::ApplicationData::Email(e) = application_data
            else {
                panic!("{application_data:?}");
            };
            let subject = e.subject.clone().unwrap_or_default();
            let i: usize = subject.rsplit(' ').next().unwrap().parse().unwrap();
            order.push(i);
        }
        key = c.sync_key.0.clone();
        if !c.more_available {
            break;
        }
    }
    assert_eq!(seen.len(), n_messages);
    assert_eq!(n_rounds, 4);
    let newest_first: Vec<usize> = (0..n_messages).rev().collect();
    assert!(
        order == newest_first,
        "not newest first: sent {:?}…",
        &order[..order.len().min(12)]
    );
}

#[tokio::test]
async fn changes_after_the_listing_connections_were_opened_are_listed() {
    let user = "load0068@load.test";
    let n_messages = 2_000;
    let mut raw = inbox_of(user, n_messages, "split");
    let splits = changed_between_folder_sync_and_sync_key_0(&mut raw, user).await;
    assert_eq!(splits, 1, "the initial listing was split");
}

/// A new device's FolderSync, then another session adds a message and
/// expunges the last one (both in the upper part of the folder), then the
/// device's initial sync: every message once, the added one, not the
/// expunged one. The listing is split every time: the pool's test hook
/// (`ImapPool::hold_listings_for_helper`) holds the request's own part
/// until the helper connection, selected before the change, has taken the
/// upper part, where both changes are. Returns how many split listings it
/// made.
async fn changed_between_folder_sync_and_sync_key_0(raw: &mut RawImap, user: &str) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    eas.imap.hold_listings_for_helper();
    let device = "DEVSPLIT";
    let inbox = collection_named(&eas, user, device, "INBOX").await;
    // The FolderSync's connection and the one it logs in ahead, idle in
    // the pool once the latter has selected INBOX (a SELECT counted when it
    // comes back): the change below comes after that SELECT. (Against the
    // stack's Dovecot the helper's view is already current when it lists:
    // this checks the split listing's union, every run, not the helper's
    // NOOP, whose removal it does not notice.)
    let ready = || eas.imap.idle_count(user) >= 2 && eas.imap.mailbox_opens() >= 1;
    for _ in 0..400 {
        if ready() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    assert!(ready(), "the connection opened ahead selected INBOX");
    let last = raw.uid_search("ALL").into_iter().max().unwrap();
    let (lines, _) = raw.cmd(&format!(
        "UID FETCH {last} (BODY.PEEK[HEADER.FIELDS (SUBJECT)])"
    ));
    let all = lines.concat();
    let gone = all
        .split("Subject: ")
        .nth(1)
        .and_then(|r| r.split('\r').next())
        .unwrap()
        .trim()
        .to_owned();
    let added = format!("split added {}", std::process::id());
    append(raw, "INBOX", &added);
    raw.cmd(&format!("UID STORE {last} +FLAGS.SILENT (\\Deleted)"));
    let (_, ok) = raw.cmd(&format!("UID EXPUNGE {last}"));
    assert!(ok.starts_with("OK"), "{ok}");
    let version = ProtocolVersion::V16_1;
    let who = caller(user, device);
    let r0 = sync(&req_dated(&inbox, "0", 512), version, &who, &eas)
        .await
        .unwrap();
    let mut key = r0.collections[0].sync_key.0.clone();
    let mut subjects = BTreeSet::new();
    for _ in 0..10 {
        let r = sync(&req_dated(&inbox, &key, 512), version, &who, &eas)
            .await
            .unwrap();
        let c = &r.collections[0];
        for cmd in c.commands.clone().unwrap_or_default() {
            let ServerCommand::Add {
                application_data, ..
            } = cmd
            else {
                panic!("{cmd:?}");
            };
            let subject = match application_data {
                opush_protocol::commands::items::ApplicationData::Email(e) => e.subject,
                other => panic!("{other:?}"),
            };
            assert!(subjects.insert(subject.clone()), "sent twice: {subject:?}");
        }
        key = c.sync_key.0.clone();
        if !c.more_available {
            break;
        }
    }
    assert_eq!(subjects.len(), 2_000, "every message once");
    assert!(subjects.contains(&Some(added)), "the added message");
    assert!(!subjects.contains(&Some(gone)), "the expunged message");
    eas.imap.split_listings()
}
