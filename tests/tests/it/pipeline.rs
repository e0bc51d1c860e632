//! Pipelining: many commands written at once are all answered, in request
//! order, with the same replies a plain Redis gives.

use std::io::Write;
use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use shardis_tests::{encode_command, escape_short, Cluster, RedisServer, RespConn};

/// A seeded mix of single-key and fan-out commands over keys of both groups.
fn mixed_commands(cluster: &Cluster, n: usize) -> Vec<Vec<String>> {
    let mut keys = cluster.keys_of_group(1, "p:", 6);
    keys.extend(cluster.keys_of_group(2, "p:", 6));
    let mut rng = StdRng::seed_from_u64(0x5eed_0001);
    let mut out = Vec::with_capacity(n);
    let counter = "p:counter".to_string();
    for i in 0..n {
        let k = keys[rng.random_range(0..keys.len())].clone();
        let k2 = keys[rng.random_range(0..keys.len())].clone();
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let value = format!("v{i}");
        let cmd = match rng.random_range(0..14) {
            0 => s(&["SET", &format!("{k}:s"), &value]),
            1 => s(&["GET", &format!("{k}:s")]),
            2 => s(&["INCR", &counter]),
            3 => s(&[
                "INCRBY",
                &format!("{k}:n"),
                &rng.random_range(-5..50).to_string(),
            ]),
            4 => s(&[
                "MGET",
                &format!("{k}:s"),
                &format!("{k2}:s"),
                &format!("{k}:n"),
                "p:none",
            ]),
            5 => s(&["DEL", &format!("{k}:s"), &format!("{k2}:l")]),
            6 => s(&["HSET", &format!("{k}:h"), &format!("f{}", i % 7), &value]),
            7 => s(&["HGET", &format!("{k}:h"), &format!("f{}", i % 5)]),
            8 => s(&["LPUSH", &format!("{k}:l"), &value]),
            9 => s(&["LRANGE", &format!("{k}:l"), "0", "4"]),
            10 => s(&["MSET", &format!("{k}:s"), &value, &format!("{k2}:s"), "x"]),
            11 => s(&[
                "EXISTS",
                &format!("{k}:s"),
                &format!("{k2}:s"),
                &format!("{k}:h"),
            ]),
            12 => s(&["GET", &format!("{k}:l")]), // WRONGTYPE when it is a list
            _ => s(&["PING"]),
        };
        out.push(cmd);
    }
    out
}

/// Writes every command in one write (from a second thread, so that a full
/// socket buffer cannot deadlock us) and reads all the replies.
fn pipeline(addr: &str, password: Option<&str>, commands: &[Vec<String>]) -> Vec<Vec<u8>> {
    let mut conn = RespConn::connect_auth(addr, password);
    let mut bytes = Vec::new();
    for cmd in commands {
        bytes.extend(encode_command(cmd));
    }
    let mut writer = conn.stream().try_clone().expect("clone the stream");
    let handle = thread::spawn(move || {
        writer.write_all(&bytes).expect("write the pipeline");
        writer.flush().expect("flush the pipeline");
    });
    let replies = (0..commands.len())
        .map(|i| {
            conn.try_read_frame()
                .unwrap_or_else(|e| panic!("reply {i} of {} from {addr}: {e}", commands.len()))
        })
        .collect();
    handle.join().expect("writer thread");
    replies
}

#[test]
fn thousand_mixed_commands_in_one_write() {
    let cluster = Cluster::builder().groups(2).build();
    let plain = RedisServer::start();
    let commands = mixed_commands(&cluster, 1000);

    let proxied = pipeline(&cluster.proxy(0).addr(), None, &commands);
    let expected = pipeline(&plain.addr(), None, &commands);
    for (i, (got, want)) in proxied.iter().zip(&expected).enumerate() {
        assert!(
            got == want,
            "reply {i} to {:?} differs:\n  proxy: {}\n  redis: {}",
            commands[i],
            escape_short(got, 300),
            escape_short(want, 300)
        );
    }
    // The counter's replies prove the order: 1, 2, 3, ...
    let incrs: Vec<&Vec<u8>> = commands
        .iter()
        .zip(&proxied)
        .filter(|(c, _)| c[0] == "INCR")
        .map(|(_, r)| r)
        .collect();
    for (n, reply) in incrs.iter().enumerate() {
        assert_eq!(**reply, format!(":{}\r\n", n + 1).into_bytes());
    }
    // Nothing is left over on the connection: a last command is answered next.
    let mut conn = cluster.proxy(0).conn();
    conn.expect(&["PING"], b"+PONG\r\n");
    assert!(cluster.group_master(1).dbsize() > 0 && cluster.group_master(2).dbsize() > 0);
}

/// Many pipelines at once on separate connections do not mix their replies.
#[test]
fn concurrent_pipelines_keep_their_own_order() {
    let cluster = Cluster::builder().groups(2).build();
    let addr = cluster.proxy(0).addr();
    let handles: Vec<_> = (0..8)
        .map(|c| {
            let addr = addr.clone();
            thread::spawn(move || {
                let commands: Vec<Vec<String>> = (0..500)
                    .map(|i| vec!["INCR".to_string(), format!("conc:{c}:{}", i % 10)])
                    .collect();
                let replies = pipeline(&addr, None, &commands);
                for (i, reply) in replies.iter().enumerate() {
                    let want = format!(":{}\r\n", i / 10 + 1);
                    assert_eq!(
                        reply,
                        want.as_bytes(),
                        "connection {c}, reply {i}: {}",
                        escape_short(reply, 100)
                    );
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("a pipeline thread failed");
    }
}

/// Replies go back in request order even when the first request's group is
/// slow: nothing may be answered out of turn.
#[test]
fn order_is_kept_when_an_earlier_group_is_slow() {
    let cluster = Cluster::builder().groups(2).build();
    let k1 = cluster.keys_of_group(1, "ord:", 1).remove(0);
    let k2 = cluster.keys_of_group(2, "ord:", 1).remove(0);
    let mut conn = cluster.proxy(0).conn();
    conn.expect(&["SET", k1.as_str(), "one"], b"+OK\r\n");
    conn.expect(&["SET", k2.as_str(), "two"], b"+OK\r\n");

    cluster.group_master(1).pause();
    let mut bytes = Vec::new();
    for cmd in [
        vec!["GET", k1.as_str()],
        vec!["GET", k2.as_str()],
        vec!["PING"],
        vec!["MGET", k2.as_str(), k1.as_str()],
        vec!["ECHO", "last"],
    ] {
        bytes.extend(encode_command(&cmd));
    }
    conn.send_raw(&bytes);
    let early = conn.next_event(Duration::from_millis(400));
    cluster.group_master(1).resume();
    assert_eq!(
        early,
        shardis_tests::Event::Silent,
        "a reply arrived while the first request's group was paused: out of order"
    );
    assert_eq!(conn.read_raw(), b"$3\r\none\r\n");
    assert_eq!(conn.read_raw(), b"$3\r\ntwo\r\n");
    assert_eq!(conn.read_raw(), b"+PONG\r\n");
    assert_eq!(conn.read_raw(), b"*2\r\n$3\r\ntwo\r\n$3\r\none\r\n");
    assert_eq!(conn.read_raw(), b"$4\r\nlast\r\n");
}

/// Commands the proxy answers itself and refused ones keep their place in a
/// pipeline.
#[test]
fn local_and_refused_commands_keep_their_place() {
    let cluster = Cluster::builder().groups(2).build();
    let k1 = cluster.keys_of_group(1, "loc:", 1).remove(0);
    let k2 = cluster.keys_of_group(2, "loc:", 1).remove(0);
    let mut conn = cluster.proxy(0).conn();
    let commands: Vec<Vec<&str>> = vec![
        vec!["SET", &k1, "1"],
        vec!["KEYS", "*"],
        vec!["ECHO", "x"],
        vec!["SET", &k2, "2"],
        vec!["FOO"],
        vec!["MGET", &k1, &k2],
        vec!["RENAME", &k1, &k2],
        vec!["PING"],
        vec!["GET", &k2],
    ];
    let mut bytes = Vec::new();
    for cmd in &commands {
        bytes.extend(encode_command(cmd));
    }
    conn.send_raw(&bytes);
    let replies: Vec<Vec<u8>> = commands.iter().map(|_| conn.read_raw()).collect();
    let text: Vec<String> = replies.iter().map(|r| escape_short(r, 80)).collect();
    assert_eq!(replies[0], b"+OK\r\n", "{text:?}");
    assert!(replies[1].starts_with(b"-ERR"), "{text:?}");
    assert_eq!(replies[2], b"$1\r\nx\r\n", "{text:?}");
    assert_eq!(replies[3], b"+OK\r\n", "{text:?}");
    assert!(replies[4].starts_with(b"-ERR"), "{text:?}");
    assert_eq!(replies[5], b"*2\r\n$1\r\n1\r\n$1\r\n2\r\n", "{text:?}");
    assert!(replies[6].starts_with(b"-CROSSSLOT"), "{text:?}");
    assert_eq!(replies[7], b"+PONG\r\n", "{text:?}");
    assert_eq!(replies[8], b"$1\r\n2\r\n", "{text:?}");
}

/// MULTI is refused, and so is everything up to EXEC or DISCARD: a client
/// that pipelines MULTI … EXEC (redis-py's default pipeline) gets errors and
/// none of its writes runs, instead of writes run one by one outside any
/// transaction and an error after them.
#[test]
fn commands_after_a_refused_multi_do_not_run() {
    let cluster = Cluster::builder().groups(2).build();
    let k = cluster.keys_of_group(1, "tx:", 1).remove(0);
    let mut conn = cluster.proxy(0).conn();
    let run = |conn: &mut RespConn, commands: &[Vec<&str>]| -> Vec<String> {
        let mut bytes = Vec::new();
        for cmd in commands {
            bytes.extend(encode_command(cmd));
        }
        conn.send_raw(&bytes);
        commands
            .iter()
            .map(|_| escape_short(&conn.read_raw(), 200))
            .collect()
    };
    let replies = run(
        &mut conn,
        &[
            vec!["MULTI"],
            vec!["SET", &k, "a"],
            vec!["INCR", "tx:counter"],
            vec!["MULTI"],
            vec!["EXEC"],
            vec!["GET", &k],
            vec!["EXISTS", "tx:counter"],
        ],
    );
    assert!(
        replies[0].starts_with("-ERR command 'MULTI' is not supported"),
        "{replies:?}"
    );
    assert!(
        replies[1].starts_with("-ERR 'SET' was not run"),
        "{replies:?}"
    );
    assert!(
        replies[2].starts_with("-ERR 'INCR' was not run"),
        "{replies:?}"
    );
    assert!(
        replies[3].starts_with("-ERR MULTI calls can not be nested"),
        "{replies:?}"
    );
    assert!(replies[4].starts_with("-EXECABORT"), "{replies:?}");
    // After EXEC, commands run again; nothing of the transaction did.
    assert_eq!(replies[5], "$-1\\r\\n", "{replies:?}");
    assert_eq!(replies[6], ":0\\r\\n", "{replies:?}");

    let replies = run(
        &mut conn,
        &[
            vec!["MULTI"],
            vec!["SET", &k, "b"],
            vec!["DISCARD"],
            vec!["SET", &k, "c"],
            vec!["MULTI"],
            vec!["RESET"],
            vec!["GET", &k],
        ],
    );
    assert!(
        replies[1].starts_with("-ERR 'SET' was not run"),
        "{replies:?}"
    );
    assert_eq!(replies[2], "+OK\\r\\n", "{replies:?}");
    assert_eq!(replies[3], "+OK\\r\\n", "{replies:?}");
    assert_eq!(replies[5], "+RESET\\r\\n", "{replies:?}");
    assert_eq!(replies[6], "$1\\r\\nc\\r\\n", "{replies:?}");
}

/// QUIT in the middle of a pipeline: what came before is answered, the
/// connection closes, and what came after is not executed.
#[test]
fn quit_in_a_pipeline() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    let mut bytes = encode_command(&["SET", "q:before", "1"]);
    bytes.extend(encode_command(&["QUIT"]));
    bytes.extend(encode_command(&["SET", "q:after", "1"]));
    conn.send_raw(&bytes);
    assert_eq!(conn.read_raw(), b"+OK\r\n");
    assert_eq!(conn.read_raw(), b"+OK\r\n");
    assert!(
        conn.wait_closed(Duration::from_secs(5)),
        "QUIT did not close the connection"
    );
    let mut check = cluster.proxy(0).conn();
    check.expect(&["EXISTS", "q:before", "q:after"], b":1\r\n");
}

/// Big and binary-safe values and keys (CR, LF, NUL inside), also in fan-out.
#[test]
fn large_and_binary_values() {
    let cluster = Cluster::builder().groups(2).build();
    let plain = RedisServer::start();
    let mut twin = shardis_tests::Twin::new(cluster.proxy(0).conn(), plain.conn());
    let mut rng = StdRng::seed_from_u64(7);
    let big: Vec<u8> = (0..5 * 1024 * 1024).map(|_| rng.random()).collect();
    let binary_key: Vec<u8> = b"bin\r\n\x00key*$3\r\n".to_vec();
    let k1 = cluster.keys_of_group(1, "big:", 1).remove(0).into_bytes();
    let k2 = cluster.keys_of_group(2, "big:", 1).remove(0).into_bytes();
    twin.check(&[&b"SET"[..], &k1, &big]);
    twin.check(&[&b"SET"[..], &binary_key, b"\r\n$-1\r\n"]);
    twin.check(&[&b"APPEND"[..], &k2, &big[..1_000_000]]);
    twin.check(&[&b"GET"[..], &k1]);
    twin.check(&[&b"GET"[..], &binary_key]);
    twin.check(&[&b"MGET"[..], &k1, &binary_key, &k2, b"nope"]);
    twin.check(&[&b"STRLEN"[..], &k2]);
    twin.check(&[&b"DEL"[..], &k1, &k2, &binary_key]);
}

/// A client that writes its requests one byte at a time (every possible split
/// of every frame) is served correctly.
#[test]
fn requests_written_byte_by_byte() {
    let cluster = Cluster::builder().groups(2).build();
    let k1 = cluster.keys_of_group(1, "bb:", 1).remove(0);
    let k2 = cluster.keys_of_group(2, "bb:", 1).remove(0);
    let mut conn = cluster.proxy(0).conn();
    let mut bytes = encode_command(&["SET", k1.as_str(), "value\r\n1"]);
    bytes.extend(encode_command(&["SET", k2.as_str(), "v2"]));
    bytes.extend(encode_command(&["MGET", k1.as_str(), k2.as_str()]));
    bytes.extend_from_slice(b"PING\r\n");
    for b in &bytes {
        conn.send_raw(std::slice::from_ref(b));
        thread::sleep(Duration::from_micros(200));
    }
    assert_eq!(conn.read_raw(), b"+OK\r\n");
    assert_eq!(conn.read_raw(), b"+OK\r\n");
    assert_eq!(conn.read_raw(), b"*2\r\n$8\r\nvalue\r\n1\r\n$2\r\nv2\r\n");
    assert_eq!(conn.read_raw(), b"+PONG\r\n");
}
