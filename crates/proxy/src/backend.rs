//! Connections to the Redis servers.
//!
//! Each backend connection is one task that owns one TCP connection and does
//! both directions. Sessions append already-encoded requests to the
//! connection's queue (one lock and one copy per read-batch) together with
//! where the replies go; the task takes everything queued at once, writes it in
//! as few syscalls as the socket allows, and hands each reply (a zero-copy
//! slice of its read buffer) to the session's [`Inbox`]. Redis answers a
//! connection's requests in order, so a FIFO of waiters is all the
//! bookkeeping needed, and nothing is allocated per request or per batch.
//!
//! Many client sessions share a handful of these per server; a session always
//! uses the same one per server, so its own requests to a server stay ordered.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures::task::AtomicWaker;
use parking_lot::{Mutex, MutexGuard};
use shardis_resp::{encode_command, Limits, Protocol, ReplyScanner};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};
use tokio::time::{timeout, Instant};

use crate::io::Read;
use crate::stats::BackendStats;

/// Why a backend could not answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum BackendError {
    #[error("backend {addr} is unreachable: {reason}")]
    Down { addr: Arc<str>, reason: Arc<str> },
    #[error("backend {addr} did not answer within {ms} ms")]
    Timeout { addr: Arc<str>, ms: u64 },
    #[error("backend {addr} connection lost: {reason}")]
    Lost { addr: Arc<str>, reason: Arc<str> },
    #[error("backend {addr} sent a malformed reply: {reason}")]
    Protocol { addr: Arc<str>, reason: Arc<str> },
}

/// How a connection authenticates and names itself; replayed on every reconnect.
#[derive(Debug, Clone, Default)]
pub struct Credentials {
    pub user: Option<String>,
    pub password: Option<String>,
}

/// Settings shared by every backend connection.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    pub credentials: Credentials,
    /// `CLIENT SETNAME` value: `shardis-proxy-<id>`.
    pub client_name: String,
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub limits: Limits,
    /// Batches queued per connection (not yet taken by its task) before
    /// senders wait; queued bytes are bounded too.
    pub queue_depth: usize,
    /// `stats = false`: no latency histogram per server.
    pub stats: bool,
    /// Until when the proxy's etcd lease is proven alive: nothing is
    /// written to a backend after that.
    pub lease: Arc<crate::lease::LeaseClock>,
}

/// Facts learnt from the servers' `HELLO` answers.
#[derive(Debug, Default)]
pub struct ServerFacts {
    /// Lowest `redis_version` seen, packed as major<<32|minor<<16|patch (0 = none yet).
    min_version: AtomicU64,
}

impl ServerFacts {
    fn record(&self, version: &str) {
        let mut parts = version.split('.').map(|p| p.parse::<u64>().unwrap_or(0));
        let packed = (parts.next().unwrap_or(0) << 32)
            | (parts.next().unwrap_or(0) << 16)
            | parts.next().unwrap_or(0);
        if packed == 0 {
            return;
        }
        let mut cur = self.min_version.load(Ordering::Relaxed);
        while cur == 0 || packed < cur {
            match self.min_version.compare_exchange(
                cur,
                packed,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
    }

    /// The version the proxy reports: never higher than any backend's.
    pub fn version(&self) -> String {
        let v = self.min_version.load(Ordering::Relaxed);
        if v == 0 {
            return "6.0.0".into();
        }
        format!("{}.{}.{}", v >> 32, (v >> 16) & 0xffff, v & 0xffff)
    }
}

/// One reply, or why it will not come.
pub type Reply = Result<Bytes, BackendError>;

/// Replies of one batch, in request order.
pub type BatchReply = Result<Vec<Bytes>, BackendError>;

// ---------------------------------------------------------------- inbox

/// Where a session's replies arrive: one FIFO ("lane") per backend connection
/// the session uses. A connection answers in order and a session queues its
/// requests to one connection in order, so the session takes each lane's
/// replies front to back in the order it queued the requests.
#[derive(Default)]
pub struct Inbox {
    lanes: Mutex<Vec<VecDeque<Reply>>>,
    waker: AtomicWaker,
    /// Bytes of the replies in the lanes (what the session has not taken yet).
    bytes: AtomicUsize,
    /// The session is gone: replies still due are dropped as they arrive.
    closed: AtomicBool,
}

impl Inbox {
    /// The lanes, indexed by lane number (a lane nothing arrived on yet may be
    /// missing).
    pub fn lanes(&self) -> MutexGuard<'_, Vec<VecDeque<Reply>>> {
        self.lanes.lock()
    }

    /// Wakes `waker` when replies arrive.
    pub fn register(&self, waker: &Waker) {
        self.waker.register(waker);
    }

    /// Bytes of the replies not taken yet.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    /// The session took `n` bytes of replies off its lanes.
    pub fn taken(&self, n: usize) {
        let _ = self
            .bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_sub(n))
            });
    }

    /// The session ended: drops the replies waiting, and every one still
    /// due (the backend connections hold the inbox until those arrive).
    pub fn close(&self) {
        self.closed.store(true, Ordering::Relaxed);
        let dropped = std::mem::take(&mut *self.lanes.lock());
        self.bytes.store(0, Ordering::Relaxed);
        drop(dropped);
    }

    fn deliver(&self, lane: u16, reply: Reply) {
        if self.closed.load(Ordering::Relaxed) {
            return;
        }
        if let Ok(r) = &reply {
            self.bytes.fetch_add(r.len(), Ordering::Relaxed);
        }
        let mut lanes = self.lanes.lock();
        let i = lane as usize;
        if lanes.len() <= i {
            lanes.resize_with(i + 1, VecDeque::new);
        }
        if let Some(l) = lanes.get_mut(i) {
            l.push_back(reply);
        }
    }

    fn fail(&self, lane: u16, count: u32, err: &BackendError) {
        for _ in 0..count {
            self.deliver(lane, Err(err.clone()));
        }
        self.waker.wake();
    }
}

// ---------------------------------------------------------------- queue

/// Who gets the replies of some queued requests.
enum Waiter {
    /// The next `count` replies go to lane `lane` of a session's inbox.
    Lane {
        inbox: Arc<Inbox>,
        lane: u16,
        count: u32,
    },
    /// The next `count` replies are collected and sent together (moves before
    /// a request in a migrating slot; markers, with `count` 0).
    Collect {
        count: u32,
        replies: Vec<Bytes>,
        reply: oneshot::Sender<BatchReply>,
    },
}

impl Waiter {
    fn remaining(&self) -> u32 {
        match self {
            Waiter::Lane { count, .. } | Waiter::Collect { count, .. } => *count,
        }
    }

    /// Answers everything still expected with `err`.
    fn fail(self, err: &BackendError) {
        match self {
            Waiter::Lane { inbox, lane, count } => inbox.fail(lane, count, err),
            Waiter::Collect { reply, .. } => {
                let _ = reply.send(Err(err.clone()));
            }
        }
    }

    /// Answers a waiter whose replies have all arrived.
    fn complete(self) {
        match self {
            Waiter::Lane { inbox, .. } => inbox.waker.wake(),
            Waiter::Collect { replies, reply, .. } => {
                let _ = reply.send(Ok(replies));
            }
        }
    }
}

/// Requests queued on one connection that its task has not taken yet.
#[derive(Default)]
struct Queue {
    /// Encoded requests, back to back.
    buf: BytesMut,
    /// Who gets their replies, in order.
    waiters: VecDeque<Waiter>,
    /// The connection's owner is gone: finish what is queued, then end.
    closed: bool,
    /// The task has ended: nobody will answer any more.
    ended: bool,
    /// A sender waits for room.
    full: bool,
}

/// Above this many queued bytes senders wait for the task to take them
/// (backpressure towards the sessions when a server does not keep up).
const QUEUE_HIGH: usize = 4 * 1024 * 1024;

struct ConnShared {
    queue: Mutex<Queue>,
    /// The task, waiting for requests.
    task: AtomicWaker,
    /// Senders waiting for room.
    room: Notify,
    up: AtomicBool,
    /// `BackendOptions::queue_depth`.
    depth: usize,
}

static NEXT_CONN_ID: AtomicU64 = AtomicU64::new(1);

/// The sending side of one backend connection. Dropping it lets the
/// connection finish what is queued and close.
pub struct BackendConn {
    shared: Arc<ConnShared>,
    id: u64,
}

impl BackendConn {
    /// Unique for the life of the process (never reused, unlike an address).
    #[inline]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Queues `count` encoded requests whose replies go to lane `lane` of
    /// `inbox`. Waits while the queue is over its high-water mark.
    pub async fn push(&self, payload: &[u8], count: u32, inbox: &Arc<Inbox>, lane: u16) {
        if count == 0 {
            return;
        }
        let mut waiter = None;
        loop {
            {
                let mut q = self.shared.queue.lock();
                if q.ended {
                    drop(q);
                    task_ended().fail_lane(inbox, lane, count);
                    return;
                }
                if q.buf.len() < QUEUE_HIGH && q.waiters.len() < self.shared.depth {
                    let idle = q.waiters.is_empty();
                    q.buf.extend_from_slice(payload);
                    match q.waiters.back_mut() {
                        Some(Waiter::Lane {
                            inbox: i,
                            lane: l,
                            count: c,
                        }) if *l == lane && Arc::ptr_eq(i, inbox) => *c += count,
                        _ => q.waiters.push_back(Waiter::Lane {
                            inbox: inbox.clone(),
                            lane,
                            count,
                        }),
                    }
                    drop(q);
                    if idle {
                        self.shared.task.wake();
                    }
                    return;
                }
                q.full = true;
            }
            match waiter.take() {
                // Created before the second look at the queue, so a
                // `notify_waiters` after that look is not missed.
                None => waiter = Some(self.shared.room.notified()),
                Some(w) => w.await,
            }
        }
    }

    /// Queues `count` encoded requests and waits for all their replies.
    pub async fn request(&self, payload: &[u8], count: u32) -> BatchReply {
        let (tx, rx) = oneshot::channel();
        let waiter = Waiter::Collect {
            count,
            replies: Vec::with_capacity(count as usize),
            reply: tx,
        };
        {
            let mut q = self.shared.queue.lock();
            if q.ended {
                return Err(task_ended());
            }
            // Moves and markers are rare: they skip the high-water mark.
            q.buf.extend_from_slice(payload);
            let idle = q.waiters.is_empty();
            q.waiters.push_back(waiter);
            drop(q);
            if idle {
                self.shared.task.wake();
            }
        }
        rx.await.unwrap_or_else(|_| Err(task_ended()))
    }

    /// Resolves once every request queued before it has been answered (or
    /// failed): the drain step of a topology change.
    pub async fn marker(&self) {
        let _ = self.request(&[], 0).await;
    }

    pub fn is_up(&self) -> bool {
        self.shared.up.load(Ordering::Relaxed)
    }
}

impl Drop for BackendConn {
    fn drop(&mut self) {
        self.shared.queue.lock().closed = true;
        self.shared.task.wake();
    }
}

fn task_ended() -> BackendError {
    BackendError::Lost {
        addr: "backend".into(),
        reason: "connection task ended".into(),
    }
}

impl BackendError {
    fn fail_lane(&self, inbox: &Inbox, lane: u16, count: u32) {
        inbox.fail(lane, count, self);
    }
}

/// Marks the queue ended and fails whatever is in it when the task ends for
/// any reason (a panic included), so no session waits forever.
struct EndGuard(Arc<ConnShared>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        let waiters = {
            let mut q = self.0.queue.lock();
            q.ended = true;
            q.buf = BytesMut::new();
            std::mem::take(&mut q.waiters)
        };
        self.0.up.store(false, Ordering::Relaxed);
        self.0.room.notify_waiters();
        let err = task_ended();
        for w in waiters {
            w.fail(&err);
        }
    }
}

/// All connections to one Redis server: `n` per protocol.
pub struct Server {
    pub addr: Arc<str>,
    resp2: Vec<BackendConn>,
    resp3: Vec<BackendConn>,
    pub stats: Arc<BackendStats>,
}

impl Server {
    pub fn new(addr: &str, n: usize, opts: Arc<BackendOptions>, facts: Arc<ServerFacts>) -> Server {
        let addr: Arc<str> = addr.into();
        let stats = Arc::new(BackendStats::new(&addr, opts.stats));
        let make = |proto| {
            (0..n.max(1))
                .map(|_| {
                    spawn_conn(
                        addr.clone(),
                        proto,
                        opts.clone(),
                        facts.clone(),
                        stats.clone(),
                    )
                })
                .collect()
        };
        Server {
            resp2: make(Protocol::Resp2),
            resp3: make(Protocol::Resp3),
            addr,
            stats,
        }
    }

    /// The connection a session uses: stable per session, so that one client's
    /// requests to this server stay in order.
    #[inline]
    pub fn conn(&self, proto: Protocol, session: u64) -> &BackendConn {
        let conns = match proto {
            Protocol::Resp2 => &self.resp2,
            Protocol::Resp3 => &self.resp3,
        };
        let i = (session as usize) % conns.len().max(1);
        // `Server::new` never builds an empty list.
        match conns.get(i) {
            Some(c) => c,
            None => no_connections(&self.addr),
        }
    }

    pub fn all_conns(&self) -> impl Iterator<Item = &BackendConn> {
        self.resp2.iter().chain(self.resp3.iter())
    }

    /// True when some connection to it is established.
    pub fn is_up(&self) -> bool {
        self.all_conns().any(BackendConn::is_up)
    }
}

#[cold]
fn no_connections(addr: &str) -> ! {
    // `Server::new` builds at least one connection per protocol.
    panic!("no backend connections for {addr}")
}

fn spawn_conn(
    addr: Arc<str>,
    proto: Protocol,
    opts: Arc<BackendOptions>,
    facts: Arc<ServerFacts>,
    stats: Arc<BackendStats>,
) -> BackendConn {
    let shared = Arc::new(ConnShared {
        queue: Mutex::new(Queue::default()),
        task: AtomicWaker::new(),
        room: Notify::new(),
        up: AtomicBool::new(false),
        depth: opts.queue_depth.max(1),
    });
    let task = ConnTask {
        addr,
        proto,
        opts,
        facts,
        stats,
        shared: shared.clone(),
        taken: VecDeque::new(),
    };
    tokio::spawn(task.run());
    BackendConn {
        shared,
        id: NEXT_CONN_ID.fetch_add(1, Ordering::Relaxed),
    }
}

struct ConnTask {
    addr: Arc<str>,
    proto: Protocol,
    opts: Arc<BackendOptions>,
    facts: Arc<ServerFacts>,
    stats: Arc<BackendStats>,
    shared: Arc<ConnShared>,
    /// Swapped with the queue's waiter list, so both keep their capacity.
    taken: VecDeque<Waiter>,
}

/// Requests written (or being written) whose replies are still coming.
struct Inflight {
    waiter: Waiter,
    sent_at: Instant,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Bytes gathered for writing before the task stops taking more from the
/// queue until the socket has taken some.
const WRITE_CHUNK: usize = 256 * 1024;

impl ConnTask {
    async fn run(mut self) {
        let _end = EndGuard(self.shared.clone());
        // Connect lazily: many servers × protocols × connections would
        // otherwise open connections nobody uses. Markers need no connection.
        loop {
            if !self.wait_queued().await {
                return;
            }
            if !self.answer_markers() {
                break;
            }
        }
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    backoff = MIN_BACKOFF;
                    self.shared.up.store(true, Ordering::Relaxed);
                    let err = self.serve(stream).await;
                    self.shared.up.store(false, Ordering::Relaxed);
                    match err {
                        None => return, // the owner is gone and everything is answered
                        Some(e) => {
                            tracing::warn!(backend = %self.addr, error = %e, "backend connection lost");
                            self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                Err(reason) => {
                    tracing::debug!(backend = %self.addr, %reason, "backend connect failed");
                    self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                    let err = BackendError::Down {
                        addr: self.addr.clone(),
                        reason: reason.into(),
                    };
                    // Fail fast while down: answer everything queued with the
                    // error until the next attempt is due.
                    if !self.fail_until(Instant::now() + backoff, &err).await {
                        return;
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            }
            // Lost an established connection: try again right away once.
        }
    }

    /// Waits until something is queued (true) or the owner is gone with
    /// nothing queued (false).
    async fn wait_queued(&self) -> bool {
        poll_fn(|cx| {
            self.shared.task.register(cx.waker());
            let q = self.shared.queue.lock();
            if !q.waiters.is_empty() {
                Poll::Ready(true)
            } else if q.closed {
                Poll::Ready(false)
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Answers the queue at once if it holds only markers; false if it holds
    /// real requests.
    fn answer_markers(&mut self) -> bool {
        let mut q = self.shared.queue.lock();
        if q.waiters.iter().any(|w| w.remaining() > 0) {
            return false;
        }
        std::mem::swap(&mut q.waiters, &mut self.taken);
        drop(q);
        for w in self.taken.drain(..) {
            w.complete();
        }
        true
    }

    fn has_queued(&self) -> bool {
        !self.shared.queue.lock().waiters.is_empty()
    }

    /// Moves what is queued into `wbuf` and `inflight`. True when the owner
    /// is gone (nothing more will be queued).
    fn take_queued(&mut self, wbuf: &mut BytesMut, inflight: &mut VecDeque<Inflight>) -> bool {
        let mut q = self.shared.queue.lock();
        let closed = q.closed;
        if q.waiters.is_empty() {
            return closed;
        }
        // Possibly past the lease's expiry (a frozen process that resumed):
        // the control plane may be moving these keys, so none of it is sent.
        let send = self.opts.lease.valid();
        if !send {
            q.buf.clear();
        } else if wbuf.is_empty() {
            std::mem::swap(wbuf, &mut q.buf);
        } else {
            wbuf.extend_from_slice(&q.buf);
            q.buf.clear();
        }
        std::mem::swap(&mut q.waiters, &mut self.taken);
        let full = std::mem::take(&mut q.full);
        drop(q);
        if full {
            self.shared.room.notify_waiters();
        }
        let now = Instant::now();
        let mut requests = 0u64;
        let not_sent = (!send).then(|| BackendError::Down {
            addr: self.addr.clone(),
            reason: "not sent: this proxy's etcd lease may have expired (fenced until it \
                     registers again)"
                .into(),
        });
        for waiter in self.taken.drain(..) {
            let n = waiter.remaining();
            if n == 0 && inflight.is_empty() {
                // A marker with nothing ahead of it.
                waiter.complete();
                continue;
            }
            if let (Some(err), true) = (&not_sent, n > 0) {
                self.stats.errors.fetch_add(u64::from(n), Ordering::Relaxed);
                waiter.fail(err);
                continue;
            }
            requests += u64::from(n);
            inflight.push_back(Inflight {
                waiter,
                sent_at: now,
            });
        }
        self.stats.requests.fetch_add(requests, Ordering::Relaxed);
        closed
    }

    /// Answers everything queued before `deadline` with `err`. False when
    /// the owner is gone.
    async fn fail_until(&mut self, deadline: Instant, err: &BackendError) -> bool {
        loop {
            let closed = {
                let mut q = self.shared.queue.lock();
                q.buf.clear();
                std::mem::swap(&mut q.waiters, &mut self.taken);
                let full = std::mem::take(&mut q.full);
                let closed = q.closed;
                drop(q);
                if full {
                    self.shared.room.notify_waiters();
                }
                closed
            };
            for w in self.taken.drain(..) {
                let n = w.remaining();
                if n == 0 {
                    w.complete();
                } else {
                    self.stats.errors.fetch_add(u64::from(n), Ordering::Relaxed);
                    w.fail(err);
                }
            }
            if closed {
                return false;
            }
            tokio::select! {
                more = self.wait_queued() => if !more { return false; },
                _ = tokio::time::sleep_until(deadline) => return true,
            }
        }
    }

    async fn connect(&self) -> Result<TcpStream, String> {
        let fut = async {
            let mut stream = TcpStream::connect(&*self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let _ = stream.set_nodelay(true);
            self.handshake(&mut stream).await?;
            Ok::<_, String>(stream)
        };
        match timeout(self.opts.connect_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "connect timed out after {} ms",
                self.opts.connect_timeout.as_millis()
            )),
        }
    }

    /// `HELLO <proto> [AUTH user pass] SETNAME <name>`: protocol,
    /// credentials and name in one round trip (all Redis ≥ 6.0).
    async fn handshake(&self, stream: &mut TcpStream) -> Result<(), String> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut args: Vec<&[u8]> = vec![b"HELLO"];
        args.push(match self.proto {
            Protocol::Resp2 => b"2",
            Protocol::Resp3 => b"3",
        });
        let creds = &self.opts.credentials;
        if let Some(pw) = &creds.password {
            args.push(b"AUTH");
            args.push(creds.user.as_deref().unwrap_or("default").as_bytes());
            args.push(pw.as_bytes());
        }
        args.push(b"SETNAME");
        args.push(self.opts.client_name.as_bytes());
        let mut out = BytesMut::new();
        encode_command(&mut out, args.iter());
        stream.write_all(&out).await.map_err(|e| e.to_string())?;

        let mut scanner = ReplyScanner::new(self.opts.limits);
        let mut buf = BytesMut::with_capacity(1024);
        let reply = loop {
            if let Some(r) = scanner.next_reply(&mut buf).map_err(|e| e.to_string())? {
                break r;
            }
            if stream.read_buf(&mut buf).await.map_err(|e| e.to_string())? == 0 {
                return Err("server closed the connection during the handshake".into());
            }
        };
        if shardis_resp::reply_is_error(&reply) {
            let text = String::from_utf8_lossy(reply.get(1..).unwrap_or_default());
            return Err(format!("handshake refused: {}", text.trim_end()));
        }
        if let Some(v) = hello_version(&reply) {
            self.facts.record(&v);
        }
        Ok(())
    }

    /// Runs one established connection. `None` when the owner is gone and
    /// everything is answered (clean end), otherwise the error that broke the
    /// connection, after failing whatever was in flight.
    async fn serve(&mut self, stream: TcpStream) -> Option<BackendError> {
        let mut inflight: VecDeque<Inflight> = VecDeque::new();
        let mut wbuf = BytesMut::new();
        let mut rbuf = BytesMut::new();
        let mut scanner = ReplyScanner::new(self.opts.limits);
        let read_timeout = self.opts.read_timeout;
        let mut last_progress = Instant::now();
        let mut open = true;

        let result: BackendError = 'conn: loop {
            // Take everything queued, so one write carries it all.
            if open && wbuf.len() < WRITE_CHUNK {
                if wbuf.is_empty() && self.has_queued() {
                    // Let the sessions that are ready to run (and those a
                    // non-blocking look at the sockets finds) queue their
                    // requests first: one write per round then carries them
                    // all, instead of one per wake-up, and the server reads
                    // them in one go.
                    tokio::task::yield_now().await;
                }
                if inflight.is_empty() {
                    last_progress = Instant::now();
                }
                open = !self.take_queued(&mut wbuf, &mut inflight);
            }
            if !open && inflight.is_empty() && wbuf.is_empty() {
                return None;
            }
            self.stats
                .inflight
                .store(inflight.len() as u64, Ordering::Relaxed);

            // Write what we can without waiting.
            while !wbuf.is_empty() {
                match stream.try_write(&wbuf) {
                    Ok(0) => break 'conn self.lost("wrote 0 bytes"),
                    Ok(n) => wbuf.advance(n),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => break 'conn self.lost(&e.to_string()),
                }
            }

            // Read every reply already here.
            match self.read_replies(&stream, &mut rbuf, &mut scanner, &mut inflight) {
                Ok(true) => last_progress = Instant::now(),
                Ok(false) => {}
                Err(e) => break 'conn e,
            }
            if wbuf.is_empty() && !rbuf.is_empty() && inflight.is_empty() {
                break 'conn BackendError::Protocol {
                    addr: self.addr.clone(),
                    reason: "reply without a request".into(),
                };
            }
            if wbuf.capacity() > 4 * WRITE_CHUNK && wbuf.is_empty() {
                wbuf = BytesMut::new();
            }

            let deadline = last_progress + read_timeout;
            let can_take = open && wbuf.len() < WRITE_CHUNK;
            tokio::select! {
                biased;
                r = stream.readable() => {
                    if let Err(e) = r { break 'conn self.lost(&e.to_string()); }
                    match self.read_replies(&stream, &mut rbuf, &mut scanner, &mut inflight) {
                        Ok(true) => last_progress = Instant::now(),
                        Ok(false) => {}
                        Err(e) => break 'conn e,
                    }
                }
                w = stream.writable(), if !wbuf.is_empty() => {
                    if let Err(e) = w { break 'conn self.lost(&e.to_string()); }
                }
                _ = self.wait_queued(), if can_take => {}
                _ = tokio::time::sleep_until(deadline), if !inflight.is_empty() => {
                    break 'conn BackendError::Timeout {
                        addr: self.addr.clone(),
                        ms: read_timeout.as_millis() as u64,
                    };
                }
            }
        };
        self.stats.inflight.store(0, Ordering::Relaxed);
        for f in inflight.drain(..) {
            self.stats
                .errors
                .fetch_add(u64::from(f.waiter.remaining()), Ordering::Relaxed);
            f.waiter.fail(&result);
        }
        Some(result)
    }

    fn lost(&self, reason: &str) -> BackendError {
        BackendError::Lost {
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }

    /// Reads what the socket has and hands the replies on. `Ok(true)` if any
    /// reply arrived.
    fn read_replies(
        &self,
        stream: &TcpStream,
        rbuf: &mut BytesMut,
        scanner: &mut ReplyScanner,
        inflight: &mut VecDeque<Inflight>,
    ) -> Result<bool, BackendError> {
        let mut progressed = false;
        loop {
            if rbuf.capacity() - rbuf.len() < 4096 {
                rbuf.reserve(16 * 1024);
            }
            let drained = match crate::io::read_once(stream, rbuf) {
                Ok(Read::Data { drained, .. }) => drained,
                Ok(Read::Closed) => return Err(self.lost("server closed the connection")),
                Ok(Read::WouldBlock) => break,
                Err(e) => return Err(self.lost(&e.to_string())),
            };
            loop {
                let reply = match scanner.next_reply(rbuf) {
                    Ok(Some(r)) => r,
                    Ok(None) => break,
                    Err(e) => {
                        return Err(BackendError::Protocol {
                            addr: self.addr.clone(),
                            reason: e.to_string().into(),
                        })
                    }
                };
                // Out-of-band pushes (RESP3 `>`) answer no request; the
                // proxy never asks for any, so they are dropped.
                if reply.first() == Some(&b'>') {
                    continue;
                }
                progressed = true;
                release_markers(inflight);
                let Some(front) = inflight.front_mut() else {
                    return Err(BackendError::Protocol {
                        addr: self.addr.clone(),
                        reason: "reply without a request".into(),
                    });
                };
                if shardis_resp::reply_is_error(&reply) {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                let done = match &mut front.waiter {
                    Waiter::Lane { inbox, lane, count } => {
                        inbox.deliver(*lane, Ok(reply));
                        // Requests of several reads of one session share a
                        // waiter: wake it for every reply, not only the last
                        // (waking a session that is already awake costs little).
                        inbox.waker.wake();
                        *count -= 1;
                        *count == 0
                    }
                    Waiter::Collect { count, replies, .. } => {
                        replies.push(reply);
                        *count -= 1;
                        *count == 0
                    }
                };
                if done {
                    if let Some(f) = inflight.pop_front() {
                        self.stats.record_latency(f.sent_at);
                        f.waiter.complete();
                    }
                }
            }
            release_markers(inflight);
            if drained {
                break;
            }
        }
        if progressed {
            // Here too, not only when requests are taken: an idle connection
            // would otherwise show its last batch in flight until the next.
            self.stats
                .inflight
                .store(inflight.len() as u64, Ordering::Relaxed);
        }
        Ok(progressed)
    }
}

/// Answers the markers (waiters of no reply) at the front.
fn release_markers(inflight: &mut VecDeque<Inflight>) {
    while inflight.front().is_some_and(|f| f.waiter.remaining() == 0) {
        if let Some(f) = inflight.pop_front() {
            f.waiter.complete();
        }
    }
}

/// The `version` field of a HELLO reply (RESP2 flat array or RESP3 map).
fn hello_version(reply: &Bytes) -> Option<String> {
    use shardis_resp::Frame;
    let (frame, _) = Frame::parse(reply, &Limits::default()).ok()??;
    let pairs: Vec<(Frame, Frame)> = match frame {
        Frame::Map(pairs) => pairs,
        Frame::Array(items) => {
            let mut it = items.into_iter();
            let mut pairs = Vec::new();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                pairs.push((k, v));
            }
            pairs
        }
        _ => return None,
    };
    pairs.into_iter().find_map(|(k, v)| match (k, v) {
        (Frame::Bulk(k) | Frame::Simple(k), Frame::Bulk(v) | Frame::Simple(v))
            if k.as_ref() == b"version" =>
        {
            Some(String::from_utf8_lossy(&v).into_owned())
        }
        _ => None,
    })
}
