//! Where the shared traffic corpus is, for the tests and benches of this
//! crate (`mod find_corpus;`): `$OPUSH_CORPUS` when set (the `corpus` directory,
//! holding `real-devices/`), else the first `shared/corpus` found walking
//! up from the crate — beside a clone (`<root>/shared`) and beside a
//! worktree's parent (`<root>/wt/<name>` → `<root>/shared`) alike.
//!
//! A missing corpus fails the test that asked for it (in CI too): never
//! a skip.

#![allow(dead_code, reason = "each test file uses a different part")]

use std::path::{Path, PathBuf};

/// The environment variable naming the corpus directory.
pub const ENV: &str = "OPUSH_CORPUS";

/// The corpus directory (holding `real-devices/`); panics with where it
/// was looked for when there is none.
pub fn corpus_root() -> PathBuf {
    let start = Path::new(env!("CARGO_MANIFEST_DIR"));
    find(std::env::var_os(ENV).map(PathBuf::from), start).unwrap_or_else(|looked| {
        panic!(
            "the shared traffic corpus is missing: {looked} \
             (set {ENV} to the corpus directory, or put shared/corpus beside the clone)"
        )
    })
}

/// `real-devices/` of the corpus.
pub fn real_devices() -> PathBuf {
    corpus_root().join("real-devices")
}

/// `given` when it is set (it must then be a corpus), else the first
/// `shared/corpus/real-devices` up from `start`; `Err` says where it looked.
pub fn find(given: Option<PathBuf>, start: &Path) -> Result<PathBuf, String> {
    if let Some(dir) = given {
        return if dir.join("real-devices").is_dir() {
            Ok(dir)
        } else {
            Err(format!("{ENV}={} has no real-devices/", dir.display()))
        };
    }
    start
        .ancestors()
        .map(|up| up.join("shared/corpus"))
        .find(|dir| dir.join("real-devices").is_dir())
        .ok_or_else(|| format!("no shared/corpus/real-devices above {}", start.display()))
}
