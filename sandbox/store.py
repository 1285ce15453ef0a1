"""The sandbox's state, in memory: customers, third parties, Authorizations (= Subscriptions), codes and tokens.

Nothing persists across a restart: the sandbox is a test peer. Every Authorization id is also its Subscription id
(the GBA contract examples use one number for ``Authorization/503888`` and ``Batch/Subscription/503888``), and
ids are small sequential numbers, as OpenESPI hands them out. Tokens are 256-bit random strings (ESPI FB_13: at
least 48 bits, no PII).

Token roles follow OpenESPI's ResourceValidationFilter (espi.md §3.9):

* ``access`` (authorization_code, with a refresh token): its own subscription, ReadingType,
  LocalTimeParameters, its own Authorization, and its customer's Batch/RetailCustomer when in scope;
* ``client`` (client_credentials, e.g. ``FB=34_35``): Batch/Bulk, the third party's Authorizations, PUT/DELETE
  Authorization, ReadServiceStatus;
* ``registration`` (client_credentials with ``FB=36_40``, or the registration_access_token of the
  ApplicationInformation): the third party's own ApplicationInformation;
* ``upload`` (the custodian's admin client with ``FB=45``): Batch/RetailCustomer (GET and POST), ReadServiceStatus;
* ``data_custodian`` (the custodian's admin client otherwise): everything.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field

from espi.scope import Scope, ScopeError, parse_scope
from sandbox.config import SandboxConfig, ThirdParty
from sandbox.data import Customer

ROLES = ("access", "client", "registration", "upload", "data_custodian")
#: Authorization.status codes (espi.xsd AuthorizationStatus)
REVOKED, ACTIVE, DENIED = 0, 1, 2


def new_token() -> str:
    return secrets.token_urlsafe(32)


def is_customer_scope(scope: str) -> bool:
    """True when the scope holds a retail-customer (PII) Function Block (51-70): customerResourceURI applies."""
    try:
        parsed = parse_scope(scope)
    except ScopeError:
        return False
    return any(51 <= n <= 70 for n in parsed.function_blocks)


@dataclass
class Registration:
    """A third party as the custodian knows it: configuration plus its ApplicationInformation id and token."""

    id: int
    party: ThirdParty
    registration_access_token: str
    issued_at: int


@dataclass
class AuthorizationRecord:
    """An ESPI Authorization. For ``access`` ones also the Subscription (same id) of the customer's UsagePoints."""

    id: int
    client_id: str
    grant_type: str
    role: str
    scope: str
    created: int
    customer: Customer | None = None
    usage_points: tuple[str, ...] = ()
    status: int = ACTIVE
    authorized_duration: int = 0
    expires_at: int = 0
    updated: int = 0
    access_token: str | None = field(default=None, repr=False)
    refresh_token: str | None = field(default=None, repr=False)

    @property
    def active(self) -> bool:
        if self.status != ACTIVE:
            return False
        return not self.authorized_duration or time.time() < self.created + self.authorized_duration

    @property
    def parsed_scope(self) -> Scope | None:
        try:
            return parse_scope(self.scope)
        except ScopeError:
            return None

    @property
    def bulk_ids(self) -> tuple[str, ...]:
        parsed = self.parsed_scope
        return parsed.bulk_ids if parsed is not None else ()


@dataclass
class TokenRecord:
    token: str = field(repr=False)
    role: str
    client_id: str
    authorization_id: int | None
    expires_at: int
    revoked: bool = False

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


@dataclass
class CodeRecord:
    """An authorization code (Authlib reads ``code_challenge``/``code_challenge_method`` for PKCE)."""

    code: str = field(repr=False)
    client_id: str
    redirect_uri: str | None
    scope: str
    customer: Customer
    usage_points: tuple[str, ...]
    expires_at: int
    code_challenge: str | None = None
    code_challenge_method: str | None = None

    def get_redirect_uri(self) -> str | None:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class Store:
    """Everything the sandbox remembers. Methods are short and take the lock: routes may run in threads."""

    def __init__(self, config: SandboxConfig, customers: list[Customer]) -> None:
        self.config = config
        self.lock = threading.RLock()
        self.customers = customers
        now = int(time.time())
        self.registrations: dict[str, Registration] = {
            party.client_id: Registration(i, party, party.registration_access_token or new_token(), now)
            for i, party in enumerate(config.third_parties, start=1)
        }
        self.authorizations: dict[int, AuthorizationRecord] = {}
        self.tokens: dict[str, TokenRecord] = {}
        self.refresh_tokens: dict[str, int] = {}
        self.codes: dict[str, CodeRecord] = {}
        self._next_id = 1
        for registration in self.registrations.values():
            # The registration_access_token stored in the ApplicationInformation works as issued (no expiry).
            self.tokens[registration.registration_access_token] = TokenRecord(
                registration.registration_access_token, "registration", registration.party.client_id, None,
                expires_at=2**62)

    # ----- customers -----
    def customer_by_login(self, login: str) -> Customer | None:
        return next((c for c in self.customers if c.login == login), None)

    def customer_by_number(self, number: str | int) -> Customer | None:
        return next((c for c in self.customers if str(c.number) == str(number)), None)

    def check_password(self, login: str, password: str) -> Customer | None:
        customer = self.customer_by_login(login.strip())
        if customer is None or not secrets.compare_digest(customer.password.encode(), password.encode()):
            return None
        return customer

    def registration_by_id(self, application_id: str) -> Registration | None:
        return next((r for r in self.registrations.values() if str(r.id) == application_id), None)

    # ----- authorizations and tokens -----
    def _new_id(self) -> int:
        value = self._next_id
        self._next_id += 1
        return value

    def create_subscription(self, client_id: str, customer: Customer, scope: str,
                            usage_points: tuple[str, ...]) -> AuthorizationRecord:
        with self.lock:
            now = int(time.time())
            record = AuthorizationRecord(
                self._new_id(), client_id, "authorization_code", "access", scope, now, customer, usage_points,
                authorized_duration=self.config.authorization_seconds, updated=now)
            self.authorizations[record.id] = record
            return record

    def admin_authorization(self, client_id: str, role: str, scope: str) -> AuthorizationRecord:
        """The Authorization behind client_credentials tokens: one per client, role and scope, reused."""
        with self.lock:
            for record in self.authorizations.values():
                if (record.client_id, record.role, record.scope, record.grant_type) == (
                        client_id, role, scope, "client_credentials") and record.status == ACTIVE:
                    return record
            now = int(time.time())
            record = AuthorizationRecord(self._new_id(), client_id, "client_credentials", role, scope, now,
                                         updated=now)
            self.authorizations[record.id] = record
            return record

    def bind_tokens(self, record: AuthorizationRecord, access_token: str, expires_in: int,
                    refresh_token: str | None = None) -> None:
        """``access_token`` becomes the authorization's only valid access token (a refresh kills the previous one,
        ESPI harness OAD013); ``refresh_token`` replaces the previous one when given."""
        with self.lock:
            if record.access_token and record.access_token in self.tokens:
                self.tokens[record.access_token].revoked = True
            now = int(time.time())
            self.tokens[access_token] = TokenRecord(access_token, record.role, record.client_id, record.id,
                                                    now + expires_in)
            record.access_token = access_token
            record.expires_at = now + expires_in
            record.updated = now
            if refresh_token and refresh_token != record.refresh_token:
                if record.refresh_token:
                    self.refresh_tokens.pop(record.refresh_token, None)
                self.refresh_tokens[refresh_token] = record.id
                record.refresh_token = refresh_token

    def authorization_for_refresh(self, refresh_token: str) -> AuthorizationRecord | None:
        with self.lock:
            record = self.authorizations.get(self.refresh_tokens.get(refresh_token, -1))
            return record if record is not None and record.active else None

    def set_status(self, record: AuthorizationRecord, status: int) -> None:
        """Revoking (0) or denying (2) kills the authorization's tokens at once."""
        with self.lock:
            record.status = status
            record.updated = int(time.time())
            if status != ACTIVE:
                for token in self.tokens.values():
                    if token.authorization_id == record.id:
                        token.revoked = True
                if record.refresh_token:
                    self.refresh_tokens.pop(record.refresh_token, None)

    def lookup_token(self, token: str) -> TokenRecord | None:
        """A live token (not expired, not revoked, its authorization still active), else None."""
        with self.lock:
            record = self.tokens.get(token)
            if record is None or record.revoked or record.expired:
                return None
            if record.authorization_id is not None:
                authorization = self.authorizations.get(record.authorization_id)
                if authorization is None or not authorization.active:
                    return None
            return record

    def authorizations_of(self, client_id: str) -> list[AuthorizationRecord]:
        with self.lock:
            return [a for a in self.authorizations.values() if a.client_id == client_id]

    def subscriptions_of_customer(self, customer: Customer) -> list[AuthorizationRecord]:
        with self.lock:
            return [a for a in self.authorizations.values()
                    if a.role == "access" and a.customer is customer and a.active]

    # ----- codes -----
    def save_code(self, record: CodeRecord) -> None:
        with self.lock:
            now = time.time()
            for code in [c for c, r in self.codes.items() if r.expires_at <= now]:
                del self.codes[code]
            self.codes[record.code] = record

    def take_code(self, code: str, client_id: str) -> CodeRecord | None:
        with self.lock:
            record = self.codes.get(code)
            if record is None or record.client_id != client_id or record.expires_at <= time.time():
                return None
            return record

    def delete_code(self, code: str) -> bool:
        with self.lock:
            return self.codes.pop(code, None) is not None
