"""The demo client's state per browser session: one file per session under ``<data_dir>/demo/sessions``.

The browser holds only a random session id in a cookie signed with itsdangerous (:class:`SessionCookie`); tokens,
client credentials and the PKCE verifier stay on the server, encrypted with Fernet under a key derived from the
gateway's secret key (files 0600 in a 0700 directory, named by an HMAC of the id so a directory listing names no
session). Files rather than memory so that several gateway processes on one host (``--workers``) share them.
Sessions idle for longer than :data:`SESSION_SECONDS` are forgotten and their files removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from cds.secrets import SecretBox
from espi.private_files import private_dir, private_fd

SESSION_SECONDS = 2 * 3600
COOKIE = "greenbridge_try"


class SessionCookie:
    """A random session id in a signed, time-limited cookie value."""

    def __init__(self, key: bytes) -> None:
        self._serializer = URLSafeTimedSerializer(key, salt="greenbridge-try-session")

    def new(self) -> tuple[str, str]:
        """(session id, cookie value)."""
        session_id = secrets.token_urlsafe(32)
        return session_id, self._serializer.dumps(session_id)

    def read(self, value: str | None) -> str | None:
        if not value:
            return None
        try:
            session_id = self._serializer.loads(value, max_age=SESSION_SECONDS)
        except BadSignature:  # also SignatureExpired
            return None
        return session_id if isinstance(session_id, str) else None


class DemoSessions:
    def __init__(self, directory: Path, box: SecretBox) -> None:
        self.directory = directory
        self.box = box
        self._pruned = 0.0

    def _path(self, session_id: str) -> Path:
        return self.directory / f"{self.box.hash(session_id)}.state"

    def load(self, session_id: str) -> dict[str, Any]:
        path = self._path(session_id)
        try:
            if path.stat().st_mtime < time.time() - SESSION_SECONDS:
                return {}
            return json.loads(self.box.decrypt(path.read_text()))
        except (OSError, ValueError):  # none yet, or written under another secret key
            return {}

    def save(self, session_id: str, state: dict[str, Any]) -> None:
        private_dir(self.directory)
        path = self._path(session_id)
        partial = path.with_suffix(f".{os.getpid()}.tmp")
        with os.fdopen(private_fd(partial, os.O_WRONLY | os.O_TRUNC), "w") as handle:
            handle.write(self.box.encrypt(json.dumps(state)))
        partial.replace(path)
        self._prune()

    def _prune(self) -> None:
        now = time.time()
        if now - self._pruned < 60:
            return
        self._pruned = now
        with contextlib.suppress(OSError):
            for path in self.directory.iterdir():
                with contextlib.suppress(OSError):
                    if path.stat().st_mtime < now - SESSION_SECONDS:
                        path.unlink()
