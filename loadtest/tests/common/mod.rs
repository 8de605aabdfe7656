//! Helpers shared by the scenario tests.

use std::path::PathBuf;

/// The ringwatch binary: the debug build (rebuilt by every workspace test run, so never
/// stale there), else the release build. Missing both is a failure, not a skip.
pub fn ringwatch_bin() -> PathBuf {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
    ["debug", "release"]
        .iter()
        .map(|p| target.join(p).join("ringwatch"))
        .find(|p| p.is_file())
        .expect("no ringwatch binary: run `cargo build -p ringwatch` (scripts/test.sh does)")
}

/// What one scenario run left behind.
#[allow(dead_code)] // each test binary uses a different part
pub struct Run {
    /// The parsed `summary.json`.
    pub summary: serde_json::Value,
    /// Its text, for assertion messages.
    pub json: String,
    /// The scenario's stderr (progress lines, notes).
    pub stderr: String,
    /// The report directory (removed by `Drop`).
    pub out: PathBuf,
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.out);
    }
}

/// Runs `ringwatch-loadtest SCENARIO ARGS --ringwatch BIN --out DIR` against the built
/// ringwatch, asserts it succeeded and wrote every report file, and returns the summary.
#[allow(dead_code)]
pub fn run_scenario(scenario: &str, args: &[&str]) -> Run {
    let out = std::env::temp_dir().join(format!("rw-{scenario}-scenario-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let res = std::process::Command::new(env!("CARGO_BIN_EXE_ringwatch-loadtest"))
        .arg(scenario)
        .args(args)
        .arg("--ringwatch")
        .arg(ringwatch_bin())
        .arg("--out")
        .arg(&out)
        .output()
        .expect("spawn ringwatch-loadtest");
    let stderr = String::from_utf8_lossy(&res.stderr).into_owned();
    assert!(res.status.success(), "{scenario} failed: {stderr}");
    for f in [
        "summary.md",
        "latency.svg",
        "throughput.svg",
        "ringwatch.yaml",
    ] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let json = std::fs::read_to_string(out.join("summary.json")).expect("summary.json");
    let summary: serde_json::Value = serde_json::from_str(&json).expect("valid JSON");
    assert_eq!(summary["scenario"], scenario, "{json}");
    Run {
        summary,
        json,
        stderr,
        out,
    }
}
