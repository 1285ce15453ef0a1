"""Custodian scopes wired into the gateway (issue 5, item 3a) and the import of existing ESPI Authorizations as
server-created Grants (item 3c): metadata, registration, the consent page's custodian implication, and
``greenbridge custodian import-authorizations`` against a real uvicorn sandbox custodian."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from conftest import REPO
from gateway_helpers import bearer, gateway_client, make_config, pkce_pair, register, token
from servers import uvicorn_server
from test_custodian_client import CLIENT_ID, CLIENT_SECRET, approve, client_for, sandbox_env

from sandbox.config import DEFAULT_SCOPES

OTHER_SCOPES = ["FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=24"]


def custodian_toml(base: str, custodian_id: str = "sandbox", scopes=DEFAULT_SCOPES, name: str = "Sandbox P&L",
                   client_id: str = CLIENT_ID, client_secret: str = CLIENT_SECRET) -> str:
    return f"""
[[custodians]]
id = "{custodian_id}"
name = "{name}"
resource_url = "{base}/espi/1_1/resource"
authorize_url = "{base}/oauth/authorize"
token_url = "{base}/oauth/token"
client_id = "{client_id}"
client_secret = "{client_secret}"
scopes = [{", ".join(json.dumps(s) for s in scopes)}]
"""


TWO_CUSTODIANS = (custodian_toml("http://127.0.0.1:9")
                  + custodian_toml("https://other.example", "other", OTHER_SCOPES, "Other Utility"))
USAGE_DETAILS = [{"type": "cds_usage_sandbox", "segment_start": "P1Y", "include_meter_numbers": False,
                  "include_contract_numbers": False, "include_usage_segment_value_types": ["electric_usage_forward"]}]


@pytest.fixture
def client(tmp_path):
    with gateway_client(make_config(tmp_path, extra_toml=TWO_CUSTODIANS)) as test_client:
        yield test_client


def test_metadata_lists_the_custodian_scopes(client):
    metadata = client.get("/.well-known/oauth-authorization-server").json()
    descriptions = metadata["cds_scope_descriptions"]
    for scope_id in ("cds_usage_sandbox", "cds_meters_sandbox", "cds_usage_other", "cds_usage_1"):
        assert scope_id in metadata["scopes_supported"] and scope_id in descriptions
    usage = descriptions["cds_usage_sandbox"]
    assert usage["type"] == "cds_usage" and "Sandbox P&L" in usage["name"]
    assert usage["grant_admin_scope"] == "cds_grant_admin_1"
    assert "Other Utility" in descriptions["cds_usage_other"]["name"]


def test_without_custodian_scopes_nothing_is_added(tmp_path):
    with gateway_client(make_config(tmp_path)) as plain:
        metadata = plain.get("/.well-known/oauth-authorization-server").json()
    assert not [s for s in metadata["scopes_supported"] if s.endswith(("_sandbox", "_other"))]


def test_registration_with_custodian_scopes_makes_a_code_flow_client(client):
    registration = register(client, "cds_client_admin cds_usage_sandbox cds_meters_sandbox cds_usage_1")
    usage = registration.client_for("cds_usage_sandbox")
    assert set(usage["scope"].split()) == {"cds_usage_sandbox", "cds_meters_sandbox", "cds_usage_1"}
    assert usage["response_types"] == ["code"] and "authorization_code" in usage["grant_types"]
    assert registration.client_for("cds_grant_admin_1")["response_types"] == []


def _consent_page(client, registration, scope: str, details=None):
    app_client = registration.client_for(scope.split()[0])
    _verifier, challenge = pkce_pair()
    form = {"response_type": "code", "client_id": app_client["client_id"],
            "redirect_uri": app_client["redirect_uris"][0], "scope": scope, "state": "s-1",
            "code_challenge": challenge, "code_challenge_method": "S256"}
    if details is not None:
        form["authorization_details"] = json.dumps(details)
    pushed = client.post("/oauth/par", data=form, auth=registration.auth_for(scope.split()[0]))
    assert pushed.status_code == 201, pushed.text
    return client.get("/oauth/authorize", params={"client_id": app_client["client_id"],
                                                  "request_uri": pushed.json()["request_uri"]})


def _handle(page) -> str:
    return re.search(r'name="consent" value="([^"]+)"', page.text).group(1)


def test_custodian_scopes_imply_their_custodian(client):
    registration = register(client, "cds_client_admin cds_usage_sandbox cds_usage_1")
    page = _consent_page(client, registration, "cds_usage_sandbox", USAGE_DETAILS)
    assert page.status_code == 200, page.text
    # only the implied custodian is offered, preselected
    assert 'value="sandbox" checked' in page.text and 'value="other"' not in page.text
    # another utility is refused with a clear message, and the form stays usable
    refused = client.post("/oauth/authorize", data={"consent": _handle(page), "decision": "approve",
                                                    "custodian": "other"})
    assert refused.status_code == 400 and "only Sandbox P&amp;L can authorize it" in refused.text
    answer = client.post("/oauth/authorize", data={"consent": _handle(refused), "decision": "approve",
                                                   "custodian": "sandbox"})
    assert answer.status_code == 303, answer.text
    location = answer.headers["location"]
    assert location.startswith("http://127.0.0.1:9/oauth/authorize?")
    assert parse_qs(urlsplit(location).query)["scope"][0] in DEFAULT_SCOPES


def test_generic_scopes_keep_offering_every_custodian(client):
    registration = register(client, "cds_client_admin cds_usage_1")
    details = [{**USAGE_DETAILS[0], "type": "cds_usage_1"}]
    page = _consent_page(client, registration, "cds_usage_1", details)
    assert page.status_code == 200 and 'value="sandbox"' in page.text and 'value="other"' in page.text
    answer = client.post("/oauth/authorize", data={"consent": _handle(page), "decision": "approve",
                                                   "custodian": "other"})
    assert answer.status_code == 303
    assert parse_qs(urlsplit(answer.headers["location"]).query)["scope"] == OTHER_SCOPES


def test_scopes_of_two_custodians_are_refused(client):
    registration = register(client, "cds_client_admin cds_usage_sandbox cds_usage_other")
    page = _consent_page(client, registration, "cds_usage_sandbox cds_usage_other")
    assert page.status_code == 302
    query = parse_qs(urlsplit(page.headers["location"]).query)
    assert query["error"] == ["invalid_scope"] and "several utilities" in query["error_description"][0]


# ------------------------------------------------------------------------------ import-authorizations (item 3c)
@pytest.fixture(scope="module")
def sandbox():
    with uvicorn_server("sandbox.app:create_sandbox_app", env=sandbox_env(), app_dir=REPO,
                        health_path="/healthz") as url:
        yield str(url)


def _customer_authorizations(sandbox: str, tmp_path: Path, count: int = 2) -> list[str]:
    """Customers approve the third party at the sandbox (its authorize form); their authorizationURIs."""
    custodian = client_for(sandbox, tmp_path)
    info = httpx2.get(f"{sandbox}/sandbox.json").json()
    scope = info["third_parties"][0]["scopes"][0]
    uris = []
    for index, customer in enumerate(info["customers"][:count]):
        state = f"import-{index}"
        callback = approve(custodian.authorization_url(scope, state), customer=customer["id"])
        uris.append(custodian.exchange_code(callback, state).authorization_uri)
    return uris


def test_import_authorizations_makes_grants_once(sandbox, tmp_path):
    from bridge.upstream import authorizations_of, has_tokens
    from cds.store.models import Grant, Message
    from greenbridge.commands.custodian import import_authorizations

    uris = _customer_authorizations(sandbox, tmp_path)
    config = make_config(tmp_path, extra_toml=custodian_toml(sandbox))
    with gateway_client(config) as client:
        registration = register(client, "cds_client_admin cds_usage_sandbox cds_meters_sandbox")
        usage = registration.client_for("cds_usage_sandbox")

        result = import_authorizations(config, "sandbox", usage["client_id"])
        created = dict(result.created)
        assert set(uris) <= set(created), result
        assert not result.existing
        # the client-credentials (administrative) Authorization is skipped, not migrated
        assert result.skipped and all(uri not in dict(result.skipped) for uri in uris)

        # the Grants API of the client's registration lists them
        admin = token(client, registration.admin_auth, "cds_client_admin")["access_token"]
        for uri in uris:
            grant = client.get(f"/cds-api/v1/grants/{created[uri]}", headers=bearer(admin))
            assert grant.status_code == 200, grant.text
            body = grant.json()
            assert body["client_id"] == usage["client_id"] and body["status"] == "active"
            assert "cds_usage_sandbox" in body["scope"].split()
            assert {d["type"] for d in body["authorization_details"]} <= {"cds_usage_sandbox", "cds_meters_sandbox"}
        listed = client.get("/cds-api/v1/grants", headers=bearer(admin)).json()
        assert set(created.values()) <= {g["grant_id"] for g in listed["grants"]}

        # … and the Grant Admin flow reaches them
        details = [{"type": "cds_grant_admin_1", "client_id": usage["client_id"], "grant_id": created[uris[0]]}]
        body = token(client, registration.auth_for("cds_grant_admin_1"), "cds_grant_admin_1",
                     authorization_details=details)
        assert body["scope"] == "cds_grant_admin_1" and body["authorization_details"] == details

        gateway = client.app.state.gateway
        with gateway.sessions() as session:
            for uri in uris:
                (row,) = authorizations_of(session, created[uri])
                assert row.authorization_uri == uri and row.custodian_id == "sandbox" and not has_tokens(row)
                assert session.get(Grant, created[uri]).customer_id.startswith("sandbox:")
                # a data set of its own: what its Authorization brings (bulk parts) is read by it alone
                assert session.get(Grant, created[uri]).data_set == created[uri]
            messages = session.query(Message).filter(Message.name == "Grant created").all()
            assert {m.related_uri.rsplit("/", 1)[1] for m in messages} == set(created.values())
            grants_before = session.query(Grant).count()

        # the second run (through the command line) creates nothing
        env = {**os.environ, "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_ISSUER": "http://localhost",
               "GREENBRIDGE_SECRET_KEY": "test-secret-key-" + tmp_path.name,
               "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        run = subprocess.run([sys.executable, "-m", "greenbridge", "custodian", "import-authorizations", "sandbox",
                              "--client", usage["client_id"], "--config", str(tmp_path / "greenbridge.toml")],
                             capture_output=True, text=True, env=env, timeout=120)
        assert run.returncode == 0, run.stderr
        assert "0 created" in run.stderr and "created\t" not in run.stdout
        assert all(f"exists\t{created[uri]}\t{uri}" in run.stdout for uri in uris)
        with gateway.sessions() as session:
            assert session.query(Grant).count() == grants_before
            assert session.query(Message).filter(Message.name == "Grant created").count() == len(created)


def test_import_refuses_unknown_custodian_and_unfit_clients(sandbox, tmp_path):
    from greenbridge.commands.custodian import CustodianCommandError, import_authorizations

    config = make_config(tmp_path, extra_toml=custodian_toml(sandbox))
    with gateway_client(config) as client:
        registration = register(client, "cds_client_admin cds_usage_1")
        with pytest.raises(CustodianCommandError, match="no custodian"):
            import_authorizations(config, "nope", registration.client_for("cds_usage_1")["client_id"])
        with pytest.raises(CustodianCommandError, match="none of custodian"):
            import_authorizations(config, "sandbox", registration.client_for("cds_usage_1")["client_id"])
        with pytest.raises(CustodianCommandError, match="not a code-flow client"):
            import_authorizations(config, "sandbox", registration.client_for("cds_grant_admin_1")["client_id"])
