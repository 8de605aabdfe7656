//! Domain types shared by every layer: service identity and definitions, probe outcomes,
//! statuses, transitions, and time.
//!
//! These types are plain data with derived equality. Parsing and validation live in `config`;
//! behaviour lives in the stage that owns it (`probe`, `pipeline::judge`, `pipeline::sched`);
//! anything built from a definition at run time (TLS client configs, probe plans) lives with the
//! prober, so a definition can be compared, serialized and sent to another process as is.

mod id;
mod outcome;
mod service;
mod time;

pub use id::ServiceId;
pub use outcome::{Decided, ErrorKind, ProbeResult, Status, Timings, Transition};
pub use service::{
    Expect, Method, PhaseTimeouts, Scheme, ServiceSpec, Source, StatusRanges, Target, TlsSettings,
};
pub use time::{format_duration, round_ms, UnixMillis};
