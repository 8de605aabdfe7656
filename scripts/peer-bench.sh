#!/usr/bin/env bash
# Peer benchmark on one machine: how much CPU do the peers spend per request / per probe?
#
#   (a) wrk -> fleet /ok                 : requests/s, requests per CPU-second of wrk and
#                                          of the fleet (the load generator's ceiling)
#   (b) wrk -> blackbox_exporter /probe  : probes/s and probes per CPU-second of the
#       -> fleet /ok                       exporter (the peer ringwatch is compared with)
#   (c) ringwatch (optional, RINGWATCH=1): probes per CPU-second from its /metrics counter
#       ringwatch_probes_total and /proc CPU; see run_ringwatch below.
#
# Results: a table on stdout and JSON in $OUT (default target/peer-bench.json).
# Everything binds 127.0.0.0/8; every process started here is killed on exit; every step is
# bounded by `timeout`.
#
# Knobs (environment): DURATION (s, default 10), FLEET_CPU (1), LOAD_CPU (0), PEER_CPU (0),
# BB_WRK_CPU (=FLEET_CPU), WRK_CONNS (64), BB_CONNS (16), FLEET_PORTS (20000-20099),
# BB_PORT (9115), LOADTEST_BIN, OUT, RINGWATCH (0), RINGWATCH_BIN, RW_SERVICES (10000),
# RW_INTERVAL (60s).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=${DURATION:-10}
FLEET_CPU=${FLEET_CPU:-1}
LOAD_CPU=${LOAD_CPU:-0}
PEER_CPU=${PEER_CPU:-0}
BB_WRK_CPU=${BB_WRK_CPU:-$FLEET_CPU}
WRK_CONNS=${WRK_CONNS:-64}
BB_CONNS=${BB_CONNS:-16}
FLEET_PORTS=${FLEET_PORTS:-20000-20099}
FLEET_PORT0=${FLEET_PORTS%%-*}
BB_PORT=${BB_PORT:-9115}
BIN=${LOADTEST_BIN:-$ROOT/target/release/ringwatch-loadtest}
OUT=${OUT:-$ROOT/target/peer-bench.json}
RINGWATCH=${RINGWATCH:-0}
RINGWATCH_BIN=${RINGWATCH_BIN:-$ROOT/target/release/ringwatch}
RW_SERVICES=${RW_SERVICES:-20000}
RW_INTERVAL=${RW_INTERVAL:-1s}

# Thousands of connections (fleet, exporter, ringwatch) need more than the default 20000
# fds; as root we may raise the hard limit, otherwise take what the hard limit allows.
ulimit -n 1048576 2>/dev/null || ulimit -n "$(ulimit -Hn)"

WORK=$(mktemp -d /tmp/peer-bench.XXXXXX)
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]}"; do
    kill "$p" 2>/dev/null || true
  done
  for p in "${PIDS[@]}"; do
    # Bounded: anything still alive after 3 s gets SIGKILL.
    for _ in 1 2 3 4 5 6; do kill -0 "$p" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$p" 2>/dev/null || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "peer-bench: $*" >&2; }
die() { log "error: $*"; exit 1; }

# ---------------------------------------------------------------- helpers

# cpu_seconds PID -> user+system CPU-seconds of a running process (from /proc via procstat).
cpu_seconds() {
  "$BIN" procstat --pid "$1" | sed -E 's/.*"cpu_seconds":([0-9.]+).*/\1/'
}

# rss_kib PID -> resident set size in KiB.
rss_kib() {
  "$BIN" procstat --pid "$1" | sed -E 's/.*"rss_kib":([0-9]+).*/\1/'
}

# calc EXPR -> floating-point result (awk; bc is not always installed).
calc() { awk "BEGIN { printf \"%.2f\", $1 }"; }

# wait_http URL SECONDS -> succeeds once URL answers 2xx.
wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  until curl -sf -o /dev/null -m 1 "$url"; do
    [ "$SECONDS" -lt "$deadline" ] || return 1
    sleep 0.1
  done
}

ensure_tools() {
  local t
  for t in wrk prometheus-blackbox-exporter curl taskset /usr/bin/time; do
    command -v "$t" >/dev/null 2>&1 || die "$t missing: run scripts/install-peers.sh"
  done
  if [ ! -x "$BIN" ]; then
    log "building ringwatch-loadtest (release)"
    (cd "$ROOT" && timeout 900 cargo build --release -q -p ringwatch-loadtest)
  fi
}

# start_fleet: the target fleet, one thread pinned to FLEET_CPU. Sets FLEET_PID.
start_fleet() {
  taskset -c "$FLEET_CPU" "$BIN" fleet --listen 127.0.0.1 --ports "$FLEET_PORTS" --threads 1 \
    >"$WORK/fleet.log" 2>&1 &
  FLEET_PID=$!
  PIDS+=("$FLEET_PID")
  wait_http "http://127.0.0.1:$FLEET_PORT0/ok" 10 || die "fleet did not start: $(cat "$WORK/fleet.log")"
  log "fleet pid $FLEET_PID on cpu $FLEET_CPU: $(head -1 "$WORK/fleet.log")"
}

# run_wrk CPU CONNS URL -> runs wrk pinned to CPU for DURATION seconds. Sets WRK_RPS,
# WRK_REQS, WRK_BAD (non-2xx/3xx + socket errors), WRK_CPU (wrk's own CPU-seconds, measured
# by GNU time, since wrk's /proc entry is gone by the time it can be read).
run_wrk() {
  local cpu=$1 conns=$2 url=$3 out="$WORK/wrk.out" tm="$WORK/wrk.time"
  timeout $((DURATION + 30)) /usr/bin/time -f '%U %S' -o "$tm" \
    taskset -c "$cpu" wrk -t1 -c"$conns" -d"${DURATION}s" --latency "$url" >"$out" 2>&1 \
    || die "wrk failed: $(cat "$out")"
  WRK_RPS=$(awk '/^Requests\/sec:/ {print $2}' "$out")
  WRK_REQS=$(awk '/requests in/ {print $1}' "$out")
  local non2xx sockerr
  non2xx=$(awk -F': ' '/Non-2xx or 3xx responses/ {print $2}' "$out")
  sockerr=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$out")
  WRK_BAD=$(( ${non2xx:-0} + ${sockerr:-0} ))
  WRK_P50=$(awk '$1 == "50%" {print $2}' "$out")
  WRK_P99=$(awk '$1 == "99%" {print $2}' "$out")
  WRK_CPU=$(awk '{printf "%.2f", $1 + $2}' "$tm")
}

# ---------------------------------------------------------------- (a) wrk -> fleet

run_fleet_wrk() {
  local f0 f1
  f0=$(cpu_seconds "$FLEET_PID")
  run_wrk "$LOAD_CPU" "$WRK_CONNS" "http://127.0.0.1:$FLEET_PORT0/ok"
  f1=$(cpu_seconds "$FLEET_PID")
  A_RPS=$WRK_RPS
  A_REQS=$WRK_REQS
  A_BAD=$WRK_BAD
  A_P50=$WRK_P50
  A_P99=$WRK_P99
  A_WRK_CPU=$WRK_CPU
  A_FLEET_CPU=$(calc "$f1 - $f0")
  A_PER_WRK_CPU=$(calc "$A_REQS / ($A_WRK_CPU > 0 ? $A_WRK_CPU : 0.01)")
  A_PER_FLEET_CPU=$(calc "$A_REQS / ($A_FLEET_CPU > 0 ? $A_FLEET_CPU : 0.01)")
  A_FLEET_RSS=$(rss_kib "$FLEET_PID")
}

# ---------------------------------------------------------------- (b) blackbox_exporter

start_blackbox() {
  cat >"$WORK/blackbox.yml" <<EOF
modules:
  http_2xx:
    prober: http
    timeout: 5s
    http:
      preferred_ip_protocol: ip4
      ip_protocol_fallback: false
EOF
  timeout 10 prometheus-blackbox-exporter --config.check --config.file="$WORK/blackbox.yml" \
    >/dev/null 2>&1 || die "blackbox config rejected"
  taskset -c "$PEER_CPU" prometheus-blackbox-exporter --config.file="$WORK/blackbox.yml" \
    --web.listen-address="127.0.0.1:$BB_PORT" --log.level=warn >"$WORK/blackbox.log" 2>&1 &
  BB_PID=$!
  PIDS+=("$BB_PID")
  wait_http "http://127.0.0.1:$BB_PORT/-/healthy" 15 || die "blackbox did not start: $(cat "$WORK/blackbox.log")"
  log "blackbox_exporter pid $BB_PID on cpu $PEER_CPU"
}

run_blackbox() {
  local url="http://127.0.0.1:$BB_PORT/probe?target=http://127.0.0.1:$FLEET_PORT0/ok&module=http_2xx"
  # A probe that fails still answers 200 (with probe_success 0): check one by hand first.
  curl -sf -m 10 "$url" | grep -q '^probe_success 1' || die "blackbox probe of the fleet failed"
  local b0 b1 f0 f1
  b0=$(cpu_seconds "$BB_PID")
  f0=$(cpu_seconds "$FLEET_PID")
  run_wrk "$BB_WRK_CPU" "$BB_CONNS" "$url"
  b1=$(cpu_seconds "$BB_PID")
  f1=$(cpu_seconds "$FLEET_PID")
  B_PPS=$WRK_RPS
  B_PROBES=$WRK_REQS
  B_BAD=$WRK_BAD
  B_P50=$WRK_P50
  B_P99=$WRK_P99
  B_BB_CPU=$(calc "$b1 - $b0")
  B_FLEET_CPU=$(calc "$f1 - $f0")
  B_PER_BB_CPU=$(calc "$B_PROBES / ($B_BB_CPU > 0 ? $B_BB_CPU : 0.01)")
  B_BB_UTIL=$(calc "$B_BB_CPU / $DURATION")
  B_BB_RSS=$(rss_kib "$BB_PID")
}

# ---------------------------------------------------------------- (c) ringwatch (optional)
# Not exercised yet (the server is being built in parallel). The shape: generate a config
# of RW_SERVICES services at RW_INTERVAL against the fleet, run ringwatch pinned to
# PEER_CPU, let it settle one interval's worth of first runs, then measure probes done
# (ringwatch_probes_total from /metrics, summed over labels) and its CPU over DURATION.

metric_sum() { # metric_sum URL NAME -> sum of all samples of NAME
  curl -sf -m 5 "$1" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $NF} END {printf "%.0f", s}'
}

# CPU-seconds of the threads of PID whose name starts with PREFIX (e.g. shard-).
thread_cpu_seconds() {
  local pid=$1 prefix=$2 tck ticks=0 t
  tck=$(getconf CLK_TCK)
  for t in /proc/"$pid"/task/*; do
    case "$(cat "$t/comm" 2>/dev/null)" in
      "$prefix"*) ticks=$((ticks + $(awk '{print $14 + $15}' "$t/stat" 2>/dev/null || echo 0))) ;;
    esac
  done
  calc "$ticks / $tck"
}

# ringwatch at saturation: more services due than one shard can probe, with as many probes in
# flight as wrk has connections (RW_INFLIGHT), so both run flat out at the same concurrency.
run_ringwatch() {
  [ -x "$RINGWATCH_BIN" ] || die "RINGWATCH=1 but $RINGWATCH_BIN is missing"
  local cfg="$WORK/ringwatch.yaml" metrics="http://127.0.0.1:18080/metrics"
  "$BIN" gen-config --services "$RW_SERVICES" --ports "$FLEET_PORTS" --path /ok \
    --interval "$RW_INTERVAL" --timeout "${RW_TIMEOUT:-5s}" --listen 127.0.0.1:18080 --db "$WORK/rw.db" \
    --shards 1 >"$cfg"
  # As deployed: the shard pins itself (shard 0 -> cpu 0, where wrk ran); the storage writer
  # and resolver threads float. Every thread's CPU is counted below either way.
  sed -i "s/^server: {\(.*\)}$/server: {\1, pin: true, probe: {max_inflight: ${RW_INFLIGHT:-$WRK_CONNS}}}/" "$cfg"
  "$RINGWATCH_BIN" run --config "$cfg" >"$WORK/ringwatch.log" 2>&1 &
  RW_PID=$!
  PIDS+=("$RW_PID")
  wait_http "http://127.0.0.1:18080/healthz" 30 || die "ringwatch did not start: $(tail -5 "$WORK/ringwatch.log")"
  sleep "${RW_SETTLE:-5}"
  local p0 p1 c0 c1 s0 s1 w0 w1 ok0 ok1 m
  # One scrape per sample, so total and ok come from the same instant.
  m=$(curl -s "$metrics")
  p0=$(awk '/^ringwatch_probes_total\{/ {s += $2} END {printf "%d", s}' <<<"$m")
  ok0=$(awk '/^ringwatch_probes_total\{outcome="ok"\}/ {printf "%d", $2}' <<<"$m")
  c0=$(cpu_seconds "$RW_PID"); s0=$(thread_cpu_seconds "$RW_PID" shard-); w0=$(thread_cpu_seconds "$RW_PID" ringwatch-store)
  sleep "$DURATION"
  m=$(curl -s "$metrics")
  p1=$(awk '/^ringwatch_probes_total\{/ {s += $2} END {printf "%d", s}' <<<"$m")
  ok1=$(awk '/^ringwatch_probes_total\{outcome="ok"\}/ {printf "%d", $2}' <<<"$m")
  c1=$(cpu_seconds "$RW_PID"); s1=$(thread_cpu_seconds "$RW_PID" shard-); w1=$(thread_cpu_seconds "$RW_PID" ringwatch-store)
  C_PROBES=$((p1 - p0))
  C_BAD=$((C_PROBES - (ok1 - ok0)))
  C_RW_CPU=$(calc "$c1 - $c0")
  C_SHARD_CPU=$(calc "$s1 - $s0")
  C_STORE_CPU=$(calc "$w1 - $w0")
  C_PPS=$(calc "$C_PROBES / $DURATION")
  C_PER_RW_CPU=$(calc "$C_PROBES / ($C_RW_CPU > 0 ? $C_RW_CPU : 0.01)")
  C_PER_SHARD_CPU=$(calc "$C_PROBES / ($C_SHARD_CPU > 0 ? $C_SHARD_CPU : 0.01)")
  C_PER_STORE_CPU=$(calc "$C_PROBES / ($C_STORE_CPU > 0 ? $C_STORE_CPU : 0.01)")
  C_RW_RSS=$(rss_kib "$RW_PID")
  curl -s "$metrics" >"$WORK/ringwatch.metrics"
}

# ---------------------------------------------------------------- report

report() {
  printf '\n%-38s %12s %12s %14s %10s\n' "scenario" "per second" "CPU-s" "per CPU-s" "errors"
  printf '%-38s %12s %12s %14s %10s\n' "wrk -> fleet /ok (wrk process)" "$A_RPS" "$A_WRK_CPU" "$A_PER_WRK_CPU" "$A_BAD"
  printf '%-38s %12s %12s %14s %10s\n' "wrk -> fleet /ok (fleet process)" "$A_RPS" "$A_FLEET_CPU" "$A_PER_FLEET_CPU" "$A_BAD"
  printf '%-38s %12s %12s %14s %10s\n' "blackbox_exporter probes (exporter)" "$B_PPS" "$B_BB_CPU" "$B_PER_BB_CPU" "$B_BAD"
  if [ "$RINGWATCH" = 1 ]; then
    printf '%-38s %12s %12s %14s %10s\n' "ringwatch probes (whole process)" "$C_PPS" "$C_RW_CPU" "$C_PER_RW_CPU" "$C_BAD"
    printf '%-38s %12s %12s %14s %10s\n' "ringwatch probes (shard thread)" "$C_PPS" "$C_SHARD_CPU" "$C_PER_SHARD_CPU" "$C_BAD"
    printf '%-38s %12s %12s %14s %10s\n' "ringwatch results (SQLite writer)" "$C_PPS" "$C_STORE_CPU" "$C_PER_STORE_CPU" "-"
    printf '\nratios (per CPU-second): ringwatch/wrk = %s (shard only %s); ringwatch/blackbox = %s (shard only %s)\n' \
      "$(calc "$C_PER_RW_CPU / $A_PER_WRK_CPU")" "$(calc "$C_PER_SHARD_CPU / $A_PER_WRK_CPU")" \
      "$(calc "$C_PER_RW_CPU / $B_PER_BB_CPU")" "$(calc "$C_PER_SHARD_CPU / $B_PER_BB_CPU")"
  fi
  local rw=""
  if [ "$RINGWATCH" = 1 ]; then
    rw=$(printf ',"ringwatch":{"services":%s,"interval":"%s","inflight":%s,"probes":%s,"failed":%s,"probes_per_sec":%s,"cpu_seconds":%s,"probes_per_cpu_second":%s,"shard_cpu_seconds":%s,"probes_per_shard_cpu_second":%s,"store_cpu_seconds":%s,"results_per_store_cpu_second":%s,"rss_kib":%s}' \
      "$RW_SERVICES" "$RW_INTERVAL" "${RW_INFLIGHT:-$WRK_CONNS}" "$C_PROBES" "$C_BAD" "$C_PPS" "$C_RW_CPU" "$C_PER_RW_CPU" "$C_SHARD_CPU" "$C_PER_SHARD_CPU" "$C_STORE_CPU" "$C_PER_STORE_CPU" "$C_RW_RSS")
  fi
  printf '{"duration_s":%s,"cpus":{"fleet":%s,"load":%s,"peer":%s,"bb_wrk":%s},"nproc":%s,"loadavg_1m_at_start":%s,' \
    "$DURATION" "$FLEET_CPU" "$LOAD_CPU" "$PEER_CPU" "$BB_WRK_CPU" "$(nproc)" "$LOADAVG0" >"$OUT"
  printf '"wrk_fleet":{"connections":%s,"requests":%s,"requests_per_sec":%s,"errors":%s,"p50":"%s","p99":"%s","wrk_cpu_seconds":%s,"requests_per_wrk_cpu_second":%s,"fleet_cpu_seconds":%s,"requests_per_fleet_cpu_second":%s,"fleet_rss_kib":%s},' \
    "$WRK_CONNS" "$A_REQS" "$A_RPS" "$A_BAD" "$A_P50" "$A_P99" "$A_WRK_CPU" "$A_PER_WRK_CPU" "$A_FLEET_CPU" "$A_PER_FLEET_CPU" "$A_FLEET_RSS" >>"$OUT"
  printf '"blackbox":{"connections":%s,"probes":%s,"probes_per_sec":%s,"errors":%s,"p50":"%s","p99":"%s","exporter_cpu_seconds":%s,"exporter_cpu_util":%s,"probes_per_cpu_second":%s,"fleet_cpu_seconds":%s,"exporter_rss_kib":%s}%s}\n' \
    "$BB_CONNS" "$B_PROBES" "$B_PPS" "$B_BAD" "$B_P50" "$B_P99" "$B_BB_CPU" "$B_BB_UTIL" "$B_PER_BB_CPU" "$B_FLEET_CPU" "$B_BB_RSS" "$rw" >>"$OUT"
  echo
  cat "$OUT"
}

main() {
  ensure_tools
  mkdir -p "$(dirname "$OUT")"
  # Other work on the machine skews requests/s far more than CPU-seconds per request;
  # record how busy it was so a reader can tell.
  LOADAVG0=$(cut -d' ' -f1 /proc/loadavg)
  awk -v l="$LOADAVG0" 'BEGIN { exit !(l > 1.0) }' &&
    log "warning: load average $LOADAVG0 at start; rates will be noisy, compare per-CPU-second figures"
  log "duration ${DURATION}s, $(nproc) cpus; fleet cpu $FLEET_CPU, wrk cpu $LOAD_CPU, peer cpu $PEER_CPU"
  start_fleet
  log "(a) wrk -t1 -c$WRK_CONNS -d${DURATION}s -> fleet /ok"
  run_fleet_wrk
  start_blackbox
  log "(b) wrk -t1 -c$BB_CONNS -d${DURATION}s -> blackbox /probe -> fleet /ok"
  run_blackbox
  # Free the exporter's core before ringwatch gets it.
  kill "$BB_PID" 2>/dev/null || true
  if [ "$RINGWATCH" = 1 ]; then
    log "(c) ringwatch, $RW_SERVICES services at $RW_INTERVAL"
    run_ringwatch
  fi
  report
}

main "$@"
