//! What a proxy reports about its traffic (`GET /api/v1/stats` and
//! `GET /api/v1/slowlog` on its admin port), shared by the proxy that writes
//! it and the dashboard that reads it, and the latency bucket layout both use.
//!
//! Latencies are histograms with log2 buckets in microseconds: bucket `i`
//! holds durations in `(2^(i-1), 2^i]` µs (bucket 0: `[0, 1]`), and the last
//! one everything above `2^(LATENCY_BUCKETS-2)` µs (about 67 s). Counts are
//! non-cumulative and since the proxy started; a reader that wants "now"
//! subtracts two readings.

use serde::{Deserialize, Serialize};

/// Number of latency buckets, the last one +Inf.
pub const LATENCY_BUCKETS: usize = 28;

/// Upper bound of latency bucket `i` in microseconds (`None` for +Inf).
pub fn bucket_bound_us(i: usize) -> Option<u64> {
    (i < LATENCY_BUCKETS - 1).then(|| 1u64 << i)
}

/// The `q` quantile (0..1) of non-cumulative log2 buckets, in microseconds,
/// interpolated linearly inside the bucket it falls in (as Prometheus'
/// `histogram_quantile` does). 0 when there are no observations.
pub fn quantile_us(buckets: &[u64], q: f64) -> f64 {
    let count: u64 = buckets.iter().sum();
    if count == 0 {
        return 0.0;
    }
    let rank = (count as f64 * q.clamp(0.0, 1.0)).max(1.0);
    let mut seen = 0.0;
    for (i, &n) in buckets.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let lower = if i == 0 {
            0.0
        } else {
            (1u64 << (i - 1)) as f64
        };
        let Some(upper) = bucket_bound_us(i) else {
            // +Inf: all that can be said is "above the last bound".
            return lower;
        };
        if seen + n as f64 >= rank {
            let within = (rank - seen) / n as f64;
            return lower + (upper as f64 - lower) * within;
        }
        seen += n as f64;
    }
    bucket_bound_us(LATENCY_BUCKETS - 2).unwrap_or(0) as f64
}

/// `a - b` bucket by bucket (a counter reset, such as a restarted proxy,
/// gives zeros rather than nonsense).
pub fn bucket_delta(a: &[u64], b: &[u64]) -> Vec<u64> {
    a.iter()
        .enumerate()
        .map(|(i, &x)| x.saturating_sub(b.get(i).copied().unwrap_or(0)))
        .collect()
}

/// A latency histogram as reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Latency {
    pub count: u64,
    pub sum_us: u64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    /// Non-cumulative counts, [`LATENCY_BUCKETS`] of them.
    pub buckets: Vec<u64>,
}

impl Latency {
    pub fn from_buckets(buckets: Vec<u64>, sum_us: u64) -> Latency {
        Latency {
            count: buckets.iter().sum(),
            sum_us,
            p50_us: quantile_us(&buckets, 0.50),
            p99_us: quantile_us(&buckets, 0.99),
            p999_us: quantile_us(&buckets, 0.999),
            buckets,
        }
    }
}

/// One command's counters on one proxy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommandStat {
    /// Lower case, as in the command table; `unknown` for names it lacks.
    pub cmd: String,
    pub calls: u64,
    /// Replies that were errors.
    pub errors: u64,
    /// From sending the request to its reply being ready.
    pub latency: Latency,
}

/// One backend server as one proxy sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BackendStat {
    pub addr: String,
    /// Some connection to it is established.
    pub up: bool,
    /// Requests sent to it.
    pub requests: u64,
    /// Error replies and requests lost with a connection.
    pub errors: u64,
    /// Batches sent and not answered yet.
    pub inflight: u64,
    pub connection_errors: u64,
    /// Round trip per batch.
    pub latency: Latency,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sessions {
    /// Client connections open now.
    pub current: u64,
    /// Accepted since the start.
    pub total: u64,
    /// Refused at `max_clients`.
    pub rejected: u64,
}

/// The global budget for large request and reply buffers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryBudget {
    /// Bytes charged now.
    pub used: u64,
    /// `memory_budget_mb` in bytes.
    pub limit: u64,
}

/// `GET /api/v1/stats` on a proxy's admin port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ProxyStats {
    pub id: String,
    pub cluster: String,
    /// Where clients connect.
    pub addr: String,
    pub uptime_secs: u64,
    pub topology_version: u64,
    /// Refusing requests: the etcd lease was lost.
    pub fenced: bool,
    /// `stats = false`: the per-request figures below stay zero.
    pub stats_enabled: bool,
    /// Requests answered.
    pub ops_total: u64,
    /// Requests answered with an error.
    pub errors_total: u64,
    pub sessions: Sessions,
    pub memory_budget: MemoryBudget,
    /// Every request together.
    pub latency: Latency,
    /// Commands called at least once.
    pub commands: Vec<CommandStat>,
    pub backends: Vec<BackendStat>,
    /// Requests per slot (1024 entries).
    pub slot_ops: Vec<u64>,
    pub slowlog_len: usize,
    pub slowlog_threshold_us: u64,
}

/// One request in a proxy's slowlog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlowlogEntry {
    /// Grows by one per entry, per proxy.
    pub id: u64,
    /// Unix time (seconds) the reply was ready.
    pub time: u64,
    /// From sending the request to its reply being ready.
    pub duration_us: u64,
    /// Lower case, as in the command table.
    pub command: String,
    /// The first key (empty when none), cut at 127 bytes.
    pub key: String,
    /// The client's `ip:port`.
    pub client: String,
    /// Its `CLIENT SETNAME`, if any.
    #[serde(default)]
    pub client_name: String,
}

/// `GET /api/v1/slowlog` on a proxy's admin port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slowlog {
    /// The proxy's id.
    pub proxy: String,
    pub threshold_us: u64,
    /// Entries in the log (the answer may hold fewer).
    pub len: usize,
    /// Newest first.
    pub entries: Vec<SlowlogEntry>,
}

// ---------------------------------------------------------------------------
// Prometheus text format
// ---------------------------------------------------------------------------

/// Writes the Prometheus text exposition format (version 0.0.4): one
/// `# HELP`/`# TYPE` header per family, then its samples.
#[derive(Debug, Default)]
pub struct PromText {
    out: String,
}

/// The content type of [`PromText`] output.
pub const PROM_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

impl PromText {
    pub fn new() -> PromText {
        PromText {
            out: String::with_capacity(16 * 1024),
        }
    }

    /// Starts a family: `kind` is `counter`, `gauge` or `histogram`.
    pub fn family(&mut self, name: &str, kind: &str, help: &str) -> &mut Self {
        use std::fmt::Write as _;
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = write!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
        self
    }

    /// One sample: `name{labels} value`.
    pub fn sample(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        value: impl std::fmt::Display,
    ) -> &mut Self {
        use std::fmt::Write as _;
        self.out.push_str(name);
        self.labels(labels, None);
        let _ = writeln!(self.out, " {value}");
        self
    }

    /// A family with one unlabelled sample.
    pub fn single(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        value: impl std::fmt::Display,
    ) -> &mut Self {
        self.family(name, kind, help).sample(name, &[], value)
    }

    /// One histogram of log2 µs buckets as `name_bucket{le=seconds}`,
    /// `name_sum` (seconds) and `name_count`.
    pub fn histogram(
        &mut self,
        name: &str,
        labels: &[(&str, &str)],
        buckets: &[u64],
        sum_us: u64,
    ) -> &mut Self {
        use std::fmt::Write as _;
        let mut cumulative = 0u64;
        for (i, n) in buckets.iter().enumerate() {
            cumulative += n;
            let Some(bound) = bucket_bound_us(i) else {
                break;
            };
            let le = format!("{}", bound as f64 / 1e6);
            let _ = write!(self.out, "{name}_bucket");
            self.labels(labels, Some(&le));
            let _ = writeln!(self.out, " {cumulative}");
        }
        let count: u64 = buckets.iter().sum();
        let _ = write!(self.out, "{name}_bucket");
        self.labels(labels, Some("+Inf"));
        let _ = writeln!(self.out, " {count}");
        let _ = write!(self.out, "{name}_sum");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {}", sum_us as f64 / 1e6);
        let _ = write!(self.out, "{name}_count");
        self.labels(labels, None);
        let _ = writeln!(self.out, " {count}");
        self
    }

    fn labels(&mut self, labels: &[(&str, &str)], le: Option<&str>) {
        if labels.is_empty() && le.is_none() {
            return;
        }
        self.out.push('{');
        let mut first = true;
        for (k, v) in labels.iter().copied().chain(le.map(|le| ("le", le))) {
            if !first {
                self.out.push(',');
            }
            first = false;
            self.out.push_str(k);
            self.out.push_str("=\"");
            for c in v.chars() {
                match c {
                    '\\' => self.out.push_str("\\\\"),
                    '"' => self.out.push_str("\\\""),
                    '\n' => self.out.push_str("\\n"),
                    c => self.out.push(c),
                }
            }
            self.out.push('"');
        }
        self.out.push('}');
    }

    pub fn finish(self) -> String {
        self.out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let mut b = vec![0u64; LATENCY_BUCKETS];
        b[2] = 90; // (2, 4] µs
        b[10] = 10; // (512, 1024] µs
        assert!((quantile_us(&b, 0.5) - (2.0 + 2.0 * 50.0 / 90.0)).abs() < 1e-9);
        assert!((quantile_us(&b, 0.99) - (512.0 + 512.0 * 0.9)).abs() < 1e-9);
        assert!(quantile_us(&b, 1.0) <= 1024.0);
        assert_eq!(quantile_us(&[0; LATENCY_BUCKETS], 0.5), 0.0);
        let mut inf = vec![0u64; LATENCY_BUCKETS];
        inf[LATENCY_BUCKETS - 1] = 1;
        assert_eq!(
            quantile_us(&inf, 0.5),
            bucket_bound_us(LATENCY_BUCKETS - 2).unwrap() as f64
        );
        let l = Latency::from_buckets(b.clone(), 12_345);
        assert_eq!(l.count, 100);
        assert_eq!(bucket_delta(&b, &[1, 1, 100]), {
            let mut d = b.clone();
            d[2] = 0;
            d
        });
    }

    #[test]
    fn prometheus_text_is_escaped_and_cumulative() {
        let mut p = PromText::new();
        p.single("a_total", "counter", "A \\ help\nline.", 3);
        p.family("h_seconds", "histogram", "H.");
        let mut b = vec![0u64; LATENCY_BUCKETS];
        b[0] = 1;
        b[2] = 2;
        b[LATENCY_BUCKETS - 1] = 1;
        p.histogram("h_seconds", &[("cmd", "a\"b\\c\nd")], &b, 1_500_000);
        let text = p.finish();
        assert!(
            text.starts_with(
                "# HELP a_total A \\\\ help\\nline.\n# TYPE a_total counter\na_total 3\n"
            ),
            "{text}"
        );
        assert!(
            text.contains(r#"h_seconds_bucket{cmd="a\"b\\c\nd",le="0.000001"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"h_seconds_bucket{cmd="a\"b\\c\nd",le="0.000004"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"h_seconds_bucket{cmd="a\"b\\c\nd",le="67.108864"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"h_seconds_bucket{cmd="a\"b\\c\nd",le="+Inf"} 4"#),
            "{text}"
        );
        assert!(
            text.contains(r#"h_seconds_sum{cmd="a\"b\\c\nd"} 1.5"#),
            "{text}"
        );
        assert!(
            text.contains(r#"h_seconds_count{cmd="a\"b\\c\nd"} 4"#),
            "{text}"
        );
    }
}
