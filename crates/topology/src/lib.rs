//! The Shardis topology: the model, its etcd layout, the slot hash and the
//! `Store` that keeps it.
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod etcd;
pub mod hash;
pub mod keys;
pub mod mem;
pub mod migration;
pub mod model;
pub mod store;

pub use etcd::EtcdStore;
pub use hash::{hash_tag, slot_of, SLOT_COUNT};
pub use keys::Keys;
pub use mem::MemStore;
pub use migration::{Migration, MigrationId, MigrationState};
pub use model::*;
pub use store::{LeaderEntry, LeaseId, Store, StoreError, TopologyWatch};
