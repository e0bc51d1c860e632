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
