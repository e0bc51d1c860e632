//! Groups, servers and slots set up through the dashboard's API, against
//! real etcd, redis-server and shardis-proxy processes: replicas really
//! replicate, assigned slots really route, and every refused call answers a
//! clear JSON error and leaves the stored topology exactly as it was.

use std::time::{Duration, Instant};

use crate::control_common::{api_error, assert_api_error, keys_in, setup};
use shardis_tests::RedisServer;

/// A write to the master is readable on the replica the API attached.
#[test]
fn servers_added_through_the_api_replicate() {
    let s = setup(&[2], 0, |b| b);
    let servers = s.servers(1);
    let (master, replica) = (&servers[0], &servers[1]);
    let mut m = master.conn();
    m.expect(&["SET", "replicated", "yes"], b"+OK\r\n");
    let deadline = Instant::now() + Duration::from_secs(10);
    while replica.cmd(&["GET", "replicated"]) != b"$3\r\nyes\r\n" {
        assert!(Instant::now() < deadline, "the replica never got the write");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The API reports the pair as Redis sees it.
    let groups = s.client().groups().unwrap();
    let g = &groups.groups[0];
    assert_eq!(g.slots, "0-1023");
    let m = g.servers[0].replication.as_ref().unwrap();
    let r = g.servers[1].replication.as_ref().unwrap();
    assert_eq!((m.role.as_str(), m.connected_replicas), ("master", 1));
    assert_eq!(r.role, "slave");
    assert_eq!(r.master.as_deref(), Some(master.addr().as_str()));
    assert_eq!(r.master_link_status.as_deref(), Some("up"));
    assert!(g.servers.iter().all(|s| s.error.is_none()), "{g:?}");
}

/// Adding servers: refusals change nothing; the same server is never listed
/// twice; a replica's data is discarded only with force.
#[test]
fn adding_servers_checks_them_first() {
    let s = setup(&[1], 0, |b| b);
    let c = s.client();
    c.create_group(2).unwrap();
    let before = s.stored();

    // A would-be master that holds keys.
    let full = RedisServer::start();
    full.conn().expect(&["SET", "old", "data"], b"+OK\r\n");
    assert_api_error(c.add_server(2, &full.addr(), false), 409, "holds 1 keys");
    // Nobody listens there; something that is not Redis listens there.
    let dead = format!("127.0.0.1:{}", shardis_tests::free_port());
    assert_api_error(c.add_server(2, &dead, false), 502, &dead);
    let not_redis = s.dash.addr();
    assert_api_error(
        c.add_server(2, &not_redis, false),
        502,
        "did not answer as a Redis server does",
    );
    // In another group already; unknown group; not an address.
    let taken = s.servers(1)[0].addr();
    assert_api_error(
        c.add_server(2, &taken, false),
        409,
        "already belongs to group 1",
    );
    assert_api_error(c.add_server(9, &full.addr(), false), 404, "unknown group 9");
    assert_api_error(c.add_server(2, "nohost", false), 400, "host:port");
    assert_eq!(s.stored(), before, "refused additions change nothing");

    // With force the keys are kept; a replica added to it gets them and
    // loses its own.
    let r = c.add_server(2, &full.addr(), true).unwrap();
    assert!(r.warnings[0].contains("kept the 1 keys"), "{r:?}");
    // The same Redis server under another name: refused, even with force.
    assert_api_error(
        c.add_server(2, &format!("localhost:{}", full.port()), true),
        409,
        "one server cannot be listed twice",
    );
    assert_api_error(
        c.add_server(
            2,
            &format!("localhost:{}", taken.rsplit(':').next().unwrap()),
            true,
        ),
        409,
        "in group 1",
    );
    // A would-be replica that holds keys: refused unless forced.
    let replica = RedisServer::start();
    replica.conn().expect(&["SET", "mine", "gone"], b"+OK\r\n");
    assert_api_error(
        c.add_server(2, &replica.addr(), false),
        409,
        "it would discard them",
    );
    let r = c.add_server(2, &replica.addr(), true).unwrap();
    assert!(r.message.contains("replica of"), "{r:?}");
    assert!(r.warnings.iter().any(|w| w.contains("discarded")), "{r:?}");
    let deadline = Instant::now() + Duration::from_secs(15);
    while replica.cmd(&["GET", "old"]) != b"$4\r\ndata\r\n" {
        assert!(Instant::now() < deadline, "the replica never synced");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!replica.exists("mine"));
    assert_eq!(
        s.stored().groups[&2].servers,
        vec![full.addr(), replica.addr()]
    );

    // Removing: the master with a replica must wait for a promotion; the
    // replica is detached and keeps its copy.
    let before = s.stored();
    assert_api_error(
        c.remove_server(2, &full.addr()),
        409,
        "promote another server first",
    );
    assert_api_error(c.remove_server(2, &taken), 404, "not in group 2");
    assert_eq!(s.stored(), before);
    c.remove_server(2, &replica.addr()).unwrap();
    let info = replica
        .conn()
        .reply(&["INFO", "replication"])
        .text()
        .unwrap();
    assert!(info.contains("role:master"), "{info}");
    assert!(replica.exists("old"));
}

/// Slots assigned through the API route through a running proxy.
#[test]
fn assigned_slots_route_through_a_proxy() {
    let s = setup(&[1, 1], 1, |b| b);
    let mut conn = s.proxies[0].conn();
    let low = keys_in("low:", 20, 0..512);
    let high = keys_in("high:", 20, 512..1024);
    for k in low.iter().chain(&high) {
        conn.expect(&["SET", k.as_str(), "v"], b"+OK\r\n");
    }
    for k in &low {
        assert!(s.servers(1)[0].exists(k), "{k} should be on group 1");
        assert!(!s.servers(2)[0].exists(k), "{k} should not be on group 2");
    }
    for k in &high {
        assert!(s.servers(2)[0].exists(k), "{k} should be on group 2");
    }
    let slots = s.client().slots().unwrap();
    assert_eq!(slots.slots.len(), 1024);
    assert_eq!(slots.slots[511].group, Some(1));
    assert_eq!(slots.slots[512].group, Some(2));
    let proxies = s.client().proxies().unwrap();
    assert_eq!(proxies.proxies.len(), 1);
    let p = &proxies.proxies[0];
    assert!(p.healthy, "{p:?}");
    assert!(!p.lagging, "{p:?}");
    assert_eq!(p.applied_version, proxies.version);
}

/// Bad slot ranges, assigned slots, a stale version: JSON errors, nothing changed.
#[test]
fn refused_slot_assignments_and_stale_changes_change_nothing() {
    let s = setup(&[1], 0, |b| b);
    let c = s.client();
    c.create_group(2).unwrap();
    c.add_server(2, &RedisServer::start().addr(), false)
        .unwrap();
    let before = s.stored();
    assert_api_error(c.assign_slots("0-5,3", 2), 400, "appears twice");
    assert_api_error(c.assign_slots("1000-1024", 2), 400, "out of range");
    assert_api_error(c.assign_slots("100-200", 2), 409, "already assigned");
    assert_api_error(c.assign_slots("100", 7), 404, "unknown group 7");
    assert_api_error(c.delete_group(1), 409, "still owns slots 0-1023");
    assert_eq!(s.stored(), before);

    // A change based on an old version is refused, one on the current one passes.
    let stale = c.clone().if_version(Some(before.version - 1));
    let (status, text) = api_error(stale.create_group(3));
    assert_eq!(status, 409);
    assert!(text.contains("stale version"), "{text}");
    assert_eq!(s.stored(), before);
    let current = c.clone().if_version(Some(before.version));
    let r = current.create_group(3).unwrap();
    assert_eq!(r.version, before.version + 1);
}

/// `shardis status` prints readable tables; errors go to stderr with exit 1.
#[test]
fn shardis_status_prints_groups_slots_servers_and_proxies() {
    let s = setup(&[2, 1], 1, |b| b);
    let out = s.dash.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let version = s.stored().version;
    assert!(
        text.contains(&format!("topology version {version}")) && text.contains("(leader)"),
        "{text}"
    );
    let m1 = s.servers(1)[0].addr();
    let r1 = s.servers(1)[1].addr();
    let line = |needle: &str| {
        text.lines()
            .find(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{text}"))
            .to_string()
    };
    assert!(line("GROUP").contains("SLOTS") && line("GROUP").contains("LINK"));
    let master_line = line(&m1);
    assert!(
        master_line.starts_with("1 ") && master_line.contains("0-511"),
        "{master_line}"
    );
    assert!(master_line.contains("master"), "{master_line}");
    let replica_line = line(&r1);
    assert!(
        replica_line.contains("replica") && replica_line.contains("slave"),
        "{replica_line}"
    );
    assert!(replica_line.contains(&format!("{m1} up")), "{replica_line}");
    assert!(line(&s.servers(2)[0].addr()).contains("512-1023"));
    assert!(text.contains("unassigned slots: none"), "{text}");
    let proxy_line = line(s.proxies[0].id());
    assert!(proxy_line.contains(&s.proxies[0].addr()), "{proxy_line}");
    assert!(proxy_line.contains(&format!(" {version} ")), "{proxy_line}");
    assert!(proxy_line.contains("ready"), "{proxy_line}");

    // --json is the API's overview.
    let out = s.dash.cli(&["--json", "status"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["version"], version);
    assert_eq!(json["groups"][0]["slots"], "0-511");

    // The other subcommands.
    let out = s.dash.cli(&["slots"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("0-511") && text.contains("512-1023"),
        "{text}"
    );
    let out = s.dash.cli(&["group", "add", "3"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("group 3 created"));

    // An API error: its text on stderr, exit status 1, nothing on stdout.
    let out = s.dash.cli(&["group", "add", "3"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("group 3 already exists") && err.contains("409"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
    let out = s.dash.cli(&["slots", "assign", "0-10", "3"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("has no servers"));
}

/// Servers behind a password: the dashboard's own credentials reach them and
/// are given to replicas as masterauth; etcd never sees the password.
#[test]
fn password_protected_servers_replicate_with_the_dashboards_credentials() {
    const PASSWORD: &str = "backend-secret-6d1f";
    let etcd = shardis_tests::EtcdServer::start();
    let cluster = crate::control_common::cluster_name();
    let dash = shardis_tests::dashboard::DashboardProcess::builder(&etcd.endpoint(), &cluster)
        .backend_password(PASSWORD)
        .start();
    dash.wait_leader();
    let master = RedisServer::builder().password(PASSWORD).start();
    let replica = RedisServer::builder().password(PASSWORD).start();
    let c = dash.client();
    c.create_group(1).unwrap();
    c.add_server(1, &master.addr(), false).unwrap();
    c.add_server(1, &replica.addr(), false).unwrap();
    master.conn().expect(&["SET", "k", "v"], b"+OK\r\n");
    let deadline = Instant::now() + Duration::from_secs(15);
    while replica.cmd(&["GET", "k"]) != b"$1\r\nv\r\n" {
        assert!(
            Instant::now() < deadline,
            "the replica never authenticated to its master"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let everything = etcd.etcdctl(&["get", "--prefix", &format!("/shardis/{cluster}/")]);
    assert!(everything.contains(&master.addr()), "{everything}");
    assert!(
        !everything.contains(PASSWORD),
        "the password leaked into etcd: {everything}"
    );

    // Without the credentials the server cannot be asked: a clear 502.
    let other = shardis_tests::dashboard::DashboardProcess::builder(
        &etcd.endpoint(),
        &format!("{cluster}-x"),
    )
    .start();
    other.wait_leader();
    other.client().create_group(1).unwrap();
    let (status, text) = api_error(other.client().add_server(1, &master.addr(), true));
    assert_eq!(status, 502, "{text}");
    assert!(text.contains(&master.addr()), "{text}");
}
