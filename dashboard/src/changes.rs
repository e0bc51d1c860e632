//! The topology changes the dashboard makes, as pure functions on a
//! [`Topology`]: each checks that it is allowed and either changes the
//! document or says why not, touching nothing else. They are run by
//! [`crate::state::AppState::change_topology`], which loads, applies,
//! validates and saves under the version guard; a refused change therefore
//! leaves the stored topology exactly as it was.

use std::collections::BTreeMap;

use shardis_topology::{format_ranges, GroupId, SlotState, Topology};

use crate::error::AppError;

/// Checks `host:port` (a name or an IP; IPv6 in brackets).
pub fn check_addr(addr: &str) -> Result<(), AppError> {
    // A host name has at most 253 bytes; nothing longer is echoed back.
    if addr.len() > 300 {
        return Err(AppError::BadRequest(format!(
            "server address of {} bytes: too long for host:port",
            addr.len()
        )));
    }
    let bad = |why: &str| {
        Err(AppError::BadRequest(format!(
            "server address {addr:?} {why}; expected host:port, e.g. 127.0.0.1:7001"
        )))
    };
    let Some((host, port)) = addr.rsplit_once(':') else {
        return bad("has no port");
    };
    if host.is_empty() {
        return bad("has no host");
    }
    if host.contains(char::is_whitespace) || host.contains('/') {
        return bad("is not a host name or IP address");
    }
    if host.contains(':') && !(host.starts_with('[') && host.ends_with(']')) {
        return bad("has an IPv6 host without brackets");
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => bad("has no valid port (1-65535)"),
    }
}

fn group_mut(t: &mut Topology, id: GroupId) -> Result<&mut shardis_topology::Group, AppError> {
    t.groups
        .get_mut(&id)
        .ok_or_else(|| AppError::NotFound(format!("unknown group {id}")))
}

/// Every slot that involves `group` (owner or migration target), as ranges.
fn slots_involving(t: &Topology, group: GroupId) -> String {
    format_ranges(
        t.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.groups().any(|g| g == group))
            .map(|(i, _)| i),
    )
}

/// A new, empty group.
pub fn create_group(t: &mut Topology, id: GroupId) -> Result<(), AppError> {
    if id == 0 {
        return Err(AppError::BadRequest(
            "group id must be 1 or more (0 is reserved)".into(),
        ));
    }
    if t.groups.contains_key(&id) {
        return Err(AppError::Conflict(format!("group {id} already exists")));
    }
    t.groups.insert(
        id,
        shardis_topology::Group {
            id,
            servers: Vec::new(),
        },
    );
    Ok(())
}

/// Removes a group that owns no slots (its servers are left as they are).
pub fn delete_group(t: &mut Topology, id: GroupId) -> Result<(), AppError> {
    group_mut(t, id)?;
    let owned = slots_involving(t, id);
    if !owned.is_empty() {
        return Err(AppError::Conflict(format!(
            "group {id} still owns slots {owned}; only a group without slots can be deleted \
             (move its slots away first)"
        )));
    }
    t.groups.remove(&id);
    Ok(())
}

/// Appends `addr` to the group: its master when the group has no servers, a
/// replica otherwise. Whether the Redis server agrees is checked by the caller.
pub fn add_server(t: &mut Topology, id: GroupId, addr: &str) -> Result<(), AppError> {
    check_addr(addr)?;
    group_mut(t, id)?;
    if let Some(other) = t
        .groups
        .values()
        .find(|g| g.servers.iter().any(|s| s == addr))
    {
        return Err(AppError::Conflict(if other.id == id {
            format!("server {addr} is already in group {id}")
        } else {
            format!(
                "server {addr} already belongs to group {}; remove it there first",
                other.id
            )
        }));
    }
    group_mut(t, id)?.servers.push(addr.to_string());
    Ok(())
}

/// Whether `addr` is the master of group `id` (`None`: not in the group).
pub fn is_master(t: &Topology, id: GroupId, addr: &str) -> Option<bool> {
    let group = t.groups.get(&id)?;
    let at = group.servers.iter().position(|s| s == addr)?;
    Some(at == 0)
}

/// Removes `addr` from the group. A master can only go when it is the
/// group's last server and the group serves no slots: otherwise the slots
/// would lose their server, or a replica would silently become the master in
/// the topology while Redis still has it replicating the removed one.
pub fn remove_server(t: &mut Topology, id: GroupId, addr: &str) -> Result<(), AppError> {
    let owned = slots_involving(t, id);
    let group = group_mut(t, id)?;
    let Some(at) = group.servers.iter().position(|s| s == addr) else {
        return Err(AppError::NotFound(format!(
            "server {addr} is not in group {id} (its servers: {})",
            list_or_none(&group.servers)
        )));
    };
    if at == 0 && group.servers.len() > 1 {
        return Err(AppError::Conflict(format!(
            "server {addr} is the master of group {id}, which has other servers: promote \
             another server first (shardis promote {id} {}), then remove this one",
            group.servers.get(1).map_or("ADDR", String::as_str)
        )));
    }
    if at == 0 && !owned.is_empty() {
        return Err(AppError::Conflict(format!(
            "server {addr} is the only server of group {id}, which still serves slots \
             {owned}: the slots would have no server"
        )));
    }
    group.servers.remove(at);
    Ok(())
}

fn list_or_none(servers: &[String]) -> String {
    if servers.is_empty() {
        "none".into()
    } else {
        servers.join(", ")
    }
}

/// Gives unassigned `slots` to `group`. Refuses all of them (changing none)
/// if any is assigned already: moving owned slots is a migration.
pub fn assign_slots(t: &mut Topology, slots: &[usize], group: GroupId) -> Result<(), AppError> {
    let g = t
        .groups
        .get(&group)
        .ok_or_else(|| AppError::NotFound(format!("unknown group {group}")))?;
    if g.servers.is_empty() {
        return Err(AppError::Conflict(format!(
            "group {group} has no servers: add its master first (shardis server add {group} HOST:PORT)"
        )));
    }
    // Owned slots per current owner, to say exactly which are in the way.
    let mut taken: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for &slot in slots {
        match t.slots.get(slot) {
            None => {
                return Err(AppError::BadRequest(format!(
                    "slot {slot} is out of range 0-{}",
                    t.slots.len().saturating_sub(1)
                )))
            }
            Some(SlotState::Unassigned) => {}
            Some(state) => taken.entry(state.to_string()).or_default().push(slot),
        }
    }
    if !taken.is_empty() {
        let detail: Vec<String> = taken
            .into_iter()
            .map(|(state, slots)| format!("{} ({state})", format_ranges(slots)))
            .collect();
        return Err(AppError::Conflict(format!(
            "slots already assigned: {}; only unassigned slots can be assigned (moving owned \
             slots is a migration); nothing was changed",
            detail.join(", ")
        )));
    }
    for &slot in slots {
        if let Some(s) = t.slots.get_mut(slot) {
            *s = SlotState::Normal { group };
        }
    }
    Ok(())
}

/// Holds every slot the group serves (`normal` → `held`), so that proxies
/// stop sending its requests anywhere. Slots already held for the group (an
/// interrupted promotion) count as held. Returns all of them. Slots
/// migrating to or from the group are refused, unless `failover` (its
/// master is down and a paused migration waits for it): they stay
/// `migrating`, and the new master takes the old one's part in them.
pub fn hold_group(
    t: &mut Topology,
    group: GroupId,
    failover: bool,
) -> Result<Vec<usize>, AppError> {
    group_mut(t, group)?;
    let migrating = format_ranges(
        t.slots
            .iter()
            .enumerate()
            .filter(|(_, s)| {
                matches!(s, SlotState::Migrating { .. }) && s.groups().any(|g| g == group)
            })
            .map(|(i, _)| i),
    );
    if !migrating.is_empty() && !failover {
        return Err(AppError::Conflict(format!(
            "slots {migrating} of group {group} are migrating; a planned switchover waits until \
             the migration ends (a failover, with the master down, is allowed while the \
             migration is paused)"
        )));
    }
    let mut held = Vec::new();
    for (slot, state) in t.slots.iter_mut().enumerate() {
        match *state {
            SlotState::Normal { group: g } | SlotState::Held { group: g } if g == group => {
                *state = SlotState::Held { group };
                held.push(slot);
            }
            _ => {}
        }
    }
    Ok(held)
}

/// Serves `slots` normally again where they are still held for `group`.
pub fn release_slots(t: &mut Topology, group: GroupId, slots: &[usize]) {
    for &slot in slots {
        if let Some(state) = t.slots.get_mut(slot) {
            if *state == (SlotState::Held { group }) {
                *state = SlotState::Normal { group };
            }
        }
    }
}

/// Makes `new_master` the group's master (first server; the old master
/// becomes the first replica) and releases `held`, in one change, so that
/// proxies switch and resume in the same step.
pub fn switch_master(
    t: &mut Topology,
    group: GroupId,
    new_master: &str,
    held: &[usize],
) -> Result<(), AppError> {
    let g = group_mut(t, group)?;
    let Some(at) = g.servers.iter().position(|s| s == new_master) else {
        return Err(AppError::Conflict(format!(
            "server {new_master} is no longer in group {group}"
        )));
    };
    let server = g.servers.remove(at);
    g.servers.insert(0, server);
    release_slots(t, group, held);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardis_topology::Group;

    fn two_groups() -> Topology {
        let mut t = Topology {
            version: 5,
            ..Topology::default()
        };
        for (id, servers) in [(1, vec!["h:1", "h:2"]), (2, vec!["h:3"])] {
            t.groups.insert(
                id,
                Group {
                    id,
                    servers: servers.into_iter().map(String::from).collect(),
                },
            );
        }
        for s in 0..100 {
            t.slots[s] = SlotState::Normal { group: 1 };
        }
        for s in 100..200 {
            t.slots[s] = SlotState::Normal { group: 2 };
        }
        t
    }

    #[test]
    fn addresses() {
        for good in ["127.0.0.1:7001", "redis-1:6380", "[::1]:7001"] {
            check_addr(good).unwrap();
        }
        for bad in [
            "127.0.0.1",
            ":7001",
            "h:0",
            "h:70000",
            "h:x",
            "::1:7001",
            "a b:1",
        ] {
            assert!(
                matches!(check_addr(bad), Err(AppError::BadRequest(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn groups_are_created_once_and_deleted_only_without_slots() {
        let mut t = two_groups();
        create_group(&mut t, 3).unwrap();
        assert!(matches!(
            create_group(&mut t, 3),
            Err(AppError::Conflict(_))
        ));
        assert!(matches!(
            create_group(&mut t, 0),
            Err(AppError::BadRequest(_))
        ));
        let before = t.clone();
        let err = delete_group(&mut t, 1).unwrap_err();
        assert!(err.to_string().contains("0-99"), "{err}");
        assert_eq!(t, before);
        assert!(matches!(
            delete_group(&mut t, 9),
            Err(AppError::NotFound(_))
        ));
        delete_group(&mut t, 3).unwrap();
        assert!(!t.groups.contains_key(&3));
        // A migration target counts as involved.
        t.slots[150] = SlotState::Migrating {
            from: 2,
            to: 1,
            safe: false,
        };
        create_group(&mut t, 4).unwrap();
        t.slots[150] = SlotState::Migrating {
            from: 2,
            to: 4,
            safe: false,
        };
        assert!(matches!(
            delete_group(&mut t, 4),
            Err(AppError::Conflict(_))
        ));
    }

    #[test]
    fn servers_join_one_group_only() {
        let mut t = two_groups();
        add_server(&mut t, 2, "h:4").unwrap();
        assert_eq!(t.groups[&2].servers, vec!["h:3", "h:4"]);
        let err = add_server(&mut t, 2, "h:1").unwrap_err();
        assert!(err.to_string().contains("group 1"), "{err}");
        assert!(matches!(
            add_server(&mut t, 2, "h:4"),
            Err(AppError::Conflict(_))
        ));
        assert!(matches!(
            add_server(&mut t, 7, "h:9"),
            Err(AppError::NotFound(_))
        ));
        assert!(matches!(
            add_server(&mut t, 2, "nope"),
            Err(AppError::BadRequest(_))
        ));
    }

    #[test]
    fn masters_are_not_removed_from_under_their_slots() {
        let mut t = two_groups();
        let before = t.clone();
        let err = remove_server(&mut t, 1, "h:1").unwrap_err();
        assert!(
            err.to_string().contains("promote another server first"),
            "{err}"
        );
        let err = remove_server(&mut t, 2, "h:3").unwrap_err();
        assert!(err.to_string().contains("100-199"), "{err}");
        assert!(matches!(
            remove_server(&mut t, 1, "h:9"),
            Err(AppError::NotFound(_))
        ));
        assert_eq!(t, before);
        remove_server(&mut t, 1, "h:2").unwrap();
        assert_eq!(t.groups[&1].servers, vec!["h:1"]);
        // A master without slots and without replicas may go.
        create_group(&mut t, 3).unwrap();
        add_server(&mut t, 3, "h:5").unwrap();
        remove_server(&mut t, 3, "h:5").unwrap();
        assert!(t.groups[&3].servers.is_empty());
    }

    #[test]
    fn only_unassigned_slots_are_assigned() {
        let mut t = two_groups();
        assign_slots(&mut t, &[200, 201, 500], 2).unwrap();
        assert_eq!(t.ranges_of(2), "100-201,500");
        let before = t.clone();
        let err = assign_slots(&mut t, &[300, 50, 51, 150], 2).unwrap_err();
        assert!(matches!(err, AppError::Conflict(_)));
        assert!(err.to_string().contains("50-51 (normal(1))"), "{err}");
        assert!(err.to_string().contains("150 (normal(2))"), "{err}");
        assert_eq!(t, before, "a refused assignment changes nothing");
        assert!(matches!(
            assign_slots(&mut t, &[300], 9),
            Err(AppError::NotFound(_))
        ));
        create_group(&mut t, 3).unwrap();
        assert!(matches!(
            assign_slots(&mut t, &[300], 3),
            Err(AppError::Conflict(_))
        ));
        assert!(matches!(
            assign_slots(&mut t, &[5000], 2),
            Err(AppError::BadRequest(_))
        ));
    }

    #[test]
    fn hold_switch_release() {
        let mut t = two_groups();
        t.slots[7] = SlotState::Held { group: 1 }; // left by an interrupted promotion
        let held = hold_group(&mut t, 1, false).unwrap();
        assert_eq!(held, (0..100).collect::<Vec<_>>());
        assert!(t.slots[..100]
            .iter()
            .all(|s| *s == SlotState::Held { group: 1 }));
        assert_eq!(t.slots[150], SlotState::Normal { group: 2 });

        let mut rolled_back = t.clone();
        release_slots(&mut rolled_back, 1, &held);
        assert_eq!(rolled_back.slots, two_groups().slots);

        switch_master(&mut t, 1, "h:2", &held).unwrap();
        assert_eq!(t.groups[&1].servers, vec!["h:2", "h:1"]);
        assert_eq!(t.slots, two_groups().slots);
        assert!(matches!(
            switch_master(&mut t, 1, "h:9", &held),
            Err(AppError::Conflict(_))
        ));

        t.slots[150] = SlotState::Migrating {
            from: 2,
            to: 1,
            safe: false,
        };
        assert!(matches!(
            hold_group(&mut t, 1, false),
            Err(AppError::Conflict(_))
        ));
        assert!(matches!(
            hold_group(&mut t, 9, false),
            Err(AppError::NotFound(_))
        ));
    }
}
