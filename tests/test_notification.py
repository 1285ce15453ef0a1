"""espi.notification: BatchList parsing (every variant seen in the wild), building, URI classification."""

from __future__ import annotations

import dataclasses
import io
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import xmlschema
from hypothesis import given, settings
from hypothesis import strategies as st

from espi.errors import DocumentError, EspiError, XmlSecurityError
from espi.namespaces import ESPI
from espi.notification import (
    BatchList,
    NotificationError,
    NotificationResource,
    ResourceKind,
    build_batch_list,
    classify_resource,
    collapse_uri,
    normalized_query_time,
    parse_batch_list,
    parse_query_time,
)

ESPI_XSD = Path(__file__).resolve().parent.parent / "xsd" / "espi.xsd"

# ---------------------------------------------------------------------------------------------------------
# The public samples (read in place; skipped when absent)

LOCAL = "http://localhost:8080/DataCustodian/espi/1_1/resource"
SAMPLES = {
    "gba_contract_notification-batchlist.xml": (
        "https://utilityapi.com/DataCustodian/espi/1_1/resource/Batch/Subscription/503888"
        "?published-min=2025-01-01T00:00:00Z&published-max=2025-02-01T00:00:00Z",
        ResourceKind.SUBSCRIPTION, "503888",
    ),
    "cmdtest_BatchList_applicationinformation.xml": (
        f"{LOCAL}/ApplicationInformation/2", ResourceKind.APPLICATION_INFORMATION, "2",
    ),
    "cmdtest_BatchList_authorization.xml": (f"{LOCAL}/Authorization", ResourceKind.AUTHORIZATION, None),
    "cmdtest_BatchList_rest_bulk.xml": (f"{LOCAL}/Batch/Bulk/1", ResourceKind.BULK, "1"),
    "cmdtest_BatchList_sftp_bulk.xml": (
        "sftp://localhost/home/bitnami/git/OpenESPI-GreenButtonCMDTest/SOAPUI/sampledata/BatchBulk.xml",
        ResourceKind.SFTP_BULK, "BatchBulk.xml",
    ),
}


@pytest.mark.samples
@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_samples_parse_to_their_exact_uri(sample, name):
    uri, kind, resource_id = SAMPLES[name]
    batch = parse_batch_list(sample(name))
    assert batch.resources == (uri,)  # trimmed (the cmdtest files end the URI with a newline), &amp; decoded
    assert batch.namespace == ESPI
    assert batch.duplicates == 0
    assert batch.source.endswith(name)
    (resource,) = batch.classify()
    assert (resource.kind, resource.resource_id) == (kind, resource_id)


@pytest.mark.samples
def test_every_batch_list_sample_is_covered(sample):
    folder = sample("gba_contract_notification-batchlist.xml").parent
    found = {path.name for path in folder.iterdir() if re.search("batchlist", path.name, re.IGNORECASE)}
    assert found == set(SAMPLES)


@pytest.mark.samples
def test_contract_sample_window(sample):
    (resource,) = parse_batch_list(sample("gba_contract_notification-batchlist.xml")).classify()
    assert resource.published_min == datetime(2025, 1, 1, tzinfo=UTC)
    assert resource.published_max == datetime(2025, 2, 1, tzinfo=UTC)
    assert resource.normalized_uri() == resource.uri  # already canonical


@pytest.mark.samples
def test_samples_are_schema_valid_and_so_is_our_output(sample, espi_schema):
    for name in SAMPLES:
        assert espi_schema.is_valid(str(sample(name)))
        rebuilt = build_batch_list(parse_batch_list(sample(name)).resources)
        espi_schema.validate(rebuilt.decode("utf-8"))


# ---------------------------------------------------------------------------------------------------------
# Variants (inline fixtures)

URI = "https://dc.example/espi/1_1/resource/Batch/Subscription/7"
URI2 = "https://dc.example/espi/1_1/resource/Authorization/12"
DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'

VARIANTS = {
    "default namespace": f'<BatchList xmlns="{ESPI}"><resources>{URI}</resources></BatchList>',
    "espi prefix": f'<espi:BatchList xmlns:espi="{ESPI}"><espi:resources>{URI}</espi:resources></espi:BatchList>',
    "other prefix": f'<ns0:BatchList xmlns:ns0="{ESPI}"><ns0:resources>{URI}</ns0:resources></ns0:BatchList>',
    "default plus redundant prefix": (
        f'<BatchList xmlns="{ESPI}" xmlns:espi="{ESPI}"><resources>{URI}</resources></BatchList>'
    ),
    "redundant prefix used on children": (
        f'<BatchList xmlns="{ESPI}" xmlns:espi="{ESPI}"><espi:resources>{URI}</espi:resources></BatchList>'
    ),
    "no namespace": f"<BatchList><resources>{URI}</resources></BatchList>",
    "namespaced root, unqualified child": f'<espi:BatchList xmlns:espi="{ESPI}"><resources>{URI}</resources>'
                                          "</espi:BatchList>",
    "whitespace and newlines": f"<BatchList>\n  <resources>\n\t  {URI}\n  </resources>\n</BatchList>\n",
    "CRLF line ends": f"<BatchList>\r\n<resources>\r\n{URI}\r\n</resources>\r\n</BatchList>\r\n",
    "CDATA": f"<BatchList><resources><![CDATA[{URI}]]></resources></BatchList>",
    "comment inside the URI": f"<BatchList><resources>{URI[:20]}<!-- c -->{URI[20:]}</resources></BatchList>",
    "comments and PIs around": f"<!-- a --><BatchList><!-- b --><?pi x?><resources>{URI}</resources><!-- c -->"
                               "</BatchList><!-- d -->",
    "attributes ignored": f'<BatchList xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" '
                          f'xsi:schemaLocation="{ESPI} espi.xsd"><resources>{URI}</resources></BatchList>',
    "UTF-16 body": "UTF-16",
}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_variants_give_the_same_uri(variant):
    if variant == "UTF-16 body":
        body = f'<?xml version="1.0" encoding="UTF-16"?>\n<BatchList><resources>{URI}</resources></BatchList>'
        data = body.encode("utf-16")
    else:
        data = (DECL + VARIANTS[variant]).encode("utf-8")
    assert parse_batch_list(data).resources == (URI,)


def test_namespace_is_reported():
    assert parse_batch_list(VARIANTS["no namespace"].encode()).namespace == ""
    assert parse_batch_list(VARIANTS["espi prefix"].encode()).namespace == ESPI


def test_escaped_query_string_is_decoded():
    body = f'<BatchList xmlns="{ESPI}"><resources>{URI}?published-min=2025-01-01T00:00:00Z&amp;' \
           "published-max=2025-02-01T00:00:00Z</resources></BatchList>"
    (uri,) = parse_batch_list(body.encode()).resources
    assert uri == f"{URI}?published-min=2025-01-01T00:00:00Z&published-max=2025-02-01T00:00:00Z"


def test_internal_whitespace_collapses_like_xs_anyuri():
    body = "<BatchList><resources> a \n\n  b\t</resources></BatchList>"
    assert parse_batch_list(body.encode()).resources == ("a b",)


def test_duplicates_are_dropped_in_first_seen_order():
    body = (f"<BatchList><resources>{URI2}</resources><resources>{URI}</resources>"
            f"<resources>\n{URI2}\n</resources><resources>{URI}</resources><resources>{URI2}</resources>"
            "</BatchList>")
    batch = parse_batch_list(body.encode())
    assert batch.resources == (URI2, URI)
    assert batch.duplicates == 3
    assert list(batch) == [URI2, URI] and len(batch) == 2


@pytest.mark.parametrize("body", [
    f'<BatchList xmlns="{ESPI}"/>',
    f'<BatchList xmlns="{ESPI}">\n</BatchList>',
    "<BatchList><!-- nothing changed --></BatchList>",
    f'<espi:BatchList xmlns:espi="{ESPI}"></espi:BatchList>',
])
def test_empty_batch_list_is_valid(body):
    batch = parse_batch_list(body.encode())
    assert batch.resources == () and len(batch) == 0 and batch.classify() == ()


def test_sources_path_file_and_name(tmp_path):
    path = tmp_path / "note.xml"
    path.write_bytes(VARIANTS["espi prefix"].encode())
    assert parse_batch_list(path).resources == (URI,)
    assert parse_batch_list(str(path)).source == str(path)
    with path.open("rb") as handle:
        assert parse_batch_list(handle).resources == (URI,)
    assert parse_batch_list(io.BytesIO(path.read_bytes()), name="POST /espi/1_1/Notification").source == \
        "POST /espi/1_1/Notification"


# ---------------------------------------------------------------------------------------------------------
# Errors: NotificationError naming source and line

ERRORS = [
    # (body, line, message fragment)
    (DECL + "\n<feed xmlns='http://www.w3.org/2005/Atom'/>", 3, "found <feed> in namespace http://www.w3.org/2005/Atom"),
    (DECL + "<Batchlist/>", 2, "found <Batchlist> (no namespace)"),
    (DECL + '<BatchList xmlns="http://naesb.org/espi/customer"/>', 2, "in namespace http://naesb.org/espi/customer"),
    (DECL + "<BatchList>\n<resources/>\n</BatchList>", 3, "empty <resources>"),
    (DECL + "<BatchList>\n<resources>  \n  </resources></BatchList>", 3, "empty <resources>"),
    (DECL + f"<BatchList>\n<resources>{URI}\n<a>x</a></resources></BatchList>", 4, "not elements (found <a>"),
    (DECL + f"<BatchList>\n<resources>{URI}</resources>\n<extension/></BatchList>", 4, "unexpected <extension>"),
    (DECL + f"<BatchList>\n<x:resources xmlns:x='urn:x'>{URI}</x:resources></BatchList>", 3,
     "unexpected <resources> in namespace urn:x"),
    (DECL + f"<BatchList>\nhello<resources>{URI}</resources></BatchList>", 2, "unexpected text 'hello'"),
    (DECL + f"<BatchList><resources>{URI}</resources>\n\n tail</BatchList>", 2, "unexpected text 'tail'"),
    (DECL + f"<BatchList>\n<resources>{URI}</resources>\n", None, "not well-formed XML"),
    (DECL + "<BatchList>\n<resources>a</resource>\n</BatchList>", 3, "not well-formed XML"),
    ("this is not XML", 1, "not well-formed XML"),
    ('{"resources": ["https://x"]}', 1, "not well-formed XML"),
    ("", None, "not well-formed XML"),
]


@pytest.mark.parametrize(("body", "line", "fragment"), ERRORS)
def test_errors_name_source_and_line(body, line, fragment):
    with pytest.raises(NotificationError) as caught:
        parse_batch_list(body.encode(), name="dc.example")
    error = caught.value
    assert isinstance(error, DocumentError) and isinstance(error, EspiError)
    assert error.source == "dc.example"
    assert fragment in error.message
    if line is not None:
        assert error.line == line
        assert str(error).startswith(f"dc.example:{line}: ")
    else:
        assert str(error).startswith("dc.example")


def test_error_source_defaults_to_the_path(tmp_path):
    path = tmp_path / "bad.xml"
    path.write_bytes(b"<feed/>")
    with pytest.raises(NotificationError, match=re.escape(f"{path}:1: ")):
        parse_batch_list(path)


@pytest.mark.parametrize("body", [
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]>'
    b"<BatchList><resources>&lol2;</resources></BatchList>",
    b'<!DOCTYPE BatchList SYSTEM "http://attacker.example/x.dtd"><BatchList/>',
    b'<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]><BatchList><resources>&x;</resources></BatchList>',
])
def test_hostile_xml_is_refused_by_the_secure_parser(body):
    with pytest.raises(XmlSecurityError) as caught:
        parse_batch_list(body, name="peer")
    assert not isinstance(caught.value, NotificationError)  # propagated as is, for security logging
    assert caught.value.message.startswith("refused")


@settings(max_examples=200)
@given(st.binary(max_size=300) | st.text(alphabet="<>/=\"' &;!?[]-BatchListresources\n", max_size=120).map(
    lambda s: s.encode("utf-8")))
def test_arbitrary_bytes_raise_only_espi_errors(data):
    try:
        batch = parse_batch_list(data)
    except EspiError:
        return
    assert isinstance(batch, BatchList)


# ---------------------------------------------------------------------------------------------------------
# Building and round trip


def test_build_canonical_form():
    out = build_batch_list([f"{URI}?published-min=2025-01-01T00:00:00Z&published-max=2025-02-01T00:00:00Z", URI2])
    assert out == (
        b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        b'<BatchList xmlns="http://naesb.org/espi">\n'
        b"  <resources>https://dc.example/espi/1_1/resource/Batch/Subscription/7?published-min=2025-01-01T00:00:00Z"
        b"&amp;published-max=2025-02-01T00:00:00Z</resources>\n"
        b"  <resources>https://dc.example/espi/1_1/resource/Authorization/12</resources>\n"
        b"</BatchList>\n"
    )


def test_build_empty_and_dedupe_and_escaping():
    assert build_batch_list([]) == (b'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                                    b'<BatchList xmlns="http://naesb.org/espi"/>\n')
    out = build_batch_list([" a<b>&c ", "a<b>&c", "\nd\n"])
    assert out.count(b"<resources>") == 2
    assert b"<resources>a&lt;b&gt;&amp;c</resources>" in out
    assert parse_batch_list(out).resources == ("a<b>&c", "d")
    assert build_batch_list(iter([URI])) == build_batch_list((URI,))


@pytest.mark.parametrize(("uris", "error"), [
    (URI, TypeError),  # a single string, which would otherwise be split into characters
    (URI.encode(), TypeError),
    ([URI, None], TypeError),
    ([URI, 7], TypeError),
    (["  \n "], ValueError),
    ([""], ValueError),
    (["bad\x00uri"], ValueError),
    (["bad\x1buri"], ValueError),
    (["bad\ud800uri"], ValueError),
])
def test_build_refuses_what_xml_cannot_carry(uris, error):
    with pytest.raises(error):
        build_batch_list(uris)


XML_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="\ufffe\uffff")
URI_TEXT = st.text(alphabet=XML_CHARS | st.sampled_from(list(" \t\n\r&<>\"'")), min_size=1, max_size=60).filter(
    lambda s: s.strip(" \t\r\n"))


def _expected(uris):
    """The canonical form, computed independently of the module: collapse XML whitespace, trim, dedupe."""
    out = []
    for uri in uris:
        uri = re.sub("[ \t\r\n]+", " ", uri).strip(" ")
        if uri not in out:
            out.append(uri)
    return tuple(out)


@settings(max_examples=300)
@given(st.lists(URI_TEXT, max_size=8))
def test_round_trip(uris):
    assert parse_batch_list(build_batch_list(uris)).resources == _expected(uris)


@pytest.fixture(scope="module")
def espi_schema() -> xmlschema.XMLSchema:
    return xmlschema.XMLSchema(str(ESPI_XSD))


@settings(deadline=None)  # schema validation is slow on a cold start; correctness is what is tested here
@given(uris=st.lists(st.sampled_from([URI, URI2, f"{URI}?a=1&b=2", "sftp://h/f.xml"]), max_size=6))
def test_round_trip_is_stable_and_schema_valid(espi_schema, uris):
    once = build_batch_list(uris)
    assert build_batch_list(parse_batch_list(once).resources) == once
    espi_schema.validate(once.decode("utf-8"))


def test_collapse_uri_touches_only_xml_whitespace():
    assert collapse_uri("\n  a \t b  \r\n") == "a b"
    assert collapse_uri("a\u00a0b\u2003") == "a\u00a0b\u2003"  # not XML whitespace: kept


# ---------------------------------------------------------------------------------------------------------
# Classification

BASE = "https://utilityapi.com/DataCustodian/espi/1_1/resource"
CLASSIFY = [
    (f"{BASE}/Batch/Subscription/503888", ResourceKind.SUBSCRIPTION, "503888"),
    (f"{BASE}/Batch/Subscription/503888/", ResourceKind.SUBSCRIPTION, "503888"),
    (f"{BASE}/Batch/Subscription/5/UsagePoint/1", ResourceKind.SUBSCRIPTION, "5"),
    ("https://naapi2.bidgely.com/v1/Batch/Subscription/abc-9", ResourceKind.SUBSCRIPTION, "abc-9"),
    (f"{BASE}/Batch/Bulk/1", ResourceKind.BULK, "1"),
    (f"{BASE}/Bulk/S_119506", ResourceKind.BULK, "S_119506"),  # UtilityAPI: no Batch/ segment
    ("sftp://openespivmssh@openespivm/DataCustodian/espi/1_1/resource/Batch/Bulk/SampleData.xml",
     ResourceKind.SFTP_BULK, "SampleData.xml"),
    ("SFTP://host/BatchBulk.xml", ResourceKind.SFTP_BULK, "BatchBulk.xml"),
    ("sftp://host", ResourceKind.SFTP_BULK, None),
    (f"{BASE}/Authorization", ResourceKind.AUTHORIZATION, None),
    (f"{BASE}/Authorization/17", ResourceKind.AUTHORIZATION, "17"),
    (f"{BASE}/ApplicationInformation/2", ResourceKind.APPLICATION_INFORMATION, "2"),
    (f"{BASE}/ApplicationInformation", ResourceKind.APPLICATION_INFORMATION, None),
    (f"{BASE}/ReadServiceStatus", ResourceKind.READ_SERVICE_STATUS, None),
    (f"{BASE}/Batch/RetailCustomer/1", ResourceKind.OTHER, None),
    (f"{BASE}/Subscription/5/UsagePoint", ResourceKind.OTHER, None),
    (f"{BASE}/Batch/Bulk", ResourceKind.OTHER, None),
    (f"{BASE}/Batch/Subscription", ResourceKind.OTHER, None),
    (f"{BASE}/batch/subscription/5", ResourceKind.OTHER, None),  # path segments are case-sensitive
    ("https://dc.example/Authorization?x=1#frag", ResourceKind.AUTHORIZATION, None),
    ("http://[::1/Batch/Bulk/3", ResourceKind.BULK, "3"),  # urlsplit would raise on this authority
    ("not a uri", ResourceKind.OTHER, None),
    ("", ResourceKind.OTHER, None),
]


@pytest.mark.parametrize(("uri", "kind", "resource_id"), CLASSIFY)
def test_classify(uri, kind, resource_id):
    resource = classify_resource(uri)
    assert resource == NotificationResource(uri, kind, resource_id)


def test_resource_is_frozen():
    resource = classify_resource(URI)
    with pytest.raises(dataclasses.FrozenInstanceError):
        resource.kind = ResourceKind.OTHER


@given(st.text(max_size=80))
def test_classify_never_raises(uri):
    resource = classify_resource(uri)
    assert resource.uri == uri and isinstance(resource.kind, ResourceKind)


# ---------------------------------------------------------------------------------------------------------
# published-min / published-max


def at(*args, **kwargs) -> datetime:
    return datetime(*args, tzinfo=UTC, **kwargs)


@pytest.mark.parametrize(("query", "low", "high"), [
    ("published-min=2025-01-01T00:00:00Z&published-max=2025-02-01T00:00:00Z", at(2025, 1, 1), at(2025, 2, 1)),
    # XMLGregorianCalendar.toXMLFormat(): fractions and offsets (espi.md §3.7)
    ("published-min=2012-03-01T00:00:00.000-05:00&published-max=2012-03-02T00:00:00.123+01:00",
     at(2012, 3, 1, 5), at(2012, 3, 1, 23, 0, 0, 123000)),
    ("published-min=2012-03-01T00:00:00.1234567890Z", at(2012, 3, 1, 0, 0, 0, 123456), None),
    ("published-max=2012-03-01T10:00:00%2B02:00", None, at(2012, 3, 1, 8)),  # percent-encoded +
    ("published-min=2012-03-01T10%3A00%3A00Z", at(2012, 3, 1, 10), None),
    ("published-min=2012-03-01T10:00:00", at(2012, 3, 1, 10), None),  # no zone: UTC
    ("published-min=2012-03-01", at(2012, 3, 1), None),
    ("published-min=2012-03-01T10:00Z", at(2012, 3, 1, 10), None),
    ("published-min=2012-03-01t10:00:00z", at(2012, 3, 1, 10), None),
    ("published-min=2012-03-01T10:00:00-0530", at(2012, 3, 1, 15, 30), None),
    ("published-min=2012-03-01T10:00:00+01", at(2012, 3, 1, 9), None),
    ("published-min=2025-01-01T00:00:00Z&amp;published-max=2025-02-01T00:00:00Z",  # escaped twice by the DC
     at(2025, 1, 1), at(2025, 2, 1)),
    ("published-min=All&published-max=", None, None),
    ("published-min=2025-02-30T00:00:00Z", None, None),
    ("published-min=2025-01-01T24:00:00Z", None, None),
    ("published-min=2025-01-01T00:00:00+24:00", None, None),
    ("published-min=0001-01-01T00:00:00+01:00", None, None),  # before year 1 in UTC
    ("published-min=1&published-min=2025-01-01T00:00:00Z", None, None),  # the first occurrence counts
    ("updated-min=2025-01-01T00:00:00Z&max-results=10", None, None),
])
def test_published_window(query, low, high):
    resource = classify_resource(f"{URI}?{query}")
    assert resource.kind == ResourceKind.SUBSCRIPTION and resource.resource_id == "7"
    assert (resource.published_min, resource.published_max) == (low, high)
    for moment in (resource.published_min, resource.published_max):
        assert moment is None or moment.utcoffset() == timedelta(0)


def test_normalized_uri_rewrites_only_the_window():
    resource = classify_resource(
        f"{URI}?depth=5&published-min=2012-03-01T00:00:00.900-05:00&max-results=9"
        "&published-max=2012-03-02T00:00:00.100+01:00#top")
    assert resource.normalized_uri() == (
        f"{URI}?depth=5&published-min=2012-03-01T05:00:00Z&max-results=9"
        "&published-max=2012-03-01T23:00:01Z#top")  # min rounded down, max up: the window never shrinks


def test_normalized_uri_leaves_what_it_cannot_read():
    for uri in (URI, f"{URI}?published-min=All", f"{URI}?x=1#f"):
        assert classify_resource(uri).normalized_uri() == uri
    resource = classify_resource(f"{URI}?published-min=All&published-max=2025-01-01T00:00:00.5Z")
    assert resource.normalized_uri() == f"{URI}?published-min=All&published-max=2025-01-01T00:00:01Z"
    resource = classify_resource(f"{URI}?published-min=2025-01-01T00:00:00Z&amp;published-max=2025-01-02")
    assert resource.normalized_uri() == (
        f"{URI}?published-min=2025-01-01T00:00:00Z&published-max=2025-01-02T00:00:00Z")


@pytest.mark.parametrize(("moment", "ceil", "text"), [
    (at(2025, 1, 1), False, "2025-01-01T00:00:00Z"),
    (at(2025, 1, 1, 0, 0, 0, 999999), False, "2025-01-01T00:00:00Z"),
    (at(2025, 1, 1, 0, 0, 0, 1), True, "2025-01-01T00:00:01Z"),
    (at(2025, 12, 31, 23, 59, 59, 500000), True, "2026-01-01T00:00:00Z"),
    (at(2025, 1, 1), True, "2025-01-01T00:00:00Z"),
    (datetime(2025, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=2))), False, "2024-12-31T23:00:00Z"),
    (datetime(2025, 1, 1, 1, 0), False, "2025-01-01T01:00:00Z"),  # naive: taken as UTC
    (at(5, 1, 1), False, "0005-01-01T00:00:00Z"),
    (datetime.max.replace(tzinfo=UTC), True, "9999-12-31T23:59:59Z"),
])
def test_normalized_query_time(moment, ceil, text):
    assert normalized_query_time(moment, ceil=ceil) == text
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z", text)  # OpenESPI VerifyURLParams' pattern


@given(st.datetimes(timezones=st.just(UTC)))
def test_normalized_time_parses_back_to_the_whole_second(moment):
    assert parse_query_time(normalized_query_time(moment)) == moment.replace(microsecond=0)


@given(st.text(max_size=40))
def test_parse_query_time_never_raises(text):
    value = parse_query_time(text)
    assert value is None or value.tzinfo is UTC
