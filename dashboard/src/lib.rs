//! `shardis-dashboard`: the control plane of a Shardis cluster.
//!
//! It owns the topology in etcd (one active dashboard per cluster, through a
//! leader entry under an etcd lease), manages groups of plain Redis servers,
//! assigns slots, promotes replicas, and tracks the proxies, through a JSON
//! HTTP API ([`app`]). The `shardis` CLI uses the typed [`client`] with the
//! request and response types of [`api`].
//!
//! | module | what it holds |
//! |---|---|
//! | [`api`] | request/response bodies shared with the client |
//! | [`routes`] | the router, guards (admin token, leadership) and handlers |
//! | [`state`] | shared state and `change_topology`, the one way the topology changes |
//! | [`changes`] | the topology changes as pure, unit-tested functions |
//! | [`barrier`] | wait until every live proxy applied a version |
//! | [`promote`] | switchover/failover of a group's master |
//! | [`migrate`] | slot migrations: API operations and the runner |
//! | [`mover`] | moves a wave's keys between two masters |
//! | [`rebalance`] | the plan that spreads slots evenly |
//! | [`leadership`] | the leader election and stepping down |
//! | [`servers`] | the dashboard's Redis commands (INFO, DBSIZE, REPLICAOF) |
//! | [`views`] | groups, slots, proxies and the overview |
//! | [`openapi`] | the OpenAPI document |
//! | [`client`] | the blocking API client |
#![forbid(unsafe_code)]
#![recursion_limit = "256"]

pub mod api;
pub mod barrier;
pub mod changes;
pub mod client;
pub mod config;
pub mod error;
pub mod leadership;
pub mod migrate;
pub mod mover;
pub mod openapi;
pub mod promote;
pub mod rebalance;
pub mod routes;
pub mod servers;
pub mod state;
pub mod views;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use shardis_topology::{EtcdStore, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use config::{Config, DEFAULT_CONFIG};
pub use error::AppError;
pub use leadership::Leadership;
pub use routes::app;
pub use state::AppState;

/// A running dashboard (for the binary, tests and embedding).
pub struct Dashboard {
    pub state: Arc<AppState>,
    /// Where the API listens (the bound address when the port was 0).
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    server: JoinHandle<std::io::Result<()>>,
    campaign: JoinHandle<()>,
    runner: JoinHandle<()>,
}

impl Dashboard {
    /// Stops serving, then resigns the leadership (so a standby takes over
    /// at once instead of after the lease TTL).
    pub async fn shutdown(self) -> anyhow::Result<()> {
        self.shutdown.send_replace(true);
        let served = self.server.await.context("the HTTP server task")?;
        self.runner.await.context("the migration runner")?;
        self.campaign.await.context("the leadership task")?;
        served.context("serving HTTP")
    }
}

/// Binds the API, starts campaigning for the leadership and serves.
pub async fn start(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Dashboard> {
    config.validate().map_err(anyhow::Error::msg)?;
    let listener = TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("listening on {}", config.listen))?;
    let addr = listener.local_addr()?;
    let id = if config.id.is_empty() {
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        format!("d{}-{:x}", addr.port(), started.as_millis() & 0xffff_ffff)
    } else {
        config.id.clone()
    };
    let leadership = Arc::new(Leadership::new(id.clone(), addr.to_string()));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let campaign = tokio::spawn(leadership.clone().campaign(
        store.clone(),
        config.lease_ttl(),
        shutdown_rx.clone(),
    ));
    let state = Arc::new(AppState::new(store, config, leadership));
    let runner = tokio::spawn(migrate::runner(state.clone(), shutdown_rx.clone()));
    let mut stop = shutdown_rx;
    let router = app(state.clone());
    let server = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stop.wait_for(|s| *s).await;
            })
            .await
    });
    tracing::info!(%id, %addr, cluster = %state.config.cluster, "shardis-dashboard listening");
    Ok(Dashboard {
        state,
        addr,
        shutdown,
        server,
        campaign,
        runner,
    })
}

/// Runs a dashboard on etcd until SIGTERM/SIGINT.
pub async fn run(config: Config) -> anyhow::Result<()> {
    config.validate().map_err(anyhow::Error::msg)?;
    let store = EtcdStore::connect(&config.etcd, &config.cluster)
        .await
        .with_context(|| format!("connecting to etcd at {}", config.etcd.join(",")))?;
    let dashboard = start(config, Arc::new(store)).await?;
    wait_for_signal().await;
    tracing::info!("signal received: resigning and stopping");
    dashboard.shutdown().await
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
