"""UsageSummary → CDS bill sections, bill statements and billing usage values (CDS WG3-01 §10.5–§10.6;
docs/mapping.md "Bill sections", "Bill statements", D7–D9, D11).

One bill section per UsagePoint and billing period; an ElectricPowerUsageSummary and a UsageSummary of the same
period merge (newest ``statusTimeStamp`` wins). Money is in 10⁻⁵ of the currency and never scaled by a
multiplier. Bill statements need an amount due and a due date that no ESPI resource holds, so they are made only
when the operator asserts how (``StatementPolicy``: the utility's bills are the sum of its summaries, due N days
after the period ends); otherwise none are offered (D7).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from bridge.from_espi.usage_points import stamps
from bridge.from_espi.value_formats import (
    IMPERIAL_GALLON_LITRES,
    UOM_IMPERIAL_GAL,
    SeriesFormat,
    cds_quality,
    cost_value,
    known,
    multiplier,
)
from cds.jsonenc import plain_decimal
from espi.codes import is_time_sentinel
from espi.currency import currency_alpha
from espi.usage import LineItem, SummaryMeasurement, UsageSummary

#: ESPI ItemKind → CDS LineItem type (credits keep the type of the fee they offset)
ITEM_KIND_TYPES = {1: "supply", 2: "distribution", 3: "usage_charge", 4: "fixed_charge", 5: "tax",
                   6: "supply", 7: "distribution", 8: "fixed_charge"}
CREDIT_ITEM_KINDS = frozenset({6, 7, 8})
PAYMENT_ITEM_KIND, INFORMATION_ITEM_KIND = 9, 10
ESTIMATED_QUALITIES = frozenset({8, 9, 12})

#: SummaryMeasurement uom → (CDS usage type, CDS unit, extra exponent) for usage details
SUMMARY_UNITS = {
    72: ("electric_usage", "kWh", -3),
    169: ("natural_gas_usage", "therm", 0),
    132: ("natural_gas_usage", "Btu", 0),
    167: ("natural_gas_usage", "Sm3", 0),
    120: ("natural_gas_usage", "scf", 0),
    128: ("water_usage", "gal", 0),
    134: ("water_usage", "L", 0),
}
#: gas or water volumes whose type depends on the commodity (m³, ft³)
VOLUME_UNITS = {42: {"natural_gas": "Sm3", "water": "m3"}, 119: {"natural_gas": "scf", "water": "ft3"}}
COMMODITY_CODES = {1: "electric", 2: "electric", 26: "electric", 7: "natural_gas", 9: "water", 14: "water"}


@dataclass(frozen=True, slots=True)
class StatementPolicy:
    """Utility mode (D7): the operator asserts that a bill is the sum of its periods' ``billLastPeriod``."""

    due_days: int


#: ESPI flowDirection → CDS direction, for summaries whose ReadingType says it
FLOW_DIRECTIONS = {1: "forward", 19: "reverse", 4: "net"}
#: which summary of a period makes the bill section: delivered energy first (the bill's "total usage")
PRIMARY_ORDER = ("forward", None, "net", "reverse")


@dataclass(slots=True)
class BillingPeriod:
    """The merged summaries of one UsagePoint and period: the one the section is made from, and the summaries of
    the same period for other flow directions (a net-metered customer's delivered and received energy)."""

    start: int
    duration: int
    summary: UsageSummary
    #: the flow direction ``summary`` states through its ReadingType (None: not stated)
    direction: str | None = None
    #: the other directions' summaries, in PRIMARY_ORDER
    others: list[tuple[str | None, UsageSummary]] = field(default_factory=list)


SUMMARY_MEASUREMENTS = ("overall_consumption_last_period", "current_billing_period_over_all_consumption",
                        "current_day_last_year_net_consumption", "current_day_net_consumption",
                        "current_day_overall_consumption", "peak_demand", "previous_day_last_year_overall_consumption",
                        "previous_day_net_consumption", "previous_day_overall_consumption", "ratchet_demand")


def merge_summaries(summaries: list[UsageSummary], warn: Callable[[str], None],
                    directions: list[str | None] | None = None) -> tuple[list[BillingPeriod], list[UsageSummary]]:
    """Groups summaries by billing period and flow direction (``directions``, one per summary: what its ReadingType
    says; within one period and direction the newest statusTimeStamp wins, ties the later one). Summaries of
    different directions never replace each other: the section is made from the forward one (else the one that
    states no direction, then net, then reverse) and the others ride along. Returns (periods, current-only)."""
    by_period: dict[tuple[int, int, str | None], UsageSummary] = {}
    without_period: list[UsageSummary] = []
    for position, summary in enumerate(summaries):
        direction = directions[position] if directions is not None else None
        for name in SUMMARY_MEASUREMENTS:
            sm = getattr(summary, name)
            if sm is not None and sm.power_of_ten_multiplier is not None and \
                    multiplier(sm.power_of_ten_multiplier) != sm.power_of_ten_multiplier:
                warn(f"UsageSummary {name}: powerOfTenMultiplier {sm.power_of_ten_multiplier} is not a real "
                     "multiplier; treated as 0")
        period = summary.billing_period
        if period is None or period.start is None or period.duration is None or period.duration <= 0:
            without_period.append(summary)
            continue
        key = (period.start, period.duration, direction)
        known = by_period.get(key)
        if known is None or (summary.status_time_stamp or 0) >= (known.status_time_stamp or 0):
            if known is not None:
                warn("two summaries for one billing period; the newer one is used")
            by_period[key] = summary
    grouped: dict[tuple[int, int], dict[str | None, UsageSummary]] = {}
    for (start, duration, direction), summary in by_period.items():
        grouped.setdefault((start, duration), {})[direction] = summary
    periods = []
    for (start, duration), by_direction in sorted(grouped.items()):
        ordered = [(d, by_direction[d]) for d in PRIMARY_ORDER if d in by_direction]
        (direction, summary), others = ordered[0], ordered[1:]
        periods.append(BillingPeriod(start, duration, summary, direction, others))
    return periods, without_period


def summary_value(sm: SummaryMeasurement | None, commodity: str | None) -> tuple[str, Decimal, str] | None:
    """(CDS usage type, value, unit) of a SummaryMeasurement, or None when its unit has no CDS usage type or its
    value is the "not set" sentinel."""
    if sm is None or known(sm.value) is None:
        return None
    p = multiplier(sm.power_of_ten_multiplier)
    if sm.uom in SUMMARY_UNITS:
        value_type, units, k = SUMMARY_UNITS[sm.uom]
        return value_type, plain_decimal(Decimal(sm.value).scaleb(p + k)), units
    if sm.uom in VOLUME_UNITS and commodity in VOLUME_UNITS[sm.uom]:
        return f"{commodity}_usage", plain_decimal(Decimal(sm.value).scaleb(p)), VOLUME_UNITS[sm.uom][commodity]
    if sm.uom == UOM_IMPERIAL_GAL:  # CDS has no imperial gallon: litres, exactly
        return "water_usage", plain_decimal(Decimal(sm.value).scaleb(p) * IMPERIAL_GALLON_LITRES), "L"
    return None


def _money(raw: int | None) -> Decimal | None:
    """An ESPI amount (10⁻⁵ of the currency), or None when absent or the "not set" sentinel."""
    raw = known(raw)
    return None if raw is None else cost_value(raw)


def _time(raw: int | None) -> int | None:
    return None if raw is None or is_time_sentinel(raw) else raw


def summary_commodity(summary: UsageSummary, usage_point_commodity: str | None) -> str | None:
    return COMMODITY_CODES.get(summary.commodity or -1) or usage_point_commodity


def _measurement_json(sm: SummaryMeasurement | None) -> dict[str, Any] | None:
    if sm is None or known(sm.value) is None:
        return None
    result: dict[str, Any] = {
        "value": plain_decimal(Decimal(sm.value).scaleb(multiplier(sm.power_of_ten_multiplier))), "uom": sm.uom}
    if _time(sm.time_stamp) is not None:
        result["time_stamp"] = sm.time_stamp
    return result


def bill_section(period: BillingPeriod, section_id: str, stamp: str, *, account_id: str,
                 account_number: str | None, commodity: str | None, currency_default: str | None,
                 series_currency: str | None, entity: dict[str, Any] | None, contract_id: str,
                 servicepoint_id: str, meterdevice_id: str, dates: Callable[[int, int], tuple[date, date]],
                 id_of: Callable[..., str]) -> dict[str, Any]:
    """A CDS Bill Section from one billing period's summary (mapping-notes §8)."""
    summary = period.summary
    start_date, end_date = dates(period.start, period.duration)
    commodity = summary_commodity(summary, commodity)
    currency = currency_alpha(summary.currency) if summary.currency else None
    currency = currency or series_currency or currency_default
    section: dict[str, Any] = {
        "cds_billsection_id": section_id,
        **stamps(stamp),
        "cds_billstatement_id": None,
        "cds_account_id": account_id,
        "account_number": account_number if account_number is not None else "",
    }
    if account_number is None:
        section["greenbridge_account_number_unknown"] = True  # D8: REQUIRED string with no source
    section_types = ["service_contract"]
    if commodity:
        section_types.append(commodity)
    section["section_types"] = section_types
    section["start_date"] = start_date.isoformat()
    section["end_date"] = end_date.isoformat()
    if currency is None:
        section["currency"] = "XXX"  # ISO 4217 "no currency": the REQUIRED field with nothing to say
        section["greenbridge_currency_unknown"] = True
    else:
        section["currency"] = currency
    section["distribution_entity"] = entity
    section["supply_entity"] = entity
    section["related_servicecontracts"] = [contract_id]
    section["related_servicepoints"] = [servicepoint_id]
    section["related_meterdevices"] = [meterdevice_id]
    section["related_billsections"] = []

    usage_details = []
    detail = _usage_detail(summary, period.direction, commodity, id_of("usagedetail", section_id, "total"),
                           "Total usage", start_date, end_date)
    if detail is not None:
        usage_details.append(detail)
    elif summary.overall_consumption_last_period is not None:
        section["greenbridge_overall_consumption"] = _measurement_json(summary.overall_consumption_last_period)
    other_directions = []
    for direction, other in period.others:
        label = direction or "direction not stated"
        detail = _usage_detail(other, direction, summary_commodity(other, commodity),
                               id_of("usagedetail", section_id, "total", label), f"Total usage ({label})",
                               start_date, end_date)
        if detail is not None:
            usage_details.append(detail)
        extra: dict[str, Any] = {"direction": direction}
        if detail is None and other.overall_consumption_last_period is not None:
            extra["overall_consumption"] = _measurement_json(other.overall_consumption_last_period)
        for name in ("bill_last_period", "cost_additional_last_period"):
            if _money(getattr(other, name)) is not None:
                extra[name] = _money(getattr(other, name))
        if len(extra) > 1:
            other_directions.append(extra)
    section["usage_details"] = usage_details

    cost_details = []
    bill = _money(summary.bill_last_period)
    if bill is not None:
        cost_details.append({"id": id_of("costdetail", section_id, "total"), "name": "Bill for period",
                             "types": ["overall_total"], "cost": bill})
    additional_id = id_of("costdetail", section_id, "additional")
    additional = _money(summary.cost_additional_last_period)
    if additional is not None:
        cost_details.append({"id": additional_id, "name": "Additional charges", "types": ["subtotal"],
                             "cost": additional})
    section["cost_details"] = cost_details

    line_items, payments, information, incomplete = [], [], [], []
    for ordinal, item in enumerate(summary.cost_additional_detail_last_period):
        if item.item_kind == PAYMENT_ITEM_KIND:
            payments.append(_line_item_extension(item))
            continue
        if item.item_kind == INFORMATION_ITEM_KIND:
            information.append(_line_item_extension(item))
            continue
        if _money(item.amount) is None:
            incomplete.append(_line_item_extension(item))  # a CDS line item REQUIRES a cost: none is invented
            continue
        line_items.append(_line_item(item, id_of("lineitem", section_id, ordinal), start_date, end_date, dates,
                                     commodity, additional_id if additional is not None else None))
    if line_items:
        section["line_items"] = line_items
    if payments:
        section["greenbridge_payments"] = payments
    if information:
        section["greenbridge_information"] = information
    if incomplete:
        section["greenbridge_line_items_without_amount"] = incomplete
    if other_directions:
        section["greenbridge_other_directions"] = other_directions
    current = _current_period(summary)
    if current:
        section["greenbridge_current_period"] = current
    if summary.read_cycle:
        section["greenbridge_read_cycle"] = summary.read_cycle
    if summary.tariff_profile:
        section["greenbridge_tariff_profile"] = summary.tariff_profile
    if summary.tariff_rider_refs and summary.tariff_rider_refs.tariff_rider_ref:
        section["greenbridge_tariff_riders"] = [
            {"rider_type": r.rider_type, "enrollment_status": r.enrollment_status, "effective_date": r.effective_date}
            for r in summary.tariff_rider_refs.tariff_rider_ref]
    return section


def _usage_detail(summary: UsageSummary, direction: str | None, commodity: str | None, detail_id: str, name: str,
                  start_date: date, end_date: date) -> dict[str, Any] | None:
    """A CDS UsageDetail from a summary's overallConsumptionLastPeriod, or None when its unit has no CDS type. A
    stated direction makes it ``directional`` (electricity only), signed like usage segments (reverse negated)."""
    usage = summary_value(summary.overall_consumption_last_period, commodity)
    if usage is None:
        return None
    value_type, value, units = usage
    types = [value_type]
    directional = direction is not None and value_type == "electric_usage"
    if directional:
        types.append("directional")
    if summary.quality_of_reading in ESTIMATED_QUALITIES:
        types.append("estimated")
    if directional and direction == "reverse" and value:
        value = -value  # CDS signs every direction grid → customer positive, as in usage segments (§4.4)
    detail: dict[str, Any] = {"id": detail_id, "name": name, "types": types, "value": value, "units": units,
                              "start_date": start_date.isoformat(), "end_date": end_date.isoformat()}
    if directional:
        detail["direction"] = direction
    if value_type == "natural_gas_usage" and summary.overall_consumption_last_period.uom in VOLUME_UNITS:
        detail["greenbridge_volume_basis"] = "assumed_standard"  # as for gas series (D5)
    return detail


def _line_item(item: LineItem, item_id: str, start_date: date, end_date: date,
               dates: Callable[[int, int], tuple[date, date]], commodity: str | None,
               additional_id: str | None) -> dict[str, Any]:
    if item.item_period is not None and item.item_period.start is not None and item.item_period.duration:
        start_date, end_date = dates(item.item_period.start, item.item_period.duration)
    amount = cost_value(item.amount)
    result: dict[str, Any] = {
        "id": item_id,
        "name": item.note or "Line item",
        "types": [ITEM_KIND_TYPES.get(item.item_kind or -1, "other")],
        "start_date": start_date.isoformat(),
        "end_date": end_date.isoformat(),
    }
    if item.item_kind in CREDIT_ITEM_KINDS and amount > 0:
        amount = -amount  # D9: CDS writes credits as negative amounts
        result["greenbridge_sign_normalized"] = True
    result["cost"] = amount
    measured = summary_value(item.measurement, commodity)
    if measured is not None:
        result["value"] = measured[1]
        result["units"] = measured[2]
    else:
        result["value"] = None
    result["rate"] = _money(item.unit_cost)
    result["related_usage_details"] = []
    result["related_cost_details"] = [additional_id] if additional_id else []
    if _money(item.rounding) is not None:
        result["greenbridge_rounding"] = _money(item.rounding)
    if _time(item.date_time) is not None:
        result["greenbridge_date"] = item.date_time
    if item.item_kind is None:
        result["greenbridge_item_kind_missing"] = True
    return result


def _line_item_extension(item: LineItem) -> dict[str, Any]:
    return {"name": item.note, "amount": _money(item.amount), "item_kind": item.item_kind,
            "date_time": _time(item.date_time)}


def _current_period(summary: UsageSummary) -> dict[str, Any]:
    """The summary's fields about the period *after* billingPeriod (XSD: not part of the billed section)."""
    current: dict[str, Any] = {}
    if _money(summary.bill_to_date) is not None:
        current["bill_to_date"] = _money(summary.bill_to_date)
    for name in ("current_billing_period_over_all_consumption", "current_day_last_year_net_consumption",
                 "current_day_net_consumption", "current_day_overall_consumption", "peak_demand",
                 "previous_day_last_year_overall_consumption", "previous_day_net_consumption",
                 "previous_day_overall_consumption", "ratchet_demand"):
        measurement = _measurement_json(getattr(summary, name))
        if measurement is not None:
            current[name] = measurement
    if summary.ratchet_demand_period is not None and summary.ratchet_demand_period.start is not None:
        current["ratchet_demand_period"] = {"start": summary.ratchet_demand_period.start,
                                            "duration": summary.ratchet_demand_period.duration}
    if _time(summary.status_time_stamp) is not None:
        current["status_time_stamp"] = summary.status_time_stamp
    if summary.quality_of_reading is not None:
        current["quality_of_reading"] = summary.quality_of_reading
    return current


def billing_series_format(summary: UsageSummary, commodity: str | None, direction: str | None = None
                          ) -> SeriesFormat | None:
    """The pseudo-series that puts a summary's overall consumption into a period usage segment (D11); a stated
    direction (electricity) is on the format and in its id (``electric_usage_reverse_billing``), reverse negated."""
    sm = summary.overall_consumption_last_period
    value = summary_value(sm, summary_commodity(summary, commodity))
    if value is None:
        return None
    value_type, _value, units = value
    scale = multiplier(sm.power_of_ten_multiplier) + (SUMMARY_UNITS[sm.uom][2] if sm.uom in SUMMARY_UNITS else 0)
    key = {"electric_usage": "eu", "natural_gas_usage": "gu", "water_usage": "wu"}[value_type]
    fields: dict[str, Any] = {}
    base_id = value_type
    if direction is not None and value_type == "electric_usage":
        fields["direction"] = direction
        base_id = f"{value_type}_{direction}"
    fields["greenbridge_source"] = "UsageSummary"
    quality = cds_quality((summary.quality_of_reading,)) if summary.quality_of_reading is not None else None
    if quality is not None:
        fields["quality"] = quality
    factor = IMPERIAL_GALLON_LITRES if sm.uom == UOM_IMPERIAL_GAL else None
    return SeriesFormat(value_type, key, base_id, units=units, scale=scale, factor=factor, fields=fields,
                        negate=fields.get("direction") == "reverse", commodity=value_type.removesuffix("_usage"),
                        fixed_granularity="billing")


def bill_statements(sections: list[dict[str, Any]], policy: StatementPolicy, stamp: str,
                    id_of: Callable[..., str], account_numbers: dict[str, str | None]) -> list[dict[str, Any]]:
    """Utility mode: one statement per account and billing period end date (mapping-notes §9)."""
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for section in sections:
        # one statement is in one currency: sections in another currency make their own statement
        groups.setdefault((section["cds_account_id"], section["end_date"], section["currency"]), []).append(section)
    statements = []
    for (account_id, end_date, currency), members in sorted(groups.items()):
        totals = [d["cost"] for s in members for d in s["cost_details"] if "overall_total" in d["types"]]
        if len(totals) != len(members):
            continue  # a section without its bill total cannot make an amount due
        statement_id = id_of("billstatement", account_id, end_date, currency)
        statement_date = date.fromisoformat(end_date)
        new_charges = []
        for section, total in zip(members, totals, strict=True):
            commodity = next((t for t in section["section_types"] if t in ("electric", "natural_gas", "water")),
                             None)
            new_charges.append({"id": id_of("newcharge", statement_id, section["cds_billsection_id"]),
                                "name": "Service charges", "types": [f"{commodity}_total" if commodity else "adhoc"],
                                "amount": total, "included_in_amount_due": True,
                                "related_billsections": [section["cds_billsection_id"]]})
            section["cds_billstatement_id"] = statement_id
        account_number = account_numbers.get(account_id)
        statement: dict[str, Any] = {
            "cds_billstatement_id": statement_id,
            **stamps(stamp),
            "cds_account_id": account_id,
            "account_number": account_number if account_number is not None else "",
            "statement_date": statement_date.isoformat(),
            "currency": currency,
            "new_charges_amount": sum(totals, Decimal(0)),
            "new_charges": new_charges,
            "amount_due": sum(totals, Decimal(0)),
            "amount_due_date": (statement_date + timedelta(days=policy.due_days)).isoformat(),
            "shutoff_prevention_minimum_due": None,
            "shutoff_prevention_date": None,
            "greenbridge_utility_mode": True,
        }
        if account_number is None:
            statement["greenbridge_account_number_unknown"] = True
        statements.append(statement)
    return statements
