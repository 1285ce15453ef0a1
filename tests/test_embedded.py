"""The README's first command (``bash deploy/run.sh``) brings up the whole bridge on one machine, and stops it whole.

``greenbridge serve`` with no Redis URL runs redis-server on a private socket, the sandbox custodian, a worker and
beat around the gateway (greenbridge/embedded.py). These tests run it as a real command in its own process group,
drive the consent-to-data journey over HTTP (the helpers of bridge_stack.py: registration, PAR, the
gateway's consent page, the custodian's sign-in, the callback), then check that a stop leaves no process and no
socket behind. Every process is killed in ``finally`` whatever happens (``killpg`` of the command's group).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest
from bridge_stack import approve_at_gateway, at_sandbox, push, register
from conftest import REPO, require_servers
from gateway_helpers import continue_to_client
from servers import free_port

pytestmark = pytest.mark.slow

STARTUP_TIMEOUT = 180.0  # deploy/setup.sh checks the machine first; a fresh venv is not built here
CHILDREN = ("redis", "sandbox", "worker", "beat")


def _need_redis() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if require_servers():
            pytest.fail(f"{message} (GREENBRIDGE_REQUIRE_SERVERS is set)", pytrace=False)
        pytest.skip(message)


def _clean_env(data_dir: Path, **extra: str) -> dict[str, str]:
    """This environment without any GREENBRIDGE_* setting (no Redis URL, no config file), plus a data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GREENBRIDGE_")}
    env.update(GREENBRIDGE_DATA_DIR=str(data_dir), PYTHONUNBUFFERED="1", **extra)
    return env


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            stat = handle.read().decode(errors="replace")
        return stat[stat.rfind(")") + 2:].split()[0] != "Z"
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True


def _descendants(pid: int) -> set[int]:
    from greenbridge.embedded import descendants

    return {child for child, _started in descendants(pid)}


@dataclass
class Running:
    proc: subprocess.Popen
    output: Path
    data_dir: Path
    state: dict

    @property
    def gateway(self) -> str:
        return self.state["gateway"]

    @property
    def sandbox(self) -> str:
        return self.state["sandbox"]

    def text(self) -> str:
        return self.output.read_text(errors="replace")

    def log(self, name: str, lines: int = 40) -> str:
        path = Path(self.state["logs"][name])
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else "(no log)"

    def wait_exit(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"serve still running {timeout:.0f} s later:\n{self.text()[-4000:]}") from None

    def assert_all_gone(self, extra_pids: set[int] = frozenset(), timeout: float = 15.0) -> None:
        pids = set(self.state["processes"].values()) | set(extra_pids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
        left = {name: pid for name, pid in self.state["processes"].items() if _alive(pid)}
        assert not left and not any(_alive(pid) for pid in extra_pids), (left, extra_pids)
        assert not Path(self.state["redis_socket"]).exists()
        assert not (self.data_dir / "run" / "bridge.json").exists()
        assert not (self.data_dir / "run" / "bridge.toml").exists()  # it held the sandbox client secret


@contextlib.contextmanager
def bridge(tmp_path: Path, command: list[str], env: dict[str, str] | None = None) -> Iterator[Running]:
    """Run ``command`` (cwd: the repository) in a new process group; yields once ``bridge.json`` names a gateway
    that answers /healthz. On exit every process of the group is killed, and any process bridge.json named."""
    data_dir = tmp_path / "var"
    output = tmp_path / "serve.out"
    with open(output, "ab") as out:
        proc = subprocess.Popen(command, cwd=REPO, env=env or _clean_env(data_dir), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    state_path = data_dir / "run" / "bridge.json"
    state: dict = {}
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"{command} exited with {proc.returncode}:\n{output.read_text()[-4000:]}")
            if state_path.exists() and json.loads(state_path.read_text())["pid"] == proc.pid:  # not a stale one
                state = json.loads(state_path.read_text())
                with contextlib.suppress(httpx2.HTTPError):
                    if httpx2.get(f"{state['gateway']}/healthz", timeout=5).status_code == 200:
                        break
            if time.monotonic() > deadline:
                raise AssertionError(f"no bridge within {STARTUP_TIMEOUT:.0f} s:\n{output.read_text()[-4000:]}")
            time.sleep(0.2)
        yield Running(proc, output, data_dir, state)
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(40)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        for pid in state.get("processes", {}).values():
            if _alive(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)


def _serve(port: int) -> list[str]:
    return [sys.executable, "-m", "greenbridge", "serve", "--port", str(port)]


def test_readme_first_command_runs_the_whole_bridge_and_ctrl_c_stops_it(tmp_path):
    _need_redis()
    port = free_port()
    with bridge(tmp_path, ["bash", "deploy/run.sh", "--port", str(port)]) as running:
        gateway, sandbox, state = running.gateway, running.sandbox, running.state
        assert gateway == f"http://127.0.0.1:{port}" and running.state["pid"] == running.proc.pid
        assert set(state["processes"]) == set(CHILDREN)
        assert state["redis_url"] == f"redis+socket://{state['redis_socket']}"
        assert Path(state["redis_socket"]).is_socket()
        assert oct(Path(state["config"]).stat().st_mode & 0o777) == "0o600"
        text = running.text()
        for shown in (gateway, sandbox, state["redis_url"], str(state["processes"]["worker"]), "customer-1"):
            assert shown in text

        # the sandbox is up and is the gateway's custodian "sandbox": its scopes, its coverage entry
        home = httpx2.get(f"{sandbox}/sandbox.json", timeout=30).json()
        assert [c["id"] for c in home["customers"]] == state["sandbox_customers"]
        assert home["third_parties"][0]["redirect_uris"] == [f"{gateway}/custodians/sandbox/callback"]
        metadata = httpx2.get(f"{gateway}/.well-known/oauth-authorization-server", timeout=30).json()
        assert "cds_usage_sandbox" in metadata["scopes_supported"]
        coverage = httpx2.get(f"{gateway}/cds/coverage", timeout=30).json()["coverage_entries"]
        assert [entry["id"] for entry in coverage] == ["sandbox"]

        # the consent journey through both hops
        client = register(gateway)
        authorize_url, verifier = push(gateway, client)
        browser = httpx2.Client(timeout=30, follow_redirects=False)
        answer = approve_at_gateway(browser, authorize_url)
        assert answer.status_code == 303, answer.text
        callback = at_sandbox(browser, sandbox, answer.headers["location"])
        assert callback.startswith(f"{gateway}/custodians/sandbox/callback?")
        answer = continue_to_client(browser, browser.get(callback))  # after the receipt page (issue 14)
        query = parse_qs(urlsplit(answer.headers["location"]).query)
        tokens = httpx2.post(f"{gateway}/oauth/token", auth=(client.client_id, client.secret), timeout=30, data={
            "grant_type": "authorization_code", "code": query["code"][0], "redirect_uri": client.redirect_uri,
            "code_verifier": verifier})
        assert tokens.status_code == 200, tokens.text
        (grant_id,) = tokens.json()["cds_grant_ids"]

        # the worker fetches the data upstream: the grant becomes active and the data API serves it
        admin = {"Authorization": f"Bearer {client.admin_token}"}
        deadline = time.monotonic() + 60
        while True:
            grant = httpx2.get(f"{gateway}/cds-api/v1/grants/{grant_id}", headers=admin, timeout=30).json()
            if grant["status"] != "pending" or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert grant["status"] == "active", (grant, running.log("worker"))
        segments = httpx2.get(f"{gateway}/cds-api/v1/usage-segments", timeout=30,
                              headers={"Authorization": f"Bearer {tokens.json()['access_token']}"})
        assert segments.status_code == 200, segments.text
        assert len(segments.json()["usage_segments"]) >= 1

        # the ops dashboard: a password made for this data directory (0600), shown once in the summary; the
        # worker's metrics reach the gateway's /metrics through the directory serve manages
        password_file = running.data_dir / "operator.password"
        assert oct(password_file.stat().st_mode & 0o777) == "0o600"
        password = password_file.read_text().strip()
        assert len(password) >= 20 and running.text().count(password) == 1
        assert httpx2.get(f"{gateway}/ops/status", timeout=30).status_code == 401
        status = httpx2.get(f"{gateway}/ops/status", auth=("operator", password), timeout=30).json()
        assert status["broker"]["reachable"] and len(status["workers"]) == 1
        assert status["grants"].get("active", 0) >= 1
        exposition = httpx2.get(f"{gateway}/metrics", timeout=30).text
        stored = re.search(r'^greenbridge_readings_stored_total\{custodian="sandbox"\} (\S+)$', exposition, re.M)
        assert stored and float(stored.group(1)) > 0, exposition[-2000:]

        # Ctrl-C to serve alone (not its group): serve itself stops the gateway and every child
        pool = _descendants(state["processes"]["worker"])
        assert pool, "the worker's pool processes"
        running.proc.send_signal(signal.SIGINT)
        assert running.wait_exit(90) == 0, running.text()[-4000:]
        running.assert_all_gone(pool)
        assert "stopped cleanly" in running.text()


def test_ctrl_c_in_a_terminal_reaches_every_process_and_is_no_failure(tmp_path):
    """A terminal's Ctrl-C signals the whole foreground group: children exit as serve stops; that is no failure."""
    _need_redis()
    with bridge(tmp_path, _serve(free_port())) as running:
        # a second bridge on the same data directory is refused, and leaves the running one's files alone
        second = subprocess.run(_serve(free_port()), cwd=REPO, env=_clean_env(running.data_dir), timeout=60,
                                capture_output=True, text=True, start_new_session=True)
        assert second.returncode == 2 and f"(pid {running.proc.pid})" in second.stderr, second.stderr
        assert (running.data_dir / "run" / "bridge.json").exists() and Path(running.state["config"]).exists()

        os.killpg(running.proc.pid, signal.SIGINT)
        assert running.wait_exit(90) == 0, running.text()[-4000:]
        running.assert_all_gone()
        assert "unexpectedly" not in running.text()


def test_a_dead_child_stops_everything_with_a_failure(tmp_path):
    _need_redis()
    with bridge(tmp_path, _serve(free_port())) as running:
        worker = running.state["processes"]["worker"]
        pool = _descendants(worker)
        os.kill(worker, signal.SIGKILL)
        code = running.wait_exit(90)
        assert code not in (0, None), running.text()[-4000:]
        running.assert_all_gone(pool)
        assert f"worker (pid {worker}) exited unexpectedly" in running.text()
        with pytest.raises(httpx2.HTTPError):
            httpx2.get(f"{running.gateway}/healthz", timeout=5)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_children_do_not_outlive_a_killed_serve(tmp_path):
    _need_redis()
    with bridge(tmp_path, _serve(free_port())) as running:
        pool = _descendants(running.state["processes"]["worker"])
        running.proc.kill()  # SIGKILL: serve cleans nothing up itself
        running.wait_exit(10)
        pids = set(running.state["processes"].values()) | pool
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
            time.sleep(0.1)
        assert not any(_alive(pid) for pid in pids), {pid for pid in pids if _alive(pid)}

    # the next bridge on the same data directory starts despite the socket and files left behind
    with bridge(tmp_path, _serve(free_port())) as running:
        assert redis_alive(running.state["redis_socket"])


def redis_alive(path: str) -> bool:
    from greenbridge.embedded import redis_ping

    return redis_ping(Path(path))


def test_without_redis_server_on_path_serve_says_how_to_install_it(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    env = _clean_env(tmp_path / "var", PATH=str(empty))
    started = time.monotonic()
    result = subprocess.run(_serve(free_port()), cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
                            start_new_session=True)
    assert result.returncode == 2, result.stderr
    assert "redis-server" in result.stderr and "apt-get install redis-server" in result.stderr
    assert "brew install redis" in result.stderr and "GREENBRIDGE_REDIS_URL" in result.stderr
    assert time.monotonic() - started < 30
    assert not (tmp_path / "var" / "run" / "redis.sock").exists()


@contextlib.contextmanager
def gateway_alone(tmp_path: Path, port: int) -> Iterator[subprocess.Popen]:
    env = _clean_env(tmp_path / "var", PATH=str(tmp_path))  # no redis-server needed
    proc = subprocess.Popen([*_serve(port), "--no-embedded"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "serve --no-embedded exited"
            with contextlib.suppress(httpx2.HTTPError):
                if httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                    break
            assert time.monotonic() < deadline, "serve --no-embedded did not answer"
            time.sleep(0.2)
        yield proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_no_embedded_serves_the_gateway_alone(tmp_path):
    port = free_port()
    with gateway_alone(tmp_path, port) as proc:
        assert httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        assert not (tmp_path / "var" / "run" / "bridge.json").exists()
        assert not _descendants(proc.pid)


# ------------------------------------------------------------------------------- restarting on the same port


def _time_wait_ports() -> set[int]:
    """Local ports of this machine's TCP sockets in TIME_WAIT (Linux /proc/net/tcp{,6}: state 06)."""
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table) as handle:
            for line in handle.read().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "06":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _listener(port: int = 0) -> socket.socket:
    """A socket listening on 127.0.0.1 as a server does (SO_REUSEADDR, like uvicorn)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def _close_connections_server_first(port: int, count: int = 3) -> None:
    """Requests answered with ``Connection: close``: the server closes first, so its side ends in TIME_WAIT."""
    for _ in range(count):
        answer = httpx2.get(f"http://127.0.0.1:{port}/healthz", headers={"Connection": "close"}, timeout=10)
        assert answer.status_code == 200
    deadline = time.monotonic() + 10
    while port not in _time_wait_ports():
        assert time.monotonic() < deadline, "no TIME_WAIT socket on the server's port: the test would prove nothing"
        time.sleep(0.05)


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/net/tcp")


@linux_only
def test_the_port_probe_passes_time_wait_sockets_and_refuses_a_listener():
    from greenbridge.embedded import port_free, port_taken

    server = _listener()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()  # the server closes first: its side goes to TIME_WAIT
    client.recv(1)
    client.close()
    server.close()
    assert port in _time_wait_ports()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # a bind without SO_REUSEADDR (the old probe) is refused for a minute
    assert port_free(port) and port_taken(port) is None

    with _listener(port):
        assert not port_free(port)
        assert port_taken(port) == f"port {port} on 127.0.0.1 is already in use: choose another with --port"
    assert port_taken(port, "192.0.2.1").startswith(f"cannot listen on 192.0.2.1 port {port}: ")  # not ours


@linux_only
def test_serve_restarts_at_once_on_the_port_it_just_used(tmp_path):
    """Issue 12: the previous run's connections in TIME_WAIT no longer keep ``serve`` off its port for a minute."""
    _need_redis()
    port = free_port()
    with bridge(tmp_path, _serve(port)) as running:
        _close_connections_server_first(port)
        running.proc.send_signal(signal.SIGINT)
        assert running.wait_exit(90) == 0, running.text()[-4000:]
    assert port in _time_wait_ports()  # still there: the restart below meets them
    with bridge(tmp_path, _serve(port)) as running:
        assert running.gateway == f"http://127.0.0.1:{port}"
        assert httpx2.get(f"{running.gateway}/healthz", timeout=10).status_code == 200


@linux_only
def test_serve_no_embedded_restarts_at_once_on_the_port_it_just_used(tmp_path):
    port = free_port()
    with gateway_alone(tmp_path, port):
        _close_connections_server_first(port)
    assert port in _time_wait_ports()
    with gateway_alone(tmp_path, port):
        assert httpx2.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200


@pytest.mark.parametrize("mode", ["embedded", "no-embedded"])
def test_serve_refuses_a_port_something_listens_on(tmp_path, mode):
    if mode == "embedded":
        _need_redis()
    with _listener() as taken:
        port = taken.getsockname()[1]
        command = _serve(port) + (["--no-embedded"] if mode == "no-embedded" else [])
        result = subprocess.run(command, cwd=REPO, env=_clean_env(tmp_path / "var"), capture_output=True, text=True,
                                timeout=60, start_new_session=True)
    assert result.returncode == 2, result.stderr
    assert f"port {port} on 127.0.0.1 is already in use: choose another with --port" in result.stderr
    assert not (tmp_path / "var" / "run" / "redis.sock").exists()
    assert not (tmp_path / "var" / "run" / "bridge.json").exists()
