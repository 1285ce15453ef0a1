"""The bridge's store side without any server: bridge.lifecycle (grant lifecycle, resource matching), the deferred-job
resume of cds.store.jobs, lease renewal, and the gateway's hooks (the receipt revocation and a closed Grant queue
the upstream revocation; a BatchList resumes a deferred job instead of making another)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from xml.sax.saxutils import escape

import pytest
from gateway_helpers import consent_flow, gateway_client, make_config, register
from sqlalchemy import select

from bridge import lifecycle, upstream
from cds.store.jobs import NEW_JOBS
from cds.store.models import Grant, Job, Message, Token
from espi.custodian_client import CustodianTokens
from workers import jobs

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
RESOURCE = "https://dc.example/espi/1_1/resource"
CUSTODIANS = f"""
[[custodians]]
id = "dc"
name = "Example Utility"
resource_url = "{RESOURCE}"
authorize_url = "https://dc.example/oauth/authorize"
token_url = "https://dc.example/oauth/token"
client_id = "tp"
client_secret = "tp-secret"
hosts = ["dc.example"]
"""


@pytest.mark.parametrize(("uri", "expected"), [
    (f"{RESOURCE}/Batch/Subscription/5", "5"),
    (f"{RESOURCE}/Batch/Subscription/5?published-min=2026-01-01T00:00:00Z", "5"),
    (f"{RESOURCE}/Subscription/77/UsagePoint/1", "77"),
    (f"{RESOURCE}/Batch/Bulk/1", None),
    ("", None),
    (None, None),
])
def test_subscription_id_of(uri, expected):
    assert lifecycle.subscription_id_of(uri) == expected


def test_resource_key_ignores_query_case_and_trailing_slash():
    assert lifecycle.resource_key("HTTPS://DC.example/a/Batch/Subscription/5/?x=1#f") == \
        lifecycle.resource_key("https://dc.example/a/Batch/Subscription/5")
    assert lifecycle.resource_key("https://dc.example/a/Batch/Subscription/5") != \
        lifecycle.resource_key("https://dc.example/a/Batch/Subscription/50")


def test_waiting_key_matches_the_resource_whatever_the_window():
    a = jobs.waiting_key("dc", f"{RESOURCE}/Batch/Subscription/5?published-min=2026-01-01T00:00:00Z")
    assert a == jobs.waiting_key("dc", f"{RESOURCE}/Batch/Subscription/5")
    assert a != jobs.waiting_key("other", f"{RESOURCE}/Batch/Subscription/5")
    assert a != jobs.waiting_key("dc", f"{RESOURCE}/Batch/Subscription/6")


# ----------------------------------------------------------------------------------------- with a real gateway


@pytest.fixture
def gateway(tmp_path, database_url):
    """The gateway with custodian ``dc``, and (as ``.local``) one without custodians on the same store and key,
    whose local consent flow makes Grants without the upstream hop."""
    local = make_config(tmp_path, database_url)
    config = make_config(tmp_path, database_url, extra_toml=CUSTODIANS)
    with gateway_client(local) as local_client, gateway_client(config) as client:
        client.local = local_client
        yield client, client.app.state.gateway


def _consented_grant(client, gateway, subscription="5", authorization="9"):
    """A Grant through the local consent flow, bound to a custodian authorization as the consent hop would."""
    registration = register(client.local)
    tokens = consent_flow(client.local, registration)
    (grant_id,) = tokens["cds_grant_ids"]
    with gateway.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        grant.status, grant.enabled_scope, grant.enabled_authorization_details = "pending", "", []
        row = upstream.bind(session, gateway.box, grant_id=grant_id, custodian_id="dc",
                            customer_id=grant.customer_id, scope="FB=4_5",
                            tokens=CustodianTokens(access_token="at", refresh_token="rt",
                                                   resource_uri=f"{RESOURCE}/Batch/Subscription/{subscription}",
                                                   authorization_uri=f"{RESOURCE}/Authorization/{authorization}"))
        row_id = row.id
    return registration, tokens, grant_id, row_id


def test_activate_enables_what_was_approved_and_logs_it(gateway):
    client, gw = gateway
    _registration, _tokens, grant_id, _row = _consented_grant(client, gw)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        assert lifecycle.activate(session, grant, urls=gw.urls, box=gw.box, now=T0)
        assert not lifecycle.activate(session, grant, urls=gw.urls, box=gw.box, now=T0)  # only pending → active
    with gw.sessions() as session:
        grant = session.get(Grant, grant_id)
        assert grant.status == "active" and grant.enabled_scope == grant.scope and grant.eta is None
        assert grant.enabled_authorization_details == grant.authorization_details
        logged = session.scalars(select(Message).where(Message.registration_id == grant.registration_id)).all()
        assert any("data arrived" in m.description for m in logged)


def test_keeps_syncing_until_sync_until_and_never_after_the_end(gateway):
    client, gw = gateway
    _registration, _tokens, grant_id, _row = _consented_grant(client, gw)
    with gw.sessions() as session:
        grant = session.get(Grant, grant_id)
        now = datetime.now(UTC)
        assert lifecycle.keeps_syncing(grant, now)
        grant.authorization_details = [{**d, "sync_until": (now - timedelta(days=1)).isoformat()}
                                       for d in grant.authorization_details]
        assert not lifecycle.keeps_syncing(grant, now)
        grant.authorization_details = [{**d, "sync_until": (now + timedelta(days=1)).isoformat()}
                                       for d in grant.authorization_details]
        assert lifecycle.keeps_syncing(grant, now)
        for status in ("revoked", "closed", "disabled", "suspended"):
            grant.status = status
            assert not lifecycle.keeps_syncing(grant, now), status
        grant.status, grant.expires = "active", now - timedelta(seconds=1)
        assert not lifecycle.keeps_syncing(grant, now)


def test_upstream_revocation_revokes_the_grant_and_its_tokens(gateway):
    client, gw = gateway
    _registration, tokens, grant_id, row_id = _consented_grant(client, gw)
    with gw.sessions() as session, session.begin():
        (row,) = lifecycle.authorizations_for_authorization(session, "dc", f"{RESOURCE}/Authorization/9?x=1")
        assert row.id == row_id
        assert lifecycle.revoke_from_upstream(session, row, urls=gw.urls, box=gw.box, now=T0, why="test")
    with gw.sessions() as session:
        grant = session.get(Grant, grant_id)
        assert grant.status == "revoked" and grant.enabled_scope == ""
        assert all(t.access_revoked and t.refresh_revoked
                   for t in session.scalars(select(Token).where(Token.grant_id == grant_id)))
        assert lifecycle.authorizations_for_resource(session, "dc", f"{RESOURCE}/Batch/Subscription/5") == []
    answer = client.get("/cds-api/v1/usage-segments", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert answer.status_code in (401, 403)


def test_a_grant_with_another_live_authorization_survives_one_revocation(gateway):
    client, gw = gateway
    _registration, _tokens, grant_id, row_id = _consented_grant(client, gw)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        upstream.bind(session, gw.box, grant_id=grant_id, custodian_id="dc", customer_id=grant.customer_id,
                      scope="FB=4_5", tokens=CustodianTokens(access_token="at2",
                                                             resource_uri=f"{RESOURCE}/Batch/Subscription/6",
                                                             authorization_uri=f"{RESOURCE}/Authorization/10"))
        first = session.get(upstream.UpstreamAuthorization, row_id)
        assert not lifecycle.revoke_from_upstream(session, first, urls=gw.urls, box=gw.box, now=T0, why="test")
        assert first.revoked == T0
    with gw.sessions() as session:
        assert session.get(Grant, grant_id).status == "pending"


def test_closing_a_grant_queues_the_upstream_revocation_once(gateway):
    client, gw = gateway
    registration, _tokens, grant_id, row_id = _consented_grant(client, gw)
    admin = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_client_admin"},
                        auth=registration.admin_auth).json()["access_token"]
    for _ in range(2):
        answer = client.patch(f"/cds-api/v1/grants/{grant_id}", json={"status": "closed"},
                              headers={"Authorization": f"Bearer {admin}"})
        assert answer.status_code == 200, answer.text
    with gw.sessions() as session:
        queued = session.scalars(select(Job).where(Job.kind == "revoke_upstream")).all()
    assert [(j.payload["upstream_id"], j.queue, j.state) for j in queued] == [(row_id, "http", "queued")]


def test_receipt_revocation_queues_the_upstream_revocation(gateway):
    client, gw = gateway
    _registration, _tokens, grant_id, row_id = _consented_grant(client, gw)
    from cds.store.models import Receipt

    handle = "known-handle-" + grant_id
    with gw.sessions() as session, session.begin():  # the receipt URL's secret is only ever stored hashed
        receipt = session.scalars(select(Receipt).where(Receipt.grant_id == grant_id)).first()
        receipt.handle_hash = gw.box.hash(handle)
    assert client.post(f"/receipts/{handle}/revoke").status_code == 303
    with gw.sessions() as session:
        assert session.get(Grant, grant_id).status == "revoked"
        (job,) = session.scalars(select(Job).where(Job.kind == "revoke_upstream")).all()
    assert job.payload == {"custodian_id": "dc", "upstream_id": row_id}


def test_first_fetch_is_queued_once_per_authorization(gateway):
    client, gw = gateway
    _registration, _tokens, _grant_id, row_id = _consented_grant(client, gw)
    with gw.sessions() as session, session.begin():
        row = session.get(upstream.UpstreamAuthorization, row_id)
        first = lifecycle.first_fetch(session, row, T0)
        again = lifecycle.first_fetch(session, row, T0)
    assert first.job_id == again.job_id and first.kind == "fetch_subscription" and first.queue == "http"


# ------------------------------------------------------------------------------------ deferred jobs and leases


def _deferred_job(gw, uri: str) -> str:
    with gw.sessions() as session, session.begin():
        job = jobs.enqueue(session, "fetch_subscription", {"custodian_id": "dc", "uri": uri}, "first-fetch:x",
                           queue="http", now=T0)
        job = jobs.claim(session, job.job_id, now=T0)
        assert jobs.deferred(session, job, T0 + timedelta(hours=1), waiting_for=jobs.waiting_key("dc", uri),
                             payload={"requested": uri}, now=T0)
        return job.job_id


def _notify(client, *uris):
    listed = "".join(f"<resources>{escape(u)}</resources>" for u in uris)
    body = f'<BatchList xmlns="http://naesb.org/espi">{listed}</BatchList>'
    return client.post("/custodians/dc/notify", content=body, headers={"Content-Type": "application/atom+xml"})


def test_batchlist_naming_the_requested_uri_resumes_the_deferred_job_only(gateway):
    client, gw = gateway
    uri = f"{RESOURCE}/Batch/Subscription/5"
    job_id = _deferred_job(gw, uri)
    assert _notify(client, uri).status_code == 200
    with gw.sessions() as session:
        all_jobs = session.scalars(select(Job)).all()
        job = jobs.get(session, job_id)
    assert [j.job_id for j in all_jobs] == [job_id]  # resumed, no second job
    assert job.state == jobs.DEFERRED and job.run_after <= datetime.now(UTC)
    assert job.payload["requested"] == uri  # kept for the resumed run


def test_batchlist_with_another_window_resumes_and_also_fetches_that_window(gateway):
    client, gw = gateway
    uri = f"{RESOURCE}/Batch/Subscription/5"
    job_id = _deferred_job(gw, uri)
    window = f"{uri}?published-min=2026-02-01T00:00:00Z&published-max=2026-02-02T00:00:00Z"
    assert _notify(client, window).status_code == 200
    with gw.sessions() as session:
        kinds = sorted((j.job_id == job_id, j.state) for j in session.scalars(select(Job)))
    assert kinds == [(False, jobs.QUEUED), (True, jobs.DEFERRED)]


def _deferred_fetch(gw, row_id: int, uri: str) -> str:
    """The authorization's first fetch, answered 202 for ``uri`` and waiting for the custodian's BatchList."""
    with gw.sessions() as session, session.begin():
        job = lifecycle.first_fetch(session, session.get(upstream.UpstreamAuthorization, row_id), T0)
        run = jobs.claim(session, job.job_id, now=T0)
        assert jobs.deferred(session, run, T0 + timedelta(hours=1), waiting_for=jobs.waiting_key("dc", uri),
                             payload={"requested": uri}, now=T0)
        return job.job_id


def test_resumed_fetches_cover_only_their_own_authorizations(gateway):
    """Two Grants behind one subscription, each with its own fetch job. A BatchList naming exactly what both
    deferred fetches asked for resumes them and asks for nothing else; when one authorization has no fetch waiting,
    the subscription's job is asked for a run too, and its fan-out reaches that authorization."""
    client, gw = gateway
    uri = f"{RESOURCE}/Batch/Subscription/5"
    *_rest, first = _consented_grant(client, gw, subscription="5", authorization="9")
    *_rest, second = _consented_grant(client, gw, subscription="5", authorization="10")
    waiting = {_deferred_fetch(gw, first, uri), _deferred_fetch(gw, second, uri)}
    assert _notify(client, uri).status_code == 200
    with gw.sessions() as session:
        rows = session.scalars(select(Job)).all()
    assert {j.job_id for j in rows} == waiting and {j.state for j in rows} == {jobs.DEFERRED}
    assert all(j.run_after <= datetime.now(UTC) for j in rows)
    with gw.sessions() as session, session.begin():  # the second authorization's fetch ran meanwhile
        (done,) = [j for j in session.scalars(select(Job)) if j.payload["upstream_id"] == second]
        assert jobs.done(session, jobs.claim(session, done.job_id))
    with gw.sessions() as session, session.begin():
        (resumed,) = [j for j in session.scalars(select(Job)) if j.payload["upstream_id"] == first]
        run = jobs.claim(session, resumed.job_id)
        assert jobs.deferred(session, run, T0 + timedelta(hours=1), waiting_for=jobs.waiting_key("dc", uri),
                             payload={"requested": uri})
    assert _notify(client, uri).status_code == 200
    with gw.sessions() as session:
        kinds = sorted((j.payload.get("upstream_id") is None, j.state) for j in session.scalars(select(Job)))
    # both fetches stay one job each; the subscription job (no authorization of its own) will fan out to the second
    assert kinds == [(False, jobs.DEFERRED), (False, jobs.DONE), (True, jobs.QUEUED)]


def test_lease_renewal_is_fenced_by_the_attempt(gateway):
    _client, gw = gateway
    with gw.sessions() as session, session.begin():
        job = jobs.enqueue(session, "ingest_file", {}, "lease", now=T0)
        run = jobs.claim(session, job.job_id, lease_seconds=10, now=T0)
        assert jobs.renew(session, run, lease_seconds=10, now=T0 + timedelta(seconds=5))
        assert jobs.get(session, job.job_id).lease_until == T0 + timedelta(seconds=15)
        stale = Job(job_id=job.job_id, attempts=run.attempts - 1)
        assert not jobs.renew(session, stale, now=T0)  # an older run cannot extend the current one
        assert jobs.done(session, run, now=T0 + timedelta(seconds=6))
        assert not jobs.renew(session, run, now=T0 + timedelta(seconds=7))  # nor a finished run


def test_new_jobs_are_noted_for_publishing_and_forgotten_on_take(gateway):
    _client, gw = gateway
    with gw.sessions() as session:
        with session.begin():
            job = jobs.enqueue(session, "ingest_file", {}, "note", queue="translate", now=T0)
            noted = list(session.info.get(NEW_JOBS, []))
            assert noted == [(job.job_id, "translate")]
        # the gateway's after-commit hook (gateway.job_publisher) took them: nothing left to publish twice
        assert jobs.take_new_jobs(session) == []


def test_grant_statuses_follow_the_feed(gateway):
    """pending → errored when the first fetch gives up; errored → active when data arrives after all;
    active → stopped once sync_until has passed (data stays readable)."""
    client, gw = gateway
    _registration, tokens, grant_id, _row = _consented_grant(client, gw)
    now = datetime.now(UTC)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        assert lifecycle.first_fetch_failed(session, grant, urls=gw.urls, box=gw.box, now=now, error="boom")
        assert grant.status == "errored" and grant.eta is None
        assert not lifecycle.first_fetch_failed(session, grant, urls=gw.urls, box=gw.box, now=now, error="again")
        assert lifecycle.keeps_syncing(grant, now)  # a later BatchList is still acted on
        assert lifecycle.activate(session, grant, urls=gw.urls, box=gw.box, now=now)
        assert not lifecycle.sync_ended(session, grant, urls=gw.urls, box=gw.box, now=now)
        grant.authorization_details = [{**d, "sync_until": (now - timedelta(days=1)).isoformat()}
                                       for d in grant.authorization_details]
        assert lifecycle.sync_ended(session, grant, urls=gw.urls, box=gw.box, now=now)
        assert grant.status == "stopped" and grant.enabled_scope
    answer = client.get("/cds-api/v1/usage-segments", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert answer.status_code == 200  # stopped: existing data is still accessible


DEAD_END = """
[[custodians]]
id = "dc"
name = "Example Utility"
resource_url = "http://127.0.0.1:9/espi/1_1/resource"
authorize_url = "http://127.0.0.1:9/oauth/authorize"
token_url = "http://127.0.0.1:9/oauth/token"
client_id = "tp"
client_secret = "tp-secret"
hosts = ["127.0.0.1"]
"""


def test_first_fetch_giving_up_marks_the_grant_errored(tmp_path, database_url):
    """A first fetch that exhausts its attempts (the custodian refuses connections) ends ``dead`` and its
    Grant ``errored``, in the same transaction (workers.tasks on_dead)."""
    from workers.tasks import execute

    local = make_config(tmp_path, database_url)
    config = make_config(tmp_path, database_url, extra_toml=DEAD_END)
    with gateway_client(local) as local_client, gateway_client(config) as client:
        client.local = local_client
        gw = client.app.state.gateway
        resource = "http://127.0.0.1:9/espi/1_1/resource"
        registration = register(client.local)
        (grant_id,) = consent_flow(client.local, registration)["cds_grant_ids"]
        with gw.sessions() as session, session.begin():
            grant = session.get(Grant, grant_id)
            grant.status, grant.enabled_scope = "pending", ""
            row = upstream.bind(session, gw.box, grant_id=grant_id, custodian_id="dc", customer_id=grant.customer_id,
                                scope="FB=4_5", tokens=CustodianTokens(
                                    access_token="at", resource_uri=f"{resource}/Batch/Subscription/5",
                                    authorization_uri=f"{resource}/Authorization/9"))
            job = jobs.enqueue(session, "fetch_subscription", {"custodian_id": "dc", "upstream_id": row.id},
                               "first-fetch:test", queue="http", max_attempts=1)
            job_id = job.job_id
        outcome = execute(config, job_id)
        assert outcome is not None and outcome.state == jobs.DEAD
        with gw.sessions() as session:
            assert jobs.get(session, job_id).state == jobs.DEAD
            assert session.get(Grant, grant_id).status == "errored"


def test_custodian_errors_become_the_right_job_outcome():
    from espi.custodian_client import CustodianError, ForeignURLError
    from workers.upstream import _failure

    assert isinstance(_failure(ForeignURLError("not ours"), "GET"), jobs.PermanentError)
    assert isinstance(_failure(CustodianError("forbidden", 403), "GET"), jobs.PermanentError)
    busy = _failure(CustodianError("busy", 503, "120"), "GET")
    assert isinstance(busy, jobs.RetryLater) and busy.retry_after == 120
    limited = _failure(CustodianError("slow down", 429), "GET")
    assert isinstance(limited, jobs.RetryLater) and limited.retry_after is None
    assert isinstance(_failure(CustodianError("connection refused"), "GET"), jobs.RetryLater)
    # by meaning (issue 12 item 6): 4xx but 408/429 refused for good, 405/501 "not offered", 5xx and no answer
    # transient; an OAuth error code is refused unless it says to come back later
    for status, transient in ((400, False), (404, False), (405, False), (408, True), (429, True), (500, True),
                              (501, False), (502, True), (503, True), (504, True)):
        error = CustodianError(f"answered {status}", status)
        assert error.transient is transient and error.not_supported is (status in (405, 501)), status
        assert isinstance(_failure(error, "DELETE"), jobs.RetryLater if transient else jobs.PermanentError)
    assert not CustodianError("token failed", oauth_error="invalid_client").transient
    assert CustodianError("token failed", oauth_error="temporarily_unavailable").transient
    assert not ForeignURLError("not ours").transient


def test_migration_0007_backfills_the_keys_the_application_computes(gateway):
    """An existing database (at 0006, rows without lookup keys) upgrades to head with each row's keys equal to what
    bridge.upstream computes: the migration keeps its own frozen copy of the key functions (cds imports nothing of
    bridge), and this test notices if the two ever drift apart for the URIs stored today."""
    from alembic import command

    from cds.store.migrate import alembic_config, upgrade
    from cds.store.models import UpstreamAuthorization

    client, gw = gateway
    *_rest, row_id = _consented_grant(client, gw, subscription="77", authorization="12")
    engine = gw.engine
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0006")
    upgrade(engine)
    with gw.sessions() as session:
        row = session.get(UpstreamAuthorization, row_id)
        assert row.subscription_id == "77"
        assert {"resource_digest": row.resource_digest, "authorization_digest": row.authorization_digest,
                "subscription_id": row.subscription_id} == upstream.lookup_keys(row.resource_uri,
                                                                               row.authorization_uri)


def test_a_narrowed_grant_activates_as_partial_and_keeps_its_limits(gateway):
    """The consent hop enabled less than was requested (issue 12 item 1: its utility cannot provide part of it):
    the first data makes the Grant ``partial`` (WG1-02 §8.2), never widens what was enabled, and the feed of a
    partial Grant runs and stops like an active one's."""
    client, gw = gateway
    _registration, _tokens, grant_id, _row = _consented_grant(client, gw)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        narrowed = [{**entry, "include_meter_numbers": False} for entry in grant.authorization_details]
        assert narrowed != grant.authorization_details  # the local consent asked for meter numbers
        grant.enabled_scope, grant.enabled_authorization_details = grant.scope, narrowed
        assert lifecycle.activate(session, grant, urls=gw.urls, box=gw.box, now=T0)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        assert grant.status == "partial" and grant.eta is None
        assert grant.enabled_authorization_details == narrowed and grant.authorization_details != narrowed
        now = datetime.now(UTC)
        assert lifecycle.keeps_syncing(grant, now)
        grant.authorization_details = [{**d, "sync_until": (now - timedelta(days=1)).isoformat()}
                                       for d in grant.authorization_details]
        assert lifecycle.sync_ended(session, grant, urls=gw.urls, box=gw.box, now=now)
        assert grant.status == "stopped"
