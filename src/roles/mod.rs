//! Roles: which threads a process starts and how they are wired. The top of the crate below
//! `main`: it composes the shards, the store's writer and readers, the resolver and the signal
//! handling into a running process.
//!
//! `standalone` runs every pipeline stage in this process; `cluster` cuts the same pipeline at
//! the seams of `pipeline::seam` and wires the cut ends to Redis Streams and PostgreSQL
//! (`ingest` is its store-side stage). `waiting` holds start-up while the database is away.

pub mod cluster;
pub mod healthcheck;
mod ingest;
pub mod instance;
pub mod service_manager;
pub mod standalone;
mod waiting;

pub use standalone::{shard_count, start, Running, ServerError};
