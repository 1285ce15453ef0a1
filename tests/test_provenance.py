"""Data sets and provenance in the store (issue 12 item 3): a grant reads only its own data set; ids are namespaced
per data set; the upstream authorization behind each object is remembered; grants get their data set with their
first upstream authorization and keep it; a deployed store survives the migration.

The listings are read over HTTP through the gateway's own data route (TestClient), on SQLite and PostgreSQL.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from gateway_helpers import bearer, consent_flow, gateway_client, make_config, register
from sqlalchemy import select

from bridge import upstream
from bridge.from_espi import TranslateOptions, translate
from bridge.from_espi.billing import StatementPolicy
from bridge.ingest import IngestError, id_namespace, ingest_file
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import DataObject, Grant, UpstreamAuthorization, UsageSegmentRow
from espi.custodian_client import CustodianTokens
from espi.generate import FeedSpec, write_feed

CUSTOMER = "customer-1"  # the local test customer of the consent page
SCOPES = ("cds_client_admin cds_usage_1 cds_accounts_1 cds_service_contracts_1 cds_meters_1 cds_bill_statements_1 "
          "cds_service_bills_1")
DATA_SCOPES = "cds_usage_1 cds_accounts_1 cds_service_contracts_1 cds_meters_1 cds_bill_statements_1 " \
              "cds_service_bills_1"
DETAILS = [{"type": "cds_usage_1", "segment_start": "2010-01-01T00:00:00Z", "include_service_points": True,
            "include_meter_devices": True, "include_service_contracts": True, "include_accounts": True,
            "include_bill_sections": True},
           {"type": "cds_accounts_1"}, {"type": "cds_service_contracts_1"}, {"type": "cds_meters_1"},
           {"type": "cds_bill_statements_1"}, {"type": "cds_service_bills_1", "include_bill_statements": True}]
LISTINGS = {"accounts": "cds_account_id", "service-contracts": "cds_servicecontract_id",
            "service-points": "cds_servicepoint_id", "meter-devices": "cds_meterdevice_id",
            "bill-statements": "cds_billstatement_id", "bill-sections": "cds_billsection_id",
            "usage-segments": "cds_usagesegment_id"}
DAYS = 70  # two whole months at least: bill sections and statements
RESOURCE = "https://dc.example/espi/1_1/resource"


def _feed(tmp_path: Path, name: str, **spec: Any) -> tuple[Path, Any]:
    path = tmp_path / name
    spec.setdefault("start", date.today() - timedelta(days=DAYS + 5))
    with path.open("w") as out:
        totals = write_feed(out, FeedSpec(days=DAYS, **spec))
    return path, totals


def _ingest(gateway, path: Path, data_set: str, upstream_id: int | None = None):
    options = TranslateOptions(key_strategy="href", statements=StatementPolicy(20))
    with gateway.sessions() as session, session.begin():
        return ingest_file(session, path, customer_id=CUSTOMER, options=options, data_set=data_set,
                           upstream_id=upstream_id)


def _everything(client, access_token: str) -> dict[str, list[dict[str, Any]]]:
    seen = {}
    for listing in LISTINGS:
        url, found = f"/cds-api/v1/{listing}", []
        while url:
            answer = client.get(url, headers=bearer(access_token))
            assert answer.status_code == 200, (listing, answer.text)
            body = json.loads(answer.text, parse_float=Decimal)
            found += body[listing.replace("-", "_")]
            url = body["next"].removeprefix("http://localhost") if body["next"] else None
        seen[listing] = found
    return seen


def _electric(segments) -> tuple[int, Decimal]:
    count, total = 0, Decimal(0)
    for segment in segments:
        columns = [i for i, f in enumerate(segment["formats"]) if f["id"].startswith("electric_usage_forward")
                   and not f["id"].endswith("_billing")]
        for row in segment["values"]:
            for index in columns:
                if row[index] is not None:
                    for number in row[index].values():
                        count, total = count + 1, total + Decimal(number)
    return count, total


def _source(totals) -> tuple[int, Decimal]:
    count = sum(v[0] for (_, name), v in totals.series.items() if name == "electric_forward")
    raw = sum(v[1] for (_, name), v in totals.series.items() if name == "electric_forward")
    return count, Decimal(raw) / 1000


def test_each_grant_reads_only_its_data_set(tmp_path, database_url):
    """Three grants of one customer: two with data sets of their own (what "their" authorizations brought: one
    UsagePoint, and the same one plus another), one reading the customer's own data. Every listing of each shows
    its own objects only, with exact sums, and a cursor of one grant's listing is refused for another."""
    with gateway_client(make_config(tmp_path, database_url, segment_history="P20Y", page_size=25)) as client:
        gateway = client.app.state.gateway
        one, one_totals = _feed(tmp_path, "one.xml", usage_points=1, seed=7, subscription="7")
        two, two_totals = _feed(tmp_path, "two.xml", usage_points=2, seed=7, subscription="7")
        own, own_totals = _feed(tmp_path, "own.xml", usage_points=1, seed=9, subscription="9", net_metering=True)
        _ingest(gateway, one, "set-a")
        _ingest(gateway, two, "set-b")
        _ingest(gateway, own, "")
        registration = register(client, SCOPES)
        tokens = {name: consent_flow(client, registration, DATA_SCOPES, authorization_details=DETAILS,
                                     state=f"state-{name}") for name in ("a", "b", "own")}
        with gateway.sessions() as session, session.begin():
            for name, data_set in (("a", "set-a"), ("b", "set-b")):
                (grant_id,) = tokens[name]["cds_grant_ids"]
                session.get(Grant, grant_id).data_set = data_set

        seen = {name: _everything(client, tokens[name]["access_token"]) for name in tokens}
        for name, meters in (("a", 1), ("b", 2), ("own", 1)):
            assert len(seen[name]["service-points"]) == meters, name
            assert len(seen[name]["meter-devices"]) == meters, name
            assert len(seen[name]["accounts"]) == 1, name
            assert seen[name]["bill-statements"] and seen[name]["bill-sections"], name
        assert _electric(seen["a"]["usage-segments"]) == _source(one_totals)
        assert _electric(seen["b"]["usage-segments"]) == _source(two_totals)
        assert _electric(seen["own"]["usage-segments"]) == _source(own_totals)
        for listing, id_field in LISTINGS.items():
            ids = {name: {obj[id_field] for obj in seen[name][listing]} for name in seen}
            assert not ids["a"] & ids["b"] and not ids["a"] & ids["own"] and not ids["b"] & ids["own"], listing
        for name in seen:  # references never leave the data set
            points = {p["cds_servicepoint_id"] for p in seen[name]["service-points"]}
            assert all(set(s["related_servicepoints"]) <= points for s in seen[name]["usage-segments"])
            statements = {s["cds_billstatement_id"] for s in seen[name]["bill-statements"]}
            assert {s["cds_billstatement_id"] for s in seen[name]["bill-sections"]} <= statements

        first = client.get("/cds-api/v1/usage-segments", headers=bearer(tokens["a"]["access_token"])).json()
        assert first["next"], "more than one page"
        foreign = client.get(first["next"].removeprefix("http://localhost"),
                             headers=bearer(tokens["b"]["access_token"]))
        assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_request"


def test_ids_are_namespaced_per_data_set(tmp_path):
    """The same file in two data sets: the same objects under other ids (what ``greenbridge translate --custodian
    default/SET`` prints); again into the same set: nothing new; and an id of one set never taken over by another."""
    engine = make_engine(f"sqlite+pysqlite:///{tmp_path}/store.db")
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    path, _totals = _feed(tmp_path, "feed.xml", usage_points=2, seed=3)
    options = TranslateOptions(key_strategy="href")
    now = datetime(2026, 1, 1, tzinfo=UTC)

    def stored(data_set: str) -> set[str]:
        with sessions() as session:
            return set(session.scalars(select(UsageSegmentRow.segment_id).where(UsageSegmentRow.data_set == data_set)))

    for data_set in ("", "grant-1", "grant-2"):
        with sessions() as session, session.begin():
            report = ingest_file(session, path, customer_id="c", options=options, data_set=data_set, now=now,
                                 upstream_id=7 if data_set else None)
        assert report.created["usage_segments"] > 0 and not report.confirmed["usage_segments"]
        assert len(report.usage_point_hrefs) == 2
    assert len(stored("")) == len(stored("grant-1")) == len(stored("grant-2"))
    assert not stored("") & stored("grant-1") and not stored("grant-1") & stored("grant-2")
    with translate(path, TranslateOptions(key_strategy="href", subscription="c",
                                          custodian=id_namespace("default", "grant-1"))) as translation:
        assert {s["cds_usagesegment_id"] for s in translation.usage_segments()} == stored("grant-1")
    with sessions() as session, session.begin():
        again = ingest_file(session, path, customer_id="c", options=options, data_set="grant-1", now=now)
        assert not again.created["usage_segments"] and again.confirmed["usage_segments"] == len(stored("grant-1"))
    with sessions() as session:
        assert set(session.scalars(select(UsageSegmentRow.upstream_id).where(
            UsageSegmentRow.data_set == "grant-1"))) == {7}
        assert set(session.scalars(select(DataObject.upstream_id).where(DataObject.data_set == ""))) == {None}
    # an object id of one data set is never written into another (the rows would be read by the wrong grant)
    with sessions() as session, session.begin():
        row = session.scalars(select(UsageSegmentRow).where(UsageSegmentRow.data_set == "grant-2")).first()
        row.data_set = "grant-3"
    with sessions() as session, session.begin(), pytest.raises(IngestError, match="data set 'grant-3'"):
        ingest_file(session, path, customer_id="c", options=options, data_set="grant-2", now=now)
    engine.dispose()


def test_first_upstream_authorization_gives_a_grant_its_data_set_for_good(tmp_path, database_url):
    """bind (the consent hop) and link_imported (import-authorizations) name a new grant's data set after it; a
    re-authorization keeps it; a grant that had authorizations before data sets existed keeps its customer's."""
    with gateway_client(make_config(tmp_path, database_url)) as client:
        gateway = client.app.state.gateway
        registration = register(client)
        grant_ids = [consent_flow(client, registration, state=f"s{i}")["cds_grant_ids"][0] for i in range(3)]
        tokens = CustodianTokens(access_token="at", refresh_token="rt", resource_uri=f"{RESOURCE}/Batch/Subscription/5",
                                 authorization_uri=f"{RESOURCE}/Authorization/5",
                                 customer_resource_uri=f"{RESOURCE}/Batch/RetailCustomer/42")
        with gateway.sessions() as session, session.begin():
            fresh, imported, older = (session.get(Grant, grant_id) for grant_id in grant_ids)
            first = upstream.bind(session, gateway.box, grant_id=fresh.grant_id, custodian_id="dc",
                                  customer_id="dc:c", scope="FB=4_5", tokens=tokens)
            assert fresh.data_set == fresh.grant_id and first.retail_customer == "42"
            upstream.bind(session, gateway.box, grant_id=fresh.grant_id, custodian_id="dc", customer_id="dc:c",
                          scope="FB=4_5", tokens=tokens)  # the customer authorized again (cds_grant_id)
            assert fresh.data_set == fresh.grant_id
            upstream.link_imported(session, grant_id=imported.grant_id, custodian_id="dc", customer_id="dc:c",
                                   scope="FB=4_5", resource_uri=None, authorization_uri=f"{RESOURCE}/Authorization/6",
                                   customer_resource_uri=None)
            assert imported.data_set == imported.grant_id
            session.add(UpstreamAuthorization(  # as migration 0009 leaves an older grant's authorization
                grant_id=older.grant_id, custodian_id="dc", customer_id="dc:c", scope="FB=4_5",
                access_token_encrypted="x", created=datetime.now(UTC), modified=datetime.now(UTC)))
            session.flush()
            upstream.bind(session, gateway.box, grant_id=older.grant_id, custodian_id="dc", customer_id="dc:c",
                          scope="FB=4_5", tokens=tokens)
            assert older.data_set == ""


def test_migration_keeps_a_deployed_stores_data_readable(tmp_path, database_url):
    """A store at revision 0007 with grants, upstream authorizations and data: after 0009 everything stays in the
    customer's data set (the grants keep reading it), the authorization behind the rows is filled in where the
    customer has exactly one, and RetailCustomer ids come from customerResourceURI."""
    engine = make_engine(database_url)
    upgrade(engine, "0007")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    meta = sa.MetaData()
    meta.reflect(bind=engine, only=["grants", "upstream_authorizations", "data_objects", "usage_segments",
                                    "clients"])
    t = meta.tables
    with engine.begin() as connection:
        connection.execute(t["clients"].insert(), [{
            "client_id": "cl", "registration_id": "cl", "client_id_issued_at": 0, "created": now, "modified": now,
            "scope": "", "redirect_uris": [], "grant_types": [], "response_types": [], "client_name": "c",
            "contacts": [], "authorization_details_types": [], "status": "active", "status_options": [],
            "extra": {}}])
        connection.execute(t["grants"].insert(), [{
            "grant_id": g, "client_id": "cl", "registration_id": "cl", "customer_id": customer, "created": now,
            "modified": now, "status": "active", "scope": "", "authorization_details": [], "enabled_scope": "",
            "enabled_authorization_details": [], "states": [], "receipt_confirmations": [], "replacing": [],
            "replaced_by": [], "children": []} for g, customer in (("g1", "dc:one"), ("g2", "dc:two"),
                                                                   ("g3", "dc:two"))])
        connection.execute(t["upstream_authorizations"].insert(), [{
            "grant_id": g, "custodian_id": "dc", "customer_id": customer, "scope": "FB=4_5",
            "access_token_encrypted": "x", "created": now, "modified": now,
            "customer_resource_uri": f"{RESOURCE}/Batch/RetailCustomer/{number}"}
            for g, customer, number in (("g1", "dc:one", 1), ("g2", "dc:two", 2), ("g3", "dc:two", 2))])
        connection.execute(t["data_objects"].insert(), [{
            "kind": "accounts", "object_id": f"acc-{customer}", "customer_id": customer, "source": "s",
            "created": now, "modified": now, "synced": now, "body": "{}", "body_hash": "h"}
            for customer in ("dc:one", "dc:two", "local")])
        connection.execute(t["usage_segments"].insert(), [{
            "segment_id": f"seg-{customer}", "customer_id": customer, "source": "s", "created": now,
            "modified": now, "synced": now, "segment_start": now, "segment_end": now + timedelta(days=1),
            "body": "{}", "body_hash": "h"} for customer in ("dc:one", "dc:two", "local")])
    upgrade(engine)
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        (one,) = session.scalars(select(UpstreamAuthorization.id).where(UpstreamAuthorization.grant_id == "g1"))
        assert {g.grant_id: g.data_set for g in session.scalars(select(Grant))} == {"g1": "", "g2": "", "g3": ""}
        for model, key in ((DataObject, DataObject.object_id), (UsageSegmentRow, UsageSegmentRow.segment_id)):
            rows = {k: (d, u) for k, d, u in session.execute(select(key, model.data_set, model.upstream_id))}
            assert set(rows.values()) == {("", one), ("", None)}
            assert [k for k, (_d, u) in rows.items() if u == one] == [next(k for k in rows if "dc:one" in k)]
        assert sorted(session.scalars(select(UpstreamAuthorization.retail_customer))) == ["1", "2", "2"]
    # and back down, with a grant's own data set stored: the customers' data stays, the grant's goes (below 0009
    # every grant of a customer would read it)
    with sessions() as session, session.begin():
        session.get(Grant, "g3").data_set = "g3"
        session.add(UsageSegmentRow(segment_id="seg-g3", customer_id="dc:two", data_set="g3", source="s",
                                    created=now, modified=now, synced=now, segment_start=now,
                                    segment_end=now + timedelta(days=1), body="{}", body_hash="h"))
    from alembic import command

    from cds.store.migrate import alembic_config

    config = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0007")
    with engine.connect() as connection:
        assert sorted(connection.execute(sa.text("SELECT segment_id FROM usage_segments")).scalars()) == [
            "seg-dc:one", "seg-dc:two", "seg-local"]
        assert connection.execute(sa.text("SELECT count(*) FROM grants")).scalar() == 3
    upgrade(engine)
    engine.dispose()


def test_translation_reports_the_usage_points_it_covers(tmp_path):
    text = io.StringIO()
    write_feed(text, FeedSpec(usage_points=3, days=1, commodity="mixed", base_url=f"{RESOURCE}/RetailCustomer/4"))
    path = tmp_path / "feed.xml"
    path.write_text(text.getvalue())
    with translate(path, TranslateOptions()) as translation:
        assert translation.usage_point_hrefs == tuple(f"{RESOURCE}/RetailCustomer/4/Subscription/1/UsagePoint/{n}"
                                                      for n in (1, 2, 3))
