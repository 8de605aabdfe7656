//! The shards' HTTP/1.1 server: httparse request heads, Content-Length bodies, keep-alive,
//! pipelining, and the limits that keep one bad client from hurting the others.
//!
//! Framing is strict (one digits-only Content-Length, no Transfer-Encoding) so that no proxy in
//! front can see a different request boundary; HEAD is answered for every GET route; a final
//! error response is followed by a lingering close so the client reads it instead of a reset.
//!
//! Routing is not here: a `Handler` (the shard) turns a `Request` into a `Response`. Later
//! protocols (the REST API, the WebSocket upgrade) plug in through the same trait.
//!
//! - `request`: the parsed request and the parser (framing rules, limits);
//! - `response`: the response and its wire form;
//! - `server`: the connection loop (`serve`, `serve_upgradable`), timeouts;
//! - `reject`: why a connection or request was refused, for the metrics.

mod reject;
mod request;
mod response;
mod server;

pub use reject::HttpReject;
pub use request::{parse_request, Parsed, Request, RequestError};
pub use response::{encode_response, Response};
pub use server::{serve, serve_upgradable, Handler, Upgraded};
