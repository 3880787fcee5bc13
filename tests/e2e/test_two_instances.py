"""Two `tollgate serve` processes (the binary) on one fresh PostgreSQL database: a model created
through one instance's admin API is served by the other within 2 s, and still after the other's
LISTEN connection is killed (its periodic version check converges).

Run by scripts/test.sh with TOLLGATE_BIN and TOLLGATE_TEST_PG (an admin URL of the server).
"""

import contextlib
import json
import os
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

import pytest

from test_openai_sdk import BIN, free_port, wait_http

PG = os.environ.get("TOLLGATE_TEST_PG")
MASTER = "e2e-master-key-0123456789abcdef"


def psql(url, sql):
    return subprocess.run(["psql", url, "-tAc", sql], check=True, capture_output=True,
                          text=True).stdout.strip()


def call(method, url, body=None, key=MASTER):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={
        "authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@contextlib.contextmanager
def fresh_database():
    name = f"tollgate_e2e_{uuid.uuid4().hex[:12]}"
    psql(PG, f"CREATE DATABASE {name}")
    base = PG.rsplit("/", 1)[0]
    try:
        yield f"{base}/{name}", name
    finally:
        psql(PG, f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}'")
        psql(PG, f"DROP DATABASE IF EXISTS {name}")


@contextlib.contextmanager
def instance(db_url, tmp, name):
    port = free_port()
    config = os.path.join(tmp, f"{name}.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{port}"
[database]
url = "{db_url}"
[auth]
require_api_key = true
master_key = "{MASTER}"
[usage]
spool_path = "{tmp}/{name}.spool"

[[providers]]
name = "local"
api = "mock"

[[models]]
name = "echo"
provider = "local"
model_id = "echo-1"
""")
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([BIN, "--config", config, "serve"], env=env)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def served_within(base, model, seconds):
    """Seconds until `base` answers a chat for `model`; fails after `seconds`."""
    start = time.time()
    body = {"model": model, "messages": [{"role": "user", "content": "hi"}]}
    while time.time() - start < seconds:
        status, _ = call("POST", f"{base}/v1/chat/completions", body)
        if status == 200:
            return time.time() - start
        time.sleep(0.05)
    pytest.fail(f"{model} was not served by {base} within {seconds} s")


@pytest.mark.skipif(not PG, reason="TOLLGATE_TEST_PG is not set")
def test_a_change_through_one_instance_is_served_by_the_other():
    tmp = tempfile.mkdtemp()
    with fresh_database() as (db_url, db_name), instance(db_url, tmp, "a") as a, \
            instance(db_url, tmp, "b") as b:
        status, body = call("POST", f"{a}/admin/providers", {"name": "shared", "api": "mock"})
        assert status == 201, body
        status, body = call("POST", f"{a}/admin/models",
                            {"name": "added-on-a", "provider": "shared", "model_id": "m-1"})
        assert status == 201, body
        took = served_within(b, "added-on-a", 2.0)
        print(f"served by the other process after {took:.2f} s")

        killed = psql(PG, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          f"WHERE datname = '{db_name}' AND application_name = 'tollgate-registry-listener'")
        assert int(killed) == 2, "each instance holds one LISTEN connection"
        status, body = call("POST", f"{a}/admin/models",
                            {"name": "added-after-kill", "provider": "shared", "model_id": "m-2"})
        assert status == 201, body
        took = served_within(b, "added-after-kill", 2.0)
        print(f"with the LISTEN connections killed, served after {took:.2f} s")
