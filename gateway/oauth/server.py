"""The OAuth 2.0 authorization server (RFC 6749) as CDS-WG1-02 profiles it, on Authlib's server core.

Authlib does the RFC machinery (grant dispatch, client authentication, PKCE verification, revocation RFC 7009,
introspection RFC 7662, error formatting). This module adds what CDS requires and Authlib does not do by itself:

* ``client_secret_basic`` only, on every grant and endpoint (WG1-02 §3.4); failed authentications throttled in a
  way that never refuses a correct secret (cds.auth_throttle);
* PKCE with ``S256`` required for every client, ``plain`` refused (WG1-02 §3.4; RFC 7636);
* RAR ``authorization_details`` (RFC 9396) validated against the scope's field objects and echoed with defaults
  and absolute dates in the token response (WG1-02 §3.8, WG3-01 §7);
* a Grant behind every token, ``cds_grant_ids`` in token responses when a grant was created or changed (§8.4),
  the Grant Admin flow (§3.3.2), refresh token rotation with reuse detection (RFC 9700 §4.14).

Everything runs synchronously inside Starlette's threadpool; the request's database session travels in a context
variable set by :func:`bind_session` for the duration of one call.
"""

from __future__ import annotations

import contextlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from authlib.oauth2 import AuthorizationServer, OAuth2Error
from authlib.oauth2.rfc6749 import ClientMixin, TokenMixin, grants
from authlib.oauth2.rfc6749.errors import (
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
    UnauthorizedClientError,
)
from authlib.oauth2.rfc6750 import BearerTokenGenerator
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from sqlalchemy import bindparam, delete, insert, select, update
from sqlalchemy.orm import Session
from starlette.responses import JSONResponse, Response

from bridge.config import GatewayConfig
from cds import auth_throttle
from cds import authorization_details as rar
from cds.grants import NO_ACCESS, client_credentials_grant, effective_status
from cds.scopes import metadata_json
from cds.secrets import SecretBox
from cds.store.models import AuthorizationCode, Client, Credential, Grant, PushedRequest, Token
from cds.urls import Urls
from espi.starlette_oauth import GatewayRequest, MalformedBasicAuth, StarletteServerMixin, basic_credentials

_session: ContextVar[Session] = ContextVar("greenbridge_oauth_session")
CLIENT_AUTH = ["client_secret_basic"]


@contextlib.contextmanager
def bind_session(session: Session) -> Iterator[Session]:
    token = _session.set(session)
    try:
        yield session
    finally:
        _session.reset(token)


def db() -> Session:
    return _session.get()


class InvalidAuthorizationDetailsError(OAuth2Error):
    """RFC 9396 §5."""

    error = "invalid_authorization_details"


class TooManyFailuresError(OAuth2Error):
    error = "invalid_client"
    status_code = 429

    def __init__(self, retry_after: int) -> None:
        super().__init__(description="Too many failed client authentications; retry later.")
        self.retry_after = retry_after

    def get_headers(self):
        return [*super().get_headers(), ("Retry-After", str(self.retry_after))]


# --------------------------------------------------------------------------------------------------------------
# Models seen by Authlib
# --------------------------------------------------------------------------------------------------------------
class OAuthClient(ClientMixin):
    def __init__(self, row: Client, box: SecretBox) -> None:
        self.row = row
        self.box = box
        self.client_id = row.client_id
        self.credential_id: str | None = None

    def get_client_id(self) -> str:
        return self.row.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.row.default_redirect_uri

    def get_allowed_scope(self, scope: str | None) -> str:
        # Scope checks happen in the grants (they need the scope descriptions); here only the default.
        return scope if scope else (self.row.default_scope or self.row.scope)

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        # Exact string comparison (RFC 9700 §4.1.3): no prefix, no normalisation.
        return redirect_uri in self.row.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        now = int(time.time())
        digest = self.box.hash(client_secret)
        for credential_id, secret_hash, expires_at in db().execute(_CREDENTIALS, {"client_id": self.row.client_id}):
            if expires_at and expires_at <= now:
                continue
            if hmac.compare_digest(digest, secret_hash):
                self.credential_id = credential_id
                return True
        return False

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return (
            method == "client_secret_basic"
            and self.row.token_endpoint_auth_method == "client_secret_basic"
            and self.row.status != "disabled"
        )

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.row.response_types

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.row.grant_types


#: A client's credentials as client authentication compares them (built once; columns only, no entities).
_CREDENTIALS = select(Credential.credential_id, Credential.secret_hash, Credential.expires_at).where(
    Credential.client_id == bindparam("client_id"))


_INSERT_TOKEN = insert(Token)


class OAuthToken(TokenMixin):
    """A stored token seen as an access token or as a refresh token (``kind``)."""

    def __init__(self, row: Token, kind: str) -> None:
        self.row = row
        self.kind = kind

    def check_client(self, client: OAuthClient) -> bool:
        return self.row.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.row.scope

    def get_expires_in(self) -> int:
        return self.row.expires_in

    def is_expired(self) -> bool:
        now = int(time.time())
        if self.kind == "refresh_token":
            return self.row.refresh_expires_at is not None and self.row.refresh_expires_at <= now
        return self.row.issued_at + self.row.expires_in <= now

    def is_revoked(self) -> bool:
        if self.kind == "refresh_token":
            return self.row.refresh_revoked
        return self.row.access_revoked or not token_still_authorized(self.row)

    def get_user(self):
        return self.row.customer_id

    def get_client(self):
        return self.row.client_id


def token_still_authorized(row: Token) -> bool:
    """A token dies with its credential's expiry, its client's disabling and its grant's loss of access."""
    session = db()
    if row.credential_id:
        credential = session.get(Credential, row.credential_id)
        if credential is None or (credential.expires_at and credential.expires_at <= int(time.time())):
            return False
    client = session.get(Client, row.client_id)
    if client is None or client.status == "disabled":
        return False
    if row.grant_id:
        grant = session.get(Grant, row.grant_id)
        if grant is None or effective_status(grant) in NO_ACCESS or not grant.enabled_scope:
            return False
    return True


class AuthorizationCodeRecord:
    """Authlib's view of a stored authorization code."""

    def __init__(self, row: AuthorizationCode) -> None:
        self.row = row
        self.code_challenge = row.code_challenge
        self.code_challenge_method = row.code_challenge_method

    def get_redirect_uri(self) -> str | None:
        return self.row.requested_redirect_uri

    def get_scope(self) -> str:
        return self.row.scope


# --------------------------------------------------------------------------------------------------------------
# PKCE: S256 only, and required for every client (Authlib by default allows plain and skips confidential clients)
# --------------------------------------------------------------------------------------------------------------
class RequiredS256(CodeChallenge):
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    SUPPORTED_CODE_CHALLENGE_METHOD: ClassVar = ["S256"]

    def validate_code_challenge(self, grant, redirect_uri):
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("PKCE is required: code_challenge is missing.", redirect_uri=redirect_uri)
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError(
                "PKCE code_challenge_method must be S256 (plain is not accepted).", redirect_uri=redirect_uri
            )
        try:
            super().validate_code_challenge(grant, redirect_uri)
        except InvalidRequestError as error:
            error.redirect_uri = redirect_uri
            raise

    def validate_code_verifier(self, grant, result):
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("PKCE is required: code_verifier is missing.")
        super().validate_code_verifier(grant, result)


# --------------------------------------------------------------------------------------------------------------
# Grants
# --------------------------------------------------------------------------------------------------------------
class _CdsGrantMixin:
    TOKEN_ENDPOINT_AUTH_METHODS = CLIENT_AUTH

    @property
    def gateway(self) -> GatewayServer:
        return self.server  # type: ignore[attr-defined]

    def check_scopes(self, client: OAuthClient, scope: str | None, redirect_uri: str | None = None) -> list[str]:
        requested = list(dict.fromkeys((scope or "").split() or (client.row.default_scope or client.row.scope).split()))
        allowed = set(client.row.scope.split())
        refused = [s for s in requested if s not in allowed]
        if refused:
            raise InvalidScopeError(_ascii(f"Scopes not registered for this client: {' '.join(refused)}")[:500],
                                    redirect_uri=redirect_uri)
        if not requested:
            raise InvalidScopeError("No scope requested and the client has no default scope.",
                                    redirect_uri=redirect_uri)
        return requested

    def check_details(self, client: OAuthClient, scopes: list[str], raw: Any, flow: str,
                      redirect_uri: str | None = None) -> rar.ValidatedDetails:
        try:
            details = rar.parse_authorization_details(raw)
            return rar.validate_authorization_details(
                details,
                scopes=scopes,
                descriptions=self.gateway.descriptions_json,
                client_types=list(client.row.authorization_details_types),
                timezone=self.gateway.config.timezone,
                # Whole seconds: absolute values are shown to customers and echoed to clients.
                now=datetime.now(UTC).replace(microsecond=0),
                flow=flow,
            )
        except rar.AuthorizationDetailsError as error:
            raise InvalidAuthorizationDetailsError(_ascii(error.description), redirect_uri=redirect_uri) from None


def _echo_for_consent(details: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Customer-consent grants never echo preselection fields (WG3-01 §6)."""
    return [{k: v for k, v in entry.items() if k not in rar.PRESELECTION_FIELDS} for entry in details]


def _ascii(text: str) -> str:
    """RFC 6749 error_description allows only printable ASCII except '"' and '\\'."""
    return "".join(c if 0x20 <= ord(c) <= 0x7E and c not in '"\\' else "?" for c in text)


class ClientCredentialsGrant(_CdsGrantMixin, grants.ClientCredentialsGrant):
    def validate_token_request(self):
        client = self.authenticate_token_endpoint_client()
        if not client.check_grant_type(self.GRANT_TYPE):
            raise UnauthorizedClientError(f"The client may not use grant_type={self.GRANT_TYPE}")
        self.request.client = client
        scopes = self.check_scopes(client, self.request.payload.scope)
        self.request.scope = " ".join(scopes)
        descriptions = self.gateway.descriptions
        admin_scopes = [s for s in scopes if descriptions[s].type == "cds_grant_admin"]
        if admin_scopes:
            self._validate_grant_admin(client, scopes, admin_scopes)
            return
        validated = self.check_details(client, scopes, self.request.payload.data.get("authorization_details"),
                                       "client_credentials")
        self.request.details = validated
        grant, created = client_credentials_grant(
            db(), client.row, scope=self.request.scope, authorization_details=validated.effective,
            box=self.gateway.box,
        )
        self.request.grant_record = grant
        self.request.grant_created = created

    def _validate_grant_admin(self, client: OAuthClient, scopes: list[str], admin_scopes: list[str]) -> None:
        """WG1-02 §3.3.2: one entry naming a grant of this registration whose enabled scopes all use this admin."""
        if len(scopes) != 1:
            raise InvalidScopeError("A Grant Admin scope must be requested alone.")
        admin_scope = admin_scopes[0]
        validated = self.check_details(client, scopes, self.request.payload.data.get("authorization_details"),
                                       "client_credentials")
        entries = [d for d in validated.effective if d.get("type") in
                   self.gateway.descriptions[admin_scope].authorization_details_types_supported]
        if len(entries) != 1:
            raise InvalidAuthorizationDetailsError("Grant Admin needs exactly one authorization_details entry.")
        entry = entries[0]
        target = db().get(Grant, str(entry.get("grant_id")))
        if target is None or target.client_id != entry.get("client_id") or (
            target.registration_id != client.row.registration_id
        ):
            raise InvalidAuthorizationDetailsError("No such grant for that client_id.")
        if effective_status(target) in NO_ACCESS or not target.enabled_scope:
            raise InvalidAuthorizationDetailsError("The grant is not enabled.")
        for scope_id in target.enabled_scope.split():
            description = self.gateway.descriptions.get(scope_id)
            if description is None or description.grant_admin_scope != admin_scope:
                raise InvalidAuthorizationDetailsError(
                    f"Scope {scope_id} of the grant is not administered by {admin_scope}."
                )
        self.request.details = rar.ValidatedDetails(effective=[entry], echoed=[entry])
        self.request.grant_record = target
        self.request.grant_created = False

    def create_token_response(self):
        token = self.generate_token(scope=self.request.scope, include_refresh_token=False)
        self.save_token(token)
        return 200, self.gateway.token_body(token, self.request), self.TOKEN_RESPONSE_HEADER


class AuthorizationCodeGrant(_CdsGrantMixin, grants.AuthorizationCodeGrant):
    AUTHORIZATION_CODE_LENGTH = 48

    def validate_authorization_request(self):
        redirect_uri = super().validate_authorization_request()
        client: OAuthClient = self.request.client
        payload = self.request.payload.data
        scopes = self.check_scopes(client, payload.get("scope"), redirect_uri)
        self.request.scope = " ".join(scopes)
        raw = payload.get("authorization_details")
        if raw is None and not payload.get("scope"):
            raw = client.row.default_authorization_details or None
        self.request.details = self.check_details(client, scopes, raw, "authorization_code", redirect_uri)
        self.execute_hook("after_validate_authorization_request_payload", redirect_uri)
        return redirect_uri

    def save_authorization_code(self, code: str, request: GatewayRequest) -> None:
        now = int(time.time())
        grant = request.grant_record
        scope, details = getattr(request, "narrowed", None) or (request.scope, request.details.effective)
        db().add(AuthorizationCode(
            code_hash=self.gateway.box.hash(code),
            client_id=request.client.get_client_id(),
            redirect_uri=request.payload.redirect_uri or request.client.get_default_redirect_uri(),
            requested_redirect_uri=request.payload.redirect_uri,
            scope=scope,
            authorization_details=details,
            code_challenge=request.payload.data["code_challenge"],
            code_challenge_method=request.payload.data["code_challenge_method"],
            grant_id=grant.grant_id,
            customer_id=str(request.user),
            auth_time=now,
            expires_at=now + self.gateway.config.authorization_code_seconds,
        ))

    def query_authorization_code(self, code: str, client: OAuthClient):
        digest = self.gateway.box.hash(code)
        row = db().get(AuthorizationCode, digest)
        if row is None:
            _revoke_replayed_code(digest, client.get_client_id())
            return None
        if row.client_id != client.get_client_id() or row.expires_at <= int(time.time()):
            return None
        return AuthorizationCodeRecord(row)

    def delete_authorization_code(self, authorization_code: AuthorizationCodeRecord) -> None:
        db().execute(delete(AuthorizationCode).where(AuthorizationCode.code_hash == authorization_code.row.code_hash))

    def authenticate_user(self, authorization_code: AuthorizationCodeRecord):
        return authorization_code.row.customer_id

    def validate_token_request(self):
        super().validate_token_request()
        record: AuthorizationCodeRecord = self.request.authorization_code
        grant = db().get(Grant, record.row.grant_id)
        if grant is None or effective_status(grant) in NO_ACCESS:
            raise InvalidGrantError("The grant behind this code no longer allows access.")
        self.request.grant_record = grant
        self.request.grant_created = True
        details = list(record.row.authorization_details)
        self.request.details = rar.ValidatedDetails(effective=details, echoed=_echo_for_consent(details))

    def create_token_response(self):
        record: AuthorizationCodeRecord = self.request.authorization_code
        # The code is consumed first, in the same transaction, so a concurrent second exchange fails.
        deleted = db().execute(
            delete(AuthorizationCode).where(AuthorizationCode.code_hash == record.row.code_hash)
        ).rowcount
        if deleted != 1:  # a concurrent exchange of the same code won: this one is a replay
            _revoke_replayed_code(record.row.code_hash, record.row.client_id)
            raise InvalidGrantError("Invalid 'code' in request.")
        self.request.user = record.row.customer_id
        self.request.family_id = record.row.code_hash
        token = self.generate_token(user=record.row.customer_id, scope=record.row.scope,
                                    include_refresh_token=self.request.client.check_grant_type("refresh_token"))
        self.save_token(token)
        return 200, self.gateway.token_body(token, self.request), self.TOKEN_RESPONSE_HEADER


def _revoke_family(row: Token) -> None:
    """Revoke every token of ``row``'s family and commit: the revocation must outlive the error response."""
    session = db()
    condition = Token.family_id == row.family_id if row.family_id else Token.id == row.id
    session.execute(update(Token).where(condition).values(access_revoked=True, refresh_revoked=True))
    session.commit()


def _revoke_replayed_code(code_hash: str, client_id: str) -> None:
    """RFC 6749 §4.1.2: a code used twice revokes what its first exchange issued (the family named by its hash).
    Only the code's own client can trigger it (another client's replay finds no family of its own)."""
    session = db()
    issued = (Token.family_id == code_hash, Token.client_id == client_id)
    if session.scalar(select(Token.id).where(*issued).limit(1)) is None:
        return  # a code never exchanged (or never issued): no write, no lock taken for a wrong guess
    session.execute(update(Token).where(*issued).values(access_revoked=True, refresh_revoked=True))
    session.commit()


class RefreshTokenGrant(_CdsGrantMixin, grants.RefreshTokenGrant):
    INCLUDE_NEW_REFRESH_TOKEN = True  # rotation: every refresh returns a new refresh token

    def authenticate_refresh_token(self, refresh_token: str):
        digest = self.gateway.box.hash(refresh_token)
        row = db().scalar(select(Token).where(Token.refresh_token_hash == digest))
        if row is None:
            return None
        token = OAuthToken(row, "refresh_token")
        if row.refresh_revoked:
            # A rotated-out refresh token came back: someone holds a copy (RFC 9700 §4.14.2). Revoke its family.
            _revoke_family(row)
            return None
        if token.is_expired() or not token_still_authorized(row):
            return None
        return token

    def authenticate_user(self, refresh_token: OAuthToken):
        return refresh_token.row.customer_id or refresh_token.row.client_id

    def revoke_old_credential(self, refresh_token: OAuthToken) -> None:
        """Nothing left to do: create_token_response claimed the old refresh token before issuing."""

    def validate_token_request(self):
        super().validate_token_request()
        old: OAuthToken = self.request.refresh_token
        self.request.grant_record = db().get(Grant, old.row.grant_id) if old.row.grant_id else None
        self.request.grant_created = False
        details = list(old.row.authorization_details)
        self.request.details = rar.ValidatedDetails(effective=details, echoed=_echo_for_consent(details))
        self.request.customer_id = old.row.customer_id
        self.request.family_id = old.row.family_id

    def issue_token(self, user, refresh_token: OAuthToken):
        scope = self.request.payload.scope or refresh_token.get_scope()
        self.request.scope = scope
        return self.generate_token(user=user, scope=scope, include_refresh_token=True)

    def create_token_response(self):
        # Rotation by a guarded UPDATE: of concurrent refreshes of one refresh token exactly one changes the row
        # (PostgreSQL re-checks the condition after the winner commits; SQLite serializes the writers). A loser is
        # a second use of the token, which is what reuse detection answers: the family is revoked.
        old: OAuthToken = self.request.refresh_token
        claimed = db().execute(update(Token).where(Token.id == old.row.id, Token.refresh_revoked.is_(False))
                               .values(refresh_revoked=True)).rowcount
        if claimed != 1:
            _revoke_family(old.row)
            raise InvalidGrantError("The refresh token was already used.")
        status, token, headers = super().create_token_response()
        return status, self.gateway.token_body(token, self.request), headers


# --------------------------------------------------------------------------------------------------------------
# Revocation (RFC 7009) and introspection (RFC 7662)
# --------------------------------------------------------------------------------------------------------------
def _query_token(token_string: str, hint: str | None) -> OAuthToken | None:
    server: GatewayServer = _current_server.get()
    digest = server.box.hash(token_string)
    order = ["refresh_token", "access_token"] if hint == "refresh_token" else ["access_token", "refresh_token"]
    for kind in order:
        column = Token.access_token_hash if kind == "access_token" else Token.refresh_token_hash
        row = db().scalar(select(Token).where(column == digest))
        if row is not None:
            return OAuthToken(row, kind)
    return None


_current_server: ContextVar[GatewayServer] = ContextVar("greenbridge_oauth_server")


class Revocation(RevocationEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH

    def query_token(self, token_string, token_type_hint):
        return _query_token(token_string, token_type_hint)

    def revoke_token(self, token: OAuthToken, request) -> None:
        """An access token alone; a refresh token with its family: every access token of every earlier rotation
        (RFC 7009 §2.1 lets the server revoke related tokens; RFC 9700 §4.14 has a family die together)."""
        token.row.access_revoked = True
        if token.kind == "refresh_token":
            token.row.refresh_revoked = True
            if token.row.family_id:
                db().execute(update(Token).where(Token.family_id == token.row.family_id)
                             .values(access_revoked=True, refresh_revoked=True))


class Introspection(IntrospectionEndpoint):
    CLIENT_AUTH_METHODS = CLIENT_AUTH

    def query_token(self, token_string, token_type_hint):
        return _query_token(token_string, token_type_hint)

    def check_permission(self, token: OAuthToken, client: OAuthClient, request) -> bool:
        # Any client of the same registration may introspect (the registration is one third party).
        owner = db().get(Client, token.row.client_id)
        return owner is not None and owner.registration_id == client.row.registration_id

    def introspect_token(self, token: OAuthToken) -> dict[str, Any]:
        row = token.row
        expires_at = row.refresh_expires_at if token.kind == "refresh_token" else row.issued_at + row.expires_in
        body: dict[str, Any] = {
            "active": True,
            "scope": row.scope,
            "client_id": row.client_id,
            "token_type": "refresh_token" if token.kind == "refresh_token" else "Bearer",
            "iat": row.issued_at,
            "iss": _current_server.get().config.issuer,
        }
        if expires_at:
            body["exp"] = expires_at
        if row.customer_id:
            body["sub"] = row.customer_id
        if row.authorization_details:
            body["authorization_details"] = _echo_for_consent(list(row.authorization_details)) \
                if row.customer_id else list(row.authorization_details)
        if row.grant_id:
            body["cds_grant_ids"] = [row.grant_id]
        return body


# --------------------------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------------------------
@dataclass
class BearerContext:
    """What a valid bearer token gives a protected API: the token, its client and grant."""

    token: Token
    client: Client
    grant: Grant | None
    scopes: list[str]


class BearerError(Exception):
    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def response(self) -> Response:
        challenge = f'Bearer error="{self.error}", error_description="{_ascii(self.description)}"'
        if self.error == "missing_token":
            challenge = "Bearer"
        body = {"error": self.error, "error_description": self.description}
        return JSONResponse(body, status_code=self.status, headers={"WWW-Authenticate": challenge})


#: The longest value of an OAuth request parameter: what comes back to the client (``state`` in the redirect,
#: RFC 6749 §4.1.2; ``scope`` in the token response) or is stored with the request stays small. RAR
#: ``authorization_details`` has its own limit (cds.authorization_details.MAX_RAW_LENGTH).
MAX_PARAMETER_LENGTH = {"state": 1024, "authorization_details": rar.MAX_RAW_LENGTH}
DEFAULT_MAX_PARAMETER_LENGTH = 2048
# RFC 6749 Appendix A: every parameter is printable ASCII (VSCHAR), response_type a list of response names, the
# redirect URI made of URI characters (RFC 3986). RAR authorization_details is JSON (UTF-8, read by cds.json_input).
_VSCHAR = re.compile(r"[\x20-\x7e]*")
_SYNTAX = {
    "response_type": (re.compile(r"[A-Za-z0-9_]+(?: [A-Za-z0-9_]+)*"), "response names (RFC 6749 section 3.1.1)"),
    "redirect_uri": (re.compile(r"[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=%]+"), "a URI (RFC 3986)"),
}


def parameter_problem(params: Mapping[str, str]) -> str | None:
    """The ``error_description`` (``invalid_request``) for the first OAuth parameter that is too long or not of
    its RFC 6749 Appendix A syntax, or None. Checked before Authlib sees a request: Authlib echoes some values in
    its error descriptions and fails on characters a description may not hold."""
    for name, value in params.items():
        if not isinstance(value, str):
            continue
        shown = _ascii(name)[:64]
        limit = MAX_PARAMETER_LENGTH.get(name, DEFAULT_MAX_PARAMETER_LENGTH)
        if len(value) > limit:
            return f"{shown} is longer than {limit} characters."
        if name == "authorization_details":
            continue
        if not _VSCHAR.fullmatch(value):
            return f"{shown} must be printable ASCII (RFC 6749 Appendix A)."
        pattern, what = _SYNTAX.get(name, (None, ""))
        if pattern is not None and value and not pattern.fullmatch(value):
            return f"{shown} must be {what}."
    return None


#: ``request_check(scope, details)``: raises :class:`cds.authorization_details.AuthorizationDetailsError` for a
#: consent request that cannot be served at all (the gateway wires the bridge's check: no utility can deliver any
#: part of it), so PAR refuses it before a customer is asked to approve it.
RequestCheck = Callable[[str, rar.ValidatedDetails], None]


class GatewayServer(StarletteServerMixin, AuthorizationServer):
    def __init__(self, config: GatewayConfig, descriptions: Mapping[str, Any], box: SecretBox, urls: Urls,
                 request_check: RequestCheck | None = None) -> None:
        super().__init__(scopes_supported=list(descriptions))
        self.config = config
        self.request_check = request_check
        self.descriptions = descriptions
        # The RAR validator works on the JSON form; rendering it once saves ~1.5 ms per token request.
        self.descriptions_json = metadata_json(descriptions)
        self.box = box
        self.urls = urls
        self.auth_limits = auth_throttle.AuthLimits(per_client_address=config.auth_failures_per_minute,
                                                    per_address=config.auth_address_failures_per_minute)

        def expires_in(client, grant_type):
            return config.access_token_seconds

        self.register_token_generator("default", BearerTokenGenerator(
            access_token_generator=lambda **_: box.new_secret(48),
            refresh_token_generator=lambda **_: box.new_secret(48),
            expires_generator=expires_in,
        ))
        self.register_client_auth_method("client_secret_basic", self._authenticate_basic)
        self.register_grant(ClientCredentialsGrant)
        self.register_grant(AuthorizationCodeGrant, [RequiredS256()])
        self.register_grant(RefreshTokenGrant)
        self.register_endpoint(Revocation)
        self.register_endpoint(Introspection)

    # ----- Authlib hooks -----
    def query_client(self, client_id: str) -> OAuthClient | None:
        row = db().get(Client, client_id) if client_id else None
        return OAuthClient(row, self.box) if row is not None else None

    def save_token(self, token: dict[str, Any], request: GatewayRequest) -> None:
        now = int(time.time())
        client: OAuthClient = request.client
        grant = request.grant_record
        details = request.details.effective if request.details is not None else []
        customer = request.user if isinstance(request.user, str) and request.user != client.client_id else None
        customer = customer or getattr(request, "customer_id", None)
        # A Core INSERT built once: nothing reads the new row back in this request (no unit of work needed).
        db().execute(_INSERT_TOKEN, dict(
            access_revoked=False,
            refresh_revoked=False,
            access_token_hash=self.box.hash(token["access_token"]),
            refresh_token_hash=self.box.hash(token["refresh_token"]) if token.get("refresh_token") else None,
            client_id=client.get_client_id(),
            credential_id=client.credential_id,
            grant_id=grant.grant_id if grant is not None else None,
            customer_id=customer,
            scope=token.get("scope", ""),
            authorization_details=details,
            issued_at=now,
            expires_in=int(token["expires_in"]),
            refresh_expires_at=now + self.config.refresh_token_seconds if token.get("refresh_token") else None,
            # a code exchange and its rotations share the code's family; other issuances start their own
            family_id=getattr(request, "family_id", None) or secrets.token_hex(16),
        ))

    # ----- CDS additions -----
    def token_body(self, token: dict[str, Any], request: GatewayRequest) -> dict[str, Any]:
        body = {k: token[k] for k in ("access_token", "refresh_token", "token_type", "expires_in", "scope")
                if k in token}
        body["token_type"] = "bearer"
        if request.details is not None and request.details.echoed:
            body["authorization_details"] = request.details.echoed
        if request.grant_created and request.grant_record is not None:
            body["cds_grant_ids"] = [request.grant_record.grant_id]
        return body

    def _authenticate_basic(self, query_client, request: GatewayRequest):
        """client_secret_basic (RFC 6749 §2.3.1), failures throttled by cds.auth_throttle: the secret is checked
        first, so a correct one always authenticates; a failure meets the (client id, address) and address limits.
        """
        session = db()
        now = int(time.time())
        address = request.remote_addr or ""
        try:
            credentials = basic_credentials(request.headers)
        except MalformedBasicAuth as error:
            self._failed(session, None, address, now)
            raise InvalidRequestError(f"The Authorization header is not client_secret_basic credentials: {error} "
                                      "(RFC 6749 section 2.3.1).") from None
        client_id, secret = credentials or (None, None)
        client = query_client(client_id) if client_id and secret else None
        if client is not None and client.check_client_secret(secret):
            auth_throttle.clear(session, client.client_id, address)
            request.credential_id = client.credential_id
            return client
        self._failed(session, client.client_id if client is not None else None, address, now)
        return None

    def _failed(self, session: Session, client_id: str | None, address: str, now: int) -> None:
        """One failed authentication: 429 while its keys are blocked (not counted again), else counted."""
        retry_after = auth_throttle.blocked_for(session, client_id, address, now)
        if retry_after:
            raise TooManyFailuresError(retry_after=retry_after)
        auth_throttle.record_failure(session, client_id, address, now, self.auth_limits)

    def authenticate_bearer(self, authorization: str | None, required_scope: str) -> BearerContext:
        """RFC 6750 §2.1 bearer check for the CDS APIs; raises BearerError (401/403)."""
        if not authorization:
            raise BearerError(401, "missing_token", "Bearer token required")
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise BearerError(401, "invalid_request", "Authorization must be 'Bearer <token>'")
        session = db()
        row = session.scalar(select(Token).where(Token.access_token_hash == self.box.hash(value.strip())))
        if row is None:
            raise BearerError(401, "invalid_token", "Unknown access token")
        token = OAuthToken(row, "access_token")
        if token.is_expired():
            raise BearerError(401, "invalid_token", "The access token has expired")
        if token.is_revoked():
            raise BearerError(401, "invalid_token", "The access token was revoked")
        scopes = row.scope.split()
        if required_scope not in scopes:
            raise BearerError(403, "insufficient_scope", f"This API needs scope {required_scope}")
        client = session.get(Client, row.client_id)
        grant = session.get(Grant, row.grant_id) if row.grant_id else None
        return BearerContext(token=row, client=client, grant=grant, scopes=scopes)

    # ----- PAR (RFC 9126) -----
    def push_authorization_request(self, request: GatewayRequest) -> dict[str, Any]:
        """Validate a pushed request exactly as /authorize would, store it, return the 201 body."""
        client = self.authenticate_client(request, CLIENT_AUTH, "pushed_authorization_request")
        form = request.form
        if "request_uri" in form:
            raise InvalidRequestError("request_uri must not be pushed (RFC 9126 section 2.1).")
        if form.get("client_id") and form["client_id"] != client.get_client_id():
            raise InvalidRequestError("client_id does not match the authenticated client.")
        for key, values in request.payload.datalist.items():
            if len(values) > 1:
                raise InvalidRequestError(f"Parameter {_ascii(key)[:64]} repeated.")
        problem = parameter_problem(form)
        if problem:
            raise InvalidRequestError(problem)
        params = {**form, "client_id": client.get_client_id()}
        probe = GatewayRequest("GET", self.urls.authorization_endpoint, {}, query=params.items())
        grant = self.get_consent_grant(probe)
        del grant
        if self.request_check is not None and probe.details is not None:
            try:
                self.request_check(probe.scope, probe.details)
            except rar.AuthorizationDetailsError as error:
                raise InvalidAuthorizationDetailsError(_ascii(error.description)) from None
        handle = self.box.new_secret(32)
        request_uri = "urn:ietf:params:oauth:request_uri:" + handle
        db().add(PushedRequest(
            handle_hash=self.box.hash(request_uri), kind="par", client_id=client.get_client_id(),
            parameters=params, expires_at=int(time.time()) + self.config.par_seconds,
        ))
        return {"request_uri": request_uri, "expires_in": self.config.par_seconds}

    def narrow_consent(self, request: GatewayRequest, scope: str, details: list[dict[str, Any]]) -> None:
        """The customer's utility provides only part of the approved request (a ``partial`` Grant, WG1-02 §8.2):
        the authorization code, and so its tokens and the token response (RFC 6749 §5.1 ``scope``, RFC 9396
        ``authorization_details``), carry what the Grant enables. The narrowed entries are absolute and within the
        request, so validating them again only renders them as the token response shows them."""
        validated = rar.validate_authorization_details(
            details, scopes=scope.split(), descriptions=self.descriptions_json,
            client_types=list(request.client.row.authorization_details_types), timezone=self.config.timezone,
            now=request.details.now or datetime.now(UTC).replace(microsecond=0), flow="authorization_code")
        request.narrowed = (scope, validated.effective)  # save_authorization_code: the request is validated again

    def take_pushed_request(self, request_uri: str, client_id: str | None) -> dict[str, str] | None:
        """One-time use: the row is deleted whatever the outcome; None when unknown, expired or not this client's."""
        session = db()
        digest = self.box.hash(request_uri)
        row = session.get(PushedRequest, digest)
        if row is None or row.kind != "par":
            return None
        session.delete(row)
        session.flush()
        if row.expires_at <= int(time.time()) or (client_id and client_id != row.client_id):
            return None
        return dict(row.parameters)

    def run(self, session: Session, fn, *args, **kwargs):
        """Run ``fn`` with this server and ``session`` bound (inside the threadpool)."""
        server_token = _current_server.set(self)
        try:
            with bind_session(session):
                return fn(*args, **kwargs)
        finally:
            _current_server.reset(server_token)
