"""Real servers for tests and benchmarks: PostgreSQL, uvicorn, Redis, headless Chromium and OpenSSH sshd, all on
127.0.0.1.

Plain functions and context managers with no pytest dependency, so bench/ can import them too. Each context manager
starts its own process(es), waits until they answer, and on exit stops them and removes every directory it made.
A missing Debian package raises :class:`ServerUnavailable`, whose message names the package to install
(``bash -c 'source deploy/setup.sh && gb_setup test'`` installs them all).
"""

from __future__ import annotations

import contextlib
import glob
import http.client
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"

# Flags for Debian's chromium on a machine with no screen, no GPU and no network but loopback (the background
# networking flags stop it from trying to reach Google's hosts at every start).
CHROMIUM_ARGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
)


class ServerUnavailable(RuntimeError):
    """The binaries a helper needs are not installed; the message names the Debian package."""


class ServerStartError(RuntimeError):
    """A server process did not come up; the message ends with the tail of its log."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = HOST, timeout: float = 0.2) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(log is empty)"


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
    """Send ``sig``, wait up to ``timeout`` seconds, then SIGKILL; always reaps the process."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait()


# --------------------------------------------------------------------------------------------------------- PostgreSQL


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([\d.]+)/bin/", path)
    return tuple(int(part) for part in match.group(1).split(".") if part) if match else ()


def postgres_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl/postgres: the newest /usr/lib/postgresql/*/bin, else the one on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=_version_key, reverse=True)
    for initdb in candidates:
        bindir = Path(initdb).parent
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    initdb = shutil.which("initdb")
    if initdb and shutil.which("postgres", path=str(Path(initdb).parent)):
        return Path(initdb).parent
    raise ServerUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin or on PATH: "
        "install the Debian package 'postgresql' (apt-get install postgresql, or gb_setup test)"
    )


def _server_user() -> pwd.struct_passwd | None:
    """The user PostgreSQL runs as: None (ourselves) unless we are root, which PostgreSQL refuses."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ServerUnavailable("running as root and neither a 'postgres' nor a 'nobody' user exists")


def _can_write(user: pwd.struct_passwd | None, path: Path) -> bool:
    """Whether ``user`` may create files in ``path`` (pytest's temp dirs are 0700 and root-owned, for instance)."""
    if user is None:
        return os.access(path, os.W_OK | os.X_OK)
    probe = subprocess.run(
        ["test", "-w", str(path), "-a", "-x", str(path)], user=user.pw_uid, group=user.pw_gid, extra_groups=[]
    )
    return probe.returncode == 0


def _pg_conninfo(url: str, dbname: str | None = None) -> str:
    from sqlalchemy.engine import make_url

    parsed = make_url(url)
    return (
        f"host={parsed.host} port={parsed.port} user={parsed.username} "
        f"dbname={dbname or parsed.database} connect_timeout=5"
    )


def _pg_admin(url: str, *statements: str) -> None:
    import psycopg

    with psycopg.connect(_pg_conninfo(url, "postgres"), autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement)


def create_database(url: str, name: str | None = None) -> str:
    """Create database ``name`` (default: a unique ``gb_<hex>``) on the server of ``url``; return its URL."""
    from sqlalchemy.engine import make_url

    name = name or f"gb_{uuid.uuid4().hex[:16]}"
    if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"unsafe database name {name!r}")
    _pg_admin(url, f'CREATE DATABASE "{name}"')
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop the database named in ``url``, disconnecting whoever is still connected to it."""
    from sqlalchemy.engine import make_url

    name = make_url(url).database
    if not name or not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
        raise ValueError(f"unsafe database name {name!r}")
    _pg_admin(
        url,
        f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = '{name}' AND pid <> pg_backend_pid()",
        f'DROP DATABASE IF EXISTS "{name}"',
    )


class PostgresURL(str):
    """A cluster's URL that can also ``restart(down_seconds=0, sig=SIGINT, while_down=None)`` the server: stopped
    (SIGINT: fast shutdown, every session terminated; SIGKILL: a crash), ``while_down()`` called, down for
    ``down_seconds`` more, started again on the same port and data, returning once it accepts connections."""

    restart: Callable[..., None]


@contextlib.contextmanager
def postgres_cluster(
    tmpdir: str | os.PathLike | None = None,
    *,
    dbname: str = "greenbridge_test",
    superuser: str = "greenbridge",
    timeout: float = 60.0,
    settings: Mapping[str, str] | None = None,
) -> Iterator[str]:
    """A throwaway PostgreSQL cluster; yields ``postgresql+psycopg://greenbridge@127.0.0.1:PORT/greenbridge_test``.

    The cluster lives in a new directory inside ``tmpdir`` (or the system temp dir when ``tmpdir`` is None or the
    server's user cannot write there, as with pytest's 0700 temp dirs when running as root), listens on 127.0.0.1
    only, on a free port, trusts every connection from 127.0.0.1 and has its unix socket inside that directory.
    Durability is off (fsync, synchronous_commit, full_page_writes) for speed. As root, initdb and postgres run as
    the ``postgres`` user (or ``nobody``). On exit: fast shutdown (SIGINT), then the directory is removed. The URL
    is a :class:`PostgresURL`: ``url.restart()`` restarts the server in place.
    ``settings`` adds or overrides server settings (``-c name=value``).
    """
    import psycopg

    bindir = postgres_bin_dir()
    user = _server_user()
    base = Path(tmpdir) if tmpdir is not None else None
    if base is not None and not _can_write(user, base):
        base = None
    root = Path(tempfile.mkdtemp(prefix="gb-pg-", dir=base))
    proc: subprocess.Popen | None = None
    try:
        run_as: dict = {}
        if user is not None:
            os.chown(root, user.pw_uid, user.pw_gid)
            run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        env["HOME"] = str(root)
        data = root / "data"
        sockets = root / "sock"
        sockets.mkdir()
        if user is not None:
            os.chown(sockets, user.pw_uid, user.pw_gid)
        log = root / "postgres.log"
        with open(log, "ab") as out:
            init = subprocess.run(
                [str(bindir / "initdb"), "-D", str(data), "-U", superuser, "-A", "trust", "-E", "UTF8",
                 "--no-locale", "--no-sync"],
                stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, **run_as,
            )  # fmt: skip
        if init.returncode != 0:
            raise ServerStartError(f"initdb failed (exit {init.returncode}):\n{_log_tail(log)}")
        (data / "pg_hba.conf").write_text(
            "# written by tests/servers.py: trust, loopback and the private socket only\n"
            "local all all trust\n"
            f"host all all {HOST}/32 trust\n"
        )
        # A unix socket path is limited to ~107 bytes; past that, TCP only.
        socket_dir = str(sockets) if len(str(sockets)) < 80 else ""
        for _attempt in range(3):
            port = free_port()
            options = {
                "listen_addresses": HOST,
                "port": str(port),
                "unix_socket_directories": socket_dir,
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "wal_level": "minimal",
                "max_wal_senders": "0",
                "max_connections": "100",
                "shared_buffers": "64MB",
                "jit": "off",
                "logging_collector": "off",
                "log_min_messages": "warning",
                "timezone": "UTC",
                **(settings or {}),
            }
            cmd = [str(bindir / "postgres"), "-D", str(data)]
            for key, value in options.items():
                cmd += ["-c", f"{key}={value}"]
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, **run_as)
            deadline = time.monotonic() + timeout
            conninfo = f"host={HOST} port={port} user={superuser} dbname=postgres connect_timeout=2"
            while True:
                if proc.poll() is not None:
                    break
                try:
                    with psycopg.connect(conninfo, autocommit=True) as conn:
                        conn.execute(f'CREATE DATABASE "{dbname}"')
                    return_url = f"postgresql+psycopg://{superuser}@{HOST}:{port}/{dbname}"
                    break
                except psycopg.OperationalError:
                    if time.monotonic() > deadline:
                        raise ServerStartError(
                            f"PostgreSQL did not accept connections on {HOST}:{port} within {timeout:.0f} s:\n"
                            f"{_log_tail(log)}"
                        ) from None
                    time.sleep(0.05)
            if proc.poll() is None:
                break
            if "could not bind" not in _log_tail(log):
                raise ServerStartError(f"PostgreSQL exited with {proc.returncode}:\n{_log_tail(log)}")
        else:
            raise ServerStartError(f"PostgreSQL could not bind a free port:\n{_log_tail(log)}")
        url = PostgresURL(return_url)
        running = [proc]

        def restart(down_seconds: float = 0.0, sig: int = signal.SIGINT,
                    while_down: Callable[[], object] | None = None) -> None:
            _stop(running[0], sig, timeout=30)
            if while_down is not None:
                while_down()
            time.sleep(down_seconds)
            with open(log, "ab") as out:
                running[0] = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=root, env=env, **run_as)
            deadline = time.monotonic() + timeout
            while True:
                try:
                    with psycopg.connect(conninfo, autocommit=True):
                        return
                except psycopg.OperationalError:
                    if running[0].poll() is not None or time.monotonic() > deadline:
                        raise ServerStartError(f"PostgreSQL did not come back:\n{_log_tail(log)}") from None
                    time.sleep(0.05)

        url.restart = restart
        try:
            yield url
        finally:
            proc = running[0]
    finally:
        if proc is not None:
            _stop(proc, signal.SIGINT, timeout=30)  # SIGINT = fast shutdown
        shutil.rmtree(root, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------------ uvicorn


class ServerURL(str):
    """A base URL (``http://127.0.0.1:PORT``) that also carries the server's ``pid``, ``port`` and ``log_path``."""

    pid: int
    port: int
    log_path: Path
    ca_path: Path  # nginx_server: its self-signed certificate


def _import_string(app: str | Callable) -> tuple[str, str | None]:
    """``"module:attr"`` and the sys.path entry it needs, for an import string or a module-level callable."""
    if isinstance(app, str):
        return app, None
    module = sys.modules[app.__module__]
    if "<locals>" in app.__qualname__ or not getattr(module, "__file__", None):
        raise ValueError(f"{app!r} must be a module-level object so that a child process can import it")
    path = Path(module.__file__).resolve().parent
    for _ in range(app.__module__.count(".")):
        path = path.parent
    return f"{app.__module__}:{app.__qualname__}", str(path)


@contextlib.contextmanager
def uvicorn_server(
    app: str | Callable,
    *,
    env: Mapping[str, str] | None = None,
    factory: bool = True,
    health_path: str = "/",
    app_dir: str | os.PathLike | None = None,
    args: Sequence[str] = (),
    log_path: str | os.PathLike | None = None,
    startup_timeout: float = 30.0,
    stop_timeout: float = 10.0,
) -> Iterator[ServerURL]:
    """Run ``python -m uvicorn APP --host 127.0.0.1 --port N [--factory]`` as a real child process.

    ``{port}`` in an ``env`` value is replaced by the chosen port (an issuer URL must name it).
    ``app`` is an import string (``"apps.hello:create_app"``) or a module-level callable/object. ``app_dir`` goes to
    ``--app-dir`` and PYTHONPATH. ``env`` is added to this process's environment. Yields the base URL once the port
    accepts TCP and ``GET health_path`` answers with a status below 400. Output goes to ``log_path`` (kept) or to a
    temporary log (removed); its tail ends the :class:`ServerStartError` raised when startup fails. On exit: SIGTERM,
    then SIGKILL after ``stop_timeout`` seconds.
    """
    target, import_root = _import_string(app)
    paths = [str(Path(p).resolve()) for p in (app_dir, import_root) if p]
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONUNBUFFERED"] = "1"
    if paths:
        child_env["PYTHONPATH"] = os.pathsep.join([*paths, *filter(None, [child_env.get("PYTHONPATH")])])
    own_log = log_path is None
    if own_log:
        fd, name = tempfile.mkstemp(prefix="gb-uvicorn-", suffix=".log")
        os.close(fd)
        log = Path(name)
    else:
        log = Path(log_path)
        log.parent.mkdir(parents=True, exist_ok=True)
    proc: subprocess.Popen | None = None
    try:
        for _attempt in range(3):
            port = free_port()
            cmd = [sys.executable, "-m", "uvicorn", target, "--host", HOST, "--port", str(port)]
            if factory:
                cmd.append("--factory")
            if app_dir is not None:
                cmd += ["--app-dir", str(app_dir)]
            cmd += list(args)
            port_env = {k: v.replace("{port}", str(port)) for k, v in child_env.items()}
            with open(log, "ab") as out:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        env=port_env)  # fmt: skip
            error = _wait_http(proc, port, health_path, startup_timeout)
            if error is None:
                break
            _stop(proc, timeout=stop_timeout)
            if "address already in use" not in _log_tail(log).lower():
                raise ServerStartError(f"uvicorn {target} did not start: {error}\n--- {log} (tail) ---\n"
                                       f"{_log_tail(log)}")  # fmt: skip
        else:
            raise ServerStartError(f"uvicorn could not bind a free port:\n{_log_tail(log)}")
        url = ServerURL(f"http://{HOST}:{port}")
        url.pid, url.port, url.log_path = proc.pid, port, log
        yield url
    finally:
        if proc is not None:
            _stop(proc, timeout=stop_timeout)
        if own_log:
            log.unlink(missing_ok=True)


def _wait_http(proc: subprocess.Popen, port: int, path: str, timeout: float) -> str | None:
    """None once ``GET path`` answers below 400; else why not (process exited, or timed out)."""
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return f"process exited with {proc.returncode}"
        if port_open(port):
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            try:
                conn.request("GET", path)
                status = conn.getresponse().status
                if status < 400:
                    return None
                last = f"GET {path} answered {status}"
            except (OSError, http.client.HTTPException) as exc:
                last = f"GET {path} failed: {exc!r}"
            finally:
                conn.close()
        time.sleep(0.05)
    return f"not ready within {timeout:.0f} s ({last})"


# -------------------------------------------------------------------------------------------------------------- Redis


class RedisURL(str):
    """A Celery/kombu broker URL (``redis+socket:///DIR/redis.sock``) that also carries ``pid``, ``socket_path``
    and ``log_path``; ``redis_py_url`` is the same server as redis-py spells it (``unix:///DIR/redis.sock``)."""

    pid: int
    socket_path: Path
    log_path: Path

    @property
    def redis_py_url(self) -> str:
        return f"unix://{self.socket_path}"


def _redis_ping(socket_path: Path) -> bool:
    from greenbridge.embedded import redis_ping  # the same readiness check the one-command bridge uses

    return redis_ping(socket_path)


@contextlib.contextmanager
def redis_server(tmpdir: str | os.PathLike, *, startup_timeout: float = 20.0,
                 socket_dir: str | os.PathLike | None = None) -> Iterator[RedisURL]:
    """Debian's ``redis-server`` on a private unix socket in ``tmpdir`` (no TCP port, persistence off).

    Yields the broker URL once the server answers PING; on exit stops it (SIGTERM, then SIGKILL) and removes the
    socket and log. ``maxmemory-policy noeviction``: an evicted ``_kombu.binding.*`` key breaks Celery routing.
    With ``socket_dir`` (an existing directory, at most ~90 characters long) the socket is ``socket_dir/redis.sock``
    and the directory is left in place: a server started again there answers at the same URL, as a restarted
    Redis does.
    """
    binary = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server")
                                              else None)
    if binary is None:
        raise ServerUnavailable("redis-server is not installed (Debian package redis-server: "
                                "apt-get install redis-server)")
    directory = Path(socket_dir) if socket_dir is not None else Path(tempfile.mkdtemp(prefix="gb-redis-", dir=tmpdir))
    sock_path = directory / "redis.sock"
    if socket_dir is None and len(str(sock_path)) > 100:  # sun_path holds 108 bytes
        shutil.rmtree(directory, ignore_errors=True)
        directory = Path(tempfile.mkdtemp(prefix="gb-redis-"))
        sock_path = directory / "redis.sock"
    log = directory / "redis.log"
    cmd = [binary, "--port", "0", "--unixsocket", str(sock_path), "--unixsocketperm", "700", "--save", "",
           "--appendonly", "no", "--dir", str(directory), "--daemonize", "no", "--loglevel", "notice",
           "--logfile", "", "--maxmemory-policy", "noeviction"]
    proc: subprocess.Popen | None = None
    try:
        with open(log, "ab") as out:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    cwd=directory)  # fmt: skip
        deadline = time.monotonic() + startup_timeout
        while not _redis_ping(sock_path):
            if proc.poll() is not None:
                raise ServerStartError(f"redis-server exited with {proc.returncode}:\n{_log_tail(log)}")
            if time.monotonic() > deadline:
                raise ServerStartError(f"redis-server not ready within {startup_timeout:.0f} s:\n{_log_tail(log)}")
            time.sleep(0.05)
        url = RedisURL(f"redis+socket://{sock_path}")
        url.pid, url.socket_path, url.log_path = proc.pid, sock_path, log
        yield url
    finally:
        if proc is not None:
            _stop(proc)
        if socket_dir is None:
            shutil.rmtree(directory, ignore_errors=True)
        else:
            sock_path.unlink(missing_ok=True)
            log.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------------------- Chromium


def chromium_path() -> str:
    """Debian's chromium (``GREENBRIDGE_CHROMIUM`` overrides); :class:`ServerUnavailable` when absent."""
    path = os.environ.get("GREENBRIDGE_CHROMIUM") or shutil.which("chromium")
    if not path:
        raise ServerUnavailable("chromium not found on PATH: install the Debian package 'chromium' (gb_setup test)")
    return path


@contextlib.contextmanager
def chromium_browser(*, args: Sequence[str] = (), timeout_ms: float = 60_000) -> Iterator:
    """Launch Debian's headless chromium through Playwright (never a downloaded browser); yields a Browser.

    Playwright gives each launch a fresh, temporary --user-data-dir and removes it on close.
    """
    executable = chromium_path()
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:  # pragma: no cover - the test extra installs it
        raise ServerUnavailable("the Python package 'playwright' is missing (pip install -e '.[test]')") from exc
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=executable,
            headless=True,
            chromium_sandbox=False,
            args=[*CHROMIUM_ARGS, *args],
            timeout=timeout_ms,
        )
        try:
            yield browser
        finally:
            browser.close()


# ---------------------------------------------------------------------------------------------------- OpenSSH sshd


@dataclass
class SshdServer:
    """A running OpenSSH ``sshd`` that serves ``root`` over SFTP only (``ForceCommand internal-sftp -d root``).

    ``user`` logs in with the private key at ``client_key_path`` (ed25519, OpenSSH format); the server's public host
    key is ``host_key_line`` (``"ssh-ed25519 AAAA…"``, to pin). ``key_path`` and ``host_key`` repeat those two under
    the names espi.sftp's settings use, so the server object itself can be passed as settings.
    """

    host: str
    port: int
    user: str
    root: Path
    client_key_path: Path
    host_key_line: str
    log_path: Path
    pid: int
    authorized_keys: Path

    @property
    def key_path(self) -> Path:
        return self.client_key_path

    @property
    def host_key(self) -> str:
        return self.host_key_line

    def write_file(self, relative: str, data: bytes) -> Path:
        """Write ``root/relative`` (parents too), owned by the login user, so sshd reads it whoever we are."""
        path = self.root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644)
        if os.geteuid() == 0:
            account = pwd.getpwnam(self.user)
            for item in [path, *path.relative_to(self.root).parents]:
                os.chown(self.root / item, account.pw_uid, account.pw_gid)
        return path

    def authorize(self, public_key_line: str) -> None:
        """Accept one more client key (an ``authorized_keys`` line, ``"ssh-rsa AAAA…"``)."""
        with open(self.authorized_keys, "a") as out:
            out.write(public_key_line.strip() + "\n")

    def uri(self, remote_path: str) -> str:
        """``sftp://user@127.0.0.1:PORT/remote_path``."""
        return f"sftp://{self.user}@{self.host}:{self.port}/{remote_path.lstrip('/')}"


def _binary(name: str, package: str, *candidates: str) -> str:
    path = shutil.which(name) or next((c for c in candidates if os.access(c, os.X_OK)), None)
    if path is None:
        raise ServerUnavailable(f"{name} not found: install the Debian package '{package}' (apt-get install "
                                f"{package}, or gb_setup test)")  # fmt: skip
    return path


def _descendants(pid: int) -> list[tuple[int, str]]:
    """(pid, start time) of every live descendant of ``pid``, from /proc (sshd's connection children call setsid,
    so they leave its process group; the start time guards against a recycled pid)."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append((int(entry), fields[19]))
    found: list[tuple[int, str]] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child[0])
    return found


def _kill_if_same(pid: int, started: str, sig: int) -> None:
    with contextlib.suppress(OSError, IndexError):
        with open(f"/proc/{pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[19] != started:
                return
        os.kill(pid, sig)


@contextlib.contextmanager
def sshd_server(directory: str | os.PathLike, *, startup_timeout: float = 15.0) -> Iterator[SshdServer]:
    """Debian's OpenSSH ``sshd`` on 127.0.0.1 and a free port, SFTP only, public-key login only.

    Everything lives in a new directory inside ``directory`` (or the system temp dir when the server's user cannot
    reach it, as with pytest's 0700 temp dirs when running as root): an ed25519 host key and client key pair made
    by ``ssh-keygen``, ``authorized_keys``, ``sshd_config`` and ``root/``, the served directory. As root, sshd runs
    as ``nobody`` through ``setpriv`` (no privilege-separation user or /run/sshd needed) and the login user is
    ``nobody``; otherwise sshd runs as, and accepts, the current user. ``UsePAM yes`` lets ``nobody``, whose
    password field is locked, log in with a key. Yields once sshd logs "Server listening on"; on exit: SIGTERM,
    then SIGKILL, for sshd and its connection children, and the directory is removed.
    """
    sshd = _binary("sshd", "openssh-server", "/usr/sbin/sshd")
    keygen = _binary("ssh-keygen", "openssh-client", "/usr/bin/ssh-keygen")
    account: pwd.struct_passwd | None = None
    if os.geteuid() == 0:
        setpriv = _binary("setpriv", "util-linux", "/usr/bin/setpriv")
        try:
            account = pwd.getpwnam("nobody")
        except KeyError:
            raise ServerUnavailable("running as root and there is no 'nobody' user to run sshd as") from None
        user = "nobody"
    else:
        setpriv = ""
        user = pwd.getpwuid(os.geteuid()).pw_name
    base = Path(directory) if directory is not None else None
    if base is not None and not _can_write(account, base):
        base = None
    workdir = Path(tempfile.mkdtemp(prefix="gb-sshd-", dir=base))
    proc: subprocess.Popen | None = None
    children: list[tuple[int, str]] = []
    try:
        root = workdir / "root"
        root.mkdir()
        host_key = workdir / "host_ed25519"
        client_key = workdir / "client_ed25519"
        for key, comment in ((host_key, "greenbridge-test-host"), (client_key, "greenbridge-test-client")):
            made = subprocess.run([keygen, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(key)],
                                  capture_output=True, text=True)  # fmt: skip
            if made.returncode != 0:
                raise ServerStartError(f"ssh-keygen failed (exit {made.returncode}): {made.stderr.strip()}")
        host_key_line = " ".join(Path(f"{host_key}.pub").read_text().split()[:2])
        authorized_keys = workdir / "authorized_keys"
        authorized_keys.write_text(Path(f"{client_key}.pub").read_text())
        log = workdir / "sshd.log"
        log.touch()
        config = workdir / "sshd_config"
        if account is not None:
            for path in [workdir, *workdir.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)
        run_as = [setpriv, "--reuid=nobody", f"--regid={account.pw_gid}", "--clear-groups"] if account else []
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C", "TZ": "UTC"}
        for _attempt in range(3):
            port = free_port()
            config.write_text(
                "# written by tests/servers.py: SFTP only, public-key only, loopback only\n"
                f"ListenAddress {HOST}\n"
                f"Port {port}\n"
                f"HostKey {host_key}\n"
                "PidFile none\n"
                f"AuthorizedKeysFile {authorized_keys}\n"
                "PubkeyAuthentication yes\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM yes\n"
                "StrictModes no\n"
                "PermitRootLogin prohibit-password\n"
                # a non-root sshd cannot switch users: refuse others at authentication, not after it
                f"AllowUsers {user}\n"
                "AllowTcpForwarding no\n"
                "X11Forwarding no\n"
                "PermitTTY no\n"
                "Subsystem sftp internal-sftp\n"
                f"ForceCommand internal-sftp -d {root}\n"
                "LogLevel VERBOSE\n"
            )
            with open(log, "ab") as out:
                proc = subprocess.Popen([*run_as, sshd, "-D", "-e", "-f", str(config)], stdin=subprocess.DEVNULL,
                                        stdout=out, stderr=subprocess.STDOUT, cwd=workdir, env=env)  # fmt: skip
            deadline = time.monotonic() + startup_timeout
            while "Server listening on" not in log.read_text(errors="replace"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.02)
            if proc.poll() is None and "Server listening on" in log.read_text(errors="replace"):
                break
            reason = (f"exited with {proc.returncode}" if proc.poll() is not None
                      else f"not listening within {startup_timeout:.0f} s")  # fmt: skip
            _stop(proc)
            if "Address already in use" not in _log_tail(log):
                raise ServerStartError(f"sshd {reason}:\n{_log_tail(log)}")
        else:
            raise ServerStartError(f"sshd could not bind a free port:\n{_log_tail(log)}")
        yield SshdServer(host=HOST, port=port, user=user, root=root, client_key_path=client_key,
                         host_key_line=host_key_line, log_path=log, pid=proc.pid,
                         authorized_keys=authorized_keys)  # fmt: skip
    finally:
        if proc is not None:
            children = _descendants(proc.pid)
            _stop(proc)
            for pid, started in children:
                _kill_if_same(pid, started, signal.SIGTERM)
            deadline = time.monotonic() + 5
            while children and time.monotonic() < deadline:
                children = [(pid, started) for pid, started in children if os.path.exists(f"/proc/{pid}")]
                time.sleep(0.05)
            for pid, started in children:
                _kill_if_same(pid, started, signal.SIGKILL)
        shutil.rmtree(workdir, ignore_errors=True)


# -------------------------------------------------------------------------------------------------------------- nginx

NGINX_SNIPPET = Path(__file__).resolve().parent.parent / "deploy" / "nginx" / "greenbridge.conf"


def nginx_binary() -> str:
    return _binary("nginx", "nginx", "/usr/sbin/nginx")


def self_signed_certificate(directory: Path, host: str = HOST) -> tuple[Path, Path]:
    """A throwaway self-signed certificate for ``host`` (an IP address or a name): (fullchain.pem, privkey.pem)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        alt = x509.DNSName(host)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
            .sign(key, hashes.SHA256()))
    directory.mkdir(parents=True, exist_ok=True)
    chain, private = directory / "fullchain.pem", directory / "privkey.pem"
    chain.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    private.chmod(0o600)
    return chain, private


def nginx_prefix(directory: Path, upstreams: Sequence[str], *, snippet: str | None = None,
                 listen: tuple[int, int] | None = None) -> Path:
    """An nginx configuration directory holding deploy/nginx/greenbridge.conf as an operator installs it (relative
    paths under it): ``greenbridge/upstreams.conf`` with one ``server`` line per ``upstreams`` entry
    (``127.0.0.1:PORT``), a self-signed certificate for 127.0.0.1 in ``greenbridge/tls/``, and an ``nginx.conf``
    that includes the snippet in ``http {}`` with its pid, logs and temporary files inside the directory.

    ``listen`` = (http port, https port) replaces the snippet's ``listen 80``/``listen 443`` lines by those ports on
    127.0.0.1 only (and drops the IPv6 ones): the one change made to the file, so it can run beside anything else on
    this machine. Returns the path of ``nginx.conf``."""
    text = snippet if snippet is not None else NGINX_SNIPPET.read_text()
    if listen is not None:
        text = re.sub(r"^\s*listen \[::\]:\d+.*\n", "", text, flags=re.M)
        text = re.sub(r"^(\s*)listen 80;", rf"\1listen {HOST}:{listen[0]};", text, flags=re.M)
        text = re.sub(r"^(\s*)listen 443 ssl;", rf"\1listen {HOST}:{listen[1]} ssl;", text, flags=re.M)
    (directory / "greenbridge" / "tls").mkdir(parents=True, exist_ok=True)
    (directory / "temp").mkdir(exist_ok=True)
    self_signed_certificate(directory / "greenbridge" / "tls")
    (directory / "greenbridge" / "upstreams.conf").write_text(
        "".join(f"server {upstream} max_fails=1 fail_timeout=5s;\n" for upstream in upstreams))
    (directory / "greenbridge.conf").write_text(text)
    user = "user nobody nogroup;\n" if os.geteuid() == 0 else ""
    temp = directory / "temp"
    conf = directory / "nginx.conf"
    conf.write_text(
        "# written by tests/servers.py around deploy/nginx/greenbridge.conf\n"
        f"{user}worker_processes 1;\n"
        "daemon off;\n"
        f"pid {directory}/nginx.pid;\n"
        f"error_log {directory}/error.log notice;\n"
        "events { worker_connections 256; }\n"
        "http {\n"
        "    log_format upstreams '$remote_addr \"$request\" $status upstream=$upstream_addr "
        "upstream_status=$upstream_status';\n"
        f"    access_log {directory}/access.log upstreams;\n"
        f"    client_body_temp_path {temp}/body;\n    proxy_temp_path {temp}/proxy;\n"
        f"    fastcgi_temp_path {temp}/fastcgi;\n    uwsgi_temp_path {temp}/uwsgi;\n    scgi_temp_path {temp}/scgi;\n"
        "    include greenbridge.conf;\n"
        "}\n")
    if os.geteuid() == 0:  # the workers run as nobody: they write the temporary files
        account = pwd.getpwnam("nobody")
        os.chown(temp, account.pw_uid, account.pw_gid)
    return conf


def nginx_test(conf: Path) -> subprocess.CompletedProcess:
    """``nginx -t`` on a configuration made by :func:`nginx_prefix` (nothing is bound or started)."""
    return subprocess.run([nginx_binary(), "-t", "-p", str(conf.parent), "-c", str(conf), "-e", "stderr"],
                          capture_output=True, text=True, timeout=60)


@contextlib.contextmanager
def nginx_server(directory: str | os.PathLike, upstreams: Sequence[str], *,
                 startup_timeout: float = 15.0) -> Iterator[ServerURL]:
    """Debian's nginx running deploy/nginx/greenbridge.conf in front of ``upstreams`` on free loopback ports (see
    :func:`nginx_prefix`); yields the HTTPS base URL (its certificate is self-signed: ``verify=False`` or
    ``url.ca_path``). On exit: SIGQUIT (graceful), then SIGKILL; the directory is removed."""
    binary = nginx_binary()
    workers = pwd.getpwnam("nobody") if os.geteuid() == 0 else None
    base = Path(directory) if directory is not None and _can_write(workers, Path(directory)) else None
    root = Path(tempfile.mkdtemp(prefix="gb-nginx-", dir=base))  # its workers (nobody) write temporary files here
    root.chmod(0o755)
    proc: subprocess.Popen | None = None
    try:
        for _attempt in range(3):
            ports = (free_port(), free_port())
            conf = nginx_prefix(root, upstreams, listen=ports)
            log = root / "nginx.out"
            with open(log, "ab") as out:
                proc = subprocess.Popen([binary, "-p", str(root), "-c", str(conf), "-e", str(root / "error.log")],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + startup_timeout
            while not port_open(ports[1]) and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            if proc.poll() is None and port_open(ports[1]):
                break
            _stop(proc, signal.SIGQUIT)
            if "Address already in use" not in _log_tail(root / "error.log"):
                raise ServerStartError(f"nginx did not start:\n{_log_tail(root / 'error.log')}")
        else:
            raise ServerStartError(f"nginx could not bind free ports:\n{_log_tail(root / 'error.log')}")
        url = ServerURL(f"https://{HOST}:{ports[1]}")
        url.pid, url.port, url.log_path = proc.pid, ports[1], root / "access.log"
        url.ca_path = root / "greenbridge" / "tls" / "fullchain.pem"
        yield url
    finally:
        if proc is not None:
            _stop(proc, signal.SIGQUIT, timeout=10)
        if directory is not None:  # kept for a person reading a failure
            for name in ("error.log", "access.log"):
                with contextlib.suppress(OSError):
                    shutil.copy(root / name, Path(directory) / f"nginx-{name}")
        shutil.rmtree(root, ignore_errors=True)
