//! Shared setup of the control-plane tests (`control_*.rs`): etcd, groups of
//! redis-servers built *through the dashboard's API*, proxies, and a look at
//! the raw topology in etcd to show what a refused change left behind.
#![allow(dead_code)] // each test module uses a different part

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use shardis_dashboard::client::{Client, ClientError};
use shardis_tests::dashboard::{DashboardBuilder, DashboardProcess};
use shardis_tests::{EtcdServer, ProxyProcess, RedisServer};
use shardis_topology::{GroupId, Topology, SLOT_COUNT};

static SEQ: AtomicUsize = AtomicUsize::new(0);

/// A cluster name no other test in this process uses.
pub fn cluster_name() -> String {
    format!(
        "ctl-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    )
}

/// A running control plane and its servers. Fields drop in order: proxies
/// and dashboards before the servers they talk to, etcd last.
pub struct Setup {
    pub proxies: Vec<ProxyProcess>,
    pub dash: DashboardProcess,
    /// Per group id (1..), master first, as added through the API.
    pub groups: Vec<(GroupId, Vec<RedisServer>)>,
    pub etcd: EtcdServer,
    pub cluster: String,
}

/// `servers_per_group[i]` servers for group `i + 1` (the first its master),
/// all added through the API, the slots split evenly through the API, and
/// `proxies` proxies (lease TTL 30 s, so a paused one stays registered).
pub fn setup(
    servers_per_group: &[usize],
    proxies: usize,
    dash: impl FnOnce(DashboardBuilder) -> DashboardBuilder,
) -> Setup {
    let etcd = EtcdServer::start();
    let cluster = cluster_name();
    let dash = dash(DashboardProcess::builder(&etcd.endpoint(), &cluster)).start();
    dash.wait_leader();
    let c = dash.client();
    let mut groups = Vec::new();
    let n = servers_per_group.len();
    for (i, &count) in servers_per_group.iter().enumerate() {
        let id = i as GroupId + 1;
        c.create_group(id).expect("create group");
        let servers: Vec<RedisServer> = (0..count).map(|_| RedisServer::start()).collect();
        for s in &servers {
            c.add_server(id, &s.addr(), false)
                .unwrap_or_else(|e| panic!("add server {} to group {id}: {e}", s.addr()));
        }
        let (from, to) = (i * SLOT_COUNT / n, (i + 1) * SLOT_COUNT / n - 1);
        c.assign_slots(&format!("{from}-{to}"), id)
            .expect("assign slots");
        groups.push((id, servers));
    }
    let mut setup = Setup {
        proxies: Vec::new(),
        dash,
        groups,
        etcd,
        cluster,
    };
    for (id, servers) in &setup.groups {
        if servers.len() > 1 {
            setup.wait_replicas_up(*id);
        }
    }
    for _ in 0..proxies {
        let p = setup.proxy_builder().start();
        setup.proxies.push(p);
    }
    setup
}

impl Setup {
    pub fn client(&self) -> Client {
        self.dash.client()
    }

    pub fn proxy_builder(&self) -> shardis_tests::ProxyBuilder {
        ProxyProcess::builder(&self.etcd.endpoint(), &self.cluster).lease_ttl(30)
    }

    pub fn servers(&self, group: GroupId) -> &[RedisServer] {
        &self
            .groups
            .iter()
            .find(|(id, _)| *id == group)
            .unwrap_or_else(|| panic!("no group {group}"))
            .1
    }

    /// The topology exactly as stored in etcd.
    pub fn stored(&self) -> Topology {
        let key = format!("/shardis/{}/topology", self.cluster);
        let text = self.etcd.etcdctl(&["get", "--print-value-only", &key]);
        serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("topology {text:?}: {e}"))
    }

    /// Waits until every replica of the group reports its link to the
    /// master up (the first sync can take seconds: repl-diskless-sync-delay).
    pub fn wait_replicas_up(&self, group: GroupId) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let groups = self.client().groups().expect("list groups");
            let g = groups
                .groups
                .iter()
                .find(|g| g.id == group)
                .expect("the group is listed");
            let up = g.servers.iter().skip(1).all(|s| {
                s.replication
                    .as_ref()
                    .is_some_and(|r| r.master_link_status.as_deref() == Some("up"))
            });
            if up {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "replicas of group {group} not up: {:#?}",
                g.servers
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Unwraps an API error: its status and text.
#[track_caller]
pub fn api_error<T: std::fmt::Debug>(r: Result<T, ClientError>) -> (u16, String) {
    match r {
        Err(ClientError::Api { status, body }) => (status, body.error),
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// Asserts an API error with `status` mentioning `needle`.
#[track_caller]
pub fn assert_api_error<T: std::fmt::Debug>(r: Result<T, ClientError>, status: u16, needle: &str) {
    let (got, text) = api_error(r);
    assert_eq!(got, status, "{text}");
    assert!(
        text.contains(needle),
        "error {text:?} should mention {needle:?}"
    );
}

/// Keys `"{prefix}{i}"` whose slot is in `slots`.
pub fn keys_in(prefix: &str, n: usize, slots: std::ops::Range<usize>) -> Vec<String> {
    shardis_tests::keys_where(prefix, n, |s| slots.contains(&s))
}
