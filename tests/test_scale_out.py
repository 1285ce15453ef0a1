"""Scale-out (issue 14): two gateway processes and three worker processes share one Redis and one PostgreSQL on
127.0.0.1, behind nginx running deploy/nginx/greenbridge.conf (TLS, the issuer is nginx's https URL). Customers of
the sandbox custodian go through consent to data across both gateways; mid-run one worker is killed while every
worker holds a fetch (the sandbox answers slowly) and one gateway is killed; the remaining customers consent through
the surviving gateway (nginx skips the dead one), the killed worker's fetch is taken over once its lease runs out
(the reconciler, sent as beat would), and every customer's usage segments hold exactly the readings the sandbox
generated for them: each value once, the exact decimal sums.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import ssl
import time
from decimal import Decimal
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from bridge_stack import (
    CUSTODIAN_ID,
    SANDBOX_CLIENT,
    USAGE_DETAILS,
    Bridge,
    CdsClient,
    approve_at_gateway,
    at_sandbox,
    gateway_on,
    generate_start,
    segment_totals,
    source_totals,
)
from conftest import REPO, require_servers
from gateway_helpers import COVERAGE_TOML, continue_to_client, pkce_pair
from servers import (
    ServerUnavailable,
    create_database,
    drop_database,
    free_port,
    nginx_server,
    port_open,
    redis_server,
    uvicorn_server,
)

from sandbox.config import DEFAULT_SCOPES

pytestmark = pytest.mark.slow

CUSTOMERS = 6
DAYS = 10
FETCH_SECONDS = 2.0  # the sandbox holds every Batch/Subscription answer this long: fetches are in flight a while
LEASE_SECONDS = 6


class Deployment:
    """What the test drives: the issuer (nginx), both gateways and the Bridge (workers, store, Redis)."""

    def __init__(self, bridge: Bridge, gateways: list, http: httpx2.Client) -> None:
        self.bridge, self.gateways, self.http = bridge, gateways, http

    @property
    def issuer(self) -> str:
        return self.bridge.gateway


@pytest.fixture
def scaled(tmp_path, postgres_url):
    """nginx → 2 gateways, 3 workers (one pool process each), one Redis, one PostgreSQL database, the sandbox."""
    database_url = create_database(postgres_url)
    ports = [free_port(), free_port()]
    with contextlib.ExitStack() as stack:
        stack.callback(drop_database, database_url)
        redis_url = stack.enter_context(redis_server(tmp_path))
        try:
            nginx = stack.enter_context(nginx_server(tmp_path, [f"127.0.0.1:{port}" for port in ports]))
        except ServerUnavailable as missing:
            if require_servers():
                pytest.fail(f"{missing} (GREENBRIDGE_REQUIRE_SERVERS is set)", pytrace=False)
            pytest.skip(str(missing))
        issuer = str(nginx)
        secret = "s3cret-" + secrets.token_hex(4)
        sandbox = stack.enter_context(uvicorn_server("sandbox.app:create_sandbox_app", app_dir=REPO,
                                                     health_path="/healthz", log_path=tmp_path / "sandbox.log", env={
            "GREENBRIDGE_SANDBOX_BASE_URL": "http://127.0.0.1:{port}",
            "GREENBRIDGE_SANDBOX_CLIENT_ID": SANDBOX_CLIENT, "GREENBRIDGE_SANDBOX_CLIENT_SECRET": secret,
            "GREENBRIDGE_SANDBOX_REDIRECT_URI": f"{issuer}/custodians/{CUSTODIAN_ID}/callback",
            # notifications go to the gateway that stays up: the sandbox does not trust nginx's test certificate
            "GREENBRIDGE_SANDBOX_NOTIFY_URI": f"http://127.0.0.1:{ports[0]}/espi/1_1/Notification",
            "GREENBRIDGE_SANDBOX_SCOPES": "|".join(DEFAULT_SCOPES),
            "GREENBRIDGE_SANDBOX_GENERATE_CUSTOMERS": str(CUSTOMERS),
            "GREENBRIDGE_SANDBOX_GENERATE_DAYS": str(DAYS),
            "GREENBRIDGE_SANDBOX_GENERATE_START": generate_start(DAYS).isoformat(),
            "GREENBRIDGE_SANDBOX_RESPONSE_DELAY": str(FETCH_SECONDS),
        }))
        config = tmp_path / "greenbridge.toml"
        config.write_text(COVERAGE_TOML + f"""
[[custodians]]
id = "{CUSTODIAN_ID}"
name = "Sandbox Power & Light"
resource_url = "{sandbox}/espi/1_1/resource"
authorize_url = "{sandbox}/oauth/authorize"
token_url = "{sandbox}/oauth/token"
client_id = "{SANDBOX_CLIENT}"
client_secret = "{secret}"
hosts = ["127.0.0.1"]
scopes = [{", ".join(json.dumps(s) for s in DEFAULT_SCOPES)}]
""")
        secret_key = secrets.token_urlsafe(32)
        env = {"GREENBRIDGE_CONFIG": str(config), "GREENBRIDGE_ISSUER": issuer,
               "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_DATABASE_URL": database_url,
               "GREENBRIDGE_SECRET_KEY": secret_key, "GREENBRIDGE_REDIS_URL": redis_url,
               "GREENBRIDGE_JOB_LEASE_SECONDS": str(LEASE_SECONDS)}
        bridge = Bridge(issuer, str(sandbox), redis_url, database_url, secret_key, tmp_path, env, secret)
        # both gateways start at once on the empty store: they migrate it under PostgreSQL's advisory lock
        gateways = [stack.enter_context(gateway_on(port, env, tmp_path / f"gateway-{n}.log"))
                    for n, port in enumerate(ports, 1)]
        stack.callback(bridge.stop_workers)
        for _ in range(3):
            bridge.start_worker(concurrency=1)
        trust = ssl.create_default_context(cafile=str(nginx.ca_path))
        http = stack.enter_context(httpx2.Client(verify=trust, timeout=30, follow_redirects=False))
        yield Deployment(bridge, gateways, http)


# ------------------------------------------------------------------------------------- a CDS client through nginx
def register(d: Deployment) -> CdsClient:
    registered = d.http.post(f"{d.issuer}/oauth/register", json={"scope": "cds_client_admin cds_usage_1",
                                                                   "client_name": "Scale-out App"}).json()
    admin = d.http.post(f"{d.issuer}/oauth/token", auth=(registered["client_id"], registered["client_secret"]),
                        data={"grant_type": "client_credentials", "scope": "cds_client_admin"}).json()["access_token"]
    headers = {"Authorization": f"Bearer {admin}"}
    clients = d.http.get(f"{d.issuer}/cds-api/v1/clients", headers=headers).json()["clients"]
    usage = next(c for c in clients if "cds_usage_1" in c["scope"].split())
    secret = d.http.get(f"{d.issuer}/cds-api/v1/credentials", headers=headers,
                        params={"client_ids": usage["client_id"]}).json()["credentials"][0]["client_secret"]
    return CdsClient(usage["client_id"], secret, usage["cds_default_redirect_uri"], admin)


def consent(d: Deployment, client: CdsClient, customer_index: int) -> tuple[str, str]:
    """One customer: PAR, greenbridge's consent page, the sandbox's, the callback, the code exchange (every
    greenbridge step through nginx); (grant id, access token)."""
    verifier, challenge = pkce_pair()
    pushed = d.http.post(f"{d.issuer}/oauth/par", auth=(client.client_id, client.secret), data={
        "response_type": "code", "client_id": client.client_id, "redirect_uri": client.redirect_uri,
        "scope": "cds_usage_1", "state": f"s-{customer_index}", "code_challenge": challenge,
        "code_challenge_method": "S256", "authorization_details": json.dumps(USAGE_DETAILS)})
    assert pushed.status_code == 201, pushed.text
    answer = approve_at_gateway(d.http, f"{d.issuer}/oauth/authorize?client_id={client.client_id}"
                                        f"&request_uri={pushed.json()['request_uri']}")
    assert answer.status_code == 303, answer.text
    callback = at_sandbox(d.http, d.bridge.sandbox, answer.headers["location"], customer_index=customer_index)
    assert callback.startswith(d.issuer)
    answer = continue_to_client(d.http, d.http.get(callback))  # the confirmation page first (issue 14 item 6)
    code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
    tokens = d.http.post(f"{d.issuer}/oauth/token", auth=(client.client_id, client.secret), data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri,
        "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    (grant_id,) = tokens.json()["cds_grant_ids"]
    return grant_id, tokens.json()["access_token"]


def grant_status(d: Deployment, client: CdsClient, grant_id: str) -> str:
    answer = d.http.get(f"{d.issuer}/cds-api/v1/grants/{grant_id}",
                        headers={"Authorization": f"Bearer {client.admin_token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()["status"]


def usage_segments(d: Deployment, access_token: str) -> list[dict]:
    url, found = f"{d.issuer}/cds-api/v1/usage-segments", []
    while url:
        answer = d.http.get(url, headers={"Authorization": f"Bearer {access_token}"})
        assert answer.status_code == 200, answer.text
        body = json.loads(answer.text, parse_float=Decimal)
        found += body["usage_segments"]
        url = body["next"]
    return found


def held(d: Deployment) -> int:
    return httpx2.get(f"{d.bridge.sandbox}/sandbox.json", timeout=30).json()["held_responses"]


def requests_served(log_path) -> int:
    return len(re.findall(r'"(?:GET|POST) /', log_path.read_text(errors="replace")))


def test_two_gateways_three_workers_survive_a_killed_worker_and_gateway(scaled):
    d = scaled
    bridge = d.bridge
    client = register(d)
    grants: dict[int, tuple[str, str]] = {}
    for index in range(3):
        grants[index] = consent(d, client, index)
    # nginx spread the first half of the journey over both gateways
    served = [requests_served(gateway.log_path) for gateway in d.gateways]
    assert all(count > 0 for count in served), served

    # every worker is inside a fetch (the sandbox holds its answer): kill one of them, and the second gateway
    deadline = time.monotonic() + 60
    while held(d) < 3:
        assert time.monotonic() < deadline, f"fetches not in flight: {[(j.kind, j.state) for j in bridge.jobs()]}"
        time.sleep(0.1)
    victim = bridge.workers.pop(0)
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(30)
    os.kill(d.gateways[1].pid, signal.SIGKILL)
    while port_open(d.gateways[1].port):  # gone: what follows never reaches it
        time.sleep(0.05)

    for index in range(3, CUSTOMERS):  # through nginx, which now finds one gateway
        grants[index] = consent(d, client, index)

    # the reconciler (beat's task, sent here more often than beat would) takes over the killed worker's fetch once
    # its lease has run out; every grant becomes active
    deadline = time.monotonic() + 180
    pending = dict(grants)
    while pending:
        bridge.reconcile(stale_after=LEASE_SECONDS)
        for index, (grant_id, _token) in list(pending.items()):
            if grant_status(d, client, grant_id) == "active":
                del pending[index]
        assert time.monotonic() < deadline, (f"grants not active: {pending}\n"
                                             f"{[(j.kind, j.state, j.attempts, j.last_error) for j in bridge.jobs()]}"
                                             f"\n{bridge.logs()}")
        time.sleep(1)
    jobs = bridge.wait_jobs_settled(timeout=120)
    assert all(job.state == "done" for job in jobs), [(j.kind, j.state, j.last_error) for j in jobs]
    fetches = [job for job in jobs if job.kind == "fetch_subscription"]
    assert len(fetches) == CUSTOMERS
    assert any(job.attempts >= 2 for job in fetches), [(j.attempts, j.last_error) for j in fetches]  # taken over

    # exact data for every customer: each generated reading once, the exact decimal sum
    for index, (_grant_id, access_token) in grants.items():
        segments = usage_segments(d, access_token)
        assert len({s["cds_usagesegment_id"] for s in segments}) == len(segments)
        assert segment_totals(segments) == source_totals(index + 1, DAYS, generate_start(DAYS)), index
