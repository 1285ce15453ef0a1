"""The one-command bridge: ``greenbridge serve`` with no Redis URL runs everything the gateway needs on one machine.

:class:`Bridge` is a small supervisor (no web code: the gateway itself runs in the calling process). It starts,
in this order, each as a child process in the caller's process group (``start_new_session=False``):

1. ``redis-server`` (found on PATH) on a private unix socket ``<data_dir>/run/redis.sock`` (mode 0700, no TCP
   port, no persistence, ``noeviction``), ready once it answers PING; the broker URL is
   ``redis+socket://<socket>``, the form kombu and Celery accept (the workers, beat and the gateway's job
   publisher all talk to Redis through Celery/kombu; redis-py itself would need ``unix://<socket>``, which
   ``bridge.json`` also records);
2. when no ``[[custodians]]`` are configured, the sandbox custodian (``greenbridge sandbox``) on 127.0.0.1 (the
   gateway's port + 1 when free, else any free port), with a client id and secret made for this run, the gateway's
   callback and notification URLs, and three generated customers whose data ends today; it becomes custodian
   ``sandbox`` of the gateway;
3. one ``greenbridge worker`` (every queue) and one ``greenbridge beat``.

Configuration reaches every process the same way: the effective settings go into ``GREENBRIDGE_*`` environment
variables (Redis URL, database URL, secret key, data directory, issuer, time zone) and, when a sandbox custodian is
added, ``GREENBRIDGE_CONFIG`` names a generated TOML file (``<data_dir>/run/bridge.toml``, mode 0600, removed on
stop: it holds the sandbox client secret) made of the user's own configuration file followed by the sandbox's
``[[custodians]]`` table. The gateway loads its configuration from that same environment (:meth:`Bridge.start`
returns it), so gateway, worker and beat share one store, one secret key and one custodian list.

Children write their output to ``<data_dir>/log/{redis,sandbox,worker,beat}.log``; the gateway logs to stderr.
``<data_dir>/run/bridge.json`` describes the running bridge (URLs, pids, socket, logs) and a lock file keeps a second
bridge off the same data directory. :meth:`Bridge.watch` starts a thread that stops the gateway when a child dies
unexpectedly; :meth:`Bridge.stop` stops the children (SIGTERM, then SIGKILL after a timeout; Redis last, so the
worker can requeue through it), kills any process they left behind, and removes the socket and the run files. On
Linux each child also gets SIGTERM from the kernel if serve itself is killed (``PR_SET_PDEATHSIG``), so no child
outlives it even then.
"""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO

from bridge.config import ConfigError, GatewayConfig, load_config
from espi.private_files import private_dir

HOST = "127.0.0.1"
SANDBOX_ID = "sandbox"
SANDBOX_CUSTOMERS = 3
SANDBOX_DAYS = 31
WORKER_CONCURRENCY = 2
QUEUES = "http,sftp,translate,notify"
STARTUP_TIMEOUT = 60.0  # seconds for each child to come up
STOP_TIMEOUT = {"worker": 30.0}  # seconds between SIGTERM and SIGKILL (Celery's warm shutdown finishes tasks)
DEFAULT_STOP_TIMEOUT = 10.0
FAILURE_GRACE = 1.0  # a child exiting this close to a Ctrl-C (which reaches the whole process group) is expected
MAX_SOCKET_PATH = 100  # sun_path holds 104 bytes on macOS, 108 on Linux

INSTALL_REDIS = (
    "no Redis URL is configured, so `greenbridge serve` runs its own Redis, but `redis-server` is not on PATH.\n"
    "Install it (Debian/Ubuntu: sudo apt-get install redis-server; macOS: brew install redis) and run this again,\n"
    "or point greenbridge at a Redis you run: GREENBRIDGE_REDIS_URL=redis://HOST:6379/0 (then start\n"
    "`greenbridge worker` and `greenbridge beat` yourself), or serve the gateway alone with --no-embedded."
)


class EmbeddedError(Exception):
    """The bridge cannot start; the message is for the user, ``exit_code`` for the shell (2: fix the setup)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class Interrupted(Exception):
    """A stop was requested (Ctrl-C, SIGTERM, SIGHUP) while the bridge was still starting."""


@dataclass
class Child:
    name: str
    proc: subprocess.Popen
    log_path: Path
    #: Descendants seen so far, (pid, start time): killed on stop if their parent left them behind.
    descendants: set[tuple[int, str]] = field(default_factory=set)


def find_redis_server() -> str:
    """The ``redis-server`` binary on PATH, or :class:`EmbeddedError` (exit 2) saying how to install it."""
    path = shutil.which("redis-server")
    if path is None:
        raise EmbeddedError(INSTALL_REDIS, exit_code=2)
    return path


def redis_ping(socket_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


def port_taken(port: int, host: str = HOST) -> str | None:
    """Why a server could not listen on ``host:port`` now, for the user who chose it; None when it could.

    The probe binds every address of ``host`` as uvicorn (asyncio's ``create_server``) does, with ``SO_REUSEADDR``
    (and ``IPV6_V6ONLY`` for IPv6). Without it the connections of a server that just stopped, in TIME_WAIT for a
    minute on the server's side, refuse the bind although the server itself would start; a socket listening on the
    port still refuses it."""
    try:
        addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as error:
        return f"cannot listen on {host}: {error.strerror}"
    for family, kind, proto, _name, address in addresses:
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    return f"port {port} on {host} is already in use: choose another with --port"
                return f"cannot listen on {host} port {port}: {error.strerror}"
    return None


def port_free(port: int, host: str = HOST) -> bool:
    """Whether a server could listen on ``host:port`` now (:func:`port_taken`)."""
    return port_taken(port, host) is None


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _http_get(port: int, path: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _proc_stat(pid: int) -> tuple[int, str, str] | None:
    """(parent pid, state, start time) from /proc (Linux); None when the process is gone or /proc is absent."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            text = handle.read().decode(errors="replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()  # after "pid (comm) "
    return int(fields[1]), fields[0], fields[19]


def descendants(pid: int) -> set[tuple[int, str]]:
    """Every live descendant of ``pid`` as (pid, start time), from /proc; empty where there is no /proc."""
    children: dict[int, list[tuple[int, str]]] = {}
    with contextlib.suppress(OSError):
        for name in os.listdir("/proc"):
            if name.isdigit():
                stat = _proc_stat(int(name))
                if stat is not None and stat[1] != "Z":
                    children.setdefault(stat[0], []).append((int(name), stat[2]))
    found: set[tuple[int, str]] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child[0])
    return found


def _parent_death_signal() -> Callable[[], None] | None:
    """Linux: a ``preexec_fn`` making the child receive SIGTERM when serve dies, even by SIGKILL (prctl
    PR_SET_PDEATHSIG); None elsewhere, where only serve's own exits (normal or by signal) clean up."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # resolved here, in the parent: nothing to load after fork
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def die_with_parent() -> None:
        prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG = 1
        if os.getppid() != parent:  # serve died before the prctl took effect
            os._exit(1)

    return die_with_parent


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string is a valid TOML basic string


class Bridge:
    """Redis, the sandbox custodian, a worker and beat around the gateway this process serves (module docstring)."""

    def __init__(self, config: GatewayConfig, *, config_path: str | None = None, port: int, host: str = HOST,
                 log_level: str = "info", stream: TextIO | None = None) -> None:
        self.config = config
        self.config_path = config_path
        self.port = port
        self.host = host  # where the gateway will listen (probed at start)
        self.log_level = log_level
        self.stream = stream or sys.stderr
        self.data_dir = config.data_dir.resolve()
        self.run_dir = self.data_dir / "run"
        self.log_dir = self.data_dir / "log"
        self.children: list[Child] = []
        self.stopping = threading.Event()
        self.failure: str | None = None
        self.requested_signal: int | None = None
        self.socket_path: Path | None = None
        self.redis_url = ""
        self.sandbox_url = ""
        self.sandbox_customers: list[dict[str, Any]] = []
        self.generated_config: Path | None = None
        self.env: dict[str, str] = {}
        self._private_socket_dir: Path | None = None
        self._sandbox_client = ("", "")
        self._sandbox_scopes: list[str] = []
        self._lock_fd: int | None = None
        self._on_stop_request: Callable[[], None] | None = None
        self._in_stop = False
        self._hurry = False
        self._monitor: threading.Thread | None = None
        self._preexec = _parent_death_signal()
        #: The ops dashboard's password when this bridge made it (None: configured, or made by an earlier run).
        self.operator_password_generated: str | None = None

    # ------------------------------------------------------------------------------------------------- start

    def start(self) -> GatewayConfig:
        """Start every child; returns the gateway's configuration (loaded from the children's environment)."""
        redis_binary = find_redis_server()
        for directory in (self.data_dir, self.run_dir, self.log_dir):
            private_dir(directory)
        for directory in (self.run_dir, self.log_dir):
            directory.chmod(0o700)
        self._lock()
        self._clear_metrics()
        taken = port_taken(self.port, self.host)
        if taken is not None:
            raise EmbeddedError(taken, exit_code=2)
        self._start_redis(redis_binary)
        self._check()
        replaced = ("GREENBRIDGE_PUBLIC_URL", "GREENBRIDGE_CONFIG")  # set below from the effective configuration
        env = {k: v for k, v in os.environ.items() if not k.startswith("GREENBRIDGE_SANDBOX_") and k not in replaced}
        env.update({
            "GREENBRIDGE_REDIS_URL": self.redis_url,
            "GREENBRIDGE_DATABASE_URL": self.config.database_url,
            "GREENBRIDGE_SECRET_KEY": self.config.secret_key,
            "GREENBRIDGE_DATA_DIR": str(self.data_dir),
            "GREENBRIDGE_ISSUER": self.config.issuer,
            "GREENBRIDGE_TIMEZONE": self.config.timezone,
            "PYTHONUNBUFFERED": "1",
        })
        if self.config.demo is None:  # the Try-it walkthrough is on by default here, off unless configured elsewhere
            env["GREENBRIDGE_DEMO"] = "on"
        user_config = os.path.abspath(self.config_path) if self.config_path else None
        if not self.config.custodians:
            self._start_sandbox(env)
            self.generated_config = self._write_config(user_config)
            env["GREENBRIDGE_CONFIG"] = str(self.generated_config)
        elif user_config:
            env["GREENBRIDGE_CONFIG"] = user_config
        self.env = env
        gateway_env = dict(env)  # the operator's password is the gateway's alone: the children never see it
        if not self.config.operator_password:
            gateway_env["GREENBRIDGE_OPERATOR_PASSWORD"] = self._operator_password()
        try:
            gateway_config = load_config(None, environ=gateway_env)
        except ConfigError as error:  # e.g. a coverage entry of yours already has the sandbox's id
            raise EmbeddedError(str(error), exit_code=2) from None
        self._migrate(gateway_config)
        self._check()
        worker = self._spawn("worker", [sys.executable, "-m", "greenbridge", "worker", "--queues", QUEUES,
                                        "--concurrency", str(WORKER_CONCURRENCY),
                                        "--hostname", f"greenbridge-embedded-{os.getpid()}@%h",
                                        "--log-level", self.log_level], env)
        self._spawn("beat", [sys.executable, "-m", "greenbridge", "beat", "--log-level", self.log_level], env)
        self._wait_worker_ready(worker)
        self._write_state()
        return gateway_config

    def _clear_metrics(self) -> None:
        """The Prometheus files of earlier runs on this data directory (their workers were named by their pids):
        gone, but for this gateway's own directory (bridge.metrics; emptied by serve a moment ago)."""
        own = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
        root = self.config.metrics_dir
        if root is None or not root.is_dir():
            return
        for entry in root.iterdir():
            if entry.is_dir() and (own is None or entry.resolve() != Path(own).resolve()):
                shutil.rmtree(entry, ignore_errors=True)

    @property
    def operator_password_path(self) -> Path:
        return self.data_dir / "operator.password"

    def _operator_password(self) -> str:
        """The ops dashboard's password when none is configured: made once (random, 0600 in the data directory)
        and shown once, in the summary of the run that made it; later runs read it from the file."""
        import secrets

        path = self.operator_password_path
        try:
            return path.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            pass
        password = secrets.token_urlsafe(18)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(password + "\n")
        self.operator_password_generated = password
        return password

    def _lock(self) -> None:
        import fcntl

        path = self.run_dir / "bridge.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise EmbeddedError(f"another `greenbridge serve` (pid {owner}) runs the bridge on {self.data_dir}: stop "
                                "it first, or give this one its own GREENBRIDGE_DATA_DIR", exit_code=2) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None, cwd: Path | None = None) -> Child:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "ab") as out:
            out.write(f"--- {datetime.now(UTC).isoformat(timespec='seconds')} started by greenbridge serve "
                      f"(pid {os.getpid()})\n".encode())
            out.flush()
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env,
                                    cwd=cwd, start_new_session=False, preexec_fn=self._preexec)
        child = Child(name, proc, log_path)
        self.children.append(child)
        return child

    def _check(self, during: Child | None = None) -> None:
        """Raise :class:`Interrupted` when a stop was requested, :class:`EmbeddedError` when a child died."""
        if self.stopping.is_set():
            raise Interrupted()
        for child in self.children:
            code = child.proc.poll()
            if code is not None:
                raise EmbeddedError(f"{child.name} exited with code {code} while starting; last lines of "
                                    f"{child.log_path}:\n{log_tail(child.log_path)}")

    def _wait(self, ready: Callable[[], bool], what: str, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            self._check()
            if time.monotonic() > deadline:
                raise EmbeddedError(f"{what} was not ready within {timeout:.0f} s")
            time.sleep(0.05)

    def _start_redis(self, binary: str) -> None:
        socket_path = self.run_dir / "redis.sock"
        if len(str(socket_path)) > MAX_SOCKET_PATH:  # too long for a unix socket: a private directory in /tmp
            self._private_socket_dir = Path(tempfile.mkdtemp(prefix="greenbridge-redis-"))
            socket_path = self._private_socket_dir / "redis.sock"
        socket_path.unlink(missing_ok=True)  # left by a bridge that was killed (the lock says none runs now)
        self.socket_path = socket_path
        child = self._spawn("redis", [
            binary, "--port", "0", "--unixsocket", str(socket_path), "--unixsocketperm", "700", "--save", "",
            "--appendonly", "no", "--dir", str(self.run_dir), "--daemonize", "no", "--maxmemory-policy", "noeviction",
            "--loglevel", "notice", "--logfile", ""], cwd=self.run_dir)
        self._wait(lambda: redis_ping(socket_path), f"redis-server (pid {child.proc.pid})")
        self.redis_url = f"redis+socket://{socket_path}"

    def _start_sandbox(self, base_env: dict[str, str]) -> None:
        import secrets

        issuer = self.config.base_url
        client_id = f"greenbridge-{secrets.token_hex(4)}"
        self._sandbox_client = (client_id, secrets.token_urlsafe(32))
        start = (datetime.now(UTC) - timedelta(days=SANDBOX_DAYS)).date()
        candidates = [self.port + 1] if self.port < 65535 and port_free(self.port + 1) else []
        for port in [*candidates, free_port(), free_port()]:
            url = f"http://{HOST}:{port}"
            env = {**base_env,
                   "GREENBRIDGE_SANDBOX_BASE_URL": url,
                   "GREENBRIDGE_SANDBOX_CLIENT_ID": client_id,
                   "GREENBRIDGE_SANDBOX_CLIENT_SECRET": self._sandbox_client[1],
                   "GREENBRIDGE_SANDBOX_CLIENT_NAME": "greenbridge (this bridge's gateway)",
                   "GREENBRIDGE_SANDBOX_REDIRECT_URI": f"{issuer}/custodians/{SANDBOX_ID}/callback",
                   "GREENBRIDGE_SANDBOX_NOTIFY_URI": f"{issuer}/espi/1_1/Notification",
                   "GREENBRIDGE_SANDBOX_GENERATE_CUSTOMERS": str(SANDBOX_CUSTOMERS),
                   "GREENBRIDGE_SANDBOX_GENERATE_DAYS": str(SANDBOX_DAYS),
                   "GREENBRIDGE_SANDBOX_GENERATE_START": start.isoformat(),
                   "GREENBRIDGE_SANDBOX_ADMIN_CLIENT_SECRET": secrets.token_urlsafe(24),
                   "GREENBRIDGE_SANDBOX_SECRET_KEY": secrets.token_urlsafe(32)}
            child = self._spawn("sandbox", [sys.executable, "-m", "greenbridge", "sandbox", "--host", HOST,
                                            "--port", str(port), "--log-level", self.log_level], env)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while child.proc.poll() is None:
                if self.stopping.is_set():
                    raise Interrupted()
                answer = _http_get(port, "/healthz", timeout=2)
                if answer is not None and answer[0] == 200:
                    break
                if time.monotonic() > deadline:
                    raise EmbeddedError(f"the sandbox custodian (pid {child.proc.pid}) did not answer on {url} within "
                                        f"{STARTUP_TIMEOUT:.0f} s; see {child.log_path}")
                time.sleep(0.05)
            if child.proc.poll() is None:
                break
            self.children.remove(child)  # lost a race for the port: try another
            if "address already in use" not in log_tail(child.log_path).lower():
                raise EmbeddedError(f"the sandbox custodian exited with code {child.proc.returncode}; last lines of "
                                    f"{child.log_path}:\n{log_tail(child.log_path)}")
        else:
            raise EmbeddedError("the sandbox custodian found no free port")
        answer = _http_get(port, "/sandbox.json", timeout=10)
        if answer is None or answer[0] != 200:
            raise EmbeddedError(f"the sandbox custodian at {url} did not describe itself (/sandbox.json)")
        state = json.loads(answer[1])
        self.sandbox_url = url
        self.sandbox_customers = state["customers"]
        party = next(p for p in state["third_parties"] if p["client_id"] == client_id)
        self._sandbox_scopes = list(party["scopes"])

    def _write_config(self, user_config: str | None) -> Path:
        """The user's TOML file (if any) followed by the sandbox's [[custodians]] table, mode 0600."""
        text = ""
        if user_config:
            try:
                text = Path(user_config).read_text(encoding="utf-8")
            except OSError as error:
                raise EmbeddedError(f"{user_config}: {error}", exit_code=2) from None
            text = f"# from {user_config}\n{text}"
            if not text.endswith("\n"):
                text += "\n"
        url = self.sandbox_url
        client_id, client_secret = self._sandbox_client
        scopes = ", ".join(_toml_string(s) for s in self._sandbox_scopes)
        text += f"""
# Added by `greenbridge serve` for this run only (removed when it stops): the embedded sandbox custodian.
[[custodians]]
id = "{SANDBOX_ID}"
name = "Greenbridge sandbox custodian"
resource_url = {_toml_string(url + "/espi/1_1/resource")}
authorize_url = {_toml_string(url + "/oauth/authorize")}
token_url = {_toml_string(url + "/oauth/token")}
client_id = {_toml_string(client_id)}
client_secret = {_toml_string(client_secret)}
scopes = [{scopes}]

[custodians.coverage]
country = "US"
description = "Generated customers of the sandbox Green Button custodian started by greenbridge serve"
commodity_types = ["electricity", "natural_gas", "water"]
"""
        path = self.run_dir / "bridge.toml"
        path.unlink(missing_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        return path

    def _migrate(self, config: GatewayConfig) -> None:
        """Bring the store up to date once, before the worker and the gateway open it."""
        import logging

        alembic = logging.getLogger("alembic")
        level = alembic.level
        alembic.setLevel(max(logging.WARNING, level))  # keep the startup summary readable
        try:
            from cds.store.engine import make_engine
            from cds.store.migrate import upgrade

            engine = make_engine(config.database_url)
            try:
                upgrade(engine)
            finally:
                engine.dispose()
        finally:
            alembic.setLevel(level)

    def _wait_worker_ready(self, worker: Child) -> None:
        """Until the worker answers a remote-control ping through Redis (whatever its log level)."""
        from celery import Celery

        app = Celery("greenbridge-embedded", broker=self.redis_url, set_as_current=False)
        app.conf.update(broker_connection_timeout=3, broker_connection_retry_on_startup=True,
                        broker_transport_options={"socket_connect_timeout": 3, "socket_timeout": 5})
        try:  # the Redis is private: only our worker can answer
            self._wait(lambda: bool(app.control.ping(timeout=0.5, limit=1)),
                       f"the worker (pid {worker.proc.pid})", timeout=STARTUP_TIMEOUT * 2)
        finally:
            app.close()

    def _write_state(self) -> None:
        state = {
            "pid": os.getpid(),
            "gateway": self.config.base_url,
            "sandbox": self.sandbox_url or None,
            "sandbox_customers": [c["id"] for c in self.sandbox_customers],
            "sandbox_password": self.sandbox_customers[0]["password"] if self.sandbox_customers else None,
            "redis_socket": str(self.socket_path),
            "redis_url": self.redis_url,
            "redis_py_url": f"unix://{self.socket_path}",
            "config": self.env.get("GREENBRIDGE_CONFIG"),
            "data_dir": str(self.data_dir),
            "processes": {c.name: c.proc.pid for c in self.children},
            "logs": {c.name: str(c.log_path) for c in self.children},
        }
        path = self.run_dir / "bridge.json"
        partial = path.with_suffix(".json.tmp")
        partial.write_text(json.dumps(state, indent=2) + "\n")
        partial.chmod(0o600)
        partial.replace(path)

    # ------------------------------------------------------------------------------------------------ report

    def summary(self) -> str:
        pids = {c.name: c.proc.pid for c in self.children}
        lines = ["greenbridge: the bridge is up (Ctrl-C stops everything)",
                 f"  gateway   {self.config.base_url}   (this process, pid {os.getpid()}; its log follows below)"]
        if self.sandbox_url:
            logins = ", ".join(c["id"] for c in self.sandbox_customers)
            password = self.sandbox_customers[0]["password"] if self.sandbox_customers else "?"
            lines.append(f"  sandbox   {self.sandbox_url}   (pid {pids['sandbox']}) Green Button custodian "
                         f"'{SANDBOX_ID}'; customers {logins}, password {password}")
        lines += [f"  redis     {self.redis_url}   (pid {pids['redis']})",
                  f"  worker    pid {pids['worker']}, queues {QUEUES}; beat pid {pids['beat']}",
                  self._ops_line(),
                  f"  metrics   {self.config.base_url}/metrics   (Prometheus)",
                  f"  logs      {self.log_dir}/{{{','.join(c.name for c in self.children)}}}.log",
                  f"  state     {self.run_dir / 'bridge.json'}"]
        if self.sandbox_url:
            lines.append(f"  try it    {self.config.base_url}/ (the walkthrough: {self.config.base_url}/try); the "
                         f"sandbox's home page {self.sandbox_url}/ lists its customers")
        return "\n".join(lines)

    def _ops_line(self) -> str:
        where = f"  ops       {self.config.base_url}/ops   user {self.config.operator_user}, password "
        if self.config.operator_password:
            return where + "from your configuration"
        if self.operator_password_generated is not None:
            return where + f"{self.operator_password_generated} (made now, shown once; kept in " \
                           f"{self.operator_password_path})"
        return where + f"in {self.operator_password_path}"

    def say(self, message: str) -> None:
        print(message, file=self.stream, flush=True)

    # ---------------------------------------------------------------------------------------- watch and stop

    def request_stop(self, signum: int | None = None, _frame: Any = None) -> None:
        """Signal handler (SIGINT, SIGTERM, SIGHUP): stop the gateway, then the children; a second one hurries."""
        if self._in_stop:
            self._hurry = True
            return
        if self.requested_signal is None and signum is not None:
            self.requested_signal = signum
        self.stopping.set()
        if self._on_stop_request is not None:
            self._on_stop_request()

    def watch(self, stop_gateway: Callable[[], None]) -> None:
        """Start the thread that stops everything (through ``stop_gateway``) when a child dies unexpectedly."""
        self._on_stop_request = stop_gateway
        self._monitor = threading.Thread(target=self._watch, name="greenbridge-bridge-monitor", daemon=True)
        self._monitor.start()

    def _watch(self) -> None:
        rounds = 0
        while not self.stopping.is_set():
            if rounds % 8 == 0:
                for child in self.children:
                    child.descendants |= descendants(child.proc.pid)
            rounds += 1
            dead = next((c for c in self.children if c.proc.poll() is not None), None)
            if dead is not None:
                # A Ctrl-C in a terminal reaches every process of the group at once: give the gateway's own
                # signal handler a moment to mark the stop as requested before calling this a failure.
                if self.stopping.wait(FAILURE_GRACE):
                    return
                self.failure = f"{dead.name} (pid {dead.proc.pid}) exited unexpectedly with code {dead.proc.returncode}"
                self.say(f"greenbridge serve: {self.failure}; stopping the whole bridge. Last lines of "
                         f"{dead.log_path}:\n{log_tail(dead.log_path)}")
                self.stopping.set()
                if self._on_stop_request is not None:
                    self._on_stop_request()
                return
            time.sleep(0.25)

    def stop(self) -> None:
        """Stop every child (the app processes first, Redis last), kill leftovers, remove the run files."""
        self._in_stop = True
        self.stopping.set()
        for child in self.children:
            if child.proc.poll() is None:
                child.descendants |= descendants(child.proc.pid)
        apps = [c for c in reversed(self.children) if c.name != "redis"]
        redis = [c for c in self.children if c.name == "redis"]
        for group in (apps, redis):
            for child in group:
                if child.proc.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.proc.terminate()
            for child in group:
                self._reap(child)
        for child in self.children:  # e.g. a killed worker's pool processes
            for pid, started in child.descendants:
                stat = _proc_stat(pid)
                if stat is not None and stat[2] == started and stat[1] != "Z":
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.kill(pid, signal.SIGKILL)
        if self._lock_fd is None:  # never started (e.g. another bridge holds the data directory): its files
            return
        if self.socket_path is not None:
            self.socket_path.unlink(missing_ok=True)
        if self._private_socket_dir is not None:
            shutil.rmtree(self._private_socket_dir, ignore_errors=True)
        for name in ("bridge.json", "bridge.toml"):
            (self.run_dir / name).unlink(missing_ok=True)
        os.close(self._lock_fd)  # the lock file stays: unlinking it would race with the next bridge
        self._lock_fd = None

    def _reap(self, child: Child) -> None:
        deadline = time.monotonic() + STOP_TIMEOUT.get(child.name, DEFAULT_STOP_TIMEOUT)
        while child.proc.poll() is None and time.monotonic() < deadline and not self._hurry:
            time.sleep(0.05)
        if child.proc.poll() is None:
            self.say(f"greenbridge serve: {child.name} (pid {child.proc.pid}) did not stop in time: killed")
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            child.proc.wait()
