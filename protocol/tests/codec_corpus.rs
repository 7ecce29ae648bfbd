//! Real traffic golden test: every WBXML body captured from real devices and
//! Exchange (`shared/corpus/real-devices/`, see `find_corpus/mod.rs`) decodes, and
//! re-encodes to the same bytes (or, for a body that used a string table or
//! split strings, to a document that decodes equal). A missing corpus fails.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

mod find_corpus;

use std::path::{Path, PathBuf};

use opush_protocol::wbxml::{decode, encode_to_vec};
use opush_protocol::xml::{element_to_xml, wbxml_to_xml, xml_to_wbxml};

fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read corpus dir {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            collect(&path, out);
        } else if path.extension().is_some_and(|x| x == "wbxml") {
            out.push(path);
        }
    }
}

/// All `.wbxml` files of the corpus, sorted.
pub fn corpus_files() -> Vec<PathBuf> {
    let dir = find_corpus::real_devices();
    let mut files = Vec::new();
    collect(&dir, &mut files);
    files.sort();
    files
}

#[test]
fn every_real_document_decodes_and_reencodes() {
    let files = corpus_files();
    assert!(
        files.len() > 600,
        "only {} WBXML files in the corpus",
        files.len()
    );
    let mut identical = 0;
    let mut failures = Vec::new();
    let mut rewritten: Vec<String> = Vec::new();
    for path in &files {
        let bytes = std::fs::read(path).expect("read corpus file");
        let root = match decode(&bytes) {
            Ok(root) => root,
            Err(e) => {
                failures.push(format!("{}: {e}", path.display()));
                continue;
            }
        };
        let again = encode_to_vec(&root);
        if again == bytes {
            identical += 1;
            continue;
        }
        // Allowed only when the input used a string table or split one
        // string into several tokens: the re-encoded document decodes equal.
        match decode(&again) {
            Ok(back) if back == root => rewritten.push(path.display().to_string()),
            Ok(_) => failures.push(format!("{}: re-encoded document differs", path.display())),
            Err(e) => failures.push(format!(
                "{}: re-encoded document fails: {e}",
                path.display()
            )),
        }
    }
    eprintln!(
        "{} files, {identical} byte-identical, {} rewritten: {rewritten:?}",
        files.len(),
        rewritten.len()
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(
        identical > 600,
        "only {identical} byte-identical round trips"
    );
    assert!(
        rewritten.len() < 10,
        "too many rewritten documents: {rewritten:?}"
    );
}

#[test]
fn every_real_document_round_trips_through_xml() {
    let files = corpus_files();
    assert!(
        files.len() > 600,
        "only {} WBXML files in the corpus",
        files.len()
    );
    for path in &files {
        let bytes = std::fs::read(path).expect("read corpus file");
        let xml = wbxml_to_xml(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // Written from the decoder's steps: the same as the tree's rendering.
        let tree = decode(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(xml, element_to_xml(&tree), "{}", path.display());
        let back = xml_to_wbxml(&xml).unwrap_or_else(|e| panic!("{}: {e}\n{xml}", path.display()));
        assert!(
            back == bytes,
            "{}: XML round trip differs\n{xml}",
            path.display()
        );
    }
}

/// From a clone (`<root>/opush/protocol`) and from a worktree
/// (`<root>/wt/<name>/protocol`) the corpus is `<root>/shared/corpus`;
/// with none above, or `$OPUSH_CORPUS` naming no corpus, the caller fails.
#[test]
fn the_corpus_is_found_from_a_clone_and_a_worktree() {
    let root = std::env::temp_dir().join(format!("opush-corpus-find-{}", std::process::id()));
    let corpus = root.join("shared/corpus");
    std::fs::create_dir_all(corpus.join("real-devices")).unwrap();
    for crate_dir in ["opush/protocol", "wt/hygiene/protocol"] {
        let start = root.join(crate_dir);
        std::fs::create_dir_all(&start).unwrap();
        assert_eq!(
            find_corpus::find(None, &start),
            Ok(corpus.clone()),
            "{crate_dir}"
        );
    }
    let given = Some(root.join("wt"));
    assert!(find_corpus::find(given, &root).is_err());
    assert_eq!(
        find_corpus::find(Some(corpus.clone()), Path::new("/")),
        Ok(corpus.clone())
    );
    std::fs::remove_dir_all(corpus.join("real-devices")).unwrap();
    assert!(find_corpus::find(None, &root.join("wt/hygiene/protocol")).is_err());
    std::fs::remove_dir_all(&root).unwrap();
}
