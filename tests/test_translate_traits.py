"""Traits of real Green Button files and the translation rules for each (docs/mapping.md §3, §4.4, §4.8, §4.11, §5.2,
§6.1): energy with accumulation "none", readings of duration 0, series labelled cumulative whose values do not
climb, per-direction UsageSummaries, IntervalBlocks whose self and up links disagree, reverse-only UsagePoints,
feeds whose only clue to local time is their timestamps' offset or a tzOffset beside unusable DST rules, and the
accounting of every reading.

Each trait is tested on a document written here (tests/espi_builders.py) and on one the generator writes with
``FeedSpec.traits``; where a shared sample has the trait, on the sample too. Expectations are computed from the
numbers the test wrote: exact Decimals, exact instants.
"""

from __future__ import annotations

import io
from collections import defaultdict
from datetime import UTC, date, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from espi_builders import E, Ent, block, document, reading, reading_type

from bridge.from_espi import LISTINGS, TranslateOptions, translate
from espi.generate import FeedSpec, write_feed

BASE = "https://traits.test/espi/1_1/resource/Subscription/5"
UP = f"{BASE}/UsagePoint/1"
LTP = f"{BASE}/LocalTimeParameters/1"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
T0 = 1719792000  # 2024-07-01T00:00:00Z
MINUTE, HOUR, DAY = 60, 3600, 86400


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def run(data: bytes, **options) -> dict:
    """Every listing, diagnostics, notes and the reading account of one translation."""
    with translate(data, TranslateOptions(now=NOW, **options)) as result:
        out = {name: list(result.listing(name)) for name in LISTINGS}
        out["diagnostics"] = result.diagnostics
        out["notes"] = list(result.notes)
        out["account"] = result.reading_account()
    return out


def usage_point(*series: tuple, summaries: tuple = (), ltp: tuple | None = None, updated: str = "2024-08-01T00:00:00Z",
                service_kind: int = 0) -> list[Ent]:
    """A UsagePoint with series ``(ReadingType, [block entries (each a tuple of blocks)])``: MeterReading m's
    ReadingType is ``{UP}/ReadingType/m``, its blocks ``{UP}/MeterReading/m/IntervalBlock/b``; ``summaries`` are
    ``(UsageSummary, related hrefs)``."""
    related = [f"{UP}/MeterReading"] + ([LTP] if ltp else []) + ([f"{UP}/UsageSummary"] if summaries else [])
    entries = [Ent(UP, f"{BASE}/UsagePoint", tuple(related),
                   (E("UsagePoint", E("ServiceCategory", E("kind", service_kind)), E("status", 1)),), updated)]
    if ltp:
        entries.append(Ent(LTP, f"{BASE}/LocalTimeParameters", (), (ltp,), updated))
    for m, (rt, blocks) in enumerate(series, start=1):
        mr = f"{UP}/MeterReading/{m}"
        entries.append(Ent(mr, f"{UP}/MeterReading", (f"{UP}/ReadingType/{m}", f"{mr}/IntervalBlock"),
                           (E("MeterReading"),), updated))
        entries.append(Ent(f"{UP}/ReadingType/{m}", f"{UP}/ReadingType", (), (rt,), updated))
        for b, content in enumerate(blocks):
            entries.append(Ent(f"{mr}/IntervalBlock/{b}", f"{mr}/IntervalBlock", (), content, updated))
    for n, (summary, links) in enumerate(summaries):
        entries.append(Ent(f"{UP}/UsageSummary/{n}", f"{UP}/UsageSummary", tuple(links), (summary,), updated))
    return entries


def grid(start: int, step: int, values: list, duration: int | None = None) -> tuple:
    """One block of readings every ``step`` seconds, each stating ``duration`` (default ``step``)."""
    readings = [reading(v, start + step * i, step if duration is None else duration) for i, v in enumerate(values)]
    return block(start, step * len(values), *readings)


def columns(translation: dict) -> dict[str, list[tuple[int, object]]]:
    """Format id → [(slot start epoch, value object)] of every non-null value, over all segments."""
    found: dict[str, list] = defaultdict(list)
    for segment in translation["usage_segments"]:
        start = int(datetime.fromisoformat(segment["segment_start"]).timestamp())
        for position, fmt in enumerate(segment["formats"]):
            for i, value_set in enumerate(segment["values"]):
                if value_set[position] is not None:
                    found[fmt["id"]].append((start + i * segment["interval"], value_set[position]))
    return found


def formats(translation: dict) -> dict[str, dict]:
    return {f["id"]: f for s in translation["usage_segments"] for f in s["formats"]}


def total(column: list, key: str = "eu") -> Decimal:
    return sum((value[key] for _start, value in column), Decimal(0))


def generated(spec: FeedSpec) -> tuple[bytes, object]:
    buffer = io.StringIO()
    totals = write_feed(buffer, spec)
    return buffer.getvalue().encode(), totals


def summary(start: int, duration: int, value: int, *, reference: str | None = None, stamp: int | None = None,
            bill: int | None = None) -> tuple:
    consumption = [E("powerOfTenMultiplier", 0), E("uom", 72), E("value", value)]
    if reference is not None:
        consumption.append(E("readingTypeRef", reference))
    children = [E("billingPeriod", E("duration", duration), E("start", start))]
    if bill is not None:
        children += [E("billLastPeriod", bill), E("currency", 840)]
    children += [E("overallConsumptionLastPeriod", *consumption), E("qualityOfReading", 14),
                 E("statusTimeStamp", stamp if stamp is not None else start + duration), E("commodity", 1)]
    return E("UsageSummary", *children)


# -- energy with accumulationBehaviour 0 ("none") -------------------------------------------------------------------

def test_energy_with_accumulation_none_is_interval_usage():
    values = [1200, 800, 0, 450]
    translation = run(document(usage_point((reading_type(acc=0), [(grid(T0, HOUR, values),)]))))
    found = columns(translation)
    assert set(found) == {"electric_usage_forward_interval"}
    assert found["electric_usage_forward_interval"] == [
        (T0 + HOUR * i, {"eu": Decimal(v).scaleb(-3)}) for i, v in enumerate(values)]
    fmt = formats(translation)["electric_usage_forward_interval"]
    assert fmt["type"] == "electric_usage" and fmt["units"] == "kWh"
    assert fmt["greenbridge_accumulation_note"] == "accumulationBehaviour 0 (none): read as interval data"
    assert fmt["greenbridge_reading_type"]["accumulation_behaviour"] == 0  # the raw code stays visible


def test_gas_and_water_with_accumulation_none_are_usage_too():
    gas = run(document(usage_point((reading_type(0, 7, 1, DAY, 12, -3, 169), [(grid(T0, DAY, [79450]),)]),
                                   service_kind=1)))
    assert columns(gas)["natural_gas_usage_daily"] == [(T0, {"gu": Decimal("79.450")})]
    water = run(document(usage_point((reading_type(0, 9, 1, DAY, 58, 0, 128), [(grid(T0, DAY, [250]),)]),
                                     service_kind=2)))
    assert columns(water)["water_usage_daily"] == [(T0, {"wu": Decimal(250)})]


def test_accumulation_none_on_other_kinds_keeps_their_type():
    """Temperature with accumulation 0 is not usage: no note claims it is interval data."""
    translation = run(document(usage_point((reading_type(0, None, None, HOUR, 46, 0, 23), [(grid(T0, HOUR, [21]),)]))))
    fmt = formats(translation)["greenbridge_temperature_interval"]
    assert "greenbridge_accumulation_note" not in fmt


def test_generated_accumulation_none_sums_to_the_generator_totals():
    data, totals = generated(FeedSpec(usage_points=1, days=3, net_metering=True, traits={"accumulation-none"}))
    translation = run(data, timezone="America/New_York")
    found = columns(translation)
    forward_count, forward_sum, _cost = totals.series[0, "electric_forward"]
    _count, reverse_sum, _cost = totals.series[0, "electric_reverse"]
    assert len(found["electric_usage_forward_interval"]) == forward_count
    assert total(found["electric_usage_forward_interval"]) == Decimal(forward_sum).scaleb(-3)
    assert total(found["electric_usage_reverse_interval"]) == -Decimal(reverse_sum).scaleb(-3)
    assert translation["account"].placed == translation["account"].read == totals.readings


# -- readings of duration 0 ---------------------------------------------------------------------------------------

def test_readings_of_duration_zero_take_the_interval_length():
    values = [5, 7, 0, 3]
    translation = run(document(usage_point((reading_type(interval=MINUTE), [(grid(T0, MINUTE, values, 0),)]))))
    segment = translation["usage_segments"][0]
    assert segment["interval"] == MINUTE and segment["segment_start"] == iso(T0)
    assert segment["segment_end"] == iso(T0 + 4 * MINUTE)
    assert [vs[0] for vs in segment["values"]] == [{"eu": Decimal(v).scaleb(-3)} for v in values]
    account = translation["account"]
    assert (account.read, account.placed, account.duration_zero_stretched) == (4, 4, 4)


def test_duration_zero_without_an_interval_length_is_dropped_and_counted():
    translation = run(document(usage_point((reading_type(interval=None), [(grid(T0, MINUTE, [5, 7], 0),)]))))
    assert translation["usage_segments"] == []
    account = translation["account"]
    assert account.placed == 0 and account.not_placed["no duration"] == 2
    assert account.not_placed_with_values["no duration"] == 2 and account.unaccounted == 0


def test_duration_zero_readings_without_time_period_start_follow_each_other():
    """A reading with a duration of 0 moves the cursor by the interval length, like a reading without timePeriod."""
    readings = [reading(4, T0, 0), reading(6), reading(8)]
    translation = run(document(usage_point((reading_type(interval=MINUTE), [(block(T0, 3 * MINUTE, *readings),)]))))
    assert columns(translation)["electric_usage_forward_interval"] == [
        (T0, {"eu": Decimal("0.004")}), (T0 + MINUTE, {"eu": Decimal("0.006")}),
        (T0 + 2 * MINUTE, {"eu": Decimal("0.008")})]


# -- series labelled cumulative whose values do not climb -----------------------------------------------------------

def _one_minute_net_metering() -> tuple[list[Ent], dict[str, list[int]]]:
    """The field case: per-minute amounts in duration-0 readings under a bulkQuantity ReadingType with
    intervalLength 60, delivered and received, and one UsageSummary per direction that they sum to exactly."""
    delivered = [(7 * i) % 13 for i in range(240)]  # four hours of minutes, up and down
    received = [(5 * i) % 11 if 60 <= i < 180 else 0 for i in range(240)]
    forward_rt = reading_type(1, 1, 1, MINUTE, 12, 0, 72)
    reverse_rt = reading_type(1, 1, 19, MINUTE, 12, 0, 72)
    span = 240 * MINUTE
    summaries = ((summary(T0, span, sum(delivered), reference=f"{UP}/ReadingType/1", bill=123456), ()),
                 (summary(T0, span, sum(received), reference=f"{UP}/ReadingType/2"), ()))
    entries = usage_point((forward_rt, [(grid(T0, MINUTE, delivered, 0),)]),
                          (reverse_rt, [(grid(T0, MINUTE, received, 0),)]), summaries=summaries)
    return entries, {"delivered": delivered, "received": received}


def test_one_minute_net_metering_with_duration_zero_and_bulk_quantity_is_interval_data():
    entries, raw = _one_minute_net_metering()
    translation = run(document(entries))
    found = columns(translation)
    delivered, received = found["electric_usage_forward_interval"], found["electric_usage_reverse_interval"]
    assert [start for start, _ in delivered] == [T0 + MINUTE * i for i in range(240)]
    assert total(delivered) == Decimal(sum(raw["delivered"])).scaleb(-3)
    assert total(received) == -Decimal(sum(raw["received"])).scaleb(-3)
    assert "meter_readings_interval" not in found
    # the feed's own per-direction summaries agree to the last digit
    (section,) = translation["bill_sections"]
    by_direction = {d["direction"]: d["value"] for d in section["usage_details"]}
    assert by_direction == {"forward": total(delivered), "reverse": total(received)}
    for fmt_id in ("electric_usage_forward_interval", "electric_usage_reverse_interval"):
        note = formats(translation)[fmt_id]["greenbridge_accumulation_note"]
        assert note.startswith("accumulationBehaviour 1 (bulkQuantity), but the values do not climb (")
        assert note.endswith("consecutive readings fall): read as interval data")
    assert any("do not climb" in note for note in translation["notes"])
    account = translation["account"]
    assert (account.read, account.placed, account.duration_zero_stretched, account.series_read_as_interval_data) == (
        480, 480, 480, 2)


def test_a_register_that_climbs_stays_a_register():
    dial = [1000 + 3 * i + (i % 4) for i in range(48)]  # never falls
    translation = run(document(usage_point((reading_type(acc=1), [(grid(T0, HOUR, dial),)]))))
    found = columns(translation)
    assert set(found) == {"meter_readings_interval"}
    assert "greenbridge_accumulation_note" not in formats(translation)["meter_readings_interval"]


@pytest.mark.parametrize(("falls", "pairs", "register"), [
    (1, 40, True),     # one rollover: a register
    (2, 40, False),    # 2 in 40 pairs (5 %): interval amounts
    (2, 41, True),     # 2 in 41 pairs (under 5 %): a register that rolled over twice
    (9, 100, False),
])
def test_the_climb_rule_counts_falls_between_consecutive_readings(falls, pairs, register):
    values = []
    level = 0
    for i in range(pairs + 1):
        if 0 < i <= falls:
            level -= 500  # a fall in each of the first ``falls`` pairs
        else:
            level += 10
        values.append(10_000 + level)
    translation = run(document(usage_point((reading_type(acc=3), [(grid(T0, HOUR, values),)]))))
    kinds = {f["type"] for f in formats(translation).values()}
    assert kinds == ({"meter_readings"} if register else {"electric_usage"})


def test_a_net_register_may_fall():
    """A net register (flowDirection 4) runs backwards while the customer exports: it stays a register."""
    values = [500, 480, 460, 470, 450, 430, 440]
    translation = run(document(usage_point((reading_type(acc=1, flow=4), [(grid(T0, HOUR, values),)]))))
    assert {f["type"] for f in formats(translation).values()} == {"meter_readings"}


def test_falls_are_counted_in_time_order_across_blocks():
    """Blocks of a climbing register delivered out of order (and readings out of order inside one) still climb."""
    late = grid(T0 + 24 * HOUR, HOUR, [2000 + i for i in range(24)])
    early = block(T0, 24 * HOUR, *[reading(1000 + i, T0 + HOUR * i, HOUR) for i in reversed(range(24))])
    translation = run(document(usage_point((reading_type(acc=1), [(late,), (early,)]))))
    assert {f["type"] for f in formats(translation).values()} == {"meter_readings"}


def test_generated_one_minute_net_metering_feed():
    spec = FeedSpec(usage_points=1, days=2, interval=60, net_metering=True, summaries=False,
                    traits={"zero-durations", "cumulative-label"})
    data, totals = generated(spec)
    translation = run(data, timezone="America/New_York")
    found = columns(translation)
    assert set(found) >= {"electric_usage_forward_interval", "electric_usage_reverse_interval"}
    assert total(found["electric_usage_forward_interval"]) == \
        Decimal(totals.series[0, "electric_forward"][1]).scaleb(-3)
    assert total(found["electric_usage_reverse_interval"]) == \
        -Decimal(totals.series[0, "electric_reverse"][1]).scaleb(-3)
    assert len(translation["usage_segments"]) == 2  # one per local day, 1440 one-minute Value Sets each
    assert all(len(s["values"]) == 1440 and s["interval"] == 60 for s in translation["usage_segments"])
    account = translation["account"]
    assert account.placed == account.read == account.duration_zero_stretched == 2 * 2 * 1440


# -- per-direction UsageSummaries -----------------------------------------------------------------------------------

PERIOD = 30 * DAY


@pytest.mark.parametrize("clue", ["readingTypeRef", "related link"])
def test_per_direction_summaries_do_not_overwrite_each_other(clue):
    def linked(value, m, bill=None):
        reference = f"{UP}/ReadingType/{m}" if clue == "readingTypeRef" else None
        links = () if clue == "readingTypeRef" else (f"{UP}/ReadingType/{m}",)
        return summary(T0, PERIOD, value, reference=reference, stamp=T0 + PERIOD, bill=bill), links

    # the received energy's summary comes later in the document, with the same statusTimeStamp (the old tie)
    entries = usage_point((reading_type(flow=1), [(grid(T0, HOUR, [100]),)]),
                          (reading_type(flow=19), [(grid(T0, HOUR, [40]),)]),
                          summaries=(linked(612000, 1, bill=9_876_500), linked(233000, 2)))
    translation = run(document(entries))
    (section,) = translation["bill_sections"]
    details = section["usage_details"]
    assert [(d["name"], d["direction"], d["value"], d["types"]) for d in details] == [
        ("Total usage", "forward", Decimal(612), ["electric_usage", "directional"]),
        ("Total usage (reverse)", "reverse", Decimal(-233), ["electric_usage", "directional"])]
    assert len({d["id"] for d in details}) == 2
    assert section["cost_details"][0]["cost"] == Decimal("98.765")  # the bill is the delivered summary's
    billing = {f["id"]: f for f in formats(translation).values() if f["id"].endswith("_billing")}
    assert set(billing) == {"electric_usage_forward_billing", "electric_usage_reverse_billing"}
    found = columns(translation)
    assert found["electric_usage_forward_billing"] == [(T0, {"eu": Decimal(612)})]
    assert found["electric_usage_reverse_billing"] == [(T0, {"eu": Decimal(-233)})]
    assert translation["diagnostics"].counts.get("two summaries for one billing period; the newer one is used",
                                                 0) == 0


def test_summaries_without_a_direction_keep_the_newest_wins_rule():
    entries = usage_point((reading_type(), [(grid(T0, HOUR, [100]),)]),
                          summaries=((summary(T0, PERIOD, 500000, stamp=T0 + PERIOD), ()),
                                     (summary(T0, PERIOD, 700000, stamp=T0 + PERIOD + 1), ()),
                                     (summary(T0, PERIOD, 600000, stamp=T0 + PERIOD), ())))
    translation = run(document(entries))
    (section,) = translation["bill_sections"]
    assert [(d["name"], d["value"], d["types"]) for d in section["usage_details"]] == [
        ("Total usage", Decimal(700), ["electric_usage"])]
    assert "direction" not in section["usage_details"][0]


def test_a_direction_summary_beside_an_unstated_one():
    """The delivered summary makes the section; one that states no direction rides along under its own name."""
    entries = usage_point((reading_type(flow=1), [(grid(T0, HOUR, [100]),)]),
                          (reading_type(flow=19), [(grid(T0, HOUR, [40]),)]),
                          summaries=((summary(T0, PERIOD, 400000), ()),
                                     (summary(T0, PERIOD, 300000, reference=f"{UP}/ReadingType/2"), ())))
    (section,) = run(document(entries))["bill_sections"]
    assert [(d["name"], d["value"]) for d in section["usage_details"]] == [
        ("Total usage", Decimal(400)), ("Total usage (reverse)", Decimal(-300))]


def test_generated_directional_summaries_match_the_series():
    spec = FeedSpec(usage_points=1, days=31, net_metering=True, traits={"directional-summaries"})
    data, totals = generated(spec)
    translation = run(data, timezone="America/New_York")
    (section,) = translation["bill_sections"]
    details = {d["direction"]: d["value"] for d in section["usage_details"]}
    assert details == {"forward": Decimal(totals.series[0, "electric_forward"][1]).scaleb(-3),
                       "reverse": -Decimal(totals.series[0, "electric_reverse"][1]).scaleb(-3)}


# -- IntervalBlock link conflicts -----------------------------------------------------------------------------------

def test_a_block_whose_self_and_up_disagree_is_placed_by_self_and_counted():
    entries = usage_point((reading_type(flow=1), [(grid(T0, HOUR, [100, 200]),)]),
                          (reading_type(flow=19), [(grid(T0, HOUR, [30, 40]),)]))
    conflicting = next(e for e in entries if e.self_href == f"{UP}/MeterReading/2/IntervalBlock/0")
    conflicting.up_href = f"{UP}/MeterReading/1/IntervalBlock"  # the forward series' collection
    translation = run(document(entries))
    found = columns(translation)
    assert found["electric_usage_forward_interval"] == [(T0, {"eu": Decimal("0.1")}),
                                                        (T0 + HOUR, {"eu": Decimal("0.2")})]
    assert found["electric_usage_reverse_interval"] == [(T0, {"eu": Decimal("-0.03")}),
                                                        (T0 + HOUR, {"eu": Decimal("-0.04")})]
    assert translation["diagnostics"].counts["IntervalBlock link conflict (self wins)"] == 1
    account = translation["account"]
    assert account.link_conflicts == 1 and account.not_placed["superseded"] == 0 and account.placed == 4


def test_agreeing_links_and_blocks_of_an_unlinked_series_are_no_conflict():
    entries = usage_point((reading_type(), [(grid(T0, HOUR, [1]),)]), (reading_type(flow=19), [(grid(T0, HOUR, [2]),)]))
    translation = run(document(entries))
    assert translation["account"].link_conflicts == 0
    assert "IntervalBlock link conflict (self wins)" not in translation["diagnostics"].counts


def test_a_back_link_to_the_usage_point_is_no_collection():
    """A MeterReading that links back to its UsagePoint does not own every href under the UsagePoint: a block
    elsewhere stays with the MeterReading its up link names."""
    mr1, mr2 = f"{UP}/MeterReading/1", f"{BASE}/readings/2"
    entries = [Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (E("UsagePoint"),)),
               Ent(mr1, f"{UP}/MeterReading", (f"{UP}/ReadingType/1", UP, f"{mr1}/IntervalBlock"),
                   (E("MeterReading"),)),
               Ent(f"{UP}/ReadingType/1", f"{UP}/ReadingType", (), (reading_type(flow=1),)),
               Ent(mr2, f"{UP}/MeterReading", (f"{UP}/ReadingType/2", f"{mr2}/blocks"), (E("MeterReading"),)),
               Ent(f"{UP}/ReadingType/2", f"{UP}/ReadingType", (), (reading_type(flow=19),)),
               Ent(f"{UP}/blocks/7", f"{mr2}/blocks", (), (grid(T0, HOUR, [30]),))]
    translation = run(document(entries))
    assert columns(translation)["electric_usage_reverse_interval"] == [(T0, {"eu": Decimal("-0.03")})]
    assert translation["account"].link_conflicts == 0


def test_generated_link_conflicts_lose_nothing():
    spec = FeedSpec(usage_points=2, days=3, net_metering=True, costs=False, summaries=False, traits={"link-conflict"})
    data, totals = generated(spec)
    translation = run(data, timezone="America/New_York")
    account = translation["account"]
    assert account.link_conflicts == 2 * 3  # every block entry of each UsagePoint's second series
    assert account.placed == account.read == totals.readings and account.not_placed["superseded"] == 0
    found = columns(translation)
    expected = sum(totals.series[u, "electric_reverse"][1] for u in range(2))
    assert total(found["electric_usage_reverse_interval"]) == -Decimal(expected).scaleb(-3)


# -- reverse-only UsagePoints ---------------------------------------------------------------------------------------

@pytest.mark.parametrize(("flows", "expected", "absent"), [
    ((19,), "reverse_only", "bidirectional"),
    ((1, 19), "bidirectional", "reverse_only"),
    ((4,), "bidirectional", "reverse_only"),
    ((1,), None, "reverse_only"),
])
def test_meter_types_follow_the_directions_of_the_series(flows, expected, absent):
    series = [(reading_type(flow=flow), [(grid(T0, HOUR, [10]),)]) for flow in flows]
    (meter,) = run(document(usage_point(*series)))["meter_devices"]
    if expected:
        assert expected in meter["meter_types"]
    assert absent not in meter["meter_types"]
    assert "forward_only" not in meter["meter_types"]  # never inferred: a scope may omit FB_08


def test_generated_generation_meter_is_reverse_only():
    spec = FeedSpec(usage_points=2, days=2, net_metering=True, traits={"reverse-only"})
    data, _totals = generated(spec)
    translation = run(data)
    types = sorted(m["meter_types"] for m in translation["meter_devices"])
    assert types == [["electric_usage", "bidirectional"], ["electric_usage", "reverse_only"]]


# -- local time from the feed's own clues ---------------------------------------------------------------------------

def _local_days(translation: dict) -> list[str]:
    """The segment starts: local midnights, where the readings start at one."""
    return sorted({s["segment_start"] for s in translation["usage_segments"]})


def test_timestamps_offset_gives_local_days_without_local_time_parameters():
    pacific = T0 + 7 * HOUR  # 2024-07-01T00:00-07:00 (PDT)
    values = [1] * 48
    entries = usage_point((reading_type(), [(grid(pacific, HOUR, values),)]), updated="2024-07-03T09:15:00-08:00")
    translation = run(document(entries))
    # a fixed UTC-08:00 (the offset the dates state): days from 08:00Z
    assert _local_days(translation) == ["2024-07-01T07:00:00Z", "2024-07-01T08:00:00Z", "2024-07-02T08:00:00Z"]
    (point,) = translation["service_points"]
    assert point["greenbridge_local_time"]["note"] == (
        "no configured zone and no LocalTimeParameters: using UTC-08:00, stated by the feed's timestamps (at "
        "2024-07-03T17:15:00Z), as a fixed offset (no DST)")


def test_utc_timestamps_state_no_offset():
    translation = run(document(usage_point((reading_type(), [(grid(T0, HOUR, [1] * 24),)]))))
    assert _local_days(translation) == [iso(T0)]
    assert "UTC days" in translation["service_points"][0]["greenbridge_local_time"]["note"]


def test_epoch_dst_rules_fall_back_to_the_tz_offset():
    """Enbridge writes its DST rules as the 2024 transition instants in hex: tzOffset alone still gives local days."""
    enbridge = E("LocalTimeParameters", E("dstEndRule", "67271F70"), E("dstOffset", 3600),
                 E("dstStartRule", "65ED5A70"), E("tzOffset", -18000))
    eastern = T0 + 5 * HOUR  # local midnight at UTC-05:00
    translation = run(document(usage_point((reading_type(), [(grid(eastern, HOUR, [1] * 48),)]), ltp=enbridge)))
    # a fixed UTC-05:00, in July too (the rules cannot say when DST is): days from 05:00Z
    assert _local_days(translation) == ["2024-07-01T05:00:00Z", "2024-07-02T05:00:00Z"]
    note = translation["service_points"][0]["greenbridge_local_time"]["note"]
    assert note.startswith("no configured zone and the DST part of the LocalTimeParameters is unusable (dstStartRule "
                           "65ED5A70: rule looks like an epoch timestamp")
    assert note.endswith("using their tzOffset, UTC-05:00 fixed (no DST)")


def test_a_placeholder_tz_offset_is_repaired_from_the_timestamps():
    """North American rules with tzOffset 0 (a placeholder) and dates written at -04:00 in July: Eastern time."""
    placeholder = E("LocalTimeParameters", E("dstEndRule", "B40E2000"), E("dstOffset", 3600),
                    E("dstStartRule", "360E2000"), E("tzOffset", 0))
    entries = usage_point((reading_type(), [(grid(T0 + 4 * HOUR, HOUR, [1] * 24),)]), ltp=placeholder,
                          updated="2024-07-02T10:00:00-04:00")
    translation = run(document(entries))
    assert _local_days(translation) == ["2024-07-01T04:00:00Z"]
    assert "when tzOffset is -18000: using UTC-05:00, DST +1 h" in \
        translation["service_points"][0]["greenbridge_local_time"]["note"]


def test_a_configured_zone_still_wins_over_the_feed_clues():
    entries = usage_point((reading_type(), [(grid(T0 + 4 * HOUR, HOUR, [1] * 24),)]),
                          updated="2024-07-03T09:15:00-08:00")
    translation = run(document(entries), timezone="America/New_York")
    assert _local_days(translation) == ["2024-07-01T04:00:00Z"]  # one whole EDT day


@pytest.mark.parametrize("trait", ["offset-timestamps", "epoch-dst-rules"])
def test_generated_feeds_without_usable_dst_rules_keep_eastern_standard_days(trait):
    """Winter data: the fixed UTC-05:00 these feeds give is exactly Eastern time, so every day is a whole day."""
    spec = FeedSpec(usage_points=1, days=5, start=date(2025, 1, 6), costs=False, summaries=False, traits={trait})
    data, totals = generated(spec)
    translation = run(data)
    zone = ZoneInfo("America/New_York")
    days = _local_days(translation)
    assert days == [datetime(2025, 1, 6 + d, tzinfo=zone).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                    for d in range(5)]
    assert all(len(s["values"]) == 96 for s in translation["usage_segments"])
    assert translation["account"].placed == totals.readings


# -- accounting for every reading -----------------------------------------------------------------------------------

def test_every_reading_is_accounted_for_by_reason():
    rt = reading_type(interval=None)
    blocks = (
        block(T0, 4 * HOUR, reading(1, T0, HOUR), reading(2, T0 + HOUR, HOUR),
              reading(3, 2**31 - 1, HOUR),          # the 'no time' placeholder
              reading(4, T0 + 2 * HOUR, 0),         # duration 0 and no intervalLength
              reading(None, T0 + 3 * HOUR, -5)),    # a negative duration, no value
        E("IntervalBlock", reading(5)),             # no timePeriod and no block interval: no start
    )
    correction = (block(T0, HOUR, reading(10, T0, HOUR)),)  # a newer entry for the first slot
    entries = usage_point((rt, [blocks, correction]))
    entries[-1].updated = "2024-09-01T00:00:00Z"
    translation = run(document(entries))
    account = translation["account"]
    assert account.read == 7 and account.read_with_values == 6
    assert account.placed == 2
    assert account.not_placed == {"no ReadingType": 0, "no start": 1, "no duration": 2,
                                  "no-time placeholder start": 1, "superseded": 1}
    assert account.not_placed_with_values == {"no ReadingType": 0, "no start": 1, "no duration": 1,
                                              "no-time placeholder start": 1, "superseded": 1}
    assert account.unaccounted == account.unaccounted_with_values == 0
    assert account.summary() == (
        "7 readings read, 2 placed; not placed: 1 without a start (no timePeriod start, no block interval start), "
        "2 without a duration (0 or absent, and no ReadingType intervalLength), 1 starting at the 2147483647 "
        "'no time' placeholder, 1 replaced by a newer reading of the same slot")
    assert columns(translation)["electric_usage_forward_interval"][0] == (T0, {"eu": Decimal("0.010")})


def test_readings_without_a_reading_type_are_counted():
    entries = [Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (E("UsagePoint"),)),
               Ent(f"{UP}/MeterReading/1", f"{UP}/MeterReading", (f"{UP}/MeterReading/1/IntervalBlock",),
                   (E("MeterReading"),)),
               Ent(f"{UP}/MeterReading/1/IntervalBlock/1", f"{UP}/MeterReading/1/IntervalBlock", (),
                   (grid(T0, HOUR, [1, 2, -(2**47)]),))]
    account = run(document(entries))["account"]
    assert (account.read, account.read_with_values, account.placed) == (3, 2, 0)
    assert account.not_placed["no ReadingType"] == 3 and account.not_placed_with_values["no ReadingType"] == 2
    assert account.unaccounted == 0


def test_the_account_is_ready_only_after_the_segments_were_read():
    with translate(document(usage_point((reading_type(), [(grid(T0, HOUR, [1]),)]))), TranslateOptions()) as result:
        with pytest.raises(RuntimeError, match="read through"):
            result.reading_account()
        list(result.usage_segments())
        first = result.reading_account()
        list(result.usage_segments())  # a second pass counts afresh, not twice
        assert result.reading_account() == first and first.placed == 1


# -- the traits in the shared samples -------------------------------------------------------------------------------

@pytest.mark.samples
def test_jendobson_placeholder_tz_offset_is_repaired_from_its_timestamps(sample):
    """jendobson_testdata: North American rules with tzOffset 0 (a placeholder) and Atom dates at -04:00 (October
    2019): local days are Eastern days now, not UTC days."""
    with translate(sample("jendobson_testdata.xml"), TranslateOptions(now=NOW)) as result:
        segments = list(result.usage_segments())
        (point,) = result.service_points
    note = point["greenbridge_local_time"]["note"]
    assert "give UTC-04:00, stated by the feed's timestamps (at 2019-10-24T20:31:36Z) when tzOffset is -18000" in note
    assert note.endswith("matches America/New_York, America/Toronto")
    hourly = [s for s in segments if s["interval"] == HOUR]
    # every whole local day starts at 04:00Z (EDT midnight); the data begins at 2019-10-01T00:00Z (20:00 EDT)
    assert {s["segment_start"][11:] for s in hourly[1:]} == {"04:00:00Z"}
    with translate(sample("jendobson_testdata.xml"),
                   TranslateOptions(now=NOW, timezone="America/New_York")) as configured:
        assert [s["segment_start"] for s in configured.usage_segments() if s["interval"] == HOUR] == \
            [s["segment_start"] for s in hourly]


@pytest.mark.samples
def test_samples_whose_clues_do_not_apply_keep_their_zone(sample):
    """gbobjects_gas_containerized: a wrong-sign tzOffset and zone-less dates: no clue, UTC as before.
    hydroone: sane parameters win over its dates' -05:00."""
    with translate(sample("gbobjects_gas_containerized.xml"), TranslateOptions(now=NOW)) as result:
        note = result.service_points[0]["greenbridge_local_time"]["note"]
    assert note.endswith("probably the sign is wrong): using UTC")
    with translate(sample("hydroone_DownLoadMyData_redacted.xml"), TranslateOptions(now=NOW)) as result:
        note = result.service_points[0]["greenbridge_local_time"]["note"]
    assert note.startswith("no configured zone: using LocalTimeParameters UTC-05:00, DST +1 h")
