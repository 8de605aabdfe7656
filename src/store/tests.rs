//! Store tests against real SQLite files in temporary directories.

use std::num::NonZeroU32;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};

use super::sqlite::SqliteStore;
use super::writer::Tuning;
use super::*;
use crate::config::{StorageConfig, StorageKind};
use crate::model::{
    ErrorKind, Expect, Method, PhaseTimeouts, Scheme, ServiceId, Source, Status, Target, Timings,
    UnixMillis,
};

fn cfg(path: &Path, capacity: usize, batch: usize, flush: Duration) -> StorageConfig {
    StorageConfig {
        kind: StorageKind::Sqlite {
            path: path.to_path_buf(),
        },
        queue_capacity: capacity,
        batch_size: batch,
        flush_interval: flush,
        retention: None,
    }
}

fn fast() -> Tuning {
    Tuning {
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(40),
        shutdown_budget: Duration::from_millis(300),
        prune_every: Duration::from_millis(20),
        prune_chunk: 3,
    }
}

pub(crate) fn result(sid: ServiceId, at: i64) -> ProbeResult {
    ProbeResult {
        service_id: sid,
        scheduled_at: UnixMillis(at),
        started_at: UnixMillis(at + 3),
        timings: Timings {
            connect: Duration::from_micros(150),
            tls: Duration::from_micros(900),
            first_byte: Duration::from_micros(2500),
            total: Duration::from_micros(4000),
        },
        status_code: Some(200),
        bytes: 512,
        error_kind: None,
        error: None,
    }
}

pub(crate) fn transition(seq: u64, sid: ServiceId, at: i64) -> Transition {
    Transition {
        seq,
        service_id: sid,
        service: format!("svc-{}", sid.get() % 100),
        from: Status::Up,
        to: Status::Down,
        at: UnixMillis(at),
        latency: Duration::from_millis(12),
        status_code: Some(503),
        error: Some("status 503".into()),
    }
}

pub(crate) fn spec(name: &str, source: Source) -> ServiceSpec {
    ServiceSpec {
        id: ServiceId::from_name(name),
        name: name.into(),
        target: Target {
            scheme: Scheme::Https,
            host: "example.com".into(),
            port: 443,
            path: "/health".into(),
        },
        url: "https://example.com/health".into(),
        method: Method::Get,
        headers: vec![("x-probe".into(), "ringwatch".into())],
        body: None,
        interval: Duration::from_secs(30),
        timeout: Duration::from_millis(2500),
        phase_timeouts: PhaseTimeouts {
            connect: Duration::from_secs(1),
            tls: Duration::from_secs(1),
            head: Duration::from_secs(2),
        },
        jitter: 0.1,
        tags: vec!["prod".into()],
        expect: Expect {
            body_contains: Some("ok".into()),
            max_latency: Some(Duration::from_secs(60)),
            ..Expect::default()
        },
        failure_threshold: NonZeroU32::new(3).unwrap(),
        success_threshold: NonZeroU32::new(1).unwrap(),
        paused: false,
        tls: None,
        max_body_bytes: 65536,
        follow_redirects: 0,
        source,
    }
}

fn sqlite(path: &Path) -> SqliteStore {
    SqliteStore::open(path).unwrap()
}

/// A real SqliteStore whose appends wait until the test opens the gate (drops its sender),
/// announcing each append on `entered` first.
struct GatedStore {
    inner: SqliteStore,
    gate: Receiver<()>,
    entered: Sender<()>,
}

impl StoreWriter for GatedStore {
    fn open_info(&mut self) -> Result<StoreInfo, StoreError> {
        self.inner.open_info()
    }
    fn append(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        let _ = self.entered.try_send(());
        let _ = self.gate.recv();
        self.inner.append(batch)
    }
    fn sync_services(&mut self, services: &[ServiceSpec]) -> Result<(), StoreError> {
        self.inner.sync_services(services)
    }
}

/// A gated store on `path`, the gate (drop it to open) and the append announcements.
fn gated(path: &Path) -> (GatedStore, Sender<()>, Receiver<()>) {
    let (gate_tx, gate_rx) = bounded::<()>(0);
    let (entered_tx, entered_rx) = bounded(1);
    let store = GatedStore {
        inner: sqlite(path),
        gate: gate_rx,
        entered: entered_tx,
    };
    (store, gate_tx, entered_rx)
}

/// A real SqliteStore whose first `fail` appends fail (like a full disk), and which records the
/// size of every batch it is given.
struct FlakyStore {
    inner: SqliteStore,
    fail: usize,
    batches: Arc<Mutex<Vec<usize>>>,
}

impl StoreWriter for FlakyStore {
    fn open_info(&mut self) -> Result<StoreInfo, StoreError> {
        self.inner.open_info()
    }
    fn append(&mut self, batch: &[Record]) -> Result<(), StoreError> {
        self.batches.lock().unwrap().push(batch.len());
        if self.fail > 0 {
            self.fail -= 1;
            return Err(StoreError::Io {
                op: "append",
                reason: "injected: database or disk is full".into(),
            });
        }
        self.inner.append(batch)
    }
    fn sync_services(&mut self, services: &[ServiceSpec]) -> Result<(), StoreError> {
        self.inner.sync_services(services)
    }
    fn prune(&mut self, cutoff: UnixMillis, max_rows: usize) -> Result<Pruned, StoreError> {
        self.inner.prune(cutoff, max_rows)
    }
}

fn flaky(path: &Path, fail: usize) -> (FlakyStore, Arc<Mutex<Vec<usize>>>) {
    let batches = Arc::new(Mutex::new(Vec::new()));
    let store = FlakyStore {
        inner: sqlite(path),
        fail,
        batches: batches.clone(),
    };
    (store, batches)
}

#[test]
fn duplicate_result_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let sid = ServiceId::from_name("api");
    s.append(&[Record::Result(result(sid, 1000))]).unwrap();
    let mut dup = result(sid, 1000);
    dup.status_code = Some(500);
    s.append(&[Record::Result(dup), Record::Result(result(sid, 1000))])
        .unwrap();
    assert_eq!(s.count_results(sid).unwrap(), 1);
    // The first write wins: a retried batch never rewrites history.
    assert_eq!(s.results_for(sid, 10).unwrap()[0].status_code, Some(200));
}

/// Batches are inserted sorted and in multi-row chunks: a large, shuffled batch with
/// duplicates (in and across chunks, and against stored rows) keeps every distinct row, with
/// all columns, and the first write of each key wins.
#[test]
fn large_shuffled_batch_keeps_every_row_and_first_write_wins() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let sids: Vec<ServiceId> = (0..7)
        .map(|i| ServiceId::from_name(&format!("s{i}")))
        .collect();
    s.append(&[Record::Result(result(sids[0], 5))]).unwrap();
    let mut rng = fastrand::Rng::with_seed(3);
    let mut batch = Vec::new();
    for at in 0..100 {
        for sid in &sids {
            batch.push(Record::Result(result(*sid, at)));
        }
    }
    rng.shuffle(&mut batch);
    // Later duplicates of keys already in the batch (or stored) must lose.
    for sid in &sids {
        let mut dup = result(*sid, 5);
        dup.status_code = Some(500);
        dup.error_kind = Some(ErrorKind::Status);
        dup.error = Some("late duplicate".into());
        batch.push(Record::Result(dup));
    }
    batch.push(Record::Transition(transition(1, sids[1], 7)));
    s.append(&batch).unwrap();
    for sid in &sids {
        assert_eq!(s.count_results(*sid).unwrap(), 100);
        let rows = s.results_for(*sid, 200).unwrap();
        assert!(rows
            .iter()
            .all(|r| r.status_code == Some(200) && r.error.is_none()));
        let want = result(*sid, 42);
        let got = rows.iter().find(|r| r.scheduled_at.0 == 42).unwrap();
        assert_eq!(
            (got.started_at, got.timings, got.bytes, got.error_kind),
            (want.started_at, want.timings, want.bytes, None)
        );
    }
    assert_eq!(s.count_transitions().unwrap(), 1);
}

#[test]
fn duplicate_seq_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let a = ServiceId::from_name("a");
    let b = ServiceId::from_name("b");
    s.append(&[Record::Transition(transition(7, a, 1))])
        .unwrap();
    s.append(&[
        Record::Transition(transition(7, b, 2)),
        Record::Transition(transition(8, b, 3)),
    ])
    .unwrap();
    let all = s.transitions_since(0, 100).unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!((all[0].seq, all[0].service_id), (7, a));
    assert_eq!(all[1].seq, 8);
}

#[test]
fn max_seq_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    {
        let mut s = sqlite(&path);
        assert_eq!(s.open_info().unwrap().max_seq, 0);
        let sid = ServiceId::from_name("a");
        let recs: Vec<Record> = [3, 41, 17]
            .into_iter()
            .map(|seq| Record::Transition(transition(seq, sid, seq as i64)))
            .collect();
        s.append(&recs).unwrap();
    }
    let mut s = sqlite(&path);
    assert_eq!(s.open_info().unwrap().max_seq, 41);
    // And through the writer, as the shards see it at start-up.
    let (w, _h, info) =
        Writer::spawn(Box::new(s), &cfg(&path, 8, 8, Duration::from_millis(5))).unwrap();
    assert_eq!(info.max_seq, 41);
    w.finish().unwrap();
}

#[test]
fn rows_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let sid = ServiceId::from_name("api");
    let mut bad = result(sid, 2000);
    bad.status_code = None;
    bad.error_kind = Some(ErrorKind::Timeout);
    bad.error = Some("probe timed out after 2.5s".into());
    let mut recs = vec![Record::Result(result(sid, 1000)), Record::Result(bad)];
    recs.extend((1..=5).map(|q| Record::Transition(transition(q, sid, q as i64))));
    s.append(&recs).unwrap();

    let got = s.results_for(sid, 10).unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].scheduled_at, UnixMillis(2000)); // newest first
    assert_eq!(got[0].error_kind, Some(ErrorKind::Timeout));
    assert_eq!(got[0].status_code, None);
    assert_eq!(got[1].timings, result(sid, 1000).timings);
    assert_eq!(got[1].started_at, UnixMillis(1003));
    assert_eq!(got[1].bytes, 512);

    let page = s
        .results_range(sid, None, Some(UnixMillis(2000)), 10)
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].scheduled_at, UnixMillis(1000));

    let t = s.transitions_since(2, 2).unwrap();
    assert_eq!(t.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![3, 4]);
    assert_eq!(t[0].latency, Duration::from_millis(12));
    assert_eq!((t[0].from, t[0].to), (Status::Up, Status::Down));
    let t = s.transitions_for(sid, Some(5), 2).unwrap();
    assert_eq!(t.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![4, 3]);
    assert_eq!(s.count_transitions().unwrap(), 5);
}

#[test]
fn batching_writes_all_ten_thousand() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let (store, batches) = flaky(&path, 0);
    let c = cfg(&path, 10_000, 256, Duration::from_millis(10));
    let (w, h, _) = Writer::spawn(Box::new(store), &c).unwrap();
    let sid = ServiceId::from_name("bulk");
    for i in 0..10_000 {
        assert!(h.push_result(result(sid, i)));
    }
    w.finish().unwrap();
    assert_eq!(h.counters.enqueued.load(Ordering::Relaxed), 10_000);
    assert_eq!(h.counters.written.load(Ordering::Relaxed), 10_000);
    assert_eq!(h.counters.dropped.load(Ordering::Relaxed), 0);
    let sizes = batches.lock().unwrap().clone();
    assert_eq!(sizes.iter().sum::<usize>(), 10_000);
    assert!(sizes.iter().all(|&n| n <= 256), "batch over batch_size");
    assert_eq!(sqlite(&path).count_results(sid).unwrap(), 10_000);
    // After finish the queue is gone: a late push is dropped and counted, never blocks.
    assert!(!h.push_result(result(sid, 99_999)));
    assert_eq!(h.counters.dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn finish_drains_everything_queued() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let (store, gate_tx, entered_rx) = gated(&path);
    // An hour-long flush interval: only the stop signal can end the writer's wait promptly.
    let c = cfg(&path, 5000, 100, Duration::from_secs(3600));
    let (w, h, _) = Writer::spawn(Box::new(store), &c).unwrap();
    let sid = ServiceId::from_name("drain");
    // A full batch (100) is committed at once, without waiting for the flush interval.
    for i in 0..100 {
        assert!(h.push_result(result(sid, i)));
    }
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // The writer is stuck in its first append: everything below waits in the queue.
    for i in 100..4000 {
        assert!(h.push_result(result(sid, i)));
    }
    assert!(h.queue_depth() >= 3900);
    assert_eq!(h.queue_capacity(), 5000);
    drop(gate_tx);
    let t0 = Instant::now();
    w.finish().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(10));
    assert_eq!(sqlite(&path).count_results(sid).unwrap(), 4000);
    assert_eq!(h.counters.written.load(Ordering::Relaxed), 4000);
}

#[test]
fn finish_is_prompt_when_idle() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let c = cfg(&path, 16, 16, Duration::from_secs(3600));
    let (w, h, _) = Writer::spawn(Box::new(sqlite(&path)), &c).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(h.push_result(result(ServiceId::from_name("x"), 1)));
    let t0 = Instant::now();
    w.finish().unwrap();
    assert!(t0.elapsed() < Duration::from_secs(2));
    assert_eq!(
        sqlite(&path)
            .count_results(ServiceId::from_name("x"))
            .unwrap(),
        1
    );
}

#[test]
fn full_queue_drops_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let (store, gate_tx, entered_rx) = gated(&path);
    let c = cfg(&path, 10, 4, Duration::from_millis(5));
    let (w, h, _) = Writer::spawn(Box::new(store), &c).unwrap();
    let sid = ServiceId::from_name("full");
    assert!(h.push_result(result(sid, 0)));
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut accepted = 1u64;
    let mut refused = 0u64;
    for i in 1..=100 {
        if h.push_result(result(sid, i)) {
            accepted += 1;
        } else {
            refused += 1;
        }
    }
    // The writer holds one record in append; the queue holds exactly its capacity.
    assert_eq!(accepted, 11);
    assert_eq!(refused, 90);
    assert_eq!(h.counters.dropped.load(Ordering::Relaxed), refused);
    assert_eq!(h.counters.enqueued.load(Ordering::Relaxed), accepted);
    drop(gate_tx);
    w.finish().unwrap();
    assert_eq!(h.counters.written.load(Ordering::Relaxed), accepted);
    assert_eq!(sqlite(&path).count_results(sid).unwrap(), accepted);
}

#[test]
fn failed_appends_are_retried_without_loss() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let (store, batches) = flaky(&path, 3);
    let c = cfg(&path, 1000, 50, Duration::from_millis(5));
    let (w, h, _) = Writer::spawn_tuned(Box::new(store), &c, fast()).unwrap();
    let sid = ServiceId::from_name("flaky");
    for i in 0..200 {
        assert!(h.push_result(result(sid, i)));
    }
    // Wait for the recovery before finishing, so the retries happen in normal running.
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.counters.written.load(Ordering::Relaxed) < 200 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    w.finish().unwrap();
    assert_eq!(h.counters.failed_batches.load(Ordering::Relaxed), 3);
    assert_eq!(h.counters.written.load(Ordering::Relaxed), 200);
    assert_eq!(sqlite(&path).count_results(sid).unwrap(), 200);
    let sizes = batches.lock().unwrap().clone();
    // The same batch was offered again after each failure.
    assert_eq!(sizes[0], sizes[1]);
    assert_eq!(sizes[1], sizes[2]);
    assert_eq!(sizes[2], sizes[3]);
    // Up again after the recovery, and each commit timed (failed attempts are not).
    assert!(h.counters.up());
    let commits = batches.lock().unwrap().len() as u64 - 3;
    assert_eq!(h.counters.batch_latency.snapshot().len(), commits);
}

/// While appends fail the store reads as down (what `/readyz` and `ringwatch_store_up`
/// report); the next commit clears it.
#[test]
fn a_failing_store_reads_down_until_the_next_commit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let (store, _) = flaky(&path, 2);
    let c = cfg(&path, 1000, 50, Duration::from_millis(5));
    let tuning = Tuning {
        backoff_min: Duration::from_millis(300),
        ..fast()
    };
    let (w, h, _) = Writer::spawn_tuned(Box::new(store), &c, tuning).unwrap();
    assert!(h.counters.up(), "up before any batch");
    assert!(h.push_result(result(ServiceId::from_name("d"), 1)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while h.counters.failed_batches.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(!h.counters.up(), "down after a failed append");
    let mut text = crate::metrics::Exposition::default();
    h.render(&mut text, 0);
    assert!(text.finish().contains("ringwatch_store_up 0"));
    while h.counters.written.load(Ordering::Relaxed) == 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(h.counters.up(), "up after the retry committed");
    let mut text = crate::metrics::Exposition::default();
    h.render(&mut text, 0);
    let text = text.finish();
    assert!(text.contains("ringwatch_store_up 1"), "{text}");
    assert!(
        text.contains("ringwatch_store_batch_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("ringwatch_store_reconnects_total 0"),
        "{text}"
    );
    w.finish().unwrap();
}

#[test]
fn failing_store_at_shutdown_gives_up_after_budget() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let (store, _) = flaky(&path, usize::MAX);
    let c = cfg(&path, 100, 10, Duration::from_millis(5));
    let (w, h, _) = Writer::spawn_tuned(Box::new(store), &c, fast()).unwrap();
    let sid = ServiceId::from_name("down");
    for i in 0..30 {
        assert!(h.push_result(result(sid, i)));
    }
    let t0 = Instant::now();
    let err = w.finish().unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert!(err.to_string().contains("disk is full"), "{err}");
    assert_eq!(h.counters.abandoned.load(Ordering::Relaxed), 30);
    assert_eq!(h.counters.written.load(Ordering::Relaxed), 0);
    assert!(h.counters.failed_batches.load(Ordering::Relaxed) >= 1);
}

#[test]
fn retention_deletes_old_rows_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let now = UnixMillis::now().0;
    let old = now - 2 * 3_600_000;
    let sids: Vec<ServiceId> = (0..4)
        .map(|i| ServiceId::from_name(&format!("svc{i}")))
        .collect();
    let mut recs = Vec::new();
    for sid in &sids {
        for k in 0..5 {
            recs.push(Record::Result(result(*sid, old + k)));
            recs.push(Record::Result(result(*sid, now - k)));
        }
    }
    for seq in 1..=6 {
        recs.push(Record::Transition(transition(
            seq,
            sids[0],
            old + seq as i64,
        )));
    }
    recs.push(Record::Transition(transition(7, sids[0], now)));
    s.append(&recs).unwrap();

    let cutoff = UnixMillis(now - 3_600_000);
    let mut total = 0;
    let mut steps = 0;
    loop {
        let p = s.prune(cutoff, 3).unwrap();
        assert!(p.deleted <= 3);
        total += p.deleted;
        steps += 1;
        if p.done {
            break;
        }
        assert!(steps < 100, "retention never finished");
    }
    assert_eq!(total, 4 * 5 + 6);
    for sid in &sids {
        let left = s.results_for(*sid, 100).unwrap();
        assert_eq!(left.len(), 5);
        assert!(left.iter().all(|r| r.scheduled_at.0 > cutoff.0));
    }
    let t = s.transitions_since(0, 100).unwrap();
    assert_eq!(t.iter().map(|t| t.seq).collect::<Vec<_>>(), vec![7]);
}

#[test]
fn retention_keeps_each_services_newest_transition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let mut s = sqlite(&path);
    let (a, b) = (ServiceId::from_name("a"), ServiceId::from_name("b"));
    let recs: Vec<Record> = (1..=4)
        .map(|q| Record::Transition(transition(q, a, q as i64)))
        .chain((5..=6).map(|q| Record::Transition(transition(q, b, q as i64))))
        .collect();
    s.append(&recs).unwrap();
    while !s.prune(UnixMillis::now(), 100).unwrap().done {}
    drop(s);
    let mut s = sqlite(&path);
    // The newest keeps max_seq; every service keeps the status it last changed to.
    assert_eq!(s.open_info().unwrap().max_seq, 6);
    assert_eq!(s.count_transitions().unwrap(), 2);
    let mut last: Vec<u64> = s.last_states().unwrap().iter().map(|l| l.seq).collect();
    last.sort_unstable();
    assert_eq!(last, vec![4, 6]);
}

/// Each service's latest transition survives retention (its status is restored from it at
/// start), however old; older ones of the same service go.
#[test]
fn retention_keeps_each_services_latest_transition() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let (a, b) = (ServiceId::from_name("a"), ServiceId::from_name("b"));
    s.append(&[
        Record::Transition(transition(1, a, 10)),
        Record::Transition(transition(2, b, 20)),
        Record::Transition(transition(3, a, 30)),
        Record::Transition(transition(4, a, 40)),
    ])
    .unwrap();
    while !s.prune(UnixMillis::now(), 100).unwrap().done {}
    let left: Vec<u64> = s
        .transitions_since(0, 10)
        .unwrap()
        .iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(left, vec![2, 4]);
    assert_eq!(s.last_states().unwrap().len(), 2);
}

#[test]
fn writer_runs_retention() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let sid = ServiceId::from_name("ret");
    let now = UnixMillis::now().0;
    let old = now - 3 * 3_600_000;
    {
        let mut s = sqlite(&path);
        let recs: Vec<Record> = (0..20)
            .map(|k| Record::Result(result(sid, old + k)))
            .chain((0..5).map(|k| Record::Result(result(sid, now - k))))
            .collect();
        s.append(&recs).unwrap();
    }
    let mut c = cfg(&path, 100, 10, Duration::from_millis(5));
    c.retention = Some(Duration::from_secs(3600));
    let (w, h, _) = Writer::spawn_tuned(Box::new(sqlite(&path)), &c, fast()).unwrap();
    let reader = SqliteStore::open_read_only(&path).unwrap();
    // The one recent record this test adds; pushed before the loop because retention may
    // finish before the loop's first count, and then the loop body never runs.
    assert!(h.push_result(result(sid, now + 1)));
    let deadline = Instant::now() + Duration::from_secs(5);
    while reader.count_results(sid).unwrap() > 6 && Instant::now() < deadline {
        // Keep batches flowing too: retention steps interleave with them.
        h.push_result(result(sid, now + 1));
        std::thread::sleep(Duration::from_millis(10));
    }
    w.finish().unwrap();
    assert_eq!(reader.count_results(sid).unwrap(), 6);
    assert_eq!(h.counters.pruned.load(Ordering::Relaxed), 20);
}

#[test]
fn sync_services_marks_removed_config_services_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let a = spec("alpha", Source::Config);
    let b = spec("beta", Source::Config);
    let c = spec("gamma", Source::Api);
    s.sync_services(&[a.clone(), b.clone(), c.clone()]).unwrap();
    s.append(&[
        Record::Result(result(b.id, 1)),
        Record::Result(result(b.id, 2)),
    ])
    .unwrap();

    s.sync_services(std::slice::from_ref(&a)).unwrap();
    let beta = s.service(b.id).unwrap().unwrap();
    assert!(
        beta.deleted_at.is_some(),
        "removed config service not deleted"
    );
    assert_eq!(s.count_results(b.id).unwrap(), 2, "results must be kept");
    assert!(s.service(c.id).unwrap().unwrap().deleted_at.is_none());
    let live: Vec<String> = s
        .services(false)
        .unwrap()
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(live, vec!["alpha", "gamma"]);
    assert_eq!(s.services(true).unwrap().len(), 3);

    let row = s.service(a.id).unwrap().unwrap();
    assert_eq!(
        (row.source.as_str(), row.url.as_str()),
        ("config", a.url.as_str())
    );
    let json: serde_json::Value = serde_json::from_str(&row.spec).unwrap();
    assert_eq!(json["name"], "alpha");
    assert_eq!(json["method"], "GET");
    assert_eq!(json["interval"], "30s");
    assert_eq!(json["timeout"], "2500ms");
    assert_eq!(json["tags"][0], "prod");
    assert_eq!(json["headers"]["x-probe"], "ringwatch");
    assert_eq!(json["expect"]["status"], "200-299");
    assert_eq!(json["expect"]["max_latency"], "1m");
    assert_eq!(json["failure_threshold"], 3);

    // Coming back in the config revives the row.
    s.sync_services(&[a, b.clone()]).unwrap();
    assert!(s.service(b.id).unwrap().unwrap().deleted_at.is_none());
}

#[test]
fn open_creates_directories_and_names_bad_paths() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b/rw.db");
    let c = cfg(&nested, 8, 8, Duration::from_millis(5));
    let mut store = open(&c).unwrap();
    assert_eq!(store.open_info().unwrap().max_seq, 0);
    assert!(nested.exists());

    let file = dir.path().join("plain");
    std::fs::write(&file, b"not a dir").unwrap();
    let bad = file.join("rw.db");
    let err = open(&cfg(&bad, 8, 8, Duration::from_millis(5)))
        .err()
        .unwrap();
    assert!(
        err.to_string().contains(&bad.display().to_string()),
        "{err}"
    );

    // A postgres server that is not there: a one-line error naming it, never the password.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let pg = StorageConfig {
        kind: StorageKind::Postgres(crate::config::PgConfig {
            host: crate::config::PgHost::Tcp("127.0.0.1".into()),
            port,
            user: "u".into(),
            dbname: "ringwatch".into(),
            url_password: Some(crate::config::PgPassword::new("secret")),
            password_file: None,
            application_name: "ringwatch".into(),
            pool: 1,
            connect_timeout: Duration::from_secs(2),
            query_timeout: Duration::from_secs(2),
        }),
        ..c
    };
    let err = open(&pg).err().unwrap().to_string();
    assert!(
        err.contains(&format!("postgres://u@127.0.0.1:{port}/ringwatch")),
        "{err}"
    );
    assert!(err.contains("refused"), "{err}");
    assert!(!err.contains("secret") && !err.contains('\n'), "{err}");
}

#[test]
fn newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    drop(sqlite(&path));
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA user_version = 99").unwrap();
    }
    let err = SqliteStore::open(&path).unwrap_err().to_string();
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn spawn_reports_open_errors() {
    struct Broken;
    impl StoreWriter for Broken {
        fn open_info(&mut self) -> Result<StoreInfo, StoreError> {
            Err(StoreError::Open {
                what: "/nowhere".into(),
                reason: "locked".into(),
            })
        }
        fn append(&mut self, _: &[Record]) -> Result<(), StoreError> {
            Ok(())
        }
        fn sync_services(&mut self, _: &[ServiceSpec]) -> Result<(), StoreError> {
            Ok(())
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let c = cfg(&dir.path().join("x.db"), 8, 8, Duration::from_millis(5));
    let err = Writer::spawn(Box::new(Broken), &c).err().unwrap();
    assert!(err.to_string().contains("/nowhere"));
}

#[test]
fn unrepresentable_record_is_skipped_not_retried_forever() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("rw.db"));
    let good = ServiceId::from_name("ok");
    let bad = ServiceId::from_raw(u64::MAX);
    s.append(&[
        Record::Result(result(bad, 1)),
        Record::Result(result(good, 1)),
        Record::Transition(transition(u64::MAX, good, 1)),
    ])
    .unwrap();
    assert_eq!(s.count_results(good).unwrap(), 1);
    assert_eq!(s.count_transitions().unwrap(), 0);
}

/// Throughput check: `cargo test --release --lib store::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let c = cfg(&path, 65_536, 1024, Duration::from_millis(10));
    let (w, h, _) = Writer::spawn(Box::new(sqlite(&path)), &c).unwrap();
    let n = 500_000i64;
    let t0 = Instant::now();
    for i in 0..n {
        let sid = ServiceId::from_name(&format!("s{}", i % 1000));
        while !h.push_result(result(sid, i)) {
            std::thread::yield_now();
        }
    }
    w.finish().unwrap();
    let secs = t0.elapsed().as_secs_f64();
    println!("{n} results in {secs:.2}s = {:.0}/s", n as f64 / secs);
}

#[test]
fn writer_syncs_services_on_its_thread() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let c = cfg(&path, 16, 16, Duration::from_secs(3600));
    let (w, _h, _) = Writer::spawn(Box::new(sqlite(&path)), &c).unwrap();
    let a = spec("alpha", Source::Config);
    let b = spec("beta", Source::Config);
    w.sync_services(vec![a.clone(), b.clone()], Duration::from_secs(5))
        .unwrap();
    w.sync_services(vec![a], Duration::from_secs(5)).unwrap();
    let reader = SqliteStore::open_read_only(&path).unwrap();
    let names: Vec<String> = reader
        .services(false)
        .unwrap()
        .into_iter()
        .map(|s| s.name)
        .collect();
    assert_eq!(names, vec!["alpha"]);
    assert!(reader.service(b.id).unwrap().unwrap().deleted_at.is_some());
    w.finish().unwrap();
}

#[test]
fn a_partial_batch_waits_for_the_flush_interval_then_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rw.db");
    let c = cfg(&path, 1000, 100, Duration::from_secs(2));
    let (w, h, _) = Writer::spawn(Box::new(sqlite(&path)), &c).unwrap();
    let sid = ServiceId::from_name("gather");
    assert!(h.push_result(result(sid, 0)));
    // Not committed record by record: the batch keeps filling until the interval ends.
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(sqlite(&path).count_results(sid).unwrap(), 0);
    let t0 = Instant::now();
    while sqlite(&path).count_results(sid).unwrap() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(10), "never committed");
        std::thread::sleep(Duration::from_millis(50));
    }
    w.finish().unwrap();
}

#[test]
fn last_states_are_each_services_latest_transition() {
    let dir = tempfile::tempdir().unwrap();
    let mut s = sqlite(&dir.path().join("ls.db"));
    let (a, b) = (ServiceId::from_name("a"), ServiceId::from_name("b"));
    let mut up = transition(2, b, 20);
    up.from = Status::Down;
    up.to = Status::Up;
    s.append(&[
        Record::Transition(transition(1, a, 10)),
        Record::Transition(up),
        Record::Transition(transition(3, a, 30)),
    ])
    .unwrap();
    let mut got = s.last_states().unwrap();
    got.sort_by_key(|l| l.seq);
    assert_eq!(
        got.iter()
            .map(|l| (l.service_id, l.status, l.since.0, l.seq))
            .collect::<Vec<_>>(),
        vec![(b, Status::Up, 20, 2), (a, Status::Down, 30, 3)]
    );
}

/// Collects what the writer publishes, with the store's row count at publish time.
struct Collect {
    path: std::path::PathBuf,
    out: Sender<(u64, u64)>,
}

impl Publish for Collect {
    fn transition(&mut self, t: &Transition, _spec: &Arc<ServiceSpec>, _born: Instant) {
        // Reading the store from here proves the transition was committed before publishing.
        let stored = sqlite(&self.path).count_transitions().unwrap();
        let _ = self.out.send((t.seq, stored));
    }
}

fn decided(sid: ServiceId, at: i64) -> TransitionRecord {
    let t = transition(0, sid, at);
    TransitionRecord {
        decided: crate::model::Decided {
            service_id: t.service_id,
            service: t.service,
            from: t.from,
            to: t.to,
            at: t.at,
            latency: t.latency,
            status_code: t.status_code,
            error: t.error,
        },
        spec: Arc::new(spec("svc", Source::Config)),
        born: Instant::now(),
    }
}

#[test]
fn transitions_are_numbered_after_the_stored_maximum_committed_then_published() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tr.db");
    {
        let mut s = sqlite(&path);
        s.open_info().unwrap();
        s.append(&[Record::Transition(transition(
            41,
            ServiceId::from_name("old"),
            1,
        ))])
        .unwrap();
    }
    let (tx, rx) = bounded(16);
    let publish = Box::new(Collect {
        path: path.clone(),
        out: tx,
    });
    // A long flush interval: transitions must not wait for a results batch to fill.
    let c = cfg(&path, 100, 100, Duration::from_secs(30));
    let sp = Writer::start(Box::new(sqlite(&path)), &c, fast(), publish).unwrap();
    assert_eq!(sp.latest.get(), 41);
    let sid = ServiceId::from_name("a");
    assert!(sp.handle.push_result(result(sid, 1)));
    for at in 0..3 {
        assert!(sp.handle.push_transition(decided(sid, at)).is_ok());
    }
    let got: Vec<(u64, u64)> = (0..3)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(2))
                .expect("published promptly")
        })
        .collect();
    // Gap-free after the stored maximum, each already in the store when published.
    assert_eq!(
        got.iter().map(|g| g.0).collect::<Vec<_>>(),
        vec![42, 43, 44]
    );
    // One row was there before: seq 42 is the 2nd row, and so on.
    assert!(
        got.iter().all(|(seq, stored)| *stored >= seq - 40),
        "{got:?}"
    );
    // `latest` moves right after the batch's publish.
    let deadline = Instant::now() + Duration::from_secs(2);
    while sp.latest.get() < 44 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(sp.latest.get(), 44);
    sp.writer.finish().unwrap();
    let r = sqlite(&path);
    assert_eq!(r.count_transitions().unwrap(), 4);
    assert_eq!(r.count_results(sid).unwrap(), 1);
}

#[test]
fn a_full_results_lane_never_costs_a_transition() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("full.db");
    let (store, gate_tx, entered_rx) = gated(&path);
    let c = cfg(&path, 4, 4, Duration::from_millis(5));
    let (w, h, _) = Writer::spawn(Box::new(store), &c).unwrap();
    let sid = ServiceId::from_name("flap");
    assert!(h.push_result(result(sid, 0)));
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // The writer is held in a commit: results overflow their lane, transitions queue.
    let mut dropped = 0;
    for i in 1..=50 {
        if !h.push_result(result(sid, i)) {
            dropped += 1;
        }
        assert!(h.push_transition(decided(sid, i)).is_ok());
    }
    assert!(dropped > 0);
    drop(gate_tx);
    w.finish().unwrap();
    let r = sqlite(&path);
    assert_eq!(r.count_transitions().unwrap(), 50);
    let seqs: Vec<u64> = r
        .transitions_since(0, 100)
        .unwrap()
        .iter()
        .map(|t| t.seq)
        .collect();
    assert_eq!(seqs, (1..=50).collect::<Vec<_>>());
    assert_eq!(h.counters.dropped.load(Ordering::Relaxed), dropped);
    assert_eq!(h.counters.deferred.load(Ordering::Relaxed), 0);
}

#[test]
fn a_full_transition_lane_hands_the_transition_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("lane.db");
    let (store, gate_tx, entered_rx) = gated(&path);
    let c = cfg(&path, 4, 4, Duration::from_millis(5));
    let (w, h, _) = Writer::spawn(Box::new(store), &c).unwrap();
    let sid = ServiceId::from_name("stuck");
    assert!(h.push_transition(decided(sid, 0)).is_ok());
    entered_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    let mut accepted = 1;
    while h.push_transition(decided(sid, accepted)).is_ok() {
        accepted += 1;
    }
    assert_eq!(accepted as usize, super::TRANSITION_LANE + 1);
    assert_eq!(h.counters.deferred.load(Ordering::Relaxed), 1);
    drop(gate_tx);
    w.finish().unwrap();
    assert_eq!(sqlite(&path).count_transitions().unwrap(), accepted as u64);
}
