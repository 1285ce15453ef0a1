"""The bridge in motion, end to end on 127.0.0.1 (issue 6): a real redis-server, the sandbox custodian and the
gateway under uvicorn, and real ``greenbridge worker`` processes; the test process speaks HTTP only.

(a) consent through both hops to CDS usage segments whose sums equal the source's; (b) a deferred 202 resumed by
the custodian's BatchList, and the polling fallback; (d) a notification naming a foreign host is refused and
nothing is fetched; (e) an upstream revocation revokes the CDS grant, and a CDS revocation revokes upstream.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import httpx2
import pytest
from bridge_stack import (
    consent,
    generate_start,
    register,
    segment_totals,
    source_totals,
    start_bridge,
    usage_segments,
    wait_grant,
)

pytestmark = pytest.mark.slow
DAYS = 4


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    with start_bridge(tmp_path_factory.mktemp("bridge"), customers=4, days=DAYS, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def client(bridge):
    return register(bridge.gateway)


def test_consent_to_usage_segments_equal_to_the_source(bridge, client):
    granted = consent(bridge, client, customer_index=0)
    active = wait_grant(bridge, client, granted.grant_id, "active")
    assert active["eta"] is None
    assert active["enabled_scope"] == "cds_usage_1" and active["enabled_authorization_details"]
    segments = usage_segments(bridge, granted.access_token)
    assert segments
    assert segment_totals(segments) == source_totals(1, DAYS, generate_start(DAYS))
    # one fetch (the first, queued by the consent callback, with this authorization's token), done; its download
    # removed after the commit
    (job,) = [j for j in bridge.jobs() if j.kind == "fetch_subscription"]
    assert job.state == "done" and job.attempts == 1 and job.dedupe_key.startswith("fetch:")
    assert job.payload["upstream_id"] == _upstream_row(bridge, granted.grant_id).id
    assert not list((bridge.directory / "var" / "downloads").glob("*.xml*"))


def test_notification_brings_new_data_with_a_refreshed_token(bridge, client):
    """The customer's data grows at the custodian, which POSTs a BatchList naming the subscription (the plain URI,
    the same one the first fetch got); the worker finds the access token expired, refreshes it (the rotated tokens
    are stored, encrypted) and fetches it again; the Grant's totals follow the source exactly."""
    from cds.store.models import UpstreamAuthorization

    granted = consent(bridge, client, customer_index=3)
    wait_grant(bridge, client, granted.grant_id, "active")
    row = _upstream_row(bridge, granted.grant_id)
    with bridge.sessions()() as session, session.begin():
        session.get(UpstreamAuthorization, row.id).expires_at = datetime.now(UTC) - timedelta(minutes=5)
    grown = httpx2.post(f"{bridge.sandbox}/sandbox/customers/{granted.customer}/advance", data={"days": 2},
                        timeout=30)
    assert grown.status_code == 200 and grown.json()["notified"], grown.text
    (notified,) = grown.json()["notified"]
    assert notified == row.resource_uri  # like real custodians: the same plain URI every time
    jobs = bridge.wait_jobs_settled(kinds={"fetch_subscription"}, expect=lambda jobs: any(
        j.payload.get("upstream_id") == row.id and j.generation == 2 for j in jobs))
    assert all(j.state == "done" for j in jobs)
    assert segment_totals(usage_segments(bridge, granted.access_token)) == \
        source_totals(4, DAYS + 2, generate_start(DAYS))
    refreshed = _upstream_row(bridge, granted.grant_id)
    assert refreshed.access_token_encrypted != row.access_token_encrypted
    assert refreshed.expires_at > datetime.now(UTC)


def _sandbox_authorizations(bridge) -> list[dict]:
    return httpx2.get(f"{bridge.sandbox}/sandbox.json", timeout=30).json()["authorizations"]


def _upstream_row(bridge, grant_id):
    from bridge import upstream

    with bridge.sessions()() as session:
        (row,) = upstream.authorizations_of(session, grant_id)
        session.expunge(row)
    return row


def test_upstream_revocation_revokes_the_cds_grant(bridge, client):
    granted = consent(bridge, client, customer_index=1)
    wait_grant(bridge, client, granted.grant_id, "active")
    assert usage_segments(bridge, granted.access_token)
    row = _upstream_row(bridge, granted.grant_id)
    authorization_id = row.authorization_uri.rstrip("/").rsplit("/", 1)[-1]
    # the customer revokes at the custodian; the sandbox POSTs a BatchList naming the Authorization
    answer = httpx2.post(f"{bridge.sandbox}/sandbox/authorizations/{authorization_id}/revoke", timeout=30)
    assert answer.status_code in (200, 303), answer.text
    revoked = wait_grant(bridge, client, granted.grant_id, "revoked")
    assert revoked["enabled_scope"] == "" and revoked["enabled_authorization_details"] == []
    denied = httpx2.get(f"{bridge.gateway}/cds-api/v1/usage-segments", timeout=30,
                        headers={"Authorization": f"Bearer {granted.access_token}"})
    assert denied.status_code in (401, 403), denied.text
    assert _upstream_row(bridge, granted.grant_id).revoked is not None
    sync = [j for j in bridge.jobs() if j.kind == "sync_authorization"]
    assert sync and all(j.state == "done" for j in sync)


def test_cds_side_end_revokes_upstream(bridge, client):
    """The CDS client closes the Grant (WG1-02 §8.7); the workers DELETE the custodian's Authorization."""
    granted = consent(bridge, client, customer_index=2)
    wait_grant(bridge, client, granted.grant_id, "active")
    row = _upstream_row(bridge, granted.grant_id)
    authorization_id = int(row.authorization_uri.rstrip("/").rsplit("/", 1)[-1])
    closed = httpx2.patch(f"{bridge.gateway}/cds-api/v1/grants/{granted.grant_id}", json={"status": "closed"},
                          headers={"Authorization": f"Bearer {client.admin_token}"}, timeout=30)
    assert closed.status_code == 200, closed.text
    assert closed.json()["status"] == "closed"
    deadline = time.monotonic() + 60
    while True:
        upstream = next(a for a in _sandbox_authorizations(bridge) if a["id"] == authorization_id)
        if upstream["status"] != 1:
            break
        assert time.monotonic() < deadline, f"still active upstream: {upstream}\n{bridge.logs()}"
        time.sleep(0.25)
    # the custodian's revocation BatchList comes back to us: the Grant stays closed, nothing else changes
    bridge.wait_jobs_settled(kinds={"revoke_upstream", "sync_authorization"},
                             expect=lambda jobs: any(j.kind == "sync_authorization" for j in jobs))
    assert _upstream_row(bridge, granted.grant_id).revoked is not None
    assert [j.state for j in bridge.jobs() if j.kind == "revoke_upstream"] == ["done"]
    from bridge_stack import grant

    assert grant(bridge, client, granted.grant_id)["status"] == "closed"


class _Trap(BaseHTTPRequestHandler):
    hits: ClassVar[list[str]] = []

    def do_GET(self):
        _Trap.hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_notification_naming_a_foreign_host_is_refused_and_nothing_fetched(bridge):
    trap = HTTPServer(("127.0.0.1", 0), _Trap)
    thread = threading.Thread(target=trap.serve_forever, daemon=True)
    thread.start()
    try:
        port = trap.server_address[1]
        before = len(bridge.jobs())
        foreign = [f"http://localhost:{port}/espi/1_1/resource/Batch/Subscription/1",
                   "https://evil.example/espi/1_1/resource/Batch/Subscription/1",
                   f"http://127.0.0.1:{port}/elsewhere/Batch/Subscription/1"]
        body = ("<BatchList xmlns=\"http://naesb.org/espi\">"
                + "".join(f"<resources>{uri}</resources>" for uri in foreign) + "</BatchList>")
        answer = httpx2.post(f"{bridge.gateway}/espi/1_1/Notification", content=body, timeout=30,
                             headers={"Content-Type": "application/atom+xml"})
        assert answer.status_code == 200
        time.sleep(2)  # long enough for a worker to have fetched, had a job been made
        assert len(bridge.jobs()) == before
        assert _Trap.hits == []
        log = (bridge.directory / "gateway.log").read_text()
        # one aggregated line per POST (issue 13 item 2), counts by reason and the first URIs
        assert "3 URI(s) refused: no configured custodian owns this URI (3)" in log and "evil.example" in log
    finally:
        trap.shutdown()
        trap.server_close()


def test_deferred_answer_resumed_by_the_batchlist(tmp_path):
    """The sandbox answers 202 and POSTs the BatchList two seconds later; the waiting job resumes and the data
    arrives (the deferred timeout is an hour: only the notification can have resumed it)."""
    with start_bridge(tmp_path / "deferred", days=2, sandbox_env={"GREENBRIDGE_SANDBOX_DEFER": "2"},
                      gateway_env={"GREENBRIDGE_DEFERRED_TIMEOUT_SECONDS": "3600"}) as bridge:
        client = register(bridge.gateway)
        granted = consent(bridge, client)
        wait_grant(bridge, client, granted.grant_id, "active", timeout=60)
        (job,) = [j for j in bridge.jobs() if j.kind == "fetch_subscription"]
        assert job.state == "done" and job.attempts == 2  # the 202, then the resumed fetch
        assert job.payload["requested"].endswith(job.payload["uri"].rsplit("/", 1)[-1])
        assert segment_totals(usage_segments(bridge, granted.access_token)) == source_totals(1, 2, generate_start(2))
        notified = httpx2.get(f"{bridge.sandbox}/sandbox.json", timeout=30).json()["notifications"]
        assert any(n["reason"] == "deferred request ready" and n["status"] == "delivered" for n in notified)


def test_deferred_answer_falls_back_to_polling(tmp_path):
    """The custodian's BatchList never reaches us (its notify URI is dead): after the deferred timeout the job
    polls again and gets the data."""
    with start_bridge(tmp_path / "polling", days=2,
                      sandbox_env={"GREENBRIDGE_SANDBOX_DEFER": "1",
                                   "GREENBRIDGE_SANDBOX_NOTIFY_URI": "http://127.0.0.1:9/nowhere"},
                      gateway_env={"GREENBRIDGE_DEFERRED_TIMEOUT_SECONDS": "3"}) as bridge:
        client = register(bridge.gateway)
        granted = consent(bridge, client)
        started = time.monotonic()
        wait_grant(bridge, client, granted.grant_id, "active", timeout=60)
        assert time.monotonic() - started >= 2  # not before the timeout
        (job,) = [j for j in bridge.jobs() if j.kind == "fetch_subscription"]
        assert job.state == "done" and job.attempts == 2
        assert usage_segments(bridge, granted.access_token)


def test_application_information_notification_is_read(bridge):
    """PSH001: the custodian changed our registration; the job reads it with the client token (nothing changes
    in the configuration, a withdrawn scope would be logged)."""
    uri = f"{bridge.sandbox}/espi/1_1/resource/ApplicationInformation/1"  # the sandbox's only registration
    body = f'<BatchList xmlns="http://naesb.org/espi"><resources>{uri}</resources></BatchList>'
    answer = httpx2.post(f"{bridge.gateway}/custodians/sandbox/notify", content=body, timeout=30,
                         headers={"Content-Type": "application/atom+xml"})
    assert answer.status_code == 200
    (job,) = bridge.wait_jobs_settled(kinds={"sync_application_information"},
                                      expect=lambda jobs: len(jobs) == 1)
    assert job.state == "done", job.last_error


def test_concurrent_refreshes_of_one_authorization_refresh_once(bridge, client):
    """Two runs holding the same expired token: the first refreshes (the sandbox rotates the refresh token), the
    second finds the new tokens and uses them instead of spending the rotated refresh token."""
    from bridge.config import load_config
    from workers import upstream as bridge_jobs

    granted = consent(bridge, client, customer_index=0)
    wait_grant(bridge, client, granted.grant_id, "active")
    row = _upstream_row(bridge, granted.grant_id)
    config = load_config(environ=bridge.env)
    ctx = bridge_jobs.context(config)
    from bridge import upstream

    stale = upstream.tokens_of(ctx.box, row).access_token
    custodian = ctx.custodian("sandbox")
    first = bridge_jobs.refresh(ctx, ctx.client(custodian), row.id, stale)
    second = bridge_jobs.refresh(ctx, ctx.client(custodian), row.id, stale)
    assert first != stale and second == first
    # and the rotated refresh token still works: a real refresh from the stored tokens succeeds
    third = bridge_jobs.refresh(ctx, ctx.client(custodian), row.id, first)
    assert third not in (stale, first)


def test_refused_refresh_token_asks_the_customer_to_authorize_again(bridge, client):
    """The custodian no longer honours the refresh token (invalid_grant): the fetch ends dead and the Grant
    ``needs_authorization`` (WG1-02 §8.2); the data already stored stays readable."""
    from cds.store.models import UpstreamAuthorization

    granted = consent(bridge, client, customer_index=1)
    wait_grant(bridge, client, granted.grant_id, "active")
    row = _upstream_row(bridge, granted.grant_id)
    from bridge.config import load_config
    from workers import upstream as bridge_jobs

    box = bridge_jobs.context(load_config(environ=bridge.env)).box
    with bridge.sessions()() as session, session.begin():
        stored = session.get(UpstreamAuthorization, row.id)
        stored.refresh_token_encrypted = box.encrypt("not-a-refresh-token-the-custodian-knows")
        stored.expires_at = datetime.now(UTC) - timedelta(minutes=5)
    uri = row.resource_uri
    answer = httpx2.post(f"{bridge.gateway}/custodians/sandbox/notify", timeout=30,
                         content=f'<BatchList xmlns="http://naesb.org/espi"><resources>{uri}</resources></BatchList>',
                         headers={"Content-Type": "application/atom+xml"})
    assert answer.status_code == 200
    waiting = wait_grant(bridge, client, granted.grant_id, "needs_authorization")
    assert waiting["enabled_scope"] == "cds_usage_1"
    # the notification's fan-out asked this authorization's fetch job (the first fetch's) for another run; the
    # Grant's change is committed by the refresh (in its own transaction) before the run records its outcome: wait
    # for the run to end
    settled = bridge.wait_jobs_settled(kinds={"fetch_subscription"})
    (job,) = [j for j in settled if j.payload.get("upstream_id") == row.id]
    assert job.state == "dead" and "refused the refresh token" in job.last_error and job.generation == 2
    assert usage_segments(bridge, granted.access_token)  # what was stored is still served
