"""Adversarial, hand-written Green Button documents through the ESPI → CDS translation (bridge.from_espi).

Every document is written by these tests and every expectation is computed from the XML the test wrote: exact
Decimals, exact RFC 3339 instants, exact Value Set counts. The rules under test are mapping-notes §2 (time),
§3 (segmentation, value types, scaling, quality, broken input) and espi.md §1.5, §2.
"""

from __future__ import annotations

import io
import json
import re
import tracemalloc
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from espi_builders import ESPI, STYLES, E, Ent, Raw, block, document, reading, reading_type

from bridge.from_espi import LISTINGS, TranslateOptions, translate
from cds import jsonenc
from espi.errors import NoUsageDataError, XmlSyntaxError
from espi.generate import FeedSpec, write_feed
from greenbridge.cli import main

BASE = "https://quirks.test/espi/1_1/resource/Subscription/9"
UP = f"{BASE}/UsagePoint/1"
LTP = f"{BASE}/LocalTimeParameters/1"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

T0 = 1719792000  # 2024-07-01T00:00:00Z: far from DST, a UTC midnight
HOUR, DAY = 3600, 86400


def iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def grid_block(start: int, step: int, values: list, costs: list | None = None) -> tuple:
    """Readings every ``step`` seconds from ``start``; a None value leaves the slot out (a gap)."""
    readings = [reading(v, start + step * i, step, costs[i] if costs else None)
                for i, v in enumerate(values) if v is not None]
    return block(start, step * len(values), *readings)


def local_time_parameters() -> tuple:
    """US Eastern (espi.md §1.6 worked example)."""
    return E("LocalTimeParameters", E("dstEndRule", "B40E2000"), E("dstOffset", 3600),
             E("dstStartRule", "360E2000"), E("tzOffset", -18000))


@dataclass
class S:
    """One series for ``subscription``: its ReadingType and IntervalBlock entries (each a tuple of blocks)."""

    rt: tuple
    entries: list[tuple] = field(default_factory=list)
    updated: list[str] | None = None


def subscription(*series: S, up: str = UP, service_kind: int | None = 0, ltp: bool = False,
                 summaries: tuple = ()) -> list[Ent]:
    """UsagePoint → MeterReadings → ReadingTypes → IntervalBlocks with forward links (exact hrefs)."""
    related = [f"{up}/MeterReading"]
    if ltp:
        related.append(LTP)
    if summaries:
        related.append(f"{up}/UsageSummary")
    kind = (E("ServiceCategory", E("kind", service_kind)),) if service_kind is not None else ()
    entries = [Ent(up, f"{BASE}/UsagePoint", tuple(related), (E("UsagePoint", *kind, E("status", 1)),))]
    if ltp:
        entries.append(Ent(LTP, f"{BASE}/LocalTimeParameters", (), (local_time_parameters(),)))
    for m, s in enumerate(series, start=1):
        mr = f"{up}/MeterReading/{m}"
        rt = f"{up}/ReadingType/{m}"
        entries.append(Ent(mr, f"{up}/MeterReading", (rt, f"{mr}/IntervalBlock"), (E("MeterReading"),)))
        entries.append(Ent(rt, f"{up}/ReadingType", (), (s.rt,)))
        for b, blocks in enumerate(s.entries):
            updated = s.updated[b] if s.updated else "2024-08-01T00:00:00Z"
            entries.append(Ent(f"{mr}/IntervalBlock/{b}", f"{mr}/IntervalBlock", (), blocks, updated))
    for n, summary in enumerate(summaries):
        entries.append(Ent(f"{up}/UsageSummary/{n}", f"{up}/UsageSummary", (), (summary,)))
    return entries


def run(data: bytes, **options) -> dict:
    """Every listing (segments materialised), diagnostics, notes and stats of one translation."""
    with translate(data, TranslateOptions(now=NOW, **options)) as result:
        out = {name: list(result.listing(name)) for name in LISTINGS}
        out["diagnostics"] = result.diagnostics
        out["notes"] = list(result.notes)
        out["stats"] = dict(result.segment_stats)
        out["readings"] = result.reading_count
    return out


def encoded(translation: dict) -> bytes:
    return jsonenc.encode({name: translation[name] for name in LISTINGS})


def count(diagnostics, *words: str) -> int:
    """How many issues were reported under kinds that contain every word (kinds name the element)."""
    return sum(n for kind, n in diagnostics.counts.items() if all(w in kind for w in words))


def column(segment: dict, format_id: str) -> list:
    index = [f["id"] for f in segment["formats"]].index(format_id)
    return [value_set[index] for value_set in segment["values"]]


def one_segment(translation: dict) -> dict:
    [segment] = translation["usage_segments"]
    return segment


# -- 1. namespaces ----------------------------------------------------------------------------------------------

def _namespace_document(style: str) -> bytes:
    summary = E("UsageSummary", E("billingPeriod", E("duration", 31 * DAY), E("start", T0)),
                E("billLastPeriod", 1234500), E("currency", 840),
                E("overallConsumptionLastPeriod", E("powerOfTenMultiplier", 0), E("uom", 72), E("value", 35000)),
                E("statusTimeStamp", T0 + 31 * DAY))
    forward = S(reading_type(4, 1, 1, 900, 12, -3, 72, E("currency", 840)),
                [(grid_block(T0, 900, [1000, 2000, None, 4000], [100, 200, None, 400]),),
                 (block(T0 + 3600, 1800, reading(5000), reading(6000)),)])  # no timePeriod
    reverse = S(reading_type(4, 1, 19, 900, 12, -3, 72), [(grid_block(T0, 900, [0, 700, 800, 0]),)])
    return document(subscription(forward, reverse, ltp=True, summaries=(summary,)), style)


def test_every_namespace_style_translates_identically():
    translations = {style: run(_namespace_document(style)) for style in STYLES}
    reference = encoded(translations["espi-prefix"])
    for style, translation in translations.items():
        assert encoded(translation) == reference, style
    billing, quarter_hours = sorted(translations["no-namespaces"]["usage_segments"], key=lambda s: -s["interval"])
    assert billing["interval"] == 31 * DAY
    assert billing["values"] == [[{"eu": Decimal("35")}]]  # 35000 Wh of the UsageSummary
    segment = quarter_hours
    assert segment["segment_start"] == iso(T0) and segment["segment_end"] == iso(T0 + 5400)
    assert [f["id"] for f in segment["formats"]] == ["cost_electric_usage_forward_interval",
                                                     "electric_usage_forward_interval",
                                                     "electric_usage_reverse_interval"]
    # Wh × 10⁻³ → kWh × 10⁻⁶; the period-less block continues the quarter-hour grid at T0+3600
    assert column(segment, "electric_usage_forward_interval") == [
        {"eu": Decimal("0.001")}, {"eu": Decimal("0.002")}, None, {"eu": Decimal("0.004")},
        {"eu": Decimal("0.005")}, {"eu": Decimal("0.006")}]
    assert column(segment, "electric_usage_reverse_interval") == [
        {"eu": Decimal("0")}, {"eu": Decimal("-0.0007")}, {"eu": Decimal("-0.0008")}, {"eu": Decimal("0")}, None, None]
    assert column(segment, "cost_electric_usage_forward_interval") == [
        {"c": Decimal("0.001")}, {"c": Decimal("0.002")}, None, {"c": Decimal("0.004")}, None, None]
    [section] = translations["atom-prefix"]["bill_sections"]
    assert section["start_date"] == "2024-06-30"  # local (New York) date of 2024-07-01T00:00Z


# -- 2. sibling blocks -------------------------------------------------------------------------------------------

def test_sibling_blocks_in_one_content_all_reach_the_segments():
    blocks = tuple(grid_block(T0 + d * DAY, HOUR, [d * 100 + h for h in range(24)]) for d in range(3))
    translation = run(document(subscription(S(reading_type(), [blocks]))))
    segments = translation["usage_segments"]
    assert [s["segment_start"] for s in segments] == [iso(T0 + d * DAY) for d in range(3)]
    for d, segment in enumerate(segments):
        assert segment["interval"] == HOUR
        assert column(segment, "electric_usage_forward_interval") == [
            {"eu": Decimal(d * 100 + h).scaleb(-3)} for h in range(24)]
    assert translation["stats"]["readings"] == 72


def test_hundreds_of_sibling_blocks_in_one_entry():
    days = 300
    blocks = tuple(grid_block(T0 + d * DAY, HOUR, [(d * 24 + h) % 997 for h in range(24)]) for d in range(days))
    translation = run(document(subscription(S(reading_type(p=3), [blocks]))))
    segments = translation["usage_segments"]
    assert len(segments) == days
    assert {len(s["values"]) for s in segments} == {24}
    total = sum(v[0]["eu"] for s in segments for v in s["values"])
    assert total == sum((i % 997) for i in range(days * 24))  # Wh × 10³ = kWh × 1
    assert segments[-1]["segment_end"] == iso(T0 + days * DAY)


# -- 3. readings without timePeriod ----------------------------------------------------------------------------

def test_readings_without_time_period_fill_consecutive_slots():
    b = block(T0, 4 * 900, *(reading(v) for v in (11, 12, 13, 14)))
    segment = one_segment(run(document(subscription(S(reading_type(interval=900), [(b,)])))))
    assert segment["interval"] == 900
    assert segment["segment_start"] == iso(T0) and segment["segment_end"] == iso(T0 + 3600)
    assert column(segment, "electric_usage_forward_interval") == [
        {"eu": Decimal(v).scaleb(-3)} for v in (11, 12, 13, 14)]


def test_readings_with_and_without_time_period_mixed():
    b = block(T0, 2 * HOUR, reading(1), reading(2, T0 + 3600, 900), reading(3), reading(4))
    segment = one_segment(run(document(subscription(S(reading_type(interval=900), [(b,)])))))
    # slots: T0, T0+3600 (explicit), then T0+4500 and T0+5400 continuing after it; T0+900..2700 are gaps
    assert segment["segment_start"] == iso(T0) and segment["segment_end"] == iso(T0 + 6300)
    assert column(segment, "electric_usage_forward_interval") == [
        {"eu": Decimal("0.001")}, None, None, None, {"eu": Decimal("0.002")}, {"eu": Decimal("0.003")},
        {"eu": Decimal("0.004")}]


# -- 4. sloppy numbers --------------------------------------------------------------------------------------------

def test_padded_numbers_comments_and_fractional_epochs_translate_like_clean_input():
    clean_rt = reading_type(4, 1, 1, 900, 12, -3, 72)
    clean = S(clean_rt, [(grid_block(T0, 900, [10, 20, 30]),)])
    comment = Raw("<!-- odd -->")
    dirty_rt = E("ReadingType", comment, E("accumulationBehaviour", " 4 "), E("commodity", "\n1\n"),
                 E("flowDirection", "1 "), comment, E("intervalLength", " 900"), E("kind", " 12 "),
                 E("powerOfTenMultiplier", " -3 "), E("uom", "\t72\t"))
    dirty_block = E("IntervalBlock", E("interval", E("duration", " 2700 "), E("start", f"{T0}.2")), comment,
                    reading(" 10 ", f"{T0}.4", 900),                       # rounds down to T0
                    E("IntervalReading", comment, E("timePeriod", E("duration", "900"), comment,
                                                    E("start", f" {T0 + 899}.5 ")), E("value", "20")),  # half-even ↑
                    reading("30", f"{T0 + 1800}.5", "900.0"))             # half-even ↓ (…800 is even)
    dirty = S(dirty_rt, [(dirty_block,)])
    up_dirty = Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",),
                   (E("UsagePoint", E("ServiceCategory", E("kind", " 0 ")), E("status", " 1 ")),))
    clean_entries = subscription(clean)
    dirty_entries = [up_dirty, *subscription(dirty)[1:]]
    clean_out, dirty_out = run(document(clean_entries)), run(document(dirty_entries))
    assert encoded(dirty_out) == encoded(clean_out)
    assert count(dirty_out["diagnostics"], "fractional", "start") == 4
    assert clean_out["diagnostics"].total == 0
    assert column(one_segment(clean_out), "electric_usage_forward_interval") == [
        {"eu": Decimal("0.00001")}, {"eu": Decimal("0.00002")}, {"eu": Decimal("0.00003")}]  # Wh × 10⁻³ → kWh


def test_the_ngma_fractional_epoch():
    """``1721154384.66136`` (espi.md §2.4) → 1721154385 = 2024-07-16T18:26:25Z; a daily reading is a period."""
    b = block("1721154384.66136", DAY, reading(79450, "1721154384.66136", DAY))
    rt = reading_type(4, 7, 1, DAY, 12, -3, 169)
    translation = run(document(subscription(S(rt, [(b,)]), service_kind=None)))
    segment = one_segment(translation)
    assert segment["segment_start"] == "2024-07-16T18:26:25Z"
    assert segment["segment_end"] == "2024-07-17T18:26:25Z"
    assert segment["values"] == [[{"gu": Decimal("79.45")}]]
    assert segment["formats"][0]["id"] == "natural_gas_usage_daily"
    assert count(translation["diagnostics"], "fractional", "start") == 2


def test_an_empty_kind_does_not_force_a_commodity():
    """``<kind/>`` in ServiceCategory (NGMA gas): the commodity comes from the ReadingType instead."""
    rt = reading_type(4, 7, 1, HOUR, 12, 0, 42)  # gas in m³
    entries = subscription(S(rt, [(grid_block(T0, HOUR, [3]),)]))
    entries[0].content = (E("UsagePoint", E("ServiceCategory", E("kind"))),)
    translation = run(document(entries))
    segment = one_segment(translation)
    assert segment["formats"][0]["type"] == "natural_gas_usage"
    assert translation["service_points"][0]["servicepoint_types"][0] == "natural_gas"
    assert translation["diagnostics"].counts["empty <kind>"] == 1


# -- 5. links -------------------------------------------------------------------------------------------------------

def _two_series_entries() -> list[Ent]:
    return subscription(S(reading_type(flow=1), [(grid_block(T0, HOUR, [100, 200]),)]),
                        S(reading_type(flow=19), [(grid_block(T0, HOUR, [30, 0]),)]))


def test_reverse_links_only_translate_like_forward_links():
    forward = _two_series_entries()
    up, mr1, rt1, ib1, mr2, rt2, ib2 = _two_series_entries()
    assert [e.content[0][0] for e in (up, mr1, rt1, ib1)] == ["UsagePoint", "MeterReading", "ReadingType",
                                                             "IntervalBlock"]
    # parents name no children; children name their parent's self (a MeterReading still names its ReadingType)
    up.related = ()
    mr1.related, mr2.related = (UP, rt1.self_href), (UP, rt2.self_href)
    ib1.up_href = ib2.up_href = f"{BASE}/IntervalBlock"
    ib1.related, ib2.related = (mr1.self_href,), (mr2.self_href,)
    # swapped blocks: document order alone would give each block to the wrong MeterReading
    reverse = [up, mr1, rt1, ib2, mr2, rt2, ib1]
    out_forward, out_reverse = run(document(forward)), run(document(reverse))
    assert out_reverse["diagnostics"].total == 0, out_reverse["diagnostics"].summary()
    assert encoded(out_reverse) == encoded(out_forward)
    segment = one_segment(out_forward)
    assert column(segment, "electric_usage_reverse_interval") == [{"eu": Decimal("-0.030")}, {"eu": Decimal("0")}]


def test_no_links_at_all_give_an_implicit_usage_point():
    entries = [
        Ent(None, content=(reading_type(flow=1, interval=900),)),
        Ent(None, content=(grid_block(T0, 900, [1, 2]),)),
        Ent(None, content=(grid_block(T0 + 1800, 900, [3]),)),
        Ent(None, content=(reading_type(flow=19, interval=900),)),
        Ent(None, content=(grid_block(T0, 900, [4, 5, 6]),)),
    ]
    translation = run(document(entries))
    [point] = translation["service_points"]
    assert point["greenbridge_implicit"] is True
    assert point["servicepoint_types"][0] == "electric"
    segment = one_segment(translation)
    assert segment["related_servicepoints"] == [point["cds_servicepoint_id"]]
    assert column(segment, "electric_usage_forward_interval") == [
        {"eu": Decimal(v).scaleb(-3)} for v in (1, 2, 3)]
    assert column(segment, "electric_usage_reverse_interval") == [
        {"eu": Decimal(-v).scaleb(-3)} for v in (4, 5, 6)]
    assert translation["diagnostics"].counts["implicit UsagePoint"] == 1
    [meter] = translation["meter_devices"]
    assert "bidirectional" in meter["meter_types"]


def test_interval_blocks_nested_in_their_meter_reading():
    """Non-conformant nesting (espi.md §1.2): the blocks belong to the MeterReading whose element holds them."""
    mr, rt = f"{UP}/MeterReading/1", f"{BASE}/ReadingType/1"
    entries = [Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (E("UsagePoint"),)),
               Ent(rt, f"{BASE}/ReadingType", (), (reading_type(flow=19),)),
               Ent(mr, f"{UP}/MeterReading", (rt,), (E("MeterReading", grid_block(T0, HOUR, [5, 6])),))]
    translation = run(document(entries))
    assert column(one_segment(translation), "electric_usage_reverse_interval") == [
        {"eu": Decimal("-0.005")}, {"eu": Decimal("-0.006")}]
    assert count(translation["diagnostics"], "nested") == 1


def test_broken_hrefs_still_place_the_readings():
    entries = subscription(S(reading_type(), [(grid_block(T0, HOUR, [7, 8]),)]))
    entries[-1].up_href = "https://typo.test/MeterReading/1/IntervalBlock"
    entries[-1].self_href = "https://typo.test/MeterReading/1/IntervalBlock/0"
    translation = run(document(entries))
    assert column(one_segment(translation), "electric_usage_forward_interval") == [
        {"eu": Decimal("0.007")}, {"eu": Decimal("0.008")}]
    assert translation["diagnostics"].counts["IntervalBlock → MeterReading by only candidate"] == 1


def test_relative_hrefs_without_link_types():
    up, mr, rt = "RetailCustomer/9b6c7063/UsagePoint/01", "RetailCustomer/9b6c7063/UsagePoint/01/MeterReading/01", \
        "ReadingType/01"
    entries = [Ent(up, "RetailCustomer/9b6c7063/UsagePoint", (f"{up}/MeterReading",), (E("UsagePoint"),)),
               Ent(mr, f"{up}/MeterReading", (rt, f"{mr}/IntervalBlock"), (E("MeterReading"),)),
               Ent(rt, "ReadingType", (), (reading_type(flow=4),)),
               Ent(f"{mr}/IntervalBlock/01", f"{mr}/IntervalBlock", (), (grid_block(T0, HOUR, [-5]),))]
    scoped_a = run(document(entries), subscription="customer-a")
    scoped_b = run(document(entries), subscription="customer-b")
    assert column(one_segment(scoped_a), "electric_usage_net_interval") == [{"eu": Decimal("-0.005")}]
    assert scoped_a["diagnostics"].total == 0
    # relative hrefs are unique only per subscription: the scope is part of every natural key
    assert one_segment(scoped_a)["cds_usagesegment_id"] != one_segment(scoped_b)["cds_usagesegment_id"]
    assert scoped_a["service_points"][0]["cds_servicepoint_id"] != scoped_b["service_points"][0]["cds_servicepoint_id"]


# -- 6. and 8. scaling and value types ----------------------------------------------------------------------------

VALUE_CASES = {
    # name: (ReadingType, service kind, raw value, format type, units, value key, exact value, expected fields)
    "Wh p-3 (Hydro One)": (reading_type(p=-3), 0, 2494200, "electric_usage", "kWh", "eu", "2.4942",
                           {"direction": "forward"}),
    "Wh p+3": (reading_type(p=3), 0, 5, "electric_usage", "kWh", "eu", "5", {}),
    "Wh p0": (reading_type(p=0), 0, 1, "electric_usage", "kWh", "eu", "0.001", {}),
    "Wh without multiplier": (reading_type(p=None), 0, 1500, "electric_usage", "kWh", "eu", "1.5", {}),
    "Wh multiplier sentinel 4096": (reading_type(p=4096), 0, 1500, "electric_usage", "kWh", "eu", "1.5", {}),
    "W peak demand": (reading_type(12, 1, 1, HOUR, 8, 0, 38, E("dataQualifier", 8)), 0, 4321, "electric_demand",
                      "kW", "ed", "4.321", {"demand_type": "peak"}),
    "therm p-3": (reading_type(4, 7, 1, HOUR, 12, -3, 169), 1, 79450, "natural_gas_usage", "therm", "gu",
                  "79.45", {}),
    "gas m3 by commodity": (reading_type(4, 7, 1, HOUR, 58, 0, 42), None, 12, "natural_gas_usage", "Sm3", "gu",
                            "12", {"greenbridge_volume_basis": "assumed_standard"}),
    "gas m3 by ServiceCategory": (reading_type(4, 0, 1, HOUR, 58, -2, 42), 1, 1234, "natural_gas_usage", "Sm3",
                                  "gu", "12.34", {"greenbridge_volume_basis": "assumed_standard"}),
    "water US gal": (reading_type(4, 9, 1, HOUR, 58, 0, 128), 2, 250, "water_usage", "gal", "wu", "250", {}),
    "water imperial gal": (reading_type(4, 9, 1, HOUR, 58, -1, 130), 2, 25, "water_usage", "L", "wu",
                           "11.365225", {}),  # 2.5 imp gal × 4.54609 L
    "temperature K": (reading_type(4, None, None, HOUR, 46, -3, 6), 0, 270600, "greenbridge_temperature", "C",
                      "v", "-2.55", {}),
    "temperature K in a water feed": (reading_type(4, None, None, HOUR, 46, 0, 6), 2, 300, "greenbridge_temperature",
                                      "C", "v", "26.85", {}),
    "unknown kind and uom": (reading_type(4, 1, 1, HOUR, 54, -1, 29), 0, 2401, "greenbridge_espi_reading", None,
                             "v", "240.1", {"greenbridge_uom": 29, "greenbridge_flow_direction": 1}),
    "uom sentinel 65535": (reading_type(4, 1, None, HOUR, 12, 0, 65535), 0, 7, "greenbridge_espi_reading", None,
                           "v", "7", {"greenbridge_uom": 65535}),
}


@pytest.mark.parametrize("case", sorted(VALUE_CASES))
def test_value_types_and_exact_scaling(case):
    rt, service_kind, raw, value_type, units, key, expected, fields = VALUE_CASES[case]
    translation = run(document(subscription(S(rt, [(grid_block(T0, HOUR, [raw]),)]), service_kind=service_kind)))
    segment = one_segment(translation)
    [fmt] = segment["formats"]
    assert fmt["type"] == value_type
    assert fmt.get("units") == units
    for name, value in fields.items():
        assert fmt[name] == value, name
    [[value_object]] = segment["values"]
    assert set(value_object) == {key}
    assert value_object[key] == Decimal(expected)
    assert isinstance(value_object[key], Decimal)
    # exact JSON: the digits of the Decimal, never a float or exponent form
    assert jsonenc.decode(jsonenc.encode(value_object))[key] == Decimal(expected)
    number = re.fullmatch(rb'\{"[a-z]+":(.*)\}', jsonenc.encode(value_object)).group(1)
    assert re.fullmatch(rb"-?\d+(\.\d+)?", number), number
    assert Decimal(number.decode()) == Decimal(expected)


def test_multiplier_sentinel_is_reported():
    translation = run(document(subscription(S(reading_type(p=4096), [(grid_block(T0, HOUR, [1]),)]))))
    assert translation["diagnostics"].counts["powerOfTenMultiplier 4096 is not a real multiplier; treated as 0"] == 1
    assert one_segment(translation)["formats"][0]["greenbridge_reading_type"]["power_of_ten_multiplier"] == 4096


def _summary_translation(multiplier: int, raw: int) -> dict:
    summary = E("UsageSummary", E("billingPeriod", E("duration", 31 * DAY), E("start", T0)), E("currency", 840),
                E("overallConsumptionLastPeriod", E("powerOfTenMultiplier", multiplier), E("uom", 72),
                  E("value", raw)),
                E("statusTimeStamp", T0 + 31 * DAY))
    return run(document(subscription(S(reading_type(), [(grid_block(T0, HOUR, [1]),)]), summaries=(summary,))))


@pytest.mark.parametrize(("multiplier", "raw"), [(-3, 35_000_000), (0, 35_000), (2, 350)], ids=["p-3", "p0", "p2"])
def test_usage_summary_multiplier(multiplier, raw):
    translation = _summary_translation(multiplier, raw)
    [section] = translation["bill_sections"]
    assert [(d["value"], d["units"]) for d in section["usage_details"]] == [(Decimal(35), "kWh")]  # 35 000 Wh
    [billing] = [s for s in translation["usage_segments"] if s["interval"] == 31 * DAY]
    assert billing["formats"][0]["id"] == "electric_usage_billing"
    assert billing["values"] == [[{"eu": Decimal(35)}]]
    assert billing["related_billsections"] == [section["cds_billsection_id"]]


def test_usage_summary_multiplier_sentinel_never_scales():
    """4096 is GBA test-plan junk (mapping-notes §3.4): the 35 000 Wh are either read with no multiplier (as for a
    ReadingType) or left out, but never scaled by 10^4096, and translating must not fail.

    At b999d52 this failed: billing.summary_value scaled by 10^4096 (usage detail 3.5000E+4097 kWh) and
    usage_segments() raised decimal.InvalidOperation, which the CLI did not catch.
    """
    translation = _summary_translation(4096, 35_000)
    [section] = translation["bill_sections"]
    assert [(d["value"], d["units"]) for d in section["usage_details"]] in ([], [(Decimal(35), "kWh")])
    billing = [s["values"] for s in translation["usage_segments"] if s["interval"] == 31 * DAY]
    assert billing in ([], [[[{"eu": Decimal(35)}]]])
    assert b"E+" not in encoded(translation)


def test_cost_is_in_hundred_thousandths_and_never_scaled_by_the_multiplier():
    rt = reading_type(4, 1, 1, HOUR, 12, -3, 72, E("currency", 124))
    b = grid_block(T0, HOUR, [2494200, 1000], [24443, 100000])
    segment = one_segment(run(document(subscription(S(rt, [(b,)])))))
    cost_format = segment["formats"][0]
    assert cost_format == {"id": "cost_electric_usage_forward_interval", "type": "cost", "currency": "CAD",
                           "indexes": [1]}
    assert column(segment, "cost_electric_usage_forward_interval") == [{"c": Decimal("0.24443")},
                                                                        {"c": Decimal("1")}]
    assert column(segment, "electric_usage_forward_interval") == [{"eu": Decimal("2.4942")}, {"eu": Decimal("0.001")}]


def test_cost_without_any_currency_is_not_a_cds_cost():
    b = grid_block(T0, HOUR, [1], [500])
    segment = one_segment(run(document(subscription(S(reading_type(), [(b,)])))))
    assert [f["type"] for f in segment["formats"]] == ["electric_usage", "greenbridge_cost_without_currency"]
    assert segment["values"] == [[{"eu": Decimal("0.001")}, {"v": Decimal("0.005")}]]
    with_default = one_segment(run(document(subscription(S(reading_type(), [(b,)]))), default_currency="EUR"))
    assert with_default["formats"][0]["currency"] == "EUR"


def test_value_sentinel_is_a_missing_value():
    b = grid_block(T0, HOUR, [100, -(2**47), 300])
    segment = one_segment(run(document(subscription(S(reading_type(), [(b,)])))))
    assert column(segment, "electric_usage_forward_interval") == [{"eu": Decimal("0.1")}, None,
                                                                   {"eu": Decimal("0.3")}]


def test_time_sentinel_reading_is_dropped():
    """A reading dated 2147483647 (the TimeType 'not set' value) is not placed in 2038."""
    b = block(T0, HOUR, reading(5, T0, HOUR), reading(7, 2**31 - 1, HOUR))
    translation = run(document(subscription(S(reading_type(), [(b,)]))))
    segment = one_segment(translation)
    assert segment["segment_start"] == iso(T0) and segment["values"] == [[{"eu": Decimal("0.005")}]]
    assert translation["stats"]["dropped"] == 1


def test_cost_sentinel_is_a_missing_cost():
    rt = reading_type(4, 1, 1, HOUR, 12, 0, 72, E("currency", 840))
    b = grid_block(T0, HOUR, [100, 200], [5000, -(2**47)])
    segment = one_segment(run(document(subscription(S(rt, [(b,)])))))
    assert column(segment, "cost_electric_usage_forward_interval") == [{"c": Decimal("0.05")}, None]


def test_register_reads_are_meter_readings_at_the_period_end():
    rt = reading_type(1, 1, 1, DAY, 12, 0, 72)
    b = block(T0, 2 * DAY, reading(12345678, T0, DAY), reading(12350001, T0 + DAY, DAY))
    data = document(subscription(S(rt, [(b,)])))
    translation = run(data)
    [meter] = translation["meter_devices"]
    segments = translation["usage_segments"]
    assert [s["segment_start"] for s in segments] == [iso(T0 + DAY), iso(T0 + 2 * DAY)]
    assert [s["values"] for s in segments] == [[[{"r": "12345.678"}]], [[{"r": "12350.001"}]]]
    fmt = segments[0]["formats"][0]
    assert fmt["type"] == "meter_readings" and fmt["units"] == "kWh" and fmt["register"] is None
    assert fmt["related_meterdevice"] == meter["cds_meterdevice_id"]
    at_start = run(data, register_read_at="start")["usage_segments"]
    assert [s["segment_start"] for s in at_start] == [iso(T0), iso(T0 + DAY)]


def test_register_reads_never_share_a_segment_with_usage():
    usage = S(reading_type(), [(grid_block(T0, HOUR, [1, 2]),)])
    register = S(reading_type(1, 1, 1, HOUR, 12, 0, 72), [(grid_block(T0, HOUR, [1000, 1001]),)])
    segments = run(document(subscription(usage, register)))["usage_segments"]
    assert sorted([f["type"] for f in s["formats"]] for s in segments) == [["electric_usage"], ["meter_readings"]]
    readings_segment = next(s for s in segments if s["formats"][0]["type"] == "meter_readings")
    assert readings_segment["segment_start"] == iso(T0 + HOUR)
    assert readings_segment["values"] == [[{"r": "1.000"}], [{"r": "1.001"}]]


# -- 7. net metering ------------------------------------------------------------------------------------------------

def test_forward_reverse_and_net_side_by_side():
    forward = S(reading_type(flow=1), [(grid_block(T0, HOUR, [1200, 0, 300, 0]),)])
    reverse = S(reading_type(flow=19), [(grid_block(T0, HOUR, [0, 800, 0, -50]),)])
    net = S(reading_type(flow=4), [(grid_block(T0, HOUR, [1200, -800, 300, 50]),)])
    translation = run(document(subscription(forward, reverse, net)))
    segment = one_segment(translation)
    assert [(f["id"], f["direction"]) for f in segment["formats"]] == [
        ("electric_usage_forward_interval", "forward"), ("electric_usage_net_interval", "net"),
        ("electric_usage_reverse_interval", "reverse")]
    assert segment["values"] == [
        [{"eu": Decimal("1.2")}, {"eu": Decimal("1.2")}, {"eu": Decimal("0")}],
        [{"eu": Decimal("0")}, {"eu": Decimal("-0.8")}, {"eu": Decimal("-0.8")}],
        [{"eu": Decimal("0.3")}, {"eu": Decimal("0.3")}, {"eu": Decimal("0")}],
        [{"eu": Decimal("0")}, {"eu": Decimal("0.05")}, {"eu": Decimal("0.05")}],  # a negative reverse: negated
    ]
    reverse_values = [v["eu"] for v in column(segment, "electric_usage_reverse_interval")]
    assert not any(v.is_signed() for v in reverse_values if v == 0)
    assert not re.search(r"-0(\.0+)?(?![.\d])", jsonenc.encode(segment["values"]).decode())
    assert "bidirectional" in translation["meter_devices"][0]["meter_types"]


# -- 9. DST -------------------------------------------------------------------------------------------------------

SPRING_DAY = 1710046800   # 2024-03-10T00:00-05:00 (EST) = 05:00Z; the next local midnight is 04:00Z (EDT)
SPRING_NEXT = 1710129600
FALL_DAY = 1730606400     # 2024-11-03T00:00-04:00 (EDT) = 04:00Z; the next local midnight is 05:00Z (EST)
FALL_NEXT = 1730696400


def test_dst_constants_are_local_midnights():
    from zoneinfo import ZoneInfo

    zone = ZoneInfo("America/New_York")
    for epoch, local in ((SPRING_DAY, "2024-03-10"), (SPRING_NEXT, "2024-03-11"), (FALL_DAY, "2024-11-03"),
                         (FALL_NEXT, "2024-11-04")):
        assert datetime.fromtimestamp(epoch, zone).isoformat().startswith(f"{local}T00:00:00")


def _quarter_hours(first: int, last: int) -> list[int]:
    return [(i * 7) % 500 for i in range((last - first) // 900)]


@pytest.mark.parametrize("zone_source", ["timezone option", "LocalTimeParameters"])
@pytest.mark.parametrize(("day", "next_day", "slots"), [(SPRING_DAY, SPRING_NEXT, 92), (FALL_DAY, FALL_NEXT, 100)],
                         ids=["spring", "fall"])
def test_a_dst_day_of_quarter_hours_is_one_segment(zone_source, day, next_day, slots):
    first, last = day - DAY, next_day + DAY  # the day before, the DST day, the day after (24 h each)
    values = _quarter_hours(first, last)
    assert len(values) == 96 + slots + 96
    series = S(reading_type(interval=900), [(grid_block(first, 900, values),)])
    if zone_source == "timezone option":
        translation = run(document(subscription(series)), timezone="America/New_York")
    else:
        translation = run(document(subscription(series, ltp=True)))
    segments = translation["usage_segments"]
    assert [len(s["values"]) for s in segments] == [96, slots, 96]
    assert [s["segment_start"] for s in segments] == [iso(first), iso(day), iso(next_day)]
    assert segments[1]["segment_end"] == iso(next_day)
    assert [v[0]["eu"] for v in segments[1]["values"]] == [Decimal(x).scaleb(-3) for x in values[96:96 + slots]]


def test_dst_days_through_the_cli(tmp_path, capsys):
    spring = grid_block(SPRING_DAY, 900, _quarter_hours(SPRING_DAY, SPRING_NEXT))
    fall = grid_block(FALL_DAY, 900, _quarter_hours(FALL_DAY, FALL_NEXT))
    source = tmp_path / "dst.xml"
    source.write_bytes(document(subscription(S(reading_type(interval=900), [(spring,), (fall,)]))))
    out = tmp_path / "out.json"
    assert main(["translate", str(source), "-o", str(out), "--timezone", "America/New_York", "--now",
                 "2026-01-02T03:04:05Z", "-q"]) == 0
    result = json.loads(out.read_bytes())
    assert [len(s["values"]) for s in result["usage_segments"]] == [92, 100]
    assert [s["segment_start"] for s in result["usage_segments"]] == [iso(SPRING_DAY), iso(FALL_DAY)]


def test_daily_readings_on_dst_days_become_period_segments():
    starts = [SPRING_DAY - DAY, SPRING_DAY, SPRING_NEXT]
    durations = [DAY, SPRING_NEXT - SPRING_DAY, DAY]
    assert durations[1] == 23 * HOUR
    b = block(starts[0], sum(durations),
              *(reading(100 + i, s, d) for i, (s, d) in enumerate(zip(starts, durations, strict=True))))
    fall = block(FALL_DAY, FALL_NEXT - FALL_DAY, reading(200, FALL_DAY, FALL_NEXT - FALL_DAY))
    rt = reading_type(4, 1, 1, DAY, 12, 0, 72)
    segments = run(document(subscription(S(rt, [(b,), (fall,)]))), timezone="America/New_York")["usage_segments"]
    assert [(s["segment_start"], s["segment_end"], s["interval"]) for s in segments] == [
        (iso(starts[0]), iso(starts[0] + DAY), DAY),
        (iso(SPRING_DAY), iso(SPRING_NEXT), 23 * HOUR),
        (iso(SPRING_NEXT), iso(SPRING_NEXT + DAY), DAY),
        (iso(FALL_DAY), iso(FALL_NEXT), 25 * HOUR),
    ]
    assert [s["values"] for s in segments] == [[[{"eu": Decimal(v).scaleb(-3)}]] for v in (100, 101, 102, 200)]
    assert len({s["cds_usagesegment_id"] for s in segments}) == 4


def test_a_daily_series_keeps_one_format_id_across_dst_days():
    starts = [SPRING_DAY - DAY, SPRING_DAY, SPRING_NEXT]
    durations = [DAY, SPRING_NEXT - SPRING_DAY, DAY]
    b = block(starts[0], sum(durations), *(reading(1, s, d) for s, d in zip(starts, durations, strict=True)))
    fall = block(FALL_DAY, FALL_NEXT - FALL_DAY, reading(2, FALL_DAY, FALL_NEXT - FALL_DAY))
    rt = reading_type(4, 1, 1, DAY, 12, 0, 72)
    segments = run(document(subscription(S(rt, [(b,), (fall,)]))), timezone="America/New_York")["usage_segments"]
    assert [s["formats"][0]["id"] for s in segments] == ["electric_usage_forward_daily"] * 4


def test_gaps_are_nulls_at_their_position():
    forward = S(reading_type(interval=900), [(grid_block(T0, 900, [None, 1, 2, None, None, 5, None]),)])
    reverse = S(reading_type(flow=19, interval=900), [(grid_block(T0, 900, [None, None, 20, 30, None, None, 60]),)])
    segment = one_segment(run(document(subscription(forward, reverse))))
    # no leading padding: the segment starts at the first slot with data in any format
    assert segment["segment_start"] == iso(T0 + 900)
    assert segment["segment_end"] == iso(T0 + 7 * 900)
    milli = Decimal("0.001")
    assert segment["values"] == [
        [{"eu": 1 * milli}, None],
        [{"eu": 2 * milli}, {"eu": -20 * milli}],
        [None, {"eu": -30 * milli}],
        [None, None],  # empty in all formats: a Value Set of nulls
        [{"eu": 5 * milli}, None],
        [None, {"eu": -60 * milli}],
    ]


# -- 10. duplicates -------------------------------------------------------------------------------------------------

def _duplicate_entries(first_updated: str, second_updated: str, first_value=111, second_value=222) -> list[Ent]:
    return subscription(S(reading_type(), [(grid_block(T0, HOUR, [first_value, 1]),),
                                           (grid_block(T0, HOUR, [second_value]),)],
                          [first_updated, second_updated]))


def _slot_value(entries: list[Ent]) -> Decimal:
    translation = run(document(entries))
    assert translation["stats"]["collisions"] == 1
    return column(one_segment(translation), "electric_usage_forward_interval")[0]["eu"]


@pytest.mark.parametrize("swap", [False, True], ids=["newer-first", "newer-last"])
def test_the_newer_entry_wins_a_slot_regardless_of_document_order(swap):
    entries = _duplicate_entries("2024-08-02T00:00:00Z", "2024-08-01T23:59:59+00:00")
    if swap:
        entries[-1], entries[-2] = entries[-2], entries[-1]
    assert _slot_value(entries) == Decimal("0.111")


def test_equal_updated_the_later_entry_in_the_document_wins():
    entries = _duplicate_entries("2024-08-01T00:00:00Z", "2024-08-01T02:00:00+02:00")  # the same instant
    assert _slot_value(entries) == Decimal("0.222")
    entries[-1], entries[-2] = entries[-2], entries[-1]
    assert _slot_value(entries) == Decimal("0.111")


def test_two_sibling_blocks_with_one_slot_the_later_block_wins():
    entries = subscription(S(reading_type(), [(grid_block(T0, HOUR, [5, 6]), grid_block(T0 + HOUR, HOUR, [7]))]))
    translation = run(document(entries))
    assert column(one_segment(translation), "electric_usage_forward_interval") == [
        {"eu": Decimal("0.005")}, {"eu": Decimal("0.007")}]


def test_sub_second_updated_times_still_order_entries():
    entries = _duplicate_entries("2024-08-01T00:00:00.900Z", "2024-08-01T00:00:00.100Z")
    assert _slot_value(entries) == Decimal("0.111")


def test_a_correction_replaces_cost_and_quality_too():
    rt = reading_type(4, 1, 1, HOUR, 12, 0, 72, E("currency", 840))
    estimate = block(T0, HOUR, reading(111, T0, HOUR, cost=50000, qualities=(8,)))
    actual = block(T0, HOUR, reading(222, T0, HOUR))
    entries = subscription(S(rt, [(estimate,), (actual,)], ["2024-08-01T00:00:00Z", "2024-08-02T00:00:00Z"]))
    segment = one_segment(run(document(entries)))
    assert [f["id"] for f in segment["formats"]] == ["electric_usage_forward_interval"]
    assert "quality" not in segment["formats"][0]
    assert segment["values"] == [[{"eu": Decimal("0.222")}]]


# -- 11. idempotency and ids -------------------------------------------------------------------------------------

def _rich_entries(uuids: bool = False) -> list[Ent]:
    """Two UsagePoints (electric with net metering, costs, a summary and LocalTimeParameters; daily gas)."""
    summary = E("UsageSummary", E("billingPeriod", E("duration", 2 * DAY), E("start", T0)),
                E("billLastPeriod", 500000), E("currency", 840),
                E("overallConsumptionLastPeriod", E("powerOfTenMultiplier", -3), E("uom", 72), E("value", 4200000)),
                E("statusTimeStamp", T0 + 2 * DAY))
    first = subscription(
        S(reading_type(4, 1, 1, HOUR, 12, 0, 72, E("currency", 840)),
          [(grid_block(T0, HOUR, [1, 2, 3], [10, 20, 30]),), (grid_block(T0 + DAY, HOUR, [4]),)]),
        S(reading_type(flow=19), [(grid_block(T0, HOUR, [9, None, 8]),)]),
        ltp=True, summaries=(summary,))
    second = subscription(S(reading_type(4, 7, 1, DAY, 12, -3, 169), [(grid_block(T0, DAY, [5000, 6000]),)]),
                          up=f"{BASE}/UsagePoint/2", service_kind=1)
    entries = first + second
    if uuids:
        for n, entry in enumerate(entries):
            entry.id = f"urn:uuid:00000000-0000-4000-8000-{n:012d}"
    return entries


def _ids(translation: dict) -> list[str]:
    found = []

    def walk(value, key=""):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, k)
        elif isinstance(value, list):
            for v in value:
                walk(v, key)
        elif isinstance(value, str) and ((key.startswith("cds_") and key.endswith("_id"))
                                         or key.startswith(("related_", "current_"))):
            found.append(value)

    walk({name: translation[name] for name in LISTINGS})
    return found


def test_translating_twice_gives_identical_bytes():
    data = document(_rich_entries())
    first, second = run(data), run(data)
    assert encoded(first) == encoded(second)
    assert len(first["usage_segments"]) >= 3 and len(first["bill_sections"]) == 1


@pytest.mark.parametrize("option", [{"id_secret": "another secret"}, {"custodian": "another-custodian"}])
def test_secret_and_custodian_change_every_id(option):
    data = document(_rich_entries())
    base, other = run(data), run(data, **option)
    base_ids, other_ids = set(_ids(base)), set(_ids(other))
    assert len(base_ids) >= 10 and len(other_ids) == len(base_ids)
    assert not base_ids & other_ids
    # only the ids differ: the same objects with the same values
    assert [s["values"] for s in base["usage_segments"]] == [s["values"] for s in other["usage_segments"]]


def _by_id(translation: dict) -> dict[str, dict[str, bytes]]:
    return {name: {next(iter(obj.values())): jsonenc.encode(obj) for obj in translation[name]} for name in LISTINGS}


@pytest.mark.parametrize("uuids", [False, True], ids=["href-keys", "uuid-keys"])
def test_reordering_entries_changes_no_id_and_no_value(uuids):
    entries = _rich_entries(uuids)
    base = run(document(entries))
    assert base["stats"]["collisions"] == 0
    for permutation in (entries[::-1], entries[5:] + entries[:5], entries[1::2] + entries[::2]):
        other = run(document(permutation))
        assert _by_id(other) == _by_id(base)
    expected = "uuid" if uuids else "href"
    with translate(document(entries), TranslateOptions(now=NOW)) as result:
        assert result.key_strategy == expected


# -- 12. rejections --------------------------------------------------------------------------------------------------

NO_USAGE = {
    "BatchList": (f'<BatchList xmlns="{ESPI}"><resources>{BASE}/Batch/Subscription/9</resources></BatchList>'.encode(),
                  "a bare BatchList"),
    "ServiceStatus": (f"<ServiceStatus xmlns='{ESPI}'><currentStatus>1</currentStatus></ServiceStatus>".encode(),
                      "a bare ServiceStatus"),
    "ApplicationInformation entry": (document([Ent(f"{BASE}/ApplicationInformation/1", None, (), (E(
        "ApplicationInformation", E("dataCustodianId", "dc"), E("client_id", "x")),))]),
        "only 1 ApplicationInformation"),
    "empty feed": (document([]), "no ESPI resources at all"),
    "only a ReadingType": (document([Ent(f"{BASE}/ReadingType/1", None, (), (reading_type(),))]), "only 1 ReadingType"),
    "IntervalBlocks without ReadingType": (
        document([Ent("ib/1", None, (), (grid_block(T0, HOUR, [1, 2]),)),
                  Ent("ib/2", None, (), (grid_block(T0 + 7200, HOUR, [3]),))]),
        "3 readings in IntervalBlocks"),
}


@pytest.mark.parametrize("case", sorted(NO_USAGE))
def test_documents_without_usage_data_are_rejected_with_what_they_hold(case):
    data, what = NO_USAGE[case]
    with pytest.raises(NoUsageDataError) as caught:
        translate(data, TranslateOptions(now=NOW), name=f"{case}.xml")
    message = str(caught.value)
    assert message.startswith(f"{case}.xml: ")
    assert what in message, message
    if case == "IntervalBlocks without ReadingType":
        assert "no ReadingType" in message


def test_not_well_formed_xml_names_the_line():
    data = document(subscription(S(reading_type(), [(grid_block(T0, HOUR, [1]),)])))
    lines = data.decode().splitlines()
    [number] = [n for n, line in enumerate(lines, start=1) if "</espi:value>" in line]
    assert number == 6  # declaration, feed header, UsagePoint, MeterReading, ReadingType, IntervalBlock
    lines[number - 1] = lines[number - 1].replace("</espi:value>", "</espi:valeu>")
    with pytest.raises(XmlSyntaxError) as caught:
        translate("\n".join(lines).encode(), name="typo.xml")
    assert caught.value.line == 6
    assert str(caught.value).startswith("typo.xml:6: not well-formed XML")


@pytest.mark.parametrize("case", ["BatchList", "IntervalBlocks without ReadingType", "not well-formed"])
def test_the_cli_fails_cleanly_and_leaves_no_output(tmp_path, capsys, case):
    source = tmp_path / "in.xml"
    if case == "not well-formed":
        source.write_bytes(b'<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n<entry>\n</feed>\n')
        expected = f"{source}:4: not well-formed XML"
    else:
        data, what = NO_USAGE[case]
        source.write_bytes(data)
        expected = what
    out = tmp_path / "out.json"
    assert main(["translate", str(source), "-o", str(out), "--now", "2026-01-02T03:04:05Z"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("greenbridge translate: ")
    assert expected in captured.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.xml"]  # neither out.json nor out.json.part


def test_the_cli_output_matches_the_library(tmp_path):
    source = tmp_path / "in.xml"
    source.write_bytes(document(_rich_entries()))
    out = tmp_path / "out.json"
    assert main(["translate", str(source), "-o", str(out), "--now", "2026-01-02T03:04:05Z", "-q",
                 "--id-secret", "cli-secret", "--custodian", "c1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.xml", "out.json"]
    library = jsonenc.decode(encoded(run(source.read_bytes(), id_secret="cli-secret", custodian="c1")))
    assert jsonenc.decode(out.read_bytes()) == library


# -- 13. memory ---------------------------------------------------------------------------------------------------

def _generated(days: int) -> bytes:
    out = io.StringIO()
    write_feed(out, FeedSpec(days=days, net_metering=True, quality_gaps=True))
    return out.getvalue().encode()


def _peak_translating(data: bytes) -> tuple[int, int]:
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        values = 0
        with translate(data, TranslateOptions(now=NOW)) as result:
            for segment in result.usage_segments():
                values += len(segment["values"])
        return tracemalloc.get_traced_memory()[1], values
    finally:
        tracemalloc.stop()


def test_translation_memory_does_not_grow_with_the_readings():
    small, large = _generated(2), _generated(20)
    _peak_translating(small)  # warm lazy imports and caches
    peak_small, values_small = _peak_translating(small)
    peak_large, values_large = _peak_translating(large)
    assert values_large > 9 * values_small
    assert peak_large < 3 * peak_small, (peak_small, peak_large)
