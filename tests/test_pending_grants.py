"""CDS-WG1-02 §8.2: ``pending`` is "valid, still processing… Data MUST be served as it becomes available" (issue 12,
item 4). Tokens of a pending Grant introspect active, refresh, and read what has arrived; the ``eta`` follows the
first fetch; the statuses that remove access still remove it at once.

The first tests run the gateway in-process on SQLite and PostgreSQL (``database_url``); the last ones run the whole
bridge (sandbox, uvicorn gateway, Redis, ``greenbridge worker``) and speak HTTP only, as a CDS client would.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

import httpx2
import pytest
from bridge_stack import (
    approve_at_gateway,
    at_sandbox,
    consent,
    generate_start,
    grant,
    push,
    register,
    segment_totals,
    source_totals,
    start_bridge,
    usage_segments,
    wait_grant,
)
from gateway_helpers import bearer, consent_flow, continue_to_client, gateway_client, make_config
from gateway_helpers import register as register_in_process
from sqlalchemy import select

from bridge import lifecycle, upstream
from cds.consent import approve
from cds.grants import NO_ACCESS, STATUSES
from cds.store.models import Client, Grant, Job, Token
from espi.custodian_client import CustodianTokens
from workers import jobs

API = "/cds-api/v1"
# A custodian nobody listens on: its fetches fail with a refused connection (a transient error).
DEAD_RESOURCE = "http://127.0.0.1:9/espi/1_1/resource"
DEAD_END = f"""
[[custodians]]
id = "dc"
name = "Example Utility"
resource_url = "{DEAD_RESOURCE}"
authorize_url = "http://127.0.0.1:9/oauth/authorize"
token_url = "http://127.0.0.1:9/oauth/token"
client_id = "tp"
client_secret = "tp-secret"
hosts = ["127.0.0.1"]
"""


@pytest.fixture
def gateway(tmp_path, database_url):
    """The gateway with custodian ``dc`` (dead), and (as ``.local``) one without custodians on the same store and
    key, whose local consent flow makes Grants without the upstream hop; and the configuration (for the workers)."""
    local = make_config(tmp_path, database_url, segment_history="P20Y")
    config = make_config(tmp_path, database_url, extra_toml=DEAD_END, segment_history="P20Y")
    with gateway_client(local) as local_client, gateway_client(config) as client:
        client.local = local_client
        client.config = config
        yield client, client.app.state.gateway


def _pending_grant(client, gw, *, details=None):
    """A Grant as the consent hop leaves it: the local consent flow's Grant (and tokens) authorized again through
    the custodian hop's own step (:func:`cds.consent.approve` with an ``eta``, as its callback does for a
    ``cds_grant_id``), so ``pending``, and bound to an upstream authorization of custodian ``dc``. Returns
    (registration, token response, grant id, upstream row id)."""
    registration = register_in_process(client.local)
    tokens = consent_flow(client.local, registration, authorization_details=details)
    (grant_id,) = tokens["cds_grant_ids"]
    now = datetime.now(UTC).replace(microsecond=0)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        approve(session, session.get(Client, grant.client_id), scope=grant.scope,
                authorization_details=list(grant.authorization_details), customer_id=grant.customer_id,
                state="again", grant_id=grant_id, descriptions=gw.descriptions, box=gw.box, now=now,
                eta=now + upstream.PENDING_ETA)
        assert grant.status == "pending"
        row = upstream.bind(session, gw.box, grant_id=grant_id, custodian_id="dc", customer_id=grant.customer_id,
                            scope="FB=4_5", tokens=CustodianTokens(
                                access_token="at", refresh_token="rt",
                                resource_uri=f"{DEAD_RESOURCE}/Batch/Subscription/5",
                                authorization_uri=f"{DEAD_RESOURCE}/Authorization/9"))
        row_id = row.id
    return registration, tokens, grant_id, row_id


def _introspect(client, registration, token: str) -> dict:
    answer = client.post("/oauth/introspect", data={"token": token}, auth=registration.admin_auth)
    assert answer.status_code == 200, answer.text
    return answer.json()


def _refresh(client, registration, refresh_token: str):
    return client.post("/oauth/token", auth=registration.auth_for("cds_usage_1"),
                       data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def _grant_view(client, registration, grant_id: str) -> dict:
    admin = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_client_admin"},
                        auth=registration.admin_auth).json()["access_token"]
    answer = client.get(f"{API}/grants/{grant_id}", headers=bearer(admin))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _segments(client, access_token: str) -> list[dict]:
    answer = client.get(f"{API}/usage-segments", headers=bearer(access_token))
    assert answer.status_code == 200, answer.text
    body = json.loads(answer.text, parse_float=Decimal)
    assert body["next"] is None  # one page is all these tests store
    return body["usage_segments"]


def test_a_pending_grant_introspects_active_refreshes_and_reads_what_has_arrived(gateway, tmp_path):
    from bridge.ingest import ingest_file
    from espi.generate import FeedSpec, write_feed

    client, gw = gateway
    registration, tokens, grant_id, _row = _pending_grant(client, gw, details=[
        {"type": "cds_usage_1", "segment_start": "2010-01-01T00:00:00Z"}])
    shown = _grant_view(client, registration, grant_id)
    assert shown["status"] == "pending" and shown["eta"] is not None
    assert shown["enabled_scope"] == shown["scope"] == "cds_usage_1"
    assert shown["enabled_authorization_details"] == shown["authorization_details"]

    for token in (tokens["access_token"], tokens["refresh_token"]):
        seen = _introspect(client, registration, token)
        assert seen["active"] is True and seen["cds_grant_ids"] == [grant_id] and seen["scope"] == "cds_usage_1"
    assert _segments(client, tokens["access_token"]) == []  # nothing has arrived yet: an empty list, not a 401

    refreshed = _refresh(client, registration, tokens["refresh_token"])
    assert refreshed.status_code == 200, refreshed.text
    second = refreshed.json()
    assert second["refresh_token"] != tokens["refresh_token"]  # rotation as for any grant
    assert _introspect(client, registration, tokens["refresh_token"])["active"] is False
    assert _segments(client, second["access_token"]) == []

    # data lands for the customer (what a worker's fetch stores) while the Grant is still pending: it is served
    feed = tmp_path / "feed.xml"
    with feed.open("w") as out:
        totals = write_feed(out, FeedSpec(usage_points=1, days=2, start=date.today() - timedelta(days=10)))
    with gw.sessions() as session, session.begin():  # into the Grant's own data set, as the worker stores it
        grant = session.get(Grant, grant_id)
        ingest_file(session, feed, customer_id=grant.customer_id, data_set=grant.data_set)
    expected = (sum(v[0] for (_, name), v in totals.series.items() if name == "electric_forward"),
                Decimal(sum(v[1] for (_, name), v in totals.series.items() if name == "electric_forward")) / 1000)
    assert expected[0] > 0
    for token in (tokens["access_token"], second["access_token"]):
        assert segment_totals(_segments(client, token)) == expected
    assert _grant_view(client, registration, grant_id)["status"] == "pending"

    with gw.sessions() as session, session.begin():
        assert lifecycle.activate(session, session.get(Grant, grant_id), urls=gw.urls, box=gw.box,
                                  now=datetime.now(UTC))
    shown = _grant_view(client, registration, grant_id)
    assert shown["status"] == "active" and shown["eta"] is None
    assert shown["enabled_scope"] == "cds_usage_1" and shown["enabled_authorization_details"]
    third = _refresh(client, registration, second["refresh_token"])
    assert third.status_code == 200, third.text
    assert segment_totals(_segments(client, third.json()["access_token"])) == expected


def test_the_consent_hop_makes_a_new_grant_pending_with_what_was_approved_enabled(gateway):
    client, gw = gateway
    registration = register_in_process(client.local)
    now = datetime.now(UTC).replace(microsecond=0)
    details = [{"type": "cds_usage_1", "segment_start": "2020-01-01T00:00:00Z"}]
    with gw.sessions() as session, session.begin():
        row = session.get(Client, registration.client_for("cds_usage_1")["client_id"])
        made, _receipt = approve(session, row, scope="cds_usage_1", authorization_details=details,
                                 customer_id="dc:someone", state="s", grant_id=None, descriptions=gw.descriptions,
                                 box=gw.box, now=now, eta=now + upstream.PENDING_ETA)
        grant_id = made.grant_id
    shown = _grant_view(client, registration, grant_id)
    assert shown["status"] == "pending" and shown["eta"] == (now + upstream.PENDING_ETA).isoformat()[:19] + "Z"
    assert shown["enabled_scope"] == "cds_usage_1" and shown["enabled_authorization_details"] == details


def test_every_status_gives_or_removes_access_as_wg1_02_says(gateway):
    """§8.2: future, disabled, suspended, revoked, closed and expired remove all access, at once (the status alone,
    whatever the tokens' own flags); every other status, pending included, keeps the tokens working."""
    client, gw = gateway
    registration, tokens, grant_id, _row = _pending_grant(client, gw)
    refresh_token = tokens["refresh_token"]
    now = datetime.now(UTC)
    cases = [(status, {}) for status in STATUSES if status not in ("expired", "future")]
    cases += [("expired", {"not_after": now - timedelta(minutes=1)}),
              ("future", {"not_before": now + timedelta(days=1)})]
    for status, times in cases:
        with gw.sessions() as session, session.begin():
            grant = session.get(Grant, grant_id)
            grant.status = "active" if times else status
            grant.not_after, grant.not_before = times.get("not_after"), times.get("not_before")
        access = status not in NO_ACCESS
        assert _grant_view(client, registration, grant_id)["status"] == status
        assert _introspect(client, registration, tokens["access_token"])["active"] is access, status
        read = client.get(f"{API}/usage-segments", headers=bearer(tokens["access_token"]))
        if access:
            assert read.status_code == 200, (status, read.text)
        else:
            assert read.status_code in (401, 403) and status in read.json()["error_description"], (status, read.text)
        answer = _refresh(client, registration, refresh_token)
        if access:
            assert answer.status_code == 200, (status, answer.text)
            refresh_token = answer.json()["refresh_token"]
        else:
            assert answer.status_code == 400 and answer.json()["error"] == "invalid_grant", (status, answer.text)


def test_revoking_or_closing_a_pending_grant_ends_its_tokens_at_once(gateway):
    client, gw = gateway
    registration, tokens, grant_id, _row = _pending_grant(client, gw)
    assert _introspect(client, registration, tokens["access_token"])["active"] is True
    admin = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_client_admin"},
                        auth=registration.admin_auth).json()["access_token"]
    closed = client.patch(f"{API}/grants/{grant_id}", json={"status": "closed"}, headers=bearer(admin))
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed" and closed.json()["eta"] is None  # an estimate only while pending
    assert _introspect(client, registration, tokens["access_token"])["active"] is False
    assert client.get(f"{API}/usage-segments", headers=bearer(tokens["access_token"])).status_code in (401, 403)
    assert _refresh(client, registration, tokens["refresh_token"]).json()["error"] == "invalid_grant"

    # the custodian revokes the Authorization of another pending Grant (a BatchList naming it, read as revoked)
    registration, tokens, grant_id, row_id = _pending_grant(client, gw)
    with gw.sessions() as session, session.begin():
        row = session.get(upstream.UpstreamAuthorization, row_id)
        assert lifecycle.revoke_from_upstream(session, row, urls=gw.urls, box=gw.box, now=datetime.now(UTC),
                                              why="revoked at the custodian")
    assert _introspect(client, registration, tokens["access_token"])["active"] is False
    assert client.get(f"{API}/usage-segments", headers=bearer(tokens["access_token"])).status_code in (401, 403)
    assert _refresh(client, registration, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert _grant_view(client, registration, grant_id)["eta"] is None


def test_the_eta_follows_the_retries_of_the_first_fetch(gateway):
    """The custodian refuses connections: each failed run of the first fetch moves the pending Grant's ``eta`` to the
    job's next attempt; a notification's fetch (not the first) leaves it alone; giving up clears it (``errored``)."""
    from workers.tasks import execute

    client, gw = gateway
    registration, _tokens, grant_id, row_id = _pending_grant(client, gw)
    with gw.sessions() as session, session.begin():
        consent_eta = session.get(Grant, grant_id).eta
        job = lifecycle.first_fetch(session, session.get(upstream.UpstreamAuthorization, row_id), datetime.now(UTC))
        job.max_attempts = 2
        first_id = job.job_id
        other = jobs.enqueue(session, "fetch_subscription", {"custodian_id": "dc",
                                                             "uri": f"{DEAD_RESOURCE}/Batch/Subscription/5"},
                             "notification:test", queue="http", max_attempts=1)
        other_id = other.job_id

    outcome = execute(client.config, first_id)
    assert outcome is not None and outcome.state == jobs.FAILED
    with gw.sessions() as session:
        retry_at = jobs.get(session, first_id).run_after
        eta = session.get(Grant, grant_id).eta
    assert eta != consent_eta and eta >= retry_at and eta - retry_at < timedelta(seconds=1) and eta.microsecond == 0
    shown = _grant_view(client, registration, grant_id)
    assert shown["status"] == "pending" and shown["eta"] == eta.isoformat().replace("+00:00", "Z")

    # a notification's fetch only asks the authorization's own fetch job again (it keeps its retry): the eta stays
    assert execute(client.config, other_id).state == jobs.DONE
    with gw.sessions() as session:
        assert session.get(Grant, grant_id).eta == eta

    with gw.sessions() as session, session.begin():  # the retry is due now
        session.get(Job, first_id).run_after = datetime.now(UTC) - timedelta(seconds=1)
    assert execute(client.config, first_id).state == jobs.DEAD
    shown = _grant_view(client, registration, grant_id)
    assert shown["status"] == "errored" and shown["eta"] is None


def test_needs_authorization_clears_the_eta(gateway):
    client, gw = gateway
    registration, tokens, grant_id, _row = _pending_grant(client, gw)
    with gw.sessions() as session, session.begin():
        assert lifecycle.needs_authorization(session, session.get(Grant, grant_id), urls=gw.urls, box=gw.box,
                                             now=datetime.now(UTC), why="refresh token refused")
    with gw.sessions() as session:
        assert session.get(Grant, grant_id).eta is None
    shown = _grant_view(client, registration, grant_id)
    assert shown["status"] == "needs_authorization" and shown["enabled_scope"] == "cds_usage_1"
    assert _introspect(client, registration, tokens["access_token"])["active"] is True  # stored data stays readable


def test_a_grant_made_pending_with_nothing_enabled_is_enabled_when_its_data_arrives(gateway):
    """Grants the consent hop made before issue 12 (pending, nothing enabled) get what was approved on activation;
    one made now keeps what was enabled at consent."""
    client, gw = gateway
    _registration, tokens, grant_id, _row = _pending_grant(client, gw)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        grant.enabled_scope, grant.enabled_authorization_details = "", []
    assert client.get(f"{API}/usage-segments", headers=bearer(tokens["access_token"])).status_code in (401, 403)
    with gw.sessions() as session, session.begin():
        grant = session.get(Grant, grant_id)
        assert lifecycle.activate(session, grant, urls=gw.urls, box=gw.box, now=datetime.now(UTC))
        assert grant.enabled_scope == grant.scope and grant.enabled_authorization_details == \
            grant.authorization_details
    assert client.get(f"{API}/usage-segments", headers=bearer(tokens["access_token"])).status_code == 200
    with gw.sessions() as session:
        assert all(not t.access_revoked for t in session.scalars(select(Token).where(Token.grant_id == grant_id)))


# ------------------------------------------------------------------------------------- the whole bridge, HTTP only

DAYS = 3


def _introspect_http(bridge, client, token: str) -> dict:
    answer = httpx2.post(f"{bridge.gateway}/oauth/introspect", data={"token": token}, timeout=30,
                         auth=(client.client_id, client.secret))
    assert answer.status_code == 200, answer.text
    return answer.json()


def _refresh_http(bridge, client, refresh_token: str) -> httpx2.Response:
    return httpx2.post(f"{bridge.gateway}/oauth/token", auth=(client.client_id, client.secret), timeout=30,
                       data={"grant_type": "refresh_token", "refresh_token": refresh_token})


def _consent_with_tokens(bridge, client) -> dict:
    """Both consent hops and the code exchange, as bridge_stack.consent, keeping the whole token response (with
    the refresh token) and the grant id."""
    authorize_url, verifier = push(bridge.gateway, client)
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    answer = approve_at_gateway(browser, authorize_url)
    assert answer.status_code == 303, answer.text
    approved = browser.get(at_sandbox(browser, bridge.sandbox, answer.headers["location"]))
    answer = continue_to_client(browser, approved)  # after the receipt's link (issue 14 item 6)
    landed = answer.headers["location"]
    tokens = httpx2.post(f"{bridge.gateway}/oauth/token", auth=(client.client_id, client.secret), timeout=30, data={
        "grant_type": "authorization_code", "code": parse_qs(urlsplit(landed).query)["code"][0],
        "redirect_uri": client.redirect_uri, "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body.get("refresh_token"), body
    (body["grant_id"],) = body["cds_grant_ids"]
    return body


def _deferred_fetch(bridge, timeout: float = 60.0) -> Job:
    """The fetch_subscription job once it is deferred (its run answered 202)."""
    deadline = time.monotonic() + timeout
    while True:
        found = [j for j in bridge.jobs() if j.kind == "fetch_subscription" and j.state == "deferred"]
        if found:
            return found[0]
        assert time.monotonic() < deadline, f"no deferred fetch: {[(j.kind, j.state) for j in bridge.jobs()]}\n" \
                                            f"{bridge.logs()}"
        time.sleep(0.2)


@pytest.mark.slow
def test_a_client_uses_its_token_before_the_grant_turns_active_and_after(tmp_path):
    """A spec-following client uses its tokens at once: while no worker runs the Grant is pending, the token
    introspects active, reads empty lists and refreshes; once a worker has fetched the data the same token family
    reads it, exactly; closing the Grant ends the family at once."""
    with start_bridge(tmp_path / "pending", days=DAYS, workers=0) as bridge:
        client = register(bridge.gateway)
        granted = _consent_with_tokens(bridge, client)
        shown = grant(bridge, client, granted["grant_id"])
        assert shown["status"] == "pending" and shown["eta"] is not None
        assert shown["enabled_scope"] == "cds_usage_1" and shown["enabled_authorization_details"] == \
            shown["authorization_details"]
        seen = _introspect_http(bridge, client, granted["access_token"])
        assert seen["active"] is True and seen["cds_grant_ids"] == [granted["grant_id"]]
        assert usage_segments(bridge, granted["access_token"]) == []
        refreshed = _refresh_http(bridge, client, granted["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        family = refreshed.json()
        assert usage_segments(bridge, family["access_token"]) == []

        bridge.start_worker()
        active = wait_grant(bridge, client, granted["grant_id"], "active", timeout=90)
        assert active["eta"] is None and active["enabled_scope"] == "cds_usage_1"
        expected = source_totals(1, DAYS, generate_start(DAYS))
        assert segment_totals(usage_segments(bridge, family["access_token"])) == expected
        assert segment_totals(usage_segments(bridge, granted["access_token"])) == expected
        again = _refresh_http(bridge, client, family["refresh_token"])
        assert again.status_code == 200, again.text
        assert segment_totals(usage_segments(bridge, again.json()["access_token"])) == expected

        closed = httpx2.patch(f"{bridge.gateway}/cds-api/v1/grants/{granted['grant_id']}", json={"status": "closed"},
                              headers={"Authorization": f"Bearer {client.admin_token}"}, timeout=30)
        assert closed.status_code == 200, closed.text
        assert _introspect_http(bridge, client, again.json()["access_token"])["active"] is False
        denied = httpx2.get(f"{bridge.gateway}/cds-api/v1/usage-segments", timeout=30,
                            headers={"Authorization": f"Bearer {again.json()['access_token']}"})
        assert denied.status_code in (401, 403), denied.text
        assert _refresh_http(bridge, client, again.json()["refresh_token"]).json()["error"] == "invalid_grant"


@pytest.mark.slow
def test_a_deferred_first_fetch_moves_the_eta_to_its_next_poll(tmp_path):
    """The custodian answers the first fetch 202 and its BatchList never arrives (a dead notify URI): the pending
    Grant's ``eta`` becomes the job's polling time (30 minutes, not the consent's hour) and its token reads an empty
    list; a BatchList naming the subscription then brings the data, and the Grant turns active without an eta."""
    with start_bridge(tmp_path / "deferred", days=2, workers=1,
                      sandbox_env={"GREENBRIDGE_SANDBOX_DEFER": "1",
                                   "GREENBRIDGE_SANDBOX_NOTIFY_URI": "http://127.0.0.1:9/nowhere"},
                      gateway_env={"GREENBRIDGE_DEFERRED_TIMEOUT_SECONDS": "1800"}) as bridge:
        client = register(bridge.gateway)
        granted = consent(bridge, client)
        job = _deferred_fetch(bridge)
        shown = grant(bridge, client, granted.grant_id)
        assert shown["status"] == "pending"
        eta = datetime.fromisoformat(shown["eta"].replace("Z", "+00:00"))
        assert eta == job.run_after.replace(microsecond=0) + timedelta(seconds=1 if job.run_after.microsecond else 0)
        assert timedelta(minutes=25) < eta - job.created < timedelta(minutes=35)
        assert usage_segments(bridge, granted.access_token) == []

        # the sandbox holds the data back DEFER seconds, then tries to notify (a dead URI): ready from then on
        deadline = time.monotonic() + 60
        while not any(n["reason"] == "deferred request ready" and n["attempts"] >= 1 for n in
                      httpx2.get(f"{bridge.sandbox}/sandbox.json", timeout=30).json()["notifications"]):
            assert time.monotonic() < deadline, "the sandbox never made the deferred request ready"
            time.sleep(0.2)
        uri = job.payload["requested"]
        answer = httpx2.post(f"{bridge.gateway}/custodians/sandbox/notify", timeout=30,
                             content=f'<BatchList xmlns="http://naesb.org/espi"><resources>{escape(uri)}</resources>'
                                     "</BatchList>", headers={"Content-Type": "application/atom+xml"})
        assert answer.status_code == 200, answer.text
        active = wait_grant(bridge, client, granted.grant_id, "active", timeout=90)
        assert active["eta"] is None
        assert segment_totals(usage_segments(bridge, granted.access_token)) == source_totals(1, 2, generate_start(2))
