//! The barrier: after a topology change, wait until every live proxy has
//! applied (and drained) that version.
//!
//! A proxy publishes `applied_version` in its etcd registration only after it
//! swapped in the new slot table *and* every request routed with the old one
//! has been answered (see the proxy's `lifecycle.rs`). It registers before it
//! reads the topology, so a proxy that starts during the change is either
//! listed here (and waited for) or reads the new version anyway. A proxy whose
//! lease expires drops out of the list: it has fenced itself (stopped serving)
//! before its lease could expire. Such proxies are reported in
//! [`Passed::vanished`] when they were still behind, so that a caller about to
//! act on a server can also cut their backend connections there (bytes already
//! in a socket run when Redis reads them).
//!
//! Used by promotion now; migration will use it for its hold and completion
//! steps.

use std::collections::BTreeMap;
use std::time::Duration;

use shardis_topology::{ProxyInfo, Store, StoreError};
use tokio::time::{sleep, Instant};

use crate::api::LaggingProxy;

/// How often the proxies' registrations are read while waiting: requests
/// for held slots wait meanwhile, so not much longer than the proxies take.
pub const POLL_INTERVAL: Duration = Duration::from_millis(5);

/// Every live proxy confirmed the version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passed {
    /// How many live proxies confirmed it.
    pub confirmed: usize,
    /// Proxies that were behind and whose lease then expired (they are
    /// fenced; their backend connections may still hold requests).
    pub vanished: Vec<ProxyInfo>,
}

#[derive(Debug, thiserror::Error)]
pub enum BarrierError {
    /// Some live proxies had not applied `version` when the time was up.
    #[error("{} of {live} live proxies did not apply topology version {version} within {waited:?}: {}",
        .lagging.len(), describe(.lagging))]
    Lagging {
        version: u64,
        live: usize,
        waited: Duration,
        lagging: Vec<LaggingProxy>,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe(lagging: &[LaggingProxy]) -> String {
    lagging
        .iter()
        .map(|p| format!("{} ({}) at version {}", p.id, p.addr, p.applied_version))
        .collect::<Vec<_>>()
        .join(", ")
}

impl From<BarrierError> for crate::error::AppError {
    fn from(e: BarrierError) -> Self {
        match e {
            BarrierError::Lagging { ref lagging, .. } => crate::error::AppError::Lagging {
                lagging: lagging.clone(),
                message: e.to_string(),
            },
            BarrierError::Store(e) => e.into(),
        }
    }
}

/// Waits until every proxy registered (with a live lease) has
/// `applied_version >= version`, polling the registrations. Store errors
/// while polling are retried until the timeout (etcd may be electing a
/// leader); the last one is returned if the time runs out on it.
pub async fn wait_applied(
    store: &dyn Store,
    version: u64,
    timeout: Duration,
) -> Result<Passed, BarrierError> {
    let started = Instant::now();
    let deadline = started + timeout;
    // The proxies behind in the last round, by id, and those of them whose
    // registration has gone since.
    let mut behind: BTreeMap<String, ProxyInfo> = BTreeMap::new();
    let mut vanished: Vec<ProxyInfo> = Vec::new();
    loop {
        match store.list_proxies().await {
            Ok(proxies) => {
                for (id, info) in std::mem::take(&mut behind) {
                    // Same id under another lease: it registered again, so it
                    // was fenced in between: count it as gone too.
                    if !proxies.iter().any(|p| p.id == id && p.lease == info.lease) {
                        vanished.push(info);
                    }
                }
                behind = proxies
                    .iter()
                    .filter(|p| p.applied_version < version)
                    .map(|p| (p.id.clone(), p.clone()))
                    .collect();
                if behind.is_empty() {
                    return Ok(Passed {
                        confirmed: proxies.len(),
                        vanished,
                    });
                }
                if Instant::now() >= deadline {
                    return Err(BarrierError::Lagging {
                        version,
                        live: proxies.len(),
                        waited: started.elapsed(),
                        lagging: behind
                            .values()
                            .map(|p| LaggingProxy {
                                id: p.id.clone(),
                                addr: p.addr.clone(),
                                applied_version: p.applied_version,
                            })
                            .collect(),
                    });
                }
            }
            Err(e) => {
                if Instant::now() >= deadline {
                    return Err(e.into());
                }
            }
        }
        sleep(POLL_INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardis_topology::MemStore;

    fn proxy(id: &str, applied: u64) -> ProxyInfo {
        ProxyInfo {
            id: id.into(),
            addr: format!("127.0.0.1:{}", 19000 + id.len()),
            admin_addr: "127.0.0.1:11080".into(),
            start_time: 1,
            applied_version: applied,
            pid: 1,
            lease: 0,
        }
    }

    #[tokio::test]
    async fn passes_when_every_live_proxy_applied() {
        let store = MemStore::new();
        // No proxies at all: nothing to wait for.
        assert_eq!(
            wait_applied(&store, 3, Duration::from_millis(10))
                .await
                .unwrap()
                .confirmed,
            0
        );
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store.put_proxy(lease, &proxy("a", 3)).await.unwrap();
        store.put_proxy(lease, &proxy("b", 4)).await.unwrap();
        let passed = wait_applied(&store, 3, Duration::from_millis(10))
            .await
            .unwrap();
        assert_eq!(passed.confirmed, 2);
        assert!(passed.vanished.is_empty());
    }

    #[tokio::test]
    async fn reports_the_lagging_proxies_on_timeout() {
        let store = MemStore::new();
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store.put_proxy(lease, &proxy("fast", 5)).await.unwrap();
        store.put_proxy(lease, &proxy("slow", 4)).await.unwrap();
        let err = wait_applied(&store, 5, Duration::from_millis(100))
            .await
            .unwrap_err();
        match &err {
            BarrierError::Lagging {
                version,
                live,
                lagging,
                ..
            } => {
                assert_eq!((*version, *live), (5, 2));
                assert_eq!(lagging.len(), 1);
                assert_eq!(lagging[0].id, "slow");
                assert_eq!(lagging[0].applied_version, 4);
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("slow") && text.contains("version 4"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn waits_for_a_proxy_that_catches_up() {
        let store = MemStore::new();
        let lease = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store.put_proxy(lease, &proxy("p", 1)).await.unwrap();
        let later = store.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(100)).await;
            later.put_proxy(lease, &proxy("p", 2)).await.unwrap();
        });
        let passed = wait_applied(&store, 2, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(passed.confirmed, 1);
    }

    #[tokio::test]
    async fn a_lagging_proxy_whose_lease_expires_is_reported_as_vanished() {
        let store = MemStore::new();
        let alive = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        let dying = store.grant_lease(Duration::from_secs(60)).await.unwrap();
        store.put_proxy(alive, &proxy("alive", 7)).await.unwrap();
        store.put_proxy(dying, &proxy("dying", 6)).await.unwrap();
        let expire = store.clone();
        tokio::spawn(async move {
            sleep(Duration::from_millis(100)).await;
            expire.expire_lease(dying);
        });
        let passed = wait_applied(&store, 7, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(passed.confirmed, 1);
        assert_eq!(
            passed
                .vanished
                .iter()
                .map(|p| p.id.as_str())
                .collect::<Vec<_>>(),
            vec!["dying"]
        );
    }

    #[tokio::test]
    async fn an_unavailable_store_fails_after_the_timeout() {
        let store = MemStore::new();
        store.set_available(false);
        let err = wait_applied(&store, 1, Duration::from_millis(60))
            .await
            .unwrap_err();
        assert!(matches!(
            err,
            BarrierError::Store(StoreError::Unavailable(_))
        ));
    }
}
