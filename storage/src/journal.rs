//! The embedded store's journal: what makes a group commit durable without
//! a durable redb commit.
//!
//! Why it exists: a durable redb commit writes every B-tree page the group
//! touched (events, expiry index, heads, and redb's own trees) and syncs
//! the file: 0.5–1 ms for one Sync window's append, which the window's
//! answer waits for (docs/BENCHMARKS.md, "Session 10"). Appending the rows
//! the group wrote to this file and syncing it costs one sequential write
//! and one `fdatasync` (about 0.1 ms). So each group commit is
//! (1) applied in a redb write transaction, (2) its rows appended here and
//! synced, (3) committed in redb without durability (visible to readers at
//! once, on disk at the next durable commit), and only then answered. From
//! time to time (a checkpoint) a durable redb commit writes everything to
//! the redb file and the journal is emptied. After a crash, opening the
//! store replays the journal's records into redb.
//!
//! Replay is exact because the journal holds rows, not operations: each
//! record lists the rows its group put or removed, in order. Every write
//! the store makes between two durable commits goes through the journal
//! (any other write transaction, an expiry pass or a schema change, is a
//! durable commit and empties the journal, under the same lock), so
//! replaying all records, in order, onto the state of the last durable
//! commit gives the state the acknowledged groups left, whether or not
//! some of them had already reached the redb file.
//!
//! Record layout: `OPJ1`, payload length (u32 LE), blake3 of the payload,
//! payload. Payload: rows, each `op` (1 put, 2 remove), table tag, key
//! length (u32 LE), key, and for a put the value length (u32 LE) and value.
//! A record cut short or whose digest does not match (a crash in the middle
//! of its write, never acknowledged) ends the journal: it and anything
//! after it are dropped.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"OPJ1";
const HEADER: usize = 4 + 4 + 32;
const OP_PUT: u8 = 1;
const OP_REMOVE: u8 = 2;

/// The rows one group commit wrote, in order, as a journal record carries
/// them.
#[derive(Default)]
pub(crate) struct Rows {
    buf: Vec<u8>,
}

impl Rows {
    /// `key` of `table` now holds `value`.
    pub(crate) fn put(&mut self, table: u8, key: &[u8], value: &[u8]) {
        self.head(OP_PUT, table, key);
        self.buf
            .extend_from_slice(&(value.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(value);
    }

    /// `key` of `table` was removed.
    pub(crate) fn remove(&mut self, table: u8, key: &[u8]) {
        self.head(OP_REMOVE, table, key);
    }

    fn head(&mut self, op: u8, table: u8, key: &[u8]) {
        self.buf.push(op);
        self.buf.push(table);
        self.buf
            .extend_from_slice(&(key.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(key);
    }

    /// No row written.
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
}

/// One row of a record, as replay applies it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Row<'a> {
    /// `key` of `table` holds `value`.
    Put {
        table: u8,
        key: &'a [u8],
        value: &'a [u8],
    },
    /// `key` of `table` is gone.
    Remove { table: u8, key: &'a [u8] },
}

/// The rows of one record's payload; `Err` on a payload that does not parse
/// (its digest matched, so the file was written by a different layout).
pub(crate) fn rows(payload: &[u8]) -> Result<Vec<Row<'_>>, String> {
    let bad = || "journal record: malformed row".to_owned();
    let mut out = Vec::new();
    let mut at = 0usize;
    let take = |at: &mut usize, n: usize| -> Result<&[u8], String> {
        let s = payload.get(*at..*at + n).ok_or_else(bad)?;
        *at += n;
        Ok(s)
    };
    let len = |s: &[u8]| -> Result<usize, String> {
        s.try_into()
            .map(u32::from_le_bytes)
            .map(|n| n as usize)
            .map_err(|_| bad())
    };
    while at < payload.len() {
        let op = take(&mut at, 1)?[0];
        let table = take(&mut at, 1)?[0];
        let klen = len(take(&mut at, 4)?)?;
        let key = take(&mut at, klen)?;
        match op {
            OP_PUT => {
                let vlen = len(take(&mut at, 4)?)?;
                let value = take(&mut at, vlen)?;
                out.push(Row::Put { table, key, value });
            }
            OP_REMOVE => out.push(Row::Remove { table, key }),
            _ => return Err(bad()),
        }
    }
    Ok(out)
}

/// The journal file (`opush.journal` beside `opush.redb`).
pub(crate) struct Journal {
    file: File,
    path: PathBuf,
    /// Bytes of whole records (where the next one is written).
    len: u64,
    /// When the oldest record not yet in a durable redb commit was written.
    since: Option<Instant>,
}

impl Journal {
    /// Opens (creating) the journal at `path` and reads its whole records,
    /// for replay. A torn tail is cut off the file.
    pub(crate) fn open(path: &Path) -> io::Result<(Journal, Vec<Vec<u8>>)> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let mut all = Vec::new();
        file.read_to_end(&mut all)?;
        let (records, len) = parse(&all);
        if len != all.len() as u64 {
            tracing::warn!(
                target: "storage",
                path = %path.display(),
                kept = len,
                dropped = all.len() as u64 - len,
                "journal: torn tail dropped (a write never acknowledged)"
            );
            file.set_len(len)?;
            file.sync_all()?;
        }
        let since = (len > 0).then(Instant::now);
        Ok((
            Journal {
                file,
                path: path.to_path_buf(),
                len,
                since,
            },
            records,
        ))
    }

    /// Appends `rows` as one record and syncs it. On failure the file is
    /// cut back to where the record started (it was never acknowledged).
    pub(crate) fn append(&mut self, rows: &Rows) -> io::Result<()> {
        let payload = &rows.buf;
        let n = u32::try_from(payload.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "journal record over 4 GiB")
        })?;
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        rec.extend_from_slice(MAGIC);
        rec.extend_from_slice(&n.to_le_bytes());
        rec.extend_from_slice(blake3::hash(payload).as_bytes());
        rec.extend_from_slice(payload);
        let start = self.len;
        let written = self
            .file
            .write_all_at(&rec, start)
            .and_then(|()| self.file.sync_data());
        if let Err(e) = written {
            self.rollback(start);
            return Err(e);
        }
        self.len = start + rec.len() as u64;
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Cuts the journal back to `len` bytes (a record whose group was not
    /// committed after all). Best effort: a failure is logged, and replay
    /// would then apply a group whose callers were told it failed.
    pub(crate) fn rollback(&mut self, len: u64) {
        if let Err(e) = self.file.set_len(len).and_then(|()| self.file.sync_data()) {
            tracing::error!(target: "storage", path = %self.path.display(), error = %e, "journal: cannot cut back a failed record");
        }
        self.len = len;
    }

    /// Empties the journal: everything in it is in a durable redb commit.
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        self.file.set_len(0)?;
        self.file.sync_data()?;
        self.len = 0;
        self.since = None;
        Ok(())
    }

    /// Bytes of records not yet in a durable redb commit.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// How long the oldest record has been waiting for a durable redb commit.
    pub(crate) fn age(&self) -> Option<Duration> {
        self.since.map(|s| s.elapsed())
    }
}

/// The whole records at the start of `all` and the bytes they span.
fn parse(all: &[u8]) -> (Vec<Vec<u8>>, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    while let Some(head) = all.get(at..at + HEADER) {
        if &head[..4] != MAGIC {
            break;
        }
        let mut n = [0u8; 4];
        n.copy_from_slice(&head[4..8]);
        let n = u32::from_le_bytes(n) as usize;
        let Some(payload) = all.get(at + HEADER..at + HEADER + n) else {
            break;
        };
        if blake3::hash(payload).as_bytes() != &head[8..40] {
            break;
        }
        records.push(payload.to_vec());
        at += HEADER + n;
    }
    (records, at as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    fn sample(i: u8) -> Rows {
        let mut r = Rows::default();
        r.put(2, &[i, 1], &vec![i; 300]);
        r.remove(6, &[i, 2]);
        r.put(1, b"head", &[]);
        r
    }

    #[test]
    fn records_read_back_in_order_with_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, old) = Journal::open(&path).unwrap();
        assert!(old.is_empty());
        for i in 0..3 {
            j.append(&sample(i)).unwrap();
        }
        let len = j.len();
        drop(j);
        let (j, recs) = Journal::open(&path).unwrap();
        assert_eq!(j.len(), len);
        assert_eq!(recs.len(), 3);
        let rows1 = rows(&recs[1]).unwrap();
        assert_eq!(
            rows1,
            vec![
                Row::Put {
                    table: 2,
                    key: &[1, 1],
                    value: &[1; 300]
                },
                Row::Remove {
                    table: 6,
                    key: &[1, 2]
                },
                Row::Put {
                    table: 1,
                    key: b"head",
                    value: &[]
                },
            ]
        );
    }

    // A record cut anywhere, or with a flipped byte, ends the journal
    // there: the whole records before it are kept, the file is cut back,
    // and the next record is written where the good ones end.
    #[test]
    fn a_torn_or_corrupt_tail_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&sample(0)).unwrap();
        let good = j.len();
        j.append(&sample(1)).unwrap();
        let full = j.len();
        drop(j);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [good + 1, good + 20, good + 41, full - 1] {
            std::fs::write(&path, &bytes[..cut as usize]).unwrap();
            let (j, recs) = Journal::open(&path).unwrap();
            assert_eq!((recs.len(), j.len()), (1, good), "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        }
        let mut flipped = bytes.clone();
        flipped[full as usize - 5] ^= 0xff;
        std::fs::write(&path, &flipped).unwrap();
        let (mut j, recs) = Journal::open(&path).unwrap();
        assert_eq!(recs.len(), 1);
        j.append(&sample(2)).unwrap();
        drop(j);
        let (_, recs) = Journal::open(&path).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(rows(&recs[1]).unwrap(), rows(&sample(2).buf).unwrap());
    }

    #[test]
    fn reset_empties_and_malformed_rows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j");
        let (mut j, _) = Journal::open(&path).unwrap();
        j.append(&sample(0)).unwrap();
        assert!(j.age().is_some());
        j.reset().unwrap();
        assert_eq!((j.len(), j.age()), (0, None));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        assert!(rows(&[9, 1, 0, 0, 0, 0]).is_err());
        assert!(rows(&[OP_PUT, 1, 5, 0, 0, 0, 1]).is_err());
    }
}
