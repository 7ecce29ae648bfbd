//! Attachments read from IMAP a chunk at a time, for ItemOperations Fetch
//! by FileReference and GetAttachment: memory per request stays at a few
//! chunks whatever the attachment's size.
//!
//! Two passes over the message, each `UID FETCH uid BODY.PEEK[]<offset.len>`
//! a chunk (`[imap] stream_chunk_bytes`) at a time: the first ([`locate`])
//! makes the message's skeleton (`email::skeleton`) and finds in it the
//! attachment, where its body lies and its decoded size (which the
//! answer's `Content-Length`, the multipart table or the inline `Data`'s
//! length need before the first byte goes out); the second ([`stream`])
//! reads that body alone, undoes its transfer encoding as it comes
//! (`email::transfer`), cuts it to the byte range asked for, and hands it
//! to the connection loop as the answer's tail ([`super::Tail`]). A byte
//! range is cut from the decoded bytes: a base64 body is read from its
//! start (its line breaks make decoded offsets unknown in it), a range of
//! an unencoded one is read alone.
//!
//! The second pass holds no IMAP connection while its bytes go out (a
//! phone may take minutes): each chunk is read on a pooled connection
//! taken for it ([`Source`]; the user's idle one that has the folder
//! selected, when there is one) and given back at once, the next chunk
//! read while the one before is written. Each such connection checks
//! first that the folder's UIDVALIDITY is still the one the message was
//! found under: a folder deleted and created again, or a message expunged,
//! meanwhile fails the stream (the answer is broken off short of its
//! `Content-Length`), never serves another message's bytes.

use std::collections::VecDeque;

use bytes::Bytes;

use super::TailStream;
use crate::backends::imap::{ImapError, ImapPool, PooledSession};
use crate::config::Secret;
use crate::email::skeleton::{Leaf, Scanner};
use crate::email::transfer::{Base64Encoder, Decoder, Encoding};
use crate::email::{locate_attachment, AttachmentPlace};
use crate::session::{Caller, EasServices};

/// Bytes of each body kept in the skeleton (enough for mail-parser to see
/// its part for what it is).
pub const KEEP: usize = 2048;

/// What the first pass found.
#[derive(Debug)]
pub enum Located {
    /// The attachment, and where it lies.
    Found(AttachmentPlace),
    /// The message is there but has no attachment with that number (or a
    /// shape that cannot be read).
    NoAttachment,
}

/// The first pass: the place of attachment `index` of message `uid` of
/// folder `raw`. A message that is not there is `ImapError::NotFound`; a
/// skeleton past `max_message` bytes (`[imap] max_message_bytes`: a
/// message of very many parts) is `ImapError::TooLarge`. The message
/// itself may be of any size: it is never held.
pub async fn locate(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
    index: u32,
    max_message: u64,
) -> Result<Located, ImapError> {
    let meta = imap.fetch_meta(raw, &[uid]).await?;
    let size = meta
        .iter()
        .find(|m| m.uid == uid)
        .map(|m| m.size)
        .ok_or_else(|| ImapError::NotFound(format!("UID {uid} in {raw}")))?;
    let scanned = read_skeleton(imap, (raw, uid, size), Scanner::new(KEEP), max_message).await?;
    let Some(Scanned { skel, leaves, .. }) = scanned else {
        return Ok(Located::NoAttachment);
    };
    Ok(match locate_attachment(&skel, &leaves, index) {
        Some(place) => Located::Found(place),
        None => Located::NoAttachment,
    })
}

/// A message read through a [`Scanner`].
#[derive(Debug)]
pub struct Scanned {
    /// Its skeleton.
    pub skel: Vec<u8>,
    /// Its leaves.
    pub leaves: Vec<Leaf>,
    /// It is UTF-8 text without NUL (`Scanner::is_utf8_text`).
    pub utf8: bool,
}

/// Reads message `uid` of `raw` (`size` bytes) a chunk at a time through
/// `scanner`: its skeleton and leaves, `None` when it cannot be scanned
/// (`email::skeleton::ScanError`), `ImapError::TooLarge` as soon as the
/// skeleton passes `max_skeleton` bytes.
pub async fn read_skeleton(
    imap: &mut PooledSession,
    (raw, uid, size): (&str, u32, u32),
    mut scanner: Scanner,
    max_skeleton: u64,
) -> Result<Option<Scanned>, ImapError> {
    let chunk_bytes = imap.config().stream_chunk_bytes;
    let mut offset: u32 = 0;
    while offset < size {
        let chunk = imap
            .fetch_partial(raw, uid, "", offset, chunk_bytes.min(size - offset))
            .await?;
        if chunk.is_empty() {
            break;
        }
        scanner.feed(&chunk);
        offset = offset.saturating_add(chunk.len() as u32);
        if scanner.skeleton_len() as u64 > max_skeleton {
            return Err(ImapError::TooLarge {
                size: scanner.skeleton_len() as u64,
                limit: max_skeleton,
            });
        }
    }
    let utf8 = scanner.is_utf8_text();
    Ok(scanner
        .finish()
        .ok()
        .map(|(skel, leaves)| Scanned { skel, leaves, utf8 }))
}

/// One attachment (or a byte range of one) to stream.
#[derive(Debug, Clone)]
pub struct Piece {
    /// Its folder.
    pub raw: String,
    /// Its folder's UIDVALIDITY when the message was found (checked
    /// again on each connection a chunk is read with).
    pub uidvalidity: u32,
    /// Its message.
    pub uid: u32,
    /// Where it lies.
    pub place: AttachmentPlace,
    /// Decoded bytes skipped first (a Range's start).
    pub skip: u64,
    /// Decoded bytes given (a Range's length).
    pub take: u64,
    /// Given base64-encoded (the inline `Data`), not raw.
    pub base64: bool,
}

impl Piece {
    /// The bytes it gives.
    pub fn len(&self) -> u64 {
        if self.base64 {
            Base64Encoder::encoded_len(self.take)
        } else {
            self.take
        }
    }

    /// True when it gives no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where a stream takes its IMAP connections: the user's pool, one
/// connection per chunk, given back before the chunk goes out, so that a
/// slow device holds none of the user's connections while it downloads.
#[derive(Clone)]
pub struct Source {
    pool: std::sync::Arc<ImapPool>,
    user: String,
    /// `None`: through the master user (`[imap] master_for_requests`).
    password: Option<Secret>,
    /// The device the request came from (logins made for a chunk name it).
    client: Option<crate::origin::ClientAddr>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// The connections of `caller`'s requests.
    pub fn of(eas: &EasServices, caller: &Caller<'_>) -> Source {
        let master = eas.imap.config().master_for_requests;
        Source {
            pool: eas.imap.clone(),
            user: caller.user.to_owned(),
            password: (!master).then(|| caller.password.clone()),
            client: crate::origin::current(),
        }
    }

    /// A connection, preferably one that has `raw` selected.
    async fn take(&self, raw: &str) -> Result<PooledSession, ImapError> {
        let mailboxes = [raw.to_owned()];
        let get = async {
            match &self.password {
                Some(p) => self.pool.get_selecting(&self.user, p, &mailboxes).await,
                None => self.pool.get_master_selecting(&self.user, &mailboxes).await,
            }
        };
        match self.client {
            Some(c) => crate::origin::scope(c, get).await,
            None => get.await,
        }
    }

    /// Bytes `offset..offset + len` of message `uid` of `raw`, on a
    /// connection taken for them and given back at once, once `raw`'s
    /// UIDVALIDITY is checked to be still `uidvalidity` (a folder deleted
    /// and created again numbers its messages from 1 again: another
    /// message would be read under the same UID).
    async fn read(
        &self,
        raw: &str,
        (uidvalidity, uid): (u32, u32),
        offset: u32,
        len: u32,
    ) -> Result<Vec<u8>, String> {
        let mut imap = self.take(raw).await.map_err(|e| format!("IMAP: {e}"))?;
        let now = match imap.selected_uidvalidity(raw) {
            Some(v) => v,
            None => imap
                .writable_uidvalidity(raw)
                .await
                .map_err(|e| format!("IMAP: {e}"))?,
        };
        if now != uidvalidity {
            return Err(format!(
                "{raw} was re-created (UIDVALIDITY {uidvalidity}, now {now}): the message is gone"
            ));
        }
        imap.fetch_partial(raw, uid, "", offset, len)
            .await
            .map_err(|e| format!("IMAP: {e}"))
    }
}

/// A chunk read on a task of its own while the one before goes out; its
/// task ends with it (a dropped stream stops its reading).
struct Ahead {
    offset: u64,
    task: tokio::task::JoinHandle<Result<Vec<u8>, String>>,
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reading of one piece.
struct Cursor {
    piece: Piece,
    /// Next byte of the message to read.
    offset: u64,
    /// Decoded bytes seen so far.
    decoded: u64,
    /// Bytes given so far (before encoding).
    given: u64,
    decoder: Decoder,
    encoder: Option<Base64Encoder>,
    /// The next chunk, being read.
    ahead: Option<Ahead>,
    /// Bytes read per IMAP command (`[imap] stream_chunk_bytes`).
    chunk: u32,
    done: bool,
}

impl Cursor {
    fn new(piece: Piece, chunk: u32) -> Cursor {
        // An unencoded body's decoded offsets are its offsets: a range is
        // read alone.
        let (offset, decoded) = if piece.place.encoding == Encoding::Identity {
            (piece.place.start + piece.skip, piece.skip)
        } else {
            (piece.place.start, 0)
        };
        Cursor {
            decoder: Decoder::new(piece.place.encoding),
            encoder: piece.base64.then(Base64Encoder::default),
            piece,
            offset,
            decoded,
            given: 0,
            ahead: None,
            chunk,
            done: false,
        }
    }

    /// Keeps of `decoded` (bytes `self.decoded..`) what falls in the range,
    /// appending it (encoded when asked) to `out`.
    fn give(&mut self, decoded: &[u8], out: &mut Vec<u8>) {
        let at = self.decoded;
        self.decoded += decoded.len() as u64;
        let from = self.piece.skip.saturating_sub(at).min(decoded.len() as u64) as usize;
        let left = self.piece.take - self.given;
        let to = (from as u64 + left).min(decoded.len() as u64) as usize;
        let kept = &decoded[from..to];
        self.given += kept.len() as u64;
        match self.encoder.as_mut() {
            Some(e) => e.feed(kept, out),
            None => out.extend_from_slice(kept),
        }
    }

    /// The message bytes still to read from `offset`, at most a chunk
    /// (0 once the body is read, or all of the range is given).
    fn want(&self, offset: u64, given: u64) -> u32 {
        let end = self.piece.place.end;
        if offset >= end || given >= self.piece.take {
            return 0;
        }
        // An unencoded body's chunk ends with the range.
        let end = if self.piece.place.encoding == Encoding::Identity {
            end.min(self.piece.place.start + self.piece.skip + self.piece.take)
        } else {
            end
        };
        end.saturating_sub(offset).min(u64::from(self.chunk)) as u32
    }

    /// Starts reading the chunk at `offset` on a task of its own.
    fn read_ahead(&mut self, source: &Source, offset: u64, want: u32) {
        let Ok(at) = u32::try_from(offset) else {
            return;
        };
        let (source, raw) = (source.clone(), self.piece.raw.clone());
        let id = (self.piece.uidvalidity, self.piece.uid);
        let task = tokio::spawn(async move { source.read(&raw, id, at, want).await });
        self.ahead = Some(Ahead { offset, task });
    }

    /// The next bytes of the piece; `None` once it is whole.
    async fn next(&mut self, source: &Source) -> Result<Option<Vec<u8>>, String> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::new();
        let want = self.want(self.offset, self.given);
        if want > 0 {
            let chunk = match self.ahead.take() {
                Some(mut a) if a.offset == self.offset => (&mut a.task)
                    .await
                    .map_err(|e| format!("chunk reading failed: {e}"))??,
                _ => {
                    let offset =
                        u32::try_from(self.offset).map_err(|_| "offset past 4 GiB".to_owned())?;
                    let id = (self.piece.uidvalidity, self.piece.uid);
                    source.read(&self.piece.raw, id, offset, want).await?
                }
            };
            if chunk.is_empty() {
                return Err("the message ended before the attachment".to_owned());
            }
            self.offset += chunk.len() as u64;
            let mut decoded = Vec::with_capacity(chunk.len());
            self.decoder.feed(&chunk, &mut decoded);
            drop(chunk);
            self.give(&decoded, &mut out);
            // The next chunk is read while this one goes out.
            let next = self.want(self.offset, self.given);
            if next > 0 {
                self.read_ahead(source, self.offset, next);
            }
            return Ok(Some(out));
        }
        let mut rest = Vec::new();
        self.decoder.finish(&mut rest);
        self.give(&rest, &mut out);
        if let Some(e) = self.encoder.as_mut() {
            e.finish(&mut out);
        }
        self.done = true;
        if self.given != self.piece.take {
            return Err(format!(
                "attachment gave {} bytes, {} announced",
                self.given, self.piece.take
            ));
        }
        Ok(Some(out))
    }
}

/// A stretch of a streamed answer.
#[derive(Debug, Clone)]
pub enum Segment {
    /// Bytes already made (WBXML between inline `Data`s).
    Bytes(Vec<u8>),
    /// An attachment read from IMAP.
    Piece(Piece),
}

impl Segment {
    /// The bytes it gives.
    pub fn len(&self) -> u64 {
        match self {
            Segment::Bytes(b) => b.len() as u64,
            Segment::Piece(p) => p.len(),
        }
    }

    /// True when it gives no byte.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

struct Reader {
    source: Source,
    pieces: VecDeque<Segment>,
    current: Option<Cursor>,
    failed: bool,
}

impl Reader {
    async fn next(&mut self) -> Option<Result<Bytes, String>> {
        if self.failed {
            return None;
        }
        loop {
            if self.current.is_none() {
                match self.pieces.pop_front()? {
                    Segment::Bytes(b) if b.is_empty() => continue,
                    Segment::Bytes(b) => return Some(Ok(Bytes::from(b))),
                    Segment::Piece(p) => {
                        let chunk = self.source.pool.config().stream_chunk_bytes;
                        self.current = Some(Cursor::new(p, chunk))
                    }
                }
            }
            let cursor = self.current.as_mut()?;
            match cursor.next(&self.source).await {
                Ok(Some(bytes)) if bytes.is_empty() => continue,
                Ok(Some(bytes)) => return Some(Ok(Bytes::from(bytes))),
                Ok(None) => self.current = None,
                Err(e) => {
                    self.failed = true;
                    return Some(Err(e));
                }
            }
        }
    }
}

/// The second pass: `pieces` one after the other, read a chunk at a time
/// on connections taken from `source` for each chunk (none is held
/// between chunks), the next chunk read while the one before goes out.
pub fn stream(source: Source, pieces: Vec<Segment>) -> TailStream {
    let reader = Reader {
        source,
        pieces: pieces.into(),
        current: None,
        failed: false,
    };
    Box::pin(futures::stream::unfold(reader, |mut r| async move {
        let item = r.next().await?;
        Some((item, r))
    }))
}

/// Reads one attachment whole into memory (for callers without HTTP, such
/// as the in-process tests of `item_operations`); a failure of the
/// stream is an IMAP failure the device retries.
pub async fn read_all(source: Source, piece: Piece) -> Result<Vec<u8>, super::CommandError> {
    use futures::StreamExt as _;
    let mut s = stream(source, vec![Segment::Piece(piece)]);
    let mut out = Vec::new();
    while let Some(chunk) = s.next().await {
        let chunk = chunk.map_err(|reason| super::CommandError::BackendFailed {
            backend: "imap",
            kind: "unavailable",
            reason,
        })?;
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}
