//! Differential checking: the same command sent through the proxy and to one
//! plain standalone redis-server must get the same reply, byte for byte.

use crate::resp::{describe_command, escape_short, Reply, RespConn};

/// How a reply is normalised before comparing, for replies whose order Redis
/// does not define.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Norm {
    /// Byte for byte.
    Exact,
    /// Elements of an array or set sorted (SMEMBERS, SUNION, HKEYS, HVALS):
    /// a set or hash kept as a hash table iterates in an order that depends on
    /// its process's random hash seed.
    Unordered,
    /// Field/value pairs sorted by field (HGETALL, as a RESP2 flat array or a
    /// RESP3 map): same reason.
    UnorderedPairs,
    /// TTL/PTTL: only the class is compared (-2 no key, -1 no expiry, or
    /// "some positive time left"), since the two servers' clocks are read at
    /// slightly different moments.
    TtlSign,
}

impl Norm {
    pub fn apply(self, raw: &[u8]) -> Vec<u8> {
        if self == Norm::Exact {
            return raw.to_vec();
        }
        let Ok(reply) = Reply::parse_all(raw) else {
            return raw.to_vec();
        };
        match self {
            Norm::Exact => raw.to_vec(),
            Norm::Unordered => reply.sorted().encode(),
            Norm::UnorderedPairs => reply.sorted_pairs().encode(),
            Norm::TtlSign => match reply {
                Reply::Integer(n) if n > 0 => b":1 (positive)\r\n".to_vec(),
                _ => raw.to_vec(),
            },
        }
    }
}

/// A connection to the proxy and one to a plain redis-server.
pub struct Twin {
    pub proxy: RespConn,
    pub plain: RespConn,
}

impl Twin {
    pub fn new(proxy: RespConn, plain: RespConn) -> Twin {
        Twin { proxy, plain }
    }

    /// Switches both connections to RESP3. The HELLO replies themselves differ
    /// (server name, id, version) and are only checked to be maps.
    pub fn hello3(&mut self) {
        for conn in [&mut self.proxy, &mut self.plain] {
            let reply = conn.reply(&["HELLO", "3"]);
            assert!(
                matches!(reply, Reply::Map(_)),
                "HELLO 3 at {} should answer a map, got {reply}",
                conn.addr()
            );
        }
    }

    /// Sends `args` to both; returns the proxy's raw reply, or a description of
    /// the difference.
    pub fn compare<A: AsRef<[u8]>>(&mut self, args: &[A], norm: Norm) -> Result<Vec<u8>, String> {
        let proxied = self.proxy.cmd(args);
        let plain = self.plain.cmd(args);
        if norm.apply(&proxied) == norm.apply(&plain) {
            Ok(proxied)
        } else {
            Err(format!(
                "{} ({norm:?}):\n  proxy: {}\n  redis: {}",
                describe_command(args),
                escape_short(&proxied, 800),
                escape_short(&plain, 800)
            ))
        }
    }

    /// Like [`compare`](Self::compare) with [`Norm::Exact`]; panics on a difference.
    #[track_caller]
    pub fn check<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Vec<u8> {
        self.check_with(args, Norm::Exact)
    }

    #[track_caller]
    pub fn check_with<A: AsRef<[u8]>>(&mut self, args: &[A], norm: Norm) -> Vec<u8> {
        match self.compare(args, norm) {
            Ok(reply) => reply,
            Err(diff) => panic!("the proxy answers differently from redis: {diff}"),
        }
    }
}
