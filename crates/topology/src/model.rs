//! The cluster's topology: which group owns each slot, which servers make up
//! each group, and the state of each slot while it is held or migrating.
//!
//! One `Topology` document is the unit that the control plane changes and the
//! proxies apply. Every change bumps `version`, so a proxy can say "I have
//! applied version N" and the control plane can wait until all of them did.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::hash::SLOT_COUNT;

fn is_false(b: &bool) -> bool {
    !*b
}

/// A group's id: a small positive number chosen by the operator (0 is never a group).
pub type GroupId = u32;

/// What a slot is doing right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum SlotState {
    /// No group owns it: requests for it are refused.
    #[default]
    Unassigned,
    /// Served by `group`'s master.
    Normal { group: GroupId },
    /// Owned by `group`, but requests wait (bounded) instead of being sent:
    /// set before a slot's owner changes, so that no proxy still has a request for
    /// it in flight when the change happens.
    Held { group: GroupId },
    /// Keys are moving from `from` to `to`: a proxy answers a request on the
    /// source while all its keys are still there, and otherwise moves them to
    /// the target first.
    Migrating {
        #[serde(rename = "source")]
        from: GroupId,
        #[serde(rename = "target")]
        to: GroupId,
        /// The mover's safe mode: it copies, waits for the target's
        /// replicas, then deletes on the source, so proxies must not write
        /// on the source meanwhile (they move keys before writing).
        #[serde(default, skip_serializing_if = "is_false")]
        safe: bool,
    },
}

impl SlotState {
    /// The group that answers for this slot when it is served normally (for a
    /// migrating slot, the source).
    pub fn owner(&self) -> Option<GroupId> {
        match *self {
            SlotState::Unassigned => None,
            SlotState::Normal { group } | SlotState::Held { group } => Some(group),
            SlotState::Migrating { from, .. } => Some(from),
        }
    }

    /// Every group this slot involves (owner, and target while migrating).
    pub fn groups(&self) -> impl Iterator<Item = GroupId> {
        let (a, b) = match *self {
            SlotState::Unassigned => (None, None),
            SlotState::Normal { group } | SlotState::Held { group } => (Some(group), None),
            SlotState::Migrating { from, to, .. } => (Some(from), Some(to)),
        };
        a.into_iter().chain(b)
    }

    pub fn name(&self) -> &'static str {
        match self {
            SlotState::Unassigned => "unassigned",
            SlotState::Normal { .. } => "normal",
            SlotState::Held { .. } => "held",
            SlotState::Migrating { .. } => "migrating",
        }
    }
}

/// A group of plain Redis servers: the first is the master, the rest replicas.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub id: GroupId,
    /// `host:port` of each server, master first.
    #[serde(default)]
    pub servers: Vec<String>,
}

impl Group {
    pub fn master(&self) -> Option<&str> {
        self.servers.first().map(String::as_str)
    }
    pub fn replicas(&self) -> &[String] {
        self.servers.get(1..).unwrap_or_default()
    }
}

/// The whole topology of one cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topology {
    /// Bumped by exactly one on every change. 0 means "never written".
    pub version: u64,
    #[serde(with = "group_list")]
    pub groups: BTreeMap<GroupId, Group>,
    /// Exactly `SLOT_COUNT` entries, stored in etcd as runs of equal state.
    #[serde(with = "slot_runs")]
    pub slots: Vec<SlotState>,
    /// Keys that proxies leave alone: a request touching one waits (bounded,
    /// like a request for a held slot) while the rest of its slot is served.
    /// A big key being copied in chunks. Only in `migrating` slots; hex in
    /// the stored document (keys are bytes).
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "hex_keys")]
    pub held_keys: Vec<Vec<u8>>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology {
            version: 0,
            groups: BTreeMap::new(),
            slots: vec![SlotState::Unassigned; SLOT_COUNT],
            held_keys: Vec::new(),
        }
    }
}

/// Why a topology document is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TopologyError {
    #[error("topology has {0} slots, expected {SLOT_COUNT}")]
    SlotCount(usize),
    #[error("slot {slot} refers to group {group}, which does not exist")]
    UnknownGroup { slot: usize, group: GroupId },
    #[error("group {0} is keyed under a different id")]
    GroupIdMismatch(GroupId),
    #[error("group id 0 is reserved")]
    GroupZero,
    #[error("slot {0} migrates from a group to itself")]
    SelfMigration(usize),
    #[error("server {0} is listed twice")]
    DuplicateServer(String),
    #[error("a held key is in slot {0}, which is not migrating")]
    HeldKeyNotMigrating(usize),
}

impl Topology {
    pub fn slot(&self, slot: usize) -> SlotState {
        self.slots.get(slot).copied().unwrap_or_default()
    }

    /// Checks the invariants every stored topology must satisfy.
    pub fn validate(&self) -> Result<(), TopologyError> {
        if self.slots.len() != SLOT_COUNT {
            return Err(TopologyError::SlotCount(self.slots.len()));
        }
        let mut seen = std::collections::HashSet::new();
        for (id, group) in &self.groups {
            if *id == 0 {
                return Err(TopologyError::GroupZero);
            }
            if group.id != *id {
                return Err(TopologyError::GroupIdMismatch(group.id));
            }
            for server in &group.servers {
                if !seen.insert(server.as_str()) {
                    return Err(TopologyError::DuplicateServer(server.clone()));
                }
            }
        }
        for key in &self.held_keys {
            let slot = usize::from(crate::slot_of(key));
            if !matches!(self.slot(slot), SlotState::Migrating { .. }) {
                return Err(TopologyError::HeldKeyNotMigrating(slot));
            }
        }
        for (slot, state) in self.slots.iter().enumerate() {
            if let SlotState::Migrating { from, to, .. } = state {
                if from == to {
                    return Err(TopologyError::SelfMigration(slot));
                }
            }
            for group in state.groups() {
                if !self.groups.contains_key(&group) {
                    return Err(TopologyError::UnknownGroup { slot, group });
                }
            }
        }
        Ok(())
    }

    /// Slots per owning group, as compact range text (`0-99,200`), for display.
    pub fn ranges_of(&self, group: GroupId) -> String {
        format_ranges(
            self.slots
                .iter()
                .enumerate()
                .filter(|(_, s)| s.owner() == Some(group))
                .map(|(i, _)| i),
        )
    }
}

/// Formats ascending slot numbers as `0-99,200,300-310`.
pub fn format_ranges(slots: impl IntoIterator<Item = usize>) -> String {
    let mut out = String::new();
    let mut run: Option<(usize, usize)> = None;
    let flush = |out: &mut String, (a, b): (usize, usize)| {
        if !out.is_empty() {
            out.push(',');
        }
        if a == b {
            out.push_str(&a.to_string());
        } else {
            out.push_str(&format!("{a}-{b}"));
        }
    };
    for s in slots {
        run = match run {
            Some((a, b)) if s == b + 1 => Some((a, s)),
            Some(r) => {
                flush(&mut out, r);
                Some((s, s))
            }
            None => Some((s, s)),
        };
    }
    if let Some(r) = run {
        flush(&mut out, r);
    }
    out
}

/// Parses slot range text like `0-99,200,300-310` into sorted, de-duplicated
/// slot numbers. Overlapping parts are an error, as is anything out of range.
pub fn parse_ranges(text: &str) -> Result<Vec<usize>, String> {
    let mut marked = vec![false; SLOT_COUNT];
    let mut any = false;
    for part in text.split(',').map(str::trim) {
        if part.is_empty() {
            return Err(format!("empty part in slot ranges {text:?}"));
        }
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let parse = |s: &str| -> Result<usize, String> {
            let n: usize = s
                .parse()
                .map_err(|_| format!("{s:?} is not a slot number"))?;
            if n >= SLOT_COUNT {
                return Err(format!("slot {n} is out of range 0-{}", SLOT_COUNT - 1));
            }
            Ok(n)
        };
        let (a, b) = (parse(a)?, parse(b)?);
        if a > b {
            return Err(format!("slot range {part:?} runs backwards"));
        }
        for s in a..=b {
            let m = marked
                .get_mut(s)
                .ok_or_else(|| format!("slot {s} is out of range"))?;
            if *m {
                return Err(format!("slot {s} appears twice in {text:?}"));
            }
            *m = true;
            any = true;
        }
    }
    if !any {
        return Err("no slots given".into());
    }
    Ok(marked
        .iter()
        .enumerate()
        .filter(|(_, m)| **m)
        .map(|(i, _)| i)
        .collect())
}

/// A proxy's registration, kept under its lease so it vanishes when the proxy does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxyInfo {
    /// Unique per process start; also the prefix of its backend connection names.
    pub id: String,
    /// Where clients connect.
    pub addr: String,
    /// Where `/metrics`, `/healthz`, `/readyz` are served.
    pub admin_addr: String,
    /// Unix time (seconds) the process started.
    pub start_time: u64,
    /// The topology version this proxy has applied *and drained*: the control
    /// plane's barrier waits on this.
    pub applied_version: u64,
    pub pid: u32,
    /// The etcd lease the registration lives under (filled in by the store).
    #[serde(default)]
    pub lease: i64,
}

impl ProxyInfo {
    /// The `CLIENT SETNAME` value of this proxy's backend connections.
    pub fn backend_client_name(&self) -> String {
        backend_client_name(&self.id)
    }
}

/// Backend connections are named `shardis-proxy-<id>` so that the control plane
/// can find and `CLIENT KILL` them (ids are restricted to `[A-Za-z0-9_-]`).
pub fn backend_client_name(proxy_id: &str) -> String {
    format!("shardis-proxy-{proxy_id}")
}

impl fmt::Display for SlotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SlotState::Unassigned => write!(f, "unassigned"),
            SlotState::Normal { group } => write!(f, "normal({group})"),
            SlotState::Held { group } => write!(f, "held({group})"),
            SlotState::Migrating { from, to, safe } => {
                let mode = if *safe { ", safe" } else { "" };
                write!(f, "migrating({from}->{to}{mode})")
            }
        }
    }
}

/// Held keys are bytes in memory, hex strings in JSON.
mod hex_keys {
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(keys: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        use std::fmt::Write as _;
        s.collect_seq(keys.iter().map(|k| {
            k.iter()
                .fold(String::with_capacity(k.len() * 2), |mut out, b| {
                    let _ = write!(out, "{b:02x}");
                    out
                })
        }))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter()
            .map(|h| {
                let digit = |c: u8| char::from(c).to_digit(16);
                h.as_bytes()
                    .chunks(2)
                    .map(|pair| match pair {
                        [hi, lo] => Some((digit(*hi)? * 16 + digit(*lo)?) as u8),
                        _ => None,
                    })
                    .collect::<Option<Vec<u8>>>()
                    .ok_or_else(|| D::Error::custom(format!("held key {h:?} is not hex")))
            })
            .collect()
    }
}

/// Groups are a map in memory but a list in JSON (ids as numbers, not strings).
mod group_list {
    use super::*;
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(
        groups: &BTreeMap<GroupId, Group>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.collect_seq(groups.values())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<GroupId, Group>, D::Error> {
        let list = Vec::<Group>::deserialize(d)?;
        Ok(list.into_iter().map(|g| (g.id, g)).collect())
    }
}

/// 1024 slots are stored as runs of equal state, which keeps the document small
/// (a freshly balanced cluster is a handful of runs).
mod slot_runs {
    use super::*;
    use serde::de::Error as _;
    use serde::{Deserializer, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Run {
        // `SlotState::Migrating` is flattened into the same JSON object, which
        // is why its groups are called `source` and `target` there.
        from: usize,
        to: usize,
        #[serde(flatten)]
        state: SlotState,
    }

    pub fn serialize<S: Serializer>(slots: &[SlotState], s: S) -> Result<S::Ok, S::Error> {
        let mut runs: Vec<Run> = Vec::new();
        for (i, state) in slots.iter().enumerate() {
            match runs.last_mut() {
                Some(run) if run.state == *state && run.to + 1 == i => run.to = i,
                _ => runs.push(Run {
                    from: i,
                    to: i,
                    state: *state,
                }),
            }
        }
        s.collect_seq(runs)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SlotState>, D::Error> {
        let runs = Vec::<Run>::deserialize(d)?;
        let mut slots = vec![SlotState::Unassigned; SLOT_COUNT];
        for run in runs {
            if run.from > run.to || run.to >= SLOT_COUNT {
                return Err(D::Error::custom(format!(
                    "bad slot run {}-{}",
                    run.from, run.to
                )));
            }
            for s in slots.get_mut(run.from..=run.to).into_iter().flatten() {
                *s = run.state;
            }
        }
        Ok(slots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Topology {
        let mut t = Topology {
            version: 7,
            ..Topology::default()
        };
        for id in [1, 2] {
            t.groups.insert(
                id,
                Group {
                    id,
                    servers: vec![format!("127.0.0.1:{}", 7000 + id * 2 - 1)],
                },
            );
        }
        for s in 0..512 {
            t.slots[s] = SlotState::Normal { group: 1 };
        }
        for s in 512..1024 {
            t.slots[s] = SlotState::Normal { group: 2 };
        }
        t.slots[600] = SlotState::Migrating {
            from: 2,
            to: 1,
            safe: false,
        };
        t.slots[601] = SlotState::Held { group: 2 };
        t.slots[602] = SlotState::Migrating {
            from: 2,
            to: 1,
            safe: true,
        };
        t
    }

    #[test]
    fn json_round_trip_is_compact() {
        let t = sample();
        t.validate().unwrap();
        let json = serde_json::to_string(&t).unwrap();
        assert!(json.len() < 600, "{json}");
        let back: Topology = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        // Safe mode is written only where it is on; documents without it load.
        assert_eq!(json.matches("\"safe\":true").count(), 1, "{json}");
        assert!(!json.contains("\"safe\":false"), "{json}");
    }

    #[test]
    fn held_keys_round_trip_as_hex_and_only_in_migrating_slots() {
        let mut t = sample();
        let key = b"{big}\x00\xff key".to_vec();
        let slot = usize::from(crate::slot_of(&key));
        t.held_keys.push(key.clone());
        assert_eq!(t.validate(), Err(TopologyError::HeldKeyNotMigrating(slot)));
        let groups: Vec<GroupId> = t.groups.keys().copied().collect();
        t.slots[slot] = SlotState::Migrating {
            from: groups[0],
            to: groups[1],
            safe: false,
        };
        assert_eq!(t.validate(), Ok(()));
        let json = serde_json::to_string(&t).unwrap();
        assert!(
            json.contains("\"held_keys\":[\"7b6269677d00ff206b6579\"]"),
            "{json}"
        );
        let back: Topology = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        // None held: the field is left out, and old documents without it load.
        t.held_keys.clear();
        let json = serde_json::to_string(&t).unwrap();
        assert!(!json.contains("held_keys"));
        assert_eq!(serde_json::from_str::<Topology>(&json).unwrap(), t);
        let bad = json.replacen('{', "{\"held_keys\":[\"0g\"],", 1);
        assert!(serde_json::from_str::<Topology>(&bad).is_err());
    }

    #[test]
    fn validate_catches_unknown_groups() {
        let mut t = sample();
        t.slots[3] = SlotState::Normal { group: 9 };
        assert_eq!(
            t.validate(),
            Err(TopologyError::UnknownGroup { slot: 3, group: 9 })
        );
    }

    #[test]
    fn ranges() {
        assert_eq!(parse_ranges("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert!(parse_ranges("0-1024").is_err());
        assert!(parse_ranges("5-3").is_err());
        assert!(parse_ranges("1,1").is_err());
        assert!(parse_ranges("0-9,5").is_err());
        assert!(parse_ranges("").is_err());
        assert!(parse_ranges("x").is_err());
        assert_eq!(format_ranges([0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(sample().ranges_of(2), "512-1023");
        assert_eq!(sample().ranges_of(1), "0-511");
    }
}
