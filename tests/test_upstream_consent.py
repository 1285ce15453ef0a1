"""The consent journey across both OAuth hops: a real uvicorn gateway in front of a real uvicorn sandbox custodian.

The CDS client (registration, PAR, code exchange) and the customer's browser (consent form, the custodian's sign-in,
the redirects) are plain httpx2 in this process; nothing of the gateway runs here except reading its database at the
end. The stack is tests/bridge_stack.start_bridge without workers.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from bridge_stack import (
    CUSTODIAN_ID,
    SANDBOX_CLIENT,
    USAGE_DETAILS,
    Bridge,
    approve_at_gateway,
    at_sandbox,
    push,
    register,
    start_bridge,
)
from gateway_helpers import continue_to_client, pkce_pair

from espi.custodian_client import CustodianClient, Fetched
from sandbox.config import DEFAULT_SCOPES


@contextlib.contextmanager
def start_stack(directory: Path, database_url: str | None = None) -> Iterator[Bridge]:
    """Sandbox and gateway (debug access log) without workers: the consent hops alone; grants stay pending."""
    with start_bridge(directory, workers=0, customers=2, days=5, database_url=database_url,
                      log_level="debug") as bridge:
        yield bridge


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with start_stack(tmp_path_factory.mktemp("upstream")) as running:
        yield running


def _journey(stack: Bridge) -> None:
    client = register(stack.gateway)
    authorize_url, verifier = push(stack.gateway, client)
    browser = httpx2.Client(timeout=30, follow_redirects=False)

    # 1. greenbridge's consent page: approve, utility chosen → 303 to the custodian's authorize page
    answer = approve_at_gateway(browser, authorize_url)
    assert answer.status_code == 303, answer.text
    upstream_query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert upstream_query["client_id"] == [SANDBOX_CLIENT]
    assert upstream_query["redirect_uri"] == [f"{stack.gateway}/custodians/{CUSTODIAN_ID}/callback"]
    upstream_scope = upstream_query["scope"][0]
    assert upstream_scope in DEFAULT_SCOPES
    upstream_state = upstream_query["state"][0]
    assert len(upstream_state) >= 32 and upstream_state != "cds-state"

    # 2. the custodian's pages: sign in and approve → 302 to our callback
    callback = at_sandbox(browser, stack.sandbox, answer.headers["location"])
    assert callback.startswith(f"{stack.gateway}/custodians/{CUSTODIAN_ID}/callback?")

    # 3. the callback: code exchanged upstream, grant made, 302 to the CDS client's redirect with code and state
    answer = continue_to_client(browser, browser.get(callback))  # after the receipt page (issue 14)
    landed = answer.headers["location"]
    assert landed.startswith(client.redirect_uri)
    query = parse_qs(urlsplit(landed).query)
    assert query["state"] == ["cds-state"] and query["code"][0]
    receipt = browser.get(landed)  # the default redirect URI shows the receipt
    assert receipt.status_code == 200 and 'id="confirmation"' in receipt.text

    # the callback is one-time: replaying it shows the error page, never a redirect
    replay = browser.get(callback)
    assert replay.status_code == 400 and "invalid_request" in replay.text and "location" not in replay.headers

    # 4. the CDS client's code exchange
    tokens = httpx2.post(f"{stack.gateway}/oauth/token", auth=(client.client_id, client.secret), timeout=30, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": client.redirect_uri,
        "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    (grant_id,) = tokens.json()["cds_grant_ids"]
    grant = httpx2.get(f"{stack.gateway}/cds-api/v1/grants/{grant_id}", timeout=30,
                       headers={"Authorization": f"Bearer {client.admin_token}"}).json()
    assert grant["status"] == "pending" and grant["eta"] is not None
    # pending is valid (WG1-02 §8.2; issue 12): what the customer approved is enabled at once, data still to come;
    # the sandbox serves this request whole, so that is everything approved
    assert grant["enabled_scope"] == grant["scope"]
    assert grant["enabled_authorization_details"] == grant["authorization_details"] != []
    assert grant["scope"] == "cds_usage_1" and "cds-state" in grant["states"]
    assert len(grant["receipt_confirmations"]) == 1
    assert "token" not in json.dumps(grant).lower()

    # 5. the upstream tokens are stored against the grant, encrypted, and work at the custodian
    from bridge import upstream

    gateway = stack.box()
    try:
        with gateway.sessions() as session:
            (row,) = upstream.authorizations_of(session, grant_id)
            stored = upstream.tokens_of(gateway.box, row)
            from cds.store.models import Grant

            customer_id = session.get(Grant, grant_id).customer_id
    finally:
        gateway.engine.dispose()
    assert row.custodian_id == CUSTODIAN_ID and row.scope == upstream_scope
    assert stored.access_token not in row.access_token_encrypted
    assert stored.refresh_token and stored.refresh_token not in (row.refresh_token_encrypted or "")
    assert "/Batch/Subscription/" in row.resource_uri and "/Authorization/" in row.authorization_uri
    assert customer_id.startswith(f"{CUSTODIAN_ID}:") and row.customer_id == customer_id
    custodian = CustodianClient(upstream.endpoints(_custodian_settings(stack)), download_dir=stack.gateway_log.parent)
    fetched = custodian.subscription(stored.resource_uri, stored.access_token)
    assert isinstance(fetched, Fetched) and b"UsagePoint" in fetched.path.read_bytes()

    # no upstream secret reached the gateway's log
    log = stack.gateway_log.read_text()
    assert "GET /custodians/sandbox/callback" in log  # debug access log on: the check below means something
    for value in (stored.access_token, stored.refresh_token, stack.sandbox_secret):
        assert value not in log


def _custodian_settings(stack: Bridge):
    from bridge.config import CustodianConfig

    return CustodianConfig(id=CUSTODIAN_ID, name="Sandbox", resource_url=f"{stack.sandbox}/espi/1_1/resource",
                           authorize_url=f"{stack.sandbox}/oauth/authorize", token_url=f"{stack.sandbox}/oauth/token",
                           client_id=SANDBOX_CLIENT, client_secret=stack.sandbox_secret)


def test_consent_journey_crosses_both_hops(stack):
    _journey(stack)


def test_consent_journey_on_postgresql(tmp_path, postgres_url):
    from servers import create_database, drop_database

    url = create_database(postgres_url)
    try:
        with start_stack(tmp_path, url) as running:
            _journey(running)
    finally:
        drop_database(url)


def test_unknown_state_and_wrong_custodian_show_the_error_page(stack):
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    for path in (f"/custodians/{CUSTODIAN_ID}/callback?code=x&state=forged",
                 f"/custodians/{CUSTODIAN_ID}/callback?code=x",
                 f"/custodians/{CUSTODIAN_ID}/callback?error=access_denied&state=forged"):
        answer = browser.get(stack.gateway + path)
        assert answer.status_code == 400 and "location" not in answer.headers
        assert "Invalid authorization request" in answer.text
    assert browser.get(f"{stack.gateway}/custodians/elsewhere/callback?code=x&state=y").status_code == 404

    # a real state presented at another custodian's callback is refused (and spent)
    client = register(stack.gateway)
    authorize_url, _verifier = push(stack.gateway, client)
    answer = approve_at_gateway(browser, authorize_url)
    state = parse_qs(urlsplit(answer.headers["location"]).query)["state"][0]
    assert browser.get(f"{stack.gateway}/custodians/elsewhere/callback?code=x&state={state}").status_code == 404
    callback = at_sandbox(browser, stack.sandbox, answer.headers["location"])
    assert f"state={state}" in callback
    continue_to_client(browser, browser.get(callback))  # the right custodian's callback still completes


def test_custodian_denial_reaches_the_client_as_access_denied(stack):
    client = register(stack.gateway)
    authorize_url, _verifier = push(stack.gateway, client, state="deny-state")
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    answer = approve_at_gateway(browser, authorize_url)
    callback = at_sandbox(browser, stack.sandbox, answer.headers["location"], decision="deny")
    assert "error=access_denied" in callback
    answer = browser.get(callback)
    assert answer.status_code == 302
    landed = answer.headers["location"]
    assert landed.startswith(client.redirect_uri)
    query = parse_qs(urlsplit(landed).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["deny-state"]
    assert "code" not in query


@pytest.mark.parametrize("change, omitted, enabled", [
    # the sandbox keeps 13 months of history: the window starts there
    ({"segment_start": "P2Y"}, "of history", lambda entry: entry["segment_start"] != "P2Y"),
    # and offers no Retail Customer Meter Information (FB_60)
    ({"include_meter_numbers": True}, "meter numbers", lambda entry: entry["include_meter_numbers"] is False),
])
def test_a_request_the_custodian_covers_in_part_goes_ahead_narrowed(stack, change, omitted, enabled):
    """Include what exists (issue 12 item 1): the consent page says what the utility will not provide before the
    customer approves, the hop goes ahead, and the Grant enables what the utility gives; the receipt keeps the
    list."""
    client = register(stack.gateway)
    details = [{**USAGE_DETAILS[0], **change}]
    authorize_url, verifier = push(stack.gateway, client, details=details, state="partial-state")
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    page = browser.get(authorize_url)
    assert page.status_code == 200
    listed = re.search(rf'<div class="omitted" id="omitted-{CUSTODIAN_ID}">(.*?)</div>', page.text, re.S)
    assert listed and omitted in listed.group(1) and "will not provide" in listed.group(1)
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    answer = browser.post(f"{stack.gateway}/oauth/authorize",
                          data={"consent": handle, "decision": "approve", "custodian": CUSTODIAN_ID})
    assert answer.status_code == 303, answer.text
    callback = at_sandbox(browser, stack.sandbox, answer.headers["location"])
    answer = continue_to_client(browser, browser.get(callback))  # after the receipt page (issue 14)
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["state"] == ["partial-state"] and query["code"][0]
    receipt = browser.get(answer.headers["location"])
    assert receipt.status_code == 200 and 'id="omitted"' in receipt.text and omitted in receipt.text
    tokens = httpx2.post(f"{stack.gateway}/oauth/token", auth=(client.client_id, client.secret), timeout=30, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": client.redirect_uri,
        "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    (grant_id,) = tokens.json()["cds_grant_ids"]
    grant = httpx2.get(f"{stack.gateway}/cds-api/v1/grants/{grant_id}", timeout=30,
                       headers={"Authorization": f"Bearer {client.admin_token}"}).json()
    assert grant["status"] == "pending" and grant["enabled_scope"] == "cds_usage_1"
    (requested,), (granted,) = grant["authorization_details"], grant["enabled_authorization_details"]
    assert requested != granted and enabled(granted)
    assert {k: v for k, v in granted.items() if k not in change} == \
        {k: v for k, v in requested.items() if k not in change}


def test_a_request_no_utility_can_serve_is_refused_at_par(stack):
    """Refused before any customer sees it: the sandbox cannot select by meter number (no FB_60), and a
    preselection is a filter that must hold exactly (serving everything instead would share too much)."""
    client = register(stack.gateway)
    verifier, challenge = pkce_pair()
    details = [{**USAGE_DETAILS[0], "meter_numbers": ["M-1"]}]
    pushed = httpx2.post(f"{stack.gateway}/oauth/par", auth=(client.client_id, client.secret), timeout=30, data={
        "response_type": "code", "client_id": client.client_id, "redirect_uri": client.redirect_uri,
        "scope": "cds_usage_1", "state": "s", "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": json.dumps(details)})
    assert pushed.status_code == 400, pushed.text
    body = pushed.json()
    assert body["error"] == "invalid_authorization_details"
    assert "Sandbox Power & Light" in body["error_description"] and "meter numbers" in body["error_description"]
    del verifier


def test_a_utility_must_be_chosen_and_declining_never_goes_upstream(stack):
    client = register(stack.gateway)
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    authorize_url, _verifier = push(stack.gateway, client)
    page = browser.get(authorize_url)
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    answer = browser.post(f"{stack.gateway}/oauth/authorize", data={"consent": handle, "decision": "approve"})
    assert answer.status_code == 400 and "Choose your utility" in answer.text
    handle = re.search(r'name="consent" value="([^"]+)"', answer.text).group(1)
    answer = browser.post(f"{stack.gateway}/oauth/authorize", data={"consent": handle, "decision": "decline"})
    assert answer.status_code == 302
    assert parse_qs(urlsplit(answer.headers["location"]).query)["error"] == ["access_denied"]
