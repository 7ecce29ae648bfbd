//! The read-ahead of an initial sync against the real Dovecot of the test
//! stack: after a window with MoreAvailable, the next window's messages are
//! fetched in the background (the device's next Sync waits for a fetch
//! under way rather than running beside it), the windows still carry every
//! message exactly once, and nothing stays reserved at the end.
//!
//! Reserved Dovecot user: load0076.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services, sync_req};

use std::collections::BTreeSet;

use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::sync::ServerCommand;
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::sync::sync;
use opush_tests::{unique, RawImap};

const USER: &str = "load0076@load.test";
const MESSAGES: usize = 30;
const WINDOW: u32 = 10;

fn subjects(commands: &[ServerCommand]) -> Vec<String> {
    commands
        .iter()
        .filter_map(|c| match c {
            ServerCommand::Add {
                application_data: ApplicationData::Email(e),
                ..
            } => e.subject.clone(),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn windows_read_ahead_carry_every_message_once() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let mut raw = RawImap::login(USER);
    let (_, ok) = raw.cmd("SELECT INBOX");
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    let tag = unique("ahead");
    for i in 0..MESSAGES {
        let msg = format!(
            "From: Sender <sender@example.test>\r\nTo: {USER}\r\nSubject: {tag} {i:02}\r\n\
             Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nbody {i}\r\n"
        );
        let (_, ok) = raw.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
        assert!(ok.starts_with("OK"), "append: {ok}");
    }

    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let who = caller(USER, "DEVAHEAD");
    let inbox = first_folder_sync(&eas, &who).await.of_type(2);
    let v = ProtocolVersion::V14_1;
    let res = sync(&sync_req(&inbox, "0"), v, &who, &eas).await.unwrap();
    let mut key = res.collections[0].sync_key.0.clone();
    let mut seen = Vec::new();
    let mut windows = 0;
    loop {
        let mut req = sync_req(&inbox, &key);
        req.collections[0].window_size = Some(WINDOW);
        let res = sync(&req, v, &who, &eas).await.unwrap();
        let c = &res.collections[0];
        assert_eq!(c.status.map(|s| s.code()), Some(1));
        key = c.sync_key.0.clone();
        seen.extend(subjects(c.commands.as_deref().unwrap_or_default()));
        windows += 1;
        if windows == 1 {
            assert!(c.more_available);
            // The next window's messages are read ahead in the background
            // meanwhile; it shows in the cache's reserved bytes.
            assert!(eas.imap.read_ahead().bytes() > 0, "no read-ahead started");
        }
        if !c.more_available {
            break;
        }
        assert!(windows < 10, "the sync did not end");
    }
    assert_eq!(windows, 3);
    let distinct: BTreeSet<&String> = seen.iter().collect();
    assert_eq!(seen.len(), MESSAGES, "every message once: {seen:?}");
    assert_eq!(distinct.len(), MESSAGES);
    assert!(seen.iter().all(|s| s.starts_with(&tag)));
    // The last window took what was read ahead: nothing stays reserved.
    assert_eq!(eas.imap.read_ahead().bytes(), 0);
}
