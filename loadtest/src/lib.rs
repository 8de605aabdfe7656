//! ringwatch load-test harness: a scripted local target fleet, a config generator, a
//! WebSocket client swarm, and a `/proc` CPU/RSS sampler, used by `scripts/peer-bench.sh` and the ringwatch benchmarks.
//!
//! Everything binds to 127.0.0.0/8 only: the harness exists to load this machine, never a
//! network.

#![warn(missing_docs)]

pub mod fleet;
pub mod genconfig;
pub mod peers;
pub mod ports;
pub mod procstat;
pub mod report;
pub mod scenario;
pub mod script;
pub mod soak;
pub mod swarm;
