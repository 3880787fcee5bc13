#!/usr/bin/env bash
# Smoke test of a built Tollgate image: starts it (published on 127.0.0.1 only), checks the
# health check, the user it runs as, a key made with `docker exec`, a chat and a streamed chat
# with that key, a refusal without it, /metrics, a graceful stop on SIGTERM, and that the key
# and the usage rows written at the stop survive a restart on the same volumes. Removes what it made.
#   scripts/docker_smoke.sh [image]          (default tollgate:latest)
# DOCKER picks the client (default docker; podman works); DOCKER_RUN_ARGS adds `run` options.
set -euo pipefail
IMAGE="${1:-tollgate:latest}"
DOCKER="${DOCKER:-docker}"
read -r -a RUN_ARGS <<< "${DOCKER_RUN_ARGS:-}"
NAME="tollgate-smoke-$$"
PORT=$((20000 + RANDOM % 20000))
BASE="http://127.0.0.1:$PORT"

cleanup() {
  $DOCKER rm -f -v "$NAME" >/dev/null 2>&1 || true
  $DOCKER volume rm -f "$NAME-data" "$NAME-spool" >/dev/null 2>&1 || true
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; $DOCKER logs --tail 20 "$NAME" >&2 || true; exit 1; }
ok() { echo "ok: $*"; }

start() {
  $DOCKER run -d --name "$NAME" "${RUN_ARGS[@]}" -p "127.0.0.1:$PORT:8080" \
    -e TOLLGATE_MASTER_KEY=smoke-master-key-0123456789abcdef \
    -v "$NAME-data:/var/lib/tollgate" -v "$NAME-spool:/var/spool/tollgate" "$IMAGE" >/dev/null
  for _ in $(seq 1 100); do
    curl -fsS -m 2 "$BASE/healthz" >/dev/null 2>&1 && return
    sleep 0.2
  done
  fail "no answer on $BASE/healthz within 20 s"
}
chat() { # key, extra JSON fields
  curl -sS -m 10 -o /dev/null -w '%{http_code}' "$BASE/v1/chat/completions" \
    -H "authorization: Bearer $1" -H 'content-type: application/json' \
    -d "{\"model\": \"mock-chat\", \"messages\": [{\"role\": \"user\", \"content\": \"hello\"}]$2}"
}

start
ok "started $IMAGE, /healthz answers"
$DOCKER exec "$NAME" bash -c "$($DOCKER inspect "$NAME" --format '{{index .Config.Healthcheck.Test 3}}')" \
  || fail "the HEALTHCHECK command fails on a healthy gateway"
ok "the image's HEALTHCHECK command succeeds"
user=$($DOCKER exec "$NAME" id -u)
[ "$user" != 0 ] || fail "runs as root"
ok "runs as uid $user"
KEY=$($DOCKER exec "$NAME" tollgate keys create --name smoke 2>/dev/null | tail -n 1)
[ "$(chat "$KEY" "")" = 200 ] || fail "chat with a key"
[ "$(chat "$KEY" ', "stream": true')" = 200 ] || fail "streamed chat with a key"
[ "$(chat "not-a-key" "")" = 401 ] || fail "chat without a valid key is not 401"
ok "key from docker exec: chat 200, stream 200; a bad key 401"
curl -fsS -m 5 "$BASE/metrics" | grep -q '^tollgate_requests_total{model="mock-chat",provider="mock",status="200"} 2$' \
  || fail "/metrics does not count the two chats"
ok "/metrics counts them"
$DOCKER stop -t 40 "$NAME" >/dev/null
code=$($DOCKER inspect "$NAME" --format '{{.State.ExitCode}}')
[ "$code" = 0 ] || fail "exit code $code after SIGTERM"
$DOCKER logs "$NAME" 2>&1 | grep -q '"stopped"' || fail "no 'stopped' line after SIGTERM"
ok "docker stop: drained and exited 0"
$DOCKER rm -v "$NAME" >/dev/null
start
$DOCKER exec "$NAME" tollgate usage --json | tr -d ' \n' | grep -q '"total":{"requests":2,' \
  || fail "the two chats' usage rows are not in the database after the stop"
[ "$(chat "$KEY" "")" = 200 ] || fail "the key does not survive a restart on the same volume"
ok "a new container on the same volumes: both usage rows are there, the key still works"
echo "docker smoke test: ok"
