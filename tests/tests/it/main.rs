//! Shardis's integration tests, against real `redis-server` and `etcd`
//! processes (and the real `shardis-proxy` / `shardis-dashboard` binaries).
//!
//! One test binary with one module per area, instead of one binary per file:
//! every integration-test binary links the whole dependency tree, and nineteen
//! of them took minutes of linking and gigabytes of disk in CI. The test
//! runner (cargo-nextest) still runs each test in its own process.

mod control_common;

mod control_groups;
mod control_leader;
mod control_promote;
mod dashboard_stats;
mod differential;
mod failure;
mod fanout;
mod fencing;
mod fixtures;
mod hostile;
mod memory_budget;
mod migrate_on_access;
mod migration;
mod pipeline;
mod proxy_stats;
mod redis_py;
mod resp3;
mod routing;
mod topology;
mod ui_browser;
