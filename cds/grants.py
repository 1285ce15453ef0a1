"""CDS Grants (CDS-WG1-02 §8): the Grant object, its statuses, and creation by the token and consent flows."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.registration import rfc3339
from cds.secrets import SecretBox
from cds.store.models import Client, Grant
from cds.urls import Urls

STATUSES = (
    "active", "future", "pending", "partial", "needs_authorization", "needs_sub_grants", "disabled", "suspended",
    "revoked", "closed", "expired", "delayed", "stopped", "errored",
)
# Statuses that remove all access (WG1-02 §8.2).
NO_ACCESS = frozenset({"future", "disabled", "suspended", "revoked", "closed", "expired"})


def grant_json(grant: Grant, urls: Urls) -> dict[str, Any]:
    return {
        "grant_id": grant.grant_id,
        "uri": urls.grant(grant.grant_id),
        "replacing": list(grant.replacing),
        "replaced_by": list(grant.replaced_by),
        "parent": grant.parent,
        "children": list(grant.children),
        "created": rfc3339(grant.created),
        "modified": rfc3339(grant.modified),
        "not_before": rfc3339(grant.not_before),
        "not_after": rfc3339(grant.not_after),
        "eta": rfc3339(grant.eta),
        "expires": rfc3339(grant.expires),
        "status": grant.status,
        "client_id": grant.client_id,
        "scope": grant.scope,
        "authorization_details": list(grant.authorization_details),
        "states": list(grant.states),
        "receipt_confirmations": list(grant.receipt_confirmations),
        "enabled_scope": grant.enabled_scope,
        "enabled_authorization_details": list(grant.enabled_authorization_details),
    }


def effective_status(grant: Grant, now: datetime | None = None) -> str:
    """The status with time applied: past ``not_after`` is ``expired``, before ``not_before`` is ``future``."""
    now = now or datetime.now(UTC)
    if grant.status in ("closed", "revoked", "disabled"):
        return grant.status
    if grant.not_after is not None and now >= grant.not_after:
        return "expired"
    if grant.expires is not None and now >= grant.expires:
        return "expired"
    if grant.not_before is not None and now < grant.not_before:
        return "future"
    return grant.status


def has_access(grant: Grant, now: datetime | None = None) -> bool:
    return effective_status(grant, now) not in NO_ACCESS and bool(grant.enabled_scope)


def create_grant(
    session: Session,
    client: Client,
    *,
    scope: str,
    authorization_details: list[dict[str, Any]],
    box: SecretBox,
    status: str = "active",
    customer_id: str | None = None,
    state: str | None = None,
    expires: datetime | None = None,
    now: datetime | None = None,
) -> Grant:
    now = now or datetime.now(UTC)
    enabled = status in ("active", "partial")
    grant = Grant(
        grant_id=box.new_id(),
        client_id=client.client_id,
        registration_id=client.registration_id,
        customer_id=customer_id,
        created=now,
        modified=now,
        status=status,
        scope=scope,
        authorization_details=authorization_details,
        enabled_scope=scope if enabled else "",
        enabled_authorization_details=authorization_details if enabled else [],
        states=[state] if state else [],
        receipt_confirmations=[],
        replacing=[],
        replaced_by=[],
        parent=None,
        children=[],
        expires=expires,
    )
    session.add(grant)
    return grant


def client_credentials_grant(
    session: Session, client: Client, *, scope: str, authorization_details: list[dict[str, Any]], box: SecretBox,
) -> tuple[Grant, bool]:
    """The Grant behind a client_credentials token: reused while an active one with the same scope and details
    exists (so repeated admin tokens do not pile up grants), else created. Returns (grant, created)."""
    candidates = session.scalars(
        select(Grant).where(Grant.client_id == client.client_id, Grant.scope == scope, Grant.customer_id.is_(None))
    ).all()
    for grant in candidates:
        if grant.authorization_details == authorization_details and has_access(grant):
            return grant, False
    return create_grant(session, client, scope=scope, authorization_details=authorization_details, box=box), True
