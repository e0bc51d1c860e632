//! `shardis`: the operator's command line for a Shardis cluster. Every
//! subcommand is one call of the dashboard's HTTP API (through the typed
//! client of `shardis_dashboard::client`), printed as readable tables, or as
//! the API's raw JSON with `--json`. An API error prints its text and exits 1.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use serde::Serialize;
use shardis_dashboard::api::{
    ChangeResponse, CreateMigration, GroupStatus, MigrationView, Overview, PromoteResponse,
    ProxyStatus, RebalanceResponse, Replication, Role, ServerStatus, SetRate, SlotInfo,
};
use shardis_dashboard::client::{Client, ClientError};
use shardis_topology::GroupId;

#[derive(Parser, Debug)]
#[command(
    name = "shardis",
    version,
    about = "Operate a Shardis cluster through its dashboard",
    after_help = "Examples:\n  shardis status\n  shardis group add 1\n  shardis server add 1 127.0.0.1:7001\n  \
                  shardis slots assign 0-511 1\n  shardis promote 1 127.0.0.1:7002"
)]
struct Cli {
    /// The dashboard's URL.
    #[arg(
        long,
        global = true,
        env = "SHARDIS_DASHBOARD",
        default_value = "http://127.0.0.1:18080"
    )]
    dashboard: String,
    /// Admin token for changes (when the dashboard has one).
    #[arg(long, global = true, env = "SHARDIS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// Print the API's raw JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    /// Refuse the change unless the topology is still at this version (If-Match).
    #[arg(long, global = true, value_name = "VERSION")]
    if_version: Option<u64>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Groups, slot ranges, servers with roles and replication, proxies, leader.
    Status,
    /// Create, delete or list groups.
    Group {
        #[command(subcommand)]
        action: GroupCmd,
    },
    /// Add or remove a group's servers.
    Server {
        #[command(subcommand)]
        action: ServerCmd,
    },
    /// Make a replica its group's master (planned switchover; failover when
    /// the master is unreachable).
    Promote { group: GroupId, addr: String },
    /// List slots (as ranges), or assign unassigned ones.
    Slots {
        #[command(subcommand)]
        action: Option<SlotsCmd>,
    },
    /// Registered proxies with their applied topology version and health.
    Proxies,
    /// Move slots to another group online (e.g. `shardis migrate 0-511 --to 2 --wait`).
    Migrate {
        /// Slot ranges, e.g. 0-511 or 0-99,200.
        ranges: String,
        /// The group that receives the slots.
        #[arg(long)]
        to: GroupId,
        /// Slots per wave (one scan of the source per wave).
        #[arg(long)]
        wave_size: Option<usize>,
        /// Rate limit in keys per second (0: unlimited).
        #[arg(long)]
        keys_per_sec: Option<u64>,
        /// Rate limit in bytes per second (0: unlimited).
        #[arg(long)]
        bytes_per_sec: Option<u64>,
        /// Copy, wait for the target's replicas, then delete on the source.
        #[arg(long)]
        safe: bool,
        /// Show a live progress bar until the migration ends.
        #[arg(long)]
        wait: bool,
    },
    /// List migrations (newest first), or show one.
    Migrations { id: Option<u64> },
    /// Pause, resume, stop a migration, or change its rate limit.
    Migration {
        #[command(subcommand)]
        action: MigrationCmd,
    },
    /// Spread the slots evenly over the groups (fewest moves).
    Rebalance {
        /// Only print the plan.
        #[arg(long)]
        dry_run: bool,
        /// Spread over these groups only, e.g. 1,2 (default: every group with a master).
        #[arg(long, value_delimiter = ',')]
        groups: Option<Vec<GroupId>>,
        /// Follow the migrations until they end.
        #[arg(long)]
        wait: bool,
    },
    /// Wait until every live proxy applied a topology version.
    Barrier {
        /// Default: the current version.
        #[arg(long)]
        version: Option<u64>,
        /// Default: the dashboard's barrier timeout.
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
}

#[derive(Subcommand, Debug)]
enum MigrationCmd {
    /// Stop moving keys (a wave in flight stays migrating; proxies move keys on access).
    Pause { id: u64 },
    /// Continue a paused migration.
    Resume { id: u64 },
    /// Complete the wave in flight, then stop (every slot wholly on one group).
    Stop { id: u64 },
    /// Change the rate limit (0: unlimited).
    Rate {
        id: u64,
        #[arg(long)]
        keys_per_sec: Option<u64>,
        #[arg(long)]
        bytes_per_sec: Option<u64>,
    },
    /// Follow a migration with a progress bar until it ends.
    Wait { id: u64 },
}

#[derive(Subcommand, Debug)]
enum GroupCmd {
    /// Create an empty group.
    Add { id: GroupId },
    /// Delete a group that owns no slots.
    Del { id: GroupId },
    /// List groups with their servers.
    List,
}

#[derive(Subcommand, Debug)]
enum ServerCmd {
    /// Add a server: the first becomes the master (must be empty unless
    /// --force); others become replicas, which DISCARDS their data.
    Add {
        group: GroupId,
        addr: String,
        #[arg(long)]
        force: bool,
    },
    /// Remove a server (a replica is detached; a master only when it is the
    /// group's last server and the group has no slots).
    Del { group: GroupId, addr: String },
}

#[derive(Subcommand, Debug)]
enum SlotsCmd {
    /// Slot ranges with their state and group.
    List,
    /// Give unassigned slots (e.g. 0-511 or 0-99,200) to a group.
    Assign { ranges: String, group: GroupId },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let client = Client::new(&cli.dashboard, cli.token.clone()).if_version(cli.if_version);
    match run(&cli, &client) {
        Ok(out) => {
            print!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            report(&e, cli.json);
            ExitCode::FAILURE
        }
    }
}

/// Prints an error: the API's JSON body with `--json`, readable text otherwise.
fn report(e: &ClientError, json: bool) {
    if let (true, ClientError::Api { body, .. }) = (json, e) {
        println!("{}", pretty(body));
        return;
    }
    eprintln!("shardis: {e}");
    if let ClientError::Api { body, .. } = e {
        if let Some(leader) = &body.leader {
            eprintln!("  the leader is {} at http://{}", leader.id, leader.addr);
        }
        for p in &body.lagging {
            eprintln!(
                "  lagging: proxy {} ({}) at version {}",
                p.id, p.addr, p.applied_version
            );
        }
    }
}

fn pretty<T: Serialize>(v: &T) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|e| format!("(cannot print: {e})"))
}

fn run(cli: &Cli, c: &Client) -> Result<String, ClientError> {
    let json = cli.json;
    let out = |text: String, raw: String| if json { raw + "\n" } else { text };
    Ok(match &cli.command {
        Command::Status => {
            let o = c.overview()?;
            out(render_status(&o), pretty(&o))
        }
        Command::Group { action } => match action {
            GroupCmd::Add { id } => {
                let r = c.create_group(*id)?;
                out(render_change(&r), pretty(&r))
            }
            GroupCmd::Del { id } => {
                let r = c.delete_group(*id)?;
                out(render_change(&r), pretty(&r))
            }
            GroupCmd::List => {
                let r = c.groups()?;
                out(render_groups(&r.groups), pretty(&r))
            }
        },
        Command::Server { action } => match action {
            ServerCmd::Add { group, addr, force } => {
                let r = c.add_server(*group, addr, *force)?;
                out(render_change(&r), pretty(&r))
            }
            ServerCmd::Del { group, addr } => {
                let r = c.remove_server(*group, addr)?;
                out(render_change(&r), pretty(&r))
            }
        },
        Command::Promote { group, addr } => {
            let r = c.promote(*group, addr)?;
            out(render_promote(&r), pretty(&r))
        }
        Command::Slots { action } => match action {
            None | Some(SlotsCmd::List) => {
                let r = c.slots()?;
                out(
                    format!("topology version {}\n{}", r.version, render_slots(&r.slots)),
                    pretty(&r),
                )
            }
            Some(SlotsCmd::Assign { ranges, group }) => {
                let r = c.assign_slots(ranges, *group)?;
                out(render_change(&r), pretty(&r))
            }
        },
        Command::Proxies => {
            let r = c.proxies()?;
            out(
                format!(
                    "topology version {}\n{}",
                    r.version,
                    render_proxies(&r.proxies)
                ),
                pretty(&r),
            )
        }
        Command::Migrate {
            ranges,
            to,
            wave_size,
            keys_per_sec,
            bytes_per_sec,
            safe,
            wait,
        } => {
            let req = CreateMigration {
                slots: ranges.clone(),
                to_group: *to,
                wave_size: *wave_size,
                keys_per_sec: *keys_per_sec,
                bytes_per_sec: *bytes_per_sec,
                safe: Some(*safe),
            };
            let m = c.create_migration(&req)?;
            if *wait && !json {
                println!("migration {} started", m.id);
                let end = follow(c, &[m.id])?;
                render_migrations(&end)
            } else {
                out(render_migration(&m), pretty(&m))
            }
        }
        Command::Migrations { id } => match id {
            Some(id) => {
                let m = c.migration(*id)?;
                out(render_migration(&m), pretty(&m))
            }
            None => {
                let all = c.migrations()?;
                out(render_migrations(&all), pretty(&all))
            }
        },
        Command::Migration { action } => {
            let m = match action {
                MigrationCmd::Pause { id } => c.steer_migration(*id, "pause")?,
                MigrationCmd::Resume { id } => c.steer_migration(*id, "resume")?,
                MigrationCmd::Stop { id } => c.steer_migration(*id, "stop")?,
                MigrationCmd::Rate {
                    id,
                    keys_per_sec,
                    bytes_per_sec,
                } => c.set_migration_rate(
                    *id,
                    &SetRate {
                        keys_per_sec: *keys_per_sec,
                        bytes_per_sec: *bytes_per_sec,
                    },
                )?,
                MigrationCmd::Wait { id } => {
                    let end = follow(c, &[*id])?;
                    return Ok(if json {
                        pretty(&end) + "\n"
                    } else {
                        render_migrations(&end)
                    });
                }
            };
            out(render_migration(&m), pretty(&m))
        }
        Command::Rebalance {
            dry_run,
            groups,
            wait,
        } => {
            let r = c.rebalance(*dry_run, groups.as_deref())?;
            let mut text = render_rebalance(&r);
            if *wait && !json && !r.migrations.is_empty() {
                print!("{text}");
                let end = follow(c, &r.migrations)?;
                text = render_migrations(&end);
            }
            out(text, pretty(&r))
        }
        Command::Barrier {
            version,
            timeout_ms,
        } => {
            let r = c.barrier(*version, timeout_ms.map(Duration::from_millis))?;
            out(
                format!(
                    "all {} live proxies applied topology version {}\n",
                    r.proxies, r.version
                ),
                pretty(&r),
            )
        }
    })
}

// ---------------------------------------------------------------------------
// Migrations
// ---------------------------------------------------------------------------

fn is_over(m: &MigrationView) -> bool {
    matches!(m.state.as_str(), "finished" | "stopped" | "failed")
}

/// Polls the migrations with a progress bar on stderr until all ended (or
/// one is paused); their last state.
fn follow(c: &Client, ids: &[u64]) -> Result<Vec<MigrationView>, ClientError> {
    use std::io::Write as _;
    loop {
        let mut all = Vec::new();
        for id in ids {
            all.push(c.migration(*id)?);
        }
        let mut line = String::new();
        for m in &all {
            line.push_str(&progress_line(m));
            line.push_str("  ");
        }
        let mut err = std::io::stderr();
        let _ = write!(err, "\r{:<150}", line.trim_end());
        let _ = err.flush();
        if all.iter().all(|m| is_over(m) || m.state == "paused") {
            let _ = writeln!(err);
            return Ok(all);
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn progress_line(m: &MigrationView) -> String {
    let total = m.slots_total.max(1);
    let width = 30;
    let filled = m.slots_done * width / total;
    let remaining = m.slots_total.saturating_sub(m.slots_done);
    let per_slot = if m.slots_done > 0 {
        m.elapsed_secs / m.slots_done as f64
    } else {
        0.0
    };
    let eta = if m.slots_done > 0 && !is_over(m) {
        format!(" ETA {:.0}s", per_slot * remaining as f64)
    } else {
        String::new()
    };
    format!(
        "#{} [{}{}] {}/{} slots, {} keys, {:.0} keys/s, {:.1}s {}{}{}",
        m.id,
        "#".repeat(filled),
        ".".repeat(width - filled),
        m.slots_done,
        m.slots_total,
        m.keys_moved,
        m.keys_per_sec,
        m.elapsed_secs,
        m.state,
        eta,
        m.reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default()
    )
}

fn render_migration(m: &MigrationView) -> String {
    let mut out = format!(
        "migration {}: {} — slots {} to group {}\n  {}/{} slots done, {} keys ({}) moved, {:.0} \
         keys/s, {:.1}s\n  wave size {}, limits {} keys/s {} bytes/s (0: unlimited){}{}\n",
        m.id,
        m.state,
        m.slots,
        m.to_group,
        m.slots_done,
        m.slots_total,
        m.keys_moved,
        human_bytes(m.bytes_moved),
        m.keys_per_sec,
        m.elapsed_secs,
        m.wave_size,
        m.keys_per_sec_limit,
        m.bytes_per_sec_limit,
        if m.safe { ", safe mode" } else { "" },
        if m.stop_requested {
            ", stop requested"
        } else {
            ""
        },
    );
    for run in &m.slot_states {
        let _ = writeln!(
            out,
            "  slots {}: {} {}{}",
            run.slots,
            run.state,
            run.group,
            run.target.map(|t| format!(" -> {t}")).unwrap_or_default()
        );
    }
    if let Some(r) = &m.reason {
        let _ = writeln!(out, "  waiting: {r}");
    }
    if let Some(e) = &m.error {
        let _ = writeln!(out, "  error: {e}");
    }
    for check in &m.checks {
        let _ = writeln!(out, "  check: {check}");
    }
    out
}

fn render_migrations(all: &[MigrationView]) -> String {
    if all.is_empty() {
        return "no migrations\n".into();
    }
    let rows: Vec<Vec<String>> = all
        .iter()
        .map(|m| {
            vec![
                m.id.to_string(),
                m.state.clone(),
                m.slots.clone(),
                m.to_group.to_string(),
                format!("{}/{}", m.slots_done, m.slots_total),
                m.keys_moved.to_string(),
                format!("{:.0}", m.keys_per_sec),
                format!("{:.1}s", m.elapsed_secs),
                m.error
                    .clone()
                    .or_else(|| m.reason.clone())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "SLOTS", "TO", "DONE", "KEYS", "KEYS/S", "ELAPSED", "NOTE",
        ],
        &rows,
    )
}

fn render_rebalance(r: &RebalanceResponse) -> String {
    let mut out = String::new();
    let target: Vec<String> = r
        .target
        .iter()
        .map(|(g, n)| format!("group {g}: {n}"))
        .collect();
    let _ = writeln!(out, "slots per group after: {}", target.join(", "));
    if r.moves.is_empty() {
        out.push_str("already balanced: nothing to move\n");
        return out;
    }
    let rows: Vec<Vec<String>> = r
        .moves
        .iter()
        .map(|m| {
            vec![
                m.from.to_string(),
                m.to.to_string(),
                m.count.to_string(),
                m.slots.clone(),
            ]
        })
        .collect();
    out.push_str(&table(&["FROM", "TO", "COUNT", "SLOTS"], &rows));
    if r.dry_run {
        out.push_str("dry run: nothing started\n");
    } else {
        let ids: Vec<String> = r.migrations.iter().map(u64::to_string).collect();
        let _ = writeln!(out, "started migrations {}", ids.join(", "));
    }
    out
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

// ---------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------

/// Left-aligned columns, two spaces apart; the last column is not padded.
fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &mut dyn Iterator<Item = &str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i > 0 {
                text.push_str("  ");
            }
            let _ = write!(text, "{cell:<w$}");
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(&mut out, &mut headers.iter().copied());
    for row in rows {
        line(&mut out, &mut row.iter().map(String::as_str));
    }
    out
}

fn dash(v: Option<String>) -> String {
    v.unwrap_or_else(|| "-".into())
}

fn render_status(o: &Overview) -> String {
    let mut s = String::new();
    let role = match o.dashboard.role {
        Role::Leader => "leader".to_string(),
        Role::Standby => match &o.dashboard.leader {
            Some(l) => format!("standby; the leader is {} at {}", l.id, l.addr),
            None => "standby; no dashboard leads right now".to_string(),
        },
    };
    let _ = writeln!(
        s,
        "cluster {}  topology version {}  dashboard {} ({role})",
        o.cluster, o.version, o.dashboard.id
    );
    s.push('\n');
    if o.groups.is_empty() {
        s.push_str("no groups yet (shardis group add 1)\n");
    } else {
        s.push_str(&render_groups(&o.groups));
    }
    let _ = writeln!(
        s,
        "\nunassigned slots: {}",
        if o.unassigned_slots.is_empty() {
            "none"
        } else {
            &o.unassigned_slots
        }
    );
    if !o.busy_slots.is_empty() {
        let _ = writeln!(s, "held or migrating slots: {}", o.busy_slots);
    }
    s.push('\n');
    if o.proxies.is_empty() {
        s.push_str("no proxies registered\n");
    } else {
        s.push_str(&render_proxies(&o.proxies));
    }
    s
}

fn replication_cells(server: &ServerStatus) -> [String; 4] {
    match &server.replication {
        None => ["unreachable".into(), "-".into(), "-".into(), "-".into()],
        Some(r) => [
            r.role.clone(),
            link(r),
            r.processed_offset().to_string(),
            dash(server.lag_bytes.map(|b| format!("{b} B"))),
        ],
    }
}

fn link(r: &Replication) -> String {
    if r.is_master() {
        return format!("{} replicas", r.connected_replicas);
    }
    let mut text = format!(
        "{} {}",
        r.master.as_deref().unwrap_or("?"),
        r.master_link_status.as_deref().unwrap_or("?")
    );
    if r.master_sync_in_progress {
        text.push_str(" (syncing)");
    }
    text
}

fn render_groups(groups: &[GroupStatus]) -> String {
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for g in groups {
        let slots = if g.slots.is_empty() {
            "-".to_string()
        } else {
            g.slots.clone()
        };
        if g.servers.is_empty() {
            rows.push(vec![
                g.id.to_string(),
                slots.clone(),
                g.slot_count.to_string(),
                "(no servers)".into(),
            ]);
        }
        for (i, server) in g.servers.iter().enumerate() {
            let [redis_role, link, offset, lag] = replication_cells(server);
            let first = i == 0;
            rows.push(vec![
                if first {
                    g.id.to_string()
                } else {
                    String::new()
                },
                if first { slots.clone() } else { String::new() },
                if first {
                    g.slot_count.to_string()
                } else {
                    String::new()
                },
                server.addr.clone(),
                format!("{:?}", server.role).to_lowercase(),
                redis_role,
                link,
                offset,
                lag,
                dash(server.keys.map(|k| k.to_string())),
            ]);
            if let Some(e) = &server.error {
                problems.push(format!("  ! {}: {e}", server.addr));
            }
        }
    }
    let mut s = table(
        &[
            "GROUP", "SLOTS", "COUNT", "SERVER", "ROLE", "REDIS", "LINK", "OFFSET", "LAG", "KEYS",
        ],
        &rows,
    );
    for p in problems {
        s.push_str(&p);
        s.push('\n');
    }
    s
}

fn uptime(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        s => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn render_proxies(proxies: &[ProxyStatus]) -> String {
    let rows: Vec<Vec<String>> = proxies
        .iter()
        .map(|p| {
            vec![
                p.id.clone(),
                p.addr.clone(),
                p.admin_addr.clone(),
                format!(
                    "{}{}",
                    p.applied_version,
                    if p.lagging { " (lagging)" } else { "" }
                ),
                p.health.clone(),
                uptime(p.uptime_secs),
            ]
        })
        .collect();
    table(
        &["PROXY", "ADDR", "ADMIN", "APPLIED", "HEALTH", "UPTIME"],
        &rows,
    )
}

/// Slots as runs of equal state and group.
fn render_slots(slots: &[SlotInfo]) -> String {
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut run: Option<(usize, usize, &SlotInfo)> = None;
    let mut flush = |(a, b, info): (usize, usize, &SlotInfo)| {
        let group = match (info.group, info.target) {
            (Some(g), Some(t)) => format!("{g} -> {t}"),
            (Some(g), None) => g.to_string(),
            _ => "-".into(),
        };
        let range = if a == b {
            a.to_string()
        } else {
            format!("{a}-{b}")
        };
        rows.push(vec![
            range,
            (b - a + 1).to_string(),
            info.state.clone(),
            group,
        ]);
    };
    for info in slots {
        run = match run {
            Some((a, b, prev))
                if info.slot == b + 1
                    && prev.state == info.state
                    && prev.group == info.group
                    && prev.target == info.target =>
            {
                Some((a, info.slot, prev))
            }
            Some(done) => {
                flush(done);
                Some((info.slot, info.slot, info))
            }
            None => Some((info.slot, info.slot, info)),
        };
    }
    if let Some(done) = run {
        flush(done);
    }
    table(&["SLOTS", "COUNT", "STATE", "GROUP"], &rows)
}

fn render_change(r: &ChangeResponse) -> String {
    let mut s = format!("{} (topology version {})\n", r.message, r.version);
    if let Some(rep) = &r.replication {
        let _ = writeln!(
            s,
            "replication: role {}, {}, offset {}",
            rep.role,
            link(rep),
            rep.processed_offset()
        );
    }
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    s
}

fn render_promote(r: &PromoteResponse) -> String {
    let mut s = String::new();
    for step in &r.steps {
        let _ = writeln!(s, "  {step}");
    }
    let _ = writeln!(
        s,
        "{} is the master of group {} now (was {}; topology version {}){}",
        r.master,
        r.group,
        r.old_master,
        r.version,
        if r.failover { " — FAILOVER" } else { "" }
    );
    for w in &r.warnings {
        let _ = writeln!(s, "warning: {w}");
    }
    for p in &r.lagging {
        let _ = writeln!(
            s,
            "lagging: proxy {} ({}) at version {}",
            p.id, p.addr, p.applied_version
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align() {
        let t = table(
            &["A", "LONGER"],
            &[vec!["xxxx".into(), "1".into()], vec!["y".into(), "".into()]],
        );
        assert_eq!(t, "A     LONGER\nxxxx  1\ny\n");
    }

    #[test]
    fn slots_render_as_runs() {
        let info = |slot, state: &str, group| SlotInfo {
            slot,
            state: state.into(),
            group,
            target: None,
        };
        let slots = vec![
            info(0, "normal", Some(1)),
            info(1, "normal", Some(1)),
            info(2, "held", Some(1)),
            info(3, "unassigned", None),
        ];
        let text = render_slots(&slots);
        assert!(text.contains("0-1    2      normal      1"), "{text}");
        assert!(text.contains("2      1      held        1"), "{text}");
        assert!(text.contains("3      1      unassigned  -"), "{text}");
    }

    #[test]
    fn uptimes_read_well() {
        assert_eq!(uptime(5), "5s");
        assert_eq!(uptime(125), "2m5s");
        assert_eq!(uptime(7300), "2h1m");
        assert_eq!(uptime(90_000), "1d1h");
    }

    #[test]
    fn the_command_line_parses() {
        let cli =
            Cli::try_parse_from(["shardis", "--json", "server", "add", "1", "h:1", "--force"])
                .unwrap();
        assert!(cli.json);
        assert!(matches!(
            cli.command,
            Command::Server {
                action: ServerCmd::Add {
                    group: 1,
                    force: true,
                    ..
                }
            }
        ));
        let cli = Cli::try_parse_from(["shardis", "slots"]).unwrap();
        assert!(matches!(cli.command, Command::Slots { action: None }));
        let cli = Cli::try_parse_from(["shardis", "slots", "assign", "0-511", "1"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Slots {
                action: Some(SlotsCmd::Assign { group: 1, .. })
            }
        ));
        assert!(Cli::try_parse_from(["shardis", "group", "add", "x"]).is_err());
    }
}
