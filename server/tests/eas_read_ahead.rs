//! The read-ahead of an initial sync against the real Dovecot of the test
//! stack: after a window with MoreAvailable, the next windows' messages
//! (metadata and bodies) are fetched in the background, the windows still
//! carry every message exactly once, and nothing stays reserved at the end.
//! What changes in IMAP after a message was read ahead wins over the cache:
//! new flags are sent as they are now, an expunged message is not sent,
//! and a sync in windows with changes made between them ends with exactly
//! what the mailbox holds.
//!
//! The first windows are read ahead from the SyncKey 0 listing itself,
//! before the device asks for them.
//!
//! With the user's connections all taken, an initial sync still carries
//! every message once: its read-aheads give up a connection they cannot
//! get instead of holding the windows up.
//!
//! A device's first FolderSync logs its initial sync's read-ahead
//! connections in beforehand: its SyncKey 0 logs in none.
//!
//! Reserved Dovecot users: load0067, load0076, load0093, load0095–load0097,
//! load0099.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod eas_support;
use eas_support::{caller, first_folder_sync, services, sync_req};

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::items::Email;
use opush_protocol::commands::sync::ServerCommand;
use opush_protocol::version::ProtocolVersion;
use opush_server::commands::sync::sync;
use opush_server::session::{Caller, EasServices};
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

/// Empties `user`'s INBOX and appends `n` small messages whose subjects are
/// `tag` and a two-digit number; returns the open connection (INBOX
/// selected) and the UIDs in order.
fn fill_inbox(user: &str, tag: &str, n: usize) -> (RawImap, Vec<u32>) {
    let mut raw = RawImap::login(user);
    let (_, ok) = raw.cmd("SELECT INBOX");
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    raw.cmd("EXPUNGE");
    let mut uids = Vec::new();
    for i in 0..n {
        let msg = format!(
            "From: Sender <sender@example.test>\r\nTo: {user}\r\nSubject: {tag} {i:02}\r\n\
             Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nbody {i}\r\n"
        );
        let (_, ok) = raw.cmd(&format!("APPEND INBOX {{{}+}}\r\n{msg}", msg.len()));
        assert!(ok.starts_with("OK"), "append: {ok}");
        uids.push(appended_uid(&ok));
    }
    (raw, uids)
}

/// The UID of `OK [APPENDUID <validity> <uid>] …` (UIDPLUS).
fn appended_uid(ok: &str) -> u32 {
    ok.split_once("APPENDUID ")
        .and_then(|(_, rest)| rest.split([' ', ']']).nth(1))
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| panic!("no APPENDUID in {ok:?}"))
}

/// What the device holds: ServerId → (subject, read, flagged).
type DeviceView = BTreeMap<String, (String, bool, bool)>;

fn flagged(e: &Email) -> bool {
    e.flag.as_ref().is_some_and(|f| f.status == Some(2))
}

/// Applies one window's commands to `view`; returns the Adds' Emails.
fn apply(view: &mut DeviceView, commands: &[ServerCommand]) -> Vec<Email> {
    let mut added = Vec::new();
    for c in commands {
        match c {
            ServerCommand::Add {
                server_id,
                application_data: ApplicationData::Email(e),
            } => {
                let was = view.insert(
                    server_id.0.clone(),
                    (
                        e.subject.clone().unwrap_or_default(),
                        e.read == Some(true),
                        flagged(e),
                    ),
                );
                assert!(was.is_none(), "{} added twice", server_id.0);
                added.push((**e).clone());
            }
            ServerCommand::Change {
                server_id,
                application_data: ApplicationData::Email(e),
            } => {
                let item = view
                    .get_mut(&server_id.0)
                    .unwrap_or_else(|| panic!("change of unknown {}", server_id.0));
                if let Some(read) = e.read {
                    item.1 = read;
                }
                if e.flag.is_some() {
                    item.2 = flagged(e);
                }
            }
            ServerCommand::Delete { server_id, .. } | ServerCommand::SoftDelete { server_id } => {
                assert!(
                    view.remove(&server_id.0).is_some(),
                    "delete of unknown {}",
                    server_id.0
                );
            }
            other => panic!("unexpected command {other:?}"),
        }
    }
    added
}

/// A device syncing one INBOX in windows of [`WINDOW`].
struct Device<'a> {
    eas: &'a EasServices,
    who: Caller<'a>,
    inbox: String,
    key: String,
    view: DeviceView,
}

impl Device<'_> {
    /// The device key the read-ahead cache knows the device by.
    fn cache_key(&self) -> String {
        self.who.device_key().unwrap().to_string()
    }

    /// One window: the Emails it added, and whether more is available.
    async fn window(&mut self) -> (Vec<Email>, bool) {
        let mut req = sync_req(&self.inbox, &self.key);
        req.collections[0].window_size = Some(WINDOW);
        let res = sync(&req, ProtocolVersion::V14_1, &self.who, self.eas)
            .await
            .unwrap();
        let c = &res.collections[0];
        assert_eq!(c.status.map(|s| s.code()), Some(1));
        self.key = c.sync_key.0.clone();
        let added = apply(&mut self.view, c.commands.as_deref().unwrap_or_default());
        (added, c.more_available)
    }

    /// The UIDs the read-ahead holds for this device (once it is done).
    async fn read_ahead(&self) -> Vec<u32> {
        self.eas
            .imap
            .read_ahead()
            .held(&self.cache_key(), Duration::from_secs(30))
            .await
    }
}

async fn device<'a>(eas: &'a EasServices, user: &'a str, id: &'a str) -> Device<'a> {
    device_asking(eas, user, id, Some(50)).await
}

/// [`device`] whose SyncKey 0 asks `window` (`None`: no WindowSize).
async fn device_asking<'a>(
    eas: &'a EasServices,
    user: &'a str,
    id: &'a str,
    window: Option<u32>,
) -> Device<'a> {
    let who = caller(user, id);
    let inbox = first_folder_sync(eas, &who).await.of_type(2);
    let mut first = sync_req(&inbox, "0");
    first.collections[0].window_size = window;
    let res = sync(&first, ProtocolVersion::V14_1, &who, eas)
        .await
        .unwrap();
    let key = res.collections[0].sync_key.0.clone();
    Device {
        eas,
        who,
        inbox,
        key,
        view: DeviceView::new(),
    }
}

/// (subject, seen, flagged) of every message of the selected mailbox.
fn imap_view(raw: &mut RawImap) -> BTreeSet<(String, bool, bool)> {
    raw.cmd("NOOP");
    let (lines, ok) = raw.cmd("UID FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (SUBJECT)])");
    assert!(ok.starts_with("OK"), "{ok}");
    lines
        .iter()
        .filter(|l| l.contains("FETCH"))
        .map(|l| {
            let subject = l
                .split_once("Subject: ")
                .map(|(_, s)| s.lines().next().unwrap_or("").trim().to_owned())
                .unwrap_or_default();
            (subject, l.contains("\\Seen"), l.contains("\\Flagged"))
        })
        .collect()
}

#[tokio::test]
async fn flags_changed_after_the_read_ahead_are_sent_as_they_are_now() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    const USER: &str = "load0095@load.test";
    let tag = unique("aheadflags");
    let (mut raw, uids) = fill_inbox(USER, &tag, MESSAGES);
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let mut dev = device(&eas, USER, "DEVAHEADFLAGS").await;
    let (_, more) = dev.window().await;
    assert!(more);
    // The next window was read ahead with the flags of then (none) …
    let held = dev.read_ahead().await;
    assert!(held.len() >= 2, "nothing read ahead: {held:?}");
    // … and two of its messages change in IMAP afterwards.
    let (_, ok) = raw.cmd(&format!(
        "UID STORE {},{} +FLAGS.SILENT (\\Seen \\Flagged)",
        held[0], held[1]
    ));
    assert!(ok.starts_with("OK"), "{ok}");
    let subject_of =
        |uid: u32| format!("{tag} {:02}", uids.iter().position(|u| *u == uid).unwrap());
    let marked = [subject_of(held[0]), subject_of(held[1])];
    let mut added = Vec::new();
    loop {
        let (window, more) = dev.window().await;
        added.extend(window);
        if !more {
            break;
        }
    }
    assert_eq!(added.len(), MESSAGES - WINDOW as usize);
    for e in &added {
        let subject = e.subject.clone().unwrap_or_default();
        let changed = marked.contains(&subject);
        assert_eq!(e.read == Some(true), changed, "Read of {subject}");
        assert_eq!(flagged(e), changed, "Flag of {subject}");
    }
    // The device holds what IMAP holds.
    let device: BTreeSet<(String, bool, bool)> = dev.view.values().cloned().collect();
    assert_eq!(device, imap_view(&mut raw));
    assert_eq!(eas.imap.read_ahead().bytes(), 0);
}

#[tokio::test]
async fn a_message_expunged_after_the_read_ahead_is_not_sent() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    const USER: &str = "load0096@load.test";
    let tag = unique("aheadgone");
    let (mut raw, uids) = fill_inbox(USER, &tag, MESSAGES);
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let mut dev = device(&eas, USER, "DEVAHEADGONE").await;
    let (_, more) = dev.window().await;
    assert!(more);
    let held = dev.read_ahead().await;
    assert!(!held.is_empty(), "nothing read ahead");
    // A message read ahead is expunged before the device asks for it.
    let gone = held[0];
    let subject = format!("{tag} {:02}", uids.iter().position(|u| *u == gone).unwrap());
    let (_, ok) = raw.cmd(&format!("UID STORE {gone} +FLAGS.SILENT (\\Deleted)"));
    assert!(ok.starts_with("OK"), "{ok}");
    let (_, ok) = raw.cmd(&format!("UID EXPUNGE {gone}"));
    assert!(ok.starts_with("OK"), "{ok}");
    let mut sent = Vec::new();
    loop {
        let (added, more) = dev.window().await;
        sent.extend(added.into_iter().filter_map(|e| e.subject));
        if !more {
            break;
        }
    }
    assert!(!sent.contains(&subject), "{subject} sent after its expunge");
    assert_eq!(dev.view.len(), MESSAGES - 1);
    let device: BTreeSet<(String, bool, bool)> = dev.view.values().cloned().collect();
    assert_eq!(device, imap_view(&mut raw));
}

#[tokio::test]
async fn a_sync_in_windows_read_ahead_ends_with_exactly_the_mailbox() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    const USER: &str = "load0097@load.test";
    let tag = unique("aheadall");
    let (mut raw, uids) = fill_inbox(USER, &tag, MESSAGES);
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let mut dev = device(&eas, USER, "DEVAHEADALL").await;
    let mut windows = 0;
    loop {
        let (_, more) = dev.window().await;
        windows += 1;
        if !more {
            break;
        }
        assert!(windows < 20, "the sync did not end");
        // Between windows, with the next one read ahead: a flag, an
        // expunge, a new message, a move out, each of a message the
        // device has or has not got yet.
        let held = dev.read_ahead().await;
        assert!(!held.is_empty(), "window {windows}: nothing read ahead");
        if windows == 1 {
            // Two windows ahead: all that is left.
            assert_eq!(held.len(), MESSAGES - WINDOW as usize, "{held:?}");
        }
        match windows {
            1 => {
                raw.cmd(&format!(
                    "UID STORE {},{} +FLAGS.SILENT (\\Flagged)",
                    uids[0],
                    held[held.len() - 1]
                ));
                raw.cmd(&format!("UID STORE {} +FLAGS.SILENT (\\Deleted)", held[0]));
                raw.cmd(&format!("UID EXPUNGE {}", held[0]));
            }
            2 => {
                let msg = format!(
                    "From: Late <late@example.test>\r\nTo: {USER}\r\nSubject: {tag} late\r\n\
                     Date: Sat, 28 Nov 2026 11:00:00 +0000\r\nContent-Type: text/plain\r\n\r\nlate\r\n"
                );
                let (_, ok) = raw.cmd(&format!(
                    "APPEND INBOX (\\Seen) {{{}+}}\r\n{msg}",
                    msg.len()
                ));
                assert!(ok.starts_with("OK"), "append: {ok}");
                let (_, ok) = raw.cmd(&format!("UID MOVE {} Trash", held[1]));
                assert!(ok.starts_with("OK"), "move: {ok}");
                raw.cmd(&format!("UID STORE {} +FLAGS.SILENT (\\Seen)", uids[1]));
            }
            _ => {}
        }
    }
    // A Sync after the last window picks up what changed meanwhile.
    while dev.window().await.1 {}
    let device: BTreeSet<(String, bool, bool)> = dev.view.values().cloned().collect();
    let mailbox = imap_view(&mut raw);
    assert_eq!(mailbox.len(), MESSAGES - 1, "{mailbox:?}");
    assert!(mailbox
        .iter()
        .any(|(s, seen, _)| s.ends_with("late") && *seen));
    assert_eq!(device, mailbox);
    assert_eq!(dev.view.len(), mailbox.len(), "no duplicates");
    assert_eq!(eas.imap.read_ahead().bytes(), 0);
}

/// The UIDs of `uids` in the engine's candidate order at SyncKey 0:
/// newest first, i.e. UID descending (one UIDVALIDITY).
fn engine_order(uids: &[u32]) -> Vec<u32> {
    let mut order = uids.to_vec();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order
}

#[tokio::test]
async fn sync_key_0_reads_the_first_windows_ahead_from_its_listing() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    const USER: &str = "load0093@load.test";
    let tag = unique("aheadfirst");
    let (mut raw, uids) = fill_inbox(USER, &tag, MESSAGES);
    let dir = tempfile::tempdir().unwrap();
    let mut eas = services(&dir).await;
    // A device asking no WindowSize at SyncKey 0 (most do not): its first
    // read-ahead is a default window, the second one up to the largest.
    eas.engine.default_window = 4;
    eas.engine.max_window = 11;
    let mut dev = device_asking(&eas, USER, "DEVAHEADFIRST", None).await;
    // Read ahead from the listing: the first 4 + 7 messages, in the order
    // the engine sends them (the newest first).
    let held = dev.read_ahead().await;
    let mut expected: Vec<u32> = engine_order(&uids).into_iter().take(11).collect();
    expected.sort_unstable();
    assert_eq!(held, expected, "read ahead after SyncKey 0");
    // Read ahead with the listing's metadata; then, before the first
    // window, IMAP flags two of those messages, expunges a third, and flags
    // one not read ahead (the rest of the listing is kept for the next
    // read-aheads).
    let order = engine_order(&uids);
    let (flag, gone, later) = ([order[0], order[5]], order[2], order[20]);
    let (_, ok) = raw.cmd(&format!(
        "UID STORE {},{},{later} +FLAGS.SILENT (\\Seen \\Flagged)",
        flag[0], flag[1]
    ));
    assert!(ok.starts_with("OK"), "{ok}");
    raw.cmd(&format!("UID STORE {gone} +FLAGS.SILENT (\\Deleted)"));
    let (_, ok) = raw.cmd(&format!("UID EXPUNGE {gone}"));
    assert!(ok.starts_with("OK"), "{ok}");
    let subject_of = |uid: u32| {
        let i = uids.iter().position(|u| *u == uid).unwrap();
        format!("{tag} {i:02}")
    };
    let marked: Vec<String> = [flag[0], flag[1], later]
        .into_iter()
        .map(subject_of)
        .collect();
    // The device then syncs in windows of 10: every message still there
    // exactly once, with its flags as they are now, and nothing stays
    // reserved.
    let mut added = Vec::new();
    loop {
        let (window, more) = dev.window().await;
        added.extend(window);
        if !more {
            break;
        }
        assert!(added.len() < 2 * MESSAGES, "the sync did not end");
    }
    let subjects: Vec<String> = added.iter().filter_map(|e| e.subject.clone()).collect();
    let distinct: BTreeSet<&String> = subjects.iter().collect();
    assert_eq!(
        subjects.len(),
        MESSAGES - 1,
        "every message once: {subjects:?}"
    );
    assert_eq!(distinct.len(), MESSAGES - 1);
    assert!(
        !distinct.contains(&subject_of(gone)),
        "an expunged message was sent"
    );
    for e in &added {
        let subject = e.subject.clone().unwrap_or_default();
        let changed = marked.contains(&subject);
        assert_eq!(e.read == Some(true), changed, "Read of {subject}");
        assert_eq!(flagged(e), changed, "Flag of {subject}");
    }
    assert_eq!(eas.imap.read_ahead().bytes(), 0);
}

#[tokio::test]
async fn an_initial_sync_with_every_connection_taken_still_carries_every_message_once() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    const USER: &str = "load0099@load.test";
    let tag = unique("aheadbusy");
    let (_raw, _) = fill_inbox(USER, &tag, MESSAGES);
    let dir = tempfile::tempdir().unwrap();
    let mut eas = services(&dir).await;
    // Two connections per user: the device's Sync takes one, another
    // request of the user the other, so no read-ahead can have its own.
    let mut cfg = eas.imap.config().clone();
    cfg.pool_size = 2;
    eas.imap = std::sync::Arc::new(opush_server::backends::imap::ImapPool::new(cfg));
    let password = opush_server::config::Secret::new(opush_tests::demo_password());
    let mut other = eas.imap.get(USER, &password).await.unwrap();
    other.status("INBOX").await.unwrap();
    let mut dev = device_asking(&eas, USER, "DEVAHEADBUSY", None).await;
    let mut added = Vec::new();
    loop {
        let (window, more) = dev.window().await;
        added.extend(window.into_iter().filter_map(|e| e.subject));
        if !more {
            break;
        }
        assert!(added.len() < 2 * MESSAGES, "the sync did not end");
    }
    let distinct: BTreeSet<&String> = added.iter().collect();
    assert_eq!(added.len(), MESSAGES, "every message once: {added:?}");
    assert_eq!(distinct.len(), MESSAGES);
    assert!(added.iter().all(|s| s.starts_with(&tag)));
    drop(other);
}

#[tokio::test]
async fn a_first_folder_sync_logs_in_the_initial_sync_connections_beforehand() {
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    const USER: &str = "load0067@load.test";
    let tag = unique("prewarm");
    let (_raw, _) = fill_inbox(USER, &tag, MESSAGES);
    let dir = tempfile::tempdir().unwrap();
    let eas = services(&dir).await;
    let who = caller(USER, "DEVPREWARM");
    let before = eas.imap.logins();
    let inbox = first_folder_sync(&eas, &who).await.of_type(2);
    // The FolderSync's own connection, then the one the initial sync's
    // read-aheads take turns on (the device's lane), logged in in the
    // background.
    let expected = before + 2;
    for _ in 0..200 {
        if eas.imap.logins() >= expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(eas.imap.logins(), expected, "logins after FolderSync 0");
    // Their SELECT of INBOX, after the login, then back to the pool idle.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The initial sync uses them: its SyncKey 0 (listing, read-aheads of
    // the first windows) logs in none.
    let res = sync(&sync_req(&inbox, "0"), ProtocolVersion::V14_1, &who, &eas)
        .await
        .unwrap();
    assert_eq!(eas.imap.logins(), expected, "logins after SyncKey 0");
    let mut key = res.collections[0].sync_key.0.clone();
    let mut added = 0;
    loop {
        let res = sync(&sync_req(&inbox, &key), ProtocolVersion::V14_1, &who, &eas)
            .await
            .unwrap();
        let c = &res.collections[0];
        added += c.commands.as_ref().map_or(0, Vec::len);
        key = c.sync_key.0.clone();
        if !c.more_available {
            break;
        }
        assert!(added <= MESSAGES, "the sync did not end");
    }
    assert_eq!(added, MESSAGES);
    // Every window was read ahead on that one connection: no other login
    // (each Dovecot session reading the folder's messages would pay for
    // its UID list again), and the lane is gone with the sync's end.
    let logins = eas.imap.logins();
    assert_eq!(logins, expected, "logins after the initial sync");
    assert_eq!(eas.imap.read_ahead().lanes(), 0, "lanes after the sync");
    // A FolderSync that is not the first logs in nothing ahead.
    use opush_protocol::commands::folder_sync::FolderSyncRequest;
    let again = FolderSyncRequest {
        sync_key: opush_protocol::commands::SyncKey("1".to_owned()),
    };
    opush_server::commands::folder_sync::folder_sync(&again, &who, &eas)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(eas.imap.logins(), logins, "logins after FolderSync 1");
}
