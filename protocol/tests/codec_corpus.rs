//! Real traffic golden test: every WBXML body captured from real devices and
//! Exchange (`shared/corpus/real-devices/`, beside the clone) decodes, and
//! re-encodes to the same bytes (or, for a body that used a string table or
//! split strings, to a document that decodes equal). A missing corpus fails.

use std::path::{Path, PathBuf};

use opush_protocol::wbxml::{decode, encode_to_vec};
use opush_protocol::xml::{element_to_xml, wbxml_to_xml, xml_to_wbxml};

fn corpus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/real-devices")
}

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
    let dir = corpus_dir();
    assert!(
        dir.is_dir(),
        "the real-device corpus is missing: expected {} (shared/corpus beside the clone)",
        dir.display()
    );
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
