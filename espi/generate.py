"""A deterministic generator of Green Button subscription feeds (ESPI 4.0, valid against the strict schemas).

The same ``FeedSpec`` always produces the same bytes: ids are UUID v5 of the resource hrefs (GBA requires
persistent ids), values come from a seeded PRNG. The feed looks like a Batch/Subscription answer of a Connect My
Data custodian: typed Atom links (``espi-entry/…``), shared ReadingTypes and LocalTimeParameters, one
IntervalBlock entry per series and custodian-local day (92 or 100 quarter hours on DST days), monthly
UsageSummaries with a line item, optional net metering (forward and reverse series), costs, estimated readings
and gaps. It is what the demo, the benchmarks and many tests run on, and what the sandbox custodian serves.
Writing streams: a year of 15-minute data for 100 UsagePoints (3.5 million readings) never sits in memory.

``FeedSpec.traits`` adds the quirks of real files the translator has rules for (docs/mapping.md §3, §4, §6; each
selectable, see TRAITS), so that tests and the sandbox can serve them: the same spec still gives the same bytes.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import IO
from zoneinfo import ZoneInfo

from espi.namespaces import ATOM, ESPI

#: LocalTimeParameters of US Eastern time (espi.md §1.6): 2nd Sunday of March to 1st Sunday of November
EASTERN = ("B40E2000", 3600, "360E2000", -18000)
ZONE = ZoneInfo("America/New_York")
GENERATED_AT = "2026-01-01T00:00:00Z"
NAMESPACE = uuid.UUID("6b1d6d5e-9a3c-5d1e-8f00-67726e627264")  # a fixed namespace for generated ids

#: (commodity name) → ReadingType codes: acc, commodity, flow, interval, kind, p, uom, phase
SERIES = {
    "electric_forward": (4, 1, 1, None, 12, 0, 72, 769),
    "electric_reverse": (4, 1, 19, None, 12, 0, 72, 769),
    "gas": (4, 7, 1, 86400, 12, -3, 169, 0),
    "water": (4, 9, 1, 86400, 58, 0, 128, 0),
}
SERVICE_KIND = {"electric": 0, "gas": 1, "water": 2}

#: the file traits FeedSpec.traits can add (what real custodians write), and what each does to the feed
TRAITS = {
    "accumulation-none": "electric ReadingTypes say accumulationBehaviour 0 (none) for interval energy",
    "cumulative-label": "electric ReadingTypes say accumulationBehaviour 1 (bulkQuantity) for interval amounts",
    "zero-durations": "electric IntervalReadings give timePeriod/duration 0 (the ReadingType's intervalLength holds)",
    "directional-summaries": "one UsageSummary per flow direction and billing period, each naming its ReadingType "
                             "(readingTypeRef); the reverse one follows the forward one, with the same statusTimeStamp",
    "link-conflict": "the IntervalBlock entries of a UsagePoint's second series keep their self link under their own "
                     "MeterReading, but their up link names the first series' collection",
    "reverse-only": "the last UsagePoint (electric) has only a reverse (received) series: a generation meter",
    "offset-timestamps": "no LocalTimeParameters; Atom dates carry the local offset (-05:00) instead of Z",
    "epoch-dst-rules": "LocalTimeParameters with the DST rules written as the year's transition instants (epoch "
                       "seconds in hex) instead of the ESPI bit encoding",
}


@dataclass(frozen=True)
class FeedSpec:
    """What to generate. ``commodity`` is electric, gas, water or mixed (UsagePoints cycle through the three)."""

    usage_points: int = 1
    days: int = 31
    start: date = date(2025, 1, 1)
    interval: int = 900
    commodity: str = "electric"
    net_metering: bool = False
    costs: bool = True
    summaries: bool = True
    #: some estimated readings (ReadingQuality 8) and one missing reading a day
    quality_gaps: bool = False
    seed: int = 1
    base_url: str = "https://sandbox.greenbridge.test/DataCustodian/espi/1_1/resource"
    subscription: str = "1"
    #: names from TRAITS
    traits: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        object.__setattr__(self, "traits", frozenset(self.traits))
        unknown = sorted(self.traits - TRAITS.keys())
        if unknown:
            raise ValueError(f"unknown trait {', '.join(unknown)} (known: {', '.join(TRAITS)})")
        if {"accumulation-none", "cumulative-label"} <= self.traits:
            raise ValueError("traits accumulation-none and cumulative-label label the same ReadingTypes: pick one")
        if {"offset-timestamps", "epoch-dst-rules"} <= self.traits:
            raise ValueError("traits offset-timestamps (no LocalTimeParameters) and epoch-dst-rules exclude each other")
        if self.commodity not in ("electric", "gas", "water", "mixed"):
            raise ValueError(f"commodity must be electric, gas, water or mixed, not {self.commodity!r}")
        if self.usage_points < 1 or self.days < 1:
            raise ValueError("usage_points and days must be at least 1")
        if self.interval <= 0 or 86400 % self.interval:
            raise ValueError("interval must divide a day (e.g. 300, 900, 3600)")
        if "reverse-only" in self.traits and _commodity_of(self, self.usage_points - 1) != "electric":
            raise ValueError("trait reverse-only needs the last UsagePoint to be electric")
        if self.traits & {"directional-summaries", "link-conflict"} and not self.net_metering:
            raise ValueError("traits directional-summaries and link-conflict need two series: add net metering")


@dataclass
class GeneratedTotals:
    """Independent totals of what was written (raw ESPI integers), for tests and benchmarks."""

    readings: int = 0
    entries: int = 0
    #: (usage point, series name) → (count, sum of raw values, sum of raw costs)
    series: dict[tuple[int, str], list[int]] = field(default_factory=dict)


def _uuid(href: str) -> str:
    return f"urn:uuid:{uuid.uuid5(NAMESPACE, href)}"


def _local_midnight(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=ZONE).astimezone(UTC).timestamp())


def _entry(self_href: str, up_href: str, kind: str, content: str, related: tuple[tuple[str, str], ...] = (),
           title: str | None = None, stamp: str = GENERATED_AT) -> str:
    links = [f'<link rel="self" href="{self_href}" type="espi-entry/{kind}"/>',
             f'<link rel="up" href="{up_href}" type="espi-feed/{kind}"/>']
    links += [f'<link rel="related" href="{href}" type="{link_type}"/>' for href, link_type in related]
    title_xml = f"<title>{title}</title>" if title else ""
    return (f"<entry><id>{_uuid(self_href)}</id>{''.join(links)}{title_xml}"
            f"<content>{content}</content><published>{stamp}</published>"
            f"<updated>{stamp}</updated></entry>\n")


def _commodity_of(spec: FeedSpec, usage_point: int) -> str:
    return ("electric", "gas", "water")[usage_point % 3] if spec.commodity == "mixed" else spec.commodity


def _series_of(spec: FeedSpec, usage_point: int) -> tuple[str, list[str]]:
    commodity = _commodity_of(spec, usage_point)
    if commodity == "electric":
        if "reverse-only" in spec.traits and usage_point == spec.usage_points - 1:
            return commodity, ["electric_reverse"]
        return commodity, ["electric_forward", "electric_reverse"] if spec.net_metering else ["electric_forward"]
    return commodity, [commodity]


def _stamp(spec: FeedSpec) -> str:
    """GENERATED_AT, or with trait offset-timestamps the same instant on the custodian's local clock."""
    if "offset-timestamps" not in spec.traits:
        return GENERATED_AT
    instant = datetime.fromisoformat(GENERATED_AT)
    return instant.astimezone(ZONE).isoformat()


def _epoch_rules(year: int) -> tuple[str, str]:
    """(start, end) of DST in ``year`` in ZONE as epoch seconds in hex: how Enbridge writes its DST rules."""
    moment = datetime(year, 1, 1, tzinfo=UTC)
    transitions = []
    while moment.year == year:
        following = moment + timedelta(hours=1)
        if moment.astimezone(ZONE).utcoffset() != following.astimezone(ZONE).utcoffset():
            transitions.append(int(following.timestamp()))
        moment = following
    start, end = transitions
    return f"{start:08X}", f"{end:08X}"


def _value(rng: random.Random, name: str, local_hour: float) -> int:
    """A plausible raw value: Wh per interval for electricity, therm/1000 per day for gas, gallons for water."""
    if name == "electric_forward":
        shape = 1.0 + 0.8 * (7 <= local_hour < 9) + 1.2 * (17 <= local_hour < 22)
        return int(rng.randint(80, 160) * shape)
    if name == "electric_reverse":
        if 7 <= local_hour < 19:
            peak = 1.0 - abs(local_hour - 13) / 6
            return int(rng.randint(150, 400) * peak)
        return 0
    if name == "gas":
        return rng.randint(800, 6000)
    return rng.randint(40, 400)


def generate_feed(spec: FeedSpec) -> Iterator[str]:
    """The feed as text chunks (one entry each), for streaming writers."""
    totals = GeneratedTotals()
    yield from _generate(spec, totals)


def write_feed(out: IO[str], spec: FeedSpec, progress: Callable[[int], None] | None = None) -> GeneratedTotals:
    """Writes the feed to a text stream and returns the totals of what it holds."""
    totals = GeneratedTotals()
    for chunk in _generate(spec, totals):
        out.write(chunk)
        if progress is not None:
            progress(len(chunk))
    return totals


def _generate(spec: FeedSpec, totals: GeneratedTotals) -> Iterator[str]:
    base = spec.base_url.rstrip("/")
    subscription = f"{base}/Subscription/{spec.subscription}"
    ltp_href = f"{base}/LocalTimeParameters/1"
    traits = spec.traits
    stamp = _stamp(spec)
    yield (f'<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="{ATOM}" xmlns:espi="{ESPI}">\n'
           f"<id>{_uuid(subscription)}</id><title>Green Button Subscription Feed</title>"
           f'<updated>{stamp}</updated><link rel="self" href="{base}/Batch/Subscription/{spec.subscription}" '
           f'type="espi-feed/Subscription"/>\n')
    end_rule, dst_offset, start_rule, tz_offset = EASTERN
    if "epoch-dst-rules" in traits:
        start_rule, end_rule = _epoch_rules(spec.start.year)
    local_time = "offset-timestamps" not in traits
    if local_time:
        yield _entry(ltp_href, f"{base}/LocalTimeParameters", "LocalTimeParameters",
                     f"<espi:LocalTimeParameters><espi:dstEndRule>{end_rule}</espi:dstEndRule>"
                     f"<espi:dstOffset>{dst_offset}</espi:dstOffset><espi:dstStartRule>{start_rule}"
                     f"</espi:dstStartRule><espi:tzOffset>{tz_offset}</espi:tzOffset></espi:LocalTimeParameters>",
                     title="DST For North America", stamp=stamp)
    # shared ReadingTypes
    used = sorted({name for u in range(spec.usage_points) for name in _series_of(spec, u)[1]})
    reading_type_href = {}
    for number, name in enumerate(used, start=1):
        acc, commodity, flow, interval, kind, p, uom, phase = SERIES[name]
        interval = interval or spec.interval
        if name.startswith("electric"):
            acc = 0 if "accumulation-none" in traits else 1 if "cumulative-label" in traits else acc
        href = f"{base}/ReadingType/{number}"
        reading_type_href[name] = href
        currency = "<espi:currency>840</espi:currency>" if spec.costs else ""
        yield _entry(href, f"{base}/ReadingType", "ReadingType",
                     f"<espi:ReadingType><espi:accumulationBehaviour>{acc}</espi:accumulationBehaviour>"
                     f"<espi:commodity>{commodity}</espi:commodity>{currency}"
                     f"<espi:dataQualifier>12</espi:dataQualifier><espi:defaultQuality>17</espi:defaultQuality>"
                     f"<espi:flowDirection>{flow}</espi:flowDirection><espi:intervalLength>{interval}"
                     f"</espi:intervalLength><espi:kind>{kind}</espi:kind><espi:phase>{phase}</espi:phase>"
                     f"<espi:powerOfTenMultiplier>{p}</espi:powerOfTenMultiplier>"
                     f"<espi:timeAttribute>0</espi:timeAttribute><espi:uom>{uom}</espi:uom></espi:ReadingType>",
                     title=name.replace("_", " "), stamp=stamp)
    days = [spec.start + timedelta(days=d) for d in range(spec.days)]
    for u in range(spec.usage_points):
        commodity, names = _series_of(spec, u)
        up_href = f"{subscription}/UsagePoint/{u + 1}"
        related = [(f"{up_href}/MeterReading", "espi-feed/MeterReading")]
        if local_time:
            related.append((ltp_href, "espi-entry/LocalTimeParameters"))
        if spec.summaries:
            related.append((f"{up_href}/UsageSummary", "espi-feed/UsageSummary"))
        yield _entry(up_href, f"{subscription}/UsagePoint", "UsagePoint",
                     f"<espi:UsagePoint><espi:ServiceCategory><espi:kind>{SERVICE_KIND[commodity]}</espi:kind>"
                     "</espi:ServiceCategory><espi:status>1</espi:status></espi:UsagePoint>", tuple(related),
                     stamp=stamp)
        #: series name → (year, month) → [usage, cost] of the whole local days of that month
        monthly: dict[str, dict[tuple[int, int], list[int]]] = {name: {} for name in names}
        for m, name in enumerate(names, start=1):
            mr_href = f"{up_href}/MeterReading/{m}"
            yield _entry(mr_href, f"{up_href}/MeterReading", "MeterReading", "<espi:MeterReading/>",
                         ((reading_type_href[name], "espi-entry/ReadingType"),
                          (f"{mr_href}/IntervalBlock", "espi-feed/IntervalBlock")), stamp=stamp)
            # trait link-conflict: the second series' blocks name the first series' collection as their up
            block_up = f"{up_href}/MeterReading/1/IntervalBlock" if "link-conflict" in traits and m == 2 else \
                f"{mr_href}/IntervalBlock"
            rng = random.Random(spec.seed * 1_000_003 + u * 101 + m)
            stats = totals.series.setdefault((u, name), [0, 0, 0])
            interval = SERIES[name][3] or spec.interval
            rate = 12 if name.startswith("electric") else 95 if name == "gas" else 900  # 10⁻⁵ USD per raw unit
            months = monthly[name]
            if interval >= 86400:
                # daily readings, one block per local month (DST days last 23 or 25 hours)
                by_month: dict[tuple[int, int], list[date]] = {}
                for day in days:
                    by_month.setdefault((day.year, day.month), []).append(day)
                for (year, month), month_days in by_month.items():
                    block_start = _local_midnight(month_days[0])
                    block_end = _local_midnight(month_days[-1] + timedelta(days=1))
                    parts = [f"<espi:IntervalBlock><espi:interval><espi:duration>{block_end - block_start}"
                             f"</espi:duration><espi:start>{block_start}</espi:start></espi:interval>"]
                    for day in month_days:
                        start = _local_midnight(day)
                        duration = _local_midnight(day + timedelta(days=1)) - start
                        value = _value(rng, name, 12.0)
                        cost = value * rate
                        parts.append(_reading(spec, value, cost, start, duration, None, stats))
                        month_total = months.setdefault((year, month), [0, 0])
                        month_total[0] += value
                        month_total[1] += cost if spec.costs else 0
                    parts.append("</espi:IntervalBlock>")
                    yield _entry(f"{mr_href}/IntervalBlock/{year}{month:02d}", block_up,
                                 "IntervalBlock", "".join(parts), stamp=stamp)
                    totals.entries += 1
                continue
            written_duration = 0 if "zero-durations" in traits and name.startswith("electric") else interval
            for day in days:
                start = _local_midnight(day)
                end = _local_midnight(day + timedelta(days=1))
                parts = [f"<espi:IntervalBlock><espi:interval><espi:duration>{end - start}</espi:duration>"
                         f"<espi:start>{start}</espi:start></espi:interval>"]
                skip = (u * 7 + day.toordinal()) % (end - start) // interval if spec.quality_gaps else -1
                for i, slot in enumerate(range(start, end, interval)):
                    if i == skip:
                        continue
                    local_hour = (slot - start) / 3600
                    value = _value(rng, name, local_hour)
                    quality = 8 if spec.quality_gaps and (slot // interval) % 97 == 0 else None
                    cost = value * rate if name == "electric_forward" else None
                    parts.append(_reading(spec, value, cost, slot, written_duration, quality, stats))
                    month_total = months.setdefault((day.year, day.month), [0, 0])
                    month_total[0] += value
                    month_total[1] += cost if spec.costs and cost is not None else 0
                parts.append("</espi:IntervalBlock>")
                yield _entry(f"{mr_href}/IntervalBlock/{day.isoformat()}", block_up,
                             "IntervalBlock", "".join(parts), stamp=stamp)
                totals.entries += 1
        if spec.summaries:
            # the first series makes the bill; with directional summaries every series gets one, naming its
            # ReadingType; a generation meter's (reverse-only) always names it
            stated = "directional-summaries" in traits or names == ["electric_reverse"]
            billed = names if "directional-summaries" in traits else names[:1]
            for position, name in enumerate(billed):
                yield from _summaries(spec, up_href, commodity, monthly[name], stamp,
                                      reading_type_href[name] if stated else None, position > 0, name)
        totals.readings = sum(s[0] for s in totals.series.values())
    yield "</feed>\n"


def _reading(spec: FeedSpec, value: int, cost: int | None, start: int, duration: int, quality: int | None,
             stats: list[int]) -> str:
    stats[0] += 1
    stats[1] += value
    cost_xml = ""
    if spec.costs and cost is not None:
        stats[2] += cost
        cost_xml = f"<espi:cost>{cost}</espi:cost>"
    quality_xml = f"<espi:ReadingQuality><espi:quality>{quality}</espi:quality></espi:ReadingQuality>" \
        if quality is not None else ""
    return (f"<espi:IntervalReading>{cost_xml}{quality_xml}<espi:timePeriod><espi:duration>{duration}"
            f"</espi:duration><espi:start>{start}</espi:start></espi:timePeriod><espi:value>{value}</espi:value>"
            "</espi:IntervalReading>")


def _summaries(spec: FeedSpec, up_href: str, commodity: str, monthly: dict[tuple[int, int], list[int]],
               stamp: str = GENERATED_AT, reading_type_ref: str | None = None, extra: bool = False,
               name: str = "") -> Iterator[str]:
    """One UsageSummary per complete local month: usage and cost of a series plus a customer charge. ``extra``: the
    summary of another flow direction (no bill; its own href); ``reading_type_ref``: the series' ReadingType."""
    first, last = spec.start, spec.start + timedelta(days=spec.days)
    uom, multiplier, code = {"electric": (72, 0, 1), "gas": (169, -3, 7), "water": (128, 0, 9)}[commodity]
    reference = f"<espi:readingTypeRef>{reading_type_ref}</espi:readingTypeRef>" if reading_type_ref else ""
    for (year, month), (usage, cost) in sorted(monthly.items()):
        month_start = date(year, month, 1)
        month_end = date(year + (month == 12), month % 12 + 1, 1)
        if month_start < first or month_end > last:
            continue  # only whole months are billed
        start = _local_midnight(month_start)
        duration = _local_midnight(month_end) - start
        charge = 1_000_000  # 10.00 USD customer charge, in 10⁻⁵ USD
        currency = "<espi:currency>840</espi:currency>" if spec.costs else ""
        bill = (f"<espi:billLastPeriod>{cost + charge}</espi:billLastPeriod>"
                f"<espi:costAdditionalLastPeriod>{charge}</espi:costAdditionalLastPeriod>"
                "<espi:costAdditionalDetailLastPeriod><espi:amount>1000000</espi:amount>"
                "<espi:note>Customer charge</espi:note><espi:itemKind>4</espi:itemKind>"
                "</espi:costAdditionalDetailLastPeriod>") if spec.costs and not extra else ""
        href = f"{up_href}/UsageSummary/{year}{month:02d}" + (f"-{name}" if extra else "")
        yield _entry(href, f"{up_href}/UsageSummary", "UsageSummary",
                     f"<espi:UsageSummary><espi:billingPeriod><espi:duration>{duration}</espi:duration>"
                     f"<espi:start>{start}</espi:start></espi:billingPeriod>{bill}{currency}"
                     f"<espi:overallConsumptionLastPeriod><espi:powerOfTenMultiplier>{multiplier}"
                     f"</espi:powerOfTenMultiplier><espi:uom>{uom}</espi:uom><espi:value>{usage}</espi:value>"
                     f"{reference}</espi:overallConsumptionLastPeriod><espi:qualityOfReading>14</espi:qualityOfReading>"
                     f"<espi:statusTimeStamp>{start + duration}</espi:statusTimeStamp>"
                     f"<espi:commodity>{code}</espi:commodity></espi:UsageSummary>", stamp=stamp)
