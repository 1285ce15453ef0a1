"""The fault suite (issue 15 item 6): the whole bridge on 127.0.0.1 (sandbox custodian, gateway under uvicorn,
real ``greenbridge worker`` processes, redis-server, sshd or an asyncssh SFTP server, SQLite or PostgreSQL) while a
part breaks: Redis restarted mid-run; the custodian answering 5xx, stalling or resetting 3 requests in 10; an SFTP
transfer cut mid-file; duplicated, reordered and late notifications; PostgreSQL restarted under the workers; the
gateway killed while a consent is in flight.

Each test is bounded in time and ends with exact figures: every job done (or dead with its reason), each Grant's
readings counted and summed exactly (Decimal) against what the sandbox generated for its customer, and no
duplicate: segment ids unique, one job row per resource and authorization. Retries are fast here
(``job_retry_seconds`` 1, a 3 s lease, a custodian timeout of 2 s); the reconciler, which beat runs every minute,
is sent by the test as a lost message's rescue.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import httpx2
import pytest
from bridge_stack import (
    BULK_SCOPE,
    approve_at_gateway,
    at_sandbox,
    consent,
    generate_start,
    push,
    register,
    segment_totals,
    source_totals,
    start_bridge,
    usage_segments,
    wait_grant,
)
from fault_servers import RESET, STALL, THIRTY_PERCENT, UNAVAILABLE, cutting_sftp_server, fault_proxy
from gateway_helpers import continue_to_client
from servers import create_database, postgres_cluster, redis_server

pytestmark = [pytest.mark.faults, pytest.mark.slow]

DAYS = 3
GROWTH = 4
FAST = {"GREENBRIDGE_JOB_RETRY_SECONDS": "1", "GREENBRIDGE_JOB_LEASE_SECONDS": "3",
        "GREENBRIDGE_CUSTODIAN_TIMEOUT_SECONDS": "2"}
QUIET = {"GREENBRIDGE_SANDBOX_NOTIFY_ON_NEW_DATA": "false"}


# ------------------------------------------------------------------------------------------------------ helpers
def _sftp_toml(server) -> str:
    return (f'\n[custodians.sftp]\nhost = "127.0.0.1"\nport = {server.port}\nuser = "{server.user}"\n'
            f'key_path = "{server.key_path}"\nhost_key = "{server.host_key}"\n')


def _sftp_sandbox(bulk_dir: Path, server) -> dict[str, str]:
    return {**QUIET, "GREENBRIDGE_SANDBOX_BULK_DIR": str(bulk_dir),
            "GREENBRIDGE_SANDBOX_SFTP_URI": f"sftp://{server.user}@127.0.0.1:{server.port}{bulk_dir}"}


def _consent_all(bridge, customers: int, timeout: float = 90.0):
    client = register(bridge.gateway)
    granted = [consent(bridge, client, customer_index=i) for i in range(customers)]
    for one in granted:
        wait_grant(bridge, client, one.grant_id, "active", timeout=timeout)
    return client, granted


def _grow(bridge, customers: int, days: int = GROWTH) -> None:
    for number in range(1, customers + 1):
        grown = httpx2.post(f"{bridge.sandbox}/sandbox/customers/customer-{number}/advance", data={"days": days},
                            timeout=60, trust_env=False)
        assert grown.status_code == 200, grown.text


def _request_bulk(bridge) -> None:
    """The sandbox writes bulk set 1 and POSTs the BatchList naming it (its sftp:// URI) to the gateway, after its
    202: the job may not exist yet when this returns."""
    answer = httpx2.get(f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/1", timeout=60, trust_env=False,
                        headers={"Authorization": f"Bearer {bridge.sandbox_client_token()}"})
    assert answer.status_code == 202, answer.text


def _notify(bridge, uris: list[str], path: str = "/custodians/sandbox/notify") -> int:
    body = ('<BatchList xmlns="http://naesb.org/espi">'
            + "".join(f"<resources>{uri}</resources>" for uri in uris) + "</BatchList>")
    return httpx2.post(f"{bridge.gateway}{path}", content=body, timeout=30, trust_env=False,
                       headers={"Content-Type": "application/atom+xml"}).status_code


def _running(bridge, kind: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(j.kind == kind and j.state in ("running", "done") for j in bridge.jobs()):
        assert time.monotonic() < deadline, f"no {kind} ran: {[(j.kind, j.state) for j in bridge.jobs()]}"
        time.sleep(0.02)


def _settle(bridge, expect=lambda jobs: True, timeout: float = 120.0, reconcile: bool = True):
    """Until every job is done or dead and ``expect(jobs)`` holds; the reconciler (beat's minute job) is sent every
    two seconds when ``reconcile``."""
    deadline = time.monotonic() + timeout
    last = 0.0
    while True:
        if reconcile and time.monotonic() - last > 2:
            with contextlib.suppress(Exception):  # Redis may be away for a moment
                bridge.reconcile(stale_after=0)
            last = time.monotonic()
        try:
            jobs = bridge.jobs()
        except Exception:  # the store may be restarting
            jobs = None
        if jobs is not None and all(j.state in ("done", "dead") for j in jobs) and expect(jobs):
            return jobs
        for proc in bridge.workers:
            assert proc.poll() is None, f"a worker exited with {proc.returncode}\n{bridge.logs()}"
        assert time.monotonic() < deadline, \
            f"{[(j.kind, j.state, j.attempts, j.last_error) for j in jobs or []]}\n{bridge.logs()}"
        time.sleep(0.25)


def _all_done(jobs) -> None:
    assert all(j.state == "done" for j in jobs), [(j.kind, j.state, j.attempts, j.last_error) for j in jobs
                                                  if j.state != "done"]


def _exact(bridge, granted, days: int) -> None:
    """Each Grant holds exactly its own customer's readings of ``days`` days (count and Decimal sum), each once."""
    for number, one in enumerate(granted, start=1):
        segments = usage_segments(bridge, one.access_token)
        ids = [s["cds_usagesegment_id"] for s in segments]
        assert len(ids) == len(set(ids)), f"customer {number}: duplicate segments"
        assert segment_totals(segments) == source_totals(number, days, generate_start(DAYS)), f"customer {number}"


def _one_job_per_resource(jobs) -> None:
    """No work asked for twice under two rows: one fetch per authorization, one ingest per bulk part and
    authorization."""
    fetches = Counter(j.payload["upstream_id"] for j in jobs
                      if j.kind == "fetch_subscription" and j.payload.get("upstream_id") is not None)
    # bulk-part:{bulk job}:{generation}:{part}:{authorization}[:r{revision}]: a part is handed over once here
    parts = Counter(tuple(j.dedupe_key.split(":")[1:5]) for j in jobs if j.kind == "ingest_bulk_part")
    assert all(count == 1 for count in [*fetches.values(), *parts.values()]), (fetches, parts)


# --------------------------------------------------------------------------------------------------- the faults
def test_redis_restarted_mid_run(tmp_path, sshd):
    """Redis goes away before the custodian's BatchList arrives (the gateway commits the job and keeps it), comes
    back (the gateway publishes it within seconds), and is restarted again while the bulk's parts are being stored
    (their queued messages are lost with it: the reconciler publishes them again). The worker reconnects by
    itself; every job ends done, once, and every Grant holds its customer's data exactly."""
    customers = 3
    socket_dir = Path(tempfile.mkdtemp(prefix="gb-redis-"))  # short: a unix socket path holds 108 bytes
    bulk_dir = sshd.root / f"bulk-{uuid.uuid4().hex[:8]}"
    bulk_dir.mkdir(mode=0o755)
    current = contextlib.ExitStack()
    try:
        url = current.enter_context(redis_server(tmp_path, socket_dir=socket_dir))
        with start_bridge(tmp_path / "bridge", url, scopes=(BULK_SCOPE,), sandbox_env=_sftp_sandbox(bulk_dir, sshd),
                          custodian_toml=_sftp_toml(sshd), customers=customers, days=DAYS, workers=0,
                          gateway_env=FAST) as bridge:
            worker = bridge.start_worker(concurrency=1)
            _client, granted = _consent_all(bridge, customers)
            _grow(bridge, customers)

            current.close()  # Redis stops
            _request_bulk(bridge)  # the sandbox's BatchList follows, answered 200: committed, not yet published
            _wait_for(lambda: any(j.kind == "fetch_bulk" for j in bridge.jobs()), bridge)
            (bulk,) = [j for j in bridge.jobs() if j.kind == "fetch_bulk"]
            assert bulk.state == "queued"
            current = contextlib.ExitStack()
            current.enter_context(redis_server(tmp_path, socket_dir=socket_dir))  # back, at the same address

            _running(bridge, "ingest_bulk_part")  # the gateway published it, the worker took it
            current.close()  # restarted while the parts are stored: queued messages are gone
            time.sleep(1)
            current = contextlib.ExitStack()
            current.enter_context(redis_server(tmp_path, socket_dir=socket_dir))

            jobs = _settle(bridge, lambda jobs: sum(j.kind == "ingest_bulk_part" for j in jobs) == customers)
            _all_done(jobs)
            _one_job_per_resource(jobs)
            assert worker.poll() is None and bridge.workers == [worker]  # the same worker, reconnected
            (bulk,) = [j for j in jobs if j.kind == "fetch_bulk"]
            assert bulk.attempts == 1  # published once, run once
            _exact(bridge, granted, DAYS + GROWTH)
            assert "not published" in bridge.gateway_log.read_text()  # the gateway did meet the missing Redis
            assert bridge.worker_logs[0].read_text().count("Connection to broker lost") >= 2  # and the worker
    finally:
        current.close()
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_custodian_failing_thirty_percent_of_requests(tmp_path):
    """Every third request in ten to the custodian's resource API (the workers' GETs of subscriptions and of the
    REST bulk) is answered 503, left without an answer past the workers' timeout, or reset. Each such answer costs
    one failed attempt and a retry, never data: every Grant ends with its customer's readings exactly."""
    customers = 4
    spoil = lambda method, path: path.startswith("/espi/1_1/resource/")  # noqa: E731
    with fault_proxy(pattern=THIRTY_PERCENT, spoil=spoil, stall_seconds=5) as proxy, \
            start_bridge(tmp_path, scopes=(BULK_SCOPE,), customers=customers, days=DAYS, gateway_env=FAST,
                         front=proxy) as bridge:
        _client, granted = _consent_all(bridge, customers, timeout=120)
        _grow(bridge, customers)  # the sandbox notifies each subscription: fetched through the faults
        assert _notify(bridge, [f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/1"]) == 200  # and the bulk
        jobs = _settle(bridge, lambda jobs: any(j.kind == "fetch_bulk" for j in jobs)
                       and sum(j.kind == "fetch_subscription" for j in jobs) >= customers, timeout=150)
        _all_done(jobs)
        _one_job_per_resource(jobs)
        _exact(bridge, granted, DAYS + GROWTH)
        counts = proxy.counts()
        faults = counts[UNAVAILABLE] + counts[STALL] + counts[RESET]
        assert counts[UNAVAILABLE] >= 1 and counts[STALL] >= 1 and counts[RESET] >= 1, counts
        spoilable = sum(counts.values())
        assert faults == sum(1 for i in range(spoilable) if THIRTY_PERCENT[i % 10] != "forward")  # 3 in 10
        failed = sum(log.read_text().count(") attempt ") for log in bridge.worker_logs)
        assert failed == faults, (failed, counts)  # each fault cost exactly one attempt


def test_sftp_transfer_cut_mid_file_resumes(tmp_path):
    """An SFTP server (asyncssh) drops the connection once its client asks for bytes past 2.5 MiB of the bulk
    file: the download fails as transient, keeping its .part; the retry reconnects and asks only for the rest, and
    the bulk's parts land exactly."""
    customers = 3
    growth = 60  # a bulk file of about 4 MB: the cut comes after 2 MiB were written to the .part
    cut_after = 5 * 512 * 1024
    bulk_dir = tmp_path / "served"
    bulk_dir.mkdir()
    with cutting_sftp_server(tmp_path, cut_after=cut_after) as server, \
            start_bridge(tmp_path / "bridge", scopes=(BULK_SCOPE,), sandbox_env=_sftp_sandbox(bulk_dir, server),
                         custodian_toml=_sftp_toml(server), customers=customers, days=DAYS,
                         gateway_env=FAST) as bridge:
        _client, granted = _consent_all(bridge, customers)
        _grow(bridge, customers, growth)
        _request_bulk(bridge)
        jobs = _settle(bridge, lambda jobs: sum(j.kind == "ingest_bulk_part" for j in jobs) == customers,
                       reconcile=False)
        _all_done(jobs)
        (bulk,) = [j for j in jobs if j.kind == "fetch_bulk"]
        assert bulk.attempts == 2 and server.cuts >= 1
        (size,) = {p.stat().st_size for p in bulk_dir.rglob("*.xml")}
        assert size > cut_after + 1024 * 1024
        first, second = server.reads[0], server.reads[1]
        assert max(offset + length for offset, length in first) > cut_after
        resumed = min(offset for offset, _length in second)
        assert 0 < resumed <= cut_after and resumed % (1024 * 1024) == 0  # from the .part's whole MiBs
        assert sum(length for _offset, length in second) <= size - resumed + 1024 * 1024
        _exact(bridge, granted, DAYS + growth)
        var = bridge.directory / "var"
        assert not [p for p in (var / "downloads").rglob("*") if p.is_file()]  # no .part left behind


def test_duplicated_reordered_and_late_notifications(tmp_path):
    """BatchLists naming each subscription several times, in another order, twice at once and to both notify
    URLs; then, once everything was fetched, the same BatchLists again (late) after more data, and one naming a
    subscription whose Grant was closed meanwhile. Jobs coalesce (one row per subscription and authorization),
    every Grant ends exact, and the closed one is neither fetched nor readable."""
    from cds.store.models import UpstreamAuthorization

    customers = 3
    with start_bridge(tmp_path, customers=customers, days=DAYS, gateway_env=FAST, sandbox_env=QUIET) as bridge:
        bridge.start_worker(concurrency=2)  # two worker processes, four pool slots
        client, granted = _consent_all(bridge, customers)
        with bridge.sessions()() as session:
            uri_of = {row.grant_id: row.resource_uri for row in session.query(UpstreamAuthorization)}
        uris = [uri_of[one.grant_id] for one in granted]
        _grow(bridge, customers)
        batches = [[uris[2], uris[0], uris[0], uris[1]], [uris[1], uris[2], uris[0]]]
        answers: list[int] = []
        threads = [threading.Thread(target=lambda b=batch, p=path: answers.append(_notify(bridge, b, p)))
                   for _twice in range(2) for batch in batches
                   for path in ("/custodians/sandbox/notify", "/espi/1_1/Notification")]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        assert answers == [200] * len(threads)
        jobs = _settle(bridge, reconcile=False)
        _all_done(jobs)
        _one_job_per_resource(jobs)
        _exact(bridge, granted, DAYS + GROWTH)
        fetches = {j.dedupe_key: j for j in jobs if j.kind == "fetch_subscription"}

        # late: the same BatchLists again, after more data; then customer 3 revokes and its BatchList comes late
        _grow(bridge, customers, 2)
        for batch in reversed(batches):
            assert _notify(bridge, batch) == 200
        jobs = _settle(bridge, lambda jobs: all(j.generation > fetches[j.dedupe_key].generation for j in jobs
                                                if j.dedupe_key in fetches and j.payload.get("upstream_id")),
                       reconcile=False)
        _all_done(jobs)
        _one_job_per_resource(jobs)
        _exact(bridge, granted, DAYS + GROWTH + 2)
        closed = httpx2.patch(f"{bridge.gateway}/cds-api/v1/grants/{granted[2].grant_id}", json={"status": "closed"},
                              headers={"Authorization": f"Bearer {client.admin_token}"}, timeout=30, trust_env=False)
        assert closed.status_code == 200, closed.text
        _grow(bridge, customers, 1)
        assert _notify(bridge, [uris[2]]) == 200
        jobs = _settle(bridge, lambda jobs: any(j.kind == "revoke_upstream" for j in jobs), reconcile=False)
        _all_done(jobs)
        _one_job_per_resource(jobs)
        _exact(bridge, granted[:2], DAYS + GROWTH + 2)  # the others were not notified: nothing new
        denied = httpx2.get(f"{bridge.gateway}/cds-api/v1/usage-segments", timeout=30, trust_env=False,
                            headers={"Authorization": f"Bearer {granted[2].access_token}"})
        assert denied.status_code == 403


def test_postgresql_restarted_under_the_workers(tmp_path, sshd):
    """The store (PostgreSQL) goes away twice (fast shutdown: every session terminated). (1) While it is down a
    running worker (paused while the job was published) takes the custodian's bulk job from Redis: it cannot claim
    it, and sends the message again with a growing countdown instead of dropping it, so the bulk runs once the
    store is back, with no reconciler. (A worker *starting* while the store is down exits at its migration and is
    restarted by its supervisor: deploy/systemd, compose.)
    (2) It is restarted while the worker stores the bulk's parts and the gateway serves: the interrupted run is
    retried or taken over once its lease runs out, the pools reconnect, and every Grant ends exact."""
    customers = 4
    bulk_dir = sshd.root / f"bulk-{uuid.uuid4().hex[:8]}"
    bulk_dir.mkdir(mode=0o755)
    with postgres_cluster(tmp_path) as server:
        database_url = create_database(server)
        with start_bridge(tmp_path / "bridge", scopes=(BULK_SCOPE,), sandbox_env=_sftp_sandbox(bulk_dir, sshd),
                          custodian_toml=_sftp_toml(sshd), customers=customers, days=DAYS, workers=0,
                          gateway_env=FAST, database_url=database_url) as bridge:
            worker = bridge.start_worker(concurrency=1)
            _client, granted = _consent_all(bridge, customers)
            _grow(bridge, customers, 20)
            (pool,) = _children(worker.pid)  # concurrency 1: one pool process
            os.kill(pool, signal.SIGSTOP)  # paused with its store connections open; the main process still takes
            log = bridge.worker_logs[-1]
            taken = log.read_text().count("] received")
            _request_bulk(bridge)  # the sandbox's BatchList follows: the job committed and published
            _wait_for(lambda: any(j.kind == "fetch_bulk" for j in bridge.jobs()), bridge)
            _wait_for(lambda: log.read_text().count("] received") > taken, bridge)  # handed to the paused process

            def worker_meets_the_stopped_store() -> None:
                seen = len(log.read_text())
                os.kill(pool, signal.SIGCONT)
                _wait_for(lambda: "OperationalError" in log.read_text()[seen:], bridge)  # its claim failed

            server.restart(down_seconds=1, while_down=worker_meets_the_stopped_store)
            _running(bridge, "ingest_bulk_part", timeout=90)  # no reconciler sent: the message itself came back
            assert "the store is unreachable" in log.read_text()
            server.restart(down_seconds=2)
            jobs = _settle(bridge, lambda jobs: sum(j.kind == "ingest_bulk_part" for j in jobs) == customers)
            _all_done(jobs)
            _one_job_per_resource(jobs)
            (bulk,) = [j for j in jobs if j.kind == "fetch_bulk"]
            assert bulk.attempts == 1  # the claim that met the stopped store changed nothing; the message came back
            _exact(bridge, granted, DAYS + 20)  # through the gateway, which reconnected too
            assert "OperationalError" in bridge.worker_logs[-1].read_text()  # the restarts did reach the worker


def test_gateway_killed_while_a_consent_is_in_flight(tmp_path):
    """The gateway process is killed (SIGKILL) twice during consents: (1) while the customer is at the custodian,
    between the two hops: the restarted gateway finishes the consent from what it had committed; (2) while its
    callback waits for the custodian's answer to the code exchange: no Grant is left half-made, the callback
    repeated on the restarted gateway fails cleanly (the state was spent), and the customer starting over gets
    a Grant with exactly their data."""
    from sqlalchemy import func, select

    from cds.store.models import Grant, UpstreamAuthorization

    with fault_proxy() as proxy, start_bridge(tmp_path, customers=2, days=DAYS, gateway_env=FAST,
                                              front=proxy) as bridge:
        client = register(bridge.gateway)
        process = bridge.gateway_process

        def counts() -> tuple[int, int]:
            with bridge.sessions()() as session:
                return (session.scalar(select(func.count()).select_from(Grant).where(
                            Grant.client_id == client.client_id)),
                        session.scalar(select(func.count()).select_from(UpstreamAuthorization)))

        def code_exchange(browser, callback: str):
            answer = continue_to_client(browser, browser.get(callback))  # from the receipt page (issue 14)
            return answer.headers["location"]

        # (1) killed between the hops
        authorize_url, verifier = push(bridge.gateway, client)
        browser = httpx2.Client(timeout=30, follow_redirects=False, trust_env=False)
        to_custodian = approve_at_gateway(browser, authorize_url)
        assert to_custodian.status_code == 303
        process.kill()
        process.start()
        landed = code_exchange(browser, at_sandbox(browser, bridge.sandbox, to_custodian.headers["location"]))
        first, first_token = _token(bridge, client, landed, verifier)
        wait_grant(bridge, client, first, "active")
        assert counts() == (1, 1)

        # (2) killed while the callback waits for the custodian's token answer
        authorize_url, verifier = push(bridge.gateway, client, state="second")
        browser = httpx2.Client(timeout=30, follow_redirects=False, trust_env=False)
        to_custodian = approve_at_gateway(browser, authorize_url)
        callback = at_sandbox(browser, bridge.sandbox, to_custodian.headers["location"], customer_index=1)
        proxy.hold = lambda method, path: method == "POST" and path.startswith("/oauth/token")
        outcome: list[object] = []
        waiting = threading.Thread(target=lambda: outcome.append(_attempt(browser, callback)))
        waiting.start()
        deadline = time.monotonic() + 30
        while not proxy.held():
            assert time.monotonic() < deadline, "the callback never asked for the tokens"
            time.sleep(0.02)
        process.kill()
        waiting.join(30)
        assert outcome and isinstance(outcome[0], httpx2.TransportError)  # the customer's browser saw it die
        assert counts() == (1, 1)  # nothing half-made
        proxy.release()  # the held exchange is dropped: the custodian never saw it
        process.start()
        again = browser.get(callback)
        assert again.status_code == 400 and "already completed" in again.text
        assert counts() == (1, 1)

        authorize_url, verifier = push(bridge.gateway, client, state="third")
        browser = httpx2.Client(timeout=30, follow_redirects=False, trust_env=False)
        to_custodian = approve_at_gateway(browser, authorize_url)
        landed = code_exchange(browser, at_sandbox(browser, bridge.sandbox, to_custodian.headers["location"],
                                                   customer_index=1))
        second, second_token = _token(bridge, client, landed, verifier)
        wait_grant(bridge, client, second, "active")
        assert counts() == (2, 2)
        for number, token in ((1, first_token), (2, second_token)):
            assert segment_totals(usage_segments(bridge, token)) == source_totals(number, DAYS, generate_start(DAYS))


def _children(pid: int) -> list[int]:
    return [int(child) for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


def _wait_for(condition, bridge, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, bridge.logs()
        time.sleep(0.05)


def _attempt(browser, url: str):
    try:
        return browser.get(url)
    except httpx2.TransportError as error:
        return error


def _token(bridge, client, landed: str, verifier: str) -> tuple[str, str]:
    """The client's code exchange: the Grant's id and its access token."""
    from urllib.parse import parse_qs, urlsplit

    code = parse_qs(urlsplit(landed).query)["code"][0]
    answer = httpx2.post(f"{bridge.gateway}/oauth/token", auth=(client.client_id, client.secret), timeout=30,
                         trust_env=False, data={"grant_type": "authorization_code", "code": code,
                                                "redirect_uri": client.redirect_uri, "code_verifier": verifier})
    assert answer.status_code == 200, answer.text
    (grant_id,) = answer.json()["cds_grant_ids"]
    return grant_id, answer.json()["access_token"]
