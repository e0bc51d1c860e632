//! redis-py (RESP3 by default in current versions) against a real proxy:
//! connection setup (HELLO 3, CLIENT SETINFO), replies in both protocols,
//! pipelines and fan-out. The checks themselves are in `tests/py/`.

use std::process::Command;

use shardis_tests::Cluster;

#[test]
fn redis_py_works_through_the_proxy() {
    let cluster = Cluster::builder().groups(2).proxies(1).build();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/redis_py_compat.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(cluster.proxy(0).port().to_string())
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "redis-py checks failed (install redis-py with `pip install redis`):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// redis-py workers (RESP3: pipelines, MGET/MSET across slots, expiries)
/// through both proxies while the dashboard moves half the slots from
/// group 1 to group 2 and then every slot back to group 1 (in the mover's
/// safe mode): every reply matches each worker's model of its keys, and
/// nothing acknowledged is lost (`tests/py/redis_py_migration.py`).
#[test]
fn redis_py_sees_its_own_writes_while_slots_migrate() {
    use std::time::Duration;

    use crate::control_common::setup;
    use crate::migration::{fill, plain, wait_finished};
    use shardis_dashboard::api::CreateMigration;

    let s = setup(&[1, 1], 2, |d| d);
    let c = s.client();
    // Other keys, so that each wave takes a while (at the rate below).
    fill(&s.proxies[0].addr(), 60_000);
    let ports: Vec<String> = s.proxies.iter().map(|p| p.port().to_string()).collect();
    let dir = tempfile::tempdir().unwrap();
    let stop = dir.path().join("stop");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/py/redis_py_migration.py");
    let child = Command::new("python3")
        .arg(script)
        .arg(ports.join(","))
        .arg(&stop)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    std::thread::sleep(Duration::from_secs(1));
    // There in the default mode, back in safe mode.
    for (slots, to, safe) in [("0-511", 2, false), ("0-1023", 1, true)] {
        let m = c
            .create_migration(&CreateMigration {
                wave_size: Some(128),
                keys_per_sec: Some(20_000),
                safe: Some(safe),
                ..plain(slots, to)
            })
            .unwrap();
        wait_finished(&c, m.id, Duration::from_secs(120));
    }
    std::fs::write(&stop, b"").unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "redis-py workers found problems:\n{text}"
    );
    eprintln!("{text}");
}
