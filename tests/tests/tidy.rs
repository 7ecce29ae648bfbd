//! Tidy: the architecture invariants that a reader of `docs/ARCHITECTURE.md`
//! relies on, checked over the source tree.
//! - every `.rs` file starts with a `//!` module doc saying why it exists;
//! - `protocol/` and `engine/` are sans-I/O: no async runtime, HTTP, storage
//!   or network crates among their (non-dev) dependencies;
//! - `engine/` reads no clock and no randomness.

use std::fs;
use std::path::{Path, PathBuf};

use opush_tests::repo_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if name == "target" || name.starts_with('.') || name == "corpus" || name == "artifacts"
            {
                continue;
            }
            rust_files(&p, out);
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

fn workspace_rust_files() -> Vec<PathBuf> {
    let root = repo_root();
    let mut files = Vec::new();
    for top in [
        "protocol", "engine", "storage", "server", "replay", "tests", "fuzz",
    ] {
        rust_files(&root.join(top), &mut files);
    }
    assert!(
        files.len() >= 8,
        "found only {} .rs files: is the tree laid out as expected?",
        files.len()
    );
    files
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for f in workspace_rust_files() {
        let text = fs::read_to_string(&f).unwrap_or_default();
        let first = text
            .lines()
            .find(|l| !l.trim().is_empty() && !l.starts_with("#!["))
            .unwrap_or("");
        if !first.starts_with("//!") {
            missing.push(f.display().to_string());
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading `//!` module doc:\n{}",
        missing.join("\n")
    );
}

/// The `[dependencies]` section of a crate's Cargo.toml, one crate name a line.
fn runtime_dependencies(krate: &str) -> Vec<String> {
    let text = fs::read_to_string(repo_root().join(krate).join("Cargo.toml")).expect("Cargo.toml");
    let mut deps = Vec::new();
    let mut in_deps = false;
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            in_deps = t == "[dependencies]";
            continue;
        }
        if in_deps {
            if let Some((name, _)) = t.split_once('=') {
                let name = name.trim().trim_matches('"');
                if !name.is_empty() && !name.starts_with('#') {
                    deps.push(name.split('.').next().unwrap_or(name).to_owned());
                }
            }
        }
    }
    deps
}

#[test]
fn protocol_and_engine_do_no_io() {
    let forbidden = [
        "tokio",
        "warp",
        "hyper",
        "reqwest",
        "scylla",
        "redb",
        "fjall",
        "async-imap",
        "lettre",
        "ldap3",
        "russh",
        "opush-storage",
        "opush-server",
        "mio",
        "async-std",
    ];
    for krate in ["protocol", "engine"] {
        let deps = runtime_dependencies(krate);
        for d in &deps {
            assert!(
                !forbidden.contains(&d.as_str()),
                "{krate}/ depends on `{d}`: it must stay sans-I/O"
            );
        }
    }
}

#[test]
fn engine_reads_no_clock_and_no_randomness() {
    let mut files = Vec::new();
    rust_files(&repo_root().join("engine/src"), &mut files);
    assert!(
        files.len() >= 5,
        "engine/src has only {} .rs files: wrong root?",
        files.len()
    );
    let forbidden = [
        "SystemTime::now",
        "Instant::now",
        "thread_rng",
        "rand::",
        "std::fs",
        "std::net",
        "tokio",
    ];
    let mut hits = Vec::new();
    for f in files {
        let text = fs::read_to_string(&f).unwrap_or_default();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for bad in forbidden {
                if code.contains(bad) {
                    hits.push(format!("{}:{}: {}", f.display(), n + 1, line.trim()));
                }
            }
        }
    }
    assert!(
        hits.is_empty(),
        "engine/ must get time, ids and I/O results from events:\n{}",
        hits.join("\n")
    );
}
