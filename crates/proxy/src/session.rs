//! A client session: reads pipelined requests, routes each one at once, and
//! writes the replies strictly in request order.
//!
//! One task per client does both directions. Everything parsed from one read
//! becomes one `Pending` unit: its requests are grouped per backend connection
//! into a single batch each (one channel message, one oneshot, however many
//! requests), and its replies are written once every batch has answered.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shardis_resp::{
    array_elements, reply_integer, reply_is_error, write_array_header, write_bulk, write_error,
    write_integer, Protocol, Request, RequestDecoder,
};
use shardis_topology::slot_of;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::backend::{BackendError, Batch, BatchReply, Server};
use crate::commands::{self, Command, Merge, Route};
use crate::router::{SlotRoute, SlotTable};
use crate::Shared;

/// Read buffer size of a session that has sent something; idle sessions
/// allocate nothing.
const READ_CHUNK: usize = 4 * 1024;
/// Buffers above this are charged to the global memory budget.
const FREE_BUFFER: usize = 64 * 1024;
/// Replies buffered for a client that does not read, before the proxy stops
/// collecting more (and, with the pipeline limit, stops reading its requests).
const WRITE_HIGH: usize = 64 * 1024 * 1024;

/// Commands usable before `AUTH` when a password is set.
fn allowed_before_auth(cmd: &Command) -> bool {
    matches!(
        cmd.route,
        Route::Local(
            commands::Local::Auth
                | commands::Local::Hello
                | commands::Local::Quit
                | commands::Local::Reset
        )
    )
}

/// One reply slot, in request order.
pub(crate) struct Entry {
    /// Index in the command table, for stats (`usize::MAX`: unknown).
    cmd: usize,
    kind: EntryKind,
}

pub(crate) enum EntryKind {
    /// Built by the proxy.
    Local(Bytes),
    /// Reply `idx` of batch `batch`, passed through untouched.
    Forward { batch: u16, idx: u32 },
    /// Parts of a command split across groups.
    Merge(Box<MergePlan>),
    /// Write the reply, then close (QUIT, protocol errors).
    Close(Bytes),
}

pub(crate) struct MergePlan {
    merge: Merge,
    /// (batch, reply index) of each part.
    parts: Vec<(u16, u32)>,
    /// MGET: for each key in request order, (part, position in that part).
    order: Vec<(u16, u32)>,
}

/// The replies one read's worth of requests is waiting for.
struct Pending {
    entries: Vec<Entry>,
    receivers: Vec<oneshot::Receiver<BatchReply>>,
    results: Vec<Option<BatchReply>>,
    started: Instant,
}

impl Pending {
    fn resolved(&self) -> bool {
        self.results.len() == self.receivers.len()
    }
}

/// Requests being routed for one backend connection.
struct BatchBuilder {
    server: Arc<Server>,
    payload: BytesMut,
    count: u32,
}

/// A read's worth of routed requests, before it is sent.
#[derive(Default)]
pub(crate) struct Plan {
    entries: Vec<Entry>,
    /// Some entry ends the session: stop reading requests after it.
    closes: bool,
    batches: Vec<BatchBuilder>,
}

impl Plan {
    fn batch_for(&mut self, server: &Arc<Server>) -> (u16, &mut BatchBuilder) {
        let i = match self
            .batches
            .iter()
            .position(|b| Arc::ptr_eq(&b.server, server))
        {
            Some(i) => i,
            None => {
                self.batches.push(BatchBuilder {
                    server: server.clone(),
                    payload: BytesMut::new(),
                    count: 0,
                });
                self.batches.len() - 1
            }
        };
        let len = self.batches.len();
        // `i < len` by construction.
        let b = match self.batches.get_mut(i) {
            Some(b) => b,
            None => unreachable_batch(len),
        };
        (i as u16, b)
    }

    /// Queues `frame` for `server`; returns where its reply will be.
    fn forward(&mut self, server: &Arc<Server>, frame: &[u8]) -> (u16, u32) {
        let (i, b) = self.batch_for(server);
        b.payload.extend_from_slice(frame);
        b.count += 1;
        (i, b.count - 1)
    }

    pub(crate) fn local(&mut self, cmd: usize, reply: Bytes) {
        self.entries.push(Entry {
            cmd,
            kind: EntryKind::Local(reply),
        });
    }

    pub(crate) fn error(&mut self, cmd: usize, msg: &str) {
        let mut out = BytesMut::with_capacity(msg.len() + 3);
        write_error(&mut out, msg.as_bytes());
        self.local(cmd, out.freeze());
    }

    /// Answers `reply`, then ends the session.
    pub(crate) fn close(&mut self, cmd: usize, reply: Bytes) {
        self.closes = true;
        self.entries.push(Entry {
            cmd,
            kind: EntryKind::Close(reply),
        });
    }

    fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cold]
fn unreachable_batch(len: usize) -> ! {
    // Only reachable through a logic error in `batch_for`.
    panic!("batch index out of range ({len} batches)")
}

/// What routing one request asks the session to do.
pub(crate) enum Step {
    Done,
    /// The request's slot is held: wait for the next topology (bounded).
    Stall {
        slot: u16,
    },
    /// The request touches keys of migrating slots: move them first.
    Migrate(Vec<Move>),
}

/// Keys of one request to move from one server to another before it runs.
pub(crate) struct Move {
    from: Arc<Server>,
    to: Arc<Server>,
    slot: u16,
    to_group: u32,
    keys: Vec<Bytes>,
}

/// How long a move-on-access MIGRATE may wait on each I/O step (Redis's
/// MIGRATE timeout is per operation, not for the whole call).
const MIGRATE_TIMEOUT_MS: &str = "5000";

pub(crate) struct Session {
    pub(crate) id: u64,
    pub(crate) shared: Arc<Shared>,
    pub(crate) peer: SocketAddr,
    pub(crate) proto: Protocol,
    pub(crate) name: Option<Bytes>,
    pub(crate) lib_name: Option<Bytes>,
    pub(crate) lib_ver: Option<Bytes>,
    pub(crate) authed: bool,
    pub(crate) created: Instant,
    stream: TcpStream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    decoder: RequestDecoder,
    pending: VecDeque<Pending>,
    pending_requests: usize,
    stalled: Option<(Request, Instant, u16)>,
    /// No more reading: flush and close.
    closing: bool,
    /// Bytes charged to the global budget by this session's buffers.
    charged: usize,
    keys: Vec<usize>,
    /// Set while a request whose keys were just moved is routed again.
    migrated: bool,
}

impl Session {
    pub(crate) fn new(
        shared: Arc<Shared>,
        stream: TcpStream,
        peer: SocketAddr,
        id: u64,
    ) -> Session {
        let limits = shared.config.limits();
        let authed = shared.config.password.is_none();
        Session {
            id,
            peer,
            proto: Protocol::Resp2,
            name: None,
            lib_name: None,
            lib_ver: None,
            authed,
            created: Instant::now(),
            stream,
            rbuf: BytesMut::new(),
            wbuf: BytesMut::new(),
            decoder: RequestDecoder::new(limits),
            pending: VecDeque::new(),
            pending_requests: 0,
            stalled: None,
            closing: false,
            charged: 0,
            keys: Vec::new(),
            migrated: false,
            shared,
        }
    }

    /// Runs the session to its end. Errors are the client's own (reset,
    /// timeout): they end this session only.
    pub(crate) async fn run(mut self) {
        let mut changed = self.shared.router.subscribe();
        let mut shutdown = self.shared.shutdown.subscribe();
        let idle = self.shared.config.client_idle_timeout();
        let max_pipeline = self.shared.config.max_pipeline;
        let mut last_activity = Instant::now();
        let mut table_changed = false;
        loop {
            // Retry a stalled request when the table changed or time is up.
            if let Some((_, deadline, _)) = &self.stalled {
                let deadline = *deadline;
                if table_changed
                    || changed.has_changed().unwrap_or(true)
                    || Instant::now() >= deadline
                {
                    table_changed = false;
                    changed.borrow_and_update();
                    self.retry_stalled(deadline).await;
                }
            }
            if self.stalled.is_none() && !self.closing && !self.rbuf.is_empty() {
                if let Err(()) = self.process_input().await {
                    self.closing = true;
                }
            }
            self.collect_ready();
            if let Err(e) = self.flush() {
                tracing::debug!(peer = %self.peer, error = %e, "client write failed");
                break;
            }
            if self.closing && self.pending.is_empty() && self.wbuf.is_empty() {
                break;
            }
            // Over the global budget, a session that holds buffered replies
            // stops taking requests until its client reads them. Every other
            // session keeps reading (it must notice EOF and small requests
            // cost nothing); a request that needs a large buffer is refused
            // in `read` when the budget cannot cover it.
            let over_budget = self.wbuf.capacity() > FREE_BUFFER && self.shared.budget.exceeded();
            let can_read = !self.closing
                && self.stalled.is_none()
                && self.pending_requests < max_pipeline
                && !over_budget;
            let waiting_reply =
                self.pending.front().is_some_and(|p| !p.resolved()) && self.wbuf.len() < WRITE_HIGH;
            let idle_deadline = match idle {
                Some(d) if self.pending.is_empty() && self.stalled.is_none() => {
                    Some(last_activity + d)
                }
                _ => None,
            };
            let stall_deadline = self.stalled.as_ref().map(|s| s.1);
            // Over budget: look again shortly (sessions releasing memory do
            // not notify).
            let budget_retry =
                (over_budget && !self.closing).then(|| Instant::now() + Duration::from_millis(10));
            tokio::select! {
                biased;
                _ = wait_front(&mut self.pending), if waiting_reply => {}
                r = self.stream.readable(), if can_read => {
                    if r.is_err() { break; }
                    match self.read() {
                        Ok(0) => {
                            // Client closed: finish what it asked, then end.
                            self.closing = true;
                            if self.pending.is_empty() { break; }
                        }
                        Ok(_) => last_activity = Instant::now(),
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
                r = self.stream.writable(), if !self.wbuf.is_empty() => {
                    if r.is_err() { break; }
                }
                _ = changed.changed(), if self.stalled.is_some() => table_changed = true,
                _ = sleep_until_opt(stall_deadline), if stall_deadline.is_some() => {}
                _ = sleep_until_opt(idle_deadline), if idle_deadline.is_some() => {
                    tracing::debug!(peer = %self.peer, "closing idle client");
                    break;
                }
                _ = sleep_until_opt(budget_retry), if budget_retry.is_some() => {}
                _ = shutdown.changed() => {
                    // Stop taking requests; finish the ones in flight.
                    self.closing = true;
                }
            }
        }
        self.shared.budget.release(self.charged);
        self.charged = 0;
    }

    fn read(&mut self) -> io::Result<usize> {
        let want = self
            .decoder
            .pending_hint()
            .clamp(READ_CHUNK, 16 * 1024 * 1024);
        if self.rbuf.capacity() - self.rbuf.len() < READ_CHUNK.min(want) {
            let grown = self.rbuf.len() + want;
            if grown > FREE_BUFFER {
                // Large frames are charged to the global budget before the
                // memory is taken; a frame that does not fit is refused.
                let extra = grown.saturating_sub(self.rbuf.capacity().max(FREE_BUFFER));
                if !self.shared.budget.try_charge(extra) {
                    self.refuse_oversized();
                    return Ok(1);
                }
                self.charged += extra;
            }
            self.rbuf.reserve(want);
        }
        let r = crate::io::read_once(&self.stream, &mut self.rbuf);
        self.rebalance();
        match r? {
            crate::io::Read::Data { n, .. } => Ok(n),
            crate::io::Read::Closed => Ok(0),
            crate::io::Read::WouldBlock => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    /// Keeps this session's charge on the global budget equal to what its
    /// buffers hold beyond the free allowance.
    fn rebalance(&mut self) {
        let desired = self.rbuf.capacity().saturating_sub(FREE_BUFFER)
            + self.wbuf.capacity().saturating_sub(FREE_BUFFER);
        if desired > self.charged {
            self.shared.budget.charge(desired - self.charged);
        } else {
            self.shared.budget.release(self.charged - desired);
        }
        self.charged = desired;
    }

    fn refuse_oversized(&mut self) {
        let mut plan = Plan::default();
        plan.close(
            usize::MAX,
            error_bytes("ERR shardis-proxy memory budget exhausted: request too large right now"),
        );
        self.closing = true;
        self.rbuf.clear();
        self.push_plan_local(plan);
    }

    /// Parses every complete request in the read buffer and dispatches them.
    /// `Err` on a protocol error (already answered).
    async fn process_input(&mut self) -> Result<(), ()> {
        let table = self.shared.router.load();
        let mut plan = Plan::default();
        let mut result = Ok(());
        loop {
            let req = match self.decoder.decode(&mut self.rbuf) {
                Ok(Some(req)) => req,
                Ok(None) => break,
                Err(e) => {
                    plan.close(usize::MAX, error_bytes(&format!("ERR {e}")));
                    self.rbuf.clear();
                    result = Err(());
                    break;
                }
            };
            match self.route_request(&req, &table, &mut plan).await {
                Step::Done | Step::Migrate(_) => {}
                Step::Stall { slot } => {
                    let deadline = Instant::now() + self.shared.config.hold_timeout();
                    self.stalled = Some((req, deadline, slot));
                    break;
                }
            }
            if plan.entries.len() >= 4096 {
                break;
            }
            if plan.closes {
                self.closing = true;
                break;
            }
        }
        self.dispatch(plan).await;
        drop(table);
        self.shrink_read_buffer();
        result
    }

    async fn retry_stalled(&mut self, deadline: Instant) {
        let Some((req, _, slot)) = self.stalled.take() else {
            return;
        };
        let table = self.shared.router.load();
        let mut plan = Plan::default();
        match self.route_request(&req, &table, &mut plan).await {
            Step::Done | Step::Migrate(_) => {}
            Step::Stall { .. } if Instant::now() >= deadline => {
                let cmd = req
                    .name()
                    .and_then(|n| commands::table().lookup(n))
                    .map_or(usize::MAX, |c| c.index);
                plan.error(
                    cmd,
                    &format!("TRYAGAIN slot {slot} is held for a topology change; retry shortly"),
                );
            }
            Step::Stall { slot } => {
                self.stalled = Some((req, deadline, slot));
            }
        }
        self.dispatch(plan).await;
        drop(table);
    }

    /// Routes one request into `plan`, first moving the keys it touches in
    /// migrating slots. Never returns `Step::Migrate`.
    ///
    /// The caller holds `table` throughout, so a topology change that ends the
    /// migration waits (drain) until this request, moves included, is queued.
    async fn route_request(&mut self, req: &Request, table: &SlotTable, plan: &mut Plan) -> Step {
        let moves = match self.handle(req, table, plan) {
            Step::Migrate(moves) => moves,
            step => return step,
        };
        // Everything routed before this request goes first, in order.
        let earlier = std::mem::take(plan);
        self.dispatch(earlier).await;
        let cmd = req
            .name()
            .and_then(|n| commands::table().lookup(n))
            .map_or(usize::MAX, |c| c.index);
        for mv in &moves {
            if let Err(msg) = self.move_keys(mv).await {
                plan.error(cmd, &msg);
                return Step::Done;
            }
        }
        self.migrated = true;
        let step = self.handle(req, table, plan);
        self.migrated = false;
        step
    }

    /// `MIGRATE` of the request's keys from the source to the target master.
    /// Only success or `NOKEY` (nothing to move) lets the command run.
    async fn move_keys(&mut self, mv: &Move) -> Result<(), String> {
        let Some((host, port)) = mv.to.addr.rsplit_once(':') else {
            return Err(format!("ERR bad target address {}", mv.to.addr));
        };
        let config = &self.shared.config;
        let mut args: Vec<&[u8]> = vec![
            b"MIGRATE",
            host.as_bytes(),
            port.as_bytes(),
            b"",
            b"0",
            MIGRATE_TIMEOUT_MS.as_bytes(),
        ];
        // AUTH/AUTH2 are the target's credentials: the source connects to it.
        match (&config.backend_user, &config.backend_password) {
            (Some(user), Some(pw)) => {
                args.extend([b"AUTH2".as_slice(), user.as_bytes(), pw.as_bytes()])
            }
            (None, Some(pw)) => args.extend([b"AUTH".as_slice(), pw.as_bytes()]),
            _ => {}
        }
        args.push(b"KEYS");
        args.extend(mv.keys.iter().map(|k| k.as_ref()));
        let mut payload = BytesMut::new();
        shardis_resp::encode_command(&mut payload, args.iter());
        let payload = payload.freeze();
        // `BUSYKEY`: a copy is on both servers for a moment (the mover's safe
        // mode between its copy and its delete, or a half-failed move the
        // mover is sorting out). Wait a little for it rather than fail the
        // client at once.
        let mut backoff = [2u64, 5, 10, 20, 40, 80].into_iter();
        loop {
            let (tx, rx) = oneshot::channel();
            // The session's own connection to the source: the MIGRATE runs
            // after every earlier request of this client there.
            mv.from
                .conn(self.proto, self.id)
                .send(Batch {
                    payload: payload.clone(),
                    count: 1,
                    reply: tx,
                })
                .await;
            let reply = match rx.await {
                Ok(Ok(mut replies)) => replies.pop().unwrap_or_default(),
                Ok(Err(e)) => {
                    return Err(format!(
                        "TRYAGAIN moving keys of slot {} failed: {e}",
                        mv.slot
                    ))
                }
                Err(_) => {
                    return Err(format!(
                        "TRYAGAIN moving keys of slot {} failed: connection task ended",
                        mv.slot
                    ))
                }
            };
            match reply.as_ref() {
                b"+OK\r\n" | b"+NOKEY\r\n" => return Ok(()),
                other => {
                    let text = String::from_utf8_lossy(other.get(1..).unwrap_or_default());
                    if text.contains("BUSYKEY") {
                        if let Some(ms) = backoff.next() {
                            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                            continue;
                        }
                    }
                    return Err(format!(
                        "TRYAGAIN moving keys of slot {} to group {} failed: {}",
                        mv.slot,
                        mv.to_group,
                        text.trim_end()
                    ));
                }
            }
        }
    }

    /// The moves a request needs: its keys in migrating slots, grouped by
    /// source and target.
    fn collect_moves(&mut self, cmd: &Command, req: &Request, table: &SlotTable) -> Vec<Move> {
        let mut keys = std::mem::take(&mut self.keys);
        let mut moves: Vec<Move> = Vec::new();
        let positions_ok = match cmd.route {
            Route::Fanout { step, .. } => {
                keys.clear();
                keys.extend((1..req.args.len()).step_by(step.max(1)));
                true
            }
            Route::Slot => commands::key_positions(cmd, &req.args, &mut keys).is_ok(),
            _ => false,
        };
        if positions_ok {
            for &pos in &keys {
                let Some(key) = req.args.get(pos) else {
                    continue;
                };
                let slot = slot_of(key);
                if let SlotRoute::Migrating { from, to, to_group } = table.route(slot) {
                    match moves
                        .iter_mut()
                        .find(|m| Arc::ptr_eq(&m.from, from) && Arc::ptr_eq(&m.to, to))
                    {
                        Some(m) => {
                            if !m.keys.contains(key) {
                                m.keys.push(key.clone());
                            }
                        }
                        None => moves.push(Move {
                            from: from.clone(),
                            to: to.clone(),
                            slot,
                            to_group: *to_group,
                            keys: vec![key.clone()],
                        }),
                    }
                }
            }
        }
        self.keys = keys;
        moves
    }

    /// Sends the plan's batches and queues its replies.
    async fn dispatch(&mut self, plan: Plan) {
        if plan.is_empty() {
            return;
        }
        let mut receivers = Vec::with_capacity(plan.batches.len());
        for b in plan.batches {
            let (tx, rx) = oneshot::channel();
            let conn = b.server.conn(self.proto, self.id);
            conn.send(Batch {
                payload: b.payload.freeze(),
                count: b.count,
                reply: tx,
            })
            .await;
            receivers.push(rx);
        }
        self.pending_requests += plan.entries.len();
        self.pending.push_back(Pending {
            entries: plan.entries,
            results: Vec::with_capacity(receivers.len()),
            receivers,
            started: Instant::now(),
        });
    }

    fn push_plan_local(&mut self, plan: Plan) {
        self.pending_requests += plan.entries.len();
        self.pending.push_back(Pending {
            entries: plan.entries,
            receivers: Vec::new(),
            results: Vec::new(),
            started: Instant::now(),
        });
    }

    fn shrink_read_buffer(&mut self) {
        if self.rbuf.is_empty() && self.rbuf.capacity() > FREE_BUFFER {
            self.rbuf = BytesMut::new();
            self.rebalance();
        }
    }

    /// Routes one request into `plan`.
    fn handle(&mut self, req: &Request, table: &SlotTable, plan: &mut Plan) -> Step {
        let Some(name) = req.name() else {
            return Step::Done;
        };
        let Some(cmd) = commands::table().lookup(name) else {
            // Like Redis: an HTTP request (a browser tricked into posting to
            // this port) is cut off instead of being answered line by line.
            if name.eq_ignore_ascii_case(b"post") || name.eq_ignore_ascii_case(b"host:") {
                tracing::warn!(peer = %self.peer, "HTTP request on the Redis port: closing");
                plan.close(
                    usize::MAX,
                    error_bytes("ERR this is a Redis port, not HTTP"),
                );
                return Step::Done;
            }
            plan.error(usize::MAX, &unknown_command(req));
            return Step::Done;
        };
        if !self.authed && !allowed_before_auth(cmd) {
            plan.error(cmd.index, "NOAUTH Authentication required.");
            return Step::Done;
        }
        if req.args.len() < cmd.min_args() {
            plan.error(cmd.index, &commands::arity_error(cmd.name));
            return Step::Done;
        }
        let routed = matches!(cmd.route, Route::Slot | Route::Fanout { .. });
        if routed && table.any_migrating && !self.migrated && table.loaded && !table.fenced {
            let moves = self.collect_moves(cmd, req, table);
            if !moves.is_empty() {
                return Step::Migrate(moves);
            }
        }
        match cmd.route {
            Route::Local(local) => {
                self.local(local, cmd, req, plan);
                Step::Done
            }
            Route::Refused(why) => {
                plan.error(
                    cmd.index,
                    &format!(
                        "ERR command '{}' is not supported by shardis-proxy: {why}",
                        cmd.name.to_ascii_uppercase()
                    ),
                );
                Step::Done
            }
            _ if !table.loaded => {
                plan.error(
                    cmd.index,
                    "ERR shardis-proxy has not loaded the cluster topology yet",
                );
                Step::Done
            }
            _ if table.fenced => {
                plan.error(
                    cmd.index,
                    "TRYAGAIN shardis-proxy lost its etcd lease and is not serving until it registers again",
                );
                Step::Done
            }
            Route::Slot => self.route_slot(cmd, req, table, plan),
            Route::Fanout { merge, step } => self.route_fanout(cmd, merge, step, req, table, plan),
            Route::AllMasters(merge) => {
                let mut parts = Vec::with_capacity(table.masters.len());
                for (_, server) in &table.masters {
                    parts.push(plan.forward(server, &req.raw));
                }
                plan.entries.push(Entry {
                    cmd: cmd.index,
                    kind: EntryKind::Merge(Box::new(MergePlan {
                        merge,
                        parts,
                        order: Vec::new(),
                    })),
                });
                Step::Done
            }
        }
    }

    /// Where a slot's requests go, or the error/stall to answer with.
    fn server_for<'t>(
        &self,
        cmd: &Command,
        slot: u16,
        table: &'t SlotTable,
        plan: &mut Plan,
    ) -> Result<&'t Arc<Server>, Step> {
        match table.route(slot) {
            SlotRoute::Serve { server, .. } => Ok(server),
            SlotRoute::Wait => Err(Step::Stall { slot }),
            // Reached only after the request's keys were moved (or found
            // missing): it runs on the target.
            SlotRoute::Migrating { to, .. } => Ok(to),
            SlotRoute::Unassigned => {
                plan.error(
                    cmd.index,
                    &format!("CLUSTERDOWN slot {slot} is not assigned to any group"),
                );
                Err(Step::Done)
            }
            SlotRoute::NoMaster { group } => {
                plan.error(
                    cmd.index,
                    &format!("CLUSTERDOWN group {group} (slot {slot}) has no master"),
                );
                Err(Step::Done)
            }
        }
    }

    fn route_slot(
        &mut self,
        cmd: &Command,
        req: &Request,
        table: &SlotTable,
        plan: &mut Plan,
    ) -> Step {
        let mut keys = std::mem::take(&mut self.keys);
        let step = (|| {
            if let Err(e) = commands::key_positions(cmd, &req.args, &mut keys) {
                plan.error(cmd.index, &e);
                return Step::Done;
            }
            let mut slot = None;
            for &pos in &keys {
                let Some(key) = req.args.get(pos) else {
                    continue;
                };
                let s = slot_of(key);
                match slot {
                    None => slot = Some(s),
                    Some(prev) if prev != s => {
                        plan.error(
                            cmd.index,
                            "CROSSSLOT Keys in request don't hash to the same slot",
                        );
                        return Step::Done;
                    }
                    Some(_) => {}
                }
            }
            let Some(slot) = slot else {
                plan.error(cmd.index, &commands::arity_error(cmd.name));
                return Step::Done;
            };
            self.shared.stats.record_slot(slot);
            match self.server_for(cmd, slot, table, plan) {
                Ok(server) => {
                    let (batch, idx) = plan.forward(server, &req.raw);
                    plan.entries.push(Entry {
                        cmd: cmd.index,
                        kind: EntryKind::Forward { batch, idx },
                    });
                    Step::Done
                }
                Err(step) => step,
            }
        })();
        self.keys = keys;
        step
    }

    /// MGET/MSET/DEL/EXISTS/UNLINK/TOUCH: one sub-command per server.
    fn route_fanout(
        &mut self,
        cmd: &Command,
        merge: Merge,
        step: usize,
        req: &Request,
        table: &SlotTable,
        plan: &mut Plan,
    ) -> Step {
        let args = &req.args;
        if args.len() < 2 || !(args.len() - 1).is_multiple_of(step) {
            plan.error(cmd.index, &commands::arity_error(cmd.name));
            return Step::Done;
        }
        let nkeys = (args.len() - 1) / step;
        // Which part (distinct server, in first-seen order) each key goes to.
        let mut distinct: Vec<(&Arc<Server>, u32)> = Vec::with_capacity(2);
        let mut part_of: Vec<u16> = Vec::with_capacity(nkeys);
        for k in 0..nkeys {
            let Some(key) = args.get(1 + k * step) else {
                break;
            };
            let slot = slot_of(key);
            self.shared.stats.record_slot(slot);
            let server = match self.server_for(cmd, slot, table, plan) {
                Ok(s) => s,
                Err(step) => return step,
            };
            let p = match distinct.iter().position(|(d, _)| Arc::ptr_eq(d, server)) {
                Some(p) => p,
                None => {
                    distinct.push((server, 0));
                    distinct.len() - 1
                }
            };
            if let Some((_, n)) = distinct.get_mut(p) {
                *n += 1;
            }
            part_of.push(p as u16);
        }
        if distinct.len() == 1 {
            // One server: pass the request through whole.
            if let Some((server, _)) = distinct.first() {
                let (batch, idx) = plan.forward(server, &req.raw);
                plan.entries.push(Entry {
                    cmd: cmd.index,
                    kind: EntryKind::Forward { batch, idx },
                });
            }
            return Step::Done;
        }
        let name = args.first().map(|b| b.as_ref()).unwrap_or_default();
        let mut order = Vec::new();
        if merge == Merge::Values {
            // MGET: where each key's value sits in its part's reply.
            let mut seen = [0u32; 8];
            let mut seen_more = Vec::new();
            if distinct.len() > seen.len() {
                seen_more = vec![0u32; distinct.len()];
            }
            order.reserve(nkeys);
            for &p in &part_of {
                let n = if seen_more.is_empty() {
                    seen.get_mut(p as usize)
                } else {
                    seen_more.get_mut(p as usize)
                };
                if let Some(n) = n {
                    order.push((p, *n));
                    *n += 1;
                }
            }
        }
        // Each part's sub-command is encoded straight into its batch.
        let mut parts = Vec::with_capacity(distinct.len());
        for (p, (server, count)) in distinct.iter().enumerate() {
            let (batch, b) = plan.batch_for(server);
            write_array_header(&mut b.payload, 1 + *count as usize * step);
            write_bulk(&mut b.payload, name);
            for (k, _) in part_of.iter().enumerate().filter(|(_, &q)| q as usize == p) {
                for j in 0..step {
                    if let Some(a) = args.get(1 + k * step + j) {
                        write_bulk(&mut b.payload, a);
                    }
                }
            }
            b.count += 1;
            parts.push((batch, b.count - 1));
        }
        plan.entries.push(Entry {
            cmd: cmd.index,
            kind: EntryKind::Merge(Box::new(MergePlan {
                merge,
                parts,
                order,
            })),
        });
        Step::Done
    }

    /// Moves every finished `Pending` into the write buffer, in order.
    fn collect_ready(&mut self) {
        while self.wbuf.len() < WRITE_HIGH {
            let Some(front) = self.pending.front_mut() else {
                break;
            };
            // Take whatever answers arrived without waiting.
            while !front.resolved() {
                let i = front.results.len();
                let Some(rx) = front.receivers.get_mut(i) else {
                    break;
                };
                match rx.try_recv() {
                    Ok(r) => front.results.push(Some(r)),
                    Err(oneshot::error::TryRecvError::Empty) => return,
                    Err(oneshot::error::TryRecvError::Closed) => {
                        front.results.push(Some(Err(BackendError::Lost {
                            addr: "backend".into(),
                            reason: "connection task ended".into(),
                        })))
                    }
                }
            }
            if let Some(p) = self.pending.pop_front() {
                self.pending_requests = self.pending_requests.saturating_sub(p.entries.len());
                self.write_pending(p);
            }
        }
    }

    fn write_pending(&mut self, p: Pending) {
        let before = self.wbuf.len();
        let us = p.started.elapsed().as_micros() as u64;
        let stats = &self.shared.stats;
        for entry in p.entries {
            let start = self.wbuf.len();
            match entry.kind {
                EntryKind::Local(b) => self.wbuf.extend_from_slice(&b),
                EntryKind::Close(b) => {
                    self.wbuf.extend_from_slice(&b);
                    self.closing = true;
                }
                EntryKind::Forward { batch, idx } => match reply_at(&p.results, batch, idx) {
                    Ok(r) => self.wbuf.extend_from_slice(r),
                    Err(e) => write_error(&mut self.wbuf, format!("ERR {e}").as_bytes()),
                },
                EntryKind::Merge(m) => merge_into(&mut self.wbuf, &m, &p.results),
            }
            let is_err = matches!(self.wbuf.get(start), Some(b'-') | Some(b'!'));
            stats.record_command(entry.cmd, us, is_err);
        }
        if self.wbuf.len() - before > 0 && self.wbuf.capacity() > FREE_BUFFER {
            // Big replies count against the global budget while buffered.
            self.rebalance();
        }
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    let _ = self.wbuf.split_to(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        if self.wbuf.capacity() > FREE_BUFFER {
            self.wbuf = BytesMut::new();
            self.rebalance();
        }
        Ok(())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.shared.budget.release(self.charged);
        self.shared
            .stats
            .sessions_current
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Waits until the front pending unit's next batch answers, and stores it.
async fn wait_front(pending: &mut VecDeque<Pending>) {
    let Some(front) = pending.front_mut() else {
        return std::future::pending().await;
    };
    let i = front.results.len();
    let Some(rx) = front.receivers.get_mut(i) else {
        return;
    };
    let r = match rx.await {
        Ok(r) => r,
        Err(_) => Err(BackendError::Lost {
            addr: "backend".into(),
            reason: "connection task ended".into(),
        }),
    };
    front.results.push(Some(r));
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn reply_at(results: &[Option<BatchReply>], batch: u16, idx: u32) -> Result<&Bytes, BackendError> {
    match results.get(batch as usize) {
        Some(Some(Ok(replies))) => {
            replies
                .get(idx as usize)
                .ok_or_else(|| BackendError::Protocol {
                    addr: "backend".into(),
                    reason: "missing reply".into(),
                })
        }
        Some(Some(Err(e))) => Err(e.clone()),
        _ => Err(BackendError::Lost {
            addr: "backend".into(),
            reason: "no reply".into(),
        }),
    }
}

/// Combines the parts of a split command into one reply.
fn merge_into(out: &mut BytesMut, m: &MergePlan, results: &[Option<BatchReply>]) {
    let mut replies = Vec::with_capacity(m.parts.len());
    for &(batch, idx) in &m.parts {
        match reply_at(results, batch, idx) {
            Ok(r) => {
                if reply_is_error(r) {
                    // The first failing part answers for the whole command.
                    out.extend_from_slice(r);
                    return;
                }
                replies.push(r);
            }
            Err(e) => {
                write_error(out, format!("ERR {e}").as_bytes());
                return;
            }
        }
    }
    match m.merge {
        Merge::Sum => {
            let mut sum: i64 = 0;
            for r in &replies {
                match reply_integer(r) {
                    Some(n) => sum = sum.saturating_add(n),
                    None => {
                        write_error(
                            out,
                            b"ERR unexpected reply from a backend while adding up results",
                        );
                        return;
                    }
                }
            }
            write_integer(out, sum);
        }
        Merge::AllOk => {
            if let Some(r) = replies.first() {
                out.extend_from_slice(r);
            }
        }
        Merge::Values => {
            let mut elems: Vec<Vec<Bytes>> = Vec::with_capacity(replies.len());
            for r in &replies {
                match array_elements(r) {
                    Some(e) => elems.push(e),
                    None => {
                        write_error(
                            out,
                            b"ERR unexpected reply from a backend while merging MGET",
                        );
                        return;
                    }
                }
            }
            write_array_header(out, m.order.len());
            for &(part, pos) in &m.order {
                match elems.get(part as usize).and_then(|e| e.get(pos as usize)) {
                    Some(v) => out.extend_from_slice(v),
                    None => out.extend_from_slice(b"$-1\r\n"),
                }
            }
        }
    }
}

pub(crate) fn error_bytes(msg: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(msg.len() + 3);
    write_error(&mut out, msg.as_bytes());
    out.freeze()
}

/// Redis's own text for an unknown command.
fn unknown_command(req: &Request) -> String {
    let name = String::from_utf8_lossy(req.name().unwrap_or_default());
    let mut msg = format!(
        "ERR unknown command '{}', with args beginning with: ",
        truncate(&name, 128)
    );
    for a in req.args.iter().skip(1).take(8) {
        msg.push('\'');
        msg.push_str(&truncate(&String::from_utf8_lossy(a), 128));
        msg.push_str("' ");
    }
    msg
}

fn truncate(s: &str, n: usize) -> String {
    s.chars()
        .take(n)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}
