"""The Atom link graph of a Green Button feed (espi.md §2.2, §2.3).

Parents and children are tied only by Atom links, compared as exact (trimmed) href strings, never parsed:
a child belongs to a parent when the parent's ``related`` links name the child's ``self`` or its collection
(``up``), or — the reverse links some producers add (Enbridge, Hydro One) — when the child's ``related`` names the
parent's ``self``. When links are missing or broken, the graph falls back to the only candidate, then to document
order (the nearest preceding parent), and says so in the diagnostics. Files with no UsagePoint or MeterReading
entries at all (early exports) get implicit ones, so that their readings still have a home. One rule compares
prefixes: an IntervalBlock whose ``self`` lies under one MeterReading while its ``up`` names another goes where its
``self`` says, and is counted (docs/mapping.md §4.8).

IntervalBlock entries are resolved one by one through ``meter_reading_for(header)``, so that a translator can keep
the (many) block entries out of memory and resolve them after the (few) other entries are known.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from espi.atom import BlockRead, Entry, FeedHeader, FeedReader
from espi.intervals import IntervalBlock
from espi.model import Diagnostics
from espi.usage import ElectricPowerQualitySummary, ReadingType, TimeConfiguration, UsagePoint, UsageSummary
from espi.xmlsafe import Source

#: The summary resources ``FeedGraph`` hangs off UsagePoints, in the order it resolves them.
SUMMARY_KINDS = ("UsageSummary", "ElectricPowerUsageSummary", "ElectricPowerQualitySummary")


@dataclass(frozen=True, slots=True)
class BlockEntryHeader:
    """What resolving an IntervalBlock entry needs: its links, position and ``updated`` time."""

    seq: int
    self_href: str | None
    up_href: str | None
    related: tuple[str, ...]
    updated: datetime | None = None
    blocks_in_meter_reading: bool = False
    line: int | None = None

    @classmethod
    def of(cls, entry: Entry) -> BlockEntryHeader:
        return cls(entry.seq, entry.self_href, entry.up_href, entry.related, entry.updated,
                   entry.blocks_in_meter_reading > 0, entry.line)


@dataclass(eq=False, slots=True)
class UsagePointNode:
    """A UsagePoint and what hangs off it. ``entry`` is None for an implicit UsagePoint."""

    index: int
    entry: Entry | None
    usage_point: UsagePoint | None
    meter_readings: list[MeterReadingNode] = field(default_factory=list)
    local_time: TimeConfiguration | None = None
    local_time_entry: Entry | None = None
    summaries: list[tuple[Entry, UsageSummary]] = field(default_factory=list)
    quality_summaries: list[tuple[Entry, ElectricPowerQualitySummary]] = field(default_factory=list)

    @property
    def implicit(self) -> bool:
        return self.entry is None

    @property
    def self_href(self) -> str | None:
        return self.entry.self_href if self.entry else None


@dataclass(eq=False, slots=True)
class MeterReadingNode:
    """One series of readings: a MeterReading, its ReadingType and (by entry seq) its IntervalBlock entries."""

    index: int
    entry: Entry | None
    usage_point: UsagePointNode
    reading_type: ReadingType | None = None
    reading_type_entry: Entry | None = None
    #: seq of the RT entry an implicit MeterReading was made for
    implicit_for: int | None = None

    @property
    def implicit(self) -> bool:
        return self.entry is None


class _Candidates:
    """Entries of one kind that can be a parent, indexed for the resolution rules above."""

    def __init__(self, entries: Iterable[Entry]):
        self.entries = sorted(entries, key=lambda e: e.seq)
        self.seqs = [e.seq for e in self.entries]
        self.by_related: dict[str, list[Entry]] = defaultdict(list)
        self.by_self: dict[str, Entry] = {}
        for entry in self.entries:
            for href in entry.related:
                self.by_related[href].append(entry)
            if entry.self_href and entry.self_href not in self.by_self:
                self.by_self[entry.self_href] = entry

    def __len__(self) -> int:
        return len(self.entries)

    def parent(self, self_href: str | None, up_href: str | None, related: tuple[str, ...], seq: int
               ) -> tuple[Entry | None, str]:
        """The parent entry and how it was found: link, reverse link, only candidate, document order."""
        found: list[Entry] = []
        for href in (self_href, up_href):
            if href:
                found.extend(self.by_related.get(href, ()))
        if found:
            return min(found, key=lambda e: e.seq), "link" if len({e.seq for e in found}) == 1 else "ambiguous"
        for href in related:
            entry = self.by_self.get(href)
            if entry is not None:
                return entry, "reverse link"
        if len(self.entries) == 1:
            return self.entries[0], "only candidate"
        if self.entries:
            position = bisect.bisect_left(self.seqs, seq)
            return self.entries[max(position - 1, 0)], "document order"
        return None, "none"


class FeedGraph:
    """Resolves UsagePoints, MeterReadings, ReadingTypes, LocalTimeParameters and summaries of one feed.

    ``entries`` are all entries except those that hold only IntervalBlocks (those are resolved on demand with
    ``meter_reading_for``); passing them too is harmless.
    """

    def __init__(self, entries: Iterable[Entry], diagnostics: Diagnostics):
        self.diagnostics = diagnostics
        self.entries = sorted(entries, key=lambda e: e.seq)
        by_kind: dict[str, list[Entry]] = defaultdict(list)
        for entry in self.entries:
            for name in dict.fromkeys(r.name for r in entry.resources):
                by_kind[name].append(entry)
        self.by_kind = by_kind
        self.usage_points: list[UsagePointNode] = []
        self.meter_readings: list[MeterReadingNode] = []
        self._mr_by_seq: dict[int, MeterReadingNode] = {}
        self._implicit_usage_point: UsagePointNode | None = None
        self._implicit_meter_readings: dict[int | None, MeterReadingNode] = {}
        self._customer_cache: dict[str, _Candidates] = {}
        #: IntervalBlock entries whose self link lies under one MeterReading and whose up link names another
        self.link_conflicts = 0
        self._mr_by_prefix: dict[str, MeterReadingNode | None] | None = None
        self._build()

    # -- construction ---------------------------------------------------------------------------------------

    def _build(self) -> None:
        seen_self: dict[str, UsagePointNode] = {}
        for entry in self.by_kind.get("UsagePoint", ()):
            resource = entry.first("UsagePoint")
            href = entry.self_href
            if href and href in seen_self:
                self.diagnostics.add(f"UsagePoint {href} appears twice; the first entry is used", entry.line,
                                     kind="duplicate UsagePoint")
                continue
            node = UsagePointNode(len(self.usage_points), entry, resource.value)
            self.usage_points.append(node)
            if href:
                seen_self[href] = node
        self._up_candidates = _Candidates(n.entry for n in self.usage_points)
        self._up_by_seq = {n.entry.seq: n for n in self.usage_points}

        self._rt_candidates = _Candidates(self.by_kind.get("ReadingType", ()))
        for entry in self.by_kind.get("MeterReading", ()):
            up = self._usage_point_for(entry, "MeterReading")
            node = MeterReadingNode(len(self.meter_readings), entry, up)
            self._attach_reading_type(node)
            up.meter_readings.append(node)
            self.meter_readings.append(node)
            self._mr_by_seq[entry.seq] = node
        self._mr_candidates = _Candidates(n.entry for n in self.meter_readings)

        ltp_candidates = _Candidates(self.by_kind.get("LocalTimeParameters", ()))
        for up in self.usage_points:
            self._attach_local_time(up, ltp_candidates)
        self._attach_summaries()
        if self._implicit_usage_point is not None and self._implicit_usage_point.local_time is None:
            self._attach_local_time(self._implicit_usage_point, ltp_candidates)

    def _attach_summaries(self) -> None:
        """Summaries to their UsagePoints: every UsageSummary entry, then every ElectricPowerUsageSummary entry, then
        every ElectricPowerQualitySummary entry, each in document order (a translator that keeps summary entries
        out of memory overrides this, resolving them in the same order)."""
        for name in SUMMARY_KINDS:
            for entry in self.by_kind.get(name, ()):
                up = self._usage_point_for(entry, name)
                target = up.quality_summaries if name == "ElectricPowerQualitySummary" else up.summaries
                for resource in entry.resources:
                    if resource.name == name:
                        target.append((entry, resource.value))

    def _usage_point_for(self, entry: Entry, what: str) -> UsagePointNode:
        parent, how = self._up_candidates.parent(entry.self_href, entry.up_href, entry.related, entry.seq)
        if parent is None:
            return self._implicit_up(entry, what)
        self._note(how, what, "UsagePoint", entry.line)
        return self._up_by_seq[parent.seq]

    def _implicit_up(self, entry_or_line: Entry | int | None, what: str) -> UsagePointNode:
        if self._implicit_usage_point is None:
            node = UsagePointNode(len(self.usage_points), None, None)
            self.usage_points.append(node)
            self._implicit_usage_point = node
            line = entry_or_line.line if isinstance(entry_or_line, Entry) else entry_or_line
            self.diagnostics.add(f"{what} without any UsagePoint in the feed; an implicit UsagePoint holds it",
                                 line, kind="implicit UsagePoint")
        return self._implicit_usage_point

    def _attach_reading_type(self, node: MeterReadingNode) -> None:
        entry = node.entry
        embedded = entry.first("ReadingType") if entry is not None else None
        for href in entry.related if entry is not None else ():
            candidate = self._rt_candidates.by_self.get(href)
            if candidate is not None:
                node.reading_type_entry = candidate
                node.reading_type = candidate.first("ReadingType").value
                return
        if embedded is not None:
            node.reading_type_entry = entry
            node.reading_type = embedded.value
            return
        if len(self._rt_candidates) == 0:
            self.diagnostics.add("MeterReading without a ReadingType: its readings have no units and are not "
                                 "translated", entry.line if entry else None, kind="MeterReading without ReadingType")
            return
        parent, how = self._rt_candidates.parent(None, None, (), entry.seq if entry else 0)
        self._note(how, "MeterReading", "ReadingType", entry.line if entry else None)
        node.reading_type_entry = parent
        node.reading_type = parent.first("ReadingType").value

    def _attach_local_time(self, up: UsagePointNode, candidates: _Candidates) -> None:
        if not len(candidates):
            return
        chosen = None
        if up.entry is not None:
            for href in up.entry.related:
                chosen = candidates.by_self.get(href)
                if chosen is not None:
                    break
            if chosen is None and up.entry.self_href:
                reverse = candidates.by_related.get(up.entry.self_href)
                chosen = reverse[0] if reverse else None
        if chosen is None and len(candidates) == 1:
            chosen = candidates.entries[0]
            if up.entry is not None:
                self.diagnostics.add("UsagePoint has no link to its LocalTimeParameters; the feed's only one is "
                                     "used", up.entry.line, kind="LocalTimeParameters by only candidate")
        if chosen is not None:
            up.local_time_entry = chosen
            up.local_time = chosen.first("LocalTimeParameters").value

    def _note(self, how: str, child: str, parent: str, line: int | None) -> None:
        if how in ("link", "reverse link"):
            return
        if how == "ambiguous":
            message = f"{child} is linked to several {parent}s; the first in the feed is used"
        else:
            message = f"{child} has no resolvable link to its {parent}; matched by {how}"
        self.diagnostics.add(message, line, kind=f"{child} → {parent} by {how}")

    # -- IntervalBlock entries --------------------------------------------------------------------------------

    def meter_reading_for(self, header: BlockEntryHeader) -> MeterReadingNode | None:
        """The series an IntervalBlock entry belongs to, or None when the feed gives its readings no meaning.

        Link conflict: when the entry's ``self`` lies under one MeterReading (a MeterReading's ``related`` names
        it, or its ``self`` or one of its ``related`` hrefs followed by ``/`` begins it) and its ``up`` names the
        collection of another, the ``self`` one wins: ``self`` is the address the resource is served at, ``up``
        only a way back to a listing. Each such entry is counted in ``link_conflicts`` and reported.
        """
        if header.blocks_in_meter_reading and header.seq in self._mr_by_seq:
            return self._mr_by_seq[header.seq]
        if len(self._mr_candidates):
            if header.self_href and header.up_href:
                by_up = self._mr_candidates.by_related.get(header.up_href)
                if by_up:
                    owner = self._self_owner(header.self_href)
                    if owner is not None and all(entry.seq != owner.entry.seq for entry in by_up):
                        self.link_conflicts += 1
                        self.diagnostics.add(
                            "IntervalBlock's self link lies under one MeterReading but its up link names another; "
                            "placed under the one its self link names", header.line,
                            kind="IntervalBlock link conflict (self wins)")
                        return owner
            parent, how = self._mr_candidates.parent(header.self_href, header.up_href, header.related, header.seq)
            self._note(how, "IntervalBlock", "MeterReading", header.line)
            return self._mr_by_seq[parent.seq]
        # No MeterReading entries at all (early exports): the nearest preceding ReadingType defines the series.
        if len(self._rt_candidates):
            rt_entry, how = self._rt_candidates.parent(None, None, (), header.seq)
            key = rt_entry.seq
        else:
            rt_entry, key = None, None
        node = self._implicit_meter_readings.get(key)
        if node is None:
            up = self.usage_points[0] if len(self.usage_points) == 1 else self._implicit_up(header.line,
                                                                                             "IntervalBlock")
            node = MeterReadingNode(len(self.meter_readings), None, up, implicit_for=key)
            if rt_entry is not None:
                node.reading_type_entry = rt_entry
                node.reading_type = rt_entry.first("ReadingType").value
                self.diagnostics.add("IntervalBlocks without MeterReading entries: grouped under the preceding "
                                     "ReadingType (document order)", header.line,
                                     kind="IntervalBlock → ReadingType by document order")
            else:
                self.diagnostics.add("IntervalBlocks without any MeterReading or ReadingType: their readings have "
                                     "no units and are not translated", header.line,
                                     kind="IntervalBlock without ReadingType")
            up.meter_readings.append(node)
            self.meter_readings.append(node)
            self._implicit_meter_readings[key] = node
        return node

    def _self_owner(self, self_href: str) -> MeterReadingNode | None:
        """The one MeterReading whose ``related`` names ``self_href``, or under whose ``self`` or collection hrefs
        it lies (the nearest such ancestor); None when none or several. A MeterReading's collections are its
        ``related`` hrefs that name no entry of the feed (a ReadingType, a UsagePoint back link)."""
        exact = self._mr_candidates.by_related.get(self_href)
        if exact:
            return self._mr_by_seq[exact[0].seq] if len({e.seq for e in exact}) == 1 else None
        if self._mr_by_prefix is None:
            entries = {entry.self_href for entry in self.entries if entry.self_href}
            prefixes: dict[str, MeterReadingNode | None] = {}
            for node in self.meter_readings:
                if node.entry is None:
                    continue
                hrefs = [node.entry.self_href] + [h for h in node.entry.related if h not in entries]
                for href in hrefs:
                    if href:
                        prefixes[href] = node if prefixes.get(href, node) is node else None
            self._mr_by_prefix = prefixes
        href = self_href
        while "/" in href:
            href = href.rpartition("/")[0]
            if href in self._mr_by_prefix:
                return self._mr_by_prefix[href]
        return None

    def reading_type_by_href(self, href: str | None) -> ReadingType | None:
        """The ReadingType whose entry's ``self`` is exactly ``href`` (SummaryMeasurement ``readingTypeRef``)."""
        entry = self._rt_candidates.by_self.get(href.strip()) if href else None
        return entry.first("ReadingType").value if entry is not None else None

    # -- customer resources -----------------------------------------------------------------------------------

    def customer_parent(self, entry: Entry, parent_kind: str) -> Entry | None:
        """The entry of kind ``parent_kind`` (e.g. CustomerAccount) this customer entry hangs off."""
        candidates = self._customer_candidates(parent_kind)
        if not len(candidates):
            return None
        parent, how = candidates.parent(entry.self_href, entry.up_href, entry.related, entry.seq)
        kind = entry.resources[0].name if entry.resources else "entry"
        self._note(how, kind, parent_kind, entry.line)
        return parent

    def _customer_candidates(self, kind: str) -> _Candidates:
        candidates = self._customer_cache.get(kind)
        if candidates is None:
            candidates = _Candidates(self.by_kind.get(kind, ()))
            self._customer_cache[kind] = candidates
        return candidates

    def resources(self, kind: str) -> list[tuple[Entry, object]]:
        """Every resource of one kind (element name) with its entry, in document order."""
        return [(entry, r.value) for entry in self.by_kind.get(kind, ()) for r in entry.resources if r.name == kind]


@dataclass(slots=True)
class Feed:
    """A whole document read into memory (for small files and for tests; translation streams instead)."""

    root: str
    header: FeedHeader
    entries: list[Entry]
    blocks: dict[int, list[IntervalBlock]]
    graph: FeedGraph
    diagnostics: Diagnostics

    @property
    def reading_count(self) -> int:
        return sum(len(b) for blocks in self.blocks.values() for b in blocks)

    def blocks_of(self, node: MeterReadingNode) -> list[IntervalBlock]:
        """IntervalBlocks of one series, in document order."""
        result: list[IntervalBlock] = []
        for entry in self.entries:
            if entry.seq in self.blocks and self.graph.meter_reading_for(BlockEntryHeader.of(entry)) is node:
                result.extend(self.blocks[entry.seq])
        return result


def read_feed(source: Source, name: str | None = None) -> Feed:
    """Reads a whole document (any size it fits in memory) and resolves its link graph."""
    reader = FeedReader(source, name=name)
    entries: list[Entry] = []
    blocks: dict[int, list[IntervalBlock]] = defaultdict(list)
    for item in reader:
        if isinstance(item, BlockRead):
            blocks[item.entry_seq].append(item.block)
        else:
            entries.append(item)
    graph = FeedGraph(entries, reader.diagnostics)
    return Feed(reader.root or "", reader.header, entries, dict(blocks), graph, reader.diagnostics)
