"""The Try-it walkthrough's parts without a running bridge: usage segments → daily kWh per meter (exact), the SVG
chart's geometry, the demo's session store (encrypted, 0600 in 0700, forgotten when idle), the signed cookie, the
demo off unless configured, its refusals, and the landing page's live counts on both backends."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest
from gateway_helpers import consent_flow, gateway_client, make_config, register

from cds.secrets import SecretBox
from cds.store.jobs import enqueue
from cds.store.overview import store_overview
from gateway.demo.client import DemoClient, DemoClientError
from gateway.demo.sessions import COOKIE, SESSION_SECONDS, DemoSessions, SessionCookie
from gateway.demo.usage import chart, daily_kwh
from gateway.demo.walkthrough import WINDOW_DAYS, requested_details

NEW_YORK = ZoneInfo("America/New_York")


def _segment(start: str, interval: int, rows: list, formats: list[dict], meter: str = "m1", **extra) -> dict:
    return {"cds_usagesegment_id": f"s-{start}", "segment_start": start, "interval": interval, "formats": formats,
            "values": rows, "related_meterdevices": [meter] if meter else [], "related_servicepoints": ["sp1"],
            **extra}


FORWARD = {"type": "electric_usage", "units": "kWh", "direction": "forward"}
NET = {"type": "electric_usage", "units": "kWh", "direction": "net"}
GAS = {"type": "natural_gas_usage", "units": "therm", "direction": "forward"}


def test_daily_kwh_sums_exactly_per_local_day_and_meter():
    hourly = [[{"eu": Decimal("0.125")}, {"eu": Decimal("9")}] for _ in range(48)]
    hourly[3] = [None, None]  # a slot without a reading
    segments = [
        # 48 hours from 2026-03-07 05:00Z (midnight in New York); March 8 is the day DST starts (23 hours)
        _segment("2026-03-07T05:00:00Z", 3600, hourly, [FORWARD, NET]),
        # a second meter, net only, in Wh
        _segment("2026-03-07T05:00:00Z", 86400, [[{"v": 1500}]], [{**NET, "units": "Wh"}], meter="m2"),
        # skipped: a billing-period segment, and gas
        _segment("2026-03-01T05:00:00Z", 2678400, [[{"eu": 999}]], [FORWARD]),
        _segment("2026-03-07T05:00:00Z", 3600, [[{"g": 5}]], [GAS], meter="m3"),
    ]
    first, second = daily_kwh(segments, NEW_YORK)
    assert (first.meter, first.label, second.meter, second.label) == ("m1", "Meter 1", "m2", "Meter 2")
    # forward is chosen over net; the missing slot counts nothing; the short local day holds 23 readings
    assert first.days == {date(2026, 3, 7): Decimal("2.875"), date(2026, 3, 8): Decimal("2.875"),
                          date(2026, 3, 9): Decimal("0.125")}
    assert second.days == {date(2026, 3, 7): Decimal("1.500")}
    assert all(isinstance(v, Decimal) for v in first.days.values())
    # the same readings bucketed in UTC cross midnight elsewhere
    (utc, _m2) = daily_kwh(segments[:2], ZoneInfo("UTC"))
    assert sum(utc.days.values()) == first.total == Decimal("5.875") and len(utc.days) == 3


def test_a_meter_is_named_by_its_service_point_without_a_meter_device():
    (meter,) = daily_kwh([_segment("2026-03-07T00:00:00Z", 3600, [[{"eu": 1}]], [FORWARD], meter="")], UTC_ZONE)
    assert meter.meter == "sp1"


UTC_ZONE = ZoneInfo("UTC")


def test_chart_geometry_scales_to_a_nice_axis_and_places_every_day():
    segments = [_segment("2026-03-01T00:00:00Z", 86400, [[{"eu": Decimal("3.7")}], [{"eu": Decimal("7.2")}]],
                         [FORWARD])]
    meters = daily_kwh(segments, UTC_ZONE)
    drawn = chart(meters, date(2026, 3, 1), date(2026, 3, 3))
    assert drawn["unit_max"] == "10" and [g["label"] for g in drawn["grid"]] == ["0", "2.5", "5", "7.5", "10"]
    (series,) = drawn["series"]
    assert [p["title"] for p in series["points"]] == ["Mar 1: 3.7 kWh", "Mar 2: 7.2 kWh"]  # Mar 3: no data, no point
    (x1, y1), (x2, y2) = ((Decimal(p["x"]), Decimal(p["y"])) for p in series["points"])
    assert x1 == Decimal(drawn["left"]) and x2 - x1 == (Decimal(drawn["right"]) - x1) / 2
    bottom, top = Decimal(drawn["bottom"]), Decimal(drawn["top"])
    assert y1 == (bottom - (bottom - top) * Decimal("0.37")).quantize(Decimal("0.1"))
    assert y2 < y1 and series["polyline"] == f"{x1},{y1} {x2},{y2}"
    empty = chart([], date(2026, 3, 1), date(2026, 3, 1))
    assert empty["series"] == [] and empty["unit_max"] == "1"


def test_the_request_covers_whole_local_days():
    (entry,) = requested_details(NEW_YORK, datetime(2026, 12, 7, 19, 22, 54, tzinfo=UTC))
    assert entry["segment_start"] == (datetime(2026, 12, 7) - timedelta(days=WINDOW_DAYS)).strftime(
        "%Y-%m-%dT00:00:00-05:00")
    assert entry["include_usage_segment_value_types"] == ["electric_usage_forward"]


def test_demo_sessions_are_encrypted_private_and_forgotten_when_idle(tmp_path):
    box = SecretBox(b"x" * 43 + b"=", b"k" * 32)
    directory = tmp_path / "var" / "demo" / "sessions"
    sessions = DemoSessions(directory, box)
    assert sessions.load("nobody") == {}
    sessions.save("sid-1", {"tokens": {"access_token": "secret-access-token"}})
    assert sessions.load("sid-1") == {"tokens": {"access_token": "secret-access-token"}}
    (path,) = directory.iterdir()
    assert "sid-1" not in path.name and b"secret-access-token" not in path.read_bytes()
    assert oct(path.stat().st_mode & 0o777) == "0o600" and oct(directory.stat().st_mode & 0o777) == "0o700"
    other_key = DemoSessions(directory, SecretBox(b"y" * 43 + b"=", b"k" * 32))
    assert other_key.load("sid-1") == {}  # another secret key reads nothing
    idle = time.time() - SESSION_SECONDS - 1
    os.utime(path, (idle, idle))
    assert sessions.load("sid-1") == {}
    sessions._pruned = 0
    sessions.save("sid-2", {})
    assert [p for p in directory.iterdir() if p == path] == []  # pruned


def test_the_session_cookie_is_signed():
    cookie = SessionCookie(b"k" * 32)
    session_id, value = cookie.new()
    assert cookie.read(value) == session_id and session_id not in value.split(".")[-1]
    assert cookie.read(value[:-2] + ("AA" if not value.endswith("AA") else "BB")) is None
    assert cookie.read(None) is None and cookie.read("garbage") is None
    assert SessionCookie(b"j" * 32).read(value) is None


def test_the_demo_is_off_unless_configured(tmp_path):
    with gateway_client(make_config(tmp_path)) as client:
        assert client.get("/try").status_code == 404
        home = client.get("/")
        assert home.status_code == 200 and 'id="try-link"' not in home.text and "[gateway] demo" in home.text


def test_the_demo_refuses_forged_forms_and_foreign_callbacks(tmp_path):
    with gateway_client(make_config(tmp_path, demo=True)) as client:
        home = client.get("/")
        assert 'id="try-link"' in home.text
        intro = client.get("/try")
        assert intro.status_code == 200
        set_cookie = intro.headers["set-cookie"]
        assert set_cookie.startswith(f"{COOKIE}=") and "HttpOnly" in set_cookie and "Path=/try" in set_cookie
        assert "samesite=lax" in set_cookie.lower()
        assert client.post("/try/start", data={"csrf": "forged"}).status_code == 403
        client.cookies.clear()
        csrf = re.search(r'name="csrf" value="([^"]+)"', intro.text).group(1)
        assert client.post("/try/start", data={"csrf": csrf}).status_code == 403  # no session cookie
        answer = client.get("/try/callback", params={"code": "c", "state": "s"})
        assert answer.status_code == 400 and "does not belong" in answer.text
        assert client.get("/try/usage").status_code == 303  # nothing started: back to the start


def test_the_landing_page_counts_grants_and_open_jobs(tmp_path, database_url):
    with gateway_client(make_config(tmp_path, database_url)) as client:
        registration = register(client)
        for state in ("s1", "s2"):
            consent_flow(client, registration, state=state)
        gateway = client.app.state.gateway
        with gateway.sessions() as session, session.begin():
            for n in range(3):
                enqueue(session, "fetch_subscription", {"n": n}, f"landing-test-{n}", queue="http")
            overview = store_overview(session)
        assert overview.grants == {"active": 2}
        assert overview.jobs["queued"] == 3 and overview.jobs_waiting == 3 and overview.jobs["dead"] == 0
        page = client.get("/").text
        assert '<td data-status="active">2</td>' in page
        assert re.search(r'id="jobs-waiting"><strong>3</strong> waiting', page)
        assert json.dumps(overview.jobs)  # plain data


def test_the_demo_client_fetches_only_from_its_own_server():
    client = DemoClient("http://127.0.0.1:9", "http://127.0.0.1:9/try/callback")
    client._metadata = {"cds_usagesegments_api": "https://elsewhere.example/cds-api/v1/usage-segments"}
    with pytest.raises(DemoClientError, match="is not on this server"):
        asyncio.run(client.usage_segments("token"))
    assert client._own("http://127.0.0.1:9/oauth/token", "x") == "http://127.0.0.1:9/oauth/token"
    with pytest.raises(DemoClientError):
        client._own("http://127.0.0.1:90/oauth/token", "x")
