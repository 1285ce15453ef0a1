"""The WG3-01 customer data listings over HTTP: tokens from the real consent flow, data from ``bridge.ingest``.

Usage totals are checked against an independent oracle on the raw XML (``oracle`` of test_translate_samples, which
shares no code with ``espi``/``cds``), for a full window and for a window that cuts through segments. Then: grants
that differ in include and preselection fields see different fields and objects, closed and expired grants get 403,
paging walks 1,000+ usage segments exactly once in the spec's order (both ways), filters, ``q`` and errors.
"""

from __future__ import annotations

import base64
import json
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from gateway_helpers import BASE_URL, bearer, consent_flow, gateway_client, make_config, register, token
from test_translate_samples import oracle

from bridge.from_espi import TranslateOptions
from bridge.from_espi.billing import StatementPolicy
from bridge.ingest import ingest_file
from cds.store.models import Grant, UsageSegmentRow
from espi.generate import FeedSpec, write_feed

API = "/cds-api/v1"
CUSTOMER = "customer-1"
SCOPES = ("cds_client_admin cds_usage_1 cds_accounts_1 cds_service_contracts_1 cds_meters_1 cds_bill_statements_1 "
          "cds_service_bills_1")
FULL = "2010-01-01T00:00:00Z"  # before every sample reading (the config allows 20 years of history)


def config(tmp_path: Path, database_url: str | None = None, **overrides: Any):
    return make_config(tmp_path, database_url, segment_history="P20Y", timezone="America/New_York", **overrides)


def ingest(client, path: Path, *, statements: bool = False) -> None:
    options = TranslateOptions(key_strategy="href", statements=StatementPolicy(20) if statements else None)
    with client.app.state.gateway.sessions() as session, session.begin():
        ingest_file(session, path, customer_id=CUSTOMER, options=options)


def generated(tmp_path: Path, name: str, **spec: Any) -> Path:
    """A generated feed (espi.generate), by default starting 400 days ago (inside the default bill windows)."""
    path = tmp_path / name
    spec.setdefault("start", date.today() - timedelta(days=400))
    with path.open("w") as out:
        write_feed(out, FeedSpec(**spec))
    return path


def grant(client, registration, scope: str = "cds_usage_1", **fields: Any) -> dict[str, Any]:
    """A token from the consent flow; ``fields`` are the authorization details of the scope's entry."""
    if scope == "cds_usage_1":
        fields.setdefault("segment_start", FULL)
    return consent_flow(client, registration, scope, authorization_details=[{"type": scope, **fields}])


def get(client, access_token: str, listing: str, status: int = 200, **params: Any) -> dict[str, Any]:
    response = client.get(f"{API}/{listing}", params=params, headers=bearer(access_token))
    assert response.status_code == status, response.text
    assert response.headers["cache-control"] == "no-store"
    return json.loads(response.text, parse_float=Decimal)


def rel(url: str) -> str:
    assert url.startswith(BASE_URL + "/"), url
    return url[len(BASE_URL):]


def follow(client, access_token: str, url: str) -> dict[str, Any]:
    response = client.get(rel(url), headers=bearer(access_token))
    assert response.status_code == 200, response.text
    return json.loads(response.text, parse_float=Decimal)


def walk(client, access_token: str, listing: str, key: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page, following ``next``."""
    body = get(client, access_token, listing, **params)
    pages = [body[key]]
    while body["next"]:
        response = client.get(rel(body["next"]), headers=bearer(access_token))
        assert response.status_code == 200, response.text
        body = json.loads(response.text, parse_float=Decimal)
        pages.append(body[key])
    return pages


def walk_back(client, access_token: str, url: str, key: str) -> list[list[dict[str, Any]]]:
    pages = []
    while url:
        response = client.get(rel(url), headers=bearer(access_token))
        assert response.status_code == 200, response.text
        body = json.loads(response.text, parse_float=Decimal)
        pages.append(body[key])
        url = body["previous"]
    return pages


def last_page(client, access_token: str, listing: str, key: str, **params: Any) -> dict[str, Any]:
    body = get(client, access_token, listing, **params)
    while body["next"]:
        body = json.loads(client.get(rel(body["next"]), headers=bearer(access_token)).text, parse_float=Decimal)
    return body


def at(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def epoch(text: str) -> int:
    return int(at(text).timestamp())


# ---------------------------------------------------------------------------------------------- usage totals
def usage_kind(fmt: dict[str, Any]) -> str | None:
    """forward / reverse / net / gas for interval and period usage columns (billing copies excluded, D11)."""
    if fmt["id"].endswith("_billing"):
        return None
    if fmt["type"] == "electric_usage":
        return fmt.get("direction")
    if fmt["type"] == "natural_gas_usage":
        return "gas"
    return None


def api_totals(segments: list[dict[str, Any]], window: tuple[int, int] | None = None) -> dict[str, Decimal]:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for segment in segments:
        start = epoch(segment["segment_start"])
        for i, value_set in enumerate(segment["values"]):
            slot = start + i * segment["interval"]
            assert window is None or window[0] <= slot < window[1]
            for fmt, value in zip(segment["formats"], value_set, strict=True):
                kind = usage_kind(fmt)
                if kind is not None and value is not None:
                    assert isinstance(value["eu" if kind != "gas" else "gu"], Decimal | int)
                    totals[kind] += value["eu" if kind != "gas" else "gu"]
    return {kind: total for kind, total in totals.items() if total or kind in ("forward", "gas")}


def xml_totals(paths: list[Path], window: tuple[int, int] | None = None) -> dict[str, Decimal]:
    """The oracle's totals: value × 10^powerOfTenMultiplier (kWh for Wh), reverse negated, registers left out (a
    series labelled cumulative whose values do not climb is interval data, docs/mapping.md §4.4, D16)."""
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for path in paths:
        for series in oracle(path):
            if series.accumulation in (1, 2, 3, 9) and series.flow != 4:
                in_time = [value for _start, value in sorted(zip(series.starts, series.values, strict=True))]
                falls = sum(later < earlier for earlier, later in pairwise(in_time))
                if falls < 2 or falls * 20 < len(in_time) - 1:
                    continue  # a register that climbs
            elif series.accumulation not in (None, 4):
                continue
            if series.uom == 72:
                kind, sign = {1: ("forward", 1), 19: ("reverse", -1), 4: ("net", 1)}[series.flow]
            elif series.uom == 169:
                kind, sign = "gas", 1
            else:
                continue
            for start, raw in zip(series.starts, series.values, strict=True):
                if window is None or window[0] <= start < window[1]:
                    totals[kind] += sign * series.scaled(raw)
    return {kind: total for kind, total in totals.items() if total or kind in ("forward", "gas")}


@pytest.mark.samples
def test_usage_totals_equal_the_xml_for_full_and_trimmed_windows(tmp_path, database_url, sample):
    today = date.today()
    paths = [sample("sdk_15minLP_15Days.xml"),  # electric 15-minute, costs, a usage summary
             sample("cmdtest_Gas.xml"),  # monthly gas
             sample("cmdtest_threeusagepointsonecustomer.xml"),  # three usage points, summaries, a register
             generated(tmp_path, "net.xml", days=20, net_metering=True),  # forward and reverse
             # readings up to a few days ahead: segment_end must not be in the past (its minimum is PT0S)
             generated(tmp_path, "now.xml", days=6, start=today - timedelta(days=3), summaries=False, seed=2)]
    customer = sample("hydroone_Retail_Customer_redacted.xml")  # customer data, no usage
    with gateway_client(config(tmp_path, database_url)) as client:
        for path in [*paths, customer]:
            ingest(client, path)
        registration = register(client, SCOPES)
        full = grant(client, registration)
        segments = [s for page in walk(client, full["access_token"], "usage-segments", "usage_segments")
                    for s in page]
        expected = xml_totals(paths)
        assert set(expected) == {"forward", "reverse", "gas"}
        assert api_totals(segments) == expected
        assert len({s["cds_usagesegment_id"] for s in segments}) == len(segments)

        # a window cutting through a day of 15-minute data at each end, and through a gas month (dropped whole)
        end_day = today + timedelta(days=2)
        start, end = at("2012-03-03T10:00:00Z"), at(f"{end_day.isoformat()}T17:15:00Z")
        windowed = grant(client, registration, segment_start="2012-03-03T10:00:00Z",
                         segment_end=f"{end_day.isoformat()}T12:15:00-05:00")
        trimmed = [s for page in walk(client, windowed["access_token"], "usage-segments", "usage_segments")
                   for s in page]
        bounds = (int(start.timestamp()), int(end.timestamp()))
        got = api_totals(trimmed, bounds)
        assert got == xml_totals(paths, bounds)
        assert 0 < got["forward"] < expected["forward"] and 0 < got["gas"] < expected["gas"]
        assert min(at(s["segment_start"]) for s in trimmed) == start
        assert max(at(s["segment_end"]) for s in trimmed) == end
        by_id = {s["cds_usagesegment_id"]: s for s in segments}
        cut = [s for s in trimmed if s["cds_usagesegment_id"] not in by_id]
        assert len(cut) == 2  # the first and the last local day of the window, with new ids
        again = get(client, windowed["access_token"], "usage-segments",
                    cds_usagesegment_ids=" ".join(s["cds_usagesegment_id"] for s in cut))["usage_segments"]
        assert sorted(s["cds_usagesegment_id"] for s in again) == sorted(s["cds_usagesegment_id"] for s in cut)


# ---------------------------------------------------------------------------------------------- grants differ
@pytest.mark.samples
def test_two_grants_see_different_fields_and_objects(tmp_path, sample):
    with gateway_client(config(tmp_path)) as client:
        for name in ("cmdtest_Gas.xml", "cmdtest_threeusagepointsonecustomer.xml",
                     "hydroone_Retail_Customer_redacted.xml"):
            ingest(client, sample(name))
        registration = register(client, SCOPES)
        gas = grant(client, registration, service_types=["natural_gas"], include_meter_numbers=False,
                    include_accounts=True)["access_token"]
        everything = grant(client, registration)["access_token"]

        gas_segments = [s for p in walk(client, gas, "usage-segments", "usage_segments") for s in p]
        all_segments = [s for p in walk(client, everything, "usage-segments", "usage_segments") for s in p]
        assert len(gas_segments) == 13 and len(all_segments) > 13
        assert {f["type"] for s in gas_segments for f in s["formats"]} == {"natural_gas_usage", "cost"}
        assert {f["type"] for s in all_segments for f in s["formats"]} >= {"electric_usage", "natural_gas_usage"}

        gas_meters = get(client, gas, "meter-devices")["meter_devices"]
        all_meters = get(client, everything, "meter-devices")["meter_devices"]
        assert len(gas_meters) == 1 and "meter_number" not in gas_meters[0]  # include_meter_numbers false
        assert len(all_meters) == 5 and all("meter_number" in m for m in all_meters)
        assert "J0000000" in {m["meter_number"] for m in all_meters}
        assert gas_meters[0]["cds_meterdevice_id"] in {m["cds_meterdevice_id"] for m in all_meters}

        (account,) = get(client, gas, "accounts")["accounts"]
        assert set(account) == {"cds_account_id", "cds_created", "cds_modified", "cds_synced", "cds_account_parent"}
        denied = get(client, everything, "accounts", 403)  # cds_usage does not include accounts by default
        assert denied["error"] == "insufficient_scope"
        # segment references name only what each grant may see
        assert all(s["related_accounts"] == [account["cds_account_id"]] for s in gas_segments)
        assert all(s["related_accounts"] == [] for s in all_segments)

        numbers = grant(client, registration, "cds_accounts_1")["access_token"]
        details = grant(client, registration, "cds_accounts_1", account_numbers=["000000000000"],
                        include_account_details=True)["access_token"]
        listed = get(client, numbers, "accounts")["accounts"]
        assert len(listed) == 2 and not any("account_name" in a for a in listed)
        assert {a.get("account_number") for a in listed} == {"000000000000", None}
        (hydro,) = get(client, details, "accounts")["accounts"]
        assert hydro["account_number"] == "000000000000" and hydro["account_name"] == "REDACTED NAME"
        assert hydro["account_address"].startswith("1 EXAMPLE LANE")
        assert "account_programs" not in hydro and not any(k.startswith("greenbridge_") for k in hydro)
        # q and filters only over what the grant sees
        assert len(get(client, details, "accounts", q="redacted")["accounts"]) == 1
        assert get(client, numbers, "accounts", q="redacted")["accounts"] == []
        assert len(get(client, numbers, "accounts", account_numbers="000000000000")["accounts"]) == 1
        assert get(client, numbers, "accounts", account_statuses="active")["accounts"] == []  # status is a detail
        assert len(get(client, details, "accounts", account_statuses="active")["accounts"]) == 1
        assert len(get(client, everything, "meter-devices", meter_number="J0000000")["meter_devices"]) == 1
        assert len(get(client, everything, "meter-devices", meter_numbers="J0000000 X")["meter_devices"]) == 1
        assert len(get(client, everything, "meter-devices", q="j0000")["meter_devices"]) == 1
        assert get(client, gas, "meter-devices", q="j0000")["meter_devices"] == []
        assert get(client, gas, "meter-devices", meter_number="J0000000")["meter_devices"] == []


# ---------------------------------------------------------------------------------------------- access
def test_closed_and_expired_grants_get_403(tmp_path, database_url):
    with gateway_client(config(tmp_path, database_url)) as client:
        ingest(client, generated(tmp_path, "feed.xml", days=3))
        registration = register(client, SCOPES)
        admin = bearer(token(client, registration.admin_auth, "cds_client_admin")["access_token"])
        closing, expiring = grant(client, registration), grant(client, registration)
        assert len(get(client, closing["access_token"], "usage-segments")["usage_segments"]) == 3

        denied = get(client, admin["Authorization"].split()[1], "usage-segments", 403)
        assert denied["error"] == "insufficient_scope"  # a client-admin token is not for customer data
        assert client.get(f"{API}/usage-segments").status_code == 401
        assert client.get(f"{API}/usage-segments", headers=bearer("nope")).status_code == 401

        response = client.patch(f"{API}/grants/{closing['cds_grant_ids'][0]}", headers=admin,
                                json={"status": "closed"})
        assert response.status_code == 200, response.text
        body = get(client, closing["access_token"], "usage-segments", 403)
        assert body["error"] == "access_denied" and "closed" in body["error_description"]
        assert get(client, closing["access_token"], "meter-devices", 403)["error"] == "access_denied"

        with client.app.state.gateway.sessions() as session, session.begin():
            session.get(Grant, expiring["cds_grant_ids"][0]).expires = datetime.now(UTC) - timedelta(seconds=1)
        body = get(client, expiring["access_token"], "usage-segments", 403)
        assert body["error"] == "access_denied" and "expired" in body["error_description"]


# ---------------------------------------------------------------------------------------------- paging
def stored_order(client) -> list[str]:
    """The spec's order computed from the stored columns: numbers, segment_start asc, cds_modified desc, id."""
    with client.app.state.gateway.sessions() as session:
        rows = session.query(UsageSegmentRow).filter(UsageSegmentRow.customer_id == CUSTOMER).all()
        rows.sort(key=lambda r: (r.account_number or "", r.contract_number or "", r.segment_start,
                                 -r.modified.timestamp(), r.segment_id))
        return [r.segment_id for r in rows]


@pytest.mark.slow
def test_paging_walks_a_thousand_segments_once_in_order_both_ways(tmp_path):
    with gateway_client(config(tmp_path, page_size=500)) as client:  # capped at 100 a page
        ingest(client, generated(tmp_path, "big.xml", usage_points=3, days=340, interval=3600, costs=False,
                                 summaries=False))
        registration = register(client, SCOPES)
        access_token = grant(client, registration)["access_token"]
        expected = stored_order(client)
        assert len(expected) >= 1000
        pages = walk(client, access_token, "usage-segments", "usage_segments")
        assert all(len(page) == 100 for page in pages[:-1]) and 0 < len(pages[-1]) <= 100
        ids = [s["cds_usagesegment_id"] for page in pages for s in page]
        assert ids == expected  # each exactly once, in order
        starts = [at(s["segment_start"]) for page in pages for s in page]
        assert starts == sorted(starts)
        end = last_page(client, access_token, "usage-segments", "usage_segments")
        back = walk_back(client, access_token, end["previous"], "usage_segments")
        assert [s["cds_usagesegment_id"] for page in reversed(back) for s in page] + \
            [s["cds_usagesegment_id"] for s in end["usage_segments"]] == expected


def test_small_pages_keep_the_filters(tmp_path, database_url):
    with gateway_client(config(tmp_path, database_url, page_size=7)) as client:
        feed = generated(tmp_path, "feed.xml", usage_points=2, days=40, start=date(date.today().year - 1, 1, 20))
        ingest(client, feed, statements=True)
        registration = register(client, SCOPES)
        access_token = grant(client, registration, include_bill_sections=True)["access_token"]
        expected = stored_order(client)
        pages = walk(client, access_token, "usage-segments", "usage_segments")
        assert len(expected) == 82  # 40 days and one billing month (February) of two usage points
        assert [len(p) for p in pages] == [7] * 11 + [5]
        assert [s["cds_usagesegment_id"] for p in pages for s in p] == expected
        first = get(client, access_token, "usage-segments")
        assert first["previous"] is None
        second = follow(client, access_token, first["next"])
        back = follow(client, access_token, second["previous"])
        assert back["usage_segments"] == first["usage_segments"] and back["previous"] is None

        # a filter survives the page links
        day = sorted(at(s["segment_start"]) for p in pages for s in p)[10]
        after = get(client, access_token, "usage-segments", after=day.strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert "after=" in after["next"] and parse_qs(urlsplit(after["next"]).query)["after"]
        filtered = [s for p in walk(client, access_token, "usage-segments", "usage_segments",
                                    after=day.strftime("%Y-%m-%dT%H:%M:%SZ")) for s in p]
        assert filtered and all(at(s["segment_end"]) >= day for s in filtered)
        assert len(filtered) == sum(1 for p in pages for s in p if at(s["segment_end"]) >= day)

        meters = get(client, access_token, "meter-devices")["meter_devices"]
        meter = meters[0]["cds_meterdevice_id"]
        mine = [s for p in walk(client, access_token, "usage-segments", "usage_segments",
                                cds_meterdevice_ids=meter) for s in p]
        assert len(mine) == 41 and all(s["related_meterdevices"] == [meter] for s in mine)

        sections = [s for p in walk(client, access_token, "bill-sections", "bill_sections") for s in p]
        assert sections and [s["start_date"] for s in sections] == sorted(s["start_date"] for s in sections)


# ---------------------------------------------------------------------------------------------- bills, filters
def test_bills_order_and_filters(tmp_path):
    with gateway_client(config(tmp_path)) as client:
        ingest(client, generated(tmp_path, "feed.xml", usage_points=2, days=120), statements=True)
        registration = register(client, SCOPES)
        bills = grant(client, registration, "cds_bill_statements_1", include_bill_statement_charges=True)
        statements = get(client, bills["access_token"], "bill-statements")["bill_statements"]
        dates = [s["statement_date"] for s in statements]
        assert len(dates) >= 3 and dates == sorted(dates, reverse=True)
        assert all(s["account_number"] == "" for s in statements)  # unknown (mapping D8), gated but enabled
        assert all(isinstance(s["amount_due"], Decimal) for s in statements)
        charges = [c for s in statements for c in s["new_charges"]]
        assert charges and all("related_billsections" not in c for c in charges)  # sections not visible
        middle = dates[1]
        assert [s["statement_date"] for s in get(client, bills["access_token"], "bill-statements",
                                                 after=middle)["bill_statements"]] == dates[:2]
        assert [s["statement_date"] for s in get(client, bills["access_token"], "bill-statements",
                                                 before=middle)["bill_statements"]] == dates[1:]
        assert get(client, bills["access_token"], "bill-statements", before="2024-02-30", status=400)["error"] == \
            "invalid_request"

        service = grant(client, registration, "cds_service_bills_1", include_bill_statements=True)
        sections = get(client, service["access_token"], "bill-sections")["bill_sections"]
        assert sections and all(s["cds_billstatement_id"] is not None for s in sections)
        statement_id = sections[0]["cds_billstatement_id"]
        same = get(client, service["access_token"], "bill-sections", cds_billstatement_ids=statement_id)
        assert {s["cds_billstatement_id"] for s in same["bill_sections"]} == {statement_id}
        assert len(same["bill_sections"]) == 2  # one per usage point
        sorted_keys = [(s["start_date"]) for s in sections]
        assert sorted_keys == sorted(sorted_keys)
        june = get(client, service["access_token"], "bill-sections", after=sections[-1]["end_date"])
        assert {s["end_date"] for s in june["bill_sections"]} == {sections[-1]["end_date"]}
        # without include_bill_statements the statement reference is null
        alone = grant(client, registration, "cds_service_bills_1")
        assert all(s["cds_billstatement_id"] is None for s in get(client, alone["access_token"],
                                                                   "bill-sections")["bill_sections"])
        assert get(client, alone["access_token"], "bill-statements", 403)["error"] == "insufficient_scope"


def test_bad_parameters_are_400(tmp_path):
    with gateway_client(config(tmp_path)) as client:
        ingest(client, generated(tmp_path, "feed.xml", days=3))
        registration = register(client, SCOPES)
        access_token = grant(client, registration)["access_token"]
        for params in ({"before": "yesterday"}, {"after": "2024-01-01"}, {"cursor": "not-a-cursor"},
                       {"q": "anything"}):
            body = get(client, access_token, "usage-segments", 400, **params)
            assert set(body) == {"error", "error_description"} and body["error"] == "invalid_request"
        page = get(client, access_token, "meter-devices")
        assert page["next"] is None and page["previous"] is None
        # a cursor of another listing
        contracts = grant(client, registration, "cds_service_contracts_1")["access_token"]
        segment_id = stored_order(client)[0]
        foreign = base64.urlsafe_b64encode(json.dumps(["usage_segments", "n", segment_id]).encode()).decode()
        assert get(client, contracts, "service-contracts", 400, cursor=foreign)["error"] == "invalid_request"
        assert len(get(client, access_token, "usage-segments", cursor=foreign.rstrip("="))["usage_segments"]) == 2
        unknown = get(client, access_token, "usage-segments", unknown_filter="x")
        assert len(unknown["usage_segments"]) == 3
