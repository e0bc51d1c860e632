//! Proxy configuration: a TOML file, overridden by command-line flags.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use shardis_resp::Limits;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where clients connect.
    pub listen: String,
    /// Admin HTTP: /healthz, /readyz, /metrics, /api/v1/stats.
    pub admin_listen: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Cluster name: the topology lives under /shardis/<cluster>/.
    pub cluster: String,
    /// Proxy id; generated from host, port and start time when empty.
    pub id: String,
    /// Password clients must give with AUTH / HELLO AUTH (none: no auth).
    pub password: Option<String>,
    /// Credentials the proxy uses on its backend connections.
    pub backend_user: Option<String>,
    pub backend_password: Option<String>,
    /// Worker threads; 0 = the CPUs this process may run on.
    pub threads: usize,
    /// Connections per backend server and protocol, shared by all sessions.
    pub backend_connections: usize,
    pub backend_connect_timeout_ms: u64,
    /// A backend that answers nothing for this long is treated as lost.
    pub backend_read_timeout_ms: u64,
    /// How long a request for a held slot waits before -TRYAGAIN.
    pub hold_timeout_ms: u64,
    pub max_clients: usize,
    /// Requests a session may have in flight before the proxy stops reading it.
    pub max_pipeline: usize,
    /// Replies one client may leave unread (MiB) before its connection is
    /// closed, like Redis's `client-output-buffer-limit`.
    pub max_client_output_mb: usize,
    /// Close clients idle this long (0: never).
    pub client_idle_timeout_secs: u64,
    /// TCP keepalive on client connections (0: off).
    pub tcp_keepalive_secs: u64,
    /// Bytes of large request/reply buffers all sessions together may hold.
    pub memory_budget_mb: usize,
    /// etcd lease TTL of the proxy's registration.
    pub lease_ttl_secs: u64,
    /// Record per-request statistics (per command, per slot, latency
    /// histograms, slowlog). Off only to measure what recording costs.
    pub stats: bool,
    /// Requests slower than this go to the slowlog.
    pub slowlog_threshold_us: u64,
    pub slowlog_max_len: usize,
    pub max_bulk_len: usize,
    pub max_elements: usize,
    pub max_inline_len: usize,
}

impl Default for Config {
    fn default() -> Self {
        let limits = Limits::default();
        Config {
            listen: "127.0.0.1:19000".into(),
            admin_listen: "127.0.0.1:11080".into(),
            etcd: vec!["http://127.0.0.1:23790".into()],
            cluster: "shardis".into(),
            id: String::new(),
            password: None,
            backend_user: None,
            backend_password: None,
            threads: 0,
            backend_connections: 1,
            backend_connect_timeout_ms: 1000,
            backend_read_timeout_ms: 10_000,
            hold_timeout_ms: 2000,
            max_clients: 50_000,
            max_pipeline: 16_384,
            max_client_output_mb: 1024,
            client_idle_timeout_secs: 0,
            tcp_keepalive_secs: 300,
            memory_budget_mb: 2048,
            lease_ttl_secs: 10,
            stats: true,
            slowlog_threshold_us: 10_000,
            slowlog_max_len: 128,
            max_bulk_len: limits.max_bulk_len,
            max_elements: limits.max_elements,
            max_inline_len: limits.max_inline_len,
        }
    }
}

impl Config {
    pub fn validate(&self) -> Result<(), String> {
        if !shardis_topology::keys::valid_name(&self.cluster) {
            return Err(format!(
                "cluster name {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                self.cluster
            ));
        }
        if !self.id.is_empty() && !shardis_topology::keys::valid_name(&self.id) {
            return Err(format!(
                "proxy id {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                self.id
            ));
        }
        if self.etcd.is_empty() {
            return Err("at least one etcd endpoint is needed".into());
        }
        if self.backend_connections == 0 || self.backend_connections > 64 {
            return Err("backend_connections must be 1-64".into());
        }
        if self.lease_ttl_secs < 3 {
            return Err("lease_ttl_secs must be at least 3".into());
        }
        if self.max_pipeline == 0 || self.max_clients == 0 {
            return Err("max_pipeline and max_clients must be positive".into());
        }
        if self.max_client_output_mb < 600 {
            return Err(
                "max_client_output_mb must be at least 600 (a Redis string may be 512 MiB)".into(),
            );
        }
        for (name, addr) in [
            ("listen", &self.listen),
            ("admin_listen", &self.admin_listen),
        ] {
            if addr.parse::<std::net::SocketAddr>().is_err() {
                return Err(format!("{name} {addr:?} is not an ip:port address"));
            }
        }
        Ok(())
    }

    pub fn limits(&self) -> Limits {
        Limits {
            max_bulk_len: self.max_bulk_len,
            max_elements: self.max_elements,
            max_inline_len: self.max_inline_len,
            ..Limits::default()
        }
    }

    pub fn hold_timeout(&self) -> Duration {
        Duration::from_millis(self.hold_timeout_ms)
    }

    pub fn client_idle_timeout(&self) -> Option<Duration> {
        (self.client_idle_timeout_secs > 0)
            .then(|| Duration::from_secs(self.client_idle_timeout_secs))
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
}

/// What `--default-config` prints: every setting with its default, explained.
pub const DEFAULT_CONFIG: &str = r#"# shardis-proxy configuration. Every setting is optional; flags override it.

# Where clients connect (any Redis client, RESP2 or RESP3).
listen = "127.0.0.1:19000"
# Admin HTTP: /healthz, /readyz, /metrics (Prometheus), /api/v1/stats.
admin_listen = "127.0.0.1:11080"
# etcd endpoints holding the topology.
etcd = ["http://127.0.0.1:23790"]
# The topology lives under /shardis/<cluster>/ in etcd.
cluster = "shardis"
# Unique proxy id; generated from host, port and start time when empty.
id = ""

# Password clients give with AUTH / HELLO ... AUTH default <pw>. Unset: no auth.
# password = "client-secret"
# Credentials for the Redis servers (ACL user or requirepass); replayed on every reconnect.
# backend_user = "shardis"
# backend_password = "backend-secret"

# Worker threads; 0 = every CPU this process may run on (respects taskset).
threads = 0
# Pipelined connections per backend server and protocol, shared by all clients.
backend_connections = 1
backend_connect_timeout_ms = 1000
# A backend that answers nothing for this long is treated as lost.
backend_read_timeout_ms = 10000
# Requests for a slot held by a topology change wait this long, then get -TRYAGAIN.
hold_timeout_ms = 2000

max_clients = 50000
# Requests one client may have in flight before the proxy stops reading it.
max_pipeline = 16384
# Replies one client may leave unread (MiB, counted from the backends' answers
# to what the client's socket took): past 64 MiB the proxy stops reading the
# client's requests, past this it closes the connection (like Redis's
# client-output-buffer-limit). At least 600: a Redis string may be 512 MiB.
max_client_output_mb = 1024
# Close clients idle for this long (0: never).
client_idle_timeout_secs = 0
# TCP keepalive on client connections (0: off).
tcp_keepalive_secs = 300
# Large request and reply buffers of all clients together (MiB). Past it, new
# requests wait and a request that alone does not fit is refused.
memory_budget_mb = 2048

# TTL of the proxy's etcd registration. The proxy stops serving by itself before
# it can have expired on etcd's side when keep-alives fail.
lease_ttl_secs = 10

# Per-request statistics: calls, errors and latency histograms per command, ops
# per slot, the slowlog (/metrics, /api/v1/stats). Turn off only to measure what
# recording costs; sessions and backend request counters are kept either way.
stats = true
# Requests slower than this (µs, from sending them to their reply being ready)
# go to the slowlog (SLOWLOG GET through the proxy, /api/v1/slowlog).
slowlog_threshold_us = 10000
slowlog_max_len = 128

# Protocol limits for client input.
max_bulk_len = 536870912
max_elements = 1048576
max_inline_len = 65536
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_text_parses_to_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG).unwrap();
        let def = Config::default();
        assert_eq!(
            serde_json::to_value(&parsed).unwrap(),
            serde_json::to_value(&def).unwrap()
        );
        parsed.validate().unwrap();
    }

    #[test]
    fn validate_rejects_bad_values() {
        let c = Config {
            cluster: "a/b".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            listen: "nowhere".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
