//! Replays every bundle checked in under `tests/replay/` (recorded against
//! the real Dovecot by `server/tests/replay_record.rs`; re-record on purpose
//! with `UPDATE_REPLAY=1`). No service is needed. An intentional change of
//! behaviour shows up here as a divergence. Also: an altered bundle
//! diverges, and a bundle from a newer engine format is refused clearly.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use opush_engine::{decode_event, encode_event, DecisionOutput, Event, SyncKey, FORMAT_VERSION};
use opush_replay::{run, show, Bundle, BundleError};
use std::path::PathBuf;

fn bundles() -> Vec<(PathBuf, Bundle)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/replay");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bundle") {
            let text = std::fs::read_to_string(&path).unwrap();
            out.push((path, Bundle::from_json(&text).unwrap()));
        }
    }
    assert!(!out.is_empty(), "no bundle under {}", dir.display());
    out
}

#[test]
fn every_checked_in_bundle_replays_identically() {
    for (path, bundle) in bundles() {
        let report = match run(&bundle).unwrap() {
            Ok(r) => r,
            Err(div) => panic!(
                "{}: {div}\n(an intended change of behaviour? re-record with UPDATE_REPLAY=1 \
                 cargo test -p opush-server --test replay_record)",
                path.display()
            ),
        };
        assert!(report.decisions > 0, "{}: no decision", path.display());
        let text = show(&bundle, None).unwrap();
        assert!(text.contains("decision "), "{text}");
        assert!(
            text.contains("response sent: HTTP") || text.contains("#1 "),
            "{text}"
        );
    }
}

#[test]
fn an_altered_decision_is_a_divergence() {
    let (_, mut bundle) = bundles().remove(0);
    // The recording now says the server issued another SyncKey.
    let idx = bundle
        .events
        .iter()
        .position(|e| {
            matches!(e.decode().unwrap(), Event::Decided { record, .. }
                if matches!(&record.output, DecisionOutput::Sync(r) if r.sync_key.is_some()))
        })
        .unwrap();
    let mut event = bundle.events[idx].decode().unwrap();
    if let Event::Decided { record, .. } = &mut event {
        if let DecisionOutput::Sync(r) = &mut record.output {
            r.sync_key = Some(SyncKey(r.sync_key.unwrap().0 + 7));
        }
    }
    bundle.events[idx].payload = B64.encode(encode_event(&event).unwrap());
    let div = run(&bundle).unwrap().unwrap_err();
    assert_eq!(div.seq, bundle.events[idx].seq);
    assert!(div.what.contains("Sync response"), "{div}");
    assert!(div.to_string().contains("expected:"), "{div}");
}

#[test]
fn an_altered_observation_changes_the_final_state() {
    let (_, mut bundle) = bundles().remove(0);
    // Drop the last event: the state the exporter folded is not reached.
    let last = bundle.events.pop().unwrap();
    assert!(decode_event(&B64.decode(&last.payload).unwrap()).is_ok());
    let div = run(&bundle).unwrap().unwrap_err();
    assert_eq!(div.what, "final state");
}

#[test]
fn a_bundle_from_a_newer_engine_is_refused_clearly() {
    let (_, mut bundle) = bundles().remove(0);
    // Whatever version the golden was recorded with (older ones are kept).
    bundle.engine_format_version = FORMAT_VERSION + 1;
    let text = bundle.to_json();
    let err = Bundle::from_json(&text).unwrap_err();
    assert!(matches!(err, BundleError::NewerEngine { .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("newer than this opush"), "{msg}");
    assert!(msg.contains(&(FORMAT_VERSION + 1).to_string()), "{msg}");
}
