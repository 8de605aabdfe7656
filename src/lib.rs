//! ringwatch: a thread-per-core io_uring service-health monitor.
//!
//! Start at `shard` (what runs on each core), then `sched` (when to probe), `probe` (how),
//! `state` (what it means) and `store` (where it is kept). `docs/architecture.md` has the map.

pub mod api;
pub mod auth;
pub mod config;
pub mod http;
pub mod metrics;
pub mod model;
pub mod pipeline;
pub mod probe;
pub mod roles;
pub mod rt;
pub mod shard;

pub mod store;
pub mod wire;
pub mod ws;
