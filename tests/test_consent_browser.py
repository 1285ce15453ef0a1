"""The consent page in a real browser (headless Chromium) against a real uvicorn gateway.

The page must work without JavaScript (plain HTML form); the test disables JavaScript to prove it, signs in the test
customer, approves, and follows the redirect to the client's redirect URI with a code. A screenshot of the consent
page is left in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlsplit

import pytest
from bridge_stack import CdsClient, push, register
from conftest import REPO
from gateway_helpers import COVERAGE_TOML
from servers import uvicorn_server


@pytest.fixture
def gateway_url(tmp_path):
    config = tmp_path / "greenbridge.toml"
    config.write_text(COVERAGE_TOML)
    env = {
        "GREENBRIDGE_CONFIG": str(config),
        "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}",
        "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"),
        "GREENBRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
    }
    with uvicorn_server("gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO) as url:
        yield str(url)


def _pushed_request(base: str) -> tuple[CdsClient, str]:
    """A registered client's PAR for two years of usage; returns the client and the authorize URL."""
    client = register(base, "Browser Test App", client_uri="https://app.example/")
    authorize_url, _verifier = push(base, client, [{"type": "cds_usage_1", "segment_start": "P2Y"}],
                                    state="browser-state")
    return client, authorize_url


def test_consent_form_in_chromium(gateway_url, browser, artifacts_dir):
    client, authorize_url = _pushed_request(gateway_url)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(authorize_url)
        assert "Browser Test App" in page.inner_text("#requester")
        assert page.locator("section.request").count() == 1
        assert "Usage from" in page.inner_text("section.request")
        page.screenshot(path=str(artifacts_dir / "consent-page.png"), full_page=True)

        page.fill("#customer_id", "customer-1")
        page.fill("#password", "sandbox")
        page.click("#approve")
        page.wait_for_load_state()
        # the customer sees their receipt's address before going back to the application (issue 14 item 6)
        assert page.locator("#receipt-link").get_attribute("href").startswith(f"{gateway_url}/receipts/")
        page.click("#continue")
        page.wait_for_load_state()
        landed = urlsplit(page.url)
        assert f"{landed.scheme}://{landed.netloc}{landed.path}" == client.redirect_uri
        query = parse_qs(landed.query)
        assert query["state"] == ["browser-state"] and query["code"][0]
        # the default redirect URI shows the customer their Authorization Receipt
        assert page.locator("#confirmation").inner_text().strip()
        assert page.locator('meta[name="robots"]').get_attribute("content").startswith("noindex")
        page.screenshot(path=str(artifacts_dir / "receipt-page.png"), full_page=True)
    finally:
        context.close()


def test_declining_in_chromium(gateway_url, browser):
    _client, authorize_url = _pushed_request(gateway_url)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(authorize_url)
        page.click("#decline")
        page.wait_for_load_state()
        query = parse_qs(urlsplit(page.url).query)
        assert query["error"] == ["access_denied"]
        assert "did not complete" in page.inner_text("body")
    finally:
        context.close()


def test_customer_keeps_the_receipt_link_and_revokes_from_it(gateway_url, browser, artifacts_dir):
    """Approval → the confirmation page with the receipt's address (link and copyable text, the date in the
    customer's zone to the minute) → the receipt → revoke without login; continuing afterwards brings the client
    ``access_denied``, never a code for the revoked grant. Without JavaScript, as every consent page."""
    client, authorize_url = _pushed_request(gateway_url)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(authorize_url)
        page.fill("#customer_id", "customer-1")
        page.fill("#password", "sandbox")
        page.click("#approve")
        page.wait_for_load_state()
        assert urlsplit(page.url).path == "/oauth/authorize"  # not redirected yet
        receipt_url = page.locator("#receipt-link").get_attribute("href")
        assert page.locator("#receipt-url").input_value() == receipt_url
        assert re.fullmatch(rf"{re.escape(gateway_url)}/receipts/[A-Za-z0-9_-]{{40,}}", receipt_url)
        confirmation = page.inner_text("#confirmation").strip()
        # the server's cds_timezone is UTC here: "December 7, 2026, 7:22 PM UTC (UTC+00:00)", to the minute
        assert re.fullmatch(r"[A-Z][a-z]+ \d{1,2}, \d{4}, \d{1,2}:\d\d [AP]M UTC \(UTC\+00:00\)",
                            page.inner_text("#receipt-date").strip())
        page.screenshot(path=str(artifacts_dir / "approved-receipt-link.png"), full_page=True)

        receipt_page = context.new_page()  # as the customer would open the bookmarked link later
        receipt_page.goto(receipt_url)
        assert receipt_page.inner_text("#confirmation").strip() == confirmation
        assert receipt_page.inner_text("#status").strip() == "active"
        receipt_page.click("#revoke")
        receipt_page.wait_for_load_state()
        assert receipt_page.url == receipt_url
        assert receipt_page.inner_text("#status").strip() == "revoked"
        assert receipt_page.locator("#revoke").count() == 0
        receipt_page.screenshot(path=str(artifacts_dir / "receipt-revoked.png"), full_page=True)

        page.click("#continue")
        page.wait_for_load_state()
        landed = urlsplit(page.url)
        assert f"{landed.scheme}://{landed.netloc}{landed.path}" == client.redirect_uri
        query = parse_qs(landed.query)
        assert query["error"] == ["access_denied"] and "code" not in query
        assert query["state"] == ["browser-state"]
    finally:
        context.close()
