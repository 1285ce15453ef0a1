"""The per-subscription fan-out of a Green Button bulk feed (ESPI FB_34 SFTP bulk, FB_35 REST ``Batch/Bulk``).

A bulk feed (espi.md §4.2, §7) is one Atom feed holding the data of every subscription whose Authorization scope
names the same ``BR={bulkId}``. A third party has to store each customer's data under that customer's grant, so
``split_bulk`` cuts the bulk into one standalone Atom feed per subscription, which the translator
(``greenbridge translate``, :func:`bridge.from_espi.translate`) reads like any Batch/Subscription answer.

Which subscription an entry belongs to comes from its hrefs: an entry belongs to subscription ``S`` when its
``self`` href (else its ``up`` href) has the path segments ``Subscription/{S}`` — the resource-level form
``…/resource/Subscription/{S}/UsagePoint/{U}/…`` of OpenESPI and Enbridge, or ``…/Batch/Subscription/{S}``.
Entries without such a segment are not any one customer's:

* shared resources (ReadingType, LocalTimeParameters, ApplicationInformation, ProgramIdMappings) are copied into
  every part that links to them — the part's ``related`` links name their ``self`` or ``up`` href, compared as exact
  strings as in espi.md §2.3, or their own ``related`` links name an href of the part's subscription — and into
  every part when no part links to them (they are small and harmless);
* anything else (usage or customer data whose hrefs name no subscription) goes to the parts the caller's
  ``owners_of`` names for its ``self`` (else ``up``) href, when the caller knows who holds it: custodians that write
  ``…/RetailCustomer/{C}/UsagePoint/{U}/…`` hrefs name the customer and the UsagePoint but no subscription
  (:func:`usage_point_ref`, :func:`retail_customer_of`), and only the caller knows which of its authorizations
  hold them. Such *owner parts* are named by the owners and may share entries (one UsagePoint shared under two
  authorizations goes to both). Otherwise it goes to the one part that links to it; linked from no part, or from
  several, it is put in no part and reported in ``BulkSplit.unassigned``: copying a customer's readings into every
  part would hand them to every grant.

Shared entries may come after the entries that link to them, so the file is read twice: the first pass keeps only
small per-entry facts (hrefs of entries without a subscription, the ``related`` hrefs of each part, one integer
per entry), the second copies each entry to its part files as it goes. Memory does not grow with the number of
readings; both passes parse through :mod:`espi.xmlsafe` (a DOCTYPE is refused). Entries are copied as they are:
each is serialised on its own with the namespace declarations it uses (like the sandbox's data sets), so it stays
valid inside its part's new envelope.
"""

from __future__ import annotations

import os
import re
import uuid
from array import array
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from espi.atom import BlockRead, FeedHeader, FeedReader
from espi.errors import DocumentError, NotEspiError
from espi.model import Diagnostics
from espi.namespaces import ATOM, ESPI, local_name
from espi.private_files import open_private, private_dir
from espi.xmlsafe import secure_document

#: Resources any subscription may link to; without a subscription in their hrefs they are copied, not owned.
SHARED_KINDS = frozenset({"ReadingType", "LocalTimeParameters", "ApplicationInformation", "ProgramIdMappings"})
_NAMESPACE = uuid.UUID("3f0e5c1a-8a52-5b8e-9b61-62756c6b7370")  # ids of the parts' feeds
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: Part files open at once; entries of one subscription are usually contiguous, so few reopenings are needed.
MAX_OPEN_PARTS = 64


class BulkSplitError(DocumentError):
    """The bulk file cannot be split (not an Atom feed, nested entries, changed while being read)."""


@dataclass
class BulkPart:
    """One part: a subscription's (``subscription`` set) or an owner's (``owner`` set, the name ``owners_of`` gave);
    its file, and what was written to it."""

    subscription: str | None
    path: Path
    self_href: str
    #: entries written, shared copies included
    entries: int = 0
    #: copies of shared entries among them
    shared_entries: int = 0
    #: IntervalReadings in the part
    readings: int = 0
    owner: str | None = None

    @property
    def name(self) -> str:
        """What the part is for, for messages: ``subscription S`` or ``owner O``."""
        return f"subscription {self.subscription}" if self.owner is None else f"owner {self.owner}"


@dataclass(frozen=True)
class UnassignedEntry:
    """An entry of the bulk that was put in no part, and why."""

    seq: int
    line: int | None
    self_href: str | None
    kinds: tuple[str, ...]
    readings: int
    reason: str


@dataclass
class BulkSplit:
    """What ``split_bulk`` wrote. ``parts`` maps each subscription id (in order of first appearance in the bulk) to
    its part file; ``part_info`` has the same keys and tells what each part holds; ``owner_parts`` holds the parts
    of the owners ``owners_of`` named, by owner."""

    source: str
    self_href: str | None
    parts: dict[str, Path] = field(default_factory=dict)
    part_info: dict[str, BulkPart] = field(default_factory=dict)
    owner_parts: dict[str, BulkPart] = field(default_factory=dict)
    #: entries and IntervalReadings in the bulk
    entries: int = 0
    readings: int = 0
    #: entries without a subscription in their hrefs that were copied as shared resources
    shared_entries: int = 0
    #: of those, the ones no part links to (copied into every part)
    unlinked_shared_entries: int = 0
    unassigned: list[UnassignedEntry] = field(default_factory=list)
    diagnostics: Diagnostics | None = None

    @property
    def entry_counts(self) -> dict[str, int]:
        """Subscription id → entries in its part (shared copies included)."""
        return {subscription: part.entries for subscription, part in self.part_info.items()}

    @property
    def reading_counts(self) -> dict[str, int]:
        """Subscription id → IntervalReadings in its part."""
        return {subscription: part.readings for subscription, part in self.part_info.items()}

    @property
    def unassigned_readings(self) -> int:
        return sum(e.readings for e in self.unassigned)


def _segments(href: str | None) -> list[str]:
    if not href:
        return []
    path = href.strip().split("#", 1)[0].split("?", 1)[0]
    return path.split("/")


def subscription_of_href(href: str | None) -> str | None:
    """The ``S`` of the first ``Subscription/{S}`` path segment pair of an href, else None."""
    segments = _segments(href)
    for i, segment in enumerate(segments[:-1]):
        if segment == "Subscription" and segments[i + 1]:
            return segments[i + 1]
    return None


def usage_point_ref(href: str | None) -> tuple[str | None, str] | None:
    """``(C, U)`` of an href with the path segments ``UsagePoint/{U}`` (the first such pair), C being the ``{C}`` of a
    ``RetailCustomer/{C}`` pair before it (None without one): ``…/RetailCustomer/7/UsagePoint/2/MeterReading/1`` →
    ``("7", "2")``, ``…/Subscription/5/UsagePoint/2`` → ``(None, "2")``. None when no UsagePoint is named."""
    segments = _segments(href)
    customer = None
    for i, segment in enumerate(segments[:-1]):
        if segment == "RetailCustomer" and segments[i + 1] and customer is None:
            customer = segments[i + 1]
        elif segment == "UsagePoint" and segments[i + 1]:
            return customer, segments[i + 1]
    return None


def retail_customer_of(href: str | None) -> str | None:
    """The ``C`` of the first ``RetailCustomer/{C}`` path segment pair of an href (a customerResourceURI
    ``…/Batch/RetailCustomer/{C}``, or a resource below a customer), else None."""
    segments = _segments(href)
    for i, segment in enumerate(segments[:-1]):
        if segment == "RetailCustomer" and segments[i + 1]:
            return segments[i + 1]
    return None


def subscription_id_of(uri: str | None) -> str | None:
    """The subscription id ``S`` of a ``…/Batch/Subscription/{S}[/…][?…]`` URI (an Authorization's resourceURI, a
    BatchList entry), else None. This is how a caller maps the parts of ``split_bulk`` to grants."""
    if not uri:
        return None
    segments = urlsplit(uri.strip()).path.split("/")
    for i in range(len(segments) - 2, 0, -1):
        if segments[i - 1] == "Batch" and segments[i] == "Subscription" and segments[i + 1]:
            return segments[i + 1]
    return None


@dataclass(slots=True)
class _Loose:
    """An entry without a subscription in its hrefs (first-pass facts)."""

    seq: int
    line: int | None
    self_href: str | None
    up_href: str | None
    related: tuple[str, ...]
    kinds: tuple[str, ...]
    readings: int
    targets: set[int] = field(default_factory=set)

    @property
    def shared(self) -> bool:
        return bool(self.kinds) and all(kind in SHARED_KINDS for kind in self.kinds)


@dataclass(slots=True)
class _PartState:
    part: BulkPart
    related: set[str]
    partial: Path
    started: bool = False
    last: int = -1  # the seq of the last entry written to this part (known after the first pass)
    finished: bool = False


class _Writers:
    """Part files written through a small pool of open handles (least recently used closed first)."""

    def __init__(self, states: list[_PartState], header_of, max_open: int = MAX_OPEN_PARTS):
        self.states = states
        self.header_of = header_of
        self.max_open = max(1, max_open)
        self.open: OrderedDict[int, IO[bytes]] = OrderedDict()

    def handle(self, index: int) -> IO[bytes]:
        handle = self.open.get(index)
        if handle is not None:
            self.open.move_to_end(index)
            return handle
        state = self.states[index]
        handle = open_private(state.partial, "ab" if state.started else "wb")  # pooled, closed by close()
        if not state.started:
            handle.write(self.header_of(state.part))
            state.started = True
        self.open[index] = handle
        while len(self.open) > self.max_open:
            _old, evicted = self.open.popitem(last=False)
            evicted.close()
        return handle

    def write(self, index: int, data: bytes) -> None:
        self.handle(index).write(data)

    def close_one(self, index: int) -> None:
        handle = self.open.pop(index, None)
        if handle is not None:
            handle.close()

    def close(self) -> None:
        while self.open:
            _index, handle = self.open.popitem(last=False)
            handle.close()


def _file_name(key: str, taken: set[str], prefix: str = "subscription") -> str:
    stem = _UNSAFE_NAME.sub("-", key).strip("-.") or prefix
    name, n = f"{prefix}-{stem}.xml", 2
    while name.lower() in taken:
        name, n = f"{prefix}-{stem}-{n}.xml", n + 1
    taken.add(name.lower())
    return name


def _atom_time(moment: datetime | None) -> str:
    return (moment or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _part_header(header: FeedHeader, part: BulkPart) -> bytes:
    what = f"Subscription {part.subscription}" if part.owner is None else f"Part {part.owner}"
    title = f"{header.title or 'Green Button Bulk Feed'} — {what}"
    links = [f"<link rel=\"self\" href={quoteattr(part.self_href)} type=\"espi-feed/Subscription\"/>"]
    for link in header.links:  # e.g. the GBA certification link (espi.md §2.1)
        if link.rel != "self" and link.href:
            kind = f" type={quoteattr(link.type)}" if link.type else ""
            links.append(f"<link rel={quoteattr(link.rel or 'alternate')} href={quoteattr(link.href)}{kind}/>")
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns="{ATOM}" xmlns:espi="{ESPI}">\n'
            f"<id>urn:uuid:{uuid.uuid5(_NAMESPACE, part.self_href)}</id><title>{escape(title)}</title>"
            f"<updated>{_atom_time(header.updated)}</updated>{''.join(links)}\n").encode()


#: ``owners_of(href)``: the names of the parts an entry with this ``self`` (or ``up``) href belongs to, when its
#: hrefs name no subscription; () when the caller knows none.
OwnersOf = Callable[[str], Collection[str]]


def split_bulk(path: str | os.PathLike, out_dir: str | os.PathLike, *, max_open: int = MAX_OPEN_PARTS,
               on_part: Callable[[BulkPart], None] | None = None, owners_of: OwnersOf | None = None) -> BulkSplit:
    """Splits the bulk feed at ``path`` into one Atom feed per subscription (and per owner that ``owners_of``
    names for entries without a subscription in their hrefs, see the module docstring), written into ``out_dir``.

    Part files are named ``subscription-{S}.xml`` (owner parts ``part-{O}.xml``; characters outside
    ``[A-Za-z0-9._-]`` replaced) and written under a temporary name, renamed when complete. A part is complete as
    soon as the second pass has written the last entry the first pass found for it (custodians write a bulk
    subscription by subscription, so parts complete one after the other): ``on_part(part)`` is called then, so its
    consumer can start while the split goes on. On an error, parts not yet complete are removed; completed ones
    (already handed to ``on_part``) stay. Errors are :class:`espi.errors.EspiError` naming the file and line (not
    well-formed XML, a DOCTYPE, not an Atom feed). ``owners_of`` is asked once per entry without a subscription in
    its hrefs (shared resources excepted; with its ``up`` href when its ``self`` href names neither a UsagePoint nor
    a customer), and once per ``related`` href naming a UsagePoint of those that still
    have no part (a reverse link; a link to a customer-level resource says nothing of which authorization holds
    the entry).
    """
    source = os.fspath(path)
    out = private_dir(out_dir)
    result, states, owner, targets, loose, header = _first_pass(source, out, owners_of)
    _resolve(loose, states, result, owners_of)
    for seq, index in enumerate(owner):
        if index >= 0:
            states[index].last = seq
        elif index <= _MANY:
            for i in targets[_MANY - index]:
                states[i].last = seq
    for seq, entry in loose.items():
        for index in entry.targets:
            states[index].last = max(states[index].last, seq)
    writers = _Writers(states, lambda part: _part_header(header, part), max_open)

    def finish(index: int) -> None:
        state = states[index]
        writers.write(index, b"</feed>\n")
        writers.close_one(index)
        os.replace(state.partial, state.part.path)
        state.finished = True
        if on_part is not None:
            on_part(state.part)

    try:
        _second_pass(source, owner, targets, loose, states, writers, result, finish)
        for index, state in enumerate(states):
            if not state.finished:
                finish(index)
    except BaseException:
        writers.close()
        for state in states:
            state.partial.unlink(missing_ok=True)
        raise
    return result


#: ``owner`` values: ≥ 0 the one part of an entry, -1 an entry without a subscription (its facts in ``loose``),
#: ≤ ``_MANY`` an entry of several owner parts: ``targets[_MANY - value]`` (interned, one tuple per distinct set).
_LOOSE, _MANY = -1, -2


def _first_pass(source: str, out: Path, owners_of: OwnersOf | None
                ) -> tuple[BulkSplit, list[_PartState], array, list[tuple[int, ...]], dict[int, _Loose], FeedHeader]:
    """Per entry: its part(s) (``owner``; entries without a subscription nor owner get their facts in ``loose``)."""
    reader = FeedReader(source, name=source)
    states: list[_PartState] = []
    index_of: dict[tuple[str, str], int] = {}  # ("s", subscription) or ("o", owner) → index in states
    owner = array("q")
    targets: list[tuple[int, ...]] = []
    target_index: dict[tuple[int, ...], int] = {}
    loose: dict[int, _Loose] = {}
    taken: set[str] = set()
    pending_readings = 0
    checked = False
    readings = 0

    def part_index(key: tuple[str, str]) -> int:
        index = index_of.get(key)
        if index is None:
            index = index_of[key] = len(states)
            kind, name = key
            file_name = _file_name(name, taken, "subscription" if kind == "s" else "part")
            part = BulkPart(name, out / file_name, "") if kind == "s" else \
                BulkPart(None, out / file_name, "", owner=name)
            states.append(_PartState(part, set(), out / f".{file_name}.part"))
        return index

    for item in reader:
        if not checked:
            _check_root(reader, source)
            checked = True
        if isinstance(item, BlockRead):
            pending_readings += len(item.block)
            continue
        readings += pending_readings
        subscription = subscription_of_href(item.self_href)
        if subscription is None:
            subscription = subscription_of_href(item.up_href)
        indexes: tuple[int, ...] = ()
        if subscription is not None:
            indexes = (part_index(("s", subscription)),)
        elif owners_of is not None and not _all_shared(item.kinds):
            names = owners_of(item.self_href) if item.self_href else ()
            if not names and item.up_href and not _names_a_holder(item.self_href):
                names = owners_of(item.up_href)  # the self href said nothing of whose the entry is
            indexes = tuple(sorted({part_index(("o", name)) for name in names}))
        if not indexes:
            owner.append(_LOOSE)
            loose[item.seq] = _Loose(item.seq, item.line, item.self_href, item.up_href, item.related, item.kinds,
                                     pending_readings)
        else:
            if len(indexes) == 1:
                owner.append(indexes[0])
            else:
                interned = target_index.get(indexes)
                if interned is None:
                    interned = target_index[indexes] = len(targets)
                    targets.append(indexes)
                owner.append(_MANY - interned)
            for index in indexes:
                state = states[index]
                state.related.update(item.related)
                state.part.entries += 1
                state.part.readings += pending_readings
        pending_readings = 0
    if not checked:
        _check_root(reader, source)
    header = reader.header
    base = header.self_href or Path(source).resolve().as_uri()
    for state in states:
        part = state.part
        if part.owner is not None:
            state.part.self_href = f"{base.split('#', 1)[0]}#part-{part.owner}"
            continue
        # a Batch/Subscription/{S} answer split (one part) keeps its own URI
        part.self_href = header.self_href if subscription_id_of(header.self_href) == part.subscription else \
            f"{base.rstrip('/')}/Subscription/{part.subscription}"
    subscriptions = [s.part for s in states if s.part.owner is None]
    result = BulkSplit(source, header.self_href, {p.subscription: p.path for p in subscriptions},
                       {p.subscription: p for p in subscriptions}, {s.part.owner: s.part for s in states
                                                                     if s.part.owner is not None},
                       entries=len(owner), readings=readings, diagnostics=reader.diagnostics)
    return result, states, owner, targets, loose, header


def _names_a_holder(href: str | None) -> bool:
    return usage_point_ref(href) is not None or retail_customer_of(href) is not None


def _all_shared(kinds: tuple[str, ...]) -> bool:
    return bool(kinds) and all(kind in SHARED_KINDS for kind in kinds)


def _check_root(reader: FeedReader, source: str) -> None:
    if reader.root != "feed":
        raise NotEspiError(f"not a bulk feed: the document is a bare <{reader.root}>, expected an Atom <feed>",
                           source, 1)


def _resolve(loose: dict[int, _Loose], states: list[_PartState], result: BulkSplit,
             owners_of: OwnersOf | None) -> None:
    """Which parts each entry without a subscription goes to (links followed until nothing changes)."""
    index_of = {("s", state.part.subscription) if state.part.owner is None else ("o", state.part.owner): i
                for i, state in enumerate(states)}

    def parts_named_by(href: str) -> set[int]:
        subscription = subscription_of_href(href)
        if subscription is not None:
            index = index_of.get(("s", subscription))
            return set() if index is None else {index}
        if owners_of is None or usage_point_ref(href) is None:
            return set()  # only a link to a UsagePoint (or below) is precise enough to follow to its owners
        return {index_of[("o", name)] for name in owners_of(href) if ("o", name) in index_of}

    reverse = {href: parts_named_by(href) for entry in loose.values() for href in entry.related}
    changed = True
    while changed:
        changed = False
        for entry in loose.values():
            found = set(entry.targets)
            for i, state in enumerate(states):
                if (entry.self_href and entry.self_href in state.related) or (
                        entry.up_href and entry.up_href in state.related):
                    found.add(i)
            for href in entry.related:  # reverse links, e.g. to a UsagePoint of the subscription
                found |= reverse[href]
            if found != entry.targets:
                entry.targets = found
                changed = True
                if entry.shared or len(found) == 1:  # what it links to travels with it
                    for i in found:
                        states[i].related.update(entry.related)
    every = set(range(len(states)))
    for entry in loose.values():
        if entry.shared:
            result.shared_entries += 1
            if not entry.targets:
                result.unlinked_shared_entries += 1
                entry.targets = every
            continue
        if len(entry.targets) == 1:
            continue
        if owners_of is None:
            unknown, parts = "no subscription in its hrefs", "subscription"
        else:
            unknown, parts = "no subscription in its hrefs and no known owner", "part"
        if entry.targets:
            names = ", ".join(sorted((states[i].part.subscription or "") if owners_of is None else
                                     states[i].part.name for i in entry.targets))
            reason = f"{unknown}, and linked from several {parts}s ({names})"
        else:
            reason = f"{unknown}, and no {parts} links to it"
        result.unassigned.append(UnassignedEntry(entry.seq, entry.line, entry.self_href, entry.kinds,
                                                 entry.readings, reason))
        entry.targets = set()


def _second_pass(source: str, owner: array, many: list[tuple[int, ...]], loose: dict[int, _Loose],
                 states: list[_PartState], writers: _Writers, result: BulkSplit, finish: Callable[[int], None]
                 ) -> None:
    seq = 0
    with secure_document(source, name=source) as document:
        for _event, element in document.iterparse(events=("end",), tag="{*}entry"):
            parent = element.getparent()
            if parent is None or parent.getparent() is not None or local_name(parent.tag) != "feed":
                raise BulkSplitError("an <entry> inside another element; a bulk feed's entries are children of "
                                     "its <feed>", source, element.sourceline)
            if seq >= len(owner):
                raise BulkSplitError("the file changed while it was being split (more entries than before)",
                                     source, element.sourceline)
            index = owner[seq]
            targets: Iterable[int]
            if index >= 0:
                targets = (index,)
            elif index <= _MANY:
                targets = many[_MANY - index]
            else:
                entry = loose[seq]
                targets = sorted(entry.targets)
                for i in targets:
                    states[i].part.entries += 1
                    states[i].part.readings += entry.readings
                    if entry.shared:
                        states[i].part.shared_entries += 1
            data = etree.tostring(element, encoding="UTF-8", with_tail=False) + b"\n"
            for i in targets:
                writers.write(i, data)
                if states[i].last == seq:
                    finish(i)
            seq += 1
            element.clear(keep_tail=False)
            while element.getprevious() is not None:
                del parent[0]
    if seq != len(owner):
        raise BulkSplitError(f"the file changed while it was being split ({seq} entries, {len(owner)} before)",
                             source, None)
