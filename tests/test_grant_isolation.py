"""A grant sees what its own authorization covers (issue 12 item 3), end to end over public HTTP only.

One sandbox customer with three UsagePoints (electric, gas, water) authorizes two CDS clients of the gateway: client
A gets UsagePoint 1, client B UsagePoints 1 and 2 (the customer ticks them at the custodian's authorize page). Both
upstream authorizations name the same customer (``customerResourceURI``, as in the GBA contract example and at
field custodians), so the gateway's customer is the same for both grants. After both first fetches,
every listing of each grant shows only what its own authorization brought (accounts are not offered by the
sandbox's scopes: the store-level tests cover them and bill statements) (A never sees the gas meter B's
authorization covers), with exact sums against the generator's own totals, on SQLite and PostgreSQL. The two grants
see different ids for the shared electric meter: ids are namespaced per grant (docs/mapping.md §2.3), so two
clients cannot link a customer through them.
"""

from __future__ import annotations

from decimal import Decimal

import pytest
from bridge_stack import consent, generate_start, listing, register, start_bridge, usage_segments, wait_grant

pytestmark = pytest.mark.slow
DAYS = 40  # a whole calendar month at least: the generator bills whole months (bill sections)
CUSTOMER = 2  # the generator's second profile: UsagePoints 1 electric, 2 gas, 3 water
#: every listing the usage scope can include at the sandbox (accounts and meter or contract numbers need FB_57,
#: which it does not offer; value types it has data for: the default "all" asks for demand it cannot give)
DETAILS = [{"type": "cds_usage_1", "segment_start": "P1Y", "include_meter_numbers": False,
            "include_contract_numbers": False, "include_accounts": False, "include_service_contracts": True,
            "include_service_points": True, "include_meter_devices": True, "include_bill_sections": True,
            "include_usage_segment_value_types": ["electric_usage_forward", "natural_gas_usage", "water_usage"]}]
#: as at field custodians, every token response names the customer (customerResourceURI): both authorizations
#: belong to one customer, which is what made the gateway mix them up
FIELD_LIKE = {"GREENBRIDGE_SANDBOX_CUSTOMER_RESOURCE_URI": "always"}
LISTINGS = ("service_contracts", "service_points", "meter_devices", "bill_sections", "usage_segments")
ID = {"accounts": "cds_account_id", "service_contracts": "cds_servicecontract_id",
      "service_points": "cds_servicepoint_id", "meter_devices": "cds_meterdevice_id",
      "bill_sections": "cds_billsection_id", "usage_segments": "cds_usagesegment_id"}


def _source(usage_point: int, series: str) -> tuple[int, Decimal]:
    """(readings, exact sum of raw values) of one UsagePoint's series in what the sandbox generated."""
    import io

    from espi.generate import write_feed
    from sandbox.data import generated_spec

    totals = write_feed(io.StringIO(), generated_spec(CUSTOMER, DAYS, generate_start(DAYS), "https://x.test/r"))
    count, raw = totals.series[(usage_point, series)][:2]
    return count, Decimal(raw)


def _totals(segments, value_type: str) -> tuple[int, Decimal]:
    """(values, exact sum) of one value type's readings (not the billing values from UsageSummaries, D11)."""
    count, total = 0, Decimal(0)
    for segment in segments:
        columns = [i for i, f in enumerate(segment["formats"])
                   if f["type"] == value_type and not f["id"].endswith("_billing")]
        for row in segment["values"]:
            for index in columns:
                if row[index] is not None:
                    for number in row[index].values():
                        count, total = count + 1, total + Decimal(number)
    return count, total


def _everything(bridge, token: str) -> dict[str, list[dict]]:
    return {name: listing(bridge, token, name) for name in LISTINGS}


def _assert_only_its_own(seen: dict[str, list[dict]], meters: int) -> None:
    """Every listing holds the objects of ``meters`` UsagePoints, and every reference stays inside the grant."""
    ids = {name: {obj[ID[name]] for obj in objects} for name, objects in seen.items()}
    assert len(seen["service_points"]) == meters
    assert len(seen["meter_devices"]) == meters
    assert len(seen["service_contracts"]) == meters
    for meter in seen["meter_devices"]:
        assert set(meter["current_servicepoints"]) <= ids["service_points"]
    for point in seen["service_points"]:
        assert set(point["current_servicecontracts"]) <= ids["service_contracts"]
    assert len({contract["cds_account_id"] for contract in seen["service_contracts"]}) == 1
    assert seen["bill_sections"], "the generator writes monthly UsageSummaries"
    for section in seen["bill_sections"]:
        assert set(section["related_servicepoints"]) <= ids["service_points"]
    assert seen["usage_segments"]
    for segment in seen["usage_segments"]:
        assert set(segment["related_servicepoints"]) <= ids["service_points"]
        assert set(segment["related_meterdevices"]) <= ids["meter_devices"]


def test_two_clients_two_authorizations_of_one_customer_each_see_only_their_own(tmp_path, database_url):
    with start_bridge(tmp_path / "bridge", customers=CUSTOMER, days=DAYS, database_url=database_url,
                      sandbox_env=FIELD_LIKE) as bridge:
        client_a = register(bridge.gateway, "Client A")
        client_b = register(bridge.gateway, "Client B")
        a = consent(bridge, client_a, customer_index=CUSTOMER - 1, details=DETAILS, usage_points=["1"])
        b = consent(bridge, client_b, customer_index=CUSTOMER - 1, details=DETAILS, usage_points=["1", "2"])
        assert a.customer == b.customer
        with bridge.sessions()() as session:  # the gateway's customer is the same: only data sets keep them apart
            from cds.store.models import Grant

            assert session.get(Grant, a.grant_id).customer_id == session.get(Grant, b.grant_id).customer_id
        wait_grant(bridge, client_a, a.grant_id, "active")
        wait_grant(bridge, client_b, b.grant_id, "active")

        seen_a, seen_b = _everything(bridge, a.access_token), _everything(bridge, b.access_token)
        _assert_only_its_own(seen_a, meters=1)
        _assert_only_its_own(seen_b, meters=2)

        electric, gas = _source(0, "electric_forward"), _source(1, "gas")
        assert _totals(seen_a["usage_segments"], "electric_usage") == (electric[0], electric[1] / 1000)  # Wh → kWh
        assert _totals(seen_a["usage_segments"], "natural_gas_usage") == (0, 0)  # B's gas meter is not A's
        assert _totals(seen_b["usage_segments"], "electric_usage") == (electric[0], electric[1] / 1000)
        assert _totals(seen_b["usage_segments"], "natural_gas_usage") == (gas[0], gas[1] / 1000)  # therm × 10⁻³
        assert seen_a["usage_segments"] == usage_segments(bridge, a.access_token)

        # the same electric meter, seen by two clients under two ids: nothing links the customer across them
        for name in LISTINGS:
            assert not {o[ID[name]] for o in seen_a[name]} & {o[ID[name]] for o in seen_b[name]}, name
