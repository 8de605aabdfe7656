//! The runtime kit every role builds on: driver set-up, the shard mesh, single-waiter
//! notifications, the shard's service table, and the DNS resolver threads.
//!
//! Nothing here knows what a probe, a transition or a client is; it moves and wakes.

pub mod dns;
pub mod driver;
pub mod mesh;
pub mod notify;
pub mod outbox;
pub mod table;
