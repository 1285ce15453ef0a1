"""The sandbox custodian's authorize page in headless Chromium with JavaScript off.

A sandbox customer signs in, chooses what to share (scope and services) and approves; the browser lands on the
third party's redirect URI with a code, which the third party exchanges for the scope the customer chose.
Screenshots of the sign-in and consent pages are left in tests/artifacts/.
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from test_sandbox import CLASSIC_SCOPE, Receiver, exchange, feed_of, get, start_sandbox


@pytest.fixture(scope="module")
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sandbox(receiver, tmp_path_factory):
    with start_sandbox(tmp_path_factory.mktemp("sandbox-browser"), receiver) as url:
        yield str(url)


def _authorize_url(sandbox: str, receiver: Receiver, state: str) -> str:
    return (f"{sandbox}/oauth/authorize?response_type=code&client_id=third_party"
            f"&redirect_uri={receiver.url}/callback&state={state}")


def test_sign_in_and_approve_in_chromium(sandbox, receiver, browser, artifacts_dir):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(_authorize_url(sandbox, receiver, "browser-state"))
        assert "Test Third Party" in page.inner_text("#requester")
        page.screenshot(path=str(artifacts_dir / "sandbox-signin.png"), full_page=True)
        page.fill("#customer_id", "customer-2")
        page.fill("#password", "sandbox")
        page.click("#signin-button")
        page.wait_for_load_state()
        assert page.locator("#consent").count() == 1
        assert page.locator('input[name="usage_point"]').count() == 3
        page.check(f'input[name="espi_scope"][value="{CLASSIC_SCOPE}"]')
        page.uncheck('input[name="usage_point"][value="3"]')
        page.screenshot(path=str(artifacts_dir / "sandbox-consent.png"), full_page=True)
        page.click("#approve")
        page.wait_for_load_state()
        landed = urlsplit(page.url)
        assert f"{landed.scheme}://{landed.netloc}{landed.path}" == f"{receiver.url}/callback"
        query = parse_qs(landed.query)
        assert query["state"] == ["browser-state"]
        code = query["code"][0]
        assert page.inner_text("#code") == code
    finally:
        context.close()
    token = exchange(sandbox, receiver, code).json()
    assert token["scope"] == CLASSIC_SCOPE
    feed = feed_of(get(token["resourceURI"], token["access_token"]))
    assert sorted(n.self_href.rsplit("/", 1)[1] for n in feed.graph.usage_points if not n.implicit) == ["1", "2"]


def test_wrong_password_then_deny_in_chromium(sandbox, receiver, browser):
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(_authorize_url(sandbox, receiver, "deny-state"))
        page.fill("#customer_id", "customer-1")
        page.fill("#password", "not-the-password")
        page.click("#signin-button")
        page.wait_for_load_state()
        assert "wrong password" in page.inner_text("#message")
        page.click("#deny")
        page.wait_for_load_state()
        query = parse_qs(urlsplit(page.url).query)
        assert query["error"] == ["access_denied"] and query["state"] == ["deny-state"]
    finally:
        context.close()
