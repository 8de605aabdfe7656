//! Runs `ringwatch-loadtest probe` for 3 s against a real ringwatch binary.

mod common;
use common::run_scenario;

#[test]
fn probe_scenario_writes_a_report() {
    let run = run_scenario(
        "probe",
        &[
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
        ],
    );
    let (v, stderr) = (&run.summary, &run.stderr);
    assert!(stderr.contains("probes/s"), "no progress line: {stderr}");
    let probes = v["summary"]["probes"]["value"].as_f64().expect("probes");
    // 20 services every second for ~3 s: ~60 probes; allow for the first interval's jitter.
    assert!((20.0..=120.0).contains(&probes), "probes = {probes}");
    assert!(v["summary"]["ringwatch_cpu_seconds"]["value"]
        .as_f64()
        .is_some());
    assert!(v["throughput"]["series"]
        .as_array()
        .is_some_and(|s| s.len() == 3));
}
