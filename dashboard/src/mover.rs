//! The background mover: moves every key of one wave of slots from the
//! source group's master to the target group's master.
//!
//! It runs only while the wave's slots are `migrating` on every proxy that
//! could still write them (the hold barrier and the fencing of lost proxies
//! come first, see `migrate.rs`), so no key of those slots can appear on the
//! source while it works. One `SCAN` of the source's master (never a
//! replica) therefore finds every key of the wave; each key is hashed and
//! kept by slot until the scan is over. Then the wave's keys are moved slot
//! after slot with `MIGRATE … KEYS …`, in batches bounded by count and
//! bytes, one at a time, under the migration's rate limit, and each slot is
//! reported as soon as its last key moved, so that it can end (become
//! `normal` on the target) before the rest of the wave: proxies send a
//! moved key's requests to the source first while its slot is `migrating`.
//!
//! Every `MIGRATE` replaces: a key that is on the target while it is still
//! on the source was left there by a move that failed half way (an I/O error
//! or a timeout of an earlier `MIGRATE`, by the mover or a proxy). The target
//! held no key of these slots when the migration began (checked before it
//! started), and no proxy touches the target's copy of a key while the key is
//! on the source (proxies run a request on the source while all its keys are
//! there, and write only there), so the source's copy is the latest one.
//! Any error stops the wave with that error (nothing is lost: a key is on the
//! source, or on the target, or on both, and then the source's copy counts).
//!
//! Safe mode copies (`MIGRATE COPY`), waits until every replica of the
//! target has the data (replication offset), and only then deletes the
//! source's copies: a target master that dies mid-move cannot take keys
//! with it that the source's replicas already had.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::Value;
use shardis_topology::{slot_of, SLOT_COUNT};
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::{sleep, sleep_until, Instant};

use crate::error::AppError;
use crate::leadership::Leadership;
use crate::servers::{split_addr, Servers};

/// Keys per `SCAN` call: small enough that one call never stalls the source
/// (about 0.25 ms).
const SCAN_COUNT: usize = 250;
/// Keys per `SCAN` call of the target's look before a migration starts
/// (it moves nothing, and that server serves none of the moving slots
/// yet): a page of 1,000 costs about 0.5 ms, and such a look is one round
/// trip after another, so larger pages make it end sooner. The source's
/// look for big keys uses pages of [`SCAN_COUNT`]: its clients wait behind
/// each page.
const LOOK_COUNT: usize = 1000;
/// A look pauses half as long as its pages took (round trips included),
/// once that adds up to this.
const LOOK_PAUSE: Duration = Duration::from_millis(2);
/// Bounds of one `MIGRATE` batch: both servers are blocked while it runs,
/// so a request of a client that arrives meanwhile waits for it. 50 keys
/// of 100 bytes take about 0.5 ms on the source; larger batches move only a
/// little more per second (the source reads the target's replies one by one
/// either way) but make those waits longer (`bench/migrate.sh`).
const BATCH_KEYS: usize = 50;
const BATCH_BYTES: u64 = 256 << 10;
/// Batches in flight: one at a time, on a connection of their own. Redis
/// runs a connection's pipelined commands back to back, so a second batch
/// queued behind the first would make a client's request wait for both.
/// The scan runs meanwhile on a second connection, a few batches ahead
/// (`QUEUED_BATCHES`), so the source has at most one short command of the
/// mover's per connection at any time, and the scan never waits for a batch.
const QUEUED_BATCHES: usize = 4;
/// `MIGRATE`'s own per-I/O timeout (ms), for a batch of `bytes`: the source
/// serves nobody while it waits for the target, so a target that hangs
/// (stopped, swapping) stalls the whole source group this long. A batch of
/// small keys takes about a millisecond; a big value (moved whole by a
/// roll-back, or a stream) gets a second per 16 MiB more.
fn migrate_timeout_ms(bytes: u64) -> u64 {
    1000 + bytes / (16 << 10)
}
/// How long a reply of the source may take (a queue of batches included).
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long safe mode waits for the target's replicas per batch.
const REPLICA_WAIT: Duration = Duration::from_secs(60);

/// What the operator can change while a wave moves.
#[derive(Debug, Default)]
pub struct Control {
    pub paused: AtomicBool,
    /// 0: unlimited.
    pub keys_per_sec: AtomicU64,
    pub bytes_per_sec: AtomicU64,
}

/// What moved so far (read by the API while the wave runs).
#[derive(Debug, Default)]
pub struct Progress {
    pub keys: AtomicU64,
    pub bytes: AtomicU64,
}

/// One wave to move.
#[derive(Debug, Clone)]
pub struct Wave {
    /// The source group's master.
    pub source: String,
    /// The target group's master and its replicas (for safe mode).
    pub target: String,
    pub target_replicas: Vec<String>,
    /// `slots[s]`: slot `s` belongs to the wave.
    pub slots: Vec<bool>,
    pub safe: bool,
    /// Leave big keys to [`copy_big_key`] (forward moves); a roll-back
    /// moves them with `MIGRATE` like the rest.
    pub defer_big: bool,
    /// The slots of the next wave from the same source (may be all
    /// `false`): while its scan walks the whole keyspace anyway, the mover
    /// also looks for their big keys, so the next wave needs no scan of its
    /// own before it starts.
    pub lookahead: Vec<bool>,
    /// Bytes of key names (and [`SlotKeys::PER_KEY`] per key) the scan
    /// keeps, by slot, until it is over; past it, the keys it finds are
    /// moved at once instead, and their slots end with the rest of the
    /// wave. 1,000,000 keys of 20 bytes take 24 MB.
    pub kept_bytes: usize,
}

impl Wave {
    pub fn new(source: String, target: String, slots: &[usize]) -> Wave {
        Wave {
            source,
            target,
            target_replicas: Vec::new(),
            slots: slot_set(slots),
            safe: false,
            defer_big: true,
            lookahead: Vec::new(),
            kept_bytes: KEPT_BYTES,
        }
    }

    /// Sets the slots of the next wave (see [`Wave::lookahead`]).
    pub fn look_ahead(&mut self, slots: &[usize]) {
        self.lookahead = slot_set(slots);
    }
}

/// `set[s]`: slot `s` is one of `slots`.
pub fn slot_set(slots: &[usize]) -> Vec<bool> {
    let mut set = vec![false; SLOT_COUNT];
    for &s in slots {
        if let Some(cell) = set.get_mut(s) {
            *cell = true;
        }
    }
    set
}

/// Keys at least this big (by `MEMORY USAGE`) are not moved by `MIGRATE`,
/// which would block both servers while it serializes the whole value: they
/// are left for [`copy_big_key`], which copies them in small chunks while
/// proxies hold just that key.
pub const BIG_KEY_BYTES: u64 = 8 << 20;

/// How a wave's move ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A full scan moved every key of the wave except the big keys listed,
    /// which are left on the source for [`copy_big_key`]. `ahead`: the big
    /// keys of the lookahead slots, as that scan saw them.
    Done {
        big: Vec<Vec<u8>>,
        ahead: Vec<Vec<u8>>,
    },
    /// Paused by the operator half-way (the slots stay `migrating`).
    Paused,
}

/// A leaky bucket per limit: each batch pushes the next allowed start later
/// by its cost; a changed limit takes effect at the next batch.
struct Limiter {
    keys_next: Instant,
    bytes_next: Instant,
}

impl Limiter {
    fn new() -> Limiter {
        let now = Instant::now();
        Limiter {
            keys_next: now,
            bytes_next: now,
        }
    }

    async fn admit(&mut self, control: &Control, keys: usize, bytes: u64) {
        let now = Instant::now();
        let kps = control.keys_per_sec.load(Ordering::Relaxed);
        let bps = control.bytes_per_sec.load(Ordering::Relaxed);
        let mut start = now;
        if kps > 0 {
            let at = self.keys_next.max(now);
            start = start.max(at);
            self.keys_next = at + Duration::from_secs_f64(keys as f64 / kps as f64);
        }
        if bps > 0 {
            let at = self.bytes_next.max(now);
            start = start.max(at);
            self.bytes_next = at + Duration::from_secs_f64(bytes as f64 / bps as f64);
        }
        if start > now {
            sleep_until(start).await;
        }
    }

    /// The batch size that keeps a rate-limited move smooth (about 20
    /// batches a second).
    fn batch_keys(control: &Control) -> usize {
        match control.keys_per_sec.load(Ordering::Relaxed) {
            0 => BATCH_KEYS,
            kps => usize::try_from(kps / 20)
                .unwrap_or(BATCH_KEYS)
                .clamp(1, BATCH_KEYS),
        }
    }

    fn batch_bytes(control: &Control) -> u64 {
        match control.bytes_per_sec.load(Ordering::Relaxed) {
            0 => BATCH_BYTES,
            bps => (bps / 20).clamp(1, BATCH_BYTES),
        }
    }
}

/// Moves the keys of `wave`; see the module docs. Each time every key of
/// some slots has moved, those slots are sent on `done` (if given), so that
/// they can end before the rest of the wave.
pub async fn move_wave(
    servers: &Servers,
    leadership: &Leadership,
    wave: &Wave,
    control: &Control,
    progress: &Arc<Progress>,
    done: Option<&UnboundedSender<Vec<usize>>>,
) -> Result<Outcome, AppError> {
    let source = servers.connect_with(&wave.source, REPLY_TIMEOUT).await?;
    let mover = Mover::new(servers, wave, source)?;
    let scan_conn = servers.connect_with(&wave.source, REPLY_TIMEOUT).await?;
    let sizing_conn = servers.connect_with(&wave.source, REPLY_TIMEOUT).await?;
    let (tx, rx) = tokio::sync::mpsc::channel(QUEUED_BATCHES);
    let migrating = Migrating {
        mover: &mover,
        sizing_conn,
        wave,
        leadership,
        control,
        progress,
        done,
    };
    let (scanned, big) = tokio::try_join!(
        scan_wave(scan_conn, leadership, wave, control, tx),
        migrating.run(rx),
    )?;
    Ok(match scanned {
        Some(ahead) => Outcome::Done { big, ahead },
        None => Outcome::Paused,
    })
}

/// A batch of keys for `MIGRATE` (not sized yet), and the slots that have
/// no key left on the source once it moved (and every batch before it).
#[derive(Debug, Default)]
struct Batch {
    keys: Vec<Vec<u8>>,
    completes: Vec<usize>,
}

/// The keys of one slot that the scan found, kept until it ends: names
/// back to back, and where each ends.
#[derive(Debug, Default)]
struct SlotKeys {
    names: Vec<u8>,
    ends: Vec<u32>,
}

impl SlotKeys {
    /// Bytes this costs the dashboard per key, besides the name.
    const PER_KEY: usize = 4;

    fn push(&mut self, key: &[u8]) {
        self.names.extend_from_slice(key);
        self.ends
            .push(u32::try_from(self.names.len()).unwrap_or(u32::MAX));
    }

    fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(self.ends.iter().copied())
            .filter_map(|(a, b)| self.names.get(a as usize..b as usize))
    }
}

/// The default of [`Wave::kept_bytes`].
const KEPT_BYTES: usize = 256 << 20;

/// Builds the batches of [`scan_wave`] (bounded by count; [`Migrating`]
/// sizes them); sends each when it is full.
struct Batcher<'a> {
    open: Batch,
    control: &'a Control,
    tx: &'a tokio::sync::mpsc::Sender<Batch>,
}

impl Batcher<'_> {
    async fn add(&mut self, key: Vec<u8>) -> Result<(), AppError> {
        if self.open.keys.len() >= Limiter::batch_keys(self.control) {
            self.send().await?;
        }
        self.open.keys.push(key);
        Ok(())
    }

    /// Sends the open batch (even when it holds no key but ends slots).
    async fn send(&mut self) -> Result<(), AppError> {
        if self.open.keys.is_empty() && self.open.completes.is_empty() {
            return Ok(());
        }
        let full = std::mem::take(&mut self.open);
        self.tx
            .send(full)
            .await
            .map_err(|_| AppError::Internal("the mover's MIGRATE half ended early".into()))
    }
}

/// What one full `SCAN` of a wave's source found: its keys by slot, and
/// the big keys of the lookahead slots.
#[derive(Debug)]
struct Scanned {
    kept: Vec<SlotKeys>,
    ahead: Vec<Vec<u8>>,
}

/// The scan half of [`move_wave`]. One `SCAN` of the source finds the
/// wave's keys; they are kept, by slot, until the scan is over, and then
/// handed on slot after slot, so that each slot ends as soon
/// as its own keys moved: proxies then send its requests straight to the
/// target instead of asking the source first. Only a scan that saw the
/// whole keyspace can tell that a slot has no other key, so nothing moves
/// before it is over (past [`Wave::kept_bytes`], keys move as they are
/// found).
/// Returns the big keys of the lookahead slots, or `None` when paused (the
/// batches already handed on are still moved).
async fn scan_wave(
    scan_conn: MultiplexedConnection,
    leadership: &Leadership,
    wave: &Wave,
    control: &Control,
    tx: tokio::sync::mpsc::Sender<Batch>,
) -> Result<Option<Vec<Vec<u8>>>, AppError> {
    let mut batcher = Batcher {
        open: Batch::default(),
        control,
        tx: &tx,
    };
    let Some(mut scanned) = scan_keys(scan_conn, leadership, wave, control, &mut batcher).await?
    else {
        return Ok(None);
    };
    // The scan is over: slot after slot, each ending with its last batch.
    for (slot, keys) in scanned.kept.iter_mut().enumerate() {
        if !wave.slots.get(slot).copied().unwrap_or(false) {
            continue;
        }
        if control.paused.load(Ordering::Relaxed) {
            batcher.send().await?;
            return Ok(None);
        }
        check_leading(leadership)?;
        let keys = std::mem::take(keys);
        let mut seen: HashSet<&[u8]> = HashSet::with_capacity(keys.ends.len());
        for key in keys.iter() {
            if seen.insert(key) {
                batcher.add(key.to_vec()).await?;
            }
        }
        batcher.open.completes.push(slot);
    }
    batcher.send().await?;
    Ok(Some(scanned.ahead))
}

/// The `SCAN` itself: every key of the wave, kept by slot; past
/// [`Wave::kept_bytes`] handed to `batcher` at once. Such a key may be moved
/// twice (`SCAN` can return a key twice, and it may have been kept before):
/// the second `MIGRATE` finds it gone and moves nothing, but it counts
/// twice in the keys moved. `None` when paused.
async fn scan_keys(
    mut scan_conn: MultiplexedConnection,
    leadership: &Leadership,
    wave: &Wave,
    control: &Control,
    batcher: &mut Batcher<'_>,
) -> Result<Option<Scanned>, AppError> {
    let mut kept: Vec<SlotKeys> = Vec::new();
    kept.resize_with(SLOT_COUNT, SlotKeys::default);
    let mut kept_bytes: usize = 0;
    let mut ahead: Vec<Vec<u8>> = Vec::new();
    let mut page = scan_page(&mut scan_conn, &wave.source, 0, SCAN_COUNT).await?;
    loop {
        if control.paused.load(Ordering::Relaxed) {
            return Ok(None);
        }
        check_leading(leadership)?;
        let (next, keys) = page;
        let mut mine: Vec<(usize, Vec<u8>)> = Vec::new();
        let mut upcoming: Vec<Vec<u8>> = Vec::new();
        let mut leftovers: Vec<Vec<u8>> = Vec::new();
        for key in keys {
            let slot = usize::from(slot_of(&key));
            if wave.slots.get(slot).copied().unwrap_or(false) {
                if is_tmp_name(&key) {
                    // A half-built copy left by a failed big-key copy (on
                    // what is now the source: the wave it belonged to was
                    // rolled back). Not data: it is deleted, not moved.
                    leftovers.push(key);
                } else {
                    mine.push((slot, key));
                }
            } else if wave.lookahead.get(slot).copied().unwrap_or(false) {
                upcoming.push(key);
            }
        }
        if !leftovers.is_empty() {
            tracing::warn!(
                count = leftovers.len(),
                source = %wave.source,
                "deleting half-built copies of big keys left by a failed copy"
            );
            query::<Value>(
                &mut scan_conn,
                &wave.source,
                redis::cmd("UNLINK").arg(&leftovers),
                "UNLINK",
            )
            .await?;
        }
        // The wave's own keys are sized just before they move (see
        // `Migrating`), the next wave's now.
        let (next_big, following) =
            big_and_next_page(&scan_conn, &wave.source, &upcoming, next, SCAN_COUNT).await?;
        page = following;
        ahead.extend(next_big);
        for (slot, key) in mine {
            let cost = key.len() + SlotKeys::PER_KEY;
            match kept.get_mut(slot) {
                Some(keys) if kept_bytes + cost <= wave.kept_bytes => {
                    keys.push(&key);
                    kept_bytes += cost;
                }
                _ => batcher.add(key).await?,
            }
        }
        if next == 0 {
            break;
        }
    }
    ahead.sort();
    ahead.dedup();
    let scanned = Scanned { kept, ahead };
    Ok(Some(scanned))
}

/// A `SCAN` page: the next cursor and the keys.
type Page = (u64, Vec<Vec<u8>>);
/// What [`page_sizes`] says: each key's size (`None`: gone), and the big
/// keys of the lookahead.
type Sizes = (Vec<Option<u64>>, Vec<Vec<u8>>);

/// One `SCAN` page of `count` keys.
async fn scan_page(
    conn: &mut MultiplexedConnection,
    addr: &str,
    cursor: u64,
    count: usize,
) -> Result<Page, AppError> {
    redis::cmd("SCAN")
        .arg(cursor)
        .arg("COUNT")
        .arg(count)
        .query_async(conn)
        .await
        .map_err(|e| server_error(addr, "SCAN", e))
}

/// The big keys among `upcoming` (see [`page_sizes`]), and the page after
/// it (at cursor `next`; none when it is 0), asked for together: one round
/// trip per page, not two.
async fn big_and_next_page(
    conn: &MultiplexedConnection,
    addr: &str,
    upcoming: &[Vec<u8>],
    next: u64,
    count: usize,
) -> Result<(Vec<Vec<u8>>, Page), AppError> {
    let (mut sizing_conn, mut next_conn) = (conn.clone(), conn.clone());
    let sizing = async {
        if upcoming.is_empty() {
            Ok(Vec::new())
        } else {
            page_sizes(&mut sizing_conn, addr, &[], upcoming)
                .await
                .map(|(_, big)| big)
        }
    };
    let following = async {
        match next {
            0 => Ok((0, Vec::new())),
            cursor => scan_page(&mut next_conn, addr, cursor, count).await,
        }
    };
    let (sized, following) = tokio::join!(sizing, following);
    Ok((sized?, following?))
}

/// The migrating half of [`move_wave`].
struct Migrating<'a> {
    mover: &'a Mover,
    /// A connection of its own to the source, for sizing.
    sizing_conn: MultiplexedConnection,
    wave: &'a Wave,
    leadership: &'a Leadership,
    control: &'a Control,
    progress: &'a Progress,
    done: Option<&'a UnboundedSender<Vec<usize>>>,
}

/// A batch after sizing: its keys in parts bounded by bytes (each one
/// `MIGRATE`), the slots it ends, and the big keys taken out of it.
#[derive(Debug, Default)]
struct SizedBatch {
    parts: Vec<(Vec<Vec<u8>>, u64)>,
    completes: Vec<usize>,
    big: Vec<Vec<u8>>,
}

impl Migrating<'_> {
    /// Moves the batches the scan half hands on, one `MIGRATE` at a time,
    /// under the rate limit, until the scan half is done and every batch
    /// moved. Each batch is sized (`MEMORY USAGE` of its keys) while the
    /// one before it moves, so the sizing fills the source's pauses between
    /// `MIGRATE`s instead of lengthening the scan. Big keys are taken out,
    /// returned, and their slots never reported done.
    async fn run(
        self,
        mut rx: tokio::sync::mpsc::Receiver<Batch>,
    ) -> Result<Vec<Vec<u8>>, AppError> {
        let mut limiter = Limiter::new();
        let mut big: Vec<Vec<u8>> = Vec::new();
        let mut big_slots = vec![false; SLOT_COUNT];
        let mut ready: Option<SizedBatch> = None;
        let mut open = true;
        while open || ready.is_some() {
            let incoming = if open { rx.recv().await } else { None };
            open = incoming.is_some();
            check_leading(self.leadership)?;
            let mut sizing_conn = self.sizing_conn.clone();
            let this = &self;
            let sizing = async {
                match incoming {
                    Some(batch) => this.size(&mut sizing_conn, batch).await.map(Some),
                    None => Ok(None),
                }
            };
            let moving = async {
                match ready.take() {
                    Some(sized) => this.migrate(&mut limiter, sized, &big_slots).await,
                    None => Ok(()),
                }
            };
            let (sized, moved) = tokio::join!(sizing, moving);
            moved?;
            ready = sized?;
            if let Some(sized) = ready.as_mut() {
                for key in sized.big.drain(..) {
                    if let Some(b) = big_slots.get_mut(usize::from(slot_of(&key))) {
                        *b = true;
                    }
                    big.push(key);
                }
            }
        }
        big.sort();
        big.dedup();
        Ok(big)
    }

    async fn size(
        &self,
        conn: &mut MultiplexedConnection,
        batch: Batch,
    ) -> Result<SizedBatch, AppError> {
        let mut sized = SizedBatch {
            completes: batch.completes,
            ..SizedBatch::default()
        };
        if batch.keys.is_empty() {
            return Ok(sized);
        }
        let (sizes, _) = page_sizes(conn, &self.wave.source, &batch.keys, &[]).await?;
        let limit = Limiter::batch_bytes(self.control);
        let (mut part, mut bytes) = (Vec::new(), 0u64);
        for (key, size) in batch.keys.into_iter().zip(sizes) {
            // `None`: gone since the scan saw it (moved on access, expired).
            let Some(size) = size else { continue };
            if self.wave.defer_big && size >= BIG_KEY_BYTES && tmp_name(&key).is_some() {
                sized.big.push(key);
                continue;
            }
            if !part.is_empty() && bytes + size > limit {
                sized.parts.push((std::mem::take(&mut part), bytes));
                bytes = 0;
            }
            part.push(key);
            bytes += size;
        }
        if !part.is_empty() {
            sized.parts.push((part, bytes));
        }
        Ok(sized)
    }

    async fn migrate(
        &self,
        limiter: &mut Limiter,
        sized: SizedBatch,
        big_slots: &[bool],
    ) -> Result<(), AppError> {
        for (keys, bytes) in sized.parts {
            limiter.admit(self.control, keys.len(), bytes).await;
            let n = keys.len() as u64;
            self.mover.move_batch(keys, bytes).await?;
            self.progress.keys.fetch_add(n, Ordering::Relaxed);
            self.progress.bytes.fetch_add(bytes, Ordering::Relaxed);
        }
        let completes: Vec<usize> = sized
            .completes
            .into_iter()
            .filter(|&s| !big_slots.get(s).copied().unwrap_or(false))
            .collect();
        if let (Some(done), false) = (self.done, completes.is_empty()) {
            // The receiver may be gone (the wave ends with the rest then).
            let _ = done.send(completes);
        }
        Ok(())
    }
}

/// A dashboard that cannot prove it still leads stops moving at once: a
/// new leader may already run this wave.
fn check_leading(leadership: &Leadership) -> Result<(), AppError> {
    if leadership.leading_now() {
        Ok(())
    } else {
        Err(AppError::StoreUnavailable(
            "this dashboard is no longer (provably) the leader: the mover stopped".into(),
        ))
    }
}

/// Sizes a `SCAN` page's keys server-side, in one round trip: `MEMORY
/// USAGE` of each of the wave's keys (`nil`: gone), then the indexes of the
/// next wave's keys that are big (see [`Wave::lookahead`]).
const PAGE_SCRIPT: &str = r"
local mine = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local sizes = {}
local big = {}
for i, k in ipairs(KEYS) do
  local n = redis.call('MEMORY', 'USAGE', k)
  if i <= mine then
    sizes[i] = n or -1
  elseif n and n >= limit then
    big[#big + 1] = i - mine - 1
  end
end
return {sizes, big}
";

/// What [`PAGE_SCRIPT`] says of `mine` (each key's size, `None`: gone)
/// and of `upcoming` (the big ones).
async fn page_sizes(
    conn: &mut MultiplexedConnection,
    addr: &str,
    mine: &[Vec<u8>],
    upcoming: &[Vec<u8>],
) -> Result<Sizes, AppError> {
    let (sizes, big): (Vec<i64>, Vec<usize>) = redis::cmd("EVAL")
        .arg(PAGE_SCRIPT)
        .arg(mine.len() + upcoming.len())
        .arg(mine)
        .arg(upcoming)
        .arg(mine.len())
        .arg(BIG_KEY_BYTES)
        .query_async(conn)
        .await
        .map_err(|e| server_error(addr, "EVAL (sizes)", e))?;
    if sizes.len() != mine.len() {
        return Err(AppError::Server(format!(
            "Redis server {addr} sized {} keys of {}",
            sizes.len(),
            mine.len()
        )));
    }
    let sizes = sizes.into_iter().map(|n| u64::try_from(n).ok()).collect();
    let big = big
        .into_iter()
        .filter_map(|i| upcoming.get(i))
        .filter(|k| tmp_name(k).is_some())
        .cloned()
        .collect();
    Ok((sizes, big))
}

fn server_error(addr: &str, what: &str, e: redis::RedisError) -> AppError {
    AppError::Server(format!("Redis server {addr} failed {what}: {e}"))
}

/// What one batch needs: the source connection and the `MIGRATE` prefix.
struct Mover {
    source: MultiplexedConnection,
    source_addr: String,
    target_addr: String,
    target_host: String,
    target_port: u16,
    auth: Vec<String>,
    safe: bool,
    target_replicas: Vec<String>,
    servers: Servers,
}

impl Mover {
    fn new(
        servers: &Servers,
        wave: &Wave,
        source: MultiplexedConnection,
    ) -> Result<Mover, AppError> {
        let (target_host, target_port) = split_addr(&wave.target)?;
        Ok(Mover {
            source,
            source_addr: wave.source.clone(),
            target_addr: wave.target.clone(),
            target_host,
            target_port,
            auth: servers.migrate_auth(),
            safe: wave.safe,
            target_replicas: wave.target_replicas.clone(),
            servers: servers.clone(),
        })
    }

    fn migrate_cmd(&self, keys: &[Vec<u8>], copy: bool, bytes: u64) -> redis::Cmd {
        let mut cmd = redis::cmd("MIGRATE");
        cmd.arg(&self.target_host)
            .arg(self.target_port)
            .arg("")
            .arg(0)
            .arg(migrate_timeout_ms(bytes));
        if copy {
            cmd.arg("COPY");
        }
        cmd.arg("REPLACE");
        for a in &self.auth {
            cmd.arg(a);
        }
        cmd.arg("KEYS");
        for k in keys {
            cmd.arg(k);
        }
        cmd
    }

    async fn migrate(&self, keys: &[Vec<u8>], copy: bool, bytes: u64) -> Result<(), AppError> {
        let mut conn = self.source.clone();
        self.migrate_cmd(keys, copy, bytes)
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| {
                AppError::Server(format!(
                    "MIGRATE from {} to {} failed: {e}",
                    self.source_addr, self.target_addr
                ))
            })
    }

    /// Moves `keys` (about `bytes` in all).
    async fn move_batch(&self, keys: Vec<Vec<u8>>, bytes: u64) -> Result<(), AppError> {
        let copy = self.safe;
        if let Err(e) = self.migrate(&keys, copy, bytes).await {
            // An I/O error or timeout between the servers: each key is on
            // the source, the target or both; once more, key by key.
            tracing::warn!("{e}; retrying the batch key by key");
            for key in &keys {
                self.migrate(std::slice::from_ref(key), copy, bytes).await?;
            }
        }
        if copy {
            self.wait_target_replicas().await?;
            self.delete_on_source(&keys).await?;
        }
        Ok(())
    }

    async fn delete_on_source(&self, keys: &[Vec<u8>]) -> Result<(), AppError> {
        let mut conn = self.source.clone();
        redis::cmd("UNLINK")
            .arg(keys)
            .query_async::<Value>(&mut conn)
            .await
            .map(|_| ())
            .map_err(|e| server_error(&self.source_addr, "UNLINK", e))
    }

    /// Safe mode: every replica of the target reached the target master's
    /// replication offset as it was after the copy.
    async fn wait_target_replicas(&self) -> Result<(), AppError> {
        if self.target_replicas.is_empty() {
            return Ok(());
        }
        let offset = self
            .servers
            .replication(&self.target_addr)
            .await?
            .master_repl_offset;
        for replica in &self.target_replicas {
            self.servers
                .wait_offset(replica, offset, REPLICA_WAIT)
                .await?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Big keys: a chunked copy
// ---------------------------------------------------------------------------

/// Elements (or string bytes / 64) per chunk: each command on either server
/// then takes well under a millisecond.
const CHUNK: usize = 1000;
const STRING_CHUNK: usize = 256 * 1024;

/// The temporary name a big key is built under on the target: in the same
/// slot (same hash tag), so that leftovers of an interrupted copy are seen
/// by a later pre-flight check of that slot, and deleted by the next copy.
/// `None` when no such name exists (odd braces): such a key is moved by
/// `MIGRATE` like any other.
pub fn tmp_name(key: &[u8]) -> Option<Vec<u8>> {
    if is_tmp_name(key) {
        return None;
    }
    let tag = shardis_topology::hash_tag(key);
    if tag.contains(&b'{') || tag.contains(&b'}') || tag.is_empty() {
        return None;
    }
    let mut name = Vec::with_capacity(tag.len() + 32);
    name.push(b'{');
    name.extend_from_slice(tag);
    name.extend_from_slice(TMP_SUFFIX);
    (slot_of(&name) == slot_of(key)).then_some(name)
}

const TMP_SUFFIX: &[u8] = b"}\x00shardis-migrating-copy";

/// A name [`tmp_name`] makes: a half-built copy of a big key, never data.
pub fn is_tmp_name(key: &[u8]) -> bool {
    key.starts_with(b"{") && key.ends_with(TMP_SUFFIX)
}

async fn query<T: redis::FromRedisValue>(
    conn: &mut MultiplexedConnection,
    addr: &str,
    cmd: &redis::Cmd,
    what: &str,
) -> Result<T, AppError> {
    cmd.query_async(conn)
        .await
        .map_err(|e| server_error(addr, what, e))
}

/// The target's side of a chunked copy: one write in flight while the next
/// chunk is read from the source; each write waits for the one before, so
/// they apply in order.
struct ChunkWriter {
    conn: MultiplexedConnection,
    addr: String,
    in_flight: Option<tokio::task::JoinHandle<Result<(), AppError>>>,
}

impl ChunkWriter {
    async fn send(&mut self, cmd: redis::Cmd, what: &'static str) -> Result<(), AppError> {
        self.finish().await?;
        let mut conn = self.conn.clone();
        let addr = self.addr.clone();
        self.in_flight = Some(tokio::spawn(async move {
            query::<Value>(&mut conn, &addr, &cmd, what)
                .await
                .map(|_| ())
        }));
        Ok(())
    }

    async fn finish(&mut self) -> Result<(), AppError> {
        match self.in_flight.take() {
            Some(write) => write
                .await
                .map_err(|e| AppError::Internal(format!("a chunk write task failed: {e}")))?,
            None => Ok(()),
        }
    }
}

/// Copies one big key from the source to the target in small chunks, then
/// swaps it in on the target (`RENAME`, with the remaining TTL) and deletes
/// it on the source (`UNLINK`, freed in the background). The caller holds
/// the key's slot on every proxy, so nothing but expiry changes the key
/// meanwhile. The longest either server is blocked is one chunk, not the
/// whole value. Streams and module types fall back to one `MIGRATE`.
/// How many bytes (estimated) moved.
pub async fn copy_big_key(
    servers: &Servers,
    leadership: &Leadership,
    wave: &Wave,
    key: &[u8],
) -> Result<u64, AppError> {
    let Some(tmp) = tmp_name(key) else {
        return Err(AppError::Internal(
            "big key without a temporary name".into(),
        ));
    };
    let copied = copy_big_key_to(servers, leadership, wave, key, &tmp).await;
    if copied.is_err() {
        // A half-built copy must not stay in the target's keyspace (the
        // next copy of the key would delete it, but the key may never be
        // copied again: deleted, expired, or its wave rolled back).
        if let Ok(mut dst) = servers.connect_with(&wave.target, REPLY_TIMEOUT).await {
            let _ = query::<Value>(
                &mut dst,
                &wave.target,
                redis::cmd("UNLINK").arg(&tmp),
                "UNLINK",
            )
            .await;
        }
    }
    copied
}

async fn copy_big_key_to(
    servers: &Servers,
    leadership: &Leadership,
    wave: &Wave,
    key: &[u8],
    tmp: &[u8],
) -> Result<u64, AppError> {
    let mut src = servers.connect_with(&wave.source, REPLY_TIMEOUT).await?;
    let mut dst = servers.connect_with(&wave.target, REPLY_TIMEOUT).await?;
    let (s_addr, d_addr) = (wave.source.as_str(), wave.target.as_str());
    // Leftovers of an interrupted copy, first (also when the key is gone).
    query::<Value>(&mut dst, d_addr, redis::cmd("UNLINK").arg(tmp), "UNLINK").await?;
    let size: Option<u64> = query(
        &mut src,
        s_addr,
        redis::cmd("MEMORY").arg("USAGE").arg(key),
        "MEMORY USAGE",
    )
    .await?;
    let kind: String = query(&mut src, s_addr, redis::cmd("TYPE").arg(key), "TYPE").await?;
    let started = Instant::now();
    let pttl: i64 = query(&mut src, s_addr, redis::cmd("PTTL").arg(key), "PTTL").await?;
    if pttl == -2 {
        return Ok(0); // gone (expired) meanwhile
    }
    // A copy of the key already on the target (a MIGRATE that failed half
    // way) is older than the source's (see the module docs): the copy
    // replaces it.
    // Each chunk is written to the target while the next is read.
    let mut writer = ChunkWriter {
        conn: dst.clone(),
        addr: d_addr.to_string(),
        in_flight: None,
    };
    match kind.as_str() {
        "hash" | "set" | "zset" => {
            let (scan, write) = match kind.as_str() {
                "hash" => ("HSCAN", "HSET"),
                "set" => ("SSCAN", "SADD"),
                _ => ("ZSCAN", "ZADD"),
            };
            let mut cursor: u64 = 0;
            loop {
                check_leading(leadership)?;
                let (next, items): (u64, Vec<Vec<u8>>) = query(
                    &mut src,
                    s_addr,
                    redis::cmd(scan)
                        .arg(key)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(CHUNK),
                    scan,
                )
                .await?;
                if !items.is_empty() {
                    let mut cmd = redis::cmd(write);
                    cmd.arg(tmp);
                    if kind == "zset" {
                        // ZSCAN answers member, score; ZADD wants score, member.
                        for pair in items.chunks(2) {
                            if let [member, score] = pair {
                                cmd.arg(score).arg(member);
                            }
                        }
                    } else {
                        cmd.arg(&items);
                    }
                    writer.send(cmd, write).await?;
                }
                cursor = next;
                if cursor == 0 {
                    break;
                }
            }
        }
        "list" => {
            let mut at: i64 = 0;
            loop {
                check_leading(leadership)?;
                let items: Vec<Vec<u8>> = query(
                    &mut src,
                    s_addr,
                    redis::cmd("LRANGE")
                        .arg(key)
                        .arg(at)
                        .arg(at + CHUNK as i64 - 1),
                    "LRANGE",
                )
                .await?;
                if items.is_empty() {
                    break;
                }
                at += items.len() as i64;
                let mut cmd = redis::cmd("RPUSH");
                cmd.arg(tmp).arg(&items);
                writer.send(cmd, "RPUSH").await?;
            }
        }
        "string" => {
            let mut at: usize = 0;
            loop {
                check_leading(leadership)?;
                let part: Vec<u8> = query(
                    &mut src,
                    s_addr,
                    redis::cmd("GETRANGE")
                        .arg(key)
                        .arg(at)
                        .arg(at + STRING_CHUNK - 1),
                    "GETRANGE",
                )
                .await?;
                if part.is_empty() {
                    break;
                }
                at += part.len();
                let mut cmd = redis::cmd("APPEND");
                cmd.arg(tmp).arg(&part);
                writer.send(cmd, "APPEND").await?;
            }
        }
        _ => {
            // A stream or a module type: one MIGRATE (the stall a plain
            // MIGRATE would have anyway).
            let mover = Mover::new(servers, wave, src.clone())?;
            mover
                .move_batch(vec![key.to_vec()], size.unwrap_or(0))
                .await?;
            return Ok(size.unwrap_or(0));
        }
    }
    writer.finish().await?;
    // Swap it in with what is left of its TTL, unless it expired meanwhile.
    let left = if pttl >= 0 {
        let left = pttl - started.elapsed().as_millis() as i64;
        if left <= 0 {
            query::<Value>(
                &mut dst,
                d_addr,
                redis::cmd("UNLINK").arg(tmp).arg(key),
                "UNLINK",
            )
            .await?;
            query::<Value>(&mut src, s_addr, redis::cmd("UNLINK").arg(key), "UNLINK").await?;
            return Ok(0);
        }
        Some(left)
    } else {
        None
    };
    let mut swap = redis::pipe();
    swap.atomic().cmd("RENAME").arg(tmp).arg(key).ignore();
    if let Some(ms) = left {
        swap.cmd("PEXPIRE").arg(key).arg(ms).ignore();
    }
    swap.query_async::<()>(&mut dst)
        .await
        .map_err(|e| server_error(d_addr, "MULTI RENAME", e))?;
    if wave.safe {
        let mover = Mover::new(servers, wave, src.clone())?;
        mover.wait_target_replicas().await?;
    }
    query::<Value>(&mut src, s_addr, redis::cmd("UNLINK").arg(key), "UNLINK").await?;
    Ok(size.unwrap_or(0))
}

/// Before a roll-back moves keys from `drop` (the forward move's target)
/// back to `keep` (its source): every key of `slots` that is on both
/// servers loses its copy on `drop` (the forward move's rule: while a key is
/// on the source, the source's copy is the latest). Afterwards no key is on
/// both, so the roll-back starts from a clean state. How many copies were
/// dropped.
pub async fn drop_stale_copies(
    servers: &Servers,
    keep: &str,
    drop: &str,
    slots: &[bool],
) -> Result<u64, AppError> {
    let mut on_keep = servers.connect_with(keep, REPLY_TIMEOUT).await?;
    let mut on_drop = servers.connect_with(drop, REPLY_TIMEOUT).await?;
    let mut cursor: u64 = 0;
    let mut dropped = 0;
    loop {
        let (next, keys) = scan_page(&mut on_keep, keep, cursor, SCAN_COUNT).await?;
        let mine: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| slots.get(usize::from(slot_of(k))).copied().unwrap_or(false))
            .collect();
        if !mine.is_empty() {
            let mut pipe = redis::pipe();
            for k in &mine {
                pipe.cmd("EXISTS").arg(k);
            }
            let found: Vec<i64> = pipe
                .query_async(&mut on_drop)
                .await
                .map_err(|e| server_error(drop, "EXISTS", e))?;
            let both: Vec<&Vec<u8>> = mine
                .iter()
                .zip(found)
                .filter(|(_, n)| *n == 1)
                .map(|(k, _)| k)
                .collect();
            if !both.is_empty() {
                dropped += both.len() as u64;
                redis::cmd("UNLINK")
                    .arg(both)
                    .query_async::<Value>(&mut on_drop)
                    .await
                    .map_err(|e| server_error(drop, "UNLINK", e))?;
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok(dropped);
        }
    }
}

/// The big keys (see [`BIG_KEY_BYTES`]) of `slots` on the source: found
/// before a wave starts, so that they are held from the moment the wave
/// migrates and copied in chunks, before any proxy could move them with one
/// blocking `MIGRATE` on access. One `SCAN` of the source in short pages, at
/// two thirds of its time at most.
pub async fn find_big_keys(
    servers: &Servers,
    addr: &str,
    slots: &[bool],
) -> Result<Vec<Vec<u8>>, AppError> {
    let mut conn = servers.connect_with(addr, REPLY_TIMEOUT).await?;
    let mut big = Vec::new();
    let mut owed = Duration::ZERO;
    let mut page = scan_page(&mut conn, addr, 0, SCAN_COUNT).await?;
    loop {
        let (next, keys) = page;
        let mine: Vec<Vec<u8>> = keys
            .into_iter()
            .filter(|k| slots.get(usize::from(slot_of(k))).copied().unwrap_or(false))
            .collect();
        let started = Instant::now();
        let (found, following) = big_and_next_page(&conn, addr, &mine, next, SCAN_COUNT).await?;
        page = following;
        big.extend(found);
        if next == 0 {
            big.sort();
            big.dedup();
            return Ok(big);
        }
        // Two thirds of the source's time at most: the look moves nothing,
        // and back to back it was the stretch of a migration clients felt
        // most. Pauses are owed per page and taken a few milliseconds at a
        // time (the timer's granularity is one).
        owed += started.elapsed() / 2;
        if owed >= LOOK_PAUSE {
            let napping = Instant::now();
            sleep(owed).await;
            owed = owed.saturating_sub(napping.elapsed());
        }
    }
}

/// Keys of `slots` on a server, found by one full `SCAN`: how many, and the
/// first few with their slot (for the pre-flight check of a target).
pub async fn keys_in_slots(
    servers: &Servers,
    addr: &str,
    slots: &[bool],
    sample: usize,
) -> Result<(u64, Vec<(String, u16)>), AppError> {
    let mut conn = servers.connect_with(addr, REPLY_TIMEOUT).await?;
    let mut cursor: u64 = 0;
    let mut count = 0;
    let mut found = Vec::new();
    loop {
        let (next, keys) = scan_page(&mut conn, addr, cursor, LOOK_COUNT).await?;
        for key in keys {
            let slot = slot_of(&key);
            if slots.get(usize::from(slot)).copied().unwrap_or(false) {
                count += 1;
                if found.len() < sample {
                    found.push((String::from_utf8_lossy(&key).into_owned(), slot));
                }
            }
        }
        cursor = next;
        if cursor == 0 {
            return Ok((count, found));
        }
        // Yield a little between pages on a big keyspace.
        if count == 0 && found.is_empty() {
            tokio::task::yield_now().await;
        }
    }
}

/// Sleeps in short steps until `until` or until paused; whether it paused.
pub async fn nap(control: &Control, duration: Duration) -> bool {
    let end = Instant::now() + duration;
    while Instant::now() < end {
        if control.paused.load(Ordering::Relaxed) {
            return true;
        }
        sleep(Duration::from_millis(50).min(end - Instant::now())).await;
    }
    false
}
