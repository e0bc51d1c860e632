//! `MemStore`: the `Store` in memory, for unit tests of the control plane.
//!
//! It keeps etcd's semantics where the control plane depends on them: writes
//! are version-guarded and atomic, a watch sees every committed version in
//! order (coalesced, like any `tokio::sync::watch`), and leases really expire on
//! tokio's clock (so `tokio::time::pause`/`advance` drive them) taking their
//! proxy registrations with them. A few extra methods let a test break things
//! on purpose: [`MemStore::expire_lease`], [`MemStore::set_available`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::migration::Migration;
use crate::model::{ProxyInfo, Topology};
use crate::store::{
    check_next, check_proxy, LeaderEntry, LeaseId, Store, StoreError, TopologyWatch,
};

/// An in-memory store. Clones share the same state, like several clients of
/// one etcd.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<State>,
    /// Published while `state` is locked, so that watchers see versions in
    /// commit order.
    topology_tx: watch::Sender<Option<Arc<Topology>>>,
}

struct State {
    topology: Option<Arc<Topology>>,
    leases: HashMap<LeaseId, Lease>,
    /// Registrations by proxy id; each carries its lease in `ProxyInfo::lease`.
    proxies: BTreeMap<String, ProxyInfo>,
    /// The dashboard leader entry, under its lease.
    leader: Option<LeaderEntry>,
    last_lease: LeaseId,
    migrations: BTreeMap<u64, Migration>,
    /// `Some(reason)` while a test pretends the store is down.
    unavailable: Option<String>,
}

struct Lease {
    ttl: Duration,
    /// Gone at this instant unless kept alive before.
    deadline: Instant,
}

impl State {
    fn check_available(&self) -> Result<(), StoreError> {
        match &self.unavailable {
            Some(reason) => Err(StoreError::Unavailable(reason.clone())),
            None => Ok(()),
        }
    }

    /// Expiry is applied lazily, on every access: nobody can observe the
    /// difference from a server that deletes expired leases eagerly.
    fn purge_expired(&mut self) {
        let now = Instant::now();
        let before = self.leases.len();
        self.leases.retain(|_, lease| lease.deadline > now);
        if self.leases.len() != before {
            self.drop_orphans();
        }
    }

    fn remove_lease(&mut self, id: LeaseId) -> bool {
        let existed = self.leases.remove(&id).is_some();
        if existed {
            self.drop_orphans();
        }
        existed
    }

    /// Deletes registrations whose lease is gone, as etcd deletes the keys
    /// attached to a lease when it ends.
    fn drop_orphans(&mut self) {
        let leases = &self.leases;
        self.proxies.retain(|_, p| leases.contains_key(&p.lease));
        if self
            .leader
            .as_ref()
            .is_some_and(|l| !leases.contains_key(&l.lease))
        {
            self.leader = None;
        }
    }

    /// Locks in the common preamble of every operation.
    fn ready(&mut self) -> Result<&mut Self, StoreError> {
        self.check_available()?;
        self.purge_expired();
        Ok(self)
    }
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl std::fmt::Debug for MemStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("MemStore")
            .field("version", &state.topology.as_ref().map(|t| t.version))
            .field("leases", &state.leases.len())
            .field("proxies", &state.proxies.len())
            .finish()
    }
}

impl MemStore {
    /// An empty store: no topology, no leases.
    pub fn new() -> MemStore {
        let (topology_tx, _) = watch::channel(None);
        MemStore {
            inner: Arc::new(Inner {
                state: Mutex::new(State {
                    topology: None,
                    leases: HashMap::new(),
                    proxies: BTreeMap::new(),
                    leader: None,
                    last_lease: 0,
                    migrations: BTreeMap::new(),
                    unavailable: None,
                }),
                topology_tx,
            }),
        }
    }

    /// Ends a lease at once, as if its holder had stopped sending keep-alives
    /// and the TTL had run out: its registrations vanish and further
    /// keep-alives fail with `LeaseExpired`. Returns whether the lease existed.
    pub fn expire_lease(&self, lease: LeaseId) -> bool {
        let mut state = self.inner.state.lock();
        state.purge_expired();
        state.remove_lease(lease)
    }

    /// Whether `lease` exists and has not run out (ignores `set_available`).
    pub fn lease_alive(&self, lease: LeaseId) -> bool {
        let mut state = self.inner.state.lock();
        state.purge_expired();
        state.leases.contains_key(&lease)
    }

    /// Ids of the leases alive now, ascending.
    pub fn leases(&self) -> Vec<LeaseId> {
        let mut state = self.inner.state.lock();
        state.purge_expired();
        let mut ids: Vec<LeaseId> = state.leases.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    /// While `false`, every `Store` call fails with `Unavailable` (the data is
    /// kept, and leases keep running out, as they would on a real server the
    /// client cannot reach). Existing watch receivers simply see no changes.
    pub fn set_available(&self, available: bool) {
        self.inner.state.lock().unavailable =
            (!available).then(|| "MemStore is set unavailable by the test".to_string());
    }

    /// The stored topology, without going through the async trait (ignores
    /// `set_available`).
    pub fn topology(&self) -> Option<Arc<Topology>> {
        self.inner.state.lock().topology.clone()
    }
}

impl MemStore {
    /// The guarded write behind both `save_topology` variants, in one critical
    /// section (the counterpart of etcd's transaction).
    fn save(
        &self,
        leader_lease: Option<LeaseId>,
        expected: u64,
        next: &Topology,
    ) -> Result<(), StoreError> {
        check_next(expected, next)?;
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        if let Some(lease) = leader_lease {
            if state.leader.as_ref().map(|l| l.lease) != Some(lease) {
                return Err(StoreError::NotLeader(format!(
                    "the leader entry is not held under lease {lease:x}"
                )));
            }
        }
        let found = state.topology.as_ref().map_or(0, |t| t.version);
        if found != expected {
            return Err(StoreError::Conflict { expected, found });
        }
        let next = Arc::new(next.clone());
        state.topology = Some(next.clone());
        self.inner.topology_tx.send_replace(Some(next));
        Ok(())
    }
}

#[async_trait]
impl Store for MemStore {
    async fn load_topology(&self) -> Result<Option<Topology>, StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        Ok(state.topology.as_deref().cloned())
    }

    async fn save_topology(&self, expected: u64, next: &Topology) -> Result<(), StoreError> {
        self.save(None, expected, next)
    }

    async fn save_topology_as_leader(
        &self,
        leader_lease: LeaseId,
        expected: u64,
        next: &Topology,
    ) -> Result<(), StoreError> {
        self.save(Some(leader_lease), expected, next)
    }

    async fn acquire_leadership(&self, lease: LeaseId, value: &str) -> Result<bool, StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        // In etcd's order: the compare decides first, and only the put into
        // a free entry finds out that the lease is gone.
        match &state.leader {
            Some(held) => Ok(held.lease == lease),
            None if !state.leases.contains_key(&lease) => Err(StoreError::LeaseExpired(lease)),
            None => {
                state.leader = Some(LeaderEntry {
                    value: value.to_string(),
                    lease,
                });
                Ok(true)
            }
        }
    }

    async fn leader(&self) -> Result<Option<LeaderEntry>, StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        Ok(state.leader.clone())
    }

    async fn watch_topology(&self) -> Result<TopologyWatch, StoreError> {
        let mut state = self.inner.state.lock();
        state.ready()?;
        Ok(self.inner.topology_tx.subscribe())
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId, StoreError> {
        if ttl.is_zero() {
            return Err(StoreError::Invalid("lease TTL must be positive".into()));
        }
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        state.last_lease = state.last_lease.wrapping_add(1);
        let id = state.last_lease;
        state.leases.insert(
            id,
            Lease {
                ttl,
                deadline: Instant::now() + ttl,
            },
        );
        Ok(id)
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration, StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        let entry = state
            .leases
            .get_mut(&lease)
            .ok_or(StoreError::LeaseExpired(lease))?;
        entry.deadline = Instant::now() + entry.ttl;
        Ok(entry.ttl)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<(), StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        if state.remove_lease(lease) {
            Ok(())
        } else {
            // etcd answers "lease not found" for an unknown or ended lease.
            Err(StoreError::LeaseExpired(lease))
        }
    }

    async fn put_proxy(&self, lease: LeaseId, info: &ProxyInfo) -> Result<(), StoreError> {
        check_proxy(info)?;
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        if !state.leases.contains_key(&lease) {
            return Err(StoreError::LeaseExpired(lease));
        }
        let mut info = info.clone();
        info.lease = lease;
        state.proxies.insert(info.id.clone(), info);
        Ok(())
    }

    async fn list_proxies(&self) -> Result<Vec<ProxyInfo>, StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        Ok(state.proxies.values().cloned().collect())
    }

    async fn list_migrations(&self) -> Result<Vec<Migration>, StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        Ok(state.migrations.values().cloned().collect())
    }

    async fn save_migration_as_leader(
        &self,
        leader_lease: LeaseId,
        migration: &Migration,
    ) -> Result<(), StoreError> {
        let mut state = self.inner.state.lock();
        let state = state.ready()?;
        if state.leader.as_ref().map(|l| l.lease) != Some(leader_lease) {
            return Err(StoreError::NotLeader(format!(
                "the leader entry is not held under lease {leader_lease:x}"
            )));
        }
        state.migrations.insert(migration.id, migration.clone());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Group, SlotState};

    /// Version `version` of a one-group topology owning every slot.
    fn topo(version: u64) -> Topology {
        let mut t = Topology {
            version,
            ..Topology::default()
        };
        t.groups.insert(
            1,
            Group {
                id: 1,
                servers: vec!["127.0.0.1:7001".into()],
            },
        );
        t.slots.fill(SlotState::Normal { group: 1 });
        t
    }

    fn proxy(id: &str) -> ProxyInfo {
        ProxyInfo {
            id: id.into(),
            addr: "127.0.0.1:19000".into(),
            admin_addr: "127.0.0.1:11080".into(),
            start_time: 1,
            applied_version: 0,
            pid: 42,
            lease: 0,
        }
    }

    #[tokio::test]
    async fn save_is_version_guarded() {
        let store = MemStore::new();
        assert_eq!(store.load_topology().await.unwrap(), None);
        store.save_topology(0, &topo(1)).await.unwrap();
        store.save_topology(1, &topo(2)).await.unwrap();

        // A writer that based its change on version 1 lost the race.
        match store.save_topology(1, &topo(2)).await {
            Err(StoreError::Conflict {
                expected: 1,
                found: 2,
            }) => {}
            other => panic!("expected a conflict, got {other:?}"),
        }
        // Creating again when something exists is a conflict too.
        assert!(matches!(
            store.save_topology(0, &topo(1)).await,
            Err(StoreError::Conflict {
                expected: 0,
                found: 2
            })
        ));
        assert_eq!(store.load_topology().await.unwrap(), Some(topo(2)));
    }

    #[tokio::test]
    async fn save_refuses_bad_versions_and_invalid_documents() {
        let store = MemStore::new();
        assert!(matches!(
            store.save_topology(0, &topo(2)).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.save_topology(u64::MAX, &topo(0)).await,
            Err(StoreError::Invalid(_))
        ));
        let mut bad = topo(1);
        bad.slots[5] = SlotState::Normal { group: 9 };
        assert!(matches!(
            store.save_topology(0, &bad).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(store.load_topology().await.unwrap(), None);
    }

    #[tokio::test]
    async fn clones_share_state() {
        let a = MemStore::new();
        let b = a.clone();
        a.save_topology(0, &topo(1)).await.unwrap();
        assert_eq!(b.load_topology().await.unwrap().map(|t| t.version), Some(1));
    }

    #[tokio::test]
    async fn watch_sees_new_versions() {
        let store = MemStore::new();
        let mut rx = store.watch_topology().await.unwrap();
        assert!(rx.borrow_and_update().is_none());

        store.save_topology(0, &topo(1)).await.unwrap();
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().as_ref().map(|t| t.version), Some(1));

        // A watch started later begins with the current document.
        let late = store.watch_topology().await.unwrap();
        assert_eq!(late.borrow().as_ref().map(|t| t.version), Some(1));

        // A refused write publishes nothing.
        assert!(store.save_topology(0, &topo(1)).await.is_err());
        assert!(!rx.has_changed().unwrap());

        store.save_topology(1, &topo(2)).await.unwrap();
        store.save_topology(2, &topo(3)).await.unwrap();
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow_and_update().as_ref().map(|t| t.version), Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn leases_expire_and_take_registrations_with_them() {
        let store = MemStore::new();
        let ttl = Duration::from_secs(10);
        let a = store.grant_lease(ttl).await.unwrap();
        let b = store.grant_lease(ttl).await.unwrap();
        assert_ne!(a, b);
        store.put_proxy(a, &proxy("pa")).await.unwrap();
        store.put_proxy(b, &proxy("pb")).await.unwrap();
        let listed = store.list_proxies().await.unwrap();
        assert_eq!(
            listed
                .iter()
                .map(|p| (p.id.as_str(), p.lease))
                .collect::<Vec<_>>(),
            vec![("pa", a), ("pb", b)]
        );

        // `a` is kept alive, `b` is not.
        tokio::time::advance(Duration::from_secs(6)).await;
        assert_eq!(store.keep_alive(a).await.unwrap(), ttl);
        tokio::time::advance(Duration::from_secs(6)).await;
        let ids: Vec<_> = store
            .list_proxies()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.id)
            .collect();
        assert_eq!(ids, vec!["pa"]);
        assert!(!store.lease_alive(b));
        assert!(matches!(
            store.keep_alive(b).await,
            Err(StoreError::LeaseExpired(id)) if id == b
        ));
        assert!(matches!(
            store.put_proxy(b, &proxy("pb")).await,
            Err(StoreError::LeaseExpired(_))
        ));

        // Without keep-alives `a` runs out too.
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(store.list_proxies().await.unwrap().is_empty());
        assert!(store.leases().is_empty());
    }

    #[tokio::test]
    async fn expire_and_revoke() {
        let store = MemStore::new();
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store.put_proxy(lease, &proxy("p1")).await.unwrap();
        assert!(store.expire_lease(lease));
        assert!(store.list_proxies().await.unwrap().is_empty());
        assert!(matches!(
            store.keep_alive(lease).await,
            Err(StoreError::LeaseExpired(_))
        ));
        assert!(!store.expire_lease(lease));

        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store.put_proxy(lease, &proxy("p2")).await.unwrap();
        store.revoke_lease(lease).await.unwrap();
        assert!(store.list_proxies().await.unwrap().is_empty());
        assert!(matches!(
            store.revoke_lease(lease).await,
            Err(StoreError::LeaseExpired(_))
        ));
    }

    #[tokio::test]
    async fn put_proxy_replaces_and_checks_ids() {
        let store = MemStore::new();
        let old = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let new = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store.put_proxy(old, &proxy("p1")).await.unwrap();
        let mut info = proxy("p1");
        info.applied_version = 5;
        store.put_proxy(new, &info).await.unwrap();
        // The registration moved to the new lease: the old one's end leaves it.
        store.expire_lease(old);
        let listed = store.list_proxies().await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!((listed[0].applied_version, listed[0].lease), (5, new));

        assert!(matches!(
            store.put_proxy(new, &proxy("a/b")).await,
            Err(StoreError::Invalid(_))
        ));
        assert!(matches!(
            store.grant_lease(Duration::ZERO).await,
            Err(StoreError::Invalid(_))
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn leadership_is_exclusive_and_ends_with_its_lease() {
        let store = MemStore::new();
        let ttl = Duration::from_secs(5);
        let a = store.grant_lease(ttl).await.unwrap();
        let b = store.grant_lease(ttl).await.unwrap();
        assert_eq!(store.leader().await.unwrap(), None);
        assert!(store.acquire_leadership(a, "dashboard a").await.unwrap());
        // Asking again with the same lease is harmless; another lease loses.
        assert!(store.acquire_leadership(a, "dashboard a").await.unwrap());
        assert!(!store.acquire_leadership(b, "dashboard b").await.unwrap());
        assert_eq!(
            store.leader().await.unwrap(),
            Some(LeaderEntry {
                value: "dashboard a".into(),
                lease: a
            })
        );

        // Only the leader's lease may write through the leader-guarded save.
        store.save_topology_as_leader(a, 0, &topo(1)).await.unwrap();
        assert!(matches!(
            store.save_topology_as_leader(b, 1, &topo(2)).await,
            Err(StoreError::NotLeader(_))
        ));
        assert!(matches!(
            store.save_topology_as_leader(a, 0, &topo(1)).await,
            Err(StoreError::Conflict {
                expected: 0,
                found: 1
            })
        ));

        // `a` stops renewing: the entry goes with its lease and `b` takes over.
        tokio::time::advance(Duration::from_secs(3)).await;
        store.keep_alive(b).await.unwrap();
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(store.leader().await.unwrap(), None);
        assert!(store.acquire_leadership(b, "dashboard b").await.unwrap());
        assert!(matches!(
            store.save_topology_as_leader(a, 1, &topo(2)).await,
            Err(StoreError::NotLeader(_))
        ));
        assert!(!store.acquire_leadership(a, "dashboard a").await.unwrap());
        store.save_topology_as_leader(b, 1, &topo(2)).await.unwrap();
        store.revoke_lease(b).await.unwrap();
        assert!(matches!(
            store.acquire_leadership(a, "dashboard a").await,
            Err(StoreError::LeaseExpired(_))
        ));
    }

    #[tokio::test]
    async fn unavailable_store_fails_every_call() {
        let store = MemStore::new();
        store.save_topology(0, &topo(1)).await.unwrap();
        store.set_available(false);
        assert!(matches!(
            store.load_topology().await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.save_topology(1, &topo(2)).await,
            Err(StoreError::Unavailable(_))
        ));
        assert!(matches!(
            store.grant_lease(Duration::from_secs(1)).await,
            Err(StoreError::Unavailable(_))
        ));
        store.set_available(true);
        assert_eq!(
            store.load_topology().await.unwrap().map(|t| t.version),
            Some(1)
        );
    }
}
