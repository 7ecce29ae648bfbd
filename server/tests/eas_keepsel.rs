//! The windows of an initial sync keep the folder selected on their IMAP
//! connection (no SELECT per window: the session's view is refreshed with
//! a NOOP), and yet every change made in IMAP between two windows reaches
//! the device exactly once: against the real Dovecot, another connection
//! flags, expunges, appends and moves messages between windows (some the
//! device has, some it has not got yet); a retried SyncKey answers the
//! same; another device's flag change, made through the same pooled
//! connection, is seen by the next window. At the end the device holds
//! exactly the INBOX (no missing, no duplicate ServerId, the same flags),
//! and the pool sent no SELECT beyond one per connection it opened.
//! With and without CONDSTORE (the UID + FLAGS listing on the kept
//! selection).
//!
//! Reserved Dovecot users: load0091 (CONDSTORE), load0092 (without).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use std::collections::BTreeMap;

use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::commands::items::{ApplicationData, Email, Flag};
use opush_protocol::commands::sync::{
    ClientCommand, SyncCollectionRequest, SyncCollectionResponse, SyncOptions, SyncRequest,
};
use opush_protocol::commands::{CollectionId, ServerId, SyncKey};
use opush_server::backends::imap::ImapPool;
use opush_server::session::EasServices;
use opush_tests::{require, unique, RawImap, DOVECOT_IMAP};

const MOVES: &str = "keepsel-moves";

/// The INBOX as IMAP has it: subject → (read, flagged).
fn inbox(raw: &mut RawImap) -> BTreeMap<String, (bool, bool)> {
    raw.ok("SELECT INBOX");
    let (lines, status) = raw.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(status.starts_with("OK"), "{status}");
    let mut out = BTreeMap::new();
    for l in lines.iter().filter(|l| l.contains(" FETCH ")) {
        let flags = l
            .split_once("FLAGS (")
            .and_then(|(_, r)| r.split_once(')'))
            .map(|(f, _)| f.to_owned())
            .unwrap_or_default();
        let subject = l
            .split_once("Subject: ")
            .and_then(|(_, r)| r.split_once('\r'))
            .map(|(s, _)| s.to_owned())
            .unwrap_or_else(|| panic!("no subject in {l:?}"));
        out.insert(
            subject,
            (flags.contains("\\Seen"), flags.contains("\\Flagged")),
        );
    }
    out
}

use eas_support::DeviceFolder as Device;

fn request(
    inbox: &str,
    key: &str,
    window: u32,
    commands: Option<Vec<ClientCommand>>,
) -> SyncRequest {
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(inbox.to_owned()),
            window_size: Some(window),
            options: vec![SyncOptions {
                body_preferences: vec![BodyPreference {
                    body_type: 1,
                    truncation_size: Some(20),
                    all_or_none: None,
                    preview: None,
                }],
                ..SyncOptions::default()
            }],
            commands,
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

async fn one(
    eas: &EasServices,
    user: &str,
    device: &str,
    req: SyncRequest,
) -> SyncCollectionResponse {
    eas_support::sync_one(eas, &caller(user, device), &req).await
}

async fn scenario(user: &str, use_condstore: bool) {
    require(DOVECOT_IMAP);
    let tag = unique("ks");
    let mut raw = RawImap::login(user);
    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    raw.cmd(&format!("CREATE {MOVES}"));
    raw.cmd(&format!("SUBSCRIBE {MOVES}"));
    let m = |i: u32| format!("{tag} m{i:02}");
    for i in 0..40 {
        raw.append_to_inbox(&m(i));
    }

    let dir = tempfile::tempdir().unwrap();
    let mut eas = services(&dir).await;
    let mut cfg = eas.imap.config().clone();
    cfg.use_condstore = use_condstore;
    eas.imap = std::sync::Arc::new(ImapPool::new(cfg));
    let folders = first_folder_sync(&eas, &caller(user, "DEVKS")).await;
    let inbox_id = folders.of_type(2);
    let mut key = one(&eas, user, "DEVKS", request(&inbox_id, "0", 5, None))
        .await
        .sync_key
        .0;
    let mut device = Device::default();

    // Window 1 selects INBOX (first look: a full listing).
    let r = one(&eas, user, "DEVKS", request(&inbox_id, &key, 5, None)).await;
    assert!(r.more_available);
    device.apply(&r);
    key = r.sync_key.0.clone();

    let mut window = 1;
    let mut more = true;
    let mut flagged_by_other = None;
    while more {
        window += 1;
        match window {
            3 => {
                // Between two windows: flags on a message the device has
                // and on one it has not got yet, expunges, new messages,
                // moves out of INBOX.
                raw.ok("SELECT INBOX");
                let on_device = raw.inbox_uid(&m(1));
                let later = raw.inbox_uid(&m(20));
                raw.ok(&format!("UID STORE {on_device} +FLAGS (\\Flagged)"));
                raw.ok(&format!("UID STORE {later} +FLAGS (\\Seen)"));
                for gone in [m(2), m(21)] {
                    let u = raw.inbox_uid(&gone);
                    raw.ok(&format!("UID STORE {u} +FLAGS.SILENT (\\Deleted)"));
                    raw.ok(&format!("UID EXPUNGE {u}"));
                }
                raw.append_to_inbox(&format!("{tag} n00"));
                raw.append_to_inbox(&format!("{tag} n01"));
                for moved in [m(3), m(22)] {
                    let u = raw.inbox_uid(&moved);
                    raw.ok(&format!("UID MOVE {u} {MOVES}"));
                }
            }
            5 => {
                // A lost answer: the same key gets the same answer, even
                // after a change made meanwhile (seen by the next window).
                let first = one(&eas, user, "DEVKS", request(&inbox_id, &key, 5, None)).await;
                raw.ok("SELECT INBOX");
                let u = raw.inbox_uid(&m(4));
                raw.ok(&format!("UID STORE {u} +FLAGS (\\Seen)"));
                let again = one(&eas, user, "DEVKS", request(&inbox_id, &key, 5, None)).await;
                assert_eq!(again, first, "a retried SyncKey answers the same");
                device.apply(&first);
                key = first.sync_key.0.clone();
                more = first.more_available;
                continue;
            }
            7 => {
                // Another device of the user, itself in its initial sync
                // (so its Syncs leave INBOX selected), flags a message both
                // have: its STORE runs on the user's pooled connection, the
                // one that keeps INBOX selected for these windows.
                let mut other = Device::default();
                let inbox_id = first_folder_sync(&eas, &caller(user, "DEVKS2"))
                    .await
                    .of_type(2);
                let k = one(&eas, user, "DEVKS2", request(&inbox_id, "0", 10, None))
                    .await
                    .sync_key
                    .0;
                let r = one(&eas, user, "DEVKS2", request(&inbox_id, &k, 10, None)).await;
                assert!(r.more_available);
                other.apply(&r);
                let target = other
                    .items
                    .values()
                    .find(|s| !s.flagged && device.items.values().any(|d| d.subject == s.subject))
                    .map(|s| s.subject.clone())
                    .expect("a message both devices have");
                let change = ClientCommand::Change {
                    class: None,
                    server_id: ServerId(other.id_of(&target)),
                    application_data: ApplicationData::Email(Box::new(Email {
                        flag: Some(Flag {
                            status: Some(2),
                            flag_type: Some("Follow up".to_owned()),
                            ..Default::default()
                        }),
                        ..Email::default()
                    })),
                };
                let key2 = r.sync_key.0.clone();
                let r = one(
                    &eas,
                    user,
                    "DEVKS2",
                    request(&inbox_id, &key2, 10, Some(vec![change])),
                )
                .await;
                assert!(r.more_available);
                flagged_by_other = Some(target);
            }
            _ => {}
        }
        let r = one(&eas, user, "DEVKS", request(&inbox_id, &key, 5, None)).await;
        device.apply(&r);
        key = r.sync_key.0.clone();
        more = r.more_available;
        assert!(window < 40, "the initial sync does not end");
    }
    // The windows kept the selection: each connection the pool logged in
    // (the windows', a read-ahead's, the other device's) selected INBOX
    // once at most. A window that reselected every time would open INBOX
    // once per window. (Under CPU load a window sometimes gets a
    // read-ahead's connection that read the changes above during its
    // body FETCH: Dovecot then sends no HIGHESTMODSEQ code, and the view
    // is completed by a STATUS, not a second SELECT: `Session::refresh`.)
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let opens = eas.imap.mailbox_opens();
    let connections = eas.imap.logins();
    assert!(
        opens <= connections,
        "{opens} SELECT/EXAMINE over {window} windows on {connections} connections"
    );
    // Every change was made before the last window's look at IMAP: the
    // device is up to date when the windows end, and the next Sync (a
    // STATUS, the folder left) has nothing to add.
    let want = inbox(&mut raw);
    assert_eq!(want.len(), 40 - 4 + 2);
    assert_eq!(want.get(&m(1)), Some(&(false, true)));
    assert_eq!(want.get(&m(4)), Some(&(true, false)));
    let target = flagged_by_other.expect("window 7 ran");
    assert!(
        want.get(&target).is_some_and(|(_, f)| *f),
        "{target} flagged in IMAP"
    );
    assert_eq!(want.get(&m(20)), Some(&(true, false)));
    assert_eq!(
        device.subjects(),
        want,
        "the device holds exactly the INBOX"
    );
    let r = one(&eas, user, "DEVKS", request(&inbox_id, &key, 5, None)).await;
    assert!(r.commands.is_none(), "missed by the windows: {r:?}");

    // Clean up the moved messages.
    raw.ok(&format!("SELECT {MOVES}"));
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
}

#[tokio::test]
async fn windows_keep_the_selection_and_see_every_change() {
    scenario("load0091@load.test", true).await;
}

#[tokio::test]
async fn windows_keep_the_selection_without_condstore() {
    scenario("load0092@load.test", false).await;
}
