//! The fixtures themselves, without a proxy: servers start on free ports, can
//! be killed, restarted, paused, and the cluster's topology is written to etcd.

use std::time::{Duration, Instant};

use shardis_tests::{free_port, Cluster, EtcdServer, Event, RedisServer, RespConn};
use shardis_topology::{slot_of, SlotState, SLOT_COUNT};

#[test]
fn free_ports_are_distinct_and_not_defaults() {
    let ports: Vec<u16> = (0..200).map(|_| free_port()).collect();
    let unique: std::collections::HashSet<_> = ports.iter().collect();
    assert_eq!(unique.len(), ports.len());
    assert!(ports.iter().all(|p| ![6379, 2379, 2380].contains(p)));
}

#[test]
fn redis_server_lifecycle() {
    let server = RedisServer::start();
    let mut conn = server.conn();
    conn.expect(&["SET", "k", "v"], b"+OK\r\n");
    assert!(server.exists("k"));
    assert_eq!(server.dbsize(), 1);
    let mut client = server.client();
    let v: String = redis::cmd("GET").arg("k").query(&mut client).unwrap();
    assert_eq!(v, "v");

    // Paused: connected clients get nothing until it resumes.
    server.pause();
    conn.send(&["PING"]);
    assert_eq!(conn.next_event(Duration::from_millis(300)), Event::Silent);
    server.resume();
    assert_eq!(conn.read_raw(), b"+PONG\r\n");

    // Killed: connections break, the port refuses. Restarted: same port, no data.
    let port = server.port();
    server.kill();
    assert!(!server.is_running());
    assert!(conn.wait_closed(Duration::from_secs(2)));
    assert!(RespConn::try_connect(&server.addr()).is_err());
    server.restart();
    assert_eq!(server.port(), port);
    assert!(!server.exists("k"));
    assert!(server.log_tail().contains("Ready to accept connections"));
}

#[test]
fn redis_server_with_password_and_replica() {
    let master = RedisServer::builder().password("pw").start();
    let reply = RespConn::connect(&master.addr()).cmd(&["GET", "k"]);
    assert!(reply.starts_with(b"-NOAUTH"));
    master.conn().expect(&["SET", "k", "v"], b"+OK\r\n");
    let replica = RedisServer::builder().password("pw").start();
    replica.replicaof(&master);
    let synced =
        shardis_tests::poll_until(Duration::from_secs(5), || replica.exists("k").then_some(()));
    assert!(synced.is_some());
}

#[test]
fn etcd_server_starts_and_dies() {
    let etcd = EtcdServer::start();
    assert!(etcd.endpoint().starts_with("http://127.0.0.1:"));
    etcd.etcdctl(&["put", "/x", "1"]);
    assert!(etcd.etcdctl(&["get", "/x"]).contains('1'));
    etcd.kill();
    assert!(shardis_tests::http_get(
        &format!("127.0.0.1:{}", etcd.client_port()),
        "/health",
        Duration::from_secs(1)
    )
    .is_err());
}

#[test]
fn cluster_topology_without_proxies() {
    let started = Instant::now();
    let cluster = Cluster::builder().groups(3).replicas(1).proxies(0).build();
    eprintln!("3 groups with replicas up in {:?}", started.elapsed());
    let t = cluster.load_topology();
    assert_eq!(t.version, 1);
    assert_eq!(t, cluster.topology());
    assert_eq!(t.groups.len(), 3);
    for id in 1..=3 {
        assert_eq!(t.groups[&id].servers.len(), 2);
        assert_eq!(t.groups[&id].servers[0], cluster.group_master(id).addr());
    }
    // Contiguous, even ranges: group 1 first.
    assert_eq!(t.slot(0), SlotState::Normal { group: 1 });
    assert_eq!(t.slot(SLOT_COUNT - 1), SlotState::Normal { group: 3 });
    assert_eq!(t.ranges_of(1), "0-341");
    assert_eq!(t.ranges_of(2), "342-682");
    assert_eq!(t.ranges_of(3), "683-1023");
    assert_eq!(slot_of(b"foo"), 289);
    assert_eq!(cluster.owner_of("foo"), 1);

    let v = cluster.set_slots([289], SlotState::Normal { group: 2 });
    assert_eq!(v, 2);
    assert_eq!(cluster.owner_of("foo"), 2);
    assert_eq!(
        cluster.load_topology().slot(289),
        SlotState::Normal { group: 2 }
    );
    // No proxies: nothing to wait for.
    cluster.wait_applied(2);
    assert!(cluster.list_proxies().is_empty());
    let keys = cluster.keys_of_group(3, "k", 5);
    assert!(keys.iter().all(|k| cluster.owner_of(k) == 3));
}
