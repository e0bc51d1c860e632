//! A slot migration as the control plane records it in etcd.
//!
//! The record holds what the operator asked for (slots, target group, wave
//! size, rate limits, safe mode), where the migration stands as a whole
//! (`state`), and its counters. Where each *slot* stands is not copied here:
//! it is the slot's state in the topology (`normal` at the source, `held`,
//! `migrating`, `normal` at the target), which is saved before any proxy or
//! the mover acts on it. A dashboard that takes over therefore finds the
//! exact step of every slot in the topology and resumes from there.

use serde::{Deserialize, Serialize};

use crate::model::{format_ranges, parse_ranges, GroupId};

/// A migration's id: 1, 2, 3… in creation order.
pub type MigrationId = u64;

/// Where a migration stands as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MigrationState {
    /// Accepted, waiting for an earlier migration to end.
    Pending,
    /// Waves are moving.
    Running,
    /// The mover is paused (a wave in flight stays `migrating`: proxies keep
    /// moving its keys on access).
    Paused,
    /// Every slot is at the target and every live proxy applied that.
    Finished,
    /// Stopped by the operator after the wave in flight completed: each slot
    /// is wholly at the source or wholly at the target.
    Stopped,
    /// Given up; `error` says why and each slot is wholly on one group.
    Failed,
}

impl MigrationState {
    pub fn name(self) -> &'static str {
        match self {
            MigrationState::Pending => "pending",
            MigrationState::Running => "running",
            MigrationState::Paused => "paused",
            MigrationState::Finished => "finished",
            MigrationState::Stopped => "stopped",
            MigrationState::Failed => "failed",
        }
    }

    /// An ended migration never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            MigrationState::Finished | MigrationState::Stopped | MigrationState::Failed
        )
    }

    /// The transition table: every change of a migration's state goes
    /// through it.
    pub fn can_become(self, next: MigrationState) -> bool {
        use MigrationState::*;
        matches!(
            (self, next),
            (Pending, Running)
                | (Pending, Paused)
                | (Pending, Stopped)
                | (Pending, Failed)
                | (Running, Paused)
                | (Running, Finished)
                | (Running, Stopped)
                | (Running, Failed)
                | (Paused, Running)
                | (Paused, Pending)
                | (Paused, Stopped)
                | (Paused, Failed)
        )
    }
}

impl std::fmt::Display for MigrationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One migration, as stored at `/shardis/<cluster>/migrations/<id>`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Migration {
    pub id: MigrationId,
    pub state: MigrationState,
    /// The slots to move, ascending (stored as range text).
    #[serde(with = "slot_set")]
    pub slots: Vec<usize>,
    pub to_group: GroupId,
    /// Slots per wave: one scan of the source per wave.
    pub wave_size: usize,
    /// 0: unlimited.
    #[serde(default)]
    pub keys_per_sec: u64,
    /// 0: unlimited.
    #[serde(default)]
    pub bytes_per_sec: u64,
    /// Copy, wait for the target's replicas, then delete on the source.
    #[serde(default)]
    pub safe: bool,
    /// The operator asked to stop: the wave in flight completes, then it stops.
    #[serde(default)]
    pub stop_requested: bool,
    #[serde(default)]
    pub keys_moved: u64,
    #[serde(default)]
    pub bytes_moved: u64,
    /// Time spent running (not paused, not pending), in milliseconds.
    #[serde(default)]
    pub active_ms: u64,
    /// Unix seconds.
    pub created_at: u64,
    #[serde(default)]
    pub ended_at: Option<u64>,
    /// Why it is waiting right now (a lagging proxy, a busy group…).
    #[serde(default)]
    pub reason: Option<String>,
    /// Why it failed (or the last error it is retrying after).
    #[serde(default)]
    pub error: Option<String>,
    /// What the pre-flight checks found worth telling (eviction policy…).
    #[serde(default)]
    pub checks: Vec<String>,
    /// Slots that were `normal` on the target when it ended (later
    /// migrations may move them on; this is its own count).
    #[serde(default)]
    pub slots_done: Option<usize>,
}

impl Migration {
    pub fn slot_text(&self) -> String {
        format_ranges(self.slots.iter().copied())
    }
}

/// A slot list stored as range text (`0-99,200`).
mod slot_set {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(slots: &[usize], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_ranges(slots.iter().copied()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
        let text = String::deserialize(d)?;
        parse_ranges(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_go_nowhere() {
        use MigrationState::*;
        let all = [Pending, Running, Paused, Finished, Stopped, Failed];
        for from in all {
            for to in all {
                if from.is_terminal() {
                    assert!(!from.can_become(to), "{from} -> {to}");
                }
            }
            assert!(!from.can_become(from), "{from} -> itself");
        }
        assert!(Running.can_become(Paused) && Paused.can_become(Running));
    }

    #[test]
    fn round_trips_as_json_with_range_text() {
        let m = Migration {
            id: 7,
            state: MigrationState::Running,
            slots: (0..512).chain([700]).collect(),
            to_group: 2,
            wave_size: 128,
            keys_per_sec: 0,
            bytes_per_sec: 1000,
            safe: false,
            stop_requested: false,
            keys_moved: 5,
            bytes_moved: 500,
            active_ms: 10,
            created_at: 1,
            ended_at: None,
            reason: None,
            error: None,
            checks: vec![],
            slots_done: None,
        };
        let json = serde_json::to_string(&m).unwrap();
        assert!(json.contains(r#""slots":"0-511,700""#), "{json}");
        assert!(json.contains(r#""state":"running""#), "{json}");
        let back: Migration = serde_json::from_str(&json).unwrap();
        assert_eq!(back, m);
    }
}
