//! The dashboard's collection against real processes: every second it reads
//! each registered proxy's stats and each server's INFO; `GET /api/v1/stats`,
//! `/api/v1/stats/history`, `/api/v1/slowlog` and `/metrics` (checked by two
//! Prometheus parsers) show it, and so do `shardis stats` and
//! `shardis slowlog`. A proxy that stops answering is listed with the reason.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::control_common::setup;
use shardis_dashboard::api::ClusterStats;
use shardis_tests::{http_get, poll_until, Metrics, RespConn};

fn load(addr: String, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let started = Instant::now();
        let mut c = RespConn::connect(&addr);
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(60) {
            let key = format!("dash:{}", i % 500);
            assert_eq!(c.cmd_text(&["SET", &key, "v"]), "+OK\r\n");
            assert_eq!(c.cmd_text(&["GET", &key]), "$1\r\nv\r\n");
            i += 1;
        }
    })
}

#[test]
fn the_dashboard_collects_every_proxy_and_server() {
    let mut s = setup(&[2, 2], 0, |d| d);
    // The first proxy logs every request as slow.
    let logs_all = s
        .proxy_builder()
        .arg("--slowlog-threshold-us")
        .arg("0")
        .start();
    s.proxies.push(logs_all);
    let second = s.proxy_builder().start();
    s.proxies.push(second);
    let ids: Vec<String> = s.proxies.iter().map(|p| p.id().to_string()).collect();
    let c = s.client();

    let stop = Arc::new(AtomicBool::new(false));
    let loads: Vec<_> = s
        .proxies
        .iter()
        .map(|p| load(p.addr(), stop.clone()))
        .collect();

    // Rates need two readings: wait for both proxies to show traffic.
    let busy = |st: &ClusterStats| {
        st.proxies.len() == 2
            && st.proxies.iter().all(|p| p.up && p.ops_per_sec > 0.0)
            && st.servers.iter().all(|v| v.up && v.used_memory.is_some())
    };
    let st = poll_until(Duration::from_secs(20), || {
        let st = c.stats().ok()?;
        busy(&st).then_some(st)
    })
    .unwrap_or_else(|| panic!("no traffic seen: {:#?}", c.stats()));
    assert!(st.ops_per_sec > 0.0 && st.interval_secs > 0.0);
    assert!((st.ops_per_sec - st.proxies.iter().map(|p| p.ops_per_sec).sum::<f64>()).abs() < 1e-6);
    assert!(st.p50_us > 0.0 && st.p50_us <= st.p99_us, "{st:?}");
    assert_eq!(st.sessions, 2);
    let cmds: Vec<&str> = st.commands.iter().map(|c| c.cmd.as_str()).collect();
    assert!(cmds.contains(&"set") && cmds.contains(&"get"), "{cmds:?}");
    for p in &st.proxies {
        assert!(ids.contains(&p.id));
        assert!(p.stats_enabled && !p.fenced);
        let set = p.commands.iter().find(|c| c.cmd == "set").expect("SET");
        assert!(set.ops_per_sec > 0.0 && set.p99_us > 0.0, "{set:?}");
        assert_eq!(p.backends.len(), 2, "each proxy talks to both masters");
        assert!(p.backends.iter().all(|b| b.up && b.requests_per_sec > 0.0));
    }
    assert_eq!(st.slot_ops_per_sec.len(), 1024);
    let slot_rate: f64 = st.slot_ops_per_sec.iter().sum();
    // Every routed request has one slot; only the ones counted in the same
    // interval may differ.
    assert!(
        (slot_rate - st.ops_per_sec).abs() <= st.ops_per_sec * 0.25 + 10.0,
        "slots {slot_rate}/s vs requests {}/s",
        st.ops_per_sec
    );

    // Servers: roles from the topology, figures from INFO, replicas' lag.
    assert_eq!(st.servers.len(), 4);
    for (group, servers) in &s.groups {
        for (i, server) in servers.iter().enumerate() {
            let v = st
                .servers
                .iter()
                .find(|v| v.addr == server.addr())
                .unwrap_or_else(|| panic!("{} not listed", server.addr()));
            assert_eq!(v.group, *group);
            assert_eq!(v.role, if i == 0 { "master" } else { "replica" });
            assert_eq!(
                v.redis_role.as_deref(),
                Some(if i == 0 { "master" } else { "slave" })
            );
            assert!(v.connected_clients.unwrap() >= 1);
            assert!(v.repl_offset.is_some());
            if i > 0 {
                assert_eq!(v.link_status.as_deref(), Some("up"));
                assert!(v.lag_bytes.is_some());
            }
        }
    }

    // The history fills for the charts.
    let history = poll_until(Duration::from_secs(10), || {
        let h = c.stats_history().ok()?;
        (h.points.len() >= 3).then_some(h)
    })
    .expect("history points");
    assert!(history.points.windows(2).all(|w| w[0].time < w[1].time));
    assert!(history.points.iter().any(|p| p.ops_per_sec > 0.0));
    let last = history.points.last().unwrap();
    assert_eq!(last.proxies.len(), 2);

    // Keys: stop the load, and the next collection matches DBSIZE.
    stop.store(true, Ordering::Relaxed);
    for l in loads {
        l.join().expect("load");
    }
    let settled = poll_until(Duration::from_secs(10), || {
        let st = c.stats().ok()?;
        let ok = s.groups.iter().all(|(_, servers)| {
            let m = &servers[0];
            st.servers
                .iter()
                .find(|v| v.addr == m.addr())
                .is_some_and(|v| v.keys == Some(m.dbsize() as u64))
        });
        ok.then_some(st)
    });
    assert!(
        settled.is_some(),
        "keys never matched DBSIZE: {:#?}",
        c.stats()
    );

    // Slowlog: every request of the first proxy was slow.
    let log = c.slowlog(10).expect("slowlog");
    assert_eq!(log.entries.len(), 10, "{log:?}");
    assert!(log.errors.is_empty(), "{:?}", log.errors);
    assert!(log.entries.iter().all(|e| e.proxy == ids[0]));
    assert!(log
        .entries
        .iter()
        .all(|e| (e.entry.command == "set" || e.entry.command == "get")
            && e.entry.key.starts_with("dash:")));
    assert!(log
        .entries
        .windows(2)
        .all(|w| w[0].entry.time >= w[1].entry.time));

    // Prometheus.
    let (code, text) =
        http_get(&s.dash.addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
    assert_eq!(code, 200);
    let m = Metrics::parse(&text);
    m.check_with_prometheus_client(&[
        "shardis_dashboard_leader",
        "shardis_slots",
        "shardis_proxy_ops_total",
        "shardis_proxy_request_duration_seconds",
        "shardis_server_used_memory_bytes",
        "shardis_server_repl_lag_bytes",
        "shardis_cluster_ops_per_second",
    ]);
    assert_eq!(m.value("shardis_dashboard_leader", &[]), Some(1.0));
    assert_eq!(
        m.value("shardis_slots", &[("group", "1"), ("state", "normal")]),
        Some(512.0)
    );
    assert_eq!(
        m.value("shardis_slots", &[("group", "2"), ("state", "normal")]),
        Some(512.0)
    );
    for id in &ids {
        assert_eq!(m.value("shardis_proxy_up", &[("proxy", id)]), Some(1.0));
        assert!(
            m.value("shardis_proxy_ops_total", &[("proxy", id)])
                .unwrap()
                > 0.0
        );
        assert!(
            m.value(
                "shardis_proxy_commands_total",
                &[("proxy", id), ("cmd", "set")]
            )
            .unwrap()
                > 0.0
        );
        let h = m
            .histogram("shardis_proxy_request_duration_seconds", &[("proxy", id)])
            .expect("a latency histogram per proxy");
        assert!(h.count > 0.0);
    }
    assert_eq!(m.all("shardis_server_keys").len(), 4);
    assert_eq!(m.all("shardis_server_repl_lag_bytes").len(), 2);

    // The CLI.
    let out = s.dash.cli(&["stats"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for needle in [
        ids[0].as_str(),
        ids[1].as_str(),
        "SET",
        "GET",
        "req/s",
        "GROUP",
        "replica",
    ] {
        assert!(
            text.contains(needle),
            "`shardis stats` lacks {needle:?}:\n{text}"
        );
    }
    let out = s
        .dash
        .cli(&["stats", "--watch", "0.3", "--iterations", "2"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert_eq!(text.matches("req/s").count(), 2, "two screens:\n{text}");
    let out = s.dash.cli(&["--json", "stats"]);
    let parsed: ClusterStats = serde_json::from_slice(&out.stdout).expect("stats --json");
    assert_eq!(parsed.proxies.len(), 2);
    let out = s.dash.cli(&["slowlog", "-n", "3"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.lines().count(), 4, "a header and 3 entries:\n{text}");
    assert!(text.contains(&ids[0]) && text.contains("dash:"), "{text}");

    // A proxy that stops answering is listed with the reason (its lease,
    // 30 s, keeps it registered meanwhile).
    s.proxies[1].pause();
    let down = poll_until(Duration::from_secs(15), || {
        let st = c.stats().ok()?;
        let p = st.proxies.iter().find(|p| p.id == ids[1])?;
        (!p.up).then(|| p.error.clone())
    })
    .expect("the paused proxy is shown down");
    assert!(down.is_some_and(|e| e.contains("no answer") || e.contains("unreachable")));
    let (_, text) = http_get(&s.dash.addr(), "/metrics", Duration::from_secs(5)).expect("metrics");
    let m = Metrics::parse(&text);
    assert_eq!(
        m.value("shardis_proxy_up", &[("proxy", &ids[1])]),
        Some(0.0)
    );
    let log = c.slowlog(5).expect("slowlog with a proxy down");
    assert_eq!(log.errors.len(), 1, "{log:?}");
    s.proxies[1].resume();
}
