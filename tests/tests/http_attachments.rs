//! Attachments streamed from IMAP over HTTP against the stack's Dovecot:
//! ItemOperations Fetch by FileReference inline (base64 `Data`) and as the
//! multipart answer (`MS-ASAcceptMultiPart: T` header, `AcceptMultiPart=T`
//! query), whole and in ranges, several in one answer; GetAttachment
//! (12.1); a range past the end; an attachment whose message vanished.
//! The bytes must equal what was APPENDed, through base64,
//! quoted-printable and 7bit parts. The multipart answer is read with
//! this file's own parser, not the server's. A slow download holds none
//! of the user's IMAP connections; a folder created again mid-download
//! breaks the answer off, never serves the new message's bytes.
//!
//! Reserved Dovecot users: load1191, load1193 (private Dovecot), load1311,
//! load1313.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "test code: a panic is a test failure"
)]

mod support;

use base64::Engine as _;
use opush_protocol::commands::items::{ApplicationData, Email};
use opush_protocol::commands::sync::ServerCommand;
use opush_tests::eas::{find_all, find_text, EasClient, HttpResponse};
use opush_tests::{fill, RawImap};
use support::*;

const USER: &str = "load1191@load.test";
const FOLDER: &str = "stream-att";
const MARKER: &str = "stream-att-v1";
const VANISH: &str = "stream-vanish";
const SIZE: usize = 10 * 1024 * 1024;
const QP_TEXT: &str = "Caf\u{e9} cr\u{e8}me = 100%\r\nA line long enough to be cut by a soft break somewhere in its middle, really.\r\n";

/// The 10 MB attachment: a fixed, position-dependent pattern.
fn big() -> Vec<u8> {
    (0..SIZE)
        .map(|i| (i.wrapping_mul(131) ^ (i >> 9)) as u8)
        .collect()
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

/// `QP_TEXT` (UTF-8) in quoted-printable, with a soft line break.
fn qp() -> String {
    let mut out = String::new();
    for b in QP_TEXT.bytes() {
        match b {
            b'\r' | b'\n' => out.push(b as char),
            b'=' => out.push_str("=3D"),
            b if b >= 0x80 => out.push_str(&format!("={b:02X}")),
            b => out.push(b as char),
        }
    }
    out.replacen("cut by", "cut=\r\n by", 1)
}

fn message(marker: &str, i: usize) -> String {
    format!(
        "From: a@example.test\r\nTo: {USER}\r\nSubject: {marker} {i}\r\n\
Date: Mon, 30 Nov 2026 10:00:00 +0000\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=\"=_S\"\r\n\r\nThe preamble.\r\n--=_S\r\n\
Content-Type: text/plain; charset=utf-8\r\n\r\nThree files attached.\r\n--=_S\r\n\
Content-Type: application/octet-stream; name=big.bin\r\n\
Content-Disposition: attachment; filename=big.bin\r\nContent-Transfer-Encoding: base64\r\n\r\n\
{}--=_S\r\n\
Content-Type: text/plain; charset=utf-8; name=notes.txt\r\n\
Content-Disposition: attachment; filename=notes.txt\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n\
{}\r\n--=_S\r\n\
Content-Type: text/csv; name=plain.csv\r\nContent-Disposition: attachment; filename=plain.csv\r\n\r\n\
a,b\r\n1,2\r\n--=_S--\r\nThe epilogue.\r\n",
        wrapped_base64(&big()),
        qp()
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

/// The FileReferences of the one message of `folder`, by file name.
async fn references(c: &mut EasClient, v: &str, folder: &str) -> Vec<(String, String)> {
    let folders = folders(c).await;
    let (id, _) = folder_named(&folders, folder).expect("folder listed");
    let res = c.post_xml("Sync", &sync_xml(&id, "0", 0, "")).await;
    let key = sync_response(&res, v).collections[0].sync_key.0.clone();
    let (_, items) = sync_all(c, v, &id, key, 5).await;
    assert_eq!(items.len(), 1);
    email_of(&items[0])
        .attachments
        .iter()
        .map(|a| {
            (
                a.display_name.clone().unwrap_or_default(),
                a.file_reference.clone().expect("FileReference"),
            )
        })
        .collect()
}

fn fetch_xml(fetches: &[(&str, Option<&str>)]) -> String {
    let mut xml = String::from(
        "<ItemOperations xmlns=\"ItemOperations:\" xmlns:airsyncbase=\"AirSyncBase:\">",
    );
    for (fref, range) in fetches {
        xml.push_str(&format!(
            "<Fetch><Store>Mailbox</Store><airsyncbase:FileReference>{fref}</airsyncbase:FileReference>"
        ));
        if let Some(r) = range {
            xml.push_str(&format!("<Options><Range>{r}</Range></Options>"));
        }
        xml.push_str("</Fetch>");
    }
    xml.push_str("</ItemOperations>");
    xml
}

/// ItemOperations with `MS-ASAcceptMultiPart: T`.
async fn post_multipart(c: &mut EasClient, xml: &str) -> HttpResponse {
    let headers = vec![
        ("Authorization".to_owned(), basic_of(USER)),
        (
            "Content-Type".to_owned(),
            "application/vnd.ms-sync.wbxml".to_owned(),
        ),
        ("MS-ASProtocolVersion".to_owned(), "14.1".to_owned()),
        ("MS-ASAcceptMultiPart".to_owned(), "T".to_owned()),
    ];
    let target = format!(
        "/Microsoft-Server-ActiveSync?{}",
        c.plain_query("ItemOperations", "")
    );
    c.send("POST", &target, &headers, &opush_tests::eas::wbxml_of(xml))
        .await
}

fn basic_of(user: &str) -> String {
    opush_tests::eas::basic(user, &opush_tests::demo_password())
}

/// This test's own reading of a multipart body ([MS-ASCMD] 2.2.1.10.1.1):
/// count, (offset, length) pairs, little-endian 32-bit.
fn parts(body: &[u8]) -> Vec<&[u8]> {
    let int = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap()) as usize;
    let n = int(0);
    let mut out = Vec::new();
    let mut expected_offset = 4 + 8 * n;
    for i in 0..n {
        let (offset, len) = (int(4 + 8 * i), int(8 + 8 * i));
        assert_eq!(offset, expected_offset, "parts follow each other");
        expected_offset += len;
        out.push(&body[offset..offset + len]);
    }
    assert_eq!(
        expected_offset,
        body.len(),
        "the body ends with the last part"
    );
    out
}

fn statuses(root: &opush_protocol::wbxml::Element<'_>) -> Vec<String> {
    find_all(root, "Response")
        .iter()
        .flat_map(|r| find_all(r, "Fetch"))
        .map(|f| find_text(f, "Status").unwrap_or_default())
        .collect()
}

fn inline_data(root: &opush_protocol::wbxml::Element<'_>) -> Vec<Vec<u8>> {
    find_all(root, "Data")
        .iter()
        .map(|d| {
            base64::engine::general_purpose::STANDARD
                .decode(d.text_concat().unwrap_or_default().as_bytes())
                .expect("Data is base64")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attachments_stream_inline_multipart_and_raw() {
    let mut imap = RawImap::login(USER);
    fill::ensure(&mut imap, FOLDER, 1, MARKER, |i| message(MARKER, i));
    fill::ensure(&mut imap, VANISH, 1, "stream-vanish-v1", |i| {
        message("stream-vanish-v1", i)
    });
    let opush = start(Options::default()).await;
    let mut c = opush.client(USER, "streamdev1", "14.1");
    let refs = references(&mut c, "14.1", FOLDER).await;
    let fref = |name: &str| {
        refs.iter()
            .find(|(n, _)| n == name)
            .map(|(_, f)| f.clone())
            .unwrap_or_else(|| panic!("{name} not listed in {refs:?}"))
    };
    let (big_ref, qp_ref, csv_ref) = (fref("big.bin"), fref("notes.txt"), fref("plain.csv"));
    let want = big();

    // Inline, whole: the three attachments in one answer.
    let res = c
        .post_xml(
            "ItemOperations",
            &fetch_xml(&[(&big_ref, None), (&qp_ref, None), (&csv_ref, None)]),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("Content-Type"),
        Some("application/vnd.ms-sync.wbxml")
    );
    let root = res.element();
    assert_eq!(statuses(&root), ["1", "1", "1"]);
    let data = inline_data(&root);
    assert_eq!(data.len(), 3);
    assert!(data[0] == want, "big.bin inline differs");
    assert_eq!(data[1], QP_TEXT.as_bytes());
    assert_eq!(data[2], b"a,b\r\n1,2");
    let types: Vec<String> = find_all(&root, "ContentType")
        .iter()
        .map(|e| e.text_concat().unwrap_or_default().into_owned())
        .collect();
    assert_eq!(
        types,
        [
            "application/octet-stream",
            "text/plain; charset=utf-8",
            "text/csv"
        ]
    );

    // Inline, a range in the middle.
    let res = c
        .post_xml(
            "ItemOperations",
            &fetch_xml(&[(&big_ref, Some("1000001-3000000"))]),
        )
        .await;
    let root = res.element();
    assert_eq!(statuses(&root), ["1"]);
    assert_eq!(find_text(&root, "Total"), Some(SIZE.to_string()));
    assert!(inline_data(&root)[0] == want[1_000_001..=3_000_000]);

    // Multipart (header), whole: Part 1 and 2 instead of Data.
    let res = post_multipart(&mut c, &fetch_xml(&[(&big_ref, None), (&qp_ref, None)])).await;
    assert_eq!(res.status, 200);
    assert_eq!(
        res.header("Content-Type"),
        Some("application/vnd.ms-sync.multipart")
    );
    let p = parts(&res.body);
    assert_eq!(p.len(), 3);
    let root = opush_protocol::wbxml::decode(p[0]).unwrap().into_owned();
    assert_eq!(statuses(&root), ["1", "1"]);
    assert!(find_all(&root, "Data").is_empty());
    let part_numbers: Vec<String> = find_all(&root, "Part")
        .iter()
        .map(|e| e.text_concat().unwrap_or_default().into_owned())
        .collect();
    assert_eq!(part_numbers, ["1", "2"]);
    assert!(p[1] == want.as_slice(), "big.bin multipart differs");
    assert_eq!(p[2], QP_TEXT.as_bytes());

    // Multipart (query), ranges: the end clipped to the size.
    let query = c.plain_query("ItemOperations", "&AcceptMultiPart=T");
    let xml = fetch_xml(&[
        (&big_ref, Some("0-0")),
        (&big_ref, Some(&format!("{}-{}", SIZE - 10, SIZE + 50))),
        (&csv_ref, Some("2-3")),
    ]);
    let res = c
        .post_query(&query, true, &opush_tests::eas::wbxml_of(&xml))
        .await;
    let p = parts(&res.body);
    assert_eq!(p.len(), 4);
    let root = opush_protocol::wbxml::decode(p[0]).unwrap().into_owned();
    assert_eq!(statuses(&root), ["1", "1", "1"]);
    assert_eq!(p[1], &want[..1]);
    assert_eq!(p[2], &want[SIZE - 10..]);
    assert_eq!(p[3], b"b\r");
    let ranges: Vec<String> = find_all(&root, "Range")
        .iter()
        .map(|e| e.text_concat().unwrap_or_default().into_owned())
        .collect();
    assert_eq!(
        ranges,
        [
            "0-0".to_owned(),
            format!("{}-{}", SIZE - 10, SIZE - 1),
            "2-3".to_owned()
        ]
    );

    // A range past the end: InvalidByteRange, nothing streamed.
    let res = c
        .post_xml(
            "ItemOperations",
            &fetch_xml(&[(&big_ref, Some(&format!("{SIZE}-{}", SIZE + 10)))]),
        )
        .await;
    assert_eq!(statuses(&res.element()), ["8"]);

    // GetAttachment (12.1): the raw bytes, with the attachment's type.
    let mut old = opush.client(USER, "streamdev2", "12.1");
    let old_refs = references(&mut old, "12.1", FOLDER).await;
    let old_big = &old_refs.iter().find(|(n, _)| n == "big.bin").unwrap().1;
    let query = old.plain_query(
        "GetAttachment",
        &format!("&AttachmentName={}", percent(old_big)),
    );
    let res = old.post_query(&query, true, b"").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("Content-Type"), Some("application/octet-stream"));
    assert!(res.body == want, "GetAttachment differs");

    // The message vanishes: ObjectNotFound, and HTTP 500 for GetAttachment.
    let gone = references(&mut c, "14.1", VANISH).await;
    let gone_old = references(&mut old, "12.1", VANISH).await;
    imap.cmd(&format!("SELECT \"{VANISH}\""));
    imap.cmd("UID STORE 1:* +FLAGS.SILENT (\\Deleted)");
    imap.cmd("EXPUNGE");
    imap.cmd("UNSELECT");
    let res = post_multipart(&mut c, &fetch_xml(&[(&gone[0].1, None)])).await;
    let p = parts(&res.body);
    assert_eq!(p.len(), 1);
    let root = opush_protocol::wbxml::decode(p[0]).unwrap().into_owned();
    assert_eq!(statuses(&root), ["6"]);
    let query = old.plain_query(
        "GetAttachment",
        &format!("&AttachmentName={}", percent(&gone_old[0].1)),
    );
    assert_eq!(old.post_query(&query, true, b"").await.status, 500);
    opush.stop().await;
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The IMAP server stops while an attachment is being sent: the answer
/// was announced with its `Content-Length`, fewer bytes come and the
/// connection closes (never an answer that looks whole). A private Dovecot
/// (port 11740, load1193's own store there) is stopped mid-answer; the
/// client reads slowly at first so that most of the answer is still to
/// be read from IMAP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_stopping_mid_answer_closes_the_connection() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const USER2: &str = "load1193@load.test";
    const MB: usize = 40;
    opush_tests::require(opush_tests::DOVECOT_IMAP);
    let dovecot = opush_tests::PrivateDovecot::new(
        opush_tests::repo_root().join("target/tmp/stream-mid-answer"),
        11740,
    );
    dovecot.run("up");
    let marker = "stream-mid-v1";
    let bytes: Vec<u8> = (0..MB * 1_000_000).map(|i| (i % 251) as u8).collect();
    let msg = format!(
        "From: a@example.test\r\nTo: {USER2}\r\nSubject: {marker} 0\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\nContent-Type: text/plain\r\n\r\nbig\r\n--M\r\n\
Content-Type: application/octet-stream; name=mid.bin\r\nContent-Disposition: attachment; filename=mid.bin\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}--M--\r\n",
        wrapped_base64(&bytes)
    );
    let mut imap = RawImap::login_to(dovecot.addr(), USER2);
    fill::ensure(&mut imap, FOLDER, 1, marker, |_| msg.clone());
    drop(imap);
    let opush = start(Options {
        imap_port: 11740,
        imap_toml: "max_message_bytes = 100000000\n".to_owned(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(USER2, "streammid", "14.1");
    let refs = references(&mut c, "14.1", FOLDER).await;
    let fref = &refs.iter().find(|(n, _)| n == "mid.bin").unwrap().1;
    let body = opush_tests::eas::wbxml_of(&fetch_xml(&[(fref, None)]));
    let mut head = format!(
        "POST /Microsoft-Server-ActiveSync?{} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
         MS-ASProtocolVersion: 14.1\r\nMS-ASAcceptMultiPart: T\r\n\
         Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: {}\r\n\r\n",
        c.plain_query("ItemOperations", ""),
        basic_of(USER2),
        body.len()
    )
    .into_bytes();
    head.extend_from_slice(&body);
    let mut conn = tokio::net::TcpStream::connect(opush.addr).await.unwrap();
    conn.write_all(&head).await.unwrap();
    // The head, and the first bytes.
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = conn.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).into_owned();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let length: usize = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    let head_len = text.find("\r\n\r\n").unwrap() + 4;
    assert!(length > MB * 1_000_000, "the whole attachment announced");
    dovecot.run("down");
    // Then everything, until the server closes.
    let read_all = async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(120), read_all)
        .await
        .expect("the server closes the connection");
    let received = got.len() - head_len;
    assert!(
        received < length,
        "only part of the answer comes ({received} of {length} bytes)"
    );
    opush.stop().await;
}

/// A message of `marker` with one base64 attachment `file` of `bytes`.
fn one_attachment(user: &str, marker: &str, file: &str, bytes: &[u8]) -> String {
    format!(
        "From: a@example.test\r\nTo: {user}\r\nSubject: {marker} 0\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/mixed; boundary=M\r\n\r\n--M\r\nContent-Type: text/plain\r\n\r\nbig\r\n--M\r\n\
Content-Type: application/octet-stream; name={file}\r\nContent-Disposition: attachment; filename={file}\r\n\
Content-Transfer-Encoding: base64\r\n\r\n{}--M--\r\n",
        wrapped_base64(bytes)
    )
}

/// An answer being downloaded by hand: the connection, what came so far,
/// where the body starts and the announced length.
struct Download {
    conn: tokio::net::TcpStream,
    got: Vec<u8>,
    head_len: usize,
    length: usize,
}

impl Download {
    /// Sends a multipart ItemOperations Fetch of `fref` and reads the
    /// answer's head (and what comes with it), no more.
    async fn start(opush: &Opush, c: &EasClient, user: &str, fref: &str) -> Download {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let body = opush_tests::eas::wbxml_of(&fetch_xml(&[(fref, None)]));
        let mut head = format!(
            "POST /Microsoft-Server-ActiveSync?{} HTTP/1.1\r\nHost: x\r\nAuthorization: {}\r\n\
             MS-ASProtocolVersion: 14.1\r\nMS-ASAcceptMultiPart: T\r\n\
             Content-Type: application/vnd.ms-sync.wbxml\r\nContent-Length: {}\r\n\r\n",
            c.plain_query("ItemOperations", ""),
            basic_of(user),
            body.len()
        )
        .into_bytes();
        head.extend_from_slice(&body);
        let mut conn = tokio::net::TcpStream::connect(opush.addr).await.unwrap();
        conn.write_all(&head).await.unwrap();
        let mut got = Vec::new();
        let mut buf = vec![0u8; 64 * 1024];
        while !got.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).await.unwrap();
            assert!(n > 0, "closed before the head");
            got.extend_from_slice(&buf[..n]);
        }
        let text = String::from_utf8_lossy(&got).into_owned();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        let length = text
            .lines()
            .find_map(|l| {
                l.to_ascii_lowercase()
                    .strip_prefix("content-length:")
                    .map(|v| v.trim().parse().unwrap())
            })
            .expect("Content-Length");
        let head_len = text.find("\r\n\r\n").unwrap() + 4;
        Download {
            conn,
            got,
            head_len,
            length,
        }
    }

    /// Reads until the server closes (or the whole answer came); the body.
    async fn finish(mut self) -> (Vec<u8>, usize) {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; 256 * 1024];
        let read_all = async {
            while self.got.len() - self.head_len < self.length {
                match self.conn.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => self.got.extend_from_slice(&buf[..n]),
                }
            }
        };
        tokio::time::timeout(std::time::Duration::from_secs(120), read_all)
            .await
            .expect("the answer ends");
        (self.got.split_off(self.head_len), self.length)
    }
}

/// The attachment part of a multipart body, as far as it came (the body
/// of one Fetch: the table, the WBXML, then the attachment).
fn attachment_part(body: &[u8]) -> &[u8] {
    let int = |at: usize| u32::from_le_bytes(body[at..at + 4].try_into().unwrap()) as usize;
    assert_eq!(int(0), 2, "two parts");
    let offset = int(12);
    &body[offset.min(body.len())..]
}

/// A device downloading slowly holds none of its user's IMAP connections:
/// with `pool_size = 1`, the user's other requests are served while an
/// answer of 24 MB waits on its reader (before, the stream held the one
/// connection until the download ended and the Sync waited for it in
/// vain: "no IMAP connection free"). The download then ends whole and
/// byte-exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_download_holds_no_imap_connection() {
    const USER3: &str = "load1311@load.test";
    const SLOW: &str = "stream-slow";
    let bytes: Vec<u8> = (0..24_000_000usize)
        .map(|i| (i.wrapping_mul(7) ^ (i >> 11)) as u8)
        .collect();
    let mut imap = RawImap::login(USER3);
    fill::ensure(&mut imap, SLOW, 1, "stream-slow-v1", |_| {
        one_attachment(USER3, "stream-slow-v1", "slow.bin", &bytes)
    });
    drop(imap);
    let opush = start(Options {
        imap_toml: "max_message_bytes = 100000000\npool_size = 1\ntimeout_ms = 5000\n".to_owned(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(USER3, "streamslow", "14.1");
    let refs = references(&mut c, "14.1", SLOW).await;
    let fref = refs
        .iter()
        .find(|(n, _)| n == "slow.bin")
        .unwrap()
        .1
        .clone();
    let download = Download::start(&opush, &c, USER3, &fref).await;
    // The reader waits; socket buffers fill and the stream stops.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    for _ in 0..3 {
        let res = c
            .post_xml(
                "FolderSync",
                "<FolderSync xmlns=\"FolderHierarchy:\"><SyncKey>0</SyncKey></FolderSync>",
            )
            .await;
        assert_eq!(res.status, 200, "FolderSync during the download");
        assert_eq!(
            find_text(&res.element(), "Status").as_deref(),
            Some("1"),
            "FolderSync during the download"
        );
    }
    let (body, length) = download.finish().await;
    assert_eq!(body.len(), length, "the whole answer came");
    assert!(
        attachment_part(&body) == bytes.as_slice(),
        "slow.bin differs"
    );
    opush.stop().await;
}

/// The folder is deleted and created again, under the same name, with a
/// message of the same shape at the same UID, while its attachment is
/// downloaded: the rest is not read from the new message (each chunk's
/// connection checks the folder's UIDVALIDITY), the answer is broken off
/// short of its `Content-Length`, and what came is the old attachment's.
/// With `pool_size = 1`, a Sync of INBOX meanwhile leaves the user's one
/// connection with INBOX selected (or a new one, if the server ended the
/// stale one): the next chunk's connection SELECTs the new folder, whose
/// messages only the UIDVALIDITY tells apart from the old ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_folder_created_again_mid_download_breaks_the_answer_off() {
    const USER4: &str = "load1313@load.test";
    const AGAIN: &str = "stream-again";
    let old: Vec<u8> = (0..24_000_000usize).map(|i| (i % 253) as u8).collect();
    let new: Vec<u8> = (0..24_000_000usize).map(|i| (i % 241) as u8).collect();
    let mut imap = RawImap::login(USER4);
    fill::ensure(&mut imap, AGAIN, 1, "stream-again-old", |_| {
        one_attachment(USER4, "stream-again-old", "again.bin", &old)
    });
    let opush = start(Options {
        imap_toml: "max_message_bytes = 100000000\npool_size = 1\n".to_owned(),
        ..Options::default()
    })
    .await;
    let mut c = opush.client(USER4, "streamagain", "14.1");
    let refs = references(&mut c, "14.1", AGAIN).await;
    let folders = folders(&mut c).await;
    let inbox = folder_of_type(&folders, 2).expect("Inbox listed");
    let res = c.post_xml("Sync", &sync_xml(&inbox, "0", 0, "")).await;
    let inbox_key = sync_response(&res, "14.1").collections[0]
        .sync_key
        .0
        .clone();
    let fref = refs
        .iter()
        .find(|(n, _)| n == "again.bin")
        .unwrap()
        .1
        .clone();
    let download = Download::start(&opush, &c, USER4, &fref).await;
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    // The same shape and size, other bytes, at UID 1 again.
    fill::ensure(&mut imap, AGAIN, 1, "stream-again-new", |_| {
        one_attachment(USER4, "stream-again-new", "again.bin", &new)
    });
    let res = c
        .post_xml("Sync", &sync_xml(&inbox, &inbox_key, 5, ""))
        .await;
    assert_eq!(res.status, 200, "Sync of INBOX during the download");
    let (body, length) = download.finish().await;
    assert!(
        body.len() < length,
        "the answer is broken off ({} of {length} bytes)",
        body.len()
    );
    let part = attachment_part(&body);
    assert!(!part.is_empty(), "some of the attachment came first");
    assert!(
        part == &old[..part.len()],
        "bytes of another message were served"
    );
    opush.stop().await;
}
