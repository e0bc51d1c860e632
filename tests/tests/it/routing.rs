//! Keys written through the proxy land on the master of the group that owns
//! their slot (`slot = CRC32(hash tag) % 1024`), and nowhere else.

use shardis_tests::{escape, Cluster};

/// 200 keys: each one is on its owner's master (checked directly, not through
/// the proxy) and on no other master, and reads back through the proxy.
#[test]
fn keys_land_on_the_owning_master() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    let keys: Vec<String> = (0..200).map(|i| format!("route:{i}")).collect();
    for (i, key) in keys.iter().enumerate() {
        conn.expect(&["SET", key.as_str(), &i.to_string()], b"+OK\r\n");
    }

    let mut per_group = std::collections::BTreeMap::new();
    for (i, key) in keys.iter().enumerate() {
        let owner = cluster.owner_of(key);
        *per_group.entry(owner).or_insert(0) += 1;
        let value = i.to_string();
        let expected = format!("${}\r\n{value}\r\n", value.len());
        let got = cluster.group_master(owner).cmd(&["GET", key.as_str()]);
        assert_eq!(
            got,
            expected.as_bytes(),
            "{key} (slot {}) should be on group {owner}'s master, GET there gave {}",
            shardis_topology::slot_of(key.as_bytes()),
            escape(&got)
        );
        for other in cluster.group_ids().into_iter().filter(|&g| g != owner) {
            assert!(
                !cluster.group_master(other).exists(key),
                "{key} is owned by group {owner} but was also written to group {other}"
            );
        }
        conn.expect(&["GET", key.as_str()], expected.as_bytes());
    }
    assert_eq!(
        per_group.len(),
        2,
        "200 keys should spread over both groups: {per_group:?}"
    );
    let total: i64 = cluster
        .group_ids()
        .into_iter()
        .map(|g| cluster.group_master(g).dbsize())
        .sum();
    assert_eq!(total, 200, "exactly the written keys exist on the masters");
}

/// Keys sharing a hash tag share a slot, so they land on the same group as the
/// tag itself, whatever the rest of the key is.
#[test]
fn hash_tags_keep_keys_together() {
    let cluster = Cluster::builder().groups(2).build();
    let mut conn = cluster.proxy(0).conn();
    let mut groups_seen = std::collections::BTreeSet::new();
    for tag in 0..20 {
        let tag = format!("user:{tag}");
        let owner = cluster.owner_of(&tag);
        groups_seen.insert(owner);
        for suffix in ["name", "email", "followers", "{x}", ""] {
            let key = format!("{{{tag}}}:{suffix}");
            assert_eq!(cluster.owner_of(&key), owner);
            conn.expect(&["SET", key.as_str(), "v"], b"+OK\r\n");
            assert!(
                cluster.group_master(owner).exists(&key),
                "{key} should be on group {owner} with its tag {tag:?}"
            );
        }
        // A multi-key command on the tag works because all keys are in one slot.
        let name = format!("{{{tag}}}:name");
        let email = format!("{{{tag}}}:email");
        conn.expect(&["RENAME", name.as_str(), email.as_str()], b"+OK\r\n");
        assert!(!cluster.group_master(owner).exists(&name));
        conn.expect(&["GET", email.as_str()], b"$1\r\nv\r\n");
    }
    assert_eq!(
        groups_seen.len(),
        2,
        "20 tags should spread over both groups"
    );
}

/// Four groups with a replica each: writes go to masters only (a replica would
/// refuse them with READONLY), and replicas receive them by replication.
#[test]
fn four_groups_with_replicas() {
    let cluster = Cluster::builder().groups(4).replicas(1).build();
    let mut conn = cluster.proxy(0).conn();
    let keys: Vec<String> = (0..100).map(|i| format!("four:{i}")).collect();
    for key in &keys {
        conn.expect(&["SET", key.as_str(), "x"], b"+OK\r\n");
    }
    let mut seen = std::collections::BTreeSet::new();
    for key in &keys {
        let owner = cluster.owner_of(key);
        seen.insert(owner);
        assert!(
            cluster.group_master(owner).exists(key),
            "{key} not on group {owner}'s master"
        );
    }
    assert_eq!(seen.len(), 4, "100 keys should reach all four groups");
    // Replication is asynchronous: wait for each replica to catch up.
    for id in cluster.group_ids() {
        let master_keys = cluster.group_master(id).dbsize();
        let replica = &cluster.group_servers(id)[1];
        let synced = shardis_tests::poll_until(std::time::Duration::from_secs(5), || {
            (replica.dbsize() == master_keys).then_some(())
        });
        assert!(
            synced.is_some(),
            "group {id}'s replica did not catch up with its master"
        );
    }
}

/// The `redis` crate (what Rust applications use) works through the proxy,
/// including its connection handshake and pipelines.
#[test]
fn redis_crate_client_works() {
    let cluster = Cluster::builder().groups(2).build();
    let mut client = cluster.proxy(0).client();
    let keys: Vec<String> = (0..50).map(|i| format!("crate:{i}")).collect();
    let mut pipe = redis::pipe();
    for (i, k) in keys.iter().enumerate() {
        pipe.set(k, i).ignore();
    }
    pipe.mget(&keys);
    let (values,): (Vec<usize>,) = pipe.query(&mut client).expect("pipeline through the proxy");
    assert_eq!(values, (0..50).collect::<Vec<_>>());
    let n: usize = redis::cmd("DEL").arg(&keys).query(&mut client).unwrap();
    assert_eq!(n, 50);
    let exists: usize = redis::cmd("EXISTS").arg(&keys).query(&mut client).unwrap();
    assert_eq!(exists, 0);
}
