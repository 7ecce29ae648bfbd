//! Settings `Oof` ([MS-ASCMD] 2.2.3.119): the status answered for an
//! out-of-office Get or Set, from what the server did about it.
//!
//! The server keeps out-of-office in a Sieve script on the user's mail
//! server (ManageSieve); it writes or reads that script, then records this
//! decision with the outcome (the digest of the script written or read),
//! so `opush replay` re-runs every Oof request. A backend failure (outage,
//! credentials refused) is answered before any decision and records
//! nothing, like every other command. No events: out-of-office is no part
//! of a device's sync state.

use crate::types::Digest;
use rkyv::{Archive, Deserialize, Serialize};

/// What the server did with an `Oof` request.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct OofRequest {
    /// `Oof/Set` (true) or `Oof/Get`.
    pub set: bool,
    /// The outcome.
    pub outcome: OofOutcome,
}

/// The outcome of an `Oof` request on the server's side.
#[derive(Archive, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum OofOutcome {
    /// No Sieve server configured: out-of-office is not offered.
    NotConfigured,
    /// The settings cannot be applied: a malformed value (`conflicting`
    /// false: a bad time, an unknown state, a message too long) or values
    /// that contradict each other (`conflicting`: the end before the start).
    Invalid {
        /// End before start.
        conflicting: bool,
    },
    /// Done: the digest of the script written (Set) or read (Get), `None`
    /// when a Get found no script.
    Done {
        /// blake3 of the script text.
        script: Option<Digest>,
    },
}

/// The `Oof/Status` to answer (a [MS-ASCMD] 2.2.3.177.15 Settings status).
#[derive(Archive, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct OofDecision {
    /// 1 success, 5 invalid arguments, 6 conflicting arguments, 7 denied
    /// by policy.
    pub status: u8,
}

/// The status of an `Oof` request.
pub fn decide_oof(request: &OofRequest) -> OofDecision {
    let status = match request.outcome {
        OofOutcome::NotConfigured => 7,
        OofOutcome::Invalid { conflicting: false } => 5,
        OofOutcome::Invalid { conflicting: true } => 6,
        OofOutcome::Done { .. } => 1,
    };
    OofDecision { status }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        let s = |set, outcome| decide_oof(&OofRequest { set, outcome }).status;
        assert_eq!(s(true, OofOutcome::NotConfigured), 7);
        assert_eq!(s(true, OofOutcome::Invalid { conflicting: false }), 5);
        assert_eq!(s(true, OofOutcome::Invalid { conflicting: true }), 6);
        assert_eq!(s(false, OofOutcome::Done { script: None }), 1);
    }
}
