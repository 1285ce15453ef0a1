"""A real ``greenbridge worker`` (Celery, prefork) on a real redis-server runs durable jobs into a SQLite store."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sqlalchemy import func, select, update

from bridge.config import load_config
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import DataObject, Job, UsageSegmentRow
from espi.generate import FeedSpec, write_feed
from workers import jobs
from workers.app import celery_settings, make_celery
from workers.tasks import publish, submit

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def test_reliable_settings():
    config = load_config(environ={"GREENBRIDGE_REDIS_URL": "redis://127.0.0.1:1/0"})
    settings = celery_settings(config)
    assert settings["task_acks_late"] and settings["task_reject_on_worker_lost"]
    assert settings["worker_prefetch_multiplier"] == 1
    timeout = settings["broker_transport_options"]["visibility_timeout"]
    assert timeout == settings["visibility_timeout"] == settings["result_backend_transport_options"][
        "visibility_timeout"]
    assert settings["task_time_limit"] < timeout
    assert {q.name for q in settings["task_queues"]} == {"http", "sftp", "translate", "notify"}
    with pytest.raises(ValueError, match="Redis URL"):
        celery_settings(load_config(environ={}))


@contextlib.contextmanager
def _worker(env: dict[str, str], log: Path):
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "greenbridge", "worker", "--concurrency", "1",
                                 "--hostname", f"test{os.getpid()}@localhost", "--log-level", "info"],
                                cwd=REPO, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT)  # fmt: skip
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _wait_for(sessions, job_id: str, attempts: int, proc, log: Path, timeout: float = 90.0) -> Job:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with sessions() as session:
            job = jobs.get(session, job_id)
        if job.state in (jobs.DONE, jobs.DEAD) and job.attempts >= attempts:
            return job
        assert proc.poll() is None, f"worker exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
        time.sleep(0.2)
    raise AssertionError(f"job {job_id} still {job.state} after {timeout} s:\n{log.read_text()[-3000:]}")


def _counts(sessions) -> tuple[int, int]:
    with sessions() as session:
        return (session.scalar(select(func.count()).select_from(UsageSegmentRow)),
                session.scalar(select(func.count()).select_from(DataObject)))


def test_worker_runs_ingest_job_and_redelivery_does_not_duplicate(redis_url, tmp_path):
    database_url = f"sqlite+pysqlite:///{tmp_path}/store.db"
    env = {"GREENBRIDGE_REDIS_URL": str(redis_url), "GREENBRIDGE_DATABASE_URL": database_url,
           "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_SECRET_KEY": "worker-test-secret"}
    config = load_config(environ=env)
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    feed = tmp_path / "feed.xml"
    with open(feed, "w", encoding="utf-8") as out:
        write_feed(out, FeedSpec(usage_points=2, days=3, interval=3600))
    app = make_celery(config)
    log = tmp_path / "worker.log"
    try:
        with _worker(env, log) as proc:
            with sessions() as session:
                job = submit(app, session, "ingest_file", {"path": str(feed), "customer_id": "cust-1"},
                             dedupe_key=f"ingest:{feed}")
            assert job.queue == "translate"
            finished = _wait_for(sessions, job.job_id, 1, proc, log)
            assert finished.state == jobs.DONE and finished.attempts == 1 and finished.last_error is None
            segments, objects = _counts(sessions)
            assert segments > 0 and objects > 0

            # the same message delivered again (lost ack): the job is done, nothing runs, nothing changes
            publish(app, finished)
            # the same work enqueued again: the dedupe key gives back the done job, nothing is published
            with sessions() as session:
                assert submit(app, session, "ingest_file", {"path": str(feed), "customer_id": "cust-1"},
                              dedupe_key=f"ingest:{feed}").job_id == job.job_id
            # a worker died after storing the data but before recording done: the job is re-run on redelivery,
            # and the upserts store nothing twice
            with sessions() as session, session.begin():
                session.execute(update(Job).where(Job.job_id == job.job_id).values(state=jobs.QUEUED))
            publish(app, finished)
            rerun = _wait_for(sessions, job.job_id, 2, proc, log)
            assert rerun.state == jobs.DONE and rerun.attempts == 2
            assert _counts(sessions) == (segments, objects)

            # a bad payload is a permanent error: dead at once, with the reason
            with sessions() as session:
                bad = submit(app, session, "ingest_file", {"path": str(tmp_path / "missing.xml"),
                                                           "customer_id": "cust-1"})
            dead = _wait_for(sessions, bad.job_id, 1, proc, log)
            assert dead.state == jobs.DEAD and "no such file" in dead.last_error
            assert _counts(sessions) == (segments, objects)
    finally:
        engine.dispose()
