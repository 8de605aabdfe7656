//! ringwatch: a thread-per-core io_uring service-health monitor.
//!
//! The crate is layered; each module imports only the ones listed before it
//! (`scripts/check-structure.py` enforces it), and data flows one way: scheduler -> prober ->
//! judge -> store -> fan-out. `docs/architecture.md` has the diagram and the seams.
//!
//! **`model`**: the domain as plain data. A service's stable id (a hash of its name), its
//! definition (`ServiceSpec`: what to probe and what counts as healthy, compared with derived
//! equality), probe results, decided and numbered transitions, statuses, and time.
//!
//! **`config`**: the YAML file (and REST API service objects) turned into validated values,
//! one file per section; every error names its key.
//!
//! **`wire`**: byte formats that cross a socket: the WebSocket frame codec.
//!
//! **`rt`**: the runtime kit: executor set-up (io_uring, epoll fallback), the lock-free mesh
//! between shards, single-waiter notifications, the bounded outbox to side threads, the
//! shard's slab of services, and the DNS resolver threads.
//!
//! **`metrics`**: the Prometheus text format; each component renders its own families.
//!
//! **`pipeline`**: the stages that run per probe: `sched` (a timer wheel: when is a service
//! due), `judge` (the UP/DOWN state machine), `event` (what clients receive, encoded once), and
//! `seam` (what crosses between stages, and whether it stays on the shard or leaves the
//! process).
//!
//! **`probe`**: the hand-rolled HTTP/1.1 (+ rustls) client, with a plan made once per
//! definition so a probe allocates nothing.
//!
//! **`remote`**: cluster transport, the only code that knows Redis: the jobs, results and
//! events streams, the scheduler lease, and the tasks that move entries between them and the
//! shards.
//!
//! **`store`**: the append-only log. A write side owned by one writer thread (results in
//! batches; transitions numbered at commit and published only after it) and a read side for
//! history, each a trait with a SQLite implementation.
//!
//! **`http`**, **`auth`**, **`api`**, **`ws`**: the front ends on the shards' port: the
//! HTTP/1.1 server, bearer tokens and JWT, the REST API (through `api::Host`), and the
//! WebSocket stream (per-shard `ws::Hub`, sessions through `ws::Feed`).
//!
//! **`shard`**: one per core. Owns a slice of the services and composes the stages for them;
//! owns the connections its listener accepts; other threads reach it only through the mesh.
//!
//! **`roles`**: how a process is wired: the standalone role (threads, locks, signals, reload),
//! the healthcheck command and systemd notification.

pub mod model;

pub mod config;
pub mod wire;

pub mod metrics;
pub mod rt;

pub mod pipeline;
pub mod probe;
pub mod remote;
pub mod store;

pub mod api;
pub mod auth;
pub mod http;
pub mod ws;

pub mod shard;

pub mod roles;
