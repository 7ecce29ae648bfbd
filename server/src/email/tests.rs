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

/// Messages at the edges of the one-part plain-text shortcut
/// ([`single_text_body`]): each must render exactly as the whole parse
/// renders it, taken or not.
fn shortcut_edges() -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = vec![
        ENCODED.to_vec(),
        WITH_ATTACHMENTS.to_vec(),
        b"".to_vec(),
        b"no headers at all".to_vec(),
        b"Subject: only headers\r\n".to_vec(),
        b"Subject: only headers, ended\r\n\r\n".to_vec(),
        b"Subject: bare LF\n\nbody\nline 2\n".to_vec(),
        b"Subject: blank line with spaces\r\n  \t\r\nbody\r\n".to_vec(),
        b"Subject: folded\r\n  on two lines\r\nTo: a@example.test\r\n\r\nbody\r\n".to_vec(),
        b"Subject: a line that is no header\r\nnot a header\r\n\r\nbody\r\n".to_vec(),
        b"Subject: latin-1 bytes\r\n\r\ncaf\xe9\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\ncaf\xe9\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nplain\r\n".to_vec(),
        // Valid UTF-8 that the named charset reads otherwise.
        b"Subject: x\r\nContent-Type: text/plain; charset=iso-8859-1\r\n\r\nh\xc3\xa9\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: TEXT/PLAIN; charset=UTF-8\r\n\r\nh\xc3\xa9\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: text/plain; charset=\"utf8\"\r\n\r\nh\xc3\xa9\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>hi</p>\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: text/enriched\r\n\r\nhi\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: application/pdf\r\n\r\n%PDF\r\n".to_vec(),
        b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nno boundary\r\n".to_vec(),
        b"Subject: x\r\nContent-Transfer-Encoding: base64\r\n\r\naMOpbGxv\r\n".to_vec(),
        b"Subject: x\r\nContent-Transfer-Encoding: Quoted-Printable\r\n\r\nh=C3=A9\r\n".to_vec(),
        b"Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\nh\xc3\xa9\r\n".to_vec(),
        b"Subject: x\r\nContent-Disposition: attachment; filename=a.txt\r\n\r\nhi\r\n".to_vec(),
        b"Subject: x\r\nContent-Disposition: inline\r\n\r\nhi\r\n".to_vec(),
        b"Subject: mentions multipart\r\n\r\nbody\r\n".to_vec(),
        b"Subject: x\r\n\r\n".to_vec(),
        b"Subject: x\r\n\r\n\r\n\r\nafter blank lines\r\n".to_vec(),
        b"\r\nbody with no headers\r\n".to_vec(),
        b"Content-Type: text/plain\r\nContent-Type: text/html\r\n\r\n<b>two types</b>\r\n".to_vec(),
        b"Subject: x\r\nX-Opush-Attachment: 3\r\n\r\nbody\r\n".to_vec(),
        b"Subject: =?utf-8?q?caf=C3=A9?=\r\nMessage-ID: <a@b>\r\nImportance: low\r\n\r\n\xc3\xa9t\xc3\xa9\r\n"
            .to_vec(),
    ];
    // The load tool's message shape (tests/src/fill.rs).
    out.push(opush_tests::fill::text_message("shape", 7).into_bytes());
    out
}

fn all_prefs() -> Vec<Vec<BodyPreference>> {
    let p = |body_type, truncation_size, preview| BodyPreference {
        body_type,
        truncation_size,
        all_or_none: None,
        preview,
    };
    vec![
        vec![],
        plain_pref(),
        vec![p(1, Some(500), None)],
        vec![p(1, Some(3), Some(100))],
        vec![p(2, Some(20), Some(255))],
        vec![p(4, None, None)],
        vec![p(1, Some(5), None), p(2, None, Some(10))],
    ]
}

const VERSIONS: [ProtocolVersion; 4] = [
    ProtocolVersion::V2_5,
    ProtocolVersion::V12_1,
    ProtocolVersion::V14_1,
    ProtocolVersion::V16_1,
];

/// The address lists as first written: one string per address, joined.
fn addresses_joined(addr: &Address<'_>) -> (String, String) {
    let rendered = addr
        .iter()
        .filter_map(|a| {
            let address = a.address.as_deref()?;
            Some(match a.name.as_deref().filter(|n| !n.is_empty()) {
                Some(name) => format!("\"{}\" <{address}>", name.replace('"', "'")),
                None => format!("<{address}>"),
            })
        })
        .collect::<Vec<_>>()
        .join(", ");
    let names = addr
        .iter()
        .filter_map(|a| {
            a.name
                .as_deref()
                .filter(|n| !n.is_empty())
                .or(a.address.as_deref())
                .map(str::to_owned)
        })
        .collect::<Vec<_>>()
        .join("; ");
    (rendered, names)
}

#[test]
fn address_lists_are_written_as_when_joined() {
    for to in [
        "a@example.test",
        "\"Bob\" <bob@example.test>, carol@example.test",
        "\"quo\\\"ted\" <q@example.test>",
        "=?UTF-8?Q?Ren=C3=A9e?= <r@example.test>, <>, \"\" <e@example.test>",
        "group: a@example.test, \"B\" <b@example.test>;, c@example.test",
        "undisclosed-recipients:;",
        "no address here",
        ", , ,",
    ] {
        let raw = format!("To: {to}\r\n\r\nbody\r\n");
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        let Some(addr) = msg.to() else {
            continue;
        };
        assert_eq!(
            (render_addresses(addr), display_names(addr)),
            addresses_joined(addr),
            "{to:?}"
        );
    }
}

#[test]
fn raw_headers_are_read_as_mail_parser_reads_them() {
    let raw = b"Message-ID: <a@x>\r\nimportance: low\r\nX-PRIORITY: 1\r\n\
References: <r1@x>\r\n  <r2@x>\r\nIn-Reply-To: <r2@x>\r\nImportance: High\r\n\r\nbody\r\n";
    let msg = MessageParser::default().parse(&raw[..]).unwrap();
    for (i, name) in [
        "References",
        "In-Reply-To",
        "Message-ID",
        "Importance",
        "X-Priority",
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(
            header_raw(&msg, &RAW_HEADERS[i]),
            msg.header_raw(name),
            "{name}"
        );
        assert!(msg.header_raw(name).is_some(), "{name}");
    }
    let bare = MessageParser::default()
        .parse(&b"Subject: x\r\n\r\nb"[..])
        .unwrap();
    assert_eq!(header_raw(&bare, &RAW_HEADERS[0]), None);
}

#[test]
fn the_plain_text_shortcut_renders_as_the_whole_parse() {
    let mut taken = 0;
    for raw in shortcut_edges() {
        let head = MessageParser::default().parse_headers(&raw[..]);
        if head
            .as_ref()
            .and_then(|h| single_text_body(&raw, h))
            .is_some()
        {
            taken += 1;
        }
        for prefs in all_prefs() {
            for v in VERSIONS {
                assert_eq!(
                    to_email(&raw, &info(), &prefs, v),
                    to_email_parsed_whole(&raw, &info(), &prefs, v),
                    "{:?} {prefs:?} {v:?}",
                    String::from_utf8_lossy(&raw)
                );
            }
        }
    }
    // The shortcut is taken where it should be, not nowhere.
    assert!(taken >= 12, "shortcut taken {taken} times");
}

mod generated {
    use super::*;
    use proptest::prelude::*;

    /// Header lines a message may carry, each at the edges the shortcut
    /// tests: types, charsets, encodings, dispositions, folding, odd case.
    fn header() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("Subject: hello\r\n".to_owned()),
            Just("Subject: =?UTF-8?B?w4AgYmllbnTDtHQ=?=\r\n".to_owned()),
            Just("From: \"A\" <a@example.test>\r\n".to_owned()),
            Just("To: b@example.test, \"C, D\" <c@example.test>\r\n".to_owned()),
            Just("Message-ID: <m@example.test>\r\n".to_owned()),
            Just("Content-Type: text/plain\r\n".to_owned()),
            Just("Content-Type: text/plain; charset=utf-8\r\n".to_owned()),
            Just("Content-Type: Text/Plain; Charset=\"UTF-8\"\r\n".to_owned()),
            Just("Content-Type: text/plain; charset=windows-1252\r\n".to_owned()),
            Just("Content-Type: text/plain; charset=x-unknown\r\n".to_owned()),
            Just("Content-Type: text/html\r\n".to_owned()),
            Just("Content-Type: multipart/alternative; boundary=b\r\n".to_owned()),
            Just("Content-Type: message/rfc822\r\n".to_owned()),
            Just("Content-Transfer-Encoding: 7bit\r\n".to_owned()),
            Just("Content-Transfer-Encoding: BASE64\r\n".to_owned()),
            Just("Content-Transfer-Encoding: quoted-printable\r\n".to_owned()),
            Just("Content-Disposition: attachment\r\n".to_owned()),
            Just("Content-Disposition: inline; filename=x.txt\r\n".to_owned()),
            Just("X-Folded: one\r\n two\r\n".to_owned()),
            Just("X-Bare: lf\n".to_owned()),
            Just("not a header line\r\n".to_owned()),
            Just(" \r\n".to_owned()),
        ]
    }

    fn body() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"".to_vec()),
            Just(b"plain\r\n".to_vec()),
            Just(b"h\xc3\xa9 \xe2\x82\xac\r\n".to_vec()),
            Just(b"h\xc3\xa9 \xe2\x82\xac\r\n".to_vec()),
            Just(b"caf\xe9\r\n".to_vec()),
            Just(b"--b\r\nContent-Type: text/plain\r\n\r\npart\r\n--b--\r\n".to_vec()),
            Just(b"aMOpbGxv\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn the_shortcut_renders_as_the_whole_parse(
            headers in proptest::collection::vec(header(), 0..6),
            blank in prop_oneof![Just("\r\n"), Just("\n"), Just(""), Just(" \r\n")],
            body in body(),
            prefs in proptest::sample::select(all_prefs()),
            v in proptest::sample::select(VERSIONS.to_vec()),
        ) {
            let mut raw = headers.concat().into_bytes();
            raw.extend_from_slice(blank.as_bytes());
            raw.extend_from_slice(&body);
            prop_assert_eq!(
                to_email(&raw, &info(), &prefs, v),
                to_email_parsed_whole(&raw, &info(), &prefs, v)
            );
        }
    }
}

// A text file is fetched as it was stored (only its transfer encoding
// undone), with its charset, not converted to UTF-8 the way mail-parser
// hands text over; a charset that is not a token is left out of the type.
#[test]
fn a_text_attachment_is_fetched_in_its_own_charset() {
    let raw = b"From: a@example.test\r\nSubject: t\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: text/csv; charset=iso-8859-1\r\nContent-Disposition: attachment; filename=\"a.csv\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n--b\r\nContent-Type: text/plain; charset=\"x; y\"\r\nContent-Disposition: attachment; filename=\"b.txt\"\r\nContent-Transfer-Encoding: base64\r\n\r\naGk=\r\n--b--\r\n";
    let csv = attachment_content(raw, 0).unwrap();
    assert_eq!(csv.content_type, "text/csv; charset=iso-8859-1");
    assert_eq!(csv.data, b"caf\xe9");
    let txt = attachment_content(raw, 1).unwrap();
    assert_eq!(txt.content_type, "text/plain");
    assert_eq!(txt.data, b"hi");
}

/// A large message's rendering from its skeleton (`to_email_large`):
/// with nothing cut it is the whole rendering; with its attachments cut
/// (as Sync reads a large message) the attachment list is the whole
/// rendering's, numbers and sizes included, and so is the body as long
/// as the text parts are kept; a text body cut in the skeleton keeps its
/// whole EstimatedDataSize and is Truncated.
mod large {
    use super::*;
    use proptest::prelude::*;

    /// `to_email_large` of `raw` scanned keeping `keep` bytes of each body
    /// and `text_keep` of each text part, with `mime` its first bytes.
    fn large(
        raw: &[u8],
        (keep, text_keep): (usize, usize),
        mime: &[u8],
        prefs: &[BodyPreference],
        v: ProtocolVersion,
    ) -> Email {
        let mut s = skeleton::Scanner::with_text(keep, text_keep);
        for c in raw.chunks(1000) {
            s.feed(c);
        }
        let (skel, leaves) = s.finish().unwrap();
        let l = Large {
            leaves: &leaves,
            size: raw.len() as u64,
            mime,
        };
        to_email_large(&skel, &l, &info(), prefs, v)
    }

    fn base64_lines(data: &[u8]) -> String {
        let mut enc = Vec::new();
        let mut e = transfer::Base64Encoder::default();
        e.feed(data, &mut enc);
        e.finish(&mut enc);
        enc.chunks(76)
            .map(|l| format!("{}\r\n", String::from_utf8_lossy(l)))
            .collect()
    }

    /// One part of a generated message (its header and body).
    fn part() -> impl Strategy<Value = String> {
        let text = proptest::collection::vec(
            prop_oneof![
                Just("hello"),
                Just("h\u{e9}t\u{e9}"),
                Just("\u{20ac}"),
                Just("a<b&c")
            ],
            0..400,
        )
        .prop_map(|w| {
            w.chunks(12)
                .map(|l| format!("{}\r\n", l.join(" ")))
                .collect::<String>()
        });
        let bytes = proptest::collection::vec(any::<u8>(), 0..6000);
        prop_oneof![
            text.clone()
                .prop_map(|t| format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{t}")),
            text.clone().prop_map(|t| format!(
                "Content-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>{t}</p></body></html>\r\n"
            )),
            text.clone().prop_map(|t| format!(
                "Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                base64_lines(t.as_bytes())
            )),
            bytes.clone().prop_map(|b| format!(
                "Content-Type: application/octet-stream; name=\"f.bin\"\r\nContent-Disposition: attachment; filename=\"f.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                base64_lines(&b)
            )),
            bytes.prop_map(|b| format!(
                "Content-Type: image/png\r\nContent-Disposition: inline; filename=i.png\r\nContent-ID: <i@x>\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                base64_lines(&b)
            )),
            text.clone().prop_map(|t| format!(
                "Content-Type: text/csv; charset=utf-8\r\nContent-Disposition: attachment; filename=\"t.csv\"\r\n\r\n{t}"
            )),
            text.prop_map(|t| format!(
                "Content-Type: message/rfc822\r\n\r\nSubject: inner\r\nFrom: i@example.test\r\nContent-Type: multipart/mixed; boundary=\"in\"\r\n\r\n--in\r\nContent-Type: text/plain\r\n\r\n{t}\r\n--in\r\nContent-Type: application/pdf; name=x.pdf\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--in--\r\n"
            )),
        ]
    }

    fn message() -> impl Strategy<Value = Vec<u8>> {
        (proptest::collection::vec(part(), 1..6), any::<bool>()).prop_map(|(parts, alt)| {
            let mut m = String::from("From: \"A\" <a@example.test>\r\nTo: b@example.test\r\nSubject: big\r\nMessage-ID: <big@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\npreamble\r\n");
            if alt {
                m.push_str("--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n--alt\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe text\r\n--alt\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>the <b>text</b></p>\r\n--alt--\r\n");
            }
            for p in parts {
                m.push_str("--outer\r\n");
                m.push_str(&p);
                m.push_str("\r\n");
            }
            m.push_str("--outer--\r\n");
            m.into_bytes()
        })
    }

    fn messages() -> Vec<Vec<u8>> {
        let mut out = shortcut_edges();
        out.push(b"From: a@x\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\nworld\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\n\r\ninner text\r\n--b2--\r\n--b1--\r\nepilogue\r\n".to_vec());
        out
    }

    #[test]
    fn with_nothing_cut_it_is_the_whole_rendering() {
        for raw in messages() {
            for prefs in all_prefs() {
                for v in VERSIONS {
                    let whole = to_email(&raw, &info(), &prefs, v);
                    let keep = raw.len() + 1;
                    assert_eq!(
                        large(&raw, (keep, keep), &raw, &prefs, v),
                        whole,
                        "{}",
                        String::from_utf8_lossy(&raw)
                    );
                }
            }
        }
    }

    #[test]
    fn a_cut_text_body_keeps_its_size_and_is_truncated() {
        let text = "h\u{e9}llo w\u{f6}rld\r\n".repeat(5000);
        let raw = format!(
            "Subject: t\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n{}--b--\r\n",
            base64_lines(text.as_bytes())
        );
        let raw = raw.as_bytes();
        for prefs in all_prefs() {
            let whole = to_email(raw, &info(), &prefs, ProtocolVersion::V16_1);
            let cut = large(raw, (16, 4096), b"", &prefs, ProtocolVersion::V16_1);
            let (w, c) = (whole.body.unwrap(), cut.body.unwrap());
            if w.body_type == body::TYPE_MIME {
                continue;
            }
            let (we, ce) = (
                w.estimated_data_size.unwrap(),
                c.estimated_data_size.unwrap(),
            );
            if w.body_type == body::TYPE_PLAIN {
                assert_eq!(ce, we);
            } else {
                // HTML made of the text: estimated.
                assert!(ce.abs_diff(we) < we / 100, "{ce} {we}");
            }
            assert_eq!(c.truncated, Some(true));
            assert_eq!(c.preview, w.preview);
            let (wd, cd) = (w.data.unwrap_or_default(), c.data.unwrap_or_default());
            assert!(wd.starts_with(&cd), "{prefs:?}");
            if w.truncated == Some(true) {
                assert_eq!(cd, wd, "{prefs:?}");
            } else {
                assert!(cd.len() > 1000, "{prefs:?}");
            }
        }
    }

    #[test]
    fn a_mime_body_reads_only_its_start() {
        let raw = WITH_ATTACHMENTS;
        let p = |t| {
            vec![BodyPreference {
                body_type: body::TYPE_MIME,
                truncation_size: t,
                all_or_none: None,
                preview: None,
            }]
        };
        let v = ProtocolVersion::V14_1;
        let whole = to_email(raw, &info(), &p(Some(100)), v);
        let cut = large(raw, (16, 16), &raw[..104], &p(Some(100)), v);
        assert_eq!(cut, whole);
        // Only a start when all was asked: Truncated, the whole size.
        let b = large(raw, (16, 16), &raw[..104], &p(None), v).body.unwrap();
        assert_eq!(b.estimated_data_size, Some(raw.len() as u64));
        assert_eq!(b.truncated, Some(true));
        assert_eq!(b.data.as_deref(), std::str::from_utf8(&raw[..104]).ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn attachments_are_listed_as_the_whole_message_lists_them(
            raw in message(),
            prefs in proptest::sample::select(all_prefs()),
            v in proptest::sample::select(VERSIONS.to_vec()),
            keep in 0usize..64,
        ) {
            let whole = to_email(&raw, &info(), &prefs, v);
            // Binary bodies cut, text kept: all the same.
            let cut = large(&raw, (keep, raw.len() + 1), &raw, &prefs, v);
            prop_assert_eq!(&cut, &whole);
            // Text cut too: the same attachments.
            let cut = large(&raw, (keep, keep), b"", &prefs, v);
            prop_assert_eq!(&cut.attachments, &whole.attachments);
            prop_assert_eq!(&cut.subject, &whole.subject);
            prop_assert_eq!(cut.native_body_type, whole.native_body_type);
        }
    }
}
