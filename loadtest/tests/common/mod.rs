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
