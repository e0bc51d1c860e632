//! The session layer: RESP2 and RESP3 side by side, the commands the proxy
//! answers itself (HELLO, CLIENT, PING, ECHO, SELECT, QUIT, RESET, COMMAND,
//! INFO, DBSIZE), refused commands, AUTH.

use std::time::Duration;

use shardis_tests::{escape, Cluster, Reply, RespConn};

fn resp3_conn(cluster: &Cluster) -> RespConn {
    let mut conn = cluster.proxy(0).conn();
    let hello = conn.reply(&["HELLO", "3"]);
    assert!(
        matches!(hello, Reply::Map(_)),
        "HELLO 3 should answer a map: {hello}"
    );
    conn
}

/// HGETALL is a `%` map on RESP3 and a flat `*` array on RESP2, on two
/// sessions at the same time (backend connections are shared: the proxy must
/// convert per client).
#[test]
fn hgetall_is_a_map_on_resp3_and_an_array_on_resp2() {
    let cluster = Cluster::builder().groups(2).build();
    let mut r2 = cluster.proxy(0).conn();
    let mut r3 = resp3_conn(&cluster);
    for g in [1, 2] {
        let key = &cluster.keys_of_group(g, "h:", 1)[0];
        let k = key.as_str();
        r2.expect(&["HSET", k, "f1", "v1", "f2", "v2"], b":2\r\n");
        // A small hash keeps insertion order (listpack), so bytes are exact.
        for _ in 0..2 {
            r3.expect(
                &["HGETALL", k],
                b"%2\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n$2\r\nv2\r\n",
            );
            r2.expect(
                &["HGETALL", k],
                b"*4\r\n$2\r\nf1\r\n$2\r\nv1\r\n$2\r\nf2\r\n$2\r\nv2\r\n",
            );
        }
        r3.expect(&["HGETALL", "h:missing"], b"%0\r\n");
        r2.expect(&["HGETALL", "h:missing"], b"*0\r\n");
        // Other RESP3 types: null, double, set.
        r3.expect(&["GET", "h:missing"], b"_\r\n");
        r2.expect(&["GET", "h:missing"], b"$-1\r\n");
        r3.expect(&["HGET", k, "nope"], b"_\r\n");
        r2.expect(&["HGET", k, "nope"], b"$-1\r\n");
        let z = format!("{{{k}}}z");
        r2.expect(&["ZADD", &z, "1.5", "m"], b":1\r\n");
        r3.expect(&["ZSCORE", &z, "m"], b",1.5\r\n");
        r2.expect(&["ZSCORE", &z, "m"], b"$3\r\n1.5\r\n");
        let s = format!("{{{k}}}s");
        r2.expect(&["SADD", &s, "a"], b":1\r\n");
        r3.expect(&["SMEMBERS", &s], b"~1\r\n$1\r\na\r\n");
        r2.expect(&["SMEMBERS", &s], b"*1\r\n$1\r\na\r\n");
        // A key of another type is a nil in MGET.
        r3.expect(&["MGET", k, "h:missing"], b"*2\r\n_\r\n_\r\n");
        r2.expect(&["MGET", k, "h:missing"], b"*2\r\n$-1\r\n$-1\r\n");
    }
}

/// HELLO's reply describes a standalone server; HELLO 2 and 3 switch the
/// session's protocol; an unsupported version is refused.
#[test]
fn hello_reply() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    for (proto, map) in [("3", true), ("2", false), ("3", true)] {
        let hello = conn.reply(&["HELLO", proto]);
        assert_eq!(
            matches!(hello, Reply::Map(_)),
            map,
            "HELLO {proto}: {hello}"
        );
        for field in [
            "server", "version", "proto", "id", "mode", "role", "modules",
        ] {
            assert!(
                hello.field(field).is_some(),
                "HELLO {proto} lacks {field:?}: {hello}"
            );
        }
        assert_eq!(
            hello.field("proto"),
            Some(Reply::Integer(proto.parse().unwrap()))
        );
        assert_eq!(
            hello.field("mode").and_then(|m| m.text()).as_deref(),
            Some("standalone")
        );
        assert_eq!(
            hello.field("role").and_then(|m| m.text()).as_deref(),
            Some("master")
        );
        let modules = hello.field("modules").unwrap();
        assert_eq!(
            modules.items().map(<[Reply]>::len),
            Some(0),
            "modules: {modules}"
        );
        let id = hello
            .field("id")
            .and_then(|i| i.integer())
            .expect("integer id");
        assert_eq!(
            conn.reply(&["CLIENT", "ID"]).integer(),
            Some(id),
            "CLIENT ID == HELLO id"
        );
        assert!(hello
            .field("version")
            .and_then(|v| v.text())
            .is_some_and(|v| !v.is_empty()));
    }
    // Without arguments HELLO only describes the session (still RESP3 here).
    assert!(matches!(conn.reply(&["HELLO"]), Reply::Map(_)));
    let reply = conn.cmd(&["HELLO", "4"]);
    assert!(
        reply.starts_with(b"-NOPROTO"),
        "HELLO 4: {}",
        escape(&reply)
    );
    // A refused HELLO does not change the protocol.
    conn.expect(&["GET", "nothing"], b"_\r\n");
    // HELLO with SETNAME names the connection.
    assert!(matches!(
        conn.reply(&["HELLO", "3", "SETNAME", "from-hello"]),
        Reply::Map(_)
    ));
    conn.expect(&["CLIENT", "GETNAME"], b"$10\r\nfrom-hello\r\n");
}

/// CLIENT subcommands that are per-client state and safe for the proxy to answer.
#[test]
fn client_commands() {
    let cluster = Cluster::builder().groups(2).build();
    for resp3 in [false, true] {
        let mut conn = if resp3 {
            resp3_conn(&cluster)
        } else {
            cluster.proxy(0).conn()
        };
        let null: &[u8] = if resp3 { b"_\r\n" } else { b"$-1\r\n" };
        conn.expect(&["CLIENT", "GETNAME"], null);
        conn.expect(&["CLIENT", "SETNAME", "worker-1"], b"+OK\r\n");
        conn.expect(&["CLIENT", "GETNAME"], b"$8\r\nworker-1\r\n");
        let bad = conn.cmd(&["CLIENT", "SETNAME", "has space"]);
        assert!(
            bad.starts_with(b"-ERR"),
            "a name with a space: {}",
            escape(&bad)
        );
        conn.expect(&["CLIENT", "GETNAME"], b"$8\r\nworker-1\r\n");
        conn.expect(
            &["CLIENT", "SETINFO", "lib-name", "shardis-tests"],
            b"+OK\r\n",
        );
        conn.expect(&["CLIENT", "SETINFO", "lib-ver", "1.2.3"], b"+OK\r\n");
        let id1 = conn
            .reply(&["CLIENT", "ID"])
            .integer()
            .expect("CLIENT ID is an integer");
        let id2 = cluster
            .proxy(0)
            .conn()
            .reply(&["CLIENT", "ID"])
            .integer()
            .unwrap();
        assert_ne!(id1, id2, "two connections have different ids");
        assert_eq!(
            conn.reply(&["CLIENT", "ID"]).integer(),
            Some(id1),
            "the id is stable"
        );
        conn.expect(&["PING"], b"+PONG\r\n");
    }
}

#[test]
fn ping_echo_select_time_reset_quit() {
    let cluster = Cluster::builder().groups(2).build();
    for resp3 in [false, true] {
        let mut conn = if resp3 {
            resp3_conn(&cluster)
        } else {
            cluster.proxy(0).conn()
        };
        conn.expect(&["PING"], b"+PONG\r\n");
        conn.expect(&["ping", "hello"], b"$5\r\nhello\r\n");
        conn.expect(&["ECHO", "a\r\nb"], b"$4\r\na\r\nb\r\n");
        conn.expect(&["ECHO", ""], b"$0\r\n\r\n");
        let arity = conn.cmd(&["ECHO"]);
        assert_eq!(
            arity,
            b"-ERR wrong number of arguments for 'echo' command\r\n",
            "ECHO without argument: {}",
            escape(&arity)
        );
        conn.expect(&["SELECT", "0"], b"+OK\r\n");
        let refused = conn.cmd(&["SELECT", "1"]);
        assert!(
            refused.starts_with(b"-ERR"),
            "SELECT 1: {}",
            escape(&refused)
        );
        // Still database 0: a key written now is on a master's db 0.
        conn.expect(&["SET", "sel:k", "v"], b"+OK\r\n");
        assert!(cluster
            .group_master(cluster.owner_of("sel:k"))
            .exists("sel:k"));
        let time = conn.reply(&["TIME"]);
        assert_eq!(time.items().map(<[Reply]>::len), Some(2), "TIME: {time}");
        // A positive arity is exact, as in Redis.
        conn.expect(
            &["TIME", "x"],
            b"-ERR wrong number of arguments for 'time' command\r\n",
        );

        // RESET: back to RESP2, no name, and the connection stays usable.
        conn.expect(&["CLIENT", "SETNAME", "before-reset"], b"+OK\r\n");
        conn.expect(&["RESET"], b"+RESET\r\n");
        conn.expect(&["CLIENT", "GETNAME"], b"$-1\r\n");
        conn.expect(
            &["HSET", "reset:h", "f", "v"],
            if resp3 { b":0\r\n" } else { b":1\r\n" },
        );
        conn.expect(&["HGETALL", "reset:h"], b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n");

        conn.expect(&["QUIT"], b"+OK\r\n");
        assert!(
            conn.wait_closed(Duration::from_secs(5)),
            "QUIT should close the connection"
        );
    }
}

#[test]
fn command_and_info() {
    let cluster = Cluster::builder().groups(2).build();
    for resp3 in [false, true] {
        let mut conn = if resp3 {
            resp3_conn(&cluster)
        } else {
            cluster.proxy(0).conn()
        };
        let count = conn
            .reply(&["COMMAND", "COUNT"])
            .integer()
            .expect("COMMAND COUNT integer");
        assert!(count > 50, "COMMAND COUNT = {count}");
        let info = conn.reply(&["COMMAND", "INFO", "get"]);
        let entries = info
            .items()
            .unwrap_or_else(|| panic!("COMMAND INFO get: {info}"));
        assert_eq!(entries.len(), 1, "COMMAND INFO get: {info}");
        let first = entries[0]
            .items()
            .and_then(|e| e.first())
            .and_then(Reply::text);
        assert_eq!(first.as_deref(), Some("get"), "COMMAND INFO get: {info}");
        // Bare COMMAND INFO lists them all; LIST FILTERBY PATTERN filters.
        let all = conn.reply(&["COMMAND", "INFO"]);
        assert_eq!(all.items().map(|i| i.len() as i64), Some(count), "{all}");
        let listed = conn.reply(&["COMMAND", "LIST", "FILTERBY", "PATTERN", "hget*"]);
        let mut names: Vec<String> = listed
            .items()
            .unwrap_or_else(|| panic!("COMMAND LIST: {listed}"))
            .iter()
            .filter_map(Reply::text)
            .collect();
        names.sort();
        assert_eq!(names, ["hget", "hgetall"], "{listed}");

        let info = conn.reply(&["INFO"]);
        let text = info
            .text()
            .unwrap_or_else(|| panic!("INFO should be a string: {info}"));
        assert!(
            text.contains("redis_version:"),
            "INFO lacks redis_version:\n{text}"
        );
        if resp3 {
            assert!(
                matches!(info, Reply::Verbatim(_) | Reply::Bulk(_)),
                "{info}"
            );
        } else {
            assert!(
                matches!(info, Reply::Bulk(_)),
                "INFO on RESP2 is a bulk string: {info}"
            );
        }
        conn.expect(&["PING"], b"+PONG\r\n");
    }
}

/// DBSIZE is the sum over all groups' masters.
#[test]
fn dbsize_sums_over_groups() {
    let cluster = Cluster::builder().groups(3).build();
    let mut conn = cluster.proxy(0).conn();
    conn.expect(&["DBSIZE"], b":0\r\n");
    for i in 0..60 {
        conn.expect(&["SET", &format!("db:{i}"), "v"], b"+OK\r\n");
    }
    let per_group: Vec<i64> = cluster
        .group_ids()
        .into_iter()
        .map(|g| cluster.group_master(g).dbsize())
        .collect();
    assert!(
        per_group.iter().all(|&n| n > 0),
        "keys on every group: {per_group:?}"
    );
    conn.expect(&["DBSIZE"], b":60\r\n");
    // Keys written directly on a master count too.
    cluster.group_master(2).cmd(&["SET", "direct", "x"]);
    conn.expect(&["DBSIZE"], b":61\r\n");
}

/// `INFO` adds up the keyspace of every group's master, as one server would
/// show it, in RESP2 (bulk string) and RESP3 (verbatim string).
#[test]
fn info_keyspace_adds_up_the_groups() {
    let cluster = Cluster::builder().groups(3).build();
    let mut conn = cluster.proxy(0).conn();
    let keyspace = |conn: &mut RespConn, args: &[&str]| {
        let info = conn.reply(args);
        let text = info
            .text()
            .unwrap_or_else(|| panic!("INFO should be a string: {info}"));
        let at = text
            .find("# Keyspace\r\n")
            .unwrap_or_else(|| panic!("no keyspace section in {args:?}:\n{text}"));
        text[at..].to_string()
    };
    assert_eq!(keyspace(&mut conn, &["INFO", "keyspace"]), "# Keyspace\r\n");
    for i in 0..60 {
        conn.expect(&["SET", &format!("ks:{i}"), "v"], b"+OK\r\n");
    }
    for i in 0..20 {
        conn.expect(&["EXPIRE", &format!("ks:{i}"), "1000"], b":1\r\n");
    }
    cluster.group_master(2).cmd(&["SET", "direct", "x"]);
    let per_group: Vec<i64> = cluster
        .group_ids()
        .into_iter()
        .map(|g| cluster.group_master(g).dbsize())
        .collect();
    assert!(per_group.iter().all(|&n| n > 0), "{per_group:?}");
    for args in [
        &["INFO", "keyspace"][..],
        &["INFO", "server", "KEYSPACE"],
        &["INFO", "all"],
        &["INFO", "everything"],
    ] {
        let text = keyspace(&mut conn, args);
        let line = text.lines().nth(1).unwrap_or_default();
        assert!(
            line.starts_with("db0:keys=61,expires=20,avg_ttl="),
            "{args:?}: {text}"
        );
        let ttl: u64 = line
            .rsplit('=')
            .next()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("avg_ttl of {line}"));
        // Redis estimates it as keys expire (0 until then).
        assert!(ttl <= 1_000_000, "{line}");
    }
    // Other sections alone stay the proxy's own, and so does bare INFO (a
    // client's handshake, as ioredis's, must not wait for every group).
    let server = conn.reply(&["INFO", "server"]).text().expect("INFO text");
    assert!(!server.contains("Keyspace"), "{server}");
    assert!(server.contains("shardis_version:"), "{server}");
    let bare = conn.reply(&["INFO"]).text().expect("INFO text");
    assert!(!bare.contains("Keyspace"), "{bare}");
    assert!(bare.contains("\r\nloading:0\r\n"), "{bare}");
    assert!(bare.contains("\r\nrole:master\r\n"), "{bare}");
    let hello = conn.reply(&["HELLO", "3"]);
    assert!(!hello.is_error(), "{hello}");
    let info = conn.reply(&["INFO", "keyspace"]);
    assert!(matches!(info, Reply::Verbatim(_)), "{info}");
    assert!(
        info.text()
            .is_some_and(|t| t.contains("db0:keys=61,expires=20,")),
        "{info}"
    );
    // A group that cannot answer: an error, as for DBSIZE, not a count
    // short of its keys; the bare INFO still answers.
    cluster.group_master(3).kill();
    let info = conn.reply(&["INFO", "keyspace"]);
    assert!(info.is_error(), "{info}");
    conn.expect(&["PING"], b"+PONG\r\n");
    let bare = conn.reply(&["INFO"]);
    assert!(!bare.is_error(), "{bare}");
}

/// Commands the proxy does not route get `-ERR` naming the command, and the
/// session keeps working: nothing of the refused command's state stuck.
#[test]
fn refused_and_unknown_commands() {
    let cluster = Cluster::builder().groups(2).build();
    let refused: &[&[&str]] = &[
        &["KEYS", "*"],
        &["SCAN", "0"],
        &["MULTI"],
        &["EXEC"],
        &["WATCH", "k"],
        &["SUBSCRIBE", "ch"],
        &["PSUBSCRIBE", "c*"],
        &["PUBLISH", "ch", "m"],
        &["BLPOP", "list", "0"],
        &["BRPOP", "list", "1"],
        &["BZPOPMIN", "z", "0"],
        &["CONFIG", "GET", "maxmemory"],
        &["DEBUG", "SLEEP", "0"],
        &["FLUSHALL"],
        &["FLUSHDB"],
        &["MONITOR"],
        &["REPLICAOF", "NO", "ONE"],
        &["SHUTDOWN"],
        &["CLIENT", "TRACKING", "on"],
        &["CLIENT", "REPLY", "OFF"],
        &["CLIENT", "PAUSE", "1000"],
        &["CLIENT", "KILL", "127.0.0.1:1"],
        &["FOO"],
        &["FOO", "bar"],
    ];
    for resp3 in [false, true] {
        let mut conn = if resp3 {
            resp3_conn(&cluster)
        } else {
            cluster.proxy(0).conn()
        };
        for cmd in refused {
            let reply = conn.cmd(cmd);
            let text = String::from_utf8_lossy(&reply).to_lowercase();
            let named = cmd
                .iter()
                .take(2)
                .any(|word| text.contains(&word.to_lowercase()));
            assert!(
                reply.starts_with(b"-ERR") && named,
                "{cmd:?} should be refused with -ERR naming the command, got {}",
                escape(&reply)
            );
            if cmd[0].eq_ignore_ascii_case("multi") {
                // After a refused MULTI nothing runs until EXEC or DISCARD:
                // a client that pipelined MULTI … EXEC must not see its
                // commands run outside a transaction.
                let r = conn.cmd(&["SET", "after-refusal", "in-multi"]);
                assert!(r.starts_with(b"-ERR 'SET' was not run"), "{}", escape(&r));
                conn.expect(&["DISCARD"], b"+OK\r\n");
            }
            // The session is in its normal state: not queuing (MULTI), not
            // subscribed, replies on (CLIENT REPLY OFF), not monitoring.
            conn.expect(&["SET", "after-refusal", cmd[0]], b"+OK\r\n");
            let v = conn.cmd(&["GET", "after-refusal"]);
            assert_eq!(
                v,
                format!("${}\r\n{}\r\n", cmd[0].len(), cmd[0]).into_bytes()
            );
            conn.expect(&["PING"], b"+PONG\r\n");
        }
    }
    // The refused commands did not reach the servers.
    let master = cluster.group_master(cluster.owner_of("after-refusal"));
    assert!(master.exists("after-refusal"), "FLUSHALL must not have run");
    let reply = master.cmd(&["CONFIG", "GET", "maxmemory"]);
    assert!(reply.starts_with(b"*2"), "{}", escape(&reply));
    assert!(
        cluster.proxy(0).is_running(),
        "SHUTDOWN must not stop the proxy"
    );
}

/// Commands written in the inline protocol (what `telnet` sends) work.
#[test]
fn inline_commands() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    conn.send_raw(b"PING\r\n");
    assert_eq!(conn.read_raw(), b"+PONG\r\n");
    conn.send_raw(b"SET inline:k \"hello world\"\r\nGET inline:k\r\n");
    assert_eq!(conn.read_raw(), b"+OK\r\n");
    assert_eq!(conn.read_raw(), b"$11\r\nhello world\r\n");
    conn.send_raw(b"EXISTS inline:k nope\n");
    assert_eq!(conn.read_raw(), b":1\r\n");
}

/// `--password`: nothing but AUTH/HELLO AUTH before authenticating; the proxy
/// authenticates to password-protected backends with `--backend-password`.
#[test]
fn password_protected_proxy_and_backends() {
    let cluster = Cluster::builder()
        .groups(2)
        .password("front-secret")
        .backend_password("backend-secret")
        .build();
    let addr = cluster.proxy(0).addr();
    let mut conn = RespConn::connect(&addr);
    for cmd in [
        &["PING"][..],
        &["GET", "k"],
        &["SET", "k", "v"],
        &["DBSIZE"],
    ] {
        let reply = conn.cmd(cmd);
        assert!(
            reply.starts_with(b"-NOAUTH"),
            "{cmd:?} before AUTH: {}",
            escape(&reply)
        );
    }
    let reply = conn.cmd(&["HELLO", "3"]);
    assert!(
        reply.starts_with(b"-NOAUTH"),
        "HELLO 3 before AUTH: {}",
        escape(&reply)
    );
    let wrong = conn.cmd(&["AUTH", "wrong"]);
    assert!(
        wrong.starts_with(b"-WRONGPASS"),
        "AUTH wrong: {}",
        escape(&wrong)
    );
    let wrong = conn.cmd(&["AUTH", "someone", "front-secret"]);
    assert!(
        wrong.starts_with(b"-WRONGPASS"),
        "AUTH with another user: {}",
        escape(&wrong)
    );
    conn.expect(&["AUTH", "front-secret"], b"+OK\r\n");
    conn.expect(&["AUTH", "default", "front-secret"], b"+OK\r\n");
    for g in [1, 2] {
        let key = &cluster.keys_of_group(g, "auth:", 1)[0];
        conn.expect(&["SET", key.as_str(), "v"], b"+OK\r\n");
        conn.expect(&["GET", key.as_str()], b"$1\r\nv\r\n");
    }

    let mut r3 = RespConn::connect(&addr);
    let hello = r3.reply(&["HELLO", "3", "AUTH", "default", "front-secret"]);
    assert!(matches!(hello, Reply::Map(_)), "HELLO 3 AUTH: {hello}");
    r3.expect(&["GET", "nothing"], b"_\r\n");

    // RESET drops the authentication.
    r3.expect(&["RESET"], b"+RESET\r\n");
    let reply = r3.cmd(&["GET", "nothing"]);
    assert!(
        reply.starts_with(b"-NOAUTH"),
        "GET after RESET: {}",
        escape(&reply)
    );
}

/// HELLO in the middle of one pipelined write switches the protocol from the
/// next request on: the requests before it are answered in the old
/// protocol, those after it in the new one, including split commands.
#[test]
fn hello_in_the_middle_of_a_pipeline() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    let h1 = cluster.keys_of_group(1, "ph:", 1).remove(0);
    let h2 = cluster.keys_of_group(2, "ph:", 1).remove(0);
    for h in [&h1, &h2] {
        conn.expect(&["HSET", h.as_str(), "f", "v"], b":1\r\n");
    }
    let mut wire = Vec::new();
    for cmd in [
        vec!["HGETALL", h1.as_str()],
        vec!["MGET", h1.as_str(), "ph:none", h2.as_str()],
        vec!["HELLO", "3"],
        vec!["HGETALL", h1.as_str()],
        vec!["HGETALL", h2.as_str()],
        vec!["MGET", h1.as_str(), "ph:none", h2.as_str()],
        vec!["HELLO", "2"],
        vec!["HGETALL", h2.as_str()],
        vec!["GET", "ph:none"],
    ] {
        wire.extend(shardis_tests::encode_command(&cmd));
    }
    conn.send_raw(&wire);
    let mut replies = Vec::new();
    for _ in 0..9 {
        replies.push(conn.read_raw());
    }
    assert_eq!(escape(&replies[0]), escape(b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"));
    assert_eq!(escape(&replies[1]), escape(b"*3\r\n$-1\r\n$-1\r\n$-1\r\n"));
    assert!(replies[2].starts_with(b"%"), "{}", escape(&replies[2]));
    assert_eq!(escape(&replies[3]), escape(b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"));
    assert_eq!(escape(&replies[4]), escape(b"%1\r\n$1\r\nf\r\n$1\r\nv\r\n"));
    assert_eq!(escape(&replies[5]), escape(b"*3\r\n_\r\n_\r\n_\r\n"));
    assert!(replies[6].starts_with(b"*"), "{}", escape(&replies[6]));
    assert_eq!(escape(&replies[7]), escape(b"*2\r\n$1\r\nf\r\n$1\r\nv\r\n"));
    assert_eq!(escape(&replies[8]), escape(b"$-1\r\n"));
}
