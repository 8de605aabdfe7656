#!/bin/sh
# Gives every workspace member empty targets, so that `cargo build --locked -p ringwatch` can
# compile all dependencies from Cargo.toml, the member manifests and Cargo.lock alone: the
# Dockerfile's dependency layer. scripts/check-packaging.sh runs it on a copy of the manifests
# to catch a new member or bench that the layer would not know about.
#   usage: stub-workspace.sh [DIR]   (DIR holds Cargo.toml, Cargo.lock, loadtest/, bench/)
set -eu
cd "${1:-.}"
mkdir -p src loadtest/src bench/src bench/benches
echo 'fn main() {}' > src/main.rs
: > src/lib.rs
echo 'fn main() {}' > loadtest/src/main.rs
: > loadtest/src/lib.rs
: > bench/src/lib.rs
# One file per [[bench]] name (cargo refuses a manifest whose bench file is missing).
awk '/^\[\[bench\]\]/ { inb = 1; next } /^\[/ { inb = 0 }
     inb && /^name *=/ { gsub(/^name *= *"|"$/, ""); print }' bench/Cargo.toml |
  while read -r b; do
    echo 'fn main() {}' > "bench/benches/$b.rs"
  done
