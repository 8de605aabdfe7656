//! A peer that is not installed is a note naming its install script, not a failed run. PATH
//! is emptied for the harness so this holds whether or not wrk, the exporter or node are on
//! this machine (ringwatch itself is passed by absolute path).

mod common;
use common::ringwatch_bin;
use std::process::Command;

fn run(args: &[&str], out: &std::path::Path) -> serde_json::Value {
    let empty = std::env::temp_dir().join(format!("rw-empty-path-{}", std::process::id()));
    std::fs::create_dir_all(&empty).expect("empty dir");
    let res = Command::new(env!("CARGO_BIN_EXE_ringwatch-loadtest"))
        .args(args)
        .arg("--ringwatch")
        .arg(ringwatch_bin())
        .arg("--out")
        .arg(out)
        .env("PATH", &empty)
        .output()
        .expect("spawn ringwatch-loadtest");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(res.status.success(), "run failed: {stderr}");
    let json = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    serde_json::from_str(&json).expect("valid JSON")
}

fn notes(v: &serde_json::Value) -> Vec<String> {
    v["notes"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|n| n.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn probe_reports_missing_peers_with_the_install_script() {
    let out = std::env::temp_dir().join(format!("rw-peers-missing-probe-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let v = run(
        &[
            "probe",
            "--duration",
            "2",
            "--services",
            "10",
            "--fleet-ports",
            "0",
            "--shards",
            "1",
            "--peers",
            "wrk,blackbox",
            "--peer-duration",
            "1",
        ],
        &out,
    );
    let n = notes(&v);
    assert_eq!(n.len(), 2, "{n:?}");
    assert!(
        n[0].starts_with("wrk: not measured") && n[0].contains("scripts/install-peers.sh"),
        "{n:?}"
    );
    assert!(
        n[1].starts_with("blackbox_exporter: not measured")
            && n[1].contains("scripts/install-peers.sh"),
        "{n:?}"
    );
    assert!(v.get("peers").is_none(), "no ratio without a peer");
    // ringwatch's own figures are still there.
    assert!(v["summary"]["probes"]["value"].as_f64().is_some());
    let md = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    assert!(md.contains("## Notes"), "{md}");
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn fanout_reports_a_missing_ws_peer_with_the_install_script() {
    let out = std::env::temp_dir().join(format!("rw-peers-missing-fanout-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let v = run(
        &[
            "fanout",
            "--duration",
            "2",
            "--warmup",
            "0.5",
            "--services",
            "4",
            "--flap-ms",
            "1000",
            "--interval",
            "250ms",
            "--timeout",
            "200ms",
            "--clients",
            "5",
            "--source",
            "127.0.61.1",
            "--sources",
            "1",
            "--fleet-ports",
            "0",
            "--shards",
            "1",
            "--peer",
            "ws",
        ],
        &out,
    );
    let n = notes(&v);
    assert_eq!(n.len(), 1, "{n:?}");
    assert!(
        n[0].starts_with("node ws: not measured") && n[0].contains("scripts/install-ws-peer.sh"),
        "{n:?}"
    );
    assert_eq!(v["summary"]["connected"]["value"], 5.0);
    let _ = std::fs::remove_dir_all(&out);
}

#[test]
fn peers_of_another_scenario_are_refused() {
    let out = std::env::temp_dir().join(format!("rw-peers-refused-{}", std::process::id()));
    let res = Command::new(env!("CARGO_BIN_EXE_ringwatch-loadtest"))
        .args(["probe", "--duration", "1", "--peers", "ws", "--ringwatch"])
        .arg(ringwatch_bin())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("spawn ringwatch-loadtest");
    let stderr = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success());
    assert!(stderr.contains("is not measured by probe"), "{stderr}");
    let _ = std::fs::remove_dir_all(&out);
}
