//! Backend failures: a dead master makes its slots fail fast with an error
//! while other groups keep working, and its recovery is noticed by itself.

use std::thread;
use std::time::{Duration, Instant};

use shardis_tests::{escape, poll_until, Cluster, RespConn};

/// SIGKILL group 1's master: its keys fail in under a second with an error
/// reply, group 2's keys keep working, and after a restart on the same port
/// group 1 works again within a few seconds.
#[test]
fn killed_master_fails_fast_and_recovers() {
    let cluster = Cluster::builder().groups(2).build();
    let k1 = cluster.keys_of_group(1, "dead:", 3);
    let k2 = cluster.keys_of_group(2, "alive:", 1).remove(0);
    let mut conn = cluster.proxy(0).conn();
    for k in k1.iter().chain([&k2]) {
        conn.expect(&["SET", k.as_str(), "v"], b"+OK\r\n");
    }

    cluster.group_master(1).kill();
    for round in 0..5 {
        for k in &k1 {
            let t = Instant::now();
            let reply = conn.cmd(&["GET", k.as_str()]);
            let took = t.elapsed();
            assert!(
                reply.starts_with(b"-"),
                "round {round}: GET {k} on a dead group should be an error, got {}",
                escape(&reply)
            );
            assert!(
                took < Duration::from_secs(1),
                "round {round}: error took {took:?}"
            );
            let t = Instant::now();
            conn.expect(&["GET", k2.as_str()], b"$1\r\nv\r\n");
            assert!(
                t.elapsed() < Duration::from_millis(500),
                "group 2 slowed down"
            );
        }
        // A fan-out touching the dead group fails as a whole, also fast.
        let t = Instant::now();
        let reply = conn.cmd(&["MGET", k2.as_str(), k1[0].as_str()]);
        assert!(
            reply.starts_with(b"-"),
            "MGET over a dead group: {}",
            escape(&reply)
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "MGET error took {:?}",
            t.elapsed()
        );
        // A new connection is served too.
        let mut fresh = cluster.proxy(0).conn();
        fresh.expect(&["PING"], b"+PONG\r\n");
        fresh.expect(&["EXISTS", k2.as_str()], b":1\r\n");
        thread::sleep(Duration::from_millis(100));
    }

    cluster.group_master(1).restart();
    let started = Instant::now();
    let recovered = poll_until(Duration::from_secs(10), || {
        (conn.cmd(&["SET", k1[0].as_str(), "again"]) == b"+OK\r\n").then_some(())
    });
    assert!(
        recovered.is_some(),
        "group 1 is back but the proxy still fails its commands after 10 s\n{}",
        cluster.proxy_logs()
    );
    eprintln!("recovered after {:?}", started.elapsed());
    conn.expect(&["GET", k1[0].as_str()], b"$5\r\nagain\r\n");
    // The restarted master lost its data (no persistence): the other keys are gone.
    conn.expect(&["GET", k1[1].as_str()], b"$-1\r\n");
    conn.expect(
        &["MGET", k1[0].as_str(), k2.as_str()],
        b"*2\r\n$5\r\nagain\r\n$1\r\nv\r\n",
    );
    assert!(cluster.proxy(0).is_running());
}

/// A master that hangs (SIGSTOP) does not hold up other groups, not even for
/// other clients while its own requests wait.
#[test]
fn paused_master_does_not_block_other_groups() {
    let cluster = Cluster::builder().groups(2).build();
    let k1 = cluster.keys_of_group(1, "slow:", 1).remove(0);
    let k2 = cluster.keys_of_group(2, "fast:", 1).remove(0);
    let mut conn = cluster.proxy(0).conn();
    conn.expect(&["SET", k1.as_str(), "1"], b"+OK\r\n");
    conn.expect(&["SET", k2.as_str(), "2"], b"+OK\r\n");

    cluster.group_master(1).pause();
    let addr = cluster.proxy(0).addr();
    let stuck = {
        let k1 = k1.clone();
        thread::spawn(move || {
            let mut c = RespConn::connect(&addr);
            c.set_timeout(Duration::from_secs(30));
            c.cmd(&["GET", k1.as_str()])
        })
    };
    thread::sleep(Duration::from_millis(200));
    for _ in 0..20 {
        let t = Instant::now();
        conn.expect(&["GET", k2.as_str()], b"$1\r\n2\r\n");
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "group 2 took {:?} while group 1 hangs",
            t.elapsed()
        );
    }
    cluster.group_master(1).resume();
    let reply = stuck.join().expect("stuck client");
    // Either the request waited and was answered, or the proxy gave up with an
    // error (a backend timeout): both are fine, silence is not.
    assert!(
        reply == b"$1\r\n1\r\n" || reply.starts_with(b"-"),
        "GET on a paused-then-resumed master: {}",
        escape(&reply)
    );
    let ok = poll_until(Duration::from_secs(5), || {
        (conn.cmd(&["GET", k1.as_str()]) == b"$1\r\n1\r\n").then_some(())
    });
    assert!(ok.is_some(), "group 1 does not answer after SIGCONT");
}

/// Failover by topology: group 1's master dies, its replica is promoted and
/// the topology lists the replica as master; the running proxy follows.
#[test]
fn replaced_master_is_picked_up() {
    let cluster = Cluster::builder().groups(2).replicas(1).build();
    let keys = cluster.keys_of_group(1, "fo:", 5);
    let mut conn = cluster.proxy(0).conn();
    for k in &keys {
        conn.expect(&["SET", k.as_str(), "v"], b"+OK\r\n");
    }
    let replica = &cluster.group_servers(1)[1];
    let synced = poll_until(Duration::from_secs(5), || {
        (replica.dbsize() == keys.len() as i64).then_some(())
    });
    assert!(synced.is_some(), "the replica did not catch up");

    cluster.group_master(1).kill();
    replica
        .conn()
        .expect(&["REPLICAOF", "NO", "ONE"], b"+OK\r\n");
    let version = cluster.update_topology(|t| {
        let group = t.groups.get_mut(&1).expect("group 1");
        group.servers = vec![replica.addr()];
    });
    cluster.wait_applied(version);
    let t = Instant::now();
    let served = poll_until(Duration::from_secs(5), || {
        (conn.cmd(&["GET", keys[0].as_str()]) == b"$1\r\nv\r\n").then_some(())
    });
    assert!(
        served.is_some(),
        "the proxy does not read from the new master\n{}",
        cluster.proxy_logs()
    );
    eprintln!(
        "new master served {:?} after the proxy applied the change",
        t.elapsed()
    );
    for k in &keys {
        conn.expect(&["GET", k.as_str()], b"$1\r\nv\r\n");
        conn.expect(&["SET", k.as_str(), "w"], b"+OK\r\n");
    }
    assert_eq!(replica.cmd(&["GET", keys[0].as_str()]), b"$1\r\nw\r\n");
}
