//! The embedded store's redb file, as redb's storage backend: redb's own
//! file backend, except that a checkpoint's commit can leave its sync to
//! later, off the group commit's path.
//!
//! Why: a durable redb commit writes the pages the last second's groups
//! touched (1–5 MB: one `pwrite` per 4 KiB page) and syncs the file, 7–18
//! ms in all on this machine (docs/BENCHMARKS.md, "Session 11:
//! checkpoint"), and holds redb's only write transaction meanwhile, so
//! every group commit queued behind it waited. A checkpoint's commit now
//! runs deferred: the pages and header redb writes are kept in memory
//! (staged) and its sync is only noted, so the commit returns after its
//! own bookkeeping; the checkpoint thread then writes the staged pages to
//! the file and syncs it ([`SyncHandle::sync_pending`]), and only then
//! empties the journal file the commit made redundant. Reads see the
//! staged pages meanwhile.
//!
//! Why it is safe: until then, the file is as it is during any durable
//! commit's own write-out and `fdatasync`: the new commit's pages and
//! header not (all) on disk, the previous durable commit intact (redb's
//! one-phase commit checks the new one's checksums at the next open after
//! a crash, and falls back to the previous one). What could change that is
//! a later write into the file (a page freed by the new commit, reused,
//! and written over a page the previous commit still uses) or a change of
//! its length: so any write or `set_len` outside a deferred commit first
//! writes out what is staged and syncs. The file then sees exactly the
//! writes and syncs of redb's own durable commit, in the same order, only
//! later. The journal keeps every record the deferred commit covers until
//! that sync has returned (see `journal.rs`).

use std::fs::File;
use std::io;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use redb::backends::FileBackend;
use redb::{BackendError, StorageBackend};

/// A deferred commit's writes, in order: their bytes one after the other
/// in one buffer, kept from one checkpoint to the next (a fresh 1–5 MB
/// each time cost more in page faults than the `pwrite`s it replaces).
#[derive(Debug, Default)]
struct Staged {
    bytes: Vec<u8>,
    /// (file offset, start in `bytes`, length) of each write.
    writes: Vec<(u64, usize, usize)>,
}

/// A checkpoint's staged bytes beyond which the buffer is not kept for
/// the next one (a burst's checkpoint, e.g. while devices sync for the
/// first time).
const KEEP_STAGED_BYTES: usize = 16 * 1024 * 1024;

impl Staged {
    fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.writes
            .iter()
            .map(|(at, start, len)| (*at, &self.bytes[*start..*start + *len]))
    }

    fn push(&mut self, offset: u64, data: &[u8]) {
        self.writes.push((offset, self.bytes.len(), data.len()));
        self.bytes.extend_from_slice(data);
    }

    /// Empties it for the next checkpoint, keeping up to
    /// [`KEEP_STAGED_BYTES`] of the buffer (a burst's bigger one shrinks to
    /// that, not to nothing: the next checkpoint would grow it again).
    fn clear(&mut self) {
        self.bytes.clear();
        self.writes.clear();
        self.bytes.shrink_to(KEEP_STAGED_BYTES);
        self.writes.shrink_to(KEEP_STAGED_BYTES / 4096);
    }
}

/// What the backend and the checkpoint thread share.
#[derive(Debug)]
struct Shared {
    file: FileBackend,
    /// Set around a checkpoint's commit: its syncs are deferred.
    defer: AtomicBool,
    /// A deferred sync has not been performed yet. Held while staged
    /// writes are written out and synced.
    pending: Mutex<bool>,
    /// The writes of a deferred commit, in order, not yet in the file.
    staged: RwLock<Staged>,
    /// A sync failed: what the file holds is unknown (a later `fdatasync`
    /// may succeed without the lost pages), so every later write and sync
    /// fails too, and the journal is never emptied again.
    failed: AtomicBool,
}

impl Shared {
    fn lock(&self) -> io::Result<std::sync::MutexGuard<'_, bool>> {
        self.pending
            .lock()
            .map_err(|_| io::Error::other("redb file: sync state poisoned"))
    }

    fn poisoned() -> io::Error {
        io::Error::other("redb file: staged writes poisoned")
    }

    /// Performs a deferred sync, if any. Holding the lock while syncing
    /// makes writes (which call this first) wait for it.
    fn sync_pending(&self) -> io::Result<()> {
        let mut pending = self.lock()?;
        if *pending {
            self.sync(&mut pending)?;
        }
        Ok(())
    }

    /// Writes out what is staged, in order, and syncs the file, the lock
    /// held. Readers still see the staged writes until they are in the file.
    fn sync(&self, pending: &mut bool) -> io::Result<()> {
        if self.failed.load(Ordering::SeqCst) {
            return Err(io::Error::other(
                "redb file: an earlier write or sync failed",
            ));
        }
        let written = {
            let staged = self.staged.read().map_err(|_| Self::poisoned())?;
            let written = staged
                .iter()
                .try_for_each(|(offset, data)| self.file.write(offset, data));
            written.and_then(|()| self.file.sync_data())
        };
        if let Err(e) = written {
            self.failed.store(true, Ordering::SeqCst);
            return Err(e);
        }
        self.staged.write().map_err(|_| Self::poisoned())?.clear();
        *pending = false;
        Ok(())
    }
}

/// The backend redb is given (see the module docs).
#[derive(Debug)]
pub(crate) struct RedbFile(Arc<Shared>);

/// The embedded store's handle on the backend's syncs.
#[derive(Debug, Clone)]
pub(crate) struct SyncHandle(Arc<Shared>);

impl RedbFile {
    /// The backend over `file`, and the handle that defers and performs its
    /// syncs.
    pub(crate) fn new(file: File) -> Result<(RedbFile, SyncHandle), redb::DatabaseError> {
        let shared = Arc::new(Shared {
            file: FileBackend::new(file)?,
            defer: AtomicBool::new(false),
            pending: Mutex::new(false),
            staged: RwLock::new(Staged::default()),
            failed: AtomicBool::new(false),
        });
        Ok((RedbFile(shared.clone()), SyncHandle(shared)))
    }
}

impl SyncHandle {
    /// Runs `commit` (one redb commit) deferred: once it returns, its pages
    /// and header are staged, not in the file, until
    /// [`SyncHandle::sync_pending`] (or any later write) writes them out
    /// and syncs.
    pub(crate) fn deferred<T>(&self, commit: impl FnOnce() -> T) -> T {
        self.0.defer.store(true, Ordering::SeqCst);
        let out = commit();
        self.0.defer.store(false, Ordering::SeqCst);
        out
    }

    /// Bytes staged by a deferred commit, not yet written out.
    pub(crate) fn staged_bytes(&self) -> usize {
        self.0.staged.read().map_or(0, |s| s.bytes.len())
    }

    /// Writes out and syncs a deferred commit, if any. Once this returns
    /// `Ok`, every commit made so far is on disk.
    pub(crate) fn sync_pending(&self) -> io::Result<()> {
        self.0.sync_pending()
    }
}

impl StorageBackend for RedbFile {
    fn len(&self) -> io::Result<u64> {
        self.0.file.len()
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let staged = self.0.staged.read().map_err(|_| Shared::poisoned())?;
        self.0.file.read(offset, out)?;
        // The staged writes over the range, in order (usually none: a
        // checkpoint's pages are in redb's cache too).
        let end = offset + out.len() as u64;
        for (at, data) in staged.iter() {
            let (lo, hi) = (at.max(offset), (at + data.len() as u64).min(end));
            if lo < hi {
                let src = &data[(lo - at) as usize..(hi - at) as usize];
                out[(lo - offset) as usize..(hi - offset) as usize].copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.sync_pending()?;
        self.0.file.set_len(len)
    }

    fn sync_data(&self) -> io::Result<()> {
        if self.0.defer.load(Ordering::SeqCst) {
            *self.0.lock()? = true;
            return Ok(());
        }
        let mut pending = self.0.lock()?;
        self.0.sync(&mut pending)
    }

    fn write(&self, offset: u64, data: &[u8]) -> io::Result<()> {
        if self.0.defer.load(Ordering::SeqCst) {
            let mut staged = self.0.staged.write().map_err(|_| Shared::poisoned())?;
            staged.push(offset, data);
            drop(staged);
            *self.0.lock()? = true;
            return Ok(());
        }
        self.0.sync_pending()?;
        self.0.file.write(offset, data)
    }

    fn close(&self) -> io::Result<()> {
        // The locks are released whatever the sync gave.
        let synced = self.0.sync_pending();
        let closed = self.0.file.close();
        synced.and(closed)
    }

    fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.file.try_lock_range(start, end)
    }

    fn try_lock_shared_range(
        &self,
        start: Bound<u64>,
        end: Bound<u64>,
    ) -> Result<bool, BackendError> {
        self.0.file.try_lock_shared_range(start, end)
    }

    fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_range(start, end)
    }

    fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.lock_shared_range(start, end)
    }

    fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
        self.0.file.unlock_range(start, end)
    }

    fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
        self.0.file.query_lock_range(start, end)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cleared_staging_buffer_keeps_at_most_its_bound_and_never_less_than_it_had_below_it() {
        let mut big = Staged::default();
        let page = vec![7u8; 4096];
        for i in 0..(20 * 256) {
            big.push(i * 4096, &page);
        }
        let grown = big.bytes.capacity();
        assert!(grown >= 20 * 1024 * 1024);
        big.clear();
        assert!(big.bytes.is_empty() && big.writes.is_empty());
        assert!(
            (KEEP_STAGED_BYTES..grown).contains(&big.bytes.capacity()),
            "kept {} of {grown}",
            big.bytes.capacity()
        );

        let mut small = Staged::default();
        small.push(0, &[1u8; 1024 * 1024]);
        let had = small.bytes.capacity();
        small.clear();
        assert_eq!(
            small.bytes.capacity(),
            had,
            "a buffer under the bound stays whole"
        );
        assert_eq!(small.iter().count(), 0);
    }
}
