//! The command table: an allowlist.
//!
//! Backend connections are shared by many client sessions, so a command that
//! changes connection state (`SELECT 1`, `CLIENT REPLY OFF`, `MONITOR`,
//! `SUBSCRIBE`, `MULTI`) would corrupt every other session's replies. Anything
//! not listed here is refused before routing, and the session lives on.
//!
//! The proxy checks only what it needs to route (enough arguments to find the
//! keys); every other check is left to Redis, so error texts stay Redis's own.

use std::collections::HashMap;
use std::sync::OnceLock;

/// Where a command's keys are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeySpec {
    /// No keys (proxy-local commands).
    None,
    /// Keys at `first..=last` (negative `last` counts from the end: -1 is the
    /// last argument), every `step`.
    Range {
        first: usize,
        last: i32,
        step: usize,
    },
    /// `numkeys` at position `at`, keys right after it; `dest` is an extra
    /// key before it (ZUNIONSTORE dest numkeys k…).
    NumKeys { at: usize, dest: bool },
    /// XREAD/XREADGROUP: keys after STREAMS, the first half of what follows.
    Streams,
    /// SORT/SORT_RO: the key and an optional STORE destination.
    Sort,
    /// GEORADIUS*: the key and optional STORE/STOREDIST destinations.
    GeoRadius,
}

/// How replies of a command split across groups are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// MGET: one value per key, in key order.
    Values,
    /// MSET: `+OK` from every part.
    AllOk,
    /// DEL/EXISTS/UNLINK/TOUCH/DBSIZE: integers added up.
    Sum,
}

/// Commands the proxy answers itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Ping,
    Echo,
    Quit,
    Reset,
    Select,
    Auth,
    Hello,
    Client,
    Command,
    Info,
    Time,
    Slowlog,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// All keys must be in one slot; the request goes there whole.
    Slot,
    /// Keys may span groups: one sub-command per group, replies merged.
    /// `step` is the number of arguments per key (2 for MSET).
    Fanout {
        merge: Merge,
        step: usize,
    },
    /// Sent to every group's master, replies merged (DBSIZE).
    AllMasters(Merge),
    Local(Local),
    /// Known but not proxied; the text says why.
    Refused(&'static str),
}

/// Longest command [`Command::runs_in_script`] allows (Lua's `unpack` has a
/// stack limit).
const SCRIPT_MAX_ARGS: usize = 1000;

/// See [`Command::runs_in_script`].
const SCRIPT_SAFE_WRITES: &[&str] = &[
    "set", "setnx", "getset", "append", "setrange", "persist", "hset", "hsetnx", "hmset", "lpush",
    "rpush", "lpushx", "rpushx", "lset", "linsert", "sadd", "pfadd",
];

/// Command flags.
pub const WRITE: u16 = 1;
pub const READONLY: u16 = 2;
pub const FAST: u16 = 4;

#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// Lower case, as Redis reports it.
    pub name: &'static str,
    /// Redis's arity (negative: at least), reported by `COMMAND`.
    pub arity: i16,
    pub flags: u16,
    pub keys: KeySpec,
    pub route: Route,
    /// Index in the table: stats keep per-command counters by this.
    pub index: usize,
}

impl Command {
    pub fn is_write(&self) -> bool {
        self.flags & WRITE != 0
    }

    /// Reads keys and changes nothing.
    pub fn is_read_only(&self) -> bool {
        self.flags & READONLY != 0 && self.flags & WRITE == 0
    }

    /// A write that may run inside a Lua script on a migrating slot's source
    /// with its reply unchanged: it never blocks, and every reply it can give
    /// (in RESP2 and RESP3 alike) is a status, an error, a bulk string, a
    /// null or an integer far below 2^53 (Lua numbers are doubles: `INCR` is
    /// not here), all of which pass through Lua exactly. And it never deletes
    /// its key nor gives it an expiry (so `SET` only without `EX`/`PX`/
    /// `EXAT`/`PXAT`): a key whose copy a half-failed move left on the
    /// target must not vanish from the source before the mover replaces that
    /// copy, or the stale copy would show. `args`: the request, name first.
    pub fn runs_in_script(&self, args: &[bytes::Bytes]) -> bool {
        let sets_expiry = || {
            self.name == "set"
                && args.iter().skip(3).any(|a| {
                    [b"ex".as_slice(), b"px", b"exat", b"pxat"]
                        .iter()
                        .any(|o| a.eq_ignore_ascii_case(o))
                })
        };
        self.is_write()
            && matches!(self.route, Route::Slot)
            && SCRIPT_SAFE_WRITES.contains(&self.name)
            && args.len() <= SCRIPT_MAX_ARGS
            && !sets_expiry()
    }

    /// Fewest arguments (name included) needed to locate the keys.
    pub fn min_args(&self) -> usize {
        match self.keys {
            KeySpec::None => 1,
            KeySpec::Range { first, last, .. } => {
                if last < 0 {
                    first + 1
                } else {
                    (last as usize + 1).max(first + 1)
                }
            }
            // `EVAL script 0` has the right arity: it is refused for having
            // no key (see `key_positions`), not for its length.
            KeySpec::NumKeys { at, .. } => at + 1,
            KeySpec::Streams => 4,
            KeySpec::Sort | KeySpec::GeoRadius => 2,
        }
        .max(if self.arity > 0 {
            self.arity as usize
        } else {
            self.arity.unsigned_abs() as usize
        })
    }
}

use KeySpec::*;
use Route::*;

const fn key1() -> KeySpec {
    Range {
        first: 1,
        last: 1,
        step: 1,
    }
}
const fn keys(first: usize, last: i32, step: usize) -> KeySpec {
    Range { first, last, step }
}

const NOT_SHARDED: &str =
    "it works on the whole keyspace, which is split over many groups behind this proxy";
const CONN_STATE: &str =
    "it changes connection state, and backend connections are shared by many clients";
const BLOCKING: &str = "blocking commands would stall a backend connection shared by many clients";
const PUBSUB: &str =
    "pub/sub is not offered: subscribers need a connection of their own, and a channel would have to reach every group";
const PER_SERVER: &str =
    "scripts, functions and replication are per Redis server, and the keyspace is split over many groups behind this proxy";
const ADMIN: &str =
    "server administration goes to the Redis servers directly, not through the proxy";

macro_rules! table {
    ($( $name:literal, $arity:expr, $flags:expr, $keys:expr, $route:expr; )*) => {
        &[ $( ($name, $arity, $flags, $keys, $route), )* ]
    };
}

type Row = (&'static str, i16, u16, KeySpec, Route);

const W: u16 = WRITE;
const R: u16 = READONLY;
const RF: u16 = READONLY | FAST;
const WF: u16 = WRITE | FAST;

static ROWS: &[Row] = table! {
    // ---- proxy-local ----
    "ping", -1, FAST, None, Local(Local::Ping);
    "echo", 2, FAST, None, Local(Local::Echo);
    "quit", -1, FAST, None, Local(Local::Quit);
    "reset", 1, FAST, None, Local(Local::Reset);
    "select", 2, FAST, None, Local(Local::Select);
    "auth", -2, FAST, None, Local(Local::Auth);
    "hello", -1, FAST, None, Local(Local::Hello);
    "client", -2, 0, None, Local(Local::Client);
    "command", -1, 0, None, Local(Local::Command);
    "info", -1, 0, None, Local(Local::Info);
    "time", 1, FAST, None, Local(Local::Time);
    "slowlog", -2, 0, None, Local(Local::Slowlog);
    "dbsize", 1, RF, None, AllMasters(Merge::Sum);
    // ---- fan-out across groups ----
    "mget", -2, RF, keys(1, -1, 1), Fanout { merge: Merge::Values, step: 1 };
    "mset", -3, W, keys(1, -1, 2), Fanout { merge: Merge::AllOk, step: 2 };
    "del", -2, W, keys(1, -1, 1), Fanout { merge: Merge::Sum, step: 1 };
    "unlink", -2, WF, keys(1, -1, 1), Fanout { merge: Merge::Sum, step: 1 };
    "exists", -2, RF, keys(1, -1, 1), Fanout { merge: Merge::Sum, step: 1 };
    "touch", -2, RF, keys(1, -1, 1), Fanout { merge: Merge::Sum, step: 1 };
    // ---- strings ----
    "get", 2, RF, key1(), Slot;
    "set", -3, W, key1(), Slot;
    "setnx", 3, WF, key1(), Slot;
    "setex", 4, W, key1(), Slot;
    "psetex", 4, W, key1(), Slot;
    "append", 3, WF, key1(), Slot;
    "strlen", 2, RF, key1(), Slot;
    "incr", 2, WF, key1(), Slot;
    "decr", 2, WF, key1(), Slot;
    "incrby", 3, WF, key1(), Slot;
    "decrby", 3, WF, key1(), Slot;
    "incrbyfloat", 3, WF, key1(), Slot;
    "getset", 3, WF, key1(), Slot;
    "getdel", 2, WF, key1(), Slot;
    "getex", -2, WF, key1(), Slot;
    "getrange", 4, R, key1(), Slot;
    "substr", 4, R, key1(), Slot;
    "setrange", 4, W, key1(), Slot;
    "msetnx", -3, W, keys(1, -1, 2), Slot;
    "lcs", -3, R, keys(1, 2, 1), Slot;
    "setbit", 4, W, key1(), Slot;
    "getbit", 3, RF, key1(), Slot;
    "bitcount", -2, R, key1(), Slot;
    "bitpos", -3, R, key1(), Slot;
    "bitfield", -2, W, key1(), Slot;
    "bitfield_ro", -2, RF, key1(), Slot;
    "bitop", -4, W, keys(2, -1, 1), Slot;
    // ---- keys ----
    "expire", -3, WF, key1(), Slot;
    "pexpire", -3, WF, key1(), Slot;
    "expireat", -3, WF, key1(), Slot;
    "pexpireat", -3, WF, key1(), Slot;
    "expiretime", 2, RF, key1(), Slot;
    "pexpiretime", 2, RF, key1(), Slot;
    "ttl", 2, RF, key1(), Slot;
    "pttl", 2, RF, key1(), Slot;
    "persist", 2, WF, key1(), Slot;
    "type", 2, RF, key1(), Slot;
    "rename", 3, W, keys(1, 2, 1), Slot;
    "renamenx", 3, WF, keys(1, 2, 1), Slot;
    "copy", -3, W, keys(1, 2, 1), Slot;
    "dump", 2, R, key1(), Slot;
    "restore", -4, W, key1(), Slot;
    "object", -2, R, keys(2, 2, 1), Slot;
    "sort", -2, W, Sort, Slot;
    "sort_ro", -2, R, Sort, Slot;
    // ---- hashes ----
    "hset", -4, WF, key1(), Slot;
    "hsetnx", 4, WF, key1(), Slot;
    "hmset", -4, WF, key1(), Slot;
    "hget", 3, RF, key1(), Slot;
    "hmget", -3, RF, key1(), Slot;
    "hdel", -3, WF, key1(), Slot;
    "hlen", 2, RF, key1(), Slot;
    "hstrlen", 3, RF, key1(), Slot;
    "hexists", 3, RF, key1(), Slot;
    "hkeys", 2, R, key1(), Slot;
    "hvals", 2, R, key1(), Slot;
    "hgetall", 2, R, key1(), Slot;
    "hincrby", 4, WF, key1(), Slot;
    "hincrbyfloat", 4, WF, key1(), Slot;
    "hrandfield", -2, R, key1(), Slot;
    "hscan", -3, R, key1(), Slot;
    // ---- lists ----
    "lpush", -3, WF, key1(), Slot;
    "rpush", -3, WF, key1(), Slot;
    "lpushx", -3, WF, key1(), Slot;
    "rpushx", -3, WF, key1(), Slot;
    "lpop", -2, WF, key1(), Slot;
    "rpop", -2, WF, key1(), Slot;
    "llen", 2, RF, key1(), Slot;
    "lrange", 4, R, key1(), Slot;
    "lindex", 3, R, key1(), Slot;
    "lset", 4, W, key1(), Slot;
    "lrem", 4, W, key1(), Slot;
    "ltrim", 4, W, key1(), Slot;
    "linsert", 5, W, key1(), Slot;
    "lpos", -3, R, key1(), Slot;
    "rpoplpush", 3, W, keys(1, 2, 1), Slot;
    "lmove", 5, W, keys(1, 2, 1), Slot;
    "lmpop", -4, W, NumKeys { at: 1, dest: false }, Slot;
    // ---- sets ----
    "sadd", -3, WF, key1(), Slot;
    "srem", -3, WF, key1(), Slot;
    "smembers", 2, R, key1(), Slot;
    "sismember", 3, RF, key1(), Slot;
    "smismember", -3, RF, key1(), Slot;
    "scard", 2, RF, key1(), Slot;
    "spop", -2, WF, key1(), Slot;
    "srandmember", -2, R, key1(), Slot;
    "smove", 4, WF, keys(1, 2, 1), Slot;
    "sunion", -2, R, keys(1, -1, 1), Slot;
    "sinter", -2, R, keys(1, -1, 1), Slot;
    "sdiff", -2, R, keys(1, -1, 1), Slot;
    "sunionstore", -3, W, keys(1, -1, 1), Slot;
    "sinterstore", -3, W, keys(1, -1, 1), Slot;
    "sdiffstore", -3, W, keys(1, -1, 1), Slot;
    "sintercard", -3, R, NumKeys { at: 1, dest: false }, Slot;
    "sscan", -3, R, key1(), Slot;
    // ---- sorted sets ----
    "zadd", -4, WF, key1(), Slot;
    "zincrby", 4, WF, key1(), Slot;
    "zrem", -3, WF, key1(), Slot;
    "zcard", 2, RF, key1(), Slot;
    "zcount", 4, RF, key1(), Slot;
    "zscore", 3, RF, key1(), Slot;
    "zmscore", -3, RF, key1(), Slot;
    "zrank", -3, RF, key1(), Slot;
    "zrevrank", -3, RF, key1(), Slot;
    "zrange", -4, R, key1(), Slot;
    "zrevrange", -4, R, key1(), Slot;
    "zrangebyscore", -4, R, key1(), Slot;
    "zrevrangebyscore", -4, R, key1(), Slot;
    "zrangebylex", -4, R, key1(), Slot;
    "zrevrangebylex", -4, R, key1(), Slot;
    "zlexcount", 4, RF, key1(), Slot;
    "zremrangebyrank", 4, W, key1(), Slot;
    "zremrangebyscore", 4, W, key1(), Slot;
    "zremrangebylex", 4, W, key1(), Slot;
    "zpopmin", -2, WF, key1(), Slot;
    "zpopmax", -2, WF, key1(), Slot;
    "zrandmember", -2, R, key1(), Slot;
    "zscan", -3, R, key1(), Slot;
    "zrangestore", -5, W, keys(1, 2, 1), Slot;
    "zunionstore", -4, W, NumKeys { at: 2, dest: true }, Slot;
    "zinterstore", -4, W, NumKeys { at: 2, dest: true }, Slot;
    "zdiffstore", -4, W, NumKeys { at: 2, dest: true }, Slot;
    "zunion", -3, R, NumKeys { at: 1, dest: false }, Slot;
    "zinter", -3, R, NumKeys { at: 1, dest: false }, Slot;
    "zdiff", -3, R, NumKeys { at: 1, dest: false }, Slot;
    "zintercard", -3, R, NumKeys { at: 1, dest: false }, Slot;
    "zmpop", -4, W, NumKeys { at: 1, dest: false }, Slot;
    // ---- hyperloglog ----
    "pfadd", -2, WF, key1(), Slot;
    "pfcount", -2, R, keys(1, -1, 1), Slot;
    "pfmerge", -2, W, keys(1, -1, 1), Slot;
    // ---- geo ----
    "geoadd", -5, W, key1(), Slot;
    "geodist", -4, R, key1(), Slot;
    "geohash", -2, R, key1(), Slot;
    "geopos", -2, R, key1(), Slot;
    "georadius", -6, W, GeoRadius, Slot;
    "georadiusbymember", -5, W, GeoRadius, Slot;
    "georadius_ro", -6, R, key1(), Slot;
    "georadiusbymember_ro", -5, R, key1(), Slot;
    "geosearch", -7, R, key1(), Slot;
    "geosearchstore", -8, W, keys(1, 2, 1), Slot;
    // ---- streams ----
    "xadd", -5, WF, key1(), Slot;
    "xlen", 2, RF, key1(), Slot;
    "xrange", -4, R, key1(), Slot;
    "xrevrange", -4, R, key1(), Slot;
    "xdel", -3, WF, key1(), Slot;
    "xtrim", -4, W, key1(), Slot;
    "xack", -4, WF, key1(), Slot;
    "xclaim", -6, WF, key1(), Slot;
    "xautoclaim", -6, WF, key1(), Slot;
    "xpending", -3, R, key1(), Slot;
    "xgroup", -2, W, keys(2, 2, 1), Slot;
    "xinfo", -2, R, keys(2, 2, 1), Slot;
    "xsetid", -3, WF, key1(), Slot;
    "xread", -4, R, Streams, Slot;
    "xreadgroup", -7, W, Streams, Slot;
    // ---- scripting (keys must share a slot) ----
    "eval", -3, W, NumKeys { at: 2, dest: false }, Slot;
    "evalsha", -3, W, NumKeys { at: 2, dest: false }, Slot;
    // ---- refused: whole keyspace ----
    "keys", 2, R, None, Refused(NOT_SHARDED);
    "scan", -2, R, None, Refused(NOT_SHARDED);
    "randomkey", 1, R, None, Refused(NOT_SHARDED);
    "flushall", -1, W, None, Refused(NOT_SHARDED);
    "flushdb", -1, W, None, Refused(NOT_SHARDED);
    "swapdb", 3, W, None, Refused(NOT_SHARDED);
    "move", 3, W, None, Refused(NOT_SHARDED);
    "script", -2, 0, None, Refused(PER_SERVER);
    "function", -2, 0, None, Refused(PER_SERVER);
    "fcall", -3, W, None, Refused(PER_SERVER);
    "fcall_ro", -3, R, None, Refused(PER_SERVER);
    "wait", 3, 0, None, Refused(PER_SERVER);
    // ---- refused: connection state ----
    "multi", 1, 0, None, Refused(CONN_STATE);
    "exec", 1, 0, None, Refused(CONN_STATE);
    "discard", 1, 0, None, Refused(CONN_STATE);
    "watch", -2, 0, None, Refused(CONN_STATE);
    "unwatch", 1, 0, None, Refused(CONN_STATE);
    "subscribe", -2, 0, None, Refused(CONN_STATE);
    "unsubscribe", -1, 0, None, Refused(CONN_STATE);
    "psubscribe", -2, 0, None, Refused(CONN_STATE);
    "punsubscribe", -1, 0, None, Refused(CONN_STATE);
    "ssubscribe", -2, 0, None, Refused(CONN_STATE);
    "sunsubscribe", -1, 0, None, Refused(CONN_STATE);
    "publish", 3, 0, None, Refused(PUBSUB);
    "spublish", 3, 0, None, Refused(PUBSUB);
    "pubsub", -2, 0, None, Refused(PUBSUB);
    "monitor", 1, 0, None, Refused(CONN_STATE);
    "readonly", 1, 0, None, Refused(CONN_STATE);
    "readwrite", 1, 0, None, Refused(CONN_STATE);
    // ---- refused: blocking ----
    "blpop", -3, W, None, Refused(BLOCKING);
    "brpop", -3, W, None, Refused(BLOCKING);
    "brpoplpush", 4, W, None, Refused(BLOCKING);
    "blmove", 6, W, None, Refused(BLOCKING);
    "blmpop", -5, W, None, Refused(BLOCKING);
    "bzpopmin", -3, W, None, Refused(BLOCKING);
    "bzpopmax", -3, W, None, Refused(BLOCKING);
    "bzmpop", -5, W, None, Refused(BLOCKING);
    // ---- refused: administration ----
    "config", -2, 0, None, Refused(ADMIN);
    "debug", -2, 0, None, Refused(ADMIN);
    "replicaof", 3, 0, None, Refused(ADMIN);
    "slaveof", 3, 0, None, Refused(ADMIN);
    "shutdown", -1, 0, None, Refused(ADMIN);
    "save", 1, 0, None, Refused(ADMIN);
    "bgsave", -1, 0, None, Refused(ADMIN);
    "bgrewriteaof", 1, 0, None, Refused(ADMIN);
    "migrate", -6, W, None, Refused(ADMIN);
    "cluster", -2, 0, None, Refused(ADMIN);
    "acl", -2, 0, None, Refused(ADMIN);
    "module", -2, 0, None, Refused(ADMIN);
    "latency", -2, 0, None, Refused(ADMIN);
    "memory", -2, 0, None, Refused(ADMIN);
    "sync", 1, 0, None, Refused(ADMIN);
    "psync", -3, 0, None, Refused(ADMIN);
    "failover", -1, 0, None, Refused(ADMIN);
    "role", 1, 0, None, Refused(ADMIN);
    "lolwut", -1, 0, None, Refused(ADMIN);
};

/// The table, built once: lower-case name → command.
pub struct Table {
    commands: Vec<Command>,
    by_name: HashMap<&'static [u8], usize>,
}

impl Table {
    fn build() -> Table {
        let commands: Vec<Command> = ROWS
            .iter()
            .enumerate()
            .map(|(index, &(name, arity, flags, keys, route))| Command {
                name,
                arity,
                flags,
                keys,
                route,
                index,
            })
            .collect();
        let by_name = commands
            .iter()
            .map(|c| (c.name.as_bytes(), c.index))
            .collect();
        Table { commands, by_name }
    }

    /// Looks a command name up, ignoring case, without allocating.
    #[inline]
    pub fn lookup(&self, name: &[u8]) -> Option<&Command> {
        let mut lower = [0u8; 24];
        let dst = lower.get_mut(..name.len())?;
        for (d, s) in dst.iter_mut().zip(name) {
            *d = s.to_ascii_lowercase();
        }
        let index = *self.by_name.get(&*dst)?;
        self.commands.get(index)
    }

    pub fn all(&self) -> &[Command] {
        &self.commands
    }

    /// Commands the proxy actually serves (not refused).
    pub fn served(&self) -> impl Iterator<Item = &Command> {
        self.commands
            .iter()
            .filter(|c| !matches!(c.route, Route::Refused(_)))
    }

    pub fn get(&self, index: usize) -> Option<&Command> {
        self.commands.get(index)
    }
}

/// The process-wide command table.
pub fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(Table::build)
}

/// Positions of a request's key arguments (`args[0]` is the command name).
/// `Err` carries the error text when the keys cannot be located.
pub fn key_positions<A: AsRef<[u8]>>(
    cmd: &Command,
    args: &[A],
    out: &mut Vec<usize>,
) -> Result<(), String> {
    out.clear();
    let n = args.len();
    match cmd.keys {
        KeySpec::None => {}
        KeySpec::Range { first, last, step } => {
            let last = if last < 0 {
                n as i64 + last as i64
            } else {
                last as i64
            };
            let mut i = first;
            while (i as i64) <= last && i < n {
                out.push(i);
                i += step;
            }
            if step > 1 && !(n - first).is_multiple_of(step) {
                return Err(arity_error(cmd.name));
            }
        }
        KeySpec::NumKeys { at, dest } => {
            let numkeys = args
                .get(at)
                .and_then(|a| std::str::from_utf8(a.as_ref()).ok())
                .and_then(|s| s.parse::<i64>().ok());
            let numkeys = numkeys_checked(cmd.name, numkeys, n.saturating_sub(at + 1))?;
            if dest {
                out.push(1);
            }
            out.extend(at + 1..=at + numkeys);
        }
        KeySpec::Streams => {
            let pos = args
                .iter()
                .position(|a| a.as_ref().eq_ignore_ascii_case(b"streams"))
                .ok_or_else(|| "ERR syntax error".to_string())?;
            if args
                .iter()
                .take(pos)
                .any(|a| a.as_ref().eq_ignore_ascii_case(b"block"))
            {
                return Err(format!(
                    "ERR '{}' with BLOCK is not supported by shardis-proxy: {BLOCKING}",
                    cmd.name.to_ascii_uppercase()
                ));
            }
            let rest = n - pos - 1;
            if rest == 0 || !rest.is_multiple_of(2) {
                return Err("ERR Unbalanced 'xread' list of streams: for each stream key an ID or '$' must be specified.".into());
            }
            out.extend(pos + 1..pos + 1 + rest / 2);
        }
        KeySpec::Sort => {
            out.push(1);
            let mut i = 2;
            while i < n {
                let a = args.get(i).map(AsRef::as_ref).unwrap_or_default();
                if a.eq_ignore_ascii_case(b"store") {
                    out.push(i + 1);
                    i += 2;
                } else if a.eq_ignore_ascii_case(b"by") || a.eq_ignore_ascii_case(b"get") {
                    let pattern = args.get(i + 1).map(AsRef::as_ref).unwrap_or_default();
                    // `BY nosort` and `GET #` read no other key.
                    if !(pattern.eq_ignore_ascii_case(b"nosort") || pattern == b"#") {
                        return Err("ERR SORT BY/GET with a pattern reads keys on other groups and is not supported by shardis-proxy".into());
                    }
                    i += 2;
                } else if a.eq_ignore_ascii_case(b"limit") {
                    i += 3;
                } else {
                    i += 1;
                }
            }
            out.retain(|&p| p < n);
        }
        KeySpec::GeoRadius => {
            out.push(1);
            for (i, a) in args.iter().enumerate().skip(2) {
                let a = a.as_ref();
                if (a.eq_ignore_ascii_case(b"store") || a.eq_ignore_ascii_case(b"storedist"))
                    && i + 1 < n
                {
                    out.push(i + 1);
                }
            }
        }
    }
    Ok(())
}

/// Redis's own text for a wrong argument count.
/// `numkeys` (`None`: not an integer) checked as Redis checks it, with
/// its error for each family of commands; `rest`: the arguments after it.
fn numkeys_checked(name: &str, numkeys: Option<i64>, rest: usize) -> Result<usize, String> {
    const NOT_INTEGER: &str = "ERR value is not an integer or out of range";
    const GREATER_0: &str = "ERR numkeys should be greater than 0";
    const TOO_MANY: &str = "ERR Number of keys can't be greater than number of args";
    const SYNTAX: &str = "ERR syntax error";
    let (numkeys, too_many) = match name {
        "eval" | "evalsha" | "eval_ro" | "evalsha_ro" | "fcall" | "fcall_ro" => {
            let n = numkeys.ok_or(NOT_INTEGER)?;
            if n < 0 {
                return Err("ERR Number of keys can't be negative".into());
            }
            if n == 0 {
                return Err(format!(
                    "ERR '{name}' without keys cannot be routed by shardis-proxy: pass the keys the script touches"
                ));
            }
            (n, TOO_MANY)
        }
        "zunion" | "zinter" | "zdiff" | "zintercard" | "zunionstore" | "zinterstore"
        | "zdiffstore" => {
            let n = numkeys.ok_or(NOT_INTEGER)?;
            if n < 1 {
                return Err(format!(
                    "ERR at least 1 input key is needed for '{name}' command"
                ));
            }
            (n, SYNTAX)
        }
        "sintercard" => (numkeys.filter(|&n| n > 0).ok_or(GREATER_0)?, TOO_MANY),
        // LMPOP, ZMPOP, BLMPOP, BZMPOP.
        _ => (numkeys.filter(|&n| n > 0).ok_or(GREATER_0)?, SYNTAX),
    };
    match usize::try_from(numkeys) {
        Ok(n) if n <= rest => Ok(n),
        _ => Err(too_many.into()),
    }
}

pub fn arity_error(name: &str) -> String {
    format!("ERR wrong number of arguments for '{name}' command")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_safe_writes_are_single_slot_writes_of_the_table() {
        let args = |a: &[&'static str]| -> Vec<bytes::Bytes> {
            a.iter()
                .map(|s| bytes::Bytes::from_static(s.as_bytes()))
                .collect()
        };
        let kv = args(&["NAME", "k", "v"]);
        for name in SCRIPT_SAFE_WRITES {
            let cmd = table().lookup(name.as_bytes()).unwrap();
            assert!(cmd.runs_in_script(&kv), "{name}");
        }
        for name in [
            "incr", "incrby", "hincrby", "zadd", "spop", "blpop", "del", "get", "eval",
        ] {
            let cmd = table().lookup(name.as_bytes()).unwrap();
            assert!(!cmd.runs_in_script(&kv), "{name}");
        }
        let set = table().lookup(b"set").unwrap();
        assert!(set.runs_in_script(&args(&["SET", "k", "v"])));
        assert!(set.runs_in_script(&args(&["SET", "ex", "ex", "NX", "GET", "KEEPTTL"])));
        assert!(!set.runs_in_script(&args(&["SET", "k", "v", "NX", "Ex", "10"])));
        assert!(!set.runs_in_script(&args(&["SET", "k", "v", "pxat", "10"])));
        let mut long = args(&["SADD", "k"]);
        long.extend(std::iter::repeat_n(bytes::Bytes::from_static(b"m"), 998));
        let sadd = table().lookup(b"sadd").unwrap();
        assert!(sadd.runs_in_script(&long));
        long.push(bytes::Bytes::from_static(b"m"));
        assert!(!sadd.runs_in_script(&long));
    }

    fn positions(name: &str, args: &[&str]) -> Result<Vec<usize>, String> {
        let cmd = table().lookup(name.as_bytes()).unwrap();
        let mut out = Vec::new();
        let mut all = vec![name];
        all.extend_from_slice(args);
        key_positions(cmd, &all, &mut out).map(|_| out)
    }

    #[test]
    fn lookup_ignores_case_and_refuses_unknown() {
        assert_eq!(table().lookup(b"GeT").unwrap().name, "get");
        assert!(table().lookup(b"nosuchcommand").is_none());
        assert!(table()
            .lookup(b"averyveryveryverylongcommandname")
            .is_none());
        assert!(table().lookup(b"").is_none());
    }

    #[test]
    fn names_are_unique_and_lower_case() {
        let mut seen = std::collections::HashSet::new();
        for c in table().all() {
            assert!(seen.insert(c.name), "{} twice", c.name);
            assert_eq!(c.name, c.name.to_ascii_lowercase());
            assert!(c.name.len() <= 24);
        }
    }

    /// The README's command lists are the operator's reference: keep them
    /// complete.
    #[test]
    fn readme_lists_every_command() {
        let readme = include_str!("../../../README.md");
        let words: std::collections::HashSet<&str> = readme
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .collect();
        for c in table().all() {
            let upper = c.name.to_ascii_uppercase();
            assert!(
                words.contains(upper.as_str()),
                "README.md does not mention {upper}"
            );
        }
    }

    #[test]
    fn key_positions_per_spec() {
        assert_eq!(positions("get", &["a"]).unwrap(), vec![1]);
        assert_eq!(
            positions("mset", &["a", "1", "b", "2"]).unwrap(),
            vec![1, 3]
        );
        assert!(positions("mset", &["a", "1", "b"]).is_err());
        assert_eq!(
            positions("bitop", &["and", "d", "a", "b"]).unwrap(),
            vec![2, 3, 4]
        );
        assert_eq!(
            positions("zunionstore", &["d", "2", "a", "b", "weights", "1", "2"]).unwrap(),
            vec![1, 3, 4]
        );
        assert!(positions("zunionstore", &["d", "3", "a"]).is_err());
        assert_eq!(
            positions("eval", &["s", "2", "a", "b", "x"]).unwrap(),
            vec![3, 4]
        );
        assert!(positions("eval", &["s", "0"]).is_err());
        assert_eq!(
            positions("xread", &["count", "2", "streams", "a", "b", "0", "0"]).unwrap(),
            vec![4, 5]
        );
        assert!(positions("xread", &["block", "0", "streams", "a", "0"]).is_err());
        assert_eq!(
            positions("sort", &["l", "limit", "0", "1", "store", "d"]).unwrap(),
            vec![1, 6]
        );
        assert!(positions("sort", &["l", "by", "w_*"]).is_err());
        assert_eq!(positions("sort", &["l", "by", "nosort"]).unwrap(), vec![1]);
        assert_eq!(positions("object", &["encoding", "k"]).unwrap(), vec![2]);
        assert_eq!(
            positions("lmpop", &["2", "a", "b", "left"]).unwrap(),
            vec![2, 3]
        );
    }
}
