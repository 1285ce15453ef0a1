"""CDS Grants (CDS-WG1-02 §8): the Grant object, its statuses, creation by the token and consent flows, and the
Grants API (list, get, PATCH).

Grants API decisions:

* ``status`` is rendered with time applied (:func:`effective_status`): a grant past ``not_after``/``expires``
  shows ``expired``, one before ``not_before`` shows ``future``; the ``statuses`` filter matches that rendering.
  ``eta`` is shown only while that status is ``pending``.
* Access: the statuses of :data:`NO_ACCESS` (§8.2) end it at once; every other one, ``pending`` included ("valid,
  still processing… Data MUST be served as it becomes available"), keeps the grant's tokens working within its
  ``enabled_*``.
* Lists are ``modified`` descending, ties by ``grant_id``; ``scopes`` matches a scope of ``scope`` or an
  ``authorization_details[].type``; ``states``/``receipt_confirmations`` match array members.
* PATCH ``status`` accepts only ``closed`` (sending the current status is a no-op). Closing clears ``enabled_*``
  and revokes every token of the grant at once; a revoked or disabled grant cannot be closed.
* PATCH ``scope``/``authorization_details``: a reduction (scope subset and :func:`is_reduction`) applies at once,
  narrows ``enabled_*`` and the scope/details of the grant's existing tokens (so refreshes stay narrowed); an
  expansion stores the requested values, sets ``needs_authorization`` and keeps ``enabled_*`` (the customer
  re-authorizes with ``cds_grant_id``). Both answer 200: all changes are synchronous, so never 202.
* Every change writes a changelog Message (related_type ``grant``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Text, and_, case, cast, literal, or_, select, update
from sqlalchemy.orm import Session

from cds import authorization_details as rar
from cds.api_errors import (
    bad_request,
    no_decimals,
    not_found,
    page_link,
    paginate,
    query_datetime,
    space_list,
)
from cds.messages import changelog
from cds.secrets import SecretBox
from cds.store.models import Client, Grant, Token
from cds.timestamps import rfc3339
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
    # A status that keeps access enables what was granted (``pending`` too: valid, its data still loading).
    enabled = status not in NO_ACCESS
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
    customer = (Grant.customer_id.is_(None) if client.customer_id is None
                else Grant.customer_id == client.customer_id)
    candidates = session.scalars(
        select(Grant).where(Grant.client_id == client.client_id, Grant.scope == scope, customer)
    ).all()
    for grant in candidates:
        if grant.authorization_details == authorization_details and has_access(grant):
            return grant, False
    # A direct-access client bound to a customer by the operator reads that customer's data through its grants.
    return create_grant(session, client, scope=scope, authorization_details=authorization_details, box=box,
                        customer_id=client.customer_id), True


# --------------------------------------------------------------------------------------------------------------
# Grants API (WG1-02 §8.5–8.7)
# --------------------------------------------------------------------------------------------------------------
#: Stored statuses that time does not override, and that end every change.
FINAL = frozenset({"closed", "revoked", "disabled"})
_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:-]+$")


def grant_view(grant: Grant, urls: Urls, now: datetime) -> dict[str, Any]:
    """The Grant object as the API shows it: :func:`grant_json` with the time-applied status, and ``eta`` only while
    that status is ``pending`` (§8.1: "estimate while pending; otherwise null")."""
    body = grant_json(grant, urls)
    body["status"] = effective_status(grant, now)
    if body["status"] != "pending":
        body["eta"] = None
    return body


def _status_expression(now: datetime):
    """:func:`effective_status` in SQL, for the ``statuses`` filter."""
    return case(
        (Grant.status.in_(sorted(FINAL)), Grant.status),
        (or_(and_(Grant.not_after.is_not(None), Grant.not_after <= now),
             and_(Grant.expires.is_not(None), Grant.expires <= now)), literal("expired")),
        (and_(Grant.not_before.is_not(None), Grant.not_before > now), literal("future")),
        else_=Grant.status,
    )


def _like_literal(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _json_member(column: Any, values: list[str]):
    """SQL that narrows to rows whose JSON text mentions one of ``values`` (exactness comes from Python)."""
    if not all(_SAFE_VALUE.match(v) for v in values):
        return None
    return or_(*(cast(column, Text).like(f"%{_like_literal(json.dumps(v))}%", escape="\\") for v in values))


def _types_of(grant: Grant) -> set[str]:
    return {e.get("type") for e in grant.authorization_details if isinstance(e, Mapping)}


def _owned(session: Session, registration_id: str, grant_id: str) -> Grant:
    grant = session.get(Grant, grant_id)
    if grant is None or grant.registration_id != registration_id:
        raise not_found("grant")
    return grant


def list_grants(
    session: Session, registration_id: str, query: Mapping[str, str], *, urls: Urls, page_size: int, now: datetime,
) -> dict[str, Any]:
    """``GET {cds_grants_api}`` (§8.5): every filter of the newest draft, ``modified`` descending."""
    statement = select(Grant).where(Grant.registration_id == registration_id)
    params: dict[str, str] = {}
    checks: list[Callable[[Grant], bool]] = []
    for name, column in (("grant_ids", Grant.grant_id), ("parents", Grant.parent), ("client_ids", Grant.client_id)):
        values = space_list(query, name)
        if values:
            statement = statement.where(column.in_(values))
            params[name] = " ".join(values)
    statuses = space_list(query, "statuses")
    if statuses:
        statement = statement.where(_status_expression(now).in_(statuses))
        params["statuses"] = " ".join(statuses)
    scopes = space_list(query, "scopes")
    if scopes:
        params["scopes"] = " ".join(scopes)
        if all(_SAFE_VALUE.match(v) for v in scopes):
            padded = literal(" ") + Grant.scope + literal(" ")
            statement = statement.where(or_(
                *(padded.like(f"% {_like_literal(v)} %", escape="\\") for v in scopes),
                _json_member(Grant.authorization_details, scopes),
            ))
        wanted = set(scopes)
        checks.append(lambda g: bool(wanted & (set(g.scope.split()) | _types_of(g))))
    for name, column in (("states", Grant.states), ("receipt_confirmations", Grant.receipt_confirmations)):
        values = space_list(query, name)
        if values:
            params[name] = " ".join(values)
            narrowing = _json_member(column, values)
            if narrowing is not None:
                statement = statement.where(narrowing)
            members = set(values)
            checks.append(lambda g, name=name, members=members: bool(members & set(getattr(g, name) or ())))
    for name, operator in (("after", "__ge__"), ("before", "__le__")):
        moment = query_datetime(query, name)
        if moment is not None:
            statement = statement.where(getattr(Grant.created, operator)(moment))
            params[name] = query[name]
    page = paginate(
        session, statement, modified_column=Grant.modified, id_column=Grant.grant_id,
        id_of=lambda g: g.grant_id, modified_of=lambda g: g.modified, cursor=query.get("cursor"),
        page_size=page_size, link=lambda cursor: page_link(urls.grants_api, params, cursor),
        keep=(lambda g: all(check(g) for check in checks)) if checks else None,
    )
    return {"grants": [grant_view(g, urls, now) for g in page.items], "next": page.next, "previous": page.previous}


def get_grant(session: Session, registration_id: str, grant_id: str, *, urls: Urls, now: datetime) -> dict[str, Any]:
    """``GET {uri}`` (§8.6): one Grant object (not wrapped in a list)."""
    return grant_view(_owned(session, registration_id, grant_id), urls, now)


def _rar_error(error: rar.AuthorizationDetailsError) -> Exception:
    return bad_request(error.description, "invalid_authorization_details")


def _owner_of_types(scopes: list[str], descriptions: Mapping[str, Any]) -> dict[str, str]:
    owner: dict[str, str] = {}
    for scope_id in scopes:
        for type_ in descriptions[scope_id].authorization_details_types_supported:
            owner.setdefault(type_, scope_id)
    return owner


def _plain_reduction(old: list[dict], new: list[dict], scopes: list[str], descriptions: Mapping[str, Any]) -> bool:
    """``new`` narrows ``old`` as it stands: one entry per scope with RAR types, only known fields."""
    owner = _owner_of_types(scopes, descriptions)
    if any(e.get("type") not in owner for e in new):
        return False
    covered = {owner[e["type"]] for e in new}
    if any(descriptions[s].authorization_details_types_supported and s not in covered for s in scopes):
        return False
    if not rar.is_reduction(old, new):
        return False
    for entry in new:
        fields = descriptions[owner[entry["type"]]].to_json()["authorization_details_fields_supported"]
        known = {f["id"] for f in fields if entry["type"] in f["for_types"]}
        if any(key != "type" and key not in known for key in entry):
            return False
    return True


def _without_unchanged_dates(
    entries: list[dict], old_by_type: Mapping[str, Mapping], owner: Mapping[str, str], descriptions: Mapping[str, Any],
) -> tuple[list[dict], dict[str, dict]]:
    """Changed entries with their unchanged date fields set to the field's ``minimum`` for validation.

    A date kept as the grant already has it was within the limits when it was resolved, but would fail them now by
    the time elapsed since; the kept values are put back after validation (returned per type).
    """
    checked: list[dict] = []
    restored: dict[str, dict] = {}
    for entry in entries:
        type_ = entry.get("type") if isinstance(entry, Mapping) else None
        before = old_by_type.get(type_)
        if before is None or type_ not in owner:
            checked.append(entry)
            continue
        entry = dict(entry)
        for fd in descriptions[owner[type_]].to_json()["authorization_details_fields_supported"]:
            key = fd["id"]
            if (fd["format"] in ("relative_or_absolute_date", "relative_or_absolute_datetime")
                    and fd.get("minimum") is not None and key in entry and entry[key] == before.get(key)):
                restored.setdefault(type_, {})[key] = entry[key]
                entry[key] = fd["minimum"]
        checked.append(entry)
    return checked, restored


def _narrowed_enabled(grant: Grant, scopes: list[str], details: list[dict],
                      descriptions: Mapping[str, Any]) -> tuple[list[str], list[dict]]:
    """What stays enabled after a reduction of a grant that was not fully enabled."""
    owner = _owner_of_types(scopes, descriptions)
    enabled_scopes = grant.enabled_scope.split()
    enabled_by_type = {e.get("type"): e for e in grant.enabled_authorization_details}
    kept: list[dict] = []
    dropped: set[str] = set()
    for entry in details:
        scope_id = owner.get(entry["type"])
        if scope_id not in enabled_scopes:
            continue
        before = enabled_by_type.get(entry["type"])
        if before is None or rar.is_reduction([before], [entry]):
            kept.append(entry)
        elif rar.is_reduction([entry], [before]):
            kept.append(before)
        else:
            dropped.add(scope_id)
    return [s for s in scopes if s in enabled_scopes and s not in dropped], kept


def _narrow_tokens(session: Session, grant: Grant) -> None:
    """Existing tokens of the grant's own client follow a reduction at once (refreshes included)."""
    enabled = set(grant.enabled_scope.split())
    by_type = {e.get("type"): e for e in grant.enabled_authorization_details}
    tokens = session.scalars(select(Token).where(Token.grant_id == grant.grant_id,
                                                 Token.client_id == grant.client_id)).all()
    for token in tokens:
        scopes = [s for s in token.scope.split() if s in enabled]
        if not scopes:
            token.access_revoked = True
            token.refresh_revoked = True
            continue
        token.scope = " ".join(scopes)
        token.authorization_details = [by_type[e["type"]] for e in token.authorization_details
                                       if isinstance(e, Mapping) and e.get("type") in by_type]


def _by_type(details: list[dict]) -> list[dict]:
    return sorted(details, key=lambda e: str(e.get("type")))


#: ``on_close(session, grant_id, now)``: what else closing a Grant must do in the same transaction. The gateway wires
#: the bridge's hook here (ending the custodian's Authorization too); cds knows nothing of custodians.
GrantClosedHook = Callable[[Session, str, datetime], Any]


def _close(session: Session, grant: Grant, now: datetime, on_close: GrantClosedHook | None) -> None:
    if on_close is not None:
        on_close(session, grant.grant_id, now)
    grant.status = "closed"
    grant.enabled_scope = ""
    grant.enabled_authorization_details = []
    grant.modified = now
    session.execute(update(Token).where(Token.grant_id == grant.grant_id)
                    .values(access_revoked=True, refresh_revoked=True))


def _snapshot(grant: Grant) -> dict[str, Any]:
    return {"status": grant.status, "scope": grant.scope,
            "authorization_details": list(grant.authorization_details), "enabled_scope": grant.enabled_scope,
            "enabled_authorization_details": list(grant.enabled_authorization_details)}


def modify_grant(
    session: Session,
    registration_id: str,
    grant_id: str,
    body: Any,
    *,
    urls: Urls,
    box: SecretBox,
    descriptions: Mapping[str, Any],
    timezone: str,
    now: datetime,
    on_close: GrantClosedHook | None = None,
) -> dict[str, Any]:
    """``PATCH {uri}`` (§8.7): close, reduce or expand; every accepted change is synchronous (200). ``on_close`` runs
    when the Grant closes (see :data:`GrantClosedHook`)."""
    grant = _owned(session, registration_id, grant_id)
    if not isinstance(body, Mapping):
        raise bad_request("the body must be a JSON object")
    rendered = effective_status(grant, now)
    before = _snapshot(grant)
    closing = False
    if "status" in body:
        if body["status"] == "closed":
            closing = grant.status != "closed"
        elif body["status"] not in (grant.status, rendered):
            raise bad_request("status can only be set to closed")
    scope_value = body.get("scope")
    details_value = body.get("authorization_details")
    if closing:
        if (scope_value is not None and scope_value != grant.scope) or (
                details_value is not None and details_value != grant.authorization_details):
            raise bad_request("closing a grant cannot be combined with scope or authorization_details changes")
        if grant.status in FINAL:
            raise bad_request(f"the grant is {grant.status}; it cannot be closed")
        _close(session, grant, now, on_close)
        _log(session, grant, before, urls=urls, box=box, now=now)
        return grant_view(grant, urls, now)
    if scope_value is None and details_value is None:
        return grant_view(grant, urls, now)
    if rendered in FINAL or rendered == "expired":
        raise bad_request(f"the grant is {rendered}; its scope can no longer change")

    old_scopes = grant.scope.split()
    if scope_value is None:
        scopes = old_scopes
    else:
        if not isinstance(scope_value, str) or not scope_value.split():
            raise bad_request("scope must be a non-empty space-separated string", "invalid_scope")
        scopes = list(dict.fromkeys(scope_value.split()))
    unknown = [s for s in scopes if s not in descriptions]
    if unknown:
        raise bad_request(f"unknown scopes: {' '.join(unknown)}", "invalid_scope")
    owner = _owner_of_types(scopes, descriptions)
    try:
        if details_value is None:
            details = [dict(e) for e in grant.authorization_details if e.get("type") in owner]
        elif not isinstance(details_value, list):
            raise bad_request("authorization_details must be an array of objects", "invalid_authorization_details")
        else:
            details = rar.parse_authorization_details(details_value)
    except rar.AuthorizationDetailsError as error:
        raise _rar_error(error) from None
    no_decimals(details, "authorization_details")

    subset = set(scopes) <= set(old_scopes)
    if subset and _plain_reduction(list(grant.authorization_details), details, scopes, descriptions):
        effective, reduction = details, True
    else:
        client = session.get(Client, grant.client_id)
        foreign = [s for s in scopes if s not in old_scopes and s not in client.scope.split()]
        if foreign:
            raise bad_request(f"the Client is not registered for {' '.join(foreign)}", "invalid_scope")
        # Entries kept unchanged from the grant are not validated again: their absolute dates were resolved when
        # the grant was made and would now fail the relative limits by the time elapsed since.
        old_by_type = {e.get("type"): e for e in grant.authorization_details}
        kept = [e for e in details if owner.get(e.get("type")) in old_scopes and old_by_type.get(e.get("type")) == e]
        kept_scopes = {owner[e["type"]] for e in kept}
        changed = [e for e in details if not any(e is k for k in kept)]
        checked, unchanged_dates = _without_unchanged_dates(changed, old_by_type, owner, descriptions)
        try:
            validated = rar.validate_authorization_details(
                checked, scopes=[s for s in scopes if s not in kept_scopes], descriptions=descriptions,
                client_types=list(client.authorization_details_types), timezone=timezone, now=now,
                flow="authorization_code" if grant.customer_id else "client_credentials",
            )
        except rar.AuthorizationDetailsError as error:
            raise _rar_error(error) from None
        for entry in validated.effective:
            entry.update(unchanged_dates.get(entry["type"], {}))
        effective = [*kept, *validated.effective]
        jwks = [json.dumps(e["jwk"], sort_keys=True, default=str) for e in effective if "jwk" in e]
        if len(set(jwks)) > 1:
            raise bad_request("every authorization_details entry must carry the same jwk",
                              "invalid_authorization_details")
        reduction = subset and rar.is_reduction(list(grant.authorization_details), effective)
    if scopes == old_scopes and _by_type(effective) == _by_type(grant.authorization_details):
        return grant_view(grant, urls, now)

    was_full = (set(grant.enabled_scope.split()) == set(old_scopes)
                and grant.enabled_authorization_details == grant.authorization_details)
    old_enabled_scopes = set(grant.enabled_scope.split())
    old_enabled_details = list(grant.enabled_authorization_details)
    grant.scope = " ".join(scopes)
    grant.authorization_details = effective
    if reduction:
        if was_full or (grant.status == "needs_authorization" and set(scopes) <= old_enabled_scopes
                        and rar.is_reduction(old_enabled_details, effective)):
            if grant.status == "needs_authorization":
                grant.status = "active"
            grant.enabled_scope = grant.scope
            grant.enabled_authorization_details = list(effective)
        else:
            enabled_scopes, enabled_details = _narrowed_enabled(grant, scopes, effective, descriptions)
            grant.enabled_scope = " ".join(enabled_scopes)
            grant.enabled_authorization_details = enabled_details
        _narrow_tokens(session, grant)
    else:
        grant.status = "needs_authorization"
    grant.modified = now
    _log(session, grant, before, urls=urls, box=box, now=now)
    return grant_view(grant, urls, now)


def _log(session: Session, grant: Grant, before: dict[str, Any], *, urls: Urls, box: SecretBox,
         now: datetime) -> None:
    after = _snapshot(grant)
    changes = [{"field": key, "previous_value": before[key], "new_value": after[key]}
               for key in after if before[key] != after[key]]
    if not changes:
        return
    changelog(
        session, grant.registration_id, related_uri=urls.grant(grant.grant_id), related_type="grant",
        name="Grant updated",
        description=f"Grant {grant.grant_id} of Client {grant.client_id} changed: "
                    f"{', '.join(c['field'] for c in changes)}.",
        changes=changes, box=box, now=now,
    )
