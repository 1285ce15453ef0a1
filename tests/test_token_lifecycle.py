"""Token lifecycle (issue 13 item 6) on SQLite and PostgreSQL: refresh rotation has exactly one winner under real
concurrency and the loser is reuse; a replayed authorization code revokes what it issued (RFC 6749 §4.1.2);
revoking a refresh token revokes its family, earlier rotations' access tokens included (RFC 7009, RFC 9700 §4.14)."""

from __future__ import annotations

import re
import threading
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs, urlsplit

from gateway_helpers import (
    BASE_URL,
    TEST_CUSTOMER,
    consent_flow,
    continue_to_client,
    gateway_client,
    make_config,
    pkce_pair,
    register,
)
from sqlalchemy import event
from starlette.testclient import TestClient

SCOPE = "cds_client_admin cds_usage_1"


def active(client: TestClient, auth: tuple[str, str], value: str) -> bool:
    response = client.post("/oauth/introspect", data={"token": value}, auth=auth)
    assert response.status_code == 200, response.text
    return response.json()["active"]


def refresh(client: TestClient, auth: tuple[str, str], refresh_token: str):
    return client.post("/oauth/token", auth=auth, data={"grant_type": "refresh_token",
                                                        "refresh_token": refresh_token})


class WritesMeet:
    """Holds every request thread at its first write to the tokens table until ``parties`` threads are there, so
    that concurrent refreshes have all read the refresh token as unused before any of them writes (whatever the
    implementation writes first: the claim, the new token). A real engine event, not a stand-in."""

    def __init__(self, engine, parties: int) -> None:
        self.engine = engine
        self.barrier = threading.Barrier(parties, timeout=30)
        self.passed: set[int] = set()
        event.listen(engine, "before_cursor_execute", self._before)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if threading.get_ident() in self.passed or not re.match(r"\s*(UPDATE|INSERT INTO) tokens\b", statement):
            return
        self.passed.add(threading.get_ident())
        self.barrier.wait()

    def close(self) -> None:
        event.remove(self.engine, "before_cursor_execute", self._before)


def test_two_concurrent_refreshes_have_exactly_one_winner(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration = register(client, SCOPE)
        auth = registration.auth_for("cds_usage_1")
        tokens = consent_flow(client, registration)
        gateway = client.app.state.gateway
        meet = WritesMeet(gateway.engine, parties=2)
        # two HTTP clients of the same application, each request in its own thread
        clients = [TestClient(client.app, base_url=BASE_URL) for _ in range(2)]
        try:
            with ThreadPoolExecutor(2) as pool:
                responses = list(pool.map(lambda c: refresh(c, auth, tokens["refresh_token"]), clients))
        finally:
            meet.close()
        assert sorted(r.status_code for r in responses) == [200, 400], [r.text for r in responses]
        winner = next(r for r in responses if r.status_code == 200).json()
        loser = next(r for r in responses if r.status_code == 400).json()
        assert loser["error"] == "invalid_grant"
        # the loser presented a spent refresh token: reuse, so the whole family is revoked, the winner's new pair too
        for value in (tokens["access_token"], winner["access_token"], winner["refresh_token"]):
            assert not active(client, auth, value)
        assert refresh(client, auth, winner["refresh_token"]).status_code == 400


def test_sequential_refreshes_still_rotate(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration = register(client, SCOPE)
        auth = registration.auth_for("cds_usage_1")
        current = consent_flow(client, registration)
        for _ in range(3):
            response = refresh(client, auth, current["refresh_token"])
            assert response.status_code == 200, response.text
            current = response.json()
        assert active(client, auth, current["access_token"]) and active(client, auth, current["refresh_token"])


def _code_exchange(client: TestClient, registration) -> dict[str, str]:
    """The token request exchanging a fresh authorization code of the usage client (PAR, consent)."""
    app = registration.client_for("cds_usage_1")
    verifier, challenge = pkce_pair()
    form = {"response_type": "code", "client_id": app["client_id"], "redirect_uri": app["redirect_uris"][0],
            "scope": "cds_usage_1", "state": "s", "code_challenge": challenge, "code_challenge_method": "S256"}
    pushed = client.post("/oauth/par", data=form, auth=registration.auth_for("cds_usage_1")).json()
    page = client.get("/oauth/authorize", params={"client_id": app["client_id"], "request_uri": pushed["request_uri"]})
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    approved = client.post("/oauth/authorize", data={"consent": handle, "decision": "approve",
                                                     "customer_id": TEST_CUSTOMER[0], "password": TEST_CUSTOMER[1]})
    approved = continue_to_client(client, approved)
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    return {"grant_type": "authorization_code", "code": code, "redirect_uri": form["redirect_uri"],
            "code_verifier": verifier}


def test_a_replayed_code_revokes_what_it_issued(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration, stranger = register(client, SCOPE), register(client, SCOPE)
        auth = registration.auth_for("cds_usage_1")
        exchange = _code_exchange(client, registration)
        first = client.post("/oauth/token", data=exchange, auth=auth).json()
        rotated = refresh(client, auth, first["refresh_token"]).json()
        other_family = consent_flow(client, registration)  # another authorization of the same client
        # another registration's client replaying the code is refused and revokes nothing
        assert client.post("/oauth/token", data=exchange, auth=stranger.auth_for("cds_usage_1")).status_code == 400
        assert active(client, auth, rotated["access_token"])
        # the code's own client replaying it: refused, and every token the first exchange led to is revoked
        replay = client.post("/oauth/token", data=exchange, auth=auth)
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        for value in (first["access_token"], rotated["access_token"], rotated["refresh_token"]):
            assert not active(client, auth, value)
        assert refresh(client, auth, rotated["refresh_token"]).status_code == 400
        assert active(client, auth, other_family["access_token"])
        assert refresh(client, auth, other_family["refresh_token"]).status_code == 200


def test_revoking_a_refresh_token_revokes_its_family(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration = register(client, SCOPE)
        auth = registration.auth_for("cds_usage_1")
        issued = [consent_flow(client, registration)]
        for _ in range(2):
            issued.append(refresh(client, auth, issued[-1]["refresh_token"]).json())
        other_family = consent_flow(client, registration)
        # revoking an access token revokes that token only
        assert client.post("/oauth/revoke", data={"token": issued[-1]["access_token"]}, auth=auth).status_code == 200
        assert not active(client, auth, issued[-1]["access_token"])
        assert active(client, auth, issued[-2]["access_token"])
        # revoking the refresh token revokes every access token of every rotation (still valid for up to an hour)
        response = client.post("/oauth/revoke", auth=auth,
                               data={"token": issued[-1]["refresh_token"], "token_type_hint": "refresh_token"})
        assert response.status_code == 200
        for value in [t["access_token"] for t in issued] + [issued[-1]["refresh_token"]]:
            assert not active(client, auth, value)
        assert active(client, auth, other_family["access_token"])
        assert active(client, auth, other_family["refresh_token"])
