//! Latency samples and what is reported from them: exact percentiles (the
//! samples are sorted), a per-second timeline and named phases.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde_json::{json, Value};

/// One request: when it was due (ns after the run's start), how long until
/// its reply (µs), whether the reply was an error.
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub sched_ns: u64,
    pub lat_us: u32,
    pub err: bool,
}

/// Percentiles of a set of latencies (µs).
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub n: usize,
    pub errors: usize,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub p999: u32,
    pub max: u32,
    pub mean: f64,
    /// When the maximum was due (ns after the start).
    pub max_at_ns: u64,
}

fn rank(sorted: &[u32], q: f64) -> u32 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

pub fn summarize<'a>(samples: impl Iterator<Item = &'a Sample>) -> Summary {
    let mut lats = Vec::new();
    let mut errors = 0;
    let mut max_at_ns = 0;
    let mut max = 0;
    let mut sum = 0u64;
    for s in samples {
        lats.push(s.lat_us);
        sum += u64::from(s.lat_us);
        errors += usize::from(s.err);
        if s.lat_us >= max {
            max = s.lat_us;
            max_at_ns = s.sched_ns;
        }
    }
    lats.sort_unstable();
    Summary {
        n: lats.len(),
        errors,
        p50: rank(&lats, 0.50),
        p90: rank(&lats, 0.90),
        p99: rank(&lats, 0.99),
        p999: rank(&lats, 0.999),
        max,
        mean: if lats.is_empty() {
            0.0
        } else {
            sum as f64 / lats.len() as f64
        },
        max_at_ns,
    }
}

pub fn ms(us: u32) -> f64 {
    f64::from(us) / 1000.0
}

impl Summary {
    pub fn line(&self) -> String {
        format!(
            "n {:>8}  err {:>5}  p50 {:>7.3} ms  p90 {:>7.3}  p99 {:>7.3}  p99.9 {:>7.3}  max {:>8.3} ms",
            self.n,
            self.errors,
            ms(self.p50),
            ms(self.p90),
            ms(self.p99),
            ms(self.p999),
            ms(self.max)
        )
    }

    pub fn json(&self, t0_unix_ms: f64) -> Value {
        json!({
            "requests": self.n,
            "errors": self.errors,
            "p50_ms": ms(self.p50),
            "p90_ms": ms(self.p90),
            "p99_ms": ms(self.p99),
            "p999_ms": ms(self.p999),
            "max_ms": ms(self.max),
            "mean_ms": self.mean / 1000.0,
            "max_at_unix_ms": (t0_unix_ms + self.max_at_ns as f64 / 1e6).round() as u64,
        })
    }
}

/// Per second of due time: the timeline CSV (one row per second).
pub fn timeline_csv(samples: &[Sample], t0_unix_ms: f64) -> String {
    let mut by_sec: BTreeMap<u64, Vec<Sample>> = BTreeMap::new();
    for s in samples {
        by_sec
            .entry(s.sched_ns / 1_000_000_000)
            .or_default()
            .push(*s);
    }
    let mut out =
        String::from("second,unix_ms,requests,errors,p50_ms,p90_ms,p99_ms,p999_ms,max_ms\n");
    for (sec, v) in by_sec {
        let s = summarize(v.iter());
        let _ = writeln!(
            out,
            "{sec},{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3}",
            (t0_unix_ms + sec as f64 * 1000.0).round() as u64,
            s.n,
            s.errors,
            ms(s.p50),
            ms(s.p90),
            ms(s.p99),
            ms(s.p999),
            ms(s.max)
        );
    }
    out
}

/// A named window of wall-clock time (unix ms).
#[derive(Debug, Clone)]
pub struct Phase {
    pub name: String,
    pub start_ms: f64,
    pub end_ms: f64,
}

/// Lines `NAME START_UNIX_MS END_UNIX_MS`; `#` starts a comment.
pub fn read_phases(path: &Path) -> Result<Vec<Phase>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading phases from {}", path.display()))?;
    let mut phases = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        let [name, start, end] = f[..] else {
            anyhow::bail!("{}: bad phase line {line:?}", path.display());
        };
        phases.push(Phase {
            name: name.to_string(),
            start_ms: start.parse().context("phase start")?,
            end_ms: end.parse().context("phase end")?,
        });
    }
    Ok(phases)
}

/// Each phase's summary over the samples due within it.
pub fn phase_summaries(
    samples: &[Sample],
    phases: &[Phase],
    t0_unix_ms: f64,
) -> Vec<(Phase, Summary)> {
    phases
        .iter()
        .map(|p| {
            let from = ((p.start_ms - t0_unix_ms).max(0.0) * 1e6) as u64;
            let to = ((p.end_ms - t0_unix_ms).max(0.0) * 1e6) as u64;
            let s = summarize(
                samples
                    .iter()
                    .filter(|s| s.sched_ns >= from && s.sched_ns < to),
            );
            (p.clone(), s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let samples: Vec<Sample> = (1..=1000)
            .map(|i| Sample {
                sched_ns: i * 1_000_000,
                lat_us: i as u32,
                err: i == 7,
            })
            .collect();
        let s = summarize(samples.iter());
        assert_eq!((s.n, s.errors), (1000, 1));
        assert_eq!((s.p50, s.p99, s.p999, s.max), (500, 990, 999, 1000));
        assert_eq!(s.max_at_ns, 1_000_000_000);
        let csv = timeline_csv(&samples, 0.0);
        assert_eq!(csv.lines().count(), 3); // header, second 0 (999 samples), second 1
    }
}
