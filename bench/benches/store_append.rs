//! SQLite result appends as the writer thread does them: 60,000 services probed once a second,
//! results arriving in schedule order (service ids in random order), committed in batches of
//! 16,384. Prints the writer-thread CPU time per row for the rows after a warm-up.
//!
//! `cargo bench -p ringwatch-bench --bench store_append` (not criterion: one long run whose
//! table keeps growing is the point). Knobs: `SERVICES`, `ROWS`, `WARMUP_ROWS`, `BATCH`.

use std::time::Duration;

use ringwatch::model::{ProbeResult, ServiceId, Timings, UnixMillis};
use ringwatch::store::sqlite::SqliteStore;
use ringwatch::store::{Record, StoreWriter};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn main() {
    let services = env_usize("SERVICES", 60_000);
    let rows = env_usize("ROWS", 600_000);
    let warmup = env_usize("WARMUP_ROWS", 300_000);
    let batch_size = env_usize("BATCH", 16_384);
    let dir = std::env::temp_dir().join(format!("rw-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut store = SqliteStore::open(&dir.join("bench.db")).expect("open store");
    store.open_info().expect("migrate");

    let mut rng = fastrand::Rng::with_seed(1);
    let mut order: Vec<u64> = (0..services as u64).collect();
    rng.shuffle(&mut order);
    let ids: Vec<ServiceId> = (0..services)
        .map(|i| ServiceId::from_name(&format!("svc-{i}")))
        .collect();
    let offset: Vec<i64> = (0..services).map(|_| rng.i64(0..1000)).collect();
    let base = UnixMillis::now().0;

    let mut batch = Vec::with_capacity(batch_size);
    let (mut measured_rows, mut measured) = (0usize, Duration::ZERO);
    for n in 0..warmup + rows {
        let round = (n / services) as i64;
        let i = order[n % services] as usize;
        let at = base + round * 1000 + offset[i];
        batch.push(Record::Result(ProbeResult {
            service_id: ids[i],
            scheduled_at: UnixMillis(at),
            started_at: UnixMillis(at + 1),
            timings: Timings {
                connect: Duration::ZERO,
                tls: Duration::ZERO,
                first_byte: Duration::from_micros(300 + (n % 200) as u64),
                total: Duration::from_micros(350 + (n % 200) as u64),
            },
            status_code: Some(200),
            bytes: 120,
            error_kind: None,
            error: None,
        }));
        if batch.len() == batch_size || n + 1 == warmup + rows {
            let t = thread_cpu();
            store.append(&batch).expect("append");
            if n >= warmup {
                measured += thread_cpu() - t;
                measured_rows += batch.len();
            }
            batch.clear();
        }
    }
    let per_row = measured.as_nanos() as f64 / measured_rows.max(1) as f64;
    println!(
        "store_append: {services} services, {measured_rows} rows after {warmup} warm-up, batch {batch_size}: \
         {:.3} s CPU, {per_row:.0} ns per row ({:.0} rows per CPU-second)",
        measured.as_secs_f64(),
        1e9 / per_row
    );
    let _ = std::fs::remove_dir_all(&dir);
}
