//! PostgreSQL write throughput: the same generated results written three ways, for
//! `scripts/pg-bench.sh`, which runs them against a private server in one run.
//!
//! - `MODE=writer`: ringwatch's real path: records pushed into the writer queue, the writer
//!   thread batching them into `PgWriter::append` (one `INSERT .. SELECT FROM unnest(..) ON
//!   CONFLICT DO NOTHING` per batch).
//! - `MODE=unnest`: that statement alone: `PgWriter::append` called with batches of exactly
//!   `BATCH` rows, no queue (the A/B partner of `copy`).
//! - `MODE=copy`: the alternative: per batch, `COPY .. FROM STDIN BINARY`
//!   into a temporary staging table, then `INSERT INTO results SELECT * FROM staging ON
//!   CONFLICT DO NOTHING`, in one transaction.
//! - `MODE=psql`: the floor: `psql \copy` of the same rows as CSV straight into `results`
//!   (the partitions made by ringwatch's writer first).
//!
//! CPU is counted on both sides: the client (the writer thread, or the thread running COPY)
//! from /proc, and the server as the sum over the postmaster `PG_PID` and its children. Knobs:
//! `PG_URL` (database, created empty by the script), `ROWS`, `SERVICES`, `BATCH`.
//! Prints one `key=value` line.

use std::pin::pin;
use std::time::{Duration, Instant};

use ringwatch::config::{Config, StorageConfig};
use ringwatch::model::{ProbeResult, ServiceId, Timings, UnixMillis};
use ringwatch::store::{Record, Writer};
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Clock ticks per second for /proc stat times.
fn hz() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime (seconds) of a /proc stat file.
fn stat_cpu(path: &str) -> f64 {
    let Ok(s) = std::fs::read_to_string(path) else {
        return 0.0;
    };
    // The command name may hold spaces: fields start after the closing parenthesis.
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // After ')': state is index 0, so utime (field 14) is 11 and stime 12.
    (t(11) + t(12)) / hz()
}

/// CPU seconds of the postmaster `pid` and its children (the server's backends and helpers):
/// the live children's own times plus the postmaster's `cutime + cstime`, which hold the
/// children it has reaped (a backend exits when its client disconnects).
fn server_cpu(pid: u32) -> f64 {
    let mut total = stat_cpu(&format!("/proc/{pid}/stat")) + reaped_cpu(pid);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return total;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(child) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(s) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        let ppid = s
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += stat_cpu(&format!("/proc/{child}/stat"));
        }
    }
    total
}

/// cutime + cstime (seconds): CPU of the reaped children of `pid`.
fn reaped_cpu(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = s.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (t(13) + t(14)) / hz()
}

/// CPU seconds of this process (all threads, finished ones included).
fn process_cpu() -> f64 {
    stat_cpu("/proc/self/stat")
}

/// CPU time of the calling thread.
fn thread_cpu() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer for the duration of the call.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// `ROWS` results of `SERVICES` services probed once a second, in schedule order (services
/// in a random order within each second), like a fleet's writer queue sees them.
fn rows() -> Vec<ProbeResult> {
    let services = env_usize("SERVICES", 20_000);
    let rows = env_usize("ROWS", 1_000_000);
    let mut rng = fastrand::Rng::with_seed(7);
    let mut order: Vec<usize> = (0..services).collect();
    rng.shuffle(&mut order);
    let ids: Vec<ServiceId> = (0..services)
        .map(|i| ServiceId::from_name(&format!("svc-{i}")))
        .collect();
    let offset: Vec<i64> = (0..services).map(|_| rng.i64(0..1000)).collect();
    // Start ten minutes ago but not before today: every row lands in the partitions of today
    // and the next days, which exist once ringwatch's writer has opened the database.
    let now = UnixMillis::now().0;
    let base = (now - 600_000).max(now - now.rem_euclid(86_400_000));
    (0..rows)
        .map(|n| {
            let round = (n / services) as i64;
            let i = order[n % services];
            let at = base + round * 1000 + offset[i];
            let ok = n % 50 != 0;
            ProbeResult {
                service_id: ids[i],
                scheduled_at: UnixMillis(at),
                started_at: UnixMillis(at + 1),
                timings: Timings {
                    connect: Duration::from_micros(90 + (n % 50) as u64),
                    tls: Duration::ZERO,
                    first_byte: Duration::from_micros(300 + (n % 200) as u64),
                    total: Duration::from_micros(350 + (n % 200) as u64),
                },
                status_code: Some(if ok { 200 } else { 503 }),
                bytes: 120,
                error_kind: (!ok).then_some(ringwatch::model::ErrorKind::Status),
                error: (!ok).then(|| "status 503".to_string()),
            }
        })
        .collect()
}

fn storage(url: &str, batch: usize) -> StorageConfig {
    let yaml = format!(
        "storage: {{kind: postgres, url: '{url}', batch_size: {batch}, \
         queue_capacity: {}, flush_interval: 1s}}\n",
        batch * 4
    );
    Config::parse(&yaml, std::path::Path::new("."))
        .expect("storage config")
        .storage
}

/// ringwatch's writer: returns (client CPU s, wall s).
fn writer(url: &str, batch: usize, rows: Vec<ProbeResult>) -> (f64, f64) {
    let cfg = storage(url, batch);
    let store = ringwatch::store::open(&cfg).expect("open store");
    let (w, handle, _) = Writer::spawn(store, &cfg).expect("spawn writer");
    let cpu0 = process_cpu();
    let main0 = thread_cpu();
    let t = Instant::now();
    let cap = handle.queue_capacity();
    for r in rows {
        // Never drop: wait for room like a steady fleet whose writer keeps up would.
        while handle.queue_depth() >= cap {
            std::thread::sleep(Duration::from_micros(200));
        }
        assert!(handle.push_result(r), "dropped");
    }
    w.finish().expect("finish");
    let wall = t.elapsed().as_secs_f64();
    // Everything but this (producer) thread: the writer thread and its runtime.
    let client = (process_cpu() - cpu0) - (thread_cpu() - main0);
    (client, wall)
}

/// `PgWriter::append` called directly with batches of exactly `batch` rows (the statement
/// alone, for the A/B against `copy`): returns (client CPU s, wall s).
fn unnest(url: &str, batch: usize, rows: Vec<ProbeResult>) -> (f64, f64) {
    let cfg = storage(url, batch);
    let mut store = ringwatch::store::open(&cfg).expect("open store");
    store.open_info().expect("partitions");
    let batches: Vec<Vec<Record>> = rows
        .chunks(batch)
        .map(|c| c.iter().cloned().map(Record::Result).collect())
        .collect();
    let cpu0 = thread_cpu();
    let t = Instant::now();
    for b in &batches {
        store.append(b).expect("append");
    }
    (thread_cpu() - cpu0, t.elapsed().as_secs_f64())
}

/// COPY into a staging table, then INSERT .. ON CONFLICT: returns (client CPU s, wall s).
fn copy(url: &str, batch: usize, rows: Vec<ProbeResult>) -> (f64, f64) {
    // Partitions and schema as ringwatch makes them.
    let cfg = storage(url, batch);
    let mut store = ringwatch::store::open(&cfg).expect("open store");
    store.open_info().expect("partitions");
    drop(store);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let cpu0 = thread_cpu();
    let t = Instant::now();
    rt.block_on(async {
        let (mut client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client
            .batch_execute(
                "CREATE TEMP TABLE staging (LIKE results INCLUDING DEFAULTS) ON COMMIT DELETE ROWS",
            )
            .await
            .expect("staging");
        let types = [
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT8,
            Type::INT4,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
        ];
        let us = |d: Duration| d.as_micros() as i64;
        for chunk in rows.chunks(batch) {
            // Sorted like the writer sorts its batches.
            let mut chunk: Vec<&ProbeResult> = chunk.iter().collect();
            chunk.sort_by_key(|r| (r.service_id.get(), r.scheduled_at.0));
            let tx = client.transaction().await.expect("begin");
            let sink = tx
                .copy_in("COPY staging FROM STDIN (FORMAT binary)")
                .await
                .expect("copy");
            let mut w = pin!(BinaryCopyInWriter::new(sink, &types));
            for r in chunk {
                let v: [&(dyn ToSql + Sync); 11] = [
                    &(r.service_id.get() as i64),
                    &r.scheduled_at.0,
                    &r.started_at.0,
                    &us(r.timings.total),
                    &us(r.timings.connect),
                    &us(r.timings.tls),
                    &us(r.timings.first_byte),
                    &r.status_code.map(i32::from),
                    &(r.bytes as i64),
                    &r.error_kind.map(|k| k.as_str()),
                    &r.error.as_deref(),
                ];
                w.as_mut().write(&v).await.expect("row");
            }
            w.finish().await.expect("finish copy");
            tx.execute(
                "INSERT INTO results SELECT * FROM staging ON CONFLICT DO NOTHING",
                &[],
            )
            .await
            .expect("insert");
            tx.commit().await.expect("commit");
        }
    });
    (thread_cpu() - cpu0, t.elapsed().as_secs_f64())
}

/// CPU seconds of this process's waited-for children.
fn children_cpu() -> f64 {
    // SAFETY: an all-zero rusage is a valid out-value for getrusage to fill.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid out-pointer for the duration of the call.
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// The floor: `psql \copy` of the rows (as CSV) straight into `results`; returns (client CPU
/// s, wall s), the client being psql.
fn psql_copy(url: &str, rows: &[ProbeResult]) -> (f64, f64) {
    let mut store = ringwatch::store::open(&storage(url, 1)).expect("open store");
    store.open_info().expect("partitions");
    drop(store);
    let path = std::env::temp_dir().join(format!("pg-write-{}.csv", std::process::id()));
    let path_s = path.to_str().expect("utf-8 temp path").to_string();
    csv(&path_s, rows);
    let c0 = children_cpu();
    let t = Instant::now();
    let status = std::process::Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", url, "-c"])
        .arg(format!("\\copy results FROM '{path_s}' CSV"))
        .status()
        .expect("run psql");
    let wall = t.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    assert!(status.success(), "psql \\copy failed");
    (children_cpu() - c0, wall)
}

/// The rows as CSV for `psql \copy results FROM .. CSV`.
fn csv(path: &str, rows: &[ProbeResult]) {
    use std::io::Write;
    let f = std::fs::File::create(path).expect("csv file");
    let mut out = std::io::BufWriter::new(f);
    let us = |d: Duration| d.as_micros();
    for r in rows {
        writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{}",
            r.service_id.get(),
            r.scheduled_at.0,
            r.started_at.0,
            us(r.timings.total),
            us(r.timings.connect),
            us(r.timings.tls),
            us(r.timings.first_byte),
            r.status_code.map(|c| c.to_string()).unwrap_or_default(),
            r.bytes,
            r.error_kind.map(|k| k.as_str()).unwrap_or_default(),
            r.error.as_deref().unwrap_or_default(),
        )
        .expect("write csv");
    }
    out.flush().expect("flush csv");
}

fn main() {
    let mode = std::env::var("MODE").unwrap_or_else(|_| "writer".into());
    let batch = env_usize("BATCH", 65_536);
    let rows = rows();
    let n = rows.len();
    let url = std::env::var("PG_URL").expect("PG_URL=postgres://...");
    let pg_pid: u32 = std::env::var("PG_PID")
        .ok()
        .and_then(|p| p.parse().ok())
        .expect("PG_PID=postmaster pid");
    let server0 = server_cpu(pg_pid);
    let (client, wall) = match mode.as_str() {
        "writer" => writer(&url, batch, rows),
        "unnest" => unnest(&url, batch, rows),
        "copy" => copy(&url, batch, rows),
        "psql" => psql_copy(&url, &rows),
        other => panic!("unknown MODE {other}"),
    };
    let server = server_cpu(pg_pid) - server0;
    println!(
        "mode={mode} rows={n} batch={batch} wall_s={wall:.2} rows_per_s={:.0} client_cpu_s={client:.2} \
         server_cpu_s={server:.2} rows_per_cpu_s={:.0}",
        n as f64 / wall,
        n as f64 / (client + server)
    );
}
