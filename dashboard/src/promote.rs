//! Promotion: make a replica its group's master.
//!
//! A planned switchover loses nothing:
//!
//! 1. topology: the group's slots `normal` → `held` (proxies stop sending
//!    them anywhere; their requests wait);
//! 2. barrier: every live proxy applied that, so nothing routed by the old
//!    table is still in flight (lagging proxies whose lease expired meanwhile
//!    are fenced: their backend connections on the old master are killed);
//! 3. wait until the replica's replication offset reaches the old master's
//!    `master_repl_offset` (read after the barrier, when no more writes
//!    arrive) — on timeout the slots are released and nothing else changed;
//! 4. `REPLICAOF NO ONE` on the replica;
//! 5. topology, in one change: the replica first (master), slots `normal`;
//! 6. barrier again (the answer lists proxies that have not confirmed yet);
//! 7. the old master `REPLICAOF` the new one (safe even while a proxy lags:
//!    a proxy passed step 2, so it holds the slots until it applies step 5).
//!
//! When the old master cannot be reached it is a failover: step 3 is skipped
//! (there is nothing to wait for) and step 7 too, and the answer warns that
//! writes the dead master had not replicated may be lost.
//!
//! Any failure before step 4 releases the slots again (the topology ends as
//! it began, two versions later). A dashboard that dies half-way leaves the
//! group's slots held: promoting again (the new leader) picks them up,
//! because already-held slots of the group count as held.

use std::fmt::Display;

use shardis_topology::GroupId;
use tokio::time::Instant;

use crate::api::PromoteResponse;
use crate::barrier::{self, BarrierError};
use crate::changes;
use crate::error::AppError;
use crate::state::AppState;

/// The record of one promotion, for the answer and the log.
struct Steps {
    started: Instant,
    lines: Vec<String>,
}

impl Steps {
    fn new() -> Steps {
        Steps {
            started: Instant::now(),
            lines: Vec::new(),
        }
    }

    fn done(&mut self, what: impl Display) {
        let line = format!("{what} (+{} ms)", self.started.elapsed().as_millis());
        tracing::info!("promote: {line}");
        self.lines.push(line);
    }
}

pub async fn promote(
    state: &AppState,
    group: GroupId,
    addr: &str,
    based_on: Option<u64>,
) -> Result<PromoteResponse, AppError> {
    changes::check_addr(addr)?;
    let _claim = state.claim_group(group, &format!("promotion of {addr}"))?;
    let mut steps = Steps::new();
    let mut warnings = Vec::new();

    // 0. Is this a replica of the group, and is its old master alive?
    let (current, ()) = state
        .check_change(based_on, |t| {
            match changes::is_master(t, group, addr) {
                _ if !t.groups.contains_key(&group) => {
                    Err(AppError::NotFound(format!("unknown group {group}")))
                }
                Some(true) => Err(AppError::Conflict(format!(
                    "server {addr} is already the master of group {group}"
                ))),
                Some(false) => Ok(()),
                None => Err(AppError::Conflict(format!(
                    "server {addr} is not a replica of group {group} (its servers: {}); only a \
                 replica of the group can be promoted",
                    t.groups
                        .get(&group)
                        .map(|g| g.servers.join(", "))
                        .unwrap_or_default()
                ))),
            }?;
            changes::hold_group(t, group, true).map(|_| ())
        })
        .await?;
    let old_master = current
        .groups
        .get(&group)
        .and_then(|g| g.master())
        .map(str::to_string)
        .ok_or_else(|| AppError::Internal(format!("group {group} has no master")))?;

    let candidate = state.servers.replication(addr).await?;
    if candidate.is_master() {
        return Err(AppError::Conflict(format!(
            "server {addr} is not replicating (Redis says it is a master, perhaps left so by an \
             interrupted promotion): make it a replica of {old_master} again (remove it from the \
             group and add it again), then promote"
        )));
    }
    let failover = match state.servers.replication(&old_master).await {
        Ok(_) => {
            if candidate.master.as_deref() != Some(old_master.as_str()) {
                return Err(AppError::Conflict(format!(
                    "server {addr} replicates {}, not the group's master {old_master}",
                    candidate.master.as_deref().unwrap_or("nothing")
                )));
            }
            false
        }
        Err(e) => {
            warnings.push(format!(
                "the old master {old_master} is unreachable ({e}): this is a failover; writes \
                 it had not replicated to {addr} may be lost"
            ));
            true
        }
    };
    steps.done(format_args!(
        "checked: {addr} replicates group {group}'s master {old_master}{}",
        if failover {
            " (unreachable: failover)"
        } else {
            ""
        }
    ));

    // 1. Hold the group's slots.
    let (held_topology, held) = state
        .change_topology(None, |t| changes::hold_group(t, group, failover))
        .await?;
    steps.done(format_args!(
        "held {} slots of group {group} (topology version {})",
        held.len(),
        held_topology.version
    ));

    // 2-4, with the slots released again if any of them fails.
    let prepared = async {
        let passed = barrier::wait_applied(
            state.store.as_ref(),
            held_topology.version,
            state.config.barrier_timeout(),
        )
        .await
        .map_err(|e| AppError::from(e).context("the proxies did not all hold the slots"))?;
        steps.done(format_args!(
            "{} proxies hold the slots (version {})",
            passed.confirmed, held_topology.version
        ));
        if !failover {
            for gone in &passed.vanished {
                let name = gone.backend_client_name();
                match state.servers.kill_clients_named(&old_master, &name).await {
                    Ok(n) => steps.done(format_args!(
                        "proxy {} vanished while behind: killed its {n} connections on {old_master}",
                        gone.id
                    )),
                    Err(e) => warnings.push(format!(
                        "could not kill the connections of vanished proxy {} on {old_master}: {e}",
                        gone.id
                    )),
                }
            }
            // 3. Catch up: no write reaches the old master any more.
            let target = state.servers.replication(&old_master).await?.master_repl_offset;
            let reached = state
                .servers
                .wait_offset(addr, target, state.config.catchup_timeout())
                .await?;
            steps.done(format_args!(
                "{addr} caught up with {old_master} (offset {reached} >= {target})"
            ));
        }
        // 4. The replica stops following and keeps its data.
        state.servers.make_master(addr).await?;
        steps.done(format_args!("{addr}: REPLICAOF NO ONE"));
        Ok::<(), AppError>(())
    }
    .await;
    if let Err(e) = prepared {
        return Err(release_after(state, group, &held, e).await);
    }

    // 5. Switch the master and release the slots in one change.
    let switched = state
        .change_topology(None, |t| changes::switch_master(t, group, addr, &held))
        .await;
    let (switched, ()) = match switched {
        Ok(s) => s,
        Err(e) => {
            // The replica is detached but the proxies still (would) use the
            // old master: make it follow again and serve the slots from the
            // old master, as before.
            let reattach = if failover {
                Ok(())
            } else {
                state.servers.make_replica(addr, &old_master).await
            };
            let mut e = release_after(state, group, &held, e).await;
            if let Err(r) = reattach {
                e = e.context(format_args!(
                    "{addr} was detached and could not follow {old_master} again ({r})"
                ));
            }
            return Err(e.context("promotion aborted: the topology could not be switched"));
        }
    };
    steps.done(format_args!(
        "topology version {}: {addr} is the master of group {group}, slots released",
        switched.version
    ));

    // 6. Every proxy sends the group's requests to the new master.
    let lagging = match barrier::wait_applied(
        state.store.as_ref(),
        switched.version,
        state.config.barrier_timeout(),
    )
    .await
    {
        Ok(passed) => {
            steps.done(format_args!(
                "{} proxies switched (version {})",
                passed.confirmed, switched.version
            ));
            Vec::new()
        }
        Err(BarrierError::Lagging { lagging, .. }) => {
            warnings.push(format!(
                "{} proxies had not applied version {} when this answer was sent; they hold \
                 group {group}'s requests until they do",
                lagging.len(),
                switched.version
            ));
            lagging
        }
        Err(BarrierError::Store(e)) => {
            warnings.push(format!(
                "could not check that the proxies applied version {}: {e}",
                switched.version
            ));
            Vec::new()
        }
    };

    // 7. The old master follows the new one.
    if failover {
        warnings.push(format!(
            "{old_master} stays listed as a replica of group {group}; when it is back, remove it \
             and add it again so that it replicates {addr} (its old data is discarded)"
        ));
    } else {
        match state.servers.make_replica(&old_master, addr).await {
            Ok(()) => steps.done(format_args!("{old_master}: REPLICAOF {addr}")),
            Err(e) => warnings.push(format!(
                "{old_master} could not be made a replica of {addr} ({e}); it is listed as a \
                 replica: remove it and add it again"
            )),
        }
    }

    Ok(PromoteResponse {
        group,
        master: addr.to_string(),
        old_master,
        version: switched.version,
        failover,
        steps: steps.lines,
        warnings,
        lagging,
    })
}

/// Releases the slots held by step 1 after `error`; the error to answer with.
async fn release_after(
    state: &AppState,
    group: GroupId,
    held: &[usize],
    error: AppError,
) -> AppError {
    // The failure may be a lost leadership: then the new leader must release.
    let release = state
        .change_topology(None, |t| {
            changes::release_slots(t, group, held);
            Ok(())
        })
        .await;
    match release {
        Ok((t, ())) => {
            tracing::warn!(
                version = t.version,
                "promotion of group {group} aborted: {error}"
            );
            error.context(format_args!(
                "promotion aborted (slots released again, topology version {})",
                t.version
            ))
        }
        Err(r) => error.context(format_args!(
            "promotion aborted, and releasing group {group}'s slots failed too ({r}); they stay \
             held until a promotion of the group succeeds"
        )),
    }
}
