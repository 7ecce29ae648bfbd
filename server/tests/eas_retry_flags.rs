//! A window is sent with the flags the engine decided (and recorded) for
//! its messages, whatever their flags when it is rendered: a retried
//! SyncKey answers the same even when a message of its window changed in
//! IMAP in between, and the change reaches the device with a later window.
//! Against the real Dovecot.
//!
//! Reserved Dovecot user: load0100.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services};

use std::collections::BTreeMap;

use opush_protocol::commands::airsyncbase::BodyPreference;
use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::sync::{
    ServerCommand, SyncCollectionRequest, SyncCollectionResponse, SyncOptions, SyncRequest,
};
use opush_protocol::commands::{CollectionId, SyncKey};
use opush_server::session::EasServices;
use opush_tests::{require, unique, RawImap, DOVECOT_IMAP};

fn request(inbox: &str, key: &str) -> SyncRequest {
    SyncRequest {
        collections: vec![SyncCollectionRequest {
            sync_key: SyncKey(key.to_owned()),
            collection_id: CollectionId(inbox.to_owned()),
            window_size: Some(5),
            options: vec![SyncOptions {
                body_preferences: vec![BodyPreference {
                    body_type: 1,
                    truncation_size: Some(20),
                    all_or_none: None,
                    preview: None,
                }],
                ..SyncOptions::default()
            }],
            ..SyncCollectionRequest::default()
        }],
        ..SyncRequest::default()
    }
}

async fn one(eas: &EasServices, user: &str, key: &str, inbox: &str) -> SyncCollectionResponse {
    eas_support::sync_one(eas, &caller(user, "DEVRETRYFLAGS"), &request(inbox, key)).await
}

/// What the device holds: ServerId → (subject, read).
use eas_support::DeviceFolder as Device;

/// Subject → read.
fn shown(device: &Device) -> BTreeMap<String, bool> {
    device
        .subjects()
        .into_iter()
        .map(|(s, (read, _))| (s, read))
        .collect()
}

/// `user`'s INBOX emptied and filled with `n` messages `<tag> mNN`.
fn fill(raw: &mut RawImap, tag: &str, n: u32) {
    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    for i in 0..n {
        raw.append_to_inbox(&format!("{tag} m{i:02}"));
    }
}

/// The INBOX as IMAP has it: subject → read.
fn inbox(raw: &mut RawImap) -> BTreeMap<String, bool> {
    raw.ok("SELECT INBOX");
    let (lines, ok) = raw.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(ok.starts_with("OK"), "{ok}");
    lines
        .iter()
        .filter(|l| l.contains(" FETCH "))
        .map(|l| {
            let subject = l
                .split_once("Subject: ")
                .and_then(|(_, r)| r.split_once('\r'))
                .map(|(s, _)| s.to_owned())
                .unwrap_or_else(|| panic!("no subject in {l:?}"));
            (subject, l.contains("\\Seen"))
        })
        .collect()
}

/// A window's answer lost, and one of its messages marked read in IMAP
/// before the device asks again: the retry answers the same (the message
/// unread, as decided and recorded), and a later window of the run sends
/// the change, so the device ends with the message read.
#[tokio::test]
async fn a_retried_window_keeps_the_flags_it_was_decided_with() {
    require(DOVECOT_IMAP);
    let user = "load0100@load.test";
    let tag = unique("retry");
    let mut raw = RawImap::login(user);
    fill(&mut raw, &tag, 20);
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let inbox_id = first_folder_sync(&eas, &caller(user, "DEVRETRYFLAGS"))
        .await
        .of_type(2);
    let mut key = one(&eas, user, "0", &inbox_id).await.sync_key.0;
    let mut device = Device::default();
    let r = one(&eas, user, &key, &inbox_id).await;
    device.apply(&r);
    key = r.sync_key.0.clone();

    let first = one(&eas, user, &key, &inbox_id).await;
    let subject = |c: &ServerCommand| match c {
        ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        } => e.subject.clone().unwrap_or_default(),
        _ => String::new(),
    };
    let target = first
        .commands
        .iter()
        .flatten()
        .map(subject)
        .nth(1)
        .expect("a second message in the window");
    raw.ok("SELECT INBOX");
    let u = raw.inbox_uid(&target);
    raw.ok(&format!("UID STORE {u} +FLAGS (\\Seen)"));
    let again = one(&eas, user, &key, &inbox_id).await;
    assert_eq!(again, first, "a retried SyncKey answers the same");
    let read_of = |r: &SyncCollectionResponse| {
        r.commands.iter().flatten().find_map(|c| match c {
            ServerCommand::Add {
                application_data: ApplicationData::Email(e),
                ..
            } if e.subject.as_deref() == Some(target.as_str()) => Some(e.read),
            _ => None,
        })
    };
    assert_eq!(
        read_of(&again),
        Some(Some(false)),
        "sent as decided: unread"
    );

    device.apply(&again);
    key = again.sync_key.0.clone();
    let mut more = again.more_available;
    let mut n = 0;
    while more {
        let r = one(&eas, user, &key, &inbox_id).await;
        device.apply(&r);
        key = r.sync_key.0.clone();
        more = r.more_available;
        n += 1;
        assert!(n < 20, "the initial sync does not end");
    }
    let want = inbox(&mut raw);
    assert_eq!(want.get(&target), Some(&true));
    assert_eq!(shown(&device), want, "the device holds exactly the INBOX");
}
