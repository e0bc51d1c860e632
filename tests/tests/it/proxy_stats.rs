//! The proxy's request statistics under a known load: per-command calls,
//! errors and latency histograms, per-slot ops, per-backend counters,
//! sessions; `/metrics` checked by two real Prometheus parsers; the slowlog
//! catching a genuinely slow command (a big LRANGE), through `SLOWLOG` and
//! the admin JSON; and `--stats false` recording nothing per request.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::Value;
use shardis_tests::{poll_until, Cluster, Metrics, Reply, RespConn};
use shardis_topology::slot_of;

fn stats(cluster: &Cluster) -> Value {
    let (code, body) = cluster
        .proxy(0)
        .admin_get("/api/v1/stats")
        .expect("admin answers");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("stats JSON")
}

fn metrics(cluster: &Cluster) -> Metrics {
    let (code, body) = cluster
        .proxy(0)
        .admin_get("/metrics")
        .expect("admin answers");
    assert_eq!(code, 200, "{body}");
    Metrics::parse(&body)
}

fn command<'a>(stats: &'a Value, name: &str) -> &'a Value {
    stats["commands"]
        .as_array()
        .expect("commands")
        .iter()
        .find(|c| c["cmd"] == name)
        .unwrap_or_else(|| panic!("no command {name} in {}", stats["commands"]))
}

fn sum_u64(values: &Value) -> u64 {
    values
        .as_array()
        .expect("an array")
        .iter()
        .map(|v| v.as_u64().expect("a number"))
        .sum()
}

#[test]
fn counters_and_histograms_follow_a_known_load() {
    let cluster = Cluster::builder().groups(2).proxies(1).build();
    let mut c = cluster.conn(0);
    let mut expected_slots: BTreeMap<u16, u64> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("k{i}");
        assert_eq!(c.cmd_text(&["SET", &key, "v"]), "+OK\r\n");
        *expected_slots.entry(slot_of(key.as_bytes())).or_default() += 1;
    }
    for i in 0..100 {
        let key = format!("k{i}");
        assert_eq!(c.cmd_text(&["GET", &key]), "$1\r\nv\r\n");
        *expected_slots.entry(slot_of(key.as_bytes())).or_default() += 1;
    }
    // Errors from a backend (not an integer) and from the proxy (unknown).
    for _ in 0..5 {
        assert!(c.cmd_text(&["INCR", "k1"]).starts_with("-ERR"));
        *expected_slots.entry(slot_of(b"k1")).or_default() += 1;
    }
    for _ in 0..3 {
        assert!(c
            .cmd_text(&["NOSUCHCMD", "x"])
            .starts_with("-ERR unknown command"));
    }
    // Fan-out: one MGET over keys of both groups counts once per command,
    // and once per key per slot.
    let mut mget: Vec<String> = vec!["MGET".into()];
    for group in [1, 2] {
        mget.extend(
            (0..200)
                .map(|i| format!("k{i}"))
                .filter(|k| cluster.owner_of(k) == group)
                .take(3),
        );
    }
    assert_eq!(mget.len(), 7);
    for _ in 0..10 {
        let r = c.reply(&mget);
        assert_eq!(r.items().map(<[Reply]>::len), Some(6));
        assert!(r
            .items()
            .unwrap()
            .iter()
            .all(|v| v.text().as_deref() == Some("v")));
        for k in &mget[1..] {
            *expected_slots.entry(slot_of(k.as_bytes())).or_default() += 1;
        }
    }

    // The in-flight gauge is sampled by the backend connection's task: the
    // last reply may reach the client a moment before the gauge drops.
    let s = poll_until(Duration::from_secs(2), || {
        let s = stats(&cluster);
        let idle = s["backends"]
            .as_array()
            .is_some_and(|b| b.iter().all(|b| b["inflight"] == 0));
        idle.then_some(s)
    })
    .expect("requests still in flight on a backend 2 s after their replies");
    assert_eq!(s["stats_enabled"], true);
    let set = command(&s, "set");
    assert_eq!(
        (set["calls"].as_u64(), set["errors"].as_u64()),
        (Some(200), Some(0))
    );
    assert_eq!(set["latency"]["count"], 200);
    assert_eq!(sum_u64(&set["latency"]["buckets"]), 200);
    assert!(set["latency"]["sum_us"].as_u64().unwrap() > 0);
    let p50 = set["latency"]["p50_us"].as_f64().unwrap();
    let p99 = set["latency"]["p99_us"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "p50 {p50} p99 {p99}");
    assert_eq!(command(&s, "get")["calls"], 100);
    let incr = command(&s, "incr");
    assert_eq!(
        (incr["calls"].as_u64(), incr["errors"].as_u64()),
        (Some(5), Some(5))
    );
    let unknown = command(&s, "unknown");
    assert_eq!(
        (unknown["calls"].as_u64(), unknown["errors"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(command(&s, "mget")["calls"], 10);
    assert_eq!(s["ops_total"], 200 + 100 + 5 + 3 + 10);
    assert_eq!(s["errors_total"], 8);
    assert_eq!(s["latency"]["count"], s["ops_total"]);

    // Per slot: exactly the keys routed.
    let slot_ops = s["slot_ops"].as_array().expect("slot_ops");
    assert_eq!(slot_ops.len(), 1024);
    for (slot, ops) in slot_ops.iter().enumerate() {
        let want = expected_slots.get(&(slot as u16)).copied().unwrap_or(0);
        assert_eq!(ops.as_u64(), Some(want), "slot {slot}");
    }

    // Per backend: every request reached one; MGET went as one part per group.
    let backends = s["backends"].as_array().expect("backends");
    assert_eq!(backends.len(), 2);
    let requests: u64 = backends
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 200 + 100 + 5 + 10 * 2);
    let errors: u64 = backends.iter().map(|b| b["errors"].as_u64().unwrap()).sum();
    assert_eq!(errors, 5);
    for b in backends {
        assert_eq!(b["up"], true);
        assert!(b["latency"]["count"].as_u64().unwrap() > 0, "{b}");
        assert_eq!(b["inflight"], 0);
    }
    assert!(s["sessions"]["total"].as_u64().unwrap() >= 1);
    assert_eq!(s["sessions"]["current"], 1);

    // The same through Prometheus.
    let m = metrics(&cluster);
    m.check_with_prometheus_client(&[
        "shardis_commands_total",
        "shardis_command_errors_total",
        "shardis_command_duration_seconds",
        "shardis_request_duration_seconds",
        "shardis_slot_ops_total",
        "shardis_backend_requests_total",
        "shardis_backend_duration_seconds",
        "shardis_sessions_open",
        "shardis_ops_total",
    ]);
    assert_eq!(
        m.value("shardis_commands_total", &[("cmd", "set")]),
        Some(200.0)
    );
    assert_eq!(
        m.value("shardis_commands_total", &[("cmd", "unknown")]),
        Some(3.0)
    );
    assert_eq!(
        m.value("shardis_command_errors_total", &[("cmd", "incr")]),
        Some(5.0)
    );
    assert_eq!(m.value("shardis_ops_total", &[]), Some(318.0));
    assert_eq!(m.value("shardis_errors_total", &[]), Some(8.0));
    assert_eq!(m.value("shardis_sessions_open", &[]), Some(1.0));
    let h = m
        .histogram("shardis_command_duration_seconds", &[("cmd", "set")])
        .expect("SET histogram");
    assert_eq!(h.count, 200.0);
    assert!(h.sum > 0.0 && h.sum < 200.0, "sum {} s", h.sum);
    // Seconds: the smallest bound is one microsecond.
    assert_eq!(h.buckets[0].0, 0.000_001);
    let all = m
        .histogram("shardis_request_duration_seconds", &[])
        .expect("all requests");
    assert_eq!(all.count, 318.0);
    let slot_total: f64 = m.all("shardis_slot_ops_total").iter().map(|(_, v)| v).sum();
    assert_eq!(slot_total as u64, expected_slots.values().sum::<u64>());
    assert_eq!(m.all("shardis_backend_requests_total").len(), 2);
    assert_eq!(
        m.all("shardis_backend_up")
            .iter()
            .map(|(_, v)| v)
            .sum::<f64>(),
        2.0
    );

    // INFO through the proxy agrees (INFO itself is the 319th request).
    let info = c.reply(&["INFO", "stats"]).text().expect("INFO text");
    assert!(info.contains("total_commands_processed:318\r\n"), "{info}");
    assert!(!info.contains("cmdstat_"), "{info}");
    let info = c
        .reply(&["INFO", "commandstats", "latencystats"])
        .text()
        .expect("INFO text");
    assert!(info.starts_with("# Commandstats\r\n"), "{info}");
    let line = |prefix: &str| {
        info.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} in\n{info}"))
            .to_string()
    };
    assert!(
        line("cmdstat_set:").starts_with("cmdstat_set:calls=200,usec="),
        "{info}"
    );
    assert!(line("cmdstat_incr:").ends_with(",failed_calls=5"), "{info}");
    assert!(
        line("cmdstat_unknown:").starts_with("cmdstat_unknown:calls=3,"),
        "{info}"
    );
    assert!(info.contains("# Latencystats\r\n"), "{info}");
    let p99: f64 = line("latency_percentiles_usec_set:")
        .split(['=', ','])
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("p99 of SET in\n{info}"));
    assert!(p99 > 0.0 && p99 < 1_000_000.0, "{info}");

    // Sessions: closing the connection is seen.
    drop(c);
    let closed = poll_until(Duration::from_secs(5), || {
        (stats(&cluster)["sessions"]["current"] == 0).then_some(())
    });
    assert!(closed.is_some(), "sessions.current did not return to 0");
}

/// `SLOWLOG GET` entries as (command, key, duration µs, client, name).
fn slowlog_entries(c: &mut RespConn, n: &str) -> Vec<(String, String, i64, String, String)> {
    let reply = c.reply(&["SLOWLOG", "GET", n]);
    reply
        .items()
        .unwrap_or_else(|| panic!("SLOWLOG GET answered {reply:?}"))
        .iter()
        .map(|e| {
            let f = e.items().expect("an entry is an array");
            assert_eq!(f.len(), 6, "{e:?}");
            let args: Vec<String> = f[3]
                .items()
                .expect("arguments")
                .iter()
                .map(|a| a.text().expect("text"))
                .collect();
            (
                args[0].clone(),
                args.get(1).cloned().unwrap_or_default(),
                f[2].integer().expect("duration"),
                f[4].text().expect("client"),
                f[5].text().expect("client name"),
            )
        })
        .collect()
}

#[test]
fn the_slowlog_catches_a_big_lrange() {
    let cluster = Cluster::builder()
        .groups(2)
        .proxies(1)
        .proxy_arg("--slowlog-threshold-us")
        .proxy_arg("20000")
        .build();
    let mut c = cluster.conn(0);
    c.set_timeout(Duration::from_secs(60));
    // 400,000 elements, built by one script on the list's own server.
    let built = c.cmd_text(&[
        "EVAL",
        "for i = 1, 400000 do redis.call('RPUSH', KEYS[1], i) end return redis.call('LLEN', KEYS[1])",
        "1",
        "biglist",
    ]);
    assert_eq!(built, ":400000\r\n");
    assert_eq!(c.cmd_text(&["SLOWLOG", "RESET"]), "+OK\r\n");
    assert_eq!(c.cmd_text(&["SLOWLOG", "LEN"]), ":0\r\n");

    assert_eq!(c.cmd_text(&["CLIENT", "SETNAME", "slowpoke"]), "+OK\r\n");
    let r = c.reply(&["LRANGE", "biglist", "0", "-1"]);
    assert_eq!(r.items().map(<[Reply]>::len), Some(400_000));
    let me = c.stream().local_addr().expect("local addr").to_string();

    let entries = slowlog_entries(&mut c, "10");
    let lrange = entries
        .iter()
        .find(|e| e.0 == "lrange")
        .unwrap_or_else(|| panic!("no LRANGE in the slowlog: {entries:?}"));
    assert_eq!(lrange.1, "biglist");
    assert!(lrange.2 >= 20_000, "duration {} µs", lrange.2);
    assert_eq!(lrange.3, me);
    assert_eq!(lrange.4, "slowpoke");
    for e in &entries {
        assert!(e.2 >= 20_000, "an entry below the threshold: {e:?}");
    }
    let len = c.reply(&["SLOWLOG", "LEN"]).integer().expect("LEN");
    assert!(len >= 1);

    // The admin JSON says the same.
    let (code, body) = cluster
        .proxy(0)
        .admin_get("/api/v1/slowlog?n=5")
        .expect("admin answers");
    assert_eq!(code, 200, "{body}");
    let log: Value = serde_json::from_str(&body).expect("slowlog JSON");
    assert_eq!(log["threshold_us"], 20_000);
    assert_eq!(log["proxy"], cluster.proxy(0).id());
    let json_entry = log["entries"]
        .as_array()
        .expect("entries")
        .iter()
        .find(|e| e["command"] == "lrange")
        .unwrap_or_else(|| panic!("no LRANGE in {log}"));
    assert_eq!(json_entry["key"], "biglist");
    assert_eq!(json_entry["client"], me.as_str());
    assert_eq!(json_entry["client_name"], "slowpoke");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(json_entry["time"].as_u64().unwrap().abs_diff(now) < 120);

    let m = metrics(&cluster);
    assert_eq!(m.value("shardis_slowlog_length", &[]), Some(len as f64));
    assert_eq!(c.cmd_text(&["SLOWLOG", "RESET"]), "+OK\r\n");
    assert_eq!(c.cmd_text(&["SLOWLOG", "LEN"]), ":0\r\n");
}

#[test]
fn with_stats_off_nothing_is_recorded_per_request() {
    let cluster = Cluster::builder()
        .groups(2)
        .proxies(1)
        .proxy_arg("--stats")
        .proxy_arg("false")
        .proxy_arg("--slowlog-threshold-us")
        .proxy_arg("0")
        .build();
    let mut c = cluster.conn(0);
    for i in 0..50 {
        assert_eq!(c.cmd_text(&["SET", &format!("k{i}"), "v"]), "+OK\r\n");
    }
    let s = stats(&cluster);
    assert_eq!(s["stats_enabled"], false);
    assert_eq!(s["ops_total"], 0);
    assert_eq!(s["commands"].as_array().map(Vec::len), Some(0));
    assert_eq!(sum_u64(&s["slot_ops"]), 0);
    assert_eq!(s["slowlog_len"], 0);
    // Connection and backend request counters are kept.
    assert_eq!(s["sessions"]["current"], 1);
    let requests: u64 = s["backends"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(requests, 50);
    for b in s["backends"].as_array().unwrap() {
        assert_eq!(b["latency"]["count"], 0);
    }
    assert_eq!(c.cmd_text(&["SLOWLOG", "LEN"]), ":0\r\n");
    let m = metrics(&cluster);
    m.check_with_prometheus_client(&["shardis_stats_enabled"]);
    assert_eq!(m.value("shardis_stats_enabled", &[]), Some(0.0));
}
