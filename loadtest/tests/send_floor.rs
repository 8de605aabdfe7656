//! The fan-out floor tool runs end to end on loopback and reports every client.

use std::process::Command;

#[test]
fn send_floor_reaches_every_client_and_reports_json() {
    let out = Command::new(env!("CARGO_BIN_EXE_send_floor"))
        .args(["--clients", "40", "--rounds", "2", "--bytes", "100"])
        .args(["--source", "127.0.251.1", "--sources", "2"])
        .output()
        .expect("run send_floor");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value =
        serde_json::from_slice(&out.stdout).expect("one JSON document on stdout");
    assert_eq!(v["clients"], 40);
    let rounds = v["rounds"].as_array().expect("rounds");
    assert_eq!(rounds.len(), 2);
    for r in rounds {
        assert_eq!(r["sent"], 40, "{r}");
        assert_eq!(r["received"], 40, "{r}");
        let (p50, p99, max) = (
            r["p50_ms"].as_f64().unwrap_or(-1.0),
            r["p99_ms"].as_f64().unwrap_or(-1.0),
            r["max_ms"].as_f64().unwrap_or(-1.0),
        );
        assert!(0.0 <= p50 && p50 <= p99 && p99 <= max, "{r}");
    }
}

#[test]
fn send_floor_refuses_a_non_loopback_source() {
    let out = Command::new(env!("CARGO_BIN_EXE_send_floor"))
        .args(["--clients", "1", "--source", "10.0.0.1"])
        .output()
        .expect("run send_floor");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("loopback"));
}
