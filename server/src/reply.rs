//! Building the whole message of a SmartReply or SmartForward ([MS-ASCMD]
//! 2.2.1.19, 2.2.1.20): the device sends only its new text, the server adds
//! the original — quoted below the new text in plain text and in HTML, its
//! attachments kept on a forward — and the threading headers
//! (`In-Reply-To`, `References`).
//!
//! Pure functions over MIME bytes (mail-parser reads, mail-builder writes
//! the body); the header fields the device wrote (To, Cc, Bcc, Subject, …)
//! are kept byte for byte. `From`, `Date`, `Message-ID` and `Bcc` are left
//! to [`crate::outgoing::prepare`], which every outgoing message goes
//! through. No I/O.
//!
//! Text without a charset is read as UTF-8, or as Latin-1 when it is 8-bit
//! and not valid UTF-8; everything written is UTF-8, so non-ASCII text from
//! either message goes out intact.

use std::borrow::Cow;

use mail_builder::headers::content_type::ContentType as BuiltContentType;
use mail_builder::mime::{BodyPart, MimePart};
use mail_parser::{Address, Message, MessagePart, MimeHeaders, PartType};

use crate::email::html::escape_text;
use crate::email::Shown;

/// Which Smart command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmartKind {
    /// SmartReply: the original is quoted (`> `) and answered.
    Reply,
    /// SmartForward: the original is included with its attachments.
    Forward,
}

/// Why the full message could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReplyError {
    /// The device's message is not readable MIME.
    #[error("the device's message is not readable MIME")]
    DeviceMime,
    /// The original message is not readable MIME.
    #[error("the original message is not readable MIME")]
    Original,
    /// The message could not be written.
    #[error("cannot write the message: {0}")]
    Write(String),
}

/// The threading headers a reply or forward of `original` carries:
/// (`In-Reply-To`, `References`), each without angle brackets.
pub fn threading(original: &Message<'_>) -> (Option<String>, Vec<String>) {
    let id = original.message_id().map(str::to_owned);
    let mut refs: Vec<String> = match original.references() {
        mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
        mail_parser::HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
        _ => match original.in_reply_to() {
            mail_parser::HeaderValue::Text(t) => vec![t.to_string()],
            _ => Vec::new(),
        },
    };
    if let Some(id) = &id {
        if !refs.contains(id) {
            refs.push(id.clone());
        }
    }
    (id, refs)
}

/// Builds the full SmartReply/SmartForward message from the device's
/// message and the original. With `replace_mime` the device's message is
/// already complete: only the threading headers are added.
pub fn build(
    kind: SmartKind,
    device_mime: &[u8],
    original_mime: &[u8],
    replace_mime: bool,
) -> Result<Vec<u8>, ReplyError> {
    let device = crate::email::parse_whole(device_mime).ok_or(ReplyError::DeviceMime)?;
    let original = crate::email::parse_whole(original_mime).ok_or(ReplyError::Original)?;
    let (in_reply_to, references) = threading(&original);
    let body_start = device.root_part().raw_body_offset() as usize;
    let head = device_mime
        .get(..body_start)
        .ok_or(ReplyError::DeviceMime)?;

    let mut out = Vec::with_capacity(device_mime.len() + original_mime.len() + 512);
    // The device's header fields, minus those this module writes.
    let replaced: &[&str] = if replace_mime {
        &["in-reply-to", "references"]
    } else {
        &[
            "in-reply-to",
            "references",
            "mime-version",
            "content-type",
            "content-transfer-encoding",
            "content-disposition",
        ]
    };
    for field in crate::email::parts::header_fields(head) {
        let name = field_name(field);
        if replaced.iter().any(|r| name.eq_ignore_ascii_case(r)) {
            continue;
        }
        out.extend_from_slice(field);
        if !field.ends_with(b"\n") {
            out.extend_from_slice(b"\r\n");
        }
    }
    if kind == SmartKind::Reply {
        if let Some(id) = &in_reply_to {
            out.extend_from_slice(format!("In-Reply-To: <{id}>\r\n").as_bytes());
        }
    }
    if !references.is_empty() {
        let list = references
            .iter()
            .map(|r| format!("<{r}>"))
            .collect::<Vec<_>>()
            .join("\r\n ");
        out.extend_from_slice(format!("References: {list}\r\n").as_bytes());
    }
    if replace_mime {
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(device_mime.get(body_start..).unwrap_or_default());
        return Ok(out);
    }
    out.extend_from_slice(b"MIME-Version: 1.0\r\n");
    body(kind, &device, &original)
        .write_part(&mut out)
        .map_err(|e| ReplyError::Write(e.to_string()))?;
    Ok(out)
}

/// The MIME body: new text + quoted original, as plain text (and HTML when
/// either message has HTML), then the attachments.
fn body<'a>(kind: SmartKind, device: &'a Message<'a>, original: &'a Message<'a>) -> MimePart<'a> {
    let new_text = text_body(device);
    let orig_text = text_body(original);
    let header = quote_header(original);

    let mut plain = String::with_capacity(new_text.len() + orig_text.len() + 256);
    plain.push_str(new_text.trim_end_matches(['\r', '\n']));
    plain.push_str("\r\n\r\n-----Original Message-----\r\n");
    for (name, value) in &header {
        plain.push_str(&format!("{name}: {value}\r\n"));
    }
    plain.push_str("\r\n");
    for line in orig_text.lines() {
        if kind == SmartKind::Reply {
            plain.push('>');
            if !line.is_empty() {
                plain.push(' ');
            }
        }
        plain.push_str(line);
        plain.push_str("\r\n");
    }
    let text_part = MimePart::new(
        BuiltContentType::new("text/plain").attribute("charset", "utf-8"),
        BodyPart::Text(plain.into()),
    );

    let device_html = html_body(device);
    let orig_html = html_body(original);
    let alternative = if device_html.is_some() || orig_html.is_some() {
        let mut html = String::new();
        match device_html {
            Some(h) => html.push_str(&inner_body(&h)),
            None => html.push_str(&format!(
                "<div style=\"white-space:pre-wrap\">{}</div>",
                escape_text(new_text.trim_end())
            )),
        }
        html.push_str("<hr>");
        for (name, value) in &header {
            html.push_str(&format!("<b>{name}:</b> {}<br>", escape_text(value)));
        }
        html.push_str("<br>");
        let quoted = match orig_html {
            Some(h) => inner_body(&h).into_owned(),
            None => format!(
                "<div style=\"white-space:pre-wrap\">{}</div>",
                escape_text(&orig_text)
            ),
        };
        if kind == SmartKind::Reply {
            html.push_str("<blockquote style=\"margin:0 0 0 .8ex;border-left:1px solid #ccc;padding-left:1ex\">");
            html.push_str(&quoted);
            html.push_str("</blockquote>");
        } else {
            html.push_str(&quoted);
        }
        let html =
            format!("<html><head><meta charset=\"utf-8\"></head><body>{html}</body></html>\r\n");
        let html_part = MimePart::new(
            BuiltContentType::new("text/html").attribute("charset", "utf-8"),
            BodyPart::Text(html.into()),
        );
        MimePart::new("multipart/alternative", vec![text_part, html_part])
    } else {
        text_part
    };

    let mut attachments = attachments_of(device);
    if kind == SmartKind::Forward {
        attachments.extend(attachments_of(original));
    }
    if attachments.is_empty() {
        alternative
    } else {
        let mut parts = Vec::with_capacity(attachments.len() + 1);
        parts.push(alternative);
        parts.extend(attachments);
        MimePart::new("multipart/mixed", parts)
    }
}

/// `m`'s attachments as they were, byte for byte (header fields and
/// encoded content): an inline image keeps its Content-ID, a text file its
/// charset and bytes, a forwarded message its MIME.
fn attachments_of<'a>(m: &Message<'_>) -> Vec<MimePart<'a>> {
    Shown::of(m)
        .attachments
        .iter()
        .filter_map(|id| crate::email::parts::part_bytes(m, *id, None))
        .map(|bytes| MimePart::raw(BodyPart::Binary(bytes.into())))
        .collect()
}

/// The "From / Sent / To / Cc / Subject" block above the quoted original.
fn quote_header(m: &Message<'_>) -> Vec<(&'static str, String)> {
    let mut h = Vec::new();
    if let Some(a) = m.from() {
        h.push(("From", addresses(a)));
    }
    if let Some(d) = m.date() {
        h.push(("Sent", d.to_rfc822()));
    }
    if let Some(a) = m.to() {
        h.push(("To", addresses(a)));
    }
    if let Some(a) = m.cc() {
        h.push(("Cc", addresses(a)));
    }
    h.push(("Subject", m.subject().unwrap_or_default().to_owned()));
    h
}

fn addresses(a: &Address<'_>) -> String {
    let one = |addr: &mail_parser::Addr<'_>| match (addr.name.as_deref(), addr.address.as_deref()) {
        (Some(n), Some(a)) if !n.is_empty() => format!("{n} <{a}>"),
        (_, Some(a)) => a.to_owned(),
        (Some(n), None) => n.to_owned(),
        (None, None) => String::new(),
    };
    match a {
        Address::List(l) => l.iter().map(one).collect::<Vec<_>>().join(", "),
        Address::Group(g) => g
            .iter()
            .flat_map(|g| g.addresses.iter())
            .map(one)
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The message's plain text (from its HTML when it has no text part):
/// its body as a device is shown it ([`Shown`]).
fn text_body<'a>(m: &'a Message<'a>) -> Cow<'a, str> {
    let Some(pos) = Shown::of(m).text else {
        return Cow::Borrowed("");
    };
    match m.text_part(pos as u32) {
        Some(p) if !p.is_text_html() => part_text(m, p),
        _ => m.body_text(pos).unwrap_or_default(),
    }
}

/// The message's HTML, only when it has a real `text/html` part.
fn html_body<'a>(m: &'a Message<'a>) -> Option<Cow<'a, str>> {
    let p = m.html_part(Shown::of(m).html? as u32)?;
    Some(part_text(m, p))
}

/// A text part's content; 8-bit text without a charset that is not UTF-8
/// is read as Latin-1 rather than losing its non-ASCII characters.
fn part_text<'a>(m: &'a Message<'a>, p: &'a MessagePart<'a>) -> Cow<'a, str> {
    let text = match &p.body {
        PartType::Text(t) | PartType::Html(t) => t.clone(),
        _ => Cow::Borrowed(""),
    };
    let has_charset = p
        .content_type()
        .is_some_and(|ct| ct.attribute("charset").is_some());
    let plain_encoding = p
        .content_transfer_encoding()
        .is_none_or(|e| e.eq_ignore_ascii_case("7bit") || e.eq_ignore_ascii_case("8bit"));
    if !has_charset && plain_encoding && text.contains('\u{FFFD}') {
        let raw = m
            .raw_message()
            .get(p.raw_body_offset() as usize..p.raw_end_offset() as usize)
            .unwrap_or_default();
        if std::str::from_utf8(raw).is_err() {
            return Cow::Owned(raw.iter().map(|&b| char::from(b)).collect());
        }
    }
    text
}

/// What is between `<body …>` and `</body>` (the whole text if none).
fn inner_body<'a>(html: &'a str) -> Cow<'a, str> {
    let lower = html.to_ascii_lowercase();
    let start = lower
        .find("<body")
        .and_then(|i| lower[i..].find('>').map(|j| i + j + 1));
    let end = lower.rfind("</body>");
    match (start, end) {
        (Some(s), Some(e)) if s <= e => Cow::Owned(html[s..e].to_owned()),
        (Some(s), None) => Cow::Owned(html[s..].to_owned()),
        _ => Cow::Borrowed(html),
    }
}

fn field_name(field: &[u8]) -> Cow<'_, str> {
    let end = memchr::memchr(b':', field).unwrap_or(0);
    String::from_utf8_lossy(field[..end].trim_ascii())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    const ORIGINAL: &[u8] = b"From: Bob Stone <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Plans\r\nDate: Mon, 2 Nov 2026 10:00:00 +0000\r\nMessage-ID: <orig-1@example.test>\r\nReferences: <root@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nFirst line\r\nSecond line \xc3\xa9\r\n--b1\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"plan.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfs\r\n--b1--\r\n";

    fn parse(b: &[u8]) -> Message<'_> {
        mail_parser::MessageParser::new().parse(b).unwrap()
    }

    // mail-parser 0.11 panics (debug) or loses parts (release) on a
    // message straight in a message: such an original is refused
    // (SendFailure::ReplyFailed, an EAS status), never parsed.
    #[test]
    fn an_original_with_a_message_straight_in_a_message_is_refused() {
        let original = b"From: bob@example.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: deep\r\n\r\nx\r\n--b--\r\n";
        let device = b"To: carol@example.test\r\nSubject: FW: s\r\n\r\nsee below\r\n";
        for kind in [SmartKind::Forward, SmartKind::Reply] {
            assert_eq!(
                build(kind, device, original, false),
                Err(ReplyError::Original)
            );
            assert_eq!(
                build(kind, original, ORIGINAL, false),
                Err(ReplyError::DeviceMime)
            );
        }
    }

    // An opush draft whose first text attachment was deleted: the second,
    // now first in its multipart, is still an attachment (its number says
    // so), and the body quoted is the body.
    #[test]
    fn forward_quotes_the_body_and_attaches_a_numbered_text_part() {
        let original = b"From: alice@example.test\r\nSubject: s\r\nX-Opush-Next-Attachment: 2\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nX-Opush-Attachment: 1\r\nContent-Type: text/plain; charset=utf-8; name=\"second.txt\"\r\nContent-Disposition: inline; filename=\"second.txt\"\r\n\r\nsecond file\r\n--b\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nthe real body\r\n--b--\r\n";
        let device = b"To: carol@example.test\r\nSubject: FW: s\r\n\r\nsee below\r\n";
        let out = build(SmartKind::Forward, device, original, false).unwrap();
        let m = parse(&out);
        let body = m.body_text(0).unwrap();
        assert!(body.contains("the real body"), "{body}");
        assert!(!body.contains("second file"), "{body}");
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("name=\"second.txt\"\r\nContent-Disposition: inline; filename=\"second.txt\"\r\n\r\nsecond file"),
            "{text}"
        );
    }

    #[test]
    fn reply_quotes_the_original_and_threads() {
        let device = b"To: bob@example.test\r\nSubject: RE: Plans\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSounds good \xe2\x9c\x93\r\n";
        let out = build(SmartKind::Reply, device, ORIGINAL, false).unwrap();
        let text = String::from_utf8_lossy(&out).into_owned();
        assert!(
            text.contains("In-Reply-To: <orig-1@example.test>\r\n"),
            "{text}"
        );
        assert!(
            text.contains("References: <root@example.test>\r\n <orig-1@example.test>\r\n"),
            "{text}"
        );
        let m = parse(&out);
        assert_eq!(m.subject(), Some("RE: Plans"));
        let body = m.body_text(0).unwrap();
        assert!(body.starts_with("Sounds good \u{2713}"), "{body}");
        assert!(
            body.contains("> First line\r\n> Second line \u{e9}"),
            "{body}"
        );
        assert!(
            body.contains("From: Bob Stone <bob@example.test>"),
            "{body}"
        );
        // A reply does not carry the original's attachments.
        assert_eq!(m.attachment_count(), 0);
        // Plain only on both sides: no HTML part invented.
        assert!(!m.html_part(0).is_some_and(|p| p.is_text_html()));
    }

    #[test]
    fn forward_keeps_attachments_and_html() {
        let device = b"To: carol@example.test\r\nSubject: FW: Plans\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<html><body><p>See <b>below</b></p></body></html>\r\n";
        let out = build(SmartKind::Forward, device, ORIGINAL, false).unwrap();
        let m = parse(&out);
        assert!(m.in_reply_to().is_empty());
        assert_eq!(m.attachment_count(), 1);
        let att = m.attachment(0).unwrap();
        assert_eq!(att.attachment_name(), Some("plan.pdf"));
        assert_eq!(att.contents(), b"%PDF-1.4\n%\xc7\xec");
        let html = m.body_html(0).unwrap();
        assert!(html.contains("<p>See <b>below</b></p><hr>"), "{html}");
        assert!(html.contains("Second line \u{e9}"), "{html}");
        let text = m.body_text(0).unwrap();
        assert!(
            text.contains("\r\nFirst line\r\n"),
            "not quoted on forward: {text}"
        );
    }

    // A forward carries the original's attachments as they were: the
    // image its HTML shows keeps its Content-ID (it had no disposition), a
    // Latin-1 file its charset and bytes, a forwarded message its MIME.
    #[test]
    fn forward_keeps_attachments_byte_for_byte() {
        let original = b"From: bob@example.test\r\nTo: alice@example.test\r\nSubject: Files\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"m\"\r\n\r\n--m\r\nContent-Type: multipart/related; boundary=\"r\"\r\n\r\n--r\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p><img src=\"cid:pic@x\"></p>\r\n--r\r\nContent-Type: image/png; name=\"pic.png\"\r\nContent-ID: <pic@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--r--\r\n--m\r\nContent-Type: text/csv; charset=iso-8859-1\r\nContent-Disposition: attachment; filename=\"p.csv\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9\r\n--m\r\nContent-Type: message/rfc822\r\n\r\nFrom: carol@example.test\r\nSubject: Inner\r\n\r\ninner text\r\n--m--\r\n";
        let device = b"To: carol@example.test\r\nSubject: FW: Files\r\nContent-Type: text/plain\r\n\r\nsee\r\n";
        let out = build(SmartKind::Forward, device, original, false).unwrap();
        let text = String::from_utf8_lossy(&out);
        for part in [
            "Content-Type: image/png; name=\"pic.png\"\r\nContent-ID: <pic@x>\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=",
            "Content-Type: text/csv; charset=iso-8859-1\r\nContent-Disposition: attachment; filename=\"p.csv\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9",
            "Content-Type: message/rfc822\r\n\r\nFrom: carol@example.test\r\nSubject: Inner\r\n\r\ninner text",
        ] {
            assert!(text.contains(part), "{part:?} not in {text}");
        }
        assert_eq!(parse(&out).attachment_count(), 3);
    }

    #[test]
    fn replace_mime_keeps_the_device_body() {
        let device = b"To: bob@example.test\r\nSubject: RE: x\r\nContent-Type: text/plain\r\n\r\nonly this\r\n";
        let out = build(SmartKind::Reply, device, ORIGINAL, true).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.ends_with("\r\n\r\nonly this\r\n"), "{text}");
        assert!(!text.contains("First line"));
        assert!(text.contains("In-Reply-To: <orig-1@example.test>"));
        assert!(text.contains("Content-Type: text/plain\r\n"));
    }

    #[test]
    fn eight_bit_text_without_charset_survives() {
        // Latin-1 é and UTF-8 ü, neither labelled.
        let latin = b"To: bob@example.test\r\nSubject: RE: x\r\n\r\ncaf\xe9\r\n";
        let out = build(SmartKind::Reply, latin, ORIGINAL, false).unwrap();
        assert!(parse(&out).body_text(0).unwrap().starts_with("caf\u{e9}"));
        let utf8 = b"To: bob@example.test\r\nSubject: RE: x\r\n\r\n\xc3\xbcber\r\n";
        let out = build(SmartKind::Reply, utf8, ORIGINAL, false).unwrap();
        assert!(parse(&out).body_text(0).unwrap().starts_with("\u{fc}ber"));
    }

    #[test]
    fn unreadable_input_is_an_error() {
        assert_eq!(
            build(SmartKind::Reply, b"", ORIGINAL, false),
            Err(ReplyError::DeviceMime)
        );
    }
}
