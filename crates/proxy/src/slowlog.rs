//! The slowest recent requests, readable as `SLOWLOG GET` through the proxy
//! and as JSON from the admin API (`/api/v1/slowlog`).
//!
//! A request is slow when the time from sending it to a backend to its reply
//! being ready reaches `slowlog_threshold_us`. Requests read together (one
//! pipeline) are sent and answered together, so they share that time: when
//! one of them is slow, the others waited as long, and up to
//! [`crate::stats::SLOW_PER_READ`] of them are logged.
//!
//! To name a request's key without keeping the request, each read's first
//! keys are copied into one small buffer ([`KeyLog`]) while routing: a few
//! bytes per request. The buffers come from a per-thread pool and go back
//! to it when the replies are written, so recording allocates nothing once
//! the pool is warm.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use shardis_resp::{Frame, Request};

use crate::commands::{self, KeySpec};
use crate::stats::Stats;

/// One logged request (the type the dashboard reads too).
pub use shardis_topology::stats::SlowlogEntry as SlowEntry;

pub struct SlowLog {
    threshold_us: u64,
    max_len: usize,
    entries: Mutex<VecDeque<SlowEntry>>,
    next_id: AtomicU64,
}

impl SlowLog {
    pub fn new(threshold_us: u64, max_len: usize) -> SlowLog {
        SlowLog {
            threshold_us,
            max_len,
            entries: Mutex::new(VecDeque::new()),
            next_id: AtomicU64::new(0),
        }
    }

    /// Whether a request this slow is logged (checked before building an entry).
    #[inline]
    pub fn is_slow(&self, us: u64) -> bool {
        self.max_len > 0 && us >= self.threshold_us
    }

    pub fn threshold_us(&self) -> u64 {
        self.threshold_us
    }

    pub fn record(&self, entry: SlowEntry) {
        self.record_all(std::iter::once(entry));
    }

    /// Adds entries (ids are given here), newest last, under one lock.
    pub fn record_all(&self, entries: impl IntoIterator<Item = SlowEntry>) {
        if self.max_len == 0 {
            return;
        }
        let mut log = self.entries.lock();
        for mut entry in entries {
            entry.id = self.next_id.fetch_add(1, Ordering::Relaxed);
            log.push_front(entry);
        }
        log.truncate(self.max_len);
    }

    pub fn len(&self) -> usize {
        self.entries.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn reset(&self) {
        self.entries.lock().clear();
    }

    /// Newest first; a negative count means all.
    pub fn entries(&self, count: i64) -> Vec<SlowEntry> {
        let entries = self.entries.lock();
        let n = usize::try_from(count).unwrap_or(entries.len());
        entries.iter().take(n).cloned().collect()
    }

    /// `SLOWLOG GET` in Redis's format: id, time, duration (µs), arguments,
    /// client address, client name.
    pub fn frame(&self, count: i64) -> Frame {
        let b = |s: &str| Frame::Bulk(Bytes::copy_from_slice(s.as_bytes()));
        Frame::Array(
            self.entries(count)
                .into_iter()
                .map(|e| {
                    let mut args = vec![b(&e.command)];
                    if !e.key.is_empty() {
                        args.push(b(&e.key));
                    }
                    Frame::Array(vec![
                        Frame::Integer(e.id as i64),
                        Frame::Integer(e.time as i64),
                        Frame::Integer(e.duration_us as i64),
                        Frame::Array(args),
                        b(&e.client),
                        b(&e.client_name),
                    ])
                })
                .collect(),
        )
    }
}

// ---------------------------------------------------------------------------
// First keys of one read
// ---------------------------------------------------------------------------

/// Longest key prefix kept for the slowlog (Redis cuts arguments at 128).
pub const KEY_MAX: usize = 127;

/// Set in a key's header byte when the key was cut at [`KEY_MAX`].
const CUT: u8 = 0x80;

/// The first key of each request of one read, in reply order, packed into
/// one buffer: `[length: u8][bytes]`, or for a key longer than [`KEY_MAX`]
/// `[KEY_MAX | CUT][bytes beyond: u32 LE][the first KEY_MAX bytes]`.
#[derive(Debug, Default)]
pub struct KeyLog {
    buf: Vec<u8>,
    count: usize,
}

/// A new buffer's capacity: a pipeline of 16 keys of 20 bytes fits.
const BUFFER_START: usize = 512;
/// Buffers that grew past this are freed, not pooled.
const BUFFER_KEEP: usize = 16 * 1024;
/// Most buffers a thread keeps.
const POOL_MAX: usize = 256;

thread_local! {
    /// Empty buffers for [`KeyLog`]s, so that recording does not allocate.
    static POOL: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

#[cold]
fn pooled_buffer() -> Vec<u8> {
    POOL.try_with(|pool| pool.try_borrow_mut().ok().and_then(|mut p| p.pop()))
        .ok()
        .flatten()
        .unwrap_or_else(|| Vec::with_capacity(BUFFER_START))
}

impl Drop for KeyLog {
    fn drop(&mut self) {
        if self.buf.capacity() == 0 || self.buf.capacity() > BUFFER_KEEP {
            return;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        // During thread teardown the pool may be gone: then it is just freed.
        let _ = POOL.try_with(|pool| {
            if let Ok(mut pool) = pool.try_borrow_mut() {
                if pool.len() < POOL_MAX {
                    pool.push(buf);
                }
            }
        });
    }
}

impl KeyLog {
    /// Empties it for reuse (a buffer that grew past [`BUFFER_KEEP`] is
    /// returned to the pool's rules by dropping it).
    pub fn clear(&mut self) {
        self.count = 0;
        if self.buf.capacity() > BUFFER_KEEP {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
    }

    /// Brings the log up to `replies` entries with `req`'s first key: the
    /// request just routed added that many replies in all (one, normally;
    /// none when it waits for a held slot). `cmd` is the command of the last
    /// reply, which is the request's own.
    #[inline]
    pub fn note(&mut self, stats: &Stats, req: &Request, cmd: usize, replies: usize) {
        if !stats.enabled() || self.count >= replies {
            return;
        }
        let key = commands::table()
            .get(cmd)
            .and_then(|c| first_key(c.keys, &req.args))
            .unwrap_or_default();
        while self.count < replies {
            self.push(key);
        }
    }

    #[inline]
    fn push(&mut self, key: &[u8]) {
        if self.buf.capacity() == 0 {
            self.buf = pooled_buffer();
        }
        if key.len() <= KEY_MAX {
            self.buf.push(key.len() as u8);
            self.buf.extend_from_slice(key);
        } else {
            self.push_cut(key);
        }
        self.count += 1;
    }

    #[cold]
    fn push_cut(&mut self, key: &[u8]) {
        let kept = key.get(..KEY_MAX).unwrap_or(key);
        self.buf.push(KEY_MAX as u8 | CUT);
        self.buf
            .extend_from_slice(&((key.len() - kept.len()) as u32).to_le_bytes());
        self.buf.extend_from_slice(kept);
    }

    /// The keys in order, as text (a cut key ends with `... (N more bytes)`,
    /// as in Redis's slowlog).
    pub fn iter(&self) -> impl Iterator<Item = String> + '_ {
        let mut rest = self.buf.as_slice();
        std::iter::from_fn(move || {
            let (&head, tail) = rest.split_first()?;
            let (more, tail) = if head & CUT != 0 {
                let (more, tail) = tail.split_at_checked(4)?;
                (u32::from_le_bytes(more.try_into().ok()?), tail)
            } else {
                (0, tail)
            };
            let len = (head & !CUT) as usize;
            let key = tail.get(..len)?;
            rest = tail.get(len..).unwrap_or_default();
            let mut text = String::from_utf8_lossy(key).into_owned();
            if more > 0 {
                text.push_str(&format!("... ({more} more bytes)"));
            }
            Some(text)
        })
    }
}

/// The first key of a request, without working out all of them.
fn first_key(spec: KeySpec, args: &[Bytes]) -> Option<&[u8]> {
    let pos = match spec {
        KeySpec::None => return None,
        KeySpec::Range { first, .. } => first,
        KeySpec::NumKeys { dest: true, .. } => 1,
        KeySpec::NumKeys { at, dest: false } => at + 1,
        KeySpec::Streams => {
            args.iter()
                .position(|a| a.eq_ignore_ascii_case(b"streams"))?
                + 1
        }
        KeySpec::Sort | KeySpec::GeoRadius => 1,
    };
    args.get(pos).map(|a| a.as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(args: &[&str]) -> Request {
        let args: Vec<Bytes> = args
            .iter()
            .map(|a| Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        Request {
            raw: Bytes::new(),
            args,
        }
    }

    fn index(name: &str) -> usize {
        commands::table().lookup(name.as_bytes()).unwrap().index
    }

    #[test]
    fn keys_are_noted_once_per_reply() {
        let stats = Stats::default();
        let mut log = KeyLog::default();
        log.note(&stats, &req(&["GET", "k1"]), index("get"), 1);
        // A request that added no reply (held slot) notes nothing.
        log.note(&stats, &req(&["GET", "k2"]), index("get"), 1);
        log.note(&stats, &req(&["PING"]), index("ping"), 2);
        log.note(
            &stats,
            &req(&["EVAL", "return 1", "1", "script-key"]),
            index("eval"),
            3,
        );
        log.note(
            &stats,
            &req(&["XREAD", "COUNT", "1", "STREAMS", "s1", "0"]),
            index("xread"),
            4,
        );
        log.note(
            &stats,
            &req(&["ZUNIONSTORE", "dest", "2", "a", "b"]),
            index("zunionstore"),
            5,
        );
        let long = "x".repeat(300);
        log.note(&stats, &req(&["GET", &long]), index("get"), 6);
        log.note(&stats, &req(&["BOGUS", "k"]), usize::MAX, 7);
        let keys: Vec<String> = log.iter().collect();
        let cut = "x".repeat(127) + "... (173 more bytes)";
        assert_eq!(keys[..6], ["k1", "", "script-key", "s1", "dest", &cut]);
        assert_eq!(keys[6], "");
        assert_eq!(keys.len(), 7);
    }

    #[test]
    fn buffers_go_back_to_the_pool() {
        let stats = Stats::default();
        let mut log = KeyLog::default();
        log.note(&stats, &req(&["GET", "k1"]), index("get"), 1);
        let ptr = log.buf.as_ptr();
        drop(log);
        let mut again = KeyLog::default();
        again.note(&stats, &req(&["GET", "k2"]), index("get"), 1);
        assert_eq!(again.buf.as_ptr(), ptr, "the pooled buffer is reused");
        assert_eq!(again.iter().collect::<Vec<_>>(), ["k2"]);
    }

    #[test]
    fn disabled_stats_note_nothing() {
        let stats = Stats::new(false, 1);
        let mut log = KeyLog::default();
        log.note(&stats, &req(&["GET", "k1"]), index("get"), 1);
        assert_eq!(log.iter().count(), 0);
    }

    #[test]
    fn the_log_keeps_the_newest_and_ids_grow() {
        let log = SlowLog::new(10, 2);
        assert!(!log.is_slow(9));
        assert!(log.is_slow(10));
        let entry = |key: &str| SlowEntry {
            id: 0,
            time: 1,
            duration_us: 20,
            command: "get".into(),
            key: key.into(),
            client: "127.0.0.1:1".into(),
            client_name: String::new(),
        };
        log.record(entry("a"));
        log.record_all([entry("b"), entry("c")]);
        let got = log.entries(-1);
        assert_eq!(got.len(), 2);
        assert_eq!((got[0].id, got[0].key.as_str()), (2, "c"));
        assert_eq!((got[1].id, got[1].key.as_str()), (1, "b"));
        assert_eq!(log.entries(1).len(), 1);
        log.reset();
        assert!(log.is_empty());
        assert!(!SlowLog::new(0, 0).is_slow(u64::MAX));
    }
}
