#!/usr/bin/env python3
"""Tollgate benchmark: direct-to-mock vs nginx proxy_pass vs Tollgate, one run, alternating.

Starts `tollgate mock-upstream`, Tollgate (auth on, metering on) and nginx (`proxy_pass` to the
same mock, its own config and pid file), then drives each with oha on loopback, rotating the
order every round, and prints requests/s, p50/p99, CPU per request and peak RSS. Also p99 at a
fixed 200 and 20 requests/s, and whether every request a Tollgate answered has its usage row. Every run
is bounded in time. Never run it while something compiles.
"""

import argparse
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target/release/tollgate")
TICK = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} did not open")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime + stime
        except OSError:
            pass
    return total


def peak_rss_mib(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total / 1024


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def oha(url, body, headers, seconds, concurrency, rate=None):
    cmd = ["oha", "--no-tui", "--output-format", "json", "-z", f"{seconds}s", "-c", str(concurrency),
           "-m", "POST", "-T", "application/json", "-d", body, url]
    for h in headers:
        cmd[1:1] = ["-H", h]
    if rate:
        cmd[1:1] = ["-q", str(rate)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=seconds + 60).stdout
    r = json.loads(out)
    codes = r.get("statusCodeDistribution", {})
    ok = sum(v for k, v in codes.items() if k.startswith("2"))
    # oha cancels the requests still in flight when the duration ends; those are not errors.
    errs = {k: v for k, v in r.get("errorDistribution", {}).items() if "deadline" not in k}
    bad = sum(v for k, v in codes.items() if not k.startswith("2")) + sum(errs.values())
    lat = r["latencyPercentiles"]
    return {
        "rps": r["summary"]["requestsPerSec"],
        "p50_ms": (lat.get("p50") or 0) * 1000,
        "p99_ms": (lat.get("p99") or 0) * 1000,
        "ok": ok,
        "errors": bad,
        "answered": sum(codes.values()),
        "cut": sum(v for k, v in r.get("errorDistribution", {}).items() if "deadline" in k),
    }


def usage_rows(db):
    with sqlite3.connect(db) as c:
        return c.execute("SELECT count(*) FROM llm_usage_logs").fetchone()[0]


def metric(port, name):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        for line in r.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


def write_config(tmp, name, port, mock_port, limits, api="openai", server_extra=""):
    """The config of one benchmarked Tollgate: gateway keys required, metering to SQLite in
    `tmp`, one provider at the mock; `limits` adds provider limits that never bind."""
    config = os.path.join(tmp, f"{name}.toml")
    limit_lines = ("max_parallel_requests = 10000\nrequests_per_minute = 100000000\n"
                   "tokens_per_minute = 1000000000\n" if limits else
                   "max_parallel_requests = 0\nrequests_per_minute = 0\n")
    with open(config, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:{port}"
workers = 2
{server_extra}
[database]
url = "sqlite://{tmp}/{name}.db?mode=rwc"
[auth]
require_api_key = true
[usage]
spool_path = "{tmp}/{name}.spool"
[[providers]]
name = "up"
api = "{api}"
base_url = "http://127.0.0.1:{mock_port}{'/v1' if api == 'openai' else ''}"
api_key = "sk-bench"
{limit_lines}
[[models]]
name = "bench-model"
provider = "up"
model_id = "mock-chat"
cost_input_per_million = "0.15"
cost_output_per_million = "0.60"
""")
    return config


def start_gateway(binary, config, env, stderr=None, budget_usd=None):
    """Creates a gateway key for `config` (with a budget in USD when given) and starts `binary`
    serving it; returns the process and the key."""
    budget = ["--budget-usd", budget_usd] if budget_usd else []
    key = subprocess.run([binary, "--config", config, "keys", "create", "--name", "bench", *budget], check=True,
                         capture_output=True, text=True, env=env).stdout.strip().splitlines()[-1]
    return subprocess.Popen([binary, "--config", config, "serve"], env=env, stderr=stderr), key


def start_nginx(tmp, port, mock_port, connections=4096):
    """nginx with `proxy_pass` to the mock (keep-alive upstream, no buffering): the pass-through
    every figure is compared with. Its own config, pid file and temp dirs in `tmp`."""
    conf = os.path.join(tmp, f"nginx-{port}.conf")
    with open(conf, "w") as f:
        f.write(f"""
worker_processes 2;
worker_rlimit_nofile {connections * 2 + 64};
pid {tmp}/nginx-{port}.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections {connections * 2}; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/nginx-body;
  proxy_temp_path {tmp}/nginx-proxy;
  upstream mock {{ server 127.0.0.1:{mock_port}; keepalive 128; }}
  server {{
    listen 127.0.0.1:{port} backlog=4096;
    location / {{
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
""")
    return subprocess.Popen(["nginx", "-c", conf, "-g", "daemon off;"], stderr=subprocess.DEVNULL)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--concurrency", type=int, default=50)
    ap.add_argument("--chunk-ms", type=int, default=0, help="mock delay between stream chunks")
    ap.add_argument("--split-writes", action="store_true",
                    help="the mock writes each stream event and each slice of a whole answer on its own")
    ap.add_argument("--low-rate-seconds", type=int, default=20,
                    help="how long p50/p99 is measured at a fixed 20 req/s (0: skip)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench/results/latest.json"))
    ap.add_argument("--binary", default=BIN, help="the tollgate binary (mock and gateways)")
    args = ap.parse_args()
    for tool in ("oha", "nginx"):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: bench/run.sh installs it")

    tmp = tempfile.mkdtemp(prefix="tollgate-bench-")
    procs = []
    try:
        mock_port, gw_port, nginx_port = free_port(), free_port(), free_port()
        mock_cmd = [args.binary, "mock-upstream", "--port", str(mock_port), "--chunk-ms", str(args.chunk_ms)]
        if args.split_writes:
            mock_cmd.append("--split-writes")
        mock = subprocess.Popen(mock_cmd, stderr=subprocess.DEVNULL)
        procs.append(mock)
        env = dict(os.environ, RUST_LOG="warn")

        def gateway(name, port, limits, api="openai"):
            """Starts a Tollgate on its own config (see `write_config`); returns it and its key."""
            proc, key = start_gateway(args.binary, write_config(tmp, name, port, mock_port, limits, api), env)
            procs.append(proc)
            return proc, key

        nolimits_port, anthropic_port, gemini_port = free_port(), free_port(), free_port()
        gw, key = gateway("tollgate", gw_port, True)
        gw_free, key_free = gateway("nolimits", nolimits_port, False)
        # Translated streams (issue 3): the same gateway settings as "nolimits", other wire formats.
        gw_anthropic, key_anthropic = gateway("anthropic", anthropic_port, False, api="anthropic")
        gw_gemini, key_gemini = gateway("gemini", gemini_port, False, api="gemini")
        nginx = start_nginx(tmp, nginx_port, mock_port)
        procs.append(nginx)
        for p in (mock_port, gw_port, nginx_port, nolimits_port, anthropic_port, gemini_port):
            wait_port(p)
        time.sleep(0.3)
        targets = {
            "direct": (f"http://127.0.0.1:{mock_port}/v1/chat/completions", "mock-chat", [], []),
            "nginx": (f"http://127.0.0.1:{nginx_port}/v1/chat/completions", "mock-chat", [],
                      [nginx.pid] + children(nginx.pid)),
            "tollgate": (f"http://127.0.0.1:{gw_port}/v1/chat/completions", "bench-model",
                         [f"Authorization: Bearer {key}"], [gw.pid]),
            "tollgate_nolimits": (f"http://127.0.0.1:{nolimits_port}/v1/chat/completions", "bench-model",
                                  [f"Authorization: Bearer {key_free}"], [gw_free.pid]),
            "anthropic": (f"http://127.0.0.1:{anthropic_port}/v1/chat/completions", "bench-model",
                          [f"Authorization: Bearer {key_anthropic}"], [gw_anthropic.pid]),
            "gemini": (f"http://127.0.0.1:{gemini_port}/v1/chat/completions", "bench-model",
                       [f"Authorization: Bearer {key_gemini}"], [gw_gemini.pid]),
        }
        # Translation is measured on streams only, where it does the most work.
        names_by_mode = {"nonstream": ["direct", "nginx", "tollgate", "tollgate_nolimits"],
                         "stream": ["direct", "nginx", "tollgate", "tollgate_nolimits", "anthropic", "gemini"]}
        messages = [{"role": "user", "content": "Summarise the benchmark method in one short sentence please."}]
        bodies = {
            "nonstream": json.dumps({"model": "{m}", "messages": messages, "max_tokens": 16}),
            "stream": json.dumps({"model": "{m}", "messages": messages, "max_tokens": 16, "stream": True}),
        }
        results = {}
        sent = {}  # per target: [answered, cut off by oha's deadline]

        def load(name, body, seconds, concurrency, rate=None):
            url, model, headers, _ = targets[name]
            r = oha(url, body.replace("{m}", model), headers, seconds, concurrency, rate)
            counts = sent.setdefault(name, [0, 0])
            counts[0] += r["answered"]
            counts[1] += r["cut"]
            return r

        for mode, template in bodies.items():
            names = names_by_mode[mode]
            for name in names:  # warm-up: pools, caches, page faults
                load(name, template, 2, args.concurrency)
            for rnd in range(args.rounds):
                # nginx and Tollgate run back to back, first one then the other, so each round
                # gives one ratio measured within seconds (the machine's speed drifts over
                # tens of seconds); the other targets follow in rotation.
                pair = ["nginx", "tollgate"] if rnd % 2 == 0 else ["tollgate", "nginx"]
                rest = [n for n in names if n not in pair]
                order = pair + rest[rnd % len(rest):] + rest[:rnd % len(rest)]
                for name in order:
                    pids = targets[name][3]
                    before = cpu_ticks(pids)
                    r = load(name, template, args.seconds, args.concurrency)
                    used = (cpu_ticks(pids) - before) / TICK
                    r["cpu_us_per_req"] = used * 1e6 / max(r["ok"], 1) if pids else None
                    results.setdefault((mode, name), []).append(r)
                    print(f"{mode:9} round {rnd} {name:8} {r['rps']:9.0f} req/s  p50 {r['p50_ms']:.2f} ms  "
                          f"p99 {r['p99_ms']:.2f} ms  errors {r['errors']}", flush=True)
        fixed = {}
        rates = [(200, args.seconds)] + ([(20, args.low_rate_seconds)] if args.low_rate_seconds else [])
        for rate, seconds in rates:
            for name in ["direct", "nginx", "tollgate"]:
                r = fixed.setdefault(rate, {})[name] = load(name, bodies["nonstream"], seconds, 50, rate=rate)
                print(f"fixed {rate}/s {name:8} p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms", flush=True)
        rss = peak_rss_mib([gw.pid])
        nginx_rss = peak_rss_mib([nginx.pid] + children(nginx.pid))
        # Exact accounting under load: every request a gateway saw has its usage row once the
        # gateway has stopped (a stop writes what is queued). Requests oha cut off at its
        # deadline may or may not have reached the gateway, so they bound the count from above.
        gateways = {"tollgate": (gw, gw_port), "tollgate_nolimits": (gw_free, nolimits_port),
                    "anthropic": (gw_anthropic, anthropic_port), "gemini": (gw_gemini, gemini_port)}
        spooled = {n: metric(port, "tollgate_usage_log_spooled_total") for n, (_, port) in gateways.items()}
        dropped = {n: metric(port, "tollgate_usage_log_dropped_total") for n, (_, port) in gateways.items()}
        for proc, _ in gateways.values():
            proc.send_signal(signal.SIGTERM)
        for proc, _ in gateways.values():
            proc.wait(timeout=30)
        accounting = {}
        for name in gateways:
            db = os.path.join(tmp, f"{'nolimits' if name == 'tollgate_nolimits' else name}.db")
            answered, cut = sent[name]
            accounting[name] = {"rows": usage_rows(db), "answered": answered, "cut_off": cut,
                                "spooled": spooled[name], "dropped": dropped[name]}

        def median(xs):
            xs = sorted(xs)
            return xs[len(xs) // 2]

        summary = {"rounds": args.rounds, "seconds": args.seconds, "concurrency": args.concurrency,
                   "chunk_ms": args.chunk_ms, "split_writes": args.split_writes,
                   "tollgate_peak_rss_mib": round(rss, 1),
                   "nginx_peak_rss_mib": round(nginx_rss, 1), "modes": {}, "fixed_rate": fixed,
                   "usage_accounting": accounting}
        lines = ["| mode | target | req/s | p50 ms | p99 ms | CPU µs/req | errors |", "|---|---|---|---|---|---|---|"]
        for mode in bodies:
            m = {}
            for name in names_by_mode[mode]:
                rs = results[(mode, name)]
                cpu = [r["cpu_us_per_req"] for r in rs if r["cpu_us_per_req"] is not None]
                m[name] = {"rps": median([r["rps"] for r in rs]), "p50_ms": median([r["p50_ms"] for r in rs]),
                           "p99_ms": median([r["p99_ms"] for r in rs]), "errors": sum(r["errors"] for r in rs),
                           "cpu_us_per_req": median(cpu) if cpu else None}
                cpu_s = f"{m[name]['cpu_us_per_req']:.0f}" if cpu else "-"
                lines.append(f"| {mode} | {name} | {m[name]['rps']:.0f} | {m[name]['p50_ms']:.2f} | "
                             f"{m[name]['p99_ms']:.2f} | {cpu_s} | {m[name]['errors']} |")
            m["tollgate_vs_nginx_throughput"] = round(m["tollgate"]["rps"] / m["nginx"]["rps"], 3)
            paired = [t["rps"] / n["rps"] for t, n in zip(results[(mode, "tollgate")], results[(mode, "nginx")])]
            m["tollgate_vs_nginx_paired"] = [round(r, 3) for r in paired]
            m["tollgate_vs_nginx_paired_median"] = round(median(paired), 3)
            cpu_paired = [t["cpu_us_per_req"] / n["cpu_us_per_req"]
                          for t, n in zip(results[(mode, "tollgate")], results[(mode, "nginx")])]
            m["tollgate_vs_nginx_cpu_paired"] = [round(r, 3) for r in cpu_paired]
            m["tollgate_vs_nginx_cpu_paired_median"] = round(median(cpu_paired), 3)
            m["tollgate_vs_direct_throughput"] = round(m["tollgate"]["rps"] / m["direct"]["rps"], 3)
            m["limits_on_vs_off_throughput"] = round(m["tollgate"]["rps"] / m["tollgate_nolimits"]["rps"], 3)
            for api in ("anthropic", "gemini"):
                if api in m:
                    m[f"{api}_vs_passthrough_cpu"] = round(m[api]["cpu_us_per_req"] / m["tollgate_nolimits"]["cpu_us_per_req"], 3)
            summary["modes"][mode] = m
        lines.append("")
        for mode in bodies:
            mm = summary["modes"][mode]
            lines.append(f"- {mode}: Tollgate / nginx throughput = {mm['tollgate_vs_nginx_throughput']} "
                         f"(ratio of medians); per round, back to back: {mm['tollgate_vs_nginx_paired']}, "
                         f"median {mm['tollgate_vs_nginx_paired_median']}")
            lines.append(f"- {mode}: CPU per request, Tollgate / nginx, per round: "
                         f"{mm['tollgate_vs_nginx_cpu_paired']}, median {mm['tollgate_vs_nginx_cpu_paired_median']}")
            lines.append(f"- {mode}: Tollgate / direct = {mm['tollgate_vs_direct_throughput']}, "
                         f"limits on / off = {mm['limits_on_vs_off_throughput']}")
        st = summary["modes"]["stream"]
        lines.append(f"- translated streams, CPU per request vs the OpenAI pass-through: Anthropic "
                     f"{st['anthropic_vs_passthrough_cpu']}x, Gemini {st['gemini_vs_passthrough_cpu']}x")
        for rate, f in fixed.items():
            lines.append(f"- at a fixed {rate} req/s, p50 / p99: direct {f['direct']['p50_ms']:.2f} / "
                         f"{f['direct']['p99_ms']:.2f} ms, nginx {f['nginx']['p50_ms']:.2f} / "
                         f"{f['nginx']['p99_ms']:.2f} ms, Tollgate {f['tollgate']['p50_ms']:.2f} / "
                         f"{f['tollgate']['p99_ms']:.2f} ms (p99 "
                         f"{f['tollgate']['p99_ms'] - f['direct']['p99_ms']:+.2f} ms over direct)")
        lines.append(f"- peak RSS: Tollgate {rss:.1f} MiB, nginx (master + 2 workers) {nginx_rss:.1f} MiB")
        for name, a in accounting.items():
            exact = a["answered"] <= a["rows"] <= a["answered"] + a["cut_off"] and a["dropped"] == 0
            lines.append(f"- usage rows, {name}: {a['rows']} for {a['answered']} answered requests "
                         f"(+{a['cut_off']} cut off by oha's deadline), spooled {a['spooled']:.0f}, "
                         f"dropped {a['dropped']:.0f}: {'every request metered' if exact else 'MISMATCH'}")
        table = "\n".join(lines)
        print("\n" + table)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(summary, f, indent=2)
        with open(os.path.splitext(args.out)[0] + ".md", "w") as f:
            f.write(table + "\n")
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
