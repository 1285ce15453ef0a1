"""Progress of long command-line work (issue 14 item 7): ``ingest``, ``validate`` and ``translate`` show bytes with
their rate and an ETA, and a count beside them (readings, files), on a terminal; ``custodian import-authorizations``
counts authorizations. Piped, they print exactly what they printed before: no bar, no carriage return.

Each command runs as a real subprocess whose standard error is a pseudo-terminal (what a person at a shell has) or
a pipe (what a script has)."""

from __future__ import annotations

import fcntl
import io
import os
import re
import select
import struct
import subprocess
import sys
import termios
from pathlib import Path

import pytest
from conftest import REPO
from servers import uvicorn_server
from test_custodian_client import sandbox_env
from test_custodian_wiring import _customer_authorizations, custodian_toml
from tqdm import tqdm

from espi.generate import FeedSpec, write_feed

format_sizeof = tqdm.format_sizeof
ETA = re.compile(r"<\d\d:\d\d")  # tqdm's "[elapsed<remaining, rate]"


def _feed(directory: Path, name: str, **spec) -> Path:
    buffer = io.StringIO()
    write_feed(buffer, FeedSpec(**({"usage_points": 2, "days": 20} | spec)))
    path = directory / name
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_ISSUER": "http://localhost",
            "GREENBRIDGE_SECRET_KEY": "progress-" + tmp_path.name, "COLUMNS": "160",
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}


def on_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
    """Run ``greenbridge ARGS`` with standard error on a pseudo-terminal (160 columns) and standard output on a
    pipe; returns (exit status, what the terminal showed, standard output)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 160, 0, 0))
    proc = subprocess.Popen([sys.executable, "-m", "greenbridge", *args], cwd=REPO, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    shown = bytearray()
    stdout = bytearray()
    streams = {master: shown, proc.stdout.fileno(): stdout}
    try:
        while streams:
            ready, _, _ = select.select(list(streams), [], [], timeout)
            assert ready, f"greenbridge {args[0]} printed nothing for {timeout} s"
            for fd in ready:
                try:
                    chunk = os.read(fd, 65536)
                except OSError:  # EIO: the terminal's last writer is gone
                    chunk = b""
                if chunk:
                    streams[fd] += chunk
                else:
                    del streams[fd]
        status = proc.wait(timeout)
    finally:
        os.close(master)
        proc.stdout.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return status, shown.decode(errors="replace"), stdout.decode()


def piped(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "greenbridge", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_ingest_shows_bytes_eta_and_readings_on_a_terminal_only(tmp_path):
    files = [str(_feed(tmp_path, f"feed-{i}.xml")) for i in range(3)]
    total = sum(os.path.getsize(f) for f in files)
    status, shown, _ = on_terminal(["ingest", *files, "--customer", "c-1"], _env(tmp_path))
    assert status == 0, shown
    bars = [line for line in re.split(r"[\r\n]", shown) if line.startswith("ingest:")]
    assert bars, shown
    assert any(f"/{format_sizeof(total, divisor=1024)}" in line for line in bars), bars  # the bytes of all files
    assert any(ETA.search(line) for line in bars), bars  # an ETA once the first file is done
    assert any(re.search(r"[\d,]+ readings, 1 files", line) for line in bars), bars
    for path in files:  # the per-file summaries are printed above the bar, whole
        assert re.search(rf"{re.escape(path)}: \d+ readings; ", shown), shown

    quiet = piped(["ingest", *files, "--customer", "c-2"], _env(tmp_path))
    assert quiet.returncode == 0, quiet.stderr
    assert "\r" not in quiet.stderr and "ingest:" not in quiet.stderr
    assert [line.split(":")[0] for line in quiet.stderr.splitlines()] == files


def test_validate_shows_progress_on_a_terminal_only(tmp_path):
    files = [str(_feed(tmp_path, f"feed-{i}.xml", days=5)) for i in range(2)]
    broken = tmp_path / "broken.xml"
    broken.write_text("<feed xmlns='http://www.w3.org/2005/Atom'><entry><bogus/></entry></feed>")
    status, shown, stdout = on_terminal(["validate", *files, str(broken)], _env(tmp_path))
    assert status == 1, shown
    bars = [line for line in re.split(r"[\r\n]", shown) if line.startswith("validate:")]
    assert bars and any("files" in line for line in bars), shown
    assert any(ETA.search(line) for line in bars), bars
    assert str(broken) in stdout  # problems still go to standard output, one per line
    assert all(f"{path}: valid" in shown for path in files), shown

    quiet = piped(["validate", *files, str(broken)], _env(tmp_path))
    assert quiet.returncode == 1
    assert "\r" not in quiet.stderr and "validate:" not in quiet.stderr
    assert [line.split(":")[0] for line in quiet.stderr.splitlines()] == [*files, str(broken)]
    assert quiet.stdout == stdout  # what scripts read is the same with or without a terminal


def test_translate_shows_bytes_and_eta_on_a_terminal_only(tmp_path):
    path = _feed(tmp_path, "feed.xml", days=60)
    status, shown, stdout = on_terminal(["translate", str(path)], _env(tmp_path))
    assert status == 0, shown
    assert '"usage_segments"' in stdout
    bars = [line for line in re.split(r"[\r\n]", shown) if line.startswith("translate:")]
    assert bars and any("B/s" in line or "B [" in line for line in bars), shown
    quiet = piped(["translate", str(path), "-o", str(tmp_path / "out.json")], _env(tmp_path))
    assert quiet.returncode == 0 and "\r" not in quiet.stderr and "translate:" not in quiet.stderr


@pytest.fixture(scope="module")
def sandbox():
    with uvicorn_server("sandbox.app:create_sandbox_app", env=sandbox_env(), app_dir=REPO,
                        health_path="/healthz") as url:
        yield str(url)


def test_import_authorizations_counts_authorizations_on_a_terminal_only(sandbox, tmp_path):
    from gateway_helpers import gateway_client, make_config, register

    _customer_authorizations(sandbox, tmp_path, count=2)
    config = make_config(tmp_path, extra_toml=custodian_toml(sandbox))
    with gateway_client(config) as client:
        client_id = register(client, "cds_client_admin cds_usage_sandbox").client_for("cds_usage_sandbox")["client_id"]
    args = ["custodian", "import-authorizations", "sandbox", "--client", client_id,
            "--config", str(tmp_path / "greenbridge.toml")]
    env = _env(tmp_path) | {"GREENBRIDGE_SECRET_KEY": "test-secret-key-" + tmp_path.name}
    status, shown, stdout = on_terminal(args, env)
    assert status == 0, shown
    bars = [line for line in re.split(r"[\r\n]", shown) if line.startswith("import:")]
    assert any(re.search(r"\d+/\d+ \[", line) and "authorization" in line for line in bars), shown
    assert any("created" in line for line in bars), bars
    assert stdout.count("created\t") >= 2

    again = piped(args, env)  # a second run creates nothing; piped, no bar
    assert again.returncode == 0 and "\r" not in again.stderr and "import:" not in again.stderr
    assert again.stderr.startswith("0 created"), again.stderr
