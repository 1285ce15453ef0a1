"""Hostile XML: every classic XML attack is refused quickly, clearly, and without touching the network.

Each attack points at a real HTTP server on 127.0.0.1 that counts requests, so "no network access" is
observed, not assumed; a control request at start-up proves the counter works. Speed is asserted on bytes
consumed, never on seconds (this project does not make timing assertions).
"""

from __future__ import annotations

import http.server
import io
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator

import pytest

from espi.errors import XmlSecurityError, XmlSyntaxError
from espi.validation import validate
from espi.xmlsafe import secure_iterparse, secure_parse
from xsd import schema_path

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"
XML_NAMESPACE = "http://www.w3.org/XML/1998/namespace"
GIB = 1 << 30


class Server:
    """A local HTTP server that answers everything with a tiny DTD/XML body and records each request path."""

    def __init__(self) -> None:
        self.hits: list[str] = []
        hits = self.hits

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hits.append(self.path)
                body = b'<!ENTITY leak "secret-from-the-network">'
                self.send_response(200)
                self.send_header("Content-Type", "application/xml-dtd")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_HEAD = do_GET

            def log_message(self, *args) -> None:  # keep pytest output clean
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    def __enter__(self) -> Server:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def server() -> Iterator[Server]:
    with Server() as srv:
        # Control: the server is reachable and counts, so zero hits later means zero attempts.
        with urllib.request.urlopen(f"{srv.base}/control", timeout=5) as response:
            assert b"ENTITY" in response.read()
        assert srv.hits == ["/control"]
        srv.hits.clear()
        yield srv


def feed_body(inner: str = "") -> str:
    return (f'<feed xmlns="{ATOM}">\n  <id>urn:uuid:1</id>\n  <title>t{inner}</title>\n'
            "  <updated>2024-01-01T00:00:00Z</updated>\n</feed>\n")


def hostile_documents(base: str) -> dict[str, bytes]:
    laughs = "".join(
        f'  <!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">\n' for n in range(1, 10)
    )
    padding = "<!-- " + "x" * 40_000 + " -->\n"  # pushes the DOCTYPE past the first read of the prolog
    docs = {
        "external entity": '<?xml version="1.0"?>\n<!DOCTYPE feed [\n'
                           f'  <!ENTITY e SYSTEM "{base}/secret">\n]>\n' + feed_body("&e;"),
        "billion laughs": '<?xml version="1.0"?>\n<!DOCTYPE feed [\n  <!ENTITY lol0 "lol">\n'
                          + laughs + "]>\n" + feed_body("&lol9;"),
        "external DTD": f'<?xml version="1.0"?>\n<!DOCTYPE feed SYSTEM "{base}/x.dtd">\n'
                        + feed_body("&leak;"),
        "public external DTD": f'<!DOCTYPE feed PUBLIC "-//EVIL//DTD x//EN" "{base}/public.dtd">\n'
                               + feed_body(),
        "parameter entities": '<?xml version="1.0"?>\n<!DOCTYPE feed [\n'
                              f'  <!ENTITY % p SYSTEM "{base}/p.dtd">\n  %p;\n]>\n' + feed_body("&leak;"),
        "late DOCTYPE": '<?xml version="1.0"?>\n' + padding
                        + f'<!DOCTYPE feed SYSTEM "{base}/late.dtd">\n' + feed_body(),
    }
    return {name: text.encode() for name, text in docs.items()}


HOSTILE = list(hostile_documents("http://127.0.0.1:9"))  # names only; each test builds its own with its port


@pytest.mark.parametrize("attack", HOSTILE)
def test_secure_iterparse_refuses(attack: str, server: Server):
    data = hostile_documents(server.base)[attack]
    with pytest.raises(XmlSecurityError) as refused:
        list(secure_iterparse(data, name="attack.xml"))
    assert str(refused.value).startswith("attack.xml:")
    assert "refused" in refused.value.message
    # the error points at the DOCTYPE's own line
    assert refused.value.line == data.decode().splitlines().index(
        next(line for line in data.decode().splitlines() if "<!DOCTYPE" in line)) + 1
    assert server.hits == []


@pytest.mark.parametrize("attack", HOSTILE)
def test_secure_parse_refuses(attack: str, server: Server):
    data = hostile_documents(server.base)[attack]
    with pytest.raises(XmlSecurityError) as refused:
        secure_parse(data, name="attack.xml")
    assert "refused" in refused.value.message
    assert server.hits == []


@pytest.mark.parametrize("attack", HOSTILE)
def test_validate_reports_a_single_security_issue(attack: str, server: Server):
    data = hostile_documents(server.base)[attack]
    for strict in (False, True):
        report = validate(data, strict=strict, name="attack.xml")
        assert not report.valid
        (issue,) = report.errors
        assert issue.kind == "security"
        assert isinstance(issue.cause, XmlSecurityError)
        assert issue.message.startswith("refused")
        assert str(issue).startswith("attack.xml:")
        assert issue.line is not None
    assert server.hits == []


def test_undeclared_entity_is_an_error_and_never_resolved(server: Server):
    """Without a DOCTYPE an entity reference cannot be declared: not well-formed, and nothing is looked up."""
    data = feed_body("&leak;").encode()
    for read in (lambda: list(secure_iterparse(data)), lambda: secure_parse(data)):
        with pytest.raises((XmlSyntaxError, XmlSecurityError)):
            read()
    (issue,) = validate(data).errors
    assert issue.kind in ("syntax", "security")
    assert server.hits == []
    with pytest.raises(XmlSyntaxError) as failed:
        secure_parse(data)
    assert failed.value.line == 3 and "leak" in failed.value.message


def test_undeclared_entity_error_keeps_its_line_in_secure_iterparse():
    data = feed_body("&leak;").encode()
    with pytest.raises(XmlSyntaxError) as failed:
        list(secure_iterparse(data))
    assert failed.value.line == 3 and "leak" in failed.value.message


def test_doctype_refusal_names_the_reason(server: Server):
    data = hostile_documents(server.base)["external DTD"]
    with pytest.raises(XmlSecurityError, match="DOCTYPE"):
        secure_parse(data)


# ----------------------------------------------------------------------------- schema hints on the network


def hinted_documents(base: str) -> dict[str, bytes]:
    """Well-formed, schema-valid documents whose xsi hints all point at the counting server."""
    xsi = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'
    hints = f'xsi:schemaLocation="{ATOM} {base}/atom.xsd {ESPI} {base}/espi.xsd"'
    entry = (
        f'<entry xmlns="{ATOM}" xmlns:espi="{ESPI}" {xsi} {hints}>\n'
        "  <id>urn:uuid:2</id>\n  <title>t</title>\n  <updated>2024-01-01T00:00:00Z</updated>\n"
        f'  <content><espi:ServiceStatus xsi:schemaLocation="{ESPI} {base}/inner.xsd">'
        "<espi:currentStatus>1</espi:currentStatus></espi:ServiceStatus></content>\n</entry>\n"
    )
    status = (
        f'<ServiceStatus xmlns="{ESPI}" {xsi} xsi:noNamespaceSchemaLocation="{base}/none.xsd" '
        f'xsi:schemaLocation="{ESPI} {base}/status.xsd"><currentStatus>1</currentStatus></ServiceStatus>\n'
    )
    return {"entry": entry.encode(), "status": status.encode()}


@pytest.mark.parametrize("kind", ["entry", "status"])
def test_schema_location_hints_are_never_fetched(kind: str, server: Server):
    data = hinted_documents(server.base)[kind]
    assert len(list(secure_iterparse(data))) > 1
    assert secure_parse(data).getroot() is not None
    for strict in (False, True):
        report = validate(data, strict=strict)
        assert report.valid, [str(issue) for issue in report.errors]
    assert server.hits == []


def test_element_in_a_hinted_unknown_namespace_is_not_fetched(server: Server):
    """A strict wildcard meets a namespace we have no schema for; its location hint must not be followed."""
    namespace = f"{server.base}/ns"
    data = (
        f'<entry xmlns="{ATOM}" xmlns:x="{namespace}" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
        f'xsi:schemaLocation="{namespace} {server.base}/x.xsd">\n'
        "  <id>urn:uuid:3</id>\n  <title>t</title>\n  <updated>2024-01-01T00:00:00Z</updated>\n"
        "  <content><x:thing/></content>\n</entry>\n"
    ).encode()
    report = validate(data, name="x.xml")
    (issue,) = report.errors
    assert issue.line == 5
    assert issue.path == "/entry/content/x:thing"
    assert "no schema" in issue.message and namespace in issue.message
    assert server.hits == []


# ------------------------------------------------------------------------------------ 2 GB of nesting


class EndlessNesting(io.RawIOBase):
    """``head`` then ``unit`` repeated up to ``size`` bytes, produced on demand; counts what was read."""

    def __init__(self, unit: bytes = b"<a>", head: bytes = b"", size: int = 2 * GIB):
        self.unit, self.head, self.size = unit, head, size
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def _produce(self, n: int) -> bytes:
        n = max(0, min(n, self.size - self.consumed))
        out = bytearray()
        position = self.consumed
        while len(out) < n:
            if position < len(self.head):
                piece = self.head[position:position + n - len(out)]
            else:
                offset = (position - len(self.head)) % len(self.unit)
                count = (n - len(out) + offset) // len(self.unit) + 1
                piece = (self.unit * count)[offset:offset + n - len(out)]
            out += piece
            position += len(piece)
        self.consumed = position
        return bytes(out)

    def read(self, size: int = -1) -> bytes:
        return self._produce(64 * 1024 if size is None or size < 0 else size)

    def readinto(self, buffer) -> int:
        data = self._produce(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def test_nesting_stream_really_is_2_gb_and_lazy():
    stream = EndlessNesting()
    assert stream.size == 2 * GIB
    assert stream.read(7) == b"<a><a><"
    assert stream.read(5) == b"a><a>"
    assert stream.consumed == 12


NESTING: dict[str, Callable[[EndlessNesting], object]] = {
    "secure_iterparse": lambda stream: list(secure_iterparse(stream, name="deep.xml")),
    "secure_parse": lambda stream: secure_parse(stream, name="deep.xml"),
}


@pytest.mark.parametrize("reader", list(NESTING))
def test_deep_nesting_is_refused_after_a_tiny_read(reader: str):
    stream = EndlessNesting()
    with pytest.raises(XmlSecurityError) as refused:
        NESTING[reader](stream)
    assert "depth" in refused.value.message.lower()
    assert stream.consumed < 1024 * 1024, stream.consumed


@pytest.mark.parametrize("head", [b"", f'<?xml version="1.0"?>\n<feed xmlns="{ATOM}">\n  <entry>'.encode()],
                         ids=["bare", "inside-a-feed"])
def test_validate_refuses_deep_nesting_after_a_tiny_read(head: bytes):
    stream = EndlessNesting(head=head)
    report = validate(stream, name="deep.xml")
    (issue,) = report.errors
    assert issue.kind == "security"
    assert "depth" in issue.message.lower()
    assert stream.consumed < 1024 * 1024, stream.consumed


def test_deep_nesting_past_the_prolog_is_refused_too():
    """The depth limit also applies after the prolog check, in the main parse (root seen, then nesting)."""
    head = f'<feed xmlns="{ATOM}">'.encode() + b" " * 100_000
    for run in (lambda s: list(secure_iterparse(s)), secure_parse):
        stream = EndlessNesting(head=head)
        with pytest.raises(XmlSecurityError):
            run(stream)
        assert 100_000 < stream.consumed < 1024 * 1024
    stream = EndlessNesting(head=head)
    assert validate(stream).errors[0].kind == "security"
    assert stream.consumed < 1024 * 1024


# ------------------------------------------------------------------------------ schema loading stays local


def test_schemas_build_and_validate_with_the_network_cut_off(monkeypatch):
    """Building both schema sets from scratch and validating opens no socket (Atom imports a W3C URL)."""
    import socket

    from espi import validation

    assert "https://www.w3.org/2001/03/xml.xsd" in schema_path("atom.xsd").read_text(encoding="utf-8")
    attempts: list[tuple] = []

    def refuse(*args, **kwargs):
        attempts.append(args)
        raise OSError("network disabled by this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    document = hinted_documents("https://www.naesb.org")["entry"]
    for mode in (validation.STRICT, validation.LENIENT):
        schema = validation._build_schema(mode)
        assert {ATOM, ESPI, "http://naesb.org/espi/customer", XML_NAMESPACE} <= set(schema.maps.namespaces)
        assert all(s.url.startswith("file:") for s in schema.maps.namespaces[XML_NAMESPACE])
        assert not any(error for error in schema.iter_errors(secure_parse(document)))
    assert validate(document).valid
    assert attempts == []


def test_remote_schema_imports_are_refused_not_fetched(server: Server):
    import xmlschema

    from espi.validation import offline_schema_options

    wrapper = (
        '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema" targetNamespace="urn:t">'
        f'<xs:import namespace="urn:remote" schemaLocation="{server.base}/remote.xsd"/></xs:schema>'
    )
    with pytest.warns(xmlschema.XMLSchemaImportWarning, match="remote"):
        schema = xmlschema.XMLSchema(wrapper, **offline_schema_options())
    assert "urn:remote" not in schema.maps.namespaces
    assert server.hits == []


def test_offline_opener_reads_files_only(server: Server, tmp_path):
    from espi.validation import offline_schema_options

    opener = offline_schema_options()["opener"]
    local = tmp_path / "local.xsd"
    local.write_bytes(b"<x/>")
    with opener.open(local.as_uri()) as handle:
        assert handle.read() == b"<x/>"
    with pytest.raises(urllib.error.URLError):
        opener.open(f"{server.base}/through-the-opener")
    assert server.hits == []
