//! The proxy's admin HTTP: health, readiness, Prometheus metrics, and JSON
//! stats and slowlog (the types of `shardis_topology::stats`, which the
//! dashboard reads every second).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use shardis_topology::stats::{
    BackendStat, CommandStat, MemoryBudget, PromText, ProxyStats, Sessions, Slowlog,
    PROM_CONTENT_TYPE,
};
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::{sleep, Instant, Sleep};

use crate::Shared;

/// Admin connections open at once; one more is closed as soon as it is
/// accepted, so that HTTP clients cannot take the file descriptors the
/// proxy's Redis clients need.
const MAX_CONNS: usize = 256;
/// An admin connection with nothing read or written for this long is closed.
const IDLE: Duration = Duration::from_secs(30);

pub fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/slowlog", get(slowlog))
        .with_state(shared)
}

pub async fn serve(listener: TcpListener, shared: Arc<Shared>) {
    let listener = Limited {
        listener,
        permits: Arc::new(Semaphore::new(MAX_CONNS)),
    };
    if let Err(e) = axum::serve(listener, app(shared)).await {
        tracing::error!(error = %e, "admin server stopped");
    }
}

/// The admin listener: at most [`MAX_CONNS`] connections, each closed
/// after [`IDLE`] without traffic.
struct Limited {
    listener: TcpListener,
    permits: Arc<Semaphore>,
}

impl axum::serve::Listener for Limited {
    type Io = LimitedStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (LimitedStream, SocketAddr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match self.permits.clone().try_acquire_owned() {
                    Ok(permit) => {
                        let idle = Box::pin(sleep(IDLE));
                        return (
                            LimitedStream {
                                stream,
                                idle,
                                _permit: permit,
                            },
                            addr,
                        );
                    }
                    // Over the limit: closed at once.
                    Err(_) => drop(stream),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }
}

struct LimitedStream {
    stream: TcpStream,
    idle: Pin<Box<Sleep>>,
    _permit: OwnedSemaphorePermit,
}

impl LimitedStream {
    /// Progress restarts the idle clock; no progress past it is an error.
    fn watch<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(r) => {
                self.idle.as_mut().reset(Instant::now() + IDLE);
                Poll::Ready(r)
            }
            Poll::Pending if self.idle.as_mut().poll(cx).is_ready() => Poll::Ready(Err(
                io::Error::new(io::ErrorKind::TimedOut, "idle admin connection"),
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for LimitedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.watch(cx, poll)
    }
}

impl AsyncWrite for LimitedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.watch(cx, poll)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
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

/// Everything the proxy counts, as the dashboard reads it.
pub fn proxy_stats(s: &Shared) -> ProxyStats {
    let st = &s.stats;
    let table = s.router.load();
    ProxyStats {
        id: s.proxy_id.clone(),
        cluster: s.config.cluster.clone(),
        addr: s.config.listen.clone(),
        uptime_secs: s.started.elapsed().as_secs(),
        topology_version: table.version,
        fenced: s.router.is_fenced(),
        stats_enabled: st.enabled(),
        ops_total: st.ops_total(),
        errors_total: st.errors_total(),
        sessions: Sessions {
            current: st.sessions_current.load(Ordering::Relaxed),
            total: st.sessions_total.load(Ordering::Relaxed),
            rejected: st.sessions_rejected.load(Ordering::Relaxed),
        },
        memory_budget: MemoryBudget {
            used: s.budget.used() as u64,
            limit: s.budget.limit() as u64,
        },
        latency: st.latency().latency(),
        commands: st
            .commands()
            .into_iter()
            .map(|c| CommandStat {
                cmd: c.name.to_string(),
                calls: c.calls,
                errors: c.errors,
                latency: c.latency.latency(),
            })
            .collect(),
        backends: s
            .router
            .servers()
            .iter()
            .map(|srv| {
                let b = &srv.stats;
                BackendStat {
                    addr: b.addr.clone(),
                    up: srv.is_up(),
                    requests: b.requests.load(Ordering::Relaxed),
                    errors: b.errors.load(Ordering::Relaxed),
                    inflight: b.inflight.load(Ordering::Relaxed),
                    connection_errors: b.connection_errors.load(Ordering::Relaxed),
                    latency: b.latency.snapshot().latency(),
                }
            })
            .collect(),
        slot_ops: st.slot_ops(),
        slowlog_len: s.slowlog.len(),
        slowlog_threshold_us: s.slowlog.threshold_us(),
    }
}

async fn stats(State(s): State<Arc<Shared>>) -> Json<ProxyStats> {
    Json(proxy_stats(&s))
}

#[derive(Debug, Deserialize)]
struct SlowlogQuery {
    /// Newest entries to return (default 128; negative: all).
    n: Option<i64>,
}

async fn slowlog(State(s): State<Arc<Shared>>, Query(q): Query<SlowlogQuery>) -> Json<Slowlog> {
    Json(Slowlog {
        proxy: s.proxy_id.clone(),
        threshold_us: s.slowlog.threshold_us(),
        len: s.slowlog.len(),
        entries: s.slowlog.entries(q.n.unwrap_or(128)),
    })
}

/// Prometheus text exposition format (version 0.0.4). Latencies are
/// histograms in seconds with log2 buckets (1 µs … 67 s).
async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    (
        [(header::CONTENT_TYPE, PROM_CONTENT_TYPE)],
        metrics_text(&s),
    )
        .into_response()
}

pub fn metrics_text(s: &Shared) -> String {
    let p = proxy_stats(s);
    let mut out = PromText::new();
    out.family(
        "shardis_proxy_info",
        "gauge",
        "Static facts about this proxy (always 1).",
    )
    .sample(
        "shardis_proxy_info",
        &[
            ("id", &p.id),
            ("cluster", &p.cluster),
            ("version", env!("CARGO_PKG_VERSION")),
        ],
        1,
    );
    out.single(
        "shardis_topology_version",
        "gauge",
        "Topology version this proxy has applied.",
        p.topology_version,
    );
    out.single(
        "shardis_fenced",
        "gauge",
        "1 while the proxy refuses requests because it lost its etcd lease.",
        u8::from(p.fenced),
    );
    out.single(
        "shardis_uptime_seconds",
        "gauge",
        "Seconds since the proxy started.",
        s.started.elapsed().as_secs_f64(),
    );
    out.single(
        "shardis_stats_enabled",
        "gauge",
        "1 when per-request statistics are recorded (stats = true).",
        u8::from(p.stats_enabled),
    );
    out.single(
        "shardis_sessions_open",
        "gauge",
        "Client connections open now.",
        p.sessions.current,
    );
    out.single(
        "shardis_sessions_total",
        "counter",
        "Client connections accepted.",
        p.sessions.total,
    );
    out.single(
        "shardis_sessions_rejected_total",
        "counter",
        "Client connections refused at max_clients.",
        p.sessions.rejected,
    );
    out.single(
        "shardis_ops_total",
        "counter",
        "Requests answered.",
        p.ops_total,
    );
    out.single(
        "shardis_errors_total",
        "counter",
        "Requests answered with an error.",
        p.errors_total,
    );
    out.family(
        "shardis_request_duration_seconds",
        "histogram",
        "Time from sending a request to its reply being ready, every command together.",
    )
    .histogram(
        "shardis_request_duration_seconds",
        &[],
        &p.latency.buckets,
        p.latency.sum_us,
    );
    out.single(
        "shardis_memory_budget_used_bytes",
        "gauge",
        "Bytes of large buffers charged to the global budget.",
        p.memory_budget.used,
    );
    out.single(
        "shardis_memory_budget_limit_bytes",
        "gauge",
        "The global budget for large buffers (memory_budget_mb).",
        p.memory_budget.limit,
    );
    out.single(
        "shardis_slowlog_length",
        "gauge",
        "Entries in the slowlog.",
        p.slowlog_len,
    );

    out.family(
        "shardis_commands_total",
        "counter",
        "Requests per command (cmd=\"unknown\": names not in the command table).",
    );
    for c in &p.commands {
        out.sample("shardis_commands_total", &[("cmd", &c.cmd)], c.calls);
    }
    out.family(
        "shardis_command_errors_total",
        "counter",
        "Error replies per command.",
    );
    for c in &p.commands {
        out.sample("shardis_command_errors_total", &[("cmd", &c.cmd)], c.errors);
    }
    out.family(
        "shardis_command_duration_seconds",
        "histogram",
        "Time from sending a request to its reply being ready, per command.",
    );
    for c in &p.commands {
        out.histogram(
            "shardis_command_duration_seconds",
            &[("cmd", &c.cmd)],
            &c.latency.buckets,
            c.latency.sum_us,
        );
    }
    out.family(
        "shardis_slot_ops_total",
        "counter",
        "Requests routed per slot (slots with none are left out).",
    );
    for (slot, n) in p.slot_ops.iter().enumerate().filter(|(_, n)| **n > 0) {
        out.sample("shardis_slot_ops_total", &[("slot", &slot.to_string())], n);
    }

    type PerBackend = (
        &'static str,
        &'static str,
        &'static str,
        fn(&BackendStat) -> u64,
    );
    let per_backend: [PerBackend; 5] = [
        (
            "shardis_backend_requests_total",
            "counter",
            "Requests sent per backend server.",
            |b| b.requests,
        ),
        (
            "shardis_backend_errors_total",
            "counter",
            "Error replies and failed requests per backend server.",
            |b| b.errors,
        ),
        (
            "shardis_backend_connection_errors_total",
            "counter",
            "Failed connections and lost connections per backend server.",
            |b| b.connection_errors,
        ),
        (
            "shardis_backend_inflight",
            "gauge",
            "Batches in flight per backend server.",
            |b| b.inflight,
        ),
        (
            "shardis_backend_up",
            "gauge",
            "1 when a connection to the backend server is established.",
            |b| u64::from(b.up),
        ),
    ];
    for (name, kind, help, value) in per_backend {
        out.family(name, kind, help);
        for b in &p.backends {
            out.sample(name, &[("backend", &b.addr)], value(b));
        }
    }
    out.family(
        "shardis_backend_duration_seconds",
        "histogram",
        "Backend round trip per batch of requests.",
    );
    for b in &p.backends {
        out.histogram(
            "shardis_backend_duration_seconds",
            &[("backend", &b.addr)],
            &b.latency.buckets,
            b.latency.sum_us,
        );
    }
    out.finish()
}
