//! A whole Shardis cluster for a test: etcd, groups of redis-servers, a
//! topology that splits the 1024 slots evenly, and proxies.
//!
//! ```no_run
//! use shardis_tests::Cluster;
//! let cluster = Cluster::builder().groups(2).proxies(1).build();
//! let mut conn = cluster.proxy(0).conn();
//! assert_eq!(conn.cmd(&["SET", "k", "v"]), b"+OK\r\n");
//! let owner = cluster.owner_of("k");
//! assert!(cluster.group_master(owner).exists("k"));
//! ```

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use shardis_topology::{
    slot_of, EtcdStore, Group, GroupId, ProxyInfo, SlotState, Store, Topology, SLOT_COUNT,
};

use crate::etcd::EtcdServer;
use crate::process::lock;
use crate::proxy::{ProxyBuilder, ProxyProcess};
use crate::redis_server::RedisServer;
use crate::resp::RespConn;

/// How long [`Cluster::wait_applied`] waits for every proxy.
pub const APPLY_TIMEOUT: Duration = Duration::from_secs(15);

static CLUSTER_SEQ: AtomicUsize = AtomicUsize::new(0);

#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    groups: u32,
    replicas: usize,
    proxies: usize,
    password: Option<String>,
    backend_password: Option<String>,
    proxy_args: Vec<String>,
}

impl ClusterBuilder {
    /// Number of groups, with ids `1..=n` (default 2).
    pub fn groups(mut self, n: u32) -> Self {
        assert!(n >= 1, "a cluster needs at least one group");
        self.groups = n;
        self
    }
    /// Replicas per group, each `REPLICAOF` its master (default 0).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n;
        self
    }
    /// Number of proxies (default 1).
    pub fn proxies(mut self, n: usize) -> Self {
        self.proxies = n;
        self
    }
    /// The proxies' client password (`--password`): clients must AUTH.
    pub fn password(mut self, pw: impl Into<String>) -> Self {
        self.password = Some(pw.into());
        self
    }
    /// The redis servers' `requirepass`, given to the proxies as `--backend-password`.
    pub fn backend_password(mut self, pw: impl Into<String>) -> Self {
        self.backend_password = Some(pw.into());
        self
    }
    /// An extra argument for every proxy.
    pub fn proxy_arg(mut self, arg: impl Into<String>) -> Self {
        self.proxy_args.push(arg.into());
        self
    }

    pub fn build(self) -> Cluster {
        let name = format!(
            "test-{}-{}",
            std::process::id(),
            CLUSTER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let etcd = EtcdServer::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime for the etcd store");
        let store = runtime
            .block_on(EtcdStore::connect(&[etcd.endpoint()], &name))
            .unwrap_or_else(|e| panic!("connect to etcd at {}: {e}", etcd.endpoint()));

        let mut groups = BTreeMap::new();
        for id in 1..=self.groups {
            let server = || {
                let mut b = RedisServer::builder();
                if let Some(pw) = &self.backend_password {
                    b = b.password(pw.clone());
                }
                b.start()
            };
            let master = server();
            let mut servers = vec![master];
            for _ in 0..self.replicas {
                let replica = server();
                replica.replicaof(&servers[0]);
                servers.push(replica);
            }
            groups.insert(id, servers);
        }

        let topology = even_topology(&groups);
        runtime
            .block_on(store.save_topology(0, &topology))
            .unwrap_or_else(|e| panic!("write the first topology: {e}"));

        let mut cluster = Cluster {
            proxies: Vec::new(),
            groups,
            runtime,
            store,
            etcd,
            name,
            topology: Mutex::new(topology),
            password: self.password.clone(),
            backend_password: self.backend_password.clone(),
            proxy_args: self.proxy_args.clone(),
        };
        for _ in 0..self.proxies {
            cluster.start_proxy();
        }
        cluster
    }
}

/// Groups `1..=n` with their servers' addresses, and the slots split into `n`
/// contiguous, nearly equal ranges (group 1 gets the lowest slots).
fn even_topology(groups: &BTreeMap<GroupId, Vec<RedisServer>>) -> Topology {
    let mut t = Topology {
        version: 1,
        ..Topology::default()
    };
    for (&id, servers) in groups {
        t.groups.insert(
            id,
            Group {
                id,
                servers: servers.iter().map(RedisServer::addr).collect(),
            },
        );
    }
    let n = groups.len();
    let ids: Vec<GroupId> = groups.keys().copied().collect();
    for (slot, state) in t.slots.iter_mut().enumerate() {
        *state = SlotState::Normal {
            group: ids[slot * n / SLOT_COUNT],
        };
    }
    t.validate().expect("the generated topology is valid");
    t
}

/// A running cluster. Everything is killed when it is dropped, proxies first.
pub struct Cluster {
    // Fields drop in order: proxies before the servers they talk to.
    proxies: Vec<ProxyProcess>,
    groups: BTreeMap<GroupId, Vec<RedisServer>>,
    runtime: tokio::runtime::Runtime,
    store: EtcdStore,
    etcd: EtcdServer,
    name: String,
    /// The last topology this fixture wrote.
    topology: Mutex<Topology>,
    password: Option<String>,
    backend_password: Option<String>,
    proxy_args: Vec<String>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder {
            groups: 2,
            replicas: 0,
            proxies: 1,
            password: None,
            backend_password: None,
            proxy_args: Vec::new(),
        }
    }

    /// The cluster name (`--cluster`).
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn etcd(&self) -> &EtcdServer {
        &self.etcd
    }

    pub fn store(&self) -> &EtcdStore {
        &self.store
    }

    /// Runs a future (e.g. a [`Store`] call) on the fixture's runtime.
    pub fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    // -- proxies ------------------------------------------------------------

    pub fn proxy(&self, i: usize) -> &ProxyProcess {
        self.proxies
            .get(i)
            .unwrap_or_else(|| panic!("no proxy {i} (the cluster has {})", self.proxies.len()))
    }

    pub fn proxies(&self) -> &[ProxyProcess] {
        &self.proxies
    }

    /// A builder for one more proxy of this cluster with the cluster's options
    /// (not started, not tracked by the cluster).
    pub fn proxy_builder(&self) -> ProxyBuilder {
        let mut b = ProxyProcess::builder(&self.etcd.endpoint(), &self.name);
        if let Some(pw) = &self.password {
            b = b.password(pw.clone());
        }
        if let Some(pw) = &self.backend_password {
            b = b.backend_password(pw.clone());
        }
        for arg in &self.proxy_args {
            b = b.arg(arg.clone());
        }
        b
    }

    /// Starts one more proxy, waits until it is ready, and returns its index.
    pub fn start_proxy(&mut self) -> usize {
        let proxy = self.proxy_builder().start();
        self.proxies.push(proxy);
        self.proxies.len() - 1
    }

    /// A raw connection to proxy `i`, authenticated when needed.
    pub fn conn(&self, i: usize) -> RespConn {
        self.proxy(i).conn()
    }

    /// Stderr tails of all proxies, for failure messages.
    pub fn proxy_logs(&self) -> String {
        self.proxies
            .iter()
            .map(|p| format!("--- proxy {} stderr ---\n{}", p.id(), p.stderr_tail(40)))
            .collect::<Vec<_>>()
            .join("\n")
    }

    // -- groups ---------------------------------------------------------------

    pub fn group_ids(&self) -> Vec<GroupId> {
        self.groups.keys().copied().collect()
    }

    pub fn group_master(&self, id: GroupId) -> &RedisServer {
        &self.group_servers(id)[0]
    }

    /// Master first, then replicas.
    pub fn group_servers(&self, id: GroupId) -> &[RedisServer] {
        self.groups
            .get(&id)
            .unwrap_or_else(|| panic!("no group {id}"))
    }

    // -- topology -------------------------------------------------------------

    /// The last topology written by this fixture.
    pub fn topology(&self) -> Topology {
        lock(&self.topology).clone()
    }

    /// The topology as stored in etcd now.
    pub fn load_topology(&self) -> Topology {
        self.block_on(self.store.load_topology())
            .unwrap_or_else(|e| panic!("load the topology: {e}"))
            .expect("a topology was written")
    }

    /// The group that owns `key`'s slot in the last written topology.
    pub fn owner_of(&self, key: &str) -> GroupId {
        let slot = slot_of(key.as_bytes()) as usize;
        lock(&self.topology)
            .slot(slot)
            .owner()
            .unwrap_or_else(|| panic!("slot {slot} of {key:?} has no owner"))
    }

    /// Loads the topology, lets `f` change it, saves it as version + 1 and
    /// returns the new version. (Does not wait for the proxies: see
    /// [`wait_applied`](Self::wait_applied).)
    pub fn update_topology(&self, f: impl FnOnce(&mut Topology)) -> u64 {
        let current = self.load_topology();
        let mut next = current.clone();
        f(&mut next);
        next.version = current.version + 1;
        next.validate()
            .unwrap_or_else(|e| panic!("the changed topology is invalid: {e}"));
        self.block_on(self.store.save_topology(current.version, &next))
            .unwrap_or_else(|e| panic!("save topology version {}: {e}", next.version));
        let version = next.version;
        *lock(&self.topology) = next;
        version
    }

    /// Sets the state of every slot in `slots`; returns the new version.
    pub fn set_slots(&self, slots: impl IntoIterator<Item = usize>, state: SlotState) -> u64 {
        let slots: Vec<usize> = slots.into_iter().collect();
        self.update_topology(|t| {
            for s in slots {
                t.slots[s] = state;
            }
        })
    }

    /// Every registered proxy (from etcd).
    pub fn list_proxies(&self) -> Vec<ProxyInfo> {
        self.block_on(self.store.list_proxies())
            .unwrap_or_else(|e| panic!("list proxies: {e}"))
    }

    /// Waits until every proxy of this cluster reports `applied_version >=
    /// version` in etcd; panics after [`APPLY_TIMEOUT`].
    pub fn wait_applied(&self, version: u64) {
        let deadline = Instant::now() + APPLY_TIMEOUT;
        loop {
            let listed = self.list_proxies();
            let behind: Vec<String> = self
                .proxies
                .iter()
                .filter(|p| p.is_running())
                .filter_map(|p| match listed.iter().find(|i| i.id == p.id()) {
                    Some(info) if info.applied_version >= version => None,
                    Some(info) => Some(format!("{} at {}", p.id(), info.applied_version)),
                    None => Some(format!("{} not registered", p.id())),
                })
                .collect();
            if behind.is_empty() {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "proxies did not apply topology version {version} within {APPLY_TIMEOUT:?}: \
                     {behind:?}\nregistered: {listed:?}\n{}",
                    self.proxy_logs()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    // -- keys -----------------------------------------------------------------

    /// `n` distinct keys `"{prefix}{i}"` owned by `group`.
    pub fn keys_of_group(&self, group: GroupId, prefix: &str, n: usize) -> Vec<String> {
        let keys: Vec<String> = (0..)
            .map(|i| format!("{prefix}{i}"))
            .filter(|k| self.owner_of(k) == group)
            .take(n)
            .collect();
        keys
    }
}

/// A key `"{prefix}{i}"` whose slot is `slot` (searched by brute force).
pub fn key_in_slot(prefix: &str, slot: usize) -> String {
    assert!(slot < SLOT_COUNT);
    (0u64..)
        .map(|i| format!("{prefix}{i}"))
        .find(|k| slot_of(k.as_bytes()) as usize == slot)
        .expect("every slot has keys")
}

/// A hash tag (`tag{i}`) whose slot is `slot`: keys `{tag}…` all land there.
pub fn tag_in_slot(slot: usize) -> String {
    key_in_slot("tag", slot)
}

/// `n` distinct keys `"{prefix}{i}"` whose slots satisfy `pred`.
pub fn keys_where(prefix: &str, n: usize, pred: impl Fn(usize) -> bool) -> Vec<String> {
    (0u64..)
        .map(|i| format!("{prefix}{i}"))
        .filter(|k| pred(slot_of(k.as_bytes()) as usize))
        .take(n)
        .collect()
}
