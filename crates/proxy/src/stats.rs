//! Request statistics, kept cheap enough for the hot path: relaxed atomic
//! counters and fixed log-scale latency histograms, no locks, no allocation.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use shardis_topology::SLOT_COUNT;

use crate::commands;

/// Latency histogram with buckets at powers of two microseconds
/// (≤1µs, ≤2µs, … ≤2^(BUCKETS-2) µs, and +Inf).
pub const BUCKETS: usize = 28;

#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
    count: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    #[inline]
    pub fn record_us(&self, us: u64) {
        let idx = (64 - us.saturating_sub(1).leading_zeros() as usize).min(BUCKETS - 1);
        if let Some(b) = self.buckets.get(idx) {
            b.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// Upper bound of bucket `i` in microseconds (`None` for +Inf).
    pub fn bound_us(i: usize) -> Option<u64> {
        (i < BUCKETS - 1).then(|| 1u64 << i)
    }

    /// Non-cumulative bucket counts.
    pub fn snapshot(&self) -> ([u64; BUCKETS], u64, u64) {
        let b = std::array::from_fn(|i| {
            self.buckets
                .get(i)
                .map(|b| b.load(Ordering::Relaxed))
                .unwrap_or(0)
        });
        (
            b,
            self.sum_us.load(Ordering::Relaxed),
            self.count.load(Ordering::Relaxed),
        )
    }

    /// The `q` quantile (0..1) in microseconds, as the upper bound of the
    /// bucket it falls in.
    pub fn quantile_us(&self, q: f64) -> u64 {
        let (b, _, count) = self.snapshot();
        if count == 0 {
            return 0;
        }
        let target = ((count as f64) * q).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in b.iter().enumerate() {
            seen += n;
            if seen >= target {
                return Self::bound_us(i).unwrap_or(1 << (BUCKETS - 1));
            }
        }
        1 << (BUCKETS - 1)
    }
}

#[derive(Debug, Default)]
pub struct CommandStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub latency: Histogram,
}

/// Counters of one proxy process.
#[derive(Debug)]
pub struct Stats {
    pub commands: Vec<CommandStats>,
    pub sessions_current: AtomicU64,
    pub sessions_total: AtomicU64,
    pub sessions_rejected: AtomicU64,
    pub ops_total: AtomicU64,
    pub errors_total: AtomicU64,
    pub slot_ops: Vec<AtomicU64>,
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            commands: (0..commands::table().all().len())
                .map(|_| CommandStats::default())
                .collect(),
            sessions_current: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            sessions_rejected: AtomicU64::new(0),
            ops_total: AtomicU64::new(0),
            errors_total: AtomicU64::new(0),
            slot_ops: (0..SLOT_COUNT).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl Stats {
    #[inline]
    pub fn record_command(&self, index: usize, us: u64, error: bool) {
        if let Some(c) = self.commands.get(index) {
            c.calls.fetch_add(1, Ordering::Relaxed);
            if error {
                c.errors.fetch_add(1, Ordering::Relaxed);
            }
            c.latency.record_us(us);
        }
        self.ops_total.fetch_add(1, Ordering::Relaxed);
        if error {
            self.errors_total.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[inline]
    pub fn record_slot(&self, slot: u16) {
        if let Some(s) = self.slot_ops.get(slot as usize) {
            s.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Counters of one backend server (shared by its connections).
#[derive(Debug)]
pub struct BackendStats {
    pub addr: String,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub inflight: AtomicU64,
    pub connection_errors: AtomicU64,
    pub latency: Histogram,
}

impl BackendStats {
    pub fn new(addr: &str) -> BackendStats {
        BackendStats {
            addr: addr.to_string(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            latency: Histogram::default(),
        }
    }

    #[inline]
    pub fn record_latency(&self, d: Duration) {
        self.latency.record_us(d.as_micros() as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record_us(3); // bucket ≤4µs
        }
        for _ in 0..10 {
            h.record_us(1000); // bucket ≤1024µs
        }
        assert_eq!(h.quantile_us(0.5), 4);
        assert_eq!(h.quantile_us(0.99), 1024);
        let (b, sum, count) = h.snapshot();
        assert_eq!(count, 100);
        assert_eq!(sum, 90 * 3 + 10_000);
        assert_eq!(b[2], 90);
        h.record_us(0);
        assert_eq!(h.snapshot().0[0], 1);
        h.record_us(u64::MAX);
        assert_eq!(h.snapshot().0[BUCKETS - 1], 1);
    }
}
