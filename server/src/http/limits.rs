//! Protection against misbehaving devices and overload: the
//! [`InFlightPermit`] a request holds against `[server] max_in_flight`
//! (released early by a parked Ping), and the [`LoopDetector`], which counts
//! identical requests (same user, device, command and body) in a fixed time
//! window, so a device stuck in a loop is slowed down with 503 +
//! Retry-After + `X-MS-ASThrottle` (MS-ASHTTP 2.2.2.1.2.4) instead of being
//! served forever.
//!
//! It keeps only blake3 digests and counters, bounded in number; it must
//! not keep request bodies. Time comes from `tokio::time` so tests can
//! pause it.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// A request's place among `[server] max_in_flight`. Dropping it, or
/// [`InFlightPermit::release`], frees the place.
#[derive(Debug)]
pub struct InFlightPermit(Mutex<Option<OwnedSemaphorePermit>>);

impl InFlightPermit {
    /// Holds `permit`.
    pub fn new(permit: OwnedSemaphorePermit) -> Self {
        InFlightPermit(Mutex::new(Some(permit)))
    }

    /// Frees the place now (a parked Ping waits outside the in-flight bound).
    pub fn release(&self) {
        let taken = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        drop(taken);
    }
}

/// Counts repeats of the same request per window.
#[derive(Debug)]
pub struct LoopDetector {
    window: Duration,
    max_repeats: u32,
    max_keys: usize,
    seen: Mutex<HashMap<[u8; 32], (Instant, u32)>>,
}

impl LoopDetector {
    /// At most `max_repeats` identical requests per `window` (0 disables),
    /// tracking at most `max_keys` distinct requests.
    pub fn new(window: Duration, max_repeats: u32, max_keys: usize) -> Self {
        LoopDetector {
            window,
            max_repeats,
            max_keys,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The identity of a request for loop detection.
    pub fn key(user: &str, device_id: &str, command: &str, body: &[u8]) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        for part in [user.as_bytes(), device_id.as_bytes(), command.as_bytes()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part);
        }
        h.update(body);
        *h.finalize().as_bytes()
    }

    /// Counts one request. `Some(retry_after)` when it is over the limit.
    pub fn hit(&self, key: [u8; 32], now: Instant) -> Option<Duration> {
        if self.max_repeats == 0 {
            return None;
        }
        let mut seen = self
            .seen
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !seen.contains_key(&key) && seen.len() >= self.max_keys {
            let window = self.window;
            seen.retain(|_, (start, _)| now.duration_since(*start) < window);
            if seen.len() >= self.max_keys {
                seen.clear();
            }
        }
        let entry = seen.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        if entry.1 > self.max_repeats {
            let left = self.window.saturating_sub(now.duration_since(entry.0));
            Some(left.max(Duration::from_secs(1)))
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_over_the_limit_are_throttled_until_the_window_ends() {
        let d = LoopDetector::new(Duration::from_secs(60), 3, 100);
        let k = LoopDetector::key("alice", "dev", "Sync", b"body");
        let t0 = Instant::now();
        assert_eq!(d.hit(k, t0), None);
        assert_eq!(d.hit(k, t0 + Duration::from_secs(1)), None);
        assert_eq!(d.hit(k, t0 + Duration::from_secs(2)), None);
        assert_eq!(
            d.hit(k, t0 + Duration::from_secs(20)),
            Some(Duration::from_secs(40))
        );
        // Another body is another request.
        let other = LoopDetector::key("alice", "dev", "Sync", b"other");
        assert_eq!(d.hit(other, t0 + Duration::from_secs(20)), None);
        // A new window starts over.
        assert_eq!(d.hit(k, t0 + Duration::from_secs(61)), None);
    }

    #[test]
    fn disabled_and_bounded() {
        let off = LoopDetector::new(Duration::from_secs(60), 0, 10);
        let k = LoopDetector::key("a", "d", "Ping", b"");
        for _ in 0..100 {
            assert_eq!(off.hit(k, Instant::now()), None);
        }
        let d = LoopDetector::new(Duration::from_secs(60), 5, 3);
        for i in 0..50u8 {
            d.hit(LoopDetector::key("a", "d", "Sync", &[i]), Instant::now());
            assert!(d.seen.lock().map(|s| s.len()).unwrap_or(0) <= 3);
        }
    }

    #[test]
    fn key_fields_do_not_run_together() {
        assert_ne!(
            LoopDetector::key("ab", "c", "Sync", b""),
            LoopDetector::key("a", "bc", "Sync", b"")
        );
    }
}
