//! Roles: which threads a process starts and how they are wired. The top of the crate below
//! `main`: it composes the shards, the store's writer and readers, the resolver and the signal
//! handling into a running process.
//!
//! Today one role exists, `standalone` (every pipeline stage in this process, over SQLite);
//! cluster roles cut the same pipeline at the seams of `pipeline::seam` and wire the cut ends
//! to Redis Streams and PostgreSQL instead.

pub mod cluster;
pub mod healthcheck;
mod ingest;
pub mod instance;
pub mod service_manager;
pub mod standalone;

pub use standalone::{shard_count, start, Running, ServerError};
