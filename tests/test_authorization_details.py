"""RAR validation (cds/authorization_details.py): RFC 9396 + CDS-WG1-02 §3.8–3.9, CDS-WG3-01 §6–7."""

from __future__ import annotations

import base64
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from conftest import REPO
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import given, settings
from hypothesis import strategies as st

from cds.authorization_details import (
    PRESELECTION_FIELDS,
    AuthorizationDetailsError,
    Duration,
    ValidatedDetails,
    is_reduction,
    parse_authorization_details,
    parse_duration,
    validate_authorization_details,
)
from cds.scopes import build_scope_descriptions

EXAMPLES = Path(REPO).parent / "shared" / "cds-examples"
NY = "America/New_York"
LA = "America/Los_Angeles"
NOW = datetime(2024, 6, 15, 16, 0, tzinfo=UTC)  # 12:00 EDT


def load(name: str):
    return json.loads((EXAMPLES / name).read_text(), parse_float=Decimal)


@pytest.fixture(scope="module")
def descriptions():
    return build_scope_descriptions(documentation_base="https://gateway.example/docs", timezone=NY)


def validate(details, descriptions, *, scopes=None, now=NOW, timezone=NY, flow="authorization_code",
             client_types=None) -> ValidatedDetails:
    if scopes is None:
        scopes = [entry["type"] for entry in details]
    return validate_authorization_details(details, scopes=scopes, descriptions=descriptions,
                                          client_types=client_types, timezone=timezone, now=now, flow=flow)


def rejects(details, descriptions, match: str, **kwargs) -> AuthorizationDetailsError:
    with pytest.raises(AuthorizationDetailsError, match=match) as info:
        validate(details, descriptions, **kwargs)
    assert info.value.error == "invalid_authorization_details"
    assert info.value.description == str(info.value)
    return info.value


def b64(number: int, length: int) -> str:
    return base64.urlsafe_b64encode(number.to_bytes(length, "big")).rstrip(b"=").decode()


def ec_jwk(**extra) -> dict:
    numbers = ec.generate_private_key(ec.SECP256R1()).public_key().public_numbers()
    return {"kty": "EC", "crv": "P-256", "x": b64(numbers.x, 32), "y": b64(numbers.y, 32), **extra}


def rsa_jwk(bits: int) -> dict:
    numbers = rsa.generate_private_key(65537, bits).public_key().public_numbers()
    return {"kty": "RSA", "n": b64(numbers.n, (numbers.n.bit_length() + 7) // 8), "e": b64(numbers.e, 3)}


def custom_scope(fields: list[dict], *, scope_id: str = "example_numbers", scope_type: str = "example_numbers",
                 consent: bool = False) -> dict:
    """A Scope Description in JSON form, for formats our own scopes do not use (int, decimal …)."""
    for fd in fields:
        fd.setdefault("name", fd["id"])
        fd.setdefault("description", fd["id"])
        fd.setdefault("documentation", "https://gateway.example/docs")
        fd.setdefault("for_types", [scope_id])
        fd.setdefault("is_required", False)
    return {scope_id: {
        "id": scope_id, "type": scope_type, "name": "Example", "description": "Example",
        "documentation": "https://gateway.example/docs", "registration_requirements": [],
        "registration_optional": [], "response_types_supported": ["code"] if consent else [],
        "grant_types_supported": ["authorization_code"] if consent else ["client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic"],
        "code_challenge_methods_supported": ["S256"] if consent else [], "coverages_supported": [],
        "grant_admin_scope": None, "authorization_details_types_supported": [scope_id],
        "authorization_details_fields_supported": fields,
    }}


# ------------------------------------------------------------------------------------------------------------------
# parse_authorization_details
# ------------------------------------------------------------------------------------------------------------------


def test_parse_accepts_json_text_lists_and_none():
    text = '[{"type": "cds_usage_1", "x": 1.5, "n": 2}]'
    parsed = parse_authorization_details(text)
    assert parsed == [{"type": "cds_usage_1", "x": Decimal("1.5"), "n": 2}]
    assert isinstance(parsed[0]["x"], Decimal) and isinstance(parsed[0]["n"], int)
    assert parse_authorization_details(None) == []
    assert parse_authorization_details("[]") == []
    original = [{"type": "a"}]
    copy = parse_authorization_details(original)
    assert copy == original and copy[0] is not original[0]


def test_parse_keeps_decimal_precision():
    text = '[{"type": "t", "v": 123456789012345678901234567890.1234567890123, "w": 0.1, "z": 1E-7}]'
    entry = parse_authorization_details(text)[0]
    assert entry["v"] == Decimal("123456789012345678901234567890.1234567890123")
    assert str(entry["v"]) == "123456789012345678901234567890.1234567890123"
    assert entry["w"] + entry["w"] + entry["w"] == Decimal("0.3")  # never a float
    assert entry["z"] == Decimal("1E-7")


@pytest.mark.parametrize(("raw", "match"), [
    ("not json", "not valid JSON"),
    ("", "empty"),
    ('{"type": "a"}', "JSON array"),
    ('"a"', "JSON array"),
    ("[1]", r"authorization_details\[0\]: must be a JSON object"),
    ('[{"type": "a"}, []]', r"authorization_details\[1\]: must be a JSON object"),
    ('[{"kind": "a"}]', "'type' member is missing"),
    ('[{"type": 5}]', "non-empty string"),
    ('[{"type": ""}]', "non-empty string"),
    ('[{"type": null}]', "non-empty string"),
    ('[{"type": "a", "v": NaN}]', "not valid JSON"),
    ('[{"type": "a", "v": Infinity}]', "not valid JSON"),
    ('[{"type": "a", "type": "b"}]', "duplicate key"),
    ("[" * 100000 + "]" * 100000, "longer than"),
    ({"type": "a"}, "JSON array"),
    (b'[{"type": "a"}]', "not bytes"),
])
def test_parse_rejects(raw, match):
    with pytest.raises(AuthorizationDetailsError, match=match):
        parse_authorization_details(raw)


# ------------------------------------------------------------------------------------------------------------------
# The spec's examples
# ------------------------------------------------------------------------------------------------------------------


def map_ad_types(entries: list[dict], descriptions) -> list[dict]:
    """Erratum handling (report §6.1 item 1): the WG3-01 §13 examples give every scope a separate RAR type with an
    ``ad`` suffix (``cds_usage_1`` → ``cds_usage_1ad``), while WG1-02 §3.4 and its own examples use the scope id
    as the type. Our metadata uses the scope id, so ``…ad`` types are mapped back to the scope id they belong to.
    ``merge_selection_with`` already names scope ids in the example and is left alone."""
    mapped = []
    for entry in entries:
        type_ = entry["type"]
        if type_.endswith("ad") and type_[:-2] in descriptions:
            type_ = type_[:-2]
        mapped.append({**entry, "type": type_})
    return mapped


def test_wg3_authorization_request_example_validates_against_our_descriptions(descriptions):
    request = map_ad_types(load("wg3-01_authorization-details-authorization-request.json"), descriptions)
    result = validate(request, descriptions, scopes=["cds_service_contracts_1", "cds_usage_1"])
    assert result.scopes == ["cds_service_contracts_1", "cds_usage_1"]
    contracts, usage = result.effective
    assert contracts["contract_numbers"] == ["_all"] and usage["contract_numbers"] == ["_all"]
    assert usage["merge_selection_with"] == "cds_service_contracts_1"
    # Preselections are not echoed by consent scopes (WG3-01 §6); everything else is, defaults included.
    for entry in result.echoed:
        assert not PRESELECTION_FIELDS & set(entry)
    assert result.echoed[1]["merge_selection_with"] == "cds_service_contracts_1"
    assert usage["segment_start"] == "2021-06-15T12:00:00-04:00"  # default P3Y
    assert usage["segment_end"] == "infinite"

    # Every key of the spec's token response is echoed too (except "purpose", which this gateway does not offer).
    response = map_ad_types(load("wg3-01_token-response-authorization-code.json")["authorization_details"],
                            descriptions)
    for theirs, ours in zip(response, result.echoed, strict=True):
        assert theirs["type"] == ours["type"]
        assert set(theirs) - {"purpose"} <= set(ours)


def test_wg3_example_validates_against_the_wg3_example_metadata_itself():
    metadata = load("wg3-01_oauth-authorization-server-metadata.json")["cds_scope_descriptions"]
    request = load("wg3-01_authorization-details-authorization-request.json")
    result = validate(request, metadata, scopes=["cds_service_contracts_1", "cds_usage_1"])
    assert [entry["type"] for entry in result.echoed] == ["cds_service_contracts_1ad", "cds_usage_1ad"]
    response = load("wg3-01_token-response-authorization-code.json")["authorization_details"]
    for theirs, ours in zip(response, result.echoed, strict=True):
        assert set(theirs) <= set(ours)
        for key in ("include_accounts", "sync_until", "purpose", "segment_end", "include_meter_devices"):
            if key in theirs:
                assert ours[key] == theirs[key]
    assert result.echoed[1]["segment_start"] == "2023-05-15T12:00:00-04:00"  # the example's default P13M


def test_wg1_grant_admin_example(descriptions):
    request = load("wg1-02_authorization-details-grant-admin-token-request.json")
    for source in (descriptions, load("wg1-02_oauth-authorization-server-metadata.json")["cds_scope_descriptions"]):
        result = validate(request, source, scopes=["cds_grant_admin_1"], flow="client_credentials")
        assert result.effective == request
        assert result.echoed == request
        assert result.scopes == ["cds_grant_admin_1"]


# ------------------------------------------------------------------------------------------------------------------
# Types, scopes, fields
# ------------------------------------------------------------------------------------------------------------------


def test_defaults_are_filled_for_scopes_without_entries(descriptions):
    result = validate([], descriptions, scopes=["cds_accounts_1", "cds_bill_statements_1", "openid"])
    assert [entry["type"] for entry in result.effective] == ["cds_accounts_1", "cds_bill_statements_1"]
    accounts, bills = result.effective
    fields = descriptions["cds_accounts_1"].authorization_details_fields_supported
    assert set(accounts) == {"type"} | {fd.id for fd in fields}
    assert accounts["include_account_numbers"] is True
    assert accounts["include_account_details"] is False
    assert accounts["account_numbers"] is None
    assert accounts["sync_until"] == "2025-06-15T12:00:00-04:00"  # default P1Y, absolute
    assert accounts["jwk"] is None
    assert bills["statement_date_start"] == "2021-06-15"
    assert bills["statement_date_end"] == "infinite"
    assert "account_numbers" not in result.echoed[0]


def test_omitted_fields_take_defaults_and_given_ones_are_kept(descriptions):
    result = validate([{"type": "cds_usage_1", "include_bill_sections": True, "segment_start": "P30D",
                        "include_usage_segment_value_types": ["electric_usage_net"]}], descriptions)
    usage = result.effective[0]
    assert usage["include_bill_sections"] is True
    assert usage["include_meter_devices"] is True
    assert usage["segment_start"] == "2024-05-16T12:00:00-04:00"
    assert usage["include_usage_segment_value_types"] == ["electric_usage_net"]
    assert next(iter(usage)) == "type"


def test_client_credentials_echo_keeps_preselections():
    metadata = load("wg3-01_oauth-authorization-server-metadata.json")["cds_scope_descriptions"]
    entry = {"type": "cds_query_accounts_1ad", "account_numbers": ["110033-4"]}
    result = validate([entry], metadata, scopes=["cds_query_accounts_1"], flow="client_credentials")
    assert result.echoed[0]["account_numbers"] == ["110033-4"]
    assert result.echoed[0]["sync_until"] == "infinite"


def test_refresh_flow_also_hides_preselections(descriptions):
    result = validate([{"type": "cds_meters_1", "meter_numbers": ["M1"]}], descriptions, flow="refresh_token")
    assert result.effective[0]["meter_numbers"] == ["M1"]
    assert "meter_numbers" not in result.echoed[0]


def test_program_scopes_echo_their_program_lists():
    choices = [{"id": "P1", "name": "P1", "description": "P1", "documentation": "https://d"}]
    desc = custom_scope([{"id": "account_programs", "format": "choice_list_or_null", "default": None,
                          "choices": choices}], scope_id="cds_account_programs_1",
                        scope_type="cds_account_programs", consent=True)
    result = validate([{"type": "cds_account_programs_1", "account_programs": ["P1"]}], desc)
    assert result.echoed[0]["account_programs"] == ["P1"]
    rejects([{"type": "cds_account_programs_1", "account_programs": None}], desc, "must not be null")
    rejects([], desc, "account_programs", scopes=["cds_account_programs_1"])  # the default null is refused too


def test_aggregation_consent_rules():
    desc = custom_scope([
        {"id": "aggregation_numbers", "format": "string_list_or_null", "default": None, "maximum": 100,
         "minimum": 1},
        {"id": "premise_numbers", "format": "string_list_or_null", "default": None, "maximum": 100, "minimum": 1},
        {"id": "error_if_no_preselections", "format": "boolean", "default": True},
        {"id": "allow_scope_modifications", "format": "boolean", "default": False},
    ], scope_id="cds_aggregation_consent_1", scope_type="cds_aggregation_consent", consent=True)
    good = {"type": "cds_aggregation_consent_1", "aggregation_numbers": ["A"], "premise_numbers": ["P"]}
    assert validate([good], desc).effective[0]["error_if_no_preselections"] is True
    rejects([{**good, "premise_numbers": None}], desc, "premise_numbers")
    rejects([{**good, "error_if_no_preselections": False}], desc, "must be true")
    rejects([{**good, "allow_scope_modifications": True}], desc, "must be false")


def test_unknown_type(descriptions):
    error = rejects([{"type": "cds_usage_9"}], descriptions, r"authorization_details\[0\] \(type 'cds_usage_9'\)",
                    scopes=["cds_usage_1"])
    assert "unknown" in error.description


def test_type_without_requested_scope(descriptions):
    rejects([{"type": "cds_usage_1"}], descriptions, "no requested scope", scopes=["cds_meters_1"])


def test_client_types_restrict(descriptions):
    rejects([{"type": "cds_usage_1"}], descriptions, "not registered", client_types=["cds_meters_1"])
    assert validate([{"type": "cds_usage_1"}], descriptions, client_types=["cds_usage_1"]).scopes == ["cds_usage_1"]


def test_unknown_field(descriptions):
    error = rejects([{"type": "cds_usage_1", "include_usage_segments": True}], descriptions, "unknown field")
    assert "include_usage_segments" in error.description


def test_duplicate_entries(descriptions):
    rejects([{"type": "cds_usage_1"}, {"type": "cds_usage_1"}], descriptions, r"authorization_details\[1\].*dupl")


def test_grant_admin_rules(descriptions):
    entry = {"type": "cds_grant_admin_1", "client_id": "c1", "grant_id": "g1"}
    kwargs = {"scopes": ["cds_grant_admin_1"], "flow": "client_credentials"}
    rejects([entry, entry], descriptions, "exactly one", **kwargs)
    rejects([], descriptions, "exactly one", **kwargs)
    rejects([entry], descriptions, "alone", scopes=["cds_grant_admin_1", "cds_usage_1"], flow="client_credentials")
    rejects([{"type": "cds_grant_admin_1", "client_id": "c1"}], descriptions, "field 'grant_id': is required",
            **kwargs)
    rejects([{**entry, "grant_id": ""}], descriptions, "below the minimum 1", **kwargs)
    rejects([{**entry, "grant_id": "g" * 1001}], descriptions, "above the maximum 1000", **kwargs)
    rejects([{**entry, "grant_id": 7}], descriptions, "must be a string", **kwargs)
    rejects([{**entry, "grant_id": None}], descriptions, "must not be null", **kwargs)


def test_required_field_without_entry_names_the_scope():
    desc = custom_scope([{"id": "n", "format": "int", "is_required": True, "maximum": 5, "minimum": 0}])
    rejects([], desc, "scope 'example_numbers' needs an authorization_details entry", scopes=["example_numbers"])


@pytest.mark.parametrize(("entry", "match"), [
    ({"include_service_points": "true"}, "true or false"),
    ({"include_service_points": 1}, "true or false"),
    ({"include_service_points": None}, "must not be null"),
    ({"meter_numbers": []}, "empty array"),
    ({"meter_numbers": "M1"}, "array of strings"),
    ({"meter_numbers": ["M1", 2]}, "must be strings"),
    ({"meter_numbers": ["x" * 6000, "y" * 5000]}, "combined length 11000 is above the maximum"),
    ({"meter_numbers": [""]}, "combined length 0 is below the minimum 1"),
    ({"meter_types": ["electric_usage", "steam"]}, "'steam' is not one of the choices"),
    ({"meter_types": ["electric_usage", "electric_usage"]}, "twice"),
    ({"meter_types": []}, "empty array"),
    ({"authorization_form_selection_type": "aggregation_selection"}, "not one of the choices"),
    ({"authorization_form_selection_type": None}, "must not be null"),
    ({"merge_selection_with": ""}, "below the minimum"),
    ({"merge_selection_with": 3}, "must be a string"),
    ({"sync_until": 5}, "must be a string"),
    ({"sync_until": 1.5}, "floats are not accepted"),
])
def test_wrong_formats(descriptions, entry, match):
    error = rejects([{"type": "cds_meters_1", **entry}], descriptions, match)
    field_id = next(iter(entry))
    assert f"field {field_id!r}" in error.description and "(type 'cds_meters_1')" in error.description


def test_null_preselections_and_choices_are_fine(descriptions):
    result = validate([{"type": "cds_meters_1", "meter_numbers": None, "meter_types": None,
                        "servicepoint_numbers": ["_all", "_include_future"]}], descriptions, flow="client_credentials")
    assert result.echoed[0]["servicepoint_numbers"] == ["_all", "_include_future"]


# ------------------------------------------------------------------------------------------------------------------
# Numbers: int and decimal (custom descriptions: the gateway's scopes have none)
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def numbers():
    return custom_scope([
        {"id": "count", "format": "int", "maximum": 10, "minimum": 1, "default": 3},
        {"id": "ratio", "format": "decimal", "maximum": "infinite", "minimum": Decimal("0.5")},
        {"id": "small", "format": "decimal", "maximum": Decimal("1.05"), "minimum": 0},
    ])


def test_decimals_stay_exact(numbers):
    details = parse_authorization_details('[{"type": "example_numbers", "ratio": 99999999999999999999.000000001,'
                                          ' "small": 1.05}]')
    result = validate(details, numbers, flow="client_credentials")
    entry = result.effective[0]
    assert entry == {"type": "example_numbers", "count": 3, "ratio": Decimal("99999999999999999999.000000001"),
                     "small": Decimal("1.05")}
    assert isinstance(entry["ratio"], Decimal) and str(entry["small"]) == "1.05"
    assert validate([{"type": "example_numbers", "small": 1}], numbers, flow="client_credentials").effective[0][
        "small"] == 1


@pytest.mark.parametrize(("entry", "match"), [
    ({"small": 1.5}, "floats are not accepted"),
    ({"small": Decimal("1.0500001")}, "above the maximum"),
    ({"small": Decimal("-0.01")}, "below the minimum"),
    ({"small": Decimal("NaN")}, "finite"),
    ({"small": "1"}, "decimal number"),
    ({"small": True}, "decimal number"),
    ({"ratio": Decimal("0.4999")}, "below the minimum"),
    ({"count": 11}, "above the maximum 10"),
    ({"count": 0}, "below the minimum 1"),
    ({"count": Decimal("2.5")}, "integer"),
    ({"count": 2.0}, "floats are not accepted"),
    ({"count": True}, "integer"),
])
def test_number_edge_cases(numbers, entry, match):
    rejects([{"type": "example_numbers", **entry}], numbers, match, flow="client_credentials")


def test_infinite_maximum_accepts_huge_numbers(numbers):
    entry = {"type": "example_numbers", "ratio": Decimal("1E+400")}
    assert validate([entry], numbers, flow="client_credentials").effective[0]["ratio"] == Decimal("1E+400")


# ------------------------------------------------------------------------------------------------------------------
# Dates and durations
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("P3Y", Duration(years=3)),
    ("P0D", Duration()),
    ("PT0S", Duration()),
    ("P30DT2H", Duration(days=30, seconds=7200)),
    ("P1Y2M3DT4H5M6S", Duration(1, 2, 3, 4 * 3600 + 5 * 60 + 6)),
    ("P2W", Duration(days=14)),
    ("P13M", Duration(months=13)),
    ("PT90M", Duration(seconds=5400)),
])
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["P", "PT", "P1YT", "P1.5Y", "-P1D", "P0S", "P1D2Y", "1D", "p1d", "P1W2D",
                                  "P1234567Y", " P1D", "P1H"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_relative_date_has_no_time_part():
    with pytest.raises(ValueError, match="time part"):
        parse_duration("PT0S", date_only=True)


def usage(descriptions, now=NOW, timezone=NY, **fields):
    return validate([{"type": "cds_usage_1", **fields}], descriptions, now=now, timezone=timezone).effective[0]


def test_segment_start_limits(descriptions):
    assert usage(descriptions, segment_start="P3Y")["segment_start"] == "2021-06-15T12:00:00-04:00"
    assert usage(descriptions, segment_start="P36M")["segment_start"] == "2021-06-15T12:00:00-04:00"
    assert usage(descriptions, segment_start="PT0S")["segment_start"] == "2024-06-15T12:00:00-04:00"
    rejects([{"type": "cds_usage_1", "segment_start": "P3YT1S"}], descriptions, "further back than the maximum 'P3Y'")
    rejects([{"type": "cds_usage_1", "segment_start": "P4Y"}], descriptions, "further back than the maximum 'P3Y'")
    rejects([{"type": "cds_usage_1", "segment_start": "2021-06-15T11:59:59-04:00"}], descriptions, "further back")
    rejects([{"type": "cds_usage_1", "segment_start": "infinite"}], descriptions, "further back")
    rejects([{"type": "cds_usage_1", "segment_start": "2024-06-15T16:00:01Z"}], descriptions,
            "later than the minimum 'PT0S'")


def test_absolute_values_are_normalised_to_the_server_timezone(descriptions):
    entry = usage(descriptions, segment_start="2022-01-01T05:00:00Z", segment_end="2030-01-01T00:00:00.25+01:00")
    assert entry["segment_start"] == "2022-01-01T00:00:00-05:00"
    assert entry["segment_end"] == "2029-12-31T18:00:00.250000-05:00"
    assert usage(descriptions, timezone="UTC", segment_start="P1D")["segment_start"] == "2024-06-14T16:00:00Z"


@pytest.mark.parametrize("value", ["2022-01-01", "2022-01-01T00:00:00", "2022-01-01 00:00:00Z",
                                   "2022-02-30T00:00:00Z", "yesterday", "P1Y2D3", "Infinite"])
def test_malformed_datetimes(descriptions, value):
    rejects([{"type": "cds_usage_1", "segment_start": value}], descriptions, "field 'segment_start'")


def test_end_fields_add_and_accept_infinite(descriptions):
    entry = usage(descriptions, segment_end="P30DT2H", sync_until="infinite")
    assert entry["segment_end"] == "2024-07-15T14:00:00-04:00"
    assert entry["sync_until"] == "infinite"
    assert usage(descriptions, sync_until="PT0S")["sync_until"] == "2024-06-15T12:00:00-04:00"
    rejects([{"type": "cds_usage_1", "segment_end": "2024-06-15T15:59:59Z"}], descriptions,
            "earlier than the minimum 'PT0S'")


def test_date_fields(descriptions):
    late = datetime(2024, 6, 16, 3, 30, tzinfo=UTC)  # still June 15 in New York
    result = validate([{"type": "cds_service_bills_1", "start_date": "P1M", "end_date": "P0D",
                        "statement_date_start": "2023-01-31"}], descriptions, now=late).effective[0]
    assert result["start_date"] == "2024-05-15"
    assert result["end_date"] == "2024-06-15"
    assert result["statement_date_start"] == "2023-01-31"
    assert result["statement_date_end"] == "infinite"
    rejects([{"type": "cds_service_bills_1", "start_date": "P1DT1H"}], descriptions, "time part")
    rejects([{"type": "cds_service_bills_1", "start_date": "2024-06-15T00:00:00Z"}], descriptions, "full-date")
    rejects([{"type": "cds_service_bills_1", "start_date": "2021-06-14"}], descriptions, "further back")
    rejects([{"type": "cds_service_bills_1", "end_date": "2024-06-14"}], descriptions, "earlier than the minimum")
    rejects([{"type": "cds_service_bills_1", "start_date": "2024-02-30"}], descriptions, "not a valid date")


def test_month_arithmetic_clamps_to_the_month_end(descriptions):
    now = datetime(2024, 3, 31, 16, 0, tzinfo=UTC)
    entry = validate([{"type": "cds_service_bills_1", "start_date": "P1M", "end_date": "P11M"}], descriptions,
                     now=now).effective[0]
    assert entry["start_date"] == "2024-02-29"
    assert entry["end_date"] == "2025-02-28"
    leap = datetime(2024, 2, 29, 17, 0, tzinfo=UTC)
    assert usage(descriptions, now=leap, segment_start="P1Y")["segment_start"] == "2023-02-28T12:00:00-05:00"


def test_spring_forward_new_york(descriptions):
    after = datetime(2024, 3, 10, 16, 0, tzinfo=UTC)  # 12:00 EDT, the day clocks went forward
    # Calendar days keep the wall-clock time: one "day" back is only 23 hours here.
    assert usage(descriptions, now=after, segment_start="P1D")["segment_start"] == "2024-03-09T12:00:00-05:00"
    # Hours are exact elapsed time.
    assert usage(descriptions, now=after, segment_start="PT24H")["segment_start"] == "2024-03-09T11:00:00-05:00"
    before = datetime(2024, 3, 9, 7, 30, tzinfo=UTC)  # 02:30 EST; 02:30 does not exist the next day
    assert usage(descriptions, now=before, sync_until="P1D")["sync_until"] == "2024-03-10T03:30:00-04:00"


def test_fall_back_los_angeles(descriptions):
    before = datetime(2024, 11, 2, 19, 0, tzinfo=UTC)  # 12:00 PDT, the day before clocks go back
    assert usage(descriptions, now=before, timezone=LA, sync_until="P1D")["sync_until"] == \
        "2024-11-03T12:00:00-08:00"  # 25 hours later
    assert usage(descriptions, now=before, timezone=LA, sync_until="PT24H")["sync_until"] == \
        "2024-11-03T11:00:00-08:00"
    ambiguous = datetime(2024, 11, 2, 8, 30, tzinfo=UTC)  # 01:30 PDT; 01:30 happens twice on Nov 3
    assert usage(descriptions, now=ambiguous, timezone=LA, sync_until="P1D")["sync_until"] == \
        "2024-11-03T01:30:00-07:00"  # the first occurrence
    second = datetime(2024, 11, 3, 9, 30, tzinfo=UTC)  # 01:30 PST, the second 01:30 of the night
    for duration in ("PT0S", "P0D"):
        assert usage(descriptions, now=second, timezone=LA, sync_until=duration)["sync_until"] == \
            "2024-11-03T01:30:00-08:00"


instants = st.datetimes(min_value=datetime(2015, 1, 1), max_value=datetime(2035, 1, 1), timezones=st.just(UTC))
zones = st.sampled_from([NY, LA])


@settings(max_examples=300, deadline=None)
@given(now=instants, zone=zones, days=st.integers(0, 1000))
def test_calendar_days_move_the_local_date_and_keep_wall_time(descriptions, now, zone, days):
    tz = ZoneInfo(zone)
    entry = usage(descriptions, now=now, timezone=zone, sync_until=f"P{days}D", segment_start=f"P{min(days, 1000)}D")
    local = now.astimezone(tz)
    for field_id, sign in (("sync_until", 1), ("segment_start", -1)):
        result = datetime.fromisoformat(entry[field_id])
        assert result.date() == local.date() + timedelta(days=sign * days)
        wall = datetime.combine(result.date(), local.time().replace(fold=local.fold if days == 0 else 0), tzinfo=tz)
        if wall.astimezone(UTC).astimezone(tz).replace(tzinfo=None) == wall.replace(tzinfo=None):  # not in a gap
            assert result.time() == local.time().replace(tzinfo=None)
            assert result.utcoffset() == wall.utcoffset()
        else:  # a skipped wall time lands one hour later, at the same instant the earlier offset gives
            # (compared as UTC instants: PEP 495 makes inter-zone == false for any time inside a gap)
            assert result.astimezone(UTC) == wall.astimezone(UTC)
            assert result.time() == (local + timedelta(hours=1)).time().replace(tzinfo=None)


@settings(max_examples=300, deadline=None)
@given(now=instants, zone=zones, hours=st.integers(0, 26000), seconds=st.integers(0, 3599))
def test_time_components_are_exact_elapsed_time(descriptions, now, zone, hours, seconds):
    entry = usage(descriptions, now=now, timezone=zone, segment_start=f"PT{hours}H{seconds}S" if seconds else
                  f"PT{hours}H", segment_end=f"PT{hours}H")
    assert datetime.fromisoformat(entry["segment_start"]) == now - timedelta(hours=hours, seconds=seconds)
    assert datetime.fromisoformat(entry["segment_end"]) == now + timedelta(hours=hours)
    assert entry["segment_start"].endswith(("-04:00", "-05:00", "-07:00", "-08:00"))


@settings(max_examples=200, deadline=None)
@given(now=instants, zone=zones, months=st.integers(0, 36))
def test_months_back_never_exceed_the_history_limit(descriptions, now, zone, months):
    entry = usage(descriptions, now=now, timezone=zone, segment_start=f"P{months}M")
    start = datetime.fromisoformat(entry["segment_start"])
    assert start <= now
    limit = datetime.fromisoformat(usage(descriptions, now=now, timezone=zone, segment_start="P3Y")["segment_start"])
    assert start >= limit


@settings(max_examples=200, deadline=None)
@given(now=instants, zone=zones, days=st.integers(0, 1500))
def test_relative_dates(descriptions, now, zone, days):
    local_today = now.astimezone(ZoneInfo(zone)).date()
    details = [{"type": "cds_bill_statements_1", "statement_date_end": f"P{days}D"}]
    entry = validate(details, descriptions, now=now, timezone=zone).effective[0]
    assert date.fromisoformat(entry["statement_date_end"]) == local_today + timedelta(days=days)
    back = [{"type": "cds_bill_statements_1", "statement_date_start": f"P{days}D"}]
    if days <= 1000:  # well inside the P3Y history limit (at least 1095 days)
        start = validate(back, descriptions, now=now, timezone=zone).effective[0]["statement_date_start"]
        assert date.fromisoformat(start) == local_today - timedelta(days=days)
    elif days > 1100:
        with pytest.raises(AuthorizationDetailsError, match="further back"):
            validate(back, descriptions, now=now, timezone=zone)


# ------------------------------------------------------------------------------------------------------------------
# jwk
# ------------------------------------------------------------------------------------------------------------------


def test_jwk_ec_and_rsa_accepted(descriptions):
    key = ec_jwk(use="enc", kid="k1")
    result = validate([{"type": "cds_usage_1", "jwk": key}, {"type": "cds_meters_1", "jwk": key}], descriptions)
    assert result.effective[0]["jwk"] == key and result.echoed[1]["jwk"] == key
    assert result.effective[0]["jwk"] is not key
    rsa_key = rsa_jwk(2048)
    assert validate([{"type": "cds_usage_1", "jwk": rsa_key}], descriptions).effective[0]["jwk"] == rsa_key


@pytest.mark.parametrize(("jwk", "match"), [
    (lambda: ec_jwk(use="sig"), "'use' must be 'enc'"),
    (lambda: ec_jwk(d="AAAA"), "private member"),
    (lambda: {**ec_jwk(), "crv": "P-384"}, "P-256"),
    (lambda: {**ec_jwk(), "y": ec_jwk()["y"]}, "not on the P-256 curve"),
    (lambda: {**ec_jwk(), "x": "AAAA"}, "32 bytes"),
    (lambda: {**ec_jwk(), "x": "not base64!"}, "base64url"),
    (lambda: ec_jwk(key_ops=["verify"]), "key_ops"),
    (lambda: rsa_jwk(1024), "at least 2048"),
    (lambda: {"kty": "oct", "k": "AAAA"}, "private member"),
    (lambda: {"kty": "OKP", "crv": "X25519", "x": "AAAA"}, "'kty' must be"),
    (lambda: "a key", "JWK object"),
])
def test_bad_jwks(descriptions, jwk, match):
    rejects([{"type": "cds_usage_1", "jwk": jwk()}], descriptions, match)


def test_jwk_must_be_the_same_everywhere(descriptions):
    first, second = ec_jwk(), ec_jwk()
    error = rejects([{"type": "cds_usage_1", "jwk": first}, {"type": "cds_meters_1", "jwk": second}], descriptions,
                    r"authorization_details\[1\] \(type 'cds_meters_1'\) field 'jwk'")
    assert "authorization_details[0]" in error.description
    # An entry without jwk gets the default null, which differs too; so does a scope with no entry at all.
    rejects([{"type": "cds_usage_1", "jwk": first}, {"type": "cds_meters_1"}], descriptions, "same jwk")
    rejects([{"type": "cds_usage_1", "jwk": first}], descriptions, "same jwk", scopes=["cds_usage_1", "cds_meters_1"])


# ------------------------------------------------------------------------------------------------------------------
# merge_selection_with
# ------------------------------------------------------------------------------------------------------------------


def test_merge_selection_rules(descriptions):
    scopes = ["cds_service_contracts_1", "cds_usage_1"]
    contracts = {"type": "cds_service_contracts_1", "merge_selection_with": "cds_usage_1"}
    usage_entry = {"type": "cds_usage_1", "merge_selection_with": "cds_service_contracts_1"}
    assert validate([contracts, usage_entry], descriptions, scopes=scopes).scopes == scopes
    rejects([contracts], descriptions, "is not merged", scopes=scopes)
    rejects([{**contracts, "merge_selection_with": "cds_meters_1"}, usage_entry], descriptions,
            "not another scope", scopes=scopes)
    rejects([{**contracts, "merge_selection_with": "cds_service_contracts_1"}, usage_entry], descriptions,
            "own scope", scopes=scopes)
    rejects([contracts, {**usage_entry, "authorization_form_selection_type": "meter_device_selection"}],
            descriptions, "authorization_form_selection_type differs", scopes=scopes)
    rejects([contracts, {**usage_entry, "allow_scope_modifications": True}], descriptions,
            "allow_scope_modifications differs", scopes=scopes)
    rejects([{**contracts, "contract_numbers": ["1"]}, {**usage_entry, "contract_numbers": ["2"]}], descriptions,
            "preselection 'contract_numbers' differs", scopes=scopes)
    rejects([contracts, {**usage_entry, "meter_types": ["electric_usage"]}], descriptions,
            "'meter_types' must be null", scopes=scopes)


# ------------------------------------------------------------------------------------------------------------------
# Misuse by the caller
# ------------------------------------------------------------------------------------------------------------------


def test_caller_errors_are_plain_value_errors(descriptions):
    with pytest.raises(ValueError, match="flow"):
        validate([], descriptions, scopes=["cds_usage_1"], flow="implicit")
    with pytest.raises(ValueError, match="timezone-aware"):
        validate([], descriptions, scopes=["cds_usage_1"], now=datetime(2024, 1, 1))
    with pytest.raises(ValueError, match="timezone"):
        validate([], descriptions, scopes=["cds_usage_1"], timezone="Nowhere/Special")


def test_inputs_are_not_mutated(descriptions):
    entry = {"type": "cds_usage_1", "meter_numbers": ["M1"]}
    snapshot = json.loads(json.dumps(entry))
    result = validate([entry], descriptions)
    assert entry == snapshot
    result.effective[0]["meter_numbers"].append("M2")
    assert entry["meter_numbers"] == ["M1"]


# ------------------------------------------------------------------------------------------------------------------
# is_reduction
# ------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def granted(descriptions):
    result = validate([{"type": "cds_usage_1", "meter_numbers": ["M1", "M2"]}, {"type": "cds_accounts_1"}],
                      descriptions, flow="client_credentials")
    return result.effective


def changed(entries, type_, **fields):
    return [{**entry, **fields} if entry["type"] == type_ else dict(entry) for entry in entries]


def test_reductions(granted):
    assert is_reduction(granted, granted)
    assert is_reduction(granted, granted[:1])  # an entry dropped
    assert is_reduction(granted, changed(granted, "cds_usage_1", include_meter_numbers=False))
    assert is_reduction(granted, changed(granted, "cds_usage_1", meter_numbers=["M2"]))
    assert is_reduction(granted, changed(granted, "cds_usage_1", include_usage_segment_value_types=["cost"]))
    assert is_reduction(granted, changed(granted, "cds_usage_1", include_usage_segment_value_types=None))
    assert is_reduction(granted, changed(granted, "cds_usage_1", segment_start="2023-01-01T00:00:00-05:00"))
    assert is_reduction(granted, changed(granted, "cds_usage_1", segment_end="2025-01-01T00:00:00-05:00"))
    assert is_reduction(granted, changed(granted, "cds_usage_1", sync_until="2024-07-01T00:00:00-04:00"))
    assert is_reduction(granted, changed(granted, "cds_accounts_1", account_numbers=["A1"]))  # null → list


def test_expansions_and_unknowns_are_not_reductions(granted):
    assert not is_reduction(granted, [*granted, {"type": "cds_meters_1"}])
    assert not is_reduction(granted[:1], granted)
    assert not is_reduction(granted, changed(granted, "cds_usage_1", include_bill_sections=True))
    assert not is_reduction(granted, changed(granted, "cds_usage_1", meter_numbers=["M1", "M3"]))
    assert not is_reduction(granted, changed(granted, "cds_usage_1", meter_numbers=None))
    assert not is_reduction(granted, changed(granted, "cds_usage_1", meter_numbers=[]))
    assert not is_reduction(granted, changed(granted, "cds_usage_1", segment_start="2020-01-01T00:00:00-05:00"))
    narrowed = changed(granted, "cds_usage_1", segment_end="2025-01-01T00:00:00-05:00")
    assert not is_reduction(narrowed, changed(narrowed, "cds_usage_1", segment_end="2099-01-01T00:00:00-05:00"))
    assert not is_reduction(narrowed, granted)  # back to "infinite"
    assert not is_reduction(granted, changed(granted, "cds_usage_1", sync_until="infinite"))
    assert not is_reduction(granted, changed(granted, "cds_usage_1", segment_start="P1Y"))  # relative: unjudged
    assert not is_reduction(granted, changed(granted, "cds_usage_1", jwk=ec_jwk()))
    assert not is_reduction(granted, changed(granted, "cds_usage_1", merge_selection_with="cds_accounts_1"))
    assert not is_reduction(granted, changed(granted, "cds_usage_1", include_usage_segment_value_types=["steam"]))
    without = [{k: v for k, v in granted[0].items() if k != "include_bill_sections"}, granted[1]]
    assert not is_reduction(granted, without)  # a field dropped: the default could be wider
    assert not is_reduction(granted, [granted[0], granted[0]])
    assert not is_reduction(granted, changed(granted, "cds_usage_1", new_field=True))
    assert is_reduction(granted, changed(granted, "cds_usage_1", new_field=False))


def test_infinite_windows_may_only_narrow():
    old = [{"type": "t", "segment_start": "infinite", "segment_end": "infinite", "statement_date_end": "2024-01-01"}]
    assert is_reduction(old, [{**old[0], "segment_start": "2020-01-01T00:00:00Z"}])
    assert is_reduction(old, [{**old[0], "segment_end": "2030-01-01T00:00:00Z"}])
    assert is_reduction(old, [{**old[0], "statement_date_end": "2023-12-31"}])
    assert not is_reduction(old, [{**old[0], "statement_date_end": "2024-01-02"}])
    assert not is_reduction(old, [{**old[0], "statement_date_end": "infinite"}])
    assert not is_reduction(old, [{**old[0], "statement_date_end": "2023-12-31T00:00:00Z"}])  # wrong kind
