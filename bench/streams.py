#!/usr/bin/env python3
"""Many open streams: memory per open stream and time to first byte, Tollgate against nginx.

Starts `tollgate mock-upstream` paced (`--chunks` events `--chunk-ms` apart, so each stream
stays open about chunks x chunk-ms), nginx `proxy_pass` to it and one Tollgate (keys required,
metering to SQLite), then opens `--streams` streamed chat requests at once against each proxy in
turn and reads them to the end. Per proxy it reports the peak RSS during the wave (VmHWM, reset
before it), the RSS before it, their difference per open stream, and time to first byte p50 and
p99 as the client saw it. Bounded in time; never run it while something compiles.
"""

import argparse
import asyncio
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run import BIN, children, free_port, start_gateway, start_nginx, wait_port, write_config  # noqa: E402


def rss_kib(pids, field):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    total += int(line.split()[1])
    return total


def reset_peak(pids):
    for pid in pids:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")  # resets VmHWM to the current RSS


async def one_stream(port, request, deadline):
    """Sends one streamed request on its own connection; returns (time to first body byte,
    whether the stream ended with [DONE]), or what went wrong."""
    start = time.perf_counter()
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), deadline)
        writer.write(request)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), deadline)
        if not head.startswith(b"HTTP/1.1 200"):
            writer.close()
            return head.split(b"\r\n", 1)[0].decode(errors="replace")
        first = await asyncio.wait_for(reader.read(65536), deadline)
        ttfb = time.perf_counter() - start
        tail = first[-64:]
        while True:
            data = await asyncio.wait_for(reader.read(65536), deadline)
            if not data:
                break
            tail = (tail + data)[-64:]
        writer.close()
        return ttfb, b"[DONE]" in tail
    except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
        return type(e).__name__


async def wave(port, request, n, deadline):
    return await asyncio.gather(*(one_stream(port, request, deadline) for _ in range(n)))


def request_bytes(model, key):
    body = json.dumps({"model": model, "stream": True, "max_tokens": 1000,
                       "messages": [{"role": "user", "content": "Tell me a long story."}]})
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    return (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
            f"Content-Type: application/json\r\n{auth}Content-Length: {len(body)}\r\n\r\n{body}").encode()


def measure(name, port, request, pids, n, deadline, baselines):
    """One wave. The per-stream figure is taken over the RSS of the proxy's first round:
    an allocator keeps what a wave used, so a later round starts from that."""
    asyncio.run(wave(port, request, min(n, 50), deadline))  # warm-up: pools, page faults
    time.sleep(0.5)
    before = baselines.setdefault(name, rss_kib(pids, "VmRSS"))
    reset_peak(pids)
    results = asyncio.run(wave(port, request, n, deadline))
    peak = rss_kib(pids, "VmHWM")
    done = [r for r in results if isinstance(r, tuple) and r[1]]
    failed = {}
    for r in results:
        if not isinstance(r, tuple) or not r[1]:
            what = r if isinstance(r, str) else "no [DONE]"
            failed[what] = failed.get(what, 0) + 1
    ttfbs = sorted(r[0] * 1000 for r in done)
    row = {
        "target": name, "streams": n, "completed": len(done),
        "rss_before_mib": round(before / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
        "kib_per_stream": round((peak - before) / n, 1),
        "ttfb_p50_ms": round(ttfbs[len(ttfbs) // 2], 1) if ttfbs else None,
        "ttfb_p99_ms": round(ttfbs[int(len(ttfbs) * 0.99)], 1) if ttfbs else None,
        "failed": failed,
    }
    print(json.dumps(row), flush=True)
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--streams", type=int, default=500)
    ap.add_argument("--chunks", type=int, default=50)
    ap.add_argument("--chunk-ms", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--binary", default=BIN)
    args = ap.parse_args()
    # A proxy holds two descriptors per stream; the children inherit the limit. Root may
    # raise the hard limit too.
    need = args.streams * 2 + 200
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, hard), max(need, hard)))
    except (ValueError, OSError):
        if hard < need:
            sys.exit(f"the file-descriptor limit ({hard}) is too low for {args.streams} streams")
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    deadline = args.chunks * args.chunk_ms / 1000 * 4 + 30
    tmp = tempfile.mkdtemp(prefix="tollgate-streams-")
    procs = []
    try:
        mock_port, gw_port, nginx_port = free_port(), free_port(), free_port()
        procs.append(subprocess.Popen(
            [args.binary, "mock-upstream", "--port", str(mock_port), "--chunks", str(args.chunks),
             "--chunk-ms", str(args.chunk_ms)], stderr=subprocess.DEVNULL))
        env = dict(os.environ, RUST_LOG="warn")
        config = write_config(tmp, "tollgate", gw_port, mock_port, False,
                              server_extra=f"max_connections = {args.streams * 2 + 100}")
        gw, key = start_gateway(args.binary, config, env)
        procs.append(gw)
        nginx = start_nginx(tmp, nginx_port, mock_port, connections=args.streams + 100)
        procs.append(nginx)
        for p in (mock_port, gw_port, nginx_port):
            wait_port(p)
        time.sleep(0.3)
        targets = {
            "nginx": (nginx_port, request_bytes("mock-chat", None), [nginx.pid] + children(nginx.pid)),
            "tollgate": (gw_port, request_bytes("bench-model", key), [gw.pid]),
        }
        baselines = {}
        for rnd in range(args.rounds):
            for name in (["nginx", "tollgate"] if rnd % 2 == 0 else ["tollgate", "nginx"]):
                port, request, pids = targets[name]
                measure(name, port, request, pids, args.streams, deadline, baselines)
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()


if __name__ == "__main__":
    main()
