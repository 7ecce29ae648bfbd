//! The HTTP/1.1 connection loop devices talk to.
//!
//! It exists for memory: a parked Ping keeps its connection open for up to an
//! hour, and tens of thousands are parked at once. hyper (under warp) keeps an
//! 8 KiB write buffer and an 8 KiB read buffer for every connection whatever
//! their use, and a parked request's headers pin a third one (~24 KB per
//! parked Ping, docs/BENCHMARKS.md "Push"). This loop holds no buffer while a
//! connection waits: bytes are read only once the socket is readable, the
//! buffer is released as soon as a request and its body are consumed, and a
//! response is written from the handler's own bytes.
//!
//! What it does (RFC 9112, the server side devices need): request line and
//! headers (at most [`MAX_HEAD`] bytes, [`MAX_HEADERS`] fields; 431
//! otherwise), bodies by `Content-Length` or `chunked` (a lazy stream: the
//! handler reads the body only after authentication, and `Expect:
//! 100-continue` is answered when it does), keep-alive (HTTP/1.1 by default,
//! HTTP/1.0 on request), pipelined requests in order, a client that closes
//! its connection while its request is parked cancels the request, a head
//! that dribbles in slower than `[server] header_timeout_s`, a body with no
//! byte for that long or slower than [`MIN_BODY_RATE`] after it, and a
//! connection idle longer than `[server] keep_alive_s` are closed, and on
//! shutdown idle connections close while requests in progress finish.
//! Malformed requests get a 4xx/5xx answer and a log line with the reason,
//! then the connection closes.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use warp::http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::{AppState, Request};
use crate::commands::EasResponse;

/// Largest request head (request line and header fields), bytes.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 100;
/// Bytes asked of the socket at a time while reading a head.
const HEAD_READ: usize = 2048;
/// Most bytes read at once for a body.
const BODY_READ: usize = 64 * 1024;
/// Longest chunk-size line (with extensions) and trailer section.
const MAX_CHUNK_LINE: usize = 4096;
/// Responses up to this size go out in one write with their head.
const ONE_WRITE: usize = 16 * 1024;
/// Slowest body accepted, bytes per second beyond the first
/// `header_timeout_s`: each byte received extends the body's deadline by
/// 1/`MIN_BODY_RATE` s. Without it a client sending one byte just within
/// every `header_timeout_s` holds its request (and its `max_in_flight`
/// slot) for as long as its `Content-Length` lasts. 500 B/s is a phone on
/// the worst link that still syncs (a 10 MB attachment in under 6 hours).
pub const MIN_BODY_RATE: f64 = 500.0;

/// Timeouts of the connection loop (`[server] header_timeout_s`,
/// `keep_alive_s`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnTimeouts {
    /// A request head must arrive within this time of its first byte; a
    /// body or a response must make progress within it.
    pub header: Duration,
    /// An idle keep-alive connection is closed after this time.
    pub keep_alive: Duration,
}

impl Default for ConnTimeouts {
    fn default() -> Self {
        ConnTimeouts {
            header: Duration::from_secs(30),
            keep_alive: Duration::from_secs(600),
        }
    }
}

/// Serves on `listener` until `shutdown` resolves, then closes idle
/// connections, lets requests in progress finish, and returns when every
/// connection is closed.
pub async fn serve(
    listener: TcpListener,
    app: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection holds a sender; `recv` ends when the last is dropped.
    let (open_tx, mut open_rx) = mpsc::channel::<()>(1);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    let conn = Connection {
                        stream,
                        remote,
                        app: app.clone(),
                        stop: stop_rx.clone(),
                        _open: open_tx.clone(),
                    };
                    tokio::spawn(conn.run());
                }
                Err(e) if is_connection_error(&e) => {}
                Err(e) => {
                    // Out of file descriptors, most likely: wait for some
                    // to be closed rather than spin.
                    tracing::error!(target: "CONTAINER", error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(open_tx);
    let _ = open_rx.recv().await;
}

fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// One accepted connection.
struct Connection {
    stream: TcpStream,
    remote: SocketAddr,
    app: Arc<AppState>,
    stop: watch::Receiver<bool>,
    _open: mpsc::Sender<()>,
}

/// Why a request could not be read; each has its answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    /// Not HTTP/1.x syntax.
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The head is larger than [`MAX_HEAD`] or has more than
    /// [`MAX_HEADERS`] fields.
    #[error("request head too large")]
    TooLarge,
    /// A transfer coding other than `chunked` (alone or last).
    #[error("unsupported transfer coding {0:?}")]
    Coding(String),
    /// An HTTP version other than 1.0 and 1.1.
    #[error("unsupported HTTP version")]
    Version,
}

impl HeadError {
    fn status(&self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::TooLarge => 431,
            HeadError::Coding(_) => 501,
            HeadError::Version => 505,
        }
    }
}

/// How a request's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` bytes (0: no body).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
}

/// A parsed request head.
#[derive(Debug)]
pub struct Head {
    /// The method.
    pub method: Method,
    /// The path of the request target.
    pub path: String,
    /// The query of the request target (without `?`).
    pub query: String,
    /// The header fields.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// The client wants the connection kept open after the answer.
    pub keep_alive: bool,
    /// The client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
    /// HTTP/1.0 (answers say so in keep-alive terms).
    pub http10: bool,
}

/// Parses a request head at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and its length in bytes.
pub fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
    // Leading empty lines before a request line are allowed (RFC 9112 2.2).
    let skip = buf
        .iter()
        .position(|b| *b != b'\r' && *b != b'\n')
        .unwrap_or(buf.len());
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut fields);
    let len = match req.parse(&buf[skip..]) {
        Ok(httparse::Status::Complete(n)) => skip + n,
        Ok(httparse::Status::Partial) => {
            return if buf.len() >= MAX_HEAD {
                Err(HeadError::TooLarge)
            } else {
                Ok(None)
            }
        }
        Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
        // httparse says "version" for any request line it cannot split in
        // three (a space in the target, say): only a real `HTTP/x.y` other
        // than 1.x is a version the server does not support (505).
        Err(httparse::Error::Version) => return Err(version_error(&buf[skip..])),
        Err(e) => return Err(HeadError::Malformed(e.to_string())),
    };
    if len > MAX_HEAD {
        return Err(HeadError::TooLarge);
    }
    let http10 = match req.version {
        Some(0) => true,
        Some(1) => false,
        _ => return Err(HeadError::Version),
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes())
        .map_err(|_| HeadError::Malformed("bad method".to_owned()))?;
    let target = req.path.unwrap_or_default();
    // absolute-form (`http://host/path`) is accepted as its path.
    let origin = ["http://", "https://"]
        .iter()
        .find_map(|scheme| {
            let rest = target.get(scheme.len()..)?;
            target[..scheme.len()]
                .eq_ignore_ascii_case(scheme)
                .then(|| rest.find('/').map_or("/", |i| &rest[i..]))
        })
        .unwrap_or(target);
    let (path, query) = match origin.split_once('?') {
        Some((p, q)) => (p, q),
        None => (origin, ""),
    };
    if !path.starts_with('/') && path != "*" {
        return Err(HeadError::Malformed(format!("request target {target:?}")));
    }
    let mut headers = HeaderMap::with_capacity(req.headers.len());
    for f in req.headers.iter() {
        let name = HeaderName::from_bytes(f.name.as_bytes())
            .map_err(|_| HeadError::Malformed(format!("header name {:?}", f.name)))?;
        let value = HeaderValue::from_bytes(f.value)
            .map_err(|_| HeadError::Malformed(format!("value of {name}")))?;
        headers.append(name, value);
    }
    let framing = framing(&headers, http10)?;
    let tokens = |name: &str| -> Vec<String> {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|t| t.trim().to_ascii_lowercase())
            .filter(|t| !t.is_empty())
            .collect()
    };
    let connection = tokens("connection");
    let keep_alive = if http10 {
        connection.iter().any(|t| t == "keep-alive")
    } else {
        !connection.iter().any(|t| t == "close")
    };
    // With both Transfer-Encoding and Content-Length the message may be a
    // smuggling attempt: read it by its chunks, then close (RFC 9112 6.3).
    let keep_alive =
        keep_alive && !(framing == Framing::Chunked && headers.contains_key("content-length"));
    let expect_continue = !http10 && tokens("expect").iter().any(|t| t == "100-continue");
    Ok(Some((
        Head {
            method,
            path: path.to_owned(),
            query: query.to_owned(),
            headers,
            framing,
            keep_alive,
            expect_continue,
            http10,
        },
        len,
    )))
}

/// The error for a request line httparse refused for its version: 505 when
/// it is `method SP target SP HTTP/<digits and dots>`, else malformed (400).
fn version_error(buf: &[u8]) -> HeadError {
    let line = &buf[..memchr::memchr(b'\n', buf).unwrap_or(buf.len())];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let parts: Vec<&[u8]> = line.split(|b| *b == b' ').collect();
    let real_version = match parts.as_slice() {
        [_, _, version] => version
            .strip_prefix(b"HTTP/")
            .is_some_and(|v| !v.is_empty() && v.iter().all(|b| b.is_ascii_digit() || *b == b'.')),
        _ => false,
    };
    if real_version {
        HeadError::Version
    } else {
        HeadError::Malformed(format!(
            "request line {:?}",
            String::from_utf8_lossy(&line[..line.len().min(200)])
        ))
    }
}

fn framing(headers: &HeaderMap, http10: bool) -> Result<Framing, HeadError> {
    let codings: Vec<String> = headers
        .get_all("transfer-encoding")
        .iter()
        .map(|v| {
            v.to_str()
                .map_err(|_| HeadError::Malformed("Transfer-Encoding".to_owned()))
        })
        .collect::<Result<Vec<_>, _>>()?
        .iter()
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect();
    if !codings.is_empty() {
        if http10 {
            return Err(HeadError::Malformed(
                "Transfer-Encoding in an HTTP/1.0 request".to_owned(),
            ));
        }
        // Only `chunked`, once and last, is understood.
        return match codings.as_slice() {
            [only] if only == "chunked" => Ok(Framing::Chunked),
            _ => Err(HeadError::Coding(codings.join(", "))),
        };
    }
    let mut length: Option<u64> = None;
    for v in headers.get_all("content-length") {
        for part in v
            .to_str()
            .map_err(|_| HeadError::Malformed("Content-Length".to_owned()))?
            .split(',')
        {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HeadError::Malformed(format!("Content-Length {part:?}")));
            }
            let n: u64 = part
                .parse()
                .map_err(|_| HeadError::Malformed(format!("Content-Length {part:?}")))?;
            if length.is_some_and(|l| l != n) {
                return Err(HeadError::Malformed(
                    "conflicting Content-Length values".to_owned(),
                ));
            }
            length = Some(n);
        }
    }
    Ok(Framing::Length(length.unwrap_or(0)))
}

/// Where a chunked body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer fields up to an empty line.
    Trailers,
}

/// Where a body's reader is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    /// This many bytes of a `Content-Length` body are still to be read.
    Length(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// The whole body is read.
    Done,
}

/// What a chunk-size line says.
fn chunk_size_line(buf: &[u8]) -> Result<Option<(u64, usize)>, String> {
    let Some(end) = memchr::memchr(b'\n', buf) else {
        if buf.len() > MAX_CHUNK_LINE {
            return Err("chunk-size line too long".to_owned());
        }
        return Ok(None);
    };
    let line = &buf[..end];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let digits = line
        .iter()
        .position(|b| !b.is_ascii_hexdigit())
        .unwrap_or(line.len());
    if digits == 0 || digits > 15 {
        return Err("bad chunk size".to_owned());
    }
    let rest = &line[digits..];
    // Chunk extensions (`;name=value`) are allowed and ignored.
    if !rest.is_empty() && !matches!(rest.trim_ascii_start().first(), Some(b';')) {
        return Err("bad chunk size".to_owned());
    }
    let size = line[..digits]
        .iter()
        .fold(0u64, |n, b| n * 16 + u64::from(hex(*b)));
    Ok(Some((size, end + 1)))
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

/// Errors while reading a body.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The client closed the connection before the end of the body.
    #[error("connection closed in the body")]
    Eof,
    /// Bad chunked framing.
    #[error("{0}")]
    Framing(String),
    /// No byte of the body for `header_timeout_s`, or the body slower
    /// than [`MIN_BODY_RATE`] after its first `header_timeout_s`.
    #[error("body timed out")]
    Timeout,
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The body of a request as the handler reads it: bytes come from the
/// connection's buffer, then from the socket, decoded from their framing.
struct BodyReader<'a> {
    stream: &'a TcpStream,
    buf: &'a mut BytesMut,
    state: &'a mut BodyState,
    /// `Expect: 100-continue` still to be answered before reading.
    expect_continue: bool,
    /// Set when the whole body has been read.
    done: &'a AtomicBool,
    timeout: Duration,
    failed: bool,
    /// When the body's reading started ([`MIN_BODY_RATE`]).
    started: tokio::time::Instant,
    /// Body bytes read from the socket so far.
    received: u64,
}

impl<'a> BodyReader<'a> {
    /// The next piece of the body, `None` at its end.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        loop {
            match *self.state {
                BodyState::Done => {
                    self.finish();
                    return Ok(None);
                }
                BodyState::Length(0) => *self.state = BodyState::Done,
                BodyState::Length(left) => {
                    if let Some(b) = self.take(left) {
                        *self.state = BodyState::Length(left - b.len() as u64);
                        return Ok(Some(b));
                    }
                    self.fill(left).await?;
                }
                BodyState::Chunked(Chunk::Size) => {
                    match chunk_size_line(self.buf).map_err(BodyError::Framing)? {
                        Some((0, n)) => {
                            self.buf.advance(n);
                            *self.state = BodyState::Chunked(Chunk::Trailers);
                        }
                        Some((size, n)) => {
                            self.buf.advance(n);
                            *self.state = BodyState::Chunked(Chunk::Data(size));
                        }
                        None => self.fill(HEAD_READ as u64).await?,
                    }
                }
                BodyState::Chunked(Chunk::Data(left)) => {
                    if let Some(b) = self.take(left) {
                        let left = left - b.len() as u64;
                        *self.state = BodyState::Chunked(if left == 0 {
                            Chunk::DataEnd
                        } else {
                            Chunk::Data(left)
                        });
                        return Ok(Some(b));
                    }
                    self.fill(left).await?;
                }
                BodyState::Chunked(Chunk::DataEnd) => {
                    if self.buf.len() >= 2 {
                        if &self.buf[..2] != b"\r\n" {
                            return Err(BodyError::Framing("no CRLF after chunk data".into()));
                        }
                        self.buf.advance(2);
                        *self.state = BodyState::Chunked(Chunk::Size);
                    } else {
                        self.fill(2).await?;
                    }
                }
                BodyState::Chunked(Chunk::Trailers) => match memchr::memchr(b'\n', self.buf) {
                    Some(end) => {
                        let empty = end == 0 || (end == 1 && self.buf[0] == b'\r');
                        self.buf.advance(end + 1);
                        if empty {
                            *self.state = BodyState::Done;
                        }
                    }
                    None if self.buf.len() > MAX_CHUNK_LINE => {
                        return Err(BodyError::Framing("trailer line too long".into()));
                    }
                    None => self.fill(HEAD_READ as u64).await?,
                },
            }
        }
    }

    /// Up to `left` buffered bytes, if any are buffered.
    fn take(&mut self, left: u64) -> Option<Bytes> {
        if self.buf.is_empty() {
            return None;
        }
        let n = usize::try_from(left)
            .unwrap_or(usize::MAX)
            .min(self.buf.len());
        Some(self.buf.split_to(n).freeze())
    }

    /// The body is read: the buffer goes unless it holds a next request.
    fn finish(&mut self) {
        self.done.store(true, Ordering::Release);
        if self.buf.is_empty() {
            *self.buf = BytesMut::new();
        }
    }

    /// Reads more of the body (about `want` bytes) into the buffer.
    async fn fill(&mut self, want: u64) -> Result<(), BodyError> {
        if self.expect_continue {
            self.expect_continue = false;
            write_all_progress(self.stream, b"HTTP/1.1 100 Continue\r\n\r\n", self.timeout).await?;
        }
        let want = usize::try_from(want)
            .unwrap_or(BODY_READ)
            .clamp(1, BODY_READ);
        self.buf.reserve(want);
        let earned = Duration::from_secs_f64(self.received as f64 / MIN_BODY_RATE);
        let deadline = self.started + self.timeout + earned;
        let wait = self
            .timeout
            .min(deadline.saturating_duration_since(tokio::time::Instant::now()));
        let n = tokio::time::timeout(wait, read_some(self.stream, self.buf))
            .await
            .map_err(|_| BodyError::Timeout)?
            .map_err(BodyError::Io)?;
        if n == 0 {
            return Err(BodyError::Eof);
        }
        self.received += n as u64;
        Ok(())
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, BodyError>> + Send + 'a {
        futures::stream::unfold(self, |mut r| async move {
            if r.failed {
                return None;
            }
            match r.next_chunk().await {
                Ok(Some(b)) => Some((Ok(b), r)),
                Ok(None) => None,
                Err(e) => {
                    r.failed = true;
                    Some((Err(e), r))
                }
            }
        })
    }
}

/// Reads what the socket has (waiting until it has something) into `buf`'s
/// spare capacity: the number of bytes, 0 at end of stream.
async fn read_some(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    loop {
        stream.readable().await?;
        match stream.try_read_buf(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Writes all of `bytes` through a shared socket, each step within `timeout`.
async fn write_all_progress(
    stream: &TcpStream,
    mut bytes: &[u8],
    timeout: Duration,
) -> io::Result<()> {
    while !bytes.is_empty() {
        tokio::time::timeout(timeout, stream.writable())
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??;
        match stream.try_write(bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Polls the handler; once the body is read, also watches the socket for
/// the client going away (end of stream or error), which cancels the
/// request (`None`). Bytes of a pipelined next request stop the watch and
/// stay in the socket.
struct Parked<'a, F> {
    handler: Pin<Box<F>>,
    stream: &'a TcpStream,
    body_done: &'a AtomicBool,
    watch: bool,
}

impl<F: Future> Future for Parked<'_, F> {
    type Output = Option<F::Output>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(out) = self.handler.as_mut().poll(cx) {
            return Poll::Ready(Some(out));
        }
        if self.watch && self.body_done.load(Ordering::Acquire) {
            let mut one = [0u8; 1];
            let mut probe = tokio::io::ReadBuf::new(&mut one);
            match self.stream.poll_peek(cx, &mut probe) {
                Poll::Ready(Ok(0)) | Poll::Ready(Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => self.watch = false,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

impl Connection {
    async fn run(self) {
        let Connection {
            mut stream,
            remote,
            app,
            mut stop,
            _open,
        } = self;
        let timeouts = app.settings.timeouts;
        // Bytes read past the last request (pipelining); empty, and
        // unallocated, while the connection waits.
        let mut buf = BytesMut::new();
        loop {
            // 1. Wait for a request, with nothing allocated.
            // Readiness can be left over from the last read: only bytes
            // end the wait.
            let idle_until = tokio::time::Instant::now() + timeouts.keep_alive;
            while buf.is_empty() {
                tokio::select! {
                    ready = stream.readable() => if ready.is_err() { return },
                    () = tokio::time::sleep_until(idle_until) => return,
                    _ = stop.wait_for(|s| *s) => return,
                }
                buf.reserve(HEAD_READ);
                match stream.try_read_buf(&mut buf) {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => buf = BytesMut::new(),
                    Err(_) => return,
                }
            }
            // 2. Its head, within the header timeout.
            let head = match tokio::time::timeout(timeouts.header, read_head(&stream, &mut buf))
                .await
            {
                Ok(Ok(Some(head))) => head,
                Ok(Ok(None)) => return,
                Ok(Err(ReadHeadError::Io(e))) => {
                    tracing::debug!(target: "CONTAINER", remote = %remote, "connection closed in a request head: {e}");
                    return;
                }
                Ok(Err(ReadHeadError::Head(e))) => {
                    tracing::info!(target: "REQUEST.TRIMMED", remote = %remote, status = e.status(), "refused: {e}");
                    let _ = write_plain(&mut stream, e.status(), &e.to_string(), timeouts).await;
                    return;
                }
                // Readiness without bytes, then nothing: the connection is
                // idle after all.
                Err(_) if buf.is_empty() => continue,
                Err(_) => {
                    {
                        tracing::info!(target: "REQUEST.TRIMMED", remote = %remote, status = 408, "refused: request head not received within {} s", timeouts.header.as_secs());
                        let _ =
                            write_plain(&mut stream, 408, "request head timed out", timeouts).await;
                    }
                    return;
                }
            };
            // 3. The handler, with the body as a lazy stream.
            let Head {
                method,
                path,
                query,
                headers,
                framing,
                keep_alive,
                expect_continue,
                http10,
            } = head;
            let head_only = method == Method::HEAD;
            let mut state = match framing {
                Framing::Length(0) => BodyState::Done,
                Framing::Length(n) => BodyState::Length(n),
                Framing::Chunked => BodyState::Chunked(Chunk::Size),
            };
            if state == BodyState::Done && buf.is_empty() {
                buf = BytesMut::new();
            }
            let body_done = AtomicBool::new(state == BodyState::Done);
            let req = Request {
                remote: Some(remote),
                method,
                path,
                query,
                headers,
            };
            let answer = {
                let body = BodyReader {
                    stream: &stream,
                    buf: &mut buf,
                    state: &mut state,
                    expect_continue,
                    done: &body_done,
                    timeout: timeouts.header,
                    failed: false,
                    started: tokio::time::Instant::now(),
                    received: 0,
                }
                .into_stream();
                // Boxed: the handler's future keeps room for its arguments
                // while it waits, and the stream (with its read state) is
                // needed only until the body is read.
                let body = Box::pin(body);
                let handler = Box::pin(super::respond(app.clone(), req, body));
                Parked {
                    handler,
                    stream: &stream,
                    body_done: &body_done,
                    watch: true,
                }
                .await
            };
            let Some(res) = answer else {
                // The client went away while its request waited.
                return;
            };
            // 4. The answer; the connection stays open only if the body was
            // read to its end and nobody asked to close.
            let keep = keep_alive && state == BodyState::Done && !*stop.borrow();
            if write_response(&mut stream, &res, keep, http10, head_only, timeouts)
                .await
                .is_err()
                || !keep
            {
                return;
            }
            drop(res);
            if buf.is_empty() {
                buf = BytesMut::new();
            }
        }
    }
}

enum ReadHeadError {
    Io(io::Error),
    Head(HeadError),
}

/// Reads until `buf` starts with a whole request head and takes it out.
/// `Ok(None)`: the client closed the connection between requests.
async fn read_head(stream: &TcpStream, buf: &mut BytesMut) -> Result<Option<Head>, ReadHeadError> {
    loop {
        if !buf.is_empty() {
            if let Some((head, len)) = parse_head(buf).map_err(ReadHeadError::Head)? {
                buf.advance(len);
                return Ok(Some(head));
            }
        }
        if buf.capacity() - buf.len() < HEAD_READ / 2 {
            buf.reserve(HEAD_READ);
        }
        match read_some(stream, buf).await {
            Ok(0) if buf.iter().all(|b| *b == b'\r' || *b == b'\n') => return Ok(None),
            Ok(0) => {
                return Err(ReadHeadError::Io(io::Error::from(
                    io::ErrorKind::UnexpectedEof,
                )))
            }
            Ok(_) => {}
            Err(e) => return Err(ReadHeadError::Io(e)),
        }
    }
}

/// The status line and header fields of an answer.
fn response_head(res: &EasResponse, keep: bool, http10: bool) -> Vec<u8> {
    use std::fmt::Write as _;
    let status = warp::http::StatusCode::from_u16(res.http_status)
        .unwrap_or(warp::http::StatusCode::INTERNAL_SERVER_ERROR);
    let mut h = String::with_capacity(160 + res.headers.len() * 48);
    let _ = write!(
        h,
        "HTTP/1.1 {} {}\r\ndate: {}\r\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        httpdate::fmt_http_date(std::time::SystemTime::now())
    );
    if let Some(ct) = res.content_type {
        let _ = write!(h, "content-type: {ct}\r\n");
    }
    for (name, value) in &res.headers {
        // A value that would break the head is left out (as `http` refuses it).
        if HeaderValue::from_str(value).is_ok() && HeaderName::from_bytes(name.as_bytes()).is_ok() {
            let _ = write!(h, "{name}: {value}\r\n");
        }
    }
    let bodiless = matches!(status.as_u16(), 100..=199 | 204 | 304);
    if !bodiless {
        let _ = write!(h, "content-length: {}\r\n", res.body_len());
    }
    if !keep {
        h.push_str("connection: close\r\n");
    } else if http10 {
        h.push_str("connection: keep-alive\r\n");
    }
    h.push_str("\r\n");
    h.into_bytes()
}

async fn write_response(
    stream: &mut TcpStream,
    res: &EasResponse,
    keep: bool,
    http10: bool,
    head_only: bool,
    timeouts: ConnTimeouts,
) -> io::Result<()> {
    let mut head = response_head(res, keep, http10);
    let bodiless = head_only || matches!(res.http_status, 100..=199 | 204 | 304);
    if bodiless {
        write_progress(stream, &head, timeouts).await
    } else if res.body.len() <= ONE_WRITE {
        head.extend_from_slice(&res.body);
        write_progress(stream, &head, timeouts).await?;
        write_tail(stream, res, timeouts).await
    } else {
        write_progress(stream, &head, timeouts).await?;
        write_progress(stream, &res.body, timeouts).await?;
        write_tail(stream, res, timeouts).await
    }
}

/// Writes an answer's streamed tail, each chunk as it comes and within the
/// header timeout (a device that stops reading holds one chunk, then its
/// connection is closed). A tail that fails or does not give exactly the
/// bytes announced is an error: the caller closes the connection, so the
/// device sees fewer bytes than `Content-Length`.
async fn write_tail(
    stream: &mut TcpStream,
    res: &EasResponse,
    timeouts: ConnTimeouts,
) -> io::Result<()> {
    use futures::StreamExt as _;
    let Some(tail) = res.tail.as_ref() else {
        return Ok(());
    };
    let broken = |why: String| io::Error::other(why);
    let mut source = tail
        .take()
        .ok_or_else(|| broken("answer tail already written".to_owned()))?;
    let mut sent: u64 = 0;
    while let Some(chunk) = source.next().await {
        let chunk = chunk.map_err(|e| {
            tracing::warn!(target: "REQUEST.TRIMMED", sent, announced = tail.len(), "answer broken off: {e}");
            broken(e)
        })?;
        sent += chunk.len() as u64;
        if sent > tail.len() {
            tracing::warn!(target: "REQUEST.TRIMMED", sent, announced = tail.len(), "answer longer than announced: broken off");
            return Err(broken("answer longer than announced".to_owned()));
        }
        write_progress(stream, &chunk, timeouts).await?;
    }
    if sent != tail.len() {
        tracing::warn!(target: "REQUEST.TRIMMED", sent, announced = tail.len(), "answer shorter than announced: broken off");
        return Err(broken("answer shorter than announced".to_owned()));
    }
    Ok(())
}

/// Writes `bytes`, each 64 KiB within the header timeout.
async fn write_progress(
    stream: &mut TcpStream,
    bytes: &[u8],
    timeouts: ConnTimeouts,
) -> io::Result<()> {
    for part in bytes.chunks(BODY_READ) {
        tokio::time::timeout(timeouts.header, stream.write_all(part))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))??;
    }
    Ok(())
}

/// A short text answer from the connection loop itself, then close.
async fn write_plain(
    stream: &mut TcpStream,
    status: u16,
    reason: &str,
    timeouts: ConnTimeouts,
) -> io::Result<()> {
    let res = EasResponse {
        http_status: status,
        content_type: Some("text/plain; charset=utf-8"),
        headers: Vec::new(),
        body: format!("{reason}\n").into_bytes(),
        tail: None,
    };
    write_response(stream, &res, false, false, false, timeouts).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
    use super::*;

    fn head(raw: &str) -> Result<Option<(Head, usize)>, HeadError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn request_line_headers_and_framing() {
        let raw = "POST /Microsoft-Server-ActiveSync?Cmd=Ping&User=a HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nX-A: 1\r\nX-A: 2\r\n\r\nbody";
        let (h, len) = head(raw).unwrap().unwrap();
        assert_eq!(len, raw.len() - 4);
        assert_eq!(h.method, Method::POST);
        assert_eq!(h.path, "/Microsoft-Server-ActiveSync");
        assert_eq!(h.query, "Cmd=Ping&User=a");
        assert_eq!(h.framing, Framing::Length(12));
        assert_eq!(h.headers.get_all("x-a").iter().count(), 2);
        let (h, _) = head("GET HTTP://mail.example.test/a/b?q=1 HTTP/1.1\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.path.as_str(), h.query.as_str()), ("/a/b", "q=1"));
        assert!(h.keep_alive && !h.http10 && !h.expect_continue);
    }

    #[test]
    fn only_a_real_other_version_is_505() {
        assert_eq!(
            head("GET / HTTP/2.0\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        assert_eq!(
            head("GET / HTTP/3\r\n\r\n").unwrap_err(),
            HeadError::Version
        );
        // A space in the target, a missing version, junk: malformed (400).
        for raw in [
            "POST /Microsoft-Server-ActiveSync?@@@not base64@@@ HTTP/1.1\r\n\r\n",
            "POST /a b HTTP/1.1\r\n\r\n",
            "GET / HTTX/1.1\r\n\r\n",
            "GET / HTTP/\r\n\r\n",
        ] {
            let err = head(raw).unwrap_err();
            assert!(matches!(err, HeadError::Malformed(_)), "{raw:?}: {err:?}");
        }
    }

    #[test]
    fn incomplete_heads_wait_and_oversized_ones_are_refused() {
        assert!(head("POST / HTTP/1.1\r\nHost: x\r\n").unwrap().is_none());
        assert!(head("").unwrap().is_none());
        let long = format!("GET / HTTP/1.1\r\nX: {}\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(head(&long).unwrap_err(), HeadError::TooLarge);
        let mut many = "GET / HTTP/1.1\r\n".to_owned();
        for i in 0..=MAX_HEADERS {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(head(&many).unwrap_err(), HeadError::TooLarge);
    }

    #[test]
    fn keep_alive_by_version_and_connection_tokens() {
        let ka = |raw: &str| head(raw).unwrap().unwrap().0.keep_alive;
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n"));
        assert!(!ka(
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n"
        ));
        assert!(
            head("POST / HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n")
                .unwrap()
                .unwrap()
                .0
                .expect_continue
        );
    }

    #[test]
    fn bad_framing_is_refused() {
        let err = |raw: &str| head(raw).unwrap_err();
        assert!(matches!(
            err("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            err("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            err("POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n"),
            HeadError::Coding(_)
        ));
        assert!(matches!(
            err("POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            HeadError::Coding(_)
        ));
        assert!(matches!(
            err("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert_eq!(err("GET / HTTP/2.0\r\n\r\n"), HeadError::Version);
        assert!(matches!(
            err("GET x HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        assert!(matches!(
            err("G\0T / HTTP/1.1\r\n\r\n"),
            HeadError::Malformed(_)
        ));
        // Equal repeated lengths are one length.
        let (h, _) = head("POST / HTTP/1.1\r\nContent-Length: 3, 3\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(h.framing, Framing::Length(3));
    }

    #[test]
    fn chunk_size_lines() {
        assert_eq!(chunk_size_line(b"1a\r\n"), Ok(Some((26, 4))));
        assert_eq!(chunk_size_line(b"0;ext=1\r\nrest"), Ok(Some((0, 9))));
        assert_eq!(chunk_size_line(b"FF\n"), Ok(Some((255, 3))));
        assert_eq!(chunk_size_line(b"1a"), Ok(None));
        assert!(chunk_size_line(b"zz\r\n").is_err());
        assert!(chunk_size_line(b"1 2\r\n").is_err());
        assert!(chunk_size_line(b"1234567890abcdef0\r\n").is_err());
        assert!(chunk_size_line(&[b'1'; MAX_CHUNK_LINE + 1]).is_err());
    }

    #[test]
    fn answers_carry_length_and_connection() {
        let res = EasResponse {
            http_status: 200,
            content_type: Some("application/vnd.ms-sync.wbxml"),
            headers: vec![("MS-Server-ActiveSync", "14.1".to_owned())],
            body: vec![1, 2, 3],
            tail: None,
        };
        let h = String::from_utf8(response_head(&res, true, false)).unwrap();
        assert!(h.starts_with("HTTP/1.1 200 OK\r\n"), "{h}");
        assert!(h.contains("\r\ncontent-length: 3\r\n"), "{h}");
        assert!(h.contains("\r\nMS-Server-ActiveSync: 14.1\r\n"), "{h}");
        assert!(!h.contains("connection:"), "{h}");
        assert!(h.ends_with("\r\n\r\n"));
        let h = String::from_utf8(response_head(&res, false, false)).unwrap();
        assert!(h.contains("\r\nconnection: close\r\n"), "{h}");
        let h = String::from_utf8(response_head(&res, true, true)).unwrap();
        assert!(h.contains("\r\nconnection: keep-alive\r\n"), "{h}");
    }
}
