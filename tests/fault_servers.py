"""Servers that misbehave on purpose, for the fault suite (tests/test_faults.py), all on 127.0.0.1.

* :class:`FaultProxy`: an HTTP/1.1 proxy in front of a custodian that answers a fixed share of the requests it is
  told to spoil with a 503, a stall longer than the client waits, or a reset connection (RST), in a repeating
  pattern (so "30 %" is exactly 3 of every 10 such requests, whatever the order they arrive in), and can hold chosen
  requests until released. Everything else is forwarded untouched, one request per connection.
* :func:`cutting_sftp_server`: an SFTP server (asyncssh) serving the machine's files like OpenSSH's, whose first
  connection is cut off once it has been asked for bytes past a given offset: a transfer broken mid-file.

Both run their asyncio loop in a thread of the test process and stop with their context manager. No pytest
dependency (bench/ may use them too).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from servers import HOST

#: What the proxy does with a request: forward it, or one of the faults.
FORWARD, UNAVAILABLE, STALL, RESET = "forward", "503", "stall", "reset"
#: Three faults in ten: a 503, a reset connection, a stall (in this order within each ten spoilable requests).
THIRTY_PERCENT = (FORWARD, UNAVAILABLE, FORWARD, FORWARD, RESET, FORWARD, FORWARD, STALL, FORWARD, FORWARD)


@dataclass
class Request:
    method: str
    path: str
    outcome: str = FORWARD


class _Loop:
    """An asyncio loop in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def call(self, coroutine, timeout: float = 30.0):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@dataclass
class FaultProxy:
    """See the module docstring. ``spoil(method, path)`` says which requests the pattern applies to; ``hold(method,
    path)`` which ones wait (unanswered, not forwarded) until :meth:`release`, which drops them."""

    port: int = 0
    upstream_port: int = 0
    pattern: tuple[str, ...] = (FORWARD,)
    spoil: Callable[[str, str], bool] = lambda method, path: False
    hold: Callable[[str, str], bool] = lambda method, path: False
    stall_seconds: float = 30.0
    requests: list[Request] = field(default_factory=list)
    _spoiled: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def counts(self) -> Counter:
        """How many spoilable requests met each outcome (``forward``, ``503``, ``stall``, ``reset``, ``held``)."""
        with self._lock:
            return Counter(r.outcome for r in self.requests if r.outcome != "untouched")

    def held(self) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.outcome == "held"]

    def release(self) -> None:
        """Drops every held request (its connection is closed without an answer); later ones are forwarded."""
        self.hold = lambda method, path: False
        self._release.set()

    def _decide(self, method: str, path: str) -> Request:
        request = Request(method, path, "untouched")
        with self._lock:
            if self.hold(method, path):
                request.outcome = "held"
            elif self.spoil(method, path):
                request.outcome = self.pattern[self._spoiled % len(self.pattern)]
                self._spoiled += 1
            self.requests.append(request)
        return request

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path = [*lines[0].split(" "), "", ""][:2]
        headers = [line for line in lines[1:] if line]
        length = next((int(h.split(":", 1)[1]) for h in headers if h.lower().startswith("content-length:")), 0)
        body = await reader.readexactly(length) if length else b""
        request = self._decide(method, path)
        outcome = request.outcome
        try:
            if outcome == "held":
                await self._release_event().wait()
            elif outcome == UNAVAILABLE:
                writer.write(b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
                             b"Content-Length: 12\r\nConnection: close\r\n\r\nunavailable\n")
                await writer.drain()
            elif outcome == STALL:
                await asyncio.sleep(self.stall_seconds)
            elif outcome == RESET:
                sock = writer.get_extra_info("socket")
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
            else:
                await self._forward(method, path, headers, body, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _forward(self, method: str, path: str, headers: list[str], body: bytes,
                       writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        kept = [h for h in headers if h.split(":", 1)[0].strip().lower() not in ("connection", "keep-alive")]
        up_writer.write(f"{method} {path} HTTP/1.1\r\n".encode("latin-1")
                        + "".join(f"{h}\r\n" for h in kept).encode("latin-1")
                        + b"Connection: close\r\n\r\n" + body)
        await up_writer.drain()
        # The upstream closes after its answer (Connection: close): relay everything, and close our side too.
        head = await up_reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        relayed = [lines[0], *(h for h in lines[1:] if h and h.split(":", 1)[0].strip().lower()
                               not in ("connection", "keep-alive"))]
        writer.write(("\r\n".join(relayed) + "\r\nConnection: close\r\n\r\n").encode("latin-1"))
        while chunk := await up_reader.read(65536):
            writer.write(chunk)
            await writer.drain()
        up_writer.close()

    def _release_event(self) -> asyncio.Event:
        return self._event


@contextlib.contextmanager
def fault_proxy(**settings) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` listening on a free port (``upstream_port`` may be set later, before requests come)."""
    proxy = FaultProxy(**settings)
    loop = _Loop()

    async def start():
        proxy._event = asyncio.Event()
        proxy._release = _ThreadsafeEvent(loop.loop, proxy._event)
        return await asyncio.start_server(proxy._serve, HOST, proxy.port or 0)

    server = loop.call(start())
    proxy.port = server.sockets[0].getsockname()[1]
    try:
        yield proxy
    finally:
        proxy.release()
        _shut_down(loop, server)


def _shut_down(loop, server) -> None:
    """Close ``server``, cancel what still runs on its loop (held or stalled connections), and stop the loop."""

    async def stop():
        server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(server.wait_closed(), 5)
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    with contextlib.suppress(Exception):
        loop.call(stop())
    loop.stop()


class _ThreadsafeEvent:
    def __init__(self, loop: asyncio.AbstractEventLoop, event: asyncio.Event) -> None:
        self.loop, self.event = loop, event

    def set(self) -> None:
        self.loop.call_soon_threadsafe(self.event.set)


# ------------------------------------------------------------------------------------------------- cut SFTP
@dataclass
class CuttingSftp:
    """A running :func:`cutting_sftp_server`: where it listens, the key to pin, and what each connection was asked
    (``reads``: per connection, in order of arrival, the (offset, size) of every read)."""

    host: str
    port: int
    user: str
    host_key_line: str
    key_path: Path
    cut_after: int
    reads: list[list[tuple[int, int]]] = field(default_factory=list)
    cuts: int = 0

    @property
    def host_key(self) -> str:
        return self.host_key_line


@contextlib.contextmanager
def cutting_sftp_server(directory: Path, cut_after: int, user: str = "bulk") -> Iterator[CuttingSftp]:
    """An asyncssh SFTP server on a free port that serves the local file system (read only) to ``user`` with the
    client key written to ``directory/client_ed25519`` (OpenSSH format, what espi.sftp loads). Its first
    connection is aborted (the TCP connection dropped, no SFTP status) as soon as it is asked for a byte at or past
    ``cut_after``; later connections are served whole."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # asyncssh imports cryptography's deprecated DSA names
        import asyncssh

    host_key = asyncssh.generate_private_key("ssh-ed25519")
    client_key = asyncssh.generate_private_key("ssh-ed25519")
    key_path = directory / "client_ed25519"
    key_path.write_bytes(client_key.export_private_key("openssh"))
    key_path.chmod(0o600)
    state = CuttingSftp(HOST, 0, user, host_key.export_public_key("openssh").decode().split()[0] + " "
                        + host_key.export_public_key("openssh").decode().split()[1], key_path, cut_after)
    authorized = asyncssh.import_authorized_keys(client_key.export_public_key("openssh").decode())

    class Server(asyncssh.SSHServer):
        def begin_auth(self, username: str) -> bool:
            return True

        def public_key_auth_supported(self) -> bool:
            return True

        def validate_public_key(self, username: str, key) -> bool:
            return username == user and authorized.validate(key, "", "127.0.0.1") is not None

    class Sftp(asyncssh.SFTPServer):
        def __init__(self, chan) -> None:
            super().__init__(chan)
            self.reads: list[tuple[int, int]] = []
            state.reads.append(self.reads)
            self.first = len(state.reads) == 1

        def write(self, file_obj, offset, data):  # read only
            raise asyncssh.SFTPPermissionDenied("read only")

        def read(self, file_obj, offset: int, size: int):
            self.reads.append((offset, size))
            if self.first and offset + size > state.cut_after:
                state.cuts += 1
                self.connection.abort()  # the transfer breaks off mid-file
                raise asyncssh.SFTPConnectionLost("cut")
            return super().read(file_obj, offset, size)

    loop = _Loop()

    async def start():
        return await asyncssh.create_server(Server, HOST, 0, server_host_keys=[host_key], sftp_factory=Sftp,
                                            allow_scp=False)

    server = loop.call(start())
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        _shut_down(loop, server)
