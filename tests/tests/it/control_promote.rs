//! Promotion through the API against real processes: a planned switchover
//! under a write load through two proxies loses no acknowledged write; a
//! promotion with a dead master is a failover that says writes may be lost.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::control_common::{assert_api_error, keys_in, setup};

/// What one writer got acknowledged.
#[derive(Default)]
struct Acked {
    /// INCRs acknowledged per counter key.
    incr: BTreeMap<String, i64>,
    /// SETs acknowledged (each key written once, with its value).
    set: Vec<(String, String)>,
    /// Errors and reconnects (not acknowledged, so not counted).
    errors: usize,
}

fn connect(addr: &str) -> redis::Connection {
    let client = redis::Client::open(format!("redis://{addr}/")).unwrap();
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(5))
        .unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    conn
}

/// Writes until `stop`: INCR on a few counters and SETs of unique keys, all
/// in group 1's slots (the group being promoted) and some in group 2's.
fn writer(addr: String, name: String, stop: Arc<AtomicBool>) -> Acked {
    let counters: Vec<String> = keys_in(&format!("ctr:{name}:"), 6, 0..512)
        .into_iter()
        .chain(keys_in(&format!("ctr:{name}:"), 2, 512..1024))
        .collect();
    let mut acked = Acked::default();
    let mut conn = connect(&addr);
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let result = if i & 1 == 0 {
            let key = &counters[(i as usize / 2) % counters.len()];
            redis::cmd("INCR")
                .arg(key)
                .query::<i64>(&mut conn)
                .map(|_| {
                    *acked.incr.entry(key.clone()).or_default() += 1;
                })
        } else {
            let key = format!("set:{name}:{i}");
            let value = format!("v{i}");
            redis::cmd("SET")
                .arg(&key)
                .arg(&value)
                .query::<String>(&mut conn)
                .map(|_| acked.set.push((key, value)))
        };
        if let Err(e) = result {
            acked.errors += 1;
            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                thread::sleep(Duration::from_millis(20));
                conn = connect(&addr);
            }
        }
    }
    acked
}

#[test]
fn promotion_under_load_loses_no_acknowledged_write() {
    let s = setup(&[2, 1], 2, |b| b.barrier_timeout(10));
    let old_master = s.servers(1)[0].addr();
    let replica = s.servers(1)[1].addr();
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..4)
        .map(|w| {
            let addr = s.proxies[w % 2].addr();
            let stop = stop.clone();
            thread::spawn(move || writer(addr, format!("w{w}"), stop))
        })
        .collect();

    thread::sleep(Duration::from_millis(800));
    let started = Instant::now();
    let promoted = s.client().promote(1, &replica).expect("promote");
    let took = started.elapsed();
    thread::sleep(Duration::from_millis(800));
    stop.store(true, Ordering::Relaxed);
    let acked: Vec<Acked> = writers.into_iter().map(|w| w.join().unwrap()).collect();

    assert!(!promoted.failover, "{promoted:?}");
    assert!(promoted.warnings.is_empty(), "{promoted:?}");
    assert!(promoted.lagging.is_empty(), "{promoted:?}");
    assert_eq!(
        (promoted.master.as_str(), promoted.old_master.as_str()),
        (replica.as_str(), old_master.as_str())
    );
    assert!(
        took < Duration::from_secs(10),
        "promotion took {took:?}: {promoted:#?}"
    );

    // The topology and Redis agree on the new roles.
    let stored = s.stored();
    assert_eq!(
        stored.groups[&1].servers,
        vec![replica.clone(), old_master.clone()]
    );
    assert!(
        stored.slots.iter().all(|st| st.name() == "normal"),
        "slots released"
    );
    let new_master = &s.servers(1)[1];
    let old = &s.servers(1)[0];
    let info = new_master
        .conn()
        .reply(&["INFO", "replication"])
        .text()
        .unwrap();
    assert!(info.contains("role:master"), "{info}");
    let info = old.conn().reply(&["INFO", "replication"]).text().unwrap();
    assert!(
        info.contains("role:slave") && info.contains(&format!("master_port:{}", new_master.port())),
        "{info}"
    );

    // No acknowledged write is lost: every acked SET is there, and every
    // counter holds at least its acked INCRs (an unacknowledged one may
    // have been applied too). Read through a proxy and on the new master.
    let (mut sets, mut incrs, mut errors) = (0, 0, 0);
    let mut through = connect(&s.proxies[0].addr());
    for a in &acked {
        errors += a.errors;
        for (key, value) in &a.set {
            let got: Option<String> = redis::cmd("GET").arg(key).query(&mut through).unwrap();
            assert_eq!(
                got.as_deref(),
                Some(value.as_str()),
                "acknowledged SET {key} lost"
            );
            sets += 1;
        }
        for (key, n) in &a.incr {
            let got: i64 = redis::cmd("GET")
                .arg(key)
                .query::<Option<i64>>(&mut through)
                .unwrap()
                .unwrap_or(0);
            assert!(got >= *n, "counter {key}: {got} < {n} acknowledged INCRs");
            incrs += n;
        }
    }
    assert!(
        sets > 100 && incrs > 100,
        "too little load to mean anything: {sets} SETs, {incrs} INCRs"
    );
    // Writes to group 1 after the promotion went to the new master (the old
    // one is its replica now and would refuse them).
    let mut direct = connect(&replica);
    let latest = acked[0].set.last().unwrap();
    let got: Option<String> = redis::cmd("GET").arg(&latest.0).query(&mut direct).unwrap();
    if shardis_topology::slot_of(latest.0.as_bytes()) < 512 {
        assert_eq!(got.as_deref(), Some(latest.1.as_str()));
    }
    let refused = redis::cmd("SET")
        .arg("x")
        .arg("y")
        .query::<String>(&mut connect(&old_master));
    let refused = format!("{:?}", refused.unwrap_err());
    assert!(refused.to_lowercase().contains("read"), "{refused}");
    eprintln!(
        "promotion took {took:?}; {sets} SETs and {incrs} INCRs acknowledged, {errors} errors; steps: {:#?}",
        promoted.steps
    );
}

#[test]
fn promotion_with_a_dead_master_is_a_failover() {
    let s = setup(&[2, 1], 1, |b| b);
    let old_master = &s.servers(1)[0];
    let replica = s.servers(1)[1].addr();
    let key = keys_in("before:", 1, 0..512).remove(0);
    s.proxies[0]
        .conn()
        .expect(&["SET", key.as_str(), "1"], b"+OK\r\n");
    // Replicated before the master dies (a write it had not replicated yet
    // would be lost: that is what the answer warns about).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !s.servers(1)[1].exists(&key) {
        assert!(Instant::now() < deadline, "the replica never got {key}");
        thread::sleep(Duration::from_millis(20));
    }
    old_master.kill();

    let c = s.client();
    // Not a replica of the group: refused before anything happens.
    let before = s.stored();
    assert_api_error(
        c.promote(1, &s.servers(2)[0].addr()),
        409,
        "not a replica of group 1",
    );
    assert_eq!(s.stored(), before);

    let r = c.promote(1, &replica).expect("failover");
    assert!(r.failover, "{r:?}");
    assert!(
        r.warnings.iter().any(|w| w.contains("may be lost")),
        "{r:?}"
    );
    assert_eq!(s.stored().groups[&1].servers[0], replica);
    // Writes to group 1 work again, on the new master.
    let mut conn = s.proxies[0].conn();
    conn.expect(&["SET", "after:1", "x"], b"+OK\r\n");
    let k2 = keys_in("after:", 1, 0..512).remove(0);
    conn.expect(&["SET", k2.as_str(), "x"], b"+OK\r\n");
    assert!(s.servers(1)[1].exists(&k2));
    // What was replicated before the master died survived.
    conn.expect(&["GET", key.as_str()], b"$1\r\n1\r\n");
}
