"""The per-subscription fan-out of a bulk feed (espi.bulk): one standalone feed per subscription that translates
to exactly that customer's data; shared resources where they are linked; what belongs to nobody reported."""

from __future__ import annotations

import io
import tracemalloc
from collections import defaultdict
from decimal import Decimal
from pathlib import Path

import pytest

from bridge.from_espi import TranslateOptions, translate
from espi.bulk import (
    BulkSplitError,
    retail_customer_of,
    split_bulk,
    subscription_id_of,
    subscription_of_href,
    usage_point_ref,
)
from espi.errors import EspiError, NotEspiError, XmlSecurityError, XmlSyntaxError
from espi.feed import read_feed
from espi.generate import FeedSpec, GeneratedTotals, generate_feed, write_feed
from espi.namespaces import ATOM, ESPI
from espi.validation import validate
from greenbridge.cli import main
from sandbox.app import build_sandbox, subscription_entries
from sandbox.config import DEFAULT_SCOPES, load_sandbox_config
from sandbox.resources import Query, feed_document

R = "https://dc.example/DataCustodian/espi/1_1/resource"
BULK_SCOPE = DEFAULT_SCOPES[3]  # ...;BR=1
HEAD = (f'<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="{ATOM}" xmlns:espi="{ESPI}">\n'
        "<id>urn:uuid:8f7a0e36-3b0d-4a4e-9c1a-5f8e9b3c2d10</id><title>Green Button Bulk Feed</title>"
        f'<updated>2026-01-01T00:00:00Z</updated><link rel="self" href="{R}/Batch/Bulk/1" type="espi-feed/Bulk"/>\n')


def spec_of(number: int, **overrides) -> FeedSpec:
    """Customer ``number``'s feed: three profiles in turn (net metering; electric, gas and water; hourly with
    gaps), subscription ``100 + number``, one base URL for everyone."""
    profile = (number - 1) % 3
    settings = {"days": 33, "seed": number, "base_url": R, "subscription": str(100 + number)}
    if profile == 0:
        settings.update(net_metering=True)
    elif profile == 1:
        settings.update(usage_points=3, commodity="mixed")
    else:
        settings.update(interval=3600, quality_gaps=True)
    settings.update(overrides)
    return FeedSpec(**settings)


def bulk_chunks(number: int, spec: FeedSpec, totals: GeneratedTotals | None = None) -> tuple[list[str], str]:
    """A customer's entries for a bulk feed, and its LocalTimeParameters entry (left out: the caller shares one).

    The generator names its ReadingTypes ``{base}/ReadingType/1…``, the same for every customer; a real bulk has
    one id per ReadingType, so each customer's get their own."""
    entries, ltp = [], ""
    chunks = generate_feed(spec) if totals is None else _generate(spec, totals)
    for chunk in chunks:
        if not chunk.startswith("<entry>"):
            continue  # the feed's head and tail
        chunk = chunk.replace(f"{R}/ReadingType/", f"{R}/ReadingType/c{number}-")
        if "<espi:LocalTimeParameters>" in chunk:
            ltp = chunk
        else:
            entries.append(chunk)
    return entries, ltp


def _generate(spec: FeedSpec, totals: GeneratedTotals):
    class Sink:
        def __init__(self):
            self.chunks = []

        def write(self, text):
            self.chunks.append(text)

    sink = Sink()
    result = write_feed(sink, spec)
    totals.readings, totals.series = result.readings, result.series
    return sink.chunks


def source_feed(spec: FeedSpec) -> bytes:
    return "".join(generate_feed(spec)).encode()


def translated_totals(source) -> dict:
    """What a translation holds, as exact numbers: readings, service points, bill sections, and per value format
    the count and Decimal sum of each number."""
    sums: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    counts: dict[tuple[str, str], int] = defaultdict(int)
    with translate(source, TranslateOptions()) as result:
        for segment in result.usage_segments():
            for position, fmt in enumerate(segment["formats"]):
                for values in segment["values"]:
                    for key, number in (values[position] or {}).items():
                        if isinstance(number, int | Decimal):
                            sums[fmt["id"], key] += Decimal(number)
                            counts[fmt["id"], key] += 1
        return {"readings": result.reading_count, "placed": result.segment_stats["readings"],
                "service_points": len(result.service_points), "bill_sections": len(result.bill_sections),
                "sums": dict(sums), "counts": dict(counts)}


def self_hrefs(path: Path) -> list[str]:
    return [e.self_href for e in read_feed(path).entries]


# ---------------------------------------------------------------------------------------------------------------
# URIs
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("uri", "expected"), [
    (f"{R}/Batch/Subscription/503888", "503888"),
    (f"{R}/Batch/Subscription/503888?published-min=2025-01-01T00:00:00Z&published-max=2025-02-01T00:00:00Z",
     "503888"),
    (f"  {R}/Batch/Subscription/7/  ", "7"),
    (f"{R}/Batch/Subscription/7/UsagePoint/2", "7"),
    (f"{R}/Batch/Bulk/1", None),
    (f"{R}/Subscription/7/UsagePoint", None),  # resource level, not a Batch URI
    (f"{R}/Batch/Subscription", None),
    ("", None),
])
def test_subscription_id_of_batch_uris(uri, expected):
    assert subscription_id_of(uri) == expected


@pytest.mark.parametrize(("href", "expected"), [
    (f"{R}/Subscription/5/UsagePoint/1/MeterReading/1", "5"),
    (f"{R}/Batch/Subscription/5", "5"),
    ("Subscription/9/UsagePoint", "9"),
    (f"{R}/ReadingType/1", None),
    (f"{R}/Subscription", None),
    (f"{R}/Subscription1/UsagePoint/1", None),  # the 2016 sandbox typo is not a subscription
    (f"{R}/UsagePoint/1?x=/Subscription/5", None),
])
def test_subscription_of_href(href, expected):
    assert subscription_of_href(href) == expected


# ---------------------------------------------------------------------------------------------------------------
# A bulk feed built by hand from three customers' feeds
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("max_open", [64, 1], ids=["pooled", "one-open-file"])
def test_hand_built_bulk_splits_into_one_translatable_feed_per_subscription(tmp_path, max_open):
    specs = {number: spec_of(number) for number in (1, 2, 3)}
    body, ltp = [], ""
    for number, spec in specs.items():
        entries, ltp = bulk_chunks(number, spec)
        body += entries
    # One LocalTimeParameters for everyone, after the entries that link to it; and a ReadingType nobody uses.
    spare = ltp.replace(f"{R}/LocalTimeParameters/1", f"{R}/LocalTimeParameters/99")
    bulk = tmp_path / "bulk.xml"
    bulk.write_text(HEAD + "".join(body) + ltp + spare + "</feed>\n", encoding="utf-8")

    split = split_bulk(bulk, tmp_path / "parts", max_open=max_open)

    assert list(split.parts) == ["101", "102", "103"]
    assert split.self_href == f"{R}/Batch/Bulk/1"
    assert split.unassigned == [] and split.unassigned_readings == 0
    reading_types = {1: 2, 2: 3, 3: 1}  # forward and reverse; electric, gas, water; electric
    assert split.shared_entries == sum(reading_types.values()) + 2 and split.unlinked_shared_entries == 1
    assert sum(split.reading_counts.values()) == split.readings == read_feed(bulk).reading_count
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        "subscription-101.xml", "subscription-102.xml", "subscription-103.xml"]  # no temporary files left
    for number, spec in specs.items():
        part = split.part_info[str(100 + number)]
        assert part.path == split.parts[part.subscription] and part.path.is_file()
        assert part.self_href == f"{R}/Batch/Bulk/1/Subscription/{100 + number}"
        report = validate(part.path, strict=True)
        assert report.valid, [str(issue) for issue in report.errors[:5]]
        source = source_feed(spec)
        expected = translated_totals(source)
        assert expected["readings"] > 0
        assert translated_totals(part.path) == expected  # counts and Decimal sums, exactly
        assert part.readings == expected["readings"]
        # shared entries where they are linked: this customer's ReadingTypes and the common LocalTimeParameters,
        # plus the ReadingType nobody links to (copied everywhere); no other customer's ReadingTypes
        hrefs = self_hrefs(part.path)
        own = [h for h in hrefs if "/ReadingType/" in h]
        assert sorted(own) == sorted(f"{R}/ReadingType/c{number}-{k}" for k in range(1, reading_types[number] + 1))
        assert hrefs.count(f"{R}/LocalTimeParameters/1") == 1 and f"{R}/LocalTimeParameters/99" in hrefs
        assert part.shared_entries == reading_types[number] + 2
        assert part.entries == len(read_feed(source).entries) + 1  # its own entries, the shared ones, the spare
        feed = read_feed(part.path)
        assert feed.header.self_href == part.self_href
        assert all(node.local_time is not None for node in feed.graph.usage_points)
        assert not [i for i in feed.diagnostics.issues if "only candidate" in i.message or "order" in i.message]


def test_a_part_translates_with_greenbridge_translate(tmp_path):
    entries, ltp = bulk_chunks(1, spec_of(1, days=3))
    bulk = tmp_path / "bulk.xml"
    bulk.write_text(HEAD + ltp + "".join(entries) + "</feed>\n", encoding="utf-8")
    split = split_bulk(bulk, tmp_path / "parts")
    out = tmp_path / "part.json"
    assert main(["translate", str(split.parts["101"]), "-q", "-o", str(out)]) == 0
    assert out.stat().st_size > 0


def test_entries_without_a_subscription_go_where_they_are_linked_or_are_reported(tmp_path):
    body = []
    for number in (1, 3):
        entries, ltp = bulk_chunks(number, spec_of(number, days=2, summaries=False))
        body += entries
    block = next(e for e in body if "/Subscription/101/UsagePoint/1/MeterReading/1/IntervalBlock/" in e)
    readings_per_block = block.count("<espi:IntervalReading>")
    # an IntervalBlock under no subscription that names its MeterReading by a reverse link: it is 101's
    linked = (block.replace(f'href="{R}/Subscription/101/UsagePoint/1/MeterReading/1/IntervalBlock',
                            f'href="{R}/loose/IntervalBlock')
              .replace('<content>', f'<link rel="related" href="{R}/Subscription/101/UsagePoint/1/MeterReading/1" '
                                    'type="espi-entry/MeterReading"/><content>', 1))
    # readings nobody links to: reported, never copied to every customer
    orphan = block.replace(f"{R}/Subscription/101/", f"{R}/Elsewhere/")
    bulk = tmp_path / "bulk.xml"
    text = HEAD + ltp + "".join(body) + linked + orphan + "</feed>\n"
    bulk.write_text(text, encoding="utf-8")
    orphan_line = text[:text.index(orphan)].count("\n") + 1

    split = split_bulk(bulk, tmp_path / "parts")

    assert list(split.parts) == ["101", "103"]
    (unassigned,) = split.unassigned
    assert unassigned.kinds == ("IntervalBlock",) and unassigned.readings == readings_per_block
    assert unassigned.line == orphan_line and unassigned.self_href.startswith(f"{R}/Elsewhere/")
    assert "no subscription links to it" in unassigned.reason
    assert split.readings == sum(split.reading_counts.values()) + split.unassigned_readings
    assert f"{R}/loose/IntervalBlock/2025-01-01" in self_hrefs(split.parts["101"])
    assert not any(h.startswith(f"{R}/Elsewhere/") for p in split.parts.values() for h in self_hrefs(p))
    two_days = translated_totals(source_feed(spec_of(1, days=2, summaries=False)))["readings"]
    assert split.reading_counts["101"] == two_days + readings_per_block


# ---------------------------------------------------------------------------------------------------------------
# Hrefs below the customer, naming no subscription: parts by owner (issue 12 item 5)
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("href", "expected"), [
    (f"{R}/RetailCustomer/7/UsagePoint/2/MeterReading/1/IntervalBlock/3", ("7", "2")),
    (f"{R}/RetailCustomer/7/UsagePoint/2", ("7", "2")),
    (f"{R}/Subscription/5/UsagePoint/2/MeterReading", (None, "2")),
    (f"{R}/UsagePoint/9?x=1", (None, "9")),
    (f"{R}/RetailCustomer/7/UsagePoint", None),
    (f"{R}/RetailCustomer/7/ReadingType/1", None),
    (f"{R}/ReadingType/1", None),
    (None, None),
])
def test_usage_point_ref(href, expected):
    assert usage_point_ref(href) == expected


def test_retail_customer_of():
    assert retail_customer_of(f"{R}/Batch/RetailCustomer/503888") == "503888"
    assert retail_customer_of(f"{R}/RetailCustomer/7/UsagePoint/2") == "7"
    assert retail_customer_of(f"{R}/Batch/Subscription/5") is None


def retail_customer_chunks(number: int, spec: FeedSpec) -> list[str]:
    """Customer ``number``'s entries with hrefs below ``{R}/RetailCustomer/{number}/`` and no subscription (the
    generator's base URL is the customer's; its ``Subscription/{s}/`` segment is taken out)."""
    return [chunk.replace(f"/RetailCustomer/{number}/Subscription/{spec.subscription}/", f"/RetailCustomer/{number}/")
            for chunk in generate_feed(spec) if chunk.startswith("<entry>")]


def _electric(path: Path) -> tuple[int, Decimal]:
    totals = translated_totals(path)
    keys = [k for k in totals["counts"] if k[0].startswith("electric_usage_forward") and "billing" not in k[0]]
    return sum(totals["counts"][k] for k in keys), sum((totals["sums"][k] for k in keys), Decimal(0))


def test_entries_below_a_customer_go_to_the_parts_their_owners_name(tmp_path):
    """Three customers, hrefs ``…/RetailCustomer/{C}/UsagePoint/{U}/…``. The caller knows: customer 1's UsagePoint
    is A1's; customer 2's UsagePoint 1 is shared by A2 and B2, its UsagePoint 2 is B2's, its UsagePoint 3 nobody's;
    customer 3 is unknown. Each owner part holds exactly its UsagePoints (an entry of a shared one is in both
    parts), shared ReadingTypes travel where they are linked, and the rest is reported, readings counted."""
    specs = {number: spec_of(number, days=3, base_url=f"{R}/RetailCustomer/{number}", subscription="1")
             for number in (1, 2, 3)}
    totals = {number: write_feed(io.StringIO(), spec) for number, spec in specs.items()}
    body = [chunk for number, spec in specs.items() for chunk in retail_customer_chunks(number, spec)]
    bulk = tmp_path / "bulk.xml"
    bulk.write_text(HEAD + "".join(body) + "</feed>\n", encoding="utf-8")
    holders = {("1", "1"): ("A1",), ("2", "1"): ("A2", "B2"), ("2", "2"): ("B2",)}
    asked: list[str] = []

    def owners_of(href: str) -> tuple[str, ...]:
        asked.append(href)
        ref = usage_point_ref(href)
        return holders.get(ref, ()) if ref is not None else ()

    split = split_bulk(bulk, tmp_path / "parts", owners_of=owners_of)

    assert split.parts == {} and sorted(split.owner_parts) == ["A1", "A2", "B2"]
    assert len(asked) <= 2 * split.entries  # once per entry, its up href when its self href gave nothing
    parts = split.owner_parts
    assert all(part.owner == name and part.subscription is None for name, part in parts.items())
    assert translated_totals(parts["A1"].path) == \
        translated_totals(source_feed(specs[1]).replace(b"/Subscription/1/", b"/"))  # all of customer 1, exactly
    electric = totals[2].series[(0, "electric_forward")]
    gas = totals[2].series[(1, "gas")]
    for name, points in (("A2", 1), ("B2", 2)):
        part = parts[name]
        translated = translated_totals(part.path)
        assert translated["service_points"] == points
        assert _electric(part.path) == (electric[0], Decimal(electric[1]) / 1000)
        assert translated["placed"] == electric[0] + (gas[0] if points == 2 else 0)
        assert not any("/RetailCustomer/1/" in h or "/RetailCustomer/3/" in h for h in self_hrefs(part.path)
                       if "/ReadingType/" not in h and "/LocalTimeParameters/" not in h)
    # not placed: customer 2's water UsagePoint and all of customer 3's usage, every reading counted
    water, third = totals[2].series[(2, "water")], totals[3].readings
    assert split.unassigned_readings == water[0] + third
    assert {usage_point_ref(e.self_href)[:1] for e in split.unassigned} == {("2",), ("3",)}
    assert all("no known owner" in e.reason for e in split.unassigned)
    assert split.readings == totals[1].readings + totals[2].readings + totals[3].readings


def test_an_empty_bulk_feed_has_no_parts(tmp_path):
    bulk = tmp_path / "bulk.xml"
    bulk.write_text(HEAD + "</feed>\n", encoding="utf-8")
    split = split_bulk(bulk, tmp_path / "parts")
    assert split.parts == {} and split.entries == 0 and list((tmp_path / "parts").iterdir()) == []


@pytest.mark.samples
def test_harness_bulk_sample(tmp_path, sample):
    """The GBA harness's Batch/Bulk answer: resource-level hrefs, ``ns3:`` Atom entries under a default-namespace
    feed, shared ReadingType and LocalTimeParameters."""
    source = sample("cmdtest_soapui_BatchBulk.xml")
    split = split_bulk(source, tmp_path / "parts")
    assert list(split.parts) == ["5"] and split.unassigned == []
    assert split.shared_entries == 2 and split.unlinked_shared_entries == 0
    part = split.part_info["5"]
    assert part.entries == split.entries and part.readings == split.readings > 0
    assert part.self_href == split.self_href  # it is one subscription's Batch answer
    assert translated_totals(part.path) == translated_totals(source)


# ---------------------------------------------------------------------------------------------------------------
# The sandbox's bulk feed
# ---------------------------------------------------------------------------------------------------------------
def test_sandbox_bulk_feed_splits_back_into_its_subscriptions(tmp_path):
    config = load_sandbox_config(env={}, base_url="https://dc.example/DataCustodian", generate_customers=3,
                                 generate_days=10)
    sandbox = build_sandbox(config)
    store = sandbox.store
    client = config.third_parties[0].client_id
    records = [store.create_subscription(client, c, BULK_SCOPE, tuple(c.usage.usage_point_ids))
               for c in store.customers]
    # the same customer granted twice: identical source hrefs, which the bulk must keep apart
    records.append(store.create_subscription(client, store.customers[0], BULK_SCOPE,
                                             tuple(store.customers[0].usage.usage_point_ids)))
    store.create_subscription(client, store.customers[1], DEFAULT_SCOPES[0],
                              tuple(store.customers[1].usage.usage_point_ids))  # not in bulk set 1
    document = sandbox.bulk_document(client, "1", Query())
    report = validate(document, strict=True, name="bulk")
    assert report.valid, [str(issue) for issue in report.errors[:5]]
    bulk = tmp_path / "bulk.xml"
    bulk.write_bytes(document)
    resource = sandbox.resource

    split = split_bulk(bulk, tmp_path / "parts")

    assert list(split.parts) == [str(r.id) for r in records]
    assert split.unassigned == [] and split.unlinked_shared_entries == 0
    assert sum(split.reading_counts.values()) == split.readings == read_feed(bulk).reading_count
    for record in records:
        part = split.part_info[str(record.id)]
        assert subscription_id_of(f"{resource}/Batch/Subscription/{record.id}") == part.subscription
        # what Batch/Subscription/{id} answers is unchanged, and the part holds the same data
        answer = feed_document(f"{resource}/Batch/Subscription/{record.id}", "Subscription",
                               "Green Button Subscription Feed", subscription_entries(record, None, Query()))
        assert all(e.self_href.startswith(f"{resource}/RetailCustomer/{record.customer.number}/Subscription/1/")
                   for e in read_feed(answer).entries if e.first("UsagePoint"))
        assert translated_totals(part.path) == translated_totals(answer)
        feed = read_feed(part.path)
        expected = read_feed(answer)
        assert sorted(e.id for e in feed.entries) == sorted(e.id for e in expected.entries)  # ids kept
        for entry in feed.entries:
            if entry.first("ReadingType", "LocalTimeParameters"):
                assert entry.self_href.startswith(f"{resource}/Authorization/{record.id}/")
            else:
                assert f"/Subscription/{record.id}/" in entry.self_href
        points = [n for n in feed.graph.usage_points if not n.implicit]
        assert len(points) == len(record.usage_points)
        assert all(n.local_time is not None and n.meter_readings for n in points)
        assert all(m.reading_type is not None for m in feed.graph.meter_readings)
        assert not [i for i in feed.diagnostics.issues if "by " in i.message or "only candidate" in i.message]
    # the two grants of customer 1: their own copies of the shared resources, nothing of each other's
    first, again = (self_hrefs(split.parts[str(r.id)]) for r in (records[0], records[-1]))
    assert len(first) == len(again) and not set(first) & set(again)


# ---------------------------------------------------------------------------------------------------------------
# Bad input
# ---------------------------------------------------------------------------------------------------------------
def test_malformed_bulk_names_file_and_line_and_leaves_nothing(tmp_path):
    entries, ltp = bulk_chunks(1, spec_of(1, days=2))
    text = HEAD + ltp + "".join(entries) + "</feed>\n"
    broken = text.replace("</espi:IntervalBlock></content>", "</espi:IntervalBlock></contents>", 1)
    line = broken[:broken.index("</contents>")].count("\n") + 1
    bulk = tmp_path / "bulk.xml"
    bulk.write_text(broken, encoding="utf-8")
    parts = tmp_path / "parts"
    with pytest.raises(XmlSyntaxError) as caught:
        split_bulk(bulk, parts)
    assert str(caught.value).startswith(f"{bulk}:{line}: not well-formed XML")
    assert caught.value.source == str(bulk) and caught.value.line == line
    assert list(parts.iterdir()) == []

    truncated = tmp_path / "truncated.xml"
    truncated.write_text(text[: len(text) // 2], encoding="utf-8")
    with pytest.raises(XmlSyntaxError) as caught:
        split_bulk(truncated, parts)
    assert caught.value.source == str(truncated) and caught.value.line
    assert list(parts.iterdir()) == []


def test_not_a_bulk_feed(tmp_path):
    entries, _ltp = bulk_chunks(1, spec_of(1, days=1))
    single = tmp_path / "entry.xml"
    single.write_text(entries[0].replace("<entry>", f'<entry xmlns="{ATOM}" xmlns:espi="{ESPI}">', 1),
                      encoding="utf-8")
    with pytest.raises(NotEspiError, match=rf"^{single}:1: not a bulk feed"):
        split_bulk(single, tmp_path / "parts")
    other = tmp_path / "other.xml"
    other.write_text("<html><body/></html>", encoding="utf-8")
    with pytest.raises(EspiError, match=rf"^{other}:1: "):
        split_bulk(other, tmp_path / "parts")
    nested = tmp_path / "nested.xml"
    # parts are being written when the second pass meets it: none is left behind
    nested.write_text(HEAD + "".join(entries[:3]) + "<wrapper>" + "".join(entries[3:]) + "</wrapper></feed>\n",
                      encoding="utf-8")
    with pytest.raises(BulkSplitError, match=rf"^{nested}:\d+: an <entry> inside another element"):
        split_bulk(nested, tmp_path / "parts")
    assert list((tmp_path / "parts").iterdir()) == []


def test_hostile_xml_is_refused(tmp_path):
    hostile = tmp_path / "hostile.xml"
    hostile.write_text('<?xml version="1.0"?>\n<!DOCTYPE feed [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>\n'
                       f'<feed xmlns="{ATOM}"><title>&b;</title></feed>\n', encoding="utf-8")
    with pytest.raises(XmlSecurityError, match="DOCTYPE"):
        split_bulk(hostile, tmp_path / "parts")
    external = tmp_path / "external.xml"
    external.write_text('<?xml version="1.0"?>\n<!DOCTYPE feed SYSTEM "file:///etc/passwd">\n'
                        f'<feed xmlns="{ATOM}"></feed>\n', encoding="utf-8")
    with pytest.raises(XmlSecurityError):
        split_bulk(external, tmp_path / "parts")
    assert list((tmp_path / "parts").iterdir()) == []


# ---------------------------------------------------------------------------------------------------------------
# Size
# ---------------------------------------------------------------------------------------------------------------
def test_big_bulk_splits_in_bounded_memory(tmp_path):
    """20 customers × 31 days of 15-minute readings (net metering: two series each): memory stays far below the
    file's size, because entries are streamed to their parts."""
    bulk = tmp_path / "bulk.xml"
    expected: dict[str, int] = {}
    with bulk.open("w", encoding="utf-8") as out:
        out.write(HEAD)
        ltp = ""
        for number in range(1, 21):
            spec = FeedSpec(days=31, net_metering=True, seed=number, base_url=R, subscription=str(100 + number))
            totals = GeneratedTotals()
            entries, ltp = bulk_chunks(number, spec, totals)
            out.write("".join(entries))
            expected[str(100 + number)] = totals.readings
        out.write(ltp + "</feed>\n")
    size = bulk.stat().st_size
    assert size > 20_000_000

    tracemalloc.start()
    try:
        split = split_bulk(bulk, tmp_path / "parts")
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert peak < size // 20, f"peak {peak} bytes for a {size}-byte file"
    assert split.reading_counts == expected
    assert split.readings == sum(expected.values()) == 20 * 31 * 96 * 2
    assert all(part.shared_entries == 3 for part in split.part_info.values())  # two ReadingTypes, one LTP
    assert sum(path.stat().st_size for path in split.parts.values()) > size


def _sequential_bulk(tmp_path: Path, days: int) -> Path:
    """Three customers' entries one subscription after the other, each with its shared entries first (and their
    common LocalTimeParameters before everything)."""
    body, ltp = [], ""
    for number in (1, 2, 3):
        entries, ltp = bulk_chunks(number, spec_of(number, days=days))
        body += entries
    bulk = tmp_path / "bulk.xml"
    bulk.write_text(HEAD + ltp + "".join(body) + "</feed>\n", encoding="utf-8")
    return bulk


def test_parts_are_handed_over_as_soon_as_complete(tmp_path):
    """A bulk written subscription by subscription (as custodians do, shared entries first): each part is complete
    and handed to ``on_part`` while later parts are still being written, so ingestion can start during the split."""
    bulk = _sequential_bulk(tmp_path, days=2)
    parts_dir = tmp_path / "parts"
    seen: list[tuple[str, list[str]]] = []

    started: list[list[str]] = []

    def on_part(part):
        assert part.path.is_file() and translated_totals(part.path)["readings"] == part.readings > 0
        seen.append((part.subscription, sorted(p.name for p in parts_dir.iterdir() if p.suffix == ".xml")))
        started.append(sorted(p.name for p in parts_dir.iterdir() if p.suffix == ".part"))

    split = split_bulk(bulk, parts_dir, on_part=on_part)
    assert [s for s, _ in seen] == ["101", "102", "103"] == list(split.parts)
    # when the first part was handed over, the later ones were not complete yet (no final file)
    assert seen[0][1] == ["subscription-101.xml"]
    assert seen[1][1] == ["subscription-101.xml", "subscription-102.xml"]
    # nor begun: each part is handed over as soon as the split reaches the next one's entries, not at the end
    assert started[:2] == [[".subscription-102.xml.part"], [".subscription-103.xml.part"]]


def test_an_error_after_a_part_was_handed_over_keeps_it_and_removes_the_rest(tmp_path):
    bulk = _sequential_bulk(tmp_path, days=1)
    handed: list[str] = []

    def on_part(part):
        handed.append(part.subscription)
        if len(handed) == 2:
            raise RuntimeError("the consumer failed")

    with pytest.raises(RuntimeError):
        split_bulk(bulk, tmp_path / "parts", on_part=on_part)
    # the two complete parts stay (handed over); the third, unfinished, leaves nothing behind
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == ["subscription-101.xml",
                                                                      "subscription-102.xml"]


# ---------------------------------------------------------------------------------------------------------------
# One pass (issue 15 item 3)
# ---------------------------------------------------------------------------------------------------------------
def test_the_split_reads_the_file_once(tmp_path):
    """The bulk comes through a FIFO, which can be read only once: every part is complete and exact all the same,
    and the shared entries that come after the entries linking to them reach their parts."""
    import os
    import threading

    specs = {number: spec_of(number, days=3) for number in (1, 2, 3)}
    body, ltp = [], ""
    for number, spec in specs.items():
        entries, ltp = bulk_chunks(number, spec)
        body += entries
    text = (HEAD + "".join(body) + ltp + "</feed>\n").encode()
    fifo = tmp_path / "bulk.fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as pipe:
            pipe.write(text)

    writer = threading.Thread(target=feed)
    writer.start()
    try:
        split = split_bulk(fifo, tmp_path / "parts")
    finally:
        writer.join(timeout=30)
    assert not writer.is_alive()
    assert list(split.parts) == ["101", "102", "103"] and split.unassigned == []
    for number, spec in specs.items():
        assert translated_totals(split.parts[str(100 + number)]) == translated_totals(source_feed(spec))
        assert f"{R}/LocalTimeParameters/1" in self_hrefs(split.parts[str(100 + number)])


def test_a_subscription_whose_entries_are_not_together_is_handed_over_again_whole(tmp_path):
    """Customer 1's last IntervalBlocks come after customer 2's entries: its part was complete as far as the split
    could tell and was handed over; what came later makes a second revision holding all of it (exact data), and
    from then on no part is handed over before the end of the file."""
    first, _ltp = bulk_chunks(1, spec_of(1, days=4))
    second, ltp = bulk_chunks(2, spec_of(2, days=2))
    third, _ltp = bulk_chunks(3, spec_of(3, days=2))
    blocks = [i for i, chunk in enumerate(first) if "<espi:IntervalBlock>" in chunk]
    cut = blocks[-2]  # the last two IntervalBlocks of its last series come late
    bulk = tmp_path / "bulk.xml"
    bulk.write_text(HEAD + ltp + "".join(first[:cut]) + "".join(second) + "".join(first[cut:]) + "".join(third)
                    + "</feed>\n", encoding="utf-8")
    handed: list[tuple[str, int, int]] = []

    def on_part(part):
        handed.append((part.subscription, part.revision, translated_totals(part.path)["readings"]))

    split = split_bulk(bulk, tmp_path / "parts", on_part=on_part)

    whole = translated_totals(source_feed(spec_of(1, days=4)))
    late = sum(chunk.count("<espi:IntervalReading>") for chunk in first[cut:])
    assert late > 0
    assert handed == [("101", 1, whole["readings"] - late), ("102", 1, handed[1][2]), ("103", 1, handed[2][2]),
                      ("101", 2, whole["readings"])]
    part = split.part_info["101"]
    assert part.revision == 2 and split.parts["101"] == part.path and part.path.name == "subscription-101.r2.xml"
    assert translated_totals(part.path) == whole  # counts and Decimal sums, exactly
    assert part.readings == whole["readings"] and split.readings == sum(split.reading_counts.values())
    assert translated_totals(split.parts["102"]) == translated_totals(source_feed(spec_of(2, days=2)))
    assert sorted(p.name for p in (tmp_path / "parts").iterdir()) == [
        "subscription-101.r2.xml", "subscription-101.xml", "subscription-102.xml", "subscription-103.xml"]
