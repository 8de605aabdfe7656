//! End-to-end tests of the `ringwatch` binary: real process, real sockets, real SQLite file.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

fn services_yaml(t: &Target, names_paths: &[(&str, &str)], extra: &str) -> String {
    let mut s = String::from("services:\n");
    for (name, path) in names_paths {
        s.push_str(&format!(
            "  - name: {name}\n    url: {}\n{extra}",
            t.url(path)
        ));
    }
    s
}

#[test]
fn every_service_is_probed_by_exactly_one_shard() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let names: Vec<(String, String)> = (0..40)
        .map(|i| (format!("svc-{i}"), format!("/svc/{i}")))
        .collect();
    let pairs: Vec<(&str, &str)> = names
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let cfg = base_config(port, &dir.path().join("rw.db"), 2, "")
        + &services_yaml(
            &target,
            &pairs,
            "    interval: 200ms\n    timeout: 100ms\n    jitter: 0%\n",
        );
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    std::thread::sleep(Duration::from_millis(2200));
    let s0 = rw.metric("ringwatch_shard_services{shard=\"0\"}");
    let s1 = rw.metric("ringwatch_shard_services{shard=\"1\"}");
    assert_eq!(s0 + s1, 40.0, "every service owned once");
    assert!(s0 > 0.0 && s1 > 0.0, "both shards own services: {s0} {s1}");
    assert!(rw.metric("ringwatch_shard_probes_total{shard=\"0\"}") > 0.0);
    assert!(rw.metric("ringwatch_shard_probes_total{shard=\"1\"}") > 0.0);
    // Probed by one shard: in 2.2 s at 200 ms each service gets at most ~12 probes; a service
    // owned twice would get about twice that.
    let served = target.served_map();
    for (_, path) in &names {
        let n = served.get(path).copied().unwrap_or(0);
        assert!((5..=13).contains(&n), "{path} probed {n} times");
    }
    assert_eq!(rw.terminate().code(), Some(0));
}

#[test]
fn paused_services_are_not_probed_and_hangs_do_not_delay_others() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = base_config(port, &dir.path().join("rw.db"), 1, "")
        + &format!(
            "services:\n\
  - {{name: paused, url: \"{}\", interval: 200ms, timeout: 100ms, paused: true}}\n\
  - {{name: hangs, url: \"{}\", interval: 3s, timeout: 2s}}\n\
  - {{name: fast, url: \"{}\", interval: 200ms, timeout: 100ms, jitter: 0%}}\n",
            target.url("/paused"),
            target.url("/hang"),
            target.url("/fast")
        );
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(target.served("/paused"), 0, "paused service was probed");
    // The hanging probe (up to 2 s) runs concurrently; the fast service keeps its schedule.
    let fast = target.served("/fast");
    assert!(
        fast >= 9,
        "fast service probed only {fast} times while another hung"
    );
    assert!(rw.metric("ringwatch_services_paused") == 1.0);
    let lag_p99 = rw.metric("ringwatch_schedule_lag_seconds{quantile=\"0.99\"}");
    assert!(lag_p99 < 0.5, "schedule lag p99 {lag_p99}s");
    assert_eq!(rw.terminate().code(), Some(0));
}

#[test]
fn transitions_follow_thresholds_and_seq_continues_after_restart() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("rw.db");
    let port = free_port();
    let cfg = base_config(port, &db_path, 1, "")
        + &format!(
            "services:\n  - {{name: flappy, url: \"{}\", interval: 100ms, timeout: 80ms, \
             failure_threshold: 3, success_threshold: 2}}\n",
            target.url("/switch")
        );
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(eventually(Duration::from_secs(5), || rw
        .metric("ringwatch_services{status=\"up\"}")
        == 1.0));
    target.status.store(503, Ordering::Relaxed);
    assert!(eventually(Duration::from_secs(5), || rw
        .metric("ringwatch_services{status=\"down\"}")
        == 1.0));
    assert_eq!(rw.terminate().code(), Some(0));

    let conn = db(&db_path);
    let rows: Vec<(i64, String, String, Option<String>)> = conn
        .prepare("SELECT seq, from_status, to_status, error FROM transitions ORDER BY seq")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!((rows[0].1.as_str(), rows[0].2.as_str()), ("unknown", "up"));
    assert_eq!((rows[1].1.as_str(), rows[1].2.as_str()), ("up", "down"));
    assert!(rows[1].3.as_deref().unwrap_or("").contains("503"));
    // DOWN needs three consecutive failures: at least three failed results precede it.
    let failed_before: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM results WHERE error_kind = 'status'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert!(failed_before >= 3);
    let last_seq = rows[1].0;
    drop(conn);

    // Restart on the same database: the next transition continues the sequence.
    target.status.store(200, Ordering::Relaxed);
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(eventually(Duration::from_secs(5), || rw
        .metric("ringwatch_services{status=\"up\"}")
        == 1.0));
    assert_eq!(rw.terminate().code(), Some(0));
    let conn = db(&db_path);
    let next: i64 = conn
        .query_row("SELECT MAX(seq) FROM transitions", [], |r| r.get(0))
        .expect("max");
    assert_eq!(next, last_seq + 1);
}

#[test]
fn sigterm_drains_every_completed_probe_into_the_database() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let db_path = dir.path().join("rw.db");
    let port = free_port();
    // A long flush interval keeps results queued in memory until shutdown forces them out.
    let cfg = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shards: 2\n  pin: false\n  shutdown_grace: 5s\n\
storage:\n  kind: sqlite\n  path: {}\n  flush_interval: 10s\n  batch_size: 50000\n\
services:\n",
        db_path.display()
    ) + &(0..50)
        .map(|i| {
            format!(
                "  - {{name: s{i}, url: \"{}\", interval: 100ms, timeout: 90ms}}\n",
                target.url(&format!("/drain/{i}"))
            )
        })
        .collect::<String>();
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    std::thread::sleep(Duration::from_millis(1500));
    let status = rw.terminate();
    assert_eq!(status.code(), Some(0));
    let served = target.served_prefix("/drain/");
    assert!(served > 300, "only {served} probes served");
    let conn = db(&db_path);
    let stored = count(&conn, "SELECT COUNT(*) FROM results");
    assert_eq!(stored as u64, served, "every completed probe is stored");
}

#[test]
fn metrics_health_and_routes() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = base_config(port, &dir.path().join("rw.db"), 2, "")
        + &services_yaml(
            &target,
            &[("a", "/a"), ("b", "/switch")],
            "    interval: 100ms\n    timeout: 80ms\n",
        );
    target.status.store(500, Ordering::Relaxed);
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(eventually(Duration::from_secs(5), || {
        rw.metric("ringwatch_probes_total{outcome=\"ok\"}") >= 2.0
            && rw.metric("ringwatch_probes_total{outcome=\"status\"}") >= 2.0
    }));
    assert_eq!(rw.get("/healthz").0, 200);
    assert_eq!(rw.get("/readyz").0, 200);
    assert_eq!(rw.get("/nope").0, 404);
    let (code, _) = http_request(
        rw.addr,
        "POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .expect("post");
    assert_eq!(code, 405);
    let (_, body) = rw.get("/metrics");
    for family in [
        "ringwatch_probes_total",
        "ringwatch_probe_latency_seconds",
        "ringwatch_schedule_lag_seconds",
        "ringwatch_services",
        "ringwatch_store_queue_depth",
        "ringwatch_store_dropped_total",
        "ringwatch_results_dropped_total",
        "ringwatch_shard_info",
    ] {
        assert!(
            body.contains(&format!("# TYPE {family} ")),
            "{family} missing"
        );
    }
    assert!(metric_value(&body, "ringwatch_services{status=\"down\"}") == Some(1.0));
    assert!(
        metric_value(&body, "ringwatch_probe_latency_seconds{quantile=\"0.99\"}")
            .is_some_and(|v| v > 0.0)
    );
    // Per-service series, so an alert can say which service is down.
    assert_eq!(
        metric_value(&body, "ringwatch_service_up{service=\"a\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&body, "ringwatch_service_up{service=\"b\"}"),
        Some(0.0)
    );
    assert!(
        metric_value(&body, "ringwatch_service_latency_seconds{service=\"a\"}")
            .is_some_and(|v| v > 0.0 && v < 1.0)
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64();
    assert!(metric_value(
        &body,
        "ringwatch_service_last_probe_timestamp_seconds{service=\"b\"}"
    )
    .is_some_and(|t| (now - 10.0..now + 1.0).contains(&t)));

    // promtool (Debian package `prometheus`, installed by scripts/install-peers.sh) must accept it.
    let promtool = which("promtool").expect("promtool not found: run scripts/install-peers.sh");
    let mut child = std::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("promtool output");
    assert!(
        out.status.success(),
        "promtool rejected /metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(rw.terminate().code(), Some(0));
}

fn which(bin: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(bin))
            .find(|f| f.is_file())
    })
}

#[test]
fn sighup_reconciles_config_services_without_restart() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let base = base_config(port, &dir.path().join("rw.db"), 2, "");
    let opts = "    interval: 100ms\n    timeout: 80ms\n";
    let rw = Ringwatch::start_in(
        dir.path(),
        port,
        &(base.clone() + &services_yaml(&target, &[("a", "/a"), ("b", "/b")], opts)),
    );
    assert!(eventually(Duration::from_secs(5), || target.served("/a")
        > 0
        && target.served("/b") > 0));
    let pid_before = rw.child.id();
    std::fs::write(
        &rw.config,
        base + &services_yaml(&target, &[("b", "/b"), ("c", "/c")], opts),
    )
    .expect("rewrite config");
    rw.signal(libc::SIGHUP);
    assert!(eventually(Duration::from_secs(5), || target.served("/c") > 2));
    let a_after = target.served("/a");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        target.served("/a") <= a_after + 1,
        "removed service still probed"
    );
    let total = rw.metric("ringwatch_shard_services{shard=\"0\"}")
        + rw.metric("ringwatch_shard_services{shard=\"1\"}");
    assert_eq!(total, 2.0);
    assert_eq!(rw.child.id(), pid_before);

    // A broken file is refused on reload and the running set stays.
    std::fs::write(&rw.config, "services: [{name: x}]\n").expect("break config");
    rw.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    let c = target.served("/c");
    assert!(eventually(Duration::from_secs(3), || target.served("/c") > c + 2));
    assert!(rw.stderr_text().contains("reload refused"));
    assert_eq!(rw.terminate().code(), Some(0));
}

#[test]
fn check_names_the_bad_key_and_run_refuses_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "services:\n  - name: a\n    url: http://127.0.0.1:1/\n    interval: 5x\n",
    )
    .expect("write");
    for sub in ["check", "run"] {
        let out = std::process::Command::new(bin())
            .args([sub, "--config"])
            .arg(&bad)
            .output()
            .expect("run");
        assert!(!out.status.success(), "{sub} accepted a bad config");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("services[0].interval"), "{sub}: {err}");
    }
    let good = dir.path().join("good.yaml");
    std::fs::write(
        &good,
        "services:\n  - name: a\n    url: http://127.0.0.1:1/\n    interval: 10s\n",
    )
    .expect("write");
    let out = std::process::Command::new(bin())
        .args(["check", "--config"])
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/config/ringwatch.yaml");
    let out = std::process::Command::new(bin())
        .args(["check", "--config", example])
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn json_logs_carry_structured_fields_and_epoll_driver_runs() {
    // Timeouts are generous: on a slow host (coverage runs under ptrace) the first down must
    // still come from the 500, not from a timeout.
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = format!(
        "server:\n  listen: 127.0.0.1:{port}\n  shards: 1\n  pin: false\n  driver: epoll\n\
storage:\n  kind: sqlite\n  path: {}\n\
log:\n  level: debug\n  format: json\n\
services:\n  - {{name: down1, url: \"{}\", interval: 1s, timeout: 900ms}}\n  - {{name: up1, url: \"{}\", interval: 1s, timeout: 900ms}}\n",
        dir.path().join("rw.db").display(),
        target.url("/switch"),
        target.url("/ok"),
    );
    target.status.store(500, Ordering::Relaxed);
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(eventually(Duration::from_secs(20), || rw
        .metric("ringwatch_services{status=\"down\"}")
        == 1.0));
    assert_eq!(
        rw.metric("ringwatch_shard_info{shard=\"0\",driver=\"epoll\"}"),
        1.0
    );
    // up1's first probe lands anywhere in its first interval: wait for its debug event.
    let up1_probed = |l: &String| {
        serde_json::from_str::<serde_json::Value>(l)
            .is_ok_and(|e| e["message"] == "probe" && e["service"] == "up1")
    };
    assert!(eventually(Duration::from_secs(20), || rw
        .stderr_lines()
        .iter()
        .any(up1_probed)));
    let lines = rw.stderr_lines();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    assert!(
        !events.is_empty() && events.len() == lines.len(),
        "non-JSON log lines"
    );
    let down = events
        .iter()
        .find(|e| e["message"] == "service down")
        .expect("a service down event");
    assert_eq!(down["level"], "WARN");
    assert_eq!(down["service"], "down1");
    assert!(down["error"].as_str().unwrap_or("").contains("500"));
    let failed = events
        .iter()
        .find(|e| e["message"] == "probe failed")
        .expect("probe failed event");
    assert_eq!(failed["outcome"], "status");
    assert!(failed["latency_ms"].is_number());
    let ok = events
        .iter()
        .find(|e| e["message"] == "probe" && e["service"] == "up1")
        .expect("debug probe event");
    assert_eq!(ok["level"], "DEBUG");
    assert_eq!(ok["outcome"], "ok");
    assert_eq!(rw.terminate().code(), Some(0));
}

#[test]
fn per_service_metrics_can_be_switched_off() {
    let target = Target::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let cfg = base_config(
        port,
        &dir.path().join("rw.db"),
        2,
        "  per_service_metrics: false\n",
    ) + &services_yaml(
        &target,
        &[("a", "/a")],
        "    interval: 100ms\n    timeout: 80ms\n",
    );
    let rw = Ringwatch::start_in(dir.path(), port, &cfg);
    assert!(eventually(Duration::from_secs(5), || {
        rw.metric("ringwatch_probes_total{outcome=\"ok\"}") >= 1.0
    }));
    let (_, body) = rw.get("/metrics");
    assert!(!body.contains("ringwatch_service_up"), "{body}");
    assert_eq!(rw.terminate().code(), Some(0));
}
