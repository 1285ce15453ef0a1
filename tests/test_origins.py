"""Only the custodian's own resources (issue 13 item 1): espi.origins, the one check every URI we are told about
meets (notification receiver, workers, redirects, token responses, imported Authorizations), on its own and as the
configuration builds it (bridge.upstream.origins)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from gateway_helpers import make_config
from test_notification_receiver import CUSTODIANS

from bridge.notifications import refusal
from bridge.upstream import foreign_uris, origins
from espi.custodian_client import CustodianEndpoints, ForeignURLError
from espi.origins import CustodianOrigins, Endpoint

RESOURCE = "https://dc.example/espi/1_1/resource"
SHAPES = {
    "subscription": "/Batch/Subscription/7",
    "bulk": "/Batch/Bulk/1",
    "authorization": "/Authorization/9",
    "application information": "/ApplicationInformation/2",
}


@pytest.fixture
def dc(tmp_path):
    return next(c for c in make_config(tmp_path, extra_toml=CUSTODIANS).custodians if c.id == "dc")


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize("spelling", [
    RESOURCE, "https://dc.example:443/espi/1_1/resource", "HTTPS://DC.EXAMPLE/espi/1_1/resource",
    "https://dc.example/espi/1_1/%72esource",  # percent-encoded unreserved characters are the same path
])
def test_the_custodians_resources_are_accepted_however_spelled(dc, shape, spelling):
    assert refusal(dc, spelling + SHAPES[shape]) is None


@pytest.mark.parametrize("shape", sorted(SHAPES))
@pytest.mark.parametrize(("uri", "reason"), [
    ("https://dc.example:8443/espi/1_1/resource", "origin https://dc.example:8443"),  # another port of its host
    ("https://dc.example:80/espi/1_1/resource", "origin https://dc.example:80"),
    ("http://dc.example/espi/1_1/resource", "origin http://dc.example:80"),  # another scheme
    ("http://dc.example:443/espi/1_1/resource", "origin http://dc.example:443"),
    ("https://www.dc.example/espi/1_1/resource", "origin https://www.dc.example:443"),
    ("https://dc.example.evil.example/espi/1_1/resource", "is not the custodian's"),
    ("https://dc.example/admin", "not under the custodian's resource endpoint"),
    ("https://dc.example/espi/1_1/resourceX", "not under the custodian's resource endpoint"),
    ("https://dc.example/espi/1_1/resource/../../admin", "dot segments"),
    ("https://dc.example/espi/1_1/resource/%2E%2E/%2e%2e/admin", "dot segments"),
    ("https://dc.example/espi/1_1/resource%2F..%2F..%2Fadmin", "dot segments"),
    ("https://tp@dc.example/espi/1_1/resource", "user information"),
    ("ftp://dc.example/espi/1_1/resource", "scheme ftp"),
    ("//dc.example/espi/1_1/resource", "scheme (none)"),
])
def test_anything_else_is_refused_with_its_reason(dc, shape, uri, reason):
    found = refusal(dc, uri + SHAPES[shape])
    assert found is not None and reason in found, found


@pytest.mark.parametrize(("uri", "reason"), [
    ("https://dc.example:99999/espi/1_1/resource/Batch/Bulk/1", "malformed"),
    ("https://[::1/espi", "malformed"),
    ("https://dc.example/espi/1_1/resource/Batch/Bulk/1 ", "whitespace"),
    ("https://dc.example/espi/1_1/resource/Batch/\x00Bulk/1", "control"),
    ("https://dc.example/espi/1_1/resource/" + "x" * 5000, "longer than"),
    ("https:///espi/1_1/resource/Batch/Bulk/1", "no host"),
])
def test_malformed_uris_are_refused_not_raised(dc, uri, reason):
    assert reason in refusal(dc, uri)


def test_endpoints_normalise_default_ports_and_trailing_slashes():
    assert Endpoint.of("https://H.example/a/b/") == Endpoint.of("https://h.example:443/a/b") \
        == Endpoint("https", "h.example", 443, "/a/b")
    assert Endpoint.of("http://127.0.0.1:8081/") == Endpoint("http", "127.0.0.1", 8081, "")
    assert Endpoint.of("http://[::1]:8081/r").host == "::1"
    whole_origin = CustodianOrigins.of(["http://127.0.0.1:8081"])
    assert whole_origin.allows("http://127.0.0.1:8081/anything/Batch/Bulk/1")
    assert not whole_origin.allows("http://127.0.0.1:8082/anything/Batch/Bulk/1")
    assert not whole_origin.allows("http://localhost:8081/anything/Batch/Bulk/1")  # a name is not its address
    with pytest.raises(ValueError):
        Endpoint.of("mailto:dc@example.org")


def test_sftp_uris_must_name_the_configured_server_and_lie_under_remote_dir(dc):
    assert refusal(dc, "sftp://sftp.dc.example/out/Bulk_1.xml") is None
    assert refusal(dc, "sftp://bulk@sftp.dc.example:22/out/Bulk_1.xml") is None  # the default port, a user name
    assert "SFTP server" in refusal(dc, "sftp://sftp.dc.example:2222/out/Bulk_1.xml")
    assert "SFTP server" in refusal(dc, "sftp://dc.example/out/Bulk_1.xml")
    assert "user information" in refusal(dc, "sftp://bulk:pw@sftp.dc.example/out/Bulk_1.xml")
    elsewhere = replace(dc, sftp=replace(dc.sftp, port=2222))  # announced without the port: still its server
    assert refusal(elsewhere, "sftp://sftp.dc.example/out/Bulk_1.xml") is None
    assert refusal(elsewhere, "sftp://sftp.dc.example:2222/out/Bulk_1.xml") is None
    assert "SFTP server" in refusal(elsewhere, "sftp://sftp.dc.example:22/out/Bulk_1.xml")
    fenced = replace(dc, sftp=replace(dc.sftp, remote_dir="/exports/"))
    assert refusal(fenced, "sftp://sftp.dc.example/exports/Bulk/1.xml") is None
    assert "remote_dir" in refusal(fenced, "sftp://sftp.dc.example/exportsX/1.xml")
    assert "SFTP configuration" in refusal(replace(dc, sftp=None), "sftp://sftp.dc.example/out/Bulk_1.xml")


def test_other_configured_endpoints_widen_by_their_own_prefix_only(dc):
    widened = replace(dc, application_information_url="https://register.dc.example/espi/1_1/ApplicationInformation/2",
                      bulk_url="https://files.dc.example:8443/exports")
    assert refusal(widened, "https://register.dc.example/espi/1_1/ApplicationInformation/2") is None
    assert refusal(widened, "https://files.dc.example:8443/exports/Batch/Bulk/1") is None
    assert refusal(widened, "https://files.dc.example/exports/Batch/Bulk/1") is not None  # its port, not 443
    assert refusal(widened, "https://files.dc.example:8443/other/Batch/Bulk/1") is not None
    assert refusal(widened, "https://register.dc.example/espi/1_1/resource/Batch/Bulk/1") is not None
    # the token and authorize endpoints are configured to be used, not resources a notification may name
    assert refusal(dc, "https://dc.example/oauth/token") is not None


def test_the_http_client_and_stored_uris_use_the_same_check(dc):
    endpoints = CustodianEndpoints(resource_url=RESOURCE, authorize_url="https://dc.example/oauth/authorize",
                                   token_url="https://dc.example/oauth/token", client_id="tp", client_secret="s",
                                   origins=origins(dc))
    for uri in (RESOURCE + "/Batch/Bulk/1", "https://dc.example:8443/espi/1_1/resource/Batch/Bulk/1",
                "sftp://sftp.dc.example/out/Bulk_1.xml"):
        http = uri.startswith("https")
        assert endpoints.allowed(uri) is (http and refusal(dc, uri) is None)
    with pytest.raises(ForeignURLError, match=r"dc\.example:8443"):
        endpoints.check("https://dc.example:8443/espi/1_1/resource/Batch/Bulk/1?token=x")
    assert foreign_uris(dc, resourceURI=RESOURCE + "/Batch/Subscription/7",
                        authorizationURI=RESOURCE + "/Authorization/9", customerResourceURI=None) == []
    problems = foreign_uris(dc, resourceURI="https://dc.example:8443/espi/1_1/resource/Batch/Subscription/7",
                            authorizationURI=RESOURCE + "/Authorization/9")
    assert len(problems) == 1 and problems[0].startswith("resourceURI: origin https://dc.example:8443")
