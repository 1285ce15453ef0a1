"""The usage-segment listing's fast paths answer exactly what the general path answers.

``cds.projection.StoredSegments`` serves stored segments without parsing their Value Sets into numbers (the stored
JSON text is passed through, or picked column by column), and the data routes keep each grant's ``Access`` per
customer data version. Both must be invisible: every response byte-identical to the general path (the stored body
decoded as ``json.loads(body, parse_float=Decimal)``, ``serve_segment``, ``grant_access`` on freshly loaded
objects), for windows that trim, value-type choices, null value types, preselection, paging both ways and filters;
and a kept Access must follow any change of the customer's objects, even one within the same second.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import msgspec
import pytest
from gateway_helpers import bearer, gateway_client, register
from test_data_api import API, CUSTOMER, SCOPES, config, generated, grant, ingest, rel

import gateway.routes.data as data_routes
from cds import jsonenc
from cds.data_api import CustomerObjects, group_objects
from cds.projection import (
    NEEDS_BODY,
    SegmentRule,
    StoredSegments,
    expired_entries,
    grant_access,
    serve_segment,
)
from cds.store.models import DataObject, UsageSegmentRow
from cds.store.objects import decode_body, load_objects, segment_object
from gateway.routes.data import value_formats


# ---------------------------------------------------------------------------------------------- the reference
def reference_serve(self: StoredSegments, created: str, modified: str, synced: str, body: str) -> Any:
    """The general path as it was: the whole body through the standard library, then serve_segment."""
    stored = json.loads(body, parse_float=Decimal)
    segment = {"cds_usagesegment_id": stored.pop("cds_usagesegment_id"), "cds_created": created,
               "cds_modified": modified, "cds_synced": synced}
    segment.update(stored)
    return serve_segment(segment, self.access)


def reference_serve_json(self: StoredSegments, created: str, modified: str, synced: str, body: str) -> Any:
    """The general path's answer as the JSON text the listing writes."""
    served = reference_serve(self, created, modified, synced, body)
    return None if served is None else msgspec.Raw(jsonenc.encode(served))


def uncached_access(self, details, grant, objects, now):
    """The Access computed afresh from ``load_objects`` for every request (no cache)."""
    grouped = group_objects(load_objects(objects._session, objects._customer_ids, data_set=objects.data_set))
    return grant_access(details, grouped, now, scope_types=self.scope_types, value_formats=self.value_formats,
                        granted_at=grant.created)


def pages(client, access_token: str, url: str) -> list[tuple[str, bytes]]:
    """Every page from ``url`` following ``next``, then back from the last one following ``previous``."""
    answers: list[tuple[str, bytes]] = []
    for key in ("next", "previous"):
        while url:
            response = client.get(url, headers=bearer(access_token))
            answers.append((url, response.content))
            if response.status_code != 200:
                return answers
            body = response.json()
            url = rel(body[key]) if body.get(key) else None
        url = rel(body["previous"]) if body.get("previous") else None
    return answers


def set_meter_number(client, meter_id: str, number: str | None) -> None:
    """Rewrites a stored meter's body (and its hash) without moving any timestamp, as a same-second ingest would."""
    with client.app.state.gateway.sessions() as session, session.begin():
        row = session.get(DataObject, ("meter_devices", meter_id))
        body = json.loads(row.body, parse_float=Decimal)
        body["meter_number"] = number
        text = jsonenc.encode(dict(sorted(body.items()))).decode()
        row.body, row.body_hash = text, hashlib.sha256(text.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------- HTTP, end to end
def test_segment_listings_are_byte_identical_to_the_general_path(tmp_path, monkeypatch, database_url):
    today = date.today()
    with gateway_client(config(tmp_path, database_url, page_size=9)) as client:
        ingest(client, generated(tmp_path, "mixed.xml", usage_points=3, days=12, commodity="mixed",
                                 quality_gaps=True, start=today - timedelta(days=14)))
        ingest(client, generated(tmp_path, "net.xml", days=6, net_metering=True, start=today - timedelta(days=3),
                                 seed=2, subscription="2"))
        with client.app.state.gateway.sessions() as session:
            meters = sorted(o["cds_meterdevice_id"] for o in load_objects(session, [CUSTOMER], "meter_devices"))
            choices = sorted(value_formats(client.app.state.gateway.descriptions))
        set_meter_number(client, meters[0], "M-1")
        registration = register(client, SCOPES)
        cut = (datetime.combine(today - timedelta(days=10), datetime.min.time(), UTC) + timedelta(hours=13, minutes=7))
        stamp = cut.strftime("%Y-%m-%dT%H:%M:%SZ")
        end = f"{(today + timedelta(days=2)).isoformat()}T12:15:00-05:00"
        grants = {
            "full": {},
            "window": {"segment_start": stamp, "segment_end": end},
            "no values": {"include_usage_segment_value_types": None},
            "preselected": {"meter_numbers": ["M-1"], "segment_start": stamp},
            "frozen": {"sync_until": f"{(today + timedelta(days=1)).isoformat()}T00:00:00Z"},
            "two types": {"include_usage_segment_value_types": choices[:2]},
            **{f"type {choice}": {"include_usage_segment_value_types": [choice]} for choice in choices},
        }
        tokens = {name: grant(client, registration, **fields)["access_token"] for name, fields in grants.items()}
        noon = (cut + timedelta(days=2)).replace(hour=12, minute=0).strftime("%Y-%m-%dT%H:%M:%SZ")
        requests = [(name, f"{API}/usage-segments") for name in tokens]
        requests += [("window", f"{API}/usage-segments?after={stamp}&before={noon}"),
                     ("full", f"{API}/usage-segments?after={noon}&before={noon}"),
                     ("full", f"{API}/usage-segments?cds_meterdevice_ids={meters[1]}"),
                     ("type cost", f"{API}/usage-segments?meter_numbers=M-1"),
                     ("preselected", f"{API}/meter-devices")]

        def answers() -> list[tuple[str, bytes]]:
            return [(f"{name} {url}", body) for name, first in requests
                    for url, body in pages(client, tokens[name], first)]

        spliced: list[bool] = []
        stored = StoredSegments.serve_stored

        def counted(self, *row):
            answer = stored(self, *row)
            spliced.append(isinstance(answer, msgspec.Raw))
            return answer

        with monkeypatch.context() as patch:
            patch.setattr(StoredSegments, "serve_stored", counted)
            fast = answers()
        assert sum(spliced) > 100 and not all(spliced)  # both ways were taken: from the serving and from the body
        again = answers()  # served with the Accesses kept by the first pass
        with monkeypatch.context() as patch:
            patch.setattr(StoredSegments, "serve", reference_serve)
            patch.setattr(StoredSegments, "serve_json", reference_serve_json)
            patch.setattr(StoredSegments, "serve_stored", lambda self, *row: NEEDS_BODY)
            patch.setattr(data_routes._Derived, "access", uncached_access)
            general = answers()
        assert [url for url, _ in fast] == [url for url, _ in general]
        for (url, body), (_, expected), (_, kept) in zip(fast, general, again, strict=True):
            assert body == expected, url
            assert kept == expected, url
        segments = [s for _, body in fast if body.startswith(b'{"usage_segments"')
                    for s in json.loads(body)["usage_segments"]]
        assert len(fast) > 60 and len(segments) > 500
        # the requests above did reach every path: trimmed ids, values dropped, columns picked, nothing shared
        window = [json.loads(b)["usage_segments"] for u, b in fast if u.startswith("window ")]
        first_slot = (cut + timedelta(minutes=8)).strftime("%Y-%m-%dT%H:%M:%SZ")  # 13:15, the first whole slot
        assert any(s["segment_start"] == first_slot for page in window for s in page)
        assert all(s["values"] == [] for u, b in fast if u.startswith("no values ")
                   for s in json.loads(b)["usage_segments"])
        assert any(len(s["formats"]) == 1 for u, b in fast if u.startswith("type ")
                   for s in json.loads(b)["usage_segments"])


def test_a_kept_access_follows_changes_within_the_same_second(tmp_path):
    with gateway_client(config(tmp_path)) as client:
        ingest(client, generated(tmp_path, "feed.xml", usage_points=2, days=2))
        with client.app.state.gateway.sessions() as session:
            first, second = sorted(o["cds_meterdevice_id"]
                                   for o in load_objects(session, [CUSTOMER], "meter_devices"))
        set_meter_number(client, first, "M-1")
        registration = register(client, SCOPES)

        def tokens() -> tuple[str, str]:
            return (grant(client, registration, "cds_meters_1", meter_numbers=["M-1"])["access_token"],
                    grant(client, registration, meter_numbers=["M-1"])["access_token"])

        def seen(meters: str, usage: str) -> tuple[list[str], list[str]]:
            devices = client.get(f"{API}/meter-devices", headers=bearer(meters)).json()["meter_devices"]
            segments = client.get(f"{API}/usage-segments", headers=bearer(usage)).json()["usage_segments"]
            return [m["cds_meterdevice_id"] for m in devices], [s["cds_usagesegment_id"] for s in segments]

        kept = tokens()
        before = seen(*kept)
        assert before[0] == [first] and before[1] and seen(*kept) == before
        with client.app.state.gateway.sessions() as session:
            stamps = session.query(DataObject.modified, DataObject.synced).order_by(DataObject.object_id).all()
        set_meter_number(client, first, None)  # the number moves to the other meter; no timestamp moves
        set_meter_number(client, second, "M-1")
        with client.app.state.gateway.sessions() as session:
            assert session.query(DataObject.modified, DataObject.synced).order_by(DataObject.object_id).all() == \
                stamps
        after = seen(*kept)
        assert after == seen(*tokens())  # what new grants (nothing kept for them) see
        assert after[0] == [second] and after[1] and not set(after[1]) & set(before[1])


def test_the_access_is_kept_per_data_version(tmp_path, monkeypatch):
    with gateway_client(config(tmp_path)) as client:
        ingest(client, generated(tmp_path, "feed.xml", usage_points=2, days=2))
        registration = register(client, SCOPES)
        access_token = grant(client, registration)["access_token"]
        calls = []
        original = data_routes.grant_access
        monkeypatch.setattr(data_routes, "grant_access", lambda *a, **k: calls.append(1) or original(*a, **k))
        for _ in range(3):
            assert client.get(f"{API}/usage-segments", headers=bearer(access_token)).status_code == 200
        assert len(calls) == 1
        ingest(client, generated(tmp_path, "more.xml", usage_points=3, days=2, seed=5, subscription="5"))
        assert client.get(f"{API}/usage-segments", headers=bearer(access_token)).status_code == 200
        assert len(calls) == 2


# ---------------------------------------------------------------------------------------------- units
def test_customer_objects_load_as_load_objects(tmp_path):
    with gateway_client(config(tmp_path)) as client:
        ingest(client, generated(tmp_path, "feed.xml", usage_points=3, days=40), statements=True)
        with client.app.state.gateway.sessions() as session:
            expected = group_objects(load_objects(session, [CUSTOMER]))
            lazy = CustomerObjects(session, [CUSTOMER])
            assert {listing: lazy[listing] for listing in lazy} == expected
            assert lazy.ids("meter_devices") == {m["cds_meterdevice_id"] for m in expected["meter_devices"]}
            eager = CustomerObjects(session, [CUSTOMER])
            assert eager.load_all() == lazy.version() == CustomerObjects(session, [CUSTOMER]).version()
            assert dict(eager.items()) == expected
            assert CustomerObjects(session, ["nobody"]).version() != lazy.version()
            assert CustomerObjects(session, ["nobody"])["accounts"] == []


@pytest.mark.parametrize("text", [
    b'{"a":1,"b":-0,"c":1.50,"d":1E+3,"e":1e-7,"f":12345678901234567890123,"g":-0.0,"h":[null,true,"x\\u00e9"]}',
    b'{"n":NaN}', b'[1, 2.5e300, {"k": "v"}]', b'18446744073709551616',
])
def test_decode_body_reads_as_json_loads_with_decimals(text):
    expected = json.loads(text, parse_float=Decimal)
    got = decode_body(text)
    assert repr(got) == repr(expected)


_BASE = {
    "cds_usagesegment_id": "u1", "interval": 3600,
    "formats": [{"id": "f_cost", "type": "cost", "currency": "USD", "indexes": [1]},
                {"id": "f_use", "type": "electric_usage", "direction": "forward", "units": "kWh",
                 "greenbridge_reading_type": {"kind": 12}},
                {"id": "f_rev", "type": "electric_usage", "direction": "reverse", "units": "kWh"}],
    "related_accounts": [], "related_aggregations": [], "related_billsections": [], "related_meterdevices": ["m1"],
    "related_servicecontracts": [], "related_servicepoints": [], "segment_start": "2025-01-01T05:00:00Z",
    "segment_end": "2025-01-01T09:00:00Z", "greenbridge_source": "x",
    "values": [[{"c": Decimal("0.10")}, {"eu": Decimal("1.0")}, {"eu": 0}] for _ in range(4)],
}


def _variant(**changes: Any) -> dict[str, Any]:
    segment = json.loads(jsonenc.encode(_BASE), parse_float=Decimal)
    for key, value in changes.items():
        if value is _DROP:
            segment.pop(key)
        else:
            segment[key] = value
    return segment


_DROP = object()
_BODIES = {
    "canonical": msgspec.json.Encoder(decimal_format="number", order="sorted").encode(_variant()),
    "float exponents": b'{"cds_usagesegment_id":"u1","formats":[{"id":"a","type":"cost"}],"interval":3600,'
                       b'"related_meterdevices":["m1"],"segment_end":"2025-01-01T07:00:00Z",'
                       b'"segment_start":"2025-01-01T05:00:00Z","values":[[{"c":1e-7}],[{"c":2.5e16}]]}',
    "whitespace": b'{"cds_usagesegment_id": "u1", "formats": [{"id": "a", "type": "cost"}], "interval": 3600,'
                  b' "segment_end": "2025-01-01T07:00:00Z", "segment_start": "2025-01-01T05:00:00Z",'
                  b' "values": [[ {"c": 1.0} ], [{"c" : 2}]]}',
    "NaN": b'{"cds_usagesegment_id":"u1","formats":[{"id":"a","type":"cost"}],"interval":3600,'
           b'"segment_end":"2025-01-01T07:00:00Z","segment_start":"2025-01-01T05:00:00Z","values":[[NaN],[1]]}',
}
for _name, _changes in {
    "ragged": {"values": [[{"c": 1}], [{"c": 1}, {"eu": 2}, {"eu": 3}, {"x": 4}], [], [None, None, None]]},
    "null sets": {"values": [None, [{"c": 1}, {"eu": 2}, {"eu": 3}], "odd", {"k": 1}]},
    "extension values": {"values": [[{"c": 1, "greenbridge_q": 8}, {"eu": 2}, {"eu": 3}]] * 4},
    "escaped strings": {"values": [[{"c": 1, "note": "a\"b\\c\n"}, {"eu": 2}, {"eu": 3}]] * 4},
    "null values": {"values": None}, "no values": {"values": _DROP}, "empty values": {"values": []},
    "values object": {"values": {"a": 1}}, "no formats": {"formats": _DROP}, "null formats": {"formats": None},
    "odd formats": {"formats": [{"id": "a", "type": "cost"}, "junk", None]},
    "one format": {"formats": [{"id": "a", "type": "cost"}], "values": [[{"c": 1}]] * 4},
    "wide": {"formats": [{"id": f"f{i}", "type": "cost"} for i in range(70)], "values": [[{"c": 1}] * 70] * 4},
    "no meter": {"related_meterdevices": []}, "other meter": {"related_meterdevices": ["m2"]},
    "body timestamp": {"cds_created": "2020-01-01T00:00:00Z"},
    "other order": {},
}.items():
    _segment = _variant(**_changes)
    if _name == "other order":
        _segment = dict(reversed(list(_segment.items())))
        _BODIES[_name] = msgspec.json.encode(_segment)
    else:
        _BODIES[_name] = msgspec.json.Encoder(decimal_format="number", order="sorted").encode(_segment)


def _rule(**fields: Any) -> SegmentRule:
    anchors = {"accounts": frozenset(), "service_contracts": frozenset(), "service_points": frozenset(),
               "meter_devices": frozenset({"m1"})}
    return SegmentRule(anchors=anchors, **fields)


_NOW = datetime(2025, 1, 2, tzinfo=UTC)
_ACCESSES = {
    "everything": (_rule(),),
    "window": (_rule(start=datetime(2025, 1, 1, 6, 30, tzinfo=UTC), end=datetime(2025, 1, 1, 8, tzinfo=UTC)),),
    "no values": (_rule(value_formats=None, all_value_formats=False),),
    "cost only": (_rule(value_formats=({"type": "cost"},), all_value_formats=False),),
    "usage only": (_rule(value_formats=({"type": "electric_usage"},), all_value_formats=False),),
    "reverse only": (_rule(value_formats=({"type": "electric_usage", "direction": "reverse"},),
                           all_value_formats=False),),
    "created before": (_rule(created_until=datetime(2024, 1, 1, tzinfo=UTC)),),
    "two rules": (_rule(created_until=datetime(2024, 1, 1, tzinfo=UTC)),
                  _rule(value_formats=({"type": "cost"},), all_value_formats=False)),
}


@pytest.mark.parametrize("access_name", sorted(_ACCESSES))
@pytest.mark.parametrize("body_name", sorted(_BODIES))
def test_stored_segments_encode_as_the_general_path(body_name, access_name):
    from cds.projection import Access

    access = Access(listings=frozenset({"usage_segments", "meter_devices"}),
                    visible={"meter_devices": frozenset({"m1"})}, segment_rules=_ACCESSES[access_name],
                    sync_until=datetime(2025, 1, 1, 12, tzinfo=UTC) if access_name == "two rules" else None)
    body = _BODIES[body_name].decode()
    stamps = ("2025-01-01T10:00:00Z", "2025-01-01T11:00:00Z", "2025-01-01T12:30:00Z")
    fast = StoredSegments(access)
    for _ in range(2):  # the second time from the memos
        try:
            expected = jsonenc.encode(reference_serve(fast, *stamps, body))
        except Exception as error:  # the general path fails: the fast one fails alike
            with pytest.raises(type(error)):
                fast.serve(*stamps, body)
            return
        assert jsonenc.encode(fast.serve(*stamps, body)) == expected


@pytest.mark.parametrize("access_name", sorted(_ACCESSES))
@pytest.mark.parametrize("body_name", sorted(_BODIES))
def test_stored_segments_json_is_the_general_paths_encoding(body_name, access_name):
    """serve_json (the stored body with the timestamps spliced in, when nothing changes) writes the bytes the
    general path's answer encodes to, for every body and access above; None where the general path shares nothing."""
    from cds.projection import Access

    access = Access(listings=frozenset({"usage_segments", "meter_devices"}),
                    visible={"meter_devices": frozenset({"m1"})}, segment_rules=_ACCESSES[access_name],
                    sync_until=datetime(2025, 1, 1, 12, tzinfo=UTC) if access_name == "two rules" else None)
    body = _BODIES[body_name].decode()
    stamps = ("2025-01-01T10:00:00Z", "2025-01-01T11:00:00Z", "2025-01-01T12:30:00Z")
    fast = StoredSegments(access)
    for _ in range(2):  # the second time from the memos
        try:
            expected = reference_serve(fast, *stamps, body)
        except Exception as error:
            with pytest.raises(type(error)):
                fast.serve_json(*stamps, body)
            return
        served = fast.serve_json(*stamps, body)
        if expected is None:
            assert served is None
        else:
            assert bytes(served) == jsonenc.encode(expected)


@pytest.mark.parametrize("access_name", sorted(_ACCESSES))
@pytest.mark.parametrize("body_name", sorted(_BODIES))
def test_stored_serving_is_the_general_paths_encoding(body_name, access_name):
    """serve_stored (ingest's segment_serving, the grant's decision per shape, the row's instants) writes the bytes
    the general path's answer encodes to, or None where it shares nothing, or asks for the body."""
    from cds.projection import Access, segment_serving

    access = Access(listings=frozenset({"usage_segments", "meter_devices"}),
                    visible={"meter_devices": frozenset({"m1"})}, segment_rules=_ACCESSES[access_name],
                    sync_until=datetime(2025, 1, 1, 12, tzinfo=UTC) if access_name == "two rules" else None)
    body = _BODIES[body_name].decode()
    serving = segment_serving(body)
    if serving is None:  # served from the body (the cases above)
        assert body_name not in ("canonical", "one format", "no meter", "other meter", "empty values")
        return
    stored = json.loads(body)
    instants = [datetime.fromisoformat(stored[k].replace("Z", "+00:00")) for k in ("segment_start", "segment_end")]
    stamps = ("2025-01-01T10:00:00Z", "2025-01-01T11:00:00Z", "2025-01-01T12:30:00Z")
    fast = StoredSegments(access)
    expected = reference_serve(fast, *stamps, body)
    for _ in range(2):  # the second time from the decision kept per shape
        answer = fast.serve_stored(stored["cds_usagesegment_id"], *stamps, *instants, *serving)
        if expected is None:
            assert answer is None
        elif answer is not NEEDS_BODY:
            assert bytes(answer) == jsonenc.encode(expected)
    if (body_name, access_name) in (("canonical", "everything"), ("no meter", "everything"),
                                    ("one format", "cost only")):
        assert isinstance(answer, msgspec.Raw)  # the serving was used


def test_stored_segments_json_splices_a_segment_kept_whole():
    """The splice is taken for an ingested-looking body the grant keeps whole (and not when anything changes)."""
    access = grant_access([{"type": "cds_usage_1"}], {"meter_devices": [{"cds_meterdevice_id": "m1"}]}, _NOW)
    stamps = ("a", "b", "c")
    whole = StoredSegments(access)._whole(*stamps, _BODIES["canonical"])
    assert whole is not None
    assert bytes(whole) == jsonenc.encode(reference_serve(StoredSegments(access), *stamps,
                                                          _BODIES["canonical"].decode()))
    for changed in ("other meter", "extension values", "float exponents", "whitespace", "other order", "ragged"):
        assert StoredSegments(access)._whole(*stamps, _BODIES[changed]) is None, changed
    chosen = grant_access([{"type": "cds_usage_1", "include_usage_segment_value_types": ["f_cost"]}],
                          {"meter_devices": [{"cds_meterdevice_id": "m1"}]}, _NOW)
    assert StoredSegments(chosen)._whole(*stamps, _BODIES["canonical"]) is None


def test_stored_segments_pass_canonical_values_through_unparsed():
    access = grant_access([{"type": "cds_usage_1"}], {"meter_devices": [{"cds_meterdevice_id": "m1"}]}, _NOW)
    served = StoredSegments(access).serve("a", "b", "c", _BODIES["canonical"].decode())
    assert isinstance(served["values"], msgspec.Raw)
    chosen = grant_access([{"type": "cds_usage_1", "include_usage_segment_value_types": ["f_cost"]}],
                          {"meter_devices": [{"cds_meterdevice_id": "m1"}]}, _NOW)
    picked = StoredSegments(chosen).serve("a", "b", "c", _BODIES["canonical"].decode())
    assert [f["id"] for f in picked["formats"]] == ["f_cost"]
    assert all(isinstance(member, msgspec.Raw) for value_set in picked["values"] for member in value_set)


def test_expired_entries_is_what_grant_access_reads_of_the_time():
    details = [{"type": "cds_usage_1", "expires": "2025-01-01T00:00:00Z"}, {"type": "cds_usage_1"},
               {"type": "cds_usage_1", "expires": "not a date"}, "junk", {"type": "cds_usage_1", "expires": None}]
    before, after = datetime(2024, 12, 31, tzinfo=UTC), datetime(2025, 1, 1, tzinfo=UTC)
    assert expired_entries(details, before) == (False,) * 5
    assert expired_entries(details, after) == (True, False, False, False, False)


def test_stored_bodies_reencode_to_themselves(tmp_path):
    """What StoredSegments relies on: ingest writes bodies that decode and encode back byte for byte."""
    with gateway_client(config(tmp_path)) as client:
        ingest(client, generated(tmp_path, "feed.xml", usage_points=3, days=3, commodity="mixed",
                                 net_metering=True, quality_gaps=True))
        with client.app.state.gateway.sessions() as session:
            rows = session.query(UsageSegmentRow).all()
            assert rows
            for row in rows:
                assert jsonenc.encode(json.loads(row.body, parse_float=Decimal)) == row.body.encode()
                assert segment_object(row)["cds_usagesegment_id"] == row.segment_id




def test_stored_segments_memos_keep_apart_what_differs():
    """Rules are found once per relations (and creation time, when a rule cuts by it), visible ids once per field."""
    from cds.projection import Access

    anchors = {"accounts": frozenset({"x1"}), "service_contracts": frozenset(), "service_points": frozenset(),
               "meter_devices": frozenset({"x1"})}
    access = Access(listings=frozenset({"usage_segments"}), visible={"meter_devices": frozenset({"x1"})},
                    segment_rules=(SegmentRule(anchors=anchors, created_until=datetime(2025, 1, 1, tzinfo=UTC)),))
    body = _BODIES["canonical"].decode().replace('"related_accounts":[]', '"related_accounts":["x1"]') \
        .replace('"related_meterdevices":["m1"]', '"related_meterdevices":["x1"]')
    fast = StoredSegments(access)
    for created in ("2024-12-31T00:00:00Z", "2025-01-02T00:00:00Z", "2024-06-01T00:00:00Z"):
        stamps = (created, "2025-01-02T00:00:00Z", "2025-01-02T00:00:00Z")
        expected = reference_serve(fast, *stamps, body)
        assert jsonenc.encode(fast.serve(*stamps, body)) == jsonenc.encode(expected)
        assert (expected is None) == (created > "2025")
        if expected is not None:
            assert expected["related_accounts"] == [] and expected["related_meterdevices"] == ["x1"]


def test_migration_fills_the_serving_of_stored_segments(database_url):
    """Segments stored before migration 0014 get the serving ingest now writes (segment_serving of their body);
    a body with no such form stays NULL and is served from itself."""
    from alembic import command
    from sqlalchemy import text

    from cds.projection import segment_serving
    from cds.store.engine import make_engine
    from cds.store.migrate import alembic_config, upgrade

    engine = make_engine(database_url)
    config = alembic_config(database_url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0013")
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    bodies = {"s1": _BODIES["canonical"].decode(), "s2": _BODIES["whitespace"].decode()}
    with engine.begin() as connection:
        for segment_id, body in bodies.items():
            connection.execute(text(
                "INSERT INTO usage_segments (segment_id, customer_id, data_set, source, created, modified, synced, "
                "segment_start, segment_end, body, body_hash) VALUES (:id, 'c', '', 'x', :now, :now, :now, :now, "
                ":now, :body, 'h')"), {"id": segment_id, "now": now, "body": body})
    upgrade(engine)
    with engine.connect() as connection:
        found = {row[0]: (row[1], row[2]) for row in connection.execute(
            text("SELECT segment_id, serving, serving_shape FROM usage_segments"))}
    engine.dispose()
    assert found == {"s1": segment_serving(bodies["s1"]), "s2": (None, None)}
    assert found["s1"][0] is not None
