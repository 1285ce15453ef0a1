"""Discovery documents: CDS Server Metadata, the Coverage Listing and the OAuth Authorization Server Metadata.

Spec: CDS-WG1-01 §3 (Metadata object, capabilities), §4 (Coverage Listing and Coverage Entry, the ``ids`` filter,
newest first) and CDS-WG1-02 §3.1 (the ``oauth`` capability and ``oauth_metadata``), §3.2 (the RFC 8414 object as
CDS profiles it), plus the CDS-WG3-01 §5 fields: ``cds_customerdata_version``, the data-API URLs of the seven
listings this gateway serves and ``cds_usagesegments_additional_value_types``. No ``cds_aggregations_api`` or
``cds_eacs_api``: Green Button data has no aggregations or EACs, and no scope offers them.

Plain functions over plain data: they read the configuration, the :class:`cds.urls.Urls` and the scope
descriptions they are given and return JSON-ready dicts. No HTTP, no database, no clock.

Coverage pagination is keyset based. Entries are ordered by ``(updated descending, id ascending)``; the ``cursor``
query parameter is an opaque base64url token naming one position in that order and a direction ("the entries after
this one" for ``next``, "the entries before this one" for ``previous``), so a page never repeats or skips an entry
even if entries change between requests. A cursor that does not decode raises :class:`InvalidCursor` (HTTP 400).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import quote, urlencode

import msgspec

from cds.json_input import parse_json
from cds.scopes import metadata_json, oauth_metadata_unions, registration_fields
from cds.timestamps import rfc3339
from cds.urls import Urls

__all__ = [
    "ADDITIONAL_VALUE_TYPES",
    "CDS_CUSTOMERDATA_VERSION",
    "CDS_METADATA_VERSION",
    "CDS_OAUTH_VERSION",
    "DATA_API_FIELDS",
    "InvalidCursor",
    "additional_value_types",
    "canonical_json",
    "client_oauth_metadata_url",
    "client_scope_descriptions",
    "coverage_entry",
    "coverage_listing",
    "etag",
    "oauth_metadata",
    "server_capabilities",
    "server_metadata",
]

CDS_METADATA_VERSION = "v1"  # WG1-01 §3.2
CDS_OAUTH_VERSION = "v1"  # WG1-02 §3.2
CDS_CUSTOMERDATA_VERSION = "v1"  # WG3-01 §5
BASE_CAPABILITIES = ("coverage", "oauth")  # WG1-01 §3.4 + WG1-02 §3.1
CLIENT_AUTH_METHODS = ["client_secret_basic"]  # WG1-02 §3.4: the only method any CDS scope of this server uses

#: WG3-01 §5 metadata field → listing name (cds.urls.Urls.data_api); the bill fields are singular in the spec.
DATA_API_FIELDS = {
    "cds_accounts_api": "accounts",
    "cds_servicecontracts_api": "service_contracts",
    "cds_servicepoints_api": "service_points",
    "cds_meterdevices_api": "meter_devices",
    "cds_billstatement_api": "bill_statements",
    "cds_billsection_api": "bill_sections",
    "cds_usagesegments_api": "usage_segments",
}

#: The server-defined usage value types the ESPI translation can emit (docs/mapping.md §4.4, §4.10), described as
#: WG3-01 §10.8.6 ValueTypeDescriptions (``type``, ``name``, ``description``, ``documentation``): type → (name,
#: description).
ADDITIONAL_VALUE_TYPES: Mapping[str, tuple[str, str]] = {
    "greenbridge_temperature": (
        "Temperature", "A temperature series of the Green Button feed (ESPI kind 46), in degrees Celsius "
        "(units \"C\"); value object {\"v\": decimal}."),
    "greenbridge_reactive_energy": (
        "Reactive energy", "Reactive energy (ESPI VArh), in kvarh, with the direction when the feed states one; value "
        "object {\"v\": decimal}, not sign-normalized."),
    "greenbridge_reactive_power": (
        "Reactive power", "Reactive power (ESPI VAr), in kvar, with the direction when the feed states one; value "
        "object {\"v\": decimal}, not sign-normalized."),
    "greenbridge_natural_gas_energy": (
        "Natural gas energy", "Natural gas metered as energy in joules or watt-hours (greenbridge_units), which has no "
        "exact conversion to the CDS gas units; value object {\"v\": decimal}."),
    "greenbridge_espi_reading": (
        "Other Green Button reading", "A Green Button series CDS has no type for (voltage, current, power factor, "
        "codes, an unknown unit …), scaled by its power-of-ten multiplier, with the raw ESPI unit code in "
        "greenbridge_uom; value object {\"v\": decimal}."),
    "greenbridge_cost_without_currency": (
        "Cost without a known currency", "Interval costs of a Green Button series whose currency the feed does not "
        "state; value object {\"v\": decimal} in that unknown currency."),
    "greenbridge_power_quality": (
        "Electric power quality summary", "A Green Button ElectricPowerQualitySummary (Function Block 17) over its "
        "summary interval: one value object holding the counters present, as integers."),
}


class _Server(Protocol):
    name: str
    description: str
    website: str
    documentation: str
    support: str
    created: datetime
    updated: datetime
    op_policy_uri: str
    op_tos_uri: str


class _Config(Protocol):
    """The part of ``bridge.config.GatewayConfig`` read here (cds imports nothing of bridge)."""

    server: _Server
    coverage: Sequence[Mapping[str, Any]]
    timezone: str


class InvalidCursor(ValueError):
    """A coverage ``cursor`` that this server did not issue (answered as HTTP 400 ``invalid_request``)."""


# --------------------------------------------------------------------------------------------------------------
# CDS-WG1-01 Server Metadata (§3)
# --------------------------------------------------------------------------------------------------------------
def server_capabilities(entries: Iterable[Mapping[str, Any]]) -> list[str]:
    """``coverage`` and ``oauth`` plus the union of every coverage entry's ``capabilities`` (WG1-01 §3.2), sorted."""
    found = set(BASE_CAPABILITIES)
    for entry in entries:
        found.update(entry.get("capabilities") or ())
    return sorted(found)


def server_metadata(config: _Config, urls: Urls, *, metadata_url: str | None = None,
                    oauth_metadata_url: str | None = None) -> dict[str, Any]:
    """The WG1-01 §3.2 Metadata object with the WG1-02 §3.1 ``oauth_metadata`` extension.

    ``metadata_url`` (the object's own canonical URL, default the well-known URL) and ``oauth_metadata_url``
    (default the public RFC 8414 document) differ only for the client-specific metadata (WG1-02 §5.2).
    """
    server = config.server
    return {
        "cds_metadata_version": CDS_METADATA_VERSION,
        "cds_metadata_url": metadata_url or urls.server_metadata,
        "created": rfc3339(server.created),
        "updated": rfc3339(server.updated),
        "name": server.name,
        "description": server.description,
        "website": server.website,
        "documentation": server.documentation,
        "support": server.support,
        "capabilities": server_capabilities(config.coverage),
        "coverage": urls.coverage,
        "oauth_metadata": oauth_metadata_url or urls.oauth_metadata,
    }


# --------------------------------------------------------------------------------------------------------------
# CDS-WG1-01 Coverage (§4)
# --------------------------------------------------------------------------------------------------------------
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_OPTIONAL_HEAD = ("description",)
_OPTIONAL_TAIL = ("map_resource", "map_content_type", "geojson_resource")


def coverage_entry(entry: Mapping[str, Any]) -> dict[str, Any]:
    """One Coverage Entry (WG1-01 §4.3) with exactly the spec's fields: optional ones only when configured."""
    body: dict[str, Any] = {
        "id": entry["id"],
        "created": rfc3339(entry["created"]),
        "updated": rfc3339(entry["updated"]),
        "entity_name": entry["entity_name"],
        "entity_abbreviation": entry.get("entity_abbreviation"),
        "country": entry["country"],
        "name": entry["name"],
    }
    body.update({key: entry[key] for key in _OPTIONAL_HEAD if entry.get(key) is not None})
    body.update({
        "type": entry["type"],
        "role": entry["role"],
        "infrastructure_types": list(entry.get("infrastructure_types") or ()),
        "commodity_types": list(entry.get("commodity_types") or ()),
        "capabilities": list(entry.get("capabilities") or ()),
    })
    body.update({key: entry[key] for key in _OPTIONAL_TAIL if entry.get(key) is not None})
    return body


def _position(entry: Mapping[str, Any]) -> tuple[int, str]:
    """Sort key: newest ``updated`` first (negated microseconds since the epoch), then ``id``."""
    updated: datetime = entry["updated"]
    return (-((updated.astimezone(UTC) - _EPOCH) // _MICROSECOND), entry["id"])


def _encode_cursor(direction: str, position: tuple[int, str] | None) -> str:
    payload = [direction] if position is None else [direction, position[0], position[1]]
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _decode_cursor(cursor: str) -> tuple[str, tuple[int, str] | None]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = parse_json(raw)
    except (binascii.Error, ValueError):
        raise InvalidCursor("The cursor is not one this server issued") from None
    if isinstance(payload, list) and payload == ["b"]:
        return "b", None  # the last page
    if (not isinstance(payload, list) or len(payload) != 3 or payload[0] not in ("a", "b")
            or not isinstance(payload[1], int) or isinstance(payload[1], bool) or not isinstance(payload[2], str)):
        raise InvalidCursor("The cursor is not one this server issued")
    return payload[0], (payload[1], payload[2])


def _listing_url(urls: Urls, ids: Sequence[str] | None, cursor: str | None) -> str:
    params: list[tuple[str, str]] = []
    if ids is not None:
        params.append(("ids", " ".join(ids)))
    if cursor is not None:
        params.append(("cursor", cursor))
    return urls.coverage + ("?" + urlencode(params, quote_via=quote) if params else "")


def coverage_listing(entries: Iterable[Mapping[str, Any]], *, ids: Sequence[str] | None = None,
                     cursor: str | None = None, page_size: int, urls: Urls) -> dict[str, Any]:
    """The Coverage Listing (WG1-01 §4.2): ``{"coverage_entries", "next", "previous"}``, newest ``updated`` first.

    ``ids`` (None: no filter) keeps only entries with those ids; further filters would intersect with it. At most
    ``page_size`` entries per page; ``next``/``previous`` are full URLs carrying the filter and a cursor (see the
    module docstring), or null. ``InvalidCursor`` for a cursor that does not decode.
    """
    if page_size < 1:
        raise ValueError("page_size must be positive")
    wanted = set(ids) if ids is not None else None
    ordered = sorted((e for e in entries if wanted is None or e["id"] in wanted), key=_position)
    positions = [_position(e) for e in ordered]
    total = len(ordered)
    direction, anchor = _decode_cursor(cursor) if cursor else ("a", None)
    if direction == "a":
        start = bisect_right(positions, anchor) if anchor is not None else 0
        end = min(start + page_size, total)
    else:
        end = bisect_left(positions, anchor) if anchor is not None else total
        start = max(0, end - page_size)
    page = ordered[start:end]
    next_url = previous_url = None
    if page:
        if end < total:
            next_url = _listing_url(urls, ids, _encode_cursor("a", positions[end - 1]))
        if start > 0:
            previous_url = _listing_url(urls, ids, _encode_cursor("b", positions[start]))
    elif total:  # a cursor past either end: point back at the nearest page that has entries
        if direction == "a":
            previous_url = _listing_url(urls, ids, _encode_cursor("b", None))
        else:
            next_url = _listing_url(urls, ids, None)
    return {"coverage_entries": [coverage_entry(e) for e in page], "next": next_url, "previous": previous_url}


# --------------------------------------------------------------------------------------------------------------
# CDS-WG1-02 §3.2 Authorization Server Metadata (RFC 8414) + CDS-WG3-01 §5
# --------------------------------------------------------------------------------------------------------------
def client_oauth_metadata_url(urls: Urls, client_id: str) -> str:
    """The client-specific RFC 8414 document linked from the client-specific CDS metadata."""
    return urls.client(client_id) + "/oauth-metadata"


def client_scope_descriptions(descriptions: Mapping[str, Any], scopes: Iterable[str]) -> dict[str, Any]:
    """The descriptions of ``scopes`` (a client's scopes) plus the Grant Admin scopes they name in
    ``grant_admin_scope`` (WG1-02 §3.4: that scope MUST exist in the metadata). Unknown scope ids are skipped;
    the result keeps the order of ``descriptions``."""
    wanted = {scope for scope in scopes if scope in descriptions}
    for scope in list(wanted):
        admin = metadata_json({scope: descriptions[scope]})[scope].get("grant_admin_scope")
        if admin in descriptions:
            wanted.add(admin)
    return {scope_id: desc for scope_id, desc in descriptions.items() if scope_id in wanted}


def additional_value_types(urls: Urls) -> dict[str, dict[str, str]]:
    """``cds_usagesegments_additional_value_types`` (WG3-01 §5, §10.8.6): every server-defined value type."""
    return {value_type: {"type": value_type, "name": name, "description": description,
                         "documentation": f"{urls.documentation}/usage-segments#{value_type}"}
            for value_type, (name, description) in ADDITIONAL_VALUE_TYPES.items()}


def oauth_metadata(config: _Config, urls: Urls, descriptions: Mapping[str, Any], *,
                   client_scopes: Iterable[str] | None = None) -> dict[str, Any]:
    """The Authorization Server Metadata object (RFC 8414 as WG1-02 §3.2 profiles it, with WG3-01 §5).

    With ``client_scopes`` it is the client-specific document (WG1-02 §5.2 ``cds_server_metadata``): the
    scope-valued fields (``scopes_supported``, ``authorization_details_types_supported``,
    ``cds_scope_descriptions``) cover only those scopes (see :func:`client_scope_descriptions`), and the optional
    ``registration_endpoint`` is left out. The flow-valued fields (response and grant types, auth methods, PKCE)
    stay server-wide: they remain "at least the union" of the listed scopes' values and keep the RFC 8414
    ``response_types_supported`` non-empty.

    ``cds_registration_fields`` covers the ids the shown scopes reference (WG1-02 §3.2). The WG3-01 §5 data-API URLs
    are the same in both documents: every listing is served to whatever grant covers it, and a client reads them
    from its own document (WG3-01 §5).
    """
    server = config.server
    unions = oauth_metadata_unions(descriptions)
    shown = descriptions if client_scopes is None else client_scope_descriptions(descriptions, client_scopes)
    shown_unions = oauth_metadata_unions(shown)
    body: dict[str, Any] = {
        "issuer": urls.base,
        "authorization_endpoint": urls.authorization_endpoint,
        "token_endpoint": urls.token_endpoint,
    }
    if client_scopes is None:
        body["registration_endpoint"] = urls.registration_endpoint
    body.update({
        "revocation_endpoint": urls.revocation_endpoint,
        "introspection_endpoint": urls.introspection_endpoint,
        "pushed_authorization_request_endpoint": urls.par_endpoint,
        "require_pushed_authorization_requests": True,  # RFC 9126 §5: /oauth/authorize takes only a request_uri
        "scopes_supported": shown_unions["scopes_supported"],
        "response_types_supported": unions["response_types_supported"],
        "grant_types_supported": unions["grant_types_supported"],
        "token_endpoint_auth_methods_supported": unions["token_endpoint_auth_methods_supported"],
        "revocation_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "introspection_endpoint_auth_methods_supported": list(CLIENT_AUTH_METHODS),
        "code_challenge_methods_supported": [m for m in unions["code_challenge_methods_supported"] if m != "plain"],
        "authorization_details_types_supported": shown_unions["authorization_details_types_supported"],
        "service_documentation": server.documentation,
        "op_policy_uri": server.op_policy_uri,
        "op_tos_uri": server.op_tos_uri,
        "cds_oauth_version": CDS_OAUTH_VERSION,
        "cds_human_registration": urls.human_registration,
        "cds_timezone": config.timezone,
        "cds_clients_api": urls.clients_api,
        "cds_messages_api": urls.messages_api,
        "cds_credentials_api": urls.credentials_api,
        "cds_grants_api": urls.grants_api,
        "cds_test_accounts": urls.test_accounts,
        "cds_scope_descriptions": metadata_json(shown),
        "cds_registration_fields": registration_fields(shown, documentation_base=urls.documentation),
        "cds_customerdata_version": CDS_CUSTOMERDATA_VERSION,
    })
    body.update({field: urls.data_api(listing) for field, listing in DATA_API_FIELDS.items()})
    body["cds_usagesegments_additional_value_types"] = additional_value_types(urls)
    return body


# --------------------------------------------------------------------------------------------------------------
# Entity tags for conditional GET (RFC 9110 §8.8.3)
# --------------------------------------------------------------------------------------------------------------
_canonical = msgspec.json.Encoder(decimal_format="number", order="sorted")


def canonical_json(document: Any) -> bytes:
    """Compact JSON with sorted keys: the same bytes for equal documents whatever their key order."""
    return _canonical.encode(document)


def etag(document: Any) -> str:
    """A strong entity tag (quoted) for ``document``: the SHA-256 of its canonical JSON."""
    return '"' + hashlib.sha256(canonical_json(document)).hexdigest() + '"'
