"""The gateway's CDS OAuth scopes: Scope Description, Authorization Details Field and Choice objects.

Spec: CDS-WG1-02 §3.3 (built-in scopes: Client Admin, Grant Admin), §3.4 (Scope Description object), §3.8
(Authorization Details Field object), §3.9 (field formats), §3.10 (Choice object); CDS-WG3-01 §6 (customer-consent
scopes) and §7 (authorization details fields), plus the §5.2 Choice extension ``usagesegment_format``.

Everything is plain data built by functions: :func:`build_scope_descriptions` returns the scope descriptions the
gateway publishes in ``cds_scope_descriptions``, and the union helpers give the matching top-level RFC 8414 fields.
Nothing here reads configuration or the clock.

Choices made for Green Button (ESPI) data, which has accounts, service agreements, usage points, meters, usage and
billing summaries but no aggregations, premises, coordinates, meter apps or bill files:

* RAR ``type`` = the scope id (WG1-02 §3.4 NOTE; the WG3 example's ``…ad`` types are not used).
* Consent-scope fields are never required (WG3-01 §7); each has a default. Preselection fields default to null.
* ``include_*`` defaults: true for the scope's base access (WG3-01 §6.1 "default-true" fields that are offered) and
  for the identifier fields the scope type requires (account/contract/meter numbers); false for the optional extras,
  so OPTIONAL object fields stay off unless asked for (WG3-01 §7.2).
* Fields the spec lists "if data available" are offered only when Green Button data can fill them.
* History windows (``segment_start``, ``start_date``, ``statement_date_start``) default to their maximum, which is
  the history the gateway can serve; end fields default to ``"infinite"`` (ongoing); ``sync_until`` to ``P1Y``.

Direct-access scopes (WG3-01 §6.2, ``cds_query_*``) let a Client read the data of any customer it can name, so:

* ``response_types_supported`` is ``[]`` and the only grant type is ``client_credentials`` (no PKCE);
  ``grant_admin_scope`` is null: the Client gets its tokens directly with its own credentials, and a Grant Admin
  client of the same registration must not be able to mint tokens for these grants (it would not be stopped by the
  direct-access Client being disabled);
* every one lists the ``internal_review`` registration requirement ``cds_internal_review``: its Client object is
  created disabled and only an operator enables it (``greenbridge client enable``, cds/registration.py);
* the duration fields of the §6.2 table are ``is_required`` (no default: the Client states its window); the §6.2
  default-true include fields default to true, the few identifier/detail extras offered to false (PII is off by
  default, WG3-01 §11); the preselection fields are ``string_list_or_null`` (null: no filter from that field) and
  at least one must be a list (cds/authorization_details.py rejects unbounded requests, WG3-01 §6.2 MAY);
* no premises, aggregations or EACs: Green Button data has none.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from cds.authorization_details import load_timezone, parse_duration

__all__ = [
    "DIRECT_ACCESS_TYPES",
    "INTERNAL_REVIEW_ID",
    "NO_DEFAULT",
    "AuthorizationDetailsField",
    "Choice",
    "ScopeDescription",
    "authorization_details_types_supported",
    "build_scope_descriptions",
    "code_challenge_methods_supported",
    "grant_types_supported",
    "metadata_json",
    "oauth_metadata_unions",
    "problems",
    "registration_fields",
    "response_types_supported",
    "scope_ids_of_type",
    "scopes_supported",
    "token_endpoint_auth_methods_supported",
]


class _NoDefault:
    """Marker for an Authorization Details Field without a ``default`` (distinct from a ``null`` default)."""

    _instance: _NoDefault | None = None

    def __new__(cls) -> _NoDefault:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "NO_DEFAULT"

    def __reduce__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


def _freeze(value: Any) -> Any:
    if isinstance(value, Mapping):
        return MappingProxyType({key: _freeze(item) for key, item in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(item) for item in value)
    return value


def _thaw(value: Any) -> Any:
    """JSON form: mappings → dicts, sequences → lists, objects with ``to_json`` → their JSON."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, Mapping):
        return {key: _thaw(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_thaw(item) for item in value]
    return value


@dataclass(frozen=True, slots=True)
class Choice:
    """Choice object (WG1-02 §3.10), with the WG3-01 §5.2 ``usagesegment_format`` (a ValueFormat) when set."""

    id: str
    name: str
    description: str
    documentation: str
    usagesegment_format: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.usagesegment_format is not None:
            object.__setattr__(self, "usagesegment_format", _freeze(self.usagesegment_format))

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {"id": self.id, "name": self.name, "description": self.description,
                                  "documentation": self.documentation}
        if self.usagesegment_format is not None:
            result["usagesegment_format"] = _thaw(self.usagesegment_format)
        return result


@dataclass(frozen=True, slots=True)
class AuthorizationDetailsField:
    """Authorization Details Field object (WG1-02 §3.8). ``default``/``maximum``/``minimum``/``choices`` are
    written only when set (``NO_DEFAULT`` and ``None`` mean "absent"; a ``None`` default is written as
    ``default=None`` and shows as JSON ``null``)."""

    id: str
    name: str
    description: str
    documentation: str
    for_types: tuple[str, ...]
    format: str
    is_required: bool
    default: Any = NO_DEFAULT
    maximum: Any = None
    minimum: Any = None
    choices: tuple[Choice, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "for_types", tuple(self.for_types))
        object.__setattr__(self, "default", _freeze(self.default))
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))

    @property
    def has_default(self) -> bool:
        return self.default is not NO_DEFAULT

    def to_json(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "id": self.id, "name": self.name, "description": self.description, "documentation": self.documentation,
            "for_types": list(self.for_types), "format": self.format, "is_required": self.is_required,
        }
        if self.has_default:
            result["default"] = _thaw(self.default)
        if self.maximum is not None:
            result["maximum"] = self.maximum
        if self.minimum is not None:
            result["minimum"] = self.minimum
        if self.choices is not None:
            result["choices"] = [choice.to_json() for choice in self.choices]
        return result


@dataclass(frozen=True, slots=True)
class ScopeDescription:
    """Scope Description object (WG1-02 §3.4); ``to_json`` writes every field, in the spec's order."""

    id: str
    type: str
    name: str
    description: str
    documentation: str
    registration_requirements: tuple[str, ...] = ()
    registration_optional: tuple[str, ...] = ()
    response_types_supported: tuple[str, ...] = ()
    grant_types_supported: tuple[str, ...] = ()
    token_endpoint_auth_methods_supported: tuple[str, ...] = ()
    code_challenge_methods_supported: tuple[str, ...] = ()
    coverages_supported: tuple[str, ...] = ()
    grant_admin_scope: str | None = None
    authorization_details_types_supported: tuple[str, ...] = ()
    authorization_details_fields_supported: tuple[AuthorizationDetailsField, ...] = ()

    def __post_init__(self) -> None:
        for name in ("registration_requirements", "registration_optional", "response_types_supported",
                     "grant_types_supported", "token_endpoint_auth_methods_supported",
                     "code_challenge_methods_supported", "coverages_supported",
                     "authorization_details_types_supported", "authorization_details_fields_supported"):
            object.__setattr__(self, name, tuple(getattr(self, name)))

    @property
    def is_consent(self) -> bool:
        """A customer-consent scope: usable in an authorization request (WG3-01 §6.1)."""
        return bool(self.response_types_supported)

    def field(self, field_id: str) -> AuthorizationDetailsField | None:
        for fd in self.authorization_details_fields_supported:
            if fd.id == field_id:
                return fd
        return None

    def fields_for_type(self, type_: str) -> list[AuthorizationDetailsField]:
        return [fd for fd in self.authorization_details_fields_supported if type_ in fd.for_types]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "name": self.name,
            "description": self.description,
            "documentation": self.documentation,
            "registration_requirements": list(self.registration_requirements),
            "registration_optional": list(self.registration_optional),
            "response_types_supported": list(self.response_types_supported),
            "grant_types_supported": list(self.grant_types_supported),
            "token_endpoint_auth_methods_supported": list(self.token_endpoint_auth_methods_supported),
            "code_challenge_methods_supported": list(self.code_challenge_methods_supported),
            "coverages_supported": list(self.coverages_supported),
            "grant_admin_scope": self.grant_admin_scope,
            "authorization_details_types_supported": list(self.authorization_details_types_supported),
            "authorization_details_fields_supported": [fd.to_json() for fd in
                                                       self.authorization_details_fields_supported],
        }


# --------------------------------------------------------------------------------------------------------------
# Field catalogue (names and descriptions are this gateway's own wording)
# --------------------------------------------------------------------------------------------------------------

#: Combined length limit of preselection lists, and length limit of single strings.
LIST_MAXIMUM = 10000
STRING_MAXIMUM = 1000

_PRESELECT = {
    "account_numbers": ("Preselect account numbers", "Accounts with these account numbers"),
    "contract_numbers": ("Preselect service contract numbers", "Service Contracts with these contract numbers"),
    "servicepoint_numbers": ("Preselect service point numbers", "Service Points with these service point numbers"),
    "meter_numbers": ("Preselect meter numbers", "Meter Devices with these meter numbers"),
    "addresses": ("Preselect addresses", "the services at these addresses (normalized address matching; see the "
                                         "documentation for the abbreviations, separators and examples)"),
    "service_types": ("Preselect service types", "Service Contracts of these service types"),
    "servicepoint_types": ("Preselect service point types", "Service Points of these types"),
    "meter_types": ("Preselect meter types", "Meter Devices of these types"),
}

_INCLUDE = {
    "include_accounts": ("Include accounts", "the Account objects related to the shared data"),
    "include_account_numbers": ("Include account numbers",
                                "customer and account numbers and the account entity on the shared objects"),
    "include_account_details": ("Include account details",
                                "the account name, address, types, status and contacts on Account objects"),
    "include_account_programs": ("Include account programs", "the programs listed on Account objects"),
    "include_service_contracts": ("Include service contracts",
                                  "the Service Contract objects related to the shared data"),
    "include_contract_numbers": ("Include service contract numbers",
                                 "contract numbers and the contract entity on Service Contract objects"),
    "include_rate_plans": ("Include rate plans", "the rate plan code and name on Service Contract objects"),
    "include_service_contract_details": ("Include service contract details",
                                         "the service address, start and end dates on Service Contract objects"),
    "include_service_programs": ("Include service programs", "the programs listed on Service Contract objects"),
    "include_service_points": ("Include service points", "the Service Point objects related to the shared data"),
    "include_service_point_addresses": ("Include service point addresses",
                                        "the service address on Service Point objects"),
    "include_meter_devices": ("Include meters", "the Meter Device objects related to the shared data"),
    "include_meter_numbers": ("Include meter numbers", "meter numbers on Meter Device objects"),
    "include_bill_statements": ("Include bill statements",
                                "the Bill Statement objects of the shared accounts"),
    "include_bill_statement_charges": ("Include bill statement charges",
                                       "previous balance, new charges and new balance amounts on Bill Statements"),
    "include_bill_sections": ("Include bill sections", "the Bill Section objects related to the shared data"),
    "include_bill_section_line_items": ("Include bill line items", "the line items on Bill Section objects"),
    "include_usage_segments": ("Include usage segments", "the Usage Segments related to the shared data"),
}

# Direct access (WG3-01 §6.2): what the Client may name, without the authorization-form special values.
_DIRECT_PRESELECT = {
    "account_numbers": "Accounts (and their contracts) with these account numbers",
    "contract_numbers": "Service Contracts with these contract numbers, and the Accounts owning them",
    "servicepoint_numbers": "Service Points with these service point numbers, and the objects linked to them",
    "meter_numbers": "Meter Devices with these meter numbers, and the objects linked to them",
    "addresses": "the Accounts, Service Contracts and Service Points at these addresses (normalized address "
                 "matching; see the documentation for the abbreviations, separators and examples)",
}

_SELECTION = {
    "account_selection": ("Account List", "The Customer selects which of their accounts to share."),
    "service_contract_selection": ("Service List", "The Customer selects which of their services to share."),
    "servicepoint_selection": ("Service Point List",
                               "The Customer selects which service points (service locations) to share."),
    "meter_device_selection": ("Meter List", "The Customer selects which of their meters to share."),
}

_SERVICE_TYPES = {"electric": "Electric service", "natural_gas": "Natural gas service", "water": "Water service"}
_SERVICEPOINT_TYPES = {
    "electric": "Electric service point", "natural_gas": "Natural gas service point",
    "water": "Water service point", "single_service": "Single-service point", "physical": "Physical service point",
    "virtual": "Virtual service point", "edge": "Edge (customer) service point",
}
_METER_TYPES = {
    "electric_usage": "Electric meter", "natural_gas_usage": "Natural gas meter", "water_usage": "Water meter",
    "bidirectional": "Bidirectional (net metering) meter", "electric_demand": "Demand meter",
    "ami_meter": "Smart (AMI) meter", "physical_meter": "Physical meter", "virtual_meter": "Virtual meter",
}


@dataclass(frozen=True, slots=True)
class _Builder:
    documentation_base: str
    timezone: str
    segment_history: str
    bill_history: str
    sync_until_default: str
    currency: str
    gas_units: str
    water_units: str

    def doc(self, page: str, anchor: str) -> str:
        return f"{self.documentation_base}/{page}#{anchor}"

    def field_doc(self, field_id: str) -> str:
        return self.doc("authorization-details-fields", field_id)

    def choices(self, table: Mapping[str, str], page: str) -> tuple[Choice, ...]:
        return tuple(Choice(choice_id, name, f"{name} ({choice_id}).", self.doc(page, choice_id))
                     for choice_id, name in table.items())

    def preselect(self, field_id: str, scope_id: str) -> AuthorizationDetailsField:
        name, what = _PRESELECT[field_id]
        description = f"On the Authorization Form, preselect {what}."
        if field_id in ("service_types", "servicepoint_types", "meter_types"):
            table = {"service_types": _SERVICE_TYPES, "servicepoint_types": _SERVICEPOINT_TYPES,
                     "meter_types": _METER_TYPES}[field_id]
            return AuthorizationDetailsField(field_id, name, description, self.field_doc(field_id), (scope_id,),
                                             "choice_list_or_null", False, default=None,
                                             choices=self.choices(table, field_id.replace("_", "-")))
        return AuthorizationDetailsField(field_id, name, description + ' "_all" selects everything, '
                                         '"_include_future" also shares resources added later.',
                                         self.field_doc(field_id), (scope_id,), "string_list_or_null", False,
                                         default=None, maximum=LIST_MAXIMUM, minimum=1)

    def include(self, field_id: str, scope_id: str, default: bool) -> AuthorizationDetailsField:
        name, what = _INCLUDE[field_id]
        return AuthorizationDetailsField(field_id, name, f"Whether to share {what}.", self.field_doc(field_id),
                                         (scope_id,), "boolean", False, default=default)

    def direct_preselect(self, field_id: str, scope_id: str) -> AuthorizationDetailsField:
        name = _PRESELECT[field_id][0].replace("Preselect", "Filter by")
        return AuthorizationDetailsField(
            field_id, name, f"Share only {_DIRECT_PRESELECT[field_id]} (null: no filter from this field). At least "
            "one preselection field must list values: this server rejects unbounded direct-access requests.",
            self.field_doc(field_id), (scope_id,), "string_list_or_null", False, default=None, maximum=LIST_MAXIMUM,
            minimum=1)

    def duration(self, field_id: str, scope_id: str, *, required: bool = False) -> AuthorizationDetailsField:
        # Direct access (the required variant) has no approval: its reference is the first token request (§3.9).
        moment = "the first token request" if required else "the approval time"
        zone = f"Relative values are taken from {moment} in {self.timezone}."
        specs = {
            "sync_until": ("Keep data updated until", "How long the shared data keeps being updated.",
                           "relative_or_absolute_datetime", self.sync_until_default, "infinite", "PT0S"),
            "segment_start": ("Usage history start", "Share Usage Segments from this datetime on.",
                              "relative_or_absolute_datetime", self.segment_history, self.segment_history, "PT0S"),
            "segment_end": ("Usage end", "Share Usage Segments up to this datetime (infinite: ongoing).",
                            "relative_or_absolute_datetime", "infinite", "infinite", "PT0S"),
            "statement_date_start": ("Bill statements from", "Share Bill Statements issued on or after this date.",
                                     "relative_or_absolute_date", self.bill_history, self.bill_history, "P0D"),
            "statement_date_end": ("Bill statements until",
                                   "Share Bill Statements issued on or before this date (infinite: ongoing).",
                                   "relative_or_absolute_date", "infinite", "infinite", "P0D"),
            "start_date": ("Bill sections from", "Share Bill Sections starting on or after this date.",
                           "relative_or_absolute_date", self.bill_history, self.bill_history, "P0D"),
            "end_date": ("Bill sections until", "Share Bill Sections ending on or before this date (infinite: "
                                                "ongoing).", "relative_or_absolute_date", "infinite", "infinite",
                         "P0D"),
        }
        name, description, fmt, default, maximum, minimum = specs[field_id]
        if required:  # a required field has no default (WG1-02 §3.8)
            default = NO_DEFAULT
        return AuthorizationDetailsField(field_id, name, f"{description} {zone}", self.field_doc(field_id),
                                         (scope_id,), fmt, required, default=default, maximum=maximum,
                                         minimum=minimum)

    def common(self, scope_id: str, selections: Sequence[str], default_selection: str) -> list:
        table = {choice_id: _SELECTION[choice_id][0] for choice_id in selections}
        choices = tuple(Choice(choice_id, name, _SELECTION[choice_id][1], self.doc("authorization-form", choice_id))
                        for choice_id, name in table.items())
        return [
            AuthorizationDetailsField("authorization_form_selection_type", "Authorization Form selection type",
                                      "Which list the Customer selects from on the Authorization Form.",
                                      self.field_doc("authorization_form_selection_type"), (scope_id,), "choice",
                                      False, default=default_selection, choices=choices),
            AuthorizationDetailsField("merge_selection_with", "Merge the selection with another scope",
                                      "Another scope of the same request whose selection this scope shares.",
                                      self.field_doc("merge_selection_with"), (scope_id,), "string_or_null", False,
                                      default=None, maximum=STRING_MAXIMUM, minimum=1),
            AuthorizationDetailsField("error_if_no_preselections", "Error if nothing is preselected",
                                      "Return an error instead of asking the Customer to select manually when no "
                                      "preselection matches.", self.field_doc("error_if_no_preselections"),
                                      (scope_id,), "boolean", False, default=False),
            AuthorizationDetailsField("allow_scope_modifications", "Allow scope modifications",
                                      "Whether the Customer may change the requested scope on the Authorization "
                                      "Form.", self.field_doc("allow_scope_modifications"), (scope_id,), "boolean",
                                      False, default=False),
            AuthorizationDetailsField("jwk", "Response encryption key",
                                      "A public EC P-256 (or RSA) JWK with use \"enc\"; Customer Data API "
                                      "responses are then encrypted to it.", self.field_doc("jwk"), (scope_id,),
                                      "jwk_or_null", False, default=None),
        ]

    def usage_value_types(self, scope_id: str) -> AuthorizationDetailsField:
        formats = [
            ("electric_usage_net", "Electric usage, net (kWh)",
             {"type": "electric_usage", "units": "kWh", "direction": "net"}),
            ("electric_usage_forward", "Electric usage delivered by the grid (kWh)",
             {"type": "electric_usage", "units": "kWh", "direction": "forward"}),
            ("electric_usage_reverse", "Electric energy exported to the grid (kWh)",
             {"type": "electric_usage", "units": "kWh", "direction": "reverse"}),
            ("electric_demand_peak", "Electric peak demand (kW)",
             {"type": "electric_demand", "units": "kW", "demand_type": "peak"}),
            ("electric_demand_average", "Electric average demand (kW)",
             {"type": "electric_demand", "units": "kW", "demand_type": "average"}),
            ("natural_gas_usage", f"Natural gas usage ({self.gas_units})",
             {"type": "natural_gas_usage", "units": self.gas_units}),
            ("water_usage", f"Water usage ({self.water_units})", {"type": "water_usage", "units": self.water_units}),
            ("cost", f"Cost ({self.currency})", {"type": "cost", "currency": self.currency, "indexes": []}),
        ]
        choices = tuple(Choice(choice_id, name, f"{name}, as the data custodian reports it.",
                               self.doc("usage-segments", choice_id), {"id": choice_id, **value_format})
                        for choice_id, name, value_format in formats)
        return AuthorizationDetailsField(
            "include_usage_segment_value_types", "Usage value types",
            "Which kinds of values Usage Segments carry (null: segments without values).",
            self.field_doc("include_usage_segment_value_types"), (scope_id,), "choice_list_or_null", False,
            default=tuple(choice.id for choice in choices), choices=choices)


# Per scope type: preselection fields, include fields with their defaults, duration fields, selection choices
# (the first is the default). Required fields of WG3-01 §6.1 first, then the Green Button "if data available" ones.
_CONSENT_SCOPES: dict[str, dict[str, Any]] = {
    "cds_usage": {
        "name": "Meter usage",
        "description": "Usage Segments (interval and billing-period usage, demand and cost) of the services the "
                       "Customer selects.",
        "preselect": ["account_numbers", "contract_numbers", "service_types", "servicepoint_numbers",
                      "servicepoint_types", "meter_numbers", "meter_types", "addresses"],
        "include": {"include_meter_devices": True, "include_meter_numbers": True,
                    "include_service_contracts": True, "include_contract_numbers": True,
                    "include_accounts": False, "include_account_numbers": False, "include_service_points": False,
                    "include_service_point_addresses": False, "include_bill_sections": False,
                    "include_bill_section_line_items": False},
        "value_types": True,
        "durations": ["segment_start", "segment_end", "sync_until"],
        "selections": ["service_contract_selection", "account_selection", "servicepoint_selection",
                       "meter_device_selection"],
    },
    "cds_meters": {
        "name": "Meter list",
        "description": "The list of the Customer's meters.",
        "preselect": ["meter_numbers", "meter_types", "account_numbers", "contract_numbers", "service_types",
                      "servicepoint_numbers", "servicepoint_types", "addresses"],
        "include": {"include_meter_numbers": True,
                    "include_accounts": False, "include_account_numbers": False, "include_account_details": False,
                    "include_account_programs": False, "include_service_contracts": False,
                    "include_contract_numbers": False, "include_rate_plans": False,
                    "include_service_contract_details": False, "include_service_programs": False,
                    "include_service_points": False, "include_service_point_addresses": False},
        "durations": ["sync_until"],
        "selections": ["meter_device_selection", "service_contract_selection", "account_selection",
                       "servicepoint_selection"],
    },
    "cds_service_contracts": {
        "name": "Service list",
        "description": "The list of the Customer's services (service contracts).",
        "preselect": ["contract_numbers", "service_types", "account_numbers", "meter_numbers", "addresses"],
        "include": {"include_accounts": True, "include_contract_numbers": True,
                    "include_account_numbers": False, "include_account_details": False,
                    "include_account_programs": False, "include_rate_plans": False,
                    "include_service_contract_details": False, "include_service_programs": False,
                    "include_meter_devices": False, "include_meter_numbers": False},
        "durations": ["sync_until"],
        "selections": ["service_contract_selection", "account_selection"],
    },
    "cds_accounts": {
        "name": "Account list",
        "description": "The list of the Customer's accounts.",
        "preselect": ["account_numbers", "addresses"],
        "include": {"include_account_numbers": True,
                    "include_account_details": False, "include_account_programs": False},
        "durations": ["sync_until"],
        "selections": ["account_selection"],
    },
    "cds_bill_statements": {
        "name": "Bills",
        "description": "The Customer's bill statements.",
        "preselect": ["account_numbers", "contract_numbers", "meter_numbers", "addresses"],
        "include": {"include_accounts": True, "include_account_numbers": True,
                    "include_bill_statement_charges": False},
        "durations": ["statement_date_start", "statement_date_end"],
        "selections": ["account_selection"],
    },
    "cds_service_bills": {
        "name": "Service bills",
        "description": "The bill sections (per-service charges) of the services the Customer selects.",
        "preselect": ["contract_numbers", "service_types", "account_numbers", "meter_numbers", "addresses"],
        "include": {"include_accounts": True, "include_account_numbers": True, "include_service_contracts": True,
                    "include_contract_numbers": True,
                    "include_bill_statements": False, "include_bill_statement_charges": False,
                    "include_bill_section_line_items": False, "include_service_points": False,
                    "include_meter_devices": False, "include_meter_numbers": False},
        "durations": ["start_date", "end_date", "statement_date_start", "statement_date_end"],
        "selections": ["service_contract_selection", "account_selection"],
    },
}

# Direct-access scopes (WG3-01 §6.2): the required (duration) fields of the §6.2 table, then the include fields
# with their defaults: the table's default-true fields first, then the optional extras (default false).
_DIRECT_SCOPES: dict[str, dict[str, Any]] = {
    "cds_query_accounts": {
        "name": "Account query (direct access)",
        "description": "Query the Accounts of the customers named in the token request, without their consent "
                       "through this server (contracted access; reviewed before production).",
        "durations": ["sync_until"],
        "include": {"include_accounts": True, "include_account_numbers": False, "include_account_details": False},
    },
    "cds_query_service_contracts": {
        "name": "Service contract query (direct access)",
        "description": "Query the Service Contracts (and their Accounts) named in the token request "
                       "(contracted access; reviewed before production).",
        "durations": ["sync_until"],
        "include": {"include_accounts": True, "include_service_contracts": True, "include_account_numbers": False,
                    "include_contract_numbers": False, "include_service_contract_details": False},
    },
    "cds_query_service_points": {
        "name": "Service point query (direct access)",
        "description": "Query the Service Points named in the token request (contracted access; reviewed before "
                       "production).",
        "durations": ["sync_until"],
        "include": {"include_service_points": True, "include_service_point_addresses": False},
    },
    "cds_query_meter_devices": {
        "name": "Meter query (direct access)",
        "description": "Query the Meter Devices named in the token request (contracted access; reviewed before "
                       "production).",
        "durations": ["sync_until"],
        "include": {"include_meter_devices": True, "include_meter_numbers": False},
    },
    "cds_query_bill_statements": {
        "name": "Bill statement query (direct access)",
        "description": "Query the Bill Statements of the Accounts named in the token request (contracted access; "
                       "reviewed before production).",
        "durations": ["sync_until", "statement_date_start", "statement_date_end"],
        "include": {"include_bill_statements": True, "include_account_numbers": False,
                    "include_bill_statement_charges": False},
    },
    "cds_query_bill_sections": {
        "name": "Bill section query (direct access)",
        "description": "Query the Bill Sections of the services named in the token request (contracted access; "
                       "reviewed before production).",
        "durations": ["sync_until", "start_date", "end_date"],
        "include": {"include_bill_sections": True, "include_account_numbers": False,
                    "include_contract_numbers": False, "include_bill_section_line_items": False},
    },
    "cds_query_usage": {
        "name": "Usage query (direct access)",
        "description": "Query the Usage Segments of the meters and services named in the token request "
                       "(contracted access; reviewed before production).",
        "durations": ["sync_until", "segment_start", "segment_end"],
        "include": {"include_usage_segments": True, "include_meter_devices": False, "include_meter_numbers": False},
        "value_types": True,  # include_usage_segment_value_types, default-true (every value type)
    },
}
_DIRECT_PRESELECT_FIELDS = ("account_numbers", "contract_numbers", "servicepoint_numbers", "meter_numbers",
                            "addresses")

#: The direct-access scope types this server offers (WG3-01 §6.2; no ``cds_query_aggregations``: no data).
DIRECT_ACCESS_TYPES = tuple(_DIRECT_SCOPES)

CLIENT_ADMIN_ID = "cds_client_admin"
GRANT_ADMIN_ID = "cds_grant_admin_1"
#: The ``internal_review`` registration requirement (WG1-02 §3.5–3.6) of every direct-access scope.
INTERNAL_REVIEW_ID = "cds_internal_review"


def build_scope_descriptions(
    *,
    documentation_base: str,
    timezone: str,
    segment_history: str = "P3Y",
    bill_history: str = "P3Y",
    sync_until_default: str = "P1Y",
    coverages: Iterable[str] = (),
    currency: str = "USD",
    gas_units: str = "therm",
    water_units: str = "gal",
) -> dict[str, ScopeDescription]:
    """The gateway's Scope Descriptions, keyed by scope id (the ``cds_scope_descriptions`` map).

    ``cds_client_admin``, ``cds_grant_admin_1``, the consent scopes ``cds_usage_1``, ``cds_meters_1``,
    ``cds_service_contracts_1``, ``cds_accounts_1``, ``cds_bill_statements_1``, ``cds_service_bills_1`` and the
    direct-access scopes ``cds_query_accounts_1`` … ``cds_query_usage_1`` (:data:`DIRECT_ACCESS_TYPES`).
    ``documentation_base`` is the URL prefix of the gateway's documentation; ``timezone`` the ``cds_timezone``
    (named in the duration fields' descriptions); ``segment_history`` / ``bill_history`` the furthest-back usage
    and billing history (RFC 3339 durations); ``coverages`` the WG1-01 coverage ids of the consent scopes.
    ``ValueError`` for an unknown timezone or a malformed duration.
    """
    load_timezone(timezone)
    parse_duration(segment_history)
    parse_duration(bill_history, date_only=True)
    parse_duration(sync_until_default)
    base = documentation_base.rstrip("/")
    builder = _Builder(base, timezone, segment_history, bill_history, sync_until_default, currency, gas_units,
                       water_units)
    coverage_ids = tuple(coverages)
    descriptions: dict[str, ScopeDescription] = {}

    descriptions[CLIENT_ADMIN_ID] = ScopeDescription(
        id=CLIENT_ADMIN_ID, type="cds_client_admin", name="Client Admin",
        description="This scope grants administrative access to the Client management APIs.",
        documentation=builder.doc("scopes", CLIENT_ADMIN_ID),
        grant_types_supported=("client_credentials",), token_endpoint_auth_methods_supported=("client_secret_basic",),
    )
    descriptions[GRANT_ADMIN_ID] = ScopeDescription(
        id=GRANT_ADMIN_ID, type="cds_grant_admin", name="Grant Admin",
        description="This scope grants administrative access to previously created Grants.",
        documentation=builder.doc("scopes", GRANT_ADMIN_ID),
        grant_types_supported=("client_credentials",), token_endpoint_auth_methods_supported=("client_secret_basic",),
        authorization_details_types_supported=(GRANT_ADMIN_ID,),
        authorization_details_fields_supported=(
            AuthorizationDetailsField("client_id", "Client Object identifier",
                                      "The Client object whose Grant the access token is for.",
                                      builder.field_doc("client_id"), (GRANT_ADMIN_ID,), "string", True,
                                      maximum=STRING_MAXIMUM, minimum=1),
            AuthorizationDetailsField("grant_id", "Grant identifier",
                                      "The Grant whose enabled scope the access token reaches.",
                                      builder.field_doc("grant_id"), (GRANT_ADMIN_ID,), "string", True,
                                      maximum=STRING_MAXIMUM, minimum=1),
        ),
    )
    for scope_type, spec in _CONSENT_SCOPES.items():
        scope_id = scope_type + "_1"
        fields: list[AuthorizationDetailsField] = [builder.preselect(fid, scope_id) for fid in spec["preselect"]]
        fields += [builder.include(fid, scope_id, default) for fid, default in spec["include"].items()]
        if spec.get("value_types"):
            fields.append(builder.usage_value_types(scope_id))
        fields += [builder.duration(fid, scope_id) for fid in spec["durations"]]
        fields += builder.common(scope_id, spec["selections"], spec["selections"][0])
        descriptions[scope_id] = ScopeDescription(
            id=scope_id, type=scope_type, name=spec["name"], description=spec["description"],
            documentation=builder.doc("scopes", scope_id),
            response_types_supported=("code",), grant_types_supported=("authorization_code", "refresh_token"),
            token_endpoint_auth_methods_supported=("client_secret_basic",),
            code_challenge_methods_supported=("S256",), coverages_supported=coverage_ids,
            grant_admin_scope=GRANT_ADMIN_ID, authorization_details_types_supported=(scope_id,),
            authorization_details_fields_supported=tuple(fields),
        )
    for scope_type, spec in _DIRECT_SCOPES.items():
        scope_id = scope_type + "_1"
        fields = [builder.duration(fid, scope_id, required=True) for fid in spec["durations"]]
        fields += [builder.direct_preselect(fid, scope_id) for fid in _DIRECT_PRESELECT_FIELDS]
        fields += [builder.include(fid, scope_id, default) for fid, default in spec["include"].items()]
        if spec.get("value_types"):
            fields.append(builder.usage_value_types(scope_id))
        descriptions[scope_id] = ScopeDescription(
            id=scope_id, type=scope_type, name=spec["name"], description=spec["description"],
            documentation=builder.doc("scopes", scope_id), registration_requirements=(INTERNAL_REVIEW_ID,),
            response_types_supported=(), grant_types_supported=("client_credentials",),
            token_endpoint_auth_methods_supported=("client_secret_basic",), code_challenge_methods_supported=(),
            coverages_supported=coverage_ids, grant_admin_scope=None,
            authorization_details_types_supported=(scope_id,), authorization_details_fields_supported=tuple(fields),
        )
    return descriptions


def registration_fields(descriptions: Mapping[str, Any], *, documentation_base: str) -> dict[str, dict[str, Any]]:
    """The ``cds_registration_fields`` map (WG1-02 §3.2, §3.5) for ``descriptions``: one Registration Field object
    for each id their ``registration_requirements``/``registration_optional`` name, ``{}`` when none.

    The only field this server defines is ``cds_internal_review`` (type ``internal_review``): the operator reviews
    a direct-access Client before enabling it. Its documentation is the support section of the gateway's
    documentation, where the operator says how to reach them. ``ValueError`` for an id this server does not define.
    """
    base = documentation_base.rstrip("/")
    known = {
        INTERNAL_REVIEW_ID: {
            "id": INTERNAL_REVIEW_ID,
            "type": "internal_review",
            "description": "Direct access reads the data of any customer the Client can name, so the operator of "
                           "this server reviews the Client (its purpose, contract with the utility and the customers "
                           "concerned) before enabling it. Until then its Client object is disabled and cannot get "
                           "tokens; the review is discussed through the Messages API.",
            "documentation": f"{base}#support",
        },
    }
    wanted: list[str] = []
    for description in metadata_json(descriptions).values():
        for field_id in [*description.get("registration_requirements", ()),
                         *description.get("registration_optional", ())]:
            if field_id not in wanted:
                wanted.append(field_id)
    unknown = [field_id for field_id in wanted if field_id not in known]
    if unknown:
        raise ValueError(f"registration fields {unknown} are not defined by this server")
    return {field_id: dict(known[field_id]) for field_id in sorted(wanted)}


# --------------------------------------------------------------------------------------------------------------
# Metadata helpers
# --------------------------------------------------------------------------------------------------------------


def _json(description: Any) -> dict[str, Any]:
    return description.to_json() if hasattr(description, "to_json") else dict(description)


def scope_ids_of_type(descriptions: Mapping[str, Any], type_: str) -> list[str]:
    """Sorted ids of the scopes whose Scope Description ``type`` is ``type_`` (clients match on ``type``)."""
    return sorted(scope_id for scope_id, desc in descriptions.items() if _json(desc).get("type") == type_)


def _union(descriptions: Mapping[str, Any], key: str) -> list[str]:
    return sorted({value for desc in descriptions.values() for value in _json(desc).get(key) or ()})


def scopes_supported(descriptions: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """RFC 8414 ``scopes_supported``: every described scope id, plus ``extra`` non-CDS scopes, sorted."""
    return sorted(set(descriptions) | set(extra))


def response_types_supported(descriptions: Mapping[str, Any]) -> list[str]:
    return _union(descriptions, "response_types_supported")


def grant_types_supported(descriptions: Mapping[str, Any]) -> list[str]:
    return _union(descriptions, "grant_types_supported")


def token_endpoint_auth_methods_supported(descriptions: Mapping[str, Any]) -> list[str]:
    return _union(descriptions, "token_endpoint_auth_methods_supported")


def code_challenge_methods_supported(descriptions: Mapping[str, Any]) -> list[str]:
    return _union(descriptions, "code_challenge_methods_supported")


def authorization_details_types_supported(descriptions: Mapping[str, Any]) -> list[str]:
    return _union(descriptions, "authorization_details_types_supported")


def oauth_metadata_unions(descriptions: Mapping[str, Any]) -> dict[str, list[str]]:
    """The top-level Authorization Server Metadata fields that must cover the per-scope values (WG1-02 §3.2)."""
    return {
        "scopes_supported": scopes_supported(descriptions),
        "response_types_supported": response_types_supported(descriptions),
        "grant_types_supported": grant_types_supported(descriptions),
        "token_endpoint_auth_methods_supported": token_endpoint_auth_methods_supported(descriptions),
        "code_challenge_methods_supported": code_challenge_methods_supported(descriptions),
        "authorization_details_types_supported": authorization_details_types_supported(descriptions),
    }


def metadata_json(descriptions: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The ``cds_scope_descriptions`` metadata map: scope id → Scope Description JSON."""
    return {scope_id: _json(desc) for scope_id, desc in descriptions.items()}


_LIMITED_FORMATS = frozenset({"int", "decimal", "string", "string_or_null", "string_list", "string_list_or_null",
                              "relative_or_absolute_date", "relative_or_absolute_datetime"})
_CHOICE_FORMATS = frozenset({"choice", "choice_or_null", "choice_list", "choice_list_or_null"})


def problems(descriptions: Mapping[str, Any]) -> list[str]:
    """Consistency problems of a set of Scope Descriptions against WG1-02 §3.4/§3.8 and WG3-01 §6–7 (``[]``: ok).

    Useful when a deployment customises the descriptions: key = id, PKCE rules, ``grant_admin_scope`` targets,
    ``for_types`` ⊆ the scope's RAR types, limits and choices per format, defaults only on optional fields,
    consent-scope rules (optional fields, ``jwk`` default null, the selection-type field present), direct-access
    rules (``client_credentials``; no merge, purpose or scope-modification fields).
    """
    found: list[str] = []
    docs = metadata_json(descriptions)
    for scope_id, desc in docs.items():
        where = f"scope {scope_id!r}"
        if desc.get("id") != scope_id:
            found.append(f"{where}: id {desc.get('id')!r} differs from its key")
        pkce = desc.get("code_challenge_methods_supported") or []
        if "plain" in pkce:
            found.append(f"{where}: PKCE method 'plain' must not be offered")
        if "authorization_code" in (desc.get("grant_types_supported") or []):
            if "S256" not in pkce:
                found.append(f"{where}: authorization_code needs PKCE S256")
        elif pkce:
            found.append(f"{where}: PKCE methods without authorization_code must be []")
        admin = desc.get("grant_admin_scope")
        if admin is not None and docs.get(admin, {}).get("type") != "cds_grant_admin":
            found.append(f"{where}: grant_admin_scope {admin!r} is not a cds_grant_admin scope")
        types = set(desc.get("authorization_details_types_supported") or [])
        consent = bool(desc.get("response_types_supported"))
        if consent:
            if "client_credentials" in (desc.get("grant_types_supported") or []):
                found.append(f"{where}: a consent scope must not offer client_credentials")
            ids = {fd["id"] for fd in desc.get("authorization_details_fields_supported") or []}
            if desc.get("type", "").startswith("cds_") and types and "authorization_form_selection_type" not in ids:
                found.append(f"{where}: authorization_form_selection_type must be offered")
        elif desc.get("type", "").startswith("cds_query_"):
            if "client_credentials" not in (desc.get("grant_types_supported") or []):
                found.append(f"{where}: a direct-access scope needs client_credentials (WG3-01 §6.2)")
            ids = {fd["id"] for fd in desc.get("authorization_details_fields_supported") or []}
            for fid in sorted(ids & {"merge_selection_with", "purpose", "allow_scope_modifications"}):
                found.append(f"{where}: {fid} is not offered without response_types (WG3-01 §7.4)")
        seen: set[str] = set()
        for fd in desc.get("authorization_details_fields_supported") or []:
            fwhere = f"{where} field {fd.get('id')!r}"
            if fd.get("id") in seen:
                found.append(f"{fwhere}: offered twice")
            seen.add(fd.get("id"))
            for_types = set(fd.get("for_types") or [])
            if not for_types or not for_types <= types:
                found.append(f"{fwhere}: for_types must be a non-empty subset of the scope's RAR types")
            fmt = fd.get("format")
            if fmt in _LIMITED_FORMATS and "maximum" not in fd:
                found.append(f"{fwhere}: format {fmt} needs a maximum")
            if ("maximum" in fd) != ("minimum" in fd):
                found.append(f"{fwhere}: maximum and minimum go together")
            if fmt in _CHOICE_FORMATS and "choices" not in fd:
                found.append(f"{fwhere}: format {fmt} needs choices")
            if fd.get("is_required") and "default" in fd:
                found.append(f"{fwhere}: a required field has no default")
            if consent and desc.get("type", "").startswith("cds_") and fd.get("is_required"):
                found.append(f"{fwhere}: consent-scope fields are optional (WG3-01 §7)")
            if fd.get("id") == "jwk" and ("default" not in fd or fd["default"] is not None):
                found.append(f"{fwhere}: the jwk default must be null")
            for choice in fd.get("choices") or []:
                has_format = "usagesegment_format" in choice
                if has_format != (fd.get("id") == "include_usage_segment_value_types"):
                    found.append(f"{fwhere} choice {choice.get('id')!r}: usagesegment_format is required here "
                                 "and forbidden elsewhere")
    return found
