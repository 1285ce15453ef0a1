"""Helpers for gateway tests: a configuration on a given database, an in-process client, registration shortcuts.

Used with Starlette's TestClient (in-process ASGI, lifespan run) for API tests; journey tests use a real uvicorn
server from servers.py instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from starlette.testclient import TestClient

from bridge.config import GatewayConfig, load_config

BASE_URL = "http://localhost"
TEST_CUSTOMER = ("customer-1", "sandbox")

COVERAGE_TOML = """
[[coverage]]
id = "demo-electric"
entity_name = "Demo Gas & Electric"
entity_abbreviation = "DG&E"
country = "US"
name = "Demo electric service territory"
type = "geographic"
role = "aggregator"
infrastructure_types = ["distribution_utility"]
commodity_types = ["electricity"]
capabilities = ["oauth"]
geojson_resource = "http://localhost/static/demo-electric.geojson"
created = "2026-01-01T00:00:00Z"
updated = "2026-03-01T00:00:00Z"

[[coverage]]
id = "demo-gas"
entity_name = "Demo Gas & Electric"
country = "US"
name = "Demo gas customers"
type = "logical"
role = "aggregator"
commodity_types = ["natural_gas"]
capabilities = ["oauth"]
created = "2026-01-01T00:00:00Z"
updated = "2026-02-01T00:00:00Z"
"""


def make_config(tmp_path: Path, database_url: str | None = None, *, extra_toml: str = "", **overrides: Any
                ) -> GatewayConfig:
    """A configuration for tests: issuer http://localhost, a data dir under tmp_path, two coverage entries."""
    path = tmp_path / "greenbridge.toml"
    path.write_text(COVERAGE_TOML + extra_toml)
    environ = {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_ISSUER": BASE_URL,
               "GREENBRIDGE_SECRET_KEY": "test-secret-key-" + tmp_path.name}
    if database_url:
        environ["GREENBRIDGE_DATABASE_URL"] = database_url
    config = load_config(path, environ)
    return config.with_overrides(**overrides) if overrides else config


def gateway_client(config: GatewayConfig) -> TestClient:
    from gateway.app import create_app

    return TestClient(create_app(config), base_url=BASE_URL, follow_redirects=False)


@dataclass
class Registration:
    """One dynamic registration: the admin client's credentials plus every client/secret it created."""

    admin_id: str
    admin_secret: str
    clients: dict[str, dict[str, Any]] = field(default_factory=dict)  # client_id -> Client object
    secrets: dict[str, str] = field(default_factory=dict)  # client_id -> client_secret

    @property
    def admin_auth(self) -> tuple[str, str]:
        return (self.admin_id, self.admin_secret)

    def client_for(self, scope: str) -> dict[str, Any]:
        return next(c for c in self.clients.values() if scope in c["scope"].split())

    def auth_for(self, scope: str) -> tuple[str, str]:
        client = self.client_for(scope)
        return (client["client_id"], self.secrets[client["client_id"]])


def register(client: TestClient, scope: str = "cds_client_admin cds_usage_1", **metadata: Any) -> Registration:
    """Register through the API, then read every created client and credential secret back from the store."""
    response = client.post("/oauth/register", json={"scope": scope, "client_name": "Test App", **metadata})
    assert response.status_code == 201, response.text
    body = response.json()
    registration = Registration(body["client_id"], body["client_secret"])
    from cds.store.models import Client, Credential

    gateway = client.app.state.gateway
    with gateway.sessions() as session:
        from cds.registration import client_json

        for row in session.query(Client).filter(Client.registration_id == body["client_id"]):
            registration.clients[row.client_id] = client_json(row, gateway.urls)
            credential = session.query(Credential).filter(Credential.client_id == row.client_id).first()
            if credential is not None:
                registration.secrets[row.client_id] = gateway.box.decrypt(credential.secret_encrypted)
    return registration


def token(client: TestClient, auth: tuple[str, str], scope: str, **extra: Any) -> dict[str, Any]:
    data = {"grant_type": "client_credentials", "scope": scope}
    if "authorization_details" in extra and not isinstance(extra["authorization_details"], str):
        extra["authorization_details"] = json.dumps(extra["authorization_details"])
    response = client.post("/oauth/token", data={**data, **extra}, auth=auth)
    assert response.status_code == 200, response.text
    return response.json()


def bearer(access_token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {access_token}"}


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def continue_to_client(client: Any, approved: Any) -> Any:
    """After approval the customer sees their receipt's link (issue 14 item 6); its Continue button POSTs the
    one-time continuation and gets the redirect to the client (303). ``client``: a TestClient or an httpx2 Client
    (absolute action URL); ``approved``: the approval's response, the confirmation page."""
    assert approved.status_code == 200 and 'id="receipt-link"' in approved.text, approved.text
    handle = re.search(r'name="continue" value="([^"]+)"', approved.text).group(1)
    action = re.search(r'<form method="post" action="([^"]+)" id="continue-form"', approved.text).group(1)
    answer = client.post(action, data={"continue": handle})
    assert answer.status_code == 303, answer.text
    return answer


def receipt_url_of(approved: Any) -> str:
    """The receipt address the confirmation page shows."""
    return re.search(r'id="receipt-link" href="([^"]+)"', approved.text).group(1)


def consent_flow(
    client: TestClient,
    registration: Registration,
    scope: str = "cds_usage_1",
    *,
    authorization_details: list[dict[str, Any]] | None = None,
    state: str = "state-1",
    customer: tuple[str, str] = TEST_CUSTOMER,
) -> dict[str, Any]:
    """PAR → authorize → consent approve → code exchange; returns the token response (with the verifier used)."""
    app_client = registration.client_for(scope.split()[0])
    auth = registration.auth_for(scope.split()[0])
    verifier, challenge = pkce_pair()
    redirect_uri = app_client["redirect_uris"][0]
    form = {"response_type": "code", "client_id": app_client["client_id"], "redirect_uri": redirect_uri,
            "scope": scope, "state": state, "code_challenge": challenge, "code_challenge_method": "S256"}
    if authorization_details is not None:
        form["authorization_details"] = json.dumps(authorization_details)
    response = client.post("/oauth/par", data=form, auth=auth)
    assert response.status_code == 201, response.text
    page = client.get("/oauth/authorize", params={"client_id": app_client["client_id"],
                                                  "request_uri": response.json()["request_uri"]})
    assert page.status_code == 200, page.text
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    response = client.post("/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                     "customer_id": customer[0], "password": customer[1]})
    response = continue_to_client(client, response)
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["state"] == [state]
    response = client.post("/oauth/token", auth=auth, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": redirect_uri,
        "code_verifier": verifier})
    assert response.status_code == 200, response.text
    return response.json()
