#!/usr/bin/env bash
# The Grafana dashboards and Prometheus alert rules, checked against a real Prometheus:
# promtool checks the rules and the compose stack's Prometheus config and runs the rules' unit
# tests, then tests/grafana/check_dashboards.py runs every dashboard query against a Prometheus
# scraping a Tollgate under load. Installs Debian's prometheus package when it is missing.
# Usage: scripts/grafana_check.sh [path/to/tollgate]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN="${1:-${CARGO_TARGET_DIR:-target}/debug/tollgate}"
as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"
  else echo "prometheus and promtool are missing: install Debian's prometheus package" >&2; return 1; fi
}

if ! command -v prometheus >/dev/null || ! command -v promtool >/dev/null; then
  echo "installing Debian's prometheus package"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package's service is not wanted: the check starts its own Prometheus on loopback.
  as_root systemctl disable --now prometheus >/dev/null 2>&1 || true
fi

promtool check rules grafana/prometheus/alerts.yml
promtool test rules grafana/prometheus/alerts_test.yml
promtool check config grafana/prometheus/prometheus.yml
timeout 100 python3 tests/grafana/check_dashboards.py "$BIN"
