"""What each upstream authorization covers and where a bulk entry naming no subscription belongs (bridge.coverage,
issue 12 item 5), on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from bridge.coverage import BulkOwners, record_usage_points
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import Client, Grant, UpstreamAuthorization, UpstreamUsagePoint

R = "https://dc.example/espi/1_1/resource"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
USAGE = "FB=1_3_4_5_13_14_35_37_39;IntervalDuration=900;BlockDuration=daily;BR=1"
WITH_CUSTOMER_DATA = "FB=1_3_4_5_13_14_35_37_39_51;IntervalDuration=900;BlockDuration=daily;BR=1"


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _authorization(session, name: str, *, custodian: str = "dc", retail_customer: str | None = None,
                   scope: str = USAGE, revoked: bool = False) -> UpstreamAuthorization:
    if session.get(Client, "cl") is None:
        session.add(Client(client_id="cl", registration_id="cl", client_id_issued_at=0, created=T0, modified=T0,
                           client_name="c", status="active"))
    session.add(Grant(grant_id=name, client_id="cl", registration_id="cl", customer_id=f"dc:{name}", created=T0,
                      modified=T0, status="active", data_set=name))
    row = UpstreamAuthorization(grant_id=name, custodian_id=custodian, customer_id=f"dc:{name}", scope=scope,
                                access_token_encrypted="", created=T0, modified=T0, retail_customer=retail_customer,
                                revoked=T0 if revoked else None)
    session.add(row)
    session.flush()
    return row


def _points(customer: str | None, *numbers: int) -> list[str]:
    below = f"{R}/RetailCustomer/{customer}" if customer else f"{R}/Subscription/9"
    return [f"{below}/UsagePoint/{n}" for n in numbers]


def test_recorded_usage_points_are_idempotent_and_teach_the_customer(sessions):
    with sessions() as session, session.begin():
        row = _authorization(session, "x")
        assert record_usage_points(session, row, [*_points("2", 1, 2), f"{R}/ReadingType/1"], T0) == 2
        assert row.retail_customer == "2"  # learned from the hrefs
        assert record_usage_points(session, row, _points("2", 1), T0 + timedelta(days=1)) == 0
        other = _authorization(session, "y", retail_customer="7")
        assert record_usage_points(session, other, _points(None, 5), T0) == 1  # a subscription's hrefs: no customer
        assert other.retail_customer == "7"
    with sessions() as session:
        recorded = session.execute(select(UpstreamUsagePoint.upstream_id, UpstreamUsagePoint.retail_customer,
                                          UpstreamUsagePoint.usage_point, UpstreamUsagePoint.first_seen,
                                          UpstreamUsagePoint.last_seen).order_by(UpstreamUsagePoint.id)).all()
        assert [(r[1], r[2]) for r in recorded] == [("2", "1"), ("2", "2"), ("", "5")]
        assert recorded[0][3] == T0 and recorded[0][4] == T0 + timedelta(days=1)
        assert recorded[1][4] == T0  # not in the later document: not seen again


def test_bulk_owners_place_by_usage_point_then_customer_and_never_guess(sessions):
    with sessions() as session, session.begin():
        x = _authorization(session, "x")
        y = _authorization(session, "y", scope=WITH_CUSTOMER_DATA)
        record_usage_points(session, x, _points("2", 1), T0)  # customer 2 shared UsagePoint 1 with x …
        record_usage_points(session, y, _points("2", 1, 2), T0)  # … and 1 and 2 with y
        z = _authorization(session, "z", retail_customer="1")  # customerResourceURI only, nothing fetched yet
        w = _authorization(session, "w", revoked=True)
        record_usage_points(session, w, _points("3", 1), T0)  # revoked on our side: never placed again
        _authorization(session, "v1", retail_customer="4")
        _authorization(session, "v2", retail_customer="4")
        q1 = _authorization(session, "q1", retail_customer="5")
        record_usage_points(session, q1, _points("5", 1), T0)
        q2 = _authorization(session, "q2", retail_customer="5")
        elsewhere = _authorization(session, "e", custodian="other")
        record_usage_points(session, elsewhere, _points("2", 2), T0)
        ids = {row.grant_id: str(row.id) for row in (x, y, z, q2)}

    owners = BulkOwners(sessions, "dc")
    assert owners(f"{_points('2', 1)[0]}/MeterReading/1/IntervalBlock/2025-01-01") == (ids["x"], ids["y"])
    assert owners(_points("2", 2)[0]) == (ids["y"],)  # not the other custodian's
    assert owners(_points("1", 9)[0]) == (ids["z"],)  # the customer's only authorization
    assert owners(_points("5", 7)[0]) == (ids["q2"],)  # the only one whose UsagePoints were never recorded
    assert owners(f"{R}/RetailCustomer/2/Customer/1/CustomerAccount/1") == (ids["y"],)  # customer data: FB_51
    assert owners.placed_by_customer == 2
    assert owners.misses == {}
    # not guessed
    assert owners(_points("2", 3)[0]) == ()  # both of customer 2's authorizations are known not to hold it
    assert owners(_points("3", 1)[0]) == ()  # revoked
    assert owners(_points("4", 1)[0]) == ()  # two authorizations, neither known
    assert owners(f"{R}/UsagePoint/1") == ()  # no customer named, and UsagePoint 1 of customers 2 and 5 is held
    assert owners(f"{R}/RetailCustomer/4/Customer/1") == ()  # no authorization of 4 covers customer data
    assert owners(f"{R}/ReadingType/1") == ()  # neither customer nor UsagePoint: the split's link rules decide
    assert owners.misses == {
        "its customer has several live authorizations and none is known to hold the UsagePoint": 2,
        "no live authorization of its customer": 1,
        "UsagePoint 1 is held by authorizations of several customers": 1,
        "customer data of a customer with no live authorization to customer data": 1}
    # cached per UsagePoint: asking again costs nothing and counts nothing twice
    assert owners(_points("2", 3)[0]) == () and sum(owners.misses.values()) == 5
