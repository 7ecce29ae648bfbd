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
//! Two files, `opush.journal` and `opush.journal.1`, take turns, so that a
//! checkpoint never waits for the journal to be emptied: at a checkpoint's
//! redb commit the appends move to the other file (empty), and the file
//! left behind (retired) is emptied later, off the group commit's path,
//! once the redb file is synced (see `embedded.rs`, "checkpoint"). Each
//! record carries a sequence number, increasing across both files, so that
//! replay applies the older file's records first. A retired file whose
//! records are already in the redb file is harmless: replaying them, then
//! every later record, leaves the same state.
//!
//! Record layout: `OPJ2`, payload length (u32 LE), sequence number (u64 LE),
//! blake3 of the sequence number and payload, payload. Payload: rows, each
//! `op` (1 put, 2 remove), table tag, key length (u32 LE), key, and for a
//! put the value length (u32 LE) and value. A record cut short or whose
//! digest does not match (a crash in the middle of its write, never
//! acknowledged) ends its file: it and anything after it are dropped.
//! Records of the previous layout (`OPJ1`, no sequence number, one file)
//! are still read, as older than any other.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 4] = b"OPJ2";
const HEADER: usize = 4 + 4 + 8 + 32;
/// The previous layout: magic, length, digest of the payload.
const MAGIC_V1: &[u8; 4] = b"OPJ1";
const HEADER_V1: usize = 4 + 4 + 32;
/// The two files' names, in the data directory.
pub(crate) const FILES: [&str; 2] = ["opush.journal", "opush.journal.1"];
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

/// Records read back: sequence number and payload.
type Records = Vec<(u64, Vec<u8>)>;

/// One of the two journal files.
struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes of whole records (where the next one is written).
    len: u64,
}

impl Segment {
    /// Opens (creating) `path` and reads its whole records; a torn tail is
    /// cut off the file.
    fn open(path: &Path) -> io::Result<(Segment, Records)> {
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
        let seg = Segment {
            file: Arc::new(file),
            path: path.to_path_buf(),
            len,
        };
        Ok((seg, records))
    }

    fn empty(&mut self) -> io::Result<()> {
        if self.len > 0 {
            empty_file(&self.file)?;
            self.len = 0;
        }
        Ok(())
    }
}

/// Empties a journal file and syncs it (a retired file, by the checkpoint).
pub(crate) fn empty_file(file: &File) -> io::Result<()> {
    file.set_len(0)?;
    file.sync_data()
}

/// The journal: the file records are appended to (active) and the other
/// one (spare), empty or retired (see the module docs).
pub(crate) struct Journal {
    active: Segment,
    spare: Segment,
    /// The spare is retired: its records are in a redb commit whose sync
    /// may still be pending, and the checkpoint empties it. Appends cannot
    /// move to it until then.
    retired: bool,
    /// The sequence number of the next record.
    next_seq: u64,
    /// When the oldest record of the active file was written.
    since: Option<Instant>,
}

impl Journal {
    /// Opens (creating) the two journal files in `dir` and reads their whole
    /// records, for replay, oldest first. A torn tail is cut off its file.
    /// When there are records, the caller replays them into a durable
    /// commit and calls [`Journal::reset`] before appending.
    pub(crate) fn open(dir: &Path) -> io::Result<(Journal, Vec<Vec<u8>>)> {
        let (a, mut ra) = Segment::open(&dir.join(FILES[0]))?;
        let (b, mut rb) = Segment::open(&dir.join(FILES[1]))?;
        // The files just created (and `opush.redb`, created before) are
        // entries of the directory: synced, so that a power loss right
        // after the first open cannot lose a journal file whose records
        // were synced (docs/STORAGE.md, "Crashes").
        #[cfg(unix)]
        std::fs::File::open(dir)?.sync_all()?;
        // The older file first: the one whose first record is older. Within
        // a file, records are in order.
        let first = |r: &[(u64, Vec<u8>)]| r.first().map(|(seq, _)| *seq);
        if let (Some(fa), Some(fb)) = (first(&ra), first(&rb)) {
            if fb < fa {
                std::mem::swap(&mut ra, &mut rb);
            }
        }
        let next_seq = ra
            .iter()
            .chain(&rb)
            .map(|(seq, _)| *seq)
            .max()
            .map_or(1, |m| m + 1);
        let records: Vec<Vec<u8>> = ra.into_iter().chain(rb).map(|(_, p)| p).collect();
        let since = (a.len > 0 || b.len > 0).then(Instant::now);
        Ok((
            Journal {
                active: a,
                spare: b,
                retired: false,
                next_seq,
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
        let seq = self.next_seq;
        let mut rec = Vec::with_capacity(HEADER + payload.len());
        rec.extend_from_slice(MAGIC);
        rec.extend_from_slice(&n.to_le_bytes());
        rec.extend_from_slice(&seq.to_le_bytes());
        rec.extend_from_slice(digest(seq, payload).as_bytes());
        rec.extend_from_slice(payload);
        let start = self.active.len;
        let written = self
            .active
            .file
            .write_all_at(&rec, start)
            .and_then(|()| self.active.file.sync_data());
        if let Err(e) = written {
            self.rollback(start);
            return Err(e);
        }
        self.active.len = start + rec.len() as u64;
        self.next_seq = seq + 1;
        self.since.get_or_insert_with(Instant::now);
        Ok(())
    }

    /// Cuts the active file back to `len` bytes (a record whose group was
    /// not committed after all). Best effort: a failure is logged, and
    /// replay would then apply a group whose callers were told it failed.
    pub(crate) fn rollback(&mut self, len: u64) {
        let file = &self.active.file;
        if let Err(e) = file.set_len(len).and_then(|()| file.sync_data()) {
            tracing::error!(target: "storage", path = %self.active.path.display(), error = %e, "journal: cannot cut back a failed record");
        }
        self.active.len = len;
    }

    /// Empties both files: everything in them is in a durable redb commit
    /// (one that was synced before this returns).
    pub(crate) fn reset(&mut self) -> io::Result<()> {
        self.active.empty()?;
        self.spare.empty()?;
        self.since = None;
        Ok(())
    }

    /// Whether the spare file is retired (not yet emptied by a checkpoint).
    pub(crate) fn retired(&self) -> bool {
        self.retired
    }

    /// Moves the appends to the spare file, which must be empty (not
    /// retired), and retires the active one: everything in it is in the
    /// redb commit just made. Returns the retired file, for the checkpoint
    /// to empty once that commit is synced.
    pub(crate) fn switch(&mut self) -> Option<Arc<File>> {
        if self.retired {
            return None;
        }
        std::mem::swap(&mut self.active, &mut self.spare);
        self.retired = true;
        self.since = None;
        Some(self.spare.file.clone())
    }

    /// The retired file was emptied (by [`empty_file`]).
    pub(crate) fn retired_emptied(&mut self) {
        self.retired = false;
        self.spare.len = 0;
    }

    /// Bytes of records in the active file.
    pub(crate) fn len(&self) -> u64 {
        self.active.len
    }

    /// How long the active file's oldest record has been waiting for a
    /// checkpoint.
    pub(crate) fn age(&self) -> Option<Duration> {
        self.since.map(|s| s.elapsed())
    }
}

fn digest(seq: u64, payload: &[u8]) -> blake3::Hash {
    let mut h = blake3::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// The whole records at the start of `all` (with their sequence numbers;
/// 0 for the previous layout's) and the bytes they span.
fn parse(all: &[u8]) -> (Records, u64) {
    let mut records = Vec::new();
    let mut at = 0usize;
    let u32_at = |b: &[u8], i: usize| {
        let mut n = [0u8; 4];
        n.copy_from_slice(&b[i..i + 4]);
        u32::from_le_bytes(n) as usize
    };
    while let Some(magic) = all.get(at..at + 4) {
        if magic == MAGIC {
            let Some(head) = all.get(at..at + HEADER) else {
                break;
            };
            let n = u32_at(head, 4);
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&head[8..16]);
            let seq = u64::from_le_bytes(seq);
            let Some(payload) = all.get(at + HEADER..at + HEADER + n) else {
                break;
            };
            if digest(seq, payload).as_bytes() != &head[16..48] {
                break;
            }
            records.push((seq, payload.to_vec()));
            at += HEADER + n;
        } else if magic == MAGIC_V1 {
            let Some(head) = all.get(at..at + HEADER_V1) else {
                break;
            };
            let n = u32_at(head, 4);
            let Some(payload) = all.get(at + HEADER_V1..at + HEADER_V1 + n) else {
                break;
            };
            if blake3::hash(payload).as_bytes() != &head[8..40] {
                break;
            }
            records.push((0, payload.to_vec()));
            at += HEADER_V1 + n;
        } else {
            break;
        }
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
        let (mut j, old) = Journal::open(dir.path()).unwrap();
        assert!(old.is_empty());
        for i in 0..3 {
            j.append(&sample(i)).unwrap();
        }
        let len = j.len();
        drop(j);
        let (j, recs) = Journal::open(dir.path()).unwrap();
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
        let path = dir.path().join(FILES[0]);
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&sample(0)).unwrap();
        let good = j.len();
        j.append(&sample(1)).unwrap();
        let full = j.len();
        drop(j);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [good + 1, good + 20, good + 41, good + 48, full - 1] {
            std::fs::write(&path, &bytes[..cut as usize]).unwrap();
            let (j, recs) = Journal::open(dir.path()).unwrap();
            assert_eq!((recs.len(), j.len()), (1, good), "cut at {cut}");
            assert_eq!(std::fs::metadata(&path).unwrap().len(), good);
        }
        // A flipped byte in the payload, or in the sequence number.
        for at in [full - 5, good + 10] {
            let mut flipped = bytes.clone();
            flipped[at as usize] ^= 0xff;
            std::fs::write(&path, &flipped).unwrap();
            let (mut j, recs) = Journal::open(dir.path()).unwrap();
            assert_eq!(recs.len(), 1, "flipped at {at}");
            j.append(&sample(2)).unwrap();
            drop(j);
            let (_, recs) = Journal::open(dir.path()).unwrap();
            assert_eq!(recs.len(), 2);
            assert_eq!(rows(&recs[1]).unwrap(), rows(&sample(2).buf).unwrap());
        }
    }

    #[test]
    fn reset_empties_and_malformed_rows_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&sample(0)).unwrap();
        assert!(j.age().is_some());
        let retired = j.switch().unwrap();
        j.append(&sample(1)).unwrap();
        j.reset().unwrap();
        assert_eq!((j.len(), j.age()), (0, None));
        for f in FILES {
            assert_eq!(std::fs::metadata(dir.path().join(f)).unwrap().len(), 0);
        }
        assert_eq!(retired.metadata().unwrap().len(), 0);
        assert!(rows(&[9, 1, 0, 0, 0, 0]).is_err());
        assert!(rows(&[OP_PUT, 1, 5, 0, 0, 0, 1]).is_err());
    }

    // Appends move to the other file at a switch; until the retired one is
    // emptied there is no second switch; both files' records come back in
    // the order they were written, whichever file holds the older ones.
    #[test]
    fn switched_files_replay_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, _) = Journal::open(dir.path()).unwrap();
        j.append(&sample(0)).unwrap();
        j.append(&sample(1)).unwrap();
        let retired = j.switch().unwrap();
        assert_eq!((j.len(), j.age()), (0, None));
        j.append(&sample(2)).unwrap();
        assert!(j.retired() && j.switch().is_none());
        let want = |ids: &[u8]| -> Vec<Vec<u8>> { ids.iter().map(|i| sample(*i).buf).collect() };
        // A crash before the retired file was emptied: all three, in order.
        let (_, recs) = Journal::open(dir.path()).unwrap();
        assert_eq!(recs, want(&[0, 1, 2]));
        // The retired file emptied, then a switch back to it: the newer
        // record is now in the first file, the older one in the second.
        empty_file(&retired).unwrap();
        j.retired_emptied();
        assert!(j.len() > 0);
        j.switch().unwrap();
        j.append(&sample(3)).unwrap();
        let (_, recs) = Journal::open(dir.path()).unwrap();
        assert_eq!(recs, want(&[2, 3]));
    }

    // A journal of the previous layout (one file, no sequence numbers) is
    // still replayed.
    #[test]
    fn previous_layout_records_are_read() {
        let dir = tempfile::tempdir().unwrap();
        let mut bytes = Vec::new();
        for i in 0..2 {
            let p = sample(i).buf;
            bytes.extend_from_slice(MAGIC_V1);
            bytes.extend_from_slice(&(p.len() as u32).to_le_bytes());
            bytes.extend_from_slice(blake3::hash(&p).as_bytes());
            bytes.extend_from_slice(&p);
        }
        std::fs::write(dir.path().join(FILES[0]), &bytes).unwrap();
        let (_, recs) = Journal::open(dir.path()).unwrap();
        assert_eq!(recs, vec![sample(0).buf, sample(1).buf]);
    }
}
