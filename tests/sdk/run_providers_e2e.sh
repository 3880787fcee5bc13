#!/usr/bin/env bash
# Starts mock-upstream and a gateway with Anthropic- and Gemini-backed models on loopback
# ports, runs providers_e2e.py with the official openai SDK, and stops both servers.
# Usage: tests/sdk/run_providers_e2e.sh [path/to/tollgate]  (needs `pip install openai`)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-$here/../../target/debug/tollgate}"
work="$(mktemp -d)"
mock_port=$((20000 + RANDOM % 10000))
gw_port=$((mock_port + 1))
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$work"; }
trap cleanup EXIT

cat > "$work/config.toml" <<TOML
[server]
listen = "127.0.0.1:$gw_port"
[database]
url = "sqlite://$work/e2e.db?mode=rwc"
[auth]
require_api_key = false
[[providers]]
name = "claude"
api = "anthropic"
base_url = "http://127.0.0.1:$mock_port"
api_key = "sk-ant-e2e"
[[providers]]
name = "google"
api = "gemini"
base_url = "http://127.0.0.1:$mock_port"
api_key = "g-e2e"
[[models]]
name = "claude-chat"
provider = "claude"
model_id = "claude-mock"
supports_vision = true
cost_input_per_million = "3"
cost_output_per_million = "15"
[[models]]
name = "claude-embed"
provider = "claude"
model_id = "claude-embed"
model_type = "embedding"
cost_input_per_million = "0"
cost_output_per_million = "0"
[[models]]
name = "gemini-chat"
provider = "google"
model_id = "gemini-mock"
supports_vision = true
cost_input_per_million = "1"
cost_output_per_million = "2"
[[models]]
name = "gemini-embed"
provider = "google"
model_id = "embed-mock"
model_type = "embedding"
cost_input_per_million = "0.1"
cost_output_per_million = "0"
TOML

"$bin" mock-upstream --port "$mock_port" > "$work/mock.log" 2>&1 & pids+=($!)
"$bin" serve --config "$work/config.toml" > "$work/gateway.log" 2>&1 & pids+=($!)
for _ in $(seq 1 100); do
  python3 -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$gw_port/healthz', timeout=1)" 2>/dev/null && break
  sleep 0.1
done
python3 "$here/providers_e2e.py" "http://127.0.0.1:$gw_port/v1"
