//! The read-only views: groups with their servers' replication state, slots,
//! proxies with their health, and the overview that combines them. Servers
//! and proxies are asked concurrently, each with a short timeout, so one dead
//! server costs one timeout, not one per server.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::future::join_all;
use shardis_topology::{format_ranges, Group, SlotState, Topology};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::api::{
    GroupStatus, Overview, ProxyStatus, Replication, ServerRole, ServerStatus, SlotInfo,
};
use crate::error::AppError;
use crate::state::AppState;

/// Every group with its servers' state as Redis reports it.
pub async fn groups(state: &AppState, t: &Topology) -> Vec<GroupStatus> {
    join_all(t.groups.values().map(|g| group(state, t, g))).await
}

async fn group(state: &AppState, t: &Topology, g: &Group) -> GroupStatus {
    let asked = join_all(g.servers.iter().map(|addr| async move {
        let replication = state.servers.replication(addr).await;
        let keys = match &replication {
            Ok(_) => state.servers.dbsize(addr).await.ok(),
            Err(_) => None,
        };
        (replication, keys)
    }))
    .await;
    let master = g.master();
    let master_offset = asked
        .first()
        .and_then(|(r, _)| r.as_ref().ok())
        .map(|r| r.master_repl_offset);
    let servers = g
        .servers
        .iter()
        .zip(asked)
        .enumerate()
        .map(|(i, (addr, (replication, keys)))| {
            let role = if i == 0 {
                ServerRole::Master
            } else {
                ServerRole::Replica
            };
            let (replication, error) = match replication {
                Ok(r) => {
                    let problem = mismatch(role, master, &r);
                    (Some(r), problem)
                }
                Err(e) => (None, Some(e.to_string())),
            };
            let lag_bytes = match (role, &replication, master_offset) {
                (ServerRole::Replica, Some(r), Some(m)) if !r.is_master() => {
                    Some(m.saturating_sub(r.processed_offset()))
                }
                _ => None,
            };
            ServerStatus {
                addr: addr.clone(),
                role,
                replication,
                lag_bytes,
                keys,
                error,
            }
        })
        .collect();
    let owned: Vec<usize> = t
        .slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.owner() == Some(g.id))
        .map(|(i, _)| i)
        .collect();
    GroupStatus {
        id: g.id,
        servers,
        slot_count: owned.len(),
        slots: format_ranges(owned),
    }
}

/// Where Redis disagrees with the topology about a server.
fn mismatch(role: ServerRole, master: Option<&str>, r: &Replication) -> Option<String> {
    match role {
        ServerRole::Master if !r.is_master() => Some(format!(
            "Redis says this server is a replica of {}, but it is the group's master",
            r.master.as_deref().unwrap_or("an unknown master")
        )),
        ServerRole::Replica if r.is_master() => Some(
            "Redis says this server is a master: it does not replicate the group's master".into(),
        ),
        ServerRole::Replica if r.master.as_deref() != master => Some(format!(
            "replicates {}, not the group's master {}",
            r.master.as_deref().unwrap_or("nothing"),
            master.unwrap_or("(none)")
        )),
        _ => None,
    }
}

/// All 1024 slots.
pub fn slots(t: &Topology) -> Vec<SlotInfo> {
    t.slots
        .iter()
        .enumerate()
        .map(|(slot, s)| SlotInfo {
            slot,
            state: s.name().to_string(),
            group: s.owner(),
            target: match s {
                SlotState::Migrating { to, .. } => Some(*to),
                _ => None,
            },
        })
        .collect()
}

/// Every registered proxy, with its health and whether it lags `version`.
pub async fn proxies(state: &AppState, version: u64) -> Result<Vec<ProxyStatus>, AppError> {
    let listed = state.store.list_proxies().await?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let within = state.config.proxy_health_timeout();
    let health = join_all(listed.iter().map(|p| probe_ready(&p.admin_addr, within))).await;
    Ok(listed
        .into_iter()
        .zip(health)
        .map(|(p, (healthy, health))| ProxyStatus {
            uptime_secs: now.saturating_sub(p.start_time),
            lagging: p.applied_version < version,
            id: p.id,
            addr: p.addr,
            admin_addr: p.admin_addr,
            pid: p.pid,
            start_time: p.start_time,
            applied_version: p.applied_version,
            healthy,
            health,
        })
        .collect())
}

pub async fn overview(state: &AppState) -> Result<Overview, AppError> {
    let t = state.load().await?;
    let (groups, proxies) = tokio::join!(groups(state, &t), proxies(state, t.version));
    let ranges_where = |f: fn(&SlotState) -> bool| {
        format_ranges(
            t.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| f(s))
                .map(|(i, _)| i),
        )
    };
    Ok(Overview {
        cluster: state.config.cluster.clone(),
        version: t.version,
        dashboard: state.leadership.status(),
        groups,
        unassigned_slots: ranges_where(|s| matches!(s, SlotState::Unassigned)),
        busy_slots: ranges_where(|s| {
            matches!(s, SlotState::Held { .. } | SlotState::Migrating { .. })
        }),
        proxies: proxies?,
    })
}

/// `GET /readyz` on a proxy's admin address: (ready, what it said).
pub async fn probe_ready(admin_addr: &str, within: Duration) -> (bool, String) {
    match timeout(within, http_status(admin_addr, "/readyz")).await {
        Ok(Ok(200)) => (true, "ready".into()),
        Ok(Ok(code)) => (false, format!("not ready (/readyz answered {code})")),
        Ok(Err(e)) => (false, format!("unreachable: {e}")),
        Err(_) => (false, format!("no answer from /readyz within {within:?}")),
    }
}

/// The status code of a plain HTTP/1.1 GET (a tiny client: the dashboard
/// only needs the status line of a proxy's health endpoint).
async fn http_status(addr: &str, path: &str) -> std::io::Result<u16> {
    let mut stream = TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut head = Vec::with_capacity(64);
    let mut buf = [0u8; 256];
    while !head.windows(2).any(|w| w == b"\r\n") && head.len() < 1024 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(buf.get(..n).unwrap_or_default());
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!(
                    "not an HTTP answer: {:?}",
                    line.lines().next().unwrap_or("")
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatches_are_named() {
        let master = Replication {
            role: "master".into(),
            ..Replication::default()
        };
        let replica_of = |m: &str| Replication {
            role: "slave".into(),
            master: Some(m.into()),
            ..Replication::default()
        };
        assert_eq!(mismatch(ServerRole::Master, Some("h:1"), &master), None);
        assert_eq!(
            mismatch(ServerRole::Replica, Some("h:1"), &replica_of("h:1")),
            None
        );
        assert!(
            mismatch(ServerRole::Replica, Some("h:1"), &replica_of("h:9"))
                .unwrap()
                .contains("h:9")
        );
        assert!(mismatch(ServerRole::Replica, Some("h:1"), &master).is_some());
        assert!(mismatch(ServerRole::Master, Some("h:1"), &replica_of("h:2")).is_some());
    }

    #[tokio::test]
    async fn an_unreachable_proxy_is_unhealthy() {
        let (ok, health) = probe_ready("127.0.0.1:1", Duration::from_millis(300)).await;
        assert!(!ok);
        assert!(
            health.contains("unreachable") || health.contains("no answer"),
            "{health}"
        );
    }

    #[tokio::test]
    async fn the_status_line_is_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 512];
            let _ = s.read(&mut buf).await;
            s.write_all(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n")
                .await
                .unwrap();
        });
        let (ok, health) = probe_ready(&addr, Duration::from_secs(2)).await;
        assert!(!ok);
        assert!(health.contains("503"), "{health}");
    }
}
