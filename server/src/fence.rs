//! Fencing: a request that cannot prove it still holds its device's lease
//! carries out no further backend effect.
//!
//! A leased request ([`crate::session::DeviceSession::lease`]) renews its
//! `device_leases` row every third of `[storage] lease_ttl_s`. When the
//! store stays unreachable, the renewals fail and the row expires by the
//! store's clock; another opush process may then take the lease and carry
//! out the same device's changes. So the request keeps a [`LeaseClock`]:
//! the instant its last successful take or renewal was *sent* (the row
//! lives at least the TTL from then, by the store's clock). Once
//! [`fence_after`] has passed since, or a renewal found the lease gone,
//! the lease is no longer proven.
//!
//! One guard, [`check`], stands in front of every backend effect: the IMAP
//! commands that change a mailbox (`Session::exec`, for STORE, MOVE,
//! COPY, EXPUNGE, APPEND, CREATE, DELETE, RENAME, (UN)SUBSCRIBE), an SMTP
//! submission (before MAIL FROM and again before the message's bytes), and
//! ManageSieve's PUTSCRIPT and SETACTIVE. It looks at the lease of the
//! current request (the task-local [`crate::session::RequestMeta`]), so no
//! effect site passes anything. A refused effect marks the request: it
//! records nothing more ([`crate::session::DeviceSession::commit_request`]
//! refuses to append) and its answer is a retryable failure
//! ([`crate::commands::CommandError::LeaseLost`]: Status 111 from 14.0,
//! HTTP 503 + Retry-After before), whatever the handler made of the
//! refused effect. What the request did before is what a process killed at
//! that point leaves: the device's retry finds it done (the effect order,
//! `engine/src/lib.rs`).
//!
//! Outside a request (the push watchers, Sent-copy resumers: their own
//! claims guard them) and on stores without leases (embedded, schema v3)
//! there is no lease clock and [`check`] lets everything through.
//!
//! What fencing cannot do: an effect started while the lease was proven
//! but still under way at the lease's expiry (an APPEND of many MiB over a
//! slow link, with the store unreachable at the same time) may overlap
//! with the next holder's. The margin below ([`fence_after`]) covers the
//! store's one-second TTL granularity, clock skew between Cassandra nodes
//! and the time a usual effect takes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// How long after its last proof (take or renewal sent) a lease of `ttl`
/// still counts as held: `ttl` less a margin of a fifth of it (at least
/// 2 s: the store's TTLs count whole seconds, and its nodes' clocks may
/// differ a little), but never less than half of `ttl` (renewals come
/// every third of it).
pub fn fence_after(ttl: Duration) -> Duration {
    let margin = (ttl / 5).max(Duration::from_secs(2));
    ttl.saturating_sub(margin).max(ttl / 2)
}

/// Why an effect was not carried out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} not carried out: {why}")]
pub struct Fenced {
    /// The effect (`APPEND`, `SMTP submission`, …).
    pub what: String,
    /// Why the lease is not proven.
    pub why: String,
}

/// The proof that one request holds its device's lease.
#[derive(Debug)]
pub struct LeaseClock {
    fence_after: Duration,
    /// When the last successful take or renewal was sent.
    proven: Mutex<Instant>,
    /// A renewal found the lease gone (expired, or another holder's).
    lost: AtomicBool,
}

impl LeaseClock {
    /// A lease of `ttl` taken by a request sent at `taken`.
    pub fn new(ttl: Duration, taken: Instant) -> Arc<LeaseClock> {
        Arc::new(LeaseClock {
            fence_after: fence_after(ttl),
            proven: Mutex::new(taken),
            lost: AtomicBool::new(false),
        })
    }

    fn proven(&self) -> MutexGuard<'_, Instant> {
        self.proven.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A renewal sent at `sent` was applied.
    pub fn renewed(&self, sent: Instant) {
        let mut p = self.proven();
        if sent > *p {
            *p = sent;
        }
    }

    /// A renewal found the lease gone.
    pub fn lost(&self) {
        self.lost.store(true, Ordering::Release);
    }

    /// `Ok` while the lease is proven; else why not.
    pub fn proof(&self) -> Result<(), String> {
        if self.lost.load(Ordering::Acquire) {
            return Err("the device's lease was lost (a renewal found it gone)".to_owned());
        }
        let since = self.proven().elapsed();
        if since >= self.fence_after {
            return Err(format!(
                "the device's lease is not proven (last renewed {} ms ago, the store unreachable \
                 since; fenced after {} ms)",
                since.as_millis(),
                self.fence_after.as_millis()
            ));
        }
        Ok(())
    }
}

/// One request's fencing state: the lease clock while a lease is held,
/// and the first effect refused.
#[derive(Debug, Default)]
pub struct FenceSlot {
    clock: Mutex<Option<Arc<LeaseClock>>>,
    refused: Mutex<Option<Fenced>>,
    any_refused: AtomicBool,
}

impl FenceSlot {
    fn clock(&self) -> MutexGuard<'_, Option<Arc<LeaseClock>>> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The request now holds a lease proven by `clock`.
    pub fn hold(&self, clock: Arc<LeaseClock>) {
        *self.clock() = Some(clock);
    }

    /// The lease of `clock` was released: effects are no longer fenced by it.
    pub fn released(&self, clock: &Arc<LeaseClock>) {
        let mut c = self.clock();
        if c.as_ref().is_some_and(|held| Arc::ptr_eq(held, clock)) {
            *c = None;
        }
    }

    /// `Ok` when `what` may be carried out now; else the request is marked.
    pub fn check(&self, what: &str) -> Result<(), Fenced> {
        let Some(clock) = self.clock().clone() else {
            return Ok(());
        };
        match clock.proof() {
            Ok(()) => Ok(()),
            Err(why) => {
                let fenced = Fenced {
                    what: what.to_owned(),
                    why,
                };
                if !self.any_refused.swap(true, Ordering::AcqRel) {
                    tracing::warn!(
                        target: "LEASE",
                        error = %fenced,
                        "backend effect fenced: the request records nothing more and answers \
                         \"retry later\""
                    );
                    *self.refused.lock().unwrap_or_else(|e| e.into_inner()) = Some(fenced.clone());
                }
                Err(fenced)
            }
        }
    }

    /// The first effect this request refused, if any.
    pub fn refused(&self) -> Option<Fenced> {
        if !self.any_refused.load(Ordering::Acquire) {
            return None;
        }
        self.refused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// `Ok` when the current request may carry out the backend effect `what`
/// (no lease held, or its lease proven); else [`Fenced`], and the request
/// records nothing more and answers "retry later".
pub fn check(what: &str) -> Result<(), Fenced> {
    match crate::session::RequestMeta::fence_slot() {
        Some(slot) => slot.check(what),
        None => Ok(()),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "test code: a panic is a test failure")]
mod tests {
    use super::*;

    #[test]
    fn the_fence_leaves_a_margin_and_never_fences_between_renewals() {
        let s = Duration::from_secs;
        assert_eq!(fence_after(s(30)), s(24));
        assert_eq!(fence_after(s(10)), s(8));
        assert_eq!(fence_after(s(3)), Duration::from_millis(1500));
        assert_eq!(fence_after(s(3600)), s(2880));
        for ttl in [3, 4, 5, 10, 30, 60, 3600] {
            assert!(fence_after(s(ttl)) > s(ttl) / 3, "{ttl}");
            assert!(fence_after(s(ttl)) < s(ttl), "{ttl}");
        }
    }

    /// An instant `secs` seconds ago.
    fn ago(secs: u64) -> Instant {
        Instant::now()
            .checked_sub(Duration::from_secs(secs))
            .unwrap()
    }

    #[test]
    fn a_lease_is_proven_until_its_fence_then_refuses_and_marks_the_request() {
        let ttl = Duration::from_secs(30);
        let slot = FenceSlot::default();
        assert!(slot.check("APPEND").is_ok(), "no lease: nothing fenced");
        // Taken 23 s ago (fenced after 24 s).
        let clock = LeaseClock::new(ttl, ago(23));
        slot.hold(clock.clone());
        assert!(slot.check("UID MOVE").is_ok());
        assert!(slot.refused().is_none());
        // Taken 25 s ago, never renewed since: fenced.
        let clock = LeaseClock::new(ttl, ago(25));
        slot.hold(clock.clone());
        let e = slot.check("UID MOVE").unwrap_err();
        assert_eq!(e.what, "UID MOVE");
        assert_eq!(slot.refused().unwrap().what, "UID MOVE");
        // The first refusal is the one kept.
        assert!(slot.check("APPEND").is_err());
        assert_eq!(slot.refused().unwrap().what, "UID MOVE");
        // A renewal sent 5 s ago landed: proven again (a later effect may
        // go; the request still records nothing).
        clock.renewed(ago(5));
        assert!(slot.check("APPEND").is_ok());
        // An older proof arriving late changes nothing.
        clock.renewed(ago(29));
        assert!(slot.check("APPEND").is_ok());
        // Released: nothing is fenced by it any more (the mark stays).
        slot.released(&clock);
        assert!(slot.check("APPEND").is_ok());
        assert!(slot.refused().is_some());
    }

    #[test]
    fn a_lease_a_renewal_found_gone_is_fenced_at_once() {
        let slot = FenceSlot::default();
        let clock = LeaseClock::new(Duration::from_secs(30), Instant::now());
        slot.hold(clock.clone());
        assert!(slot.check("APPEND").is_ok());
        clock.lost();
        assert!(slot.check("SMTP submission").is_err());
        // Another lease's release does not end this one.
        let other = LeaseClock::new(Duration::from_secs(30), Instant::now());
        slot.released(&other);
        assert!(slot.check("APPEND").is_err());
    }
}
