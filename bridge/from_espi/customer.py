"""ESPI retail customer data (customer.xsd) → CDS accounts, service contracts, meter devices and service point
addresses (CDS WG3-01 §10.1–§10.4; docs/mapping.md "Accounts", "Service contracts", "Meter devices").

The customer tree (Customer → CustomerAccount → CustomerAgreement → ServiceLocation → Meter, ServiceSupplier under
the agreement, Statement under the account) is linked by Atom links like usage data. The join to usage data is
``ServiceLocation/UsagePoints/UsagePoint``, the href of a UsagePoint, compared exactly with its ``self`` link.
These objects carry personal data: the CDS projection (include_* fields) decides what a grant sees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from bridge.from_espi.usage_points import stamps
from espi import customer as cust
from espi.atom import Entry
from espi.currency import currency_alpha
from espi.feed import FeedGraph

SUPPLIER_TYPES = {"utility": ["distributor"], "retailer": ["supplier", "retailer"], "lse": ["supplier"]}
ACCOUNT_TYPES = {
    "residential": ["residential"],
    "residentialAndCommercial": ["residential", "commercial"],
    "residentialAndStreetlight": ["residential"],
    "residentialStreetlightOthers": ["residential"],
    "residentialFarmService": ["residential", "agriculture"],
    "commercialIndustrial": ["commercial", "industrial"],
    "internalUse": ["internal"],
}
STATUSES = {"active": "active", "suspended": "suspended", "closed": "closed", "inactive": "closed"}
CONTRACT_STATUSES = {"active": "active", "suspended": "paused", "paused": "paused", "closed": "closed",
                     "inactive": "closed", "stopped": "stopped"}
SERVICE_KIND_TYPES = {"electricity": "electric", "gas": "natural_gas", "water": "water",
                      "sewerage": "waste_water", "refuse": "solid_waste"}


def format_address(address: cust.StreetAddress | None) -> str | None:
    """A postal address as lines joined with ``\\n`` (street, town, country), skipping empty parts."""
    if address is None:
        return None
    lines: list[str] = []
    street = address.street_detail
    if street is not None:
        first = " ".join(p for p in (street.number, street.prefix, street.name, street.suffix, street.type) if p)
        general = [p for p in (street.address_general, street.address_general2, street.address_general3) if p]
        if first:
            lines.append(first)
        lines.extend(general)
        if street.suite_number:
            lines.append(f"Suite {street.suite_number}")
        if street.building_name:
            lines.insert(0, street.building_name)
    if address.po_box:
        lines.append(f"PO Box {address.po_box}")
    town = address.town_detail
    town_line = ""
    if town is not None:
        town_line = ", ".join(p for p in (town.name, town.state_or_province) if p)
    if address.postal_code:
        town_line = f"{town_line} {address.postal_code}".strip()
    if town_line:
        lines.append(town_line)
    if town is not None and town.country:
        lines.append(town.country)
    return "\n".join(lines) if lines else None


def e164(number: cust.TelephoneNumber | None, region: str | None) -> str | None:
    """A telephone number in E.164 (CDS phone type), or None when it is not a valid number."""
    if number is None:
        return None
    import phonenumbers  # large metadata: loaded only when a feed has phone numbers

    if number.itu_phone:
        raw = number.itu_phone
    else:
        raw = "".join(p for p in (number.area_code, number.city_code, number.local_number) if p)
        if not raw:
            return None
        country = (number.country_code or "").lstrip("+")
        if country.isdigit():
            raw = f"+{country}{raw}"
        elif len(country) == 2 and country.isalpha():
            region = country.upper()
    try:
        parsed = phonenumbers.parse(raw, region)
    except phonenumbers.NumberParseException:
        return None
    if not phonenumbers.is_valid_number(parsed):
        return None
    return phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)


@dataclass(slots=True)
class CustomerObjects:
    """What the customer tree of a feed became, and how it joins the UsagePoints."""

    accounts: list[dict[str, Any]] = field(default_factory=list)
    service_contracts: list[dict[str, Any]] = field(default_factory=list)
    meter_devices: list[dict[str, Any]] = field(default_factory=list)
    #: UsagePoint self href → (contract ids, address, account id, paired meter id or None)
    usage_points: dict[str, dict[str, Any]] = field(default_factory=dict)
    account_numbers: dict[str, str | None] = field(default_factory=dict)
    #: CustomerAccount entry seq → account id
    account_by_seq: dict[int, str] = field(default_factory=dict)
    statements: list[tuple[Entry, cust.Statement, str | None]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.accounts or self.service_contracts or self.meter_devices)


def translate_customer(graph: FeedGraph, id_of: Callable[..., str], key_of: Callable[[Entry], str], stamp: str,
                       default_entity: dict[str, Any] | None, phone_region: str | None,
                       documentation_url: str) -> CustomerObjects:
    """Builds the CDS objects of every customer resource in the graph (see the module docstring)."""
    out = CustomerObjects()
    customers = {entry.seq: value for entry, value in graph.resources("Customer")}
    customers.update({entry.seq: value for entry, value in graph.resources("RetailCustomer")})
    suppliers: dict[int, dict[str, Any]] = {}  # agreement seq → Entity
    for entry, supplier in graph.resources("ServiceSupplier"):
        agreement = graph.customer_parent(entry, "CustomerAgreement")
        entity = _entity(supplier, id_of("entity", key_of(entry)))
        if agreement is not None:
            suppliers.setdefault(agreement.seq, entity)

    agreements_of_account: dict[int, list[int]] = {}
    agreement_entries = graph.resources("CustomerAgreement")
    for entry, _agreement in agreement_entries:
        account = graph.customer_parent(entry, "CustomerAccount")
        if account is not None:
            agreements_of_account.setdefault(account.seq, []).append(entry.seq)

    for entry, account in graph.resources("CustomerAccount"):
        customer_entry = graph.customer_parent(entry, "Customer")
        owner = customers.get(customer_entry.seq) if customer_entry is not None else None
        entity = next((suppliers[s] for s in agreements_of_account.get(entry.seq, ()) if s in suppliers),
                      default_entity)
        account_id = id_of("account", account.account_id or key_of(entry))
        out.account_by_seq[entry.seq] = account_id
        out.account_numbers[account_id] = account.account_id
        out.accounts.append(_account(account, owner, account_id, entity, stamp, phone_region, id_of,
                                     documentation_url))

    locations_of_agreement: dict[int, list[tuple[Entry, cust.ServiceLocation]]] = {}
    for entry, location in graph.resources("ServiceLocation"):
        agreement = graph.customer_parent(entry, "CustomerAgreement")
        if agreement is not None:
            locations_of_agreement.setdefault(agreement.seq, []).append((entry, location))
    meters_of_location: dict[int, list[tuple[Entry, Any]]] = {}
    for kind in ("Meter", "EndDevice"):
        for entry, meter in graph.resources(kind):
            location = graph.customer_parent(entry, "ServiceLocation")
            meters_of_location.setdefault(location.seq if location is not None else -1, []).append((entry, meter))

    for entry, agreement in agreement_entries:
        account_entry = graph.customer_parent(entry, "CustomerAccount")
        account_id = out.account_by_seq.get(account_entry.seq) if account_entry is not None else None
        if account_id is None:
            continue  # an agreement without an account cannot be a CDS contract (cds_account_id is REQUIRED)
        contract_id = id_of("servicecontract", agreement.agreement_id or key_of(entry))
        locations = locations_of_agreement.get(entry.seq, [])
        address = format_address(locations[0][1].main_address) if locations else None
        entity = suppliers.get(entry.seq, default_entity)
        out.service_contracts.append(_contract(agreement, contract_id, account_id, out.account_numbers[account_id],
                                               address, entity, stamp, documentation_url))
        for location_entry, location in locations:
            meters = meters_of_location.get(location_entry.seq, [])
            hrefs = location.usage_points
            paired = None
            meter_ids = []
            for meter_entry, meter in meters:
                meter_id = id_of("meterdevice", meter.serial_number or key_of(meter_entry))
                meter_ids.append((meter_id, meter))
            if len(hrefs) == 1 and len(meter_ids) == 1:
                paired = meter_ids[0][0]
            for href in hrefs:
                joined = out.usage_points.setdefault(href, {"contracts": [], "address": None, "account": account_id,
                                                            "meter": None, "meters": []})
                joined["contracts"].append(contract_id)
                joined["address"] = joined["address"] or format_address(location.main_address)
                joined["meter"] = joined["meter"] or paired
                joined["meters"].extend(m for m, _ in meter_ids)
            for meter_id, meter in meter_ids:
                out.meter_devices.append(_meter(meter, meter_id, stamp, hrefs))
    for entry, statement in graph.resources("Statement"):
        account_entry = graph.customer_parent(entry, "CustomerAccount")
        account_id = out.account_by_seq.get(account_entry.seq) if account_entry is not None else None
        out.statements.append((entry, statement, account_id))
    return out


def _entity(supplier: cust.ServiceSupplier, entity_id: str) -> dict[str, Any]:
    name = supplier.organisation.organisation_name if supplier.organisation else None
    return {
        "id": entity_id,
        "types": list(SUPPLIER_TYPES.get(supplier.kind or "", ())),  # an unknown kind is not guessed
        "entity_number": supplier.issuer_identification_number or entity_id,
        "entity_name": name or supplier.name or "",
        "entity_abbreviation": None,
    }


def _status(*statuses: cust.Status | None) -> str | None:
    for status in statuses:
        if status is not None and status.value:
            return STATUSES.get(status.value.strip().lower(), "unknown")
    return None


def _account(account: cust.CustomerAccount, owner: cust.Customer | None, account_id: str,
             entity: dict[str, Any] | None, stamp: str, phone_region: str | None,
             id_of: Callable[..., str], documentation_url: str) -> dict[str, Any]:
    result: dict[str, Any] = {"cds_account_id": account_id, **stamps(stamp), "cds_account_parent": None}
    if account.account_id:
        result["account_number"] = account.account_id
    if entity is not None:
        result["account_entity"] = entity
    organisation = owner.organisation if owner is not None else None
    name = (owner.customer_name if owner is not None else None) or (
        organisation.organisation_name if organisation is not None else None)
    if name:
        result["account_name"] = name
    address = format_address(account.contact_info.street_address if account.contact_info else None)
    if address is None and organisation is not None:
        address = format_address(organisation.postal_address) or format_address(organisation.street_address)
    if address:
        result["account_address"] = address
    types = ["customer"]
    if owner is not None and owner.kind:
        types.extend(t for t in ACCOUNT_TYPES.get(owner.kind, ()) if t not in types)
    result["account_types"] = types
    status = _status(account.status, owner.status if owner is not None else None)
    if status:
        result["account_status"] = status
    contacts = []
    for source in (account.contact_info, organisation):
        if source is None:
            continue
        for rank, phone in (("primary", source.phone1), ("secondary", source.phone2)):
            number = e164(phone, phone_region)
            if number and number not in (c["value"] for c in contacts):
                contacts.append({"id": id_of("contact", account_id, number), "types": ["phone_number", rank],
                                 "value": number})
        address = source.electronic_address
        if address is not None:
            for rank, email in (("primary", address.email1), ("secondary", address.email2)):
                if email and "@" in email and email not in (c["value"] for c in contacts):
                    contacts.append({"id": id_of("contact", account_id, email), "types": ["email", rank],
                                     "value": email})
    if contacts:
        result["account_contacts"] = contacts
    programs = []
    if owner is not None and owner.special_need:
        programs.append({"id": id_of("accountprogram", account_id, "special_need"),
                         "program_number": id_of("programnumber", account_id, "special_need")[:12],
                         "types": ["protected", "active"], "name": "Special need",
                         "description": owner.special_need,
                         "documentation": documentation_url})
    result["account_programs"] = programs
    return result


def _contract(agreement: cust.CustomerAgreement, contract_id: str, account_id: str, account_number: str | None,
              address: str | None, entity: dict[str, Any] | None, stamp: str,
              documentation_url: str) -> dict[str, Any]:
    result: dict[str, Any] = {"cds_servicecontract_id": contract_id, **stamps(stamp), "cds_account_id": account_id}
    if account_number:
        result["account_number"] = account_number
    result["contract_number"] = agreement.agreement_id
    if address:
        result["contract_address"] = address
    result["contract_types"] = ["utility_service"]
    if entity is not None:
        result["contract_entity"] = entity
    status = "unknown"
    if agreement.status is not None and agreement.status.value:
        status = CONTRACT_STATUSES.get(agreement.status.value.strip().lower(), "unknown")
    validity = agreement.validity_interval
    if validity is not None and validity.start is not None:
        result["greenbridge_validity"] = {"start": validity.start, "duration": validity.duration}
    result["contract_status"] = status
    result["service_types"] = []
    if agreement.currency:
        currency = currency_alpha(agreement.currency)
        if currency:
            result["greenbridge_currency"] = currency
    programs = []
    for ordinal, program in enumerate(agreement.demand_response_programs):
        state = {"enrolled": "active", "unenrolled": "inactive", "enrolledPending": "eligible"}.get(
            program.enrollment_status or "")
        programs.append({"id": f"{contract_id}-dr{ordinal}", "program_number": f"DR{ordinal + 1}",
                         "types": ["demand_response", state] if state else ["demand_response"],
                         "name": program.program_name or "Demand response",
                         "description": program.program_name or "Demand response program",
                         "documentation": program.program_description
                         or documentation_url})
    if programs:
        result["service_programs"] = programs
    return result


def _meter(meter: Any, meter_id: str, stamp: str, usage_point_hrefs: tuple[str, ...]) -> dict[str, Any]:
    types = []
    if getattr(meter, "is_virtual", None) is not None:
        types.append("virtual_meter" if meter.is_virtual else "physical_meter")
    result: dict[str, Any] = {
        "cds_meterdevice_id": meter_id,
        **stamps(stamp),
        "meter_number": meter.serial_number or meter.utc_number,
        "meter_types": types,
        "current_servicepoints": [],  # filled by the translator once the UsagePoints are known
        "previous_servicepoints": [],
        "greenbridge_usage_point_hrefs": list(usage_point_hrefs),
    }
    details: dict[str, Any] = {}
    if getattr(meter, "form_number", None):
        details["form_number"] = meter.form_number
    multipliers = []
    for multiplier in getattr(meter, "meter_multipliers", ()):
        try:
            value = str(Decimal(multiplier.value)) if multiplier.value is not None else None
        except InvalidOperation:
            value = None
        multipliers.append({"kind": multiplier.kind, "value": value})
    if multipliers:
        details["meter_multipliers"] = multipliers
    for name in ("interval_length", "amr_system", "is_pan"):
        value = getattr(meter, name, None)
        if value is not None:
            details[name] = value
    if details:
        result["greenbridge_meter"] = details
    return result
