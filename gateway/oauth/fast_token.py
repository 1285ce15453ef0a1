"""The token endpoint's common cases without Authlib or ORM entities (RFC 6749 §4.4 client credentials, §6
refresh with rotation), for speed: a ``client_credentials`` token for a client that already has its grant, and a
``refresh_token`` rotation, each in a few Core statements built once.

It answers only the plain success of these two requests, and writes exactly what the general path
(gateway.oauth.server, Authlib) writes and answers exactly what it answers: tokens stored as hashes, a refresh
token claimed by the same guarded UPDATE (issue 13: one winner among concurrent rotations) and the new one kept in
its family, the grant's access, the credential's expiry and the client's status checked in the same statements.
Everything else returns None before anything is committed, and the general path then answers the request from the
start: failed or throttled authentication (its counting and its errors stay the general path's), a pair with
failures to clear, authorization_details, Grant Admin scopes, a client's first token (the grant is created there),
any parameter beyond the plain request, a spent, expired or foreign refresh token (reuse detection revokes the
family there), a lost race for the claim, and any exception before the commit (rolled back).
"""

from __future__ import annotations

import hmac
import logging
import secrets
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from sqlalchemy import bindparam, insert, select, update
from sqlalchemy.engine import Connection

from cds import auth_throttle
from cds import authorization_details as rar
from cds.grants import NO_ACCESS, effective_status, has_access
from cds.store.models import AuthFailure, Client, Credential, Grant, Token
from espi.starlette_oauth import MalformedBasicAuth, basic_credentials
from gateway.context import Gateway

log = logging.getLogger("greenbridge.oauth.fast_token")

#: The client, each of its credentials and the (client id, address) pair's failure row in one statement.
_CLIENT = (
    select(Client.scope, Client.default_scope, Client.status, Client.grant_types, Client.token_endpoint_auth_method,
           Client.customer_id, Client.authorization_details_types, Credential.credential_id, Credential.secret_hash,
           Credential.expires_at, AuthFailure.key.label("failure_key"))
    .select_from(Client)
    .outerjoin(Credential, Credential.client_id == Client.client_id)
    .outerjoin(AuthFailure, AuthFailure.key == bindparam("pair"))
    .where(Client.client_id == bindparam("client_id"))
)
_GRANT_COLUMNS = (Grant.grant_id, Grant.authorization_details, Grant.status, Grant.not_before, Grant.not_after,
                  Grant.expires, Grant.enabled_scope)
_GRANTS_WITHOUT_CUSTOMER = select(*_GRANT_COLUMNS).where(
    Grant.client_id == bindparam("client_id"), Grant.scope == bindparam("scope"), Grant.customer_id.is_(None))
_GRANTS_OF_CUSTOMER = select(*_GRANT_COLUMNS).where(
    Grant.client_id == bindparam("client_id"), Grant.scope == bindparam("scope"),
    Grant.customer_id == bindparam("customer_id"))
_TOKEN_CREDENTIAL = Credential.__table__.alias("token_credential")
#: A refresh token with what keeps it alive (token_still_authorized): its credential, its client, its grant.
_REFRESH = (
    select(Token.id, Token.client_id, Token.refresh_revoked, Token.refresh_expires_at, Token.credential_id,
           _TOKEN_CREDENTIAL.c.credential_id.label("credential_row"),
           _TOKEN_CREDENTIAL.c.expires_at.label("credential_expires_at"),
           Token.grant_id, Grant.grant_id.label("grant_row"), Grant.status.label("grant_status"),
           Grant.not_before, Grant.not_after, Grant.expires, Grant.enabled_scope, Token.scope,
           Token.authorization_details, Token.customer_id, Token.family_id)
    .select_from(Token)
    .outerjoin(_TOKEN_CREDENTIAL, _TOKEN_CREDENTIAL.c.credential_id == Token.credential_id)
    .outerjoin(Grant, Grant.grant_id == Token.grant_id)
    .where(Token.refresh_token_hash == bindparam("refresh_hash"))
)
_CLAIM = update(Token).where(Token.id == bindparam("token_id"), Token.refresh_revoked.is_(False)).values(
    refresh_revoked=True)
_INSERT = insert(Token)

CLIENT_CREDENTIALS_PARAMETERS = frozenset({"grant_type", "scope"})
REFRESH_PARAMETERS = frozenset({"grant_type", "refresh_token"})


@dataclass(frozen=True)
class TokenRequest:
    """A token request the fast path may answer: its parameters and the client's Basic credentials."""

    grant_type: str
    params: dict[str, str]
    client_id: str
    secret: str
    address: str


def candidate(form: list[tuple[str, str]], headers: Any, address: str) -> TokenRequest | None:
    """The request when it is a plain client_credentials or refresh_token request with Basic credentials, else None
    (the general path answers it)."""
    params = dict(form)
    if len(params) != len(form):
        return None  # a repeated parameter: the general path's error
    grant_type = params.get("grant_type")
    if grant_type == "client_credentials":
        if not params.keys() <= CLIENT_CREDENTIALS_PARAMETERS:
            return None
    elif grant_type == "refresh_token":
        if params.keys() != REFRESH_PARAMETERS or not params["refresh_token"]:
            return None
    else:
        return None
    try:
        credentials = basic_credentials(headers)
    except MalformedBasicAuth:
        return None
    if not credentials or not credentials[0] or not credentials[1]:
        return None
    return TokenRequest(grant_type, params, credentials[0], credentials[1], address)


def issue(gateway: Gateway, request: TokenRequest) -> dict[str, Any] | None:
    """The token response's body (tokens issued and committed), or None: nothing was written and the general path
    must answer. Runs in the threadpool."""
    issue_in = _client_credentials if request.grant_type == "client_credentials" else _refresh
    with gateway.engine.connect() as connection:
        try:
            body = issue_in(connection, gateway, request)
        except Exception:
            log.debug("token fast path: exception, general path answers", exc_info=True)
            connection.rollback()
            return None
        if body is None:
            connection.rollback()
            return None
        connection.commit()
    log.debug("token fast path: %s issued", request.grant_type)
    return body


def _authenticated(connection: Connection, gateway: Gateway, request: TokenRequest, now: int):
    """(the client row, the credential id) when the secret is right, the client may use this grant type by
    client_secret_basic and the pair has no failures to clear; else None."""
    pair, _ = auth_throttle.failure_keys(request.client_id, request.address)
    rows = connection.execute(_CLIENT, {"client_id": request.client_id, "pair": pair}).all()
    if not rows:
        return None
    digest = gateway.box.hash(request.secret)
    credential_id = None
    for row in rows:  # as OAuthClient.check_client_secret
        if row.secret_hash is None or (row.expires_at and row.expires_at <= now):
            continue
        if hmac.compare_digest(digest, row.secret_hash):
            credential_id = row.credential_id
            break
    client = rows[0]
    if (credential_id is None or client.failure_key is not None or client.status == "disabled"
            or client.token_endpoint_auth_method != "client_secret_basic"
            or request.grant_type not in client.grant_types):
        return None
    return client, credential_id


def _client_credentials(connection: Connection, gateway: Gateway, request: TokenRequest) -> dict[str, Any] | None:
    now = int(time.time())
    authenticated = _authenticated(connection, gateway, request, now)
    if authenticated is None:
        return None
    client, credential_id = authenticated
    # as _CdsGrantMixin.check_scopes and ClientCredentialsGrant.validate_token_request
    requested = list(dict.fromkeys((request.params.get("scope") or "").split()
                                   or (client.default_scope or client.scope).split()))
    allowed = set(client.scope.split())
    descriptions = gateway.descriptions
    if not requested or any(s not in allowed or s not in descriptions or descriptions[s].type == "cds_grant_admin"
                            for s in requested):
        return None
    scope = " ".join(requested)
    validated = rar.validate_authorization_details(
        rar.parse_authorization_details(None), scopes=requested, descriptions=gateway.oauth.descriptions_json,
        client_types=list(client.authorization_details_types), timezone=gateway.config.timezone,
        now=datetime.now(UTC).replace(microsecond=0), flow="client_credentials")
    # as cds.grants.client_credentials_grant, without creating one
    if client.customer_id is None:
        grants = connection.execute(_GRANTS_WITHOUT_CUSTOMER, {"client_id": request.client_id, "scope": scope})
    else:
        grants = connection.execute(_GRANTS_OF_CUSTOMER, {"client_id": request.client_id, "scope": scope,
                                                          "customer_id": client.customer_id})
    moment = datetime.now(UTC)
    grant_id = next((g.grant_id for g in grants
                     if g.authorization_details == validated.effective and has_access(g, moment)), None)
    if grant_id is None:
        return None
    access = gateway.box.new_secret(48)
    expires_in = gateway.config.access_token_seconds
    connection.execute(_INSERT, dict(
        access_revoked=False, refresh_revoked=False, access_token_hash=gateway.box.hash(access),
        refresh_token_hash=None, client_id=request.client_id, credential_id=credential_id, grant_id=grant_id,
        customer_id=None, scope=scope, authorization_details=validated.effective, issued_at=now,
        expires_in=expires_in, refresh_expires_at=None, family_id=secrets.token_hex(16)))
    # GatewayServer.token_body's members, in its order
    body: dict[str, Any] = {"access_token": access, "token_type": "bearer", "expires_in": expires_in, "scope": scope}
    if validated.echoed:
        body["authorization_details"] = validated.echoed
    return body


def _refresh(connection: Connection, gateway: Gateway, request: TokenRequest) -> dict[str, Any] | None:
    now = int(time.time())
    authenticated = _authenticated(connection, gateway, request, now)
    if authenticated is None:
        return None
    _client, credential_id = authenticated
    old = connection.execute(_REFRESH, {"refresh_hash": gateway.box.hash(request.params["refresh_token"])}).first()
    # as RefreshTokenGrant.authenticate_refresh_token and token_still_authorized (the client is the one above)
    if (old is None or old.refresh_revoked or old.client_id != request.client_id or not old.scope
            or (old.refresh_expires_at is not None and old.refresh_expires_at <= now)):
        return None
    if old.credential_id and (old.credential_row is None
                              or (old.credential_expires_at and old.credential_expires_at <= now)):
        return None
    if old.grant_id:
        grant = SimpleNamespace(status=old.grant_status, not_before=old.not_before, not_after=old.not_after,
                                expires=old.expires)
        if old.grant_row is None or effective_status(grant) in NO_ACCESS or not old.enabled_scope:
            return None
    # RefreshTokenGrant.create_token_response's guarded claim: a lost race is reuse, which the general path answers
    if connection.execute(_CLAIM, {"token_id": old.id}).rowcount != 1:
        return None
    access, refresh = gateway.box.new_secret(48), gateway.box.new_secret(48)
    expires_in = gateway.config.access_token_seconds
    details = list(old.authorization_details)
    connection.execute(_INSERT, dict(
        access_revoked=False, refresh_revoked=False, access_token_hash=gateway.box.hash(access),
        refresh_token_hash=gateway.box.hash(refresh), client_id=request.client_id, credential_id=credential_id,
        grant_id=old.grant_id, customer_id=old.customer_id, scope=old.scope, authorization_details=details,
        issued_at=now, expires_in=expires_in, refresh_expires_at=now + gateway.config.refresh_token_seconds,
        family_id=old.family_id or secrets.token_hex(16)))
    body: dict[str, Any] = {"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                            "expires_in": expires_in, "scope": old.scope}
    echoed = [{k: v for k, v in entry.items() if k not in rar.PRESELECTION_FIELDS} for entry in details]
    if echoed:
        body["authorization_details"] = echoed
    return body
