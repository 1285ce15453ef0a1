"""RFC 6750 §2.1 bearer tokens as the CDS-WG3-01 §10 customer-data listings check them: the token, its credential,
its client and its grant read in one query, then judged as the OAuth server judges them
(``gateway.oauth.server``: an access token dies with its own expiry or revocation, its credential's expiry, its
client's disabling and its grant's loss of access, CDS-WG1-02 §8.2).

Nothing is kept between requests: every request reads the rows again, so a revocation, a closed grant or a
disabled client takes effect at the very next request in every gateway process. One indexed query (the token's
hash is unique; the other three rows by primary key) replaces the five ORM look-ups of the general bearer check.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from cds.grants import NO_ACCESS, effective_status
from cds.store.models import Client, Credential, Grant, Token


@dataclass(frozen=True)
class BearerGrant:
    """The grant columns the listings read (what :func:`cds.grants.effective_status` and the projection need)."""

    grant_id: str
    customer_id: str | None
    data_set: str
    created: datetime
    status: str
    not_before: datetime | None
    not_after: datetime | None
    expires: datetime | None
    enabled_scope: str
    enabled_authorization_details: list[Any]


@dataclass(frozen=True)
class BearerToken:
    """An access token found by its hash, with what decides whether it still authorizes anything."""

    scope: str
    authorization_details: list[Any]
    issued_at: int
    expires_in: int
    access_revoked: bool
    grant_id: str | None
    credential_id: str | None
    credential_expires_at: int | None  # None: the credential row is gone
    client_status: str | None  # None: the client row is gone
    grant: BearerGrant | None

    def expired(self, now: datetime) -> bool:
        return self.issued_at + self.expires_in <= int(now.timestamp())

    def revoked(self, now: datetime) -> bool:
        """Revoked itself, or no longer authorized: credential expired or gone, client disabled or gone, grant
        gone, without access (time applied) or with nothing enabled (``token_still_authorized``)."""
        if self.access_revoked:
            return True
        if self.credential_id and (self.credential_expires_at is None or
                                   0 < self.credential_expires_at <= int(now.timestamp())):
            return True
        if self.client_status is None or self.client_status == "disabled":
            return True
        if self.grant_id:
            grant = self.grant
            if grant is None or effective_status(grant, now) in NO_ACCESS or not grant.enabled_scope:
                return True
        return False


_GRANT_COLUMNS = (Grant.grant_id, Grant.customer_id, Grant.data_set, Grant.created, Grant.status, Grant.not_before,
                  Grant.not_after, Grant.expires, Grant.enabled_scope, Grant.enabled_authorization_details)
#: Built once: the token by its hash, its credential, client and grant by primary key (outer joins: a missing row
#: is a revoked token, not an unknown one).
_STATEMENT = (
    select(Token.scope, Token.authorization_details, Token.issued_at, Token.expires_in, Token.access_revoked,
           Token.grant_id, Token.credential_id, Credential.expires_at, Credential.credential_id, Client.status,
           *_GRANT_COLUMNS)
    .select_from(Token)
    .outerjoin(Credential, Credential.credential_id == Token.credential_id)
    .outerjoin(Client, Client.client_id == Token.client_id)
    .outerjoin(Grant, Grant.grant_id == Token.grant_id)
    .where(Token.access_token_hash == bindparam("token_hash"))
)


def bearer_token(session: Session, token_hash: str) -> BearerToken | None:
    """The access token whose hash is ``token_hash`` (``SecretBox.hash`` of the presented value), or None."""
    row = session.connection().execute(_STATEMENT, {"token_hash": token_hash}).first()
    if row is None:
        return None
    (scope, details, issued_at, expires_in, revoked, grant_id, credential_id, credential_expires_at, credential_row,
     client_status, *grant) = row
    return BearerToken(
        scope=scope, authorization_details=details, issued_at=issued_at, expires_in=expires_in,
        access_revoked=bool(revoked), grant_id=grant_id, credential_id=credential_id,
        credential_expires_at=None if credential_row is None else (credential_expires_at or 0),
        client_status=client_status, grant=BearerGrant(*grant) if grant[0] is not None else None)
