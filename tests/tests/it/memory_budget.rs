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

/// Waits (up to 5 s) until nothing is charged to the budget any more.
fn wait_budget_released(cluster: &Cluster) {
    let start = std::time::Instant::now();
    while budget_used(cluster) != 0 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "budget not released"
        );
        thread::sleep(Duration::from_millis(50));
    }
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
    wait_budget_released(&cluster);
    assert_eq!(c.cmd_text(&["PING"]), "+PONG\r\n");
}

/// Connects `n` clients that each pipeline `gets` GETs of `key` and never
/// read a reply (each writes for up to 3 s).
fn non_readers(cluster: &Cluster, key: &str, n: usize, gets: usize) -> Vec<TcpStream> {
    let requests = shardis_tests::encode_command(&["GET", key]).repeat(gets);
    (0..n)
        .map(|_| {
            let mut s = TcpStream::connect(cluster.proxy(0).addr()).expect("connect");
            s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(&requests);
            s
        })
        .collect()
}

/// Reads a connection until the proxy closes it or sends nothing for 3 s;
/// how many bytes came, and whether it was closed.
fn drain(mut s: TcpStream) -> (usize, bool) {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = vec![0; 1 << 20];
    let mut total = 0;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return (total, true),
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return (total, true),
            Err(_) => return (total, false),
        }
    }
}

/// A client that pipelines GETs of a 1 MiB value and does not read the
/// replies is throttled: a few of its requests at a time go to the shared
/// backend connection, and no more once 64 MiB of its replies wait, so the
/// proxy's memory stays bounded and other clients of the same server are
/// served meanwhile; when it reads, it gets every reply, in order. Over the
/// global budget, such clients are closed instead (as Redis closes clients
/// over `maxmemory-clients`), and replies still due to them are dropped.
#[test]
fn clients_that_do_not_read_big_replies_are_throttled_or_closed() {
    let cluster = Cluster::builder()
        .groups(1)
        .proxy_arg("--memory-budget-mb")
        .proxy_arg("384")
        .build();
    let pid = cluster.proxy(0).pid().expect("proxy running");
    let mut c = cluster.conn(0);
    let value = "x".repeat(1 << 20);
    assert_eq!(c.cmd_text(&["SET", "v1m", value.as_str()]), "+OK\r\n");
    let reply_len = value.len() + 12;
    let rss_before = rss_mib(pid);
    let witness = |c: &mut shardis_tests::RespConn, peak: &mut u64| {
        for _ in 0..15 {
            let t = std::time::Instant::now();
            assert_eq!(c.cmd_text(&["GET", "v1m"]).len(), reply_len);
            assert!(
                t.elapsed() < Duration::from_secs(1),
                "GET took {:?}",
                t.elapsed()
            );
            *peak = (*peak).max(rss_mib(pid));
            thread::sleep(Duration::from_millis(100));
        }
    };

    // One client: 1,500 MiB asked for, about 64 MiB held for it.
    let mut peak = 0;
    let mut hog = non_readers(&cluster, "v1m", 1, 1500).remove(0);
    witness(&mut c, &mut peak);
    assert!(
        peak < rss_before + 450,
        "proxy RSS peaked at {peak} MiB (from {rss_before})"
    );
    assert!(budget_used(&cluster) <= 384 << 20);
    {
        use std::io::Read;
        hog.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut got = vec![0; 1500 * reply_len];
        hog.read_exact(&mut got).expect("every reply");
        for reply in got.chunks(reply_len) {
            assert!(reply.starts_with(b"$1048576\r\nxxx"));
        }
    }
    drop(hog);

    // Six at once hold more than the 384 MiB budget: closed.
    let hogs = non_readers(&cluster, "v1m", 6, 300);
    witness(&mut c, &mut peak);
    let mut closed = 0;
    for hog in hogs {
        // Closed early, or else served in full once it reads.
        match drain(hog) {
            (read, true) => {
                assert!(read < 300 * reply_len, "closed after every reply");
                closed += 1;
            }
            (read, false) => assert_eq!(read, 300 * reply_len),
        }
    }
    assert!(closed >= 1, "no client over the budget was closed");
    // The budget counts buffers and replies, not the allocator's own
    // overhead or the backends' read buffers.
    assert!(
        peak < rss_before + 900,
        "proxy RSS peaked at {peak} MiB (from {rss_before})"
    );
    wait_budget_released(&cluster);
    assert_eq!(c.cmd_text(&["PING"]), "+PONG\r\n");
}
