//! The rebalance plan: spread the slots evenly over a set of groups with the
//! fewest moves, as a pure function of the topology.
//!
//! Each group gets `1024 / n` slots, and the `1024 % n` groups that hold the
//! most already get one more (so they give away less). Groups above their
//! share give away their highest slots; groups below take them, lowest
//! group id first.

use std::collections::BTreeMap;

use shardis_topology::{format_ranges, GroupId, SlotState, Topology, SLOT_COUNT};

use crate::api::RebalanceMove;
use crate::error::AppError;

/// The plan: slots per group afterwards, and the moves (slot lists by
/// `(from, to)`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub target: BTreeMap<GroupId, usize>,
    pub moves: Vec<(GroupId, GroupId, Vec<usize>)>,
}

impl Plan {
    pub fn api_moves(&self) -> Vec<RebalanceMove> {
        self.moves
            .iter()
            .map(|(from, to, slots)| RebalanceMove {
                slots: format_ranges(slots.iter().copied()),
                from: *from,
                to: *to,
                count: slots.len(),
            })
            .collect()
    }

    /// Slots each target group receives (one migration per target).
    pub fn by_target(&self) -> BTreeMap<GroupId, Vec<usize>> {
        let mut out: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
        for (_, to, slots) in &self.moves {
            out.entry(*to).or_default().extend(slots);
        }
        for slots in out.values_mut() {
            slots.sort_unstable();
        }
        out
    }
}

/// Plans spreading every slot over `among` (default: every group with a
/// master). Refuses while a slot is unassigned, held or migrating.
pub fn plan(t: &Topology, among: Option<&[GroupId]>) -> Result<Plan, AppError> {
    let groups: Vec<GroupId> = match among {
        Some(list) => {
            for g in list {
                match t.groups.get(g) {
                    None => return Err(AppError::NotFound(format!("unknown group {g}"))),
                    Some(group) if group.master().is_none() => {
                        return Err(AppError::Conflict(format!(
                            "group {g} has no servers: add a master before giving it slots"
                        )))
                    }
                    Some(_) => {}
                }
            }
            let mut list = list.to_vec();
            list.sort_unstable();
            list.dedup();
            list
        }
        None => t
            .groups
            .values()
            .filter(|g| g.master().is_some())
            .map(|g| g.id)
            .collect(),
    };
    if groups.is_empty() {
        return Err(AppError::Conflict(
            "no group has a master: nothing to spread the slots over".into(),
        ));
    }
    let mut owned: BTreeMap<GroupId, Vec<usize>> = BTreeMap::new();
    let mut unassigned = Vec::new();
    let mut busy = Vec::new();
    for (slot, state) in t.slots.iter().enumerate() {
        match state {
            SlotState::Normal { group } => owned.entry(*group).or_default().push(slot),
            SlotState::Unassigned => unassigned.push(slot),
            SlotState::Held { .. } | SlotState::Migrating { .. } => busy.push(slot),
        }
    }
    if !busy.is_empty() {
        return Err(AppError::Conflict(format!(
            "slots {} are held or migrating: wait until the running migration or promotion ends",
            format_ranges(busy)
        )));
    }
    if !unassigned.is_empty() {
        return Err(AppError::Conflict(format!(
            "slots {} are unassigned: assign them first (POST /api/v1/slots/assign); a \
             rebalance only moves slots that hold data",
            format_ranges(unassigned)
        )));
    }

    let n = groups.len();
    let share = SLOT_COUNT / n;
    let extra = SLOT_COUNT % n;
    // The groups holding the most get the extra slots: fewer moves.
    let mut by_size = groups.clone();
    by_size.sort_by_key(|g| (std::cmp::Reverse(owned.get(g).map_or(0, Vec::len)), *g));
    let mut target: BTreeMap<GroupId, usize> = BTreeMap::new();
    for (i, g) in by_size.iter().enumerate() {
        target.insert(*g, share + usize::from(i < extra));
    }

    // Slots given away: every slot of a group outside the set, and the
    // highest slots of a group above its share.
    let mut give: Vec<(usize, GroupId)> = Vec::new();
    for (g, slots) in &owned {
        let keep = target.get(g).copied().unwrap_or(0);
        if slots.len() > keep {
            give.extend(
                slots
                    .get(keep..)
                    .unwrap_or_default()
                    .iter()
                    .map(|&s| (s, *g)),
            );
        }
    }
    give.sort_unstable();
    let mut give = give.into_iter();
    let mut moves: BTreeMap<(GroupId, GroupId), Vec<usize>> = BTreeMap::new();
    for g in &groups {
        let have = owned.get(g).map_or(0, Vec::len);
        let want = target.get(g).copied().unwrap_or(0);
        for _ in have..want {
            if let Some((slot, from)) = give.next() {
                moves.entry((from, *g)).or_default().push(slot);
            }
        }
    }
    Ok(Plan {
        target,
        moves: moves
            .into_iter()
            .map(|((from, to), slots)| (from, to, slots))
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardis_topology::Group;

    fn topo(groups: &[(GroupId, bool)], owner: impl Fn(usize) -> GroupId) -> Topology {
        let mut t = Topology::default();
        for &(id, has_master) in groups {
            t.groups.insert(
                id,
                Group {
                    id,
                    servers: if has_master {
                        vec![format!("127.0.0.1:{}", 7000 + id)]
                    } else {
                        vec![]
                    },
                },
            );
        }
        for s in 0..SLOT_COUNT {
            t.slots[s] = SlotState::Normal { group: owner(s) };
        }
        t
    }

    fn apply(t: &mut Topology, plan: &Plan) {
        for (from, to, slots) in &plan.moves {
            for &s in slots {
                assert_eq!(t.slots[s], SlotState::Normal { group: *from });
                t.slots[s] = SlotState::Normal { group: *to };
            }
        }
    }

    fn counts(t: &Topology) -> BTreeMap<GroupId, usize> {
        let mut c = BTreeMap::new();
        for s in &t.slots {
            *c.entry(s.owner().unwrap()).or_insert(0) += 1;
        }
        c
    }

    #[test]
    fn two_to_three_groups_moves_only_what_it_must() {
        let mut t = topo(&[(1, true), (2, true), (3, true)], |s| {
            if s < 512 {
                1
            } else {
                2
            }
        });
        let plan = plan(&t, None).unwrap();
        let moved: usize = plan.moves.iter().map(|m| m.2.len()).sum();
        // Group 3 needs 341; exactly that many move.
        assert_eq!(moved, 341);
        apply(&mut t, &plan);
        let c = counts(&t);
        let (min, max) = (c.values().min().unwrap(), c.values().max().unwrap());
        assert!(max - min <= 1, "{c:?}");
        // Balanced already: no moves.
        assert!(super::plan(&t, None).unwrap().moves.is_empty());
    }

    #[test]
    fn back_to_two_groups_empties_the_third() {
        let mut t = topo(&[(1, true), (2, true), (3, true)], |s| {
            (s % 3) as GroupId + 1
        });
        let plan = plan(&t, Some(&[1, 2])).unwrap();
        apply(&mut t, &plan);
        let c = counts(&t);
        assert_eq!(c.get(&3), None);
        assert_eq!((c[&1], c[&2]), (512, 512));
    }

    #[test]
    fn groups_without_a_master_are_left_out_and_busy_slots_refused() {
        let t = topo(&[(1, true), (2, false)], |_| 1);
        assert!(plan(&t, None).unwrap().moves.is_empty());
        assert!(plan(&t, Some(&[2])).is_err());
        let mut t = topo(&[(1, true), (2, true)], |_| 1);
        t.slots[5] = SlotState::Held { group: 1 };
        assert!(plan(&t, None).unwrap_err().to_string().contains("held"));
        t.slots[5] = SlotState::Unassigned;
        assert!(plan(&t, None)
            .unwrap_err()
            .to_string()
            .contains("unassigned"));
    }
}
