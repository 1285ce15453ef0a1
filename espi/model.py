"""Declarative mapping from ESPI XML elements to frozen dataclasses, and lenient value conversion.

Every resource class declares its fields with ``xml_field("elementName", converter)``. One generic builder,
``build(cls, element, diagnostics)``, walks the element's children once and matches them by *local name*, so the
same code reads the ``espi:`` prefix, a default namespace, another prefix or no namespace at all (espi.md §2.4).
Children we do not know are kept as ``(name, text)`` pairs in ``extra`` (pre-2019 shapes carry other fields,
espi.md §1.12); values that do not convert are reported to the diagnostics and left as ``None``, never raised:
real custodians send sloppy files and one bad field must not lose the rest.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from lxml import etree

from espi.namespaces import local_name

Converter = Callable[[etree._Element, "Diagnostics"], Any]


@dataclass(frozen=True, slots=True)
class Issue:
    """Something in a document we accepted only by repairing or ignoring it."""

    source: str
    line: int | None
    message: str

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        return f"{where}: {self.message}"


class Diagnostics:
    """Collects parse issues for one document, bounded in memory.

    The first ``keep`` issues are kept verbatim; beyond that only a count per message kind grows, so a file with
    a million fractional timestamps does not hold a million messages.
    """

    def __init__(self, source: str, keep: int = 200):
        self.source = source
        self.keep = keep
        self.issues: list[Issue] = []
        self.counts: Counter[str] = Counter()

    def add(self, message: str, line: int | None = None, kind: str | None = None) -> None:
        self.counts[kind or message] += 1
        if len(self.issues) < self.keep:
            self.issues.append(Issue(self.source, line, message))

    def at(self, element: etree._Element | None, message: str, kind: str | None = None) -> None:
        self.add(message, element.sourceline if element is not None else None, kind)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def summary(self) -> list[str]:
        """One line per kind of issue, most frequent first."""
        return [f"{count} × {kind}" for kind, count in self.counts.most_common()]


def xml_field(xml: str, converter: Converter, many: bool = False, secret: bool = False) -> Any:
    """Declares a dataclass field read from child element ``xml``; ``many`` collects repeats into a tuple."""
    return field(
        default=() if many else None,
        repr=not secret,
        metadata={"xml": xml, "convert": converter, "many": many},
    )


# --- scalar converters -------------------------------------------------------------------------------------

def _text(element: etree._Element) -> str | None:
    # A comment inside a value splits its text (36<!-- c -->00 is 3600): join the pieces.
    text = "".join(element.itertext()) if len(element) else element.text
    if text is None:
        return None
    text = text.strip()
    return text or None


def to_str(element: etree._Element, diagnostics: Diagnostics) -> str | None:
    return _text(element)


def to_int(element: etree._Element, diagnostics: Diagnostics) -> int | None:
    """Integers (codes, Int48, UInt32…): whitespace is stripped (``<kind> 0 </kind>`` is seen in real files)."""
    text = _text(element)
    if text is None:
        diagnostics.at(element, f"empty <{local_name(element.tag)}> ignored",
                       kind=f"empty <{local_name(element.tag)}>")
        return None
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = Decimal(text)
    except InvalidOperation:
        diagnostics.at(element, f"<{local_name(element.tag)}> is not a number: {text[:40]!r}; ignored",
                       kind=f"<{local_name(element.tag)}> not a number")
        return None
    if not number.is_finite():
        diagnostics.at(element, f"<{local_name(element.tag)}> is not a finite number: {text[:40]!r}; ignored",
                       kind=f"<{local_name(element.tag)}> not a number")
        return None
    rounded = int(number.to_integral_value(rounding=ROUND_HALF_EVEN))
    if rounded != number:
        diagnostics.at(element, f"<{local_name(element.tag)}> {text} is not a whole number; rounded to {rounded}",
                       kind=f"fractional <{local_name(element.tag)}> rounded")
    return rounded


def to_time(element: etree._Element, diagnostics: Diagnostics) -> int | None:
    """ESPI TimeType: epoch seconds UTC. Fractional seconds (NGMA files) round half-even to the second."""
    return to_int(element, diagnostics)


def to_bool(element: etree._Element, diagnostics: Diagnostics) -> bool | None:
    text = _text(element)
    if text is None:
        return None
    lowered = text.lower()
    if lowered in ("true", "1"):
        return True
    if lowered in ("false", "0"):
        return False
    diagnostics.at(element, f"<{local_name(element.tag)}> is not a boolean: {text[:40]!r}; ignored",
                   kind=f"<{local_name(element.tag)}> not a boolean")
    return None


def to_hex_int(element: etree._Element, diagnostics: Diagnostics) -> int | None:
    """HexBinary values (roleFlags) as integers."""
    text = _text(element)
    if text is None:
        return None
    try:
        return int(text, 16)
    except ValueError:
        diagnostics.at(element, f"<{local_name(element.tag)}> is not hexadecimal: {text[:40]!r}; ignored",
                       kind=f"<{local_name(element.tag)}> not hexadecimal")
        return None


def to_decimal_text(element: etree._Element, diagnostics: Diagnostics) -> str | None:
    """xs:float / xs:decimal values kept as their exact text (never a Python float)."""
    text = _text(element)
    if text is None:
        return None
    try:
        Decimal(text)
    except InvalidOperation:
        diagnostics.at(element, f"<{local_name(element.tag)}> is not a number: {text[:40]!r}; ignored",
                       kind=f"<{local_name(element.tag)}> not a number")
        return None
    return text


def nested(cls: type) -> Converter:
    """Converter for a complex child type described by another dataclass."""

    def convert(element: etree._Element, diagnostics: Diagnostics) -> Any:
        return build(cls, element, diagnostics)

    convert.__name__ = f"nested_{cls.__name__}"
    return convert


def parse_atom_datetime(text: str | None, element: etree._Element | None, diagnostics: Diagnostics
                        ) -> datetime | None:
    """Atom dates: RFC 3339. Real files also send date-only and zone-less values; those are read as UTC."""
    if text is None:
        return None
    text = text.strip()
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        diagnostics.at(element, f"not a date-time: {text[:40]!r}; ignored", kind="atom date not a date-time")
        return None
    if value.tzinfo is None:
        diagnostics.at(element, f"date-time {text!r} has no time zone; read as UTC", kind="atom date without zone")
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def stated_utc_offset(text: str | None) -> int | None:
    """The UTC offset (seconds) an Atom date-time states, when it states a local one: ``-08:00`` → -28800.

    ``Z``, ``-00:00`` (RFC 3339 §4.3: "local offset unknown"), zone-less and unreadable values state none. The
    offset says which local clock the producer wrote the feed in, a hint at the custodian's zone that
    ``espi.local_time.zone_for`` uses when the LocalTimeParameters cannot be used (docs/mapping.md §3).
    """
    if text is None:
        return None
    text = text.strip()
    if not text or text[-1] in "Zz" or text.endswith("-00:00"):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    offset = value.utcoffset()
    return None if offset is None else int(offset.total_seconds())


# --- the generic builder -----------------------------------------------------------------------------------

_SPECS: dict[type, dict[str, tuple[str, Converter, bool]]] = {}


def _spec(cls: type) -> dict[str, tuple[str, Converter, bool]]:
    spec = _SPECS.get(cls)
    if spec is None:
        spec = {}
        for f in dataclasses.fields(cls):
            xml = f.metadata.get("xml")
            if xml:
                spec[xml] = (f.name, f.metadata["convert"], f.metadata["many"])
        _SPECS[cls] = spec
    return spec


def build(cls: type, element: etree._Element, diagnostics: Diagnostics) -> Any:
    """Builds ``cls`` from ``element``'s children, matched by local name; unknown children go to ``extra``."""
    spec = _spec(cls)
    values: dict[str, Any] = {}
    many: dict[str, list[Any]] = {}
    extra: list[tuple[str, str]] = []
    for child in element:
        tag = child.tag
        if not isinstance(tag, str):
            continue  # comments, processing instructions
        name = local_name(tag)
        entry = spec.get(name)
        if entry is None:
            # Case slips (ServiceDeliveryPoint vs serviceDeliveryPoint in pre-2019 SDK files) still map.
            entry = spec.get(name[:1].lower() + name[1:]) or spec.get(name[:1].upper() + name[1:])
        if entry is None:
            extra.append((name, (child.text or "").strip()))
            continue
        attr, convert, is_many = entry
        value = convert(child, diagnostics)
        if is_many:
            if value is not None:
                many.setdefault(attr, []).append(value)
        elif attr in values:
            diagnostics.at(child, f"<{name}> repeated; the first one is kept", kind=f"<{name}> repeated")
        else:
            values[attr] = value
    for attr, items in many.items():
        values[attr] = tuple(items)
    if extra and "extra" in _field_names(cls):
        values["extra"] = tuple(extra)
    return cls(**values)


_FIELD_NAMES: dict[type, frozenset[str]] = {}


def _field_names(cls: type) -> frozenset[str]:
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = frozenset(f.name for f in dataclasses.fields(cls))
        _FIELD_NAMES[cls] = names
    return names
