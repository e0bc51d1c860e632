//! Traffic statistics: every `stats_interval_ms` (1 s) the dashboard reads
//! each registered proxy's `/api/v1/stats` and each group server's `INFO`,
//! turns counters into rates and latency quantiles over the interval, and
//! keeps the last [`HISTORY_POINTS`] cluster-wide points for the charts.
//!
//! Proxies report counters since they started; the rate over an interval is
//! the difference between two readings of the same proxy. A proxy that
//! restarted (its counters went down) counts from zero again, and one that
//! did not answer is listed with the reason and adds nothing.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use parking_lot::Mutex;
use shardis_topology::stats::{bucket_delta, quantile_us, Latency, ProxyStats, Slowlog};
use shardis_topology::{GroupId, ProxyInfo, Topology, SLOT_COUNT};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use crate::api::{
    BackendLoad, ClusterStats, CommandLoad, ProxyLoad, ProxySlowEntry, ServerLoad, SlowlogResponse,
    StatsHistory, StatsPoint,
};
use crate::state::AppState;

/// Points kept for the charts: 5 minutes at the default 1 s interval.
pub const HISTORY_POINTS: usize = 300;

/// The largest answer read from a proxy's admin port.
const MAX_BODY: usize = 8 << 20;

/// What the collector knows; read by the API handlers.
#[derive(Debug, Default)]
pub struct Collector {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    latest: ClusterStats,
    history: VecDeque<StatsPoint>,
    interval_secs: f64,
    /// The last reading of each proxy (by id), and when it was taken.
    readings: HashMap<String, (Instant, ProxyStats)>,
    /// The last collection's proxies and servers, for `/metrics`.
    proxies: Vec<(ProxyInfo, Option<ProxyStats>)>,
}

impl Collector {
    /// The latest collection (all zeros before the first).
    pub fn latest(&self) -> ClusterStats {
        self.inner.lock().latest.clone()
    }

    pub fn history(&self) -> StatsHistory {
        let inner = self.inner.lock();
        StatsHistory {
            interval_secs: inner.interval_secs,
            points: inner.history.iter().cloned().collect(),
        }
    }

    /// Every registered proxy of the last collection with its raw reading
    /// (`None`: it did not answer).
    pub fn proxy_readings(&self) -> Vec<(ProxyInfo, Option<ProxyStats>)> {
        self.inner.lock().proxies.clone()
    }
}

/// Collects until `shutdown` turns true.
pub async fn run(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let every = state.config.stats_interval();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // A collection never takes longer than the interval plus a timeout.
        if timeout(every * 3, collect(&state)).await.is_err() {
            tracing::warn!("a stats collection took longer than {:?}", every * 3);
        }
    }
}

/// One collection: reads every proxy and server, updates the collector.
pub async fn collect(state: &AppState) {
    let topology = match state.store.load_topology().await {
        Ok(t) => t.unwrap_or_default(),
        Err(e) => {
            tracing::debug!(error = %e, "stats: cannot load the topology");
            Topology::default()
        }
    };
    let proxies = state.store.list_proxies().await.unwrap_or_default();
    let within = state
        .config
        .proxy_health_timeout()
        .max(Duration::from_secs(1));
    let (readings, servers) = tokio::join!(
        join_all(proxies.iter().map(|p| fetch_json::<ProxyStats>(
            &p.admin_addr,
            "/api/v1/stats",
            within
        ))),
        servers(state, &topology),
    );
    let now = Instant::now();
    let time = unix_now();
    let mut inner = state.stats.inner.lock();
    let mut cluster = ClusterStats {
        time,
        servers,
        ..ClusterStats::default()
    };
    let mut all_latency: Vec<u64> = Vec::new();
    let mut slot_ops = vec![0f64; SLOT_COUNT];
    let mut have_rates = false;
    let mut commands: BTreeMap<String, (CommandLoad, Vec<u64>)> = BTreeMap::new();
    let mut intervals = Vec::new();
    let mut kept = Vec::with_capacity(proxies.len());
    let mut readings_now = HashMap::new();
    for (info, reading) in proxies.into_iter().zip(readings) {
        let mut load = ProxyLoad {
            id: info.id.clone(),
            addr: info.addr.clone(),
            admin_addr: info.admin_addr.clone(),
            ..ProxyLoad::default()
        };
        let stats = match reading {
            Ok(s) => s,
            Err(e) => {
                load.error = Some(e);
                cluster.proxies.push(load);
                kept.push((info, None));
                continue;
            }
        };
        load.up = true;
        load.ops_total = stats.ops_total;
        load.sessions = stats.sessions.current;
        load.sessions_total = stats.sessions.total;
        load.uptime_secs = stats.uptime_secs;
        load.topology_version = stats.topology_version;
        load.fenced = stats.fenced;
        load.stats_enabled = stats.stats_enabled;
        load.slowlog_len = stats.slowlog_len;
        cluster.ops_total += stats.ops_total;
        cluster.sessions += stats.sessions.current;
        let prev = inner
            .readings
            .get(&info.id)
            .filter(|(_, p)| p.ops_total <= stats.ops_total && p.uptime_secs <= stats.uptime_secs);
        if let Some((at, prev)) = prev {
            let dt = now.duration_since(*at).as_secs_f64();
            if dt > 0.0 {
                have_rates = true;
                intervals.push(dt);
                let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / dt;
                load.ops_per_sec = rate(stats.ops_total, prev.ops_total);
                load.errors_per_sec = rate(stats.errors_total, prev.errors_total);
                let latency = bucket_delta(&stats.latency.buckets, &prev.latency.buckets);
                load.p50_us = quantile_us(&latency, 0.50);
                load.p99_us = quantile_us(&latency, 0.99);
                add_buckets(&mut all_latency, &latency);
                for c in &stats.commands {
                    let before = prev.commands.iter().find(|p| p.cmd == c.cmd);
                    let zero = Latency::default();
                    let (calls, errors, lat) =
                        before.map_or((0, 0, &zero), |p| (p.calls, p.errors, &p.latency));
                    let buckets = bucket_delta(&c.latency.buckets, &lat.buckets);
                    let cl = CommandLoad {
                        cmd: c.cmd.clone(),
                        calls: c.calls,
                        errors: c.errors,
                        ops_per_sec: rate(c.calls, calls),
                        errors_per_sec: rate(c.errors, errors),
                        p50_us: quantile_us(&buckets, 0.50),
                        p99_us: quantile_us(&buckets, 0.99),
                    };
                    let total = commands.entry(c.cmd.clone()).or_insert_with(|| {
                        (
                            CommandLoad {
                                cmd: c.cmd.clone(),
                                ..CommandLoad::default()
                            },
                            Vec::new(),
                        )
                    });
                    total.0.calls += cl.calls;
                    total.0.errors += cl.errors;
                    total.0.ops_per_sec += cl.ops_per_sec;
                    total.0.errors_per_sec += cl.errors_per_sec;
                    add_buckets(&mut total.1, &buckets);
                    load.commands.push(cl);
                }
                for (i, (a, b)) in stats.slot_ops.iter().zip(&prev.slot_ops).enumerate() {
                    if let Some(s) = slot_ops.get_mut(i) {
                        *s += a.saturating_sub(*b) as f64 / dt;
                    }
                }
                for b in &stats.backends {
                    let before = prev.backends.iter().find(|p| p.addr == b.addr);
                    let zero = Latency::default();
                    let (requests, errors, lat) =
                        before.map_or((0, 0, &zero), |p| (p.requests, p.errors, &p.latency));
                    let buckets = bucket_delta(&b.latency.buckets, &lat.buckets);
                    load.backends.push(BackendLoad {
                        addr: b.addr.clone(),
                        up: b.up,
                        requests_per_sec: rate(b.requests, requests),
                        errors_per_sec: rate(b.errors, errors),
                        inflight: b.inflight,
                        p50_us: quantile_us(&buckets, 0.50),
                        p99_us: quantile_us(&buckets, 0.99),
                    });
                }
            }
        }
        if load.commands.is_empty() {
            // First reading: totals only.
            load.commands = stats
                .commands
                .iter()
                .map(|c| CommandLoad {
                    cmd: c.cmd.clone(),
                    calls: c.calls,
                    errors: c.errors,
                    ..CommandLoad::default()
                })
                .collect();
        }
        if load.backends.is_empty() {
            load.backends = stats
                .backends
                .iter()
                .map(|b| BackendLoad {
                    addr: b.addr.clone(),
                    up: b.up,
                    inflight: b.inflight,
                    ..BackendLoad::default()
                })
                .collect();
        }
        sort_busiest(&mut load.commands);
        cluster.ops_per_sec += load.ops_per_sec;
        cluster.errors_per_sec += load.errors_per_sec;
        cluster.proxies.push(load);
        readings_now.insert(info.id.clone(), (now, stats.clone()));
        kept.push((info, Some(stats)));
    }
    cluster.p50_us = quantile_us(&all_latency, 0.50);
    cluster.p99_us = quantile_us(&all_latency, 0.99);
    cluster.p999_us = quantile_us(&all_latency, 0.999);
    cluster.commands = commands
        .into_values()
        .map(|(mut c, buckets)| {
            c.p50_us = quantile_us(&buckets, 0.50);
            c.p99_us = quantile_us(&buckets, 0.99);
            c
        })
        .collect();
    sort_busiest(&mut cluster.commands);
    if have_rates {
        cluster.slot_ops_per_sec = slot_ops;
        cluster.interval_secs = intervals.iter().sum::<f64>() / intervals.len() as f64;
        inner.interval_secs = cluster.interval_secs;
        inner.history.push_back(StatsPoint {
            time,
            ops_per_sec: cluster.ops_per_sec,
            errors_per_sec: cluster.errors_per_sec,
            p50_us: cluster.p50_us,
            p99_us: cluster.p99_us,
            proxies: cluster
                .proxies
                .iter()
                .filter(|p| p.up)
                .map(|p| (p.id.clone(), p.ops_per_sec))
                .collect(),
        });
        while inner.history.len() > HISTORY_POINTS {
            inner.history.pop_front();
        }
    }
    // Proxies that did not answer keep their last reading, so that the rate
    // after a missed collection is still right.
    for (id, reading) in readings_now {
        inner.readings.insert(id, reading);
    }
    let live: Vec<&str> = kept.iter().map(|(p, _)| p.id.as_str()).collect();
    let gone: Vec<String> = inner
        .readings
        .keys()
        .filter(|id| !live.contains(&id.as_str()))
        .cloned()
        .collect();
    for id in gone {
        inner.readings.remove(&id);
    }
    inner.latest = cluster;
    inner.proxies = kept;
}

fn add_buckets(total: &mut Vec<u64>, more: &[u64]) {
    if total.len() < more.len() {
        total.resize(more.len(), 0);
    }
    for (t, m) in total.iter_mut().zip(more) {
        *t += m;
    }
}

fn sort_busiest(commands: &mut [CommandLoad]) {
    commands.sort_by(|a, b| {
        b.ops_per_sec
            .total_cmp(&a.ops_per_sec)
            .then(b.calls.cmp(&a.calls))
            .then(a.cmd.cmp(&b.cmd))
    });
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// Every server of every group, asked concurrently.
async fn servers(state: &AppState, t: &Topology) -> Vec<ServerLoad> {
    let listed: Vec<(GroupId, usize, &str)> = t
        .groups
        .values()
        .flat_map(|g| {
            g.servers
                .iter()
                .enumerate()
                .map(move |(i, addr)| (g.id, i, addr.as_str()))
        })
        .collect();
    let infos = join_all(
        listed
            .iter()
            .map(|(_, _, addr)| state.servers.info(addr, "default")),
    )
    .await;
    let mut out: Vec<ServerLoad> = listed
        .iter()
        .zip(infos)
        .map(|(&(group, i, addr), info)| {
            let mut s = ServerLoad {
                group,
                addr: addr.to_string(),
                role: if i == 0 { "master" } else { "replica" }.into(),
                ..ServerLoad::default()
            };
            match info {
                Ok(text) => fill_from_info(&mut s, &text),
                Err(e) => s.error = Some(e.to_string()),
            }
            s
        })
        .collect();
    // Replication lag: how far each replica is behind its group's master.
    let master_offsets: HashMap<GroupId, u64> = out
        .iter()
        .filter(|s| s.role == "master")
        .filter_map(|s| Some((s.group, s.repl_offset?)))
        .collect();
    for s in out.iter_mut().filter(|s| s.role == "replica") {
        if let (Some(m), Some(r)) = (master_offsets.get(&s.group), s.repl_offset) {
            s.lag_bytes = Some(m.saturating_sub(r));
        }
    }
    out
}

/// Fills what `INFO` (default sections) tells about a server.
pub fn fill_from_info(s: &mut ServerLoad, text: &str) {
    s.up = true;
    let replication = crate::servers::parse_replication(text);
    for line in text.lines() {
        let Some((key, value)) = line.trim_end_matches('\r').split_once(':') else {
            continue;
        };
        let num = || value.parse::<u64>().ok();
        match key {
            "used_memory" => s.used_memory = num(),
            "connected_clients" => s.connected_clients = num(),
            "instantaneous_ops_per_sec" => s.ops_per_sec = num(),
            "db0" => {
                s.keys = value
                    .split(',')
                    .find_map(|kv| kv.strip_prefix("keys="))
                    .and_then(|k| k.parse().ok());
            }
            _ => {}
        }
    }
    if s.keys.is_none() {
        // No db0 line: an empty database.
        s.keys = Some(0);
    }
    s.repl_offset = Some(replication.processed_offset());
    s.link_status = replication.master_link_status.clone();
    s.redis_role = Some(replication.role);
}

// ---------------------------------------------------------------------------
// Prometheus
// ---------------------------------------------------------------------------

/// The dashboard's `/metrics`: the cluster as this dashboard sees it (role,
/// topology, slots), every proxy's counters as of the last collection
/// (labelled `proxy`), every server's `INFO` figures, and the rates the
/// collector computed.
pub async fn metrics_text(state: &AppState) -> String {
    use shardis_topology::stats::PromText;
    use shardis_topology::SlotState;

    let mut out = PromText::new();
    let status = state.leadership.status();
    out.family(
        "shardis_dashboard_info",
        "gauge",
        "Static facts about this dashboard (always 1).",
    )
    .sample(
        "shardis_dashboard_info",
        &[
            ("id", &status.id),
            ("cluster", &state.config.cluster),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    out.single(
        "shardis_dashboard_leader",
        "gauge",
        "1 when this dashboard holds the leadership (accepts changes).",
        u8::from(status.role == crate::api::Role::Leader),
    );
    match state.store.load_topology().await {
        Ok(t) => {
            let t = t.unwrap_or_default();
            out.single(
                "shardis_topology_version",
                "gauge",
                "The topology version in etcd.",
                t.version,
            );
            out.single(
                "shardis_groups",
                "gauge",
                "Groups in the topology.",
                t.groups.len(),
            );
            let mut slots: BTreeMap<(String, &'static str), u64> = BTreeMap::new();
            for s in &t.slots {
                let group = s.owner().map_or(String::new(), |g| g.to_string());
                *slots.entry((group, s.name())).or_default() += 1;
            }
            out.family(
                "shardis_slots",
                "gauge",
                "Slots per owning group and state (group=\"\" for unassigned).",
            );
            for ((group, st), n) in &slots {
                out.sample("shardis_slots", &[("group", group), ("state", st)], n);
            }
            let migrating = t
                .slots
                .iter()
                .filter(|s| matches!(s, SlotState::Migrating { .. }))
                .count();
            out.single(
                "shardis_slots_migrating",
                "gauge",
                "Slots being migrated now.",
                migrating,
            );
        }
        Err(e) => tracing::debug!(error = %e, "metrics: cannot load the topology"),
    }

    let latest = state.stats.latest();
    let readings = state.stats.proxy_readings();
    out.single(
        "shardis_proxies",
        "gauge",
        "Proxies registered under a live etcd lease.",
        readings.len(),
    );
    out.single(
        "shardis_cluster_ops_per_second",
        "gauge",
        "Requests per second over all proxies, over the last collection interval.",
        latest.ops_per_sec,
    );
    out.single(
        "shardis_cluster_errors_per_second",
        "gauge",
        "Error replies per second over all proxies, over the last collection interval.",
        latest.errors_per_sec,
    );
    out.family(
        "shardis_proxy_up",
        "gauge",
        "1 when the proxy's admin API answered the last collection.",
    );
    for (p, s) in &readings {
        out.sample(
            "shardis_proxy_up",
            &[("proxy", &p.id)],
            u8::from(s.is_some()),
        );
    }
    out.family(
        "shardis_proxy_ops_per_second",
        "gauge",
        "Requests per second per proxy, over the last collection interval.",
    );
    for p in &latest.proxies {
        out.sample(
            "shardis_proxy_ops_per_second",
            &[("proxy", &p.id)],
            p.ops_per_sec,
        );
    }
    type PerProxy = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ProxyStats) -> u64,
    );
    let per_proxy: [PerProxy; 4] = [
        (
            "shardis_proxy_ops_total",
            "counter",
            "Requests answered per proxy.",
            |s| s.ops_total,
        ),
        (
            "shardis_proxy_errors_total",
            "counter",
            "Error replies per proxy.",
            |s| s.errors_total,
        ),
        (
            "shardis_proxy_sessions",
            "gauge",
            "Client connections open per proxy.",
            |s| s.sessions.current,
        ),
        (
            "shardis_proxy_slowlog_length",
            "gauge",
            "Slowlog entries per proxy.",
            |s| s.slowlog_len as u64,
        ),
    ];
    for (name, kind, help, value) in per_proxy {
        out.family(name, kind, help);
        for (p, s) in &readings {
            if let Some(s) = s {
                out.sample(name, &[("proxy", &p.id)], value(s));
            }
        }
    }
    out.family(
        "shardis_proxy_commands_total",
        "counter",
        "Requests per proxy and command.",
    );
    for (p, s) in &readings {
        for c in s.iter().flat_map(|s| &s.commands) {
            out.sample(
                "shardis_proxy_commands_total",
                &[("proxy", &p.id), ("cmd", &c.cmd)],
                c.calls,
            );
        }
    }
    out.family(
        "shardis_proxy_request_duration_seconds",
        "histogram",
        "Time from sending a request to its reply being ready, per proxy.",
    );
    for (p, s) in &readings {
        if let Some(s) = s {
            out.histogram(
                "shardis_proxy_request_duration_seconds",
                &[("proxy", &p.id)],
                &s.latency.buckets,
                s.latency.sum_us,
            );
        }
    }

    type PerServer = (&'static str, &'static str, fn(&ServerLoad) -> Option<u64>);
    let per_server: [PerServer; 7] = [
        (
            "shardis_server_up",
            "1 when the server answered INFO.",
            |s| Some(u64::from(s.up)),
        ),
        (
            "shardis_server_used_memory_bytes",
            "used_memory of INFO.",
            |s| s.used_memory,
        ),
        ("shardis_server_keys", "Keys in database 0.", |s| s.keys),
        (
            "shardis_server_ops_per_second",
            "instantaneous_ops_per_sec of INFO.",
            |s| s.ops_per_sec,
        ),
        (
            "shardis_server_connected_clients",
            "connected_clients of INFO.",
            |s| s.connected_clients,
        ),
        (
            "shardis_server_repl_offset",
            "Replication offset the server has processed.",
            |s| s.repl_offset,
        ),
        (
            "shardis_server_repl_lag_bytes",
            "Bytes of its master's stream a replica has not processed.",
            |s| s.lag_bytes,
        ),
    ];
    for (name, help, value) in per_server {
        out.family(name, "gauge", help);
        for s in &latest.servers {
            if let Some(v) = value(s) {
                let group = s.group.to_string();
                out.sample(
                    name,
                    &[("group", &group), ("addr", &s.addr), ("role", &s.role)],
                    v,
                );
            }
        }
    }
    out.finish()
}

// ---------------------------------------------------------------------------
// Slowlog
// ---------------------------------------------------------------------------

/// Every registered proxy's slowlog, merged newest first, at most `n` entries.
pub async fn slowlog(state: &AppState, n: usize) -> Result<SlowlogResponse, crate::AppError> {
    let proxies = state.store.list_proxies().await?;
    let within = state
        .config
        .proxy_health_timeout()
        .max(Duration::from_secs(1));
    let path = format!("/api/v1/slowlog?n={n}");
    let logs = join_all(
        proxies
            .iter()
            .map(|p| fetch_json::<Slowlog>(&p.admin_addr, &path, within)),
    )
    .await;
    let mut out = SlowlogResponse::default();
    for (p, log) in proxies.iter().zip(logs) {
        match log {
            Ok(log) => out
                .entries
                .extend(log.entries.into_iter().map(|entry| ProxySlowEntry {
                    proxy: p.id.clone(),
                    entry,
                })),
            Err(e) => out
                .errors
                .push(format!("proxy {} ({}): {e}", p.id, p.admin_addr)),
        }
    }
    out.entries.sort_by(|a, b| {
        b.entry
            .time
            .cmp(&a.entry.time)
            .then(b.entry.id.cmp(&a.entry.id))
    });
    out.entries.truncate(n);
    Ok(out)
}

// ---------------------------------------------------------------------------
// A tiny HTTP client for the proxies' admin ports
// ---------------------------------------------------------------------------

/// `GET path` on `addr`, parsed as JSON; the error in words.
pub async fn fetch_json<T: serde::de::DeserializeOwned>(
    addr: &str,
    path: &str,
    within: Duration,
) -> Result<T, String> {
    let body = match timeout(within, http_get(addr, path)).await {
        Ok(Ok((200, body))) => body,
        Ok(Ok((code, body))) => {
            return Err(format!(
                "{path} answered {code}: {}",
                String::from_utf8_lossy(&body).trim()
            ))
        }
        Ok(Err(e)) => return Err(format!("unreachable: {e}")),
        Err(_) => return Err(format!("no answer from {path} within {within:?}")),
    };
    serde_json::from_slice(&body).map_err(|e| format!("{path} is not what a proxy answers: {e}"))
}

/// A plain HTTP/1.1 GET with `Connection: close`: status and body
/// (`Content-Length` or chunked).
async fn http_get(addr: &str, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(buf.get(..n).unwrap_or_default());
        if raw.len() > MAX_BODY {
            return Err(bad(format!("answer larger than {MAX_BODY} bytes")));
        }
    }
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers".into()))?;
    let head = String::from_utf8_lossy(raw.get(..split).unwrap_or_default()).to_string();
    let body = raw.get(split + 4..).unwrap_or_default().to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad(format!("not an HTTP answer: {:?}", head.lines().next())))?;
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    Ok((status, if chunked { dechunk(&body)? } else { body }))
}

fn dechunk(mut body: &[u8]) -> std::io::Result<Vec<u8>> {
    let bad = || std::io::Error::new(std::io::ErrorKind::InvalidData, "bad chunked body");
    let mut out = Vec::new();
    loop {
        let eol = body.windows(2).position(|w| w == b"\r\n").ok_or_else(bad)?;
        let size_text = String::from_utf8_lossy(body.get(..eol).ok_or_else(bad)?).to_string();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| bad())?;
        body = body.get(eol + 2..).ok_or_else(bad)?;
        if size == 0 {
            return Ok(out);
        }
        out.extend_from_slice(body.get(..size).ok_or_else(bad)?);
        body = body.get(size + 2..).ok_or_else(bad)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_fills_a_server() {
        let text = "# Server\r\nredis_version:7.0.15\r\n# Clients\r\nconnected_clients:7\r\n\
            # Memory\r\nused_memory:1048576\r\n# Stats\r\ninstantaneous_ops_per_sec:42\r\n\
            # Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:7001\r\n\
            master_link_status:up\r\nslave_repl_offset:900\r\nmaster_repl_offset:900\r\n\
            # Keyspace\r\ndb0:keys=12,expires=0,avg_ttl=0\r\n";
        let mut s = ServerLoad::default();
        fill_from_info(&mut s, text);
        assert!(s.up);
        assert_eq!(s.used_memory, Some(1_048_576));
        assert_eq!(s.connected_clients, Some(7));
        assert_eq!(s.ops_per_sec, Some(42));
        assert_eq!(s.keys, Some(12));
        assert_eq!(s.repl_offset, Some(900));
        assert_eq!(s.redis_role.as_deref(), Some("slave"));
        assert_eq!(s.link_status.as_deref(), Some("up"));
        let mut empty = ServerLoad::default();
        fill_from_info(&mut empty, "role:master\r\nmaster_repl_offset:5\r\n");
        assert_eq!(empty.keys, Some(0));
    }

    #[test]
    fn chunked_bodies_are_joined() {
        assert_eq!(
            dechunk(b"4\r\nWiki\r\n5;x=1\r\npedia\r\n0\r\n\r\n").unwrap(),
            b"Wikipedia"
        );
        assert!(dechunk(b"zz\r\n").is_err());
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_an_error_in_words() {
        let err = fetch_json::<ProxyStats>("127.0.0.1:1", "/api/v1/stats", Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            err.contains("unreachable") || err.contains("no answer"),
            "{err}"
        );
    }
}
