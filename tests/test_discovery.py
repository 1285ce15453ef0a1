"""Discovery: CDS-WG1-01 server metadata and coverage, RFC 8414 metadata (WG1-02 §3), per-client metadata (§5.2),
and the human pages they link to (cds/metadata.py, gateway/routes/discovery.py)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from gateway_helpers import bearer, gateway_client, make_config, register, token

from cds.metadata import (
    InvalidCursor,
    client_scope_descriptions,
    coverage_listing,
    etag,
    oauth_metadata,
    server_capabilities,
    server_metadata,
)
from cds.urls import Urls

WELL_KNOWN = "/.well-known/cds-server-metadata.json"
LEGACY = "/.well-known/carbon-data-spec.json"
OAUTH = "/.well-known/oauth-authorization-server"
COVERAGE = "/cds/coverage"
RFC3339_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")

METADATA_FIELDS = ["cds_metadata_version", "cds_metadata_url", "created", "updated", "name", "description",
                   "website", "documentation", "support", "capabilities", "coverage", "oauth_metadata"]
ENTRY_REQUIRED = {"id", "created", "updated", "entity_name", "entity_abbreviation", "country", "name", "type",
                  "role", "infrastructure_types", "commodity_types", "capabilities"}
ENTRY_OPTIONAL = {"description", "map_resource", "map_content_type", "geojson_resource"}

# Three more entries: a tie on `updated` with demo-gas (broken by id), the newest one, and one with every optional
# field and an extension capability (for the union rule).
MORE_COVERAGE = """
[[coverage]]
id = "demo-aa-water"
entity_name = "Demo Water"
country = "US"
name = "Water customers"
type = "logical"
role = "official"
commodity_types = ["water"]
capabilities = []
created = "2025-06-01T00:00:00Z"
updated = "2026-02-01T00:00:00Z"

[[coverage]]
id = "demo-full"
entity_name = "Demo Gas & Electric"
entity_abbreviation = "DG&E"
country = "CA"
name = "Northern territory"
description = "Everything optional is configured here."
type = "geographic"
role = "authoritative"
infrastructure_types = ["distribution_utility", "metering_provider"]
commodity_types = ["electricity", "natural_gas"]
capabilities = ["oauth", "examplespec_widgets"]
map_resource = "https://static.example.com/north.png"
map_content_type = "image/png"
geojson_resource = "https://static.example.com/north.geojson"
created = "2025-01-01T00:00:00Z"
updated = "2026-04-01T12:30:00Z"
"""
# Newest first; demo-aa-water and demo-gas share `updated`, so id order decides.
ALL_IDS = ["demo-full", "demo-electric", "demo-aa-water", "demo-gas"]


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path, extra_toml=MORE_COVERAGE)


@pytest.fixture
def client(config):
    with gateway_client(config) as test_client:
        yield test_client


def _ids(listing: dict) -> list[str]:
    return [entry["id"] for entry in listing["coverage_entries"]]


def _local(url: str) -> str:
    parts = urlsplit(url)
    assert parts.scheme == "http" and parts.netloc == "localhost", url
    return parts.path + ("?" + parts.query if parts.query else "")


# ----------------------------------------------------------------------------------------------------------------
# Server metadata (WG1-01 §3)
# ----------------------------------------------------------------------------------------------------------------
def test_server_metadata_has_every_required_field(client, config):
    response = client.get(WELL_KNOWN)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert list(body) == METADATA_FIELDS
    urls = Urls(config.issuer)
    assert body["cds_metadata_version"] == "v1"
    assert body["cds_metadata_url"] == urls.server_metadata == "http://localhost/.well-known/cds-server-metadata.json"
    assert body["created"] == "2026-01-01T00:00:00Z" and RFC3339_Z.match(body["updated"])
    assert body["name"] == config.server.name and body["description"] == config.server.description
    assert body["website"] == "http://localhost/"
    assert body["documentation"] == "http://localhost/docs"
    assert body["support"] == "http://localhost/docs#support"
    assert body["coverage"] == urls.coverage and body["oauth_metadata"] == urls.oauth_metadata
    assert {"coverage", "oauth"} <= set(body["capabilities"])


def test_both_well_known_paths_serve_the_identical_object(client):
    new, old = client.get(WELL_KNOWN), client.get(LEGACY)
    assert new.status_code == old.status_code == 200
    assert new.json() == old.json()
    assert new.content == old.content and new.headers["etag"] == old.headers["etag"]
    assert old.json()["cds_metadata_url"].endswith(WELL_KNOWN)


def test_capabilities_are_base_plus_union_of_coverage_capabilities(client, config):
    capabilities = client.get(WELL_KNOWN).json()["capabilities"]
    assert capabilities == ["coverage", "examplespec_widgets", "oauth"]
    for entry in client.get(COVERAGE).json()["coverage_entries"]:
        assert set(entry["capabilities"]) <= set(capabilities)
        assert "coverage" not in entry["capabilities"]
    assert server_capabilities([]) == ["coverage", "oauth"]
    assert server_capabilities([{"capabilities": ["zz"]}, {"capabilities": ["aa", "oauth"]}, {}]) == [
        "aa", "coverage", "oauth", "zz"]


def test_server_metadata_function_is_plain_and_deterministic(config):
    urls = Urls("https://gateway.example/")
    first = server_metadata(config, urls)
    assert first == server_metadata(config, urls)
    assert first["cds_metadata_url"] == "https://gateway.example/.well-known/cds-server-metadata.json"
    custom = server_metadata(config, urls, metadata_url="https://gateway.example/m", oauth_metadata_url="https://o")
    assert custom["cds_metadata_url"] == "https://gateway.example/m" and custom["oauth_metadata"] == "https://o"


def test_head_and_wrong_method(client):
    assert client.head(WELL_KNOWN).status_code == 200
    assert client.post(WELL_KNOWN).status_code == 405


# ----------------------------------------------------------------------------------------------------------------
# Coverage (WG1-01 §4)
# ----------------------------------------------------------------------------------------------------------------
def test_coverage_newest_first_with_ties_by_id(client):
    listing = client.get(COVERAGE).json()
    assert list(listing) == ["coverage_entries", "next", "previous"]
    assert _ids(listing) == ALL_IDS
    assert listing["next"] is None and listing["previous"] is None
    updated = [entry["updated"] for entry in listing["coverage_entries"]]
    assert updated == sorted(updated, reverse=True)


def test_coverage_entries_have_exactly_the_spec_fields(client, config):
    entries = {entry["id"]: entry for entry in client.get(COVERAGE).json()["coverage_entries"]}
    for entry in entries.values():
        assert ENTRY_REQUIRED <= set(entry) <= ENTRY_REQUIRED | ENTRY_OPTIONAL
        assert RFC3339_Z.match(entry["created"]) and RFC3339_Z.match(entry["updated"])
    assert entries["demo-gas"]["entity_abbreviation"] is None
    assert set(entries["demo-gas"]) == ENTRY_REQUIRED  # nothing optional configured
    assert set(entries["demo-electric"]) == ENTRY_REQUIRED | {"geojson_resource"}
    full = entries["demo-full"]
    assert set(full) == ENTRY_REQUIRED | ENTRY_OPTIONAL
    assert full == {
        "id": "demo-full", "created": "2025-01-01T00:00:00Z", "updated": "2026-04-01T12:30:00Z",
        "entity_name": "Demo Gas & Electric", "entity_abbreviation": "DG&E", "country": "CA",
        "name": "Northern territory", "description": "Everything optional is configured here.",
        "type": "geographic", "role": "authoritative",
        "infrastructure_types": ["distribution_utility", "metering_provider"],
        "commodity_types": ["electricity", "natural_gas"], "capabilities": ["oauth", "examplespec_widgets"],
        "map_resource": "https://static.example.com/north.png", "map_content_type": "image/png",
        "geojson_resource": "https://static.example.com/north.geojson",
    }


def test_coverage_ids_filter(client):
    assert _ids(client.get(COVERAGE, params={"ids": "demo-gas"}).json()) == ["demo-gas"]
    assert _ids(client.get(COVERAGE + "?ids=demo-gas%20demo-full").json()) == ["demo-full", "demo-gas"]
    assert _ids(client.get(COVERAGE + "?ids=demo-gas+demo-electric").json()) == ["demo-electric", "demo-gas"]
    assert _ids(client.get(COVERAGE, params={"ids": "demo-gas nope"}).json()) == ["demo-gas"]
    unknown = client.get(COVERAGE, params={"ids": "nope other"})
    assert unknown.status_code == 200
    assert unknown.json() == {"coverage_entries": [], "next": None, "previous": None}
    assert _ids(client.get(COVERAGE, params={"ids": "  "}).json()) == ALL_IDS  # blank: no filter


def _walk(client, url: str, link: str) -> tuple[list[list[str]], str]:
    pages, last = [], url
    seen_urls = set()
    while url:
        assert url not in seen_urls
        seen_urls.add(url)
        response = client.get(_local(url))
        assert response.status_code == 200, response.text
        body = response.json()
        pages.append(_ids(body))
        last = url
        url = body[link]
    return pages, last


def test_coverage_pagination_walks_forward_and_back(tmp_path):
    config = make_config(tmp_path, extra_toml=MORE_COVERAGE, page_size=1)
    with gateway_client(config) as client:
        first = client.get(COVERAGE).json()
        assert len(first["coverage_entries"]) == 1 and first["previous"] is None
        assert first["next"].startswith("http://localhost/cds/coverage?")
        forward, last_url = _walk(client, "http://localhost" + COVERAGE, "next")
        assert forward == [[entry_id] for entry_id in ALL_IDS]
        backward, _ = _walk(client, last_url, "previous")
        assert [page[0] for page in backward] == list(reversed(ALL_IDS))
        assert client.get(_local(last_url)).json()["next"] is None


def test_coverage_pagination_keeps_the_filter_and_page_size(tmp_path):
    config = make_config(tmp_path, extra_toml=MORE_COVERAGE, page_size=2)
    with gateway_client(config) as client:
        wanted = ["demo-gas", "demo-full", "demo-electric"]
        first = client.get(COVERAGE, params={"ids": " ".join(wanted)}).json()
        assert _ids(first) == ["demo-full", "demo-electric"]
        query = parse_qs(urlsplit(first["next"]).query)
        assert query["ids"] == [" ".join(wanted)] and "%20" in first["next"]
        second = client.get(_local(first["next"])).json()
        assert _ids(second) == ["demo-gas"] and second["next"] is None
        back = client.get(_local(second["previous"])).json()
        assert _ids(back) == ["demo-full", "demo-electric"] and back["previous"] is None


def test_coverage_listing_function_edges(config):
    urls = Urls("https://gateway.example")
    entries = config.coverage
    full = coverage_listing(entries, page_size=100, urls=urls)
    assert _ids(full) == ALL_IDS
    page = coverage_listing(entries, page_size=3, urls=urls)
    assert _ids(page) == ALL_IDS[:3] and page["next"].startswith("https://gateway.example/cds/coverage?cursor=")
    cursor = parse_qs(urlsplit(page["next"]).query)["cursor"][0]
    rest = coverage_listing(entries, cursor=cursor, page_size=3, urls=urls)
    assert _ids(rest) == ALL_IDS[3:] and rest["next"] is None
    # Cursors stay valid when entries disappear: past the end, an empty page links back to the last page;
    # before the start, an empty page links forward to the first page.
    without_last = [entry for entry in entries if entry["id"] != ALL_IDS[-1]]
    beyond = coverage_listing(without_last, cursor=cursor, page_size=3, urls=urls)
    assert beyond["coverage_entries"] == [] and beyond["next"] is None
    back = parse_qs(urlsplit(beyond["previous"]).query)["cursor"][0]
    assert _ids(coverage_listing(without_last, cursor=back, page_size=3, urls=urls)) == ALL_IDS[:3]
    before_cursor = parse_qs(urlsplit(rest["previous"]).query)["cursor"][0]
    only_last = [entry for entry in entries if entry["id"] == ALL_IDS[-1]]
    before = coverage_listing(only_last, cursor=before_cursor, page_size=3, urls=urls)
    assert before == {"coverage_entries": [], "next": "https://gateway.example/cds/coverage", "previous": None}
    assert coverage_listing([], page_size=1, urls=urls) == {"coverage_entries": [], "next": None, "previous": None}
    with pytest.raises(ValueError):
        coverage_listing(entries, page_size=0, urls=urls)


@pytest.mark.parametrize("cursor", ["garbage!!", "e30", "WyJ4IiwxLCJhIl0", "WyJhIiwiMSIsImEiXQ", "W10", "bnVsbA",
                                    "WyJhIix0cnVlLCJhIl0"])
def test_invalid_cursor_is_400(client, cursor):
    response = client.get(COVERAGE, params={"cursor": cursor})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert response.headers["access-control-allow-origin"] == "*"
    with pytest.raises(InvalidCursor):
        coverage_listing([], cursor=cursor, page_size=1, urls=Urls("https://x"))


# ----------------------------------------------------------------------------------------------------------------
# Caching, ETag, CORS
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", [WELL_KNOWN, LEGACY, COVERAGE, OAUTH])
def test_public_documents_are_cacheable_with_etag_and_cors(client, path):
    response = client.get(path)
    assert response.status_code == 200
    assert response.headers["cache-control"] == "public, max-age=300"
    assert response.headers["access-control-allow-origin"] == "*"
    tag = response.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{64}"', tag)
    assert tag == etag(response.json())
    for header in (tag, "W/" + tag, f'"other", {tag}', "*"):
        again = client.get(path, headers={"If-None-Match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == tag and again.headers["cache-control"] == "public, max-age=300"
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200


def test_etag_is_canonical_and_content_sensitive():
    assert etag({"a": 1, "b": [1, 2]}) == etag({"b": [1, 2], "a": 1})
    assert etag({"a": 1}) != etag({"a": 2})
    assert etag({"a": [1, 2]}) != etag({"a": [2, 1]})


def test_coverage_pages_have_different_etags(tmp_path):
    with gateway_client(make_config(tmp_path, page_size=1)) as client:
        first = client.get(COVERAGE)
        second = client.get(_local(first.json()["next"]))
        assert first.headers["etag"] != second.headers["etag"]


# ----------------------------------------------------------------------------------------------------------------
# Authorization Server Metadata (WG1-02 §3.2, WG3-01 §5)
# ----------------------------------------------------------------------------------------------------------------
REQUIRED_OAUTH = ["issuer", "authorization_endpoint", "token_endpoint", "registration_endpoint",
                  "revocation_endpoint", "introspection_endpoint", "pushed_authorization_request_endpoint",
                  "require_pushed_authorization_requests", "scopes_supported", "response_types_supported",
                  "grant_types_supported", "token_endpoint_auth_methods_supported",
                  "revocation_endpoint_auth_methods_supported", "introspection_endpoint_auth_methods_supported",
                  "code_challenge_methods_supported", "authorization_details_types_supported",
                  "service_documentation", "op_policy_uri", "op_tos_uri", "cds_oauth_version",
                  "cds_human_registration", "cds_timezone", "cds_clients_api", "cds_messages_api",
                  "cds_credentials_api", "cds_grants_api", "cds_test_accounts", "cds_scope_descriptions",
                  "cds_registration_fields", "cds_customerdata_version", "cds_accounts_api",
                  "cds_servicecontracts_api", "cds_servicepoints_api", "cds_meterdevices_api", "cds_billstatement_api",
                  "cds_billsection_api", "cds_usagesegments_api", "cds_usagesegments_additional_value_types"]
DATA_APIS = {"cds_accounts_api": "accounts", "cds_servicecontracts_api": "service_contracts",
             "cds_servicepoints_api": "service_points", "cds_meterdevices_api": "meter_devices",
             "cds_billstatement_api": "bill_statements", "cds_billsection_api": "bill_sections",
             "cds_usagesegments_api": "usage_segments"}


def _check_unions(body: dict) -> None:
    descriptions = body["cds_scope_descriptions"]
    for key, value in descriptions.items():
        assert value["id"] == key
        assert key in body["scopes_supported"]
    for field in ("response_types_supported", "grant_types_supported", "token_endpoint_auth_methods_supported",
                  "code_challenge_methods_supported", "authorization_details_types_supported"):
        union = {item for desc in descriptions.values() for item in desc[field]}
        assert union <= set(body[field]), field
    assert "plain" not in body["code_challenge_methods_supported"]
    assert body["code_challenge_methods_supported"] == ["S256"]
    for desc in descriptions.values():
        assert "plain" not in desc["code_challenge_methods_supported"]
        admin = desc["grant_admin_scope"]
        assert admin is None or descriptions[admin]["type"] == "cds_grant_admin"


def test_oauth_metadata_fields_and_values(client, config):
    body = client.get(OAUTH).json()
    assert list(body) == REQUIRED_OAUTH
    urls = Urls(config.issuer)
    assert body["issuer"] == "http://localhost"
    assert body["authorization_endpoint"] == urls.authorization_endpoint
    assert body["token_endpoint"] == urls.token_endpoint
    assert body["registration_endpoint"] == urls.registration_endpoint
    assert body["revocation_endpoint"] == urls.revocation_endpoint
    assert body["introspection_endpoint"] == urls.introspection_endpoint
    assert body["pushed_authorization_request_endpoint"] == urls.par_endpoint
    assert body["require_pushed_authorization_requests"] is True
    assert body["revocation_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert body["introspection_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert body["token_endpoint_auth_methods_supported"] == ["client_secret_basic"]
    assert body["response_types_supported"] == ["code"]
    assert set(body["grant_types_supported"]) == {"authorization_code", "client_credentials", "refresh_token"}
    assert body["cds_oauth_version"] == "v1" and body["cds_customerdata_version"] == "v1"
    assert body["cds_timezone"] == config.timezone
    assert body["cds_human_registration"] == "http://localhost/register"
    assert body["cds_test_accounts"] == urls.test_accounts
    assert body["cds_clients_api"] == urls.clients_api and body["cds_grants_api"] == urls.grants_api
    assert body["cds_messages_api"] == urls.messages_api and body["cds_credentials_api"] == urls.credentials_api
    assert body["service_documentation"] == config.server.documentation
    assert body["op_policy_uri"] == config.server.op_policy_uri
    assert body["op_tos_uri"] == config.server.op_tos_uri
    # The direct-access scopes' internal review is the only registration field (WG1-02 §3.2: every referenced id).
    assert list(body["cds_registration_fields"]) == ["cds_internal_review"]
    assert body["cds_registration_fields"]["cds_internal_review"]["type"] == "internal_review"
    referenced = {field for desc in body["cds_scope_descriptions"].values()
                  for field in desc["registration_requirements"] + desc["registration_optional"]}
    assert referenced == set(body["cds_registration_fields"])
    # WG3-01 §5: the seven listings served; no aggregations or EACs (Green Button has none).
    assert {key: body[key] for key in DATA_APIS} == {key: urls.data_api(name) for key, name in DATA_APIS.items()}
    assert not [key for key in body if key.startswith("cds_") and key.endswith("_api") and key not in (
        "cds_clients_api", "cds_messages_api", "cds_credentials_api", "cds_grants_api", *DATA_APIS)]
    value_types = body["cds_usagesegments_additional_value_types"]
    assert value_types and all(key.startswith("greenbridge_") for key in value_types)
    for key, description in value_types.items():
        assert list(description) == ["type", "name", "description", "documentation"] and description["type"] == key
    gateway = client.app.state.gateway
    assert set(body["cds_scope_descriptions"]) == set(gateway.descriptions)
    assert body["scopes_supported"] == sorted(body["scopes_supported"])
    coverage_ids = {entry["id"] for entry in client.get(COVERAGE).json()["coverage_entries"]}
    for desc in body["cds_scope_descriptions"].values():
        assert set(desc["coverages_supported"]) <= coverage_ids
    _check_unions(body)


def test_oauth_metadata_passes_authlib_validation(client, config):
    body = client.get(OAUTH).json()
    AuthorizationServerMetadata(body).validate()
    https = config.with_overrides(issuer="https://gateway.example")
    urls = Urls(https.issuer)
    descriptions = client.app.state.gateway.descriptions
    document = oauth_metadata(https, urls, descriptions)
    AuthorizationServerMetadata(document).validate()
    assert document["issuer"] == "https://gateway.example"
    per_client = oauth_metadata(https, urls, descriptions, client_scopes=["cds_usage_1"])
    AuthorizationServerMetadata(per_client).validate()


def test_client_scope_descriptions_adds_the_grant_admin_scope(client):
    descriptions = client.app.state.gateway.descriptions
    assert list(client_scope_descriptions(descriptions, ["cds_usage_1"])) == ["cds_grant_admin_1", "cds_usage_1"]
    assert list(client_scope_descriptions(descriptions, ["cds_client_admin", "unknown"])) == ["cds_client_admin"]
    assert client_scope_descriptions(descriptions, []) == {}


def test_linked_human_pages_and_documentation_resolve(client):
    body = client.get(OAUTH).json()
    for key in ("cds_human_registration", "cds_test_accounts", "service_documentation", "op_policy_uri",
                "op_tos_uri"):
        assert client.get(_local(body[key].split("#")[0])).status_code == 200, key
    docs = client.get("/docs").text
    for anchor in ("support", "policy", "terms"):
        assert f'id="{anchor}"' in docs
    # Every documentation URL inside the scope descriptions resolves to a page holding its anchor.
    pages: dict[str, str] = {}
    found = []

    def walk(value):
        if isinstance(value, dict):
            if isinstance(value.get("documentation"), str):
                found.append(value["documentation"])
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(body["cds_scope_descriptions"])
    assert found
    for url in found:
        path, _, anchor = url.partition("#")
        if path not in pages:
            response = client.get(_local(path))
            assert response.status_code == 200, url
            pages[path] = response.text
        assert f'id="{anchor}"' in pages[path], url
    assert client.get("/docs/no-such-page").status_code == 404


# ----------------------------------------------------------------------------------------------------------------
# Client-specific metadata (WG1-02 §5.2 cds_server_metadata)
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture
def two_registrations(client):
    mine = register(client)
    other = register(client)
    admin_token = token(client, mine.admin_auth, "cds_client_admin")["access_token"]
    return mine, other, admin_token


def test_client_metadata_requires_a_client_admin_token(client, two_registrations):
    mine, _other, _token = two_registrations
    client_id = mine.client_for("cds_usage_1")["client_id"]
    for suffix in ("cds-server-metadata", "oauth-metadata"):
        path = f"/cds-api/v1/clients/{client_id}/{suffix}"
        missing = client.get(path)
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        invalid = client.get(path, headers=bearer("not-a-token"))
        assert invalid.status_code == 401 and 'error="invalid_token"' in invalid.headers["www-authenticate"]
        basic = client.get(path, auth=mine.admin_auth)
        assert basic.status_code == 401


def test_client_metadata_hides_other_registrations(client, two_registrations):
    mine, other, admin_token = two_registrations
    for client_id in (other.admin_id, other.client_for("cds_usage_1")["client_id"], "does-not-exist"):
        for suffix in ("cds-server-metadata", "oauth-metadata"):
            response = client.get(f"/cds-api/v1/clients/{client_id}/{suffix}", headers=bearer(admin_token))
            assert response.status_code == 404, (client_id, suffix)
            assert response.json()["error"] == "not_found"
    # The other registration's own token does see its own client (and not mine).
    other_token = token(client, other.admin_auth, "cds_client_admin")["access_token"]
    other_id = other.client_for("cds_usage_1")["client_id"]
    assert client.get(f"/cds-api/v1/clients/{other_id}/cds-server-metadata",
                      headers=bearer(other_token)).status_code == 200
    assert client.get(f"/cds-api/v1/clients/{mine.admin_id}/cds-server-metadata",
                      headers=bearer(other_token)).status_code == 404


def test_client_metadata_for_own_clients(client, two_registrations, config):
    mine, _other, admin_token = two_registrations
    public = client.get(WELL_KNOWN).json()
    usage = mine.client_for("cds_usage_1")
    assert usage["cds_server_metadata"].endswith(f"/cds-api/v1/clients/{usage['client_id']}/cds-server-metadata")
    response = client.get(_local(usage["cds_server_metadata"]), headers=bearer(admin_token))
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers
    assert response.headers["cache-control"] == "private, no-cache"
    body = response.json()
    assert list(body) == METADATA_FIELDS
    assert body["oauth_metadata"] == f"http://localhost/cds-api/v1/clients/{usage['client_id']}/oauth-metadata"
    assert body["cds_metadata_url"] == usage["cds_server_metadata"]
    assert {k: v for k, v in body.items() if k not in ("oauth_metadata", "cds_metadata_url")} == {
        k: v for k, v in public.items() if k not in ("oauth_metadata", "cds_metadata_url")}

    oauth = client.get(_local(body["oauth_metadata"]), headers=bearer(admin_token))
    assert oauth.status_code == 200
    document = oauth.json()
    assert "registration_endpoint" not in document
    assert document["scopes_supported"] == ["cds_grant_admin_1", "cds_usage_1"]
    assert set(document["cds_scope_descriptions"]) == {"cds_grant_admin_1", "cds_usage_1"}
    assert document["authorization_details_types_supported"] == ["cds_grant_admin_1", "cds_usage_1"]
    assert set(REQUIRED_OAUTH) - set(document) == {"registration_endpoint"}
    _check_unions(document)
    AuthorizationServerMetadata(document).validate()
    # Conditional GET works on the authenticated documents too (after authentication).
    again = client.get(_local(body["oauth_metadata"]),
                       headers={**bearer(admin_token), "If-None-Match": oauth.headers["etag"]})
    assert again.status_code == 304
    assert client.get(_local(body["oauth_metadata"]),
                      headers={"If-None-Match": oauth.headers["etag"]}).status_code == 401

    admin = client.get(f"/cds-api/v1/clients/{mine.admin_id}/oauth-metadata", headers=bearer(admin_token)).json()
    assert admin["scopes_supported"] == ["cds_client_admin"]
    assert admin["authorization_details_types_supported"] == []


# ----------------------------------------------------------------------------------------------------------------
# Human pages
# ----------------------------------------------------------------------------------------------------------------
def test_test_accounts_page_lists_sandbox_logins(client, config):
    response = client.get("/test-accounts")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    page = response.text
    assert config.test_customers
    for customer in config.test_customers:
        assert customer.customer_id in page and customer.password in page
    assert "sandbox" in page.lower()
    assert 'name="robots" content="noindex' in page
    assert config.server.support in page  # base.html footer


def test_register_page_explains_dynamic_registration(client):
    response = client.get("/register")
    assert response.status_code == 200
    page = response.text
    assert "http://localhost/oauth/register" in page
    assert "cds_client_admin" in page
    assert "cds_usage_1" in page and "http://localhost/.well-known/oauth-authorization-server" in page


def test_docs_page_lists_metadata_urls(client):
    page = client.get("/docs").text
    for url in ("http://localhost/.well-known/cds-server-metadata.json",
                "http://localhost/.well-known/carbon-data-spec.json", "http://localhost/cds/coverage",
                "http://localhost/.well-known/oauth-authorization-server"):
        assert url in page
