//! Replays every bundle checked in under `tests/replay/` (recorded against
//! the real Dovecot by `server/tests/replay_record*.rs`). No service is
//! needed. Also: an altered bundle diverges, and a bundle from a newer
//! engine format is refused clearly.
//!
//! Two kinds of golden: `<name>.bundle` holds the current format's
//! answers and is re-recorded on purpose (`UPDATE_REPLAY=1`) when the
//! current behaviour changes; `<name>-v<N>.bundle` was recorded by a
//! format-N engine and is never re-recorded. A change of what a decision
//! of format N answers makes a `-v<N>` golden diverge here: the change
//! must bump `FORMAT_VERSION` and keep the old answer behind
//! `opush_engine::Rules` (docs/ARCHITECTURE.md, "Replay"), and each such
//! gate is listed in [`GATES`] with the golden that exercises it.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use opush_engine::{
    apply, decode_event, encode_event, redecide, Decision, DecisionOutput, DeviceState, Event,
    Rules, SyncKey, FORMAT_VERSION,
};
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
            Err(div) => match versioned(&path) {
                Some(v) => panic!(
                    "{}: {div}\n(a decision of format {v} answers differently now: bump \
                     FORMAT_VERSION and keep the format-{v} answer behind opush_engine::Rules; \
                     never re-record a versioned golden)",
                    path.display()
                ),
                None => panic!(
                    "{}: {div}\n(an intended change of behaviour? gate the old answer in \
                     opush_engine::Rules under a new FORMAT_VERSION, keep this bundle as \
                     <name>-v{}.bundle, then re-record with UPDATE_REPLAY=1 \
                     cargo test -p opush-server --test replay_record)",
                    path.display(),
                    bundle.engine_format_version
                ),
            },
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

/// The format a golden's name says it was recorded at (`<name>-v<N>.bundle`).
fn versioned(path: &std::path::Path) -> Option<u32> {
    let stem = path.file_stem()?.to_str()?;
    stem.rsplit_once("-v")?.1.parse().ok()
}

/// A `-v<N>` golden holds what a format-N engine recorded: every event's
/// header says N (re-recording it with a newer engine would make it test
/// nothing old).
#[test]
fn versioned_goldens_keep_their_format() {
    let mut seen = 0;
    for (path, bundle) in bundles() {
        let Some(v) = versioned(&path) else { continue };
        seen += 1;
        assert_eq!(bundle.engine_format_version, v, "{}", path.display());
        for e in &bundle.events {
            assert_eq!(
                e.format_version().unwrap(),
                v,
                "{} event {}",
                path.display(),
                e.seq
            );
        }
    }
    assert!(seen >= 3, "versioned goldens: {seen}");
}

/// One decision change gated in `opush_engine::Rules`.
struct Gate {
    /// The format that introduced it.
    format: u32,
    /// The `Rules` method that keeps the old answer.
    rule: &'static str,
    /// The golden, recorded by the format before, that holds a decision it
    /// changed.
    golden: &'static str,
    /// Whether a decision answers differently because of this gate: what
    /// the golden's format decided, then what the gate's format decides.
    changed: fn(&Decision<DecisionOutput>, &Decision<DecisionOutput>) -> bool,
}

/// A Sync's reply statuses.
fn sync_statuses(d: &Decision<DecisionOutput>) -> Option<Vec<u8>> {
    match &d.response {
        DecisionOutput::Sync(r) => Some(r.replies.iter().map(|r| r.status).collect()),
        _ => None,
    }
}

/// A MoveItems answer's status.
fn move_status(d: &Decision<DecisionOutput>) -> Option<u8> {
    match &d.response {
        DecisionOutput::Move(r) => Some(r.status),
        _ => None,
    }
}

/// The `stale` flag of a move's `ItemMovedByDevice`.
fn moved_stale(d: &Decision<DecisionOutput>) -> Option<bool> {
    d.events.iter().find_map(|e| match e {
        Event::ItemMovedByDevice { stale, .. } => Some(*stale),
        _ => None,
    })
}

/// How many `DeviceCopyStale` a decision records.
fn copies_stale(d: &Decision<DecisionOutput>) -> usize {
    d.events
        .iter()
        .filter(|e| matches!(e, Event::DeviceCopyStale { .. }))
        .count()
}

/// Every decision change gated in `opush_engine::Rules`, each with the
/// golden that exercises it. A new gate adds a row here and a golden
/// recorded by the format before it (`<name>-v<N-1>.bundle`).
const GATES: &[Gate] = &[
    // A Delete of a vanished item succeeds (was Status 8).
    Gate {
        format: 8,
        rule: "delete_of_vanished_succeeds",
        golden: "retries-v7.bundle",
        changed: |then, now| {
            sync_statuses(then).is_some_and(|s| s.contains(&8))
                && sync_statuses(now) != sync_statuses(then)
        },
    },
    // A retried MoveItems gets its first answer (was Status 1): a move
    // records `MoveRemembered` for it (a format-7 log has none, so its
    // retry still answers 1 under format 8).
    Gate {
        format: 8,
        rule: "retried_move_answered",
        golden: "retries-v7.bundle",
        changed: |then, now| {
            let remembered = |d: &Decision<DecisionOutput>| {
                d.events
                    .iter()
                    .any(|e| matches!(e, Event::MoveRemembered { .. }))
            };
            move_status(then) == Some(3) && !remembered(then) && remembered(now)
        },
    },
    // A moved copy is judged by the moved message's flags.
    Gate {
        format: 8,
        rule: "move_judges_copy_by_moved_flags",
        golden: "stale-move-v7.bundle",
        changed: |then, now| moved_stale(then) == Some(false) && moved_stale(now) == Some(true),
    },
    // A Change refused with Status 7 marks the device's copy stale.
    Gate {
        format: 8,
        rule: "refused_change_refreshes_copy",
        golden: "refused-change-v7.bundle",
        changed: |then, now| {
            sync_statuses(then).is_some_and(|s| s.contains(&7))
                && copies_stale(then) == 0
                && copies_stale(now) > 0
        },
    },
];

/// Each gate is exercised by its golden: the golden was recorded before the
/// gate's format, and one of its decisions, decided under the gate's
/// format, answers differently in the way the gate says. Without that
/// golden, losing the gate's old answer would go unnoticed (the golden's
/// replay is what fails then).
#[test]
fn every_gate_is_exercised_by_an_older_golden() {
    let goldens = bundles();
    for gate in GATES {
        assert!(gate.format <= FORMAT_VERSION);
        let (_, bundle) = goldens
            .iter()
            .find(|(p, _)| p.ends_with(gate.golden))
            .unwrap_or_else(|| panic!("{}: no golden {}", gate.rule, gate.golden));
        assert!(
            bundle.engine_format_version < gate.format,
            "{}: {} is not older than format {}",
            gate.rule,
            gate.golden,
            gate.format
        );
        let mut state: DeviceState = bundle.start().unwrap();
        let mut exercised = false;
        for (stored, (_, event)) in bundle.events.iter().zip(bundle.decoded().unwrap()) {
            if let Some((_, _, record)) = event.decision() {
                let own = Rules::of(stored.format_version().unwrap());
                let then = redecide(&state, &record, own).unwrap();
                if let Ok(now) = redecide(&state, &record, Rules::of(gate.format)) {
                    exercised |= (gate.changed)(&then, &now);
                }
            }
            apply(&mut state, &event);
        }
        assert!(
            exercised,
            "{}: no decision of {} answers differently under format {}",
            gate.rule, gate.golden, gate.format
        );
    }
}

/// The format-7 golden replays only because each decision is re-run under
/// the rules of the format that recorded it: under the current rules its
/// Delete of a vanished item is the first divergence.
#[test]
fn the_format_7_golden_needs_its_rules() {
    let (_, bundle) = bundles()
        .into_iter()
        .find(|(p, _)| p.ends_with("retries-v7.bundle"))
        .unwrap();
    assert!(run(&bundle).unwrap().is_ok());
    let mut state = bundle.start().unwrap();
    for (_, event) in bundle.decoded().unwrap() {
        if let Some((_, _, record)) = event.decision() {
            let now = redecide(&state, &record, Rules::CURRENT).unwrap();
            if now.response != record.output {
                assert_eq!(record.input.name(), "Sync", "{:?}", record.input);
                let DecisionOutput::Sync(old) = &record.output else {
                    panic!("{:?}", record.output)
                };
                assert_eq!(
                    old.replies.iter().map(|r| r.status).collect::<Vec<_>>(),
                    [8]
                );
                return;
            }
        }
        apply(&mut state, &event);
    }
    panic!("the format-7 golden replays identically under the current rules");
}
