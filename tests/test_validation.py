"""XSD validation (espi.validation) and the ``greenbridge validate`` command.

The public samples' expected results come from ../shared/espi/samples/SOURCES.md, produced independently with
xmlschema over a whole-tree parse; we read that table rather than restating it, and compute expected line
numbers from the raw file text, not from any parser.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from pathlib import Path

import pytest
from conftest import SAMPLES_DIR, sample_files

from espi.validation import (
    LENIENT,
    STRICT,
    ValidationIssue,
    ValidationReport,
    iter_issues,
    load_schema,
    validate,
)
from espi.xmlsafe import secure_parse
from greenbridge.cli import main

ATOM = "http://www.w3.org/2005/Atom"
ESPI = "http://naesb.org/espi"


# ------------------------------------------------------------------------------------------------- helpers


def line_of(text: str, needle: str, occurrence: int = 1) -> int:
    """1-based line of the ``occurrence``-th ``needle`` in ``text`` (independent of any XML parser)."""
    start = -1
    for _ in range(occurrence):
        start = text.index(needle, start + 1)
    return text.count("\n", 0, start) + 1


def read_oracle() -> dict[str, tuple[str, str]]:
    """file name → (4.0 official, 4.0 lenient) cells of the SOURCES.md table, e.g. ("FAIL (46)", "PASS")."""
    path = SAMPLES_DIR / "SOURCES.md"
    if not path.is_file():
        return {}
    rows: dict[str, tuple[str, str]] = {}
    header: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if cells and cells[0] == "file" and "4.0 official" in cells:
            header = cells
            continue
        match = re.fullmatch(r"`([^`]+\.xml)`", cells[0]) if cells else None
        if header and match and len(cells) == len(header):
            rows[match.group(1)] = (cells[header.index("4.0 official")], cells[header.index("4.0 lenient")])
    return rows


ORACLE = read_oracle()
SAMPLES = sample_files()


def outcome(report: ValidationReport) -> str:
    """A report in SOURCES.md's notation: ``PASS`` or ``FAIL (n)``."""
    return "PASS" if report.valid else f"FAIL ({len(report.errors)})"


def issue_line(error) -> int:
    """The line the streaming validator is meant to report for an xmlschema error (the offending child's)."""
    child = getattr(error, "invalid_child", None)
    return (child if child is not None else error.elem).sourceline


def feed(entries: str = "", *, link_type: bool = True) -> str:
    """A small, schema-valid Atom feed of our own; ``entries`` is spliced in after the feed's own link."""
    feed_type = ' type="espi-feed/UsagePoint"' if link_type else ""
    entry_type = ' type="espi-entry/UsagePoint"' if link_type else ""
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<feed xmlns="{ATOM}" xmlns:espi="{ESPI}">
  <id>urn:uuid:7e3a0c52-5a8e-4c1e-9d1f-0c0ffee00001</id>
  <title>greenbridge test feed</title>
  <updated>2024-05-01T00:00:00Z</updated>
  <link rel="self" href="https://dc.example/espi/1_1/resource/RetailCustomer/1/UsagePoint"{feed_type}/>
  <entry>
    <id>urn:uuid:7e3a0c52-5a8e-4c1e-9d1f-0c0ffee00002</id>
    <link rel="self" href="https://dc.example/espi/1_1/resource/RetailCustomer/1/UsagePoint/1"{entry_type}/>
    <link rel="up" href="https://dc.example/espi/1_1/resource/RetailCustomer/1/UsagePoint"{feed_type}/>
    <title>Main meter</title>
    <content>
      <espi:UsagePoint>
        <espi:ServiceCategory><espi:kind>0</espi:kind></espi:ServiceCategory>
        <espi:status>1</espi:status>
      </espi:UsagePoint>
    </content>
    <published>2024-05-01T00:00:00Z</published>
    <updated>2024-05-01T00:00:00Z</updated>
  </entry>{entries}
</feed>
"""


def interval_entry(readings: str) -> str:
    return f"""
  <entry>
    <id>urn:uuid:7e3a0c52-5a8e-4c1e-9d1f-0c0ffee00003</id>
    <link rel="self" href="https://dc.example/espi/1_1/resource/IntervalBlock/1"
          type="espi-entry/IntervalBlock"/>
    <link rel="up" href="https://dc.example/espi/1_1/resource/IntervalBlock" type="espi-feed/IntervalBlock"/>
    <title/>
    <content>
      <espi:IntervalBlock>
        <espi:interval><espi:duration>7200</espi:duration><espi:start>1714521600</espi:start></espi:interval>{readings}
      </espi:IntervalBlock>
    </content>
    <published>2024-05-01T00:00:00Z</published>
    <updated>2024-05-01T00:00:00Z</updated>
  </entry>"""


GOOD_READING = """
        <espi:IntervalReading>
          <espi:timePeriod><espi:duration>3600</espi:duration><espi:start>1714521600</espi:start></espi:timePeriod>
          <espi:value>1250</espi:value>
        </espi:IntervalReading>"""

SWAPPED_READING = """
        <espi:IntervalReading>
          <espi:value>980</espi:value>
          <espi:timePeriod><espi:duration>3600</espi:duration><espi:start>1714525200</espi:start></espi:timePeriod>
        </espi:IntervalReading>"""


# ------------------------------------------------------------------------------------- the public samples


def test_oracle_covers_every_sample():
    """Guards the tests below against a table we failed to read: every sample has a row and vice versa."""
    if not SAMPLES:
        pytest.skip(f"shared samples not available ({SAMPLES_DIR})")
    assert {path.name for path in SAMPLES} == set(ORACLE)
    assert all(re.fullmatch(r"PASS|FAIL \(\d+\)", cell) for row in ORACLE.values() for cell in row)


@pytest.mark.samples
@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.name)
def test_samples_match_sources_md(path: Path):
    """PASS/FAIL and the error count for both ESPI 4.0 columns, exactly as SOURCES.md records them."""
    official, lenient = ORACLE[path.name]
    strict_report = validate(path, strict=True, max_errors=None)
    lenient_report = validate(path, max_errors=None)
    assert (strict_report.mode, lenient_report.mode) == (STRICT, LENIENT)
    assert outcome(strict_report) == official
    assert outcome(lenient_report) == lenient
    for report in (strict_report, lenient_report):
        assert report.source == str(path)
        assert not report.truncated
        assert all(issue.line and issue.kind == "schema" and issue.path.startswith("/")
                   for issue in report.errors)


@pytest.mark.samples
@pytest.mark.parametrize("path", SAMPLES, ids=lambda path: path.name)
def test_streaming_finds_what_whole_tree_validation_finds(path: Path):
    """The one-pass, pruning validator finds the same errors, on the same lines, as whole-tree xmlschema."""
    modes = (False, True) if path.stat().st_size < 200_000 else (False,)
    for strict in modes:
        whole = Counter(issue_line(error) for error in load_schema(strict).iter_errors(secure_parse(path)))
        streamed = Counter(issue.line for issue in iter_issues(path, strict=strict))
        assert streamed == whole, f"strict={strict}"


def test_first_official_error_is_the_untyped_feed_link(sample):
    path = sample("openespi_test_usage_data.xml")
    report = validate(path, strict=True)
    first = report.errors[0]
    assert first.message == "missing required attribute 'type'"
    assert first.path == "/feed/link"
    assert first.line == line_of(path.read_text(encoding="utf-8"), "<link ")
    assert str(first) == f"{path}:{first.line}: missing required attribute 'type' (/feed/link)"
    assert validate(path).valid  # the only problem is the link type


def test_prefixed_atom_entry_error_keeps_document_prefixes(sample):
    path = sample("cmdtest_interval_block_1.xml")
    text = path.read_text(encoding="utf-8")
    report = validate(path, strict=True)
    assert [issue.message for issue in report.errors] == ["missing required attribute 'type'"] * 2
    # children of the root are numbered from the second of a name on (later siblings are not read yet)
    assert [issue.path for issue in report.errors] == ["/ns3:entry/ns3:link", "/ns3:entry/ns3:link[2]"]
    assert [issue.line for issue in report.errors] == [line_of(text, "<ns3:link ", n) for n in (1, 2)]


def test_capitalised_service_delivery_point_is_pinpointed(sample):
    path = sample("sdk_1hrLP_32DaysNoCost.xml")
    report = validate(path)
    assert len(report.errors) == 1
    issue = report.errors[0]
    assert issue.message.startswith("unexpected element 'ServiceDeliveryPoint'")
    assert issue.path == "/feed/entry[1]/content/UsagePoint/ServiceDeliveryPoint"
    assert issue.line == line_of(path.read_text(encoding="utf-8"), "<ServiceDeliveryPoint>")


def test_date_only_updated_is_reported_on_its_line(sample):
    path = sample("gbobjects_gas_direct.xml")
    text = path.read_text(encoding="utf-8")
    report = validate(path)
    first = report.errors[0]
    assert first.message == "invalid xs:dateTime value '2024-06-21'"
    assert first.path == "/feed/updated"
    assert first.line == line_of(text, "<updated>2024-06-21</updated>")
    # every date-only <updated> in the file is reported, each on its own line
    dated = [i.line for i in report.errors if i.message == "invalid xs:dateTime value '2024-06-21'"]
    assert dated == [line_of(text, "<updated>2024-06-21</updated>", n) for n in range(1, len(dated) + 1)]
    assert len(dated) == text.count("<updated>2024-06-21</updated>")


def test_enumeration_and_empty_code_messages(sample):
    auth = sample("cmdtest_AuthorizationSample.xml")
    (issue,) = validate(auth).errors
    assert issue.message == "invalid value 'bearer': must be one of ['Bearer']"
    assert issue.path.endswith("/Authorization/token_type")
    assert issue.line == line_of(auth.read_text(encoding="utf-8"), "<token_type>bearer")

    gas = sample("gbobjects_gas_containerized.xml")
    first = validate(gas).errors[0]
    assert first.message == "invalid ServiceKind value ''"
    assert first.path == "/atom:feed/atom:entry[1]/atom:content/ns:UsagePoint/ns:ServiceCategory/ns:kind"
    assert first.line == line_of(gas.read_text(encoding="utf-8"), "<ns:kind/>")


def test_incomplete_element_names_what_is_missing(sample):
    path = sample("sdk_testplan_1hrLP_32Days_Additional_M.xml")
    (issue,) = validate(path).errors
    assert issue.message == "element 'costAdditionalDetailLastPeriod' is incomplete: missing 'itemKind'"
    assert issue.path.startswith("/feed/entry[6]/content/ElectricPowerUsageSummary/")
    assert issue.line == line_of(path.read_text(encoding="utf-8"), "<costAdditionalDetailLastPeriod>")


def test_bare_documents(sample):
    """Bare ServiceStatus, BatchList (prefixed and default namespace), entry, and a customer feed."""
    for name in (
        "gbasandbox2016_service_status.xml",
        "cmdtest_BatchList_sftp_bulk.xml",
        "gba_contract_notification-batchlist.xml",
        "gba_Authorization-Entry-Anonymized.xml",
        "hydroone_Retail_Customer_redacted.xml",
    ):
        report = validate(sample(name), strict=True)
        assert report.valid, [str(issue) for issue in report.errors]


def test_max_errors_truncates_and_stops(sample):
    path = sample("gbasandbox2016_meter_reading.xml")  # 1073 strict errors
    report = validate(path, strict=True, max_errors=5)
    assert report.truncated and not report.valid
    assert len(report.errors) == 5
    assert str(report) == f"{path}: 5+ errors (strict)"
    full = validate(path, strict=True, max_errors=None)
    assert not full.truncated and len(full.errors) == 1073
    assert report.errors == full.errors[:5]


# ------------------------------------------------------------------------------ our own small documents


def test_minimal_feed_is_valid_in_both_modes():
    document = feed(interval_entry(GOOD_READING)).encode()
    for strict in (False, True):
        report = validate(document, strict=strict, name="minimal.xml")
        assert report.valid and report.errors == [] and not report.truncated
        assert str(report) == f"minimal.xml: valid ({'strict' if strict else 'lenient'})"


def test_untyped_links_fail_only_strict():
    text = feed(link_type=False)
    assert validate(text.encode()).valid
    report = validate(text.encode(), strict=True, name="untyped.xml")
    assert [issue.line for issue in report.errors] == [line_of(text, "<link ", n) for n in (1, 2, 3)]
    assert [issue.path for issue in report.errors] == ["/feed/link", "/feed/entry[1]/link[1]",
                                                       "/feed/entry[1]/link[2]"]
    assert {issue.message for issue in report.errors} == {"missing required attribute 'type'"}
    assert str(report) == "untyped.xml: 3 errors (strict)"


def test_element_order_error_points_at_the_misplaced_child():
    text = feed(interval_entry(GOOD_READING + SWAPPED_READING))
    (issue,) = validate(text.encode(), name="order.xml").errors
    assert issue.message.startswith("unexpected element 'timePeriod'")
    assert issue.path == "/feed/entry[2]/content/espi:IntervalBlock/espi:IntervalReading[2]/espi:timePeriod"
    assert issue.line == line_of(text, "<espi:timePeriod>", 2)  # the second reading's, after its value


UPDATED = "<updated>2024-01-01T00:00:00Z</updated>"
HEAD = f"<id>x</id>\n<title>t</title>\n{UPDATED}\n"  # what a minimal feed needs, lines 2-4

EDGE_DOCUMENTS = {
    # root-level content model and attributes (checked last, on pruned children)
    "feed with too few children": f'<feed xmlns="{ATOM}">\n<title>t</title>\n</feed>',
    "feed with a foreign attribute": f'<feed xmlns="{ATOM}" colour="green">\n{HEAD}</feed>',
    "feed with text": f'<feed xmlns="{ATOM}">hello\n{HEAD}</feed>',
    "entry with one link": f'<entry xmlns="{ATOM}">\n<id>x</id>\n<link href="a" rel="self"/>\n'
                           f"<title>t</title>\n{UPDATED}\n</entry>",
    # children of the root matched by a wildcard, or by nothing
    "ESPI resource directly in a feed": f'<feed xmlns="{ATOM}" xmlns:espi="{ESPI}">\n{HEAD}'
                                        "<espi:UsagePoint><espi:ServiceCategory><espi:kind>gas</espi:kind>"
                                        "</espi:ServiceCategory></espi:UsagePoint>\n</feed>",
    "unknown namespace in a feed": f'<feed xmlns="{ATOM}">\n{HEAD}<x:bar xmlns:x="urn:example:x"/>\n</feed>',
    "no-namespace child of a feed": f'<feed xmlns="{ATOM}">\n{HEAD}<bar xmlns=""><baz/></bar>\n</feed>',
    # comments and processing instructions between children, XHTML text constructs
    "comments and PIs": f'<feed xmlns="{ATOM}"><!-- a -->\n<?pi x?><id>x</id>\n<title>t</title><!-- b -->\n'
                        '<updated>2024-01-01</updated>\n<link href="a" rel="self"/><link rel="next"/>\n'
                        "</feed>",
    "XHTML title": f'<entry xmlns="{ATOM}">\n<id>x</id>\n<title type="xhtml">'
                   '<div xmlns="http://www.w3.org/1999/xhtml"><p>ok</p><blink>no</blink></div></title>\n'
                   f"{UPDATED}\n</entry>",
    # bare resources with repeated children
    "bare IntervalBlock": f'<IntervalBlock xmlns="{ESPI}">\n'
                          "<interval><duration>3600</duration><start>0</start></interval>\n"
                          "<IntervalReading><value>1</value></IntervalReading>\n"
                          "<IntervalReading><value>x</value></IntervalReading>\n"
                          "<IntervalReading><value>1</value><cost>1</cost></IntervalReading>\n</IntervalBlock>",
    "empty ServiceStatus": f'<ServiceStatus xmlns="{ESPI}"/>',
}


@pytest.mark.parametrize("name", list(EDGE_DOCUMENTS))
def test_streaming_equals_whole_tree_on_edge_documents(name: str):
    """Documents whose errors sit on the root itself or on children matched by wildcards."""
    data = EDGE_DOCUMENTS[name].encode()
    for strict in (False, True):
        whole = list(load_schema(strict).iter_errors(secure_parse(data)))
        streamed = list(iter_issues(data, strict=strict))
        assert whole, "each edge document is meant to be invalid"
        assert Counter(issue.line for issue in streamed) == Counter(issue_line(error) for error in whole)
        assert all(issue.kind == "schema" and issue.line for issue in streamed)


def test_root_level_messages():
    (too_few,) = validate(EDGE_DOCUMENTS["feed with too few children"].encode()).errors
    assert too_few.message.startswith("element 'feed' is incomplete: missing one of 'id', 'link'")
    assert (too_few.line, too_few.path) == (1, "/feed")
    (one_link,) = validate(EDGE_DOCUMENTS["entry with one link"].encode()).errors
    assert one_link.message == ("unexpected element 'title' ('link' occurs 1 time, at least 2 required); "
                                "expected 'link'")
    assert (one_link.line, one_link.path) == (4, "/entry/title")
    (foreign,) = validate(EDGE_DOCUMENTS["unknown namespace in a feed"].encode()).errors
    assert "urn:example:x" in foreign.message and "no schema" in foreign.message
    assert (foreign.line, foreign.path) == (5, "/feed/x:bar")
    readings = validate(EDGE_DOCUMENTS["bare IntervalBlock"].encode()).errors
    assert [(i.line, i.path) for i in readings] == [
        (4, "/IntervalBlock/IntervalReading[2]/value"),
        (5, "/IntervalBlock/IntervalReading[3]/cost"),
    ]


XSI = 'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"'


@pytest.mark.parametrize(("xsi_type", "expected"), [
    ("espi:NoSuchType", "xsi:type names an unknown type 'espi:NoSuchType'"),
    ("nope:UsagePoint", "xsi:type 'nope:UsagePoint' uses the undeclared prefix 'nope'"),
])
def test_unknown_xsi_type_is_an_issue_not_a_crash(xsi_type: str, expected: str):
    """xmlschema raises on an xsi:type it cannot resolve; we report it where it is and keep going."""
    text = feed(interval_entry(GOOD_READING)).replace(
        "<espi:UsagePoint>", f'<espi:UsagePoint {XSI} xsi:type="{xsi_type}">'
    ).replace("<espi:value>1250</espi:value>", "<espi:value>ten</espi:value>")
    report = validate(text.encode(), max_errors=None)
    assert [(issue.line, issue.message) for issue in report.errors] == [
        (line_of(text, "<espi:UsagePoint "), expected),
        (line_of(text, "<espi:value>ten"), "invalid xs:long value 'ten'"),  # the next entry is still checked
    ]
    assert report.errors[0].path == "/feed/entry[1]/content/espi:UsagePoint"


def test_substituted_type_messages_are_plain():
    text = (f'<ServiceStatus xmlns="{ESPI}" xmlns:espi="{ESPI}" {XSI} xsi:type="espi:UsagePoint">'
            "<currentStatus>1</currentStatus></ServiceStatus>")
    messages = [issue.message for issue in validate(text.encode()).errors]
    assert "type 'UsagePoint' cannot substitute type 'ServiceStatus'" in messages
    assert not any("Xsd" in message or "{" in message for message in messages)


def test_not_green_button_at_all():
    text = '<?xml version="1.0"?>\n\n<rss version="2.0"><channel><title>news</title></channel></rss>\n'
    (issue,) = validate(text.encode(), name="news.xml").errors
    assert issue.kind == "not-espi"
    assert issue.line == 3
    assert issue.message.startswith("not a Green Button document: root element 'rss'")
    assert str(issue).startswith("news.xml:3: not a Green Button document")


def test_schema_document_is_not_validated_against_the_meta_schema():
    text = '<xs:schema xmlns:xs="http://www.w3.org/2001/XMLSchema"/>'
    (issue,) = validate(text.encode()).errors
    assert issue.kind == "not-espi"


def test_batchlist_without_namespace_says_which_namespace_it_needs():
    text = "<BatchList>\n  <resources>https://tp.example/espi/1_1/resource/Batch/Subscription/5</resources>\n</BatchList>"
    (issue,) = validate(text.encode()).errors
    assert issue.kind == "not-espi"
    assert "in no namespace" in issue.message and ESPI in issue.message


def test_truncated_xml_is_one_issue_with_its_line():
    text = feed(interval_entry(GOOD_READING))
    cut = text[: text.index("</espi:IntervalBlock>")]
    report = validate(cut.encode(), name="cut.xml")
    assert not report.valid
    (issue,) = report.errors
    assert issue.kind == "syntax"
    assert issue.message.startswith("not well-formed XML")
    assert issue.line == cut.count("\n") + 1  # the parser notices at the end of the input
    assert str(issue).startswith(f"cut.xml:{issue.line}: not well-formed XML")


def test_garbage_in_the_middle_keeps_earlier_issues_and_the_syntax_line():
    text = feed(link_type=False).replace("<title>Main meter</title>", "<title>Main & meter</title>")
    report = validate(text.encode(), strict=True, max_errors=None)
    kinds = [issue.kind for issue in report.errors]
    assert kinds == ["schema", "syntax"]  # the feed's link came first, then parsing stopped
    assert report.errors[-1].line == line_of(text, "Main & meter")


def test_empty_input():
    (issue,) = validate(b"", name="empty.xml").errors
    assert issue.kind == "syntax"


def test_non_seekable_stream_is_validated_in_one_pass():
    class OneWay(io.RawIOBase):
        def __init__(self, data: bytes):
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            return self._data.readinto(buffer)

    data = feed(interval_entry(SWAPPED_READING)).encode()
    report = validate(OneWay(data), name="pipe")
    assert [issue.message.split(" (")[0] for issue in report.errors] == ["unexpected element 'timePeriod'"]


def test_iter_issues_stops_reading_when_the_caller_stops():
    readings = "".join(SWAPPED_READING for _ in range(4000))
    data = feed(interval_entry(readings) * 5).encode()
    consumed = 0

    class Counting(io.RawIOBase):
        def __init__(self):
            self._data = io.BytesIO(data)

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            nonlocal consumed
            n = self._data.readinto(buffer)
            consumed += n
            return n

    report = validate(Counting(), max_errors=3)
    assert report.truncated and len(report.errors) == 3
    assert consumed < len(data) / 2


def test_issue_string_forms():
    issue = ValidationIssue("a.xml", 7, "/feed/updated", "invalid xs:dateTime value '2024-06-21'")
    assert str(issue) == "a.xml:7: invalid xs:dateTime value '2024-06-21' (/feed/updated)"
    assert str(ValidationIssue("a.xml", None, "", "not well-formed XML: no root element", "syntax")) == (
        "a.xml: not well-formed XML: no root element"
    )


def test_max_errors_must_be_positive():
    with pytest.raises(ValueError):
        validate(b"<x/>", max_errors=0)


def test_missing_file_raises_oserror(tmp_path):
    with pytest.raises(FileNotFoundError):
        validate(tmp_path / "absent.xml")


# ------------------------------------------------------------------------------------------------ the CLI


def test_cli_valid_file(tmp_path, capsys):
    path = tmp_path / "good.xml"
    path.write_text(feed(), encoding="utf-8")
    assert main(["validate", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"{path}: valid (lenient)\n"


def test_cli_invalid_file_lines_and_summary(tmp_path, capsys):
    text = feed(link_type=False)
    path = tmp_path / "untyped.xml"
    path.write_text(text, encoding="utf-8")
    assert main(["validate", "--strict", str(path)]) == 1
    out, err = capsys.readouterr()
    first_link = line_of(text, "<link ")
    assert out.splitlines()[0] == f"{path}:{first_link}: missing required attribute 'type' (/feed/link)"
    assert all(re.fullmatch(rf"{re.escape(str(path))}:\d+: .+ \(/.+\)", line) for line in out.splitlines())
    assert len(out.splitlines()) == 3
    assert err == f"{path}: 3 errors (strict)\n"


def test_cli_max_errors(tmp_path, capsys):
    path = tmp_path / "untyped.xml"
    path.write_text(feed(link_type=False), encoding="utf-8")
    assert main(["validate", "--strict", "--max-errors", "1", str(path)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 1
    assert err == f"{path}: 1+ errors (strict)\n"


def test_cli_mixed_files_and_missing_file(tmp_path, capsys):
    good = tmp_path / "good.xml"
    good.write_text(feed(), encoding="utf-8")
    bad = tmp_path / "bad.xml"
    bad.write_text("<feed", encoding="utf-8")
    missing = tmp_path / "missing.xml"
    assert main(["validate", str(good), str(bad)]) == 1
    capsys.readouterr()
    assert main(["validate", str(good), str(missing), str(bad)]) == 2
    out, err = capsys.readouterr()
    assert f"{missing}: cannot read" in err
    assert out.startswith(f"{bad}:1: not well-formed XML")
    assert f"{good}: valid (lenient)" in err and f"{bad}: 1 error (lenient)" in err


def test_cli_reads_stdin_and_leaves_the_collector_alone(monkeypatch, capsys):
    import gc

    text = feed(link_type=False)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(text.encode())))
    assert main(["validate", "--strict", "-"]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"<stdin>:{line_of(text, '<link ')}: missing required attribute 'type'")
    assert err == "<stdin>: 3 errors (strict)\n"
    assert gc.get_freeze_count() == 0


def test_cli_directory_is_unreadable(tmp_path, capsys):
    assert main(["validate", str(tmp_path)]) == 2
    assert f"{tmp_path}: cannot read" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [
    ["validate"],
    ["validate", "--max-errors", "-1", "x.xml"],
    ["validate", "--max-errors", "many", "x.xml"],
    ["validate", "--bogus", "x"],
])
def test_cli_usage_errors_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    assert "usage:" in capsys.readouterr().err
