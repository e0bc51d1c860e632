//! The dashboard's own commands to Redis servers: `INFO replication`,
//! `DBSIZE`, `REPLICAOF`, `CLIENT LIST`/`CLIENT KILL`. A fresh connection per
//! call (the control plane is not a hot path, and a connection that a dead
//! server left behind can then never wedge a later call), with the configured
//! credentials and a timeout on everything.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, RedisConnectionInfo};
use tokio::time::{sleep, timeout, Instant};

use crate::api::{ReplicaLink, Replication};
use crate::error::AppError;

/// How a control-plane command reaches Redis servers.
#[derive(Clone)]
pub struct Servers {
    user: Option<String>,
    password: Option<String>,
    timeout: Duration,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the password.
        f.debug_struct("Servers")
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// `host:port` split for Redis (`[::1]:7001` → `::1`, 7001).
pub fn split_addr(addr: &str) -> Result<(String, u16), AppError> {
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| AppError::BadRequest(format!("server address {addr:?} has no port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| AppError::BadRequest(format!("server address {addr:?} has a bad port")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((host.to_string(), port))
}

impl Servers {
    pub fn new(user: Option<String>, password: Option<String>, timeout: Duration) -> Servers {
        Servers {
            user,
            password,
            timeout,
        }
    }

    async fn connect(&self, addr: &str) -> Result<MultiplexedConnection, AppError> {
        self.connect_with(addr, self.timeout).await
    }

    /// A connection whose replies may take up to `response_timeout` (the
    /// mover's `MIGRATE` of a large batch blocks the source that long).
    pub async fn connect_with(
        &self,
        addr: &str,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, AppError> {
        let (host, port) = split_addr(addr)?;
        let info = ConnectionInfo {
            addr: ConnectionAddr::Tcp(host, port),
            redis: RedisConnectionInfo {
                db: 0,
                username: self.user.clone(),
                password: self.password.clone(),
                ..RedisConnectionInfo::default()
            },
        };
        let client = redis::Client::open(info)
            .map_err(|e| AppError::Server(format!("Redis server {addr}: {e}")))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(response_timeout);
        match timeout(
            self.timeout,
            client.get_multiplexed_async_connection_with_config(&config),
        )
        .await
        {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) if e.is_io_error() || e.is_connection_refusal() || e.is_timeout() => Err(
                AppError::Server(format!("Redis server {addr} is unreachable: {e}")),
            ),
            // It answered, but refused the login (wrong or missing credentials).
            Ok(Err(e)) if e.kind() == redis::ErrorKind::AuthenticationFailed => {
                Err(AppError::Server(format!(
                    "Redis server {addr} refused the dashboard's login (check backend_user / \
                     backend_password): {e}"
                )))
            }
            Ok(Err(e)) => Err(AppError::Server(format!(
                "{addr} did not answer as a Redis server does (is it one?): {e}"
            ))),
            Err(_) => Err(AppError::Server(format!(
                "Redis server {addr} is unreachable: no answer within {:?}",
                self.timeout
            ))),
        }
    }

    /// `MIGRATE`'s credentials for a target server (the source logs in to
    /// the target with them): `AUTH2 user pw`, `AUTH pw`, or nothing.
    pub fn migrate_auth(&self) -> Vec<String> {
        match (&self.user, &self.password) {
            (Some(user), Some(pw)) => vec!["AUTH2".into(), user.clone(), pw.clone()],
            (None, Some(pw)) => vec!["AUTH".into(), pw.clone()],
            _ => Vec::new(),
        }
    }

    /// The server's `run_id` (`INFO server`): the same for every address
    /// it answers on, so two names of one Redis process are told apart.
    pub async fn run_id(&self, addr: &str) -> Result<String, AppError> {
        let text = self.info(addr, "server").await?;
        info_fields(&text).remove("run_id").ok_or_else(|| {
            AppError::Server(format!("Redis server {addr}: no run_id in INFO server"))
        })
    }

    /// A section of `INFO` as text.
    pub async fn info(&self, addr: &str, section: &str) -> Result<String, AppError> {
        self.run(addr, redis::cmd("INFO").arg(section)).await
    }

    /// Closes the connections of proxies that are not live any more:
    /// every connection named `shardis-proxy-<id>` whose id is not in
    /// `live`. What it closed, as `(name, count)`.
    pub async fn kill_lost_proxies(
        &self,
        addr: &str,
        live: &[String],
    ) -> Result<Vec<(String, usize)>, AppError> {
        let list: String = self.run(addr, redis::cmd("CLIENT").arg("LIST")).await?;
        let mut killed: std::collections::BTreeMap<String, usize> = Default::default();
        for line in list.lines() {
            let field = |key: &str| {
                line.split(' ')
                    .find_map(|f| f.strip_prefix(key))
                    .map(str::to_string)
            };
            let (Some(name), Some(id)) = (field("name="), field("id=")) else {
                continue;
            };
            let Some(proxy) = name.strip_prefix("shardis-proxy-") else {
                continue;
            };
            if live.iter().any(|l| l == proxy) {
                continue;
            }
            let _ = self
                .run::<redis::Value>(addr, redis::cmd("CLIENT").arg("KILL").arg("ID").arg(&id))
                .await;
            *killed.entry(name).or_default() += 1;
        }
        Ok(killed.into_iter().collect())
    }

    /// Runs one command on a fresh connection.
    pub(crate) async fn run<T: redis::FromRedisValue>(
        &self,
        addr: &str,
        cmd: &redis::Cmd,
    ) -> Result<T, AppError> {
        let mut conn = self.connect(addr).await?;
        let what = describe(cmd);
        match timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(AppError::Server(format!(
                "Redis server {addr} failed {what}: {e}"
            ))),
            Err(_) => Err(AppError::Server(format!(
                "Redis server {addr} did not answer {what} within {:?}",
                self.timeout
            ))),
        }
    }

    /// The server's `INFO replication`.
    pub async fn replication(&self, addr: &str) -> Result<Replication, AppError> {
        let text: String = self
            .run(addr, redis::cmd("INFO").arg("replication"))
            .await?;
        Ok(parse_replication(&text))
    }

    /// Keys in database 0.
    pub async fn dbsize(&self, addr: &str) -> Result<u64, AppError> {
        self.run(addr, &redis::cmd("DBSIZE")).await
    }

    /// `REPLICAOF master`: the server drops its data and copies the master's.
    /// When the dashboard has backend credentials, they are given to the
    /// replica first (`masteruser`/`masterauth`) so it can log in to its master.
    pub async fn make_replica(&self, addr: &str, master: &str) -> Result<(), AppError> {
        if let Some(user) = &self.user {
            self.run::<()>(
                addr,
                redis::cmd("CONFIG").arg("SET").arg("masteruser").arg(user),
            )
            .await?;
        }
        if let Some(password) = &self.password {
            self.run::<()>(
                addr,
                redis::cmd("CONFIG")
                    .arg("SET")
                    .arg("masterauth")
                    .arg(password),
            )
            .await?;
        }
        let (host, port) = split_addr(master)?;
        self.run::<()>(addr, redis::cmd("REPLICAOF").arg(host).arg(port))
            .await
    }

    /// `REPLICAOF NO ONE`: the server stops following its master and keeps its data.
    pub async fn make_master(&self, addr: &str) -> Result<(), AppError> {
        self.run::<()>(addr, redis::cmd("REPLICAOF").arg("NO").arg("ONE"))
            .await
    }

    /// Closes every connection named `name` (`CLIENT SETNAME`) on the server;
    /// how many there were. Proxies name their backend connections, so this
    /// cuts off whatever a lost proxy still had in a socket.
    pub async fn kill_clients_named(&self, addr: &str, name: &str) -> Result<usize, AppError> {
        let list: String = self.run(addr, redis::cmd("CLIENT").arg("LIST")).await?;
        let ids: Vec<String> = list
            .lines()
            .filter(|line| {
                line.split(' ')
                    .any(|f| f.strip_prefix("name=") == Some(name))
            })
            .filter_map(|line| line.split(' ').find_map(|f| f.strip_prefix("id=")))
            .map(str::to_string)
            .collect();
        for id in &ids {
            // The connection may have closed meanwhile: that is what we want.
            let _ = self
                .run::<redis::Value>(addr, redis::cmd("CLIENT").arg("KILL").arg("ID").arg(id))
                .await;
        }
        Ok(ids.len())
    }

    /// Waits until the server has processed its master's stream up to
    /// `offset`; the offset it reached, or a timeout error saying how far
    /// behind it is.
    pub async fn wait_offset(
        &self,
        addr: &str,
        offset: u64,
        within: Duration,
    ) -> Result<u64, AppError> {
        let deadline = Instant::now() + within;
        loop {
            let last = self.replication(addr).await;
            if let Ok(r) = &last {
                if r.processed_offset() >= offset {
                    return Ok(r.processed_offset());
                }
            }
            if Instant::now() >= deadline {
                return Err(match last {
                    Ok(r) => AppError::Timeout(format!(
                        "replica {addr} did not catch up within {within:?}: it is at offset {} \
                         of {offset} (link {})",
                        r.processed_offset(),
                        r.master_link_status.as_deref().unwrap_or("unknown")
                    )),
                    Err(e) => e,
                });
            }
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits (bounded) until a new replica's link to its master is up, so the
    /// answer shows a settled state; the last state seen either way.
    pub async fn wait_link_up(
        &self,
        addr: &str,
        within: Duration,
    ) -> Result<Replication, AppError> {
        let deadline = Instant::now() + within;
        loop {
            let r = self.replication(addr).await?;
            let up = r.master_link_status.as_deref() == Some("up") && !r.master_sync_in_progress;
            if up || Instant::now() >= deadline {
                return Ok(r);
            }
            sleep(Duration::from_millis(50)).await;
        }
    }
}

fn describe(cmd: &redis::Cmd) -> String {
    // The first two words (`CONFIG SET`, `REPLICAOF NO`): never the arguments,
    // which may hold a password.
    let words: Vec<String> = cmd
        .args_iter()
        .take(2)
        .filter_map(|a| match a {
            redis::Arg::Simple(bytes) => Some(String::from_utf8_lossy(bytes).into_owned()),
            redis::Arg::Cursor => None,
        })
        .collect();
    words.join(" ")
}

/// Parses `INFO replication` (Redis 6 and 7 field names).
pub fn parse_replication(text: &str) -> Replication {
    let mut r = Replication::default();
    let mut master_host = None;
    let mut master_port = None;
    for line in text.lines() {
        let Some((key, value)) = line.trim_end_matches('\r').split_once(':') else {
            continue;
        };
        let num = || value.parse::<u64>().ok();
        match key {
            "role" => r.role = value.to_string(),
            "master_host" => master_host = Some(value.to_string()),
            "master_port" => master_port = Some(value.to_string()),
            "master_link_status" => r.master_link_status = Some(value.to_string()),
            "master_last_io_seconds_ago" => r.master_last_io_seconds_ago = value.parse().ok(),
            "master_sync_in_progress" => r.master_sync_in_progress = value == "1",
            "slave_repl_offset" => r.slave_repl_offset = num(),
            "master_repl_offset" => r.master_repl_offset = num().unwrap_or(0),
            "connected_slaves" => r.connected_replicas = num().unwrap_or(0),
            k if k
                .strip_prefix("slave")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())) =>
            {
                r.replicas.push(parse_replica_line(value));
            }
            _ => {}
        }
    }
    if let (Some(host), Some(port)) = (master_host, master_port) {
        r.master = Some(if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        });
    }
    r
}

/// `ip=127.0.0.1,port=7002,state=online,offset=1234,lag=0`
fn parse_replica_line(value: &str) -> ReplicaLink {
    let mut link = ReplicaLink::default();
    let (mut ip, mut port) = (String::new(), String::new());
    for field in value.split(',') {
        match field.split_once('=') {
            Some(("ip", v)) => ip = v.to_string(),
            Some(("port", v)) => port = v.to_string(),
            Some(("state", v)) => link.state = v.to_string(),
            Some(("offset", v)) => link.offset = v.parse().unwrap_or(0),
            Some(("lag", v)) => link.lag = v.parse().unwrap_or(0),
            _ => {}
        }
    }
    link.addr = format!("{ip}:{port}");
    link
}

/// Parses `INFO` text into `field → value`.
pub fn info_fields(text: &str) -> std::collections::HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MASTER: &str = "# Replication\r\nrole:master\r\nconnected_slaves:1\r\n\
        slave0:ip=127.0.0.1,port=7002,state=online,offset=1234,lag=1\r\n\
        master_failover_state:no-failover\r\nmaster_replid:abc\r\n\
        master_repl_offset:1250\r\nsecond_repl_offset:-1\r\n";
    const REPLICA: &str = "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\n\
        master_port:7001\r\nmaster_link_status:up\r\nmaster_last_io_seconds_ago:2\r\n\
        master_sync_in_progress:0\r\nslave_read_repl_offset:1234\r\nslave_repl_offset:1234\r\n\
        slave_priority:100\r\nconnected_slaves:0\r\nmaster_repl_offset:1234\r\n";

    #[test]
    fn parses_a_master() {
        let r = parse_replication(MASTER);
        assert!(r.is_master());
        assert_eq!(r.master_repl_offset, 1250);
        assert_eq!(r.processed_offset(), 1250);
        assert_eq!(r.connected_replicas, 1);
        assert_eq!(
            r.replicas,
            vec![ReplicaLink {
                addr: "127.0.0.1:7002".into(),
                state: "online".into(),
                offset: 1234,
                lag: 1
            }]
        );
        assert_eq!(r.master, None);
    }

    #[test]
    fn parses_a_replica() {
        let r = parse_replication(REPLICA);
        assert!(!r.is_master());
        assert_eq!(r.role, "slave");
        assert_eq!(r.master.as_deref(), Some("127.0.0.1:7001"));
        assert_eq!(r.master_link_status.as_deref(), Some("up"));
        assert_eq!(r.master_last_io_seconds_ago, Some(2));
        assert!(!r.master_sync_in_progress);
        assert_eq!(r.slave_repl_offset, Some(1234));
        assert_eq!(r.processed_offset(), 1234);
        assert!(r.replicas.is_empty());
    }

    #[test]
    fn addresses_split_for_redis() {
        assert_eq!(
            split_addr("127.0.0.1:7001").unwrap(),
            ("127.0.0.1".into(), 7001)
        );
        assert_eq!(split_addr("[::1]:7001").unwrap(), ("::1".into(), 7001));
        assert!(split_addr("nope").is_err());
    }

    #[test]
    fn commands_are_described_without_their_arguments() {
        let cmd = redis::cmd("CONFIG")
            .arg("SET")
            .arg("masterauth")
            .arg("secret")
            .clone();
        assert_eq!(describe(&cmd), "CONFIG SET");
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_502_naming_it() {
        let servers = Servers::new(None, None, Duration::from_millis(300));
        let err = servers.dbsize("127.0.0.1:1").await.unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::BAD_GATEWAY);
        assert!(err.to_string().contains("127.0.0.1:1"), "{err}");
    }
}
