#!/usr/bin/env bash
# Installs what the test suite needs beyond the Rust toolchain, only when missing:
# promtool (Debian package `prometheus`) for the /metrics format check.
set -euo pipefail
need=()
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "missing ${need[*]}: run as root or install them" >&2
    exit 1
  fi
  echo "installing ${need[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
