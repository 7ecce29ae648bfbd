//! A message's skeleton, made as the message streams past: every header
//! block, multipart delimiter and nested message kept as it is, every
//! leaf body cut to its first [`Scanner::new`]`(keep)` bytes. Parsed by
//! mail-parser, a skeleton has the same parts as the message, in the same
//! order, with the same headers, so it says which part an attachment
//! number names ([`super::locate_attachment`]) exactly as the whole
//! message would, without the message being held: the scanner notes where
//! each leaf body lies in the real message and its decoded size, and the
//! attachment is then read again from there alone.
//!
//! Lines are read as RFC 2046 has them: a delimiter is `--boundary` (or
//! `--boundary--` for the last) at the start of a line, white space after
//! it allowed, and the line break before it belongs to it. A line longer
//! than [`LONG_LINE`] cannot be a delimiter and is not held whole. No I/O.
//!
//! A scanner may keep more of the `text/*` leaves ([`Scanner::with_text`]):
//! a large message is rendered for Sync from its skeleton, its text body
//! read as far as the device's truncation needs. Such a leaf is kept in
//! whole lines (a base64 or quoted-printable body cut mid-line would not
//! decode), and a leaf cut in the skeleton says so ([`Leaf::is_cut`]).

use super::transfer::{Decoder, Encoding};

/// Longer lines are body content whatever they start with.
pub const LONG_LINE: usize = 1024;
/// Largest header block of one part; a bigger one makes the scan fail.
pub const MAX_HEADER: usize = 256 * 1024;

/// One leaf body (or nested message) of the real message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// Where its body starts in the skeleton.
    pub skel_start: usize,
    /// Where its (cut) body ends in the skeleton.
    pub skel_end: usize,
    /// Where its body starts in the real message.
    pub real_start: u64,
    /// Where its body ends in the real message (the line break before
    /// the next delimiter excluded).
    pub real_end: u64,
    /// Its `Content-Transfer-Encoding`.
    pub encoding: Encoding,
    /// Its size once decoded.
    pub decoded_len: u64,
    /// A `message/rfc822` part: its body is a nested message.
    pub container: bool,
}

impl Leaf {
    /// Its body is only in part in the skeleton (a leaf kept whole has
    /// the same bytes in both).
    pub fn is_cut(&self) -> bool {
        ((self.skel_end - self.skel_start) as u64) < self.real_end - self.real_start
    }
}

#[derive(Debug)]
struct Frame {
    boundary: Vec<u8>,
    /// `containers.len()` when the multipart began.
    containers: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Header,
    /// A body: a leaf's (its index) or a multipart's preamble/epilogue.
    Body(Option<usize>),
}

/// Why a message could not be scanned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScanError {
    /// A header block over [`MAX_HEADER`].
    #[error("a header block over {MAX_HEADER} bytes")]
    HeaderTooLarge,
}

/// The scanner: [`Scanner::feed`] the message in any chunks, then
/// [`Scanner::finish`].
#[derive(Debug)]
pub struct Scanner {
    keep: usize,
    /// Bytes kept of a `text/*` leaf.
    text_keep: usize,
    /// Bytes kept of the current body.
    body_keep: usize,
    /// The current body is kept in whole lines (a text leaf).
    whole_lines: bool,
    skel: Vec<u8>,
    line: Vec<u8>,
    /// The current line went past [`LONG_LINE`]: body until its end.
    long: bool,
    /// Real offset of the byte after the last one scanned (a withheld
    /// line break included).
    pos: u64,
    mode: Mode,
    header: Vec<u8>,
    frames: Vec<Frame>,
    containers: Vec<usize>,
    leaves: Vec<Leaf>,
    /// The line break ending the last body line: withheld until the next
    /// line shows whether it belongs to the body or to a delimiter.
    pending_eol: &'static [u8],
    /// Body bytes of the current leaf (or preamble) put in the skeleton.
    kept: usize,
    decoder: Option<Decoder>,
    scratch: Vec<u8>,
    failed: Option<ScanError>,
    text: Utf8Text,
}

/// Whether the bytes seen are UTF-8 without NUL (such a message can be
/// sent as it is in a WBXML string), checked as they stream past.
#[derive(Debug, Default)]
struct Utf8Text {
    bad: bool,
    /// The start of a character the last bytes cut.
    carry: Vec<u8>,
}

impl Utf8Text {
    fn feed(&mut self, mut input: &[u8]) {
        if self.bad {
            return;
        }
        if memchr::memchr(0, input).is_some() {
            self.bad = true;
            return;
        }
        if let Some(&lead) = self.carry.first() {
            let len = match lead {
                0xF0.. => 4,
                0xE0.. => 3,
                _ => 2,
            };
            let take = (len - self.carry.len()).min(input.len());
            self.carry.extend_from_slice(&input[..take]);
            input = &input[take..];
            if self.carry.len() < len {
                return;
            }
            if std::str::from_utf8(&self.carry).is_err() {
                self.bad = true;
                return;
            }
            self.carry.clear();
        }
        if let Err(e) = std::str::from_utf8(input) {
            match e.error_len() {
                None => self.carry = input[e.valid_up_to()..].to_vec(),
                Some(_) => self.bad = true,
            }
        }
    }

    fn ok(&self) -> bool {
        !self.bad && self.carry.is_empty()
    }
}

impl Scanner {
    /// A scanner keeping `keep` bytes of each body.
    pub fn new(keep: usize) -> Scanner {
        Scanner::with_text(keep, keep)
    }

    /// A scanner keeping `keep` bytes of each body, and `text_keep` bytes
    /// (in whole lines) of each `text/*` leaf.
    pub fn with_text(keep: usize, text_keep: usize) -> Scanner {
        Scanner {
            keep,
            text_keep,
            body_keep: keep,
            whole_lines: false,
            skel: Vec::new(),
            line: Vec::new(),
            long: false,
            pos: 0,
            mode: Mode::Header,
            header: Vec::new(),
            frames: Vec::new(),
            containers: Vec::new(),
            leaves: Vec::new(),
            pending_eol: b"",
            kept: 0,
            decoder: None,
            scratch: Vec::new(),
            failed: None,
            text: Utf8Text::default(),
        }
    }

    /// Bytes of skeleton so far.
    pub fn skeleton_len(&self) -> usize {
        self.skel.len()
    }

    /// Whether the message so far is UTF-8 text without NUL (its MIME can
    /// be sent as it is in a WBXML string).
    pub fn is_utf8_text(&self) -> bool {
        self.text.ok()
    }

    /// Scans the next bytes of the message.
    pub fn feed(&mut self, mut input: &[u8]) {
        self.text.feed(input);
        while !input.is_empty() && self.failed.is_none() {
            match memchr::memchr(b'\n', input) {
                Some(i) => {
                    let (now, rest) = input.split_at(i + 1);
                    if self.long {
                        self.body_bytes(now, true);
                        self.long = false;
                    } else {
                        self.line.extend_from_slice(now);
                        let line = std::mem::take(&mut self.line);
                        self.whole_line(&line);
                        self.line = line;
                        self.line.clear();
                    }
                    input = rest;
                }
                None => {
                    if self.long {
                        self.body_bytes(input, false);
                    } else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > LONG_LINE && matches!(self.mode, Mode::Body(_)) {
                            let line = std::mem::take(&mut self.line);
                            self.body_bytes(&line, false);
                            self.long = true;
                        } else if self.line.len() > MAX_HEADER {
                            self.failed = Some(ScanError::HeaderTooLarge);
                        }
                    }
                    input = &[];
                }
            }
        }
    }

    /// The end of the message: the skeleton and its leaves.
    pub fn finish(mut self) -> Result<(Vec<u8>, Vec<Leaf>), ScanError> {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            match self.mode {
                Mode::Header => {
                    self.whole_line(&line);
                    if self.mode == Mode::Header {
                        self.header_ends();
                    }
                }
                Mode::Body(_) => self.body_bytes(&line, false),
            }
        } else if self.mode == Mode::Header {
            self.header_ends();
        }
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        // Open bodies run to the end, their last line break included.
        let eol = self.pending_eol;
        self.body_bytes_raw(eol);
        self.pending_eol = b"";
        let end = self.pos;
        self.close_leaf(end);
        while let Some(c) = self.containers.pop() {
            self.close(c, end);
        }
        Ok((self.skel, self.leaves))
    }

    /// A message (or part) that is all header: its (empty) body, with
    /// nothing added to the skeleton (mail-parser reads it as it reads the
    /// message).
    fn header_ends(&mut self) {
        let (skel, pos) = (self.skel.len(), self.pos);
        self.whole_line(b"\r\n");
        self.skel.truncate(skel);
        self.pos = pos;
        if let Some(l) = self.leaves.last_mut() {
            l.skel_start = l.skel_start.min(skel);
            l.real_start = l.real_start.min(pos);
        }
    }

    fn whole_line(&mut self, line: &[u8]) {
        let start = self.pos;
        match self.mode {
            Mode::Header => {
                self.pos += line.len() as u64;
                self.skel.extend_from_slice(line);
                if line == b"\r\n" || line == b"\n" {
                    let header = std::mem::take(&mut self.header);
                    self.header_done(&header);
                } else if self.header.len() + line.len() > MAX_HEADER {
                    self.failed = Some(ScanError::HeaderTooLarge);
                } else {
                    self.header.extend_from_slice(line);
                }
            }
            Mode::Body(_) => {
                let content = line
                    .strip_suffix(b"\r\n")
                    .or_else(|| line.strip_suffix(b"\n"))
                    .unwrap_or(line);
                let eol: &'static [u8] = match line.len() - content.len() {
                    2 => b"\r\n",
                    1 => b"\n",
                    _ => b"",
                };
                if let Some((frame, last)) = self.delimiter(content) {
                    // The withheld line break belongs to the delimiter.
                    let end = start - self.pending_eol.len() as u64;
                    self.close_leaf(end);
                    let depth = self.frames[frame].containers;
                    while self.containers.len() > depth {
                        if let Some(c) = self.containers.pop() {
                            self.close(c, end);
                        }
                    }
                    self.skel.extend_from_slice(self.pending_eol);
                    self.pending_eol = b"";
                    self.frames.truncate(if last { frame } else { frame + 1 });
                    self.pos += line.len() as u64;
                    self.kept = 0;
                    self.body_keep = self.keep;
                    self.whole_lines = false;
                    if last {
                        // What follows is an epilogue, whose line break
                        // before the next delimiter is that delimiter's.
                        self.skel.extend_from_slice(content);
                        self.pending_eol = eol;
                    } else {
                        self.skel.extend_from_slice(line);
                    }
                    self.mode = if last { Mode::Body(None) } else { Mode::Header };
                } else {
                    let eol_before = self.pending_eol;
                    self.body_bytes_raw(eol_before);
                    self.body_bytes_raw(content);
                    self.pending_eol = eol;
                    self.pos += line.len() as u64;
                }
            }
        }
    }

    /// Body bytes of a line that is no delimiter (`ends`: with its line
    /// break, which is withheld).
    fn body_bytes(&mut self, bytes: &[u8], ends: bool) {
        let eol_before = std::mem::take(&mut self.pending_eol);
        self.body_bytes_raw(eol_before);
        let (content, eol): (&[u8], &'static [u8]) = if !ends {
            (bytes, b"")
        } else if let Some(c) = bytes.strip_suffix(b"\r\n") {
            (c, b"\r\n")
        } else {
            (bytes.strip_suffix(b"\n").unwrap_or(bytes), b"\n")
        };
        self.body_bytes_raw(content);
        self.pos += bytes.len() as u64;
        self.pending_eol = eol;
    }

    /// Body bytes: into the leaf's decoded count, and into the skeleton
    /// while the body has room there. `pos` is the caller's.
    fn body_bytes_raw(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Some(d) = self.decoder.as_mut() {
            d.feed(bytes, &mut self.scratch);
            if let Mode::Body(Some(i)) = self.mode {
                self.leaves[i].decoded_len += self.scratch.len() as u64;
            }
            self.scratch.clear();
        }
        let room = self.body_keep.saturating_sub(self.kept);
        if self.whole_lines && room < bytes.len() {
            // A text leaf stops at the last line that fits whole.
            self.kept = self.body_keep;
            return;
        }
        let room = room.min(bytes.len());
        self.skel.extend_from_slice(&bytes[..room]);
        self.kept += room;
    }

    fn close_leaf(&mut self, end: u64) {
        if let Mode::Body(Some(i)) = self.mode {
            if let Some(mut d) = self.decoder.take() {
                d.finish(&mut self.scratch);
                self.leaves[i].decoded_len += self.scratch.len() as u64;
                self.scratch.clear();
            }
            self.close(i, end);
            self.mode = Mode::Body(None);
        }
    }

    fn close(&mut self, i: usize, end: u64) {
        let skel_end = self.skel.len();
        if let Some(leaf) = self.leaves.get_mut(i) {
            leaf.real_end = end.max(leaf.real_start);
            leaf.skel_end = skel_end;
            if leaf.container || leaf.encoding == Encoding::Identity {
                leaf.decoded_len = leaf.real_end - leaf.real_start;
            }
        }
    }

    /// The frame (index) whose delimiter `content` is, and whether it is
    /// the closing one. Inner boundaries are tried first.
    fn delimiter(&self, content: &[u8]) -> Option<(usize, bool)> {
        let rest = content.strip_prefix(b"--")?;
        self.frames.iter().enumerate().rev().find_map(|(i, f)| {
            let after = rest.strip_prefix(f.boundary.as_slice())?;
            let (last, tail) = match after.strip_prefix(b"--") {
                Some(t) => (true, t),
                None => (false, after),
            };
            tail.iter()
                .all(|b| *b == b' ' || *b == b'\t')
                .then_some((i, last))
        })
    }

    fn header_done(&mut self, header: &[u8]) {
        let fields = crate::backends::imap::parse::parse_header_fields(header);
        let field = |name: &str| {
            fields
                .iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        let ctype = field("Content-Type").unwrap_or("text/plain");
        let mime = ctype
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        let encoding = Encoding::of_header(field("Content-Transfer-Encoding").unwrap_or(""));
        self.kept = 0;
        self.body_keep = self.keep;
        self.whole_lines = false;
        let boundary = boundary_of(ctype);
        match boundary {
            Some(b) if mime.starts_with("multipart/") => {
                self.frames.push(Frame {
                    boundary: b.into_bytes(),
                    containers: self.containers.len(),
                });
                self.mode = Mode::Body(None);
            }
            _ if mime == "message/rfc822" && encoding == Encoding::Identity => {
                self.leaves.push(self.leaf(encoding, true));
                self.containers.push(self.leaves.len() - 1);
                self.mode = Mode::Header;
            }
            _ => {
                if mime.starts_with("text/") && self.text_keep > self.keep {
                    self.body_keep = self.text_keep;
                    self.whole_lines = true;
                }
                self.leaves.push(self.leaf(encoding, false));
                self.decoder = (encoding != Encoding::Identity).then(|| Decoder::new(encoding));
                self.mode = Mode::Body(Some(self.leaves.len() - 1));
            }
        }
    }

    fn leaf(&self, encoding: Encoding, container: bool) -> Leaf {
        Leaf {
            skel_start: self.skel.len(),
            skel_end: self.skel.len(),
            real_start: self.pos,
            real_end: self.pos,
            encoding,
            decoded_len: 0,
            container,
        }
    }
}

/// The `boundary` parameter of a Content-Type value.
fn boundary_of(ctype: &str) -> Option<String> {
    for param in ctype.split(';').skip(1) {
        let (name, value) = param.split_once('=')?;
        if !name.trim().eq_ignore_ascii_case("boundary") {
            continue;
        }
        let value = value.trim();
        let value = match value.strip_prefix('"') {
            Some(q) => q.split('"').next().unwrap_or(""),
            None => value.split_whitespace().next().unwrap_or(""),
        };
        return (!value.is_empty()).then(|| value.to_owned());
    }
    None
}

/// Scans a whole message at once (tests, and messages already in memory).
pub fn scan(raw: &[u8], keep: usize) -> Result<(Vec<u8>, Vec<Leaf>), ScanError> {
    let mut s = Scanner::new(keep);
    s.feed(raw);
    s.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MSG: &[u8] = b"From: a@x\r\nContent-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\nworld\r\n--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAwQFBgcICQ==\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\nContent-Type: multipart/alternative; boundary=b2\r\n\r\n--b2\r\n\r\ninner text\r\n--b2--\r\n--b1--\r\nepilogue\r\n";

    fn slice(raw: &[u8], l: &Leaf) -> Vec<u8> {
        raw[l.real_start as usize..l.real_end as usize].to_vec()
    }

    #[test]
    fn leaves_are_found_with_their_places() {
        let (skel, leaves) = scan(MSG, 1 << 20).unwrap();
        assert_eq!(skel, MSG);
        assert_eq!(leaves.len(), 4);
        assert_eq!(slice(MSG, &leaves[0]), b"hello\r\nworld");
        assert_eq!(leaves[0].decoded_len, 12);
        assert_eq!(slice(MSG, &leaves[1]), b"AAECAwQFBgcICQ==");
        assert_eq!(leaves[1].encoding, Encoding::Base64);
        assert_eq!(leaves[1].decoded_len, 10);
        assert!(leaves[2].container);
        assert!(slice(MSG, &leaves[2]).starts_with(b"Subject: inner\r\n"));
        assert!(slice(MSG, &leaves[2]).ends_with(b"--b2--"));
        assert_eq!(slice(MSG, &leaves[3]), b"inner text");
        for l in &leaves {
            assert_eq!(
                &skel[l.skel_start..l.skel_end],
                &MSG[l.real_start as usize..l.real_end as usize]
            );
        }
    }

    #[test]
    fn bodies_are_cut_in_the_skeleton() {
        let (skel, leaves) = scan(MSG, 3).unwrap();
        assert!(skel.len() < MSG.len());
        let parsed = mail_parser::MessageParser::default().parse(&skel).unwrap();
        let full = mail_parser::MessageParser::default().parse(MSG).unwrap();
        assert_eq!(parsed.parts.len(), full.parts.len());
        assert_eq!(parsed.attachments, full.attachments);
        assert_eq!(leaves[0].decoded_len, 12);
        assert_eq!(&skel[leaves[0].skel_start..leaves[0].skel_end], b"hel");
    }

    #[test]
    fn a_single_part_message_runs_to_the_end() {
        let raw = b"Subject: x\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\na=3Db\r\n";
        let (_, leaves) = scan(raw, 10).unwrap();
        assert_eq!(leaves.len(), 1);
        assert_eq!(slice(raw, &leaves[0]), b"a=3Db\r\n");
        assert_eq!(leaves[0].decoded_len, 5);
        let (_, leaves) = scan(b"Subject: no body", 10).unwrap();
        assert_eq!(leaves.len(), 1);
    }

    #[test]
    fn long_lines_are_not_held() {
        let mut raw = b"Content-Type: multipart/mixed; boundary=q\r\n\r\n--q\r\n\r\n".to_vec();
        raw.extend(std::iter::repeat_n(b'x', 10 * LONG_LINE));
        raw.extend_from_slice(b"\r\n--q--\r\n");
        let mut s = Scanner::new(16);
        for c in raw.chunks(100) {
            s.feed(c);
            assert!(s.line.len() <= LONG_LINE + 100);
        }
        let (_, leaves) = s.finish().unwrap();
        assert_eq!(leaves[0].decoded_len, 10 * LONG_LINE as u64);
    }

    #[test]
    fn utf8_text_is_told_across_chunks() {
        let check = |raw: &[u8], cut: usize| {
            let mut s = Scanner::new(0);
            s.feed(&raw[..cut]);
            s.feed(&raw[cut..]);
            s.is_utf8_text()
        };
        let ok = "a\u{e9}\u{20ac}\u{1F600}z".as_bytes();
        for cut in 0..=ok.len() {
            assert!(check(ok, cut), "{cut}");
        }
        for bad in [&b"a\xe9z"[..], b"a\0b", b"\xe2\x82", b"\xf0\x9f\x98"] {
            for cut in 0..=bad.len() {
                assert!(!check(bad, cut), "{bad:?} {cut}");
            }
        }
    }

    proptest! {
        #[test]
        fn chunk_boundaries_do_not_matter(cuts in proptest::collection::vec(0usize..400, 0..8), keep in 0usize..40) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let mut s = Scanner::new(keep);
            let mut at = 0;
            for c in cuts {
                let c = c.min(MSG.len()).max(at);
                s.feed(&MSG[at..c]);
                at = c;
            }
            s.feed(&MSG[at..]);
            prop_assert_eq!(s.finish().unwrap(), scan(MSG, keep).unwrap());
        }
    }
}
