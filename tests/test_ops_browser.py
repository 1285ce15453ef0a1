"""The ops dashboard in headless Chromium (issue 14 item 2; JavaScript off: the page needs none): the operator
signs in with HTTP Basic, sees the bridge at work (queues, the worker online, jobs per custodian and kind, the
custodian's health, grants, the charts of the last hour), and the **Retry** button brings a dead job back to done
through a real worker. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import time

import httpx2
import pytest
from bridge_stack import consent, register, start_bridge, wait_grant
from celery import Celery

from espi.generate import FeedSpec, write_feed

pytestmark = pytest.mark.slow
PASSWORD = "ops-browser-password"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with start_bridge(tmp_path_factory.mktemp("ops-browser"), customers=2, days=2, workers=1,
                      gateway_env={"GREENBRIDGE_OPERATOR_PASSWORD": PASSWORD}) as bridge:
        yield bridge


def _job(bridge, job_id):
    from workers import jobs

    with bridge.sessions()() as session:
        return jobs.get(session, job_id)


def _grants(bridge, status: str) -> int:
    from sqlalchemy import func, select

    from cds.store.models import Grant

    with bridge.sessions()() as session:
        return session.scalar(select(func.count()).select_from(Grant).where(Grant.status == status))


def _wait_state(bridge, job_id: str, state: str, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while True:
        job = _job(bridge, job_id)
        if job.state == state:
            return job
        assert time.monotonic() < deadline, f"job {job_id} is {job.state}, not {state}:\n{bridge.logs()}"
        time.sleep(0.2)


def test_dashboard_and_retry_in_chromium(stack, browser, artifacts_dir):
    bridge = stack
    client = register(bridge.gateway, "Ops Browser App")
    granted = consent(bridge, client, customer_index=0)
    wait_grant(bridge, client, granted.grant_id, "active")
    # A job that dies: its file is not there (a permanent error). The operator puts the file in place, then retries.
    feed = bridge.directory / "late-feed.xml"
    from workers.jobs import enqueue
    from workers.tasks import publish

    with bridge.sessions()() as session, session.begin():
        doomed = enqueue(session, "ingest_file", {"path": str(feed), "customer_id": "customer-ops"},
                         queue="translate")
    publish(Celery("ops-browser", broker=bridge.redis_url, set_as_current=False), doomed)
    dead = _wait_state(bridge, doomed.job_id, "dead")
    assert "no such file" in dead.last_error and dead.attempts == 1

    context = browser.new_context(java_script_enabled=False, viewport={"width": 1400, "height": 900},
                                  http_credentials={"username": "operator", "password": PASSWORD})
    try:
        page = context.new_page()
        answer = page.goto(f"{bridge.gateway}/ops")
        assert answer.status == 200
        assert page.locator("#queues").inner_text().count("http") == 1
        assert page.locator("tr.worker").count() == 1  # the one worker answered the ping
        rows = page.locator("tr.job-row")
        kinds = {(rows.nth(i).get_attribute("data-custodian"), rows.nth(i).get_attribute("data-kind"))
                 for i in range(rows.count())}
        assert ("sandbox", "fetch_subscription") in kinds and ("", "ingest_file") in kinds
        assert page.locator("#grants-active").inner_text() == str(_grants(bridge, "active"))
        health = page.locator("#custodian-sandbox").inner_text()
        assert "never" not in health.split("\t")[1]  # a last success
        assert page.locator("#throughput rect.bar").count() >= 1  # readings stored this minute
        assert page.locator("#upstream rect.bar").count() >= 1
        assert page.locator(f"#dead-{doomed.job_id}").count() == 1
        page.screenshot(path=str(artifacts_dir / "ops-1-dashboard-dead-job.png"), full_page=True)

        with open(feed, "w", encoding="utf-8") as out:  # the cause fixed
            write_feed(out, FeedSpec(usage_points=1, days=1, interval=3600))
        page.click(f"#retry-{doomed.job_id}")
        page.wait_for_load_state()
        assert page.url.endswith(f"/ops?retried={doomed.job_id}")
        assert doomed.job_id in page.locator("#retried").inner_text()
        done = _wait_state(bridge, doomed.job_id, "done")
        assert done.attempts == 2 and done.last_error is None and "readings" in done.result
        page.goto(f"{bridge.gateway}/ops")
        assert page.locator(f"#dead-{doomed.job_id}").count() == 0
        assert page.locator("#no-dead").count() == 1
        page.screenshot(path=str(artifacts_dir / "ops-2-dashboard-after-retry.png"), full_page=True)
    finally:
        context.close()

    # without credentials (a browser would prompt for them): asked for them, nothing shown
    anonymous = httpx2.get(f"{bridge.gateway}/ops", timeout=30)
    assert anonymous.status_code == 401 and anonymous.headers["www-authenticate"].startswith("Basic realm=")
    assert "dead" not in anonymous.text
    for name in ("ops-1-dashboard-dead-job", "ops-2-dashboard-after-retry"):
        assert (artifacts_dir / f"{name}.png").stat().st_size > 10_000
