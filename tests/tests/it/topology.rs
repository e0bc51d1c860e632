//! Topology changes written to etcd reach a running proxy: slot ownership
//! moves, held slots (requests wait, bounded), the applied version the proxy
//! publishes, and readiness.

use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use shardis_tests::{
    escape, keys_where, poll_until, Cluster, EtcdServer, Event, ProxyProcess, RedisServer, RespConn,
};
use shardis_topology::{slot_of, EtcdStore, Group, SlotState, Store, Topology, SLOT_COUNT};

/// Slots 0..100 move from group 1 to group 2 (no keys in them anywhere): the
/// running proxy starts writing them to group 2 without a restart.
#[test]
fn slot_move_is_picked_up_without_restart() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    let moved = keys_where("mv:", 20, |s| s < 100);
    let stay = keys_where("stay:", 10, |s| (100..512).contains(&s));
    for key in &moved {
        assert_eq!(cluster.owner_of(key), 1);
        conn.expect(&["SET", key.as_str(), "before"], b"+OK\r\n");
        assert!(cluster.group_master(1).exists(key));
        conn.expect(&["DEL", key.as_str()], b":1\r\n");
    }

    let version = cluster.set_slots(0..100, SlotState::Normal { group: 2 });
    let started = Instant::now();
    let probe = moved[0].as_str();
    let landed = poll_until(Duration::from_secs(10), || {
        conn.expect(&["SET", probe, "after"], b"+OK\r\n");
        cluster.group_master(2).exists(probe).then_some(())
    });
    assert!(
        landed.is_some(),
        "writes to moved slots still do not reach group 2 after 10 s\n{}",
        cluster.proxy_logs()
    );
    eprintln!("slot move picked up after {:?}", started.elapsed());
    // Writes before the switch went to group 1: clean those up directly.
    cluster.group_master(1).cmd(&["DEL", probe]);

    for key in &moved[1..] {
        conn.expect(&["SET", key.as_str(), "after"], b"+OK\r\n");
        assert!(
            cluster.group_master(2).exists(key),
            "{key} should now be on group 2"
        );
        assert!(
            !cluster.group_master(1).exists(key),
            "{key} must not be on group 1"
        );
        conn.expect(&["GET", key.as_str()], b"$5\r\nafter\r\n");
    }
    for key in &stay {
        conn.expect(&["SET", key.as_str(), "x"], b"+OK\r\n");
        assert!(
            cluster.group_master(1).exists(key),
            "{key} (slot not moved) stays on group 1"
        );
    }
    // The proxy says it applied the new version.
    cluster.wait_applied(version);
}

/// Sends `args` on a new connection from a thread; signals once the request
/// is written, and returns the reply and when it arrived.
fn send_in_background(
    cluster: &Cluster,
    args: &[&str],
) -> (thread::JoinHandle<(Vec<u8>, Instant)>, mpsc::Receiver<()>) {
    let mut conn = cluster.proxy(0).conn();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (tx, rx) = mpsc::channel();
    let handle = thread::spawn(move || {
        conn.send(&args);
        let _ = tx.send(());
        let reply = conn.read_raw();
        (reply, Instant::now())
    });
    (handle, rx)
}

/// A request for a held slot waits; when the slot is released it is answered
/// (and executed once). Requests for other slots are not held up meanwhile.
#[test]
fn held_slot_waits_then_answers() {
    let cluster = Cluster::builder().groups(2).build();
    let key = cluster.keys_of_group(1, "held:", 1).remove(0);
    let other = cluster.keys_of_group(2, "free:", 1).remove(0);
    let slot = slot_of(key.as_bytes()) as usize;
    let version = cluster.set_slots([slot], SlotState::Held { group: 1 });
    cluster.wait_applied(version);

    let (waiter, sent) = send_in_background(&cluster, &["INCR", key.as_str()]);
    sent.recv().expect("the request was sent");
    thread::sleep(Duration::from_millis(100));
    // Another slot answers at once while the held request waits.
    let mut conn = cluster.proxy(0).conn();
    let t = Instant::now();
    conn.expect(&["SET", other.as_str(), "v"], b"+OK\r\n");
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "unheld slot took {:?}",
        t.elapsed()
    );
    thread::sleep(Duration::from_millis(400));
    assert!(
        !cluster.group_master(1).exists(&key),
        "the held request must not run yet"
    );

    let released_at = Instant::now();
    let release = cluster.set_slots([slot], SlotState::Normal { group: 1 });
    let (reply, answered_at) = waiter.join().expect("waiter thread");
    assert_eq!(
        reply,
        b":1\r\n",
        "held INCR after release: {}",
        escape(&reply)
    );
    assert!(
        answered_at > released_at,
        "the request for a held slot was answered before the slot was released"
    );
    assert_eq!(
        cluster.group_master(1).cmd(&["GET", key.as_str()]),
        b"$1\r\n1\r\n"
    );
    cluster.wait_applied(release);
}

/// A slot held longer than the hold timeout (~2 s): the waiting request gets
/// `-TRYAGAIN` and is not executed; after the release it works.
#[test]
fn held_too_long_gets_tryagain() {
    let cluster = Cluster::builder().groups(2).build();
    let key = cluster.keys_of_group(2, "long:", 1).remove(0);
    let slot = slot_of(key.as_bytes()) as usize;
    let version = cluster.set_slots([slot], SlotState::Held { group: 2 });
    cluster.wait_applied(version);

    let mut conn = cluster.proxy(0).conn();
    let t = Instant::now();
    let reply = conn.cmd(&["SET", key.as_str(), "v"]);
    let waited = t.elapsed();
    assert!(
        reply.starts_with(b"-TRYAGAIN"),
        "a request held too long should get -TRYAGAIN, got {} after {waited:?}",
        escape(&reply)
    );
    assert!(
        (Duration::from_millis(1000)..=Duration::from_secs(6)).contains(&waited),
        "-TRYAGAIN came after {waited:?}; the hold timeout is about 2 s"
    );
    assert!(
        !cluster.group_master(2).exists(&key),
        "a refused request must not run"
    );
    // The connection is fine, and so is the slot after the release.
    conn.expect(&["PING"], b"+PONG\r\n");
    let release = cluster.set_slots([slot], SlotState::Normal { group: 2 });
    cluster.wait_applied(release);
    conn.expect(&["SET", key.as_str(), "v"], b"+OK\r\n");
    assert!(cluster.group_master(2).exists(&key));
}

/// Each proxy registers itself (address, admin address) and publishes the
/// topology version it has applied; a proxy started later catches up too.
#[test]
fn proxies_publish_applied_version() {
    let mut cluster = Cluster::builder().groups(2).proxies(2).build();
    cluster.wait_applied(1);
    let listed = cluster.list_proxies();
    for proxy in cluster.proxies() {
        let info = listed
            .iter()
            .find(|i| i.id == proxy.id())
            .unwrap_or_else(|| panic!("proxy {} not registered: {listed:?}", proxy.id()));
        assert_eq!(info.addr, proxy.addr());
        assert_eq!(info.admin_addr, proxy.admin_addr());
        assert_eq!(Some(info.pid), proxy.pid());
    }
    // Both proxies serve the same data.
    cluster
        .proxy(0)
        .conn()
        .expect(&["SET", "shared", "v"], b"+OK\r\n");
    cluster
        .proxy(1)
        .conn()
        .expect(&["GET", "shared"], b"$1\r\nv\r\n");
    // A change that only bumps the version is still applied and reported.
    let v2 = cluster.update_topology(|_| {});
    cluster.wait_applied(v2);
    let v3 = cluster.set_slots(1000..SLOT_COUNT, SlotState::Normal { group: 1 });
    cluster.wait_applied(v3);
    let i = cluster.start_proxy();
    cluster.wait_applied(v3);
    let mut conn = cluster.proxy(i).conn();
    let key = keys_where("late:", 1, |s| s >= 1000).remove(0);
    conn.expect(&["SET", key.as_str(), "v"], b"+OK\r\n");
    assert!(cluster.group_master(1).exists(&key));
}

/// An etcd with a single-group topology writer, for tests that start their
/// proxy before or without a `Cluster`.
struct Bare {
    etcd: EtcdServer,
    redis: RedisServer,
    runtime: tokio::runtime::Runtime,
    store: EtcdStore,
}

const BARE_CLUSTER: &str = "bare";

impl Bare {
    fn start() -> Bare {
        let etcd = EtcdServer::start();
        let redis = RedisServer::start();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let store = runtime
            .block_on(EtcdStore::connect(&[etcd.endpoint()], BARE_CLUSTER))
            .expect("connect to etcd");
        Bare {
            etcd,
            redis,
            runtime,
            store,
        }
    }

    fn write_topology(&self) {
        let mut topology = Topology {
            version: 1,
            ..Topology::default()
        };
        topology.groups.insert(
            1,
            Group {
                id: 1,
                servers: vec![self.redis.addr()],
            },
        );
        topology.slots = vec![SlotState::Normal { group: 1 }; SLOT_COUNT];
        self.runtime
            .block_on(self.store.save_topology(0, &topology))
            .expect("save topology");
    }

    fn registered(&self, id: &str) -> Option<u64> {
        let list = self.runtime.block_on(self.store.list_proxies()).unwrap();
        list.iter().find(|p| p.id == id).map(|p| p.applied_version)
    }
}

/// `/healthz` answers as soon as the process runs; `/readyz` only once a
/// topology has been loaded.
#[test]
fn readyz_waits_for_a_topology() {
    let bare = Bare::start();
    let proxy = ProxyProcess::builder(&bare.etcd.endpoint(), BARE_CLUSTER).spawn();
    for _ in 0..10 {
        assert_eq!(proxy.admin_get("/healthz").unwrap().0, 200);
        let (code, body) = proxy.admin_get("/readyz").unwrap();
        assert_eq!(
            code, 503,
            "/readyz while etcd holds no topology: {code} {body}"
        );
        thread::sleep(Duration::from_millis(100));
    }
    // Clients are not served meanwhile: refused at connect, an error, or a
    // close, but not silence.
    if let Ok(mut conn) = RespConn::try_connect(&proxy.addr()) {
        conn.send(&["SET", "k", "v"]);
        match conn.next_event(Duration::from_secs(5)) {
            Event::Closed => {}
            Event::Reply(r) if r.starts_with(b"-") => {}
            other => panic!("SET before any topology exists: {other:?}"),
        }
    }
    assert!(!bare.redis.exists("k"));

    bare.write_topology();
    proxy.wait_ready(Duration::from_secs(10));
    proxy.conn().expect(&["SET", "k", "v"], b"+OK\r\n");
    assert!(bare.redis.exists("k"));
}

/// SIGTERM: the proxy exits cleanly and its registration disappears.
#[test]
fn sigterm_exits_and_deregisters() {
    let bare = Bare::start();
    bare.write_topology();
    let proxy = ProxyProcess::builder(&bare.etcd.endpoint(), BARE_CLUSTER)
        .lease_ttl(5)
        .start();
    let registered = poll_until(Duration::from_secs(5), || {
        bare.registered(proxy.id()).filter(|&v| v >= 1)
    });
    assert!(
        registered.is_some(),
        "proxy did not register with applied_version 1"
    );
    let mut idle = proxy.conn();
    idle.expect(&["PING"], b"+PONG\r\n");

    let status = proxy.terminate();
    let status = status
        .unwrap_or_else(|| panic!("no exit within 15 s of SIGTERM\n{}", proxy.stderr_tail(30)));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        proxy.stderr_tail(30)
    );
    assert!(
        idle.wait_closed(Duration::from_secs(2)),
        "client connections are closed"
    );
    let gone = poll_until(Duration::from_secs(8), || {
        bare.registered(proxy.id()).is_none().then_some(())
    });
    assert!(gone.is_some(), "the registration outlived the proxy by 8 s");
}

/// A proxy killed with SIGKILL cannot deregister: its registration expires
/// with its lease, and the other proxy keeps serving.
#[test]
fn killed_proxy_registration_expires_with_its_lease() {
    let cluster = Cluster::builder().groups(2).proxies(0).build();
    let doomed = cluster.proxy_builder().lease_ttl(3).start();
    let survivor = cluster.proxy_builder().lease_ttl(3).start();
    let both = poll_until(Duration::from_secs(5), || {
        let ids: Vec<String> = cluster.list_proxies().into_iter().map(|p| p.id).collect();
        (ids.iter().any(|i| i == doomed.id()) && ids.iter().any(|i| i == survivor.id()))
            .then_some(())
    });
    assert!(
        both.is_some(),
        "both proxies should register: {:?}",
        cluster.list_proxies()
    );
    let mut conn = doomed.conn();
    conn.expect(&["SET", "k", "v"], b"+OK\r\n");
    doomed.kill();
    assert!(conn.wait_closed(Duration::from_secs(2)));
    let killed_at = Instant::now();
    let gone = poll_until(Duration::from_secs(10), || {
        (!cluster.list_proxies().iter().any(|p| p.id == doomed.id())).then_some(())
    });
    assert!(
        gone.is_some(),
        "a killed proxy with --lease-ttl 3 is still registered after 10 s"
    );
    eprintln!(
        "registration expired {:?} after the kill",
        killed_at.elapsed()
    );
    assert!(
        cluster.list_proxies().iter().any(|p| p.id == survivor.id()),
        "the survivor stays registered"
    );
    survivor.conn().expect(&["GET", "k"], b"$1\r\nv\r\n");
}
