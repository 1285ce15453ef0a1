"""JSON Schemas (draft 2020-12, the dialect of OpenAPI 3.1) of the CDS objects a server sends and accepts.

* CDS-WG1-01 §3.2 server metadata, §4.2–4.3 coverage listing and entries;
* CDS-WG1-02 §3.2 authorization server metadata (RFC 8414 §2 with the CDS fields), §3.4 Scope Description, §3.5
  Registration Field, §3.8 Authorization Details Field and §3.10 Choice, §4 registration, §5.2 Client, §6.2
  Message, §7.2 Credential, §8.2 Grant, the token response (RFC 6749 §5.1 with RFC 9396 and ``cds_grant_ids``),
  introspection (RFC 7662 §2.2) and OAuth errors (RFC 6749 §5.2);
* CDS-WG3-01 §10: Accounts, Service Contracts, Service Points, Meter Devices, Bill Statements, Bill Sections and
  Usage Segments.

A schema requires what the specs mark REQUIRED and types what they define; it never forbids other members, since
both specs let servers add fields (WG1-01 §6, WG1-02 §5.2). Datetimes are RFC 3339 strings, dates full-dates,
decimals JSON numbers (written digit for digit by cds.jsonenc). ``SCHEMAS`` maps each name to its schema, with
``$ref`` pointers of the form ``#/components/schemas/NAME`` between them, ready for an OpenAPI document.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

STRING: Schema = {"type": "string"}
URL: Schema = {"type": "string", "format": "uri"}
DATETIME: Schema = {"type": "string", "format": "date-time"}
DATE: Schema = {"type": "string", "format": "date"}
INTEGER: Schema = {"type": "integer"}
NUMBER: Schema = {"type": "number"}
BOOLEAN: Schema = {"type": "boolean"}
STRINGS: Schema = {"type": "array", "items": STRING}
URLS: Schema = {"type": "array", "items": URL}
ANY_OBJECT: Schema = {"type": "object"}


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def nullable(schema: Schema) -> Schema:
    """``schema`` or JSON null (2020-12 spells it as a list of types, or a oneOf for references)."""
    if "$ref" in schema:
        return {"oneOf": [schema, {"type": "null"}]}
    kind = schema.get("type")
    if isinstance(kind, str):
        return {**schema, "type": [kind, "null"]}
    return {"oneOf": [schema, {"type": "null"}]}


def array(items: Schema) -> Schema:
    return {"type": "array", "items": items}


def enum(*values: str) -> Schema:
    return {"type": "string", "enum": list(values)}


def obj(required: dict[str, Schema], optional: dict[str, Schema] | None = None, *,
        description: str | None = None) -> Schema:
    schema: Schema = {"type": "object", "properties": {**required, **(optional or {})}}
    if required:
        schema["required"] = list(required)
    if description:
        schema["description"] = description
    return schema


def listing(name: str, item: Schema) -> Schema:
    """A paged listing: ``{NAME: [...], "next": URL|null, "previous": URL|null}`` (WG1-02 §2.2, WG3-01 §10)."""
    return obj({name: array(item), "next": nullable(URL), "previous": nullable(URL)})


_TIMESTAMPS = {"cds_created": DATETIME, "cds_modified": DATETIME, "cds_synced": DATETIME}

# ---------------------------------------------------------------------------------------------- errors
OAUTH_ERROR = obj({"error": STRING}, {"error_description": STRING, "error_uri": URL, "state": STRING},
                  description="An OAuth or CDS error (RFC 6749 §5.2; WG1-02 §10 uses the same shape for the APIs).")

# ---------------------------------------------------------------------------------------------- WG1-01
SERVER_METADATA = obj(
    {"cds_metadata_version": STRING, "cds_metadata_url": URL, "created": DATETIME, "updated": DATETIME,
     "name": STRING, "description": STRING, "website": URL, "documentation": URL, "support": URL,
     "capabilities": STRINGS},
    {"coverage": URL, "oauth_metadata": URL, "related_metadata": URLS},
    description="CDS-WG1-01 §3.2 Server Metadata (with WG1-02 §3.1 oauth_metadata).")
COVERAGE_ENTRY = obj(
    {"id": STRING, "created": DATETIME, "updated": DATETIME, "entity_name": STRING, "country": STRING,
     "name": STRING, "type": enum("geographic", "logical"), "role": enum("authoritative", "official", "aggregator"),
     "infrastructure_types": STRINGS, "commodity_types": STRINGS, "capabilities": STRINGS},
    {"entity_abbreviation": nullable(STRING), "description": STRING, "map_resource": URL,
     "map_content_type": STRING, "geojson_resource": URL},
    description="CDS-WG1-01 §4.3 Coverage Entry.")
COVERAGE_LISTING = listing("coverage_entries", ref("CoverageEntry"))

# ---------------------------------------------------------------------------------------------- WG1-02 §3
CHOICE = obj({"id": STRING, "name": STRING, "description": STRING, "documentation": URL},
             {"usagesegment_format": ANY_OBJECT},
             description="WG1-02 §3.10 Choice (WG3-01 §5.2 adds usagesegment_format).")
AUTHORIZATION_DETAILS_FIELD = obj(
    {"id": STRING, "name": STRING, "description": STRING, "documentation": URL, "for_types": STRINGS,
     "format": STRING, "is_required": BOOLEAN},
    {"default": {}, "maximum": {}, "minimum": {}, "choices": array(ref("Choice"))},
    description="WG1-02 §3.8 Authorization Details Field.")
REGISTRATION_FIELD = obj(
    {"id": STRING, "type": STRING, "description": STRING, "documentation": URL},
    {"field_name": STRING, "format": STRING, "default": {}, "max_length": INTEGER, "max_size": INTEGER,
     "amount": NUMBER, "currency": STRING, "choices": array(ref("Choice"))},
    description="WG1-02 §3.5 Registration Field.")
SCOPE_DESCRIPTION = obj(
    {"id": STRING, "type": STRING, "name": STRING, "description": STRING, "documentation": URL,
     "registration_requirements": STRINGS, "registration_optional": STRINGS, "response_types_supported": STRINGS,
     "grant_types_supported": STRINGS, "token_endpoint_auth_methods_supported": STRINGS,
     "coverages_supported": STRINGS, "authorization_details_types_supported": STRINGS,
     "authorization_details_fields_supported": array(ref("AuthorizationDetailsField"))},
    {"code_challenge_methods_supported": STRINGS, "grant_admin_scope": nullable(STRING)},
    description="WG1-02 §3.4 Scope Description.")
AUTHORIZATION_SERVER_METADATA = obj(
    {"issuer": URL, "token_endpoint": URL, "scopes_supported": STRINGS, "response_types_supported": STRINGS,
     "grant_types_supported": STRINGS, "token_endpoint_auth_methods_supported": STRINGS,
     "cds_oauth_version": STRING, "cds_human_registration": URL, "cds_test_accounts": URL,
     "cds_clients_api": URL, "cds_credentials_api": URL, "cds_grants_api": URL, "cds_messages_api": URL,
     "cds_scope_descriptions": {"type": "object", "additionalProperties": ref("ScopeDescription")},
     "cds_registration_fields": {"type": "object", "additionalProperties": ref("RegistrationField")},
     "cds_timezone": STRING},
    {"authorization_endpoint": URL, "registration_endpoint": URL, "pushed_authorization_request_endpoint": URL,
     "require_pushed_authorization_requests": BOOLEAN, "introspection_endpoint": URL, "revocation_endpoint": URL,
     "code_challenge_methods_supported": STRINGS, "authorization_details_types_supported": STRINGS,
     "service_documentation": URL, "op_policy_uri": URL, "op_tos_uri": URL,
     "cds_customerdata_version": STRING,
     "cds_usagesegments_additional_value_types": {"type": "object", "additionalProperties": obj(
         {"type": STRING, "name": STRING, "description": STRING, "documentation": URL})},
     **{f"cds_{name}_api": URL for name in ("accounts", "servicecontracts", "servicepoints", "meterdevices",
                                             "billstatement", "billsection", "usagesegments",
                                             "server_provided_files")}},
    description="RFC 8414 §2 metadata with the CDS fields of WG1-02 §3.2 (and WG3-01 §5).")

# ---------------------------------------------------------------------------------------------- WG1-02 §4–8
AUTHORIZATION_DETAIL = obj({"type": STRING}, description="An authorization_details object (RFC 9396 §2): its "
                                                         "fields are the type's Authorization Details Fields.")
_CLIENT_REQUIRED = {
    "client_id": STRING, "client_id_issued_at": INTEGER, "scope": STRING, "redirect_uris": URLS,
    "token_endpoint_auth_method": nullable(STRING), "grant_types": STRINGS, "response_types": STRINGS,
    "client_name": STRING, "contacts": STRINGS, "authorization_details_types": STRINGS,
    "cds_created": DATETIME, "cds_modified": DATETIME, "cds_client_uri": URL,
    "cds_status": enum("production", "sandbox", "disabled"), "cds_status_options": STRINGS,
    "cds_server_metadata": URL,
}
_CLIENT_OPTIONAL = {
    "cds_default_scope": STRING, "cds_default_redirect_uri": URL,
    "cds_default_authorization_details": array(ref("AuthorizationDetail")),
    "cds_purposes": ANY_OBJECT, "client_uri": URL, "logo_uri": URL, "tos_uri": URL, "policy_uri": URL,
}
CLIENT = obj(_CLIENT_REQUIRED, _CLIENT_OPTIONAL, description="WG1-02 §5.2 Client (RFC 7591 metadata).")
REGISTRATION_REQUEST = obj({}, {"scope": STRING, "client_name": STRING, "contacts": STRINGS, "redirect_uris": URLS,
                                "client_uri": URL, "logo_uri": URL, "tos_uri": URL, "policy_uri": URL},
                           description="RFC 7591 §2 client metadata as WG1-02 §4.2 profiles it.")
REGISTRATION_RESPONSE = obj({**_CLIENT_REQUIRED, "client_secret": STRING}, _CLIENT_OPTIONAL,
                            description="RFC 7591 §3.2.1: the admin Client with its secret (WG1-02 §4.3).")
CLIENT_LISTING = listing("clients", ref("Client"))
CLIENT_UPDATE = obj({}, {key: schema for key, schema in {**_CLIENT_REQUIRED, **_CLIENT_OPTIONAL}.items()},
                    description="WG1-02 §5.5: the whole Client; omitted editable fields return to their default.")

MESSAGE = obj(
    {"message_id": STRING, "uri": URL, "previous_uri": nullable(URL), "type": STRING, "read": BOOLEAN,
     "creator": nullable(STRING), "created": DATETIME, "modified": DATETIME, "status": STRING, "name": STRING,
     "description": STRING},
    {"updates_requested": array(ANY_OBJECT), "grants_requested": array(ANY_OBJECT),
     "attachments": array(ANY_OBJECT), "related_uri": nullable(URL), "related_type": nullable(STRING),
     "amount": NUMBER, "currency": STRING},
    description="WG1-02 §6.2 Message.")
MESSAGE_LISTING = obj({f"{part}{suffix}": (array(ref("Message")) if not suffix else nullable(URL))
                       for part in ("outstanding", "unread", "read") for suffix in ("", "_next", "_previous")},
                      description="WG1-02 §6.3: messages by state, each list paged on its own.")
MESSAGE_CREATE = obj({"type": STRING}, {"name": STRING, "description": STRING, "previous_uri": nullable(URL),
                                        "related_uri": nullable(URL), "related_type": nullable(STRING),
                                        "grants_requested": array(ANY_OBJECT), "attachments": array(ANY_OBJECT)},
                     description="WG1-02 §6.4: a Message a client sends.")
MESSAGE_UPDATE = obj({}, {"read": BOOLEAN, "status": STRING}, description="WG1-02 §6.6: what a client may change.")

CREDENTIAL = obj({"credential_id": STRING, "uri": URL, "client_id": STRING, "created": DATETIME,
                  "modified": DATETIME, "type": enum("client_secret")},
                 {"client_secret": STRING, "client_secret_expires_at": INTEGER},
                 description="WG1-02 §7.2 Credential.")
CREDENTIAL_LISTING = listing("credentials", ref("Credential"))
CREDENTIAL_CREATE = obj({"client_id": STRING}, description="WG1-02 §7.4.")
CREDENTIAL_UPDATE = obj({"client_secret_expires_at": INTEGER}, description="WG1-02 §7.6.")

GRANT_STATUS = enum("future", "pending", "active", "partial", "errored", "needs_authorization", "disabled",
                    "suspended", "stopped", "revoked", "closed", "expired")
GRANT = obj(
    {"grant_id": STRING, "uri": URL, "replacing": URLS, "replaced_by": URLS, "parent": nullable(STRING),
     "children": STRINGS, "created": DATETIME, "modified": DATETIME, "not_before": nullable(DATETIME),
     "not_after": nullable(DATETIME), "eta": nullable(DATETIME), "expires": nullable(DATETIME),
     "status": GRANT_STATUS, "client_id": STRING, "scope": STRING,
     "authorization_details": array(ref("AuthorizationDetail")), "receipt_confirmations": STRINGS,
     "enabled_scope": STRING, "enabled_authorization_details": array(ref("AuthorizationDetail"))},
    {"states": STRINGS},
    description="WG1-02 §8.2 Grant (states: the newest draft).")
GRANT_LISTING = listing("grants", ref("Grant"))
GRANT_UPDATE = obj({}, {"status": STRING}, description="WG1-02 §8.7: a client closes a Grant.")

TOKEN_RESPONSE = obj(
    {"access_token": STRING, "token_type": STRING},
    {"expires_in": INTEGER, "refresh_token": STRING, "scope": STRING,
     "authorization_details": array(ref("AuthorizationDetail")), "cds_grant_ids": STRINGS},
    description="RFC 6749 §5.1 with RFC 9396 §7 authorization_details and WG1-02 cds_grant_ids.")
PAR_RESPONSE = obj({"request_uri": STRING, "expires_in": INTEGER}, description="RFC 9126 §2.2.")
INTROSPECTION_RESPONSE = obj(
    {"active": BOOLEAN},
    {"scope": STRING, "client_id": STRING, "token_type": STRING, "exp": INTEGER, "iat": INTEGER, "sub": STRING,
     "iss": URL, "authorization_details": array(ref("AuthorizationDetail")), "cds_grant_ids": STRINGS},
    description="RFC 7662 §2.2.")

# ---------------------------------------------------------------------------------------------- WG3-01 §10
ACCOUNT = obj({"cds_account_id": STRING, **_TIMESTAMPS, "cds_account_parent": nullable(STRING)},
              {"account_number": nullable(STRING), "account_name": nullable(STRING),
               "account_types": STRINGS, "account_entities": array(ANY_OBJECT),
               "account_contacts": array(ANY_OBJECT), "account_programs": array(ANY_OBJECT)},
              description="WG3-01 §10.1 Account.")
SERVICE_CONTRACT = obj({"cds_servicecontract_id": STRING, **_TIMESTAMPS, "cds_account_id": STRING,
                        "contract_types": STRINGS, "contract_status": STRING, "service_types": STRINGS},
                       {"account_number": nullable(STRING), "contract_number": nullable(STRING),
                        "contract_entities": array(ANY_OBJECT), "contract_start": nullable(DATE),
                        "contract_end": nullable(DATE)},
                       description="WG3-01 §10.2 Service Contract.")
SERVICE_POINT = obj({"cds_servicepoint_id": STRING, **_TIMESTAMPS, "servicepoint_number": nullable(STRING),
                     "servicepoint_types": STRINGS, "current_servicecontracts": STRINGS,
                     "previous_servicecontracts": STRINGS},
                    {"servicepoint_address": nullable(STRING), "servicepoint_premise": nullable(ANY_OBJECT)},
                    description="WG3-01 §10.3 Service Point.")
METER_DEVICE = obj({"cds_meterdevice_id": STRING, **_TIMESTAMPS, "meter_types": STRINGS,
                    "current_servicepoints": STRINGS, "previous_servicepoints": STRINGS},
                   {"meter_numbers": STRINGS, "meter_apps": array(ANY_OBJECT)},
                   description="WG3-01 §10.4 Meter Device.")
BILL_STATEMENT = obj({"cds_billstatement_id": STRING, **_TIMESTAMPS, "cds_account_id": STRING,
                      "statement_date": DATE, "currency": STRING, "amount_due": NUMBER, "amount_due_date": DATE,
                      "shutoff_prevention_minimum_due": nullable(NUMBER),
                      "shutoff_prevention_date": nullable(DATE)},
                     {"account_number": STRING, "file_uri": nullable(STRING), "file_mimetype": nullable(STRING),
                      "statement_items": array(ANY_OBJECT)},
                     description="WG3-01 §10.5 Bill Statement (account_number gated by include_account_numbers, "
                                 "cds-spec.md §6.1 item 12).")
BILL_SECTION = obj({"cds_billsection_id": STRING, **_TIMESTAMPS, "cds_billstatement_id": nullable(STRING),
                    "cds_account_id": STRING, "section_types": STRINGS, "start_date": DATE, "end_date": DATE,
                    "currency": STRING, "distribution_entity": nullable(ANY_OBJECT),
                    "supply_entity": nullable(ANY_OBJECT), "related_servicecontracts": STRINGS,
                    "related_servicepoints": STRINGS, "related_meterdevices": STRINGS,
                    "related_billsections": STRINGS, "usage_details": array(ANY_OBJECT),
                    "cost_details": array(ANY_OBJECT)},
                   {"account_number": STRING, "line_items": array(ANY_OBJECT)},
                   description="WG3-01 §10.6 Bill Section.")
VALUE_FORMAT = obj({"id": STRING, "type": STRING}, description="WG3-01 §10.8 ValueFormat: the type-specific "
                                                               "fields (units, direction, currency…) follow type.")
USAGE_SEGMENT = obj({"cds_usagesegment_id": STRING, **_TIMESTAMPS, "related_aggregations": STRINGS,
                     "related_accounts": STRINGS, "related_servicecontracts": STRINGS,
                     "related_servicepoints": STRINGS, "related_meterdevices": STRINGS,
                     "related_billsections": STRINGS, "segment_start": DATETIME, "segment_end": DATETIME,
                     "interval": NUMBER, "formats": array(ref("ValueFormat")),
                     "values": array({"type": "array", "items": nullable(ANY_OBJECT)})},
                    description="WG3-01 §10.8 Usage Segment: each value set aligned with formats, null where a "
                                "value is missing.")

#: The listing name of each WG3-01 object → (its schema's name, the listing's schema name).
DATA_LISTINGS = {
    "accounts": ("Account", "AccountListing"),
    "service_contracts": ("ServiceContract", "ServiceContractListing"),
    "service_points": ("ServicePoint", "ServicePointListing"),
    "meter_devices": ("MeterDevice", "MeterDeviceListing"),
    "bill_statements": ("BillStatement", "BillStatementListing"),
    "bill_sections": ("BillSection", "BillSectionListing"),
    "usage_segments": ("UsageSegment", "UsageSegmentListing"),
}

SCHEMAS: dict[str, Schema] = {
    "OAuthError": OAUTH_ERROR,
    "ServerMetadata": SERVER_METADATA, "CoverageEntry": COVERAGE_ENTRY, "CoverageListing": COVERAGE_LISTING,
    "Choice": CHOICE, "AuthorizationDetailsField": AUTHORIZATION_DETAILS_FIELD,
    "RegistrationField": REGISTRATION_FIELD, "ScopeDescription": SCOPE_DESCRIPTION,
    "AuthorizationServerMetadata": AUTHORIZATION_SERVER_METADATA, "AuthorizationDetail": AUTHORIZATION_DETAIL,
    "Client": CLIENT, "ClientListing": CLIENT_LISTING, "ClientUpdate": CLIENT_UPDATE,
    "RegistrationRequest": REGISTRATION_REQUEST, "RegistrationResponse": REGISTRATION_RESPONSE,
    "Message": MESSAGE, "MessageListing": MESSAGE_LISTING, "MessageCreate": MESSAGE_CREATE,
    "MessageUpdate": MESSAGE_UPDATE,
    "Credential": CREDENTIAL, "CredentialListing": CREDENTIAL_LISTING, "CredentialCreate": CREDENTIAL_CREATE,
    "CredentialUpdate": CREDENTIAL_UPDATE,
    "Grant": GRANT, "GrantListing": GRANT_LISTING, "GrantUpdate": GRANT_UPDATE,
    "TokenResponse": TOKEN_RESPONSE, "PushedAuthorizationResponse": PAR_RESPONSE,
    "IntrospectionResponse": INTROSPECTION_RESPONSE,
    "Account": ACCOUNT, "ServiceContract": SERVICE_CONTRACT, "ServicePoint": SERVICE_POINT,
    "MeterDevice": METER_DEVICE, "BillStatement": BILL_STATEMENT, "BillSection": BILL_SECTION,
    "ValueFormat": VALUE_FORMAT, "UsageSegment": USAGE_SEGMENT,
    **{names[1]: listing(name, ref(names[0])) for name, names in DATA_LISTINGS.items()},
}
