//! Self-fencing: a proxy that cannot renew its etcd lease stops serving before
//! the lease can have expired on etcd's side, and serves again (under a new
//! lease) once etcd answers.

use std::time::{Duration, Instant};

use shardis_tests::Cluster;

fn get(cluster: &Cluster) -> String {
    let mut c = cluster.conn(0);
    c.cmd_text(&["GET", "fence:k"])
}

#[test]
fn a_proxy_cut_off_from_etcd_fences_itself_then_recovers() {
    let cluster = Cluster::builder()
        .groups(2)
        .proxies(1)
        .proxy_arg("--lease-ttl")
        .proxy_arg("3")
        .build();
    let mut c = cluster.conn(0);
    assert_eq!(c.cmd_text(&["SET", "fence:k", "v"]), "+OK\r\n");
    let lease_before = cluster.list_proxies()[0].lease;

    cluster.etcd().pause();
    let cut = Instant::now();
    // TTL 3 s: the proxy must refuse before 3 s have passed since its last
    // acknowledged keep-alive, so certainly within 3 s of the cut.
    let fenced_at = loop {
        let reply = get(&cluster);
        if reply.starts_with("-TRYAGAIN") {
            break cut.elapsed();
        }
        assert_eq!(reply, "$1\r\nv\r\n");
        assert!(
            cut.elapsed() < Duration::from_secs(3),
            "still serving 3 s after etcd stopped answering"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(fenced_at < Duration::from_secs(3), "{fenced_at:?}");
    let (code, body) = cluster
        .proxy(0)
        .admin_get("/readyz")
        .expect("admin answers");
    assert_eq!(code, 503, "{body}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(get(&cluster).starts_with("-TRYAGAIN"));

    cluster.etcd().resume();
    let start = Instant::now();
    loop {
        if get(&cluster) == "$1\r\nv\r\n" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the proxy did not serve again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Registered again, under a new lease, with its applied version.
    let start = Instant::now();
    loop {
        let proxies = cluster.list_proxies();
        if proxies.len() == 1 && proxies[0].lease != lease_before && proxies[0].applied_version == 1
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "{proxies:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}
