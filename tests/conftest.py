"""Shared test helpers.

The public Green Button samples live in ../shared/espi/samples (mixed licences: read in place, never copied into
the repository). Tests that need them use the ``sample`` fixture and are skipped cleanly when they are absent.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path

import pytest
from hypothesis import settings
from servers import (
    ServerUnavailable,
    chromium_browser,
    create_database,
    drop_database,
    postgres_cluster,
    redis_server,
)

REPO = Path(__file__).resolve().parent.parent

# The test command (tests/run.sh, CI) runs property tests with a fixed seed so a submission's verdict does not
# depend on luck; running pytest directly keeps Hypothesis exploring new examples.
settings.register_profile("repeatable", derandomize=True, print_blob=True)
if os.environ.get("GREENBRIDGE_HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["GREENBRIDGE_HYPOTHESIS_PROFILE"])
SAMPLES_DIR = Path(os.environ.get("GREENBRIDGE_SAMPLES", REPO.parent / "shared" / "espi" / "samples"))
FIXTURES = Path(__file__).resolve().parent / "fixtures"
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"  # screenshots and the like (git-ignored)


def sample_files() -> list[Path]:
    """Every XML sample, sorted; empty when the shared samples are not beside the checkout."""
    if not SAMPLES_DIR.is_dir():
        return []
    return sorted(SAMPLES_DIR.glob("*.xml"))


@pytest.fixture
def sample():
    """``sample("cmdtest_Gas.xml")`` → Path, or skips the test when the shared samples are absent."""

    def locate(name: str) -> Path:
        path = SAMPLES_DIR / name
        if not path.is_file():
            pytest.skip(f"shared sample {name} not available ({SAMPLES_DIR})")
        return path

    return locate


# ---------------------------------------------------------------------------------------------- real servers
# PostgreSQL, Redis and Chromium come from Debian packages (deploy/setup.sh, `gb_setup test`). Where they are genuinely
# absent, tests that need them are skipped, unless GREENBRIDGE_REQUIRE_SERVERS is set (tests/run.sh, CI sets it),
# in which case a missing server fails the test. Any other start-up problem is always an error.


def require_servers() -> bool:
    return os.environ.get("GREENBRIDGE_REQUIRE_SERVERS", "").strip().lower() not in ("", "0", "false", "no")


def _enter_server(stack: contextlib.ExitStack, start):
    """``stack.enter_context(start())``; a missing Debian package skips the test, or fails it in CI."""
    try:
        return stack.enter_context(start())
    except ServerUnavailable as exc:
        missing = exc  # skip/fail outside the except block, so the report is just the message
    if require_servers():
        pytest.fail(f"{missing} (GREENBRIDGE_REQUIRE_SERVERS is set)", pytrace=False)
    pytest.skip(str(missing))


LOAD_REPORT = pytest.StashKey[list]()


@pytest.fixture
def load_report(request):
    """``load_report(lines)`` adds lines to the "load suite" section of the session's terminal summary: figures the
    load suite (tests/test_load.py) prints in every run instead of asserting on them."""
    return request.config.stash.setdefault(LOAD_REPORT, []).extend


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    lines = config.stash.get(LOAD_REPORT, None)
    if lines:
        terminalreporter.section("load suite")
        for line in lines:
            terminalreporter.write_line(line)


def pytest_configure(config):
    config.addinivalue_line("markers", "postgresql: needs a real PostgreSQL server (postgres_url, database_url)")
    config.addinivalue_line("markers", "browser: needs Debian's chromium through Playwright (browser fixture)")
    config.addinivalue_line("markers", "redis: needs Debian's redis-server (redis_url fixture)")


def pytest_collection_modifyitems(config, items):
    """Mark tests by the servers they use, so that `-m "not browser"` or `-m "not postgresql"` deselects them, and
    run the browser tests last: while Playwright's sync API is open (the session-scoped ``browser``), it marks an
    event loop as running in the main thread, so ``asyncio.run()`` in any later test would fail."""
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("database_url") if callspec else None
        if "postgres_url" in names or backend == "postgresql":
            item.add_marker(pytest.mark.postgresql)
        if "browser" in names:
            item.add_marker(pytest.mark.browser)
        if "redis_url" in names:
            item.add_marker(pytest.mark.redis)
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)  # stable: order kept otherwise


@pytest.fixture(scope="session")
def postgres_url(tmp_path_factory):
    """One throwaway PostgreSQL cluster per test session: ``postgresql+psycopg://greenbridge@127.0.0.1:N/...``."""
    with contextlib.ExitStack() as stack:
        yield _enter_server(stack, lambda: postgres_cluster(tmp_path_factory.mktemp("postgres")))


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory):
    """One private redis-server per test session (unix socket, no persistence): ``redis+socket:///…/redis.sock``.
    Tests sharing it use their own queues' messages only while they run; flush it if a test needs it empty."""
    with contextlib.ExitStack() as stack:
        yield _enter_server(stack, lambda: redis_server(tmp_path_factory.mktemp("redis")))


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A SQLAlchemy URL to an empty database: a SQLite file in tmp_path, or a fresh database in the session's
    PostgreSQL cluster (dropped after the test)."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path}/greenbridge.db"
        return
    server = request.getfixturevalue("postgres_url")
    url = create_database(server, f"gb_test_{uuid.uuid4().hex[:12]}")
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def browser():
    """A Playwright Browser on Debian's headless chromium, shared by the session; open your own context/page."""
    with contextlib.ExitStack() as stack:
        yield _enter_server(stack, chromium_browser)


@pytest.fixture
def artifacts_dir() -> Path:
    """tests/artifacts/: where tests leave screenshots and logs for a person to look at (git-ignored)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# ------------------------------------------------------------------------------------------------------ OpenSSH sshd


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """One OpenSSH sshd per test session serving SFTP on 127.0.0.1 (``servers.sshd_server``): an ``SshdServer`` with
    host, port, user, root, client_key_path, host_key_line and log_path. Tests put their own files under ``root``
    (``sshd.write_file``) in a directory of their own; the server object also works as espi.sftp settings."""
    from servers import sshd_server

    with contextlib.ExitStack() as stack:
        yield _enter_server(stack, lambda: sshd_server(tmp_path_factory.mktemp("sshd")))
