//! `opush replay run`: folds a bundle's events from its start state and,
//! at every `Decided` event, runs the recorded decision again
//! (`engine::redecide`) on the state folded so far, under the rules of the
//! format that event was written at (`engine::Rules`): a decision answers
//! as the engine that recorded it did. The response and the events it
//! produces must equal the recorded ones, and the final state the exporting
//! binary folded; the first difference is reported.
//!
//! Trace events behind an `Event::Displaced` marker (requests that changed
//! nothing, deferred by one opush process while another appended to the
//! same log) were decided on the state as of the marker's `base`, not on
//! the state folded up to them: their decisions are re-run on that state
//! (kept while folding), with the group's own events folded on top. A
//! group whose base is before the bundle's start cannot be re-run: its
//! decisions are counted as unchecked.

use crate::bundle::{Bundle, BundleError};
use opush_engine::{apply, redecide, DeviceState, Event, Rules};
use std::collections::{BTreeMap, BTreeSet};

/// What a replay went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events folded.
    pub events: usize,
    /// Requests (`RequestReceived`).
    pub requests: usize,
    /// Decisions re-run.
    pub decisions: usize,
    /// Displaced decisions whose state is before the bundle's start (an
    /// export cut after it): not re-run.
    pub unchecked: usize,
}

/// The first place where the replay differs from the recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Sequence of the `Decided` event (or of the last event for the state).
    pub seq: u64,
    /// Request id.
    pub req_id: u64,
    /// What was compared ("Sync response", "events", "final state"…).
    pub what: String,
    /// The decision's input, as recorded.
    pub request: String,
    /// What the recording says.
    pub expected: String,
    /// What this binary decided.
    pub got: String,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "divergence at event {} (request {}): {}",
            self.seq, self.req_id, self.what
        )?;
        writeln!(f, "request:  {}", self.request)?;
        writeln!(f, "expected: {}", self.expected)?;
        write!(f, "got:      {}", self.got)
    }
}

/// Replays `bundle`. `Ok(Err(d))`: the bundle is fine but this binary
/// decides differently.
pub fn run(bundle: &Bundle) -> Result<Result<Report, Box<Divergence>>, BundleError> {
    let mut state = bundle.start()?;
    let events = bundle.decoded()?;
    let mut report = Report {
        events: 0,
        requests: 0,
        decisions: 0,
        unchecked: 0,
    };
    // The states displaced groups were decided on, kept as the fold passes
    // them.
    let bases: BTreeSet<u64> = events
        .iter()
        .filter_map(|(_, e)| match e {
            Event::Displaced { base, .. } => Some(*base),
            _ => None,
        })
        .collect();
    let mut at: BTreeMap<u64, DeviceState> = BTreeMap::new();
    if bases.contains(&bundle.start_seq) {
        at.insert(bundle.start_seq, state.clone());
    }
    // Inside a displaced group: the state it was decided on (None: before
    // the bundle) and how many of its events are left.
    let mut group: Option<(Option<DeviceState>, u32)> = None;
    for (i, ((seq, event), stored)) in events.iter().zip(&bundle.events).enumerate() {
        let decided_on = match &group {
            Some((shadow, _)) => shadow.as_ref(),
            None => Some(&state),
        };
        if let (Some(_), None) = (event.decision(), decided_on) {
            report.unchecked += 1;
        }
        if let (Some((req_id, n, record)), Some(decided_on)) = (event.decision(), decided_on) {
            let rules = Rules::of(stored.format_version()?);
            let req_id = &req_id;
            let n = &n;
            let record = record.as_ref();
            let div = |what: &str, expected: String, got: String| {
                Box::new(Divergence {
                    seq: *seq,
                    req_id: *req_id,
                    what: what.to_owned(),
                    request: format!("{:?}", record.input),
                    expected,
                    got,
                })
            };
            let again = match redecide(decided_on, record, rules) {
                Ok(d) => d,
                Err(e) => {
                    return Ok(Err(div(
                        "decision",
                        format!("{:?}", record.output),
                        format!("error: {e}"),
                    )))
                }
            };
            if again.response != record.output {
                return Ok(Err(div(
                    &format!("{} response", record.input.name()),
                    format!("{:?}", record.output),
                    format!("{:?}", again.response),
                )));
            }
            let n = *n as usize;
            let recorded: Vec<&Event> = events.iter().skip(i + 1).take(n).map(|(_, e)| e).collect();
            let produced: Vec<&Event> = again.events.iter().collect();
            if recorded != produced {
                return Ok(Err(div(
                    &format!("{} events", record.input.name()),
                    format!("{recorded:?}"),
                    format!("{produced:?}"),
                )));
            }
            report.decisions += 1;
        }
        if matches!(event, Event::RequestReceived { .. }) {
            report.requests += 1;
        }
        apply(&mut state, event);
        report.events += 1;
        if let Some((shadow, left)) = &mut group {
            if let Some(shadow) = shadow {
                apply(shadow, event);
            }
            *left = left.saturating_sub(1);
            if *left == 0 {
                group = None;
            }
        }
        if let Event::Displaced { base, events } = event {
            group = (*events > 0).then(|| (at.get(base).cloned(), *events));
        }
        if bases.contains(seq) {
            at.insert(*seq, state.clone());
        }
    }
    let end = bundle.end()?;
    if state != end {
        let (seq, req_id) = events
            .last()
            .map_or((bundle.start_seq, 0), |(s, _)| (*s, 0));
        return Ok(Err(Box::new(Divergence {
            seq,
            req_id,
            what: "final state".to_owned(),
            request: "(all events folded)".to_owned(),
            expected: format!("{end:?}"),
            got: format!("{state:?}"),
        })));
    }
    Ok(Ok(report))
}
