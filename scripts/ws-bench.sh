#!/usr/bin/env bash
# WebSocket fan-out benchmark: ringwatch (one shard, pinned to SERVER_CPU) against a Node `ws`
# broadcast server (the peer, same CPU), both measured by the same client swarm
# (`ringwatch-loadtest swarm`, pinned to CLIENT_CPU, clients spread over 127.0.x.y sources).
#
# Scenarios (each for ringwatch, then the peer):
#   idle  : CLIENTS clients connected and subscribed to nothing; RSS per client
#   b1    : one broadcast per second to CLIENTS clients; latency at the clients (HDR)
#   b10   : ten events per second to CLIENTS clients (100k frames/s offered at 10k clients);
#           delivered frames/s and server CPU per delivery
# ringwatch's events come from services probing the fleet's /flap/1000 (one status change per
# second each); `at` in every event is the status-change time, and the swarm records
# arrival - at. The peer stamps `at` when it broadcasts.
#
#   floor : no server at all: `send_floor`, a bare send() loop from SERVER_CPU to CLIENTS
#           loopback clients, one broadcast per second; the least any one-core server can
#           take per client on this machine (latency at the clients, CPU per send)
# CASES selects what runs (default "rw peer floor").
# Knobs: CLIENTS (10000), DURATION (20), WARMUP (3), SERVER_CPU (0), CLIENT_CPU (1),
# RW_PORT (18180), PEER_PORT (18190), FLEET_PORT (20600), OUT (target/ws-bench.txt),
# RW_BIN (the ringwatch binary to measure; default target/release/ringwatch).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CLIENTS=${CLIENTS:-10000}
DURATION=${DURATION:-20}
WARMUP=${WARMUP:-3}
SERVER_CPU=${SERVER_CPU:-0}
CLIENT_CPU=${CLIENT_CPU:-1}
RW_PORT=${RW_PORT:-18180}
PEER_PORT=${PEER_PORT:-18190}
FLEET_PORT=${FLEET_PORT:-20600}
OUT=${OUT:-$ROOT/target/ws-bench.txt}
B=$ROOT/target/release/ringwatch-loadtest
RW=${RW_BIN:-$ROOT/target/release/ringwatch}
ulimit -n "$(ulimit -Hn)"

"$ROOT/scripts/install-ws-peer.sh" >&2
(cd "$ROOT" && cargo build --release -q -p ringwatch -p ringwatch-loadtest)

WORK=$(mktemp -d /tmp/ws-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "ws-bench: $*" >&2; }
field() { sed -E "s/.*\"$1\":([0-9.]+).*/\1/"; }
cpu() { "$B" procstat --pid "$1" | field cpu_seconds; }
rss() { "$B" procstat --pid "$1" | field rss_kib; }
# A new block of source addresses for every swarm run, so TIME_WAIT never runs out.
echo 0 >"$WORK/run"
swarm() { # swarm PORT SUBSCRIBE WARMUP DURATION
  # Callers run this in subshells: keep the run counter in a file.
  RUN=$(($(cat "$WORK/run") + 1))
  echo "$RUN" >"$WORK/run"
  timeout 300 taskset -c "$CLIENT_CPU" "$B" swarm --server "127.0.0.1:$1" --clients "$CLIENTS" \
    --source "127.0.$((RUN * 10)).1" --sources 8 --cpus "$CLIENT_CPU" \
    --subscribe "$2" --warmup "$3" --duration "$4" --driver legacy 2>>"$WORK/swarm.log"
}

"$B" fleet --listen 127.0.0.1 --ports "$FLEET_PORT" --threads 1 --cpus "$CLIENT_CPU" >"$WORK/fleet.log" 2>&1 &
PIDS+=($!)

rw_config() { # rw_config NSERVICES [SPREAD]
  # With SPREAD=1 service i flaps with period 1000+7i ms, so the ten status changes per
  # second are spread over the second (like the peer's timer) instead of landing together.
  cat <<YAML
server:
  listen: 127.0.0.1:$RW_PORT
  shards: 1
  pin: false
  limits:
    max_connections: 19000
storage:
  kind: sqlite
  path: $WORK/rw.db
log:
  level: warn
services:
YAML
  for i in $(seq 1 "$1"); do
    period=1000
    [ "${2:-0}" = 1 ] && period=$((1000 + 7 * (i - 1)))
    printf '  - name: flap-%d\n    url: http://127.0.0.1:%d/flap/%d?i=%d\n    interval: 100ms\n    timeout: 90ms\n' "$i" "$FLEET_PORT" "$period" "$i"
  done
}

start_rw() { # start_rw NSERVICES [SPREAD]
  rm -f "$WORK"/rw.db*
  rw_config "$1" "${2:-0}" >"$WORK/rw.yaml"
  taskset -c "$SERVER_CPU" "$RW" run --config "$WORK/rw.yaml" >"$WORK/rw.log" 2>&1 &
  SRV=$!
  PIDS+=("$SRV")
  for _ in $(seq 100); do curl -fs "127.0.0.1:$RW_PORT/readyz" >/dev/null 2>&1 && return; sleep 0.1; done
  log "ringwatch did not start"; cat "$WORK/rw.log" >&2; exit 1
}
start_peer() { # start_peer RATE [START_AFTER_CLIENTS]
  NODE_PATH="$ROOT/target/ws-peer/node_modules" taskset -c "$SERVER_CPU" node "$ROOT/scripts/ws-peer/server.js" "$PEER_PORT" "$1" "${2:-0}" >"$WORK/peer.log" 2>&1 &
  SRV=$!
  PIDS+=("$SRV")
  sleep 1
}
stop_srv() { kill "$SRV" 2>/dev/null || true; wait "$SRV" 2>/dev/null || true; sleep 1; }

run_case() { # run_case NAME PORT SUBSCRIBE
  # Server CPU is sampled over the measurement window only: from WARMUP seconds after every
  # client is connected (counted with ss on the server's port) for DURATION seconds.
  local c0 c1 res n
  swarm "$2" "$3" "$WARMUP" "$DURATION" >"$WORK/swarm.out" &
  local sw=$!
  for _ in $(seq 1500); do
    n=$(ss -Htn state established "( sport = :$2 )" | wc -l)
    [ "$n" -ge "$CLIENTS" ] && break
    kill -0 "$sw" 2>/dev/null || break
    sleep 0.2
  done
  sleep "$WARMUP"
  c0=$(cpu "$SRV")
  sleep "$DURATION"
  c1=$(cpu "$SRV")
  wait "$sw" || true
  res=$(cat "$WORK/swarm.out")
  local ev
  ev=$(echo "$res" | field events)
  echo "$1 $res cpu_seconds=$(awk "BEGIN{printf \"%.3f\", $c1-$c0}") us_cpu_per_delivery=$(awk "BEGIN{ if ($ev>0) printf \"%.2f\", ($c1-$c0)*1e6/$ev; else print \"n/a\"}") (server cpu over the window)"
}

{
  echo "# ws-bench $(date -u +%FT%TZ) clients=$CLIENTS duration=${DURATION}s server_cpu=$SERVER_CPU client_cpu=$CLIENT_CPU"
  echo "# machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r)"

  if [[ " ${CASES:-rw peer floor} " == *" floor "* ]]; then
    RUN=$(($(cat "$WORK/run") + 1)); echo "$RUN" >"$WORK/run"
    echo "floor b1 $(timeout 300 "$ROOT/target/release/send_floor" --clients "$CLIENTS" --rounds 5 \
      --source "127.0.$((RUN * 10)).1" --sources 8 --server-cpu "$SERVER_CPU" --client-cpu "$CLIENT_CPU" 2>>"$WORK/swarm.log")"
  fi
  if [[ " ${CASES:-rw peer floor} " == *" rw "* ]]; then
  # idle RSS: ringwatch
  start_rw 1
  r0=$(rss "$SRV")
  swarm "$RW_PORT" '{"op":"subscribe","filter":{"services":["none"]}}' 1 3 >/dev/null &
  SW=$!
  sleep 2; for _ in $(seq 60); do n=$(curl -fs "127.0.0.1:$RW_PORT/metrics" | awk '/^ringwatch_ws_clients /{print $2}'); [ "${n:-0}" -ge "$CLIENTS" ] && break; sleep 0.5; done
  r1=$(rss "$SRV")
  echo "ringwatch idle: clients=$n rss_before_kib=$r0 rss_after_kib=$r1 bytes_per_client=$(awk "BEGIN{printf \"%.0f\", ($r1-$r0)*1024/$CLIENTS}")"
  wait "$SW" || true
  # b1
  res=$(run_case "ringwatch b1" "$RW_PORT" '{"op":"subscribe"}')
  echo "$res"
  curl -fs "127.0.0.1:$RW_PORT/metrics" | grep -E '^ringwatch_ws_(push_latency_seconds\{|coalesced|writes_total|messages_sent|dropped_total)' | tr '\n' ' '; echo
  stop_srv
  # b10: ten services flapping in phase (bursts), then spread over the second
  for spread in 0 1; do
    start_rw 10 "$spread"
    run_case "ringwatch b10 spread=$spread" "$RW_PORT" '{"op":"subscribe"}'
    curl -fs "127.0.0.1:$RW_PORT/metrics" | grep -E '^ringwatch_ws_(push_latency_seconds\{|coalesced|writes_total|messages_sent|dropped_total)|^ringwatch_transitions_total' | tr '\n' ' '; echo
    stop_srv
  done

  fi
  if [[ " ${CASES:-rw peer floor} " == *" peer "* ]]; then
  # peer
  start_peer 0
  r0=$(rss "$SRV")
  swarm "$PEER_PORT" '{"op":"subscribe"}' 1 3 >/dev/null &
  SW=$!
  sleep 8
  r1=$(rss "$SRV")
  echo "peer idle: rss_before_kib=$r0 rss_after_kib=$r1 bytes_per_client=$(awk "BEGIN{printf \"%.0f\", ($r1-$r0)*1024/$CLIENTS}")"
  wait "$SW" || true
  stop_srv
  start_peer 1
  run_case "peer b1" "$PEER_PORT" '{"op":"subscribe"}'
  stop_srv
  # The peer cannot accept 10k clients while broadcasting 10/s: let them connect first.
  start_peer 10 "$CLIENTS"
  run_case "peer b10" "$PEER_PORT" '{"op":"subscribe"}'
  stop_srv
  fi
  echo "# swarm log:"; sed 's/^/#   /' "$WORK/swarm.log"
} | tee "$OUT"
