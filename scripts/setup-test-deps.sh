#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, only when missing:
# - promtool (Debian package `prometheus`) for the /metrics format check;
# - chromium (Debian) for the headless-browser WebSocket test;
# - curl, jq and sqlite3 (Debian) for tests/readme.rs, which runs the README's commands;
# - the Python `websockets` package (PyPI) for the third-party WebSocket client test;
# - playwright-core (npm, into target/test-node) to drive that chromium from a test;
# - a running PostgreSQL server on 127.0.0.1:5432 (scripts/start-postgres.sh) for the
#   PostgreSQL store tests, which create and drop databases of their own.
# Idempotent: a second run only checks.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v jq >/dev/null 2>&1 || need+=(jq)
command -v sqlite3 >/dev/null 2>&1 || need+=(sqlite3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing ${need[*]}: run as root or install them" >&2
    exit 1
  fi
  echo "installing ${need[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if ! python3 -c 'import websockets' >/dev/null 2>&1; then
  echo "installing python websockets ..." >&2
  python3 -m pip install -q 'websockets>=12' ||
    python3 -m pip install -q --break-system-packages 'websockets>=12'
fi
# playwright-core drives the system chromium from the browser test (no browser download).
node_dir="$(cd "$(dirname "$0")/.." && pwd)/target/test-node"
if [ ! -d "$node_dir/node_modules/playwright-core" ]; then
  command -v npm >/dev/null 2>&1 || {
    [ "$(id -u)" = 0 ] || { echo "missing npm: run as root or install it" >&2; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
  }
  echo "installing playwright-core into $node_dir ..." >&2
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm install --silent --no-audit --no-fund --prefix "$node_dir" playwright-core@1
fi
"$(dirname "$0")/start-postgres.sh"
