"""Translated values checked against independent arithmetic on the raw XML of real Green Button samples.

The oracle below reads the sample with plain lxml and follows the Atom links in the simplest way that works for
these files; it shares no code with ``espi``/``cds``. It computes per series: the number of readings, the first
and last timestamps, the exact total (value × 10^powerOfTenMultiplier, in kWh for Wh), totals per local day and
the cost total (cost × 10⁻⁵). The translation must agree to the last digit.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from conftest import sample_files
from lxml import etree

from bridge.from_espi import LISTINGS, TranslateOptions, translate
from bridge.from_espi.translate import DEFAULT_ID_SECRET
from cds.ids import IdFactory
from espi.errors import NoUsageDataError

NOW = datetime(2026, 1, 1, tzinfo=UTC)
ZONE = "America/New_York"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _child(element, name):
    for child in element:
        if isinstance(child.tag, str) and _local(child.tag) == name:
            return child
    return None


def _int(element, name, default=None):
    child = _child(element, name) if element is not None else None
    if child is None or child.text is None or not child.text.strip():
        return default
    return int(Decimal(child.text.strip()))


@dataclass
class OracleSeries:
    usage_point_id: str
    power: int
    uom: int
    flow: int | None
    accumulation: int | None
    starts: list[int] = field(default_factory=list)
    values: list[int] = field(default_factory=list)
    costs: list[int] = field(default_factory=list)

    def scaled(self, raw: int) -> Decimal:
        return Decimal(raw).scaleb(self.power - (3 if self.uom == 72 else 0))


def oracle(path) -> list[OracleSeries]:
    """Series of a sample, read without the project's parser."""
    tree = etree.parse(str(path), etree.XMLParser(resolve_entities=False, no_network=True))
    entries = [e for e in tree.getroot() if isinstance(e.tag, str) and _local(e.tag) == "entry"]

    def links(entry, rel):
        return [link.get("href").strip() for link in entry if isinstance(link.tag, str)
                and _local(link.tag) == "link" and link.get("rel") == rel]

    def resource(entry):
        content = _child(entry, "content")
        return [r for r in content if isinstance(r.tag, str)] if content is not None else []

    by_self = {links(e, "self")[0]: e for e in entries if links(e, "self")}
    series = []
    for entry in entries:
        kinds = [_local(r.tag) for r in resource(entry)]
        if "MeterReading" not in kinds:
            continue
        usage_point = next(e for e in entries if "UsagePoint" in [_local(r.tag) for r in resource(e)]
                           and links(entry, "up")[0] in links(e, "related"))
        reading_type = next(resource(by_self[h])[0] for h in links(entry, "related") if h in by_self)
        item = OracleSeries(
            usage_point_id=_child(usage_point, "id").text.strip().lower(),
            power=_int(reading_type, "powerOfTenMultiplier", 0), uom=_int(reading_type, "uom"),
            flow=_int(reading_type, "flowDirection"), accumulation=_int(reading_type, "accumulationBehaviour"))
        block_collections = set(links(entry, "related"))
        for block_entry in entries:
            if not links(block_entry, "up") or links(block_entry, "up")[0] not in block_collections:
                continue
            for block in resource(block_entry):
                for reading in block:
                    if not isinstance(reading.tag, str) or _local(reading.tag) != "IntervalReading":
                        continue
                    item.starts.append(_int(_child(reading, "timePeriod"), "start"))
                    item.values.append(_int(reading, "value"))
                    cost = _int(reading, "cost")
                    if cost is not None:
                        item.costs.append(cost)
        series.append(item)
    return series


def translated(path, **options):
    """(the translation's listings and key strategy, its usage segments), read while the translation is open (bill
    sections, like usage segments, come from its scratch file)."""
    with translate(path, TranslateOptions(now=NOW, timezone=ZONE, **options)) as result:
        segments = list(result.usage_segments())
        listings = {name: list(result.listing(name)) for name in LISTINGS if name != "usage_segments"}
        return SimpleNamespace(**listings, key_strategy=result.key_strategy), segments


def column_values(segments, servicepoint_id, predicate):
    """(start epoch, value) of every non-null value in formats selected by ``predicate`` for one service point."""
    found = []
    for segment in segments:
        if servicepoint_id not in segment["related_servicepoints"]:
            continue
        start = int(datetime.fromisoformat(segment["segment_start"]).timestamp())
        for position, fmt in enumerate(segment["formats"]):
            if not predicate(fmt):
                continue
            for i, value_set in enumerate(segment["values"]):
                value = value_set[position]
                if value is not None:
                    found.append((start + i * segment["interval"], value))
    return found


def servicepoint_id(usage_point_key: str) -> str:
    return IdFactory(DEFAULT_ID_SECRET, "default").make("servicepoint", usage_point_key)


def is_usage(fmt, direction=None):
    return fmt["type"] == "electric_usage" and not fmt["id"].endswith("_billing") and \
        fmt.get("direction") == direction


@pytest.mark.samples
@pytest.mark.parametrize("name", [
    "sdk_15minLP_15Days.xml",  # 14 IntervalBlocks in one entry, costs, a DST day
    "openespi_test_usage_data.xml",
    "bidgely_ameren_Res_Electric_15_Minutes_12-04-2023.xml",  # ReadingQuality on every reading
    "sdk_1hrLP_32DaysNoCost.xml",
    "gbobjects_Coastal_Multi_Family_RetailCustomer_5.xml",  # a year of hourly data
    "cew821_sample_greenbutton_data.xml",
    "jendobson_testdata.xml",
])
def test_electric_totals_counts_and_days_match_the_xml(sample, name):
    path = sample(name)
    expected = [s for s in oracle(path) if s.uom == 72 and s.accumulation in (None, 4)]
    assert expected, "the oracle found no electric delta series"
    _result, segments = translated(path)
    zone = ZoneInfo(ZONE)
    for series in expected:
        got = column_values(segments, servicepoint_id(series.usage_point_id),
                            lambda f, s=series: is_usage(f, {1: "forward", 19: "reverse", 4: "net"}.get(s.flow)))
        assert len(got) == len(series.values)
        assert min(t for t, _ in got) == min(series.starts)
        assert max(t for t, _ in got) == max(series.starts)
        sign = -1 if series.flow == 19 else 1
        assert sum((v["eu"] for _, v in got), Decimal(0)) == sign * sum(map(series.scaled, series.values))
        per_day_expected: dict[date, Decimal] = defaultdict(Decimal)
        for start, raw in zip(series.starts, series.values, strict=True):
            per_day_expected[datetime.fromtimestamp(start, zone).date()] += sign * series.scaled(raw)
        per_day_got: dict[date, Decimal] = defaultdict(Decimal)
        for start, value in got:
            per_day_got[datetime.fromtimestamp(start, zone).date()] += value["eu"]
        assert per_day_got == per_day_expected


@pytest.mark.samples
@pytest.mark.parametrize("name", ["sdk_15minLP_15Days.xml", "openespi_test_usage_data.xml",
                                  "cmdtest_soapui_BatchBulk.xml", "gbobjects_TestGBDataOneYearDailyBinnedMonthly.xml"])
def test_cost_totals_match_the_xml(sample, name):
    path = sample(name)
    expected = oracle(path)
    _result, segments = translated(path)
    for series in expected:
        got = column_values(segments, servicepoint_id(series.usage_point_id),
                            lambda f: f["type"] == "cost")
        assert sum((v["c"] for _, v in got), Decimal(0)) == sum((Decimal(c).scaleb(-5) for c in series.costs),
                                                                Decimal(0))
        assert len(got) == len(series.costs)


@pytest.mark.samples
def test_negative_power_of_ten_multiplier_and_kelvin(sample):
    """Hydro One: Wh with multiplier −3, costs in 10⁻⁵ CAD never scaled by it, temperature in kelvin."""
    path = sample("hydroone_DownLoadMyData_redacted.xml")
    series = oracle(path)
    energy = next(s for s in series if s.uom == 72)
    kelvin = next(s for s in series if s.uom == 6)
    assert energy.power == -3
    result, segments = translated(path)
    assert result.key_strategy == "href"  # every entry has the same atom:id there
    (segment,) = segments
    ids = [f["id"] for f in segment["formats"]]
    # the ReadingType says tou=3, a code only the custodian's table can name: kept in the id and an extension
    assert ids == ["cost_electric_usage_forward_tou3_interval", "electric_usage_forward_tou3_interval",
                   "greenbridge_temperature_interval"]
    assert segment["formats"][1]["greenbridge_tou_code"] == 3 and "tou" not in segment["formats"][1]
    energy_column = [vs[1]["eu"] for vs in segment["values"]]
    assert energy_column == [Decimal(v).scaleb(-6) for v in energy.values]
    assert sum(energy_column) == sum(Decimal(v) for v in energy.values) / 1_000_000
    cost_column = [vs[0]["c"] for vs in segment["values"]]
    assert cost_column == [Decimal(c).scaleb(-5) for c in energy.costs]
    assert segment["formats"][0]["currency"] == "CAD"
    temperatures = [vs[2]["v"] for vs in segment["values"]]
    assert temperatures == [Decimal(v).scaleb(-3) - Decimal("273.15") for v in kelvin.values]


@pytest.mark.samples
def test_gas_monthly_usage_cost_and_billing(sample):
    path = sample("cmdtest_Gas.xml")
    (series,) = oracle(path)
    assert (series.uom, series.power) == (169, -3)
    result, segments = translated(path)
    got = column_values(segments, servicepoint_id(series.usage_point_id),
                        lambda f: f["type"] == "natural_gas_usage" and not f["id"].endswith("_billing"))
    assert sorted(t for t, _ in got) == sorted(series.starts)
    assert sum((v["gu"] for _, v in got), Decimal(0)) == sum(Decimal(v).scaleb(-3) for v in series.values)
    # monthly readings (and a final 14-day one): one period segment each, a single Value Set
    assert all(seg["interval"] >= 14 * 86400 and len(seg["values"]) == 1 for seg in segments)
    assert len(segments) == len(series.values)
    assert {f["units"] for seg in segments for f in seg["formats"] if f["type"] == "natural_gas_usage"} == {"therm"}
    (section,) = result.bill_sections
    assert section["section_types"] == ["service_contract", "natural_gas"]
    assert section["usage_details"][0]["value"] == Decimal("77.974")
    assert section["cost_details"][0]["cost"] == Decimal("263")
    assert (section["start_date"], section["end_date"]) == ("2012-03-01", "2012-03-31")


@pytest.mark.samples
def test_forward_and_reverse_series_of_three_usage_points(sample):
    """cmdtest: forward interval series on three UsagePoints; the reverse series is labelled a register
    (bulkQuantity), but its values (0 and 1) fall 5 times in 23 pairs: it is read as interval data (§4.4)."""
    path = sample("cmdtest_threeusagepointsonecustomer.xml")
    series = oracle(path)
    result, segments = translated(path)
    assert len(result.service_points) == 3
    for item in series:
        sp = servicepoint_id(item.usage_point_id)
        if item.flow == 1:
            got = column_values(segments, sp, lambda f: is_usage(f, "forward"))
            assert sum((v["eu"] for _, v in got), Decimal(0)) == sum(map(item.scaled, item.values))
            assert len(got) == len(item.values)
        else:
            assert (item.flow, item.accumulation) == (19, 1)
            assert not column_values(segments, sp, lambda f: f["type"] == "meter_readings")
            got = column_values(segments, sp, lambda f: is_usage(f, "reverse"))
            # interval data: negated (reverse), at the start of each ESPI period
            expected = dict(zip(item.starts, (-item.scaled(v) for v in item.values), strict=True))
            assert sorted((t, v["eu"]) for t, v in got) == sorted(expected.items())
            fmt = next(f for seg in segments for f in seg["formats"] if is_usage(f, "reverse"))
            assert fmt["greenbridge_accumulation_note"] == (
                "accumulationBehaviour 1 (bulkQuantity), but the values do not climb (5 of 23 consecutive readings "
                "fall): read as interval data")
            meter = next(m for m in result.meter_devices if sp in m["current_servicepoints"])
            assert "bidirectional" in meter["meter_types"]


@pytest.mark.samples
def test_customer_data_becomes_accounts_contracts_and_meters(sample):
    path = sample("hydroone_Retail_Customer_redacted.xml")
    tree = etree.parse(str(path))
    ns = {"c": "http://naesb.org/espi/customer"}
    account_number = tree.findtext(".//c:CustomerAccount/c:accountId", namespaces=ns).strip()
    agreement = tree.findtext(".//c:CustomerAgreement/c:agreementId", namespaces=ns).strip()
    serial = tree.getroot().xpath("string(//c:Meter/c:serialNumber)", namespaces=ns).strip() or None
    supplier = tree.findtext(".//c:ServiceSupplier/c:Organisation/c:organisationName", namespaces=ns).strip()
    result, segments = translated(path)
    assert segments == []
    (account,) = result.accounts
    assert account["account_number"] == account_number
    assert account["account_entity"]["entity_name"] == supplier
    assert account["account_status"] == "active"
    assert "greenbridge_synthetic" not in account
    (contract,) = result.service_contracts
    assert contract["contract_number"] == agreement
    assert contract["cds_account_id"] == account["cds_account_id"]
    (meter,) = result.meter_devices
    if serial:
        assert meter["meter_number"] == serial
    assert "greenbridge_usage_point_hrefs" not in meter


@pytest.mark.samples
def test_daily_readings_become_period_segments_on_dst_days(sample):
    path = sample("sdk_1dayLP_45Days.xml")
    (series,) = oracle(path)
    _result, segments = translated(path)
    daily = [s for s in segments if not any(f["id"].endswith("_billing") for f in s["formats"])]
    assert len(daily) == len(series.values) == 45
    assert {s["interval"] for s in daily} >= {86400, 82800}  # 2012-03-11 is 23 hours long in New York
    assert all(len(s["values"]) == 1 for s in daily)


@pytest.mark.samples
def test_translation_is_deterministic(sample):
    from cds.jsonenc import encode

    path = sample("cmdtest_threeusagepointsonecustomer.xml")
    first = translated(path)
    second = translated(path)
    for name in ("service_points", "meter_devices", "accounts", "service_contracts", "bill_sections"):
        assert encode(getattr(first[0], name)) == encode(getattr(second[0], name))
    assert encode(first[1]) == encode(second[1])


@pytest.mark.samples
@pytest.mark.parametrize("path", sample_files(), ids=lambda p: p.name)
def test_every_sample_translates_or_is_rejected_clearly(path):
    try:
        with translate(path, TranslateOptions(now=NOW)) as result:
            segments = list(result.usage_segments())
            objects = segments + result.service_points + result.accounts + result.bill_sections
    except NoUsageDataError as exc:
        assert path.name in str(exc) and "translate" in str(exc)
        return
    assert objects, "a translation that produced nothing should have been rejected"
    for segment in segments:
        count = len(segment["values"])
        start = datetime.fromisoformat(segment["segment_start"]).timestamp()
        end = datetime.fromisoformat(segment["segment_end"]).timestamp()
        assert start + count * segment["interval"] == end
        assert all(len(value_set) == len(segment["formats"]) for value_set in segment["values"])
