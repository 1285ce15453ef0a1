"""Streaming reader for Green Button documents: the Atom envelope (RFC 4287 as profiled by ESPI; espi.md §2).

``FeedReader`` walks a document once with lxml's iterparse and yields, in document order:

* an ``Entry`` for every ``atom:entry`` (envelope, links, and every resource in its ``content`` except
  IntervalBlocks), and
* a ``BlockRead`` for every ``IntervalBlock``, as soon as the block's end tag is read, before its entry ends, so
  that even an entry holding a year of readings (GBA SDK files put 366 blocks in one entry) is never held in
  memory at once. Elements are freed as soon as they are read: memory does not grow with the number of readings.

Bare documents work too: a single ``atom:entry``, or a bare ESPI element such as ``ServiceStatus`` (the
ReadServiceStatus answer) or ``BatchList`` (which ``espi.notification`` reads; here it is only recognised).
Namespaces are matched by local name only, so default namespaces, other prefixes and namespace-less files all
read the same (espi.md §2.4).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lxml import etree

from espi import authorization, customer, usage
from espi.errors import NotEspiError
from espi.intervals import IntervalBlock, read_interval_block
from espi.model import Diagnostics, build, parse_atom_datetime, stated_utc_offset
from espi.namespaces import local_name
from espi.xmlsafe import Source, secure_document

#: ESPI resource element name → dataclass. ElectricPowerUsageSummary is the deprecated form of UsageSummary.
RESOURCE_TYPES: dict[str, type] = {
    "UsagePoint": usage.UsagePoint,
    "MeterReading": usage.MeterReading,
    "ReadingType": usage.ReadingType,
    "LocalTimeParameters": usage.TimeConfiguration,
    "UsageSummary": usage.UsageSummary,
    "ElectricPowerUsageSummary": usage.UsageSummary,
    "ElectricPowerQualitySummary": usage.ElectricPowerQualitySummary,
    "ProgramIdMappings": usage.ProgramIdMappings,
    "ServiceStatus": usage.ServiceStatus,
    "ApplicationInformation": authorization.ApplicationInformation,
    "Authorization": authorization.Authorization,
    "Customer": customer.Customer,
    "RetailCustomer": customer.Customer,
    "CustomerAccount": customer.CustomerAccount,
    "CustomerAgreement": customer.CustomerAgreement,
    "ServiceLocation": customer.ServiceLocation,
    "ServiceSupplier": customer.ServiceSupplier,
    "EndDevice": customer.EndDevice,
    "Meter": customer.Meter,
    "Statement": customer.Statement,
    "ProgramDateIdMappings": customer.ProgramDateIdMappings,
}

#: Elements that are whole documents but not Atom (recognised so that callers get a precise message).
BARE_DOCUMENTS = frozenset({"BatchList", "ServiceStatus"})


@dataclass(frozen=True, slots=True)
class Link:
    rel: str | None
    href: str | None
    type: str | None = None


@dataclass(slots=True)
class Resource:
    """A resource found in an entry's content. ``name`` is the XML element name (e.g. ElectricPowerUsageSummary).

    ``embedded_in`` is the index (in ``Entry.resources``) of the resource whose element contained this one, for
    the non-conformant nesting some feeds use (a ReadingType inside its MeterReading, espi.md §1.2).
    """

    name: str
    value: Any
    line: int | None = None
    embedded_in: int | None = None


@dataclass(slots=True)
class Entry:
    """One ``atom:entry``: envelope fields, links (hrefs trimmed, otherwise untouched), and resources."""

    seq: int
    line: int | None = None
    id: str | None = None
    title: str | None = None
    published: datetime | None = None
    updated: datetime | None = None
    links: list[Link] = field(default_factory=list)
    resources: list[Resource] = field(default_factory=list)
    #: IntervalBlocks of this entry, delivered separately as ``BlockRead``; their count is kept here.
    block_count: int = 0
    #: IntervalBlocks that were nested inside a MeterReading element of this entry
    blocks_in_meter_reading: int = 0

    def _links(self, rel: str) -> list[str]:
        return [link.href for link in self.links if link.rel == rel and link.href]

    @property
    def self_href(self) -> str | None:
        hrefs = self._links("self")
        return hrefs[0] if hrefs else None

    @property
    def up_href(self) -> str | None:
        hrefs = self._links("up")
        return hrefs[0] if hrefs else None

    @property
    def related(self) -> tuple[str, ...]:
        return tuple(self._links("related"))

    def first(self, *names: str) -> Resource | None:
        for resource in self.resources:
            if resource.name in names:
                return resource
        return None

    @property
    def kinds(self) -> tuple[str, ...]:
        kinds = [r.name for r in self.resources]
        if self.block_count:
            kinds.append("IntervalBlock")
        return tuple(kinds)


@dataclass(slots=True)
class BlockRead:
    """An IntervalBlock, delivered as soon as it is read; ``entry_seq`` is the seq of the entry holding it."""

    entry_seq: int
    index: int
    block: IntervalBlock
    #: True when the block was nested inside a MeterReading element instead of being a content child
    in_meter_reading: bool = False


@dataclass(slots=True)
class FeedHeader:
    """The ``atom:feed`` envelope (available once the reader has passed the first entry, complete at the end)."""

    id: str | None = None
    title: str | None = None
    updated: datetime | None = None
    links: list[Link] = field(default_factory=list)

    @property
    def self_href(self) -> str | None:
        for link in self.links:
            if link.rel == "self" and link.href:
                return link.href
        return None


class FeedReader:
    """Streams a Green Button document. Iterate it once; ``header``, ``root`` and ``diagnostics`` stay readable.

    ``root`` is the root element's local name: ``feed``, ``entry``, or a bare resource such as ``ServiceStatus``.
    """

    def __init__(self, source: Source, name: str | None = None, on_read: Callable[[int], None] | None = None):
        self._source = source
        self._name = name
        self._on_read = on_read
        self.root: str | None = None
        self.header = FeedHeader()
        self.diagnostics = Diagnostics(name or "<input>")
        self.entry_count = 0
        self.block_count = 0
        self.reading_count = 0
        #: readings with a value (not absent, not the "not set" sentinel): the translation accounts for each one
        self.readings_with_values = 0
        #: local UTC offsets the Atom dates state (seconds → [count, first instant stating it]): O(offsets)
        self.stated_offsets: dict[int, list] = {}
        self._used = False

    def stated_offset(self) -> tuple[int, datetime] | None:
        """The local UTC offset the document's Atom dates state most often (ties: the first stated), with the first
        instant stating it; None when every date is ``Z``, zone-less or absent."""
        best = None
        for offset, (count, instant) in self.stated_offsets.items():
            if best is None or count > best[0]:
                best = (count, offset, instant)
        return None if best is None else (best[1], best[2])

    def _atom_time(self, element: etree._Element) -> datetime | None:
        value = parse_atom_datetime(element.text, element, self.diagnostics)
        if value is not None:
            offset = stated_utc_offset(element.text)
            if offset is not None:
                seen = self.stated_offsets.setdefault(offset, [0, value])
                seen[0] += 1
        return value

    def __iter__(self) -> Iterator[Entry | BlockRead]:
        if self._used:
            raise RuntimeError("a FeedReader can be iterated once")
        self._used = True
        with secure_document(self._source, name=self._name, on_read=self._on_read) as document:
            self.diagnostics.source = document.name
            self.root = local_name(document.root_tag)
            if self.root in ("feed", "entry"):
                yield from self._read_atom(document)
            elif self.root in RESOURCE_TYPES or self.root in BARE_DOCUMENTS or self.root == "IntervalBlock":
                yield from self._read_bare(document)
            else:
                raise NotEspiError(
                    f"not a Green Button document: the root element is <{self.root}>, expected an Atom feed or "
                    "entry, or a bare ESPI resource", document.name, 1)

    # -- Atom documents ---------------------------------------------------------------------------------------

    def _read_atom(self, document) -> Iterator[Entry | BlockRead]:
        header_done = False
        block_index = 0
        root = None
        for _event, element in document.iterparse(events=("end",), tag=("{*}entry", "{*}IntervalBlock")):
            name = local_name(element.tag)
            if name == "IntervalBlock":
                parent = element.getparent()
                in_meter_reading = parent is not None and local_name(parent.tag) == "MeterReading"
                block = read_interval_block(element, self.diagnostics)
                self.block_count += 1
                self.reading_count += len(block)
                self.readings_with_values += block.value_count()
                yield BlockRead(self.entry_count, block_index, block, in_meter_reading)
                block_index += 1
                element.clear(keep_tail=True)
                continue
            if self.root == "feed" and not header_done:
                root = element.getparent()
                self._read_header(root, stop_at=element)
                header_done = True
            entry = self._read_entry(element, self.entry_count, block_index)
            self.entry_count += 1
            block_index = 0
            yield entry
            # Free the entry and everything before it (the header has been read).
            element.clear(keep_tail=False)
            parent = element.getparent()
            if parent is not None:
                while element.getprevious() is not None:
                    del parent[0]
        if self.root == "feed":
            if root is None:
                return  # an empty feed has no entries: its header is not needed to report that
            self._read_header(root, stop_at=None)

    def _read_header(self, root: etree._Element, stop_at: etree._Element | None) -> None:
        for child in root:
            if child is stop_at:
                break
            if not isinstance(child.tag, str):
                continue
            name = local_name(child.tag)
            if name == "id" and self.header.id is None:
                self.header.id = (child.text or "").strip() or None
            elif name == "title" and self.header.title is None:
                self.header.title = (child.text or "").strip() or None
            elif name == "updated" and self.header.updated is None:
                self.header.updated = self._atom_time(child)
            elif name == "link":
                link = _link(child)
                if link not in self.header.links:
                    self.header.links.append(link)

    def _read_entry(self, element: etree._Element, seq: int, block_count: int) -> Entry:
        entry = Entry(seq=seq, line=element.sourceline, block_count=block_count)
        for child in element:
            if not isinstance(child.tag, str):
                continue
            name = local_name(child.tag)
            if name == "link":
                entry.links.append(_link(child))
            elif name == "content":
                for resource in child:
                    if isinstance(resource.tag, str):
                        self._read_resource(resource, entry, embedded_in=None)
            elif name == "id":
                entry.id = (child.text or "").strip() or None
            elif name == "title":
                entry.title = (child.text or "").strip() or None
            elif name == "published":
                entry.published = self._atom_time(child)
            elif name == "updated":
                entry.updated = self._atom_time(child)
        if not entry.resources and not entry.block_count:
            self.diagnostics.add("entry without any ESPI resource in its content", entry.line,
                                 kind="entry without content")
        return entry

    def _read_resource(self, element: etree._Element, entry: Entry, embedded_in: int | None) -> None:
        name = local_name(element.tag)
        if name == "IntervalBlock":
            if embedded_in is not None and entry.resources[embedded_in].name == "MeterReading":
                entry.blocks_in_meter_reading += 1
            return  # already delivered as a BlockRead
        cls = RESOURCE_TYPES.get(name)
        if cls is None:
            self.diagnostics.at(element, f"unknown resource <{name}> ignored", kind=f"unknown resource <{name}>")
            return
        value = build(cls, element, self.diagnostics)
        if name == "ElectricPowerUsageSummary":
            value = _replace(value, deprecated_form=True)
        index = len(entry.resources)
        entry.resources.append(Resource(name, value, element.sourceline, embedded_in))
        # Non-conformant nesting: resources inside a resource's element (espi.md §1.2).
        for child in element:
            if isinstance(child.tag, str):
                child_name = local_name(child.tag)
                if child_name in RESOURCE_TYPES or child_name == "IntervalBlock":
                    self.diagnostics.at(child, f"<{child_name}> nested inside <{name}>; read as its own resource",
                                        kind=f"<{child_name}> nested inside <{name}>")
                    self._read_resource(child, entry, embedded_in=index)

    # -- bare documents -----------------------------------------------------------------------------------------

    def _read_bare(self, document) -> Iterator[Entry | BlockRead]:
        root_element = None
        for _event, element in document.iterparse(events=("end",)):
            root_element = element
        if root_element is None:  # pragma: no cover - iterparse always ends with the root
            return
        name = local_name(root_element.tag)
        entry = Entry(seq=0, line=root_element.sourceline)
        if name == "IntervalBlock":
            block = read_interval_block(root_element, self.diagnostics)
            self.block_count += 1
            self.reading_count += len(block)
            self.readings_with_values += block.value_count()
            yield BlockRead(0, 0, block)
            entry.block_count = 1
        elif name in RESOURCE_TYPES:
            self._read_resource(root_element, entry, embedded_in=None)
        else:
            entry.resources.append(Resource(name, None, root_element.sourceline))
        self.entry_count = 1
        yield entry


def _link(element: etree._Element) -> Link:
    href = element.get("href")
    return Link(rel=(element.get("rel") or "alternate").strip(), href=href.strip() if href else None,
                type=element.get("type"))


def _replace(value: Any, **changes: Any) -> Any:
    return dataclasses.replace(value, **changes)
