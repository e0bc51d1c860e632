//! Move on access: in a `migrating(from, to)` slot a proxy first moves the
//! keys a command touches (`MIGRATE … KEYS …` on the source), then runs the
//! command on the target; a failed move answers an error and runs nothing.
//! A read whose keys are all still on the source is answered there instead,
//! and so is a write whose reply passes through Lua unchanged (not in the
//! mover's safe mode).

use std::thread;

use shardis_tests::{key_in_slot, Cluster};
use shardis_topology::{slot_of, SlotState};

/// A cluster with `slots` of group 1 migrating to group 2.
fn migrating(cluster: &Cluster, slots: &[usize]) {
    migrating_in(cluster, slots, false);
}

fn migrating_in(cluster: &Cluster, slots: &[usize], safe: bool) {
    let v = cluster.set_slots(
        slots.iter().copied(),
        SlotState::Migrating {
            from: 1,
            to: 2,
            safe,
        },
    );
    cluster.wait_applied(v);
}

fn group1_slot(cluster: &Cluster, prefix: &str) -> (String, usize) {
    let key = cluster.keys_of_group(1, prefix, 1).remove(0);
    let slot = slot_of(key.as_bytes()) as usize;
    (key, slot)
}

#[test]
fn writing_a_key_moves_it_with_its_ttl() {
    let cluster = Cluster::builder().groups(2).build();
    let (key, slot) = group1_slot(&cluster, "moa:");
    let mut c = cluster.conn(0);
    assert_eq!(c.cmd_text(&["SET", &key, "1", "EX", "1000"]), "+OK\r\n");
    assert!(cluster.group_master(1).exists(&key));
    migrating(&cluster, &[slot]);

    // INCR does not run on the source (its reply would go through Lua).
    assert_eq!(c.cmd_text(&["INCR", &key]), ":2\r\n");
    assert!(!cluster.group_master(1).exists(&key), "left on the source");
    assert!(cluster.group_master(2).exists(&key), "not on the target");
    let ttl = String::from_utf8(cluster.group_master(2).cmd(&["TTL", key.as_str()])).unwrap();
    let ttl: i64 = ttl.trim_start_matches(':').trim().parse().unwrap();
    assert!((990..=1000).contains(&ttl), "ttl {ttl}");
    assert_eq!(c.cmd_text(&["GET", &key]), "$1\r\n2\r\n");
}

#[test]
fn reads_of_keys_still_on_the_source_are_answered_there_without_a_move() {
    let cluster = Cluster::builder().groups(2).build();
    let (_, slot) = group1_slot(&cluster, "moa:");
    let tag = shardis_tests::tag_in_slot(slot);
    let (s, h, a, b) = (
        format!("{{{tag}}}s"),
        format!("{{{tag}}}h"),
        format!("{{{tag}}}a"),
        format!("{{{tag}}}b"),
    );
    let mut c = cluster.conn(0);
    assert_eq!(c.cmd_text(&["SET", &s, "v"]), "+OK\r\n");
    assert_eq!(c.cmd_text(&["HSET", &h, "f", "1"]), ":1\r\n");
    assert_eq!(c.cmd_text(&["SADD", &a, "x", "y"]), ":2\r\n");
    assert_eq!(c.cmd_text(&["SADD", &b, "y", "z"]), ":2\r\n");
    migrating(&cluster, &[slot]);
    let (source, target) = (cluster.group_master(1), cluster.group_master(2));

    // Single-key reads, in RESP2 and RESP3 (a map stays a map).
    assert_eq!(c.cmd_text(&["GET", &s]), "$1\r\nv\r\n");
    assert_eq!(c.cmd_text(&["STRLEN", &s]), ":1\r\n");
    // An inline command (telnet, health checkers) is read there too.
    c.send_raw(format!("GET {s}\r\n").as_bytes());
    assert_eq!(String::from_utf8(c.read_raw()).unwrap(), "$1\r\nv\r\n");
    assert_eq!(c.cmd_text(&["HGETALL", &h]), "*2\r\n$1\r\nf\r\n$1\r\n1\r\n");
    let mut c3 = cluster.conn(0);
    assert!(c3.cmd_text(&["HELLO", "3"]).starts_with('%'));
    assert_eq!(
        c3.cmd_text(&["HGETALL", &h]),
        "%1\r\n$1\r\nf\r\n$1\r\n1\r\n"
    );
    // A read answering an error there still answers it.
    assert!(c.cmd_text(&["LLEN", &s]).starts_with("-WRONGTYPE"));
    // A multi-key read in the slot, every key there.
    assert_eq!(c.cmd_text(&["SINTERCARD", "2", &a, &b]), ":1\r\n");
    for k in [&s, &h, &a, &b] {
        assert!(source.exists(k), "{k} moved by a read");
        assert!(!target.exists(k), "{k} copied by a read");
    }

    // A read of a missing key finds nothing and creates nothing anywhere.
    let missing = format!("{{{tag}}}missing");
    assert_eq!(c.cmd_text(&["GET", &missing]), "$-1\r\n");
    assert!(!source.exists(&missing) && !target.exists(&missing));

    // Once a write moved a key, reads see the write (from the target).
    // (HINCRBY moves its key: integer replies through Lua could lose digits.)
    // A pipeline: write, then read, of a key still on the source.
    c.send(&["HINCRBY", &h, "f", "1"]);
    c.send(&["HGET", &h, "f"]);
    assert_eq!(String::from_utf8(c.read_raw()).unwrap(), ":2\r\n");
    assert_eq!(String::from_utf8(c.read_raw()).unwrap(), "$1\r\n2\r\n");
    assert!(!source.exists(&h) && target.exists(&h));

    // A multi-key read with one key moved and one not: both move, and the
    // command runs on the target.
    assert_eq!(c.cmd_text(&["SINTERSTORE", &b, &b]), ":2\r\n");
    assert!(source.exists(&a) && target.exists(&b));
    assert_eq!(c.cmd_text(&["SINTERCARD", "2", &a, &b]), ":1\r\n");
    assert!(!source.exists(&a) && target.exists(&a));
}

#[test]
fn new_keys_of_a_migrating_slot_are_written_on_the_target_only() {
    let cluster = Cluster::builder().groups(2).build();
    let (_, slot) = group1_slot(&cluster, "moa:");
    migrating(&cluster, &[slot]);
    let mut c = cluster.conn(0);
    for i in 0..20 {
        let key = key_in_slot(&format!("new{i}:"), slot);
        assert_eq!(c.cmd_text(&["SET", &key, "x"]), "+OK\r\n");
        assert!(cluster.group_master(2).exists(&key));
        assert!(!cluster.group_master(1).exists(&key));
        assert_eq!(c.cmd_text(&["INCR", &format!("{key}:n")]), ":1\r\n");
    }
}

#[test]
fn multi_key_commands_move_all_their_keys_together() {
    let cluster = Cluster::builder().groups(2).build();
    let (_, slot) = group1_slot(&cluster, "moa:");
    // Both keys share a hash tag that hashes to `slot`.
    let tag = shardis_tests::tag_in_slot(slot);
    let (a, b) = (format!("{{{tag}}}a"), format!("{{{tag}}}b"));
    let mut c = cluster.conn(0);
    assert_eq!(c.cmd_text(&["SET", &a, "1"]), "+OK\r\n");
    assert_eq!(c.cmd_text(&["SET", &b, "2"]), "+OK\r\n");
    migrating(&cluster, &[slot]);
    assert_eq!(c.cmd_text(&["RENAME", &a, &b]), "+OK\r\n");
    assert_eq!(c.cmd_text(&["GET", &b]), "$1\r\n1\r\n");
    assert!(!cluster.group_master(1).exists(&a) && !cluster.group_master(1).exists(&b));
    assert!(cluster.group_master(2).exists(&b));
}

#[test]
fn fan_out_commands_span_migrating_and_normal_slots() {
    let cluster = Cluster::builder().groups(2).build();
    let keys1 = cluster.keys_of_group(1, "fan1:", 6);
    let keys2 = cluster.keys_of_group(2, "fan2:", 4);
    let mut c = cluster.conn(0);
    let mut mset = vec!["MSET".to_string()];
    for k in keys1.iter().chain(&keys2) {
        mset.push(k.clone());
        mset.push(format!("v-{k}"));
    }
    assert_eq!(c.cmd_text(&mset), "+OK\r\n");
    // Half of group 1's keys are in migrating slots.
    let moving: Vec<usize> = keys1[..3]
        .iter()
        .map(|k| slot_of(k.as_bytes()) as usize)
        .collect();
    migrating(&cluster, &moving);

    let mut mget = vec!["MGET".to_string()];
    mget.extend(keys1.iter().chain(&keys2).cloned());
    mget.push("fan:missing".into());
    let reply = c.cmd_text(&mget);
    for k in keys1.iter().chain(&keys2) {
        assert!(reply.contains(&format!("v-{k}")), "{reply}");
    }
    assert!(reply.ends_with("$-1\r\n"), "{reply}");
    for k in &keys1[..3] {
        assert!(cluster.group_master(2).exists(k) && !cluster.group_master(1).exists(k));
    }
    let mut del = vec!["DEL".to_string()];
    del.extend(keys1.iter().chain(&keys2).cloned());
    assert_eq!(c.cmd_text(&del), ":10\r\n");
}

/// Writes of keys still on the source run there, atomically with the check
/// that every key is there, and answer exactly what Redis answers, in RESP2
/// and RESP3; keys not there are written on the target; writes that could
/// delete their key or give it an expiry move it first, and so does every
/// write in the mover's safe mode.
#[test]
fn writes_of_keys_still_on_the_source_run_there_with_their_own_replies() {
    let cluster = Cluster::builder().groups(2).build();
    let (_, slot) = group1_slot(&cluster, "wos:");
    let tag = shardis_tests::tag_in_slot(slot);
    let k = |name: &str| format!("{{{tag}}}{name}");
    let mut c = cluster.conn(0);
    for (name, value) in [
        ("s2", "v"),
        ("s3", "v"),
        ("e", "v"),
        ("n", "9007199254740993"),
        ("safe", "v"),
    ] {
        assert_eq!(c.cmd_text(&["SET", &k(name), value]), "+OK\r\n");
    }
    assert_eq!(c.cmd_text(&["RPUSH", &k("l"), "a", "b", "c"]), ":3\r\n");
    assert_eq!(c.cmd_text(&["HSET", &k("h"), "f", "1"]), ":1\r\n");
    migrating(&cluster, &[slot]);
    let (source, target) = (cluster.group_master(1), cluster.group_master(2));
    let on_source = |key: &str| source.exists(key) && !target.exists(key);
    let on_target = |key: &str| !source.exists(key) && target.exists(key);

    let mut c3 = cluster.conn(0);
    assert!(c3.cmd_text(&["HELLO", "3"]).starts_with('%'));
    for (conn, s, null) in [(&mut c, k("s2"), "$-1\r\n"), (&mut c3, k("s3"), "_\r\n")] {
        assert_eq!(conn.cmd_text(&["SET", &s, "w"]), "+OK\r\n");
        assert_eq!(conn.cmd_text(&["SET", &s, "x", "NX"]), null);
        assert_eq!(conn.cmd_text(&["SET", &s, "y", "GET"]), "$1\r\nw\r\n");
        assert_eq!(conn.cmd_text(&["APPEND", &s, "z"]), ":2\r\n");
        assert_eq!(
            conn.cmd_text(&["LPUSH", &s, "e"]),
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n"
        );
        assert_eq!(conn.cmd_text(&["PERSIST", &s]), ":0\r\n");
        assert_eq!(conn.cmd_text(&["GET", &s]), "$2\r\nyz\r\n");
        assert!(on_source(&s), "{s} moved");
    }
    assert_eq!(c.cmd_text(&["RPUSH", &k("l"), "d"]), ":4\r\n");
    assert_eq!(
        c3.cmd_text(&["LINSERT", &k("l"), "BEFORE", "a", "0"]),
        ":5\r\n"
    );
    assert_eq!(c.cmd_text(&["HSET", &k("h"), "f", "2", "g", "3"]), ":1\r\n");
    assert!(on_source(&k("l")) && on_source(&k("h")));
    // They ran as EVALSHA of the cached script; with the source's script
    // cache flushed, a write costs one EVAL more, and still runs there.
    let stats = String::from_utf8_lossy(&source.cmd(&["INFO", "commandstats"])).into_owned();
    assert!(stats.contains("cmdstat_evalsha:calls="), "{stats}");
    source.cmd(&["SCRIPT", "FLUSH"]);
    assert_eq!(c.cmd_text(&["APPEND", &k("s3"), "!"]), ":3\r\n");
    assert_eq!(c3.cmd_text(&["APPEND", &k("s3"), "!"]), ":4\r\n");
    assert!(on_source(&k("s3")));

    // A write that could delete its key or give it an expiry moves it first.
    assert_eq!(
        c3.cmd_text(&["LPOP", &k("l"), "2"]),
        "*2\r\n$1\r\n0\r\n$1\r\na\r\n"
    );
    assert!(on_target(&k("l")));
    assert_eq!(c.cmd_text(&["HDEL", &k("h"), "g"]), ":1\r\n");
    assert!(on_target(&k("h")));
    assert_eq!(c.cmd_text(&["SET", &k("e"), "w", "EX", "1000"]), "+OK\r\n");
    assert!(on_target(&k("e")));
    // A key not on the source is written on the target, without a move.
    assert_eq!(c.cmd_text(&["RPUSH", &k("new"), "x"]), ":1\r\n");
    assert!(on_target(&k("new")));
    // An integer reply Lua could not carry exactly: the key moves instead.
    assert_eq!(
        c.cmd_text(&["INCRBY", &k("n"), "0"]),
        ":9007199254740993\r\n"
    );
    assert!(on_target(&k("n")));
    // What was written on the source moved with the key.
    assert_eq!(
        c.cmd_text(&["INCRBY", &k("s2"), "1"]).get(..4),
        Some("-ERR")
    );
    assert!(on_target(&k("s2")));
    assert_eq!(c.cmd_text(&["GET", &k("s2")]), "$2\r\nyz\r\n");

    // Safe mode: the mover deletes the source's copies after copying them,
    // so a write moves its key first.
    migrating_in(&cluster, &[slot], true);
    assert_eq!(c.cmd_text(&["SET", &k("safe"), "w"]), "+OK\r\n");
    assert!(on_target(&k("safe")));
}

/// A key on both servers (what a MIGRATE that failed half-way leaves) while
/// the slot migrates: the source's copy is the latest, so it is the one
/// read, written, and finally moved over the target's.
#[test]
fn a_key_left_on_both_servers_counts_on_the_source() {
    let cluster = Cluster::builder().groups(2).build();
    let (key, slot) = group1_slot(&cluster, "both:");
    cluster.group_master(1).cmd(&["SET", key.as_str(), "1"]);
    cluster.group_master(2).cmd(&["SET", key.as_str(), "stale"]);
    migrating(&cluster, &[slot]);
    let mut c = cluster.conn(0);
    assert_eq!(c.cmd_text(&["GET", &key]), "$1\r\n1\r\n");
    assert_eq!(c.cmd_text(&["SET", &key, "5"]), "+OK\r\n");
    assert_eq!(
        cluster.group_master(2).cmd(&["GET", key.as_str()]),
        b"$5\r\nstale\r\n"
    );
    // A write that may delete its key moves it first (replacing the stale
    // copy), so the stale copy never shows once the key is gone.
    let list = key_in_slot("both-list:", slot);
    cluster.group_master(1).cmd(&["RPUSH", list.as_str(), "a"]);
    cluster
        .group_master(2)
        .cmd(&["SET", list.as_str(), "stale"]);
    assert_eq!(c.cmd_text(&["RPUSH", &list, "b"]), ":2\r\n");
    assert_eq!(
        c.cmd_text(&["LPOP", &list, "2"]),
        "*2\r\n$1\r\na\r\n$1\r\nb\r\n"
    );
    assert!(!cluster.group_master(1).exists(&list) && !cluster.group_master(2).exists(&list));
    assert_eq!(c.cmd_text(&["GET", &list]), "$-1\r\n");
    // INCR moves the key (replacing the stale copy), then runs.
    assert_eq!(c.cmd_text(&["INCR", &key]), ":6\r\n");
    assert!(!cluster.group_master(1).exists(&key));
    assert_eq!(
        cluster.group_master(2).cmd(&["GET", key.as_str()]),
        b"$1\r\n6\r\n"
    );
}

/// In safe mode a key on both servers is the mover's copy waiting for its
/// delete: a write's move answers BUSYKEY, and after a short wait the
/// client gets an error and nothing runs.
#[test]
fn a_failed_move_answers_an_error_and_runs_nothing() {
    let cluster = Cluster::builder().groups(2).build();
    let (key, slot) = group1_slot(&cluster, "busy:");
    cluster
        .group_master(1)
        .cmd(&["SET", key.as_str(), "source"]);
    cluster
        .group_master(2)
        .cmd(&["SET", key.as_str(), "target"]);
    migrating_in(&cluster, &[slot], true);
    let mut c = cluster.conn(0);
    let reply = c.cmd_text(&["SET", &key, "client"]);
    assert!(
        reply.starts_with("-TRYAGAIN") && reply.contains("BUSYKEY"),
        "{reply}"
    );
    assert_eq!(
        cluster.group_master(2).cmd(&["GET", key.as_str()]),
        b"$6\r\ntarget\r\n"
    );
    assert_eq!(
        cluster.group_master(1).cmd(&["GET", key.as_str()]),
        b"$6\r\nsource\r\n"
    );
    // The session lives on.
    assert_eq!(c.cmd_text(&["PING"]), "+PONG\r\n");
}

/// Two proxies incrementing the same keys while they move: every
/// acknowledged increment is counted on the target.
#[test]
fn concurrent_proxies_lose_no_increment() {
    let cluster = Cluster::builder().groups(2).proxies(2).build();
    let keys = cluster.keys_of_group(1, "cnt:", 8);
    let mut c = cluster.conn(0);
    for k in &keys {
        assert_eq!(c.cmd_text(&["SET", k, "0"]), "+OK\r\n");
    }
    let slots: Vec<usize> = keys
        .iter()
        .map(|k| slot_of(k.as_bytes()) as usize)
        .collect();
    migrating(&cluster, &slots);
    let per_worker = 200;
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let mut conn = cluster.conn(w % 2);
            let keys = keys.clone();
            thread::spawn(move || {
                let mut acked = 0;
                for i in 0..per_worker {
                    let k = &keys[(i + w) % keys.len()];
                    let r = conn.cmd_text(&["INCR", k]);
                    assert!(r.starts_with(':'), "{r}");
                    acked += 1;
                }
                acked
            })
        })
        .collect();
    let acked: i64 = workers.into_iter().map(|h| h.join().unwrap()).sum();
    let mut total = 0;
    for k in &keys {
        assert!(!cluster.group_master(1).exists(k), "{k} left on the source");
        let v = String::from_utf8(cluster.group_master(2).cmd(&["GET", k.as_str()])).unwrap();
        total += v.lines().nth(1).unwrap().parse::<i64>().unwrap();
    }
    assert_eq!(total, acked);
}
