"""A worker on a machine without a gateway serves its own metrics (``greenbridge worker --metrics-port``): its
pool processes' files in its own directory, added up (issue 14 item 3)."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2
import pytest
from prometheus_client.parser import text_string_to_metric_families
from servers import free_port

from bridge.config import load_config
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from espi.generate import FeedSpec, write_feed
from workers import jobs
from workers.app import make_celery
from workers.tasks import submit

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.slow


def _families(port: int) -> dict[str, list]:
    text = httpx2.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    return {family.name: family.samples for family in text_string_to_metric_families(text)}


def _value(families: dict[str, list], sample: str, **labels: str) -> float:
    family = sample.rsplit("_", 1)[0]
    return sum(s.value for s in families.get(family, []) if s.name == sample
               and all(s.labels.get(k) == v for k, v in labels.items()))


def test_worker_serves_its_own_metrics(redis_url, tmp_path):
    database_url = f"sqlite+pysqlite:///{tmp_path}/store.db"
    env = {"GREENBRIDGE_REDIS_URL": str(redis_url), "GREENBRIDGE_DATABASE_URL": database_url,
           "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_SECRET_KEY": "worker-metrics-secret"}
    config = load_config(environ=env)
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    stale = config.metrics_dir / "worker-metrics-test_localhost" / "counter_1.db"  # a previous run's file
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"left over")
    feed = tmp_path / "feed.xml"
    with open(feed, "w", encoding="utf-8") as out:
        totals = write_feed(out, FeedSpec(usage_points=1, days=2, interval=3600))
    port = free_port()
    log = tmp_path / "worker.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "greenbridge", "worker", "--concurrency", "2", "--hostname",
                                 "metrics-test@localhost", "--metrics-port", str(port)], cwd=REPO,
                                env={**os.environ, **env}, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx2.HTTPError):
                before = _families(port)
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.2)
        assert not stale.exists()  # emptied when the worker started
        assert _value(before, "greenbridge_task_runtime_seconds_count") == 0
        with sessions() as session:
            job = submit(make_celery(config), session, "ingest_file", {"path": str(feed), "customer_id": "c-1"})
        while True:
            with sessions() as session:
                state = jobs.get(session, job.job_id).state
            if state in (jobs.DONE, jobs.DEAD):
                break
            assert proc.poll() is None and time.monotonic() < deadline + 60, log.read_text()[-3000:]
            time.sleep(0.2)
        assert state == jobs.DONE
        after = _families(port)
        assert _value(after, "greenbridge_task_runtime_seconds_count", kind="ingest_file", outcome="done") == 1
        with sessions() as session:
            result = jobs.get(session, job.job_id).result  # "N readings; …": what the ingest placed
        readings = int(re.match(r"(\d+) readings;", result).group(1))
        assert readings >= sum(series[0] for series in totals.series.values()) > 0
        assert _value(after, "greenbridge_readings_stored_total", custodian="") == readings
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        engine.dispose()
