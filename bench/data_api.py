"""Benchmark: the usage-segments listing (CDS-WG3-01 §10) over HTTP against a bare Starlette endpoint in the same run.

The approach and the measuring helpers are those of bench/gateway.py (imported from it): real uvicorn processes on
127.0.0.1 (tests/servers.py, same uvicorn options, ``--no-access-log``), a load generator in this process (asyncio,
uvloop when installed, one ``httpx2.AsyncClient`` with ``--concurrency`` keep-alive connections each sending one
request at a time), ``--warmup`` then ``--seconds`` measured per target, interleaved rounds (bare, gateway, bare,
gateway…, the whole cycle ``--rounds`` times), the median round's figures, server CPU per request from /proc, and
the ratios gateway/bare (medians of the per-round ratios). One difference: a request counts when it completes inside
the measured window (bench/gateway.py also requires it to start there, which at this gateway's latencies of about a
second would drop a tenth of the completions). Server CPU is the uvicorn process tree's: with ``--postgres`` or
``--database-url`` the database server's own CPU is not in it.

Set-up, in a temporary directory: two deterministic feeds from ``greenbridge generate`` (15-minute electric data)
loaded with ``greenbridge ingest`` into a fresh store (SQLite by default; ``--postgres`` for a throwaway PostgreSQL
cluster, ``--database-url`` for a new database on an existing PostgreSQL server, dropped at the end), then the
gateway (``uvicorn --factory gateway.app:create_app``) on that store, with the same GREENBRIDGE_SECRET_KEY (random per
run) for ingest and server. Tokens come from the real flow over HTTP: dynamic registration, an admin token, the
code-flow client and its secret from the Clients and Credentials APIs, then PAR → authorize → consent form →
confirmation page (Continue) → code → token with PKCE,
``authorization_details [{"type": "cds_usage_1", "segment_start": "P3Y"}]``, one grant per customer:

* ``year``: customer-1 has one meter with ``--year-days`` (365) days of 15-minute data ending yesterday, i.e. one
  usage segment per local day (plus the segments the ingest derives from the feed's usage summaries). By default the
  load generator *pages through the whole listing*: the first page and every ``next`` link (pages of 100), each
  connection cycling through the pages in order from a different starting page, so every page is requested about
  equally often and each request counts once (``--year first-page`` requests the first page only, over and over);
* ``meters``: customer-2 has ``--meters`` (100) meters × ``--meter-days`` (3) days; the request is the first page of
  ``GET …/usage-segments?after=T&before=T`` with T the middle day's noon (UTC), i.e. the one segment of each meter
  that covers that instant: one page of 100 segments from 100 different meters.

Before measuring, every page is checked: 200, the expected number of segments (all the ingested ones for ``year``,
pages of 100 but the last, each id once, one meter; 100 segments from 100 distinct meters for ``meters``).

The bare side (bench/bare_data_app.py) answers the very bytes the gateway answered for each request target
(fetched once at set-up, written to a file, encoded once at its startup) with the same Content-Type and no-store
headers: a route match and a dictionary look-up. Both sides receive the same request (path, query and the Bearer
header). Every page of the bare side is compared byte for byte with the gateway's before measuring. Non-2xx
answers and transport errors are errors (warm-up included), printed loudly; the exit status is then 1.

So the ratios price the gateway's whole request: the Bearer token, its credential, client and grant in one query
(cds.bearer_access), the grant's access (kept per process while the customer's objects keep their version, a
digest read in the request's transaction), the page's segment ids in key order (a cursor lookup on later pages),
their stored servings by id (the JSON ingest prepared, joined with the grant's projection of each segment's
related ids and formats, decided once per shape; trimmed or column-picked segments from their bodies), rendering
the page, all in one database transaction on the gateway's store thread (``[gateway] store_threads``,
``--store-threads``). The bare side's rps is often set by the load generator (see the note under the table);
server CPU per request is not.

    .venv/bin/python bench/data_api.py                               # 3 rounds × 4 targets × (2 + 10) s ≈ 2.5 min
    .venv/bin/python bench/data_api.py --seconds 3 --warmup 1 --rounds 1      # a quick check
    .venv/bin/python bench/data_api.py --targets year --year first-page --postgres
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from datetime import time as clock
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
from servers import create_database, drop_database, postgres_cluster, uvicorn_server  # noqa: E402


def _bench_gateway():
    """bench/gateway.py as a module named ``bench_gateway`` (as ``gateway`` it would shadow the gateway package)."""
    spec = importlib.util.spec_from_file_location("bench_gateway", REPO / "bench" / "gateway.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_helpers = _bench_gateway()
Result = _helpers.Result
basic_auth = _helpers.basic_auth
event_loop_factory = _helpers.event_loop_factory
print_error_banner = _helpers.print_error_banner
probe = _helpers.probe
report = _helpers.report
run_rounds = _helpers.run_rounds
tree_cpu_seconds = _helpers.tree_cpu_seconds

USAGE_SCOPE = "cds_usage_1"
CUSTOMERS = {"year": "customer-1", "meters": "customer-2"}
PASSWORD = "sandbox"
PAGE = 100

CONFIG_TOML = f"""
[gateway]
access_token_seconds = 86400

[[test_customers]]
customer_id = "{CUSTOMERS['year']}"
name = "One meter, one year"
password = "{PASSWORD}"

[[test_customers]]
customer_id = "{CUSTOMERS['meters']}"
name = "Many meters, a few days"
password = "{PASSWORD}"
"""


@dataclass(frozen=True)
class Target:
    """A named request sequence: each connection cycles through ``urls`` (one request each)."""

    name: str
    urls: tuple[str, ...]
    headers: dict[str, str] = field(default_factory=dict)
    pid: int = 0  # the uvicorn process, for its CPU time


@dataclass
class Workload:
    """What set-up found for one workload: the gateway's request targets and their answers."""

    name: str
    targets: list[str]  # raw request targets (path?query), as httpx2 sends them
    bodies: list[str]  # the gateway's answers, in the same order
    segments: int  # usage segments over all pages
    meters: int  # distinct meters over all pages
    token: str
    description: str


# ------------------------------------------------------------------------------------------------------ measuring
async def hammer(target: Target, concurrency: int, warmup: float, seconds: float) -> Result:
    """bench/gateway.py's ``hammer``, except that connection ``i`` cycles through ``target.urls`` starting at url
    ``i``, and that a request counts (for rps, latency and CPU per request) when it *completes* inside the measured
    window, wherever it started: at a gateway latency of a second, counting only requests that also started inside
    a 10-second window would drop about one window-latency's worth of completions and understate rps (and overstate
    CPU per request) by some 10 %."""
    latencies: list[int] = []
    errors: Counter = Counter()
    other_errors: Counter = Counter()
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=60)
    async with httpx2.AsyncClient(limits=limits, timeout=60.0, trust_env=False) as client:
        start = time.perf_counter_ns()
        window_start = start + int(warmup * 1e9)
        window_end = window_start + int(seconds * 1e9)
        cpu: dict[str, float] = {}

        async def worker(number: int) -> None:
            urls = target.urls
            index = number % len(urls)
            while True:
                sent = time.perf_counter_ns()
                if sent >= window_end:
                    return
                try:
                    response = await client.get(urls[index], headers=target.headers)
                    problem = None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
                except httpx2.HTTPError as error:
                    problem = type(error).__name__
                done = time.perf_counter_ns()
                index = (index + 1) % len(urls)
                inside = window_start <= done <= window_end  # completed in the window (see the docstring)
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

        await asyncio.gather(cpu_meter(), *(worker(n) for n in range(concurrency)))
    return Result(target.name, seconds, latencies, errors, other_errors, cpu["client"], cpu["server"])


# -------------------------------------------------------------------------------------------------------- set-up
def run_cli(env: dict[str, str], *arguments: str) -> str:
    """``python -m greenbridge ARGS`` with ``env`` added; its standard error (the one-line reports), or exit."""
    done = subprocess.run([sys.executable, "-m", "greenbridge", *arguments], cwd=REPO, env={**os.environ, **env},
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"greenbridge {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stderr


def ingested_segments(report_line: str) -> int:
    match = re.search(r"usage_segments (\d+)/", report_line)
    if not match:
        raise SystemExit(f"cannot read the usage segment count from the ingest report: {report_line!r}")
    return int(match.group(1))


def raw_target(url: str) -> str:
    """The request target httpx2 sends for ``url`` (path and query, encoded as on the wire)."""
    return httpx2.URL(url).raw_path.decode("ascii")


def expect(response: httpx2.Response, status: int, what: str) -> httpx2.Response:
    if response.status_code != status:
        raise SystemExit(f"{what} answered {response.status_code} (expected {status}): {response.text[:800]}")
    return response


def consent_token(oauth: dict[str, Any], client: dict[str, Any], secret: str, customer: str) -> dict[str, Any]:
    """PAR → authorize page → consent form (approve, as ``customer``) → code → token, with PKCE S256."""
    auth = {"Authorization": basic_auth(client["client_id"], secret)}
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = client["cds_default_redirect_uri"]
    state = secrets.token_urlsafe(12)
    form = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect_uri,
            "scope": USAGE_SCOPE, "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
            "authorization_details": json.dumps([{"type": USAGE_SCOPE, "segment_start": "P3Y"}])}
    pushed = expect(probe("POST", oauth["pushed_authorization_request_endpoint"], data=form, headers=auth), 201,
                    "POST PAR")
    page = expect(probe("GET", oauth["authorization_endpoint"], params={
        "client_id": client["client_id"], "request_uri": pushed.json()["request_uri"]}), 200, "GET authorize")
    handle = re.search(r'name="consent" value="([^"]+)"', page.text)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text)
    if not handle or not action:
        raise SystemExit("the consent page has no consent form")
    confirmation = expect(probe("POST", action.group(1), data={
        "consent": handle.group(1), "decision": "approve", "customer_id": customer, "password": PASSWORD}),
        200, f"POST consent as {customer}")
    # The confirmation page shows the receipt's address; its Continue button makes the code (303 to the client).
    handle = re.search(r'name="continue" value="([^"]+)"', confirmation.text)
    action = re.search(r'<form method="post" action="([^"]+)" id="continue-form"', confirmation.text)
    if not handle or not action:
        raise SystemExit("the confirmation page has no Continue form")
    approved = expect(probe("POST", action.group(1), data={"continue": handle.group(1)}), 303,
                      "POST continue (confirmation page)")
    query = dict(parse_qsl(urlsplit(approved.headers["location"]).query))
    if query.get("state") != state or "code" not in query:
        raise SystemExit(f"the consent redirect carries no code for our state: {approved.headers['location']}")
    return expect(probe("POST", oauth["token_endpoint"], headers=auth, data={
        "grant_type": "authorization_code", "code": query["code"], "redirect_uri": redirect_uri,
        "code_verifier": verifier}), 200, "POST token (authorization_code)").json()


def tokens(gateway: str) -> tuple[str, dict[str, str]]:
    """The usage-segments API URL and an access token per customer, through the real flow over HTTP."""
    metadata = expect(probe("GET", gateway + "/.well-known/cds-server-metadata.json"), 200, "server metadata")
    oauth = expect(probe("GET", metadata.json()["oauth_metadata"]), 200, "OAuth metadata").json()
    registered = expect(probe("POST", oauth["registration_endpoint"], json={
        "scope": f"cds_client_admin {USAGE_SCOPE}", "client_name": "bench"}), 201, "POST register").json()
    admin = expect(probe("POST", oauth["token_endpoint"], data={
        "grant_type": "client_credentials", "scope": "cds_client_admin"},
        headers={"Authorization": basic_auth(registered["client_id"], registered["client_secret"])}),
        200, "POST token (client_credentials)").json()["access_token"]
    bearer = {"Authorization": f"Bearer {admin}"}
    clients = expect(probe("GET", oauth["cds_clients_api"], headers=bearer), 200, "GET clients").json()["clients"]
    client = next((c for c in clients if USAGE_SCOPE in c["scope"].split()), None)
    if client is None:
        raise SystemExit(f"no registered client has the scope {USAGE_SCOPE}: {clients}")
    credentials = expect(probe("GET", oauth["cds_credentials_api"], headers=bearer,
                               params={"client_ids": client["client_id"]}), 200, "GET credentials").json()
    secret = credentials["credentials"][0]["client_secret"]
    return oauth["cds_usagesegments_api"], {
        workload: consent_token(oauth, client, secret, customer)["access_token"]
        for workload, customer in CUSTOMERS.items()}


def fetch_page(url: str, token: str) -> tuple[httpx2.Response, dict[str, Any]]:
    response = expect(probe("GET", url, headers={"Authorization": f"Bearer {token}"}), 200, f"GET {url}")
    return response, response.json()


def meters_of(segments: list[dict[str, Any]]) -> set[str]:
    return {meter for segment in segments for meter in segment.get("related_meterdevices") or ()}


def year_workload(api: str, token: str, expected: int, mode: str) -> Workload:
    """Walk every page once (checking count, order of pages, unique ids, one meter); keep all or the first."""
    targets, bodies, segments = [], [], []
    url: str | None = api
    while url:
        response, body = fetch_page(url, token)
        targets.append(raw_target(url))
        bodies.append(response.text)
        segments += body["usage_segments"]
        if len(targets) > expected // PAGE + 2:
            raise SystemExit(f"paging {api} does not end after {len(targets)} pages")
        url = body.get("next")
    sizes = [len(json.loads(text)["usage_segments"]) for text in bodies]
    ids = [segment["cds_usagesegment_id"] for segment in segments]
    problems = []
    if len(segments) != expected:
        problems.append(f"{len(segments)} segments over all pages, {expected} ingested")
    if any(size != PAGE for size in sizes[:-1]) or not 0 < sizes[-1] <= PAGE:
        problems.append(f"page sizes {sizes}")
    if len(set(ids)) != len(ids):
        problems.append(f"{len(ids) - len(set(ids))} segment ids repeated across pages")
    if len(meters_of(segments)) != 1:
        problems.append(f"{len(meters_of(segments))} meters, expected 1")
    if problems:
        raise SystemExit("year listing check failed: " + "; ".join(problems))
    if mode == "first-page":
        return Workload("year", targets[:1], bodies[:1], sizes[0], 1, token,
                        f"the first page of the listing ({sizes[0]} of {len(segments)} segments), over and over")
    return Workload("year", targets, bodies, len(segments), 1, token,
                    f"paging through the whole listing: {len(targets)} pages ({'+'.join(map(str, sizes))} "
                    f"segments), each request one page")


def meters_workload(api: str, token: str, meters: int, instant: datetime) -> Workload:
    stamp = instant.strftime("%Y-%m-%dT%H:%M:%SZ")
    url = str(httpx2.URL(api, params={"after": stamp, "before": stamp}))
    response, body = fetch_page(url, token)
    segments = body["usage_segments"]
    expected = min(meters, PAGE)
    if len(segments) != expected or len(meters_of(segments)) != expected:
        raise SystemExit(f"meters listing check failed: {len(segments)} segments from {len(meters_of(segments))} "
                         f"meters, expected {expected} from {expected}")
    return Workload("meters", [raw_target(url)], [response.text], len(segments), len(meters_of(segments)), token,
                    f"one page: after=before={stamp}, {len(segments)} segments from {expected} meters")


# ----------------------------------------------------------------------------------------------------------- main
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--concurrency", type=int, default=16, help="concurrent connections (default 16)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per target (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per target (default 10)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of the whole cycle (default 3)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per server (default 1)")
    parser.add_argument("--targets", nargs="+", choices=("year", "meters"), default=["year", "meters"],
                        help="which workloads to measure (default both)")
    parser.add_argument("--year", choices=("walk", "first-page"), default="walk",
                        help="year workload: page through the whole listing (default) or request the first page")
    parser.add_argument("--year-days", type=int, default=365, help="days of data of the one meter (default 365)")
    parser.add_argument("--meters", type=int, default=100, help="meters of the second customer (default 100)")
    parser.add_argument("--meter-days", type=int, default=3, help="days of data per meter (default 3)")
    database = parser.add_mutually_exclusive_group()
    database.add_argument("--postgres", action="store_true", help="store in a throwaway PostgreSQL cluster")
    database.add_argument("--database-url", metavar="URL", help="a PostgreSQL server (postgresql+psycopg://…) on "
                          "which to create a new database for the run (dropped at the end); default: SQLite")
    parser.add_argument("--store-threads", type=int, help="the gateway's [gateway] store_threads (default: its "
                        "configuration's default)")
    parser.add_argument("--keep-logs", type=Path, help="a directory for both servers' logs (default: discarded)")
    args = parser.parse_args()
    if args.concurrency < 1 or args.rounds < 1 or args.workers < 1 or args.seconds <= 0 or args.warmup < 0:
        parser.error("--concurrency, --rounds and --workers must be ≥ 1, --seconds > 0 and --warmup ≥ 0")
    if args.year_days < 1 or args.meters < 1 or args.meter_days < 1:
        parser.error("--year-days, --meters and --meter-days must be ≥ 1")
    if args.year_days > 3 * 365 - 7:
        parser.error("--year-days must stay inside the grant's 3-year window (at most 1088)")
    return args


def main() -> int:
    args = parse_args()
    uvicorn_args = ["--workers", str(args.workers), "--no-access-log", "--log-level", "warning"]
    logs = {name: args.keep_logs / f"{name}.log" for name in ("gateway", "bare")} if args.keep_logs else {}
    today = datetime.now(UTC).date()

    with tempfile.TemporaryDirectory(prefix="greenbridge-bench-data-") as tmp, contextlib.ExitStack() as stack:
        work = Path(tmp)
        config = CONFIG_TOML
        if args.store_threads:
            config = config.replace("[gateway]\n", f"[gateway]\nstore_threads = {args.store_threads}\n", 1)
        (work / "greenbridge.toml").write_text(config)
        env = {"GREENBRIDGE_CONFIG": str(work / "greenbridge.toml"), "GREENBRIDGE_DATA_DIR": str(work / "var"),
               "GREENBRIDGE_SECRET_KEY": secrets.token_urlsafe(32), "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}"}
        backend = "SQLite"
        if args.postgres:
            print("starting PostgreSQL…", file=sys.stderr)
            env["GREENBRIDGE_DATABASE_URL"] = stack.enter_context(postgres_cluster(work))
            backend = "PostgreSQL (throwaway cluster)"
        elif args.database_url:
            env["GREENBRIDGE_DATABASE_URL"] = create_database(args.database_url)
            stack.callback(drop_database, env["GREENBRIDGE_DATABASE_URL"])
            backend = "PostgreSQL (new database on --database-url)"
        ingest_env = {**env, "GREENBRIDGE_ISSUER": "http://127.0.0.1"}

        print("generating and ingesting the feeds…", file=sys.stderr)
        year_start = today - timedelta(days=args.year_days + 1)  # ends yesterday
        meters_start = today - timedelta(days=args.meter_days + 7)
        run_cli(ingest_env, "generate", "--usage-points", "1", "--days", str(args.year_days), "--start",
                year_start.isoformat(), "-o", str(work / "year.xml"))
        run_cli(ingest_env, "generate", "--usage-points", str(args.meters), "--days", str(args.meter_days), "--start",
                meters_start.isoformat(), "-o", str(work / "meters.xml"), "--seed", "2")
        expected = {name: ingested_segments(run_cli(ingest_env, "ingest", str(work / f"{name}.xml"), "--customer",
                                                    CUSTOMERS[name]))
                    for name in ("year", "meters")}

        print("starting the gateway…", file=sys.stderr)
        gateway = stack.enter_context(uvicorn_server(
            "gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO, args=uvicorn_args,
            log_path=logs.get("gateway")))
        api, access = tokens(gateway)
        workloads: list[Workload] = []
        if "year" in args.targets:
            workloads.append(year_workload(api, access["year"], expected["year"], args.year))
        if "meters" in args.targets:
            noon = datetime.combine(meters_start + timedelta(days=args.meter_days // 2), clock(12), UTC)
            workloads.append(meters_workload(api, access["meters"], args.meters, noon))

        documents = {target: body for workload in workloads
                     for target, body in zip(workload.targets, workload.bodies, strict=True)}
        (work / "documents.json").write_text(json.dumps(documents))
        print("starting the bare app…", file=sys.stderr)
        bare = stack.enter_context(uvicorn_server(
            "bare_data_app:create_app", env={"BENCH_DATA_DOCUMENTS": str(work / "documents.json")},
            health_path="/healthz", app_dir=REPO / "bench", args=uvicorn_args, log_path=logs.get("bare")))

        pairs: list[tuple[Target, Target]] = []
        for workload in workloads:
            headers = {"Authorization": f"Bearer {workload.token}"}
            for target, body in zip(workload.targets, workload.bodies, strict=True):
                answer = expect(probe("GET", bare + target, headers=headers), 200, f"bare GET {target}")
                if answer.content != body.encode():
                    raise SystemExit(f"the bare app does not answer the gateway's bytes for {target}")
            pairs.append((Target(f"bare {workload.name}", tuple(bare + t for t in workload.targets), headers,
                                 pid=bare.pid),
                          Target(f"gateway {workload.name}", tuple(gateway + t for t in workload.targets), headers,
                                 pid=gateway.pid)))

        rounds = run_rounds(args, pairs, hammer)

    print()
    print(f"GET {urlsplit(api).path} over {backend}; feeds from greenbridge generate (15-minute electric):")
    for workload in workloads:
        sizes = [len(body.encode()) for body in workload.bodies]
        print(f"  {workload.name:7} {CUSTOMERS[workload.name]}: {workload.description}; "
              f"{sum(sizes) / len(sizes) / 1024:.0f} KiB a page on average")
    report(args, pairs, rounds)
    problems = [f"round {n}, {name}: {kind} × {count}{'' if measured else ' (warm-up or after the window)'}"
                for n, results in enumerate(rounds, 1) for name, result in results.items()
                for measured, counter in ((True, result.errors), (False, result.other_errors))
                for kind, count in counter.items()]
    if problems:
        print_error_banner(problems)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
