"""Conformance with the CDS-WG1-01 / WG1-02 examples: the gateway's objects, fetched over HTTP, have the same keys
and JSON value types as the spec's example JSON (../shared/cds-examples, see its SOURCES.md).

Shape rules (``compare``):

* objects: the same keys, except the documented errata and the spec-required additions listed below;
* arrays: when both are non-empty, each of our elements against the shape of the example's elements (merged:
  the union of their keys, the first non-null value for each key);
* maps keyed by ids (``cds_scope_descriptions``, ``cds_registration_fields``): each of our values against the
  merged shape of the example's values; the keys themselves are ids and are not compared;
* scalars: the same JSON type; ``null`` in the example matches anything (the field is nullable), and our ``null``
  matches where the example or the spec shows the field as nullable.
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from gateway_helpers import gateway_client, make_config, register, token

EXAMPLES = Path(REPO).parent / "shared" / "cds-examples"
if not EXAMPLES.is_dir():
    pytest.skip(f"CDS examples not available ({EXAMPLES})", allow_module_level=True)

AS_METADATA = "wg1-02_oauth-authorization-server-metadata.json"
FIELDS = "$.cds_scope_descriptions.*.authorization_details_fields_supported[]"

# Keys our object has and the example lacks: documented errata (the example is wrong) or additions the spec (or
# an RFC the CDS profile relies on) requires of this server.
EXTRA_KEYS: dict[str, dict[str, str]] = {
    "wg1-01_server-metadata.json": {
        "$.oauth_metadata": "WG1-02 §3.1: REQUIRED with the `oauth` capability (the WG1-01 example has no OAuth)",
    },
    "legacy/cdsc-wg1-01_2025-03-07_server-metadata_carbon-data-spec-json.json": {
        "$.oauth_metadata": "WG1-02 §3.1: REQUIRED with the `oauth` capability",
    },
    "wg1-01_coverage-listing.json": {
        "$.coverage_entries[].country": "erratum (cds-spec.md §6.3): the example entry lacks the REQUIRED country",
    },
    "legacy/cdsc-wg1-01_2025-03-07_coverage-listing.json": {
        "$.coverage_entries[].country": "erratum: the example entry lacks the REQUIRED country",
    },
    AS_METADATA: {
        "$.cds_timezone": "erratum (§6.1 item 17, §6.3): REQUIRED by WG1-02 §3.2, absent from the example",
        "$.cds_scope_descriptions.*.registration_optional":
            "erratum (§6.1 item 17, §6.3): REQUIRED by WG1-02 §3.4, absent from the example's scopes",
        "$.cds_customerdata_version": "WG3-01 §5: REQUIRED of a server implementing CDS-WG3-01",
        **{f"$.{key}": "WG3-01 §5: the data-API URL of a listing this server serves (REQUIRED with the scopes "
                       "that include it)"
           for key in ("cds_accounts_api", "cds_servicecontracts_api", "cds_servicepoints_api",
                       "cds_meterdevices_api", "cds_billstatement_api", "cds_billsection_api",
                       "cds_usagesegments_api")},
        "$.cds_usagesegments_additional_value_types":
            "WG3-01 §5: REQUIRED with cds_usagesegments_api (the translation's server-defined value types)",
        "$.require_pushed_authorization_requests":
            "RFC 9126 §5: this server takes authorization requests only through PAR and must say so",
        "$.revocation_endpoint_auth_methods_supported": "RFC 8414 §2: stated explicitly (client_secret_basic only)",
        "$.introspection_endpoint_auth_methods_supported":
            "RFC 8414 §2: without it the introspection auth methods are unspecified",
        f"{FIELDS}.default": "WG1-02 §3.8 OPTIONAL `default`, which every WG3-01 consent-scope field carries",
        f"{FIELDS}.choices": "WG1-02 §3.8: REQUIRED for the choice formats of the WG3-01 consent-scope fields",
    },
    "wg1-02_client-registration-response.json": {
        "$.contacts": "erratum (§6.3): `contacts` is a REQUIRED Client field (WG1-02 §5.2), missing in the example",
    },
}

# Keys the example has and our object may lack.
MISSING_KEYS: dict[str, dict[str, str]] = {
    AS_METADATA: {
        "$.cds_server_provided_files_api":
            "WG1-02 §3.2: REQUIRED only with a cds_server_provided_files scope, which this server does not offer",
        f"{FIELDS}.maximum": "WG1-02 §3.8: only for limited formats (our boolean and choice fields have none)",
        f"{FIELDS}.minimum": "WG1-02 §3.8: only for limited formats (our boolean and choice fields have none)",
    },
    "wg1-02_token-response-client-admin.json": {
        "$.cds_grant_ids": "erratum (§6.3): the example returns cds_grant_ids for a pure client-admin token",
    },
}

# Example values left out of a merged shape because they are themselves errata.
IGNORED_EXAMPLE_VALUES: dict[str, dict[str, str]] = {
    AS_METADATA: {
        "$.cds_scope_descriptions.example_custom":
            "erratum (§6.3): lacks `type` and lists no RAR types although it is in the top-level "
            "authorization_details_types_supported",
        "$.cds_registration_fields.company_name":
            "referenced only by example_custom's registration_requirements (§6.3); this server defines only the "
            "internal_review field of its direct-access scopes",
    },
}

# Paths whose JSON type follows something else than the example shows.
TYPE_FREE = {
    f"{FIELDS}.maximum": "WG1-02 §3.9: the limit's type follows the field's format (number, or a duration)",
    f"{FIELDS}.minimum": "WG1-02 §3.9: as maximum",
    f"{FIELDS}.default": "WG1-02 §3.8: the default has the field's format",
}

# Fields the spec defines as nullable although the example shows a value.
NULLABLE = {
    "$.coverage_entries[].entity_abbreviation",  # WG1-01 §4.3 "string or null"
    "$.next", "$.previous",  # WG1-01 §4.2, WG1-02 list wrappers
    "$.token_endpoint_auth_method",  # WG1-02 §5.2 (nullable)
    "$.cds_scope_descriptions.*.grant_admin_scope",  # WG1-02 §3.4 "string or null"
}

ID_KEYED = {"$.cds_scope_descriptions", "$.cds_registration_fields"}


class Nullable:
    """A merged shape whose examples include ``null`` and a value."""

    def __init__(self, shape: Any) -> None:
        self.shape = shape


def json_type(value: Any) -> str:
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
    raise TypeError(type(value))


def merged(values: list[Any]) -> Any:
    """One shape standing for several example values (see the module docstring)."""
    present = [value for value in values if value is not None]
    if not present:
        return None
    if len(present) < len(values):
        return Nullable(merged(present))
    if all(isinstance(value, dict) for value in present):
        keys: list[str] = []
        for value in present:
            keys += [key for key in value if key not in keys]
        return {key: merged([value[key] for value in present if key in value]) for key in keys}
    if all(isinstance(value, list) for value in present):
        items = [item for value in present for item in value]
        return [merged(items)] if items else []
    return present[0]


def compare(ours: Any, example: Any, name: str, path: str = "$") -> list[str]:
    """Shape differences between ``ours`` and ``example`` (the example file ``name`` picks the exemptions)."""
    if example is None:
        return []
    if isinstance(example, Nullable):
        return [] if ours is None else compare(ours, example.shape, name, path)
    if ours is None and path in NULLABLE:
        return []
    if path in TYPE_FREE:
        return []
    if json_type(ours) != json_type(example):
        return [f"{path}: {json_type(ours)} where the example has {json_type(example)}"]
    problems: list[str] = []
    if isinstance(example, dict):
        if path in ID_KEYED:
            ignored = IGNORED_EXAMPLE_VALUES.get(name, {})
            values = [value for key, value in example.items() if f"{path}.{key}" not in ignored]
            template = merged(values)
            for value in ours.values():
                problems += compare(value, template, name, f"{path}.*") if template is not None else []
            return problems
        extra_ok, missing_ok = EXTRA_KEYS.get(name, {}), MISSING_KEYS.get(name, {})
        problems += [f"{path}.{key}: not in the example" for key in ours
                     if key not in example and f"{path}.{key}" not in extra_ok]
        problems += [f"{path}.{key}: missing" for key in example
                     if key not in ours and f"{path}.{key}" not in missing_ok]
        for key in example:
            if key in ours:
                problems += compare(ours[key], example[key], name, f"{path}.{key}")
    elif isinstance(example, list) and example and ours:
        template = merged(example)
        for item in ours:
            problems += compare(item, template, name, f"{path}[]")
    return problems


def load(name: str) -> Any:
    return json.loads((EXAMPLES / name).read_text(), parse_float=Decimal)


# ----------------------------------------------------------------------------------------------------------------
# The gateway side
# ----------------------------------------------------------------------------------------------------------------
FULL_ENTRY = """
[[coverage]]
id = "example-full"
entity_name = "Demo Gas & Electric"
entity_abbreviation = "DG&E"
country = "US"
name = "Western electric service territory"
description = "The electric service coverage for the western half of the region."
type = "geographic"
role = "official"
infrastructure_types = ["distribution_utility"]
commodity_types = ["electricity"]
capabilities = []
map_resource = "https://static.example.com/cds-coverage-map.png"
map_content_type = "image/png"
geojson_resource = "https://static.example.com/cds-coverage-map-geo.json"
created = "2022-06-01T00:00:00Z"
updated = "2022-06-01T00:00:00Z"
"""


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, Any]:
    """Every object under test, fetched once over HTTP from one gateway."""
    tmp_path = tmp_path_factory.mktemp("conformance")
    with gateway_client(make_config(tmp_path, extra_toml=FULL_ENTRY)) as client:
        def get(path: str, **kwargs: Any) -> Any:
            response = client.get(path, **kwargs)
            assert response.status_code == 200, (path, response.text)
            return response.json()

        metadata = get("/.well-known/cds-server-metadata.json")
        legacy = get("/.well-known/carbon-data-spec.json")
        coverage = get("/cds/coverage", params={"ids": "example-full"})
        oauth = get("/.well-known/oauth-authorization-server")
        response = client.post("/oauth/register", json={"scope": "cds_client_admin", "client_name": "My App Name"})
        assert response.status_code == 201, response.text  # RFC 7591 §3.2.1; the example shows 200 (§6.1 item 5)
        registration_response = response.json()
        registration = register(client)
        admin_token = token(client, registration.admin_auth, "cds_client_admin")
        client_metadata = get(registration.client_for("cds_usage_1")["cds_server_metadata"].replace(
            "http://localhost", ""), headers={"Authorization": f"Bearer {admin_token['access_token']}"})
    return {
        "wg1-01_server-metadata.json": metadata,
        "wg1-02_cds-server-metadata-with-oauth.json": metadata,
        "legacy/cdsc-wg1-01_2025-03-07_server-metadata_carbon-data-spec-json.json": legacy,
        "wg1-01_coverage-listing.json": coverage,
        "legacy/cdsc-wg1-01_2025-03-07_coverage-listing.json": coverage,
        AS_METADATA: oauth,
        "wg1-02_client-registration-response.json": registration_response,
        "wg1-02_token-response-client-admin.json": admin_token,
        "client-specific": client_metadata,
    }


CASES = [
    "wg1-01_server-metadata.json",
    "wg1-01_coverage-listing.json",
    "wg1-02_cds-server-metadata-with-oauth.json",
    AS_METADATA,
    "wg1-02_client-registration-response.json",
    "wg1-02_token-response-client-admin.json",
    "legacy/cdsc-wg1-01_2025-03-07_server-metadata_carbon-data-spec-json.json",
    "legacy/cdsc-wg1-01_2025-03-07_coverage-listing.json",
]


@pytest.mark.parametrize("name", CASES)
def test_same_shape_as_the_example(produced, name):
    assert sorted(set(compare(produced[name], load(name), name))) == []


def test_client_specific_metadata_has_the_example_shape(produced):
    name = "wg1-02_cds-server-metadata-with-oauth.json"
    assert sorted(set(compare(produced["client-specific"], load(name), name))) == []


def test_every_exemption_is_still_needed(produced):
    """An exemption that no longer matches anything (because the gateway or the examples changed) must go."""
    for name, table in EXTRA_KEYS.items():
        for path in table:
            parent, _, key = path.rpartition(".")
            assert key_exists(produced[name], parent, key), (name, path)
            assert not key_exists(load(name), parent, key), (name, path)
    for name, table in MISSING_KEYS.items():
        for path in table:
            parent, _, key = path.rpartition(".")
            assert key_exists(load(name), parent, key), (name, path)


def key_exists(document: Any, parent: str, key: str) -> bool:
    """Whether some object at ``parent`` (a compare() path: ``.*`` any map value, ``[]`` any element) has ``key``."""
    nodes = [document]
    for step in parent.removeprefix("$").replace("[]", ".[]").split(".")[1:] if parent != "$" else []:
        next_nodes: list[Any] = []
        for node in nodes:
            if step == "[]" and isinstance(node, list):
                next_nodes += node
            elif step == "*" and isinstance(node, dict):
                next_nodes += list(node.values())
            elif isinstance(node, dict) and step in node:
                next_nodes.append(node[step])
        nodes = next_nodes
    return any(isinstance(node, dict) and key in node for node in nodes)


def test_the_comparison_catches_differences():
    example = {"a": "x", "b": [{"c": 1}], "d": None}
    assert compare({"a": "y", "b": [{"c": 2}], "d": {"any": 1}}, example, "none") == []
    assert compare({"a": 1, "b": [], "d": None}, example, "none") == ["$.a: number where the example has string"]
    assert compare({"a": "y", "b": [{"c": "no"}], "d": 1, "e": 0}, example, "none") == [
        "$.e: not in the example", "$.b[].c: string where the example has number"]
    assert compare({"b": [], "d": None}, example, "none") == ["$.a: missing"]
    assert compare({"cds_scope_descriptions": {"x": {"v": 1}}}, {"cds_scope_descriptions": {"k": {"v": "s"}}},
                   "none") == ["$.cds_scope_descriptions.*.v: number where the example has string"]
    assert isinstance(merged([None, "s"]), Nullable)
    assert compare(None, merged([None, "s"]), "none") == [] and compare(1, merged([None, "s"]), "none") != []
