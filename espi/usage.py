"""Energy usage resources of ESPI 4.0 ``espi.xsd`` (REQ.21; espi.md §1.2–§1.9), as frozen dataclasses.

Field names are the XSD element names in snake case; the XML name is in each field's metadata. Everything is
optional because real files omit almost everything (espi.md §1.3). Codes stay integers: ESPI code lists are open
(any UInt16 validates), so translation to names happens in ``espi.codes`` and never fails on an unknown code.
``IntervalBlock`` lives in ``espi.intervals`` because its readings are read column-wise for speed.
"""

from __future__ import annotations

from dataclasses import dataclass

from espi.model import nested, to_bool, to_hex_int, to_int, to_str, to_time, xml_field


@dataclass(frozen=True, slots=True)
class DateTimeInterval:
    """ESPI DateTimeInterval: ``start`` epoch seconds UTC, ``duration`` seconds; end = start + duration."""

    duration: int | None = xml_field("duration", to_int)
    start: int | None = xml_field("start", to_time)

    @property
    def end(self) -> int | None:
        if self.start is None or self.duration is None:
            return None
        return self.start + self.duration


@dataclass(frozen=True, slots=True)
class SummaryMeasurement:
    """A scaled value with its own unit: actual = value × 10^powerOfTenMultiplier in ``uom``."""

    power_of_ten_multiplier: int | None = xml_field("powerOfTenMultiplier", to_int)
    time_stamp: int | None = xml_field("timeStamp", to_time)
    uom: int | None = xml_field("uom", to_int)
    value: int | None = xml_field("value", to_int)
    reading_type_ref: str | None = xml_field("readingTypeRef", to_str)


@dataclass(frozen=True, slots=True)
class RationalNumber:
    numerator: int | None = xml_field("numerator", to_int)
    denominator: int | None = xml_field("denominator", to_int)


@dataclass(frozen=True, slots=True)
class TariffRiderRef:
    rider_type: str | None = xml_field("riderType", to_str)
    enrollment_status: str | None = xml_field("enrollmentStatus", to_str)
    effective_date: int | None = xml_field("effectiveDate", to_time)


@dataclass(frozen=True, slots=True)
class TariffRiderRefs:
    tariff_rider_ref: tuple[TariffRiderRef, ...] = xml_field("tariffRiderRef", nested(TariffRiderRef), many=True)


@dataclass(frozen=True, slots=True)
class ServiceDeliveryPoint:
    name: str | None = xml_field("name", to_str)
    tariff_profile: str | None = xml_field("tariffProfile", to_str)
    customer_agreement: str | None = xml_field("customerAgreement", to_str)
    tariff_rider_refs: TariffRiderRefs | None = xml_field("tariffRiderRefs", nested(TariffRiderRefs))


@dataclass(frozen=True, slots=True)
class PnodeRef:
    apnode_type: str | None = xml_field("apnodeType", to_str)
    ref: str | None = xml_field("ref", to_str)
    start_effective_date: int | None = xml_field("startEffectiveDate", to_time)
    end_effective_date: int | None = xml_field("endEffectiveDate", to_time)


@dataclass(frozen=True, slots=True)
class PnodeRefs:
    pnode_ref: tuple[PnodeRef, ...] = xml_field("pnodeRef", nested(PnodeRef), many=True)


@dataclass(frozen=True, slots=True)
class AggregateNodeRef:
    anode_type: str | None = xml_field("anodeType", to_str)
    ref: str | None = xml_field("ref", to_str)
    start_effective_date: int | None = xml_field("startEffectiveDate", to_time)
    end_effective_date: int | None = xml_field("endEffectiveDate", to_time)
    pnode_ref: tuple[PnodeRef, ...] = xml_field("pnodeRef", nested(PnodeRef), many=True)


@dataclass(frozen=True, slots=True)
class AggregateNodeRefs:
    aggregate_node_ref: tuple[AggregateNodeRef, ...] = xml_field(
        "aggregateNodeRef", nested(AggregateNodeRef), many=True)


@dataclass(frozen=True, slots=True)
class ServiceCategory:
    kind: int | None = xml_field("kind", to_int)


@dataclass(frozen=True, slots=True)
class UsagePoint:
    """ESPI UsagePoint (espi.md §1.3): the point of delivery; its children are linked by Atom links only."""

    role_flags: int | None = xml_field("roleFlags", to_hex_int)
    service_category: ServiceCategory | None = xml_field("ServiceCategory", nested(ServiceCategory))
    status: int | None = xml_field("status", to_int)
    service_delivery_point: ServiceDeliveryPoint | None = xml_field(
        "serviceDeliveryPoint", nested(ServiceDeliveryPoint))
    ami_billing_ready: str | None = xml_field("amiBillingReady", to_str)
    check_billing: bool | None = xml_field("checkBilling", to_bool)
    connection_state: str | None = xml_field("connectionState", to_str)
    estimated_load: SummaryMeasurement | None = xml_field("estimatedLoad", nested(SummaryMeasurement))
    grounded: bool | None = xml_field("grounded", to_bool)
    is_sdp: bool | None = xml_field("isSdp", to_bool)
    is_virtual: bool | None = xml_field("isVirtual", to_bool)
    minimal_usage_expected: bool | None = xml_field("minimalUsageExpected", to_bool)
    nominal_service_voltage: SummaryMeasurement | None = xml_field(
        "nominalServiceVoltage", nested(SummaryMeasurement))
    outage_region: str | None = xml_field("outageRegion", to_str)
    phase_code: int | None = xml_field("phaseCode", to_int)
    rated_current: SummaryMeasurement | None = xml_field("ratedCurrent", nested(SummaryMeasurement))
    rated_power: SummaryMeasurement | None = xml_field("ratedPower", nested(SummaryMeasurement))
    read_cycle: str | None = xml_field("readCycle", to_str)
    read_route: str | None = xml_field("readRoute", to_str)
    service_delivery_remark: str | None = xml_field("serviceDeliveryRemark", to_str)
    service_priority: str | None = xml_field("servicePriority", to_str)
    pnode_refs: PnodeRefs | None = xml_field("pnodeRefs", nested(PnodeRefs))
    aggregate_node_refs: AggregateNodeRefs | None = xml_field("aggregateNodeRefs", nested(AggregateNodeRefs))
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def service_kind(self) -> int | None:
        """``ServiceCategory/kind`` (0 electricity, 1 gas, 2 water …); None when absent or empty."""
        return self.service_category.kind if self.service_category else None


@dataclass(frozen=True, slots=True)
class MeterReading:
    """ESPI MeterReading: no fields of its own; it groups IntervalBlocks and points at one ReadingType."""

    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ReadingType:
    """ESPI ReadingType (espi.md §1.4): what the values of a MeterReading mean. Codes are kept as integers."""

    accumulation_behaviour: int | None = xml_field("accumulationBehaviour", to_int)
    commodity: int | None = xml_field("commodity", to_int)
    consumption_tier: int | None = xml_field("consumptionTier", to_int)
    currency: int | None = xml_field("currency", to_int)
    data_qualifier: int | None = xml_field("dataQualifier", to_int)
    default_quality: int | None = xml_field("defaultQuality", to_int)
    flow_direction: int | None = xml_field("flowDirection", to_int)
    interval_length: int | None = xml_field("intervalLength", to_int)
    kind: int | None = xml_field("kind", to_int)
    phase: int | None = xml_field("phase", to_int)
    power_of_ten_multiplier: int | None = xml_field("powerOfTenMultiplier", to_int)
    time_attribute: int | None = xml_field("timeAttribute", to_int)
    tou: int | None = xml_field("tou", to_int)
    uom: int | None = xml_field("uom", to_int)
    cpp: int | None = xml_field("cpp", to_int)
    interharmonic: RationalNumber | None = xml_field("interharmonic", nested(RationalNumber))
    measuring_period: int | None = xml_field("measuringPeriod", to_int)
    argument: RationalNumber | None = xml_field("argument", nested(RationalNumber))
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class TimeConfiguration:
    """The ``LocalTimeParameters`` resource (XSD type TimeConfiguration, espi.md §1.6).

    Rules stay raw hex strings and offsets raw seconds: real files encode them wrongly often enough that
    ``espi.local_time`` decides separately whether they can be trusted.
    """

    dst_end_rule: str | None = xml_field("dstEndRule", to_str)
    dst_offset: int | None = xml_field("dstOffset", to_int)
    dst_start_rule: str | None = xml_field("dstStartRule", to_str)
    tz_offset: int | None = xml_field("tzOffset", to_int)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LineItem:
    """UsageSummary cost line (espi.md §1.7). Amounts are in 10⁻⁵ of the currency."""

    amount: int | None = xml_field("amount", to_int)
    rounding: int | None = xml_field("rounding", to_int)
    date_time: int | None = xml_field("dateTime", to_time)
    note: str | None = xml_field("note", to_str)
    measurement: SummaryMeasurement | None = xml_field("measurement", nested(SummaryMeasurement))
    item_kind: int | None = xml_field("itemKind", to_int)
    unit_cost: int | None = xml_field("unitCost", to_int)
    item_period: DateTimeInterval | None = xml_field("itemPeriod", nested(DateTimeInterval))


@dataclass(frozen=True, slots=True)
class BillingChargeSource:
    agency_name: str | None = xml_field("agencyName", to_str)


@dataclass(frozen=True, slots=True)
class UsageSummary:
    """ESPI 4.0 UsageSummary, and the deprecated ElectricPowerUsageSummary (``deprecated_form`` True).

    The two are one concept (espi.md §1.7, §8 item 6); the 4.0 extras are simply absent from the old form.
    Money fields (bill*, cost*) are in 10⁻⁵ of ``currency`` and are never scaled by powerOfTenMultiplier.
    """

    billing_period: DateTimeInterval | None = xml_field("billingPeriod", nested(DateTimeInterval))
    bill_last_period: int | None = xml_field("billLastPeriod", to_int)
    bill_to_date: int | None = xml_field("billToDate", to_int)
    cost_additional_last_period: int | None = xml_field("costAdditionalLastPeriod", to_int)
    cost_additional_detail_last_period: tuple[LineItem, ...] = xml_field(
        "costAdditionalDetailLastPeriod", nested(LineItem), many=True)
    currency: int | None = xml_field("currency", to_int)
    overall_consumption_last_period: SummaryMeasurement | None = xml_field(
        "overallConsumptionLastPeriod", nested(SummaryMeasurement))
    current_billing_period_over_all_consumption: SummaryMeasurement | None = xml_field(
        "currentBillingPeriodOverAllConsumption", nested(SummaryMeasurement))
    current_day_last_year_net_consumption: SummaryMeasurement | None = xml_field(
        "currentDayLastYearNetConsumption", nested(SummaryMeasurement))
    current_day_net_consumption: SummaryMeasurement | None = xml_field(
        "currentDayNetConsumption", nested(SummaryMeasurement))
    current_day_overall_consumption: SummaryMeasurement | None = xml_field(
        "currentDayOverallConsumption", nested(SummaryMeasurement))
    peak_demand: SummaryMeasurement | None = xml_field("peakDemand", nested(SummaryMeasurement))
    previous_day_last_year_overall_consumption: SummaryMeasurement | None = xml_field(
        "previousDayLastYearOverallConsumption", nested(SummaryMeasurement))
    previous_day_net_consumption: SummaryMeasurement | None = xml_field(
        "previousDayNetConsumption", nested(SummaryMeasurement))
    previous_day_overall_consumption: SummaryMeasurement | None = xml_field(
        "previousDayOverallConsumption", nested(SummaryMeasurement))
    quality_of_reading: int | None = xml_field("qualityOfReading", to_int)
    ratchet_demand: SummaryMeasurement | None = xml_field("ratchetDemand", nested(SummaryMeasurement))
    ratchet_demand_period: DateTimeInterval | None = xml_field("ratchetDemandPeriod", nested(DateTimeInterval))
    status_time_stamp: int | None = xml_field("statusTimeStamp", to_time)
    commodity: int | None = xml_field("commodity", to_int)
    tariff_profile: str | None = xml_field("tariffProfile", to_str)
    read_cycle: str | None = xml_field("readCycle", to_str)
    tariff_rider_refs: TariffRiderRefs | None = xml_field("tariffRiderRefs", nested(TariffRiderRefs))
    billing_charge_source: BillingChargeSource | None = xml_field(
        "billingChargeSource", nested(BillingChargeSource))
    deprecated_form: bool = False
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ElectricPowerQualitySummary:
    """ESPI ElectricPowerQualitySummary (FB_17, espi.md §1.8)."""

    flicker_plt: int | None = xml_field("flickerPlt", to_int)
    flicker_pst: int | None = xml_field("flickerPst", to_int)
    harmonic_voltage: int | None = xml_field("harmonicVoltage", to_int)
    long_interruptions: int | None = xml_field("longInterruptions", to_int)
    mains_voltage: int | None = xml_field("mainsVoltage", to_int)
    measurement_protocol: int | None = xml_field("measurementProtocol", to_int)
    power_frequency: int | None = xml_field("powerFrequency", to_int)
    rapid_voltage_changes: int | None = xml_field("rapidVoltageChanges", to_int)
    short_interruptions: int | None = xml_field("shortInterruptions", to_int)
    summary_interval: DateTimeInterval | None = xml_field("summaryInterval", nested(DateTimeInterval))
    supply_voltage_dips: int | None = xml_field("supplyVoltageDips", to_int)
    supply_voltage_imbalance: int | None = xml_field("supplyVoltageImbalance", to_int)
    supply_voltage_variations: int | None = xml_field("supplyVoltageVariations", to_int)
    temp_overvoltage: int | None = xml_field("tempOvervoltage", to_int)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ProgramIdMapping:
    tou_or_cpp_or_consumption_tier: str | None = xml_field("tOUorCPPorConsumptionTier", to_str)
    code: str | None = xml_field("code", to_str)
    name: str | None = xml_field("name", to_str)
    note: str | None = xml_field("note", to_str)


@dataclass(frozen=True, slots=True)
class ProgramIdMappings:
    """Labels for custodian-specific tou/cpp/tier codes (espi.md §1.9)."""

    program_id_mapping: tuple[ProgramIdMapping, ...] = xml_field(
        "programIdMapping", nested(ProgramIdMapping), many=True)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    """ReadServiceStatus answer (bare, not Atom): 0 Unavailable, 1 Normal."""

    current_status: int | None = xml_field("currentStatus", to_int)
    extra: tuple[tuple[str, str], ...] = ()
