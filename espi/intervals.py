"""IntervalBlock and IntervalReading (ESPI 4.0 espi.xsd; espi.md §1.5), read column-wise.

IntervalReadings are most of every Green Button file, so a block's readings are read as columns (starts,
durations, values, costs…): one pass over each reading's children collects texts, and each column is converted
in bulk. (Measured: this beats XPath column extraction, whose alignment checks cost more than the walk itself,
and it is aligned by construction.) Only a column holding something other than integers (fractional epochs,
junk) is converted element by element, repairing what it can and reporting it.

A reading without ``timePeriod`` has ``start``/``duration`` None here: ESPI says such readings are consecutive,
each ``ReadingType.intervalLength`` long, from ``IntervalBlock.interval.start``, and the ReadingType is only known
once the link graph is resolved (see ``IntervalBlock.slots``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from functools import lru_cache

from lxml import etree

from espi.codes import INT48_SENTINEL
from espi.model import Diagnostics, build
from espi.namespaces import local_name, namespace_of
from espi.usage import DateTimeInterval


@dataclass(frozen=True, slots=True)
class IntervalReading:
    """One reading. ``value`` and ``cost`` are raw integers (value × 10^powerOfTenMultiplier; cost in 10⁻⁵)."""

    start: int | None
    duration: int | None
    value: int | None
    cost: int | None = None
    qualities: tuple[int, ...] = ()
    tou: int | None = None
    consumption_tier: int | None = None
    cpp: int | None = None


@dataclass(slots=True)
class IntervalBlock:
    """One IntervalBlock with its readings as parallel columns (a column is None when no reading has it)."""

    interval: DateTimeInterval | None
    starts: list[int | None]
    durations: list[int | None]
    values: list[int | None]
    costs: list[int | None] | None = None
    qualities: list[tuple[int, ...]] | None = None
    tous: list[int | None] | None = None
    tiers: list[int | None] | None = None
    cpps: list[int | None] | None = None
    line: int | None = None

    def __len__(self) -> int:
        return len(self.values)

    def value_count(self) -> int:
        """Readings with a value: neither absent nor the "not set" sentinel (−2⁴⁷)."""
        values = self.values
        return len(values) - values.count(None) - values.count(INT48_SENTINEL)

    def readings(self) -> Iterator[IntervalReading]:
        """The readings as objects (convenient; the translator uses the columns directly)."""
        n = len(self.values)
        costs = self.costs or [None] * n
        qualities = self.qualities or [()] * n
        tous = self.tous or [None] * n
        tiers = self.tiers or [None] * n
        cpps = self.cpps or [None] * n
        for i in range(n):
            yield IntervalReading(self.starts[i], self.durations[i], self.values[i], costs[i], qualities[i],
                                  tous[i], tiers[i], cpps[i])

    def slots(self, interval_length: int | None) -> tuple[list[int | None], list[int | None]]:
        """Start and duration of every reading, filling readings without ``timePeriod`` (espi.md §1.5).

        A reading without ``timePeriod`` starts where the previous one ended (the first at the block's
        ``interval.start``) and lasts ``interval_length``. A reading whose duration is 0 lasts ``interval_length``
        too: real files write 0 where they mean "the series' interval" (one-minute net-metering data with
        ``intervalLength`` 60; docs/mapping.md §3). Readings that cannot be placed (no block start or no interval
        length) stay None (or keep their duration 0).
        """
        stretch = bool(interval_length) and 0 in self.durations
        if None not in self.starts and None not in self.durations and not stretch:
            return self.starts, self.durations
        starts: list[int | None] = []
        durations: list[int | None] = []
        cursor = self.interval.start if self.interval is not None else None
        for start, duration in zip(self.starts, self.durations, strict=True):
            if duration == 0 and interval_length:
                duration = interval_length
            if start is None:
                start = cursor
                if duration is None:
                    duration = interval_length
            if start is not None and duration is not None:
                cursor = start + duration
            else:
                cursor = None
            starts.append(start)
            durations.append(duration)
        return starts, durations

    def lower_bound(self) -> int | None:
        """A time no reading of this block starts before (used to merge blocks in time order)."""
        known = [s for s in self.starts if s is not None]
        bound = min(known) if known else None
        if (not known or len(known) < len(self.starts)) and self.interval is not None \
                and self.interval.start is not None:
            bound = self.interval.start if bound is None else min(bound, self.interval.start)
        return bound


class _Tags:
    """Clark-notation tags of the IntervalBlock children in one namespace (espi, or none at all)."""

    def __init__(self, namespace: str):
        def tag(name: str) -> str:
            return f"{{{namespace}}}{name}" if namespace else name

        self.reading = tag("IntervalReading")
        self.interval = tag("interval")
        self.value = tag("value")
        self.time_period = tag("timePeriod")
        self.start = tag("start")
        self.duration = tag("duration")
        self.cost = tag("cost")
        self.quality_holder = tag("ReadingQuality")
        self.quality = tag("quality")
        self.tou = tag("tou")
        self.tier = tag("consumptionTier")
        self.cpp = tag("cpp")


@lru_cache(maxsize=8)
def _tags(namespace: str) -> _Tags:
    return _Tags(namespace)


def _text(element: etree._Element) -> str | None:
    # A comment inside a number splits its text; join the pieces so nothing is lost.
    return "".join(element.itertext()) if len(element) else element.text


def read_interval_block(element: etree._Element, diagnostics: Diagnostics) -> IntervalBlock:
    """Reads one ``IntervalBlock`` element (in any namespace) into columns.

    One pass over the readings' children collects the texts of each column in reading order (a reading without
    an element contributes None, so columns stay aligned by construction); the columns are then converted in
    bulk, falling back to element-by-element repair only for a column that holds something other than integers.
    """
    tags = _tags(namespace_of(element.tag))
    line = element.sourceline
    interval = None
    starts: list[str | None] = []
    durations: list[str | None] = []
    values: list[str | None] = []
    costs: list[str | None] = []
    extras: dict[int, list] = {}  # reading index → [qualities, tou, tier, cpp] texts, for the few that have them
    duplicates = 0
    reading_tag, value_tag, period_tag, cost_tag = tags.reading, tags.value, tags.time_period, tags.cost
    start_tag, duration_tag = tags.start, tags.duration
    for reading in element:
        tag = reading.tag
        if tag != reading_tag:
            if tag == tags.interval:
                interval = build(DateTimeInterval, reading, diagnostics)
            elif isinstance(tag, str) and local_name(tag) == "IntervalReading":
                diagnostics.at(reading, "IntervalReading in another namespace than its IntervalBlock; ignored",
                               kind="IntervalReading namespace mismatch")
            continue
        start = duration = value = cost = None
        seen = 0
        for child in reading:
            ctag = child.tag
            if ctag == value_tag:
                seen += value is not None
                value = _text(child)
            elif ctag == period_tag:
                seen += start is not None or duration is not None
                for part in child:
                    ptag = part.tag
                    if ptag == start_tag:
                        start = _text(part)
                    elif ptag == duration_tag:
                        duration = _text(part)
            elif ctag == cost_tag:
                seen += cost is not None
                cost = _text(child)
            elif isinstance(ctag, str):
                _read_extra(child, ctag, tags, extras.setdefault(len(values), [[], None, None, None]))
        if seen:
            duplicates += 1
        starts.append(start)
        durations.append(duration)
        values.append(value)
        costs.append(cost)
    if duplicates:
        diagnostics.add(f"{duplicates} IntervalReadings repeat an element; the last one of each is used", line,
                        kind="IntervalReading element repeated")
    block = IntervalBlock(
        interval=interval,
        starts=_integers(starts, "timePeriod/start", diagnostics, line),
        durations=_integers(durations, "timePeriod/duration", diagnostics, line),
        values=_integers(values, "value", diagnostics, line),
        line=line,
    )
    if any(c is not None for c in costs):
        block.costs = _integers(costs, "cost", diagnostics, line)
    if extras:
        n = len(values)
        qualities: list[tuple[int, ...]] = [()] * n
        tous: list[int | None] = [None] * n
        tiers: list[int | None] = [None] * n
        cpps: list[int | None] = [None] * n
        for index, (quality_texts, tou, tier, cpp) in extras.items():
            qualities[index] = tuple(q for q in _integers(quality_texts, "ReadingQuality/quality", diagnostics,
                                                            line) if q is not None)
            tous[index], tiers[index], cpps[index] = _integers([tou, tier, cpp], "tou/consumptionTier/cpp",
                                                               diagnostics, line)
        block.qualities = qualities if any(qualities) else None
        block.tous = tous if any(t is not None for t in tous) else None
        block.tiers = tiers if any(t is not None for t in tiers) else None
        block.cpps = cpps if any(c is not None for c in cpps) else None
    incomplete = sum((s is None) != (d is None) for s, d in zip(block.starts, block.durations, strict=True))
    if incomplete:
        diagnostics.add(f"{incomplete} IntervalReading timePeriods lack their start or duration", line,
                        kind="timePeriod incomplete")
    return block


def _read_extra(child: etree._Element, tag: str, tags: _Tags, extra: list) -> None:
    if tag == tags.quality_holder:
        for quality in child:
            if quality.tag == tags.quality:
                extra[0].append(_text(quality))
    elif tag == tags.tou:
        extra[1] = _text(child)
    elif tag == tags.tier:
        extra[2] = _text(child)
    elif tag == tags.cpp:
        extra[3] = _text(child)


def _integers(texts: list[str | None], what: str, diagnostics: Diagnostics, line: int | None
              ) -> list[int | None]:
    """Texts → integers; whitespace is fine, fractions round half-even, junk becomes None (all reported)."""
    try:
        return list(map(int, texts))  # the common case: every text a plain integer
    except (TypeError, ValueError):
        pass
    result: list[int | None] = []
    for text in texts:
        if text is None:
            result.append(None)
            continue
        try:
            result.append(int(text))
            continue
        except ValueError:
            pass
        try:
            number = Decimal(text.strip())
        except InvalidOperation:
            number = None
        if number is None or not number.is_finite():
            diagnostics.add(f"<{what}> is not a number: {text.strip()[:40]!r}; ignored", line,
                            kind=f"<{what}> not a number")
            result.append(None)
            continue
        rounded = int(number.to_integral_value(rounding=ROUND_HALF_EVEN))
        if rounded != number:
            diagnostics.add(f"<{what}> {text.strip()} is not a whole number; rounded to {rounded}", line,
                            kind=f"fractional <{what}> rounded")
        result.append(rounded)
    return result
