#!/usr/bin/env bash
# PostgreSQL store performance, for docs/perf.md: everything on a private server (initdb in a
# temp dir, default settings, its own port) so nothing else shares it, all in one run.
#
#  1. write throughput: the same ROWS results (SERVICES services probed once a second)
#     - unnest vs copy, alternated RUNS (3) times: ringwatch's batch statement (INSERT ..
#       unnest .. ON CONFLICT) against COPY into a staging table + INSERT .. ON CONFLICT,
#       the same batches of BATCH rows;
#     - through ringwatch's writer (queue -> writer thread -> the batch statement),
#     - with psql \copy straight into results (the floor),
#     (bench/benches/pg_write.rs; server CPU = the postmaster's live and reaped children)
#     each as results per CPU-second of client + server processes, plus the wall-clock rate;
#  2. history: the first page (limit 100) of one service's results through the real HTTP API
#     with HISTORY_ROWS results stored over 10 days (curl, 20 requests, median and max);
#  3. retention: dropping one day (HISTORY_ROWS / 10 results) with the statement ringwatch uses.
#
# Knobs: ROWS (1000000), SERVICES (20000), BATCH (65536), HISTORY_ROWS (10000000),
# SKIP_HISTORY=1 to run the write part only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${ROWS:-1000000}" SERVICES="${SERVICES:-20000}" BATCH="${BATCH:-65536}"
HISTORY_ROWS="${HISTORY_ROWS:-10000000}"
export ROWS SERVICES BATCH

pgbin="$(dirname "$(readlink -f "$(command -v initdb || echo /usr/lib/postgresql/15/bin/initdb)")")"
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
work="$(mktemp -d)"
[ "$(id -u)" = 0 ] && chown postgres: "$work"
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
cleanup() {
  if [ -n "${rw_pid:-}" ]; then kill "$rw_pid" 2>/dev/null || true; fi
  as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT
as_pg "$pgbin/initdb" -A trust -U postgres -E UTF8 -D "$work/data" >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/server.log" -w \
  -o "-p $port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
pg_pid="$(head -n 1 "$work/data/postmaster.pid")"
psql_() { PGOPTIONS='-c client_min_messages=warning' psql -X -q -h 127.0.0.1 -p "$port" -U postgres "$@"; }
url() { echo "postgres://postgres@127.0.0.1:$port/$1"; }

echo "# machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(psql --version)"
echo "# rows=$ROWS services=$SERVICES batch=$BATCH"
cargo bench -q -p ringwatch-bench --bench pg_write --no-run >/dev/null 2>&1 || cargo bench -p ringwatch-bench --bench pg_write --no-run
bench() { PG_PID="$pg_pid" cargo bench -q -p ringwatch-bench --bench pg_write 2>/dev/null; }

# Each variant into a fresh database (same schema, made by ringwatch's migrations).
fresh() { psql_ -d postgres -c "DROP DATABASE IF EXISTS $1" -c "CREATE DATABASE $1"; }
# A/B of the two batch statements, alternated RUNS times (the same batches, no queue).
for _ in $(seq 1 "${RUNS:-3}"); do
  for mode in unnest copy; do
    fresh "w_$mode"
    MODE=$mode PG_URL="$(url "w_$mode")" bench
    psql_ -d postgres -c CHECKPOINT
  done
done
# ringwatch end to end: records through the writer queue and thread.
fresh w_writer
MODE=writer PG_URL="$(url w_writer)" bench
psql_ -d postgres -c CHECKPOINT

# The floor: psql \copy of the same rows into the same (empty) table.
fresh w_floor
MODE=psql PG_URL="$(url w_floor)" bench

[ "${SKIP_HISTORY:-0}" = 1 ] && exit 0

# History: HISTORY_ROWS results over 10 days (1,000 services, the measured one among them).
fresh hist
printf 'server: {listen: 127.0.0.1:%s, shards: 2}\nstorage: {kind: postgres, url: "%s"}\nlog: {level: warn}\n' \
  "$((port + 1))" "$(url hist)" > "$work/hist.yaml"
cargo run -q --release -p ringwatch --bin ringwatch -- migrate --config "$work/hist.yaml" >/dev/null
now_ms=$(( $(date +%s) * 1000 ))
day0=$(( now_ms / 86400000 - 9 ))
sid="$(python3 - <<'PY'
# ServiceId::from_name("big"): FNV-1a 64 of the name, top bit cleared.
h = 0xcbf29ce484222325
for b in b"big":
    h = ((h ^ b) * 0x100000001b3) & 0xffffffffffffffff
print(h & 0x7fffffffffffffff)
PY
)"
per_day=$(( HISTORY_ROWS / 10 ))
start_fill=$(date +%s)
for d in $(seq 0 9); do
  from=$(( (day0 + d) * 86400000 ))
  name="results_$(date -u -d "@$((from / 1000))" +%Y%m%d)"
  psql_ -d hist -c "CREATE TABLE IF NOT EXISTS $name PARTITION OF results FOR VALUES FROM ($from) TO ($((from + 86400000)))"
  # 1,000 services, one result each every 86.4 s (per_day / 1000 per service and day); service
  # 0 is the measured one.
  psql_ -d hist -c "INSERT INTO results SELECT CASE WHEN s = 0 THEN $sid ELSE s END, $from + (i * 86400000::bigint / ($per_day / 1000)) + s, $from + i, 1234, 100, 0, 900, 200, 512, NULL, NULL FROM generate_series(0, $per_day / 1000 - 1) i, generate_series(0, 999) s"
done
psql_ -d hist -c "VACUUM ANALYZE results"
echo "# history: $(psql_ -d hist -Atc 'SELECT COUNT(*) FROM results') results in 10 daily partitions (filled in $(( $(date +%s) - start_fill )) s)"
psql_ -d hist -c "INSERT INTO services VALUES ($sid, 'big', 'http://127.0.0.1:9/', 'api', '{\"name\":\"big\",\"url\":\"http://127.0.0.1:9/\",\"paused\":true}', 0, 0, NULL)"
cargo build -q --release -p ringwatch --bin ringwatch
target/release/ringwatch run --config "$work/hist.yaml" 2>"$work/rw.log" &
rw_pid=$!
for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$((port + 1))/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
times=()
for _ in $(seq 1 20); do
  times+=("$(curl -s -o /dev/null -w '%{time_total}' "http://127.0.0.1:$((port + 1))/api/v1/services/big/results?limit=100")")
done
printf '%s\n' "${times[@]}" | sort -n | awk '{ a[NR] = $1 * 1000 } END { printf "history first page (limit 100, %d requests): median %.1f ms, max %.1f ms\n", NR, a[int((NR + 1) / 2)], a[NR] }'
echo "# page body: $(curl -s "http://127.0.0.1:$((port + 1))/api/v1/services/big/results?limit=100" | head -c 160)..."
psql_ -d hist -c "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) SELECT * FROM results WHERE service_id = $sid AND scheduled_at >= -9223372036854775808 AND scheduled_at < 9223372036854775807 ORDER BY scheduled_at DESC LIMIT 100" | sed 's/^/#   /'
kill "$rw_pid"; wait "$rw_pid" 2>/dev/null || true; rw_pid=

# Retention: drop the oldest day, as ringwatch's retention step does (one statement).
oldest="$(psql_ -d hist -Atc "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = 'results'::regclass ORDER BY 1 LIMIT 1")"
echo "# retention: $oldest holds $(psql_ -d hist -Atc "SELECT COUNT(*) FROM $oldest") results"
psql_ -d hist -c '\timing on' -c "BEGIN" -c "SET LOCAL lock_timeout = '5s'" -c "DROP TABLE IF EXISTS $oldest" -c "COMMIT" | grep -E 'Time|DROP' | sed 's/^/retention: /'
