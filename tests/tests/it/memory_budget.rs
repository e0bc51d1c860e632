//! The global memory budget: many clients sending huge bulks cannot take the
//! proxy's memory past it; the ones that do not fit get an error, everyone
//! else keeps working, and everything is released when they leave.

use std::io::Write;
use std::net::TcpStream;
use std::thread;
use std::time::Duration;

use shardis_tests::Cluster;

fn budget_used(cluster: &Cluster) -> u64 {
    let (code, body) = cluster
        .proxy(0)
        .admin_get("/api/v1/stats")
        .expect("admin answers");
    assert_eq!(code, 200);
    let v: serde_json::Value = serde_json::from_str(&body).expect("stats JSON");
    v["memory_budget"]["used"].as_u64().expect("used")
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    let kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .expect("VmRSS");
    kb / 1024
}

#[test]
fn huge_bulks_from_many_clients_stay_within_the_budget() {
    let cluster = Cluster::builder()
        .groups(2)
        .proxy_arg("--memory-budget-mb")
        .proxy_arg("64")
        .build();
    let pid = cluster.proxy(0).pid().expect("proxy running");
    let chunk = vec![b'x'; 1 << 20];
    // 20 clients each announce a 512 MiB value and send 16 MiB of it: 320 MiB
    // wanted, 64 MiB allowed.
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut s = TcpStream::connect(cluster.proxy(0).addr()).expect("connect");
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(format!("*3\r\n$3\r\nSET\r\n$6\r\nbig:{i:02}\r\n$536870912\r\n").as_bytes())
            .unwrap();
        for _ in 0..16 {
            if s.write_all(&chunk).is_err() {
                break; // refused and closed by the proxy
            }
        }
        clients.push(s);
    }
    thread::sleep(Duration::from_millis(500));
    // Everyone else is served meanwhile.
    let mut c = cluster.conn(0);
    assert_eq!(c.cmd_text(&["SET", "small", "1"]), "+OK\r\n");
    assert_eq!(c.cmd_text(&["GET", "small"]), "$1\r\n1\r\n");
    assert!(budget_used(&cluster) <= 64 << 20, "budget overrun");
    let rss = rss_mib(pid);
    assert!(rss < 64 + 80, "proxy RSS {rss} MiB with a 64 MiB budget");

    drop(clients);
    let start = std::time::Instant::now();
    while budget_used(&cluster) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "budget not released"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(c.cmd_text(&["PING"]), "+PONG\r\n");
}
