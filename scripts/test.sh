#!/usr/bin/env bash
# Runs every check and test of the workspace: formatting, lints, unit and integration tests.
# This is the README's test command and what CI (.ci/run) calls.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-test-deps.sh
scripts/check-packaging.sh   # compose, systemd unit, alert rules, Dockerfile (static; seconds)
# Integration tests start many short-lived servers; give them room.
ulimit -n 65536 2>/dev/null || true
cargo fmt --all -- --check
# Layers (no module imports a higher one, no cycle), file and function sizes.
python3 scripts/check-structure.py
cargo clippy --workspace --all-targets -- -D warnings
# The loadtest scenario tests drive the ringwatch binary itself.
cargo build -p ringwatch --bin ringwatch
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi
