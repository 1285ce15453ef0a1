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

**One pass.** The file is read once. Entries of a subscription (or owner) are copied to its part as they come;
entries without a subscription nor owner are kept in a scratch file beside the parts, with a few facts each in
memory (their hrefs), until it is known where they go: a shared entry is copied into each part as soon as the part
links to it (before or after it comes), and an entry that is no one's goes, at the end, to the one part that links
to it. Memory does not grow with the number of readings, nor with the number of entries of the parts. A part is
complete, renamed and handed to ``on_part`` when the split has moved on to another part's entries and everything
the part links to has been read (custodians write a bulk subscription by subscription, each with its shared
entries, so parts complete one after the other while the split goes on); a part that still links to something not
yet read, or to an entry that is no one's, waits for the end of the file. Should a part receive anything after it
was handed over (its subscription's entries are not together, or something it links to comes later), it is handed
over once more at the end as a new revision holding all of it, and no part is handed over early after that. A
shared entry no part links to goes into every part still open at the end of the file: a part handed over before
the end does not get it (it links to nothing of it).

Entries are copied as they are: each is serialised on its own with the namespace declarations it uses (like the
sandbox's data sets), so it stays valid inside its part's new envelope. The file is parsed through
:mod:`espi.xmlsafe` (a DOCTYPE is refused). The parts' feed header (title, links) is the bulk's header as it
stands before the first entry.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit
from xml.sax.saxutils import escape, quoteattr

from lxml import etree

from espi.atom import RESOURCE_TYPES, FeedHeader, Link
from espi.errors import DocumentError, NotEspiError
from espi.model import Diagnostics, parse_atom_datetime
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
    #: 1, or 2 when the part was handed over again at the end with what came after its first hand-over
    revision: int = 1

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
    """An entry without a subscription nor owner (its bytes wait in the scratch file)."""

    seq: int
    line: int | None
    self_href: str | None
    up_href: str | None
    related: tuple[str, ...]
    kinds: tuple[str, ...]
    readings: int
    targets: set[int] = field(default_factory=set)
    unlinked: bool = False

    @property
    def shared(self) -> bool:
        return bool(self.kinds) and all(kind in SHARED_KINDS for kind in self.kinds)


@dataclass(slots=True)
class _PartState:
    part: BulkPart
    #: every ``related`` href of its entries (and of the shared entries copied into it)
    related: set[str]
    partial: Path
    started: bool = False
    finished: bool = False  # handed over
    #: self and up hrefs of its own entries (while it is written), and its related hrefs none of them resolves yet
    own_hrefs: set[str] = field(default_factory=set)
    unresolved: set[str] = field(default_factory=set)
    #: it links to (or is linked from) an entry that is no one's: placed at the end, so the part waits for it
    needs_end: bool = False
    #: seqs of the loose entries copied into it
    copied: set[int] = field(default_factory=set)
    #: scratch keys of what came after its hand-over (written into its next revision)
    late: list[int] = field(default_factory=list)
    kept: Path | None = None


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
    names for entries without a subscription in their hrefs, see the module docstring), written into ``out_dir``,
    in one pass over the file.

    Part files are named ``subscription-{S}.xml`` (owner parts ``part-{O}.xml``; characters outside
    ``[A-Za-z0-9._-]`` replaced) and written under a temporary name, renamed when complete. A part is complete
    when the split has moved on to another part's entries and everything its entries link to has been read (see
    "One pass" in the module docstring); ``on_part(part)`` is called then, so its consumer can start while the
    split goes on. A part that receives more after it was handed over (a bulk that does not keep a subscription's
    entries together, a late entry linked from it) is handed over once more at the end as a new *revision*
    (``part.revision`` 2, file ``subscription-{S}.r2.xml``) holding everything of the part: storing it after the
    first is idempotent. On an error, parts not yet complete are removed; completed ones (already handed to
    ``on_part``) stay. Errors are :class:`espi.errors.EspiError` naming the file and line (not well-formed XML, a
    DOCTYPE, not an Atom feed). ``owners_of`` is asked once per entry without a subscription in its hrefs (shared
    resources excepted; with its ``up`` href when its ``self`` href names neither a UsagePoint nor a customer), and
    once per ``related`` href naming a UsagePoint of those that still have no part (a reverse link; a link to a
    customer-level resource says nothing of which authorization holds the entry).
    """
    splitter = _Splitter(os.fspath(path), private_dir(out_dir), max_open, on_part, owners_of)
    try:
        splitter.run()
    except BaseException:
        splitter.abort()
        raise
    finally:
        splitter.close()
    return splitter.result


def _names_a_holder(href: str | None) -> bool:
    return usage_point_ref(href) is not None or retail_customer_of(href) is not None


def _all_shared(kinds: tuple[str, ...]) -> bool:
    return bool(kinds) and all(kind in SHARED_KINDS for kind in kinds)


@dataclass(slots=True)
class _EntryFacts:
    """What the split needs of one entry, read from its element."""

    line: int | None
    self_href: str | None
    up_href: str | None
    related: tuple[str, ...]
    kinds: tuple[str, ...]
    readings: int
    #: the related hrefs that name an entry (not a collection, which may well be empty): a part waits for them
    awaited: frozenset[str]


def _entry_facts(element: etree._Element) -> _EntryFacts:
    """Links, resource kinds (as :class:`espi.atom.FeedReader` names them) and IntervalReadings of an entry element;
    only the envelope and the content's resource elements are looked at, never the readings' children."""
    self_href = up_href = None
    related: list[str] = []
    awaited: set[str] = set()
    kinds: list[str] = []
    readings = 0
    for child in element:
        tag = child.tag
        if not isinstance(tag, str):
            continue
        name = local_name(tag)
        if name == "link":
            href = child.get("href")
            if not href:
                continue
            href = href.strip()
            rel = (child.get("rel") or "alternate").strip()
            if rel == "self":
                self_href = self_href or href
            elif rel == "up":
                up_href = up_href or href
            elif rel == "related":
                related.append(href)
                if not _names_a_collection(href, child.get("type")):
                    awaited.add(href)
        elif name == "content":
            blocks = 0
            for resource in child:
                blocks, readings = _resource_kinds(resource, kinds, blocks, readings, nested=False)
            if blocks:
                kinds.append("IntervalBlock")
    return _EntryFacts(element.sourceline, self_href, up_href, tuple(related), tuple(kinds), readings,
                       frozenset(awaited))


def _names_a_collection(href: str, kind: str | None) -> bool:
    """Whether a link names a collection (``type="espi-feed/…"``, or a path ending in a resource name such as
    ``…/UsagePoint/1/UsageSummary``) rather than one entry (``espi-entry/…``, or a path ending in an id)."""
    kind = (kind or "").strip()
    if kind.startswith("espi-feed/"):
        return True
    if kind.startswith("espi-entry/"):
        return False
    last = _segments(href)[-1] if href else ""
    return last in RESOURCE_TYPES or last == "IntervalBlock"


def _resource_kinds(element: etree._Element, kinds: list[str], blocks: int, readings: int, *, nested: bool
                    ) -> tuple[int, int]:
    tag = element.tag
    if not isinstance(tag, str):
        return blocks, readings
    name = local_name(tag)
    if name == "IntervalBlock":
        namespace = tag[: tag.index("}") + 1] if tag.startswith("{") else ""
        return blocks + 1, readings + sum(1 for _ in element.iterchildren(f"{namespace}IntervalReading"))
    if name not in RESOURCE_TYPES:
        return blocks, readings
    kinds.append(name)
    for child in element:  # resources nested inside a resource (espi.md §1.2), as the reader reads them
        if isinstance(child.tag, str) and (local_name(child.tag) in RESOURCE_TYPES
                                           or local_name(child.tag) == "IntervalBlock"):
            blocks, readings = _resource_kinds(child, kinds, blocks, readings, nested=True)
    return blocks, readings


def _read_header(root: etree._Element, stop_at: etree._Element, header: FeedHeader,
                 diagnostics: Diagnostics) -> None:
    for child in root:
        if child is stop_at:
            break
        if not isinstance(child.tag, str):
            continue
        name = local_name(child.tag)
        if name == "id" and header.id is None:
            header.id = (child.text or "").strip() or None
        elif name == "title" and header.title is None:
            header.title = (child.text or "").strip() or None
        elif name == "updated" and header.updated is None:
            header.updated = parse_atom_datetime(child.text, child, diagnostics)
        elif name == "link":
            href = child.get("href")
            link = Link((child.get("rel") or "alternate").strip(), href.strip() if href else None, child.get("type"))
            if link not in header.links:
                header.links.append(link)


class _Splitter:
    """One pass of :func:`split_bulk` (see "One pass" in the module docstring)."""

    def __init__(self, source: str, out: Path, max_open: int, on_part: Callable[[BulkPart], None] | None,
                 owners_of: OwnersOf | None) -> None:
        self.source, self.out, self.on_part, self.owners_of = source, out, on_part, owners_of
        self.result = BulkSplit(source, None, diagnostics=Diagnostics(source))
        self.header = FeedHeader()
        self.base = ""
        self.states: list[_PartState] = []
        self.index_of: dict[tuple[str, str], int] = {}  # ("s", subscription) or ("o", owner) → index in states
        self.taken: set[str] = set()
        self.writers = _Writers(self.states, lambda part: _part_header(self.header, part), max_open)
        # entries without a subscription nor owner: their facts, their bytes in a scratch file
        self.loose: dict[int, _Loose] = {}
        self.scratch_path = out / f".bulk-scratch-{uuid.uuid4().hex}"
        self.scratch: IO[bytes] | None = None
        self.scratch_at: dict[int, tuple[int, int]] = {}  # seq → (offset, length)
        self.loose_by_href: dict[str, list[int]] = {}  # self and up hrefs of loose entries → their seqs
        self.related_index: dict[str, set[int]] = {}  # related href → parts linking to it
        self.current: tuple[int, ...] = ()
        self.pending: list[int] = []  # parts the split has moved past, not yet handed over
        self.interleaved = False  # a part received entries after it was handed over: no more early hand-overs
        self.kept: list[Path] = []

    # -- the pass ---------------------------------------------------------------------------------------------

    def run(self) -> None:
        seq = 0
        with secure_document(self.source, name=self.source) as document:
            root = local_name(document.root_tag)
            if root != "feed":
                raise NotEspiError(f"not a bulk feed: the document is a bare <{root}>, expected an Atom <feed>",
                                   self.source, 1)
            for _event, element in document.iterparse(events=("end",), tag="{*}entry"):
                parent = element.getparent()
                if parent is None or parent.getparent() is not None or local_name(parent.tag) != "feed":
                    raise BulkSplitError("an <entry> inside another element; a bulk feed's entries are children of "
                                         "its <feed>", self.source, element.sourceline)
                if seq == 0:
                    _read_header(parent, element, self.header, self.result.diagnostics)
                    self.result.self_href = self.header.self_href
                    self.base = (self.header.self_href or Path(self.source).resolve().as_uri()).split("#", 1)[0]
                facts = _entry_facts(element)
                data = etree.tostring(element, encoding="UTF-8", with_tail=False) + b"\n"
                self._entry(seq, facts, data)
                seq += 1
                self.result.readings += facts.readings
                element.clear(keep_tail=False)
                while element.getprevious() is not None:
                    del parent[0]
        self.result.entries = seq
        self._finish_all()

    def _entry(self, seq: int, facts: _EntryFacts, data: bytes) -> None:
        subscription = subscription_of_href(facts.self_href)
        if subscription is None:
            subscription = subscription_of_href(facts.up_href)
        indexes: tuple[int, ...] = ()
        if subscription is not None:
            indexes = (self._part_index(("s", subscription)),)
        elif self.owners_of is not None and not _all_shared(facts.kinds):
            names = self.owners_of(facts.self_href) if facts.self_href else ()
            if not names and facts.up_href and not _names_a_holder(facts.self_href):
                names = self.owners_of(facts.up_href)  # the self href said nothing of whose the entry is
            indexes = tuple(sorted({self._part_index(("o", name)) for name in names}))
        if indexes:
            self._own_entry(indexes, facts, data)
        else:
            self._loose_entry(seq, facts, data)

    def _part_index(self, key: tuple[str, str]) -> int:
        index = self.index_of.get(key)
        if index is None:
            index = self.index_of[key] = len(self.states)
            kind, name = key
            file_name = _file_name(name, self.taken, "subscription" if kind == "s" else "part")
            if kind == "s":
                # a Batch/Subscription/{S} answer split (one part) keeps its own URI
                self_href = self.header.self_href if subscription_id_of(self.header.self_href) == name else \
                    f"{self.base.rstrip('/')}/Subscription/{name}"
                part = BulkPart(name, self.out / file_name, self_href)
                self.result.parts[name] = part.path
                self.result.part_info[name] = part
            else:
                part = BulkPart(None, self.out / file_name, f"{self.base}#part-{name}", owner=name)
                self.result.owner_parts[name] = part
            self.states.append(_PartState(part, set(), self.out / f".{file_name}.part"))
        return index

    def _own_entry(self, indexes: tuple[int, ...], facts: _EntryFacts, data: bytes) -> None:
        if indexes != self.current:
            for index in self.current:
                if index not in indexes and not self.states[index].finished:
                    self.pending.append(index)
            self.current = indexes
            switched = True
        else:
            switched = False
        for index in indexes:
            state = self.states[index]
            if state.finished:  # more of a part already handed over: it is handed over again at the end
                self.interleaved = True
                state.late.append(self._buffer(-1 - len(self.scratch_at), data))
            else:
                self.writers.write(index, data)
            state.part.entries += 1
            state.part.readings += facts.readings
            for href in (facts.self_href, facts.up_href):
                if href:
                    state.own_hrefs.add(href)
                    state.unresolved.discard(href)
            for href in facts.related:
                self._link(index, href, href in facts.awaited)
        if switched:
            self._hand_over_settled()

    def _loose_entry(self, seq: int, facts: _EntryFacts, data: bytes) -> None:
        entry = _Loose(seq, facts.line, facts.self_href, facts.up_href, facts.related, facts.kinds, facts.readings)
        self.loose[seq] = entry
        self._buffer(seq, data)
        for href in (facts.self_href, facts.up_href):
            if not href:
                continue
            self.loose_by_href.setdefault(href, []).append(seq)
            for index in sorted(self.related_index.get(href, ())):
                self._linked(index, entry)
                self.states[index].unresolved.discard(href)
        if not entry.shared:
            for href in facts.related:  # a reverse link: whichever part it names waits for the end
                for index in self._parts_named_by(href):
                    self.states[index].needs_end = True

    def _link(self, index: int, href: str, awaited: bool = False) -> None:
        """Part ``index`` links to ``href`` (a ``related`` href of one of its entries, or of a shared entry copied
        into it): shared entries it names are copied into it; when it names an entry (``awaited``), the part waits
        until that entry has been read."""
        state = self.states[index]
        if href not in state.related:
            state.related.add(href)
            self.related_index.setdefault(href, set()).add(index)
            for seq in self.loose_by_href.get(href, ()):
                self._linked(index, self.loose[seq])
        if awaited and href not in self.loose_by_href and href not in state.own_hrefs:
            state.unresolved.add(href)

    def _linked(self, index: int, entry: _Loose) -> None:
        state = self.states[index]
        if not entry.shared:
            state.needs_end = True  # placed only if no other part links to it: known at the end
            return
        if entry.seq in state.copied or state.finished:
            return  # a part already handed over gets it in its revision (placed at the end)
        self._copy(index, entry)
        for href in entry.related:  # what a shared entry links to travels with it
            self._link(index, href)

    def _copy(self, index: int, entry: _Loose) -> None:
        state = self.states[index]
        state.copied.add(entry.seq)
        self.writers.write(index, self._buffered(entry.seq))
        state.part.entries += 1
        state.part.readings += entry.readings
        if entry.shared:
            state.part.shared_entries += 1

    def _parts_named_by(self, href: str) -> set[int]:
        subscription = subscription_of_href(href)
        if subscription is not None:
            index = self.index_of.get(("s", subscription))
            return set() if index is None else {index}
        if self.owners_of is None or usage_point_ref(href) is None:
            return set()  # only a link to a UsagePoint (or below) is precise enough to follow to its owners
        return {self.index_of[("o", name)] for name in self.owners_of(href) if ("o", name) in self.index_of}

    # -- scratch ----------------------------------------------------------------------------------------------

    def _buffer(self, key: int, data: bytes) -> int:
        if self.scratch is None:
            self.scratch = open_private(self.scratch_path, "r+b")  # created; closed by close()
        self.scratch.seek(0, os.SEEK_END)
        self.scratch_at[key] = (self.scratch.tell(), len(data))
        self.scratch.write(data)
        return key

    def _buffered(self, key: int) -> bytes:
        offset, length = self.scratch_at[key]
        assert self.scratch is not None
        self.scratch.flush()
        return os.pread(self.scratch.fileno(), length, offset)

    # -- hand-over --------------------------------------------------------------------------------------------

    def _hand_over_settled(self) -> None:
        if self.interleaved:
            return
        waiting = []
        for index in self.pending:
            state = self.states[index]
            if state.finished or index in self.current:
                continue
            if state.unresolved or state.needs_end:
                waiting.append(index)
            else:
                self._finish(index)
        self.pending = waiting

    def _finish(self, index: int) -> None:
        state = self.states[index]
        self.writers.write(index, b"</feed>\n")
        self.writers.close_one(index)
        os.replace(state.partial, state.part.path)
        state.finished = True
        state.own_hrefs = set()  # what resolves its links is no longer needed: it is not written to again
        keep = self.out / f".{state.part.path.name}.kept"  # for a revision, should more of it come
        try:
            keep.unlink(missing_ok=True)
            os.link(state.part.path, keep)
        except OSError:  # a file system without hard links
            with open(state.part.path, "rb") as original, open_private(keep, "wb") as copy:
                shutil.copyfileobj(original, copy)
        self.kept.append(keep)
        state.kept = keep
        if self.on_part is not None:
            self.on_part(state.part)

    def _finish_all(self) -> None:
        """The end of the file: entries without a subscription are placed, open parts handed over, and parts that
        received more after their hand-over handed over again as their next revision."""
        open_parts = {i for i, state in enumerate(self.states) if not state.finished}
        _resolve(self.loose, self.states, self.result, self.owners_of)
        for entry in self.loose.values():
            targets = entry.targets if not (entry.shared and entry.unlinked) else open_parts
            for index in sorted(targets):
                state = self.states[index]
                if entry.seq in state.copied:
                    continue
                if state.finished:
                    state.copied.add(entry.seq)
                    state.late.append(entry.seq)
                    state.part.entries += 1
                    state.part.readings += entry.readings
                    state.part.shared_entries += entry.shared
                else:
                    self._copy(index, entry)
        for index in sorted(open_parts):
            self._finish(index)
        for index, state in enumerate(self.states):
            if state.late:
                self._revise(index)

    def _revise(self, index: int) -> None:
        state = self.states[index]
        old = state.part
        revision = old.revision + 1
        stem = old.path.name[: -len(".xml")] if old.path.name.endswith(".xml") else old.path.name
        name, n = f"{stem}.r{revision}.xml", 2
        while name.lower() in self.taken:
            name, n = f"{stem}.r{revision}-{n}.xml", n + 1
        self.taken.add(name.lower())
        part = BulkPart(old.subscription, self.out / name, old.self_href, old.entries, old.shared_entries,
                        old.readings, old.owner, revision)
        partial = self.out / f".{name}.part"
        closing = b"</feed>\n"
        with open_private(partial, "wb") as out, open(state.kept, "rb") as previous:
            size = os.fstat(previous.fileno()).st_size - len(closing)
            while size > 0:
                chunk = previous.read(min(size, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                size -= len(chunk)
            for key in state.late:
                out.write(self._buffered(key))
            out.write(closing)
        os.replace(partial, part.path)
        state.late = []
        state.part = part
        if part.owner is None:
            self.result.parts[part.subscription] = part.path
            self.result.part_info[part.subscription] = part
        else:
            self.result.owner_parts[part.owner] = part
        if self.on_part is not None:
            self.on_part(part)

    # -- clean-up ---------------------------------------------------------------------------------------------

    def abort(self) -> None:
        self.writers.close()
        for state in self.states:
            state.partial.unlink(missing_ok=True)
        for path in self.out.glob(".subscription-*.r*.xml.part"):
            path.unlink(missing_ok=True)
        for path in self.out.glob(".part-*.r*.xml.part"):
            path.unlink(missing_ok=True)

    def close(self) -> None:
        self.writers.close()
        if self.scratch is not None:
            self.scratch.close()
        self.scratch_path.unlink(missing_ok=True)
        for path in self.kept:
            path.unlink(missing_ok=True)


def _resolve(loose: dict[int, _Loose], states: list[_PartState], result: BulkSplit,
             owners_of: OwnersOf | None) -> None:
    """Which parts each entry without a subscription goes to (links followed until nothing changes); shared
    entries no part links to are marked ``unlinked``."""
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

    linking: dict[str, set[int]] = {}
    for i, state in enumerate(states):
        for href in state.related:
            linking.setdefault(href, set()).add(i)
    reverse = {href: parts_named_by(href) for entry in loose.values() for href in entry.related}
    changed = True
    while changed:
        changed = False
        for entry in loose.values():
            found = set(entry.targets)
            for href in (entry.self_href, entry.up_href):
                if href:
                    found |= linking.get(href, set())
            for href in entry.related:  # reverse links, e.g. to a UsagePoint of the subscription
                found |= reverse[href]
            if found != entry.targets:
                entry.targets = found
                changed = True
                if entry.shared or len(found) == 1:  # what it links to travels with it
                    for i in found:
                        for href in entry.related:
                            if href not in states[i].related:
                                states[i].related.add(href)
                                linking.setdefault(href, set()).add(i)
    for entry in loose.values():
        if entry.shared:
            result.shared_entries += 1
            if not entry.targets:
                result.unlinked_shared_entries += 1
                entry.unlinked = True
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
