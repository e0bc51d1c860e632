//! The differential test: a seeded random sequence of commands is sent both
//! through the proxy (two groups) and to one plain standalone redis-server, in
//! RESP2 and in RESP3, and every reply must be equal byte for byte.
//!
//! Normalisations (everything else is compared exactly), see [`Norm`]:
//! - SMEMBERS, HKEYS: elements sorted. A set or hash stored as a hash table
//!   iterates in an order that depends on the process's random hash seed, so
//!   two servers legitimately differ.
//! - HGETALL: field/value pairs sorted by field (RESP2 flat array or RESP3
//!   map), for the same reason.
//! - TTL, PTTL: only -2 / -1 / "positive" is compared, since the two servers
//!   read their clocks at slightly different moments. Every expiry set in the
//!   run is at least 100 s away, so nothing expires during the run; expiries of
//!   0 or below (immediate deletion) are deterministic and used too.
//!
//! Cross-slot multi-key commands, refused by design, are not in this run (see
//! fanout.rs); multi-key commands here use keys under one hash tag.
//!
//! `SHARDIS_DIFF_SEED` (decimal or 0x-hex) changes the seed,
//! `SHARDIS_DIFF_COMMANDS` the number of commands, and
//! `SHARDIS_DIFF_KEEP_GOING=1` reports up to 20 differences instead of
//! stopping at the first one (later ones may follow from the first).

use std::collections::BTreeMap;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use shardis_tests::{describe_command, escape, escape_short, Cluster, Norm, RedisServer, Twin};

const DEFAULT_SEED: u64 = 0x5ba7_d15f;
const DEFAULT_COMMANDS: usize = 3000;

fn env_seed() -> u64 {
    match std::env::var("SHARDIS_DIFF_SEED") {
        Ok(s) => {
            let s = s.trim();
            let parsed = match s.strip_prefix("0x") {
                Some(hex) => u64::from_str_radix(hex, 16),
                None => s.parse(),
            };
            parsed.unwrap_or_else(|_| panic!("SHARDIS_DIFF_SEED={s:?} is not a number"))
        }
        Err(_) => DEFAULT_SEED,
    }
}

fn env_commands() -> usize {
    std::env::var("SHARDIS_DIFF_COMMANDS")
        .ok()
        .map(|s| s.parse().expect("SHARDIS_DIFF_COMMANDS is a number"))
        .unwrap_or(DEFAULT_COMMANDS)
}

// ---------------------------------------------------------------------------
// Key space
// ---------------------------------------------------------------------------

/// Keys of one hash tag, for multi-key commands (all in one slot).
struct Tagged {
    sets: [String; 3],
    strings: [String; 3],
    lists: [String; 2],
    zsets: [String; 3],
}

impl Tagged {
    fn new(tag: &str) -> Tagged {
        let k = |name: &str| format!("{{{tag}}}{name}");
        Tagged {
            sets: [k("a"), k("b"), k("c")],
            strings: [k("x"), k("y"), k("w")],
            lists: [k("l1"), k("l2")],
            zsets: [k("z1"), k("z2"), k("z3")],
        }
    }
}

/// About 50 keys, so that commands collide: each plain key is mostly used
/// with its own type, sometimes with another (WRONGTYPE).
struct Keys {
    strings: Vec<String>,
    hashes: Vec<String>,
    lists: Vec<String>,
    sets: Vec<String>,
    zsets: Vec<String>,
    missing: Vec<String>,
    tagged: Vec<Tagged>,
    all: Vec<String>,
}

impl Keys {
    fn new(tags: &[String]) -> Keys {
        let pool =
            |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i}")).collect::<Vec<_>>();
        let mut keys = Keys {
            strings: pool("str:", 8),
            hashes: pool("hash:", 6),
            lists: pool("list:", 6),
            sets: pool("set:", 6),
            zsets: pool("zset:", 6),
            missing: pool("never:", 3),
            tagged: tags.iter().map(|t| Tagged::new(t)).collect(),
            all: Vec::new(),
        };
        let mut all: Vec<String> = [
            &keys.strings,
            &keys.hashes,
            &keys.lists,
            &keys.sets,
            &keys.zsets,
        ]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
        for t in &keys.tagged {
            all.extend(
                t.sets
                    .iter()
                    .chain(&t.strings)
                    .chain(&t.lists)
                    .chain(&t.zsets)
                    .cloned(),
            );
        }
        keys.all = all;
        keys
    }
}

// ---------------------------------------------------------------------------
// Generator
// ---------------------------------------------------------------------------

struct Gen<'a> {
    rng: StdRng,
    keys: &'a Keys,
}

const VALUES: &[&str] = &[
    "a",
    "b",
    "hello",
    "x y",
    "",
    "1",
    "2",
    "10",
    "-3",
    "007",
    "3.5",
    "\u{e9}t\u{e9}",
];
const FIELDS: &[&str] = &["f1", "f2", "f3", "f4", "n"];
const MEMBERS: &[&str] = &["m1", "m2", "m3", "m4", "5", "6"];
const SCORES: &[&str] = &[
    "1", "2", "2.5", "-3", "0.1", "100", "1e3", "-inf", "+inf", "0",
];

impl Gen<'_> {
    fn pick<'k>(&mut self, pool: &'k [String]) -> &'k str {
        pool.choose(&mut self.rng).expect("pools are not empty")
    }

    /// A key of `pool` most of the time, any key sometimes (type errors), a
    /// missing key rarely.
    fn key(&mut self, pool: &[String]) -> String {
        let keys = self.keys;
        match self.rng.random_range(0..100) {
            0..=87 => self.pick(pool).to_string(),
            88..=96 => self.pick(&keys.all).to_string(),
            _ => self.pick(&keys.missing).to_string(),
        }
    }

    fn value(&mut self) -> String {
        VALUES.choose(&mut self.rng).unwrap().to_string()
    }
    fn field(&mut self) -> String {
        FIELDS.choose(&mut self.rng).unwrap().to_string()
    }
    fn member(&mut self) -> String {
        MEMBERS.choose(&mut self.rng).unwrap().to_string()
    }
    fn score(&mut self) -> String {
        SCORES.choose(&mut self.rng).unwrap().to_string()
    }
    fn int(&mut self, lo: i64, hi: i64) -> String {
        self.rng.random_range(lo..=hi).to_string()
    }
    fn coin(&mut self, percent: u32) -> bool {
        self.rng.random_range(0..100) < percent
    }
    /// An expiry that cannot pass during the run, or (rarely) one that deletes at once.
    fn seconds(&mut self) -> String {
        if self.coin(5) {
            self.int(-2, 0)
        } else {
            self.int(100, 100_000)
        }
    }
    fn millis(&mut self) -> String {
        if self.coin(5) {
            "0".to_string()
        } else {
            self.int(100_000, 100_000_000)
        }
    }

    /// Keys for a fan-out command: from all groups, with duplicates and missing keys.
    fn fanout_keys(&mut self, pool_all: bool) -> Vec<String> {
        let space = self.keys;
        let n = self.rng.random_range(1..=7);
        let mut keys: Vec<String> = Vec::new();
        for _ in 0..n {
            let k = match self.rng.random_range(0..10) {
                0 => self.pick(&space.missing).to_string(),
                1 if !keys.is_empty() => keys[self.rng.random_range(0..keys.len())].clone(),
                _ if pool_all => self.pick(&space.all).to_string(),
                _ => self.pick(&space.strings).to_string(),
            };
            keys.push(k);
        }
        keys
    }

    /// One command and how to compare its reply; also its category for the summary.
    fn command(&mut self) -> (&'static str, Vec<String>, Norm) {
        let keys = self.keys;
        let cat = match self.rng.random_range(0..100) {
            0..=21 => "string",
            22..=35 => "hash",
            36..=49 => "list",
            50..=59 => "set",
            60..=71 => "zset",
            72..=77 => "expiry",
            78..=89 => "fanout",
            _ => "tagged",
        };
        let mut norm = Norm::Exact;
        let args: Vec<String> = match cat {
            "string" => {
                let k = self.key(&keys.strings);
                match self.rng.random_range(0..13) {
                    0 | 1 => {
                        let mut a = vec!["SET".into(), k, self.value()];
                        match self.rng.random_range(0..6) {
                            0 => a.extend(["EX".into(), self.seconds()]),
                            1 => a.extend(["PX".into(), self.millis()]),
                            2 => a.push("KEEPTTL".into()),
                            _ => {}
                        }
                        match self.rng.random_range(0..5) {
                            0 => a.push("NX".into()),
                            1 => a.push("XX".into()),
                            _ => {}
                        }
                        if self.coin(25) {
                            a.push("GET".into());
                        }
                        a
                    }
                    2 => vec!["GET".into(), k],
                    3 => vec!["APPEND".into(), k, self.value()],
                    4 => vec!["INCR".into(), k],
                    5 => vec!["INCRBY".into(), k, self.int(-100, 100)],
                    6 => vec!["DECR".into(), k],
                    7 => vec!["GETRANGE".into(), k, self.int(-6, 6), self.int(-6, 10)],
                    8 => vec!["STRLEN".into(), k],
                    9 => vec!["SETRANGE".into(), k, self.int(0, 12), self.value()],
                    10 => vec!["GETDEL".into(), k],
                    11 => {
                        let mut a = vec!["GETEX".into(), k];
                        match self.rng.random_range(0..4) {
                            0 => a.extend(["EX".into(), self.int(100, 100_000)]),
                            1 => a.extend(["PX".into(), self.int(100_000, 10_000_000)]),
                            2 => a.push("PERSIST".into()),
                            _ => {}
                        }
                        a
                    }
                    _ => vec!["SETNX".into(), k, self.value()],
                }
            }
            "hash" => {
                let k = self.key(&keys.hashes);
                match self.rng.random_range(0..10) {
                    0 | 1 => {
                        let mut a = vec!["HSET".into(), k];
                        for _ in 0..self.rng.random_range(1..=3) {
                            a.extend([self.field(), self.value()]);
                        }
                        a
                    }
                    2 => vec!["HGET".into(), k, self.field()],
                    3 => vec!["HMGET".into(), k, self.field(), self.field(), self.field()],
                    4 => vec!["HDEL".into(), k, self.field(), self.field()],
                    5 => vec!["HINCRBY".into(), k, self.field(), self.int(-10, 10)],
                    6 => {
                        norm = Norm::UnorderedPairs;
                        vec!["HGETALL".into(), k]
                    }
                    7 => vec!["HLEN".into(), k],
                    8 => vec!["HEXISTS".into(), k, self.field()],
                    _ => {
                        norm = Norm::Unordered;
                        vec!["HKEYS".into(), k]
                    }
                }
            }
            "list" => {
                let k = self.key(&keys.lists);
                match self.rng.random_range(0..11) {
                    0 | 1 => {
                        let cmd = if self.coin(50) { "LPUSH" } else { "RPUSH" };
                        let mut a = vec![cmd.into(), k];
                        for _ in 0..self.rng.random_range(1..=3) {
                            a.push(self.value());
                        }
                        a
                    }
                    2 => {
                        let mut a = vec!["LPOP".into(), k];
                        if self.coin(30) {
                            a.push(self.int(0, 3));
                        }
                        a
                    }
                    3 => vec!["RPOP".into(), k],
                    4 | 5 => vec!["LRANGE".into(), k, self.int(-5, 3), self.int(-3, 10)],
                    6 => vec!["LLEN".into(), k],
                    7 => vec!["LINDEX".into(), k, self.int(-4, 4)],
                    8 => vec!["LSET".into(), k, self.int(-3, 3), self.value()],
                    _ => vec!["LREM".into(), k, self.int(-2, 2), self.value()],
                }
            }
            "set" => {
                let k = self.key(&keys.sets);
                match self.rng.random_range(0..6) {
                    0 | 1 => {
                        let mut a = vec!["SADD".into(), k];
                        for _ in 0..self.rng.random_range(1..=3) {
                            a.push(self.member());
                        }
                        a
                    }
                    2 => vec!["SREM".into(), k, self.member(), self.member()],
                    3 => {
                        norm = Norm::Unordered;
                        vec!["SMEMBERS".into(), k]
                    }
                    4 => vec!["SISMEMBER".into(), k, self.member()],
                    _ => vec!["SCARD".into(), k],
                }
            }
            "zset" => {
                let k = self.key(&keys.zsets);
                match self.rng.random_range(0..9) {
                    0 | 1 => {
                        let mut a = vec!["ZADD".into(), k];
                        match self.rng.random_range(0..8) {
                            0 => a.push("NX".into()),
                            1 => a.push("XX".into()),
                            2 => a.push("GT".into()),
                            3 => a.push("LT".into()),
                            _ => {}
                        }
                        if self.coin(20) {
                            a.push("CH".into());
                        }
                        for _ in 0..self.rng.random_range(1..=3) {
                            a.extend([self.score(), self.member()]);
                        }
                        a
                    }
                    2 => vec![
                        "ZRANGE".into(),
                        k,
                        "0".into(),
                        "-1".into(),
                        "WITHSCORES".into(),
                    ],
                    3 => vec!["ZSCORE".into(), k, self.member()],
                    4 => vec!["ZINCRBY".into(), k, self.score(), self.member()],
                    5 => vec!["ZREM".into(), k, self.member(), self.member()],
                    6 => vec!["ZCARD".into(), k],
                    _ => {
                        let (lo, hi) = (self.score(), self.score());
                        let mut a = vec!["ZRANGEBYSCORE".into(), k, lo, hi];
                        if self.coin(50) {
                            a.push("WITHSCORES".into());
                        }
                        if self.coin(25) {
                            a.extend(["LIMIT".into(), self.int(0, 2), self.int(-1, 3)]);
                        }
                        a
                    }
                }
            }
            "expiry" => {
                let k = self.pick(&keys.all).to_string();
                match self.rng.random_range(0..6) {
                    0 => vec!["EXPIRE".into(), k, self.seconds()],
                    1 => vec!["PEXPIRE".into(), k, self.millis()],
                    2 | 3 => {
                        norm = Norm::TtlSign;
                        vec!["TTL".into(), k]
                    }
                    4 => {
                        norm = Norm::TtlSign;
                        vec!["PTTL".into(), k]
                    }
                    _ => vec!["PERSIST".into(), k],
                }
            }
            "fanout" => match self.rng.random_range(0..10) {
                0..=2 => [vec!["MGET".to_string()], self.fanout_keys(true)].concat(),
                3 | 4 => {
                    let mut a = vec!["MSET".to_string()];
                    for k in self.fanout_keys(false) {
                        a.extend([k, self.value()]);
                    }
                    a
                }
                5 => [vec!["DEL".to_string()], self.fanout_keys(true)].concat(),
                6 | 7 => [vec!["EXISTS".to_string()], self.fanout_keys(true)].concat(),
                8 => [vec!["UNLINK".to_string()], self.fanout_keys(true)].concat(),
                _ => [vec!["TOUCH".to_string()], self.fanout_keys(true)].concat(),
            },
            _ => {
                let t = &keys.tagged[self.rng.random_range(0..keys.tagged.len())];
                let [a, b, c] = &t.sets;
                let [x, y, w] = &t.strings;
                let [l1, l2] = &t.lists;
                let [z1, z2, z3] = &t.zsets;
                let side = |g: &mut Self| if g.coin(50) { "LEFT" } else { "RIGHT" }.to_string();
                let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
                match self.rng.random_range(0..20) {
                    0 | 1 => s(&[
                        "SADD",
                        [a, b].choose(&mut self.rng).unwrap(),
                        &self.member(),
                        &self.member(),
                    ]),
                    2 => s(&["SUNIONSTORE", c, a, b]),
                    3 => s(&["SINTERSTORE", c, a, b]),
                    4 => s(&["SMOVE", a, b, &self.member()]),
                    5 => {
                        norm = Norm::Unordered;
                        s(&["SMEMBERS", [a, b, c].choose(&mut self.rng).unwrap()])
                    }
                    6 => s(&["SET", [x, y].choose(&mut self.rng).unwrap(), &self.value()]),
                    7 => s(&["RENAME", x, y]),
                    8 => s(&["RENAMENX", y, w]),
                    9 => s(&["MSETNX", x, &self.value(), y, &self.value()]),
                    10 => s(&["MGET", x, y, w]),
                    11 => s(&[
                        "RPUSH",
                        [l1, l2].choose(&mut self.rng).unwrap(),
                        &self.value(),
                    ]),
                    12 => {
                        let (from, to) = (side(self), side(self));
                        s(&["LMOVE", l1, l2, &from, &to])
                    }
                    13 => s(&["RPOPLPUSH", l2, l1]),
                    14 => s(&["LRANGE", [l1, l2].choose(&mut self.rng).unwrap(), "0", "-1"]),
                    15 => s(&[
                        "ZADD",
                        [z1, z2].choose(&mut self.rng).unwrap(),
                        &self.score(),
                        &self.member(),
                    ]),
                    16 => s(&["ZUNIONSTORE", z3, "2", z1, z2]),
                    17 => s(&["ZINTERSTORE", z3, "2", z1, z2, "WEIGHTS", "2", "0.5"]),
                    18 => s(&[
                        "ZRANGE",
                        [z1, z2, z3].choose(&mut self.rng).unwrap(),
                        "0",
                        "-1",
                        "WITHSCORES",
                    ]),
                    _ => s(&["SMOVE", b, a, &self.member()]),
                }
            }
        };
        (cat, args, norm)
    }
}

// ---------------------------------------------------------------------------
// The run
// ---------------------------------------------------------------------------

/// `migrate`: a third of the way in, every slot of group 1 starts migrating
/// to group 2 and every other key of group 1 is moved there (as a mover
/// half-way through its wave would have done); two thirds in, group 2's
/// slots migrate to group 1 the same way. From then on the replies come
/// through the paths of migrating slots (read on the source, write in the
/// source's script, move then run on the target), and must still be plain
/// Redis's, byte for byte.
/// `Migrate::Safe`: the same in the mover's safe mode, where writes never
/// run on the source (every one moves its keys first).
fn run_differential(resp3: bool, migrate: Migrate) {
    let seed = env_seed();
    let count = env_commands();
    let keep_going = std::env::var("SHARDIS_DIFF_KEEP_GOING").is_ok_and(|v| v == "1");
    let proto = if resp3 { "RESP3" } else { "RESP2" };

    let cluster = Cluster::builder().groups(2).build();
    let plain = RedisServer::start();
    // One tag owned by each group.
    let tags: Vec<String> = [1, 2]
        .iter()
        .map(|&g| cluster.keys_of_group(g, "tag", 1).remove(0))
        .collect();
    let keys = Keys::new(&tags);
    let mut owners = BTreeMap::new();
    for k in &keys.all {
        *owners.entry(cluster.owner_of(k)).or_insert(0) += 1;
    }
    assert!(
        owners.len() == 2 && owners.values().all(|&n| n >= 10),
        "the key space should spread over both groups: {owners:?}"
    );

    let mut twin = Twin::new(cluster.proxy(0).conn(), plain.conn());
    if resp3 {
        twin.hello3();
    }
    let mut gen = Gen {
        rng: StdRng::seed_from_u64(seed),
        keys: &keys,
    };
    let mut history: Vec<String> = Vec::new();
    let mut differences: Vec<String> = Vec::new();
    let mut per_category: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for i in 0..count {
        if migrate != Migrate::No && (i == count / 3 || i == 2 * count / 3) {
            let (from, to) = if i == count / 3 { (1, 2) } else { (2, 1) };
            start_migrating(&cluster, &keys.all, from, to, migrate == Migrate::Safe);
            history.push(format!("{i}: group {from}'s slots migrate to group {to}"));
        }
        let (cat, args, norm) = gen.command();
        let result = twin.compare(&args, norm);
        let entry = per_category.entry(cat).or_default();
        entry.0 += 1;
        match result {
            Ok(reply) => {
                if reply.starts_with(b"-") {
                    entry.1 += 1;
                }
                history.push(format!(
                    "{i}: {} -> {}",
                    describe_command(&args),
                    escape_short(&reply, 120)
                ));
            }
            Err(diff) => {
                let context = history[history.len().saturating_sub(12)..].join("\n  ");
                differences.push(format!(
                    "command {i} of {count} ({proto}, seed {seed:#x}): {diff}\n previous commands:\n  {context}"
                ));
                if !keep_going || differences.len() >= 20 {
                    break;
                }
                history.push(format!("{i}: {} -> DIFFERENT", describe_command(&args)));
            }
        }
    }
    assert!(
        differences.is_empty(),
        "the proxy differs from plain redis ({} difference(s) shown):\n{}\n{}",
        differences.len(),
        differences.join("\n\n"),
        cluster.proxy_logs()
    );
    eprintln!("{proto}, seed {seed:#x}: {count} commands; (sent, error replies) per category: {per_category:?}");

    // The whole key space ends up the same: same number of keys, same types.
    twin.check(&["DBSIZE"]);
    for k in &keys.all {
        twin.check(&["TYPE", k.as_str()]);
    }
    for g in [1, 2] {
        assert!(
            cluster.group_master(g).dbsize() > 0,
            "group {g} holds no keys after the run"
        );
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Migrate {
    No,
    Yes,
    Safe,
}

/// Sets every slot `from` owns to `migrating(from, to)`, and moves every
/// other key of `keys` on `from` to `to` (with `MIGRATE`, as the mover does).
fn start_migrating(cluster: &Cluster, keys: &[String], from: u32, to: u32, safe: bool) {
    use shardis_topology::SlotState;
    let slots: Vec<usize> = cluster
        .topology()
        .slots
        .iter()
        .enumerate()
        .filter(|(_, st)| **st == SlotState::Normal { group: from })
        .map(|(s, _)| s)
        .collect();
    let v = cluster.set_slots(slots, SlotState::Migrating { from, to, safe });
    cluster.wait_applied(v);
    let (source, target) = (cluster.group_master(from), cluster.group_master(to));
    let port = target.port().to_string();
    for k in keys.iter().filter(|k| source.exists(k)).step_by(2) {
        let reply = source.cmd(&["MIGRATE", "127.0.0.1", &port, k, "0", "5000"]);
        assert_eq!(reply, b"+OK\r\n", "MIGRATE {k}");
    }
}

#[test]
fn differential_resp2() {
    run_differential(false, Migrate::No);
}

#[test]
fn differential_resp3() {
    run_differential(true, Migrate::No);
}

#[test]
fn differential_resp2_while_slots_migrate() {
    run_differential(false, Migrate::Yes);
}

#[test]
fn differential_resp3_while_slots_migrate() {
    run_differential(true, Migrate::Yes);
}

#[test]
fn differential_resp2_while_slots_migrate_in_safe_mode() {
    run_differential(false, Migrate::Safe);
}

#[test]
fn differential_resp3_while_slots_migrate_in_safe_mode() {
    run_differential(true, Migrate::Safe);
}

/// Error replies for bad arguments are Redis's own, word for word (the proxy
/// checks only what it needs for routing and leaves the rest to Redis), and
/// so is the help of commands that otherwise take a key.
#[test]
fn errors_match_redis() {
    let cluster = Cluster::builder().groups(2).build();
    let plain = RedisServer::start();
    let commands: &[&[&str]] = &[
        // Wrong number of arguments.
        &["GET"],
        &["GET", "a", "b"],
        &["SET", "k"],
        &["HSET", "h", "f"],
        &["HGET", "h"],
        &["LPUSH", "l"],
        &["ZADD", "z", "1"],
        &["EXPIRE", "k"],
        &["INCR"],
        &["RENAME", "{t}a"],
        &["GETRANGE", "k", "0"],
        // Syntax errors.
        &["SET", "k", "v", "EX"],
        &["SET", "k", "v", "NX", "XX"],
        &["SET", "k", "v", "EX", "0"],
        &["SET", "k", "v", "EX", "abc"],
        &["SET", "k", "v", "BOGUS"],
        &["GETEX", "k", "EX", "-1"],
        &["ZADD", "z", "NX", "XX", "1", "m"],
        &["ZADD", "z", "abc", "m"],
        &["ZRANGE", "z", "a", "b"],
        &["LPOP", "l", "-1"],
        &["EXPIRE", "k", "10", "BOGUS"],
        // Value errors.
        &["SET", "s", "abc"],
        &["INCR", "s"],
        &["INCRBY", "s", "x"],
        &["SET", "n", "9223372036854775807"],
        &["INCR", "n"],
        &["HSET", "h", "f", "v"],
        &["HINCRBY", "h", "f", "1"],
        &["LSET", "nolist", "0", "v"],
        &["RPUSH", "l", "a"],
        &["LSET", "l", "5", "v"],
        &["LPUSH", "s", "x"],
        &["SETRANGE", "s", "-1", "x"],
        &["RENAME", "{t}none", "{t}other"],
        // numkeys, each family with its own errors.
        &["ZUNION", "0", "z"],
        &["ZUNION", "x", "z"],
        &["ZUNION", "-1", "z"],
        &["ZUNION", "3", "z"],
        &["ZINTERSTORE", "{t}d", "0", "{t}z"],
        &["ZINTERSTORE", "{t}d", "2", "{t}z"],
        &["ZINTERCARD", "0", "z"],
        &["ZMPOP", "0", "z", "MIN"],
        &["ZMPOP", "x", "z", "MIN"],
        &["ZMPOP", "5", "z", "MIN"],
        &["LMPOP", "-1", "l", "LEFT"],
        &["LMPOP", "3", "l", "LEFT"],
        &["SINTERCARD", "0", "s"],
        &["SINTERCARD", "x", "s"],
        &["SINTERCARD", "3", "s"],
        &["EVAL", "return 1", "-1"],
        &["EVAL", "return 1", "x"],
        &["EVAL", "return 1", "2", "k"],
        // Subcommands the proxy answers itself, with an argument too many.
        &["CLIENT", "ID", "x"],
        &["CLIENT", "GETNAME", "x"],
        &["COMMAND", "COUNT", "x"],
        // Help of a command that takes a key, and has none here.
        &["OBJECT", "HELP"],
        &["XINFO", "HELP"],
        &["XGROUP", "HELP"],
    ];
    for resp3 in [false, true] {
        let mut twin = Twin::new(cluster.proxy(0).conn(), plain.conn());
        if resp3 {
            twin.hello3();
        }
        let mut differences = Vec::new();
        for cmd in commands {
            if let Err(diff) = twin.compare(cmd, Norm::Exact) {
                differences.push(diff);
            }
        }
        assert!(
            differences.is_empty(),
            "{} error replies differ from Redis ({}):\n{}",
            differences.len(),
            if resp3 { "RESP3" } else { "RESP2" },
            differences.join("\n")
        );
    }
}

/// `COMMAND INFO` locates keys as Redis does: the key specs' `begin_search`
/// and `find_keys` are Redis's own for commands whose keys the proxy finds
/// the same way, and the categories it reports are among Redis's.
#[test]
fn command_info_key_specs_match_redis() {
    let cluster = Cluster::builder().groups(1).build();
    let plain = RedisServer::start();
    let names = [
        "get",
        "set",
        "mget",
        "mset",
        "del",
        "exists",
        "hset",
        "lpush",
        "incr",
        "zunionstore",
        "zinterstore",
        "zunion",
        "zintercard",
        "lmpop",
        "zmpop",
        "sintercard",
        "eval",
        "evalsha",
        "xread",
        "ping",
    ];
    let mut proxy = cluster.proxy(0).conn();
    let mut direct = plain.conn();
    for conn in [&mut proxy, &mut direct] {
        let hello = conn.reply(&["HELLO", "3"]);
        assert!(!hello.is_error(), "{hello}");
    }
    // (begin_search, find_keys) of each spec; the categories.
    let specs = |conn: &mut shardis_tests::RespConn, name: &str| {
        let info = conn.reply(&["COMMAND", "INFO", name]);
        let entry = info
            .items()
            .and_then(|i| i.first())
            .and_then(|e| e.items())
            .unwrap_or_else(|| panic!("COMMAND INFO {name}: {info}"))
            .to_vec();
        let field = |spec: &shardis_tests::Reply, key: &str| match spec {
            shardis_tests::Reply::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.text().as_deref() == Some(key))
                .map(|(_, v)| v.encode())
                .unwrap_or_default(),
            other => panic!("a key spec of {name} is no map: {other}"),
        };
        let found: Vec<(Vec<u8>, Vec<u8>)> = entry
            .get(8)
            .and_then(|s| s.items())
            .unwrap_or_default()
            .iter()
            .map(|spec| (field(spec, "begin_search"), field(spec, "find_keys")))
            .collect();
        let categories: Vec<String> = entry
            .get(6)
            .and_then(|c| c.items())
            .unwrap_or_default()
            .iter()
            .filter_map(|c| c.text())
            .collect();
        (found, categories)
    };
    // Every command's categories are among Redis's.
    let listed = proxy.reply(&["COMMAND", "LIST"]);
    let all: Vec<String> = listed
        .items()
        .unwrap_or_else(|| panic!("COMMAND LIST: {listed}"))
        .iter()
        .filter_map(|n| n.text())
        .collect();
    assert!(all.len() > 100, "{listed}");
    let mut wrong = Vec::new();
    for name in &all {
        let (_, ours) = specs(&mut proxy, name);
        let (_, redis) = specs(&mut direct, name);
        if let Some(c) = ours.iter().find(|c| !redis.contains(c)) {
            wrong.push(format!("{name}: {c} not in {redis:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "categories not Redis's:\n{}",
        wrong.join("\n")
    );
    for name in names {
        let (ours, our_categories) = specs(&mut proxy, name);
        let (redis, redis_categories) = specs(&mut direct, name);
        assert_eq!(
            ours,
            redis,
            "key specs of {name}:\nproxy {:?}\nredis {:?}",
            ours.iter()
                .map(|(b, f)| (escape(b), escape(f)))
                .collect::<Vec<_>>(),
            redis
                .iter()
                .map(|(b, f)| (escape(b), escape(f)))
                .collect::<Vec<_>>(),
        );
        assert!(!our_categories.is_empty(), "{name}: no category");
        for c in &our_categories {
            assert!(
                redis_categories.contains(c),
                "{name}: {c} is not one of Redis's {redis_categories:?}"
            );
        }
    }
}
