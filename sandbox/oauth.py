"""The sandbox's OAuth 2.0 authorization server (RFC 6749) as Connect My Data custodians run it (espi.md §6.4).

Authlib does the RFC work (request validation, client authentication, PKCE, error responses); this module adds
what ESPI adds:

* clients authenticate with ``client_secret_basic`` or ``client_secret_post`` (real custodians accept both);
  token parameters may also come in the query string of the POST, as the legacy OpenESPI third party sends them;
* PKCE is optional, as at real custodians: checked when the third party sent a ``code_challenge``;
* the scope is an ESPI scope string that must be covered by one the third party was offered
  (ApplicationInformation.scope); without one the customer picks one on the authorize page (FB_31);
* the token response carries ``resourceURI``, ``authorizationURI`` and, when retail-customer Function Blocks are
  in scope, ``customerResourceURI`` (GBA ``token-response-subscription.json``); client_credentials answers have no
  refresh token (harness OAD015); a refresh kills the previous access token (OAD013) and, unless
  ``rotate_refresh_tokens``, keeps (and returns) the same refresh token, as OpenESPI does.
"""

from __future__ import annotations

import hmac
import time
from dataclasses import dataclass
from typing import Any

from authlib.oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import ClientMixin, grants
from authlib.oauth2.rfc6749.errors import InvalidGrantError, InvalidScopeError
from authlib.oauth2.rfc7636 import CodeChallenge

from espi.function_blocks import function_block
from espi.scope import LEGACY_SCOPES, Scope, ScopeError, format_scope, parse_scope
from espi.starlette_oauth import GatewayRequest, StarletteServerMixin
from sandbox.config import SandboxConfig, ThirdParty
from sandbox.data import Customer
from sandbox.store import AuthorizationRecord, CodeRecord, Store, is_customer_scope, new_token

AUTH_METHODS = ["client_secret_basic", "client_secret_post"]
#: client_credentials scopes of a third party that mean a registration_access_token (espi.md §5.1, §6.3)
REGISTRATION_BLOCKS = {36, 40}
CLIENT_BLOCKS = {34, 35}
DEFAULT_CLIENT_SCOPE = "FB=34_35"
DEFAULT_REGISTRATION_SCOPE = "FB=36_40"
UPLOAD_SCOPE = "FB=45"
DATA_CUSTODIAN_SCOPE = "FB=3_19_32_33_34_35_36_37_38_41_44_45"


class SandboxClient(ClientMixin):
    """A third party (code flow, refresh, client credentials) or the custodian's admin client (client credentials)."""

    def __init__(self, client_id: str, secret: str, party: ThirdParty | None) -> None:
        self.client_id = client_id
        self._secret = secret
        self.party = party

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        return self.party.redirect_uris[0] if self.party and self.party.redirect_uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        return scope or ""

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return self.party is not None and redirect_uri in self.party.redirect_uris

    def check_client_secret(self, client_secret: str) -> bool:
        return hmac.compare_digest(client_secret.encode(), self._secret.encode())

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in AUTH_METHODS

    def check_response_type(self, response_type: str) -> bool:
        return self.party is not None and response_type == "code"

    def check_grant_type(self, grant_type: str) -> bool:
        if self.party is None:
            return grant_type == "client_credentials"
        return grant_type in ("authorization_code", "refresh_token", "client_credentials")


@dataclass
class SandboxUser:
    """What the customer approved on the authorize page."""

    customer: Customer
    scope: str
    usage_points: tuple[str, ...]


def offered_scope_for(party: ThirdParty, requested: str) -> str:
    """The canonical form of ``requested`` when one of the offered scopes covers it; InvalidScopeError otherwise."""
    try:
        wanted = parse_scope(requested)
    except ScopeError as error:
        raise InvalidScopeError(f"Invalid scope: {error}") from None
    if wanted.is_empty or wanted.is_legacy:
        raise InvalidScopeError("The scope must name Function Blocks (FB=...).")
    for offered in party.scopes:
        if parse_scope(offered).covers(wanted):
            return format_scope(wanted)
    raise InvalidScopeError("The scope is not covered by any scope offered to this third party.")


# ----------------------------------------------------------------------------------------------------------------
# Grants
# ----------------------------------------------------------------------------------------------------------------
class _Mixin:
    TOKEN_ENDPOINT_AUTH_METHODS = AUTH_METHODS

    @property
    def sandbox(self) -> SandboxOAuth:
        return self.server  # type: ignore[attr-defined]


class AuthorizationCodeGrant(_Mixin, grants.AuthorizationCodeGrant):
    AUTHORIZATION_CODE_LENGTH = 43

    def validate_requested_scope(self):
        scope = self.request.payload.scope
        if scope:
            self.request.espi_scope = offered_scope_for(self.request.client.party, scope)

    def save_authorization_code(self, code: str, request: GatewayRequest) -> None:
        user: SandboxUser = request.user
        data = request.payload.data
        self.sandbox.store.save_code(CodeRecord(
            code, request.client.get_client_id(), request.payload.redirect_uri, user.scope, user.customer,
            user.usage_points, expires_at=int(time.time()) + self.sandbox.config.authorization_code_seconds,
            code_challenge=data.get("code_challenge"), code_challenge_method=data.get("code_challenge_method")))

    def query_authorization_code(self, code: str, client: SandboxClient) -> CodeRecord | None:
        return self.sandbox.store.take_code(code, client.get_client_id())

    def delete_authorization_code(self, authorization_code: CodeRecord) -> None:
        self.sandbox.store.delete_code(authorization_code.code)

    def authenticate_user(self, authorization_code: CodeRecord):
        return authorization_code.customer

    def create_token_response(self):
        record: CodeRecord = self.request.authorization_code
        if not self.sandbox.store.delete_code(record.code):  # consumed first: a second exchange fails
            raise InvalidGrantError("Invalid 'code' in request.")
        self.request.user = record.customer
        authorization = self.sandbox.store.create_subscription(
            self.request.client.get_client_id(), record.customer, record.scope, record.usage_points)
        token = self.generate_token(user=record.customer, scope=record.scope, include_refresh_token=True)
        self.sandbox.store.bind_tokens(authorization, token["access_token"], token["expires_in"],
                                       token["refresh_token"])
        return 200, self.sandbox.token_body(token, authorization), self.TOKEN_RESPONSE_HEADER


class _RefreshRecord:
    """Authlib's view of a refresh token: the authorization it belongs to."""

    def __init__(self, authorization: AuthorizationRecord, value: str) -> None:
        self.authorization = authorization
        self.value = value

    def check_client(self, client: SandboxClient) -> bool:
        return self.authorization.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.authorization.scope


class RefreshTokenGrant(_Mixin, grants.RefreshTokenGrant):
    def authenticate_refresh_token(self, refresh_token: str):
        authorization = self.sandbox.store.authorization_for_refresh(refresh_token)
        return _RefreshRecord(authorization, refresh_token) if authorization is not None else None

    def authenticate_user(self, refresh_token: _RefreshRecord):
        return refresh_token.authorization.customer or refresh_token.authorization.client_id

    def revoke_old_credential(self, refresh_token: _RefreshRecord) -> None:
        return None  # bind_tokens replaces the refresh token when a new one was issued

    def create_token_response(self):
        old: _RefreshRecord = self.request.refresh_token
        authorization = old.authorization
        rotate = self.sandbox.config.rotate_refresh_tokens
        token = self.generate_token(user=authorization.customer, scope=authorization.scope,
                                    include_refresh_token=rotate)
        token.setdefault("refresh_token", old.value)
        self.sandbox.store.bind_tokens(authorization, token["access_token"], token["expires_in"],
                                       token["refresh_token"])
        return 200, self.sandbox.token_body(token, authorization), self.TOKEN_RESPONSE_HEADER


class ClientCredentialsGrant(_Mixin, grants.ClientCredentialsGrant):
    def validate_requested_scope(self):
        client: SandboxClient = self.request.client
        role, scope = self.sandbox.role_for(client, self.request.payload.scope)
        self.request.espi_role = role
        self.request.espi_scope = scope

    def create_token_response(self):
        client: SandboxClient = self.request.client
        authorization = self.sandbox.store.admin_authorization(client.get_client_id(), self.request.espi_role,
                                                               self.request.espi_scope)
        token = self.generate_token(scope=self.request.espi_scope, include_refresh_token=False)
        self.sandbox.store.bind_tokens(authorization, token["access_token"], token["expires_in"])
        return 200, self.sandbox.token_body(token, authorization), self.TOKEN_RESPONSE_HEADER


# ----------------------------------------------------------------------------------------------------------------
# The server
# ----------------------------------------------------------------------------------------------------------------
class SandboxOAuth(StarletteServerMixin, AuthorizationServer):
    def __init__(self, config: SandboxConfig, store: Store) -> None:
        super().__init__()
        self.config = config
        self.store = store
        self.register_token_generator("default", self._generate_token)
        self.register_grant(AuthorizationCodeGrant, [CodeChallenge(required=False)])
        self.register_grant(RefreshTokenGrant)
        self.register_grant(ClientCredentialsGrant)

    def _generate_token(self, grant_type, client, user=None, scope=None, expires_in=None,
                        include_refresh_token=True) -> dict[str, Any]:
        token = {"access_token": new_token(), "token_type": "Bearer",
                 "expires_in": int(expires_in or self.config.access_token_seconds), "scope": scope or ""}
        if include_refresh_token:
            token["refresh_token"] = new_token()
        return token

    # ----- Authlib hooks -----
    def query_client(self, client_id: str) -> SandboxClient | None:
        if not client_id:
            return None
        if client_id == self.config.admin_client_id:
            return SandboxClient(client_id, self.config.admin_client_secret, None)
        registration = self.store.registrations.get(client_id)
        if registration is None:
            return None
        return SandboxClient(client_id, registration.party.client_secret, registration.party)

    def save_token(self, token, request) -> None:
        return None  # the grants bind tokens to their Authorization themselves

    def validate_requested_scope(self, scope) -> None:
        return None  # ESPI scope strings are checked by the grants

    # ----- ESPI -----
    def role_for(self, client: SandboxClient, scope: str | None) -> tuple[str, str]:
        """The token role and scope of a client_credentials request (InvalidScopeError when it means nothing)."""
        text = (scope or "").strip()
        if client.party is None:  # the custodian's own admin client
            if not text:
                return "data_custodian", DATA_CUSTODIAN_SCOPE
            parsed = _parse(text)
            if parsed.legacy_name == "Upload_Admin_Access" or parsed.function_blocks == (45,):
                return "upload", format_scope(parsed)
            if parsed.legacy_name in (None, "DataCustodian_Admin_Access", "Batch_Admin_Access"):
                return "data_custodian", format_scope(parsed)
            raise InvalidScopeError(f"Scope {text} is not an administrative scope of this data custodian.")
        if not text:
            return "client", DEFAULT_CLIENT_SCOPE
        parsed = _parse(text)
        if parsed.legacy_name == "ThirdParty_Registration_Access" or (
                set(parsed.function_blocks) & REGISTRATION_BLOCKS):
            return "registration", format_scope(parsed)
        if parsed.legacy_name == "ThirdParty_Admin_Access" or set(parsed.function_blocks) & CLIENT_BLOCKS \
                or parsed.bulk_ids:
            return "client", format_scope(parsed)
        raise InvalidScopeError("client_credentials scopes are FB=34_35 (bulk, Authorization), FB=36_40 "
                                "(registration) or a bulk scope with BR=; customer data needs the code flow.")

    def token_body(self, token: dict[str, Any], authorization: AuthorizationRecord) -> dict[str, Any]:
        """The ESPI token response: RFC 6749 fields plus resourceURI, authorizationURI (customerResourceURI)."""
        body = {k: token[k] for k in ("access_token", "token_type", "expires_in", "refresh_token") if k in token}
        body["scope"] = authorization.scope
        body.update(self.uris(authorization))
        return body

    def uris(self, authorization: AuthorizationRecord) -> dict[str, str]:
        """resourceURI, authorizationURI and customerResourceURI (customer data in scope and available, or always
        for customer grants with ``customer_resource_uri`` "always")."""
        resource = self.config.resource_endpoint
        if authorization.role == "access":
            resource_uri = f"{resource}/Batch/Subscription/{authorization.id}"
        elif authorization.role == "registration":
            registration = self.store.registrations[authorization.client_id]
            resource_uri = f"{resource}/ApplicationInformation/{registration.id}"
        elif authorization.role == "client" and authorization.bulk_ids:
            resource_uri = f"{resource}/Batch/Bulk/{authorization.bulk_ids[0]}"
        elif authorization.role == "upload":
            resource_uri = f"{resource}/Batch/RetailCustomer"
        else:
            resource_uri = f"{resource}/*"  # espi.md §6.3: the client_access_token's resourceURI
        uris = {"resourceURI": resource_uri, "authorizationURI": f"{resource}/Authorization/{authorization.id}"}
        customer = authorization.customer
        named = self.config.customer_resource_uri == "always" or (
            customer is not None and customer.customer_data is not None and is_customer_scope(authorization.scope))
        if authorization.role == "access" and customer is not None and named:
            uris["customerResourceURI"] = f"{resource}/Batch/RetailCustomer/{customer.number}"
        return uris


def _parse(text: str) -> Scope:
    try:
        return parse_scope(text)
    except ScopeError as error:
        raise InvalidScopeError(f"Invalid scope: {error}") from None


# ----------------------------------------------------------------------------------------------------------------
# Plain language for the authorize page
# ----------------------------------------------------------------------------------------------------------------
def _duration(value: int | str) -> str:
    if isinstance(value, str):
        return {"billingPeriod": "billing period"}.get(value, value)
    for seconds, unit in ((86400, "day"), (3600, "hour"), (60, "minute")):
        if value % seconds == 0:
            n = value // seconds
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{value} seconds"


def describe_scope(text: str) -> dict[str, Any]:
    """A scope string in words: Function Block names, then what the value terms ask for."""
    try:
        scope = parse_scope(text)
    except ScopeError as error:
        return {"blocks": [], "terms": [f"unreadable scope: {error}"], "customer_data": False}
    blocks = []
    for number in scope.function_blocks:
        block = function_block(number)
        blocks.append(f"FB {number}: {block.name}" if block else f"FB {number}")
    terms = []
    if scope.interval_durations:
        terms.append("Readings every " + ", ".join(_duration(v) for v in scope.interval_durations))
    if scope.block_durations:
        terms.append("Delivered in " + ", ".join(_duration(v) for v in scope.block_durations) + " blocks")
    if scope.history_length is not None:
        unit = "months" if scope.history_length < 1000 else "seconds"
        terms.append(f"History: {scope.history_length} {unit}")
    if scope.subscription_frequency is not None:
        terms.append(f"Updates: {_duration(scope.subscription_frequency)}")
    if scope.account_collection is not None:
        terms.append(f"Up to {scope.account_collection} accounts")
    for bulk in scope.bulk_ids:
        terms.append(f"Also delivered in the third party's bulk set {bulk}")
    if scope.legacy_name in LEGACY_SCOPES:
        terms.append(f"Administrative access ({scope.legacy_name})")
    customer = any(51 <= n <= 70 for n in scope.function_blocks)
    if customer:
        terms.append("Includes your customer information: name, addresses, accounts and service locations")
    return {"blocks": blocks, "terms": terms, "customer_data": customer}
