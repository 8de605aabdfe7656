//! ringwatch: a thread-per-core io_uring service-health monitor.
//!
//! Start at `shard` (what runs on each core), then `sched` (when to probe), `probe` (how),
//! `state` (what it means) and `store` (where it is kept). `docs/architecture.md` has the map.

pub mod api;
pub mod auth;
pub mod config;
pub mod dns;
pub mod event;
pub mod healthcheck;
pub mod http;
pub mod mesh;
pub mod model;
pub mod notify;
pub mod probe;
pub mod sched;
pub mod server;
pub mod service_manager;
pub mod shard;
pub mod state;
pub mod stats;
pub mod store;
pub mod table;
pub mod ws;
