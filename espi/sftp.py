"""SFTP bulk delivery, download half (ESPI FB_34 "SFTP for Bulk"; reference: shared/reference/espi.md §7).

A data custodian that delivers bulk data by SFTP announces a file with a BatchList whose resource is an
``sftp://[user@]host[:port]/path`` URI (:func:`parse_sftp_uri`); the credentials were exchanged out of band. This
module fetches such a file with paramiko, safely and resumably:

* **Pinned host key.** The custodian's host key is configured (a known_hosts line, "TYPE BASE64" or
  "HOST TYPE BASE64"); it is the only key the client knows, under ``host`` or ``[host]:port``, and the
  ``RejectPolicy`` refuses anything else. Never trust on first use. A mismatch is :class:`SftpHostKeyError`, whose
  message gives both SHA256 fingerprints (:func:`fingerprint`, the same text as ``ssh-keygen -l``).
* **Key authentication only**: one private key file (OpenSSH format, ed25519 or RSA); no agent, no
  ``~/.ssh`` keys, no password. A refusal is :class:`SftpAuthError`.
* **Resumable.** Bytes go to ``DEST/NAME.<id>-<version>.part``, a name derived from sha256 digests of (host, port,
  remote path) and of (host, port, remote path, remote size, remote mtime). A later call for the same remote
  version continues from the ``.part``'s size; a changed remote file (size or mtime), or a ``.part`` longer than
  the remote file, starts over, and ``.part`` files of older versions of the same remote path are removed. A
  ``.part`` is locked (``flock``) while a download writes it, so two workers never interleave.
* **Fast.** Pipelined reads: ``SFTPFile.prefetch`` keeps up to 64 read requests of 255 KiB in flight
  (:data:`REQUEST_SIZE`: OpenSSH's sftp-server answers reads up to 256 KiB less 1 KiB whole; a server answering
  less is read correctly, with more requests), on a channel with a 32 MiB window and 256 KiB packets. paramiko's
  default requests of 32 KiB cost about twice the CPU per byte (its per-packet work is Python), and with them
  16–64 requests in flight were about 25× slower because of its fixed polling sleep (shared/reference/
  ecosystem.md §3.1). The file is written 1 MiB at a time; memory stays flat (at most the requests in flight).
* **Atomic.** Only a complete file (size equal to the remote ``stat``) is fsynced and renamed (``os.replace``) to
  ``DEST/NAME``; a reader never sees a partial final file.
* **Errors for a retrying caller.** :class:`SftpTransientError` (network, timeout, server hiccup, local I/O): retry
  later, the ``.part`` stays for the resume. :class:`SftpHostKeyError`, :class:`SftpAuthError`,
  :class:`SftpNotFound` and a plain :class:`SftpError` are permanent: retrying will not help until someone acts.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import fcntl
import hashlib
import os
import posixpath
import stat
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import unquote, urlsplit

import paramiko

from espi.errors import EspiError
from espi.private_files import private_dir, private_fd

CHUNK = 1024 * 1024  # bytes per read
#: bytes per SFTP read request: OpenSSH's sftp-server limit (SFTP_MAX_READ_LENGTH, 256 KiB - 1 KiB)
REQUEST_SIZE = 256 * 1024 - 1024
DEFAULT_PREFETCH_REQUESTS = 64  # 16 MiB in flight: see the module docstring
WINDOW_SIZE = 32 * 1024 * 1024  # the SFTP channel's flow-control window
MAX_PACKET_SIZE = 256 * 1024  # the largest SSH packet we accept on it (the server may send smaller ones)
KEEPALIVE_SECONDS = 30
SSH_PORT = 22

# What a broken or stalled connection raises, from paramiko or the socket layer (socket.timeout is TimeoutError,
# an OSError; paramiko's SFTPError is a protocol-level surprise such as a garbled packet).
_TRANSIENT = (paramiko.SSHException, paramiko.SFTPError, EOFError, OSError)


class SftpError(EspiError):
    """An SFTP bulk download failed. Permanent unless it is a :class:`SftpTransientError`."""


class SftpTransientError(SftpError):
    """A network, server or local I/O failure that may go away: retry later; the ``.part`` file is kept."""


class SftpHostKeyError(SftpError):
    """The server did not present the pinned host key (permanent: someone must verify the new key)."""

    def __init__(self, message: str, *, host: str = "", port: int = SSH_PORT, expected: str = "", received: str = ""):
        super().__init__(message)
        self.host, self.port, self.expected, self.received = host, port, expected, received


class SftpAuthError(SftpError):
    """The server refused our key, or the key file cannot be used (permanent)."""


class SftpNotFound(SftpError):
    """The remote file does not exist (permanent for this URI)."""


class SftpSettings(Protocol):
    """What :func:`download` needs to know about a server (``bridge.config.SftpConfig`` has these attributes)."""

    host: str
    port: int
    user: str
    key_path: Path | str
    host_key: str


@dataclass(frozen=True)
class Downloaded:
    """A completed download: ``path`` is the final file, ``resumed_from`` the bytes already in a ``.part``."""

    path: Path
    size: int
    resumed_from: int
    remote_path: str


class SftpLocation(NamedTuple):
    """An ``sftp://`` URI taken apart. ``user`` is None when the URI names none; ``path`` is decoded."""

    host: str
    port: int
    user: str | None
    path: str


# ----------------------------------------------------------------------------------------------------------- keys


def parse_host_key(line: str) -> paramiko.PKey:
    """The public key of a known_hosts-style line: ``TYPE BASE64 [comment]`` or ``HOST TYPE BASE64 [comment]``.

    The host field, when present, is ignored (the key is pinned to the configured host). ``ValueError`` names what
    is wrong: no key, an unknown key type, bad base64, or a blob whose embedded type differs from the line's.
    """
    fields = (line or "").split()
    if fields and fields[0].startswith("@"):
        raise ValueError(f"host key: known_hosts markers such as {fields[0]} are not supported; give the key itself")
    if len(fields) >= 2 and _looks_like_key_type(fields[0]):
        key_type, blob = fields[0], fields[1]
    elif len(fields) >= 3 and _looks_like_key_type(fields[1]):
        key_type, blob = fields[1], fields[2]
    else:
        raise ValueError(f"host key {_short(line)!r} is not 'TYPE BASE64' nor 'HOST TYPE BASE64' "
                         "(e.g. 'ssh-ed25519 AAAAC3Nza…', as in known_hosts or ssh-keyscan output)")  # fmt: skip
    try:
        raw = base64.b64decode(blob, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"host key: the key data of {key_type} is not valid base64") from None
    # The blob starts with its own type name (RFC 4253 §6.6: uint32 length, then the name).
    length = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else -1
    embedded = raw[4 : 4 + length].decode("ascii", "replace") if 0 < length <= len(raw) - 4 else ""
    if embedded != key_type:
        raise ValueError(f"host key: the line says {key_type} but the key data is {embedded or 'not a key'}")
    try:
        return paramiko.PKey.from_type_string(key_type, raw)
    except paramiko.pkey.UnknownKeyType:
        raise ValueError(f"host key: unsupported key type {key_type!r}") from None
    except Exception as exc:  # paramiko raises SSHException, ValueError or struct errors on a garbled blob
        raise ValueError(f"host key: the {key_type} key data is not a valid key ({exc})") from None


def fingerprint(key: paramiko.PKey | str) -> str:
    """OpenSSH's fingerprint of a public key (or of a known_hosts-style line): ``SHA256:`` + unpadded base64."""
    if isinstance(key, str):
        key = parse_host_key(key)
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode("ascii").rstrip("=")


def _looks_like_key_type(token: str) -> bool:
    return token.startswith(("ssh-", "ecdsa-", "sk-"))


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


def host_key_name(host: str, port: int) -> str:
    """The known_hosts name paramiko looks the server's key up under: ``host``, or ``[host]:port`` off port 22."""
    return host if port == SSH_PORT else f"[{host}]:{port}"


# ------------------------------------------------------------------------------------------------------------ URIs


def parse_sftp_uri(uri: str) -> SftpLocation:
    """``sftp://[user@]host[:port]/path`` → :class:`SftpLocation`; ``ValueError`` says what is wrong.

    The path is percent-decoded and stays absolute, except that ``/~/rest`` (the draft sftp URI form for the login
    directory) becomes the relative ``rest``. A password in the URI, a query, a fragment, an empty path or a
    directory path (ending in ``/``) are refused.
    """
    if not isinstance(uri, str):
        raise ValueError(f"sftp URI must be a string, not {type(uri).__name__}")
    text = uri.strip()
    if not text:
        raise ValueError("sftp URI is empty")
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"sftp URI {_short(text)!r} contains whitespace or control characters")
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise ValueError(f"sftp URI {_short(text)!r} is malformed: {exc}") from None
    if parts.scheme.lower() != "sftp":
        raise ValueError(f"sftp URI {_short(text)!r} must start with sftp:// (scheme is {parts.scheme or 'missing'!r})")
    if not parts.netloc:
        raise ValueError(f"sftp URI {_short(text)!r} has no host")
    if parts.password is not None:
        raise ValueError("sftp URI carries a password: credentials belong in configuration, never in a URI")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"sftp URI {_short(text)!r} has an invalid port (1–65535)") from None
    host = parts.hostname
    if not host:
        raise ValueError(f"sftp URI {_short(text)!r} has no host")
    if port == 0:
        raise ValueError(f"sftp URI {_short(text)!r} has an invalid port (1–65535)")
    user = unquote(parts.username) if parts.username is not None else None
    if user is not None and (not user or ";" in user):
        raise ValueError(f"sftp URI {_short(text)!r} has an empty or parameterised user name")
    if parts.query or text.endswith("?"):
        raise ValueError(f"sftp URI {_short(text)!r} has a query; a bulk file URI has none")
    if parts.fragment or "#" in text:
        raise ValueError(f"sftp URI {_short(text)!r} has a fragment; a bulk file URI has none")
    path = unquote(parts.path)
    if not path or path == "/":
        raise ValueError(f"sftp URI {_short(text)!r} names no file (empty path)")
    if "\x00" in path:
        raise ValueError("sftp URI path contains a NUL byte")
    if path.endswith("/"):
        raise ValueError(f"sftp URI {_short(text)!r} names a directory, not a file")
    if path.startswith("/~/"):
        path = path[3:]
    return SftpLocation(host=host, port=port or SSH_PORT, user=user, path=path)


# -------------------------------------------------------------------------------------------------------- connect


def open_client(settings: SftpSettings, timeout: float = 60) -> paramiko.SSHClient:
    """A connected, authenticated ``SSHClient`` for ``settings``; raises the module's errors.

    Only the pinned host key is known (RejectPolicy for anything else), key authentication only, explicit
    connect/banner/auth/channel timeouts, and a 30 s transport keepalive for long transfers.
    """
    host, port = settings.host, int(settings.port or SSH_PORT)
    user = settings.user
    if not user:
        raise ValueError(f"SFTP settings for {host}: a user name is required")
    expected = parse_host_key(settings.host_key)
    pkey = _load_private_key(Path(settings.key_path))
    client = paramiko.SSHClient()
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.get_host_keys().add(host_key_name(host, port), expected.get_name(), expected)
    try:
        client.connect(
            host, port=port, username=user, pkey=pkey, password=None, key_filename=None,
            look_for_keys=False, allow_agent=False, timeout=timeout, banner_timeout=timeout,
            auth_timeout=timeout, channel_timeout=timeout,
        )  # fmt: skip
        transport = client.get_transport()
        if transport is None or not transport.is_active():
            raise SftpTransientError(f"SFTP {host}:{port}: the connection closed right after authentication")
        transport.set_keepalive(KEEPALIVE_SECONDS)
        return client
    except BaseException as exc:
        client.close()
        classified = _classify(exc, host, port, user, expected)
        if classified is exc:
            raise
        raise classified from exc


def _load_private_key(path: Path) -> paramiko.PKey:
    try:
        return paramiko.PKey.from_path(path)
    except paramiko.PasswordRequiredException:
        raise SftpAuthError(f"SFTP client key {path} is passphrase-protected; give an unencrypted key file "
                            "readable only by the worker") from None  # fmt: skip
    except OSError as exc:
        raise SftpAuthError(f"SFTP client key {path} cannot be read: {exc.strerror or exc}") from None
    except Exception as exc:  # UnknownKeyType, SSHException, ValueError on a malformed file
        raise SftpAuthError(f"SFTP client key {path} is not a usable private key (OpenSSH ed25519 or RSA): "
                            f"{exc}") from None  # fmt: skip


def _classify(exc: BaseException, host: str, port: int, user: str, expected: paramiko.PKey) -> BaseException:
    """The module error for what ``SSHClient.connect`` raised (other exceptions come back unchanged)."""
    where = f"{host}:{port}"
    if isinstance(exc, SftpError):
        return exc
    if isinstance(exc, paramiko.BadHostKeyException):
        want, got = fingerprint(expected), fingerprint(exc.key)
        return SftpHostKeyError(
            f"SFTP host key mismatch for {where}: expected {expected.get_name()} {want}, received "
            f"{exc.key.get_name()} {got}. If the custodian rotated its key, verify the new fingerprint with them "
            "out of band before pinning it.",
            host=host, port=port, expected=want, received=got,
        )  # fmt: skip
    if isinstance(exc, paramiko.AuthenticationException):
        return SftpAuthError(f"SFTP {where}: the server refused public-key authentication as {user!r} ({exc})")
    if isinstance(exc, _TRANSIENT):
        return SftpTransientError(f"SFTP {where}: cannot connect: {_describe(exc)}")
    return exc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, TimeoutError) and text == "TimeoutError":
        return "timed out"
    return f"{type(exc).__name__}: {text}" if not isinstance(exc, paramiko.SSHException) else text


# ------------------------------------------------------------------------------------------------------- download


def part_name(host: str, port: int, remote_path: str, size: int, mtime: int) -> str:
    """The ``.part`` file name for one version of a remote file (deterministic; see the module docstring)."""
    base = _remote_basename(remote_path)
    return f"{_part_prefix(host, port, remote_path, base)}{_digest(host, port, remote_path, size, mtime)}.part"


def _part_prefix(host: str, port: int, remote_path: str, base: str) -> str:
    # Keep the whole name under 255 bytes: the basename is cut (on a character boundary) in the .part name only.
    short = base.encode("utf-8", "surrogateescape")[:150].decode("utf-8", "ignore")
    return f"{short}.{_digest(host, port, remote_path)}-"


def _digest(*fields: object) -> str:
    text = "\x00".join(str(field) for field in fields)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:16]


def _remote_basename(remote_path: str) -> str:
    base = posixpath.basename(remote_path)
    if base in ("", ".", "..") or "\x00" in base:
        raise ValueError(f"remote path {remote_path!r} does not name a file")
    return base


def download(
    settings: SftpSettings,
    remote_path: str,
    dest_dir: str | os.PathLike,
    *,
    prefetch_requests: int | None = DEFAULT_PREFETCH_REQUESTS,
    timeout: float = 60,
    dest_name: str | None = None,
    on_chunk: Callable[[int], Any] | None = None,
    connect: Callable[[SftpSettings, float], paramiko.SSHClient] = open_client,
) -> Downloaded:
    """Fetch ``remote_path`` from the server of ``settings`` into ``dest_dir/dest_name`` (default: its basename).

    Resumes a ``.part`` of the same remote version, then verifies the size, fsyncs and renames atomically.
    ``on_chunk(bytes_so_far)`` is called after each chunk is written (``bytes_so_far`` counts the resumed bytes
    too); what it raises propagates (an ``OSError`` as :class:`SftpTransientError`) and leaves the ``.part`` for a
    later resume. ``connect(settings, timeout)`` makes the client (tests may wrap :func:`open_client`).
    ``prefetch_requests=None`` is paramiko's unbounded read-ahead. Raises :class:`SftpTransientError` (retry later),
    or the permanent :class:`SftpHostKeyError`, :class:`SftpAuthError`, :class:`SftpNotFound`, :class:`SftpError`;
    ``ValueError`` for unusable arguments (a host key line that does not parse, a path naming no file).
    """
    if prefetch_requests is not None and prefetch_requests < 1:
        raise ValueError("prefetch_requests must be at least 1 (or None for paramiko's unbounded prefetch)")
    base = _remote_basename(remote_path)
    final_name = dest_name or base
    if final_name in (".", "..") or "/" in final_name or "\x00" in final_name:
        raise ValueError(f"destination name {final_name!r} is not a plain file name")
    dest = Path(dest_dir)
    host, port = settings.host, int(settings.port or SSH_PORT)
    where = f"{host}:{port} {remote_path}"
    client = connect(settings, timeout)
    try:
        return _download(client, settings, remote_path, dest, final_name, where, prefetch_requests, timeout,
                         on_chunk)  # fmt: skip
    except SftpError:
        raise
    except _TRANSIENT as exc:
        raise SftpTransientError(f"SFTP {where}: transfer failed: {_describe(exc)}") from exc
    finally:
        with contextlib.suppress(Exception):
            client.close()


def _download(client: paramiko.SSHClient, settings: SftpSettings, remote_path: str, dest: Path, final_name: str,
              where: str, prefetch_requests: int | None, timeout: float,
              on_chunk: Callable[[int], Any] | None) -> Downloaded:  # fmt: skip
    host, port = settings.host, int(settings.port or SSH_PORT)
    transport = client.get_transport()
    sftp = paramiko.SFTPClient.from_transport(transport, window_size=WINDOW_SIZE, max_packet_size=MAX_PACKET_SIZE) \
        if transport is not None else None
    if sftp is None:
        raise SftpTransientError(f"SFTP {where}: the connection closed before the SFTP channel opened")
    channel = sftp.get_channel()
    if channel is not None:
        channel.settimeout(timeout)  # a stalled read raises socket.timeout instead of hanging forever
    attrs = _remote_stat(sftp, remote_path, where)
    size, mtime = int(attrs.st_size or 0), int(attrs.st_mtime or 0)
    private_dir(dest)
    base = _remote_basename(remote_path)
    prefix = _part_prefix(host, port, remote_path, base)
    part = dest / part_name(host, port, remote_path, size, mtime)
    final = dest / final_name
    _remove_stale_parts(dest, prefix, keep=part.name)
    fd = private_fd(part, os.O_RDWR)
    with os.fdopen(fd, "r+b", buffering=0) as out:
        try:
            fcntl.flock(out.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SftpTransientError(f"SFTP {where}: another download is writing {part}") from None
        have = os.fstat(out.fileno()).st_size
        if have > size:  # longer than the remote file: not a prefix of this version, start over
            out.truncate(0)
            have = 0
        resumed_from = have
        if have < size:
            _transfer(sftp, remote_path, out, have, size, mtime, where, prefetch_requests, on_chunk)
        out.flush()
        os.fsync(out.fileno())
        got = os.fstat(out.fileno()).st_size
        if got != size:
            raise SftpTransientError(f"SFTP {where}: got {got} bytes, the server announced {size}")
        os.replace(part, final)  # atomic: the final name only ever holds a complete file
    _fsync_dir(dest)
    return Downloaded(path=final, size=size, resumed_from=resumed_from, remote_path=remote_path)


def _remote_stat(sftp: paramiko.SFTPClient, remote_path: str, where: str) -> paramiko.SFTPAttributes:
    try:
        attrs = sftp.stat(remote_path)
    except FileNotFoundError:
        raise SftpNotFound(f"SFTP {where}: no such file") from None
    except PermissionError:
        raise SftpError(f"SFTP {where}: permission denied") from None
    if attrs.st_mode is not None and not stat.S_ISREG(attrs.st_mode):
        raise SftpError(f"SFTP {where}: not a regular file")
    if attrs.st_size is None:
        raise SftpError(f"SFTP {where}: the server does not report the file size")
    return attrs


def _transfer(sftp: paramiko.SFTPClient, remote_path: str, out: Any, start: int, size: int, mtime: int, where: str,
              prefetch_requests: int | None, on_chunk: Callable[[int], Any] | None) -> None:  # fmt: skip
    """Append bytes ``start``..``size`` of the remote file to ``out`` (positioned at ``start``)."""
    try:
        remote = sftp.open(remote_path, "rb")
    except FileNotFoundError:
        raise SftpNotFound(f"SFTP {where}: no such file (removed after stat)") from None
    except PermissionError:
        raise SftpError(f"SFTP {where}: permission denied") from None
    try:
        remote.MAX_REQUEST_SIZE = REQUEST_SIZE  # paramiko's prefetch reads it from the file object
        remote.seek(start)
        # prefetch() queues reads from the current position up to file_size (an end offset, not a length).
        remote.prefetch(size, max_concurrent_requests=prefetch_requests)
        out.seek(start)
        position = start
        while position < size:
            data = remote.read(min(CHUNK, size - position))
            if not data:
                raise SftpTransientError(f"SFTP {where}: file ended at {position} of {size} bytes (changed?)")
            _write_all(out, data)
            position += len(data)
            if on_chunk is not None:
                on_chunk(position)
        now = remote.stat()
        if int(now.st_size or 0) != size or int(now.st_mtime or 0) != mtime:
            raise SftpTransientError(f"SFTP {where}: the file changed during the download; fetching the new version "
                                     "next time")  # fmt: skip
    finally:
        # Closing may fail on a dead connection; that must not hide the error that got us here.
        with contextlib.suppress(Exception):
            remote.close()


def _write_all(out: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written:]


def _remove_stale_parts(dest: Path, prefix: str, keep: str) -> None:
    """Delete ``.part`` files of other versions of the same remote file (unless a download still holds one)."""
    with os.scandir(dest) as entries:
        stale = [e.path for e in entries if e.name.startswith(prefix) and e.name.endswith(".part") and e.name != keep]
    for path in stale:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            os.unlink(path)
        except BlockingIOError:
            pass
        except FileNotFoundError:
            pass
        finally:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make the rename durable; best effort (some filesystems cannot fsync a directory, and the file is complete)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
