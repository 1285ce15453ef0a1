"""The consent page in a real browser (headless Chromium) against a real uvicorn gateway.

The page must work without JavaScript (plain HTML form); the test disables JavaScript to prove it, signs in the test
customer, approves, and follows the redirect to the client's redirect URI with a code. A screenshot of the consent
page is left in tests/artifacts/ for a person to look at.
"""

from __future__ import annotations

import json
import secrets
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from conftest import REPO
from gateway_helpers import COVERAGE_TOML, pkce_pair
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


def _pushed_request(base: str) -> tuple[dict, str]:
    http = httpx2.Client(base_url=base, timeout=30)
    registered = http.post("/oauth/register", json={"scope": "cds_client_admin cds_usage_1",
                                                    "client_name": "Browser Test App",
                                                    "client_uri": "https://app.example/"}).json()
    admin = (registered["client_id"], registered["client_secret"])
    access = http.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_client_admin"},
                       auth=admin).json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    clients = http.get("/cds-api/v1/clients", headers=headers).json()["clients"]
    usage = next(c for c in clients if "cds_usage_1" in c["scope"].split())
    credentials = http.get("/cds-api/v1/credentials", headers=headers,
                           params={"client_ids": usage["client_id"]}).json()["credentials"]
    _verifier, challenge = pkce_pair()
    pushed = http.post("/oauth/par", auth=(usage["client_id"], credentials[0]["client_secret"]), data={
        "response_type": "code", "client_id": usage["client_id"], "redirect_uri": usage["cds_default_redirect_uri"],
        "scope": "cds_usage_1", "state": "browser-state", "code_challenge": challenge,
        "code_challenge_method": "S256",
        "authorization_details": json.dumps([{"type": "cds_usage_1", "segment_start": "P2Y"}]),
    })
    assert pushed.status_code == 201, pushed.text
    return usage, pushed.json()["request_uri"]


def test_consent_form_in_chromium(gateway_url, browser, artifacts_dir):
    usage, request_uri = _pushed_request(gateway_url)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{gateway_url}/oauth/authorize?client_id={usage['client_id']}&request_uri={request_uri}")
        assert "Browser Test App" in page.inner_text("#requester")
        assert page.locator("section.request").count() == 1
        assert "Usage from" in page.inner_text("section.request")
        page.screenshot(path=str(artifacts_dir / "consent-page.png"), full_page=True)

        page.fill("#customer_id", "customer-1")
        page.fill("#password", "sandbox")
        page.click("#approve")
        page.wait_for_load_state()
        landed = urlsplit(page.url)
        assert f"{landed.scheme}://{landed.netloc}{landed.path}" == usage["cds_default_redirect_uri"]
        query = parse_qs(landed.query)
        assert query["state"] == ["browser-state"] and query["code"][0]
        # the default redirect URI shows the customer their Authorization Receipt
        assert page.locator("#confirmation").inner_text().strip()
        assert page.locator('meta[name="robots"]').get_attribute("content").startswith("noindex")
        page.screenshot(path=str(artifacts_dir / "receipt-page.png"), full_page=True)
    finally:
        context.close()


def test_declining_in_chromium(gateway_url, browser):
    usage, request_uri = _pushed_request(gateway_url)
    context = browser.new_context(java_script_enabled=False)
    try:
        page = context.new_page()
        page.goto(f"{gateway_url}/oauth/authorize?client_id={usage['client_id']}&request_uri={request_uri}")
        page.click("#decline")
        page.wait_for_load_state()
        query = parse_qs(urlsplit(page.url).query)
        assert query["error"] == ["access_denied"]
        assert "did not complete" in page.inner_text("body")
    finally:
        context.close()
