"""Benchmark: two gateway endpoints over HTTP against a bare Starlette endpoint served the same way in the same run.

Both sides are real uvicorn processes on 127.0.0.1 (tests/servers.py; same uvicorn options, ``--no-access-log``,
uvloop and httptools when installed), the gateway as ``uvicorn --factory gateway.app:create_app`` on a fresh
SQLite store in a temporary directory, the baseline as ``bench/bare_app.py``:

* ``metadata``: ``GET /.well-known/cds-server-metadata.json`` (CDS-WG1-01) against a bare ``GET`` whose handler
  returns a constant ``JSONResponse`` of the very document the gateway served (fetched once at startup);
* ``token``: ``POST /oauth/token`` with ``grant_type=client_credentials&scope=cds_client_admin`` and
  client_secret_basic, for a client registered at startup through ``POST /oauth/register``, against a bare
  ``POST`` that reads the urlencoded form and answers a small JSON. Both receive the same request bytes.

The load generator is this process (separate from the servers): asyncio (uvloop when installed) and one
``httpx2.AsyncClient`` with ``--concurrency`` keep-alive connections, each looping one request at a time. Each
target gets ``--warmup`` seconds, then ``--seconds`` measured: requests that start and finish inside that window
count; latency is taken around each request with ``time.perf_counter_ns``. Non-2xx answers and transport errors
are counted as errors (warm-up included) and printed loudly; the exit status is then 1. The order is bare
metadata, gateway metadata, bare token, gateway token, and the whole cycle repeats ``--rounds`` times so that the
noise of a shared machine falls on both sides of each pair alike; the table shows each figure's median over the
rounds, the ratios are the medians of the per-round ratios (each from two adjacent measurements).

CPU columns: the load generator's CPU time and the server's (its process and every descendant, from /proc) over
the measured window, in percent of one core. On a small machine the client competes with the server for cores:
when the client uses more CPU than the server, the client sets the rps (a Python HTTP client costs more per request
than bare Starlette does), so that side's rps is a floor and the rps and latency ratios understate how much faster
bare Starlette is. Server CPU milliseconds per request, and its ratio, do not depend on the client.

Why the token endpoint is inherently slower than its bare counterpart: per token, the gateway runs Authlib's grant
dispatch (client authentication, grant type and scope checks, token generation) synchronously in Starlette's
threadpool (a thread hand-off per request, under the GIL); it reads the failed-authentication counter, the client
and its credentials and the client's grant, hashes the presented secret and the new access token with
HMAC-SHA256, and commits a database transaction inserting the Token row (a SQLite WAL write here). The bare
endpoint does none of this. The failed-authentication rate limiter never triggers: every authentication succeeds.

    .venv/bin/python bench/gateway.py                               # 3 rounds × 4 targets × (2 + 10) s ≈ 2.5 min
    .venv/bin/python bench/gateway.py --seconds 3 --rounds 1        # a quick check
    .venv/bin/python bench/gateway.py --endpoints token --workers 2
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import math
import os
import platform
import secrets
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from urllib.parse import quote, urlencode

import httpx2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from servers import uvicorn_server  # noqa: E402

METADATA_PATH = "/.well-known/cds-server-metadata.json"
TOKEN_FORM = urlencode({"grant_type": "client_credentials", "scope": "cds_client_admin"}).encode()
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Target:
    name: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes | None = None
    pid: int = 0  # the uvicorn process, for its CPU time


@dataclass
class Result:
    target: str
    seconds: float
    latencies_ns: list[int]
    errors: Counter  # in the measured window: "HTTP 429", "ReadTimeout"…
    other_errors: Counter  # during warm-up, or finishing after the window
    client_cpu: float  # CPU seconds of this process over the window
    server_cpu: float  # CPU seconds of the server process tree over the window

    @property
    def rps(self) -> float:
        return len(self.latencies_ns) / self.seconds

    def percentile_ms(self, q: float) -> float:
        """Nearest-rank percentile (q in 0..1) of the successful requests' latencies, in milliseconds."""
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] / 1e6


# ------------------------------------------------------------------------------------------------------ measuring
def tree_cpu_seconds(root: int) -> float:
    """User + system CPU seconds of process ``root`` and all its live descendants (uvicorn workers), from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat(5))
    family, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent and pid not in family]
        family.update(children)
        frontier += children
    return sum(times.get(pid, 0) for pid in family) / CLOCK_TICKS


async def hammer(target: Target, concurrency: int, warmup: float, seconds: float) -> Result:
    """``concurrency`` connections each sending ``target``'s request back to back for warm-up + measured time."""
    latencies: list[int] = []
    errors: Counter = Counter()
    other_errors: Counter = Counter()
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=60)
    async with httpx2.AsyncClient(limits=limits, timeout=30.0, trust_env=False) as client:
        start = time.perf_counter_ns()
        window_start = start + int(warmup * 1e9)
        window_end = window_start + int(seconds * 1e9)
        cpu: dict[str, float] = {}

        async def worker() -> None:
            while True:
                sent = time.perf_counter_ns()
                if sent >= window_end:
                    return
                try:
                    response = await client.request(target.method, target.url, headers=target.headers,
                                                    content=target.body)
                    problem = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
                except httpx2.HTTPError as error:
                    problem = type(error).__name__
                done = time.perf_counter_ns()
                inside = sent >= window_start and done <= window_end
                if problem is None:
                    if inside:
                        latencies.append(done - sent)
                elif inside:
                    errors[problem] += 1
                else:
                    other_errors[problem] += 1

        async def cpu_meter() -> None:
            await asyncio.sleep((window_start - time.perf_counter_ns()) / 1e9)
            cpu["client"], cpu["server"] = time.process_time(), tree_cpu_seconds(target.pid)
            await asyncio.sleep((window_end - time.perf_counter_ns()) / 1e9)
            cpu["client"] = time.process_time() - cpu["client"]
            cpu["server"] = tree_cpu_seconds(target.pid) - cpu["server"]

        await asyncio.gather(cpu_meter(), *(worker() for _ in range(concurrency)))
    return Result(target.name, seconds, latencies, errors, other_errors, cpu["client"], cpu["server"])


def event_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


# -------------------------------------------------------------------------------------------------------- set-up
def probe(method: str, url: str, **kwargs) -> httpx2.Response:
    response = httpx2.request(method, url, trust_env=False, timeout=30.0, **kwargs)
    return response


def register_client(base: str) -> tuple[str, str]:
    response = probe("POST", f"{base}/oauth/register", json={"scope": "cds_client_admin", "client_name": "bench"})
    if response.status_code != 201:
        raise SystemExit(f"POST /oauth/register answered {response.status_code}: {response.text[:500]}")
    body = response.json()
    return body["client_id"], body["client_secret"]


def basic_auth(client_id: str, client_secret: str) -> str:
    """RFC 6749 §2.3.1: each part form-urlencoded, then ``id:secret`` in base64."""
    pair = f"{quote(client_id, safe='')}:{quote(client_secret, safe='')}"
    return "Basic " + base64.b64encode(pair.encode()).decode()


def print_error_banner(lines: list[str]) -> None:
    banner = "!" * 100
    for stream in (sys.stderr, sys.stdout):
        print(f"\n{banner}\n!!! ERRORS: the figures below include failed requests or lost time\n", file=stream)
        for line in lines:
            print(f"!!!   {line}", file=stream)
        print(banner, file=stream)


# ----------------------------------------------------------------------------------------------------------- main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the whole cycle (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server (default 1)")
    parser.add_argument("--endpoints", nargs="+", choices=("metadata", "token"), default=["metadata", "token"],
                        help="which pairs to measure (default both)")
    parser.add_argument("--keep-logs", type=Path, help="a directory for both servers' logs (default: discarded)")
    args = parser.parse_args()
    if args.concurrency < 1 or args.rounds < 1 or args.workers < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--concurrency, --rounds and --workers must be ≥ 1, --seconds > 0 and --warmup ≥ 0")

    uvicorn_args = ["--workers", str(args.workers), "--no-access-log", "--log-level", "warning"]
    logs = {}
    if args.keep_logs:
        logs = {"gateway": args.keep_logs / "gateway.log", "bare": args.keep_logs / "bare.log"}

    with tempfile.TemporaryDirectory(prefix="greenbridge-bench-gateway-") as data_dir, contextlib.ExitStack() as stack:
        gateway_env = {
            "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}",
            "GREENBRIDGE_DATA_DIR": data_dir,
            "GREENBRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
        }
        print("starting the gateway…", file=sys.stderr)
        gateway = stack.enter_context(uvicorn_server(
            "gateway.app:create_app", env=gateway_env, health_path="/healthz", app_dir=REPO, args=uvicorn_args,
            log_path=logs.get("gateway")))

        metadata = probe("GET", gateway + METADATA_PATH)
        if "metadata" in args.endpoints and metadata.status_code != 200:
            raise SystemExit(f"GET {METADATA_PATH} answered {metadata.status_code} (not served yet?); "
                             "use --endpoints token to measure the token endpoint alone")
        client_id, client_secret = register_client(gateway)
        token_headers = {"Authorization": basic_auth(client_id, client_secret),
                         "Content-Type": "application/x-www-form-urlencoded"}
        check = probe("POST", gateway + "/oauth/token", headers=token_headers, content=TOKEN_FORM)
        if check.status_code != 200 or "access_token" not in check.json():
            raise SystemExit(f"POST /oauth/token answered {check.status_code}: {check.text[:500]}")

        bare_env = {"BENCH_METADATA_JSON": metadata.text} if metadata.status_code == 200 else {}
        print("starting the bare app…", file=sys.stderr)
        bare = stack.enter_context(uvicorn_server(
            "bare_app:create_app", env=bare_env, health_path="/healthz", app_dir=REPO / "bench", args=uvicorn_args,
            log_path=logs.get("bare")))
        bare_metadata = probe("GET", bare + "/metadata")
        if metadata.status_code == 200 and bare_metadata.content != metadata.content:
            print(f"(note: the bare document is {len(bare_metadata.content)} bytes, the gateway's "
                  f"{len(metadata.content)})", file=sys.stderr)

        pairs: list[tuple[Target, Target]] = []
        if "metadata" in args.endpoints:
            pairs.append((Target("bare metadata", "GET", bare + "/metadata", pid=bare.pid),
                          Target("gateway metadata", "GET", gateway + METADATA_PATH, pid=gateway.pid)))
        if "token" in args.endpoints:
            pairs.append((Target("bare token", "POST", bare + "/token", token_headers, TOKEN_FORM, pid=bare.pid),
                          Target("gateway token", "POST", gateway + "/oauth/token", token_headers, TOKEN_FORM,
                                 pid=gateway.pid)))

        rounds = run_rounds(args, pairs)

    report(args, pairs, rounds)
    problems = [f"round {n}, {name}: {kind} × {count}{'' if measured else ' (warm-up or after the window)'}"
                for n, results in enumerate(rounds, 1) for name, result in results.items()
                for measured, counter in ((True, result.errors), (False, result.other_errors))
                for kind, count in counter.items()]
    if problems:
        print_error_banner(problems)
        return 1
    return 0


def server_ms_per_request(result: Result) -> float:
    """Server CPU milliseconds per successful request over the window: insensitive to a client-bound rps."""
    return 1000 * result.server_cpu / len(result.latencies_ns) if result.latencies_ns else math.nan


def run_rounds(args: argparse.Namespace, pairs: list[tuple[object, object]], load=None) -> list[dict[str, Result]]:
    """Every target of every pair, interleaved, ``args.rounds`` times (noise hits both sides of a pair alike).

    ``load`` is the coroutine that hammers one target (default :func:`hammer`; bench/data_api.py brings its own).
    """
    load = load or hammer
    rounds: list[dict[str, Result]] = []
    with asyncio.Runner(loop_factory=event_loop_factory()) as runner:
        for number in range(1, args.rounds + 1):
            results: dict[str, Result] = {}
            for pair in pairs:
                for target in pair:
                    print(f"round {number}/{args.rounds}: {target.name}…", file=sys.stderr)
                    result = runner.run(load(target, args.concurrency, args.warmup, args.seconds))
                    results[target.name] = result
                    print(f"    {result.rps:9.1f} rps, p50 {result.percentile_ms(0.5):.2f} ms, "
                          f"p99 {result.percentile_ms(0.99):.2f} ms, errors {sum(result.errors.values())}",
                          file=sys.stderr)
            rounds.append(results)
    return rounds


def report(args: argparse.Namespace, pairs: list[tuple[Target, Target]], rounds: list[dict[str, Result]]) -> None:
    def median(name: str, value: Callable[[Result], float]) -> float:
        return statistics.median(value(results[name]) for results in rounds)

    loop = "uvloop" if event_loop_factory() else "asyncio"
    print()
    print(f"Python {platform.python_version()}, uvicorn {version('uvicorn')}, starlette {version('starlette')}, "
          f"httpx2 {version('httpx2')}; {os.cpu_count()} CPUs ({len(os.sched_getaffinity(0))} usable), "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"{args.workers} uvicorn worker(s) per server; client: {loop}, {args.concurrency} connections; "
          f"{args.warmup:g} s warm-up + {args.seconds:g} s measured per target; median of {len(rounds)} round(s)")
    print()
    print(f"{'target':18} {'rps':>9} {'p50 ms':>8} {'p99 ms':>8} {'errors':>7} {'requests':>9} "
          f"{'client CPU':>10} {'server CPU':>10} {'server CPU ms/req':>17}")
    for pair in pairs:
        for target in pair:
            errors = sum(sum(results[target.name].errors.values()) for results in rounds)
            print(f"{target.name:18} {median(target.name, lambda r: r.rps):9.1f} "
                  f"{median(target.name, lambda r: r.percentile_ms(0.5)):8.2f} "
                  f"{median(target.name, lambda r: r.percentile_ms(0.99)):8.2f} {errors:7d} "
                  f"{median(target.name, lambda r: len(r.latencies_ns)):9.0f} "
                  f"{median(target.name, lambda r: 100 * r.client_cpu / r.seconds):9.0f}% "
                  f"{median(target.name, lambda r: 100 * r.server_cpu / r.seconds):9.0f}% "
                  f"{median(target.name, server_ms_per_request):17.3f}")
    print()
    for bare, gateway in pairs:
        endpoint = gateway.name.split()[-1]
        ratios = {}
        for label, value in (("rps", lambda r: r.rps), ("p50", lambda r: r.percentile_ms(0.5)),
                             ("p99", lambda r: r.percentile_ms(0.99)), ("server CPU/req", server_ms_per_request)):
            per_round = [value(results[gateway.name]) / value(results[bare.name]) for results in rounds]
            ratios[label] = (statistics.median(per_round), min(per_round), max(per_round))
        spread = "" if len(rounds) == 1 else "  (per-round range: " + ", ".join(
            f"{label} {low:.2f}–{high:.2f}" for label, (_, low, high) in ratios.items()) + ")"
        print(f"{endpoint:8} gateway/bare: rps {ratios['rps'][0]:.2f}×, p50 {ratios['p50'][0]:.2f}×, "
              f"p99 {ratios['p99'][0]:.2f}×; server CPU per request {ratios['server CPU/req'][0]:.2f}×{spread}")
    busy = [bare.name for bare, _gateway in pairs
            if median(bare.name, lambda r: r.client_cpu) > median(bare.name, lambda r: r.server_cpu)]
    if busy:
        print(f"\n(during {', '.join(busy)} the load generator used more CPU than the server: the client, not the "
              "server, sets that rps, so the rps and latency ratios understate the gap; server CPU per request "
              "does not depend on the client)")

if __name__ == "__main__":
    raise SystemExit(main())
