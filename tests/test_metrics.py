"""Prometheus ``/metrics`` while the bridge works (issue 14 item 3): the gateway runs as production runs it,
``greenbridge serve --workers 2`` (two uvicorn worker processes, the multi-process directory managed by serve), a
real ``greenbridge worker`` beside it on the same data directory, the sandbox custodian delivering over HTTP and a
bulk file over a real sshd, and the test scrapes with prometheus_client's own parser.

Every family moves as the work is done: HTTP requests by route template, tokens by grant type, jobs by kind and
state, queue lengths, task runtimes, upstream requests with their latency, notifications received and refused,
SFTP bytes (exactly the file's size), readings stored. The same stack runs with JSON logs on: one request id
follows the sandbox's notification from the gateway's request line into the job and the worker's log lines.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import re
import signal
import time
from pathlib import Path

import httpx2
import pytest
from bridge_stack import BULK_SCOPE, consent, register, start_bridge, wait_grant
from celery import Celery
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import select

from cds.store.models import Job
from espi.notification import build_batch_list

pytestmark = pytest.mark.slow
DAYS = 2
CUSTOMERS = 2


def scrape(base: str) -> dict[str, list]:
    """Family name → samples, parsed by prometheus_client (a malformed exposition raises)."""
    answer = httpx2.get(f"{base}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"].startswith("text/plain")
    return {family.name: family.samples for family in text_string_to_metric_families(answer.text)}


def total(families: dict[str, list], sample: str, **labels: str) -> float:
    """The sum of the samples named ``sample`` whose labels include ``labels``."""
    family = re.sub(r"_(total|count|sum|bucket)$", "", sample)
    return sum(s.value for s in families.get(family) or families.get(sample, [])
               if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture(scope="module")
def stack(tmp_path_factory, sshd):
    directory = tmp_path_factory.mktemp("metrics")
    bulk_dir = sshd.root / f"bulk-{directory.name}"
    bulk_dir.mkdir(mode=0o755)
    sftp = f"""
[custodians.sftp]
host = "127.0.0.1"
port = {sshd.port}
user = "{sshd.user}"
key_path = "{sshd.client_key_path}"
host_key = "{sshd.host_key_line}"
"""
    sandbox_env = {"GREENBRIDGE_SANDBOX_BULK_DIR": str(bulk_dir),
                   "GREENBRIDGE_SANDBOX_SFTP_URI": f"sftp://{sshd.user}@127.0.0.1:{sshd.port}{bulk_dir}",
                   "GREENBRIDGE_SANDBOX_NOTIFY_ON_NEW_DATA": "false"}
    # The workers leave the notify queue alone, so a message sent there waits: the queue length is seen to move.
    with start_bridge(directory, scopes=(BULK_SCOPE,), sandbox_env=sandbox_env, custodian_toml=sftp,
                      customers=CUSTOMERS, days=DAYS, gateway_workers=2, worker_queues="http,sftp,translate",
                      gateway_env={"GREENBRIDGE_JSON_LOGS": "1"}) as bridge:
        bridge.bulk_dir = bulk_dir
        yield bridge


def _gateway_pids(bridge) -> dict[int, float]:
    """Per gateway process (its files in serve's directory): how many /healthz requests it counted."""
    directory = next((bridge.directory / "var" / "metrics").glob("gateway-*"))
    counts: dict[int, float] = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for family in MultiProcessCollector.merge([str(path)], accumulate=True):
            for sample in family.samples:
                if sample.name == "greenbridge_http_requests_total" and sample.labels.get("route") == "/healthz":
                    counts[pid] = counts.get(pid, 0) + sample.value
    return counts


def test_every_family_moves_as_work_is_done(stack):
    bridge = stack
    before = scrape(bridge.gateway)
    assert "greenbridge_http_requests" in before  # the scrape itself, at least after this one

    # two uvicorn processes: each counts in its own file, and /metrics adds them up exactly
    healthz_before = total(before, "greenbridge_http_requests_total", route="/healthz", status="200")
    sent = 0

    def burst() -> None:
        nonlocal sent
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: httpx2.get(f"{bridge.gateway}/healthz", timeout=30).status_code,
                                    range(40)))
        assert answers == [200] * 40
        sent += 40

    burst()
    # The kernel may hand every connection to the process that is already awake; a stopped process cannot accept,
    # so while the busy one is paused the other must serve the next burst (both share one listening socket).
    busy = [pid for pid, count in _gateway_pids(bridge).items() if count]
    if len(busy) == 1:
        os.kill(busy[0], signal.SIGSTOP)
        try:
            burst()
        finally:
            os.kill(busy[0], signal.SIGCONT)
    per_process = {pid: count for pid, count in _gateway_pids(bridge).items() if count}
    assert len(per_process) == 2, per_process
    after_healthz = scrape(bridge.gateway)
    assert total(after_healthz, "greenbridge_http_requests_total", route="/healthz", status="200") == \
        healthz_before + sent

    # consent (registration: client_credentials tokens; the code exchange: authorization_code), the first fetches
    client = register(bridge.gateway)
    granted = [consent(bridge, client, customer_index=i) for i in range(CUSTOMERS)]
    for one in granted:
        wait_grant(bridge, client, one.grant_id, "active")
    # notifications: a garbage body is refused whole; a foreign URI is refused, one of ours accepted
    assert httpx2.post(f"{bridge.gateway}/espi/1_1/Notification", content=b"not xml", timeout=30,
                       headers={"Content-Type": "application/atom+xml"}).status_code == 400
    foreign = build_batch_list(["https://elsewhere.example/espi/1_1/resource/Batch/Subscription/1"])
    assert httpx2.post(f"{bridge.gateway}/espi/1_1/Notification", content=foreign, timeout=30,
                       headers={"Content-Type": "application/atom+xml"}).status_code == 200
    # a bulk file over SFTP: the sandbox writes it into sshd's tree and notifies its sftp:// URI
    for number in range(1, CUSTOMERS + 1):
        assert httpx2.post(f"{bridge.sandbox}/sandbox/customers/customer-{number}/advance", data={"days": 1},
                           timeout=30).status_code == 200
    assert httpx2.get(f"{bridge.sandbox}/espi/1_1/resource/Batch/Bulk/1", timeout=60,
                      headers={"Authorization": f"Bearer {bridge.sandbox_client_token()}"}).status_code == 202
    bridge.wait_jobs_settled(timeout=120, expect=lambda jobs: any(
        j.kind == "ingest_bulk_part" for j in jobs) and any(j.kind == "fetch_bulk" for j in jobs))
    # a job that dies (its file is missing), and a message left in the notify queue no worker here consumes
    app = Celery("metrics-test", broker=bridge.redis_url, set_as_current=False)
    from workers.jobs import enqueue
    from workers.tasks import publish

    with bridge.sessions()() as session, session.begin():
        doomed = enqueue(session, "ingest_file", {"path": str(bridge.directory / "missing.xml"),
                                                  "customer_id": "nobody"}, queue="translate")
    publish(app, doomed)
    app.send_task("gb.reconcile", queue="notify")
    bridge.wait_jobs_settled(timeout=60, kinds={"ingest_file"})

    after = scrape(bridge.gateway)
    moved = {
        "HTTP requests by route template": ("greenbridge_http_requests_total",
                                            {"route": "/cds-api/v1/grants/{grant_id}", "status": "200"}),
        "tokens (authorization_code)": ("greenbridge_tokens_issued_total", {"grant_type": "authorization_code"}),
        "tokens (client_credentials)": ("greenbridge_tokens_issued_total", {"grant_type": "client_credentials"}),
        "dead ingest_file jobs": ("greenbridge_jobs", {"kind": "ingest_file", "state": "dead"}),
        "fetch_bulk done in the last hour": ("greenbridge_jobs_done_last_hour", {"kind": "fetch_bulk",
                                                                                 "custodian": "sandbox"}),
        "notify queue length": ("greenbridge_queue_length", {"queue": "notify"}),
        "task runtimes (fetch_bulk, done)": ("greenbridge_task_runtime_seconds_count", {"kind": "fetch_bulk",
                                                                                      "outcome": "done"}),
        "task runtimes (ingest_file, dead)": ("greenbridge_task_runtime_seconds_count", {"kind": "ingest_file",
                                                                                       "outcome": "dead"}),
        "upstream requests (GET 200)": ("greenbridge_upstream_requests_total", {"custodian": "sandbox",
                                                                               "method": "GET", "status": "200"}),
        "upstream token requests": ("greenbridge_upstream_requests_total", {"custodian": "sandbox",
                                                                           "method": "POST"}),
        "upstream latency": ("greenbridge_upstream_request_duration_seconds_count", {"custodian": "sandbox"}),
        "notifications received": ("greenbridge_notifications_total", {"outcome": "received"}),
        "notifications refused": ("greenbridge_notifications_total", {"outcome": "refused"}),
        "notification URIs accepted": ("greenbridge_notification_uris_total", {"custodian": "sandbox",
                                                                              "outcome": "accepted"}),
        "notification URIs refused": ("greenbridge_notification_uris_total", {"outcome": "refused"}),
        "SFTP bytes": ("greenbridge_sftp_bytes_total", {"custodian": "sandbox"}),
        "readings stored": ("greenbridge_readings_stored_total", {"custodian": "sandbox"}),
        "grants active": ("greenbridge_grants", {"status": "active"}),
    }
    still = {what: total(before, name, **labels) for what, (name, labels) in moved.items()
             if total(after, name, **labels) <= total(before, name, **labels)}
    assert not still, f"did not move: {still}"
    assert total(after, "greenbridge_broker_up") == 1
    # the bulk file's bytes, exactly (downloaded once, nothing resumed)
    (bulk_file,) = bridge.bulk_dir.rglob("*.xml")
    assert total(after, "greenbridge_sftp_bytes_total", custodian="sandbox") == bulk_file.stat().st_size
    # route labels are templates, never raw paths (which hold ids)
    routes = {s.labels["route"] for s in after["greenbridge_http_requests"]}
    assert not any(one.grant_id in route for one in granted for route in routes)
    assert "/custodians/{custodian_id}/callback" in routes


def test_request_id_follows_a_notification_into_the_worker_log(stack):
    """The sandbox's BatchList carries no X-Request-Id: the gateway makes one, answers it, stores it with the job
    the notification asked for, and the worker that runs the job logs it (JSON lines)."""
    bridge = stack
    with bridge.sessions()() as session:
        jobs = list(session.scalars(select(Job).where(Job.kind == "fetch_bulk")))
    (job,) = jobs
    assert job.request_id and re.fullmatch(r"[0-9a-f]{32}", job.request_id)
    deadline = time.monotonic() + 30
    while True:
        gateway_lines = _json_lines(bridge.gateway_log)
        worker_lines = [line for log in bridge.worker_logs for line in _json_lines(log)]
        request_line = [line for line in gateway_lines if line.get("request_id") == job.request_id]
        worker_job_lines = [line for line in worker_lines if line.get("request_id") == job.request_id]
        if (request_line and worker_job_lines) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert any(line.get("route") == "/espi/1_1/Notification" and line.get("status") == 200
               for line in request_line), request_line
    assert any(line.get("job_id") == job.job_id and "started" in line["message"] for line in worker_job_lines)
    assert any(line.get("job_id") == job.job_id and "done" in line["message"] for line in worker_job_lines)
    # the parts the bulk job made were created in its run: they carry the same request id
    with bridge.sessions()() as session:
        parts = list(session.scalars(select(Job).where(Job.kind == "ingest_bulk_part")))
    assert parts and all(part.request_id == job.request_id for part in parts)
    # no secret in any log line: the sandbox client's secret and the customers' tokens never appear
    text = bridge.gateway_log.read_text() + "".join(log.read_text() for log in bridge.worker_logs)
    assert bridge.sandbox_secret not in text and bridge.secret_key not in text


def test_an_answer_carries_its_request_id(stack):
    answer = httpx2.get(f"{stack.gateway}/healthz", timeout=30, headers={"X-Request-Id": "chosen-by-client"})
    # the gateway is not configured to trust the header: its own id instead
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["x-request-id"])


def _json_lines(path: Path) -> list[dict]:
    lines = []
    for raw in path.read_text(errors="replace").splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError:
                continue
    return lines
