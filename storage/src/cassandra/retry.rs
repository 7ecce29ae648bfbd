//! The two retry policies of the Cassandra backend, with a cap on retries
//! (the driver has none) and a tracing line for each retry and downgrade.
//!
//! * `ALWAYS_RETRY`: read timeouts, write timeouts and unavailable errors are
//!   retried at the same consistency, up to `max_retries` times.
//! * `RETRY_OR_CL_DOWNGRADE`: the same, but when the error says too few
//!   replicas answered or are alive, the retry asks for the consistency the
//!   live replicas can give (THREE, TWO or ONE), and logs it.
//!
//! Serial (LWT) consistency is never downgraded: Paxos needs a quorum. This
//! module decides only; it must not send requests.

use scylla::errors::{DbError, RequestAttemptError};
use scylla::policies::retry::{RequestInfo, RetryDecision, RetryPolicy, RetrySession};
use scylla::statement::Consistency;

use crate::RetryPolicyKind;

/// A capped, logging retry policy.
#[derive(Debug, Clone)]
pub struct OpushRetryPolicy {
    kind: RetryPolicyKind,
    max_retries: u32,
}

impl OpushRetryPolicy {
    /// A policy of `kind` that gives up after `max_retries` retries.
    pub fn new(kind: RetryPolicyKind, max_retries: u32) -> Self {
        OpushRetryPolicy { kind, max_retries }
    }
}

impl RetryPolicy for OpushRetryPolicy {
    fn new_session(&self) -> Box<dyn RetrySession> {
        Box::new(OpushRetrySession {
            kind: self.kind,
            max_retries: self.max_retries,
            retries: 0,
        })
    }
}

struct OpushRetrySession {
    kind: RetryPolicyKind,
    max_retries: u32,
    retries: u32,
}

/// The strongest consistency `alive` replicas can satisfy.
fn downgrade_for(alive: i32) -> Option<Consistency> {
    match alive {
        a if a >= 3 => Some(Consistency::Three),
        2 => Some(Consistency::Two),
        1 => Some(Consistency::One),
        _ => None,
    }
}

fn is_serial(c: Consistency) -> bool {
    matches!(c, Consistency::Serial | Consistency::LocalSerial)
}

impl RetrySession for OpushRetrySession {
    fn decide_should_retry(&mut self, info: RequestInfo) -> RetryDecision {
        if self.retries >= self.max_retries {
            tracing::warn!(
                target: "storage::retry",
                policy = ?self.kind,
                retries = self.retries,
                error = %info.error,
                "giving up after max retries"
            );
            return RetryDecision::DontRetry;
        }
        // (required, alive-or-received) when the error tells how many replicas answered.
        let (retry, replicas) = match info.error {
            RequestAttemptError::DbError(
                DbError::Unavailable {
                    required, alive, ..
                },
                _,
            ) => (true, Some((*required, *alive))),
            RequestAttemptError::DbError(
                DbError::ReadTimeout {
                    required, received, ..
                },
                _,
            ) => (true, Some((*required, *received))),
            RequestAttemptError::DbError(
                DbError::WriteTimeout {
                    required, received, ..
                },
                _,
            ) => (true, Some((*required, *received))),
            RequestAttemptError::DbError(DbError::Overloaded | DbError::IsBootstrapping, _) => {
                (true, None)
            }
            RequestAttemptError::BrokenConnectionError(_) => (info.is_idempotent, None),
            _ => (false, None),
        };
        if !retry {
            return RetryDecision::DontRetry;
        }
        self.retries += 1;
        if self.kind == RetryPolicyKind::RetryOrClDowngrade && !is_serial(info.consistency) {
            if let Some((required, alive)) = replicas {
                if alive < required {
                    if let Some(new_cl) = downgrade_for(alive) {
                        if new_cl != info.consistency {
                            tracing::warn!(
                                target: "storage::retry",
                                initial_consistency = ?info.consistency,
                                new_consistency = ?new_cl,
                                replicas_required = required,
                                replicas_alive = alive,
                                retry = self.retries,
                                "downgrading consistency and retrying"
                            );
                            return RetryDecision::RetrySameTarget(Some(new_cl));
                        }
                    }
                }
            }
        }
        tracing::info!(
            target: "storage::retry",
            policy = ?self.kind,
            consistency = ?info.consistency,
            retry = self.retries,
            error = %info.error,
            "retrying"
        );
        // Timeouts and "unavailable" come from a live coordinator: ask it
        // again, so that `max_retries` (not the length of the load-balancing
        // plan) bounds the attempts. A node that cannot answer is skipped.
        match info.error {
            RequestAttemptError::DbError(DbError::Overloaded | DbError::IsBootstrapping, _)
            | RequestAttemptError::BrokenConnectionError(_) => RetryDecision::RetryNextTarget(None),
            _ => RetryDecision::RetrySameTarget(None),
        }
    }

    fn reset(&mut self) {
        self.retries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downgrade_matches_alive_replicas() {
        assert_eq!(downgrade_for(5), Some(Consistency::Three));
        assert_eq!(downgrade_for(2), Some(Consistency::Two));
        assert_eq!(downgrade_for(1), Some(Consistency::One));
        assert_eq!(downgrade_for(0), None);
    }
}
