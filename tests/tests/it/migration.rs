//! Online slot migration against real etcd, redis-servers, proxies and
//! dashboards: writers push counters and list appends through two proxies
//! while every slot moves between groups, and afterwards every
//! acknowledged write is there — also when the dashboard is SIGKILLed
//! mid-migration (a standby resumes it), when a proxy is SIGKILLed, and
//! when a proxy is frozen past its lease during the hold barrier.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::control_common::{assert_api_error, setup, Setup};
use shardis_dashboard::api::{CreateMigration, MigrationView, SetRate};
use shardis_dashboard::client::Client;
use shardis_tests::dashboard::DashboardProcess;
use shardis_tests::RedisServer;
use shardis_topology::{slot_of, GroupId, SlotState};

// ---------------------------------------------------------------------------
// The load: counters and lists, with every attempt accounted for
// ---------------------------------------------------------------------------

/// What one writer saw: per counter, increments acknowledged and attempts
/// that failed (they may or may not have happened); per list, the elements
/// pushed with whether each was acknowledged.
#[derive(Default)]
struct WriterLog {
    counters: HashMap<String, (u64, u64)>,
    lists: HashMap<String, Vec<(u64, bool)>>,
    errors: Vec<String>,
    /// Reads of the writer's own keys that missed an acknowledged write (or
    /// saw more than was attempted).
    stale: Vec<String>,
    reads: u64,
}

struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    writers: Vec<JoinHandle<WriterLog>>,
}

fn connect(addr: &str) -> Option<redis::Connection> {
    let client = redis::Client::open(format!("redis://{addr}/?protocol=resp2")).ok()?;
    let conn = client
        .get_connection_with_timeout(Duration::from_secs(2))
        .ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    conn.set_write_timeout(Some(Duration::from_secs(5))).ok()?;
    Some(conn)
}

/// `writers` threads, each over its own keys, rotating to the next proxy
/// when its proxy fails.
fn start_load(proxies: Vec<String>, writers: usize) -> Load {
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(AtomicU64::new(0));
    let handles = (0..writers)
        .map(|w| {
            let stop = stop.clone();
            let acked = acked.clone();
            let proxies = proxies.clone();
            std::thread::spawn(move || {
                let mut log = WriterLog::default();
                let mut which = w % proxies.len();
                let mut conn: Option<redis::Connection> = None;
                let mut seq: u64 = 0;
                let mut rng = 0x9e37_79b9_7f4a_7c15u64 ^ (w as u64 + 1);
                while !stop.load(Ordering::Relaxed) {
                    rng ^= rng << 13;
                    rng ^= rng >> 7;
                    rng ^= rng << 17;
                    let Some(c) = conn.as_mut() else {
                        conn = connect(&proxies[which]);
                        if conn.is_none() {
                            which = (which + 1) % proxies.len();
                            std::thread::sleep(Duration::from_millis(20));
                        }
                        continue;
                    };
                    let is_list = rng.is_multiple_of(4);
                    let is_read = rng % 4 == 1;
                    let result = if is_read {
                        // A read of one of this writer's own keys, which
                        // only it writes: it must show every acknowledged
                        // write so far (reads in a migrating slot may be
                        // answered by the source, or after a move).
                        let n = (rng >> 8) % 40;
                        let (key, range) = if rng & (1 << 40) == 0 {
                            let key = format!("ctr:{w}:{n}");
                            let (ok, failed) = log.counters.get(&key).copied().unwrap_or_default();
                            (key, (ok, ok + failed))
                        } else {
                            let key = format!("list:{w}:{n}");
                            let (ok, all) = log.lists.get(&key).map_or((0, 0), |l| {
                                (
                                    l.iter().filter(|(_, ok)| *ok).count() as u64,
                                    l.len() as u64,
                                )
                            });
                            (key, (ok, all))
                        };
                        let cmd = if key.starts_with("ctr:") {
                            "GET"
                        } else {
                            "LLEN"
                        };
                        let r = redis::cmd(cmd).arg(&key).query::<Option<u64>>(c);
                        if let Ok(v) = &r {
                            log.reads += 1;
                            let v = v.unwrap_or(0);
                            if v < range.0 || v > range.1 {
                                log.stale.push(format!(
                                    "{cmd} {key} = {v}, expected {}..={}",
                                    range.0, range.1
                                ));
                            }
                        }
                        r.map(|_| ())
                    } else if is_list {
                        let key = format!("list:{w}:{}", (rng >> 8) % 40);
                        seq += 1;
                        let r = redis::cmd("RPUSH").arg(&key).arg(seq).query::<i64>(c);
                        log.lists.entry(key).or_default().push((seq, r.is_ok()));
                        r.map(|_| ())
                    } else {
                        let key = format!("ctr:{w}:{}", (rng >> 8) % 200);
                        let r = redis::cmd("INCR").arg(&key).query::<i64>(c);
                        let e = log.counters.entry(key).or_default();
                        if r.is_ok() {
                            e.0 += 1;
                        } else {
                            e.1 += 1;
                        }
                        r.map(|_| ())
                    };
                    match result {
                        Ok(()) => {
                            acked.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            if log.errors.len() < 50 {
                                log.errors.push(e.to_string());
                            }
                            if e.is_io_error() || e.is_connection_dropped() || e.is_timeout() {
                                conn = None;
                                which = (which + 1) % proxies.len();
                            } else {
                                std::thread::sleep(Duration::from_millis(5));
                            }
                        }
                    }
                }
                log
            })
        })
        .collect();
    Load {
        stop,
        acked,
        writers: handles,
    }
}

impl Load {
    fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` more writes were acknowledged.
    fn wait_progress(&self, n: u64) {
        let start = self.acked();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.acked() < start + n {
            assert!(Instant::now() < deadline, "the load made no progress");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn finish(self) -> Vec<WriterLog> {
        self.stop.store(true, Ordering::Relaxed);
        self.writers
            .into_iter()
            .map(|h| h.join().expect("writer thread"))
            .collect()
    }
}

/// Checks every write against what the cluster holds now, read through
/// `proxy`: counters within [acked, acked + failed], lists holding every
/// acknowledged element in order. Also checks that no key is left on a
/// group that does not own its slot.
fn verify(s: &Setup, proxy: &str, logs: &[WriterLog]) {
    let stale: Vec<&String> = logs.iter().flat_map(|l| &l.stale).collect();
    assert!(stale.is_empty(), "stale reads during the load: {stale:?}");
    assert!(
        logs.iter().map(|l| l.reads).sum::<u64>() > 0,
        "the load read nothing"
    );
    let mut conn = connect(proxy).expect("connect for verification");
    let (mut counters, mut lists, mut acked, mut failed) = (0, 0, 0, 0);
    for log in logs {
        for (key, (ok, bad)) in &log.counters {
            let value: Option<u64> = redis::cmd("GET").arg(key).query(&mut conn).unwrap();
            let value = value.unwrap_or(0);
            assert!(
                *ok <= value && value <= ok + bad,
                "counter {key}: {value} but {ok} increments acknowledged and {bad} failed"
            );
            counters += 1;
            acked += ok;
            failed += bad;
        }
        for (key, pushes) in &log.lists {
            let got: Vec<u64> = redis::cmd("LRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .query(&mut conn)
                .unwrap();
            let pushed: std::collections::HashSet<u64> = pushes.iter().map(|p| p.0).collect();
            for v in &got {
                assert!(pushed.contains(v), "list {key} holds {v}, never pushed");
            }
            let acked_in_order: Vec<u64> = pushes.iter().filter(|p| p.1).map(|p| p.0).collect();
            let present: Vec<u64> = got
                .iter()
                .copied()
                .filter(|v| acked_in_order.binary_search(v).is_ok())
                .collect();
            assert_eq!(
                present, acked_in_order,
                "list {key} lost or reordered acknowledged elements"
            );
            lists += 1;
            acked += acked_in_order.len() as u64;
            failed += (pushes.len() - acked_in_order.len()) as u64;
        }
    }
    // Every key lives only on the group that owns its slot.
    let t = s.stored();
    for (group, servers) in &s.groups {
        let master = &servers[0];
        let mut c = master.client();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut c).unwrap();
        for key in keys {
            let slot = usize::from(slot_of(&key));
            assert_eq!(
                t.slots[slot],
                SlotState::Normal { group: *group },
                "key {:?} (slot {slot}) is on group {group}",
                String::from_utf8_lossy(&key)
            );
        }
    }
    eprintln!(
        "verified {counters} counters and {lists} lists: {acked} acknowledged writes, {failed} \
         failed attempts"
    );
    assert!(acked > 0);
}

/// `n` filler keys (100-byte values) through `proxy`, so that migrations
/// have real work while the writers run; checked again by [`check_fill`].
pub(crate) fn fill(proxy: &str, n: usize) {
    let mut conn = connect(proxy).expect("connect to fill");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("SET")
                .arg(format!("fill:{i}"))
                .arg(format!("{i:0100}"))
                .ignore();
        }
        pipe.query::<()>(&mut conn).expect("fill");
    }
}

fn check_fill(proxy: &str, n: usize) {
    let mut conn = connect(proxy).expect("connect to check");
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut pipe = redis::pipe();
        for i in chunk {
            pipe.cmd("GET").arg(format!("fill:{i}"));
        }
        let got: Vec<Option<String>> = pipe.query(&mut conn).expect("read fill");
        for (i, v) in chunk.iter().zip(got) {
            assert_eq!(v, Some(format!("{i:0100}")), "fill:{i}");
        }
    }
}

// ---------------------------------------------------------------------------
// Driving migrations
// ---------------------------------------------------------------------------

/// Fills the hash `key` with `fields` fields `f0…` of 100-byte values.
fn fill_hash(conn: &mut redis::Connection, key: &str, fields: usize) {
    let value = "v".repeat(100);
    for chunk in 0..fields.div_ceil(1000) {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..((chunk + 1) * 1000).min(fields) {
            pipe.cmd("HSET")
                .arg(key)
                .arg(format!("f{i}"))
                .arg(&value)
                .ignore();
        }
        pipe.query::<()>(conn).unwrap();
    }
}

fn migrate(c: &Client, slots: &str, to: GroupId, wave_size: usize) -> MigrationView {
    c.create_migration(&CreateMigration {
        slots: slots.into(),
        to_group: to,
        wave_size: Some(wave_size),
        keys_per_sec: None,
        bytes_per_sec: None,
        safe: None,
    })
    .unwrap_or_else(|e| panic!("start migration of {slots} to {to}: {e}"))
}

/// A request with every option left to its default.
pub(crate) fn plain(slots: &str, to: GroupId) -> CreateMigration {
    CreateMigration {
        slots: slots.into(),
        to_group: to,
        wave_size: None,
        keys_per_sec: None,
        bytes_per_sec: None,
        safe: None,
    }
}

/// The migration's reason names `proxy` (a barrier waits on it).
fn reason_names(m: &MigrationView, proxy: &str) -> bool {
    m.reason.as_deref().is_some_and(|r| r.contains(proxy))
}

/// Waits (10 s at most) until a barrier of the migration waits on `proxy`.
fn wait_waiting_on(c: &Client, id: u64, proxy: &str) -> MigrationView {
    wait_for(
        c,
        id,
        Duration::from_secs(10),
        "waiting on the frozen proxy",
        |m| reason_names(m, proxy),
    )
}

/// Polls until `done(m)` or the time is up (then panics with the state).
fn wait_for(
    c: &Client,
    id: u64,
    within: Duration,
    what: &str,
    done: impl Fn(&MigrationView) -> bool,
) -> MigrationView {
    let deadline = Instant::now() + within;
    let mut last = None;
    while Instant::now() < deadline {
        if let Ok(m) = c.migration(id) {
            if done(&m) {
                return m;
            }
            assert_ne!(m.state, "failed", "migration {id} failed: {m:#?}");
            last = Some(m);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("migration {id}: {what} did not happen within {within:?}: {last:#?}");
}

pub(crate) fn wait_finished(c: &Client, id: u64, within: Duration) -> MigrationView {
    wait_for(c, id, within, "finishing", |m| m.state == "finished")
}

fn proxy_addrs(s: &Setup) -> Vec<String> {
    s.proxies.iter().map(|p| p.addr()).collect()
}

fn all_slots_of(s: &Setup, group: GroupId) -> bool {
    s.stored()
        .slots
        .iter()
        .all(|st| *st == SlotState::Normal { group })
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[test]
fn every_slot_moves_there_and_back_under_load_without_losing_a_write() {
    let s = setup(&[1, 1], 2, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 30_000);
    let load = start_load(proxy_addrs(&s), 6);
    load.wait_progress(500);

    // Group 1's half to group 2, then all 1024 slots to group 1 and back.
    let m = migrate(&c, "0-511", 2, 128);
    let m = wait_finished(&c, m.id, Duration::from_secs(60));
    assert_eq!(m.slots_done, 512);
    assert!(all_slots_of(&s, 2));
    load.wait_progress(300);
    let m = migrate(&c, "0-1023", 1, 256);
    let m = wait_finished(&c, m.id, Duration::from_secs(60));
    assert_eq!((m.slots_done, m.slots_total), (1024, 1024));
    assert!(m.keys_moved > 0, "{m:#?}");
    assert!(all_slots_of(&s, 1));
    load.wait_progress(300);
    let m = migrate(&c, "0-1023", 2, 1024);
    wait_finished(&c, m.id, Duration::from_secs(60));
    assert!(all_slots_of(&s, 2));
    load.wait_progress(300);

    let logs = load.finish();
    verify(&s, &s.proxies[0].addr(), &logs);
    check_fill(&s.proxies[1].addr(), 30_000);
    // The migration list shows all three, newest first.
    let all = c.migrations().unwrap();
    assert_eq!(
        all.iter().map(|m| m.id).collect::<Vec<_>>(),
        vec![m.id, m.id - 1, m.id - 2]
    );
}

/// A wave's slots end one by one: each becomes `normal` on the target as
/// soon as its last key moved, while the rest of the wave still moves, and
/// never while a key of it is still on the source.
#[test]
fn slots_of_a_wave_end_one_by_one_once_their_keys_moved() {
    let s = setup(&[1, 1], 2, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 20_000);
    let load = start_load(proxy_addrs(&s), 4);
    load.wait_progress(300);

    // One wave of 512 slots (about 10,000 keys), moved at 4,000 keys/s.
    let m = c
        .create_migration(&CreateMigration {
            wave_size: Some(512),
            keys_per_sec: Some(4000),
            ..plain("0-511", 2)
        })
        .unwrap();
    let source = &s.servers(1)[0];
    let mut seen_mid_wave = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let now = c.migration(m.id).unwrap();
        assert_ne!(now.state, "failed", "{now:#?}");
        let slots = s.stored().slots;
        let ended: Vec<usize> = (0..512)
            .filter(|&i| slots[i] == SlotState::Normal { group: 2 })
            .collect();
        let migrating = (0..512)
            .filter(|&i| matches!(slots[i], SlotState::Migrating { .. }))
            .count();
        // No key of an ended slot is left on the source.
        let keys: Vec<String> = (0..20_000)
            .map(|i| format!("fill:{i}"))
            .filter(|k| slots[usize::from(slot_of(k.as_bytes()))] == SlotState::Normal { group: 2 })
            .collect();
        for chunk in keys.chunks(500) {
            let mut args = vec!["EXISTS"];
            args.extend(chunk.iter().map(String::as_str));
            assert_eq!(
                source.cmd(&args),
                b":0\r\n",
                "keys of ended slots are still on the source"
            );
        }
        if !ended.is_empty() && migrating > 0 {
            // Slot after slot, lowest first.
            assert!(ended.iter().enumerate().all(|(i, &s)| i == s), "{ended:?}");
            seen_mid_wave = true;
        }
        if now.state == "finished" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(seen_mid_wave, "no slot ended before the rest of its wave");
    let m = wait_finished(&c, m.id, Duration::from_secs(30));
    assert_eq!(m.slots_done, 512);
    assert!((0..512).all(|i| s.stored().slots[i] == SlotState::Normal { group: 2 }));
    let logs = load.finish();
    verify(&s, &s.proxies[0].addr(), &logs);
    check_fill(&s.proxies[1].addr(), 20_000);
}

/// A dashboard that may keep no key names (`--mover-memory-mib 0`, as past
/// the limit on a huge wave): the mover moves each key as its scan finds
/// it, and the slots of the wave end together once the scan is over and
/// every key moved; nothing is lost.
#[test]
fn a_mover_without_memory_for_key_names_moves_keys_as_the_scan_finds_them() {
    let s = setup(&[1, 1], 2, |d| d.arg("--mover-memory-mib").arg("0"));
    let c = s.client();
    fill(&s.proxies[0].addr(), 20_000);
    let load = start_load(proxy_addrs(&s), 4);
    load.wait_progress(300);

    // One wave of 512 slots (about 10,000 keys), moved at 4,000 keys/s.
    let m = c
        .create_migration(&CreateMigration {
            wave_size: Some(512),
            keys_per_sec: Some(4000),
            ..plain("0-511", 2)
        })
        .unwrap();
    let mut moved_mid_wave = false;
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        let now = c.migration(m.id).unwrap();
        assert_ne!(now.state, "failed", "{now:#?}");
        let slots = s.stored().slots;
        let ended = (0..512)
            .filter(|&i| slots[i] == SlotState::Normal { group: 2 })
            .count();
        let migrating = (0..512)
            .filter(|&i| matches!(slots[i], SlotState::Migrating { .. }))
            .count();
        assert!(
            ended == 0 || ended == 512,
            "{ended} slots ended before the rest of their wave"
        );
        if migrating == 512 && now.keys_moved >= 2000 {
            moved_mid_wave = true;
        }
        if now.state == "finished" {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(moved_mid_wave, "keys did not move while the scan ran");
    let m = wait_finished(&c, m.id, Duration::from_secs(30));
    assert_eq!(m.slots_done, 512);
    assert!((0..512).all(|i| s.stored().slots[i] == SlotState::Normal { group: 2 }));
    let logs = load.finish();
    verify(&s, &s.proxies[0].addr(), &logs);
    check_fill(&s.proxies[1].addr(), 20_000);
}

#[test]
fn a_standby_dashboard_resumes_a_migration_when_the_leader_is_killed() {
    let s = setup(&[1, 1], 2, |d| d.lease_ttl(2));
    let standby = DashboardProcess::builder(&s.etcd.endpoint(), &s.cluster)
        .lease_ttl(2)
        .start();
    let c = s.client();
    fill(&s.proxies[0].addr(), 20_000);
    let load = start_load(proxy_addrs(&s), 4);
    load.wait_progress(500);

    // Small waves and a rate limit, so that the kill lands mid-migration.
    let m = c
        .create_migration(&CreateMigration {
            slots: "0-511".into(),
            to_group: 2,
            wave_size: Some(16),
            keys_per_sec: Some(3000),
            bytes_per_sec: None,
            safe: None,
        })
        .unwrap();
    wait_for(&c, m.id, Duration::from_secs(30), "a few waves", |m| {
        m.slots_done >= 64
    });
    s.dash.kill();
    let sc = standby.client();
    // The standby takes over and carries on; lift the rate limit then.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sc.set_migration_rate(
            m.id,
            &SetRate {
                keys_per_sec: Some(0),
                bytes_per_sec: None,
            },
        ) {
            Ok(_) => break,
            Err(e) => {
                assert!(Instant::now() < deadline, "the standby never led: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    let done = wait_finished(&sc, m.id, Duration::from_secs(60));
    assert_eq!(done.slots_done, 512);
    assert!(all_slots_of(&s, 2));
    load.wait_progress(300);
    let logs = load.finish();
    verify(&s, &s.proxies[0].addr(), &logs);
    check_fill(&s.proxies[0].addr(), 20_000);
}

#[test]
fn a_proxy_killed_mid_migration_loses_no_acknowledged_write() {
    let s = setup(&[1, 1], 2, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 20_000);
    let load = start_load(proxy_addrs(&s), 4);
    load.wait_progress(500);
    let m = migrate(&c, "0-511", 2, 32);
    wait_for(&c, m.id, Duration::from_secs(30), "a few waves", |m| {
        m.slots_done >= 64
    });
    s.proxies[1].kill();
    // Its lease (30 s in this setup) keeps the next hold barrier waiting
    // until it expires; the migration says so meanwhile.
    let waiting = wait_for(&c, m.id, Duration::from_secs(20), "a visible reason", |m| {
        reason_names(m, s.proxies[1].id()) || m.state == "finished"
    });
    eprintln!("while the killed proxy's lease lives: {:?}", waiting.reason);
    wait_finished(&c, m.id, Duration::from_secs(90));
    load.wait_progress(300);
    let logs = load.finish();
    verify(&s, &s.proxies[0].addr(), &logs);
    check_fill(&s.proxies[0].addr(), 20_000);
}

#[test]
fn a_proxy_frozen_past_its_lease_during_the_hold_barrier_loses_nothing() {
    let mut s = setup(&[1, 1], 0, |d| d);
    for _ in 0..2 {
        let p = s.proxy_builder().lease_ttl(3).start();
        s.proxies.push(p);
    }
    let c = s.client();
    fill(&s.proxies[0].addr(), 20_000);
    let load = start_load(proxy_addrs(&s), 4);
    load.wait_progress(500);
    // Frozen before the migration starts: it cannot confirm the hold.
    s.proxies[1].pause();
    let frozen_at = Instant::now();
    let m = migrate(&c, "0-1023", 1, 1024);
    wait_waiting_on(&c, m.id, s.proxies[1].id());
    // Past its lease (3 s) and etcd's expiry check: the wave went on.
    let done = wait_finished(&c, m.id, Duration::from_secs(60));
    assert_eq!(done.slots_done, 512);
    std::thread::sleep(Duration::from_secs(6).saturating_sub(frozen_at.elapsed()));
    s.proxies[1].resume();
    // It registers again and serves the new topology.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(mut conn) = connect(&s.proxies[1].addr()) {
            if redis::cmd("SET")
                .arg("after-resume")
                .arg("1")
                .query::<()>(&mut conn)
                .is_ok()
            {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the resumed proxy never served again"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    load.wait_progress(300);
    let logs = load.finish();
    verify(&s, &s.proxies[0].addr(), &logs);
    check_fill(&s.proxies[1].addr(), 20_000);
}

#[test]
fn pause_resume_rate_and_stop_leave_every_slot_on_one_group() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    // 3,000 keys in group 1's slots.
    let mut conn = connect(&s.proxies[0].addr()).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..3000 {
        pipe.cmd("SET").arg(format!("k{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
    let before: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();

    let m = c
        .create_migration(&CreateMigration {
            slots: "0-511".into(),
            to_group: 2,
            wave_size: Some(64),
            keys_per_sec: Some(500),
            bytes_per_sec: None,
            safe: None,
        })
        .unwrap();
    // Rate limited: after ~2 s, about 1,000 keys moved, far from all.
    let running = wait_for(&c, m.id, Duration::from_secs(10), "moving keys", |m| {
        m.keys_moved >= 300
    });
    assert_eq!(running.keys_per_sec_limit, 500);
    std::thread::sleep(Duration::from_secs(1));
    let m1 = c.migration(m.id).unwrap();
    assert!(
        m1.keys_per_sec < 1000.0,
        "rate limit of 500 keys/s not kept: {m1:#?}"
    );
    // Pause: keys stop moving.
    let paused = c.steer_migration(m.id, "pause").unwrap();
    assert_eq!(paused.state, "paused");
    std::thread::sleep(Duration::from_millis(500));
    let a = c.migration(m.id).unwrap().keys_moved;
    std::thread::sleep(Duration::from_secs(1));
    let b = c.migration(m.id).unwrap().keys_moved;
    assert_eq!(a, b, "keys moved while paused");
    // Every key is still readable while paused (a wave may be migrating).
    for i in (0..3000).step_by(97) {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(v, Some(i));
    }
    // Resume, then stop: the wave in flight completes, the rest stays.
    c.steer_migration(m.id, "resume").unwrap();
    wait_for(&c, m.id, Duration::from_secs(10), "running again", |m| {
        m.state == "running"
    });
    let stopped = c.steer_migration(m.id, "stop").unwrap();
    assert!(stopped.stop_requested);
    let end = wait_for(&c, m.id, Duration::from_secs(60), "stopping", |m| {
        m.state == "stopped"
    });
    assert!(end.slots_done < 512, "{end:#?}");
    let t = s.stored();
    for (slot, st) in t.slots.iter().enumerate() {
        assert!(
            matches!(st, SlotState::Normal { .. }),
            "slot {slot} is {st} after the stop"
        );
    }
    let after: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(before, after);
    for i in 0..3000 {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("k{i}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(v, Some(i), "k{i}");
    }
    // A stopped migration cannot be resumed; a new one finishes the job.
    assert_api_error(c.steer_migration(m.id, "resume"), 409, "stopped");
    let rest = migrate(&c, "0-511", 2, 512);
    wait_finished(&c, rest.id, Duration::from_secs(60));
    assert!(all_slots_of(&s, 2));
    let after: u64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
    assert_eq!(before, after);
}

#[test]
fn a_target_holding_keys_of_a_moving_slot_is_refused_before_anything_moves() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    // A stray key of slot 5 directly on group 2's master.
    let stray = shardis_tests::key_in_slot("stray", 5);
    let target: &RedisServer = &s.servers(2)[0];
    target.cmd(&["SET", stray.as_str(), "x"]);
    let version = s.stored().version;
    assert_api_error(c.create_migration(&plain("0-100", 2)), 409, &stray);
    assert_eq!(s.stored().version, version, "nothing may change");
    assert!(c.migrations().unwrap().is_empty());
    // A target "master" that is a replica on the server itself.
    let source: &RedisServer = &s.servers(1)[0];
    let port = source.port().to_string();
    target.cmd(&["REPLICAOF", "127.0.0.1", port.as_str()]);
    assert_api_error(
        c.create_migration(&plain("100-200", 2)),
        409,
        "is a replica",
    );
    target.cmd(&["REPLICAOF", "NO", "ONE"]);
    // The replica's full sync emptied it; the stray key comes back.
    target.cmd(&["SET", stray.as_str(), "x"]);
    assert_eq!(s.stored().version, version, "nothing may change");
    // Bad requests.
    assert_api_error(
        c.create_migration(&plain("0-100", 9)),
        404,
        "unknown group 9",
    );
    assert_api_error(
        c.create_migration(&plain("600-700", 2)),
        409,
        "nothing to move",
    );
    // Slots without the stray key move fine.
    let m = migrate(&c, "100-200", 2, 128);
    wait_finished(&c, m.id, Duration::from_secs(30));
}

#[test]
fn rebalance_from_two_to_three_groups_and_back_keeps_the_data() {
    let s = setup(&[1, 1, 1], 1, |d| d);
    let c = s.client();
    // Start with everything on groups 1 and 2.
    let m = migrate(&c, "683-1023", 1, 1024);
    wait_finished(&c, m.id, Duration::from_secs(30));
    let mut conn = connect(&s.proxies[0].addr()).unwrap();
    let mut pipe = redis::pipe();
    for i in 0..5000 {
        pipe.cmd("SET").arg(format!("r{i}")).arg(i).ignore();
    }
    pipe.query::<()>(&mut conn).unwrap();
    // Only groups 1 and 2 first: 512 each.
    let r = c.rebalance(false, Some(&[1, 2])).unwrap();
    for id in &r.migrations {
        wait_finished(&c, *id, Duration::from_secs(60));
    }
    let count = |g: GroupId| {
        s.stored()
            .slots
            .iter()
            .filter(|st| **st == SlotState::Normal { group: g })
            .count()
    };
    assert_eq!((count(1), count(2), count(3)), (512, 512, 0));

    let plan = c.rebalance(true, None).unwrap();
    assert!(plan.dry_run && plan.migrations.is_empty());
    assert_eq!(plan.moves.iter().map(|m| m.count).sum::<usize>(), 341);
    let r = c.rebalance(false, None).unwrap();
    for id in &r.migrations {
        wait_finished(&c, *id, Duration::from_secs(60));
    }
    let counts = [count(1), count(2), count(3)];
    assert!(
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1,
        "{counts:?}"
    );
    let r = c.rebalance(false, Some(&[1, 2])).unwrap();
    for id in &r.migrations {
        wait_finished(&c, *id, Duration::from_secs(60));
    }
    assert_eq!((count(1), count(2), count(3)), (512, 512, 0));
    for i in 0..5000 {
        let v: Option<i64> = redis::cmd("GET")
            .arg(format!("r{i}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(v, Some(i), "r{i}");
    }
    assert_eq!(s.servers(3)[0].dbsize(), 0);
}

#[test]
fn big_keys_move_in_chunks_with_their_ttl_and_contents() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    let mut conn = connect(&s.proxies[0].addr()).unwrap();
    let value = "v".repeat(100);
    // Over 8 MiB each: a hash (with a TTL), a set, a sorted set, a list, a
    // string; all in group 1's slots.
    let keys = shardis_tests::keys_where("big", 5, |slot| slot < 512);
    let (h, st, z, l, sg) = (&keys[0], &keys[1], &keys[2], &keys[3], &keys[4]);
    for chunk in 0..100 {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            pipe.cmd("HSET")
                .arg(h)
                .arg(format!("f{i}"))
                .arg(&value)
                .ignore();
            pipe.cmd("SADD").arg(st).arg(format!("{value}{i}")).ignore();
            pipe.cmd("ZADD")
                .arg(z)
                .arg(i as f64 / 7.0)
                .arg(format!("{value}{i}"))
                .ignore();
            pipe.cmd("RPUSH").arg(l).arg(format!("{value}{i}")).ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
    }
    let big_string = "s".repeat(9 << 20);
    redis::cmd("SET")
        .arg(sg)
        .arg(&big_string)
        .query::<()>(&mut conn)
        .unwrap();
    redis::cmd("EXPIRE")
        .arg(h)
        .arg(3600)
        .query::<()>(&mut conn)
        .unwrap();
    let snapshot = |conn: &mut redis::Connection| {
        let hash: std::collections::BTreeMap<String, String> =
            redis::cmd("HGETALL").arg(h).query(conn).unwrap();
        let mut set: Vec<String> = redis::cmd("SMEMBERS").arg(st).query(conn).unwrap();
        set.sort();
        let zset: Vec<(String, f64)> = redis::cmd("ZRANGE")
            .arg(z)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)
            .unwrap();
        let list: Vec<String> = redis::cmd("LRANGE")
            .arg(l)
            .arg(0)
            .arg(-1)
            .query(conn)
            .unwrap();
        let string: String = redis::cmd("GET").arg(sg).query(conn).unwrap();
        (hash, set, zset, list, string)
    };
    let before = snapshot(&mut conn);
    assert_eq!(before.0.len(), 100_000);

    // Waves of 128: the first wave's big keys are looked for by a scan of
    // their own, the later waves' by the scan of the wave before them.
    assert!(
        keys.iter().any(|k| slot_of(k.as_bytes()) >= 128),
        "every big key is in the first wave"
    );
    let m = migrate(&c, "0-511", 2, 128);
    wait_finished(&c, m.id, Duration::from_secs(90));
    let log = s.dash.stderr_tail(400);
    assert!(
        log.matches("big key copied in chunks").count() >= 5,
        "the big keys were not copied in chunks:\n{log}"
    );
    assert_eq!(
        log.matches("looked for big keys").count(),
        1,
        "only the first wave scans for its big keys:\n{log}"
    );
    assert!(
        !log.contains("big_keys=1") && !log.contains("big_keys=2"),
        "a big key was found only by the mover, not before its wave:\n{log}"
    );
    let after = snapshot(&mut conn);
    assert!(before == after, "contents changed in the move");
    let ttl: i64 = redis::cmd("TTL").arg(h).query(&mut conn).unwrap();
    assert!((3500..=3600).contains(&ttl), "TTL {ttl}");
    let ttl: i64 = redis::cmd("TTL").arg(sg).query(&mut conn).unwrap();
    assert_eq!(ttl, -1);
    // Nothing left behind: no key on group 1, no temporary copy on group 2.
    assert_eq!(s.servers(1)[0].dbsize(), 0);
    assert_eq!(s.servers(2)[0].dbsize(), 5);
}

/// While a big key is copied in chunks only that key is held: the other
/// keys of its slot are read and written as usual meanwhile, and a request
/// for the big key itself waits and then sees it whole on the target.
#[test]
fn a_big_key_being_copied_holds_only_that_key() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    let proxy = s.proxies[0].addr();
    let mut conn = connect(&proxy).unwrap();
    let big = shardis_tests::keys_where("bighold", 1, |slot| slot < 512).remove(0);
    let slot = slot_of(big.as_bytes());
    let tag = shardis_tests::tag_in_slot(usize::from(slot));
    let small: Vec<String> = (0..20).map(|i| format!("{{{tag}}}small{i}")).collect();
    fill_hash(&mut conn, &big, 300_000);
    for k in &small {
        redis::cmd("SET")
            .arg(k)
            .arg(0)
            .query::<()>(&mut conn)
            .unwrap();
    }

    // Clients of the slot's small keys: INCR each in turn, timing every
    // request, and noting whether the big key was held at that moment.
    let done = Arc::new(AtomicBool::new(false));
    let client = {
        let (done, small, proxy) = (done.clone(), small.clone(), proxy.clone());
        std::thread::spawn(move || {
            let mut conn = connect(&proxy).unwrap();
            let mut acked = vec![0i64; small.len()];
            let mut slowest = Duration::ZERO;
            let mut errors = Vec::new();
            while !done.load(Ordering::Relaxed) {
                for (i, k) in small.iter().enumerate() {
                    let t = Instant::now();
                    match redis::cmd("INCR").arg(k).query::<i64>(&mut conn) {
                        Ok(_) => acked[i] += 1,
                        Err(e) => errors.push(e.to_string()),
                    }
                    slowest = slowest.max(t.elapsed());
                }
            }
            (acked, slowest, errors)
        })
    };
    let m = migrate(&c, &format!("{slot}-{slot}"), 2, 1);
    // See the key held, and the small keys served while it is.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen_held = false;
    let mut served_while_held = false;
    let mut reason_shown = false;
    let mut probe = connect(&proxy).unwrap();
    while Instant::now() < deadline {
        let held = s.stored().held_keys;
        if !held.is_empty() {
            seen_held = true;
            assert_eq!(held, vec![big.as_bytes().to_vec()]);
            let t = Instant::now();
            let v: String = redis::cmd("GET").arg(&small[0]).query(&mut probe).unwrap();
            assert!(!v.is_empty());
            if t.elapsed() < Duration::from_millis(500) && !s.stored().held_keys.is_empty() {
                served_while_held = true;
            }
        }
        let view = c.migration(m.id).unwrap();
        if view
            .reason
            .as_deref()
            .is_some_and(|r| r.contains("copying big key") && r.contains(&big))
        {
            reason_shown = true;
        }
        if view.state == "finished" {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        reason_shown,
        "the migration never said it was copying the big key"
    );
    wait_finished(&c, m.id, Duration::from_secs(60));
    done.store(true, Ordering::Relaxed);
    let (acked, slowest, errors) = client.join().unwrap();
    assert!(seen_held, "the big key was never held on its own");
    assert!(
        served_while_held,
        "no small key was served while the big one was held"
    );
    assert!(
        errors.is_empty(),
        "errors for keys that were not held: {errors:?}"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a small key waited {slowest:?}"
    );
    assert!(s.stored().held_keys.is_empty(), "left held");
    let log = s.dash.stderr_tail(200);
    assert!(log.contains("big key copied in chunks while held"), "{log}");
    // Everything there, on the target only.
    for (k, n) in small.iter().zip(&acked) {
        let v: i64 = redis::cmd("GET").arg(k).query(&mut conn).unwrap();
        assert_eq!(v, *n, "{k}");
    }
    let len: i64 = redis::cmd("HLEN").arg(&big).query(&mut conn).unwrap();
    assert_eq!(len, 300_000);
    assert_eq!(s.servers(1)[0].dbsize(), 0);
    assert_eq!(s.servers(2)[0].dbsize(), 21);
}

/// A key that became big after its wave's big keys were looked for is found
/// by the mover's own sizing, then held on its own (after a barrier), copied
/// in chunks and released.
#[test]
fn a_key_that_grew_big_after_the_look_is_held_and_copied_by_the_mover() {
    let mut s = setup(&[1, 1], 1, |d| d);
    let p = s.proxy_builder().start();
    s.proxies.push(p);
    let c = s.client();
    let mut conn = connect(&s.proxies[0].addr()).unwrap();
    let big = shardis_tests::keys_where("grew", 1, |slot| slot < 512).remove(0);
    let slot = slot_of(big.as_bytes());
    redis::cmd("HSET")
        .arg(&big)
        .arg("f")
        .arg("small")
        .query::<()>(&mut conn)
        .unwrap();
    // A frozen proxy keeps the wave in its hold barrier: the big keys were
    // looked for (none) and the slot is held everywhere else.
    s.proxies[1].pause();
    let m = migrate(&c, &format!("{slot}-{slot}"), 2, 1);
    wait_waiting_on(&c, m.id, s.proxies[1].id());
    // Meanwhile the key grows past the big-key size, as if a client had
    // grown it just before the hold (no proxy touches the held slot now).
    let source = &s.servers(1)[0];
    let mut direct = redis::Client::open(format!("redis://{}", source.addr()))
        .unwrap()
        .get_connection()
        .unwrap();
    fill_hash(&mut direct, &big, 100_000);
    s.proxies[1].resume();
    wait_finished(&c, m.id, Duration::from_secs(60));
    let log = s.dash.stderr_tail(300);
    assert!(
        log.contains("big_keys=1"),
        "the mover did not find it:\n{log}"
    );
    assert!(
        log.contains("to hold a big key") || log.contains("big key copied in chunks while held"),
        "{log}"
    );
    assert!(log.contains("big key copied in chunks while held"), "{log}");
    assert!(s.stored().held_keys.is_empty(), "left held");
    let len: i64 = redis::cmd("HLEN").arg(&big).query(&mut conn).unwrap();
    assert_eq!(len, 100_001);
    let f: String = redis::cmd("HGET")
        .arg(&big)
        .arg("f")
        .query(&mut conn)
        .unwrap();
    assert_eq!(f, "small");
    assert_eq!(source.dbsize(), 0);
    assert_eq!(s.servers(2)[0].dbsize(), 1);
}

/// The leader dies (SIGKILL) while a held big key is half copied: the
/// standby finds the key held, copies it again and releases it.
#[test]
fn a_standby_copies_a_held_big_key_again_when_the_leader_dies_mid_copy() {
    let s = setup(&[1, 1], 1, |d| d.lease_ttl(2));
    let standby = DashboardProcess::builder(&s.etcd.endpoint(), &s.cluster)
        .lease_ttl(2)
        .start();
    let c = s.client();
    let mut conn = connect(&s.proxies[0].addr()).unwrap();
    let big = shardis_tests::keys_where("killcopy", 1, |slot| slot < 512).remove(0);
    let slot = slot_of(big.as_bytes());
    let value = "v".repeat(100);
    fill_hash(&mut conn, &big, 400_000);
    let m = migrate(&c, &format!("{slot}-{slot}"), 2, 1);
    let deadline = Instant::now() + Duration::from_secs(30);
    while s.stored().held_keys.is_empty() {
        assert!(Instant::now() < deadline, "the big key was never held");
        std::thread::sleep(Duration::from_millis(5));
    }
    s.dash.kill();
    // Killed mid-copy: part of the copy may be on the target under its
    // temporary name, the key itself still whole on the source.
    assert_eq!(s.stored().held_keys, vec![big.as_bytes().to_vec()]);
    // Until the standby leads and copies it, the key stays held: a request
    // for it waits, then says why; another key of its slot is served.
    let small = shardis_tests::key_in_slot("small", usize::from(slot));
    let t = Instant::now();
    redis::cmd("SET")
        .arg(&small)
        .arg("1")
        .query::<()>(&mut conn)
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
    match redis::cmd("HLEN").arg(&big).query::<i64>(&mut conn) {
        Ok(n) => assert_eq!(n, 400_000),
        Err(e) => assert!(e.to_string().contains("is held while it moves"), "{e}"),
    }
    let done = wait_finished(&standby.client(), m.id, Duration::from_secs(60));
    assert_eq!(done.slots_done, 1);
    let log = standby.stderr_tail(200);
    assert!(log.contains("big key copied in chunks while held"), "{log}");
    assert!(s.stored().held_keys.is_empty(), "left held");
    let len: i64 = redis::cmd("HLEN").arg(&big).query(&mut conn).unwrap();
    assert_eq!(len, 400_000);
    let v: String = redis::cmd("HGET")
        .arg(&big)
        .arg("f399999")
        .query(&mut conn)
        .unwrap();
    assert_eq!(v, value);
    assert_eq!(s.servers(1)[0].dbsize(), 0);
    // The big key and the small one: no temporary copy left behind.
    assert_eq!(
        s.servers(2)[0].dbsize(),
        2,
        "a temporary copy was left behind"
    );
}

#[test]
fn a_wave_the_target_cannot_take_is_moved_back_and_the_migration_fails_cleanly() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    let proxy = s.proxies[0].addr();
    let mut conn = connect(&proxy).unwrap();
    let value = "x".repeat(1000);
    for chunk in 0..20 {
        let mut pipe = redis::pipe();
        for i in chunk * 1000..(chunk + 1) * 1000 {
            pipe.cmd("SET").arg(format!("oom{i}")).arg(&value).ignore();
        }
        pipe.query::<()>(&mut conn).unwrap();
    }
    let load = start_load(vec![proxy.clone()], 2);
    load.wait_progress(200);
    let m = c
        .create_migration(&CreateMigration {
            slots: "0-511".into(),
            to_group: 2,
            wave_size: Some(512),
            keys_per_sec: Some(2000),
            bytes_per_sec: None,
            safe: None,
        })
        .unwrap();
    wait_for(&c, m.id, Duration::from_secs(20), "moving", |m| {
        m.keys_moved >= 1000
    });
    // The target fills up: it refuses further keys.
    let target = &s.servers(2)[0];
    let used: String = {
        let info = String::from_utf8_lossy(&target.cmd(&["INFO", "memory"])).into_owned();
        info.lines()
            .find_map(|l| l.strip_prefix("used_memory:"))
            .unwrap()
            .trim()
            .to_string()
    };
    let limit = used.parse::<u64>().unwrap() + 200_000;
    target.cmd(&["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    target.cmd(&["CONFIG", "SET", "maxmemory", &limit.to_string()]);
    let end = wait_for(&c, m.id, Duration::from_secs(60), "failing", |m| {
        m.state == "failed"
    });
    let error = end.error.clone().unwrap_or_default();
    // Slots whose every key had moved ended on group 2 as the wave went;
    // the rest were moved back. Every slot wholly on one group, as the
    // error says, and every key readable.
    let slots = s.stored().slots;
    assert!(slots
        .iter()
        .all(|st| matches!(st, SlotState::Normal { .. })));
    let on_2: Vec<usize> = (0..512)
        .filter(|&i| slots[i] == SlotState::Normal { group: 2 })
        .collect();
    let back = if on_2.is_empty() {
        "slots 0-511 on group 1".to_string()
    } else {
        format!("slots {}-511 on group 1", on_2.len())
    };
    assert!(on_2.iter().enumerate().all(|(i, &s)| i == s), "{on_2:?}");
    assert!(
        error.contains("moved back") && error.contains(&back),
        "{error}"
    );
    assert_eq!(end.slots_done, on_2.len());
    target.cmd(&["CONFIG", "SET", "maxmemory", "0"]);
    let logs = load.finish();
    verify(&s, &proxy, &logs);
    for i in (0..20_000).step_by(7) {
        let v: Option<String> = redis::cmd("GET")
            .arg(format!("oom{i}"))
            .query(&mut conn)
            .unwrap();
        assert_eq!(v.as_deref(), Some(value.as_str()), "oom{i}");
    }
}

#[test]
fn safe_mode_deletes_on_the_source_only_what_the_targets_replica_has() {
    let s = setup(&[1, 2], 1, |d| d);
    let c = s.client();
    let proxy = s.proxies[0].addr();
    fill(&proxy, 10_000);
    let load = start_load(vec![proxy.clone()], 2);
    load.wait_progress(200);
    let m = c
        .create_migration(&CreateMigration {
            slots: "0-511".into(),
            to_group: 2,
            wave_size: Some(128),
            keys_per_sec: None,
            bytes_per_sec: None,
            safe: Some(true),
        })
        .unwrap();
    assert!(m.safe);
    let end = wait_finished(&c, m.id, Duration::from_secs(60));
    eprintln!(
        "safe mode: {} keys in {:.2}s ({:.0} keys/s)",
        end.keys_moved, end.elapsed_secs, end.keys_per_sec
    );
    let logs = load.finish();
    verify(&s, &proxy, &logs);
    check_fill(&proxy, 10_000);
    // The replica of the target has every filler key.
    let replica = &s.servers(2)[1];
    let mut conn = replica.client();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let n: i64 = redis::cmd("DBSIZE").query(&mut conn).unwrap();
        if n >= 10_000 {
            break;
        }
        assert!(Instant::now() < deadline, "replica holds only {n} keys");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Safe mode with the target's replica frozen: every batch the mover copied
/// waits on both servers for its delete, so a write that ran on the source
/// meanwhile would be deleted with the source's copy. Writes in safe mode
/// move their keys first (and wait, or fail, while the copy waits): no
/// acknowledged write is lost.
#[test]
fn safe_mode_loses_no_write_while_the_targets_replica_lags() {
    let s = setup(&[1, 2], 1, |d| d);
    let c = s.client();
    let proxy = s.proxies[0].addr();
    let load = start_load(vec![proxy.clone()], 4);
    load.wait_progress(2000);
    let m = c
        .create_migration(&CreateMigration {
            wave_size: Some(512),
            keys_per_sec: Some(400),
            safe: Some(true),
            ..plain("0-511", 2)
        })
        .unwrap();
    // Frozen from before the first batch's copy until well after it.
    let replica = &s.servers(2)[1];
    replica.pause();
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        c.migration(m.id).unwrap().keys_moved,
        0,
        "moved past a frozen replica"
    );
    replica.resume();
    let end = wait_finished(&c, m.id, Duration::from_secs(60));
    assert!(end.keys_moved > 0);
    let logs = load.finish();
    verify(&s, &proxy, &logs);
}

/// The target group's master dies mid-migration (SIGKILL): the wave waits
/// for it, without counting towards a roll-back, and says how to fail over;
/// paused, the migration lets go of the group, a failover to the replica
/// goes through although slots are migrating into the group, and the
/// resumed migration finishes on the new master with every key there.
#[test]
fn a_migration_goes_on_after_its_target_master_fails_over() {
    let s = setup(&[1, 2], 1, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 5_000);
    let m = c
        .create_migration(&CreateMigration {
            wave_size: Some(64),
            keys_per_sec: Some(2000),
            ..plain("0-511", 2)
        })
        .unwrap();
    wait_for(&c, m.id, Duration::from_secs(20), "a few waves", |m| {
        m.slots_done >= 128
    });
    // Paused, so that the replica has every key moved so far (nothing is
    // lost to asynchronous replication here, which is not what this tests).
    c.steer_migration(m.id, "pause").unwrap();
    wait_for(&c, m.id, Duration::from_secs(20), "paused", |m| {
        m.state == "paused"
    });
    let (master, replica) = (&s.servers(2)[0], s.servers(2)[1].addr());
    let mut r = redis::Client::open(format!("redis://{replica}"))
        .unwrap()
        .get_connection()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis::cmd("DBSIZE").query::<i64>(&mut r).unwrap() != master.dbsize() {
        assert!(Instant::now() < deadline, "the replica did not catch up");
        std::thread::sleep(Duration::from_millis(50));
    }
    master.kill();
    c.steer_migration(m.id, "resume").unwrap();
    let waiting = wait_for(&c, m.id, Duration::from_secs(20), "waiting", |m| {
        m.error.as_deref().is_some_and(|e| e.contains("fail over"))
    });
    assert_eq!(waiting.state, "running", "{waiting:#?}");
    // A few retries later it still waits: no roll-back of a dead target.
    std::thread::sleep(Duration::from_secs(7));
    assert_eq!(c.migration(m.id).unwrap().state, "running");
    c.steer_migration(m.id, "pause").unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let promoted = loop {
        match c.promote(2, &replica) {
            Ok(p) => break p,
            Err(e) => {
                assert!(Instant::now() < deadline, "the failover was refused: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    };
    assert!(promoted.failover, "{promoted:#?}");
    c.steer_migration(m.id, "resume").unwrap();
    let done = wait_finished(&c, m.id, Duration::from_secs(60));
    assert_eq!(done.slots_done, 512);
    assert!(all_slots_of(&s, 2));
    check_fill(&s.proxies[0].addr(), 5_000);
}

/// A target master that stops being a master mid-wave (made a replica, as
/// by a failover gone wrong) refuses every moved key: the wave waits for it,
/// saying why, and is not rolled back onto it, not even when asked to stop
/// (a roll-back would read a server that is resyncing); once it is a master
/// again, the wave completes and the migration ends with every slot wholly
/// on one group. (The keys it had are lost to the resync from the empty
/// server: what this checks is only that Shardis waits.)
#[test]
fn a_wave_waits_for_a_target_that_is_no_master_instead_of_rolling_back() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 5_000);
    let m = c
        .create_migration(&CreateMigration {
            wave_size: Some(512),
            keys_per_sec: Some(1000),
            ..plain("0-511", 2)
        })
        .unwrap();
    wait_for(&c, m.id, Duration::from_secs(20), "moving", |m| {
        m.keys_moved >= 300
    });
    let spare = RedisServer::start();
    let target = &s.servers(2)[0];
    let port = spare.port().to_string();
    assert_eq!(
        target.cmd(&["REPLICAOF", "127.0.0.1", port.as_str()]),
        b"+OK\r\n"
    );
    wait_for(&c, m.id, Duration::from_secs(20), "waiting", |m| {
        m.error.as_deref().is_some_and(|e| e.contains("replica"))
    });
    c.steer_migration(m.id, "stop").unwrap();
    // Three retries and more, and a stop: still waiting, nothing rolled back.
    std::thread::sleep(Duration::from_secs(7));
    let now = c.migration(m.id).unwrap();
    assert_eq!(now.state, "running", "{now:#?}");
    assert!((0..512).all(|i| matches!(
        s.stored().slots[i],
        SlotState::Migrating { .. } | SlotState::Normal { group: 2 }
    )));
    assert_eq!(target.cmd(&["REPLICAOF", "NO", "ONE"]), b"+OK\r\n");
    let end = wait_for(&c, m.id, Duration::from_secs(60), "stopped", |m| {
        m.state != "running"
    });
    // Its one wave was in flight when asked to stop: it completed it, and
    // with it the whole migration.
    assert!(
        ["stopped", "finished"].contains(&end.state.as_str()),
        "{end:#?}"
    );
    assert!((0..512).all(|i| s.stored().slots[i] == SlotState::Normal { group: 2 }));
}

/// A half-built copy of a big key (its temporary name) left on a source, as
/// a failed copy whose wave was rolled back leaves it, is deleted by the
/// next wave's scan, not moved as data.
#[test]
fn a_leftover_temporary_copy_is_deleted_not_moved() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 1_000);
    let key = shardis_tests::keys_where("left", 1, |slot| slot < 512).remove(0);
    let tag = format!("{{{key}}}\0shardis-migrating-copy");
    let source = &s.servers(1)[0];
    assert_eq!(source.cmd(&["HSET", tag.as_str(), "f", "v"]), b":1\r\n");
    let m = c.create_migration(&plain("0-511", 2)).unwrap();
    wait_finished(&c, m.id, Duration::from_secs(30));
    assert_eq!(source.cmd(&["EXISTS", tag.as_str()]), b":0\r\n");
    assert_eq!(s.servers(2)[0].cmd(&["EXISTS", tag.as_str()]), b":0\r\n");
    check_fill(&s.proxies[0].addr(), 1_000);
}

/// An ended migration keeps its own count of slots done, whatever later
/// migrations do with those slots.
#[test]
fn an_ended_migration_keeps_its_count_of_slots_done() {
    let s = setup(&[1, 1], 1, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 2_000);
    let first = c.create_migration(&plain("0-511", 2)).unwrap();
    wait_finished(&c, first.id, Duration::from_secs(30));
    let back = c.create_migration(&plain("0-99", 1)).unwrap();
    wait_finished(&c, back.id, Duration::from_secs(30));
    let first = c.migration(first.id).unwrap();
    assert_eq!(
        (first.slots_done, first.slots_total),
        (512, 512),
        "{first:#?}"
    );
    check_fill(&s.proxies[0].addr(), 2_000);
}

#[test]
fn a_promotion_is_refused_while_a_migration_moves_the_group() {
    let s = setup(&[2, 1], 1, |d| d);
    let c = s.client();
    fill(&s.proxies[0].addr(), 5_000);
    let m = c
        .create_migration(&CreateMigration {
            slots: "0-511".into(),
            to_group: 2,
            wave_size: Some(512),
            keys_per_sec: Some(1000),
            bytes_per_sec: None,
            safe: None,
        })
        .unwrap();
    wait_for(&c, m.id, Duration::from_secs(10), "moving", |m| {
        m.keys_moved > 0
    });
    let replica = s.servers(1)[1].addr();
    assert_api_error(c.promote(1, &replica), 409, "migrat");
    // Once it is done the promotion goes through.
    c.set_migration_rate(
        m.id,
        &SetRate {
            keys_per_sec: Some(0),
            bytes_per_sec: None,
        },
    )
    .unwrap();
    wait_finished(&c, m.id, Duration::from_secs(30));
    c.promote(1, &replica).unwrap();
    check_fill(&s.proxies[0].addr(), 5_000);
}

/// Requests that start migrations of overlapping slots at the same time:
/// at most one of them is taken, the others are refused.
#[test]
fn overlapping_migrations_asked_for_at_once_are_refused_but_one() {
    let s = setup(&[1, 1, 1], 0, |d| d);
    let c = s.client();
    // Keys in the overlap, moved at 1 key/s: whatever starts stays running.
    let source: &RedisServer = &s.servers(1)[0];
    for slot in 150..200 {
        let key = shardis_tests::key_in_slot("slow", slot);
        source.cmd(&["SET", key.as_str(), "x"]);
    }
    let slow = |slots: &str, to: GroupId| CreateMigration {
        keys_per_sec: Some(1),
        ..plain(slots, to)
    };
    let results: Vec<Result<MigrationView, String>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..12)
            .map(|i| {
                let c = &c;
                let req = if i % 2 == 0 {
                    slow("100-199", 2)
                } else {
                    slow("150-249", 3)
                };
                scope.spawn(move || c.create_migration(&req).map_err(|e| e.to_string()))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("request thread"))
            .collect()
    });
    let taken: Vec<String> = results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .map(|m| format!("{} to {}", m.slots, m.to_group))
        .collect();
    assert_eq!(taken.len(), 1, "taken at once: {taken:?}");
    for e in results.iter().filter_map(|r| r.as_ref().err()) {
        assert!(e.contains("are part of migration"), "{e}");
    }
    assert_eq!(c.migrations().unwrap().len(), 1);
}
