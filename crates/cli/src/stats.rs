//! `shardis stats` (a top-like view of the cluster's traffic: per proxy,
//! per command, per server) and `shardis slowlog` (the proxies' slowest
//! recent requests), both read from the dashboard's collection.

use std::fmt::Write as _;

use shardis_dashboard::api::{ClusterStats, SlowlogResponse};

/// Columns aligned, two spaces apart; `right[i]` right-aligns column `i`
/// (numbers), the last column is not padded when left-aligned.
pub fn table(headers: &[&str], right: &[bool], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                let _ = write!(text, "{cell:>w$}");
            } else {
                let _ = write!(text, "{cell:<w$}");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for row in rows {
        line(&mut row.iter().map(String::as_str));
    }
    out
}

/// A rate: no decimals from 10 up.
pub fn rate(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        group_digits(v.round() as u64)
    } else {
        format!("{v:.1}")
    }
}

/// 1234567 -> "1,234,567".
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Microseconds as µs, ms or s; "-" for none.
pub fn latency(us: f64) -> String {
    if us <= 0.0 {
        "-".into()
    } else if us < 1000.0 {
        format!("{us:.0}µs")
    } else if us < 1_000_000.0 {
        format!("{:.2}ms", us / 1000.0)
    } else {
        format!("{:.2}s", us / 1_000_000.0)
    }
}

fn bytes(n: Option<u64>) -> String {
    let Some(n) = n else { return "-".into() };
    let n = n as f64;
    let (v, unit) = if n >= (1u64 << 30) as f64 {
        (n / (1u64 << 30) as f64, "GiB")
    } else if n >= (1u64 << 20) as f64 {
        (n / (1u64 << 20) as f64, "MiB")
    } else if n >= 1024.0 {
        (n / 1024.0, "KiB")
    } else {
        return format!("{n} B");
    };
    format!("{v:.1} {unit}")
}

fn opt(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), group_digits)
}

/// The whole screen of `shardis stats`: totals, proxies, commands, servers.
pub fn render_stats(s: &ClusterStats, commands: usize) -> String {
    let mut out = String::new();
    let up = s.proxies.iter().filter(|p| p.up).count();
    let _ = writeln!(
        out,
        "{} req/s  {} err/s  p50 {}  p99 {}  p99.9 {}  {} connections  {}/{} proxies answering{}",
        rate(s.ops_per_sec),
        rate(s.errors_per_sec),
        latency(s.p50_us),
        latency(s.p99_us),
        latency(s.p999_us),
        group_digits(s.sessions),
        up,
        s.proxies.len(),
        if s.interval_secs > 0.0 {
            format!(" (over the last {:.1}s)", s.interval_secs)
        } else {
            " (rates from the second collection on)".to_string()
        }
    );
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .proxies
        .iter()
        .map(|p| {
            let state = if !p.up {
                format!("down: {}", p.error.as_deref().unwrap_or("no answer"))
            } else if p.fenced {
                "fenced".into()
            } else if !p.stats_enabled {
                "up (stats off)".into()
            } else {
                "up".into()
            };
            vec![
                p.id.clone(),
                p.addr.clone(),
                rate(p.ops_per_sec),
                rate(p.errors_per_sec),
                latency(p.p50_us),
                latency(p.p99_us),
                group_digits(p.sessions),
                p.topology_version.to_string(),
                group_digits(p.slowlog_len as u64),
                state,
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "PROXY", "ADDR", "REQ/S", "ERR/S", "P50", "P99", "CONNS", "VERSION", "SLOWLOG", "STATE",
        ],
        &[
            false, false, true, true, true, true, true, true, true, false,
        ],
        &rows,
    ));
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .commands
        .iter()
        .take(commands)
        .map(|c| {
            vec![
                c.cmd.to_ascii_uppercase(),
                rate(c.ops_per_sec),
                rate(c.errors_per_sec),
                latency(c.p50_us),
                latency(c.p99_us),
                group_digits(c.calls),
                group_digits(c.errors),
            ]
        })
        .collect();
    out.push_str(&table(
        &["COMMAND", "REQ/S", "ERR/S", "P50", "P99", "CALLS", "ERRORS"],
        &[false, true, true, true, true, true, true],
        &rows,
    ));
    if s.commands.len() > commands {
        let _ = writeln!(out, "({} more commands)", s.commands.len() - commands);
    }
    out.push('\n');
    let rows: Vec<Vec<String>> = s
        .servers
        .iter()
        .map(|v| {
            vec![
                v.group.to_string(),
                v.addr.clone(),
                v.role.clone(),
                if v.up {
                    v.link_status
                        .as_ref()
                        .map_or_else(|| "up".into(), |l| format!("link {l}"))
                } else {
                    format!("down: {}", v.error.as_deref().unwrap_or("no answer"))
                },
                bytes(v.used_memory),
                opt(v.keys),
                opt(v.ops_per_sec),
                opt(v.connected_clients),
                if v.role == "replica" {
                    bytes(v.lag_bytes)
                } else {
                    "-".into()
                },
            ]
        })
        .collect();
    out.push_str(&table(
        &[
            "GROUP", "SERVER", "ROLE", "STATE", "MEMORY", "KEYS", "OPS/S", "CLIENTS", "LAG",
        ],
        &[true, false, false, false, true, true, true, true, true],
        &rows,
    ));
    out
}

/// `shardis slowlog`: newest first.
pub fn render_slowlog(r: &SlowlogResponse) -> String {
    let mut out = String::new();
    let rows: Vec<Vec<String>> = r
        .entries
        .iter()
        .map(|e| {
            let e2 = &e.entry;
            let client = if e2.client_name.is_empty() {
                e2.client.clone()
            } else {
                format!("{} ({})", e2.client, e2.client_name)
            };
            vec![
                clock(e2.time),
                e.proxy.clone(),
                latency(e2.duration_us as f64),
                e2.command.to_ascii_uppercase(),
                e2.key.clone(),
                client,
            ]
        })
        .collect();
    if rows.is_empty() {
        out.push_str("the slowlogs are empty\n");
    } else {
        out.push_str(&table(
            &[
                "TIME (UTC)",
                "PROXY",
                "DURATION",
                "COMMAND",
                "KEY",
                "CLIENT",
            ],
            &[false, false, true, false, false, false],
            &rows,
        ));
    }
    for e in &r.errors {
        let _ = writeln!(out, "not asked: {e}");
    }
    out
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SS` (UTC).
pub fn clock(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use shardis_dashboard::api::{CommandLoad, ProxyLoad, ProxySlowEntry, ServerLoad};
    use shardis_topology::stats::SlowlogEntry;

    #[test]
    fn numbers_read_well() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(1234567), "1,234,567");
        assert_eq!(rate(3.25), "3.2");
        assert_eq!(rate(12345.6), "12,346");
        assert_eq!(latency(0.0), "-");
        assert_eq!(latency(212.0), "212µs");
        assert_eq!(latency(1070.0), "1.07ms");
        assert_eq!(clock(0), "1970-01-01 00:00:00");
        assert_eq!(clock(1_795_000_000), "2026-11-18 11:06:40");
        assert_eq!(clock(951_782_400), "2000-02-29 00:00:00");
    }

    #[test]
    fn the_stats_screen_has_every_part() {
        let s = ClusterStats {
            ops_per_sec: 3949.0,
            p50_us: 212.0,
            p99_us: 1070.0,
            interval_secs: 1.0,
            sessions: 2,
            proxies: vec![ProxyLoad {
                id: "p1".into(),
                addr: "127.0.0.1:19000".into(),
                up: true,
                stats_enabled: true,
                ops_per_sec: 1742.0,
                ..ProxyLoad::default()
            }],
            commands: vec![CommandLoad {
                cmd: "get".into(),
                calls: 15079,
                ops_per_sec: 1973.0,
                ..CommandLoad::default()
            }],
            servers: vec![ServerLoad {
                group: 1,
                addr: "127.0.0.1:7001".into(),
                role: "master".into(),
                up: true,
                used_memory: Some(1_572_864),
                keys: Some(1510),
                ..ServerLoad::default()
            }],
            ..ClusterStats::default()
        };
        let text = render_stats(&s, 10);
        assert!(
            text.starts_with("3,949 req/s  0 err/s  p50 212µs  p99 1.07ms"),
            "{text}"
        );
        assert!(text.contains("p1     127.0.0.1:19000  1,742"), "{text}");
        assert!(text.contains("GET      1,973"), "{text}");
        assert!(text.contains("1.5 MiB  1,510"), "{text}");
        let log = SlowlogResponse {
            entries: vec![ProxySlowEntry {
                proxy: "p1".into(),
                entry: SlowlogEntry {
                    time: 0,
                    duration_us: 25_000,
                    command: "lrange".into(),
                    key: "big".into(),
                    client: "127.0.0.1:5".into(),
                    client_name: "app".into(),
                    id: 1,
                },
            }],
            errors: vec!["proxy p2: unreachable".into()],
        };
        let text = render_slowlog(&log);
        assert!(text.contains("1970-01-01 00:00:00  p1"), "{text}");
        assert!(
            text.contains("25.00ms  LRANGE   big  127.0.0.1:5 (app)"),
            "{text}"
        );
        assert!(text.contains("not asked: proxy p2: unreachable"), "{text}");
    }
}
