"""The whole bridge on 127.0.0.1 for end-to-end tests and benchmarks: a real redis-server, the sandbox custodian
and the gateway under uvicorn, and real ``greenbridge worker`` processes (Celery prefork) sharing one store.

The CDS side of a journey (registration, PAR, both consent hops, the code exchange) is plain HTTP from this
process, as a CDS client and a customer's browser would do it; nothing of the bridge runs in the test process.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import httpx2
from gateway_helpers import COVERAGE_TOML, continue_to_client, pkce_pair
from servers import (
    HOST,
    ServerStartError,
    ServerURL,
    _log_tail,
    _stop,
    _wait_http,
    free_port,
    redis_server,
    uvicorn_server,
)

from sandbox.config import DEFAULT_SCOPES

REPO = Path(__file__).resolve().parent.parent
CUSTODIAN_ID = "sandbox"
SANDBOX_CLIENT = "gateway"
#: The sandbox's bulk scope (BR=1): subscriptions authorized with it are delivered in bulk set 1.
BULK_SCOPE = DEFAULT_SCOPES[-1]
# What the sandbox can give: no meter or contract numbers (FB_57/FB_60 are not among its scopes), 13 months.
USAGE_DETAILS = [{"type": "cds_usage_1", "segment_start": "P1Y", "include_meter_numbers": False,
                  "include_contract_numbers": False, "include_usage_segment_value_types": ["electric_usage_forward"]}]


@dataclass
class Bridge:
    gateway: str
    sandbox: str
    redis_url: str
    database_url: str
    secret_key: str
    directory: Path
    env: dict[str, str]
    sandbox_secret: str = ""
    workers: list[subprocess.Popen] = field(default_factory=list)
    worker_logs: list[Path] = field(default_factory=list)
    gateway_process: GatewayProcess | None = None

    @property
    def gateway_log(self) -> Path:
        return self.directory / "gateway.log"

    def box(self):
        """The gateway's objects built from the same configuration (its SecretBox decrypts the stored tokens);
        dispose of ``.engine`` after use."""
        from bridge.config import GatewayConfig
        from gateway.context import build_gateway

        config = GatewayConfig(issuer=self.gateway, database_url=self.database_url, secret_key=self.secret_key)
        return build_gateway(config, migrate=False)

    def sessions(self):
        from cds.store.engine import make_engine, make_sessionmaker

        return make_sessionmaker(make_engine(self.database_url))

    def start_worker(self, concurrency: int = 2, queues: str | None = None) -> subprocess.Popen:
        log = self.directory / f"worker-{len(self.worker_logs)}.log"  # a worker started again gets a log of its own
        cmd = [sys.executable, "-m", "greenbridge", "worker", "--concurrency", str(concurrency),
               "--hostname", f"w{len(self.workers)}-{os.getpid()}@localhost", "--log-level", "info"]
        if queues:
            cmd += ["--queues", queues]
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **self.env}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.workers.append(proc)
        self.worker_logs.append(log)
        return proc

    def stop_workers(self) -> None:
        for proc in self.workers:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.workers:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.workers.clear()

    def logs(self) -> str:
        parts = [f"--- {log.name}\n{_log_tail(log, 60)}" for log in self.worker_logs]
        return "\n".join([*parts, f"--- gateway\n{_log_tail(self.directory / 'gateway.log', 40)}"])

    def reconcile(self, stale_after: float = 0.0) -> None:
        """Send ``gb.reconcile`` now (beat sends it every minute) with a short staleness, as after a lost message."""
        from celery import Celery

        app = Celery("bridge-test", broker=self.redis_url, set_as_current=False)
        app.send_task("gb.reconcile", kwargs={"stale_after": stale_after}, queue="notify")

    def sandbox_client_token(self) -> str:
        """The third party's client_access_token at the sandbox (Batch/Bulk, Authorization)."""
        answer = httpx2.post(f"{self.sandbox}/oauth/token", data={"grant_type": "client_credentials"},
                             auth=(SANDBOX_CLIENT, self.sandbox_secret), timeout=30)
        assert answer.status_code == 200, answer.text
        return answer.json()["access_token"]

    def jobs(self) -> list[Any]:
        from sqlalchemy import select

        from cds.store.models import Job

        sessions = self.sessions()
        with sessions() as session:
            return list(session.scalars(select(Job).order_by(Job.created)))

    def wait_jobs_settled(self, timeout: float = 90.0, kinds: set[str] | None = None,
                          expect: Callable[[list[Any]], bool] | None = None) -> list[Any]:
        """Until every job (of ``kinds``) is done or dead and ``expect(jobs)`` holds; fails with the logs."""
        deadline = time.monotonic() + timeout
        while True:
            jobs = [j for j in self.jobs() if kinds is None or j.kind in kinds]
            settled = all(j.state in ("done", "dead") for j in jobs)
            if settled and (expect is None or expect(jobs)):
                return jobs
            for proc in self.workers:
                assert proc.poll() is None, f"a worker exited with {proc.returncode}\n{self.logs()}"
            if time.monotonic() > deadline:
                states = [(j.kind, j.state, j.attempts, j.last_error) for j in jobs]
                raise AssertionError(f"jobs not settled after {timeout} s: {states}\n{self.logs()}")
            time.sleep(0.2)


@dataclass
class GatewayProcess:
    """The gateway under uvicorn on a port chosen beforehand (the sandbox must know it before it starts); it can be
    killed (SIGKILL: no shutdown at all) and started again on the same port, store and configuration."""

    port: int
    env: dict[str, str]
    log_path: Path
    log_level: str = "info"
    proc: subprocess.Popen | None = None

    def start(self) -> str:
        cmd = [sys.executable, "-m", "uvicorn", "gateway.app:create_app", "--factory", "--host", HOST, "--port",
               str(self.port), "--app-dir", str(REPO), "--log-level", self.log_level]
        child_env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1",
                     "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                         env=child_env)
        error = _wait_http(self.proc, self.port, "/healthz", 30)
        if error is not None:
            self.stop()
            raise ServerStartError(f"gateway did not start: {error}\n{_log_tail(self.log_path)}")
        return f"http://{HOST}:{self.port}"

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            _stop(self.proc)


@contextlib.contextmanager
def gateway_on(port: int, env: dict[str, str], log_path: Path, log_level: str = "info") -> Iterator[ServerURL]:
    """The gateway under uvicorn on a port chosen beforehand (the sandbox must know it before it starts); the URL
    carries its ``pid`` (a test may kill it), ``port`` and ``log_path``."""
    with gateway_process(port, env, log_path, log_level) as process:
        url = ServerURL(f"http://{HOST}:{process.port}")
        url.pid, url.port, url.log_path = process.proc.pid, process.port, log_path
        yield url


@contextlib.contextmanager
def gateway_process(port: int, env: dict[str, str], log_path: Path, log_level: str = "info"
                    ) -> Iterator[GatewayProcess]:
    """A GatewayProcess started; stopped on exit whatever state a test left it in."""
    process = GatewayProcess(port, env, log_path, log_level)
    try:
        process.start()
        yield process
    finally:
        process.stop()


@contextlib.contextmanager
def serve_on(port: int, env: dict[str, str], log_path: Path, workers: int, log_level: str = "info") -> Iterator[str]:
    """The gateway as production runs it: ``greenbridge serve --workers N`` (uvicorn worker processes, the
    Prometheus directory managed by serve), on a port chosen beforehand; with a Redis URL it runs the gateway only."""
    cmd = [sys.executable, "-m", "greenbridge", "serve", "--host", HOST, "--port", str(port), "--workers",
           str(workers), "--log-level", log_level]
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(cmd, cwd=REPO, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **env, "PYTHONUNBUFFERED": "1"}, start_new_session=True)
    try:
        error = _wait_http(proc, port, "/healthz", 60)
        if error is not None:
            raise ServerStartError(f"greenbridge serve did not start: {error}\n{_log_tail(log_path)}")
        yield f"http://{HOST}:{port}"
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


@contextlib.contextmanager
def start_bridge(directory: Path, redis_url: str | None = None, *, scopes: tuple[str, ...] = DEFAULT_SCOPES,
                 sandbox_env: dict[str, str] | None = None, gateway_env: dict[str, str] | None = None,
                 custodian_toml: str = "", customers: int = 3, days: int = 5, workers: int = 1,
                 database_url: str | None = None, log_level: str = "info", gateway_workers: int = 0,
                 worker_queues: str | None = None, front: Any = None) -> Iterator[Bridge]:
    """Sandbox, gateway and ``workers`` worker processes (0: nothing runs the jobs); everything stopped on exit.
    ``gateway_workers`` > 0 runs the gateway through ``greenbridge serve --workers N`` instead of uvicorn directly;
    ``worker_queues`` limits the queues the workers consume.

    With ``front`` (a tests/fault_servers.FaultProxy) everyone reaches the sandbox through it: the sandbox announces
    the proxy's URL as its own, and the gateway's custodian configuration names it.

    Without ``redis_url`` the bridge gets a redis-server of its own: two bridges on one Redis would share queues,
    and one bridge's worker would take (and drop, finding no such job in its store) the other's messages.
    """
    directory.mkdir(parents=True, exist_ok=True)
    if redis_url is None:
        with redis_server(directory) as own, start_bridge(
                directory, own, scopes=scopes, sandbox_env=sandbox_env, gateway_env=gateway_env,
                custodian_toml=custodian_toml, customers=customers, days=days, workers=workers,
                database_url=database_url, log_level=log_level, gateway_workers=gateway_workers,
                worker_queues=worker_queues, front=front) as bridge:
            yield bridge
        return
    port = free_port()
    gateway = f"http://{HOST}:{port}"
    secret = "s3cret-" + secrets.token_hex(4)
    env_sandbox = {
        "GREENBRIDGE_SANDBOX_BASE_URL": "http://127.0.0.1:{port}",
        "GREENBRIDGE_SANDBOX_CLIENT_ID": SANDBOX_CLIENT, "GREENBRIDGE_SANDBOX_CLIENT_SECRET": secret,
        "GREENBRIDGE_SANDBOX_REDIRECT_URI": f"{gateway}/custodians/{CUSTODIAN_ID}/callback",
        "GREENBRIDGE_SANDBOX_NOTIFY_URI": f"{gateway}/espi/1_1/Notification",
        "GREENBRIDGE_SANDBOX_SCOPES": "|".join(DEFAULT_SCOPES),
        "GREENBRIDGE_SANDBOX_GENERATE_CUSTOMERS": str(customers), "GREENBRIDGE_SANDBOX_GENERATE_DAYS": str(days),
        "GREENBRIDGE_SANDBOX_GENERATE_START": generate_start(days).isoformat(),
        "GREENBRIDGE_SANDBOX_NOTIFY_ATTEMPTS": "3", "GREENBRIDGE_SANDBOX_NOTIFY_BACKOFF": "0.5",
        **(sandbox_env or {}),
    }
    if front is not None:
        env_sandbox["GREENBRIDGE_SANDBOX_BASE_URL"] = front.url
    with uvicorn_server("sandbox.app:create_sandbox_app", env=env_sandbox, app_dir=REPO,
                        health_path="/healthz", log_path=directory / "sandbox.log") as sandbox:
        if front is not None:
            front.upstream_port = sandbox.port
            sandbox = front.url
        listed = ", ".join(json.dumps(s) for s in scopes)
        config = directory / "greenbridge.toml"
        config.write_text(COVERAGE_TOML + f"""
[[custodians]]
id = "{CUSTODIAN_ID}"
name = "Sandbox Power & Light"
resource_url = "{sandbox}/espi/1_1/resource"
authorize_url = "{sandbox}/oauth/authorize"
token_url = "{sandbox}/oauth/token"
client_id = "{SANDBOX_CLIENT}"
client_secret = "{secret}"
scopes = [{listed}]
{custodian_toml}
""")
        database_url = database_url or f"sqlite+pysqlite:///{directory}/greenbridge.db"
        secret_key = secrets.token_urlsafe(32)
        env = {"GREENBRIDGE_CONFIG": str(config), "GREENBRIDGE_ISSUER": gateway,
               "GREENBRIDGE_DATA_DIR": str(directory / "var"), "GREENBRIDGE_DATABASE_URL": database_url,
               "GREENBRIDGE_SECRET_KEY": secret_key, "GREENBRIDGE_REDIS_URL": redis_url, **(gateway_env or {})}
        bridge = Bridge(gateway, str(sandbox), redis_url, database_url, secret_key, directory, env, secret)
        if gateway_workers:
            server = serve_on(port, env, directory / "gateway.log", gateway_workers, log_level)
        else:
            server = gateway_process(port, env, directory / "gateway.log", log_level=log_level)
        with server as process:
            if isinstance(process, GatewayProcess):
                bridge.gateway_process = process
            try:
                for _ in range(workers):
                    bridge.start_worker(queues=worker_queues)
                yield bridge
            finally:
                bridge.stop_workers()


def generate_start(days: int) -> date:
    """Recent data, inside any consent window measured back from today."""
    return date.today() - timedelta(days=days + 2)


# --------------------------------------------------------------------------------------------- the CDS client


@dataclass
class CdsClient:
    client_id: str
    secret: str
    redirect_uri: str
    admin_token: str


def register(base: str, client_name: str = "Bridge Test App", **metadata: str) -> CdsClient:
    """Dynamic registration; returns the code-flow client for cds_usage_1 and an admin token."""
    http = httpx2.Client(base_url=base, timeout=30)
    registered = http.post("/oauth/register", json={"scope": "cds_client_admin cds_usage_1",
                                                    "client_name": client_name, **metadata}).json()
    admin = (registered["client_id"], registered["client_secret"])
    access = http.post("/oauth/token", data={"grant_type": "client_credentials", "scope": "cds_client_admin"},
                       auth=admin).json()["access_token"]
    headers = {"Authorization": f"Bearer {access}"}
    clients = http.get("/cds-api/v1/clients", headers=headers).json()["clients"]
    usage = next(c for c in clients if "cds_usage_1" in c["scope"].split())
    secret = http.get("/cds-api/v1/credentials", headers=headers,
                      params={"client_ids": usage["client_id"]}).json()["credentials"][0]["client_secret"]
    return CdsClient(usage["client_id"], secret, usage["cds_default_redirect_uri"], access)


@dataclass
class Consent:
    grant_id: str
    access_token: str
    customer: str  # the sandbox customer id
    revoke_url: str | None  # the receipt's revoke-without-login form (WG3-01 §9.4)


def push(base: str, client: CdsClient, details=USAGE_DETAILS, state: str = "cds-state") -> tuple[str, str]:
    """PAR; returns (the authorize URL for the browser, the PKCE verifier)."""
    verifier, challenge = pkce_pair()
    pushed = httpx2.post(f"{base}/oauth/par", auth=(client.client_id, client.secret), timeout=30, data={
        "response_type": "code", "client_id": client.client_id, "redirect_uri": client.redirect_uri,
        "scope": "cds_usage_1", "state": state, "code_challenge": challenge, "code_challenge_method": "S256",
        "authorization_details": json.dumps(details)})
    assert pushed.status_code == 201, pushed.text
    return (f"{base}/oauth/authorize?client_id={client.client_id}&request_uri={pushed.json()['request_uri']}",
            verifier)


def approve_at_gateway(browser: httpx2.Client, authorize_url: str) -> httpx2.Response:
    """greenbridge's consent page: approve with the sandbox as the utility (→ 303 to the custodian)."""
    page = browser.get(authorize_url)
    assert page.status_code == 200, page.text
    assert f'name="custodian" value="{CUSTODIAN_ID}"' in page.text and 'name="password"' not in page.text
    handle = re.search(r'name="consent" value="([^"]+)"', page.text).group(1)
    action = re.search(r'<form method="post" action="([^"]+)"', page.text).group(1)
    return browser.post(action, data={"consent": handle, "decision": "approve", "custodian": CUSTODIAN_ID})


def at_sandbox(browser: httpx2.Client, sandbox: str, location: str, decision: str = "approve",
               customer_index: int = 0, usage_points: list[str] | None = None) -> str:
    """The customer at the custodian: the sign-in page, then one POST signing in and deciding (sharing
    ``usage_points``, the sandbox's UsagePoint ids, or all of them); the Location."""
    assert location.startswith(f"{sandbox}/oauth/authorize?")
    page = browser.get(location)
    assert page.status_code == 200 and 'id="customer_id"' in page.text
    customer = browser.get(f"{sandbox}/sandbox.json").json()["customers"][customer_index]["id"]
    params = dict(parse_qsl(urlsplit(location).query))
    chosen = {"usage_point": list(usage_points)} if usage_points else {}
    answer = browser.post(location.split("?")[0], data={**params, "customer_id": customer, "password": "sandbox",
                                                          "decision": decision, **chosen})
    assert answer.status_code in (302, 303), answer.text
    return answer.headers["location"]


def consent(bridge: Bridge, client: CdsClient, customer_index: int = 0, details=USAGE_DETAILS,
            usage_points: list[str] | None = None) -> Consent:
    """One customer through both consent hops and the code exchange (sharing ``usage_points`` at the custodian, or
    all); returns the (pending) Grant and tokens."""
    authorize_url, verifier = push(bridge.gateway, client, details)
    browser = httpx2.Client(timeout=30, follow_redirects=False)
    answer = approve_at_gateway(browser, authorize_url)
    assert answer.status_code == 303, answer.text
    callback = at_sandbox(browser, bridge.sandbox, answer.headers["location"], customer_index=customer_index,
                          usage_points=usage_points)
    customer = browser.get(f"{bridge.sandbox}/sandbox.json").json()["customers"][customer_index]["id"]
    answer = continue_to_client(browser, browser.get(callback))  # after the receipt page (issue 14)
    landed = answer.headers["location"]
    query = parse_qs(urlsplit(landed).query)
    receipt = browser.get(landed)  # the default redirect URI shows the receipt
    found = re.search(r'<form method="post" action="([^"]+/revoke)"', receipt.text)
    revoke_url = found.group(1) if found else None
    if revoke_url and revoke_url.startswith("/"):
        revoke_url = bridge.gateway + revoke_url
    tokens = httpx2.post(f"{bridge.gateway}/oauth/token", auth=(client.client_id, client.secret), timeout=30, data={
        "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": client.redirect_uri,
        "code_verifier": verifier})
    assert tokens.status_code == 200, tokens.text
    (grant_id,) = tokens.json()["cds_grant_ids"]
    return Consent(grant_id, tokens.json()["access_token"], customer, revoke_url)


def grant(bridge: Bridge, client: CdsClient, grant_id: str) -> dict[str, Any]:
    answer = httpx2.get(f"{bridge.gateway}/cds-api/v1/grants/{grant_id}", timeout=30,
                        headers={"Authorization": f"Bearer {client.admin_token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def wait_grant(bridge: Bridge, client: CdsClient, grant_id: str, status: str, timeout: float = 60.0
               ) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        current = grant(bridge, client, grant_id)
        if current["status"] == status:
            return current
        if time.monotonic() > deadline:
            raise AssertionError(f"grant {grant_id} is {current['status']}, not {status}, after {timeout} s:\n"
                                 f"{[(j.kind, j.state, j.last_error) for j in bridge.jobs()]}\n{bridge.logs()}")
        time.sleep(0.25)


def usage_segments(bridge: Bridge, access_token: str) -> list[dict[str, Any]]:
    """Every usage segment the token may read (all pages)."""
    url = f"{bridge.gateway}/cds-api/v1/usage-segments"
    segments: list[dict[str, Any]] = []
    while url:
        answer = httpx2.get(url, timeout=30, headers={"Authorization": f"Bearer {access_token}"})
        assert answer.status_code == 200, answer.text
        body = json.loads(answer.text, parse_float=Decimal)
        segments += body["usage_segments"]
        url = body["next"]
    return segments


def listing(bridge: Bridge, access_token: str, name: str) -> list[dict[str, Any]]:
    """Every object of a data listing (``accounts``, ``service_points``…) the token may read (all pages)."""
    from cds.urls import Urls

    url = bridge.gateway + Urls("").data_api(name)
    found: list[dict[str, Any]] = []
    while url:
        answer = httpx2.get(url, timeout=30, headers={"Authorization": f"Bearer {access_token}"})
        assert answer.status_code == 200, answer.text
        body = json.loads(answer.text, parse_float=Decimal)
        found += body[name]
        url = body["next"]
    return found


def segment_totals(segments: list[dict[str, Any]], value_type: str = "electric_usage", direction: str = "forward"
                   ) -> tuple[int, Decimal]:
    """(number of values, their exact sum) of one value type and direction across segments."""
    count, total = 0, Decimal(0)
    for segment in segments:
        columns = [i for i, f in enumerate(segment["formats"])
                   if f["type"] == value_type and f.get("direction") == direction]
        for row in segment["values"]:
            for index in columns:
                if row[index] is None:  # a slot with no reading (the source skipped it)
                    continue
                for number in row[index].values():
                    count += 1
                    total += Decimal(number)
    return count, total


def source_totals(customer_number: int, days: int, start: date, series: str = "electric_forward"
                  ) -> tuple[int, Decimal]:
    """(readings, exact kWh sum) of one series in what the sandbox generated for customer ``customer_number``:
    the generator's own totals of raw ESPI integers (Wh, power of ten 0), independent of any translation."""
    from espi.generate import write_feed
    from sandbox.data import generated_spec

    totals = write_feed(io.StringIO(), generated_spec(customer_number, days, start, "https://x.test/r"))
    count = sum(v[0] for (_, name), v in totals.series.items() if name == series)
    raw = sum(v[1] for (_, name), v in totals.series.items() if name == series)
    return count, Decimal(raw) / 1000
