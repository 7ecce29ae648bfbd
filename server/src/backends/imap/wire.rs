//! Reading IMAP server responses off the connection: one growing buffer per
//! connection, responses framed by their lines and literals, and a lean
//! parser for the FETCH responses the sync path reads by the thousand.
//!
//! Exists because reading through `async-imap`'s stream cost more CPU than
//! anything else opush does per synced message: it read at most 4 KB at a
//! time, allocated and zeroed two 4 KB blocks and copied the unread rest for
//! every response, and parsed each FETCH with imap-proto's general grammar
//! (a long `alt` per attribute). Here a complete response is known from its
//! framing before anything is parsed, `* n FETCH` responses made only of
//! `UID`, `FLAGS`, `MODSEQ`, `INTERNALDATE`, `RFC822.SIZE` and `BODY[]`
//! are parsed by [`lean_fetch`] into the very value imap-proto would give
//! (property-tested against it), and everything else still goes through
//! imap-proto. Must not: allocate from a server-sent count (the buffer grows
//! with the bytes that actually arrive, up to [`MAX_RESPONSE`]), hold a big
//! buffer while a connection waits ([`Conn::release`]), or panic on any bytes.

use std::borrow::Cow;
use std::io;

use async_imap::imap_proto::{AttributeValue, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};

use super::stream::ImapStream;

/// Largest response accepted (the limit `async-imap` had): beyond it the
/// connection fails rather than buffer more.
pub const MAX_RESPONSE: usize = 512 * 1024 * 1024;
/// First read size of a command, and the buffer kept while waiting.
const MIN_READ: usize = 4 * 1024;
/// Largest single read: reads double up to it while they come back full.
const MAX_READ: usize = 256 * 1024;

/// The stream and its read buffer.
#[derive(Debug)]
pub struct Conn {
    stream: ImapStream,
    /// Bytes read; `buf[start..]` not handed out yet.
    buf: Vec<u8>,
    start: usize,
    /// Length of the response last handed out, consumed by the next read.
    pending: usize,
    /// Size of the next read.
    chunk: usize,
}

impl Conn {
    /// Wraps a connected stream whose previous reader left nothing unread.
    pub fn new(stream: ImapStream) -> Conn {
        Conn {
            stream,
            buf: Vec::new(),
            start: 0,
            pending: 0,
            chunk: MIN_READ,
        }
    }

    /// Writes `bytes` (no flush).
    pub async fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes).await
    }

    /// Flushes what was written.
    pub async fn flush(&mut self) -> io::Result<()> {
        self.stream.flush().await
    }

    /// Frees a big read buffer once everything read was handed out (call it
    /// between commands: a connection parked in the pool or in IDLE keeps
    /// at most `MIN_READ` bytes).
    pub fn release(&mut self) {
        self.consume();
        if self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
            if self.buf.capacity() > MIN_READ {
                self.buf = Vec::new();
            }
            self.chunk = MIN_READ;
        }
    }

    fn consume(&mut self) {
        self.start += std::mem::take(&mut self.pending);
    }

    /// The next response; `None` when the server closed the connection
    /// between responses. Bytes that do not parse are an
    /// `io::ErrorKind::Other` error (a protocol error for the caller), a
    /// connection closed mid-response `UnexpectedEof`.
    pub async fn next(&mut self) -> io::Result<Option<Parsed<'_>>> {
        self.consume();
        let (len, fetch) = loop {
            match frame(&self.buf[self.start..])? {
                Framed::Complete { len, fetch } => break (len, fetch),
                Framed::Need(min) => {
                    if !self.fill(min).await? {
                        if self.start == self.buf.len() {
                            return Ok(None);
                        }
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "connection closed in the middle of a response",
                        ));
                    }
                }
            }
        };
        self.pending = len;
        let bytes = &self.buf[self.start..self.start + len];
        if fetch {
            if let Some(r) = lean_fetch(bytes) {
                return Ok(Some(Parsed(r)));
            }
        }
        match Response::parse(bytes) {
            Ok((_, r)) => Ok(Some(Parsed(r))),
            Err(e) => Err(unparsable(&e, bytes)),
        }
    }

    /// Whether the server ended the connection while nothing was asked of
    /// it (a restart or an idle logout: a `BYE`, then EOF), looked at
    /// without waiting: what has arrived is read once, never waited for.
    /// Bytes read that are not a `BYE` stay for the next [`Conn::next`].
    pub fn ended_by_server(&mut self) -> bool {
        use std::task::{Context, Poll, Waker};
        self.consume();
        let mut chunk = [0u8; 1024];
        let mut read = tokio::io::ReadBuf::new(&mut chunk);
        let mut cx = Context::from_waker(Waker::noop());
        match std::pin::Pin::new(&mut self.stream).poll_read(&mut cx, &mut read) {
            Poll::Pending => {}
            Poll::Ready(Err(_)) => return true,
            Poll::Ready(Ok(())) if read.filled().is_empty() => return true,
            Poll::Ready(Ok(())) => self.buf.extend_from_slice(read.filled()),
        }
        // A BYE among the whole responses read so far.
        let mut at = self.start;
        while let Ok(Framed::Complete { len, .. }) = frame(&self.buf[at..]) {
            let response = &self.buf[at..at + len];
            if response.len() >= 5 && response[..5].eq_ignore_ascii_case(b"* BYE") {
                return true;
            }
            at += len;
        }
        false
    }

    /// Reads more, aiming for at least `min` unread bytes. False at EOF.
    async fn fill(&mut self, min: usize) -> io::Result<bool> {
        if min > MAX_RESPONSE {
            return Err(io::Error::other(format!(
                "server response larger than {MAX_RESPONSE} bytes"
            )));
        }
        if self.start > 0 {
            // Keep only the partial response: at most one per read.
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let want = min
            .saturating_sub(self.buf.len())
            .clamp(self.chunk, MAX_READ);
        if self.buf.capacity() - self.buf.len() < want {
            // A bigger buffer holding only the unread bytes: growing in
            // place (`realloc`) would copy the whole old capacity, up to
            // 256 KB, for the few bytes of a partial response.
            let mut bigger =
                Vec::with_capacity((self.buf.len() + want).max(2 * self.buf.capacity()));
            bigger.extend_from_slice(&self.buf);
            self.buf = bigger;
        }
        let spare = self.buf.capacity() - self.buf.len();
        let n = self.stream.read_buf(&mut self.buf).await?;
        if n == spare && self.chunk < MAX_READ {
            self.chunk *= 2;
        }
        Ok(n > 0)
    }
}

/// One response, borrowed from the connection's buffer until the next read.
#[derive(Debug)]
pub struct Parsed<'a>(Response<'a>);

impl<'a> Parsed<'a> {
    /// The response.
    pub fn parsed(&self) -> &Response<'a> {
        &self.0
    }
}

/// What the buffered bytes hold.
#[derive(Debug, PartialEq, Eq)]
enum Framed {
    /// A whole response of `len` bytes; `fetch` when it is `* n FETCH`.
    Complete { len: usize, fetch: bool },
    /// More bytes needed: at least this many in all.
    Need(usize),
}

/// Frames the response at the start of `buf`. A `* n FETCH` response is
/// framed by its lines and `{n}` literals; any other response (few, small)
/// by asking imap-proto whether it parses, as `async-imap` did, so a text
/// that happens to end in `{3}` is never taken for a literal.
fn frame(buf: &[u8]) -> io::Result<Framed> {
    let Some(first) = memchr::memchr(b'\n', buf) else {
        return Ok(Framed::Need(buf.len() + 1));
    };
    if !is_fetch_line(&buf[..first]) {
        return match Response::parse(buf) {
            Ok((rest, _)) => Ok(Framed::Complete {
                len: buf.len() - rest.len(),
                fetch: false,
            }),
            Err(e) if e.is_incomplete() => Ok(Framed::Need(buf.len() + 1)),
            Err(e) => Err(unparsable(&e, buf)),
        };
    }
    let mut end = first; // index of a line's `\n`
    loop {
        let Some(n) = literal_at_end(&buf[..end]) else {
            return Ok(Framed::Complete {
                len: end + 1,
                fetch: true,
            });
        };
        let after = (end + 1).saturating_add(n);
        if after >= buf.len() {
            return Ok(Framed::Need(after.saturating_add(1)));
        }
        match memchr::memchr(b'\n', &buf[after..]) {
            Some(i) => end = after + i,
            None => return Ok(Framed::Need(buf.len() + 1)),
        }
    }
}

/// Whether a response line starts `* <digits> FETCH `.
fn is_fetch_line(line: &[u8]) -> bool {
    let Some(rest) = line.strip_prefix(b"* ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0 && rest[digits..].starts_with(b" FETCH ")
}

/// The size of the literal announced at the end of a line (`{n}\r`, the
/// `\n` excluded), if any.
fn literal_at_end(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r")?.strip_suffix(b"}")?;
    let open = memchr::memrchr(b'{', line)?;
    let digits = &line[open + 1..];
    if digits.is_empty() || digits.len() > 10 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(digits).ok()?.parse().ok()
}

fn unparsable<E: std::fmt::Debug>(e: &E, bytes: &[u8]) -> io::Error {
    let shown = &bytes[..bytes.len().min(200)];
    io::Error::other(format!(
        "{e:?} while parsing {:?}",
        String::from_utf8_lossy(shown)
    ))
}

/// A byte cursor for [`lean_fetch`]: every step either advances or gives `None`.
struct Cur<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cur<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn eat(&mut self, s: &[u8]) -> Option<()> {
        if self.b[self.i..].starts_with(s) {
            self.i += s.len();
            Some(())
        } else {
            None
        }
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.i.checked_add(n)?;
        let s = self.b.get(self.i..end)?;
        self.i = end;
        Some(s)
    }

    fn digits(&mut self) -> Option<&'a str> {
        let n = self.b[self.i..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .count();
        if n == 0 {
            return None;
        }
        std::str::from_utf8(self.take(n)?).ok()
    }

    fn u32(&mut self) -> Option<u32> {
        self.digits()?.parse().ok()
    }

    fn u64(&mut self) -> Option<u64> {
        self.digits()?.parse().ok()
    }

    fn while_(&mut self, f: impl Fn(u8) -> bool) -> &'a [u8] {
        let n = self.b[self.i..].iter().take_while(|&&b| f(b)).count();
        let s = &self.b[self.i..self.i + n];
        self.i += n;
        s
    }

    /// A quoted string without escapes or control bytes, as its raw bytes.
    fn quoted(&mut self) -> Option<&'a [u8]> {
        self.eat(b"\"")?;
        let s = self.while_(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\');
        self.eat(b"\"")?;
        Some(s)
    }

    /// `{n}\r\n` and the n bytes.
    fn literal(&mut self) -> Option<&'a [u8]> {
        self.eat(b"{")?;
        let n = self.u32()?;
        self.eat(b"}\r\n")?;
        self.take(usize::try_from(n).ok()?)
    }

    /// `NIL`, a quoted string or a literal.
    fn nstring(&mut self) -> Option<Option<&'a [u8]>> {
        match self.peek()? {
            b'N' => self.eat(b"NIL").map(|()| None),
            b'"' => self.quoted().map(Some),
            b'{' => self.literal().map(Some),
            _ => None,
        }
    }

    /// `(flag flag …)`: system flags (`\Seen`, `\*`) and keywords.
    fn flags(&mut self) -> Option<Vec<Cow<'a, str>>> {
        self.eat(b"(")?;
        let mut out = Vec::new();
        if self.eat(b")").is_some() {
            return Some(out);
        }
        loop {
            let from = self.i;
            if self.eat(b"\\").is_some() {
                if self.eat(b"*").is_none() {
                    self.while_(is_atom_char);
                }
            } else if self.while_(is_keyword_char).is_empty() {
                return None;
            }
            out.push(Cow::Borrowed(
                std::str::from_utf8(&self.b[from..self.i]).ok()?,
            ));
            match self.peek()? {
                b')' => {
                    self.i += 1;
                    return Some(out);
                }
                b' ' => {
                    self.i += 1;
                    if self.eat(b")").is_some() {
                        return Some(out);
                    }
                }
                _ => return None,
            }
        }
    }

    fn attribute(&mut self) -> Option<AttributeValue<'a>> {
        match self.peek()? {
            b'U' => {
                self.eat(b"UID ")?;
                Some(AttributeValue::Uid(self.u32()?))
            }
            b'F' => {
                self.eat(b"FLAGS ")?;
                Some(AttributeValue::Flags(self.flags()?))
            }
            b'M' => {
                self.eat(b"MODSEQ (")?;
                let v = self.u64()?;
                self.eat(b")")?;
                Some(AttributeValue::ModSeq(v))
            }
            b'I' => {
                self.eat(b"INTERNALDATE ")?;
                let d = std::str::from_utf8(self.quoted()?).ok()?;
                Some(AttributeValue::InternalDate(Cow::Borrowed(d)))
            }
            b'R' => {
                self.eat(b"RFC822.SIZE ")?;
                Some(AttributeValue::Rfc822Size(self.u32()?))
            }
            b'B' => {
                self.eat(b"BODY[]")?;
                let index = if self.eat(b"<").is_some() {
                    let v = self.u32()?;
                    self.eat(b">")?;
                    Some(v)
                } else {
                    None
                };
                self.eat(b" ")?;
                let data = self.nstring()?;
                Some(AttributeValue::BodySection {
                    section: None,
                    index,
                    data: data.map(Cow::Borrowed),
                })
            }
            _ => None,
        }
    }
}

/// ATOM-CHAR limited to printable ASCII (anything else: imap-proto decides).
fn is_atom_char(b: u8) -> bool {
    (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b)
}

/// The characters of a keyword flag: ASTRING-CHAR, printable ASCII.
fn is_keyword_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

/// Parses `bytes`, one whole `* n FETCH (…)\r\n` response, into what
/// `imap_proto::Response::parse` gives for it, when it is made only of the
/// attributes the sync path fetches in their usual form; `None` otherwise
/// (the caller then asks imap-proto). Never a different value: see the
/// property tests.
pub fn lean_fetch(bytes: &[u8]) -> Option<Response<'_>> {
    let mut c = Cur { b: bytes, i: 0 };
    c.eat(b"* ")?;
    let n = c.u32()?;
    c.eat(b" FETCH (")?;
    let mut attrs = Vec::with_capacity(4);
    loop {
        attrs.push(c.attribute()?);
        match c.peek()? {
            b' ' => {
                c.i += 1;
                if c.peek()? == b')' {
                    c.i += 1;
                    break;
                }
            }
            b')' => {
                c.i += 1;
                break;
            }
            _ => return None,
        }
    }
    c.while_(|b| b == b' ');
    c.eat(b"\r\n")?;
    (c.i == bytes.len()).then_some(Response::Fetch(n, attrs))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn imap_proto_parse(bytes: &[u8]) -> Option<(usize, Response<'_>)> {
        Response::parse(bytes)
            .ok()
            .map(|(rest, r)| (bytes.len() - rest.len(), r))
    }

    // A synchronizing literal waits for this (servers without LITERAL+):
    // each server's wording, and the bare `+` some send against RFC 3501.
    #[test]
    fn continuation_requests_frame_and_parse_in_every_usual_form() {
        let cases: &[&[u8]] = &[
            b"+ OK\r\n",
            b"+ go ahead\r\n",
            b"+ Ready for additional command text.\r\n",
            b"+ Ready for argument\r\n",
            b"+ \r\n",
            b"+\r\n",
        ];
        for &c in cases {
            let mut buf = c.to_vec();
            buf.extend_from_slice(b"O1 OK done\r\n");
            match frame(&buf).unwrap() {
                Framed::Complete { len, fetch } => assert_eq!((len, fetch), (c.len(), false)),
                Framed::Need(n) => panic!("{:?}: needs {n}", String::from_utf8_lossy(c)),
            }
            let (len, r) = imap_proto_parse(c).unwrap();
            assert_eq!(len, c.len());
            assert!(matches!(r, Response::Continue(_)), "{r:?}");
        }
    }

    #[test]
    fn usual_fetches_take_the_lean_path_and_match_imap_proto() {
        let cases: &[&[u8]] = &[
            b"* 1 FETCH (UID 7 FLAGS (\\Seen $Forwarded) MODSEQ (12) INTERNALDATE \"28-Nov-2026 21:15:56 +0000\" RFC822.SIZE 1650)\r\n",
            b"* 12 FETCH (UID 1234 BODY[] {5}\r\nhello)\r\n",
            b"* 12 FETCH (UID 1234 BODY[]<0> {0}\r\n)\r\n",
            b"* 3 FETCH (FLAGS () UID 9)\r\n",
            b"* 3 FETCH (UID 9 FLAGS (\\Seen \\* ) BODY[] NIL)\r\n",
            b"* 3 FETCH (UID 9 BODY[] \"short\" )  \r\n",
            b"* 3 FETCH (FLAGS (\\Recent \\) UID 9)\r\n",
            b"* 3 FETCH (FLAGS (a]b \\Flagged) UID 9)\r\n",
        ];
        for &c in cases {
            let lean = lean_fetch(c).unwrap_or_else(|| panic!("{:?}", String::from_utf8_lossy(c)));
            let (len, full) = imap_proto_parse(c).unwrap();
            assert_eq!(len, c.len());
            assert_eq!(lean, full, "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn unusual_fetches_are_left_to_imap_proto() {
        let cases: &[&[u8]] = &[
            b"* 1 FETCH (UID 7 BODYSTRUCTURE (\"text\" \"plain\" NIL NIL NIL \"7bit\" 5 1))\r\n",
            b"* 1 FETCH (uid 7)\r\n",
            b"* 1 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)] {2}\r\n\r\n)\r\n",
            b"* 1 FETCH (UID 7 BODY[] \"a\\\"b\")\r\n",
            b"* 1 FETCH (UID 99999999999)\r\n",
            b"* 1 FETCH (UID 7)\r\nextra",
            b"* 1 FETCH ()\r\n",
        ];
        for &c in cases {
            assert!(lean_fetch(c).is_none(), "{:?}", String::from_utf8_lossy(c));
        }
    }

    #[test]
    fn framing() {
        assert_eq!(frame(b"").unwrap(), Framed::Need(1));
        assert_eq!(frame(b"* 1 FETCH (UID 1").unwrap(), Framed::Need(17));
        let f = b"* 1 FETCH (UID 1 BODY[] {5}\r\nab\r\nc)\r\n* 2 EXISTS\r\n";
        assert_eq!(
            frame(f).unwrap(),
            Framed::Complete {
                len: f.len() - 12,
                fetch: true
            }
        );
        // Literal bytes not all there yet: the whole literal is asked for.
        assert_eq!(frame(&f[..31]).unwrap(), Framed::Need(35));
        assert_eq!(
            frame(b"* 2 EXISTS\r\nO1 OK done\r\n").unwrap(),
            Framed::Complete {
                len: 12,
                fetch: false
            }
        );
        // A text ending like a literal is no literal.
        assert_eq!(
            frame(b"O1 NO [ALERT] no such box {3}\r\n").unwrap(),
            Framed::Complete {
                len: 31,
                fetch: false
            }
        );
        assert!(frame(b"garbage\r\n").is_err());
        assert_eq!(literal_at_end(b"x {12}\r"), Some(12));
        assert_eq!(literal_at_end(b"x {}\r"), None);
        assert_eq!(literal_at_end(b"x {99999999999}\r"), None);
    }

    /// FETCH responses of the shapes opush asks for, with the variations
    /// servers send (spacing, empty and odd flags, NIL, quoted bodies).
    fn fetch_response() -> impl Strategy<Value = Vec<u8>> {
        let flag = prop_oneof![
            Just("\\Seen".to_string()),
            Just("\\*".to_string()),
            Just("\\".to_string()),
            "\\\\[A-Za-z]{1,8}",
            "[!#$&'+,./0-9:;<=>?@A-Z^_`a-z|~\\]-]{1,10}",
            "[ -~]{1,4}",
        ];
        let body = prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(|b| {
                let mut v = format!("{{{}}}\r\n", b.len()).into_bytes();
                v.extend(b);
                v
            }),
            Just(b"NIL".to_vec()),
            "\"[ -~]{0,12}\"".prop_map(String::into_bytes),
        ];
        let attr = prop_oneof![
            any::<u32>().prop_map(|u| format!("UID {u}").into_bytes()),
            "[0-9]{1,11}".prop_map(|u| format!("UID {u}").into_bytes()),
            proptest::collection::vec(flag, 0..4).prop_flat_map(|f| {
                prop_oneof![Just(""), Just(" ")]
                    .prop_map(move |sp| format!("FLAGS ({}{sp})", f.join(" ")).into_bytes())
            }),
            any::<u64>().prop_map(|m| format!("MODSEQ ({m})").into_bytes()),
            "\"[ -~]{0,26}\"".prop_map(|d| format!("INTERNALDATE {d}").into_bytes()),
            any::<u32>().prop_map(|s| format!("RFC822.SIZE {s}").into_bytes()),
            (proptest::option::of(any::<u32>()), body).prop_map(|(i, b)| {
                let mut v = match i {
                    Some(i) => format!("BODY[]<{i}> ").into_bytes(),
                    None => b"BODY[] ".to_vec(),
                };
                v.extend(b);
                v
            }),
            Just(b"BODY[1] {1}\r\nx".to_vec()),
        ];
        (
            any::<u32>(),
            proptest::collection::vec(attr, 1..5),
            "[ ]{0,2}",
            "[ ]{0,2}",
        )
            .prop_map(|(n, attrs, inner, outer)| {
                let mut v = format!("* {n} FETCH (").into_bytes();
                for (i, a) in attrs.iter().enumerate() {
                    if i > 0 {
                        v.push(b' ');
                    }
                    v.extend(a);
                }
                v.extend(inner.as_bytes());
                v.push(b')');
                v.extend(outer.as_bytes());
                v.extend(b"\r\n");
                v
            })
    }

    /// Responses written in pieces of every size (a byte at a time, across
    /// literals, several at once) are read back one by one, as imap-proto
    /// reads them from the whole stream; a connection closed in the middle
    /// of a response is an error, between responses `None`, and `release`
    /// then keeps at most a small buffer.
    #[tokio::test]
    async fn responses_in_pieces_come_back_whole() {
        let mut wire = Vec::new();
        for i in 1..=40u32 {
            let body = "x".repeat((i as usize * 997) % 5000);
            wire.extend(
                format!(
                    "* {i} FETCH (UID {} BODY[] {{{}}}\r\n{body})\r\n",
                    100 + i,
                    body.len()
                )
                .as_bytes(),
            );
            wire.extend(format!("* {i} FETCH (FLAGS (\\Seen) UID {})\r\n", 100 + i).as_bytes());
        }
        wire.extend(b"* 3 EXISTS\r\n* OK [ALERT] text {3}\r\nO1 OK done\r\n* 4 EXPUNGE\r\n");
        let mut expected = Vec::new();
        let mut rest = &wire[..];
        while !rest.is_empty() {
            let (r, resp) = Response::parse(rest).unwrap();
            expected.push(resp);
            rest = r;
        }
        for piece in [1usize, 7, 1000, 70_000] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let bytes = wire.clone();
            let writer = tokio::spawn(async move {
                let (mut s, _) = listener.accept().await.unwrap();
                for chunk in bytes.chunks(piece) {
                    s.write_all(chunk).await.unwrap();
                    s.flush().await.unwrap();
                    if piece < 10 {
                        tokio::task::yield_now().await;
                    }
                }
                // A last response cut short, then the close.
                s.write_all(b"* 5 FETCH (UID 9 BODY[] {10}\r\nabc")
                    .await
                    .unwrap();
            });
            let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let mut conn = Conn::new(ImapStream::Plain(tcp));
            for want in &expected {
                let got = conn.next().await.unwrap().unwrap();
                assert_eq!(got.parsed(), want, "pieces of {piece}");
            }
            writer.await.unwrap();
            let err = conn.next().await.unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        }
        // Closed between responses.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            s.write_all(b"O2 OK bye\r\n").await.unwrap();
        });
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut conn = Conn::new(ImapStream::Plain(tcp));
        assert!(conn.next().await.unwrap().is_some());
        writer.await.unwrap();
        assert!(conn.next().await.unwrap().is_none());
        conn.release();
        assert!(conn.buf.capacity() <= MIN_READ);
    }

    /// A connection waiting between commands: alive while the server sends
    /// nothing (or something else than a BYE, kept for the next read),
    /// ended by a BYE or a close.
    #[tokio::test]
    async fn a_bye_or_a_close_between_commands_ends_the_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut conn = Conn::new(ImapStream::Plain(tcp));
        assert!(!conn.ended_by_server(), "nothing sent");
        server.write_all(b"* 4 EXISTS\r\n").await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!conn.ended_by_server(), "news, not an end");
        let kept = conn.next().await.unwrap().unwrap();
        assert_eq!(
            kept.parsed(),
            &Response::MailboxData(async_imap::imap_proto::MailboxDatum::Exists(4))
        );
        server
            .write_all(b"* BYE Server shutting down.\r\n")
            .await
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(conn.ended_by_server(), "BYE");

        // Closed without a word.
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let mut conn = Conn::new(ImapStream::Plain(tcp));
        assert!(!conn.ended_by_server());
        drop(server);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(conn.ended_by_server(), "EOF");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the lean parser returns, imap-proto returns too, for
        /// the whole response; and it takes the usual forms itself.
        #[test]
        fn lean_fetch_agrees_with_imap_proto(bytes in fetch_response()) {
            if let Some(lean) = lean_fetch(&bytes) {
                let (len, full) = imap_proto_parse(&bytes).unwrap();
                prop_assert_eq!(len, bytes.len());
                prop_assert_eq!(lean, full);
            }
        }

        /// Framing finds exactly the response imap-proto parses, and asks
        /// for more for every strict prefix.
        #[test]
        fn framing_agrees_with_imap_proto(bytes in fetch_response(), tail in "[ -~]{0,8}") {
            if let Some((len, _)) = imap_proto_parse(&bytes) {
                let mut buf = bytes.clone();
                buf.extend(tail.as_bytes());
                prop_assert_eq!(
                    frame(&buf).unwrap(),
                    Framed::Complete { len, fetch: true }
                );
                for cut in 0..len {
                    prop_assert!(matches!(frame(&buf[..cut]), Ok(Framed::Need(m)) if m > cut));
                }
            }
        }

        /// Any bytes: no panic, and a lean answer only for a whole response.
        #[test]
        fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = frame(&bytes);
            if let Some(lean) = lean_fetch(&bytes) {
                let (len, full) = imap_proto_parse(&bytes).unwrap();
                prop_assert_eq!(len, bytes.len());
                prop_assert_eq!(lean, full);
            }
        }
    }
}
