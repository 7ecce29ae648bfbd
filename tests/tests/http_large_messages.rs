//! Large messages over HTTP against the stack's Dovecot (issue #5): with
//! `[imap] max_message_bytes` lowered to 1 MB, a 3 MB message of photos
//! is synced with its text (truncated as asked, its whole size said) and
//! its attachments listed, each attachment then fetched byte-exact with
//! ItemOperations; the whole message fetched as MIME (Type 4) streams
//! byte-exact, inline and in a multipart answer; a MIME body in Sync reads
//! only its TruncationSize; a 2 MB text body is sent truncated with its
//! exact size. For 12.1 (no Preview), 14.1 and 16.1. Before opush read
//! large messages from their skeleton, such a message was synced with an
//! empty body and no attachment, and its attachments were DataTooLarge.
//!
//! Reserved Dovecot user: load1301.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use base64::Engine as _;
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::ServerCommand;
use opush_tests::eas::{find_all, find_text, EasClient};
use opush_tests::{fill, RawImap};
use support::*;

const USER: &str = "load1301@load.test";
const FOLDER: &str = "large-msgs";
const MARKER: &str = "large-msgs-v1";
/// The cap the server runs with: both messages are over it.
const CAP: usize = 1_000_000;
const PHOTO: usize = 2_000_000;
const TEXT_BODY: usize = 2_000_000;

/// The photo: a fixed, position-dependent pattern.
fn photo() -> Vec<u8> {
    (0..PHOTO)
        .map(|i| (i.wrapping_mul(151) ^ (i >> 7)) as u8)
        .collect()
}

/// The first message's text body (UTF-8, some of it two-byte).
fn text() -> String {
    (0..300)
        .map(|i| format!("Line {i}: the photos of the d\u{e9}j\u{e0}-vu trip.\r\n"))
        .collect()
}

/// The second message's text body: 2 MB of lines.
fn long_text() -> String {
    let line = "All work and no play makes Jack a dull boy, \u{e9}t\u{e9} comme hiver.\r\n";
    let mut out = String::with_capacity(TEXT_BODY + line.len());
    while out.len() < TEXT_BODY {
        out.push_str(line);
    }
    out
}

fn wrapped_base64(bytes: &[u8]) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(bytes);
    let mut out = String::with_capacity(b64.len() + b64.len() / 38);
    for chunk in b64.as_bytes().chunks(76) {
        out.push_str(std::str::from_utf8(chunk).unwrap());
        out.push_str("\r\n");
    }
    out
}

const NESTED: &str = "From: c@example.test\r\nSubject: the itinerary\r\nContent-Type: text/plain\r\n\r\nDay 1: Lyon.\r\n";
const NOTES: &str = "a,b\r\n1,2\r\n";

fn message(i: usize) -> String {
    let head = format!(
        "From: a@example.test\r\nTo: {USER}\r\nSubject: {MARKER} {i}\r\n\
Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <large-{i}@example.test>\r\nMIME-Version: 1.0\r\n"
    );
    if i == 1 {
        return format!(
            "{head}Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}",
            long_text()
        );
    }
    format!(
        "{head}Content-Type: multipart/mixed; boundary=\"=_L\"\r\n\r\n--=_L\r\n\
Content-Type: multipart/alternative; boundary=\"=_A\"\r\n\r\n--=_A\r\n\
Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n{}--=_A\r\n\
Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>The photos.</p></body></html>\r\n--=_A--\r\n\
--=_L\r\nContent-Type: image/jpeg; name=photo.jpg\r\n\
Content-Disposition: attachment; filename=photo.jpg\r\nContent-Transfer-Encoding: base64\r\n\r\n\
{}--=_L\r\nContent-Type: text/csv; name=notes.csv\r\nContent-Disposition: attachment; filename=notes.csv\r\n\r\n\
{NOTES}\r\n--=_L\r\nContent-Type: message/rfc822\r\n\r\n{NESTED}\r\n--=_L--\r\n",
        text(),
        wrapped_base64(&photo())
    )
}

fn email_of(c: &ServerCommand) -> &Email {
    match c {
        ServerCommand::Add {
            application_data: ApplicationData::Email(e),
            ..
        } => e,
        other => panic!("not an email Add: {other:?}"),
    }
}

/// A Sync of `collection` from `key` asking `body` (BodyPreference XML).
fn sync_with(collection: &str, key: &str, body: &str) -> String {
    let more = if key == "0" {
        String::new()
    } else {
        "<GetChanges/><WindowSize>5</WindowSize>".to_owned()
    };
    format!(
        "<Sync xmlns=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\"><Collections><Collection>\
         <SyncKey>{key}</SyncKey><CollectionId>{collection}</CollectionId>{more}\
         <Options><airsyncbase:BodyPreference>{body}</airsyncbase:BodyPreference></Options>\
         </Collection></Collections></Sync>"
    )
}

/// The folder's items (ServerId, Email) synced from scratch with `body`.
async fn synced(c: &mut EasClient, v: &str, body: &str) -> (String, Vec<(String, Email)>) {
    let folders = folders(c).await;
    let (id, _) = folder_named(&folders, FOLDER).expect("folder listed");
    let res = c.post_xml("Sync", &sync_with(&id, "0", body)).await;
    let key = sync_response(&res, v).collections[0].sync_key.0.clone();
    let res = c.post_xml("Sync", &sync_with(&id, &key, body)).await;
    let r = sync_response(&res, v);
    let col = &r.collections[0];
    assert_eq!(col.status.map(|s| s.code()), Some(1), "{}", res.xml());
    assert!(!col.more_available);
    let mut items: Vec<(String, Email)> = col
        .commands
        .clone()
        .unwrap_or_default()
        .iter()
        .map(|c| (server_id(c).to_owned(), email_of(c).clone()))
        .collect();
    items.sort_by_key(|(_, e)| e.subject.clone());
    (id, items)
}

fn fetch_attachment_xml(fref: &str) -> String {
    format!(
        "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsyncbase=\"AirSyncBase:\">\
         <Fetch><Store>Mailbox</Store><airsyncbase:FileReference>{fref}</airsyncbase:FileReference></Fetch>\
         </ItemOperations>"
    )
}

fn fetch_item_xml(collection: &str, server_id: &str, body: &str) -> String {
    format!(
        "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsync=\"AirSync:\" xmlns:airsyncbase=\"AirSyncBase:\">\
         <Fetch><Store>Mailbox</Store><airsync:CollectionId>{collection}</airsync:CollectionId>\
         <airsync:ServerId>{server_id}</airsync:ServerId>\
         <Options><airsyncbase:BodyPreference>{body}</airsyncbase:BodyPreference></Options></Fetch>\
         </ItemOperations>"
    )
}

fn status_of(root: &opush_protocol::wbxml::Element<'_>) -> Option<String> {
    find_all(root, "Fetch")
        .first()
        .and_then(|f| find_text(f, "Status"))
}

/// The bytes of a WBXML answer's one `Data` (a string).
fn data_of(root: &opush_protocol::wbxml::Element<'_>) -> Vec<u8> {
    find_all(root, "Data")
        .first()
        .expect("a Data")
        .text_concat()
        .unwrap_or_default()
        .into_owned()
        .into_bytes()
}

/// This test's own reading of a multipart body ([MS-ASCMD] 2.2.1.10.1.1).
fn parts(body: &[u8]) -> Vec<&[u8]> {
    let int = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap()) as usize;
    let n = int(0);
    let mut out = Vec::new();
    let mut next = 4 + 8 * n;
    for i in 0..n {
        let (offset, len) = (int(4 + 8 * i), int(8 + 8 * i));
        assert_eq!(offset, next, "parts follow each other");
        next += len;
        out.push(&body[offset..offset + len]);
    }
    assert_eq!(next, body.len(), "the body ends with the last part");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_are_synced_with_their_text_and_attachments() {
    let mut imap = RawImap::login(USER);
    fill::ensure(&mut imap, FOLDER, 2, MARKER, message);
    let opush = start(Options {
        imap_toml: format!("max_message_bytes = {CAP}\n"),
        ..Options::default()
    })
    .await;
    let (mime0, mime1) = (message(0), message(1));
    assert!(mime0.len() > CAP && mime1.len() > CAP);
    let text = text();
    let long = long_text();
    let plain = "<airsyncbase:Type>1</airsyncbase:Type>\
                 <airsyncbase:TruncationSize>500</airsyncbase:TruncationSize>\
                 <airsyncbase:Preview>100</airsyncbase:Preview>";
    for v in ["12.1", "14.1", "16.1"] {
        let mut c = opush.client(USER, &format!("largedev{}", v.replace('.', "")), v);
        let (collection, items) = synced(&mut c, v, plain).await;
        assert_eq!(items.len(), 2, "{v}");
        let (sid0, photos) = &items[0];
        let (sid1, long_one) = &items[1];
        assert_eq!(photos.subject.as_deref(), Some(&*format!("{MARKER} 0")));

        // The photos' message: its text, truncated, its whole size.
        let body = photos.body.as_ref().expect("a body");
        assert_eq!(body.body_type, 1, "{v}");
        // The line break before the next delimiter is the delimiter's.
        assert_eq!(body.estimated_data_size, Some(text.len() as u64 - 2), "{v}");
        assert_eq!(body.truncated, Some(true), "{v}");
        let data = body.data.as_deref().unwrap_or_default();
        assert!(data.len() <= 500 && data.len() > 450, "{v}: {data:?}");
        assert!(text.starts_with(data), "{v}");
        if v == "12.1" {
            assert_eq!(body.preview, None);
        } else {
            let words = text.split_whitespace().collect::<Vec<_>>().join(" ");
            let preview: String = words.chars().take(100).collect();
            assert_eq!(body.preview.as_deref(), Some(preview.as_str()), "{v}");
        }
        assert_eq!(photos.native_body_type, Some(2), "{v}");
        // Its attachments, listed and sized as the whole message has them.
        let listed: Vec<(String, u64)> = photos
            .attachments
            .iter()
            .map(|a| {
                (
                    a.display_name.clone().unwrap_or_default(),
                    a.estimated_data_size.unwrap_or_default(),
                )
            })
            .collect();
        let nested_len = NESTED.len() as u64;
        assert_eq!(
            listed,
            [
                ("photo.jpg".to_owned(), PHOTO as u64),
                ("notes.csv".to_owned(), NOTES.len() as u64),
                ("the itinerary.eml".to_owned(), nested_len),
            ],
            "{v}"
        );
        // Each fetched byte-exact.
        let want: [&[u8]; 3] = [&photo(), NOTES.as_bytes(), NESTED.as_bytes()];
        for (a, want) in photos.attachments.iter().zip(want) {
            let fref = a.file_reference.as_deref().expect("FileReference");
            assert!(fref.starts_with(&format!("{sid0}:")));
            let res = c
                .post_xml("ItemOperations", &fetch_attachment_xml(fref))
                .await;
            assert_eq!(res.status, 200);
            let root = res.element();
            assert_eq!(status_of(&root).as_deref(), Some("1"), "{v} {fref}");
            let got = base64::engine::general_purpose::STANDARD
                .decode(data_of(&root))
                .expect("base64 Data");
            assert!(got == want, "{v}: {fref} differs");
        }

        // The 2 MB text: its start, its exact size.
        let body = long_one.body.as_ref().expect("a body");
        assert_eq!(body.estimated_data_size, Some(long.len() as u64), "{v}");
        assert_eq!(body.truncated, Some(true));
        let data = body.data.as_deref().unwrap_or_default();
        assert!(data.len() > 450 && long.starts_with(data), "{v}");

        // The whole message as MIME, streamed: inline, then multipart.
        let mime = "<airsyncbase:Type>4</airsyncbase:Type>";
        for (sid, want) in [(sid0, &mime0), (sid1, &mime1)] {
            let res = c
                .post_xml("ItemOperations", &fetch_item_xml(&collection, sid, mime))
                .await;
            assert_eq!(res.status, 200);
            let root = res.element();
            assert_eq!(status_of(&root).as_deref(), Some("1"), "{v}");
            let body = find_all(&root, "Body");
            assert_eq!(
                find_text(body.first().expect("a Body"), "EstimatedDataSize"),
                Some(want.len().to_string())
            );
            assert!(
                data_of(&root) == want.as_bytes(),
                "{v}: MIME of {sid} differs"
            );
        }
        let query = c.plain_query("ItemOperations", "&AcceptMultiPart=T");
        let xml = fetch_item_xml(&collection, sid0, mime);
        let res = c
            .post_query(&query, true, &opush_tests::eas::wbxml_of(&xml))
            .await;
        assert_eq!(res.status, 200);
        let p = parts(&res.body);
        assert_eq!(p.len(), 1);
        let root = opush_protocol::wbxml::decode(p[0]).unwrap().into_owned();
        assert!(
            data_of(&root) == mime0.as_bytes(),
            "{v}: multipart MIME differs"
        );

        // A MIME body in Sync: the first TruncationSize bytes.
        let mut c2 = opush.client(USER, &format!("largemime{}", v.replace('.', "")), v);
        let (_, items) = synced(
            &mut c2,
            v,
            "<airsyncbase:Type>4</airsyncbase:Type>\
             <airsyncbase:TruncationSize>1000</airsyncbase:TruncationSize>",
        )
        .await;
        for ((_, e), want) in items.iter().zip([&mime0, &mime1]) {
            let b = e.body.as_ref().expect("a body");
            assert_eq!(b.body_type, 4);
            assert_eq!(b.estimated_data_size, Some(want.len() as u64));
            assert_eq!(b.truncated, Some(true));
            let mut end = 1000;
            while !want.is_char_boundary(end) {
                end -= 1;
            }
            assert_eq!(b.data.as_deref(), Some(&want[..end]), "{v}");
        }
    }
    opush.stop().await;
}
