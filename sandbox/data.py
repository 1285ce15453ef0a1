"""The sandbox customers' data: ESPI Atom feeds read once, kept as the source's entries, attributed to UsagePoints.

A :class:`DataSet` is one Green Button document held as its ``atom:entry`` elements, each serialised on its own
(lxml, with the namespace declarations it needs) so that a Batch or resource answer is the source's entries put
into a new feed envelope: contents, ids, links and times are the custodian's own, never rebuilt. Which UsagePoint
an entry belongs to comes from the library's link graph (:mod:`espi.feed`); IntervalBlock entries are attributed
through their MeterReading.

Ids in the sandbox's resource-level paths (``Subscription/{s}/UsagePoint/{u}/MeterReading/{m}/…``) are the last
segment of the entry's ``self`` href when that is unique among its siblings and URL-safe (so the generator's
``…/UsagePoint/1`` is UsagePoint ``1``), else the entry's 1-based position among them.

Customers come from a directory (one per file holding UsagePoints; a customer-data file is paired with the one
usage file sharing its name's first ``_``-separated word, e.g. ``hydroone_…``), from explicit files, or from the
deterministic generator (:mod:`espi.generate`). A generated feed stamps one publication time on everything, so the
sandbox stamps each generated IntervalBlock entry's ``published``/``updated`` with the end of its interval, as a
custodian publishes a day's readings once the day is over (the GBA harness sample ``resource_filteredMinMax``
looks the same): ``published-min``/``-max`` then select days.
"""

from __future__ import annotations

import io
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from pathlib import Path

from lxml import etree

from espi.atom import Entry
from espi.codes import SERVICE_KIND
from espi.errors import EspiError
from espi.feed import BlockEntryHeader, read_feed
from espi.generate import FeedSpec, write_feed
from espi.namespaces import local_name
from espi.xmlsafe import Source, secure_iterparse, secure_parse

log = logging.getLogger("greenbridge.sandbox")

#: Kinds attributed to one UsagePoint; everything else (ReadingType, LocalTimeParameters, customer data…) is shared.
USAGE_POINT_KINDS = frozenset({"UsagePoint", "MeterReading", "IntervalBlock", "UsageSummary",
                               "ElectricPowerUsageSummary", "ElectricPowerQualitySummary"})
#: Resource-level collections below a UsagePoint (espi.md §3.1)
USAGE_POINT_CHILDREN = ("MeterReading", "UsageSummary", "ElectricPowerUsageSummary", "ElectricPowerQualitySummary")
CUSTOMER_KINDS = frozenset({"Customer", "RetailCustomer", "CustomerAccount", "CustomerAgreement", "ServiceLocation",
                            "ServiceSupplier", "EndDevice", "Meter", "Statement", "ProgramDateIdMappings"})
_SAFE_ID = re.compile(r"[A-Za-z0-9._~-]+")


@dataclass(slots=True)
class EntryRecord:
    """One source entry: its bytes and what the sandbox needs to select it."""

    index: int
    kind: str
    xml: bytes
    self_href: str | None
    published: datetime | None
    updated: datetime | None
    #: position in DataSet.usage_points of the UsagePoint it belongs to; None for shared entries
    usage_point: int | None = None
    #: entry index of the MeterReading of an IntervalBlock entry
    parent: int | None = None
    #: id in the resource-level paths
    rid: str = ""


@dataclass
class DataSet:
    """One document's entries in document order, and its UsagePoints (entry indexes)."""

    name: str
    root: str
    entries: list[EntryRecord]
    usage_points: list[int] = field(default_factory=list)
    #: what each UsagePoint is, for people (service kind and entry title), parallel to usage_points
    usage_point_labels: list[str] = field(default_factory=list)

    @property
    def usage_point_ids(self) -> list[str]:
        return [self.entries[i].rid for i in self.usage_points]

    @property
    def usage_point_choices(self) -> list[tuple[str, str]]:
        """(id, label) of every UsagePoint, for the consent page."""
        return list(zip(self.usage_point_ids, self.usage_point_labels, strict=True))

    def usage_point_position(self, rid: str) -> int | None:
        for position, index in enumerate(self.usage_points):
            if self.entries[index].rid == rid:
                return position
        return None

    def kinds(self) -> set[str]:
        return {e.kind for e in self.entries}

    def children(self, position: int, kind: str) -> list[EntryRecord]:
        return [e for e in self.entries if e.usage_point == position and e.kind == kind]

    def blocks_of(self, meter_reading: EntryRecord) -> list[EntryRecord]:
        return [e for e in self.entries if e.kind == "IntervalBlock" and e.parent == meter_reading.index]

    def shared(self, kind: str) -> list[EntryRecord]:
        return [e for e in self.entries if e.kind == kind]


def _kind(entry: Entry) -> str:
    if entry.resources:
        return entry.resources[0].name
    return "IntervalBlock" if entry.block_count else "unknown"


def load_dataset(source: Source, name: str) -> DataSet:
    """Reads one document: entries (bytes kept), UsagePoint attribution from the link graph, resource-level ids."""
    feed = read_feed(source, name=name)  # ``source`` is read twice: a path or bytes, not a stream
    raw: list[bytes] = []
    for _event, element in secure_iterparse(source, events=("end",), tag="{*}entry", name=name):
        raw.append(etree.tostring(element, encoding="UTF-8", with_tail=False))
        element.clear(keep_tail=False)
    if feed.root not in ("feed", "entry") or len(raw) != len(feed.entries):
        return DataSet(name, feed.root, [])
    records = [EntryRecord(e.seq, _kind(e), raw[e.seq], e.self_href, e.published, e.updated) for e in feed.entries]
    dataset = DataSet(name, feed.root, records)
    graph = feed.graph
    position_of: dict[int, int] = {}  # UsagePointNode.index → position in dataset.usage_points
    for node in graph.usage_points:
        if node.entry is not None:
            position_of[node.index] = len(dataset.usage_points)
            dataset.usage_points.append(node.entry.seq)
            dataset.usage_point_labels.append(_label(node))
            records[node.entry.seq].usage_point = position_of[node.index]

    def attribute(entry: Entry | None, node) -> None:
        if entry is not None and node is not None and records[entry.seq].kind in USAGE_POINT_KINDS:
            records[entry.seq].usage_point = position_of.get(node.index)

    for node in graph.usage_points:
        for mr in node.meter_readings:
            attribute(mr.entry, node)
        for entry, _value in [*node.summaries, *node.quality_summaries]:
            attribute(entry, node)
    for entry in feed.entries:
        if entry.block_count and records[entry.seq].kind == "IntervalBlock":
            mr = graph.meter_reading_for(BlockEntryHeader.of(entry))
            if mr is not None:
                records[entry.seq].usage_point = position_of.get(mr.usage_point.index)
                records[entry.seq].parent = mr.entry.seq if mr.entry is not None else None
    _assign_ids(dataset)
    return dataset


def _label(node) -> str:
    category = node.usage_point.service_category if node.usage_point is not None else None
    kind = category.kind if category is not None else None
    name = SERVICE_KIND.name(kind) if kind is not None else None
    parts = [name or "service"]
    if node.entry.title:
        parts.append(node.entry.title)
    return " — ".join(parts)


def _assign_ids(dataset: DataSet) -> None:
    groups: dict[tuple, list[EntryRecord]] = defaultdict(list)
    for record in dataset.entries:
        if record.kind == "UsagePoint":
            key: tuple = ("UsagePoint",)
        elif record.kind == "IntervalBlock":
            key = ("IntervalBlock", record.parent, record.usage_point)
        elif record.kind in USAGE_POINT_KINDS:
            key = (record.kind, record.usage_point)
        else:
            key = (record.kind,)
        groups[key].append(record)
    for members in groups.values():
        tails = [_tail(r.self_href) for r in members]
        unique = len(set(tails)) == len(tails) and all(tails)
        for position, (record, tail) in enumerate(zip(members, tails, strict=True), start=1):
            record.rid = tail if unique else str(position)


def _tail(href: str | None) -> str | None:
    if not href:
        return None
    tail = href.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    return tail if _SAFE_ID.fullmatch(tail) else None


# ----------------------------------------------------------------------------------------------------------------
# Generated data
# ----------------------------------------------------------------------------------------------------------------
def generated_spec(number: int, days: int, start: date, base_url: str, traits: Iterable[str] = ()) -> FeedSpec:
    """The generator settings of generated customer ``number`` (1-based): three profiles in turn.

    1: one electric UsagePoint with net metering (15-minute readings); 2: three UsagePoints, electric, gas and
    water; 3: one electric UsagePoint with hourly readings, estimated readings and gaps. ``seed`` is the number,
    so every customer's readings differ and never change between runs. ``traits`` (espi.generate.TRAITS) are added
    where the profile can carry them, in the order given; the others are left out for this customer.
    """
    profile = (number - 1) % 3
    common = {"days": days, "start": start, "seed": number, "base_url": base_url, "subscription": "1"}
    if profile == 0:
        spec = FeedSpec(usage_points=1, net_metering=True, **common)
    elif profile == 1:
        spec = FeedSpec(usage_points=3, commodity="mixed", **common)
    else:
        spec = FeedSpec(usage_points=1, interval=3600, quality_gaps=True, **common)
    for trait in traits:
        try:
            spec = replace(spec, traits=spec.traits | {trait})
        except ValueError:
            continue  # this profile cannot carry it (e.g. no second series for directional summaries)
    return spec


def _atom_time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def generated_document(spec: FeedSpec) -> bytes:
    """The generator's feed with each IntervalBlock entry published (and updated) when its interval ended."""
    text = io.StringIO()
    write_feed(text, spec)
    tree = secure_parse(text.getvalue().encode("utf-8"), name="generated feed")
    for entry in tree.getroot().iterfind("{*}entry"):
        ends = []
        for block in entry.iterfind("{*}content/{*}IntervalBlock"):
            start, duration = block.findtext("{*}interval/{*}start"), block.findtext("{*}interval/{*}duration")
            if start and duration:
                ends.append(int(start) + int(duration))
        if not ends:
            continue
        for child in entry:
            if isinstance(child.tag, str) and local_name(child.tag) in ("published", "updated"):
                child.text = _atom_time(max(ends))
    return etree.tostring(tree, encoding="UTF-8", xml_declaration=True)


# ----------------------------------------------------------------------------------------------------------------
# Customers
# ----------------------------------------------------------------------------------------------------------------
@dataclass
class Customer:
    """A sandbox customer: sign-in id and password, RetailCustomer id, usage data, optional customer data."""

    number: int
    login: str
    password: str
    name: str
    source: str
    usage: DataSet
    customer_data: DataSet | None = None
    #: generator settings of a generated customer (its data can grow: /sandbox/customers/{id}/advance)
    spec: FeedSpec | None = None


def _customers_from_directory(directory: Path) -> tuple[list[tuple[Path, DataSet]], list[tuple[Path, DataSet]]]:
    usage, customer = [], []
    for path in sorted(directory.glob("*.xml")):
        try:
            dataset = load_dataset(path, name=path.name)
        except EspiError as error:
            log.warning("sandbox: %s skipped: %s", path.name, error)
            continue
        if dataset.usage_points:
            usage.append((path, dataset))
        elif dataset.root == "feed" and dataset.kinds() & CUSTOMER_KINDS:
            customer.append((path, dataset))
        else:
            log.debug("sandbox: %s holds no UsagePoint; not a customer", path.name)
    return usage, customer


def _login(stem: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-") or "customer"
    login, n = base, 2
    while login in taken:
        login, n = f"{base}-{n}", n + 1
    taken.add(login)
    return login


def load_customers(config) -> list[Customer]:
    """Every customer the configuration describes: explicit files, a directory, then generated ones."""
    customers: list[Customer] = []
    taken: set[str] = set()

    def add(login: str, password: str, name: str, source: str, usage: DataSet, customer_data: DataSet | None = None,
            spec: FeedSpec | None = None) -> None:
        number = len(customers) + 1
        customers.append(Customer(number, _login(login, taken), password or config.customer_password,
                                  name or login, source, usage, customer_data, spec))

    for spec in config.customers:
        usage = load_dataset(spec.usage, name=spec.usage.name)
        if not usage.usage_points:
            raise EspiError(f"{spec.usage}: no UsagePoint entry; not usage data for customer {spec.id}")
        extra = load_dataset(spec.customer_data, name=spec.customer_data.name) if spec.customer_data else None
        add(spec.id, spec.password, spec.name, spec.usage.name, usage, extra)
    if config.data_dir is not None:
        if not Path(config.data_dir).is_dir():
            raise EspiError(f"data directory {config.data_dir} does not exist")
        usage_files, customer_files = _customers_from_directory(Path(config.data_dir))
        by_prefix: dict[str, list[int]] = defaultdict(list)
        for i, (path, _dataset) in enumerate(usage_files):
            by_prefix[path.stem.split("_", 1)[0]].append(i)
        pairs: dict[int, DataSet] = {}
        for path, dataset in customer_files:
            candidates = by_prefix.get(path.stem.split("_", 1)[0], [])
            if len(candidates) == 1 and candidates[0] not in pairs:
                pairs[candidates[0]] = dataset
            else:
                log.info("sandbox: customer data %s matches no single usage file; not served", path.name)
        for i, (path, dataset) in enumerate(usage_files):
            add(path.stem, "", path.stem, path.name, dataset, pairs.get(i))
    for n in range(1, config.generated_count + 1):
        number = len(customers) + 1
        spec = generated_spec(n, config.generate_days, config.generate_start,
                              f"{config.resource_endpoint}/RetailCustomer/{number}", config.generate_traits)
        dataset = load_dataset(generated_document(spec), name=f"generated customer {n}")
        add(f"customer-{n}", "", f"Generated customer {n}", f"generated ({spec.commodity}, {spec.days} days)",
            dataset, spec=spec)
    return customers


def grow_generated(customer: Customer, days: int) -> tuple[DataSet, list[EntryRecord]]:
    """The generated customer's data ``days`` days longer, and the entries that are new or changed."""
    if customer.spec is None:
        raise ValueError("only generated customers grow")
    spec = replace(customer.spec, days=customer.spec.days + days)
    dataset = load_dataset(generated_document(spec), name=customer.usage.name)
    customer.spec = spec
    return dataset, changed_entries(customer.usage, dataset)


def changed_entries(before: DataSet, after: DataSet) -> list[EntryRecord]:
    """Entries of ``after`` whose ``self`` href is new or whose bytes differ from ``before``'s."""
    old = {e.self_href: e.xml for e in before.entries if e.self_href}
    return [e for e in after.entries if e.self_href is None or old.get(e.self_href) != e.xml]


def merge_upload(current: DataSet, uploaded: bytes, name: str) -> DataSet:
    """An upload (MDM → DC, ``POST Batch/RetailCustomer/{id}/UsagePoint``) merged into a customer's data.

    Entries with a ``self`` href already present replace that entry in place; others are appended in their order.
    The result is read again as one document, so its link graph and ids are recomputed.
    """
    incoming = load_dataset(uploaded, name=name)
    replaced = {e.self_href: e.xml for e in incoming.entries if e.self_href}
    known = {e.self_href for e in current.entries if e.self_href}
    parts = [replaced.get(e.self_href, e.xml) if e.self_href else e.xml for e in current.entries]
    parts += [e.xml for e in incoming.entries if not e.self_href or e.self_href not in known]
    document = b"".join([b'<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">',
                         b"<id>urn:uuid:00000000-0000-0000-0000-000000000000</id><title>merged</title>",
                         b"<updated>2000-01-01T00:00:00Z</updated>", *parts, b"</feed>"])
    return load_dataset(document, name=current.name)


def window(records: Iterable[EntryRecord]) -> tuple[datetime | None, datetime | None]:
    """Earliest and latest ``published`` of IntervalBlock entries among ``records``."""
    times = [r.published for r in records if r.kind == "IntervalBlock" and r.published is not None]
    return (min(times), max(times)) if times else (None, None)
