"""The real-server helpers in tests/servers.py work for real: PostgreSQL, uvicorn and headless Chromium."""

from __future__ import annotations

import os
import time
from decimal import Decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from conftest import REPO
from servers import ServerStartError, free_port, port_open, uvicorn_server

TESTS = REPO / "tests"
HELLO = "apps.hello:create_app"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_free_port_is_bindable_on_loopback():
    port = free_port()
    assert 1024 <= port <= 65535
    assert not port_open(port)


def test_postgres_numeric_round_trip_is_exact(postgres_url):
    assert postgres_url.startswith("postgresql+psycopg://greenbridge@127.0.0.1:")
    assert postgres_url.endswith("/greenbridge_test")
    engine = sa.create_engine(postgres_url)
    values = [Decimal("12345678901234.1234567890"), Decimal("0.1"), Decimal("-0.0000000001")]
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE readings (id serial PRIMARY KEY, kwh NUMERIC(30, 10) NOT NULL)"))
            conn.execute(sa.text("INSERT INTO readings (kwh) VALUES (:kwh)"), [{"kwh": v} for v in values])
        with engine.connect() as conn:
            got = conn.execute(sa.text("SELECT kwh FROM readings ORDER BY id")).scalars().all()
            total = conn.execute(sa.text("SELECT sum(kwh) FROM readings")).scalar_one()
            settings = dict(
                conn.execute(
                    sa.text(
                        "SELECT name, setting FROM pg_settings"
                        " WHERE name IN ('listen_addresses', 'fsync', 'server_encoding')"
                    )
                ).all()
            )
        assert all(type(v) is Decimal for v in got)
        assert [v.normalize() for v in got] == [v.normalize() for v in values]
        assert total == sum(values)  # 0.1 stays 0.1: no float anywhere
        assert settings == {"listen_addresses": "127.0.0.1", "fsync": "off", "server_encoding": "UTF8"}
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE IF EXISTS readings"))
        engine.dispose()


def test_database_url_gives_an_empty_working_database(database_url, request):
    backend = request.node.callspec.params["database_url"]
    engine = sa.create_engine(database_url)
    meta = sa.MetaData()
    table = sa.Table(
        "usage_points",
        meta,
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
    )
    try:
        assert engine.dialect.name == backend
        assert sa.inspect(engine).get_table_names() == []
        meta.create_all(engine)
        with engine.begin() as conn:
            conn.execute(table.insert(), [{"name": "meter-1"}, {"name": "compteur-2 ✓"}])
        with engine.connect() as conn:
            assert conn.execute(sa.select(table.c.name).order_by(table.c.id)).scalars().all() == [
                "meter-1",
                "compteur-2 ✓",
            ]
    finally:
        engine.dispose()
    if backend == "postgresql":
        assert sa.engine.make_url(database_url).database.startswith("gb_test_")


def test_postgres_database_is_dropped_after_use(postgres_url):
    from servers import create_database, drop_database

    url = create_database(postgres_url)
    engine = sa.create_engine(postgres_url)
    name = sa.engine.make_url(url).database
    held = sa.create_engine(url).connect()  # a connection left open does not block the drop
    try:
        drop_database(url)
        with engine.connect() as conn:
            left = conn.execute(sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}).scalar()
        assert left == 0
    finally:
        held.invalidate()
        engine.dispose()


def test_uvicorn_server_serves_and_stops():
    import httpx2

    with uvicorn_server(HELLO, app_dir=TESTS, env={"GREENBRIDGE_HELLO_NAME": "meter"}, health_path="/healthz") as url:
        assert url.startswith("http://127.0.0.1:")
        response = httpx2.get(f"{url}/", timeout=5)
        assert response.status_code == 200
        assert "Hello, meter!" in response.text
        assert f"pid {url.pid}" in response.text  # served by the child we started, not in-process
        assert url.log_path.is_file()
        pid, port, log_path = url.pid, url.port, url.log_path
    assert not _pid_alive(pid)
    assert not port_open(port)
    assert not log_path.exists()  # its temporary log is removed too


def test_uvicorn_server_accepts_a_callable_and_keeps_an_explicit_log(tmp_path):
    from apps.hello import create_app

    log = tmp_path / "uvicorn.log"
    with uvicorn_server(create_app, log_path=log) as url:
        assert url.log_path == log
    assert "Application startup complete" in log.read_text()


def test_uvicorn_startup_failure_shows_the_log_tail():
    started = time.monotonic()
    with pytest.raises(ServerStartError) as info, uvicorn_server("apps.hello:no_such_factory", app_dir=TESTS):
        pass
    message = str(info.value)
    assert "process exited" in message
    assert "no_such_factory" in message  # uvicorn's own error, from the log's tail
    assert time.monotonic() - started < 20


def test_chromium_renders_a_page_from_uvicorn(browser, artifacts_dir: Path):
    with uvicorn_server(HELLO, app_dir=TESTS, env={"GREENBRIDGE_HELLO_NAME": "Chromium"}) as url:
        context = browser.new_context(viewport={"width": 800, "height": 400})
        try:
            page = context.new_page()
            page.goto(url + "/")
            assert page.title() == "greenbridge hello"
            assert page.inner_text("#greeting") == "Hello, Chromium!"
            shot = artifacts_dir / "test_servers_hello.png"
            shot.unlink(missing_ok=True)
            page.screenshot(path=str(shot))
        finally:
            context.close()
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000


def test_asyncio_run_still_works_in_tests_collected_after_a_browser_test():
    """conftest runs browser tests last: an open sync Playwright marks a loop as running in this thread."""
    import asyncio

    assert asyncio.run(asyncio.sleep(0, result="ok")) == "ok"
