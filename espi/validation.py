"""XSD validation of Green Button (NAESB REQ.21 ESPI) XML against the official schemas, offline, streaming.

What is validated: a whole document — an Atom ``feed`` or ``entry`` (whose ``atom:content`` holds ``espi:``
and ``cust:`` resources), or a bare ESPI/customer resource such as ``espi:BatchList`` or
``espi:ServiceStatus`` — against one schema set holding all three namespaces. ``atom:content`` is a *strict*
wildcard, so the Atom, usage (``espi.xsd``) and customer (``customer.xsd``) schemas must be loaded together; a
small wrapper schema generated here imports the three shipped files (see ``xsd/PROVENANCE.md``).

Two modes, because the newest Atom schema disagrees with nearly all real data:

* **strict** — NAESB ESPI 4.0 ``espi.xsd`` + ``customer.xsd`` + the GBA Atom schema whose ``link/@type`` is
  required (``atom.xsd``). This is what certification expects today; most pre-2022 files fail it on every
  link.
* **lenient** (the default) — the same, with the older GBA Atom schema where ``link/@type`` is optional
  (``atom-lenient.xsd``). Failures here are real structural or content errors worth a data custodian's
  attention.

Schema validity is necessary, not sufficient: code lists are unions with their integer base type (any UInt16
is a valid ``kind``), and an entry with no links validates. Semantic checks belong elsewhere.

Guarantees:

* **No network, ever.** The Atom schemas import ``xml.xsd`` from the W3C; that URL is mapped to the copy
  bundled with ``xmlschema``. Schemas are loaded with ``allow='local'`` (remote URLs are refused before any
  connection), through an ``OpenerDirector`` that can only open ``file:`` URLs, without ``xmlschema``'s
  fallback locations (several are remote), and instance ``xsi:schemaLocation`` hints are ignored — real files
  point at missing local files or at https://www.naesb.org/espi.xsd.
* **Hostile XML is refused by greenbridge's own rules.** The instance is read only through
  :func:`espi.xmlsafe.secure_iterparse` (no DOCTYPE, no entities, no network, depth limit); ``xmlschema`` only
  ever sees lxml elements, never the bytes. Refusals and not-well-formed input come back as a single issue
  (``kind`` ``"security"`` / ``"syntax"``) carrying the line, not as a crash.
* **One pass, bounded memory.** The document is streamed once: each child of the root (an ``atom:entry`` in a
  feed) is validated as soon as it is complete and then pruned; the root is validated last against its content
  model with the pruned children as placeholders. Memory is therefore bounded by the largest single entry, not
  by the file, and non-seekable streams work. For every public sample this reports exactly the errors a
  whole-tree validation reports (``tests/test_validation.py`` checks it).
* Schemas are built lazily, once per process per mode (about a second each), never at import time.
"""

from __future__ import annotations

import re
import threading
import urllib.request
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from espi.errors import EspiError, XmlSecurityError, XmlSyntaxError
from espi.namespaces import ATOM, CUSTOMER, ESPI, local_name, namespace_of
from espi.xmlsafe import Source, secure_iterparse, source_name
from xsd import SCHEMA_DIR, schema_path

if TYPE_CHECKING:
    import xmlschema
    from lxml import etree

__all__ = [
    "KIND_NOT_ESPI",
    "KIND_SCHEMA",
    "KIND_SECURITY",
    "KIND_SYNTAX",
    "LENIENT",
    "STRICT",
    "ValidationIssue",
    "ValidationReport",
    "iter_issues",
    "load_schema",
    "offline_schema_options",
    "validate",
]

STRICT = "strict"
LENIENT = "lenient"

#: Which Atom schema each mode uses; ``espi.xsd`` and ``customer.xsd`` are common to both.
_ATOM_SCHEMA = {STRICT: "atom.xsd", LENIENT: "atom-lenient.xsd"}

#: Namespaces a Green Button document's root element may belong to.
_ROOT_NAMESPACES = (ATOM, ESPI, CUSTOMER)

_XHTML = "http://www.w3.org/1999/xhtml"
_XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"

#: Where the W3C publishes the schema for the ``xml:`` namespace (the Atom schemas import the first one).
_W3C_XML_XSD_URLS = frozenset(
    f"{scheme}://www.w3.org/{path}"
    for scheme in ("http", "https")
    for path in ("2001/03/xml.xsd", "2001/xml.xsd", "2009/01/xml.xsd")
)

# Issue kinds.
KIND_SCHEMA = "schema"
KIND_SYNTAX = "syntax"
KIND_SECURITY = "security"
KIND_NOT_ESPI = "not-espi"


@dataclass(frozen=True)
class ValidationIssue:
    """One problem found in a document.

    ``line`` is the 1-based line of the offending element's start tag (for an unexpected child, the child's),
    or None when the input has no usable line. ``path`` is an XPath-like location using the document's own
    prefixes (``/feed/entry[2]/content/espi:UsagePoint``; ``[n]`` is shown where an element can repeat).
    ``kind`` is ``"schema"``, ``"syntax"`` (not well-formed), ``"security"`` (refused by
    :mod:`espi.xmlsafe`) or ``"not-espi"`` (well-formed, but not a Green Button document).
    """

    source: str
    line: int | None
    path: str
    message: str
    kind: str = KIND_SCHEMA
    #: The refusal or syntax error behind a ``security``/``syntax`` issue, for callers that want to re-raise.
    cause: EspiError | None = field(default=None, compare=False, repr=False)

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.line else self.source
        text = f"{where}: {self.message}"
        return f"{text} ({self.path})" if self.path else text


@dataclass
class ValidationReport:
    """What :func:`validate` found: ``errors`` in line order; ``truncated`` if ``max_errors`` cut it short."""

    source: str
    mode: str
    valid: bool
    errors: list[ValidationIssue]
    truncated: bool = False

    def __str__(self) -> str:
        if self.valid:
            return f"{self.source}: valid ({self.mode})"
        count = len(self.errors)
        more = "+" if self.truncated else ""
        return f"{self.source}: {count}{more} error{'s' if count != 1 or more else ''} ({self.mode})"


# --------------------------------------------------------------------------------------------------- schemas

_schema_lock = threading.Lock()
_schemas: dict[str, xmlschema.XMLSchema] = {}


def _bundled_schema(*parts: str) -> Path:
    """A schema file shipped inside the ``xmlschema`` package (it bundles the W3C ``xml.xsd`` and XHTML)."""
    import xmlschema

    path = Path(xmlschema.__file__).resolve().parent.joinpath("schemas", *parts)
    if not path.is_file():
        raise RuntimeError(f"xmlschema {xmlschema.__version__} does not bundle {'/'.join(parts)}; "
                           "greenbridge needs it to validate without network access")
    return path


def _local_only_opener() -> urllib.request.OpenerDirector:
    """An opener that can read ``file:`` URLs and nothing else (``http``/``https``/``ftp`` raise URLError).

    ``allow='local'`` already refuses remote URLs before any connection; this is the second lock on the door,
    so a future ``xmlschema`` change in access control could still not reach the network.
    """
    opener = urllib.request.OpenerDirector()
    opener.add_handler(urllib.request.FileHandler())
    opener.add_handler(urllib.request.UnknownHandler())
    return opener


def offline_schema_options() -> dict[str, Any]:
    """The ``xmlschema`` options that keep schema loading on this machine (shared with the tests).

    ``allow='local'`` refuses remote URLs before any connection; the opener can only read ``file:`` URLs; the
    W3C ``xml.xsd`` URLs map to xmlschema's bundled copy; and ``use_fallback=False`` drops xmlschema's
    built-in location table (several entries are remote) in favour of our explicit ``locations``.
    """
    xml_xsd = _bundled_schema("XML", "xml.xsd").as_uri()

    def uri_mapper(uri: str) -> str:
        return xml_xsd if uri in _W3C_XML_XSD_URLS else uri

    return {
        "allow": "local",
        "defuse": "always",
        "uri_mapper": uri_mapper,
        "opener": _local_only_opener(),
        "use_fallback": False,
        # Atom text constructs may hold XHTML (a strict wildcard): load the bundled copy up front, as
        # xmlschema's own fallback would, but from disk and at build time.
        "locations": {_XHTML: _bundled_schema("XHTML", "xhtml1-strict.xsd").as_uri()},
    }


def _build_schema(mode: str) -> xmlschema.XMLSchema:
    import xmlschema

    # The first import of a namespace wins, so importing our choice of Atom schema first makes espi.xsd's and
    # customer.xsd's own ``import schemaLocation="atom.xsd"`` a no-op in lenient mode.
    imports = ((ATOM, _ATOM_SCHEMA[mode]), (ESPI, "espi.xsd"), (CUSTOMER, "customer.xsd"))
    wrapper = "\n".join([
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"'
        ' targetNamespace="urn:greenbridge:espi-wrapper" elementFormDefault="qualified">',
        *(f'  <xs:import namespace="{ns}" schemaLocation="{schema_path(file).as_uri()}"/>'
          for ns, file in imports),
        "</xs:schema>",
    ])
    with warnings.catch_warnings():
        # xmlschema reports an unresolvable import as a warning and carries on with a partial schema; for us
        # that would silently weaken validation, so it is an error.
        warnings.simplefilter("error", xmlschema.XMLSchemaImportWarning)
        warnings.simplefilter("error", xmlschema.XMLSchemaIncludeWarning)
        return xmlschema.XMLSchema(wrapper, base_url=SCHEMA_DIR.as_uri(), **offline_schema_options())


def load_schema(strict: bool = False) -> xmlschema.XMLSchema:
    """The schema set for a mode (built on first use, then cached for the life of the process)."""
    mode = STRICT if strict else LENIENT
    schema = _schemas.get(mode)
    if schema is None:
        with _schema_lock:
            schema = _schemas.get(mode)
            if schema is None:
                schema = _schemas[mode] = _build_schema(mode)
    return schema


# ------------------------------------------------------------------------------------------------ validation


def validate(
    source: Source,
    *,
    strict: bool = False,
    name: str | None = None,
    max_errors: int | None = 100,
    on_read: Callable[[int], None] | None = None,
) -> ValidationReport:
    """Validates one document (path, bytes or binary stream) and returns a report.

    At most ``max_errors`` issues are collected (``None``: no limit); when more exist, reading stops there and
    the report is ``truncated``. Problems with the document never raise; ``OSError`` from opening or reading
    the source does. ``on_read`` is called with the number of bytes read (progress bars).
    """
    if max_errors is not None and max_errors < 1:
        raise ValueError("max_errors must be at least 1 (or None for no limit)")
    label = source_name(source, name)
    errors: list[ValidationIssue] = []
    truncated = False
    issues = iter_issues(source, strict=strict, name=label, on_read=on_read)
    try:
        for issue in issues:
            if max_errors is not None and len(errors) >= max_errors:
                truncated = True
                break
            errors.append(issue)
    finally:
        issues.close()
    # Root-level errors are only known when the root closes; present everything in document order, except
    # that a syntax or security stop (always the last thing found) stays last even without a line.
    errors.sort(key=lambda issue: (issue.kind in (KIND_SYNTAX, KIND_SECURITY), issue.line or 0))
    return ValidationReport(label, STRICT if strict else LENIENT, not errors, errors, truncated)


def iter_issues(
    source: Source, *, strict: bool = False, name: str | None = None, on_read: Callable[[int], None] | None = None
) -> Iterator[ValidationIssue]:
    """Yields issues as the document is read, in one pass; stop iterating to stop reading.

    Schema issues come in reading order except that those about the root element itself (its attributes and
    the sequence of its children) come last, once the root is closed.
    """
    label = source_name(source, name)
    schema = load_schema(strict)  # before touching the input, so a schema problem is not blamed on it
    try:
        yield from _stream_issues(source, label, schema, on_read)
    except XmlSecurityError as exc:
        yield ValidationIssue(label, exc.line, "", exc.message, KIND_SECURITY, exc)
    except XmlSyntaxError as exc:
        yield ValidationIssue(label, exc.line, "", exc.message, KIND_SYNTAX, exc)


def _stream_issues(source: Source, label: str, schema: xmlschema.XMLSchema,
                   on_read: Callable[[int], None] | None = None) -> Iterator[ValidationIssue]:
    from xmlschema.validators import XsdGroup

    root: etree._Element | None = None
    root_decl: Any = None
    group: XsdGroup | None = None
    depth = 0
    seen: dict[str, int] = {}  # how many children of the root with each tag have started so far

    for event, elem in secure_iterparse(source, events=("start", "end"), name=label, on_read=on_read):
        if event == "start":
            depth += 1
            if depth == 1:
                root = elem
                root_decl = _root_declaration(schema, elem.tag)
                if root_decl is None:
                    yield _not_espi_issue(elem, label)
                    return  # nothing more to learn from the rest of the file
                content = root_decl.type.content
                group = content if isinstance(content, XsdGroup) else None
            elif depth == 2:
                seen[elem.tag] = seen.get(elem.tag, 0) + 1
            continue

        depth -= 1
        if depth == 1:
            # A child of the root is complete: validate its subtree against the declaration the root's content
            # model gives it (a local element or a wildcard), then drop its content. It stays as an empty
            # placeholder, which is all the root's own content-model check (max_depth=1 below) looks at.
            decl = group.match_element(elem.tag) if group is not None else None
            if decl is None:
                continue  # not allowed here at all: the root's check reports it, with the right context
            yield from _check(schema, decl, elem, label, (elem, seen[elem.tag]), None)
            del elem[:]
        elif depth == 0:
            assert root is not None
            yield from _check(schema, root_decl, root, label, None, 1)


def _check(schema: xmlschema.XMLSchema, decl: Any, elem: etree._Element, label: str,
           position: tuple[Any, int] | None, max_depth: int | None) -> Iterator[ValidationIssue]:
    """Validates ``elem`` against ``decl``; a subtree xmlschema cannot process is one issue, not a crash."""
    import xmlschema

    try:
        errors = list(decl.iter_errors(elem, max_depth=max_depth))
    except xmlschema.XMLSchemaException as exc:
        # Known trigger: an xsi:type naming a type that does not exist (xmlschema raises, not reports, it).
        culprit, message = _bad_xsi_type(schema, elem)
        if culprit is None:
            culprit, message = elem, f"cannot be validated: {_readable(str(exc))}"
        yield ValidationIssue(label, culprit.sourceline, _path(culprit, position), message, KIND_SCHEMA)
        return
    for error in errors:
        yield _schema_issue(error, label, position)


def _bad_xsi_type(schema: xmlschema.XMLSchema, elem: etree._Element) -> tuple[Any, str]:
    """The first element under ``elem`` whose ``xsi:type`` names no known type, and why; or (None, "")."""
    for node in elem.iter("{*}*"):
        value = node.get(_XSI_TYPE)
        if value is None:
            continue
        prefix, _, local = value.strip().rpartition(":")
        namespace = node.nsmap.get(prefix or None)
        if prefix and namespace is None:
            return node, f"xsi:type '{value}' uses the undeclared prefix '{prefix}'"
        if (f"{{{namespace}}}{local}" if namespace else local) not in schema.maps.types:
            return node, f"xsi:type names an unknown type '{value}'"
    return None, ""


def _root_declaration(schema: xmlschema.XMLSchema, tag: str) -> Any:
    """The global declaration a Green Button root element must match, or None."""
    if namespace_of(tag) not in _ROOT_NAMESPACES:
        return None  # e.g. an xs:schema root must not be "validated" against the meta-schema
    return schema.maps.elements.get(tag)


def _not_espi_issue(root: etree._Element, label: str) -> ValidationIssue:
    tag = root.tag
    local, namespace = local_name(tag), namespace_of(tag)
    where = f"in namespace {namespace}" if namespace else "in no namespace"
    known = [ns for ns in _ROOT_NAMESPACES if f"{{{ns}}}{local}" in _global_tags()]
    if known and namespace not in _ROOT_NAMESPACES:
        message = (f"not a Green Button document: root element '{local}' is {where}; "
                   f"expected it in {' or '.join(known)}")
    else:
        message = (f"not a Green Button document: root element '{local}' ({where}) is not an Atom feed or "
                   "entry nor an ESPI or retail-customer resource")
    return ValidationIssue(label, root.sourceline, f"/{_display_name(root)}", message, KIND_NOT_ESPI)


def _global_tags() -> set[str]:
    schema = _schemas.get(LENIENT) or _schemas.get(STRICT) or load_schema()
    return {str(tag) for tag in schema.maps.elements if namespace_of(str(tag)) in _ROOT_NAMESPACES}


# ------------------------------------------------------------------------------------------ error rendering

_CLARK = re.compile(r"\{[^{}]*\}")
_SPACES = re.compile(r"\s+")
_COMPONENT = re.compile(r"Xsd\w+\(name='([^']*)'\)")
_MISSING_COMPONENT = re.compile(r"global component '([^']*)' not found")


def _schema_issue(error: Any, label: str, position: tuple[Any, int] | None) -> ValidationIssue:
    """Turns an xmlschema validation error into a short, located issue."""
    elem = error.elem
    target = elem
    invalid_child = getattr(error, "invalid_child", None)
    if invalid_child is not None:
        target = invalid_child  # point at the unexpected element, not its parent
    line = getattr(target, "sourceline", None) if target is not None else None
    path = _path(target, position) if target is not None else ""
    return ValidationIssue(label, line, path, _message(error), KIND_SCHEMA)


def _message(error: Any) -> str:
    from xmlschema.validators import XMLSchemaChildrenValidationError, XMLSchemaDecodeError

    if isinstance(error, XMLSchemaChildrenValidationError):
        expected = [tag if tag.startswith("from ") else local_name(tag).rpartition(":")[2]
                    for tag in error.expected_tags]
        if error.invalid_tag is None:
            message = f"element '{local_name(error.elem.tag)}' is incomplete"
            if expected:
                message += f": missing {_alternatives(expected)}"
            return message
        message = f"unexpected element '{local_name(error.invalid_tag)}'"
        particle, occurs = error.particle, error.occurs
        particle_name = getattr(particle, "local_name", None)
        if particle_name and occurs and particle.min_occurs > occurs:
            message += (f" ('{particle_name}' occurs {occurs} time{'s' if occurs != 1 else ''}, "
                        f"at least {particle.min_occurs} required)")
        elif particle_name and particle.max_occurs is not None and occurs > particle.max_occurs:
            message += f" ('{particle_name}' may occur at most {particle.max_occurs} times)"
        if expected:
            message += f"; expected {_alternatives(expected)}"
        return message

    reason = _readable(error.reason or "")
    value = error.obj if isinstance(error.obj, str) else None
    if isinstance(error, XMLSchemaDecodeError) and value is not None:
        validator = error.validator
        type_name = getattr(validator, "prefixed_name", None) or getattr(validator, "local_name", None)
        return f"invalid {type_name} value {_quote(value)}" if type_name else f"invalid value {_quote(value)}"
    if reason.startswith("unavailable namespace") and error.elem is not None and error.obj is error.elem:
        namespace = namespace_of(error.elem.tag)
        return (f"element '{local_name(error.elem.tag)}' is in namespace '{namespace}', for which there is "
                "no schema (only Atom, ESPI and customer elements may appear here)")
    if value is not None and reason.startswith("value "):
        return f"invalid value {_quote(value)}: {reason[len('value '):]}"
    return reason or "invalid"


def _readable(text: str) -> str:
    """xmlschema text made plain: no ``{namespace}`` parts, component reprs, KeyError quotes, final stop."""
    text = _CLARK.sub("", text.strip().strip('"'))
    text = _MISSING_COMPONENT.sub(r"unknown schema component '\1'", text)
    text = _COMPONENT.sub(r"type '\1'", text)  # XsdComplexType(name='UsagePoint') → type 'UsagePoint'
    return _SPACES.sub(" ", text).strip().rstrip(".")


def _alternatives(names: list[str]) -> str:
    quoted = [name if name.startswith("from ") else f"'{name}'" for name in dict.fromkeys(names)]
    return quoted[0] if len(quoted) == 1 else "one of " + ", ".join(quoted)


def _quote(value: str) -> str:
    shown = value if len(value) <= 60 else value[:57] + "..."
    return repr(shown)


def _display_name(elem: etree._Element) -> str:
    local = local_name(elem.tag)
    return f"{elem.prefix}:{local}" if elem.prefix else local


def _path(elem: etree._Element, position: tuple[Any, int] | None) -> str:
    """``/feed/entry[3]/content/espi:UsagePoint/espi:ServiceCategory``.

    Below the root's children every sibling is known, so ``[n]`` appears when the parent has more than one
    child with that name. For the root's children (whose later siblings may not be read yet) it appears for
    ``atom:entry`` and for any but the first of a name; ``position`` gives the index of the child currently
    being validated without counting its (possibly many) predecessors.
    """
    steps: list[str] = []
    node = elem
    while node is not None:
        parent = node.getparent()
        step = _display_name(node)
        if parent is not None:
            if parent.getparent() is None:  # a child of the root
                if position is not None and node is position[0]:
                    index = position[1]
                else:
                    index = 1 + sum(1 for _ in node.itersiblings(node.tag, preceding=True))
                if index > 1 or node.tag == f"{{{ATOM}}}entry":
                    step += f"[{index}]"
            else:
                index = 1 + sum(1 for _ in node.itersiblings(node.tag, preceding=True))
                if index > 1 or next(node.itersiblings(node.tag), None) is not None:
                    step += f"[{index}]"
        steps.append(step)
        node = parent
    return "/" + "/".join(reversed(steps))
