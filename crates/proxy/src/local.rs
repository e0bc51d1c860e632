//! Commands the proxy answers itself: connection handling (HELLO, AUTH,
//! CLIENT, SELECT, RESET, QUIT), introspection (COMMAND, INFO) and the few
//! that need no key (PING, ECHO, TIME).

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use shardis_resp::{Frame, Protocol, Request};

use crate::commands::{self, Command, KeySpec, Local, Route};
use crate::session::{Plan, Session};

fn bulk(s: impl Into<Bytes>) -> Frame {
    Frame::Bulk(s.into())
}
fn simple(s: &'static str) -> Frame {
    Frame::Simple(Bytes::from_static(s.as_bytes()))
}
fn status(s: &'static str) -> Frame {
    simple(s)
}

/// Redis's rule for client names and library info: printable, no spaces.
fn valid_client_text(v: &[u8]) -> bool {
    v.iter().all(|&c| (b'!'..=b'~').contains(&c))
}

impl Session {
    fn reply(&self, plan: &mut Plan, cmd: &Command, frame: Frame) {
        let mut out = BytesMut::new();
        frame.encode(self.proto, &mut out);
        plan.local(cmd.index, out.freeze());
    }

    pub(crate) fn local(&mut self, local: Local, cmd: &Command, req: &Request, plan: &mut Plan) {
        let args = &req.args;
        let arg = |i: usize| args.get(i).map(|a| a.as_ref()).unwrap_or_default();
        let upper = |i: usize| arg(i).to_ascii_uppercase();
        match local {
            Local::Ping => match args.len() {
                1 => plan.local(cmd.index, Bytes::from_static(b"+PONG\r\n")),
                2 => self.reply(plan, cmd, bulk(Bytes::copy_from_slice(arg(1)))),
                _ => plan.error(cmd.index, &commands::arity_error("ping")),
            },
            Local::Echo => self.reply(plan, cmd, bulk(Bytes::copy_from_slice(arg(1)))),
            Local::Quit => plan.close(cmd.index, Bytes::from_static(b"+OK\r\n")),
            Local::Reset => {
                self.refused_multi = false;
                self.proto = Protocol::Resp2;
                self.name = None;
                self.authed = self.shared.config.password.is_none();
                plan.local(cmd.index, Bytes::from_static(b"+RESET\r\n"));
            }
            Local::Select => match std::str::from_utf8(arg(1))
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                Some(0) => plan.local(cmd.index, Bytes::from_static(b"+OK\r\n")),
                Some(_) => plan.error(
                    cmd.index,
                    "ERR DB index is out of range: shardis-proxy serves database 0 only",
                ),
                None => plan.error(cmd.index, "ERR value is not an integer or out of range"),
            },
            Local::Auth => {
                let (user, pass) = match args.len() {
                    2 => (None, arg(1)),
                    3 => (Some(arg(1)), arg(2)),
                    _ => {
                        plan.error(cmd.index, "ERR syntax error");
                        return;
                    }
                };
                match self.check_auth(user, pass) {
                    Ok(()) => plan.local(cmd.index, Bytes::from_static(b"+OK\r\n")),
                    Err(e) => plan.error(cmd.index, e),
                }
            }
            Local::Hello => self.hello(cmd, req, plan),
            Local::Client => self.client(cmd, req, plan),
            Local::Command => self.command(cmd, req, plan),
            Local::Info => {
                let sections = || args.iter().skip(1).map(|a| a.as_ref());
                let mut text = self.info_text(sections());
                if info_wants(sections(), "keyspace", false) {
                    // No group has a master: no key anywhere to count.
                    text.push_str(&keyspace_text(&Keyspace::new()));
                }
                self.reply(plan, cmd, text_frame(self.proto, text));
            }
            Local::Time => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                self.reply(
                    plan,
                    cmd,
                    Frame::Array(vec![
                        bulk(now.as_secs().to_string()),
                        bulk(now.subsec_micros().to_string()),
                    ]),
                );
            }
            Local::Slowlog => match upper(1).as_slice() {
                b"GET" => {
                    let count = std::str::from_utf8(arg(2))
                        .ok()
                        .and_then(|s| s.parse::<i64>().ok())
                        .unwrap_or(10);
                    let frame = self.shared.slowlog.frame(count);
                    self.reply(plan, cmd, frame);
                }
                b"LEN" => self.reply(plan, cmd, Frame::Integer(self.shared.slowlog.len() as i64)),
                b"RESET" => {
                    self.shared.slowlog.reset();
                    plan.local(cmd.index, Bytes::from_static(b"+OK\r\n"));
                }
                _ => plan.error(
                    cmd.index,
                    &format!(
                        "ERR unknown subcommand '{}'. Try SLOWLOG HELP.",
                        String::from_utf8_lossy(arg(1))
                    ),
                ),
            },
        }
    }

    fn check_auth(&mut self, user: Option<&[u8]>, pass: &[u8]) -> Result<(), &'static str> {
        match &self.shared.config.password {
            None => {
                if user.is_none() {
                    return Err("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?");
                }
                if user != Some(b"default".as_slice()) {
                    return Err("WRONGPASS invalid username-password pair or user is disabled.");
                }
                self.authed = true;
                Ok(())
            }
            Some(pw) => {
                let user_ok = user.is_none_or(|u| u == b"default");
                if user_ok && constant_time_eq(pw.as_bytes(), pass) {
                    self.authed = true;
                    Ok(())
                } else {
                    Err("WRONGPASS invalid username-password pair or user is disabled.")
                }
            }
        }
    }

    fn hello(&mut self, cmd: &Command, req: &Request, plan: &mut Plan) {
        let args = &req.args;
        let mut proto = self.proto;
        let mut i = 1;
        if let Some(v) = args.get(1) {
            match std::str::from_utf8(v)
                .ok()
                .and_then(|s| s.parse::<i64>().ok())
            {
                Some(2) => proto = Protocol::Resp2,
                Some(3) => proto = Protocol::Resp3,
                Some(_) => {
                    plan.error(cmd.index, "NOPROTO unsupported protocol version");
                    return;
                }
                None => {
                    plan.error(
                        cmd.index,
                        "ERR Protocol version is not an integer or out of range",
                    );
                    return;
                }
            }
            i = 2;
        }
        let mut auth: Option<(&[u8], &[u8])> = None;
        let mut setname: Option<&Bytes> = None;
        while let Some(opt) = args.get(i) {
            let rest = args.len() - i - 1;
            if opt.eq_ignore_ascii_case(b"AUTH") && rest >= 2 {
                if let (Some(u), Some(p)) = (args.get(i + 1), args.get(i + 2)) {
                    auth = Some((u, p));
                }
                i += 3;
            } else if opt.eq_ignore_ascii_case(b"SETNAME") && rest >= 1 {
                setname = args.get(i + 1);
                i += 2;
            } else {
                plan.error(
                    cmd.index,
                    &format!(
                        "ERR Syntax error in HELLO option '{}'",
                        String::from_utf8_lossy(opt)
                    ),
                );
                return;
            }
        }
        if let Some((u, p)) = auth {
            if let Err(e) = self.check_auth(Some(u), p) {
                plan.error(cmd.index, e);
                return;
            }
        }
        if !self.authed {
            plan.error(cmd.index, "NOAUTH HELLO must be called with the client already authenticated, otherwise the HELLO <proto> AUTH <user> <pass> option can be used to authenticate the client and select the RESP protocol version at the same time");
            return;
        }
        if let Some(name) = setname {
            if !valid_client_text(name) {
                plan.error(
                    cmd.index,
                    "ERR Client names cannot contain spaces, newlines or special characters.",
                );
                return;
            }
            self.name = (!name.is_empty()).then(|| name.clone());
        }
        self.proto = proto;
        let version = self.shared.router.facts.version();
        let frame = Frame::Map(vec![
            (bulk("server"), bulk("redis")),
            (bulk("version"), bulk(version)),
            (
                bulk("proto"),
                Frame::Integer(if proto == Protocol::Resp3 { 3 } else { 2 }),
            ),
            (bulk("id"), Frame::Integer(self.id as i64)),
            (bulk("mode"), bulk("standalone")),
            (bulk("role"), bulk("master")),
            (bulk("modules"), Frame::Array(Vec::new())),
        ]);
        self.reply(plan, cmd, frame);
    }

    fn client(&mut self, cmd: &Command, req: &Request, plan: &mut Plan) {
        let args = &req.args;
        let arg = |i: usize| args.get(i).map(|a| a.as_ref()).unwrap_or_default();
        let sub = arg(1).to_ascii_uppercase();
        let wrong_args = |plan: &mut Plan| {
            plan.error(
                cmd.index,
                &format!(
                    "ERR wrong number of arguments for 'client|{}' command",
                    String::from_utf8_lossy(&sub).to_ascii_lowercase()
                ),
            )
        };
        // CLIENT ID, GETNAME, INFO and HELP take nothing more.
        if matches!(sub.as_slice(), b"ID" | b"GETNAME" | b"INFO" | b"HELP") && args.len() != 2 {
            return wrong_args(plan);
        }
        match sub.as_slice() {
            b"ID" => self.reply(plan, cmd, Frame::Integer(self.id as i64)),
            b"GETNAME" => {
                let f = match &self.name {
                    Some(n) => bulk(n.clone()),
                    None => Frame::Null,
                };
                self.reply(plan, cmd, f);
            }
            b"SETNAME" => {
                if args.len() != 3 {
                    return wrong_args(plan);
                }
                let name = args.get(2).cloned().unwrap_or_default();
                if !valid_client_text(&name) {
                    return plan.error(
                        cmd.index,
                        "ERR Client names cannot contain spaces, newlines or special characters.",
                    );
                }
                self.name = (!name.is_empty()).then_some(name);
                plan.local(cmd.index, Bytes::from_static(b"+OK\r\n"));
            }
            b"SETINFO" => {
                if args.len() != 4 {
                    return wrong_args(plan);
                }
                let value = args.get(3).cloned().unwrap_or_default();
                if !valid_client_text(&value) {
                    return plan.error(
                        cmd.index,
                        &format!(
                            "ERR {} cannot contain spaces, newlines or special characters.",
                            String::from_utf8_lossy(arg(2)).to_ascii_lowercase()
                        ),
                    );
                }
                match arg(2).to_ascii_uppercase().as_slice() {
                    b"LIB-NAME" => self.lib_name = Some(value),
                    b"LIB-VER" => self.lib_ver = Some(value),
                    _ => {
                        return plan.error(
                            cmd.index,
                            &format!("ERR Unrecognized option '{}'", String::from_utf8_lossy(arg(2))),
                        )
                    }
                }
                plan.local(cmd.index, Bytes::from_static(b"+OK\r\n"));
            }
            b"INFO" => {
                let line = self.client_line();
                self.reply(plan, cmd, text_frame(self.proto, line));
            }
            b"HELP" => self.reply(
                plan,
                cmd,
                Frame::Array(
                    [
                        "CLIENT <subcommand> [<arg> ...]. Subcommands served by shardis-proxy:",
                        "ID", "GETNAME", "SETNAME <name>", "SETINFO LIB-NAME|LIB-VER <value>", "INFO",
                    ]
                    .iter()
                    .map(|s| Frame::Simple(Bytes::from_static(s.as_bytes())))
                    .collect(),
                ),
            ),
            _ => plan.error(
                cmd.index,
                &format!(
                    "ERR CLIENT {} is not supported by shardis-proxy: backend connections are shared by many clients",
                    String::from_utf8_lossy(&sub)
                ),
            ),
        }
    }

    fn client_line(&self) -> String {
        let name = |b: &Option<Bytes>| {
            b.as_ref()
                .map(|n| String::from_utf8_lossy(n).into_owned())
                .unwrap_or_default()
        };
        format!(
            "id={} addr={} laddr={} fd=-1 name={} age={} idle=0 flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 resp={} lib-name={} lib-ver={}\n",
            self.id,
            self.peer,
            self.shared.config.listen,
            name(&self.name),
            self.created.elapsed().as_secs(),
            if self.proto == Protocol::Resp3 { 3 } else { 2 },
            name(&self.lib_name),
            name(&self.lib_ver),
        )
    }

    fn command(&mut self, cmd: &Command, req: &Request, plan: &mut Plan) {
        let args = &req.args;
        let table = commands::table();
        let sub = args
            .get(1)
            .map(|a| a.to_ascii_uppercase())
            .unwrap_or_default();
        match sub.as_slice() {
            // Bare COMMAND, and bare COMMAND INFO (Redis 7): every command.
            b"" | b"INFO" if args.len() <= 2 => {
                let all = table.served().map(command_info).collect();
                self.reply(plan, cmd, Frame::Array(all));
            }
            b"COUNT" | b"HELP" if args.len() != 2 => plan.error(
                cmd.index,
                &format!(
                    "ERR wrong number of arguments for 'command|{}' command",
                    String::from_utf8_lossy(&sub).to_ascii_lowercase()
                ),
            ),
            b"COUNT" => self.reply(plan, cmd, Frame::Integer(table.served().count() as i64)),
            b"INFO" => {
                let infos = args
                    .iter()
                    .skip(2)
                    .map(|n| match table.lookup(n) {
                        Some(c) if !matches!(c.route, Route::Refused(_)) => command_info(c),
                        _ => Frame::Null,
                    })
                    .collect();
                self.reply(plan, cmd, Frame::Array(infos));
            }
            b"LIST" => {
                let filter = args.get(2).map(|a| a.to_ascii_uppercase());
                let names = match (
                    filter.as_deref(),
                    args.get(3).map(|a| a.to_ascii_uppercase()),
                    args.get(4),
                ) {
                    (None, _, _) => table.served().map(|c| bulk(c.name)).collect(),
                    (Some(b"FILTERBY"), Some(by), Some(value)) if args.len() == 5 => {
                        match by.as_slice() {
                            b"PATTERN" => table
                                .served()
                                .filter(|c| glob_match(value, c.name.as_bytes()))
                                .map(|c| bulk(c.name))
                                .collect(),
                            // No module commands here.
                            b"MODULE" => Vec::new(),
                            b"ACLCAT" => {
                                return plan.error(
                                    cmd.index,
                                    "ERR COMMAND LIST FILTERBY ACLCAT is not supported by \
                                     shardis-proxy: it keeps no ACL categories",
                                )
                            }
                            _ => return plan.error(cmd.index, "ERR syntax error"),
                        }
                    }
                    _ => return plan.error(cmd.index, "ERR syntax error"),
                };
                self.reply(plan, cmd, Frame::Array(names));
            }
            // redis-cli asks for docs to show hints; having none is fine.
            b"DOCS" => self.reply(plan, cmd, Frame::Map(Vec::new())),
            b"GETKEYS" => {
                let rest: Vec<&Bytes> = args.iter().skip(2).collect();
                let Some(target) = rest.first().and_then(|n| table.lookup(n)) else {
                    return plan.error(cmd.index, "ERR Invalid command specified");
                };
                let mut pos = Vec::new();
                match commands::key_positions(target, &rest, &mut pos) {
                    Ok(()) if !pos.is_empty() => {
                        let keys = pos
                            .iter()
                            .filter_map(|&p| rest.get(p).map(|k| bulk((*k).clone())))
                            .collect();
                        self.reply(plan, cmd, Frame::Array(keys));
                    }
                    Ok(()) => plan.error(cmd.index, "ERR The command has no key arguments"),
                    Err(e) => plan.error(cmd.index, &e),
                }
            }
            _ => plan.error(
                cmd.index,
                &format!(
                    "ERR unknown subcommand '{}'. Try COMMAND HELP.",
                    String::from_utf8_lossy(&sub)
                ),
            ),
        }
    }

    /// The proxy's own INFO sections `server`, `clients`, `persistence`
    /// (`loading:0`), `stats`, `replication` (`role:master`: it takes
    /// writes), `commandstats`, `latencystats` (the caller adds `keyspace`,
    /// added up over the groups' masters, only when asked for by name).
    pub(crate) fn info_text<'a>(&self, sections: impl Iterator<Item = &'a [u8]> + Clone) -> String {
        let want = |name: &str| info_wants(sections.clone(), name, true);
        let shared = &self.shared;
        let stats = &shared.stats;
        let mut out = String::new();
        if want("server") {
            let uptime = shared.started.elapsed().as_secs();
            let _ = write!(
                out,
                "# Server\r\nredis_version:{}\r\nshardis_version:{}\r\nredis_mode:standalone\r\nproxy_id:{}\r\ncluster:{}\r\nprocess_id:{}\r\ntcp_port:{}\r\nuptime_in_seconds:{}\r\nuptime_in_days:{}\r\ntopology_version:{}\r\n\r\n",
                shared.router.facts.version(),
                env!("CARGO_PKG_VERSION"),
                shared.proxy_id,
                shared.config.cluster,
                std::process::id(),
                shared.config.listen.rsplit(':').next().unwrap_or_default(),
                uptime,
                uptime / 86_400,
                shared.router.load().version,
            );
        }
        if want("clients") {
            let _ = write!(
                out,
                "# Clients\r\nconnected_clients:{}\r\nmaxclients:{}\r\n\r\n",
                stats.sessions_current.load(Ordering::Relaxed),
                shared.config.max_clients,
            );
        }
        if want("persistence") {
            out.push_str("# Persistence\r\nloading:0\r\n\r\n");
        }
        if want("stats") {
            let _ = write!(
                out,
                "# Stats\r\ntotal_connections_received:{}\r\ntotal_commands_processed:{}\r\nrejected_connections:{}\r\ntotal_error_replies:{}\r\n\r\n",
                stats.sessions_total.load(Ordering::Relaxed),
                stats.ops_total(),
                stats.sessions_rejected.load(Ordering::Relaxed),
                stats.errors_total(),
            );
        }
        if want("replication") {
            // Writes are taken: to a client the proxy is a master.
            out.push_str("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n\r\n");
        }
        // As in Redis, only when asked for by name (or `all`, `everything`):
        // the proxy's own per-command counters and latencies (end to end,
        // backend round trip included).
        let named = |name: &str| info_wants(sections.clone(), name, false);
        let (commandstats, latencystats) = (named("commandstats"), named("latencystats"));
        if commandstats || latencystats {
            let commands = stats.commands();
            if commandstats {
                out.push_str("# Commandstats\r\n");
                for c in &commands {
                    let usec = c.latency.sum_us;
                    let _ = write!(
                        out,
                        "cmdstat_{}:calls={},usec={usec},usec_per_call={:.2},rejected_calls=0,failed_calls={}\r\n",
                        c.name,
                        c.calls,
                        usec as f64 / c.calls.max(1) as f64,
                        c.errors,
                    );
                }
                out.push_str("\r\n");
            }
            if latencystats {
                out.push_str("# Latencystats\r\n");
                for c in &commands {
                    let _ = write!(
                        out,
                        "latency_percentiles_usec_{}:p50={:.3},p99={:.3},p99.9={:.3}\r\n",
                        c.name,
                        c.latency.quantile_us(0.5),
                        c.latency.quantile_us(0.99),
                        c.latency.quantile_us(0.999),
                    );
                }
                out.push_str("\r\n");
            }
        }
        out
    }
}

/// Whether `INFO` with these sections shows section `name`: named, or
/// `all`/`everything`, or (for a section `in_default`) no section named or
/// `default`.
pub(crate) fn info_wants<'a>(
    mut sections: impl Iterator<Item = &'a [u8]>,
    name: &str,
    in_default: bool,
) -> bool {
    let mut any = false;
    let hit = sections.any(|s| {
        any = true;
        s.eq_ignore_ascii_case(name.as_bytes())
            || s.eq_ignore_ascii_case(b"all")
            || s.eq_ignore_ascii_case(b"everything")
            || (in_default && s.eq_ignore_ascii_case(b"default"))
    });
    hit || (in_default && !any)
}

/// A text reply as Redis gives one (`INFO`, `CLIENT INFO`): a verbatim
/// string in RESP3, a bulk string in RESP2.
pub(crate) fn text_frame(proto: Protocol, text: impl Into<Bytes>) -> Frame {
    match proto {
        Protocol::Resp3 => Frame::Verbatim {
            format: Bytes::from_static(b"txt"),
            text: text.into(),
        },
        Protocol::Resp2 => Frame::Bulk(text.into()),
    }
}

/// Keyspaces added up: db → keys, expires, avg_ttl × expires.
pub(crate) type Keyspace = std::collections::BTreeMap<u64, (u64, u64, u128)>;

/// Adds the `dbN:keys=…,expires=…,avg_ttl=…` lines of a master's `INFO
/// keyspace` to `dbs`.
pub(crate) fn add_keyspace(dbs: &mut Keyspace, text: &[u8]) {
    for line in text.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(rest) = line.strip_prefix(b"db") else {
            continue;
        };
        let mut name_fields = rest.splitn(2, |&b| b == b':');
        let (Some(name), Some(fields)) = (name_fields.next(), name_fields.next()) else {
            continue;
        };
        let Some(db) = std::str::from_utf8(name)
            .ok()
            .and_then(|d| d.parse::<u64>().ok())
        else {
            continue;
        };
        let (mut keys, mut expires, mut avg_ttl) = (0u64, 0u64, 0u64);
        for field in fields.split(|&b| b == b',') {
            let mut kv = field.splitn(2, |&b| b == b'=');
            let (Some(k), Some(v)) = (kv.next(), kv.next()) else {
                continue;
            };
            let v = std::str::from_utf8(v)
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            match k {
                b"keys" => keys = v,
                b"expires" => expires = v,
                b"avg_ttl" => avg_ttl = v,
                _ => {}
            }
        }
        let e = dbs.entry(db).or_default();
        e.0 = e.0.saturating_add(keys);
        e.1 = e.1.saturating_add(expires);
        e.2 =
            e.2.saturating_add(u128::from(avg_ttl) * u128::from(expires));
    }
}

/// The `# Keyspace` section of the added-up `dbs` (see [`add_keyspace`]),
/// as Redis writes it: databases with keys only.
pub(crate) fn keyspace_text(dbs: &Keyspace) -> String {
    let mut out = String::from("# Keyspace\r\n");
    for (db, &(keys, expires, ttl_sum)) in dbs {
        if keys > 0 {
            let avg_ttl = ttl_sum.checked_div(u128::from(expires)).unwrap_or(0);
            let _ = write!(
                out,
                "db{db}:keys={keys},expires={expires},avg_ttl={avg_ttl}\r\n"
            );
        }
    }
    out
}

/// `COMMAND INFO` format of Redis 7: name, arity, flags, first key, last
/// key, step, ACL categories, tips, key specs, subcommands.
fn command_info(c: &Command) -> Frame {
    let write = c.flags & commands::WRITE != 0;
    let read = c.flags & commands::READONLY != 0;
    let fast = c.flags & commands::FAST != 0;
    let mut flags = Vec::new();
    if write {
        flags.push(status("write"));
    }
    if read {
        flags.push(status("readonly"));
    }
    if fast {
        flags.push(status("fast"));
    }
    let (first, last, step) = match c.keys {
        KeySpec::Range { first, last, step } => (first as i64, last as i64, step as i64),
        KeySpec::None => (0, 0, 0),
        KeySpec::Sort | KeySpec::GeoRadius => (1, 1, 1),
        KeySpec::NumKeys { .. } | KeySpec::Streams => {
            flags.push(status("movablekeys"));
            (0, 0, 0)
        }
    };
    // The categories the flags tell (not the data type's). A script is
    // neither a read nor a write to Redis, and container commands leave
    // theirs to their subcommands.
    let script = c.name.starts_with("eval");
    let access = !script && !matches!(c.name, "object" | "xgroup" | "xinfo");
    let categories = [
        (write && access, "@write"),
        (read && access, "@read"),
        (script, "@scripting"),
        (fast, "@fast"),
        (!fast, "@slow"),
    ]
    .into_iter()
    .filter(|(on, _)| *on)
    .map(|(_, name)| status(name))
    .collect();
    Frame::Array(vec![
        bulk(c.name),
        Frame::Integer(c.arity as i64),
        Frame::Set(flags),
        Frame::Integer(first),
        Frame::Integer(last),
        Frame::Integer(step),
        Frame::Set(categories),
        Frame::Array(Vec::new()),
        Frame::Array(key_specs(c)),
        Frame::Array(Vec::new()),
    ])
}

/// Redis 7 key specs of `c`, from where the proxy finds its keys (access
/// flags coarse: `RW update` for writes, `RO access` for reads).
fn key_specs(c: &Command) -> Vec<Frame> {
    let map = |pairs: Vec<(&'static str, Frame)>| {
        Frame::Map(pairs.into_iter().map(|(k, v)| (bulk(k), v)).collect())
    };
    let int = |n: i64| Frame::Integer(n);
    let flags = |write: bool| {
        Frame::Array(if write {
            vec![status("RW"), status("update")]
        } else {
            vec![status("RO"), status("access")]
        })
    };
    let spec = |write: bool, begin: Frame, find: Frame| {
        map(vec![
            ("flags", flags(write)),
            ("begin_search", begin),
            ("find_keys", find),
        ])
    };
    let index = |i: i64| {
        map(vec![
            ("type", bulk("index")),
            ("spec", map(vec![("index", int(i))])),
        ])
    };
    let range = |lastkey: i64, keystep: i64, limit: i64| {
        map(vec![
            ("type", bulk("range")),
            (
                "spec",
                map(vec![
                    ("lastkey", int(lastkey)),
                    ("keystep", int(keystep)),
                    ("limit", int(limit)),
                ]),
            ),
        ])
    };
    let write = c.is_write();
    match c.keys {
        KeySpec::None => Vec::new(),
        KeySpec::Range { first, last, step } => {
            let lastkey = if last < 0 {
                i64::from(last)
            } else {
                i64::from(last) - first as i64
            };
            vec![spec(
                write,
                index(first as i64),
                range(lastkey, step as i64, 0),
            )]
        }
        KeySpec::Sort | KeySpec::GeoRadius => vec![spec(write, index(1), range(0, 1, 0))],
        KeySpec::NumKeys { at, dest } => {
            let keynum = map(vec![
                ("type", bulk("keynum")),
                (
                    "spec",
                    map(vec![
                        ("keynumidx", int(0)),
                        ("firstkey", int(1)),
                        ("keystep", int(1)),
                    ]),
                ),
            ]);
            let mut specs = Vec::new();
            if dest {
                specs.push(spec(true, index(1), range(0, 1, 0)));
            }
            specs.push(spec(write && !dest, index(at as i64), keynum));
            specs
        }
        KeySpec::Streams => {
            let keyword = map(vec![
                ("type", bulk("keyword")),
                (
                    "spec",
                    map(vec![("keyword", bulk("STREAMS")), ("startfrom", int(1))]),
                ),
            ]);
            vec![spec(write, keyword, range(-1, 1, 2))]
        }
    }
}

/// Compares secrets without an early exit that would time-leak the prefix.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Redis's glob match (`*`, `?`, `[abc]`, `[a-z]`, `[^a]`, `\\x`), without
/// case: command names are matched as Redis matches them for `COMMAND LIST
/// FILTERBY PATTERN`.
fn glob_match(pattern: &[u8], name: &[u8]) -> bool {
    let eq = |a: u8, b: u8| a.eq_ignore_ascii_case(&b);
    let (mut pi, mut ni) = (0, 0);
    // Where the last `*` was, and where in `name` it matches up to.
    let mut star: Option<(usize, usize)> = None;
    while let Some(&c) = name.get(ni) {
        if let Some(next) = step(pattern, pi, c, eq) {
            match next {
                GlobStep::Star => {
                    star = Some((pi, ni));
                    pi += 1;
                }
                GlobStep::Matched(p) => {
                    pi = p;
                    ni += 1;
                }
            }
            continue;
        }
        match star {
            Some((sp, sn)) => {
                pi = sp + 1;
                ni = sn + 1;
                star = Some((sp, sn + 1));
            }
            None => return false,
        }
    }
    pattern
        .get(pi..)
        .unwrap_or_default()
        .iter()
        .all(|&c| c == b'*')
}

/// What the pattern at `pi` does with the name's byte `c`.
enum GlobStep {
    /// A `*`: matches any run, decided by backtracking.
    Star,
    /// `c` matches; the pattern goes on at this index.
    Matched(usize),
}

fn step(p: &[u8], pi: usize, c: u8, eq: impl Fn(u8, u8) -> bool) -> Option<GlobStep> {
    let at = |i: usize| p.get(i).copied();
    match at(pi)? {
        b'*' => Some(GlobStep::Star),
        b'?' => Some(GlobStep::Matched(pi + 1)),
        b'[' => {
            let mut i = pi + 1;
            let negate = at(i) == Some(b'^');
            if negate {
                i += 1;
            }
            let mut matched = false;
            loop {
                match (at(i)?, at(i + 1), at(i + 2)) {
                    (b']', _, _) => break,
                    (b'\\', Some(e), _) => {
                        matched |= eq(e, c);
                        i += 2;
                    }
                    (lo, Some(b'-'), Some(hi)) if hi != b']' => {
                        let (lo, hi) = (lo.to_ascii_lowercase(), hi.to_ascii_lowercase());
                        matched |= (lo.min(hi)..=lo.max(hi)).contains(&c.to_ascii_lowercase());
                        i += 3;
                    }
                    (x, _, _) => {
                        matched |= eq(x, c);
                        i += 1;
                    }
                }
            }
            (matched != negate).then_some(GlobStep::Matched(i + 1))
        }
        b'\\' if at(pi + 1).is_some() => eq(at(pi + 1)?, c).then_some(GlobStep::Matched(pi + 2)),
        x => eq(x, c).then_some(GlobStep::Matched(pi + 1)),
    }
}

#[cfg(test)]
mod glob_tests {
    use super::{add_keyspace, glob_match, keyspace_text};

    #[test]
    fn keyspaces_add_up() {
        let mut dbs = std::collections::BTreeMap::new();
        add_keyspace(
            &mut dbs,
            b"# Keyspace\r\ndb0:keys=10,expires=2,avg_ttl=1000\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n",
        );
        add_keyspace(
            &mut dbs,
            b"# Keyspace\r\ndb0:keys=5,expires=6,avg_ttl=3000,subexpiry=0\r\n",
        );
        add_keyspace(&mut dbs, b"# Keyspace\r\n");
        add_keyspace(&mut dbs, b"garbage\r\ndbx:keys=1\r\ndb1:nothing\r\n");
        assert_eq!(
            keyspace_text(&dbs),
            "# Keyspace\r\ndb0:keys=15,expires=8,avg_ttl=2500\r\ndb3:keys=1,expires=0,avg_ttl=0\r\n"
        );
    }

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("g*", "get", true),
            ("g*", "set", false),
            ("*set", "hset", true),
            ("?et", "get", true),
            ("?et", "getex", false),
            ("[gs]et", "set", true),
            ("[^gs]et", "set", false),
            ("[a-h]*", "hget", true),
            ("[a-h]*", "zadd", false),
            ("G*", "get", true),
            ("*", "", true),
            ("x\\*", "x*", true),
            ("x\\*", "xy", false),
        ] {
            assert_eq!(glob_match(p.as_bytes(), n.as_bytes()), want, "{p} {n}");
        }
    }
}
