"""ESPI ReadingType → CDS usage segment ValueFormat (CDS WG3-01 §10.8.5; docs/mapping.md "Value types").

A ReadingType says what a series of raw integers means (accumulation, commodity, flow direction, kind, unit,
power-of-ten multiplier). ``classify`` turns it into a ``SeriesFormat``: the CDS value type and unit, and the
exact Decimal arithmetic that turns a raw ESPI value into a CDS value:

* value × 10^(powerOfTenMultiplier + k), with k = −3 for Wh → kWh and W → kW, done with ``Decimal.scaleb``
  (exact: Int48 values have at most 15 digits);
* reverse-flow electricity is negated, because CDS signs every direction grid → customer positive (§10.8.5.1.2),
  while ESPI reverse series (FB_08) carry positive magnitudes of exported energy;
* costs are always in 10⁻⁵ of the currency and never scaled by the multiplier (espi.md §1.4).

Nothing here guesses: an unknown or exotic ReadingType becomes the server-defined ``greenbridge_espi_reading``
value type with its raw codes, and fields CDS cannot fill are omitted (CDS: omit what is unknown).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, localcontext
from typing import Any

from espi.codes import is_code_sentinel, is_value_sentinel, multiplier_ok
from espi.currency import currency_alpha
from espi.usage import ReadingType

# ESPI codes used below (espi.xsd code lists; espi.md §1.10)
ACC_NONE, ACC_BULK_QUANTITY, ACC_CONTINUOUS_CUMULATIVE, ACC_CUMULATIVE, ACC_DELTA, ACC_SUMMATION = 0, 1, 2, 3, 4, 9
ACC_INSTANTANEOUS = 12
#: accumulations that label a register (a dial reading that climbs), read as CDS meter_readings
CUMULATIVE_ACCUMULATIONS = frozenset({ACC_BULK_QUANTITY, ACC_CONTINUOUS_CUMULATIVE, ACC_CUMULATIVE, ACC_SUMMATION})
#: accumulations read as an amount per interval: deltaData, absent, and 0 "none" (energy or volume with no
#: accumulation stated is what was used in the interval; docs/mapping.md §4.4)
INTERVAL_ACCUMULATIONS = frozenset({None, ACC_NONE, ACC_DELTA})
USAGE_TYPES = frozenset({"electric_usage", "natural_gas_usage", "water_usage", "greenbridge_natural_gas_energy"})
FLOW_FORWARD, FLOW_NET, FLOW_REVERSE = 1, 4, 19
KIND_CURRENCY, KIND_DEMAND, KIND_ENERGY, KIND_POWER, KIND_TEMPERATURE, KIND_VOLUME = 3, 8, 12, 37, 46, 58
ELECTRIC_COMMODITIES = frozenset({1, 2, 26})
GAS_COMMODITIES = frozenset({7})
WATER_COMMODITIES = frozenset({9, 14})
SERVICE_KIND_COMMODITY = {0: "electric", 1: "natural_gas", 2: "water"}
DATA_QUALIFIER_AVERAGE, DATA_QUALIFIER_MAXIMUM = 2, 8
#: measuringPeriod / (misused) timeAttribute codes of fixed and rolling demand blocks
BLOCK_DEMAND_PERIODS = frozenset(range(50, 78))

UOM_WH, UOM_W, UOM_VARH, UOM_VAR = 72, 38, 73, 63
UOM_THERM, UOM_BTU, UOM_J = 169, 132, 31
UOM_M3, UOM_FT3, UOM_M3_COMPENSATED, UOM_FT3_COMPENSATED = 42, 119, 167, 120
UOM_US_GAL, UOM_IMPERIAL_GAL, UOM_LITRE = 128, 130, 134
UOM_KELVIN, UOM_CELSIUS, UOM_MONEY = 6, 23, 80

IMPERIAL_GALLON_LITRES = Decimal("4.54609")
ZERO_CELSIUS_KELVIN = Decimal("273.15")

# ESPI QualityOfReading → CDS quality, and how cautious each CDS value is (higher wins when codes mix)
QUALITY_MAP = {0: "valid", 17: "valid", 18: "valid", 19: "revenue", 14: "raw", 8: "estimated", 9: "estimated",
               12: "estimated", 11: "calculated", 15: "calculated", 7: "corrected"}
QUALITY_CAUTION = {"estimated": 5, "corrected": 4, "calculated": 3, "raw": 2, "valid": 1, "revenue": 0}


def cds_quality(codes: tuple[int, ...]) -> str | None:
    """CDS quality of a reading from its ESPI codes: the most cautious mapped code; None if none maps."""
    best = None
    for code in codes:
        mapped = QUALITY_MAP.get(code)
        if mapped is not None and (best is None or QUALITY_CAUTION[mapped] > QUALITY_CAUTION[best]):
            best = mapped
    return best


def cds_tier(code: int | None) -> tuple[bool, str | None]:
    """(known, CDS tier): 0 means "no tier" (null); 1–9 → tier_n; anything else is not known."""
    if code is None:
        return False, None
    if code == 0:
        return True, None
    if 1 <= code <= 9:
        return True, f"tier_{code}"
    return False, None


def cds_tou(code: int | None, tou_names: dict[int, str]) -> tuple[bool, str | None]:
    """(known, CDS tou): 0 means "no time-of-use" (null); other codes need the custodian's table."""
    if code is None:
        return False, None
    if code == 0:
        return True, None
    name = tou_names.get(code)
    return (True, name) if name else (False, None)


@dataclass(slots=True)
class SeriesFormat:
    """How one ESPI series (MeterReading + ReadingType) becomes CDS values."""

    value_type: str
    value_key: str
    base_id: str
    units: str | None = None
    scale: int = 0
    negate: bool = False
    offset: Decimal | None = None
    factor: Decimal | None = None
    #: "usage" or "readings": meter readings never share a segment with usage values
    segment_class: str = "usage"
    #: CDS commodity of the series (electric, natural_gas, water) when known
    commodity: str | None = None
    #: extra ValueFormat fields (direction, demand_type, greenbridge_* …)
    fields: dict[str, Any] = field(default_factory=dict)
    #: currency (alpha) for the series' IntervalReading costs, None when unknown
    cost_currency: str | None = None
    #: raw ReadingType codes, kept on every ValueFormat (lossless)
    reading_type: dict[str, Any] = field(default_factory=dict)
    #: tou / tier / quality attributes of the whole series (ReadingType level)
    series_tou: int | None = None
    series_tier: int | None = None
    series_cpp: int | None = None
    default_quality: int | None = None
    #: True when the value is a register reading placed at the end of the ESPI period (D6)
    register_at_end: bool = False
    #: whether the CDS value type defines ``tou`` / ``tier`` (otherwise they are kept as extensions)
    supports_tou: bool = False
    supports_tier: bool = False
    #: the id suffix regardless of the segment's interval (``billing`` for UsageSummary values)
    fixed_granularity: str | None = None
    warnings: list[str] = field(default_factory=list)
    _cache: dict[int, Any] = field(default_factory=dict, repr=False)

    def convert(self, raw: int) -> Decimal:
        """The exact CDS value of a raw ESPI integer."""
        with localcontext() as context:
            context.prec = 60
            value = Decimal(raw).scaleb(self.scale)
            if self.factor is not None:
                value = value * self.factor
            if self.offset is not None:
                value = value + self.offset
            if self.negate and value:
                value = -value  # never -0: a zero export is just zero
            if value.as_tuple().exponent > 0:  # type: ignore[operator]
                value = value.quantize(Decimal(1))
        return value

    def clear_cache(self) -> None:
        self._cache.clear()

    def value_object(self, raw: int) -> dict[str, Any]:
        """The CDS Value Object for a raw value (shared, immutable by convention: never mutate it)."""
        cached = self._cache.get(raw)
        if cached is None:
            if self.value_key == "r":
                cached = {"r": format(self.convert(raw), "f")}
            else:
                cached = {self.value_key: self.convert(raw)}
            if len(self._cache) < 200_000:
                self._cache[raw] = cached
        return cached


def _reading_type_codes(rt: ReadingType) -> dict[str, Any]:
    codes = {
        "accumulation_behaviour": rt.accumulation_behaviour,
        "commodity": rt.commodity,
        "consumption_tier": rt.consumption_tier,
        "currency": rt.currency,
        "data_qualifier": rt.data_qualifier,
        "default_quality": rt.default_quality,
        "flow_direction": rt.flow_direction,
        "interval_length": rt.interval_length,
        "kind": rt.kind,
        "measuring_period": rt.measuring_period,
        "phase": rt.phase,
        "power_of_ten_multiplier": rt.power_of_ten_multiplier,
        "time_attribute": rt.time_attribute,
        "tou": rt.tou,
        "cpp": rt.cpp,
        "uom": rt.uom,
    }
    for name, ratio in (("interharmonic", rt.interharmonic), ("argument", rt.argument)):
        if ratio is not None:
            codes[name] = {"numerator": ratio.numerator, "denominator": ratio.denominator}
    return {k: v for k, v in codes.items() if v is not None}


def _commodity(rt: ReadingType, service_kind: int | None) -> str | None:
    """Commodity from the ReadingType, else the UsagePoint's ServiceCategory, else the unit. Never forced."""
    if rt.commodity in ELECTRIC_COMMODITIES:
        return "electric"
    if rt.commodity in GAS_COMMODITIES:
        return "natural_gas"
    if rt.commodity in WATER_COMMODITIES:
        return "water"
    if rt.commodity not in (None, 0):
        return "other"  # steam, propane…: a commodity CDS has no usage type for
    if service_kind in SERVICE_KIND_COMMODITY:
        return SERVICE_KIND_COMMODITY[service_kind]
    if rt.uom in (UOM_WH, UOM_W, UOM_VARH, UOM_VAR):
        return "electric"
    if rt.uom in (UOM_THERM, UOM_BTU):
        return "natural_gas"
    if rt.uom in (UOM_US_GAL,):
        return "water"
    return None


def classify(rt: ReadingType, service_kind: int | None, default_currency: str | None = None,
             register_read_at: str = "end", interval_data: str | None = None) -> SeriesFormat:
    """The CDS form of an ESPI series (see the module docstring and docs/mapping.md).

    ``interval_data``: why a series labelled cumulative is read as interval data instead (its values do not
    climb, docs/mapping.md §4.4); the reason goes on the ValueFormat as ``greenbridge_accumulation_note``.
    """
    fmt = _classify(rt, service_kind, default_currency, register_read_at, interval_data is not None)
    if interval_data is not None:
        fmt.fields["greenbridge_accumulation_note"] = interval_data
    elif rt.accumulation_behaviour == ACC_NONE and fmt.value_type in USAGE_TYPES:
        fmt.fields["greenbridge_accumulation_note"] = "accumulationBehaviour 0 (none): read as interval data"
    return fmt


def _classify(rt: ReadingType, service_kind: int | None, default_currency: str | None, register_read_at: str,
              as_interval_data: bool) -> SeriesFormat:
    warnings: list[str] = []
    p = multiplier(rt.power_of_ten_multiplier)
    if rt.power_of_ten_multiplier is not None and p != rt.power_of_ten_multiplier:
        warnings.append(f"powerOfTenMultiplier {rt.power_of_ten_multiplier} is not a real multiplier; treated as 0")
    if rt.uom is not None and is_code_sentinel(rt.uom):
        warnings.append(f"uom {rt.uom} is a placeholder, not a unit: the series is kept as greenbridge_espi_reading")
    acc = ACC_DELTA if as_interval_data else rt.accumulation_behaviour
    flow = rt.flow_direction
    kind = rt.kind
    uom = rt.uom
    commodity = _commodity(rt, service_kind)
    currency = currency_alpha(rt.currency) if rt.currency else None
    currency = currency or default_currency
    base: dict[str, Any] = {
        "reading_type": _reading_type_codes(rt),
        "cost_currency": currency,
        "series_tou": rt.tou,
        "series_tier": rt.consumption_tier,
        "series_cpp": rt.cpp,
        "default_quality": rt.default_quality,
        "warnings": warnings,
        "commodity": commodity,
    }
    direction_fields: dict[str, Any] = {}
    negate = False
    direction_id = ""
    if flow == FLOW_FORWARD:
        direction_fields["direction"], direction_id = "forward", "_forward"
    elif flow == FLOW_REVERSE:
        direction_fields["direction"], direction_id, negate = "reverse", "_reverse", True
    elif flow == FLOW_NET:
        direction_fields["direction"], direction_id = "net", "_net"
    elif flow is not None:
        direction_fields["greenbridge_flow_direction"] = flow

    # Register readings (bulkQuantity and cumulative kinds): CDS meter_readings, never usage totals.
    if acc in CUMULATIVE_ACCUMULATIONS:
        units, scale = _register_units(uom, p)
        if units is not None:  # CDS meter_readings REQUIRE units
            fields: dict[str, Any] = {"register": None}
            if flow is not None and flow != FLOW_FORWARD:
                fields["greenbridge_flow_direction"] = flow
            return SeriesFormat("meter_readings", "r", "meter_readings", units=units, scale=scale,
                                segment_class="readings", fields=fields, register_at_end=register_read_at == "end",
                                **base)
        fields = {"greenbridge_register": True, "greenbridge_uom": uom}
        if flow is not None:
            fields["greenbridge_flow_direction"] = flow
        return SeriesFormat("greenbridge_espi_reading", "v", "greenbridge_espi_register", scale=p, fields=fields,
                            segment_class="readings", register_at_end=register_read_at == "end", **base)

    if commodity in ("electric", None):
        if uom == UOM_WH and acc in INTERVAL_ACCUMULATIONS and kind in (None, KIND_ENERGY):
            return SeriesFormat("electric_usage", "eu", "electric_usage" + direction_id, units="kWh", scale=p - 3,
                                negate=negate, fields=dict(direction_fields), supports_tou=True,
                                supports_tier=True, **base)
        if uom == UOM_W and (acc == ACC_INSTANTANEOUS or kind in (KIND_POWER, KIND_DEMAND)):
            fields = dict(direction_fields)
            demand_type, inferred = _demand_type(rt)
            fields["demand_type"] = demand_type
            if inferred:
                fields["greenbridge_demand_type_inferred"] = True
            return SeriesFormat("electric_demand", "ed", f"electric_demand_{demand_type}{direction_id}", units="kW",
                                scale=p - 3, negate=negate, fields=fields, supports_tou=True, supports_tier=True,
                                **base)
        if uom == UOM_VARH:
            return SeriesFormat("greenbridge_reactive_energy", "v", "greenbridge_reactive_energy" + direction_id,
                                units="kvarh", scale=p - 3, fields=dict(direction_fields), **base)
        if uom == UOM_VAR:
            return SeriesFormat("greenbridge_reactive_power", "v", "greenbridge_reactive_power" + direction_id,
                                units="kvar", scale=p - 3, fields=dict(direction_fields), **base)

    if commodity == "natural_gas" and acc in INTERVAL_ACCUMULATIONS:
        gas_units = {UOM_THERM: "therm", UOM_BTU: "Btu", UOM_M3_COMPENSATED: "Sm3", UOM_FT3_COMPENSATED: "scf",
                     UOM_M3: "Sm3", UOM_FT3: "scf"}
        if uom in gas_units:
            fields = {}
            if uom in (UOM_M3, UOM_FT3):
                # CDS gas volumes are standard volumes only; ESPI's plain m³/ft³ are assumed standard (D5).
                fields["greenbridge_volume_basis"] = "assumed_standard"
            return SeriesFormat("natural_gas_usage", "gu", "natural_gas_usage", units=gas_units[uom], scale=p,
                                fields=fields, supports_tier=True, **base)
        if uom in (UOM_J, UOM_WH):
            # J or Wh of gas have no exact conversion to Btu/therm: kept in a server-defined type.
            return SeriesFormat("greenbridge_natural_gas_energy", "v", "greenbridge_natural_gas_energy",
                                units=None, scale=p,
                                fields={"greenbridge_units": "J" if uom == UOM_J else "Wh"}, **base)

    if commodity == "water" and acc in INTERVAL_ACCUMULATIONS:
        water_units = {UOM_US_GAL: ("gal", None), UOM_M3: ("m3", None), UOM_FT3: ("ft3", None),
                       UOM_LITRE: ("L", None), UOM_IMPERIAL_GAL: ("L", IMPERIAL_GALLON_LITRES)}
        if uom in water_units:
            units, factor = water_units[uom]
            return SeriesFormat("water_usage", "wu", "water_usage", units=units, scale=p, factor=factor,
                                supports_tier=True, **base)

    if kind == KIND_TEMPERATURE and uom in (UOM_KELVIN, UOM_CELSIUS):
        offset = -ZERO_CELSIUS_KELVIN if uom == UOM_KELVIN else None
        return SeriesFormat("greenbridge_temperature", "v", "greenbridge_temperature", units="C", scale=p,
                            offset=offset, supports_tou=False, **base)

    if (kind == KIND_CURRENCY or uom == UOM_MONEY) and currency is not None:
        return SeriesFormat("cost", "c", "cost_series", scale=p, fields={"currency": currency, "indexes": []},
                            **base)

    fields = {"greenbridge_uom": uom} if uom is not None else {}
    if flow is not None:
        fields["greenbridge_flow_direction"] = flow
    return SeriesFormat("greenbridge_espi_reading", "v", "greenbridge_espi_reading", scale=p, fields=fields,
                        **base)


def _register_units(uom: int | None, p: int) -> tuple[str | None, int]:
    if uom == UOM_WH:
        return "kWh", p - 3
    if uom == UOM_W:
        return "kW", p - 3
    units = {UOM_THERM: "therm", UOM_BTU: "Btu", UOM_M3: "m3", UOM_FT3: "ft3", UOM_US_GAL: "gal",
             UOM_LITRE: "L", UOM_VARH: "kvarh"}.get(uom)  # type: ignore[arg-type]
    if uom == UOM_VARH:
        return units, p - 3
    return units, p


def _demand_type(rt: ReadingType) -> tuple[str, bool]:
    """(demand_type, inferred): peak for a maximum, average for averages and block demand (D10)."""
    if rt.data_qualifier == DATA_QUALIFIER_MAXIMUM:
        return "peak", False
    if rt.data_qualifier == DATA_QUALIFIER_AVERAGE:
        return "average", False
    if rt.measuring_period in BLOCK_DEMAND_PERIODS or rt.time_attribute in BLOCK_DEMAND_PERIODS:
        return "average", False
    return "average", True


def cost_value(raw: int) -> Decimal:
    """An ESPI cost (10⁻⁵ of the currency) as an exact Decimal."""
    return Decimal(raw).scaleb(-5)


def known(raw: int | None) -> int | None:
    """None for ESPI's "not set" value sentinel (−2⁴⁷), else the value."""
    return None if raw is None or is_value_sentinel(raw) else raw


def multiplier(p: int | None) -> int:
    """A usable powerOfTenMultiplier: absent, or a sentinel such as 4096, counts as 0 (mapping-notes §3.4)."""
    if p is None or not multiplier_ok(p):
        return 0
    return p
