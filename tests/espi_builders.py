"""A tiny builder of Green Button (Atom + ESPI) documents for tests: the same document can be written in every
namespace style real custodians use (espi.md §2.4), with or without link types. Documents are written by the
tests themselves, never copied from the shared samples.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.sax.saxutils import escape, quoteattr

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"


class Raw(str):
    """XML inserted verbatim (comments, deliberately odd text)."""


def E(name: str, *children) -> tuple:
    """An ESPI element; children are elements, text (escaped) or ``Raw``."""
    return (name, children)


#: namespace style → (atom prefix, root declarations, espi prefix, declarations on each top-level resource)
STYLES = {
    "espi-prefix": ("", f' xmlns="{ATOM}" xmlns:espi="{ESPI}"', "espi:", ""),
    "default-ns-on-resource": ("", f' xmlns="{ATOM}"', "", f' xmlns="{ESPI}"'),
    "ns0-prefix": ("", f' xmlns="{ATOM}"', "ns0:", f' xmlns:ns0="{ESPI}"'),
    "atom-prefix": ("atom:", f' xmlns:atom="{ATOM}" xmlns="{ESPI}"', "", ""),
    "no-namespaces": ("", "", "", ""),
}


def render(node, prefix: str, declarations: str = "") -> str:
    if isinstance(node, Raw):
        return str(node)
    if isinstance(node, str | int):
        return escape(str(node))
    name, children = node
    inner = "".join(render(child, prefix) for child in children)
    return f"<{prefix}{name}{declarations}>{inner}</{prefix}{name}>"


@dataclass
class Ent:
    """One Atom entry: links (no ``type`` attributes unless given), content resources, ``updated``."""

    self_href: str | None
    up_href: str | None = None
    related: tuple[str, ...] = ()
    content: tuple = ()
    updated: str = "2024-08-01T00:00:00Z"
    id: str | None = None
    link_types: dict[str, str] = field(default_factory=dict)


def document(entries: list[Ent], style: str = "espi-prefix") -> bytes:
    a, root_declarations, p, resource_declarations = STYLES[style]
    out = [f'<?xml version="1.0" encoding="UTF-8"?>\n<{a}feed{root_declarations}>',
           f"<{a}id>urn:uuid:00000000-0000-4000-8000-000000000007</{a}id><{a}title>quirks</{a}title>",
           f"<{a}updated>2024-08-01T00:00:00Z</{a}updated>\n"]
    for entry in entries:
        links = []
        for rel, href in [("self", entry.self_href), ("up", entry.up_href)] + [("related", h) for h in entry.related]:
            if href is not None:
                kind = entry.link_types.get(href)
                type_attr = f" type={quoteattr(kind)}" if kind else ""
                links.append(f"<{a}link rel={quoteattr(rel)} href={quoteattr(href)}{type_attr}/>")
        identifier = f"<{a}id>{entry.id}</{a}id>" if entry.id else ""
        content = "".join(render(resource, p, resource_declarations) for resource in entry.content)
        out.append(f"<{a}entry>{identifier}{''.join(links)}<{a}content>{content}</{a}content>"
                   f"<{a}updated>{entry.updated}</{a}updated></{a}entry>\n")
    out.append(f"</{a}feed>\n")
    return "".join(out).encode()


def reading_type(acc=4, commodity=1, flow=1, interval=3600, kind=12, p=0, uom=72, *extra) -> tuple:
    fields = [("accumulationBehaviour", acc), ("commodity", commodity), ("flowDirection", flow),
              ("intervalLength", interval), ("kind", kind), ("powerOfTenMultiplier", p), ("uom", uom)]
    return E("ReadingType", *(E(name, value) for name, value in fields if value is not None), *extra)


def reading(value=None, start=None, duration=None, cost=None, qualities=()) -> tuple:
    children = []
    if cost is not None:
        children.append(E("cost", cost))
    children += [E("ReadingQuality", E("quality", q)) for q in qualities]
    if start is not None:
        children.append(E("timePeriod", E("duration", duration), E("start", start)))
    if value is not None:
        children.append(E("value", value))
    return E("IntervalReading", *children)


def block(start, duration, *readings) -> tuple:
    return E("IntervalBlock", E("interval", E("duration", duration), E("start", start)), *readings)
