#!/usr/bin/env bash
# A/B of prober builds: probes per CPU-second of a saturated ringwatch, several builds
# alternated in rounds so each pair runs under the same machine load.
#
#   scripts/probe-ab.sh BIN_A BIN_B [...]      (e.g. a copy of an earlier build, target/release/ringwatch)
#
# Per round and build: the fleet (one thread, cpu 1, ports 20000-20099), ringwatch with one
# pinned shard, SERVICES services at 1 s (default 150,000: more than a shard can probe, so it
# runs flat out) and `max_inflight` INFLIGHT (64, as wrk -c64 in peer-bench.sh); SETTLE seconds
# after /healthz answers it counts `ringwatch_probes_total` and the whole process's CPU over
# WINDOW seconds.
# Prints one line per run: build, probes, CPU ms, probes per CPU-second. Targets 127.0.0.1 only;
# every process it starts is killed on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LT=${LOADTEST_BIN:-$ROOT/target/release/ringwatch-loadtest}
SERVICES=${SERVICES:-150000}
INFLIGHT=${INFLIGHT:-64}
ROUNDS=${ROUNDS:-3}
SETTLE=${SETTLE:-6}
WINDOW=${WINDOW:-4}
[ $# -ge 1 ] || { echo "usage: $0 RINGWATCH_BIN [RINGWATCH_BIN ...]" >&2; exit 2; }
[ -x "$LT" ] || (cd "$ROOT" && timeout 900 cargo build --release -q -p ringwatch-loadtest)

WORK=$(mktemp -d /tmp/probe-ab.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT

cpu_ms() { # cpu_ms PID -> user+system CPU of all threads, in ms
  awk -v t="$(getconf CLK_TCK)" '{printf "%d", ($14 + $15) * 1000 / t}' "/proc/$1/stat"
}
probes() {
  curl -s -m 5 http://127.0.0.1:18080/metrics | awk '/^ringwatch_probes_total\{/ {s += $2} END {printf "%d", s}'
}

taskset -c 1 "$LT" fleet --listen 127.0.0.1 --ports 20000-20099 --threads 1 >"$WORK/fleet.log" 2>&1 &
PIDS+=($!)
sleep 1
"$LT" gen-config --services "$SERVICES" --ports 20000-20099 --path /ok --interval 1s \
  --timeout 900ms --listen 127.0.0.1:18080 --db "$WORK/rw.db" --shards 1 >"$WORK/rw.yaml"
sed -i "s/^server: {\(.*\)}$/server: {\1, pin: true, probe: {max_inflight: $INFLIGHT}}/" "$WORK/rw.yaml"

# Builds that have per-service series (server.per_service_metrics) run with them off: at 150k
# services one scrape is ~30 MB and ~0.35 CPU-s, which would land in the window; older builds
# reject the key and run without it (they have no such series).
sed "s/^server: {\(.*\)}$/server: {\1, per_service_metrics: false}/" "$WORK/rw.yaml" >"$WORK/rw-quiet.yaml"
config_for() {
  if "$1" check --config "$WORK/rw-quiet.yaml" >/dev/null 2>&1; then
    echo "$WORK/rw-quiet.yaml"
  else
    echo "$WORK/rw.yaml"
  fi
}

for round in $(seq 1 "$ROUNDS"); do
  for bin in "$@"; do
    rm -f "$WORK"/rw.db*
    "$bin" run --config "$(config_for "$bin")" >"$WORK/rw.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    # SETTLE counts from the moment it serves (loading 150k services takes a while).
    for _ in $(seq 600); do
      curl -fs -m 1 http://127.0.0.1:18080/healthz >/dev/null 2>&1 && break
      kill -0 "$pid" 2>/dev/null || { echo "$bin exited: $(tail -n 5 "$WORK/rw.log")" >&2; exit 1; }
      sleep 0.1
    done
    sleep "$SETTLE"
    p0=$(probes); c0=$(cpu_ms "$pid")
    sleep "$WINDOW"
    p1=$(probes); c1=$(cpu_ms "$pid")
    kill "$pid"; wait "$pid" 2>/dev/null || true
    awk -v r="$round" -v b="$bin" -v p=$((p1 - p0)) -v c=$((c1 - c0)) \
      'BEGIN {printf "round %s  %-40s %8d probes %6d ms CPU %8.0f per CPU-s\n", r, b, p, c, (c > 0 ? p * 1000 / c : 0)}'
  done
done
