//! Request statistics, kept cheap enough for the hot path.
//!
//! Everything a request records is a relaxed atomic add on a counter that
//! belongs to the worker thread doing it (one [`Shard`] per worker, so cores
//! never fight over a cache line), with no lock and no allocation:
//!
//! - per command: calls, errors, and a latency histogram with log2 buckets;
//! - per slot: operations (hot slots);
//! - the slowlog ([`crate::slowlog`]) only when a request was slow.
//!
//! A session hands one read's worth of replies to a [`Recorder`], which adds
//! runs of the same command in one go (a pipeline of 16 GETs is one add per
//! counter, not 16). Readers (`/metrics`, `/api/v1/stats`, `INFO`) sum the
//! shards. With `stats = false` in the configuration nothing per request is
//! recorded at all; that is what the benchmark compares against.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use shardis_topology::stats::{quantile_us, LATENCY_BUCKETS};
use shardis_topology::SLOT_COUNT;
use tokio::time::Instant;

use crate::commands;
use crate::slowlog::{KeyLog, SlowEntry, SlowLog};

pub use shardis_topology::stats::{bucket_bound_us as bound_us, Latency};

// ---------------------------------------------------------------------------
// Histogram
// ---------------------------------------------------------------------------

/// Latency histogram buckets at powers of two microseconds (≤1µs, ≤2µs, …
/// ≤2^(BUCKETS-2) µs ≈ 67 s, and +Inf): the layout the dashboard reads.
pub const BUCKETS: usize = LATENCY_BUCKETS;

#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }
}

/// The bucket a duration falls in.
#[inline]
pub fn bucket_of(us: u64) -> usize {
    (64 - us.saturating_sub(1).leading_zeros() as usize).min(BUCKETS - 1)
}

impl Histogram {
    #[inline]
    pub fn record_us(&self, us: u64) {
        self.record_n(bucket_of(us), us, 1);
    }

    /// `n` observations of `us` each, known to fall in `bucket`.
    #[inline]
    fn record_n(&self, bucket: usize, us: u64, n: u64) {
        if let Some(b) = self.buckets.get(bucket) {
            b.fetch_add(n, Ordering::Relaxed);
        }
        self.sum_us
            .fetch_add(us.saturating_mul(n), Ordering::Relaxed);
    }

    fn add_to(&self, snap: &mut Snapshot) {
        for (total, b) in snap.buckets.iter_mut().zip(&self.buckets) {
            *total += b.load(Ordering::Relaxed);
        }
        snap.sum_us += self.sum_us.load(Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut s = Snapshot::default();
        self.add_to(&mut s);
        s
    }
}

/// A histogram read at one moment: non-cumulative bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub buckets: [u64; BUCKETS],
    pub sum_us: u64,
}

impl Default for Snapshot {
    fn default() -> Self {
        Snapshot {
            buckets: [0; BUCKETS],
            sum_us: 0,
        }
    }
}

impl Snapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q` quantile (0..1) in microseconds, interpolated linearly inside
    /// the bucket it falls in (as Prometheus' `histogram_quantile` does).
    pub fn quantile_us(&self, q: f64) -> f64 {
        quantile_us(&self.buckets, q)
    }

    /// As reported in JSON.
    pub fn latency(&self) -> Latency {
        Latency::from_buckets(self.buckets.to_vec(), self.sum_us)
    }
}

// ---------------------------------------------------------------------------
// Counters
// ---------------------------------------------------------------------------

#[derive(Debug, Default)]
pub struct CommandStats {
    pub calls: AtomicU64,
    pub errors: AtomicU64,
    pub latency: Histogram,
}

/// One worker thread's counters. Index `commands.len() - 1` counts requests
/// that named no known command.
#[derive(Debug)]
pub struct Shard {
    commands: Box<[CommandStats]>,
    slot_ops: Box<[AtomicU64]>,
}

impl Shard {
    fn new(commands: usize) -> Shard {
        Shard {
            commands: (0..commands).map(|_| CommandStats::default()).collect(),
            slot_ops: (0..SLOT_COUNT).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    #[inline]
    fn add(&self, cmd: usize, calls: u64, errors: u64, bucket: usize, us: u64) {
        let last = self.commands.len().saturating_sub(1);
        if let Some(c) = self.commands.get(cmd.min(last)) {
            c.calls.fetch_add(calls, Ordering::Relaxed);
            if errors > 0 {
                c.errors.fetch_add(errors, Ordering::Relaxed);
            }
            c.latency.record_n(bucket, us, calls);
        }
    }
}

/// Most shards a process keeps (more worker threads share them). A power
/// of two: a thread finds its shard with a mask, not a division.
const MAX_SHARDS: usize = 16;

thread_local! {
    /// This thread's shard number, handed out round-robin on first use.
    static SHARD: Cell<usize> = const { Cell::new(usize::MAX) };
}
static NEXT_SHARD: AtomicUsize = AtomicUsize::new(0);

/// This thread's shard among `n` (a power of two).
#[inline]
fn shard_index(n: usize) -> usize {
    SHARD.with(|s| {
        let mut i = s.get();
        if i == usize::MAX {
            i = NEXT_SHARD.fetch_add(1, Ordering::Relaxed);
            s.set(i);
        }
        i & (n - 1)
    })
}

/// Counters of one proxy process.
#[derive(Debug)]
pub struct Stats {
    /// `stats = false`: record nothing per request.
    enabled: bool,
    shards: Box<[Shard]>,
    pub sessions_current: AtomicU64,
    pub sessions_total: AtomicU64,
    pub sessions_rejected: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Stats::new(true, 1)
    }
}

/// Counters of one command summed over the shards.
#[derive(Debug, Clone, Copy)]
pub struct CommandTotals {
    /// The command's name (`unknown` for names not in the table).
    pub name: &'static str,
    pub calls: u64,
    pub errors: u64,
    pub latency: Snapshot,
}

impl Stats {
    /// `threads`: worker threads that record (a shard each, rounded up to a
    /// power of two, at most 16).
    pub fn new(enabled: bool, threads: usize) -> Stats {
        let commands = commands::table().all().len() + 1;
        Stats {
            enabled,
            shards: (0..threads.clamp(1, MAX_SHARDS).next_power_of_two())
                .map(|_| Shard::new(commands))
                .collect(),
            sessions_current: AtomicU64::new(0),
            sessions_total: AtomicU64::new(0),
            sessions_rejected: AtomicU64::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    #[inline]
    fn shard(&self) -> Option<&Shard> {
        if !self.enabled {
            return None;
        }
        self.shards.get(shard_index(self.shards.len()))
    }

    /// One request routed to `slot`.
    #[inline]
    pub fn record_slot(&self, slot: u16) {
        if let Some(s) = self.shard().and_then(|s| s.slot_ops.get(slot as usize)) {
            s.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Starts recording the replies of requests that were sent at `started`.
    #[inline]
    pub fn recorder<'a>(&'a self, started: Instant, slowlog: &'a SlowLog) -> Recorder<'a> {
        let Some(shard) = self.shard() else {
            return Recorder::off(slowlog);
        };
        let us = started.elapsed().as_micros() as u64;
        Recorder {
            shard: Some(shard),
            slowlog,
            us,
            bucket: bucket_of(us),
            run_cmd: usize::MAX,
            run_calls: 0,
            run_errors: 0,
            slow: slowlog.is_slow(us).then(Vec::new),
        }
    }

    /// Every command that was called, with its totals, in table order
    /// (`unknown` last).
    pub fn commands(&self) -> Vec<CommandTotals> {
        let table = commands::table();
        let n = table.all().len() + 1;
        (0..n)
            .filter_map(|i| {
                let mut t = CommandTotals {
                    name: table.get(i).map_or("unknown", |c| c.name),
                    calls: 0,
                    errors: 0,
                    latency: Snapshot::default(),
                };
                for shard in self.shards.iter() {
                    let c = shard.commands.get(i)?;
                    t.calls += c.calls.load(Ordering::Relaxed);
                    t.errors += c.errors.load(Ordering::Relaxed);
                    c.latency.add_to(&mut t.latency);
                }
                (t.calls > 0).then_some(t)
            })
            .collect()
    }

    /// Requests answered (every command, unknown ones included).
    pub fn ops_total(&self) -> u64 {
        self.sum(|c| c.calls.load(Ordering::Relaxed))
    }

    /// Requests answered with an error.
    pub fn errors_total(&self) -> u64 {
        self.sum(|c| c.errors.load(Ordering::Relaxed))
    }

    fn sum(&self, f: impl Fn(&CommandStats) -> u64) -> u64 {
        self.shards
            .iter()
            .flat_map(|s| s.commands.iter())
            .map(f)
            .sum()
    }

    /// All requests' latency together.
    pub fn latency(&self) -> Snapshot {
        let mut snap = Snapshot::default();
        for c in self.shards.iter().flat_map(|s| s.commands.iter()) {
            c.latency.add_to(&mut snap);
        }
        snap
    }

    /// Requests per slot since the start.
    pub fn slot_ops(&self) -> Vec<u64> {
        let mut out = vec![0u64; SLOT_COUNT];
        for shard in self.shards.iter() {
            for (total, c) in out.iter_mut().zip(shard.slot_ops.iter()) {
                *total += c.load(Ordering::Relaxed);
            }
        }
        out
    }
}

// ---------------------------------------------------------------------------
// Recording one read's replies
// ---------------------------------------------------------------------------

/// Most slowlog entries one slow read adds (a pipeline of thousands of
/// requests that waited behind one slow command must not flush the log, nor
/// cost an allocation each while the proxy is already slow).
pub const SLOW_PER_READ: usize = 16;

/// Records the replies of one read's worth of requests, which share one
/// latency (from sending them to their replies being ready).
pub struct Recorder<'a> {
    shard: Option<&'a Shard>,
    slowlog: &'a SlowLog,
    us: u64,
    bucket: usize,
    /// The run of consecutive replies to the same command not added yet.
    run_cmd: usize,
    run_calls: u64,
    run_errors: u64,
    /// When the read was slow: the command of each reply, for the slowlog.
    slow: Option<Vec<usize>>,
}

impl<'a> Recorder<'a> {
    fn off(slowlog: &'a SlowLog) -> Recorder<'a> {
        Recorder {
            shard: None,
            slowlog,
            us: 0,
            bucket: 0,
            run_cmd: usize::MAX,
            run_calls: 0,
            run_errors: 0,
            slow: None,
        }
    }

    /// One reply to command `cmd` (its index in the command table;
    /// `usize::MAX` when the name was unknown).
    #[inline]
    pub fn command(&mut self, cmd: usize, error: bool) {
        let Some(shard) = self.shard else {
            return;
        };
        if cmd != self.run_cmd {
            self.flush(shard);
            self.run_cmd = cmd;
        }
        self.run_calls += 1;
        self.run_errors += u64::from(error);
        if let Some(slow) = &mut self.slow {
            slow.push(cmd);
        }
    }

    #[inline]
    fn flush(&mut self, shard: &Shard) {
        if self.run_calls > 0 {
            shard.add(
                self.run_cmd,
                self.run_calls,
                self.run_errors,
                self.bucket,
                self.us,
            );
            self.run_calls = 0;
            self.run_errors = 0;
        }
    }

    /// Adds what is left, and slowlog entries when the read was slow.
    /// `keys` holds the first key of each request, in reply order.
    #[inline]
    pub fn finish(mut self, keys: &KeyLog, client: &SocketAddr, client_name: Option<&Bytes>) {
        let Some(shard) = self.shard else {
            return;
        };
        self.flush(shard);
        if let Some(slow) = self.slow.take() {
            self.log_slow(&slow, keys, client, client_name);
        }
    }

    #[cold]
    fn log_slow(
        &self,
        cmds: &[usize],
        keys: &KeyLog,
        client: &SocketAddr,
        client_name: Option<&Bytes>,
    ) {
        let table = commands::table();
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let client = client.to_string();
        let client_name = client_name
            .map(|n| String::from_utf8_lossy(n).into_owned())
            .unwrap_or_default();
        let mut keys = keys.iter();
        let entries = cmds.iter().take(SLOW_PER_READ).map(|&cmd| SlowEntry {
            id: 0,
            time,
            duration_us: self.us,
            command: table.get(cmd).map_or("unknown", |c| c.name).to_string(),
            key: keys.next().unwrap_or_default(),
            client: client.clone(),
            client_name: client_name.clone(),
        });
        self.slowlog.record_all(entries);
    }
}

// ---------------------------------------------------------------------------
// Backends
// ---------------------------------------------------------------------------

/// Counters of one backend server (shared by its connections).
#[derive(Debug)]
pub struct BackendStats {
    pub addr: String,
    pub requests: AtomicU64,
    pub errors: AtomicU64,
    pub inflight: AtomicU64,
    pub connection_errors: AtomicU64,
    pub latency: Histogram,
    /// `stats = false`: no latency histogram either.
    enabled: bool,
}

impl BackendStats {
    pub fn new(addr: &str, enabled: bool) -> BackendStats {
        BackendStats {
            addr: addr.to_string(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            inflight: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            latency: Histogram::default(),
            enabled,
        }
    }

    /// One batch's round trip, from the instant it was sent.
    #[inline]
    pub fn record_latency(&self, sent_at: Instant) {
        if self.enabled {
            self.latency.record_us(sent_at.elapsed().as_micros() as u64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        for _ in 0..90 {
            h.record_us(3); // bucket (2, 4] µs
        }
        for _ in 0..10 {
            h.record_us(1000); // bucket (512, 1024] µs
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 100);
        assert_eq!(s.sum_us, 90 * 3 + 10_000);
        assert_eq!(s.buckets[2], 90);
        // Rank 50 of 90 in (2, 4]: 2 + 2 * 50/90.
        assert!((s.quantile_us(0.5) - (2.0 + 2.0 * 50.0 / 90.0)).abs() < 1e-9);
        // Rank 99: 9th of 10 in (512, 1024].
        assert!((s.quantile_us(0.99) - (512.0 + 512.0 * 0.9)).abs() < 1e-9);
        assert!(s.quantile_us(1.0) <= 1024.0);
        h.record_us(0);
        assert_eq!(h.snapshot().buckets[0], 1);
        h.record_us(u64::MAX);
        assert_eq!(h.snapshot().buckets[BUCKETS - 1], 1);
        assert_eq!(Snapshot::default().quantile_us(0.5), 0.0);
    }

    #[test]
    fn bucket_bounds_hold_their_values() {
        for us in [0u64, 1, 2, 3, 4, 5, 1000, 1024, 1025, 1 << 26] {
            let b = bucket_of(us);
            assert!(bound_us(b).is_none_or(|bound| us <= bound), "{us} in {b}");
            if b > 0 {
                assert!(us > bound_us(b - 1).unwrap(), "{us} in {b}");
            }
        }
    }

    #[test]
    fn runs_of_a_command_are_added_once_and_totals_sum_up() {
        let stats = Stats::new(true, 2);
        let slowlog = SlowLog::new(u64::MAX, 8);
        let get = commands::table().lookup(b"get").unwrap().index;
        let set = commands::table().lookup(b"set").unwrap().index;
        let started = Instant::now();
        let mut rec = stats.recorder(started, &slowlog);
        for _ in 0..5 {
            rec.command(get, false);
        }
        rec.command(set, true);
        rec.command(usize::MAX, true);
        rec.finish(&KeyLog::default(), &"127.0.0.1:1".parse().unwrap(), None);
        assert_eq!(stats.ops_total(), 7);
        assert_eq!(stats.errors_total(), 2);
        let cmds = stats.commands();
        let by = |n: &str| cmds.iter().find(|c| c.name == n).copied().unwrap();
        assert_eq!(by("get").calls, 5);
        assert_eq!(by("get").latency.count(), 5);
        assert_eq!((by("set").calls, by("set").errors), (1, 1));
        assert_eq!(by("unknown").calls, 1);
        assert_eq!(stats.latency().count(), 7);
        stats.record_slot(5);
        stats.record_slot(5);
        assert_eq!(stats.slot_ops()[5], 2);
        assert!(slowlog.is_empty());
    }

    #[test]
    fn disabled_stats_record_nothing() {
        let stats = Stats::new(false, 1);
        let slowlog = SlowLog::new(0, 8);
        let mut rec = stats.recorder(Instant::now(), &slowlog);
        rec.command(0, false);
        rec.finish(&KeyLog::default(), &"127.0.0.1:1".parse().unwrap(), None);
        stats.record_slot(1);
        assert_eq!(stats.ops_total(), 0);
        assert!(stats.commands().is_empty());
        assert_eq!(stats.slot_ops().iter().sum::<u64>(), 0);
        assert!(slowlog.is_empty());
    }
}
