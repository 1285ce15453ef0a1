"""Retail customer (PII) resources of ESPI 4.0 ``customer.xsd`` (REQ.21 customer; espi.md §1.11).

The 4.0 schema builds these by inheritance (IdentifiedObject ← Document ← Agreement, OrganisationRole,
Location ← WorkLocation, Asset ← AssetContainer ← EndDevice ← Meter), and so do these dataclasses: inherited
elements come first, as in the XSD sequence.
These resources hold personal data: nothing here is logged, and the CDS projection gates every PII field.
"""

from __future__ import annotations

from dataclasses import dataclass

from espi.model import build, nested, to_bool, to_decimal_text, to_int, to_str, to_time, xml_field
from espi.usage import DateTimeInterval, SummaryMeasurement


@dataclass(frozen=True, slots=True)
class Status:
    """customer.xsd Status: a complex type (``<status>active</status>`` is invalid, but seen; see ``text``)."""

    value: str | None = xml_field("value", to_str)
    date_time: int | None = xml_field("dateTime", to_time)
    remark: str | None = xml_field("remark", to_str)
    reason: str | None = xml_field("reason", to_str)
    extra: tuple[tuple[str, str], ...] = ()


def to_status(element, diagnostics) -> Status:
    """Reads a Status; a bare text value (an invalid but real shape) becomes ``Status(value=text)``."""
    status = build(Status, element, diagnostics)
    if status.value is None and len(element) == 0 and element.text and element.text.strip():
        diagnostics.at(element, "status given as plain text instead of <value>; accepted",
                       kind="status as plain text")
        return Status(value=element.text.strip())
    return status


@dataclass(frozen=True, slots=True)
class StreetDetail:
    number: str | None = xml_field("number", to_str)
    name: str | None = xml_field("name", to_str)
    suffix: str | None = xml_field("suffix", to_str)
    prefix: str | None = xml_field("prefix", to_str)
    type: str | None = xml_field("type", to_str)
    code: str | None = xml_field("code", to_str)
    building_name: str | None = xml_field("buildingName", to_str)
    suite_number: str | None = xml_field("suiteNumber", to_str)
    address_general: str | None = xml_field("addressGeneral", to_str)
    address_general2: str | None = xml_field("addressGeneral2", to_str)
    address_general3: str | None = xml_field("addressGeneral3", to_str)
    within_town_limits: bool | None = xml_field("withinTownLimits", to_bool)


@dataclass(frozen=True, slots=True)
class TownDetail:
    code: str | None = xml_field("code", to_str)
    section: str | None = xml_field("section", to_str)
    name: str | None = xml_field("name", to_str)
    county: str | None = xml_field("county", to_str)
    state_or_province: str | None = xml_field("stateOrProvince", to_str)
    country: str | None = xml_field("country", to_str)


@dataclass(frozen=True, slots=True)
class StreetAddress:
    street_detail: StreetDetail | None = xml_field("streetDetail", nested(StreetDetail))
    town_detail: TownDetail | None = xml_field("townDetail", nested(TownDetail))
    status: Status | None = xml_field("status", to_status)
    postal_code: str | None = xml_field("postalCode", to_str)
    po_box: str | None = xml_field("poBox", to_str)


@dataclass(frozen=True, slots=True)
class TelephoneNumber:
    country_code: str | None = xml_field("countryCode", to_str)
    area_code: str | None = xml_field("areaCode", to_str)
    city_code: str | None = xml_field("cityCode", to_str)
    local_number: str | None = xml_field("localNumber", to_str)
    ext: str | None = xml_field("ext", to_str)
    dial_out: str | None = xml_field("dialOut", to_str)
    international_prefix: str | None = xml_field("internationalPrefix", to_str)
    itu_phone: str | None = xml_field("ituPhone", to_str)


@dataclass(frozen=True, slots=True)
class ElectronicAddress:
    lan: str | None = xml_field("lan", to_str)
    mac: str | None = xml_field("mac", to_str)
    email1: str | None = xml_field("email1", to_str)
    email2: str | None = xml_field("email2", to_str)
    web: str | None = xml_field("web", to_str)
    radio: str | None = xml_field("radio", to_str)
    user_id: str | None = xml_field("userID", to_str, secret=True)
    password: str | None = xml_field("password", to_str, secret=True)


@dataclass(frozen=True, slots=True)
class Organisation:
    street_address: StreetAddress | None = xml_field("streetAddress", nested(StreetAddress))
    postal_address: StreetAddress | None = xml_field("postalAddress", nested(StreetAddress))
    phone1: TelephoneNumber | None = xml_field("phone1", nested(TelephoneNumber))
    phone2: TelephoneNumber | None = xml_field("phone2", nested(TelephoneNumber))
    electronic_address: ElectronicAddress | None = xml_field("electronicAddress", nested(ElectronicAddress))
    organisation_name: str | None = xml_field("organisationName", to_str)


@dataclass(frozen=True, slots=True)
class Priority:
    rank: int | None = xml_field("rank", to_int)
    type: str | None = xml_field("type", to_str)
    justification: str | None = xml_field("justification", to_str)


@dataclass(frozen=True, slots=True)
class IdentifiedObject:
    """customer.xsd IdentifiedObject: only the deprecated ``name`` (identity lives in the Atom envelope)."""

    name: str | None = xml_field("name", to_str)


@dataclass(frozen=True, slots=True)
class OrganisationRole(IdentifiedObject):
    organisation: Organisation | None = xml_field("Organisation", nested(Organisation))


@dataclass(frozen=True, slots=True)
class Customer(OrganisationRole):
    """customer.xsd Customer (OrganisationRole)."""

    kind: str | None = xml_field("kind", to_str)
    special_need: str | None = xml_field("specialNeed", to_str)
    vip: bool | None = xml_field("vip", to_bool)
    puc_number: str | None = xml_field("pucNumber", to_str)
    status: Status | None = xml_field("status", to_status)
    priority: Priority | None = xml_field("priority", nested(Priority))
    locale: str | None = xml_field("locale", to_str)
    customer_name: str | None = xml_field("customerName", to_str)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class AccountNotification:
    method_kind: str | None = xml_field("methodKind", to_str)
    time: int | None = xml_field("time", to_time)
    note: str | None = xml_field("note", to_str)
    customer_notification_kind: str | None = xml_field("customerNotificationKind", to_str)


@dataclass(frozen=True, slots=True)
class Document(IdentifiedObject):
    """customer.xsd Document, the base of CustomerAccount and Agreement."""

    type: str | None = xml_field("type", to_str)
    author_name: str | None = xml_field("authorName", to_str)
    created_date_time: int | None = xml_field("createdDateTime", to_time)
    last_modified_date_time: int | None = xml_field("lastModifiedDateTime", to_time)
    revision_number: str | None = xml_field("revisionNumber", to_str)
    electronic_address: ElectronicAddress | None = xml_field("electronicAddress", nested(ElectronicAddress))
    subject: str | None = xml_field("subject", to_str)
    title: str | None = xml_field("title", to_str)
    doc_status: Status | None = xml_field("docStatus", to_status)
    status: Status | None = xml_field("status", to_status)
    comment: str | None = xml_field("comment", to_str)


@dataclass(frozen=True, slots=True)
class CustomerAccount(Document):
    """customer.xsd CustomerAccount (Document). ``account_id`` is 4.0 only."""

    billing_cycle: str | None = xml_field("billingCycle", to_str)
    budget_bill: str | None = xml_field("budgetBill", to_str)
    last_bill_amount: int | None = xml_field("lastBillAmount", to_int)
    notifications: tuple[AccountNotification, ...] = xml_field(
        "notifications", nested(AccountNotification), many=True)
    contact_info: Organisation | None = xml_field("contactInfo", nested(Organisation))
    account_id: str | None = xml_field("accountId", to_str)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ProgramDate:
    program_date: int | None = xml_field("programDate", to_time)
    program_date_description: str | None = xml_field("programDateDescription", to_str)


@dataclass(frozen=True, slots=True)
class DemandResponseProgram:
    program_name: str | None = xml_field("programName", to_str)
    enrollment_status: str | None = xml_field("enrollmentStatus", to_str)
    program_description: str | None = xml_field("programDescription", to_str)
    program_date: tuple[ProgramDate, ...] = xml_field("programDate", nested(ProgramDate), many=True)
    capacity_reservation_level: SummaryMeasurement | None = xml_field(
        "capacityReservationLevel", nested(SummaryMeasurement))
    dr_program_nomination: SummaryMeasurement | None = xml_field(
        "DRProgramNomination", nested(SummaryMeasurement))


@dataclass(frozen=True, slots=True)
class Agreement(Document):
    sign_date: int | None = xml_field("signDate", to_time)
    validity_interval: DateTimeInterval | None = xml_field("validityInterval", nested(DateTimeInterval))


@dataclass(frozen=True, slots=True)
class CustomerAgreement(Agreement):
    """customer.xsd CustomerAgreement (Agreement ← Document). ``agreement_id`` is 4.0 only."""

    load_mgmt: str | None = xml_field("loadMgmt", to_str)
    is_pre_pay: bool | None = xml_field("isPrePay", to_bool)
    shut_off_date_time: int | None = xml_field("shutOffDateTime", to_time)
    demand_response_programs: tuple[DemandResponseProgram, ...] = xml_field(
        "DemandResponseProgram", nested(DemandResponseProgram), many=True)
    pricing_structures: tuple[str, ...] = xml_field("PricingStructures", to_str, many=True)
    currency: int | None = xml_field("currency", to_int)
    future_status: tuple[Status, ...] = xml_field("futureStatus", to_status, many=True)
    agreement_id: str | None = xml_field("agreementId", to_str)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class PositionPoint:
    x_position: str | None = xml_field("xPosition", to_str)
    y_position: str | None = xml_field("yPosition", to_str)
    z_position: str | None = xml_field("zPosition", to_str)


@dataclass(frozen=True, slots=True)
class UsagePointRefs:
    usage_point: tuple[str, ...] = xml_field("UsagePoint", to_str, many=True)


@dataclass(frozen=True, slots=True)
class Location(IdentifiedObject):
    type: str | None = xml_field("type", to_str)
    main_address: StreetAddress | None = xml_field("mainAddress", nested(StreetAddress))
    secondary_address: StreetAddress | None = xml_field("secondaryAddress", nested(StreetAddress))
    phone1: TelephoneNumber | None = xml_field("phone1", nested(TelephoneNumber))
    phone2: TelephoneNumber | None = xml_field("phone2", nested(TelephoneNumber))
    electronic_address: ElectronicAddress | None = xml_field("electronicAddress", nested(ElectronicAddress))
    geo_info_reference: str | None = xml_field("geoInfoReference", to_str)
    direction: str | None = xml_field("direction", to_str)
    status: Status | None = xml_field("status", to_status)
    position_points: tuple[PositionPoint, ...] = xml_field("positionPoints", nested(PositionPoint), many=True)


@dataclass(frozen=True, slots=True)
class ServiceLocation(Location):
    """customer.xsd ServiceLocation (WorkLocation ← Location). ``usage_points`` joins PII to usage data."""

    access_method: str | None = xml_field("accessMethod", to_str)
    site_access_problem: str | None = xml_field("siteAccessProblem", to_str)
    needs_inspection: bool | None = xml_field("needsInspection", to_bool)
    usage_point_refs: tuple[UsagePointRefs, ...] = xml_field("UsagePoints", nested(UsagePointRefs), many=True)
    outage_block: str | None = xml_field("outageBlock", to_str)
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def usage_points(self) -> tuple[str, ...]:
        """The UsagePoint hrefs this location serves (trimmed, in document order)."""
        return tuple(href for refs in self.usage_point_refs for href in refs.usage_point)


@dataclass(frozen=True, slots=True)
class ServiceSupplier(OrganisationRole):
    """customer.xsd ServiceSupplier (OrganisationRole)."""

    kind: str | None = xml_field("kind", to_str)
    issuer_identification_number: str | None = xml_field("issuerIdentificationNumber", to_str)
    effective_date: int | None = xml_field("effectiveDate", to_time)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class LifecycleDate:
    manufactured_date: int | None = xml_field("manufacturedDate", to_time)
    purchase_date: int | None = xml_field("purchaseDate", to_time)
    received_date: int | None = xml_field("receivedDate", to_time)
    installation_date: int | None = xml_field("installationDate", to_time)
    removal_date: int | None = xml_field("removalDate", to_time)
    retired_date: int | None = xml_field("retiredDate", to_time)


@dataclass(frozen=True, slots=True)
class AcceptanceTest:
    type: str | None = xml_field("type", to_str)
    success: bool | None = xml_field("success", to_bool)
    date_time: int | None = xml_field("dateTime", to_time)


@dataclass(frozen=True, slots=True)
class MeterMultiplier:
    kind: str | None = xml_field("kind", to_str)
    value: str | None = xml_field("value", to_decimal_text)


@dataclass(frozen=True, slots=True)
class Asset(IdentifiedObject):
    """customer.xsd Asset (and AssetContainer, which adds nothing)."""

    type: str | None = xml_field("type", to_str)
    utc_number: str | None = xml_field("utcNumber", to_str)
    serial_number: str | None = xml_field("serialNumber", to_str)
    lot_number: str | None = xml_field("lotNumber", to_str)
    purchase_price: int | None = xml_field("purchasePrice", to_int)
    critical: bool | None = xml_field("critical", to_bool)
    electronic_address: ElectronicAddress | None = xml_field("electronicAddress", nested(ElectronicAddress))
    lifecycle: LifecycleDate | None = xml_field("lifecycle", nested(LifecycleDate))
    acceptance_test: AcceptanceTest | None = xml_field("acceptanceTest", nested(AcceptanceTest))
    initial_condition: str | None = xml_field("initialCondition", to_str)
    initial_loss_of_life: str | None = xml_field("initialLossOfLife", to_decimal_text)
    status: Status | None = xml_field("status", to_status)


@dataclass(frozen=True, slots=True)
class EndDevice(Asset):
    """customer.xsd EndDevice (AssetContainer ← Asset)."""

    is_virtual: bool | None = xml_field("isVirtual", to_bool)
    is_pan: bool | None = xml_field("isPan", to_bool)
    install_code: str | None = xml_field("installCode", to_str, secret=True)
    amr_system: str | None = xml_field("amrSystem", to_str)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class Meter(EndDevice):
    """customer.xsd Meter (EndDevice)."""

    form_number: str | None = xml_field("formNumber", to_str)
    meter_multipliers: tuple[MeterMultiplier, ...] = xml_field(
        "MeterMultipliers", nested(MeterMultiplier), many=True)
    interval_length: int | None = xml_field("intervalLength", to_int)


@dataclass(frozen=True, slots=True)
class StatementRef:
    file_name: str | None = xml_field("fileName", to_str)
    media_type: str | None = xml_field("mediaType", to_str)
    statement_url: str | None = xml_field("statementURL", to_str)


@dataclass(frozen=True, slots=True)
class Statement:
    """customer.xsd Statement (4.0): a bill document reference."""

    issue_date_time: int | None = xml_field("issueDateTime", to_time)
    statement_refs: tuple[StatementRef, ...] = xml_field("statementRef", nested(StatementRef), many=True)
    extra: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ProgramDateIdMapping:
    program_date_type: str | None = xml_field("programDateType", to_str)
    code: str | None = xml_field("code", to_str)
    name: str | None = xml_field("name", to_str)
    note: str | None = xml_field("note", to_str)


@dataclass(frozen=True, slots=True)
class ProgramDateIdMappings:
    program_date_id_mapping: tuple[ProgramDateIdMapping, ...] = xml_field(
        "programDateIdMapping", nested(ProgramDateIdMapping), many=True)
    extra: tuple[tuple[str, str], ...] = ()
