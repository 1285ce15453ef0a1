"""Ingesting translated Green Button data into the store (bridge/ingest.py, ``greenbridge ingest``), on both backends.

The oracle is the translation itself, run independently of the store: what is loaded back must equal it object for
object (decimals digit for digit), with cds_created/cds_modified/cds_synced following WG3-01 §10.
"""

from __future__ import annotations

import dataclasses
import io
import os
import re
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import msgspec
import pytest
from conftest import REPO
from gateway_helpers import make_config
from sqlalchemy import func, select

import bridge.ingest
from bridge.from_espi import LISTINGS, TranslateOptions, translate
from bridge.ingest import IngestError, ingest_file, ingest_translation, translate_options_for
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.store.models import DataObject, UsageSegmentRow
from cds.store.objects import ID_FIELDS, TIMESTAMPS, load_objects, segment_object
from espi.errors import XmlSyntaxError
from espi.generate import FeedSpec, write_feed

T1 = datetime(2026, 2, 1, 12, 0, 0, tzinfo=UTC)
T2 = datetime(2026, 2, 2, 8, 30, 0, tzinfo=UTC)
SAMPLES = [
    "gbobjects_Coastal_Multi_Family_RetailCustomer_5.xml",
    "hydroone_Retail_Customer_redacted.xml",
    "cmdtest_threeusagepointsonecustomer.xml",
    "sdk_15minLP_15Days.xml",
    "gbasandbox2016_batch_retail.xml",
]


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    upgrade(engine)
    yield make_sessionmaker(engine)
    engine.dispose()


def _feed(tmp_path: Path, name: str = "feed.xml", **spec) -> Path:
    spec = {"usage_points": 2, "days": 3, "net_metering": True} | spec
    buffer = io.StringIO()
    write_feed(buffer, FeedSpec(**spec))
    path = tmp_path / name
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _translated(path: Path, customer: str, options: TranslateOptions | None = None) -> dict[str, dict[str, dict]]:
    """The translation's own objects by listing and id, with the options ingest_file uses for ``customer``."""
    options = options or TranslateOptions(key_strategy="href")
    if options.subscription is None:
        options = dataclasses.replace(options, subscription=customer)
    with translate(path, options) as translation:
        result = {}
        for listing in LISTINGS:
            objects = {}
            for obj in translation.listing(listing):
                assert obj[ID_FIELDS[listing]] not in objects, "the translation repeats an id"
                objects[obj[ID_FIELDS[listing]]] = obj
            result[listing] = objects
        return result


def _stored(sessions, customers=("c1",)) -> dict[str, dict[str, dict]]:
    with sessions() as session:
        result = {listing: {} for listing in LISTINGS}
        for obj in load_objects(session, customers):
            listing = next(k for k, field in ID_FIELDS.items() if next(iter(obj)) == field)
            result[listing][obj[ID_FIELDS[listing]]] = obj
        query = select(UsageSegmentRow).where(UsageSegmentRow.customer_id.in_(customers))
        for row in session.scalars(query):
            obj = segment_object(row)
            result["usage_segments"][obj["cds_usagesegment_id"]] = obj
        return result


def _row_counts(sessions) -> tuple[int, int]:
    with sessions() as session:
        return (session.scalar(select(func.count()).select_from(DataObject)),
                session.scalar(select(func.count()).select_from(UsageSegmentRow)))


def _ingest(sessions, path, customer="c1", now=T1, **kwargs):
    with sessions() as session, session.begin():
        return ingest_file(session, path, customer_id=customer, now=now, **kwargs)


def _exact(stored, translated, where="") -> int:
    """Asserts equality with equal types and equal Decimal digits; returns how many Decimals were compared."""
    if isinstance(translated, tuple):
        translated = list(translated)
    if isinstance(translated, Decimal) and type(stored) is int:  # an integral Decimal is written as an integer
        assert str(stored) == str(translated), f"{where}: {stored} vs {translated}"
        return 1
    assert type(stored) is type(translated), f"{where}: {stored!r} vs {translated!r}"
    if isinstance(translated, dict):
        assert list(stored) == list(translated) or set(stored) == set(translated), where
        return sum(_exact(stored[k], v, f"{where}.{k}") for k, v in translated.items())
    if isinstance(translated, list):
        assert len(stored) == len(translated), where
        return sum(_exact(s, t, f"{where}[{i}]") for i, (s, t) in enumerate(zip(stored, translated, strict=True)))
    if isinstance(translated, Decimal):
        assert str(stored) == str(translated), f"{where}: {stored} vs {translated}"
        return 1
    assert stored == translated, where
    return 0


def _check_same(stored, translated) -> int:
    decimals = 0
    for listing in LISTINGS:
        assert set(stored[listing]) == set(translated[listing]), listing
        for object_id, obj in translated[listing].items():
            loaded = stored[listing][object_id]
            assert list(loaded)[:4] == [ID_FIELDS[listing], *TIMESTAMPS]
            loaded, obj = ({k: v for k, v in o.items() if k not in TIMESTAMPS} for o in (loaded, obj))
            decimals += _exact(loaded, obj, f"{listing}/{object_id}")
            assert _CANONICAL.encode(loaded) == _CANONICAL.encode(obj)  # served JSON: the same bytes
    return decimals


def _stamps(stored, listing=None) -> set[tuple[str, str, str]]:
    listings = [listing] if listing else LISTINGS
    return {tuple(obj[t] for t in TIMESTAMPS) for name in listings for obj in stored[name].values()}


_CANONICAL = msgspec.json.Encoder(decimal_format="number", order="sorted")
Z1, Z2 = "2026-02-01T12:00:00Z", "2026-02-02T08:30:00Z"


def test_generated_feed_round_trips_and_reingest_only_confirms(sessions, tmp_path, monkeypatch):
    monkeypatch.setattr(bridge.ingest, "BATCH_SIZE", 5)  # several batches and a partial one
    path = _feed(tmp_path)
    translated = _translated(path, "c1")
    assert len(translated["usage_segments"]) > 5
    report = _ingest(sessions, path)
    assert report.source == "feed.xml" and report.readings > 0
    for listing in LISTINGS:
        assert report.created[listing] == len(translated[listing]), listing
        assert report.modified[listing] == report.confirmed[listing] == 0
    stored = _stored(sessions)
    assert _check_same(stored, translated) > 1000  # every cost and usage value, digit for digit
    assert _stamps(stored) == {(Z1, Z1, Z1)}
    counts = _row_counts(sessions)
    assert counts == (sum(len(translated[k]) for k in LISTINGS if k != "usage_segments"),
                      len(translated["usage_segments"]))

    again = _ingest(sessions, path, now=T2)
    assert sum(again.created.values()) == sum(again.modified.values()) == 0
    assert again.confirmed == report.created
    assert _row_counts(sessions) == counts
    stored = _stored(sessions)
    _check_same(stored, translated)
    assert _stamps(stored) == {(Z1, Z1, Z2)}  # created and modified kept, synced advanced


def test_one_changed_reading_modifies_exactly_its_segment(sessions, tmp_path):
    path = _feed(tmp_path)
    text = path.read_text()
    second_day = text.index("<espi:IntervalReading>", text.index("IntervalBlock/2025-01-02"))
    match = re.compile(r"<espi:value>(\d+)</espi:value>").search(text, second_day)
    changed = tmp_path / "changed.xml"
    changed.write_text(text[:match.start(1)] + str(int(match.group(1)) + 7) + text[match.end(1):])
    before, after = _translated(path, "c1"), _translated(changed, "c1")
    differing = [i for i, obj in after["usage_segments"].items()
                 if bridge.ingest._body(obj) != bridge.ingest._body(before["usage_segments"][i])]
    assert len(differing) == 1

    _ingest(sessions, path)
    report = _ingest(sessions, changed, now=T2)
    assert report.modified == dict.fromkeys(LISTINGS, 0) | {"usage_segments": 1}
    assert sum(report.created.values()) == 0
    assert sum(report.confirmed.values()) == sum(len(v) for v in after.values()) - 1
    stored = _stored(sessions)
    _check_same(stored, after)
    modified = [i for i, obj in stored["usage_segments"].items() if obj["cds_modified"] == Z2]
    assert modified == differing
    assert stored["usage_segments"][differing[0]]["cds_created"] == Z1
    assert _stamps(stored) == {(Z1, Z1, Z2), (Z1, Z2, Z2)}
    with sessions() as session:
        row = session.get(UsageSegmentRow, differing[0])
        assert row.source == "changed.xml" and row.modified == T2 and row.created == T1


@pytest.mark.parametrize("name", SAMPLES)
def test_shared_samples(sessions, sample, name):
    path = sample(name)
    translated = _translated(path, "c1")
    report = _ingest(sessions, path)
    assert report.created == {k: len(v) for k, v in translated.items()}
    stored = _stored(sessions)
    _check_same(stored, translated)
    again = _ingest(sessions, path, now=T2)
    assert again.confirmed == report.created and sum(again.created.values()) == sum(again.modified.values()) == 0
    assert _stamps(_stored(sessions)) <= {(Z1, Z1, Z2)}


def test_filter_and_sort_columns(sessions, sample):
    retail = sample("hydroone_Retail_Customer_redacted.xml")
    coastal = sample("gbobjects_Coastal_Multi_Family_RetailCustomer_5.xml")
    _ingest(sessions, retail)
    _ingest(sessions, coastal, customer="c2")
    translated = _translated(coastal, "c2")
    with sessions() as session:
        account = session.scalars(select(DataObject).where(DataObject.kind == "accounts",
                                                           DataObject.customer_id == "c1")).one()
        assert account.account_number == "000000000000" and account.contract_number is None
        contract = session.scalars(select(DataObject).where(DataObject.kind == "service_contracts",
                                                            DataObject.customer_id == "c1")).one()
        assert (contract.account_number, contract.contract_number) == ("000000000000", "0000000000")
        meter = session.scalars(select(DataObject).where(DataObject.kind == "meter_devices",
                                                         DataObject.customer_id == "c1")).one()
        assert meter.account_number is None  # no service point ties this meter to a contract in this file
        sections = session.scalars(select(DataObject).where(DataObject.kind == "bill_sections")).all()
        assert sorted(s.sort_date for s in sections) == sorted(s["start_date"] for s in
                                                               translated["bill_sections"].values())
        assert all(s.account_number is None for s in sections)  # synthetic account: no number (D8 "")
        segment = session.scalars(select(UsageSegmentRow).order_by(UsageSegmentRow.segment_start)).first()
        expected = translated["usage_segments"][segment.segment_id]
        assert segment.segment_start.tzinfo is UTC and segment.segment_end.tzinfo is UTC
        assert segment.segment_start.strftime("%Y-%m-%dT%H:%M:%SZ") == expected["segment_start"]
        assert segment.segment_end.strftime("%Y-%m-%dT%H:%M:%SZ") == expected["segment_end"]
        assert [o["cds_account_id"] for o in load_objects(session, ["c1"], "accounts")] == [account.object_id]
        assert load_objects(session, ["nobody"]) == [] and load_objects(session, []) == []
        assert {o["cds_billsection_id"] for o in load_objects(session, ["c1", "c2"], "bill_sections")} == \
            set(translated["bill_sections"])


class _StubTranslation:
    """Hand-made objects that link a segment, a meter and a statement to a numbered account and contract."""

    reading_count = 2

    def __init__(self):
        stamp = {t: "2020-01-01T00:00:00Z" for t in TIMESTAMPS}
        self.objects = {
            "accounts": [{"cds_account_id": "a1", **stamp, "account_number": "ACC-1"}],
            "service_contracts": [{"cds_servicecontract_id": "k1", **stamp, "cds_account_id": "a1",
                                   "contract_number": "CON-1"}],
            "service_points": [{"cds_servicepoint_id": "p1", **stamp, "current_servicecontracts": ["k1"]}],
            "meter_devices": [{"cds_meterdevice_id": "m1", **stamp, "current_servicepoints": ["p1"]}],
            "bill_statements": [{"cds_billstatement_id": "s1", **stamp, "cds_account_id": "a1", "account_number": "",
                                 "statement_date": "2025-02-03", "amount_due": Decimal("12.30")}],
            "bill_sections": [],
        }

    def listing(self, name):
        return self.usage_segments() if name == "usage_segments" else self.objects[name]

    def reading_account(self):
        return None  # hand-made objects: no readings to account for

    def usage_segments(self):
        yield {"cds_usagesegment_id": "u1", "cds_created": "x", "cds_modified": "x", "cds_synced": "x",
               "related_accounts": ["a1"], "related_servicecontracts": ["k1"],
               "segment_start": "2025-01-01T05:00:00Z", "segment_end": "2025-01-02T05:00:00+00:00", "interval": 86400,
               "formats": [{"id": "eu", "type": "electric_usage"}],
               "values": [[{"eu": Decimal("1.000")}], [{"eu": Decimal("1E-8")}], [{"eu": Decimal("5E+3")}]]}


def test_numbers_come_from_related_accounts_and_contracts(sessions):
    with sessions() as session, session.begin():
        report = ingest_translation(session, _StubTranslation(), customer_id="c1", source="stub", now=T1)
    assert report.created == dict.fromkeys(LISTINGS, 1) | {"bill_sections": 0} and report.readings == 2
    with sessions() as session:
        numbers = {(row.kind, row.object_id): (row.account_number, row.contract_number, row.sort_date)
                   for row in session.scalars(select(DataObject))}
        assert numbers == {("accounts", "a1"): ("ACC-1", None, None),
                           ("service_contracts", "k1"): ("ACC-1", "CON-1", None),
                           ("service_points", "p1"): ("ACC-1", "CON-1", None),
                           ("meter_devices", "m1"): ("ACC-1", "CON-1", None),
                           ("bill_statements", "s1"): ("ACC-1", None, "2025-02-03")}
        segment = session.get(UsageSegmentRow, "u1")
        assert (segment.account_number, segment.contract_number) == ("ACC-1", "CON-1")
        assert (segment.segment_start, segment.segment_end) == (datetime(2025, 1, 1, 5, tzinfo=UTC),
                                                                datetime(2025, 1, 2, 5, tzinfo=UTC))
        values = segment_object(segment)["values"]
        assert [str(v[0]["eu"]) for v in values] == ["1.000", "1E-8", "5E+3"]
        assert segment.body.startswith('{"cds_usagesegment_id":"u1","formats":')  # canonical: sorted keys
        statement = load_objects(session, ["c1"], "bill_statements")[0]
        assert str(statement["amount_due"]) == "12.30" and statement["account_number"] == ""
        assert statement["cds_created"] == Z1
    renamed = _StubTranslation()
    renamed.objects["accounts"][0]["account_number"] = "ACC-2"
    with sessions() as session, session.begin():
        report = ingest_translation(session, renamed, customer_id="c1", source="stub", now=T2)
    assert report.modified == dict.fromkeys(LISTINGS, 0) | {"accounts": 1}
    with sessions() as session:  # the other bodies are unchanged (only synced moves), their number columns follow
        assert {row.account_number for row in session.scalars(select(DataObject))} == {"ACC-2"}
        segment = session.get(UsageSegmentRow, "u1")
        assert (segment.account_number, segment.modified, segment.synced) == ("ACC-2", T1, T2)


def test_customer_collision_raises_and_stores_nothing(sessions, tmp_path):
    # Unscoped href keys (subscription ""): two files of the same UsagePoints share ids whoever ingests them.
    unscoped = TranslateOptions(key_strategy="href", subscription="")
    one = _feed(tmp_path, "one.xml", usage_points=1)
    two = _feed(tmp_path, "two.xml", usage_points=2)
    first = _ingest(sessions, one, options=unscoped)
    counts = _row_counts(sessions)
    with pytest.raises(IngestError) as caught:
        _ingest(sessions, two, customer="c2", now=T2, options=unscoped)
    message = str(caught.value)
    assert "'c1'" in message and "'c2'" in message and "two.xml" in message
    assert re.search(r"(service_contracts|service_points|meter_devices|usage_segments) object [0-9a-f]{32}", message)
    assert _row_counts(sessions) == counts  # the new synthetic account flushed before the collision is gone too
    stored = _stored(sessions, ("c1", "c2"))
    assert _stamps(stored) == {(Z1, Z1, Z1)}
    assert {k: len(v) for k, v in stored.items()} == first.created
    # the same file for another customer with the gateway's scoping: separate objects
    assert sum(_ingest(sessions, one, customer="c2").created.values()) == sum(first.created.values())


def test_business_keyed_objects_collide_across_customers(sessions, sample):
    retail = sample("hydroone_Retail_Customer_redacted.xml")
    _ingest(sessions, retail)
    with pytest.raises(IngestError, match="already stored for customer 'c1', not 'c2'"):
        _ingest(sessions, retail, customer="c2")
    assert _stored(sessions, ("c2",)) == {k: {} for k in LISTINGS}


def test_gateway_options_are_pinned(tmp_path, sessions):
    config = make_config(tmp_path)
    options = translate_options_for(config)
    assert options.id_secret == config.derived_key("ids").hex()
    assert options.key_strategy == "href" and options.timezone is None and options.subscription is None
    path = _feed(tmp_path, usage_points=1, days=1, net_metering=False)
    report = _ingest(sessions, path, options=options)
    assert _ingest(sessions, path, options=translate_options_for(config), now=T2).confirmed == report.created
    stored = _stored(sessions)
    translated = _translated(path, "c1", options)
    _check_same(stored, translated)
    default_ids = set(_translated(path, "c1")["usage_segments"])
    assert default_ids.isdisjoint(stored["usage_segments"])  # the deployment's secret names the objects
    segment = next(iter(stored["usage_segments"].values()))
    assert segment["segment_start"] == "2025-01-01T05:00:00Z"  # the file's LocalTimeParameters (UTC-5) won


def test_bad_file_raises_with_its_line(sessions, tmp_path):
    bad = tmp_path / "bad.xml"
    bad.write_text('<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n<entry><oops></entry>\n')
    with pytest.raises(XmlSyntaxError) as caught:
        _ingest(sessions, bad)
    assert str(caught.value).startswith(f"{bad}:3:")
    assert _row_counts(sessions) == (0, 0)
    with sessions() as session, pytest.raises(ValueError, match="naive"):
        ingest_file(session, _feed(tmp_path), customer_id="c1", now=datetime(2026, 1, 1))


# ------------------------------------------------------------------------------------------------------ the CLI


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "greenbridge", "ingest", *args], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=300)


def test_cli_end_to_end(tmp_path):
    database = tmp_path / "store" / "greenbridge.db"
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENBRIDGE_")}
    env |= {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_DATABASE_URL": f"sqlite:///{database}",
            "GREENBRIDGE_SECRET_KEY": "cli-test-secret"}
    feed = _feed(tmp_path)
    translated = _translated(feed, "alice")
    segments = len(translated["usage_segments"])

    first = _cli(str(feed), "--customer", "alice", env=env)
    assert first.returncode == 0, first.stderr
    assert f"{feed}: " in first.stderr and f"usage_segments {segments}/0/0" in first.stderr
    again = _cli(str(feed), "--customer", "alice", "--source", "nightly", env=env)
    assert again.returncode == 0 and f"usage_segments 0/0/{segments}" in again.stderr
    assert "0 created, 0 modified" in again.stderr

    bad = tmp_path / "broken.xml"
    bad.write_text('<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n<entry><oops></entry>\n')
    other = _feed(tmp_path, "other.xml", usage_points=1, days=2, seed=7)
    mixed = _cli(str(bad), str(other), str(tmp_path / "missing.xml"), "--customer", "bob", env=env)
    assert mixed.returncode == 1
    assert f"{bad}:3: not well-formed XML" in mixed.stderr and "nothing stored" in mixed.stderr
    assert f"{tmp_path / 'missing.xml'}: no such file" in mixed.stderr
    assert f"{other}: " in mixed.stderr  # the good file in between is still stored

    engine = make_engine(f"sqlite:///{database}")
    sessions = make_sessionmaker(engine)
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(UsageSegmentRow)
                              .where(UsageSegmentRow.customer_id == "alice")) == segments
        assert set(session.scalars(select(UsageSegmentRow.source).where(UsageSegmentRow.customer_id == "alice"))) \
            == {"feed.xml"}  # confirmed objects keep the source of their body
        assert set(session.scalars(select(UsageSegmentRow.source).where(UsageSegmentRow.customer_id == "bob"))) \
            == {"other.xml"}
    engine.dispose()

    missing_config = _cli(str(feed), "--customer", "alice", "--config", str(tmp_path / "nope.toml"), env=env)
    assert missing_config.returncode == 2 and "configuration file not found" in missing_config.stderr
