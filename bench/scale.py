"""Benchmark: the data API's cost as the store grows, at 10, 100 and 1,000 customers, on SQLite and PostgreSQL.

Issue 15 item 4: latency and CPU per request must stay flat in the number of customers (p50 ratio ≤ 1.2 from 10 to
1,000), which holds only if every query the request makes is narrowed by an index to the one grant's data (the
plans are checked by tests/test_query_plans.py; this measures it).

Set-up, per backend, in a temporary directory (SQLite file, or a throwaway PostgreSQL cluster from tests/servers.py):

* a gateway (real uvicorn) on the empty store registers a client over HTTP (dynamic registration, the Clients and
  Credentials APIs) and goes once through PAR → consent → code → token for a template customer, which gives the
  code-flow client and the grant's normalized authorization details (``cds_usage_1``, ``segment_start`` P3Y);
* then customers are added in this process, the fastest honest path (no HTTP consent per customer): for each, a
  server-side Grant of that client with ``cds.grants.create_grant`` and its own data set (``Grant.data_set`` = its
  id, as for a grant whose data an upstream authorization brings), a bearer Token row (hashed with the store's key,
  as the token endpoint stores it) and ``--days`` (90) of 15-minute data of one meter from ``espi.generate``
  (seed = the customer's number, so every customer's readings differ) stored by ``bridge.ingest.ingest_file`` into
  the grant's data set, as the workers store a fetched feed;
* when the store holds 10, 100 and 1,000 customers (``--levels``) it is copied (SQLite's backup API; PostgreSQL's
  ``CREATE DATABASE … TEMPLATE``) and, on PostgreSQL, ANALYZEd (what autovacuum does after a bulk load);
* one gateway per copy (uvicorn ``--workers 1``), so the sizes are measured side by side: interleaved rounds
  (10, 100, 1,000, 10, 100, 1,000 …) put the shared machine's noise on every size alike.

Every request is ``GET …/usage-segments`` (the first page, the whole listing of 92 segments) of one of the same
``--sample`` (10) grants at every size, customers 1–10: connection ``i`` cycles through them from grant ``i``. The
work per request is identical at every size (checked: the three gateways answer the same bytes, but for the host in
the page links), only the store around it grows. A load generator in this process (asyncio, ``--concurrency``
keep-alive connections, 4 by default to keep queueing out of the latencies on 2 cores) runs ``--warmup`` then
``--seconds`` per size and round; the table gives each figure's median over the rounds; server CPU per request is
the uvicorn process tree's (from /proc), PostgreSQL's own CPU not included.

    .venv/bin/python bench/scale.py                          # both backends, 10/100/1,000 × 90 days: ≈ 10 min
    .venv/bin/python bench/scale.py --backends sqlite --quick      # 2/4/8 customers × 3 days, 1 s rounds: a check
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import importlib.util
import json
import math
import os
import re
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO))
from servers import create_database, drop_database, postgres_cluster, uvicorn_server  # noqa: E402


def _bench_module(name: str, file: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_helpers = _bench_module("bench_gateway", "gateway.py")  # as ``gateway`` it would shadow the gateway package
probe, basic_auth = _helpers.probe, _helpers.basic_auth
tree_cpu_seconds, event_loop_factory = _helpers.tree_cpu_seconds, _helpers.event_loop_factory
PASSWORD = "sandbox"

USAGE_SCOPE = "cds_usage_1"
TEMPLATE_CUSTOMER = "template"
CONFIG_TOML = f"""
[gateway]
access_token_seconds = 86400

[[test_customers]]
customer_id = "{TEMPLATE_CUSTOMER}"
name = "Template"
password = "{PASSWORD}"
"""


def expect(response: httpx2.Response, status: int, what: str) -> httpx2.Response:
    if response.status_code != status:
        raise SystemExit(f"{what} answered {response.status_code} (expected {status}): {response.text[:800]}")
    return response


@dataclass
class Result:
    level: int
    seconds: float
    latencies_ns: list[int]
    errors: Counter
    server_cpu: float

    def percentile_ms(self, q: float) -> float:
        if not self.latencies_ns:
            return math.nan
        ordered = sorted(self.latencies_ns)
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] / 1e6

    @property
    def rps(self) -> float:
        return len(self.latencies_ns) / self.seconds

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.server_cpu / len(self.latencies_ns) if self.latencies_ns else math.nan


# -------------------------------------------------------------------------------------------------------- loading
class Store:
    """The growing store of one backend, and its copies at each level."""

    def __init__(self, work: Path, backend: str, server_url: str | None) -> None:
        self.work, self.backend, self.server_url = work, backend, server_url
        self.url = (f"sqlite+pysqlite:///{work}/store.db" if backend == "sqlite"
                    else create_database(server_url, "gb_scale"))
        self.copies: dict[int, str] = {}

    def snapshot(self, level: int) -> str:
        if self.backend == "sqlite":
            path = self.work / f"store-{level}.db"
            with contextlib.closing(sqlite3.connect(self.work / "store.db")) as source, \
                    contextlib.closing(sqlite3.connect(path)) as target:
                source.backup(target)
            os.chmod(path, 0o600)
            url = f"sqlite+pysqlite:///{path}"
        else:
            import psycopg
            from servers import _pg_admin, _pg_conninfo

            name = f"gb_scale_{level}"
            _pg_admin(self.server_url, f'CREATE DATABASE "{name}" TEMPLATE "gb_scale"')
            url = self.url.replace("/gb_scale", f"/{name}")
            with psycopg.connect(_pg_conninfo(url, name), autocommit=True) as connection:
                connection.execute("ANALYZE")
        self.copies[level] = url
        return url

    def drop(self) -> None:
        if self.backend == "postgresql":
            for url in [*self.copies.values(), self.url]:
                drop_database(url)


def consent(oauth: dict[str, Any], client: dict[str, Any], secret: str) -> None:
    """PAR → authorize page → consent form (approve, as the template customer) → receipt page's Continue → code →
    token, with PKCE S256."""
    auth = {"Authorization": basic_auth(client["client_id"], secret)}
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    redirect_uri = client["cds_default_redirect_uri"]
    form = {"response_type": "code", "client_id": client["client_id"], "redirect_uri": redirect_uri,
            "scope": USAGE_SCOPE, "state": "scale", "code_challenge": challenge, "code_challenge_method": "S256",
            "authorization_details": json.dumps([{"type": USAGE_SCOPE, "segment_start": "P3Y"}])}
    pushed = expect(probe("POST", oauth["pushed_authorization_request_endpoint"], data=form, headers=auth), 201,
                    "POST PAR")
    page = expect(probe("GET", oauth["authorization_endpoint"], params={
        "client_id": client["client_id"], "request_uri": pushed.json()["request_uri"]}), 200, "GET authorize")
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
    approved = expect(probe("POST", action, data={"consent": handle, "decision": "approve",
                                                  "customer_id": TEMPLATE_CUSTOMER,
                                                  "password": PASSWORD}), 200, "POST consent")
    handle = re.search(r'name="continue" value="([^"]+)"', approved.text).group(1)
    action = re.search(r'<form method="post" action="([^"]+)" id="continue-form"', approved.text).group(1)
    answer = expect(probe("POST", action, data={"continue": handle}), 303, "POST continue")
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    expect(probe("POST", oauth["token_endpoint"], headers=auth, data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri, "code_verifier": verifier}),
        200, "POST token (authorization_code)")


def template_grant(env: dict[str, str], log: Path | None) -> tuple[str, list[Any], list[Any]]:
    """Over HTTP on the empty store: registration, then one consent for the template customer. Returns the
    code-flow client's id, the grant's authorization details and the token's (as the token endpoint stored them)."""
    with uvicorn_server("gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO,
                        args=["--no-access-log", "--log-level", "warning"], log_path=log) as gateway:
        metadata = expect(probe("GET", gateway + "/.well-known/cds-server-metadata.json"), 200, "metadata").json()
        oauth = expect(probe("GET", metadata["oauth_metadata"]), 200, "OAuth metadata").json()
        registered = expect(probe("POST", oauth["registration_endpoint"], json={
            "scope": f"cds_client_admin {USAGE_SCOPE}", "client_name": "scale"}), 201, "POST register").json()
        admin = expect(probe("POST", oauth["token_endpoint"], data={
            "grant_type": "client_credentials", "scope": "cds_client_admin"},
            headers={"Authorization": basic_auth(registered["client_id"], registered["client_secret"])}),
            200, "POST token").json()["access_token"]
        bearer = {"Authorization": f"Bearer {admin}"}
        clients = expect(probe("GET", oauth["cds_clients_api"], headers=bearer), 200, "GET clients").json()
        client = next(c for c in clients["clients"] if USAGE_SCOPE in c["scope"].split())
        credentials = expect(probe("GET", oauth["cds_credentials_api"], headers=bearer,
                                   params={"client_ids": client["client_id"]}), 200, "GET credentials").json()
        consent(oauth, client, credentials["credentials"][0]["client_secret"])
    from sqlalchemy import select

    from cds.store.engine import make_engine, make_sessionmaker
    from cds.store.models import Grant, Token

    engine = make_engine(env["GREENBRIDGE_DATABASE_URL"])
    try:
        with make_sessionmaker(engine)() as session:
            grant = session.scalars(select(Grant).where(Grant.customer_id == TEMPLATE_CUSTOMER)).one()
            token = session.scalars(select(Token).where(Token.grant_id == grant.grant_id)).one()
            return client["client_id"], grant.authorization_details, token.authorization_details
    finally:
        engine.dispose()


class Loader:
    """Adds customers (grant, token, a generated feed ingested into the grant's data set) to the store."""

    def __init__(self, env: dict[str, str], client_id: str, grant_details: list[Any], token_details: list[Any],
                 days: int, feeds: Path) -> None:
        from bridge.config import load_config
        from bridge.ingest import translate_options_for
        from gateway.context import build_gateway

        self.config = load_config(environ=env)
        self.gateway = build_gateway(self.config)
        self.options = translate_options_for(self.config)
        self.client_id, self.grant_details, self.token_details = client_id, grant_details, token_details
        self.days, self.feeds = days, feeds
        self.tokens: dict[int, str] = {}
        self.readings = 0
        self.segments = 0

    def add(self, number: int) -> None:
        from bridge.ingest import ingest_file
        from cds.grants import create_grant
        from cds.store.models import Client, Token
        from espi.generate import FeedSpec, write_feed

        box, customer = self.gateway.box, f"customer-{number}"
        feed = self.feeds / "feed.xml"
        with feed.open("w") as out:
            write_feed(out, FeedSpec(usage_points=1, days=self.days, seed=number,
                                     start=date.today() - timedelta(days=self.days + 2)))
        with self.gateway.sessions() as session, session.begin():
            client = session.get(Client, self.client_id)
            grant = create_grant(session, client, scope=USAGE_SCOPE, authorization_details=self.grant_details,
                                 box=box, customer_id=customer)
            grant.data_set = grant.grant_id  # its own data set, as a grant whose upstream authorization brings it
            access_token = box.new_secret(48)
            session.add(Token(access_token_hash=box.hash(access_token), client_id=client.client_id,
                              grant_id=grant.grant_id, customer_id=customer, scope=USAGE_SCOPE,
                              authorization_details=self.token_details, issued_at=int(time.time()),
                              expires_in=30 * 86400, family_id=secrets.token_hex(16)))
            report = ingest_file(session, feed, customer_id=customer, options=self.options, data_set=grant.data_set,
                                 source=f"scale-{number}.xml")
        self.tokens[number] = access_token
        self.readings += report.readings or 0
        self.segments += report.total("usage_segments")

    def close(self) -> None:
        self.gateway.engine.dispose()


# ------------------------------------------------------------------------------------------------------ measuring
async def hammer(level: int, base: str, pid: int, requests: list[tuple[str, dict[str, str]]], concurrency: int,
                 warmup: float, seconds: float) -> Result:
    latencies: list[int] = []
    errors: Counter = Counter()
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=60)
    async with httpx2.AsyncClient(limits=limits, timeout=60.0, trust_env=False) as client:
        window_start = time.perf_counter_ns() + int(warmup * 1e9)
        window_end = window_start + int(seconds * 1e9)
        cpu: dict[str, float] = {}

        async def worker(number: int) -> None:
            index = number % len(requests)
            while (sent := time.perf_counter_ns()) < window_end:
                path, headers = requests[index]
                index = (index + 1) % len(requests)
                try:
                    response = await client.get(base + path, headers=headers)
                    problem = None if response.status_code == 200 else f"HTTP {response.status_code}"
                except httpx2.HTTPError as error:
                    problem = type(error).__name__
                done = time.perf_counter_ns()
                if problem is not None:
                    errors[problem] += 1  # warm-up included: any error fails the run
                elif window_start <= done <= window_end:
                    latencies.append(done - sent)

        async def cpu_meter() -> None:
            await asyncio.sleep((window_start - time.perf_counter_ns()) / 1e9)
            cpu["server"] = tree_cpu_seconds(pid)
            await asyncio.sleep((window_end - time.perf_counter_ns()) / 1e9)
            cpu["server"] = tree_cpu_seconds(pid) - cpu["server"]

        await asyncio.gather(cpu_meter(), *(worker(n) for n in range(concurrency)))
    return Result(level, seconds, latencies, errors, cpu["server"])


def run_backend(args: argparse.Namespace, backend: str, work: Path) -> tuple[dict[int, list[Result]], dict[str, Any]]:
    levels = sorted(args.levels)
    facts: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        server_url = None
        if backend == "postgresql":
            print("starting PostgreSQL…", file=sys.stderr)
            server_url = stack.enter_context(postgres_cluster(work))
        store = Store(work, backend, server_url)
        stack.callback(store.drop)
        (work / "greenbridge.toml").write_text(CONFIG_TOML)
        env = {"GREENBRIDGE_CONFIG": str(work / "greenbridge.toml"), "GREENBRIDGE_DATA_DIR": str(work / "var"),
               "GREENBRIDGE_SECRET_KEY": secrets.token_urlsafe(32), "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}",
               "GREENBRIDGE_DATABASE_URL": store.url}
        client_id, grant_details, token_details = template_grant(env, None)
        loader = Loader({**os.environ, **env, "GREENBRIDGE_ISSUER": "http://127.0.0.1"}, client_id, grant_details,
                        token_details, args.days, work)
        started = time.perf_counter()
        try:
            for number in range(1, levels[-1] + 1):
                loader.add(number)
                if number in levels:
                    loader.gateway.engine.dispose()
                    store.snapshot(number)
                    print(f"  {backend}: {number} customers stored ({time.perf_counter() - started:.0f} s)",
                          file=sys.stderr)
        finally:
            loader.close()
        facts["load_seconds"] = time.perf_counter() - started
        facts["segments"] = loader.segments
        sample = list(range(1, min(args.sample, levels[0]) + 1))
        facts["sample"] = len(sample)

        gateways = {}
        for level in levels:
            gateways[level] = stack.enter_context(uvicorn_server(
                "gateway.app:create_app", env={**env, "GREENBRIDGE_DATABASE_URL": store.copies[level]},
                health_path="/healthz", app_dir=REPO, args=["--workers", "1", "--no-access-log", "--log-level",
                                                            "warning"]))
        api = "/cds-api/v1/usage-segments"
        requests = [(api, {"Authorization": f"Bearer {loader.tokens[n]}"}) for n in sample]
        answers = {}
        for level, base in gateways.items():
            bodies = []
            for path, headers in requests:
                body = expect(probe("GET", base + path, headers=headers), 200, f"{level}: GET {path}").text
                bodies.append(body.replace(base, "BASE"))
            answers[level] = bodies
        first = json.loads(answers[levels[0]][0])
        facts["page_segments"] = len(first["usage_segments"])
        facts["page_kib"] = statistics.mean(len(b.encode()) for b in answers[levels[0]]) / 1024
        if not first["usage_segments"] or any(answers[level] != answers[levels[0]] for level in levels):
            raise SystemExit(f"{backend}: the gateways do not answer the same pages for the same grants")

        results: dict[int, list[Result]] = {level: [] for level in levels}
        runner = stack.enter_context(asyncio.Runner(loop_factory=event_loop_factory()))
        for round_number in range(1, args.rounds + 1):
            for level in levels:
                result = runner.run(hammer(level, gateways[level], gateways[level].pid, requests, args.concurrency,
                                           args.warmup, args.seconds))
                results[level].append(result)
                print(f"  {backend} round {round_number}, {level:>5} customers: {result.rps:6.1f} rps, "
                      f"p50 {result.percentile_ms(0.5):6.1f} ms, p99 {result.percentile_ms(0.99):6.1f} ms, "
                      f"{result.cpu_ms:5.2f} CPU ms/request" + (f", ERRORS {dict(result.errors)}"
                                                               if result.errors else ""), file=sys.stderr)
    return results, facts


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=("sqlite", "postgresql"), default=["sqlite", "postgresql"])
    parser.add_argument("--levels", nargs="+", type=int, default=[10, 100, 1000], help="customers (default 10 100 "
                        "1000)")
    parser.add_argument("--days", type=int, default=90, help="days of 15-minute data per customer (default 90)")
    parser.add_argument("--sample", type=int, default=10, help="grants requested at every size (default 10)")
    parser.add_argument("--concurrency", type=int, default=4, help="concurrent connections (default 4)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per size and round (default 2)")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per size and round (10)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--quick", action="store_true", help="2/4/8 customers × 3 days, 1 round of 0.5 + 1 s")
    args = parser.parse_args()
    if args.quick:
        args.levels, args.days, args.sample, args.rounds, args.warmup, args.seconds = [2, 4, 8], 3, 2, 1, 0.5, 1.0
    if min(args.levels) < 1 or args.days < 1 or args.sample < 1 or args.concurrency < 1 or args.rounds < 1:
        parser.error("--levels, --days, --sample, --concurrency and --rounds must be ≥ 1")
    return args


def main() -> int:
    args = parse_args()
    tables = {}
    failed = False
    for backend in args.backends:
        with tempfile.TemporaryDirectory(prefix=f"greenbridge-bench-scale-{backend}-") as tmp:
            results, facts = run_backend(args, backend, Path(tmp))
        tables[backend] = (results, facts)
        failed |= any(result.errors for runs in results.values() for result in runs)

    levels = sorted(args.levels)
    print()
    print(f"GET /cds-api/v1/usage-segments (first page) of the same {tables[args.backends[0]][1]['sample']} grants at "
          f"every size; one meter × {args.days} days of 15-minute data per customer; {args.concurrency} connections, "
          f"{args.rounds} round(s) of {args.seconds:g} s per size; medians over the rounds "
          f"({os.cpu_count()} CPUs, {datetime.now(UTC):%Y-%m-%d})")
    print()
    print("| backend | customers | usage segments stored | rps | p50 ms | p99 ms | server CPU ms/request | p50 ratio "
          "| p99 ratio | CPU ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    notes = []
    for backend, (results, facts) in tables.items():
        def median(level: int, value, results=results) -> float:
            return statistics.median(value(result) for result in results[level])

        def p50(r: Result) -> float:
            return r.percentile_ms(0.5)

        def p99(r: Result) -> float:
            return r.percentile_ms(0.99)

        def cpu(r: Result) -> float:
            return r.cpu_ms

        base = {figure: median(levels[0], figure) for figure in (p50, p99, cpu)}
        per_customer = facts["segments"] / levels[-1]
        for level in levels:
            at = {figure: median(level, figure) for figure in (p50, p99, cpu)}
            print(f"| {backend} | {level:,} | {round(per_customer * level):,} | {median(level, lambda r: r.rps):.0f} | "
                  f"{at[p50]:.1f} | {at[p99]:.1f} | {at[cpu]:.2f} | {at[p50] / base[p50]:.2f}× | "
                  f"{at[p99] / base[p99]:.2f}× | {at[cpu] / base[cpu]:.2f}× |")
        notes.append(f"{backend}: {facts['page_segments']} segments a page ({facts['page_kib']:.0f} KiB); storing "
                     f"{levels[-1]:,} customers took {facts['load_seconds']:.0f} s")
    print()
    print("\n".join(notes))
    if failed:
        print("\n!!! ERRORS: some requests failed (see the rounds above); the figures are not valid !!!")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
