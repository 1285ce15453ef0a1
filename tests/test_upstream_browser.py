"""Both consent pages in headless Chromium (JavaScript off): greenbridge's, then the sandbox custodian's.

The customer approves the CDS request and picks their utility at the gateway, signs in and approves at the sandbox,
and lands on the CDS client's redirect URI with a code (the gateway's default redirect URI: the receipt).
Screenshots of every page go to tests/artifacts/.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from bridge_stack import CUSTODIAN_ID, push, register
from test_upstream_consent import start_stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with start_stack(tmp_path_factory.mktemp("upstream-browser")) as running:
        yield running


def test_both_consent_pages_in_chromium(stack, browser, artifacts_dir):
    client = register(stack.gateway, "Upstream Test App")
    authorize_url, _verifier = push(stack.gateway, client, state="browser-state")
    customer = httpx2.get(f"{stack.sandbox}/sandbox.json", timeout=30).json()["customers"][0]["id"]
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(authorize_url)
        assert "Upstream Test App" in page.inner_text("#requester")
        assert "Sandbox Power & Light" in page.inner_text("#custodians")
        assert page.locator("#password").count() == 0
        page.screenshot(path=str(artifacts_dir / "upstream-1-gateway-consent.png"), full_page=True)

        page.check(f"#custodian-{CUSTODIAN_ID}")
        page.click("#approve")
        page.wait_for_load_state()
        assert page.url.startswith(f"{stack.sandbox}/oauth/authorize?")
        page.screenshot(path=str(artifacts_dir / "upstream-2-sandbox-signin.png"), full_page=True)

        page.fill("#customer_id", customer)
        page.fill("#password", "sandbox")
        page.click("#signin-button")
        page.wait_for_load_state()
        assert page.locator("#approve").count() == 1
        page.screenshot(path=str(artifacts_dir / "upstream-3-sandbox-consent.png"), full_page=True)

        page.click("#approve")
        page.wait_for_load_state()
        # back at the gateway: the receipt's address to keep, before continuing (issue 14 item 6)
        assert page.url.startswith(f"{stack.gateway}/custodians/{CUSTODIAN_ID}/callback?")
        receipt_url = page.locator("#receipt-link").get_attribute("href")
        assert receipt_url.startswith(f"{stack.gateway}/receipts/")
        page.screenshot(path=str(artifacts_dir / "upstream-4-receipt-link.png"), full_page=True)
        page.click("#continue")
        page.wait_for_load_state()
        landed = urlsplit(page.url)
        assert f"{landed.scheme}://{landed.netloc}{landed.path}" == client.redirect_uri
        query = parse_qs(landed.query)
        assert query["state"] == ["browser-state"] and query["code"][0]
        assert page.locator("#confirmation").inner_text().strip()
        page.screenshot(path=str(artifacts_dir / "upstream-5-receipt.png"), full_page=True)

        # later, from the kept link: the receipt, and a revoke without signing in
        page.goto(receipt_url)
        assert page.inner_text("#status").strip() == "pending"  # no workers here: the data never came
        page.click("#revoke")
        page.wait_for_load_state()
        assert page.url == receipt_url and page.inner_text("#status").strip() == "revoked"
        page.screenshot(path=str(artifacts_dir / "upstream-6-revoked.png"), full_page=True)
    finally:
        context.close()
    for name in ("upstream-1-gateway-consent", "upstream-2-sandbox-signin", "upstream-3-sandbox-consent"):
        assert (artifacts_dir / f"{name}.png").stat().st_size > 1000
