"""The ops dashboard's parts in process, on both backends (issue 14 items 2 and 3): the operator's credential and
its throttling, the CSRF-protected retry, what /ops/status reports from the store (counts per custodian and kind,
the oldest waiting job, last errors, dead and deferred lists, grants, the activity of the last hour, custodians'
health), the activity recorded by concurrent writers, request ids (taken only when trusted, stored with the jobs a
request creates), route templates as metric labels, JSON log lines, and ``greenbridge status``.
"""

from __future__ import annotations

import io
import json
import logging
import re
from datetime import UTC, datetime, timedelta

import pytest
from gateway_helpers import gateway_client, make_config
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import update

from bridge import logs
from cds.store import ops
from cds.store.jobs import REQUEST_ID, enqueue
from cds.store.models import Job, OpsCustodian
from espi.notification import build_batch_list

PASSWORD = "correct horse battery staple"
DC = """
[[custodians]]
id = "dc"
name = "Demo Custodian"
resource_url = "https://dc.example/espi/1_1/resource"
authorize_url = "https://dc.example/oauth/authorize"
token_url = "https://dc.example/oauth/token"
client_id = "third-party"
client_secret = "s"
"""


@pytest.fixture
def client(tmp_path, database_url):
    config = make_config(tmp_path, database_url, extra_toml=DC, operator_password=PASSWORD)
    with gateway_client(config) as test_client:
        yield test_client


def _sessions(client):
    return client.app.state.gateway.sessions


def _csrf(client) -> str:
    """The token of the dashboard's retry forms (a dead job is listed)."""
    page = client.get("/ops", auth=("operator", PASSWORD))
    assert page.status_code == 200, page.text
    return re.findall(r'name="csrf" value="([^"]+)"', page.text)[0]


# ---------------------------------------------------------------------------------------------- the credential


def test_without_a_password_the_dashboard_is_off(tmp_path):
    with gateway_client(make_config(tmp_path)) as client:
        for path in ("/ops", "/ops/status"):
            answer = client.get(path, auth=("operator", ""))
            assert answer.status_code == 404 and "operator_password" in answer.text
        assert client.post("/ops/jobs/x/retry", data={"csrf": "1.a"}).status_code == 404
        assert client.get("/metrics").status_code == 200  # the exporter needs no dashboard


def test_basic_credentials_are_required_and_failures_throttled(client):
    assert client.get("/ops").status_code == 401
    answer = client.get("/ops/status", auth=("operator", "wrong"))
    assert answer.status_code == 401 and answer.headers["www-authenticate"].startswith("Basic realm=")
    assert client.get("/ops/status", auth=("someone", PASSWORD)).status_code == 401
    assert client.get("/ops/status", headers={"Authorization": "Basic !!!"}).status_code == 401
    statuses = [client.get("/ops/status", auth=("operator", f"guess-{i}")).status_code for i in range(12)]
    assert 429 in statuses  # the address's failures are blocked after the limit (auth_failures_per_minute)
    # a right password is never refused, blocked or not
    answer = client.get("/ops/status", auth=("operator", PASSWORD))
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"


# ------------------------------------------------------------------------------------------------------ retry


def _dead_job(client, kind: str = "fetch_subscription", custodian: str = "dc") -> str:
    with _sessions(client)() as session, session.begin():
        job = enqueue(session, kind, {"custodian_id": custodian, "uri": "https://dc.example/x"}, queue="http")
        session.execute(update(Job).where(Job.job_id == job.job_id)
                        .values(state="dead", attempts=8, max_attempts=8, last_error="HTTP 404: gone"))
        return job.job_id


def test_retry_needs_the_dashboards_token_and_queues_the_job_again(client):
    job_id = _dead_job(client)
    auth = ("operator", PASSWORD)
    assert client.post(f"/ops/jobs/{job_id}/retry", auth=auth).status_code == 400  # not the form
    assert client.post(f"/ops/jobs/{job_id}/retry", data={"job": job_id}, auth=auth).status_code == 403
    assert client.post(f"/ops/jobs/{job_id}/retry", data={"csrf": "0.abc"}, auth=auth).status_code == 403
    stale = "1000." + "0" * 64
    assert client.post(f"/ops/jobs/{job_id}/retry", data={"csrf": stale}, auth=auth).status_code == 403
    token = _csrf(client)
    assert client.post(f"/ops/jobs/{job_id}/retry", data={"csrf": token}).status_code == 401  # no credentials
    answer = client.post(f"/ops/jobs/{job_id}/retry", data={"csrf": token}, auth=auth)
    assert answer.status_code == 303 and answer.headers["location"] == f"/ops?retried={job_id}"
    with _sessions(client)() as session:
        job = session.get(Job, job_id)
        assert job.state == "queued" and job.max_attempts == 16 and job.request_id  # the retry's request id
    # not dead any more: nothing to retry
    answer = client.post(f"/ops/jobs/{job_id}/retry", data={"csrf": token}, auth=auth)
    assert answer.headers["location"] == f"/ops?not_retried={job_id}"
    page = client.get(answer.headers["location"], auth=auth)
    assert "is not dead or failed" in page.text


# ------------------------------------------------------------------------------------------------ the status


def test_status_reports_the_store(client):
    now = datetime.now(UTC)
    dead_id = _dead_job(client)
    with _sessions(client)() as session, session.begin():
        old = enqueue(session, "fetch_bulk", {"custodian_id": "dc", "uri": "https://dc.example/b"}, queue="http",
                      now=now - timedelta(minutes=30))
        enqueue(session, "fetch_bulk", {"custodian_id": "dc", "uri": "https://dc.example/c"}, queue="http", now=now)
        waiting = enqueue(session, "fetch_subscription", {"custodian_id": "dc", "uri": "https://dc.example/s"},
                          queue="http")
        session.execute(update(Job).where(Job.job_id == waiting.job_id).values(
            state="deferred", waiting_for="w" * 64, run_after=now + timedelta(hours=1), last_error="202 Accepted"))
        finished = enqueue(session, "ingest_file", {"path": "/x", "customer_id": "c"})
        session.execute(update(Job).where(Job.job_id == finished.job_id).values(state="done", modified=now))
        ancient = enqueue(session, "ingest_file", {"path": "/y", "customer_id": "c"})
        session.execute(update(Job).where(Job.job_id == ancient.job_id).values(
            state="done", modified=now - timedelta(hours=3)))
        activity = ops.Activity()
        activity.upstream("dc", status=200, milliseconds=120, at=now)
        activity.upstream("dc", status=503, milliseconds=80, at=now, error="GET /x answered 503")
        activity.readings("dc", 1440)
        ops.flush(session, activity, now)
    status = client.get("/ops/status", auth=("operator", PASSWORD)).json()
    rows = {(row["custodian"], row["kind"]): row for row in status["jobs"]}
    bulk = rows[("dc", "fetch_bulk")]
    assert bulk["queued"] == 2 and datetime.fromisoformat(bulk["oldest_waiting"]) == old.created
    fetch = rows[("dc", "fetch_subscription")]
    assert fetch["dead"] == 1 and fetch["deferred"] == 1 and fetch["last_error"] == "HTTP 404: gone"
    assert rows[("", "ingest_file")]["done_last_hour"] == 1  # the one of three hours ago is not counted
    assert status["dead"]["count"] == 1 and status["dead"]["jobs"][0]["job_id"] == dead_id
    assert status["deferred"]["count"] == 1 and status["deferred"]["jobs"][0]["job_id"] == waiting.job_id
    assert status["grants"] == {}
    assert status["broker"]["reachable"] is False and status["workers"] is None  # no Redis configured
    assert len(status["activity"]) == 60
    assert status["activity"][-1]["readings"] == 1440 and status["activity"][-1]["upstream_errors"] == 1
    (dc,) = status["custodians"]
    assert dc["name"] == "Demo Custodian" and dc["requests_last_hour"] == 2 and dc["errors_last_hour"] == 1
    assert dc["mean_latency_ms_last_hour"] == 100 and dc["last_error"] == "GET /x answered 503"
    assert dc["last_notification"] is None
    page = client.get("/ops", auth=("operator", PASSWORD))
    assert f'id="dead-{dead_id}"' in page.text and "Demo Custodian" in page.text
    assert "<script" not in page.text and "1440 readings stored" in page.text


def test_activity_adds_up_and_health_never_goes_back(client):
    """Several writers' activity of one minute adds up; a late writer's older times never replace newer ones."""
    now = datetime.now(UTC).replace(second=30)
    sessions = _sessions(client)
    for seconds in (10, 0, 5):  # recorded out of order
        activity = ops.Activity()
        activity.upstream("dc", status=500 if seconds == 5 else 200, milliseconds=seconds, at=now +
                          timedelta(seconds=seconds), error=f"failure at {seconds}")
        activity.sftp_bytes("dc", 1000)
        activity.notifications("dc", accepted=2, refused=1, at=now + timedelta(seconds=seconds))
        with sessions() as session, session.begin():
            ops.flush(session, activity, now)
    with sessions() as session:
        (minute,) = ops.activity_since(session, now - timedelta(minutes=1))
        assert (minute.upstream_requests, minute.upstream_errors, minute.sftp_bytes, minute.notifications,
                minute.notifications_refused) == (3, 1, 3000, 6, 3)
        health = session.get(OpsCustodian, "dc")
        assert health.last_success == now + timedelta(seconds=10)
        assert health.last_failure == now + timedelta(seconds=5) and health.last_error == "failure at 5"
        assert health.last_notification == now + timedelta(seconds=10)
    with sessions() as session, session.begin():
        assert ops.prune(session, now + timedelta(days=2)) == 1


# -------------------------------------------------------------------------------------------- request ids


def test_request_ids_are_made_or_trusted_and_stored_with_jobs(tmp_path, database_url):
    uri = "https://dc.example/espi/1_1/resource/Batch/Subscription/7"
    xml = {"Content-Type": "application/atom+xml"}
    config = make_config(tmp_path, database_url, extra_toml=DC)
    with gateway_client(config) as client:
        answer = client.get("/healthz", headers={"X-Request-Id": "from-the-client"})
        made = answer.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)  # not trusted: its own
        answer = client.post("/custodians/dc/notify", content=build_batch_list([uri]), headers=xml)
        assert answer.status_code == 200
        with _sessions(client)() as session:
            (job,) = session.query(Job).all()
            assert job.request_id == answer.headers["x-request-id"] and job.custodian_id == "dc"
            health = session.get(OpsCustodian, "dc")  # the dashboard's "last notification"
            assert health is not None and health.last_notification is not None
            (minute,) = ops.activity_since(session, datetime.now(UTC) - timedelta(minutes=2))
            assert (minute.custodian_id, minute.notifications, minute.notifications_refused) == ("dc", 1, 0)
    trusting = make_config(tmp_path, database_url, extra_toml=DC, trust_request_id=True)
    with gateway_client(trusting) as client:
        answer = client.post("/custodians/dc/notify", content=build_batch_list([uri]),
                             headers={**xml, "X-Request-Id": "nginx-4f2a"})
        assert answer.headers["x-request-id"] == "nginx-4f2a"
        with _sessions(client)() as session:
            (job,) = session.query(Job).all()
            assert job.request_id == "nginx-4f2a" and job.generation == 2  # asked again, by that request
        for forged in ("a\nb", "x" * 65, "bad id", "-lead"):
            assert client.get("/healthz", headers={"X-Request-Id": forged}).headers["x-request-id"] != forged


def test_metric_labels_are_route_templates(client):
    client.get("/cds-api/v1/grants/some-grant-id-123")
    client.get("/no/such/path/secret-value")
    text = client.get("/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    routes = {s.labels["route"] for s in families["greenbridge_http_requests"].samples}
    assert "/cds-api/v1/grants/{grant_id}" in routes and "unmatched" in routes
    assert not any("some-grant-id" in r or "secret-value" in r for r in routes)
    assert {"greenbridge_jobs", "greenbridge_grants", "greenbridge_broker_up"} <= set(families)


# ------------------------------------------------------------------------------------------------------- logs


def test_json_log_lines_carry_the_context():
    stream = io.StringIO()
    logger = logging.getLogger("greenbridge.test-json")
    logger.handlers, logger.propagate = [logs.handler(True, stream)], False
    logger.setLevel(logging.INFO)
    token = REQUEST_ID.set("req-1")
    try:
        logger.info("job %s done", "j1", extra={"route": "/x", "status": 200})
    finally:
        REQUEST_ID.reset(token)
    logger.warning("outside")
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == "job j1 done" and first["request_id"] == "req-1" and first["route"] == "/x"
    assert first["status"] == 200 and first["level"] == "INFO" and first["logger"] == "greenbridge.test-json"
    assert datetime.fromisoformat(first["time"]).tzinfo is not None
    assert "request_id" not in second


# --------------------------------------------------------------------------------------------- the terminal


def test_greenbridge_status_prints_the_same(client, capsys, monkeypatch, tmp_path):
    from greenbridge.cli import main

    _dead_job(client)
    config = client.app.state.gateway.config
    for name, value in {"GREENBRIDGE_DATABASE_URL": config.database_url, "GREENBRIDGE_DATA_DIR": str(tmp_path),
                        "GREENBRIDGE_SECRET_KEY": config.secret_key}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("GREENBRIDGE_CONFIG", raising=False)
    assert main(["status", "--json", "--no-ping"]) == 1  # a dead job needs the operator
    printed = json.loads(capsys.readouterr().out)
    served = client.get("/ops/status", auth=("operator", PASSWORD)).json()
    assert printed["jobs"] == served["jobs"] and printed["dead"] == served["dead"]
    assert main(["status", "--no-ping"]) == 1
    text = capsys.readouterr().out
    assert "fetch_subscription" in text and "dead job(s)" in text and "needs attention" in text


# ---------------------------------------------------------------------------------------------- the migration


def test_migration_gives_existing_jobs_their_custodian(database_url):
    """Jobs stored before migration 0013 get the custodian their payload names (the dashboard counts by it)."""
    from alembic import command
    from sqlalchemy import text

    from cds.store.engine import make_engine
    from cds.store.migrate import alembic_config, upgrade

    engine = make_engine(database_url)
    config = alembic_config(database_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0010")
    now = datetime.now(UTC).replace(tzinfo=None)
    with engine.begin() as connection:
        for job_id, payload in (("a", {"custodian_id": "dc", "uri": "u"}), ("b", {"path": "/x"})):
            connection.execute(text(
                "INSERT INTO jobs (job_id, kind, queue, dedupe_key, payload, state, attempts, max_attempts, created, "
                "modified, generation, rerun) VALUES (:id, 'k', 'http', :id, :payload, 'queued', 0, 8, :now, :now, 1, "
                "false)"), {"id": job_id, "payload": json.dumps(payload), "now": now})
    upgrade(engine)
    with engine.connect() as connection:
        found = dict(connection.execute(text("SELECT job_id, custodian_id FROM jobs")).all())
    engine.dispose()
    assert found == {"a": "dc", "b": None}
