#!/usr/bin/env bash
# Installs the WebSocket peer's dependency (the `ws` package from npm) into target/ws-peer.
# Idempotent: does nothing when it is already there.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR="$ROOT/target/ws-peer"
if [ -d "$DIR/node_modules/ws" ]; then
  echo "install-ws-peer: ws present in $DIR"
  exit 0
fi
if ! command -v npm >/dev/null 2>&1; then
  [ "$(id -u)" = 0 ] || { echo "install-ws-peer: npm missing; run as root" >&2; exit 1; }
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
npm install --silent --no-audit --no-fund --prefix "$DIR" ws@8
echo "install-ws-peer: installed ws $(node -p "require('$DIR/node_modules/ws/package.json').version")"
