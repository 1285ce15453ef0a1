"""The OpenAPI 3.1 document (issue 14 item 4): ``/openapi.json`` names every route the gateway serves (and nothing
else), is a valid OpenAPI 3.1 document, its CDS schemas accept the specifications' own examples but for their
documented errata, the server's real objects validate against them, ``/docs/api`` shows it all without a script,
and Schemathesis, over a live uvicorn gateway with a registered client and a customer's data, finds no 5xx and no
response that violates the document.

A route added to gateway/routes needs its entry in gateway/openapi.py ``operations()``:
``test_every_route_is_in_the_document`` names what is missing.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
from pathlib import Path
from typing import Any

import httpx2
import pytest
from conftest import REPO
from gateway_helpers import (
    COVERAGE_TOML,
    bearer,
    consent_flow,
    continue_to_client,
    gateway_client,
    make_config,
    pkce_pair,
    register,
    token,
)
from jsonschema import Draft202012Validator
from starlette.routing import Route

from bridge.ingest import ingest_file, translate_options_for
from cds.schemas import SCHEMAS
from espi.generate import FeedSpec, write_feed

EXAMPLES = REPO.parent / "shared" / "cds-examples"
EXAMPLES_PER_OPERATION = 25


@pytest.fixture
def client(tmp_path):
    with gateway_client(make_config(tmp_path)) as test_client:
        yield test_client


def _validator(name: str) -> Draft202012Validator:
    schemas = {**SCHEMAS, "AuthorizationDetails": {"type": "array",
                                                   "items": {"$ref": "#/components/schemas/AuthorizationDetail"}}}
    return Draft202012Validator({"$ref": f"#/components/schemas/{name}", "components": {"schemas": schemas}},
                                format_checker=Draft202012Validator.FORMAT_CHECKER)


def _problems(name: str, instance: Any) -> set[tuple[str, str]]:
    """(JSON path, message) of every way ``instance`` breaks schema ``name``."""
    return {("$" + "".join(f"[{part!r}]" for part in error.absolute_path), error.message)
            for error in _validator(name).iter_errors(instance)}


# ------------------------------------------------------------------------------------------- routes ↔ document
def test_every_route_is_in_the_document(client):
    routes = {(method, route.path) for route in client.app.routes if isinstance(route, Route)
              for method in route.methods or () if method != "HEAD"}
    document = client.get("/openapi.json").json()
    documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    missing = sorted(routes - documented)
    assert not missing, ("routes without an entry in gateway/openapi.py operations() (add one, with its responses "
                         f"and credentials): {missing}")
    assert not sorted(documented - routes), "entries of gateway/openapi.py without a route"


def test_document_is_valid_openapi_3_1_with_credentials_and_answers(client):
    from openapi_spec_validator import validate

    response = client.get("/openapi.json")
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    document = response.json()
    validate(document)  # raises on any violation of the OpenAPI 3.1 schema
    assert document["openapi"] == "3.1.0" and document["servers"] == [{"url": "http://localhost"}]
    schemes = document["components"]["securitySchemes"]
    assert schemes["clientSecretBasic"] == {**schemes["clientSecretBasic"], "type": "http", "scheme": "basic"}
    assert schemes["clientAdminBearer"]["scheme"] == schemes["customerDataBearer"]["scheme"] == "bearer"
    assert set(schemes["oauth2"]["flows"]["clientCredentials"]["scopes"]) >= {"cds_client_admin", "cds_usage_1"}
    operations = {(method, path): op for path, methods in document["paths"].items() for method, op in methods.items()}
    assert operations[("post", "/oauth/token")]["security"] == [{"clientSecretBasic": []}]
    assert operations[("get", "/cds-api/v1/grants")]["security"] == [{"clientAdminBearer": []}]
    assert operations[("get", "/cds-api/v1/usage-segments")]["security"] == [{"customerDataBearer": []}]
    assert operations[("post", "/oauth/register")]["security"] == []
    for (method, path), operation in operations.items():
        assert any(status.startswith("2") or status.startswith("3") for status in operation["responses"]), path
        if operation["security"]:
            assert "401" in operation["responses"], (method, path)  # what a missing credential gets
        for status, answer in operation["responses"].items():
            if status.startswith("4") and "application/json" in answer.get("content", {}):
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/OAuthError"}
    # every $ref resolves
    text = json.dumps(document)
    assert set(re.findall(r'"#/components/schemas/([A-Za-z]+)"', text)) <= set(document["components"]["schemas"])


# ------------------------------------------------------------------------------------------- the spec's examples
#: example file → the schema it is an instance of
EXAMPLE_SCHEMAS = {
    "wg1-01_server-metadata.json": "ServerMetadata", "wg1-01_coverage-listing.json": "CoverageListing",
    "wg1-02_cds-server-metadata-with-oauth.json": "ServerMetadata",
    "wg1-02_oauth-authorization-server-metadata.json": "AuthorizationServerMetadata",
    "wg1-02_client-registration-request.json": "RegistrationRequest",
    "wg1-02_client-registration-response.json": "RegistrationResponse",
    "wg1-02_token-response-client-admin.json": "TokenResponse", "wg1-02_clients-list.json": "ClientListing",
    "wg1-02_client-get.json": "Client", "wg1-02_client-modify-request.json": "ClientUpdate",
    "wg1-02_client-modify-response.json": "Client", "wg1-02_messages-list.json": "MessageListing",
    "wg1-02_message-create-request.json": "MessageCreate", "wg1-02_message-create-response.json": "Message",
    "wg1-02_message-get.json": "Message", "wg1-02_message-modify-request.json": "MessageUpdate",
    "wg1-02_message-modify-response.json": "Message", "wg1-02_credentials-list.json": "CredentialListing",
    "wg1-02_credential-create-request.json": "CredentialCreate",
    "wg1-02_credential-create-response.json": "Credential", "wg1-02_credential-get.json": "Credential",
    "wg1-02_credential-modify-request.json": "CredentialUpdate",
    "wg1-02_credential-modify-response.json": "Credential", "wg1-02_grants-list.json": "GrantListing",
    "wg1-02_grant-get.json": "Grant", "wg1-02_grant-modify-request.json": "GrantUpdate",
    "wg1-02_grant-modify-response.json": "Grant",
    "wg1-02_authorization-details-grant-admin-token-request.json": "AuthorizationDetails",
    "wg1-02_token-response-grant-admin-server-provided-files.json": "TokenResponse",
    "wg3-01_oauth-authorization-server-metadata.json": "AuthorizationServerMetadata",
    "wg3-01_client-registration-request.json": "RegistrationRequest",
    "wg3-01_client-registration-response.json": "RegistrationResponse",
    "wg3-01_token-response-client-admin.json": "TokenResponse", "wg3-01_clients-list.json": "ClientListing",
    "wg3-01_credentials-list.json": "CredentialListing", "wg3-01_token-response-direct-access.json": "TokenResponse",
    "wg3-01_accounts-list.json": "AccountListing", "wg3-01_bill-statements-list.json": "BillStatementListing",
    "wg3-01_client-modify-request.json": "ClientUpdate", "wg3-01_client-modify-response.json": "Client",
    "wg3-01_authorization-details-authorization-request.json": "AuthorizationDetails",
    "wg3-01_token-response-authorization-code.json": "TokenResponse",
    "wg3-01_service-contracts-list.json": "ServiceContractListing",
    "wg3-01_usage-segments-list.json": "UsageSegmentListing",
    "wg3-01_grants-list-customer-authorized.json": "GrantListing",
    "wg3-01_authorization-details-grant-admin-token-request-customer-authorized.json": "AuthorizationDetails",
    "wg3-01_authorization-details-grant-admin-token-request-server-created.json": "AuthorizationDetails",
    "wg3-01_token-response-grant-admin-customer-authorized.json": "TokenResponse",
    "wg3-01_token-response-grant-admin-server-created.json": "TokenResponse",
    "wg3-01_message-grant-request-create-request.json": "MessageCreate",
    "wg3-01_message-grant-request-create-response.json": "Message",
    "wg3-01_messages-list-grant-request-reply.json": "MessageListing",
    # erratum (cds-spec.md §6.1 item 15, SOURCES.md): the example wraps a single-grant GET in a grants listing
    "wg3-01_grant-get-server-created.json": "GrantListing",
    "wg3-01_accounts-list-server-created-grant.json": "AccountListing",
}
#: not served by this gateway (no cds_server_provided_files scope)
NOT_SERVED = {"wg1-02_server-provided-file-get.json", "wg1-02_server-provided-files-list.json"}
_REQ = "is a required property"
_CLIENTS_ERRATUM = "cds-spec.md §6.3: contacts missing everywhere, client_name missing on several (REQUIRED, §5.2)"
#: example file → {(JSON path, message): the documented erratum (cds-spec.md §6.3, §6.1)}
ERRATA: dict[str, dict[tuple[str, str], str]] = {
    "wg1-01_coverage-listing.json": {
        ("$['coverage_entries'][0]", f"'country' {_REQ}"): "§6.3: the entry lacks the REQUIRED country"},
    "wg1-02_oauth-authorization-server-metadata.json": {
        ("$", f"'cds_timezone' {_REQ}"): "§6.1 item 17, §6.3: no cds_timezone",
        **{(f"$['cds_scope_descriptions'][{scope!r}]", f"'registration_optional' {_REQ}"):
           "§6.3: scope descriptions lack registration_optional"
           for scope in ("cds_client_admin", "cds_grant_admin_1", "cds_server_provided_files_01", "example_custom")},
        ("$['cds_scope_descriptions']['example_custom']", f"'type' {_REQ}"): "§6.3: example_custom lacks type"},
    "wg3-01_oauth-authorization-server-metadata.json": {
        ("$", f"'cds_timezone' {_REQ}"): "§6.1 item 17: cds_timezone appears in neither example"},
    "wg1-02_client-registration-response.json": {("$", f"'contacts' {_REQ}"): _CLIENTS_ERRATUM},
    "wg1-02_client-get.json": {("$", f"'contacts' {_REQ}"): _CLIENTS_ERRATUM},
    "wg1-02_client-modify-response.json": {("$", f"'contacts' {_REQ}"): _CLIENTS_ERRATUM,
                                           ("$", f"'client_name' {_REQ}"): _CLIENTS_ERRATUM},
    "wg1-02_clients-list.json": {
        **{(f"$['clients'][{i}]", f"'contacts' {_REQ}"): _CLIENTS_ERRATUM for i in range(4)},
        **{(f"$['clients'][{i}]", f"'client_name' {_REQ}"): _CLIENTS_ERRATUM for i in (1, 2, 3)}},
    "wg3-01_client-registration-response.json": {("$", f"'contacts' {_REQ}"): _CLIENTS_ERRATUM},
    "wg3-01_client-modify-response.json": {("$", f"'contacts' {_REQ}"): _CLIENTS_ERRATUM},
    "wg3-01_clients-list.json": {
        **{(f"$['clients'][{i}]", f"'contacts' {_REQ}"): _CLIENTS_ERRATUM for i in range(4)},
        **{(f"$['clients'][{i}]", f"'client_name' {_REQ}"): _CLIENTS_ERRATUM for i in (1, 2)}},
    **{name: {("$['grants'][0]['parent']", "[] is not of type 'string', 'null'"):
              "§6.3: WG3 grants have \"parent\": [] instead of null"}
       for name in ("wg3-01_grants-list-customer-authorized.json", "wg3-01_grant-get-server-created.json")},
}


@pytest.mark.skipif(not EXAMPLES.is_dir(), reason=f"CDS examples not available ({EXAMPLES})")
def test_the_specifications_examples_validate_but_for_their_errata():
    files = {path.name for path in EXAMPLES.glob("*.json")}
    assert files == set(EXAMPLE_SCHEMAS) | NOT_SERVED, "an example without a schema to check it against"
    for name, schema in EXAMPLE_SCHEMAS.items():
        found = _problems(schema, json.loads((EXAMPLES / name).read_text()))
        expected = set(ERRATA.get(name, {}))
        assert found == expected, (name, sorted(found - expected), sorted(expected - found))
    # and the erratum above is one: as a Grant, that example is not one
    assert _problems("Grant", json.loads((EXAMPLES / "wg3-01_grant-get-server-created.json").read_text()))


# ------------------------------------------------------------------------------------------- our own objects
def _feed(path: Path) -> Path:
    with open(path, "w", encoding="utf-8") as out:
        write_feed(out, FeedSpec(usage_points=2, days=3, net_metering=True))
    return path


def test_the_gateways_objects_validate(client, tmp_path):
    gateway = client.app.state.gateway
    with gateway.sessions() as session, session.begin():
        ingest_file(session, _feed(tmp_path / "feed.xml"), customer_id="customer-1",
                    options=translate_options_for(gateway.config))
    checks = [("/.well-known/cds-server-metadata.json", None, "ServerMetadata"),
              ("/cds/coverage", None, "CoverageListing"),
              ("/.well-known/oauth-authorization-server", None, "AuthorizationServerMetadata")]
    registration = register(client, "cds_client_admin cds_usage_1")
    admin = bearer(token(client, registration.admin_auth, "cds_client_admin")["access_token"])
    details = [{"type": "cds_usage_1", "include_accounts": True, "include_service_points": True,
                "include_bill_sections": True}]
    tokens = consent_flow(client, registration, authorization_details=details)
    assert _problems("TokenResponse", tokens) == set()
    data = bearer(tokens["access_token"])
    client.post("/cds-api/v1/messages", headers=admin, json={"type": "support_request", "name": "Help",
                                                             "description": "A question"})
    checks += [("/cds-api/v1/clients", admin, "ClientListing"), ("/cds-api/v1/credentials", admin,
                                                                 "CredentialListing"),
               ("/cds-api/v1/grants", admin, "GrantListing"), ("/cds-api/v1/messages", admin, "MessageListing")]
    from cds.schemas import DATA_LISTINGS
    from cds.urls import Urls

    checks += [(Urls("").data_api(listing), data, names[1]) for listing, names in DATA_LISTINGS.items()]
    seen = {}
    for path, headers, schema in checks:
        response = client.get(path, headers=headers or {})
        if headers is data and response.status_code == 403:  # a listing cds_usage_1 does not include
            assert response.json()["error"] == "insufficient_scope" and _problems("OAuthError", response.json()) \
                == set()
            continue
        assert response.status_code == 200, (path, response.text)
        body = response.json()
        assert _problems(schema, body) == set(), (path, sorted(_problems(schema, body))[:5])
        seen[path] = body
    assert seen["/cds-api/v1/usage-segments"]["usage_segments"], "no data to check"
    assert seen["/cds-api/v1/accounts"]["accounts"] and seen["/cds-api/v1/service-points"]["service_points"]
    assert seen["/cds-api/v1/meter-devices"]["meter_devices"]
    grant = seen["/cds-api/v1/grants"]["grants"][0]
    assert _problems("Grant", client.get(grant["uri"].removeprefix("http://localhost"), headers=admin).json()) == \
        set()


def test_the_reference_page_shows_every_operation_without_scripts(client):
    page = client.get("/docs/api")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in page.headers["content-security-policy"]
    document = client.get("/openapi.json").json()
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            assert f'id="{operation["operationId"]}"' in page.text, (method, path)
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page.text
    assert "<script" not in page.text.lower()
    assert not re.findall(r'(?:src|href)="https?://(?!localhost)', page.text)  # nothing loaded from elsewhere
    docs = client.get("/docs/scopes")  # /docs/{page} still serves the scope documentation
    assert docs.status_code == 200


# ------------------------------------------------------------------------------------------- Schemathesis
@pytest.fixture(scope="module")
def live_gateway(tmp_path_factory):
    """A uvicorn gateway (SQLite) with a registered client, an admin token, and a customer's data behind a
    consented grant: the credentials Schemathesis's requests carry."""
    from servers import uvicorn_server

    directory = tmp_path_factory.mktemp("openapi")
    config = directory / "greenbridge.toml"
    config.write_text(COVERAGE_TOML)
    database = f"sqlite+pysqlite:///{directory}/greenbridge.db"
    secret_key = secrets.token_urlsafe(32)
    env = {"GREENBRIDGE_CONFIG": str(config), "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}",
           "GREENBRIDGE_DATA_DIR": str(directory / "var"), "GREENBRIDGE_DATABASE_URL": database,
           "GREENBRIDGE_SECRET_KEY": secret_key}
    with uvicorn_server("gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO,
                        log_path=directory / "gateway.log") as url:
        base = str(url)
        from bridge.config import load_config
        from cds.store.engine import make_engine, make_sessionmaker

        gateway_config = load_config(config, {**env, "GREENBRIDGE_ISSUER": base})
        engine = make_engine(database)
        with make_sessionmaker(engine)() as session, session.begin():
            ingest_file(session, _feed(directory / "feed.xml"), customer_id="customer-1",
                        options=translate_options_for(gateway_config))
        engine.dispose()
        http = httpx2.Client(base_url=base, timeout=30)
        registered = http.post("/oauth/register", json={"scope": "cds_client_admin cds_usage_1",
                                                        "client_name": "Schemathesis"}).json()
        admin = http.post("/oauth/token", auth=(registered["client_id"], registered["client_secret"]),
                          data={"grant_type": "client_credentials", "scope": "cds_client_admin"}).json()
        headers = bearer(admin["access_token"])
        usage = next(c for c in http.get("/cds-api/v1/clients", headers=headers).json()["clients"]
                     if "cds_usage_1" in c["scope"].split())
        secret = http.get("/cds-api/v1/credentials", headers=headers,
                          params={"client_ids": usage["client_id"]}).json()["credentials"][0]["client_secret"]
        verifier, challenge = pkce_pair()
        redirect_uri = usage["cds_default_redirect_uri"]
        pushed = http.post("/oauth/par", auth=(usage["client_id"], secret), data={
            "response_type": "code", "client_id": usage["client_id"], "redirect_uri": redirect_uri,
            "scope": "cds_usage_1", "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"})
        page = http.get("/oauth/authorize", params={"client_id": usage["client_id"],
                                                    "request_uri": pushed.json()["request_uri"]})
        handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
        approved = http.post("/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                       "customer_id": "customer-1", "password": "sandbox"})
        answer = continue_to_client(http, approved)  # the receipt's confirmation page, then Continue
        code = re.search(r"code=([^&]+)", answer.headers["location"]).group(1)
        data = http.post("/oauth/token", auth=(usage["client_id"], secret), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": redirect_uri,
            "code_verifier": verifier}).json()
        assert http.get("/cds-api/v1/usage-segments", headers=bearer(data["access_token"])).json()["usage_segments"]
        http.close()
        yield {"url": base, "basic": (usage["client_id"], secret), "admin": admin["access_token"],
               "data": data["access_token"]}


def test_schemathesis_finds_no_server_error_and_no_answer_outside_the_document(live_gateway):
    """Every operation of /openapi.json with generated requests (Hypothesis through Schemathesis) carrying valid
    credentials for its security scheme: no 5xx, and every status, content type, header and body as documented.
    Bounded for CI: EXAMPLES_PER_OPERATION valid and as many invalid requests per operation (about a minute)."""
    import schemathesis
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        response_headers_conformance,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_url(f"{live_gateway['url']}/openapi.json")
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
              response_schema_conformance]

    basic = base64.b64encode(":".join(live_gateway["basic"]).encode()).decode()

    def credentials(operation) -> dict[str, str]:
        schemes = {name for requirement in operation.definition.raw.get("security", []) for name in requirement}
        if "clientSecretBasic" in schemes:
            return {"Authorization": f"Basic {basic}"}
        if "clientAdminBearer" in schemes:
            return bearer(live_gateway["admin"])
        if "customerDataBearer" in schemes:
            return bearer(live_gateway["data"])
        return {}

    failures: list[str] = []
    calls = 0

    def exercise(operation, mode: GenerationMode) -> None:
        @settings(max_examples=EXAMPLES_PER_OPERATION, phases=[Phase.explicit, Phase.generate], deadline=None,
                  derandomize=True, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def run(case):
            nonlocal calls
            calls += 1
            case.headers = {**(case.headers or {}), **credentials(operation)}
            case.validate_response(case.call(timeout=30), checks=checks)

        try:
            run()
        except Unsatisfiable:  # negative data: nothing of this operation can be invalid (string parameters only)
            assert mode is GenerationMode.NEGATIVE, operation.label
        except (Exception, BaseExceptionGroup) as failure:  # the shrunk example's failure; go on with the others
            failures.append(f"{operation.label} ({mode.value} data): {str(failure)[:2000]}")

    # Valid requests as the document describes them, then invalid ones (wrong types, missing members, bad
    # parameters): both must get documented answers, never a 5xx.
    operations = [result.ok() for result in schema.get_all_operations()]
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
        for operation in operations:
            exercise(operation, mode)
    assert calls > len(operations) * EXAMPLES_PER_OPERATION, (calls, failures[:3])
    assert not failures, "\n\n".join(failures)


def test_the_demo_pages_are_documented_when_they_are_served(tmp_path):
    """The Try-it pages exist only with ``demo`` on; the document follows what the app serves either way."""
    with gateway_client(make_config(tmp_path, demo=True)) as client:
        routes = {(method, route.path) for route in client.app.routes if isinstance(route, Route)
                  for method in route.methods or () if method != "HEAD"}
        document = client.get("/openapi.json").json()
        documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    assert {path for _method, path in routes if path.startswith("/try")} == {"/try", "/try/start", "/try/callback",
                                                                          "/try/usage"}
    assert routes == documented
