//! A message's MIME parts cut out byte for byte, to be copied into another
//! message (an edited draft, a forward) rather than decoded and encoded
//! again: decoding would turn text into UTF-8 and lose header fields
//! (Content-ID, charset, disposition parameters) a rebuilt part would not
//! carry over.

use mail_parser::{Message, MessagePart};

use super::ATTACHMENT_NUMBER;

/// The header block (up to and with its empty line) and the content (as
/// encoded) of `part`, a part of `msg` (not of a message inside it). A
/// part cut short by the end of the message ends there.
pub(crate) fn head_and_content<'m>(
    msg: &'m Message<'_>,
    part: &MessagePart<'_>,
) -> (&'m [u8], &'m [u8]) {
    let raw = msg.raw_message();
    let cut = |from: u32, to: u32| {
        let to = (to as usize).min(raw.len());
        raw.get(from as usize..to).unwrap_or_default()
    };
    (
        cut(part.offset_header, part.offset_body),
        cut(part.offset_body, part.offset_end),
    )
}

/// Part `id` of `msg` byte for byte, ready to go into a multipart: its
/// header fields (for the message itself, only the `Content-*` ones), the
/// empty line, its content as it was encoded. Its [`ATTACHMENT_NUMBER`] is
/// left out; `number`, when given, is put first instead. `None`: no such
/// part.
pub(crate) fn part_bytes(msg: &Message<'_>, id: u32, number: Option<u32>) -> Option<Vec<u8>> {
    let part = msg.parts.get(id as usize)?;
    let (head, content) = head_and_content(msg, part);
    let mut out = Vec::with_capacity(head.len() + content.len() + 32);
    if let Some(n) = number {
        out.extend_from_slice(format!("{ATTACHMENT_NUMBER}: {n}\r\n").as_bytes());
    }
    for field in header_fields(head) {
        let (name, _) = split_field(field);
        if !name.eq_ignore_ascii_case(ATTACHMENT_NUMBER) && (id != 0 || is_content_header(name)) {
            out.extend_from_slice(field);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(content);
    Some(out)
}

/// The header fields of a header block, each with its folded lines and
/// line ends, up to the first line holding only white space (where
/// mail-parser ends the block too).
pub(crate) fn header_fields(head: &[u8]) -> Vec<&[u8]> {
    let mut fields: Vec<&[u8]> = Vec::new();
    let mut start = None;
    let mut at = 0;
    for line in head.split_inclusive(|b| *b == b'\n') {
        let blank = line.iter().all(|b| b.is_ascii_whitespace());
        let folded = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if blank || !folded {
            if let Some(s) = start.take() {
                fields.push(&head[s..at]);
            }
            if blank {
                return fields;
            }
            start = Some(at);
        }
        at += line.len();
    }
    if let Some(s) = start {
        fields.push(&head[s..at]);
    }
    fields
}

/// A header field's name and its value unfolded (line breaks taken out),
/// as text; a value that is not valid UTF-8 is read lossily.
pub(crate) fn split_field(field: &[u8]) -> (&str, String) {
    let colon = field.iter().position(|b| *b == b':').unwrap_or(field.len());
    let name = std::str::from_utf8(&field[..colon]).unwrap_or("").trim();
    let value = String::from_utf8_lossy(field.get(colon + 1..).unwrap_or_default())
        .replace(['\r', '\n'], "")
        .trim()
        .to_owned();
    (name, value)
}

/// Whether a header field describes a message's content (and goes with
/// it): the `Content-*` ones.
pub(crate) fn is_content_header(name: &str) -> bool {
    name.len() > 8 && name.as_bytes()[..8].eq_ignore_ascii_case(b"Content-")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

    use super::*;

    #[test]
    fn header_fields_keep_folds_and_stop_at_the_empty_line() {
        let head =
            b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\nX-A: 1\nContent-ID: <a>\r\n\r\n";
        let fields = header_fields(head);
        assert_eq!(
            fields,
            [
                &b"Content-Type: text/plain;\r\n\tcharset=utf-8\r\n"[..],
                b"X-A: 1\n",
                b"Content-ID: <a>\r\n"
            ]
        );
        assert_eq!(
            split_field(fields[0]),
            ("Content-Type", "text/plain;\tcharset=utf-8".to_owned())
        );
        assert!(header_fields(b"\r\n").is_empty());
        assert_eq!(header_fields(b"A: b"), [&b"A: b"[..]]);
    }

    #[test]
    fn a_part_is_cut_out_with_its_number_first_and_the_root_with_its_content_fields() {
        let raw = b"From: a@example.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\nContent-Type: image/png\r\nX-Opush-Attachment: 7\r\nContent-ID: <i@x>\r\n\r\nPNG\r\n--b--\r\n";
        let msg = mail_parser::MessageParser::default()
            .parse(&raw[..])
            .unwrap();
        assert_eq!(
            part_bytes(&msg, 2, Some(3)).unwrap(),
            b"X-Opush-Attachment: 3\r\nContent-Type: image/png\r\nContent-ID: <i@x>\r\n\r\nPNG"
        );
        assert_eq!(
            part_bytes(&msg, 1, None).unwrap(),
            b"Content-Type: text/plain\r\n\r\nbody"
        );
        let root = part_bytes(&msg, 0, None).unwrap();
        assert!(
            root.starts_with(b"Content-Type: multipart/mixed"),
            "{root:?}"
        );
        assert!(part_bytes(&msg, 9, None).is_none());
        assert!(
            is_content_header("content-id")
                && !is_content_header("Content-")
                && !is_content_header("Contént-x")
        );
    }
}
