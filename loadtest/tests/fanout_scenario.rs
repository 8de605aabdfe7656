//! Runs `ringwatch-loadtest fanout` for 3 s against a real ringwatch binary.

mod common;
use common::ringwatch_bin;
use std::process::Command;

#[test]
fn fanout_scenario_delivers_to_every_client() {
    let bin = ringwatch_bin();
    let out = std::env::temp_dir().join(format!("rw-fanout-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let res = Command::new(env!("CARGO_BIN_EXE_ringwatch-loadtest"))
        .args([
            "fanout",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--services",
            "10",
            "--flap-ms",
            "1000",
            "--interval",
            "250ms",
            "--timeout",
            "200ms",
            "--clients",
            "20",
            "--source",
            "127.0.21.1",
            "--sources",
            "2",
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
    assert!(res.status.success(), "fanout failed: {stderr}");
    let json = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let v: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    let get = |k: &str| v["summary"][k]["value"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(get("connected"), 20.0, "{stderr}");
    // 10 services flip every second: ~30 transitions in the window, each to 20 clients.
    assert!(get("messages_received") >= 20.0 * 10.0, "{json}");
    assert!(
        v["latency"]["percentiles"]["p99"].as_f64().is_some(),
        "{json}"
    );
    for f in ["summary.md", "latency.svg", "throughput.svg"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let _ = std::fs::remove_dir_all(&out);
}
