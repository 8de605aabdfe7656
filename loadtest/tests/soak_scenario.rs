//! Runs `ringwatch-loadtest soak` for a few seconds against a real ringwatch binary and checks
//! that every delivery check passes and the report is complete.
//!
//! Timing is generous on purpose (a 2 s flap period probed every 500 ms, 400 ms timeouts) so
//! a loaded 2-core machine still probes every flap phase; nothing here asserts a latency.

mod common;
use common::run_scenario;
use std::process::Command;

#[test]
fn soak_scenario_delivers_every_transition_exactly_once() {
    let run = run_scenario(
        "soak",
        &[
            "--duration",
            "4",
            "--warmup",
            "1",
            "--drain",
            "2",
            "--services",
            "20",
            "--flap-percent",
            "50",
            "--flap-ms",
            "2000",
            "--interval",
            "500ms",
            "--timeout",
            "400ms",
            "--clients",
            "50",
            "--source",
            "127.0.41.1",
            "--sources",
            "2",
            "--fleet-ports",
            "0",
            "--shards",
            "2",
        ],
    );
    let (v, json, stderr) = (&run.summary, &run.json, &run.stderr);
    assert!(stderr.contains("messages/s"), "no progress line: {stderr}");
    assert_eq!(v["pass"], true, "{json}");
    let checks = v["checks"].as_array().expect("checks");
    assert_eq!(checks.len(), 6, "{json}");
    assert!(checks.iter().all(|c| c["pass"] == true), "{json}");
    let get = |k: &str| v["summary"][k]["value"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(get("connected"), 50.0);
    assert_eq!(get("flapping_services"), 10.0);
    // 10 services flip every 2 s over a >= 5 s range: some transitions, all delivered.
    assert!(get("transitions_issued") >= 10.0, "{json}");
    assert_eq!(get("deliveries_seen"), get("deliveries_expected"), "{json}");
    assert_eq!(get("deliveries_expected"), 50.0 * get("transitions_issued"));
    for k in ["duplicates", "missing", "not_in_store", "store_gaps"] {
        assert_eq!(get(k), 0.0, "{k}: {json}");
    }
    let md = std::fs::read_to_string(run.out.join("summary.md")).expect("summary.md");
    assert!(md.contains("## Checks: PASS"), "{md}");
}

#[test]
fn soak_refuses_an_interval_that_could_miss_a_flap() {
    let out = std::env::temp_dir().join(format!("rw-soak-refused-{}", std::process::id()));
    let res = Command::new(env!("CARGO_BIN_EXE_ringwatch-loadtest"))
        .args([
            "soak",
            "--duration",
            "1",
            "--flap-ms",
            "1000",
            "--interval",
            "600ms",
            "--timeout",
            "500ms",
            "--ringwatch",
            "/nonexistent/ringwatch",
        ])
        .arg("--out")
        .arg(&out)
        .output()
        .expect("spawn ringwatch-loadtest");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(stderr.contains("at most half of --flap-ms"), "{stderr}");
    let _ = std::fs::remove_dir_all(&out);
}
