//! Byte formats that cross a boundary: a socket, a thread or another process.
//!
//! `frame` is the RFC 6455 WebSocket frame codec: the pipeline frames each event once with it,
//! and the WebSocket front end parses client frames with it. Nothing here knows about shards,
//! connections or the store.

pub mod entry;
pub mod frame;
