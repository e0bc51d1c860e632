//! `EtcdStore` against a real etcd: every test starts its own `etcd` process on
//! free loopback ports with a temporary data dir, and kills it on drop.

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shardis_topology::{
    EtcdStore, Group, LeaderEntry, ProxyInfo, SlotState, Store, StoreError, Topology, TopologyWatch,
};
use tempfile::TempDir;

// ---- fixtures -------------------------------------------------------------------

/// One etcd process on loopback. Can be killed and started again on the same
/// ports and data dir, as after a crash.
struct EtcdServer {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

impl EtcdServer {
    /// Starts etcd and waits until it answers. Ports are picked free, but
    /// another process could take one before etcd binds it: then start over.
    async fn start() -> EtcdServer {
        let mut last = String::new();
        for _ in 0..3 {
            let mut server = EtcdServer {
                dir: tempfile::tempdir().expect("temp dir"),
                client_port: free_port(),
                peer_port: free_port(),
                child: None,
            };
            match server.spawn().await {
                Ok(()) => return server,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start: {last}");
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    /// Starts the process (again) and waits until it serves requests.
    async fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "etcd is already running");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log_path = self.dir.path().join("etcd.log");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| e.to_string())?;
        let log2 = log.try_clone().map_err(|e| e.to_string())?;
        let child = Command::new("etcd")
            .arg("--name")
            .arg("test")
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(self.endpoint())
            .arg("--advertise-client-urls")
            .arg(self.endpoint())
            .arg("--listen-peer-urls")
            .arg(&peer)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer)
            .arg("--initial-cluster")
            .arg(format!("test={peer}"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| format!("cannot run etcd: {e}"))?;
        self.child = Some(child);

        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("etcd exited with {status}: {}", tail(&log_path)));
            }
            let probe = EtcdStore::connect_with(
                &self.endpoints(),
                "probe",
                Duration::from_millis(300),
                Duration::from_millis(300),
            )
            .await;
            if probe.is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err(format!("etcd did not answer in time: {}", tail(&log_path)));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL, like a crash.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    async fn store(&self, cluster: &str) -> EtcdStore {
        EtcdStore::connect_with(
            &self.endpoints(),
            cluster,
            Duration::from_secs(2),
            Duration::from_secs(2),
        )
        .await
        .expect("connect")
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
    }
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// A TCP forwarder in front of etcd that a test can cut (existing connections
/// are closed, new ones refused) and restore: a network partition between one
/// client and etcd, while other clients still reach it.
struct Cable {
    addr: SocketAddr,
    up: Arc<AtomicBool>,
    /// Bumped on every cut; connections from an older generation close.
    cut: tokio::sync::watch::Sender<u64>,
    accept: tokio::task::JoinHandle<()>,
}

impl Cable {
    async fn to(target: SocketAddr) -> Cable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let up = Arc::new(AtomicBool::new(true));
        let (cut, _) = tokio::sync::watch::channel(0u64);
        let (up2, cut2) = (up.clone(), cut.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the client sees the connection closed
                }
                let mut cut_rx = cut2.subscribe();
                cut_rx.borrow_and_update();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cut_rx.changed() => {}
                    }
                });
            }
        });
        Cable {
            addr,
            up,
            cut,
            accept,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.cut.send_modify(|g| *g += 1);
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

impl Drop for Cable {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut.send_modify(|g| *g += 1);
    }
}

/// Version `version` of a two-group topology; the version picks the split so
/// that consecutive versions differ.
fn topo(version: u64) -> Topology {
    let mut t = Topology {
        version,
        ..Topology::default()
    };
    for id in [1, 2] {
        t.groups.insert(
            id,
            Group {
                id,
                servers: vec![format!("127.0.0.1:{}", 7000 + id)],
            },
        );
    }
    let split = (version as usize * 7) % 1024;
    for (slot, state) in t.slots.iter_mut().enumerate() {
        *state = SlotState::Normal {
            group: if slot < split { 1 } else { 2 },
        };
    }
    t
}

fn proxy(id: &str) -> ProxyInfo {
    ProxyInfo {
        id: id.into(),
        addr: "127.0.0.1:19000".into(),
        admin_addr: "127.0.0.1:11080".into(),
        start_time: 1_700_000_000,
        applied_version: 3,
        pid: 4242,
        lease: 0,
    }
}

/// Waits until the watch holds at least `version`; returns what it holds.
async fn wait_for(rx: &mut TopologyWatch, version: u64, within: Duration) -> Arc<Topology> {
    let waited = tokio::time::timeout(within, async {
        loop {
            if let Some(t) = rx.borrow_and_update().clone() {
                if t.version >= version {
                    return t;
                }
            }
            rx.changed().await.expect("watch task ended");
        }
    })
    .await;
    match waited {
        Ok(t) => t,
        Err(_) => panic!(
            "watch did not reach version {version} within {within:?}; has {:?}",
            rx.borrow().as_ref().map(|t| t.version)
        ),
    }
}

async fn ids(store: &EtcdStore) -> Vec<String> {
    store
        .list_proxies()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.id)
        .collect()
}

// ---- topology ---------------------------------------------------------------------

#[tokio::test]
async fn save_load_round_trip() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c1").await;
    assert_eq!(store.load_topology().await.unwrap(), None);
    store.save_topology(0, &topo(1)).await.unwrap();
    assert_eq!(store.load_topology().await.unwrap(), Some(topo(1)));
    store.save_topology(1, &topo(2)).await.unwrap();
    assert_eq!(store.load_topology().await.unwrap(), Some(topo(2)));

    // The version counter is stored beside the document, as decimal text.
    let raw = store
        .client()
        .kv_client()
        .get(store.keys().topology_version(), None)
        .await
        .unwrap();
    assert_eq!(raw.kvs()[0].value(), b"2");

    // Clusters do not see each other.
    let other = etcd.store("c2").await;
    assert_eq!(other.load_topology().await.unwrap(), None);
}

#[tokio::test]
async fn conflicting_save_is_refused_and_changes_nothing() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    store.save_topology(0, &topo(1)).await.unwrap();
    store.save_topology(1, &topo(2)).await.unwrap();

    let mut stale = topo(2);
    stale.slots[0] = SlotState::Held { group: 1 };
    match store.save_topology(1, &stale).await {
        Err(StoreError::Conflict {
            expected: 1,
            found: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.save_topology(0, &topo(1)).await {
        Err(StoreError::Conflict {
            expected: 0,
            found: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    match store.save_topology(5, &topo(6)).await {
        Err(StoreError::Conflict {
            expected: 5,
            found: 2,
        }) => {}
        other => panic!("expected a conflict, got {other:?}"),
    }
    // Refused before reaching etcd: a skipped version, an invalid document.
    assert!(matches!(
        store.save_topology(2, &topo(4)).await,
        Err(StoreError::Invalid(_))
    ));
    let mut invalid = topo(3);
    invalid.slots[9] = SlotState::Normal { group: 77 };
    assert!(matches!(
        store.save_topology(2, &invalid).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.load_topology().await.unwrap(), Some(topo(2)));
}

#[tokio::test]
async fn concurrent_writers_exactly_one_wins() {
    let etcd = EtcdServer::start().await;
    let a = etcd.store("c").await;
    let b = etcd.store("c").await;
    a.save_topology(0, &topo(1)).await.unwrap();
    let mut from_b = topo(2);
    from_b.slots[1] = SlotState::Held { group: 2 };
    let from_a = topo(2);
    let (ra, rb) = tokio::join!(a.save_topology(1, &from_a), b.save_topology(1, &from_b));
    assert!(ra.is_ok() != rb.is_ok(), "{ra:?} {rb:?}");
    let stored = a.load_topology().await.unwrap().unwrap();
    assert_eq!(stored, if ra.is_ok() { from_a } else { from_b });
}

#[tokio::test]
async fn watch_delivers_newer_versions() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    let writer = etcd.store("c").await;

    let mut rx = store.watch_topology().await.unwrap();
    assert!(rx.borrow_and_update().is_none());
    writer.save_topology(0, &topo(1)).await.unwrap();
    assert_eq!(*wait_for(&mut rx, 1, Duration::from_secs(1)).await, topo(1));
    writer.save_topology(1, &topo(2)).await.unwrap();
    assert_eq!(*wait_for(&mut rx, 2, Duration::from_secs(1)).await, topo(2));

    // A later watch starts with the current document.
    let mut late = store.watch_topology().await.unwrap();
    assert_eq!(
        late.borrow_and_update().as_ref().map(|t| t.version),
        Some(2)
    );

    // A document that is not newer (written behind the store's back) is not published.
    writer
        .put_json(&writer.keys().topology(), &topo(1))
        .await
        .unwrap();
    writer.save_topology(2, &topo(3)).await.unwrap();
    assert_eq!(
        wait_for(&mut rx, 3, Duration::from_secs(1)).await.version,
        3
    );
}

#[tokio::test]
async fn watch_survives_an_etcd_restart() {
    let mut etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    store.save_topology(0, &topo(1)).await.unwrap();
    let lease = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    store.keep_alive(lease).await.unwrap(); // opens the cached keep-alive stream
    let mut rx = store.watch_topology().await.unwrap();
    assert_eq!(rx.borrow_and_update().as_ref().map(|t| t.version), Some(1));

    etcd.kill();
    assert!(matches!(
        store.load_topology().await,
        Err(StoreError::Unavailable(_))
    ));
    etcd.spawn().await.expect("etcd restarts");

    // The same client (its connection was reset) writes, and the watch sees it.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match store.save_topology(1, &topo(2)).await {
            Ok(()) => break,
            Err(StoreError::Unavailable(e)) if Instant::now() < deadline => {
                eprintln!("retrying the save: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("save after restart: {e}"),
        }
    }
    assert_eq!(*wait_for(&mut rx, 2, Duration::from_secs(4)).await, topo(2));

    // The keep-alive stream died with the connection; the lease lives on.
    assert_eq!(
        store.keep_alive(lease).await.unwrap(),
        Duration::from_secs(30)
    );
}

#[tokio::test]
async fn watch_reloads_after_compaction() {
    let etcd = EtcdServer::start().await;
    let target: SocketAddr = format!("127.0.0.1:{}", etcd.client_port).parse().unwrap();
    let cable = Cable::to(target).await;
    let watcher = EtcdStore::connect_with(
        &[cable.endpoint()],
        "c",
        Duration::from_secs(2),
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    let writer = etcd.store("c").await;
    writer.save_topology(0, &topo(1)).await.unwrap();
    let mut rx = watcher.watch_topology().await.unwrap();
    assert_eq!(rx.borrow_and_update().as_ref().map(|t| t.version), Some(1));

    // While the watcher is cut off, the topology moves on and etcd compacts
    // away the revisions it would resume from.
    cable.cut();
    tokio::time::sleep(Duration::from_millis(100)).await;
    for v in 2..=4 {
        writer.save_topology(v - 1, &topo(v)).await.unwrap();
    }
    let mut kv = writer.client().kv_client();
    let now = kv
        .get("x", None)
        .await
        .unwrap()
        .header()
        .unwrap()
        .revision();
    kv.compact(now, None).await.unwrap();
    cable.restore();

    assert_eq!(*wait_for(&mut rx, 4, Duration::from_secs(5)).await, topo(4));
    writer.save_topology(4, &topo(5)).await.unwrap();
    assert_eq!(
        wait_for(&mut rx, 5, Duration::from_secs(2)).await.version,
        5
    );
}

#[tokio::test]
async fn corrupt_documents_are_reported() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    store
        .client()
        .kv_client()
        .put(store.keys().topology(), "{not json", None)
        .await
        .unwrap();
    assert!(matches!(
        store.load_topology().await,
        Err(StoreError::Corrupt { .. })
    ));
    assert!(matches!(
        store.watch_topology().await,
        Err(StoreError::Corrupt { .. })
    ));
}

// ---- leases and proxies -----------------------------------------------------------

#[tokio::test]
async fn proxies_register_under_leases() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    let a = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let b = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    store.put_proxy(b, &proxy("p-b")).await.unwrap();
    store.put_proxy(a, &proxy("p-a")).await.unwrap();
    let mut updated = proxy("p-a");
    updated.applied_version = 9;
    store.put_proxy(a, &updated).await.unwrap();

    let listed = store.list_proxies().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|p| (p.id.as_str(), p.lease, p.applied_version))
            .collect::<Vec<_>>(),
        vec![("p-a", a, 9), ("p-b", b, 3)]
    );
    assert_eq!(
        listed[0],
        ProxyInfo {
            lease: a,
            ..updated
        }
    );

    // A corrupt entry and an entry under the wrong id are skipped, not fatal.
    let prefix = store.keys().proxies_prefix();
    let mut kv = store.client().kv_client();
    kv.put(format!("{prefix}junk"), "{", None).await.unwrap();
    kv.put(
        format!("{prefix}p-x"),
        serde_json::to_vec(&proxy("p-y")).unwrap(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(ids(&store).await, vec!["p-a", "p-b"]);

    assert_eq!(store.keep_alive(a).await.unwrap(), Duration::from_secs(30));
    assert_eq!(store.keep_alive(a).await.unwrap(), Duration::from_secs(30));

    // Revoking takes the registration with it, and the lease is gone for good.
    store.revoke_lease(a).await.unwrap();
    assert_eq!(ids(&store).await, vec!["p-b"]);
    assert!(matches!(
        store.keep_alive(a).await,
        Err(StoreError::LeaseExpired(id)) if id == a
    ));
    assert!(matches!(
        store.put_proxy(a, &proxy("p-a")).await,
        Err(StoreError::LeaseExpired(_))
    ));
    assert!(matches!(
        store.revoke_lease(a).await,
        Err(StoreError::LeaseExpired(_))
    ));

    // A lease revoked by someone else while this store holds its keep-alive stream.
    store.keep_alive(b).await.unwrap();
    let other = etcd.store("c").await;
    other.revoke_lease(b).await.unwrap();
    assert!(matches!(
        store.keep_alive(b).await,
        Err(StoreError::LeaseExpired(_))
    ));
    assert!(ids(&store).await.is_empty());
    assert!(matches!(
        store.put_proxy(b, &proxy("bad/id")).await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn an_expired_lease_takes_its_registration_away() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    let ttl = Duration::from_secs(2);
    let lease = store.grant_lease(ttl).await.unwrap();
    let kept = store.grant_lease(ttl).await.unwrap();
    store.put_proxy(lease, &proxy("lost")).await.unwrap();
    store.put_proxy(kept, &proxy("alive")).await.unwrap();
    let granted = Instant::now();

    let deadline = granted + ttl + Duration::from_secs(3);
    loop {
        store.keep_alive(kept).await.unwrap();
        if ids(&store).await == vec!["alive"] {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "registration still there after {:?}",
            granted.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(granted.elapsed() >= ttl - Duration::from_millis(100));
    assert!(matches!(
        store.keep_alive(lease).await,
        Err(StoreError::LeaseExpired(_))
    ));
}

// ---- dashboard leadership ---------------------------------------------------------

#[tokio::test]
async fn leadership_is_exclusive_and_guards_saves() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    let other = etcd.store("c").await;
    let a = store.grant_lease(Duration::from_secs(30)).await.unwrap();
    let b = other.grant_lease(Duration::from_secs(30)).await.unwrap();
    assert_eq!(store.leader().await.unwrap(), None);

    // Two dashboards campaign at the same time: exactly one wins.
    let (won_a, won_b) = tokio::join!(
        store.acquire_leadership(a, "dashboard a"),
        other.acquire_leadership(b, "dashboard b")
    );
    let (won_a, won_b) = (won_a.unwrap(), won_b.unwrap());
    assert!(won_a ^ won_b, "a won: {won_a}, b won: {won_b}");
    let (leader, loser) = if won_a { (a, b) } else { (b, a) };
    let entry = store.leader().await.unwrap().unwrap();
    assert_eq!(entry.lease, leader);
    assert!(store.acquire_leadership(leader, "again").await.unwrap());
    assert!(!store.acquire_leadership(loser, "again").await.unwrap());

    // Saves guarded by the leadership: the loser cannot write, the leader can,
    // and a stale version is still a conflict.
    assert!(matches!(
        store.save_topology_as_leader(loser, 0, &topo(1)).await,
        Err(StoreError::NotLeader(_))
    ));
    assert_eq!(store.load_topology().await.unwrap(), None);
    store
        .save_topology_as_leader(leader, 0, &topo(1))
        .await
        .unwrap();
    assert!(matches!(
        store.save_topology_as_leader(leader, 0, &topo(1)).await,
        Err(StoreError::Conflict {
            expected: 0,
            found: 1
        })
    ));

    // The leader's lease ends: the entry goes, the other lease takes over and
    // the old leader can no longer write.
    store.revoke_lease(leader).await.unwrap();
    assert_eq!(store.leader().await.unwrap(), None);
    assert!(matches!(
        store.acquire_leadership(leader, "back").await,
        Err(StoreError::LeaseExpired(_))
    ));
    assert!(other.acquire_leadership(loser, "next").await.unwrap());
    assert_eq!(
        other.leader().await.unwrap(),
        Some(LeaderEntry {
            value: "next".into(),
            lease: loser
        })
    );
    assert!(matches!(
        store.save_topology_as_leader(leader, 1, &topo(2)).await,
        Err(StoreError::NotLeader(_))
    ));
    assert!(!store.acquire_leadership(leader, "back").await.unwrap());
    other
        .save_topology_as_leader(loser, 1, &topo(2))
        .await
        .unwrap();
    assert_eq!(store.load_topology().await.unwrap(), Some(topo(2)));
}

// ---- generic helpers --------------------------------------------------------------

#[tokio::test]
async fn guarded_json_records() {
    let etcd = EtcdServer::start().await;
    let store = etcd.store("c").await;
    let key = store.keys().migration(1);
    assert!(store.get_json::<Vec<u32>>(&key).await.unwrap().is_none());

    let rev = store
        .put_json_if(&key, 0, &vec![1u32])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(store.put_json_if(&key, 0, &vec![2u32]).await.unwrap(), None);
    let (value, at) = store.get_json::<Vec<u32>>(&key).await.unwrap().unwrap();
    assert_eq!((value, at), (vec![1], rev));
    let rev2 = store
        .put_json_if(&key, rev, &vec![1u32, 2])
        .await
        .unwrap()
        .unwrap();
    assert!(rev2 > rev);
    assert_eq!(
        store.put_json_if(&key, rev, &vec![3u32]).await.unwrap(),
        None
    );

    store
        .put_json(&store.keys().migration(2), &vec![7u32])
        .await
        .unwrap();
    let listed: Vec<(String, Vec<u32>)> = store
        .list_json(&store.keys().migrations_prefix())
        .await
        .unwrap();
    assert_eq!(
        listed,
        vec![
            (store.keys().migration(1), vec![1, 2]),
            (store.keys().migration(2), vec![7]),
        ]
    );
    assert!(store.delete(&key).await.unwrap());
    assert!(!store.delete(&key).await.unwrap());
    assert!(matches!(
        store.get_json::<String>(&store.keys().migration(2)).await,
        Err(StoreError::Corrupt { .. })
    ));
}
