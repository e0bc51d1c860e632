//! The proxy's admin HTTP: health, readiness, Prometheus metrics and JSON stats.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;

use crate::backend::Server;
use crate::commands;
use crate::stats::{Histogram, BUCKETS};
use crate::Shared;

pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/stats", get(stats))
        .with_state(shared)
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    if let Err(e) = axum::serve(listener, app(shared)).await {
        tracing::error!(error = %e, "admin server stopped");
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(s): State<Arc<Shared>>) -> Response {
    let table = s.router.load();
    if !s.ready.load(Ordering::SeqCst) {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: registering or loading the topology\n",
        )
            .into_response()
    } else if table.version == 0 {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: no topology in etcd yet\n",
        )
            .into_response()
    } else if table.fenced {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: lost the etcd lease (fenced)\n",
        )
            .into_response()
    } else if *s.shutdown.borrow() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "not ready: shutting down\n",
        )
            .into_response()
    } else {
        format!("ready: topology version {}\n", table.version).into_response()
    }
}

fn histogram_json(h: &Histogram) -> serde_json::Value {
    let (_, sum, count) = h.snapshot();
    json!({
        "count": count,
        "sum_us": sum,
        "p50_us": h.quantile_us(0.50),
        "p99_us": h.quantile_us(0.99),
        "p999_us": h.quantile_us(0.999),
    })
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let st = &s.stats;
    let table = commands::table();
    let cmds: Vec<_> = st
        .commands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.calls.load(Ordering::Relaxed) > 0)
        .filter_map(|(i, c)| {
            let cmd = table.get(i)?;
            Some(json!({
                "cmd": cmd.name,
                "calls": c.calls.load(Ordering::Relaxed),
                "errors": c.errors.load(Ordering::Relaxed),
                "latency": histogram_json(&c.latency),
            }))
        })
        .collect();
    let backends: Vec<_> = s
        .router
        .servers()
        .iter()
        .map(|srv| {
            let b = &srv.stats;
            json!({
                "addr": b.addr,
                "up": srv.is_up(),
                "requests": b.requests.load(Ordering::Relaxed),
                "errors": b.errors.load(Ordering::Relaxed),
                "inflight": b.inflight.load(Ordering::Relaxed),
                "connection_errors": b.connection_errors.load(Ordering::Relaxed),
                "latency": histogram_json(&b.latency),
            })
        })
        .collect();
    let slot_ops: Vec<u64> = st
        .slot_ops
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .collect();
    Json(json!({
        "id": s.proxy_id,
        "cluster": s.config.cluster,
        "addr": s.config.listen,
        "uptime_secs": s.started.elapsed().as_secs(),
        "topology_version": s.router.load().version,
        "fenced": s.router.is_fenced(),
        "ops_total": st.ops_total.load(Ordering::Relaxed),
        "errors_total": st.errors_total.load(Ordering::Relaxed),
        "sessions": {
            "current": st.sessions_current.load(Ordering::Relaxed),
            "total": st.sessions_total.load(Ordering::Relaxed),
            "rejected": st.sessions_rejected.load(Ordering::Relaxed),
        },
        "memory_budget": { "used": s.budget.used(), "limit": s.budget.limit() },
        "commands": cmds,
        "backends": backends,
        "slot_ops": slot_ops,
        "slowlog": s.slowlog.entries(-1),
    }))
}

/// Prometheus text exposition format (version 0.0.4).
async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let mut out = String::with_capacity(16 * 1024);
    let st = &s.stats;
    let id = escape(&s.proxy_id);
    let _ = writeln!(
        out,
        "# HELP shardis_proxy_info Static facts about this proxy.\n# TYPE shardis_proxy_info gauge"
    );
    let _ = writeln!(
        out,
        "shardis_proxy_info{{id=\"{id}\",cluster=\"{}\",version=\"{}\"}} 1",
        escape(&s.config.cluster),
        env!("CARGO_PKG_VERSION")
    );
    gauge(
        &mut out,
        "shardis_topology_version",
        "Topology version this proxy has applied.",
        s.router.load().version as f64,
    );
    gauge(
        &mut out,
        "shardis_fenced",
        "1 while the proxy refuses requests because it lost its etcd lease.",
        if s.router.is_fenced() { 1.0 } else { 0.0 },
    );
    gauge(
        &mut out,
        "shardis_uptime_seconds",
        "Seconds since the proxy started.",
        s.started.elapsed().as_secs_f64(),
    );
    gauge(
        &mut out,
        "shardis_sessions",
        "Client connections open now.",
        st.sessions_current.load(Ordering::Relaxed) as f64,
    );
    counter(
        &mut out,
        "shardis_sessions_total",
        "Client connections accepted.",
        st.sessions_total.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "shardis_sessions_rejected_total",
        "Client connections refused at max_clients.",
        st.sessions_rejected.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "shardis_ops_total",
        "Requests answered.",
        st.ops_total.load(Ordering::Relaxed),
    );
    counter(
        &mut out,
        "shardis_errors_total",
        "Requests answered with an error.",
        st.errors_total.load(Ordering::Relaxed),
    );
    gauge(
        &mut out,
        "shardis_memory_budget_used_bytes",
        "Bytes of large buffers charged to the global budget.",
        s.budget.used() as f64,
    );

    let table = commands::table();
    let used: Vec<_> = st
        .commands
        .iter()
        .enumerate()
        .filter(|(_, c)| c.calls.load(Ordering::Relaxed) > 0)
        .filter_map(|(i, c)| Some((table.get(i)?.name, c)))
        .collect();
    let _ = writeln!(out, "# HELP shardis_commands_total Requests per command.\n# TYPE shardis_commands_total counter");
    for (name, c) in &used {
        let _ = writeln!(
            out,
            "shardis_commands_total{{cmd=\"{name}\"}} {}",
            c.calls.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP shardis_command_errors_total Error replies per command.\n# TYPE shardis_command_errors_total counter");
    for (name, c) in &used {
        let _ = writeln!(
            out,
            "shardis_command_errors_total{{cmd=\"{name}\"}} {}",
            c.errors.load(Ordering::Relaxed)
        );
    }
    let _ = writeln!(out, "# HELP shardis_command_duration_seconds Time from reading a request to its reply being ready.\n# TYPE shardis_command_duration_seconds histogram");
    for (name, c) in &used {
        histogram(
            &mut out,
            "shardis_command_duration_seconds",
            &format!("cmd=\"{name}\""),
            &c.latency,
        );
    }
    let servers = s.router.servers();
    let per_backend: [BackendMetric; 4] = [
        (
            "shardis_backend_requests_total",
            "counter",
            "Requests sent per backend server.",
            |s| s.stats.requests.load(Ordering::Relaxed),
        ),
        (
            "shardis_backend_errors_total",
            "counter",
            "Error replies and failed requests per backend server.",
            |s| s.stats.errors.load(Ordering::Relaxed),
        ),
        (
            "shardis_backend_inflight",
            "gauge",
            "Batches in flight per backend server.",
            |s| s.stats.inflight.load(Ordering::Relaxed),
        ),
        (
            "shardis_backend_up",
            "gauge",
            "1 when a connection to the backend server is established.",
            |s| u64::from(s.is_up()),
        ),
    ];
    for (name, kind, help, value) in per_backend {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for srv in &servers {
            let _ = writeln!(
                out,
                "{name}{{backend=\"{}\"}} {}",
                escape(&srv.stats.addr),
                value(srv)
            );
        }
    }
    let _ = writeln!(out, "# HELP shardis_backend_duration_seconds Backend round trip per batch.\n# TYPE shardis_backend_duration_seconds histogram");
    for srv in &servers {
        histogram(
            &mut out,
            "shardis_backend_duration_seconds",
            &format!("backend=\"{}\"", escape(&srv.stats.addr)),
            &srv.stats.latency,
        );
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

/// Name, Prometheus type, help text, and how to read it off a server.
type BackendMetric = (&'static str, &'static str, &'static str, fn(&Server) -> u64);

fn gauge(out: &mut String, name: &str, help: &str, v: f64) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
}

fn counter(out: &mut String, name: &str, help: &str, v: u64) {
    let _ = writeln!(
        out,
        "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
    );
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &Histogram) {
    let (buckets, sum_us, count) = h.snapshot();
    let mut cum = 0;
    for (i, n) in buckets.iter().enumerate().take(BUCKETS - 1) {
        cum += n;
        let le = Histogram::bound_us(i).unwrap_or(0) as f64 / 1e6;
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cum}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", sum_us as f64 / 1e6);
    let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
}

/// Label values: backslash, quote and newline escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
