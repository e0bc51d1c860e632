//! Online slot migration: the API's operations and the runner that drives
//! migrations wave by wave. The protocol and why it loses no write are in
//! `docs/migration.md`; in short, for each wave of slots of one source group:
//!
//! 1. **hold**: topology `normal(source)` → `held(source)`; wait until every
//!    live proxy applied that version (each confirms only once the slots'
//!    in-flight requests drained). A lagging proxy keeps the wave waiting
//!    and is named in the migration's `reason`;
//! 2. **fence**: on the source's master, kill the connections of every proxy
//!    that is not live any more (named `shardis-proxy-<id>`): whatever such a
//!    proxy still had in a socket can no longer run;
//! 3. **migrating**: topology `held` → `migrating(source, target)`; proxies
//!    move the keys a request touches before running it on the target, and
//!    the mover (`mover.rs`) moves every key of the wave;
//! 4. **complete**: topology → `normal(target)`, then wait until every live
//!    proxy applied that.
//!
//! Every step is a topology change saved in etcd before anything acts on it,
//! and the state of each slot *is* its state in the topology: a dashboard
//! that takes over (or restarts) reads where every slot stands and resumes
//! from that step. One migration runs at a time, in id order.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use shardis_topology::{
    format_ranges, parse_ranges, GroupId, Migration, MigrationId, MigrationState, SlotState,
    Topology, SLOT_COUNT,
};
use tokio::sync::{watch, Notify};
use tokio::time::{sleep, Instant};

use crate::api::{CreateMigration, MigrationView, RebalanceResponse, SetRate, SlotRun};
use crate::barrier::{self, BarrierError};
use crate::error::AppError;
use crate::mover::{self, Control, Outcome, Progress};
use crate::rebalance;
use crate::servers::info_fields;
use crate::state::AppState;

/// Slots per wave unless the operator says otherwise.
pub const DEFAULT_WAVE_SIZE: usize = 128;
/// How long one barrier round waits before the reason is refreshed.
const BARRIER_ROUND: Duration = Duration::from_secs(1);
/// A wave whose move fails this many times in a row, while both masters
/// answer, is moved back and the migration fails.
const MAX_WAVE_FAILURES: u32 = 3;
/// Pause before retrying a failed step.
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// How often a running migration's counters are saved.
const SAVE_EVERY: Duration = Duration::from_secs(1);
/// After killing a lost proxy's connections, wait this long and kill again
/// (a connection being opened at that moment is caught the second time).
const FENCE_MARGIN: Duration = Duration::from_millis(500);

/// The migrations' shared state on one dashboard.
#[derive(Default)]
pub struct Migrations {
    /// The migration this dashboard is running right now, if any.
    live: Mutex<HashMap<MigrationId, Arc<Live>>>,
    /// Wakes the runner (a new migration, a resume).
    wake: Notify,
    /// Serialises read-modify-write rounds of migration records.
    records: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Migrations {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migrations").finish_non_exhaustive()
    }
}

/// A migration being run by this dashboard: what the API can steer and read.
pub struct Live {
    pub control: Arc<Control>,
    pub progress: Arc<Progress>,
    base_keys: u64,
    base_bytes: u64,
    base_active_ms: u64,
    started: Instant,
    /// Big keys of the next wave, found by the scan of the wave before it.
    big_keys: Mutex<Option<Lookahead>>,
}

/// What a wave's scan found for the next wave: its source group, its
/// slots, their big keys.
type Lookahead = (GroupId, Vec<usize>, Vec<Vec<u8>>);

impl Live {
    fn keys(&self) -> u64 {
        self.base_keys + self.progress.keys.load(Ordering::Relaxed)
    }
    fn bytes(&self) -> u64 {
        self.base_bytes + self.progress.bytes.load(Ordering::Relaxed)
    }
    fn active_ms(&self) -> u64 {
        self.base_active_ms + self.started.elapsed().as_millis() as u64
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

// ---------------------------------------------------------------------------
// Records
// ---------------------------------------------------------------------------

async fn load_all(state: &AppState) -> Result<Vec<Migration>, AppError> {
    Ok(state.store.list_migrations().await?)
}

async fn load_one(state: &AppState, id: MigrationId) -> Result<Migration, AppError> {
    load_all(state)
        .await?
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| AppError::NotFound(format!("unknown migration {id}")))
}

/// Read-modify-write of one record, saved only while this dashboard leads.
async fn update(
    state: &AppState,
    id: MigrationId,
    change: impl FnOnce(&mut Migration) -> Result<(), AppError>,
) -> Result<Migration, AppError> {
    let lease = state.leadership.require_leader()?;
    let _serial = state.migrations.records.lock().await;
    let mut m = load_one(state, id).await?;
    change(&mut m)?;
    state.store.save_migration_as_leader(lease, &m).await?;
    Ok(m)
}

fn transition(m: &mut Migration, next: MigrationState) -> Result<(), AppError> {
    if m.state == next {
        return Ok(());
    }
    if !m.state.can_become(next) {
        return Err(AppError::Conflict(format!(
            "migration {} is {}: it cannot become {next}",
            m.id, m.state
        )));
    }
    m.state = next;
    if next.is_terminal() {
        m.ended_at = Some(unix_now());
        m.reason = None;
    }
    Ok(())
}

/// Sets the `reason` shown while the migration waits (saved only when it
/// changed; failures to save are only logged: it is informational).
async fn set_reason(state: &AppState, id: MigrationId, reason: Option<String>) {
    if let Err(e) = update(state, id, |m| {
        m.reason = reason;
        Ok(())
    })
    .await
    {
        tracing::debug!("migration {id}: saving the reason failed: {e}");
    }
}

// ---------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------

/// Slots of `m` that are `normal` on its target now.
fn done_in(m: &Migration, t: &Topology) -> usize {
    m.slots
        .iter()
        .filter(|&&s| t.slot(s) == (SlotState::Normal { group: m.to_group }))
        .count()
}

pub fn view(m: &Migration, t: &Topology, live: Option<&Live>) -> MigrationView {
    let mut runs: Vec<SlotRun> = Vec::new();
    let mut run_slots: Vec<usize> = Vec::new();
    let mut run_key: Option<(&'static str, GroupId, Option<GroupId>)> = None;
    let flush = |runs: &mut Vec<SlotRun>,
                 slots: &mut Vec<usize>,
                 key: Option<(&'static str, GroupId, Option<GroupId>)>| {
        if let Some((state, group, target)) = key {
            runs.push(SlotRun {
                slots: format_ranges(slots.drain(..)),
                state: state.to_string(),
                group,
                target,
            });
        }
    };
    for &s in &m.slots {
        let key = match t.slot(s) {
            SlotState::Migrating { from, to, .. } => Some(("migrating", from, Some(to))),
            SlotState::Held { group } => Some(("held", group, None)),
            SlotState::Normal { group } => Some(("normal", group, None)),
            SlotState::Unassigned => Some(("unassigned", 0, None)),
        };
        let contiguous = run_slots.last().is_some_and(|&l| l + 1 == s);
        if key != run_key || !contiguous {
            flush(&mut runs, &mut run_slots, run_key);
            run_key = key;
        }
        run_slots.push(s);
    }
    flush(&mut runs, &mut run_slots, run_key);

    let (keys, bytes, active_ms) = match live {
        Some(l) => (l.keys(), l.bytes(), l.active_ms()),
        None => (m.keys_moved, m.bytes_moved, m.active_ms),
    };
    let elapsed = active_ms as f64 / 1000.0;
    MigrationView {
        id: m.id,
        state: m.state.name().to_string(),
        slots: m.slot_text(),
        to_group: m.to_group,
        slots_total: m.slots.len(),
        // An ended migration counts what it did, not where later ones put
        // its slots.
        slots_done: match m.slots_done {
            Some(n) if m.state.is_terminal() => n,
            _ => done_in(m, t),
        },
        slot_states: runs,
        keys_moved: keys,
        bytes_moved: bytes,
        keys_per_sec: if elapsed > 0.0 {
            keys as f64 / elapsed
        } else {
            0.0
        },
        elapsed_secs: elapsed,
        wave_size: m.wave_size,
        keys_per_sec_limit: m.keys_per_sec,
        bytes_per_sec_limit: m.bytes_per_sec,
        safe: m.safe,
        stop_requested: m.stop_requested,
        reason: m.reason.clone(),
        error: m.error.clone(),
        checks: m.checks.clone(),
        created_at: m.created_at,
        ended_at: m.ended_at,
    }
}

fn live_of(state: &AppState, id: MigrationId) -> Option<Arc<Live>> {
    state.migrations.live.lock().get(&id).cloned()
}

pub async fn list(state: &AppState) -> Result<Vec<MigrationView>, AppError> {
    let t = state.load().await?;
    let mut all = load_all(state).await?;
    all.sort_by_key(|m| std::cmp::Reverse(m.id));
    Ok(all
        .iter()
        .map(|m| view(m, &t, live_of(state, m.id).as_deref()))
        .collect())
}

pub async fn get(state: &AppState, id: MigrationId) -> Result<MigrationView, AppError> {
    let t = state.load().await?;
    let m = load_one(state, id).await?;
    Ok(view(&m, &t, live_of(state, id).as_deref()))
}

async fn get_after(state: &AppState, m: &Migration) -> Result<MigrationView, AppError> {
    let t = state.load().await?;
    Ok(view(m, &t, live_of(state, m.id).as_deref()))
}

// ---------------------------------------------------------------------------
// Creating: checks before anything moves
// ---------------------------------------------------------------------------

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// The server the topology names as `whose` master answers and really is a
/// master: a replica there would refuse every moved key (`READONLY`).
async fn ensure_master(state: &AppState, addr: &str, whose: &str) -> Result<(), AppError> {
    let r = state
        .servers
        .replication(addr)
        .await
        .map_err(|e| e.context(format_args!("{whose}'s master")))?;
    if r.is_master() {
        return Ok(());
    }
    Err(AppError::Conflict(format!(
        "{whose}'s master {addr} is a {} (of {}) on the server itself: it cannot take writes; \
         promote it or fix the group's servers before moving slots",
        if r.role == "slave" {
            "replica"
        } else {
            r.role.as_str()
        },
        r.master.as_deref().unwrap_or("an unknown master")
    )))
}

/// `addr` answers, is a master, and is not loading its dataset: a server a
/// wave may move keys to or from, and roll back against. A master that was
/// restarted is empty, or partly loaded, until its load is over; a server
/// left a replica (or made one) refuses writes.
async fn ready_master(state: &AppState, addr: &str, whose: &str) -> Result<(), AppError> {
    ensure_master(state, addr, whose).await?;
    let info = state
        .servers
        .info(addr, "persistence")
        .await
        .map_err(|e| e.context(format_args!("{whose}'s master")))?;
    if info_fields(&info).get("loading").map(String::as_str) == Some("1") {
        return Err(AppError::Conflict(format!(
            "{whose}'s master {addr} is loading its dataset"
        )));
    }
    Ok(())
}

/// Why a wave's two masters are not both ready (see [`ready_master`]).
async fn masters_not_ready(
    state: &AppState,
    (source, source_master): (GroupId, &str),
    (to, target_master): (GroupId, &str),
) -> Option<AppError> {
    let source_ready = ready_master(state, source_master, &format!("group {source}")).await;
    let target_ready = ready_master(state, target_master, &format!("group {to}")).await;
    source_ready.and(target_ready).err()
}

/// Validates a request against the topology and the servers, without saving.
/// The slots that will move, and what the checks found worth reporting.
async fn preflight(
    state: &AppState,
    req: &CreateMigration,
    others: &[Migration],
) -> Result<(Vec<usize>, Vec<String>), AppError> {
    let slots = parse_ranges(&req.slots).map_err(AppError::BadRequest)?;
    if slots.is_empty() {
        return Err(AppError::BadRequest("no slots given".into()));
    }
    let to = req.to_group;
    let t = state.load().await?;
    let target = t
        .groups
        .get(&to)
        .ok_or_else(|| AppError::NotFound(format!("unknown group {to}")))?;
    let target_master = target.master().map(str::to_string).ok_or_else(|| {
        AppError::Conflict(format!(
            "group {to} has no servers: add a master before moving slots to it"
        ))
    })?;

    let mut moving = Vec::new();
    let mut unassigned = Vec::new();
    let mut busy = Vec::new();
    let mut sources: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
    for &s in &slots {
        match t.slot(s) {
            SlotState::Normal { group } if group == to => {}
            SlotState::Normal { group } => {
                moving.push(s);
                sources.entry(group).or_default().push(s);
            }
            SlotState::Unassigned => unassigned.push(s),
            SlotState::Held { .. } | SlotState::Migrating { .. } => busy.push(s),
        }
    }
    if !unassigned.is_empty() {
        return Err(AppError::Conflict(format!(
            "slots {} are unassigned, so no group has their keys: assign them with POST \
             /api/v1/slots/assign instead",
            format_ranges(unassigned)
        )));
    }
    if !busy.is_empty() {
        return Err(AppError::Conflict(format!(
            "slots {} are held or migrating already (a migration or promotion is under way)",
            format_ranges(busy)
        )));
    }
    if moving.is_empty() {
        return Err(AppError::Conflict(format!(
            "nothing to move: slots {} are all at group {to} already",
            req.slots
        )));
    }
    refuse_overlap(&moving, others)?;

    let mut checks = Vec::new();
    // Both ends have a reachable master; estimate the bytes that move.
    let mut estimate: u64 = 0;
    for (group, group_slots) in &sources {
        let master = t
            .groups
            .get(group)
            .and_then(|g| g.master())
            .ok_or_else(|| {
                AppError::Conflict(format!(
                    "source group {group} has no master: its slots cannot be moved"
                ))
            })?;
        ensure_master(state, master, &format!("source group {group}")).await?;
        let info = state
            .servers
            .info(master, "memory")
            .await
            .map_err(|e| e.context(format_args!("source group {group}'s master")))?;
        let fields = info_fields(&info);
        let used: u64 = fields
            .get("used_memory_dataset")
            .or_else(|| fields.get("used_memory"))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let owned = t.slots.iter().filter(|s| s.owner() == Some(*group)).count();
        estimate += used * group_slots.len() as u64 / owned.max(1) as u64;
    }
    ensure_master(state, &target_master, &format!("target group {to}")).await?;
    let info = state
        .servers
        .info(&target_master, "memory")
        .await
        .map_err(|e| e.context(format_args!("target group {to}'s master")))?;
    let fields = info_fields(&info);
    let maxmemory: u64 = fields
        .get("maxmemory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let used: u64 = fields
        .get("used_memory")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let policy = fields
        .get("maxmemory_policy")
        .cloned()
        .unwrap_or_else(|| "unknown".into());
    if maxmemory > 0 {
        let room = maxmemory.saturating_sub(used);
        if estimate > room / 10 * 9 {
            return Err(AppError::Conflict(format!(
                "target group {to}'s master {target_master} has no room: maxmemory {}, used {}, \
                 about {} would move (policy {policy}); raise maxmemory or move fewer slots",
                mib(maxmemory),
                mib(used),
                mib(estimate)
            )));
        }
        checks.push(format!(
            "target {target_master}: maxmemory {}, used {}, about {} to move, policy {policy}",
            mib(maxmemory),
            mib(used),
            mib(estimate)
        ));
        if policy != "noeviction" {
            checks.push(format!(
                "warning: target {target_master} evicts keys ({policy}) when full: moved keys \
                 could be dropped silently if it fills up"
            ));
        }
    } else {
        checks.push(format!(
            "target {target_master}: no maxmemory limit, used {}, about {} to move (policy \
             {policy})",
            mib(used),
            mib(estimate)
        ));
    }
    // The target must hold no key of the moving slots (what BUSYKEY
    // handling relies on).
    let mut set = vec![false; SLOT_COUNT];
    for &s in &moving {
        if let Some(c) = set.get_mut(s) {
            *c = true;
        }
    }
    let (count, sample) = mover::keys_in_slots(&state.servers, &target_master, &set, 10)
        .await
        .map_err(|e| e.context("scanning the target for keys of the moving slots"))?;
    if count > 0 {
        let listed: Vec<String> = sample
            .iter()
            .map(|(k, s)| format!("{k:?} (slot {s})"))
            .collect();
        return Err(AppError::Conflict(format!(
            "target group {to}'s master {target_master} already holds {count} keys of the \
             moving slots, e.g. {}: left over from an aborted move, or the server was added \
             with data. Nothing was moved; delete or move those keys, then start again",
            listed.join(", ")
        )));
    }
    Ok((moving, checks))
}

/// Refuses slots that a migration not ended yet is moving already.
fn refuse_overlap(moving: &[usize], others: &[Migration]) -> Result<(), AppError> {
    let wanted: BTreeSet<usize> = moving.iter().copied().collect();
    for other in others.iter().filter(|m| !m.state.is_terminal()) {
        let overlap: Vec<usize> = other
            .slots
            .iter()
            .copied()
            .filter(|s| wanted.contains(s))
            .collect();
        if !overlap.is_empty() {
            return Err(AppError::Conflict(format!(
                "slots {} are part of migration {} ({}); stop it or wait until it ends",
                format_ranges(overlap),
                other.id,
                other.state
            )));
        }
    }
    Ok(())
}

pub async fn create(state: &AppState, req: CreateMigration) -> Result<MigrationView, AppError> {
    state.leadership.require_leader()?;
    let wave_size = req.wave_size.unwrap_or(DEFAULT_WAVE_SIZE);
    if wave_size == 0 || wave_size > SLOT_COUNT {
        return Err(AppError::BadRequest(format!(
            "wave_size must be 1 to {SLOT_COUNT}, not {wave_size}"
        )));
    }
    let others = load_all(state).await?;
    let (moving, checks) = preflight(state, &req, &others).await?;
    let lease = state.leadership.require_leader()?;
    let m = {
        let _serial = state.migrations.records.lock().await;
        // Again under the lock: two requests for the same slots may have
        // passed the checks above at the same time.
        let now = load_all(state).await?;
        refuse_overlap(&moving, &now)?;
        let id = now.iter().map(|m| m.id).max().unwrap_or(0) + 1;
        let m = Migration {
            id,
            state: MigrationState::Pending,
            slots: moving,
            to_group: req.to_group,
            wave_size,
            keys_per_sec: req.keys_per_sec.unwrap_or(0),
            bytes_per_sec: req.bytes_per_sec.unwrap_or(0),
            safe: req.safe.unwrap_or(false),
            stop_requested: false,
            keys_moved: 0,
            bytes_moved: 0,
            active_ms: 0,
            created_at: unix_now(),
            ended_at: None,
            reason: Some("waiting to start".into()),
            error: None,
            checks,
            slots_done: None,
        };
        state.store.save_migration_as_leader(lease, &m).await?;
        m
    };
    tracing::info!(
        id = m.id,
        slots = %m.slot_text(),
        to = m.to_group,
        "migration created"
    );
    state.migrations.wake.notify_one();
    get_after(state, &m).await
}

// ---------------------------------------------------------------------------
// Steering: pause, resume, stop, rate
// ---------------------------------------------------------------------------

pub async fn pause(state: &AppState, id: MigrationId) -> Result<MigrationView, AppError> {
    let m = update(state, id, |m| transition(m, MigrationState::Paused)).await?;
    if let Some(live) = live_of(state, id) {
        live.control.paused.store(true, Ordering::Relaxed);
    }
    get_after(state, &m).await
}

pub async fn resume(state: &AppState, id: MigrationId) -> Result<MigrationView, AppError> {
    // Paused while this dashboard's runner was still finishing a step: the
    // runner carries on with it, so the migration is running again, not
    // waiting to be picked up.
    let in_hand = live_of(state, id).is_some();
    let m = update(state, id, |m| {
        if m.state == MigrationState::Paused && in_hand {
            transition(m, MigrationState::Running)?;
            m.reason = None;
            Ok(())
        } else if m.state == MigrationState::Paused {
            transition(m, MigrationState::Pending)?;
            m.reason = Some("resumed: waiting for the mover".into());
            Ok(())
        } else if matches!(m.state, MigrationState::Pending | MigrationState::Running) {
            Ok(())
        } else {
            Err(AppError::Conflict(format!(
                "migration {} is {}: only a paused migration can resume",
                m.id, m.state
            )))
        }
    })
    .await?;
    if let Some(live) = live_of(state, id) {
        live.control.paused.store(false, Ordering::Relaxed);
    }
    state.migrations.wake.notify_one();
    get_after(state, &m).await
}

pub async fn stop(state: &AppState, id: MigrationId) -> Result<MigrationView, AppError> {
    let t = state.load().await?;
    let m = update(state, id, |m| {
        if m.state.is_terminal() {
            return Err(AppError::Conflict(format!(
                "migration {} has ended already ({})",
                m.id, m.state
            )));
        }
        m.stop_requested = true;
        let in_flight = m.slots.iter().any(|&s| {
            matches!(
                t.slot(s),
                SlotState::Held { .. } | SlotState::Migrating { .. }
            )
        });
        match m.state {
            // Nothing half-moved: it ends here.
            MigrationState::Pending | MigrationState::Paused if !in_flight => {
                m.slots_done = Some(done_in(m, &t));
                transition(m, MigrationState::Stopped)
            }
            // A wave is in flight: the runner completes it, then stops.
            MigrationState::Paused => transition(m, MigrationState::Pending),
            _ => Ok(()),
        }
    })
    .await?;
    if let Some(live) = live_of(state, id) {
        live.control.paused.store(false, Ordering::Relaxed);
    }
    state.migrations.wake.notify_one();
    get_after(state, &m).await
}

pub async fn set_rate(
    state: &AppState,
    id: MigrationId,
    rate: SetRate,
) -> Result<MigrationView, AppError> {
    let m = update(state, id, |m| {
        if m.state.is_terminal() {
            return Err(AppError::Conflict(format!(
                "migration {} has ended already ({})",
                m.id, m.state
            )));
        }
        if let Some(k) = rate.keys_per_sec {
            m.keys_per_sec = k;
        }
        if let Some(b) = rate.bytes_per_sec {
            m.bytes_per_sec = b;
        }
        Ok(())
    })
    .await?;
    if let Some(live) = live_of(state, id) {
        live.control
            .keys_per_sec
            .store(m.keys_per_sec, Ordering::Relaxed);
        live.control
            .bytes_per_sec
            .store(m.bytes_per_sec, Ordering::Relaxed);
    }
    get_after(state, &m).await
}

// ---------------------------------------------------------------------------
// Rebalance
// ---------------------------------------------------------------------------

pub async fn rebalance(
    state: &AppState,
    dry_run: bool,
    among: Option<Vec<GroupId>>,
) -> Result<RebalanceResponse, AppError> {
    if !dry_run {
        state.leadership.require_leader()?;
        let active: Vec<String> = load_all(state)
            .await?
            .iter()
            .filter(|m| !m.state.is_terminal())
            .map(|m| format!("{} ({})", m.id, m.state))
            .collect();
        if !active.is_empty() {
            return Err(AppError::Conflict(format!(
                "migrations {} have not ended: rebalance once they did",
                active.join(", ")
            )));
        }
    }
    let t = state.load().await?;
    let plan = rebalance::plan(&t, among.as_deref())?;
    let mut started = Vec::new();
    if !dry_run {
        for (to, slots) in plan.by_target() {
            let m = create(
                state,
                CreateMigration {
                    slots: format_ranges(slots),
                    to_group: to,
                    wave_size: None,
                    keys_per_sec: None,
                    bytes_per_sec: None,
                    safe: None,
                },
            )
            .await
            .map_err(|e| {
                e.context(format_args!(
                    "rebalance: starting the migration to group {to} failed (migrations \
                     started before it: {started:?})"
                ))
            })?;
            started.push(m.id);
        }
    }
    Ok(RebalanceResponse {
        dry_run,
        target: plan.target.clone(),
        moves: plan.api_moves(),
        migrations: started,
    })
}

// ---------------------------------------------------------------------------
// The runner
// ---------------------------------------------------------------------------

/// Runs migrations while this dashboard leads, until `shutdown`.
pub async fn runner(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    let mut role = state.leadership.subscribe();
    loop {
        if *shutdown.borrow() {
            return;
        }
        if !state.leadership.is_leader() {
            tokio::select! {
                _ = role.changed() => {}
                _ = shutdown.changed() => {}
                _ = sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let next = match load_all(&state).await {
            Ok(all) => all
                .into_iter()
                .find(|m| matches!(m.state, MigrationState::Pending | MigrationState::Running)),
            Err(e) => {
                tracing::warn!("migration runner: cannot read migrations: {e}");
                sleep(RETRY_AFTER).await;
                continue;
            }
        };
        match next {
            Some(m) => {
                if let Err(e) = run_one(&state, m.id).await {
                    tracing::warn!("migration {}: {e}", m.id);
                    sleep(RETRY_AFTER).await;
                }
            }
            None => {
                tokio::select! {
                    _ = state.migrations.wake.notified() => {}
                    _ = shutdown.changed() => {}
                    _ = sleep(Duration::from_secs(1)) => {}
                }
            }
        }
    }
}

/// Runs one migration until it ends, pauses, or this dashboard stops leading.
async fn run_one(state: &Arc<AppState>, id: MigrationId) -> Result<(), AppError> {
    let m = update(state, id, |m| {
        transition(m, MigrationState::Running)?;
        m.reason = None;
        Ok(())
    })
    .await?;
    let control = Arc::new(Control::default());
    control
        .keys_per_sec
        .store(m.keys_per_sec, Ordering::Relaxed);
    control
        .bytes_per_sec
        .store(m.bytes_per_sec, Ordering::Relaxed);
    let live = Arc::new(Live {
        control,
        progress: Arc::new(Progress::default()),
        base_keys: m.keys_moved,
        base_bytes: m.bytes_moved,
        base_active_ms: m.active_ms,
        started: Instant::now(),
        big_keys: Mutex::new(None),
    });
    state.migrations.live.lock().insert(id, live.clone());
    tracing::info!(id, slots = %m.slot_text(), to = m.to_group, "migration running");

    // Saves the counters every second while it runs.
    let (stop_saver, mut saver_stop) = watch::channel(false);
    let saver = {
        let state = state.clone();
        let live = live.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = sleep(SAVE_EVERY) => {}
                    _ = saver_stop.changed() => return,
                }
                save_counters(&state, id, &live).await;
            }
        })
    };
    let result = drive(state, id, &live).await;
    let _ = stop_saver.send(true);
    let _ = saver.await;
    save_counters(state, id, &live).await;
    state.migrations.live.lock().remove(&id);
    result
}

async fn save_counters(state: &AppState, id: MigrationId, live: &Live) {
    let (keys, bytes, active) = (live.keys(), live.bytes(), live.active_ms());
    if let Err(e) = update(state, id, |m| {
        m.keys_moved = keys;
        m.bytes_moved = bytes;
        m.active_ms = active;
        Ok(())
    })
    .await
    {
        tracing::debug!("migration {id}: saving counters failed: {e}");
    }
}

/// Where the slots of a migration stand, from the topology.
struct Standing {
    /// A wave in flight: its source, its slots, and whether they are
    /// already `migrating` (else `held`).
    in_flight: Option<(GroupId, Vec<usize>, bool)>,
    /// Slots still at their source, by source.
    todo: BTreeMap<GroupId, Vec<usize>>,
    /// A wave being rolled back: the group its keys go back to, its slots.
    rolling_back: Option<(GroupId, Vec<usize>)>,
    /// Slots in a state this migration did not put them in.
    odd: Vec<(usize, SlotState)>,
}

fn standing(m: &Migration, t: &Topology) -> Standing {
    let mut migrating: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
    let mut held: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
    let mut todo: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
    let mut back: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
    let mut odd = Vec::new();
    for &s in &m.slots {
        match t.slot(s) {
            SlotState::Normal { group } if group == m.to_group => {}
            SlotState::Normal { group } => todo.entry(group).or_default().push(s),
            SlotState::Migrating { from, to, .. } if to == m.to_group => {
                migrating.entry(from).or_default().push(s)
            }
            SlotState::Held { group } if group != m.to_group => {
                held.entry(group).or_default().push(s)
            }
            SlotState::Migrating { from, to, .. } if from == m.to_group => {
                back.entry(to).or_default().push(s)
            }
            other => odd.push((s, other)),
        }
    }
    let in_flight = migrating
        .into_iter()
        .next()
        .map(|(g, s)| (g, s, true))
        .or_else(|| held.into_iter().next().map(|(g, s)| (g, s, false)));
    Standing {
        in_flight,
        todo,
        rolling_back: back.into_iter().next(),
        odd,
    }
}

async fn drive(state: &Arc<AppState>, id: MigrationId, live: &Live) -> Result<(), AppError> {
    loop {
        let m = load_one(state, id).await?;
        live.control
            .keys_per_sec
            .store(m.keys_per_sec, Ordering::Relaxed);
        live.control
            .bytes_per_sec
            .store(m.bytes_per_sec, Ordering::Relaxed);
        if m.state != MigrationState::Running {
            // Paused (or ended) through the API.
            return Ok(());
        }
        let t = state.load().await?;
        if !t.groups.contains_key(&m.to_group) {
            return fail(state, id, format!("target group {} is gone", m.to_group)).await;
        }
        let s = standing(&m, &t);
        if let Some((back_to, slots)) = s.rolling_back {
            finish_roll_back(state, &m, back_to, &slots).await?;
            let why = m
                .error
                .clone()
                .unwrap_or_else(|| "a wave could not be moved".into());
            return fail(state, id, why).await;
        }
        if let Some((source, slots, migrating)) = s.in_flight {
            let phase = if migrating {
                Phase::Move
            } else {
                Phase::Barrier
            };
            let next: Vec<usize> = s
                .todo
                .get(&source)
                .map(|t| t.iter().copied().take(m.wave_size).collect())
                .unwrap_or_default();
            run_wave(state, &m, live, source, slots, &next, phase).await?;
            continue;
        }
        if !s.odd.is_empty() {
            let list: Vec<String> = s
                .odd
                .iter()
                .take(5)
                .map(|(slot, st)| format!("slot {slot} is {st}"))
                .collect();
            return fail(
                state,
                id,
                format!(
                    "{} slots were changed by something else ({}); the other slots are each \
                     wholly on one group",
                    s.odd.len(),
                    list.join(", ")
                ),
            )
            .await;
        }
        if m.stop_requested || s.todo.is_empty() {
            // The completion barrier: every live proxy applied the end of
            // the last wave before this migration counts as ended.
            wait_barrier(state, id, t.version, "to apply the end of the migration").await?;
            let end = if s.todo.is_empty() {
                MigrationState::Finished
            } else {
                MigrationState::Stopped
            };
            let m = update(state, id, |m| {
                transition(m, end)?;
                m.slots_done = Some(done_in(m, &t));
                m.error = None;
                Ok(())
            })
            .await?;
            tracing::info!(id, state = %m.state, "migration ended");
            return Ok(());
        }
        // Next wave: the lowest slots of the first source.
        let Some((source, slots)) = s.todo.into_iter().next() else {
            continue;
        };
        let wave: Vec<usize> = slots.iter().copied().take(m.wave_size).collect();
        let next: Vec<usize> = slots
            .iter()
            .copied()
            .skip(m.wave_size)
            .take(m.wave_size)
            .collect();
        run_wave(state, &m, live, source, wave, &next, Phase::Hold).await?;
    }
}

async fn fail(state: &AppState, id: MigrationId, why: String) -> Result<(), AppError> {
    // Say where every slot of the migration is now.
    let t = state.load().await?;
    let m = load_one(state, id).await?;
    let mut by_state: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &s in &m.slots {
        let st = t.slot(s);
        let name = match st {
            SlotState::Normal { group } => format!("group {group}"),
            other => other.to_string(),
        };
        by_state.entry(name).or_default().push(s);
    }
    let place: Vec<String> = by_state
        .into_iter()
        .map(|(where_, slots)| format!("slots {} on {where_}", format_ranges(slots)))
        .collect();
    let why = format!("{why}; now: {}", place.join(", "));
    tracing::error!("migration {id} failed: {why}");
    update(state, id, |m| {
        transition(m, MigrationState::Failed)?;
        m.slots_done = Some(done_in(m, &t));
        m.error = Some(why);
        Ok(())
    })
    .await?;
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Phase {
    /// The slots are `normal(source)`.
    Hold,
    /// The slots are `held`: wait for the barrier.
    Barrier,
    /// The slots are `migrating`.
    Move,
}

/// Waits until every live proxy applied `version`, showing who lags.
async fn wait_barrier(
    state: &AppState,
    id: MigrationId,
    version: u64,
    what: &str,
) -> Result<(), AppError> {
    let mut shown = false;
    loop {
        match barrier::wait_applied(state.store.as_ref(), version, BARRIER_ROUND).await {
            Ok(_) => {
                if shown {
                    set_reason(state, id, None).await;
                }
                return Ok(());
            }
            Err(BarrierError::Lagging { lagging, .. }) => {
                let names: Vec<String> = lagging
                    .iter()
                    .map(|p| format!("{} ({}, at version {})", p.id, p.addr, p.applied_version))
                    .collect();
                set_reason(
                    state,
                    id,
                    Some(format!(
                        "waiting for proxies {} {what} (topology version {version})",
                        names.join(", ")
                    )),
                )
                .await;
                shown = true;
            }
            Err(BarrierError::Store(e)) => {
                set_reason(state, id, Some(format!("etcd: {e}"))).await;
                shown = true;
            }
        }
        state.leadership.require_leader()?;
    }
}

/// The group's master, or an error naming the group.
fn master_of(t: &Topology, group: GroupId) -> Result<String, AppError> {
    t.groups
        .get(&group)
        .and_then(|g| g.master())
        .map(str::to_string)
        .ok_or_else(|| AppError::Conflict(format!("group {group} has no master")))
}

/// Sets the slots of a wave from one state to another in one topology
/// change; refuses if any of them is not in `from` any more.
async fn switch_slots(
    state: &AppState,
    slots: &[usize],
    from: SlotState,
    to: SlotState,
) -> Result<Topology, AppError> {
    switch_slots_holding(state, slots, from, to, &[]).await
}

/// [`switch_slots`], and in the same change, `hold` becomes held keys (they
/// must be keys of `slots`, and `to` must be `migrating`). Slots that leave
/// `migrating` lose their held keys.
async fn switch_slots_holding(
    state: &AppState,
    slots: &[usize],
    from: SlotState,
    to: SlotState,
    hold: &[Vec<u8>],
) -> Result<Topology, AppError> {
    let (t, ()) = state
        .change_topology(None, |t| {
            for &s in slots {
                let current = t.slot(s);
                if current != from && current != to {
                    return Err(AppError::Conflict(format!(
                        "slot {s} is {current}, expected {from}"
                    )));
                }
                if let Some(cell) = t.slots.get_mut(s) {
                    *cell = to;
                }
            }
            if !matches!(to, SlotState::Migrating { .. }) {
                t.held_keys
                    .retain(|k| !slots.contains(&usize::from(shardis_topology::slot_of(k))));
            }
            add_held_keys(t, hold);
            Ok(())
        })
        .await?;
    Ok(t)
}

/// Adds `keys` to the held keys (each once).
fn add_held_keys(t: &mut Topology, keys: &[Vec<u8>]) {
    for key in keys {
        if !t.held_keys.contains(key) {
            t.held_keys.push(key.clone());
        }
    }
}

/// Holds `keys` (in migrating slots) in one topology change.
async fn hold_keys(state: &AppState, keys: &[Vec<u8>]) -> Result<Topology, AppError> {
    let (t, ()) = state
        .change_topology(None, |t| {
            add_held_keys(t, keys);
            Ok(())
        })
        .await?;
    Ok(t)
}

/// Releases held `keys` in one topology change.
async fn release_keys(state: &AppState, keys: &[Vec<u8>]) -> Result<Topology, AppError> {
    let (t, ()) = state
        .change_topology(None, |t| {
            t.held_keys.retain(|k| !keys.contains(k));
            Ok(())
        })
        .await?;
    Ok(t)
}

/// Copies big keys that proxies already hold (held keys in `migrating`
/// slots), each in chunks, and releases each once it is on the target. A
/// proxy touching one meanwhile waits; the rest of its slot is served.
async fn copy_held_keys(
    state: &AppState,
    id: MigrationId,
    live: &Live,
    wave: &mover::Wave,
    keys: &[Vec<u8>],
) -> Result<(), AppError> {
    for key in keys {
        let started = Instant::now();
        let shown: String = String::from_utf8_lossy(key).chars().take(80).collect();
        set_reason(
            state,
            id,
            Some(format!(
                "copying big key {shown:?} (slot {}) in chunks; proxies hold just that key",
                shardis_topology::slot_of(key)
            )),
        )
        .await;
        let copied = mover::copy_big_key(&state.servers, &state.leadership, wave, key).await;
        set_reason(state, id, None).await;
        // Released either way: on an error the key is still whole on the
        // source (its copy is only swapped in at the end).
        release_keys(state, std::slice::from_ref(key)).await?;
        let bytes = copied?;
        live.progress.keys.fetch_add(1, Ordering::Relaxed);
        live.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
        tracing::info!(
            id,
            slot = shardis_topology::slot_of(key),
            bytes,
            ms = started.elapsed().as_millis() as u64,
            "big key copied in chunks while held"
        );
    }
    Ok(())
}

/// Runs one wave of `slots` from `source` to the migration's target, from
/// `phase` on; `next` is the wave that will follow from the same source
/// (its big keys are looked for during this wave's scan).
#[allow(clippy::too_many_arguments)]
async fn run_wave(
    state: &Arc<AppState>,
    m: &Migration,
    live: &Live,
    source: GroupId,
    slots: Vec<usize>,
    next: &[usize],
    mut phase: Phase,
) -> Result<(), AppError> {
    let id = m.id;
    let to = m.to_group;
    let text = format_ranges(slots.iter().copied());
    // A promotion and a migration never run on the same group at once.
    let _claims = loop {
        let a = state.claim_group(source, &format!("migration {id}"));
        let b = state.claim_group(to, &format!("migration {id}"));
        match (a, b) {
            (Ok(a), Ok(b)) => break (a, b),
            (Err(e), _) | (_, Err(e)) => {
                set_reason(state, id, Some(e.to_string())).await;
                sleep(RETRY_AFTER).await;
                if phase == Phase::Hold && !still_running(state, id).await? {
                    return Ok(());
                }
                state.leadership.require_leader()?;
            }
        }
    };
    let held = SlotState::Held { group: source };
    let migrating = SlotState::Migrating {
        from: source,
        to,
        safe: m.safe,
    };
    tracing::info!(id, slots = %text, source, to, ?phase, "wave");

    // Big keys of the wave known before it starts: held from the moment the
    // slots become migrating (so no proxy moves one with a blocking MIGRATE),
    // then copied in chunks, before the mover starts.
    let mut big_first: Vec<Vec<u8>> = Vec::new();
    if phase == Phase::Hold {
        big_first = big_keys_of(state, m.id, live, source, &slots).await?;
        switch_slots(state, &slots, SlotState::Normal { group: source }, held).await?;
        phase = Phase::Barrier;
    }
    if phase == Phase::Barrier {
        // The version that holds the slots (or a later one).
        let version = state.load().await?.version;
        loop {
            match barrier::wait_applied(state.store.as_ref(), version, BARRIER_ROUND).await {
                Ok(_) => break,
                Err(e) => {
                    let why = match e {
                        BarrierError::Lagging { lagging, .. } => format!(
                            "waiting for proxies {} to hold slots {text} (topology version \
                             {version}); a proxy that is gone counts once its etcd lease expired",
                            lagging
                                .iter()
                                .map(|p| format!(
                                    "{} ({}, at version {})",
                                    p.id, p.addr, p.applied_version
                                ))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                        BarrierError::Store(e) => format!("etcd: {e}"),
                    };
                    set_reason(state, id, Some(why)).await;
                    state.leadership.require_leader()?;
                    // Paused or stopped while holding: nothing moved yet,
                    // so the slots go back to their source.
                    let now = load_one(state, id).await?;
                    if now.state != MigrationState::Running || now.stop_requested {
                        switch_slots(state, &slots, held, SlotState::Normal { group: source })
                            .await?;
                        set_reason(state, id, None).await;
                        return Ok(());
                    }
                }
            }
        }
        set_reason(state, id, None).await;
    }

    let t = state.load().await?;
    let source_master = master_of(&t, source)?;
    let target_master = master_of(&t, to)?;
    // Fence: connections of proxies that are not live any more.
    loop {
        match fence(state, &source_master).await {
            Ok(()) => break,
            Err(e) => {
                set_reason(
                    state,
                    id,
                    Some(format!(
                        "cannot fence lost proxies on the source {source_master}: {e}; retrying"
                    )),
                )
                .await;
                sleep(RETRY_AFTER).await;
                state.leadership.require_leader()?;
            }
        }
    }
    if phase == Phase::Barrier {
        switch_slots_holding(state, &slots, held, migrating, &big_first).await?;
    } else {
        // Taken over with the slots migrating: keys a dashboard before held
        // are copied again (a copy is idempotent) and released.
        big_first = t
            .held_keys
            .iter()
            .filter(|k| slots.contains(&usize::from(shardis_topology::slot_of(k))))
            .cloned()
            .collect();
    }

    let mut wave = mover::Wave::new(source_master.clone(), target_master.clone(), &slots);
    wave.safe = m.safe;
    wave.kept_bytes = state.config.mover_memory();
    wave.look_ahead(next);
    wave.target_replicas = t
        .groups
        .get(&to)
        .map(|g| g.replicas().to_vec())
        .unwrap_or_default();
    live.control.paused.store(false, Ordering::Relaxed);
    copy_held_keys(state, id, live, &wave, &big_first).await?;
    // Slots of the wave that ended already (every key moved): the rest is
    // what a retry moves, a roll-back moves back, and the end switches.
    let mut slots = slots;
    let mut failures = 0;
    // The last attempt failed on a master that was not ready.
    let mut waited = false;
    loop {
        if waited
            && masters_not_ready(state, (source, &source_master), (to, &target_master))
                .await
                .is_none()
        {
            // The error shown was why the wave waited: it moves again now.
            let _ = update(state, id, |m| {
                m.error = None;
                Ok(())
            })
            .await;
        }
        let started = Instant::now();
        let (done_tx, done_rx) = tokio::sync::mpsc::unbounded_channel();
        let moving = async {
            let outcome = mover::move_wave(
                &state.servers,
                &state.leadership,
                &wave,
                &live.control,
                &live.progress,
                Some(&done_tx),
            )
            .await;
            drop(done_tx);
            outcome
        };
        let (outcome, ended) =
            tokio::join!(moving, end_slots_early(state, id, migrating, to, done_rx));
        if !ended.is_empty() {
            slots.retain(|s| !ended.contains(s));
            for &s in &ended {
                if let Some(cell) = wave.slots.get_mut(s) {
                    *cell = false;
                }
            }
        }
        // What is left of the wave.
        let left = format_ranges(slots.iter().copied());
        match outcome {
            Ok(Outcome::Done { big, ahead }) => {
                tracing::info!(
                    id,
                    slots = %text,
                    ms = started.elapsed().as_millis() as u64,
                    big_keys = big.len(),
                    "wave moved"
                );
                if !next.is_empty() {
                    *live.big_keys.lock() = Some((source, next.to_vec(), ahead));
                }
                for key in big {
                    move_big_key(state, id, live, &wave, &key).await?;
                }
                break;
            }
            Ok(Outcome::Paused) => {
                set_reason(
                    state,
                    id,
                    Some(format!(
                        "paused with slots {left} migrating: proxies move their keys on access"
                    )),
                )
                .await;
                return Ok(());
            }
            Err(e) => {
                state.leadership.require_leader()?;
                if !state.leadership.leading_now() {
                    return Err(e);
                }
                tracing::warn!("migration {id}: moving slots {left}: {e}");
                // Both masters answer, are masters and have their data, so
                // the failure is about the data (the target is full, refuses
                // the payload…): after a few such tries, or at once when
                // asked to stop, move the wave back. A master that is down,
                // a replica or loading is waited for (it does not count): a
                // roll-back then would read an empty or partial server.
                let not_ready =
                    masters_not_ready(state, (source, &source_master), (to, &target_master)).await;
                waited = not_ready.is_some();
                if not_ready.is_none() {
                    failures += 1;
                }
                let stop = load_one(state, id)
                    .await
                    .map(|m| m.stop_requested)
                    .unwrap_or(false);
                if let Some(why) = not_ready {
                    let _ = update(state, id, |m| {
                        m.error = Some(format!(
                            "{e}; {why}: the wave waits for it. To fail over, pause this \
                             migration, promote a replica of that group (`shardis promote GROUP \
                             ADDR`), then resume"
                        ));
                        Ok(())
                    })
                    .await;
                    if mover::nap(&live.control, RETRY_AFTER).await {
                        return Ok(());
                    }
                    continue;
                }
                if failures >= MAX_WAVE_FAILURES || stop {
                    let why = format!(
                        "moving slots {left} from group {source} to group {to} failed {failures} \
                         times ({e}); those slots were moved back to group {source}"
                    );
                    let _ = update(state, id, |m| {
                        m.error = Some(why.clone());
                        Ok(())
                    })
                    .await;
                    let t = switch_slots(state, &slots, migrating, held).await?;
                    wait_barrier(state, id, t.version, "to hold slots for the roll-back").await?;
                    finish_roll_back(state, m, source, &slots).await?;
                    return fail(state, id, why).await;
                }
                let _ = update(state, id, |m| {
                    m.error = Some(format!("{e} (retrying)"));
                    Ok(())
                })
                .await;
                if mover::nap(&live.control, RETRY_AFTER).await {
                    return Ok(());
                }
            }
        }
    }

    // Complete: the target owns the slots.
    let done = if slots.is_empty() {
        state.load().await?
    } else {
        switch_slots(state, &slots, migrating, SlotState::Normal { group: to }).await?
    };
    let _ = update(state, id, |m| {
        m.error = None;
        Ok(())
    })
    .await;
    save_counters(state, id, live).await;
    wait_barrier(state, id, done.version, "to apply the end of a wave").await?;
    Ok(())
}

/// How long the slots that ended mid-wave gather before one topology change
/// makes them `normal(target)` together.
const END_SLOTS_EVERY: Duration = Duration::from_millis(100);

/// Makes the slots the mover reports on `done` (every key of theirs moved)
/// `normal(to)`, a few at a time, while the wave goes on: proxies then send
/// their requests straight to the target, instead of asking the source
/// first. No key of such a slot is on the source or can appear there (it is
/// `migrating` on every proxy that could write it), so, as at the end of a
/// wave, it does not matter which of the two states a proxy sees; the
/// wave's completion barrier covers these changes too. Returns the slots it
/// switched; slots whose change failed are tried again with the next ones
/// that end, or else left to the end of the wave.
async fn end_slots_early(
    state: &AppState,
    id: MigrationId,
    migrating: SlotState,
    to: GroupId,
    mut done: tokio::sync::mpsc::UnboundedReceiver<Vec<usize>>,
) -> Vec<usize> {
    let mut ended = Vec::new();
    let mut ready: Vec<usize> = Vec::new();
    let mut open = true;
    while open {
        match done.recv().await {
            Some(slots) => ready.extend(slots),
            None => break,
        }
        let until = Instant::now() + END_SLOTS_EVERY;
        loop {
            match tokio::time::timeout_at(until, done.recv()).await {
                Ok(Some(slots)) => ready.extend(slots),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        match switch_slots(state, &ready, migrating, SlotState::Normal { group: to }).await {
            Ok(_) => ended.append(&mut ready),
            Err(e) => tracing::warn!(
                "migration {id}: ending slots {} early failed: {e}; they end with the wave",
                format_ranges(ready.iter().copied())
            ),
        }
    }
    ended
}

/// Moves a wave back to `back_to` from the migration's target. The slots
/// are `held(back_to)` (after a barrier) or already `migrating(target,
/// back_to)` (a dashboard that took over). Lost proxies are fenced on both
/// masters, keys on both servers lose their stale copy on the target, the
/// slots migrate back (proxies move on access the other way), and end
/// `normal(back_to)` after a barrier: every slot wholly on one group.
async fn finish_roll_back(
    state: &AppState,
    m: &Migration,
    back_to: GroupId,
    slots: &[usize],
) -> Result<(), AppError> {
    let id = m.id;
    let from = m.to_group;
    let text = format_ranges(slots.iter().copied());
    let held = SlotState::Held { group: back_to };
    let reverse = SlotState::Migrating {
        from,
        to: back_to,
        safe: m.safe,
    };
    tracing::warn!(id, slots = %text, from, back_to, "rolling a wave back");
    loop {
        let attempt = async {
            let t = state.load().await?;
            let home = master_of(&t, back_to)?;
            let away = master_of(&t, from)?;
            ready_master(state, &home, &format!("group {back_to}")).await?;
            ready_master(state, &away, &format!("group {from}")).await?;
            fence(state, &home).await?;
            fence(state, &away).await?;
            let mut set = vec![false; SLOT_COUNT];
            for &s in slots {
                if let Some(c) = set.get_mut(s) {
                    *c = true;
                }
            }
            if slots.iter().any(|&s| t.slot(s) == held) {
                let dropped = mover::drop_stale_copies(&state.servers, &home, &away, &set).await?;
                if dropped > 0 {
                    tracing::warn!(id, dropped, "stale copies dropped before the roll-back");
                }
                switch_slots(state, slots, held, reverse).await?;
            }
            let mut wave = mover::Wave::new(away, home, slots);
            wave.kept_bytes = state.config.mover_memory();
            wave.defer_big = false;
            wave.safe = m.safe;
            wave.target_replicas = t
                .groups
                .get(&back_to)
                .map(|g| g.replicas().to_vec())
                .unwrap_or_default();
            let control = Control::default();
            let progress = Arc::new(Progress::default());
            mover::move_wave(
                &state.servers,
                &state.leadership,
                &wave,
                &control,
                &progress,
                None,
            )
            .await?;
            Ok::<(), AppError>(())
        }
        .await;
        match attempt {
            Ok(()) => break,
            Err(e) => {
                state.leadership.require_leader()?;
                set_reason(
                    state,
                    id,
                    Some(format!(
                        "rolling slots {text} back to group {back_to}: {e}; retrying"
                    )),
                )
                .await;
                sleep(RETRY_AFTER).await;
            }
        }
    }
    let t = switch_slots(state, slots, reverse, SlotState::Normal { group: back_to }).await?;
    wait_barrier(state, id, t.version, "to apply the roll-back").await?;
    set_reason(state, id, None).await;
    Ok(())
}

/// The big keys of a wave's slots on its source, before the wave starts:
/// what the previous wave's scan found for them (see [`mover::Wave::lookahead`]),
/// or else one scan of the source now.
async fn big_keys_of(
    state: &AppState,
    id: MigrationId,
    live: &Live,
    source: GroupId,
    slots: &[usize],
) -> Result<Vec<Vec<u8>>, AppError> {
    let known = live.big_keys.lock().take();
    if let Some((group, ahead, keys)) = known {
        let covered: BTreeSet<usize> = ahead.into_iter().collect();
        if group == source && slots.iter().all(|s| covered.contains(s)) {
            let wanted: BTreeSet<usize> = slots.iter().copied().collect();
            return Ok(keys
                .into_iter()
                .filter(|k| wanted.contains(&usize::from(shardis_topology::slot_of(k))))
                .collect());
        }
    }
    let t = state.load().await?;
    let master = master_of(&t, source)?;
    let started = Instant::now();
    let found = mover::find_big_keys(&state.servers, &master, &mover::slot_set(slots)).await?;
    tracing::info!(
        id,
        source,
        count = found.len(),
        ms = started.elapsed().as_millis() as u64,
        "looked for big keys"
    );
    Ok(found)
}

/// Moves one big key found during the wave's scan: the key becomes held
/// (barrier: no proxy touches it any more, nothing of it in flight), is
/// copied in chunks, and released; the rest of its slot is served
/// meanwhile. A dashboard that dies half way finds the key held and copies
/// it again.
async fn move_big_key(
    state: &AppState,
    id: MigrationId,
    live: &Live,
    wave: &mover::Wave,
    key: &[u8],
) -> Result<(), AppError> {
    let slot = shardis_topology::slot_of(key);
    let t = hold_keys(state, &[key.to_vec()]).await?;
    wait_barrier(
        state,
        id,
        t.version,
        &format!("to hold a big key of slot {slot}"),
    )
    .await?;
    copy_held_keys(state, id, live, wave, &[key.to_vec()]).await
}

/// Whether the migration is still meant to run.
async fn still_running(state: &AppState, id: MigrationId) -> Result<bool, AppError> {
    let m = load_one(state, id).await?;
    Ok(m.state == MigrationState::Running && !m.stop_requested)
}

/// Kills, on the source's master, the backend connections of every proxy
/// that is not registered any more. Such a proxy's lease has expired on
/// etcd's side (its registration is gone), and a proxy stops serving before
/// its lease can expire; what it may still have had in a socket is cut off
/// here, before the first key moves. Twice, `FENCE_MARGIN` apart, to catch
/// a connection that was being opened.
async fn fence(state: &AppState, source_master: &str) -> Result<(), AppError> {
    for round in 0..2 {
        let live: Vec<String> = state
            .store
            .list_proxies()
            .await?
            .into_iter()
            .map(|p| p.id)
            .collect();
        let killed = state
            .servers
            .kill_lost_proxies(source_master, &live)
            .await?;
        if killed.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            source = source_master,
            ?killed,
            round,
            "fenced lost proxies: killed their connections"
        );
        sleep(FENCE_MARGIN).await;
    }
    Ok(())
}
