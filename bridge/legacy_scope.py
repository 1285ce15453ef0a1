"""What a CDS customer-data scope needs from the legacy Green Button custodian: Function Blocks and scope terms.

A Grant of a CDS-WG3-01 §6 scope (``cds_usage``, ``cds_meters`` … and the direct-access ``cds_query_*`` types of
§6.2) is filled from ESPI data that the gateway fetches under a legacy scope string (espi.md §5.1). That string
names Function Blocks (``FB=``, the GBA catalogue in :mod:`espi.function_blocks`, espi.md §5.2) and value terms
(``HistoryLength``, ``SubscriptionFrequency`` …). This module says, for one scope type and its effective
``authorization_details`` (cds/authorization_details.py), which blocks and terms are needed, and what ESPI cannot
provide at all, as plain data:

* :func:`requirements` → :class:`Requirements` (blocks, the reason for each, and :class:`Unavailable` items);
* :func:`required_function_blocks` → the block numbers alone;
* :func:`scope_terms` → an :class:`espi.scope.Scope` holding the value terms (no Function Blocks);
* :func:`legacy_scope` → one Scope for several entries (a Grant), blocks and terms merged, for
  :func:`espi.scope.format_scope`.

The rules (docs/mapping.md "CDS scopes → Green Button Function Blocks" has the tables and the reasons):

* Usage segments: FB_4 (Interval Metering) plus one block per requested value type: forward kWh FB_5, demand FB_6,
  net FB_7, reverse FB_8, gas FB_10, water FB_11, interval cost FB_12. GBA certifies FB_4 only together with
  one of FB_5/10/11/29, so a request without any of them (net or demand only, cost only, or value types null)
  adds the commodity blocks (FB_5/10/11) of the commodities concerned. A ``service_types`` preselection narrows
  the commodities, and so does ``commodities=`` (what one custodian scope string meters, bridge/custodian_scopes.py)
  when it leaves any.
* Bill sections: FB_15 (Usage Summary) and FB_16 (its costs: cost details, line items). Bill statements are built
  from those sections only in "utility mode" (docs/mapping.md §6.2): ESPI has no amount due, which is reported
  as unavailable.
* Service points, synthetic service contracts and synthetic meters come from the UsagePoint (FB_1).
* Customer data (customer.xsd, FB_51–70): accounts FB_56, customer name/kind/status FB_54, addresses FB_55,
  agreements FB_57, service locations FB_58, meters FB_60. For every object derived from usage data, customer
  data reaches it only through ServiceLocation → CustomerAgreement → CustomerAccount (the join of docs/mapping.md
  §5), so any retail block on such a scope brings FB_56, FB_57 and FB_58. ServiceSupplier (FB_59) is not asked
  for: the entities fall back to the configured one.
* Every request of usage data carries FB_1 (Usage Data Common) and FB_3 (Connect My Data); every request of
  retail customer data FB_51 (Retail Customer Common) and FB_53 (Retail Customer Connect My Data). Protocol
  blocks (FB_13 security class, FB_14/31 OAuth, FB_37 query parameters, FB_39 push) are not data: they belong to
  the custodian's profile, not to a CDS scope.
* ``HistoryLength`` from the furthest-back start field (``segment_start``, ``start_date``,
  ``statement_date_start``) relative to ``now``, in the unit the custodian uses (months or seconds; espi.md §5.1
  says both occur, so the caller must say which); none for ``"infinite"`` (all history).
* ``SubscriptionFrequency`` while the data keeps changing, i.e. ``sync_until`` is later than ``now`` (for scopes
  without ``sync_until``, such as the consent bill scopes: the window's end field is ``"infinite"`` or ahead):
  ``daily`` for usage (CDS: interval data refreshed at least daily), ``billingPeriod`` for bills, ``weekly`` for
  the object lists. None when the data is frozen at once (``sync_until`` ≤ now): ESPI has no term for "no
  updates", and leaving it out asks for nothing.
* No ``IntervalDuration``: no CDS field constrains the interval length (value formats do not carry it), and no
  ``BlockDuration``/``AccountCollection``: nothing in a Grant says them.

Spec: CDS-WG3-01 §6 (scopes), §7 (fields); Green Button Function Blocks (greenbuttonalliance.org/function-blocks,
espi.md §5.2) and scope grammar (espi.md §5.1). Nothing here does I/O; every value is immutable.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from types import MappingProxyType
from typing import Any, Literal
from zoneinfo import ZoneInfo

from cds.authorization_details import START_FIELDS, load_timezone, resolve_date_value
from espi.function_blocks import RETAIL_CUSTOMER_RANGE
from espi.scope import NAMED_FREQUENCIES, Scope

__all__ = [
    "COMMODITY_BLOCKS",
    "CUSTOMER_JOIN",
    "INCLUDE_NEEDS",
    "PRESELECTION_NEEDS",
    "SCOPE_TYPES",
    "VALUE_TYPE_BLOCKS",
    "Requirements",
    "ScopeType",
    "Unavailable",
    "history_fields",
    "legacy_scope",
    "required_function_blocks",
    "requirements",
    "scope_terms",
    "unavailable",
]

HistoryUnits = Literal["months", "seconds"]


@dataclass(frozen=True, slots=True)
class Unavailable:
    """Something a scope asks for that Green Button data cannot provide: ``subject`` (a CDS field, object or
    value) and why. Reported, never guessed at."""

    subject: str
    reason: str


def unavailable(subject: str, reason: str) -> Unavailable:
    return Unavailable(subject, reason)


@dataclass(frozen=True, slots=True)
class _Need:
    blocks: frozenset[int]
    why: str
    missing: tuple[Unavailable, ...] = ()


def _need(blocks: Iterable[int], why: str, *missing: Unavailable) -> _Need:
    return _Need(frozenset(blocks), why, tuple(missing))


#: The blocks of the usage feed that every usage request carries, and those of every retail-customer request.
USAGE_BASE = frozenset({1, 3})
RETAIL_BASE = frozenset({51, 53})
#: ServiceLocation (FB_58) → CustomerAgreement (FB_57) → CustomerAccount (FB_56): how customer data reaches the
#: objects derived from usage data (docs/mapping.md §5 "Join").
CUSTOMER_JOIN = frozenset({56, 57, 58})
#: Interval metering block per commodity (espi.md §1.4: FB_05 electricity, FB_10 gas, FB_11 water).
COMMODITY_BLOCKS: Mapping[str, int] = MappingProxyType({"electric": 5, "natural_gas": 10, "water": 11})
_METERING = frozenset({5, 10, 11, 29})  # FB_4 is certified together with one of these (espi.md §5.2)

#: ``include_usage_segment_value_types`` choice (cds/scopes.py) → (blocks, commodity or None, why).
VALUE_TYPE_BLOCKS: Mapping[str, tuple[frozenset[int], str | None, str]] = MappingProxyType({
    "electric_usage_forward": (frozenset({5}), "electric", "forward (delivered) kWh: Electricity Interval Metering"),
    "electric_usage_net": (frozenset({7}), "electric", "net kWh: Net Electricity Metering (flowDirection 4)"),
    "electric_usage_reverse": (frozenset({8}), "electric",
                               "exported kWh: Forward and Reverse Electricity Metering (flowDirection 19)"),
    "electric_demand_peak": (frozenset({6}), "electric", "peak kW: Demand Electricity Metering"),
    "electric_demand_average": (frozenset({6}), "electric", "average kW: Demand Electricity Metering"),
    "natural_gas_usage": (frozenset({10}), "natural_gas", "gas usage: Natural Gas Interval Metering"),
    "water_usage": (frozenset({11}), "water", "water usage: Water Interval Metering"),
    "cost": (frozenset({12}), None, "interval cost: Cost of Interval Data (IntervalReading.cost + currency)"),
})

_PREMISES = unavailable("premises", "ESPI has no premise objects or premise numbers")
_AGGREGATIONS = unavailable("aggregations", "Green Button data holds no aggregations")
_STATEMENTS = unavailable(
    "bill_statements", "ESPI has no amount due or due date; statements exist only when the custodian runs the "
    "translation in utility mode (summaries asserted to be the bill, docs/mapping.md §6.2)")

#: What each include field needs (WG3-01 §7.2).
INCLUDE_NEEDS: Mapping[str, _Need] = MappingProxyType({
    "include_accounts": _need({56}, "Account objects: CustomerAccount (a synthetic account per subscription "
                                    "without it)"),
    "include_account_numbers": _need({56}, "account_number: CustomerAccount.accountId (ESPI 4.0)"),
    "include_account_details": _need({54, 55, 56}, "account name, types and status: Customer (FB_54); address: "
                                                   "Customer addresses (FB_55) or account contactInfo (FB_56)"),
    "include_account_programs": _need({54}, "account programs: Customer.specialNeed"),
    "include_service_contracts": _need({1}, "Service Contracts: one per UsagePoint, from CustomerAgreement when "
                                            "customer data is joined"),
    "include_contract_numbers": _need({57}, "contract_number: CustomerAgreement.agreementId"),
    "include_rate_plans": _need({15}, "rateplan_code: tariffProfile of the UsagePoint or the Usage Summary",
                                unavailable("rateplan_name", "ESPI has only a tariff profile code, no plan name")),
    "include_service_contract_details": _need(
        {57, 58}, "contract_address: the agreement's ServiceLocation mainAddress",
        unavailable("contract_start/contract_end", "CustomerAgreement.validityInterval is kept raw only "
                                                   "(docs/mapping.md §7.2)")),
    "include_service_programs": _need({57}, "service programs: CustomerAgreement DemandResponseProgram"),
    "include_service_points": _need({1}, "Service Points: one per UsagePoint"),
    "include_service_point_addresses": _need({58}, "servicepoint_address: ServiceLocation mainAddress"),
    "include_premises": _need((), "", _PREMISES),
    "include_coordinates": _need((), "", unavailable(
        "latitude/longitude", "ServiceLocation positionPoints have no stated datum and are not translated "
                              "(docs/mapping.md §7.2)")),
    "include_meter_devices": _need({1}, "Meter Devices: customer Meters when joined, else one per UsagePoint"),
    "include_meter_numbers": _need({60}, "meter_number: Meter serialNumber (synthetic meters have none)"),
    "include_meter_apps": _need((), "", unavailable("meter_apps", "ESPI has no meter apps")),
    "include_bill_statements": _need({15, 16}, "Bill Statements: built from Usage Summaries with costs",
                                     _STATEMENTS),
    "include_bill_statement_files": _need((), "", unavailable(
        "file_uri", "ESPI Statement files are not linked to summaries (kept on the account, docs/mapping.md §6.2)")),
    "include_bill_statement_charges": _need({16}, "new charges: Usage Summary billLastPeriod",
                                            unavailable("previous_balance_*/new_balance_amount",
                                                        "ESPI has no account balance")),
    "include_bill_statement_programs": _need((), "", unavailable("bill statement programs", "no ESPI source")),
    "include_bill_sections": _need({15, 16}, "Bill Sections: Usage Summary (billingPeriod, consumption) with its "
                                             "costs (billLastPeriod, costAdditionalLastPeriod)"),
    "include_bill_section_line_items": _need({16}, "line items: Usage Summary costAdditionalDetailLastPeriod"),
    "include_bill_section_programs": _need((), "", unavailable("bill section programs", "no ESPI source")),
    "include_aggregations": _need((), "", _AGGREGATIONS),
    "include_aggregation_addresses": _need((), "", _AGGREGATIONS),
    "include_usage_segments": _need({4}, "Usage Segments: IntervalBlocks of MeterReadings"),
    "include_eacs": _need((), "", unavailable("eacs", "Green Button data holds no energy attribute certificates")),
})

#: What a non-null preselection field needs to be matched (WG3-01 §7.1). Type preselections (``service_types`` …)
#: only narrow and need nothing.
PRESELECTION_NEEDS: Mapping[str, _Need] = MappingProxyType({
    "account_numbers": _need({56}, "match account numbers: CustomerAccount.accountId"),
    "contract_numbers": _need({57}, "match contract numbers: CustomerAgreement.agreementId"),
    "meter_numbers": _need({60}, "match meter numbers: Meter serialNumber"),
    "addresses": _need({55, 58}, "match addresses: ServiceLocation (FB_58) and Customer (FB_55) addresses"),
    "account_programs": _need({54}, "match account programs: Customer.specialNeed"),
    "service_programs": _need({57}, "match service programs: DemandResponseProgram"),
    "servicepoint_numbers": _need((), "", unavailable(
        "servicepoint_numbers", "ESPI has no customer-facing service point number (servicepoint_number is null), "
                                "so this preselection matches nothing")),
    "premise_numbers": _need((), "", _PREMISES),
    "aggregation_numbers": _need((), "", _AGGREGATIONS),
    "meter_apps": _need((), "", unavailable("meter_apps", "ESPI has no meter apps")),
})


@dataclass(frozen=True, slots=True)
class ScopeType:
    """A customer-data scope type: its object family, the include fields it treats as true (WG3-01 §6.1/§6.2
    default-true), the start fields that bound its history, and how often its data changes."""

    family: str
    base: frozenset[str]
    history_fields: tuple[str, ...] = ()
    end_fields: tuple[str, ...] = ()
    frequency: str | None = None
    missing: tuple[Unavailable, ...] = ()


_USAGE_WINDOW = (("segment_start",), ("segment_end",))
_STATEMENT_WINDOW = (("statement_date_start",), ("statement_date_end",))
_SECTION_WINDOW = (("start_date", "statement_date_start"), ("end_date", "statement_date_end"))


def _type(family: str, base: Iterable[str], window: tuple[tuple[str, ...], tuple[str, ...]] = ((), ()),
          frequency: str | None = "weekly", *missing: Unavailable) -> ScopeType:
    return ScopeType(family, frozenset(base), window[0], window[1], frequency, tuple(missing))


_NO_AGGREGATION_SCOPE = unavailable("aggregations", "Green Button data holds no aggregations; this scope type "
                                                    "cannot be served")
#: The customer-data scope types (consent §6.1 and direct access §6.2) this mapping knows.
SCOPE_TYPES: Mapping[str, ScopeType] = MappingProxyType({
    "cds_usage": _type("usage", {"include_usage_segments"}, _USAGE_WINDOW, "daily"),
    "cds_query_usage": _type("usage", {"include_usage_segments"}, _USAGE_WINDOW, "daily"),
    "cds_meters": _type("meters", {"include_meter_devices"}),
    "cds_query_meter_devices": _type("meters", {"include_meter_devices"}),
    "cds_service_contracts": _type("contracts", {"include_accounts", "include_service_contracts"}),
    "cds_query_service_contracts": _type("contracts", {"include_accounts", "include_service_contracts"}),
    "cds_query_service_points": _type("service_points", {"include_service_points"}),
    "cds_accounts": _type("accounts", {"include_accounts"}),
    "cds_query_accounts": _type("accounts", {"include_accounts"}),
    "cds_bill_statements": _type("bills", {"include_bill_statements", "include_accounts", "include_account_numbers"},
                                 _STATEMENT_WINDOW, "billingPeriod"),
    "cds_query_bill_statements": _type("bills", {"include_bill_statements"}, _STATEMENT_WINDOW, "billingPeriod"),
    "cds_service_bills": _type("bills", {"include_bill_sections", "include_accounts", "include_account_numbers",
                                         "include_service_contracts", "include_contract_numbers"},
                               _SECTION_WINDOW, "billingPeriod"),
    "cds_query_bill_sections": _type("bills", {"include_bill_sections"}, (("start_date",), ("end_date",)),
                                     "billingPeriod"),
    "cds_query_aggregations": _type("aggregations", (), ((), ()), None, _NO_AGGREGATION_SCOPE),
    "cds_aggregation_consent": _type("aggregations", (), ((), ()), None, _NO_AGGREGATION_SCOPE),
})


@dataclass(frozen=True, slots=True)
class Requirements:
    """What one scope entry needs upstream: the Function Blocks, why each (``reasons``: block → reasons, sorted),
    and what Green Button cannot provide at all."""

    function_blocks: frozenset[int]
    reasons: Mapping[int, tuple[str, ...]] = field(default_factory=dict)
    unavailable: tuple[Unavailable, ...] = ()


def _scope_type(scope_type: str) -> ScopeType:
    try:
        return SCOPE_TYPES[scope_type]
    except KeyError:
        raise ValueError(f"{scope_type!r} is not a customer-data scope type this mapping knows "
                         f"({', '.join(SCOPE_TYPES)})") from None


def requirements(scope_type: str, details: Mapping[str, Any], *,
                 commodities: Iterable[str] | None = None) -> Requirements:
    """The Function Blocks and missing data for one scope type and its effective ``authorization_details`` entry.

    ``details`` is the entry with defaults filled in (absent fields count as not requested, except the scope type's
    default-true include fields and ``include_usage_segment_value_types``, whose absence means every value type).
    ``commodities`` (keys of :data:`COMMODITY_BLOCKS`), when given, are the commodities the custodian scope in
    question meters: the commodity blocks added only so that FB_4 has a metering block (cost only, net or demand
    only, value types null) are limited to them, unless that leaves none. Explicitly requested value types are never
    dropped by it. ``ValueError`` for a scope type that is not a customer-data type.
    """
    kind = _scope_type(scope_type)
    reasons: dict[int, set[str]] = {}
    missing: list[Unavailable] = list(kind.missing)

    def add(need: _Need) -> None:
        for number in need.blocks:
            reasons.setdefault(number, set()).add(need.why)
        missing.extend(item for item in need.missing if item.subject not in {m.subject for m in missing})

    includes = _includes(kind, details)
    for fid, value in includes.items():
        if not value:
            continue
        need = INCLUDE_NEEDS.get(fid)
        add(need if need is not None else _need((), "", unavailable(fid, "no Green Button source is mapped")))
    if includes.get("include_usage_segments"):
        _usage(details, add, None if commodities is None else frozenset(commodities))
    for fid, value in details.items():
        if fid in PRESELECTION_NEEDS and value is not None:
            add(PRESELECTION_NEEDS[fid])

    blocks = set(reasons)
    if kind.family != "accounts" and blocks & set(RETAIL_CUSTOMER_RANGE):
        add(_need(CUSTOMER_JOIN, "join customer data to usage data: ServiceLocation → CustomerAgreement → "
                                 "CustomerAccount"))
    blocks = set(reasons)
    if blocks - set(RETAIL_CUSTOMER_RANGE):
        add(_need(USAGE_BASE, "usage data: Usage Data Common and Connect My Data (Batch/Subscription)"))
    if blocks & set(RETAIL_CUSTOMER_RANGE):
        add(_need(RETAIL_BASE, "retail customer data: Retail Customer Common and Connect My Data"))
    return Requirements(frozenset(reasons), MappingProxyType({n: tuple(sorted(reasons[n])) for n in sorted(reasons)}),
                        tuple(missing))


def _includes(kind: ScopeType, details: Mapping[str, Any]) -> dict[str, bool]:
    """The scope type's default-true include fields, overridden by the entry's boolean include fields."""
    includes = {fid: True for fid in kind.base}
    includes.update({fid: value for fid, value in details.items()
                     if fid.startswith("include_") and isinstance(value, bool)})
    return includes


def _window(kind: ScopeType, details: Mapping[str, Any], fields: tuple[str, ...]) -> list[str]:
    """The window fields of the entry that count: the statement dates only where statements are shared."""
    statements = _includes(kind, details).get("include_bill_statements", False)
    return [fid for fid in fields if fid in details and (statements or not fid.startswith("statement_date"))]


def _usage(details: Mapping[str, Any], add, metered: frozenset[str] | None = None) -> None:
    """Value types → interval blocks, narrowed by a ``service_types`` preselection (see the module docstring)."""
    value_types = details.get("include_usage_segment_value_types", list(VALUE_TYPE_BLOCKS))
    allowed = set(details.get("service_types") or COMMODITY_BLOCKS)
    commodities: set[str] = set()
    metering: set[int] = set()
    for choice in value_types or ():
        entry = VALUE_TYPE_BLOCKS.get(choice)
        if entry is None:
            add(_need((), "", unavailable(choice, "a value type this mapping does not know")))
            continue
        blocks, commodity, why = entry
        if commodity is not None and commodity not in allowed:
            continue
        if commodity is not None:
            commodities.add(commodity)
        metering |= blocks
        add(_need(blocks, why))
    if not metering & _METERING:
        # FB_4 goes with one of FB_5/10/11/29 (GBA), and costs or value-less segments need a metered series.
        fallback = (commodities or allowed) & set(COMMODITY_BLOCKS)
        if metered is not None and fallback & metered:
            fallback &= metered  # the custodian scope meters only these: do not ask it for the others
        for commodity in sorted(fallback):
            add(_need({COMMODITY_BLOCKS[commodity]}, f"{commodity} interval series that the requested values "
                                                     "ride on (FB_4 needs a metering block)"))


def required_function_blocks(scope_type: str, details: Mapping[str, Any], *,
                             commodities: Iterable[str] | None = None) -> frozenset[int]:
    """The Function Block numbers :func:`requirements` gives."""
    return requirements(scope_type, details, commodities=commodities).function_blocks


def history_fields(scope_type: str, details: Mapping[str, Any]) -> tuple[str, ...]:
    """The start fields of ``details`` that bound the history this entry reaches back to (those
    :func:`scope_terms` turns into ``HistoryLength``): ``segment_start``; ``start_date``; ``statement_date_start``
    only where statements are shared."""
    kind = _scope_type(scope_type)
    return tuple(_window(kind, details, kind.history_fields))


_DATE_FIELDS = frozenset({"statement_date_start", "statement_date_end", "start_date", "end_date"})


def _moment(value: Any, field_id: str, *, now: datetime, tz: ZoneInfo) -> datetime | None:
    """A relative or absolute date(time) → an aware datetime (a date is its start of day in ``tz``); None for
    ``"infinite"``."""
    resolved = resolve_date_value(value, datetime_format=field_id not in _DATE_FIELDS,
                                  subtract=field_id in START_FIELDS, tz=tz, now=now)
    if isinstance(resolved, datetime):
        return resolved
    if isinstance(resolved, date):
        return datetime.combine(resolved, time(0), tzinfo=tz)
    return None


def _history(start: datetime, now: datetime, units: HistoryUnits) -> int:
    if start >= now:
        return 0
    if units == "seconds":
        return math.ceil((now - start).total_seconds())
    start, now = start.astimezone(now.tzinfo), now
    months = (now.year - start.year) * 12 + (now.month - start.month)
    if (now.day, now.timetz().replace(tzinfo=None)) > (start.day, start.timetz().replace(tzinfo=None)):
        months += 1  # going back whole months from now must reach at least start
    return max(months, 0)


def scope_terms(scope_type: str, details: Mapping[str, Any], *, now: datetime, history_units: HistoryUnits,
                timezone: str = "UTC") -> Scope:
    """The value terms for one scope entry, as a :class:`espi.scope.Scope` without Function Blocks.

    ``now`` is the aware reference moment; ``history_units`` the unit of this custodian's ``HistoryLength``
    (months or seconds: both occur, espi.md §5.1); ``timezone`` places relative values and plain dates (the
    server's ``cds_timezone``). Effective entries carry absolute values already.
    """
    kind = _scope_type(scope_type)
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if history_units not in ("months", "seconds"):
        raise ValueError(f"history_units must be 'months' or 'seconds', not {history_units!r}")
    tz = load_timezone(timezone)
    history = None
    starts = [_moment(details[fid], fid, now=now, tz=tz) for fid in _window(kind, details, kind.history_fields)]
    if starts and all(start is not None for start in starts):  # any "infinite" start asks for all history
        history = _history(min(starts), now, history_units)
    # Updates are needed while the data keeps changing: until sync_until, or (scopes without it, such as the consent
    # bill scopes) while the window's end is open or ahead.
    ongoing = False
    if "sync_until" in details:
        until = _moment(details["sync_until"], "sync_until", now=now, tz=tz)
        ongoing = until is None or until > now
    else:
        for fid in _window(kind, details, kind.end_fields):
            end = _moment(details[fid], fid, now=now, tz=tz)
            ongoing = ongoing or end is None or end > now
    frequency = kind.frequency if ongoing else None
    return Scope(history_length=history, subscription_frequency=frequency)


def legacy_scope(entries: Iterable[tuple[str, Mapping[str, Any]]], *, now: datetime, history_units: HistoryUnits,
                 timezone: str = "UTC") -> Scope:
    """One legacy scope for several (scope type, effective entry) pairs, e.g. every entry of a Grant: the union of
    the Function Blocks, the longest ``HistoryLength`` (none if any entry wants all history) and the most frequent
    ``SubscriptionFrequency``. Format it with :func:`espi.scope.format_scope`."""
    blocks: set[int] = set()
    histories: list[int | None] = []
    frequencies: list[str] = []
    for scope_type, details in entries:
        blocks |= required_function_blocks(scope_type, details)
        terms = scope_terms(scope_type, details, now=now, history_units=history_units, timezone=timezone)
        kind = _scope_type(scope_type)
        if _window(kind, details, kind.history_fields):
            histories.append(terms.history_length)  # None: all history
        if terms.subscription_frequency is not None:
            frequencies.append(str(terms.subscription_frequency))
    history = max(histories) if histories and None not in histories else None  # type: ignore[type-var]
    frequency = min(frequencies, key=NAMED_FREQUENCIES.index) if frequencies else None
    return Scope(function_blocks=tuple(sorted(blocks)), history_length=history, subscription_frequency=frequency)
