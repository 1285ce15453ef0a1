"""cds.projection on hand-made objects: include fields, preselection, address matching, references, trimming, q.

One customer with two accounts: A1 (contracts C1 electric and C2 gas, each with a service point and a meter) and A2
(contract C3). Statements ST1 (A1) and ST2 (A2); sections BS1/BS2 (A1, on C1/C2) and BS3 (A2); one hourly usage
segment of meter M1.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest

from cds.projection import (
    BASE_ACCESS,
    OPTIONAL_FIELDS,
    REQUIRED_FIELDS,
    grant_access,
    normalize_input_address,
    normalize_server_address,
    project,
    q_matches,
    scope_type_of,
    serve_segment,
    trim_segment,
    trimmed_segment_id,
)

NOW = datetime(2026, 1, 1, tzinfo=UTC)
CREATED = "2025-06-01T00:00:00Z"
TIMES = {"cds_created": CREATED, "cds_modified": CREATED, "cds_synced": "2025-12-01T00:00:00Z"}
ENTITY = {"id": "e1", "types": ["distributor"], "entity_number": "e1", "entity_name": "Demo",
          "entity_abbreviation": None}
PROGRAM = {"id": "p1", "program_number": "PRG-7", "types": ["active"], "name": "Budget billing",
           "description": "Even payments", "documentation": "https://example.com/p"}


def account(object_id, number, address, **extra):
    return {"cds_account_id": object_id, **TIMES, "cds_account_parent": None, "customer_number": "CUST-1",
            "account_number": number, "account_entity": ENTITY, "account_name": "Alex Example",
            "account_address": address, "account_types": ["customer", "residential"], "account_status": "active",
            "account_contacts": [{"id": "k1", "types": ["email"], "value": "alex@example.com"},
                                 {"id": "k2", "types": ["phone_number"], "value": "+15554443333"}],
            "account_programs": [PROGRAM], "greenbridge_synthetic": False, **extra}


def contract(object_id, account_id, number, commodity, address):
    return {"cds_servicecontract_id": object_id, **TIMES, "cds_account_id": account_id,
            "account_number": {"A1": "111-A", "A2": "222-B"}[account_id], "contract_number": number,
            "contract_address": address, "contract_types": ["utility_service"], "contract_entity": ENTITY,
            "contract_status": "active", "contract_start": "2020-01-01", "contract_end": None,
            "service_types": [commodity], "rateplan_code": "R-" + number, "rateplan_name": "Residential",
            "service_programs": [PROGRAM], "greenbridge_validity": {"start": 1}}


def point(object_id, contract_id, number, kind, address):
    return {"cds_servicepoint_id": object_id, **TIMES, "servicepoint_number": number,
            "servicepoint_types": [kind, "single_service"], "servicepoint_address": address,
            "latitude": Decimal("40.7128"), "longitude": Decimal("-74.0060"),
            "current_servicecontracts": [contract_id], "previous_servicecontracts": ["C-OLD"],
            "premises": [{"id": "pr-" + object_id, "premise_number": "PREM-" + object_id, "types": ["building"]}],
            "greenbridge_usage_point": {"service_kind": 0}}


def meter(object_id, point_id, number, kind):
    return {"cds_meterdevice_id": object_id, **TIMES, "meter_number": number, "meter_types": [kind],
            "current_servicepoints": [point_id], "previous_servicepoints": [],
            "meter_apps": [{"id": "ma", "app_number": "APP-1", "types": ["compatible"], "name": "Energy app"}]}


def statement(object_id, account_id, day, sections):
    return {"cds_billstatement_id": object_id, **TIMES, "cds_account_id": account_id,
            "account_number": {"A1": "111-A", "A2": "222-B"}[account_id], "statement_date": day, "currency": "USD",
            "file_uri": "https://example.com/bill.pdf", "file_mimetype": "application/pdf",
            "previous_balance_amount": Decimal("10.00"), "previous_balance_paid": Decimal("10.00"),
            "previous_balance_unpaid": Decimal("0.00"), "new_charges_amount": Decimal("42.35"),
            "new_charges": [{"id": "n1", "name": "Service charges", "types": ["electric_total"],
                             "amount": Decimal("42.35"), "included_in_amount_due": True,
                             "related_billsections": sections, "greenbridge_note": "x"}],
            "new_balance_amount": Decimal("42.35"), "amount_due": Decimal("42.35"), "amount_due_date": day,
            "shutoff_prevention_minimum_due": None, "shutoff_prevention_date": None, "account_programs": [PROGRAM],
            "greenbridge_utility_mode": True}


def section(object_id, account_id, statement_id, contract_id, point_id, meter_id, start, end):
    return {"cds_billsection_id": object_id, **TIMES, "cds_billstatement_id": statement_id,
            "cds_account_id": account_id, "account_number": {"A1": "111-A", "A2": "222-B"}[account_id],
            "section_types": ["service_contract", "electric"], "start_date": start, "end_date": end,
            "currency": "USD", "distribution_entity": ENTITY, "supply_entity": ENTITY,
            "related_servicecontracts": [contract_id], "related_servicepoints": [point_id],
            "related_meterdevices": [meter_id], "related_billsections": [],
            "usage_details": [{"id": "u1", "name": "Total usage", "types": ["electric_usage"],
                               "value": Decimal("35"), "units": "kWh"}],
            "cost_details": [{"id": "c1", "name": "Bill for period", "types": ["overall_total"],
                              "cost": Decimal("42.35")}],
            "line_items": [{"id": "l1", "name": "Fee", "types": ["fixed_charge"], "start_date": start,
                            "end_date": end, "cost": Decimal("5"), "value": None, "rate": None,
                            "related_usage_details": [], "related_cost_details": ["c1"], "greenbridge_date": 1}],
            "service_programs": [PROGRAM], "greenbridge_current_period": {}}


VALUES = [Decimal(f"{h}.{h:03d}") for h in range(24)]


def segment(object_id="S1", start="2025-01-01T05:00:00Z", values=None, interval=3600):
    values = VALUES if values is None else values
    return {"cds_usagesegment_id": object_id, **TIMES, "related_aggregations": [], "related_accounts": ["A1"],
            "related_servicecontracts": ["C1"], "related_servicepoints": ["SP1"], "related_meterdevices": ["M1"],
            "related_billsections": ["BS1"], "segment_start": start,
            "segment_end": (datetime.fromisoformat(start) + timedelta(seconds=interval * len(values)))
            .strftime("%Y-%m-%dT%H:%M:%SZ"),
            "interval": interval,
            "formats": [{"id": "cost_electric_usage_forward_interval", "type": "cost", "currency": "USD",
                         "indexes": [2]},
                        {"id": "electric_usage_net_interval", "type": "electric_usage", "units": "kWh",
                         "direction": "net"},
                        {"id": "electric_usage_forward_interval", "type": "electric_usage", "units": "kWh",
                         "direction": "forward", "greenbridge_reading_type": {"uom": 72}}],
            "values": [[{"c": v / 10}, {"eu": -v}, {"eu": v, "greenbridge_quality": "estimated"}] for v in values]}


def objects():
    return {
        "accounts": [account("A1", "111-A", "Alex Example\n123 Main St.\nAnytown, NY 10001"),
                     account("A2", "222-B", "9 Elm Ave #4\nOthertown, NY 10002")],
        "service_contracts": [contract("C1", "A1", "K-1", "electric", "123 Main St.\nAnytown, NY 10001"),
                              contract("C2", "A1", "K-2", "natural_gas", "77 Oak Rd\nAnytown, NY 10001"),
                              contract("C3", "A2", "K-3", "electric", "9 Elm Ave #4\nOthertown, NY 10002")],
        "service_points": [point("SP1", "C1", "SPN-1", "electric", "123 Main St.\nAnytown, NY 10001"),
                           point("SP2", "C2", "SPN-2", "natural_gas", "77 Oak Rd\nAnytown, NY 10001"),
                           point("SP3", "C3", "SPN-3", "electric", "9 Elm Ave #4\nOthertown, NY 10002")],
        "meter_devices": [meter("M1", "SP1", "M-1", "electric_usage"), meter("M2", "SP2", "M-2", "natural_gas_usage"),
                          meter("M3", "SP3", "M-3", "electric_usage")],
        "bill_statements": [statement("ST1", "A1", "2025-02-05", ["BS1", "BS2"]),
                            statement("ST2", "A2", "2023-01-05", ["BS3"])],
        "bill_sections": [section("BS1", "A1", "ST1", "C1", "SP1", "M1", "2025-01-01", "2025-01-31"),
                          section("BS2", "A1", "ST1", "C2", "SP2", "M2", "2025-01-01", "2025-01-31"),
                          section("BS3", "A2", "ST2", "C3", "SP3", "M3", "2022-12-01", "2022-12-31")],
    }


def access_for(*entries, **kwargs):
    return grant_access(list(entries), objects(), NOW, **kwargs)


def visible(access, listing):
    return set(access.visible[listing])


def by_id(listing, object_id):
    key = {"accounts": "cds_account_id", "service_contracts": "cds_servicecontract_id",
           "service_points": "cds_servicepoint_id", "meter_devices": "cds_meterdevice_id",
           "bill_statements": "cds_billstatement_id", "bill_sections": "cds_billsection_id"}[listing]
    return next(o for o in objects()[listing] if o[key] == object_id)


# ---------------------------------------------------------------------------------------------- include fields
# (include field, scope type that shows the listing without it, listing, object, the OPTIONAL fields it enables)
INCLUDES = [
    ("include_account_numbers", "cds_accounts_1", "accounts", "A1",
     {"customer_number", "account_number", "account_entity"}),
    ("include_account_numbers", "cds_service_contracts_1", "service_contracts", "C1", {"account_number"}),
    ("include_account_numbers", "cds_query_bill_statements_1", "bill_statements", "ST1", {"account_number"}),
    ("include_account_numbers", "cds_query_bill_sections_1", "bill_sections", "BS1", {"account_number"}),
    ("include_account_details", "cds_accounts_1", "accounts", "A1",
     {"account_name", "account_address", "account_types", "account_status", "account_contacts"}),
    ("include_account_programs", "cds_accounts_1", "accounts", "A1", {"account_programs"}),
    ("include_contract_numbers", "cds_service_contracts_1", "service_contracts", "C1",
     {"contract_number", "contract_entity"}),
    ("include_rate_plans", "cds_service_contracts_1", "service_contracts", "C1", {"rateplan_code", "rateplan_name"}),
    ("include_service_contract_details", "cds_service_contracts_1", "service_contracts", "C1",
     {"contract_address", "contract_start", "contract_end"}),
    ("include_service_programs", "cds_service_contracts_1", "service_contracts", "C1", {"service_programs"}),
    ("include_service_point_addresses", "cds_query_service_points_1", "service_points", "SP1",
     {"servicepoint_address"}),
    ("include_coordinates", "cds_query_service_points_1", "service_points", "SP1", {"latitude", "longitude"}),
    ("include_premises", "cds_query_service_points_1", "service_points", "SP1", {"premises"}),
    ("include_meter_numbers", "cds_meters_1", "meter_devices", "M1", {"meter_number"}),
    ("include_meter_apps", "cds_meters_1", "meter_devices", "M1", {"meter_apps"}),
    ("include_bill_statement_files", "cds_bill_statements_1", "bill_statements", "ST1",
     {"file_uri", "file_mimetype"}),
    ("include_bill_statement_charges", "cds_bill_statements_1", "bill_statements", "ST1",
     {"previous_balance_amount", "previous_balance_paid", "previous_balance_unpaid", "new_charges_amount",
      "new_charges", "new_balance_amount"}),
    ("include_bill_statement_programs", "cds_bill_statements_1", "bill_statements", "ST1", {"account_programs"}),
    ("include_bill_section_line_items", "cds_service_bills_1", "bill_sections", "BS1", {"line_items"}),
    ("include_bill_section_programs", "cds_service_bills_1", "bill_sections", "BS1", {"service_programs"}),
]


@pytest.mark.parametrize(("flag", "scope", "listing", "object_id", "fields"), INCLUDES,
                         ids=[f"{row[0]}-{row[2]}" for row in INCLUDES])
def test_each_include_field_gates_its_optional_fields(flag, scope, listing, object_id, fields):
    obj = by_id(listing, object_id)
    assert fields <= set(obj)  # the source has them
    default = project(listing, obj, access_for({"type": scope}))
    off = project(listing, obj, access_for({"type": scope, flag: False}))
    on = project(listing, obj, access_for({"type": scope, flag: True}))
    if BASE_ACCESS[scope_type_of(scope)] & {flag}:
        default = off  # the scope's base access turns it on; "absent by default" is then the explicit false
    assert default is not None and on is not None
    assert not fields & set(default), f"{flag} off: {fields & set(default)} leaked"
    assert not fields & set(off)
    assert fields <= set(on)
    assert {key for key in on if key not in default} == fields
    # only REQUIRED and enabled OPTIONAL fields, never an extension
    assert set(on) <= REQUIRED_FIELDS[listing] | set(OPTIONAL_FIELDS[listing])
    assert not any(key.startswith("greenbridge_") for key in on)


def test_every_optional_field_has_an_include_test():
    tested = {(row[2], name) for row in INCLUDES for name in row[4]}
    expected = {(listing, name) for listing, table in OPTIONAL_FIELDS.items() for name in table}
    assert expected == tested


LISTING_INCLUDES = [
    ("include_accounts", "cds_meters_1", "accounts", {"A1", "A2"}),
    ("include_service_contracts", "cds_meters_1", "service_contracts", {"C1", "C2", "C3"}),
    ("include_service_points", "cds_meters_1", "service_points", {"SP1", "SP2", "SP3"}),
    ("include_meter_devices", "cds_accounts_1", "meter_devices", {"M1", "M2", "M3"}),
    ("include_bill_statements", "cds_service_bills_1", "bill_statements", {"ST1", "ST2"}),
    ("include_bill_sections", "cds_usage_1", "bill_sections", {"BS1", "BS2", "BS3"}),
]


@pytest.mark.parametrize(("flag", "scope", "listing", "ids"), LISTING_INCLUDES, ids=[r[0] for r in LISTING_INCLUDES])
def test_each_include_field_gates_its_listing(flag, scope, listing, ids):
    off = access_for({"type": scope})
    assert not off.includes(listing) and not visible(off, listing)
    on = access_for({"type": scope, flag: True})
    assert on.includes(listing) and visible(on, listing) == ids


def test_usage_segments_only_with_a_usage_scope():
    assert not access_for({"type": "cds_meters_1"}).includes("usage_segments")
    assert access_for({"type": "cds_usage_1"}).includes("usage_segments")
    assert not access_for({"type": "cds_usage_1", "include_usage_segments": False}).includes("usage_segments")


def test_contracts_and_meters_imply_service_points():
    access = access_for({"type": "cds_usage_1", "include_service_contracts": True, "include_meter_devices": True})
    assert visible(access, "service_points") == {"SP1", "SP2", "SP3"}
    assert not access_for({"type": "cds_usage_1", "include_meter_devices": True}).includes("service_points")


def test_entries_are_united_per_object():
    """Details enabled by one entry do not spill onto objects another entry selects."""
    access = access_for({"type": "cds_accounts_1", "account_numbers": ["111-A"], "include_account_details": True},
                        {"type": "cds_service_contracts_1", "account_numbers": ["222-B"]})
    assert visible(access, "accounts") == {"A1", "A2"}
    assert "account_name" in project("accounts", by_id("accounts", "A1"), access)
    assert "account_name" not in project("accounts", by_id("accounts", "A2"), access)


def test_statement_and_section_account_number_follows_the_include_rule():
    """cds-spec §6.1 item 12: REQUIRED, but include_account_numbers wins (module docstring)."""
    on = access_for({"type": "cds_bill_statements_1"})  # include_account_numbers is base access here
    assert project("bill_statements", by_id("bill_statements", "ST1"), on)["account_number"] == "111-A"
    off = access_for({"type": "cds_bill_statements_1", "include_account_numbers": False})
    assert "account_number" not in project("bill_statements", by_id("bill_statements", "ST1"), off)


# ---------------------------------------------------------------------------------------------- preselection
def test_preselection_fields_intersect_along_current_links():
    meters = {"type": "cds_meters_1", "include_accounts": True, "include_service_contracts": True,
              "include_service_points": True}
    one = access_for({**meters, "meter_numbers": ["M-1"]})
    assert visible(one, "meter_devices") == {"M1"}
    assert visible(one, "service_points") == {"SP1"}
    assert visible(one, "service_contracts") == {"C1"}  # not C2: no sideways step through the account
    assert visible(one, "accounts") == {"A1"}
    by_account = access_for({**meters, "account_numbers": ["111-A"]})
    assert visible(by_account, "meter_devices") == {"M1", "M2"}
    both = access_for({**meters, "account_numbers": ["111-A"], "service_types": ["natural_gas"]})
    assert visible(both, "meter_devices") == {"M2"} and visible(both, "accounts") == {"A1"}
    disjoint = access_for({**meters, "account_numbers": ["222-B"], "meter_numbers": ["M-1"]})
    assert all(not visible(disjoint, listing) for listing in ("accounts", "meter_devices", "service_points"))
    typed = access_for({**meters, "meter_types": ["electric_usage"], "servicepoint_numbers": ["SPN-3", "SPN-1"]})
    assert visible(typed, "meter_devices") == {"M1", "M3"}
    premise = access_for({**meters, "premise_numbers": ["PREM-SP2"]})
    assert visible(premise, "meter_devices") == {"M2"}


def test_all_null_and_include_future():
    base = {"type": "cds_meters_1"}
    assert visible(access_for(base), "meter_devices") == {"M1", "M2", "M3"}
    assert visible(access_for({**base, "meter_numbers": None}), "meter_devices") == {"M1", "M2", "M3"}
    assert visible(access_for({**base, "meter_numbers": ["_all"]}), "meter_devices") == {"M1", "M2", "M3"}
    granted = datetime(2025, 1, 1, tzinfo=UTC)  # before every object's cds_created
    future = access_for({**base, "meter_numbers": ["M-1", "_include_future"]}, granted_at=granted)
    assert visible(future, "meter_devices") == {"M1", "M2", "M3"}
    past = access_for({**base, "meter_numbers": ["M-1", "_include_future"]}, granted_at=NOW)
    assert visible(past, "meter_devices") == {"M1"}


def test_bill_windows_and_selection():
    bills = access_for({"type": "cds_bill_statements_1", "statement_date_start": "2024-01-01",
                        "statement_date_end": "infinite"})
    assert visible(bills, "bill_statements") == {"ST1"}
    sections = access_for({"type": "cds_service_bills_1", "start_date": "2022-12-01", "end_date": "2022-12-31"})
    assert visible(sections, "bill_sections") == {"BS3"}
    meter = access_for({"type": "cds_service_bills_1", "meter_numbers": ["M-1"]})
    assert visible(meter, "bill_sections") == {"BS1"}  # not BS2 of the same account's gas meter


# ---------------------------------------------------------------------------------------------- addresses
def test_address_normalization():
    typical = "Alex Example\n123 Main St.\nAnytown, NY 10001"
    assert normalize_server_address(typical) == "123 main street, anytown, ny 10001"
    assert normalize_server_address("9 Elm Ave #4\nOthertown, NY 10002") == "9 elm avenue unit 4, othertown, ny 10002"
    assert normalize_server_address("Example, Inc. ATTN: Accounting\n123 Main St\nAnytown, NY 00000") == \
        "123 main street, anytown, ny 00000"
    assert normalize_server_address("5 N Pine Blvd Apt E\nTown, ST 1") == \
        "5 north pine boulevard apartment e, town, st 1"
    assert normalize_server_address("Lot 7 by the river") == "lot 7 by the river"  # atypical: minimal only
    assert normalize_input_address("  123 Main  STREET,\nAnytown, NY 10001 ") == "123 main street, anytown, ny 10001"


def test_address_preselection_matches_exactly_one_record_per_kind():
    base = {"type": "cds_meters_1", "include_service_contracts": True, "include_accounts": True}
    match = access_for({**base, "addresses": ["123 MAIN STREET, Anytown, NY 10001"]})
    assert visible(match, "meter_devices") == {"M1"}
    assert visible(match, "service_contracts") == {"C1"} and visible(match, "accounts") == {"A1"}
    unexpanded = access_for({**base, "addresses": ["123 Main St., Anytown, NY 10001"]})  # input is not expanded
    assert not visible(unexpanded, "meter_devices")
    data = objects()
    data["service_points"][1]["servicepoint_address"] = "123 Main Street\nAnytown, NY 10001"  # a second record
    ambiguous = grant_access([{**base, "addresses": ["123 main street, anytown, ny 10001"]}], data, NOW)
    assert not visible(ambiguous, "service_points") and not visible(ambiguous, "meter_devices")


# ---------------------------------------------------------------------------------------------- references
def test_reference_arrays_keep_only_visible_ids():
    access = access_for({"type": "cds_meters_1", "meter_numbers": ["M-1"], "include_service_points": True})
    sp = project("service_points", by_id("service_points", "SP1"), access)
    assert sp["current_servicecontracts"] == [] and sp["previous_servicecontracts"] == []
    m1 = project("meter_devices", by_id("meter_devices", "M1"), access)
    assert m1["current_servicepoints"] == ["SP1"]
    assert project("meter_devices", by_id("meter_devices", "M2"), access) is None
    sections = access_for({"type": "cds_service_bills_1", "account_numbers": ["111-A"],
                           "contract_numbers": ["K-1"]})
    bs1 = project("bill_sections", by_id("bill_sections", "BS1"), sections)
    assert bs1["cds_billstatement_id"] is None  # statements are not included
    assert bs1["related_servicecontracts"] == ["C1"] and bs1["related_servicepoints"] == []
    with_statements = access_for({"type": "cds_service_bills_1", "contract_numbers": ["K-1"],
                                  "include_bill_statements": True, "include_bill_statement_charges": True})
    st1 = project("bill_statements", by_id("bill_statements", "ST1"), with_statements)
    assert st1["new_charges"][0]["related_billsections"] == ["BS1"]
    assert "greenbridge_note" not in st1["new_charges"][0]
    assert project("bill_sections", by_id("bill_sections", "BS1"), with_statements)["cds_billstatement_id"] == "ST1"
    none = access_for({"type": "cds_bill_statements_1", "include_bill_statement_charges": True})
    assert "related_billsections" not in project("bill_statements", by_id("bill_statements", "ST1"), none)[
        "new_charges"][0]


def test_segment_references_value_types_and_extensions():
    access = access_for({"type": "cds_usage_1", "include_service_contracts": True,
                         "include_usage_segment_value_types": ["electric_usage_forward", "cost"]},
                        value_formats={"electric_usage_forward": {"id": "electric_usage_forward",
                                                                  "type": "electric_usage", "units": "kWh",
                                                                  "direction": "forward"},
                                       "cost": {"id": "cost", "type": "cost", "currency": "USD", "indexes": []}})
    served = serve_segment(segment(), access)
    assert served["related_servicecontracts"] == ["C1"]
    assert served["related_accounts"] == [] and served["related_meterdevices"] == []
    assert served["related_billsections"] == []
    assert [f["id"] for f in served["formats"]] == ["cost_electric_usage_forward_interval",
                                                    "electric_usage_forward_interval"]
    assert served["formats"][0]["indexes"] == [1]  # renumbered to the kept forward column
    assert "greenbridge_reading_type" not in served["formats"][1]
    assert served["values"][5] == [{"c": VALUES[5] / 10}, {"eu": VALUES[5]}]
    null = access_for({"type": "cds_usage_1", "include_usage_segment_value_types": None})
    empty = serve_segment(segment(), null)
    assert empty["formats"] == [] and empty["values"] == []
    everything = serve_segment(segment(), access_for({"type": "cds_query_usage_1"}))
    assert len(everything["formats"]) == 3


def test_segments_follow_the_selection():
    assert serve_segment(segment(), access_for({"type": "cds_usage_1", "meter_numbers": ["M-1"]})) is not None
    assert serve_segment(segment(), access_for({"type": "cds_usage_1", "meter_numbers": ["M-2"]})) is None
    assert serve_segment(segment(), access_for({"type": "cds_usage_1", "account_numbers": ["111-A"]})) is not None
    assert serve_segment(segment(), access_for({"type": "cds_usage_1", "contract_numbers": ["K-2"]})) is None


# ---------------------------------------------------------------------------------------------- trimming
def at(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_trimming_both_ends_keeps_exact_in_window_values():
    original = segment()  # 24 hourly slots from 05:00Z
    start, end = at("2025-01-01T08:00:00Z"), at("2025-01-02T00:00:00Z")  # cuts 3 slots before, 5 after
    trimmed = trim_segment(original, start, end)
    assert trimmed["segment_start"] == "2025-01-01T08:00:00Z" and trimmed["segment_end"] == "2025-01-02T00:00:00Z"
    assert len(trimmed["values"]) == 16
    assert sum(vs[2]["eu"] for vs in trimmed["values"]) == sum(VALUES[3:19])
    assert all(isinstance(vs[2]["eu"], Decimal) for vs in trimmed["values"])
    assert trimmed["cds_usagesegment_id"] != original["cds_usagesegment_id"]
    assert trimmed["cds_usagesegment_id"] == trim_segment(original, start, end)["cds_usagesegment_id"]
    # a window cutting inside slots keeps only whole slots, and the same kept range gives the same id
    inside = trim_segment(original, start - timedelta(minutes=59), end + timedelta(minutes=59))
    assert inside["cds_usagesegment_id"] == trimmed["cds_usagesegment_id"]
    assert inside["cds_usagesegment_id"] == trimmed_segment_id("S1", start, end)
    other = trim_segment(original, start, end - timedelta(hours=1))
    assert other["cds_usagesegment_id"] not in (trimmed["cds_usagesegment_id"], "S1")
    assert original["values"] is not trimmed["values"] and len(original["values"]) == 24  # input untouched


def test_trimming_edges():
    original = segment()
    assert trim_segment(original, None, None)["cds_usagesegment_id"] == "S1"
    assert trim_segment(original, at("2025-01-01T05:00:00Z"), at("2025-01-02T05:00:00Z")) == original
    assert trim_segment(original, at("2025-01-02T05:00:00Z"), None) is None
    assert trim_segment(original, None, at("2025-01-01T05:00:00Z")) is None
    assert trim_segment(original, at("2025-01-01T05:30:00Z"), at("2025-01-01T06:30:00Z")) is None  # no whole slot
    start_only = trim_segment(original, at("2025-01-01T20:00:00Z"), None)
    assert start_only["segment_end"] == original["segment_end"] and len(start_only["values"]) == 9


def test_a_straddling_single_period_segment_is_dropped():
    month = segment("BILLING", "2025-01-01T05:00:00Z", [Decimal("812.5")], interval=31 * 86400)
    assert trim_segment(month, at("2025-01-15T00:00:00Z"), None) is None
    assert trim_segment(month, None, at("2025-01-15T00:00:00Z")) is None
    assert trim_segment(month, at("2024-12-01T00:00:00Z"), None) == month


def test_segment_windows_trim_when_served():
    access = access_for({"type": "cds_usage_1", "segment_start": "2025-01-01T10:00:00Z",
                         "segment_end": "2025-01-01T12:00:00-05:00"})
    served = serve_segment(segment(), access)
    assert (served["segment_start"], served["segment_end"]) == ("2025-01-01T10:00:00Z", "2025-01-01T17:00:00Z")
    assert len(served["values"]) == 7
    assert project("usage_segments", segment(), access) is None  # untrimmed: outside the window


# ---------------------------------------------------------------------------------------------- durations
def test_sync_until_freezes_and_expires_ends():
    frozen = access_for({"type": "cds_meters_1", "sync_until": "2025-07-01T00:00:00Z"})
    m1 = project("meter_devices", by_id("meter_devices", "M1"), frozen)
    assert m1["cds_synced"] == "2025-07-01T00:00:00Z"  # not validated after the freeze
    before = access_for({"type": "cds_meters_1", "sync_until": "2025-05-01T00:00:00Z"})
    assert not visible(before, "meter_devices")  # created after the freeze
    usage = access_for({"type": "cds_usage_1", "sync_until": "2025-01-01T15:00:00Z", "segment_end": "infinite"})
    assert serve_segment(segment(), usage) is None  # the segment was created after the freeze
    expired = access_for({"type": "cds_meters_1", "expires": "2025-12-31T00:00:00Z"})
    assert expired.expired(NOW) and not visible(expired, "meter_devices")
    alive = access_for({"type": "cds_meters_1", "expires": "2026-12-31T00:00:00Z"})
    assert not alive.expired(NOW) and visible(alive, "meter_devices")
    assert alive.expires == datetime(2026, 12, 31, tzinfo=UTC)


def test_window_values_are_read_as_absolute():
    access = access_for({"type": "cds_bill_statements_1", "statement_date_start": "2023-01-01",
                         "statement_date_end": "2024-12-31"}, {"type": "cds_usage_1", "segment_start": "infinite"})
    assert access.statement_date_start == date(2023, 1, 1) and access.statement_date_end == date(2024, 12, 31)
    assert access.segment_start is None and access.infinite
    assert visible(access, "bill_statements") == {"ST2"}
    broken = access_for({"type": "cds_meters_1", "sync_until": "P1Y"})  # relative: unreadable, fail closed
    assert not broken.includes("meter_devices")


# ---------------------------------------------------------------------------------------------- q and misc
def test_q_searches_visible_fields_only():
    details = access_for({"type": "cds_accounts_1", "include_account_details": True})
    a1 = project("accounts", by_id("accounts", "A1"), details)
    assert q_matches("accounts", a1, "ALEX@example") and q_matches("accounts", a1, "main st")
    assert not q_matches("accounts", a1, "5554443333")  # phone contacts are not a q field
    plain = project("accounts", by_id("accounts", "A1"), access_for({"type": "cds_accounts_1"}))
    assert q_matches("accounts", plain, "a1")  # the id
    assert not q_matches("accounts", plain, "alex") and not q_matches("accounts", plain, "111")
    programs = project("accounts", by_id("accounts", "A1"),
                       access_for({"type": "cds_accounts_1", "include_account_programs": True}))
    assert q_matches("accounts", programs, "prg-7")
    with pytest.raises(ValueError):
        q_matches("usage_segments", {}, "x")


def test_scope_types_and_other_entries():
    assert scope_type_of("cds_usage_1") == "cds_usage" == scope_type_of("cds_usage_1ad")
    assert scope_type_of("cds_query_bill_statements_12") == "cds_query_bill_statements"
    admin = access_for({"type": "cds_grant_admin_1", "client_id": "x", "grant_id": "y"})
    assert not admin.listings
    mapped = access_for({"type": "custom_ad"}, scope_types={"custom_ad": "cds_meters"})
    assert mapped.includes("meter_devices")


def test_statement_files_asked_for_but_absent_are_null():
    data = objects()
    del data["bill_statements"][0]["file_uri"], data["bill_statements"][0]["file_mimetype"]
    access = grant_access([{"type": "cds_bill_statements_1", "include_bill_statement_files": True}], data, NOW)
    st1 = project("bill_statements", data["bill_statements"][0], access)
    assert st1["file_uri"] is None and "file_mimetype" not in st1
    plain = grant_access([{"type": "cds_bill_statements_1"}], data, NOW)
    assert "file_uri" not in project("bill_statements", data["bill_statements"][0], plain)


def test_value_type_choices_need_every_field_they_fix():
    billing = segment("B", values=[Decimal("812.5")], interval=31 * 86400)
    billing["formats"] = [{"id": "electric_usage_billing", "type": "electric_usage", "units": "kWh"}]
    billing["values"] = [[{"eu": Decimal("812.5")}]]
    forward = {"electric_usage_forward": {"id": "electric_usage_forward", "type": "electric_usage", "units": "kWh",
                                          "direction": "forward"}}
    chosen = access_for({"type": "cds_usage_1", "include_usage_segment_value_types": ["electric_usage_forward"]},
                        value_formats=forward)
    assert serve_segment(billing, chosen)["formats"] == []  # no direction stated: not the forward choice
    assert [f["id"] for f in serve_segment(segment(), chosen)["formats"]] == ["electric_usage_forward_interval"]
    # without the choices' ValueFormats, a choice id stands for the format ids it prefixes
    by_id = access_for({"type": "cds_usage_1", "include_usage_segment_value_types": ["electric_usage_net"]})
    assert [f["id"] for f in serve_segment(segment(), by_id)["formats"]] == ["electric_usage_net_interval"]
