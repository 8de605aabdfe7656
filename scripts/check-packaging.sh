#!/usr/bin/env bash
# Static checks of the packaging (no container engine, no systemd as PID 1 needed):
# - compose.yaml parses, both profiles (docker-compose 1.29 from Debian: `config -q`);
# - the configs it mounts pass `ringwatch check` (cluster.yaml too, strictly, with placeholder
#   tokens);
# - the systemd unit and the cluster template (`ringwatch@.service`, as one instance per role)
#   pass `systemd-analyze verify` (copies whose ExecStart points at the built binary: verify
#   refuses a unit whose binary does not exist) without a warning, and keep their sandbox
#   (`systemd-analyze security --offline` exposure <= 2.0);
# - the alert rules pass `promtool check rules` and their unit tests;
# - the Dockerfile's dependency layer: the stub workspace loads with Cargo.lock (--locked),
#   and every file the Dockerfile copies from the context is let through by .dockerignore.
# Installs docker-compose / promtool with apt when missing (root). Seconds after that.
# RINGWATCH_BIN overrides the binary (default target/debug/ringwatch, built when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

need=()
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "check-packaging: missing ${need[*]}: run as root or install them" >&2
    exit 1
  fi
  echo "check-packaging: installing ${need[*]} ..." >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
ok() { echo "check-packaging: ok: $*"; }
fail() { echo "check-packaging: FAILED: $*" >&2; exit 1; }

# --- the binary (the same debug build scripts/test.sh makes next; a no-op when fresh) ---
bin=${RINGWATCH_BIN:-$root/target/debug/ringwatch}
if [ -z "${RINGWATCH_BIN:-}" ]; then
  cargo build -q -p ringwatch --bin ringwatch
fi
[ -x "$bin" ] || fail "no ringwatch binary at $bin"

# --- configs ---
for cfg in packaging/compose/standalone.yaml packaging/systemd/ringwatch.yaml; do
  "$bin" check --config "$cfg" >/dev/null || fail "ringwatch check $cfg"
  ok "ringwatch check $cfg"
done
# The tokens it names come from the environment at run time; placeholders stand in here.
# Strict: any error fails (the cluster keys are the binary's own now).
out=$(RINGWATCH_WRITE_TOKEN=check-only-placeholder-write RINGWATCH_READ_TOKEN=check-only-placeholder-read \
  "$bin" check --config packaging/compose/cluster.yaml 2>&1) ||
  fail "ringwatch check packaging/compose/cluster.yaml: $out"
ok "ringwatch check packaging/compose/cluster.yaml"

# --- compose ---
docker-compose -f compose.yaml --profile standalone --profile cluster config -q ||
  fail "docker-compose config"
ok "compose.yaml (profiles standalone, cluster)"

# --- systemd ---
mkdir -p "$tmp/systemd"
# check_unit SOURCE NAME: verify and rate a copy named NAME (a template is checked as one of
# its instances: verify resolves %i only in an instance's name).
check_unit() {
  local unit=$tmp/systemd/$2 verify
  sed "s#/usr/local/bin/ringwatch#$bin#g" "$1" >"$unit"
  verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $2: $verify"
  # verify exits 0 on unknown keys and bad values: any output is a finding.
  [ -z "$verify" ] || fail "systemd-analyze verify $2: $verify"
  systemd-analyze security --offline=yes --threshold=20 "$unit" >"$tmp/security.txt" 2>&1 ||
    fail "$2: exposure above 2.0: $(tail -1 "$tmp/security.txt")"
  ok "systemd unit $2 ($(grep -o 'Overall exposure level.*' "$tmp/security.txt"))"
}
check_unit packaging/systemd/ringwatch.service ringwatch.service
for role in scheduler worker ingest gateway; do
  check_unit packaging/systemd/ringwatch@.service "ringwatch@$role.service"
done

# --- alert rules ---
promtool check rules packaging/prometheus/alerts.yml >/dev/null || fail "promtool check rules"
(cd packaging/prometheus && promtool test rules alerts_test.yml >/dev/null) ||
  fail "promtool test rules packaging/prometheus/alerts_test.yml"
ok "alert rules and their tests"

# --- Dockerfile ---
mkdir -p "$tmp/stub/loadtest" "$tmp/stub/bench"
cp Cargo.toml Cargo.lock "$tmp/stub/"
cp loadtest/Cargo.toml "$tmp/stub/loadtest/"
cp bench/Cargo.toml "$tmp/stub/bench/"
sh packaging/docker/stub-workspace.sh "$tmp/stub"
# `cargo fetch` loads every member's targets (a missing bench file fails here) and the lock.
(cd "$tmp/stub" && cargo fetch --locked -q) || fail "Dockerfile dependency layer (stub workspace)"
# Sources of COPY lines without --from must be let through by .dockerignore ("!path").
while read -r src; do
  grep -qxF "!$src" .dockerignore || grep -qxF "!$src/" .dockerignore ||
    fail ".dockerignore leaves out $src, which the Dockerfile copies"
done < <(awk '$1 == "COPY" && $2 !~ /^--from/ { for (i = 2; i < NF; i++) if ($i !~ /^--/) print $i }' Dockerfile |
  sed 's#/$##')
ok "Dockerfile dependency layer and .dockerignore"
