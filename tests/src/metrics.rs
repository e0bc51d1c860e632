//! Checks of Prometheus text (`/metrics` of proxies and the dashboard) with
//! real parsers: the `prometheus-parse` crate, and Python's
//! `prometheus_client` (`tests/py/check_metrics.py`), which refuses any line
//! that is not valid exposition format.
//!
//! ```no_run
//! let m = shardis_tests::Metrics::parse("# TYPE a_total counter\na_total 3\n");
//! assert_eq!(m.value("a_total", &[]), Some(3.0));
//! ```

use std::io::Write;
use std::process::{Command, Stdio};

use prometheus_parse::{LineInfo, Scrape, Value};

/// A parsed exposition.
#[derive(Debug)]
pub struct Metrics {
    pub text: String,
    pub scrape: Scrape,
}

/// One histogram: `(upper bound, cumulative count)` per bucket, +Inf last.
#[derive(Debug, Clone, PartialEq)]
pub struct Histo {
    pub buckets: Vec<(f64, f64)>,
    pub sum: f64,
    pub count: f64,
}

impl Metrics {
    /// Parses `text`; panics when a line is neither a comment nor a sample
    /// the parser understands, or when a histogram is inconsistent
    /// (buckets not cumulative, `+Inf` bucket not equal to `_count`).
    pub fn parse(text: &str) -> Metrics {
        for (n, line) in text.lines().enumerate() {
            if line.starts_with('#') {
                assert!(
                    line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                    "line {}: unexpected comment {line:?}",
                    n + 1
                );
                continue;
            }
            assert!(
                matches!(LineInfo::parse(line), LineInfo::Sample { .. }),
                "line {}: not a Prometheus sample: {line:?}",
                n + 1
            );
        }
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .unwrap_or_else(|e| panic!("Prometheus text does not parse: {e}"));
        let m = Metrics {
            text: text.to_string(),
            scrape,
        };
        for s in &m.scrape.samples {
            if let Value::Histogram(_) = s.value {
                let labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                let refs: Vec<(&str, &str)> = labels
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.as_str()))
                    .collect();
                let h = m
                    .histogram(&s.metric, &refs)
                    .expect("the histogram just parsed");
                assert!(
                    h.buckets
                        .windows(2)
                        .all(|w| w[0].0 < w[1].0 && w[0].1 <= w[1].1),
                    "{} {refs:?}: buckets not increasing: {:?}",
                    s.metric,
                    h.buckets
                );
                let inf = h.buckets.last().expect("a +Inf bucket");
                assert!(inf.0.is_infinite(), "{}: last bucket is not +Inf", s.metric);
                assert_eq!(
                    inf.1, h.count,
                    "{} {refs:?}: +Inf bucket != _count",
                    s.metric
                );
            }
        }
        m
    }

    /// Also runs `tests/py/check_metrics.py` (Python's `prometheus_client`
    /// parser) over the text, with metric families that must be present.
    pub fn check_with_prometheus_client(&self, required: &[&str]) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/check_metrics.py");
        let mut child = Command::new("python3")
            .arg(script)
            .args(required)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(self.text.as_bytes())
            .expect("write the metrics to python");
        let out = child.wait_with_output().expect("python3 finishes");
        assert!(
            out.status.success(),
            "prometheus_client refused the metrics (install it with `pip install prometheus_client`):\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn matches(s: &prometheus_parse::Sample, name: &str, labels: &[(&str, &str)]) -> bool {
        s.metric == name
            && labels.len() == s.labels.len()
            && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v))
    }

    /// A counter, gauge or untyped sample with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.scrape
            .samples
            .iter()
            .find(|s| Self::matches(s, name, labels))
            .and_then(|s| match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(v),
                _ => None,
            })
    }

    /// Every sample of `name`: its labels and value.
    pub fn all(&self, name: &str) -> Vec<(Vec<(String, String)>, f64)> {
        self.scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .filter_map(|s| {
                let v = match s.value {
                    Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                    _ => return None,
                };
                let mut labels: Vec<(String, String)> = s
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                labels.sort();
                Some((labels, v))
            })
            .collect()
    }

    /// The histogram `name` (without `_bucket`) with exactly these labels.
    pub fn histogram(&self, name: &str, labels: &[(&str, &str)]) -> Option<Histo> {
        let buckets = self
            .scrape
            .samples
            .iter()
            .find(|s| Self::matches(s, name, labels))
            .and_then(|s| match &s.value {
                Value::Histogram(b) => {
                    Some(b.iter().map(|c| (c.less_than, c.count)).collect::<Vec<_>>())
                }
                _ => None,
            })?;
        Some(Histo {
            buckets,
            sum: self.value(&format!("{name}_sum"), labels)?,
            count: self.value(&format!("{name}_count"), labels)?,
        })
    }
}
