#!/usr/bin/env bash
# Replays the hardening issue's attacks (wrong big keys, random model names, silent sockets,
# a 401 flood, huge upstream answers, absurd usage reports) against a release build and checks
# that memory, file descriptors and the usage table stay bounded. Loopback only; about a minute.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bin tollgate
exec python3 tests/attacks/replay.py target/release/tollgate
