#!/usr/bin/env bash
# Runs every test: Rust unit and integration tests (on SQLite and on PostgreSQL) and the
# end-to-end test through the official OpenAI Python SDK, and the Grafana dashboards and alert
# rules against a real Prometheus.
# PostgreSQL and Redis are used for real: when they are not running this script starts them,
# and on a fresh Debian machine (as root) installs them first.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_URL="${TOLLGATE_TEST_PG:-postgres://postgres@127.0.0.1:5432/postgres}"
export TOLLGATE_TEST_PG="$PG_URL"
export TOLLGATE_TEST_REDIS="${TOLLGATE_TEST_REDIS:-redis://127.0.0.1:6379}"

log() { printf '\033[1m==> %s\033[0m\n' "$*"; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else return 1; fi; }
apt_ready=""
apt_install() {
  [ -n "$apt_ready" ] || { as_root apt-get update -qq; apt_ready=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_postgres() {
  if port_open 5432; then return; fi
  log "PostgreSQL is not running on 127.0.0.1:5432: starting it"
  if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
    log "installing PostgreSQL"
    apt_install postgresql
  fi
  local version; version=$(ls /etc/postgresql | sort -V | tail -n 1)
  local hba="/etc/postgresql/$version/main/pg_hba.conf"
  # The tests connect over TCP as the postgres superuser without a password, as on CI.
  if ! grep -q "tollgate-tests" "$hba"; then
    as_root sed -i '1i host all all 127.0.0.1/32 trust # tollgate-tests\nhost all all ::1/128 trust # tollgate-tests' "$hba"
  fi
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || as_root pg_ctlcluster "$version" main restart
  for _ in $(seq 1 50); do port_open 5432 && return; sleep 0.2; done
  echo "PostgreSQL did not come up" >&2; exit 1
}

ensure_redis() {
  if port_open 6379; then return; fi
  log "Redis is not running on 127.0.0.1:6379: starting it"
  command -v redis-server >/dev/null || { log "installing Redis"; apt_install redis-server; }
  mkdir -p /tmp/tollgate-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/tollgate-redis --logfile /tmp/tollgate-redis/redis.log
  for _ in $(seq 1 50); do port_open 6379 && return; sleep 0.2; done
  echo "Redis did not come up" >&2; exit 1
}

ensure_python() {
  local venv="target/e2e-venv"
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" 2>/dev/null || { apt_install python3-venv; python3 -m venv "$venv"; }
  fi
  "$venv/bin/python" -c "import openai, pytest" 2>/dev/null \
    || "$venv/bin/pip" install -q --disable-pip-version-check "openai>=1.40" pytest
  PYTHON="$venv/bin/python"
}

ensure_postgres
ensure_redis

log "cargo test (unit, integration; SQLite and PostgreSQL)"
cargo build --bin tollgate
cargo test --all-targets

log "end to end through the official openai Python SDK"
ensure_python
TOLLGATE_BIN="$PWD/target/debug/tollgate" "$PYTHON" -m pytest -q tests/e2e
log "end to end through the openai SDK: Anthropic and Gemini translation"
PATH="$(dirname "$PYTHON"):$PATH" tests/sdk/run_providers_e2e.sh "$PWD/target/debug/tollgate"

log "Grafana dashboards and alert rules against a real Prometheus"
scripts/grafana_check.sh "$PWD/target/debug/tollgate"

log "attacks replayed against a release build: memory, descriptors and rows stay bounded"
scripts/attacks.sh
