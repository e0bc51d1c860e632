//! Dashboard configuration: a TOML file (every setting optional), overridden
//! by command-line flags.

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the HTTP API listens.
    pub listen: String,
    /// etcd endpoints.
    pub etcd: Vec<String>,
    /// Cluster name: the topology lives under /shardis/<cluster>/.
    pub cluster: String,
    /// Dashboard id, shown as the leader; generated when empty.
    pub id: String,
    /// When set, every mutating call needs `Authorization: Bearer <token>`.
    pub admin_token: Option<String>,
    /// Credentials for the Redis servers (ACL user and/or password). Only
    /// the dashboard's own configuration holds them: never written to etcd.
    pub backend_user: Option<String>,
    pub backend_password: Option<String>,
    /// TTL of the leadership lease: a standby takes over within about this
    /// long (+ etcd's expiry check) after the leader dies.
    pub lease_ttl_secs: u64,
    /// How long a barrier waits for every live proxy to apply a topology version.
    pub barrier_timeout_secs: u64,
    /// How long a promotion waits for the replica to reach the master's offset.
    pub catchup_timeout_secs: u64,
    /// Connect and answer timeout of each control-plane Redis command.
    pub redis_timeout_ms: u64,
    /// How long a proxy's /readyz may take when listing proxies.
    pub proxy_health_timeout_ms: u64,
    /// How often proxies' stats and servers' INFO are collected (the web
    /// UI's and `/api/v1/stats`'s resolution; 300 points are kept).
    pub stats_interval_ms: u64,
    /// MiB of key names the mover keeps per wave, so that each slot can end
    /// as soon as its own keys moved; past it, keys move as the scan finds
    /// them and their slots end with the wave. 0: keep none.
    pub mover_memory_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: "127.0.0.1:18080".into(),
            etcd: vec!["http://127.0.0.1:23790".into()],
            cluster: "shardis".into(),
            id: String::new(),
            admin_token: None,
            backend_user: None,
            backend_password: None,
            lease_ttl_secs: 5,
            barrier_timeout_secs: 30,
            catchup_timeout_secs: 30,
            redis_timeout_ms: 2000,
            proxy_health_timeout_ms: 500,
            stats_interval_ms: 1000,
            mover_memory_mib: 256,
        }
    }
}

/// Admin tokens shorter than this are refused: a guessable token protects nothing.
pub const MIN_TOKEN_LEN: usize = 16;

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
                "dashboard id {:?} must be 1-64 characters of [A-Za-z0-9_-]",
                self.id
            ));
        }
        if self.etcd.is_empty() || self.etcd.iter().any(|e| e.trim().is_empty()) {
            return Err("at least one etcd endpoint is needed (and none may be empty)".into());
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(format!(
                "listen {:?} is not an ip:port address",
                self.listen
            ));
        }
        if let Some(token) = &self.admin_token {
            if token.len() < MIN_TOKEN_LEN {
                return Err(format!(
                    "admin_token must be at least {MIN_TOKEN_LEN} characters (use a random one, \
                     e.g. `openssl rand -hex 16`)"
                ));
            }
        }
        if self.lease_ttl_secs < 2 {
            return Err("lease_ttl_secs must be at least 2".into());
        }
        for (name, value) in [
            ("barrier_timeout_secs", self.barrier_timeout_secs),
            ("catchup_timeout_secs", self.catchup_timeout_secs),
            ("redis_timeout_ms", self.redis_timeout_ms),
            ("proxy_health_timeout_ms", self.proxy_health_timeout_ms),
            ("stats_interval_ms", self.stats_interval_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be positive"));
            }
        }
        Ok(())
    }

    pub fn lease_ttl(&self) -> Duration {
        Duration::from_secs(self.lease_ttl_secs)
    }
    pub fn barrier_timeout(&self) -> Duration {
        Duration::from_secs(self.barrier_timeout_secs)
    }
    pub fn catchup_timeout(&self) -> Duration {
        Duration::from_secs(self.catchup_timeout_secs)
    }
    pub fn redis_timeout(&self) -> Duration {
        Duration::from_millis(self.redis_timeout_ms)
    }
    pub fn stats_interval(&self) -> Duration {
        Duration::from_millis(self.stats_interval_ms)
    }
    pub fn proxy_health_timeout(&self) -> Duration {
        Duration::from_millis(self.proxy_health_timeout_ms)
    }
    /// [`Self::mover_memory_mib`] in bytes.
    pub fn mover_memory(&self) -> usize {
        usize::try_from(self.mover_memory_mib.saturating_mul(1 << 20)).unwrap_or(usize::MAX)
    }
}

/// What `--default-config` prints: every setting with its default, explained.
pub const DEFAULT_CONFIG: &str = r#"# shardis-dashboard configuration. Every setting is optional; flags override it.

# Where the HTTP API (and the `shardis` CLI's target) listens.
listen = "127.0.0.1:18080"
# etcd endpoints holding the topology.
etcd = ["http://127.0.0.1:23790"]
# The topology lives under /shardis/<cluster>/ in etcd.
cluster = "shardis"
# Dashboard id, shown as the leader; generated from the port and start time when empty.
id = ""

# When set, every mutating call needs `Authorization: Bearer <token>` (the CLI's
# --token / SHARDIS_TOKEN). Read-only calls stay open. At least 16 characters.
# admin_token = "0123456789abcdef0123456789abcdef"

# Credentials for the Redis servers (ACL user and/or requirepass), used for the
# dashboard's own commands (INFO, DBSIZE, REPLICAOF) and given to replicas as
# masteruser/masterauth. They stay in this file: nothing is written to etcd.
# backend_user = "shardis"
# backend_password = "backend-secret"

# TTL of the leadership lease. Only one dashboard per cluster accepts changes;
# a standby takes over within about this long (+ up to 2 s) after the leader dies.
lease_ttl_secs = 5
# How long a topology change waits for every live proxy to confirm it.
barrier_timeout_secs = 30
# How long a promotion waits for the replica to catch up with the master.
catchup_timeout_secs = 30
# Connect/answer timeout of each Redis command the dashboard sends.
redis_timeout_ms = 2000
# How long a proxy's /readyz may take when proxies are listed.
proxy_health_timeout_ms = 500
# How often every proxy's /api/v1/stats and every server's INFO are read for
# /api/v1/stats, /metrics and the web UI (the last 300 readings are kept).
stats_interval_ms = 1000
# MiB of key names the migration mover keeps per wave (about 24 bytes per key
# of 20 bytes), so that each slot ends as soon as its own keys moved; past it,
# keys move as they are found and their slots end with the wave. 0: keep none.
mover_memory_mib = 256
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_config_text_parses_to_the_defaults() {
        let parsed: Config = toml::from_str(DEFAULT_CONFIG).unwrap();
        assert_eq!(parsed, Config::default());
        parsed.validate().unwrap();
    }

    #[test]
    fn partial_files_keep_the_other_defaults() {
        let parsed: Config = toml::from_str("cluster = \"local\"\nlease_ttl_secs = 3\n").unwrap();
        assert_eq!(parsed.cluster, "local");
        assert_eq!(parsed.lease_ttl_secs, 3);
        assert_eq!(parsed.listen, Config::default().listen);
        assert!(toml::from_str::<Config>("no_such_setting = 1").is_err());
    }

    #[test]
    fn validate_rejects_bad_values() {
        let bad = [
            Config {
                cluster: "a/b".into(),
                ..Config::default()
            },
            Config {
                listen: "nowhere".into(),
                ..Config::default()
            },
            Config {
                etcd: vec![],
                ..Config::default()
            },
            Config {
                admin_token: Some("short".into()),
                ..Config::default()
            },
            Config {
                lease_ttl_secs: 1,
                ..Config::default()
            },
            Config {
                barrier_timeout_secs: 0,
                ..Config::default()
            },
        ];
        for c in bad {
            assert!(c.validate().is_err(), "{c:?}");
        }
    }
}
