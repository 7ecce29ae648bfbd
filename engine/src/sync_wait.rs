//! Sync as a long poll ([MS-ASCMD] 2.2.3.198 `Wait`, 2.2.3.88.2
//! `HeartbeatInterval`, 3.1.5.4): whether a Sync that has nothing to send
//! may wait for a change, and until when.
//!
//! The engine only validates and sets the deadline (`now` + the interval);
//! the wait itself (parking on the push hub, re-running the Sync when a
//! watched folder changes, the empty answer at the deadline) is the
//! server's job, like a Ping's. Nothing here is remembered in the state:
//! the request a Sync stands for (its `Wait` included) is remembered by the
//! server for empty and `Partial` Syncs.

use crate::decision::{Decision, EngineConfig};
use crate::types::Timestamp;

/// Shortest `Wait` (minutes) the spec allows.
pub const MIN_WAIT_MINUTES: u32 = 1;
/// Longest `Wait` (minutes) the spec allows.
pub const MAX_WAIT_MINUTES: u32 = 59;

/// The long-poll part of a Sync request.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SyncWaitRequest {
    /// `Wait`, in minutes (12.1+).
    pub wait: Option<u32>,
    /// `HeartbeatInterval`, in seconds (14.0+).
    pub heartbeat: Option<u32>,
}

/// What a Sync with nothing to send does.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum SyncWaitResponse {
    /// Neither element: answer at once.
    NoWait,
    /// Wait up to `seconds` for a change of one of the request's folders;
    /// at `deadline` send the empty Sync response.
    Park {
        /// The interval, in seconds.
        seconds: u32,
        /// `now` + the interval.
        deadline: Timestamp,
    },
    /// Sync Status 14 with this `Limit` (minutes for `Wait`, seconds for
    /// `HeartbeatInterval`): the nearest accepted value.
    OutOfRange {
        /// The `Limit` element.
        limit: u32,
    },
    /// Both elements given: Sync Status 4.
    Both,
}

impl SyncWaitResponse {
    /// The Sync Status it answers with, when it answers at once.
    pub fn status(&self) -> Option<u8> {
        match self {
            SyncWaitResponse::NoWait | SyncWaitResponse::Park { .. } => None,
            SyncWaitResponse::OutOfRange { .. } => Some(14),
            SyncWaitResponse::Both => Some(4),
        }
    }
}

/// The accepted `Wait` range in minutes: the spec's 1–59, within the
/// configured heartbeat maximum (`[devices] heartbeat_max_s`).
pub fn wait_bounds(config: &EngineConfig) -> (u32, u32) {
    let max = (config.max_heartbeat / 60).clamp(MIN_WAIT_MINUTES, MAX_WAIT_MINUTES);
    (MIN_WAIT_MINUTES, max)
}

/// Decides the long-poll part of a Sync: `HeartbeatInterval` must lie in
/// the Ping heartbeat bounds of the configuration, `Wait` in
/// [`wait_bounds`]; both at once is a protocol error.
pub fn decide_sync_wait(
    req: &SyncWaitRequest,
    now: Timestamp,
    config: &EngineConfig,
) -> Decision<SyncWaitResponse> {
    let response = match (req.wait, req.heartbeat) {
        (None, None) => SyncWaitResponse::NoWait,
        (Some(_), Some(_)) => SyncWaitResponse::Both,
        (Some(minutes), None) => {
            let (min, max) = wait_bounds(config);
            if minutes < min {
                SyncWaitResponse::OutOfRange { limit: min }
            } else if minutes > max {
                SyncWaitResponse::OutOfRange { limit: max }
            } else {
                park(minutes * 60, now)
            }
        }
        (None, Some(seconds)) => {
            if seconds < config.min_heartbeat {
                SyncWaitResponse::OutOfRange {
                    limit: config.min_heartbeat,
                }
            } else if seconds > config.max_heartbeat {
                SyncWaitResponse::OutOfRange {
                    limit: config.max_heartbeat,
                }
            } else {
                park(seconds, now)
            }
        }
    };
    Decision {
        response,
        events: Vec::new(),
    }
}

fn park(seconds: u32, now: Timestamp) -> SyncWaitResponse {
    SyncWaitResponse::Park {
        seconds,
        deadline: now.plus_ms(u64::from(seconds) * 1000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decide(wait: Option<u32>, heartbeat: Option<u32>) -> SyncWaitResponse {
        let config = EngineConfig::default();
        decide_sync_wait(
            &SyncWaitRequest { wait, heartbeat },
            Timestamp(1_000),
            &config,
        )
        .response
    }

    // [MS-ASCMD] 2.2.3.198 Wait: 1 through 59; outside, Status 14 + Limit.
    #[test]
    fn wait_is_minutes_within_the_spec_range() {
        assert_eq!(decide(None, None), SyncWaitResponse::NoWait);
        assert_eq!(
            decide(Some(5), None),
            SyncWaitResponse::Park {
                seconds: 300,
                deadline: Timestamp(301_000)
            }
        );
        assert_eq!(
            decide(Some(0), None),
            SyncWaitResponse::OutOfRange { limit: 1 }
        );
        assert_eq!(
            decide(Some(60), None),
            SyncWaitResponse::OutOfRange { limit: 59 }
        );
    }

    // [MS-ASCMD] 2.2.3.88.2 HeartbeatInterval: out of range → 14 + Limit;
    // with Wait → Status 4.
    #[test]
    fn heartbeat_is_seconds_within_the_configured_bounds() {
        assert_eq!(
            decide(None, Some(59)),
            SyncWaitResponse::OutOfRange { limit: 60 }
        );
        assert_eq!(
            decide(None, Some(3541)),
            SyncWaitResponse::OutOfRange { limit: 3540 }
        );
        assert_eq!(decide(None, Some(60)).status(), None, "60 s is accepted");
        assert_eq!(decide(Some(1), Some(60)), SyncWaitResponse::Both);
        assert_eq!(SyncWaitResponse::Both.status(), Some(4));
    }

    #[test]
    fn a_lower_configured_maximum_bounds_wait_too() {
        let config = EngineConfig {
            max_heartbeat: 600,
            ..EngineConfig::default()
        };
        let req = SyncWaitRequest {
            wait: Some(11),
            heartbeat: None,
        };
        assert_eq!(
            decide_sync_wait(&req, Timestamp(0), &config).response,
            SyncWaitResponse::OutOfRange { limit: 10 }
        );
    }
}
