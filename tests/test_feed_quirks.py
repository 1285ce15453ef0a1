"""Adversarial, hand-written Green Button documents for the ESPI parser (espi.atom, espi.intervals, espi.feed).

Every document here is written by these tests (never copied from the shared samples) and every expectation is
computed from the XML the test wrote: exact integers, exact epoch seconds, exact counts. The quirks come from
espi.md §1.5 and §2 (namespaces, sibling IntervalBlocks, readings without ``timePeriod``, fractional epochs,
padded numbers, missing/broken/reverse/relative links) and mapping-notes §2–§3.7.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
import tracemalloc

import pytest
from espi_builders import ATOM, ESPI, STYLES, E, Ent, Raw, block, document, reading, reading_type

from espi.atom import BlockRead, Entry, FeedReader
from espi.errors import NotEspiError, XmlSecurityError, XmlSyntaxError
from espi.feed import BlockEntryHeader, read_feed
from espi.generate import FeedSpec, write_feed
from espi.usage import ReadingType

BASE = "https://quirks.test/espi/1_1/resource/Subscription/7"
UP = f"{BASE}/UsagePoint/1"
MR = f"{UP}/MeterReading/1"
RT = f"{BASE}/ReadingType/1"

# 2024-07-01T00:00:00Z, a plain summer day far from any DST change
T0 = 1719792000


def hourly_block(start: int, values: list[int]) -> tuple:
    return block(start, 3600 * len(values), *(reading(v, start + 3600 * i, 3600) for i, v in enumerate(values)))


USAGE_POINT = E("UsagePoint", E("ServiceCategory", E("kind", 0)))


def linked_feed(*blocks: tuple, rt: tuple | None = None, style: str = "espi-prefix") -> bytes:
    """UsagePoint → MeterReading → ReadingType with forward links, one IntervalBlock entry per block."""
    entries = [
        Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (USAGE_POINT,)),
        Ent(MR, f"{UP}/MeterReading", (RT, f"{MR}/IntervalBlock"), (E("MeterReading"),)),
        Ent(RT, f"{BASE}/ReadingType", (), (rt or reading_type(),)),
    ]
    entries += [Ent(f"{MR}/IntervalBlock/{i}", f"{MR}/IntervalBlock", (), (b,)) for i, b in enumerate(blocks)]
    return document(entries, style)


def _count(diagnostics, *words: str) -> int:
    """How many issues were reported under kinds that contain every word (kinds name the element)."""
    return sum(n for kind, n in diagnostics.counts.items() if all(w in kind for w in words))


def readings_of(feed) -> list[tuple]:
    """(start, duration, value, cost, qualities) of every reading, in document order."""
    rows = []
    for seq in sorted(feed.blocks):
        for b in feed.blocks[seq]:
            rows += [(r.start, r.duration, r.value, r.cost, r.qualities) for r in b.readings()]
    return rows


# -- 1. namespaces ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("style", sorted(STYLES))
def test_every_namespace_style_reads_the_same(style):
    rt = reading_type(4, 1, 19, 900, 12, -3, 72, E("currency", 840))
    data = linked_feed(hourly_block(T0, [1, 2, 3]), block(T0 + 10800, 900, reading(7, cost=12345)), rt=rt,
                       style=style)
    if style == "no-namespaces":
        assert b"xmlns" not in data
    feed = read_feed(data)
    assert feed.root == "feed"
    assert [e.kinds for e in feed.entries] == [("UsagePoint",), ("MeterReading",), ("ReadingType",),
                                               ("IntervalBlock",), ("IntervalBlock",)]
    assert feed.header.id == "urn:uuid:00000000-0000-4000-8000-000000000007"
    assert feed.entries[2].first("ReadingType").value == ReadingType(
        accumulation_behaviour=4, commodity=1, flow_direction=19, interval_length=900, kind=12,
        power_of_ten_multiplier=-3, uom=72, currency=840)
    assert feed.entries[0].first("UsagePoint").value.service_kind == 0
    assert readings_of(feed) == [(T0, 3600, 1, None, ()), (T0 + 3600, 3600, 2, None, ()),
                                 (T0 + 7200, 3600, 3, None, ()), (None, None, 7, 12345, ())]
    node = feed.graph.meter_readings[0]
    assert node.reading_type.flow_direction == 19
    assert [len(b) for b in feed.blocks_of(node)] == [3, 1]
    assert feed.diagnostics.total == 0, feed.diagnostics.summary()


def test_atom_elements_in_a_foreign_prefix_still_read():
    """Atom under ``ns3:`` with ESPI under ``espi:`` (espi.md §2.4), links typed as ESPI 3.3 producers write."""
    data = (f'<ns3:feed xmlns:ns3="{ATOM}" xmlns:espi="{ESPI}"><ns3:id>x</ns3:id>'
            f'<ns3:entry><ns3:link rel="self" href="{RT}" type="espi-entry/ReadingType"/>'
            "<ns3:content><espi:ReadingType><espi:uom>72</espi:uom></espi:ReadingType></ns3:content>"
            "<ns3:updated>2024-08-01T00:00:00Z</ns3:updated></ns3:entry></ns3:feed>").encode()
    feed = read_feed(data)
    assert feed.header.id == "x"
    [entry] = feed.entries
    assert entry.self_href == RT
    assert entry.links[0].type == "espi-entry/ReadingType"
    assert entry.first("ReadingType").value.uom == 72


# -- 2. sibling IntervalBlocks ------------------------------------------------------------------------------

def test_sibling_interval_blocks_in_one_content_are_all_read():
    blocks = [hourly_block(T0 + d * 86400, [10 * d + 1, 10 * d + 2]) for d in range(3)]
    entries = [Ent(f"{MR}/IntervalBlock/all", f"{MR}/IntervalBlock", (), tuple(blocks))]
    items = list(FeedReader(document(entries)))
    reads = [i for i in items if isinstance(i, BlockRead)]
    [entry] = [i for i in items if isinstance(i, Entry)]
    # every block is delivered before its entry, in order, tagged with the entry's seq
    assert isinstance(items[-1], Entry)
    assert [(r.entry_seq, r.index) for r in reads] == [(0, 0), (0, 1), (0, 2)]
    assert [r.block.values for r in reads] == [[1, 2], [11, 12], [21, 22]]
    assert [r.block.interval.start for r in reads] == [T0, T0 + 86400, T0 + 2 * 86400]
    assert entry.block_count == 3
    assert entry.kinds == ("IntervalBlock",)


def test_an_entry_with_hundreds_of_blocks():
    days = 366
    blocks = [hourly_block(T0 + d * 86400, [(d * 24 + h) % 1000 for h in range(24)]) for d in range(days)]
    data = document([
        Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (USAGE_POINT,)),
        Ent(MR, f"{UP}/MeterReading", (RT, f"{MR}/IntervalBlock"), (E("MeterReading"),)),
        Ent(RT, f"{BASE}/ReadingType", (), (reading_type(),)),
        Ent(f"{MR}/IntervalBlock/year", f"{MR}/IntervalBlock", (), tuple(blocks)),
    ])
    reader = FeedReader(data)
    items = list(reader)
    assert reader.block_count == days
    assert reader.reading_count == days * 24
    assert [i.index for i in items if isinstance(i, BlockRead)] == list(range(days))
    feed = read_feed(data)
    [series] = feed.graph.meter_readings
    got = feed.blocks_of(series)
    assert len(got) == days
    assert sum(sum(b.values) for b in got) == sum((i % 1000) for i in range(days * 24))
    assert got[-1].starts[-1] == T0 + (days * 24 - 1) * 3600
    assert feed.entries[-1].block_count == days


# -- 3. readings without timePeriod --------------------------------------------------------------------------

def test_readings_without_time_period_are_consecutive_from_the_block_start():
    data = linked_feed(block(T0, 3600, *(reading(v) for v in (5, 6, 7, 8))), rt=reading_type(interval=900))
    feed = read_feed(data)
    [b] = feed.blocks_of(feed.graph.meter_readings[0])
    assert b.starts == [None] * 4 and b.durations == [None] * 4  # not known before the ReadingType
    assert b.values == [5, 6, 7, 8]
    interval_length = feed.graph.meter_readings[0].reading_type.interval_length
    assert interval_length == 900
    assert b.slots(interval_length) == ([T0, T0 + 900, T0 + 1800, T0 + 2700], [900] * 4)
    assert b.lower_bound() == T0


def test_readings_with_and_without_time_period_mixed():
    b = read_feed(document([Ent("ib", None, (), (block(
        T0, 14400,
        reading(1),                                  # no timePeriod: block start
        reading(2),                                  # follows the first
        reading(3, start=T0 + 3600, duration=3600),  # explicit
        reading(4),                                  # follows the explicit one
    ),))])).blocks[0][0]
    assert b.starts == [None, None, T0 + 3600, None]
    assert b.slots(900) == ([T0, T0 + 900, T0 + 3600, T0 + 7200], [900, 900, 3600, 900])
    # a block without interval.start cannot place its period-less readings
    orphan = read_feed(document([Ent("ib", None, (), (E("IntervalBlock", reading(9)),))])).blocks[0][0]
    assert orphan.interval is None
    assert orphan.slots(900) == ([None], [900])
    assert orphan.lower_bound() is None


# -- 4. sloppy numbers ----------------------------------------------------------------------------------------

def test_fractional_epoch_seconds_round_half_even_and_are_reported():
    b = block("1721154384.66136", "86400.0",
              reading(10, "1721154384.66136", 900),   # → ...385
              reading(11, "1721154384.5", 900),       # half to even → ...384
              reading(12, "1721154385.5", "900.4"),   # half to even → ...386; duration → 900
              reading(13, 1721154400, 900))
    feed = read_feed(document([Ent("ib", None, (), (b,))]))
    [got] = feed.blocks[0]
    assert got.interval.start == 1721154385
    assert got.interval.duration == 86400
    assert got.starts == [1721154385, 1721154384, 1721154386, 1721154400]
    assert got.durations == [900, 900, 900, 900]
    assert got.values == [10, 11, 12, 13]
    assert _count(feed.diagnostics, "fractional", "start") == 4  # interval start + three reading starts
    assert _count(feed.diagnostics, "fractional", "duration") == 1  # 900.4; "86400.0" is whole
    messages = [issue.message for issue in feed.diagnostics.issues]
    assert any("1721154384.66136" in m and "rounded to 1721154385" in m for m in messages), messages
    assert any("1721154385.5" in m and "rounded to 1721154386" in m for m in messages), messages


@pytest.mark.parametrize("uniform", [True, False], ids=["fast-path", "slow-path"])
def test_whitespace_padded_numbers(uniform):
    readings = [reading(" 42 ", f" {T0} ", "\n 3600\t", " 100 "), reading("\n-7\n", T0 + 3600, 3600, "0 ")]
    if not uniform:
        readings.append(reading(5))  # no timePeriod: forces the per-reading path
    rt = E("ReadingType", E("kind", " 12 "), E("intervalLength", "\n 3600 \n"), E("powerOfTenMultiplier", " -3"),
           E("uom", "72 "))
    up = E("UsagePoint", E("ServiceCategory", E("kind", " 0 ")))
    feed = read_feed(document([Ent("up", None, (), (up,)), Ent("rt", None, (), (rt,)),
                               Ent("ib", None, (), (block(f" {T0} ", " 7200 ", *readings),))]))
    [b] = feed.blocks[2]
    assert b.values[:2] == [42, -7]
    assert b.starts[:2] == [T0, T0 + 3600]
    assert b.durations[:2] == [3600, 3600]
    assert b.costs[:2] == [100, 0]
    assert b.interval.start == T0 and b.interval.duration == 7200
    assert feed.entries[0].first("UsagePoint").value.service_kind == 0
    assert feed.entries[1].first("ReadingType").value == ReadingType(kind=12, interval_length=3600,
                                                                     power_of_ten_multiplier=-3, uom=72)
    assert feed.diagnostics.total == 0


def test_comments_between_fields_are_ignored():
    comment = Raw("<!-- a comment -->")
    b = E("IntervalBlock", comment, E("interval", comment, E("duration", 1800), comment, E("start", T0)), comment,
          E("IntervalReading", comment, E("timePeriod", E("duration", 900), comment, E("start", T0)), comment,
            E("value", 31), comment),
          comment,
          E("IntervalReading", E("timePeriod", E("duration", 900), E("start", T0 + 900)), E("value", 32)))
    rt = E("ReadingType", comment, E("uom", 72), comment, E("intervalLength", 900), Raw("<?pi ignored?>"))
    feed = read_feed(document([Ent("rt", None, (), (rt,)), Ent("ib", None, (), (b,))]))
    [got] = feed.blocks[1]
    assert (got.starts, got.durations, got.values) == ([T0, T0 + 900], [900, 900], [31, 32])
    assert got.interval.start == T0 and got.interval.duration == 1800
    assert feed.entries[0].first("ReadingType").value == ReadingType(uom=72, interval_length=900)
    assert feed.diagnostics.total == 0


def test_a_comment_splitting_a_reading_number_keeps_the_whole_number():
    b = block(Raw(f"{T0 // 1000}<!-- c -->{T0 % 1000:03d}"), 3600,
              reading(Raw("10<!-- c -->00"), Raw(f"{T0}<!-- c -->"), Raw("36<?pi x?>00"), cost=Raw("<!-- c -->5")))
    feed = read_feed(document([Ent("ib", None, (), (b,))]))
    [got] = feed.blocks[0]
    assert (got.starts, got.durations, got.values, got.costs) == ([T0], [3600], [1000], [5])


def test_a_comment_splitting_a_resource_number_keeps_the_whole_number():
    rt = E("ReadingType", E("intervalLength", Raw("36<!-- c -->00")), E("powerOfTenMultiplier", Raw("-<!-- c -->3")))
    interval = block(Raw("17<!-- c -->19792000"), 3600)
    feed = read_feed(document([Ent("rt", None, (), (rt,)), Ent("ib", None, (), (interval,))]))
    assert feed.entries[0].first("ReadingType").value.interval_length == 3600
    assert feed.entries[0].first("ReadingType").value.power_of_ten_multiplier == -3
    assert feed.blocks[1][0].interval.start == T0


def test_empty_kind_and_junk_numbers_are_reported_not_raised():
    up = E("UsagePoint", E("ServiceCategory", E("kind")))  # <kind></kind>, i.e. <kind/>
    b = block(T0, 1800, reading("12abc", T0, 900), reading(Raw(""), T0 + 900, 900), reading(3, T0 + 1800, 900))
    feed = read_feed(document([Ent("up", None, (), (up,)), Ent("ib", None, (), (b,))]))
    assert b"<espi:kind></espi:kind>" in document([Ent("up", None, (), (up,))])
    assert feed.entries[0].first("UsagePoint").value.service_kind is None
    assert feed.blocks[1][0].values == [None, None, 3]  # junk and empty values are missing values
    assert _count(feed.diagnostics, "empty", "kind") == 1
    assert _count(feed.diagnostics, "value", "not a number") == 1
    assert any("'12abc'" in issue.message for issue in feed.diagnostics.issues)


# -- 5. links -----------------------------------------------------------------------------------------------------

def test_typed_and_untyped_links_resolve_alike():
    types = {UP: "espi-entry/UsagePoint", f"{BASE}/UsagePoint": "espi-feed/UsagePoint",
             f"{UP}/MeterReading": "espi-feed/MeterReading", MR: "espi-entry/MeterReading",
             RT: "espi-entry/ReadingType"}
    entries = [
        Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (USAGE_POINT,), link_types=types),
        Ent(MR, f"{UP}/MeterReading", (RT, f"{MR}/IntervalBlock"), (E("MeterReading"),), link_types=types),
        Ent(RT, f"{BASE}/ReadingType", (), (reading_type(flow=19),), link_types=types),
        Ent(f"{MR}/IntervalBlock/1", f"{MR}/IntervalBlock", (), (hourly_block(T0, [4]),)),
    ]
    typed = read_feed(document(entries))
    assert typed.entries[0].links[0].type == "espi-entry/UsagePoint"
    for entry in entries:
        entry.link_types = {}
    untyped = read_feed(document(entries))
    assert all(link.type is None for e in untyped.entries for link in e.links)
    for feed in (typed, untyped):
        [node] = feed.graph.meter_readings
        assert node.usage_point.self_href == UP
        assert node.reading_type.flow_direction == 19
        assert [b.values for b in feed.blocks_of(node)] == [[4]]
        assert feed.diagnostics.total == 0


def test_no_links_at_all_fall_back_to_document_order_under_an_implicit_usage_point():
    """An early export: ReadingType, its IntervalBlocks, another ReadingType, its IntervalBlocks; no links."""
    entries = [
        Ent(None, content=(reading_type(flow=1),)),
        Ent(None, content=(hourly_block(T0, [1, 2]),)),
        Ent(None, content=(hourly_block(T0 + 7200, [3]),)),
        Ent(None, content=(reading_type(flow=19),)),
        Ent(None, content=(hourly_block(T0, [40, 50]),)),
    ]
    feed = read_feed(document(entries))
    assert all(not e.links for e in feed.entries)
    graph = feed.graph
    assert graph.usage_points == [] and graph.meter_readings == []
    series = {seq: graph.meter_reading_for(BlockEntryHeader.of(feed.entries[seq])) for seq in (1, 2, 4)}
    assert series[1] is series[2] is not series[4]
    assert series[1].reading_type.flow_direction == 1 and series[1].implicit_for == 0
    assert series[4].reading_type.flow_direction == 19 and series[4].implicit_for == 3
    assert series[1].usage_point is series[4].usage_point
    [implicit] = graph.usage_points
    assert implicit.implicit and implicit.entry is None
    assert [m.index for m in implicit.meter_readings] == [0, 1]
    assert [b.values for b in feed.blocks_of(series[1])] == [[1, 2], [3]]
    assert [b.values for b in feed.blocks_of(series[4])] == [[40, 50]]
    assert feed.diagnostics.counts["implicit UsagePoint"] == 1
    assert feed.diagnostics.counts["IntervalBlock → ReadingType by document order"] == 2


def test_blocks_before_any_reading_type_join_the_first_one():
    entries = [Ent(None, content=(hourly_block(T0, [1]),)), Ent(None, content=(reading_type(flow=4),))]
    feed = read_feed(document(entries))
    node = feed.graph.meter_reading_for(BlockEntryHeader.of(feed.entries[0]))
    assert node.reading_type.flow_direction == 4


def test_broken_hrefs_use_the_only_candidate_then_document_order():
    mr2 = f"{UP}/MeterReading/2"
    entries = [
        Ent(UP, f"{BASE}/UsagePoint", (f"{UP}/MeterReading",), (USAGE_POINT,)),
        Ent(MR, f"{UP}/MeterReading", (RT, f"{MR}/IntervalBlock"), (E("MeterReading"),)),
        Ent(RT, f"{BASE}/ReadingType", (), (reading_type(flow=1),)),
        Ent(f"{BASE}/nowhere/1", f"{BASE}/nowhere", ("https://elsewhere.test/x",), (hourly_block(T0, [1]),)),
        Ent(mr2, f"{UP}/MeterReading", (f"{BASE}/ReadingType/2", f"{mr2}/IntervalBlock"), (E("MeterReading"),)),
        Ent(f"{BASE}/ReadingType/2", f"{BASE}/ReadingType", (), (reading_type(flow=19),)),
        Ent(f"{BASE}/nowhere/2", f"{BASE}/nowhere", (), (hourly_block(T0, [2]),)),
        Ent(f"{mr2}/IntervalBlock/1", f"{mr2}/IntervalBlock", (), (hourly_block(T0 + 3600, [3]),)),
    ]
    feed = read_feed(document(entries))
    first, second = feed.graph.meter_readings
    assert (first.reading_type.flow_direction, second.reading_type.flow_direction) == (1, 19)
    # the broken IntervalBlock entries go to the nearest preceding MeterReading; the linked one to its own
    assert [b.values for b in feed.blocks_of(first)] == [[1]]
    assert [b.values for b in feed.blocks_of(second)] == [[2], [3]]
    assert feed.diagnostics.counts["IntervalBlock → MeterReading by document order"] >= 2
    # with one MeterReading only, a broken href resolves to it ("only candidate")
    lone = read_feed(document(entries[:4]))
    [node] = lone.graph.meter_readings
    assert [b.values for b in lone.blocks_of(node)] == [[1]]
    assert lone.diagnostics.counts["IntervalBlock → MeterReading by only candidate"] >= 1


def test_reverse_links_only():
    """Children name their parents (``related`` → parent ``self``), parents name nobody, as Enbridge does."""
    up2 = f"{BASE}/UsagePoint/2"
    mr2 = f"{up2}/MeterReading/1"
    entries = [
        Ent(UP, f"{BASE}/UsagePoint", (), (USAGE_POINT,)),
        Ent(up2, f"{BASE}/UsagePoint", (), (E("UsagePoint", E("ServiceCategory", E("kind", 1))),)),
        Ent(RT, f"{BASE}/ReadingType", (), (reading_type(flow=1),)),
        Ent(f"{BASE}/ReadingType/2", f"{BASE}/ReadingType", (), (reading_type(commodity=7, uom=169),)),
        # up2's MeterReading comes first so that document order would get both wrong
        Ent(mr2, f"{up2}/MeterReading", (up2, f"{BASE}/ReadingType/2"), (E("MeterReading"),)),
        Ent(MR, f"{UP}/MeterReading", (UP, RT), (E("MeterReading"),)),
        Ent(f"{mr2}/IntervalBlock/1", f"{mr2}/IntervalBlock", (mr2,), (hourly_block(T0, [222]),)),
        Ent(f"{MR}/IntervalBlock/1", f"{MR}/IntervalBlock", (MR,), (hourly_block(T0, [111]),)),
    ]
    feed = read_feed(document(entries))
    gas, electric = feed.graph.meter_readings
    assert gas.usage_point.self_href == up2 and gas.reading_type.uom == 169
    assert electric.usage_point.self_href == UP and electric.reading_type.uom == 72
    assert [b.values for b in feed.blocks_of(gas)] == [[222]]
    assert [b.values for b in feed.blocks_of(electric)] == [[111]]
    assert feed.diagnostics.total == 0, feed.diagnostics.summary()


def test_relative_and_padded_hrefs_match_exactly_after_trimming():
    up, mr, rt = "RetailCustomer/9b6c7063/UsagePoint/01", "RetailCustomer/9b6c7063/UsagePoint/01/MeterReading/01", \
        "ReadingType/07"
    entries = [
        Ent(f"  {up}\n", "RetailCustomer/9b6c7063/UsagePoint", (f"{up}/MeterReading ",), (USAGE_POINT,)),
        Ent(mr, f"{up}/MeterReading", (f" {rt}", f"{mr}/IntervalBlock"), (E("MeterReading"),)),
        Ent(rt, "ReadingType", (), (reading_type(p=3),)),
        # same path under another host: an exact-string match must not take it
        Ent("/v1/User/1/ReadingType/07", "/v1/User/1/ReadingType", (), (reading_type(p=-3),)),
        Ent(f"{mr}/IntervalBlock/1", f"\t{mr}/IntervalBlock", (), (hourly_block(T0, [9]),)),
    ]
    feed = read_feed(document(entries))
    assert feed.entries[0].self_href == up
    [node] = feed.graph.meter_readings
    assert node.usage_point.self_href == up
    assert node.reading_type.power_of_ten_multiplier == 3
    assert [b.values for b in feed.blocks_of(node)] == [[9]]
    assert feed.diagnostics.total == 0, feed.diagnostics.summary()


# -- rejections at the parser level ---------------------------------------------------------------------------------

def test_not_well_formed_xml_names_the_line():
    data = b'<?xml version="1.0"?>\n<feed xmlns="http://www.w3.org/2005/Atom">\n<entry>\n<content>\n</entry>\n</feed>\n'
    with pytest.raises(XmlSyntaxError) as caught:
        list(FeedReader(data, name="broken.xml"))
    assert caught.value.line == 5
    assert str(caught.value).startswith("broken.xml:5: not well-formed XML")


def test_a_doctype_is_refused_before_the_body_is_read():
    data = b'<?xml version="1.0"?>\n<!DOCTYPE feed [<!ENTITY x "y">]>\n<feed xmlns="http://www.w3.org/2005/Atom"/>'
    with pytest.raises(XmlSecurityError, match="DOCTYPE"):
        list(FeedReader(data))


def test_a_foreign_root_is_not_espi():
    with pytest.raises(NotEspiError, match="<html>"):
        list(FeedReader(b"<html><body/></html>"))


# -- 13. memory does not grow with the number of readings ------------------------------------------------------

def _generated(days: int, usage_points: int = 1) -> bytes:
    out = io.StringIO()
    write_feed(out, FeedSpec(days=days, usage_points=usage_points, net_metering=True, summaries=False))
    return out.getvalue().encode()


def _peak_while_streaming(data: bytes) -> tuple[int, int]:
    reader = FeedReader(data)
    readings = 0
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        for item in reader:
            if isinstance(item, BlockRead):
                readings += len(item.block)
        return tracemalloc.get_traced_memory()[1], readings
    finally:
        tracemalloc.stop()


def test_streaming_python_memory_is_flat():
    """Python-level allocations while streaming 1 and 10 days are the same size (tracemalloc)."""
    one, ten = _generated(1), _generated(10)
    _peak_while_streaming(one)  # warm caches (compiled XPath, dataclass specs)
    peak_one, readings_one = _peak_while_streaming(one)
    peak_ten, readings_ten = _peak_while_streaming(ten)
    assert readings_ten == 10 * readings_one == 10 * 2 * 96
    assert peak_ten < 3 * peak_one, (peak_one, peak_ten)


def test_streaming_native_memory_is_flat(tmp_path):
    """libxml2's tree is invisible to tracemalloc: compare peak RSS growth of a child process instead.

    A held tree of the 40-day file costs several times its size (≈ 40 MB); streaming must stay far below.
    """
    small, large = tmp_path / "small.xml", tmp_path / "large.xml"
    small.write_bytes(_generated(1))
    large.write_bytes(_generated(40, usage_points=5))
    assert large.stat().st_size > 6_000_000
    script = textwrap.dedent("""
        import resource, sys
        from espi.atom import BlockRead, FeedReader
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        readings = sum(len(i.block) for i in FeedReader(sys.argv[1]) if isinstance(i, BlockRead))
        print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before, readings)
    """)

    def growth(path) -> tuple[int, int]:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
        out = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True,
                             env=env, timeout=120)
        kib, readings = out.stdout.split()
        return int(kib) * 1024, int(readings)

    small_growth, small_readings = growth(small)
    large_growth, large_readings = growth(large)
    assert small_readings == 2 * 96 and large_readings == 40 * 5 * 2 * 96  # January–February: no DST day
    assert large_growth - small_growth < large.stat().st_size // 2, (small_growth, large_growth)
