"""IntervalBlock and IntervalReading (ESPI 4.0 espi.xsd; espi.md §1.5), read column-wise.

IntervalReadings are most of every Green Button file, so a block's readings are read as columns (starts,
durations, values, costs…) with compiled XPath queries that run in libxml2, not element by element in Python.
That fast path applies when every reading has the same shape (each column present exactly once in every reading,
or absent from all); anything irregular (a reading without ``timePeriod``, fractional epochs, junk numbers,
varying ReadingQuality counts) falls back to a per-reading reader that repairs what it can and reports it.

A reading without ``timePeriod`` has ``start``/``duration`` None here: ESPI says such readings are consecutive,
each ``ReadingType.intervalLength`` long, from ``IntervalBlock.interval.start``, and the ReadingType is only known
once the link graph is resolved (see ``IntervalBlock.slots``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache

from lxml import etree

from espi.model import Diagnostics, build, to_int
from espi.namespaces import local_name, namespace_of
from espi.usage import DateTimeInterval

#: optional per-reading columns: attribute name → path below IntervalReading
_OPTIONAL = (
    ("costs", "cost"),
    ("qualities", "ReadingQuality/quality"),
    ("tous", "tou"),
    ("tiers", "consumptionTier"),
    ("cpps", "cpp"),
)
_REQUIRED = (("starts", "timePeriod/start"), ("durations", "timePeriod/duration"), ("values", "value"))


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
        ``interval.start``) and lasts ``interval_length``. Readings that cannot be placed (no block start or no
        interval length) stay None.
        """
        if None not in self.starts and None not in self.durations:
            return self.starts, self.durations
        starts: list[int | None] = []
        durations: list[int | None] = []
        cursor = self.interval.start if self.interval is not None else None
        for start, duration in zip(self.starts, self.durations, strict=True):
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


class _Queries:
    """Compiled XPath queries for IntervalBlocks in one namespace (espi, or none at all)."""

    def __init__(self, namespace: str):
        prefix = "e:" if namespace else ""
        namespaces = {"e": namespace} if namespace else None

        def path(p: str) -> str:
            return "/".join(prefix + step for step in p.split("/"))

        reading = path("IntervalReading")
        counts = [f"count({reading})"]
        for _attr, p in _REQUIRED + _OPTIONAL:
            counts.append(f"count({reading}/{path(p)})")
            counts.append(f"count({reading}[{path(p)}])")
        self.counts = etree.XPath("concat(" + ", ',', ".join(counts) + ")", namespaces=namespaces)
        self.columns = {
            attr: etree.XPath(f"{reading}/{path(p)}/text()", namespaces=namespaces, smart_strings=False)
            for attr, p in _REQUIRED + _OPTIONAL
        }
        self.reading_tag = f"{{{namespace}}}IntervalReading" if namespace else "IntervalReading"


@lru_cache(maxsize=8)
def _queries(namespace: str) -> _Queries:
    return _Queries(namespace)


def read_interval_block(element: etree._Element, diagnostics: Diagnostics) -> IntervalBlock:
    """Reads one ``IntervalBlock`` element (in any namespace) into columns."""
    namespace = namespace_of(element.tag)
    queries = _queries(namespace)
    interval = None
    for child in element:
        if isinstance(child.tag, str) and local_name(child.tag) == "interval":
            interval = build(DateTimeInterval, child, diagnostics)
            break
    block = _read_fast(element, queries, interval)
    if block is None:
        block = _read_slow(element, queries, interval, diagnostics)
    block.line = element.sourceline
    return block


def _read_fast(element: etree._Element, queries: _Queries, interval: DateTimeInterval | None
               ) -> IntervalBlock | None:
    counts = [int(float(c)) for c in queries.counts(element).split(",")]
    n = counts[0]
    columns: dict[str, list | None] = {}
    position = 1
    for attr, _p in _REQUIRED + _OPTIONAL:
        total, having = counts[position], counts[position + 1]
        position += 2
        required = attr in ("starts", "durations", "values")
        if total == having == n and n:
            columns[attr] = queries.columns[attr](element)
        elif total == 0 and not required:
            columns[attr] = None
        elif n == 0:
            columns[attr] = [] if required else None
        else:
            return None
    for texts in columns.values():
        if texts is not None and len(texts) != n:
            return None  # split text nodes (a comment inside a number): read reading by reading
    try:
        block = IntervalBlock(
            interval=interval,
            starts=list(map(int, columns["starts"])),
            durations=list(map(int, columns["durations"])),
            values=list(map(int, columns["values"])),
        )
        for attr in ("costs", "tous", "tiers", "cpps"):
            texts = columns[attr]
            if texts is not None:
                setattr(block, attr, list(map(int, texts)))
        if columns["qualities"] is not None:
            block.qualities = [(int(q),) for q in columns["qualities"]]
    except ValueError:
        return None  # fractional epochs, junk: the slow path repairs and reports
    return block


def _read_slow(element: etree._Element, queries: _Queries, interval: DateTimeInterval | None,
               diagnostics: Diagnostics) -> IntervalBlock:
    starts: list[int | None] = []
    durations: list[int | None] = []
    values: list[int | None] = []
    costs: list[int | None] = []
    qualities: list[tuple[int, ...]] = []
    tous: list[int | None] = []
    tiers: list[int | None] = []
    cpps: list[int | None] = []
    for reading in element:
        tag = reading.tag
        if not isinstance(tag, str) or local_name(tag) != "IntervalReading":
            continue
        start = duration = value = cost = tou = tier = cpp = None
        quality: list[int] = []
        for child in reading:
            if not isinstance(child.tag, str):
                continue
            name = local_name(child.tag)
            if name == "value":
                value = to_int(child, diagnostics)
            elif name == "timePeriod":
                period = build(DateTimeInterval, child, diagnostics)
                start, duration = period.start, period.duration
            elif name == "cost":
                cost = to_int(child, diagnostics)
            elif name == "ReadingQuality":
                for q in child:
                    if isinstance(q.tag, str) and local_name(q.tag) == "quality":
                        code = to_int(q, diagnostics)
                        if code is not None:
                            quality.append(code)
            elif name == "tou":
                tou = to_int(child, diagnostics)
            elif name == "consumptionTier":
                tier = to_int(child, diagnostics)
            elif name == "cpp":
                cpp = to_int(child, diagnostics)
        if (start is None) != (duration is None):
            diagnostics.at(reading, "IntervalReading timePeriod lacks its start or duration",
                           kind="timePeriod incomplete")
        starts.append(start)
        durations.append(duration)
        values.append(value)
        costs.append(cost)
        qualities.append(tuple(quality))
        tous.append(tou)
        tiers.append(tier)
        cpps.append(cpp)
    return IntervalBlock(
        interval=interval,
        starts=starts,
        durations=durations,
        values=values,
        costs=costs if any(c is not None for c in costs) else None,
        qualities=qualities if any(qualities) else None,
        tous=tous if any(t is not None for t in tous) else None,
        tiers=tiers if any(t is not None for t in tiers) else None,
        cpps=cpps if any(c is not None for c in cpps) else None,
    )
