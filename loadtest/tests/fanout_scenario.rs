//! Runs `ringwatch-loadtest fanout` for 3 s against a real ringwatch binary.

mod common;
use common::run_scenario;

#[test]
fn fanout_scenario_delivers_to_every_client() {
    let run = run_scenario(
        "fanout",
        &[
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
        ],
    );
    let (v, json, stderr) = (&run.summary, &run.json, &run.stderr);
    let get = |k: &str| v["summary"][k]["value"].as_f64().unwrap_or(f64::NAN);
    assert_eq!(get("connected"), 20.0, "{stderr}");
    // 10 services flip every second: ~30 transitions in the window, each to 20 clients.
    assert!(get("messages_received") >= 20.0 * 10.0, "{json}");
    assert!(
        v["latency"]["percentiles"]["p99"].as_f64().is_some(),
        "{json}"
    );
}
