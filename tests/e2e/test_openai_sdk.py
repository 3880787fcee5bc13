"""End to end through the official `openai` Python SDK: a real `tollgate serve` (the binary)
in front of a real `tollgate mock-upstream`, with a gateway key created by `tollgate keys create`.

Run by scripts/test.sh with TOLLGATE_BIN pointing at the built binary.
"""

import contextlib
import os
import socket
import sqlite3
import subprocess
import tempfile
import time
import urllib.request
from decimal import Decimal

import openai
import pytest

BIN = os.environ.get("TOLLGATE_BIN", "target/debug/tollgate")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=1)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


@contextlib.contextmanager
def running_gateway():
    """A gateway (the binary) with a fresh database, its mock upstream and a gateway key."""
    tmp = tempfile.mkdtemp()
    mock_port, gw_port = free_port(), free_port()
    db = os.path.join(tmp, "e2e.db")
    config = os.path.join(tmp, "config.toml")
    with open(config, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{gw_port}"
[database]
url = "sqlite://{db}?mode=rwc"
[auth]
require_api_key = true
[usage]
spool_path = "{tmp}/usage.spool"

[[providers]]
name = "upstream"
api = "openai"
base_url = "http://127.0.0.1:{mock_port}/v1"
api_key = "sk-e2e-provider"

[[models]]
name = "gpt-e2e"
provider = "upstream"
model_id = "mock-chat-upstream"
cost_input_per_million = "0.15"
cost_output_per_million = "0.60"

[[models]]
name = "embed-e2e"
provider = "upstream"
model_id = "mock-embed-upstream"
model_type = "embedding"
cost_input_per_million = "0.02"
""")
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("DATABASE_URL", None)
    mock = subprocess.Popen([BIN, "mock-upstream", "--port", str(mock_port)], env=env)
    key = subprocess.run([BIN, "--config", config, "keys", "create", "--name", "e2e"],
                         check=True, capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    serve = subprocess.Popen([BIN, "--config", config, "serve"], env=env)
    try:
        wait_http(f"http://127.0.0.1:{gw_port}/healthz")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{gw_port}/v1", api_key=key, max_retries=0)
        yield client, db, serve
    finally:
        serve.terminate()
        serve.wait(timeout=20)
        mock.terminate()
        mock.wait(timeout=10)


@pytest.fixture(scope="module")
def gateway():
    with running_gateway() as running:
        yield running


def test_chat(gateway):
    client, _, _ = gateway
    r = client.chat.completions.create(model="gpt-e2e", messages=[{"role": "user", "content": "hello from the sdk"}])
    assert r.choices[0].message.content.startswith("This is a mock answer")
    assert r.usage.prompt_tokens == 4 and r.usage.completion_tokens == 16


def test_stream_without_usage(gateway):
    client, _, _ = gateway
    chunks = list(client.chat.completions.create(
        model="gpt-e2e", stream=True, max_tokens=4, messages=[{"role": "user", "content": "a b"}]))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "This is a mock"
    assert all(c.usage is None for c in chunks)


def test_stream_with_usage(gateway):
    client, _, _ = gateway
    chunks = list(client.chat.completions.create(
        model="gpt-e2e", stream=True, stream_options={"include_usage": True},
        messages=[{"role": "user", "content": "a b c"}]))
    assert chunks[-1].choices == []
    assert chunks[-1].usage.prompt_tokens == 3 and chunks[-1].usage.completion_tokens == 16


def test_embeddings(gateway):
    client, _, _ = gateway
    r = client.embeddings.create(model="embed-e2e", input=["one two", "three"])
    assert len(r.data) == 2 and len(r.data[0].embedding) == 8
    assert r.usage.prompt_tokens == 3


def test_models(gateway):
    client, _, _ = gateway
    ids = sorted(m.id for m in client.models.list())
    assert ids == ["embed-e2e", "gpt-e2e"]
    assert client.models.retrieve("gpt-e2e").owned_by == "upstream"


def test_errors_raise_the_sdk_exceptions(gateway):
    client, _, _ = gateway
    with pytest.raises(openai.NotFoundError) as e:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "x"}])
    assert e.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=client.base_url, api_key="tg-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-e2e", messages=[{"role": "user", "content": "x"}])


def test_usage_rows_are_exact():
    # A gateway of its own: pytest does not promise to run this after the tests above, and
    # their requests must not change what this one counts.
    with running_gateway() as (client, db, serve):
        client.chat.completions.create(model="gpt-e2e", messages=[{"role": "user", "content": "hello from the sdk"}])
        list(client.chat.completions.create(
            model="gpt-e2e", stream=True, max_tokens=4, messages=[{"role": "user", "content": "a b"}]))
        list(client.chat.completions.create(
            model="gpt-e2e", stream=True, stream_options={"include_usage": True},
            messages=[{"role": "user", "content": "a b c"}]))
        client.embeddings.create(model="embed-e2e", input=["one two", "three"])
        # stop the gateway so the batch writer flushes, then read the rows
        serve.terminate()
        serve.wait(timeout=20)
        rows = sqlite3.connect(db).execute(
            "SELECT endpoint, stream, status_code, input_tokens, output_tokens, cost_usd FROM llm_usage_logs "
            "WHERE status_code = 200 ORDER BY created_at").fetchall()
    assert [(r[0], r[1], r[3], r[4]) for r in rows] == [
        ("chat.completions", 0, 4, 16),
        ("chat.completions", 1, 2, 4),
        ("chat.completions", 1, 3, 16),
        ("embeddings", 0, 3, 0),
    ]
    # 4 * 0.15 + 16 * 0.60 = 10.2 per million tokens
    assert Decimal(rows[0][5]) == Decimal("0.0000102")
