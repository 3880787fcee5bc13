#!/usr/bin/env python3
"""Two Tollgate binaries side by side: both serve at once, each driven by its own oha at half
the concurrency, against one mock, so both see the same load and the same drift of the
machine. Prints each one's CPU time per answered request and the ratio B / A per round.

For changes too small to show between back-to-back runs (bench/run.py), and for costs that
instruction counts miss: allocation, cache misses, hand-offs between threads. Which binary
gets which port alternates by round. Never run it while something compiles.

    bench/pair.py target/release/tollgate.before target/release/tollgate [--rounds 4]
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

from run import BIN, TICK, cpu_ticks, free_port, oha, start_gateway, wait_port, write_config


def serve(binary, tmp, name, port, mock_port, env, budget_usd):
    """Starts one Tollgate (the `tollgate` target of bench/run.py: limits on); returns it and
    its gateway key."""
    config = write_config(tmp, name, port, mock_port, limits=True)
    proc, key = start_gateway(binary, config, env, stderr=subprocess.DEVNULL, budget_usd=budget_usd)
    wait_port(port)
    return proc, key


def both(targets, body, seconds, concurrency):
    """Drives every (port, key) at once; returns oha's results in the same order."""
    results = [None] * len(targets)

    def drive(i, port, key):
        results[i] = oha(f"http://127.0.0.1:{port}/v1/chat/completions", body,
                         [f"Authorization: Bearer {key}"], seconds, concurrency)

    threads = [threading.Thread(target=drive, args=(i, *t)) for i, t in enumerate(targets)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("a", help="binary A (the baseline)")
    ap.add_argument("b", nargs="?", default=BIN, help="binary B (default: target/release/tollgate)")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--seconds", type=int, default=8)
    ap.add_argument("--concurrency", type=int, default=25, help="per binary")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--split-writes", action="store_true",
                    help="the mock writes each stream event and each slice of a whole answer on its own")
    ap.add_argument("--budget-usd", help="give both gateway keys this budget (one that never runs out "
                    "measures what reserving and settling cost)")
    args = ap.parse_args()
    if not shutil.which("oha"):
        sys.exit("oha is missing: bench/run.sh installs it")
    body = ('{"model": "bench-model", "messages": [{"role": "user", "content": "Summarise the benchmark '
            'method in one short sentence please."}], "max_tokens": 16' + (', "stream": true}' if args.stream else '}'))
    env = dict(os.environ, RUST_LOG="warn")
    tmp = tempfile.mkdtemp(prefix="tollgate-pair-")
    mock_port = free_port()
    mock = subprocess.Popen([args.a, "mock-upstream", "--port", str(mock_port)]
                            + (["--split-writes"] if args.split_writes else []), stderr=subprocess.DEVNULL)
    ratios = []
    try:
        wait_port(mock_port)
        for rnd in range(args.rounds):
            ports = [free_port(), free_port()]
            if rnd % 2:
                ports.reverse()
            procs = []
            try:
                for name, binary, port in (("a", args.a, ports[0]), ("b", args.b, ports[1])):
                    procs.append(serve(binary, tmp, f"{name}{rnd}", port, mock_port, env, args.budget_usd))
                targets = [(port, key) for port, (_, key) in zip(ports, procs)]
                both(targets, body, 2, args.concurrency)  # warm-up: pools, caches, first batches
                before = [cpu_ticks([p.pid]) for p, _ in procs]
                results = both(targets, body, args.seconds, args.concurrency)
                time.sleep(0.5)  # the usage writer's last batch (flushed within 200 ms) counts
                used = [cpu_ticks([p.pid]) - b for (p, _), b in zip(procs, before)]
            finally:
                for p, _ in procs:
                    p.send_signal(signal.SIGTERM)
                    p.wait(timeout=30)
            cpu = [u / TICK * 1e6 / max(r["ok"], 1) for u, r in zip(used, results)]
            ratios.append(cpu[1] / cpu[0])
            errors = sum(r["errors"] for r in results)
            print(f"round {rnd}: A {results[0]['ok']:7d} ok {cpu[0]:5.1f} µs/req   "
                  f"B {results[1]['ok']:7d} ok {cpu[1]:5.1f} µs/req   B / A CPU {ratios[-1]:.3f}"
                  + (f"   ERRORS {errors}" if errors else ""), flush=True)
        ratios.sort()
        print(f"B / A CPU per request, median of {len(ratios)} rounds: {ratios[len(ratios) // 2]:.3f}")
    finally:
        mock.send_signal(signal.SIGTERM)
        mock.wait(timeout=20)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
