"""A newcomer's first five minutes (issue 14 item 1): the README's first command (``bash deploy/run.sh``), then the
landing page and the Try-it walkthrough against it, over HTTP and in headless Chromium.

One bridge for the module (each start costs seconds). The walkthrough's demo third party is a real CDS client of
the gateway: the test plays only the customer's browser (the consent pages, the sandbox custodian's sign-in, the
receipt page), and checks what the demo's chart shows against the sandbox generator's own totals, exactly.
"""

from __future__ import annotations

import contextlib
import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from html import unescape
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from bridge_stack import source_totals
from gateway_helpers import continue_to_client
from servers import free_port
from test_embedded import _need_redis, bridge

from greenbridge.embedded import SANDBOX_DAYS

pytestmark = pytest.mark.slow

DATA_TIMEOUT = 90.0


@pytest.fixture(scope="module")
def running(tmp_path_factory):
    _need_redis()
    tmp_path = tmp_path_factory.mktemp("try-it")
    start = (datetime.now(UTC) - timedelta(days=SANDBOX_DAYS)).date()  # what serve gives its sandbox customers
    with bridge(tmp_path, ["bash", "deploy/run.sh", "--port", str(free_port())]) as started:
        started.state["generate_start"] = start
        yield started


def _sandbox_approval(browser: httpx2.Client, sandbox: str, location: str, customer: str) -> str:
    """The customer at the sandbox custodian: sign in and approve; returns the redirect back to the gateway."""
    assert location.startswith(f"{sandbox}/oauth/authorize?"), location
    page = browser.get(location)
    assert page.status_code == 200 and 'id="customer_id"' in page.text
    answer = browser.post(location.split("?")[0], data={**dict(parse_qsl(urlsplit(location).query)),
                                                         "customer_id": customer, "password": "sandbox",
                                                         "decision": "approve"})
    assert answer.status_code in (302, 303), answer.text
    return answer.headers["location"]


def _chart_values(page: str) -> dict[str, dict[str, Decimal]]:
    """The usage table under the chart: meter label → day → kWh."""
    table = re.search(r'<table class="days">(.*?)</table>', page, re.S).group(1)
    labels = re.findall(r'<th scope="col">(Meter \d+) \(kWh\)</th>', table)
    values: dict[str, dict[str, Decimal]] = {label: {} for label in labels}
    for day, cells in re.findall(r'<tr><th scope="row">([\d-]+)</th>(.*?)</tr>', table, re.S):
        for label, cell in zip(labels, re.findall(r"<td>([^<]*)</td>", cells), strict=True):
            if cell:
                values[label][day] = Decimal(cell)
    return values


def test_try_it_walkthrough_over_http_ends_on_the_usage_page(running):
    gateway, sandbox = running.gateway, running.sandbox
    home = httpx2.get(f"{gateway}/", timeout=30)
    assert home.status_code == 200 and "Greenbridge sandbox custodian" in home.text
    assert f'href="{gateway}/try"' in home.text

    browser = httpx2.Client(timeout=60, follow_redirects=False)
    intro = browser.get(f"{gateway}/try")
    assert intro.status_code == 200 and "greenbridge_try" in browser.cookies
    csrf = re.search(r'name="csrf" value="([^"]+)"', intro.text).group(1)
    assert browser.post(f"{gateway}/try/start", data={"csrf": "forged"}).status_code == 403

    # the demo registers and pushes its request, then sends the browser to greenbridge's consent page
    answer = browser.post(f"{gateway}/try/start", data={"csrf": csrf})
    assert answer.status_code == 303, answer.text
    authorize_url = answer.headers["location"]
    assert authorize_url.startswith(f"{gateway}/oauth/authorize?") and "request_uri=" in authorize_url
    consent = browser.get(authorize_url)
    assert consent.status_code == 200 and "Try-it demo app" in consent.text
    handle = re.search(r'name="consent" value="([^"]+)"', consent.text).group(1)
    answer = browser.post(f"{gateway}/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                               "custodian": "sandbox"})
    assert answer.status_code == 303, answer.text
    callback = _sandbox_approval(browser, sandbox, answer.headers["location"], "customer-1")
    approved = browser.get(callback)  # the receipt's link first (issue 14 item 6), then back to the demo
    answer = continue_to_client(browser, approved)
    assert answer.headers["location"].startswith(f"{gateway}/try/callback?")
    answer = browser.get(answer.headers["location"])
    assert answer.status_code == 303 and answer.headers["location"] == f"{gateway}/try/usage", answer.text

    # the demo waits for the grant to leave pending (the page reloads itself meanwhile), then shows the data
    deadline = time.monotonic() + DATA_TIMEOUT
    while True:
        page = browser.get(f"{gateway}/try/usage")
        assert page.status_code == 200, page.text
        status = re.search(r'<span id="status">([a-z]+)</span>', page.text).group(1)
        if status != "pending":
            break
        assert 'http-equiv="refresh"' in page.text and 'id="waiting"' in page.text
        if time.monotonic() > deadline:
            raise AssertionError(f"the grant stayed pending for {DATA_TIMEOUT} s:\n{running.log('worker')}")
        time.sleep(1)
    assert status == "active", page.text
    assert 'http-equiv="refresh"' not in page.text
    assert '<svg id="usage-chart" role="img"' in page.text and "<polyline" in page.text
    raw = unescape(re.search(r'<pre class="json" tabindex="0">(.*?)</pre>', page.text, re.S).group(1))
    assert '"usage_segments": [' in raw and '"segment_start"' in raw

    # exact: the chart's days add up to what the sandbox generated for customer-1 (delivered kWh)
    values = _chart_values(page.text)
    assert list(values) == ["Meter 1"]
    count, expected = source_totals(1, SANDBOX_DAYS, running.state["generate_start"])
    assert count > 0 and sum(values["Meter 1"].values()) == expected
    today = date.today()
    assert all(today - timedelta(days=SANDBOX_DAYS + 1) <= date.fromisoformat(day) <= today
               for day in values["Meter 1"])

    # the demo's tokens stay on the server: the cookie is a signed session id, the page names no token
    assert len(browser.cookies["greenbridge_try"]) < 200 and "access_token" not in page.text

    # the landing page's live state counts the grant
    home = httpx2.get(f"{gateway}/", timeout=30).text
    assert re.search(r'<td data-status="active">(\d+)</td>', home)


def test_landing_page_and_walkthrough_in_chromium(running, browser, artifacts_dir):
    gateway, sandbox = running.gateway, running.sandbox
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        page.goto(f"{gateway}/")
        assert "Greenbridge sandbox custodian" in page.inner_text("#custodians")
        assert "waiting" in page.inner_text("#jobs-waiting")
        page.screenshot(path=str(artifacts_dir / "landing-page.png"), full_page=True)

        page.click("#try-link")
        page.wait_for_load_state()
        page.click("#start")
        page.wait_for_load_state()
        assert "Try-it demo app" in page.inner_text("#requester")
        page.click("#approve")
        page.wait_for_load_state()
        assert page.url.startswith(f"{sandbox}/oauth/authorize?")
        page.fill("#customer_id", "customer-3")
        page.fill("#password", "sandbox")
        page.click("#signin-button")
        page.wait_for_load_state()
        page.click("#approve")
        page.wait_for_load_state()
        assert page.locator("#receipt-link").count() == 1
        page.click("#continue")
        page.wait_for_load_state()
        deadline = time.monotonic() + DATA_TIMEOUT
        while page.locator("#usage-chart").count() == 0:
            assert time.monotonic() < deadline, page.content()
            with contextlib.suppress(Exception):  # the page reloads itself while the grant is pending
                page.wait_for_load_state()
            time.sleep(1)
            if page.locator("#waiting").count() == 0 and page.locator("#usage-chart").count() == 0:
                page.reload()
        assert urlsplit(page.url).path == "/try/usage"
        assert page.inner_text("#status") == "active"
        assert page.locator("#usage-chart circle").count() >= SANDBOX_DAYS - 1
        assert page.get_attribute("#usage-chart", "aria-labelledby") == "svg-title svg-desc"
        assert '"usage_segments"' in page.inner_text("#raw-json")
        page.screenshot(path=str(artifacts_dir / "try-it-usage-chart.png"), full_page=True)
    finally:
        context.close()
