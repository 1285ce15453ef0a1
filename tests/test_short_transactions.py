"""Short write transactions (issue 13 item 8): no store transaction is open while a custodian answers, ingest
commits in bounded idempotent batches, a run taken over stores nothing more, and the gateway's writes go through
while a large ingest runs.

The custodian is the real sandbox under uvicorn behind a loopback relay that holds chosen requests until the test
has looked at the store (no timing: the relay waits for the test); the jobs run in the workers' own runtime
(workers.tasks.execute), in this process or in a real ``greenbridge worker``.
"""

from __future__ import annotations

import contextlib
import os
import queue
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx2
import pytest
from conftest import REPO
from gateway_helpers import consent_flow, gateway_client, make_config, register
from servers import redis_server, uvicorn_server
from sqlalchemy import delete, func, select, update
from sqlalchemy.engine import make_url
from test_custodian_client import CLIENT_ID, CLIENT_SECRET, connect, sandbox_env

from bridge import upstream
from bridge.ingest import ingest_file
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import DataObject, Grant, Job, UpstreamAuthorization, UsageSegmentRow
from espi.generate import FeedSpec, write_feed
from workers import jobs
from workers.kinds import RUN, Superseded, writing
from workers.kinds import register as register_kind
from workers.tasks import execute

T1 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
T2 = T1 + timedelta(days=1)


# ------------------------------------------------------------------------------------ a custodian the test holds


class HoldingRelay:
    """A loopback HTTP relay in front of ``target`` that holds each request ``hold(method, path)`` picks until the
    test releases it: a custodian as slow as the test needs, without sleeping. ``held`` yields (method, path,
    release event) as requests arrive held; ``seen`` lists every (method, path) relayed."""

    def __init__(self) -> None:
        self.target = ""
        self.hold = lambda method, path: False
        self.held: queue.Queue[tuple[str, str, threading.Event]] = queue.Queue()
        self.seen: list[tuple[str, str]] = []
        relay = self

        class Handler(BaseHTTPRequestHandler):
            def _relay(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                relay.seen.append((self.command, self.path))
                if relay.hold(self.command, self.path):
                    release = threading.Event()
                    relay.held.put((self.command, self.path, release))
                    release.wait(120)
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "connection", "content-length", "accept-encoding")}
                answer = httpx2.request(self.command, relay.target + self.path, headers=headers, content=body,
                                        timeout=60, follow_redirects=False, trust_env=False)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length", "content-encoding"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(answer.content)))
                self.end_headers()
                self.wfile.write(answer.content)

            do_GET = do_POST = do_PUT = do_DELETE = _relay

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HoldingRelay:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.hold = lambda method, path: False
        while not self.held.empty():
            self.held.get_nowait()[2].set()
        self.server.shutdown()
        self.server.server_close()

    def next_held(self) -> tuple[str, str, threading.Event]:
        return self.held.get(timeout=60)


def _custodian_toml(base: str) -> str:
    return f"""
[[custodians]]
id = "sandbox"
name = "Sandbox Power & Light"
resource_url = "{base}/espi/1_1/resource"
authorize_url = "{base}/oauth/authorize"
token_url = "{base}/oauth/token"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
hosts = ["127.0.0.1"]
"""


@contextlib.contextmanager
def _held_custodian(tmp_path, database_url):
    """The sandbox (uvicorn) whose every URL names the relay, the relay, and the gateway in this process."""
    with HoldingRelay() as relay, uvicorn_server(
            "sandbox.app:create_sandbox_app", env=sandbox_env(GREENBRIDGE_SANDBOX_BASE_URL=relay.url), app_dir=REPO,
            health_path="/healthz") as sandbox:
        relay.target = str(sandbox)
        local = make_config(tmp_path, database_url)
        # a long lease: no heartbeat transaction happens while the test looks at the store
        config = make_config(tmp_path, database_url, extra_toml=_custodian_toml(relay.url), job_lease_seconds=600)
        with gateway_client(local) as local_client, gateway_client(config) as client:
            yield relay, config, local_client, client.app.state.gateway


def _store_is_free(database_url: str, row_id: int, grant_id: str, job_id: str) -> None:
    """Nobody holds a write lock or an open transaction: a writer gets the SQLite write lock without waiting, and on
    PostgreSQL no session is idle in a transaction and the rows the run works on can be locked without waiting."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        connection = sqlite3.connect(url.database, timeout=0, isolation_level=None)
        try:
            connection.execute("BEGIN IMMEDIATE")  # "database is locked" at once if a writer holds it
            connection.execute("ROLLBACK")
        finally:
            connection.close()
        return
    import psycopg

    with psycopg.connect(url.set(drivername="postgresql").render_as_string(hide_password=False)) as connection:
        idle = connection.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                  "AND state LIKE 'idle in transaction%'").fetchone()[0]
        assert idle == 0, "a session is idle in a transaction while the custodian answers"
        for table, key, value in (("upstream_authorizations", "id", row_id), ("grants", "grant_id", grant_id),
                                  ("jobs", "job_id", job_id)):
            connection.execute(f"SELECT 1 FROM {table} WHERE {key} = %s FOR UPDATE NOWAIT", (value,))
        connection.rollback()


def test_no_store_transaction_is_open_while_the_custodian_answers(tmp_path, database_url):
    """A first fetch whose token is due: while the custodian holds the token refresh, and then the GET of the
    subscription, the store is free (SQLite: a writer gets the lock at once; PostgreSQL: no session idle in a
    transaction, the authorization, Grant and job rows lockable at once). A second refresh of the same
    authorization meanwhile waits for the first instead of spending the rotated refresh token: one token request
    reaches the custodian and both get the same new token. Before, the refresh held the authorization's row
    locked (the SQLite write lock) across the custodian's answer, and the run's transaction stayed open across
    the GET."""
    from workers import upstream as upstream_jobs

    with _held_custodian(tmp_path, database_url) as (relay, config, local, gw):
        _client, tokens = connect(relay.url, tmp_path)
        (grant_id,) = consent_flow(local, register(local))["cds_grant_ids"]
        with gw.sessions() as session, session.begin():
            grant = session.get(Grant, grant_id)
            grant.status, grant.enabled_scope, grant.enabled_authorization_details = "pending", "", []
            row = upstream.bind(session, gw.box, grant_id=grant_id, custodian_id="sandbox",
                                customer_id=grant.customer_id, scope=tokens.scope, tokens=tokens)
            row.expires_at = datetime.now(UTC) - timedelta(minutes=1)  # due: the fetch refreshes first
            row_id = row.id
            job = jobs.enqueue(session, "fetch_subscription", {"custodian_id": "sandbox", "upstream_id": row_id,
                                                               "uri": tokens.resource_uri}, "first", queue="http")
            job_id = job.job_id

        relay.hold = lambda method, path: (method == "POST" and path.startswith("/oauth/token")) or \
            (method == "GET" and "/Batch/Subscription/" in path)
        before = len(relay.seen)
        outcome: list = []
        run = threading.Thread(target=lambda: outcome.append(execute(config, job_id)))
        run.start()
        method, path, release_refresh = relay.next_held()
        assert (method, path) == ("POST", "/oauth/token")
        _store_is_free(database_url, row_id, grant_id, job_id)

        ctx = upstream_jobs.context(config)
        custodian = ctx.custodian("sandbox")
        second: list = []
        other = threading.Thread(target=lambda: second.append(
            upstream_jobs.refresh(ctx, ctx.client(custodian), row_id, tokens.access_token)))
        other.start()
        other.join(1.0)
        assert other.is_alive()  # waiting for the first refresh's claim, not asking the custodian
        assert relay.held.empty()
        release_refresh.set()

        method, path, release_get = relay.next_held()
        assert method == "GET" and "/Batch/Subscription/" in path
        _store_is_free(database_url, row_id, grant_id, job_id)
        release_get.set()
        run.join(120)
        other.join(60)
        assert outcome == [jobs.Outcome(jobs.DONE)]
        with gw.sessions() as session:
            stored = session.get(UpstreamAuthorization, row_id)
            new_token = upstream.tokens_of(gw.box, stored).access_token
            assert stored.refresh_claim is None and stored.refresh_claimed_until is None
            assert session.get(Grant, grant_id).status == "active"
            assert session.scalar(select(func.count()).select_from(UsageSegmentRow)) > 0
        assert second == [new_token] and new_token != tokens.access_token
        refreshes = [seen for seen in relay.seen[before:] if seen[1].startswith("/oauth/token")]
        assert refreshes == [("POST", "/oauth/token")]  # the second run used the first one's tokens


# ------------------------------------------------------------------------------------ batches and fencing


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _feed(tmp_path: Path, name: str = "feed.xml", **spec) -> Path:
    path = tmp_path / name
    with open(path, "w", encoding="utf-8") as out:
        write_feed(out, FeedSpec(**{"usage_points": 2, "days": 20, "interval": 3600, **spec}))
    return path


class _Killed(Exception):
    pass


def _rows(sessions, data_set: str) -> dict[tuple[str, str], tuple]:
    """Every stored row of a data set: (kind, id) → (body hash, columns, created, modified, synced)."""
    with sessions() as session:
        objects = {(row.kind, row.object_id): (row.body_hash, row.account_number, row.contract_number,
                                               row.sort_date, row.source, row.created, row.modified, row.synced)
                   for row in session.scalars(select(DataObject).where(DataObject.data_set == data_set))}
        segments = {("usage_segments", row.segment_id): (row.body_hash, row.segment_start, row.segment_end,
                                                         row.source, row.created, row.modified, row.synced)
                    for row in session.scalars(select(UsageSegmentRow).where(UsageSegmentRow.data_set == data_set))}
    return objects | segments


def test_a_partly_stored_ingest_converges_when_run_again(sessions, tmp_path):
    """An ingest killed after some batches committed, then run again, stores exactly what one whole ingest
    stores (same ids, bodies and columns, nothing twice); what the killed run stored keeps its cds_created and
    cds_modified (only cds_synced moves), the rest is new at the second run's time."""
    path = _feed(tmp_path)
    with sessions() as session, session.begin():  # the reference: one whole ingest in one transaction
        whole = ingest_file(session, path, customer_id="c", data_set="set", now=T1 - timedelta(days=1))
    reference = _rows(sessions, "set")
    with sessions() as session, session.begin():
        session.execute(delete(DataObject))
        session.execute(delete(UsageSegmentRow))

    committed = []
    with sessions(autobegin=False) as session:
        @contextlib.contextmanager
        def batch():
            if len(committed) == 9:
                raise _Killed  # the worker dies before its tenth batch
            with session.begin():
                yield
            committed.append(1)

        with pytest.raises(_Killed):
            ingest_file(session, path, customer_id="c", data_set="set", now=T1, batch_transaction=batch, batch_size=7)
    partial = _rows(sessions, "set")
    partial_segments = sum(key[0] == "usage_segments" for key in partial)
    assert 0 < partial_segments < whole.created["usage_segments"]  # killed amid the segments
    assert partial_segments % 7 == 0  # whole batches, nothing of the tenth

    with sessions(autobegin=False) as session:
        again = ingest_file(session, path, customer_id="c", data_set="set", now=T2,
                            batch_transaction=session.begin, batch_size=7)
    total = sum(whole.created.values())
    assert sum(again.created.values()) == total - len(partial) and sum(again.confirmed.values()) == len(partial)
    assert not any(again.modified.values())
    stored = _rows(sessions, "set")
    assert stored.keys() == reference.keys() and len(stored) == total
    for key, row in stored.items():
        assert row[:-3] == reference[key][:-3]  # body, columns and source as one whole ingest stores them
        if key in partial:
            assert row[-3:] == (T1, T1, T2)  # stored by the killed run: confirmed now
        else:
            assert row[-3:] == (T2, T2, T2)


def _claimed(sessions, key: str, lease: float = 60) -> Job:
    with sessions() as session, session.begin():
        job_id = jobs.enqueue(session, "ingest_file", {}, key).job_id
        return jobs.claim(session, job_id, lease_seconds=lease)


def _take_over(sessions, job: Job) -> Job:
    """The run's lease ran out (its worker hung) and another run claims the job."""
    with sessions() as session, session.begin():
        session.execute(update(Job).where(Job.job_id == job.job_id)
                        .values(lease_until=datetime.now(UTC) - timedelta(seconds=1)))
        return jobs.claim(session, job.job_id)


def _object(object_id: str) -> DataObject:
    return DataObject(kind="accounts", object_id=object_id, customer_id="c", data_set="", body="{}", body_hash="h",
                      source="test", created=T1, modified=T1, synced=T1)


def test_a_run_taken_over_stores_nothing_more(sessions):
    """Each write of a run commits only while the run holds its job: once another run has taken the job over,
    the old run's next write rolls back (Superseded) and the new run's writes commit."""
    first = _claimed(sessions, "fenced")
    with sessions(autobegin=False) as session:
        session.info[RUN] = (first.job_id, first.attempts, 60)
        with writing(session):
            session.add(_object("before"))
        second = _take_over(sessions, first)
        assert second.attempts == first.attempts + 1
        with pytest.raises(Superseded), writing(session):
            session.add(_object("after"))
    with sessions(autobegin=False) as session:
        session.info[RUN] = (second.job_id, second.attempts, 60)
        with writing(session):
            session.add(_object("by the second run"))
    with sessions() as session:
        assert set(session.scalars(select(DataObject.object_id))) == {"before", "by the second run"}
        assert jobs.get(session, first.job_id).attempts == second.attempts  # the second run's lease was kept


def test_a_handler_superseded_mid_run_records_nothing(tmp_path, database_url):
    """The runtime: a run whose job is taken over between two batches stops at the next one, records no outcome
    (the current run will), and its later batches are not stored."""
    config = make_config(tmp_path, database_url)
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    taken: list[Job] = []

    @register_kind("test_taken_over", queue="translate")
    def taken_over(session, job, config):
        with writing(session):
            session.add(_object("batch 1"))
        taken.append(_take_over(sessions, job))
        with writing(session):
            session.add(_object("batch 2"))
        return "never"

    try:
        with sessions() as session, session.begin():
            job_id = jobs.enqueue(session, "test_taken_over", {}, "taken", queue="translate").job_id
        assert execute(config, job_id) is None
        with sessions() as session:
            job = jobs.get(session, job_id)
            assert (job.state, job.attempts, job.result) == (jobs.RUNNING, taken[0].attempts, None)
            assert list(session.scalars(select(DataObject.object_id))) == ["batch 1"]
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------ the gateway during an ingest


@pytest.mark.slow
def test_a_token_request_succeeds_while_a_large_sqlite_ingest_runs(tmp_path):
    """A real gateway (uvicorn) and a real worker on one SQLite store: while the worker ingests a large file
    (350,400 readings), client_credentials token requests (each a write) are answered 200, and answered while the
    ingest is still running with part of its data already committed. Before, the ingest held the SQLite write lock
    from its first batch to its end, so every token request waited for the whole ingest (or failed after the 30 s
    busy timeout on a larger file)."""
    database_url = f"sqlite+pysqlite:///{tmp_path}/store.db"
    feed = tmp_path / "large.xml"
    with open(feed, "w", encoding="utf-8") as out:
        write_feed(out, FeedSpec(usage_points=10, days=365, interval=900))
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with redis_server(tmp_path) as redis_url:
        env = {"GREENBRIDGE_REDIS_URL": str(redis_url), "GREENBRIDGE_DATABASE_URL": database_url,
               "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_SECRET_KEY": "ingest-contention",
               "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}"}
        log = tmp_path / "worker.log"
        with uvicorn_server("gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO) as gateway, \
                open(log, "ab") as out:
            registered = httpx2.post(f"{gateway}/oauth/register", timeout=30,
                                     json={"scope": "cds_client_admin", "client_name": "contention"})
            assert registered.status_code == 201, registered.text
            auth = (registered.json()["client_id"], registered.json()["client_secret"])
            worker = subprocess.Popen([sys.executable, "-m", "greenbridge", "worker", "--concurrency", "1",
                                       "--hostname", f"contention{os.getpid()}@localhost", "--log-level", "info"],
                                      cwd=REPO, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out,
                                      stderr=subprocess.STDOUT, start_new_session=True)
            try:
                from bridge.config import load_config
                from workers.app import make_celery
                from workers.tasks import submit

                with sessions() as session:
                    job = submit(make_celery(load_config(environ=env)), session, "ingest_file",
                                 {"path": str(feed), "customer_id": "big"})
                answers, during = [], 0
                deadline = time.monotonic() + 300
                while time.monotonic() < deadline:
                    with sessions() as session:
                        state = jobs.get(session, job.job_id).state
                        stored = session.scalar(select(func.count()).select_from(DataObject))
                    if state in (jobs.DONE, jobs.DEAD):
                        break
                    assert worker.poll() is None, log.read_text()[-3000:]
                    answer = httpx2.post(f"{gateway}/oauth/token", auth=auth, timeout=60,
                                         data={"grant_type": "client_credentials", "scope": "cds_client_admin"})
                    answers.append(answer.status_code)
                    with sessions() as session:
                        still_running = jobs.get(session, job.job_id).state == jobs.RUNNING
                    if state == jobs.RUNNING and stored and still_running:
                        during += 1  # sent and answered while the ingest ran, part of its data committed
                with sessions() as session:
                    finished = jobs.get(session, job.job_id)
                    assert finished.state == jobs.DONE, (finished.last_error, log.read_text()[-3000:])
                    segments = int(re.search(r"usage_segments (\d+)/0/0", finished.result).group(1))
                    assert session.scalar(select(func.count()).select_from(UsageSegmentRow)) == segments > 3000
            finally:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(worker.pid, signal.SIGTERM)
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(worker.pid, signal.SIGKILL)
                    worker.wait()
    engine.dispose()
    assert answers and set(answers) == {200}
    assert during >= 3, f"only {during} token request(s) answered while the ingest was storing ({answers})"
