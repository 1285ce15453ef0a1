"""Scope Descriptions (cds/scopes.py) against CDS-WG1-02 §3.3–3.4, §3.8–3.10, CDS-WG3-01 §6–7 and the examples."""

from __future__ import annotations

import dataclasses
import json
from decimal import Decimal
from pathlib import Path

import pytest
from conftest import REPO

from cds.scopes import (
    DIRECT_ACCESS_TYPES,
    INTERNAL_REVIEW_ID,
    NO_DEFAULT,
    AuthorizationDetailsField,
    Choice,
    ScopeDescription,
    authorization_details_types_supported,
    build_scope_descriptions,
    code_challenge_methods_supported,
    grant_types_supported,
    metadata_json,
    oauth_metadata_unions,
    problems,
    registration_fields,
    response_types_supported,
    scope_ids_of_type,
    scopes_supported,
    token_endpoint_auth_methods_supported,
)

EXAMPLES = Path(REPO).parent / "shared" / "cds-examples"
WG1_METADATA = EXAMPLES / "wg1-02_oauth-authorization-server-metadata.json"
WG3_METADATA = EXAMPLES / "wg3-01_oauth-authorization-server-metadata.json"

SCOPE_KEYS = ["id", "type", "name", "description", "documentation", "registration_requirements",
              "registration_optional", "response_types_supported", "grant_types_supported",
              "token_endpoint_auth_methods_supported", "code_challenge_methods_supported", "coverages_supported",
              "grant_admin_scope", "authorization_details_types_supported", "authorization_details_fields_supported"]
FIELD_KEYS = ["id", "name", "description", "documentation", "for_types", "format", "is_required", "default",
              "maximum", "minimum", "choices"]
FIELD_REQUIRED_KEYS = {"id", "name", "description", "documentation", "for_types", "format", "is_required"}
CHOICE_KEYS = {"id", "name", "description", "documentation"}
CONSENT_IDS = ["cds_usage_1", "cds_meters_1", "cds_service_contracts_1", "cds_accounts_1", "cds_bill_statements_1",
               "cds_service_bills_1"]
DIRECT_IDS = ["cds_query_accounts_1", "cds_query_service_contracts_1", "cds_query_service_points_1",
              "cds_query_meter_devices_1", "cds_query_bill_statements_1", "cds_query_bill_sections_1",
              "cds_query_usage_1"]
# WG3-01 §6.2 (report §4.4 direct-access table): required fields, default-true fields.
DIRECT_REQUIRED = {
    "cds_query_accounts": {"sync_until"},
    "cds_query_service_contracts": {"sync_until"},
    "cds_query_service_points": {"sync_until"},
    "cds_query_meter_devices": {"sync_until"},
    "cds_query_bill_statements": {"sync_until", "statement_date_start", "statement_date_end"},
    "cds_query_bill_sections": {"sync_until", "start_date", "end_date"},
    "cds_query_usage": {"sync_until", "segment_start", "segment_end"},
}
DIRECT_DEFAULT_TRUE = {
    "cds_query_accounts": {"include_accounts"},
    "cds_query_service_contracts": {"include_accounts", "include_service_contracts"},
    "cds_query_service_points": {"include_service_points"},
    "cds_query_meter_devices": {"include_meter_devices"},
    "cds_query_bill_statements": {"include_bill_statements"},
    "cds_query_bill_sections": {"include_bill_sections"},
    "cds_query_usage": {"include_usage_segments", "include_usage_segment_value_types"},
}
DIRECT_PRESELECTIONS = {"account_numbers", "contract_numbers", "servicepoint_numbers", "meter_numbers", "addresses"}
COMMON = {"authorization_form_selection_type", "merge_selection_with", "error_if_no_preselections",
          "allow_scope_modifications", "jwk"}

# WG3-01 §6.1 (report §4.4): fields every scope of the type must offer, fields it must not offer, and the
# selection choices (must, may).
REQUIRED_FIELDS = {
    "cds_accounts": {"account_numbers", "include_account_numbers", "sync_until"},
    "cds_service_contracts": {"contract_numbers", "service_types", "include_contract_numbers", "sync_until"},
    "cds_meters": {"meter_numbers", "meter_types", "include_meter_numbers", "sync_until"},
    "cds_bill_statements": {"account_numbers", "statement_date_start", "statement_date_end"},
    "cds_service_bills": {"contract_numbers", "service_types", "start_date", "end_date"},
    "cds_usage": {"include_meter_devices", "include_meter_numbers", "include_usage_segment_value_types",
                  "segment_start", "segment_end"},
}
FORBIDDEN_FIELDS = {
    "cds_accounts": {"include_bill_statements", "include_bill_sections", "include_usage_segments"},
    "cds_service_contracts": {"include_bill_statements", "include_bill_sections", "include_usage_segments"},
    "cds_meters": {"include_bill_statements", "include_bill_sections", "include_usage_segments"},
    "cds_bill_statements": {"include_usage_segments"},
    "cds_service_bills": {"include_usage_segments"},
    "cds_usage": set(),
}
SELECTIONS = {
    "cds_accounts": ({"account_selection"}, set()),
    "cds_service_contracts": ({"service_contract_selection"}, {"account_selection"}),
    "cds_meters": ({"meter_device_selection"},
                   {"service_contract_selection", "account_selection", "servicepoint_selection"}),
    "cds_bill_statements": ({"account_selection"}, set()),
    "cds_service_bills": ({"service_contract_selection", "account_selection"}, set()),
    "cds_usage": (set(), {"account_selection", "service_contract_selection", "servicepoint_selection",
                          "meter_device_selection", "aggregation_selection"}),
}
# What each cds_usage selection choice additionally requires (WG3-01 §6.1.9).
USAGE_SELECTION_FIELDS = {
    "account_selection": {"sync_until", "account_numbers", "include_accounts", "include_account_numbers",
                          "include_service_contracts", "include_contract_numbers"},
    "service_contract_selection": {"sync_until", "account_numbers", "include_accounts", "include_account_numbers",
                                   "include_service_contracts", "include_contract_numbers", "contract_numbers"},
    "servicepoint_selection": {"sync_until", "servicepoint_numbers", "include_service_points"},
    "meter_device_selection": {"sync_until", "meter_numbers"},
    "aggregation_selection": {"sync_until", "aggregation_numbers", "include_aggregations"},
}
VALUE_FORMAT_UNITS = {
    "electric_usage": {"Wh", "kWh", "MWh"},
    "electric_demand": {"W", "kW", "MW"},
    "water_usage": {"m3", "L", "gal", "ft3", "CCF", "MCF", "MMCF"},
    "natural_gas_usage": {"Btu", "therm", "Sm3", "scf"},
}


def json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float, Decimal)):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    raise AssertionError(f"not a JSON value: {value!r}")


def example_scopes() -> list[dict]:
    scopes = []
    for path in (WG1_METADATA, WG3_METADATA):
        scopes += json.loads(path.read_text())["cds_scope_descriptions"].values()
    return scopes


def example_fields() -> list[dict]:
    return [fd for scope in example_scopes() for fd in scope["authorization_details_fields_supported"]]


def types_by_key(objects: list[dict]) -> dict[str, set[str]]:
    seen: dict[str, set[str]] = {}
    for obj in objects:
        for key, value in obj.items():
            seen.setdefault(key, set()).add(json_type(value))
    return seen


@pytest.fixture(scope="module")
def descriptions() -> dict[str, ScopeDescription]:
    return build_scope_descriptions(documentation_base="https://gateway.example/docs/", timezone="America/New_York",
                                    coverages=["coverage-1"])


@pytest.fixture(scope="module")
def published(descriptions) -> dict[str, dict]:
    # Through real JSON, as a client would read it.
    return json.loads(json.dumps(metadata_json(descriptions)))


def test_the_expected_scopes_are_built(descriptions):
    assert list(descriptions) == ["cds_client_admin", "cds_grant_admin_1", *CONSENT_IDS, *DIRECT_IDS]
    for scope_id, desc in descriptions.items():
        assert desc.id == scope_id
    assert descriptions["cds_usage_1"].type == "cds_usage"
    assert {descriptions[s].type for s in CONSENT_IDS} == set(REQUIRED_FIELDS)
    assert [descriptions[s].type for s in DIRECT_IDS] == list(DIRECT_ACCESS_TYPES) == list(DIRECT_REQUIRED)


def test_examples_have_the_scope_description_keys_modulo_errata():
    # Errata (report §6.3): the WG1-02 example omits the REQUIRED registration_optional everywhere and its
    # example_custom scope omits type. Everything else in the examples uses exactly the spec's keys.
    for scope in example_scopes():
        missing = set(SCOPE_KEYS) - set(scope)
        assert set(scope) <= set(SCOPE_KEYS)
        assert missing <= {"registration_optional", "type"}, scope["id"]


def test_scope_json_has_exactly_the_spec_keys_in_order_with_the_example_types(published):
    allowed = types_by_key(example_scopes())
    for scope_id, scope in published.items():
        assert list(scope) == SCOPE_KEYS, scope_id
        for key, value in scope.items():
            assert json_type(value) in allowed[key], (scope_id, key, value)
        for key in SCOPE_KEYS:
            if key.endswith("_supported") or key.startswith("registration_"):
                assert all(isinstance(item, (str, dict)) for item in scope[key])


def test_field_json_has_the_spec_keys_in_order_with_the_example_types(published):
    allowed = types_by_key(example_fields())
    assert set(allowed) == set(FIELD_KEYS)  # the examples use every field key
    count = 0
    for scope_id, scope in published.items():
        for fd in scope["authorization_details_fields_supported"]:
            count += 1
            assert FIELD_REQUIRED_KEYS <= set(fd) <= set(FIELD_KEYS), (scope_id, fd["id"])
            assert list(fd) == [key for key in FIELD_KEYS if key in fd]
            for key, value in fd.items():
                assert json_type(value) in allowed[key], (scope_id, fd["id"], key, value)
            for choice in fd.get("choices", []):
                assert CHOICE_KEYS <= set(choice) <= CHOICE_KEYS | {"usagesegment_format"}
                assert list(choice)[:4] == ["id", "name", "description", "documentation"]
    assert count > 100


def test_pkce_never_plain_and_s256_wherever_authorization_code(published):
    for scope in published.values():
        assert "plain" not in scope["code_challenge_methods_supported"]
        if "authorization_code" in scope["grant_types_supported"]:
            assert scope["code_challenge_methods_supported"] == ["S256"]
        else:
            assert scope["code_challenge_methods_supported"] == []
    assert "plain" not in code_challenge_methods_supported(published)


def test_built_in_scopes_have_the_fixed_values(published):
    wg3 = json.loads(WG3_METADATA.read_text())["cds_scope_descriptions"]
    wg1 = json.loads(WG1_METADATA.read_text())["cds_scope_descriptions"]
    mine = dict(published["cds_client_admin"], documentation=None)
    assert mine == dict(wg3["cds_client_admin"], documentation=None)

    admin = published["cds_grant_admin_1"]
    theirs = wg1["cds_grant_admin_1"]  # uses the scope id as the RAR type, as we do
    for key in ("type", "name", "description", "registration_requirements", "response_types_supported",
                "grant_types_supported", "token_endpoint_auth_methods_supported", "code_challenge_methods_supported",
                "coverages_supported", "grant_admin_scope", "authorization_details_types_supported"):
        assert admin[key] == theirs[key], key
    assert admin["registration_optional"] == []
    strip = ("description", "documentation")
    assert [{k: v for k, v in fd.items() if k not in strip} for fd in admin["authorization_details_fields_supported"]] \
        == [{k: v for k, v in fd.items() if k not in strip} for fd in theirs["authorization_details_fields_supported"]]


@pytest.mark.parametrize("scope_id", CONSENT_IDS)
def test_consent_scopes_follow_wg3_section_6(published, scope_id):
    scope = published[scope_id]
    scope_type = scope["type"]
    assert scope["response_types_supported"] == ["code"]
    assert scope["grant_types_supported"] == ["authorization_code", "refresh_token"]
    assert scope["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert scope["grant_admin_scope"] == "cds_grant_admin_1"
    assert scope["authorization_details_types_supported"] == [scope_id]
    assert scope["coverages_supported"] == ["coverage-1"]
    fields = {fd["id"]: fd for fd in scope["authorization_details_fields_supported"]}
    assert len(fields) == len(scope["authorization_details_fields_supported"])
    assert REQUIRED_FIELDS[scope_type] | COMMON <= set(fields)
    assert not FORBIDDEN_FIELDS[scope_type] & set(fields)
    for fd in fields.values():
        assert fd["for_types"] == [scope_id]
        assert fd["is_required"] is False  # WG3-01 §7: optional on consent scopes …
        assert "default" in fd  # … and every one has a default
        if fd["id"].startswith("include_") and fd["format"] == "boolean":
            assert isinstance(fd["default"], bool)

    selection = fields["authorization_form_selection_type"]
    offered = {choice["id"] for choice in selection["choices"]}
    must, may = SELECTIONS[scope_type]
    assert must <= offered <= must | may
    assert offered
    assert selection["default"] in offered
    if scope_type == "cds_usage":
        for choice in offered:
            assert USAGE_SELECTION_FIELDS[choice] <= set(fields), choice

    assert fields["merge_selection_with"]["format"] == "string_or_null"
    assert fields["merge_selection_with"]["default"] is None
    assert fields["error_if_no_preselections"]["default"] is False
    assert fields["allow_scope_modifications"]["default"] is False
    assert fields["jwk"] == {**fields["jwk"], "format": "jwk_or_null", "default": None}
    for fid in ("account_numbers", "contract_numbers", "meter_numbers", "servicepoint_numbers", "addresses"):
        if fid in fields:
            assert fields[fid]["format"] == "string_list_or_null"
            assert fields[fid]["default"] is None
            assert fields[fid]["maximum"] >= fields[fid]["minimum"] == 1


def test_base_access_defaults_true_and_extras_false(published):
    fields = {fd["id"]: fd for fd in published["cds_usage_1"]["authorization_details_fields_supported"]}
    assert fields["include_meter_devices"]["default"] is True
    assert fields["include_meter_numbers"]["default"] is True
    assert fields["include_bill_sections"]["default"] is False
    assert fields["include_service_point_addresses"]["default"] is False
    bills = {fd["id"]: fd for fd in published["cds_bill_statements_1"]["authorization_details_fields_supported"]}
    assert bills["include_accounts"]["default"] is True
    assert bills["include_account_numbers"]["default"] is True
    assert bills["include_bill_statement_charges"]["default"] is False
    accounts = {fd["id"]: fd for fd in published["cds_accounts_1"]["authorization_details_fields_supported"]}
    assert accounts["include_account_details"]["default"] is False


def test_duration_fields_limits_and_defaults():
    descriptions = build_scope_descriptions(documentation_base="https://g.example/docs", timezone="America/Chicago",
                                            segment_history="P25M", bill_history="P2Y", sync_until_default="P6M")
    usage = {fd.id: fd for fd in descriptions["cds_usage_1"].authorization_details_fields_supported}
    assert (usage["segment_start"].format, usage["segment_start"].maximum, usage["segment_start"].minimum) == \
        ("relative_or_absolute_datetime", "P25M", "PT0S")
    assert usage["segment_start"].default == "P25M"
    assert (usage["segment_end"].default, usage["segment_end"].maximum, usage["segment_end"].minimum) == \
        ("infinite", "infinite", "PT0S")
    assert (usage["sync_until"].default, usage["sync_until"].maximum) == ("P6M", "infinite")
    assert "America/Chicago" in usage["sync_until"].description
    bills = {fd.id: fd for fd in descriptions["cds_service_bills_1"].authorization_details_fields_supported}
    assert (bills["start_date"].format, bills["start_date"].maximum, bills["start_date"].minimum) == \
        ("relative_or_absolute_date", "P2Y", "P0D")
    assert bills["end_date"].default == "infinite"


def test_usage_value_type_choices_carry_value_formats(published):
    fields = {fd["id"]: fd for fd in published["cds_usage_1"]["authorization_details_fields_supported"]}
    value_types = fields["include_usage_segment_value_types"]
    assert value_types["format"] == "choice_list_or_null"
    formats = {}
    for choice in value_types["choices"]:
        fmt = choice["usagesegment_format"]
        assert fmt["id"] == choice["id"]
        formats[choice["id"]] = fmt
        if fmt["type"] in VALUE_FORMAT_UNITS:
            assert fmt["units"] in VALUE_FORMAT_UNITS[fmt["type"]]
    assert value_types["default"] == [choice["id"] for choice in value_types["choices"]]
    electric = {fmt["direction"] for fmt in formats.values() if fmt["type"] == "electric_usage"}
    assert electric == {"forward", "reverse", "net"}
    assert {fmt["demand_type"] for fmt in formats.values() if fmt["type"] == "electric_demand"} <= \
        {"peak", "average", "starting", "ending"}
    assert {fmt["type"] for fmt in formats.values()} == {"electric_usage", "electric_demand", "natural_gas_usage",
                                                         "water_usage", "cost"}
    cost = formats["cost"]
    assert cost == {"id": "cost", "type": "cost", "currency": "USD", "indexes": []}
    # usagesegment_format appears nowhere else (WG3-01 §5.2)
    for scope in published.values():
        for fd in scope["authorization_details_fields_supported"]:
            if fd["id"] != "include_usage_segment_value_types":
                assert all("usagesegment_format" not in choice for choice in fd.get("choices", []))


def test_our_descriptions_are_consistent(descriptions, published):
    assert problems(descriptions) == []
    assert problems(published) == []


def test_problems_finds_the_example_errata_and_broken_descriptions():
    wg3 = json.loads(WG3_METADATA.read_text())["cds_scope_descriptions"]
    found = problems(wg3)
    assert any("gas_monthly_01" in problem and "usagesegment_format" in problem for problem in found)
    broken = json.loads(json.dumps(wg3))
    broken["cds_usage_1"]["code_challenge_methods_supported"] = ["S256", "plain"]
    broken["cds_usage_1"]["grant_admin_scope"] = "nope"
    broken["cds_usage_1"]["authorization_details_fields_supported"][0]["for_types"] = ["other"]
    found = problems(broken)
    assert any("'plain'" in problem for problem in found)
    assert any("grant_admin_scope 'nope'" in problem for problem in found)
    assert any("for_types" in problem for problem in found)


def test_union_helpers(descriptions, published):
    for source in (descriptions, published):
        assert scopes_supported(source) == sorted(["cds_client_admin", "cds_grant_admin_1", *CONSENT_IDS,
                                                   *DIRECT_IDS])
        assert scopes_supported(source, extra=["openid"])[-1] == "openid"
        assert response_types_supported(source) == ["code"]
        assert grant_types_supported(source) == ["authorization_code", "client_credentials", "refresh_token"]
        assert token_endpoint_auth_methods_supported(source) == ["client_secret_basic"]
        assert code_challenge_methods_supported(source) == ["S256"]
        assert authorization_details_types_supported(source) == sorted(["cds_grant_admin_1", *CONSENT_IDS,
                                                                        *DIRECT_IDS])
        assert scope_ids_of_type(source, "cds_grant_admin") == ["cds_grant_admin_1"]
        assert scope_ids_of_type(source, "cds_usage") == ["cds_usage_1"]
        assert scope_ids_of_type(source, "cds_query_usage") == ["cds_query_usage_1"]
        assert scope_ids_of_type(source, "cds_query_aggregations") == []
    unions = oauth_metadata_unions(descriptions)
    assert list(unions) == ["scopes_supported", "response_types_supported", "grant_types_supported",
                            "token_endpoint_auth_methods_supported", "code_challenge_methods_supported",
                            "authorization_details_types_supported"]
    # The unions cover every per-scope value (WG1-02 §3.2).
    for scope in published.values():
        for key in unions:
            if key != "scopes_supported":
                assert set(scope[key]) <= set(unions[key])


def test_metadata_json_is_keyed_by_id_and_serialisable(descriptions):
    data = metadata_json(descriptions)
    assert list(data) == list(descriptions)
    assert all(value["id"] == key for key, value in data.items())
    assert json.loads(json.dumps(data)) == data
    assert metadata_json(build_scope_descriptions(documentation_base="https://gateway.example/docs",
                                                  timezone="America/New_York", coverages=["coverage-1"])) == data


def test_documentation_urls_use_the_base(published):
    for scope in published.values():
        assert scope["documentation"].startswith("https://gateway.example/docs/scopes#")
        for fd in scope["authorization_details_fields_supported"]:
            assert fd["documentation"].startswith("https://gateway.example/docs/")
            assert "//" not in fd["documentation"].removeprefix("https://")


def test_objects_are_frozen_and_to_json_writes_optional_keys_only_when_set():
    bare = AuthorizationDetailsField("x", "X", "d", "https://d", ("t",), "string", True, maximum=5, minimum=1)
    assert bare.default is NO_DEFAULT and not bare.has_default
    assert "default" not in bare.to_json() and "choices" not in bare.to_json()
    nullable = AuthorizationDetailsField("y", "Y", "d", "https://d", ["t"], "string_or_null", False, default=None,
                                         maximum=5, minimum=1)
    assert nullable.to_json()["default"] is None
    assert nullable.to_json()["for_types"] == ["t"]
    listed = AuthorizationDetailsField("z", "Z", "d", "https://d", ("t",), "choice_list", False, default=["a"],
                                       choices=[Choice("a", "A", "a", "https://d")])
    assert listed.to_json()["default"] == ["a"] and listed.to_json()["choices"][0] == {
        "id": "a", "name": "A", "description": "a", "documentation": "https://d"}
    assert "maximum" not in listed.to_json()
    with pytest.raises(dataclasses.FrozenInstanceError):
        bare.maximum = 9  # type: ignore[misc]
    choice = Choice("c", "C", "c", "https://d", {"id": "c", "type": "cost", "currency": "EUR", "indexes": []})
    with pytest.raises(TypeError):
        choice.usagesegment_format["currency"] = "USD"  # type: ignore[index]
    assert choice.to_json()["usagesegment_format"]["indexes"] == []
    assert repr(NO_DEFAULT) == "NO_DEFAULT"


def test_descriptions_helpers(descriptions):
    usage = descriptions["cds_usage_1"]
    assert usage.is_consent and not descriptions["cds_grant_admin_1"].is_consent
    assert usage.field("segment_start").id == "segment_start"
    assert usage.field("nope") is None
    assert len(usage.fields_for_type("cds_usage_1")) == len(usage.authorization_details_fields_supported)
    assert usage.fields_for_type("other") == []


@pytest.mark.parametrize("kwargs", [
    {"timezone": "Mars/Olympus_Mons"},
    {"segment_history": "3 years"},
    {"bill_history": "P1DT2H"},
    {"sync_until_default": "P"},
])
def test_build_rejects_bad_configuration(kwargs):
    options = {"documentation_base": "https://g.example", "timezone": "America/New_York", **kwargs}
    with pytest.raises(ValueError):
        build_scope_descriptions(**options)


# ----------------------------------------------------------------------------------------------------------------
# Direct-access scopes (WG3-01 §6.2)
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scope_id", DIRECT_IDS)
def test_direct_access_scopes_follow_wg3_section_6_2(published, scope_id):
    scope = published[scope_id]
    scope_type = scope["type"]
    assert scope_type == scope_id.removesuffix("_1")
    assert scope["response_types_supported"] == []  # MUST be [] (§6.2): no authorization request
    assert scope["grant_types_supported"] == ["client_credentials"]
    assert scope["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert scope["code_challenge_methods_supported"] == []  # no authorization_code, so no PKCE (WG1-02 §3.4)
    assert scope["grant_admin_scope"] is None  # tokens come from the client's own credentials, never Grant Admin
    assert scope["registration_requirements"] == [INTERNAL_REVIEW_ID]
    assert scope["registration_optional"] == []
    assert scope["authorization_details_types_supported"] == [scope_id]
    assert scope["coverages_supported"] == ["coverage-1"]
    fields = {fd["id"]: fd for fd in scope["authorization_details_fields_supported"]}
    assert len(fields) == len(scope["authorization_details_fields_supported"])
    for fd in fields.values():
        assert fd["for_types"] == [scope_id]
    # The §6.2 "required" fields: offered, and required in the token request (no default; WG1-02 §3.8).
    for fid in DIRECT_REQUIRED[scope_type]:
        assert fields[fid]["is_required"] is True and "default" not in fields[fid], fid
        assert "maximum" in fields[fid] and "minimum" in fields[fid]
        assert "first token request" in fields[fid]["description"]
    assert {fid for fid, fd in fields.items() if fd["is_required"]} == DIRECT_REQUIRED[scope_type]
    # Default-true fields of the table are true; the extra include fields are off (PII off by default).
    for fid, fd in fields.items():
        if fid == "include_usage_segment_value_types":
            assert fd["default"] == [choice["id"] for choice in fd["choices"]]
        elif fid.startswith("include_"):
            assert fd["format"] == "boolean"
            assert fd["default"] is (fid in DIRECT_DEFAULT_TRUE[scope_type]), fid
    assert DIRECT_DEFAULT_TRUE[scope_type] <= set(fields)
    # Preselection: the objects a client may name, as string_list_or_null defaulting to null (no filter).
    assert set(fields) >= DIRECT_PRESELECTIONS
    for fid in DIRECT_PRESELECTIONS:
        assert (fields[fid]["format"], fields[fid]["default"], fields[fid]["minimum"]) == \
            ("string_list_or_null", None, 1)
        assert "_all" not in fields[fid]["description"]
    # Not offered without response_types (WG3-01 §7.4), nor data Green Button lacks.
    assert not set(fields) & (COMMON - {"error_if_no_preselections", "jwk"})
    assert not set(fields) & {"premise_numbers", "aggregation_numbers", "include_aggregations", "include_premises",
                              "include_eacs", "include_coordinates"}


def test_direct_access_value_types_match_the_consent_usage_scope(published):
    direct = {fd["id"]: fd for fd in published["cds_query_usage_1"]["authorization_details_fields_supported"]}
    consent = {fd["id"]: fd for fd in published["cds_usage_1"]["authorization_details_fields_supported"]}
    ours, theirs = direct["include_usage_segment_value_types"], consent["include_usage_segment_value_types"]
    assert ours["choices"] == theirs["choices"] and ours["default"] == theirs["default"]
    assert ours["for_types"] == ["cds_query_usage_1"]


def test_registration_fields_cover_every_referenced_id(descriptions):
    fields = registration_fields(descriptions, documentation_base="https://gateway.example/docs/")
    assert list(fields) == [INTERNAL_REVIEW_ID]
    assert fields[INTERNAL_REVIEW_ID] == {**fields[INTERNAL_REVIEW_ID], "id": INTERNAL_REVIEW_ID,
                                         "type": "internal_review",
                                         "documentation": "https://gateway.example/docs#support"}
    assert set(fields[INTERNAL_REVIEW_ID]) == {"id", "type", "description", "documentation"}
    consent_only = {scope_id: descriptions[scope_id] for scope_id in ["cds_client_admin", *CONSENT_IDS]}
    assert registration_fields(consent_only, documentation_base="https://g.example") == {}
    stranger = json.loads(json.dumps(metadata_json(descriptions)))
    stranger["cds_usage_1"]["registration_optional"] = ["cds_invite_code"]
    with pytest.raises(ValueError, match="cds_invite_code"):
        registration_fields(stranger, documentation_base="https://g.example")


def test_problems_checks_direct_access_rules(published):
    broken = json.loads(json.dumps(published))
    broken["cds_query_usage_1"]["grant_types_supported"] = ["authorization_code"]
    fields = broken["cds_query_meter_devices_1"]["authorization_details_fields_supported"]
    fields.append({**fields[-1], "id": "merge_selection_with"})
    found = problems(broken)
    assert any("cds_query_usage_1" in problem and "client_credentials" in problem for problem in found)
    assert any("cds_query_meter_devices_1" in problem and "merge_selection_with" in problem for problem in found)
