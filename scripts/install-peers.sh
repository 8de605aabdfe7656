#!/usr/bin/env bash
# Install the peer tools the load-test comparison runs against: wrk (load generator),
# prometheus-blackbox-exporter (the peer prober) and prometheus (for promtool, used to
# validate /metrics output). Idempotent: it installs only what is missing and runs
# `apt-get update` at most once, so CI can call it on every run for the cost of a few
# `command -v` checks.
set -euo pipefail

# Debian package name -> a binary it ships; a package counts as present when its binary is.
# GNU time (/usr/bin/time, not the shell keyword) measures wrk's own CPU-seconds; curl
# polls readiness endpoints.
declare -A WANT=(
  [wrk]=wrk
  [prometheus-blackbox-exporter]=prometheus-blackbox-exporter
  [prometheus]=promtool
  [time]=/usr/bin/time
  [curl]=curl
)

missing=()
for pkg in "${!WANT[@]}"; do
  bin=${WANT[$pkg]}
  if ! command -v "$bin" >/dev/null 2>&1 && ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$pkg")
  fi
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "install-peers: all present (${WANT[*]})"
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  # Outside CI we may not be root; sudo is the ordinary way to reach apt there.
  SUDO="sudo"
fi

export DEBIAN_FRONTEND=noninteractive
echo "install-peers: installing ${missing[*]}"
# Try without an update first: a fresh image may already carry package lists, and a
# second `apt-get update` per run is the slow part. Fall back to one update on failure.
if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y --no-install-recommends "${missing[@]}"
fi

# Debian's packages start their services through systemd where it runs; the bench starts
# its own instances on 127.0.0.1, so a packaged daemon would only hold ports. Stop them
# if a service manager started them (no-op in containers without systemd).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
  $SUDO systemctl stop prometheus prometheus-blackbox-exporter prometheus-node-exporter 2>/dev/null || true
fi

for pkg in "${!WANT[@]}"; do
  command -v "${WANT[$pkg]}" >/dev/null 2>&1 || { echo "install-peers: ${WANT[$pkg]} still missing" >&2; exit 1; }
done
echo "install-peers: done"
