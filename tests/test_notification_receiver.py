"""The notification receiver: POST BatchList → refused or accepted URIs → job rows (gateway + bridge.notifications)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from gateway_helpers import gateway_client, make_config
from sqlalchemy import select
from test_notification import DECL, SAMPLES, URI, URI2, VARIANTS

from bridge.notifications import accept_notification, dedupe_key, loggable_uri, refusal
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import Job
from espi.namespaces import ESPI
from espi.notification import build_batch_list
from workers import jobs

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHVzZWQtb25seS1ieS10ZXN0cy1ub3QtYS1yZWFsLWtleQ"


def custodian_toml(cid: str, base: str, sftp_host: str | None = None) -> str:
    text = f"""
[[custodians]]
id = "{cid}"
name = "{cid}"
resource_url = "{base}/espi/1_1/resource"
authorize_url = "{base}/oauth/authorize"
token_url = "{base}/oauth/token"
client_id = "client-{cid}"
client_secret = "secret-{cid}"
"""
    if sftp_host:
        text += f"""[custodians.sftp]
host = "{sftp_host}"
user = "bulk"
key_path = "/nonexistent/id_ed25519"
host_key = "{HOST_KEY}"
"""
    return text


CUSTODIANS = (custodian_toml("dc", "https://dc.example", "sftp.dc.example")
              + custodian_toml("local", "http://localhost:8080/DataCustodian", "localhost")
              + custodian_toml("uapi", "https://utilityapi.com/DataCustodian"))
XML = {"Content-Type": "application/xml"}
GENERIC = "/espi/1_1/Notification"


@pytest.fixture
def client(tmp_path):
    with gateway_client(make_config(tmp_path, extra_toml=CUSTODIANS)) as client:
        yield client


def jobs_of(client) -> list[Job]:
    with client.app.state.gateway.sessions() as session:
        return list(session.scalars(select(Job).order_by(Job.created, Job.kind)))


def post(client, uris, path=GENERIC, headers=XML):
    return client.post(path, content=build_batch_list(uris), headers=headers)


# ---------------------------------------------------------------------------------------------- every variant


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_inline_variant_becomes_one_job(client, variant):
    if variant == "UTF-16 body":
        data = f'<?xml version="1.0" encoding="UTF-16"?>\n<BatchList><resources>{URI}</resources></BatchList>'
        data = data.encode("utf-16")
    else:
        data = (DECL + VARIANTS[variant]).encode()
    response = client.post(GENERIC, content=data, headers={"Content-Type": "application/atom+xml"})
    assert response.status_code == 200 and response.content == b""
    (job,) = jobs_of(client)
    assert (job.kind, job.queue, job.state) == ("fetch_subscription", "http", "queued")
    assert job.payload["uri"] == URI and job.payload["custodian_id"] == "dc"
    assert job.dedupe_key == f"notification:dc:{URI}"


SAMPLE_KINDS = {
    "gba_contract_notification-batchlist.xml": ("uapi", "fetch_subscription", "http"),
    "cmdtest_BatchList_applicationinformation.xml": ("local", "sync_application_information", "http"),
    "cmdtest_BatchList_authorization.xml": ("local", "sync_authorization", "http"),
    "cmdtest_BatchList_rest_bulk.xml": ("local", "fetch_bulk", "http"),
    "cmdtest_BatchList_sftp_bulk.xml": ("local", "fetch_bulk", "sftp"),
}


@pytest.mark.samples
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_shared_samples_become_jobs_of_their_kind(client, sample, name):
    response = client.post(GENERIC, content=sample(name).read_bytes(), headers={"Content-Type": "text/xml"})
    assert response.status_code == 200
    (job,) = jobs_of(client)
    assert (job.payload["custodian_id"], job.kind, job.queue) == SAMPLE_KINDS[name]
    assert job.payload["uri"] == SAMPLES[name][0]


def test_empty_batch_list_is_fine(client):
    assert client.post(GENERIC, content=f'<BatchList xmlns="{ESPI}"/>'.encode(), headers=XML).status_code == 200
    assert jobs_of(client) == []


# ---------------------------------------------------------------------------------------------- refusals


def test_foreign_host_is_refused_and_nothing_enqueued(client, caplog):
    foreign = "https://evil.example/espi/1_1/resource/Batch/Subscription/7?published-min=2025-01-01T00:00:00Z"
    for path in (GENERIC, "/custodians/dc/notify"):
        assert post(client, [foreign], path).status_code == 200
    assert jobs_of(client) == []
    assert "evil.example/espi/1_1/resource/Batch/Subscription/7" in caplog.text
    assert "published-min" not in caplog.text  # logged without the query


@pytest.mark.parametrize("uri", [
    "https://dc.example/admin/Batch/Subscription/7",  # outside the resource path
    "https://dc.example/espi/1_1/resourceX/Batch/Subscription/7",  # a prefix of a segment is not under it
    "https://dc.example/espi/1_1/resource/../../admin/Batch/Subscription/7",
    "https://dc.example/espi/1_1/resource/%2e%2e/x/Batch/Subscription/7",
    "http://dc.example/espi/1_1/resource/Batch/Subscription/7",  # http off loopback
    "https://user:pw@dc.example/espi/1_1/resource/Batch/Subscription/7",
    "ftp://dc.example/espi/1_1/resource/Batch/Bulk/1",
    "sftp://evil.example/bulk/BatchBulk.xml",
    "https://dc.example/espi/1_1/resource/ReadServiceStatus",  # not a kind we act on
    "https://[::1/espi",
])
def test_uris_outside_the_custodian_are_refused(client, uri):
    assert post(client, [uri], "/custodians/dc/notify").status_code == 200
    assert post(client, [uri]).status_code == 200
    assert jobs_of(client) == []


def test_mixed_list_keeps_the_good_and_refuses_the_rest(client):
    good = "sftp://sftp.dc.example/out/Bulk_1.xml"
    assert post(client, [good, "https://evil.example/x/Batch/Bulk/1", URI2], "/custodians/dc/notify").status_code == 200
    kinds = sorted((j.kind, j.queue) for j in jobs_of(client))
    assert kinds == [("fetch_bulk", "sftp"), ("sync_authorization", "http")]


def test_per_custodian_route_checks_against_that_custodian_only(client):
    assert post(client, [URI], "/custodians/uapi/notify").status_code == 200
    assert jobs_of(client) == []
    assert post(client, [URI], "/custodians/nobody/notify").status_code == 404


# ---------------------------------------------------------------------------------------------- duplicates


def test_duplicates_are_harmless(client):
    window = f"{URI}?published-min=2025-01-01T00:00:00.000-05:00&published-max=2025-02-01T00:00:00Z"
    canonical = f"{URI}?published-min=2025-01-01T05:00:00Z&published-max=2025-02-01T00:00:00Z"
    body = f"<BatchList><resources>{URI}</resources><resources> {URI} </resources></BatchList>".encode()
    for path in (GENERIC, "/custodians/dc/notify", GENERIC):
        assert client.post(path, content=body, headers=XML).status_code == 200
    assert len(jobs_of(client)) == 1
    for uri in (window, canonical, canonical.replace("https://dc.example", "HTTPS://DC.EXAMPLE")):
        assert post(client, [uri]).status_code == 200
    jobs = jobs_of(client)
    assert len(jobs) == 2  # the window is part of the job; its spellings are one job
    assert jobs[1].payload["uri"] == canonical and jobs[1].payload["published_min"] == "2025-01-01T05:00:00+00:00"


# ---------------------------------------------------------------------------------------------- bad requests


@pytest.mark.parametrize("body", [b"<BatchList><resources>x", b"not xml", b"<Feed/>",
                                  b'<!DOCTYPE x [<!ENTITY a "b">]><BatchList/>', b"\xff\xfe\x00"])
def test_bad_xml_is_400_with_the_parsers_message(client, body):
    response = client.post(GENERIC, content=body, headers=XML)
    assert response.status_code == 400 and "notification from" in response.text
    assert jobs_of(client) == []


def test_json_is_415_and_oversized_is_413(client):
    assert client.post(GENERIC, json={"resources": [URI]}).status_code == 415
    assert client.post("/custodians/dc/notify", content=build_batch_list([URI])).status_code == 415
    big = DECL + "<BatchList>" + "<!-- pad -->" * 200_000 + f"<resources>{URI}</resources></BatchList>"
    assert client.post(GENERIC, content=big.encode(), headers=XML).status_code == 413
    assert client.get(GENERIC).status_code == 405
    assert jobs_of(client) == []


# ---------------------------------------------------------------------------------------------- enqueue path


def test_accept_notification_on_both_databases(tmp_path, database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    config = make_config(tmp_path, database_url, extra_toml=CUSTODIANS)
    dc = next(c for c in config.custodians if c.id == "dc")
    now = datetime(2026, 3, 1, tzinfo=UTC)
    uris = [URI, URI2, "https://evil.example/espi/1_1/resource/Batch/Bulk/1", "sftp://sftp.dc.example/b.xml"]
    try:
        with sessions() as session, session.begin():
            accepted, refused = accept_notification(session, dc, uris, now)
        assert [a.kind for a in accepted] == ["fetch_subscription", "sync_authorization", "fetch_bulk"]
        assert [r.loggable for r in refused] == ["https://evil.example/espi/1_1/resource/Batch/Bulk/1"]
        with sessions() as session, session.begin():
            again, _ = accept_notification(session, dc, [*uris, URI], now)
        assert [a.job_id for a in again] == [a.job_id for a in accepted]
        with sessions() as session:
            rows = session.scalars(select(Job)).all()
        assert len(rows) == 3 and {r.state for r in rows} == {"queued"} and rows[0].created == now
    finally:
        engine.dispose()


@pytest.mark.parametrize("uri", [URI, URI2, "https://dc.example/espi/1_1/resource/Batch/Bulk/3",
                                 "https://dc.example/espi/1_1/resource/ApplicationInformation/1"])
def test_a_repeated_notification_fetches_again_whatever_the_job_did(tmp_path, database_url, uri):
    """Custodians name the same plain URI in every BatchList: each time it is fetched again. A done job and a dead
    one are asked for another run (the same row, queued, its generation counting the requests)."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    dc = next(c for c in make_config(tmp_path, database_url, extra_toml=CUSTODIANS).custodians if c.id == "dc")
    now = datetime(2026, 3, 1, tzinfo=UTC)
    try:
        for n, ending in enumerate(("done", "dead", "done")):
            with sessions() as session, session.begin():
                (accepted,), _ = accept_notification(session, dc, [uri, uri], now)
                assert accepted.state == "queued"
                job = jobs.claim(session, accepted.job_id, now=now)
                assert job is not None and job.generation == n + 1
                assert jobs.done(session, job, now=now) if ending == "done" else jobs.dead(session, job, "x", now=now)
        with sessions() as session:
            (row,) = session.scalars(select(Job)).all()
        assert (row.state, row.generation, row.attempts) == ("done", 3, 3)
    finally:
        engine.dispose()


def test_helpers(tmp_path):
    config = make_config(tmp_path, extra_toml=CUSTODIANS)
    dc = next(c for c in config.custodians if c.id == "dc")
    assert refusal(dc, URI) is None and refusal(dc, "https://dc.example/espi/1_1/resource") is None
    assert "SFTP" in refusal(dc, "sftp://sftp.dc.example:2222/b.xml")
    assert loggable_uri("https://u:p@h.example/a?b=c#d") == "https://h.example/a"
    long_key = dedupe_key("dc", "https://dc.example/" + "x" * 400)
    assert len(long_key) <= 255 and "sha256" in long_key


def test_published_to_redis_when_configured(tmp_path, redis_url):
    """With a Redis URL the job's id goes to its queue as gb.run_job; a repeat of a still-queued job re-publishes
    the same id (harmless: claiming is guarded, as with workers.tasks.submit), never a second job."""
    import json

    import redis

    config = make_config(tmp_path, extra_toml=CUSTODIANS, redis_url=redis_url)
    broker = redis.Redis(unix_socket_path=redis_url.split("://", 1)[1].split("?")[0])
    broker.delete("http")
    with gateway_client(config) as client:
        assert post(client, [URI]).status_code == 200
        assert post(client, [URI]).status_code == 200
        (job,) = jobs_of(client)
    messages = broker.lrange("http", 0, -1)
    assert len(messages) == 2
    for raw in messages:
        message = json.loads(raw)
        assert message["headers"]["task"] == "gb.run_job" and message["headers"]["argsrepr"] == f"('{job.job_id}',)"


def test_publish_failure_leaves_the_row_for_the_reconciler(tmp_path):
    config = make_config(tmp_path, extra_toml=CUSTODIANS, redis_url="redis://127.0.0.1:9/0")
    with gateway_client(config) as client:
        assert post(client, [URI]).status_code == 200
        assert [j.state for j in jobs_of(client)] == ["queued"]


def test_sftp_uris_may_name_the_user_never_a_password_and_stay_under_remote_dir(tmp_path):
    from dataclasses import replace

    config = make_config(tmp_path, extra_toml=CUSTODIANS)
    dc = next(c for c in config.custodians if c.id == "dc")
    assert refusal(dc, "sftp://bulk@sftp.dc.example/exports/Bulk/1.xml") is None  # espi.md §7: user@host
    assert "user information" in refusal(dc, "sftp://bulk:pw@sftp.dc.example/exports/Bulk/1.xml")
    assert "user information" in refusal(dc, "https://me@dc.example/espi/1_1/resource/Batch/Bulk/1")
    fenced = replace(dc, sftp=replace(dc.sftp, remote_dir="/exports"))
    assert refusal(fenced, "sftp://sftp.dc.example/exports/Bulk/1.xml") is None
    assert "remote_dir" in refusal(fenced, "sftp://sftp.dc.example/etc/passwd")
    assert "remote_dir" in refusal(fenced, "sftp://sftp.dc.example/exportsX/1.xml")
    assert "dot segments" in refusal(fenced, "sftp://sftp.dc.example/exports/../etc/passwd")
