#!/usr/bin/env bash
# Measures the first results page over 1,000,000 stored results through the real HTTP server
# (release build). Numbers go to docs/perf.md by hand.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --test perf_history -- --ignored --nocapture
