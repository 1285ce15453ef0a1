"""The consent journey across both OAuth hops: a real uvicorn gateway in front of a real uvicorn sandbox custodian.

The CDS client (registration, PAR, code exchange) and the customer's browser (consent form, the custodian's sign-in,
the redirects) are plain httpx2 in this process; nothing of the gateway runs here except reading its database at the
end. Ports: the sandbox must know the gateway's callback URL and the gateway the sandbox's endpoints, so the
gateway's port is picked first (``free_port``), the sandbox starts with a redirect URI naming it, and the gateway
then starts on that port with a [[custodians]] table naming the sandbox.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from bridge_stack import USAGE_DETAILS, approve_at_gateway, at_sandbox, gateway_on, push, register
from conftest import REPO
from gateway_helpers import COVERAGE_TOML
from servers import HOST, free_port, uvicorn_server

from espi.custodian_client import CustodianClient, Fetched
from espi.sandbox.config import DEFAULT_SCOPES

CUSTODIAN_ID = "sandbox"
SANDBOX_CLIENT, SANDBOX_SECRET = "gateway", "s3cret-" + secrets.token_hex(4)


@dataclass
class Stack:
    gateway: str
    sandbox: str
    database_url: str
    secret_key: str
    gateway_log: Path

    def box(self):
        from gateway.app import build_gateway
        from gateway.config import GatewayConfig

        config = GatewayConfig(issuer=self.gateway, database_url=self.database_url, secret_key=self.secret_key)
        return build_gateway(config, migrate=False)


@contextlib.contextmanager
def start_stack(directory: Path, database_url: str | None = None) -> Iterator[Stack]:
    port = free_port()
    gateway = f"http://{HOST}:{port}"
    sandbox_env = {
        "GREENBRIDGE_SANDBOX_BASE_URL": "http://127.0.0.1:{port}",
        "GREENBRIDGE_SANDBOX_CLIENT_ID": SANDBOX_CLIENT, "GREENBRIDGE_SANDBOX_CLIENT_SECRET": SANDBOX_SECRET,
        "GREENBRIDGE_SANDBOX_REDIRECT_URI": f"{gateway}/custodians/{CUSTODIAN_ID}/callback",
        "GREENBRIDGE_SANDBOX_NOTIFY_URI": f"{gateway}/espi/1_1/Notification",
        "GREENBRIDGE_SANDBOX_SCOPES": "|".join(DEFAULT_SCOPES),
        "GREENBRIDGE_SANDBOX_GENERATE_CUSTOMERS": "2", "GREENBRIDGE_SANDBOX_GENERATE_DAYS": "5",
        "GREENBRIDGE_SANDBOX_NOTIFY_ATTEMPTS": "1",
    }
    with uvicorn_server("espi.sandbox.app:create_sandbox_app", env=sandbox_env, app_dir=REPO,
                        health_path="/healthz") as sandbox:
        scopes = ", ".join(json.dumps(s) for s in DEFAULT_SCOPES)
        config = directory / "greenbridge.toml"
        config.write_text(COVERAGE_TOML + f"""
[[custodians]]
id = "{CUSTODIAN_ID}"
name = "Sandbox Power & Light"
resource_url = "{sandbox}/espi/1_1/resource"
authorize_url = "{sandbox}/oauth/authorize"
token_url = "{sandbox}/oauth/token"
client_id = "{SANDBOX_CLIENT}"
client_secret = "{SANDBOX_SECRET}"
scopes = [{scopes}]
""")
        database_url = database_url or f"sqlite+pysqlite:///{directory}/greenbridge.db"
        secret_key = secrets.token_urlsafe(32)
        env = {"GREENBRIDGE_CONFIG": str(config), "GREENBRIDGE_ISSUER": gateway,
               "GREENBRIDGE_DATA_DIR": str(directory / "var"), "GREENBRIDGE_DATABASE_URL": database_url,
               "GREENBRIDGE_SECRET_KEY": secret_key}
        log_path = directory / "gateway.log"
        with gateway_on(port, env, log_path, log_level="debug"):
            yield Stack(gateway, str(sandbox), database_url, secret_key, log_path)


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with start_stack(tmp_path_factory.mktemp("upstream")) as running:
        yield running


def _journey(stack: Stack) -> None:
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
    answer = browser.get(callback)
    assert answer.status_code == 302, answer.text
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
    assert grant["enabled_scope"] == "" and grant["enabled_authorization_details"] == []
    assert grant["scope"] == "cds_usage_1" and "cds-state" in grant["states"]
    assert len(grant["receipt_confirmations"]) == 1
    assert "token" not in json.dumps(grant).lower()

    # 5. the upstream tokens are stored against the grant, encrypted, and work at the custodian
    from cds import upstream

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
    for value in (stored.access_token, stored.refresh_token, SANDBOX_SECRET):
        assert value not in log


def _custodian_settings(stack: Stack):
    from gateway.config import CustodianConfig

    return CustodianConfig(id=CUSTODIAN_ID, name="Sandbox", resource_url=f"{stack.sandbox}/espi/1_1/resource",
                           authorize_url=f"{stack.sandbox}/oauth/authorize", token_url=f"{stack.sandbox}/oauth/token",
                           client_id=SANDBOX_CLIENT, client_secret=SANDBOX_SECRET, hosts=("127.0.0.1",))


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
    assert browser.get(callback).status_code == 302  # the right custodian's callback still completes


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


@pytest.mark.parametrize("change, named", [
    ({"segment_start": "P2Y"}, "HistoryLength"),  # the sandbox keeps 13 months of history
    ({"include_meter_numbers": True}, "FB_60"),  # and offers no Retail Customer Meter Information
])
def test_a_request_the_custodian_cannot_provide(stack, change, named):
    client = register(stack.gateway)
    details = [{**USAGE_DETAILS[0], **change}]
    authorize_url, _verifier = push(stack.gateway, client, details=details, state="history-state")
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    answer = approve_at_gateway(browser, authorize_url)
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["invalid_authorization_details"] and query["state"] == ["history-state"]
    assert named in query["error_description"][0] and "Sandbox Power & Light" in query["error_description"][0]


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
