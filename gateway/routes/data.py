"""CDS-WG3-01 customer data listings (§10): accounts, service contracts, service points, meter devices, bill
statements, bill sections, usage segments (no Aggregations or EACs: Green Button has no data for them).

Each ``GET`` at the URL of :class:`cds.urls.Urls` (``data_api(listing)``):

1. authenticates the Bearer token (RFC 6750: 401 without a valid token; 403 ``insufficient_scope`` when none of its
   scopes is a customer data scope, or when its grant does not include this listing at all);
2. checks the token's grant: it must exist, be tied to a customer, and its status (time applied,
   :func:`cds.grants.effective_status`) must not remove access (WG1-02 §8.2: future, disabled, suspended, revoked,
   closed, expired; a ``pending`` grant reads what has arrived, empty lists at first); otherwise 403
   ``{"error": "access_denied", "error_description": ...}``. A closed or expired
   grant revokes its tokens, so such a token is reported as 403 ``access_denied`` naming the grant status rather
   than 401. The ``expires`` duration field (WG3-01 §7.3) having passed is also 403 ``access_denied``;
3. projects the customer's data (of the grant's data set: what its own upstream authorizations brought, or the
   customer's own data for a grant without any; ``Grant.data_set``) through the token's effective
   ``authorization_details`` (stored on the token with
   defaults and absolute dates, :mod:`cds.projection`) and pages it (:mod:`cds.data_api`). The grant's
   :class:`~cds.projection.Access` is kept per process for as long as the details, the grant and the version of
   the customer's objects (a digest of their body hashes, read in the request's transaction) stay the same
   (:class:`_Derived`): a request then reads only the objects its listing needs (none for usage segments).

A Grant Admin token (WG1-02 §3.3.2: how clients reach server-created grants) reads with its grant's
``enabled_scope`` and ``enabled_authorization_details``.

Direct-access grants (``client_credentials``) reach the one customer the operator bound the client to when
enabling it (``greenbridge client enable CLIENT_ID --customer ID``); an unbound client's grants get 403: a dynamically
registered client must never read every customer's data.

Responses are ``CdsJSONResponse`` (exact decimals) with ``Cache-Control: no-store``.
"""

from __future__ import annotations

import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.config import GatewayConfig
from cds.api_errors import CdsApiError, query_dict
from cds.bearer_access import BearerGrant, bearer_token
from cds.data_api import CustomerObjects, list_objects
from cds.grants import NO_ACCESS, effective_status
from cds.projection import CUSTOMER_DATA_TYPES, LISTINGS, Access, expired_entries, grant_access
from cds.urls import Urls
from gateway.context import Gateway
from gateway.oauth.server import BearerError
from gateway.routes.common import ApiError, CdsJSONResponse, gateway_of, in_session

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def _get(description: Any, name: str) -> Any:
    return description.get(name) if isinstance(description, Mapping) else getattr(description, name, None)


def scope_types(descriptions: Mapping[str, Any]) -> dict[str, str]:
    """RAR type → scope type, from the published Scope Descriptions."""
    result: dict[str, str] = {}
    for description in descriptions.values():
        for rar_type in _get(description, "authorization_details_types_supported") or ():
            result.setdefault(rar_type, _get(description, "type"))
    return result


def value_formats(descriptions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """``include_usage_segment_value_types`` choice id → its ``usagesegment_format`` (WG3-01 §5.2)."""
    result: dict[str, dict[str, Any]] = {}
    for description in descriptions.values():
        for fd in _get(description, "authorization_details_fields_supported") or ():
            if _get(fd, "id") != "include_usage_segment_value_types":
                continue
            for choice in _get(fd, "choices") or ():
                value_format = _get(choice, "usagesegment_format")
                if value_format is not None:
                    result.setdefault(_get(choice, "id"), dict(value_format))
    return result


def _data_scopes(descriptions: Mapping[str, Any], scope: str) -> list[str]:
    return [s for s in scope.split() if s in descriptions and _get(descriptions[s], "type") in CUSTOMER_DATA_TYPES]


def _denied(description: str) -> ApiError:
    return ApiError(403, "access_denied", description)


def _grant_admin(descriptions: Mapping[str, Any], scopes: list[str]) -> bool:
    return len(scopes) == 1 and scopes[0] in descriptions and _get(descriptions[scopes[0]], "type") == \
        "cds_grant_admin"


def _authorize(session: Session, gateway: Gateway, header: str | None, now: datetime
               ) -> tuple[list[dict[str, Any]], BearerGrant]:
    """The effective authorization details and the grant behind the token, or BearerError (401/403) / ApiError (403
    access_denied). The token, credential, client and grant come from one query (:mod:`cds.bearer_access`) and are
    judged as the OAuth server's bearer check judges them. A Grant Admin token (WG1-02 §3.3.2) "reaches the Grant's
    enabled scope": its grant's ``enabled_scope`` and ``enabled_authorization_details`` stand in for the token's own."""
    if not header:
        raise BearerError(401, "missing_token", "Bearer token required")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        raise BearerError(401, "invalid_request", "Authorization must be 'Bearer <token>'")
    token = bearer_token(session, gateway.box.hash(value.strip()))
    if token is None:
        raise BearerError(401, "invalid_token", "Unknown access token")
    expired = token.expired(now)
    if expired or token.revoked(now):
        grant = token.grant
        if not expired and grant is not None and effective_status(grant, now) in NO_ACCESS:
            raise _denied(f"The grant of this token is {effective_status(grant, now)}: it no longer gives "
                          "access to customer data (CDS-WG1-02 §8.2).")
        raise BearerError(401, "invalid_token",
                          "The access token has expired" if expired else "The access token was revoked")
    scopes = token.scope.split()
    if not scopes:
        raise BearerError(403, "insufficient_scope", "This API needs scope customer_data")
    data_scopes = _data_scopes(gateway.descriptions, token.scope)
    grant = token.grant
    details = list(token.authorization_details or ())
    if not data_scopes and grant is not None and _grant_admin(gateway.descriptions, scopes):
        data_scopes = _data_scopes(gateway.descriptions, grant.enabled_scope)
        details = list(grant.enabled_authorization_details or ())
    if not data_scopes:
        raise BearerError(403, "insufficient_scope", "The customer data APIs need a customer data scope.")
    if grant is None:
        raise _denied("This token has no grant.")
    status = effective_status(grant, now)
    if status in NO_ACCESS:
        raise _denied(f"The grant of this token is {status}: it no longer gives access to customer data "
                      "(CDS-WG1-02 §8.2).")
    if not grant.customer_id:
        raise _denied("This grant is not tied to a customer's data.")
    return details, grant


#: Accesses kept per gateway process, least recently used out (each holds the ids a grant sees of its customer's
#: objects and their enabled fields: kilobytes for a household, a few MB for a customer with thousands of objects).
ACCESS_CACHE_SIZE = 128


class _Derived:
    """What one gateway derives per request and can keep (per process): the scope-type and value-format maps of its
    Scope Descriptions, and recent grants' :class:`~cds.projection.Access`, least recently used first out.

    An Access is a function of the effective authorization details, the grant (its id, customer, data set and
    creation time, ``granted_at``), its data set's non-segment objects and, through the entries' ``expires``, the
    time. The
    key holds all of them: the details as canonical JSON, which entries have expired by now
    (:func:`cds.projection.expired_entries`), and the objects' :meth:`~cds.data_api.CustomerObjects.version`, read
    in the request's transaction (a digest of every row's body hash and creation time), so any ingest that changes
    what the grant may see is a new key: a kept Access is never stale.
    """

    def __init__(self, descriptions: Mapping[str, Any], size: int = ACCESS_CACHE_SIZE) -> None:
        self.scope_types = scope_types(descriptions)
        self.value_formats = value_formats(descriptions)
        self._size = size
        self._accesses: OrderedDict[tuple, tuple[Access, frozenset[str]]] = OrderedDict()  # with the meter ids
        self._lock = threading.Lock()

    def access(self, details: list[dict[str, Any]], grant: BearerGrant, objects: CustomerObjects, now: datetime
               ) -> Access:
        try:
            fixed = json.dumps(details, sort_keys=True, separators=(",", ":"))
        except (TypeError, ValueError):  # not JSON data: no key, compute every time
            fixed = None
        key = (grant.grant_id, grant.customer_id, grant.data_set, grant.created, fixed, expired_entries(details, now))
        if fixed is not None:
            current = (*key, objects.version())
            with self._lock:
                found = self._accesses.get(current)
                if found is not None:
                    self._accesses.move_to_end(current)
            if found is not None:
                access, meters = found
                objects.remember_ids("meter_devices", meters)  # the same rows: the same meters
                return access
        version = objects.load_all()
        access = grant_access(details, objects, now, scope_types=self.scope_types,
                              value_formats=self.value_formats, granted_at=grant.created)
        if fixed is not None:
            with self._lock:
                self._accesses[(*key, version)] = (access, objects.ids("meter_devices"))
                while len(self._accesses) > self._size:
                    self._accesses.popitem(last=False)
        return access


_DERIVED: weakref.WeakKeyDictionary[Any, _Derived] = weakref.WeakKeyDictionary()
_DERIVED_LOCK = threading.Lock()


def _derived(gateway: Gateway) -> _Derived:
    """The gateway's :class:`_Derived` (keyed by its OAuth server, built once per gateway with its descriptions)."""
    found = _DERIVED.get(gateway.oauth)
    if found is None:
        with _DERIVED_LOCK:
            found = _DERIVED.get(gateway.oauth)
            if found is None:
                found = _DERIVED[gateway.oauth] = _Derived(gateway.descriptions)
    return found


def _endpoint(listing: str):
    async def endpoint(request: Request) -> Response:
        gateway = gateway_of(request)
        header = request.headers.get("authorization")
        params = query_dict(request.query_params.multi_items())

        def work(session: Session) -> dict[str, Any]:
            now = datetime.now(UTC)
            details, grant = _authorize(session, gateway, header, now)
            objects = CustomerObjects(session, [grant.customer_id], grant.data_set)
            access = _derived(gateway).access(details, grant, objects, now)
            if access.expired(now):
                raise _denied("The grant's access expired (its authorization details 'expires' has passed).")
            if not access.includes(listing):
                raise BearerError(403, "insufficient_scope", f"This grant does not include {listing}.")
            return list_objects(session, listing, access=access, customer_ids=[grant.customer_id], params=params,
                                urls=gateway.urls, page_size=gateway.config.page_size, objects=objects,
                                data_set=grant.data_set)

        try:
            result = await in_session(request, work, store_only=True)
        except BearerError as error:
            response = error.response()
            response.headers.update(NO_STORE)
            return response
        except ApiError as error:
            return CdsJSONResponse({"error": error.error, "error_description": error.description},
                                   status_code=error.status, headers={**NO_STORE, **error.headers})
        except CdsApiError as error:
            return CdsJSONResponse(error.body(), status_code=error.status, headers=NO_STORE)
        return CdsJSONResponse(result, headers=NO_STORE)

    return endpoint


def routes(config: GatewayConfig) -> list[Route]:
    paths = Urls("")  # the same URLs as published, without scheme and host
    return [Route(paths.data_api(listing), _endpoint(listing), methods=["GET"]) for listing in LISTINGS]
