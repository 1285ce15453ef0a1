"""The reconciler and publishing (issue 13 item 9), with counts of the messages in a real redis-server.

* A run whose worker died on its last attempt ends ``dead`` through its kind's ``on_dead`` (a first fetch's Grant
  becomes ``errored``), not by a bulk UPDATE that left the Grant ``pending`` forever.
* A due deferred or failed job is published once per due time however many reconciler passes run while the
  workers lag, and once more per staleness period if its message was lost; a retry published with a countdown is
  not published again when it comes due.
* The gateway publishes the jobs it could not while Redis was away as soon as Redis answers again.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from gateway_helpers import consent_flow, gateway_client, make_config, register
from servers import redis_server
from sqlalchemy import func, select, update

from bridge import upstream
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import Grant, Job, Message
from espi.custodian_client import CustodianTokens
from workers import jobs
from workers.tasks import reconcile_jobs

RESOURCE = "http://127.0.0.1:9/espi/1_1/resource"  # nothing listens: a fetch there fails at once
DEAD_END = f"""
[[custodians]]
id = "dc"
name = "Example Utility"
resource_url = "{RESOURCE}"
authorize_url = "http://127.0.0.1:9/oauth/authorize"
token_url = "http://127.0.0.1:9/oauth/token"
client_id = "tp"
client_secret = "tp-secret"
hosts = ["127.0.0.1"]
"""
QUEUES = ("http", "translate", "sftp", "notify")


def _broker(redis_url) -> redis.Redis:
    broker = redis.Redis(unix_socket_path=str(redis_url.socket_path))
    broker.delete(*QUEUES)
    return broker


def _messages(broker: redis.Redis, queue: str = "http") -> list[str]:
    """The job ids of the ``gb.run_job`` messages waiting in ``queue``."""
    ids = []
    for raw in broker.lrange(queue, 0, -1):
        message = json.loads(raw)
        assert message["headers"]["task"] == "gb.run_job"
        ids.append(message["headers"]["argsrepr"].strip("(),'"))
    return ids


def _expire(sessions, job_id: str, now: datetime, **values) -> None:
    with sessions() as session, session.begin():
        session.execute(update(Job).where(Job.job_id == job_id).values(lease_until=now - timedelta(seconds=1),
                                                                        **values))


def test_a_run_that_died_on_its_last_attempt_ends_dead_through_on_dead(tmp_path, database_url):
    """Three runs whose lease ran out on their last attempt: the first fetch of a pending Grant ends ``dead`` and
    the Grant ``errored`` with a changelog Message (its kind's on_dead, in the reconciler's transaction); a job of a
    kind without on_dead just ends ``dead``; one a notification asked again meanwhile is queued afresh and
    published. Before, the reconciler marked them dead in one UPDATE and the Grant stayed ``pending``."""
    local = make_config(tmp_path, database_url)
    config = make_config(tmp_path, database_url, extra_toml=DEAD_END)
    with gateway_client(local) as local_client, gateway_client(config) as client:
        gw = client.app.state.gateway
        (grant_id,) = consent_flow(local_client, register(local_client))["cds_grant_ids"]
        now = datetime.now(UTC)
        with gw.sessions() as session, session.begin():
            grant = session.get(Grant, grant_id)
            grant.status, grant.enabled_scope, grant.eta = "pending", "", now + timedelta(minutes=5)
            row = upstream.bind(session, gw.box, grant_id=grant_id, custodian_id="dc", customer_id=grant.customer_id,
                                scope="FB=4_5", tokens=CustodianTokens(
                                    access_token="at", resource_uri=f"{RESOURCE}/Batch/Subscription/5",
                                    authorization_uri=f"{RESOURCE}/Authorization/9"))
            first = jobs.enqueue(session, "fetch_subscription", {"custodian_id": "dc", "upstream_id": row.id},
                                 "first-fetch", queue="http", max_attempts=1)
            plain = jobs.enqueue(session, "ingest_file", {"path": "/x.xml", "customer_id": "c"}, "plain",
                                 max_attempts=1)
            asked = jobs.enqueue(session, "ingest_file", {"path": "/y.xml", "customer_id": "c"}, "asked",
                                 max_attempts=1)
            ids = [first.job_id, plain.job_id, asked.job_id]
            for job_id in ids:
                assert jobs.claim(session, job_id, lease_seconds=60)
        for job_id in ids:
            _expire(gw.sessions, job_id, now, rerun=job_id == ids[2])
        told = select(func.count()).select_from(Message).where(Message.description.contains("could not be fetched"))
        with gw.sessions() as session:
            assert session.scalar(told) == 0

        sent: list[str] = []
        assert reconcile_jobs(config, lambda job: sent.append(job.job_id), now=now) == 1
        assert sent == [ids[2]]
        with gw.sessions() as session:
            dead_first, dead_plain, queued = (jobs.get(session, job_id) for job_id in ids)
            assert dead_first.state == dead_plain.state == jobs.DEAD
            assert dead_first.last_error == jobs.LAST_TRY
            assert (queued.state, queued.generation, queued.rerun) == (jobs.QUEUED, 2, False)
            grant = session.get(Grant, grant_id)
            assert grant.status == "errored" and grant.eta is None
            assert session.scalar(told) == 1  # the client's changelog says so
        # nothing left for the next pass (the queued one waits for its worker)
        assert reconcile_jobs(config, lambda job: sent.append(job.job_id), now=now + timedelta(minutes=1)) == 0


def _due(sessions, key: str, state: str, at: datetime) -> str:
    """A fetch job waiting ``state`` (failed or deferred) whose retry came due at ``at``."""
    with sessions() as session, session.begin():
        job = jobs.enqueue(session, "fetch_subscription", {"custodian_id": "dc", "uri": f"{RESOURCE}/{key}"},
                           key, queue="http", now=at - timedelta(minutes=10))
        run = jobs.claim(session, job.job_id, now=at - timedelta(minutes=10))
        if state == jobs.FAILED:
            jobs.failed(session, run, "503", now=at - timedelta(minutes=10), retry_after=600)
        else:
            jobs.deferred(session, run, at, now=at - timedelta(minutes=10))
        session.execute(update(Job).where(Job.job_id == job.job_id).values(run_after=at))
        return job.job_id


def test_a_lagging_due_job_is_published_once_per_due_time(tmp_path, database_url, redis_url):
    """Five failed and two deferred jobs came due while no worker takes them: ten reconciler passes a minute apart
    publish each once (seven messages, not seventy as before); a retry the worker published with a countdown
    (gb.run_job) is not published again when it comes due; a staleness period later each unclaimed job is
    published once more (its message may be lost); a job due again at a later time is published again."""
    from workers.app import make_celery
    from workers.tasks import publish

    config = make_config(tmp_path, database_url, extra_toml=DEAD_END, redis_url=str(redis_url))
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    app = make_celery(config)
    broker = _broker(redis_url)
    try:
        now = datetime.now(UTC)
        waiting = [_due(sessions, f"failed-{n}", jobs.FAILED, now - timedelta(seconds=30)) for n in range(5)]
        waiting += [_due(sessions, f"deferred-{n}", jobs.DEFERRED, now - timedelta(seconds=30)) for n in range(2)]
        with sessions() as session, session.begin():  # the custodian does not answer: the worker's run fails
            countdown = jobs.enqueue(session, "fetch_bulk", {"custodian_id": "dc", "uri": f"{RESOURCE}/Batch/Bulk/1"},
                                     "countdown", queue="http").job_id
        assert app.tasks["gb.run_job"].apply(args=(countdown,)).get() == jobs.FAILED
        assert _messages(broker) == [countdown]  # its retry, with a countdown
        with sessions() as session:
            retry = jobs.get(session, countdown)
            assert retry.published_at == retry.run_after

        def send(job):
            publish(app, job)

        later = max(now, retry.run_after) + timedelta(seconds=1)  # everything is due
        for minute in range(10):
            reconcile_jobs(config, send, now=later + timedelta(minutes=minute))
        published = _messages(broker)
        assert len(published) == 8 and set(published) == {countdown, *waiting}
        assert published.count(countdown) == 1

        # a staleness period after their last message the jobs are still unclaimed: published once more
        reconcile_jobs(config, send, now=later + timedelta(seconds=jobs.RECONCILE_STALE_AFTER + 60))
        reconcile_jobs(config, send, now=later + timedelta(seconds=jobs.RECONCILE_STALE_AFTER + 120))
        assert len(_messages(broker)) == 16

        # a job that fails again is due at a new time: published once for it
        broker.delete("http")
        with sessions() as session, session.begin():
            run = jobs.claim(session, waiting[0], now=later + timedelta(minutes=20))
            outcome = jobs.failed(session, run, "503 again", now=later + timedelta(minutes=20), retry_after=60)
        for minute in range(2, 6):
            reconcile_jobs(config, send, now=outcome.run_after + timedelta(minutes=minute))
        assert _messages(broker) == [waiting[0]]
        # the task itself (what beat sends) publishes through the worker's app: nothing is due now
        assert app.tasks["gb.reconcile"].apply().get() == 0
    finally:
        engine.dispose()


def test_the_gateway_publishes_what_it_could_not_as_soon_as_redis_answers(tmp_path, caplog):
    """Jobs committed while Redis is away are kept by the gateway's publisher and sent within seconds of Redis
    answering again, in order and once each, not at the reconciler's next look at stale jobs (15 minutes), as
    before (the publisher logged and forgot them)."""
    caplog.set_level(logging.WARNING, logger="gateway.job_publisher")

    def publish_failed() -> None:  # the publisher tried, and Redis did not answer
        deadline = time.monotonic() + 30
        while not any("not published" in record.getMessage() for record in caplog.records):
            assert time.monotonic() < deadline, "the publisher never tried"
            time.sleep(0.05)
        caplog.clear()

    socket_dir = Path(tempfile.mkdtemp(prefix="gb-redis-"))  # short: a unix socket path holds 108 bytes
    url = f"redis+socket://{socket_dir}/redis.sock"
    config = make_config(tmp_path, redis_url=url)
    try:
        with gateway_client(config) as client:
            gw = client.app.state.gateway

            def commit_job(key: str) -> str:
                with gw.sessions() as session, session.begin():  # what any route's transaction does
                    return jobs.enqueue(session, "fetch_bulk", {"custodian_id": "dc", "uri": key}, key,
                                        queue="http").job_id

            first = [commit_job("a"), commit_job("b")]  # Redis never ran yet
            publish_failed()
            with redis_server(tmp_path, socket_dir=socket_dir) as redis_url:
                broker = redis.Redis(unix_socket_path=str(redis_url.socket_path))
                assert _wait_for_messages(broker, 2) == first
                third = commit_job("c")  # Redis up: sent at once
                assert _wait_for_messages(broker, 3) == [*first, third]
            later = commit_job("d")  # Redis gone again (a restart)
            publish_failed()
            with redis_server(tmp_path, socket_dir=socket_dir) as redis_url:
                broker = redis.Redis(unix_socket_path=str(redis_url.socket_path))
                assert _wait_for_messages(broker, 1) == [later]
                time.sleep(1.0)  # and nothing else arrives: each job was sent once
                assert _messages(broker) == [later]
    finally:
        for leftover in socket_dir.iterdir():
            leftover.unlink()
        socket_dir.rmdir()


def _wait_for_messages(broker: redis.Redis, count: int, timeout: float = 30.0) -> list[str]:
    """The job ids in the ``http`` queue once there are ``count`` (Celery's producer appends in publish order)."""
    deadline = time.monotonic() + timeout
    while True:
        found = _messages(broker)
        if len(found) >= count:
            return list(reversed(found))  # LPUSH: the newest first
        if time.monotonic() > deadline:
            pytest.fail(f"{len(found)} message(s) in Redis after {timeout} s, expected {count}")
        time.sleep(0.1)
