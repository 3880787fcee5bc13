"""Every panel of every dashboard in grafana/dashboards returns data from a real Prometheus.

Starts a Tollgate (the binary, in-process mock provider, SQLite in a temp dir) and a Prometheus
(its own config and data dir in the same temp dir, on 127.0.0.1, scraping every second), sends
a short bounded load (plain, streamed and cacheable chats, embeddings, a failing model, a
fallback, requests refused by a model limit, a key budget and a missing key), then runs each
panel target's query and each template variable's query through Prometheus's HTTP API: each
must parse and return a non-empty result, and the panels the load is meant to move must show a
non-zero value. The alert rules are loaded too and must evaluate without error.

Run by scripts/grafana_check.sh: python3 tests/grafana/check_dashboards.py TOLLGATE_BIN
"""

import concurrent.futures
import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DASHBOARDS = sorted(glob.glob(os.path.join(ROOT, "grafana", "dashboards", "*.json")))
ALERTS = os.path.join(ROOT, "grafana", "prometheus", "alerts.yml")
MASTER = "grafana-check-master-key-0123456789"
SCRAPE = "1s"
# What Grafana would put in the queries with a 1 s scrape interval over a short range.
VARIABLES = {"__rate_interval": "4s", "__interval": "1s", "__range": "1m",
             "__range_s": "60", "__interval_ms": "1000"}
# The response cache's panels: while this build has no cache (`tollgate check-config` refuses a
# `[cache]` section) their queries must parse but may be empty; with it they are checked like
# the others, and the load must move hits and misses.
CACHE_METRICS = "tollgate_cache_"
CACHE_MUST_MOVE = {"Cache hit ratio", "Cache lookups per second"}
# Panels the load must move (a non-zero value at some point), beyond returning data: the
# refusal and error counters are exported at 0 from the start, so data alone proves little.
MUST_MOVE = {"Errors by type", "Limit refusals by scope", "Budget refusals by scope",
             "Fallbacks by model", "Auth failures by reason", "Cost per hour by provider",
             "Time to first token p50 / p99", "Output tokens per second by model"}
DEADLINE = time.monotonic() + 60
# Everything here is on loopback: never through a proxy the environment may name.
urllib.request.install_opener(urllib.request.build_opener(urllib.request.ProxyHandler({})))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return resp.read().decode()


def wait_for(what, check, timeout=20):
    end = min(time.monotonic() + timeout, DEADLINE)
    while time.monotonic() < end:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.2)
    raise SystemExit(f"FAIL: {what} within {timeout} s")


GATEWAY_CONFIG = """
[server]
listen = "127.0.0.1:{port}"
[database]
url = "sqlite://{tmp}/tollgate.db?mode=rwc"
[auth]
require_api_key = true
master_key = "{master}"
[usage]
spool_path = "{tmp}/usage.spool"
flush_interval_ms = 50
{cache}
[[providers]]
name = "mock"
api = "mock"
requests_per_minute = 0
max_parallel_requests = 100

[[providers]]
name = "flaky"
api = "mock"
requests_per_minute = 0
max_parallel_requests = 100

[[models]]
name = "chat"
provider = "mock"
model_id = "mock-chat"
cost_input_per_million = "1.00"
cost_output_per_million = "2.00"

[[models]]
name = "embed"
provider = "mock"
model_id = "mock-embed"
model_type = "embedding"
cost_input_per_million = "0.02"

[[models]]
name = "broken"
provider = "flaky"
model_id = "mock-status-500"

[[models]]
name = "resilient"
provider = "flaky"
model_id = "mock-status-503"
priority = 1

[[models]]
name = "resilient"
provider = "mock"
model_id = "mock-resilient"
priority = 2
cost_input_per_million = "0.50"
cost_output_per_million = "1.00"

[[models]]
name = "limited"
provider = "mock"
model_id = "mock-limited"
rate_limits = {{ requests_per_minute = 5 }}
"""
# Added when this build knows the response cache (checked with `tollgate check-config`).
CACHE = '[cache]\nenabled = true\nttl_secs = 300\nbackend = "memory"\n'


def quiet_env():
    """The environment for Tollgate: warnings only, and the config's database, not one that
    DATABASE_URL would put in its place."""
    env = dict(os.environ, RUST_LOG="warn")
    env.pop("DATABASE_URL", None)
    return env


def run(binary, config, *args):
    return subprocess.run([binary, "--config", config, *args], capture_output=True, text=True,
                          env=quiet_env(), timeout=30)


def write_config(binary, tmp, port):
    """The gateway's config, with the response cache on when this build accepts `[cache]`."""
    config = os.path.join(tmp, "tollgate.toml")
    for cache in (CACHE, ""):
        with open(config, "w") as f:
            f.write(GATEWAY_CONFIG.format(port=port, tmp=tmp, master=MASTER, cache=cache))
        checked = run(binary, config, "check-config")
        if checked.returncode == 0:
            return config, bool(cache)
    raise SystemExit(f"FAIL: tollgate check-config:\n{checked.stdout}{checked.stderr}")


def create_key(binary, config, *args):
    made = run(binary, config, "keys", "create", *args)
    if made.returncode != 0:
        raise SystemExit(f"FAIL: keys create {args}: {made.stderr}")
    return made.stdout.strip().splitlines()[-1]


@contextlib.contextmanager
def process(args, log):
    with open(log, "w") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=quiet_env())
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_prometheus(tmp, gateway_port):
    port = free_port()
    shutil.copy(ALERTS, os.path.join(tmp, "alerts.yml"))
    config = os.path.join(tmp, "prometheus.yml")
    with open(config, "w") as f:
        f.write(f"""global:
  scrape_interval: {SCRAPE}
  evaluation_interval: {SCRAPE}
rule_files: [alerts.yml]
scrape_configs:
  - job_name: tollgate
    static_configs:
      - targets: ["127.0.0.1:{gateway_port}"]
""")
    args = ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={tmp}/prometheus-data",
            f"--web.listen-address=127.0.0.1:{port}", "--storage.tsdb.retention.time=1h"]
    return args, f"http://127.0.0.1:{port}"


def post(url, body, key, stream=False):
    req = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
        "authorization": f"Bearer {key}", "content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()
            return resp.status
    except urllib.error.HTTPError as e:
        e.read()
        return e.code


def chat(model, words, **extra):
    return {"model": model, "messages": [{"role": "user", "content": words}], "max_tokens": 8,
            **extra}


# Asked again and again at temperature 0: a cache hit from its second time on.
SAME_QUESTION = chat("chat", "same question", temperature=0)


def load_jobs(base, key, broke_key):
    """The load, about 340 requests: (how many, the i-th request) for each kind of traffic."""
    v1 = f"{base}/v1"
    chats = f"{v1}/chat/completions"
    kinds = [
        (60, lambda i: (chats, chat("chat", f"hello number {i}"), key)),
        (60, lambda i: (chats, chat("chat", f"stream {i} please", stream=True,
                                    stream_options={"include_usage": True}), key)),
        (60, lambda i: (chats, SAME_QUESTION, key)),
        (20, lambda i: (chats, chat("chat", f"new question {i}", temperature=0), key)),
        (40, lambda i: (chats, chat("broken", f"fail {i}"), key)),
        (40, lambda i: (chats, chat("resilient", f"fall back {i}"), key)),
        (20, lambda i: (f"{v1}/embeddings", {"model": "embed", "input": [f"text {i}"]}, key)),
        (20, lambda i: (chats, chat("limited", f"limit {i}"), key)),
        (10, lambda i: (chats, chat("chat", "over budget"), broke_key)),
        (10, lambda i: (chats, chat("chat", "no key"), "tg-not-a-key")),
    ]
    return kinds


def scraped_total(prom):
    """The requests Prometheus has last seen counted, summed over every series."""
    answer = json.loads(get(f"{prom}/api/v1/query?query=sum(tollgate_requests_total)"))
    result = answer["data"]["result"]
    return float(result[0]["value"][1]) if result else -1.0


def wait_scraped(prom, total):
    """Waits for a scrape that saw `total` requests, then one more so that a rate() over the
    last two samples covers the increase."""
    wait_for(f"prometheus to see {total} requests", lambda: scraped_total(prom) >= total)
    time.sleep(1.5)


def load(base, prom, key, broke_key):
    """Sends one request of each kind, waits until Prometheus has scraped them, then sends the
    rest, 8 at a time; returns the count of each status. A series appears when it first moves, and rate() cannot
    see an increase that happened before a series' first sample: the first round makes every
    series exist so the second one shows as a rate."""
    kinds = load_jobs(base, key, broke_key)
    counts = {}

    def send(job):
        return post(*job) if time.monotonic() < DEADLINE else "skipped: past the deadline"

    def run(jobs):
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            for status in pool.map(send, jobs):
                counts[status] = counts.get(status, 0) + 1
    run([make(0) for _, make in kinds])
    # Once the first one is answered (and stored, with the cache on), a hit.
    run([(f"{base}/v1/chat/completions", SAME_QUESTION, key)])
    wait_scraped(prom, answered(counts))
    run([make(i) for n, make in kinds for i in range(1, n)])
    wait_scraped(prom, answered(counts))
    return counts


def answered(counts):
    """Requests counted in tollgate_requests_total: all but those refused before a caller was
    authenticated (401)."""
    return sum(n for status, n in counts.items() if status != 401)


def expand(expr):
    """Replaces Grafana's variables: built-ins by their value, template variables by `.*`
    (their "All" value)."""
    def value(m):
        name = m.group(1) or m.group(2)
        return VARIABLES.get(name, ".*")
    return re.sub(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)", value, expr)


def moved(value):
    """A sample that is neither 0 nor NaN (NaN is the only value unequal to itself)."""
    x = float(value)
    return x == x and x != 0


def query_range(prom, expr, start, end, must_move=False):
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": "1"})
    try:
        answer = json.loads(get(f"{prom}/api/v1/query_range?{params}"))
    except urllib.error.HTTPError as e:
        answer = json.loads(e.read() or b"{}")
    if answer.get("status") != "success":
        return f"error: {answer.get('errorType')}: {answer.get('error')}"
    result = answer["data"]["result"]
    if not result:
        return "no data"
    if must_move and not any(moved(v) for series in result for _, v in series["values"]):
        return "only zeros: the load did not move it"
    return None


def variable_values(prom, query):
    m = re.fullmatch(r"label_values\((\w+),\s*(\w+)\)", query.strip())
    if not m:
        return f"unsupported variable query {query!r}"
    metric, label = m.groups()
    params = urllib.parse.urlencode({"match[]": metric})
    values = json.loads(get(f"{prom}/api/v1/label/{label}/values?{params}"))["data"]
    return None if values else "no values"


def targets(dashboard):
    def walk(panels):
        for p in panels:
            yield from walk(p.get("panels", []))
            for t in p.get("targets", []):
                yield p["title"], t
    yield from walk(dashboard["panels"])


def check_dashboard(prom, path, cache, start, end):
    dashboard = json.load(open(path))
    name = os.path.basename(path)
    failures, checked = [], 0
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            problem = variable_values(prom, query)
            checked += 1
            if problem:
                failures.append(f"{name}: variable ${var['name']} ({query}): {problem}")
    for title, target in targets(dashboard):
        expr = expand(target["expr"])
        # With the cache on, the repeated and the new temperature-0 questions move its panels.
        must_move = title in MUST_MOVE or (cache and title in CACHE_MUST_MOVE)
        problem = query_range(prom, expr, start, end, must_move)
        checked += 1
        if problem == "no data" and not cache and CACHE_METRICS in expr:
            print(f"  pending  {title} [{target['refId']}]: no response cache in this build")
        elif problem:
            failures.append(f"{name}: {title} [{target['refId']}]: {problem}\n    {expr}")
    return failures, checked


def check_rules(prom):
    groups = json.loads(get(f"{prom}/api/v1/rules"))["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    if not rules:
        return ["no alert rules loaded"]
    return [f"rule {r['name']}: {r.get('lastError')}" for r in rules if r.get("health") != "ok"]


def main():
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/debug/tollgate")
    tmp = tempfile.mkdtemp(prefix="tollgate-grafana-")
    # A `timeout` around this script stops it with SIGTERM: leave through the context managers
    # so that Tollgate and Prometheus are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit("FAIL: stopped by SIGTERM"))
    try:
        sys.exit(check(binary, tmp))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def check(binary, tmp):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    config, cache = write_config(binary, tmp, port)
    made = run(binary, config, "projects", "create", "--name", "team-a")
    if made.returncode != 0:
        raise SystemExit(f"FAIL: projects create: {made.stderr}")
    key = create_key(binary, config, "--name", "load", "--project", "team-a")
    broke_key = create_key(binary, config, "--name", "broke", "--budget-usd", "0.000001")
    prom_args, prom = start_prometheus(tmp, port)
    with process([binary, "--config", config, "serve"], f"{tmp}/tollgate.log"), \
            process(prom_args, f"{tmp}/prometheus.log"):
        wait_for("tollgate answers /healthz", lambda: get(f"{base}/healthz"))
        wait_for("prometheus is ready", lambda: get(f"{prom}/-/ready"))
        wait_for("prometheus scrapes tollgate", lambda: json.loads(get(
            f"{prom}/api/v1/query?query=up")).get("data", {}).get("result", [{}])[0]
            .get("value", [0, "0"])[1] == "1")
        start = time.time()
        counts = load(base, prom, key, broke_key)
        print(f"load: {sum(counts.values())} requests, by status {dict(sorted(counts.items()))}"
              f"; response cache {'on' if cache else 'not in this build'}")
        end = time.time()
        failures, checked = [], 0
        for path in DASHBOARDS:
            f, n = check_dashboard(prom, path, cache, start, end)
            failures += f
            checked += n
        failures += check_rules(prom)
    if not DASHBOARDS:
        failures.append("no dashboards in grafana/dashboards")
    for f in failures:
        print(f"FAIL {f}")
    if failures:
        for log in ("tollgate.log", "prometheus.log"):
            with open(os.path.join(tmp, log)) as f:
                print(f"--- last lines of {log}\n" + "".join(f.readlines()[-15:]))
    print(f"{checked} queries in {len(DASHBOARDS)} dashboard(s): "
          f"{'ok' if not failures else f'{len(failures)} failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    main()
