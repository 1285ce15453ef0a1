"""The load suite (issue 15 item 5; marker ``load``, run by ``bash tests/run.sh`` with everything else; ``-m "not
load"`` leaves it out): bounded, on 127.0.0.1 only, real servers.

* **HTTP**: 32 concurrent clients for 60 s against the gateway served by 2 uvicorn worker processes on PostgreSQL,
  half paging a grant's usage segments (CDS-WG3-01 §10.8), half asking the token endpoint for ``client_credentials``
  tokens (RFC 6749 §4.4); then the same 32 clients against bare Starlette endpoints (bench/bare_data_app.py
  answering the gateway's very bytes, bench/bare_app.py's ``POST /token``), also 2 worker processes. No request may
  fail; every data answer is byte-identical to the page read before the run, and the store holds exactly one token
  row per token answered (no more, no fewer). p50/p99 of both sides are printed in the session's summary (pytest's
  terminal summary, "load suite"): figures, not assertions, since speed belongs to bench/.
* **A 10,000-job backlog** in the jobs table and on Redis drains through a real ``greenbridge worker`` (2 pool
  processes) into PostgreSQL: every job ``done`` after exactly one run, none dead, none left. The jobs are small:
  9,900 ``revoke_upstream`` runs, each ending one upstream authorization that names no authorizationURI (one fenced
  write, no custodian contacted), and 100 ``ingest_file`` runs of one customer's day of hourly data each. The data
  must be exact: every one of those authorizations revoked, and each customer's stored readings the generator's
  count and exact decimal sum (espi.generate's own totals, independent of the translation).
* **bench/scale.py --quick**: the scale benchmark's full run stays out of CI; its quick mode keeps it working.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal

import httpx2
import pytest
from bridge_stack import segment_totals
from conftest import REPO
from gateway_helpers import Registration, consent_flow
from servers import create_database, drop_database, uvicorn_server
from sqlalchemy import func, insert, select

from bridge.config import load_config
from bridge.ingest import ingest_file
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.jobs import utcnow
from cds.store.migrate import upgrade
from cds.store.models import Client, Grant, Job, Token, UpstreamAuthorization, UsageSegmentRow
from espi.generate import FeedSpec, write_feed
from workers.app import make_celery

pytestmark = [pytest.mark.load, pytest.mark.slow]

CLIENTS = 32
SECONDS = 60.0
BARE_SECONDS = 10.0
WARMUP = 2.0
DAYS = 60
SEGMENTS = "/cds-api/v1/usage-segments"
TOKEN_FORM = {"grant_type": "client_credentials", "scope": "cds_client_admin"}
CONFIG_TOML = """
[gateway]
access_token_seconds = 86400

[[test_customers]]
customer_id = "customer-1"
name = "Loaded"
password = "sandbox"
"""


@dataclass
class Side:
    """What one side (gateway or bare) answered for one endpoint during the measured window."""

    latencies_ns: list[int] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)
    wrong: int = 0  # 200 answers with other bytes than expected
    answered: int = 0  # 200 answers over the whole run, warm-up and late ones included

    def percentile_ms(self, q: float) -> float:
        ordered = sorted(self.latencies_ns)
        if not ordered:
            return math.nan
        return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] / 1e6


async def _load(data_url: str, token_url: str, headers: dict[str, str], auth: tuple[str, str], expected: bytes,
                seconds: float) -> dict[str, Side]:
    """Half the clients GET ``data_url``, half POST the token form, each one request at a time, for ``WARMUP`` +
    ``seconds``; every answer is checked (warm-up included), latencies are kept for the measured window."""
    sides = {"data": Side(), "token": Side()}
    limits = httpx2.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS, keepalive_expiry=120)
    async with httpx2.AsyncClient(limits=limits, timeout=120.0, trust_env=False) as client:
        window_start = time.perf_counter_ns() + int(WARMUP * 1e9)
        window_end = window_start + int(seconds * 1e9)

        async def one_client(number: int) -> None:
            kind = "data" if number % 2 == 0 else "token"
            side = sides[kind]
            while (sent := time.perf_counter_ns()) < window_end:
                try:
                    if kind == "data":
                        answer = await client.get(data_url, headers=headers)
                    else:
                        answer = await client.post(token_url, data=TOKEN_FORM, auth=auth)
                except httpx2.HTTPError as error:
                    side.errors[type(error).__name__] += 1
                    continue
                done = time.perf_counter_ns()
                if answer.status_code != 200:
                    side.errors[f"HTTP {answer.status_code}"] += 1
                    continue
                side.answered += 1
                if kind == "data" and answer.content != expected:
                    side.wrong += 1
                if kind == "token" and b'"access_token"' not in answer.content:
                    side.wrong += 1
                if window_start <= done <= window_end:
                    side.latencies_ns.append(done - sent)

        await asyncio.gather(*(one_client(number) for number in range(CLIENTS)))
    return sides


def _run_load(*args) -> dict[str, Side]:
    return asyncio.run(_load(*args))


def _registration(http: httpx2.Client) -> Registration:
    """Dynamic registration over HTTP, every client's secret read back through the Credentials API."""
    registered = http.post("/oauth/register", json={"scope": "cds_client_admin cds_usage_1",
                                                    "client_name": "Load"}).json()
    registration = Registration(registered["client_id"], registered["client_secret"])
    admin = http.post("/oauth/token", data=TOKEN_FORM, auth=registration.admin_auth).json()["access_token"]
    headers = {"Authorization": f"Bearer {admin}"}
    for client in http.get("/cds-api/v1/clients", headers=headers).json()["clients"]:
        registration.clients[client["client_id"]] = client
        for credential in http.get("/cds-api/v1/credentials", headers=headers,
                                   params={"client_ids": client["client_id"]}).json()["credentials"]:
            registration.secrets[client["client_id"]] = credential["client_secret"]
    return registration


def _token_rows(database_url: str, client_id: str) -> int:
    engine = make_engine(database_url)
    try:
        with make_sessionmaker(engine)() as session:
            return session.scalar(select(func.count()).select_from(Token).where(Token.client_id == client_id))
    finally:
        engine.dispose()


def test_data_api_and_tokens_hold_32_clients_for_a_minute(tmp_path, postgres_url, load_report):
    database_url = create_database(postgres_url)
    config = tmp_path / "greenbridge.toml"
    config.write_text(CONFIG_TOML)
    env = {"GREENBRIDGE_CONFIG": str(config), "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"),
           "GREENBRIDGE_SECRET_KEY": "load-" + uuid.uuid4().hex, "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}",
           "GREENBRIDGE_DATABASE_URL": database_url}
    feed = tmp_path / "feed.xml"
    with feed.open("w") as out:
        write_feed(out, FeedSpec(usage_points=1, days=DAYS, start=date.today() - timedelta(days=DAYS + 2)))
    engine = make_engine(database_url)
    try:
        upgrade(engine)
        with make_sessionmaker(engine)() as session, session.begin():
            ingest_file(session, feed, customer_id="customer-1")
    finally:
        engine.dispose()
    workers = ["--workers", "2", "--no-access-log", "--log-level", "warning"]
    with contextlib.ExitStack() as stack:
        stack.callback(drop_database, database_url)
        gateway = stack.enter_context(uvicorn_server("gateway.app:create_app", env=env, health_path="/healthz",
                                                     app_dir=REPO, args=workers,
                                                     log_path=tmp_path / "gateway.log"))
        http = stack.enter_context(httpx2.Client(base_url=str(gateway), timeout=30, trust_env=False))
        registration = _registration(http)
        access = consent_flow(http, registration, authorization_details=[
            {"type": "cds_usage_1", "segment_start": f"{date.today() - timedelta(days=DAYS + 5)}T00:00:00Z"}])
        headers = {"Authorization": f"Bearer {access['access_token']}"}
        page = http.get(SEGMENTS, headers=headers)
        assert page.status_code == 200 and len(page.json()["usage_segments"]) >= DAYS, page.text
        tokens_before = _token_rows(database_url, registration.admin_id)

        measured = _run_load(gateway + SEGMENTS, gateway + "/oauth/token", headers, registration.admin_auth,
                             page.content, SECONDS)

        # the bare endpoints, served the same way, answer the same requests
        documents = tmp_path / "documents.json"
        documents.write_text(json.dumps({SEGMENTS: page.text}))
        bare_data = stack.enter_context(uvicorn_server(
            "bare_data_app:create_app", env={"BENCH_DATA_DOCUMENTS": str(documents)}, health_path="/healthz",
            app_dir=REPO / "bench", args=workers, log_path=tmp_path / "bare-data.log"))
        bare_token = stack.enter_context(uvicorn_server(
            "bare_app:create_app", health_path="/healthz", app_dir=REPO / "bench", args=workers,
            log_path=tmp_path / "bare-token.log"))
        assert httpx2.get(bare_data + SEGMENTS, headers=headers).content == page.content
        bare = _run_load(bare_data + SEGMENTS, bare_token + "/token", headers, registration.admin_auth,
                         page.content, BARE_SECONDS)
        tokens_after = _token_rows(database_url, registration.admin_id)

    lines = [f"HTTP: {CLIENTS} clients (half data, half token), gateway {SECONDS:g} s / bare {BARE_SECONDS:g} s, "
             f"2 uvicorn workers each, PostgreSQL; one usage-segments page of {len(page.content) / 1024:.0f} KiB",
             f"  {'endpoint':<40} {'requests':>9} {'rps':>7} {'p50 ms':>8} {'p99 ms':>8}"]
    for name, sides, seconds in (("gateway", measured, SECONDS), ("bare", bare, BARE_SECONDS)):
        for kind, label in (("data", "GET usage-segments"), ("token", "POST token (client_credentials)")):
            side = sides[kind]
            lines.append(f"  {name + ' ' + label:<40} {len(side.latencies_ns):>9} "
                         f"{len(side.latencies_ns) / seconds:>7.1f} {side.percentile_ms(0.5):>8.1f} "
                         f"{side.percentile_ms(0.99):>8.1f}")
    load_report(lines)
    for name, sides in (("gateway", measured), ("bare", bare)):
        for kind, side in sides.items():
            assert not side.errors and not side.wrong, f"{name} {kind}: {dict(side.errors)}, {side.wrong} wrong"
            assert side.latencies_ns, f"{name} {kind}: no request completed in the window"
    # every token answered is one stored row, and no row was stored for a token not answered
    assert tokens_after - tokens_before == measured["token"].answered


# ---------------------------------------------------------------------------------------------------- the backlog
BACKLOG = 10_000
INGESTS = 100
DRAIN_TIMEOUT = 600.0
CUSTODIAN_TOML = """
[[custodians]]
id = "load"
name = "Load Power"
resource_url = "http://127.0.0.1:9/espi/1_1/resource"
authorize_url = "http://127.0.0.1:9/oauth/authorize"
token_url = "http://127.0.0.1:9/oauth/token"
client_id = "load"
client_secret = "never-sent"
hosts = ["127.0.0.1"]
scopes = ["FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=daily;HistoryLength=13"]
"""


def test_a_10000_job_backlog_drains_with_exact_data(tmp_path, postgres_url, redis_url, load_report):
    database_url = create_database(postgres_url)
    config_path = tmp_path / "greenbridge.toml"
    config_path.write_text(CUSTODIAN_TOML)
    env = {"GREENBRIDGE_CONFIG": str(config_path), "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"),
           "GREENBRIDGE_SECRET_KEY": "load-" + uuid.uuid4().hex, "GREENBRIDGE_DATABASE_URL": database_url,
           "GREENBRIDGE_REDIS_URL": str(redis_url)}
    config = load_config(environ=env)
    engine = make_engine(database_url)
    sessions = make_sessionmaker(engine)
    now = utcnow()
    start = date.today() - timedelta(days=3)
    revokes = BACKLOG - INGESTS
    expected: dict[str, tuple[int, Decimal]] = {}
    rows: list[dict] = []
    try:
        upgrade(engine)
        with sessions() as session, session.begin():
            # the authorizations the revoke jobs end: one client, a grant each (set-up rows, bulk-inserted)
            session.add(Client(client_id="load-client", registration_id="load-client", client_id_issued_at=0,
                               created=now, modified=now, client_name="Load", status="active"))
            session.flush()
            session.execute(insert(Grant), [
                {"grant_id": f"g{n}", "client_id": "load-client", "registration_id": "load-client",
                 "customer_id": f"r{n}", "created": now, "modified": now, "status": "revoked"}
                for n in range(revokes)])
            session.execute(insert(UpstreamAuthorization), [
                {"id": n + 1, "grant_id": f"g{n}", "custodian_id": "load", "customer_id": f"r{n}", "scope": "",
                 "access_token_encrypted": "", "created": now, "modified": now} for n in range(revokes)])
        for n in range(INGESTS):
            feed = tmp_path / f"day-{n}.xml"
            with feed.open("w") as out:
                spec = FeedSpec(usage_points=1, days=1, interval=3600, costs=False, summaries=False, seed=n + 1,
                                subscription=str(n + 1), start=start)
                totals = write_feed(out, spec)
            count = sum(v[0] for (_, name), v in totals.series.items() if name == "electric_forward")
            raw = sum(v[1] for (_, name), v in totals.series.items() if name == "electric_forward")
            expected[f"c{n}"] = (count, Decimal(raw) / 1000)
            rows.append({"kind": "ingest_file", "queue": "translate",
                         "payload": {"path": str(feed), "customer_id": f"c{n}"}})
        rows += [{"kind": "revoke_upstream", "queue": "http",
                  "payload": {"custodian_id": "load", "upstream_id": n + 1}} for n in range(revokes)]
        rows = rows[INGESTS:INGESTS + revokes // 2] + rows[:INGESTS] + rows[INGESTS + revokes // 2:]  # mixed in
        for number, row in enumerate(rows):
            row.update(job_id=uuid.uuid4().hex, dedupe_key=f"load:{number}", state="queued", attempts=0,
                       max_attempts=8, created=now, modified=now, generation=1, rerun=False,
                       custodian_id=row["payload"].get("custodian_id"))
        # the backlog: rows and messages made in bulk (cds.store.jobs.enqueue does one savepoint per job), then
        # the worker starts on a full queue
        with sessions() as session, session.begin():
            session.execute(insert(Job), rows)
        app = make_celery(config)
        with app.producer_or_acquire() as producer:
            for row in rows:
                app.send_task("gb.run_job", args=(row["job_id"],), queue=row["queue"], producer=producer)

        started = time.monotonic()
        log = tmp_path / "worker.log"
        with open(log, "ab") as out:
            worker = subprocess.Popen([sys.executable, "-m", "greenbridge", "worker", "--concurrency", "2",
                                       "--queues", "http,translate", "--hostname", f"load{os.getpid()}@localhost",
                                       "--log-level", "warning"], cwd=REPO, env={**os.environ, **env},
                                      stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        try:
            while True:
                with sessions() as session:
                    states = dict(session.execute(select(Job.state, func.count()).group_by(Job.state)).all())
                if states.get("done", 0) + states.get("dead", 0) >= BACKLOG:
                    break
                assert worker.poll() is None, f"worker exited ({worker.returncode}):\n{log.read_text()[-3000:]}"
                assert time.monotonic() - started < DRAIN_TIMEOUT, f"not drained: {states}"
                time.sleep(1.0)
            drained = time.monotonic() - started
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()

        with sessions() as session:
            jobs = session.execute(select(Job.kind, Job.state, Job.attempts, Job.result, Job.last_error)).all()
            revoked = session.scalar(select(func.count()).select_from(UpstreamAuthorization)
                                     .where(UpstreamAuthorization.revoked.is_not(None)))
            bodies: dict[str, list] = {}
            for customer, body in session.execute(select(UsageSegmentRow.customer_id, UsageSegmentRow.body)):
                bodies.setdefault(customer, []).append(json.loads(body, parse_float=Decimal))
        load_report([f"backlog: {BACKLOG:,} jobs ({revokes:,} revoke_upstream, {INGESTS} ingest_file) drained by "
                     f"one worker with 2 pool processes on PostgreSQL in {drained:.0f} s "
                     f"({BACKLOG / drained:.0f} jobs/s, worker start included)"])
        assert len(jobs) == BACKLOG
        outcomes = Counter((kind, state, attempts) for kind, state, attempts, _, _ in jobs)
        assert outcomes == {("revoke_upstream", "done", 1): revokes, ("ingest_file", "done", 1): INGESTS}, (
            outcomes, [error for *_, error in jobs if error][:5])
        assert {result for kind, _, _, result, _ in jobs if kind == "revoke_upstream"} == {
            "no authorizationURI known; marked revoked"}
        assert revoked == revokes
        stored = {customer: segment_totals(segments) for customer, segments in bodies.items()}
        assert stored == expected
    finally:
        engine.dispose()
        drop_database(database_url)



# ------------------------------------------------------------------------------------------- the scale benchmark
def test_scale_benchmark_runs_in_its_quick_mode(tmp_path):
    """bench/scale.py's full run (1,000 customers × 90 days per backend, about 9 minutes) stays out of CI; its quick
    mode keeps it working: stores of 2, 4 and 8 customers, one gateway each answering the same pages, no error."""
    done = subprocess.run([sys.executable, "bench/scale.py", "--quick", "--backends", "sqlite"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": str(tmp_path)})
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    rows = [line for line in done.stdout.splitlines() if line.startswith("| sqlite |")]
    assert [row.split("|")[2].strip() for row in rows] == ["2", "4", "8"], done.stdout
