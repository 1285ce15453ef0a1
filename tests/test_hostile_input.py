"""Hostile input never gets a 5xx and never changes stored data when it is refused (issue 13 item 4).

First every input of the issue's list of 500s, each answered now with a 400 (or the unified 413) and a JSON
``{"error", "error_description"}`` body, on SQLite and PostgreSQL (NUL reached PostgreSQL as an error). Then a
property-based suite (Hypothesis, bounded by the repo's profiles) feeding every JSON and form endpoint of the
gateway, the admin and data APIs' query strings and the notification receivers random and adversarial bodies,
headers and query strings: no response is ≥ 500, and a refused request leaves every stored table as it was (the
failed-authentication counters excepted: counting failures is their purpose).

In-process (Starlette's TestClient, the real app and store); the body limit on a real uvicorn is in
test_request_limits_on_uvicorn.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from conftest import REPO
from gateway_helpers import BASE_URL, COVERAGE_TOML, bearer, consent_flow, make_config, register, token
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from servers import uvicorn_server
from sqlalchemy import select
from starlette.testclient import TestClient
from test_notification_receiver import CUSTODIANS

from bridge.from_espi import TranslateOptions
from bridge.ingest import ingest_file
from cds.store.models import Base
from cds.urls import Urls
from espi.generate import FeedSpec, write_feed

API = "/cds-api/v1"
SCOPES = "cds_client_admin cds_usage_1 cds_meters_1 cds_grant_admin_1 cds_query_meter_devices_1"
#: Tables a refused request may change: failed client authentications are counted there on purpose.
BOOKKEEPING = {"auth_failures"}
DATA_PATHS = [Urls("").data_api(listing) for listing in ("usage_segments", "meter_devices", "service_points",
                                                         "accounts", "bill_statements")]


# ---------------------------------------------------------------------------------------------- the world
@dataclass
class World:
    """A gateway with a registration, a consent grant over ingested data, messages and a spare credential."""

    client: TestClient
    admin_auth: tuple[str, str]
    usage_auth: tuple[str, str]
    grant_admin_auth: tuple[str, str]
    admin: dict[str, str]  # Authorization header of a cds_client_admin token
    data: dict[str, str]  # Authorization header of a customer-data token
    #: the usage client, its grant, a grant and a client changed by PATCH and PUT (so that the first two keep
    #: working), a message and a spare credential
    ids: dict[str, str]
    other_client: str  # a client of another registration
    client_json: dict[str, Any]  # the Client object of ids["put_client"] (a base for PUT bodies)

    def snapshot(self) -> dict[str, list[tuple]]:
        return snapshot(self.client)


def snapshot(client: TestClient) -> dict[str, list[tuple]]:
    """Every stored row of every table but the bookkeeping ones, in a stable order."""
    gateway = client.app.state.gateway
    result = {}
    with gateway.engine.connect() as connection:
        for table in Base.metadata.sorted_tables:
            if table.name not in BOOKKEEPING:
                rows = connection.execute(select(table)).all()
                result[table.name] = sorted((tuple(row) for row in rows), key=repr)
    return result


def _in_process(config) -> TestClient:
    from gateway.app import create_app

    return TestClient(create_app(config), base_url=BASE_URL, follow_redirects=False,
                      raise_server_exceptions=False)


def build_world(client: TestClient, tmp_path: Path) -> World:
    feed = tmp_path / "feed.xml"
    with feed.open("w") as out:
        write_feed(out, FeedSpec(start=date.today() - timedelta(days=30), days=2))
    with client.app.state.gateway.sessions() as session, session.begin():
        ingest_file(session, feed, customer_id="customer-1", options=TranslateOptions(key_strategy="href"))
    registration = register(client, SCOPES)
    admin = bearer(token(client, registration.admin_auth, "cds_client_admin")["access_token"])
    details = [{"type": "cds_usage_1", "segment_start": "P60D"}]
    first = consent_flow(client, registration, "cds_usage_1", authorization_details=details)
    data = bearer(first["access_token"])
    patched = consent_flow(client, registration, "cds_usage_1", authorization_details=details, state="s2")
    usage_client = registration.client_for("cds_usage_1")["client_id"]
    put_client = registration.client_for("cds_query_meter_devices_1")["client_id"]
    message = client.post(f"{API}/messages", headers=admin, json={"type": "support_request", "name": "n",
                                                                  "description": "d"}).json()
    spare = client.post(f"{API}/credentials", headers=admin, json={"client_id": usage_client}).json()
    other = register(client, "cds_client_admin cds_usage_1").client_for("cds_usage_1")["client_id"]
    ids = {"client": usage_client, "grant": first["cds_grant_ids"][0], "patch_grant": patched["cds_grant_ids"][0],
           "put_client": put_client, "message": message["message_id"], "credential": spare["credential_id"]}
    client_json = client.get(f"{API}/clients/{put_client}", headers=admin).json()
    return World(client, registration.admin_auth, registration.auth_for("cds_usage_1"),
                 registration.auth_for("cds_grant_admin_1"), admin, data, ids, other, client_json)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("hostile")
    with _in_process(make_config(tmp_path)) as client:
        yield build_world(client, tmp_path)


@pytest.fixture(scope="module")
def notify_client(tmp_path_factory):
    """A gateway with custodians configured: the notification receivers (no Redis: jobs are only committed)."""
    with _in_process(make_config(tmp_path_factory.mktemp("notify"), extra_toml=CUSTODIANS)) as client:
        yield client


def assert_error_body(response, status: int = 400) -> dict[str, Any]:
    assert response.status_code == status, (response.status_code, response.text[:300])
    body = response.json()
    assert set(body) == {"error", "error_description"} and body["error"] and body["error_description"], body
    return body


# ---------------------------------------------------------------------------------------------- the 500 list
def _b64_json(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


NON_UTF8_BASIC = {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:\xc3(").decode()}
JSON = {"Content-Type": "application/json"}
FORM = {"Content-Type": "application/x-www-form-urlencoded"}
DEEP = "[" * 100_000 + "]" * 100_000
EDGES = ("0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00Z")


def reported_500s(w: World) -> list[tuple[str, Callable[[], Any], int, str]]:
    """(what, request, status, error) for every input the issue found answered with a 500."""
    c, admin = w.client, w.admin
    ids = w.ids
    cases: list[tuple[str, Callable[[], Any], int, str]] = [
        ("nested JSON, register", lambda: c.post("/oauth/register", content=DEEP, headers=JSON), 400,
         "invalid_client_metadata"),
    ]
    for method, path in (("PUT", f"{API}/clients/{ids['client']}"), ("POST", f"{API}/credentials"),
                         ("POST", f"{API}/messages"), ("PATCH", f"{API}/credentials/{ids['credential']}"),
                         ("PATCH", f"{API}/grants/{ids['grant']}"), ("PATCH", f"{API}/messages/{ids['message']}")):
        cases.append((f"nested JSON, {method} {path}", lambda m=method, p=path: c.request(
            m, p, content=DEEP, headers={**admin, **JSON}), 400, "invalid_request"))
    surrogate = '"\\ud800"'
    cases += [
        ("surrogate in client_name", lambda: c.post("/oauth/register", headers=JSON, content=(
            '{"scope": "cds_client_admin", "client_name": ' + surrogate + "}")), 400, "invalid_client_metadata"),
        ("surrogate in scope", lambda: c.post("/oauth/register", headers=JSON, content=(
            '{"scope": "cds_client_admin \\udfff"}')), 400, "invalid_client_metadata"),
        ("NUL in client_name", lambda: c.post("/oauth/register", json={
            "scope": "cds_client_admin", "client_name": "a\x00b"}), 400, "invalid_client_metadata"),
        ("surrogate in a message", lambda: c.post(f"{API}/messages", headers={**admin, **JSON}, content=(
            '{"type": "support_request", "name": ' + surrogate + ', "description": "d"}')), 400, "invalid_request"),
        ("surrogate in an admin cursor", lambda: c.get(f"{API}/clients", headers=admin, params={
            "cursor": _b64_json(["n", "2026-01-01T00:00:00+00:00", "\ud800"])}), 400, "invalid_request"),
        ("surrogate in a usage-segment cursor", lambda: c.get(DATA_PATHS[0], headers=w.data, params={
            "cursor": _b64_json(["usage_segments", "n", "\udc00"])}), 400, "invalid_request"),
        ('"related_type": []', lambda: c.post(f"{API}/messages", headers=admin, json={
            "type": "support_request", "name": "n", "description": "d", "related_uri": "https://example.com/x",
            "related_type": []}), 400, "invalid_request"),
        ("client_secret_expires_at 2**63", lambda: c.patch(f"{API}/credentials/{ids['credential']}", headers=admin,
                                                           json={"client_secret_expires_at": 2**63}),
         400, "invalid_request"),
        ("client_secret_expires_at 2**40", lambda: c.patch(f"{API}/credentials/{ids['credential']}", headers=admin,
                                                           json={"client_secret_expires_at": 2**40}),
         400, "invalid_request"),
        ("%ED%A0%80 in a PAR form", lambda: c.post("/oauth/par", headers=FORM, auth=w.usage_auth,
                                                  content=b"response_type=code&state=%ED%A0%80"),
         400, "invalid_request"),
        ("NUL in a token form", lambda: c.post("/oauth/token", auth=w.admin_auth, data={
            "grant_type": "client_credentials", "scope": "cds_client_admin\x00"}), 400, "invalid_request"),
        ("NUL in a path", lambda: c.get(f"{API}/clients/a%00b", headers=admin), 400, "invalid_request"),
        ("a Host header that is no host, on the token endpoint", lambda: c.post(
            "/oauth/token", headers={"Host": "%00"}, auth=w.admin_auth,
            data={"grant_type": "client_credentials", "scope": "nope"}), 400, "invalid_scope"),
        ("NUL in a query", lambda: c.get(f"{API}/grants?client_ids=a%00b", headers=admin), 400, "invalid_request"),
    ]
    for endpoint in ("token", "par", "introspect", "revoke"):
        cases.append((f"non-UTF-8 Basic credentials, /oauth/{endpoint}", lambda e=endpoint: c.post(
            f"/oauth/{e}", headers=NON_UTF8_BASIC, data={"grant_type": "client_credentials", "token": "x"}),
            400, "invalid_request"))
    for edge in EDGES:
        for listing in ("credentials", "grants"):
            for name in ("after", "before"):
                cases.append((f"{name}={edge} on {listing}", lambda lst=listing, n=name, e=edge: c.get(
                    f"{API}/{lst}", headers=admin, params={n: e}), 400, "invalid_request"))
        for name in ("after", "before"):
            cases.append((f"{name}={edge} on usage segments", lambda n=name, e=edge: c.get(
                DATA_PATHS[0], headers=w.data, params={n: e}), 400, "invalid_request"))
        cases.append((f"an admin cursor at {edge}", lambda e=edge: c.get(f"{API}/clients", headers=admin, params={
            "cursor": _b64_json(["n", e, "x"])}), 400, "invalid_request"))
    deep_cursor = base64.urlsafe_b64encode(("[" * 5000 + "]" * 5000).encode()).decode()
    for path, headers in (("/cds/coverage", {}), (f"{API}/clients", admin), (DATA_PATHS[0], w.data)):
        cases.append((f"a deeply nested cursor on {path}", lambda p=path, h=headers: c.get(
            p, headers=h, params={"cursor": deep_cursor}), 400, "invalid_request"))
    return cases


def test_every_reported_500_is_a_400_and_changes_nothing(tmp_path, database_url):
    with _in_process(make_config(tmp_path, database_url)) as client:
        w = build_world(client, tmp_path)
        for what, send, status, error in reported_500s(w):
            before = w.snapshot()
            response = send()
            assert assert_error_body(response, status)["error"] == error, what
            assert w.snapshot() == before, what


def test_a_long_state_is_refused_not_echoed(world):
    c = world.client
    client_id = world.ids["client"]
    redirect_uri = f"{BASE_URL}/oauth/default-redirect"
    form = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "scope": "cds_usage_1",
            "state": "s" * 60_000, "code_challenge": "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method": "S256"}
    before = world.snapshot()
    body = assert_error_body(c.post("/oauth/par", data=form, auth=world.usage_auth))
    assert "state" in body["error_description"] and "1024" in body["error_description"]
    # without PAR the request is refused on the error page: no redirect carries the state back
    page = c.get("/oauth/authorize", params={k: form[k] for k in ("client_id", "redirect_uri", "state")})
    assert page.status_code == 400 and "location" not in page.headers and len(page.content) < 10_000
    assert 'data-error="invalid_request"' in page.text
    assert world.snapshot() == before
    # a state within the limit still comes back
    short = c.get("/oauth/authorize", params={"client_id": client_id, "redirect_uri": redirect_uri,
                                              "state": "s" * 1024})
    assert short.status_code == 302 and "s" * 1024 in short.headers["location"]


def test_a_declared_and_a_streamed_oversized_body_get_the_same_json_413(world):
    c = world.client
    limit = c.app.state.gateway.config.max_body_bytes
    body = b"a=" + b"x" * limit
    for method, path, headers in (("POST", "/oauth/token", FORM), ("POST", "/oauth/register", JSON),
                                  ("PUT", f"{API}/clients/{world.ids['client']}", {**world.admin, **JSON}),
                                  ("POST", "/espi/1_1/Notification", {"Content-Type": "application/xml"})):
        declared = assert_error_body(c.request(method, path, content=body, headers=headers), 413)
        streamed = c.request(method, path, content=iter([body[:1000], body[1000:]]), headers=headers)
        assert assert_error_body(streamed, 413) == declared, path
    # a declared length is refused before any route runs: unauthenticated, unknown path alike
    for method, path in (("PUT", f"{API}/clients/{world.ids['client']}"), ("POST", "/nowhere")):
        assert assert_error_body(c.request(method, path, content=body, headers=FORM), 413) == declared


def test_request_limits_on_uvicorn(tmp_path):
    """On a real uvicorn: a declared and a chunked oversized body get the same JSON 413, a NUL in the URL and
    non-UTF-8 Basic credentials a JSON 400, and the server answers normally afterwards."""
    import httpx2

    config = tmp_path / "greenbridge.toml"
    config.write_text(COVERAGE_TOML)
    env = {"GREENBRIDGE_CONFIG": str(config), "GREENBRIDGE_ISSUER": "http://127.0.0.1:{port}",
           "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_SECRET_KEY": "uvicorn-limits"}
    body = b"grant_type=" + b"x" * (1024 * 1024)
    with uvicorn_server("gateway.app:create_app", env=env, health_path="/healthz", app_dir=REPO) as url, \
            httpx2.Client(base_url=str(url), timeout=30) as http:
        declared = assert_error_body(http.post("/oauth/token", content=body, headers=FORM), 413)
        chunked = http.post("/oauth/token", content=iter([body[:4096], body[4096:]]), headers=FORM)
        assert "content-length" not in chunked.request.headers  # really sent chunked
        assert assert_error_body(chunked, 413) == declared
        assert assert_error_body(http.get(f"{API}/clients/a%00b"))["error"] == "invalid_request"
        assert assert_error_body(http.post("/oauth/token", headers={**FORM, **NON_UTF8_BASIC},
                                           content=b"grant_type=client_credentials"))["error"] == "invalid_request"
        assert http.get("/.well-known/cds-server-metadata.json").status_code == 200


# ---------------------------------------------------------------------------------------------- strategies
# Each request is mostly well-formed (the right content type, credentials, field names and value kinds) with a few
# adversarial values, so that it gets past the first checks into the logic behind them; sometimes it is garbage.
def mostly(valid: st.SearchStrategy, other: st.SearchStrategy, tenths: int = 8) -> st.SearchStrategy:
    """``valid`` about ``tenths``/10 of the time, else ``other``."""
    return st.integers(0, 9).flatmap(lambda n: valid if n < tenths else other)


# What no store can hold or no parser expects: refused at the door, and the rest of the request never runs.
HOSTILE_TEXT = st.one_of(st.sampled_from(["\x00", "a\x00b", "\x1f", "\ud800", "\udfff", "x\ud83d", "%ED%A0%80"]),
                         st.text(st.characters(exclude_categories=()), max_size=30))
# Storable but adversarial: the request gets past the door with it.
ADVERSARIAL_TEXT = st.sampled_from([
    "", " ", "\U0001f600", "é", "\u202e", '"', "\\", "%00", "%", "'; DROP TABLE clients; --", "../../etc/passwd",
    "<x/>", "{}", "[]", "null", "infinite", "x" * 5000, "cds_usage_1 " * 300, "https://example.com",
    f"{BASE_URL}{API}/clients/x", "urn:ietf:params:oauth:request_uri:x", "S256", "plain", "code", "Bearer x",
    "Basic x", "1e309", "NaN", "-1", "0",
])
DATES = st.sampled_from([*EDGES, "0001-01-01", "0001-01-02", "9999-12-30", "9999-12-31", "P0D", "P1D", "-P1D",
                         "P99999Y", "P9999Y", "P1Y2M3DT4H5M6S", "PT1S", "PT0S", "P1W", "P", "PT", "infinite",
                         "2026-01-01T00:00:00Z", "2026-01-01", "2026-02-29", "9999-12-30T23:59:59Z",
                         "0001-01-02T00:00:00Z", "0001-01-02T00:00:00+14:00", "2024-01-01T25:00:00Z",
                         "2024-01-01T00:00:00", "2024-01-01T00:00:00.123456789+05:45", "2024-01-01 00:00:00Z"])
TEXT = mostly(st.one_of(ADVERSARIAL_TEXT, DATES, st.text(st.characters(codec="utf-8", exclude_characters="\x00"),
                                                         max_size=30)), HOSTILE_TEXT, tenths=9)
NUMBERS = st.one_of(st.sampled_from([0, -1, 1, 2**31, 2**31 - 1, 2**53, 2**53 - 1, 2**63, -(2**63), 10**400]),
                    st.integers(), st.floats(allow_nan=False, allow_infinity=False))
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(TEXT, inner, max_size=3)), max_leaves=8)
CONTENT_TYPES = st.sampled_from(["application/json", "application/x-www-form-urlencoded", "application/cds+json",
                                 "text/plain", "multipart/form-data; boundary=x", ""])


def fields(required: dict[str, st.SearchStrategy], optional: dict[str, st.SearchStrategy]) -> st.SearchStrategy:
    """A dict of these fields, plus now and then a field nobody expects."""
    known = st.fixed_dictionaries(required, optional=optional)
    extra = st.dictionaries(TEXT, VALUES, max_size=2)
    return st.tuples(known, mostly(st.just({}), extra)).map(lambda pair: {**pair[1], **pair[0]})


def encoded_form(values: st.SearchStrategy[dict]) -> st.SearchStrategy[bytes]:
    as_text = values.map(lambda d: {k: v if isinstance(v, str) else json.dumps(v, default=str) for k, v in d.items()})
    encoded = as_text.map(lambda d: urlencode(d, errors="surrogatepass").encode())
    raw = st.lists(st.sampled_from(["grant_type=", "%ED%A0%80", "%00", "%FF", "=", "&", "%", "+", "a", "scope"]),
                   max_size=12).map(lambda ps: "&".join(ps).encode())
    return mostly(encoded, st.one_of(raw, st.binary(max_size=200)), tenths=9)


def encoded_json(values: st.SearchStrategy) -> st.SearchStrategy[bytes]:
    """JSON text (lone surrogates become \ud800 escapes), deep nests, raw bytes."""
    text = values.map(lambda v: json.dumps(v, default=str).encode())
    deep = st.integers(30, 3000).map(lambda n: ("[" * n + "]" * n).encode())
    return mostly(text, st.one_of(deep, st.binary(max_size=200)), tenths=9)


def basic(auth: tuple[str, str]) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()}


#: Host headers a client may send: nothing of ours may be built from them.
HOSTS = st.sampled_from(["evil.example", "a b", "[::1", "x:notaport", "%00", "localhost:99999999999", "", "a/b?c#d",
                         "127.0.0.1:1"])
BAD_AUTHORIZATION = st.one_of(
    st.just({}), st.binary(max_size=30).map(lambda b: {"Authorization": "Basic " + base64.b64encode(b).decode()}),
    st.sampled_from([{"Authorization": v} for v in ("Basic", "Basic !!!", "Bearer", "Bearer \t", "Digest x",
                                                   "Basic " + "A" * 4000, "Bearer " + "x" * 4000)]))
RAR_FIELDS = ["segment_start", "segment_end", "sync_until", "expires", "start_date", "end_date", "statement_date_start",
              "statement_date_end", "include_usage_segments", "include_usage_segment_value_types", "meter_numbers",
              "meter_types", "service_types", "servicepoint_numbers", "account_numbers", "contract_numbers",
              "addresses", "grant_id", "client_id", "jwk", "merge_selection_with", "allow_scope_modifications",
              "authorization_form_selection_type", "error_if_no_preselections", "include_meter_devices",
              "include_meter_numbers", "include_service_points", "include_accounts", "include_bill_statements"]
RAR_VALUES = mostly(st.one_of(DATES, st.booleans(), st.integers(-3, 3), ADVERSARIAL_TEXT,
                              st.lists(st.one_of(DATES, ADVERSARIAL_TEXT), max_size=3)),
                    st.one_of(SCALARS, st.dictionaries(TEXT, SCALARS, max_size=2)))


def rar_entries(types: list[str], **known: st.SearchStrategy) -> st.SearchStrategy[list[dict[str, Any]]]:
    optional = {name: known.get(name, RAR_VALUES) for name in RAR_FIELDS}
    entry = st.fixed_dictionaries({"type": mostly(st.sampled_from(types), TEXT)}, optional=optional)
    return st.lists(entry, min_size=1, max_size=2)


MAX_EXAMPLES = 300
PROPERTY = settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def check(w: World, send: Callable[[], Any]) -> None:
    """The property: no 5xx; a refused request changed no stored row."""
    before = w.snapshot()
    response = send()
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert w.snapshot() == before


# ---------------------------------------------------------------------------------------------- properties
CODE_CHALLENGE = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


@PROPERTY
@given(data=st.data())
def test_oauth_form_endpoints(world, data):
    """Token (each grant type), PAR, introspection, revocation, the consent form and receipt revocation."""
    ids, redirect = world.ids, f"{BASE_URL}/oauth/default-redirect"
    endpoint = data.draw(st.sampled_from(["token", "par", "introspect", "revoke", "consent", "continue", "receipt"]))
    if endpoint == "token":
        path, auth = "/oauth/token", data.draw(st.sampled_from([world.admin_auth, world.usage_auth,
                                                                world.grant_admin_auth]))
        values = fields({"grant_type": mostly(st.sampled_from(["client_credentials", "authorization_code",
                                                               "refresh_token"]), TEXT)},
                        {"scope": mostly(st.sampled_from(["cds_client_admin", "cds_usage_1", "cds_grant_admin_1"]),
                                         TEXT),
                         "code": TEXT, "redirect_uri": mostly(st.just(redirect), TEXT), "code_verifier": TEXT,
                         "refresh_token": TEXT, "authorization_details": mostly(rar_entries(["cds_grant_admin_1"]),
                                                                                TEXT)})
    elif endpoint == "par":
        path, auth = "/oauth/par", world.usage_auth
        values = fields({"response_type": mostly(st.just("code"), TEXT),
                         "client_id": mostly(st.just(ids["client"]), TEXT),
                         "code_challenge_method": mostly(st.just("S256"), TEXT),
                         "code_challenge": mostly(st.just(CODE_CHALLENGE), TEXT)},
                        {"scope": mostly(st.sampled_from(["cds_usage_1", "cds_meters_1", "cds_usage_1 cds_meters_1"]),
                                         TEXT),
                         "redirect_uri": mostly(st.just(redirect), TEXT), "state": TEXT,
                         "authorization_details": mostly(rar_entries(["cds_usage_1", "cds_meters_1"]), TEXT),
                         "cds_grant_id": mostly(st.just(ids["grant"]), TEXT), "request_uri": TEXT})
    elif endpoint in ("introspect", "revoke"):
        path, auth = f"/oauth/{endpoint}", data.draw(st.sampled_from([world.admin_auth, world.usage_auth]))
        # the world's live tokens are introspected, never revoked (later examples use them)
        live = [world.admin["Authorization"][7:], world.data["Authorization"][7:]] if endpoint == "introspect" else []
        values = fields({"token": mostly(st.sampled_from(live), TEXT) if live else TEXT},
                        {"token_type_hint": mostly(st.sampled_from(["access_token", "refresh_token"]), TEXT)})
    elif endpoint == "consent":
        path, auth = "/oauth/authorize", None
        values = fields({"consent": TEXT}, {"decision": mostly(st.just("approve"), TEXT), "customer_id": TEXT,
                                            "password": TEXT, "custodian": TEXT})
    elif endpoint == "continue":  # the confirmation page's Continue button (issue 14 item 6)
        path, auth = "/oauth/authorize/continue", None
        values = fields({"continue": TEXT}, {"anything": TEXT})
    else:
        path, auth = "/receipts/not-a-receipt-handle/revoke", None
        values = fields({}, {"anything": TEXT})
    body = data.draw(encoded_form(values))
    headers = {"Content-Type": data.draw(mostly(st.just("application/x-www-form-urlencoded"), CONTENT_TYPES))}
    if auth is not None:
        headers.update(data.draw(mostly(st.just(basic(auth)), BAD_AUTHORIZATION, tenths=9)))
    headers.update(data.draw(mostly(st.just({}), HOSTS.map(lambda host: {"Host": host}))))
    check(world, lambda: world.client.post(path, content=body, headers=headers))


@PROPERTY
@given(data=st.data())
def test_json_endpoints(world, data):
    """Registration and every admin POST/PUT/PATCH, from well-formed bodies with adversarial values to garbage."""
    ids = world.ids
    target = data.draw(st.sampled_from(["register", "client", "other client", "credential", "expiry", "grant",
                                        "message", "read"]))
    uri = mostly(st.sampled_from([f"{BASE_URL}{API}/clients/{ids['client']}", f"{BASE_URL}{API}/clients/x",
                                  f"{BASE_URL}{API}/clients/{world.other_client}", "https://example.com/more",
                                  f"{BASE_URL}{API}/messages/{ids['message']}"]), TEXT)
    if target == "register":
        method, path = "POST", "/oauth/register"
        scopes = st.sampled_from(["cds_client_admin", SCOPES, "cds_client_admin cds_query_usage_1"])
        values = fields({"scope": mostly(scopes, TEXT)},
                        {"client_name": TEXT, "contacts": mostly(st.lists(TEXT, max_size=2), VALUES),
                         "client_uri": mostly(st.just("https://example.com"), TEXT), "logo_uri": TEXT,
                         "redirect_uris": VALUES, "cds_x": VALUES})
    elif target in ("client", "other client"):
        method = "PUT"
        path = f"{API}/clients/{ids['put_client'] if target == 'client' else world.other_client}"
        changed = st.dictionaries(st.sampled_from(sorted(world.client_json)), VALUES, max_size=3)
        values = changed.map(lambda change: {**world.client_json, **change})
    elif target == "credential":
        method, path = "POST", f"{API}/credentials"
        values = fields({"client_id": mostly(st.sampled_from([ids["client"], world.other_client]), TEXT)}, {})
    elif target == "expiry":
        method, path = "PATCH", f"{API}/credentials/{ids['credential']}"
        values = fields({"client_secret_expires_at": mostly(NUMBERS, VALUES)}, {})
    elif target == "grant":
        method, path = "PATCH", f"{API}/grants/{ids['patch_grant']}"
        values = fields({}, {"status": mostly(st.sampled_from(["active", "revoked", "suspended"]), TEXT),
                             "authorization_details": rar_entries(["cds_usage_1"]),
                             "enabled_authorization_details": rar_entries(["cds_usage_1"]),
                             "scope": TEXT, "enabled_scope": TEXT, "cds_modified": TEXT, "not_after": DATES})
    elif target == "message":
        method, path = "POST", f"{API}/messages"
        values = fields({"type": mostly(st.sampled_from(["support_request", "grant_request", "private_message",
                                                         "production_request", "client_submission"]), TEXT),
                         "name": mostly(st.just("n"), TEXT), "description": mostly(st.just("d"), TEXT)},
                        {"previous_uri": uri, "related_uri": uri, "related_type": mostly(
                            st.sampled_from(["client", "more_info", "grant"]), VALUES),
                         "grants_requested": st.lists(st.fixed_dictionaries(
                             {"scope": mostly(st.just("cds_usage_1"), TEXT),
                              "authorization_details": rar_entries(["cds_usage_1"])}), max_size=2),
                         "updates_requested": VALUES, "amount": NUMBERS, "currency": mostly(st.just("USD"), TEXT),
                         "attachments": st.lists(st.fixed_dictionaries(
                             {"filename": TEXT, "mime_type": mostly(st.just("text/plain"), TEXT),
                              "data": mostly(st.just("aGVsbG8="), TEXT)}), max_size=2)})
    else:
        method, path = "PATCH", f"{API}/messages/{ids['message']}"
        values = fields({"read": mostly(st.booleans(), VALUES)}, {})
    body = data.draw(encoded_json(values))
    headers = {"Content-Type": data.draw(mostly(st.just("application/json"), CONTENT_TYPES, tenths=9))}
    if target != "register":
        headers.update(data.draw(mostly(st.just(world.admin), BAD_AUTHORIZATION, tenths=9)))
    check(world, lambda: world.client.request(method, path, content=body, headers=headers))


CURSORS = st.one_of(
    st.tuples(st.sampled_from(["n", "p", "x"]), DATES, TEXT).map(lambda v: _b64_json(list(v))),
    st.tuples(st.sampled_from(["a", "b"]), NUMBERS, TEXT).map(lambda v: _b64_json(list(v))),
    st.integers(30, 5000).map(lambda n: base64.urlsafe_b64encode(("[" * n + "]" * n).encode()).decode()),
    st.tuples(st.sampled_from(["usage_segments", "meter_devices"]), st.sampled_from(["n", "p"]), TEXT).map(
        lambda v: _b64_json(list(v))),
    TEXT)


@PROPERTY
@given(data=st.data())
def test_query_strings(world, data):
    """The admin lists and objects, the data listings, the authorization endpoint and the public pages."""
    ids = world.ids
    family = data.draw(st.sampled_from(["admin", "data", "public"]))
    if family == "admin":
        path = data.draw(st.sampled_from([
            f"{API}/clients", f"{API}/credentials", f"{API}/grants", f"{API}/messages",
            f"{API}/clients/{ids['client']}", f"{API}/grants/{ids['grant']}", f"{API}/messages/{ids['message']}",
            f"{API}/credentials/{ids['credential']}", f"{API}/clients/{ids['client']}/cds-server-metadata"]))
        auth = world.admin
    elif family == "data":
        path, auth = data.draw(st.sampled_from(DATA_PATHS)), world.data
    else:
        path, auth = data.draw(st.sampled_from([
            "/oauth/authorize", "/oauth/default-redirect", "/.well-known/cds-server-metadata.json", "/cds/coverage",
            "/.well-known/oauth-authorization-server", "/receipts/x", "/custodians/sandbox/callback", "/"])), {}
    names = ["cursor", "after", "before", "client_ids", "grant_ids", "credential_ids", "message_ids", "list", "ids",
             "q", "meter_numbers", "meter_number", "account_numbers", "contract_numbers", "servicepoint_ids",
             "meterdevice_ids", "client_id", "request_uri", "redirect_uri", "state", "code", "error",
             "error_description", "response_type", "scope"]
    params = data.draw(st.dictionaries(st.sampled_from(names), st.one_of(DATES, TEXT, CURSORS,
                                                                         st.just(ids["client"])), max_size=4))
    query = "&".join(f"{quote(k)}={quote(v, errors='surrogatepass')}" for k, v in params.items())
    raw = data.draw(mostly(st.just(""), st.sampled_from(["&after=%ED%A0%80", "&q=%FF", "&cursor=%", "&x=%00",
                                                         "&before=2024-01-01T00:00:00+14:00"])))
    headers = {**data.draw(mostly(st.just(auth), BAD_AUTHORIZATION, tenths=9)),
               **data.draw(mostly(st.just({}), HOSTS.map(lambda host: {"Host": host})))}
    check(world, lambda: world.client.get(f"{path}?{query}{raw}", headers=headers))


@PROPERTY
@given(data=st.data())
def test_authorization_details_everywhere(world, data):
    """RAR entries with adversarial values (dates at the edges, huge durations, wrong types) wherever a request
    carries authorization details: PAR, client_credentials (Grant Admin), a grant_request Message, a Grant PATCH,
    a Client PUT."""
    c, ids = world.client, world.ids
    target = data.draw(st.sampled_from(["par", "token", "message", "grant", "client"]))
    if target == "token":
        details = data.draw(rar_entries(["cds_grant_admin_1"], grant_id=mostly(st.just(ids["grant"]), TEXT),
                                        client_id=mostly(st.just(ids["client"]), TEXT)))
        form = {"grant_type": "client_credentials", "scope": "cds_grant_admin_1",
                "authorization_details": json.dumps(details, default=str)}
        check(world, lambda: c.post("/oauth/token", data=form, auth=world.grant_admin_auth))
        return
    details = data.draw(rar_entries(["cds_usage_1", "cds_meters_1"]))
    scope = " ".join(dict.fromkeys(d["type"] for d in details if d["type"] in ("cds_usage_1", "cds_meters_1")))
    scope = scope or "cds_usage_1"
    text = json.dumps(details, default=str)
    if target == "par":
        form = {"response_type": "code", "client_id": ids["client"], "scope": scope, "state": "s",
                "redirect_uri": f"{BASE_URL}/oauth/default-redirect", "code_challenge_method": "S256",
                "code_challenge": CODE_CHALLENGE, "authorization_details": text}
        check(world, lambda: c.post("/oauth/par", data=form, auth=world.usage_auth))
    elif target == "message":
        body = {"type": "grant_request", "name": "n", "description": "d",
                "grants_requested": [{"scope": scope, "authorization_details": details}]}
        check(world, lambda: c.post(f"{API}/messages", headers={**world.admin, **JSON},
                                    content=json.dumps(body, default=str)))
    elif target == "grant":
        field = data.draw(st.sampled_from(["authorization_details", "enabled_authorization_details"]))
        check(world, lambda: c.patch(f"{API}/grants/{ids['patch_grant']}", headers={**world.admin, **JSON},
                                     content=json.dumps({field: details}, default=str)))
    else:
        body = {**world.client_json, "cds_default_authorization_details": details, "cds_default_scope": scope}
        check(world, lambda: c.put(f"{API}/clients/{ids['put_client']}", headers={**world.admin, **JSON},
                                   content=json.dumps(body, default=str)))


NOTIFICATION_PIECES = st.sampled_from([
    '<?xml version="1.0"?>', '<BatchList xmlns="http://naesb.org/espi">', "</BatchList>", "<resources>",
    "</resources>", "https://dc.example/espi/1_1/resource/Batch/Subscription/1",
    "https://dc.example/espi/1_1/resource/Batch/Bulk/1", "http://dc.example:1/espi/1_1/resource/Authorization/1",
    "sftp://sftp.dc.example/x", "<!DOCTYPE x [<!ENTITY a 'b'>]>", "&a;", "<x>", "\x00", "\ud800", "]]>", "%00"])


@settings(max_examples=MAX_EXAMPLES // 2, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_notification_receivers(notify_client, data):
    path = data.draw(st.sampled_from(["/espi/1_1/Notification", "/custodians/dc/notify", "/custodians/nope/notify"]))
    pieces = st.lists(NOTIFICATION_PIECES | TEXT, max_size=12).map(
        lambda parts: "".join(parts).encode("utf-8", "surrogatepass"))
    body = data.draw(mostly(pieces, st.binary(max_size=300)))
    content_type = data.draw(st.sampled_from(["application/atom+xml", "application/xml", "text/xml",
                                              "application/json", ""]))
    before = snapshot(notify_client)
    response = notify_client.post(path, content=body, headers={"Content-Type": content_type})
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code >= 400:
        assert snapshot(notify_client) == before


def test_the_property_suite_can_see_a_500(world):
    """The harness detects what it looks for: an endpoint that raises answers 500 through this client (the app
    under test turns uncaught exceptions into 500s rather than into test errors), and a refused request that wrote
    would show in the snapshot."""
    app = world.client.app
    route_count = len(app.router.routes)

    async def boom(request):
        raise RuntimeError("boom")

    app.router.add_route("/__boom", boom, methods=["GET"])
    try:
        assert world.client.get("/__boom").status_code == 500
    finally:
        del app.router.routes[route_count:]
    before = world.snapshot()
    with app.state.gateway.sessions() as session, session.begin():
        from cds.store.models import Message

        session.get(Message, world.ids["message"]).name = "changed"
    assert world.snapshot() != before
    with app.state.gateway.sessions() as session, session.begin():
        session.get(Message, world.ids["message"]).name = "n"
    assert world.snapshot() == before
