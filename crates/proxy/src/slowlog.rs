//! The slowest recent requests, readable as `SLOWLOG GET` through the proxy
//! and from the admin API.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use shardis_resp::Frame;

#[derive(Debug, Clone, serde::Serialize)]
pub struct SlowEntry {
    pub id: u64,
    /// Unix time (seconds) the request finished.
    pub time: u64,
    pub duration_us: u64,
    pub command: String,
    pub key: String,
    pub client: String,
    pub client_name: String,
}

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

    pub fn record(&self, mut entry: SlowEntry) {
        entry.id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock();
        entries.push_front(entry);
        entries.truncate(self.max_len);
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
        let n = if count < 0 {
            entries.len()
        } else {
            count as usize
        };
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
