#!/usr/bin/env bash
# Stops a cluster started by scripts/cluster-up.sh and removes its directory.
#
# Usage: scripts/cluster-down.sh [DIR]
#   DIR  the directory cluster-up.sh printed; default: the only ringwatch-cluster.* directory
#        in ${TMPDIR:-/tmp} (with several, it names them and stops nothing).
# It signals exactly the processes in DIR/pids (`NAME PID STARTTIME`; a PID whose start time
# differs is another process by now and is left alone), in order: the ringwatch nodes
# (SIGTERM: probes finish, results drain; up to 30 s), the target, Redis (SIGTERM: it writes
# its append-only file), PostgreSQL (SIGINT: fast shutdown). Whatever is still running after
# its bound gets SIGKILL. The directory is removed only when every process is gone.
set -euo pipefail

log() { echo "cluster-down: $*" >&2; }
die() { echo "cluster-down: error: $*" >&2; exit 1; }

case "${1:-}" in
  -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
esac
[ $# -le 1 ] || die "usage: cluster-down.sh [DIR]"
dir=${1:-}
if [ -z "$dir" ]; then
  shopt -s nullglob
  found=("${TMPDIR:-/tmp}"/ringwatch-cluster.*/.ringwatch-cluster)
  shopt -u nullglob
  case ${#found[@]} in
    0) die "no cluster directory in ${TMPDIR:-/tmp}; pass the one cluster-up.sh printed" ;;
    1) dir=$(dirname "${found[0]}") ;;
    *) die "several clusters, pass one of: $(printf '%s ' "${found[@]%/.ringwatch-cluster}")" ;;
  esac
fi
dir=${dir%/}
[ -d "$dir" ] || die "no directory $dir"
# The marker keeps this script from removing a directory that is not a cluster's.
[ -f "$dir/.ringwatch-cluster" ] || die "$dir was not made by cluster-up.sh (no .ringwatch-cluster)"

# alive PID STARTTIME: still running (not gone, not a zombie, not a reused PID).
alive() {
  local stat f
  read -r stat 2>/dev/null <"/proc/$1/stat" || return 1
  read -ra f <<<"${stat##*) }"
  [ "${f[0]}" != Z ] && [ "${f[19]}" = "$2" ]
}

names=()
declare -A pid=() start=()
if [ -f "$dir/pids" ]; then
  while read -r name p st; do
    [ -n "$name" ] || continue
    [[ "$p" =~ ^[0-9]+$ && "$st" =~ ^[0-9]+$ ]] || die "$dir/pids: bad line: $name $p $st"
    names+=("$name")
    pid[$name]=$p
    start[$name]=$st
  done <"$dir/pids"
fi

# stop SIGNAL SECONDS NAME...: signals them, waits until all are gone, SIGKILL after SECONDS.
# Returns non-zero when one survives even SIGKILL (5 s more).
stop() {
  local sig=$1 secs=$2 n left deadline
  shift 2
  left=()
  for n in "$@"; do
    if alive "${pid[$n]}" "${start[$n]}"; then
      kill -s "$sig" "${pid[$n]}" 2>/dev/null || true
      left+=("$n")
    fi
  done
  [ "${#left[@]}" -gt 0 ] || return 0
  log "stopping ${left[*]} (SIG$sig) ..."
  for phase in "$sig" KILL; do
    deadline=$((SECONDS + secs))
    while :; do
      local still=()
      for n in "${left[@]}"; do
        alive "${pid[$n]}" "${start[$n]}" && still+=("$n")
      done
      [ "${#still[@]}" -gt 0 ] || return 0
      left=("${still[@]}")
      [ "$SECONDS" -lt "$deadline" ] || break
      sleep 0.1
    done
    if [ "$phase" = KILL ]; then
      log "still running after SIGKILL: ${left[*]}"
      return 1
    fi
    log "no exit within ${secs}s: SIGKILL to ${left[*]}"
    for n in "${left[@]}"; do
      kill -s KILL "${pid[$n]}" 2>/dev/null || true
    done
    secs=5
  done
}

nodes=()
for n in "${names[@]}"; do
  case "$n" in
    postgres | redis | target) ;;
    *) nodes+=("$n") ;;
  esac
done
has() { [ -n "${pid[$1]:-}" ]; }
ok=1
stop TERM 30 "${nodes[@]}" || ok=0
if has target; then stop TERM 5 target || ok=0; fi
if has redis; then stop TERM 15 redis || ok=0; fi
if has postgres; then stop INT 30 postgres || ok=0; fi
[ "$ok" = 1 ] || die "some processes did not stop; $dir is kept (logs in $dir/logs/)"
rm -rf -- "$dir"
log "stopped ${#names[@]} processes, removed $dir"
