//! A log file that rotates by size and keeps gzip-compressed old files:
//! `opush.log` is written; when the next line would take it past
//! `max_bytes` it becomes `opush.log.1.gz` (older ones shift to `.2.gz` …,
//! at most `keep` are kept).
//!
//! Compression runs on a background thread so a rotation never stalls the
//! request that wrote the line; rotations are serialized so numbering stays
//! in order. Written for opush's two log files (the log lines and the access
//! log); nothing else is rotated here.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use flate2::write::GzEncoder;
use flate2::Compression;

/// Serializes the background compressions of every rotating file.
static COMPRESSING: Mutex<()> = Mutex::new(());
static ROTATION_NO: AtomicU64 = AtomicU64::new(0);

/// A size-rotated, compressed log file. Cheap to share: clone the `Arc`.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    inner: Mutex<Open>,
    pending: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

#[derive(Debug)]
struct Open {
    file: File,
    written: u64,
}

impl RotatingFile {
    /// Opens (appends to) `path`, creating its directory; rotates past
    /// `max_bytes` (at least 1 KiB), keeping `keep` compressed files. A path
    /// that is not a regular file (`/dev/null`, a pipe) is written but never
    /// rotated.
    pub fn open(path: impl Into<PathBuf>, max_bytes: u64, keep: usize) -> io::Result<Arc<Self>> {
        let path = path.into();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let meta = file.metadata()?;
        let written = meta.len();
        Ok(Arc::new(RotatingFile {
            path,
            max_bytes: if meta.is_file() {
                max_bytes.max(1024)
            } else {
                u64::MAX
            },
            keep,
            inner: Mutex::new(Open { file, written }),
            pending: Mutex::new(Vec::new()),
        }))
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `line` (which should end with a newline), rotating first when
    /// it would not fit.
    pub fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut open = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if open.written > 0 && open.written + line.len() as u64 > self.max_bytes {
            self.rotate(&mut open)?;
        }
        open.file.write_all(line)?;
        open.written += line.len() as u64;
        Ok(())
    }

    fn rotate(&self, open: &mut Open) -> io::Result<()> {
        open.file.flush()?;
        if !fs::symlink_metadata(&self.path)?.is_file() {
            // Replaced by something else since it was opened: never move it.
            open.written = 0;
            return Ok(());
        }
        let n = ROTATION_NO.fetch_add(1, Ordering::Relaxed);
        let staged = sibling(&self.path, &format!("rotating.{}.{n}", std::process::id()));
        fs::rename(&self.path, &staged)?;
        open.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        open.written = 0;
        let (path, keep) = (self.path.clone(), self.keep);
        let handle = std::thread::spawn(move || {
            let _one_at_a_time = COMPRESSING.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(e) = compress_into_place(&path, &staged, keep) {
                eprintln!(
                    "opush: could not compress rotated log {}: {e}",
                    staged.display()
                );
            }
        });
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        pending.retain(|h| !h.is_finished());
        pending.push(handle);
        Ok(())
    }

    /// Waits for the compressions started so far (tests, shutdown).
    pub fn wait_compressed(&self) {
        let handles: Vec<_> = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.drain(..).collect()
        };
        for h in handles {
            let _ = h.join();
        }
    }
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".");
    name.push(suffix);
    path.with_file_name(name)
}

/// The name of the `i`-th compressed generation (`opush.log.1.gz` …).
pub fn generation(path: &Path, i: usize) -> PathBuf {
    sibling(path, &format!("{i}.gz"))
}

/// Shifts `.1.gz` … up by one (dropping those past `keep`), then compresses
/// `staged` into `.1.gz` and removes it.
fn compress_into_place(path: &Path, staged: &Path, keep: usize) -> io::Result<()> {
    if keep == 0 {
        return fs::remove_file(staged);
    }
    let _ = fs::remove_file(generation(path, keep));
    for i in (1..keep).rev() {
        let from = generation(path, i);
        if from.exists() {
            fs::rename(&from, generation(path, i + 1))?;
        }
    }
    let target = generation(path, 1);
    let partial = sibling(path, "1.gz.partial");
    {
        let mut input = BufReader::new(File::open(staged)?);
        let mut enc = GzEncoder::new(File::create(&partial)?, Compression::default());
        io::copy(&mut input, &mut enc)?;
        enc.finish()?.sync_all()?;
    }
    fs::rename(&partial, &target)?;
    fs::remove_file(staged)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;
    use flate2::read::GzDecoder;
    use std::io::Read;

    fn gunzip(p: &Path) -> String {
        let mut s = String::new();
        GzDecoder::new(File::open(p).unwrap())
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    #[test]
    fn rotates_by_size_compresses_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/access.log");
        let f = RotatingFile::open(&path, 1024, 2).unwrap();
        let line = |i: usize| format!("{i:04} {}\n", "x".repeat(95)); // 100 bytes
        for i in 0..35 {
            f.write_line(line(i).as_bytes()).unwrap();
            // Let each compression finish so the generations are deterministic.
            f.wait_compressed();
        }
        // 10 lines per file: 0-9, 10-19, 20-29 rotated; 30-34 current.
        let current = fs::read_to_string(&path).unwrap();
        assert!(current.starts_with("0030 ") && current.lines().count() == 5);
        let g1 = gunzip(&generation(&path, 1));
        assert!(g1.starts_with("0020 ") && g1.lines().count() == 10, "{g1}");
        let g2 = gunzip(&generation(&path, 2));
        assert!(g2.starts_with("0010 "), "{g2}");
        assert!(!generation(&path, 3).exists(), "keep = 2");
        // No staging or partial files are left behind.
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 3, "{names:?}");
    }

    #[test]
    fn reopening_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        RotatingFile::open(&path, 4096, 1)
            .unwrap()
            .write_line(b"one\n")
            .unwrap();
        RotatingFile::open(&path, 4096, 1)
            .unwrap()
            .write_line(b"two\n")
            .unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }
}
