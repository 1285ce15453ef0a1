"""The whole third-party journey against a real uvicorn server, driven by Authlib's own OAuth client.

Nothing of the gateway's code runs in the test process: the gateway is a separate uvicorn process configured through
the environment, and every OAuth step goes through ``authlib.integrations.httpx_client.OAuth2Client``.
"""

from __future__ import annotations

import json
import re
import secrets
from urllib.parse import parse_qsl, urlsplit

import httpx2
import pytest
from authlib.integrations.httpx_client import OAuth2Client
from conftest import REPO
from gateway_helpers import COVERAGE_TOML, continue_to_client
from servers import uvicorn_server


@pytest.fixture
def gateway_url(tmp_path, database_url):
    config = tmp_path / "greenbridge.toml"
    config.write_text(COVERAGE_TOML)
    env = {
        "GREENBRIDGE_CONFIG": str(config),
        "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}",
        "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"),
        "GREENBRIDGE_DATABASE_URL": database_url,
        "GREENBRIDGE_SECRET_KEY": secrets.token_urlsafe(32),
    }
    with uvicorn_server("gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO,
                        log_path=tmp_path / "gateway.log", args=["--log-level", "debug"]) as url:
        yield url


def test_third_party_journey(gateway_url):
    log_path = gateway_url.log_path
    gateway_url = str(gateway_url)
    http = httpx2.Client(timeout=30, follow_redirects=False)

    # 1. Discovery: WG1-01 metadata → RFC 8414 metadata.
    metadata = http.get(f"{gateway_url}/.well-known/cds-server-metadata.json").raise_for_status().json()
    assert "oauth" in metadata["capabilities"]
    oauth = http.get(metadata["oauth_metadata"]).raise_for_status().json()
    assert oauth["issuer"] == gateway_url
    assert oauth["code_challenge_methods_supported"] == ["S256"]
    usage_scope = next(s for s, d in oauth["cds_scope_descriptions"].items() if d["type"] == "cds_usage")

    # 2. Registration (RFC 7591, CDS profile).
    response = http.post(oauth["registration_endpoint"],
                         json={"scope": f"cds_client_admin {usage_scope}", "client_name": "Journey App"})
    assert response.status_code == 201, response.text
    admin_id, admin_secret = response.json()["client_id"], response.json()["client_secret"]

    # 3. Admin token with Authlib (client_credentials, client_secret_basic).
    admin = OAuth2Client(admin_id, admin_secret, scope="cds_client_admin",
                         token_endpoint_auth_method="client_secret_basic")
    admin_token = admin.fetch_token(oauth["token_endpoint"], grant_type="client_credentials")
    assert admin_token["scope"] == "cds_client_admin"

    # 4. List clients and credentials: find the code-flow client and its secret.
    clients = admin.get(oauth["cds_clients_api"]).raise_for_status().json()["clients"]
    usage_client = next(c for c in clients if usage_scope in c["scope"].split())
    assert usage_client["cds_status"] == "sandbox"
    credentials = admin.get(oauth["cds_credentials_api"], params={"client_ids": usage_client["client_id"]})
    secret = credentials.raise_for_status().json()["credentials"][0]["client_secret"]
    redirect_uri = usage_client["cds_default_redirect_uri"]

    # 5. PAR with authorization_details; Authlib computes the PKCE S256 challenge.
    app = OAuth2Client(usage_client["client_id"], secret, scope=usage_scope, redirect_uri=redirect_uri,
                       code_challenge_method="S256", token_endpoint_auth_method="client_secret_basic")
    verifier = secrets.token_urlsafe(48)
    details = [{"type": usage_scope, "segment_start": "P1Y", "authorization_form_selection_type":
                "meter_device_selection"}]
    url, state = app.create_authorization_url(oauth["pushed_authorization_request_endpoint"], code_verifier=verifier,
                                              authorization_details=json.dumps(details))
    pushed = dict(parse_qsl(urlsplit(url).query))
    response = app.request("POST", oauth["pushed_authorization_request_endpoint"], data=pushed,
                           withhold_token=True, auth=httpx2.BasicAuth(usage_client["client_id"], secret))
    assert response.status_code == 201, response.text
    request_uri = response.json()["request_uri"]

    # 6. The customer's browser: authorize → consent form → approve.
    page = http.get(oauth["authorization_endpoint"], params={"client_id": usage_client["client_id"],
                                                              "request_uri": request_uri})
    assert page.status_code == 200, page.text
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
    response = http.post(action, data={"consent": handle, "decision": "approve", "customer_id": "customer-1",
                                       "password": "sandbox"})
    # the customer sees their receipt's address, then continues to the third party (issue 14 item 6)
    response = continue_to_client(http, response)
    callback = response.headers["location"]
    assert callback.startswith(redirect_uri)
    receipt = http.get(callback)  # the customer's browser lands on the default redirect URI: the receipt
    assert receipt.status_code == 200 and 'id="confirmation"' in receipt.text

    # 7. Code exchange with the PKCE verifier (Authlib checks state).
    user_token = app.fetch_token(oauth["token_endpoint"], authorization_response=callback, code_verifier=verifier)
    assert user_token["authorization_details"][0]["type"] == usage_scope
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT.*", user_token["authorization_details"][0]["segment_start"])
    grant_ids = user_token["cds_grant_ids"]
    grant = admin.get(f"{oauth['cds_grants_api']}/{grant_ids[0]}").raise_for_status().json()
    assert grant["status"] == "active" and state in grant["states"]

    # 8. Introspection, refresh (rotation), revocation.
    assert app.introspect_token(oauth["introspection_endpoint"], token=user_token["access_token"]).json()["active"]
    refreshed = app.refresh_token(oauth["token_endpoint"], refresh_token=user_token["refresh_token"])
    assert refreshed["refresh_token"] != user_token["refresh_token"]
    assert app.introspect_token(oauth["introspection_endpoint"], token=refreshed["access_token"]).json()["active"]
    app.revoke_token(oauth["revocation_endpoint"], token=refreshed["access_token"]).raise_for_status()
    after = app.introspect_token(oauth["introspection_endpoint"], token=refreshed["access_token"]).json()
    assert after == {"active": False}

    # No secret ever reached a log line (the access log prints request targets, which carry codes and handles).
    code = dict(parse_qsl(urlsplit(callback).query))["code"]
    log = log_path.read_text()
    assert "POST /oauth/token" in log  # the access log is on, so the check below means something
    for value in (admin_secret, secret, admin_token["access_token"], user_token["access_token"],
                   user_token["refresh_token"], refreshed["access_token"], refreshed["refresh_token"], code,
                   request_uri.rsplit(":", 1)[1], verifier, handle):
        assert value not in log
