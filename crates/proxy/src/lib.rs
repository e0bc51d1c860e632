//! The Shardis data path: a stateless proxy that speaks RESP2/RESP3 to any
//! Redis client and routes each command to the group owning its key's slot.
//!
//! ```text
//! client ─▶ session ─▶ command table ─▶ router (slot table) ─▶ backend conn ─▶ redis
//!                 ◀── replies in request order ◀── batches answered in order ◀──
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod admin;
pub mod backend;
pub mod commands;
pub mod config;
mod io;
pub mod lease;
mod lifecycle;
mod local;
pub mod router;
mod session;
pub mod slowlog;
pub mod stats;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::time::Instant;

pub use config::{Config, DEFAULT_CONFIG};
pub use lifecycle::{run, run_with_store, Proxy};

/// State every session and task of one proxy process shares.
pub struct Shared {
    pub config: Config,
    pub proxy_id: String,
    pub router: Arc<router::Router>,
    pub stats: stats::Stats,
    pub slowlog: slowlog::SlowLog,
    pub budget: Budget,
    pub started: Instant,
    /// Flipped to true on SIGTERM: sessions finish what is in flight and end.
    pub shutdown: watch::Sender<bool>,
    /// Registered in etcd and topology loaded: `/readyz`.
    pub ready: AtomicBool,
}

/// The global budget for large request and reply buffers, so that many
/// clients sending huge values at once cannot exhaust memory.
pub struct Budget {
    limit: usize,
    used: AtomicUsize,
}

impl Budget {
    pub fn new(limit: usize) -> Budget {
        Budget {
            limit,
            used: AtomicUsize::new(0),
        }
    }

    /// Takes `n` bytes if they fit.
    pub fn try_charge(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                let next = u.checked_add(n)?;
                (next <= self.limit).then_some(next)
            })
            .is_ok()
    }

    /// Takes `n` bytes unconditionally (replies already received).
    pub fn charge(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    pub fn release(&self, n: usize) {
        if n > 0 {
            let _ = self
                .used
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |u| {
                    Some(u.saturating_sub(n))
                });
        }
    }

    /// Over the limit: sessions stop reading new requests until it drains.
    pub fn exceeded(&self) -> bool {
        self.used.load(Ordering::Acquire) > self.limit
    }

    pub fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub fn limit(&self) -> usize {
        self.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_refuses_past_the_limit() {
        let b = Budget::new(100);
        assert!(b.try_charge(60));
        assert!(!b.try_charge(50));
        assert!(b.try_charge(40));
        assert!(!b.exceeded());
        b.charge(10);
        assert!(b.exceeded());
        b.release(200);
        assert_eq!(b.used(), 0);
    }
}
