"""ESPI notifications: the ``BatchList`` a data custodian POSTs to a third party (FB_39 PUSH, espi.md §4.1).

A BatchList is a list of resource URIs (schema ``BatchListType``: 0..n ``resources`` of ``xs:anyURI``) telling
the third party what changed: new usage data for a subscription, a bulk file that is ready (over REST or SFTP),
an authorization or registration that changed. It is also how a deferred request finishes: a custodian that
answered a GET with 202 Accepted later announces the data with a BatchList (espi.md §4.3).

This module only *reads and writes* the document; it fetches nothing. :func:`parse_batch_list` is lenient in
exactly the ways real custodians differ (espi.md §4.1, samples ``cmdtest_BatchList_*``): ``espi:`` prefix or
default namespace (with or without a redundant prefix declaration) or no namespace at all, whitespace and
newlines around the URI, ``&amp;``-escaped query strings, duplicate URIs, an empty list. Everything else is
refused with a :class:`NotificationError` naming the source and line, because a notification we misread is a
notification silently lost. Hostile XML (DOCTYPE, entities) is refused earlier by :mod:`espi.xmlsafe`, whose
``XmlSecurityError`` is left to propagate so the receiver can log it as such.

:func:`classify_resource` says what a URI names and so which credential fetches it (espi.md §4.1 table), and
reads ``published-min``/``published-max`` leniently: OpenESPI custodians append them straight from
``XMLGregorianCalendar``, with fractional seconds and offsets that strict servers reject (espi.md §3.7);
:meth:`NotificationResource.normalized_uri` rewrites them as ``YYYY-MM-DDThh:mm:ssZ`` for re-issuing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from enum import StrEnum
from urllib.parse import unquote

from lxml import etree

from espi.errors import DocumentError, XmlSyntaxError
from espi.namespaces import ESPI, local_name, namespace_of
from espi.xmlsafe import Source, secure_parse, source_name

#: Namespaces a BatchList (and its ``resources``) may be in: ESPI, or none at all (seen in the SFTP harness).
BATCH_LIST_NAMESPACES = (ESPI, "")

#: Written before every built BatchList; the form of the GBA contract fixture (espi.md §4.1).
XML_DECLARATION = b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'

# XML whitespace (production S). xs:anyURI has whiteSpace="collapse": runs become one space, ends are trimmed.
_XML_WS_RUN = re.compile(r"[ \t\r\n]+")


class NotificationError(DocumentError):
    """A notification body that is not a usable BatchList: not XML, another document, stray content."""


class ResourceKind(StrEnum):
    """What a BatchList URI names, which decides how the third party fetches it (espi.md §4.1)."""

    #: ``…/Batch/Subscription/{id}[?published-min=…&published-max=…]``: new usage data; customer access_token.
    SUBSCRIPTION = "subscription"
    #: ``…/Batch/Bulk/{bulkId}`` (UtilityAPI: ``…/resource/Bulk/{bulkId}``): bulk data ready; client_access_token.
    BULK = "bulk"
    #: ``sftp://…``: a bulk file to get over SFTP (FB_34, espi.md §7); SFTP credentials.
    SFTP_BULK = "sftp_bulk"
    #: ``…/Authorization`` or ``…/Authorization/{id}``: grants created, revoked or changed; client_access_token.
    AUTHORIZATION = "authorization"
    #: ``…/ApplicationInformation/{id}``: registration changed; registration_access_token.
    APPLICATION_INFORMATION = "application_information"
    #: ``…/ReadServiceStatus``: seen from harness simulators; client_access_token.
    READ_SERVICE_STATUS = "read_service_status"
    #: Anything else; the URI is kept, nothing is guessed.
    OTHER = "other"


@dataclass(frozen=True, slots=True)
class NotificationResource:
    """One BatchList URI and what it names. ``resource_id`` is the id segment as written (ids are opaque)."""

    uri: str
    kind: ResourceKind
    resource_id: str | None = None
    published_min: datetime | None = None
    published_max: datetime | None = None

    def normalized_uri(self) -> str:
        """The URI with readable ``published-min``/``-max`` rewritten as ``YYYY-MM-DDThh:mm:ssZ``.

        Strict custodians (OpenESPI's validator) answer 400 to fractional seconds or offsets (espi.md §3.7).
        The minimum is rounded down and the maximum up, so the window never shrinks. Every other parameter,
        and a bound we could not read, is left exactly as it was.
        """
        if self.published_min is None and self.published_max is None:
            return self.uri
        head, fragment = _cut(self.uri, "#")
        base, query = _cut(head, "?")
        if query is None:
            return self.uri
        params, seen = [], set()
        for param in query.split("&"):
            key = _query_key(param.partition("=")[0])
            if key not in seen:  # only the first occurrence was read (see classify_resource)
                seen.add(key)
                if key == "published-min" and self.published_min is not None:
                    param = f"{key}={normalized_query_time(self.published_min)}"
                elif key == "published-max" and self.published_max is not None:
                    param = f"{key}={normalized_query_time(self.published_max, ceil=True)}"
            params.append(param)
        uri = f"{base}?{'&'.join(params)}"
        return uri if fragment is None else f"{uri}#{fragment}"


@dataclass(frozen=True, slots=True)
class BatchList:
    """A parsed notification: its URIs, trimmed and deduplicated in first-seen order.

    ``namespace`` is the root's namespace (``""`` for the un-namespaced variant) and ``duplicates`` counts the
    repeated URIs dropped, both for the receiver's log.
    """

    resources: tuple[str, ...]
    source: str = "<input>"
    namespace: str = ESPI
    duplicates: int = 0

    def classify(self) -> tuple[NotificationResource, ...]:
        """:func:`classify_resource` for every URI, in order."""
        return tuple(classify_resource(uri) for uri in self.resources)

    def __iter__(self) -> Iterator[str]:
        return iter(self.resources)

    def __len__(self) -> int:
        return len(self.resources)


# ---------------------------------------------------------------------------------------------------------
# Reading


def parse_batch_list(source: Source, name: str | None = None) -> BatchList:
    """Reads a BatchList from a path, ``bytes`` or binary file (``name`` labels errors, e.g. the peer).

    Raises :class:`NotificationError` for anything that is not a BatchList (not well-formed XML, another root
    element, elements other than ``resources``, text outside them, an empty or nested ``resources``), and lets
    :class:`espi.errors.XmlSecurityError` from the hardened parser through unchanged.
    """
    label = source_name(source, name)
    try:
        tree = secure_parse(source, name)
    except XmlSyntaxError as exc:
        raise NotificationError(exc.message, exc.source, exc.line) from exc
    root = tree.getroot()
    if local_name(root.tag) != "BatchList" or namespace_of(root.tag) not in BATCH_LIST_NAMESPACES:
        raise NotificationError(
            f"not an ESPI notification: expected <BatchList> in namespace {ESPI} (or none), "
            f"found {_describe(root)}",
            label,
            root.sourceline,
        )
    _no_text(root.text, root, label)
    uris: list[str] = []
    seen: set[str] = set()
    duplicates = 0
    for child in root:
        if isinstance(child.tag, str):  # an element; comments and PIs (other tags) carry no data
            if local_name(child.tag) != "resources" or namespace_of(child.tag) not in BATCH_LIST_NAMESPACES:
                raise NotificationError(
                    f"unexpected {_describe(child)} in BatchList; only <resources> may appear",
                    label,
                    child.sourceline,
                )
            uri = _resource_uri(child, label)
            if uri in seen:
                duplicates += 1
            else:
                seen.add(uri)
                uris.append(uri)
        _no_text(child.tail, child, label)
    return BatchList(tuple(uris), label, namespace_of(root.tag), duplicates)


def _resource_uri(element: etree._Element, label: str) -> str:
    parts = [element.text or ""]
    for child in element:
        if isinstance(child.tag, str):
            raise NotificationError(
                f"<resources> must hold a URI, not elements (found {_describe(child)})", label, child.sourceline
            )
        parts.append(child.tail or "")  # text split by a comment is still one URI
    uri = collapse_uri("".join(parts))
    if not uri:
        raise NotificationError("empty <resources>: a resource URI is required", label, element.sourceline)
    return uri


def _no_text(text: str | None, element: etree._Element, label: str) -> None:
    if text and text.strip(" \t\r\n"):
        shown = collapse_uri(text)
        shown = shown if len(shown) <= 40 else shown[:37] + "..."
        raise NotificationError(f"unexpected text {shown!r} in BatchList outside <resources>", label,
                                element.sourceline)


def _describe(element: etree._Element) -> str:
    ns = namespace_of(element.tag)
    return f"<{local_name(element.tag)}>" + (f" in namespace {ns}" if ns else " (no namespace)")


def collapse_uri(text: str) -> str:
    """The value of an ``xs:anyURI`` element: XML whitespace runs become one space, the ends are trimmed.

    This is the schema's own whitespace rule, so a URI broken over lines by a pretty-printer comes back as
    written by the custodian, give or take the line break.
    """
    return _XML_WS_RUN.sub(" ", text).strip(" ")


# ---------------------------------------------------------------------------------------------------------
# Writing


def build_batch_list(uris: Iterable[str]) -> bytes:
    """A BatchList document (UTF-8, XML declaration, default ESPI namespace) listing ``uris``.

    URIs get the same whitespace collapsing and deduplication as :func:`parse_batch_list` applies, so
    ``parse_batch_list(build_batch_list(u)).resources`` is the canonical form of ``u``. Raises ``TypeError`` for
    something that is not a collection of ``str`` and ``ValueError`` for a blank URI or one holding characters
    XML cannot carry (NUL, most control characters) — caller bugs, not bad input documents.
    """
    if isinstance(uris, str | bytes | bytearray):
        raise TypeError("build_batch_list takes a collection of URIs, not a single string")
    root = etree.Element(f"{{{ESPI}}}BatchList", nsmap={None: ESPI})
    seen: set[str] = set()
    for raw in uris:
        if not isinstance(raw, str):
            raise TypeError(f"a resource URI must be a str, not {type(raw).__name__}")
        uri = collapse_uri(raw)
        if not uri:
            raise ValueError("a resource URI cannot be blank")
        if uri in seen:
            continue
        seen.add(uri)
        try:
            etree.SubElement(root, f"{{{ESPI}}}resources").text = uri
        except ValueError as exc:
            raise ValueError(f"resource URI {uri!r} cannot be written as XML: {exc}") from None
    return XML_DECLARATION + etree.tostring(root, encoding="UTF-8", pretty_print=True)


# ---------------------------------------------------------------------------------------------------------
# Classifying


def classify_resource(uri: str) -> NotificationResource:
    """Says what ``uri`` names (:class:`ResourceKind`), its id, and its published-min/max window, if any.

    Matching is on exact, case-sensitive path segments from the end of the path, whatever the base before
    them (custodian bases differ: ``…/DataCustodian/espi/1_1/resource/``, no ``/espi/`` at Bidgely). Never
    raises: an unrecognised URI is :attr:`ResourceKind.OTHER`.
    """
    scheme, segments, query = _split_uri(uri)
    kind, resource_id = _kind_of(scheme, segments)
    window: dict[str, datetime | None] = {}
    for param in (query or "").split("&"):
        key, _eq, value = param.partition("=")
        key = _query_key(key)
        if key in ("published-min", "published-max") and key not in window:
            # The first occurrence counts, as with servlet getParameter() on the custodian's side.
            window[key] = parse_query_time(unquote(value))
    return NotificationResource(uri, kind, resource_id, window.get("published-min"), window.get("published-max"))


def _kind_of(scheme: str, segments: list[str]) -> tuple[ResourceKind, str | None]:
    if scheme == "sftp":
        # The file name is the bulk's handle: OpenESPI mirrors the REST path (…/Batch/Bulk/SampleData.xml),
        # the harness uses any path (…/BatchBulk.xml).
        return ResourceKind.SFTP_BULK, segments[-1] if segments else None
    for i in range(len(segments) - 2, 0, -1):
        if segments[i - 1] == "Batch" and segments[i] == "Subscription":
            # Batch/Subscription/{id}, possibly narrowed further (…/UsagePoint/{id}): the subscription's token.
            return ResourceKind.SUBSCRIPTION, segments[i + 1]
    last = segments[-1] if segments else ""
    before = segments[-2] if len(segments) > 1 else ""
    if before == "Bulk":  # Batch/Bulk/{id}, and UtilityAPI's resource/Bulk/{id}
        return ResourceKind.BULK, last
    if last == "Authorization":
        return ResourceKind.AUTHORIZATION, None
    if before == "Authorization":
        return ResourceKind.AUTHORIZATION, last
    if last == "ApplicationInformation":
        return ResourceKind.APPLICATION_INFORMATION, None
    if before == "ApplicationInformation":
        return ResourceKind.APPLICATION_INFORMATION, last
    if last == "ReadServiceStatus":
        return ResourceKind.READ_SERVICE_STATUS, None
    return ResourceKind.OTHER, None


_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def _split_uri(uri: str) -> tuple[str, list[str], str | None]:
    """``(scheme, path segments, query)`` by RFC 3986's generic syntax, without ever raising.

    Hand-rolled because ``urllib.parse.urlsplit`` raises on some malformed authorities (``http://[::1``), and
    a notification URI is untrusted input; empty segments (``//`` in custodian bases) are dropped.
    """
    head, _fragment = _cut(uri, "#")
    head, query = _cut(head, "?")
    match = _SCHEME.match(head)
    scheme = match.group(1).lower() if match else ""
    rest = head[match.end():] if match else head
    if rest.startswith("//"):
        slash = rest.find("/", 2)
        rest = "" if slash < 0 else rest[slash:]
    return scheme, [segment for segment in rest.split("/") if segment], query


def _cut(text: str, mark: str) -> tuple[str, str | None]:
    before, found, after = text.partition(mark)
    return before, (after if found else None)


def _query_key(key: str) -> str:
    # A custodian that escapes twice sends "&amp;amp;", which reaches us as "&amp;published-max=…".
    key = unquote(key)
    return key[4:] if key.startswith("amp;") else key


# ---------------------------------------------------------------------------------------------------------
# Query times

_QUERY_TIME = re.compile(
    r"(?P<date>[0-9]{4}-[0-9]{2}-[0-9]{2})"
    r"(?:[Tt ](?P<h>[0-9]{2}):(?P<m>[0-9]{2})(?::(?P<s>[0-9]{2})(?:[.,](?P<frac>[0-9]+))?)?)?"
    r"(?:(?P<z>[Zz])|(?P<sign>[+-])(?P<oh>[0-9]{2})(?::?(?P<om>[0-9]{2}))?)?"
)


def parse_query_time(text: str) -> datetime | None:
    """A ``published-min``/``-max`` value as a UTC-aware datetime, or None when it is not a date-time.

    Lenient the way custodians are sloppy (espi.md §3.7): fractional seconds of any length (truncated to
    microseconds), ``Z`` or numeric offsets (``+01:00``, ``-0500``, ``+01``), missing seconds, a date alone
    (midnight), no zone at all (taken as UTC, which ESPI instants are). Values such as ``All`` give None.
    """
    match = _QUERY_TIME.fullmatch(text.strip(" \t\r\n"))
    if not match:
        return None
    try:
        year, month, day = (int(part) for part in match["date"].split("-"))
        micro = int((match["frac"] or "0")[:6].ljust(6, "0"))
        moment = datetime(year, month, day, int(match["h"] or 0), int(match["m"] or 0), int(match["s"] or 0),
                          micro)
        if match["sign"]:
            offset = timedelta(hours=int(match["oh"]), minutes=int(match["om"] or 0))
            if offset >= timedelta(hours=24) or int(match["om"] or 0) > 59:
                return None
            zone = timezone(-offset if match["sign"] == "-" else offset)
        else:
            zone = UTC
        return moment.replace(tzinfo=zone).astimezone(UTC)
    except (ValueError, OverflowError):  # 2025-02-30, 25:00, a year-1 instant shifted out of range
        return None


def normalized_query_time(moment: datetime, *, ceil: bool = False) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` in UTC, the only form OpenESPI's validator accepts (espi.md §3.7).

    Fractions of a second are dropped, or rounded up with ``ceil=True`` (for an upper bound). A naive
    datetime is taken as UTC.
    """
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if ceil and moment.microsecond:
        with suppress(OverflowError):  # 9999-12-31T23:59:59.5: nothing later to round up to
            moment += timedelta(microseconds=1_000_000 - moment.microsecond)
    return (f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
            f"T{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}Z")
