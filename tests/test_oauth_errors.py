"""Negative paths of the authorization server: each gets the RFC or CDS error code, never a 500.

RFC 6749 §5.2 / §4.1.2.1, RFC 7636, RFC 9126, RFC 9396 §5, CDS-WG1-02 §3–4, §8.3, WG3-01 §9.1.1.
"""

from __future__ import annotations

import json
import re
import time
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from gateway_helpers import (
    TEST_CUSTOMER,
    bearer,
    consent_flow,
    continue_to_client,
    gateway_client,
    make_config,
    pkce_pair,
    register,
    token,
)


@pytest.fixture
def client(tmp_path):
    with gateway_client(make_config(tmp_path, par_seconds=2)) as c:
        yield c


@pytest.fixture
def registration(client):
    return register(client, "cds_client_admin cds_usage_1")


def par_form(registration, **changes):
    app = registration.client_for("cds_usage_1")
    _verifier, challenge = pkce_pair()
    form = {"response_type": "code", "client_id": app["client_id"], "redirect_uri": app["redirect_uris"][0],
            "scope": "cds_usage_1", "state": "s1", "code_challenge": challenge, "code_challenge_method": "S256"}
    form.update(changes)
    return {k: v for k, v in form.items() if v is not None}


def push(client, registration, **changes):
    return client.post("/oauth/par", data=par_form(registration, **changes),
                       auth=registration.auth_for("cds_usage_1"))


def error_of(response) -> str:
    return response.json()["error"]


def test_pkce_missing_is_refused(client, registration):
    response = push(client, registration, code_challenge=None, code_challenge_method=None)
    assert response.status_code == 400 and error_of(response) == "invalid_request"
    assert "PKCE" in response.json()["error_description"]


def test_pkce_plain_is_refused(client, registration):
    response = push(client, registration, code_challenge="a" * 43, code_challenge_method="plain")
    assert response.status_code == 400 and error_of(response) == "invalid_request"
    response = push(client, registration, code_challenge_method=None)  # RFC 7636 default method is plain
    assert response.status_code == 400 and error_of(response) == "invalid_request"


def test_redirect_uri_must_match_exactly(client, registration):
    registered = registration.client_for("cds_usage_1")["redirect_uris"][0]
    for wrong in (registered + "/", registered + "?x=1", registered.upper(), "https://evil.example/cb"):
        response = push(client, registration, redirect_uri=wrong)
        assert response.status_code == 400, wrong
        assert error_of(response) == "invalid_request"


def test_client_secret_post_is_refused(client, registration):
    admin_id, admin_secret = registration.admin_auth
    response = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_client_admin",
                                                 "client_id": admin_id, "client_secret": admin_secret})
    assert response.status_code == 401 and error_of(response) == "invalid_client"
    # and the PAR endpoint likewise
    form = par_form(registration)
    _usage_id, usage_secret = registration.auth_for("cds_usage_1")
    response = client.post("/oauth/par", data={**form, "client_secret": usage_secret})
    assert response.status_code == 401 and error_of(response) == "invalid_client"


def test_wrong_secret_and_unknown_client(client, registration):
    response = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_client_admin"},
                           auth=(registration.admin_id, "wrong"))
    assert response.status_code == 401 and error_of(response) == "invalid_client"
    response = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("nobody", "x"))
    assert response.status_code == 401 and error_of(response) == "invalid_client"


def test_failed_authentication_is_rate_limited(tmp_path):
    with gateway_client(make_config(tmp_path, auth_failures_per_minute=3)) as client:
        registration = register(client)
        codes = [client.post("/oauth/token", data={"grant_type": "client_credentials"},
                             auth=(registration.admin_id, f"wrong-{i}")).status_code for i in range(5)]
        assert codes[:3] == [401, 401, 401]
        assert codes[3:] == [429, 429]
        limited = client.post("/oauth/token", data={"grant_type": "client_credentials"},
                              auth=(registration.admin_id, "wrong"))
        assert int(limited.headers["Retry-After"]) > 0
        # The right secret is never refused (issue 13 changed this: it used to wait out the window too, which let
        # anyone who knows a client_id lock its owner out; docs/security.md, tests/test_auth_limits.py).
        right = client.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=registration.admin_auth)
        assert right.status_code == 200


def test_par_request_uri_is_one_time(client, registration):
    request_uri = push(client, registration).json()["request_uri"]
    client_id = registration.client_for("cds_usage_1")["client_id"]
    first = client.get("/oauth/authorize", params={"client_id": client_id, "request_uri": request_uri})
    assert first.status_code == 200
    second = client.get("/oauth/authorize", params={"client_id": client_id, "request_uri": request_uri})
    assert second.status_code == 400 and 'data-error="invalid_request_uri"' in second.text


def test_par_request_uri_expires(client, registration):
    request_uri = push(client, registration).json()["request_uri"]
    time.sleep(2.2)
    client_id = registration.client_for("cds_usage_1")["client_id"]
    response = client.get("/oauth/authorize", params={"client_id": client_id, "request_uri": request_uri})
    assert response.status_code == 400 and 'data-error="invalid_request_uri"' in response.text


def test_par_request_uri_belongs_to_its_client(client, registration):
    other = register(client)
    request_uri = push(client, registration).json()["request_uri"]
    foreign_id = other.client_for("cds_usage_1")["client_id"]
    response = client.get("/oauth/authorize", params={"client_id": foreign_id, "request_uri": request_uri})
    assert response.status_code == 400


def test_authorize_requires_par(client, registration):
    form = par_form(registration)
    response = client.get("/oauth/authorize", params=form)
    assert response.status_code == 302
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["invalid_request"] and query["state"] == ["s1"]
    # an untrusted redirect_uri gets the Invalid Request Error page, never a redirect
    response = client.get("/oauth/authorize", params={**form, "redirect_uri": "https://evil.example/cb"})
    assert response.status_code == 400 and "Invalid authorization request" in response.text
    response = client.get("/oauth/authorize", params={"client_id": "unknown", "request_uri": "urn:x"})
    assert response.status_code == 400


def test_par_rejects_pushed_request_uri_and_repeats(client, registration):
    response = push(client, registration, request_uri="urn:ietf:params:oauth:request_uri:abc")
    assert response.status_code == 400 and error_of(response) == "invalid_request"
    form = [*list(par_form(registration).items()), ("scope", "cds_usage_1")]
    response = client.post("/oauth/par", content=urlencode(form), auth=registration.auth_for("cds_usage_1"),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert response.status_code == 400 and error_of(response) == "invalid_request"


@pytest.mark.parametrize("details, fragment", [
    ([{"type": "cds_unknown_1"}], "cds_unknown_1"),
    ([{"type": "cds_usage_1", "segment_start": "P10Y"}], "segment_start"),
    ([{"type": "cds_usage_1", "segment_start": 5}], "segment_start"),
    ([{"type": "cds_usage_1", "include_meter_numbers": "yes"}], "include_meter_numbers"),
    ([{"type": "cds_usage_1", "no_such_field": True}], "no_such_field"),
    ([{"type": "cds_usage_1", "authorization_form_selection_type": "telepathy"}], "authorization_form_selection_type"),
    ({"type": "cds_usage_1"}, "array"),
    ("not json", "JSON"),
])
def test_invalid_authorization_details(client, registration, details, fragment):
    raw = details if isinstance(details, str) else json.dumps(details)
    response = push(client, registration, authorization_details=raw)
    assert response.status_code == 400, response.text
    assert error_of(response) == "invalid_authorization_details"
    assert fragment.lower() in response.json()["error_description"].lower()


def test_unregistered_scope(client, registration):
    response = push(client, registration, scope="cds_usage_1 cds_meters_1")
    assert response.status_code == 400 and error_of(response) == "invalid_scope"
    response = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_usage_1"},
                           auth=registration.admin_auth)
    assert response.status_code == 400 and error_of(response) == "invalid_scope"


def test_grant_type_not_allowed_for_client(client, registration):
    response = client.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_usage_1"},
                           auth=registration.auth_for("cds_usage_1"))
    assert response.status_code == 400 and error_of(response) == "unauthorized_client"
    response = client.post("/oauth/token", data={"grant_type": "password", "username": "a", "password": "b"},
                           auth=registration.admin_auth)
    assert response.status_code == 400 and error_of(response) == "unsupported_grant_type"


def _approve(client, registration, form):
    response = client.post("/oauth/par", data=form, auth=registration.auth_for("cds_usage_1"))
    page = client.get("/oauth/authorize", params={"client_id": form["client_id"],
                                                  "request_uri": response.json()["request_uri"]})
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    response = client.post("/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                     "customer_id": TEST_CUSTOMER[0], "password": TEST_CUSTOMER[1]})
    response = continue_to_client(client, response)
    return parse_qs(urlsplit(response.headers["location"]).query)


def test_code_exchange_errors(client, registration):
    verifier, challenge = pkce_pair()
    form = par_form(registration, code_challenge=challenge)
    auth = registration.auth_for("cds_usage_1")
    code = _approve(client, registration, form)["code"][0]
    exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": form["redirect_uri"],
                "code_verifier": verifier}
    for changes, expected in (({"code_verifier": None}, "invalid_request"),
                              ({"code_verifier": "x" * 50}, "invalid_grant"),
                              ({"redirect_uri": form["redirect_uri"] + "x"}, "invalid_grant"),
                              ({"redirect_uri": None}, "invalid_grant")):
        data = {k: v for k, v in {**exchange, **changes}.items() if v is not None}
        response = client.post("/oauth/token", data=data, auth=auth)
        assert response.status_code == 400 and error_of(response) == expected, (changes, response.text)
    assert client.post("/oauth/token", data=exchange, auth=auth).status_code == 200
    reused = client.post("/oauth/token", data=exchange, auth=auth)
    assert reused.status_code == 400 and error_of(reused) == "invalid_grant"


def test_code_is_bound_to_its_client(client, registration):
    other = register(client)
    verifier, challenge = pkce_pair()
    form = par_form(registration, code_challenge=challenge)
    code = _approve(client, registration, form)["code"][0]
    response = client.post("/oauth/token", auth=other.auth_for("cds_usage_1"), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": form["redirect_uri"],
        "code_verifier": verifier})
    assert response.status_code == 400 and error_of(response) == "invalid_grant"


def test_decline_redirects_access_denied(client, registration):
    form = par_form(registration)
    response = client.post("/oauth/par", data=form, auth=registration.auth_for("cds_usage_1"))
    page = client.get("/oauth/authorize", params={"client_id": form["client_id"],
                                                  "request_uri": response.json()["request_uri"]})
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    response = client.post("/oauth/authorize", data={"consent": handle, "decision": "decline"})
    query = parse_qs(urlsplit(response.headers["location"]).query)
    assert query["error"] == ["access_denied"] and query["state"] == ["s1"]
    # the consent form cannot be replayed
    again = client.post("/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                  "customer_id": TEST_CUSTOMER[0], "password": TEST_CUSTOMER[1]})
    assert again.status_code == 400


def test_wrong_customer_password_keeps_the_form(client, registration):
    form = par_form(registration)
    response = client.post("/oauth/par", data=form, auth=registration.auth_for("cds_usage_1"))
    page = client.get("/oauth/authorize", params={"client_id": form["client_id"],
                                                  "request_uri": response.json()["request_uri"]})
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    response = client.post("/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                     "customer_id": TEST_CUSTOMER[0], "password": "nope"})
    assert response.status_code == 401 and "incorrect" in response.text


def test_cds_grant_id_must_be_the_clients(client, registration):
    response = push(client, registration, cds_grant_id="does-not-exist")
    # validated before login: the consent page is not shown, the client gets the CDS error
    client_id = registration.client_for("cds_usage_1")["client_id"]
    page = client.get("/oauth/authorize", params={"client_id": client_id,
                                                  "request_uri": response.json()["request_uri"]})
    assert page.status_code == 302
    assert parse_qs(urlsplit(page.headers["location"]).query)["error"] == ["cds_grant_id_invalid_value"]


def test_reauthorization_updates_the_same_grant(client, registration):
    first = consent_flow(client, registration)
    grant_id = first["cds_grant_ids"][0]
    verifier, challenge = pkce_pair()
    form = par_form(registration, code_challenge=challenge, cds_grant_id=grant_id, state="s2")
    query = _approve(client, registration, form)
    response = client.post("/oauth/token", auth=registration.auth_for("cds_usage_1"), data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": form["redirect_uri"],
        "code_verifier": verifier})
    assert response.json()["cds_grant_ids"] == [grant_id]


def test_refresh_token_rotation_and_reuse_detection(client, registration):
    tokens = consent_flow(client, registration)
    auth = registration.auth_for("cds_usage_1")
    second = client.post("/oauth/token", auth=auth, data={"grant_type": "refresh_token",
                                                          "refresh_token": tokens["refresh_token"]}).json()
    assert second["refresh_token"] != tokens["refresh_token"]
    assert "cds_grant_ids" not in second  # no grant was created or changed (WG1-02 §8.4)
    replay = client.post("/oauth/token", auth=auth, data={"grant_type": "refresh_token",
                                                          "refresh_token": tokens["refresh_token"]})
    assert replay.status_code == 400 and error_of(replay) == "invalid_grant"
    # the replay of a rotated-out token revokes the whole family
    for value in (second["access_token"], second["refresh_token"]):
        assert client.post("/oauth/introspect", data={"token": value}, auth=auth).json() == {"active": False}


def test_refresh_cannot_widen_scope(client, registration):
    tokens = consent_flow(client, registration)
    response = client.post("/oauth/token", auth=registration.auth_for("cds_usage_1"), data={
        "grant_type": "refresh_token", "refresh_token": tokens["refresh_token"],
        "scope": "cds_usage_1 cds_client_admin"})
    assert response.status_code == 400 and error_of(response) == "invalid_scope"


def test_grant_admin_flow(client):
    registration = register(client, "cds_client_admin cds_usage_1")
    grant_id = consent_flow(client, registration)["cds_grant_ids"][0]
    usage_client = registration.client_for("cds_usage_1")
    admin_auth = registration.auth_for("cds_grant_admin_1")
    details = [{"type": "cds_grant_admin_1", "client_id": usage_client["client_id"], "grant_id": grant_id}]
    body = token(client, admin_auth, "cds_grant_admin_1", authorization_details=details)
    assert body["scope"] == "cds_grant_admin_1"
    assert body["authorization_details"] == details
    assert "cds_grant_ids" not in body
    # another registration's grant admin cannot reach this grant
    other = register(client, "cds_client_admin cds_usage_1")
    response = client.post("/oauth/token", auth=other.auth_for("cds_grant_admin_1"), data={
        "grant_type": "client_credentials", "scope": "cds_grant_admin_1",
        "authorization_details": json.dumps(details)})
    assert response.status_code == 400 and error_of(response) == "invalid_authorization_details"
    # exactly one entry
    response = client.post("/oauth/token", auth=admin_auth, data={
        "grant_type": "client_credentials", "scope": "cds_grant_admin_1", "authorization_details": "[]"})
    assert response.status_code == 400 and error_of(response) == "invalid_authorization_details"


def test_client_credentials_grant_ids(client, registration):
    first = token(client, registration.admin_auth, "cds_client_admin")
    assert len(first["cds_grant_ids"]) == 1
    second = token(client, registration.admin_auth, "cds_client_admin")
    assert "cds_grant_ids" not in second  # the same grant is reused, nothing created or changed


def test_revoked_token_stops_working(client, registration):
    access = token(client, registration.admin_auth, "cds_client_admin")["access_token"]
    assert client.post("/oauth/revoke", data={"token": access}, auth=registration.admin_auth).status_code == 200
    assert client.post("/oauth/introspect", data={"token": access},
                       auth=registration.admin_auth).json() == {"active": False}
    assert client.get("/cds-api/v1/clients", headers=bearer(access)).status_code == 401


def test_registration_errors(client):
    for body, fragment in (
        ({"scope": "cds_usage_1"}, "cds_client_admin"),
        ({"scope": "cds_client_admin openid"}, "openid"),
        ({"scope": "cds_client_admin", "client_uri": "not a url"}, "client_uri"),
        ({"scope": 5}, "scope"),
        ([1, 2], "object"),
    ):
        response = client.post("/oauth/register", json=body)
        assert response.status_code == 400, body
        assert response.json()["error"] == "invalid_client_metadata"
        assert fragment in response.json()["error_description"], response.json()
    response = client.post("/oauth/register", content=b"{nope", headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    response = client.post("/oauth/register", content=b'{"scope": "cds_client_admin"}',
                           headers={"Content-Type": "text/plain"})
    assert response.status_code == 400


def test_registration_ignores_redirect_uris_and_creates_the_client_set(client):
    response = client.post("/oauth/register", json={"scope": "cds_client_admin cds_usage_1",
                                                    "redirect_uris": ["https://app.example/cb"]})
    body = response.json()
    assert body["redirect_uris"] == [] and body["scope"] == "cds_client_admin"
    registration = register(client, "cds_client_admin cds_usage_1", redirect_uris=["https://app.example/cb"])
    usage = registration.client_for("cds_usage_1")
    assert usage["redirect_uris"] == [usage["cds_default_redirect_uri"]]
    assert usage["cds_status"] == "sandbox" and "production" not in usage["cds_status_options"]
    assert "disabled" in usage["cds_status_options"]
    grant_admin = registration.client_for("cds_grant_admin_1")
    assert grant_admin["grant_types"] == ["client_credentials"]
    assert set(registration.secrets) == set(registration.clients)


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/par", "/oauth/introspect", "/oauth/revoke",
                                  "/oauth/register", "/oauth/authorize"])
def test_oversized_and_malformed_bodies(client, registration, path):
    big = b"a=" + b"x" * (2 * 1024 * 1024)
    response = client.post(path, content=big, headers={"Content-Type": "application/x-www-form-urlencoded"},
                           auth=registration.admin_auth)
    assert response.status_code == 413
    response = client.post(path, content=b"\xff\xfe=%%%", auth=registration.admin_auth,
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert 400 <= response.status_code < 500
    response = client.post(path, content=b"{]", auth=registration.admin_auth,
                           headers={"Content-Type": "application/json"})
    assert 400 <= response.status_code < 500


def test_client_defaults_fill_a_bare_authorization_request(client, registration):
    """WG3-01 §9.1.1: no scope → cds_default_scope; no authorization_details → the client's default details;
    no redirect_uri → cds_default_redirect_uri."""
    admin = token(client, registration.admin_auth, "cds_client_admin")["access_token"]
    usage = registration.client_for("cds_usage_1")
    current = client.get(usage["cds_client_uri"], headers=bearer(admin)).json()
    defaults = [{"type": "cds_usage_1", "segment_start": "P30D", "include_meter_numbers": False}]
    response = client.put(usage["cds_client_uri"], headers=bearer(admin),
                          json={**current, "cds_default_authorization_details": defaults})
    assert response.status_code == 200, response.text
    verifier, challenge = pkce_pair()
    form = par_form(registration, code_challenge=challenge, scope=None, redirect_uri=None)
    query = _approve(client, registration, form)
    assert query["state"] == ["s1"]
    response = client.post("/oauth/token", auth=registration.auth_for("cds_usage_1"), data={
        "grant_type": "authorization_code", "code": query["code"][0], "code_verifier": verifier})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "cds_usage_1"
    (entry,) = body["authorization_details"]
    assert entry["include_meter_numbers"] is False
    # P30D made absolute at approval, in cds_timezone (UTC here), whole seconds
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", entry["segment_start"])
