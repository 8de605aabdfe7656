//! Runs `ringwatch-loadtest probe` for 3 s against a real ringwatch binary.

mod common;
use common::ringwatch_bin;
use std::process::Command;

#[test]
fn probe_scenario_writes_a_report() {
    let bin = ringwatch_bin();
    let out = std::env::temp_dir().join(format!("rw-probe-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let res = Command::new(env!("CARGO_BIN_EXE_ringwatch-loadtest"))
        .args([
            "probe",
            "--duration",
            "3",
            "--services",
            "20",
            "--interval",
            "1s",
            "--timeout",
            "500ms",
            "--fleet-ports",
            "0",
            "--shards",
            "1",
            "--ringwatch",
        ])
        .arg(&bin)
        .arg("--out")
        .arg(&out)
        .output()
        .expect("spawn ringwatch-loadtest");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "probe failed: {stderr}");
    assert!(stderr.contains("probes/s"), "no progress line: {stderr}");
    for f in [
        "summary.md",
        "latency.svg",
        "throughput.svg",
        "ringwatch.yaml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let json = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(v["scenario"], "probe");
    let probes = v["summary"]["probes"]["value"].as_f64().expect("probes");
    // 20 services every second for ~3 s: ~60 probes; allow for the first interval's jitter.
    assert!((20.0..=120.0).contains(&probes), "probes = {probes}");
    assert!(v["summary"]["ringwatch_cpu_seconds"]["value"]
        .as_f64()
        .is_some());
    assert!(v["throughput"]["series"]
        .as_array()
        .is_some_and(|s| s.len() == 3));
    let _ = std::fs::remove_dir_all(&out);
}
