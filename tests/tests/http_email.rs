//! Email over HTTP end to end (issue #5 "Tests"): opush started in-process
//! on a real listener, driven with WBXML built by `opush-protocol` over
//! real HTTP for protocol versions 12.1, 14.1 and 16.1, against the stack's
//! Dovecot; the IMAP side is checked with the independent `RawImap` after
//! each step.
//!
//! Per version: OPTIONS, FolderSync, the initial sync of a 2,000-message
//! folder in windows (with one window retried: byte-identical answer),
//! server-side APPEND/flag/expunge/move seen by the next Sync, device-side
//! read/flag/delete/move reaching IMAP, a UIDVALIDITY reset, bodies in the
//! three types with truncation, a 10 MB attachment fetched in ranges, a
//! modified-UTF-7 folder name and RFC 2047 subject.
//!
//! Reserved Dovecot user: load0039. Shared folders (`e2e-bulk`, `e2e-big`,
//! the non-ASCII one) are filled once and reused; each version has its own
//! `e2e-<v>` and `e2e-<v>-moved` folders (`12_1`…).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;

use base64::Engine as _;
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::ServerCommand;
use opush_tests::eas::{find_all, find_text, EasClient};
use opush_tests::{fill, unique, RawImap};
use support::*;

const USER: &str = "load0039@load.test";
const BULK: &str = "e2e-bulk";
const BULK_N: usize = 2000;
const BULK_MARKER: &str = "e2e-bulk-v1";
const BIG: &str = "e2e-big";
const BIG_MARKER: &str = "e2e-big-v1";
const BIG_SIZE: usize = 10 * 1024 * 1024;
/// "e2e Été ☀" in modified UTF-7 (RFC 3501 5.1.3), written out by hand.
const INTL_RAW: &str = "e2e &AMk-t&AOk- &JgA-";
const INTL_NAME: &str = "e2e Été ☀";
const INTL_MARKER: &str = "e2e-intl-v1";

/// The shared folders are filled by one test at a time.
static FILL: Mutex<()> = Mutex::new(());

/// The 10 MB attachment's bytes: a fixed, position-dependent pattern.
fn big_bytes() -> Vec<u8> {
    (0..BIG_SIZE)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 11)) as u8)
        .collect()
}

fn big_message(marker: &str, i: usize) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(big_bytes());
    let mut wrapped = String::with_capacity(b64.len() + b64.len() / 38);
    for chunk in b64.as_bytes().chunks(76) {
        wrapped.push_str(std::str::from_utf8(chunk).unwrap());
        wrapped.push_str("\r\n");
    }
    format!(
        "From: a@example.test\r\nTo: b@load.test\r\nSubject: {marker} {i}\r\n\
Date: Sat, 28 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=BIG\r\n\r\n--BIG\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nTen megabytes attached.\r\n--BIG\r\n\
Content-Type: application/octet-stream; name=big.bin\r\n\
Content-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n\
{wrapped}--BIG--\r\n"
    )
}

fn intl_message(marker: &str, i: usize) -> String {
    // Subject "Été ☀ <marker> <i>" in RFC 2047 (UTF-8, B encoding).
    format!(
        "From: =?UTF-8?Q?Andr=C3=A9?= <andre@example.test>\r\nTo: b@load.test\r\n\
Subject: =?UTF-8?B?w4l0w6kg4piA?= {marker} {i}\r\nDate: Sat, 28 Nov 2026 10:00:00 +0000\r\n\
MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nBonjour, \u{e7}a va ?\r\n"
    )
}

fn ensure_shared_folders() {
    let _guard = FILL.lock().unwrap_or_else(|e| e.into_inner());
    let mut imap = RawImap::login(USER);
    fill::ensure(&mut imap, BULK, BULK_N, BULK_MARKER, |i| {
        fill::text_message(BULK_MARKER, i)
    });
    fill::ensure(&mut imap, BIG, 1, BIG_MARKER, |i| {
        big_message(BIG_MARKER, i)
    });
    fill::ensure(&mut imap, INTL_RAW, 1, INTL_MARKER, |i| {
        intl_message(INTL_MARKER, i)
    });
}

/// A message of the per-version folder: multipart/alternative, plain + HTML.
fn small_message(subject: &str) -> String {
    format!(
        "From: Sender <sender@example.test>\r\nTo: load0039@load.test\r\nSubject: {subject}\r\n\
Date: Sat, 28 Nov 2026 11:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/alternative; boundary=ALT\r\n\r\n--ALT\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nHello plain world, this is a long enough body.\r\n\
--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n\
<html><body><p>Hello <b>HTML</b> world</p></body></html>\r\n--ALT--\r\n"
    )
}

fn email_of(c: &ServerCommand) -> &Email {
    match c {
        ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        }
        | ServerCommand::Change {
            application_data: ApplicationData::Email(e),
            ..
        } => e,
        other => panic!("not an email command: {other:?}"),
    }
}

/// UIDs of messages whose subject contains `needle`, and their flags.
fn flags_of(imap: &mut RawImap, mailbox: &str, needle: &str) -> Vec<String> {
    let uids = imap.search_subject(mailbox, needle);
    uids.iter()
        .map(|u| {
            let (lines, _) = imap.cmd(&format!("UID FETCH {u} (FLAGS)"));
            lines.concat()
        })
        .collect()
}

/// Sync 0 on a collection: the first key.
async fn first_key(c: &mut EasClient, v: &str, collection: &str) -> String {
    let res = c.post_xml("Sync", &sync_xml(collection, "0", 0, "")).await;
    let r = sync_response(&res, v);
    let col = &r.collections[0];
    assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
    assert!(col.commands.is_none(), "Sync 0 carries no items");
    col.sync_key.0.clone()
}

fn subject_of(c: &ServerCommand) -> String {
    email_of(c).subject.clone().unwrap_or_default()
}

/// The bytes of an ItemOperations Fetch answer's `Data` (base64 text or opaque).
fn data_bytes(el: &opush_protocol::wbxml::Element<'_>) -> Vec<u8> {
    let data = find_all(el, "Data");
    let d = data.first().expect("no Data in the answer");
    if let Some(b) = d.opaque() {
        return b.to_vec();
    }
    base64::engine::general_purpose::STANDARD
        .decode(d.text_concat().unwrap_or_default().as_bytes())
        .expect("Data is not base64")
}

async fn scenario(v: &str) {
    ensure_shared_folders();
    let device = format!("E2E{}", v.replace('.', ""));
    // '.' is Dovecot's hierarchy separator.
    let vv = v.replace('.', "_");
    let mine = format!("e2e-{vv}");
    let moved = format!("e2e-{vv}-moved");
    let tag = unique(&format!("e2e{v}"));
    let mut imap = RawImap::login(USER);
    // The per-version folders start empty (and with a new UIDVALIDITY).
    for f in [&mine, &moved] {
        imap.cmd(&format!("DELETE \"{f}\""));
        let (_, ok) = imap.cmd(&format!("CREATE \"{f}\""));
        assert!(ok.starts_with("OK"), "{ok}");
        imap.cmd(&format!("SUBSCRIBE \"{f}\""));
    }
    fill::append_all(
        &mut imap,
        &mine,
        (0..4).map(|i| small_message(&format!("{tag} m{i}"))),
    );

    let opush = start(Options::default()).await;
    let mut c = opush.client(USER, &device, v);

    // OPTIONS advertises the version.
    let res = c.options().await;
    assert_eq!(res.status, 200);
    let versions = res.header("MS-ASProtocolVersions").unwrap_or_default();
    assert!(versions.split(',').any(|x| x == v), "{versions}");

    // FolderSync: every folder, the non-ASCII one decoded.
    let res = c
        .post_xml(
            "FolderSync",
            "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>",
        )
        .await;
    let fs = folder_sync(&res);
    let id = |name: &str| {
        folder_named(&fs, name)
            .unwrap_or_else(|| panic!("no folder {name:?} in {}", res.xml()))
            .0
    };
    let inbox = folder_of_type(&fs, 2).expect("no Inbox (Type 2)");
    let (bulk, mine_id, moved_id, big, intl) =
        (id(BULK), id(&mine), id(&moved), id(BIG), id(INTL_NAME));
    assert_ne!(inbox, bulk);

    // Initial sync of 2,000 messages in windows of 100, one window retried.
    let mut key = first_key(&mut c, v, &bulk).await;
    let mut seen = BTreeSet::new();
    let mut subjects = BTreeSet::new();
    let mut windows = 0;
    loop {
        let req = sync_xml(&bulk, &key, 100, "");
        let res = c.post_xml("Sync", &req).await;
        windows += 1;
        if windows == 3 {
            // The device lost the answer and retries with the same SyncKey.
            let again = c.post_xml("Sync", &req).await;
            assert_eq!(again.status, 200);
            assert!(
                again.body == res.body,
                "a retried Sync must answer the same bytes:\n{}\n---\n{}",
                res.xml(),
                again.xml()
            );
        }
        let r = sync_response(&res, v);
        let col = &r.collections[0];
        assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
        let cmds = col.commands.clone().unwrap_or_default();
        assert!(cmds.len() <= 100, "window of 100 exceeded: {}", cmds.len());
        for cmd in &cmds {
            assert!(matches!(cmd, ServerCommand::Add { .. }), "{cmd:?}");
            assert!(
                seen.insert(server_id(cmd).to_owned()),
                "ServerId sent twice"
            );
            subjects.insert(subject_of(cmd));
            let body = email_of(cmd).body.as_ref().expect("no body");
            assert_eq!(body.body_type, 1);
        }
        key = col.sync_key.0.clone();
        if !col.more_available {
            break;
        }
        assert!(windows < 100, "never ending initial sync");
    }
    assert_eq!(seen.len(), BULK_N, "every message exactly once");
    assert_eq!(
        subjects,
        (0..BULK_N)
            .map(|i| format!("{BULK_MARKER} {i}"))
            .collect::<BTreeSet<_>>()
    );
    assert!(windows >= BULK_N / 100, "{windows} windows");
    // Nothing changed: the next Sync is empty.
    let (_, nothing) = sync_all(&mut c, v, &bulk, key, 100).await;
    assert!(nothing.is_empty(), "{nothing:?}");

    // The per-version folder: 4 messages.
    let key = first_key(&mut c, v, &mine_id).await;
    let (key, adds) = sync_all(&mut c, v, &mine_id, key, 50).await;
    assert_eq!(adds.len(), 4, "{adds:?}");
    let sid: HashMap<String, String> = adds
        .iter()
        .map(|a| (subject_of(a), server_id(a).to_owned()))
        .collect();
    let m = |i: usize| sid[&format!("{tag} m{i}")].clone();

    // Server side: APPEND m4, \Seen on m0, expunge m1, move m2.
    fill::append_all(
        &mut imap,
        &mine,
        std::iter::once(small_message(&format!("{tag} m4"))),
    );
    let (_, ok) = imap.cmd(&format!("SELECT \"{mine}\""));
    assert!(ok.starts_with("OK"));
    let uid = |imap: &mut RawImap, i: usize| {
        let u = imap.search_subject(&mine, &format!("{tag} m{i}"));
        assert_eq!(u.len(), 1, "m{i} in {mine}");
        u[0]
    };
    let u0 = uid(&mut imap, 0);
    let u1 = uid(&mut imap, 1);
    let u2 = uid(&mut imap, 2);
    imap.cmd(&format!("UID STORE {u0} +FLAGS (\\Seen)"));
    imap.cmd(&format!("UID STORE {u1} +FLAGS (\\Deleted)"));
    let (_, ok) = imap.cmd(&format!("UID EXPUNGE {u1}"));
    assert!(ok.starts_with("OK"), "{ok}");
    let (_, ok) = imap.cmd(&format!("UID MOVE {u2} \"{moved}\""));
    assert!(ok.starts_with("OK"), "{ok}");
    let (key, changes) = sync_all(&mut c, v, &mine_id, key, 50).await;
    let mut added = Vec::new();
    let mut changed = Vec::new();
    let mut deleted = BTreeSet::new();
    for ch in &changes {
        match ch {
            ServerCommand::Add { .. } => added.push(subject_of(ch)),
            ServerCommand::Change { .. } => {
                changed.push((server_id(ch).to_owned(), email_of(ch).read))
            }
            ServerCommand::Delete { server_id, .. } => {
                deleted.insert(server_id.0.clone());
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, vec![format!("{tag} m4")], "{changes:?}");
    assert_eq!(changed, vec![(m(0), Some(true))], "{changes:?}");
    assert_eq!(deleted, BTreeSet::from([m(1), m(2)]), "{changes:?}");
    let m4 = changes
        .iter()
        .find(|c| matches!(c, ServerCommand::Add { .. }))
        .map(|c| server_id(c).to_owned())
        .unwrap();

    // Device side: m3 read + flagged, m4 deleted (to Trash), m0 moved.
    let change = format!(
        "<Commands><Change><ServerId>{}</ServerId><ApplicationData>\
         <email:Read>1</email:Read><email:Flag><email:Status>2</email:Status>\
         <email:FlagType>Follow up</email:FlagType></email:Flag></ApplicationData></Change>\
         <Delete><ServerId>{m4}</ServerId></Delete></Commands>",
        m(3)
    );
    let res = c
        .post_xml("Sync", &sync_xml(&mine_id, &key, 50, &change))
        .await;
    let r = sync_response(&res, v);
    let col = &r.collections[0];
    assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
    let key = col.sync_key.0.clone();
    let f3 = flags_of(&mut imap, &mine, &format!("{tag} m3"));
    assert_eq!(f3.len(), 1);
    assert!(
        f3[0].contains("\\Seen") && f3[0].contains("\\Flagged"),
        "{f3:?}"
    );
    assert!(imap.search_subject(&mine, &format!("{tag} m4")).is_empty());
    assert_eq!(
        imap.search_subject("Trash", &format!("{tag} m4")).len(),
        1,
        "a deleted message goes to Trash"
    );
    let res = c
        .post_xml(
            "MoveItems",
            &format!(
                "<MoveItems xmlns=\"Move:\"><Move><SrcMsgId>{}</SrcMsgId><SrcFldId>{mine_id}</SrcFldId>\
                 <DstFldId>{moved_id}</DstFldId></Move></MoveItems>",
                m(0)
            ),
        )
        .await;
    assert_eq!(res.status, 200);
    let el = res.element();
    assert_eq!(
        find_text(&el, "Status").as_deref(),
        Some("3"),
        "{}",
        res.xml()
    );
    assert!(imap.search_subject(&mine, &format!("{tag} m0")).is_empty());
    assert_eq!(imap.search_subject(&moved, &format!("{tag} m0")).len(), 1);
    // The source folder's next Sync deletes nothing unexpected; the target
    // folder has m0 and m2.
    let (key, after) = sync_all(&mut c, v, &mine_id, key, 50).await;
    assert!(
        after
            .iter()
            .all(|c| !matches!(c, ServerCommand::Add { .. })),
        "{after:?}"
    );
    let mk = first_key(&mut c, v, &moved_id).await;
    let (_, in_moved) = sync_all(&mut c, v, &moved_id, mk, 50).await;
    let moved_subjects: BTreeSet<_> = in_moved.iter().map(subject_of).collect();
    assert_eq!(
        moved_subjects,
        BTreeSet::from([format!("{tag} m0"), format!("{tag} m2")])
    );

    // Bodies: plain truncated, HTML, MIME (ItemOperations Fetch of m3).
    for (ty, trunc, needle) in [
        (
            1,
            "<airsyncbase:TruncationSize>11</airsyncbase:TruncationSize>",
            "Hello plain",
        ),
        (2, "", "<b>HTML</b>"),
        (4, "", "multipart/alternative"),
    ] {
        let res = c
            .post_xml(
                "ItemOperations",
                &format!(
                    "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\" \
                     xmlns:airsyncbase=\"AirSyncBase:\"><Fetch><Store>Mailbox</Store>\
                     <airsync:CollectionId>{mine_id}</airsync:CollectionId>\
                     <airsync:ServerId>{}</airsync:ServerId><Options>\
                     <airsyncbase:BodyPreference><airsyncbase:Type>{ty}</airsyncbase:Type>{trunc}\
                     </airsyncbase:BodyPreference></Options></Fetch></ItemOperations>",
                    m(3)
                ),
            )
            .await;
        assert_eq!(res.status, 200);
        let el = res.element();
        let xml = res.xml();
        let statuses: Vec<_> = find_all(&el, "Status")
            .iter()
            .filter(|s| s.tag.page_name() == Some("ItemOperations"))
            .map(|s| s.text().unwrap_or_default().to_owned())
            .collect();
        assert!(statuses.iter().all(|s| s == "1"), "{xml}");
        assert_eq!(find_text(&el, "Type"), Some(ty.to_string()), "{xml}");
        let data = find_text(&el, "Data").unwrap_or_default();
        assert!(data.contains(needle), "type {ty}: {xml}");
        if ty == 1 {
            assert!(data.len() <= 11, "truncated to 11 bytes: {data:?}");
            assert_eq!(find_text(&el, "Truncated").as_deref(), Some("1"), "{xml}");
            let estimated: usize = find_text(&el, "EstimatedDataSize")
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            assert!(estimated > 11, "{xml}");
        }
    }

    // UIDVALIDITY reset: the folder is recreated with one new message.
    imap.cmd("UNSELECT");
    imap.cmd(&format!("DELETE \"{mine}\""));
    imap.cmd(&format!("CREATE \"{mine}\""));
    imap.cmd(&format!("SUBSCRIBE \"{mine}\""));
    fill::append_all(
        &mut imap,
        &mine,
        std::iter::once(small_message(&format!("{tag} m5"))),
    );
    let res = c.post_xml("Sync", &sync_xml(&mine_id, &key, 50, "")).await;
    let r = sync_response(&res, v);
    let status = r.collections[0].status.map(|s| s.code());
    let now_there: BTreeSet<String> = if status == Some(3) {
        // Invalid SyncKey: the device starts over.
        let k = first_key(&mut c, v, &mine_id).await;
        let (_, all) = sync_all(&mut c, v, &mine_id, k, 50).await;
        all.iter().map(subject_of).collect()
    } else {
        assert_eq!(status, Some(1), "{}", res.xml());
        let mut cmds = r.collections[0].commands.clone().unwrap_or_default();
        if r.collections[0].more_available {
            let (_, rest) =
                sync_all(&mut c, v, &mine_id, r.collections[0].sync_key.0.clone(), 50).await;
            cmds.extend(rest);
        }
        let dels: BTreeSet<_> = cmds
            .iter()
            .filter(|c| matches!(c, ServerCommand::Delete { .. }))
            .map(|c| server_id(c).to_owned())
            .collect();
        assert_eq!(dels, BTreeSet::from([m(3)]), "the old items go: {cmds:?}");
        cmds.iter()
            .filter(|c| matches!(c, ServerCommand::Add { .. }))
            .map(subject_of)
            .collect()
    };
    assert_eq!(now_there, BTreeSet::from([format!("{tag} m5")]));

    // Non-ASCII folder and subject.
    let k = first_key(&mut c, v, &intl).await;
    let (_, intl_items) = sync_all(&mut c, v, &intl, k, 50).await;
    assert_eq!(intl_items.len(), 1);
    assert_eq!(subject_of(&intl_items[0]), format!("Été ☀ {INTL_MARKER} 0"));
    let from = email_of(&intl_items[0]).from.clone().unwrap_or_default();
    assert!(from.contains("André"), "{from}");

    // The 10 MB attachment, listed by Sync, fetched in three ranges.
    let k = first_key(&mut c, v, &big).await;
    let (_, big_items) = sync_all(&mut c, v, &big, k, 5).await;
    assert_eq!(big_items.len(), 1);
    let att = email_of(&big_items[0])
        .attachments
        .iter()
        .find(|a| a.display_name.as_deref() == Some("big.bin"))
        .expect("big.bin listed")
        .clone();
    let fref = att.file_reference.expect("FileReference");
    let want = big_bytes();
    let mut got = Vec::with_capacity(BIG_SIZE);
    let step = 4 * 1024 * 1024;
    let mut start = 0;
    while start < BIG_SIZE {
        let end = (start + step).min(BIG_SIZE) - 1;
        let res = c
            .post_xml(
                "ItemOperations",
                &format!(
                    "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsyncbase=\"AirSyncBase:\">\
                     <Fetch><Store>Mailbox</Store><airsyncbase:FileReference>{fref}</airsyncbase:FileReference>\
                     <Options><Range>{start}-{end}</Range></Options></Fetch></ItemOperations>"
                ),
            )
            .await;
        assert_eq!(res.status, 200);
        let el = res.element();
        assert_eq!(
            find_text(&el, "Total").as_deref(),
            Some(BIG_SIZE.to_string().as_str()),
            "range {start}-{end}"
        );
        let part = data_bytes(&el);
        assert_eq!(part.len(), end - start + 1, "range {start}-{end}");
        got.extend_from_slice(&part);
        start = end + 1;
    }
    assert!(got == want, "the ranges put together are the attachment");
    if v == "12.1" {
        // 12.1 devices use GetAttachment: the whole file in one answer.
        let query = c.plain_query("GetAttachment", &format!("&AttachmentName={}", pct(&fref)));
        let res = c.post_query(&query, true, b"").await;
        assert_eq!(res.status, 200);
        assert!(
            res.body == want,
            "GetAttachment bytes ({} bytes)",
            res.body.len()
        );
    }
    opush.stop().await;
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_http_12_1() {
    scenario("12.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_http_14_1() {
    scenario("14.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn email_over_http_16_1() {
    scenario("16.1").await;
}
