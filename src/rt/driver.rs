//! Building a shard's executor: io_uring with the flags that pay off, epoll where io_uring
//! cannot be set up (seccomp, old kernels, a low `ulimit -l`), and pinning.

use std::io;

use crate::config::DriverChoice;

/// io_uring set-up flags for a shard's ring. By default the kernel interrupts a running shard
/// (an IPI, then task work on its way back to user space) for each completion, i.e. for nearly
/// every probe response. With `COOP_TASKRUN` completions wait for the shard's next entry into
/// the kernel, which its event loop makes every turn anyway (submit or wait). Measured with
/// peer-bench: shard CPU per probe 23-25 us -> 15-18 us. (`DEFER_TASKRUN` measured no better.)
fn uring_setup() -> io_uring::Builder {
    let mut b = io_uring::IoUring::builder();
    b.setup_coop_taskrun();
    b
}

/// Runs the future `make(driver_name)` builds on the driver `choice` asks for, to completion.
pub fn run_on_driver<F, Fut>(choice: DriverChoice, id: usize, make: F) -> io::Result<()>
where
    F: FnOnce(&'static str) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    use monoio::{IoUringDriver, LegacyDriver, RuntimeBuilder};
    let entries = 4096;
    if choice != DriverChoice::Epoll {
        // Tuned ring first (see `uring_setup`); a kernel that refuses its flags gets a plain one.
        let built = RuntimeBuilder::<IoUringDriver>::new()
            .with_entries(entries)
            .uring_builder(uring_setup())
            .enable_timer()
            .build()
            .or_else(|_| {
                RuntimeBuilder::<IoUringDriver>::new()
                    .with_entries(entries)
                    .enable_timer()
                    .build()
            });
        match built {
            Ok(mut rt) => {
                rt.block_on(make("io_uring"));
                return Ok(());
            }
            Err(e) if choice == DriverChoice::Auto => {
                // Seccomp, old kernels and low `ulimit -l` land here; epoll still works.
                tracing::warn!(shard = id, error = %e, "io_uring unavailable, falling back to epoll");
            }
            Err(e) => return Err(e),
        }
    }
    let mut rt = RuntimeBuilder::<LegacyDriver>::new()
        .with_entries(entries)
        .enable_timer()
        .build()?;
    rt.block_on(make("epoll"));
    Ok(())
}
