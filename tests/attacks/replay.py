#!/usr/bin/env python3
"""Replays the attacks of the hardening issue against a built Tollgate and checks that what an
outsider (or an odd provider) can make the gateway hold stays bounded.

Each attack is bounded in count and time and sent only to loopback:
  wrong keys       20,000 distinct wrong keys and 500 keys of 100 KB: 401s, no usage rows
  model names      5,000 random model names: /metrics stays small and never shows them
  silent sockets   2,000 connections that send nothing: /healthz still answers, and they are
                   closed after the idle timeout
  huge upstream    four 100 MB streamed answers at once, and a non-streamed answer over the bound
  absurd usage     a provider reporting 1e18 tokens: the row lands, `tollgate usage` still works
and at the end: the gateway's peak RSS, its open file descriptors and the usage table's growth.

Usage: replay.py TOLLGATE_BINARY   (scripts/attacks.sh builds the release binary and runs this)
"""

import http.client
import http.server
import json
import os
import resource
import secrets
import socket
import socketserver
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time

# Bounds the run must stay within. The gateway idles at about 20 MiB.
PEAK_RSS_MIB = 160
FDS_AFTER = 64
IDLE_TIMEOUT_SECS = 2
MAX_CONNECTIONS = 1000
HUGE_BYTES = 100 * 1024 * 1024

failures = []


def check(ok, what):
    print(("  ok   " if ok else "  FAIL ") + what, flush=True)
    if not ok:
        failures.append(what)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def proc_status(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def open_fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


# ----------------------------------------------------------------------------------------------
# A provider that misbehaves: huge answers and absurd usage reports.

SSE_EVENT = (b'data: {"id":"x","object":"chat.completion.chunk","model":"m","choices":'
             b'[{"index":0,"delta":{"content":"' + b"a" * 900 + b'"},"finish_reason":null}]}\n\n')
HUGE_BLOCK = SSE_EVENT * 64
HUGE_BLOCKS = HUGE_BYTES // len(HUGE_BLOCK)
DONE = b"data: [DONE]\n\n"
HUGE_STREAM = HUGE_BLOCKS * len(HUGE_BLOCK) + len(DONE)


class Provider(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        if self.path.startswith("/huge/"):
            return self.huge(body.get("stream"))
        usage = {"prompt_tokens": 10 ** 18, "completion_tokens": 10 ** 18, "total_tokens": 2 * 10 ** 18}
        self.answer(200, {"id": "a", "object": "chat.completion", "model": "m", "usage": usage,
                          "choices": [{"index": 0, "finish_reason": "stop",
                                       "message": {"role": "assistant", "content": "ok"}}]})

    def answer(self, status, value):
        data = json.dumps(value).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except OSError:
            pass  # the gateway refused the answer by its length: what it should do

    def huge(self, stream):
        if not stream:
            filler = "b" * HUGE_BYTES
            return self.answer(200, {"id": "h", "object": "chat.completion", "choices": [
                {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": filler}}]})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        try:
            for _ in range(HUGE_BLOCKS):
                self.wfile.write(HUGE_BLOCK)
            self.wfile.write(DONE)
        except OSError:
            pass
        self.close_connection = True


class ThreadingServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


# ----------------------------------------------------------------------------------------------
# The gateway under attack.

def write_config(tmp, port, provider_port):
    path = os.path.join(tmp, "attack.toml")
    with open(path, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{port}"
idle_timeout_secs = {IDLE_TIMEOUT_SECS}
max_connections = {MAX_CONNECTIONS}
[database]
url = "sqlite://{tmp}/attack.db?mode=rwc"
[auth]
require_api_key = true
[usage]
spool_path = "{tmp}/attack.spool"

[[providers]]
name = "mock"
api = "mock"
max_parallel_requests = 0
requests_per_minute = 0
[[models]]
name = "mock-chat"
provider = "mock"
model_id = "mock-chat"
cost_input_per_million = "1"
cost_output_per_million = "2"

[[providers]]
name = "huge"
api = "openai"
base_url = "http://127.0.0.1:{provider_port}/huge/v1"
api_key = "sk-attack"
max_parallel_requests = 0
requests_per_minute = 0
[[models]]
name = "huge"
provider = "huge"
model_id = "huge"
cost_input_per_million = "1"
cost_output_per_million = "2"

[[providers]]
name = "absurd"
api = "openai"
base_url = "http://127.0.0.1:{provider_port}/absurd/v1"
api_key = "sk-attack"
max_parallel_requests = 0
requests_per_minute = 0
[[models]]
name = "absurd"
provider = "absurd"
model_id = "absurd"
cost_input_per_million = "1"
cost_output_per_million = "2"
""")
    return path


def request(port, key, body, path="/v1/chat/completions", timeout=60):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, json.dumps(body),
                     {"authorization": f"Bearer {key}", "content-type": "application/json"})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, data
    finally:
        conn.close()


def chat(model, stream=False):
    return {"model": model, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}


def in_threads(n, work):
    """Runs `work(i)` for i in 0..n on 8 threads; returns the results."""
    results = [None] * n
    lock = threading.Lock()
    next_i = [0]

    def run():
        while True:
            with lock:
                i = next_i[0]
                next_i[0] += 1
            if i >= n:
                return
            results[i] = work(i)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


class KeepAlive:
    """One kept-alive connection per thread, so a flood is not limited by the client's ports."""

    def __init__(self, port):
        self.port = port
        self.local = threading.local()

    def post(self, headers, body):
        for _ in range(2):
            conn = getattr(self.local, "conn", None) or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
            self.local.conn = conn
            try:
                conn.request("POST", "/v1/chat/completions", body, headers)
                resp = conn.getresponse()
                resp.read()
                return resp.status
            except (OSError, http.client.HTTPException):
                conn.close()
                self.local.conn = None
        return 0


def usage_rows(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT count(*) FROM llm_usage_logs").fetchone()[0]


# ----------------------------------------------------------------------------------------------
# The attacks.

def wrong_keys(port, db):
    print("wrong keys: 20,000 distinct wrong keys, 500 of 100 KB", flush=True)
    rows = usage_rows(db)
    client = KeepAlive(port)
    body = json.dumps(chat("mock-chat"))
    short = in_threads(20_000, lambda i: client.post(
        {"authorization": f"Bearer tg-{secrets.token_hex(24)}", "content-type": "application/json"}, body))
    big = in_threads(500, lambda i: client.post(
        {"authorization": "Bearer " + secrets.token_hex(50_000), "content-type": "application/json"}, body))
    check(all(s == 401 for s in short), "every wrong key gets 401")
    check(all(s in (401, 431) for s in big), "every 100 KB key gets 401 (or 431)")
    time.sleep(1.5)  # the usage writer's flush interval
    check(usage_rows(db) == rows, f"no usage rows for refused requests ({usage_rows(db) - rows} written)")


def model_names(port, key):
    print("model names: 5,000 random model names", flush=True)
    client = KeepAlive(port)
    names = [f"secret-{secrets.token_hex(8)}" for _ in range(5_000)]
    headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}
    statuses = in_threads(len(names), lambda i: client.post(headers, json.dumps(chat(names[i]))))
    check(all(s == 404 for s in statuses), "every unknown model gets 404")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/metrics")
    text = conn.getresponse().read().decode()
    check(len(text) < 256 * 1024, f"/metrics stays small ({len(text) // 1024} KiB)")
    check(not any(n in text for n in names[:200]), "no client-chosen model name in /metrics")
    check('model="unknown"' in text, 'unknown models are counted as model="unknown"')


def silent_sockets(port, pid):
    print("silent sockets: 2,000 connections that send nothing", flush=True)
    socks = []
    for _ in range(2_000):
        try:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            socks.append(s)
        except OSError:
            break
    started = time.time()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=IDLE_TIMEOUT_SECS + 10)
    conn.request("GET", "/healthz")
    healthy = conn.getresponse().status == 200
    waited = time.time() - started
    conn.close()
    # Beyond max_connections the rest wait in the kernel's backlog: each thousand is closed
    # within 1.25 idle timeouts, so /healthz gets its turn after two of them.
    check(healthy and waited < 2.5 * IDLE_TIMEOUT_SECS + 3, f"/healthz answers while they are open ({waited:.1f} s)")
    check(open_fds(pid) <= MAX_CONNECTIONS + FDS_AFTER, f"open descriptors stay within max_connections ({open_fds(pid)})")
    time.sleep(IDLE_TIMEOUT_SECS + 2)
    closed = 0
    for s in socks:
        try:
            closed += s.recv(1) == b""
        except BlockingIOError:
            pass
        except OSError:
            closed += 1
        s.close()
    check(closed >= len(socks) * 0.9, f"silent connections are closed after the idle timeout ({closed}/{len(socks)})")


def huge_upstream(port, key):
    print("huge upstream: four 100 MB streamed answers at once, one non-streamed", flush=True)

    def stream(_):
        try:
            return read_stream()
        except (OSError, http.client.HTTPException) as e:
            print(f"       a stream failed: {e!r}", flush=True)
            return 0, 0

    def read_stream():
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        conn.request("POST", "/v1/chat/completions", json.dumps(chat("huge", stream=True)),
                     {"authorization": f"Bearer {key}", "content-type": "application/json"})
        resp = conn.getresponse()
        total = 0
        while chunk := resp.read(1 << 16):
            total += len(chunk)
        conn.close()
        return resp.status, total

    results = in_threads(4, stream)
    check(all(s == 200 and n == HUGE_STREAM for s, n in results),
          f"the streams reach the client whole ({[n for _, n in results]} of {HUGE_STREAM} bytes)")
    try:
        status = request(port, key, chat("huge"))[0]
    except (OSError, http.client.HTTPException):
        status = 0
    check(status == 502, f"a non-streamed answer over the bound is a 502 ({status})")


def absurd_usage(port, key, binary, config, db):
    print("absurd usage: a provider reporting 1e18 tokens", flush=True)
    time.sleep(1.5)  # rows of earlier requests still being flushed
    rows = usage_rows(db)
    statuses = [request(port, key, chat("absurd"))[0] for _ in range(3)]
    ok = [request(port, key, chat("mock-chat"))[0] for _ in range(20)]
    check(statuses == [200] * 3 and ok == [200] * 20, "the absurd answers and the good ones are served")
    time.sleep(1.5)
    check(usage_rows(db) == rows + 23, f"all 23 usage rows land ({usage_rows(db) - rows})")
    for by in ("model", "provider", "project", "key"):
        done = subprocess.run([binary, "--config", config, "usage", "--by", by], capture_output=True, text=True)
        check(done.returncode == 0, f"`tollgate usage --by {by}` still works")


def main():
    binary = os.path.abspath(sys.argv[1])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 8192), hard))
    tmp = tempfile.mkdtemp(prefix="tollgate-attacks-")
    provider = ThreadingServer(("127.0.0.1", 0), Provider)
    threading.Thread(target=provider.serve_forever, daemon=True).start()
    port = free_port()
    config = write_config(tmp, port, provider.server_address[1])
    env = dict(os.environ, RUST_LOG="warn")
    key = subprocess.run([binary, "--config", config, "keys", "create", "--name", "attack"], check=True,
                         capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    log = open(os.path.join(tmp, "gateway.log"), "w")
    gw = subprocess.Popen([binary, "--config", config, "serve"], env=env, stderr=log, stdout=log)
    db = os.path.join(tmp, "attack.db")
    try:
        wait_port(port)
        start_rss = proc_status(gw.pid, "VmRSS") // 1024
        rows_before = usage_rows(db)
        for attack in (lambda: wrong_keys(port, db), lambda: model_names(port, key),
                       lambda: silent_sockets(port, gw.pid), lambda: huge_upstream(port, key),
                       lambda: absurd_usage(port, key, binary, config, db)):
            started = time.time()
            attack()
            print(f"       ({time.time() - started:.1f} s; peak RSS so far "
                  f"{proc_status(gw.pid, 'VmHWM') // 1024} MiB)", flush=True)
        time.sleep(1.5)
        peak = proc_status(gw.pid, "VmHWM") // 1024
        print(f"gateway: {start_rss} MiB at start, {peak} MiB at peak, {open_fds(gw.pid)} descriptors open")
        check(peak <= PEAK_RSS_MIB, f"peak RSS {peak} MiB <= {PEAK_RSS_MIB} MiB")
        check(open_fds(gw.pid) <= FDS_AFTER, f"descriptors back to a handful ({open_fds(gw.pid)})")
        # Authenticated requests only: 5,000 unknown models, 5 huge, 23 absurd-or-good.
        grown = usage_rows(db) - rows_before
        check(grown == 5_000 + 5 + 23, f"the usage table grew by the authenticated requests only ({grown})")
        check(gw.poll() is None, "the gateway is still running")
    finally:
        gw.terminate()
        try:
            gw.wait(timeout=30)
        except subprocess.TimeoutExpired:
            gw.kill()
        provider.shutdown()
    if failures:
        print(f"{len(failures)} check(s) failed; gateway log: {log.name}")
        sys.exit(1)
    print("every attack was contained")


if __name__ == "__main__":
    main()
