"""Forged notifications naming another port of the custodian's host (issue 13 item 1, "done means"), end to end:
real redis-server, the sandbox custodian and the gateway under uvicorn, a real ``greenbridge worker``, and a
recording peer on another port of 127.0.0.1 (the sandbox's host) serving forged documents: an Authorization feed
revoking the customer's real authorization, a bulk and a subscription feed with other readings under the
customer's real subscription id, and a token endpoint.

Before issue 13 the URI check compared the host only: such a BatchList made the worker send a client token to that
port, the forged Authorization feed revoked the real Grant, and the forged bulk injected segments.
"""

from __future__ import annotations

from datetime import date, timedelta
from urllib.parse import urlsplit

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
from peer_listener import authorization_feed, listener, token_answer, usage_feed, xml

pytestmark = pytest.mark.slow
DAYS = 3
ATOM = {"Content-Type": "application/atom+xml"}


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    with start_bridge(tmp_path_factory.mktemp("forgery"), customers=1, days=DAYS, workers=1) as running:
        yield running


@pytest.fixture(scope="module")
def peer(tmp_path_factory):
    with listener(tmp_path_factory.mktemp("peer") / "peer.log") as running:
        yield running


def _batch_list(*uris: str) -> str:
    resources = "".join(f"<resources>{u.replace('&', '&amp;')}</resources>" for u in uris)
    return f'<BatchList xmlns="http://naesb.org/espi">{resources}</BatchList>'


def _upstream_row(bridge, grant_id):
    from bridge import upstream

    with bridge.sessions()() as session:
        (row,) = upstream.authorizations_of(session, grant_id)
        session.expunge(row)
    return row


def _jobs(bridge) -> dict[str, tuple[str, int]]:
    """Every job row: dedupe key → (state, generation)."""
    return {j.dedupe_key: (j.state, j.generation) for j in bridge.jobs()}


def test_forged_batchlists_naming_another_port_reach_nothing(bridge, peer):
    client = register(bridge.gateway)
    granted = consent(bridge, client)
    wait_grant(bridge, client, granted.grant_id, "active")
    bridge.wait_jobs_settled()
    row = _upstream_row(bridge, granted.grant_id)
    sandbox, elsewhere = urlsplit(bridge.sandbox), urlsplit(peer.url)
    assert sandbox.hostname == elsewhere.hostname and sandbox.port != elsewhere.port  # the custodian's host

    def there(uri: str) -> str:  # the same resource on the peer's port
        return uri.replace(f"{sandbox.hostname}:{sandbox.port}", f"{elsewhere.hostname}:{elsewhere.port}", 1)

    resource = f"{bridge.sandbox}/espi/1_1/resource"
    subscription_id = row.resource_uri.rstrip("/").rsplit("/", 1)[1]
    forged_data = usage_feed(there(resource), subscription_id, date.today() - timedelta(days=30), days=2)
    peer.answer({
        "/oauth/token": token_answer(),
        urlsplit(row.authorization_uri).path: xml(authorization_feed((row.authorization_uri,
                                                                      row.authorization_uri, 0))),
        "/espi/1_1/resource/Authorization": xml(authorization_feed((row.authorization_uri,
                                                                    row.authorization_uri, 0))),
        "/espi/1_1/resource/Batch/Bulk/1": xml(forged_data),
        urlsplit(row.resource_uri).path: xml(forged_data),
    })
    forged = {
        "subscription": there(row.resource_uri),
        "subscription window": there(row.resource_uri) + "?published-min=2025-01-01T00:00:00Z",
        "bulk": there(f"{resource}/Batch/Bulk/1"),
        "authorization": there(row.authorization_uri),
        "authorizations": there(f"{resource}/Authorization"),
        "application information": there(f"{resource}/ApplicationInformation/1"),
        "sftp bulk": f"sftp://{elsewhere.hostname}:{elsewhere.port}/espi/1_1/resource/Batch/Bulk/1.xml",
    }
    peer.prove_it_listens()
    jobs_before = _jobs(bridge)
    data_before = segment_totals(usage_segments(bridge, granted.access_token))
    assert data_before == source_totals(1, DAYS, generate_start(DAYS))

    for path in ("/espi/1_1/Notification", "/custodians/sandbox/notify"):
        for kind, uri in forged.items():
            answer = httpx2.post(bridge.gateway + path, content=_batch_list(uri), headers=ATOM, timeout=30)
            assert answer.status_code == 200, (path, kind, answer.text)
        answer = httpx2.post(bridge.gateway + path, content=_batch_list(*forged.values()), headers=ATOM, timeout=30)
        assert answer.status_code == 200
    assert _jobs(bridge) == jobs_before  # no job made, none asked again

    # a genuine notification afterwards is fetched: the worker has run everything queued before it
    answer = httpx2.post(f"{bridge.gateway}/custodians/sandbox/notify", content=_batch_list(row.resource_uri),
                         headers=ATOM, timeout=30)
    assert answer.status_code == 200
    settled = bridge.wait_jobs_settled(expect=lambda jobs: any(
        j.payload.get("uri") == row.resource_uri and j.generation > jobs_before.get(j.dedupe_key, ("", 0))[1]
        for j in jobs if "upstream_id" not in j.payload))
    assert not [j for j in settled if elsewhere.netloc in str(j.payload)]
    assert {j.state for j in settled} == {"done"}

    assert peer.requests() == []  # no token, no GET, nothing at all reached the other port
    assert wait_grant(bridge, client, granted.grant_id, "active")["status"] == "active"
    assert _upstream_row(bridge, granted.grant_id).revoked is None
    assert segment_totals(usage_segments(bridge, granted.access_token)) == data_before
    log = bridge.gateway_log.read_text()
    assert f"origin http://{elsewhere.hostname}:{elsewhere.port} is not the custodian's" in log
    assert "URI(s) refused:" in log and "published-min" not in log.split("URI(s) refused:", 1)[1].split("\n")[0]


def test_stored_jobs_naming_another_port_die_in_the_worker_without_a_request(bridge, peer):
    """Rows made before the check existed (or by a configuration that changed since) are checked by the worker
    before it asks for a token or connects: each ends dead, and the peer hears nothing."""
    from celery import Celery

    from workers import jobs

    client = register(bridge.gateway)
    granted = consent(bridge, client, customer_index=0)
    wait_grant(bridge, client, granted.grant_id, "active")
    bridge.wait_jobs_settled()
    row = _upstream_row(bridge, granted.grant_id)
    elsewhere = f"{peer.url}/espi/1_1/resource"
    peer.prove_it_listens()
    made = []
    with bridge.sessions()() as session, session.begin():
        for kind, uri, extra in (("fetch_subscription", f"{elsewhere}/Batch/Subscription/1", {}),
                                 ("fetch_subscription", f"{elsewhere}/Batch/Subscription/1", {"upstream_id": row.id}),
                                 ("fetch_bulk", f"{elsewhere}/Batch/Bulk/1", {}),
                                 ("sync_authorization", f"{elsewhere}/Authorization/1", {}),
                                 ("sync_application_information", f"{elsewhere}/ApplicationInformation/1", {})):
            job = jobs.enqueue(session, kind, {"custodian_id": "sandbox", "uri": uri, **extra},
                               f"forged:{kind}:{extra}", queue="http")
            made.append((job.job_id, job.queue))
    app = Celery("forgery-test", broker=bridge.redis_url, set_as_current=False)
    for job_id, queue in made:
        app.send_task("gb.run_job", args=(job_id,), queue=queue)
    ids = {job_id for job_id, _queue in made}
    settled = bridge.wait_jobs_settled(expect=lambda found: all(j.state == "dead" for j in found
                                                                 if j.job_id in ids))
    for job in settled:
        if job.job_id in ids:
            assert "is not one of custodian sandbox's resources" in job.last_error, job.last_error
    assert peer.requests() == []
    assert wait_grant(bridge, client, granted.grant_id, "active")["status"] == "active"
