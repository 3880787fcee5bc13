#!/usr/bin/env bash
# Builds the release binary, installs the load tools when missing, runs bench/run.py.
# Loopback only, bounded in time. Do not run while anything else compiles.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx; }
command -v oha >/dev/null || cargo install oha --locked
cargo build --release --bin tollgate
exec python3 bench/run.py "$@"
