"""Client authentication limits that cannot be turned on a victim (issue 13 item 5; cds.auth_throttle,
docs/security.md): a correct secret always authenticates; failures are counted per (client id, address) with a
doubling backoff; the per-address limit slows failing requests only. On SQLite and PostgreSQL."""

from __future__ import annotations

import base64

import pytest
from gateway_helpers import BASE_URL, gateway_client, make_config, register
from starlette.testclient import TestClient

from cds import auth_throttle
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import AuthFailure

CREDENTIALS = {"grant_type": "client_credentials"}


def from_address(client: TestClient, address: str) -> TestClient:
    """Another client of the same application, as seen from ``address`` (the throttle keys on it)."""
    return TestClient(client.app, base_url=BASE_URL, follow_redirects=False, client=(address, 40000))


def token_status(client: TestClient, auth: tuple[str, str]) -> int:
    return client.post("/oauth/token", data=CREDENTIALS, auth=auth).status_code


def test_an_attackers_failures_lock_neither_the_owner_nor_another_client(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url, auth_failures_per_minute=3)) as client:
        victim, bystander = register(client), register(client)
        attacker_at_a, owner_at_a, owner_at_b = (from_address(client, "198.51.100.7"),
                                                 from_address(client, "198.51.100.7"),
                                                 from_address(client, "203.0.113.9"))
        wrong = (victim.admin_id, "guess")
        codes = [token_status(attacker_at_a, wrong) for _ in range(6)]
        assert codes == [401, 401, 401, 429, 429, 429]
        limited = attacker_at_a.post("/oauth/token", data=CREDENTIALS, auth=wrong)
        assert limited.json()["error"] == "invalid_client" and 0 < int(limited.headers["Retry-After"]) <= 60
        # the owner, from another address and from the attacker's own (a shared NAT), with the right secret
        assert token_status(owner_at_b, victim.admin_auth) == 200
        assert token_status(owner_at_a, victim.admin_auth) == 200
        # another client at the attacker's address is untouched, right secret or wrong
        assert token_status(attacker_at_a, bystander.admin_auth) == 200
        assert token_status(attacker_at_a, (bystander.admin_id, "typo")) == 401
        # the owner's own mistake from B is an ordinary 401: B was never blocked
        assert token_status(owner_at_b, (victim.admin_id, "typo")) == 401


def test_a_success_clears_its_pair_and_every_endpoint_accepts_the_right_secret(tmp_path):
    with gateway_client(make_config(tmp_path, auth_failures_per_minute=2)) as client:
        registration = register(client)
        wrong = (registration.admin_id, "guess")
        assert [token_status(client, wrong) for _ in range(3)] == [401, 401, 429]
        token = client.post("/oauth/token", data=CREDENTIALS, auth=registration.admin_auth).json()["access_token"]
        for path in ("/oauth/introspect", "/oauth/revoke"):
            assert client.post(path, data={"token": "x"}, auth=wrong).status_code == 401  # cleared: counted anew
            assert client.post(path, data={"token": token}, auth=registration.admin_auth).status_code == 200
        usage_id, _secret = registration.auth_for("cds_usage_1")
        for _ in range(2):
            client.post("/oauth/par", data={"response_type": "code"}, auth=(usage_id, "guess"))
        assert client.post("/oauth/par", data={"response_type": "code"}, auth=(usage_id, "guess")).status_code == 429
        assert client.post("/oauth/par", data={"response_type": "code", "client_id": usage_id},
                           auth=registration.auth_for("cds_usage_1")).status_code != 429


def test_the_address_limit_slows_only_failing_requests(tmp_path):
    config = make_config(tmp_path, auth_failures_per_minute=3, auth_address_failures_per_minute=5)
    with gateway_client(config) as client:
        registration = register(client)
        noisy, quiet = from_address(client, "192.0.2.1"), from_address(client, "192.0.2.2")
        garbage = {"Authorization": "Basic " + base64.b64encode(b"\xff:\xfe").decode()}
        # unknown clients, malformed and missing credentials: all noise of this address
        noise = [noisy.post("/oauth/token", data=CREDENTIALS, auth=(f"nobody-{i}", "x")).status_code
                 for i in range(3)]
        noise.append(noisy.post("/oauth/token", data=CREDENTIALS, headers=garbage).status_code)
        noise.append(noisy.post("/oauth/token", data=CREDENTIALS).status_code)
        assert noise == [401, 401, 401, 400, 401]
        assert token_status(noisy, ("nobody-else", "x")) == 429
        assert token_status(noisy, (registration.admin_id, "typo")) == 429  # a failure from a blocked address
        assert token_status(noisy, registration.admin_auth) == 200  # the right secret is never refused
        assert token_status(quiet, ("nobody", "x")) == 401  # another address is not concerned


def test_backoff_doubles_restarts_and_is_capped(database_url):
    """cds.auth_throttle over a real store, with explicit times."""
    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    limits = auth_throttle.AuthLimits(per_client_address=2, per_address=1000, window_seconds=60,
                                      max_block_seconds=300)
    client_id, address = "client-1", "2001:db8::1"

    def fail(at: int) -> int:
        with sessions() as session:
            blocked = auth_throttle.blocked_for(session, client_id, address, at)
            if not blocked:
                auth_throttle.record_failure(session, client_id, address, at, limits)
            return blocked

    t = 1_000_000
    assert [fail(t), fail(t + 1)] == [0, 0]  # the second failure reaches the limit: blocked for 60 s
    assert fail(t + 2) == 59
    assert [fail(t + 61), fail(t + 62)] == [0, 0]  # the next block lasts 120 s
    assert fail(t + 63) == 119
    at = t + 182
    for expected in (240, 300, 300):  # 240, then capped at max_block_seconds
        assert [fail(at), fail(at + 1)] == [0, 0]
        assert fail(at + 2) == expected - 1
        at += 1 + expected
    # a failure long after the last one starts the backoff over (and the stale row was cleaned up meanwhile)
    quiet = at + limits.max_block_seconds + 1
    assert [fail(quiet), fail(quiet + 1), fail(quiet + 2)] == [0, 0, 59]
    # a success clears the pair
    with sessions() as session, session.begin():
        auth_throttle.clear(session, client_id, address)
    assert fail(quiet + 3) == 0
    with sessions() as session:  # the keys are digests, not the client id or the address
        keys = [row.key for row in session.query(AuthFailure)]
        assert keys and all(client_id not in key and address not in key for key in keys)
    engine.dispose()


@pytest.mark.parametrize("header", ["Basic", "Basic %%%", "Basic " + base64.b64encode(b"no-colon").decode(),
                                    "Basic " + base64.b64encode(b"id%FF:secret").decode(),
                                    "Basic " + base64.b64encode(b"id\x01:secret").decode()])
def test_malformed_basic_credentials_are_a_clear_400(tmp_path, header):
    with gateway_client(make_config(tmp_path)) as client:
        response = client.post("/oauth/token", data=CREDENTIALS, headers={"Authorization": header})
        assert response.status_code == 400
        body = response.json()
        assert body["error"] == "invalid_request" and "client_secret_basic" in body["error_description"]
