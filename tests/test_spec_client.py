"""A CDS third party written from the specs alone, against two differently configured Green Button custodians
(issue 12, first "Done means").

The client knows nothing of greenbridge: it reads the WG1-01 server metadata, follows ``oauth_metadata`` to the
RFC 8414 / WG1-02 document, registers at ``registration_endpoint``, finds its code-flow client and secret through
``cds_clients_api`` and ``cds_credentials_api``, picks the generic usage scope (type ``cds_usage``, not a
custodian's own profile) and sends an authorization request with nothing but the fields its description marks
required — so every ``include_*`` default applies: every value type (demand too), meter and contract numbers, three
years of history. The customer's browser goes through greenbridge's consent page and the utility's. The client then
exchanges the code, watches its Grant in ``cds_grants_api`` and reads ``cds_usagesegments_api``.

Neither utility can provide everything asked: the grant must still come about (``partial``, with what each utility
lacks left out of ``enabled_authorization_details`` and named on the consent page and the receipt), and the data it
serves must be exact: the usage segments' sums equal the generator's own totals of the raw ESPI integers.

1. The embedded defaults: the sandbox as ``greenbridge serve`` runs it (its default scope strings, one without a
   HistoryLength), no demand data.
2. A second custodian configured unlike the first: a HistoryLength on every scope string (months on one, seconds on
   the other), net metering blocks (FB_7, FB_8) but no cost, no retail-customer blocks, no demand data.
"""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from bridge_stack import CUSTODIAN_ID, at_sandbox, generate_start, segment_totals, source_totals, start_bridge
from gateway_helpers import continue_to_client, pkce_pair

from sandbox.config import DEFAULT_SCOPES

pytestmark = pytest.mark.slow
DAYS = 3
#: Customer 1 of the sandbox's generated profiles: one electric UsagePoint with net metering, 15-minute readings.
CUSTOMER = 1
SECOND_CUSTODIAN_SCOPES = (
    "FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;HistoryLength=34128000",
    "FB=1_3_4_5_7_8_13_14_15_16_39;IntervalDuration=900_3600;BlockDuration=daily;HistoryLength=24;"
    "SubscriptionFrequency=daily",
)


class SpecClient:
    """What a third party builds from WG1-01, WG1-02 and WG3-01 and nothing else."""

    def __init__(self, server: str) -> None:
        self.http = httpx2.Client(timeout=30)
        self.server = self._json(self.http.get(f"{server}/.well-known/cds-server-metadata.json"))
        assert "oauth" in self.server["capabilities"]
        self.oauth = self._json(self.http.get(self.server["oauth_metadata"]))

    @staticmethod
    def _json(answer: httpx2.Response) -> dict[str, Any]:
        assert answer.status_code in (200, 201), answer.text
        return json.loads(answer.text, parse_float=Decimal)

    def usage_scope(self) -> dict[str, Any]:
        """The generic usage scope: type cds_usage, its RAR type its own id, offered by no single custodian
        (custodian profiles say so in their name); the first in the document if several."""
        usage = [d for d in self.oauth["cds_scope_descriptions"].values() if d["type"] == "cds_usage"]
        generic = [d for d in usage if "(" not in d["name"]]
        assert generic, [d["id"] for d in usage]
        return generic[0]

    def register(self, scope: str) -> None:
        registered = self._json(self.http.post(self.oauth["registration_endpoint"], json={
            "client_name": "Spec-only third party", "scope": f"cds_client_admin {scope}"}))
        admin = (registered["client_id"], registered["client_secret"])
        self.admin_token = self._json(self.http.post(self.oauth["token_endpoint"], auth=admin, data={
            "grant_type": "client_credentials", "scope": "cds_client_admin"}))["access_token"]
        clients = self._get(self.oauth["cds_clients_api"])["clients"]
        client = next(c for c in clients if scope in c["scope"].split() and "authorization_code" in c["grant_types"])
        credentials = self._get(self.oauth["cds_credentials_api"], client_ids=client["client_id"])["credentials"]
        self.client_id, self.secret = client["client_id"], credentials[0]["client_secret"]
        self.redirect_uri = client["redirect_uris"][0] if client["redirect_uris"] else \
            client["cds_default_redirect_uri"]

    def _get(self, url: str, token: str | None = None, **params: str) -> dict[str, Any]:
        return self._json(self.http.get(url, params=params,
                                        headers={"Authorization": f"Bearer {token or self.admin_token}"}))

    def push(self, description: dict[str, Any]) -> tuple[str, str]:
        """PAR with only the required fields of the scope's description; returns (authorize URL, verifier)."""
        required = {fd["id"]: fd["default"] for fd in description["authorization_details_fields_supported"]
                    if fd.get("is_required") and fd.get("default") is not None}
        entry = {"type": description["authorization_details_types_supported"][0], **required}
        verifier, challenge = pkce_pair()
        pushed = self._json(self.http.post(
            self.oauth["pushed_authorization_request_endpoint"], auth=(self.client_id, self.secret), data={
                "response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                "scope": description["id"], "state": "spec-state", "code_challenge": challenge,
                "code_challenge_method": "S256", "authorization_details": json.dumps([entry])}))
        query = f"client_id={self.client_id}&request_uri={pushed['request_uri']}"
        return f"{self.oauth['authorization_endpoint']}?{query}", verifier

    def exchange(self, code: str, verifier: str) -> dict[str, Any]:
        return self._json(self.http.post(self.oauth["token_endpoint"], auth=(self.client_id, self.secret), data={
            "grant_type": "authorization_code", "code": code, "redirect_uri": self.redirect_uri,
            "code_verifier": verifier}))

    def grant(self, grant_id: str) -> dict[str, Any]:
        return self._get(f"{self.oauth['cds_grants_api']}/{grant_id}")

    def usage_segments(self, token: str) -> list[dict[str, Any]]:
        segments, url = [], self.oauth["cds_usagesegments_api"]
        while url:
            page = self._get(url, token)
            segments += page["usage_segments"]
            url = page["next"]
        return segments


def _customer_browser(bridge, authorize_url: str) -> tuple[str, list[str], str]:
    """The customer: greenbridge's consent page (their utility, and what it will not provide), the utility's own
    page, back to the client. Returns (the client's redirect, what the page said is not provided, receipt)."""
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    page = browser.get(authorize_url)
    assert page.status_code == 200, page.text
    listed = re.search(rf'<div class="omitted" id="omitted-{CUSTODIAN_ID}">(.*?)</div>', page.text, re.S)
    assert listed, "the consent page must say what the utility will not provide"
    omitted = re.findall(r"<li>(.*?)</li>", listed.group(1))
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
    answer = browser.post(action, data={"consent": handle, "decision": "approve", "custodian": CUSTODIAN_ID})
    assert answer.status_code == 303, answer.text
    callback = at_sandbox(browser, bridge.sandbox, answer.headers["location"], customer_index=CUSTOMER - 1)
    answer = continue_to_client(browser, browser.get(callback))  # after the receipt page (issue 14)
    landed = answer.headers["location"]
    receipt = browser.get(landed)
    assert receipt.status_code == 200
    return landed, omitted, receipt.text


def _wait_for_data(client: SpecClient, grant_id: str, bridge) -> dict[str, Any]:
    def settled(_jobs):
        return client.grant(grant_id)["status"] not in ("pending",)

    bridge.wait_jobs_settled(timeout=120, expect=settled)
    return client.grant(grant_id)


@pytest.mark.parametrize("custodian", ["embedded", "second"])
def test_a_spec_only_client_with_default_fields_gets_a_grant_and_exact_data(tmp_path, custodian):
    scopes = DEFAULT_SCOPES if custodian == "embedded" else SECOND_CUSTODIAN_SCOPES
    with start_bridge(tmp_path, scopes=scopes, customers=CUSTOMER, days=DAYS, workers=1,
                      sandbox_env={"GREENBRIDGE_SANDBOX_SCOPES": "|".join(scopes)}) as bridge:
        client = SpecClient(bridge.gateway)
        description = client.usage_scope()
        assert description["id"] == "cds_usage_1"
        client.register(description["id"])
        authorize_url, verifier = client.push(description)
        landed, omitted, receipt = _customer_browser(bridge, authorize_url)
        query = parse_qs(urlsplit(landed).query)
        assert query["state"] == ["spec-state"] and "error" not in query
        tokens = client.exchange(query["code"][0], verifier)
        (grant_id,) = tokens["cds_grant_ids"]
        (echoed,) = tokens["authorization_details"]  # RFC 9396: what the token may do, narrowed
        assert "electric_demand_peak" not in echoed["include_usage_segment_value_types"]

        grant = _wait_for_data(client, grant_id, bridge)
        assert grant["status"] == "partial", (grant, bridge.logs())
        assert grant["enabled_scope"] == description["id"]
        (requested,), (enabled,) = grant["authorization_details"], grant["enabled_authorization_details"]
        # every default applied (all value types, numbers, three years), and what the utility lacks left out
        assert "electric_demand_peak" in requested["include_usage_segment_value_types"]
        assert "electric_demand_peak" not in enabled["include_usage_segment_value_types"]
        assert requested["include_meter_numbers"] is True and enabled["include_meter_numbers"] is False
        assert enabled["segment_start"] > requested["segment_start"]
        assert any("demand" in item for item in omitted) and any("meter numbers" in item for item in omitted)
        assert 'id="omitted"' in receipt and "meter numbers" in receipt

        segments = client.usage_segments(tokens["access_token"])
        start = generate_start(DAYS)
        assert segment_totals(segments) == source_totals(CUSTOMER, DAYS, start)
        reverse = segment_totals(segments, direction="reverse")
        if "electric_usage_reverse" in enabled["include_usage_segment_value_types"]:
            count, exported = source_totals(CUSTOMER, DAYS, start, series="electric_reverse")
            assert reverse == (count, -exported) and count > 0  # CDS directions are signed grid → customer
        else:
            assert reverse == (0, Decimal(0))
        formats = {f["type"] for segment in segments for f in segment["formats"]}
        assert "electric_demand" not in formats
