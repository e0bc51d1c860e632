//! `loadgen`: the load tool of `bench/migrate.sh` and `bench/bigkey.sh`.
//!
//! - `run`: GET/SET at a fixed total rate, open loop. Every request has a
//!   scheduled send time (connection `j` of `C` sends request `i` at
//!   `start + (i + j/C) * C/rate`); whatever is due is written at once, so
//!   a connection behind schedule pipelines, and nothing waits for a reply
//!   before sending. Latency runs from the scheduled time to the reply's
//!   arrival (the kernel's receive time, `SO_TIMESTAMPNS`), so a stall of
//!   the server (or of the tool's sending) counts in full for every request
//!   that was due during it: no coordinated omission. Two threads serve all
//!   connections: one writes, one reads (mio).
//! - `max`: closed loop, each connection keeps `--pipeline` requests in
//!   flight: the throughput the target sustains.
//! - `fill`: `SET` keys `0..keys` with pipelined batches.
//! - `fill-hash`: one big hash with pipelined `HSET`s.
//! - `probe`: one connection, one request at a time, as fast as it can: the
//!   longest stall of a server.
//!
//! Keys are `<prefix><i:012>` (`key:000000000042`), values `--value-size`
//! bytes.

mod resp;
mod stats;

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::net::TcpStream;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use nix::sys::socket::{recvmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;
use serde_json::{json, Value};

use resp::{connect, push_cmd, Reader};
use stats::{phase_summaries, read_phases, summarize, timeline_csv, Sample};

#[derive(Parser)]
#[command(
    name = "loadgen",
    about = "Fixed-rate and maximum GET/SET load, fills and stall probes for the Shardis benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Open loop: GET/SET at a fixed total rate, latency from each request's scheduled time.
    Run(RunArgs),
    /// Closed loop: the maximum throughput (ops/s) the target sustains.
    Max(MaxArgs),
    /// SET every key 0..keys (pipelined).
    Fill(FillArgs),
    /// Build one big hash with pipelined HSETs.
    FillHash(FillHashArgs),
    /// One request at a time on one connection: the longest stall.
    Probe(ProbeArgs),
    /// Plain `MIGRATE ... KEYS` of keys 0..keys in batches, one at a time:
    /// what stock Redis does alone (a reference for the mover).
    RawMigrate(RawMigrateArgs),
}

#[derive(Args, Clone)]
struct Target {
    /// host:port; repeat (or separate with commas) to spread the connections.
    #[arg(long, required = true, value_delimiter = ',')]
    addr: Vec<String>,
}

#[derive(Args, Clone)]
struct Keyspace {
    /// Keys are <prefix><i:012> for i in 0..keys.
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    #[arg(long, default_value = "key:")]
    key_prefix: String,
    /// Bytes of each SET value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Share of GETs (the rest are SETs).
    #[arg(long, default_value_t = 0.5)]
    get_ratio: f64,
}

#[derive(Args)]
struct Output {
    /// Write the per-second timeline (by scheduled time) as CSV here.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the summary as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Phases (lines `NAME START_UNIX_MS END_UNIX_MS`), read at the end: a
    /// summary for each, over the requests due within it.
    #[arg(long)]
    phases: Option<PathBuf>,
    /// Stop early once this file exists (checked every 100 ms).
    #[arg(long)]
    stop_file: Option<PathBuf>,
    /// Seconds at the start left out of the overall summary.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// No per-second lines.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct RunArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    keys: Keyspace,
    #[command(flatten)]
    output: Output,
    /// Requests per second, all connections together.
    #[arg(long)]
    rate: f64,
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Seconds (the run ends earlier through --stop-file).
    #[arg(long, default_value_t = 30.0)]
    duration: f64,
    /// How long to wait for replies still due after the last send.
    #[arg(long, default_value_t = 10.0)]
    drain: f64,
}

#[derive(Args)]
struct MaxArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    keys: Keyspace,
    #[arg(long, default_value_t = 50)]
    conns: usize,
    /// Requests in flight per connection (a batch written at once).
    #[arg(long, default_value_t = 1)]
    pipeline: usize,
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Seconds at the start not counted.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    #[arg(long)]
    json: Option<PathBuf>,
}

#[derive(Args)]
struct FillArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    keys: Keyspace,
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// SETs per pipelined batch.
    #[arg(long, default_value_t = 1000)]
    pipeline: usize,
}

#[derive(Args)]
struct FillHashArgs {
    #[command(flatten)]
    target: Target,
    /// The hash's name.
    #[arg(long)]
    key: String,
    #[arg(long, default_value_t = 500_000)]
    fields: u64,
    /// Bytes of each field's value.
    #[arg(long, default_value_t = 100)]
    value_size: usize,
    /// Fields per HSET.
    #[arg(long, default_value_t = 100)]
    per_cmd: u64,
    /// HSETs per pipelined batch.
    #[arg(long, default_value_t = 50)]
    pipeline: usize,
}

#[derive(Args)]
struct ProbeArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    output: Output,
    /// The command, split at spaces (e.g. "GET key:000000000001").
    #[arg(long, default_value = "PING")]
    cmd: String,
    #[arg(long, default_value_t = 60.0)]
    duration: f64,
    /// Print every request slower than this (ms) as it happens.
    #[arg(long, default_value_t = 20.0)]
    report_over_ms: f64,
}

#[derive(Args)]
struct RawMigrateArgs {
    /// The source server.
    #[arg(long)]
    addr: String,
    /// The target server, host:port.
    #[arg(long)]
    to: String,
    #[arg(long, default_value_t = 1_000_000)]
    keys: u64,
    #[arg(long, default_value = "key:")]
    key_prefix: String,
    /// Keys per MIGRATE.
    #[arg(long, default_value_t = 1000)]
    batch: u64,
    #[arg(long)]
    json: Option<PathBuf>,
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Run(a) => run(a),
        Cmd::Max(a) => max(a),
        Cmd::Fill(a) => fill(a),
        Cmd::FillHash(a) => fill_hash(a),
        Cmd::Probe(a) => probe(a),
        Cmd::RawMigrate(a) => raw_migrate(a),
    }
}

// ---------------------------------------------------------------------------
// Shared bits
// ---------------------------------------------------------------------------

/// The run's time base: an instant and the same moment in unix ms.
#[derive(Clone, Copy)]
struct Clock {
    t0: Instant,
    t0_unix_ms: f64,
}

impl Clock {
    /// `delay` from now.
    fn starting_in(delay: Duration) -> Clock {
        let now_unix = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64()
            * 1000.0;
        Clock {
            t0: Instant::now() + delay,
            t0_unix_ms: now_unix + delay.as_secs_f64() * 1000.0,
        }
    }
    fn ns(&self) -> u64 {
        Instant::now()
            .checked_duration_since(self.t0)
            .map_or(0, |d| d.as_nanos() as u64)
    }
    fn unix_ms_of(&self, ns: u64) -> u64 {
        (self.t0_unix_ms + ns as f64 / 1e6).round() as u64
    }
}

/// xorshift64*: cheap, good enough to pick keys.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n.max(1))) >> 64) as u64
    }
    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 <= p && p > 0.0
    }
}

fn key(prefix: &str, i: u64) -> Vec<u8> {
    format!("{prefix}{i:012}").into_bytes()
}

/// Appends one random GET or SET of the keyspace.
fn push_request(out: &mut Vec<u8>, ks: &Keyspace, value: &[u8], rng: &mut Rng) {
    let k = key(&ks.key_prefix, rng.below(ks.keys));
    if rng.chance(ks.get_ratio) {
        push_cmd(out, &[b"GET", &k]);
    } else {
        push_cmd(out, &[b"SET", &k, value]);
    }
}

fn seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos() as u64
        ^ u64::from(std::process::id())
}

/// Sets `stop` once `deadline` passes or the stop file appears; calls `tick`
/// every `every` meanwhile (`tick(k)` for the k-th interval ended).
fn watch(
    clock: Clock,
    deadline_ns: u64,
    stop: &AtomicBool,
    stop_file: Option<&Path>,
    every: Duration,
    mut tick: impl FnMut(u64),
) {
    let mut k = 1u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = clock.ns();
        if now >= deadline_ns {
            stop.store(true, Ordering::Relaxed);
            return;
        }
        if let Some(f) = stop_file {
            if f.exists() {
                stop.store(true, Ordering::Relaxed);
                return;
            }
        }
        let next_tick = k * every.as_nanos() as u64;
        if now >= next_tick {
            tick(k);
            k += 1;
            continue;
        }
        let nap = (next_tick - now).min(100_000_000);
        thread::sleep(Duration::from_nanos(nap));
    }
}

fn write_json(path: &Option<PathBuf>, v: &Value) -> Result<()> {
    if let Some(p) = path {
        std::fs::write(p, serde_json::to_string_pretty(v)? + "\n")
            .with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Overall (after warm-up), timeline and phases of a finished run: printed,
/// and written where asked. Returns the JSON summary.
fn report(
    samples: &mut [Sample],
    clock: Clock,
    output: &Output,
    mut extra: serde_json::Map<String, Value>,
    errors: &HashMap<String, u64>,
) -> Result<Value> {
    samples.sort_unstable_by_key(|s| s.sched_ns);
    let warm = (output.warmup * 1e9) as u64;
    let overall = summarize(samples.iter().filter(|s| s.sched_ns >= warm));
    println!(
        "overall (after {:.1} s warm-up): {}",
        output.warmup,
        overall.line()
    );
    if overall.n > 0 {
        println!(
            "  max at {} (unix ms), {:.3} s after the start",
            clock.unix_ms_of(overall.max_at_ns),
            overall.max_at_ns as f64 / 1e9
        );
    }
    let mut phases_json = serde_json::Map::new();
    if let Some(p) = &output.phases {
        match read_phases(p) {
            Ok(phases) => {
                for (phase, s) in phase_summaries(samples, &phases, clock.t0_unix_ms) {
                    println!("phase {:<10} {}", phase.name, s.line());
                    let mut j = s.json(clock.t0_unix_ms);
                    j["start_unix_ms"] = json!(phase.start_ms);
                    j["end_unix_ms"] = json!(phase.end_ms);
                    phases_json.insert(phase.name.clone(), j);
                }
            }
            Err(e) => eprintln!("loadgen: no phases: {e:#}"),
        }
    }
    if !errors.is_empty() {
        println!("error replies:");
        let mut errs: Vec<_> = errors.iter().collect();
        errs.sort_by(|a, b| b.1.cmp(a.1));
        for (msg, n) in &errs {
            println!("  {n:>8}  {msg}");
        }
    }
    if let Some(out) = &output.out {
        std::fs::write(out, timeline_csv(samples, clock.t0_unix_ms))
            .with_context(|| format!("writing {}", out.display()))?;
    }
    extra.insert("t0_unix_ms".into(), json!(clock.t0_unix_ms.round() as u64));
    extra.insert("warmup_s".into(), json!(output.warmup));
    extra.insert("overall".into(), overall.json(clock.t0_unix_ms));
    extra.insert("phases".into(), Value::Object(phases_json));
    extra.insert("error_replies".into(), json!(errors));
    let v = Value::Object(extra);
    write_json(&output.json, &v)?;
    Ok(v)
}

/// First words of an error reply, as a key for counting.
fn error_key(msg: &str) -> String {
    let mut s: String = msg.chars().take(80).collect();
    if msg.len() > s.len() {
        s.push('…');
    }
    s
}

// ---------------------------------------------------------------------------
// run: open loop at a fixed rate
// ---------------------------------------------------------------------------

/// Requests sent and not yet answered, per connection (their scheduled
/// times, in order), shared by the writer and the reader.
struct InFlight {
    queues: Vec<Mutex<VecDeque<u64>>>,
    /// The writer sent its last request.
    writer_done: AtomicBool,
}

impl InFlight {
    fn queue(&self, conn: usize) -> std::sync::MutexGuard<'_, VecDeque<u64>> {
        self.queues[conn].lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the per-second lines show (replies by completion time).
#[derive(Default)]
struct Live {
    lats: Vec<u32>,
    errors: u64,
}

struct ReaderResult {
    samples: Vec<Sample>,
    errors: HashMap<String, u64>,
    unanswered: usize,
    failures: Vec<String>,
    /// Reads that came with the kernel's receive time.
    stamped: u64,
    reads: u64,
}

fn run(a: RunArgs) -> Result<()> {
    if a.rate <= 0.0 || a.conns == 0 {
        bail!("--rate and --conns must be positive");
    }
    let conns = a.conns;
    let duration_ns = (a.duration * 1e9) as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let live = Arc::new(Mutex::new(Live::default()));
    let sent = Arc::new(AtomicU64::new(0));
    let max_lag_us = Arc::new(AtomicU64::new(0));
    let value: Arc<Vec<u8>> = Arc::new(vec![b'v'; a.keys.value_size]);
    let mut socks = Vec::new();
    for j in 0..conns {
        let addr = &a.target.addr[j % a.target.addr.len()];
        socks.push(connect(addr, Duration::from_millis(100))?);
    }
    let clock = Clock::starting_in(Duration::from_millis(200));
    eprintln!(
        "loadgen run: {} req/s over {} connections to {} ({:.0}% GET, {}-byte values, {} keys), {} s",
        a.rate,
        conns,
        a.target.addr.join(","),
        a.keys.get_ratio * 100.0,
        a.keys.value_size,
        a.keys.keys,
        a.duration
    );
    // Two threads for all connections: one writes every request when it is
    // due, one reads every reply (mio, edge-triggered). A thread per
    // connection and direction cost the machine under test about half a
    // core at 18k requests/s on two cores, and every reply woke a thread.
    let inflight = Arc::new(InFlight {
        queues: (0..conns).map(|_| Mutex::default()).collect(),
        writer_done: AtomicBool::new(false),
    });
    let mut rsocks = Vec::new();
    for sock in &socks {
        let r = sock.try_clone()?;
        // Shared by both clones: the writer sees `WouldBlock` too.
        r.set_nonblocking(true)?;
        rsocks.push(mio::net::TcpStream::from_std(r));
    }
    let writer = {
        let (stop, sent, lag, value, inflight) = (
            stop.clone(),
            sent.clone(),
            max_lag_us.clone(),
            value.clone(),
            inflight.clone(),
        );
        let ks = a.keys.clone();
        let drain = Duration::from_secs_f64(a.drain);
        let period_ns = 1e9 / a.rate;
        thread::spawn(move || {
            let r = write_loop(
                socks,
                &ks,
                &value,
                clock,
                period_ns,
                duration_ns,
                drain,
                &stop,
                &inflight,
                &sent,
                &lag,
            );
            inflight.writer_done.store(true, Ordering::Release);
            r
        })
    };
    let reader = {
        let (live, inflight, drain) = (
            live.clone(),
            inflight.clone(),
            Duration::from_secs_f64(a.drain),
        );
        thread::spawn(move || read_loop(rsocks, clock, &inflight, &live, drain))
    };
    // Per-second lines until the end (or the stop file).
    let quiet = a.output.quiet;
    let mut last_sent = 0;
    watch(
        clock,
        duration_ns,
        &stop,
        a.output.stop_file.as_deref(),
        Duration::from_secs(1),
        |k| {
            let (mut lats, errors) = {
                let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
                (std::mem::take(&mut l.lats), std::mem::take(&mut l.errors))
            };
            let now_sent = sent.load(Ordering::Relaxed);
            if !quiet {
                lats.sort_unstable();
                let n = lats.len();
                let pick = |q: f64| {
                    if n == 0 {
                        0.0
                    } else {
                        stats::ms(lats[((q * n as f64).ceil() as usize).clamp(1, n) - 1])
                    }
                };
                println!(
                    "{k:>4}s  sent {:>7}  done {:>7}  err {:>5}  p50 {:>7.3} ms  p99 {:>7.3} ms  max {:>8.3} ms",
                    now_sent - last_sent,
                    n,
                    errors,
                    pick(0.5),
                    pick(0.99),
                    lats.last().map_or(0.0, |&m| stats::ms(m))
                );
                let _ = std::io::stdout().flush();
            }
            last_sent = now_sent;
        },
    );
    let ran_s = clock.ns() as f64 / 1e9;
    let mut failures = Vec::new();
    match writer.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("writer: {e:#}")),
        Err(_) => failures.push("the writer panicked".into()),
    }
    let (mut samples, errors, unanswered, stamped, reads) = match reader.join() {
        Ok(res) => {
            failures.extend(res.failures.into_iter().map(|f| format!("reader: {f}")));
            (
                res.samples,
                res.errors,
                res.unanswered,
                res.stamped,
                res.reads,
            )
        }
        Err(_) => {
            failures.push("the reader panicked".into());
            (Vec::new(), HashMap::new(), 0, 0, 0)
        }
    };
    let sent_total = sent.load(Ordering::Relaxed);
    let max_lag = max_lag_us.load(Ordering::Relaxed);
    println!(
        "sent {sent_total} in {ran_s:.1} s ({:.0}/s), answered {}, unanswered {unanswered}, error replies {}; \
         longest a send ran behind its schedule: {:.3} ms; reads timed by the kernel: {stamped} of {reads}",
        sent_total as f64 / ran_s.max(1e-9),
        samples.len(),
        errors.values().sum::<u64>(),
        max_lag as f64 / 1000.0
    );
    for f in &failures {
        println!("connection failure: {f}");
    }
    let mut extra = serde_json::Map::new();
    extra.insert("mode".into(), json!("run"));
    extra.insert("rate".into(), json!(a.rate));
    extra.insert("conns".into(), json!(conns));
    extra.insert("addr".into(), json!(a.target.addr));
    extra.insert("ran_s".into(), json!(ran_s));
    extra.insert("sent".into(), json!(sent_total));
    extra.insert("answered".into(), json!(samples.len()));
    extra.insert("unanswered".into(), json!(unanswered));
    extra.insert("max_send_lag_ms".into(), json!(max_lag as f64 / 1000.0));
    extra.insert("reads_kernel_timed".into(), json!(stamped));
    extra.insert("reads".into(), json!(reads));
    extra.insert("failures".into(), json!(failures));
    report(&mut samples, clock, &a.output, extra, &errors)?;
    if !failures.is_empty() || unanswered > 0 {
        bail!(
            "{} connection failures, {unanswered} requests unanswered",
            failures.len()
        );
    }
    Ok(())
}

/// Request `n` (of all connections together) is due `n * period_ns` after
/// the start, on connection `n % C`: connection `j` sends its `i`-th at
/// `(i * C + j) * period_ns`. Whatever is due is queued at once (a
/// connection behind schedule pipelines); bytes a full socket buffer did not
/// take wait for the next turn.
#[allow(clippy::too_many_arguments)]
fn write_loop(
    mut socks: Vec<TcpStream>,
    ks: &Keyspace,
    value: &[u8],
    clock: Clock,
    period_ns: f64,
    duration_ns: u64,
    drain: Duration,
    stop: &AtomicBool,
    inflight: &InFlight,
    sent: &AtomicU64,
    max_lag_us: &AtomicU64,
) -> Result<()> {
    let conns = socks.len();
    let mut rng = Rng::new(seed());
    let sched = |n: u64| (n as f64 * period_ns) as u64;
    let mut n: u64 = 0;
    let mut out: Vec<Vec<u8>> = (0..conns).map(|_| Vec::with_capacity(64 * 1024)).collect();
    let mut due: Vec<Vec<u64>> = (0..conns).map(|_| Vec::with_capacity(1024)).collect();
    let mut done_at: Option<Instant> = None;
    loop {
        let over = stop.load(Ordering::Relaxed) || sched(n) >= duration_ns;
        let pending = out.iter().any(|b| !b.is_empty());
        if over {
            if !pending {
                return Ok(());
            }
            if done_at.get_or_insert_with(Instant::now).elapsed() > drain {
                bail!(
                    "requests still unsent {:.1} s after the end",
                    drain.as_secs_f64()
                );
            }
        }
        let now = clock.ns();
        let next = sched(n);
        if !over && (next > now || Instant::now() < clock.t0) {
            let mut wait = if Instant::now() < clock.t0 {
                clock.t0 - Instant::now() + Duration::from_nanos(next)
            } else {
                Duration::from_nanos(next - now)
            };
            if pending {
                wait = wait.min(Duration::from_micros(200));
            }
            thread::sleep(wait.min(Duration::from_millis(50)));
            if !pending {
                continue;
            }
        } else if over {
            thread::sleep(Duration::from_micros(200));
        }
        let mut queued = 0;
        if !over {
            let first = sched(n);
            while queued < 1000 * conns && sched(n) <= now && sched(n) < duration_ns {
                let j = (n % conns as u64) as usize;
                due[j].push(sched(n));
                push_request(&mut out[j], ks, value, &mut rng);
                n += 1;
                queued += 1;
            }
            if queued > 0 {
                max_lag_us.fetch_max(now.saturating_sub(first) / 1000, Ordering::Relaxed);
            }
        }
        for j in 0..conns {
            if !due[j].is_empty() {
                // Queued before the bytes go: the reply cannot come first.
                inflight.queue(j).extend(due[j].drain(..));
            }
            let buf = &mut out[j];
            let mut off = 0;
            while off < buf.len() {
                match socks[j].write(&buf[off..]) {
                    Ok(0) => bail!("write: the connection is closed"),
                    Ok(k) => off += k,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e).context("write"),
                }
            }
            buf.drain(..off);
        }
        sent.fetch_add(queued as u64, Ordering::Relaxed);
    }
}

/// One read, and the kernel's receive time (`SO_TIMESTAMPNS`, Unix ns) of
/// the last packet it took, when there is one.
fn recv_stamped(
    sock: &mut mio::net::TcpStream,
    buf: &mut [u8],
    cmsg: &mut [u8],
    stamp: &mut Option<i128>,
) -> std::io::Result<usize> {
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let msg = recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(cmsg), MsgFlags::empty())?;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmTimestampns(ts) = c {
            *stamp = Some(i128::from(ts.tv_sec()) * 1_000_000_000 + i128::from(ts.tv_nsec()));
        }
    }
    Ok(msg.bytes)
}

fn unix_ns_now() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// Reads every connection's replies as they come (one thread, mio) and
/// times each from its request's scheduled send time.
fn read_loop(
    socks: Vec<mio::net::TcpStream>,
    clock: Clock,
    inflight: &InFlight,
    live: &Mutex<Live>,
    drain: Duration,
) -> ReaderResult {
    let mut res = ReaderResult {
        samples: Vec::new(),
        errors: HashMap::new(),
        unanswered: 0,
        failures: Vec::new(),
        stamped: 0,
        reads: 0,
    };
    let conns = socks.len();
    let mut poll = match mio::Poll::new() {
        Ok(p) => p,
        Err(e) => {
            res.failures.push(format!("poll: {e}"));
            return res;
        }
    };
    let mut readers: Vec<Option<Reader<mio::net::TcpStream>>> = Vec::new();
    for (j, mut sock) in socks.into_iter().enumerate() {
        if let Err(e) = setsockopt(&sock, sockopt::ReceiveTimestampns, &true) {
            res.failures.push(format!("SO_TIMESTAMPNS: {e}"));
            return res;
        }
        if let Err(e) = poll
            .registry()
            .register(&mut sock, mio::Token(j), mio::Interest::READABLE)
        {
            res.failures.push(format!("register: {e}"));
            return res;
        }
        readers.push(Some(Reader::new(sock)));
    }
    let mut events = mio::Events::with_capacity(conns.max(16));
    let mut batch: Vec<u32> = Vec::with_capacity(1024);
    let mut batch_errors = 0;
    let mut done_at: Option<Instant> = None;
    let mut ready: Vec<usize> = Vec::with_capacity(conns);
    let mut cmsg = nix::cmsg_space!(TimeSpec);
    loop {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(50))) {
            if e.kind() != std::io::ErrorKind::Interrupted {
                res.failures.push(format!("poll: {e}"));
                break;
            }
        }
        ready.clear();
        ready.extend(events.iter().map(|ev| ev.token().0));
        for &j in &ready {
            let Some(reader) = readers.get_mut(j).and_then(Option::as_mut) else {
                continue;
            };
            let failure = loop {
                let mut stamp = None;
                match reader.fill_via(|sock, buf| recv_stamped(sock, buf, &mut cmsg, &mut stamp)) {
                    Ok(0) => break None,
                    Ok(_) => {}
                    Err(e) => break Some(format!("{e:#}")),
                }
                let now = clock.ns();
                // When the bytes reached the socket (the kernel's time of
                // the last packet read), on the tool's clock: not when this
                // thread got round to reading them.
                res.reads += 1;
                let arrived = match stamp {
                    Some(real_ns) => {
                        res.stamped += 1;
                        let offset = unix_ns_now() - i128::from(now);
                        u64::try_from(real_ns - offset).map_or(now, |a| a.min(now))
                    }
                    None => now,
                };
                let mut queue = inflight.queue(j);
                let failure = loop {
                    let reply = match reader.next_reply() {
                        Ok(Some(r)) => r,
                        Ok(None) => break None,
                        Err(e) => break Some(format!("{e:#}")),
                    };
                    let Some(sched) = queue.pop_front() else {
                        break Some("a reply to no request".to_string());
                    };
                    let lat_us =
                        u32::try_from(arrived.saturating_sub(sched) / 1000).unwrap_or(u32::MAX);
                    let err = reply.error.is_some();
                    if let Some(msg) = reply.error {
                        *res.errors.entry(error_key(&msg)).or_default() += 1;
                        batch_errors += 1;
                    }
                    res.samples.push(Sample {
                        sched_ns: sched,
                        lat_us,
                        err,
                    });
                    batch.push(lat_us);
                };
                drop(queue);
                if failure.is_some() {
                    break failure;
                }
                if reader.drained() {
                    break None;
                }
            };
            if let Some(f) = failure {
                res.failures.push(f);
                // Its requests are left unanswered (counted below).
                readers[j] = None;
            }
        }
        if !batch.is_empty() || batch_errors > 0 {
            let mut l = live.lock().unwrap_or_else(|e| e.into_inner());
            l.lats.append(&mut batch);
            l.errors += batch_errors;
            batch_errors = 0;
        }
        if inflight.writer_done.load(Ordering::Acquire) {
            let left: usize = (0..conns)
                .filter(|&j| readers[j].is_some())
                .map(|j| inflight.queue(j).len())
                .sum();
            if left == 0 {
                break;
            }
            if done_at.get_or_insert_with(Instant::now).elapsed() > drain {
                break;
            }
        }
    }
    res.unanswered = (0..conns).map(|j| inflight.queue(j).len()).sum();
    res
}

// ---------------------------------------------------------------------------
// max: closed loop
// ---------------------------------------------------------------------------

fn max(a: MaxArgs) -> Result<()> {
    if a.conns == 0 || a.pipeline == 0 {
        bail!("--conns and --pipeline must be positive");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let value = Arc::new(vec![b'v'; a.keys.value_size]);
    let mut threads = Vec::new();
    for j in 0..a.conns {
        let mut sock = connect(
            &a.target.addr[j % a.target.addr.len()],
            Duration::from_secs(30),
        )?;
        let (stop, done, errors, value, ks, pipeline) = (
            stop.clone(),
            done.clone(),
            errors.clone(),
            value.clone(),
            a.keys.clone(),
            a.pipeline,
        );
        threads.push(thread::spawn(move || -> Result<()> {
            let mut reader = Reader::new(sock.try_clone()?);
            let mut rng = Rng::new(seed() ^ ((j as u64) << 32));
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                buf.clear();
                for _ in 0..pipeline {
                    push_request(&mut buf, &ks, &value, &mut rng);
                }
                sock.write_all(&buf)?;
                for _ in 0..pipeline {
                    if reader.read_reply()?.error.is_some() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
                done.fetch_add(pipeline as u64, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let clock = Clock::starting_in(Duration::ZERO);
    let warm_ns = (a.warmup * 1e9) as u64;
    let end_ns = warm_ns + (a.duration * 1e9) as u64;
    let mut at_warm: Option<(u64, Instant)> = None;
    let mut per_sec = Vec::new();
    let mut last = 0;
    watch(
        clock,
        end_ns,
        &stop,
        None,
        Duration::from_millis(100),
        |k| {
            let now = done.load(Ordering::Relaxed);
            if at_warm.is_none() && k * 100_000_000 >= warm_ns {
                at_warm = Some((now, Instant::now()));
            }
            if k % 10 == 0 {
                per_sec.push(now - last);
                last = now;
            }
        },
    );
    let (end_done, end_t) = (done.load(Ordering::Relaxed), Instant::now());
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a connection panicked"))??;
    }
    let at_warm = at_warm.unwrap_or((0, clock.t0));
    let secs = (end_t - at_warm.1).as_secs_f64();
    let ops = (end_done - at_warm.0) as f64 / secs.max(1e-9);
    let errs = errors.load(Ordering::Relaxed);
    println!(
        "max: {ops:.0} ops/s ({} connections, pipeline {}, {:.1} s after {:.1} s warm-up; per second: {:?}; error replies {errs})",
        a.conns, a.pipeline, secs, a.warmup, per_sec
    );
    write_json(
        &a.json,
        &json!({"mode": "max", "ops_per_sec": ops, "conns": a.conns, "pipeline": a.pipeline,
                "seconds": secs, "per_second": per_sec, "errors": errs, "addr": a.target.addr}),
    )?;
    if errs > 0 {
        bail!("{errs} error replies");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// fill, fill-hash
// ---------------------------------------------------------------------------

fn fill(a: FillArgs) -> Result<()> {
    let started = Instant::now();
    let conns = a.conns.max(1) as u64;
    let per = a.keys.keys.div_ceil(conns);
    let mut threads = Vec::new();
    for j in 0..conns {
        let (from, to) = (j * per, ((j + 1) * per).min(a.keys.keys));
        let addr = a.target.addr[j as usize % a.target.addr.len()].clone();
        let (prefix, size, pipeline) = (
            a.keys.key_prefix.clone(),
            a.keys.value_size,
            a.pipeline.max(1),
        );
        threads.push(thread::spawn(move || -> Result<()> {
            let mut sock = connect(&addr, Duration::from_secs(60))?;
            let mut reader = Reader::new(sock.try_clone()?);
            let mut buf = Vec::new();
            let mut value = vec![b'v'; size];
            let mut i = from;
            while i < to {
                buf.clear();
                let n = (to - i).min(pipeline as u64);
                for k in i..i + n {
                    // The value starts with the key's number: checkable.
                    let tag = format!("{k:012}");
                    let m = tag.len().min(size);
                    value[..m].copy_from_slice(&tag.as_bytes()[..m]);
                    push_cmd(&mut buf, &[b"SET", &key(&prefix, k), &value]);
                }
                sock.write_all(&buf)?;
                for _ in 0..n {
                    if let Some(e) = reader.read_reply()?.error {
                        bail!("SET failed: {e}");
                    }
                }
                i += n;
            }
            Ok(())
        }));
    }
    for t in threads {
        t.join()
            .map_err(|_| anyhow::anyhow!("a connection panicked"))??;
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "fill: {} keys of {} bytes in {s:.2} s ({:.0} keys/s)",
        a.keys.keys,
        a.keys.value_size,
        a.keys.keys as f64 / s
    );
    Ok(())
}

fn fill_hash(a: FillHashArgs) -> Result<()> {
    let started = Instant::now();
    let mut sock = connect(&a.target.addr[0], Duration::from_secs(60))?;
    let mut reader = Reader::new(sock.try_clone()?);
    let value = vec![b'h'; a.value_size];
    let per_cmd = a.per_cmd.max(1);
    let mut f = 0;
    let mut buf = Vec::new();
    while f < a.fields {
        buf.clear();
        let mut cmds = 0;
        while cmds < a.pipeline.max(1) && f < a.fields {
            let n = (a.fields - f).min(per_cmd);
            let names: Vec<Vec<u8>> = (f..f + n)
                .map(|i| format!("f:{i:09}").into_bytes())
                .collect();
            let mut args: Vec<&[u8]> = vec![b"HSET", a.key.as_bytes()];
            for name in &names {
                args.push(name);
                args.push(&value);
            }
            push_cmd(&mut buf, &args);
            f += n;
            cmds += 1;
        }
        sock.write_all(&buf)?;
        for _ in 0..cmds {
            if let Some(e) = reader.read_reply()?.error {
                bail!("HSET failed: {e}");
            }
        }
    }
    println!(
        "fill-hash: {} fields of {} bytes into {} in {:.2} s",
        a.fields,
        a.value_size,
        a.key,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// probe
// ---------------------------------------------------------------------------

fn probe(a: ProbeArgs) -> Result<()> {
    let args: Vec<&[u8]> = a.cmd.split_whitespace().map(str::as_bytes).collect();
    if args.is_empty() {
        bail!("--cmd is empty");
    }
    let mut req = Vec::new();
    push_cmd(&mut req, &args);
    let mut sock = connect(&a.target.addr[0], Duration::from_secs(120))?;
    let mut reader = Reader::new(sock.try_clone()?);
    let stop = Arc::new(AtomicBool::new(false));
    let clock = Clock::starting_in(Duration::ZERO);
    let duration_ns = (a.duration * 1e9) as u64;
    let watcher = {
        let (stop, stop_file) = (stop.clone(), a.output.stop_file.clone());
        thread::spawn(move || {
            watch(
                clock,
                duration_ns,
                &stop,
                stop_file.as_deref(),
                Duration::from_secs(3600),
                |_| {},
            )
        })
    };
    let over_us = (a.report_over_ms * 1000.0) as u32;
    let mut samples = Vec::new();
    let mut errors: HashMap<String, u64> = HashMap::new();
    let mut max_gap_ns = 0u64;
    let mut last_done = clock.ns();
    let mut failure = None;
    while !stop.load(Ordering::Relaxed) {
        let sent = clock.ns();
        if let Err(e) = sock.write_all(&req) {
            failure = Some(format!("write: {e}"));
            break;
        }
        let reply = match reader.read_reply() {
            Ok(r) => r,
            Err(e) => {
                failure = Some(format!("{e:#}"));
                break;
            }
        };
        let done = clock.ns();
        let lat_us = u32::try_from((done - sent) / 1000).unwrap_or(u32::MAX);
        max_gap_ns = max_gap_ns.max(done - last_done);
        last_done = done;
        if let Some(msg) = &reply.error {
            *errors.entry(error_key(msg)).or_default() += 1;
        }
        if lat_us >= over_us && !a.output.quiet {
            println!(
                "probe {}: {} took {:.3} ms at {} (unix ms){}",
                a.target.addr[0],
                a.cmd,
                stats::ms(lat_us),
                clock.unix_ms_of(sent),
                reply
                    .error
                    .as_deref()
                    .map(|e| format!(": {e}"))
                    .unwrap_or_default()
            );
        }
        samples.push(Sample {
            sched_ns: sent,
            lat_us,
            err: reply.error.is_some(),
        });
    }
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let ran_s = clock.ns() as f64 / 1e9;
    println!(
        "probe {} `{}`: {} requests in {ran_s:.1} s; longest gap between replies {:.3} ms",
        a.target.addr[0],
        a.cmd,
        samples.len(),
        max_gap_ns as f64 / 1e6
    );
    let mut extra = serde_json::Map::new();
    extra.insert("mode".into(), json!("probe"));
    extra.insert("addr".into(), json!(a.target.addr[0]));
    extra.insert("cmd".into(), json!(a.cmd));
    extra.insert("ran_s".into(), json!(ran_s));
    extra.insert("max_gap_ms".into(), json!(max_gap_ns as f64 / 1e6));
    extra.insert("failure".into(), json!(failure));
    let slowest = {
        let mut v: Vec<&Sample> = samples.iter().collect();
        v.sort_unstable_by_key(|s| std::cmp::Reverse(s.lat_us));
        v.iter()
            .take(5)
            .map(|s| json!({"ms": stats::ms(s.lat_us), "unix_ms": clock.unix_ms_of(s.sched_ns)}))
            .collect::<Vec<_>>()
    };
    extra.insert("slowest".into(), json!(slowest));
    report(&mut samples, clock, &a.output, extra, &errors)?;
    if let Some(f) = failure {
        bail!("the probe's connection failed: {f}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// raw-migrate
// ---------------------------------------------------------------------------

fn raw_migrate(a: RawMigrateArgs) -> Result<()> {
    let (host, port) = a.to.rsplit_once(':').context("--to must be host:port")?;
    let mut sock = connect(&a.addr, Duration::from_secs(120))?;
    let mut reader = Reader::new(sock.try_clone()?);
    let batch = a.batch.max(1);
    let started = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut calls = 0u64;
    let mut buf = Vec::new();
    let mut i = 0;
    while i < a.keys {
        let n = (a.keys - i).min(batch);
        let keys: Vec<Vec<u8>> = (i..i + n).map(|k| key(&a.key_prefix, k)).collect();
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            host.as_bytes(),
            port.as_bytes(),
            b"",
            b"0",
            b"10000",
            b"KEYS",
        ];
        args.extend(keys.iter().map(Vec::as_slice));
        buf.clear();
        push_cmd(&mut buf, &args);
        let t = Instant::now();
        sock.write_all(&buf)?;
        if let Some(e) = reader.read_reply()?.error {
            if !e.starts_with("NOKEY") {
                bail!("MIGRATE failed: {e}");
            }
        }
        slowest = slowest.max(t.elapsed());
        calls += 1;
        i += n;
    }
    let s = started.elapsed().as_secs_f64();
    println!(
        "raw-migrate: {} keys in {s:.2} s ({:.0} keys/s), {calls} MIGRATE calls of up to {batch} keys, slowest {:.1} ms",
        a.keys,
        a.keys as f64 / s,
        slowest.as_secs_f64() * 1000.0
    );
    write_json(
        &a.json,
        &json!({"mode": "raw-migrate", "keys": a.keys, "seconds": s, "keys_per_sec": a.keys as f64 / s,
                "batch": batch, "calls": calls, "slowest_ms": slowest.as_secs_f64() * 1000.0}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The time a reply is counted at is when its bytes reached the socket,
    /// not when the reader read them.
    #[test]
    fn a_read_carries_the_kernels_receive_time() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut server, _) = listener.accept().unwrap();
        setsockopt(&client, sockopt::ReceiveTimestampns, &true).unwrap();
        // The kernel turns receive timestamps on a moment later (`run`
        // starts sending 200 ms after it asked).
        thread::sleep(Duration::from_millis(100));
        let before = unix_ns_now();
        server.write_all(b"+OK\r\n").unwrap();
        let after = unix_ns_now();
        thread::sleep(Duration::from_millis(50));
        let mut sock = mio::net::TcpStream::from_std(client);
        let (mut buf, mut cmsg, mut stamp) = ([0u8; 64], nix::cmsg_space!(TimeSpec), None);
        let n = recv_stamped(&mut sock, &mut buf, &mut cmsg, &mut stamp).unwrap();
        assert_eq!(&buf[..n], b"+OK\r\n");
        let at = stamp.expect("a receive time");
        assert!(
            before <= at && at <= after,
            "received at {at}, written between {before} and {after} (read 50 ms later)"
        );
    }
}
