"""Bulk deliveries end to end (issue 6 item 5): the sandbox writes a bulk feed into a real OpenSSH sshd's tree and
announces its sftp:// URI; the workers download it (paramiko, pinned host key, key authentication), split it per
subscription and store each customer's part under the right Grant. Then the same under failure: a worker killed
with SIGKILL in the middle of the bulk ingest, and Redis flushed in the middle of the run.

The data a bulk brings is new: the sandbox customers' data grows after consent (without notifications), so only
the bulk can deliver the extra days, and each Grant's totals must equal its own customer's source exactly.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid

import httpx2
import pytest
from bridge_stack import (
    BULK_SCOPE,
    USAGE_DETAILS,
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
GROWTH = 4


def _sftp_toml(sshd) -> str:
    return f"""
[custodians.sftp]
host = "127.0.0.1"
port = {sshd.port}
user = "{sshd.user}"
key_path = "{sshd.client_key_path}"
host_key = "{sshd.host_key_line}"
"""


@contextlib.contextmanager
def bulk_bridge(tmp_path, sshd, customers: int, **options):
    bulk_dir = sshd.root / f"bulk-{uuid.uuid4().hex[:8]}"
    bulk_dir.mkdir(mode=0o755)
    sandbox_env = {"GREENBRIDGE_SANDBOX_BULK_DIR": str(bulk_dir),
                   "GREENBRIDGE_SANDBOX_SFTP_URI": f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{bulk_dir}",
                   "GREENBRIDGE_SANDBOX_NOTIFY_ON_NEW_DATA": "false"}
    with start_bridge(tmp_path, scopes=(BULK_SCOPE,), sandbox_env=sandbox_env, custodian_toml=_sftp_toml(sshd),
                      customers=customers, days=DAYS, **options) as bridge:
        yield bridge


def _consent_all(bridge, customers: int):
    client = register(bridge.gateway)
    granted = [consent(bridge, client, customer_index=i) for i in range(customers)]
    for one in granted:
        wait_grant(bridge, client, one.grant_id, "active")
    return client, granted


def _grow_and_request_bulk(bridge, customers: int) -> None:
    """Every customer's data grows by GROWTH days (no notification); then the bulk is asked for: the sandbox
    writes the file into sshd's tree and POSTs the BatchList naming its sftp:// URI."""
    for number in range(1, customers + 1):
        grown = httpx2.post(f"{bridge.sandbox}/sandbox/customers/customer-{number}/advance", data={"days": GROWTH},
                            timeout=30)
        assert grown.status_code == 200, grown.text
        assert grown.json()["notified"] == []
    answer = httpx2.get(f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/1", timeout=60,
                        headers={"Authorization": f"Bearer {bridge.sandbox_client_token()}"})
    assert answer.status_code == 202, answer.text


def _assert_each_grant_holds_its_own_customer(bridge, granted, days: int) -> None:
    for number, one in enumerate(granted, start=1):
        expected = source_totals(number, days, generate_start(DAYS))
        assert segment_totals(usage_segments(bridge, one.access_token)) == expected, f"customer {number}"


def test_sftp_bulk_of_three_customers_lands_under_the_right_grants(tmp_path, sshd):
    with bulk_bridge(tmp_path, sshd, customers=3) as bridge:
        _client, granted = _consent_all(bridge, 3)
        _assert_each_grant_holds_its_own_customer(bridge, granted, DAYS)  # the first fetch, before the bulk
        _grow_and_request_bulk(bridge, 3)
        jobs = bridge.wait_jobs_settled(expect=lambda jobs: sum(j.kind == "ingest_bulk_part" for j in jobs) == 3)
        assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
        (bulk,) = [j for j in jobs if j.kind == "fetch_bulk"]
        assert bulk.queue == "sftp" and bulk.payload["uri"].startswith("sftp://")
        _assert_each_grant_holds_its_own_customer(bridge, granted, DAYS + GROWTH)
        # downloads and split parts are removed once stored
        var = bridge.directory / "var"
        assert not [p for p in (var / "downloads").rglob("*") if p.is_file()]
        assert not [p for p in (var / "bulk").rglob("*") if p.is_file()]


def _running(bridge, kind: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        running = [j for j in bridge.jobs() if j.kind == kind and j.state == "running"]
        if running:
            return running
        time.sleep(0.02)
    raise AssertionError(f"no {kind} job ran within {timeout} s: {[(j.kind, j.state) for j in bridge.jobs()]}")


def _settle_with_reconciler(bridge, expected_parts: int, timeout: float = 120.0):
    """The reconciler's job (beat runs it every minute): re-publish lost and expired-lease jobs until all done."""
    deadline = time.monotonic() + timeout
    while True:
        bridge.reconcile(stale_after=0)
        jobs = bridge.jobs()
        parts = [j for j in jobs if j.kind == "ingest_bulk_part"]
        if len(parts) == expected_parts and all(j.state in ("done", "dead") for j in jobs):
            return jobs
        assert time.monotonic() < deadline, f"{[(j.kind, j.state, j.last_error) for j in jobs]}\n{bridge.logs()}"
        time.sleep(1.0)


CUSTOMERS_UNDER_FAILURE = 6
LEASE = {"GREENBRIDGE_JOB_LEASE_SECONDS": "3"}


def test_worker_killed_mid_bulk_ingest_ends_exact(tmp_path, sshd):
    with bulk_bridge(tmp_path, sshd, customers=CUSTOMERS_UNDER_FAILURE, gateway_env=LEASE) as bridge:
        _client, granted = _consent_all(bridge, CUSTOMERS_UNDER_FAILURE)
        bridge.stop_workers()
        bridge.start_worker(concurrency=1)
        _grow_and_request_bulk(bridge, CUSTOMERS_UNDER_FAILURE)
        victim = _running(bridge, "ingest_bulk_part")[0]
        (worker,) = bridge.workers
        os.killpg(worker.pid, signal.SIGKILL)  # the worker and its pool: no chance to ack, requeue or record
        worker.wait()
        bridge.workers.clear()
        assert next(j for j in bridge.jobs() if j.job_id == victim.job_id).state == "running"
        bridge.start_worker(concurrency=2)
        jobs = _settle_with_reconciler(bridge, CUSTOMERS_UNDER_FAILURE)
        assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
        assert next(j for j in jobs if j.job_id == victim.job_id).attempts >= 2
        _assert_each_grant_holds_its_own_customer(bridge, granted, DAYS + GROWTH)


def test_redis_flushed_mid_run_ends_exact(tmp_path, sshd):
    import redis

    with bulk_bridge(tmp_path, sshd, customers=CUSTOMERS_UNDER_FAILURE, gateway_env=LEASE) as bridge:
        _client, granted = _consent_all(bridge, CUSTOMERS_UNDER_FAILURE)
        bridge.stop_workers()
        bridge.start_worker(concurrency=1)
        _grow_and_request_bulk(bridge, CUSTOMERS_UNDER_FAILURE)
        _running(bridge, "ingest_bulk_part")
        broker = redis.Redis(unix_socket_path=bridge.redis_url.split("://", 1)[1])
        assert broker.flushall()  # every queued and unacknowledged message is gone
        jobs = _settle_with_reconciler(bridge, CUSTOMERS_UNDER_FAILURE)
        assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
        _assert_each_grant_holds_its_own_customer(bridge, granted, DAYS + GROWTH)


def test_rest_bulk_fans_out_the_same_way(tmp_path):
    """FB_35: the BatchList names ``Batch/Bulk/1``; the workers GET it with the client token, split it and store
    each part under its Grant (no SFTP configured: the sandbox serves the bulk feed over REST). Customer 1's
    subscription is behind two authorization rows (a re-authorization): both ingest it, idempotently, from files of
    their own. Customer 3's authorization was revoked on our side before the bulk: its part is never stored."""
    from datetime import UTC, datetime

    from bridge import upstream
    from cds.store.models import UpstreamAuthorization

    with start_bridge(tmp_path, scopes=(BULK_SCOPE,), customers=3, days=DAYS,
                      sandbox_env={"GREENBRIDGE_SANDBOX_NOTIFY_ON_NEW_DATA": "false"}) as bridge:
        _client, granted = _consent_all(bridge, 3)
        with bridge.sessions()() as session, session.begin():
            (first,) = upstream.authorizations_of(session, granted[0].grant_id)
            again = upstream.link_imported(
                session, grant_id=first.grant_id, custodian_id=first.custodian_id, customer_id=first.customer_id,
                scope=first.scope, resource_uri=first.resource_uri,
                authorization_uri=first.authorization_uri + "-again", customer_resource_uri=None)
            (second,) = upstream.authorizations_of(session, granted[1].grant_id)
            (third,) = upstream.authorizations_of(session, granted[2].grant_id)
            expected_rows = sorted([first.id, again.id, second.id])
            session.get(UpstreamAuthorization, third.id).revoked = datetime.now(UTC)
        for number in range(1, 4):
            grown = httpx2.post(f"{bridge.sandbox}/sandbox/customers/customer-{number}/advance",
                                data={"days": GROWTH}, timeout=30)
            assert grown.status_code == 200, grown.text
        uri = f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/1"
        answer = httpx2.post(f"{bridge.gateway}/custodians/sandbox/notify", timeout=30,
                             content=f'<BatchList xmlns="http://naesb.org/espi"><resources>{uri}</resources></BatchList>',
                             headers={"Content-Type": "application/atom+xml"})
        assert answer.status_code == 200
        jobs = bridge.wait_jobs_settled(expect=lambda jobs: any(j.kind == "fetch_bulk" for j in jobs))
        assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
        (bulk,) = [j for j in jobs if j.kind == "fetch_bulk"]
        assert bulk.queue == "http"
        parts = [j for j in jobs if j.kind == "ingest_bulk_part"]
        assert sorted(j.payload["upstream_id"] for j in parts) == expected_rows  # not the revoked third
        assert len({j.payload["path"] for j in parts}) == 3  # one file each
        for number, one in enumerate(granted, start=1):
            days = DAYS + GROWTH if number < 3 else DAYS  # the revoked one kept what it had, got nothing new
            assert segment_totals(usage_segments(bridge, one.access_token)) == \
                source_totals(number, days, generate_start(DAYS)), f"customer {number}"
        var = bridge.directory / "var"
        assert not [p for p in (var / "bulk").rglob("*") if p.is_file()]  # unclaimed part included
        assert not [p for p in (var / "downloads").rglob("*") if p.is_file()]


def test_rest_bulk_below_the_customer_is_placed_by_usage_point_and_the_rest_reported(tmp_path):
    """A custodian whose hrefs sit below the customer (``…/RetailCustomer/{n}/UsagePoint/{u}/…``, no subscription:
    the sandbox's ``href_style = "retail_customer"``), whose token responses all name the customer, and whose bulk
    carries each of a customer's entries once. Customer 2 shared UsagePoint 1 with client A and UsagePoints 1 and
    2 with client B; customer 1 everything with client A; customer 3's authorization was revoked on our side, so
    the custodian's bulk still carries data nobody here may hold. Every grant gets exactly its UsagePoints' new
    days (Decimal sums against the generator), and customer 3's readings are counted in the job's result and
    warning, logged as a WARNING and shown by ``greenbridge jobs``."""
    import io
    import subprocess
    import sys
    from datetime import UTC, datetime

    from bridge_stack import REPO

    from bridge import upstream
    from cds.store.models import UpstreamAuthorization
    from espi.generate import write_feed
    from espi.scope import format_scope, parse_scope
    from sandbox.data import generated_spec

    # the sandbox's bulk scope plus gas (FB_10), so that client B may ask for its gas meter
    gas_bulk = format_scope(parse_scope("FB=1_3_4_5_10_13_14_35_37_39;IntervalDuration=900_86400;"
                                        "BlockDuration=daily;BR=1"))
    field_like = {"GREENBRIDGE_SANDBOX_NOTIFY_ON_NEW_DATA": "false",
                  "GREENBRIDGE_SANDBOX_HREF_STYLE": "retail_customer",
                  "GREENBRIDGE_SANDBOX_CUSTOMER_RESOURCE_URI": "always", "GREENBRIDGE_SANDBOX_SCOPES": gas_bulk}
    both = [{**USAGE_DETAILS[0], "include_usage_segment_value_types": ["electric_usage_forward", "natural_gas_usage"]}]
    with start_bridge(tmp_path, scopes=(gas_bulk,), customers=3, days=DAYS, sandbox_env=field_like) as bridge:
        client_a, client_b = register(bridge.gateway, "Client A"), register(bridge.gateway, "Client B")
        one = consent(bridge, client_a, customer_index=0)
        a = consent(bridge, client_a, customer_index=1, usage_points=["1"], details=both)
        b = consent(bridge, client_b, customer_index=1, usage_points=["1", "2"], details=both)
        three = consent(bridge, client_a, customer_index=2)
        for client, granted in ((client_a, one), (client_a, a), (client_b, b), (client_a, three)):
            wait_grant(bridge, client, granted.grant_id, "active")
        with bridge.sessions()() as session, session.begin():
            (row,) = upstream.authorizations_of(session, three.grant_id)
            session.get(UpstreamAuthorization, row.id).revoked = datetime.now(UTC)
        for number in range(1, 4):
            grown = httpx2.post(f"{bridge.sandbox}/sandbox/customers/customer-{number}/advance",
                                data={"days": GROWTH}, timeout=30)
            assert grown.status_code == 200, grown.text
        uri = f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/1"
        answer = httpx2.post(f"{bridge.gateway}/custodians/sandbox/notify", timeout=30,
                             content=f'<BatchList xmlns="http://naesb.org/espi"><resources>{uri}</resources></BatchList>',
                             headers={"Content-Type": "application/atom+xml"})
        assert answer.status_code == 200
        jobs = bridge.wait_jobs_settled(expect=lambda jobs: any(j.kind == "fetch_bulk" for j in jobs))
        assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
        (bulk,) = [j for j in jobs if j.kind == "fetch_bulk"]
        parts = [j for j in jobs if j.kind == "ingest_bulk_part"]
        assert len(parts) == 3 and all(j.payload["subscription_id"].startswith("authorization-") for j in parts)

        start = generate_start(DAYS)
        days = DAYS + GROWTH
        assert segment_totals(usage_segments(bridge, one.access_token)) == source_totals(1, days, start)
        electric = source_totals(2, days, start)  # customer 2 has one electric UsagePoint (1)
        gas = source_totals(2, days, start, "gas")
        for granted, with_gas in ((a, False), (b, True)):
            segments = usage_segments(bridge, granted.access_token)
            assert segment_totals(segments) == electric
            assert segment_totals(segments, "natural_gas_usage", None) == (
                (gas[0], gas[1]) if with_gas else (0, 0))  # therm × 10⁻³: raw / 1000, like kWh
        assert segment_totals(usage_segments(bridge, three.access_token)) == source_totals(3, DAYS, start)

        # customer 3's grown data was delivered but is nobody's here: counted to the reading, reported everywhere
        third = write_feed(io.StringIO(), generated_spec(3, days, start, "https://x.test/r")).readings
        assert bulk.result.endswith(f"({third} readings) not placed"), bulk.result
        assert bulk.warning is not None and f"({third} readings) placed in no part" in bulk.warning
        assert "no live authorization of its customer" in bulk.warning
        assert "done with a warning" in "".join(log.read_text() for log in bridge.worker_logs)
        env = {**os.environ, **bridge.env,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        shown = subprocess.run([sys.executable, "-m", "greenbridge", "jobs"], capture_output=True, text=True,
                               env=env, timeout=120, cwd=REPO)
        assert shown.returncode == 0, shown.stderr
        assert f"done {bulk.job_id} fetch_bulk:" in shown.stdout and f"({third} readings)" in shown.stdout
        listed = subprocess.run([sys.executable, "-m", "greenbridge", "jobs", "list", "--warnings"],
                                capture_output=True, text=True, env=env, timeout=120, cwd=REPO)
        assert listed.returncode == 0 and [line.split()[0] for line in listed.stdout.splitlines()] == [bulk.job_id]
