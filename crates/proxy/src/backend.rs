//! Connections to the Redis servers.
//!
//! Each backend connection is one task that owns one TCP connection and does
//! both directions: it takes batches of already-encoded requests from a
//! channel, writes as many as are waiting in one syscall, and hands each
//! batch's replies back (zero-copy slices of its read buffer) in order.
//! Redis answers a connection's requests in order, so a FIFO of in-flight
//! batches is all the bookkeeping needed.
//!
//! Many client sessions share a handful of these per server; a session always
//! uses the same one per server, so its own requests to a server stay ordered.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use shardis_resp::{encode_command, Limits, Protocol, ReplyScanner};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
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

/// Replies of one batch, in request order.
pub type BatchReply = Result<Vec<Bytes>, BackendError>;

/// A batch of requests for one connection: `count` complete RESP frames,
/// back to back, in `payload`.
pub struct Batch {
    pub payload: Bytes,
    pub count: u32,
    pub reply: oneshot::Sender<BatchReply>,
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
    /// Batches buffered per connection before senders wait.
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

/// The sending side of one backend connection.
#[derive(Clone)]
pub struct BackendConn {
    tx: mpsc::Sender<Batch>,
    up: Arc<AtomicBool>,
}

impl BackendConn {
    /// Queues a batch; waits when the connection's queue is full (backpressure).
    pub async fn send(&self, batch: Batch) {
        if let Err(mpsc::error::SendError(batch)) = self.tx.send(batch).await {
            // The task only ends when every sender is gone, so this is a
            // shutdown race; answer rather than leave the session waiting.
            let _ = batch.reply.send(Err(BackendError::Lost {
                addr: "backend".into(),
                reason: "proxy is shutting down".into(),
            }));
        }
    }

    /// Resolves once every batch queued before it has been answered (or
    /// failed): the drain step of a topology change.
    pub async fn marker(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Batch {
            payload: Bytes::new(),
            count: 0,
            reply: tx,
        })
        .await;
        let _ = rx.await;
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
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
    let (tx, rx) = mpsc::channel(opts.queue_depth.max(1));
    let up = Arc::new(AtomicBool::new(false));
    let task = ConnTask {
        addr,
        proto,
        opts,
        facts,
        stats,
        rx,
        up: up.clone(),
    };
    tokio::spawn(task.run());
    BackendConn { tx, up }
}

struct ConnTask {
    addr: Arc<str>,
    proto: Protocol,
    opts: Arc<BackendOptions>,
    facts: Arc<ServerFacts>,
    stats: Arc<BackendStats>,
    rx: mpsc::Receiver<Batch>,
    up: Arc<AtomicBool>,
}

/// A batch whose replies are still coming.
struct Inflight {
    remaining: u32,
    replies: Vec<Bytes>,
    reply: oneshot::Sender<BatchReply>,
    sent_at: Instant,
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Cap on bytes gathered into one write: keeps one huge pipeline from
/// delaying everyone else's first bytes.
const WRITE_CHUNK: usize = 256 * 1024;

impl ConnTask {
    async fn run(mut self) {
        // Connect lazily: many servers × protocols × connections would
        // otherwise open connections nobody uses.
        let Some(first) = self.rx.recv().await else {
            return;
        };
        let mut first = Some(first);
        let mut backoff = MIN_BACKOFF;
        loop {
            match self.connect().await {
                Ok(stream) => {
                    backoff = MIN_BACKOFF;
                    self.up.store(true, Ordering::Relaxed);
                    let err = self.serve(stream, first.take()).await;
                    self.up.store(false, Ordering::Relaxed);
                    match err {
                        None => return, // every sender dropped
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
                    if let Some(b) = first.take() {
                        let _ = b.reply.send(Err(err.clone()));
                    }
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

    /// Answers every batch arriving before `deadline` with `err`. False when
    /// every sender is gone.
    async fn fail_until(&mut self, deadline: Instant, err: &BackendError) -> bool {
        loop {
            tokio::select! {
                msg = self.rx.recv() => match msg {
                    Some(b) => {
                        if b.count == 0 {
                            let _ = b.reply.send(Ok(Vec::new()));
                        } else {
                            self.stats.errors.fetch_add(b.count as u64, Ordering::Relaxed);
                            let _ = b.reply.send(Err(err.clone()));
                        }
                    }
                    None => return false,
                },
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

    /// Runs one established connection. `None` when every sender is gone
    /// (clean end), otherwise the error that broke the connection, after
    /// failing whatever was in flight.
    async fn serve(&mut self, stream: TcpStream, first: Option<Batch>) -> Option<BackendError> {
        let mut inflight: VecDeque<Inflight> = VecDeque::new();
        let mut wbuf = BytesMut::new();
        let mut rbuf = BytesMut::new();
        let mut scanner = ReplyScanner::new(self.opts.limits);
        let read_timeout = self.opts.read_timeout;
        let mut last_progress = Instant::now();
        let mut pending = first;
        let mut rx_open = true;

        let result: BackendError = 'conn: loop {
            // Take everything already queued, so one write carries it all.
            loop {
                let batch = match pending.take() {
                    Some(b) => b,
                    None => match self.rx.try_recv() {
                        Ok(b) => b,
                        Err(mpsc::error::TryRecvError::Empty) => break,
                        Err(mpsc::error::TryRecvError::Disconnected) => {
                            rx_open = false;
                            if inflight.is_empty() && wbuf.is_empty() {
                                return None;
                            }
                            break;
                        }
                    },
                };
                if batch.count == 0 && inflight.is_empty() {
                    let _ = batch.reply.send(Ok(Vec::new()));
                    continue;
                }
                if !self.opts.lease.valid() {
                    // Possibly past the lease's expiry (a frozen process that
                    // resumed): the control plane may be moving these keys.
                    self.stats
                        .errors
                        .fetch_add(batch.count as u64, Ordering::Relaxed);
                    let _ = batch.reply.send(Err(BackendError::Down {
                        addr: self.addr.clone(),
                        reason: "not sent: this proxy's etcd lease may have expired (fenced until \
                                 it registers again)"
                            .into(),
                    }));
                    continue;
                }
                if inflight.is_empty() {
                    last_progress = Instant::now();
                }
                wbuf.extend_from_slice(&batch.payload);
                self.stats
                    .requests
                    .fetch_add(batch.count as u64, Ordering::Relaxed);
                inflight.push_back(Inflight {
                    remaining: batch.count,
                    replies: Vec::with_capacity(batch.count as usize),
                    reply: batch.reply,
                    sent_at: Instant::now(),
                });
                if wbuf.len() >= WRITE_CHUNK {
                    break;
                }
            }
            self.stats
                .inflight
                .store(inflight.len() as u64, Ordering::Relaxed);

            // Write what we can without waiting.
            while !wbuf.is_empty() {
                match stream.try_write(&wbuf) {
                    Ok(0) => break 'conn self.lost("wrote 0 bytes"),
                    Ok(n) => {
                        let _ = wbuf.split_to(n);
                    }
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
            let can_take = rx_open && wbuf.len() < WRITE_CHUNK;
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
                msg = self.rx.recv(), if can_take => match msg {
                    Some(b) => pending = Some(b),
                    None => {
                        rx_open = false;
                        if inflight.is_empty() && wbuf.is_empty() {
                            return None;
                        }
                    }
                },
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
                .fetch_add(f.remaining as u64, Ordering::Relaxed);
            let _ = f.reply.send(Err(result.clone()));
        }
        if let Some(b) = pending.take() {
            let _ = b.reply.send(Err(result.clone()));
        }
        Some(result)
    }

    fn lost(&self, reason: &str) -> BackendError {
        BackendError::Lost {
            addr: self.addr.clone(),
            reason: reason.into(),
        }
    }

    /// Reads what the socket has and completes batches. `Ok(true)` if any
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
                // Skip markers (count 0) that sit in front.
                while inflight.front().is_some_and(|f| f.remaining == 0) {
                    if let Some(f) = inflight.pop_front() {
                        let _ = f.reply.send(Ok(f.replies));
                    }
                }
                let Some(front) = inflight.front_mut() else {
                    return Err(BackendError::Protocol {
                        addr: self.addr.clone(),
                        reason: "reply without a request".into(),
                    });
                };
                if shardis_resp::reply_is_error(&reply) {
                    self.stats.errors.fetch_add(1, Ordering::Relaxed);
                }
                front.replies.push(reply);
                front.remaining -= 1;
                if front.remaining == 0 {
                    if let Some(f) = inflight.pop_front() {
                        self.stats.record_latency(f.sent_at);
                        let _ = f.reply.send(Ok(f.replies));
                    }
                }
            }
            // Release markers that are now at the front.
            while inflight.front().is_some_and(|f| f.remaining == 0) {
                if let Some(f) = inflight.pop_front() {
                    let _ = f.reply.send(Ok(f.replies));
                }
            }
            if drained {
                break;
            }
        }
        Ok(progressed)
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
