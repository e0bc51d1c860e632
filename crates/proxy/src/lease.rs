//! Until when this proxy may send anything to a backend: a monotonic
//! deadline kept by the lease keep-alive (`sent + TTL − margin` of the last
//! acknowledged keep-alive), read by every backend connection before it
//! writes a batch.
//!
//! The fenced slot table already refuses new requests once the keep-alive
//! task notices the deadline has passed. This clock closes the gap that a
//! frozen process (SIGSTOP, a VM pause, a long GC-like stall of the host)
//! opens: on resume, batches queued before the freeze could be written
//! before that task runs again. Checked at write time against the clock,
//! they are answered with an error instead, so a proxy whose lease may have
//! expired never writes to a backend again until it has registered anew.

use std::sync::atomic::{AtomicU64, Ordering};

use tokio::time::Instant;

#[derive(Debug)]
pub struct LeaseClock {
    base: Instant,
    /// Nanoseconds after `base`; `u64::MAX`: unbounded (no etcd, tests).
    until_ns: AtomicU64,
}

impl LeaseClock {
    /// A clock that never expires (until `set_until` is called).
    pub fn unbounded() -> LeaseClock {
        LeaseClock {
            base: Instant::now(),
            until_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// May a backend be written to right now?
    #[inline]
    pub fn valid(&self) -> bool {
        let now = self.base.elapsed().as_nanos();
        now < u128::from(self.until_ns.load(Ordering::Acquire))
    }

    /// Valid until `at` (earlier than now: not valid any more).
    pub fn set_until(&self, at: Instant) {
        let ns = at.saturating_duration_since(self.base).as_nanos();
        self.until_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX - 1), Ordering::Release);
    }

    /// Not valid from now on.
    pub fn expire(&self) {
        self.until_ns.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn follows_the_deadline() {
        let clock = LeaseClock::unbounded();
        assert!(clock.valid());
        clock.set_until(Instant::now() + Duration::from_secs(60));
        assert!(clock.valid());
        clock.set_until(Instant::now() - Duration::from_millis(1));
        assert!(!clock.valid());
        clock.set_until(Instant::now() + Duration::from_millis(30));
        assert!(clock.valid());
        std::thread::sleep(Duration::from_millis(40));
        assert!(!clock.valid());
        clock.set_until(Instant::now() + Duration::from_secs(1));
        clock.expire();
        assert!(!clock.valid());
    }
}
