//! Decision records: a log written the way the server writes it (each
//! decision's `Decided` right before its events) can be re-run decision by
//! decision with `redecide` and gives the same responses, the same events
//! and the same state; a changed input shows up as a different decision.
#![allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]

mod common;

use common::*;
use opush_engine::*;

const NOW: u64 = 1_000 * 24 * HOUR;

/// Re-runs every decision of `log` from an empty state. `Err` names the
/// first decision (its index in the log) that came out differently.
fn rerun(log: &[Event]) -> Result<(usize, DeviceState), String> {
    let mut state = DeviceState::default();
    let mut n_decisions = 0;
    let mut i = 0;
    while i < log.len() {
        if let Event::Decided { events, record, .. } = &log[i] {
            let n = *events as usize;
            let again =
                redecide(&state, record, Rules::CURRENT).map_err(|e| format!("#{i}: {e}"))?;
            if again.response != record.output {
                return Err(format!("#{i}: response differs"));
            }
            let recorded = log
                .get(i + 1..i + 1 + n)
                .ok_or(format!("#{i}: log too short"))?;
            if again.events != recorded {
                return Err(format!("#{i}: events differ"));
            }
            n_decisions += 1;
        }
        apply(&mut state, &log[i]);
        i += 1;
    }
    Ok((n_decisions, state))
}

fn busy_session() -> (Backend, Pair) {
    let mut backend = Backend::new();
    let mut pair = Pair::new(EngineConfig::default());
    pair.folder_sync(&backend);
    for i in 0..7 {
        backend
            .folders
            .get_mut(&INBOX)
            .unwrap()
            .add(NOW - i * HOUR, i);
    }
    pair.sync(&mut backend, INBOX, 3, NOW, false);
    pair.sync(&mut backend, INBOX, 3, NOW, false);
    // A lost answer, then the retry.
    pair.sync(&mut backend, INBOX, 3, NOW, true);
    pair.sync(&mut backend, INBOX, 3, NOW, false);
    let sid = *pair.device.items.keys().next().unwrap();
    pair.device.local_change(sid, 99);
    pair.device.local_add(CONTACTS, 5);
    pair.settle(&mut backend, INBOX, NOW + HOUR);
    pair.sync(&mut backend, CONTACTS, 3, NOW, false);
    pair.settle(&mut backend, CONTACTS, NOW + HOUR);
    pair.folder_sync(&backend);
    (backend, pair)
}

#[test]
fn every_recorded_decision_comes_out_the_same() {
    let (_backend, pair) = busy_session();
    let log = &pair.server.log;
    let (n, state) = rerun(log).unwrap();
    let recorded = log
        .iter()
        .filter(|e| matches!(e, Event::Decided { .. }))
        .count();
    assert_eq!(n, recorded);
    assert!(n >= 8, "the scenario makes several decisions, got {n}");
    assert_eq!(state, pair.server.state);
}

// Fold rule: Decided, RequestReceived and ResponseSent change no sync state.
#[test]
fn log_only_events_change_no_sync_state() {
    let (_backend, pair) = busy_session();
    let log = &pair.server.log;
    let mut with = DeviceState::default();
    let mut without = DeviceState::default();
    for e in log {
        apply(&mut with, e);
        apply(
            &mut with,
            &Event::ResponseSent {
                req_id: 1,
                status: 200,
                digest: Digest::of(b""),
            },
        );
        if !matches!(e, Event::Decided { .. }) {
            apply(&mut without, e);
        }
    }
    assert_ne!(
        with.applied, without.applied,
        "every event counts as applied"
    );
    with.applied = 0;
    without.applied = 0;
    assert_eq!(with, without);
}

#[test]
fn a_changed_input_is_a_different_decision() {
    let (_backend, pair) = busy_session();
    let mut log = pair.server.log.clone();
    // Pretend the device had presented another SyncKey in its second Sync.
    let idx = log
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Decided { record, .. } if matches!(record.input, DecisionInput::Sync(_))))
        .nth(1)
        .map(|(i, _)| i)
        .unwrap();
    if let Event::Decided { record, .. } = &mut log[idx] {
        if let DecisionInput::Sync(input) = &mut record.input {
            input.request.sync_key = SyncKey(input.request.sync_key.0 + 1000);
        }
    }
    let err = rerun(&log).unwrap_err();
    assert!(err.starts_with(&format!("#{idx}:")), "{err}");
}

#[test]
fn decided_events_survive_the_codec() {
    let (_backend, pair) = busy_session();
    for e in pair
        .server
        .log
        .iter()
        .filter(|e| matches!(e, Event::Decided { .. }))
    {
        let bytes = encode_event(e).unwrap();
        assert_eq!(&bytes[4..8], &FORMAT_VERSION.to_le_bytes());
        assert_eq!(&decode_event(&bytes).unwrap(), e);
    }
}
