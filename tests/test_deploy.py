"""The deployment in deploy/ (issue 14 item 5), checked by the tools that will read it: the compose file parses and
names every service, each greenbridge command in it and in the systemd units parses with greenbridge's own command
line, the units pass ``systemd-analyze verify``, the nginx snippet passes ``nginx -t``, the Redis snippet runs a real
redis-server with AOF and ``noeviction``, the sshd snippet passes ``sshd -t`` and gives the SFTP account what it
says, and the environment and configuration examples load. Also: the store's upgrade on PostgreSQL is safe when
several processes start at once (``greenbridge migrate`` from four processes)."""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import REPO, require_servers
from servers import ServerUnavailable, _can_write, create_database, nginx_binary, nginx_prefix, nginx_test

from bridge.config import load_config
from greenbridge.cli import build_parser
from greenbridge.commands.worker import QUEUE_NAMES

DEPLOY = REPO / "deploy"
UNITS = ("greenbridge-gateway.service", "greenbridge-worker@.service", "greenbridge-beat.service")
GREENBRIDGE_SERVICES = {"migrate", "gateway-1", "gateway-2", "worker-http", "worker-sftp", "worker-translate",
                        "worker-notify", "beat"}
SERVICES = GREENBRIDGE_SERVICES | {"nginx", "redis", "postgres", "flower"}


def _missing(what: str) -> None:
    if require_servers():
        pytest.fail(f"{what} (GREENBRIDGE_REQUIRE_SERVERS is set)", pytrace=False)
    pytest.skip(what)


def _parses(argv: list[str]) -> None:
    """``greenbridge ARGV`` is a command line greenbridge accepts (argparse exits on an unknown flag or value)."""
    args = build_parser().parse_args(argv)
    assert callable(args.run)


# ------------------------------------------------------------------------------------------------------ compose
@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def test_compose_file_parses_and_names_every_service(compose):
    services = compose["services"]
    assert set(services) == SERVICES
    for name in GREENBRIDGE_SERVICES:
        service = services[name]
        assert service["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}, name
        assert service["env_file"] == "greenbridge.env", name
        _parses(service["command"])
    assert (DEPLOY / "Dockerfile").is_file() and (DEPLOY / "greenbridge.env.example").is_file()
    # one worker service per queue, consuming that queue alone, and exactly one beat
    workers = {name: services[name]["command"] for name in services if name.startswith("worker-")}
    assert {command[command.index("--queues") + 1] for command in workers.values()} == set(QUEUE_NAMES)
    assert {name.removeprefix("worker-") for name in workers} == set(QUEUE_NAMES)
    assert [name for name in services if services[name].get("command", [None])[0] == "beat"] == ["beat"]
    # two gateways behind nginx, each healthy only when /healthz answers; the nginx upstreams name both
    for gateway in ("gateway-1", "gateway-2"):
        assert services[gateway]["command"][0] == "serve" and "--proxy-headers" in services[gateway]["command"]
        assert "/healthz" in " ".join(services[gateway]["healthcheck"]["test"])
        assert services["nginx"]["depends_on"][gateway] == {"condition": "service_healthy"}
    upstreams = (DEPLOY / "nginx" / "upstreams-compose.conf").read_text()
    assert re.findall(r"^server (\S+):8080\b", upstreams, flags=re.M) == ["gateway-1", "gateway-2"]
    # every file a service mounts from deploy/ exists (deploy/tls/ and greenbridge.toml are the operator's)
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./") and source not in ("./tls", "./greenbridge.toml"):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}"
    nginx_mounts = {v.split(":")[1] for v in services["nginx"]["volumes"]}
    assert {"/etc/nginx/conf.d/greenbridge.conf", "/etc/nginx/greenbridge/upstreams.conf",
            "/etc/nginx/greenbridge/tls"} <= nginx_mounts
    # Redis runs the snippet (AOF, noeviction) with a password; PostgreSQL and Redis are on the internal network only
    redis = services["redis"]
    assert redis["command"][:2] == ["redis-server", "/usr/local/etc/redis/greenbridge.conf"]
    assert "--requirepass" in redis["command"]
    assert "./redis/greenbridge.conf:/usr/local/etc/redis/greenbridge.conf:ro" in redis["volumes"]
    assert compose["networks"]["backend"]["internal"] is True
    assert services["redis"]["networks"] == services["postgres"]["networks"] == ["backend"]
    # Flower only on request (a profile), on loopback, behind a password
    assert services["flower"]["profiles"] == ["flower"]
    assert all(port.startswith("127.0.0.1:") for port in services["flower"]["ports"])
    assert "FLOWER_BASIC_AUTH" in services["flower"]["environment"]
    # the store is migrated once before the gateways and workers start
    assert services["migrate"]["command"] == ["migrate"]
    for name in GREENBRIDGE_SERVICES - {"migrate"}:
        assert services[name]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}, name
    declared = set(compose["volumes"])
    used = {v.split(":")[0] for s in services.values() for v in s.get("volumes", []) if not v.startswith(".")}
    assert used <= declared


# ------------------------------------------------------------------------------------------------------ systemd
def _unit(name: str) -> dict[str, dict[str, list[str]]]:
    """A unit file as systemd reads it: section → key → every value (keys such as EnvironmentFile repeat)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current = None
    for number, line in enumerate((DEPLOY / "systemd" / name).read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            assert line.endswith("]"), f"{name}:{number}: {line}"
            current = sections.setdefault(line[1:-1], {})
            continue
        key, equals, value = line.partition("=")
        assert equals and current is not None, f"{name}:{number}: not KEY=VALUE in a section: {line}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def test_systemd_units_parse_and_run_greenbridge_commands():
    for name in UNITS:
        unit = _unit(name)
        assert {"Unit", "Service", "Install"} <= set(unit), name
        service = unit["Service"]
        assert service["User"] == ["greenbridge"]
        assert service["EnvironmentFile"][0] == "/etc/greenbridge/greenbridge.env"
        assert service["StateDirectory"] == ["greenbridge"] and service["UMask"] == ["0077"]
        (exec_start,) = service["ExecStart"]
        argv = shlex.split(exec_start.replace("%i", "http").replace("%H", "host").replace("${CONCURRENCY}", "4"))
        assert argv[0] == "/opt/greenbridge/.venv/bin/greenbridge"
        _parses(argv[1:])
        assert unit["Install"]["WantedBy"] == ["multi-user.target"]
    worker = _unit("greenbridge-worker@.service")["Service"]
    assert "--queues %i" in worker["ExecStart"][0] and worker["KillMode"] == ["mixed"]
    assert worker["EnvironmentFile"][1] == "-/etc/greenbridge/worker-%i.env"  # optional, per queue


def test_systemd_units_pass_systemd_analyze_verify(tmp_path):
    """``systemd-analyze verify`` against a root holding the system's own units, ours in etc/systemd/system and
    the installed path of the greenbridge command (verify checks that ExecStart is executable)."""
    analyze = shutil.which("systemd-analyze")
    system_units = Path("/usr/lib/systemd/system")
    if analyze is None or not (system_units / "sysinit.target").exists():
        pytest.skip("systemd-analyze or the system's units are not installed (the parse check above still runs)")
    root = tmp_path / "root"
    shutil.copytree(system_units, root / "usr/lib/systemd/system", symlinks=True)
    units = root / "etc/systemd/system"
    units.mkdir(parents=True)
    for name in UNITS:
        shutil.copy(DEPLOY / "systemd" / name, units / name)
    command = root / "opt/greenbridge/.venv/bin/greenbridge"
    command.parent.mkdir(parents=True)
    command.write_text("#!/bin/sh\n")
    command.chmod(0o755)
    names = ["greenbridge-gateway.service", "greenbridge-beat.service",
             *(f"greenbridge-worker@{queue}.service" for queue in QUEUE_NAMES)]
    result = subprocess.run([analyze, "verify", f"--root={root}", *names], capture_output=True, text=True,
                            timeout=120)
    ours = [line for line in result.stderr.splitlines() if "greenbridge" in line]
    assert result.returncode == 0 and not ours, result.stderr

    broken = (DEPLOY / "systemd" / "greenbridge-beat.service").read_text().replace("Restart=on-failure",
                                                                                  "Restart=sometimes")
    (units / "greenbridge-beat.service").write_text(broken)
    result = subprocess.run([analyze, "verify", f"--root={root}", "greenbridge-beat.service"], capture_output=True,
                            text=True, timeout=120)
    assert "greenbridge-beat.service:15: Failed to parse service restart" in result.stderr  # it reads our units


# ------------------------------------------------------------------------------------------------------ nginx
def test_nginx_snippet_passes_nginx_t(tmp_path):
    try:
        nginx_binary()
    except ServerUnavailable as missing:
        _missing(str(missing))
    conf = nginx_prefix(tmp_path / "nginx", ["127.0.0.1:8080", "127.0.0.1:8081"])
    result = nginx_test(conf)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr and "test is successful" in result.stderr
    assert "[warn]" not in result.stderr, result.stderr
    # the check reads the snippet: a broken directive fails it
    broken = nginx_prefix(tmp_path / "broken", ["127.0.0.1:8080"],
                          snippet=(DEPLOY / "nginx" / "greenbridge.conf").read_text().replace(
                              "proxy_next_upstream_tries 2;", "proxy_next_upstream_tries two;"))
    assert nginx_test(broken).returncode != 0


# ------------------------------------------------------------------------------------------------------ Redis
def test_redis_snippet_runs_a_redis_with_aof_and_noeviction(tmp_path):
    import redis

    binary = shutil.which("redis-server")
    if binary is None:
        _missing("redis-server is not installed (Debian package redis-server)")
    socket_path = tmp_path / "redis.sock"
    if len(str(socket_path)) > 100:
        pytest.skip("temporary path too long for a unix socket")
    # the snippet as given, then only where this test's server listens and keeps its files
    cmd = [binary, str(DEPLOY / "redis" / "greenbridge.conf"), "--port", "0", "--unixsocket", str(socket_path),
           "--unixsocketperm", "700", "--dir", str(tmp_path), "--daemonize", "no"]
    with open(tmp_path / "redis.log", "ab") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(unix_socket_path=str(socket_path), socket_timeout=5)
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert proc.poll() is None, (tmp_path / "redis.log").read_text()
                assert time.monotonic() < deadline, "redis-server did not answer"
                time.sleep(0.05)
        config = client.config_get("*")
        assert config["appendonly"] == "yes" and config["appendfsync"] == "everysec"
        assert config["maxmemory-policy"] == "noeviction" and int(config["maxmemory"]) == 2 * 1024 ** 3
        client.lpush("http", "job")
        client.execute_command("BGREWRITEAOF")
        deadline = time.monotonic() + 20
        aof = tmp_path / config.get("appenddirname", "appendonlydir")
        while not any(aof.glob("greenbridge.aof*")):
            assert time.monotonic() < deadline, list(tmp_path.iterdir())
            time.sleep(0.1)
        client.close()
    finally:
        proc.terminate()
        proc.wait(30)


# ------------------------------------------------------------------------------------------------------ sshd
def test_sshd_snippet_passes_sshd_t_and_confines_the_account(tmp_path):
    sshd = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.access(sshd, os.X_OK):
        _missing("sshd is not installed (Debian package openssh-server)")
    run_as: list[str] = []
    directory = tmp_path
    if os.geteuid() == 0:  # as root sshd -t wants /run/sshd; as nobody it checks the same without it
        run_as = [shutil.which("setpriv") or "/usr/bin/setpriv", "--reuid=nobody", "--regid=nogroup",
                  "--clear-groups"]
        if not _can_write(pwd.getpwnam("nobody"), tmp_path):
            directory = Path(subprocess.check_output(["mktemp", "-d", "/tmp/gb-sshd-t-XXXXXX"], text=True).strip())
    try:
        key = directory / "host_ed25519"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
        config = directory / "sshd_config"
        config.write_text(f"HostKey {key}\nPidFile none\nSubsystem sftp internal-sftp\n"
                          f"Include {DEPLOY / 'sshd' / 'greenbridge-sftp.conf'}\n")
        if os.geteuid() == 0:
            for path in (directory, key, config):
                os.chown(path, pwd.getpwnam("nobody").pw_uid, -1)
        checked = subprocess.run([*run_as, sshd, "-t", "-f", str(config)], capture_output=True, text=True)
        assert checked.returncode == 0, checked.stderr
        effective = subprocess.run([*run_as, sshd, "-T", "-f", str(config), "-C",
                                    "user=greenbridge-bulk,host=worker.internal,addr=192.0.2.10"],
                                   capture_output=True, text=True)
        assert effective.returncode == 0, effective.stderr
        settings = dict(line.split(" ", 1) for line in effective.stdout.splitlines() if " " in line)
        assert settings["forcecommand"] == "internal-sftp -R"
        assert settings["chrootdirectory"] == "/srv/greenbridge-bulk"
        assert settings["authenticationmethods"] == "publickey"
        assert settings["passwordauthentication"] == "no" and settings["allowtcpforwarding"] == "no"
        assert settings["permittty"] == "no" and settings["x11forwarding"] == "no"
        other = subprocess.run([*run_as, sshd, "-T", "-f", str(config), "-C", "user=alice,host=h,addr=192.0.2.11"],
                               capture_output=True, text=True)
        assert dict(line.split(" ", 1) for line in other.stdout.splitlines() if " " in line).get(
            "forcecommand", "none") == "none"  # other accounts are not confined by it
    finally:
        if directory != tmp_path:
            shutil.rmtree(directory, ignore_errors=True)


# ------------------------------------------------------------------------------------------------------ examples
def _env_example() -> dict[str, str]:
    values = {}
    for line in (DEPLOY / "greenbridge.env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


def test_environment_and_configuration_examples_load(tmp_path):
    from bridge.config import _ENV

    env = _env_example()
    assert set(env) - {"GREENBRIDGE_CONFIG"} <= set(_ENV), set(env) - set(_ENV)
    assert {"GREENBRIDGE_ISSUER", "GREENBRIDGE_DATABASE_URL", "GREENBRIDGE_REDIS_URL", "GREENBRIDGE_SECRET_KEY"} <= \
        set(env)
    env["GREENBRIDGE_DATA_DIR"] = str(tmp_path / "var")
    config = load_config(DEPLOY / "greenbridge.example.toml", env)
    assert config.issuer == env["GREENBRIDGE_ISSUER"] and config.redis_url == env["GREENBRIDGE_REDIS_URL"]
    assert config.database_url.startswith("postgresql+psycopg://") and config.timezone == "America/New_York"
    assert config.secret_key == "CHANGE-ME"  # a placeholder the operator replaces: never a working default


# ------------------------------------------------------------------------------------------------------ migrations
def _greenbridge(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "greenbridge", *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_migrate_command_checks_and_upgrades(tmp_path):
    env = {**os.environ, "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_SECRET_KEY": "k"}
    check = _greenbridge("migrate", "--check", env=env)
    out, _ = check.communicate(timeout=120)
    assert check.returncode == 1 and "an empty schema" in out
    run = _greenbridge("migrate", env=env)
    out, err = run.communicate(timeout=120)
    assert run.returncode == 0, err
    assert "migrated from an empty schema" in out
    again = _greenbridge("migrate", "--check", env=env)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 0, out


def test_processes_starting_together_migrate_postgresql_once(postgres_url):
    """Four ``greenbridge migrate`` at once on an empty PostgreSQL database (what a deployment's gateways and
    workers do when they start together): the advisory lock lets one migrate while the others wait, so all
    succeed and the schema is at head."""
    url = create_database(postgres_url)
    env = {**os.environ, "GREENBRIDGE_DATABASE_URL": url, "GREENBRIDGE_SECRET_KEY": "k",
           "GREENBRIDGE_DATA_DIR": "/nonexistent-not-used"}
    runs = [_greenbridge("migrate", env=env) for _ in range(4)]
    results = [(run.wait(180), *run.communicate()) for run in runs]
    assert all(status == 0 for status, _, _ in results), results
    assert sum("migrated from an empty schema" in out for _, out, _ in results) == 1, results
    check = _greenbridge("migrate", "--check", env=env)
    assert check.wait(120) == 0
    check.communicate()
