"""The CDS-WG1-02 admin APIs end to end (Clients §5, Messages §6, Credentials §7, Grants §8), on SQLite and
PostgreSQL: every endpoint, filter, ordering and page, editable and immutable fields, status codes, changelog
Messages, and the security effects (expired credentials and closed grants kill their tokens at once)."""

from __future__ import annotations

import base64
import json
import os
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from urllib.parse import urlencode

import pytest
from conftest import REPO
from gateway_helpers import BASE_URL, bearer, consent_flow, gateway_client, make_config, register, token

from cds.grants import create_grant
from cds.messages import create_message
from cds.store.models import Client, Message

API = "/cds-api/v1"
SCOPE = "cds_client_admin cds_usage_1 cds_meters_1"


# ---------------------------------------------------------------------------------------------- helpers
def rel(url: str) -> str:
    assert url.startswith(BASE_URL + "/"), url
    return url[len(BASE_URL):]


def admin(client, scope: str = SCOPE):
    registration = register(client, scope)
    return registration, bearer(token(client, registration.admin_auth, "cds_client_admin")["access_token"])


def active(client, registration, value: str) -> bool:
    response = client.post("/oauth/introspect", data={"token": value}, auth=registration.admin_auth)
    assert response.status_code == 200, response.text
    return response.json()["active"]


def moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def assert_newest_first(items: list[dict], modified: str, ident: str) -> None:
    keys = [(moment(item[modified]), item[ident]) for item in items]
    for (m1, i1), (m2, i2) in pairwise(keys):
        assert m1 > m2 or (m1 == m2 and i1 < i2), keys


def walk(client, headers, url: str, key: str) -> list[list[dict]]:
    """Every page from ``url`` following ``next``; checks each next/previous is a full URL."""
    pages = []
    while url:
        response = client.get(rel(url) if url.startswith(BASE_URL) else url, headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(body[key])
        for link in (body["next"], body["previous"]):
            assert link is None or link.startswith(BASE_URL + API)
        url = body["next"]
    return pages


def all_messages(client, headers) -> list[dict]:
    body = client.get(f"{API}/messages", headers=headers).json()
    seen: dict[str, dict] = {}
    for name in ("outstanding", "unread", "read"):
        for message in body[name]:
            seen[message["message_id"]] = message
    return list(seen.values())


def changelog_for(client, headers, uri: str) -> list[dict]:
    return [m for m in all_messages(client, headers) if m.get("related_uri") == uri and m["creator"] is None]


def add_grant(client, client_id: str, *, modified: datetime, scope: str = "cds_usage_1",
              details: list | None = None, **fields: Any) -> str:
    gateway = client.app.state.gateway
    with gateway.sessions() as session, session.begin():
        row = session.get(Client, client_id)
        grant = create_grant(session, row, scope=scope, authorization_details=details or [], box=gateway.box,
                             now=modified)
        for key, value in fields.items():
            setattr(grant, key, value)
        return grant.grant_id


def fresh(client, headers, client_object: dict) -> dict:
    """The Client object as it is now (a PUT must carry the current cds_modified)."""
    return client.get(rel(client_object["cds_client_uri"]), headers=headers).json()


def error_of(response, status: int) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error", "error_description"}
    return body


# ---------------------------------------------------------------------------------------------- authentication
ENDPOINTS = [
    ("GET", f"{API}/clients"), ("GET", f"{API}/clients/x"), ("PUT", f"{API}/clients/x"),
    ("GET", f"{API}/credentials"), ("POST", f"{API}/credentials"), ("GET", f"{API}/credentials/x"),
    ("PATCH", f"{API}/credentials/x"), ("GET", f"{API}/grants"), ("GET", f"{API}/grants/x"),
    ("PATCH", f"{API}/grants/x"), ("GET", f"{API}/messages"), ("POST", f"{API}/messages"),
    ("GET", f"{API}/messages/x"), ("PATCH", f"{API}/messages/x"),
]


def test_every_endpoint_needs_a_client_admin_bearer_token(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        consent = consent_flow(client, registration, "cds_usage_1")
        for method, path in ENDPOINTS:
            response = client.request(method, path, json={})
            assert response.status_code == 401, (method, path)
            assert response.headers["www-authenticate"].startswith("Bearer")
            response = client.request(method, path, json={}, headers=bearer("not-a-token"))
            assert error_of(response, 401)["error"] == "invalid_token"
            response = client.request(method, path, json={}, headers=bearer(consent["access_token"]))
            assert error_of(response, 403)["error"] == "insufficient_scope"
            response = client.request(method, path, json={}, headers={"Authorization": "Basic abc"})
            assert response.status_code == 401
        assert client.get(f"{API}/clients", headers=headers).status_code == 200


def test_unknown_identifiers_are_404(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        _registration, headers = admin(client)
        for kind in ("clients", "credentials", "grants", "messages"):
            assert error_of(client.get(f"{API}/{kind}/0123456789abcdef", headers=headers), 404)["error"] == \
                "not_found"
        assert client.put(f"{API}/clients/nope", headers=headers, json={}).status_code == 404
        for kind in ("credentials", "grants", "messages"):
            assert client.patch(f"{API}/{kind}/nope", headers=headers, json={"read": True}).status_code == 404


# ---------------------------------------------------------------------------------------------- Clients
def test_clients_list_get_filter_and_order(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        body = client.get(f"{API}/clients", headers=headers).json()
        assert set(body) == {"clients", "next", "previous"} and body["next"] is None and body["previous"] is None
        ids = [c["client_id"] for c in body["clients"]]
        assert sorted(ids) == sorted(registration.clients)
        assert_newest_first(body["clients"], "cds_modified", "client_id")
        for item in body["clients"]:
            assert client.get(rel(item["cds_client_uri"]), headers=headers).json() == item
            assert "client_secret" not in item and "client_secret_expires_at" not in item

        usage = registration.client_for("cds_usage_1")
        response = client.put(rel(usage["cds_client_uri"]), headers=headers, json={**usage, "client_name": "Renamed"})
        assert response.status_code == 200, response.text
        body = client.get(f"{API}/clients", headers=headers).json()
        assert body["clients"][0]["client_id"] == usage["client_id"]
        assert_newest_first(body["clients"], "cds_modified", "client_id")

        two = [registration.admin_id, usage["client_id"]]
        body = client.get(f"{API}/clients", params={"client_ids": " ".join(two)}, headers=headers).json()
        assert sorted(c["client_id"] for c in body["clients"]) == sorted(two)
        body = client.get(f"{API}/clients?client_ids={two[0]}%20unknown", headers=headers).json()
        assert [c["client_id"] for c in body["clients"]] == [two[0]]
        assert client.get(f"{API}/clients?client_ids=unknown", headers=headers).json()["clients"] == []


def test_clients_pagination(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url, page_size=2)) as client:
        registration, headers = admin(client)
        pages = walk(client, headers, BASE_URL + f"{API}/clients", "clients")
        assert [len(p) for p in pages] == [2, 1]
        flat = [c for page in pages for c in page]
        assert sorted(c["client_id"] for c in flat) == sorted(registration.clients)
        assert_newest_first(flat, "cds_modified", "client_id")
        first = client.get(f"{API}/clients", headers=headers).json()
        second = client.get(rel(first["next"]), headers=headers).json()
        assert second["next"] is None
        back = client.get(rel(second["previous"]), headers=headers).json()
        assert back["clients"] == first["clients"] and back["previous"] is None and back["next"] == first["next"]
        # filters travel in the links, as %20-separated lists
        ids = " ".join(sorted(registration.clients))
        first = client.get(f"{API}/clients", params={"client_ids": ids}, headers=headers).json()
        assert "client_ids=" in first["next"] and "%20" in first["next"]
        assert error_of(client.get(f"{API}/clients?cursor=garbage!", headers=headers), 400)


def test_client_put_editable_fields_and_changelog(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        uri = rel(usage["cds_client_uri"])
        new = {
            **usage,
            "client_name": "My App",
            "client_uri": "https://app.example.com/",
            "logo_uri": "https://app.example.com/logo.png",
            "tos_uri": "https://app.example.com/tos",
            "policy_uri": "https://app.example.com/policy",
            "contacts": ["ops@example.com"],
            "redirect_uris": [usage["redirect_uris"][0], "https://app.example.com/cb", "http://127.0.0.1:8765/cb"],
            "scope": "cds_usage_1",
            "authorization_details_types": ["cds_usage_1"],
            "cds_default_scope": "cds_usage_1",
            "cds_default_redirect_uri": "https://app.example.com/cb",
            "cds_default_authorization_details": [{"type": "cds_usage_1", "include_accounts": True}],
            "cds_company_name": "Example Inc.",
        }
        response = client.put(uri, headers=headers, json=new)
        assert response.status_code == 200, response.text
        body = response.json()
        for key in ("client_name", "client_uri", "logo_uri", "tos_uri", "policy_uri", "contacts", "redirect_uris",
                    "scope", "cds_default_scope", "cds_default_redirect_uri", "cds_default_authorization_details",
                    "cds_company_name", "authorization_details_types"):
            assert body[key] == new[key], key
        assert moment(body["cds_modified"]) > moment(usage["cds_modified"])
        assert body["cds_created"] == usage["cds_created"]
        assert client.get(uri, headers=headers).json() == body

        entries = changelog_for(client, headers, usage["cds_client_uri"])
        assert len(entries) == 1
        entry = entries[0]
        assert entry["type"] == "notification" and entry["related_type"] == "client" and entry["read"] is False
        assert entry["status"] == "complete"
        fields = {c["field"] for c in entry["updates_requested"]}
        assert {"client_name", "redirect_uris", "scope", "contacts", "cds_company_name"} <= fields
        assert "client_name" in entry["description"]

        # the same object again changes nothing and logs nothing
        again = client.put(uri, headers=headers, json=body)
        assert again.status_code == 200 and again.json() == body
        assert len(changelog_for(client, headers, usage["cds_client_uri"])) == 1

        # the new default redirect works in the authorization flow: the client is now usable with it
        assert "https://app.example.com/cb" in client.get(uri, headers=headers).json()["redirect_uris"]


def test_client_put_immutable_fields(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        uri = rel(usage["cds_client_uri"])
        changed = {
            "client_id": "other", "client_id_issued_at": usage["client_id_issued_at"] + 1,
            "grant_types": ["client_credentials"], "response_types": [],
            "token_endpoint_auth_method": "none", "cds_created": "2020-01-01T00:00:00Z",
            "cds_modified": "2020-01-01T00:00:00Z", "cds_client_uri": "https://evil.example.com/c",
            "cds_server_metadata": "https://evil.example.com/m", "cds_status_options": ["production"],
            "client_secret": "guess", "client_secret_expires_at": 12345,
        }
        for field, value in changed.items():
            body = error_of(client.put(uri, headers=headers, json={**usage, field: value}), 400)
            assert field in body["error_description"], field
        # equal values are fine, in any order for lists, and the current secret and its expiry too
        same = {**usage, "grant_types": list(reversed(usage["grant_types"])),
                "cds_modified": usage["cds_modified"].replace("Z", "+00:00"),
                "client_secret": registration.secrets[usage["client_id"]], "client_secret_expires_at": 0}
        response = client.put(uri, headers=headers, json=same)
        assert response.status_code == 200, response.text
        assert response.json()["cds_modified"] == usage["cds_modified"]  # nothing changed
        assert changelog_for(client, headers, usage["cds_client_uri"]) == []


def test_client_put_omitted_fields_reset_to_defaults(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        uri = rel(usage["cds_client_uri"])
        response = client.put(uri, headers=headers, json={
            **usage, "client_name": "Named", "contacts": ["a@example.com"], "client_uri": "https://a.example.com",
            "scope": "cds_meters_1", "authorization_details_types": ["cds_meters_1"],
            "redirect_uris": ["https://a.example.com/cb"],
            "cds_default_redirect_uri": "https://a.example.com/cb", "cds_default_scope": "cds_meters_1",
            "cds_status": "disabled", "cds_extra_note": "x"})
        assert response.status_code == 200, response.text
        assert response.json()["cds_status"] == "disabled"

        response = client.put(uri, headers=headers, json={})
        assert response.status_code == 200, response.text
        body = response.json()
        default_redirect = BASE_URL + "/oauth/default-redirect"
        assert body["client_name"] == usage["client_id"]
        assert body["contacts"] == []
        assert "client_uri" not in body and "cds_extra_note" not in body
        assert body["scope"] == usage["scope"]  # the scope it was registered with
        assert body["authorization_details_types"] == usage["authorization_details_types"]
        assert body["redirect_uris"] == [default_redirect]
        assert body["cds_default_redirect_uri"] == default_redirect
        assert body["cds_default_scope"] == usage["scope"]
        assert body["cds_default_authorization_details"] == []
        assert body["cds_status"] == "sandbox"
        for key in ("client_id", "client_id_issued_at", "grant_types", "response_types", "cds_created"):
            assert body[key] == usage[key]

        # a client without response types has no cds_default_* fields and no redirect URIs
        grant_admin = registration.client_for("cds_grant_admin_1")
        body = client.put(rel(grant_admin["cds_client_uri"]), headers=headers, json={}).json()
        assert body["redirect_uris"] == [] and "cds_default_scope" not in body
        assert body["scope"] == "cds_grant_admin_1" and body["cds_status"] == "production"


def test_client_put_invalid_values(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        grant_admin = registration.client_for("cds_grant_admin_1")
        admin_client = registration.clients[registration.admin_id]
        uri = rel(usage["cds_client_uri"])
        bad = [
            {"redirect_uris": ["http://app.example.com/cb"]},
            {"redirect_uris": ["https://app.example.com/cb#frag"]},
            {"redirect_uris": ["/relative"]},
            {"redirect_uris": "https://app.example.com/cb"},
            {"redirect_uris": []},
            {"redirect_uris": ["https://a.example.com/", "https://a.example.com/"]},
            {"cds_default_redirect_uri": "https://elsewhere.example.com/cb"},
            {"cds_status": "production"},
            {"cds_status": "bogus"},
            {"scope": "cds_client_admin cds_usage_1"},
            {"scope": "cds_grant_admin_1"},
            {"scope": "not_a_scope"},
            {"scope": ""},
            {"scope": 7},
            {"authorization_details_types": ["cds_usage_1"]},
            {"cds_default_scope": "cds_bill_statements_1"},
            {"cds_default_authorization_details": [{"type": "cds_usage_1", "nope": 1}]},
            {"cds_default_authorization_details": [{"type": "cds_bill_statements_1"}]},
            {"cds_default_authorization_details": "[]"},
            {"client_name": ""},
            {"client_name": 5},
            {"contacts": "ops@example.com"},
            {"client_uri": "not a url"},
            {"logo_uri": "ftp://example.com/logo.png"},
            {"cds_purposes": {"a": {}}},
        ]
        for change in bad:
            response = client.put(uri, headers=headers, json={**usage, **change})
            assert response.status_code == 400, (change, response.text)
            assert response.json()["error"] in ("invalid_client_metadata", "invalid_redirect_uri")
        assert client.put(uri, headers=headers, json=[usage]).status_code == 400
        # the Client Admin client keeps exactly cds_client_admin; nobody else may get it
        admin_uri = rel(admin_client["cds_client_uri"])
        for scope in ("cds_grant_admin_1", "cds_client_admin cds_grant_admin_1"):
            assert client.put(admin_uri, headers=headers, json={**admin_client, "scope": scope}).status_code == 400
        assert client.put(admin_uri, headers=headers, json={**admin_client, "cds_status": "disabled"}).status_code \
            == 400
        ga_uri = rel(grant_admin["cds_client_uri"])
        assert client.put(ga_uri, headers=headers,
                          json={**grant_admin, "scope": "cds_client_admin"}).status_code == 400
        assert client.put(ga_uri, headers=headers, json={**grant_admin, "redirect_uris": ["https://a.example/"]}
                          ).status_code == 400
        assert client.put(ga_uri, headers=headers, json={**grant_admin, "cds_default_scope": "x"}).status_code == 400
        # nothing was changed by any of these
        assert client.get(uri, headers=headers).json() == usage
        assert changelog_for(client, headers, usage["cds_client_uri"]) == []


def test_disabled_client_cannot_authenticate(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        consent = consent_flow(client, registration, "cds_usage_1")
        assert active(client, registration, consent["access_token"])
        response = client.put(rel(usage["cds_client_uri"]), headers=headers, json={**usage, "cds_status": "disabled"})
        assert response.status_code == 200, response.text
        assert response.json()["cds_status"] == "disabled"
        assert not active(client, registration, consent["access_token"])
        assert not active(client, registration, consent["refresh_token"])
        refresh = client.post("/oauth/token", auth=registration.auth_for("cds_usage_1"),
                              data={"grant_type": "refresh_token", "refresh_token": consent["refresh_token"]})
        assert refresh.status_code in (400, 401)
        par = client.post("/oauth/par", auth=registration.auth_for("cds_usage_1"), data={
            "response_type": "code", "client_id": usage["client_id"], "scope": "cds_usage_1",
            "code_challenge": "x" * 43, "code_challenge_method": "S256"})
        assert par.status_code == 401
        # its secret now carries the time it was disabled, and the change is logged
        credentials = client.get(f"{API}/credentials", params={"client_ids": usage["client_id"]},
                                 headers=headers).json()["credentials"]
        assert credentials and all(0 < c["client_secret_expires_at"] <= time.time() + 1 for c in credentials)
        assert changelog_for(client, headers, credentials[0]["uri"])
        # re-enabling is allowed, but needs a new credential
        response = client.put(rel(usage["cds_client_uri"]), headers=headers,
                              json={**fresh(client, headers, usage), "cds_status": "sandbox"})
        assert response.status_code == 200
        created = client.post(f"{API}/credentials", headers=headers, json={"client_id": usage["client_id"]})
        assert created.status_code == 201
        # the grant admin client disabled: client_credentials refused
        grant_admin = registration.client_for("cds_grant_admin_1")
        assert client.put(rel(grant_admin["cds_client_uri"]), headers=headers,
                          json={**grant_admin, "cds_status": "disabled"}).status_code == 200
        response = client.post("/oauth/token", auth=registration.auth_for("cds_grant_admin_1"),
                               data={"grant_type": "client_credentials", "scope": "cds_grant_admin_1"})
        assert response.status_code == 401


# ---------------------------------------------------------------------------------------------- Credentials
def test_credentials_list_filters_order_and_pages(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url, page_size=2)) as client:
        registration, headers = admin(client)
        time.sleep(0.01)
        extra = [client.post(f"{API}/credentials", headers=headers, json={"client_id": registration.admin_id}).json()
                 for _ in range(2)]
        pages = walk(client, headers, BASE_URL + f"{API}/credentials", "credentials")
        assert [len(p) for p in pages] == [2, 2, 1]
        flat = [c for page in pages for c in page]
        assert len({c["credential_id"] for c in flat}) == 5
        assert_newest_first(flat, "modified", "credential_id")
        assert {c["credential_id"] for c in flat[:2]} == {c["credential_id"] for c in extra}
        secrets = {c["client_id"]: c["client_secret"] for c in flat if c["created"] == flat[-1]["created"]}
        assert secrets == registration.secrets  # decrypted secrets are listed
        for item in flat:
            assert set(item) == {"credential_id", "uri", "client_id", "created", "modified", "type",
                                 "client_secret", "client_secret_expires_at"}
            assert item["type"] == "client_secret"
            assert client.get(rel(item["uri"]), headers=headers).json() == item

        def ids(**params) -> set[str]:
            url = BASE_URL + f"{API}/credentials?" + urlencode(params)
            return {c["credential_id"] for page in walk(client, headers, url, "credentials") for c in page}

        first = extra[0]["credential_id"]
        assert ids(credential_ids=f"{first} nope") == {first}
        assert ids(client_ids=registration.admin_id) == {c["credential_id"] for c in flat
                                                         if c["client_id"] == registration.admin_id}
        registered = flat[-1]["created"]
        assert len(ids(after=registered, before=registered)) == 3  # inclusive on both ends
        assert ids(after=extra[0]["created"]) == {c["credential_id"] for c in extra}
        assert ids(before="2000-01-01T00:00:00Z") == set()
        raw_plus = client.get(f"{API}/credentials?after=2000-01-01T00:00:00+00:00&client_ids=" +
                              registration.admin_id, headers=headers)
        assert raw_plus.status_code == 200 and raw_plus.json()["credentials"]
        for value in ("yesterday", "2024-01-01", "2024-01-01T00:00:00"):
            assert error_of(client.get(f"{API}/credentials", params={"after": value}, headers=headers), 400)


def test_credential_create(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        response = client.post(f"{API}/credentials", headers=headers, json={"client_id": usage["client_id"]})
        assert response.status_code == 201, response.text
        body = response.json()
        assert body["client_id"] == usage["client_id"] and body["client_secret_expires_at"] == 0
        assert body["client_secret"] != registration.secrets[usage["client_id"]]
        assert client.get(rel(body["uri"]), headers=headers).json() == body
        entry = changelog_for(client, headers, body["uri"])
        assert len(entry) == 1 and entry[0]["related_type"] == "credential"
        assert body["client_secret"] not in json.dumps(entry)
        # the new secret authenticates the client
        admin_secret = client.post(f"{API}/credentials", headers=headers,
                                   json={"client_id": registration.admin_id}).json()["client_secret"]
        token(client, (registration.admin_id, admin_secret), "cds_client_admin")

        for bad in ({}, {"client_id": 5}, {"client_id": "unknown"}, [], {"client_id": ""}):
            assert error_of(client.post(f"{API}/credentials", headers=headers, json=bad), 400)
        # a client without a token endpoint auth method has no credentials
        gateway = client.app.state.gateway
        with gateway.sessions() as session, session.begin():
            row = session.get(Client, usage["client_id"])
            session.add(Client(
                client_id="publicclient0001", registration_id=registration.admin_id,
                client_id_issued_at=row.client_id_issued_at, created=row.created, modified=row.modified,
                scope="", redirect_uris=[], token_endpoint_auth_method=None, grant_types=[], response_types=[],
                client_name="public", contacts=[], authorization_details_types=[], status="production",
                status_options=["production", "disabled"], extra={}))
        body = error_of(client.post(f"{API}/credentials", headers=headers, json={"client_id": "publicclient0001"}),
                        400)
        assert "token_endpoint_auth_method" in body["error_description"]


def test_credential_patch_rules(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        created = client.post(f"{API}/credentials", headers=headers, json={"client_id": registration.admin_id}).json()
        uri = rel(created["uri"])
        later = int(time.time()) + 3600
        for bad in ({}, {"client_secret_expires_at": "soon"}, {"client_secret_expires_at": True},
                    {"client_secret_expires_at": -1}, {"client_secret_expires_at": 1.5}, [1]):
            assert error_of(client.patch(uri, headers=headers, json=bad), 400), bad
        assert client.patch(uri, headers=headers, json={"client_secret_expires_at": 0}).json() == created
        response = client.patch(uri, headers=headers, json={"client_secret_expires_at": later,
                                                            "client_secret": "ignored", "client_id": "ignored"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["client_secret_expires_at"] == later and body["client_secret"] == created["client_secret"]
        assert body["client_id"] == created["client_id"] and moment(body["modified"]) > moment(created["modified"])
        # only earlier from now on: later values and 0 (never) are refused
        assert error_of(client.patch(uri, headers=headers, json={"client_secret_expires_at": later + 1}), 400)
        assert error_of(client.patch(uri, headers=headers, json={"client_secret_expires_at": 0}), 400)
        assert client.patch(uri, headers=headers, json={"client_secret_expires_at": later - 60}).status_code == 200
        assert client.patch(uri, headers=headers, json={"client_secret_expires_at": later - 60}).status_code == 200
        # the secret still works until then
        token(client, (registration.admin_id, created["client_secret"]), "cds_client_admin")
        entries = changelog_for(client, headers, created["uri"])
        assert len(entries) == 3  # created, then two expiry changes (the repeated equal value is no change)


def test_credential_expiry_revokes_its_tokens_at_once(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        second = client.post(f"{API}/credentials", headers=headers, json={"client_id": registration.admin_id}).json()
        issued = token(client, (registration.admin_id, second["client_secret"]), "cds_client_admin")
        other = bearer(issued["access_token"])
        assert client.get(f"{API}/clients", headers=other).status_code == 200
        assert active(client, registration, issued["access_token"])

        response = client.patch(rel(second["uri"]), headers=headers,
                                json={"client_secret_expires_at": int(time.time())})
        assert response.status_code == 200, response.text
        assert response.json()["client_secret_expires_at"] <= time.time()
        assert not active(client, registration, issued["access_token"])
        assert error_of(client.get(f"{API}/clients", headers=other), 401)["error"] == "invalid_token"
        refused = client.post("/oauth/token", auth=(registration.admin_id, second["client_secret"]),
                              data={"grant_type": "client_credentials", "scope": "cds_client_admin"})
        assert refused.status_code == 401
        # an expired credential cannot be changed again; the first credential and its token are untouched
        assert error_of(client.patch(rel(second["uri"]), headers=headers,
                                     json={"client_secret_expires_at": int(time.time()) - 5}), 400)
        assert client.get(f"{API}/clients", headers=headers).status_code == 200
        entries = changelog_for(client, headers, second["uri"])
        assert any("revoked" in e["description"] for e in entries)

        # a past value (clock skew) also means "now"
        third = client.post(f"{API}/credentials", headers=headers, json={"client_id": registration.admin_id}).json()
        response = client.patch(rel(third["uri"]), headers=headers, json={"client_secret_expires_at": 1})
        assert response.status_code == 200
        assert abs(response.json()["client_secret_expires_at"] - time.time()) < 60


# ---------------------------------------------------------------------------------------------- Grants
def test_grants_list_get_and_filters(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage_id = registration.client_for("cds_usage_1")["client_id"]
        consent = consent_flow(client, registration, "cds_usage_1", state="state-A")
        consented = consent["cds_grant_ids"][0]
        now = datetime.now(UTC)
        expired = add_grant(client, usage_id, modified=now - timedelta(days=2), not_after=now - timedelta(days=1))
        child = add_grant(client, usage_id, modified=now - timedelta(days=3), parent=consented)
        typed = add_grant(client, usage_id, modified=now - timedelta(days=4), scope="cds_meters_1",
                          details=[{"type": "cds_usage_1"}])
        future = add_grant(client, usage_id, modified=now - timedelta(days=5), not_before=now + timedelta(days=1))

        body = client.get(f"{API}/grants", headers=headers).json()
        assert set(body) == {"grants", "next", "previous"}
        by_id = {g["grant_id"]: g for g in body["grants"]}
        admin_grant = next(g["grant_id"] for g in body["grants"] if g["scope"] == "cds_client_admin")
        assert set(by_id) == {consented, expired, child, typed, future, admin_grant}
        assert_newest_first(body["grants"], "modified", "grant_id")
        assert by_id[expired]["status"] == "expired" and by_id[future]["status"] == "future"
        grant = by_id[consented]
        assert grant["states"] == ["state-A"] and len(grant["receipt_confirmations"]) == 1
        assert grant["status"] == "active" and grant["enabled_scope"] == "cds_usage_1"
        fields = {"grant_id", "uri", "replacing", "replaced_by", "parent", "children", "created", "modified",
                  "not_before", "not_after", "eta", "expires", "status", "client_id", "scope",
                  "authorization_details", "states", "receipt_confirmations", "enabled_scope",
                  "enabled_authorization_details"}
        assert set(grant) == fields
        assert client.get(rel(grant["uri"]), headers=headers).json() == grant

        def ids(**params) -> set[str]:
            response = client.get(f"{API}/grants", params=params, headers=headers)
            assert response.status_code == 200, response.text
            return {g["grant_id"] for g in response.json()["grants"]}

        assert ids(grant_ids=f"{consented} {admin_grant}") == {consented, admin_grant}
        assert ids(client_ids=usage_id) == {consented, expired, child, typed, future}
        assert ids(client_ids=registration.admin_id) == {admin_grant}
        assert ids(scopes="cds_client_admin") == {admin_grant}
        assert ids(scopes="cds_usage_1") == {consented, expired, child, typed, future}  # scope or RAR type
        assert ids(scopes="cds_meters_1") == {typed}
        assert ids(scopes="cds_usage__") == set() and ids(scopes="cds_usage%") == set()
        assert ids(statuses="expired") == {expired}
        assert ids(statuses="future expired") == {future, expired}
        assert ids(statuses="active") == {consented, child, typed, admin_grant}
        assert ids(states="state-A") == {consented}
        assert ids(states="state-B") == set()
        assert ids(receipt_confirmations=grant["receipt_confirmations"][0]) == {consented}
        assert ids(parents=consented) == {child}
        assert ids(after=grant["created"]) >= {consented} and expired not in ids(after=grant["created"])
        assert ids(before=by_id[typed]["created"]) == {typed, future}
        assert ids(after=by_id[typed]["created"], before=by_id[typed]["created"]) == {typed}
        assert ids(scopes="cds_usage_1", statuses="active", client_ids=usage_id) == {consented, child, typed}
        assert error_of(client.get(f"{API}/grants", params={"before": "bad"}, headers=headers), 400)


def test_grants_pagination_with_filters(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url, page_size=2)) as client:
        registration, headers = admin(client)
        usage_id = registration.client_for("cds_usage_1")["client_id"]
        base = datetime.now(UTC) - timedelta(days=10)
        made = [add_grant(client, usage_id, modified=base + timedelta(hours=i), states=[f"s{i % 2}"])
                for i in range(5)]
        same_time = [add_grant(client, usage_id, modified=base - timedelta(days=1), states=["s0"]) for _ in range(2)]
        pages = walk(client, headers, BASE_URL + f"{API}/grants?client_ids={usage_id}", "grants")
        assert [len(p) for p in pages] == [2, 2, 2, 1]
        flat = [g["grant_id"] for page in pages for g in page]
        assert flat[:5] == list(reversed(made)) and flat[5:] == sorted(same_time)
        # a Python-side filter (JSON array member) still gives full pages
        pages = walk(client, headers, BASE_URL + f"{API}/grants?states=s0", "grants")
        assert [len(p) for p in pages] == [2, 2, 1]
        assert [g["grant_id"] for page in pages for g in page] == [made[4], made[2], made[0], *sorted(same_time)]
        # previous goes back to the same page
        first = client.get(f"{API}/grants?states=s0", headers=headers).json()
        second = client.get(rel(first["next"]), headers=headers).json()
        assert "states=s0" in first["next"]
        back = client.get(rel(second["previous"]), headers=headers).json()
        assert back["grants"] == first["grants"] and back["previous"] is None


def test_grant_close_kills_its_tokens(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        consent = consent_flow(client, registration, "cds_usage_1")
        grant_uri = rel(client.get(f"{API}/grants/{consent['cds_grant_ids'][0]}", headers=headers).json()["uri"])
        assert active(client, registration, consent["access_token"])
        response = client.patch(grant_uri, headers=headers, json={"status": "closed"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "closed" and body["enabled_scope"] == ""
        assert body["enabled_authorization_details"] == [] and body["scope"] == "cds_usage_1"
        assert not active(client, registration, consent["access_token"])
        assert not active(client, registration, consent["refresh_token"])
        refresh = client.post("/oauth/token", auth=registration.auth_for("cds_usage_1"),
                              data={"grant_type": "refresh_token", "refresh_token": consent["refresh_token"]})
        assert refresh.status_code == 400
        assert client.patch(grant_uri, headers=headers, json={"status": "closed"}).json() == body  # idempotent
        assert error_of(client.patch(grant_uri, headers=headers, json={"scope": "cds_usage_1 cds_meters_1"}), 400)
        entries = changelog_for(client, headers, BASE_URL + grant_uri)
        assert len(entries) == 1 and entries[0]["related_type"] == "grant"
        assert {"field": "status", "previous_value": "active", "new_value": "closed"} in entries[0]["updates_requested"]

        # closing the grant behind the admin token itself: that very token stops working
        admin_grant = client.get(f"{API}/grants", params={"scopes": "cds_client_admin"},
                                 headers=headers).json()["grants"][0]
        assert client.patch(rel(admin_grant["uri"]), headers=headers, json={"status": "closed"}).status_code == 200
        assert error_of(client.get(f"{API}/grants", headers=headers), 401)["error"] == "invalid_token"
        fresh = bearer(token(client, registration.admin_auth, "cds_client_admin")["access_token"])
        assert client.get(f"{API}/grants", headers=fresh).status_code == 200


def test_grant_patch_reduction_expansion_and_errors(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        consent = consent_flow(client, registration, "cds_usage_1")
        grant = client.get(f"{API}/grants/{consent['cds_grant_ids'][0]}", headers=headers).json()
        uri = rel(grant["uri"])
        assert client.patch(uri, headers=headers, json={"status": "active"}).json() == grant  # current: no-op
        assert client.patch(uri, headers=headers, json={"other": 1}).json() == grant
        for bad in ({"status": "revoked"}, {"status": "active", "scope": 5}, {"scope": ""}, {"scope": "nope_1"},
                    {"scope": "cds_bill_statements_1"}, {"authorization_details": "x"},
                    {"authorization_details": [{"type": "cds_usage_1", "unknown_field": True}]},
                    {"authorization_details": [{"type": "cds_meters_1"}]},
                    {"status": "closed", "scope": "cds_usage_1 cds_meters_1"}, [1]):
            assert error_of(client.patch(uri, headers=headers, json=bad), 400), bad

        # a reduction applies at once, to the grant and to its live tokens
        entry = dict(grant["authorization_details"][0])
        assert entry["include_meter_devices"] is True
        narrowed = {**entry, "include_meter_devices": False}
        response = client.patch(uri, headers=headers, json={"authorization_details": [narrowed]})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "active" and body["authorization_details"] == [narrowed]
        assert body["enabled_authorization_details"] == [narrowed] and body["enabled_scope"] == "cds_usage_1"
        seen = client.post("/oauth/introspect", data={"token": consent["access_token"]},
                           auth=registration.admin_auth).json()
        assert seen["active"] and seen["authorization_details"][0]["include_meter_devices"] is False

        # an expansion waits for the customer: needs_authorization, enabled_* unchanged, tokens keep working
        response = client.patch(uri, headers=headers, json={"scope": "cds_usage_1 cds_meters_1"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["status"] == "needs_authorization" and body["scope"] == "cds_usage_1 cds_meters_1"
        assert body["enabled_scope"] == "cds_usage_1" and body["enabled_authorization_details"] == [narrowed]
        assert {e["type"] for e in body["authorization_details"]} == {"cds_usage_1", "cds_meters_1"}
        assert active(client, registration, consent["access_token"])
        widened = {**narrowed, "include_meter_devices": True}
        response = client.patch(uri, headers=headers,
                                json={"scope": "cds_usage_1", "authorization_details": [widened]})
        assert response.json()["status"] == "needs_authorization"  # still wider than what is enabled
        # reducing back to what is enabled makes it active again
        response = client.patch(uri, headers=headers,
                                json={"scope": "cds_usage_1", "authorization_details": [narrowed]})
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "active" and response.json()["scope"] == "cds_usage_1"
        entries = changelog_for(client, headers, grant["uri"])
        assert len(entries) == 4
        assert all(e["related_type"] == "grant" for e in entries)


# ---------------------------------------------------------------------------------------------- Messages
def test_message_create_every_client_type(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        gateway = client.app.state.gateway
        now = datetime.now(UTC)
        with gateway.sessions() as session, session.begin():
            session.add(Message(message_id="serverrequest001", registration_id=registration.admin_id,
                                type="server_request", read=False, creator=None, created=now, modified=now,
                                status="open",
                                name="Please upload the signed form", description="See the PDF."))
        server_request = client.get(f"{API}/messages/serverrequest001", headers=headers).json()
        requests = {
            "private_message": {"previous_uri": None, "name": "Hello", "description": "Hi there"},
            "production_request": {"previous_uri": None, "name": "Production please", "description": "Ready.",
                                   "related_uri": usage["cds_client_uri"], "related_type": "client"},
            "support_request": {"name": "Help", "description": "Something broke",
                                "related_uri": "https://app.example.com/issue", "related_type": "more_info"},
            "grant_request": {"previous_uri": None, "name": "Grant", "description": "Please",
                              "related_uri": usage["cds_client_uri"],
                              "grants_requested": [{"scope": "cds_usage_1", "authorization_details": [
                                  {"type": "cds_usage_1", "include_accounts": True, "sync_until": "P30D"}]}]},
            "client_submission": {"previous_uri": server_request["uri"], "name": "", "description": "",
                                  "updates_requested": [{"field": "signed_form",
                                                         "uri": "https://app.example.com/form.pdf"}]},
        }
        statuses = {"private_message": "complete", "client_submission": "complete", "production_request": "pending",
                    "support_request": "pending", "grant_request": "pending"}
        created = {}
        for type_, fields in requests.items():
            response = client.post(f"{API}/messages", headers=headers, json={"type": type_, **fields})
            assert response.status_code == 201, (type_, response.text)
            body = response.json()
            created[type_] = body
            assert body["type"] == type_ and body["read"] is True and body["creator"] == registration.admin_id
            assert body["status"] == statuses[type_] and body["created"] == body["modified"]
            assert body["uri"] == f"{BASE_URL}{API}/messages/{body['message_id']}"
            assert client.get(rel(body["uri"]), headers=headers).json() == body
        assert created["grant_request"]["related_type"] == "client"  # implied for a Client URI
        assert created["grant_request"]["grants_requested"][0]["authorization_details"][0]["sync_until"] == "P30D"
        assert "related_uri" not in created["private_message"]
        # the answered server_request now waits for the server
        assert client.get(f"{API}/messages/serverrequest001", headers=headers).json()["status"] == "pending"
        # the specification's example request (WG1-02 §12.9, without previous_uri) is accepted
        example_file = REPO.parent / "shared" / "cds-examples" / "wg1-02_message-create-request.json"
        example = json.loads(example_file.read_text()) if example_file.is_file() else \
            {"type": "private_message", "name": "My Subject", "description": "Hello World!"}
        response = client.post(f"{API}/messages", headers=headers, json=example)
        assert response.status_code == 201 and response.json()["previous_uri"] is None


def test_message_create_validation(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        grant_admin = registration.client_for("cds_grant_admin_1")
        ok = {"type": "private_message", "previous_uri": None, "name": "n", "description": "d"}
        assert client.post(f"{API}/messages", headers=headers, json=ok).status_code == 201
        bad = [
            {"type": "notification"}, {"type": "request_update"}, {"type": None},
            {"name": None}, {"description": 5}, {"previous_uri": "https://example.com/x"},
            {"previous_uri": f"{BASE_URL}{API}/messages/unknown"},
            {"type": "client_submission", "name": "", "description": "", "updates_requested": [{"field": "f"}]},
            {"type": "client_submission", "name": "x", "description": ""},
            {"type": "grant_request"},
            {"type": "grant_request", "grants_requested": []},
            {"type": "grant_request", "grants_requested": [{"scope": "cds_usage_1"}]},
            {"type": "grant_request", "grants_requested": [{"scope": "nope", "authorization_details": []}]},
            {"type": "grant_request", "related_uri": grant_admin["cds_client_uri"],
             "grants_requested": [{"scope": "cds_usage_1", "authorization_details": [{"type": "cds_usage_1"}]}]},
            {"type": "grant_request", "grants_requested": [{"scope": "cds_usage_1", "authorization_details": [
                {"type": "cds_usage_1", "include_accounts": "yes"}]}]},
            {"grants_requested": [{"scope": "cds_usage_1", "authorization_details": []}]},
            {"related_uri": "https://example.com/more"},
            {"related_type": "more_info"},
            {"related_uri": "https://example.com/more", "related_type": "bogus"},
            {"related_uri": "not a url", "related_type": "more_info"},
            {"updates_requested": [{"name": "no field"}]},
            {"attachments": [{"filename": "a.txt", "mime_type": "text/plain", "data": "not base64!"}]},
            {"attachments": [{"filename": "a.txt", "mime_type": "text/plain", "data": "YWJj"[:3]}]},
            {"attachments": [{"filename": "a.txt", "mime_type": "text plain", "data": "YWJj"}]},
            {"attachments": [{"filename": "../a.txt", "mime_type": "text/plain", "data": "YWJj"}]},
            {"attachments": [{"mime_type": "text/plain", "data": "YWJj"}]},
            {"attachments": {"filename": "a"}},
            {"amount": "12.50", "currency": "USD"}, {"amount": True, "currency": "USD"},
            {"amount": 1}, {"currency": "USD"}, {"amount": 1, "currency": "usd"},
        ]
        for change in bad:
            response = client.post(f"{API}/messages", headers=headers, json={**ok, **change})
            assert response.status_code == 400, (change, response.text)
        # a server_request must be answered by its own registration's messages only; others are refused
        private = client.post(f"{API}/messages", headers=headers, json=ok).json()
        response = client.post(f"{API}/messages", headers=headers, json={
            "type": "client_submission", "previous_uri": private["uri"], "name": "", "description": "",
            "updates_requested": [{"field": "f"}]})
        assert response.status_code == 400  # answers a private message, not a server_request
        reply = client.post(f"{API}/messages", headers=headers, json={**ok, "previous_uri": private["uri"]})
        assert reply.status_code == 201 and reply.json()["previous_uri"] == private["uri"]


def test_message_amount_is_exact(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        _registration, headers = admin(client)
        raw = ('{"type": "support_request", "previous_uri": null, "name": "Refund", "description": "Overcharged",'
               ' "amount": 12345678901234567890.123456789012345, "currency": "USD"}')
        response = client.post(f"{API}/messages", headers={**headers, "Content-Type": "application/json"},
                               content=raw)
        assert response.status_code == 201, response.text
        assert '"amount":12345678901234567890.123456789012345' in response.text.replace(" ", "")
        uri = rel(response.json()["uri"])
        again = client.get(uri, headers=headers)
        assert '"amount":12345678901234567890.123456789012345' in again.text.replace(" ", "")
        response = client.post(f"{API}/messages", headers={**headers, "Content-Type": "application/json"},
                               content=raw.replace("12345678901234567890.123456789012345", "0.10"))
        assert '"amount":0.10' in response.text.replace(" ", "")
        assert '"amount":7' in client.post(f"{API}/messages", headers=headers, json={
            "type": "private_message", "name": "n", "description": "d", "amount": 7, "currency": "EUR"}).text


def test_message_attachments_and_size_limits(tmp_path, database_url):
    config = make_config(tmp_path, database_url)
    assert config.message_max_bytes >= 10 * 1000 * 1000
    with gateway_client(config) as client:
        registration, headers = admin(client)
        data = base64.b64encode(os.urandom(1_500_000)).decode()  # ~2 MB body: above the app-wide 1 MiB limit
        message = {"type": "support_request", "previous_uri": None, "name": "Logs", "description": "attached",
                   "attachments": [{"filename": "log.bin", "mime_type": "application/octet-stream", "data": data},
                                   {"filename": "note.txt", "mime_type": "text/plain", "data": "aGVsbG8="}]}
        response = client.post(f"{API}/messages", headers=headers, json=message)
        assert response.status_code == 201, response.text[:300]
        assert response.json()["attachments"][0]["data"] == data
        assert client.get(rel(response.json()["uri"]), headers=headers).json()["attachments"][1]["data"] == "aGVsbG8="
        # over the messages limit: 413 Content Too Large, and nothing stored. A declared Content-Length and a
        # streamed body get the same JSON error (issue 13: the declared one used to be plain text).
        count = len(all_messages(client, headers))
        huge = json.dumps({**message, "attachments": [{"filename": "big.bin", "mime_type": "application/octet-stream",
                                                       "data": "A" * (config.message_max_bytes + 4)}]})
        response = client.post(f"{API}/messages", headers={**headers, "Content-Type": "application/json"},
                               content=huge)
        declared = error_of(response, 413)
        # streamed without Content-Length, the limit is found while reading
        chunks = (huge[i:i + (1 << 20)].encode() for i in range(0, len(huge), 1 << 20))
        response = client.post(f"{API}/messages", headers={**headers, "Content-Type": "application/json"},
                               content=chunks)
        assert error_of(response, 413) == declared
        assert len(all_messages(client, headers)) == count
        # other admin routes keep the app-wide limit
        usage = registration.client_for("cds_usage_1")
        response = client.put(rel(usage["cds_client_uri"]), headers=headers,
                              json={**usage, "client_name": "x" * (config.max_body_bytes + 10)})
        assert response.status_code == 413


def test_message_attachment_limit_counts_decoded_bytes(tmp_path, database_url):
    """The function checks the decoded attachment total itself (the route limit only sees the encoded body)."""
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, _headers = admin(client)
        gateway = client.app.state.gateway
        data = base64.b64encode(b"0123456789").decode()
        body = {"type": "private_message", "name": "n", "description": "d",
                "attachments": [{"filename": "a", "mime_type": "text/plain", "data": data}] * 2}
        with gateway.sessions() as session:
            def create(limit: int) -> dict:
                return create_message(session, registration.admin_id, registration.admin_id, body, urls=gateway.urls,
                                      box=gateway.box, descriptions=gateway.descriptions, timezone="UTC",
                                      max_attachment_bytes=limit, now=datetime.now(UTC))

            with pytest.raises(Exception) as raised:
                create(19)
            assert raised.value.status == 413
            assert create(20)["attachments"][1]["data"] == data
            session.rollback()


def test_messages_list_three_lists_and_pages(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url, page_size=2)) as client:
        registration, headers = admin(client)
        for i in range(3):
            client.post(f"{API}/messages", headers=headers,
                        json={"type": "private_message", "name": f"p{i}", "description": ""})
        pending = [client.post(f"{API}/messages", headers=headers,
                               json={"type": "support_request", "name": f"s{i}", "description": ""}).json()
                   for i in range(3)]
        usage = registration.client_for("cds_usage_1")
        for name in ("A", "B", "C"):  # three changelog notifications (unread)
            response = client.put(rel(usage["cds_client_uri"]), headers=headers,
                                  json={**fresh(client, headers, usage), "client_name": name})
            assert response.status_code == 200, response.text
        body = client.get(f"{API}/messages", headers=headers).json()
        assert set(body) == {f"{n}{s}" for n in ("outstanding", "unread", "read") for s in ("", "_next", "_previous")}
        assert [m["message_id"] for m in body["outstanding"]] == [pending[2]["message_id"], pending[1]["message_id"]]
        assert all(not m["read"] for m in body["unread"]) and all(m["read"] for m in body["read"])
        assert all(m["status"] in ("open", "pending") for m in body["outstanding"])
        for name, total in (("outstanding", 3), ("unread", 3), ("read", 6)):
            assert body[f"{name}_previous"] is None
            collected = list(body[name])
            url = body[f"{name}_next"]
            while url:
                assert f"list={name}" in url
                page = client.get(rel(url), headers=headers).json()
                others = [n for n in ("outstanding", "unread", "read") if n != name]
                assert all(page[o] == [] and page[f"{o}_next"] is None for o in others)
                assert page[f"{name}_previous"]
                collected += page[name]
                url = page[f"{name}_next"]
            assert len({m["message_id"] for m in collected}) == total, name
            assert_newest_first(collected, "modified", "message_id")
        first = pending[0]["message_id"]
        body = client.get(f"{API}/messages", params={"message_ids": f"{first} nope"}, headers=headers).json()
        assert [m["message_id"] for m in body["outstanding"]] == [first] and body["unread"] == []
        assert [m["message_id"] for m in body["read"]] == [first]
        assert error_of(client.get(f"{API}/messages?list=bogus", headers=headers), 400)
        assert error_of(client.get(f"{API}/messages?cursor=abc", headers=headers), 400)


def test_message_patch_read_only(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        client.put(rel(usage["cds_client_uri"]), headers=headers, json={**usage, "client_name": "x"})
        notification = changelog_for(client, headers, usage["cds_client_uri"])[0]
        uri = rel(notification["uri"])
        assert notification["read"] is False
        response = client.patch(uri, headers=headers, json={"read": True, "name": "ignored", "status": "open"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["read"] is True and body["name"] == notification["name"] and body["status"] == "complete"
        assert moment(body["modified"]) > moment(notification["modified"])
        assert client.get(uri, headers=headers).json() == body
        assert client.patch(uri, headers=headers, json={"read": True}).json() == body  # unchanged
        assert client.patch(uri, headers=headers, json={"read": False}).json()["read"] is False
        for bad in ({}, {"read": "yes"}, {"read": 1}, {"read": None}, [True]):
            assert error_of(client.patch(uri, headers=headers, json=bad), 400), bad


# ---------------------------------------------------------------------------------------------- request bodies
@pytest.mark.parametrize("method,target", [
    ("POST", "credentials"), ("POST", "messages"), ("PUT", "client"), ("PATCH", "credential"),
    ("PATCH", "grant"), ("PATCH", "message"),
])
def test_malformed_bodies_are_400_never_500(tmp_path, database_url, method, target):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, headers = admin(client)
        usage = registration.client_for("cds_usage_1")
        client.put(rel(usage["cds_client_uri"]), headers=headers, json={**usage, "client_name": "x"})
        paths = {
            "credentials": f"{API}/credentials",
            "messages": f"{API}/messages",
            "client": rel(usage["cds_client_uri"]),
            "credential": rel(client.get(f"{API}/credentials", headers=headers).json()["credentials"][0]["uri"]),
            "grant": rel(client.get(f"{API}/grants", headers=headers).json()["grants"][0]["uri"]),
            "message": rel(all_messages(client, headers)[0]["uri"]),
        }
        path = paths[target]
        json_type = {**headers, "Content-Type": "application/json"}
        cases = [
            (json_type, b"{"),
            (json_type, b""),
            (json_type, b'{"a": 1,}'),
            (json_type, b"\xff\xfe"),
            (json_type, b"[1, 2]"),
            (json_type, b'"text"'),
            ({**headers, "Content-Type": "text/plain"}, b'{"client_id": "x", "read": true}'),
            ({**headers, "Content-Type": "application/x-www-form-urlencoded"}, b"read=true"),
            (headers, b'{"read": true}'),
        ]
        for extra_headers, content in cases:
            response = client.request(method, path, headers=extra_headers, content=content)
            assert response.status_code == 400, (content, response.text)
            assert response.headers["content-type"].startswith("application/json")
            assert response.json()["error"]
        assert client.request(method, path, headers={**headers, "Content-Type": "application/merge-patch+json"},
                              content=b"{").status_code == 400
