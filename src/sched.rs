//! sched (in progress)
