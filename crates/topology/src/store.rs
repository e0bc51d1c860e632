//! Where the topology lives. One trait, two implementations: `EtcdStore` for
//! real clusters and `MemStore` for unit tests of the control plane's logic.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::watch;

use crate::migration::Migration;
use crate::model::{ProxyInfo, Topology};

/// An etcd lease id (MemStore hands out its own).
pub type LeaseId = i64;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A guarded write found another version than the writer based its change on.
    #[error("topology changed concurrently: expected version {expected}, found {found}")]
    Conflict { expected: u64, found: u64 },
    /// The lease does not exist any more (expired or revoked).
    #[error("lease {0:x} has expired")]
    LeaseExpired(LeaseId),
    #[error("invalid data in store at {key}: {reason}")]
    Corrupt { key: String, reason: String },
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// A write guarded by the dashboard leadership found the leader entry
    /// gone or held under another lease: the writer is no longer the leader.
    #[error("not the leader: {0}")]
    NotLeader(String),
    /// The request itself is wrong (a topology that fails validation, a version
    /// that is not `expected + 1`, a bad proxy id or TTL): retrying cannot help.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// The dashboard leader entry: what its holder wrote, and the lease it lives
/// under (it vanishes when that lease ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderEntry {
    pub value: String,
    pub lease: LeaseId,
}

/// A change to the latest known topology. `None` until one was ever written.
pub type TopologyWatch = watch::Receiver<Option<Arc<Topology>>>;

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current topology, or `None` when none was ever written.
    async fn load_topology(&self) -> Result<Option<Topology>, StoreError>;

    /// Writes `next` in one transaction if and only if the stored version is
    /// still `expected` (0: nothing stored yet). `next.version` must be
    /// `expected + 1`; the version counter key is written in the same transaction.
    async fn save_topology(&self, expected: u64, next: &Topology) -> Result<(), StoreError>;

    /// Follows the topology: the receiver always holds the newest document seen.
    /// Survives disconnects by itself (resumes from the last revision seen, or
    /// reloads everything if that revision was compacted).
    async fn watch_topology(&self) -> Result<TopologyWatch, StoreError>;

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError>;

    /// Sends one keep-alive and waits for its answer: the TTL etcd granted anew.
    /// `LeaseExpired` when the lease is gone.
    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError>;

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError>;

    /// Writes a proxy's registration under `lease` (create or update).
    async fn put_proxy(&self, lease: LeaseId, info: &ProxyInfo) -> Result<(), StoreError>;

    /// Every registered proxy whose lease is alive, sorted by id.
    async fn list_proxies(&self) -> Result<Vec<ProxyInfo>, StoreError>;

    // ---- dashboard leadership ------------------------------------------------

    /// Creates the leader entry with `value` under `lease` if no leader entry
    /// exists, in one transaction (create-if-absent), so that two dashboards
    /// can never both succeed. `true` when the entry is held under `lease`
    /// afterwards (also when it already was), `false` when another lease holds
    /// it. `LeaseExpired` when the entry is free but `lease` is gone.
    async fn acquire_leadership(&self, lease: LeaseId, value: &str) -> Result<bool, StoreError>;

    /// The current leader entry, if any dashboard holds the leadership.
    async fn leader(&self) -> Result<Option<LeaderEntry>, StoreError>;

    /// [`Store::save_topology`] that also requires the leader entry to be held
    /// under `leader_lease`, checked in the same transaction: a dashboard that
    /// lost its leadership (and may not know it yet) can never write. Fails
    /// with `NotLeader` when the entry is gone or another lease's, and with
    /// `Conflict` when the version moved on.
    async fn save_topology_as_leader(
        &self,
        leader_lease: LeaseId,
        expected: u64,
        next: &Topology,
    ) -> Result<(), StoreError>;

    // ---- migrations ------------------------------------------------------------

    /// Every migration record, by ascending id.
    async fn list_migrations(&self) -> Result<Vec<Migration>, StoreError>;

    /// Writes a migration record (create or update) if and only if the leader
    /// entry is held under `leader_lease`, in one transaction; `NotLeader`
    /// otherwise.
    async fn save_migration_as_leader(
        &self,
        leader_lease: LeaseId,
        migration: &Migration,
    ) -> Result<(), StoreError>;
}

/// The checks every store makes before a guarded topology write: the change
/// must be exactly one version on and the document must be valid. Shared so
/// that `MemStore` refuses exactly what `EtcdStore` refuses.
pub(crate) fn check_next(expected: u64, next: &Topology) -> Result<(), StoreError> {
    if expected.checked_add(1) != Some(next.version) {
        return Err(StoreError::Invalid(format!(
            "new topology has version {}, expected {expected} + 1",
            next.version
        )));
    }
    next.validate()
        .map_err(|e| StoreError::Invalid(format!("topology version {}: {e}", next.version)))
}

/// Checks a proxy registration before it is written.
pub(crate) fn check_proxy(info: &ProxyInfo) -> Result<(), StoreError> {
    if crate::keys::valid_name(&info.id) {
        Ok(())
    } else {
        Err(StoreError::Invalid(format!(
            "proxy id {:?} must be 1-64 characters of [A-Za-z0-9_-]",
            info.id
        )))
    }
}
