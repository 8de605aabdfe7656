#!/usr/bin/env bash
# Cluster against standalone on the same targets, for docs/perf.md and docs/cluster.md
# (issue 13, item 8). A benchmark, not a test: it prints figures and asserts nothing.
#
# Everything runs on this machine in a temporary directory: a private PostgreSQL (initdb +
# pg_ctl on a free port, default settings: fsync on), a private Redis (`appendonly yes`,
# `appendfsync everysec`, as compose.yaml runs it), the loadtest fleet (FLEET_PORTS, one
# thread) and SERVICES services at 1 s on it, FLAPS of which flap (/flap/3000: a status change
# every 3 s each, so transitions keep coming for the latency clients).
#
# Cases (CASES, default "standalone-sqlite standalone-pg cluster"):
#   standalone-sqlite  one `ringwatch run` (STANDALONE_SHARDS shards), SQLite store
#   standalone-pg      the same process on the PostgreSQL store
#   cluster            for each W in WORKERS ("1 2 3"): one scheduler, one ingest, one gateway
#                      and W workers, each its own process (`--role R`, one shard each)
# Per case, after SETTLE seconds, over WINDOW seconds:
#   - probes/s (ringwatch_probes_total summed over the processes) and results stored/s;
#   - CPU of every ringwatch process, of redis-server and of PostgreSQL (the postmaster with
#     its live and reaped children), each as ms of CPU per second and in total as us per probe;
#   - CLIENTS WebSocket clients (`ringwatch-loadtest swarm`) on the gateway (or the standalone
#     process) measure probe completion -> receipt (`arrival - at`, HDR): p50/p99;
#   - the cluster's expired jobs and consumer lag (is it keeping up?).
# The fleet and the swarm are not counted (the same for every case).
#
# Knobs: SERVICES (2000), FLAPS (30), CLIENTS (200), SETTLE (10), WINDOW (20), WORKERS,
# CASES, STANDALONE_SHARDS (2), FLEET_PORTS (20800-20819), RINGWATCH_BIN, LOADTEST_BIN.
# Targets 127.0.0.1 only; every process it starts is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=${RINGWATCH_BIN:-$ROOT/target/release/ringwatch}
LT=${LOADTEST_BIN:-$ROOT/target/release/ringwatch-loadtest}
SERVICES=${SERVICES:-2000}
FLAPS=${FLAPS:-30}
CLIENTS=${CLIENTS:-200}
SETTLE=${SETTLE:-10}
WINDOW=${WINDOW:-20}
WORKERS=${WORKERS:-1 2 3}
CASES=${CASES:-standalone-sqlite standalone-pg cluster}
STANDALONE_SHARDS=${STANDALONE_SHARDS:-2}
FLEET_PORTS=${FLEET_PORTS:-20800-20819}
[ -x "$BIN" ] && [ -x "$LT" ] ||
  (cd "$ROOT" && timeout 1200 cargo build --release -q -p ringwatch -p ringwatch-loadtest)
ulimit -n "$(ulimit -Hn)"

log() { echo "cluster-bench: $*" >&2; }
die() { echo "cluster-bench: error: $*" >&2; exit 1; }
pgbin="$(dirname "$(readlink -f "$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)")")"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

WORK=$(mktemp -d /tmp/cluster-bench.XXXXXX)
chmod 0711 "$WORK"
mkdir "$WORK/pg" "$WORK/redis" "$WORK/logs"
[ "$(id -u)" = 0 ] && chown postgres: "$WORK/pg"
PIDS=() # ringwatch nodes of the running case
BG=()   # fleet, redis
cleanup() {
  local p
  for p in "${PIDS[@]}" "${BG[@]}"; do kill "$p" 2>/dev/null || true; done
  sleep 1
  for p in "${PIDS[@]}" "${BG[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  as_pg "$pgbin/pg_ctl" -D "$WORK/pg/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

mapfile -t ports < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(10)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
')
pg_port=${ports[0]}
redis_port=${ports[1]}

# --- the servers ------------------------------------------------------------------------------
as_pg "$pgbin/initdb" -A trust -U postgres -E UTF8 -D "$WORK/pg/data" >"$WORK/logs/initdb.log"
as_pg "$pgbin/pg_ctl" -D "$WORK/pg/data" -l "$WORK/pg/server.log" -w -t 60 \
  -o "-p $pg_port -k $WORK/pg -c listen_addresses=127.0.0.1 -c max_connections=200" start >/dev/null
pg_pid=$(head -n 1 "$WORK/pg/data/postmaster.pid")
psql_() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres "$@"; }
redis-server --port "$redis_port" --bind 127.0.0.1 --dir "$WORK/redis" --save "" \
  --appendonly yes --appendfsync everysec --logfile "$WORK/logs/redis.log" &
redis_pid=$!
BG+=("$redis_pid")
until [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]; do sleep 0.1; done
"$LT" fleet --listen 127.0.0.1 --ports "$FLEET_PORTS" --threads 1 >"$WORK/logs/fleet.log" 2>&1 &
BG+=($!)
sleep 1

# --- measuring --------------------------------------------------------------------------------
TCK=$(getconf CLK_TCK)
cpu_ms() { # user+system CPU of one process (all threads), ms
  awk -v t="$TCK" '{sub(/^.*\) /, ""); printf "%d", ($12 + $13) * 1000 / t}' "/proc/$1/stat"
}
pg_cpu_ms() { # the postmaster, its reaped children and its live children, ms
  local total c
  total=$(awk -v t="$TCK" '{sub(/^.*\) /, ""); printf "%d", ($12 + $13 + $14 + $15) * 1000 / t}' "/proc/$pg_pid/stat")
  for c in $(pgrep -P "$pg_pid"); do
    total=$((total + $(cpu_ms "$c" 2>/dev/null || echo 0)))
  done
  echo "$total"
}
pg_commits() { psql_ -tAc "SELECT sum(xact_commit) FROM pg_stat_database"; }
redis_cmds() { redis-cli -p "$redis_port" info stats | awk -F: '/^total_commands_processed/ {printf "%d", $2}'; }
rss_mib() { awk '/^VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$1/status"; }
metric_sum() { # metric_sum PORT NAME: the sum of every series of NAME
  curl -s -m 5 "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 == n || index($1, n "{") == 1 {s += $2} END {printf "%d", s}'
}

config() { # config STORAGE_YAML SHARDS CLUSTER(0|1)
  cat <<YAML
server: {listen: 127.0.0.1:${ports[2]}, shards: $2, pin: false, shutdown_grace: 2s,
         limits: {max_connections: 5000}}
storage: $1
log: {level: warn}
YAML
  [ "$3" = 1 ] && echo "cluster: {redis: \"redis://127.0.0.1:$redis_port\", lease_ttl: 2s, claim_idle: 5s}"
  echo "services:"
  python3 - "$FLEET_PORTS" "$SERVICES" "$FLAPS" <<'PY'
import sys
lo, hi = map(int, sys.argv[1].split("-"))
n, flaps = int(sys.argv[2]), int(sys.argv[3])
ports = list(range(lo, hi + 1))
for i in range(n):
    path = f"/flap/3000?i={i}" if i < flaps else f"/ok?i={i}"
    print(f"  - {{name: s{i}, url: 'http://127.0.0.1:{ports[i % len(ports)]}{path}', interval: 1s, timeout: 900ms}}")
PY
}

fresh_db() { # fresh_db NAME -> the storage YAML for it, migrated
  psql_ -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"
  echo "{kind: postgres, url: \"postgres://postgres@127.0.0.1:$pg_port/$1\"}"
}

declare -A NODE_PORT
start_node() { # start_node NAME CONFIG PORT [ROLE]
  local args=(run --config "$2" --listen "127.0.0.1:$3")
  [ -n "${4:-}" ] && args+=(--role "$4")
  "$BIN" "${args[@]}" >"$WORK/logs/$1.log" 2>&1 &
  PIDS+=($!)
  NODE_PORT[$1]=$3
  NODES+=("$1:$!")
}
wait_ready() {
  local n deadline=$((SECONDS + 90))
  for n in "${NODES[@]}"; do
    until "$BIN" healthcheck --url "http://127.0.0.1:${NODE_PORT[${n%%:*}]}" --timeout 1s >/dev/null 2>&1; do
      kill -0 "${n##*:}" 2>/dev/null || die "${n%%:*} exited: $(tail -n 5 "$WORK/logs/${n%%:*}.log")"
      [ "$SECONDS" -lt "$deadline" ] || die "${n%%:*} not ready in 90 s"
      sleep 0.2
    done
  done
}
stop_nodes() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  PIDS=()
  NODES=()
}

# sample TOTALS CPU STORED_METRIC: counters summed over the nodes and the servers' figures
# into the associative array TOTALS (p probes, s stored, e expired, r Redis CPU, g PostgreSQL
# CPU, x PostgreSQL commits, k Redis commands), each node's CPU into CPU.
sample() {
  local -n totals=$1 cpu=$2
  local n port p=0 s=0 e=0
  for n in "${NODES[@]}"; do
    port=${NODE_PORT[${n%%:*}]}
    p=$((p + $(metric_sum "$port" ringwatch_probes_total)))
    s=$((s + $(metric_sum "$port" "$3")))
    e=$((e + $(metric_sum "$port" ringwatch_cluster_jobs_expired_total)))
    cpu[$n]=$(cpu_ms "${n##*:}")
  done
  totals=([p]=$p [s]=$s [e]=$e [r]=$(cpu_ms "$redis_pid") [g]=$(pg_cpu_ms) [x]=$(pg_commits)
    [k]=$(redis_cmds))
}

measure() { # measure CASE WS_PORT STORED_METRIC
  local name=$1 ws=$2 stored=$3 n
  declare -A a0 a1 c0 c1
  sleep "$SETTLE"
  "$LT" swarm --server "127.0.0.1:$ws" --clients "$CLIENTS" --source 127.0.40.1 --sources 4 \
    --warmup 1 --duration "$WINDOW" >"$WORK/swarm.out" 2>>"$WORK/logs/swarm.log" &
  local sw=$!
  sleep 1.5 # connected and warmed up: the window starts
  sample a0 c0 "$stored"
  sleep "$WINDOW"
  sample a1 c1 "$stored"
  wait "$sw" || true
  local p0=${a0[p]} p1=${a1[p]} s0=${a0[s]} s1=${a1[s]} e0=${a0[e]} e1=${a1[e]} r0=${a0[r]} \
    r1=${a1[r]} g0=${a0[g]} g1=${a1[g]} x0=${a0[x]} x1=${a1[x]} k0=${a0[k]} k1=${a1[k]}
  local probes=$((p1 - p0)) rw_cpu=0 roles="" lag
  for n in "${NODES[@]}"; do
    rw_cpu=$((rw_cpu + ${c1[$n]} - ${c0[$n]}))
    roles+=$(printf ' %s=%dms/s,%sMiB' "${n%%:*}" $(((${c1[$n]} - ${c0[$n]}) / WINDOW)) "$(rss_mib "${n##*:}")")
  done
  local redis_cpu=$((r1 - r0)) pg_cpu=$((g1 - g0))
  [ "$name" = "${name#cluster}" ] && redis_cpu=0 # standalone does not use Redis
  [ "$name" = standalone-sqlite ] && pg_cpu=0
  local total=$((rw_cpu + redis_cpu + pg_cpu))
  lag=$(for n in "${NODES[@]}"; do curl -s -m 5 "http://127.0.0.1:${NODE_PORT[${n%%:*}]}/metrics"; done |
    awk '/^ringwatch_cluster_consumer_lag/ {v[$1] = $2} END {for (k in v) printf "%s=%s ", k, v[k]}')
  awk -v c="$name" -v w="$WINDOW" -v p="$probes" -v s=$((s1 - s0)) -v e=$((e1 - e0)) \
    -v rw="$rw_cpu" -v r="$redis_cpu" -v g="$pg_cpu" -v t="$total" 'BEGIN {
      printf "%-20s probes/s %7.0f  stored/s %7.0f  expired %d  cpu ms/s: ringwatch %4.0f redis %4.0f postgres %4.0f total %4.0f  us/probe %6.1f\n",
        c, p / w, s / w, e, rw / w, r / w, g / w, t / w, (p > 0 ? t * 1000 / p : 0) }'
  echo "    per process:$roles"
  echo "    postgres commits/s $(((x1 - x0) / WINDOW)), redis commands/s $(((k1 - k0) / WINDOW))"
  echo "    clients: $(cat "$WORK/swarm.out")"
  [ -n "$lag" ] && echo "    $lag"
  return 0
}

# --- the cases --------------------------------------------------------------------------------
echo "# cluster-bench $(date -u +%FT%TZ) services=$SERVICES@1s flaps=$FLAPS clients=$CLIENTS settle=${SETTLE}s window=${WINDOW}s"
echo "# machine: $(nproc) cpus, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "# $("$BIN" --version 2>/dev/null || echo ringwatch), $(redis-server --version | cut -d' ' -f3), $("$pgbin/postgres" --version)"
NODES=()
for case_ in $CASES; do
  case "$case_" in
    standalone-sqlite)
      config "{kind: sqlite, path: $WORK/rw.db}" "$STANDALONE_SHARDS" 0 >"$WORK/sa.yaml"
      start_node standalone "$WORK/sa.yaml" "${ports[3]}"
      wait_ready
      measure standalone-sqlite "${ports[3]}" ringwatch_store_written_total
      stop_nodes
      ;;
    standalone-pg)
      config "$(fresh_db bench_sa)" "$STANDALONE_SHARDS" 0 >"$WORK/sapg.yaml"
      "$BIN" migrate --config "$WORK/sapg.yaml" >/dev/null
      start_node standalone "$WORK/sapg.yaml" "${ports[3]}"
      wait_ready
      measure standalone-pg "${ports[3]}" ringwatch_store_written_total
      stop_nodes
      ;;
    cluster)
      for w in $WORKERS; do
        redis-cli -p "$redis_port" flushall >/dev/null
        config "$(fresh_db "bench_c$w")" 1 1 >"$WORK/c.yaml"
        "$BIN" migrate --config "$WORK/c.yaml" >/dev/null
        start_node scheduler "$WORK/c.yaml" "${ports[3]}" scheduler
        start_node ingest "$WORK/c.yaml" "${ports[4]}" ingest
        start_node gateway "$WORK/c.yaml" "${ports[5]}" gateway
        for k in $(seq 1 "$w"); do
          start_node "worker-$k" "$WORK/c.yaml" "${ports[$((5 + k))]}" worker
        done
        wait_ready
        measure "cluster-${w}w" "${ports[5]}" ringwatch_cluster_results_ingested_total
        stop_nodes
      done
      ;;
    *) die "unknown case $case_ (standalone-sqlite, standalone-pg, cluster)" ;;
  esac
done
