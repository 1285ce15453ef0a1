"""Customer authorization (CDS-WG3-01 §9): what the consent form shows, approving, and Authorization Receipts.

The form follows the §9.2 section order (Requester, one Request Section per scope with Data, Duration and
Selection, Closing, Approval); the receipt (§9.4) lives at a random URL, needs no login, and carries a confirmation
number that is also recorded on the Grant's ``receipt_confirmations``.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Mapping
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.grants import create_grant
from cds.secrets import SecretBox
from cds.store.models import Client, DataObject, Grant, Receipt
from cds.timestamps import rfc3339

_DURATION_LABELS = {
    "sync_until": "Kept up to date until",
    "segment_start": "Usage from",
    "segment_end": "Usage until",
    "statement_date_start": "Bills dated from",
    "statement_date_end": "Bills dated until",
    "start_date": "Bill sections from",
    "end_date": "Bill sections until",
    "expires": "Access ends",
}
_CONFIRMATION_ALPHABET = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"  # no 0/O, 1/I: read aloud over the phone


def duration_text(field: str, value: Any, zone: ZoneInfo | None = None) -> str:
    """One Duration line in plain language (WG3-01 §9.2.3): dates as the customer reads them, in cds_timezone."""
    label = _DURATION_LABELS.get(field, field)
    if value == "infinite":
        if field in ("sync_until", "expires", "segment_end", "statement_date_end", "end_date"):
            return f"{label}: until you revoke it"
        return f"{label}: all available history"
    return f"{label}: {_readable(value, zone)}"


def _readable(value: Any, zone: ZoneInfo | None) -> str:
    if not isinstance(value, str):
        return str(value)
    try:
        if "T" not in value:
            return date.fromisoformat(value).strftime("%B %-d, %Y")
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    if zone is not None:
        moment = moment.astimezone(zone)
    return moment.strftime("%B %-d, %Y %H:%M %Z").strip()


def local_minute(moment: datetime, zone: ZoneInfo | None) -> str:
    """A moment as the customer reads it (WG3-01 §9.4 receipt date): their time zone, to the minute, with the
    zone's abbreviation and offset (``December 7, 2026, 11:22 AM PST (UTC−08:00)``)."""
    local = moment.astimezone(zone or UTC)
    offset = local.strftime("%z")
    sign = "−" if offset.startswith("-") else "+"
    return (f"{local.strftime('%B')} {local.day}, {local.year}, {local.strftime('%I:%M %p').lstrip('0')} "
            f"{local.tzname()} (UTC{sign}{offset[1:3]}:{offset[3:5]})")


def request_sections(scope: str, details: list[dict[str, Any]], descriptions: Mapping[str, Any],
                     zone: ZoneInfo | None = None) -> list[dict]:
    """One Request Section per requested scope (WG3-01 §9.2.3), in plain language."""
    sections = []
    for scope_id in scope.split():
        description = descriptions.get(scope_id)
        entry = next((d for d in details if d.get("type") in
                      getattr(description, "authorization_details_types_supported", [scope_id])), {})
        included = sorted(
            k.removeprefix("include_").replace("_", " ") for k, v in entry.items() if k.startswith("include_") and v
        )
        duration = [duration_text(k, entry[k], zone) for k in _DURATION_LABELS if k in entry]
        sections.append({
            "scope": scope_id,
            "name": getattr(description, "name", scope_id),
            "description": getattr(description, "description", ""),
            "included": included,
            "duration": duration or ["Until you revoke it"],
            "selection": "All accounts, services and meters of the customer who signs in below.",
        })
    return sections


def new_confirmation() -> str:
    return "".join(secrets.choice(_CONFIRMATION_ALPHABET) for _ in range(10))


def approve(
    session: Session,
    client: Client,
    *,
    scope: str,
    authorization_details: list[dict[str, Any]],
    customer_id: str,
    state: str | None,
    grant_id: str | None,
    descriptions: Mapping[str, Any],
    box: SecretBox,
    zone: ZoneInfo | None = None,
    now: datetime | None = None,
    eta: datetime | None = None,
    enabled_scope: str | None = None,
    enabled_authorization_details: list[dict[str, Any]] | None = None,
    omitted: list[str] | None = None,
) -> tuple[Grant, str]:
    """Create (or, for a ``cds_grant_id`` re-authorization, update) the Grant and issue a receipt.

    Returns the grant and the receipt's secret URL handle. The grant is updated immediately (WG1-02 §8.3: the
    server must not wait for the token request). With ``eta`` (the upstream hop: the data is still to be fetched
    from the custodian) the grant is ``pending`` with that ``eta``, otherwise ``active``. Either way what the
    customer approved is enabled at once: ``pending`` is "valid, still processing" and its data "MUST be served as
    it becomes available" (WG1-02 §8.2), so its tokens work from the start and read what has arrived.
    ``enabled_scope`` / ``enabled_authorization_details``: what the grant gives when its utility can deliver only
    part of the request (a ``partial`` grant, WG1-02 §8.2; docs/mapping.md §11.5); by default everything approved.
    ``omitted``: what will not be provided, in words, for the receipt.
    """
    now = now or datetime.now(UTC)
    expires = _absolute_expiry(authorization_details)
    status = "pending" if eta is not None else "active"
    if enabled_scope is None:
        enabled_scope, enabled_details = scope, list(authorization_details)
    else:
        enabled_details = list(enabled_authorization_details or [])
    if grant_id:
        grant = session.get(Grant, grant_id)
        grant.scope = scope
        grant.authorization_details = authorization_details
        grant.enabled_scope = enabled_scope
        grant.enabled_authorization_details = enabled_details
        grant.status = status
        grant.eta = eta
        grant.modified = now
        grant.expires = expires
        if state:
            grant.states = [*grant.states, state]
    else:
        grant = create_grant(session, client, scope=scope, authorization_details=authorization_details, box=box,
                             customer_id=customer_id, state=state, expires=expires, now=now, status=status)
        grant.eta = eta
        grant.enabled_scope = enabled_scope
        grant.enabled_authorization_details = enabled_details
    handle = box.new_secret(32)
    confirmation = new_confirmation()
    previous = session.scalars(select(Receipt).where(Receipt.grant_id == grant.grant_id,
                                                     Receipt.superseded_by.is_(None))).all()
    for receipt in previous:
        receipt.superseded_by = confirmation
    session.add(Receipt(
        handle_hash=box.hash(handle),
        confirmation=confirmation,
        grant_id=grant.grant_id,
        created=now,
        snapshot={
            "client_name": client.client_name,
            "client_uri": (client.extra or {}).get("client_uri"),
            "scope": scope,
            "requests": request_sections(scope, authorization_details, descriptions, zone),
            "customer_id": customer_id,
            "omitted": list(omitted or []),
            "timezone": zone.key if zone is not None else "UTC",  # the receipt's dates, in the customer's zone
        },
    ))
    grant.receipt_confirmations = [*grant.receipt_confirmations, confirmation]
    session.flush()
    return grant, handle


def _absolute_expiry(details: list[dict[str, Any]]) -> datetime | None:
    values = [d.get("expires") for d in details if isinstance(d.get("expires"), str) and d["expires"] != "infinite"]
    parsed = []
    for value in values:
        try:
            parsed.append(datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC))
        except ValueError:
            continue
    return min(parsed) if parsed else None


def receipt_view(session: Session, box: SecretBox, handle: str) -> tuple[Receipt, Grant] | None:
    receipt = session.get(Receipt, box.hash(handle))
    if receipt is None:
        return None
    return receipt, session.get(Grant, receipt.grant_id)


def receipt_zone(snapshot: Mapping[str, Any]) -> ZoneInfo:
    """The zone a receipt shows its dates in: the one recorded at approval (receipts before issue 14: UTC)."""
    try:
        return ZoneInfo(snapshot.get("timezone") or "UTC")
    except (ValueError, KeyError):  # a zone this machine no longer knows
        return ZoneInfo("UTC")


def receipt_context(receipt: Receipt, grant: Grant) -> dict[str, Any]:
    created = receipt.created if receipt.created.tzinfo else receipt.created.replace(tzinfo=UTC)
    return {
        "receipt": {"confirmation": receipt.confirmation, "created": rfc3339(created),
                    "created_local": local_minute(created, receipt_zone(receipt.snapshot))},
        "snapshot": receipt.snapshot,
        "status": grant.status,
        "superseded": receipt.superseded_by,
    }


def contact_email(session: Session, customer_id: str) -> str | None:
    """The customer's e-mail address from their stored account data (``account_contacts`` typed ``email``, the
    primary before others; the newest account first), or None. Customer data comes from their custodian's
    customer feed (ESPI ``electronicAddress``) once a fetch brought it."""
    bodies = session.scalars(select(DataObject.body).where(DataObject.kind == "accounts",
                                                           DataObject.customer_id == customer_id)
                             .order_by(DataObject.modified.desc()).limit(20))
    found: list[tuple[int, str]] = []
    for body in bodies:
        try:
            account = json.loads(body)
        except ValueError:
            continue
        for contact in account.get("account_contacts") or ():
            types = contact.get("types") or ()
            value = contact.get("value")
            if "email" in types and isinstance(value, str) and "@" in value:
                found.append((0 if "primary" in types else 1, value))
        if found:
            break
    return min(found)[1] if found else None
