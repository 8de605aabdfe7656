//! What an operator must be able to trust about transitions, against the real binary: none is
//! dropped to make room for results, no seq a client saw is reused after a crash, and a
//! restart re-announces nothing that did not change.

mod common;
mod ws_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;
use ws_support::Ws;

const LONG: Duration = Duration::from_secs(20);

/// `n` services probing the target's `/switch` every 100 ms, on a tiny results lane.
fn flapping_config(t: &Target, port: u16, db: &Path, n: usize, storage: &str) -> String {
    let mut cfg = base_config(port, db, 2, "");
    cfg = cfg.replace(
        "  flush_interval: 50ms\n",
        &format!("  flush_interval: 50ms\n{storage}"),
    );
    cfg.push_str("services:\n");
    for i in 0..n {
        cfg.push_str(&format!(
            "  - name: flap{i}\n    url: {}\n    interval: 100ms\n    timeout: 80ms\n",
            t.url("/switch")
        ));
    }
    cfg
}

/// Flips the target between 200 and 500 every `every` until dropped.
struct Flipper {
    stop: Arc<AtomicBool>,
}

impl Flipper {
    fn start(t: &Target, every: Duration) -> Flipper {
        let stop = Arc::new(AtomicBool::new(false));
        let (s, status) = (stop.clone(), t.status.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                let next = if status.load(Ordering::Relaxed) == 200 {
                    500
                } else {
                    200
                };
                status.store(next, Ordering::Relaxed);
                std::thread::sleep(every);
            }
        });
        Flipper { stop }
    }
}

impl Drop for Flipper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A transition as a client saw it: seq -> (service, from, to, at).
type Seen = BTreeMap<u64, (String, String, String, String)>;

/// Reads transition messages from `ws` for `d`, adding them to `seen`.
fn watch(ws: &mut Ws, d: Duration, seen: &mut Seen) {
    let deadline = Instant::now() + d;
    while Instant::now() < deadline {
        let Some(m) = ws.next_json(Duration::from_millis(100)) else {
            continue;
        };
        if m["type"] != "transition" {
            continue;
        }
        let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
        let seq = m["seq"].as_u64().expect("seq");
        let row = (s("service"), s("from"), s("to"), s("at"));
        if let Some(prev) = seen.insert(seq, row.clone()) {
            assert_eq!(
                prev, row,
                "seq {seq} delivered twice with different content"
            );
        }
    }
}

/// Every stored transition: seq -> (service, from, to, at).
fn stored(db_path: &Path) -> Seen {
    let conn = db(db_path);
    let mut st = conn
        .prepare("SELECT seq, service, from_status, to_status, at FROM transitions ORDER BY seq")
        .expect("prepare");
    let rows = st
        .query_map([], |r| {
            let at: i64 = r.get(4)?;
            Ok((
                r.get::<_, i64>(0)? as u64,
                (r.get(1)?, r.get(2)?, r.get(3)?, at),
            ))
        })
        .expect("query");
    rows.map(|r| r.expect("row"))
        .map(|(seq, (svc, from, to, at))| (seq, (svc, from, to, rfc3339(at))))
        .collect()
}

/// The `at` format of the stream (RFC 3339 UTC, milliseconds).
fn rfc3339(ms: i64) -> String {
    ringwatch::model::UnixMillis(ms).to_rfc3339()
}

/// Holds SQLite's write lock from another connection for `d` (the writer cannot commit).
fn hold_write_lock(db_path: &Path, d: Duration) -> std::thread::JoinHandle<()> {
    let conn = db(db_path);
    conn.execute_batch("BEGIN EXCLUSIVE").expect("lock");
    std::thread::spawn(move || {
        std::thread::sleep(d);
        let _ = conn.execute_batch("COMMIT");
    })
}

fn assert_gap_free(store: &Seen) {
    let seqs: Vec<u64> = store.keys().copied().collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want, "stored seqs are not gap-free");
}

#[test]
fn transitions_survive_a_full_results_lane() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("rw.db");
    let port = free_port();
    let storage = "  queue_capacity: 1\n  batch_size: 1\n";
    let rw = Ringwatch::start_in(
        dir.path(),
        port,
        &flapping_config(&target, port, &db_path, 20, storage),
    );
    let mut ws = Ws::connect(rw.addr);
    ws.subscribe(r#"{"op":"subscribe"}"#);
    let flip = Flipper::start(&target, Duration::from_millis(250));
    let mut seen = Seen::new();
    watch(&mut ws, Duration::from_millis(800), &mut seen);
    // The writer cannot commit for a while: results overflow their one-slot lane, and the
    // transitions decided meanwhile wait for their commit.
    let lock = hold_write_lock(&db_path, Duration::from_millis(1500));
    watch(&mut ws, Duration::from_millis(3000), &mut seen);
    lock.join().expect("lock thread");
    drop(flip);
    watch(&mut ws, Duration::from_millis(500), &mut seen);
    let dropped = rw.metric("ringwatch_store_dropped_total");
    assert!(rw.terminate().success());
    let store = stored(&db_path);
    assert!(dropped > 0.0, "the results lane never overflowed");
    assert!(seen.len() >= 20, "too few transitions seen: {}", seen.len());
    assert_gap_free(&store);
    for (seq, row) in &seen {
        assert_eq!(
            store.get(seq),
            Some(row),
            "seq {seq} seen by a client but not stored"
        );
    }
}

#[test]
fn a_seq_a_client_saw_is_never_reused_after_kill_9() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("rw.db");
    let port = free_port();
    let cfg = flapping_config(&target, port, &db_path, 10, "");
    let mut rw = Ringwatch::start_in(dir.path(), port, &cfg);
    let mut ws = Ws::connect(rw.addr);
    ws.subscribe(r#"{"op":"subscribe"}"#);
    let flip = Flipper::start(&target, Duration::from_millis(250));
    let mut seen = Seen::new();
    watch(&mut ws, Duration::from_millis(800), &mut seen);
    // Hold the writer up, keep flapping, then crash while it is held.
    let lock = hold_write_lock(&db_path, Duration::from_millis(2500));
    watch(&mut ws, Duration::from_millis(2000), &mut seen);
    rw.child.kill().expect("kill -9");
    let _ = rw.child.wait();
    lock.join().expect("lock thread");
    drop(rw);
    // Restart on the same database and watch the new transitions too.
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    let mut ws = Ws::connect(rw.addr);
    ws.subscribe(r#"{"op":"subscribe"}"#);
    watch(&mut ws, Duration::from_millis(1500), &mut seen);
    drop(flip);
    assert!(rw.terminate().success());
    let store = stored(&db_path);
    assert!(seen.len() >= 10, "too few transitions seen: {}", seen.len());
    assert_gap_free(&store);
    for (seq, row) in &seen {
        assert_eq!(
            store.get(seq),
            Some(row),
            "seq {seq} was shown to a client and then stored as something else (or not at all)"
        );
    }
}

/// `GET /api/v1/services/{name}` -> (status, status_since).
fn status(rw: &Ringwatch, name: &str) -> (String, String) {
    let (code, body) = rw.get(&format!("/api/v1/services/{name}"));
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).expect("json");
    (
        v["status"].as_str().unwrap_or_default().to_string(),
        v["status_since"].as_str().unwrap_or_default().to_string(),
    )
}

#[test]
fn a_restart_keeps_statuses_and_announces_nothing_new() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("rw.db");
    let port = free_port();
    let mut cfg = base_config(port, &db_path, 2, "");
    cfg.push_str(&format!(
        "services:\n  - {{name: up1, url: '{}', interval: 100ms, timeout: 80ms}}\n  - {{name: down1, url: '{}', interval: 100ms, timeout: 80ms, failure_threshold: 2}}\n",
        target.url("/ok"),
        target.url("/missing-500"),
    ));
    target.status.store(500, Ordering::Relaxed);
    let cfg = cfg.replace("/missing-500", "/switch");
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(eventually(LONG, || rw.metric("ringwatch_transition_seq") == 2.0));
    let before = (status(&rw, "up1"), status(&rw, "down1"));
    assert_eq!((before.0 .0.as_str(), before.1 .0.as_str()), ("up", "down"));
    assert!(rw.terminate().success());

    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    // Straight after start, before any probe could decide anything.
    assert_eq!((status(&rw, "up1"), status(&rw, "down1")), before);
    let mut ws = Ws::connect(rw.addr);
    ws.subscribe(r#"{"op":"subscribe"}"#);
    let deadline = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < deadline {
        if let Some(m) = ws.next_json(Duration::from_millis(100)) {
            assert_ne!(m["type"], "transition", "restart announced {m}");
        }
    }
    assert_eq!(rw.metric("ringwatch_transition_seq"), 2.0);
    assert_eq!(rw.metric("ringwatch_services{status=\"unknown\"}"), 0.0);
    assert!(rw.terminate().success());
    assert_eq!(stored(&db_path).len(), 2);
}

/// Runs `ringwatch run` on `cfg` (written into `dir`) expecting it to refuse to start.
fn refused(dir: &Path, cfg: &str) -> String {
    let path = dir.join("second.yaml");
    std::fs::write(&path, cfg).expect("write config");
    let mut child = std::process::Command::new(bin())
        .args(["run", "--config"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run second instance");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("a second instance started and kept running");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(!status.success(), "a second instance exited successfully");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().expect("stderr"), &mut err)
        .expect("stderr");
    err
}

#[test]
fn a_second_instance_on_the_same_port_or_database_refuses_to_start() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("rw.db");
    let port = free_port();
    let services = format!(
        "services:\n  - {{name: a, url: '{}', interval: 1s, timeout: 500ms}}\n",
        target.url("/ok")
    );
    let rw = Ringwatch::start_in(
        dir.path(),
        port,
        &(base_config(port, &db_path, 2, "") + &services),
    );
    let err = refused(
        dir.path(),
        &(base_config(port, &dir.path().join("other.db"), 2, "") + &services),
    );
    assert!(err.contains(&format!("port {port}")), "{err}");
    let err = refused(
        dir.path(),
        &(base_config(free_port(), &db_path, 2, "") + &services),
    );
    assert!(
        err.contains("rw.db") && err.contains("storage.path"),
        "{err}"
    );
    // The first instance kept serving every request.
    for _ in 0..20 {
        assert_eq!(rw.get("/readyz").0, 200);
    }
    assert!(rw.terminate().success());
    // Once it is gone the same configuration starts.
    let again = Ringwatch::start_in(
        dir.path(),
        port,
        &(base_config(port, &dir.path().join("other.db"), 2, "") + &services),
    );
    assert!(again.terminate().success());
}
