"""The sandbox data custodian (``greenbridge sandbox``) on a real uvicorn, as a third party sees it.

A tiny Starlette app on uvicorn (in a thread of the test process) plays the third party: it receives the BatchList
notifications and is the OAuth redirect target. Every document the sandbox answers is read with the library
(espi.feed.read_feed, espi.notification.parse_batch_list); its own resources are also validated against the strict
ESPI 4.0 schemas.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import date
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
import uvicorn
from conftest import REPO, SAMPLES_DIR
from servers import free_port, uvicorn_server
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route

from espi.feed import read_feed
from espi.generate import FeedSpec, generate_feed
from espi.notification import ResourceKind, classify_resource, parse_batch_list
from espi.validation import validate
from sandbox.config import DEFAULT_SCOPES, SandboxConfigError, load_sandbox_config

SUBSCRIPTION_SCOPE = DEFAULT_SCOPES[0]
CLASSIC_SCOPE = DEFAULT_SCOPES[1]
CUSTOMER_SCOPE = DEFAULT_SCOPES[2]
BULK_SCOPE = DEFAULT_SCOPES[3]
ATOM = "application/atom+xml"


# ---------------------------------------------------------------------------------------------------------------
# The third party: notification receiver and redirect target
# ---------------------------------------------------------------------------------------------------------------
class Receiver:
    """Records every POST (path, content type, body); ``/flaky`` answers 500 to its first two POSTs."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, str, bytes]] = []
        self.condition = threading.Condition()
        self.flaky_failures = 2
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[
            Route("/{name}", self._post, methods=["POST"]),
            Route("/{name}", self._callback, methods=["GET"]),
        ])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                     lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _post(self, request: Request):
        body = await request.body()
        name = request.path_params["name"]
        if name == "flaky":
            with self.condition:
                if self.flaky_failures > 0:
                    self.flaky_failures -= 1
                    return PlainTextResponse("try again", status_code=500)
        with self.condition:
            self.posts.append((name, request.headers.get("content-type", ""), body))
            self.condition.notify_all()
        return PlainTextResponse("ok")

    async def _callback(self, request: Request):
        code = request.query_params.get("code", "")
        return HTMLResponse(f"<!doctype html><title>callback</title><p id='code'>{code}</p>")

    def start(self) -> Receiver:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("the notification receiver did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    def wait_for(self, predicate: Callable[[tuple[str, str, bytes]], bool], timeout: float = 15.0
                 ) -> tuple[str, str, bytes]:
        deadline = time.monotonic() + timeout
        with self.condition:
            while True:
                for post in self.posts:
                    if predicate(post):
                        return post
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(f"no matching notification within {timeout} s; got {self.posts!r}")
                self.condition.wait(remaining)

    def batch_list_naming(self, uri: str, timeout: float = 15.0) -> tuple[str, ...]:
        """Waits for a BatchList listing ``uri``; returns all its URIs."""
        _name, content_type, body = self.wait_for(
            lambda post: uri in parse_batch_list(post[2]).resources, timeout)
        assert content_type.startswith(ATOM)
        return parse_batch_list(body).resources


@pytest.fixture(scope="module")
def receiver():
    server = Receiver().start()
    yield server
    server.stop()


def _toml(receiver: Receiver, extra: str = "") -> str:
    return f"""
[sandbox]
generate_customers = 2
generate_days = 10
notify_backoff = 0.1
{extra}

[[third_parties]]
client_id = "third_party"
client_secret = "secret"
client_name = "Test Third Party"
redirect_uris = ["{receiver.url}/callback"]
notify_uri = "{receiver.url}/notify"

[[third_parties]]
client_id = "other_party"
client_secret = "other-secret"
client_name = "Other Party"
redirect_uris = ["{receiver.url}/other-callback"]
notify_uri = "{receiver.url}/flaky"
scopes = ["FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;BR=7"]
"""


def start_sandbox(tmp_path, receiver: Receiver, extra: str = "", env: dict[str, str] | None = None):
    config = tmp_path / "sandbox.toml"
    config.write_text(_toml(receiver, extra))
    environment = {"GREENBRIDGE_SANDBOX_CONFIG": str(config), "GREENBRIDGE_SANDBOX_BASE_URL": "http://127.0.0.1:{port}",
                   **(env or {})}
    return uvicorn_server("sandbox.app:create_sandbox_app", env=environment, app_dir=REPO,
                          health_path="/healthz")


@pytest.fixture(scope="module")
def sandbox(receiver, tmp_path_factory):
    with start_sandbox(tmp_path_factory.mktemp("sandbox"), receiver) as url:
        yield str(url)


# ---------------------------------------------------------------------------------------------------------------
# Helpers: the third party's side of the OAuth flows
# ---------------------------------------------------------------------------------------------------------------
def http() -> httpx2.Client:
    return httpx2.Client(timeout=30, follow_redirects=False, trust_env=False)


def authorize(base: str, receiver: Receiver, *, customer: str = "customer-1", scope: str | None = SUBSCRIPTION_SCOPE,
              client_id: str = "third_party", redirect: str = "callback", extra: dict | None = None,
              form: dict | None = None) -> dict[str, list[str]]:
    """Signs the customer in and approves in one POST of the authorize form; returns the redirect's query."""
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": f"{receiver.url}/{redirect}",
              "state": secrets.token_urlsafe(8), **(extra or {})}
    if scope is not None:
        params["scope"] = scope
    with http() as client:
        shown = client.get(f"{base}/oauth/authorize", params=params)
        assert shown.status_code == 200, shown.text
        assert 'name="customer_id"' in shown.text and "<script" not in shown.text
        answer = client.post(f"{base}/oauth/authorize", data={
            **params, "customer_id": customer, "password": "sandbox", "decision": "approve", **(form or {})})
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == params["redirect_uri"]
    query = parse_qs(location.query)
    assert query["state"] == [params["state"]]
    return query


def exchange(base: str, receiver: Receiver, code: str, *, client=("third_party", "secret"), post_auth: bool = False,
             redirect: str = "callback", verifier: str | None = None) -> httpx2.Response:
    data = {"grant_type": "authorization_code", "code": code, "redirect_uri": f"{receiver.url}/{redirect}"}
    if verifier:
        data["code_verifier"] = verifier
    with http() as c:
        if post_auth:
            return c.post(f"{base}/oauth/token", data={**data, "client_id": client[0], "client_secret": client[1]})
        return c.post(f"{base}/oauth/token", data=data, auth=client)


def subscribe(base: str, receiver: Receiver, *, client=("third_party", "secret"), redirect: str = "callback",
              **kwargs) -> dict:
    """Code flow end to end: the token response."""
    query = authorize(base, receiver, client_id=client[0], redirect=redirect, **kwargs)
    response = exchange(base, receiver, query["code"][0], client=client, redirect=redirect)
    assert response.status_code == 200, response.text
    return response.json()


def client_token(base: str, scope: str | None = None, client=("third_party", "secret")) -> dict:
    data = {"grant_type": "client_credentials"}
    if scope:
        data["scope"] = scope
    with http() as c:
        response = c.post(f"{base}/oauth/token", data=data, auth=client)
    assert response.status_code == 200, response.text
    return response.json()


def get(url: str, token: str | None, **params) -> httpx2.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with http() as c:
        return c.get(url, headers=headers, params=params) if params else c.get(url, headers=headers)


def feed_of(response: httpx2.Response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(ATOM)
    return read_feed(response.content)


def block_entries(feed) -> list:
    return [e for e in feed.entries if e.block_count]


# ---------------------------------------------------------------------------------------------------------------
# Configuration (no server)
# ---------------------------------------------------------------------------------------------------------------
def test_configuration_sources(tmp_path):
    file = tmp_path / "sandbox.toml"
    file.write_text('[sandbox]\ndefer = 2.5\nbulk_dir = "bulk"\n\n[[third_parties]]\nclient_id = "tp"\n'
                    'client_secret = "s"\nredirect_uri = "https://tp.example/cb"\nnotify_uri = "https://tp.example/n"\n'
                    'scopes = ["FB=4_5_15; IntervalDuration=3600"]\n')
    config = load_sandbox_config(file, env={"GREENBRIDGE_SANDBOX_NOTIFY_ON_NEW_DATA": "false",
                                            "GREENBRIDGE_SANDBOX_BASE_URL": "https://dc.example/DataCustodian/"},
                                 client_secret="flag-secret", defer=None)
    assert config.defer == 2.5 and config.bulk_dir == (tmp_path / "bulk").resolve()
    assert config.notify_on_new_data is False
    assert config.base_url == "https://dc.example/DataCustodian" and config.mount_path == "/DataCustodian"
    assert config.resource_endpoint == "https://dc.example/DataCustodian/espi/1_1/resource"
    party = config.third_parties[0]
    assert (party.client_id, party.client_secret, party.redirect_uris) == ("tp", "flag-secret",
                                                                          ("https://tp.example/cb",))
    assert party.scopes == ("FB=4_5_15;IntervalDuration=3600",)  # canonical form, as the DC publishes it
    assert config.generated_count == 3
    defaults = load_sandbox_config(env={}, client_id="gateway", notify_uri="http://127.0.0.1:9/n")
    assert defaults.third_parties[0].client_id == "gateway" and defaults.third_parties[0].scopes == DEFAULT_SCOPES


@pytest.mark.parametrize("toml", [
    '[sandbox]\nbase_url = "ftp://x"\n',
    '[sandbox]\nunknown = 1\n',
    '[[third_parties]]\nclient_id = "a"\nscopes = ["FB=FB_4"]\n',
    '[sandbox]\ndefer = "soon"\n',
])
def test_configuration_errors(tmp_path, toml):
    file = tmp_path / "bad.toml"
    file.write_text(toml)
    with pytest.raises(SandboxConfigError):
        load_sandbox_config(file, env={})


def test_command_line_with_a_path_in_the_base_url(receiver):
    """``greenbridge sandbox`` with flags; every endpoint lives below the base URL's path, as at real custodians."""
    port = free_port()
    base = f"http://127.0.0.1:{port}/DataCustodian"
    command = [sys.executable, "-m", "greenbridge", "sandbox", "--port", str(port), "--base-url", base,
               "--generate", "1", "--days", "2", "--client-id", "gateway", "--client-secret", "gw-secret",
               "--redirect-uri", f"{receiver.url}/callback", "--notify-uri", f"{receiver.url}/notify",
               "--scope", "FB=4_5_15;IntervalDuration=3600", "--log-level", "warning",
               "--notify-window", "--response-delay", "0.2", "--delete-authorization-status", "501"]
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx2.get(f"{base}/healthz", timeout=1, trust_env=False).status_code == 200:
                    break
            except httpx2.HTTPError:
                pass
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "greenbridge sandbox did not start"
            time.sleep(0.1)
        state = get(f"{base}/sandbox.json", None).json()
        assert state["resource_endpoint"] == f"{base}/espi/1_1/resource"
        assert state["third_parties"][0]["client_id"] == "gateway"
        assert state["third_parties"][0]["scopes"] == ["FB=4_5_15;IntervalDuration=3600"]
        assert [c["id"] for c in state["customers"]] == ["customer-1"]
        assert {k: state["switches"][k] for k in ("notify_window", "response_delay", "delete_authorization_status")} \
            == {"notify_window": True, "response_delay": 0.2, "delete_authorization_status": 501}
        token = subscribe(base, receiver, client=("gateway", "gw-secret"), scope="FB=4_5_15")
        assert token["resourceURI"].startswith(f"{base}/espi/1_1/resource/Batch/Subscription/")
        assert len(block_entries(feed_of(get(token["resourceURI"], token["access_token"])))) == 4
        assert get(f"http://127.0.0.1:{port}/oauth/token", None).status_code == 404
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# ---------------------------------------------------------------------------------------------------------------
# Home page and the authorization code flow
# ---------------------------------------------------------------------------------------------------------------
def test_home_page_lists_customers_and_endpoints(sandbox):
    page = get(f"{sandbox}/", None)
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    for text in ("customer-1", "customer-2", "sandbox", "Test Third Party", f"{sandbox}/oauth/authorize",
                 f"{sandbox}/espi/1_1/resource", "Usage Data Connect My Data"):
        assert text in page.text
    state = get(f"{sandbox}/sandbox.json", None).json()
    customers = {c["id"]: c for c in state["customers"]}
    assert customers["customer-2"]["usage_points"] == ["1", "2", "3"]
    assert customers["customer-1"]["password"] == "sandbox"
    assert [p["client_id"] for p in state["third_parties"]] == ["third_party", "other_party"]


def test_code_flow_token_response(sandbox, receiver):
    query = authorize(sandbox, receiver)
    assert len(query["code"][0]) >= 32
    response = exchange(sandbox, receiver, query["code"][0])
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    token = response.json()
    assert set(token) == {"access_token", "token_type", "expires_in", "refresh_token", "scope", "resourceURI",
                          "authorizationURI"}  # no customer data in scope: no customerResourceURI
    assert token["token_type"] == "Bearer" and token["expires_in"] == 3600
    assert token["scope"] == SUBSCRIPTION_SCOPE
    resource = f"{sandbox}/espi/1_1/resource"
    number = token["resourceURI"].rsplit("/", 1)[1]
    assert token["resourceURI"] == f"{resource}/Batch/Subscription/{number}"
    assert token["authorizationURI"] == f"{resource}/Authorization/{number}"
    # the code is single-use
    again = exchange(sandbox, receiver, query["code"][0])
    assert again.status_code == 400 and again.json()["error"] == "invalid_grant"


def test_client_secret_post_and_query_string_parameters(sandbox, receiver):
    query = authorize(sandbox, receiver, scope=CLASSIC_SCOPE)
    assert exchange(sandbox, receiver, query["code"][0], post_auth=True).status_code == 200
    # the legacy OpenESPI third party puts the parameters in the query string of the POST
    query = authorize(sandbox, receiver, scope=CLASSIC_SCOPE)
    with http() as c:
        response = c.post(f"{sandbox}/oauth/token", auth=("third_party", "secret"), params={
            "grant_type": "authorization_code", "code": query["code"][0],
            "redirect_uri": f"{receiver.url}/callback"})
    assert response.status_code == 200, response.text
    wrong = exchange(sandbox, receiver, "nope", client=("third_party", "wrong"))
    assert wrong.status_code == 401 and wrong.json()["error"] == "invalid_client"


def test_pkce_is_optional_but_checked_when_used(sandbox, receiver):
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    pkce = {"code_challenge": challenge, "code_challenge_method": "S256"}
    code = authorize(sandbox, receiver, extra=pkce)["code"][0]
    missing = exchange(sandbox, receiver, code)
    assert missing.status_code == 400 and missing.json()["error"] == "invalid_request"
    code = authorize(sandbox, receiver, extra=pkce)["code"][0]
    assert exchange(sandbox, receiver, code, verifier=verifier).status_code == 200


def test_two_step_consent_picks_scope_and_usage_points(sandbox, receiver):
    """No scope in the request (FB_31): the customer chooses one of the offered scopes and one of three services."""
    params = {"response_type": "code", "client_id": "third_party", "redirect_uri": f"{receiver.url}/callback",
              "state": "two-step"}
    with http() as client:
        signin = client.post(f"{sandbox}/oauth/authorize", data={**params, "customer_id": "customer-2",
                                                                 "password": "sandbox", "decision": "signin"})
        assert signin.status_code == 200
        ticket = re.search(r'name="ticket" value="([^"]+)"', signin.text).group(1)
        assert "password" not in re.search(r'<section id="consent">.*</section>', signin.text, re.S).group(0)
        for scope in DEFAULT_SCOPES:
            assert scope in signin.text
        assert "Interval Metering" in signin.text and "Readings every 15 minutes" in signin.text
        none_picked = client.post(f"{sandbox}/oauth/authorize", data={
            **params, "ticket": ticket, "step": "consent", "espi_scope": CLASSIC_SCOPE, "decision": "approve"})
        assert none_picked.status_code == 400
        approved = client.post(f"{sandbox}/oauth/authorize", data={
            **params, "ticket": ticket, "step": "consent", "espi_scope": CLASSIC_SCOPE, "usage_point": "2",
            "decision": "approve"})
    assert approved.status_code == 302, approved.text
    code = parse_qs(urlsplit(approved.headers["location"]).query)["code"][0]
    token = exchange(sandbox, receiver, code).json()
    assert token["scope"] == CLASSIC_SCOPE
    feed = feed_of(get(token["resourceURI"], token["access_token"]))
    points = [node for node in feed.graph.usage_points if not node.implicit]
    assert len(points) == 1 and points[0].self_href.endswith("/UsagePoint/2")
    assert points[0].usage_point.service_category.kind == 1  # the gas service of the mixed customer
    other = get(f"{token['resourceURI']}/UsagePoint/1", token["access_token"])
    assert other.status_code == 404


def test_authorize_errors(sandbox, receiver):
    good = {"response_type": "code", "client_id": "third_party", "redirect_uri": f"{receiver.url}/callback",
            "state": "s1", "scope": SUBSCRIPTION_SCOPE}
    with http() as client:
        unknown = client.get(f"{sandbox}/oauth/authorize", params={**good, "client_id": "nobody"})
        assert unknown.status_code == 401 and "invalid_client" in unknown.text
        foreign = client.get(f"{sandbox}/oauth/authorize", params={**good, "redirect_uri": "https://evil.example/"})
        assert foreign.status_code == 400 and "location" not in foreign.headers
        for scope in ("FB=4_5_15_99", "FB=FB_4", "ThirdParty_Admin_Access"):
            refused = client.get(f"{sandbox}/oauth/authorize", params={**good, "scope": scope})
            assert refused.status_code == 302
            assert parse_qs(urlsplit(refused.headers["location"]).query)["error"] == ["invalid_scope"]
        bad_type = client.get(f"{sandbox}/oauth/authorize", params={**good, "response_type": "token"})
        assert parse_qs(urlsplit(bad_type.headers["location"]).query)["error"] == ["unsupported_response_type"]
        wrong = client.post(f"{sandbox}/oauth/authorize", data={**good, "customer_id": "customer-1",
                                                                "password": "nope", "decision": "approve"})
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        denied = client.post(f"{sandbox}/oauth/authorize", data={**good, "decision": "deny"})
        assert denied.status_code == 302
        denial = parse_qs(urlsplit(denied.headers["location"]).query)
        assert denial["error"] == ["access_denied"] and denial["state"] == ["s1"]


# ---------------------------------------------------------------------------------------------------------------
# Resources
# ---------------------------------------------------------------------------------------------------------------
def test_subscription_resources(sandbox, receiver):
    token = subscribe(sandbox, receiver, customer="customer-2")
    access, subscription = token["access_token"], token["resourceURI"]
    resource = f"{sandbox}/espi/1_1/resource"
    number = subscription.rsplit("/", 1)[1]

    batch = feed_of(get(subscription, access))
    assert batch.root == "feed" and batch.header.self_href == subscription
    assert len([n for n in batch.graph.usage_points if not n.implicit]) == 3
    assert len(block_entries(batch)) == 10 + 1 + 1  # 10 daily electric blocks, one monthly gas and water block
    assert batch.reading_count > 0
    assert len(feed_of(get(f"{subscription}/UsagePoint", access)).graph.usage_points) == 3
    one = feed_of(get(f"{subscription}/UsagePoint/1", access))
    assert len(one.graph.usage_points) == 1 and len(block_entries(one)) == 10

    base = f"{resource}/Subscription/{number}/UsagePoint"
    points = feed_of(get(base, access))
    assert [e.kinds for e in points.entries] == [("UsagePoint",)] * 3
    entry = get(f"{base}/1", access)
    assert feed_of(entry).root == "entry"
    readings = feed_of(get(f"{base}/1/MeterReading", access))
    assert [e.kinds for e in readings.entries] == [("MeterReading",)]
    assert feed_of(get(f"{base}/1/MeterReading/1", access)).entries[0].kinds == ("MeterReading",)
    blocks = feed_of(get(f"{base}/1/MeterReading/1/IntervalBlock", access))
    assert len(blocks.entries) == 10 and blocks.reading_count == 10 * 96
    day = feed_of(get(f"{base}/1/MeterReading/1/IntervalBlock/2025-01-03", access))
    assert day.root == "entry" and len(day.blocks[0][0]) == 96
    assert get(f"{base}/1/MeterReading/1/IntervalBlock/2030-01-01", access).status_code == 404
    summaries = get(f"{base}/2/UsageSummary", access)
    assert feed_of(summaries).entries == []  # ten days: no complete month to bill yet
    for kind in ("ReadingType", "LocalTimeParameters"):
        shared = feed_of(get(f"{resource}/{kind}", access))
        assert shared.entries and all(e.kinds == (kind,) for e in shared.entries)
        first = shared.entries[0].self_href.rsplit("/", 1)[1]
        assert feed_of(get(f"{resource}/{kind}/{first}", access)).root == "entry"
    own = feed_of(get(token["authorizationURI"], access))
    authorization = own.entries[0].first("Authorization").value
    assert authorization.status == 1 and authorization.resource_uri == subscription
    assert authorization.scope == SUBSCRIPTION_SCOPE


def test_source_entries_are_served_as_they_are(sandbox, receiver):
    token = subscribe(sandbox, receiver, customer="customer-1")
    served = get(f"{token['resourceURI']}/UsagePoint/1", token["access_token"]).content
    spec = FeedSpec(usage_points=1, net_metering=True, days=10, start=date(2025, 1, 1), seed=1,
                    base_url=f"{sandbox}/espi/1_1/resource/RetailCustomer/1", subscription="1")
    generated = read_feed("".join(generate_feed(spec)).encode())
    ids = {e.id for e in generated.entries}
    feed = feed_of(get(token["resourceURI"], token["access_token"]))
    assert {e.id for e in feed.entries} == ids  # the generator's persistent ids, not new ones
    assert generated.reading_count == feed.reading_count
    assert b"<espi:UsagePoint><espi:ServiceCategory><espi:kind>0</espi:kind>" in served


def test_client_and_registration_tokens(sandbox, receiver):
    bulk_subscription = subscribe(sandbox, receiver, customer="customer-1", scope=BULK_SCOPE)
    client = client_token(sandbox)
    assert set(client) == {"access_token", "token_type", "expires_in", "scope", "resourceURI", "authorizationURI"}
    assert client["scope"] == "FB=34_35"  # no refresh token for client_credentials (OAD015)
    resource = f"{sandbox}/espi/1_1/resource"
    access = client["access_token"]

    authorizations = get(f"{resource}/Authorization", access)
    assert validate(authorizations.content, strict=True).valid
    feed = feed_of(authorizations)
    mine = {e.first("Authorization").value.authorization_uri: e.first("Authorization").value for e in feed.entries}
    assert bulk_subscription["authorizationURI"] in mine
    assert all("other_party" not in uri for uri in mine)
    one = feed_of(get(bulk_subscription["authorizationURI"], access)).entries[0].first("Authorization").value
    assert one.scope == BULK_SCOPE and one.grant_type == "authorization_code"

    status = get(f"{resource}/ReadServiceStatus", access)
    assert status.status_code == 200 and status.headers["content-type"].startswith(ATOM)
    read = read_feed(status.content)
    assert read.root == "ServiceStatus" and read.entries[0].first("ServiceStatus").value.current_status == 1

    bulk_token = client_token(sandbox, "FB=1_3_4_5_10_11_35;BlockDuration=daily;BR=1")
    assert bulk_token["resourceURI"] == f"{resource}/Batch/Bulk/1"
    bulk = feed_of(get(f"{resource}/Batch/Bulk/1", bulk_token["access_token"]))
    points = {n.self_href for n in bulk.graph.usage_points}
    number = bulk_subscription["resourceURI"].rsplit("/", 1)[1]  # a bulk feed's hrefs name each subscription
    assert f"{resource}/RetailCustomer/1/Subscription/{number}/UsagePoint/1" in points
    assert feed_of(get(f"{resource}/Batch/Bulk/unknown", access)).entries == []  # an empty feed is valid

    registration = client_token(sandbox, "FB=36_40")
    assert registration["resourceURI"] == f"{resource}/ApplicationInformation/1"
    info = get(registration["resourceURI"], registration["access_token"])
    assert validate(info.content, strict=True).valid
    application = feed_of(info).entries[0].first("ApplicationInformation").value
    assert application.client_id == "third_party" and application.third_party_notify_uri == f"{receiver.url}/notify"
    assert application.scopes == DEFAULT_SCOPES
    assert application.authorization_server_token_endpoint == f"{sandbox}/oauth/token"
    assert application.data_custodian_resource_endpoint == resource
    # the registration_access_token stored in the ApplicationInformation works as well
    assert get(registration["resourceURI"], application.registration_access_token).status_code == 200


def test_wrong_tokens_are_refused(sandbox, receiver):
    resource = f"{sandbox}/espi/1_1/resource"
    token = subscribe(sandbox, receiver, customer="customer-1")
    mine = subscribe(sandbox, receiver, customer="customer-2")
    access = token["access_token"]
    client = client_token(sandbox)["access_token"]
    registration = client_token(sandbox, "ThirdParty_Registration_Access")["access_token"]
    other_client = client_token(sandbox, client=("other_party", "other-secret"))["access_token"]
    other_registration = client_token(sandbox, "FB=36_40", client=("other_party", "other-secret"))["access_token"]

    missing = get(token["resourceURI"], None)
    assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
    assert get(token["resourceURI"], "not-a-token").status_code == 401
    for url, bearer in [
        (f"{resource}/Batch/Bulk/1", access),  # RBK002
        (f"{resource}/Batch/Bulk/1", registration),  # RBK003
        (token["resourceURI"], client),
        (token["resourceURI"], registration),
        (mine["resourceURI"], access),  # another customer's subscription
        (f"{resource}/Subscription/{mine['resourceURI'].rsplit('/', 1)[1]}/UsagePoint", access),
        (f"{resource}/Authorization", access),
        (mine["authorizationURI"], access),
        (f"{resource}/ApplicationInformation/1", access),
        (f"{resource}/ApplicationInformation/1", client),
        (f"{resource}/ApplicationInformation/1", other_registration),
        (f"{resource}/ReadServiceStatus", access),
        (token["authorizationURI"], other_client),
    ]:
        response = get(url, bearer)
        assert response.status_code in (401, 403), (url, response.status_code)
    with http() as c:
        put = c.put(token["authorizationURI"], headers={"Authorization": f"Bearer {access}"}, content=b"<x/>")
    assert put.status_code == 403
    assert get(f"{resource}/NoSuchThing", client).status_code == 404


def test_refresh_replaces_the_access_token(sandbox, receiver):
    token = subscribe(sandbox, receiver)
    with http() as c:
        refreshed = c.post(f"{sandbox}/oauth/token", auth=("third_party", "secret"),
                           data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.text
    body = refreshed.json()
    assert body["access_token"] != token["access_token"]
    assert body["refresh_token"] == token["refresh_token"]  # kept, as OpenESPI does
    assert body["resourceURI"] == token["resourceURI"] and body["scope"] == token["scope"]
    assert get(token["resourceURI"], token["access_token"]).status_code == 401  # OAD013
    assert get(token["resourceURI"], body["access_token"]).status_code == 200
    with http() as c:
        foreign = c.post(f"{sandbox}/oauth/token", auth=("other_party", "other-secret"),
                         data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
    assert foreign.status_code == 400 and foreign.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("name", ["published-min", "published-max", "updated-min", "updated-max"])
@pytest.mark.parametrize("value", ["abc", "All", "2025-02-30T00:00:00Z", "2025-01-01T00:00:00.5Z",
                                   "2025-01-01T00:00:00+01:00", "2025-01-01"])
def test_invalid_date_parameters_answer_400(sandbox, receiver, subscription_token, name, value):
    response = get(subscription_token["resourceURI"], subscription_token["access_token"], **{name: value})
    assert response.status_code == 400
    assert "invalid query parameter" in response.text


@pytest.mark.parametrize("name", ["max-results", "start-index", "depth"])
@pytest.mark.parametrize("value", ["abc", "-1", "1.5", ""])
def test_invalid_number_parameters_answer_400(sandbox, subscription_token, name, value):
    response = get(subscription_token["resourceURI"], subscription_token["access_token"], **{name: value})
    assert response.status_code == 400


@pytest.fixture(scope="module")
def subscription_token(sandbox, receiver):
    return subscribe(sandbox, receiver, customer="customer-1")


def test_query_parameters_select_interval_blocks(sandbox, subscription_token):
    url, access = subscription_token["resourceURI"], subscription_token["access_token"]
    everything = feed_of(get(url, access))
    assert len(block_entries(everything)) == 20  # 10 days of forward and reverse readings
    # a generated day's blocks are published when the day ends (05:00Z, US Eastern midnight)
    window = feed_of(get(url, access, **{"published-min": "2025-01-03T00:00:00Z",
                                         "published-max": "2025-01-06T00:00:00Z"}))
    blocks = block_entries(window)
    assert len(blocks) == 6  # Jan 2, 3 and 4, two series each (QRY001: fewer IntervalBlocks)
    assert {e.published.isoformat() for e in blocks} == {"2025-01-03T05:00:00+00:00", "2025-01-04T05:00:00+00:00",
                                                         "2025-01-05T05:00:00+00:00"}
    kinds = {k for e in window.entries for k in e.kinds}
    assert {"UsagePoint", "MeterReading", "ReadingType", "LocalTimeParameters"} <= kinds  # links stay resolvable
    assert window.graph.meter_readings and all(not n.implicit for n in window.graph.meter_readings)
    assert len(block_entries(feed_of(get(url, access, **{"updated-min": "2025-01-10T06:00:00Z"})))) == 2
    assert len(block_entries(feed_of(get(url, access, **{"max-results": "3"})))) == 3
    assert len(block_entries(feed_of(get(url, access, **{"depth": "4", "max-results": "7"})))) == 4
    paged = block_entries(feed_of(get(url, access, **{"start-index": "19"})))
    assert [e.self_href for e in paged] == [e.self_href for e in block_entries(everything)[18:]]
    number = url.rsplit("/", 1)[1]
    collection = f"{url.split('/Batch/')[0]}/Subscription/{number}/UsagePoint/1/MeterReading/1/IntervalBlock"
    assert len(feed_of(get(collection, access, **{"published-max": "2025-01-04T00:00:00Z"})).entries) == 2
    assert get(collection, access, **{"published-max": "yesterday"}).status_code == 400


# ---------------------------------------------------------------------------------------------------------------
# Notifications: revocation, new data, retries
# ---------------------------------------------------------------------------------------------------------------
def test_revocation_notifies_and_kills_tokens(sandbox, receiver):
    token = subscribe(sandbox, receiver)
    client = client_token(sandbox)["access_token"]
    body = (b'<entry xmlns="http://www.w3.org/2005/Atom"><content><Authorization xmlns="http://naesb.org/espi">'
            b"<status>0</status></Authorization></content></entry>")
    with http() as c:
        revoked = c.put(token["authorizationURI"], headers={"Authorization": f"Bearer {client}"}, content=body)
    assert revoked.status_code == 200, revoked.text
    assert feed_of(revoked).entries[0].first("Authorization").value.status == 0
    assert receiver.batch_list_naming(token["authorizationURI"]) == (token["authorizationURI"],)
    assert classify_resource(token["authorizationURI"]).kind is ResourceKind.AUTHORIZATION
    assert get(token["resourceURI"], token["access_token"]).status_code == 401
    with http() as c:
        refresh = c.post(f"{sandbox}/oauth/token", auth=("third_party", "secret"),
                         data={"grant_type": "refresh_token", "refresh_token": token["refresh_token"]})
        assert refresh.status_code == 400
        listed = get(token["authorizationURI"], client)
        assert feed_of(listed).entries[0].first("Authorization").value.status == 0
        second = subscribe(sandbox, receiver)
        deleted = c.delete(second["authorizationURI"], headers={"Authorization": f"Bearer {client}"})
        assert deleted.status_code == 204
        receiver.batch_list_naming(second["authorizationURI"])
        # the customer revokes at the custodian (home page button)
        third = subscribe(sandbox, receiver)
        number = third["authorizationURI"].rsplit("/", 1)[1]
        assert c.post(f"{sandbox}/sandbox/authorizations/{number}/revoke").json()["status"] == 0
        receiver.batch_list_naming(third["authorizationURI"])
        assert get(third["resourceURI"], third["access_token"]).status_code == 401


def test_failed_notifications_are_retried(sandbox, receiver):
    token = subscribe(sandbox, receiver, client=("other_party", "other-secret"), redirect="other-callback",
                      scope="FB=1_3_4_5_13_14_39;IntervalDuration=900;BlockDuration=daily;BR=7")
    client = client_token(sandbox, client=("other_party", "other-secret"))["access_token"]
    with http() as c:
        assert c.delete(token["authorizationURI"], headers={"Authorization": f"Bearer {client}"}).status_code == 204
    receiver.wait_for(lambda post: post[0] == "flaky" and token["authorizationURI"].encode() in post[2])
    state = get(f"{sandbox}/sandbox.json", None).json()
    attempt = next(n for n in state["notifications"] if token["authorizationURI"] in n["resources"])
    assert attempt["status"] == "delivered" and attempt["attempts"] == 3


def test_new_data_is_announced(sandbox, receiver):
    """Like real custodians, every new-data BatchList names the plain ``Batch/Subscription/{id}``: the same URI each
    time (a third party must fetch it again every time it is named)."""
    token = subscribe(sandbox, receiver, customer="customer-2", form={"usage_point": "1"})
    bulk = subscribe(sandbox, receiver, customer="customer-2", scope=BULK_SCOPE)
    before = len(receiver.posts)
    for _ in range(2):
        with http() as c:
            grown = c.post(f"{sandbox}/sandbox/customers/customer-2/advance", data={"days": "1"})
        assert grown.status_code == 200, grown.text
        assert token["resourceURI"] in grown.json()["notified"]
        assert not any("?" in uri for uri in grown.json()["notified"])
    deadline = time.monotonic() + 15
    while True:
        named = [post for post in receiver.posts[before:] if token["resourceURI"] in parse_batch_list(post[2])]
        if len(named) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(named) == 2  # one BatchList per growth, each naming the same plain URI
    resource = f"{sandbox}/espi/1_1/resource"
    assert receiver.batch_list_naming(f"{resource}/Batch/Bulk/1")
    assert bulk["resourceURI"] not in grown.json()["notified"]
    fresh = feed_of(get(token["resourceURI"], token["access_token"]))
    assert [e.self_href.rsplit("/", 1)[1] for e in block_entries(fresh)][-2:] == ["2025-01-11", "2025-01-12"]


def test_notify_window_names_the_new_data(tmp_path, receiver):
    """``notify_window``: new-data BatchLists name the subscription with the new IntervalBlocks' window, for growth
    and for an upload alike."""
    with start_sandbox(tmp_path, receiver, "notify_window = true") as url:
        base = str(url)
        token = subscribe(base, receiver, customer="customer-2", form={"usage_point": "1"})
        with http() as c:
            grown = c.post(f"{base}/sandbox/customers/customer-2/advance", data={"days": "2"})
        assert grown.status_code == 200, grown.text
        result = grown.json()
        assert (result["published_min"], result["published_max"]) == ("2025-01-12T05:00:00Z",
                                                                       "2025-01-13T05:00:00Z")
        uri = f"{token['resourceURI']}?published-min=2025-01-12T05:00:00Z&published-max=2025-01-13T05:00:00Z"
        assert uri in receiver.batch_list_naming(uri)
        notified = classify_resource(uri)
        fresh = feed_of(get(notified.normalized_uri(), token["access_token"]))
        assert [e.self_href.rsplit("/", 1)[1] for e in block_entries(fresh)] == ["2025-01-11", "2025-01-12"]
        _upload_announces_new_data(base, receiver, windowed=True)


def test_upload_announces_new_data(sandbox, receiver):
    _upload_announces_new_data(sandbox, receiver, windowed=False)


def _upload_announces_new_data(sandbox, receiver, windowed: bool):
    token = subscribe(sandbox, receiver, customer="customer-1")
    upload = client_token(sandbox, "FB=45", client=("data_custodian", "secret"))
    assert upload["resourceURI"].endswith("/Batch/RetailCustomer")
    resource = f"{sandbox}/espi/1_1/resource"
    spec = FeedSpec(usage_points=1, net_metering=True, days=1, start=date(2025, 3, 1), seed=5,
                    base_url=f"{resource}/RetailCustomer/1", subscription="1")
    document = "".join(generate_feed(spec)).encode()
    with http() as c:
        refused = c.post(f"{resource}/Batch/RetailCustomer/1/UsagePoint", content=document,
                         headers={"Authorization": f"Bearer {token['access_token']}", "Content-Type": ATOM})
        assert refused.status_code == 403
        posted = c.post(f"{resource}/Batch/RetailCustomer/1/UsagePoint", content=document,
                        headers={"Authorization": f"Bearer {upload['access_token']}", "Content-Type": ATOM})
    assert posted.status_code == 200, posted.text
    if windowed:
        uris = receiver.wait_for(lambda post: token["resourceURI"].encode() + b"?" in post[2])
        [uri] = [u for u in parse_batch_list(uris[2]).resources if u.startswith(token["resourceURI"] + "?")]
        window = classify_resource(uri)
        assert window.published_min is not None and window.published_min == window.published_max  # GENERATED_AT
    else:
        assert token["resourceURI"] in receiver.batch_list_naming(token["resourceURI"])
    after = feed_of(get(token["resourceURI"], token["access_token"]))
    days = {e.self_href.rsplit("/", 1)[1] for e in block_entries(after)}
    assert "2025-03-01" in days and "2025-01-01" in days
    download = get(f"{resource}/Batch/RetailCustomer/1/UsagePoint", upload["access_token"])
    assert download.headers["content-disposition"].endswith("GreenButtonDownload.xml")
    assert feed_of(download).reading_count == after.reading_count


# ---------------------------------------------------------------------------------------------------------------
# Switches: defer, bulk files
# ---------------------------------------------------------------------------------------------------------------
def test_defer_answers_202_then_notifies(tmp_path, receiver):
    with start_sandbox(tmp_path, receiver, "defer = 0.3") as url:
        base = str(url)
        token = subscribe(base, receiver, customer="customer-1", scope=BULK_SCOPE)
        params = {"published-min": "2025-01-02T00:00:00Z", "published-max": "2025-01-04T00:00:00Z"}
        first = get(token["resourceURI"], token["access_token"], **params)
        assert first.status_code == 202 and first.content == b"" and first.headers["retry-after"] == "1"
        assert "%3A" in str(first.request.url)  # httpx2 escapes ':' in the query; the BatchList names it unescaped
        uri = f"{token['resourceURI']}?published-min=2025-01-02T00:00:00Z&published-max=2025-01-04T00:00:00Z"
        assert receiver.batch_list_naming(uri) == (uri,)
        ready = feed_of(get(token["resourceURI"], token["access_token"], **params))
        assert len(block_entries(ready)) == 4
        assert feed_of(get(uri, token["access_token"])).reading_count == ready.reading_count  # the URI as notified
        # another window is another request: deferred again
        assert get(token["resourceURI"], token["access_token"]).status_code == 202
        # Batch/Bulk too, with the client token
        client = client_token(base)["access_token"]
        bulk_uri = f"{base}/espi/1_1/resource/Batch/Bulk/1"
        assert get(bulk_uri, client).status_code == 202
        assert receiver.batch_list_naming(bulk_uri) == (bulk_uri,)
        assert classify_resource(bulk_uri).kind is ResourceKind.BULK
        bulk = feed_of(get(bulk_uri, client))
        assert len([n for n in bulk.graph.usage_points if not n.implicit]) == 1
        # errors are not deferred
        assert get(f"{token['resourceURI']}/UsagePoint/9", token["access_token"]).status_code == 404


@pytest.mark.parametrize("status", [405, 501])
def test_a_custodian_without_delete_authorization(tmp_path, receiver, status):
    """``delete_authorization_status``: DELETE Authorization answers 405 (with Allow) or 501; the Authorization
    stays active, nobody is notified, and PUT still revokes."""
    with start_sandbox(tmp_path, receiver, f"delete_authorization_status = {status}") as url:
        base = str(url)
        token = subscribe(base, receiver, customer="customer-1")
        client = client_token(base)["access_token"]
        before = len(receiver.posts)
        with http() as c:
            refused = c.delete(token["authorizationURI"], headers={"Authorization": f"Bearer {client}"})
            assert refused.status_code == status
            assert refused.headers.get("allow") == ("GET, PUT" if status == 405 else None)
            assert feed_of(get(token["authorizationURI"], client)).entries[0].first("Authorization").value.status == 1
            assert get(token["resourceURI"], token["access_token"]).status_code == 200
            assert c.get(f"{base}/sandbox.json").json()["switches"]["delete_authorization_status"] == status
            body = (b'<Authorization xmlns="http://naesb.org/espi"><status>0</status></Authorization>')
            assert c.put(token["authorizationURI"], headers={"Authorization": f"Bearer {client}"},
                         content=body).status_code == 200
        receiver.batch_list_naming(token["authorizationURI"])  # the PUT's revocation, not the refused DELETE
        assert len([p for p in receiver.posts[before:] if token["authorizationURI"].encode() in p[2]]) == 1
    with pytest.raises(SandboxConfigError, match="delete_authorization_status"):
        load_sandbox_config(env={"GREENBRIDGE_SANDBOX_DELETE_AUTHORIZATION_STATUS": "500"})


def test_response_delay_holds_answers_built_before_new_data(tmp_path, receiver):
    """``response_delay``: a Batch/Subscription answer is built when the request arrives and held for the delay
    (shown as ``held_responses``); data that grows meanwhile is not in it, and the next request has it."""
    with start_sandbox(tmp_path, receiver, "response_delay = 3") as url:
        base = str(url)
        token = subscribe(base, receiver, customer="customer-1")
        thread_result: list = []
        slow = threading.Thread(target=lambda: thread_result.append(get(token["resourceURI"],
                                                                        token["access_token"])))
        slow.start()
        deadline = time.monotonic() + 15
        while get(f"{base}/sandbox.json", None).json()["held_responses"] == 0:
            assert time.monotonic() < deadline and slow.is_alive(), "the answer was never held"
            time.sleep(0.05)
        with http() as c:  # the customer's data grows while the answer is held
            assert c.post(f"{base}/sandbox/customers/customer-1/advance", data={"days": "1"}).status_code == 200
        slow.join(30)
        held = feed_of(thread_result[0])
        after = feed_of(get(token["resourceURI"], token["access_token"]))
        assert after.reading_count > held.reading_count
        assert get(f"{base}/sandbox.json", None).json()["held_responses"] == 0
        assert get(token["authorizationURI"], token["access_token"]).status_code == 200  # others are not held


def test_outage_answers_the_next_requests_with_503(sandbox, receiver):
    token = subscribe(sandbox, receiver, customer="customer-1")
    with http() as c:
        assert c.post(f"{sandbox}/sandbox/outage", data={"requests": "2", "retry_after": "7"}).status_code == 200
        assert c.post(f"{sandbox}/sandbox/outage", data={"status": "404"}).status_code == 400
    for _ in range(2):
        down = get(token["resourceURI"], token["access_token"])
        assert down.status_code == 503 and down.headers["retry-after"] == "7"
    assert get(token["resourceURI"], token["access_token"]).status_code == 200
    with http() as c:
        assert c.post(f"{sandbox}/sandbox/outage", data={"requests": "5", "status": "429"}).json()["outage"] == \
            {"status": 429, "remaining": 5, "retry_after": 1}
        assert get(token["resourceURI"], token["access_token"]).status_code == 429
        assert c.post(f"{sandbox}/sandbox/outage", data={"requests": "0"}).json()["outage"] is None
    assert get(token["resourceURI"], token["access_token"]).status_code == 200


def test_bulk_files_for_sftp(tmp_path, receiver):
    bulk_dir = tmp_path / "bulk"
    extra = f'bulk_dir = "{bulk_dir}"\nsftp_uri = "sftp://sandbox@127.0.0.1:2222/bulk"'
    with start_sandbox(tmp_path, receiver, extra) as url:
        base = str(url)
        token = subscribe(base, receiver, customer="customer-2", scope=BULK_SCOPE)
        client = client_token(base)["access_token"]
        resource = f"{base}/espi/1_1/resource"
        info = feed_of(get(f"{resource}/ApplicationInformation/1", client_token(base, "FB=36_40")["access_token"]))
        assert info.entries[0].first("ApplicationInformation").value.data_custodian_bulk_request_uri == \
            "sftp://sandbox@127.0.0.1:2222/bulk"
        answer = get(f"{resource}/Batch/Bulk/1", client)
        assert answer.status_code == 202
        sftp = "sftp://sandbox@127.0.0.1:2222/bulk/third_party/1.xml"
        assert receiver.batch_list_naming(sftp) == (sftp,)
        assert classify_resource(sftp).kind is ResourceKind.SFTP_BULK
        written = bulk_dir / "third_party" / "1.xml"
        feed = read_feed(written)
        assert len([n for n in feed.graph.usage_points if not n.implicit]) == 3
        assert not list(bulk_dir.rglob("*.part"))
        # new data for a BR= subscription rewrites the file and names it again
        before = written.read_bytes()
        with http() as c:
            assert c.post(f"{base}/sandbox/customers/customer-2/advance").status_code == 200
        deadline = time.monotonic() + 10
        while written.read_bytes() == before and time.monotonic() < deadline:
            time.sleep(0.05)
        assert read_feed(written).reading_count > feed.reading_count
        assert get(token["resourceURI"], token["access_token"]).status_code == 200  # REST stays available


def test_bulk_files_over_rest(tmp_path, receiver):
    bulk_dir = tmp_path / "bulk"
    with start_sandbox(tmp_path, receiver, f'bulk_dir = "{bulk_dir}"') as url:
        base = str(url)
        subscribe(base, receiver, customer="customer-1", scope=BULK_SCOPE)
        client = client_token(base)["access_token"]
        bulk_uri = f"{base}/espi/1_1/resource/Batch/Bulk/1"
        assert get(bulk_uri, client).status_code == 202
        assert receiver.batch_list_naming(bulk_uri) == (bulk_uri,)
        served = get(bulk_uri, client)
        assert served.status_code == 200
        assert served.content == (bulk_dir / "third_party" / "1.xml").read_bytes()
        assert len(block_entries(read_feed(served.content))) == 20


def test_one_customer_two_authorizations_with_hrefs_below_the_customer(tmp_path, receiver):
    """Field-like switches: ``href_style = "retail_customer"`` and ``customer_resource_uri = "always"``. Customer 2
    (electric, gas and water) authorizes the third party twice, with UsagePoint 1 and with UsagePoints 1 and 2: each
    subscription serves its own UsagePoints, every href below ``RetailCustomer/2`` and none naming a subscription
    (one identity per resource whichever subscription carries it), both token responses name the same customer,
    and the bulk carries each of the customer's entries once."""
    extra = 'href_style = "retail_customer"\ncustomer_resource_uri = "always"'
    with start_sandbox(tmp_path, receiver, extra) as url:
        base, resource = str(url), f"{url}/espi/1_1/resource"
        below = f"{resource}/RetailCustomer/2/"
        first = subscribe(base, receiver, customer="customer-2", scope=BULK_SCOPE, form={"usage_point": ["1"]})
        second = subscribe(base, receiver, customer="customer-2", scope=BULK_SCOPE,
                           form={"usage_point": ["1", "2"]})
        assert first["resourceURI"] != second["resourceURI"]
        assert first["customerResourceURI"] == second["customerResourceURI"] == f"{resource}/Batch/RetailCustomer/2"
        feeds = [feed_of(get(token["resourceURI"], token["access_token"])) for token in (first, second)]
        assert [sorted(n.self_href for n in feed.graph.usage_points) for feed in feeds] == [
            [f"{below}UsagePoint/1"], [f"{below}UsagePoint/1", f"{below}UsagePoint/2"]]
        for feed in feeds:
            links = [link.href for e in feed.entries for link in e.links if not (link.type or "").startswith("text/")]
            assert links and all(h.startswith(below) and "/Subscription/" not in h for h in links)
        one = {e.self_href for e in feeds[0].entries}
        assert one <= {e.self_href for e in feeds[1].entries}  # the shared UsagePoint has one identity

        answer = get(f"{resource}/Batch/Bulk/1", client_token(base)["access_token"])
        assert validate(answer.content, strict=True).valid
        bulk = feed_of(answer)
        hrefs = [e.self_href for e in bulk.entries]
        assert len(hrefs) == len(set(hrefs)) == len(set().union(*({e.self_href for e in f.entries} for f in feeds)))
        assert sorted(n.self_href for n in bulk.graph.usage_points) == [f"{below}UsagePoint/1", f"{below}UsagePoint/2"]
    with pytest.raises(SandboxConfigError, match="href_style"):
        load_sandbox_config(env={"GREENBRIDGE_SANDBOX_HREF_STYLE": "customer"})
    with pytest.raises(SandboxConfigError, match="customer_resource_uri"):
        load_sandbox_config(env={"GREENBRIDGE_SANDBOX_CUSTOMER_RESOURCE_URI": "sometimes"})


# ---------------------------------------------------------------------------------------------------------------
# Sample files (../shared/espi/samples): directory customers, customer data, the harness's filtered feed
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.samples
def test_directory_customers_and_customer_data(tmp_path, receiver, sample):
    sample("hydroone_Retail_Customer_redacted.xml")
    with start_sandbox(tmp_path, receiver, env={"GREENBRIDGE_SANDBOX_DATA_DIR": str(SAMPLES_DIR),
                                                "GREENBRIDGE_SANDBOX_GENERATE_CUSTOMERS": "0"}) as url:
        base = str(url)
        state = get(f"{base}/sandbox.json", None).json()
        customers = {c["id"]: c for c in state["customers"]}
        assert customers["hydroone_DownLoadMyData_redacted"]["customer_data"] is True
        assert "cmdtest_ApplicationInformationSample" not in customers  # no usage data: not a customer
        token = subscribe(base, receiver, customer="hydroone_DownLoadMyData_redacted", scope=CUSTOMER_SCOPE)
        number = customers["hydroone_DownLoadMyData_redacted"]["retail_customer_id"]
        assert token["customerResourceURI"] == f"{base}/espi/1_1/resource/Batch/RetailCustomer/{number}"
        people = feed_of(get(token["customerResourceURI"], token["access_token"]))
        assert "Customer" in {k for e in people.entries for k in e.kinds}
        usage = feed_of(get(token["resourceURI"], token["access_token"]))
        source = read_feed(SAMPLES_DIR / "hydroone_DownLoadMyData_redacted.xml")
        assert [e.id for e in usage.entries] == [e.id for e in source.entries]
        assert usage.reading_count == source.reading_count
        without = subscribe(base, receiver, customer="hydroone_DownLoadMyData_redacted")
        assert "customerResourceURI" not in without
        assert get(token["customerResourceURI"], without["access_token"]).status_code == 403

        harness = subscribe(base, receiver, customer="cmdtest_soapui_resource_filteredMinMax")
        window = feed_of(get(harness["resourceURI"], harness["access_token"],
                             **{"published-min": "2012-03-05T00:00:00Z", "published-max": "2012-03-07T00:00:00Z"}))
        assert len(block_entries(window)) == 3  # the blocks published on March 5, 6 and 7
        assert len(block_entries(feed_of(get(harness["resourceURI"], harness["access_token"])))) == 12


def test_generated_customers_carry_the_configured_traits_of_real_files():
    """Issue 12 item 9: the sandbox serves the warts the translator has rules for (espi.generate.TRAITS), each
    where a customer's profile can carry it; unknown or clashing traits are refused at configuration."""
    from dataclasses import replace

    from espi.generate import write_feed
    from sandbox.config import SandboxConfigError, load_sandbox_config
    from sandbox.data import generated_spec, load_customers

    config = load_sandbox_config(env={"GREENBRIDGE_SANDBOX_GENERATE_TRAITS": "zero-durations, directional-summaries",
                                      "GREENBRIDGE_SANDBOX_GENERATE_DAYS": "2"})
    assert config.generate_traits == ("zero-durations", "directional-summaries")
    net_metering, mixed = (generated_spec(n, 2, config.generate_start, "https://x.test/r", config.generate_traits)
                           for n in (1, 2))
    assert net_metering.traits == {"zero-durations", "directional-summaries"}
    assert mixed.traits == {"zero-durations"}  # no second series: directional summaries left out for it
    served = {c.login: c.spec.traits for c in load_customers(config)}
    assert served == {"customer-1": net_metering.traits, "customer-2": mixed.traits, "customer-3": mixed.traits}
    feed = io.StringIO()
    write_feed(feed, replace(net_metering, days=40))  # a whole billing period: per-direction UsageSummaries
    assert "<espi:duration>0</espi:duration>" in feed.getvalue() and "readingTypeRef" in feed.getvalue()
    for wrong in ("no-such-trait", "accumulation-none,cumulative-label"):
        with pytest.raises(SandboxConfigError, match="generate_traits"):
            load_sandbox_config(env={"GREENBRIDGE_SANDBOX_GENERATE_TRAITS": wrong})
