"""SFTP bulk download (ESPI FB_34, espi.md §7) against a real OpenSSH sshd started by the ``sshd`` fixture.

Covers the whole download path of espi.sftp: pinned host key, key-only authentication, resume from a ``.part``,
stale ``.part`` files of an older remote version, the atomic rename, and the transient/permanent error split a
retrying worker relies on. No test assumes a server is already running.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import os
import random
import socket
import subprocess
import threading
import uuid
from pathlib import Path

import paramiko
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from servers import HOST, free_port

from espi import sftp
from espi.errors import EspiError
from espi.sftp import (
    SftpAuthError,
    SftpError,
    SftpHostKeyError,
    SftpNotFound,
    SftpTransientError,
    download,
    fingerprint,
    parse_host_key,
    parse_sftp_uri,
)

MIB = 1024 * 1024


@dataclasses.dataclass
class Settings:
    host: str
    port: int
    user: str
    key_path: Path
    host_key: str


class Abort(Exception):
    """Raised from on_chunk: the download is killed half-way."""


def _settings(server, **changes) -> Settings:
    base = Settings(server.host, server.port, server.user, server.client_key_path, server.host_key_line)
    return dataclasses.replace(base, **changes)


def _payload(size: int, seed: int = 1) -> bytes:
    return random.Random(seed).randbytes(size)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _file_sha(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(MIB):
            digest.update(block)
    return digest.hexdigest()


def _put(server, data: bytes, name: str = "bulk.xml") -> str:
    """Write ``data`` in a directory of this test's own on the server; the absolute remote path."""
    return str(server.write_file(f"{uuid.uuid4().hex}/{name}", data))


def _part_for(server, remote: str, dest: Path) -> Path:
    st = os.stat(remote)
    return dest / sftp.part_name(server.host, server.port, remote, st.st_size, int(st.st_mtime))


def _ed25519_private() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def _public_line(private) -> str:
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode()


def _write_private(private, path: Path) -> Path:
    path.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                           serialization.NoEncryption()))  # fmt: skip
    path.chmod(0o600)
    return path


# ----------------------------------------------------------------------------------------------- whole downloads


def test_full_download_equals_the_remote_bytes(sshd, tmp_path):
    data = _payload(8 * MIB + 12345)  # not a multiple of the 1 MiB chunk
    remote = _put(sshd, data)
    seen: list[int] = []
    result = download(sshd, remote, tmp_path / "in", on_chunk=seen.append)
    assert result == sftp.Downloaded(path=tmp_path / "in" / "bulk.xml", size=len(data), resumed_from=0,
                                     remote_path=remote)  # fmt: skip
    assert _file_sha(result.path) == _sha(data)
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == ["bulk.xml"]  # no .part left behind
    assert seen == sorted(seen) and seen[-1] == len(data)
    assert all(b - a <= sftp.CHUNK for a, b in zip([0, *seen], seen, strict=False))


def test_settings_object_with_host_field_in_the_pinned_key_and_a_custom_name(sshd, tmp_path):
    data = _payload(300_000, seed=2)
    remote = _put(sshd, data, "SampleData.xml")
    pinned = f"[{sshd.host}]:{sshd.port} {sshd.host_key_line} custodian"
    result = download(_settings(sshd, host_key=pinned), remote, tmp_path, dest_name="bulk-42.xml")
    assert result.path == tmp_path / "bulk-42.xml"
    assert result.path.read_bytes() == data


def test_empty_remote_file(sshd, tmp_path):
    remote = _put(sshd, b"", "empty.xml")
    result = download(sshd, remote, tmp_path)
    assert (result.size, result.resumed_from) == (0, 0)
    assert result.path.read_bytes() == b""


def test_rsa_client_key(sshd, tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    sshd.authorize(_public_line(private))
    key = _write_private(private, tmp_path / "id_rsa")
    data = _payload(2 * MIB, seed=3)
    remote = _put(sshd, data)
    result = download(_settings(sshd, key_path=key), remote, tmp_path / "in")
    assert result.path.read_bytes() == data


def test_uri_with_home_relative_path_end_to_end(sshd, tmp_path):
    """``sftp://user@host:port/~/dir/file`` is relative to the login directory (here sshd's ``-d root``)."""
    data = _payload(100_000, seed=4)
    remote = Path(_put(sshd, data, "feed.xml"))
    relative = remote.relative_to(sshd.root).as_posix()
    where = parse_sftp_uri(f"sftp://{sshd.user}@{sshd.host}:{sshd.port}/~/{relative}")
    assert where.path == relative
    settings = _settings(sshd, host=where.host, port=where.port, user=where.user)
    assert download(settings, where.path, tmp_path).path.read_bytes() == data


# -------------------------------------------------------------------------------------------------------- resume


def test_resume_from_an_existing_part(sshd, tmp_path):
    data = _payload(6 * MIB + 777, seed=5)
    remote = _put(sshd, data)
    part = _part_for(sshd, remote, tmp_path)
    prefix = 2 * MIB + 100
    part.write_bytes(data[:prefix])
    seen: list[int] = []
    result = download(sshd, remote, tmp_path, on_chunk=seen.append)
    assert result.resumed_from == prefix
    assert prefix < seen[0] <= prefix + sftp.CHUNK  # continued from the .part: the prefix was not fetched again
    assert _file_sha(result.path) == _sha(data)
    assert not part.exists()


def test_part_of_an_older_remote_version_is_discarded(sshd, tmp_path):
    old = _payload(3 * MIB, seed=6)
    remote = _put(sshd, old)
    stale = _part_for(sshd, remote, tmp_path)
    stale.write_bytes(old[: MIB + 5])
    new = _payload(3 * MIB, seed=7)  # same size: only the mtime tells the versions apart
    Path(remote).write_bytes(new)
    st = os.stat(remote)
    os.utime(remote, (st.st_atime, st.st_mtime + 100))
    assert _part_for(sshd, remote, tmp_path) != stale
    result = download(sshd, remote, tmp_path)
    assert result.resumed_from == 0
    assert result.path.read_bytes() == new
    assert not stale.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["bulk.xml"]


def test_part_longer_than_the_remote_file_starts_over(sshd, tmp_path):
    data = _payload(MIB, seed=8)
    remote = _put(sshd, data)
    _part_for(sshd, remote, tmp_path).write_bytes(data + b"junk past the end")
    result = download(sshd, remote, tmp_path)
    assert result.resumed_from == 0
    assert result.path.read_bytes() == data


def test_complete_part_is_only_renamed(sshd, tmp_path):
    data = _payload(500_000, seed=9)
    remote = _put(sshd, data)
    _part_for(sshd, remote, tmp_path).write_bytes(data)
    seen: list[int] = []
    result = download(sshd, remote, tmp_path, on_chunk=seen.append)
    assert (result.resumed_from, seen) == (len(data), [])
    assert result.path.read_bytes() == data


def test_killed_mid_download_leaves_a_part_and_the_next_call_completes_it(sshd, tmp_path):
    data = _payload(7 * MIB + 3, seed=10)
    remote = _put(sshd, data)
    final = tmp_path / "bulk.xml"
    part = _part_for(sshd, remote, tmp_path)

    def watch(written: int) -> None:
        # the final name appears only by the atomic rename: never while the .part is incomplete
        assert not final.exists()
        assert part.stat().st_size == written

    def kill(written: int) -> None:
        watch(written)
        if written >= 3 * MIB:
            raise Abort

    with pytest.raises(Abort):
        download(sshd, remote, tmp_path, on_chunk=kill)
    assert not final.exists()
    kept = part.stat().st_size
    assert 3 * MIB <= kept < len(data)
    assert part.read_bytes() == data[:kept]

    result = download(sshd, remote, tmp_path, on_chunk=watch)
    assert result.resumed_from == kept
    assert _file_sha(final) == _sha(data)
    assert not part.exists()


def test_connection_lost_mid_download_is_transient_and_resumable(sshd, tmp_path):
    data = _payload(6 * MIB, seed=11)
    remote = _put(sshd, data)
    clients: list[paramiko.SSHClient] = []

    def connect(settings, timeout):
        client = sftp.open_client(settings, timeout)
        clients.append(client)
        return client

    def cut(written: int) -> None:
        if written >= 2 * MIB:
            clients[-1].get_transport().close()

    with pytest.raises(SftpTransientError):
        download(sshd, remote, tmp_path, on_chunk=cut, connect=connect, timeout=10)
    part = _part_for(sshd, remote, tmp_path)
    assert 2 * MIB <= part.stat().st_size < len(data)
    assert not (tmp_path / "bulk.xml").exists()

    result = download(sshd, remote, tmp_path, connect=connect)
    assert result.resumed_from >= 2 * MIB
    assert _file_sha(result.path) == _sha(data)


def test_a_part_locked_by_another_download_is_transient(sshd, tmp_path):
    data = _payload(100_000, seed=12)
    remote = _put(sshd, data)
    part = _part_for(sshd, remote, tmp_path)
    with open(part, "ab") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(SftpTransientError, match="another download"):
            download(sshd, remote, tmp_path)
    assert download(sshd, remote, tmp_path).path.read_bytes() == data


# --------------------------------------------------------------------------------------------- permanent errors


def test_wrong_pinned_host_key(sshd, tmp_path):
    remote = _put(sshd, b"<feed/>")
    wrong = _public_line(_ed25519_private())
    dest = tmp_path / "in"
    with pytest.raises(SftpHostKeyError) as caught:
        download(_settings(sshd, host_key=wrong), remote, dest)
    error = caught.value
    assert not isinstance(error, SftpTransientError) and isinstance(error, EspiError)
    message = str(error)
    assert f"{sshd.host}:{sshd.port}" in message
    assert fingerprint(wrong) in message and fingerprint(sshd.host_key_line) in message
    assert (error.expected, error.received) == (fingerprint(wrong), fingerprint(sshd.host_key_line))
    assert not dest.exists()  # nothing written, not even a .part


def test_pinned_key_of_another_type_is_a_host_key_error(sshd, tmp_path):
    other = _public_line(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    with pytest.raises(SftpHostKeyError):
        download(_settings(sshd, host_key=other), _put(sshd, b"x"), tmp_path / "in")
    assert not (tmp_path / "in").exists()


def test_unauthorized_client_key(sshd, tmp_path):
    key = _write_private(_ed25519_private(), tmp_path / "stranger")
    with pytest.raises(SftpAuthError) as caught:
        download(_settings(sshd, key_path=key), _put(sshd, b"x"), tmp_path / "in")
    assert not isinstance(caught.value, SftpTransientError)
    assert not (tmp_path / "in").exists()


@pytest.mark.parametrize("user", ["root", "gb-no-such-user"])
def test_wrong_user(sshd, tmp_path, user):
    if user == sshd.user:
        pytest.skip("the server's own user")
    with pytest.raises(SftpAuthError, match=f"as '{user}'"):
        download(_settings(sshd, user=user), _put(sshd, b"x"), tmp_path / "in")


@pytest.mark.parametrize("content", [None, b"not a key\n", b"-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n"])
def test_unusable_client_key_file(sshd, tmp_path, content):
    key = tmp_path / "key"
    if content is not None:
        key.write_bytes(content)
    with pytest.raises(SftpAuthError, match="client key"):
        download(_settings(sshd, key_path=key), "/whatever.xml", tmp_path / "in")


def test_missing_remote_file(sshd, tmp_path):
    missing = str(sshd.root / uuid.uuid4().hex / "gone.xml")
    with pytest.raises(SftpNotFound, match="no such file"):
        download(sshd, missing, tmp_path / "in")
    assert not (tmp_path / "in").exists()


def test_remote_directory_is_a_permanent_error(sshd, tmp_path):
    directory = Path(_put(sshd, b"x")).parent
    with pytest.raises(SftpError, match="not a regular file") as caught:
        download(sshd, str(directory), tmp_path / "in")
    assert not isinstance(caught.value, SftpTransientError)


# --------------------------------------------------------------------------------------------- transient errors


def test_connection_refused_is_transient(tmp_path):
    settings = Settings(HOST, free_port(), "nobody", tmp_path / "unused", _public_line(_ed25519_private()))
    _write_private(_ed25519_private(), settings.key_path)
    with pytest.raises(SftpTransientError, match="cannot connect"):
        download(settings, "/bulk.xml", tmp_path / "in", timeout=5)


def test_silent_server_times_out_as_transient(tmp_path):
    """A server that accepts TCP but never sends its SSH banner: the banner timeout ends the wait."""
    listener = socket.create_server((HOST, 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        settings = Settings(HOST, listener.getsockname()[1], "nobody", tmp_path / "key",
                            _public_line(_ed25519_private()))  # fmt: skip
        _write_private(_ed25519_private(), settings.key_path)
        with pytest.raises(SftpTransientError):
            download(settings, "/bulk.xml", tmp_path / "in", timeout=1)
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
    assert not (tmp_path / "in").exists()


# ------------------------------------------------------------------------------------------------- keys and URIs


def test_fingerprint_matches_ssh_keygen(sshd, tmp_path):
    pub = tmp_path / "host.pub"
    pub.write_text(sshd.host_key_line + "\n")
    listed = subprocess.run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(pub)], capture_output=True, text=True,
                            check=True).stdout.split()  # fmt: skip
    assert fingerprint(sshd.host_key_line) == listed[1]
    assert fingerprint(parse_host_key(sshd.host_key_line)) == listed[1]


def test_parse_host_key_forms():
    line = _public_line(_ed25519_private())
    key = parse_host_key(line)
    assert key.get_name() == "ssh-ed25519"
    for variant in (f"example.org {line}", f"[10.0.0.1]:2222 {line} comment", f"  {line}  my key\n"):
        assert parse_host_key(variant) == key
    rsa_line = _public_line(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    assert parse_host_key(rsa_line).get_name() == "ssh-rsa"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("", "not 'TYPE BASE64'"),
        ("AAAAC3NzaC1lZDI1NTE5AAAAI", "not 'TYPE BASE64'"),
        ("host only-two", "not 'TYPE BASE64'"),
        ("ssh-ed25519 not*base64", "not valid base64"),
        ("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIDh5F9/xcYVIb60WoOwJti2a+Yl4EgTvwwml6xsEdciO", "key data is ssh-ed25519"),
        ("ssh-foo AAAAB3NzaC1mb28=", "unsupported key type"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5", "not a valid key"),
        ("@revoked host ssh-ed25519 AAAA", "markers"),
    ],
)
def test_parse_host_key_errors(line, message):
    with pytest.raises(ValueError, match=message):
        parse_host_key(line)


def test_part_name_is_deterministic_per_remote_version():
    name = sftp.part_name("h", 22, "/a/bulk.xml", 10, 1000)
    assert name == sftp.part_name("h", 22, "/a/bulk.xml", 10, 1000)
    assert name.startswith("bulk.xml.") and name.endswith(".part")
    variants = [("h2", 22, "/a/bulk.xml", 10, 1000), ("h", 23, "/a/bulk.xml", 10, 1000),
                ("h", 22, "/b/bulk.xml", 10, 1000), ("h", 22, "/a/bulk.xml", 11, 1000),
                ("h", 22, "/a/bulk.xml", 10, 1001)]  # fmt: skip
    others = {sftp.part_name(*args) for args in variants}
    assert name not in others and len(others) == 5
    assert len(sftp.part_name("h", 22, "/" + "é" * 300, 1, 1).encode()) < 255


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("sftp://openespivmssh@openespivm/DataCustodian/espi/1_1/resource/Batch/Bulk/SampleData.xml",
         ("openespivm", 22, "openespivmssh", "/DataCustodian/espi/1_1/resource/Batch/Bulk/SampleData.xml")),
        ("sftp://localhost/home/espi/BatchBulk.xml", ("localhost", 22, None, "/home/espi/BatchBulk.xml")),
        ("SFTP://Bulk@SFTP.Example.COM:2222/out/f%20ile.xml",
         ("sftp.example.com", 2222, "Bulk", "/out/f ile.xml")),
        ("  sftp://u@[::1]:2200/x.xml\n", ("::1", 2200, "u", "/x.xml")),
        ("sftp://u%40corp@host/~/bulk/1.xml", ("host", 22, "u@corp", "bulk/1.xml")),
    ],
)  # fmt: skip
def test_parse_sftp_uri(uri, expected):
    assert tuple(parse_sftp_uri(uri)) == expected


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("", "empty"),
        ("https://host/file.xml", "must start with sftp://"),
        ("/local/file.xml", "must start with sftp://"),
        ("sftp:///file.xml", "no host"),
        ("sftp://user@/file.xml", "no host"),
        ("sftp://user:secret@host/file.xml", "password"),
        ("sftp://host:99999/file.xml", "invalid port"),
        ("sftp://host:0/file.xml", "invalid port"),
        ("sftp://host:ssh/file.xml", "invalid port"),
        ("sftp://host", "names no file"),
        ("sftp://host/", "names no file"),
        ("sftp://host/dir/", "directory"),
        ("sftp://host/file.xml?x=1", "query"),
        ("sftp://host/file.xml#frag", "fragment"),
        ("sftp://host/my file.xml", "whitespace"),
        ("sftp://host/a%00b", "NUL"),
        ("sftp://;fingerprint=x@host/f.xml", "parameterised"),
    ],
)
def test_parse_sftp_uri_errors(uri, message):
    with pytest.raises(ValueError, match=message):
        parse_sftp_uri(uri)


def test_bad_arguments_are_value_errors(sshd, tmp_path):
    with pytest.raises(ValueError, match="does not name a file"):
        download(sshd, "/dir/", tmp_path)
    with pytest.raises(ValueError, match="plain file name"):
        download(sshd, "/x.xml", tmp_path, dest_name="../x.xml")
    with pytest.raises(ValueError, match="prefetch_requests"):
        download(sshd, "/x.xml", tmp_path, prefetch_requests=0)
    with pytest.raises(ValueError, match="TYPE BASE64"):
        download(_settings(sshd, host_key="nonsense"), "/x.xml", tmp_path)
