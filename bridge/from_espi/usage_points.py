"""UsagePoint → CDS service point, and the synthetic meter device, service contract and account that stand in
for customer data most Connect My Data feeds do not carry (CDS WG3-01 §10.1–§10.4; docs/mapping.md D2).

Every CDS data object needs an account and most scopes need contracts and meters, but ESPI customer data
(customer.xsd) comes from a separate URI under separate Function Blocks. Without it, greenbridge makes one
account per subscription and one contract and one meter per UsagePoint, marked ``greenbridge_synthetic``, with
nothing invented: unknown numbers stay null or absent.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from bridge.from_espi.value_formats import known, multiplier
from cds.jsonenc import plain_decimal
from espi.feed import UsagePointNode
from espi.usage import SummaryMeasurement, UsagePoint

#: ESPI ServiceKind → CDS commodity (service point type / service type)
SERVICE_KIND_COMMODITY = {0: "electric", 1: "natural_gas", 2: "water"}
#: UsagePoint roleFlags bits (HexBinary16, bit 1 = least significant), espi.md §1.3
ROLE_FLAGS = ("is_mirror", "is_premises_aggregation_point", "is_pev", "is_der", "is_revenue_quality", "is_dc")
AMI_READY = frozenset({"enabled", "operable", "billingApproved"})


def stamps(stamp: str) -> dict[str, str]:
    return {"cds_created": stamp, "cds_modified": stamp, "cds_synced": stamp}


def usage_point_commodity(node: UsagePointNode, series_commodities: set[str]) -> str | None:
    """The UsagePoint's commodity: ServiceCategory, else the one commodity its series agree on."""
    kind = node.usage_point.service_kind if node.usage_point else None
    if kind in SERVICE_KIND_COMMODITY:
        return SERVICE_KIND_COMMODITY[kind]
    commodities = series_commodities & {"electric", "natural_gas", "water"}
    if len(commodities) == 1:
        return next(iter(commodities))
    return None


def _measurement(sm: SummaryMeasurement | None) -> dict[str, Any] | None:
    if sm is None or known(sm.value) is None:
        return None
    p = multiplier(sm.power_of_ten_multiplier)
    result: dict[str, Any] = {"value": plain_decimal(Decimal(sm.value).scaleb(p)), "uom": sm.uom}
    if sm.time_stamp is not None:
        result["time_stamp"] = sm.time_stamp
    return result


def usage_point_details(up: UsagePoint | None) -> dict[str, Any]:
    """``greenbridge_usage_point``: the technical UsagePoint attributes CDS has no field for."""
    if up is None:
        return {}
    details: dict[str, Any] = {}
    if up.role_flags is not None:
        details["role_flags"] = {name: bool(up.role_flags >> bit & 1) for bit, name in enumerate(ROLE_FLAGS)}
    for name in ("status", "ami_billing_ready", "check_billing", "connection_state", "grounded", "is_sdp",
                 "is_virtual", "minimal_usage_expected", "phase_code", "read_cycle", "service_priority"):
        value = getattr(up, name)
        if value is not None:
            details[name] = value
    if up.service_kind is not None:
        details["service_kind"] = up.service_kind
    for name in ("estimated_load", "nominal_service_voltage", "rated_current", "rated_power"):
        measurement = _measurement(getattr(up, name))
        if measurement is not None:
            details[name] = measurement
    if up.pnode_refs and up.pnode_refs.pnode_ref:
        details["pnode_refs"] = [{"type": r.apnode_type, "ref": r.ref} for r in up.pnode_refs.pnode_ref]
    if up.aggregate_node_refs and up.aggregate_node_refs.aggregate_node_ref:
        details["aggregate_node_refs"] = [{"type": r.anode_type, "ref": r.ref}
                                          for r in up.aggregate_node_refs.aggregate_node_ref]
    return details


def service_point(node: UsagePointNode, servicepoint_id: str, stamp: str, commodity: str | None,
                  current_contracts: list[str], address: str | None = None,
                  local_time: dict[str, Any] | None = None) -> dict[str, Any]:
    """A CDS Service Point from a UsagePoint (mapping-notes §4)."""
    up = node.usage_point
    types: list[str] = []
    if commodity:
        types.append(commodity)
    types.append("single_service")
    role_flags = up.role_flags if up is not None and up.role_flags is not None else 0
    if not role_flags & 0b10:  # not a premises aggregation point: a point of delivery at the grid's edge
        types.append("edge")
    if up is not None and up.is_virtual is not None:
        types.append("virtual" if up.is_virtual else "physical")
    result: dict[str, Any] = {
        "cds_servicepoint_id": servicepoint_id,
        **stamps(stamp),
        "servicepoint_number": None,
        "servicepoint_types": types,
    }
    if address is not None:
        result["servicepoint_address"] = address
    result["current_servicecontracts"] = current_contracts
    result["previous_servicecontracts"] = []
    result["premises"] = []
    details = usage_point_details(up)
    if details:
        result["greenbridge_usage_point"] = details
    if local_time:
        result["greenbridge_local_time"] = local_time
    if node.implicit:
        result["greenbridge_implicit"] = True
    return result


def synthetic_meter_device(meterdevice_id: str, stamp: str, servicepoint_id: str, commodity: str | None,
                           value_types: set[str], directions: set[str], up: UsagePoint | None) -> dict[str, Any]:
    """One meter per UsagePoint when the feed names none (mapping-notes §5, §10)."""
    types: list[str] = []
    if commodity:
        types.append(f"{commodity}_usage")
    if directions == {"reverse"}:
        types.append("reverse_only")  # only energy received from the customer: a generation meter
    elif directions & {"reverse", "net"}:
        types.append("bidirectional")
    if "electric_demand" in value_types:
        types.append("electric_demand")
    if up is not None and up.ami_billing_ready in AMI_READY:
        types.append("ami_meter")
    return {
        "cds_meterdevice_id": meterdevice_id,
        **stamps(stamp),
        "meter_number": None,
        "meter_types": types,
        "current_servicepoints": [servicepoint_id],
        "previous_servicepoints": [],
        "greenbridge_synthetic": True,
    }


def contract_status(up: UsagePoint | None) -> str:
    if up is None:
        return "unknown"
    if up.connection_state == "connected" or (up.connection_state is None and up.status == 1):
        return "active"
    if up.connection_state in ("logicallyDisconnected", "physicallyDisconnected") or up.status == 0:
        return "paused"
    return "unknown"


def synthetic_service_contract(servicecontract_id: str, stamp: str, account_id: str, commodity: str | None,
                               up: UsagePoint | None, metered: bool, billed_monthly: bool,
                               rateplan_code: str | None) -> dict[str, Any]:
    """One contract per UsagePoint when the feed has no CustomerAgreement (mapping-notes §7, §10)."""
    service_types: list[str] = [commodity] if commodity else []
    if up is not None and up.ami_billing_ready == "nonMetered":
        service_types.append("unmetered")
    elif metered:
        service_types.append("metered")
    contract_types = ["utility_service"]
    if billed_monthly:
        contract_types.append("billed_monthly")
    sdp = up.service_delivery_point if up is not None else None
    result: dict[str, Any] = {
        "cds_servicecontract_id": servicecontract_id,
        **stamps(stamp),
        "cds_account_id": account_id,
        "contract_number": sdp.customer_agreement if sdp is not None else None,
        "contract_types": contract_types,
        "contract_status": contract_status(up),
        "service_types": service_types,
    }
    if rateplan_code:
        result["rateplan_code"] = rateplan_code
    result["greenbridge_synthetic"] = True
    return result


def synthetic_account(account_id: str, stamp: str, entity: dict[str, Any] | None) -> dict[str, Any]:
    """One account per subscription when the feed has no CustomerAccount (mapping-notes §6, §10)."""
    result: dict[str, Any] = {
        "cds_account_id": account_id,
        **stamps(stamp),
        "cds_account_parent": None,
    }
    if entity is not None:
        result["account_entity"] = entity
    result["account_types"] = ["customer"]
    result["account_programs"] = []
    result["greenbridge_synthetic"] = True
    return result
