//! A client session: reads pipelined requests, routes each one at once, and
//! writes the replies strictly in request order.
//!
//! One task per client does both directions. Everything parsed from one read
//! becomes one `Pending` unit: its requests are grouped per backend connection
//! into a single batch each (appended to that connection's queue under one
//! lock, however many requests), and its replies are written once all have
//! arrived. Replies arrive in the session's `Inbox`, one FIFO lane per backend
//! connection, so entries name a lane rather than a reply: the next reply on
//! the lane is theirs. Plans, pending units and the inbox are reused, so the
//! steady state allocates nothing per request.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use shardis_resp::{
    reply_integer, reply_is_error, write_array_header, write_bulk, write_error, write_integer,
    ArrayCursor, Protocol, Request, RequestDecoder,
};
use shardis_topology::slot_of;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::backend::{BackendError, Inbox, Reply, Server};
use crate::commands::{self, Command, Local, Merge, Route};
use crate::local;
use crate::router::{SlotRoute, SlotTable};
use crate::slowlog::KeyLog;
use crate::stats::Stats;
use crate::Shared;

/// Read buffer size of a session that has sent something; idle sessions
/// allocate nothing.
const READ_CHUNK: usize = 4 * 1024;
/// Buffers above this are charged to the global memory budget.
const FREE_BUFFER: usize = 64 * 1024;
/// Room for replies an inbox lane keeps once empty.
const KEEP_LANE: usize = 1024;
/// Replies buffered for a client that does not read, before the proxy stops
/// collecting more (and, with the pipeline limit, stops reading its requests).
const WRITE_HIGH: usize = 64 * 1024 * 1024;
/// Replies are moved from the inbox into the write buffer while it holds
/// less than this: with a unit of replies in flight (at most half of
/// `WRITE_HIGH`, see `Session::window`) the buffer stays near `WRITE_HIGH`
/// and does not double its allocation past it.
const COLLECT_HIGH: usize = WRITE_HIGH / 2;
/// Requests a new client may have in flight before its replies' size is
/// known (see `Session::window`).
const FIRST_WINDOW: usize = 32;

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
    /// The next reply on lane `lane` of the inbox, passed through untouched.
    Forward { lane: u16 },
    /// Parts of a command split across groups.
    Merge(MergeRef),
    /// Write the reply, then close (QUIT, protocol errors).
    Close(Bytes),
    /// `INFO`: the proxy's own sections, then the `INFO keyspace` replies
    /// of every master (the `parts` of its `Pending`), added up.
    Info {
        text: Bytes,
        proto: Protocol,
        parts: (u32, u32),
    },
}

/// How to merge a split command: its parts and, for MGET, the key order, as
/// ranges of the `parts` list of its `Pending` (no allocation per request).
pub(crate) struct MergeRef {
    merge: Merge,
    /// The lane of each part: each part's reply is the next one on its lane.
    parts: (u32, u32),
    /// MGET: for each key in request order, the part holding its value.
    order: (u32, u32),
}

/// The replies one read's worth of requests is waiting for. Kept and reused
/// once written, with its lists' capacity.
struct Pending {
    entries: Vec<Entry>,
    /// Replies it waits for: (lane, how many), one per backend connection.
    needs: Vec<(u16, u32)>,
    /// Lanes and key orders of its split commands (see `MergeRef`).
    parts: Vec<u16>,
    started: Instant,
    /// First key of each entry's request, for the slowlog.
    keys: KeyLog,
}

impl Pending {
    fn new() -> Pending {
        Pending {
            entries: Vec::new(),
            needs: Vec::new(),
            parts: Vec::new(),
            started: Instant::now(),
            keys: KeyLog::default(),
        }
    }

    /// Every reply it waits for has arrived. Earlier units have taken theirs,
    /// so each lane's replies from the front are this unit's.
    fn resolved(&self, lanes: &[VecDeque<Reply>]) -> bool {
        self.needs
            .iter()
            .all(|&(lane, n)| lanes.get(lane as usize).map_or(0, |l| l.len()) >= n as usize)
    }
}

/// A lane of the session's inbox: the backend connection whose replies it
/// carries and how many of them the session still expects.
struct Lane {
    conn: u64,
    outstanding: u64,
}

/// Requests being routed for one backend connection.
struct BatchBuilder {
    /// Set while the batch is in use; dropped when it is sent.
    server: Option<Arc<Server>>,
    proto: Protocol,
    conn: u64,
    lane: u16,
    payload: BytesMut,
    count: u32,
}

/// A read's worth of routed requests, before it is sent. The session keeps
/// one and reuses its buffers.
#[derive(Default)]
pub(crate) struct Plan {
    entries: Vec<Entry>,
    /// Some entry ends the session: stop reading requests after it.
    closes: bool,
    /// `batches[..used]` are in use; the rest keep their buffers for later.
    batches: Vec<BatchBuilder>,
    used: usize,
    /// Becomes the `parts` of the `Pending` (see `MergeRef`).
    parts: Vec<u16>,
    /// Becomes the `keys` of the `Pending` (slowlog).
    keys: KeyLog,
}

impl Plan {
    /// The batch for `server`'s connection of this session; opens one (and
    /// picks its lane) if the plan has none yet.
    fn batch_for(
        &mut self,
        server: &Arc<Server>,
        proto: Protocol,
        session: u64,
        lanes: &mut Vec<Lane>,
    ) -> (u16, &mut BatchBuilder) {
        let conn = server.conn(proto, session).id();
        let in_use = self.batches.get(..self.used).unwrap_or_default();
        let i = match in_use.iter().position(|b| b.conn == conn) {
            Some(i) => i,
            None => {
                let lane = lane_for(conn, lanes, in_use);
                if self.used == self.batches.len() {
                    self.batches.push(BatchBuilder {
                        server: None,
                        proto,
                        conn,
                        lane,
                        payload: BytesMut::new(),
                        count: 0,
                    });
                }
                let Some(b) = self.batches.get_mut(self.used) else {
                    unreachable_batch(self.used)
                };
                b.server = Some(server.clone());
                b.proto = proto;
                b.conn = conn;
                b.lane = lane;
                b.count = 0;
                self.used += 1;
                self.used - 1
            }
        };
        let Some(b) = self.batches.get_mut(i) else {
            unreachable_batch(i)
        };
        (i as u16, b)
    }

    /// Queues `frame` for `server`; returns the lane its reply will arrive on.
    fn forward(
        &mut self,
        server: &Arc<Server>,
        proto: Protocol,
        session: u64,
        lanes: &mut Vec<Lane>,
        frame: &[u8],
    ) -> u16 {
        let (_, b) = self.batch_for(server, proto, session, lanes);
        b.payload.extend_from_slice(frame);
        b.count += 1;
        b.lane
    }

    /// Queues `frame` on batch `batch`; returns its lane.
    fn forward_to(&mut self, batch: u16, frame: &[u8]) -> u16 {
        match self.batches.get_mut(batch as usize) {
            Some(b) => {
                b.payload.extend_from_slice(frame);
                b.count += 1;
                b.lane
            }
            None => unreachable_batch(batch as usize),
        }
    }

    /// Adds a merged entry whose parts are the replies on `lanes` (and, for
    /// MGET, whose keys' parts are `order`).
    fn merge(&mut self, cmd: usize, merge: Merge, lanes: &[u16], order: &[u16]) {
        let parts = self.add_parts(lanes);
        let order = self.add_parts(order);
        self.entries.push(Entry {
            cmd,
            kind: EntryKind::Merge(MergeRef {
                merge,
                parts,
                order,
            }),
        });
    }

    /// `INFO` with its keyspace added up from the replies on `lanes`.
    fn info(&mut self, cmd: usize, text: Bytes, proto: Protocol, lanes: &[u16]) {
        let parts = self.add_parts(lanes);
        self.entries.push(Entry {
            cmd,
            kind: EntryKind::Info { text, proto, parts },
        });
    }

    /// Appends `lanes` to the parts list; where they are in it.
    fn add_parts(&mut self, lanes: &[u16]) -> (u32, u32) {
        let at = self.parts.len() as u32;
        self.parts.extend_from_slice(lanes);
        (at, lanes.len() as u32)
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

    /// Notes `req`'s first key for the replies it just added (slowlog).
    fn note_key(&mut self, stats: &Stats, req: &Request) {
        let cmd = self.entries.last().map_or(usize::MAX, |e| e.cmd);
        self.keys.note(stats, req, cmd, self.entries.len());
    }
}

/// The lane for connection `conn`: the one it already has, else a lane no
/// reply is expected on any more (and no batch of the plan uses), else a new
/// one. A reused lane is empty, so replies of two connections never mix.
/// `<command> HELP`.
fn is_help(req: &Request) -> bool {
    req.args.len() == 2
        && req
            .args
            .get(1)
            .is_some_and(|a| a.eq_ignore_ascii_case(b"HELP"))
}

fn lane_for(conn: u64, lanes: &mut Vec<Lane>, in_use: &[BatchBuilder]) -> u16 {
    if let Some(i) = lanes.iter().position(|l| l.conn == conn) {
        return i as u16;
    }
    let free = lanes
        .iter()
        .enumerate()
        .position(|(i, l)| l.outstanding == 0 && !in_use.iter().any(|b| b.lane as usize == i));
    match free {
        Some(i) => {
            if let Some(l) = lanes.get_mut(i) {
                l.conn = conn;
            }
            i as u16
        }
        None => {
            lanes.push(Lane {
                conn,
                outstanding: 0,
            });
            (lanes.len() - 1) as u16
        }
    }
}

#[cold]
fn unreachable_batch(i: usize) -> ! {
    // Only reachable through a logic error in `batch_for`.
    panic!("batch index {i} out of range")
}

/// What routing one request asks the session to do.
pub(crate) enum Step {
    Done,
    /// The request's slot, or a key it touches, is held: wait for the next
    /// topology (bounded).
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
    /// The request's distinct keys in migrating slots of this source.
    keys: Vec<Bytes>,
    /// Writes whose keys are all on the source may run there.
    writes_on_source: bool,
}

/// What a migrating slot's source said of a request tried there.
enum OnSource {
    /// It ran there (all its keys were there): the reply.
    Answered(Bytes),
    /// None of its keys is on the source, and none can appear there while
    /// the slot migrates: it runs on the target without a move.
    Absent,
    /// Some of its keys are there, or the try failed: move them first.
    Move,
}

/// Runs a write on a migrating slot's source if, and only if, every key is
/// still there (one atomic step; `KEYS` are the distinct keys, `ARGV` the
/// command). The command's own errors come back prefixed, so they are told
/// apart from errors of the script itself (`NOPERM`, `BUSY`, …), after which
/// the proxy moves the keys instead.
const WRITE_SCRIPT: &str = "local n = 0
for i = 1, #KEYS do n = n + redis.call('EXISTS', KEYS[i]) end
if n ~= #KEYS then return redis.error_reply('SHARDIS_MISSING ' .. n) end
local r = redis.pcall(unpack(ARGV))
if type(r) == 'table' and r.err then return redis.error_reply('SHARDIS_ERR ' .. r.err) end
return r";

/// The SHA1 of [`WRITE_SCRIPT`]: `EVALSHA` spares the source the script's
/// text, and hashing it, on every write.
fn write_script_sha() -> &'static str {
    static SHA: OnceLock<String> = OnceLock::new();
    SHA.get_or_init(|| sha1_smol::Sha1::from(WRITE_SCRIPT).digest().to_string())
}

/// How long a move-on-access MIGRATE may wait on each I/O step (Redis's
/// MIGRATE timeout is per operation, not for the whole call). The source
/// serves nobody while it waits, so a target that hangs stalls the source's
/// whole group this long; the client then gets `TRYAGAIN` and the key stays
/// on the source.
const MIGRATE_TIMEOUT_MS: &str = "2000";

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
    /// A written `Pending`, kept for its lists' capacity.
    spare: Option<Pending>,
    /// The plan being built, kept for its buffers.
    plan: Plan,
    /// Where the backend connections put this session's replies; made when
    /// the session first sends something to a backend (idle sessions that
    /// only ever PINGed do not pay for it).
    inbox: Option<Arc<Inbox>>,
    /// Which backend connection each lane of `inbox` carries.
    lanes: Vec<Lane>,
    stalled: Option<(Request, Instant, u16)>,
    /// No more reading: flush and close.
    closing: bool,
    /// Bytes charged to the global budget by this session's buffers.
    charged: usize,
    keys: Vec<usize>,
    /// Fan-out scratch, reused: the part of each key, and each part's batch and key count.
    fanout_keys: Vec<u16>,
    fanout_parts: Vec<(u16, u32)>,
    /// MGET merge scratch, reused: a walk over each part's reply.
    merge_cursors: Vec<ArrayCursor>,
    /// Set while a request whose keys were just moved is routed again.
    migrated: bool,
    /// A `MULTI` was refused and no `EXEC` or `DISCARD` came since: the
    /// client believes its commands are queued, so none of them may run.
    pub(crate) refused_multi: bool,
    /// Average bytes of a reply (moving, over the last units written): how
    /// many requests may be in flight is sized from it (see `window`).
    reply_avg: usize,
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
            spare: None,
            plan: Plan::default(),
            inbox: None,
            lanes: Vec::new(),
            stalled: None,
            closing: false,
            charged: 0,
            keys: Vec::new(),
            fanout_keys: Vec::new(),
            fanout_parts: Vec::new(),
            merge_cursors: Vec::new(),
            migrated: false,
            refused_multi: false,
            reply_avg: WRITE_HIGH / 2 / FIRST_WINDOW,
            shared,
        }
    }

    /// Runs the session to its end. Errors are the client's own (reset,
    /// timeout): they end this session only.
    ///
    /// Takes `&mut self` (the caller's future owns the session): an `async
    /// fn` taking `self` by value would hold two copies of it in its state.
    pub(crate) async fn run(&mut self) {
        let mut changed = self.shared.router.subscribe();
        let mut shutdown = self.shared.shutdown.subscribe();
        // One future for the whole session: re-creating it on every turn of
        // the loop registers and deregisters a waiter each time.
        let mut shutdown = std::pin::pin!(shutdown.changed());
        let mut shutdown_seen = false;
        let idle = self.shared.config.client_idle_timeout();
        let max_pipeline = self.shared.config.max_pipeline;
        let output_limit = self
            .shared
            .config
            .max_client_output_mb
            .saturating_mul(1 << 20);
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
            // Requests already read wait while the client has too many
            // replies unread or in flight (see `window`).
            let has_input = self.stalled.is_none() && !self.closing && !self.rbuf.is_empty();
            let input_open =
                |s: &Self| s.unsent() < WRITE_HIGH && s.pending_requests < s.window(max_pipeline);
            let input_deferred = has_input && !input_open(self);
            if has_input && !input_deferred {
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
            // Replies the client leaves unread: past `WRITE_HIGH` no more of
            // its requests are read or sent (below); past the client output
            // limit, or past half of `WRITE_HIGH` while the global budget is
            // exceeded, the connection is closed, as Redis closes a client
            // over its `client-output-buffer-limit` (or `maxmemory-clients`):
            // requests already sent can bring any amount of replies back.
            self.rebalance();
            let unsent = self.unsent();
            let over_budget = (self.wbuf.capacity() > FREE_BUFFER || unsent > FREE_BUFFER)
                && self.shared.budget.exceeded();
            if unsent > output_limit || (over_budget && unsent >= WRITE_HIGH / 2) {
                tracing::warn!(
                    peer = %self.peer,
                    unread_mib = unsent >> 20,
                    limit_mib = output_limit >> 20,
                    budget_exceeded = over_budget,
                    "closing a client that does not read its replies"
                );
                break;
            }
            if input_deferred && input_open(self) {
                // The client took enough of its replies meanwhile: go on with
                // the requests it already sent (nothing else would wake us).
                continue;
            }
            // Over the global budget, a session that holds buffered replies
            // stops taking requests until its client reads them. Every other
            // session keeps reading (it must notice EOF and small requests
            // cost nothing); a request that needs a large buffer is refused
            // in `read` when the budget cannot cover it.
            let can_read = !self.closing
                && self.stalled.is_none()
                && self.pending_requests < self.window(max_pipeline)
                && unsent < WRITE_HIGH
                && !over_budget;
            // `collect_ready` took every resolved unit it could: the front one
            // (if any) is still waiting, unless the write buffer is full.
            let waiting_reply = !self.pending.is_empty() && self.wbuf.len() < COLLECT_HIGH;
            // With the write buffer full, replies still arriving are watched
            // (each MiB more) for the limits above.
            let watch_inbox = !self.pending.is_empty() && !waiting_reply;
            let inbox_seen = self.inbox.as_ref().map_or(0, |i| i.bytes());
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
            let wake_at = [stall_deadline, idle_deadline, budget_retry]
                .into_iter()
                .flatten()
                .min();
            tokio::select! {
                biased;
                _ = poll_fn(|cx| front_resolved(self.inbox.as_deref(), &self.pending, cx)), if waiting_reply => {}
                _ = poll_fn(|cx| inbox_grew(self.inbox.as_deref(), inbox_seen, cx)), if watch_inbox => {}
                r = self.stream.readable(), if can_read => {
                    if r.is_err() { break; }
                    match self.read() {
                        Ok(0) => {
                            // Client closed: finish what it asked, then end.
                            self.closing = true;
                            if self.pending.is_empty() { break; }
                        }
                        Ok(_) if idle.is_some() => last_activity = Instant::now(),
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        Err(_) => break,
                    }
                }
                r = self.stream.writable(), if !self.wbuf.is_empty() => {
                    if r.is_err() { break; }
                }
                _ = changed.changed(), if self.stalled.is_some() => table_changed = true,
                // One timer for all three deadlines (each timer future is
                // part of every session's state).
                _ = sleep_until_opt(wake_at), if wake_at.is_some() => {
                    if idle_deadline.is_some_and(|d| Instant::now() >= d) {
                        tracing::debug!(peer = %self.peer, "closing idle client");
                        break;
                    }
                }
                _ = &mut shutdown, if !shutdown_seen => {
                    // Stop taking requests; finish the ones in flight.
                    shutdown_seen = true;
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

    /// How many requests may be in flight: as many as half of `WRITE_HIGH`
    /// holds replies of the average size seen so far (at least
    /// `FIRST_WINDOW`, at most `max_pipeline`), so that what is in flight
    /// and what waits to be written stay near `WRITE_HIGH` together. A
    /// client that pipelines requests with big replies (thousands of GETs of
    /// a 1 MiB value) then has a few of them on the shared backend
    /// connections at a time, not all, so other clients' requests do not
    /// queue behind gigabytes of its replies; one with small replies soon
    /// gets the whole `max_pipeline` (the average moves by an eighth per
    /// batch of replies).
    fn window(&self, max_pipeline: usize) -> usize {
        (WRITE_HIGH / 2 / self.reply_avg.max(1)).clamp(FIRST_WINDOW.min(max_pipeline), max_pipeline)
    }

    /// Bytes of replies the backends sent that the client's socket has not
    /// taken yet: those waiting in the inbox and the write buffer.
    fn unsent(&self) -> usize {
        self.inbox.as_ref().map_or(0, |i| i.bytes()) + self.wbuf.len()
    }

    /// Keeps this session's charge on the global budget equal to what its
    /// buffers, and the replies waiting in its inbox, hold beyond the free
    /// allowance.
    fn rebalance(&mut self) {
        let desired = self.rbuf.capacity().saturating_sub(FREE_BUFFER)
            + self.wbuf.capacity().saturating_sub(FREE_BUFFER)
            + self
                .inbox
                .as_ref()
                .map_or(0, |i| i.bytes().saturating_sub(FREE_BUFFER));
        if desired > self.charged {
            self.shared.budget.charge(desired - self.charged);
        } else {
            self.shared.budget.release(self.charged - desired);
        }
        self.charged = desired;
    }

    fn refuse_oversized(&mut self) {
        let mut plan = std::mem::take(&mut self.plan);
        plan.close(
            usize::MAX,
            error_bytes("ERR shardis-proxy memory budget exhausted: request too large right now"),
        );
        self.closing = true;
        self.rbuf.clear();
        // Nothing is routed here: the plan holds this one local reply only.
        self.queue_pending(&mut plan);
        self.plan = plan;
    }

    /// Parses every complete request in the read buffer and dispatches them.
    /// `Err` on a protocol error (already answered).
    async fn process_input(&mut self) -> Result<(), ()> {
        let table = self.shared.router.load();
        let mut plan = std::mem::take(&mut self.plan);
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
            let step = self.route_request(&req, &table, &mut plan).await;
            plan.note_key(&self.shared.stats, &req);
            match step {
                Step::Done | Step::Migrate(_) => self.decoder.recycle(req),
                Step::Stall { slot } => {
                    let deadline = Instant::now() + self.shared.config.hold_timeout();
                    self.stalled = Some((req, deadline, slot));
                    break;
                }
            }
            if plan.entries.len() >= 4096
                || self.pending_requests + plan.entries.len()
                    >= self.window(self.shared.config.max_pipeline)
            {
                break;
            }
            if plan.closes {
                self.closing = true;
                break;
            }
        }
        self.dispatch(&mut plan).await;
        self.plan = plan;
        drop(table);
        self.shrink_read_buffer();
        result
    }

    async fn retry_stalled(&mut self, deadline: Instant) {
        let Some((req, _, slot)) = self.stalled.take() else {
            return;
        };
        let table = self.shared.router.load();
        let mut plan = std::mem::take(&mut self.plan);
        match self.route_request(&req, &table, &mut plan).await {
            Step::Done | Step::Migrate(_) => plan.note_key(&self.shared.stats, &req),
            Step::Stall { .. } if Instant::now() >= deadline => {
                let command = req.name().and_then(|n| commands::table().lookup(n));
                let key_held = !table.held_keys.is_empty()
                    && command.is_some_and(|c| self.held_key_slot(c, &req, &table).is_some());
                let msg = if key_held {
                    format!("TRYAGAIN a key of slot {slot} is held while it moves; retry shortly")
                } else {
                    format!("TRYAGAIN slot {slot} is held for a topology change; retry shortly")
                };
                plan.error(command.map_or(usize::MAX, |c| c.index), &msg);
            }
            Step::Stall { slot } => {
                self.stalled = Some((req, deadline, slot));
            }
        }
        self.dispatch(&mut plan).await;
        self.plan = plan;
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
        self.dispatch(plan).await;
        let command = req.name().and_then(|n| commands::table().lookup(n));
        let mut on_source = OnSource::Move;
        if let (Some(command), [mv]) = (command, moves.as_slice()) {
            if matches!(command.route, Route::Slot) && self.keys_all_in_slot(command, req, mv.slot)
            {
                if command.is_read_only() {
                    on_source = Box::pin(self.read_on_source(mv, req)).await;
                } else if mv.writes_on_source && command.runs_in_script(&req.args) {
                    on_source = Box::pin(self.write_on_source(mv, req)).await;
                }
            }
            if let OnSource::Answered(reply) = on_source {
                self.shared.stats.record_slot(mv.slot);
                plan.local(command.index, reply);
                return Step::Done;
            }
        }
        let cmd = command.map_or(usize::MAX, |c| c.index);
        // `Absent`: nothing of it is on the source, nothing to move.
        let moves = match on_source {
            OnSource::Absent => &[][..],
            _ => &moves[..],
        };
        for mv in moves {
            // Boxed: a rare path whose future would otherwise be part of every
            // session's, idle ones included.
            if let Err(msg) = Box::pin(self.move_keys(mv)).await {
                plan.error(cmd, &msg);
                return Step::Done;
            }
        }
        self.migrated = true;
        let step = self.handle(req, table, plan);
        self.migrated = false;
        step
    }

    /// Every key of a single-slot request is in `slot` (a request across
    /// slots is refused by the usual routing instead).
    fn keys_all_in_slot(&mut self, cmd: &Command, req: &Request, slot: u16) -> bool {
        let mut keys = std::mem::take(&mut self.keys);
        let all = Self::key_positions_into(cmd, req, &mut keys)
            && keys
                .iter()
                .all(|&pos| req.args.get(pos).is_some_and(|k| slot_of(k) == slot));
        self.keys = keys;
        all
    }

    /// A read whose keys are all still on the source is answered there,
    /// without moving them: the command, then `EXISTS` of its keys, on the
    /// session's own connection to the source (after every earlier request
    /// of this client there). While a key of a migrating slot is on the
    /// source, the source's copy is the latest one: writes run there while
    /// all their keys are there (see [`Self::write_on_source`]), and
    /// otherwise move the keys first (a `MIGRATE` deletes the source's copy
    /// in the same step that the target acknowledges it). So reading it
    /// there is as fresh as moving it first, and costs the source a fraction
    /// of a `MIGRATE` (most of which is the synchronous round trip to the
    /// target, during which the source serves nobody).
    ///
    /// No `MULTI` is needed around the two: no key of a migrating slot can
    /// appear on the source (nothing creates one there), so a key that
    /// `EXISTS` finds after the command was there when the command ran. If
    /// some key is not found, the command's reply is thrown away.
    async fn read_on_source(&mut self, mv: &Move, req: &Request) -> OnSource {
        let mut payload = BytesMut::with_capacity(req.raw.len() + 32 + 32 * mv.keys.len());
        payload.extend_from_slice(&req.raw);
        let mut exists: Vec<&[u8]> = Vec::with_capacity(mv.keys.len() + 1);
        exists.push(b"EXISTS");
        exists.extend(mv.keys.iter().map(|k| k.as_ref()));
        shardis_resp::encode_command(&mut payload, exists.iter());
        let Ok(replies) = mv.from.conn(self.proto, self.id).request(&payload, 2).await else {
            return OnSource::Move;
        };
        let Ok([reply, present]) = <[Bytes; 2]>::try_from(replies) else {
            return OnSource::Move;
        };
        // The keys are distinct (collect_moves): all there, none, or some.
        match reply_integer(&present) {
            Some(n) if usize::try_from(n).ok() == Some(mv.keys.len()) => OnSource::Answered(reply),
            Some(0) => OnSource::Absent,
            _ => OnSource::Move,
        }
    }

    /// A write whose keys are all still on the source runs there, in one
    /// atomic step with the check ([`WRITE_SCRIPT`]), instead of moving its
    /// keys with a `MIGRATE` (which blocks the source for a round trip to
    /// the target). Nothing is created on the source this way: a key that
    /// is not there is not written there, so a key of a migrating slot
    /// that has left the source never comes back, and the mover's one scan
    /// still finds every key. The source's copy of a key stays the latest
    /// while the key is there; a copy that a half-failed `MIGRATE` left on
    /// the target is older, which is why every `MIGRATE` replaces.
    ///
    /// Only commands whose replies pass through Lua unchanged, and that
    /// neither delete their key nor give it an expiry, come here
    /// ([`Command::runs_in_script`]): a copy that a half-failed `MIGRATE`
    /// left on the target must not outlive the source's copy, which a
    /// deletion here would let it do. The script's answer is the command's
    /// own reply, except that its errors come back as `SHARDIS_ERR <error>`
    /// (restored here) and that missing keys come back as `SHARDIS_MISSING
    /// <how many were there>`. Not in the mover's safe mode, which deletes
    /// the source's copies after copying them.
    async fn write_on_source(&mut self, mv: &Move, req: &Request) -> OnSource {
        let numkeys = mv.keys.len().to_string();
        let script = |eval: &'static [u8], body: &'static str| {
            let mut args: Vec<&[u8]> = Vec::with_capacity(3 + mv.keys.len() + req.args.len());
            args.extend([eval, body.as_bytes(), numkeys.as_bytes()]);
            args.extend(mv.keys.iter().map(|k| k.as_ref()));
            args.extend(req.args.iter().map(|a| a.as_ref()));
            let mut payload = BytesMut::with_capacity(req.raw.len() + body.len() + 64);
            shardis_resp::encode_command(&mut payload, args.iter());
            payload
        };
        let conn = mv.from.conn(self.proto, self.id);
        let mut reply = match conn
            .request(&script(b"EVALSHA", write_script_sha()), 1)
            .await
        {
            Ok(mut replies) => replies.pop().unwrap_or_default(),
            Err(_) => return OnSource::Move,
        };
        if reply.starts_with(b"-NOSCRIPT") {
            // Not in the source's script cache yet (or flushed): `EVAL`
            // runs it and caches it.
            reply = match conn.request(&script(b"EVAL", WRITE_SCRIPT), 1).await {
                Ok(mut replies) => replies.pop().unwrap_or_default(),
                Err(_) => return OnSource::Move,
            };
        }
        if let Some(rest) = reply.strip_prefix(b"-SHARDIS_ERR ") {
            let mut out = BytesMut::with_capacity(rest.len() + 1);
            out.extend_from_slice(b"-");
            out.extend_from_slice(rest);
            return OnSource::Answered(out.freeze());
        }
        if reply.as_ref() == b"-SHARDIS_MISSING 0\r\n" {
            return OnSource::Absent;
        }
        if reply.first() == Some(&b'-') {
            // Some keys missing, or the script itself failed: nothing ran.
            return OnSource::Move;
        }
        if reply.as_ref() == b"#f\r\n" {
            // A null through Lua is `false`; none of these commands answers
            // a boolean, so it was a null.
            return OnSource::Answered(Bytes::from_static(b"_\r\n"));
        }
        OnSource::Answered(reply)
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
        if mv.writes_on_source {
            // A copy on the target of a key that is still on the source is
            // left over from a half-failed move, and older than the source's
            // (which writes may have changed since): replace it.
            args.push(b"REPLACE");
        }
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
        // `BUSYKEY` (safe mode only): a copy is on both servers for a moment,
        // between the mover's copy and its delete. Wait a little for it
        // rather than fail the client at once.
        let mut backoff = [2u64, 5, 10, 20, 40, 80].into_iter();
        loop {
            // The session's own connection to the source: the MIGRATE runs
            // after every earlier request of this client there.
            let reply = match mv.from.conn(self.proto, self.id).request(&payload, 1).await {
                Ok(mut replies) => replies.pop().unwrap_or_default(),
                Err(e) => {
                    return Err(format!(
                        "TRYAGAIN moving keys of slot {} failed: {e}",
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

    /// The positions of the request's keys into `keys`; false if it has none
    /// or they cannot be located (the command then fails on its own).
    fn key_positions_into(cmd: &Command, req: &Request, keys: &mut Vec<usize>) -> bool {
        match cmd.route {
            Route::Fanout { step, .. } => {
                keys.clear();
                keys.extend((1..req.args.len()).step_by(step.max(1)));
                true
            }
            Route::Slot => commands::key_positions(cmd, &req.args, keys).is_ok(),
            _ => false,
        }
    }

    /// The slot of the first held key the request touches, if any.
    fn held_key_slot(&mut self, cmd: &Command, req: &Request, table: &SlotTable) -> Option<u16> {
        let mut keys = std::mem::take(&mut self.keys);
        let held = if Self::key_positions_into(cmd, req, &mut keys) {
            keys.iter()
                .filter_map(|&pos| req.args.get(pos))
                .find(|key| table.held_keys.iter().any(|h| h == *key))
                .map(|key| slot_of(key))
        } else {
            None
        };
        self.keys = keys;
        held
    }

    /// After a refused `MULTI`: answers what Redis would queue with an error
    /// instead of running it, `EXEC` with `EXECABORT` and `DISCARD` with `OK`
    /// (both end the transaction). `QUIT` and `RESET` run as usual (they
    /// end it too). Whether it answered.
    fn in_refused_multi(&mut self, cmd: &Command, plan: &mut Plan) -> bool {
        match cmd.name {
            "exec" => {
                self.refused_multi = false;
                plan.error(
                    cmd.index,
                    "EXECABORT Transaction discarded because MULTI is not supported by \
                     shardis-proxy; none of its commands ran",
                );
            }
            "discard" => {
                self.refused_multi = false;
                plan.local(cmd.index, Bytes::from_static(b"+OK\r\n"));
            }
            "multi" => plan.error(cmd.index, "ERR MULTI calls can not be nested"),
            "quit" | "reset" => return false,
            name => plan.error(
                cmd.index,
                &format!(
                    "ERR '{}' was not run: MULTI is not supported by shardis-proxy, and every \
                     command up to EXEC or DISCARD is refused",
                    name.to_ascii_uppercase()
                ),
            ),
        }
        true
    }

    /// The moves a request needs: its keys in migrating slots, grouped by
    /// source and target.
    fn collect_moves(&mut self, cmd: &Command, req: &Request, table: &SlotTable) -> Vec<Move> {
        let mut keys = std::mem::take(&mut self.keys);
        let mut moves: Vec<Move> = Vec::new();
        if Self::key_positions_into(cmd, req, &mut keys) {
            for &pos in &keys {
                let Some(key) = req.args.get(pos) else {
                    continue;
                };
                let slot = slot_of(key);
                if let SlotRoute::Migrating {
                    from,
                    to,
                    to_group,
                    writes_on_source,
                } = table.route(slot)
                {
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
                            writes_on_source: *writes_on_source,
                        }),
                    }
                }
            }
        }
        self.keys = keys;
        moves
    }

    /// Sends the plan's batches and queues its replies; leaves `plan` empty
    /// for the next read, with its buffers.
    async fn dispatch(&mut self, plan: &mut Plan) {
        let mut needs = match self.spare.take() {
            Some(p) => p,
            None => Pending::new(),
        };
        let inbox = &*self.inbox.get_or_insert_with(Default::default);
        for b in plan.batches.iter_mut().take(plan.used) {
            let Some(server) = b.server.take() else {
                continue;
            };
            if b.count > 0 {
                server
                    .conn(b.proto, self.id)
                    .push(&b.payload, b.count, inbox, b.lane)
                    .await;
                match needs.needs.iter_mut().find(|(l, _)| *l == b.lane) {
                    Some((_, n)) => *n += b.count,
                    None => needs.needs.push((b.lane, b.count)),
                }
                if let Some(l) = self.lanes.get_mut(b.lane as usize) {
                    l.outstanding += u64::from(b.count);
                }
            }
            b.count = 0;
            b.payload.clear();
            if b.payload.capacity() > FREE_BUFFER {
                b.payload = BytesMut::new();
            }
        }
        plan.used = 0;
        if plan.is_empty() {
            needs.needs.clear();
            self.spare = Some(needs);
            return;
        }
        self.queue_pending_into(plan, needs);
    }

    /// Queues the plan's entries as one `Pending` (a plan with local replies
    /// only, nothing routed).
    fn queue_pending(&mut self, plan: &mut Plan) {
        let p = match self.spare.take() {
            Some(p) => p,
            None => Pending::new(),
        };
        self.queue_pending_into(plan, p);
    }

    fn queue_pending_into(&mut self, plan: &mut Plan, mut p: Pending) {
        std::mem::swap(&mut p.entries, &mut plan.entries);
        std::mem::swap(&mut p.parts, &mut plan.parts);
        std::mem::swap(&mut p.keys, &mut plan.keys);
        plan.closes = false;
        p.started = Instant::now();
        self.pending_requests += p.entries.len();
        self.pending.push_back(p);
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
        if self.refused_multi && self.in_refused_multi(cmd, plan) {
            return Step::Done;
        }
        // A positive arity is exact, as in Redis (`TIME x` is an error).
        if (req.args.len() < cmd.min_args() && !is_help(req))
            || (cmd.arity > 0 && req.args.len() != cmd.arity.unsigned_abs() as usize)
        {
            plan.error(cmd.index, &commands::arity_error(cmd.name));
            return Step::Done;
        }
        let routed = matches!(cmd.route, Route::Slot | Route::Fanout { .. });
        if routed && !table.held_keys.is_empty() && table.loaded && !table.fenced {
            if let Some(slot) = self.held_key_slot(cmd, req, table) {
                return Step::Stall { slot };
            }
        }
        if routed && table.any_migrating && !self.migrated && table.loaded && !table.fenced {
            let moves = self.collect_moves(cmd, req, table);
            if !moves.is_empty() {
                return Step::Migrate(moves);
            }
        }
        match cmd.route {
            Route::Local(Local::Info)
                if !table.masters.is_empty()
                    && local::info_wants(
                        req.args.iter().skip(1).map(|a| a.as_ref()),
                        "keyspace",
                        false,
                    ) =>
            {
                const INFO_KEYSPACE: &[u8] = b"*2\r\n$4\r\nINFO\r\n$8\r\nkeyspace\r\n";
                let text = self.info_text(req.args.iter().skip(1).map(|a| a.as_ref()));
                let lanes = self.forward_to_masters(table, plan, INFO_KEYSPACE);
                plan.info(cmd.index, text.into(), self.proto, &lanes);
                Step::Done
            }
            Route::Local(local) => {
                self.local(local, cmd, req, plan);
                Step::Done
            }
            Route::Refused(why) => {
                let and_then = if cmd.name == "multi" {
                    // A client that pipelines MULTI … EXEC (redis-py's
                    // default pipeline) must not see its commands run one by
                    // one, outside any transaction.
                    self.refused_multi = true;
                    "; the commands sent after it are refused too, until EXEC or DISCARD"
                } else {
                    ""
                };
                plan.error(
                    cmd.index,
                    &format!(
                        "ERR command '{}' is not supported by shardis-proxy: {why}{and_then}",
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
                let lanes = self.forward_to_masters(table, plan, &req.raw);
                plan.merge(cmd.index, merge, &lanes, &[]);
                Step::Done
            }
        }
    }

    /// Queues `frame` for every group's master; the lanes of their replies.
    /// Rare (DBSIZE, INFO keyspace): a list per request is fine.
    fn forward_to_masters(&mut self, table: &SlotTable, plan: &mut Plan, frame: &[u8]) -> Vec<u16> {
        table
            .masters
            .iter()
            .map(|(_, server)| plan.forward(server, self.proto, self.id, &mut self.lanes, frame))
            .collect()
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
            let slot = match slot {
                Some(slot) => {
                    self.shared.stats.record_slot(slot);
                    slot
                }
                // `OBJECT HELP`, `XINFO HELP`…: no key; any master answers
                // (slot 0's).
                None if is_help(req) => 0,
                None => {
                    plan.error(cmd.index, &commands::arity_error(cmd.name));
                    return Step::Done;
                }
            };
            match self.server_for(cmd, slot, table, plan) {
                Ok(server) => {
                    let lane = plan.forward(server, self.proto, self.id, &mut self.lanes, &req.raw);
                    plan.entries.push(Entry {
                        cmd: cmd.index,
                        kind: EntryKind::Forward { lane },
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
        // Which part each key goes to; a part is a batch of the plan (one per server), and
        // parts are numbered in the order their first key appears. Both lists are reused
        // from request to request.
        let mut part_of = std::mem::take(&mut self.fanout_keys);
        let mut parts = std::mem::take(&mut self.fanout_parts);
        part_of.clear();
        parts.clear();
        let mut failed = None;
        for k in 0..nkeys {
            let Some(key) = args.get(1 + k * step) else {
                break;
            };
            let slot = slot_of(key);
            self.shared.stats.record_slot(slot);
            let server = match self.server_for(cmd, slot, table, plan) {
                Ok(s) => s,
                Err(step) => {
                    failed = Some(step);
                    break;
                }
            };
            // Most keys go to a server an earlier key of this request went to.
            let known = parts.iter().position(|&(b, _)| {
                plan.batches
                    .get(b as usize)
                    .and_then(|b| b.server.as_ref())
                    .is_some_and(|s| Arc::ptr_eq(s, server))
            });
            let p = match known {
                Some(p) => p,
                None => {
                    let (batch, _) = plan.batch_for(server, self.proto, self.id, &mut self.lanes);
                    match parts.iter().position(|&(b, _)| b == batch) {
                        Some(p) => p,
                        None => {
                            parts.push((batch, 0));
                            parts.len() - 1
                        }
                    }
                }
            };
            if let Some((_, n)) = parts.get_mut(p) {
                *n += 1;
            }
            part_of.push(p as u16);
        }
        let step_out = match failed {
            Some(step) => step,
            None if parts.len() == 1 => {
                // One server: pass the request through whole.
                if let Some(&(batch, _)) = parts.first() {
                    let lane = plan.forward_to(batch, &req.raw);
                    plan.entries.push(Entry {
                        cmd: cmd.index,
                        kind: EntryKind::Forward { lane },
                    });
                }
                Step::Done
            }
            None => {
                self.encode_parts(cmd, merge, step, req, plan, &part_of, &parts);
                Step::Done
            }
        };
        self.fanout_keys = part_of;
        self.fanout_parts = parts;
        step_out
    }

    /// Encodes each part's sub-command straight into its batch: the command name, then the
    /// keys (with their values, for MSET) of that part, copied as the client encoded them.
    #[allow(clippy::too_many_arguments)]
    fn encode_parts(
        &self,
        cmd: &Command,
        merge: Merge,
        step: usize,
        req: &Request,
        plan: &mut Plan,
        part_of: &[u16],
        parts: &[(u16, u32)],
    ) {
        let args = &req.args;
        let name = args.first().map(|b| b.as_ref()).unwrap_or_default();
        let at = plan.parts.len() as u32;
        for (p, &(batch, count)) in parts.iter().enumerate() {
            let Some(b) = plan.batches.get_mut(batch as usize) else {
                continue;
            };
            write_array_header(&mut b.payload, 1 + count as usize * step);
            match req.arg_frames(0, 0) {
                Some(frame) => b.payload.extend_from_slice(frame),
                None => write_bulk(&mut b.payload, name),
            }
            for (k, _) in part_of.iter().enumerate().filter(|(_, &q)| q as usize == p) {
                let first = 1 + k * step;
                match req.arg_frames(first, first + step - 1) {
                    Some(frames) => b.payload.extend_from_slice(frames),
                    None => {
                        for a in args.iter().skip(first).take(step) {
                            write_bulk(&mut b.payload, a);
                        }
                    }
                }
            }
            b.count += 1;
            let lane = b.lane;
            plan.parts.push(lane);
        }
        let nparts = plan.parts.len() as u32 - at;
        let mut order = (at + nparts, 0);
        if merge == Merge::Values {
            // MGET: which part holds each key's value; each part answers its
            // keys in order.
            plan.parts.extend_from_slice(part_of);
            order.1 = part_of.len() as u32;
        }
        plan.entries.push(Entry {
            cmd: cmd.index,
            kind: EntryKind::Merge(MergeRef {
                merge,
                parts: (at, nparts),
                order,
            }),
        });
    }

    /// Moves every finished `Pending` into the write buffer, in order.
    fn collect_ready(&mut self) {
        while self.wbuf.len() < COLLECT_HIGH {
            let Some(front) = self.pending.front() else {
                break;
            };
            let resolved = match &self.inbox {
                Some(inbox) => front.resolved(&inbox.lanes()),
                None => front.needs.is_empty(),
            };
            if !resolved {
                break;
            }
            if let Some(p) = self.pending.pop_front() {
                self.pending_requests = self.pending_requests.saturating_sub(p.entries.len());
                self.write_pending(p);
            }
        }
    }

    fn write_pending(&mut self, mut p: Pending) {
        let before = self.wbuf.len();
        let mut recorder = self.shared.stats.recorder(p.started, &self.shared.slowlog);
        let mut guard = self.inbox.as_ref().map(|i| i.lanes());
        let lanes: &mut [VecDeque<Reply>] = match guard.as_deref_mut() {
            Some(l) => l,
            None => &mut [],
        };
        let mut taken = 0;
        let entries = p.entries.len();
        for entry in p.entries.drain(..) {
            let start = self.wbuf.len();
            match entry.kind {
                EntryKind::Local(b) => self.wbuf.extend_from_slice(&b),
                EntryKind::Close(b) => {
                    self.wbuf.extend_from_slice(&b);
                    self.closing = true;
                }
                EntryKind::Forward { lane } => match take_reply(lanes, lane) {
                    Ok(r) => {
                        taken += r.len();
                        self.wbuf.extend_from_slice(&r);
                    }
                    Err(e) => write_error(&mut self.wbuf, format!("ERR {e}").as_bytes()),
                },
                EntryKind::Merge(m) => {
                    taken +=
                        merge_into(&mut self.wbuf, &m, &p.parts, lanes, &mut self.merge_cursors)
                }
                EntryKind::Info { text, proto, parts } => {
                    taken += info_into(&mut self.wbuf, &text, proto, span(&p.parts, parts), lanes)
                }
            }
            let is_err = matches!(self.wbuf.get(start), Some(b'-') | Some(b'!'));
            recorder.command(entry.cmd, is_err);
        }
        recorder.finish(&p.keys, &self.peer, self.name.as_ref());
        for &(lane, n) in &p.needs {
            if let Some(l) = self.lanes.get_mut(lane as usize) {
                l.outstanding = l.outstanding.saturating_sub(u64::from(n));
            }
            // A long pipeline once is no reason to keep its room for ever.
            if let Some(l) = lanes.get_mut(lane as usize) {
                if l.is_empty() && l.capacity() > KEEP_LANE {
                    *l = VecDeque::new();
                }
            }
        }
        drop(guard);
        if let Some(inbox) = &self.inbox {
            inbox.taken(taken);
        }
        if let Some(per) = taken.checked_div(entries) {
            self.reply_avg = (self.reply_avg * 7 + per) / 8;
        }
        if self.wbuf.len() - before > 0 && self.wbuf.capacity() > FREE_BUFFER {
            // Big replies count against the global budget while buffered.
            self.rebalance();
        }
        // Keep it for its capacity, unless it held a huge pipeline.
        p.needs.clear();
        p.parts.clear();
        p.keys.clear();
        if p.entries.capacity() <= 4096 && p.parts.capacity() <= 4096 {
            self.spare = Some(p);
        }
    }

    /// Writes what the socket takes now.
    fn flush(&mut self) -> io::Result<()> {
        while !self.wbuf.is_empty() {
            match self.stream.try_write(&self.wbuf) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                // `advance`, not `split_to`: no second handle on the buffer.
                Ok(n) => self.wbuf.advance(n),
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
        if let Some(inbox) = &self.inbox {
            inbox.close();
        }
        self.shared.budget.release(self.charged);
        self.shared
            .stats
            .sessions_current
            .fetch_sub(1, Ordering::Relaxed);
    }
}

/// Resolves when the front pending unit has all its replies.
fn front_resolved(
    inbox: Option<&Inbox>,
    pending: &VecDeque<Pending>,
    cx: &mut Context<'_>,
) -> Poll<()> {
    let Some(front) = pending.front() else {
        return Poll::Pending;
    };
    let resolved = match inbox {
        Some(inbox) => {
            inbox.register(cx.waker());
            front.resolved(&inbox.lanes())
        }
        None => front.needs.is_empty(),
    };
    if resolved {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

/// Ready once the inbox holds a MiB more than `seen` bytes of replies.
fn inbox_grew(inbox: Option<&Inbox>, seen: usize, cx: &mut Context<'_>) -> Poll<()> {
    let Some(inbox) = inbox else {
        return Poll::Pending;
    };
    inbox.register(cx.waker());
    if inbox.bytes() > seen.saturating_add(1 << 20) {
        Poll::Ready(())
    } else {
        Poll::Pending
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Takes the next reply of `lane`.
fn take_reply(lanes: &mut [VecDeque<Reply>], lane: u16) -> Reply {
    match lanes.get_mut(lane as usize).and_then(VecDeque::pop_front) {
        Some(r) => r,
        // `Pending::resolved` saw it; only a logic error gets here.
        None => Err(BackendError::Lost {
            addr: "backend".into(),
            reason: "no reply".into(),
        }),
    }
}

/// The next reply of `lane`, left in place.
fn peek_reply(lanes: &[VecDeque<Reply>], lane: u16) -> Result<&Bytes, BackendError> {
    match lanes.get(lane as usize).and_then(VecDeque::front) {
        Some(Ok(r)) => Ok(r),
        Some(Err(e)) => Err(e.clone()),
        None => Err(BackendError::Lost {
            addr: "backend".into(),
            reason: "no reply".into(),
        }),
    }
}

/// Combines the parts of a split command into one reply, and takes each
/// part's reply off its lane. `cursors` is scratch space. Returns the bytes
/// of the replies it took.
fn merge_into(
    out: &mut BytesMut,
    m: &MergeRef,
    parts: &[u16],
    lanes: &mut [VecDeque<Reply>],
    cursors: &mut Vec<ArrayCursor>,
) -> usize {
    let (part_lanes, order) = (span(parts, m.parts), span(parts, m.order));
    merge_replies(out, m.merge, part_lanes, order, lanes, cursors);
    take_parts(part_lanes, lanes)
}

/// The lanes at `(at, n)` of a `Pending`'s parts list.
fn span(parts: &[u16], (at, n): (u32, u32)) -> &[u16] {
    parts
        .get(at as usize..(at as usize).saturating_add(n as usize))
        .unwrap_or_default()
}

/// Takes the parts' replies off their lanes; the bytes taken.
fn take_parts(part_lanes: &[u16], lanes: &mut [VecDeque<Reply>]) -> usize {
    part_lanes
        .iter()
        .map(|&lane| take_reply(lanes, lane).map_or(0, |r| r.len()))
        .sum()
}

/// The first failing part answers for the whole command: writes its error,
/// if there is one.
fn first_failure(out: &mut BytesMut, part_lanes: &[u16], lanes: &[VecDeque<Reply>]) -> bool {
    for &lane in part_lanes {
        match peek_reply(lanes, lane) {
            Ok(r) if reply_is_error(r) => {
                out.extend_from_slice(r);
                return true;
            }
            Ok(_) => {}
            Err(e) => {
                write_error(out, format!("ERR {e}").as_bytes());
                return true;
            }
        }
    }
    false
}

/// Writes `INFO`'s reply: `text`, then the keyspace of the `INFO keyspace`
/// replies on `part_lanes` added up; a master that failed to answer answers
/// for the whole (as for DBSIZE: no count short of a group). Returns the
/// reply bytes taken.
fn info_into(
    out: &mut BytesMut,
    text: &[u8],
    proto: Protocol,
    part_lanes: &[u16],
    lanes: &mut [VecDeque<Reply>],
) -> usize {
    if !first_failure(out, part_lanes, lanes) {
        let mut dbs = local::Keyspace::new();
        for r in part_lanes.iter().filter_map(|&l| peek_reply(lanes, l).ok()) {
            if let Some(body) = reply_text(r) {
                local::add_keyspace(&mut dbs, body);
            }
        }
        let mut body = BytesMut::from(text);
        body.extend_from_slice(local::keyspace_text(&dbs).as_bytes());
        local::text_frame(proto, body.freeze()).encode(proto, out);
    }
    take_parts(part_lanes, lanes)
}

/// The text of a bulk or verbatim string reply.
fn reply_text(r: &[u8]) -> Option<&[u8]> {
    let kind = *r.first()?;
    let start = r.windows(2).position(|w| w == b"\r\n")? + 2;
    let body = r.get(start..r.len().checked_sub(2)?)?;
    match kind {
        b'$' => Some(body),
        b'=' => body.get(4..),
        _ => None,
    }
}

fn merge_replies(
    out: &mut BytesMut,
    merge: Merge,
    parts: &[u16],
    order: &[u16],
    lanes: &[VecDeque<Reply>],
    cursors: &mut Vec<ArrayCursor>,
) {
    if first_failure(out, parts, lanes) {
        return;
    }
    let replies = parts
        .iter()
        .filter_map(|&lane| peek_reply(lanes, lane).ok());
    match merge {
        Merge::Sum => {
            let mut sum: i64 = 0;
            for r in replies {
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
            if let Some(r) = replies.into_iter().next() {
                out.extend_from_slice(r);
            }
        }
        Merge::Values => {
            const BAD: &[u8] = b"ERR unexpected reply from a backend while merging MGET";
            cursors.clear();
            for (p, r) in replies.enumerate() {
                let want = order.iter().filter(|&&q| q as usize == p).count();
                match ArrayCursor::new(r) {
                    // Each part must answer exactly the keys it was sent.
                    Some(c) if c.remaining() == want => cursors.push(c),
                    _ => {
                        write_error(out, BAD);
                        return;
                    }
                }
            }
            let start = out.len();
            write_array_header(out, order.len());
            for &p in order {
                let reply = parts.get(p as usize).map(|&lane| peek_reply(lanes, lane));
                let element = match (reply, cursors.get_mut(p as usize)) {
                    (Some(Ok(r)), Some(c)) => c.next_element(r).and_then(|range| r.get(range)),
                    _ => None,
                };
                match element {
                    Some(v) => out.extend_from_slice(v),
                    None => {
                        out.truncate(start);
                        write_error(out, BAD);
                        return;
                    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn lanes_with(replies: &[&[&'static [u8]]]) -> Vec<VecDeque<Reply>> {
        replies
            .iter()
            .map(|lane| {
                lane.iter()
                    .map(|r| Ok(Bytes::from_static(r)))
                    .collect::<VecDeque<Reply>>()
            })
            .collect()
    }

    fn merged(
        merge: Merge,
        parts: &[u16],
        order: &[u16],
        lanes: &mut [VecDeque<Reply>],
    ) -> Vec<u8> {
        let mut all = parts.to_vec();
        all.extend_from_slice(order);
        let m = MergeRef {
            merge,
            parts: (0, parts.len() as u32),
            order: (parts.len() as u32, order.len() as u32),
        };
        let mut out = BytesMut::new();
        merge_into(&mut out, &m, &all, lanes, &mut Vec::new());
        out.to_vec()
    }

    #[test]
    fn mget_parts_merge_in_key_order_and_leave_the_lanes() {
        // Keys k0 k1 k2 k3: k0, k2 on lane 1; k1, k3 on lane 0.
        let mut lanes = lanes_with(&[
            &[b"*2\r\n$2\r\nv1\r\n$-1\r\n", b"+next\r\n"],
            &[b"*2\r\n$2\r\nv0\r\n*1\r\n:2\r\n"],
        ]);
        let out = merged(Merge::Values, &[1, 0], &[0, 1, 0, 1], &mut lanes);
        assert_eq!(out, b"*4\r\n$2\r\nv0\r\n$2\r\nv1\r\n*1\r\n:2\r\n$-1\r\n");
        // Exactly one reply was taken from each part's lane.
        assert_eq!(lanes[0].len(), 1);
        assert!(lanes[1].is_empty());
    }

    #[test]
    fn failing_or_malformed_parts_answer_for_the_whole_command() {
        let mut lanes = lanes_with(&[&[b"*1\r\n$1\r\na\r\n"], &[b"-ERR oops\r\n"]]);
        let out = merged(Merge::Values, &[0, 1], &[0, 1], &mut lanes);
        assert_eq!(out, b"-ERR oops\r\n");
        assert!(lanes.iter().all(VecDeque::is_empty));

        // A part answering a different number of values than it was asked.
        let mut lanes = lanes_with(&[&[b"*2\r\n$1\r\na\r\n$1\r\nb\r\n"], &[b"*1\r\n$1\r\nc\r\n"]]);
        let out = merged(Merge::Values, &[0, 1], &[0, 1], &mut lanes);
        assert!(out.starts_with(b"-ERR unexpected reply"), "{out:?}");

        let mut lanes = vec![VecDeque::new(), VecDeque::new()];
        lanes[0].push_back(Ok(Bytes::from_static(b":1\r\n")));
        lanes[1].push_back(Err(BackendError::Down {
            addr: "127.0.0.1:1".into(),
            reason: "refused".into(),
        }));
        let out = merged(Merge::Sum, &[0, 1], &[], &mut lanes);
        assert_eq!(out, b"-ERR backend 127.0.0.1:1 is unreachable: refused\r\n");
        assert!(lanes.iter().all(VecDeque::is_empty));
    }

    #[test]
    fn sums_and_all_ok() {
        let mut lanes = lanes_with(&[&[b":2\r\n"], &[b":3\r\n"]]);
        assert_eq!(merged(Merge::Sum, &[0, 1], &[], &mut lanes), b":5\r\n");
        let mut lanes = lanes_with(&[&[b"+OK\r\n"], &[b"+OK\r\n"]]);
        assert_eq!(merged(Merge::AllOk, &[1, 0], &[], &mut lanes), b"+OK\r\n");
        let mut lanes = lanes_with(&[&[b"+OK\r\n"], &[b"$1\r\nx\r\n"]]);
        assert!(merged(Merge::Sum, &[0, 1], &[], &mut lanes).starts_with(b"-ERR unexpected"));
    }

    #[test]
    fn lanes_are_per_connection_and_reused_only_when_drained() {
        let batch = |conn, lane| BatchBuilder {
            server: None,
            proto: Protocol::Resp2,
            conn,
            lane,
            payload: BytesMut::new(),
            count: 1,
        };
        let mut lanes = Vec::new();
        assert_eq!(lane_for(7, &mut lanes, &[]), 0);
        // A drained lane no batch of the plan uses is taken over...
        assert_eq!(lane_for(8, &mut lanes, &[]), 0);
        assert_eq!(lanes[0].conn, 8);
        // ...but not one the plan uses, nor one that still expects replies.
        assert_eq!(lane_for(7, &mut lanes, &[batch(8, 0)]), 1);
        lanes[1].outstanding = 2;
        assert_eq!(lane_for(9, &mut lanes, &[batch(8, 0)]), 2);
        lanes[2].outstanding = 1;
        assert_eq!(lane_for(7, &mut lanes, &[]), 1);
        assert_eq!(lane_for(9, &mut lanes, &[]), 2);
        assert_eq!(lane_for(10, &mut lanes, &[]), 0);
        lanes[0].outstanding = 1;
        assert_eq!(lane_for(11, &mut lanes, &[]), 3);
        assert_eq!(lanes.len(), 4);
    }
}
