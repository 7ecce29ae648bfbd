//! Bodies inside Sync against the real Dovecot, for each BodyPreference a
//! device may ask: plain text cut at its TruncationSize (and the whole
//! size told), HTML, MIME, `AllOrNone` (all of a body or none of it), and
//! messages that must never block a sync: a text part without a charset
//! carrying 8-bit bytes, and an invitation whose calendar part is broken.
//!
//! Reserved Dovecot users: load1333.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, sync_one, sync_req};

use opush_protocol::commands::airsyncbase::{Body, BodyPreference};
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::{ServerCommand, SyncOptions};
use opush_server::session::EasServices;
use opush_tests::{require, unique, RawImap, DOVECOT_IMAP};

const USER: &str = "load1333@load.test";

fn append(raw: &mut RawImap, msg: &str) {
    let (_, ok) = raw.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
    assert!(ok.starts_with("OK"), "append: {ok}");
}

/// A device that asks `prefs` syncs INBOX from SyncKey 0; its Emails by subject.
async fn bodies(
    eas: &EasServices,
    device: &str,
    prefs: Vec<BodyPreference>,
    mime_support: Option<u8>,
) -> Vec<(String, Email)> {
    let c = caller(USER, device);
    let inbox = first_folder_sync(eas, &c).await.of_type(2);
    let with_options = |key: &str| {
        let mut req = sync_req(&inbox, key);
        req.collections[0].options = vec![SyncOptions {
            body_preferences: prefs.clone(),
            mime_support,
            ..SyncOptions::default()
        }];
        req
    };
    let mut key = sync_one(eas, &c, &with_options("0")).await.sync_key.0;
    let mut out = Vec::new();
    for _ in 0..10 {
        let r = sync_one(eas, &c, &with_options(&key)).await;
        for cmd in r.commands.iter().flatten() {
            if let ServerCommand::Add {
                application_data: ApplicationData::Email(e),
                ..
            } = cmd
            {
                out.push((e.subject.clone().unwrap_or_default(), (**e).clone()));
            }
        }
        key = r.sync_key.0.clone();
        if !r.more_available {
            return out;
        }
    }
    panic!("the initial sync does not end");
}

fn body_of<'a>(emails: &'a [(String, Email)], subject: &str) -> &'a Body {
    emails
        .iter()
        .find(|(s, _)| s == subject)
        .and_then(|(_, e)| e.body.as_ref())
        .unwrap_or_else(|| panic!("{subject}: no Body in {emails:?}"))
}

fn pref(body_type: u8, truncation_size: Option<u32>, all_or_none: Option<bool>) -> BodyPreference {
    BodyPreference {
        body_type,
        truncation_size,
        all_or_none,
        preview: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_body_preference_and_odd_messages_in_sync() {
    require(DOVECOT_IMAP);
    let tag = unique("bodies");
    let mut raw = RawImap::login(USER);
    raw.ok("SELECT INBOX");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.ok("EXPUNGE");
    let head = |subject: &str| {
        format!(
            "From: Sender <sender@example.test>\r\nTo: <{USER}>\r\nSubject: {subject}\r\n\
             Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n"
        )
    };
    // 2,000 characters of text, 2,000 bytes.
    let long_text: String = (0..200).map(|i| format!("line {i:04}\n")).collect();
    assert_eq!(long_text.len(), 2000);
    let plain = format!("{tag} plain");
    append(
        &mut raw,
        &format!(
            "{}Content-Type: text/plain; charset=utf-8\r\n\r\n{}",
            head(&plain),
            long_text.replace('\n', "\r\n")
        ),
    );
    let html = format!("{tag} html");
    append(
        &mut raw,
        &format!(
            "{}Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>Hello <b>bold</b> world</p></body></html>\r\n",
            head(&html)
        ),
    );
    // 8-bit text and no charset at all.
    let bare = format!("{tag} no charset");
    append(
        &mut raw,
        &format!(
            "{}Content-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\nCaf\u{e9} cr\u{e8}me\r\n",
            head(&bare)
        ),
    );
    // An invitation whose calendar part is not iCalendar.
    let invite = format!("{tag} broken invitation");
    append(
        &mut raw,
        &format!(
            "{}Content-Type: multipart/alternative; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease come.\r\n\
             --b1\r\nContent-Type: text/calendar; method=REQUEST; charset=utf-8\r\n\r\n\
             BEGIN:VCALENDAR\r\nMETHOD:REQUEST\r\nBEGIN:VEVENT\r\nDTSTART:not-a-date\r\nSUMMARY\r\n\
             --b1--\r\n",
            head(&invite)
        ),
    );

    let dir = tempfile::tempdir().unwrap();
    let eas = eas_support::services(&dir).await;

    // Plain text cut at 100 bytes; the whole size told.
    let got = bodies(&eas, "DEVBODY1", vec![pref(1, Some(100), None)], None).await;
    assert_eq!(got.len(), 4, "every message synced: {got:?}");
    let b = body_of(&got, &plain);
    assert_eq!(b.body_type, 1);
    assert_eq!(b.truncated, Some(true), "{b:?}");
    let data = b.data.as_deref().unwrap();
    assert!(
        data.len() <= 100 && data.starts_with("line 0000"),
        "{data:?}"
    );
    assert!(b.estimated_data_size.unwrap() >= 2000, "{b:?}");
    // HTML asked as plain text: its text, without tags.
    let b = body_of(&got, &html);
    let data = b.data.as_deref().unwrap();
    assert!(data.contains("Hello bold world"), "{data:?}");
    assert!(!data.contains('<'), "{data:?}");
    // The bare 8-bit body and the broken invitation still come through.
    let b = body_of(&got, &bare);
    assert!(b.data.as_deref().unwrap().contains("Caf"), "{b:?}");
    let b = body_of(&got, &invite);
    assert!(b.data.as_deref().unwrap().contains("Please come."), "{b:?}");

    // HTML as HTML, whole.
    let got = bodies(&eas, "DEVBODY2", vec![pref(2, Some(100_000), None)], None).await;
    let b = body_of(&got, &html);
    assert_eq!(b.body_type, 2);
    assert!(b.data.as_deref().unwrap().contains("<b>bold</b>"), "{b:?}");
    assert_ne!(b.truncated, Some(true));

    // MIME, cut: the message as stored, from its first header.
    let got = bodies(&eas, "DEVBODY3", vec![pref(4, Some(300), None)], Some(2)).await;
    let b = body_of(&got, &plain);
    assert_eq!(b.body_type, 4);
    assert_eq!(b.truncated, Some(true), "{b:?}");
    let data = b.data.as_deref().unwrap();
    assert!(data.starts_with("From: Sender"), "{data:?}");
    assert!(data.len() <= 300, "{}", data.len());

    // AllOrNone: too big for 100 bytes, nothing; within 100,000, all.
    let got = bodies(&eas, "DEVBODY4", vec![pref(1, Some(100), Some(true))], None).await;
    let b = body_of(&got, &plain);
    assert_eq!(b.truncated, Some(true), "{b:?}");
    assert!(b.data.as_deref().unwrap_or("").is_empty(), "{b:?}");
    let got = bodies(
        &eas,
        "DEVBODY5",
        vec![pref(1, Some(100_000), Some(true))],
        None,
    )
    .await;
    let b = body_of(&got, &plain);
    assert_ne!(b.truncated, Some(true), "{b:?}");
    assert_eq!(
        b.data.as_deref().unwrap().replace("\r\n", "\n").trim_end(),
        long_text.trim_end()
    );
}
