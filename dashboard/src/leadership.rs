//! One active dashboard per cluster.
//!
//! Each dashboard keeps an etcd lease alive and campaigns for the leader
//! entry (`/shardis/<cluster>/dashboard/leader`) with a create-if-absent
//! transaction under that lease; the one that created it leads, the others
//! are standbys that serve read-only calls and keep trying. When the leader
//! dies its lease runs out, etcd deletes the entry (it checks for expired
//! leases periodically, so allow TTL + about 2 s) and the next standby's
//! attempt, at most [`CAMPAIGN_INTERVAL`] later, wins.
//!
//! A leader steps down at once when etcd says its lease is gone, when its
//! entry is held by another lease, or when no keep-alive was acknowledged
//! for `TTL - margin` after it was *sent* (the same timing argument as the
//! proxies' self-fencing: etcd restarts the TTL when it receives a keep-alive,
//! which is after it was sent, so the lease cannot expire before `sent + TTL`;
//! stepping down at `sent + TTL - margin` means this dashboard has stopped
//! writing before another can have taken over). Every topology write is
//! moreover guarded in etcd by the leader entry's lease
//! ([`Store::save_topology_as_leader`]), so a deposed leader that has not
//! noticed yet cannot write either.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use shardis_topology::{LeaseId, Store, StoreError};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};
use tracing::{error, info, warn};

use crate::api::{DashboardStatus, LeaderInfo, Role};
use crate::error::AppError;

/// How often a standby tries to take over (and a leader confirms it still holds the entry).
pub const CAMPAIGN_INTERVAL: Duration = Duration::from_millis(250);

/// What this dashboard is right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoleState {
    /// Holds the leader entry under `lease`.
    Leader { lease: LeaseId, since: u64 },
    /// Read-only; `leader` is the dashboard that leads, if one does.
    Standby { leader: Option<LeaderInfo> },
}

/// This dashboard's identity and role.
#[derive(Debug)]
pub struct Leadership {
    /// Who we are (`since` unused here).
    me: LeaderInfo,
    role: watch::Sender<RoleState>,
    /// Until when the lease is proven alive (monotonic): checked by work that
    /// acts on Redis servers for the leader (the mover) before each step, so
    /// that a dashboard frozen past its lease never acts after it resumes.
    proven_until: parking_lot::Mutex<Instant>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Leadership {
    /// A dashboard that starts as a standby until it wins the campaign.
    pub fn new(id: String, addr: String) -> Leadership {
        Leadership {
            me: LeaderInfo { id, addr, since: 0 },
            role: watch::channel(RoleState::Standby { leader: None }).0,
            proven_until: parking_lot::Mutex::new(Instant::now()),
        }
    }

    pub fn id(&self) -> &str {
        &self.me.id
    }

    pub fn role(&self) -> RoleState {
        self.role.borrow().clone()
    }

    pub fn subscribe(&self) -> watch::Receiver<RoleState> {
        self.role.subscribe()
    }

    pub fn is_leader(&self) -> bool {
        matches!(*self.role.borrow(), RoleState::Leader { .. })
    }

    /// Leads, and the lease is proven alive right now (by the clock, not
    /// only by the last campaign round).
    pub fn leading_now(&self) -> bool {
        self.is_leader() && Instant::now() < *self.proven_until.lock()
    }

    pub fn status(&self) -> DashboardStatus {
        let (role, leader) = match self.role() {
            RoleState::Leader { since, .. } => (
                Role::Leader,
                Some(LeaderInfo {
                    since,
                    ..self.me.clone()
                }),
            ),
            RoleState::Standby { leader } => (Role::Standby, leader),
        };
        DashboardStatus {
            id: self.me.id.clone(),
            addr: self.me.addr.clone(),
            role,
            leader,
        }
    }

    /// The leader lease to guard a write with, or the 503 a standby answers.
    pub fn require_leader(&self) -> Result<LeaseId, AppError> {
        match self.role() {
            RoleState::Leader { lease, .. } => Ok(lease),
            RoleState::Standby { leader } => Err(AppError::Standby {
                message: match &leader {
                    Some(l) => format!(
                        "this dashboard ({}) is a standby: send changes to the leader {} at {}",
                        self.me.id, l.id, l.addr
                    ),
                    None => format!(
                        "this dashboard ({}) is a standby and no dashboard leads right now \
                         (one takes over within the lease TTL); try again shortly",
                        self.me.id
                    ),
                },
                leader,
            }),
        }
    }

    /// Waits until this dashboard leads (for tests and tools).
    pub async fn wait_leader(&self, within: Duration) -> bool {
        let mut rx = self.subscribe();
        timeout(
            within,
            rx.wait_for(|r| matches!(r, RoleState::Leader { .. })),
        )
        .await
        .is_ok_and(|r| r.is_ok())
    }

    fn become_leader(&self, lease: LeaseId, since: u64) {
        if !self.is_leader() {
            info!(id = %self.me.id, lease = format_args!("{lease:x}"), "this dashboard is the leader now");
        }
        self.role.send_if_modified(|r| {
            if matches!(r, RoleState::Leader { lease: l, .. } if *l == lease) {
                return false;
            }
            *r = RoleState::Leader { lease, since };
            true
        });
    }

    fn become_standby(&self, leader: Option<LeaderInfo>, why: &str) {
        if self.is_leader() {
            error!(id = %self.me.id, "stepping down as leader: {why}");
        }
        self.role.send_if_modified(|r| {
            let next = RoleState::Standby {
                leader: leader.clone(),
            };
            if *r == next {
                return false;
            }
            *r = next;
            true
        });
    }

    /// Campaigns, leads and steps down, until `shutdown` turns true; then
    /// resigns (revokes the lease, which deletes the entry at once, so a
    /// standby takes over without waiting for the TTL).
    pub async fn campaign(
        self: Arc<Self>,
        store: Arc<dyn Store>,
        ttl: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let margin = (ttl / 5).max(Duration::from_millis(500));
        let renew_every = ttl / 3;
        let poll = CAMPAIGN_INTERVAL.min(ttl / 4);
        let mut lease: Option<LeaseId> = None;
        // Past this instant the lease may have expired on etcd's side.
        let mut proven_until = Instant::now();
        let mut next_renew = Instant::now();

        'campaign: loop {
            if stopping(&shutdown) {
                break;
            }
            let current = match lease {
                Some(l) => l,
                None => {
                    let sent = Instant::now();
                    match store.grant_lease(ttl).await {
                        Ok(l) => {
                            lease = Some(l);
                            proven_until = sent + ttl.saturating_sub(margin);
                            *self.proven_until.lock() = proven_until;
                            next_renew = sent + renew_every;
                            l
                        }
                        Err(e) => {
                            warn!("cannot get an etcd lease for the leadership: {e}");
                            self.become_standby(None, "etcd is unreachable");
                            pause(&mut shutdown, poll).await;
                            continue 'campaign;
                        }
                    }
                }
            };

            if Instant::now() >= next_renew {
                let sent = Instant::now();
                match timeout(renew_every, store.keep_alive(current)).await {
                    Ok(Ok(granted)) => {
                        proven_until = sent + granted.saturating_sub(margin);
                        *self.proven_until.lock() = proven_until;
                        next_renew = sent + renew_every;
                    }
                    Ok(Err(StoreError::LeaseExpired(_))) => {
                        self.become_standby(None, "its etcd lease has expired");
                        lease = None;
                        continue 'campaign;
                    }
                    Ok(Err(e)) => {
                        warn!("leadership keep-alive failed: {e}");
                        next_renew = Instant::now() + poll;
                    }
                    Err(_) => {
                        warn!("leadership keep-alive got no answer within {renew_every:?}");
                        next_renew = Instant::now() + poll;
                    }
                }
            }

            if Instant::now() >= proven_until {
                // Cannot prove the lease is alive: stop acting as the leader
                // before another dashboard may have taken over.
                self.become_standby(
                    None,
                    "no etcd keep-alive acknowledged in time (the lease may be expiring)",
                );
                pause(&mut shutdown, poll).await;
                continue 'campaign;
            }

            let since = unix_now();
            let value = serde_json::to_string(&LeaderInfo {
                since,
                ..self.me.clone()
            })
            .unwrap_or_default();
            // Bounded, so that a hanging etcd cannot keep this loop from
            // stepping down at `proven_until`.
            let campaigned = timeout(renew_every, store.acquire_leadership(current, &value))
                .await
                .unwrap_or_else(|_| {
                    Err(StoreError::Unavailable(format!(
                        "no answer to the campaign within {renew_every:?}"
                    )))
                });
            match campaigned {
                Ok(true) => {
                    let since = match self.role() {
                        RoleState::Leader { since, .. } => since,
                        RoleState::Standby { .. } => since,
                    };
                    self.become_leader(current, since);
                }
                Ok(false) => {
                    let leader = match store.leader().await {
                        Ok(Some(entry)) => Some(parse_leader(&entry.value)),
                        Ok(None) | Err(_) => None,
                    };
                    self.become_standby(leader, "the leader entry is held by another lease");
                }
                Err(StoreError::LeaseExpired(_)) => {
                    self.become_standby(None, "its etcd lease has expired");
                    lease = None;
                    continue 'campaign;
                }
                // A leader stays one until `proven_until`: one failed read is
                // no reason to stop, and writes are guarded in etcd anyway.
                Err(e) => warn!("leadership campaign: {e}"),
            }
            pause(&mut shutdown, poll).await;
        }

        self.become_standby(None, "shutting down");
        if let Some(lease) = lease {
            if let Err(e) = store.revoke_lease(lease).await {
                warn!("revoking the leadership lease failed (it expires by itself): {e}");
            }
        }
    }
}

/// The leader entry's value; a value this version cannot read still names
/// the leader somehow.
fn parse_leader(value: &str) -> LeaderInfo {
    serde_json::from_str(value).unwrap_or_else(|_| LeaderInfo {
        id: value.to_string(),
        addr: String::new(),
        since: 0,
    })
}

/// Sleeps unless shutdown is asked for meanwhile. A dropped sender counts
/// as shutdown: whoever could stop the campaign is gone.
async fn pause(shutdown: &mut watch::Receiver<bool>, how_long: Duration) {
    tokio::select! {
        _ = sleep(how_long) => {}
        _ = shutdown.changed() => {}
    }
}

fn stopping(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardis_topology::MemStore;

    fn start(store: &MemStore, id: &str, ttl: Duration) -> (Arc<Leadership>, watch::Sender<bool>) {
        let l = Arc::new(Leadership::new(
            id.into(),
            format!("127.0.0.1:{}", id.len()),
        ));
        let (tx, rx) = watch::channel(false);
        tokio::spawn(l.clone().campaign(Arc::new(store.clone()), ttl, rx));
        (l, tx)
    }

    #[tokio::test]
    async fn one_leader_and_a_standby_that_names_it() {
        let store = MemStore::new();
        let ttl = Duration::from_secs(2);
        let (a, _stop_a) = start(&store, "dash-a", ttl);
        assert!(a.wait_leader(Duration::from_secs(2)).await);
        let (b, _stop_b) = start(&store, "dash-b", ttl);
        sleep(CAMPAIGN_INTERVAL * 3).await;
        assert!(!b.is_leader());
        let err = b.require_leader().unwrap_err();
        assert!(err.to_string().contains("dash-a"), "{err}");
        match err {
            AppError::Standby { leader, .. } => assert_eq!(leader.unwrap().id, "dash-a"),
            other => panic!("{other:?}"),
        }
        assert_eq!(b.status().role, Role::Standby);
        assert_eq!(a.status().role, Role::Leader);
        assert!(a.require_leader().is_ok());
    }

    #[tokio::test]
    async fn a_standby_takes_over_when_the_leader_dies() {
        let store = MemStore::new();
        let ttl = Duration::from_secs(2);
        let a = Arc::new(Leadership::new("dash-a".into(), "127.0.0.1:1".into()));
        let (_stop_a, rx) = watch::channel(false);
        let task = tokio::spawn(a.clone().campaign(Arc::new(store.clone()), ttl, rx));
        assert!(a.wait_leader(Duration::from_secs(2)).await);
        let (b, _stop_b) = start(&store, "dash-b", ttl);
        sleep(CAMPAIGN_INTERVAL * 2).await;
        // a dies: no resignation, no more keep-alives; its lease runs out.
        task.abort();
        let died = Instant::now();
        assert!(b.wait_leader(ttl + Duration::from_secs(1)).await);
        assert!(
            died.elapsed() <= ttl + CAMPAIGN_INTERVAL * 2,
            "{:?}",
            died.elapsed()
        );
    }

    #[tokio::test]
    async fn a_leader_whose_lease_expired_steps_down() {
        let store = MemStore::new();
        let ttl = Duration::from_secs(2);
        let (a, _stop_a) = start(&store, "dash-a", ttl);
        assert!(a.wait_leader(Duration::from_secs(2)).await);
        let mut rx = a.subscribe();
        let RoleState::Leader { lease, .. } = a.role() else {
            panic!("a leads")
        };
        // Another dashboard grabs the entry the moment a's lease is gone.
        let other = store.grant_lease(Duration::from_secs(30)).await.unwrap();
        store.expire_lease(lease);
        assert!(store
            .acquire_leadership(other, "someone else")
            .await
            .unwrap());
        timeout(ttl, rx.wait_for(|r| matches!(r, RoleState::Standby { .. })))
            .await
            .expect("the old leader steps down")
            .unwrap();
        sleep(CAMPAIGN_INTERVAL * 2).await;
        assert!(!a.is_leader());
    }

    #[tokio::test]
    async fn a_leader_cut_off_from_etcd_steps_down_before_its_lease_can_expire() {
        let store = MemStore::new();
        let ttl = Duration::from_secs(2);
        let (a, _stop) = start(&store, "dash-a", ttl);
        assert!(a.wait_leader(Duration::from_secs(2)).await);
        let cut = Instant::now();
        store.set_available(false);
        let mut rx = a.subscribe();
        timeout(ttl, rx.wait_for(|r| matches!(r, RoleState::Standby { .. })))
            .await
            .expect("steps down within the TTL")
            .unwrap();
        assert!(
            cut.elapsed() < ttl,
            "stepped down after {:?}",
            cut.elapsed()
        );
        // etcd answers again: the lease is still alive, and it leads again.
        store.set_available(true);
        assert!(a.wait_leader(Duration::from_secs(3)).await);
    }

    #[tokio::test]
    async fn shutdown_resigns_at_once() {
        let store = MemStore::new();
        let ttl = Duration::from_secs(30);
        let (a, stop_a) = start(&store, "dash-a", ttl);
        assert!(a.wait_leader(Duration::from_secs(2)).await);
        let (b, _stop_b) = start(&store, "dash-b", ttl);
        stop_a.send_replace(true);
        // Far sooner than the 30 s TTL.
        assert!(b.wait_leader(Duration::from_secs(2)).await);
    }
}
