"""Tenancy of the admin APIs (CDS-WG1-02 §5–8): a registration's ``cds_client_admin`` token never reads or changes
another registration's Clients, Credentials, Grants or Messages. Foreign rows are absent from lists and filters and
answer exactly like missing ones (404, or the same 400 for a reference inside a request body). Both backends."""

from __future__ import annotations

import time
from dataclasses import dataclass

from gateway_helpers import BASE_URL, Registration, bearer, consent_flow, gateway_client, make_config, register, token

API = "/cds-api/v1"
SCOPE = "cds_client_admin cds_usage_1 cds_meters_1"
MISSING = "0123456789abcdef"


def rel(url: str) -> str:
    assert url.startswith(BASE_URL + "/"), url
    return url[len(BASE_URL):]


@dataclass
class Tenant:
    registration: Registration
    headers: dict[str, str]
    consent: dict
    message: dict

    def ids(self, client, kind: str, key: str) -> set[str]:
        body = client.get(f"{API}/{kind}", headers=self.headers).json()
        assert body["next"] is None
        return {item[key] for item in body[kind]}


def tenant(client) -> Tenant:
    registration = register(client, SCOPE)
    headers = bearer(token(client, registration.admin_auth, "cds_client_admin")["access_token"])
    consent = consent_flow(client, registration, "cds_usage_1")
    message = client.post(f"{API}/messages", headers=headers,
                          json={"type": "support_request", "name": "Help", "description": "Please"}).json()
    return Tenant(registration, headers, consent, message)


def same_404(client, headers, path: str, method: str = "GET", **kwargs) -> None:
    """``path`` answers exactly like the same route with an identifier that does not exist."""
    response = client.request(method, path, headers=headers, **kwargs)
    missing = client.request(method, path.rsplit("/", 1)[0] + "/" + MISSING, headers=headers, **kwargs)
    assert response.status_code == 404, (method, path, response.text)
    assert response.json() == missing.json()


def snapshot(client, owner: Tenant) -> dict:
    return {kind: client.get(f"{API}/{kind}", headers=owner.headers).json()
            for kind in ("clients", "credentials", "grants", "messages")}


def test_lists_and_filters_show_only_the_own_registration(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        a, b = tenant(client), tenant(client)
        for kind, key in (("clients", "client_id"), ("credentials", "credential_id"), ("grants", "grant_id")):
            mine, theirs = a.ids(client, kind, key), b.ids(client, kind, key)
            assert mine and theirs and not mine & theirs, kind
        assert a.ids(client, "clients", "client_id") == set(a.registration.clients)
        assert {c["client_id"] for c in client.get(f"{API}/credentials", headers=a.headers).json()["credentials"]} \
            <= set(a.registration.clients)

        b_clients = " ".join(b.registration.clients)
        b_credentials = " ".join(b.ids(client, "credentials", "credential_id"))
        b_grants = " ".join(b.ids(client, "grants", "grant_id"))
        empty = [
            ("clients", {"client_ids": b_clients}),
            ("credentials", {"credential_ids": b_credentials}),
            ("credentials", {"client_ids": b_clients}),
            ("grants", {"grant_ids": b_grants}),
            ("grants", {"client_ids": b_clients}),
            ("grants", {"parents": b_grants}),
        ]
        for kind, params in empty:
            body = client.get(f"{API}/{kind}", params=params, headers=a.headers).json()
            assert body[kind] == [] and body["next"] is None, (kind, params)
        # both consents used state "state-1": only A's grant shows
        states = client.get(f"{API}/grants", params={"states": "state-1"}, headers=a.headers).json()["grants"]
        assert [g["grant_id"] for g in states] == a.consent["cds_grant_ids"]
        receipt = client.get(f"{API}/grants/{b.consent['cds_grant_ids'][0]}", headers=b.headers).json()
        body = client.get(f"{API}/grants", params={"receipt_confirmations": receipt["receipt_confirmations"][0]},
                          headers=a.headers).json()
        assert body["grants"] == []

        messages = client.get(f"{API}/messages", headers=a.headers).json()
        everything = [m["message_id"] for name in ("outstanding", "unread", "read") for m in messages[name]]
        assert a.message["message_id"] in everything and b.message["message_id"] not in everything
        body = client.get(f"{API}/messages", params={"message_ids": b.message["message_id"]},
                          headers=a.headers).json()
        assert body["outstanding"] == body["unread"] == body["read"] == []


def test_foreign_pagination_cursors_stay_in_the_own_registration(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url, page_size=1)) as client:
        a, b = tenant(client), tenant(client)
        for kind, key in (("clients", "client_id"), ("credentials", "credential_id"), ("grants", "grant_id")):
            theirs = client.get(f"{API}/{kind}", headers=b.headers).json()
            assert theirs["next"]
            mine = client.get(rel(theirs["next"]), headers=a.headers)
            assert mine.status_code == 200
            own = set(a.registration.clients) if kind == "clients" else None
            for item in mine.json()[kind]:
                assert item[key] not in {i[key] for i in theirs[kind]}
                if own is not None:
                    assert item[key] in own
        client.post(f"{API}/messages", headers=b.headers, json={"type": "private_message", "name": "2",
                                                                "description": ""})
        theirs = client.get(f"{API}/messages", headers=b.headers).json()
        assert theirs["read_next"]
        mine = client.get(rel(theirs["read_next"]), headers=a.headers).json()
        assert all(m["creator"] == a.registration.admin_id for m in mine["read"])
        assert b.message["message_id"] not in {m["message_id"] for m in mine["read"]}


def test_foreign_objects_are_404_like_missing_ones(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        a, b = tenant(client), tenant(client)
        for client_id in b.registration.clients:
            same_404(client, a.headers, f"{API}/clients/{client_id}")
        for credential in client.get(f"{API}/credentials", headers=b.headers).json()["credentials"]:
            same_404(client, a.headers, rel(credential["uri"]))
        for grant in client.get(f"{API}/grants", headers=b.headers).json()["grants"]:
            same_404(client, a.headers, rel(grant["uri"]))
        same_404(client, a.headers, rel(b.message["uri"]))


def test_foreign_objects_cannot_be_changed(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        a, b = tenant(client), tenant(client)
        before = snapshot(client, b)
        for client_object in before["clients"]["clients"]:
            same_404(client, a.headers, rel(client_object["cds_client_uri"]), "PUT",
                     json={**client_object, "client_name": "taken over", "cds_status": "disabled"})
            same_404(client, a.headers, rel(client_object["cds_client_uri"]), "PUT", json={})
        for credential in before["credentials"]["credentials"]:
            same_404(client, a.headers, rel(credential["uri"]), "PATCH",
                     json={"client_secret_expires_at": int(time.time())})
        for grant in before["grants"]["grants"]:
            same_404(client, a.headers, rel(grant["uri"]), "PATCH", json={"status": "closed"})
            same_404(client, a.headers, rel(grant["uri"]), "PATCH", json={"scope": "cds_usage_1"})
        same_404(client, a.headers, rel(b.message["uri"]), "PATCH", json={"read": False})

        assert snapshot(client, b) == before  # no change, no changelog message
        # B's secrets, tokens and grants all still work
        for client_id, secret in b.registration.secrets.items():
            if client_id == b.registration.admin_id:
                token(client, (client_id, secret), "cds_client_admin")
        introspected = client.post("/oauth/introspect", data={"token": b.consent["access_token"]},
                                   auth=b.registration.admin_auth).json()
        assert introspected["active"] is True
        assert client.get(f"{API}/clients", headers=b.headers).status_code == 200


def test_request_bodies_cannot_reference_another_registration(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        a, b = tenant(client), tenant(client)
        before = snapshot(client, b)
        for client_id in b.registration.clients:
            response = client.post(f"{API}/credentials", headers=a.headers, json={"client_id": client_id})
            missing = client.post(f"{API}/credentials", headers=a.headers, json={"client_id": MISSING})
            assert response.status_code == 400 and response.json() == missing.json()
        reply = {"type": "private_message", "name": "Re", "description": "x", "previous_uri": b.message["uri"]}
        response = client.post(f"{API}/messages", headers=a.headers, json=reply)
        missing = client.post(f"{API}/messages", headers=a.headers,
                              json={**reply, "previous_uri": f"{BASE_URL}{API}/messages/{MISSING}"})
        assert response.status_code == 400 and response.json() == missing.json()
        # a message naming B's client (any related_type) is refused exactly like one naming no client (issue 13
        # changed this: a grant_request for B's client used to be accepted as a third-party request)
        b_usage = b.registration.client_for("cds_usage_1")["cds_client_uri"]
        request = {"type": "grant_request", "name": "Share", "description": "with a partner",
                   "related_uri": b_usage,
                   "grants_requested": [{"scope": "cds_usage_1", "authorization_details": []}]}
        for body in (request, {"type": "support_request", "name": "About", "description": "x",
                               "related_uri": b_usage, "related_type": "client"}):
            response = client.post(f"{API}/messages", headers=a.headers, json=body)
            unknown = client.post(f"{API}/messages", headers=a.headers,
                                  json={**body, "related_uri": f"{BASE_URL}{API}/clients/{MISSING}"})
            assert response.status_code == unknown.status_code == 400 and response.json() == unknown.json()
        own = a.registration.client_for("cds_usage_1")["cds_client_uri"]
        assert client.post(f"{API}/messages", headers=a.headers,
                           json={**request, "related_uri": own}).status_code == 201
        # and nothing of B moved: its lists are the same
        assert snapshot(client, b) == before
