"""Conformance with the CDS-WG3-01 customer data listing examples (§13: accounts, accounts of a server-created
grant, service contracts, usage segments, bill statements): the gateway's equivalent response, over HTTP with a
token of the real flows and data ingested from Green Button files, has the same keys and JSON value types.

"Equivalent" means: a grant whose include fields are the ones the example implies (the OPTIONAL fields it shows),
listing the object the example shows. The comparison is ``compare`` of test_conformance_wg1 (null in the example
matches anything, arrays compare element shapes); its findings are filtered through this module's tables, one
entry per example and path, each with the reason:

* ``MISSING_KEYS``: OPTIONAL keys the example has and we cannot produce from Green Button data;
* ``TYPE_EXEMPT``: paths where the spec allows our JSON type (``null``) although the example shows a value.

No key of ours is outside the example: every extra key would be a finding. ``test_every_exemption_is_still_needed``
fails when an exemption no longer matches a finding.

Errata of the examples themselves (cds-spec §6.3), none of which changes a shape, hence no exemption:

* wg3-01_bill-statements-list.json: ``cds_account_id`` ``"68930b861cdfc90cZ"`` has a stray ``Z`` (the accounts
  example's id plus ``Z``), and ``file_uri`` is the statement's own API path. Ours name a real, listed account
  (``test_what_the_examples_get_wrong_we_get_right``); we have no statement files (mapping §6.2).
* wg3-01_usage-segments-list.json: the second ``related_meterdevices`` was a duplicate key (the copy in shared/ is
  repaired to ``related_billsections``); both segments share one ``cds_usagesegment_id``; ``...`` inside
  ``values`` (removed in the copy). Our ids are unique per segment and every ``related_*`` array is present.
* wg3-01_accounts-list-server-created-grant.json: the grant request said account ``1234567``, the listing shows
  ``1234567-9``. Our server-created grant names the listed account's own number.
* all: the ``Authorizatin:`` header typo of the requests (not a response shape).
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import SAMPLES_DIR
from gateway_helpers import bearer, consent_flow, gateway_client, make_config, register, token
from test_conformance_wg1 import EXAMPLES, compare, load

from bridge.from_espi import TranslateOptions
from bridge.from_espi.billing import StatementPolicy
from bridge.ingest import ingest_file
from cds import authorization_details as rar
from cds.grants import create_grant
from cds.store.models import Client
from espi.generate import FeedSpec, write_feed

API = "/cds-api/v1"
CUSTOMER = "customer-1"
SCOPES = "cds_client_admin cds_accounts_1 cds_service_contracts_1 cds_usage_1 cds_bill_statements_1"
HYDRO = SAMPLES_DIR / "hydroone_Retail_Customer_redacted.xml"
if not HYDRO.is_file() or not EXAMPLES.is_dir():
    pytest.skip("the shared samples or CDS examples are not available", allow_module_level=True)

ABBREVIATION = ("Entity `entity_abbreviation` is REQUIRED \"string or null\"; ESPI's ServiceSupplier has no "
                "abbreviation (mapping §5.4), so ours is null")
CUSTOMER_NUMBER = ("OPTIONAL `customer_number`: an ESPI Customer has no customer-facing number, only an Atom id "
                   "(mapping §5.4); left out, as OPTIONAL fields without a source are")
CONTRACT_DATES = ("OPTIONAL `contract_start`/`contract_end`: ESPI's agreement validityInterval is kept raw and not "
                  "mapped to contract dates yet (mapping §7.2)")
RATE_PLAN = ("OPTIONAL `rateplan_code`/`rateplan_name`: a Green Button customer agreement carries no tariff (only "
             "synthetic contracts take rateplan_code from a UsagePoint tariffProfile) and ESPI has no rate plan "
             "name (mapping §5.3)")
NO_FILES = ("OPTIONAL `file_uri`/`file_mimetype` (include_bill_statement_files): Green Button bills have no "
            "statement file the API could serve (mapping §6.2), so the scope does not offer the include field")

MISSING_KEYS: dict[str, dict[str, str]] = {
    "wg3-01_accounts-list.json": {"$.accounts[].customer_number": CUSTOMER_NUMBER},
    "wg3-01_accounts-list-server-created-grant.json": {"$.accounts[].customer_number": CUSTOMER_NUMBER},
    "wg3-01_service-contracts-list.json": {
        "$.service_contracts[].contract_start": CONTRACT_DATES,
        "$.service_contracts[].contract_end": CONTRACT_DATES,
        "$.service_contracts[].rateplan_code": RATE_PLAN,
        "$.service_contracts[].rateplan_name": RATE_PLAN,
    },
    "wg3-01_bill-statements-list.json": {"$.bill_statements[].file_uri": NO_FILES,
                                         "$.bill_statements[].file_mimetype": NO_FILES},
}
TYPE_EXEMPT: dict[str, dict[str, str]] = {
    "wg3-01_accounts-list.json": {"$.accounts[].account_entity.entity_abbreviation": ABBREVIATION},
    "wg3-01_accounts-list-server-created-grant.json": {
        "$.accounts[].account_entity.entity_abbreviation": ABBREVIATION},
    "wg3-01_service-contracts-list.json": {
        "$.service_contracts[].contract_entity.entity_abbreviation": ABBREVIATION},
}
CASES = ["wg3-01_accounts-list.json", "wg3-01_accounts-list-server-created-grant.json",
         "wg3-01_service-contracts-list.json", "wg3-01_usage-segments-list.json", "wg3-01_bill-statements-list.json"]


def _exemption(name: str, problem: str) -> tuple[str, str] | None:
    path, _, kind = problem.partition(": ")
    table_name, table = ("MISSING_KEYS", MISSING_KEYS) if kind == "missing" else ("TYPE_EXEMPT", TYPE_EXEMPT)
    if kind == "not in the example":
        return None
    return (table_name, path) if path in table.get(name, {}) else None


def findings(ours: Any, name: str) -> list[str]:
    return sorted(set(compare(ours, load(name), name)))


# ----------------------------------------------------------------------------------------------------------------
# The gateway side
# ----------------------------------------------------------------------------------------------------------------
def get(client, access_token: str, listing: str, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/{listing}", params=params, headers=bearer(access_token))
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def grant(client, registration, scope: str, **fields: Any) -> str:
    return consent_flow(client, registration, scope,
                        authorization_details=[{"type": scope, **fields}])["access_token"]


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, Any]:
    tmp_path = tmp_path_factory.mktemp("conformance-wg3-data")
    # The redacted customer sample with its (empty) e-mail filled, so that account_contacts has something to show.
    customer = tmp_path / "customer.xml"
    customer.write_text(HYDRO.read_text().replace("<cust:email1/>", "<cust:email1>customer@example.com</cust:email1>"))
    feed = tmp_path / "feed.xml"
    with feed.open("w") as out:
        write_feed(out, FeedSpec(usage_points=1, days=70, start=date.today() - timedelta(days=200)))
    config = make_config(tmp_path, segment_history="P20Y", timezone="America/New_York")
    result: dict[str, Any] = {}
    with gateway_client(config) as client:
        gateway = client.app.state.gateway
        with gateway.sessions() as session, session.begin():
            ingest_file(session, customer, customer_id=CUSTOMER)
            ingest_file(session, feed, customer_id=CUSTOMER,
                        options=TranslateOptions(key_strategy="href", statements=StatementPolicy(20)))
        registration = register(client, SCOPES)

        # accounts: numbers and details (the example shows customer_number … account_contacts, no programs)
        accounts = grant(client, registration, "cds_accounts_1", include_account_details=True)
        result["wg3-01_accounts-list.json"] = get(client, accounts, "accounts", account_numbers="000000000000")
        result["all accounts"] = get(client, accounts, "accounts")

        # §13.4.3–13.4.4: a server-created grant (the operator's side, in the store: effective details of the
        # example's request, for this customer) read with a Grant Admin token
        code_client = registration.client_for("cds_accounts_1")
        with gateway.sessions() as session, session.begin():
            row = session.get(Client, code_client["client_id"])
            wanted = [{"type": "cds_accounts_1", "account_numbers": ["000000000000"],
                       "include_account_numbers": True, "include_account_details": True, "sync_until": "P0D"}]
            checked = rar.validate_authorization_details(
                wanted, scopes=["cds_accounts_1"], descriptions=gateway.descriptions,
                client_types=row.authorization_details_types, timezone=gateway.config.timezone,
                now=datetime.now(UTC) + timedelta(seconds=1), flow="client_credentials")
            server_grant = create_grant(session, row, scope="cds_accounts_1", authorization_details=checked.effective,
                                        box=gateway.box, customer_id=CUSTOMER).grant_id
        admin_client = registration.client_for("cds_grant_admin_1")
        grant_admin = token(client, (admin_client["client_id"], registration.secrets[admin_client["client_id"]]),
                            "cds_grant_admin_1", authorization_details=[
                                {"type": "cds_grant_admin_1", "client_id": code_client["client_id"],
                                 "grant_id": server_grant}])
        result["wg3-01_accounts-list-server-created-grant.json"] = get(client, grant_admin["access_token"],
                                                                       "accounts")

        # service contracts: account and contract numbers, details, rate plans
        contracts = grant(client, registration, "cds_service_contracts_1", include_account_numbers=True,
                          include_service_contract_details=True, include_rate_plans=True)
        result["wg3-01_service-contracts-list.json"] = get(client, contracts, "service-contracts",
                                                           contract_numbers="0000000000")

        # usage segments: electric interval values only (the example's single electric_usage format)
        usage = grant(client, registration, "cds_usage_1", segment_start="2010-01-01T00:00:00Z",
                      include_accounts=True, include_service_points=True,
                      include_usage_segment_value_types=["electric_usage_forward"])
        result["wg3-01_usage-segments-list.json"] = page = get(client, usage, "usage-segments")
        result["usage ids"] = [s["cds_usagesegment_id"] for s in page["usage_segments"]]

        # bill statements: account number (base access); files are not offered (see NO_FILES)
        bills = grant(client, registration, "cds_bill_statements_1")
        result["wg3-01_bill-statements-list.json"] = get(client, bills, "bill-statements")
    return result


@pytest.mark.parametrize("name", CASES)
def test_same_shape_as_the_example(produced, name):
    ours = produced[name]
    assert ours[next(iter(load(name)))], f"{name}: our listing is empty"
    assert [p for p in findings(ours, name) if _exemption(name, p) is None] == []


def test_every_exemption_is_still_needed(produced):
    for table_name, table in (("MISSING_KEYS", MISSING_KEYS), ("TYPE_EXEMPT", TYPE_EXEMPT)):
        for name, paths in table.items():
            used = {_exemption(name, p) for p in findings(produced[name], name)}
            for path in paths:
                assert (table_name, path) in used, (name, path)


def test_what_the_examples_get_wrong_we_get_right(produced):
    account_ids = {a["cds_account_id"] for a in produced["all accounts"]["accounts"]}
    statements = produced["wg3-01_bill-statements-list.json"]["bill_statements"]
    assert statements and all(s["cds_account_id"] in account_ids for s in statements)
    ids = produced["usage ids"]
    assert len(ids) > 1 and len(set(ids)) == len(ids)
    for segment in produced["wg3-01_usage-segments-list.json"]["usage_segments"]:
        assert {"related_billsections", "related_meterdevices", "related_aggregations"} <= set(segment)
    (account,) = produced["wg3-01_accounts-list-server-created-grant.json"]["accounts"]
    assert account["account_number"] == "000000000000"
    assert account["account_contacts"][0]["value"] == "customer@example.com"


def test_the_exemption_filter_applies_only_listed_paths():
    name = "wg3-01_bill-statements-list.json"
    assert _exemption(name, "$.bill_statements[].file_uri: missing") is not None
    assert _exemption(name, "$.bill_statements[].file_uri: null where the example has string") is None
    assert _exemption(name, "$.bill_statements[].amount_due: missing") is None
    assert _exemption(name, "$.bill_statements[].new_charges: not in the example") is None
    assert Path(EXAMPLES / name).is_file()
