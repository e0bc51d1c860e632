//! What every request handler shares, and the one function through which
//! every topology change goes.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use shardis_topology::{GroupId, Store, Topology};

use crate::config::Config;
use crate::error::AppError;
use crate::leadership::Leadership;
use crate::servers::Servers;

pub struct AppState {
    pub store: Arc<dyn Store>,
    pub config: Config,
    pub leadership: Arc<Leadership>,
    /// The dashboard's connection settings for Redis servers.
    pub servers: Servers,
    /// Traffic statistics collected from proxies and servers.
    pub stats: crate::stats::Collector,
    /// Serializes this dashboard's own load-change-save rounds, so that two
    /// API calls on the same leader do not fail each other with a stale
    /// version (writers elsewhere are still caught by the version guard).
    change_lock: tokio::sync::Mutex<()>,
    /// Groups with an operation in progress (a promotion, adding or removing
    /// a server) and what it is: one at a time per group.
    busy_groups: Mutex<BTreeMap<GroupId, String>>,
    /// Migrations run by this dashboard, and the runner's wake-up.
    pub migrations: crate::migrate::Migrations,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("cluster", &self.config.cluster)
            .field("leadership", &self.leadership)
            .finish()
    }
}

/// Releases a group claimed with [`AppState::claim_group`] when dropped
/// (also when the request's future is dropped half-way).
pub struct GroupClaim<'a> {
    state: &'a AppState,
    group: GroupId,
}

impl Drop for GroupClaim<'_> {
    fn drop(&mut self) {
        self.state.busy_groups.lock().remove(&self.group);
    }
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, config: Config, leadership: Arc<Leadership>) -> AppState {
        let servers = Servers::new(
            config.backend_user.clone(),
            config.backend_password.clone(),
            config.redis_timeout(),
        );
        AppState {
            store,
            config,
            leadership,
            servers,
            stats: crate::stats::Collector::default(),
            change_lock: tokio::sync::Mutex::new(()),
            busy_groups: Mutex::new(BTreeMap::new()),
            migrations: Default::default(),
        }
    }

    /// The stored topology; an empty one (version 0) before the first write.
    pub async fn load(&self) -> Result<Topology, AppError> {
        Ok(self.store.load_topology().await?.unwrap_or_default())
    }

    /// Marks `group` busy with `what` until the claim is dropped; 409 when
    /// another operation holds it.
    pub fn claim_group(&self, group: GroupId, what: &str) -> Result<GroupClaim<'_>, AppError> {
        let mut busy = self.busy_groups.lock();
        if let Some(running) = busy.get(&group) {
            let hint = if running.starts_with("migration") {
                " (a migration that waits for this group's master lets go of it when paused)"
            } else {
                ""
            };
            return Err(AppError::Conflict(format!(
                "group {group} is busy: {running} is in progress; try again when it is done{hint}"
            )));
        }
        busy.insert(group, what.to_string());
        Ok(GroupClaim { state: self, group })
    }

    /// Checks a change against the current topology without saving it (so
    /// that a call can refuse before it touches a Redis server): the
    /// version and the change function's own checks.
    pub async fn check_change<R>(
        &self,
        based_on: Option<u64>,
        change: impl FnOnce(&mut Topology) -> Result<R, AppError>,
    ) -> Result<(Topology, R), AppError> {
        self.leadership.require_leader()?;
        let current = self.load().await?;
        check_based_on(based_on, current.version)?;
        let mut next = current.clone();
        let out = change(&mut next)?;
        Ok((current, out))
    }

    /// The one way the topology changes: load it (with its version), apply
    /// the pure `change`, validate, and save it as version + 1 in one etcd
    /// transaction guarded by the version *and* this dashboard's leadership.
    /// A change refused by `change`, by validation or by a guard saves
    /// nothing. `based_on` (the `If-Match` header) makes the change
    /// conditional on the version the caller saw.
    pub async fn change_topology<R>(
        &self,
        based_on: Option<u64>,
        change: impl FnOnce(&mut Topology) -> Result<R, AppError>,
    ) -> Result<(Topology, R), AppError> {
        let lease = self.leadership.require_leader()?;
        let _serial = self.change_lock.lock().await;
        let current = self.load().await?;
        check_based_on(based_on, current.version)?;
        let mut next = current.clone();
        let out = change(&mut next)?;
        next.version = current.version + 1;
        next.validate().map_err(|e| {
            AppError::Conflict(format!("the change would make the topology invalid: {e}"))
        })?;
        self.store
            .save_topology_as_leader(lease, current.version, &next)
            .await?;
        tracing::info!(version = next.version, "topology saved");
        Ok((next, out))
    }
}

/// The `If-Match` check: the caller's version must still be the current one.
fn check_based_on(based_on: Option<u64>, current: u64) -> Result<(), AppError> {
    match based_on {
        Some(v) if v != current => Err(AppError::Conflict(format!(
            "topology changed concurrently (stale version): the change was based on version \
             {v}, the topology is at version {current}; nothing was changed"
        ))),
        _ => Ok(()),
    }
}
