//! The HTTP API's request and response bodies: the contract between the
//! dashboard, the `shardis` CLI, the web UI and operators' scripts. Both sides
//! use these very types, so they cannot drift apart.
//!
//! Every error is `{"error": "..."}` ([`ErrorBody`]), with extra fields where
//! they help a caller act: the leader to go to instead of a standby, the
//! proxies that hold a barrier up.

use serde::{Deserialize, Serialize};
use shardis_topology::GroupId;

// ---------------------------------------------------------------------------
// Requests
// ---------------------------------------------------------------------------

/// `POST /api/v1/groups`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateGroup {
    /// 1 or more; chosen by the operator.
    pub id: GroupId,
}

/// `POST /api/v1/groups/{id}/servers`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AddServer {
    /// `host:port` of a running redis-server.
    pub addr: String,
    /// Accept a first server (the group's master) that already holds keys.
    #[serde(default)]
    pub force: bool,
}

/// `POST /api/v1/groups/{id}/promote`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Promote {
    /// The replica that becomes the group's master.
    pub addr: String,
}

/// `POST /api/v1/slots/assign`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignSlots {
    /// Ranges like `0-99,200,300-310`.
    pub slots: String,
    pub group: GroupId,
}

/// The header that makes a mutating call conditional on the topology
/// version it was based on (optimistic concurrency): `If-Match: 42`.
pub const IF_MATCH: &str = "if-match";

// ---------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------

/// The body of every error answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    /// On a standby's 503: the dashboard that accepts changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<LeaderInfo>,
    /// On a barrier timeout (504): the proxies that had not applied the version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lagging: Vec<LaggingProxy>,
}

/// A proxy that has not (yet) applied the topology version a barrier waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaggingProxy {
    pub id: String,
    pub addr: String,
    pub applied_version: u64,
}

// ---------------------------------------------------------------------------
// Dashboard leadership
// ---------------------------------------------------------------------------

/// Who a dashboard is; the leader writes this into its etcd leader entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub id: String,
    /// Where its HTTP API listens.
    pub addr: String,
    /// Unix time (seconds) it became the leader.
    #[serde(default)]
    pub since: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds the leadership: accepts changes.
    Leader,
    /// Another dashboard leads (or none does yet): read-only.
    Standby,
}

/// This dashboard's role and the leader it knows of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DashboardStatus {
    pub id: String,
    pub addr: String,
    pub role: Role,
    /// The leader (this dashboard itself when `role` is `leader`); `None`
    /// while no dashboard holds the leadership.
    pub leader: Option<LeaderInfo>,
}

// ---------------------------------------------------------------------------
// Groups and servers
// ---------------------------------------------------------------------------

/// A server's replication state as its own `INFO replication` tells it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replication {
    /// `master` or `slave`, as Redis says it.
    pub role: String,
    /// For a replica: the master it follows (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master: Option<String>,
    /// For a replica: `up` once the link to its master works.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_link_status: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_last_io_seconds_ago: Option<i64>,
    #[serde(default)]
    pub master_sync_in_progress: bool,
    /// For a replica: the replication offset it has processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slave_repl_offset: Option<u64>,
    /// The server's replication offset (on a master: everything it produced).
    pub master_repl_offset: u64,
    pub connected_replicas: u64,
    /// For a master: each replica as the master sees it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicas: Vec<ReplicaLink>,
}

impl Replication {
    pub fn is_master(&self) -> bool {
        self.role == "master"
    }

    /// How far this server has got in its master's stream: `slave_repl_offset`
    /// for a replica, its own offset for a master.
    pub fn processed_offset(&self) -> u64 {
        self.slave_repl_offset.unwrap_or(self.master_repl_offset)
    }
}

/// One `slaveN:ip=..,port=..,state=..,offset=..,lag=..` line of a master.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaLink {
    pub addr: String,
    pub state: String,
    pub offset: u64,
    /// Seconds since the replica's last acknowledgement.
    pub lag: u64,
}

/// What the topology makes of a server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerRole {
    Master,
    Replica,
}

/// A server of a group: its role in the topology and what Redis reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerStatus {
    pub addr: String,
    pub role: ServerRole,
    /// `None` when the server could not be asked (see `error`).
    pub replication: Option<Replication>,
    /// For a replica: bytes of its master's stream it has not processed yet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Keys in database 0 (`DBSIZE`), when the server answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keys: Option<u64>,
    /// Why the server could not be asked, or what is wrong with it
    /// (a replica that follows another master, a master that is a replica).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    pub id: GroupId,
    /// Master first.
    pub servers: Vec<ServerStatus>,
    /// The slots this group answers for, as ranges (`0-511`).
    pub slots: String,
    pub slot_count: usize,
}

/// `GET /api/v1/groups`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupsResponse {
    pub version: u64,
    pub groups: Vec<GroupStatus>,
}

// ---------------------------------------------------------------------------
// Slots
// ---------------------------------------------------------------------------

/// One slot as `GET /api/v1/slots` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotInfo {
    pub slot: usize,
    /// `unassigned`, `normal`, `held` or `migrating`.
    pub state: String,
    /// The owner (for a migrating slot, the source).
    pub group: Option<GroupId>,
    /// For a migrating slot: where it moves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<GroupId>,
}

/// `GET /api/v1/slots`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotsResponse {
    pub version: u64,
    pub slots: Vec<SlotInfo>,
}

// ---------------------------------------------------------------------------
// Proxies
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyStatus {
    pub id: String,
    pub addr: String,
    pub admin_addr: String,
    pub pid: u32,
    /// Unix time it started.
    pub start_time: u64,
    pub uptime_secs: u64,
    /// The topology version it has applied and drained.
    pub applied_version: u64,
    /// `applied_version` is below the current topology version.
    pub lagging: bool,
    /// Its `/readyz` answered 200.
    pub healthy: bool,
    /// `ready`, or what `/readyz` said, or why it could not be asked.
    pub health: String,
}

/// `GET /api/v1/proxies`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiesResponse {
    pub version: u64,
    pub proxies: Vec<ProxyStatus>,
}

/// `GET /api/v1/barrier`: every live proxy has applied `version`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BarrierResponse {
    pub version: u64,
    /// How many live proxies confirmed it.
    pub proxies: usize,
}

// ---------------------------------------------------------------------------
// Overview
// ---------------------------------------------------------------------------

/// `GET /api/v1/overview`: everything `shardis status` shows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overview {
    pub cluster: String,
    /// The topology version (0: none written yet).
    pub version: u64,
    pub dashboard: DashboardStatus,
    pub groups: Vec<GroupStatus>,
    /// Slots no group owns, as ranges (empty when all are assigned).
    pub unassigned_slots: String,
    /// Slots that are held or migrating right now, as ranges.
    pub busy_slots: String,
    pub proxies: Vec<ProxyStatus>,
}

// ---------------------------------------------------------------------------
// Results of changes
// ---------------------------------------------------------------------------

/// The answer to a change of groups, servers or slots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChangeResponse {
    /// The topology version the change produced.
    pub version: u64,
    /// What was done, in words.
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// For an added server: its replication state right after.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication: Option<Replication>,
}

/// The answer to a promotion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PromoteResponse {
    pub group: GroupId,
    /// The new master.
    pub master: String,
    /// The master before; now listed as a replica.
    pub old_master: String,
    /// The topology version that made `master` the master.
    pub version: u64,
    /// The old master was unreachable, so the replica was promoted without
    /// waiting for it to catch up: writes it had not replicated may be lost.
    pub failover: bool,
    /// Each step as it happened, with its duration.
    pub steps: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Proxies that had not confirmed the switch when the answer was sent
    /// (the switch is done; they still hold the group's requests until they do).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lagging: Vec<LaggingProxy>,
}

// ---------------------------------------------------------------------------
// Migrations and rebalance
// ---------------------------------------------------------------------------

/// `POST /api/v1/migrations`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateMigration {
    /// Ranges like `0-511`.
    pub slots: String,
    pub to_group: GroupId,
    /// Slots per wave (one scan of the source per wave); default 128.
    #[serde(default)]
    pub wave_size: Option<usize>,
    /// Rate limits; 0 or absent: unlimited.
    #[serde(default)]
    pub keys_per_sec: Option<u64>,
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
    /// Copy, wait until the target's replicas have it, then delete on the
    /// source (slower; loses nothing if the target's master dies mid-move).
    #[serde(default)]
    pub safe: Option<bool>,
}

/// `POST /api/v1/migrations/{id}/rate`: absent fields stay as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetRate {
    #[serde(default)]
    pub keys_per_sec: Option<u64>,
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
}

/// A run of consecutive slots of a migration in the same state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotRun {
    pub slots: String,
    /// `normal`, `held` or `migrating`.
    pub state: String,
    /// The owning group (for `migrating`, the source).
    pub group: GroupId,
    /// For `migrating`: where the keys go.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<GroupId>,
}

/// A migration as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationView {
    pub id: u64,
    /// `pending`, `running`, `paused`, `finished`, `stopped` or `failed`.
    pub state: String,
    pub slots: String,
    pub to_group: GroupId,
    pub slots_total: usize,
    /// Slots wholly at the target.
    pub slots_done: usize,
    /// Each slot's own state, as runs.
    pub slot_states: Vec<SlotRun>,
    pub keys_moved: u64,
    pub bytes_moved: u64,
    pub keys_per_sec: f64,
    pub elapsed_secs: f64,
    pub wave_size: usize,
    pub keys_per_sec_limit: u64,
    pub bytes_per_sec_limit: u64,
    pub safe: bool,
    pub stop_requested: bool,
    /// Why it waits right now (which proxy lags, which group is busy…).
    pub reason: Option<String>,
    /// Why it failed, or the error it is retrying after.
    pub error: Option<String>,
    /// What the pre-flight checks found (e.g. the target's eviction policy).
    #[serde(default)]
    pub checks: Vec<String>,
    pub created_at: u64,
    pub ended_at: Option<u64>,
}

/// One move of a rebalance plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceMove {
    pub slots: String,
    pub from: GroupId,
    pub to: GroupId,
    pub count: usize,
}

/// `POST /api/v1/rebalance[?dry_run=true]`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebalanceResponse {
    pub dry_run: bool,
    /// Slots per group after the plan.
    pub target: std::collections::BTreeMap<GroupId, usize>,
    pub moves: Vec<RebalanceMove>,
    /// The migrations started (none for a dry run), one per target group.
    pub migrations: Vec<u64>,
}
