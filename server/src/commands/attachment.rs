//! Attachments read from IMAP a chunk at a time, for ItemOperations Fetch
//! by FileReference and GetAttachment: memory per request stays at a few
//! chunks whatever the attachment's size.
//!
//! Two passes over the message, each `UID FETCH uid BODY.PEEK[]<offset.CHUNK>`
//! a chunk at a time: the first ([`locate`]) makes the message's skeleton
//! (`email::skeleton`) and finds in it the attachment, where its body lies
//! and its decoded size (which the answer's `Content-Length`, the
//! multipart table or the inline `Data`'s length need before the first
//! byte goes out); the second ([`stream`]) reads that body alone, undoes
//! its transfer encoding as it comes (`email::transfer`), cuts it to the
//! byte range asked for, and hands it to the connection loop as the
//! answer's tail ([`super::Tail`]). A byte range is cut from the decoded
//! bytes: a base64 body is read from its start (its line breaks make
//! decoded offsets unknown in it), a range of an unencoded one is read alone.

use std::collections::VecDeque;

use bytes::Bytes;

use super::TailStream;
use crate::backends::imap::{ImapError, PooledSession};
use crate::email::skeleton::Scanner;
use crate::email::transfer::{Base64Encoder, Decoder, Encoding};
use crate::email::{locate_attachment, AttachmentPlace};

/// Bytes of the message asked of IMAP at a time.
pub const CHUNK: u32 = 1024 * 1024;
/// Bytes of each body kept in the skeleton (enough for mail-parser to see
/// its part for what it is).
const KEEP: usize = 2048;

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
/// message over `max_message` bytes (`[imap] max_message_bytes`: Sync
/// lists no attachment of such a message, so no device holds a reference
/// to one) or a skeleton past it is `ImapError::TooLarge`. The reading
/// itself needs no such bound.
pub async fn locate(
    imap: &mut PooledSession,
    raw: &str,
    uid: u32,
    index: u32,
    max_message: u64,
) -> Result<Located, ImapError> {
    let max_skeleton = max_message;
    let meta = imap.fetch_meta(raw, &[uid]).await?;
    let size = meta
        .iter()
        .find(|m| m.uid == uid)
        .map(|m| m.size)
        .ok_or_else(|| ImapError::NotFound(format!("UID {uid} in {raw}")))?;
    if u64::from(size) > max_message {
        return Err(ImapError::TooLarge {
            size: u64::from(size),
            limit: max_message,
        });
    }
    let mut scanner = Scanner::new(KEEP);
    let mut offset: u32 = 0;
    while offset < size {
        let chunk = imap
            .fetch_partial(raw, uid, "", offset, CHUNK.min(size - offset))
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
    let Ok((skel, leaves)) = scanner.finish() else {
        return Ok(Located::NoAttachment);
    };
    Ok(match locate_attachment(&skel, &leaves, index) {
        Some(place) => Located::Found(place),
        None => Located::NoAttachment,
    })
}

/// One attachment (or a byte range of one) to stream.
#[derive(Debug, Clone)]
pub struct Piece {
    /// Its folder.
    pub raw: String,
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
    done: bool,
}

impl Cursor {
    fn new(piece: Piece) -> Cursor {
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

    /// The next bytes of the piece; `None` once it is whole.
    async fn next(&mut self, imap: &mut PooledSession) -> Result<Option<Vec<u8>>, String> {
        if self.done {
            return Ok(None);
        }
        let mut out = Vec::new();
        let end = self.piece.place.end;
        if self.offset < end && self.given < self.piece.take {
            let want = (end - self.offset).min(u64::from(CHUNK)) as u32;
            let offset = u32::try_from(self.offset).map_err(|_| "offset past 4 GiB".to_owned())?;
            let chunk = imap
                .fetch_partial(&self.piece.raw, self.piece.uid, "", offset, want)
                .await
                .map_err(|e| format!("IMAP: {e}"))?;
            if chunk.is_empty() {
                return Err("the message ended before the attachment".to_owned());
            }
            self.offset += chunk.len() as u64;
            let mut decoded = Vec::with_capacity(chunk.len());
            self.decoder.feed(&chunk, &mut decoded);
            drop(chunk);
            self.give(&decoded, &mut out);
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
    imap: PooledSession,
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
                    Segment::Piece(p) => self.current = Some(Cursor::new(p)),
                }
            }
            let cursor = self.current.as_mut()?;
            match cursor.next(&mut self.imap).await {
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

/// The second pass: `pieces` one after the other, read with `imap`
/// (which the stream holds until it ends).
pub fn stream(imap: PooledSession, pieces: Vec<Segment>) -> TailStream {
    let reader = Reader {
        imap,
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
pub async fn read_all(imap: PooledSession, piece: Piece) -> Result<Vec<u8>, super::CommandError> {
    use futures::StreamExt as _;
    let mut s = stream(imap, vec![Segment::Piece(piece)]);
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
