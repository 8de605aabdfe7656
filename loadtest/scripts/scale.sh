#!/usr/bin/env bash
# Scale run: N services at a 60 s interval on this machine's shards, for each N in SIZES.
# For each size it reports the schedule lag quantiles from /metrics and the RSS after one full
# interval plus EXTRA seconds; per-service memory is the slope between consecutive sizes, so
# fixed costs (runtime, SQLite page cache, buffers) are not spread over the services.
# Targets: the local fleet on 127.0.0.1 only.
# Usage: loadtest/scripts/scale.sh ["0 100000 200000"] [EXTRA_SECONDS]
# RINGWATCH_BIN=path runs another build (e.g. a copy of an earlier one, for before/after).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SIZES=${1:-0 100000 200000}
EXTRA=${2:-60}
INTERVAL=${INTERVAL:-60s}
BIN=$ROOT/target/release
PORT=18081
WORK=$(mktemp -d /tmp/rw-scale.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
[ -x "$BIN/ringwatch" ] && [ -x "$BIN/ringwatch-loadtest" ] || (cd "$ROOT" && cargo build --release --workspace)

"$BIN/ringwatch-loadtest" fleet --listen 127.0.0.1 --ports 21000-21099 >"$WORK/fleet.log" 2>&1 &
PIDS+=($!)
sleep 1

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
# Anonymous memory only: VmRSS also counts the database file's pages that SQLite's mmap has
# touched, which grow with the file (results, registry rows) and are reclaimable page cache.
anon_kib() { awk '/^RssAnon/ {print $2}' "/proc/$1/status"; }
metric() { curl -s "http://127.0.0.1:$PORT/metrics" | awk -v s="$1" 'index($0, s" ") == 1 {print $2}'; }

run() { # run SERVICES WAIT_SECONDS -> prints "rss_kib anon_kib lag_p50 lag_p99 lag_p999 probes ok"
  local n=$1 wait=$2 cfg="$WORK/rw-$1.yaml"
  rm -f "$WORK"/rw-"$n".db*
  "$BIN/ringwatch-loadtest" gen-config --services "$n" --ports 21000-21099 --path /ok \
    --interval "$INTERVAL" --timeout 5s --listen 127.0.0.1:$PORT --db "$WORK/rw-$n.db" --shards 0 >"$cfg"
  "${RINGWATCH_BIN:-$BIN/ringwatch}" run --config "$cfg" >"$WORK/rw-$n.log" 2>&1 &
  local pid=$!
  PIDS+=("$pid")
  for _ in $(seq 1 600); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.2; done
  sleep "$wait"
  echo "$(rss_kib "$pid") $(anon_kib "$pid") $(metric 'ringwatch_schedule_lag_seconds{quantile="0.5"}') \
$(metric 'ringwatch_schedule_lag_seconds{quantile="0.99"}') $(metric 'ringwatch_schedule_lag_seconds{quantile="0.999"}') \
$(curl -s "http://127.0.0.1:$PORT/metrics" | awk '/^ringwatch_probes_total\{/ {s += $2} END {printf "%d", s}') \
$(metric 'ringwatch_probes_total{outcome="ok"}')"
  kill -TERM "$pid"; wait "$pid" 2>/dev/null || true
}

secs=${INTERVAL%s}
prev_n=""; prev_rss=""; prev_anon=""
printf '%-9s %-10s %-10s %-10s %-10s %-10s %-10s %-12s %s\n' services rss_kib anon_kib lag_p50 lag_p99 \
  lag_p999 probes "B/svc (rss)" "B/svc (anon)"
for n in $SIZES; do
  read -r rss anon p50 p99 p999 probes ok <<<"$(run "$n" "$((secs + EXTRA))")"
  slope="-"; slope_anon="-"
  if [ -n "$prev_n" ]; then
    slope=$(awk -v a="$rss" -v b="$prev_rss" -v n="$n" -v m="$prev_n" 'BEGIN {printf "%.0f", (a - b) * 1024 / (n - m)}')
    slope_anon=$(awk -v a="$anon" -v b="$prev_anon" -v n="$n" -v m="$prev_n" 'BEGIN {printf "%.0f", (a - b) * 1024 / (n - m)}')
  fi
  printf '%-9s %-10s %-10s %-10s %-10s %-10s %-10s %-12s %s\n' "$n" "$rss" "$anon" "$p50" "$p99" "$p999" \
    "$probes" "$slope" "$slope_anon"
  prev_n=$n; prev_rss=$rss; prev_anon=$anon
done
