//! Every request and response body of the real-device corpus
//! (`shared/corpus/real-devices/*/NNN-<Cmd>-{request,response}.wbxml`)
//! decodes into the typed model of its command, and re-encodes to WBXML that
//! decodes back to an equal typed value. Byte-identical re-encodings are
//! counted and the differences listed (the typed model normalises booleans
//! and element order, see the report printed with `--nocapture`).
//! Sync responses are also written by the streamed writer
//! (`SyncResponse::to_wbxml`), which must give the tree encoder's bytes.
//! The corpus must be present: a missing corpus fails the test.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

mod find_corpus;

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::path::{Path, PathBuf};

use opush_protocol::commands::{
    folder_sync::{FolderSyncRequest, FolderSyncResponse},
    ping::{PingRequest, PingResponse},
    provision::{ProvisionRequest, ProvisionResponse},
    settings::{SettingsRequest, SettingsResponse},
    sync::{SyncRequest, SyncResponse},
    EasDocument,
};
use opush_protocol::version::ProtocolVersion;
use opush_protocol::wbxml::{self, tags};
use serde_json::Value;

fn corpus_dir() -> PathBuf {
    find_corpus::real_devices()
}

/// Decodes, checks the typed round trip, and tells whether the bytes match.
fn round_trip<T: EasDocument + PartialEq + Debug>(
    bytes: &[u8],
    v: ProtocolVersion,
    ctx: &str,
) -> bool {
    let root = wbxml::decode(bytes).unwrap_or_else(|e| panic!("{ctx}: WBXML: {e}"));
    let typed = T::from_element(&root, v).unwrap_or_else(|e| panic!("{ctx}: typed: {e}"));
    let again = typed.encode(v);
    let back = T::decode(&again, v).unwrap_or_else(|e| panic!("{ctx}: re-decode: {e}"));
    assert_eq!(back, typed, "{ctx}: typed value changed after a round trip");
    again == bytes
}

#[derive(Default)]
struct Tally {
    files: usize,
    identical: usize,
    differing: Vec<String>,
}

fn check_file(path: &Path, v: ProtocolVersion, tally: &mut BTreeMap<String, Tally>) {
    let name = path.file_name().unwrap().to_str().unwrap();
    // NNN-<Cmd>-request.wbxml
    let mut parts = name.trim_end_matches(".wbxml").splitn(3, '-');
    let _seq = parts.next().unwrap();
    let cmd = parts.next().unwrap();
    let kind = parts.next().unwrap();
    let bytes = std::fs::read(path).unwrap();
    let ctx = format!("{} (protocol {v})", path.display());
    let identical = match (cmd, kind) {
        ("Sync", "request") => round_trip::<SyncRequest>(&bytes, v, &ctx),
        ("Sync", "response") => {
            // The streamed writer the server answers with writes what the
            // tree encoder writes.
            let typed = SyncResponse::decode(&bytes, v).unwrap();
            assert_eq!(typed.to_wbxml(v), typed.encode(v), "{ctx}: streamed");
            round_trip::<SyncResponse>(&bytes, v, &ctx)
        }
        ("FolderSync", "request") => round_trip::<FolderSyncRequest>(&bytes, v, &ctx),
        ("FolderSync", "response") => round_trip::<FolderSyncResponse>(&bytes, v, &ctx),
        ("Ping", "request") => round_trip::<PingRequest>(&bytes, v, &ctx),
        ("Ping", "response") => round_trip::<PingResponse>(&bytes, v, &ctx),
        ("Provision", "request") => round_trip::<ProvisionRequest>(&bytes, v, &ctx),
        ("Provision", "response") => round_trip::<ProvisionResponse>(&bytes, v, &ctx),
        ("Settings", "request") => round_trip::<SettingsRequest>(&bytes, v, &ctx),
        ("Settings", "response") => round_trip::<SettingsResponse>(&bytes, v, &ctx),
        _ => panic!("{ctx}: command {cmd} {kind} not expected in the corpus"),
    };
    let t = tally.entry(format!("{cmd}-{kind}")).or_default();
    t.files += 1;
    if identical {
        t.identical += 1;
    } else {
        t.differing.push(name.to_owned());
    }
}

#[test]
fn every_corpus_body_decodes_into_its_typed_command_and_round_trips() {
    let mut tally: BTreeMap<String, Tally> = BTreeMap::new();
    let mut n_sessions = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let dir = entry.unwrap().path();
        let session = dir.join("session.json");
        if !session.is_file() {
            continue;
        }
        n_sessions += 1;
        let json: Value =
            serde_json::from_str(&std::fs::read_to_string(&session).unwrap()).unwrap();
        for ex in json["exchanges"].as_array().unwrap() {
            let Some(v) = ex["protocol_version"].as_str() else {
                continue;
            };
            let v: ProtocolVersion = v.parse().unwrap();
            for side in ["request", "response"] {
                if let Some(file) = ex[side]["file"].as_str() {
                    if file.ends_with(".wbxml") {
                        check_file(&dir.join(file), v, &mut tally);
                    }
                }
            }
        }
    }
    assert!(
        n_sessions >= 10,
        "expected the 11 captures, found {n_sessions}"
    );
    let total: usize = tally.values().map(|t| t.files).sum();
    let identical: usize = tally.values().map(|t| t.identical).sum();
    for (k, t) in &tally {
        println!(
            "{k}: {} files, {} byte-identical; first differing: {:?}",
            t.files,
            t.identical,
            t.differing.iter().take(3).collect::<Vec<_>>()
        );
    }
    println!("total {total} files, {identical} byte-identical");
    assert_eq!(total, 600, "every WBXML body of the corpus is checked");
    // Every Exchange response re-encodes byte for byte: that is the form the
    // server writes. Device requests may differ in form only (the typed
    // round trip above is exact): `<DeletesAsMoves>1</DeletesAsMoves>` comes
    // back as `<DeletesAsMoves/>`, an empty string sent as an empty inline
    // string comes back as an empty element, and iOS orders DeviceInformation
    // fields differently.
    for (k, t) in &tally {
        if k.ends_with("-response") {
            assert_eq!(t.identical, t.files, "{k}: {:?}", t.differing);
        }
    }
    assert!(
        identical * 100 >= total * 98,
        "only {identical} of {total} bodies re-encode byte for byte"
    );
    for required in [
        "Sync-request",
        "Sync-response",
        "FolderSync-response",
        "Provision-response",
    ] {
        assert!(
            tally.contains_key(required),
            "{required} missing from the walk"
        );
    }
}

/// The standalone device captures (Windows Mobile 6.1, Omnia Pro, Nokia,
/// iPhone; `standalone/captured-wbxml`) carry no protocol version: the
/// 2.5-era Sync requests (with `Class`) are read as 12.0, the rest as 12.1.
#[test]
fn standalone_device_captures_decode_and_round_trip() {
    let dir = corpus_dir().join("standalone/captured-wbxml");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let root = wbxml::decode(&bytes).unwrap();
        let ctx = path.display().to_string();
        match root.tag.name() {
            Some("Sync") => {
                round_trip::<SyncRequest>(&bytes, ProtocolVersion::V12_0, &ctx);
            }
            Some("FolderSync") if root.child(tags::folderhierarchy::STATUS).is_some() => {
                round_trip::<FolderSyncResponse>(&bytes, ProtocolVersion::V12_1, &ctx);
            }
            Some("FolderSync") => {
                round_trip::<FolderSyncRequest>(&bytes, ProtocolVersion::V12_1, &ctx);
            }
            Some("Settings") => {
                round_trip::<SettingsRequest>(&bytes, ProtocolVersion::V12_1, &ctx);
            }
            other => panic!("{ctx}: unexpected root {other:?}"),
        }
        n += 1;
    }
    assert_eq!(n, 10, "the 10 standalone captures");
}
