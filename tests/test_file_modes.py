"""Files only their owner can read (issue 13 item 7): the data directory and its secret key, the SQLite store with
its -wal and -shm, the translation's scratch file, bulk parts (and their temporary files), SFTP ``.part`` files
and the workers' download and bulk directories are 0700/0600 whatever the umask (espi.private_files,
cds.store.engine)."""

from __future__ import annotations

import contextlib
import os
import stat
import uuid
from pathlib import Path

import pytest
from gateway_helpers import make_config
from test_bulk import _sequential_bulk

from bridge.config import load_config
from bridge.from_espi.staging import BlockStaging
from cds.store.engine import make_engine
from cds.store.migrate import upgrade
from espi.bulk import split_bulk
from espi.sftp import download

UMASKS = [0o022, 0o000]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@contextlib.contextmanager
def umask(value: int):
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(params=UMASKS, ids=lambda m: f"umask-{m:03o}")
def permissive(request):
    with umask(request.param):
        yield request.param


def test_data_directory_and_secret_key(tmp_path, permissive):
    data_dir = tmp_path / "deep" / "var"
    load_config(None, {"GREENBRIDGE_DATA_DIR": str(data_dir)})  # no secret key: one is made in the data directory
    assert mode(data_dir) == mode(data_dir.parent) == 0o700
    assert mode(data_dir / "secret.key") == 0o600


def test_sqlite_store_and_its_wal_and_shm(tmp_path, permissive):
    database = tmp_path / "var" / "greenbridge.db"
    engine = make_engine(f"sqlite+pysqlite:///{database}")
    upgrade(engine)
    with engine.begin() as connection:  # a write: the -wal and -shm files exist while a connection is open
        connection.exec_driver_sql("CREATE TABLE probe (x)")
        files = sorted(p.name for p in database.parent.iterdir())
        assert files == ["greenbridge.db", "greenbridge.db-shm", "greenbridge.db-wal"]
        assert {name: mode(database.parent / name) for name in files} == dict.fromkeys(files, 0o600)
    assert mode(database.parent) == 0o700
    engine.dispose()


def test_an_existing_store_is_tightened(tmp_path, permissive):
    database = tmp_path / "greenbridge.db"
    database.touch()
    database.chmod(0o644)
    for suffix in ("-wal", "-shm"):
        Path(f"{database}{suffix}").touch()
        Path(f"{database}{suffix}").chmod(0o666)
    make_engine(f"sqlite+pysqlite:///{database}").dispose()
    assert [mode(Path(f"{database}{s}")) for s in ("", "-wal", "-shm")] == [0o600, 0o600, 0o600]


def test_translation_scratch_file(tmp_path, permissive):
    staging = BlockStaging(str(tmp_path))
    try:
        assert mode(Path(staging.path)) == 0o600
    finally:
        staging.close()


def test_bulk_parts_and_their_temporary_files(tmp_path, permissive):
    bulk = _sequential_bulk(tmp_path, days=1)
    parts_dir = tmp_path / "bulk" / "job-1"
    seen_while_writing: list[int] = []

    def on_part(part):  # later parts are still being written: their temporary files exist now
        seen_while_writing.extend(mode(p) for p in parts_dir.iterdir())

    split = split_bulk(bulk, parts_dir, on_part=on_part)
    assert len(split.parts) == 3 and seen_while_writing
    assert set(seen_while_writing) == {0o600}
    assert mode(parts_dir) == mode(parts_dir.parent) == 0o700
    assert {mode(path) for path in split.parts.values()} == {0o600}


def test_sftp_part_and_download(sshd, tmp_path, permissive):
    remote = str(sshd.write_file(f"{uuid.uuid4().hex}/bulk.xml", os.urandom(3 * 1024 * 1024)))
    dest = tmp_path / "downloads" / "sftp"
    modes: list[int] = []

    def on_chunk(_done: int) -> None:
        modes.extend(mode(p) for p in dest.iterdir() if p.suffix == ".part")

    result = download(sshd, remote, dest, on_chunk=on_chunk)
    assert modes and set(modes) == {0o600}
    assert mode(result.path) == 0o600 and mode(dest) == mode(dest.parent) == 0o700


def test_a_resumed_part_is_tightened(sshd, tmp_path, permissive):
    data = os.urandom(2 * 1024 * 1024)
    remote = str(sshd.write_file(f"{uuid.uuid4().hex}/bulk.xml", data))
    first: list[Path] = []

    class Killed(Exception):
        pass

    def stop(_done: int) -> None:
        first.extend(p for p in tmp_path.iterdir() if p.suffix == ".part")
        raise Killed  # killed mid-download: the .part stays

    with pytest.raises(Killed):
        download(sshd, remote, tmp_path, on_chunk=stop)
    (part,) = set(first)
    part.chmod(0o644)  # as an earlier version of the code left it
    modes: list[int] = []
    result = download(sshd, remote, tmp_path, on_chunk=lambda _done: modes.append(mode(part)))
    assert result.resumed_from > 0 and modes and set(modes) == {0o600}
    assert mode(result.path) == 0o600 and result.path.read_bytes() == data


def test_worker_download_and_bulk_directories(tmp_path, permissive):
    from workers.upstream import context

    config = make_config(tmp_path)
    downloads = context(config).downloads()
    assert downloads == Path(config.data_dir) / "downloads"
    assert mode(downloads) == mode(downloads.parent) == 0o700
