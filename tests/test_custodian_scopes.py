"""A custodian's legacy scope strings as CDS structures (bridge/custodian_scopes.py, docs/mapping.md §11).

The scope strings below are spec facts copied from ../shared/reference/espi.md (§5.1 grammar table and notes, §3.9
OpenESPI seed data, §6.1/§6.2/§6.4 examples) and the GBA sandbox's ApplicationInformation (observed in
gbasandbox2016_ApplicationInformation_feed.xml; the shared samples are also read in place where present).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import SAMPLES_DIR

from bridge.custodian_scopes import (
    DEFAULT_HISTORY,
    AuthorizationNotMigratable,
    CustodianCannotProvide,
    custodian_offer,
    custodian_scope_ids,
    grant_from_authorization,
    merge_offers,
    narrowest_scope,
    offered_scopes,
    persist_server_created_grant,
    plan_delivery,
    read_custodian_scopes,
)
from bridge.legacy_scope import SCOPE_TYPES, required_function_blocks
from cds import authorization_details as rar
from cds.scopes import CLIENT_ADMIN_ID, GRANT_ADMIN_ID, build_scope_descriptions, metadata_json, problems
from espi.authorization import Authorization
from espi.usage import DateTimeInterval

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
TZ = "America/New_York"
DOCS = "https://gateway.example/docs"
ALL_VALUE_TYPES = ["electric_usage_net", "electric_usage_forward", "electric_usage_reverse", "electric_demand_peak",
                   "electric_demand_average", "natural_gas_usage", "water_usage", "cost"]

# espi.md §5.1, table "term | meaning | examples seen": the FB examples, then each value and resource term example
# as a scope of its own (the grammar allows scopes without FB terms), then the bulk contract scope.
SECTION_5_1_FB = [
    "FB=4_5_15",
    "FB=1_3_4_5_13_14_39",
    "FB=1_3_4_5_13_15_16_28_31_37_39_51_53_54_55_56_57_58_59_60_61_64_65_69",
]
SECTION_5_1_TERMS = [
    "IntervalDuration=900", "IntervalDuration=3600", "IntervalDuration=86400", "IntervalDuration=2592000",
    "IntervalDuration=900_3600", "IntervalDuration=900_3600_86400",
    "BlockDuration=daily", "BlockDuration=monthly", "BlockDuration=Daily", "BlockDuration=weekly",
    "BlockDuration=yearly",
    "HistoryLength=13", "HistoryLength=24", "HistoryLength=7", "HistoryLength=30", "HistoryLength=94608000",
    "HistoryLength=34128000", "historyLength=32148000",
    "SubscriptionFrequency=Daily", "AccountCollection=5", "BR=1",
]
BULK_CONTRACT = "FB=1_3_4_5_10_11_35;BlockDuration=daily;BR=1"
# espi.md §5.1 notes: literal non-FB scopes and the administrative client_credentials scopes.
LEGACY_LITERALS = ["ThirdParty_Admin_Access", "DataCustodian_Admin_Access", "ThirdParty_Registration_Access"]
ADMIN_SCOPES = ["FB=34_35", "FB=36_40", "FB=45", "FB=3_19_32_33_34_35_36_37_38_41_44_45", "FB=44"]
# espi.md §3.9: the OpenESPI seed data (SOAPUI/etc/prepopulatesql_tokenstore_*.sql).
SEED_ACCESS = "FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
SEED_SCOPES = [SEED_ACCESS, "FB=34_35", "FB=36_40", "FB=45", "FB=3_19_32_33_34_35_36_37_38_41_44_45"]
# espi.md §6.1 (ApplicationInformation.scope, the espi.xsd example in full), §6.2 (Authorization.scope, with the
# XSD's "1937" typo), §6.4 (GBA token-response contract).
XSD_APPLICATION = ("FB=1_3_4_5_8_13_18_19_31_34_35_39;IntervalDuration=900_3600;BlockDuration=Daily; "
                   "HistoryLength= 34128000;SubscriptionFrequency=Daily; AccountCollection=5;BR=1;")
XSD_AUTHORIZATION = "FB=1_3_4_5_13_14_15_1937_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=94608000"
TOKEN_CONTRACT = "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
# The GBA sandbox (2016) ApplicationInformation feed: the DC-admin client, the third party, the upload client.
SANDBOX_ADMIN = "FB=1_3_4_5_13_14_19_32_33_34_35_36_37_38_41_44_45"
SANDBOX_HOURLY = "FB=1_3_4_5_13_14_39;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
SANDBOX_15MIN = "FB=1_3_4_5_13_14_15_39;IntervalDuration=900;BlockDuration=monthly;HistoryLength=13"
SANDBOX_FULL = ("FB=1_3_4_5_6_7_8_9_10_11_29_12_13_14_15_16_17_18_19_27_28_32_33_34_35_37_38_39_40_41_44;"
                "IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13")
SANDBOX = [SANDBOX_ADMIN, SANDBOX_HOURLY, SANDBOX_15MIN, SANDBOX_FULL, "FB=45"]
GBA_RETAIL = SECTION_5_1_FB[2]
CMDTEST_APPLICATION = "FB=1_2_4_5_12_15_16;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13"
# Malformed and odd strings.
ODD = [
    "FB=FB_4_FB_5", "FB_4_5", "FB=", "FB=0_4", "FB=4;HistoryLength=-1", "FB=4;HistoryLength=abc",
    "HistoryLength=13;HistoryLength=24", "", "   ", ",,", "FB=4__5;", " fb = 1_3_4_5 ; historylength = 13 ; ",
    "FB=1_3_4_5;Foo=bar", "FB=1_3_4_5;HistoryLength=0", "FB=1_3_4_5;HistoryLength=999999999999",
    "FB=1_3_4_5;HistoryLength=3600", "FB=1_3_29", "FB=99", "FB=1_3_4_12", "FB=1_3_4_5;SubscriptionFrequency=7",
    "FB=1_3_4_5;IntervalDuration=900, FB=1_3_4_5_12;HistoryLength=24", XSD_AUTHORIZATION,
]
EVERY_STRING = [*SECTION_5_1_FB, *SECTION_5_1_TERMS, BULK_CONTRACT, *LEGACY_LITERALS, *ADMIN_SCOPES, *SEED_SCOPES,
                XSD_APPLICATION, TOKEN_CONTRACT, *SANDBOX, CMDTEST_APPLICATION, *ODD]

DESCRIPTION_KEYS = ["id", "type", "name", "description", "documentation", "registration_requirements",
                    "registration_optional", "response_types_supported", "grant_types_supported",
                    "token_endpoint_auth_methods_supported", "code_challenge_methods_supported", "coverages_supported",
                    "grant_admin_scope", "authorization_details_types_supported",
                    "authorization_details_fields_supported"]
CONSENT_TYPES = {"cds_usage", "cds_meters", "cds_service_contracts", "cds_accounts", "cds_bill_statements",
                 "cds_service_bills"}
DIRECT_TYPES = {"cds_query_accounts", "cds_query_service_contracts", "cds_query_service_points",
                "cds_query_meter_devices", "cds_query_bill_statements", "cds_query_bill_sections", "cds_query_usage"}


def offer(strings, custodian="dc", **options):
    return custodian_offer(custodian, strings, documentation_base=DOCS, timezone=TZ, **options)


def types_of(descriptions) -> set[str]:
    return {d.type for d in descriptions.values()} - {"cds_client_admin", "cds_grant_admin"}


def field(descriptions, scope_id, field_id):
    return descriptions[scope_id].field(field_id)


def effective(descriptions, scopes, *entries, now=NOW):
    flow = "authorization_code"
    if any(descriptions[s].type.startswith("cds_query_") for s in scopes):
        flow = "client_credentials"
    return rar.validate_authorization_details(list(entries), scopes=scopes, descriptions=descriptions,
                                              client_types=None, timezone=TZ, now=now, flow=flow).effective


def upstream(strings, descriptions, scopes, *entries, now=NOW):
    validated = effective(descriptions, [s for s in scopes if s in descriptions and s != GRANT_ADMIN_ID], *entries,
                          now=now)
    return narrowest_scope(scopes, validated, strings, descriptions, now=now, timezone=TZ)


# ---------------------------------------------------------------------------------------------- (a) the offer


@pytest.mark.parametrize("text", EVERY_STRING)
def test_every_reference_string_gives_valid_descriptions(text):
    result = offer([text])
    assert problems(result.descriptions) == []
    as_json = json.loads(json.dumps(metadata_json(result.descriptions)))
    assert list(as_json)[:2] == [CLIENT_ADMIN_ID, GRANT_ADMIN_ID]
    for scope_id, desc in as_json.items():
        assert list(desc) == DESCRIPTION_KEYS and desc["id"] == scope_id
        if scope_id in (CLIENT_ADMIN_ID, GRANT_ADMIN_ID):
            continue
        assert scope_id == f"{desc['type']}_dc" or scope_id.startswith(f"{desc['type']}_dc.")
        assert desc["grant_admin_scope"] == (GRANT_ADMIN_ID if desc["response_types_supported"] else None)
        assert desc["authorization_details_types_supported"] == [scope_id]
        for fd in desc["authorization_details_fields_supported"]:
            assert fd["for_types"] == [scope_id]
            assert isinstance(fd["name"], str) and fd["documentation"].startswith(DOCS)
    # Every piece of the text is either usable or skipped with a reason; nothing is lost silently.
    pieces = [s.text for s in result.scopes] + [s.text for s in result.skipped]
    assert all(piece.strip() for piece in pieces)
    assert bool(result.scopes) or bool(result.skipped) or not text.strip(", ")
    for item in (*result.skipped, *result.unused):
        assert item.reason


EXPECTED_TYPES = {
    "FB=4_5_15": {"cds_usage", "cds_meters"},
    "FB=1_3_4_5_13_14_39": {"cds_usage", "cds_meters"},
    GBA_RETAIL: CONSENT_TYPES | DIRECT_TYPES,
    BULK_CONTRACT: {"cds_usage", "cds_meters"},
    SEED_ACCESS: {"cds_usage", "cds_meters"},
    XSD_APPLICATION: {"cds_usage", "cds_meters"},
    TOKEN_CONTRACT: {"cds_usage", "cds_meters"},
    SANDBOX_ADMIN: {"cds_usage", "cds_meters"},
    SANDBOX_FULL: {"cds_usage", "cds_meters"},
    CMDTEST_APPLICATION: {"cds_usage", "cds_meters"},
    "FB=1_3_29": {"cds_meters"},
    "FB=1_3_4_12": {"cds_meters"},
    **{text: set() for text in [*LEGACY_LITERALS, *ADMIN_SCOPES, *SECTION_5_1_TERMS, XSD_AUTHORIZATION]},
}


@pytest.mark.parametrize("text", list(EXPECTED_TYPES))
def test_offered_types_follow_the_function_blocks(text):
    result = offer([text])
    assert types_of(result.descriptions) == EXPECTED_TYPES[text]
    if not EXPECTED_TYPES[text]:
        assert not result.sources
        assert result.skipped or result.unused


@pytest.mark.parametrize(("text", "choices"), [
    ("FB=1_3_4_5", ["electric_usage_forward"]),
    ("FB=4_5", ["electric_usage_forward"]),
    ("FB=1_3_4_5_12", ["electric_usage_forward", "cost"]),
    ("FB=1_3_4_10", ["natural_gas_usage"]),
    ("FB=1_3_4_10_12", ["natural_gas_usage", "cost"]),
    ("FB=1_3_4_5_6_7_8", ALL_VALUE_TYPES[:5]),
    (BULK_CONTRACT, ["electric_usage_forward", "natural_gas_usage", "water_usage"]),
    (XSD_APPLICATION, ["electric_usage_forward", "electric_usage_reverse"]),
    (CMDTEST_APPLICATION, ["electric_usage_forward", "cost"]),
    (SANDBOX_FULL, ALL_VALUE_TYPES),
    (GBA_RETAIL, ["electric_usage_forward"]),
])
def test_value_type_choices_only_for_the_blocks_present(text, choices):
    descriptions = offer([text]).descriptions
    for scope_id in ("cds_usage_dc", "cds_query_usage_dc"):
        if scope_id not in descriptions:
            continue
        fd = field(descriptions, scope_id, "include_usage_segment_value_types")
        assert [c.id for c in fd.choices] == choices
        assert list(fd.default) == choices
        assert all(c.usagesegment_format["id"] == c.id for c in fd.choices)


def test_no_cost_choice_without_the_cost_block_and_no_usage_without_metering():
    assert "cost" not in [c.id for c in field(offer(["FB=1_3_4_5"]).descriptions, "cds_usage_dc",
                                              "include_usage_segment_value_types").choices]
    # FB_12 alone rides on no metered series (GBA: FB_4 needs one of FB_5/10/11/29), so there is no usage scope.
    assert "cds_usage_dc" not in offer(["FB=1_3_4_12"]).descriptions
    assert "cds_usage_dc" not in offer(["FB=1_3_4_29"]).descriptions


@pytest.mark.parametrize(("term", "datetime_max", "date_max"), [
    ("HistoryLength=13", "P13M", "P13M"),
    ("HistoryLength=24", "P24M", "P24M"),
    ("HistoryLength=7", "P7M", "P7M"),
    ("HistoryLength=30", "P30M", "P30M"),
    ("HistoryLength=94608000", "P1095D", "P1095D"),
    ("HistoryLength=34128000", "P395D", "P395D"),
    ("historyLength=32148000", "P372D", "P372D"),
    ("HistoryLength= 34128000", "P395D", "P395D"),
    ("HistoryLength=0", "P0M", "P0M"),
    ("HistoryLength=3600", "PT3600S", "P0D"),
    ("HistoryLength=999999999999", "P36524D", "P36524D"),
    ("IntervalDuration=900", DEFAULT_HISTORY, DEFAULT_HISTORY),
])
def test_history_length_bounds_the_window_fields(term, datetime_max, date_max):
    descriptions = offer([f"FB=1_3_4_5_15_16_51_53_56_57_58;{term}"]).descriptions
    assert problems(descriptions) == []
    segment = field(descriptions, "cds_usage_dc", "segment_start")
    assert (segment.maximum, segment.default) == (datetime_max, datetime_max)
    assert "HistoryLength" in segment.description
    for fid in ("start_date", "statement_date_start"):
        bill = field(descriptions, "cds_service_bills_dc", fid)
        assert (bill.maximum, bill.default) == (date_max, date_max)


def test_history_units_and_default_can_be_configured():
    months = offer(["FB=1_3_4_5;HistoryLength=94608000"], history_units="months").descriptions
    assert field(months, "cds_usage_dc", "segment_start").maximum == "P1200M"  # capped at 100 years
    seconds = offer(["FB=1_3_4_5;HistoryLength=13"], history_units="seconds").descriptions
    assert field(seconds, "cds_usage_dc", "segment_start").maximum == "PT13S"
    absent = offer(["FB=1_3_4_5"], default_history="P2Y").descriptions
    assert field(absent, "cds_usage_dc", "segment_start").maximum == "P2Y"
    assert "not stated (P2Y assumed)" in absent["cds_usage_dc"].description
    with pytest.raises(ValueError):
        offer(["FB=1_3_4_5"], history_units="weeks")
    with pytest.raises(ValueError):
        offer(["FB=1_3_4_5"], default_history="PT5H")


def test_include_fields_follow_the_blocks():
    sandbox = offer(SANDBOX).descriptions
    usage = sandbox["cds_usage_dc"]
    # WG3-required includes the custodian cannot fill stay, default false, naming the missing blocks.
    numbers = usage.field("include_meter_numbers")
    assert numbers.default is False and "FB_60 (Retail Customer Meter Information)" in numbers.description
    assert usage.field("include_accounts").default is False
    assert usage.field("include_meter_devices").default is True
    assert usage.field("include_bill_sections") is not None  # FB_15/16 in the full string
    assert usage.field("include_service_point_addresses") is None  # optional and impossible: not offered
    plain = offer(["FB=1_3_4_5"]).descriptions["cds_usage_dc"]
    assert plain.field("include_bill_sections") is None
    retail = offer([GBA_RETAIL]).descriptions
    assert retail["cds_usage_dc"].field("include_meter_numbers").default is True
    assert retail["cds_meters_dc"].field("include_account_details") is not None
    # Direct access offers only the filters the custodian can match; service point numbers match nothing in ESPI.
    direct = retail["cds_query_usage_dc"]
    assert {fd.id for fd in direct.authorization_details_fields_supported if fd.id.endswith("_numbers")
            and not fd.id.startswith("include_")} == {
        "account_numbers", "contract_numbers", "meter_numbers"}
    assert direct.field("addresses") is not None
    assert offer([GBA_RETAIL], direct_access=False).descriptions.keys().isdisjoint(
        {f"{t}_dc" for t in DIRECT_TYPES})


def test_interval_block_and_frequency_hints():
    descriptions = offer([XSD_APPLICATION]).descriptions
    usage = descriptions["cds_usage_dc"]
    assert "intervals of 15 minutes or 1 hour (IntervalDuration), delivered in daily blocks" in usage.description
    assert "15 minutes or 1 hour" in usage.field("include_usage_segment_value_types").description
    assert "sends updates daily (SubscriptionFrequency)" in usage.field("sync_until").description
    assert "34128000 seconds (395 days)" in usage.description
    sandbox = offer(SANDBOX)
    assert "monthly blocks" in sandbox.descriptions["cds_usage_dc"].description
    assert "no SubscriptionFrequency" in sandbox.descriptions["cds_usage_dc"].field("sync_until").description
    assert sandbox.cadence == ()
    assert offer([XSD_APPLICATION, "FB=1_3_4_5;SubscriptionFrequency=weekly"]).cadence == ("daily", "weekly")


def test_sandbox_offer():
    result = offer(SANDBOX, custodian="sandbox", custodian_name="GBA Sandbox", coverages=["sandbox"])
    assert list(result.descriptions) == [CLIENT_ADMIN_ID, GRANT_ADMIN_ID, "cds_usage_sandbox", "cds_meters_sandbox"]
    assert problems(result.descriptions) == []
    usage = result.descriptions["cds_usage_sandbox"]
    assert usage.name.endswith("(GBA Sandbox)") and usage.coverages_supported == ("sandbox",)
    assert result.sources["cds_usage_sandbox"][0] == SANDBOX_FULL
    assert set(result.sources["cds_usage_sandbox"]) == {SANDBOX_ADMIN, SANDBOX_HOURLY, SANDBOX_15MIN, SANDBOX_FULL}
    assert [u.text for u in result.unused] == ["FB=45"]


def test_ids_per_capability_profile():
    strings = ["FB=1_3_4_5;HistoryLength=24", "FB=1_3_4_5_12;HistoryLength=13"]
    descriptions = offer(strings).descriptions
    usage_ids = [i for i in descriptions if descriptions[i].type == "cds_usage"]
    assert usage_ids[0] == "cds_usage_dc" and len(usage_ids) == 2
    wide, deep = (descriptions[i] for i in usage_ids)
    assert "cost" in [c.id for c in wide.field("include_usage_segment_value_types").choices]
    assert wide.field("segment_start").maximum == "P13M"
    assert deep.id.startswith("cds_usage_dc.") and len(deep.id.split(".")[1]) == 6
    assert deep.field("segment_start").maximum == "P24M"
    assert problems(descriptions) == []
    # The digest names the capability, not the string's place: reordering keeps every id.
    assert set(offer(list(reversed(strings))).descriptions) == set(descriptions)
    # A string that another contains adds no id; equal capabilities collapse.
    assert set(offer([*strings, "FB=1_3_4_5;HistoryLength=12", "FB=4_5;HistoryLength=24"]).descriptions) == set(
        descriptions)
    assert custodian_scope_ids(descriptions, "dc") == [i for i in descriptions if i not in (CLIENT_ADMIN_ID,
                                                                                            GRANT_ADMIN_ID)]


@pytest.mark.parametrize("custodian", ["1", "a.b", "é", "", "a b"])
def test_custodian_ids_must_fit_the_scheme(custodian):
    with pytest.raises(ValueError):
        offered_scopes(custodian, ["FB=1_3_4_5"], documentation_base=DOCS, timezone=TZ)


def test_several_custodians_in_one_metadata_map():
    sandbox = offered_scopes("sandbox", SANDBOX, documentation_base=DOCS, timezone=TZ, coverages=["sandbox"])
    retail = offered_scopes("gba", [GBA_RETAIL], documentation_base=DOCS, timezone=TZ, coverages=["gba"])
    merged = merge_offers([sandbox, retail])
    assert problems(merged) == []
    assert list(merged).count(GRANT_ADMIN_ID) == 1
    assert custodian_scope_ids(merged, "sandbox") == ["cds_usage_sandbox", "cds_meters_sandbox"]
    assert "cds_accounts_gba" in custodian_scope_ids(merged, "gba")
    assert merged["cds_usage_gba"].coverages_supported == ("gba",)
    other = offered_scopes("sandbox", ["FB=1_3_4_5"], documentation_base=DOCS, timezone=TZ)
    with pytest.raises(ValueError, match="differently"):
        merge_offers([sandbox, other])


def test_reading_splits_lists_and_keeps_pieces_verbatim():
    usable, skipped = read_custodian_scopes([
        "FB=1_3_4_5;IntervalDuration=900, FB=1_3_4_5_12;HistoryLength=24 ThirdParty_Admin_Access",
        XSD_APPLICATION, "FB=1_3_4_5;IntervalDuration=900", "FB=4_5;FB=9999", 42,
    ])
    assert [s.text for s in usable] == ["FB=1_3_4_5;IntervalDuration=900", "FB=1_3_4_5_12;HistoryLength=24",
                                        XSD_APPLICATION]
    assert [s.position for s in usable] == [0, 1, 2]
    assert usable[2].history.days == 395 and usable[2].scope.account_collection == 5
    assert [s.text for s in skipped] == ["ThirdParty_Admin_Access", "FB=1_3_4_5;IntervalDuration=900",
                                         "FB=4_5;FB=9999", "42"]
    assert "same scope" in skipped[1].reason and "out of range" in skipped[2].reason
    # FB_1/FB_3 (and FB_51/53) are implied by data blocks.
    assert read_custodian_scopes(["FB=4_5_15"])[0][0].blocks == {1, 3, 4, 5, 15}
    assert read_custodian_scopes(["FB=54"])[0][0].blocks == {51, 53, 54}
    assert read_custodian_scopes(["FB=34_35"])[0][0].blocks == {34, 35}


# ---------------------------------------------------------------------------------------------- (b) requests


@pytest.fixture(scope="module")
def sandbox():
    return offered_scopes("sandbox", SANDBOX, documentation_base=DOCS, timezone=TZ)


@pytest.mark.parametrize(("entries", "scopes", "expected"), [
    ([{"type": "cds_usage_sandbox", "include_usage_segment_value_types": ["electric_usage_forward"]}],
     ["cds_usage_sandbox"], SANDBOX_HOURLY),
    ([], ["cds_meters_sandbox"], SANDBOX_HOURLY),
    ([], ["cds_usage_sandbox"], SANDBOX_FULL),  # the default asks for every value type offered
    ([{"type": "cds_usage_sandbox", "include_usage_segment_value_types": ["electric_usage_forward", "cost"]}],
     ["cds_usage_sandbox"], SANDBOX_FULL),
    ([{"type": "cds_usage_sandbox", "include_usage_segment_value_types": ["electric_usage_forward"],
       "include_bill_sections": True}], ["cds_usage_sandbox"], SANDBOX_FULL),
    ([{"type": "cds_usage_sandbox", "include_usage_segment_value_types": ["electric_usage_forward"]}],
     ["cds_usage_sandbox", "cds_meters_sandbox", "openid", GRANT_ADMIN_ID], SANDBOX_HOURLY),
    ([{"type": "cds_usage_sandbox", "include_usage_segment_value_types": None}], ["cds_usage_sandbox"],
     SANDBOX_HOURLY),
])
def test_requests_map_to_the_narrowest_sandbox_scope(sandbox, entries, scopes, expected):
    assert upstream(SANDBOX, sandbox, scopes, *entries) == expected


def test_the_chosen_string_is_verbatim():
    descriptions = offered_scopes("dc", [XSD_APPLICATION, SANDBOX_FULL], documentation_base=DOCS, timezone=TZ)
    entry = {"type": "cds_usage_dc", "include_usage_segment_value_types": ["electric_usage_reverse"],
             "segment_start": "P300D"}
    assert upstream([XSD_APPLICATION, SANDBOX_FULL], descriptions, ["cds_usage_dc"], entry) == XSD_APPLICATION.strip()


def test_tie_breaks_history_then_bulk_then_order():
    strings = ["FB=1_3_4_5;HistoryLength=24", "FB=1_3_4_5;BR=7;HistoryLength=13", "FB=1_3_4_5;HistoryLength=13",
               "FB=1_3_4_5;IntervalDuration=900;HistoryLength=13"]
    descriptions = offered_scopes("dc", strings, documentation_base=DOCS, timezone=TZ)
    recent = {"type": "cds_usage_dc", "segment_start": "P6M"}
    assert upstream(strings, descriptions, ["cds_usage_dc"], recent) == "FB=1_3_4_5;HistoryLength=13"
    deep = {"type": "cds_usage_dc", "segment_start": "P20M"}
    assert upstream(strings, descriptions, ["cds_usage_dc"], deep) == "FB=1_3_4_5;HistoryLength=24"
    # Fewer written blocks beat a shorter history.
    mixed = ["FB=1_3_4_5_13;HistoryLength=6", "FB=4_5;HistoryLength=24"]
    descriptions = offered_scopes("dc", mixed, documentation_base=DOCS, timezone=TZ)
    assert upstream(mixed, descriptions, ["cds_usage_dc"], {"type": "cds_usage_dc", "segment_start": "P1M"}) == (
        "FB=4_5;HistoryLength=24")


def test_metering_fallback_uses_the_commodities_the_string_meters():
    strings = ["FB=1_3_4_10_12;HistoryLength=13"]
    descriptions = offered_scopes("gas", strings, documentation_base=DOCS, timezone=TZ)
    entry = {"type": "cds_usage_gas", "include_usage_segment_value_types": ["cost"]}
    assert upstream(strings, descriptions, ["cds_usage_gas"], entry) == strings[0]
    # bridge.legacy_scope keeps its behaviour without commodities= (every commodity for the FB_4 fallback).
    assert required_function_blocks("cds_query_usage", {"include_usage_segment_value_types": ["cost"]}) >= {5, 10, 11}
    assert required_function_blocks("cds_query_usage", {"include_usage_segment_value_types": ["cost"]},
                                    commodities=["natural_gas"]) == {1, 3, 4, 10, 12}


def test_missing_block_is_named(sandbox):
    hourly_only = [SANDBOX_HOURLY]
    entry = {"type": "cds_usage_sandbox", "include_usage_segment_value_types": ["electric_usage_forward", "cost"]}
    with pytest.raises(CustodianCannotProvide) as caught:
        upstream(hourly_only, sandbox, ["cds_usage_sandbox"], entry)
    error = caught.value
    assert isinstance(error, rar.AuthorizationDetailsError) and error.error == "invalid_authorization_details"
    assert "no offered scope includes FB_12 (Cost of Interval Data), needed for cds_usage_sandbox" in str(error)
    assert error.missing_blocks == {12}


def test_customer_data_block_is_named_before_what_comes_with_it(sandbox):
    entry = {"type": "cds_usage_sandbox", "include_usage_segment_value_types": ["electric_usage_forward"],
             "include_meter_numbers": True}
    with pytest.raises(CustodianCannotProvide) as caught:
        upstream(SANDBOX, sandbox, ["cds_usage_sandbox"], entry)
    text = caught.value.description
    assert text.index("FB_60 (Retail Customer Meter Information), needed for cds_usage_sandbox: meter_number") < (
        text.index("FB_51"))
    assert "which come with it" in text
    assert caught.value.missing_blocks == {51, 53, 56, 57, 58, 60}


def test_blocks_in_different_strings():
    strings = ["FB=1_3_4_5_12", "FB=1_3_15_16"]
    descriptions = offered_scopes("dc", strings, documentation_base=DOCS, timezone=TZ)
    entry = {"type": "cds_usage_dc", "include_usage_segment_value_types": ["cost"], "include_bill_sections": True}
    # The description of cost does not offer bill sections; ask the mapping directly with such an entry.
    details = effective(descriptions, ["cds_usage_dc"], {"type": "cds_usage_dc",
                                                         "include_usage_segment_value_types": ["cost"]})
    details[0]["include_bill_sections"] = entry["include_bill_sections"]
    with pytest.raises(CustodianCannotProvide, match=r"no single offered scope includes everything it needs; the "
                                                     r"closest, 'FB=1_3_4_5_12', lacks FB_15 \(Usage Summary\)"):
        narrowest_scope(["cds_usage_dc"], details, strings, descriptions, now=NOW, timezone=TZ)


@pytest.mark.parametrize(("value", "shown"), [
    ("2021-01-01T00:00:00Z", "segment_start 2021-01-01T00:00:00Z"),
    ("infinite", "segment_start 'infinite' (all history)"),
])
def test_history_beyond_history_length_is_named(sandbox, value, shown):
    details = effective(sandbox, ["cds_usage_sandbox"], {"type": "cds_usage_sandbox"})
    details[0]["segment_start"] = value
    with pytest.raises(CustodianCannotProvide) as caught:
        narrowest_scope(["cds_usage_sandbox"], details, SANDBOX, sandbox, now=NOW, timezone=TZ)
    assert f"{shown} (cds_usage_sandbox) reaches further back than the custodian's HistoryLength of 13 months" in (
        caught.value.description)
    assert caught.value.field == "segment_start" and not caught.value.missing_blocks


def test_history_in_seconds_and_dates():
    strings = ["FB=1_3_4_5_15_16_51_53_56_57_58;HistoryLength=34128000"]
    descriptions = offered_scopes("dc", strings, documentation_base=DOCS, timezone=TZ)
    at_limit = {"type": "cds_service_bills_dc", "start_date": "P395D"}
    assert upstream(strings, descriptions, ["cds_service_bills_dc"], at_limit) == strings[0]
    details = effective(descriptions, ["cds_service_bills_dc"], at_limit)
    details[0]["start_date"] = (NOW.date() - timedelta(days=400)).isoformat()
    with pytest.raises(CustodianCannotProvide, match=r"start_date .* HistoryLength of 34128000 seconds \(395 days\)"):
        narrowest_scope(["cds_service_bills_dc"], details, strings, descriptions, now=NOW, timezone=TZ)


def test_requests_without_customer_data_or_strings(sandbox):
    with pytest.raises(ValueError, match="no customer-data scope"):
        narrowest_scope([GRANT_ADMIN_ID, "openid"], [], SANDBOX, sandbox, now=NOW)
    with pytest.raises(CustodianCannotProvide, match="no usable scope string"):
        narrowest_scope(["cds_usage_sandbox"], [], ["ThirdParty_Admin_Access", "FB=bad"], sandbox, now=NOW)
    with pytest.raises(ValueError, match="timezone-aware"):
        narrowest_scope(["cds_usage_sandbox"], [], SANDBOX, sandbox, now=datetime(2026, 1, 1))


def test_a_default_start_resolved_to_the_second_is_not_older_than_the_limit():
    """The field report: every string carries a HistoryLength, the description's default segment_start is resolved
    at whole seconds, and the hop ran a moment later (…:18Z against an earliest of …:18.980411Z)."""
    strings = ["FB=1_3_4_5_13_14_39;IntervalDuration=900;HistoryLength=13", "FB=1_3_4_5_12;HistoryLength=24"]
    descriptions = offered_scopes("dc", strings, documentation_base=DOCS, timezone=TZ)
    validated = effective(descriptions, ["cds_usage_dc"])
    later = NOW + timedelta(microseconds=980411)
    assert narrowest_scope(["cds_usage_dc"], validated, strings, descriptions, now=later, timezone=TZ) == strings[1]
    # A start written with a fraction is compared with the fraction: a microsecond too early is too early.
    validated[0]["segment_start"] = rar.format_datetime(
        rar.resolve_date_value("P24M", datetime_format=True, subtract=True, tz=rar.load_timezone(TZ), now=later)
        - timedelta(microseconds=1))
    with pytest.raises(CustodianCannotProvide, match="HistoryLength of 24 months"):
        narrowest_scope(["cds_usage_dc"], validated, strings, descriptions, now=later, timezone=TZ)


# ------------------------------------------------------------------ (b2) what a custodian delivers of a request


def generic_and(strings, custodian="dc"):
    """The gateway's generic descriptions (cds_usage_1 …) beside one custodian's, as the gateway merges them."""
    generic = build_scope_descriptions(documentation_base=DOCS, timezone=TZ, segment_history="P3Y")
    return merge_offers([generic, offered_scopes(custodian, strings, documentation_base=DOCS, timezone=TZ)])


def test_generic_defaults_are_narrowed_to_what_the_custodian_has():
    """A spec-only client: cds_usage_1 with nothing but required fields, so every include default applies."""
    descriptions = generic_and(SANDBOX)
    (requested,) = effective(descriptions, ["cds_usage_1"])
    with pytest.raises(CustodianCannotProvide):
        narrowest_scope(["cds_usage_1"], [requested], SANDBOX, descriptions, now=NOW, timezone=TZ)
    plan = plan_delivery(["cds_usage_1"], [requested], SANDBOX, descriptions, now=NOW, timezone=TZ)
    assert plan.scope == SANDBOX_FULL and plan.enabled_scopes == ("cds_usage_1",) and not plan.complete
    (entry,) = plan.enabled_details
    assert entry["include_usage_segment_value_types"] == requested["include_usage_segment_value_types"]
    assert requested["include_meter_numbers"] and entry["include_meter_numbers"] is False  # no FB_60
    assert requested["include_contract_numbers"] and entry["include_contract_numbers"] is False  # no FB_57
    assert entry["segment_start"] > requested["segment_start"]  # 13 months of history, not 3 years
    changed = {k for k in requested if requested[k] != entry[k]}
    assert changed == {"include_meter_numbers", "include_contract_numbers", "segment_start"}
    assert sorted(o.field for o in plan.omissions) == sorted(changed)
    assert any(o.text == "meter numbers" for o in plan.omissions)
    # what stays enabled is a valid request of the same scope (a reduction the client could have asked for)
    assert effective(descriptions, ["cds_usage_1"], dict(entry)) == [entry]


def test_value_types_the_strings_lack_are_left_out():
    descriptions = generic_and([SANDBOX_HOURLY, SANDBOX_15MIN])
    entry = {"type": "cds_usage_1", "include_usage_segment_value_types": ["electric_usage_forward", "cost",
                                                                            "electric_demand_peak"]}
    plan = plan_delivery(["cds_usage_1"], effective(descriptions, ["cds_usage_1"], entry),
                         [SANDBOX_HOURLY, SANDBOX_15MIN], descriptions, now=NOW, timezone=TZ)
    assert plan.enabled_details[0]["include_usage_segment_value_types"] == ["electric_usage_forward"]
    dropped = [o.text for o in plan.omissions if o.field == "include_usage_segment_value_types"]
    assert len(dropped) == 2 and any("cost" in text.lower() for text in dropped)
    # the string that keeps the most wins, then the narrowest: the 15-minute string adds FB_15, which is not needed
    assert plan.scope == SANDBOX_HOURLY


def test_a_scope_the_custodian_cannot_serve_is_left_out_of_a_partial_grant():
    descriptions = generic_and([SANDBOX_HOURLY])
    scopes = ["cds_usage_1", "cds_service_bills_1", "openid"]
    requested = effective(descriptions, ["cds_usage_1", "cds_service_bills_1"],
                          {"type": "cds_usage_1", "include_usage_segment_value_types": ["electric_usage_forward"],
                           "segment_start": "P6M", "include_meter_numbers": False,
                           "include_contract_numbers": False})
    plan = plan_delivery(scopes, requested, [SANDBOX_HOURLY], descriptions, now=NOW, timezone=TZ)
    assert plan.enabled_scopes == ("cds_usage_1", "openid")
    assert [e["type"] for e in plan.enabled_details] == ["cds_usage_1"]
    assert plan.enabled_details[0] == requested[0]
    (whole,) = plan.omissions
    assert whole.scope_id == "cds_service_bills_1" and whole.field == "" and "FB_15" in whole.text


@pytest.mark.parametrize(("entry", "named"), [
    # a preselection must hold exactly: selecting by meter number needs FB_60
    ({"type": "cds_usage_1", "meter_numbers": ["M-1"]}, "FB_60"),
    # cost alone, from strings without FB_12: nothing of the entry exists
    ({"type": "cds_usage_1", "include_usage_segment_value_types": ["cost"]}, "FB_12"),
])
def test_a_request_of_which_nothing_can_be_delivered_is_refused(entry, named):
    strings = [SANDBOX_HOURLY, SANDBOX_15MIN]
    descriptions = generic_and(strings)
    requested = effective(descriptions, ["cds_usage_1"], entry)
    with pytest.raises(CustodianCannotProvide, match=named):
        plan_delivery(["cds_usage_1"], requested, strings, descriptions, now=NOW, timezone=TZ)


def test_the_string_a_custodian_granted_decides_what_is_enabled():
    """Custodians may grant less than was asked (the token response's scope): the plan is made for that string."""
    descriptions = generic_and(SANDBOX)
    requested = effective(descriptions, ["cds_usage_1"], {
        "type": "cds_usage_1", "include_usage_segment_value_types": ["electric_usage_forward", "cost"],
        "segment_start": "P6M", "include_meter_numbers": False, "include_contract_numbers": False})
    asked = plan_delivery(["cds_usage_1"], requested, SANDBOX, descriptions, now=NOW, timezone=TZ)
    assert asked.complete and asked.scope == SANDBOX_FULL
    granted = plan_delivery(["cds_usage_1"], requested, [SANDBOX_HOURLY], descriptions, now=NOW, timezone=TZ)
    assert granted.scope == SANDBOX_HOURLY
    assert granted.enabled_details[0]["include_usage_segment_value_types"] == ["electric_usage_forward"]


CUSTODIAN_LISTS = {
    "section_5_1": [*SECTION_5_1_FB, *SECTION_5_1_TERMS, BULK_CONTRACT, *LEGACY_LITERALS, *ADMIN_SCOPES],
    "seed": SEED_SCOPES,
    "sandbox": SANDBOX,
    "sandbox_third_party": [SANDBOX_HOURLY, SANDBOX_15MIN, SANDBOX_FULL],
    "xsd": [XSD_APPLICATION, XSD_AUTHORIZATION, TOKEN_CONTRACT],
    "cmdtest": [CMDTEST_APPLICATION],
    "retail": [GBA_RETAIL],
    "odd": ODD,
    "mixed": ["FB=1_3_4_5;HistoryLength=24", "FB=1_3_4_5_12;HistoryLength=13", "FB=1_3_4_10;HistoryLength=34128000",
              "FB=1_3_15_16_51_53_56_57_58;HistoryLength=7"],
}


def _widest_entry(description):
    """Everything a description offers at its limits: every value type, every include true, history maxima."""
    entry = {"type": description.id}
    for fd in description.authorization_details_fields_supported:
        if fd.id == "include_usage_segment_value_types":
            entry[fd.id] = [c.id for c in fd.choices]
        elif fd.id.startswith("include_") and "true is refused" not in fd.description:
            entry[fd.id] = True
        elif fd.id in rar.START_FIELDS:
            entry[fd.id] = fd.maximum
        elif fd.id in ("account_numbers", "meter_numbers", "contract_numbers", "addresses") and not (
                description.is_consent):
            entry[fd.id] = ["X-1"]
    return entry


@pytest.mark.parametrize("name", list(CUSTODIAN_LISTS))
def test_every_offered_scope_maps_at_its_defaults_and_its_limits(name):
    check_every_scope_maps(CUSTODIAN_LISTS[name])


def test_the_project_sandbox_scopes():
    """The scope strings greenbridge's own sandbox custodian publishes (sandbox, issue 5 item 5)."""
    sandbox_config = pytest.importorskip("sandbox.config")
    strings = list(sandbox_config.DEFAULT_SCOPES)
    result = check_every_scope_maps(strings)
    assert {"cds_usage", "cds_meters"} <= types_of(result.descriptions)
    assert not result.skipped
    descriptions = result.descriptions
    for text in strings:  # an Authorization of each offered string becomes a Grant of this custodian's scopes
        data = migrate(authorization(scope=text), descriptions, custodian="dc")
        assert data["status"] == "active" and set(data["scope"].split()) <= set(descriptions)


def check_every_scope_maps(strings):
    result = offer(strings)
    assert problems(result.descriptions) == []
    usable = {s.text: s for s in result.scopes}
    for scope_id in custodian_scope_ids(result.descriptions, "dc"):
        description = result.descriptions[scope_id]
        widest_source = usable[result.sources[scope_id][0]]
        if description.is_consent:
            default = upstream(strings, result.descriptions, [scope_id])
            assert len(usable[default].scope.function_blocks) <= len(widest_source.scope.function_blocks)
            # Its own defaults pass the hop whole (issue 12): resolved to whole seconds, they are not older than a
            # history limit computed a moment later with the clock's microseconds.
            validated = effective(result.descriptions, [scope_id])
            assert narrowest_scope([scope_id], validated, strings, result.descriptions,
                                   now=NOW + timedelta(microseconds=980411), timezone=TZ) == default
            plan = plan_delivery([scope_id], validated, strings, result.descriptions, now=NOW, timezone=TZ)
            assert plan.complete and plan.scope == default and plan.enabled_details == validated
        direct = {"type": scope_id, "sync_until": "P0D", "segment_start": "P1D", "segment_end": "P0D",
                  "statement_date_start": "P1D", "statement_date_end": "P0D", "start_date": "P1D", "end_date": "P0D"}
        widest = _widest_entry(description)
        if not description.is_consent:
            fields = {fd.id for fd in description.authorization_details_fields_supported}
            widest = {**{k: v for k, v in direct.items() if k in fields or k == "type"}, **widest}
        chosen = upstream(strings, result.descriptions, [scope_id], widest)
        assert len(usable[chosen].scope.function_blocks) <= len(widest_source.scope.function_blocks)
        assert SCOPE_TYPES[description.type]
    return result


# ---------------------------------------------------------------------------------------------- (c) Authorizations


def authorization(scope=SANDBOX_HOURLY, status=1, authorized=(0, 0), published=None, **extra):
    return Authorization(
        authorized_period=None if authorized is None else DateTimeInterval(duration=authorized[1],
                                                                           start=authorized[0]),
        published_period=None if published is None else DateTimeInterval(duration=published[1], start=published[0]),
        status=status, scope=scope, token_type="Bearer", grant_type="authorization_code",
        resource_uri="https://dc.example/espi/1_1/resource/Batch/Subscription/7",
        authorization_uri="https://dc.example/espi/1_1/resource/Authorization/7", **extra)


def stamp(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp())


def migrate(auth, descriptions, custodian="sandbox", now=NOW):
    data = grant_from_authorization(auth, descriptions=descriptions, custodian_id=custodian, now=now, timezone=TZ)
    json.dumps(data, default=str)  # plain data
    return data


def by_type(data):
    return {entry["type"]: entry for entry in data["authorization_details"]}


def test_active_authorization_becomes_an_active_grant(sandbox):
    start = stamp("2026-01-15T17:00:00+00:00")
    data = migrate(authorization(authorized=(start, 0), expires_at=stamp("2026-11-22T13:00:00+00:00")), sandbox)
    assert data["status"] == "active" and data["scope"] == "cds_usage_sandbox cds_meters_sandbox"
    assert data["not_before"] == datetime(2026, 1, 15, 17, tzinfo=UTC)
    assert data["not_after"] is None and data["expires"] is None
    usage = by_type(data)["cds_usage_sandbox"]
    assert usage["include_usage_segment_value_types"] == ["electric_usage_forward"]
    assert usage["segment_start"] == "2024-12-15T12:00:00-05:00"  # approval − 13 months (HistoryLength=13)
    assert usage["segment_end"] == "infinite" and usage["sync_until"] == "infinite"
    assert usage["include_meter_devices"] is True and usage["include_meter_numbers"] is False
    assert usage["account_numbers"] is None  # preselections stay at their defaults
    meters = by_type(data)["cds_meters_sandbox"]
    assert meters["sync_until"] == "infinite" and meters["include_meter_numbers"] is False
    assert data["upstream"] == {
        "scope": SANDBOX_HOURLY, "status": 1, "resource_uri": "https://dc.example/espi/1_1/resource/Batch/Subscription/7",
        "authorization_uri": "https://dc.example/espi/1_1/resource/Authorization/7", "customer_resource_uri": None,
        "grant_type": "authorization_code", "access_token_expires": datetime(2026, 11, 22, 13, tzinfo=UTC),
        "error": None}
    # The entries are effective entries of the custodian's descriptions: they validate again as they are.
    again = rar.validate_authorization_details(data["authorization_details"], scopes=data["scope"].split(),
                                               descriptions=sandbox, client_types=None, timezone=TZ,
                                               now=data["not_before"], flow="authorization_code")
    assert again.effective == data["authorization_details"]


def test_expired_authorization_cmdtest_sample_values(sandbox):
    # cmdtest_AuthorizationSample.xml: authorizedPeriod and publishedPeriod 2012-04-01 + 365 days, expires_at 86400.
    auth = authorization(scope=TOKEN_CONTRACT, authorized=(1333252800, 31536000), published=(1333252800, 31536000),
                         expires_at=86400)
    data = migrate(auth, sandbox)
    assert data["status"] == "expired"
    assert data["not_before"] == datetime(2012, 4, 1, 4, tzinfo=UTC)
    assert data["not_after"] == data["expires"] == datetime(2013, 4, 1, 4, tzinfo=UTC)
    usage = by_type(data)["cds_usage_sandbox"]
    assert usage["segment_start"] == "2012-04-01T00:00:00-04:00"  # publishedPeriod start beats 13 months back
    assert usage["segment_end"] == usage["sync_until"] == "2013-04-01T00:00:00-04:00"
    assert by_type(data)["cds_meters_sandbox"]["include_rate_plans"] is True  # FB_15 tariffProfile
    assert data["upstream"]["access_token_expires"] is None  # 86400 is a lifetime, not an instant


@pytest.mark.parametrize(("code", "status"), [(0, "revoked"), (2, "revoked"), (None, "suspended"), (7, "suspended")])
def test_revoked_denied_and_unknown_authorizations(sandbox, code, status):
    data = migrate(authorization(status=code, authorized=(stamp("2025-01-01T00:00:00+00:00"), 0)), sandbox)
    assert data["status"] == status
    assert by_type(data)["cds_usage_sandbox"]["include_usage_segment_value_types"] == ["electric_usage_forward"]


def test_future_authorization_and_published_duration(sandbox):
    start = stamp("2027-01-01T05:00:00+00:00")
    data = migrate(authorization(authorized=(start, 86400 * 30)), sandbox)
    assert data["status"] == "future" and data["not_before"] == datetime(2027, 1, 1, 5, tzinfo=UTC)
    assert by_type(data)["cds_usage_sandbox"]["sync_until"] == "2027-01-31T00:00:00-05:00"
    # publishedPeriod "duration=N": the most recent N seconds before approval, when later than HistoryLength.
    recent = migrate(authorization(published=(0, 86400 * 10)), sandbox)
    assert by_type(recent)["cds_usage_sandbox"]["segment_start"] == "2026-11-12T07:00:00-05:00"
    old = migrate(authorization(published=(stamp("2020-01-01T00:00:00+00:00"), 0)), sandbox)
    assert by_type(old)["cds_usage_sandbox"]["segment_start"] == "2025-10-22T07:00:00-04:00"  # HistoryLength wins


def test_retail_authorization_keeps_its_customer_data():
    descriptions = offered_scopes("gba", [GBA_RETAIL], documentation_base=DOCS, timezone=TZ)
    auth = authorization(scope=GBA_RETAIL, authorized=(stamp("2026-06-01T00:00:00+00:00"), 0),
                         customer_resource_uri="https://dc.example/espi/1_1/resource/Batch/RetailCustomer/7")
    data = migrate(auth, descriptions, custodian="gba")
    assert data["scope"].split() == [f"{t}_gba" for t in ("cds_usage", "cds_meters", "cds_service_contracts",
                                                         "cds_accounts", "cds_bill_statements", "cds_service_bills")]
    details = by_type(data)
    assert details["cds_meters_gba"]["include_account_details"] is True
    assert details["cds_usage_gba"]["include_meter_numbers"] is True
    # Approval 2026-06-01T00:00Z is 2026-05-31 in New York; 13 months before that day.
    assert details["cds_service_bills_gba"]["start_date"] == "2025-04-30"
    assert data["upstream"]["customer_resource_uri"].endswith("RetailCustomer/7")
    # Narrower Authorizations of the same custodian get narrower details.
    usage_only = migrate(authorization(scope="FB=1_3_4_5"), descriptions, custodian="gba")
    assert usage_only["scope"] == "cds_usage_gba cds_meters_gba"
    assert by_type(usage_only)["cds_usage_gba"]["include_meter_numbers"] is False


def test_several_profiles_pick_the_one_that_holds_most():
    strings = ["FB=1_3_4_5;HistoryLength=24", "FB=1_3_4_5_12;HistoryLength=13"]
    descriptions = offered_scopes("dc", strings, documentation_base=DOCS, timezone=TZ)
    cost = migrate(authorization(scope=strings[1]), descriptions, custodian="dc")
    assert by_type(cost)["cds_usage_dc"]["include_usage_segment_value_types"] == ["electric_usage_forward", "cost"]
    deep = migrate(authorization(scope=strings[0]), descriptions, custodian="dc")
    usage_id = next(i for i in deep["scope"].split() if i.startswith("cds_usage_dc"))
    assert usage_id.startswith("cds_usage_dc.")
    assert by_type(deep)[usage_id]["segment_start"] == "2024-11-22T07:00:00-05:00"


@pytest.mark.parametrize(("auth", "message"), [
    (authorization(scope="FB=3_19_32_33_34_35_36_37_38_41_44_45"), "covers none of the CDS scopes"),
    (authorization(scope="FB=34_35"), "covers none"),
    (authorization(scope=XSD_AUTHORIZATION), "out of range"),
    (authorization(scope="ThirdParty_Admin_Access"), "administrative"),
    (authorization(scope=""), "no scope"),
    (authorization(scope=None), "no scope"),
    (Authorization(status=1, scope=SANDBOX_HOURLY,
                   resource_uri="https://dc.example/espi/1_1/resource/Batch/Bulk/BULK_1"), "bulk"),
])
def test_authorizations_that_are_no_customer_consent(sandbox, auth, message):
    with pytest.raises(AuthorizationNotMigratable, match=message):
        migrate(auth, sandbox)


def test_server_created_grants_are_reachable_through_grant_admin(sandbox):
    data = migrate(authorization(), sandbox)
    admin = sandbox[GRANT_ADMIN_ID]
    assert admin.type == "cds_grant_admin"
    # What gateway/oauth/server.py checks before a Grant Admin token reaches a grant's enabled scope.
    assert all(sandbox[scope_id].grant_admin_scope == GRANT_ADMIN_ID for scope_id in data["scope"].split())


def test_persisted_grants_show_in_the_grants_api(database_url, sandbox):
    from cryptography.fernet import Fernet

    from cds.grants import get_grant, list_grants
    from cds.secrets import SecretBox
    from cds.store.engine import make_engine, make_sessionmaker
    from cds.store.migrate import upgrade
    from cds.store.models import Client
    from cds.urls import Urls

    engine = make_engine(database_url)
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    box = SecretBox(Fernet.generate_key(), b"h" * 32)
    urls = Urls("https://gateway.example")
    cases = {
        "active": authorization(authorized=(stamp("2026-01-15T17:00:00+00:00"), 0)),
        "expired": authorization(authorized=(1333252800, 31536000)),
        "revoked": authorization(status=0),
        "future": authorization(authorized=(stamp("2027-01-01T05:00:00+00:00"), 0)),
    }
    ids = {}
    with sessions() as session, session.begin():
        client = Client(client_id="c1", registration_id="r1", client_id_issued_at=0, created=NOW, modified=NOW,
                        client_name="Migrating TP", status="production")
        session.add(client)
        session.flush()
        for name, auth in cases.items():
            data = migrate(auth, sandbox)
            assert data["status"] == name
            grant = persist_server_created_grant(session, client, data, box, customer_id="sandbox:7", now=NOW)
            ids[grant.grant_id] = name
    with sessions() as session:
        listed = list_grants(session, "r1", {}, urls=urls, page_size=10, now=NOW)["grants"]
        assert {g["grant_id"]: g["status"] for g in listed} == ids
        for grant_id, name in ids.items():
            shown = get_grant(session, "r1", grant_id, urls=urls, now=NOW)
            assert shown["scope"] == "cds_usage_sandbox cds_meters_sandbox"
            assert shown["enabled_scope"] == ("" if name == "revoked" else shown["scope"])
            assert [d["type"] for d in shown["authorization_details"]] == shown["scope"].split()
        later = list_grants(session, "r1", {"statuses": "active"}, urls=urls, page_size=10,
                            now=datetime(2027, 2, 1, tzinfo=UTC))["grants"]
        assert sorted(ids[g["grant_id"]] for g in later) == ["active", "future"]  # time moves future to active
    engine.dispose()


# ---------------------------------------------------------------------------------------------- shared samples


def _resources(name: str, kind: str) -> list:
    from espi.atom import Entry, FeedReader

    path = Path(SAMPLES_DIR) / name
    if not path.is_file():
        pytest.skip(f"shared sample {name} not available ({SAMPLES_DIR})")
    return [r.value for item in FeedReader(path) if isinstance(item, Entry) for r in item.resources if r.name == kind]


def test_sample_application_information_scopes():
    found = [scope for info in _resources("gbasandbox2016_ApplicationInformation_feed.xml", "ApplicationInformation")
             for scope in info.scopes]
    assert found == SANDBOX  # the literal test data above is what the sandbox publishes
    for name, strings in (("gbasandbox2016_ApplicationInformation_feed.xml", None),
                          ("gba_ApplicationInformation-Entry-Anonymized.xml", [GBA_RETAIL]),
                          ("cmdtest_ApplicationInformationSample.xml", [CMDTEST_APPLICATION])):
        scopes = [s for info in _resources(name, "ApplicationInformation") for s in info.scopes]
        if strings is not None:
            assert scopes == strings
        assert problems(offer(scopes).descriptions) == []


@pytest.mark.parametrize(("sample", "offered", "expected"), [
    ("gba_Authorization-Entry-Anonymized.xml", [GBA_RETAIL], ("expired", 6)),
    ("cmdtest_AuthorizationSample.xml", [CMDTEST_APPLICATION], ("expired", 2)),
    ("gba_Multiple-Authorization-Feed-Anonymized.xml", [GBA_RETAIL], ("expired", 2)),
    ("gbasandbox2016_authorization.xml", SANDBOX, None),
])
def test_sample_authorizations(sample, offered, expected):
    descriptions = offered_scopes("dc", offered, documentation_base=DOCS, timezone=TZ)
    for auth in _resources(sample, "Authorization"):
        if expected is None:
            with pytest.raises(AuthorizationNotMigratable):
                migrate(auth, descriptions, custodian="dc")
            continue
        data = migrate(auth, descriptions, custodian="dc")
        assert data["status"] == expected[0]
        assert len(data["scope"].split()) == expected[1]
        assert data["upstream"]["authorization_uri"] == auth.authorization_uri
