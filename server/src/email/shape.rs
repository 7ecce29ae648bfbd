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
/// another message part (see the module doc).
pub fn nests_message_in_message(raw: &[u8]) -> bool {
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
        // The inner header follows an empty line (the end of the outer
        // header), not a boundary, and it is not the message's own.
        let Begin::AfterBlank { start, blank } = begin else {
            continue;
        };
        if !is_message_header(raw, start, Some(at), false) {
            continue;
        }
        let (outer, in_multipart) = match block_begin(raw, blank, None) {
            Begin::Root => (0, false),
            Begin::AfterBlank { start, .. } => (start, false),
            Begin::AfterBoundary(start) => (start, true),
        };
        let outer_is_message = if outer < blank {
            is_message_header(raw, outer, None, in_multipart)
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

/// Whether the header block at `start` makes its part a message to
/// mail-parser: Content-Type `message/rfc822` or `message/global` (with
/// `name_at`, the name found, inside the block), not base64 or
/// quoted-printable (an encoded one is decoded and parsed apart, which it
/// reads well). `bare_in_digest`: the block is a part of a multipart, and
/// no Content-Type counts too when the message has a multipart/digest,
/// whose parts are messages by default.
fn is_message_header(
    raw: &[u8],
    start: usize,
    name_at: Option<usize>,
    bare_in_digest: bool,
) -> bool {
    let Some(head) = raw
        .get(start..)
        .and_then(|rest| MessageParser::default().parse_headers(rest))
    else {
        return false;
    };
    let Some(part) = head.parts.first() else {
        return false;
    };
    let end = start + part.offset_body as usize;
    if name_at.is_some_and(|at| at >= end) {
        return false;
    }
    let encoded = part.content_transfer_encoding().is_some_and(|e| {
        e.eq_ignore_ascii_case("base64") || e.eq_ignore_ascii_case("quoted-printable")
    });
    match part.content_type() {
        Some(ct) => {
            ct.ctype().eq_ignore_ascii_case("message")
                && ct.subtype().is_some_and(|s| {
                    s.eq_ignore_ascii_case("rfc822") || s.eq_ignore_ascii_case("global")
                })
                && !encoded
        }
        None => bare_in_digest && !encoded && mentions_digest(raw),
    }
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
