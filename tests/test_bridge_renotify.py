"""Notifications every time, end to end (issue 12 item 2): real redis-server, the sandbox and the gateway under
uvicorn, real ``greenbridge worker`` processes; this process speaks HTTP to them and reads the jobs table.

Like real custodians, the sandbox names the same plain ``Batch/Subscription/{id}`` (or ``Batch/Bulk/{id}``,
``Authorization/{id}``) in every BatchList. Each one must bring what changed: the data that grew, the revocation
that came after an earlier Authorization notification. ``response_delay`` makes the sandbox hold its Batch answers
(built when the request came), so a BatchList can arrive while the previous fetch is still running.
"""

from __future__ import annotations

import time

import httpx2
import pytest
from bridge_stack import (
    BULK_SCOPE,
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
DAYS = 3
HOLD = 5  # seconds the sandbox holds a Batch answer: the window in which the next BatchList arrives


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    with start_bridge(tmp_path_factory.mktemp("renotify"), customers=2, days=DAYS, workers=1,
                      sandbox_env={"GREENBRIDGE_SANDBOX_RESPONSE_DELAY": str(HOLD)}) as running:
        yield running


@pytest.fixture(scope="module")
def client(bridge):
    return register(bridge.gateway)


def _row(bridge, grant_id):
    from bridge import upstream

    with bridge.sessions()() as session:
        (row,) = upstream.authorizations_of(session, grant_id)
        session.expunge(row)
    return row


def _fetch_job(bridge, row_id: int):
    (job,) = [j for j in bridge.jobs() if j.kind == "fetch_subscription" and j.payload.get("upstream_id") == row_id]
    return job


def _sandbox(bridge) -> dict:
    return httpx2.get(f"{bridge.sandbox}/sandbox.json", timeout=30).json()


def _grow(bridge, customer: str) -> list[str]:
    grown = httpx2.post(f"{bridge.sandbox}/sandbox/customers/{customer}/advance", data={"days": 1}, timeout=30)
    assert grown.status_code == 200, grown.text
    return grown.json()["notified"]


def _until(predicate, what: str, bridge, timeout: float = 90.0):
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s: "
                                 f"{[(j.kind, j.state, j.generation, j.last_error) for j in bridge.jobs()]}\n"
                                 f"{bridge.logs()}")
        time.sleep(0.1)


def _delivered(bridge, uri: str) -> int:
    return sum(1 for n in _sandbox(bridge)["notifications"] if n["resources"] == [uri] and n["status"] == "delivered")


def test_three_batchlists_naming_the_same_subscription_bring_all_the_data(bridge, client):
    granted = consent(bridge, client, customer_index=0)
    wait_grant(bridge, client, granted.grant_id, "active")
    row = _row(bridge, granted.grant_id)
    start = generate_start(DAYS)
    assert segment_totals(usage_segments(bridge, granted.access_token)) == source_totals(1, DAYS, start)

    # 1: the data grows; the BatchList names the plain subscription URI, the one the first fetch already got
    assert _grow(bridge, granted.customer) == [row.resource_uri]
    _until(lambda: (job := _fetch_job(bridge, row.id)).generation == 2 and job.state == "done", "second fetch",
           bridge)
    assert segment_totals(usage_segments(bridge, granted.access_token)) == source_totals(1, DAYS + 1, start)

    # 2: it grows again; the fetch starts and the sandbox holds its answer (built before what comes next) ...
    assert _grow(bridge, granted.customer) == [row.resource_uri]
    _until(lambda: _fetch_job(bridge, row.id).generation == 3 and _fetch_job(bridge, row.id).state == "running"
           and _sandbox(bridge)["held_responses"] > 0, "third fetch held by the custodian", bridge)
    # 3: ... while it grows a third time, and the third BatchList arrives during that fetch
    assert _grow(bridge, granted.customer) == [row.resource_uri]
    _until(lambda: _delivered(bridge, row.resource_uri) == 3, "third BatchList delivered", bridge)
    _until(lambda: (fan_out := _notification_job(bridge)).generation == 3 and fan_out.state == "done",
           "the third BatchList's fan-out", bridge)
    during = _fetch_job(bridge, row.id)
    assert (during.state, during.rerun, during.generation) == ("running", True, 3)  # one more run owed

    job = _until(lambda: (j := _fetch_job(bridge, row.id)).state == "done" and j.generation == 4 and j,
                 "the run after the running one", bridge)
    assert job.attempts == 4  # the first fetch and one run per BatchList: no run lost, none extra
    bridge.wait_jobs_settled()
    count, total = segment_totals(usage_segments(bridge, granted.access_token))
    assert (count, total) == source_totals(1, DAYS + 3, start)  # exact Decimal sum; same count: no duplicates
    fan_out = _notification_job(bridge)
    assert (fan_out.payload["uri"], fan_out.state, fan_out.generation) == (row.resource_uri, "done", 3)


def _notification_job(bridge):
    """The BatchLists' job for the subscription: it fans out to the authorizations' fetch jobs."""
    (job,) = [j for j in bridge.jobs() if j.kind == "fetch_subscription" and "upstream_id" not in j.payload]
    return job


def test_a_revocation_after_an_earlier_authorization_notification_is_acted_on(bridge, client):
    granted = consent(bridge, client, customer_index=1)
    wait_grant(bridge, client, granted.grant_id, "active")
    row = _row(bridge, granted.grant_id)
    # the custodian names the Authorization once while it is still active (some change that is not the end)
    body = f'<BatchList xmlns="http://naesb.org/espi"><resources>{row.authorization_uri}</resources></BatchList>'
    answer = httpx2.post(f"{bridge.gateway}/espi/1_1/Notification", content=body, timeout=30,
                         headers={"Content-Type": "application/atom+xml"})
    assert answer.status_code == 200
    (sync,) = bridge.wait_jobs_settled(kinds={"sync_authorization"}, expect=lambda jobs: len(jobs) == 1)
    assert sync.state == "done" and "active, 1 grant(s) unchanged" in sync.result
    assert wait_grant(bridge, client, granted.grant_id, "active")
    # later the customer revokes at the utility: the sandbox names the same Authorization URI again
    number = row.authorization_uri.rstrip("/").rsplit("/", 1)[1]
    assert httpx2.post(f"{bridge.sandbox}/sandbox/authorizations/{number}/revoke", timeout=30).status_code == 200
    revoked = wait_grant(bridge, client, granted.grant_id, "revoked")
    assert revoked["enabled_scope"] == ""
    (again,) = bridge.wait_jobs_settled(kinds={"sync_authorization"},
                                        expect=lambda jobs: jobs[0].generation == 2)
    assert again.job_id == sync.job_id and again.state == "done" and "revoked" in again.result
    denied = httpx2.get(f"{bridge.gateway}/cds-api/v1/usage-segments", timeout=30,
                        headers={"Authorization": f"Bearer {granted.access_token}"})
    assert denied.status_code in (401, 403)


def test_a_bulk_named_again_brings_the_new_data_again(tmp_path):
    """``Batch/Bulk/1`` in every BatchList (the BR= subscriptions' new data): each one is fetched, split and stored
    again, as parts of their own (keyed by the request), under the right Grants."""
    with start_bridge(tmp_path, scopes=(BULK_SCOPE,), customers=2, days=DAYS) as bridge:
        client = register(bridge.gateway)
        granted = [consent(bridge, client, customer_index=i) for i in range(2)]
        for one in granted:
            wait_grant(bridge, client, one.grant_id, "active")
        bulk_uri = f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/1"
        start = generate_start(DAYS)
        for round_ in (1, 2):
            for one in granted:
                assert _grow(bridge, one.customer) == [bulk_uri]
            jobs = bridge.wait_jobs_settled(expect=lambda jobs, n=round_: any(
                j.kind == "fetch_bulk" and j.generation >= 2 * n - 1 for j in jobs) and sum(
                j.kind == "ingest_bulk_part" for j in jobs) >= 2 * n)
            assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
            for number, one in enumerate(granted, start=1):
                assert segment_totals(usage_segments(bridge, one.access_token)) == \
                    source_totals(number, DAYS + round_, start), f"round {round_}, customer {number}"
        (bulk,) = [j for j in bridge.jobs() if j.kind == "fetch_bulk"]
        assert bulk.generation >= 2  # one job, asked again by each BatchList naming it
        var = bridge.directory / "var"
        assert not [p for p in (var / "bulk").rglob("*") if p.is_file()]
