//! Responses bounded by bytes, over HTTP against the stack's Dovecot: the
//! `<Fetch>` commands of a Sync share `[devices] max_window_bytes`; past
//! it a Fetch is answered Status 5 without content, and a device that asks
//! those again, as phones do, gets every message; a change the same
//! request carried is carried out.
//!
//! Find renders its results from the first 64 KiB of each message and
//! stops at the same budget, its Range saying how many came.
//!
//! Reserved Dovecot users: load1201 (Sync Fetch), load1203 (Find).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::{BTreeMap, BTreeSet};

use opush_protocol::commands::items::ApplicationData;
use opush_protocol::commands::sync::CommandResponse;
use opush_tests::RawImap;
use support::*;

const FETCH_USER: &str = "load1201@load.test";
const FIND_USER: &str = "load1203@load.test";
const FIND_MARKER: &str = "bounds-find-v1";
const FIND_MESSAGES: usize = 6;
const MARKER: &str = "bounds-fetch-v1";
const BIG: usize = 8;
/// Each message is about 400 KB.
const LINES: usize = 5_000;
const BUDGET: usize = 1_000_000;

/// Message `i`: about 400 KB of text ending in a line that names it.
fn big_message(i: usize) -> String {
    let mut body = String::with_capacity(LINES * 80);
    for line in 0..LINES {
        body.push_str(&format!(
            "Line {line:05} of big message {i:02}: the quick brown fox jumps over the dog.\r\n"
        ));
    }
    body.push_str(&format!("END of big message {i:02}\r\n"));
    format!(
        "From: Filler <filler@example.test>\r\nTo: Reader <reader@load.test>\r\n\
Subject: {MARKER} {i}\r\nMessage-ID: <{MARKER}-{i}@opush.test>\r\n\
Date: Sat, 28 Nov 2026 10:00:{i:02} +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\n{body}"
    )
}

/// A Sync of `collection` at `key` asking whole MIME bodies, with `commands`.
fn fetch_xml(collection: &str, key: &str, commands: &str) -> String {
    format!(
        "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\" xmlns:email=\"Email:\">\
         <Collections><Collection><SyncKey>{key}</SyncKey><CollectionId>{collection}</CollectionId>\
         <GetChanges>0</GetChanges><Options><airsyncbase:BodyPreference><airsyncbase:Type>4</airsyncbase:Type>\
         </airsyncbase:BodyPreference></Options><Commands>{commands}</Commands></Collection>\
         </Collections></Sync>"
    )
}

/// A Sync with a Fetch of each of 8 messages of 400 KB answered all of
/// them in one 3.2 MB answer (a Fetch repeated: any size). Now the
/// Fetches an answer carries stay within `max_window_bytes` (the first
/// whatever its size), the others get Status 5, and a device asking those
/// again gets each message whole; the Read change sent with the first
/// request reaches IMAP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_fetches_stay_within_the_bytes_budget() {
    let mut imap = RawImap::login(FETCH_USER);
    opush_tests::fill::ensure(&mut imap, "INBOX", BIG, MARKER, big_message);
    imap.ok("SELECT INBOX");
    imap.ok("UID STORE 1:* -FLAGS.SILENT (\\Seen)");
    imap.ok("UNSELECT");
    let opush = start(Options {
        server_toml: "loop_max_repeats = 0\n".into(),
        extra_toml: format!("[devices]\nmax_window_bytes = {BUDGET}\n"),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(FETCH_USER, "BOUNDSFETCH1", "14.1");
    // The initial sync with truncated bodies: small.
    let (inbox, mut key, commands) = synced_folder_of_type(&mut c, "14.1", 2).await;
    let sids: Vec<String> = commands.iter().map(|c| server_id(c).to_owned()).collect();
    assert_eq!(sids.len(), BIG, "{sids:?}");
    let mut pending: BTreeSet<String> = sids.iter().cloned().collect();
    let mut got: BTreeMap<String, String> = BTreeMap::new();
    let mut deferred = 0;
    for round in 0..BIG + 2 {
        if pending.is_empty() {
            break;
        }
        // The first request also marks a message read.
        let mut cmds = String::new();
        if round == 0 {
            cmds.push_str(&format!(
                "<Change><ServerId>{}</ServerId><ApplicationData><email:Read>1</email:Read>\
                 </ApplicationData></Change>",
                sids[0]
            ));
        }
        for sid in &pending {
            cmds.push_str(&format!("<Fetch><ServerId>{sid}</ServerId></Fetch>"));
        }
        let res = c.post_xml("Sync", &fetch_xml(&inbox, &key, &cmds)).await;
        assert!(
            res.body.len() < BUDGET + 64 * 1024,
            "round {round}: {} bytes answered",
            res.body.len()
        );
        let r = sync_response(&res, "14.1");
        let col = &r.collections[0];
        assert_eq!(col.status.map(|s| s.code()), Some(1));
        key = col.sync_key.0.clone();
        let mut answered = 0;
        for response in col.responses.iter().flatten() {
            let CommandResponse::Fetch {
                server_id,
                status,
                application_data,
            } = response
            else {
                panic!("round {round}: unexpected {response:?}");
            };
            match status.code() {
                1 => {
                    let Some(ApplicationData::Email(email)) = application_data else {
                        panic!("a Fetch answered 1 without its Email");
                    };
                    let data = email
                        .body
                        .as_ref()
                        .and_then(|b| b.data.clone())
                        .unwrap_or_default();
                    assert!(pending.remove(&server_id.0), "{server_id:?} twice");
                    got.insert(server_id.0.clone(), data);
                    answered += 1;
                }
                5 => {
                    assert!(application_data.is_none());
                    deferred += 1;
                }
                other => panic!("round {round}: Fetch status {other}"),
            }
        }
        assert!(answered >= 1, "round {round}: no Fetch answered");
    }
    assert!(pending.is_empty(), "never fetched: {pending:?}");
    assert!(deferred > 0, "every Fetch fitted: the budget was not hit");
    // Every message whole: its last line is there.
    let mut ends: Vec<String> = got
        .values()
        .map(|data| {
            assert!(data.len() > LINES * 70, "{} bytes", data.len());
            let at = data.find("END of big message").expect("the message's end");
            data[at..].trim_end().to_owned()
        })
        .collect();
    ends.sort();
    let want: Vec<String> = (0..BIG)
        .map(|i| format!("END of big message {i:02}"))
        .collect();
    assert_eq!(ends, want);
    // The Change sent with the first Fetches was carried out, once.
    imap.ok("EXAMINE INBOX");
    assert_eq!(imap.uid_search("SEEN").len(), 1);
    imap.ok("UNSELECT");
    opush.stop().await;
}

/// Message `i` for Find: a To field of about 300 KB (10,000 recipients)
/// and a body with the searched word.
fn crowded_message(i: usize) -> String {
    let mut to = String::with_capacity(320_000);
    for n in 0..10_000 {
        if n > 0 {
            to.push_str(",\r\n ");
        }
        to.push_str(&format!("Reader {n:05} <r{n:05}@load.test>"));
    }
    format!(
        "From: Filler <filler@example.test>\r\nTo: {to}\r\n\
Subject: {FIND_MARKER} {i}\r\nMessage-ID: <{FIND_MARKER}-{i}@opush.test>\r\n\
Date: Sat, 28 Nov 2026 10:00:{i:02} +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nboundsfindword in message {i}\r\n"
    )
}

fn find_xml(range: &str) -> String {
    format!(
        "<Find xmlns=\"Find:\" xmlns:airsync=\"AirSync:\"><SearchId>{}</SearchId><ExecuteSearch>\
         <MailBoxSearchCriterion><Query><airsync:Class>Email</airsync:Class>\
         <FreeText>boundsfindword</FreeText></Query><Options><Range>{range}</Range></Options>\
         </MailBoxSearchCriterion></ExecuteSearch></Find>",
        opush_tests::unique("find")
    )
}

/// A Find read each result's whole message and showed its whole To
/// field: six messages with 300 KB of recipients made a 1.8 MB answer
/// (hundreds of them, any size). Now a result is rendered from its header
/// and the first 64 KiB of its body, results stop at `max_window_bytes`
/// (the first always: here one a page), the Range says how many came,
/// Total counts them all, and the next page goes on from there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn find_pages_stay_within_the_bytes_budget() {
    let mut imap = RawImap::login(FIND_USER);
    opush_tests::fill::ensure(
        &mut imap,
        "INBOX",
        FIND_MESSAGES,
        FIND_MARKER,
        crowded_message,
    );
    let opush = start(Options {
        extra_toml: "[devices]\nmax_window_bytes = 150000\n".into(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(FIND_USER, "BOUNDSFIND1", "16.1");
    folders(&mut c).await;
    let mut seen = BTreeSet::new();
    let mut start_at = 0;
    for page in 0..FIND_MESSAGES {
        if start_at >= FIND_MESSAGES {
            break;
        }
        let res = c
            .post_xml("Find", &find_xml(&format!("{start_at}-99")))
            .await;
        assert_eq!(res.status, 200);
        assert!(
            res.body.len() < 500_000,
            "page {page}: {} bytes answered",
            res.body.len()
        );
        let r = opush_protocol::commands::find::FindResponse::from_element(
            &res.element(),
            opush_protocol::version::ProtocolVersion::V16_1,
        )
        .unwrap();
        let store = r.response.expect("a Response");
        assert_eq!(store.status.code(), 1);
        assert_eq!(store.total, Some(FIND_MESSAGES as u32));
        let n = store.results.len();
        assert!(n >= 1, "page {page}: no result");
        assert_eq!(
            store.range.as_deref(),
            Some(format!("{start_at}-{}", start_at + n - 1).as_str())
        );
        for result in &store.results {
            let subject = result
                .properties
                .as_ref()
                .and_then(|p| p.subject.clone())
                .unwrap_or_default();
            assert!(seen.insert(subject.clone()), "{subject} twice");
        }
        start_at += n;
    }
    assert_eq!(seen.len(), FIND_MESSAGES, "{seen:?}");
    opush.stop().await;
}
