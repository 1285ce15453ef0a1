"""One legacy Green Button data custodian's scope strings as CDS structures, and back.

A custodian publishes the scope strings a Third Party may ask for in ``ApplicationInformation.scope`` (espi.md §6.1;
one or more elements, each a "space separated list"), written in GBA's ESPI scope grammar (espi.md §5.1,
green-button.github.io/espi/scope; parsed by :mod:`espi.scope`)::

    Scope      = [ FBTerms ], [ ValueTerms ], [ ResourceTerms ] ;
    FBTerms    = "FB=", { FBTerm, "_" }, FBTerm, ";" ;
    ValueTerms = { ( "IntervalDuration=" … ) | ( "BlockDuration=" … ) | ( "HistoryLength=", nonNegativeNumber )
                 | ( "SubscriptionFrequency=" … ), ";" } ;

This module turns them into what greenbridge offers for that custodian and maps requests and consents across:

* :func:`offered_scopes` (and :func:`custodian_offer`, which also says why strings were left out): the CDS Scope
  Description objects (CDS-WG1-02 §3.4, Authorization Details Fields §3.8–3.10; CDS-WG3-01 §6 scopes, §7 fields)
  this custodian can serve. Every result passes :func:`cds.scopes.problems`.
* :func:`narrowest_scope`: a CDS authorization request (scopes + effective ``authorization_details``) → the offered
  scope string, verbatim, that covers it with the fewest Function Blocks, or :class:`CustodianCannotProvide`
  (OAuth ``invalid_authorization_details``) naming what is missing.
* :func:`grant_from_authorization`: an existing ESPI Authorization (espi.md §6.2, read with the client token) →
  the data of a server-created CDS Grant (WG1-02 §8) with ``authorization_details`` derived from its scope string;
  :func:`persist_server_created_grant` stores it with :func:`cds.grants.create_grant`.

What a CDS scope needs from the custodian is :mod:`bridge.legacy_scope` (docs/mapping.md §10); the decisions made here
are in docs/mapping.md §11 "Custodian scope strings ↔ CDS". In short:

* **Ids.** One Scope Description per scope type and custodian, ``{type}_{custodian}`` (``cds_usage_sandbox``).
  When the custodian's strings give the same type different limits that neither contains (e.g. cost with 13 months
  against no cost with 24 months), each further capability profile gets ``{type}_{custodian}.{digest}``, the digest
  being 6 hex digits of SHA-256 over the profile (value types, include fields, filters, history), so an id stays
  put while the custodian's capabilities do (WG1-02 §3.2: same ``type``, different ``id``). Client Admin and Grant
  Admin are the gateway's shared ``cds_client_admin`` and ``cds_grant_admin_1``: every custodian scope names that
  Grant Admin scope, so server-created grants are reachable through the Grant Admin flow.
* **Implied blocks.** A string with any usage-data block (FB_2, 4–12, 15–17, 27–29) also counts as FB_1 and FB_3,
  one with any retail-customer data block (FB_52, 54–62) as FB_51 and FB_53: they are mandatory for a certified
  Connect My Data custodian, and real strings leave them out (``FB=4_5_15`` in GBA's token-response contract).
* **Gating.** A scope type is offered when one string covers its base access (:data:`bridge.legacy_scope.SCOPE_TYPES`
  default-true fields, plus at least one usage value type; direct access also needs one preselection field it can
  match). Value-type choices are those whose blocks that string has. Optional include fields it cannot fill are not
  offered; the ones WG3-01 §6.1 requires a scope to offer stay, default false, saying which blocks are missing.
* **History.** ``HistoryLength`` bounds ``segment_start``, ``start_date`` and ``statement_date_start`` (maximum and
  default): months (``P13M``) or seconds (whole days, ``P395D``), read as months below 1000 unless the custodian's
  unit is configured (espi.md §5.1: both occur); absent → :data:`DEFAULT_HISTORY` (13 months, the Green Button
  data minimum, FB_30) unless configured. ``IntervalDuration``/``BlockDuration`` and ``SubscriptionFrequency`` are
  hints in the descriptions (no CDS field selects them) and data in :class:`CustodianOffer` for the sync workers.
* **Narrowest.** Fewest written Function Blocks, then the shortest sufficient history, then no bulk (``BR=``) term,
  then the custodian's order. The string is returned verbatim (trimmed): custodians compare scopes as strings.
* **Authorizations.** status 1 → ``active`` (``expired`` past ``authorizedPeriod``'s end, ``future`` before its
  start), 0 Revoked and 2 Denied → ``revoked``, anything else → ``suspended``. ``authorizedPeriod`` gives
  ``not_before``/``not_after``/``expires`` and ``sync_until``; ``publishedPeriod`` and ``HistoryLength`` the usage
  and bill window (the later start wins). ``expires_at`` is the *access token's* expiry (espi.xsd), kept as upstream
  data, never the Grant's.

Plain functions over plain data; nothing here reads configuration, the clock or the network.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from bridge.legacy_scope import (
    COMMODITY_BLOCKS,
    CUSTOMER_JOIN,
    PRESELECTION_NEEDS,
    SCOPE_TYPES,
    history_fields,
    requirements,
)
from cds import authorization_details as rar
from cds.authorization_details import INFINITE, START_FIELDS, AuthorizationDetailsError, load_timezone
from cds.scopes import (
    CLIENT_ADMIN_ID,
    GRANT_ADMIN_ID,
    AuthorizationDetailsField,
    ScopeDescription,
    build_scope_descriptions,
)
from espi.function_blocks import function_block
from espi.scope import HISTORY_MONTHS_BELOW, LEGACY_SCOPES, Scope, ScopeError, parse_scope

__all__ = [
    "AUTHORIZATION_STATUS",
    "DEFAULT_HISTORY",
    "REQUIRED_INCLUDES",
    "AuthorizationNotMigratable",
    "CustodianCannotProvide",
    "CustodianOffer",
    "CustodianScope",
    "DeliveryPlan",
    "History",
    "Omission",
    "Skipped",
    "custodian_offer",
    "custodian_scope_ids",
    "grant_from_authorization",
    "merge_offers",
    "narrowest_scope",
    "offered_scopes",
    "persist_server_created_grant",
    "plan_delivery",
    "read_custodian_scopes",
]

#: History assumed for a scope string without ``HistoryLength``: 13 months, the least a Green Button portal must
#: offer (FB_30) and the value of every CMD example (espi.md §3.9, §5.1).
DEFAULT_HISTORY = "P13M"
#: Longer histories are read as 100 years (a typo or a unit mix-up, never a promise worth publishing).
MAX_HISTORY_MONTHS = 1200
MAX_HISTORY_DAYS = 36524

#: Blocks that carry usage data / retail-customer data; a string with one of them implies the mandatory base blocks.
USAGE_DATA_BLOCKS = frozenset({2, *range(4, 13), 15, 16, 17, 27, 28, 29})
RETAIL_DATA_BLOCKS = frozenset({52, *range(54, 63)})
IMPLIED_USAGE_BLOCKS = frozenset({1, 3})
IMPLIED_RETAIL_BLOCKS = frozenset({51, 53})

#: Include fields WG3-01 §6.1 requires each consent scope type to offer (with the selection choices the gateway
#: offers): kept even where the custodian cannot fill them, defaulting to false.
REQUIRED_INCLUDES: Mapping[str, frozenset[str]] = {
    "cds_usage": frozenset({"include_meter_devices", "include_meter_numbers", "include_accounts",
                            "include_account_numbers", "include_service_contracts", "include_contract_numbers",
                            "include_service_points"}),
    "cds_meters": frozenset({"include_meter_numbers"}),
    "cds_service_contracts": frozenset({"include_contract_numbers"}),
    "cds_accounts": frozenset({"include_account_numbers"}),
}

VALUE_TYPES = "include_usage_segment_value_types"
_DATE_FIELDS = frozenset({"statement_date_start", "statement_date_end", "start_date", "end_date"})
_END_FIELDS = frozenset({"segment_end", "end_date", "statement_date_end"})
#: ESPI AuthorizationStatus (espi.xsd; espi.md §6.4) → CDS Grant status (WG1-02 §8.2).
AUTHORIZATION_STATUS = {0: "revoked", 1: "active", 2: "revoked"}
#: ESPI TimeType values below this (2001-01-01) are lifetimes in seconds, not instants (cmdtest: expires_at 86400).
_EPOCH_PLAUSIBLE = 978_307_200

_LEGACY_ALTERNATIVES = "|".join(re.escape(name) for name in LEGACY_SCOPES)
#: Where one scope ends and the next begins in a list (the rule of espi.scope.parse_scopes).
_SPLIT = re.compile(rf"[\s,]+(?=FB\s*=|(?:{_LEGACY_ALTERNATIVES})(?:$|[\s;,]))", re.IGNORECASE)
_CUSTODIAN_ID = re.compile(r"[A-Za-z0-9_-]+")


class CustodianCannotProvide(AuthorizationDetailsError):
    """The custodian offers no scope string that covers a CDS request: OAuth ``invalid_authorization_details``.

    ``missing_blocks`` are the Function Blocks that no single offered string adds to it (empty when only history is
    short); ``field`` the window field that reaches back too far, if that is the problem.
    """

    def __init__(self, description: str, *, missing_blocks: Iterable[int] = (), field: str | None = None):
        super().__init__(description)
        self.missing_blocks = frozenset(missing_blocks)
        self.field = field


class AuthorizationNotMigratable(ValueError):
    """An ESPI Authorization that does not become a CDS Grant: administrative or bulk (client token) ones, scopes
    that cannot be read, and scopes that cover none of the CDS scopes the custodian's descriptions offer."""


# --------------------------------------------------------------------------------------------------------------
# Reading the custodian's scope strings
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class History:
    """How far back one scope string reaches: relative maxima for datetime and date fields, words, and days (for
    ordering)."""

    datetime_duration: str
    date_duration: str
    text: str
    days: float


@dataclass(frozen=True, slots=True)
class CustodianScope:
    """One usable scope string of the custodian: ``text`` verbatim (trimmed), its value, its place in the list,
    its Function Blocks with the implied ones (``blocks``) and its history."""

    text: str
    scope: Scope
    position: int
    blocks: frozenset[int]
    history: History

    @property
    def commodities(self) -> frozenset[str]:
        """The commodities it meters (FB_5 electric, FB_10 gas, FB_11 water)."""
        return frozenset(name for name, number in COMMODITY_BLOCKS.items() if number in self.blocks)


@dataclass(frozen=True, slots=True)
class Skipped:
    """A scope string (or piece of one) that serves no CDS scope, and why."""

    text: str
    reason: str


def _days_text(days: int) -> str:
    return "1 day" if days == 1 else f"{days} days"


def _seconds_text(seconds: int) -> str:
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and seconds % size == 0:
            count = seconds // size
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return f"{seconds} second{'' if seconds == 1 else 's'}"


def _history(scope: Scope, units: str, default: str) -> History:
    value = scope.history_length
    if value is None:
        duration = rar.parse_duration(default, date_only=True)
        estimate = duration.calendar_months() * 30.436875 + duration.days
        return History(default, default, f"not stated ({default} assumed)", estimate)
    as_months = units == "months" or (units == "heuristic" and value < HISTORY_MONTHS_BELOW)
    if as_months:
        months = min(value, MAX_HISTORY_MONTHS)
        text = f"{value} month{'' if value == 1 else 's'}"
        return History(f"P{months}M", f"P{months}M", text, months * 30.436875)
    days = min(value // 86400, MAX_HISTORY_DAYS)
    text = f"{value} seconds ({_days_text(days)})"
    stamp = f"P{days}D" if days or value == 0 else f"PT{value}S"
    return History(stamp, f"P{days}D", text, value / 86400 if days < MAX_HISTORY_DAYS else float(days))


def _effective_blocks(scope: Scope) -> frozenset[int]:
    blocks = set(scope.function_blocks)
    if blocks & USAGE_DATA_BLOCKS:
        blocks |= IMPLIED_USAGE_BLOCKS
    if blocks & RETAIL_DATA_BLOCKS:
        blocks |= IMPLIED_RETAIL_BLOCKS
    return frozenset(blocks)


def _pieces(text: str) -> list[str]:
    return [piece for piece in (part.strip().strip(",").strip() for part in _SPLIT.split(text.strip())) if piece]


def read_custodian_scopes(scope_strings: Iterable[str], *, history_units: str = "heuristic",
                          default_history: str = DEFAULT_HISTORY) -> tuple[list[CustodianScope], list[Skipped]]:
    """The custodian's scope strings (``ApplicationInformation.scope`` elements; each may list several scopes) as
    :class:`CustodianScope` values in their order, and the pieces left out: malformed ones (:mod:`espi.scope`'s
    message), literal administrative scopes, scopes without Function Blocks, repeats. A bad piece never spoils the
    others. ``history_units``: ``months``, ``seconds`` or ``heuristic`` (months below 1000)."""
    if history_units not in ("months", "seconds", "heuristic"):
        raise ValueError(f"history_units must be 'months', 'seconds' or 'heuristic', not {history_units!r}")
    rar.parse_duration(default_history, date_only=True)
    usable: list[CustodianScope] = []
    skipped: list[Skipped] = []
    seen: dict[Scope, str] = {}
    if isinstance(scope_strings, str):
        scope_strings = [scope_strings]
    for text in scope_strings:
        if not isinstance(text, str):
            skipped.append(Skipped(repr(text), f"a scope must be text, not {type(text).__name__}"))
            continue
        for piece in _pieces(text):
            try:
                scope = parse_scope(piece)
            except ScopeError as error:
                skipped.append(Skipped(piece, f"malformed: {error}"))
                continue
            if scope.is_legacy:
                skipped.append(Skipped(piece, "an administrative scope literal; it grants no customer data"))
            elif not scope.function_blocks:
                skipped.append(Skipped(piece, "no Function Blocks (FB=): it grants no data"))
            elif scope in seen:
                skipped.append(Skipped(piece, f"the same scope as {seen[scope]!r}"))
            else:
                seen[scope] = piece
                usable.append(CustodianScope(piece, scope, len(usable), _effective_blocks(scope),
                                             _history(scope, history_units, default_history)))
    return usable, skipped


# --------------------------------------------------------------------------------------------------------------
# Capability profiles: what one scope string gives one CDS scope type
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Profile:
    scope_type: str
    choices: tuple[str, ...]
    includes: frozenset[str]
    filters: frozenset[str]
    history: History | None  # None: the type has no window field, so history is no limit of it
    sources: tuple[CustodianScope, ...]

    @property
    def key(self) -> tuple:
        history = None if self.history is None else (self.history.datetime_duration, self.history.date_duration)
        return (self.choices, tuple(sorted(self.includes)), tuple(sorted(self.filters)), history)

    @property
    def size(self) -> int:
        return len(self.choices) + len(self.includes) + len(self.filters)

    @property
    def reach(self) -> float:
        return 0.0 if self.history is None else self.history.days

    def covers(self, other: _Profile) -> bool:
        return (set(self.choices) >= set(other.choices) and self.includes >= other.includes
                and self.filters >= other.filters and self.reach >= other.reach)

    def digest(self) -> str:
        return hashlib.sha256(repr(self.key).encode()).hexdigest()[:6]


def _json(description: Any) -> dict:
    return description.to_json() if hasattr(description, "to_json") else dict(description)


def _fits(scope_type: str, details: Mapping[str, Any], blocks: frozenset[int], metered: frozenset[str]) -> bool:
    return requirements(scope_type, details, commodities=metered).function_blocks <= blocks


def _is_direct(description: Mapping) -> bool:
    return not description.get("response_types_supported")


def _profile(scope_type: str, description: Any, source: CustodianScope) -> _Profile | None:
    """What ``source`` gives a scope of ``scope_type`` offered as ``description`` (its fields are the candidates);
    None when it does not cover the base access."""
    desc = _json(description)
    blocks, metered = source.blocks, source.commodities
    kind = SCOPE_TYPES[scope_type]
    fields = {fd["id"]: fd for fd in desc.get("authorization_details_fields_supported") or ()}
    base: dict[str, Any] = {}
    choices: tuple[str, ...] = ()
    if VALUE_TYPES in fields:
        choices = tuple(choice["id"] for choice in fields[VALUE_TYPES].get("choices") or ()
                        if _fits(scope_type, {VALUE_TYPES: [choice["id"]]}, blocks, metered))
        if not choices:
            return None
        base = {VALUE_TYPES: list(choices)}
    if not _fits(scope_type, base, blocks, metered):
        return None
    includes = frozenset(fid for fid in fields if fid.startswith("include_") and fid != VALUE_TYPES
                         and fid not in kind.base and _fits(scope_type, {**base, fid: True}, blocks, metered))
    filters: frozenset[str] = frozenset()
    if _is_direct(desc):
        usable = set()
        for fid in fields:
            if fid not in PRESELECTION_NEEDS:
                continue
            need = requirements(scope_type, {**base, fid: ["?"]}, commodities=metered)
            if need.function_blocks <= blocks and not any(item.subject == fid for item in need.unavailable):
                usable.add(fid)
        if not usable:
            return None  # direct access must be bounded by a preselection this custodian can match
        filters = frozenset(usable)
    windowed = any(fid in START_FIELDS for fid in fields)
    return _Profile(scope_type, choices, includes, filters, source.history if windowed else None, (source,))


def _missing_text(blocks: Iterable[int]) -> str:
    names = []
    for number in sorted(blocks):
        entry = function_block(number)
        names.append(f"FB_{number} ({entry.name})" if entry else f"FB_{number}")
    return ", ".join(names)


def _hints(sources: Sequence[CustodianScope]) -> tuple[str, str]:
    """(interval sentence, cadence sentence) for the strings that serve a scope."""
    intervals = sorted({d for s in sources for d in s.scope.interval_durations if isinstance(d, int)})
    named_intervals = sorted({d for s in sources for d in s.scope.interval_durations if isinstance(d, str)})
    blocks = list(dict.fromkeys(str(d) if isinstance(d, str) else _seconds_text(d)
                                for s in sources for d in s.scope.block_durations))
    shown = [_seconds_text(d) for d in intervals] + named_intervals
    if shown:
        interval = f"Interval data comes in intervals of {' or '.join(shown)} (IntervalDuration)"
    else:
        interval = "The custodian states no IntervalDuration: intervals are as its meters record them"
    if blocks:
        interval += f", delivered in {' or '.join(blocks)} blocks (BlockDuration)"
    frequencies = list(dict.fromkeys(str(s.scope.subscription_frequency) for s in sources
                                     if s.scope.subscription_frequency is not None))
    if frequencies:
        cadence = f"The custodian sends updates {' or '.join(frequencies)} (SubscriptionFrequency)"
    else:
        cadence = "The custodian states no SubscriptionFrequency: data is refreshed as it notifies new data"
    return interval + ".", cadence + "."


def _sentence(text: str, addition: str) -> str:
    return f"{text.rstrip()} {addition}".strip()


def _describe(template: ScopeDescription, profile: _Profile, scope_id: str, label: str) -> ScopeDescription:
    """``template`` (a gateway-wide description of the type, built with the profile's history) as the custodian's
    scope ``scope_id``."""
    kind = SCOPE_TYPES[profile.scope_type]
    direct = not template.is_consent
    source = profile.sources[0]
    interval, cadence = _hints(profile.sources)
    history = "" if profile.history is None else f"History reaches back {profile.history.text} (HistoryLength)."
    base = {VALUE_TYPES: list(profile.choices)} if profile.choices else {}
    fields: list[AuthorizationDetailsField] = []
    for fd in template.authorization_details_fields_supported:
        fd = replace(fd, for_types=(scope_id,))
        fid = fd.id
        if fid == VALUE_TYPES:
            keep = tuple(c for c in fd.choices or () if c.id in profile.choices)
            fd = replace(fd, choices=keep, default=tuple(c.id for c in keep),
                         description=_sentence(fd.description, interval))
        elif fid.startswith("include_") and fid not in kind.base:
            if fid not in profile.includes:
                if fid not in REQUIRED_INCLUDES.get(profile.scope_type, ()):
                    continue
                need = requirements(profile.scope_type, {**base, fid: True}, commodities=source.commodities)
                missing = _missing_text(need.function_blocks - source.blocks)
                fd = replace(fd, default=False, description=_sentence(
                    fd.description, f"{label} does not provide it (it needs {missing}), so true is refused."))
        elif direct and fid in PRESELECTION_NEEDS and fid not in profile.filters:
            continue
        elif fid == "sync_until":
            fd = replace(fd, description=_sentence(fd.description, cadence))
        elif fid in START_FIELDS:
            fd = replace(fd, description=_sentence(fd.description, history))
        fields.append(fd)
    usage = "" if not profile.choices else interval  # interval hints concern usage segments only
    about = " ".join(part for part in (f"From {label}.", history, usage, cadence) if part)
    page = template.documentation.rsplit("#", 1)[0]
    return replace(
        template, id=scope_id, name=f"{template.name} ({label})",
        description=_sentence(template.description, about),
        documentation=f"{page}#{scope_id}", authorization_details_types_supported=(scope_id,),
        authorization_details_fields_supported=tuple(fields),
    )


# --------------------------------------------------------------------------------------------------------------
# The offer
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CustodianOffer:
    """Everything :func:`custodian_offer` worked out for one custodian.

    ``descriptions``: Client Admin, Grant Admin, then the custodian's scopes (what :func:`offered_scopes` returns).
    ``sources``: scope id → the verbatim strings that can serve it. ``scopes``: every usable string (in order);
    ``skipped``: pieces that could not be used at all; ``unused``: usable strings that serve no CDS scope (admin
    scopes such as ``FB=34_35``). ``cadence``: the SubscriptionFrequency values stated, for the sync workers.
    """

    custodian_id: str
    descriptions: dict[str, ScopeDescription]
    sources: Mapping[str, tuple[str, ...]]
    scopes: tuple[CustodianScope, ...]
    skipped: tuple[Skipped, ...]
    unused: tuple[Skipped, ...]
    cadence: tuple[str, ...]


def _check_custodian_id(custodian_id: str) -> None:
    if not isinstance(custodian_id, str) or not _CUSTODIAN_ID.fullmatch(custodian_id):
        raise ValueError(f"custodian id {custodian_id!r} must be ASCII letters, digits, '-' and '_'")
    if custodian_id.isdigit():
        raise ValueError(f"custodian id {custodian_id!r} would collide with the gateway's own scope ids "
                         "(cds_usage_1 …); use a name")


def custodian_offer(
    custodian_id: str,
    scope_strings: Iterable[str],
    *,
    documentation_base: str,
    timezone: str,
    custodian_name: str | None = None,
    coverages: Iterable[str] = (),
    history_units: str = "heuristic",
    default_history: str = DEFAULT_HISTORY,
    direct_access: bool = True,
    sync_until_default: str = "P1Y",
    currency: str = "USD",
    gas_units: str = "therm",
    water_units: str = "gal",
) -> CustodianOffer:
    """:func:`offered_scopes` with the working shown (see :class:`CustodianOffer`)."""
    _check_custodian_id(custodian_id)
    label = custodian_name or custodian_id
    usable, skipped = read_custodian_scopes(scope_strings, history_units=history_units,
                                            default_history=default_history)
    coverage_ids = tuple(coverages)
    templates: dict[tuple[str, str], dict[str, ScopeDescription]] = {}

    def catalogue(history: History | None) -> dict[str, ScopeDescription]:
        history = history or History(default_history, default_history, "", 0.0)
        key = (history.datetime_duration, history.date_duration)
        if key not in templates:
            templates[key] = build_scope_descriptions(
                documentation_base=documentation_base, timezone=timezone, segment_history=history.datetime_duration,
                bill_history=history.date_duration, sync_until_default=sync_until_default, coverages=coverage_ids,
                currency=currency, gas_units=gas_units, water_units=water_units)
        return templates[key]

    generic = catalogue(None)
    descriptions: dict[str, ScopeDescription] = {CLIENT_ADMIN_ID: generic[CLIENT_ADMIN_ID],
                                                 GRANT_ADMIN_ID: generic[GRANT_ADMIN_ID]}
    sources: dict[str, tuple[str, ...]] = {}
    serving: set[int] = set()
    for template in generic.values():
        scope_type = template.type
        if scope_type not in SCOPE_TYPES or (not direct_access and not template.is_consent):
            continue
        found: dict[tuple, _Profile] = {}
        for source in usable:
            profile = _profile(scope_type, template, source)
            if profile is None:
                continue
            if profile.key in found:
                earlier = found[profile.key]
                profile = replace(earlier, sources=(*earlier.sources, source))
            found[profile.key] = profile
        ranked = sorted(found.values(), key=lambda p: (-p.size, -p.reach, p.sources[0].position))
        kept: list[_Profile] = []
        for profile in ranked:
            owner = next((k for k in kept if k.covers(profile)), None)
            if owner is None:
                kept.append(profile)
            else:
                kept[kept.index(owner)] = replace(owner, sources=(*owner.sources, *profile.sources))
        for rank, profile in enumerate(kept):
            scope_id = f"{scope_type}_{custodian_id}" + ("" if rank == 0 else f".{profile.digest()}")
            built = catalogue(profile.history)[template.id]
            descriptions[scope_id] = _describe(built, profile, scope_id, label)
            sources[scope_id] = tuple(dict.fromkeys(source.text for source in profile.sources))
            serving.update(source.position for source in profile.sources)
    unused = tuple(Skipped(s.text, f"serves no CDS scope (Function Blocks {_missing_text(s.scope.function_blocks)})")
                   for s in usable if s.position not in serving)
    cadence = tuple(dict.fromkeys(str(s.scope.subscription_frequency) for s in usable
                                  if s.scope.subscription_frequency is not None))
    return CustodianOffer(custodian_id, descriptions, sources, tuple(usable), tuple(skipped), unused, cadence)


def offered_scopes(custodian_id: str, scope_strings: Iterable[str], *, documentation_base: str, timezone: str,
                   **options: Any) -> dict[str, ScopeDescription]:
    """The CDS Scope Descriptions greenbridge offers for this custodian, keyed by id: ``cds_client_admin``,
    ``cds_grant_admin_1`` and one ``{type}_{custodian}`` per customer-data scope type some string can serve (more,
    with a ``.{digest}`` suffix, where strings give a type limits that neither contains). ``options`` are those of
    :func:`custodian_offer` (``custodian_name``, ``coverages``, ``history_units``, ``default_history``,
    ``direct_access``, ``sync_until_default``, ``currency``, ``gas_units``, ``water_units``)."""
    return custodian_offer(custodian_id, scope_strings, documentation_base=documentation_base, timezone=timezone,
                           **options).descriptions


def merge_offers(offers: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Several custodians' descriptions as one ``cds_scope_descriptions`` map (e.g. a Client's metadata when it
    reaches several custodians). The shared admin scopes appear once; ``ValueError`` if two offers describe one id
    differently."""
    merged: dict[str, Any] = {}
    for offer in offers:
        for scope_id, description in offer.items():
            if scope_id in merged and _json(merged[scope_id]) != _json(description):
                raise ValueError(f"scope {scope_id!r} is described differently by two custodians")
            merged.setdefault(scope_id, description)
    return merged


def custodian_scope_ids(descriptions: Mapping[str, Any], custodian_id: str) -> list[str]:
    """The ids of ``descriptions`` that belong to this custodian (``{type}_{custodian}`` and its ``.{digest}``
    variants), in map order."""
    found = []
    for scope_id, description in descriptions.items():
        prefix = f"{_json(description).get('type')}_{custodian_id}"
        if scope_id == prefix or (scope_id.startswith(prefix + ".") and "." not in scope_id[len(prefix) + 1:]):
            found.append(scope_id)
    return found


# --------------------------------------------------------------------------------------------------------------
# CDS request → the narrowest custodian scope string
# --------------------------------------------------------------------------------------------------------------


def _resolve(value: Any, field_id: str, *, tz, now: datetime) -> date | datetime | str:
    return rar.resolve_date_value(value, datetime_format=field_id not in _DATE_FIELDS,
                                  subtract=field_id in START_FIELDS, tz=tz, now=now)


def _earliest(source_history: History, field_id: str, *, tz, now: datetime) -> date | datetime:
    duration = source_history.date_duration if field_id in _DATE_FIELDS else source_history.datetime_duration
    return _resolve(duration, field_id, tz=tz, now=now)  # type: ignore[return-value]


def _render(value: date | datetime | str) -> str:
    if isinstance(value, datetime):
        return rar.format_datetime(value.astimezone(UTC))
    if isinstance(value, date):
        return rar.format_date(value)
    return value


def _older_than(value: Any, fid: str, earliest: date | datetime, *, tz, now: datetime) -> bool:
    """Whether a window start reaches further back than ``earliest``, compared at the precision the value is
    expressed in: a start written in whole seconds is not older than an earliest instant within that second (the
    request's own defaults are resolved to whole seconds; the history limit keeps the clock's microseconds)."""
    if value == INFINITE:
        return True
    resolved = _resolve(value, fid, tz=tz, now=now)
    if isinstance(resolved, datetime) and isinstance(earliest, datetime) and not resolved.microsecond:
        earliest = earliest.replace(microsecond=0)
    return resolved < earliest


def _too_old(source: CustodianScope, entries: Sequence[tuple[str, str, Mapping[str, Any]]], *, tz,
             now: datetime) -> tuple[str, str, Any, Any] | None:
    """(scope id, field, value, earliest) of the first window field older than ``source``'s history, or None."""
    for scope_id, scope_type, details in entries:
        for fid in history_fields(scope_type, details):
            earliest = _earliest(source.history, fid, tz=tz, now=now)
            value = details[fid]
            if _older_than(value, fid, earliest, tz=tz, now=now):
                return scope_id, fid, value, earliest
    return None


def _needs(entries: Sequence[tuple[str, str, Mapping[str, Any]]],
           metered: frozenset[str] | None) -> dict[int, list[str]]:
    """Block → "scope id: reason" for everything the entries need."""
    needs: dict[int, list[str]] = {}
    for scope_id, scope_type, details in entries:
        for number, whys in requirements(scope_type, details, commodities=metered).reasons.items():
            needs.setdefault(number, []).extend(f"{scope_id}: {why}" for why in whys)
    return needs


#: Blocks that come along with others (the base blocks, and the customer-data join of bridge.legacy_scope): named
#: after the blocks that bring them in.
_BROUGHT_ALONG = IMPLIED_USAGE_BLOCKS | IMPLIED_RETAIL_BLOCKS | CUSTOMER_JOIN


def _blocks_text(numbers: Iterable[int], needs: Mapping[int, list[str]]) -> str:
    """The missing blocks with what needs each; blocks that only come along are listed after the others."""
    numbers = frozenset(numbers)
    primary = numbers - _BROUGHT_ALONG or numbers - IMPLIED_USAGE_BLOCKS - IMPLIED_RETAIL_BLOCKS or numbers
    parts = []
    for number in sorted(primary):
        why = needs.get(number, [])
        parts.append(f"{_missing_text([number])}, needed for {why[0]}" if why else _missing_text([number]))
    text = "; ".join(parts)
    if numbers - primary:
        text += f" (and {_missing_text(numbers - primary)}, which come with it)"
    return text


def _request_entries(request_scopes: Iterable[str], effective_details: Sequence[Mapping[str, Any]],
                     descriptions: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    descs = {scope_id: _json(description) for scope_id, description in descriptions.items()}
    entries = []
    for scope_id in dict.fromkeys(request_scopes):
        desc = descs.get(scope_id)
        if desc is None or desc.get("type") not in SCOPE_TYPES:
            continue  # openid, the admin scopes …: nothing the custodian has to provide
        types = set(desc.get("authorization_details_types_supported") or ())
        entry = next((e for e in effective_details if isinstance(e, Mapping) and e.get("type") in types), {})
        entries.append((scope_id, desc["type"], {k: v for k, v in entry.items() if k != "type"}))
    return entries


def narrowest_scope(
    request_scopes: Iterable[str],
    effective_details: Sequence[Mapping[str, Any]],
    offered: Iterable[str],
    descriptions: Mapping[str, Any],
    *,
    now: datetime,
    timezone: str = "UTC",
    history_units: str = "heuristic",
    default_history: str = DEFAULT_HISTORY,
) -> str:
    """The custodian scope string to send upstream for a CDS request, verbatim as the custodian wrote it.

    ``request_scopes``: the CDS scope ids requested (others than this custodian's customer-data scopes are
    ignored); ``effective_details``: :func:`cds.authorization_details.validate_authorization_details` ``.effective``
    (defaults filled, dates absolute); ``offered``: the custodian's scope strings; ``descriptions``: its Scope
    Descriptions; ``now``: the reference moment of the request. Among the strings whose Function Blocks (with the
    implied base blocks) include everything :func:`bridge.legacy_scope.requirements` asks for and whose history reaches
    back to every start field, the one with the fewest written blocks wins, then the shortest history, then one
    without ``BR=``, then the custodian's order. :class:`CustodianCannotProvide` names what no string can give;
    ``ValueError`` when the request holds no customer-data scope at all.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    tz = load_timezone(timezone)
    entries = _request_entries(request_scopes, effective_details, descriptions)
    if not entries:
        raise ValueError("the request holds no customer-data scope of this custodian")
    candidates, _ = read_custodian_scopes(offered, history_units=history_units, default_history=default_history)
    prefix = "the data custodian cannot provide this request: "
    if not candidates:
        raise CustodianCannotProvide(prefix + "it offers no usable scope string")
    fitting, block_ok, missing_of = [], [], {}
    for source in candidates:
        needs = _needs(entries, source.commodities)
        missing = frozenset(needs) - source.blocks
        missing_of[source.position] = (missing, needs)
        if missing:
            continue
        block_ok.append(source)
        if _too_old(source, entries, tz=tz, now=now) is None:
            fitting.append(source)
    if fitting:
        best = min(fitting, key=lambda s: (len(s.scope.function_blocks), s.history.days, bool(s.scope.bulk_ids),
                                           s.position))
        return best.text
    metered = frozenset().union(*(s.commodities for s in candidates))
    needs = _needs(entries, metered)
    everything = frozenset().union(*(s.blocks for s in candidates))
    absent = frozenset(needs) - everything
    if absent:
        raise CustodianCannotProvide(prefix + "no offered scope includes " + _blocks_text(absent, needs),
                                     missing_blocks=absent)
    if not block_ok:
        closest = min(candidates, key=lambda s: (len(missing_of[s.position][0]), len(s.scope.function_blocks),
                                                 s.position))
        missing, needs = missing_of[closest.position]
        raise CustodianCannotProvide(
            prefix + f"no single offered scope includes everything it needs; the closest, {closest.text!r}, lacks "
            + _blocks_text(missing, needs), missing_blocks=missing)
    longest = max(block_ok, key=lambda s: (s.history.days, -s.position))
    scope_id, fid, value, earliest = _too_old(longest, entries, tz=tz, now=now)  # type: ignore[misc]
    shown = "'infinite' (all history)" if value == INFINITE else str(value)
    raise CustodianCannotProvide(
        prefix + f"{fid} {shown} ({scope_id}) reaches further back than the custodian's HistoryLength of "
        f"{longest.history.text} allows (earliest {_render(earliest)}, scope {longest.text!r})", field=fid)


# --------------------------------------------------------------------------------------------------------------
# CDS request → what this custodian can deliver of it (the grant may be partial)
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Omission:
    """One part of a request the custodian will not provide: the scope it belongs to, the field (a value type's
    field, an include field, a window start, a preselection, or ``""`` for the whole scope) and plain words for the
    customer and the client."""

    scope_id: str
    field: str
    text: str


@dataclass(frozen=True, slots=True)
class DeliveryPlan:
    """What the consent hop asks of one custodian for a CDS request and what the Grant will carry.

    ``scope``: the custodian scope string to ask for, verbatim. ``enabled_scopes``: the request's scope ids the
    Grant enables (customer-data scopes of which nothing can be delivered are left out; other scopes stay).
    ``enabled_details``: the effective ``authorization_details`` narrowed to what the string gives (value types it
    does not carry removed, include fields it cannot fill set false, window starts moved to its history).
    ``omissions``: what was narrowed, in words. A complete plan has none: the Grant becomes ``active``; otherwise
    ``partial`` (WG1-02 §8.2: the server limited access to the ``enabled_*`` values)."""

    scope: str
    enabled_scopes: tuple[str, ...]
    enabled_details: list[dict[str, Any]]
    omissions: tuple[Omission, ...]

    @property
    def complete(self) -> bool:
        return not self.omissions


@dataclass(frozen=True, slots=True)
class _Narrowed:
    details: dict[str, Any] | None  # None: nothing of the entry can be delivered
    omissions: tuple[Omission, ...]
    history_lost: float  # days of requested history the string does not reach


def _field_names(description: Mapping[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(field id → name, value-type choice id → name) of a description's JSON, for the omission texts."""
    names, choices = {}, {}
    for fd in description.get("authorization_details_fields_supported") or ():
        names[fd["id"]] = fd.get("name") or fd["id"]
        if fd["id"] == VALUE_TYPES:
            choices = {c["id"]: c.get("name") or c["id"] for c in fd.get("choices") or ()}
    return names, choices


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def _ceil_second(moment: datetime) -> datetime:
    return moment.replace(microsecond=0) + timedelta(seconds=1) if moment.microsecond else moment


def _narrow_entry(scope_id: str, scope_type: str, details: Mapping[str, Any], description: Mapping[str, Any],
                  source: CustodianScope, *, tz, now: datetime) -> _Narrowed:
    """``details`` (an effective entry, without ``type``) as far as ``source`` can deliver it (docs/mapping.md
    §11.5): value types and include fields are "include what exists", preselections must be honoured exactly (a
    filter the custodian cannot apply would widen the data), window starts are moved to the string's history."""
    blocks, metered = source.blocks, source.commodities
    kind = SCOPE_TYPES[scope_type]
    names, choice_names = _field_names(description)
    scope_name = description.get("name") or scope_id

    def nothing(fid: str, why: str) -> _Narrowed:
        return _Narrowed(None, (Omission(scope_id, fid, f"{scope_name}: {why}"),), 0.0)

    narrowed = dict(details)
    omissions: list[Omission] = []
    trial: dict[str, Any] = {fid: value for fid, value in details.items() if fid in kind.base}
    values = details.get(VALUE_TYPES)
    if isinstance(values, list) and _includes_usage(kind, details):
        kept = [vt for vt in values if _fits(scope_type, {**trial, VALUE_TYPES: [vt]}, blocks, metered)]
        dropped = [vt for vt in values if vt not in kept]
        if values and not kept:
            return nothing(VALUE_TYPES, "none of the requested usage values ("
                           + ", ".join(_lower_first(choice_names.get(vt, vt)) for vt in values) + ")")
        if dropped:
            narrowed[VALUE_TYPES] = kept
            omissions.extend(Omission(scope_id, VALUE_TYPES, _lower_first(choice_names.get(vt, vt)))
                             for vt in dropped)
        trial[VALUE_TYPES] = kept
    elif VALUE_TYPES in details:
        trial[VALUE_TYPES] = values
    if not _fits(scope_type, trial, blocks, metered):
        need = requirements(scope_type, trial, commodities=metered)
        return nothing("", f"not shared by this utility (it needs {_missing_text(need.function_blocks - blocks)})")
    for fid, value in details.items():
        if fid not in PRESELECTION_NEEDS or value is None:
            continue
        need = requirements(scope_type, {**trial, fid: value}, commodities=metered)
        if not need.function_blocks <= blocks or any(item.subject == fid for item in need.unavailable):
            return nothing(fid, f"this utility cannot select by {_lower_first(names.get(fid, fid))}")
        trial[fid] = value
    for fid, value in details.items():
        if not fid.startswith("include_") or fid == VALUE_TYPES or fid in kind.base or value is not True:
            continue
        if _fits(scope_type, {**trial, fid: True}, blocks, metered):
            trial[fid] = True
        else:
            narrowed[fid] = False
            omissions.append(Omission(scope_id, fid, _lower_first(names.get(fid, fid).removeprefix("Include "))))
    lost = 0.0
    for fid in history_fields(scope_type, narrowed):
        earliest = _earliest(source.history, fid, tz=tz, now=now)
        if not _older_than(narrowed[fid], fid, earliest, tz=tz, now=now):
            continue
        if isinstance(earliest, datetime):
            start = _ceil_second(earliest.astimezone(tz))
            narrowed[fid] = rar.format_datetime(start)
            shown = start.date()
        else:
            narrowed[fid] = rar.format_date(earliest)
            shown = earliest
        value = details[fid]
        reach = _resolve(value, fid, tz=tz, now=now)
        if isinstance(reach, datetime):
            lost += max(0.0, (start - reach).total_seconds() / 86400)
        elif isinstance(reach, date):
            lost += max(0, (shown - reach).days)
        else:  # "infinite": all history
            lost += MAX_HISTORY_DAYS
        omissions.append(Omission(scope_id, fid, f"data before {shown.isoformat()} (this utility keeps "
                                  f"{source.history.text} of history)"))
    if not _fits(scope_type, narrowed, blocks, metered):  # cannot happen: every step above kept within the string
        return nothing("", "not shared by this utility")
    return _Narrowed(narrowed, tuple(omissions), lost)


def _includes_usage(kind: Any, details: Mapping[str, Any]) -> bool:
    value = details.get("include_usage_segments", "include_usage_segments" in kind.base)
    return value is True


def plan_delivery(
    request_scopes: Iterable[str],
    effective_details: Sequence[Mapping[str, Any]],
    offered: Iterable[str],
    descriptions: Mapping[str, Any],
    *,
    now: datetime,
    timezone: str = "UTC",
    history_units: str = "heuristic",
    default_history: str = DEFAULT_HISTORY,
) -> DeliveryPlan:
    """What this custodian can deliver of a CDS request (docs/mapping.md §11.5), and the scope string to ask for.

    Arguments as :func:`narrowest_scope`; ``now`` must be the reference moment the ``effective_details`` were
    resolved at (their relative defaults), or a default start would look older than the history it was made from.
    Every offered string is tried; the winner delivers the most scopes, then drops the fewest value types and
    fields, then loses the least history, then is the narrowest (:func:`narrowest_scope`'s order). A request this
    custodian covers whole gives a complete plan with exactly the string :func:`narrowest_scope` picks.
    :class:`CustodianCannotProvide` when nothing of the request can be delivered, with :func:`narrowest_scope`'s
    description of what is missing; ``ValueError`` when the request holds no customer-data scope at all."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    tz = load_timezone(timezone)
    request_scopes = list(dict.fromkeys(request_scopes))
    entries = _request_entries(request_scopes, effective_details, descriptions)
    if not entries:
        raise ValueError("the request holds no customer-data scope of this custodian")
    candidates, _ = read_custodian_scopes(offered, history_units=history_units, default_history=default_history)
    described = {scope_id: _json(descriptions[scope_id]) for scope_id, _type, _details in entries}
    best: tuple[tuple, CustodianScope, list[_Narrowed]] | None = None
    for source in candidates:
        results = [_narrow_entry(scope_id, scope_type, details, described[scope_id], source, tz=tz, now=now)
                   for scope_id, scope_type, details in entries]
        undelivered = sum(r.details is None for r in results)
        if undelivered == len(results):
            continue
        dropped = sum(len(r.omissions) for r in results if r.details is not None)
        rank = (undelivered, dropped, sum(r.history_lost for r in results), len(source.scope.function_blocks),
                source.history.days, bool(source.scope.bulk_ids), source.position)
        if best is None or rank < best[0]:
            best = (rank, source, results)
    if best is None:
        narrowest_scope(request_scopes, effective_details, offered, descriptions, now=now, timezone=timezone,
                        history_units=history_units, default_history=default_history)
        raise CustodianCannotProvide("the data custodian cannot provide any part of this request")  # not reached
    _rank, source, results = best
    served = {scope_id for (scope_id, _t, _d), r in zip(entries, results, strict=True) if r.details is not None}
    customer_data = {scope_id for scope_id, _t, _d in entries}
    enabled_scopes = tuple(s for s in request_scopes if s not in customer_data or s in served)
    narrowed_by_type: dict[str, dict[str, Any]] = {}
    for (scope_id, _t, _d), result in zip(entries, results, strict=True):
        if result.details is not None:
            for type_ in described[scope_id].get("authorization_details_types_supported") or ():
                narrowed_by_type[type_] = result.details
    enabled_details = []
    for entry in effective_details:
        type_ = entry.get("type") if isinstance(entry, Mapping) else None
        owner = next((sid for sid in customer_data
                      if type_ in (described[sid].get("authorization_details_types_supported") or ())), None)
        if owner is None:
            enabled_details.append(dict(entry))
        elif type_ in narrowed_by_type:
            enabled_details.append({"type": type_, **narrowed_by_type[type_]})
    omissions = tuple(o for r in results for o in r.omissions)
    return DeliveryPlan(source.text, enabled_scopes, enabled_details, omissions)


# --------------------------------------------------------------------------------------------------------------
# ESPI Authorization → server-created CDS Grant
# --------------------------------------------------------------------------------------------------------------


def _instant(seconds: int | None) -> datetime | None:
    if seconds is None or seconds < _EPOCH_PLAUSIBLE:
        return None
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _period(interval: Any, reference: datetime | None) -> tuple[datetime | None, datetime | None]:
    """ESPI DateTimeInterval → (start, end); start 0/absent is unknown (None), duration 0/absent is open (None:
    espi.xsd "a duration value of 0 indicates an infinite duration period"). A duration without a start counts back
    from ``reference`` when one is given (publishedPeriod "duration=31536000" = the most recent 365 days) and is
    left open otherwise (authorizedPeriod: nothing says when it began)."""
    if interval is None:
        return None, None
    start = _instant(getattr(interval, "start", None))
    duration = getattr(interval, "duration", None)
    if not duration or duration < 0:
        return start, None
    if start is None:
        return (None if reference is None else reference - timedelta(seconds=duration)), None
    try:
        return start, start + timedelta(seconds=duration)
    except OverflowError:
        return start, None


def _days(duration: str) -> float:
    """A relative duration, roughly in days (for comparing histories)."""
    parsed = rar.parse_duration(duration)
    return parsed.calendar_months() * 30.436875 + parsed.days + parsed.seconds / 86400


def _window_value(moment: datetime, field_id: str, tz, *, start: bool) -> date | datetime:
    """An instant as the value of a date or datetime field; a start date is the first whole local day from it."""
    local = moment.astimezone(tz)
    if field_id not in _DATE_FIELDS:
        return local
    day = local.date()
    if start and local.timetz().replace(tzinfo=None) != time(0):
        day += timedelta(days=1)  # a date starts at local midnight: never reach back before the moment
    return day


def _derived_entry(description: Mapping, scope_type: str, source: CustodianScope, *, tz, reference: datetime,
                   window: tuple[datetime | None, datetime | None],
                   until: datetime | None) -> tuple[dict, tuple[int, float]] | None:
    """The ``authorization_details`` entry an Authorization of ``source`` gives under ``description``, and a score
    (how much of it the description can hold: fields, then history); None when ``source`` does not cover the
    scope's base access."""
    profile = _profile(scope_type, description, source)
    if profile is None:
        return None
    kind = SCOPE_TYPES[scope_type]
    entry: dict[str, Any] = {"type": description["id"]}
    fields = {fd["id"]: fd for fd in description.get("authorization_details_fields_supported") or ()}
    if profile.choices:
        entry[VALUE_TYPES] = list(profile.choices)
    published_start, published_end = window
    reach = 0.0
    for fid, fd in fields.items():
        if fid.startswith("include_") and fid != VALUE_TYPES and fid not in kind.base:
            entry[fid] = fid in profile.includes
        elif fid in START_FIELDS:
            # The latest of: the string's history, the description's maximum, the published window's start; never
            # after the approval.
            starts = [_earliest(source.history, fid, tz=tz, now=reference)]
            reach = source.history.days
            if isinstance(fd.get("maximum"), str) and fd["maximum"] != INFINITE:
                starts.append(_resolve(fd["maximum"], fid, tz=tz, now=reference))
                reach = min(reach, _days(fd["maximum"]))
            if published_start is not None:
                starts.append(_window_value(published_start, fid, tz, start=True))
            latest = _resolve("P0D" if fid in _DATE_FIELDS else "PT0S", fid, tz=tz, now=reference)
            entry[fid] = _render(min(max(starts), latest))  # type: ignore[type-var]
        elif fid in _END_FIELDS or fid == "sync_until":
            end = published_end if fid in _END_FIELDS else until
            entry[fid] = INFINITE if end is None else _render(_window_value(max(end, reference), fid, tz, start=False))
    return entry, (profile.size, reach)


def grant_from_authorization(
    authorization: Any,
    *,
    descriptions: Mapping[str, Any],
    custodian_id: str,
    now: datetime,
    timezone: str = "UTC",
    history_units: str = "heuristic",
    default_history: str = DEFAULT_HISTORY,
) -> dict[str, Any]:
    """The server-created CDS Grant for an existing ESPI Authorization, as plain data.

    ``authorization``: an :class:`espi.authorization.Authorization` (read with the client token);
    ``descriptions``: the custodian's Scope Descriptions (:func:`offered_scopes`, or a map holding them);
    ``now``: the moment of migration. The Grant gets one consent scope of this custodian per scope type the
    Authorization's scope string covers, each with the widest ``authorization_details`` both that string and the
    description allow (value types and include fields its blocks give; the window from ``publishedPeriod`` and
    ``HistoryLength``; ``sync_until`` the end of ``authorizedPeriod``), validated as
    :func:`cds.authorization_details.validate_authorization_details` does at the customer's approval
    (``authorizedPeriod`` start, else ``now``).

    Returns ``{"custodian_id", "scope", "authorization_details" (effective), "status" (as the Grants API shows it
    at ``now``), "not_before", "not_after", "expires" (aware datetimes or None), "upstream": {scope, status,
    resource_uri, authorization_uri, customer_resource_uri, grant_type, access_token_expires, error}}``.
    :class:`AuthorizationNotMigratable` for Authorizations that are no customer consent to this custodian's data.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    tz = load_timezone(timezone)
    resource_uri = getattr(authorization, "resource_uri", None)
    text = getattr(authorization, "scope", None) or ""
    if resource_uri and "/Batch/Bulk/" in resource_uri:
        raise AuthorizationNotMigratable(f"a bulk (client token) Authorization, not a customer's consent: "
                                         f"{resource_uri}")
    sources, skipped = read_custodian_scopes([text], history_units=history_units, default_history=default_history)
    if len(sources) != 1:
        reason = skipped[0].reason if skipped else "it has no scope"
        raise AuthorizationNotMigratable(f"the Authorization's scope {text!r} cannot be used: {reason}")
    source = sources[0]
    authorized_start, authorized_end = _period(getattr(authorization, "authorized_period", None), None)
    reference = min(authorized_start, now) if authorized_start is not None else now
    window = _period(getattr(authorization, "published_period", None), reference)

    descs = {scope_id: _json(description) for scope_id, description in descriptions.items()}
    by_type: dict[str, list[str]] = {}
    for scope_id in custodian_scope_ids(descs, custodian_id):
        if descs[scope_id].get("response_types_supported"):  # consent scopes: a customer's consent
            by_type.setdefault(descs[scope_id]["type"], []).append(scope_id)
    chosen: list[tuple[str, dict]] = []
    problems: list[str] = []
    for scope_type, scope_ids in by_type.items():
        best: tuple[tuple[int, float], str, dict] | None = None
        for scope_id in scope_ids:
            derived = _derived_entry(descs[scope_id], scope_type, source, tz=tz, reference=reference, window=window,
                                     until=authorized_end)
            if derived is None:
                continue
            entry, score = derived
            try:
                effective = rar.validate_authorization_details(
                    [entry], scopes=[scope_id], descriptions={scope_id: descs[scope_id]}, client_types=None,
                    timezone=timezone, now=reference, flow="authorization_code").effective[0]
            except AuthorizationDetailsError as error:
                problems.append(f"{scope_id}: {error.description}")
                continue
            if best is None or score > best[0]:
                best = (score, scope_id, effective)
        if best is not None:
            chosen.append((best[1], best[2]))
    if not chosen:
        detail = f" ({'; '.join(problems)})" if problems else ""
        raise AuthorizationNotMigratable(
            f"scope {text!r} covers none of the CDS scopes custodian {custodian_id!r} offers{detail}")

    code = getattr(authorization, "status", None)
    status = AUTHORIZATION_STATUS.get(code, "suspended")
    if status == "active":
        if authorized_end is not None and now >= authorized_end:
            status = "expired"
        elif authorized_start is not None and now < authorized_start:
            status = "future"
    return {
        "custodian_id": custodian_id,
        "scope": " ".join(scope_id for scope_id, _ in chosen),
        "authorization_details": [entry for _, entry in chosen],
        "status": status,
        "not_before": authorized_start,
        "not_after": authorized_end,
        "expires": authorized_end,
        "upstream": {
            "scope": text,
            "status": code,
            "resource_uri": resource_uri,
            "authorization_uri": getattr(authorization, "authorization_uri", None),
            "customer_resource_uri": getattr(authorization, "customer_resource_uri", None) or None,
            "grant_type": getattr(authorization, "grant_type", None),
            "access_token_expires": _instant(getattr(authorization, "expires_at", None)),
            "error": getattr(authorization, "error", None),
        },
    }


#: Statuses that time decides (cds.grants.effective_status): stored as active with not_before/not_after.
_TIMED = frozenset({"active", "expired", "future"})


def persist_server_created_grant(session: Any, client: Any, data: Mapping[str, Any], box: Any, *,
                                 customer_id: str | None = None, now: datetime | None = None) -> Any:
    """Store :func:`grant_from_authorization` data as a server-created Grant of ``client`` (a
    :class:`cds.store.models.Client`) with :func:`cds.grants.create_grant`. ``active``/``expired``/``future`` are
    stored as ``active`` with ``not_before``/``not_after`` so that the Grants API's time-applied status follows the
    clock; ``revoked`` and ``suspended`` are stored as they are (no enabled scope). Returns the Grant (not
    committed)."""
    from cds.grants import create_grant  # the store (SQLAlchemy) only where a Grant is persisted

    stored = "active" if data["status"] in _TIMED else data["status"]
    grant = create_grant(session, client, scope=data["scope"],
                         authorization_details=list(data["authorization_details"]), box=box, status=stored,
                         customer_id=customer_id, expires=data.get("expires"), now=now)
    grant.not_before = data.get("not_before")
    grant.not_after = data.get("not_after")
    return grant


