//! The proxy's life: register in etcd, load and follow the topology, serve,
//! and stop cleanly.
//!
//! Order matters. The proxy registers (under a lease) *before* it reads the
//! topology, so a control plane that waits for "every live proxy" to confirm a
//! change can never miss one that is starting: either the proxy was
//! registered when the change was made (and the barrier waits for it), or it
//! registered later and therefore reads the changed topology.
//!
//! ## Self-fencing
//! A proxy cut off from etcd can neither confirm nor learn changes, so it must
//! stop serving before its lease can have expired on etcd's side (after which
//! the control plane treats it as gone). etcd extends a lease to TTL from the
//! moment it *receives* a keep-alive, which is after the proxy *sent* it; so
//! the lease cannot expire before `sent + TTL`. The proxy measures from `sent`
//! on its monotonic clock and stops serving at `sent + TTL - margin`. The
//! control plane waits at least `TTL + margin` after it last saw the lease
//! before treating the proxy as gone, and then kills its named backend
//! connections for anything still sitting in a socket.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shardis_topology::{backend_client_name, EtcdStore, LeaseId, ProxyInfo, Store, StoreError};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Mutex};
use tokio::time::{sleep, timeout, Instant};

use crate::backend::{BackendOptions, Credentials};
use crate::router::Router;
use crate::session::Session;
use crate::slowlog::SlowLog;
use crate::stats::Stats;
use crate::{admin, Budget, Config, Shared};

/// A running proxy (for tests and embedding).
pub struct Proxy {
    pub shared: Arc<Shared>,
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Proxy {
    /// Stops accepting, lets sessions finish, revokes the lease.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shared.shutdown.send_replace(true);
        self.task.await?
    }
}

/// Runs a proxy until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let store = EtcdStore::connect(&config.etcd, &config.cluster)
        .await
        .with_context(|| format!("connecting to etcd at {}", config.etcd.join(",")))?;
    let proxy = run_with_store(config, Arc::new(store)).await?;
    let shared = proxy.shared.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("signal received: draining and leaving");
        shared.shutdown.send_replace(true);
    });
    proxy.task.await?
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Binds, registers, loads the topology and starts serving; returns once the
/// proxy is ready.
pub async fn run_with_store(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Proxy> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let admin_listener = TcpListener::bind(&config.admin_listen)
        .await
        .with_context(|| format!("listening on {}", config.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;

    let start_time = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let proxy_id = if config.id.is_empty() {
        format!(
            "p{}-{:x}",
            addr.port(),
            start_time.as_millis() & 0xffff_ffff
        )
    } else {
        config.id.clone()
    };
    let lease_clock = Arc::new(crate::lease::LeaseClock::unbounded());
    // Nothing is written to a backend before the first registration.
    lease_clock.expire();
    let opts = BackendOptions {
        credentials: Credentials {
            user: config.backend_user.clone(),
            password: config.backend_password.clone(),
        },
        client_name: backend_client_name(&proxy_id),
        connect_timeout: Duration::from_millis(config.backend_connect_timeout_ms),
        read_timeout: Duration::from_millis(config.backend_read_timeout_ms),
        limits: shardis_resp::Limits::SERVER_REPLIES,
        queue_depth: 1024,
        stats: config.stats,
        lease: lease_clock.clone(),
    };
    let threads = match config.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let router = Arc::new(Router::new(opts, config.backend_connections));
    let shared = Arc::new(Shared {
        proxy_id: proxy_id.clone(),
        router,
        stats: Stats::new(config.stats, threads),
        slowlog: SlowLog::new(config.slowlog_threshold_us, config.slowlog_max_len),
        budget: Budget::new(config.memory_budget_mb.saturating_mul(1024 * 1024)),
        started: Instant::now(),
        shutdown: watch::channel(false).0,
        ready: std::sync::atomic::AtomicBool::new(false),
        config,
    });

    // Health answers from the start; readiness once registered and loaded.
    tokio::spawn(admin::serve(admin_listener, shared.clone()));

    let info = ProxyInfo {
        id: proxy_id.clone(),
        addr: addr.to_string(),
        admin_addr: admin_addr.to_string(),
        start_time: start_time.as_secs(),
        applied_version: 0,
        pid: std::process::id(),
        lease: 0,
    };
    let reg = Arc::new(Registration {
        store: store.clone(),
        shared: shared.clone(),
        state: Mutex::new(RegState { lease: 0, info }),
    });
    // 1. Register, 2. load, 3. follow.
    reg.register().await.context("registering in etcd")?;
    let topology = store
        .watch_topology()
        .await
        .context("loading the topology")?;
    let current = topology.borrow().clone();
    if let Some(t) = current {
        shared.router.apply(&t).await;
        reg.publish(t.version).await;
    } else {
        tracing::warn!("no topology in etcd yet: every request is refused until one is written");
        shared.router.apply(&Default::default()).await;
    }
    shared.ready.store(true, Ordering::SeqCst);
    tracing::info!(id = %proxy_id, %addr, %admin_addr, "shardis-proxy ready");

    tokio::spawn(follow(reg.clone(), topology.clone()));
    tokio::spawn(keep_alive(reg.clone(), topology));
    let task = tokio::spawn(serve(listener, shared.clone(), reg));
    Ok(Proxy {
        shared,
        addr,
        admin_addr,
        task,
    })
}

struct RegState {
    lease: LeaseId,
    info: ProxyInfo,
}

/// The proxy's entry in etcd.
struct Registration {
    store: Arc<dyn Store>,
    shared: Arc<Shared>,
    state: Mutex<RegState>,
}

impl Registration {
    /// Takes a fresh lease and writes the registration under it.
    async fn register(&self) -> Result<(), StoreError> {
        let mut st = self.state.lock().await;
        let ttl = self.shared.config.lease_ttl();
        let sent = Instant::now();
        let lease = self.store.grant_lease(ttl).await?;
        let old = st.lease;
        st.lease = lease;
        st.info.lease = lease;
        self.store.put_proxy(lease, &st.info).await?;
        self.shared
            .router
            .lease_clock()
            .set_until(sent + ttl - fence_margin(ttl));
        if old != 0 {
            // The old lease may still be alive if etcd only paused; it holds
            // nothing any more.
            let _ = self.store.revoke_lease(old).await;
        }
        Ok(())
    }

    /// Reports `version` as applied (drained). Failures are retried by the
    /// next change or re-registration.
    async fn publish(&self, version: u64) {
        let mut st = self.state.lock().await;
        st.info.applied_version = version;
        let lease = st.lease;
        if let Err(e) = self.store.put_proxy(lease, &st.info).await {
            tracing::warn!(error = %e, version, "could not publish the applied topology version");
        }
    }

    async fn lease(&self) -> LeaseId {
        self.state.lock().await.lease
    }
}

/// Applies every new topology, then reports it as applied.
async fn follow(reg: Arc<Registration>, mut topology: shardis_topology::TopologyWatch) {
    loop {
        if topology.changed().await.is_err() {
            tracing::error!("topology watch ended");
            return;
        }
        let latest = topology.borrow_and_update().clone();
        let Some(t) = latest else { continue };
        if t.version <= reg.shared.router.load().version {
            continue;
        }
        reg.shared.router.apply(&t).await;
        tracing::info!(version = t.version, "topology applied");
        if !reg.shared.router.is_fenced() {
            reg.publish(t.version).await;
        }
    }
}

/// Keeps the lease alive; fences the proxy before the lease can have expired
/// when keep-alives fail, and registers again once etcd answers.
/// Stop serving this long before the earliest possible expiry of the lease.
fn fence_margin(ttl: Duration) -> Duration {
    (ttl / 5).max(Duration::from_millis(500))
}

async fn keep_alive(reg: Arc<Registration>, topology: shardis_topology::TopologyWatch) {
    let ttl = reg.shared.config.lease_ttl();
    let interval = ttl / 3;
    let margin = fence_margin(ttl);
    let clock = reg.shared.router.lease_clock().clone();
    let mut fence_at = Instant::now() + ttl - margin;
    loop {
        tokio::select! {
            _ = sleep(interval) => {}
            _ = tokio::time::sleep_until(fence_at), if !reg.shared.router.is_fenced() => {}
        }
        if *reg.shared.shutdown.borrow() {
            return;
        }
        if !reg.shared.router.is_fenced() && Instant::now() >= fence_at {
            tracing::error!("no etcd keep-alive acknowledged in time: fencing (not serving)");
            clock.expire();
            reg.shared.router.set_fenced(true).await;
        }
        let lease = reg.lease().await;
        let sent = Instant::now();
        match timeout(interval, reg.store.keep_alive(lease)).await {
            Ok(Ok(granted)) if !reg.shared.router.is_fenced() => {
                fence_at = sent + granted.saturating_sub(margin);
                clock.set_until(fence_at);
            }
            Ok(Ok(_)) | Ok(Err(StoreError::LeaseExpired(_))) => {
                // Fenced, or the lease is gone: become a new registration,
                // reload, and serve again.
                if !reg.shared.router.is_fenced() {
                    tracing::error!("etcd lease expired: fencing and registering again");
                    clock.expire();
                    reg.shared.router.set_fenced(true).await;
                }
                let sent = Instant::now();
                if let Err(e) = reg.register().await {
                    tracing::warn!(error = %e, "registering again failed; retrying");
                    continue;
                }
                let fresh = match reg.store.load_topology().await {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::warn!(error = %e, "reloading the topology failed; retrying");
                        continue;
                    }
                };
                let latest = topology.borrow().clone();
                let newest = match (fresh, latest) {
                    (Some(a), Some(b)) if b.version > a.version => Some((*b).clone()),
                    (Some(a), _) => Some(a),
                    (None, b) => b.map(|b| (*b).clone()),
                };
                if let Some(t) = newest {
                    reg.shared.router.apply(&t).await;
                }
                fence_at = sent + ttl - margin;
                reg.shared.router.set_fenced(false).await;
                let version = reg.shared.router.load().version;
                reg.publish(version).await;
                tracing::info!(version, "registered again; serving");
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "etcd keep-alive failed"),
            Err(_) => tracing::warn!("etcd keep-alive timed out"),
        }
    }
}

/// Accepts clients until shutdown, then drains and leaves.
async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    reg: Arc<Registration>,
) -> anyhow::Result<()> {
    let mut shutdown = shared.shutdown.subscribe();
    let mut next_id: u64 = 1;
    loop {
        tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, peer)) => {
                    accept(&shared, stream, peer, next_id);
                    next_id += 1;
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.stats.sessions_current.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
        sleep(Duration::from_millis(20)).await;
    }
    let lease = reg.lease().await;
    if let Err(e) = reg.store.revoke_lease(lease).await {
        tracing::warn!(error = %e, "revoking the etcd lease failed; it will expire by itself");
    }
    tracing::info!("shardis-proxy stopped");
    Ok(())
}

fn accept(shared: &Arc<Shared>, stream: TcpStream, peer: SocketAddr, id: u64) {
    let stats = &shared.stats;
    if stats.sessions_current.load(Ordering::Relaxed) >= shared.config.max_clients as u64 {
        stats.sessions_rejected.fetch_add(1, Ordering::Relaxed);
        let _ = stream.try_write(b"-ERR max number of clients reached\r\n");
        return;
    }
    let _ = stream.set_nodelay(true);
    if shared.config.tcp_keepalive_secs > 0 {
        let ka = socket2::TcpKeepalive::new()
            .with_time(Duration::from_secs(shared.config.tcp_keepalive_secs));
        let _ = socket2::SockRef::from(&stream).set_tcp_keepalive(&ka);
    }
    stats.sessions_current.fetch_add(1, Ordering::Relaxed);
    stats.sessions_total.fetch_add(1, Ordering::Relaxed);
    let mut session = Session::new(shared.clone(), stream, peer, id);
    tokio::spawn(Box::pin(async move { session.run().await }));
}
