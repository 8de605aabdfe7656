//! The probing pipeline, stage by stage: `sched` decides when a service is due, the prober
//! (`crate::probe`) runs it, `judge` turns results into UP/DOWN transitions, and `event`
//! encodes what clients receive, once per event.
//!
//! The seams between stages are in `seam`: each says what crosses it and why it is a seam.
pub mod event;
pub mod judge;
pub mod sched;
pub mod seam;
pub mod stats;
