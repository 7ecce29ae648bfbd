//! `opush replay run`: folds a bundle's events from its start state and,
//! at every `Decided` event, runs the recorded decision again
//! (`engine::redecide`) on the state folded so far, under the rules of the
//! format that event was written at (`engine::Rules`): a decision answers
//! as the engine that recorded it did. The response and the events it
//! produces must equal the recorded ones, and the final state the exporting
//! binary folded; the first difference is reported.

use crate::bundle::{Bundle, BundleError};
use opush_engine::{apply, redecide, Event, Rules};

/// What a replay went through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Events folded.
    pub events: usize,
    /// Requests (`RequestReceived`).
    pub requests: usize,
    /// Decisions re-run.
    pub decisions: usize,
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
    };
    for (i, ((seq, event), stored)) in events.iter().zip(&bundle.events).enumerate() {
        if let Some((req_id, n, record)) = event.decision() {
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
            let again = match redecide(&state, record, rules) {
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
