"""ESPI documents the sandbox writes: Atom feeds around source entries, and its own resources.

The sandbox's own resources (ApplicationInformation, Authorization, ServiceStatus) are instances of the library's
resource classes (:mod:`espi.authorization`, :mod:`espi.usage`) written back to XML by :func:`resource_element`,
which follows the classes' ``xml_field`` declarations, so element names and order are the ones the reader uses
(XSD order). Source entries (usage and customer data) are never rebuilt: feeds carry their bytes.

Query parameters (FB_37, espi.md §3.7) are validated exactly as OpenESPI's VerifyURLParams does: dates must be
``YYYY-MM-DDThh:mm:ssZ``, numbers digits only; anything else is a 400. In Batch feeds they select IntervalBlock
entries (by ``atom:published``/``atom:updated``; ``start-index``, ``max-results`` and ``depth`` count
IntervalBlocks) while the entries that give them meaning (UsagePoint, MeterReading, ReadingType,
LocalTimeParameters, summaries) are always sent — the shape of the GBA harness sample ``resource_filteredMinMax``.
In resource-level collections they apply to the collection's own entries.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lxml import etree

from espi.namespaces import ATOM, ESPI
from sandbox.data import EntryRecord

XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'
ATOM_MEDIA_TYPE = "application/atom+xml"
_NAMESPACE = uuid.UUID("0b8d3c52-6a43-5c55-9d3e-73616e64626f")  # ids of the sandbox's own feeds and entries
INVALID_QUERY = "Request contains invalid query parameter values!"


def atom_time(moment: datetime | int | float) -> str:
    if not isinstance(moment, datetime):
        moment = datetime.fromtimestamp(moment, UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def urn(href: str) -> str:
    return f"urn:uuid:{uuid.uuid5(_NAMESPACE, href)}"


# ----------------------------------------------------------------------------------------------------------------
# Resource classes → XML
# ----------------------------------------------------------------------------------------------------------------
def resource_element(value: Any, name: str, namespace: str = ESPI, *, default_namespace: bool = False
                     ) -> etree._Element:
    """``value`` (a resource dataclass of the library) as element ``name``, children in field order.

    Inside Atom content the ``espi:`` prefix is used; a bare document (ServiceStatus) uses a default namespace.
    """
    element = etree.Element(f"{{{namespace}}}{name}", nsmap={None if default_namespace else "espi": namespace})
    _fill(element, value, namespace)
    return element


def _fill(element: etree._Element, value: Any, namespace: str) -> None:
    for f in dataclasses.fields(value):
        xml = f.metadata.get("xml")
        if not xml:
            continue
        items = getattr(value, f.name)
        if items is None:
            continue
        for item in (items if f.metadata.get("many") else (items,)):
            child = etree.SubElement(element, f"{{{namespace}}}{xml}")
            if dataclasses.is_dataclass(item):
                _fill(child, item, namespace)
            elif isinstance(item, bool):
                child.text = "true" if item else "false"
            else:
                child.text = str(item)


def own_entry(self_href: str, up_href: str, kind: str, content: etree._Element, *, title: str | None,
              published: datetime | int, updated: datetime | int,
              related: Iterable[tuple[str, str]] = ()) -> bytes:
    """An Atom entry for one of the sandbox's own resources (typed links, ESPI 3.3+)."""
    entry = etree.Element(f"{{{ATOM}}}entry", nsmap={None: ATOM, "espi": ESPI})
    etree.SubElement(entry, f"{{{ATOM}}}id").text = urn(self_href)
    for rel, href, link_type in [("self", self_href, f"espi-entry/{kind}"), ("up", up_href, f"espi-feed/{kind}"),
                                 *[("related", h, t) for h, t in related]]:
        etree.SubElement(entry, f"{{{ATOM}}}link", rel=rel, href=href, type=link_type)
    if title:
        etree.SubElement(entry, f"{{{ATOM}}}title").text = title
    etree.SubElement(entry, f"{{{ATOM}}}content").append(content)
    etree.SubElement(entry, f"{{{ATOM}}}published").text = atom_time(published)
    etree.SubElement(entry, f"{{{ATOM}}}updated").text = atom_time(updated)
    return etree.tostring(entry, encoding="UTF-8")


def feed_document(self_href: str, kind: str, title: str, entries: Iterable[bytes],
                  updated: datetime | None = None) -> bytes:
    """A feed whose entries are ``entries`` (serialised entry elements, each carrying its namespaces)."""
    head = (f'<feed xmlns="{ATOM}" xmlns:espi="{ESPI}">\n<id>{urn(self_href)}</id>'
            f"<title>{_escape(title)}</title><updated>{atom_time(updated or datetime.now(UTC))}</updated>"
            f'<link rel="self" href="{_escape(self_href)}" type="espi-feed/{kind}"/>\n').encode()
    parts = [XML_DECLARATION, head]
    for entry in entries:
        parts += [entry, b"\n"]
    parts.append(b"</feed>\n")
    return b"".join(parts)


def entry_document(entry: bytes) -> bytes:
    return XML_DECLARATION + entry + b"\n"


def bare_document(element: etree._Element) -> bytes:
    return XML_DECLARATION + etree.tostring(element, encoding="UTF-8") + b"\n"


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# ----------------------------------------------------------------------------------------------------------------
# Query parameters (FB_37)
# ----------------------------------------------------------------------------------------------------------------
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")
_NUMBER = re.compile(r"\d+")
DATE_PARAMETERS = ("published-min", "published-max", "updated-min", "updated-max")
NUMBER_PARAMETERS = ("max-results", "start-index", "depth")


class QueryError(ValueError):
    """A query parameter with an invalid value (answered 400)."""


@dataclass(frozen=True)
class Query:
    published_min: datetime | None = None
    published_max: datetime | None = None
    updated_min: datetime | None = None
    updated_max: datetime | None = None
    max_results: int | None = None
    start_index: int | None = None
    depth: int | None = None

    @property
    def empty(self) -> bool:
        return self == Query()

    def matches(self, record: EntryRecord) -> bool:
        for moment, low, high in ((record.published, self.published_min, self.published_max),
                                  (record.updated, self.updated_min, self.updated_max)):
            if low is None and high is None:
                continue
            if moment is None or (low is not None and moment < low) or (high is not None and moment > high):
                return False
        return True

    def select(self, records: list[EntryRecord]) -> list[EntryRecord]:
        """The records in the window, then ``start-index`` (1-based), then at most ``max-results``/``depth``."""
        chosen = [r for r in records if self.matches(r)]
        start = max((self.start_index or 1) - 1, 0)
        limits = [n for n in (self.max_results, self.depth) if n is not None]
        end = start + min(limits) if limits else None
        return chosen[start:end]


def parse_query(params: Mapping[str, str]) -> Query:
    """The FB_37 parameters of a request (first value of each); :class:`QueryError` for an invalid value."""
    values: dict[str, Any] = {}
    for name in DATE_PARAMETERS:
        if name in params:
            text = params[name]
            if not _DATE.fullmatch(text):
                raise QueryError(f"{name}={text!r} is not YYYY-MM-DDThh:mm:ssZ")
            try:
                values[name.replace("-", "_")] = datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
            except ValueError:
                raise QueryError(f"{name}={text!r} is not a date") from None
    for name in NUMBER_PARAMETERS:
        if name in params:
            text = params[name]
            if not _NUMBER.fullmatch(text) or len(text) > 9:
                raise QueryError(f"{name}={text!r} is not a number")
            values[name.replace("-", "_")] = int(text)
    return Query(**values)


def batch_entries(records: list[EntryRecord], usage_points: set[int] | None, query: Query) -> list[bytes]:
    """A Batch answer over ``records`` (one customer's document): entries of the selected UsagePoints (None: all)
    and shared ones, in document order, with the query selecting IntervalBlock entries."""
    def wanted(record: EntryRecord) -> bool:
        return usage_points is None or record.usage_point is None or record.usage_point in usage_points

    blocks = [r for r in records if r.kind == "IntervalBlock" and wanted(r)]
    kept = {r.index for r in query.select(blocks)} if not query.empty else {r.index for r in blocks}
    return [r.xml for r in records if wanted(r) and (r.kind != "IntervalBlock" or r.index in kept)]
