//! `opush replay show`: a transcript of a bundle, request by request: time,
//! command, the request (captured head and body, WBXML as masked XML, when
//! full capture was on),
//! what the server observed, each decision (SyncKey issued, items
//! added/changed/deleted, status) and the response.

use crate::bundle::{Bundle, BundleError};
use opush_engine::{DecisionOutput, Event, ServerChange};
use std::fmt::Write as _;

fn time(ms: u64) -> String {
    let secs = ms / 1000;
    let (h, m, s) = ((secs / 3600) % 24, (secs / 60) % 60, secs % 60);
    format!("{h:02}:{m:02}:{s:02}.{:03} (unix ms {ms})", ms % 1000)
}

/// A captured body: masked XML for WBXML, else the text (up to 4 KB).
fn body(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        return "(empty)".to_owned();
    }
    match opush_protocol::wbxml::decode(bytes) {
        Ok(doc) => opush_protocol::xml::element_to_xml_masked(&doc),
        Err(_) => {
            let text = String::from_utf8_lossy(&bytes[..bytes.len().min(4096)]).into_owned();
            if bytes.len() > 4096 {
                format!("{text}\n… ({} bytes in all)", bytes.len())
            } else {
                text
            }
        }
    }
}

/// The captured head and body of one side (`request` or `response`).
fn captured(bundle: &Bundle, req_id: &str, side: &str) -> Option<String> {
    let head = bundle.capture_of(req_id, &format!("{side}-head"));
    let data = bundle.capture_of(req_id, side);
    if head.is_none() && data.is_none() {
        return None;
    }
    let mut s = String::new();
    if let Some(h) = head {
        let _ = writeln!(s, "  {side} head:");
        for line in String::from_utf8_lossy(&h).lines() {
            let _ = writeln!(s, "    {line}");
        }
    }
    if let Some(b) = data {
        let _ = write!(s, "  {side} body:\n{}", body(&b));
    }
    Some(s.trim_end().to_owned())
}

fn decision(out: &DecisionOutput) -> String {
    match out {
        DecisionOutput::Sync(r) => {
            let (mut add, mut change, mut delete) = (0, 0, 0);
            for c in &r.changes {
                match c {
                    ServerChange::Add { .. } => add += 1,
                    ServerChange::Change { .. } => change += 1,
                    ServerChange::Delete { .. } | ServerChange::SoftDelete { .. } => delete += 1,
                }
            }
            format!(
                "collection {} status {} SyncKey {} adds {add} changes {change} deletes {delete} replies {}{}",
                r.collection,
                r.status.code(),
                r.sync_key.map_or("-".to_owned(), |k| k.to_string()),
                r.replies.len(),
                if r.more_available { " MoreAvailable" } else { "" }
            )
        }
        DecisionOutput::FolderSync(r) => format!(
            "status {} SyncKey {} changes {}",
            r.status,
            r.sync_key.map_or("-".to_owned(), |k| k.to_string()),
            r.changes.len()
        ),
        other => format!("{other:?}"),
    }
}

/// The transcript of every request, or only of the `request`-th (from 1).
pub fn show(bundle: &Bundle, request: Option<usize>) -> Result<String, BundleError> {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "bundle: user {} device {}, engine format {}, {} events from seq {}",
        bundle.user,
        bundle.device,
        bundle.engine_format_version,
        bundle.events.len(),
        bundle.start_seq + 1
    );
    let mut n = 0usize;
    let mut shown = request.is_none();
    for (seq, event) in bundle.decoded()? {
        if let Event::RequestReceived {
            req_id,
            at,
            command,
            protocol_version,
            ..
        } = &event
        {
            n += 1;
            shown = request.is_none_or(|r| r == n);
            if shown {
                let _ = writeln!(
                    out,
                    "\n#{n} {} {command:?} (protocol {protocol_version:?}) request {req_id}",
                    time(at.0)
                );
                if let Some(text) = captured(bundle, &req_id.to_string(), "request") {
                    let _ = writeln!(out, "{text}");
                }
            }
            continue;
        }
        if let Event::Displaced { base, events } = &event {
            // Before the requests it is about: shown with the whole transcript.
            if request.is_none() {
                let _ = writeln!(
                    out,
                    "\n  [{seq}] the next {events} events were decided on the state after \
                     event {base} (deferred while another opush process appended)"
                );
            }
            continue;
        }
        if !shown {
            continue;
        }
        let line = match &event {
            Event::BackendObserved {
                collection,
                observation,
                ..
            } => format!(
                "observed collection {collection}: validity {} cursor {} {:?}, {} items, {} vanished",
                observation.validity,
                observation.cursor,
                observation.kind,
                observation.changed.len(),
                observation.vanished.len()
            ),
            Event::HierarchyObserved { folders } => {
                format!("observed {} folders", folders.len())
            }
            e @ (Event::Decided { .. } | Event::PolicyChecked { .. }) => {
                let Some((_, events, record)) = e.decision() else {
                    continue;
                };
                format!(
                    "decision {} at {}: {} ({events} events)\n    input: {:?}",
                    record.input.name(),
                    time(record.at.0),
                    decision(&record.output),
                    record.input
                )
            }
            Event::ResponseSent {
                req_id, status, ..
            } => {
                let mut s = format!("response sent: HTTP {status}");
                if let Some(text) = captured(bundle, &req_id.to_string(), "response") {
                    let _ = write!(s, "\n{text}");
                }
                s
            }
            other => format!("{other:?}"),
        };
        let _ = writeln!(out, "  [{seq}] {line}");
    }
    if request.is_none() {
        let unlogged = bundle.unlogged_captures();
        if !unlogged.is_empty() {
            let _ = writeln!(
                out,
                "\ncaptured requests the log does not record (answered before a handler recorded them):"
            );
        }
        for id in unlogged {
            let _ = writeln!(out, "\ncaptured request {id}");
            for side in ["request", "response"] {
                if let Some(text) = captured(bundle, &id, side) {
                    let _ = writeln!(out, "{text}");
                }
            }
        }
    }
    Ok(out)
}
