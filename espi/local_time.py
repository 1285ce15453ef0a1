"""ESPI ``LocalTimeParameters`` (the ``TimeConfiguration`` resource): decoding, sanity checks, time zones.

A Green Button feed describes its local time with four numbers (espi.xsd ``TimeConfiguration``; reference:
``shared/reference/espi.md`` §1.6): ``tzOffset`` (standard-time offset from UTC, seconds), ``dstOffset``
(seconds added during daylight saving time) and two 32-bit bitmap rules, ``dstStartRule`` and ``dstEndRule``,
that say when DST begins and ends each year (``FFFFFFFF`` = no DST). Every ESPI timestamp is already a UTC
instant, so these parameters never move a timestamp: greenbridge needs local time only to bucket readings into
local days, to make CDS ``date`` fields and for display (``shared/reference/mapping-notes.md`` §2). A
per-custodian IANA zone is authoritative; the parameters only cross-check it, or stand in when none is set.

Real feeds get these parameters wrong often enough that nothing here trusts them blindly: Enbridge writes the
epoch second of the 2024 transitions in hex instead of a bitmap, NGMA-style gas files flip the sign of
``tzOffset``, the 2016 sandbox sends -4 h with Eastern-zone data, and a parser fixture sends 0. :func:`assess`
says whether a set of parameters is usable and why not; :func:`zone_for` picks the zone to use and says why, and
when the parameters cannot be used it still prefers the feed's own clues to UTC: sound DST rules with a tzOffset
repaired from the local offset the feed's Atom dates state, a sound tzOffset beside unusable rules (as a fixed
offset), or the dates' offset itself (docs/mapping.md §3).

Decisions (each also documented where it is implemented):

* The rule's hour is the local *wall-clock* time in effect just before the change: standard time for the start
  of DST, daylight time for its end. That is how DST laws are written ("2:00 a.m. local time") and the only
  reading under which the pair in nearly every sample, ``360E2000``/``B40E2000`` (both hour 2), reproduces
  America/New_York. Read as standard time, ``B40E2000`` would end US DST at 03:00 EDT, an hour late.
  (Enbridge's epoch value for the end, ``67271F70``, is 2024-11-03T07:00Z: they did compute 02:00 *standard*
  time, an hour after the real change at 06:00Z; espi.md §1.6 prints it as 06:00Z.)
* "5th occurrence" (operator 6) in a month with only four of that weekday means the last occurrence, as week 5
  does in POSIX ``TZ`` rules (``M10.5.0``) and in Windows' time zone records.
* Day 29 of February (operators 0 and 1) means 28 February in common years; days that no year has
  (30 February, 31 April) are refused when the rule is decoded.
* DST may span the new year (southern hemisphere: start month after end month), although espi.xsd asks for
  ``dstEndRule`` > ``dstStartRule``.
"""

from __future__ import annotations

import bisect
import calendar
import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from espi.errors import EspiError

__all__ = [
    "CANDIDATE_ZONES",
    "DST_DISABLED",
    "OP_DAY_OF_MONTH",
    "OP_LAST",
    "OP_WEEKDAY_ON_OR_AFTER",
    "DstRule",
    "LocalTimeAssessment",
    "LocalTimeError",
    "LocalTimeParameters",
    "LocalTimeZone",
    "assess",
    "decode_dst_rule",
    "encode_dst_rule",
    "iana_candidates",
    "zone_for",
]


class LocalTimeError(EspiError):
    """LocalTimeParameters that cannot be decoded, or a time zone that cannot be built or found."""


#: The rule value that switches DST processing off (espi.xsd ``DstRuleType``).
DST_DISABLED = "FFFFFFFF"

_DISABLED_VALUE = 0xFFFFFFFF
_HEX_RULE = re.compile(r"(?:0[xX])?([0-9A-Fa-f]{8})", re.ASCII)
_INTEGER = re.compile(r"[+-]?[0-9]+", re.ASCII)
_DAY = 86_400
_MAX_TZ_OFFSET = 14 * 3600
_MAX_DST_OFFSET = 2 * 3600
_QUARTER_HOUR = 900

#: Named operators of the rule bitmap (espi.xsd DstRuleType); 2-6 are the 1st-5th occurrence.
OP_DAY_OF_MONTH = 0
OP_WEEKDAY_ON_OR_AFTER = 1
OP_LAST = 7
_OCCURRENCE_NAMES = {2: "1st", 3: "2nd", 4: "3rd", 5: "4th", 6: "5th", 7: "last"}
_WEEKDAY_NAMES = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
_MONTH_NAMES = tuple(calendar.month_name)
# The longest each month can be in any year: a rule naming a day beyond it can never fire.
_MONTH_MAX_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _parse_rule_value(hex_text: str) -> int:
    """``' 0x360e2000 '`` → 0x360E2000. HexBinary32 is exactly four bytes; anything else is refused."""
    if not isinstance(hex_text, str):
        raise LocalTimeError(f"DST rule must be text, not {type(hex_text).__name__}")
    match = _HEX_RULE.fullmatch(hex_text.strip())
    if match is None:
        shown = hex_text.strip()
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise LocalTimeError(f"DST rule {shown!r} is not 8 hexadecimal digits (HexBinary32)")
    return int(match.group(1), 16)


@dataclass(frozen=True)
class DstRule:
    """One decoded ESPI DST rule: which day of which month DST starts or ends, and at what local clock time.

    Bit layout of the 32-bit value (espi.xsd ``DstRuleType``): 28-31 month 1-12; 25-27 operator; 20-24 day of
    month (0 = not applicable); 17-19 day of week, 1 = Monday … 7 = Sunday (0 = not applicable); 12-16 hour
    0-23; 0-11 seconds 0-3599 added to the hour.

    Operators: 0 = on ``day_of_month``; 1 = the first ``day_of_week`` on or after ``day_of_month`` (may run
    into the next month, like zic's ``Sun>=29``); 2-6 = the 1st-5th ``day_of_week`` of the month; 7 = the
    last one.
    Construction validates every field, so a ``DstRule`` yields a transition for every year; fields that the
    operator ignores may be non-zero (they round-trip) and are listed by :attr:`ignored_fields`.
    """

    month: int
    operator: int
    day_of_month: int
    day_of_week: int
    hour: int
    seconds: int

    def __post_init__(self) -> None:
        for name, low, high in (
            ("month", 1, 12),
            ("operator", 0, 7),
            ("day_of_month", 0, 31),
            ("day_of_week", 0, 7),
            ("hour", 0, 23),
            ("seconds", 0, 3599),
        ):
            value = getattr(self, name)
            if type(value) is not int or not low <= value <= high:
                raise LocalTimeError(f"DST rule field {name}={value!r} is outside {low}-{high}")
        if self.operator in (OP_DAY_OF_MONTH, OP_WEEKDAY_ON_OR_AFTER):
            if self.day_of_month == 0:
                raise LocalTimeError(f"DST rule operator {self.operator} needs a day of month, got 0")
            if self.day_of_month > _MONTH_MAX_DAYS[self.month]:
                raise LocalTimeError(f"DST rule names day {self.day_of_month} of {_MONTH_NAMES[self.month]}")
        if self.operator != OP_DAY_OF_MONTH and self.day_of_week == 0:
            raise LocalTimeError(f"DST rule operator {self.operator} needs a day of week, got 0")

    @classmethod
    def from_int(cls, value: int) -> DstRule:
        """Decodes the 32-bit value; :class:`LocalTimeError` when a field is out of range or for FFFFFFFF."""
        if type(value) is not int or not 0 <= value <= _DISABLED_VALUE:
            raise LocalTimeError(f"DST rule value {value!r} is not a 32-bit unsigned integer")
        if value == _DISABLED_VALUE:
            raise LocalTimeError("DST rule FFFFFFFF means 'DST disabled', not a rule")
        return cls(
            month=value >> 28,
            operator=(value >> 25) & 0x7,
            day_of_month=(value >> 20) & 0x1F,
            day_of_week=(value >> 17) & 0x7,
            hour=(value >> 12) & 0x1F,
            seconds=value & 0xFFF,
        )

    def to_int(self) -> int:
        return (
            self.month << 28
            | self.operator << 25
            | self.day_of_month << 20
            | self.day_of_week << 17
            | self.hour << 12
            | self.seconds
        )

    @property
    def hex(self) -> str:
        """The canonical wire form: 8 upper-case hex digits, as every sample writes it."""
        return f"{self.to_int():08X}"

    @property
    def ignored_fields(self) -> tuple[str, ...]:
        """Non-zero fields the operator ignores. Real rules leave them 0: a value setting them is suspect."""
        if self.operator == OP_DAY_OF_MONTH:
            return ("day_of_week",) if self.day_of_week else ()
        if self.operator == OP_WEEKDAY_ON_OR_AFTER:
            return ()
        return ("day_of_month",) if self.day_of_month else ()

    def day_ordinal(self, year: int) -> int:
        """Proleptic Gregorian ordinal (``date.toordinal``) of the transition day in ``year``.

        Works in ordinals so that an "on or after" rule running past 9999-12-31 does not overflow ``date``.
        """
        if type(year) is not int or not 1 <= year <= 9999:
            raise LocalTimeError(f"year {year!r} is outside 1-9999")
        month_days = calendar.monthrange(year, self.month)[1]
        if self.operator in (OP_DAY_OF_MONTH, OP_WEEKDAY_ON_OR_AFTER):
            # 29 February in a common year means 28 February (see the module docstring).
            anchor = date(year, self.month, min(self.day_of_month, month_days)).toordinal()
            if self.operator == OP_DAY_OF_MONTH:
                return anchor
            return anchor + (self.day_of_week - 1 - (anchor - 1) % 7) % 7
        first = date(year, self.month, 1).toordinal()
        # date.toordinal() 1 is a Monday, so (ordinal - 1) % 7 is the ISO weekday minus one.
        first_match = first + (self.day_of_week - 1 - (first - 1) % 7) % 7
        last_match = first_match + 7 * ((first + month_days - 1 - first_match) // 7)
        if self.operator == OP_LAST:
            return last_match
        # A 5th occurrence the month does not have falls back to the last one (POSIX TZ "week 5" semantics).
        return min(first_match + 7 * (self.operator - 2), last_match)

    def transition(self, year: int) -> datetime:
        """The local clock reading (naive) at which this rule fires in ``year``.

        The reading is wall-clock time in effect just before the change: standard time for a DST start,
        daylight time for a DST end (module docstring). :class:`LocalTimeZone` turns it into a UTC instant.
        """
        ordinal = self.day_ordinal(year)
        try:
            day = date.fromordinal(ordinal)
        except (ValueError, OverflowError):
            raise LocalTimeError(f"the {year} transition of rule {self.hex} falls after 9999-12-31") from None
        return datetime(day.year, day.month, day.day) + timedelta(hours=self.hour, seconds=self.seconds)

    def describe(self) -> str:
        """Human wording, e.g. ``2nd Sunday of March at 02:00`` (used in notes and error messages)."""
        clock = f"{self.hour:02d}:{self.seconds // 60:02d}"
        if self.seconds % 60:
            clock += f":{self.seconds % 60:02d}"
        month = _MONTH_NAMES[self.month]
        if self.operator == OP_DAY_OF_MONTH:
            when = f"{month} {self.day_of_month}"
        elif self.operator == OP_WEEKDAY_ON_OR_AFTER:
            when = f"first {_WEEKDAY_NAMES[self.day_of_week - 1]} on or after {month} {self.day_of_month}"
        else:
            when = f"{_OCCURRENCE_NAMES[self.operator]} {_WEEKDAY_NAMES[self.day_of_week - 1]} of {month}"
        return f"{when} at {clock}"

    def __str__(self) -> str:
        return f"{self.hex} ({self.describe()})"


def decode_dst_rule(hex_text: str) -> DstRule | None:
    """``'360E2000'`` → the 2nd Sunday of March at 02:00; ``'FFFFFFFF'`` → None (DST disabled).

    Tolerates surrounding whitespace, either case and a ``0x`` prefix. Anything else that is not a valid rule
    (not 8 hex digits, month 0 or 13-15, hour 24-31, seconds 3600-4095, a missing day or weekday, 31 April)
    raises :class:`LocalTimeError`, never a bare ``ValueError``: callers catch the library's errors only.
    """
    value = _parse_rule_value(hex_text)
    if value == _DISABLED_VALUE:
        return None
    return DstRule.from_int(value)


def encode_dst_rule(rule: DstRule | None) -> str:
    """The inverse of :func:`decode_dst_rule`: 8 upper-case hex digits, ``FFFFFFFF`` for None."""
    return DST_DISABLED if rule is None else rule.hex


def _parse_seconds(text: str, name: str) -> int:
    match = _INTEGER.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise LocalTimeError(f"LocalTimeParameters {name} {text!r} is not a whole number of seconds")
    return int(match.group(0))


@dataclass(frozen=True)
class LocalTimeParameters:
    """The four fields of an ESPI ``LocalTimeParameters`` resource, as sent (rules stay raw text on purpose).

    The rules are kept undecoded so that a malformed value can still be carried, shown and diagnosed by
    :func:`assess`; offsets are seconds, ``tz_offset`` negative west of Greenwich.
    """

    dst_start_rule: str
    dst_end_rule: str
    dst_offset: int
    tz_offset: int

    def __post_init__(self) -> None:
        for name in ("dst_start_rule", "dst_end_rule"):
            if not isinstance(getattr(self, name), str):
                raise LocalTimeError(f"LocalTimeParameters {name} must be text")
        for name in ("dst_offset", "tz_offset"):
            if type(getattr(self, name)) is not int:
                raise LocalTimeError(f"LocalTimeParameters {name} must be an int number of seconds")

    @classmethod
    def from_element(cls, element) -> LocalTimeParameters:
        """Reads an lxml ``LocalTimeParameters`` element in any (or no) namespace.

        Numbers may be whitespace-padded (seen in real files); a missing field or a non-integer raises
        :class:`LocalTimeError`.
        """
        texts: dict[str, str] = {}
        for child in element:
            if isinstance(child.tag, str):
                texts.setdefault(child.tag.rpartition("}")[2], child.text or "")
        missing = [n for n in ("dstStartRule", "dstEndRule", "dstOffset", "tzOffset") if n not in texts]
        if missing:
            raise LocalTimeError(f"LocalTimeParameters lacks {', '.join(missing)}")
        return cls(
            dst_start_rule=texts["dstStartRule"].strip(),
            dst_end_rule=texts["dstEndRule"].strip(),
            dst_offset=_parse_seconds(texts["dstOffset"], "dstOffset"),
            tz_offset=_parse_seconds(texts["tzOffset"], "tzOffset"),
        )


def _ordinal_seconds(dt: datetime) -> int:
    """Seconds from 0001-01-01T00:00 to the naive reading of ``dt``: integers cannot overflow like datetimes.

    Sub-second parts are dropped, which is exact here because every transition falls on a whole second.
    """
    return dt.toordinal() * _DAY + dt.hour * 3600 + dt.minute * 60 + dt.second


def _offset_name(seconds: int) -> str:
    """``-18000`` → ``UTC-05:00``, the form ``datetime.timezone`` uses for unnamed offsets."""
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds), 3600)
    minutes, secs = divmod(rest, 60)
    return f"UTC{sign}{hours:02d}:{minutes:02d}" + (f":{secs:02d}" if secs else "")


def _hours(seconds: int) -> str:
    """``18000`` → ``+5 h``, ``-12600`` → ``-3.5 h``: the wording of assessment messages."""
    text = f"{seconds / 3600:+.2f}".rstrip("0").rstrip(".")
    return f"{text} h"


class LocalTimeZone(tzinfo):
    """A ``tzinfo`` that follows decoded LocalTimeParameters: ``tz_offset`` all year, plus ``dst_offset`` from
    the start rule's transition to the end rule's (either may come first in the year: southern hemisphere).

    The start rule's clock time is read as standard time, the end rule's as daylight time (module docstring).
    ``utcoffset``/``dst``/``tzname`` follow PEP 495: a repeated wall time with ``fold=0`` is the earlier
    instant, with ``fold=1`` the later; a skipped wall time with ``fold=0`` takes the offset before the gap,
    with ``fold=1`` the one after, exactly like ``zoneinfo``. ``fromutc`` sets ``fold=1`` on the second pass
    through a repeated hour. Instances are immutable, hashable, equal by value and picklable. ``tzname`` is
    ``UTC-05:00`` style: the parameters carry no abbreviation, and inventing ``EST`` would be a guess.
    """

    def __init__(
        self,
        tz_offset: int,
        dst_offset: int = 0,
        start: DstRule | None = None,
        end: DstRule | None = None,
    ):
        for name, value in (("tz_offset", tz_offset), ("dst_offset", dst_offset)):
            if type(value) is not int:
                raise LocalTimeError(f"{name} must be an int number of seconds, got {value!r}")
        if (start is None) != (end is None):
            raise LocalTimeError("DST needs both a start and an end rule (or neither)")
        for total in (tz_offset, tz_offset + dst_offset):
            # datetime accepts offsets strictly inside ±24 h only.
            if not -_DAY < total < _DAY:
                raise LocalTimeError(f"UTC offset {total} s is not strictly within ±24 h")
        self._std = tz_offset
        self._dst = dst_offset if start is not None else 0
        self._start = start
        self._end = end
        self._has_dst = start is not None and self._dst != 0
        self._high = max(self._std, self._std + self._dst)
        self._low = min(self._std, self._std + self._dst)
        # year -> (sorted UTC ordinal seconds of transitions around that year, DST-on flag after each).
        self._events: dict[int, tuple[tuple[int, ...], tuple[bool, ...]]] = {}
        self._last_span: tuple[int, int, int] = (0, 0, self._std)
        # Offsets → timedelta, built once: utcoffset() runs for every aware datetime operation.
        self._deltas = {total: timedelta(seconds=total) for total in (self._std, self._std + self._dst)}

    @classmethod
    def from_parameters(cls, ltp: LocalTimeParameters) -> LocalTimeZone:
        """Builds the zone the parameters describe; :class:`LocalTimeError` when a rule does not decode.

        This does not judge plausibility (a wrong-sign tzOffset still builds): use :func:`assess` for that.
        """
        start = decode_dst_rule(ltp.dst_start_rule)
        end = decode_dst_rule(ltp.dst_end_rule)
        return cls(ltp.tz_offset, ltp.dst_offset, start, end)

    # -- value semantics -------------------------------------------------------------------------------------

    def _key(self) -> tuple:
        return (self._std, self._dst, self._start, self._end) if self._has_dst else (self._std, 0, None, None)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, LocalTimeZone):
            return NotImplemented
        return self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __reduce__(self):
        return (type(self), (self._std, self._dst, self._start, self._end))

    def __repr__(self) -> str:
        start = self._start.hex if self._start else DST_DISABLED
        end = self._end.hex if self._end else DST_DISABLED
        return f"LocalTimeZone(tz_offset={self._std}, dst_offset={self._dst}, start={start!r}, end={end!r})"

    def __str__(self) -> str:
        if not self._has_dst:
            return _offset_name(self._std)
        assert self._start is not None and self._end is not None
        return (
            f"{_offset_name(self._std)}, DST {_hours(self._dst)} from the {self._start.describe()} "
            f"to the {self._end.describe()}"
        )

    @property
    def tz_offset(self) -> int:
        return self._std

    @property
    def dst_offset(self) -> int:
        return self._dst

    @property
    def has_dst(self) -> bool:
        return self._has_dst

    # -- the rules as UTC instants ---------------------------------------------------------------------------

    def _transition_utc(self, rule: DstRule, year: int, wall_offset: int) -> int:
        wall = rule.day_ordinal(year) * _DAY + rule.hour * 3600 + rule.seconds
        return wall - wall_offset

    def _year_events(self, year: int) -> tuple[tuple[int, ...], tuple[bool, ...]]:
        """Transitions of ``year - 1 … year + 1`` in UTC ordinal seconds, sorted, with the DST state after.

        Three years, so that any instant of ``year`` has a preceding transition even when a rule spills into
        the next year or DST spans the new year.
        """
        cached = self._events.get(year)
        if cached is not None:
            return cached
        assert self._start is not None and self._end is not None
        events: list[tuple[int, bool]] = []
        for y in range(max(1, year - 1), min(9999, year + 1) + 1):
            events.append((self._transition_utc(self._start, y, self._std), True))
            events.append((self._transition_utc(self._end, y, self._std + self._dst), False))
        events.sort()
        result = (tuple(t for t, _ in events), tuple(on for _, on in events))
        if len(self._events) < 20_000:
            self._events[year] = result
        return result

    def _offset_at(self, utc_seconds: int) -> int:
        """Total UTC offset (seconds) in force at the UTC instant ``utc_seconds`` (ordinal seconds)."""
        if not self._has_dst:
            return self._std
        low, high, offset = self._last_span
        if low <= utc_seconds < high:
            return offset
        ordinal = min(max(utc_seconds // _DAY, 1), date.max.toordinal())
        instants, states = self._year_events(date.fromordinal(ordinal).year)
        index = bisect.bisect_right(instants, utc_seconds) - 1
        # Before the first transition of the window the state is the opposite of what that transition sets.
        on = states[index] if index >= 0 else not states[0]
        offset = self._std + self._dst if on else self._std
        if 0 <= index < len(instants) - 1:
            # Consecutive lookups (a day of readings, a loop over hours) almost always land in the same span
            # between two transitions; one tuple, replaced whole, so concurrent readers see a consistent span.
            self._last_span = (instants[index], instants[index + 1], offset)
        return offset

    def dst_period(self, year: int) -> tuple[datetime, datetime] | None:
        """UTC instants at which ``year``'s start and end rules fire (start after end: southern DST)."""
        if not self._has_dst:
            return None
        assert self._start is not None and self._end is not None
        epoch = datetime(1, 1, 1, tzinfo=UTC)
        start = self._transition_utc(self._start, year, self._std) - _DAY
        end = self._transition_utc(self._end, year, self._std + self._dst) - _DAY
        return epoch + timedelta(seconds=start), epoch + timedelta(seconds=end)

    # -- tzinfo protocol -------------------------------------------------------------------------------------

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        if dt is None:
            return None if self._has_dst else self._deltas[self._std]
        if not self._has_dst:
            return self._deltas[self._std]
        # With only two offsets in play, the state at (wall - larger offset) is the earlier reading and the
        # state at (wall - smaller offset) the later one; they differ only in a repeated or skipped hour,
        # where PEP 495 picks the earlier for fold=0 and the later for fold=1. (Inlined: this runs for every
        # aware datetime operation.)
        utc = _ordinal_seconds(dt) - (self._low if dt.fold else self._high)
        low, high, offset = self._last_span
        if not low <= utc < high:
            offset = self._offset_at(utc)
        return self._deltas[offset]

    def dst(self, dt: datetime | None) -> timedelta | None:
        offset = self.utcoffset(dt)
        return None if offset is None else offset - self._deltas[self._std]

    def tzname(self, dt: datetime | None) -> str | None:
        offset = self.utcoffset(dt)
        return None if offset is None else _offset_name(int(offset.total_seconds()))

    def fromutc(self, dt: datetime) -> datetime:
        if not isinstance(dt, datetime):
            raise TypeError("fromutc() requires a datetime argument")
        if dt.tzinfo is not self:
            raise ValueError("fromutc: dt.tzinfo is not self")
        utc = _ordinal_seconds(dt)
        offset = self._offset_at(utc)
        local = dt + self._deltas[offset]
        # Second pass through a repeated hour: the fold=0 reading of this wall time is another instant.
        if offset != self._high and self._offset_at(utc + offset - self._high) != offset:
            return local.replace(fold=1)
        return local


@dataclass(frozen=True)
class LocalTimeAssessment:
    """What :func:`assess` found. ``sane`` is False when any problem was found; warnings never make it False.

    ``zone`` is the zone the parameters describe whenever their rules decode, even when they are not sane, so
    a configured zone can still be compared with them.
    """

    sane: bool
    problems: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()
    start_rule: DstRule | None = None
    end_rule: DstRule | None = None
    zone: LocalTimeZone | None = field(default=None, compare=False)
    #: the problems that concern tzOffset alone (a subset of ``problems``): out of range, not quarter hours, or
    #: contradicting recognised DST rules; the others concern the DST rules and dstOffset
    tz_offset_problems: tuple[str, ...] = ()

    @property
    def dst_problems(self) -> tuple[str, ...]:
        """The problems of the DST part (rules, dstOffset): everything but ``tz_offset_problems``."""
        return tuple(p for p in self.problems if p not in self.tz_offset_problems)

    @property
    def summary(self) -> str:
        """One line: ``sane``, or the problems (then the warnings), separated by ``; ``."""
        if self.sane and not self.warnings:
            return "sane"
        head = "sane" if self.sane else "; ".join(self.problems)
        return "; ".join([head, *self.warnings])


@dataclass(frozen=True)
class _RuleFamily:
    """DST rules shared by a region, with the standard offsets of the zones that use them.

    Used only to spot offsets that contradict the rules (wrong sign, placeholders); matched on the transition
    dates, so equivalent encodings (``Sunday on or after the 8th`` vs ``2nd Sunday``) match too.
    """

    name: str
    start: DstRule
    end: DstRule
    low: int
    high: int


def _rule(month: int, operator: int, hour: int) -> DstRule:
    """A Sunday rule, the only kind the families below need."""
    return DstRule(month, operator, 0, 7, hour, 0)


_FAMILIES = (
    # Adak (-10 h) to Miquelon (-3 h); Newfoundland is -3.5 h.
    _RuleFamily("North American", _rule(3, 3, 2), _rule(11, 2, 2), -36000, -10800),
    _RuleFamily("North American (1987-2006)", _rule(4, 2, 2), _rule(10, 7, 2), -36000, -10800),
    # Nuuk (-2 h) and the Azores (-1 h) to Eastern Europe (+2 h); the hour differs by zone (01:00 UTC).
    _RuleFamily("European", _rule(3, 7, 1), _rule(10, 7, 1), -7200, 7200),
    # Adelaide (+9.5 h) to Lord Howe (+10.5 h).
    _RuleFamily("south-east Australian", _rule(10, 2, 2), _rule(4, 2, 3), 34200, 37800),
    # New Zealand (+12 h) and Chatham (+12.75 h).
    _RuleFamily("New Zealand", _rule(9, 7, 2), _rule(4, 2, 3), 43200, 45900),
)
_FAMILY_YEARS = range(2015, 2031)


def _family_of(start: DstRule, end: DstRule) -> _RuleFamily | None:
    ours = [(start.day_ordinal(y), end.day_ordinal(y)) for y in _FAMILY_YEARS]
    for family in _FAMILIES:
        if ours == [(family.start.day_ordinal(y), family.end.day_ordinal(y)) for y in _FAMILY_YEARS]:
            return family
    return None


def _epoch_reading(value: int) -> datetime | None:
    """The instant ``value`` names when read as epoch seconds, if it is a plausible transition instant.

    Plausible: in 2000-2099 and on a quarter hour (real transitions are). Applied only to values that already
    look wrong as a bitmap, because over half of all 32-bit values fall in 2000-2099 (``B40E2000`` does).
    """
    moment = datetime.fromtimestamp(value, UTC)
    if 2000 <= moment.year <= 2099 and value % _QUARTER_HOUR == 0:
        return moment
    return None


def _assess_rule(name: str, text: str, problems: list[str]) -> tuple[bool, DstRule | None]:
    """Decodes one rule for :func:`assess`: (disabled?, rule or None), appending any problem found."""
    try:
        value = _parse_rule_value(text)
    except LocalTimeError as exc:
        problems.append(f"{name}: {exc}")
        return False, None
    if value == _DISABLED_VALUE:
        return True, None
    rule: DstRule | None = None
    error: LocalTimeError | None = None
    try:
        rule = DstRule.from_int(value)
    except LocalTimeError as exc:
        error = exc
    shown = f"{value:08X}"
    suspicious = rule is None or bool(rule.ignored_fields) or rule.seconds % 60 != 0
    epoch = _epoch_reading(value) if suspicious else None
    if epoch is not None:
        problems.append(f"{name} {shown}: rule looks like an epoch timestamp ({epoch:%Y-%m-%dT%H:%M:%SZ})")
        return False, None
    if error is not None:
        problems.append(f"{name} {shown}: {error}")
        return False, None
    assert rule is not None
    if rule.ignored_fields:
        ignored = ", ".join(f"{f}={getattr(rule, f)}" for f in rule.ignored_fields)
        problems.append(f"{name} {shown} sets {ignored}, which operator {rule.operator} ignores: not a rule")
        return False, None
    return False, rule


def assess(ltp: LocalTimeParameters) -> LocalTimeAssessment:
    """Says whether LocalTimeParameters decode *sanely*, and why not.

    Problems (any makes the parameters unusable as a fallback zone):
      * tzOffset outside ±14 h or not a multiple of 15 min (a hint is added when it looks like minutes);
      * dstOffset outside 0-2 h or not a multiple of 15 min;
      * a rule that is not 8 hex digits, does not decode, sets fields its operator ignores, or is an epoch
        timestamp written in hex (Enbridge: ``65ED5A70`` = 2024-03-10T07:00Z);
      * only one of the two rules disabled; identical start and end; DST that would last under a day;
      * an offset that contradicts a recognised rule family: positive tzOffset with North American rules
        ("probably the sign is wrong", NGMA gas files), or 0 with them (a placeholder, one parser fixture).
    Warnings (usable, but worth a look): dstOffset 0 with DST rules; a dstOffset given with DST disabled; -4 h
    with North American rules (Atlantic time, or Eastern daylight time sent as standard, as the 2016 sandbox
    does next to Eastern-zone data); an offset no zone using the recognised rules has.
    """
    problems: list[str] = []
    warnings: list[str] = []
    # Problems of tzOffset alone are also kept apart: zone_for can still use sound DST rules without it.
    tz_problems: list[str] = []

    def tz_problem(message: str) -> None:
        problems.append(message)
        tz_problems.append(message)

    tz, dst = ltp.tz_offset, ltp.dst_offset
    if abs(tz) > _MAX_TZ_OFFSET:
        tz_problem(f"tzOffset {tz} s ({_hours(tz)}) is outside ±14 h")
    elif tz % _QUARTER_HOUR:
        hint = " (looks like minutes)" if tz % 15 == 0 and abs(tz) <= 14 * 60 else ""
        tz_problem(f"tzOffset {tz} s is not a whole number of quarter hours{hint}")
    if not 0 <= dst <= _MAX_DST_OFFSET:
        problems.append(f"dstOffset {dst} s is outside 0-2 h")
    elif dst % _QUARTER_HOUR:
        problems.append(f"dstOffset {dst} s is not a whole number of quarter hours")

    start_off, start = _assess_rule("dstStartRule", ltp.dst_start_rule, problems)
    end_off, end = _assess_rule("dstEndRule", ltp.dst_end_rule, problems)
    if start_off != end_off:
        problems.append("only one DST rule is FFFFFFFF (disabled): DST has no start or no end")
    if start_off and end_off and dst:
        warnings.append(f"dstOffset {dst} s is ignored: both DST rules are FFFFFFFF (disabled)")

    if start is not None and end is not None:
        if start == end:
            problems.append(f"dstStartRule and dstEndRule are the same rule ({start.describe()})")
        elif dst == 0:
            warnings.append("DST rules are given but dstOffset is 0: no DST is applied")
        elif 0 < dst <= _MAX_DST_OFFSET and abs(tz) <= _MAX_TZ_OFFSET:
            probe = LocalTimeZone(tz, dst, start, end)
            for year in _FAMILY_YEARS:
                period = probe.dst_period(year)
                assert period is not None
                begin, finish = period
                # DST that spans the new year ends in the following calendar year.
                if finish < begin:
                    following = probe.dst_period(year + 1)
                    assert following is not None
                    finish = following[1]
                if finish - begin < timedelta(days=1):
                    problems.append(f"DST would last less than a day in {year} ({begin:%Y-%m-%d %H:%M}Z)")
                    break
        family = _family_of(start, end)
        if family is not None and not family.low <= tz <= family.high:
            if tz == 0:
                tz_problem(
                    f"tzOffset 0 with {family.name} DST rules: probably a placeholder (no UTC zone uses them)"
                )
            elif family.low <= -tz <= family.high:
                wrong_sign = f"tzOffset {_hours(tz)} with {family.name} DST rules: probably the sign is wrong"
                tz_problem(wrong_sign)
            else:
                warnings.append(f"tzOffset {_hours(tz)} matches no zone that uses {family.name} DST rules")
        elif family is not None and family.name.startswith("North American") and tz == -14400:
            warnings.append(
                "tzOffset -4 h with North American DST rules is Atlantic time (America/Halifax); "
                "an Eastern custodian sending its daylight offset looks the same"
            )

    zone: LocalTimeZone | None = None
    if (start is not None and end is not None) or (start_off and end_off):
        try:
            zone = LocalTimeZone(tz, dst, start, end)
        except LocalTimeError:
            zone = None
    return LocalTimeAssessment(
        sane=not problems,
        problems=tuple(problems),
        warnings=tuple(warnings),
        tz_offset_problems=tuple(tz_problems),
        start_rule=start,
        end_rule=end,
        zone=zone,
    )


# -- IANA zones ----------------------------------------------------------------------------------------------

#: Zones :func:`iana_candidates` compares with: the North American zones Green Button custodians serve, plus a
#: few others so that European or Australian parameters are recognised too. Small on purpose: a cross-check.
CANDIDATE_ZONES = (
    "America/New_York",
    "America/Chicago",
    "America/Denver",
    "America/Phoenix",
    "America/Los_Angeles",
    "America/Anchorage",
    "Pacific/Honolulu",
    "America/Halifax",
    "America/St_Johns",
    "America/Toronto",
    "America/Winnipeg",
    "America/Edmonton",
    "America/Vancouver",
    "Europe/London",
    "Europe/Paris",
    "Australia/Sydney",
)

_CANDIDATE_FROM = datetime(2007, 1, 1, tzinfo=UTC)
_CANDIDATE_UNTIL = datetime(2031, 1, 1, tzinfo=UTC)


@lru_cache(maxsize=64)
def iana_candidates(ltp: LocalTimeParameters) -> tuple[str, ...]:
    """Zones of :data:`CANDIDATE_ZONES` whose offsets equal the parameters' over 2007-2030.

    Compared at noon on the 15th of every month of 2007 (offsets, DST presence) and one second either side of
    each of the parameters' transitions in every year (a transition on another day or at another time), so a
    zone must change exactly when the parameters do. Empty when the rules do not decode or nothing matches;
    sanity is not required (a wrong-sign tzOffset simply matches nothing).
    """
    try:
        zone = LocalTimeZone.from_parameters(ltp)
    except LocalTimeError:
        return ()
    # Monthly samples of one year settle offsets and DST presence; then only the transitions matter.
    moments = [datetime(_CANDIDATE_FROM.year, month, 15, 12, tzinfo=UTC) for month in range(1, 13)]
    for year in range(_CANDIDATE_FROM.year, _CANDIDATE_UNTIL.year):
        for instant in zone.dst_period(year) or ():
            moments += [instant - timedelta(seconds=1), instant]
    expected = [_utc_offset_of(zone, moment) for moment in moments]
    matches = []
    for name in CANDIDATE_ZONES:
        try:
            candidate = ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError, OSError):
            continue
        if all(_utc_offset_of(candidate, moment) == offset for moment, offset in zip(moments, expected, strict=True)):
            matches.append(name)
    return tuple(matches)


def _load_zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise LocalTimeError(f"time zone name {name!r} is empty")
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise LocalTimeError(
            f"unknown IANA time zone {name!r} (is the system tz database or the tzdata package installed?)"
        ) from exc


def _utc_offset_of(zone: tzinfo, moment: datetime) -> int:
    delta = moment.astimezone(zone).utcoffset()
    assert delta is not None
    return int(delta.total_seconds())


def _compare(zone: tzinfo, ltp_zone: LocalTimeZone, year: int) -> str | None:
    """None when both zones give the same offset at a few instants of ``year``, else the first difference.

    Instants: noon UTC on the 15th of each month (catches offsets and DST presence) and one second either side
    of each LTP transition (catches transitions on a different day or hour).
    """
    moments = [datetime(year, month, 15, 12, tzinfo=UTC) for month in range(1, 13)]
    period = ltp_zone.dst_period(year)
    if period is not None:
        for instant in period:
            moments += [instant - timedelta(seconds=1), instant]
    for moment in sorted(moments):
        ours, theirs = _utc_offset_of(ltp_zone, moment), _utc_offset_of(zone, moment)
        if ours != theirs:
            return (
                f"at {moment:%Y-%m-%dT%H:%M:%SZ} the zone says {_offset_name(theirs)}, "
                f"LocalTimeParameters say {_offset_name(ours)}"
            )
    return None


def zone_for(
    ltp: LocalTimeParameters | None,
    configured: str | None = None,
    *,
    year: int | None = None,
    stated_offset: tuple[int, datetime] | None = None,
) -> tuple[tzinfo, str]:
    """The time zone to render local time in, and a one-line note that says why (for logs and diagnostics).

    1. A configured IANA name always wins (mapping-notes §2); an unknown name raises :class:`LocalTimeError`
       instead of silently falling back. The note says whether the parameters agree with it over ``year``
       (default: the current UTC year), so a misconfigured custodian shows up in the logs.
    2. Otherwise the parameters' own zone when :func:`assess` finds them sane (the note names matching IANA
       zones, to help whoever configures the custodian).
    3. Otherwise the feed's own clues, each better than UTC days (docs/mapping.md §3):

       a. sound DST rules with a broken tzOffset (a placeholder 0, a flipped sign) and ``stated_offset``, the
          local UTC offset the feed's Atom dates state at an instant (``-04:00`` at 2019-10-24T20:31Z): the
          tzOffset that makes the rules give that offset at that instant, when the repaired parameters are
          sane;
       b. unusable DST rules (epoch seconds written in hex instead of the bit encoding, garbage) or dstOffset
          with a sound tzOffset: tzOffset as a fixed offset, without DST;
       c. ``stated_offset`` as a fixed offset.
    4. Otherwise UTC, with the reason: rendering in a made-up zone would be worse than rendering in UTC.
    """
    if year is None:
        year = datetime.now(UTC).year
    if type(year) is not int or not 1900 <= year <= 2200:
        raise LocalTimeError(f"cross-check year {year!r} is outside 1900-2200")
    verdict = assess(ltp) if ltp is not None else None
    if configured is not None:
        zone = _load_zone(configured)
        if verdict is None:
            return zone, f"configured zone {zone.key}; no LocalTimeParameters to cross-check"
        if verdict.zone is None:
            return zone, f"configured zone {zone.key}; LocalTimeParameters are no zone: {verdict.summary}"
        difference = _compare(zone, verdict.zone, year)
        flaws = "" if verdict.sane else f" ({verdict.summary})"
        if difference is None:
            return zone, f"configured zone {zone.key}; LocalTimeParameters agree with it in {year}{flaws}"
        disagree = f"LocalTimeParameters disagree in {year}: {difference}"
        return zone, f"configured zone {zone.key}; {disagree}{flaws}"
    stated = _stated_note(stated_offset) if stated_offset is not None else ""
    if verdict is None:
        if stated_offset is not None:
            return LocalTimeZone(stated_offset[0]), (
                f"no configured zone and no LocalTimeParameters: using {stated}, as a fixed offset (no DST)")
        return UTC, "no configured zone and no LocalTimeParameters: using UTC"
    assert ltp is not None
    if verdict.sane and verdict.zone is not None:
        return verdict.zone, f"no configured zone: using LocalTimeParameters {verdict.zone}{_matches(ltp, verdict)}"
    if stated_offset is not None and verdict.tz_offset_problems and not verdict.dst_problems:
        repaired = _repair_tz_offset(ltp, *stated_offset)
        if repaired is not None:
            fixed, fixed_verdict = repaired
            assert fixed_verdict.zone is not None
            return fixed_verdict.zone, (
                f"no configured zone; LocalTimeParameters unusable ({verdict.summary}), but their DST rules are "
                f"sound and give {stated} when tzOffset is {fixed.tz_offset}: using {fixed_verdict.zone}"
                f"{_matches(fixed, fixed_verdict)}")
    if verdict.dst_problems and not verdict.tz_offset_problems and \
            assess(LocalTimeParameters(DST_DISABLED, DST_DISABLED, 0, ltp.tz_offset)).sane:
        return LocalTimeZone(ltp.tz_offset), (
            f"no configured zone and the DST part of the LocalTimeParameters is unusable ({verdict.summary}): "
            f"using their tzOffset, {_offset_name(ltp.tz_offset)} fixed (no DST)")
    if stated_offset is not None:
        return LocalTimeZone(stated_offset[0]), (
            f"no configured zone and LocalTimeParameters are unusable ({verdict.summary}): using {stated}, as a "
            "fixed offset (no DST)")
    return UTC, f"no configured zone and LocalTimeParameters are unusable ({verdict.summary}): using UTC"


def _matches(ltp: LocalTimeParameters, verdict: LocalTimeAssessment) -> str:
    matches = iana_candidates(ltp)
    same = f"; matches {', '.join(matches)}" if matches else "; matches no common IANA zone"
    caveat = f" ({'; '.join(verdict.warnings)})" if verdict.warnings else ""
    return same + caveat


def _stated_note(stated_offset: tuple[int, datetime]) -> str:
    offset, instant = stated_offset
    return f"{_offset_name(offset)}, stated by the feed's timestamps (at {instant.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ})"


def _repair_tz_offset(ltp: LocalTimeParameters, offset: int, instant: datetime
                      ) -> tuple[LocalTimeParameters, LocalTimeAssessment] | None:
    """The parameters with the tzOffset that makes their DST rules give ``offset`` at ``instant`` (standard time
    tried first, then daylight time), when those are sane; else None."""
    for candidate in (offset, offset - ltp.dst_offset):
        if candidate == ltp.tz_offset:
            continue
        fixed = LocalTimeParameters(ltp.dst_start_rule, ltp.dst_end_rule, ltp.dst_offset, candidate)
        verdict = assess(fixed)
        if verdict.sane and verdict.zone is not None and _utc_offset_of(verdict.zone, instant) == offset:
            return fixed, verdict
    return None
