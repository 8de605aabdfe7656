#!/usr/bin/env bash
# Makes sure the PostgreSQL server the tests use is up: 127.0.0.1:5432, user postgres with
# trust auth, database `test` (what the machine image provides). Starts the cluster when it is
# down, installs PostgreSQL when it is missing (as root), creates `test` when absent.
# Idempotent; skipped when RINGWATCH_TEST_PG names another server.
set -euo pipefail
if [ -n "${RINGWATCH_TEST_PG:-}" ]; then
  exit 0
fi
ready() { pg_isready -q -h 127.0.0.1 -p 5432 -t 2 >/dev/null 2>&1; }
as_root() {
  [ "$(id -u)" = 0 ] || { echo "PostgreSQL is $1: run as root or start it yourself" >&2; exit 1; }
}
if ! command -v pg_ctlcluster >/dev/null 2>&1; then
  as_root missing
  echo "installing postgresql ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  # A fresh install asks TCP clients for a password; the tests log in as postgres over
  # loopback without one, like on the project's machines.
  ver="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
  hba="/etc/postgresql/$ver/main/pg_hba.conf"
  sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' "$hba"
  sed -i -E 's/^(local\s+all\s+postgres\s+)\S+/\1trust/' "$hba"
fi
if ! ready; then
  as_root down
  ver="$(find /etc/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)"
  echo "starting PostgreSQL $ver ..." >&2
  pg_ctlcluster --skip-systemctl-redirect "$ver" main start || true
  for _ in $(seq 1 60); do
    ready && break
    sleep 0.5
  done
  ready || { echo "PostgreSQL did not come up on 127.0.0.1:5432" >&2; exit 1; }
fi
if [ "$(psql -h 127.0.0.1 -U postgres -d postgres -Atc "SELECT 1 FROM pg_database WHERE datname = 'test'")" != 1 ]; then
  psql -h 127.0.0.1 -U postgres -d postgres -qc "CREATE DATABASE test"
fi
