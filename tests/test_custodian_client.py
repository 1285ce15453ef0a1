"""The CMD third-party client (espi.custodian_client) against the real sandbox custodian on 127.0.0.1.

Every fetch goes over HTTP to a uvicorn process; every body is parsed with the library's own reader.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from conftest import REPO
from servers import uvicorn_server

from espi.custodian_client import (
    CustodianClient,
    CustodianEndpoints,
    CustodianError,
    Deferred,
    Fetched,
    ForeignURLError,
    with_query,
)
from espi.feed import read_feed

CLIENT_ID, CLIENT_SECRET = "gateway", "s3cret-" + secrets.token_hex(4)
REDIRECT = "http://127.0.0.1:9/custodians/sandbox/callback"  # never contacted: the test reads the Location


def sandbox_env(**extra: str) -> dict[str, str]:
    return {"GREENBRIDGE_SANDBOX_BASE_URL": "http://127.0.0.1:{port}",
            "GREENBRIDGE_SANDBOX_CLIENT_ID": CLIENT_ID, "GREENBRIDGE_SANDBOX_CLIENT_SECRET": CLIENT_SECRET,
            "GREENBRIDGE_SANDBOX_REDIRECT_URI": REDIRECT,
            "GREENBRIDGE_SANDBOX_NOTIFY_URI": "http://127.0.0.1:9/espi/1_1/Notification",
            "GREENBRIDGE_SANDBOX_GENERATE_CUSTOMERS": "2", "GREENBRIDGE_SANDBOX_GENERATE_DAYS": "5",
            "GREENBRIDGE_SANDBOX_NOTIFY_ATTEMPTS": "1", **extra}


@pytest.fixture(scope="module")
def sandbox():
    with uvicorn_server("sandbox.app:create_sandbox_app", env=sandbox_env(), app_dir=REPO,
                        health_path="/healthz") as url:
        yield str(url)


def client_for(base: str, tmp_path: Path) -> CustodianClient:
    endpoints = CustodianEndpoints(resource_url=f"{base}/espi/1_1/resource", authorize_url=f"{base}/oauth/authorize",
                                   token_url=f"{base}/oauth/token", client_id=CLIENT_ID, client_secret=CLIENT_SECRET)
    return CustodianClient(endpoints, redirect_uri=REDIRECT, download_dir=tmp_path)


def approve(authorize_url: str, customer: str = "1") -> str:
    """The customer at the custodian: sign in and approve (the sandbox's one-POST form), return the redirect."""
    http = httpx2.Client(timeout=30, follow_redirects=False)
    page = http.get(authorize_url)
    assert page.status_code == 200, page.text
    params = dict(parse_qsl(urlsplit(authorize_url).query))
    info = http.get(authorize_url.split("/oauth/")[0] + "/sandbox.json").json()
    customer_id = info["customers"][0]["id"] if customer == "1" else customer
    action = authorize_url.split("?")[0]
    response = http.post(action, data={**params, "customer_id": customer_id, "password": "sandbox",
                                       "decision": "approve"})
    assert response.status_code in (302, 303), response.text
    return response.headers["location"]


def connect(sandbox: str, tmp_path: Path, scope_with: str = ""):
    client = client_for(sandbox, tmp_path)
    scopes = httpx2.get(f"{sandbox}/sandbox.json").json()["third_parties"][0]["scopes"]
    scope = next(s for s in scopes if scope_with in s)
    state = secrets.token_urlsafe(16)
    url = client.authorization_url(scope, state)
    assert f"state={state}" in url and "client_id=gateway" in url
    callback = approve(url)
    return client, client.exchange_code(callback, state)


def test_code_flow_keeps_the_espi_uris_and_refreshes(sandbox, tmp_path):
    client, tokens = connect(sandbox, tmp_path)
    assert tokens.resource_uri and "/Batch/Subscription/" in tokens.resource_uri
    assert tokens.authorization_uri and "/Authorization/" in tokens.authorization_uri
    assert tokens.refresh_token and tokens.expires_at is not None
    assert tokens.access_token not in repr(tokens)
    refreshed = client.refresh(tokens.refresh_token)
    assert refreshed.access_token != tokens.access_token


def test_state_mismatch_and_refused_consent(sandbox, tmp_path):
    client = client_for(sandbox, tmp_path)
    scope = httpx2.get(f"{sandbox}/sandbox.json").json()["third_parties"][0]["scopes"][0]
    callback = approve(client.authorization_url(scope, "right-state"))
    with pytest.raises(CustodianError):
        client.exchange_code(callback, "wrong-state")
    with pytest.raises(CustodianError, match="refused"):
        client.exchange_code(REDIRECT + "?error=access_denied&state=x", "x")


def test_every_resource_kind_is_fetched_and_parsed(sandbox, tmp_path):
    client, tokens = connect(sandbox, tmp_path)
    subscription = client.subscription(tokens.resource_uri, tokens.access_token)
    assert isinstance(subscription, Fetched) and subscription.size > 0
    graph = read_feed(subscription.path)
    assert graph.graph.usage_points
    usage_point_id = graph.graph.usage_points[0].self_href.rstrip("/").rsplit("/", 1)[1]
    one = client.usage_point(tokens.resource_uri, usage_point_id, tokens.access_token)
    assert isinstance(one, Fetched) and len(read_feed(one.path).graph.usage_points) == 1

    admin = client.client_credentials()
    for fetched in (client.authorizations(admin.access_token), client.authorization(tokens.authorization_uri,
                                                                                     admin.access_token)):
        assert isinstance(fetched, Fetched)
        kinds = {r.name for entry in read_feed(fetched.path).entries for r in entry.resources}
        assert "Authorization" in kinds
    status = client.service_status(admin.access_token)
    assert isinstance(status, Fetched) and b"currentStatus" in status.path.read_bytes()
    # ApplicationInformation with the registration token (client_credentials, FB_36_40; resourceURI names it)
    registration = client.client_credentials("FB=36_40")
    info = client.application_information(registration.resource_uri, registration.access_token)
    application = read_feed(info.path).entries[0].first("ApplicationInformation").value
    assert application.client_id == CLIENT_ID and application.scopes
    # Batch/Bulk with a bulk client token (BR=1): every subscription of the bulk set, as one feed
    connect(sandbox, tmp_path, scope_with="BR=1")  # a customer joins bulk set 1
    bulk_token = client.client_credentials("FB=1_3_4_5_10_11_35;BlockDuration=daily;BR=1")
    bulk = client.bulk("1", bulk_token.access_token)
    assert isinstance(bulk, Fetched) and read_feed(bulk.path).graph.usage_points
    # the customer's token may not read the third party's Authorization list (ESPI §3.9)
    with pytest.raises(CustodianError) as error:
        client.authorizations(tokens.access_token)
    assert error.value.status in (401, 403)


def test_query_parameters_narrow_and_invalid_ones_are_400(sandbox, tmp_path):
    client, tokens = connect(sandbox, tmp_path)
    whole = client.subscription(tokens.resource_uri, tokens.access_token)
    feed = read_feed(whole.path)
    blocks = [e for e in feed.entries if e.seq in feed.blocks]
    published = sorted(e.published for e in blocks if e.published)
    narrow_feed = read_feed(client.subscription(tokens.resource_uri, tokens.access_token,
                                                published_min=published[-1]).path)
    narrow_blocks = [e for e in narrow_feed.entries if e.seq in narrow_feed.blocks]
    assert 0 < len(narrow_blocks) < len(blocks)
    with pytest.raises(CustodianError) as error:
        client.get(tokens.resource_uri + "?published-min=yesterday", tokens.access_token)
    assert error.value.status == 400
    assert "published-min=2025-01-01T00:00:00Z" in with_query("https://x/y", published_min=published[0].replace(
        year=2025, month=1, day=1, hour=0, minute=0, second=0, microsecond=0))


def test_foreign_urls_are_never_fetched(sandbox, tmp_path):
    client, tokens = connect(sandbox, tmp_path)
    for url in ("https://evil.example/espi/1_1/resource/Batch/Subscription/1", "ftp://127.0.0.1/x",
                "http://10.0.0.1/x"):
        with pytest.raises(ForeignURLError):
            client.get(url, tokens.access_token)
    assert not list(tmp_path.iterdir())  # nothing was even started


def test_deferred_answer_is_reported_not_raised(tmp_path):
    with uvicorn_server("sandbox.app:create_sandbox_app", env=sandbox_env(GREENBRIDGE_SANDBOX_DEFER="30"),
                        app_dir=REPO, health_path="/healthz") as url:
        client, tokens = connect(str(url), tmp_path)
        answer = client.subscription(tokens.resource_uri, tokens.access_token)
        assert isinstance(answer, Deferred) and answer.url == tokens.resource_uri
        assert answer.retry_after is None or answer.retry_after >= 0
        assert not list(tmp_path.glob("*.part")) and not list(tmp_path.glob("*.xml"))
