"""The token endpoint's fast path (gateway/oauth/fast_token.py, issue 15 item 2) on SQLite and PostgreSQL.

It is taken for a plain client_credentials request of a client that has its grant and for a plain refresh (seen in
the statements a request runs: one join of client, credentials and the throttle pair, then the grant or the refresh
token, the writes). Its answers and the rows it stores are the general path's (the same gateway with
``token_fast_path = false``, on the same store) member for member, token values aside. What it must refuse or does
not handle reaches the general path at once: a disabled client, an expired credential, a revoked grant, a wrong
secret, a pair with failures to clear, a replayed refresh token (the family is revoked)."""

from __future__ import annotations

import re
from contextlib import contextmanager

from gateway_helpers import consent_flow, gateway_client, make_config, register
from sqlalchemy import event, select, update

from cds.store.models import AuthFailure, Client, Credential, Grant, Token

SCOPE = "cds_client_admin cds_usage_1"
TABLES = re.compile(r"\b(clients|credentials|auth_failures|grants|tokens)\b")


@contextmanager
def statements(client):
    """The SQL statements the gateway runs on its store while the block runs (a real engine event)."""
    seen: list[str] = []

    def before(conn, cursor, statement, parameters, context, executemany) -> None:
        if TABLES.search(statement):
            seen.append(" ".join(statement.split()))

    engine = client.app.state.gateway.engine
    event.listen(engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", before)


def client_credentials(client, auth, scope="cds_client_admin"):
    return client.post("/oauth/token", auth=auth, data={"grant_type": "client_credentials", "scope": scope})


def refresh(client, auth, value):
    return client.post("/oauth/token", auth=auth, data={"grant_type": "refresh_token", "refresh_token": value})


def answer(response):
    """Everything of a token response but the token values (and the request id)."""
    body = response.json()
    return (response.status_code,
            [(k, v) for k, v in response.headers.items() if k != "x-request-id"],
            list(body),
            {k: v for k, v in body.items() if k not in ("access_token", "refresh_token")})


def stored(client, access_token):
    gateway = client.app.state.gateway
    with gateway.sessions() as session:
        row = session.scalar(select(Token).where(Token.access_token_hash == gateway.box.hash(access_token)))
        values = {c.name: getattr(row, c.key) for c in Token.__table__.columns}
    values["refresh_seconds"] = (values["refresh_expires_at"] - values["issued_at"]
                                 if values["refresh_expires_at"] is not None else None)
    for name in ("id", "access_token_hash", "refresh_token_hash", "issued_at", "refresh_expires_at"):
        values.pop(name)
    return values


def fast(seen, *tables_in_order):
    """The request ran the fast path's statements: each names these tables, in this order."""
    return len(seen) == len(tables_in_order) and all(
        re.match(rf"(SELECT .* FROM|UPDATE|INSERT INTO) {table}\b", statement)
        for statement, table in zip(seen, tables_in_order, strict=True))


CLIENT_CREDENTIALS = ("clients", "grants", "tokens")
REFRESH = ("clients", "tokens", "tokens", "tokens")


def test_fast_path_answers_and_stores_as_the_general_path(tmp_path, database_url):
    config = make_config(tmp_path, database_url)
    with gateway_client(config) as quick, gateway_client(config.with_overrides(token_fast_path=False)) as general:
        registration = register(quick, SCOPE)
        auth = (registration.admin_id, registration.admin_secret)
        assert client_credentials(quick, auth).status_code == 200  # the first one may create the grant
        with statements(quick) as seen:
            taken = client_credentials(quick, auth)
        assert fast(seen, *CLIENT_CREDENTIALS), seen
        assert "auth_failures" in seen[0]  # the throttle pair read in the same join
        with statements(general) as seen:
            reference = client_credentials(general, auth)
        assert not fast(seen, *CLIENT_CREDENTIALS) and len(seen) > len(CLIENT_CREDENTIALS), seen
        assert answer(taken) == answer(reference)
        assert answer(taken)[0] == 200 and ("cache-control", "no-store") in answer(taken)[1]
        first, second = stored(quick, taken.json()["access_token"]), stored(quick, reference.json()["access_token"])
        assert first.pop("family_id") != second.pop("family_id")  # each issuance starts its own family
        assert first == second

        # refresh: the consent's token rotated on the fast path, that one on the general path
        tokens = consent_flow(quick, registration)
        usage = registration.auth_for("cds_usage_1")
        with statements(quick) as seen:
            rotated = refresh(quick, usage, tokens["refresh_token"])
        assert fast(seen, *REFRESH), seen
        reference = refresh(general, usage, rotated.json()["refresh_token"])
        assert answer(rotated) == answer(reference)
        assert answer(rotated)[0] == 200 and "authorization_details" in rotated.json()
        first, second = stored(quick, rotated.json()["access_token"]), stored(quick, reference.json()["access_token"])
        assert (first.pop("refresh_revoked"), second.pop("refresh_revoked")) == (True, False)  # rotated out, not
        assert first == second  # the family (the code's) included
        assert first["family_id"] == stored(quick, tokens["access_token"])["family_id"]

        # the rotated-out token again: reuse, answered by the general path, revokes the whole family
        replay = refresh(quick, usage, tokens["refresh_token"])
        general_replay = refresh(general, usage, rotated.json()["refresh_token"])
        assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
        assert answer(replay) == answer(general_replay)
        assert refresh(quick, usage, reference.json()["refresh_token"]).json()["error"] == "invalid_grant"
        for value in (rotated.json()["access_token"], reference.json()["access_token"]):
            assert quick.post("/oauth/introspect", data={"token": value}, auth=usage).json() == {"active": False}


def test_refusals_reach_the_general_path_at_once(tmp_path, database_url):
    config = make_config(tmp_path, database_url)
    with gateway_client(config) as quick, gateway_client(config.with_overrides(token_fast_path=False)) as general:
        gateway = quick.app.state.gateway
        registration = register(quick, SCOPE)
        auth = (registration.admin_id, registration.admin_secret)
        assert client_credentials(quick, auth).status_code == 200

        def change(statement) -> None:
            with gateway.sessions() as session, session.begin():
                session.execute(statement)

        def same_refusal(status: int, make) -> None:
            refused, reference = make(quick), make(general)
            assert refused.status_code == status, refused.text
            assert answer(refused) == answer(reference)

        # a wrong secret: counted by the general path; the right secret then clears the pair there, not here
        wrong = client_credentials(quick, (registration.admin_id, "wrong"))
        assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"
        with statements(quick) as seen:
            assert client_credentials(quick, auth).status_code == 200
        assert not fast(seen, *CLIENT_CREDENTIALS) and any(s.startswith("DELETE FROM auth_failures") for s in seen)
        with statements(quick) as seen:
            assert client_credentials(quick, auth).status_code == 200
        assert fast(seen, *CLIENT_CREDENTIALS), seen
        with gateway.sessions() as session:
            assert session.scalars(select(AuthFailure)).all() != []  # the address keeps its count

        # a disabled client, then an expired credential: refused by the very next request
        change(update(Client).where(Client.client_id == registration.admin_id).values(status="disabled"))
        same_refusal(401, lambda c: client_credentials(c, auth))
        change(update(Client).where(Client.client_id == registration.admin_id).values(status="sandbox"))
        assert client_credentials(quick, auth).status_code == 200
        change(update(Credential).where(Credential.client_id == registration.admin_id).values(expires_at=1))
        same_refusal(401, lambda c: client_credentials(c, auth))

        # a revoked grant: the refresh token dies with it; client_credentials gets a new grant (as ever)
        tokens = consent_flow(quick, registration)
        usage = registration.auth_for("cds_usage_1")
        rotated = refresh(quick, usage, tokens["refresh_token"]).json()
        change(update(Grant).where(Grant.grant_id == tokens["cds_grant_ids"][0]).values(status="revoked"))
        with statements(quick) as seen:
            refused = refresh(quick, usage, rotated["refresh_token"])
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
        assert not fast(seen, *REFRESH)
        # a client_credentials request beyond the plain one (here a repeated parameter) is the general path's
        repeated = quick.post("/oauth/token", auth=auth, content="grant_type=client_credentials&scope=a&scope=b",
                              headers={"Content-Type": "application/x-www-form-urlencoded"})
        reference = general.post("/oauth/token", auth=auth, content="grant_type=client_credentials&scope=a&scope=b",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert repeated.status_code >= 400 and answer(repeated) == answer(reference)
