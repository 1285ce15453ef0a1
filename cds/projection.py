"""Projection of customer data by grant: what a token may see of the stored CDS objects, and in which form.

Spec: CDS-WG3-01 §6 (scopes and their base access, the "default-true" include fields), §7 (authorization details
fields: §7.1 preselection with §7.1.13.1 normalized address matching, §7.2 included data, §7.3 durations) and §10
(customer data APIs: only visible ids in reference arrays, ``q`` over visible fields). Reference:
``shared/reference/cds-spec.md`` §4.3–§4.5, §4.8, §4.9. Everything here is pure: plain dicts in, plain dicts out.

How a grant becomes an :class:`Access` (:func:`grant_access`), one effective ``authorization_details`` entry at a
time, the result being the union of the entries:

* **Base access.** An entry's scope type (from its RAR type) gives the include fields the scope treats as true
  (§6.1/§6.2 "default-true"); an include field present in the entry overrides it. ``include_service_contracts``
  with ``include_meter_devices`` implies ``include_service_points`` (§7.2).
* **Selection.** Preselection fields narrow the customer's objects (§7.1): ``null`` (or a list containing ``"_all"``)
  means no narrowing; a list matches objects by the field's value (the address field by normalized address
  matching, below); ``"_include_future"`` also matches the field's objects created after the grant (``granted_at``).
  Each field's matches extend along the *current* links: up (meter → its current service points → their current
  contracts → the contracts' accounts) and down (account → its contracts → service points currently on them →
  meters currently on those), never sideways. Several fields intersect. A consent grant carries the preselections in
  its effective details (this server's consent form shares "everything of the customer" and has no selection
  component, so the preselections *are* the selection); a direct-access grant uses them as filters (§7.1).
* **Visibility.** A listing is visible when its include field is on; its visible objects are the selected ones.
  Accounts also bring their ``cds_account_parent`` chain. Bill statements: those of a selected account with
  ``statement_date`` in [``statement_date_start``, ``statement_date_end``]. Bill sections: ``start_date`` ≥
  ``start_date`` and ``end_date`` ≤ ``end_date``, a selected ``cds_account_id``, and every non-empty
  ``related_servicecontracts``/``related_servicepoints``/``related_meterdevices`` array meeting the selection (so a
  meter selection does not reveal its contract's other meters' sections). Usage segments follow the same
  "every non-empty related array meets the selection" rule (accounts, contracts, service points, meters) through a
  :class:`SegmentRule` per entry that includes them. Objects created after ``sync_until`` are not visible.
* **Fields.** OPTIONAL fields appear only when an include field enables them for that object (per object: an
  account visible through an entry without ``include_account_details`` does not get details from another entry
  that selects other accounts); REQUIRED fields always appear; any other key (unknown, and every ``greenbridge_*``
  extension, nested ones included) is removed. Extensions are not a documented API: they hold raw ESPI codes,
  hrefs-derived data and PII that no include field governs, so the projection drops them all.
* **REQUIRED but gated** (cds-spec §6.1 item 12): Bill Statement and Bill Section ``account_number`` are REQUIRED,
  and ``include_account_numbers`` lists them. Policy: the include rule wins. They are sent when
  ``include_account_numbers`` is true for the object (the default of every scope offering bills here), and left
  out when the grant turned it off. The translator's ``""`` for an unknown number (mapping D8) is sent as is.
* **References.** ``related_*``, ``current_*``, ``previous_*`` arrays keep only visible ids (§10); a New Charge's
  ``related_billsections`` likewise, and it is dropped when none stays visible (OPTIONAL, "omit if out of scope").
  Nullable single references become ``null`` when not visible: ``cds_billstatement_id`` on Bill Sections,
  ``cds_account_parent`` on Accounts. With ``include_bill_statement_files``, a statement without a file gets
  ``"file_uri": null`` (Bill Statement ``file_uri``: "null if there is no file but the scope asks for files"; then no
  ``file_mimetype``). Non-nullable single references (``cds_account_id``; a ``meter_readings``
  format's ``related_meterdevice``) are REQUIRED strings and are kept: they are opaque ids.
* **Usage values.** ``include_usage_segment_value_types`` is a choice list of ValueFormats (§5.2, "the same or a
  subset"): a segment format is kept when some chosen ValueFormat has its ``type`` and every other field of the
  choice (``units``, ``direction``, ``demand_type``, ``currency``…; not ``id`` or ``indexes``) is present on the
  segment format with the same value. A format that does not state a field the choice fixes (an electric billing
  copy without ``direction``, mapping D11) is not that choice. ``null`` gives ``formats: []`` and
  ``values: []``. An entry without the field (a scope that does not offer it) keeps every format.
  ``cost``/``electric_supply_mix`` ``indexes`` are renumbered to the kept positions (a cost whose priced column
  is not kept keeps its value with ``indexes`` reduced, possibly to ``[]``).
* **Windows and sync_until.** ``segment_start``/``segment_end`` (per :class:`SegmentRule`) bound usage segments;
  straddling segments are trimmed by :func:`trim_segment`. ``sync_until`` freezes the data: objects created after it
  are hidden, usage is cut at it (the rule's end is ``min(segment_end, sync_until)``) and ``cds_synced`` is shown as
  at most ``sync_until``. Content changed after ``sync_until`` (``cds_modified`` later than it) is still served as
  stored: the store keeps no history, and §7.3 allows late changes of pre-cutoff data. ``expires``: an entry past
  it contributes nothing; :meth:`Access.expired` tells the API to answer 403.

Trimming (:func:`trim_segment`, §7.3): Value Set *i* covers [start + i·interval, start + (i+1)·interval); the
trimmed segment keeps exactly the Value Sets whose whole slot lies in [window start, window end). Its id is
``sha256("gb1-trim|<original id>|<new segment_start>|<new segment_end>")`` truncated to 32 hex characters: stable
(the same kept range always gives the same id, whatever window produced it), distinct from the original (an
untrimmed segment keeps its own id) and revealing nothing the original id does not. A segment with a single Value
Set (a variable-length period such as a billing month, §10.8) that straddles a boundary has no whole slot inside
and is **dropped**: its total cannot be apportioned, and serving it whole would share usage outside the window.

Serving stored segments (:class:`StoredSegments`): the listing hands over each segment's stored JSON text, and the
result is :func:`serve_segment`'s, except that Value Sets needing no change stay the stored text (msgspec.Raw),
which ``cds.jsonenc`` writes back byte for byte; anything unusual takes :func:`serve_segment` itself.

``q`` (:func:`q_matches`): a case-insensitive "contains" over the spec's ``q`` fields of the listing that are
present in the *projected* object. Accounts: ``cds_account_id``, ``customer_number``, ``account_number``,
``account_address``, ``account_name``, the ``value`` of ``email`` contacts (the spec's ``contact_email``; its
``contact_name`` does not exist) and programs' ``program_number``. Service contracts: id, ``account_number``,
``contract_number``, ``contract_address``, ``rateplan_code``, ``rateplan_name``, programs' ``program_number``.
Service points: id, ``servicepoint_address``, ``servicepoint_number``, premises' ``premise_number``. Meter devices:
id, ``meter_number``. The other listings have no ``q`` in the spec.

Address matching (§7.1.13.1): see :func:`normalize_server_address` and :func:`normalize_input_address`. An input
address matches when the objects whose normalized address equals it are at most one account, one service contract
and one service point (one address record per kind); anything more is ambiguous and matches nothing. When a
contract or service point matches, an account whose (mailing) address is the same is not matched itself: the
service address names the location, and matching the account would select all of its other services too.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_CEILING, ROUND_FLOOR, Decimal
from operator import itemgetter
from types import MappingProxyType
from typing import Any

import msgspec

__all__ = [
    "ADDRESS_ABBREVIATIONS",
    "BASE_ACCESS",
    "CUSTOMER_DATA_TYPES",
    "ID_FIELDS",
    "LISTINGS",
    "NEEDS_BODY",
    "OPTIONAL_FIELDS",
    "Q_FIELDS",
    "REQUIRED_FIELDS",
    "Access",
    "SegmentRule",
    "StoredSegments",
    "expired_entries",
    "grant_access",
    "listing_of",
    "normalize_input_address",
    "normalize_server_address",
    "project",
    "q_matches",
    "scope_type_of",
    "segment_serving",
    "serve_segment",
    "trim_segment",
    "trimmed_segment_id",
]

#: The listings this server offers (no Aggregations or EACs: Green Button has no data for them).
LISTINGS = ("accounts", "service_contracts", "service_points", "meter_devices", "bill_statements", "bill_sections",
            "usage_segments")
ID_FIELDS = {
    "accounts": "cds_account_id",
    "service_contracts": "cds_servicecontract_id",
    "service_points": "cds_servicepoint_id",
    "meter_devices": "cds_meterdevice_id",
    "bill_statements": "cds_billstatement_id",
    "bill_sections": "cds_billsection_id",
    "usage_segments": "cds_usagesegment_id",
}
_LISTING_OF_ID = {id_field: listing for listing, id_field in ID_FIELDS.items()}

#: The include field that makes each listing visible.
LISTING_FLAGS = {
    "accounts": "include_accounts",
    "service_contracts": "include_service_contracts",
    "service_points": "include_service_points",
    "meter_devices": "include_meter_devices",
    "bill_statements": "include_bill_statements",
    "bill_sections": "include_bill_sections",
    "usage_segments": "include_usage_segments",
}

#: Scope type → the include fields it treats as true (WG3-01 §6.1 and §6.2 "default-true", cds-spec §4.4).
BASE_ACCESS: Mapping[str, frozenset[str]] = MappingProxyType({
    "cds_rate_plan": frozenset({"include_service_contracts", "include_rate_plans"}),
    "cds_account_programs": frozenset({"include_accounts", "include_account_programs"}),
    "cds_service_programs": frozenset({"include_service_contracts", "include_service_programs"}),
    "cds_accounts": frozenset({"include_accounts"}),
    "cds_service_contracts": frozenset({"include_accounts", "include_service_contracts"}),
    "cds_meters": frozenset({"include_meter_devices"}),
    "cds_bill_statements": frozenset({"include_bill_statements", "include_accounts", "include_account_numbers"}),
    "cds_service_bills": frozenset({"include_bill_sections", "include_accounts", "include_account_numbers",
                                    "include_service_contracts", "include_contract_numbers"}),
    "cds_usage": frozenset({"include_usage_segments"}),
    "cds_query_accounts": frozenset({"include_accounts"}),
    "cds_query_service_contracts": frozenset({"include_accounts", "include_service_contracts"}),
    "cds_query_service_points": frozenset({"include_service_points"}),
    "cds_query_meter_devices": frozenset({"include_meter_devices"}),
    "cds_query_bill_statements": frozenset({"include_bill_statements"}),
    "cds_query_bill_sections": frozenset({"include_bill_sections"}),
    "cds_query_aggregations": frozenset({"include_aggregations"}),
    "cds_query_usage": frozenset({"include_usage_segments", "include_usage_segment_value_types"}),
})
#: Scope types whose tokens read the customer data APIs.
CUSTOMER_DATA_TYPES = frozenset(BASE_ACCESS)

_TIMESTAMPS = ("cds_created", "cds_modified", "cds_synced")
#: REQUIRED fields per listing (WG3-01 §10; cds-spec §4.9), always present when the source has them.
REQUIRED_FIELDS: Mapping[str, frozenset[str]] = MappingProxyType({
    "accounts": frozenset({"cds_account_id", *_TIMESTAMPS, "cds_account_parent"}),
    "service_contracts": frozenset({"cds_servicecontract_id", *_TIMESTAMPS, "cds_account_id", "contract_types",
                                    "contract_status", "service_types"}),
    "service_points": frozenset({"cds_servicepoint_id", *_TIMESTAMPS, "servicepoint_number", "servicepoint_types",
                                 "current_servicecontracts", "previous_servicecontracts"}),
    "meter_devices": frozenset({"cds_meterdevice_id", *_TIMESTAMPS, "meter_types", "current_servicepoints",
                                "previous_servicepoints"}),
    "bill_statements": frozenset({"cds_billstatement_id", *_TIMESTAMPS, "cds_account_id", "statement_date",
                                  "currency", "amount_due", "amount_due_date", "shutoff_prevention_minimum_due",
                                  "shutoff_prevention_date"}),
    "bill_sections": frozenset({"cds_billsection_id", *_TIMESTAMPS, "cds_billstatement_id", "cds_account_id",
                                "section_types", "start_date", "end_date", "currency", "distribution_entity",
                                "supply_entity", "related_servicecontracts", "related_servicepoints",
                                "related_meterdevices", "related_billsections", "usage_details", "cost_details"}),
    "usage_segments": frozenset({"cds_usagesegment_id", *_TIMESTAMPS, "related_aggregations", "related_accounts",
                                 "related_servicecontracts", "related_servicepoints", "related_meterdevices",
                                 "related_billsections", "segment_start", "segment_end", "interval", "formats",
                                 "values"}),
})

#: OPTIONAL fields per listing → the include field that enables them (WG3-01 §7.2). Statement and section
#: ``account_number`` are REQUIRED but gated (see the module docstring, cds-spec §6.1 item 12).
OPTIONAL_FIELDS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "accounts": MappingProxyType({
        "customer_number": "include_account_numbers", "account_number": "include_account_numbers",
        "account_entity": "include_account_numbers",
        "account_name": "include_account_details", "account_address": "include_account_details",
        "account_types": "include_account_details", "account_status": "include_account_details",
        "account_contacts": "include_account_details",
        "account_programs": "include_account_programs",
    }),
    "service_contracts": MappingProxyType({
        "account_number": "include_account_numbers",
        "contract_number": "include_contract_numbers", "contract_entity": "include_contract_numbers",
        "contract_address": "include_service_contract_details", "contract_start": "include_service_contract_details",
        "contract_end": "include_service_contract_details",
        "rateplan_code": "include_rate_plans", "rateplan_name": "include_rate_plans",
        "service_programs": "include_service_programs",
    }),
    "service_points": MappingProxyType({
        "servicepoint_address": "include_service_point_addresses",
        "latitude": "include_coordinates", "longitude": "include_coordinates",
        "premises": "include_premises",
    }),
    "meter_devices": MappingProxyType({
        "meter_number": "include_meter_numbers", "meter_apps": "include_meter_apps",
    }),
    "bill_statements": MappingProxyType({
        "account_number": "include_account_numbers",
        "file_uri": "include_bill_statement_files", "file_mimetype": "include_bill_statement_files",
        "previous_balance_amount": "include_bill_statement_charges",
        "previous_balance_paid": "include_bill_statement_charges",
        "previous_balance_unpaid": "include_bill_statement_charges",
        "new_charges_amount": "include_bill_statement_charges", "new_charges": "include_bill_statement_charges",
        "new_balance_amount": "include_bill_statement_charges",
        "account_programs": "include_bill_statement_programs",
    }),
    "bill_sections": MappingProxyType({
        "account_number": "include_account_numbers",
        "line_items": "include_bill_section_line_items",
        "service_programs": "include_bill_section_programs",
    }),
    "usage_segments": MappingProxyType({}),
})

#: The spec's ``q`` fields per listing: a top-level key, or ``(array key, member key)`` for arrays of objects.
#: Account contacts: the spec's ``contact_email`` is read as the ``value`` of contacts typed ``email``.
Q_FIELDS: Mapping[str, tuple[Any, ...]] = MappingProxyType({
    "accounts": ("cds_account_id", "customer_number", "account_number", "account_address", "account_name",
                 ("account_contacts", "value"), ("account_programs", "program_number")),
    "service_contracts": ("cds_servicecontract_id", "account_number", "contract_number", "contract_address",
                          "rateplan_code", "rateplan_name", ("service_programs", "program_number")),
    "service_points": ("cds_servicepoint_id", "servicepoint_address", "servicepoint_number",
                       ("premises", "premise_number")),
    "meter_devices": ("cds_meterdevice_id", "meter_number"),
})

#: Reference arrays per listing → the listing whose ids they hold.
_REFERENCES: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "service_points": {"current_servicecontracts": "service_contracts",
                       "previous_servicecontracts": "service_contracts"},
    "meter_devices": {"current_servicepoints": "service_points", "previous_servicepoints": "service_points"},
    "bill_sections": {"related_servicecontracts": "service_contracts", "related_servicepoints": "service_points",
                      "related_meterdevices": "meter_devices", "related_billsections": "bill_sections"},
    "usage_segments": {"related_aggregations": "aggregations", "related_accounts": "accounts",
                       "related_servicecontracts": "service_contracts", "related_servicepoints": "service_points",
                       "related_meterdevices": "meter_devices", "related_billsections": "bill_sections"},
})
#: The related arrays a Usage Segment or Bill Section must meet the selection through (when non-empty).
_SELECTION_LINKS = (("related_accounts", "accounts"), ("related_servicecontracts", "service_contracts"),
                    ("related_servicepoints", "service_points"), ("related_meterdevices", "meter_devices"))
_SELECTABLE = ("accounts", "service_contracts", "service_points", "meter_devices")
_EXTENSION_PREFIX = "greenbridge_"
_INFINITE = "infinite"


# --------------------------------------------------------------------------------------------------------------
# Access
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SegmentRule:
    """How one authorization details entry shares Usage Segments.

    ``anchors``: the selected accounts, service contracts, service points and meter devices (listing → ids); a
    segment is shared when each of its non-empty ``related_*`` arrays of those kinds meets them. ``start``/``end``:
    the window (``None`` = unbounded; ``end`` already cut at ``sync_until``). ``value_formats``: the chosen
    ValueFormats (``None``: ``include_usage_segment_value_types`` is null, no values); ``all_value_formats``: no
    restriction (the entry does not carry the field). ``created_until``: ``sync_until`` (objects created later are
    hidden).
    """

    anchors: Mapping[str, frozenset[str]]
    start: datetime | None = None
    end: datetime | None = None
    value_formats: tuple[Mapping[str, Any], ...] | None = ()
    all_value_formats: bool = True
    created_until: datetime | None = None

    def shares(self, segment: Mapping[str, Any]) -> bool:
        """Whether the segment's relations meet the selection (the window is :func:`trim_segment`'s business)."""
        if self.created_until is not None and _moment(segment.get("cds_created")) > self.created_until:
            return False
        return _meets(segment, self.anchors)

    def contains(self, segment: Mapping[str, Any]) -> bool:
        """Whether the segment lies inside the window."""
        start, end = _moment(segment["segment_start"]), _moment(segment["segment_end"])
        return (self.start is None or start >= self.start) and (self.end is None or end <= self.end)


@dataclass(frozen=True)
class Access:
    """What one grant lets a token see of one customer's data (built by :func:`grant_access`).

    * ``listings``: the listings the grant includes (``includes``); a listing may be included and still empty.
    * ``visible``: listing → visible object ids (every listing but usage segments, which follow ``segment_rules``).
    * ``fields``: listing → object id → the OPTIONAL fields enabled for it.
    * ``segment_rules``: one :class:`SegmentRule` per entry that includes usage segments, in entry order.
    * windows (``None`` = unbounded, i.e. ``"infinite"``): the hull of the entries' ``segment_start``/
      ``segment_end`` (datetimes), ``statement_date_start``/``statement_date_end`` and ``start_date``/``end_date``
      (dates), for information (the per-entry windows were applied when ``visible`` was computed).
    * ``sync_until``: the latest of the entries' (``None``: some entry is infinite or has none).
    * ``expires``: the latest of the entries' ``expires`` (``None``: some entry does not expire).
    """

    listings: frozenset[str] = frozenset()
    visible: Mapping[str, frozenset[str]] = field(default_factory=dict)
    fields: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=dict)
    segment_rules: tuple[SegmentRule, ...] = ()
    segment_start: datetime | None = None
    segment_end: datetime | None = None
    statement_date_start: date | None = None
    statement_date_end: date | None = None
    start_date: date | None = None
    end_date: date | None = None
    sync_until: datetime | None = None
    expires: datetime | None = None
    #: What serving stored segments derives from this Access alone (:class:`StoredSegments`' memos: rules per
    #: relations, visible ids, projected formats, decisions per shape), kept with it: a kept Access (the gateway
    #: keeps one per grant and data version) serves its next pages without deriving them again.
    memo: dict[str, dict[Any, Any]] = field(default_factory=dict, compare=False, hash=False, repr=False)

    @property
    def infinite(self) -> bool:
        """Whether usage is shared without an end (no ``segment_end`` and no ``sync_until``)."""
        return any(rule.end is None for rule in self.segment_rules)

    def includes(self, listing: str) -> bool:
        return listing in self.listings

    def is_visible(self, listing: str, object_id: str | None) -> bool:
        return object_id is not None and object_id in self.visible.get(listing, ())

    def enabled(self, listing: str, object_id: str) -> frozenset[str]:
        return self.fields.get(listing, {}).get(object_id, frozenset())

    def expired(self, now: datetime) -> bool:
        return self.expires is not None and now >= self.expires

    def segment_rule(self, segment: Mapping[str, Any]) -> SegmentRule | None:
        """The first rule that shares this segment, or None."""
        return next((rule for rule in self.segment_rules if rule.shares(segment)), None)


def scope_type_of(rar_type: str) -> str:
    """A scope type guessed from a RAR type when no mapping is given: ``cds_usage_1`` / ``cds_usage_1ad`` →
    ``cds_usage`` (server-chosen ids, WG3-01 §6; the gateway passes the real mapping from its descriptions)."""
    match = re.fullmatch(r"(cds_[a-z_]*?[a-z])(?:_?\d+)?(?:ad)?", rar_type)
    return match.group(1) if match else rar_type


def listing_of(obj: Mapping[str, Any]) -> str | None:
    """The listing name of a CDS object, from its id field."""
    for key in obj:
        if key in _LISTING_OF_ID:
            return _LISTING_OF_ID[key]
    return None


def grant_access(details: Sequence[Mapping[str, Any]], objects: Mapping[str, Sequence[Mapping[str, Any]]],
                 now: datetime, *, scope_types: Mapping[str, str] | None = None,
                 value_formats: Mapping[str, Mapping[str, Any]] | None = None,
                 granted_at: datetime | None = None) -> Access:
    """The :class:`Access` of a grant's effective ``authorization_details`` over one customer's objects.

    ``objects``: listing name → the customer's objects (every listing but usage segments). ``scope_types``: RAR type
    → scope type (default: :func:`scope_type_of`). ``value_formats``: ``include_usage_segment_value_types`` choice id
    → its ``usagesegment_format`` (default: a choice id stands for the formats whose id is it or starts with it and
    ``_``). ``granted_at``: when the grant was made (``_include_future``). Entries of other scope types (Grant Admin…)
    and entries past their ``expires`` contribute nothing; an entry whose windows cannot be read contributes nothing
    either (fail closed).
    """
    index = _Index(objects)
    listings: set[str] = set()
    visible: dict[str, set[str]] = {listing: set() for listing in LISTINGS}
    fields: dict[str, dict[str, set[str]]] = {listing: {} for listing in LISTINGS}
    rules: list[SegmentRule] = []
    hull = _Hull()
    for entry in details:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("type"), str):
            continue
        scope_type = (scope_types or {}).get(entry["type"]) or scope_type_of(entry["type"])
        base = BASE_ACCESS.get(scope_type)
        if base is None:
            continue
        try:
            windows = _Windows.of(entry)
        except ValueError:
            continue
        hull.add(windows)
        if windows.expires is not None and now >= windows.expires:
            continue
        flags = _flags(entry, base)
        selected = _select(entry, index, granted_at)
        if windows.sync_until is not None:
            selected = {listing: {i for i in ids if index.created(listing, i) <= windows.sync_until}
                        for listing, ids in selected.items()}
        shown = _shown(flags, selected, index, windows)
        for listing, ids in shown.items():
            listings.add(listing)
            visible[listing] |= ids
            enabled = {name for name, flag in OPTIONAL_FIELDS[listing].items() if flags.get(flag)}
            for object_id in ids:
                fields[listing].setdefault(object_id, set()).update(enabled)
        if flags.get("include_usage_segments"):
            listings.add("usage_segments")
            rules.append(_segment_rule(entry, selected, windows, value_formats))
    return Access(
        listings=frozenset(listings),
        visible=MappingProxyType({k: frozenset(v) for k, v in visible.items()}),
        fields=MappingProxyType({k: MappingProxyType({i: frozenset(f) for i, f in v.items()})
                                 for k, v in fields.items()}),
        segment_rules=tuple(rules),
        segment_start=hull.earliest("segment_start"), segment_end=hull.latest("segment_end"),
        statement_date_start=hull.earliest("statement_date_start"),
        statement_date_end=hull.latest("statement_date_end"),
        start_date=hull.earliest("start_date"), end_date=hull.latest("end_date"),
        sync_until=hull.latest("sync_until"), expires=hull.latest("expires"),
    )


def expired_entries(details: Sequence[Mapping[str, Any]], now: datetime) -> tuple[bool, ...]:
    """Per entry of ``details``, whether its ``expires`` has passed at ``now``: the only way :func:`grant_access`
    depends on ``now``, so equal details, objects and answers here give equal Accesses (entries whose windows
    cannot be read count as not expired: they contribute nothing either way)."""
    states = []
    for entry in details:
        try:
            expires = _Windows.of(entry).expires if isinstance(entry, Mapping) else None
        except ValueError:
            expires = None
        states.append(expires is not None and now >= expires)
    return tuple(states)


def _flags(entry: Mapping[str, Any], base: frozenset[str]) -> dict[str, Any]:
    flags: dict[str, Any] = {flag: True for flag in base}
    for key, value in entry.items():
        if key.startswith("include_") and key != "include_usage_segment_value_types":
            flags[key] = value is True
    if flags.get("include_service_contracts") and flags.get("include_meter_devices"):
        flags["include_service_points"] = True  # WG3-01 §7.2
    return flags


@dataclass(frozen=True)
class _Windows:
    segment_start: datetime | None = None
    segment_end: datetime | None = None
    statement_date_start: date | None = None
    statement_date_end: date | None = None
    start_date: date | None = None
    end_date: date | None = None
    sync_until: datetime | None = None
    expires: datetime | None = None
    present: frozenset[str] = frozenset()

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> _Windows:
        values: dict[str, Any] = {}
        for name in ("segment_start", "segment_end", "sync_until", "expires"):
            if name in entry:
                values[name] = _window_datetime(entry[name])
        for name in ("statement_date_start", "statement_date_end", "start_date", "end_date"):
            if name in entry:
                values[name] = _window_date(entry[name])
        return cls(**values, present=frozenset(values))


class _Hull:
    """The widest windows across entries (``None`` = unbounded wins)."""

    def __init__(self) -> None:
        self.values: dict[str, list[Any]] = {}

    def add(self, windows: _Windows) -> None:
        for name in ("segment_start", "segment_end", "statement_date_start", "statement_date_end", "start_date",
                     "end_date", "sync_until", "expires"):
            if name in windows.present or name in ("sync_until", "expires"):
                self.values.setdefault(name, []).append(getattr(windows, name))

    def earliest(self, name: str) -> Any:
        values = self.values.get(name, [])
        return None if not values or None in values else min(values)

    def latest(self, name: str) -> Any:
        values = self.values.get(name, [])
        return None if not values or None in values else max(values)


def _window_datetime(value: Any) -> datetime | None:
    if value is None or value == _INFINITE:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a datetime: {value!r}")
    parsed = datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError(f"datetime without offset: {value!r}")
    return parsed.astimezone(UTC)


def _window_date(value: Any) -> date | None:
    if value is None or value == _INFINITE:
        return None
    if not isinstance(value, str):
        raise ValueError(f"not a date: {value!r}")
    return date.fromisoformat(value)


def _moment(value: Any) -> datetime:
    """An RFC 3339 string (or datetime) as an aware UTC datetime."""
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)


# --------------------------------------------------------------------------------------------------------------
# Selection
# --------------------------------------------------------------------------------------------------------------
class _Index:
    """The customer's objects with their current links, both ways."""

    def __init__(self, objects: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.by_id: dict[str, dict[str, Mapping[str, Any]]] = {}
        for listing in LISTINGS:
            if listing == "usage_segments":
                continue
            id_field = ID_FIELDS[listing]
            self.by_id[listing] = {obj[id_field]: obj for obj in objects.get(listing, ()) if obj.get(id_field)}
        accounts, contracts = self.by_id["accounts"], self.by_id["service_contracts"]
        points, meters = self.by_id["service_points"], self.by_id["meter_devices"]
        # up: child → parents (current links only)
        self.up: dict[str, dict[str, set[str]]] = {
            "service_contracts": {i: {c["cds_account_id"]} & set(accounts) for i, c in contracts.items()
                                  if c.get("cds_account_id")},
            "service_points": {i: set(p.get("current_servicecontracts") or ()) & set(contracts)
                               for i, p in points.items()},
            "meter_devices": {i: set(m.get("current_servicepoints") or ()) & set(points) for i, m in meters.items()},
        }
        self.down: dict[str, dict[str, set[str]]] = {"accounts": {}, "service_contracts": {}, "service_points": {}}
        parent_of = {"service_contracts": "accounts", "service_points": "service_contracts",
                     "meter_devices": "service_points"}
        for child_listing, links in self.up.items():
            for child, parents in links.items():
                for parent in parents:
                    self.down[parent_of[child_listing]].setdefault(parent, set()).add(child)

    def all(self) -> dict[str, set[str]]:
        return {listing: set(self.by_id[listing]) for listing in _SELECTABLE}

    def created(self, listing: str, object_id: str) -> datetime:
        obj = self.by_id.get(listing, {}).get(object_id)
        return _moment(obj["cds_created"]) if obj is not None and obj.get("cds_created") else datetime.min.replace(
            tzinfo=UTC)

    def closure(self, matched: Mapping[str, set[str]]) -> dict[str, set[str]]:
        """The matched objects with their ancestors and descendants along current links."""
        order = list(_SELECTABLE)
        result = {listing: set(matched.get(listing, ())) for listing in order}
        up_child = {"service_contracts": "accounts", "service_points": "service_contracts",
                    "meter_devices": "service_points"}
        down_child = {"accounts": "service_contracts", "service_contracts": "service_points",
                      "service_points": "meter_devices"}
        for start in order:
            frontier = set(matched.get(start, ()))
            listing = start
            while listing in up_child and frontier:  # ancestors
                frontier = set().union(*(self.up[listing].get(i, set()) for i in frontier))
                listing = up_child[listing]
                result[listing] |= frontier
            frontier = set(matched.get(start, ()))
            listing = start
            while listing in down_child and frontier:  # descendants
                frontier = set().union(*(self.down[listing].get(i, set()) for i in frontier))
                listing = down_child[listing]
                result[listing] |= frontier
        return result


#: Preselection field → (listing it matches, how an object matches a value set).
def _values_of(obj: Mapping[str, Any], key: str) -> set[Any]:
    value = obj.get(key)
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return {value} if isinstance(value, str) else set()


def _members_of(obj: Mapping[str, Any], key: str, member: str) -> set[Any]:
    return {item.get(member) for item in obj.get(key) or () if isinstance(item, Mapping)}


_PRESELECTION_MATCHERS: dict[str, tuple[tuple[str, Any], ...]] = {
    "account_numbers": (("accounts", lambda o: _values_of(o, "account_number")),
                        ("service_contracts", lambda o: _values_of(o, "account_number"))),
    "account_programs": (("accounts", lambda o: _members_of(o, "account_programs", "program_number")),),
    "contract_numbers": (("service_contracts", lambda o: _values_of(o, "contract_number")),),
    "service_types": (("service_contracts", lambda o: _values_of(o, "service_types")),),
    "service_programs": (("service_contracts", lambda o: _members_of(o, "service_programs", "program_number")),),
    "servicepoint_numbers": (("service_points", lambda o: _values_of(o, "servicepoint_number")),),
    "servicepoint_types": (("service_points", lambda o: _values_of(o, "servicepoint_types")),),
    "premise_numbers": (("service_points", lambda o: _members_of(o, "premises", "premise_number")),),
    "meter_numbers": (("meter_devices", lambda o: _values_of(o, "meter_number")),),
    "meter_types": (("meter_devices", lambda o: _values_of(o, "meter_types")),),
    "meter_apps": (("meter_devices", lambda o: _members_of(o, "meter_apps", "app_number")),),
    "aggregation_numbers": (),  # no aggregations here: a list matches nothing
}
_ADDRESS_FIELDS = (("accounts", "account_address"), ("service_contracts", "contract_address"),
                   ("service_points", "servicepoint_address"))


def _select(entry: Mapping[str, Any], index: _Index, granted_at: datetime | None) -> dict[str, set[str]]:
    """The selected accounts, contracts, service points and meters of one entry (all when nothing narrows)."""
    selected = index.all()
    for name in (*_PRESELECTION_MATCHERS, "addresses"):
        values = entry.get(name)
        if values is None or not isinstance(values, list):
            continue
        values = [v for v in values if isinstance(v, str)]
        if "_all" in values:
            continue
        future = "_include_future" in values
        wanted = {v for v in values if v not in ("_all", "_include_future")}
        matched: dict[str, set[str]] = {listing: set() for listing in _SELECTABLE}
        if name == "addresses":
            targets = [listing for listing, _ in _ADDRESS_FIELDS]
            for address in wanted:
                for listing, object_id in _address_matches(address, index):
                    matched[listing].add(object_id)
        else:
            targets = [listing for listing, _ in _PRESELECTION_MATCHERS[name]]
            for listing, values_of in _PRESELECTION_MATCHERS[name]:
                for object_id, obj in index.by_id[listing].items():
                    if values_of(obj) & wanted:
                        matched[listing].add(object_id)
        if future and granted_at is not None:
            for listing in targets:
                matched[listing] |= {i for i in index.by_id[listing] if index.created(listing, i) > granted_at}
        closure = index.closure(matched)
        selected = {listing: selected[listing] & closure[listing] for listing in _SELECTABLE}
    return selected


def _meets(obj: Mapping[str, Any], selected: Mapping[str, Iterable[str]]) -> bool:
    """Every non-empty related array of the selectable kinds has an id in the selection."""
    for key, listing in _SELECTION_LINKS:
        related = obj.get(key)
        if related and not any(i in selected.get(listing, ()) for i in related):
            return False
    return True


def _shown(flags: Mapping[str, Any], selected: Mapping[str, set[str]], index: _Index,
           windows: _Windows) -> dict[str, set[str]]:
    """Listing → the object ids one entry shows (only for the listings its flags include)."""
    shown: dict[str, set[str]] = {}
    if flags.get("include_accounts"):
        accounts = set(selected["accounts"])
        frontier = set(accounts)
        while frontier:  # parents through cds_account_parent (WG3-01 §7.2)
            parents = {index.by_id["accounts"][i].get("cds_account_parent") for i in frontier}
            frontier = {p for p in parents if p in index.by_id["accounts"] and p not in accounts}
            accounts |= frontier
        shown["accounts"] = accounts
    for listing in ("service_contracts", "service_points", "meter_devices"):
        if flags.get(LISTING_FLAGS[listing]):
            shown[listing] = set(selected[listing])
    if flags.get("include_bill_statements"):
        shown["bill_statements"] = {
            i for i, s in index.by_id["bill_statements"].items()
            if s.get("cds_account_id") in selected["accounts"]
            and _in_dates(s.get("statement_date"), windows.statement_date_start, windows.statement_date_end)
            and (windows.sync_until is None or index.created("bill_statements", i) <= windows.sync_until)}
    if flags.get("include_bill_sections"):
        shown["bill_sections"] = {
            i for i, s in index.by_id["bill_sections"].items()
            if s.get("cds_account_id") in selected["accounts"] and _meets(s, selected)
            and _in_dates(s.get("start_date"), windows.start_date, None)
            and _in_dates(s.get("end_date"), None, windows.end_date)
            and (windows.sync_until is None or index.created("bill_sections", i) <= windows.sync_until)}
    return shown


def _in_dates(value: Any, first: date | None, last: date | None) -> bool:
    if first is None and last is None:
        return True
    try:
        day = date.fromisoformat(value)
    except (TypeError, ValueError):
        return False
    return (first is None or day >= first) and (last is None or day <= last)


def _segment_rule(entry: Mapping[str, Any], selected: Mapping[str, set[str]], windows: _Windows,
                  value_formats: Mapping[str, Mapping[str, Any]] | None) -> SegmentRule:
    end = windows.segment_end
    if windows.sync_until is not None:
        end = windows.sync_until if end is None else min(end, windows.sync_until)
    chosen: tuple[Mapping[str, Any], ...] | None = ()
    restricted = "include_usage_segment_value_types" in entry
    if restricted:
        choices = entry["include_usage_segment_value_types"]
        if choices is None:
            chosen = None
        else:
            found = []
            for choice in choices if isinstance(choices, list) else ():
                if value_formats is not None:
                    if choice in value_formats:
                        found.append(MappingProxyType(dict(value_formats[choice])))
                else:
                    found.append(MappingProxyType({"id": choice, "_prefix": True}))
            chosen = tuple(found)
    return SegmentRule(
        anchors=MappingProxyType({listing: frozenset(selected[listing]) for listing in _SELECTABLE}),
        start=windows.segment_start, end=end, value_formats=chosen, all_value_formats=not restricted,
        created_until=windows.sync_until)


# --------------------------------------------------------------------------------------------------------------
# Addresses (WG3-01 §7.1.13.1)
# --------------------------------------------------------------------------------------------------------------
#: The abbreviations expanded in Typical addresses (locale en-US/en-CA, USPS Publication 28 street suffixes,
#: secondary unit designators and directionals); ``#`` becomes ``unit``. Segments (lines) are joined with ", ",
#: in the order name (dropped), street lines, "town, region postal code", country.
ADDRESS_ABBREVIATIONS: Mapping[str, str] = MappingProxyType({
    "st": "street", "str": "street", "ave": "avenue", "av": "avenue", "rd": "road", "blvd": "boulevard",
    "dr": "drive", "ln": "lane", "ct": "court", "pl": "place", "hwy": "highway", "pkwy": "parkway",
    "ter": "terrace", "cir": "circle", "sq": "square", "trl": "trail", "cres": "crescent", "crt": "court",
    "expy": "expressway", "fwy": "freeway", "aly": "alley", "ctr": "center", "hts": "heights", "mt": "mount",
    "rte": "route", "rr": "rural route",
    "apt": "apartment", "ste": "suite", "fl": "floor", "bldg": "building", "rm": "room", "unit": "unit",
    "n": "north", "s": "south", "e": "east", "w": "west",
    "ne": "northeast", "nw": "northwest", "se": "southeast", "sw": "southwest",
})
_UNIT_WORDS = frozenset({"unit", "apartment", "suite", "floor", "building", "room"})
_DIRECTIONALS = frozenset({"n", "s", "e", "w", "ne", "nw", "se", "sw"})
_STREET_START = re.compile(r"^(\d|#|p\.?\s*o\.?\s*box\b|rr\b|r\.r\.)", re.IGNORECASE)
_LOCALITY = re.compile(r"^[^,]+,\s*\S.*$")


def normalize_input_address(text: str) -> str:
    """An address sent by a client (and an Atypical server address): lowercase, newlines → spaces, whitespace
    collapsed, trimmed (§7.1.13.1)."""
    return " ".join(text.lower().split())


def normalize_server_address(text: str) -> str:
    """A server address: Typical ones lose the address name, get abbreviations expanded (``ADDRESS_ABBREVIATIONS``),
    lowercase, segments joined with ", " and whitespace collapsed; Atypical ones as :func:`normalize_input_address`.

    Typical here: after the leading name lines (those before the first line that starts with a digit, ``#``,
    ``PO Box`` or a rural route), at least two lines remain and the last or the one before it is a locality line
    with a comma (``Anytown, NY 00000``).
    """
    lines = [line.strip() for line in text.replace("\r", "\n").split("\n") if line.strip()]
    start = next((i for i, line in enumerate(lines) if _STREET_START.match(line)), None)
    if start is None:
        return normalize_input_address(text)
    lines = lines[start:]
    locality = next((i for i in (len(lines) - 1, len(lines) - 2) if 0 < i < len(lines) and _LOCALITY.match(lines[i])),
                    None)
    if len(lines) < 2 or locality is None:
        return normalize_input_address(text)
    parts = [_expand(line) for line in lines[:locality]] + lines[locality:]
    return normalize_input_address(", ".join(parts))


def _expand(line: str) -> str:
    line = re.sub(r"#\s*", "unit ", line)
    words = []
    previous = ""
    for token in line.split():
        match = re.fullmatch(r"(.*?)([.,]*)", token)
        core, trail = match.group(1), match.group(2).replace(".", "")
        key = core.lower()
        expanded = ADDRESS_ABBREVIATIONS.get(key)
        if expanded is None or (key in _DIRECTIONALS and previous in _UNIT_WORDS):
            words.append(core + trail)
        else:
            words.append(expanded + trail)
        previous = (expanded or key).lower()
    return " ".join(words)


def _address_matches(address: str, index: _Index) -> list[tuple[str, str]]:
    wanted = normalize_input_address(address)
    found: list[tuple[str, str]] = []
    for listing, key in _ADDRESS_FIELDS:
        hits = [object_id for object_id, obj in index.by_id[listing].items()
                if isinstance(obj.get(key), str) and normalize_server_address(obj[key]) == wanted]
        if len(hits) > 1:
            return []  # ambiguous: several address records of one kind
        found += [(listing, object_id) for object_id in hits]
    if any(listing != "accounts" for listing, _ in found):  # a service address names a location more precisely
        found = [(listing, object_id) for listing, object_id in found if listing != "accounts"]
    return found


# --------------------------------------------------------------------------------------------------------------
# Projection
# --------------------------------------------------------------------------------------------------------------
def project(listing: str, obj: Mapping[str, Any], access: Access) -> dict[str, Any] | None:
    """The object as the grant shows it, or None when it is not visible (see the module docstring).

    Usage segments must already be trimmed to their rule's window (:func:`trim_segment`, or use
    :func:`serve_segment`); one that is not inside the window is not visible.
    """
    if listing == "usage_segments":
        rule = access.segment_rule(obj)
        if rule is None or not rule.contains(obj):
            return None
        return _project_segment(obj, rule, access)
    if listing not in REQUIRED_FIELDS:
        raise ValueError(f"unknown listing {listing!r}")
    object_id = obj.get(ID_FIELDS[listing])
    if not access.is_visible(listing, object_id):
        return None
    allowed = REQUIRED_FIELDS[listing] | access.enabled(listing, object_id)
    references = _REFERENCES.get(listing, {})
    result: dict[str, Any] = {}
    for key, value in obj.items():
        if key not in allowed:
            continue
        if key in references:
            value = _visible_ids(value, references[key], access)
        elif listing == "bill_statements" and key == "new_charges":
            value = [_new_charge(charge, access) for charge in value or ()]
        else:
            value = _without_extensions(value)
        result[key] = value
    if listing == "bill_statements" and "file_uri" in allowed and "file_uri" not in result:
        result["file_uri"] = None  # the scope asks for files and there is none
    if listing == "accounts" and "cds_account_parent" in result and \
            not access.is_visible("accounts", result["cds_account_parent"]):
        result["cds_account_parent"] = None
    if listing == "bill_sections" and result.get("cds_billstatement_id") is not None and \
            not access.is_visible("bill_statements", result["cds_billstatement_id"]):
        result["cds_billstatement_id"] = None
    _cap_synced(result, access)
    return result


def serve_segment(segment: Mapping[str, Any], access: Access) -> dict[str, Any] | None:
    """A stored Usage Segment as the grant shows it: the sharing rule, trimming to its window, projection."""
    rule = access.segment_rule(segment)
    if rule is None:
        return None
    trimmed = trim_segment(segment, rule.start, rule.end)
    if trimmed is None:
        return None
    return _project_segment(trimmed, rule, access)


def _cap_synced(result: dict[str, Any], access: Access) -> None:
    if access.sync_until is not None and isinstance(result.get("cds_synced"), str) and \
            _moment(result["cds_synced"]) > access.sync_until:
        result["cds_synced"] = _rfc3339(access.sync_until)


def _rfc3339(moment: datetime) -> str:
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + (f".{moment.microsecond:06d}" if moment.microsecond else "") + "Z"


def _visible_ids(value: Any, listing: str, access: Access) -> list[str]:
    return [i for i in value or () if access.is_visible(listing, i)]


def _new_charge(charge: Any, access: Access) -> Any:
    if not isinstance(charge, Mapping):
        return charge
    result = _without_extensions(charge)
    if "related_billsections" in charge:
        related = _visible_ids(charge["related_billsections"], "bill_sections", access)
        if related or not charge["related_billsections"]:
            result["related_billsections"] = related
        else:
            del result["related_billsections"]
    return result


def _without_extensions(value: Any) -> Any:
    """A copy without ``greenbridge_*`` keys at any depth (values are shared when nothing is removed)."""
    if isinstance(value, Mapping):
        return {k: _without_extensions(v) for k, v in value.items() if not k.startswith(_EXTENSION_PREFIX)}
    if isinstance(value, list):
        return [_without_extensions(v) for v in value]
    return value


def _project_segment(segment: Mapping[str, Any], rule: SegmentRule, access: Access) -> dict[str, Any]:
    references = _REFERENCES["usage_segments"]
    result: dict[str, Any] = {}
    keep: list[int] | None = None
    for key, value in segment.items():
        if key not in REQUIRED_FIELDS["usage_segments"]:
            continue
        if key in references:
            value = _visible_ids(value, references[key], access)
        elif key == "formats":
            keep, value = _formats(value or [], rule, access)
        elif key == "values":
            continue  # after the formats
        result[key] = value
    if keep is None:
        keep, _ = _formats(segment.get("formats") or [], rule, access)
    if rule.value_formats is None:
        result["values"] = []
    else:
        result["values"] = [_value_set(value_set, keep) for value_set in segment.get("values") or ()]
    _cap_synced(result, access)
    return result


def _formats(formats: list[Any], rule: SegmentRule, access: Access) -> tuple[list[int], list[dict[str, Any]]]:
    """(kept positions, projected formats) under the rule's value types."""
    if rule.value_formats is None:
        return [], []
    keep = [i for i, fmt in enumerate(formats)
            if isinstance(fmt, Mapping) and (rule.all_value_formats or _format_chosen(fmt, rule.value_formats))]
    position = {old: new for new, old in enumerate(keep)}
    projected = []
    for i in keep:
        fmt = _without_extensions(formats[i])
        if isinstance(fmt.get("indexes"), list):
            fmt["indexes"] = [position[n] for n in fmt["indexes"] if n in position]
        if isinstance(fmt.get("related_meterdevices"), list):
            fmt["related_meterdevices"] = _visible_ids(fmt["related_meterdevices"], "meter_devices", access)
        projected.append(fmt)
    return keep, projected


_IGNORED_CHOICE_KEYS = frozenset({"id", "type", "indexes", "related_meterdevices", "related_meterdevice"})


def _format_chosen(fmt: Mapping[str, Any], chosen: Sequence[Mapping[str, Any]]) -> bool:
    for choice in chosen:
        if choice.get("_prefix"):
            identifier = str(fmt.get("id", ""))
            if identifier == choice["id"] or identifier.startswith(f"{choice['id']}_"):
                return True
            continue
        if choice.get("type") != fmt.get("type"):
            continue
        if all(key in _IGNORED_CHOICE_KEYS or (key in fmt and fmt[key] == wanted) for key, wanted in choice.items()):
            return True
    return False


def _value_set(value_set: Any, keep: list[int]) -> Any:
    """The kept positions of one Value Set, value objects without extensions (hot path: a page of 15-minute data
    holds ~10,000 Value Sets; a plain value object has a single key, so only larger ones are inspected)."""
    if value_set.__class__ is not list:
        return value_set
    size = len(value_set)
    result = []
    for i in keep:
        value = value_set[i] if i < size else None
        if value.__class__ is dict and len(value) > 1 and any(k.startswith(_EXTENSION_PREFIX) for k in value):
            value = {k: v for k, v in value.items() if not k.startswith(_EXTENSION_PREFIX)}
        result.append(value)
    return result


# --------------------------------------------------------------------------------------------------------------
# Stored segments: serve_segment over the stored JSON, Value Sets kept as stored text where that is exact
# --------------------------------------------------------------------------------------------------------------
_PARTS = msgspec.json.Decoder(dict[str, msgspec.Raw])  # top-level keys → their JSON text, in stored order
_EXACT = msgspec.json.Decoder(float_hook=Decimal)  # as json.loads(parse_float=Decimal): int, Decimal, never float
_SEGMENT_ID = ID_FIELDS["usage_segments"]
_SEGMENT_BODY_KEYS = REQUIRED_FIELDS["usage_segments"] - {_SEGMENT_ID, *_TIMESTAMPS}
_SEGMENT_REFERENCES = _REFERENCES["usage_segments"]
_SELECTION_KEYS = tuple(key for key, _ in _SELECTION_LINKS)
_TIMESTAMP_SET = frozenset(_TIMESTAMPS)
_MAX_WIDTH = 64  # formats per segment checked column-wise; wider segments take the general path
_ROW_DECODERS: dict[int, msgspec.json.Decoder] = {}
_EXPONENT = re.compile(rb"e[-+0-9]")  # a float in exponent form (msgspec writes 1e-7, 1e16); keys such as "eu" pass
_NEGATIVE_ZERO = re.compile(rb"[:,\[]-0[,\]}]")  # the integer -0, which decodes as 0


def _plain_string(raw: bytes) -> bool:
    """A JSON string without escapes: msgspec writes it back as is."""
    return len(raw) >= 2 and raw[:1] == b'"' and raw[-1:] == b'"' and b"\\" not in raw


_JSON = msgspec.json.Encoder(decimal_format="number")  # cds.jsonenc's encoding
_PLAIN_ID = re.compile(r"[A-Za-z0-9_.:|/-]+")
_SLOT = b"\x01"  # segment_serving's place for a grant-dependent member
#: :meth:`StoredSegments.serve_stored`'s answer for a segment that must be served from its body.
NEEDS_BODY = object()


def _plain_id(segment_id: str) -> bool:
    """An id written into JSON as is (ingest's ids are hex digests; anything else is encoded by the general path)."""
    return _PLAIN_ID.fullmatch(segment_id) is not None


def _decode_exact(body: str | bytes) -> Any:
    try:
        return _EXACT.decode(body)
    except msgspec.DecodeError:  # e.g. NaN, which ingest never writes: read as before
        return json.loads(body, parse_float=Decimal)


def _rows_decoder(width: int) -> msgspec.json.Decoder:
    """Value Sets as tuples of exactly ``width`` members, each member's JSON text (msgspec.Raw), unparsed."""
    decoder = _ROW_DECODERS.get(width)
    if decoder is None:
        decoder = _ROW_DECODERS.setdefault(width, msgspec.json.Decoder(list[tuple[(msgspec.Raw,) * width]]))
    return decoder


def _verbatim(text: bytes) -> bool:
    """Whether the projection keeps this stored JSON as is and ``cds.jsonenc`` would write it back byte for byte.

    Ingest writes bodies with msgspec (compact, Decimals as ``str(Decimal)``, canonical string escapes), which
    decode and encode back to the same bytes, except floats in exponent form (``1e-7`` comes back as ``1E-7``;
    Decimals print an uppercase ``E``). Extension keys (removed by the projection) also exclude the text, and
    so do whitespace and backslashes, in case a body was ever written some other way."""
    return (b'"greenbridge_' not in text and b"\\" not in text and b" " not in text and b"\n" not in text
            and b"\t" not in text and b"\r" not in text and _EXPONENT.search(text) is None)


def segment_serving(body: str | bytes) -> tuple[str, str] | None:
    """What a stored Usage Segment is served from when a grant keeps it whole (:meth:`StoredSegments.serve_stored`),
    computed once at ingest: ``(text, shape)``, or None when the body has no such form (the listing then serves
    it from its body).

    ``text`` is the segment's JSON after its id and timestamps, as :meth:`StoredSegments.serve_json` writes it for
    a grant that keeps every format and Value Set (extension keys left out, the Value Sets as stored), with a
    slot (U+0001, which no JSON text holds unescaped) where each grant-dependent member's value goes: the formats
    and the related arrays, in stored order. ``shape`` holds those members as stored: what a grant's decision
    depends on (a segment's meter, account and format set, the same across many segments). Only bodies with the
    id first and verbatim Value Sets (:func:`_verbatim`) of one width have a serving."""
    text = body.encode() if isinstance(body, str) else bytes(body)
    try:
        parts = _PARTS.decode(text)
    except msgspec.DecodeError:
        return None
    keys = list(parts)
    if len(keys) < 4 or keys[0] != _SEGMENT_ID or keys[-1] != "values" or "formats" not in parts or \
            "segment_start" not in parts or "segment_end" not in parts or not _TIMESTAMP_SET.isdisjoint(parts) or \
            not _plain_string(bytes(parts[_SEGMENT_ID])):
        return None
    formats = _EXACT.decode(parts["formats"])
    values = bytes(parts["values"])
    if not isinstance(formats, list) or not 0 < len(formats) <= _MAX_WIDTH or \
            not all(isinstance(fmt, Mapping) for fmt in formats) or values[:1] != b"[" or not _verbatim(values) or \
            _NEGATIVE_ZERO.search(values) is not None:
        return None
    try:
        _rows_decoder(len(formats)).decode(values)
    except msgspec.ValidationError:
        return None
    pieces = []
    shape = {}
    for key in keys[1:-1]:
        if key not in _SEGMENT_BODY_KEYS:
            continue
        raw = bytes(parts[key])
        if key == "formats" or key in _SEGMENT_REFERENCES:
            shape[key] = parts[key]
            piece = _SLOT  # the grant's projection of the member goes here
        elif key in ("segment_start", "segment_end") and _plain_string(raw):
            piece = raw
        else:
            piece = _JSON.encode(_EXACT.decode(raw))
        pieces += (b',"', key.encode(), b'":', piece)
    pieces += (b',"values":', values, b"}")
    return b"".join(pieces).decode(), _JSON.encode(shape).decode()


class StoredSegments:
    """:func:`serve_segment` for one :class:`Access` over stored Usage Segments (one request's worth).

    ``serve(created, modified, synced, body)`` takes a stored segment (its ``cds_*`` timestamps as RFC 3339 text,
    its body as ingest wrote it: JSON without the timestamps) and gives what ``serve_segment`` gives for the
    decoded segment (``cds.store.objects.segment_object``), except that ``values`` may hold the stored JSON text
    (msgspec.Raw) of all Value Sets or of their kept members, and tuples for lists: ``cds.jsonenc`` writes the
    very same bytes. Only the fields the projection keeps are decoded, each stored format list is projected once,
    and when the segment lies inside its rule's window the Value Sets are not parsed into numbers: passed through
    whole when every format is kept, picked column by column when a value-type choice keeps some. Everything else
    (segments to trim or drop, ragged or non-list Value Sets, extension keys among the values, a body msgspec
    cannot read) takes the general path on the fully decoded segment.
    """

    def __init__(self, access: Access) -> None:
        self.access = access
        self._created_matters = any(rule.created_until is not None for rule in access.segment_rules)
        # Every memo depends on the Access alone, so they live with it (Access.memo), shared by the requests that
        # use it (plain dicts: under the GIL a value computed twice by two threads is the same value). The rules
        # they hold keep the ids that the format memos are keyed by alive.
        memo = access.memo
        self._rules: dict[tuple, SegmentRule | None] = memo.setdefault("rules", {})
        self._visible: dict[tuple, Any] = memo.setdefault("visible", {})
        self._formats: dict[tuple, Any] = memo.setdefault("formats", {})
        self._decisions: dict[tuple[str | None, str], tuple[SegmentRule | None, list[bytes] | None]] = \
            memo.setdefault("decisions", {})

    def _rule(self, created: str, parts: dict[str, msgspec.Raw]) -> SegmentRule | None:
        """The sharing rule of a segment: it depends on cds_created and the related arrays only, so it is found
        once per distinct combination."""
        related = tuple(None if raw is None else bytes(raw) for raw in map(parts.get, _SELECTION_KEYS))
        rule_key = (created if self._created_matters else None, related)
        try:
            return self._rules[rule_key]
        except KeyError:
            probe: dict[str, Any] = {"cds_created": created}
            for key, text in zip(_SELECTION_KEYS, related, strict=True):
                if text is not None:
                    probe[key] = _EXACT.decode(text)
            rule = self._rules[rule_key] = self.access.segment_rule(probe)
            return rule

    def serve_stored(self, segment_id: str, created: str, modified: str, synced: str, segment_start: datetime,
                     segment_end: datetime, text: str | None, shape: str | None) -> msgspec.Raw | object | None:
        """The segment's JSON from its stored serving (:func:`segment_serving`), without reading its body: the
        id, the timestamps and the stored text with the grant's projection of the shape's members in its slots,
        when the grant keeps every format and Value Set (decided once per shape and, when a rule cuts by
        creation, creation time), the segment lies inside its rule's window (the stored instants) and its
        ``cds_synced`` is not capped. None: not shared. :data:`NEEDS_BODY`: serve it from its body
        (:meth:`serve_json`)."""
        if text is None or shape is None:
            return NEEDS_BODY
        decision_key = (created if self._created_matters else None, shape)
        decision = self._decisions.get(decision_key)
        if decision is None:
            decision = self._decisions[decision_key] = self._decide(created, shape)
        rule, members = decision
        if rule is None:
            return None
        if members is None or (rule.start is not None and segment_start < rule.start) or \
                (rule.end is not None and segment_end > rule.end) or \
                (self.access.sync_until is not None and self._capped(synced)) or not _plain_id(segment_id):
            return NEEDS_BODY
        chunks = text.encode().split(_SLOT)
        if len(chunks) != len(members) + 1:
            return NEEDS_BODY
        pieces = [f'{{"cds_usagesegment_id":"{segment_id}","cds_created":"{created}","cds_modified":"{modified}",'
                  f'"cds_synced":"{synced}"'.encode(), chunks[0]]
        for member, chunk in zip(members, chunks[1:], strict=True):
            pieces += (member, chunk)
        return msgspec.Raw(b"".join(pieces))

    def _decide(self, created: str, shape: str) -> tuple[SegmentRule | None, list[bytes] | None]:
        """The rule of the segments of one shape, and the text of each of the shape's members as :meth:`serve`
        writes it (related arrays: the visible ids; formats: projected), or None when the rule does not keep every
        format and Value Set."""
        parts = _PARTS.decode(shape)
        rule = self._rule(created, parts)
        if rule is None or rule.value_formats is None or "formats" not in parts:
            return rule, None
        members = []
        for key, raw in parts.items():
            if key == "formats":
                piece, _ = self._formats_json(bytes(raw), rule)
                if piece is None:
                    return rule, None
            else:
                piece = self._member_json(key, bytes(raw))
            members.append(piece)
        return rule, members

    def serve_json(self, created: str, modified: str, synced: str, body: str | bytes) -> msgspec.Raw | None:
        """The JSON text ``cds.jsonenc`` writes for :meth:`serve`'s answer (None: not shared), as msgspec.Raw.

        When the segment lies inside its rule's window, keeps every format and Value Set and its ``cds_synced``
        is not capped, and the stored body has the id first and ``values`` last, the text is put together from
        the stored one: the id, the three timestamps, each other top-level member as stored (or its projection's
        text, found once per distinct stored text: related ids, formats without extension keys; extension keys
        left out) and the stored
        Value Sets when :func:`_verbatim`. Nothing is decoded but the top-level keys and the window's two
        instants. Anything else is :meth:`serve`, encoded."""
        text = body.encode() if isinstance(body, str) else bytes(body)
        whole = self._whole(created, modified, synced, text)
        if whole is not None:
            return whole
        served = self.serve(created, modified, synced, body)
        return None if served is None else msgspec.Raw(_JSON.encode(served))

    def _whole(self, created: str, modified: str, synced: str, text: bytes) -> msgspec.Raw | None:
        """:meth:`serve_json`'s text put together from the stored one, or None when the segment needs anything
        more (or is not shared)."""
        if self.access.sync_until is not None and self._capped(synced):
            return None
        try:
            parts = _PARTS.decode(text)
        except msgspec.DecodeError:
            return None
        keys = list(parts)
        if len(keys) < 4 or keys[0] != _SEGMENT_ID or keys[-1] != "values" or "formats" not in parts or \
                "segment_start" not in parts or "segment_end" not in parts or not _TIMESTAMP_SET.isdisjoint(parts):
            return None
        identifier = bytes(parts[_SEGMENT_ID])
        if not _plain_string(identifier):
            return None
        rule = self._rule(created, parts)
        if rule is None or rule.value_formats is None:
            return None
        start, end = _EXACT.decode(parts["segment_start"]), _EXACT.decode(parts["segment_end"])
        if (rule.start is not None and _moment(start) < rule.start) or \
                (rule.end is not None and _moment(end) > rule.end):
            return None
        pieces = [b'{"cds_usagesegment_id":', identifier,
                  f',"cds_created":"{created}","cds_modified":"{modified}","cds_synced":"{synced}"'.encode()]
        width = None
        for key in keys[1:-1]:
            if key not in _SEGMENT_BODY_KEYS:  # extension keys: not served
                continue
            raw = bytes(parts[key])
            if key == "formats":
                piece, width = self._formats_json(raw, rule)
                if piece is None:
                    return None
            elif key in _SEGMENT_REFERENCES:
                piece = self._member_json(key, raw)
            elif key in ("segment_start", "segment_end") and _plain_string(raw):
                piece = raw
            else:
                piece = self._member_json(key, raw)
            pieces += (b',"', key.encode(), b'":', piece)
        values = bytes(parts["values"])
        if not width or width > _MAX_WIDTH or values[:1] != b"[" or not _verbatim(values) or \
                _NEGATIVE_ZERO.search(values) is not None:
            return None
        try:
            _rows_decoder(width).decode(values)  # every Value Set a list of exactly ``width`` members
        except msgspec.ValidationError:
            return None
        pieces += (b',"values":', values, b"}")
        return msgspec.Raw(b"".join(pieces))

    def _capped(self, synced: str) -> bool:
        """Whether ``cds_synced`` is shown as ``sync_until`` (:func:`_cap_synced`), once per text."""
        memo = ("capped", synced)
        found = self._visible.get(memo)
        if found is None:
            found = self._visible[memo] = _moment(synced) > self.access.sync_until
        return found

    def _member_json(self, key: str, raw: bytes) -> bytes:
        """A top-level member's text as :meth:`serve` writes it (related ids: the visible ones), once per text."""
        memo = ("json", key, raw)
        found = self._visible.get(memo)
        if found is None:
            value = _EXACT.decode(raw)
            if key in _SEGMENT_REFERENCES:
                value = _visible_ids(value, _SEGMENT_REFERENCES[key], self.access)
            found = self._visible[memo] = _JSON.encode(value)
        return found

    def _formats_json(self, raw: bytes, rule: SegmentRule) -> tuple[bytes | None, int | None]:
        """The projected formats' text and how many formats are stored; None when the rule does not keep every
        format (the Value Sets must then be picked)."""
        memo = ("json", id(rule), raw)
        found = self._formats.get(memo)
        if found is None:
            keep, projected, width = self._projected_formats(msgspec.Raw(raw), rule)
            kept = width is not None and keep == list(range(width))
            found = self._formats[memo] = (_JSON.encode(projected) if kept else None, width)
        return found

    def serve(self, created: str, modified: str, synced: str, body: str | bytes) -> dict[str, Any] | None:
        try:
            parts = _PARTS.decode(body)
        except msgspec.DecodeError:
            return self._general(created, modified, synced, body)
        if _SEGMENT_ID not in parts or "segment_start" not in parts or "segment_end" not in parts or \
                not _TIMESTAMP_SET.isdisjoint(parts):
            return self._general(created, modified, synced, body)
        access = self.access
        rule = self._rule(created, parts)
        if rule is None:
            return None
        start, end = _EXACT.decode(parts["segment_start"]), _EXACT.decode(parts["segment_end"])
        if (rule.start is not None and _moment(start) < rule.start) or \
                (rule.end is not None and _moment(end) > rule.end):
            return self._general(created, modified, synced, body)  # to trim (or drop): trim_segment's business
        result: dict[str, Any] = {_SEGMENT_ID: _EXACT.decode(parts[_SEGMENT_ID]), "cds_created": created,
                                  "cds_modified": modified, "cds_synced": synced}
        keep: list[int] = []
        width: int | None = 0
        values = None
        for key, raw in parts.items():  # stored order, as segment_object and _project_segment keep it
            if key not in _SEGMENT_BODY_KEYS:
                continue
            if key == "values":
                values = raw  # written last, as _project_segment does
                continue
            if key in _SEGMENT_REFERENCES:
                value = self._visible_ids(key, raw)
            elif key == "formats":
                keep, value, width = self._projected_formats(raw, rule)
            elif key == "segment_start":
                value = start
            elif key == "segment_end":
                value = end
            else:
                value = _EXACT.decode(raw)
            result[key] = value
        if rule.value_formats is None or values is None:
            result["values"] = []
        else:
            result["values"] = self._values(values, keep, width)
        _cap_synced(result, access)
        return result

    def _general(self, created: str, modified: str, synced: str, body: str | bytes) -> dict[str, Any] | None:
        stored = _decode_exact(body)
        segment = {_SEGMENT_ID: stored.pop(_SEGMENT_ID), "cds_created": created, "cds_modified": modified,
                   "cds_synced": synced}
        segment.update(stored)
        return serve_segment(segment, self.access)

    def _visible_ids(self, key: str, raw: msgspec.Raw) -> list[str]:
        memo = (key, bytes(raw))
        found = self._visible.get(memo)
        if found is None:
            found = self._visible[memo] = _visible_ids(_EXACT.decode(raw), _SEGMENT_REFERENCES[key], self.access)
        return found

    def _projected_formats(self, raw: msgspec.Raw, rule: SegmentRule) -> tuple[list[int], list[dict[str, Any]],
                                                                                 int | None]:
        key = (id(rule), bytes(raw))
        found = self._formats.get(key)
        if found is None:
            formats = _EXACT.decode(raw)
            keep, projected = _formats(formats or [], rule, self.access)
            found = self._formats[key] = (keep, projected, len(formats) if isinstance(formats, list) else None)
        return found

    @staticmethod
    def _values(raw: msgspec.Raw, keep: list[int], width: int | None) -> Any:
        """``[_value_set(value_set, keep) for value_set in values or ()]`` for the stored ``values`` text."""
        text = bytes(raw)
        if width and width <= _MAX_WIDTH and text[:1] == b"[" and _verbatim(text):
            try:
                rows = _rows_decoder(width).decode(text)
            except msgspec.ValidationError:  # a Value Set that is not a list of exactly ``width`` members
                rows = None
            if rows is not None:
                if len(keep) == width:  # every position kept, in order
                    return raw
                if not keep:
                    return [[] for _ in rows]
                pick = itemgetter(*keep)
                return [[pick(row)] for row in rows] if len(keep) == 1 else [pick(row) for row in rows]
        return [_value_set(value_set, keep) for value_set in _EXACT.decode(text) or ()]


# --------------------------------------------------------------------------------------------------------------
# Trimming (WG3-01 §7.3)
# --------------------------------------------------------------------------------------------------------------
_MICRO = Decimal("0.000001")


def _seconds(delta: timedelta) -> Decimal:
    return Decimal(delta.days * 86400 + delta.seconds) + Decimal(delta.microseconds) * _MICRO


def _after(moment: datetime, seconds: Decimal) -> datetime:
    whole = int(seconds.to_integral_value(rounding=ROUND_FLOOR))
    micro = int(((seconds - whole) * 1_000_000).to_integral_value(rounding=ROUND_FLOOR))
    return moment + timedelta(seconds=whole, microseconds=micro)


def trimmed_segment_id(original_id: str, start: datetime, end: datetime) -> str:
    """The id of the segment trimmed from ``original_id`` to [start, end) (see the module docstring)."""
    text = f"gb1-trim|{original_id}|{_rfc3339(start)}|{_rfc3339(end)}"
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def trim_segment(segment: Mapping[str, Any], start: datetime | None, end: datetime | None) -> dict[str, Any] | None:
    """The segment cut to the Value Sets whose slots lie wholly in [start, end) (``None``: unbounded side).

    Returns the segment itself (same id) when nothing is cut, a new segment (new id, ``segment_start``,
    ``segment_end`` and ``values``; every other field as is, values exactly the same objects) when some Value Sets
    fall outside, and None when none stays (including a single-period segment that straddles a boundary).
    """
    seg_start, seg_end = _moment(segment["segment_start"]), _moment(segment["segment_end"])
    if (start is None or seg_start >= start) and (end is None or seg_end <= end):
        return dict(segment)
    if (start is not None and seg_end <= start) or (end is not None and seg_start >= end):
        return None
    values = segment.get("values") or []
    interval = Decimal(str(segment["interval"]))
    if interval <= 0:
        return None
    count = len(values)
    if count == 0:  # no Value Sets (e.g. values shared as null): cut the extent only, in whole intervals
        count = int((_seconds(seg_end - seg_start) / interval).to_integral_value(rounding=ROUND_FLOOR))
    first = 0
    if start is not None and start > seg_start:
        first = int((_seconds(start - seg_start) / interval).to_integral_value(rounding=ROUND_CEILING))
    last = count  # exclusive
    if end is not None and end < seg_end:
        last = min(count, int((_seconds(end - seg_start) / interval).to_integral_value(rounding=ROUND_FLOOR)))
    if first >= last:
        return None
    new_start = _after(seg_start, interval * first)
    new_end = _after(seg_start, interval * last)
    result = dict(segment)
    result[ID_FIELDS["usage_segments"]] = trimmed_segment_id(segment[ID_FIELDS["usage_segments"]], new_start, new_end)
    result["segment_start"] = _rfc3339(new_start)
    result["segment_end"] = _rfc3339(new_end)
    if segment.get("values"):
        result["values"] = values[first:last]
    return result


# --------------------------------------------------------------------------------------------------------------
# q (WG3-01 §10)
# --------------------------------------------------------------------------------------------------------------
def q_matches(listing: str, projected: Mapping[str, Any], q: str) -> bool:
    """Case-insensitive "contains" over the listing's ``q`` fields present in the projected object.

    ``ValueError`` for a listing without ``q`` in the spec.
    """
    if listing not in Q_FIELDS:
        raise ValueError(f"{listing} has no q search")
    needle = q.strip().casefold()
    if not needle:
        return True
    for spec in Q_FIELDS[listing]:
        for text in _q_texts(projected, spec):
            if needle in text.casefold():
                return True
    return False


def _q_texts(projected: Mapping[str, Any], spec: Any) -> list[str]:
    if isinstance(spec, str):
        value = projected.get(spec)
        return [value] if isinstance(value, str) else []
    key, member = spec
    texts = []
    for item in projected.get(key) or ():
        if not isinstance(item, Mapping) or not isinstance(item.get(member), str):
            continue
        if key == "account_contacts" and "email" not in (item.get("types") or ()):
            continue
        texts.append(item[member])
    return texts
