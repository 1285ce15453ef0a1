"""CDS scope → legacy Green Button Function Blocks and scope terms (bridge/legacy_scope.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from bridge.legacy_scope import (
    COMMODITY_BLOCKS,
    CUSTOMER_JOIN,
    INCLUDE_NEEDS,
    SCOPE_TYPES,
    VALUE_TYPE_BLOCKS,
    Unavailable,
    legacy_scope,
    required_function_blocks,
    requirements,
    scope_terms,
)
from cds import authorization_details as rar
from cds.scopes import build_scope_descriptions, metadata_json
from espi.function_blocks import FUNCTION_BLOCKS
from espi.scope import format_scope, parse_scope

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
NY = "America/New_York"
ALL_VALUE_TYPES = list(VALUE_TYPE_BLOCKS)
DIRECT_ENTRY = {  # what each direct-access scope needs at least (required fields and one preselection)
    "cds_query_accounts": {"sync_until": "P0D"},
    "cds_query_service_contracts": {"sync_until": "P0D"},
    "cds_query_service_points": {"sync_until": "P0D"},
    "cds_query_meter_devices": {"sync_until": "P0D"},
    "cds_query_bill_statements": {"sync_until": "P0D", "statement_date_start": "P1Y", "statement_date_end": "P0D"},
    "cds_query_bill_sections": {"sync_until": "P0D", "start_date": "P1Y", "end_date": "P0D"},
    "cds_query_usage": {"sync_until": "P0D", "segment_start": "P30D", "segment_end": "P0D"},
}


@pytest.fixture(scope="module")
def descriptions():
    return metadata_json(build_scope_descriptions(documentation_base="https://g.example/docs", timezone=NY))


def effective(descriptions, scope_id: str, **fields) -> dict:
    """The entry the gateway would store for a token request of ``scope_id`` with ``fields`` (defaults filled)."""
    flow = "client_credentials" if descriptions[scope_id]["type"].startswith("cds_query_") else "authorization_code"
    entries = [{"type": scope_id, **fields}] if fields else []
    result = rar.validate_authorization_details(entries, scopes=[scope_id], descriptions=descriptions,
                                                client_types=None, timezone=NY, now=NOW, flow=flow)
    return result.effective[0]


def usage_blocks(**details) -> frozenset[int]:
    return required_function_blocks("cds_query_usage", {"meter_numbers": None, **details})


def test_every_offered_scope_maps_to_catalogued_blocks_with_reasons(descriptions):
    offered = {desc["type"]: scope_id for scope_id, desc in descriptions.items() if desc["type"].startswith("cds_")
               and desc["type"] not in ("cds_client_admin", "cds_grant_admin")}
    assert set(offered) <= set(SCOPE_TYPES)
    for scope_type, scope_id in offered.items():
        extra = {**DIRECT_ENTRY[scope_type], "meter_numbers": ["m1"]} if scope_type in DIRECT_ENTRY else {}
        entry = effective(descriptions, scope_id, **extra)
        result = requirements(scope_type, entry)
        assert result.function_blocks, scope_type
        assert result.function_blocks <= set(FUNCTION_BLOCKS), scope_type
        assert set(result.reasons) == set(result.function_blocks)
        assert all(result.reasons[number] and all(result.reasons[number]) for number in result.reasons)
        assert not {13, 14, 31, 37, 39} & result.function_blocks  # protocol blocks are the custodian profile's
        assert required_function_blocks(scope_type, entry) == result.function_blocks


def test_default_consent_usage_needs_interval_and_customer_blocks(descriptions):
    entry = effective(descriptions, "cds_usage_1")
    blocks = required_function_blocks("cds_usage", entry)
    # Every value type by default; meter and contract numbers by default (customer data through the join).
    assert blocks == {1, 3, 4, 5, 6, 7, 8, 10, 11, 12, 51, 53, 56, 57, 58, 60}
    narrow = effective(descriptions, "cds_usage_1", include_usage_segment_value_types=["electric_usage_forward"],
                       include_meter_numbers=False, include_contract_numbers=False)
    assert required_function_blocks("cds_usage", narrow) == {1, 3, 4, 5}


@pytest.mark.parametrize(("choice", "expected"), [
    ("electric_usage_forward", {4, 5}),
    ("electric_usage_net", {4, 5, 7}),  # FB_4 is certified with one of 5/10/11/29: electricity adds FB_5
    ("electric_usage_reverse", {4, 5, 8}),
    ("electric_demand_peak", {4, 5, 6}),
    ("natural_gas_usage", {4, 10}),
    ("water_usage", {4, 11}),
    ("cost", {4, 5, 10, 11, 12}),  # costs ride on a metered series of any commodity
])
def test_value_types_map_to_their_interval_blocks(choice, expected):
    assert usage_blocks(include_usage_segment_value_types=[choice], meter_numbers=None) - {1, 3} == expected


def test_service_types_narrow_the_commodities():
    gas_cost = required_function_blocks("cds_usage", {"service_types": ["natural_gas"],
                                                      "include_usage_segment_value_types": ALL_VALUE_TYPES})
    assert gas_cost == {1, 3, 4, 10, 12}
    water = required_function_blocks("cds_usage", {"service_types": ["water"],
                                                   "include_usage_segment_value_types": ["cost"]})
    assert water == {1, 3, 4, 11, 12}


def test_null_value_types_still_need_the_series_but_no_cost():
    assert usage_blocks(include_usage_segment_value_types=None) == {1, 3, 4, 5, 10, 11}
    assert 12 not in usage_blocks(include_usage_segment_value_types=None)


def test_a_false_base_include_drops_the_data():
    assert usage_blocks(include_usage_segments=False, include_usage_segment_value_types=ALL_VALUE_TYPES) == set()
    assert required_function_blocks("cds_query_meter_devices", {"include_meter_devices": True}) == {1, 3}


def test_customer_data_reaches_usage_objects_through_the_join():
    meters = required_function_blocks("cds_meters", {"include_meter_numbers": True})
    assert meters == {1, 3, 51, 53, 60} | CUSTOMER_JOIN
    # An account list is not derived from usage data: no join, no usage blocks.
    assert required_function_blocks("cds_accounts", {"include_account_numbers": True}) == {51, 53, 56}
    assert required_function_blocks("cds_accounts", {"include_account_details": True}) == {51, 53, 54, 55, 56}
    contracts = required_function_blocks("cds_service_contracts", {"include_contract_numbers": False,
                                                                   "include_accounts": False})
    assert contracts == {1, 3}  # synthetic contracts from the UsagePoint
    # Matching a meter number needs the Meter serial, joined to the usage data.
    direct = {"meter_numbers": ["123"], "include_usage_segment_value_types": ["electric_usage_forward"]}
    assert required_function_blocks("cds_query_usage", direct) == {1, 3, 4, 5, 51, 53, 60} | CUSTOMER_JOIN


def test_bill_scopes(descriptions):
    sections = effective(descriptions, "cds_service_bills_1")
    assert required_function_blocks("cds_service_bills", sections) == {1, 3, 15, 16, 51, 53} | CUSTOMER_JOIN
    result = requirements("cds_query_bill_sections", {"include_bill_sections": True, "contract_numbers": None,
                                                      "start_date": "2025-01-01"})
    assert result.function_blocks == {1, 3, 15, 16}
    assert "Usage Summary" in " ".join(result.reasons[15])
    statements = requirements("cds_bill_statements", effective(descriptions, "cds_bill_statements_1"))
    assert {15, 16, 56} <= statements.function_blocks
    assert [item.subject for item in statements.unavailable] == ["bill_statements"]


def test_what_green_button_cannot_provide_is_reported_not_guessed():
    result = requirements("cds_meters", {"servicepoint_numbers": ["sp-1"], "premise_numbers": ["p"],
                                         "include_premises": True, "include_coordinates": True,
                                         "include_rate_plans": True, "include_meter_apps": True,
                                         "include_unknown_thing": True})
    subjects = [item.subject for item in result.unavailable]
    assert subjects == sorted(subjects, key=subjects.index)  # stable, no duplicates
    assert len(subjects) == len(set(subjects))
    assert {"servicepoint_numbers", "premises", "latitude/longitude", "rateplan_name", "meter_apps",
            "include_unknown_thing"} <= set(subjects)
    assert all(isinstance(item, Unavailable) and item.reason for item in result.unavailable)
    assert 15 in result.function_blocks  # the rate plan code does exist (tariffProfile)
    odd = requirements("cds_usage", {"include_usage_segment_value_types": ["electric_supply_mix"]})
    assert [item.subject for item in odd.unavailable] == ["electric_supply_mix"]
    aggregations = requirements("cds_query_aggregations", {"include_aggregations": True})
    assert aggregations.function_blocks == set()
    assert [item.subject for item in aggregations.unavailable] == ["aggregations"]


def test_include_table_covers_every_wg3_include_field():
    wg3 = {"include_accounts", "include_account_numbers", "include_account_details", "include_account_programs",
           "include_service_contracts", "include_contract_numbers", "include_rate_plans",
           "include_service_contract_details", "include_service_programs", "include_service_points",
           "include_premises", "include_service_point_addresses", "include_coordinates", "include_meter_devices",
           "include_meter_numbers", "include_meter_apps", "include_bill_statements", "include_bill_statement_files",
           "include_bill_statement_charges", "include_bill_statement_programs", "include_bill_sections",
           "include_bill_section_line_items", "include_bill_section_programs", "include_aggregations",
           "include_aggregation_addresses", "include_usage_segments", "include_eacs"}
    assert set(INCLUDE_NEEDS) == wg3
    for need in INCLUDE_NEEDS.values():
        assert need.blocks or need.missing  # either a source or an honest "unavailable"
    assert set(COMMODITY_BLOCKS.values()) == {5, 10, 11}


def test_unknown_scope_types_are_refused():
    with pytest.raises(ValueError, match="cds_client_admin"):
        requirements("cds_client_admin", {})
    with pytest.raises(ValueError):
        scope_terms("cds_grant_admin", {}, now=NOW, history_units="months")


# ----------------------------------------------------------------------------------------------------------------
# Scope terms
# ----------------------------------------------------------------------------------------------------------------
def test_history_length_in_the_custodians_unit():
    entry = {"segment_start": "2023-11-22T12:00:00Z", "segment_end": "infinite"}
    assert scope_terms("cds_usage", entry, now=NOW, history_units="months").history_length == 36
    assert scope_terms("cds_usage", entry, now=NOW, history_units="seconds").history_length == \
        int((NOW - datetime(2023, 11, 22, 12, tzinfo=UTC)).total_seconds())
    # A start just past a whole number of months needs that month too (never less history than asked).
    later = {"segment_start": "2026-08-22T11:59:59Z"}
    assert scope_terms("cds_usage", later, now=NOW, history_units="months").history_length == 4
    exact = {"segment_start": "2026-08-22T12:00:00Z"}
    assert scope_terms("cds_usage", exact, now=NOW, history_units="months").history_length == 3
    assert scope_terms("cds_usage", {"segment_start": "infinite"}, now=NOW,
                       history_units="months").history_length is None
    future = {"segment_start": (NOW + timedelta(days=1)).isoformat()}
    assert scope_terms("cds_usage", future, now=NOW, history_units="seconds").history_length == 0


def test_history_from_relative_and_date_values():
    assert scope_terms("cds_query_usage", {"segment_start": "P30D"}, now=NOW,
                       history_units="seconds").history_length == 30 * 86400
    bills = {"start_date": "2024-11-22", "statement_date_start": "2023-01-01", "include_bill_statements": False}
    # Dates are local midnight: 24 months back from noon would miss the morning of the first day.
    assert scope_terms("cds_service_bills", bills, now=NOW, history_units="months",
                       timezone=NY).history_length == 25
    # The statement window counts only where statements are shared; then the furthest back start wins.
    shared = {**bills, "include_bill_statements": True}
    assert scope_terms("cds_service_bills", shared, now=NOW, history_units="months").history_length == 47
    assert scope_terms("cds_service_bills", {**shared, "statement_date_start": "infinite"}, now=NOW,
                       history_units="months").history_length is None
    assert scope_terms("cds_service_bills", {**bills, "statement_date_start": "infinite"}, now=NOW,
                       history_units="months").history_length == 25
    assert scope_terms("cds_meters", {"segment_start": "P3Y"}, now=NOW, history_units="months").history_length is None


@pytest.mark.parametrize(("scope_type", "frequency"), [
    ("cds_usage", "daily"), ("cds_query_usage", "daily"), ("cds_service_bills", "billingPeriod"),
    ("cds_query_bill_statements", "billingPeriod"), ("cds_meters", "weekly"), ("cds_query_accounts", "weekly"),
])
def test_subscription_frequency_while_data_stays_synced(scope_type, frequency):
    for until in ("infinite", "2027-01-01T00:00:00Z", "P1Y"):
        terms = scope_terms(scope_type, {"sync_until": until}, now=NOW, history_units="months")
        assert terms.subscription_frequency == frequency, until
    for frozen in ("P0D", "PT0S", "2026-11-22T12:00:00Z", "2020-01-01T00:00:00Z"):
        assert scope_terms(scope_type, {"sync_until": frozen}, now=NOW,
                           history_units="months").subscription_frequency is None, frozen
    assert scope_terms(scope_type, {}, now=NOW, history_units="months").subscription_frequency is None


def test_without_sync_until_an_open_window_keeps_the_subscription():
    # The consent bill scopes offer no sync_until: the window's end decides.
    for end, frequency in (("infinite", "billingPeriod"), ("2027-01-01", "billingPeriod"), ("2026-01-01", None)):
        for scope_type, field in (("cds_service_bills", "end_date"), ("cds_bill_statements", "statement_date_end")):
            terms = scope_terms(scope_type, {field: end}, now=NOW, history_units="months")
            assert terms.subscription_frequency == frequency, (scope_type, end)
    # sync_until, when present, wins over the window.
    assert scope_terms("cds_usage", {"segment_end": "infinite", "sync_until": "PT0S"}, now=NOW,
                       history_units="months").subscription_frequency is None


def test_scope_terms_carry_no_function_blocks_and_check_arguments():
    terms = scope_terms("cds_usage", {"segment_start": "P1Y", "sync_until": "P1Y"}, now=NOW, history_units="months")
    assert terms.function_blocks == () and terms.interval_durations == ()
    with pytest.raises(ValueError, match="aware"):
        scope_terms("cds_usage", {}, now=NOW.replace(tzinfo=None), history_units="months")
    with pytest.raises(ValueError, match="history_units"):
        scope_terms("cds_usage", {}, now=NOW, history_units="heuristic")  # type: ignore[arg-type]


def test_legacy_scope_merges_a_grant_and_formats_canonically(descriptions):
    usage = effective(descriptions, "cds_query_usage_1", meter_numbers=["123"],
                      include_usage_segment_value_types=["electric_usage_forward"], **DIRECT_ENTRY["cds_query_usage"])
    bills = effective(descriptions, "cds_service_bills_1", start_date="P2Y")  # end_date: infinite (ongoing)
    scope = legacy_scope([("cds_query_usage", usage), ("cds_service_bills", bills)], now=NOW,
                         history_units="months", timezone=NY)
    assert scope.function_blocks == tuple(sorted(required_function_blocks("cds_query_usage", usage)
                                                 | required_function_blocks("cds_service_bills", bills)))
    assert scope.history_length == 25  # the longer of 1 and 24 months (+1: P2Y is a date, local midnight)
    assert scope.subscription_frequency == "billingPeriod"  # usage is frozen (sync_until P0D), bills are not
    text = format_scope(scope)
    assert text == "FB=1_3_4_5_15_16_51_53_56_57_58_60;HistoryLength=25;SubscriptionFrequency=billingPeriod"
    assert parse_scope(text) == scope
    both = legacy_scope([("cds_usage", {"segment_start": "infinite", "sync_until": "infinite"}),
                         ("cds_meters", {"sync_until": "infinite"})], now=NOW, history_units="months")
    assert both.history_length is None and both.subscription_frequency == "daily"
    assert legacy_scope([], now=NOW, history_units="months").is_empty
