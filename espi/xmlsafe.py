"""Hardened XML reading for everything greenbridge parses.

Green Button documents never need a DOCTYPE, entities or the network, so we refuse them outright instead of
trusting parser defaults: a document whose prolog has a DOCTYPE is rejected before its body is read (this stops
billion-laughs expansion, external entities and external DTDs alike), lxml runs with entity resolution, DTD
loading and network access off, and libxml2's depth limit (256 levels, ``huge_tree`` off) ends absurd nesting
after a few kilobytes.

Sources may be a path, ``bytes`` or a binary file object. Errors name the source and line.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, Any

from lxml import etree

from espi.errors import XmlSecurityError, XmlSyntaxError

Source = str | os.PathLike | bytes | IO[bytes]

#: lxml options shared by every parser we create. Entity resolution is limited to *internal* entities, which
#: cannot exist: any DOCTYPE (the only place to declare one) is refused before the body is parsed. With False,
#: lxml's iterparse loses the position of an undefined-entity error ("Start tag expected" on line 1); with
#: "internal" it reports "Entity 'x' not defined" at the right line. External entities are never resolved.
PARSER_OPTIONS: dict[str, Any] = {
    "resolve_entities": "internal",
    "no_network": True,
    "load_dtd": False,
    "dtd_validation": False,
    "huge_tree": False,
}

_PROLOG_CHUNK = 16 * 1024
#: A prolog (declaration, comments, PIs) longer than this before the root element is not a Green Button file.
_PROLOG_LIMIT = 1024 * 1024


def source_name(source: Source, name: str | None = None) -> str:
    if name:
        return name
    if isinstance(source, str | os.PathLike):
        return os.fspath(source)
    if isinstance(source, bytes | bytearray):
        return "<bytes>"
    return getattr(source, "name", None) or "<stream>"


class _ReplayStream(io.RawIOBase):
    """Serves ``prefix`` first, then the rest of ``stream``; reports bytes consumed to ``on_read``."""

    def __init__(self, prefix: bytes, stream: IO[bytes], on_read: Callable[[int], None] | None = None):
        self._prefix = memoryview(prefix)
        self._stream = stream
        self._on_read = on_read

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
        else:
            data = self._stream.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        if self._on_read is not None and n:
            self._on_read(n)
        return n

    def read(self, size: int = -1) -> bytes:
        # lxml calls read(n) on file-like objects; serve it without the RawIOBase round trip.
        if size is None or size < 0:
            size = _PROLOG_CHUNK * 4
        if self._prefix:
            n = min(size, len(self._prefix))
            data = self._prefix[:n].tobytes()
            self._prefix = self._prefix[n:]
        else:
            data = self._stream.read(size)
        if self._on_read is not None and data:
            self._on_read(len(data))
        return data


@contextmanager
def open_binary(source: Source) -> Iterator[IO[bytes]]:
    """A binary stream over a path, bytes or an already open binary file (which is left open)."""
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            yield handle
    elif isinstance(source, bytes | bytearray):
        yield io.BytesIO(bytes(source))
    else:
        yield source


def _syntax_error(exc: etree.XMLSyntaxError, name: str) -> XmlSyntaxError | XmlSecurityError:
    line = exc.lineno or None
    message = exc.msg or str(exc)
    # lxml appends the location ("…, line N, column M" or "(<source>, line N)"); we print it ourselves.
    message = re.sub(r"(,\s*line \d+(,\s*column \d+)?|\s*\([^()]*line \d+\))\s*$", "", message)
    lowered = message.lower()
    if "excessive depth" in lowered or "huge" in lowered or "amplification" in lowered:
        return XmlSecurityError(f"refused: {message} (nesting or size beyond what any Green Button file needs)",
                                name, line)
    return XmlSyntaxError(f"not well-formed XML: {message}", name, line)


def _read_prolog(stream: IO[bytes], name: str) -> tuple[bytes, str]:
    """Reads up to the root element's start tag and refuses a DOCTYPE.

    Returns the bytes read (to replay) and the root element's tag (Clark notation).
    """
    # This parser only has to reach the root's start tag: it resolves nothing at all, so that a document that
    # declares entities is refused for its DOCTYPE, not reported for an entity it uses.
    pull = etree.XMLPullParser(events=("start",), **{**PARSER_OPTIONS, "resolve_entities": False})
    consumed = bytearray()
    try:
        while True:
            chunk = stream.read(_PROLOG_CHUNK)
            if not chunk:
                pull.close()  # raises for an empty or truncated document
                break
            consumed += chunk
            pull.feed(chunk)
            for _event, element in pull.read_events():
                docinfo = element.getroottree().docinfo
                if docinfo.doctype or docinfo.internalDTD is not None or docinfo.system_url:
                    raise _doctype_refused(consumed, name)
                return bytes(consumed), element.tag
            if len(consumed) > _PROLOG_LIMIT:
                raise XmlSecurityError("refused: no root element within the first megabyte", name, None)
    except etree.XMLSyntaxError as exc:
        if b"<!DOCTYPE" in consumed:
            # libxml2 may stop inside the DTD already (entity amplification): the DOCTYPE is the real problem
            raise _doctype_refused(consumed, name) from None
        raise _syntax_error(exc, name) from None
    raise XmlSyntaxError("not well-formed XML: no root element", name, None)


def _doctype_refused(consumed: bytes | bytearray, name: str) -> XmlSecurityError:
    at = consumed.find(b"<!DOCTYPE")
    line = consumed.count(b"\n", 0, at) + 1 if at >= 0 else None
    return XmlSecurityError(
        "refused: the document has a DOCTYPE declaration; Green Button XML never needs one "
        "(DTDs, entities and external references are not allowed)", name, line)


def secure_iterparse(
    source: Source,
    events: tuple[str, ...] = ("end",),
    tag: str | tuple[str, ...] | None = None,
    name: str | None = None,
    on_read: Callable[[int], None] | None = None,
) -> Iterator[tuple[str, etree._Element]]:
    """``lxml.etree.iterparse`` with the hardening above; XML errors become ``XmlSyntaxError``/``XmlSecurityError``.

    ``on_read`` is called with the number of bytes read, for progress reporting.
    """
    with secure_document(source, name=name, on_read=on_read) as document:
        yield from document.iterparse(events=events, tag=tag)


class SecureDocument:
    """An opened document whose prolog has been checked; ``root_tag`` is known before the body is parsed."""

    def __init__(self, stream: IO[bytes], label: str, on_read: Callable[[int], None] | None):
        self.name = label
        prefix, self.root_tag = _read_prolog(stream, label)
        self._replay = _ReplayStream(prefix, stream, on_read)
        self._used = False

    def iterparse(self, events: tuple[str, ...] = ("end",), tag: str | tuple[str, ...] | None = None
                  ) -> Iterator[tuple[str, etree._Element]]:
        if self._used:
            raise RuntimeError("a SecureDocument can be parsed once")
        self._used = True
        iterator = etree.iterparse(self._replay, events=events, tag=tag, **PARSER_OPTIONS)
        try:
            yield from iterator
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(exc, self.name) from None


@contextmanager
def secure_document(source: Source, name: str | None = None, on_read: Callable[[int], None] | None = None
                    ) -> Iterator[SecureDocument]:
    """Opens ``source``, checks its prolog (refusing a DOCTYPE) and yields a ``SecureDocument``."""
    label = source_name(source, name)
    with open_binary(source) as stream:
        yield SecureDocument(stream, label, on_read)


def secure_parse(source: Source, name: str | None = None) -> etree._ElementTree:
    """Parses a whole (small) document into a tree with the same hardening as ``secure_iterparse``."""
    label = source_name(source, name)
    with open_binary(source) as stream:
        prefix, _root_tag = _read_prolog(stream, label)
        parser = etree.XMLParser(**PARSER_OPTIONS)
        try:
            return etree.parse(_ReplayStream(prefix, stream), parser)
        except etree.XMLSyntaxError as exc:
            raise _syntax_error(exc, label) from None
