"""Legacy Green Button (ESPI) scope strings: parse tolerantly, hold as values, format canonically.

A scope (``ApplicationInformation.scope``, ``Authorization.scope``, the OAuth ``scope`` parameter and token
response) says which Function Blocks and which data shape a Third Party gets. The grammar is GBA's EBNF for
NAESB REQ.21 ESPI scopes (green-button.github.io/espi/scope; espi.md §5.1)::

    Scope          = [ FBTerms ], [ ValueTerms ], [ ResourceTerms ] ;
    FBTerms        = "FB=", { FBTerm, "_" }, FBTerm, ";" ;
    ValueTerms     = { ( "IntervalDuration=", namedOrNumber, { "_", namedOrNumber } )
                     | ( "BlockDuration=", namedOrNumber, { "_", namedOrNumber } )
                     | ( "HistoryLength=", nonNegativeNumber )
                     | ( "SubscriptionFrequency=", nonNegativeNumber | namedFrequency ), ";" } ;
    ResourceTerms  = { ( "AccountCollection=", nonNegativeNumber ) | ( "BR=", brId ), ";" } ;
    namedFrequency = "billingPeriod" | "daily" | "monthly" | "seasonal" | "weekly" ;

Real systems bend it, so ``parse_scope`` follows the defensive rules of espi.md §5.1: terms are split on ``;``
(a trailing ``;`` is optional, blanks around terms and values are ignored, as in ``HistoryLength= 34128000``),
key and value are split on the first ``=``, keys compare case-insensitively (``historyLength=`` at Hydro One),
named values compare case-insensitively (``BlockDuration=Daily``) and ``yearly`` is accepted although the EBNF
lacks it, repeated terms are merged, and terms with unknown keys are kept verbatim. Function Block numbers are
only range-checked (1..99), not looked up: DCs advertise numbers GBA never named (``FB=45``). The literal
non-FB scopes of older OpenESPI servers (``ThirdParty_Admin_Access`` …) are scopes of their own.

Decisions (each explained where it is implemented):

* ``FB=FB_4_FB_5`` (block names instead of numbers) is rejected with a hint, not guessed at: no real source
  writes it, and DCs compare scopes as strings, so accepting it would only hide a bug in the sender.
* The canonical form (``format_scope``) has **no** trailing ``;``. The EBNF ends every term with ``;``, but
  GBA's own token-response contracts, the OpenESPI seed data, the certification harness and every sample file
  omit the last one, and DCs match scope strings exactly. ``format_scope(scope, terminated=True)`` gives the
  EBNF form.
* ``HistoryLength`` is kept as the raw number because its unit differs between DCs (months or seconds); see
  ``Scope.history_length_seconds``, which makes the caller say which unit to assume.
* Several scopes in one string (``parse_scopes``): a new scope starts only where whitespace or a comma is
  followed by ``FB=`` or a legacy scope literal. Everything else (``; HistoryLength= 34128000``) continues the
  current scope.

Every problem bad input can cause is a ``ScopeError``; nothing else escapes the parser.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

from espi.errors import EspiError
from espi.function_blocks import function_block

#: A duration or frequency: whole seconds (frequencies: a whole number, unit unspecified) or one of
#: ``NAMED_FREQUENCIES``.
Duration = int | str

#: The EBNF's namedFrequency values plus ``yearly`` (seen in OpenESPI configs), in canonical spelling. This is
#: also the canonical order of named values inside a list: by length of the period, not alphabetically.
NAMED_FREQUENCIES: tuple[str, ...] = ("daily", "weekly", "monthly", "billingPeriod", "seasonal", "yearly")

#: Literal, non-FB scopes. The first three are from older OpenESPI configs (``oauth-AS-config.xml``, observed
#: in the 2016 GBA sandbox ApplicationInformation); the last two from the 2025 OpenESPI authorization server.
LEGACY_SCOPES: tuple[str, ...] = (
    "ThirdParty_Admin_Access",
    "DataCustodian_Admin_Access",
    "ThirdParty_Registration_Access",
    "Upload_Admin_Access",
    "Batch_Admin_Access",
)

#: Function Block numbers a scope may carry. GBA uses 1..70 plus the test-plan bucket 99.
FUNCTION_BLOCK_RANGE = range(1, 100)

#: The largest number we accept anywhere: DCs are mostly Java and store these as ``long``.
MAX_NUMBER = 2**63 - 1

#: Longest text the parsers read. The XSD types a scope as String256; 64 KiB leaves room for long lists of
#: scopes while bounding the work a hostile peer can cause.
MAX_SCOPE_TEXT = 65536

#: ``history_length_seconds(assume="heuristic")``: values below this are months, others seconds. 1000 months
#: is 83 years and 1000 seconds under 17 minutes, so neither reading is plausible on the wrong side of it; the
#: values seen in the wild are 7-30 (months) and 32 148 000-94 608 000 (seconds).
HISTORY_MONTHS_BELOW = 1000

#: One month of history in seconds: the average Gregorian month (365.2425 days / 12).
SECONDS_PER_MONTH = 2_629_746

#: How to read ``HistoryLength``: as months, as seconds, or by the ``HISTORY_MONTHS_BELOW`` rule.
HistoryUnits = Literal["months", "seconds", "heuristic"]

FB = "FB"
INTERVAL_DURATION = "IntervalDuration"
BLOCK_DURATION = "BlockDuration"
HISTORY_LENGTH = "HistoryLength"
SUBSCRIPTION_FREQUENCY = "SubscriptionFrequency"
ACCOUNT_COLLECTION = "AccountCollection"
BR = "BR"

#: Known keys in canonical spelling, in the order ``format_scope`` writes them (FB, value terms, resource
#: terms).
KNOWN_KEYS: tuple[str, ...] = (
    FB,
    INTERVAL_DURATION,
    BLOCK_DURATION,
    HISTORY_LENGTH,
    SUBSCRIPTION_FREQUENCY,
    ACCOUNT_COLLECTION,
    BR,
)

_KEY_BY_FOLDED = {key.lower(): key for key in KNOWN_KEYS}
_NAMED_BY_FOLDED = {name.lower(): name for name in NAMED_FREQUENCIES}
_NAMED_ORDER = {name: i for i, name in enumerate(NAMED_FREQUENCIES)}
_LEGACY_BY_FOLDED = {name.lower(): name for name in LEGACY_SCOPES}

_DIGITS = re.compile(r"[0-9]+")
_NEGATIVE = re.compile(r"-[0-9]+")
#: Keys are ASCII words; anything else is junk, not an extension term.
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
#: The EBNF's brId is digits, letters and "-"; we also allow the other URI-unreserved characters "_", "." and
#: "~" because bulk ids end up as a path segment (``Batch/Bulk/{BR}``) and ids such as ``BULK_1`` occur there.
_BULK_ID = re.compile(r"[A-Za-z0-9._~-]+")
#: Where one scope may end and the next begin inside a list of scopes.
_SEPARATOR_RUN = re.compile(r"[\s,]+")
_FB_KEY_AT = re.compile(r"[Ff][Bb]\s*=")
_FB_PREFIXED_ITEM = re.compile(r"[Ff][Bb]_?[0-9]*")
_NAMES_TEXT = ", ".join(NAMED_FREQUENCIES)
_SECONDS = "a whole number of seconds"
_TERM_SHOWN_MAX = 80


class ScopeError(EspiError):
    """A scope string (or a scope in JSON) that cannot be understood.

    ``position`` is the 0-based character offset of the offending term in the text that was parsed, ``term``
    the term itself (blanks around it removed) and ``index`` its 1-based number among the scope's terms; all
    three are None for problems that have no place in a text, such as a bad value in JSON. ``message`` is the
    bare reason; ``str(error)`` names term and position too, e.g.
    ``scope term 2 'IntervalDuration=abc' at position 5: interval duration must be …``.
    """

    def __init__(
        self,
        message: str,
        *,
        term: str | None = None,
        position: int | None = None,
        index: int | None = None,
    ):
        self.message = message
        self.term = term
        self.position = position
        self.index = index
        super().__init__(message)

    def __str__(self) -> str:
        if self.term is None:
            return self.message
        shown = self.term if len(self.term) <= _TERM_SHOWN_MAX else self.term[: _TERM_SHOWN_MAX - 1] + "…"
        where = "scope term" if self.index is None else f"scope term {self.index}"
        where = f"{where} {shown!r}"
        if self.position is not None:
            where = f"{where} at position {self.position}"
        return f"{where}: {self.message}"

    def __reduce__(self):
        # Keyword-only arguments would otherwise be lost when a worker pickles the error.
        return (self.__class__, (self.message,), self.__dict__)


# ------------------------------------------------------------------------------------------------------------
# Validating single values. The ``*_from_text`` functions read scope text; the ``_checked_*`` functions check
# Python values (constructor, JSON). Both raise ScopeError with a bare message; callers add where it happened.


def _number_from_text(text: str, what: str) -> int:
    if _DIGITS.fullmatch(text):
        significant = text.lstrip("0") or "0"
        # Check the length before int(): Python refuses to convert strings of more than 4300 digits.
        if len(significant) > 19 or int(significant) > MAX_NUMBER:
            raise ScopeError(f"{what} {_clip(text)} is too large (the limit is {MAX_NUMBER})")
        return int(significant)
    if _NEGATIVE.fullmatch(text):
        raise ScopeError(f"{what} must not be negative, got {_clip(text)!r}")
    if not text:
        raise ScopeError(f"{what} is missing")
    raise ScopeError(f"{what} must be a whole number, got {_clip(text)!r}")


def _named(text: str) -> str | None:
    """The canonical spelling of a named frequency, compared case-insensitively, or None."""
    # ASCII only: str.lower() maps some non-ASCII letters (the Kelvin sign) onto ASCII ones.
    return _NAMED_BY_FOLDED.get(text.lower()) if text.isascii() else None


def _duration_from_text(text: str, what: str, unit: str) -> Duration:
    named = _named(text)
    if named is not None:
        return named
    try:
        return _number_from_text(text, what)
    except ScopeError as error:
        if _DIGITS.fullmatch(text) or _NEGATIVE.fullmatch(text):
            raise  # too large / negative: the specific message is the better one
        raise ScopeError(f"{what} must be {unit} or one of {_NAMES_TEXT}, got {_clip(text)!r}") from error


def _function_block_from_text(text: str) -> int:
    if _FB_PREFIXED_ITEM.fullmatch(text):
        raise ScopeError("Function Blocks are written as bare numbers (FB=4_5), without the 'FB_' prefix")
    number = _number_from_text(text, "Function Block number")
    if number not in FUNCTION_BLOCK_RANGE:
        raise ScopeError(f"Function Block number {number} is out of range 1..99")
    return number


def _checked_number(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScopeError(f"{what} must be an integer, got {_clip(repr(value))}")
    if value < 0:
        raise ScopeError(f"{what} must not be negative, got {value}")
    if value > MAX_NUMBER:
        raise ScopeError(f"{what} is too large (the limit is {MAX_NUMBER})")
    return value


def _checked_duration(value: Any, what: str, unit: str) -> Duration:
    if isinstance(value, str):
        named = _named(value)
        if named is None:
            raise ScopeError(f"{what} must be {unit} or one of {_NAMES_TEXT}, got {_clip(value)!r}")
        return named
    if isinstance(value, bool) or not isinstance(value, int):
        raise ScopeError(f"{what} must be {unit} or one of {_NAMES_TEXT}, got {_clip(repr(value))}")
    return _checked_number(value, what)


def _checked_function_block(value: Any) -> int:
    number = _checked_number(value, "Function Block number")
    if number not in FUNCTION_BLOCK_RANGE:
        raise ScopeError(f"Function Block number {number} is out of range 1..99")
    return number


def _checked_bulk_id(value: Any) -> str:
    if not isinstance(value, str) or not _BULK_ID.fullmatch(value):
        raise ScopeError(
            "a bulk id (BR=) is made of ASCII letters, digits, '-', '_', '.' and '~', "
            f"got {_clip(repr(value))}"
        )
    return value


def _checked_unknown_term(pair: Any) -> tuple[str, str]:
    if not isinstance(pair, tuple | list) or len(pair) != 2:
        raise ScopeError(f"an unknown term is a (key, value) pair, got {_clip(repr(pair))}")
    key, value = pair
    if not isinstance(key, str) or not _KEY.fullmatch(key):
        raise ScopeError(f"an unknown term's key must be an ASCII word, got {_clip(repr(key))}")
    if key.lower() in _KEY_BY_FOLDED:
        raise ScopeError(f"{key!r} is a known key; it cannot be kept as an unknown term")
    if not isinstance(value, str):
        raise ScopeError(f"the value of unknown term {key!r} must be a string, got {_clip(repr(value))}")
    if ";" in value or value != value.strip():
        # Either would not survive formatting and re-parsing.
        raise ScopeError(
            f"the value of unknown term {key!r} must not contain ';' or start or end with blanks, "
            f"got {_clip(value)!r}"
        )
    return key, value


def _checked_legacy_name(value: Any) -> str:
    folded = value.lower() if isinstance(value, str) and value.isascii() else None
    if folded not in _LEGACY_BY_FOLDED:
        raise ScopeError(f"legacy scope must be one of {', '.join(LEGACY_SCOPES)}, got {_clip(repr(value))}")
    return _LEGACY_BY_FOLDED[folded]


def _clip(text: str) -> str:
    return text if len(text) <= _TERM_SHOWN_MAX else text[: _TERM_SHOWN_MAX - 1] + "…"


def _items(values: Any, field: str) -> Iterator[tuple[str, Any]]:
    """(label, item) for each item of a sequence field, so errors can say ``function_blocks[2]``."""
    if isinstance(values, str | bytes | Mapping) or not isinstance(values, Iterable):
        raise ScopeError(f"{field} must be a list, got {_clip(repr(values))}")
    for i, item in enumerate(values):
        yield f"{field}[{i}]", item


def _labelled(label: str, check, *args) -> Any:
    try:
        return check(*args)
    except ScopeError as error:
        raise ScopeError(f"{label}: {error.message}") from None


def _duration_sort_key(value: Duration) -> tuple[int, int]:
    return (1, _NAMED_ORDER[value]) if isinstance(value, str) else (0, value)


def _normalized_durations(values: Any, field: str, what: str, unit: str) -> tuple[Duration, ...]:
    checked = {_labelled(label, _checked_duration, item, what, unit) for label, item in _items(values, field)}
    return tuple(sorted(checked, key=_duration_sort_key))


def _normalized_function_blocks(values: Any) -> tuple[int, ...]:
    field = "function_blocks"
    return tuple(sorted({_labelled(label, _checked_function_block, n) for label, n in _items(values, field)}))


def _normalized_bulk_ids(values: Any) -> tuple[str, ...]:
    return tuple(sorted({_labelled(label, _checked_bulk_id, i) for label, i in _items(values, "bulk_ids")}))


def _normalized_unknown_terms(values: Any) -> tuple[tuple[str, str], ...]:
    # dict.fromkeys drops exact repeats and keeps the original order.
    checked = (_labelled(label, _checked_unknown_term, t) for label, t in _items(values, "unknown_terms"))
    return tuple(dict.fromkeys(checked))


# ------------------------------------------------------------------------------------------------------------
# The value


@dataclass(frozen=True, slots=True)
class Scope:
    """One ESPI scope as a value: what a Third Party asks for, or what a Data Custodian grants.

    Every instance is valid and normalized, whoever built it (the constructor checks and normalizes, raising
    ``ScopeError``): list fields are sorted and free of duplicates (numbers ascending, then named values in
    ``NAMED_FREQUENCIES`` order; bulk ids in string order), named values are canonically spelled, unknown
    terms keep their original order with exact duplicates dropped. Two scopes that grant the same are
    therefore equal, and ``format_scope`` has a single output for each.

    ``legacy_name`` holds a literal scope (``ThirdParty_Admin_Access`` …); such a scope has no other terms.
    The empty scope (no terms at all) grants nothing.
    """

    #: Function Block numbers (``FB=``), 1..99.
    function_blocks: tuple[int, ...] = ()
    #: Interval lengths in seconds, or named (``IntervalDuration=``).
    interval_durations: tuple[Duration, ...] = ()
    #: Periods one IntervalBlock / delivery covers, in seconds or named (``BlockDuration=``).
    block_durations: tuple[Duration, ...] = ()
    #: ``HistoryLength=`` exactly as given; months or seconds depending on the DC
    #: (``history_length_seconds``).
    history_length: int | None = None
    #: How often the DC notifies (``SubscriptionFrequency=``): named, or a number in an unspecified unit.
    subscription_frequency: Duration | None = None
    #: Number of accounts/UsagePoints in the subscription (``AccountCollection=``).
    account_collection: int | None = None
    #: Bulk ids (``BR=``): the authorization is also delivered via ``Batch/Bulk/{id}``.
    bulk_ids: tuple[str, ...] = ()
    #: Terms with keys this library does not know, as (key, value), verbatim, in their original order.
    unknown_terms: tuple[tuple[str, str], ...] = ()
    #: A literal non-FB scope such as ``ThirdParty_Admin_Access``, canonically spelled.
    legacy_name: str | None = None

    def __post_init__(self) -> None:
        fix = object.__setattr__
        fix(self, "function_blocks", _normalized_function_blocks(self.function_blocks))
        fix(
            self,
            "interval_durations",
            _normalized_durations(
                self.interval_durations, "interval_durations", "interval duration", _SECONDS
            ),
        )
        fix(
            self,
            "block_durations",
            _normalized_durations(self.block_durations, "block_durations", "block duration", _SECONDS),
        )
        if self.history_length is not None:
            _labelled("history_length", _checked_number, self.history_length, "history length")
        if self.subscription_frequency is not None:
            frequency = _labelled(
                "subscription_frequency",
                _checked_duration,
                self.subscription_frequency,
                "subscription frequency",
                "a whole number",
            )
            fix(self, "subscription_frequency", frequency)
        if self.account_collection is not None:
            _labelled("account_collection", _checked_number, self.account_collection, "account collection")
        fix(self, "bulk_ids", _normalized_bulk_ids(self.bulk_ids))
        fix(self, "unknown_terms", _normalized_unknown_terms(self.unknown_terms))
        if self.legacy_name is not None:
            fix(self, "legacy_name", _labelled("legacy_name", _checked_legacy_name, self.legacy_name))
            if self._has_terms():
                raise ScopeError(f"legacy scope {self.legacy_name} stands alone; it cannot have other terms")

    def _has_terms(self) -> bool:
        return bool(
            self.function_blocks
            or self.interval_durations
            or self.block_durations
            or self.history_length is not None
            or self.subscription_frequency is not None
            or self.account_collection is not None
            or self.bulk_ids
            or self.unknown_terms
        )

    @property
    def is_empty(self) -> bool:
        """True for the scope without any term: it grants nothing."""
        return self.legacy_name is None and not self._has_terms()

    @property
    def is_legacy(self) -> bool:
        """True for a literal non-FB scope such as ``ThirdParty_Admin_Access``."""
        return self.legacy_name is not None

    def history_length_seconds(self, *, assume: HistoryUnits) -> int | None:
        """``history_length`` in seconds, reading the raw number as the caller says; None when absent.

        The unit of ``HistoryLength`` is not consistent in practice: OpenESPI and the certification harness
        use months (13, 24, 7, 30), the XSD examples and Hydro One seconds (34128000, 94608000, 32148000).
        There is no default on purpose, so that every conversion shows which reading it relies on:

        * ``assume="months"``: the value is months of ``SECONDS_PER_MONTH`` (average Gregorian month);
        * ``assume="seconds"``: the value is seconds;
        * ``assume="heuristic"``: values below ``HISTORY_MONTHS_BELOW`` (1000) are months, larger ones
          seconds. Prefer a per-DC setting where one is known; use the heuristic for DCs nobody has
          configured.
        """
        if self.history_length is None:
            return None
        if assume == "months":
            return self.history_length * SECONDS_PER_MONTH
        if assume == "seconds":
            return self.history_length
        if assume == "heuristic":
            if self.history_length < HISTORY_MONTHS_BELOW:
                return self.history_length * SECONDS_PER_MONTH
            return self.history_length
        raise ValueError(f"assume must be 'months', 'seconds' or 'heuristic', not {assume!r}")

    def covers(self, other: Scope, *, history_units: HistoryUnits = "heuristic") -> bool:
        """True when this scope grants at least everything ``other`` asks for.

        Only what a scope states counts: a term that ``other`` has and this scope lacks is not covered (a DC
        that promises no IntervalDuration may not deliver 900-second intervals). Precisely,
        ``self.covers(other)`` iff

        * ``other`` is empty (it asks for nothing), or
        * both are the same legacy literal, or
        * neither is legacy, and
          - Function Blocks, interval durations, block durations and bulk ids of ``other`` are subsets of ours
            (durations match exactly: ``daily`` is not ``86400``, calendar days are not always 86400 s long);
          - if ``other`` has a HistoryLength we have one at least as long, both converted to seconds with
            ``history_length_seconds(assume=history_units)``;
          - if ``other`` has a SubscriptionFrequency ours is the same;
          - if ``other`` has an AccountCollection ours is at least as large;
          - every unknown term of ``other`` appears verbatim among ours (we cannot compare what we don't
            know).

        This is a preorder: every scope covers itself, and coverage is transitive.
        """
        if other.is_empty:
            return True
        if self.legacy_name is not None or other.legacy_name is not None:
            return self.legacy_name == other.legacy_name
        if not (
            set(other.function_blocks) <= set(self.function_blocks)
            and set(other.interval_durations) <= set(self.interval_durations)
            and set(other.block_durations) <= set(self.block_durations)
            and set(other.bulk_ids) <= set(self.bulk_ids)
            and set(other.unknown_terms) <= set(self.unknown_terms)
        ):
            return False
        if other.history_length is not None:
            ours = self.history_length_seconds(assume=history_units)
            if ours is None or ours < other.history_length_seconds(assume=history_units):
                return False
        if (
            other.subscription_frequency is not None
            and self.subscription_frequency != other.subscription_frequency
        ):
            return False
        return other.account_collection is None or (
            self.account_collection is not None and self.account_collection >= other.account_collection
        )

    def with_function_blocks(self, numbers: Iterable[int]) -> Scope:
        """This scope with its Function Blocks replaced by ``numbers`` (e.g. narrowed to what is needed)."""
        return replace(self, function_blocks=tuple(numbers))

    def __str__(self) -> str:
        return format_scope(self)


# ------------------------------------------------------------------------------------------------------------
# Parsing


def parse_scope(text: str) -> Scope:
    """Read one scope string (see the module docstring for what is tolerated). Blank text is the empty scope.

    Raises ``ScopeError`` naming the term and its position for anything that is really wrong: non-numeric,
    negative or out-of-range numbers, an empty Function Block list, an empty key, a term without ``=`` that is
    not a legacy literal, a legacy literal combined with other terms, conflicting single-valued terms.
    """
    _check_text(text)
    return _parse_span(text, 0, len(text))


def parse_scopes(text: str) -> list[Scope]:
    """Read a list of scopes, such as ``ApplicationInformation.scope`` (a "space separated list").

    A new scope starts only where a run of whitespace and/or commas is followed by ``FB=`` (any case, blanks
    allowed before ``=``) or by a legacy literal. Whitespace anywhere else belongs to the current scope, so
    ``…;BlockDuration=Daily; HistoryLength= 34128000`` stays one scope while
    ``FB=4_5;HistoryLength=13; FB=34_35`` is two (each in EBNF form with its own trailing ``;``).
    Consequences: ``FB=1;FB=4`` is one scope (the terms merge) but ``FB=1; FB=4`` two; a scope without an FB
    term can only be first in a list. Commas and blanks at the end of a scope are dropped; scopes without any
    term are skipped, so blank text gives ``[]``.

    Error positions are offsets into the whole ``text``.
    """
    _check_text(text)
    scopes = []
    for start, end in _scope_spans(text):
        scope = _parse_span(text, start, end)
        if not scope.is_empty:
            scopes.append(scope)
    return scopes


def _check_text(text: object) -> None:
    if not isinstance(text, str):
        raise ScopeError(f"a scope must be text, got {type(text).__name__}")
    if len(text) > MAX_SCOPE_TEXT:
        raise ScopeError(f"scope text is too long ({len(text)} characters; the limit is {MAX_SCOPE_TEXT})")


def _scope_starts_at(text: str, pos: int) -> bool:
    if _FB_KEY_AT.match(text, pos):
        return True
    return _legacy_at(text, pos) is not None


def _legacy_at(text: str, pos: int) -> str | None:
    for name in LEGACY_SCOPES:
        end = pos + len(name)
        candidate = text[pos:end]
        if not (candidate.isascii() and candidate.lower() == name.lower()):
            continue
        if end == len(text) or text[end] in ";," or text[end].isspace():
            return name
    return None


def _scope_spans(text: str) -> list[tuple[int, int]]:
    spans = []
    leading = _SEPARATOR_RUN.match(text)
    start = leading.end() if leading else 0
    for run in _SEPARATOR_RUN.finditer(text, start):
        if run.start() > start and run.end() < len(text) and _scope_starts_at(text, run.end()):
            spans.append((start, run.start()))
            start = run.end()
    spans.append((start, len(text)))
    # A comma or blank at the end of a scope separates it from the next one; it is not part of its last value.
    return [(s, _trim_separators_end(text, s, e)) for s, e in spans]


def _trim_separators_end(text: str, start: int, end: int) -> int:
    while end > start and (text[end - 1] == "," or text[end - 1].isspace()):
        end -= 1
    return end


def _terms(text: str, start: int, end: int) -> list[tuple[int, str]]:
    """(position, term) for each non-blank ``;``-separated term of text[start:end], without blanks around."""
    terms = []
    for match in re.finditer(r"[^;]+", text[start:end]):
        raw = match.group()
        term = raw.strip()
        # A term of nothing but commas is a stray scope separator (espi.md §5.1), not a malformed term.
        if term.strip(","):
            terms.append((start + match.start() + len(raw) - len(raw.lstrip()), term))
    return terms


class _Terms:
    """Accumulates the terms of one scope, merging repeats and rejecting conflicting single values."""

    def __init__(self) -> None:
        self.function_blocks: set[int] = set()
        self.interval_durations: set[Duration] = set()
        self.block_durations: set[Duration] = set()
        self.single: dict[str, Any] = {}
        self.bulk_ids: set[str] = set()
        self.unknown_terms: list[tuple[str, str]] = []

    def set_single(self, key: str, value: Any) -> None:
        if key in self.single and self.single[key] != value:
            raise ScopeError(f"{key} is given twice with different values ({self.single[key]} and {value})")
        self.single[key] = value

    def add(self, key: str, value: str) -> None:
        if key == FB:
            self.function_blocks.update(_function_block_from_text(item) for item in _list_items(value, key))
        elif key == INTERVAL_DURATION:
            self.interval_durations.update(
                _duration_from_text(item, "interval duration", _SECONDS) for item in _list_items(value, key)
            )
        elif key == BLOCK_DURATION:
            self.block_durations.update(
                _duration_from_text(item, "block duration", _SECONDS) for item in _list_items(value, key)
            )
        elif key == HISTORY_LENGTH:
            self.set_single(key, _number_from_text(value, "history length"))
        elif key == SUBSCRIPTION_FREQUENCY:
            self.set_single(key, _duration_from_text(value, "subscription frequency", "a whole number"))
        elif key == ACCOUNT_COLLECTION:
            self.set_single(key, _number_from_text(value, "account collection"))
        elif key == BR:
            if not value:
                raise ScopeError("bulk id (BR=) is missing")
            self.bulk_ids.add(_checked_bulk_id(value))
        else:  # pragma: no cover - KNOWN_KEYS and this dispatch are kept in step
            raise AssertionError(key)

    def scope(self) -> Scope:
        return Scope(
            function_blocks=tuple(self.function_blocks),
            interval_durations=tuple(self.interval_durations),
            block_durations=tuple(self.block_durations),
            history_length=self.single.get(HISTORY_LENGTH),
            subscription_frequency=self.single.get(SUBSCRIPTION_FREQUENCY),
            account_collection=self.single.get(ACCOUNT_COLLECTION),
            bulk_ids=tuple(self.bulk_ids),
            unknown_terms=tuple(self.unknown_terms),
        )


def _list_items(value: str, key: str) -> list[str]:
    """The ``_``-separated items of a list value. Empty items (``4__5``, a trailing ``_``) are skipped."""
    items = [item.strip() for item in value.split("_")]
    items = [item for item in items if item]
    if not items:
        raise ScopeError(
            f"{key}= needs at least one value" if key != FB else "the Function Block list is empty"
        )
    return items


def _parse_span(text: str, start: int, end: int) -> Scope:
    terms = _terms(text, start, end)
    accumulated = _Terms()
    for index, (position, term) in enumerate(terms, start=1):
        try:
            if "=" not in term:
                legacy = _legacy_name(term)
                if legacy is None:
                    raise ScopeError(_no_equals_message(term))
                if len(terms) > 1:
                    raise ScopeError(
                        f"legacy scope {legacy} stands alone; it cannot be combined with other terms"
                    )
                return Scope(legacy_name=legacy)
            raw_key, _, raw_value = term.partition("=")
            key, value = raw_key.strip(), raw_value.strip()
            if not key:
                raise ScopeError("the key before '=' is empty")
            if not _KEY.fullmatch(key):
                raise ScopeError(
                    f"malformed key {_clip(key)!r}: keys are single ASCII words such as HistoryLength"
                )
            known = _KEY_BY_FOLDED.get(key.lower())
            if known is None:
                accumulated.unknown_terms.append((key, value))
            else:
                accumulated.add(known, value)
        except ScopeError as error:
            message = error.message
            if _looks_like_several_scopes(term):
                message += " (several scopes in one string? read them with parse_scopes)"
            raise ScopeError(message, term=term, position=position, index=index) from None
    return accumulated.scope()


def _legacy_name(term: str) -> str | None:
    return _LEGACY_BY_FOLDED.get(term.lower()) if term.isascii() else None


def _no_equals_message(term: str) -> str:
    if re.fullmatch(r"[Ff][Bb]_[0-9]+(?:_[0-9]+)*", term):
        return "Function Blocks are written as FB=4_5 (key FB, bare numbers), not FB_4_5"
    return f"a term must be Key=value or one of the legacy scopes {', '.join(LEGACY_SCOPES)}"


def _looks_like_several_scopes(term: str) -> bool:
    for run in _SEPARATOR_RUN.finditer(term):
        if run.start() > 0 and run.end() < len(term) and _scope_starts_at(term, run.end()):
            return True
    return False


# ------------------------------------------------------------------------------------------------------------
# Formatting and JSON


def _format_value(value: Duration) -> str:
    return value if isinstance(value, str) else str(value)


def format_scope(scope: Scope, *, terminated: bool = False) -> str:
    """The canonical text of ``scope``; ``parse_scope`` of it gives an equal Scope.

    Terms come in a fixed order: ``FB`` (numbers ascending, joined by ``_``), then ``IntervalDuration``,
    ``BlockDuration``, ``HistoryLength``, ``SubscriptionFrequency``, then ``AccountCollection`` and one ``BR``
    term per bulk id, then unknown terms verbatim in their original order. Terms are joined by ``;`` with no
    trailing ``;``, the form DCs actually exchange (GBA token-response contracts, OpenESPI, the certification
    harness); ``terminated=True`` ends every term with ``;`` as the EBNF writes it. A legacy scope is just its
    literal and the empty scope the empty string.
    """
    if scope.legacy_name is not None:
        return scope.legacy_name
    terms = []
    if scope.function_blocks:
        terms.append(f"{FB}=" + "_".join(str(number) for number in scope.function_blocks))
    if scope.interval_durations:
        terms.append(f"{INTERVAL_DURATION}=" + "_".join(map(_format_value, scope.interval_durations)))
    if scope.block_durations:
        terms.append(f"{BLOCK_DURATION}=" + "_".join(map(_format_value, scope.block_durations)))
    if scope.history_length is not None:
        terms.append(f"{HISTORY_LENGTH}={scope.history_length}")
    if scope.subscription_frequency is not None:
        terms.append(f"{SUBSCRIPTION_FREQUENCY}={_format_value(scope.subscription_frequency)}")
    if scope.account_collection is not None:
        terms.append(f"{ACCOUNT_COLLECTION}={scope.account_collection}")
    terms.extend(f"{BR}={bulk_id}" for bulk_id in scope.bulk_ids)
    terms.extend(f"{key}={value}" for key, value in scope.unknown_terms)
    if terminated:
        return "".join(f"{term};" for term in terms)
    return ";".join(terms)


_JSON_FIELDS = (
    "function_blocks",
    "interval_durations",
    "block_durations",
    "history_length",
    "subscription_frequency",
    "account_collection",
    "bulk_ids",
    "unknown_terms",
    "legacy_name",
)


def scope_to_json(scope: Scope) -> dict[str, Any]:
    """A JSON-ready dict of ``scope``; Function Blocks carry their GBA name (None if GBA never named one)."""
    blocks = []
    for number in scope.function_blocks:
        entry = function_block(number)
        blocks.append({"number": number, "name": entry.name if entry else None})
    return {
        "function_blocks": blocks,
        "interval_durations": list(scope.interval_durations),
        "block_durations": list(scope.block_durations),
        "history_length": scope.history_length,
        "subscription_frequency": scope.subscription_frequency,
        "account_collection": scope.account_collection,
        "bulk_ids": list(scope.bulk_ids),
        "unknown_terms": [{"key": key, "value": value} for key, value in scope.unknown_terms],
        "legacy_name": scope.legacy_name,
    }


def scope_from_json(obj: Any) -> Scope:
    """The Scope described by ``obj``, a decoded JSON object in the shape ``scope_to_json`` writes.

    Missing fields take their empty default. Function Blocks may be numbers or objects with a ``"number"``
    (their ``"name"`` and anything else in them is descriptive and ignored); unknown terms may be ``{"key": …,
    "value": …}`` objects or ``[key, value]`` pairs. Unknown fields, wrong types and invalid values raise
    ``ScopeError`` naming the field, e.g. ``function_blocks[2]: Function Block number 0 is out of range``.
    """
    if not isinstance(obj, Mapping):
        raise ScopeError(f"a scope in JSON must be an object, got {_json_type(obj)}")
    unexpected = [str(key) for key in obj if key not in _JSON_FIELDS]
    if unexpected:
        plural = "s" if len(unexpected) > 1 else ""
        raise ScopeError(
            f"unknown field{plural} {', '.join(map(repr, unexpected))} in scope JSON "
            f"(expected {', '.join(_JSON_FIELDS)})"
        )
    fields: dict[str, Any] = {name: obj[name] for name in _JSON_FIELDS if obj.get(name) is not None}
    if "function_blocks" in fields:
        fields["function_blocks"] = tuple(
            _json_function_block(label, item)
            for label, item in _items(fields["function_blocks"], "function_blocks")
        )
    if "unknown_terms" in fields:
        fields["unknown_terms"] = tuple(
            _json_unknown_term(label, item)
            for label, item in _items(fields["unknown_terms"], "unknown_terms")
        )
    return Scope(**fields)


def _json_function_block(label: str, item: Any) -> Any:
    if isinstance(item, Mapping):
        if "number" not in item:
            raise ScopeError(f'{label}: a Function Block object needs a "number"')
        return item["number"]
    return item


def _json_unknown_term(label: str, item: Any) -> Any:
    if isinstance(item, Mapping):
        if set(item) != {"key", "value"}:
            raise ScopeError(f'{label}: an unknown term object has exactly "key" and "value"')
        return (item["key"], item["value"])
    if isinstance(item, list):
        return tuple(item)
    raise ScopeError(f'{label}: an unknown term is a {{"key", "value"}} object or a [key, value] pair')


def _json_type(obj: Any) -> str:
    if obj is None:
        return "null"
    if isinstance(obj, bool):
        return "a boolean"
    if isinstance(obj, str):
        return "a string"
    if isinstance(obj, int | float):
        return "a number"
    if isinstance(obj, list | tuple):
        return "an array"
    return type(obj).__name__
