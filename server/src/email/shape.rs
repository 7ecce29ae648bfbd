//! A MIME shape mail-parser 0.11 cannot read, found before it parses.
//!
//! A `message/rfc822` (or `message/global`) part whose content begins at
//! once with the header of another such part: the parser's stack of nested
//! messages gets one level out of step. A debug build fails its assertion
//! ("Invalid part ID", a panic in the request); a release build folds the
//! parts after it into the nested message, so a draft rebuilt from that
//! tree would lose them. mail-parser 1.0, which may read it, needs rustc
//! 1.98 and this workspace builds on 1.95 (Cargo.toml). Callers do not
//! parse such a message whole (`email::parse_whole`); it is shown from
//! its header alone and not rebuilt.
//!
//! Pure byte scanning, no I/O. It errs on the side of finding the shape:
//! a false find costs a message shown without its body, a miss a panic.

use mail_parser::{MessageParser, MimeHeaders};

/// Whether `raw` holds a message part whose content is straight away
/// another message part (see the module doc), also inside a message part
/// sent in base64 or quoted-printable (mail-parser decodes it and parses
/// the result the same way).
pub fn nests_message_in_message(raw: &[u8]) -> bool {
    nested_within(raw, MAX_ENCODED_DEPTH)
}

/// How deep mail-parser 0.11 parses encoded messages in encoded messages
/// (its `MAX_NESTED_ENCODED`), and one more.
const MAX_ENCODED_DEPTH: usize = 4;

/// [`nests_message_in_message`], looking into at most `depth` levels of
/// encoded message parts.
fn nested_within(raw: &[u8], depth: usize) -> bool {
    // The inner part's header names its type: look only around those
    // names, most messages have none.
    let mut last: Option<(usize, Begin)> = None;
    for at in message_type_names(raw) {
        let line = line_start(raw, at);
        let begin = match last {
            Some((l, b)) if l == line => b,
            _ => block_begin(raw, line, last),
        };
        last = Some((line, begin));
        let (start, after_blank) = match begin {
            Begin::Root => (0, None),
            Begin::AfterBlank { start, blank } => (start, Some(blank)),
            Begin::AfterBoundary(start) => (start, None),
        };
        let Some((kind, end)) = header_kind(raw, start, false) else {
            continue;
        };
        if at >= end {
            // The name is in a body, not in this header.
            continue;
        }
        // An encoded message is parsed apart, once decoded.
        if let Kind::Encoded(encoding) = kind {
            if depth > 0
                && decoded_body(raw, end, encoding).is_some_and(|b| nested_within(&b, depth - 1))
            {
                return true;
            }
            continue;
        }
        // The inner header follows an empty line (the end of the outer
        // header), not a boundary, and it is not the message's own.
        let (Kind::Message, Some(blank)) = (kind, after_blank) else {
            continue;
        };
        let (outer, in_multipart) = match block_begin(raw, blank, None) {
            Begin::Root => (0, false),
            Begin::AfterBlank { start, .. } => (start, false),
            Begin::AfterBoundary(start) => (start, true),
        };
        let outer_is_message = if outer < blank {
            header_kind(raw, outer, in_multipart).is_some_and(|(k, _)| k == Kind::Message)
        } else {
            // An empty header: a message in a digest; anywhere else the
            // empty line is the first of a body, not a nested message.
            in_multipart && mentions_digest(raw)
        };
        if outer_is_message {
            return true;
        }
    }
    false
}

/// What a header block makes its part to mail-parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Not a message part.
    Other,
    /// A message part, its content parsed in place.
    Message,
    /// A message part in base64 or quoted-printable.
    Encoded(mail_parser::Encoding),
}

/// The content of the part whose header ends at `end`, decoded: up to the
/// next line that starts with `--` (a boundary) or the end.
fn decoded_body(raw: &[u8], end: usize, encoding: mail_parser::Encoding) -> Option<Vec<u8>> {
    let body = raw.get(end..)?;
    let mut stop = body.len();
    let mut at = 0;
    for line in body.split_inclusive(|b| *b == b'\n') {
        if line.starts_with(b"--") {
            stop = at;
            break;
        }
        at += line.len();
    }
    let body = &body[..stop];
    match encoding {
        mail_parser::Encoding::Base64 => mail_parser::decoders::base64::base64_decode(body),
        mail_parser::Encoding::QuotedPrintable => {
            mail_parser::decoders::quoted_printable::quoted_printable_decode(body)
        }
        mail_parser::Encoding::None => Some(body.to_vec()),
    }
}

/// Where a header block begins, found by walking back from one of its
/// lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Begin {
    /// At the start of the message.
    Root,
    /// At `start`, after the line at `blank` holding only white space.
    AfterBlank { start: usize, blank: usize },
    /// At this offset, after a line starting with `--` (a boundary).
    AfterBoundary(usize),
}

/// The start of the block holding the line at `line`: back over lines
/// that are neither empty nor a boundary. `last`, the block found for an
/// earlier line, ends the walk when it is reached (each byte is walked
/// over once, however many names a block holds).
fn block_begin(raw: &[u8], mut line: usize, last: Option<(usize, Begin)>) -> Begin {
    loop {
        if let Some((l, b)) = last {
            if l == line {
                return b;
            }
        }
        if line == 0 {
            return Begin::Root;
        }
        let prev = line_start(raw, line - 1);
        let text = &raw[prev..line];
        if text.iter().all(u8::is_ascii_whitespace) {
            return Begin::AfterBlank {
                start: line,
                blank: prev,
            };
        }
        if text.starts_with(b"--") {
            return Begin::AfterBoundary(line);
        }
        line = prev;
    }
}

/// The offset of the line holding byte `at`.
fn line_start(raw: &[u8], at: usize) -> usize {
    memchr::memrchr(b'\n', &raw[..at]).map_or(0, |n| n + 1)
}

/// What the header block at `start` makes its part ([`Kind`]), and where
/// the block ends: Content-Type `message/rfc822` or `message/global` is a
/// message. `bare_in_digest`: the block is a part of a multipart, and no
/// Content-Type makes a message too when the message has a
/// multipart/digest, whose parts are messages by default.
fn header_kind(raw: &[u8], start: usize, bare_in_digest: bool) -> Option<(Kind, usize)> {
    let head = MessageParser::default().parse_headers(raw.get(start..)?)?;
    let part = head.parts.first()?;
    // (Its offset_body is the end of the input: parse_headers reads no
    // body.) The block ends with its first line holding only white space.
    let mut end = raw.len();
    let mut at = start;
    for line in raw[start..].split_inclusive(|b| *b == b'\n') {
        at += line.len();
        if line.iter().all(u8::is_ascii_whitespace) {
            end = at;
            break;
        }
    }
    let message = match part.content_type() {
        Some(ct) => {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
                })
        }
        None => bare_in_digest && mentions_digest(raw),
    };
    let encoding = part.content_transfer_encoding().and_then(|e| {
        if e.eq_ignore_ascii_case("base64") {
            Some(mail_parser::Encoding::Base64)
        } else if e.eq_ignore_ascii_case("quoted-printable") {
            Some(mail_parser::Encoding::QuotedPrintable)
        } else {
            None
        }
    });
    let kind = match (message, encoding) {
        (false, _) => Kind::Other,
        (true, None) => Kind::Message,
        (true, Some(e)) => Kind::Encoded(e),
    };
    Some((kind, end))
}

/// Whether `raw` says `digest` anywhere (in any case).
fn mentions_digest(raw: &[u8]) -> bool {
    raw.windows(6).any(|w| w.eq_ignore_ascii_case(b"digest"))
}

/// Offsets of `message/rfc822` and `message/global`, in any case.
fn message_type_names(raw: &[u8]) -> Vec<usize> {
    use memchr::memmem::Finder;
    use std::sync::LazyLock;
    // A part of each name that has no letter to vary, or two forms: built
    // once (a search builds its tables, which costs more than the search
    // itself on a message of a few KB).
    static PIECES: LazyLock<[Finder<'static>; 3]> =
        LazyLock::new(|| [Finder::new(b"822"), Finder::new(b"/g"), Finder::new(b"/G")]);
    let word_at = |at: usize, word: &[u8]| {
        raw.get(at..at + word.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(word))
    };
    let mut out = Vec::new();
    let [rfc822, global, global_upper] = &*PIECES;
    out.extend(
        rfc822
            .find_iter(raw)
            .filter_map(|at| at.checked_sub(b"message/rfc".len()))
            .filter(|start| word_at(*start, b"message/rfc822")),
    );
    for piece in [global, global_upper] {
        out.extend(
            piece
                .find_iter(raw)
                .filter_map(|at| at.checked_sub(b"message".len()))
                .filter(|start| word_at(*start, b"message/global")),
        );
    }
    out.sort_unstable();
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

    use super::*;

    fn mixed(part: &str) -> String {
        format!(
            "From: a@example.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"b\"\r\n\r\n\
             --b\r\nContent-Type: text/plain\r\n\r\nbody\r\n--b\r\n{part}\r\n--b--\r\n"
        )
    }

    #[test]
    fn a_message_straight_in_a_message_is_found() {
        let inner = "From: c@example.test\r\nSubject: deep\r\n\r\ndeep body";
        for (outer, nested) in [
            (
                "Content-Type: message/rfc822",
                "Content-Type: message/rfc822",
            ),
            (
                "Content-Type: Message/RFC822",
                "content-type: MESSAGE/rfc822; x=1",
            ),
            (
                "Content-Type: message/global",
                "Content-Type: message/rfc822",
            ),
            (
                "Content-Type: message/rfc822\r\nContent-Disposition: attachment",
                "From: d@example.test\r\nContent-Type: message/global",
            ),
        ] {
            let raw = mixed(&format!("{outer}\r\n\r\n{nested}\r\n\r\n{inner}"));
            assert!(nests_message_in_message(raw.as_bytes()), "{raw}");
        }
        // The message itself is one, holding one straight away.
        let raw = format!("Subject: s\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n{inner}");
        assert!(nests_message_in_message(raw.as_bytes()));
        // The same shape inside a message part sent in base64.
        let inner = "Content-Type: multipart/mixed; boundary=\"i\"\r\n\r\n--i\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ny\r\n--i--\r\n";
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(inner);
        let raw = mixed(&format!(
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{b64}"
        ));
        assert!(nests_message_in_message(raw.as_bytes()), "{raw}");
        // A part of a digest is a message without saying so.
        for part_header in ["", "X-Note: bare\r\n"] {
            let raw = format!("Subject: s\r\nContent-Type: multipart/digest; boundary=\"d\"\r\n\r\n--d\r\n{part_header}\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ny\r\n--d--\r\n");
            assert!(nests_message_in_message(raw.as_bytes()), "{raw}");
        }
    }

    #[test]
    fn other_shapes_are_not_found() {
        let cases = [
            // A forwarded message whose body is multipart.
            mixed("Content-Type: message/rfc822\r\n\r\nFrom: c@example.test\r\nContent-Type: multipart/mixed; boundary=\"i\"\r\n\r\n--i\r\nContent-Type: message/rfc822\r\n\r\nSubject: in a multipart\r\n\r\nx\r\n--i--"),
            // Two messages side by side.
            mixed("Content-Type: message/rfc822\r\n\r\nSubject: one\r\n\r\nx\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: two\r\n\r\ny"),
            // An encoded message part is parsed apart.
            mixed("Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\nU3ViamVjdDogeA0KDQp5"),
            // The body of a message starts with an empty line.
            mixed("Content-Type: message/rfc822\r\n\r\n\r\nContent-Type: message/rfc822\r\n\r\nSubject: x\r\n\r\ny"),
            // Only words in a text.
            "Subject: s\r\n\r\nAbout message/rfc822:\r\n\r\nContent-Type: message/rfc822 is a type.\r\n".to_owned(),
            String::new(),
            "822".to_owned(),
        ];
        for raw in cases {
            assert!(!nests_message_in_message(raw.as_bytes()), "{raw}");
        }
    }
}
