//! The PostgreSQL backend end to end with the real binary: start-up errors, `ringwatch
//! migrate`, and a database restart while probing (on a private server) losing nothing.

mod common;

use std::process::{Command, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::pg::{self, PgDb, PrivatePg};
use common::*;

/// Runs `ringwatch <args> --config <yaml>` to completion; returns (exit code, stdout, stderr,
/// elapsed).
fn run_cli(args: &[&str], yaml: &str) -> (Option<i32>, String, String, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("rw.yaml");
    std::fs::write(&path, yaml).expect("write config");
    let started = Instant::now();
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(&path)
        .env_remove("RUST_LOG")
        .env_remove("PGPASSWORD")
        .env_remove("RINGWATCH_PG_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .expect("run ringwatch");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        started.elapsed(),
    )
}

fn pg_config(port: u16, url: &str, storage_extra: &str) -> String {
    format!(
        "server: {{listen: 127.0.0.1:{port}, shards: 1, pin: false}}\n\
         storage: {{kind: postgres, url: '{url}'{storage_extra}}}\n\
         log: {{level: warn}}\n"
    )
}

/// The last stderr line: what `ringwatch run` prints when it cannot start.
fn last_line(stderr: &str) -> &str {
    stderr.lines().next_back().unwrap_or("")
}

#[test]
fn start_fails_with_one_line_naming_an_unreachable_or_silent_server() {
    // Nothing listens: refused at once.
    let port = free_port();
    let url = format!("postgres://rw@127.0.0.1:{port}/rw");
    let (code, _, err, took) = run_cli(&["run"], &pg_config(free_port(), &url, ""));
    assert_eq!(code, Some(1), "{err}");
    let line = last_line(&err);
    assert!(
        line.starts_with("error: cannot reach store postgres://rw@127.0.0.1:"),
        "{err}"
    );
    assert!(line.contains("refused"), "{err}");
    assert!(took < Duration::from_secs(5), "{took:?}");

    // Something accepts the TCP connection but never answers: bounded by connect_timeout.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!(
        "postgres://rw@127.0.0.1:{}/rw",
        silent.local_addr().expect("addr").port()
    );
    let (code, _, err, took) = run_cli(
        &["run"],
        &pg_config(free_port(), &url, ", connect_timeout: 1s"),
    );
    assert_eq!(code, Some(1), "{err}");
    assert!(
        last_line(&err).contains("no connection within 1s (storage.connect_timeout)"),
        "{err}"
    );
    assert!(took < Duration::from_secs(6), "{took:?}");
    drop(silent);

    // A bad key is refused by `check`, naming it.
    let (code, _, err, _) = run_cli(
        &["check"],
        &pg_config(free_port(), "postgres://rw@db/rw", ", pool: 0"),
    );
    assert_eq!(code, Some(2));
    assert!(err.contains("storage.pool"), "{err}");
    let (code, _, err, _) = run_cli(&["check"], &pg_config(free_port(), "postgres://db/rw", ""));
    assert_eq!(code, Some(2));
    assert!(
        err.contains("storage.url") && err.contains("no user"),
        "{err}"
    );
}

#[test]
fn start_fails_with_one_line_naming_missing_permissions() {
    let db = PgDb::create();
    let role = format!("rw_noperm_{}", std::process::id());
    let admin = pg::admin_url();
    pg::exec(
        &admin,
        &format!("DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN"),
    )
    .expect("create role");
    // PostgreSQL 15+ gives PUBLIC no CREATE on schema public: the role can connect, not
    // create the schema.
    let url = pg::with_db(&admin, &db.name).replace("postgres@", &format!("{role}@"));
    let (code, _, err, _) = run_cli(&["run"], &pg_config(free_port(), &url, ""));
    let _ = pg::exec(&admin, &format!("DROP ROLE IF EXISTS {role}"));
    assert_eq!(code, Some(1), "{err}");
    let line = last_line(&err);
    assert!(line.starts_with("error: cannot open store"), "{err}");
    assert!(line.contains("permission denied"), "{err}");
}

#[test]
fn migrate_applies_the_schema_once() {
    let db = PgDb::create();
    let yaml = pg_config(free_port(), &db.url, "");
    let (code, out, err, _) = run_cli(&["migrate"], &yaml);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains("applied V1__initial") && out.contains("schema version 1"),
        "{out}"
    );
    let (code, out, err, _) = run_cli(&["migrate"], &yaml);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("nothing to apply"), "{out}");
    assert_eq!(
        pg::scalar(&db.url, "SELECT COUNT(*) FROM refinery_schema_history"),
        1
    );
}

/// `written=N dropped=M` of the "store drained" log line printed at shutdown.
fn drained(stderr: &str) -> (i64, i64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("store drained"))
        .unwrap_or_else(|| panic!("no 'store drained' line:\n{stderr}"));
    let field = |name: &str| -> i64 {
        let plain = strip_ansi(line);
        plain
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name}= in {plain}"))
    };
    (field("written"), field("dropped"))
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// PostgreSQL stops for a few seconds while ringwatch probes: /readyz and /metrics say so,
/// results buffer up to the queue bound (the excess is counted as dropped), the writer
/// reconnects, and after the restart every accepted result and every transition is stored.
#[test]
fn a_database_restart_while_probing_loses_nothing_accepted() {
    let server = PrivatePg::start();
    pg::exec(&server.url("postgres"), "CREATE DATABASE rw").expect("create db");
    let url = server.url("rw");
    let target = Target::start();
    let port = free_port();
    let mut services = String::from("services:\n");
    for i in 0..10 {
        services.push_str(&format!(
            "  - {{name: steady-{i}, url: \"{}\", interval: 100ms, timeout: 80ms}}\n",
            target.url(&format!("/ok{i}"))
        ));
    }
    for name in ["flip-a", "flip-b"] {
        services.push_str(&format!(
            "  - {{name: {name}, url: \"{}\", interval: 100ms, timeout: 80ms}}\n",
            target.url("/switch")
        ));
    }
    // 12 services at 10 probes/s fill a 400-record queue in ~3.3 s: the outage below lasts
    // longer, so the bound is reached and the excess dropped.
    let cfg = format!(
        "server: {{listen: 127.0.0.1:{port}, shards: 2, pin: false, shutdown_grace: 5s}}\n\
         storage: {{kind: postgres, url: '{url}', flush_interval: 50ms, queue_capacity: 400, \
         batch_size: 100, connect_timeout: 2s}}\n\
         log: {{level: info}}\n{services}"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(
        eventually(Duration::from_secs(10), || rw
            .metric("ringwatch_services{status=\"up\"}")
            == 12.0),
        "services did not come up"
    );
    let before = rw.metric("ringwatch_store_written_total");
    assert!(before > 0.0);

    server.down();
    // Transitions during the outage, early (before the queue fills).
    target.status.store(500, Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(5), || rw.get("/readyz")
            == (503, "store unavailable\n".to_string())),
        "readyz never reported the store"
    );
    assert_eq!(rw.metric("ringwatch_store_up"), 0.0);
    assert!(
        eventually(Duration::from_secs(8), || rw
            .metric("ringwatch_store_dropped_total")
            > 0.0),
        "the queue bound was never reached"
    );
    assert!(rw.metric("ringwatch_store_failed_batches_total") > 0.0);

    server.up();
    assert!(
        eventually(Duration::from_secs(15), || rw.get("/readyz").0 == 200),
        "readyz did not recover"
    );
    assert_eq!(rw.metric("ringwatch_store_up"), 1.0);
    assert!(rw.metric("ringwatch_store_reconnects_total") >= 1.0);
    assert!(eventually(Duration::from_secs(10), || rw
        .metric("ringwatch_store_queue_depth")
        < 50.0));
    // And transitions after the restart.
    target.status.store(200, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || rw
        .metric("ringwatch_services{status=\"up\"}")
        == 12.0));
    let latest_seq = rw.metric("ringwatch_transition_seq") as i64;
    let dropped_seen = rw.metric("ringwatch_store_dropped_total") as i64;
    let (status, log) = rw.terminate_with_log();
    assert_eq!(status.code(), Some(0), "{log}");
    let (written, dropped) = drained(&log);
    assert!(dropped >= dropped_seen && dropped > 0, "{dropped}");

    // Every committed record is in the database exactly once; every numbered transition too.
    let results = pg::scalar(&url, "SELECT COUNT(*) FROM results");
    let transitions = pg::column(&url, "SELECT seq FROM transitions ORDER BY seq");
    assert!(latest_seq >= 2 + 12, "{latest_seq}");
    assert_eq!(
        transitions,
        (1..=latest_seq).collect::<Vec<_>>(),
        "a transition is missing"
    );
    assert!(results > before as i64);
    assert_eq!(
        results + transitions.len() as i64,
        written,
        "committed records and stored rows differ"
    );
}
