//! Fixtures for Shardis integration tests: real `redis-server`, `etcd` and
//! `shardis-proxy` processes on free loopback ports, each in its own temporary
//! directory and killed when dropped (also when the test panics), plus a small
//! blocking RESP client for byte-exact assertions.
//!
//! - [`free_port`] — a free 127.0.0.1 port, never 6379/2379/2380, never twice per process.
//! - [`RedisServer`] — `start()`, `builder().password(..).arg(..)`, `addr()`,
//!   `conn()` (raw RESP), `client()` (`redis` crate), `kill()`, `restart()`,
//!   `pause()`/`resume()`, `replicaof(&master)`.
//! - [`EtcdServer`] — `start()`, `endpoint()`.
//! - [`ProxyProcess`] — `builder(etcd, cluster)...start()`, `addr()`,
//!   `admin_addr()`, `conn()`, `kill()`, `terminate()`, `pause()`/`resume()`,
//!   `stderr_tail(n)`. The binary is found next to the test executable
//!   (`SHARDIS_PROXY_BIN` overrides), and built once if missing.
//! - [`Cluster`] — `builder().groups(2).replicas(0).proxies(1).build()`,
//!   `proxy(i)`, `group_master(id)`, `owner_of(key)`, `update_topology(|t| ..)`,
//!   `wait_applied(version)`.
//! - [`RespConn`] / [`Reply`] — send a command or raw bytes, read one reply frame
//!   as raw bytes (RESP2 and RESP3), parse it when needed.
//! - [`Metrics`] — Prometheus text checked by two real parsers; `value`,
//!   `histogram`.
//! - [`Twin`] — one connection through the proxy and one to a plain redis-server;
//!   every command goes to both and the replies must match.
//!
//! Running: `cargo build -p shardis-proxy && cargo nextest run -p shardis-tests`
//! (the tests use the proxy binary found next to them and build it only if it
//! is missing; `SHARDIS_BUILD_PROXY=1` rebuilds it first, `SHARDIS_PROXY_BIN`
//! points at another one). `redis-server` and `etcd` must be on `PATH`
//! (`REDIS_SERVER_BIN`, `ETCD_BIN` override them).
//!
//! Every process binds 127.0.0.1 only. Tests are independent: each starts its
//! own servers, so nextest may run them in parallel processes.
#![forbid(unsafe_code)]

pub mod cluster;
pub mod dashboard;
pub mod etcd;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod redis_server;
pub mod resp;
pub mod twin;

pub use cluster::{key_in_slot, keys_where, tag_in_slot, Cluster, ClusterBuilder};
pub use etcd::EtcdServer;
pub use metrics::{Histo, Metrics};
pub use process::{free_port, http_get, log_tail, poll_until};
pub use proxy::{proxy_bin, ProxyBuilder, ProxyProcess};
pub use redis_server::{redis_client, RedisServer, RedisServerBuilder};
pub use resp::{describe_command, encode_command, escape, escape_short, Event, Reply, RespConn};
pub use twin::{Norm, Twin};
