//! Hostile and broken clients: each malformed input gets an error reply or a
//! closed connection for that client only, while another client keeps working
//! and the proxy stays up.

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardis_tests::{escape_short, Cluster, Event, RespConn};

/// How long a hostile client waits for the proxy's verdict.
const VERDICT: Duration = Duration::from_secs(5);

/// A well-behaved client with a key in each group, checked between cases.
struct Witness {
    conn: RespConn,
    keys: Vec<String>,
    round: usize,
}

impl Witness {
    fn new(cluster: &Cluster) -> Witness {
        let keys = vec![
            cluster.keys_of_group(1, "w:", 1).remove(0),
            cluster.keys_of_group(2, "w:", 1).remove(0),
        ];
        Witness {
            conn: cluster.proxy(0).conn(),
            keys,
            round: 0,
        }
    }

    #[track_caller]
    fn still_works(&mut self, after: &str) {
        self.round += 1;
        let value = self.round.to_string();
        let reply = self.conn.cmd(&["PING"]);
        assert_eq!(reply, b"+PONG\r\n", "the other client broke after {after}");
        for key in &self.keys {
            self.conn.expect(&["SET", key.as_str(), &value], b"+OK\r\n");
            let want = format!("${}\r\n{value}\r\n", value.len());
            self.conn.expect(&["GET", key.as_str()], want.as_bytes());
        }
    }
}

/// Sends `input` on a new connection: the proxy must answer with an error or
/// close the connection (not answer normally, not stay silent).
#[track_caller]
fn error_or_close(cluster: &Cluster, name: &str, input: &[u8]) {
    let mut bad = cluster.proxy(0).conn();
    // A proxy that closes while we still write may reset the connection: fine.
    let _ = bad.try_send_raw(input);
    match bad.next_event(VERDICT) {
        Event::Closed => eprintln!("{name}: closed"),
        Event::Reply(reply) if reply.starts_with(b"-") => {
            eprintln!("{name}: {}", escape_short(&reply, 120));
        }
        Event::Reply(reply) => panic!(
            "{name}: expected an error or a closed connection, got {}",
            escape_short(&reply, 300)
        ),
        Event::Silent => panic!("{name}: the proxy neither answered nor closed within {VERDICT:?}"),
    }
}

#[test]
fn malformed_input_is_refused_per_connection() {
    let cluster = Cluster::builder().groups(2).build();
    let mut witness = Witness::new(&cluster);
    witness.still_works("start");

    let mut rng = StdRng::seed_from_u64(0xbad);
    let mut garbage: Vec<u8> = (0..512)
        .map(|_| loop {
            let b: u8 = rng.random();
            if b != b'\r' && b != b'\n' {
                break b;
            }
        })
        .collect();
    garbage[0] = 0x01; // not '*': an inline line of binary garbage
    garbage.extend_from_slice(b"\r\n");

    let nested: Vec<u8> = b"*1\r\n".repeat(100_000);
    let mut long_inline = vec![b'A'; 100 * 1024];
    long_inline.extend_from_slice(b"\r\n");
    let endless_inline = vec![b'B'; 1024 * 1024];

    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("negative bulk length", b"*1\r\n$-5\r\n".to_vec()),
        (
            "negative bulk length for an argument",
            b"*2\r\n$3\r\nGET\r\n$-2\r\n".to_vec(),
        ),
        ("huge array length", b"*999999999999\r\n".to_vec()),
        (
            "overflowing array length",
            b"*99999999999999999999999999\r\n".to_vec(),
        ),
        ("huge bulk length", b"*1\r\n$999999999999\r\n".to_vec()),
        (
            "bulk over 512 MB",
            b"*2\r\n$3\r\nGET\r\n$600000000\r\n".to_vec(),
        ),
        ("non-numeric array length", b"*abc\r\n".to_vec()),
        ("non-numeric bulk length", b"*1\r\n$x1\r\n".to_vec()),
        ("integer instead of bulk", b"*1\r\n:5\r\n".to_vec()),
        (
            "simple string instead of bulk",
            b"*2\r\n+GET\r\n+k\r\n".to_vec(),
        ),
        ("bulk without CRLF", b"*1\r\n$4\r\nPINGxx\r\n".to_vec()),
        ("binary garbage inline", garbage),
        ("binary garbage after *", b"*\x00\xff\xfe\r\n".to_vec()),
        ("deeply nested arrays", nested),
        (
            "HTTP request",
            b"GET / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: curl\r\n\r\n".to_vec(),
        ),
        (
            "HTTP POST",
            b"POST /x HTTP/1.1\r\nHost: localhost\r\nContent-Length: 3\r\n\r\nabc".to_vec(),
        ),
        ("100 KB inline line", long_inline),
        ("1 MB inline without newline", endless_inline),
        ("unbalanced quotes inline", b"SET k \"abc\r\n".to_vec()),
        ("empty command name", b"*1\r\n$0\r\n\r\n".to_vec()),
        (
            "RESP3 map as a request",
            b"%1\r\n$1\r\na\r\n$1\r\nb\r\n".to_vec(),
        ),
    ];
    for (name, input) in &cases {
        error_or_close(&cluster, name, input);
        witness.still_works(name);
        assert!(cluster.proxy(0).is_running(), "the proxy died on {name}");
    }

    // Empty and negative multibulks are no-ops in Redis: accept a no-op, an
    // error or a close, but never a broken session for someone else.
    for input in [&b"*0\r\n"[..], b"*-1\r\n", b"\r\n\r\n", b"*-5\r\n"] {
        let mut c = cluster.proxy(0).conn();
        let _ = c.try_send_raw(input);
        let _ = c.try_send_raw(b"PING\r\n");
        match c.next_event(VERDICT) {
            Event::Closed => {}
            Event::Reply(r) if r == b"+PONG\r\n" || r.starts_with(b"-") => {}
            other => panic!("{}: then PING gave {other:?}", escape_short(input, 40)),
        }
        witness.still_works(&escape_short(input, 40));
    }

    // Half a frame, then close; and half a frame left open.
    let mut half = cluster.proxy(0).conn();
    half.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\n");
    drop(half);
    witness.still_works("half a frame then close");
    let mut dangling = cluster.proxy(0).conn();
    dangling.send_raw(b"*2\r\n$3\r\nGET\r\n$100\r\nabc");
    witness.still_works("half a frame left open");
    let mut half_bulk = cluster.proxy(0).conn();
    half_bulk.send_raw(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100000000\r\n");
    half_bulk.send_raw(&[b'x'; 4096]);
    drop(half_bulk);
    witness.still_works("100 MB bulk announced, 4 KB sent, then close");
    drop(dangling);

    // After all that, the proxy is healthy and takes new clients.
    assert_eq!(cluster.proxy(0).admin_get("/healthz").unwrap().0, 200);
    let mut fresh = cluster.proxy(0).conn();
    fresh.expect(&["PING"], b"+PONG\r\n");
    witness.still_works("the end");
}

/// A client that pipelines big replies and never reads them must not stall
/// anybody else.
#[test]
fn slow_reader_does_not_block_others() {
    let cluster = Cluster::builder().groups(2).build();
    let mut witness = Witness::new(&cluster);
    let big = cluster.keys_of_group(1, "big:", 1).remove(0);
    let value = "x".repeat(256 * 1024);
    witness
        .conn
        .expect(&["SET", big.as_str(), value.as_str()], b"+OK\r\n");

    let mut hog = cluster.proxy(0).conn();
    let get = shardis_tests::encode_command(&["GET", big.as_str()]);
    // 400 x 256 KB = 100 MB of replies nobody reads; the socket fills and the
    // writes stall, so write from a thread and give up after a while.
    let requests = get.repeat(400);
    let writer = {
        let mut stream = hog.stream().try_clone().unwrap();
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        std::thread::spawn(move || {
            use std::io::Write;
            let _ = stream.write_all(&requests);
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    for i in 0..20 {
        let t = Instant::now();
        witness.still_works("a client that does not read");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "round {i} took {:?}",
            t.elapsed()
        );
    }
    if let Some(pid) = cluster.proxy(0).pid() {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let rss = status
            .lines()
            .find(|l| l.starts_with("VmRSS"))
            .unwrap_or("VmRSS: ?");
        eprintln!("proxy memory with an unread 100 MB of replies: {rss}");
    }
    writer.join().unwrap();
    // The hog can still read what it asked for, in order.
    hog.set_timeout(Duration::from_secs(20));
    let first = hog.read_raw();
    assert_eq!(
        first.len(),
        value.len() + format!("${}\r\n\r\n", value.len()).len()
    );
    drop(hog);
    witness.still_works("the hog left");
}

/// `--max-clients`: the connection over the limit is refused (an error and/or
/// a close); the others keep working, and a freed place can be taken again.
#[test]
fn max_clients_limit() {
    let cluster = Cluster::builder()
        .groups(2)
        .proxy_arg("--max-clients")
        .proxy_arg("5")
        .build();
    let mut conns: Vec<RespConn> = (0..5).map(|_| cluster.proxy(0).conn()).collect();
    for c in &mut conns {
        c.expect(&["PING"], b"+PONG\r\n");
    }
    let mut extra = cluster.proxy(0).conn();
    let _ = extra.try_send_raw(b"PING\r\n");
    match extra.next_event(VERDICT) {
        Event::Closed => {}
        Event::Reply(r) if r.starts_with(b"-ERR") => {
            assert!(
                extra.wait_closed(VERDICT),
                "the refused client is not closed"
            );
        }
        other => panic!("the 6th client with --max-clients 5 got {other:?}"),
    }
    for c in &mut conns {
        c.expect(&["PING"], b"+PONG\r\n");
    }
    conns.pop();
    let ok = shardis_tests::poll_until(Duration::from_secs(5), || {
        let mut c = cluster.proxy(0).conn();
        let _ = c.try_send_raw(b"PING\r\n");
        (c.next_event(Duration::from_secs(1)) == Event::Reply(b"+PONG\r\n".to_vec())).then_some(())
    });
    assert!(
        ok.is_some(),
        "a freed client place was not given to a new client"
    );
}

/// Clients that vanish with requests in flight (backend connections are
/// shared) must not leave replies behind that another client then receives.
#[test]
fn abrupt_disconnects_do_not_mix_replies() {
    let cluster = Cluster::builder().groups(2).build();
    let addr = cluster.proxy(0).addr();
    let keys: Vec<String> = (0..20).map(|i| format!("mix:{i}")).collect();
    {
        let mut conn = cluster.proxy(0).conn();
        for k in &keys {
            conn.expect(&["SET", k.as_str(), k.as_str()], b"+OK\r\n");
        }
    }
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let vandals: Vec<_> = (0..3)
        .map(|v| {
            let addr = addr.clone();
            let keys = keys.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut c) = RespConn::try_connect(&addr) else {
                        continue;
                    };
                    let mut bytes = Vec::new();
                    for i in 0..50 {
                        let k = &keys[(i + v + n) % keys.len()];
                        bytes.extend(shardis_tests::encode_command(&[
                            "MGET",
                            k.as_str(),
                            "mix:none",
                            k.as_str(),
                        ]));
                        bytes.extend(shardis_tests::encode_command(&["GET", k.as_str()]));
                    }
                    let _ = c.try_send_raw(&bytes);
                    drop(c); // gone before reading anything
                    n += 1;
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut witness = cluster.proxy(0).conn();
    let mut rounds = 0;
    while Instant::now() < deadline {
        for k in &keys {
            let want = format!("${}\r\n{k}\r\n", k.len());
            witness.expect(&["GET", k.as_str()], want.as_bytes());
        }
        rounds += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for v in vandals {
        v.join().unwrap();
    }
    assert!(rounds > 0);
    assert!(cluster.proxy(0).is_running());
    witness.expect(&["PING"], b"+PONG\r\n");
}

/// `client_idle_timeout`: a client that sends nothing is disconnected after
/// it; one that keeps sending requests is not, and other clients keep
/// working.
#[test]
fn idle_clients_are_disconnected() {
    let cluster = Cluster::builder()
        .groups(2)
        .proxy_arg("--client-idle-timeout")
        .proxy_arg("1")
        .build();
    let mut idle = cluster.proxy(0).conn();
    idle.expect(&["PING"], b"+PONG\r\n");
    let mut busy = cluster.proxy(0).conn();
    let key = cluster.keys_of_group(1, "idle:", 1).remove(0);
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(1800) {
        busy.expect(&["SET", key.as_str(), "v"], b"+OK\r\n");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        idle.wait_closed(Duration::from_secs(2)),
        "an idle client was not disconnected"
    );
    busy.expect(&["GET", key.as_str()], b"$1\r\nv\r\n");
    let mut fresh = cluster.proxy(0).conn();
    fresh.expect(&["GET", key.as_str()], b"$1\r\nv\r\n");
}

/// Replies are not client input: a reply of more elements than a request
/// may have (`LRANGE` of 1.1M), or nested deeper (a Lua table of 40
/// levels), passes through whole, and the backend connection it shares
/// with other clients stays up.
#[test]
fn big_and_deep_replies_pass_through() {
    let cluster = Cluster::builder().groups(2).build();
    let mut witness = Witness::new(&cluster);
    let mut c = cluster.proxy(0).conn();
    for chunk in 0..110 {
        let mut args = vec!["RPUSH".to_string(), "biglist".to_string()];
        args.extend((chunk * 10_000..(chunk + 1) * 10_000).map(|i| i.to_string()));
        let reply = c.cmd(&args);
        assert!(reply.starts_with(b":"), "{}", escape_short(&reply, 200));
    }
    c.set_timeout(Duration::from_secs(30));
    let reply = c.cmd(&["LRANGE", "biglist", "0", "-1"]);
    assert!(
        reply.starts_with(b"*1100000\r\n"),
        "{}",
        escape_short(&reply, 200)
    );
    assert!(reply.ends_with(b"$7\r\n1099999\r\n"));
    witness.still_works("a reply of 1.1M elements");

    let script = format!("return {}1{}", "{".repeat(40), "}".repeat(40));
    let reply = c.cmd(&["EVAL", script.as_str(), "1", "biglist"]);
    let want = format!("{}:1\r\n", "*1\r\n".repeat(40));
    assert_eq!(
        escape_short(&reply, 200),
        escape_short(want.as_bytes(), 200)
    );
    witness.still_works("a reply nested 40 deep");
}

/// HTTP clients that open admin connections and send nothing cannot take
/// the proxy's file descriptors: past 256 at once, new ones are closed as
/// soon as they are accepted, and Redis clients are served all along.
#[test]
fn idle_admin_connections_are_capped() {
    use std::io::Read;
    let cluster = Cluster::builder().groups(1).build();
    let proxy = cluster.proxy(0);
    let admin = proxy.admin_addr();
    let held: Vec<std::net::TcpStream> = (0..400)
        .map(|_| std::net::TcpStream::connect(&admin).expect("connect to the admin port"))
        .collect();
    // The ones over the limit are closed by the proxy: EOF at once.
    std::thread::sleep(Duration::from_millis(500));
    let mut closed = 0;
    for mut s in held.iter() {
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let mut b = [0u8; 1];
        if matches!(s.read(&mut b), Ok(0)) {
            closed += 1;
        }
    }
    assert!(
        closed >= 400 - 256,
        "only {closed} of 400 idle admin connections were closed"
    );
    let mut conn = proxy.conn();
    conn.expect(&["PING"], b"+PONG\r\n");
    drop(held);
    // Once they are gone, the admin port answers again.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match proxy.admin_get("/healthz") {
            Ok((200, _)) => break,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "/healthz after the flood: {other:?}"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}
