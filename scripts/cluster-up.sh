#!/usr/bin/env bash
# A whole ringwatch cluster on this machine, no containers (docs/cluster.md, "Try it on one
# machine"). In a new temporary directory it starts:
# - a private PostgreSQL (initdb + pg_ctl on a free port, trust auth on 127.0.0.1, fsync off:
#   a throwaway; as the `postgres` OS user when run as root) with a database `ringwatch`, then
#   `ringwatch migrate`;
# - a private Redis (`appendonly yes`, a generated password, free port);
# - a small flapping HTTP target (scripts/cluster-target.py) and 20 services on it, 6 of which
#   flap (one shared config file, cluster.yaml);
# - the roles as separate processes: 2 schedulers, 2 workers, 1 ingest, 1 gateway, each
#   `ringwatch run --config cluster.yaml --role R --listen 127.0.0.1:PORT`.
# It waits until every node's /readyz is 200, then prints the URLs (gateway REST API and
# WebSocket, every node's /metrics), the directory and the PID file (`NAME PID STARTTIME`).
#
# Usage: scripts/cluster-up.sh [--wait]
#   --wait   stay in the foreground; Ctrl-C or SIGTERM stops the cluster and removes its files.
#   Without it the cluster keeps running: stop it with scripts/cluster-down.sh [DIR].
# Environment:
#   RINGWATCH_BIN           the binary (default target/release/ringwatch if present, else
#                           target/debug/ringwatch, built when missing)
#   CLUSTER_READY_TIMEOUT   seconds allowed for every node to become ready (default 90)
#   TMPDIR                  where the directory is made (default /tmp); as root it must be
#                           reachable by the postgres user
# Every wait is bounded; on any failure what was started is stopped and removed again.
set -euo pipefail

usage() { sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; }

wait_mode=0
for arg in "$@"; do
  case "$arg" in
    --wait) wait_mode=1 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cluster-up: unknown argument: $arg (try --help)" >&2; exit 2 ;;
  esac
done

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
ready_timeout=${CLUSTER_READY_TIMEOUT:-90}
started=0   # something may be running: the EXIT trap stops it unless handed over
handed_over=0
dir=
sleeper=

log() { echo "cluster-up: $*" >&2; }
die() { echo "cluster-up: error: $*" >&2; exit 1; }

# --- what is needed -------------------------------------------------------------------------
bin=${RINGWATCH_BIN:-}
if [ -z "$bin" ]; then
  if [ -x "$root/target/release/ringwatch" ]; then
    bin=$root/target/release/ringwatch
  else
    bin=$root/target/debug/ringwatch
    if [ ! -x "$bin" ]; then
      log "no ringwatch binary: building target/debug/ringwatch (a few minutes the first time) ..."
      (cd "$root" && cargo build -q -p ringwatch --bin ringwatch) || die "cargo build failed"
    fi
  fi
fi
[ -x "$bin" ] || die "RINGWATCH_BIN=$bin is not an executable file"
# One shared config needs `run --listen` (each node its own port).
run_help=$("$bin" run --help 2>/dev/null) || true
grep -q -- '--listen' <<<"$run_help" ||
  die "$bin is not a ringwatch binary with 'run --listen' (rebuild it)"

# A PostgreSQL server program: on PATH, else Debian's newest /usr/lib/postgresql/*/bin.
pg_tool() {
  local d
  if command -v "$1" >/dev/null 2>&1; then
    command -v "$1"
    return 0
  fi
  while read -r d; do
    if [ -x "$d/$1" ]; then
      echo "$d/$1"
      return 0
    fi
  done < <(printf '%s\n' /usr/lib/postgresql/*/bin | sort -rV)
  return 1
}
initdb=$(pg_tool initdb) || die "initdb not found (install postgresql)"
pg_ctl=$(pg_tool pg_ctl) || die "pg_ctl not found (install postgresql)"
psql=$(pg_tool psql) || die "psql not found (install postgresql-client)"
for tool in redis-server redis-cli python3 setsid; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done

is_root=0
[ "$(id -u)" = 0 ] && is_root=1
if [ "$is_root" = 1 ]; then
  id postgres >/dev/null 2>&1 || die "running as root needs a 'postgres' OS user for PostgreSQL"
fi
# PostgreSQL refuses to run as root: its programs run as the postgres user then.
as_pg() {
  if [ "$is_root" = 1 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# starttime PID: field 22 of /proc/PID/stat (with the PID, it names one process for ever).
starttime() {
  local stat f
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  read -ra f <<<"${stat##*) }"
  echo "${f[19]}"
}
# alive PID STARTTIME: still running (not gone, not a zombie, not a reused PID).
alive() {
  local stat f
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  read -ra f <<<"${stat##*) }"
  [ "${f[0]}" != Z ] && [ "${f[19]}" = "$2" ]
}
declare -A pid=() start=()

# --- stopping on failure or signal ----------------------------------------------------------
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$sleeper" ]; then
    kill "$sleeper" 2>/dev/null || true
  fi
  if [ "$started" = 1 ] && [ "$handed_over" = 0 ]; then
    # Interrupted during pg_ctl start: its server is ours too.
    local p st
    if [ -z "${pid[postgres]:-}" ] && p=$(head -n 1 "$dir/pg/data/postmaster.pid" 2>/dev/null) &&
      st=$(starttime "$p"); then
      echo "postgres $p $st" >>"$dir/pids"
    fi
    log "stopping what was started ..."
    "$here/cluster-down.sh" "$dir" >&2 || rc=1
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- the directory ----------------------------------------------------------------------------
dir=$(mktemp -d "${TMPDIR:-/tmp}/ringwatch-cluster.XXXXXX")
started=1
touch "$dir/.ringwatch-cluster" # cluster-down.sh removes only directories with this marker
mkdir "$dir/logs" "$dir/pg" "$dir/redis"
: >"$dir/pids"
if [ "$is_root" = 1 ]; then
  chmod 0711 "$dir" # the postgres user may pass through to pg/, nothing else
  chown postgres: "$dir/pg"
  as_pg test -w "$dir/pg" ||
    die "the postgres user cannot write $dir/pg: set TMPDIR to a directory it can traverse"
fi
log "directory $dir"

record() { # NAME PID
  local st
  st=$(starttime "$2") || die "$1 (pid $2) exited at once: $(tail -n 20 "$dir/logs/$1.log" 2>/dev/null)"
  pid[$1]=$2
  start[$1]=$st
  echo "$1 $2 $st" >>"$dir/pids"
}
# spawn NAME CMD...: in a session of its own (a Ctrl-C reaches only this script, which stops
# everything in order), stdin from /dev/null, output to logs/NAME.log.
spawn() {
  local name=$1
  shift
  setsid "$@" </dev/null >"$dir/logs/$name.log" 2>&1 &
  record "$name" "$!"
}
running() { alive "${pid[$1]}" "${start[$1]}"; }
fail_with_log() { # NAME MESSAGE
  die "$2; last lines of $dir/logs/$1.log:
$(tail -n 20 "$dir/logs/$1.log" 2>/dev/null)"
}

# Free loopback ports, distinct (all bound at once, then released).
mapfile -t ports < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(9)]
for s in socks:
    s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))
')
[ "${#ports[@]}" = 9 ] || die "could not pick free ports"
pg_port=${ports[0]}
redis_port=${ports[1]}
target_port=${ports[2]}
nodes=(ingest worker-1 worker-2 gateway scheduler-1 scheduler-2)
declare -A role port
i=3
for n in "${nodes[@]}"; do
  role[$n]=${n%-[0-9]}
  port[$n]=${ports[$i]}
  i=$((i + 1))
done

# --- PostgreSQL ---------------------------------------------------------------------------------
log "PostgreSQL on 127.0.0.1:$pg_port ..."
as_pg "$initdb" -A trust -U postgres -N -E UTF8 -D "$dir/pg/data" >"$dir/logs/initdb.log" 2>&1 ||
  fail_with_log initdb "initdb failed"
pg_started=0
as_pg "$pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
  -o "-p $pg_port -k '$dir/pg' -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off" \
  start >"$dir/logs/pg_ctl.log" 2>&1 && pg_started=1
# Recorded even when the start timed out, so that it is stopped too.
if [ -f "$dir/pg/data/postmaster.pid" ]; then
  record postgres "$(head -n 1 "$dir/pg/data/postmaster.pid")"
fi
[ "$pg_started" = 1 ] ||
  die "PostgreSQL did not start within 60 s: $(tail -n 20 "$dir/pg/server.log" 2>/dev/null)"
"$psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U postgres -d postgres \
  -c "CREATE ROLE ringwatch LOGIN" -c "CREATE DATABASE ringwatch OWNER ringwatch" \
  >"$dir/logs/createdb.log" 2>&1 || fail_with_log createdb "creating the database failed"

# --- Redis ----------------------------------------------------------------------------------------
log "Redis on 127.0.0.1:$redis_port ..."
(umask 077 && od -An -tx1 -N16 /dev/urandom | tr -d ' \n' >"$dir/redis.password")
redis_password=$(<"$dir/redis.password")
(
  umask 077
  cat >"$dir/redis/redis.conf" <<EOF
port $redis_port
bind 127.0.0.1
dir "$dir/redis"
daemonize no
save ""
appendonly yes
appendfsync everysec
requirepass $redis_password
EOF
)
spawn redis redis-server "$dir/redis/redis.conf"
deadline=$((SECONDS + 20))
until [ "$(REDISCLI_AUTH=$redis_password redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]; do
  running redis || fail_with_log redis "redis-server exited"
  [ "$SECONDS" -lt "$deadline" ] || fail_with_log redis "Redis did not answer within 20 s"
  sleep 0.1
done

# --- the target and the shared config -------------------------------------------------------------
spawn target python3 "$here/cluster-target.py" "$target_port"
deadline=$((SECONDS + 20))
until grep -q "listening" "$dir/logs/target.log" 2>/dev/null; do
  running target || fail_with_log target "the target exited"
  [ "$SECONDS" -lt "$deadline" ] || fail_with_log target "the target did not listen within 20 s"
  sleep 0.1
done

cfg=$dir/cluster.yaml
{
  cat <<EOF
# Generated by scripts/cluster-up.sh: one file for every node of this cluster. Each process
# gets its role with --role and its port with --listen (server.listen below is a default).
server:
  listen: 127.0.0.1:${port[gateway]}
  shards: 1
  pin: false
  shutdown_grace: 2s
storage:
  kind: postgres
  url: "postgres://ringwatch@127.0.0.1:$pg_port/ringwatch"   # trust auth on the private server
cluster:
  redis: "redis://127.0.0.1:$redis_port"
  password_file: redis.password     # relative to this file
  roles: [all]                      # each process: --role
  lease_ttl: 2s
  claim_idle: 5s
log:
  level: info
  format: text
services:
EOF
  for k in 1 2 3 4 5 6; do # flap every 3..8 s: transitions keep coming
    echo "  - {name: flap-$k, url: 'http://127.0.0.1:$target_port/flap/$((k + 2))000', interval: 1s, timeout: 500ms, tags: [flap]}"
  done
  for k in $(seq 1 12); do
    echo "  - {name: web-$k, url: 'http://127.0.0.1:$target_port/ok?i=$k', interval: 2s, timeout: 1s, tags: [steady]}"
  done
  for k in 1 2; do
    echo "  - {name: broken-$k, url: 'http://127.0.0.1:$target_port/status/503?i=$k', interval: 2s, timeout: 1s, tags: [broken]}"
  done
} >"$cfg"
"$bin" check --config "$cfg" >"$dir/logs/check.log" 2>&1 || fail_with_log check "ringwatch check refused $cfg"
"$bin" migrate --config "$cfg" >"$dir/logs/migrate.log" 2>&1 || fail_with_log migrate "ringwatch migrate failed"

# --- the roles ------------------------------------------------------------------------------------
log "starting ${#nodes[@]} nodes with $bin ..."
for n in "${nodes[@]}"; do
  spawn "$n" "$bin" run --config "$cfg" --role "${role[$n]}" --listen "127.0.0.1:${port[$n]}"
done
deadline=$((SECONDS + ready_timeout))
pending=("${nodes[@]}")
while :; do
  still=()
  for n in "${pending[@]}"; do
    running "$n" || fail_with_log "$n" "$n exited during start"
    "$bin" healthcheck --url "http://127.0.0.1:${port[$n]}" --timeout 1s >/dev/null 2>&1 ||
      still+=("$n")
  done
  [ "${#still[@]}" = 0 ] && break
  pending=("${still[@]}")
  if [ "$SECONDS" -ge "$deadline" ]; then
    for n in "${pending[@]}"; do
      echo "--- $n (last lines of $dir/logs/$n.log)" >&2
      tail -n 5 "$dir/logs/$n.log" >&2 || true
    done
    die "not ready within ${ready_timeout}s: ${pending[*]}"
  fi
  sleep 0.2
done

# --- ready ----------------------------------------------------------------------------------------
gw=127.0.0.1:${port[gateway]}
{
  echo "cluster-up: ready in ${SECONDS}s: ${#nodes[@]} nodes, 20 services (6 flapping)"
  echo "dir:        $dir"
  echo "pid file:   $dir/pids"
  echo "config:     $cfg"
  echo "logs:       $dir/logs/"
  echo "rest api:   http://$gw/api/v1/services"
  echo "websocket:  ws://$gw/ws"
  for n in "${nodes[@]}"; do
    printf 'metrics:    %-12s http://127.0.0.1:%s/metrics\n' "$n" "${port[$n]}"
  done
  echo "postgres:   postgres://ringwatch@127.0.0.1:$pg_port/ringwatch"
  echo "redis:      redis://127.0.0.1:$redis_port (password in $dir/redis.password)"
  echo "stop:       $here/cluster-down.sh $dir"
}

if [ "$wait_mode" = 0 ]; then
  handed_over=1
  exit 0
fi
echo "cluster-up: running; Ctrl-C stops it"
declare -A reported
while :; do
  sleep 1 &
  sleeper=$!
  wait "$sleeper" || true
  sleeper=
  for n in "${nodes[@]}" redis target postgres; do
    if [ -n "${pid[$n]:-}" ] && [ -z "${reported[$n]:-}" ] && ! running "$n"; then
      log "$n (pid ${pid[$n]}) exited; see $dir/logs/$n.log"
      reported[$n]=1
    fi
  done
done
