"""The feed generator: strictly valid ESPI, and translations that agree with the totals it counted while writing."""

from __future__ import annotations

import io
from datetime import date
from decimal import Decimal

import pytest

from bridge.from_espi import TranslateOptions, translate
from espi.generate import TRAITS, FeedSpec, write_feed
from espi.validation import validate


def generated(spec: FeedSpec):
    buffer = io.StringIO()
    totals = write_feed(buffer, spec)
    return buffer.getvalue().encode(), totals


@pytest.mark.parametrize("spec", [
    FeedSpec(usage_points=2, days=3, net_metering=True, quality_gaps=True),
    FeedSpec(usage_points=3, days=40, commodity="mixed"),
    FeedSpec(usage_points=1, days=2, costs=False, summaries=False, interval=3600),
], ids=["net-metering", "mixed", "hourly-bare"])
def test_generated_feeds_are_valid_against_the_strict_schemas(spec):
    data, _totals = generated(spec)
    report = validate(data, strict=True, name="generated.xml")
    assert report.valid, [str(issue) for issue in report.errors[:5]]


def test_translation_matches_the_generator_totals():
    spec = FeedSpec(usage_points=3, days=40, commodity="mixed", net_metering=True)
    data, totals = generated(spec)
    with translate(data, TranslateOptions(timezone="America/New_York")) as result:
        segments = list(result.usage_segments())
        service_points = [sp["cds_servicepoint_id"] for sp in result.service_points]
    assert len(service_points) == 3
    key = {"electric_forward": ("electric_usage", "eu", "forward", Decimal("0.001")),
           "electric_reverse": ("electric_usage", "eu", "reverse", Decimal("-0.001")),
           "gas": ("natural_gas_usage", "gu", None, Decimal("0.001")),
           "water": ("water_usage", "wu", None, Decimal(1))}
    # UsagePoints are generated in order and ids sort arbitrarily: match each generated series by its totals
    found: dict[tuple[str, str], list] = {}
    for segment in segments:
        (sp,) = segment["related_servicepoints"]
        for position, fmt in enumerate(segment["formats"]):
            if fmt["id"].endswith("_billing") or fmt["type"] == "cost":
                continue
            column = found.setdefault((sp, fmt["type"] + str(fmt.get("direction"))), [])
            column.extend(vs[position] for vs in segment["values"] if vs[position] is not None)
    for (_u, name), (count, raw_sum, _cost) in totals.series.items():
        value_type, value_key, direction, scale = key[name]
        matches = [values for (sp, kind), values in found.items() if kind == value_type + str(direction)
                   and sum(v[value_key] for v in values) == raw_sum * scale]
        assert matches, f"no translated series adds up to the generated {name} total"
        assert len(matches[0]) == count


def test_dst_days_have_92_and_100_quarter_hours_and_gaps_are_null():
    spec = FeedSpec(usage_points=1, days=2, start=date(2025, 3, 9), quality_gaps=True, costs=False, summaries=False)
    data, totals = generated(spec)
    with translate(data, TranslateOptions()) as result:  # the zone comes from the feed's LocalTimeParameters
        segments = list(result.usage_segments())
    by_start = {s["segment_start"]: s for s in segments}
    spring = by_start["2025-03-09T05:00:00Z"]
    assert spring["segment_end"] == "2025-03-10T04:00:00Z"
    assert len(spring["values"]) == 92 and spring["interval"] == 900
    assert sum(1 for vs in spring["values"] if vs[0] is None) == 1  # the one reading a day left out
    fall = generated(FeedSpec(usage_points=1, days=1, start=date(2025, 11, 2), costs=False, summaries=False))[0]
    with translate(fall, TranslateOptions()) as result:
        (segment,) = list(result.usage_segments())
    assert len(segment["values"]) == 100
    (series_totals,) = totals.series.values()
    assert series_totals[0] == 92 + 96 - 2


def test_estimated_readings_carry_their_quality():
    data, _totals = generated(FeedSpec(usage_points=1, days=5, quality_gaps=True, costs=False, summaries=False))
    with translate(data, TranslateOptions()) as result:
        segments = list(result.usage_segments())
    estimated = [v for s in segments for vs in s["values"] for v in vs if v and v.get("greenbridge_quality")]
    assert estimated and all(v["greenbridge_quality"] == "estimated" and v["greenbridge_espi_quality"] == [8]
                             for v in estimated)
    assert all(f.get("greenbridge_default_quality") == "valid" for s in segments for f in s["formats"]
               if any(v and v.get("greenbridge_quality") for vs in s["values"] for v in vs))


@pytest.mark.parametrize("trait", sorted(TRAITS))
def test_every_trait_keeps_the_feed_valid_and_deterministic(trait):
    days = 31 if trait == "directional-summaries" else 2  # summaries need a whole month
    spec = FeedSpec(usage_points=2, days=days, net_metering=True, traits={trait})
    data, _totals = generated(spec)
    report = validate(data, strict=True, name=f"{trait}.xml")
    assert report.valid, [str(issue) for issue in report.errors[:5]]
    assert generated(FeedSpec(usage_points=2, days=days, net_metering=True, traits=[trait]))[0] == data
    assert data != generated(FeedSpec(usage_points=2, days=days, net_metering=True))[0]


def test_traits_write_what_they_say():
    text = generated(FeedSpec(usage_points=1, days=1, net_metering=True, summaries=False,
                              traits={"zero-durations", "cumulative-label", "offset-timestamps"}))[0].decode()
    assert "<espi:duration>0</espi:duration>" in text and "<espi:duration>900</espi:duration>" not in text
    assert text.count("<espi:accumulationBehaviour>1</espi:accumulationBehaviour>") == 2
    assert "LocalTimeParameters" not in text and "Z</updated>" not in text
    assert "<updated>2025-12-31T19:00:00-05:00</updated>" in text
    epoch = generated(FeedSpec(days=1, start=date(2024, 5, 1), traits={"epoch-dst-rules"}))[0].decode()
    # 2024-03-10T07:00Z and 2024-11-03T06:00Z, the US transitions of the spec's start year
    assert "<espi:dstStartRule>65ED5A70</espi:dstStartRule>" in epoch
    assert "<espi:dstEndRule>67271160</espi:dstEndRule>" in epoch


@pytest.mark.parametrize(("spec", "message"), [
    ({"traits": {"sideways"}}, "unknown trait sideways"),
    ({"traits": {"accumulation-none", "cumulative-label"}, "net_metering": True}, "pick one"),
    ({"traits": {"offset-timestamps", "epoch-dst-rules"}}, "exclude each other"),
    ({"traits": {"link-conflict"}}, "need two series"),
    ({"traits": {"reverse-only"}, "commodity": "mixed", "usage_points": 2}, "last UsagePoint to be electric"),
])
def test_traits_refuse_what_they_cannot_write(spec, message):
    with pytest.raises(ValueError, match=message):
        FeedSpec(**spec)


def test_generate_takes_traits_on_the_command_line(tmp_path, capsys):
    from greenbridge.cli import main

    out = tmp_path / "feed.xml"
    assert main(["generate", "--days", "1", "--trait", "zero-durations", "--trait", "reverse-only",
                 "-o", str(out)]) == 0
    assert out.read_bytes() == generated(FeedSpec(days=1, traits={"zero-durations", "reverse-only"}))[0]
    assert main(["generate", "--trait", "nope"]) == 2
    assert "unknown trait nope" in capsys.readouterr().err
