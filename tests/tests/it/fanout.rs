//! Multi-key commands.
//!
//! MGET, MSET, DEL, EXISTS, UNLINK and TOUCH are split across groups and their
//! replies merged: the answer must be what one plain Redis gives, including
//! duplicate and missing keys. Every other multi-key command must have all its
//! keys in one slot, and is refused with `-CROSSSLOT` otherwise.

use shardis_tests::{escape, Cluster, Norm, RedisServer, Twin};
use shardis_topology::slot_of;

fn twin(cluster: &Cluster, plain: &RedisServer, resp3: bool) -> Twin {
    let mut twin = Twin::new(cluster.proxy(0).conn(), plain.conn());
    if resp3 {
        twin.hello3();
    }
    twin
}

/// Runs the fan-out commands over keys of both groups, with duplicates, keys of
/// another type and missing keys, comparing every reply with a plain Redis.
fn fanout_matches_plain_redis(resp3: bool) {
    let cluster = Cluster::builder().groups(2).build();
    let plain = RedisServer::start();
    let mut t = twin(&cluster, &plain, resp3);

    let g1 = cluster.keys_of_group(1, "one:", 4);
    let g2 = cluster.keys_of_group(2, "two:", 4);
    let (a1, a2, a3, a4) = (&g1[0], &g1[1], &g1[2], &g1[3]);
    let (b1, b2, b3, b4) = (&g2[0], &g2[1], &g2[2], &g2[3]);
    let (m1, m2) = ("missing:1", "missing:2");
    let script: Vec<Vec<&str>> = vec![
        vec!["MSET", a1, "1", b1, "2", a2, "3", b2, "4", a1, "5"],
        vec!["MGET", a1, b1, a2, b2, m1, a1, b1],
        vec!["MGET", a1],
        vec!["MGET", m1, m2, m1],
        vec!["EXISTS", a1, b1, m1, a1, b1, b1],
        vec!["EXISTS", m1, m2],
        vec!["TOUCH", a1, m1, b2, b2],
        vec!["RPUSH", a3, "x"],
        vec!["SADD", b3, "y"],
        // A key of another type is a nil in MGET, not an error.
        vec!["MGET", a1, a3, b3, b1],
        vec!["DEL", a1, m1, a1, b1],
        vec!["MGET", a1, b1, a2, b2],
        vec!["UNLINK", a2, b2, m2, b2, a2],
        vec!["EXISTS", a1, a2, b1, b2, a3, b3],
        vec!["MSET", a1, "x", b1, "y"],
        vec!["MSET", a4, "only-group-1"],
        vec!["MSET", b4, "only-group-2", b4, "again"],
        vec!["MGET", a1, b1, a1, a4, b4],
        // MSET overwrites keys of any type.
        vec!["MSET", a3, "s", b3, "s"],
        vec!["MGET", a3, b3],
        vec!["TOUCH", a1, a3, b3, m2],
        vec!["DEL", a3, b3, a4, b4, m1],
        vec!["DEL", m1, m2],
        vec!["UNLINK", m1],
        vec!["MGET", a1, a2, a3, a4, b1, b2, b3, b4],
        vec!["EXISTS", a1, a1, a1, b1, b1],
        vec!["DEL", a1, b1],
        vec!["EXISTS", a1, b1],
    ];
    for cmd in &script {
        t.check(cmd);
    }
    // Wrong arity: Redis's own error text.
    for cmd in [
        vec!["MSET", a1.as_str()],
        vec!["MSET", a1.as_str(), "1", b1.as_str()],
        vec!["MGET"],
        vec!["DEL"],
        vec!["EXISTS"],
    ] {
        t.check(&cmd);
    }
    // Both groups really took part.
    t.check(&["MSET", a1.as_str(), "1", b1.as_str(), "2"]);
    assert!(cluster.group_master(1).exists(a1));
    assert!(cluster.group_master(2).exists(b1));
}

#[test]
fn fanout_matches_plain_redis_resp2() {
    fanout_matches_plain_redis(false);
}

#[test]
fn fanout_matches_plain_redis_resp3() {
    fanout_matches_plain_redis(true);
}

/// Multi-key commands other than the six fan-out ones, with keys in
/// different slots: `-CROSSSLOT`, no side effect, and the session goes on.
#[test]
fn cross_slot_commands_are_refused() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    let a = &cluster.keys_of_group(1, "a:", 2);
    let b = &cluster.keys_of_group(2, "b:", 1)[0];
    let a0 = &a[0];
    // Another key of group 1 in another slot: same group, still two slots.
    let a_other = cluster
        .keys_of_group(1, "c:", 50)
        .into_iter()
        .find(|k| slot_of(k.as_bytes()) != slot_of(a0.as_bytes()))
        .expect("another slot of group 1");
    conn.expect(&["SADD", a0.as_str(), "m"], b":1\r\n");

    for (x, y, what) in [
        (a0, b, "two groups"),
        (a0, &a_other, "two slots of one group"),
    ] {
        let (x, y) = (x.as_str(), y.as_str());
        let commands: Vec<Vec<&str>> = vec![
            vec!["RENAME", x, y],
            vec!["RENAMENX", x, y],
            vec!["COPY", x, y],
            vec!["SUNION", x, y],
            vec!["SINTER", x, y],
            vec!["SDIFF", x, y],
            vec!["SINTERSTORE", x, x, y],
            vec!["SUNIONSTORE", "dest", x, y],
            vec!["SMOVE", x, y, "m"],
            vec!["MSETNX", x, "1", y, "2"],
            vec!["LMOVE", x, y, "LEFT", "RIGHT"],
            vec!["RPOPLPUSH", x, y],
            vec!["ZUNIONSTORE", x, "2", x, y],
            vec!["ZINTER", "2", x, y],
            vec!["PFCOUNT", x, y],
            vec!["BITOP", "AND", x, x, y],
            vec!["EVAL", "return 1", "2", x, y],
        ];
        for cmd in &commands {
            let reply = conn.cmd(cmd);
            assert!(
                reply.starts_with(b"-CROSSSLOT"),
                "{cmd:?} with keys in {what} should be refused with -CROSSSLOT, got {}",
                escape(&reply)
            );
            conn.expect(&["PING"], b"+PONG\r\n");
        }
    }
    // Nothing was changed by the refused commands.
    conn.expect(&["SMEMBERS", a0.as_str()], b"*1\r\n$1\r\nm\r\n");
    assert!(!cluster.group_master(2).exists(b));
    assert!(!cluster.group_master(1).exists(&a_other));
}

/// The same kinds of multi-key commands with all keys under one hash tag work
/// and answer like a plain Redis.
#[test]
fn same_slot_multi_key_commands_work() {
    let cluster = Cluster::builder().groups(2).build();
    let plain = RedisServer::start();
    // One tag per group, so that both groups serve multi-key commands.
    let tags: Vec<String> = [1, 2]
        .iter()
        .map(|&g| {
            let key = cluster.keys_of_group(g, "tag", 1).remove(0);
            format!("{{{key}}}")
        })
        .collect();
    for resp3 in [false, true] {
        let mut t = twin(&cluster, &plain, resp3);
        for tag in &tags {
            let k = |name: &str| format!("{tag}{name}{}", if resp3 { "3" } else { "2" });
            let (a, b, c, x, y, z, w) = (k("a"), k("b"), k("c"), k("x"), k("y"), k("z"), k("w"));
            let (l1, l2, z1, z2, z3) = (k("l1"), k("l2"), k("z1"), k("z2"), k("z3"));
            let exact: Vec<Vec<&str>> = vec![
                vec!["SADD", &a, "1", "2", "3"],
                vec!["SADD", &b, "3", "4"],
                vec!["SINTERSTORE", &c, &a, &b],
                vec!["SUNIONSTORE", &c, &a, &b],
                vec!["SCARD", &c],
                vec!["SMOVE", &a, &b, "1"],
                vec!["SMOVE", &a, &b, "nope"],
                vec!["MSETNX", &x, "1", &y, "2"],
                vec!["MSETNX", &x, "1", &z, "3"],
                vec!["MGET", &x, &y, &z],
                vec!["RENAME", &x, &w],
                vec!["RENAME", &x, &w],
                vec!["RENAMENX", &y, &w],
                vec!["GET", &w],
                vec!["RPUSH", &l1, "1", "2", "3"],
                vec!["LMOVE", &l1, &l2, "LEFT", "RIGHT"],
                vec!["RPOPLPUSH", &l1, &l2],
                vec!["LRANGE", &l1, "0", "-1"],
                vec!["LRANGE", &l2, "0", "-1"],
                vec!["ZADD", &z1, "1", "a", "2.5", "b"],
                vec!["ZADD", &z2, "3", "b", "4", "c"],
                vec!["ZUNIONSTORE", &z3, "2", &z1, &z2],
                vec!["ZRANGE", &z3, "0", "-1", "WITHSCORES"],
                vec!["ZINTERSTORE", &z3, "2", &z1, &z2, "WEIGHTS", "2", "1"],
                vec!["ZRANGE", &z3, "0", "-1", "WITHSCORES"],
                vec!["DEL", &a, &b, &c, &w, &y, &z, &l1, &l2, &z1, &z2, &z3],
            ];
            for cmd in &exact {
                t.check(cmd);
                // Unordered set results, compared sorted.
                if cmd[0] == "SUNIONSTORE" {
                    t.check_with(&["SMEMBERS", &c], Norm::Unordered);
                    t.check_with(&["SUNION", &a, &b], Norm::Unordered);
                    t.check_with(&["SINTER", &a, &b], Norm::Unordered);
                    t.check_with(&["SDIFF", &a, &b], Norm::Unordered);
                }
            }
        }
    }
}

/// A fan-out over many keys of both groups is reassembled in key order.
#[test]
fn fanout_over_many_keys() {
    let cluster = Cluster::builder().groups(3).build();
    let plain = RedisServer::start();
    let mut t = twin(&cluster, &plain, false);
    let keys: Vec<String> = (0..600).map(|i| format!("many:{i}")).collect();
    let mut mset = vec!["MSET".to_string()];
    for (i, k) in keys.iter().enumerate().filter(|(i, _)| i % 3 != 0) {
        mset.extend([k.clone(), format!("value-{i}")]);
    }
    t.check(&mset);
    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys.iter().cloned());
    mget.extend(keys.iter().rev().take(50).cloned());
    t.check(&mget);
    let mut exists = vec!["EXISTS".to_string()];
    exists.extend(keys.iter().cloned());
    t.check(&exists);
    let mut del = vec!["DEL".to_string()];
    del.extend(keys.iter().step_by(2).cloned());
    t.check(&del);
    t.check(&mget);
    for g in 1..=3 {
        assert!(cluster.group_master(g).dbsize() > 0);
    }
}
