"""ESPI IntervalReadings → CDS usage segments (CDS WG3-01 §10.8; docs/mapping.md "Usage segments", D1).

Segmentation does not follow IntervalBlocks (custodians cut blocks differently in every delivery, so block-based
segments would change ids and duplicate on re-ingestion). Instead:

* **grid data** (a reading as long as its series' usual interval, under a day) goes into one segment per
  UsagePoint × class × interval × phase × *custodian-local calendar day*; every series of the UsagePoint with the
  same key shares that segment, one ValueFormat each (forward, reverse, net, demand and their costs side by side);
* **period data** (a day or longer, DST-length days, billing months, odd readings in a grid series) gets one
  segment per distinct (start, duration), with a single Value Set and ``interval`` = the period's length, as CDS
  requires for variable-length periods.

Value Set *i* covers [segment_start + i·interval, + interval) in UTC, so a local day of 15-minute data has 92 or
100 Value Sets on DST days. Missing slots are ``null``. Two readings in one slot of one series: the newer entry
(``updated``, then document order) wins.

Blocks arrive per UsagePoint ordered by a lower bound of their readings' start times. A bucket is emitted as soon
as no later block can add to it (its day ended before the next block's lower bound), so memory holds only the
buckets that overlap the blocks being read.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, tzinfo
from datetime import time as dtime
from typing import Any

from bridge.from_espi.value_formats import SeriesFormat, cds_quality, cds_tier, cds_tou, cost_value
from cds.ids import IdFactory
from espi.codes import INT48_SENTINEL, TIME_SENTINEL
from espi.intervals import IntervalBlock

DAY = 86400


def rfc3339(epoch: int) -> str:
    """Epoch seconds → ``YYYY-MM-DDThh:mm:ssZ`` (CDS datetimes are always UTC here)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))


def local_date(epoch: int, zone: tzinfo) -> date:
    return datetime.fromtimestamp(epoch, zone).date()


def local_day_bounds(day: date, zone: tzinfo) -> tuple[int, int]:
    """UTC epoch bounds [start, end) of a local calendar day (23, 24 or 25 hours long)."""
    start = datetime.combine(day, dtime(0), zone).astimezone(UTC)
    end = datetime.combine(day + timedelta(days=1), dtime(0), zone).astimezone(UTC)
    return int(start.timestamp()), int(end.timestamp())


@dataclass(slots=True)
class Series:
    """One ESPI series as the segmenter sees it."""

    index: int
    #: natural key (stable across runs); orders series inside a segment
    key: str
    format: SeriesFormat
    #: the series' usual reading length (its grid), or None when unknown
    grid: int | None
    interval_length: int | None


@dataclass(slots=True)
class StagedBlock:
    """An IntervalBlock with what the segmenter needs to place it."""

    series: int
    lower_bound: int | None
    #: (entry updated epoch or -1, entry seq, block index): the newer wins a slot collision
    provenance: tuple[int, int, int]
    block: IntervalBlock


@dataclass(slots=True)
class SectionWindow:
    id: str
    start_date: date
    end_date: date


@dataclass(slots=True)
class UsagePointContext:
    """Everything the segments of one UsagePoint refer to."""

    key: str
    zone: tzinfo
    series: dict[int, Series]
    account_ids: list[str]
    servicecontract_ids: list[str]
    servicepoint_ids: list[str]
    meterdevice_ids: list[str]
    meterdevice_id: str
    bill_sections: list[SectionWindow] = field(default_factory=list)
    tou_names: dict[int, str] = field(default_factory=dict)


class _SeriesSlots:
    __slots__ = ("attrs", "costs", "prov", "values")

    def __init__(self) -> None:
        self.values: dict[int, int | None] = {}
        self.prov: dict[int, tuple[int, int, int]] = {}
        self.costs: dict[int, int] | None = None
        self.attrs: dict[int, tuple] | None = None


class _Bucket:
    __slots__ = ("complete_at", "day", "interval", "key", "period_start", "series")

    def __init__(self, key: tuple, interval: int, complete_at: int, day: date | None, period_start: int | None):
        self.key = key
        self.interval = interval
        self.complete_at = complete_at
        self.day = day
        self.period_start = period_start
        self.series: dict[int, _SeriesSlots] = {}


class Segmenter:
    """Builds the usage segments of one UsagePoint from its staged blocks (see module docstring)."""

    def __init__(self, context: UsagePointContext, ids: IdFactory, stamp: str,
                 warn: Callable[[str], None] | None = None):
        self.context = context
        self.ids = ids
        self.stamp = stamp
        self.warn = warn or (lambda message: None)
        self._buckets: dict[tuple, _Bucket] = {}
        self._day_cache: dict[date, tuple[int, int]] = {}
        self.dropped = 0
        self.collisions = 0
        #: readings of the document's series in a slot (the translator's billing pseudo-series are not counted)
        self.readings = 0
        #: the accounting of docs/mapping.md §4.11, for the document's series: (reason → readings, and those of
        #: them with a value); "placed" is the slots filled, "superseded" the readings a newer one replaced
        self.accounting: Counter[str] = Counter()

    # -- input ------------------------------------------------------------------------------------------------

    def add(self, staged: StagedBlock) -> None:
        series = self.context.series[staged.series]
        fmt = series.format
        block = staged.block
        starts, durations = block.slots(series.interval_length)
        placed = placed_values = superseded = superseded_values = 0
        values = block.values
        costs = block.costs
        attrs = _attribute_rows(block)
        grid = series.grid
        cls = fmt.segment_class
        shift = fmt.register_at_end
        prov = staged.provenance
        index = series.index
        zone = self.context.zone
        buckets = self._buckets
        day_start = day_end = -1
        phase = None
        grid_bucket: _Bucket | None = None
        for i, start in enumerate(starts):
            duration = durations[i]
            if start is None or duration is None or duration <= 0 or start == TIME_SENTINEL:
                self._drop(start, duration, values[i], staged.series)
                continue
            if shift:
                start += duration
            if duration == grid and duration < DAY:
                if not (day_start <= start < day_end and start % duration == phase):
                    day = local_date(start, zone)
                    bounds = self._day_cache.get(day)
                    if bounds is None:
                        bounds = local_day_bounds(day, zone)
                        self._day_cache[day] = bounds
                    day_start, day_end = bounds
                    phase = start % duration
                    key = ("grid", cls, duration, phase, day)
                    grid_bucket = buckets.get(key)
                    if grid_bucket is None:
                        grid_bucket = _Bucket(key, duration, day_end, day, None)
                        buckets[key] = grid_bucket
                bucket = grid_bucket
            else:
                key = ("period", cls, start, duration)
                bucket = buckets.get(key)
                if bucket is None:
                    bucket = _Bucket(key, duration, start + 1, None, start)
                    buckets[key] = bucket
            slots = bucket.series.get(index)
            if slots is None:
                slots = _SeriesSlots()
                bucket.series[index] = slots
            value = values[i]
            if value == INT48_SENTINEL:
                value = None
            existing = slots.prov.get(start)
            if existing is not None:
                superseded += 1
                if existing > prov:
                    superseded_values += value is not None
                    continue  # the stored reading comes from a newer entry
                # the newer reading replaces the older one whole: its cost and attributes too, even if absent
                if slots.values[start] is not None:
                    superseded_values += 1
                    placed_values -= 1
                if slots.costs is not None:
                    slots.costs.pop(start, None)
                if slots.attrs is not None:
                    slots.attrs.pop(start, None)
            else:
                placed += 1
            placed_values += value is not None
            slots.values[start] = value
            slots.prov[start] = prov
            if costs is not None:
                cost = costs[i]
                if cost is not None and cost != INT48_SENTINEL:
                    if slots.costs is None:
                        slots.costs = {}
                    slots.costs[start] = cost
            if attrs is not None:
                if slots.attrs is None:
                    slots.attrs = {}
                slots.attrs[start] = attrs[i]
        self.collisions += superseded
        if index >= 0:  # the document's own series (billing pseudo-series have negative indexes)
            self.readings += placed
            accounting = self.accounting
            accounting["placed"] += placed
            accounting["placed with values"] += placed_values
            accounting["superseded"] += superseded
            accounting["superseded with values"] += superseded_values
            if series.interval_length and 0 in block.durations:
                accounting["duration 0 read as intervalLength"] += block.durations.count(0)

    def _drop(self, start: int | None, duration: int | None, value: int | None, series: int) -> None:
        """Counts a reading that cannot be placed, under its reason (docs/mapping.md §4.11)."""
        self.dropped += 1
        if series < 0:
            return
        if start is None:
            reason = "no start"
        elif start == TIME_SENTINEL:
            reason = "no-time placeholder start"
        else:
            reason = "no duration"
        self.accounting[reason] += 1
        if value is not None and value != INT48_SENTINEL:
            self.accounting[f"{reason} with values"] += 1

    # -- output -----------------------------------------------------------------------------------------------

    def flush_before(self, bound: int | None) -> Iterator[dict[str, Any]]:
        """Emits every bucket no reading at or after ``bound`` can still reach (None: everything)."""
        if bound is None:
            ready = list(self._buckets.values())
        else:
            ready = [b for b in self._buckets.values() if b.complete_at <= bound]
        if not ready:
            return
        ready.sort(key=lambda b: (min(min(s.values) for s in b.series.values()), b.key[1], b.interval))
        for bucket in ready:
            del self._buckets[bucket.key]
            segment = self._segment(bucket)
            if segment is not None:
                yield segment

    def _segment(self, bucket: _Bucket) -> dict[str, Any] | None:
        context = self.context
        interval = bucket.interval
        slot_starts: set[int] = set()
        for slots in bucket.series.values():
            slot_starts.update(slots.values)
        first = min(slot_starts)
        last = max(slot_starts)
        count = (last - first) // interval + 1
        granularity = _granularity(bucket)
        # formats: one per series with data, plus a cost format per series with costs, sorted by id
        columns: list[tuple[str, dict[str, Any], Callable[[list[int]], list[Any]]]] = []
        used_ids: dict[str, int] = {}
        ordered = sorted(bucket.series.items(), key=lambda item: context.series[item[0]].key)
        pending_costs: list[tuple[str, dict[str, Any], Callable[[list[int]], list[Any]], str]] = []
        for index, slots in ordered:
            series = context.series[index]
            fmt = series.format
            has_values = any(v is not None for v in slots.values.values())
            has_costs = bool(slots.costs)
            if not has_values and not has_costs:
                continue
            value_format, value_at = self._value_column(series, slots, granularity, used_ids)
            columns.append((value_format["id"], value_format, value_at))
            if has_costs:
                if fmt.cost_currency:
                    cost_format = {"id": "cost_" + value_format["id"], "type": "cost",
                                   "currency": fmt.cost_currency, "indexes": []}
                else:
                    cost_format = {"id": "greenbridge_cost_without_currency_" + value_format["id"],
                                   "type": "greenbridge_cost_without_currency", "indexes": []}
                costs = slots.costs
                key = "c" if fmt.cost_currency else "v"
                cache: dict[int, dict] = {}

                def cost_at(starts: list[int], costs: dict[int, int] = costs, key: str = key,
                            cache: dict[int, dict] = cache) -> list[Any]:
                    column = []
                    for raw in map(costs.get, starts):
                        if raw is None:
                            column.append(None)
                            continue
                        obj = cache.get(raw)
                        if obj is None:
                            obj = {key: cost_value(raw)}
                            cache[raw] = obj
                        column.append(obj)
                    return column

                pending_costs.append((cost_format["id"], cost_format, cost_at, value_format["id"]))
        for cost_id, cost_format, cost_at, _value_id in pending_costs:
            columns.append((cost_id, cost_format, cost_at))
        if not columns:
            return None
        columns.sort(key=lambda c: c[0])
        position = {column_id: i for i, (column_id, _f, _v) in enumerate(columns)}
        for _cost_id, cost_format, _cost_at, value_id in pending_costs:
            cost_format["indexes"] = [position[value_id]]
        starts = list(range(first, first + count * interval, interval))
        values = [list(row) for row in zip(*(column(starts) for _id, _format, column in columns), strict=True)]
        segment_end = last + interval
        if bucket.key[0] == "grid":
            _kind, cls, _interval, phase, day = bucket.key
            segment_id = self.ids.make("usagesegment", context.key, cls, "grid", interval, phase, day.isoformat())
            first_day = last_day = day
        else:
            _kind, cls, start, duration = bucket.key
            segment_id = self.ids.make("usagesegment", context.key, cls, "period", start, duration)
            first_day = local_date(start, context.zone)
            last_day = local_date(start + duration - 1, context.zone)
        related_sections = [s.id for s in context.bill_sections
                            if s.start_date <= last_day and s.end_date >= first_day]
        return {
            "cds_usagesegment_id": segment_id,
            "cds_created": self.stamp,
            "cds_modified": self.stamp,
            "cds_synced": self.stamp,
            "related_aggregations": [],
            "related_accounts": list(context.account_ids),
            "related_servicecontracts": list(context.servicecontract_ids),
            "related_servicepoints": list(context.servicepoint_ids),
            "related_meterdevices": list(context.meterdevice_ids),
            "related_billsections": related_sections,
            "segment_start": rfc3339(first),
            "segment_end": rfc3339(segment_end),
            "interval": interval,
            "formats": [f for _id, f, _getter in columns],
            "values": values,
        }

    def _value_column(self, series: Series, slots: _SeriesSlots, granularity: str, used_ids: dict[str, int]
                      ) -> tuple[dict[str, Any], Callable[[list[int]], list[Any]]]:
        fmt = series.format
        value_format: dict[str, Any] = {"type": fmt.value_type}
        if fmt.units is not None:
            value_format["units"] = fmt.units
        value_format.update(fmt.fields)
        if fmt.value_type == "meter_readings":
            value_format["related_meterdevice"] = self.context.meterdevice_id
        suffix = ""
        per_value: dict[int, dict[str, Any]] = {}
        present = [s for s, v in slots.values.items() if v is not None]
        attrs = slots.attrs or {}

        # quality: one shared value goes on the format, otherwise on each value that states one (D3, D4)
        def codes_at(start: int) -> tuple[int, ...]:
            row = attrs.get(start)
            codes = row[0] if row else ()
            if not codes and fmt.default_quality is not None:
                codes = (fmt.default_quality,)
            return codes

        if not attrs:
            # no per-reading attributes: the ReadingType's defaultQuality, if any, holds for every value
            quality = cds_quality((fmt.default_quality,)) if fmt.default_quality is not None else None
            if quality is not None and present:
                value_format["quality"] = quality
        else:
            qualities = {s: codes_at(s) for s in present}
            mapped = {cds_quality(c) for c in qualities.values()}
            stated = {s for s, c in qualities.items() if c}
            if present and len(stated) == len(present) and len(mapped) == 1 and None not in mapped:
                value_format["quality"] = mapped.pop()
            elif stated:
                # Mixed: the ReadingType's default goes on the format as an extension, and only readings with
                # their own ReadingQuality carry one (ESPI states quality on the exceptions).
                default = cds_quality((fmt.default_quality,)) if fmt.default_quality is not None else None
                if default is not None:
                    value_format["greenbridge_default_quality"] = default
                for s in stated:
                    row = attrs.get(s)
                    if fmt.default_quality is not None and not (row and row[0]):
                        continue
                    extension: dict[str, Any] = {"greenbridge_espi_quality": list(qualities[s])}
                    quality = cds_quality(qualities[s])
                    if quality is not None:
                        extension["greenbridge_quality"] = quality
                    per_value.setdefault(s, {}).update(extension)

        # tou / tier / cpp: uniform → on the format (and in the id), varying → on each value
        for position, name, series_code in ((1, "tou", fmt.series_tou), (2, "tier", fmt.series_tier),
                                            (3, "cpp", fmt.series_cpp)):
            if attrs:
                effective = {}
                for s in present:
                    row = attrs.get(s)
                    effective[s] = row[position] if row and row[position] is not None else series_code
                distinct = set(effective.values())
            else:
                effective = {}
                distinct = {series_code} if present else set()
            if not distinct or distinct == {None}:
                continue
            if len(distinct) == 1:
                code = distinct.pop()
                if name == "tou":
                    known, cds_value = cds_tou(code, self.context.tou_names)
                elif name == "tier":
                    known, cds_value = cds_tier(code)
                else:
                    known, cds_value = False, None
                supported = fmt.supports_tou if name == "tou" else fmt.supports_tier if name == "tier" else False
                if known and supported:
                    value_format[name] = cds_value
                else:
                    value_format[f"greenbridge_{name}_code"] = code
                if code:
                    suffix += f"_{name}{code}"
            else:
                for s, code in effective.items():
                    if code is not None:
                        per_value.setdefault(s, {})[f"greenbridge_{name}"] = code

        base = f"{fmt.base_id}{suffix}_{fmt.fixed_granularity or granularity}"
        ordinal = used_ids.get(base, 0) + 1
        used_ids[base] = ordinal
        value_format["id"] = base if ordinal == 1 else f"{base}_{ordinal}"
        if fmt.reading_type:
            value_format["greenbridge_reading_type"] = fmt.reading_type
        values = slots.values
        value_object = fmt.value_object
        if per_value:
            def value_at(starts: list[int]) -> list[Any]:
                column = []
                for start in starts:
                    raw = values.get(start)
                    if raw is None:
                        column.append(None)
                        continue
                    extra = per_value.get(start)
                    obj = value_object(raw)
                    column.append({**obj, **extra} if extra else obj)
                return column
        else:
            def value_at(starts: list[int]) -> list[Any]:
                return [None if raw is None else value_object(raw) for raw in map(values.get, starts)]
        # id first in the object, as in the CDS examples
        ordered = {"id": value_format.pop("id")}
        ordered.update(value_format)
        return ordered, value_at


def _attribute_rows(block: IntervalBlock) -> list[tuple] | None:
    """Per-reading (qualities, tou, tier, cpp), or None when the block has none of them."""
    if block.qualities is None and block.tous is None and block.tiers is None and block.cpps is None:
        return None
    n = len(block.values)
    qualities = block.qualities or [()] * n
    tous = block.tous or [None] * n
    tiers = block.tiers or [None] * n
    cpps = block.cpps or [None] * n
    return list(zip(qualities, tous, tiers, cpps, strict=True))


#: a local day is 23 to 25 hours long: a period of at least 23 hours is a day (or longer) for format ids
DAY_OR_LONGER = 23 * 3600


def _granularity(bucket: _Bucket) -> str:
    if bucket.key[0] == "grid":
        return "interval"
    return "monthly" if bucket.interval >= 27 * DAY else "daily" if bucket.interval >= DAY_OR_LONGER \
        else "interval"
