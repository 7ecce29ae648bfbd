//! Unit tests of the message → Email conversion (real MIME samples written
//! here; no backend involved).

#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use super::*;
use opush_protocol::commands::airsyncbase::BodyPreference;

fn info() -> MessageInfo {
    MessageInfo {
        server_id: "5:12".to_owned(),
        internal_date: 1_764_323_400, // 2025-11-28T09:50:00Z
        seen: true,
        flagged: false,
        keywords: vec!["Work".to_owned()],
    }
}

fn plain_pref() -> Vec<BodyPreference> {
    vec![BodyPreference {
        body_type: 1,
        truncation_size: None,
        all_or_none: None,
        preview: None,
    }]
}

const ENCODED: &[u8] = b"From: =?UTF-8?Q?Ren=C3=A9e_Dupr=C3=A9?= <renee@example.test>\r\n\
To: \"Bob\" <bob@example.test>, carol@example.test\r\n\
Cc: =?ISO-8859-1?B?SvZyZw==?= <jorg@example.test>\r\n\
Subject: =?UTF-8?B?w4AgYmllbnTDtHQg4oKs?=\r\n\
Importance: High\r\n\
Date: Fri, 28 Nov 2025 10:49:00 +0100\r\n\
Content-Type: text/plain; charset=utf-8\r\n\
\r\n\
Bonjour, \xc3\xa7a va ?\r\n";

#[test]
fn rfc2047_headers_are_decoded_and_addresses_rendered() {
    let e = to_email(ENCODED, &info(), &plain_pref(), ProtocolVersion::V14_1);
    assert_eq!(e.subject.as_deref(), Some("À bientôt €"));
    assert_eq!(
        e.from.as_deref(),
        Some("\"Renée Dupré\" <renee@example.test>")
    );
    assert_eq!(
        e.to.as_deref(),
        Some("\"Bob\" <bob@example.test>, <carol@example.test>")
    );
    assert_eq!(e.cc.as_deref(), Some("\"Jörg\" <jorg@example.test>"));
    assert_eq!(e.display_to.as_deref(), Some("Bob; carol@example.test"));
    assert_eq!(e.importance, Some(2));
    assert_eq!(e.read, Some(true));
    assert_eq!(e.date_received.as_deref(), Some("2025-11-28T09:50:00.000Z"));
    assert_eq!(e.categories, Some(vec!["Work".to_owned()]));
    assert_eq!(e.flag, Some(Flag::default()));
    assert_eq!(e.native_body_type, Some(1));
    let body = e.body.unwrap();
    assert_eq!(body.data.as_deref(), Some("Bonjour, ça va ?\r\n"));
}

#[test]
fn flagged_gives_an_active_follow_up_flag() {
    let mut i = info();
    i.flagged = true;
    let e = to_email(ENCODED, &i, &plain_pref(), ProtocolVersion::V12_1);
    let flag = e.flag.unwrap();
    assert_eq!(flag.status, Some(2));
    assert_eq!(flag.flag_type.as_deref(), Some("Follow up"));
}

#[test]
fn a_body_without_charset_and_a_broken_ics_never_block() {
    // 8-bit Latin-1 bytes with no charset, then an ICS part that is garbage.
    let raw: &[u8] = b"From: a@example.test\r\nSubject: broken\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=XX\r\n\r\n\
--XX\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: 8bit\r\n\r\n\
caf\xe9 cr\xe8me\r\n\
--XX\r\nContent-Type: text/calendar; method=REQUEST\r\n\r\nBEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:garbage\r\n\
--XX--\r\n";
    let e = to_email(raw, &info(), &plain_pref(), ProtocolVersion::V16_1);
    assert_eq!(e.subject.as_deref(), Some("broken"));
    let data = e.body.unwrap().data.unwrap();
    assert!(data.starts_with("caf"), "{data:?}");
    assert!(data.contains("cr"), "{data:?}");
}

#[test]
fn garbage_input_still_gives_an_item() {
    for raw in [&b""[..], b"\x00\x01\x02", b"no headers at all"] {
        let e = to_email(raw, &info(), &plain_pref(), ProtocolVersion::V14_1);
        assert!(e.subject.is_some());
        assert!(e.body.is_some());
    }
}

const WITH_ATTACHMENTS: &[u8] = b"From: a@example.test\r\nTo: b@example.test\r\nSubject: files\r\n\
MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=B1\r\n\r\n\
--B1\r\nContent-Type: multipart/alternative; boundary=B2\r\n\r\n\
--B2\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee <attached>\r\n\
--B2\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>See <b>attached</b></p><style>x{}</style></body></html>\r\n\
--B2--\r\n\
--B1\r\nContent-Type: application/pdf; name=\"=?UTF-8?Q?r=C3=A9sum=C3=A9.pdf?=\"\r\n\
Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9.pdf\r\n\
Content-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n\
--B1\r\nContent-Type: image/png\r\nContent-Disposition: inline; filename=logo.png\r\nContent-ID: <logo@x>\r\n\
Content-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n\
--B1--\r\n";

#[test]
fn attachments_are_listed_with_file_references_that_fetch_them() {
    let html = vec![BodyPreference {
        body_type: 2,
        truncation_size: Some(10_000),
        all_or_none: None,
        preview: Some(100),
    }];
    let e = to_email(WITH_ATTACHMENTS, &info(), &html, ProtocolVersion::V14_1);
    assert_eq!(e.native_body_type, Some(2));
    let body = e.body.unwrap();
    assert_eq!(body.body_type, 2);
    assert!(body.data.unwrap().contains("<b>attached</b>"));
    assert_eq!(body.preview.as_deref(), Some("See <attached>"));
    assert_eq!(e.attachments.len(), 2);
    let pdf = &e.attachments[0];
    assert_eq!(pdf.display_name.as_deref(), Some("résumé.pdf"));
    assert_eq!(pdf.file_reference.as_deref(), Some("5:12:0"));
    assert_eq!(pdf.method, Some(1));
    assert_eq!(pdf.is_inline, Some(false));
    let png = &e.attachments[1];
    assert_eq!(png.content_id.as_deref(), Some("logo@x"));
    assert_eq!(png.is_inline, Some(true));

    let fref = FileReference::parse(png.file_reference.as_deref().unwrap()).unwrap();
    assert_eq!(fref.server_id, "5:12");
    let content = attachment_content(WITH_ATTACHMENTS, fref.index).unwrap();
    assert_eq!(content.content_type, "image/png");
    assert_eq!(&content.data[..4], b"\x89PNG");
    let pdf = attachment_content(WITH_ATTACHMENTS, 0).unwrap();
    assert_eq!(pdf.data, b"%PDF-1.4\n");
    assert!(attachment_content(WITH_ATTACHMENTS, 2).is_none());
}

#[test]
fn attachments_are_left_out_before_airsyncbase() {
    let e = to_email(WITH_ATTACHMENTS, &info(), &[], ProtocolVersion::V2_5);
    assert!(e.attachments.is_empty());
    assert!(e.body.is_none());
}

#[test]
fn file_references_reject_anything_else() {
    assert_eq!(
        FileReference::parse("5:12:3"),
        Some(FileReference {
            server_id: "5:12".to_owned(),
            index: 3
        })
    );
    for bad in [
        "",
        "5:12",
        "5::3",
        "a:1:2",
        "5:12:3:4",
        "5:12:99999999999",
        "5:12:-1",
    ] {
        assert_eq!(FileReference::parse(bad), None, "{bad:?}");
    }
}

#[test]
fn dates_are_formatted_in_utc_across_eras() {
    assert_eq!(format_date(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_date(951_782_400), "2000-02-29T00:00:00.000Z");
    assert_eq!(format_date(-1), "1969-12-31T23:59:59.000Z");
    assert_eq!(format_date(4_102_444_799), "2099-12-31T23:59:59.000Z");
}

#[test]
fn importance_reads_importance_then_x_priority() {
    assert_eq!(importance(Some(" low"), None), 0);
    assert_eq!(importance(None, Some("1 (Highest)")), 2);
    assert_eq!(importance(None, Some("5")), 0);
    assert_eq!(importance(Some("normal"), Some("3")), 1);
    assert_eq!(importance(None, None), 1);
}

#[test]
fn conversation_id_from_14_0_joins_a_reply_to_its_original() {
    let original =
        b"From: a@example.test\r\nSubject: Plans\r\nMessage-ID: <root@example.test>\r\n\r\nhi\r\n";
    let reply = b"From: b@example.test\r\nSubject: Re: Plans\r\nMessage-ID: <r1@example.test>\r\nIn-Reply-To: <root@example.test>\r\nReferences: <root@example.test>\r\n\r\nho\r\n";
    let a = to_email(original, &info(), &plain_pref(), ProtocolVersion::V14_1);
    let b = to_email(reply, &info(), &plain_pref(), ProtocolVersion::V16_1);
    assert_eq!(a.conversation_id.as_ref().map(Vec::len), Some(16));
    assert_eq!(a.conversation_id, b.conversation_id);
    let old = to_email(original, &info(), &plain_pref(), ProtocolVersion::V12_1);
    assert_eq!(old.conversation_id, None, "Email2 is 14.0+");
}
