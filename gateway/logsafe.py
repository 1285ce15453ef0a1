"""Keeping secrets out of log lines.

Access logs print request targets, and some of ours carry credentials in the URL by protocol design: the
authorization ``code`` and ``state`` on redirects to our default redirect URI, PAR ``request_uri`` handles, the
unguessable receipt URLs (which revoke without login). The filter rewrites those parts before any handler formats
the record; it is attached to uvicorn's access logger when the app is created.
"""

from __future__ import annotations

import logging
import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

SECRET_PARAMETERS = frozenset({
    "code", "request_uri", "state", "access_token", "refresh_token", "token", "client_secret", "code_verifier",
    "password", "consent",
})
_SECRET_PATHS = re.compile(r"^(/receipts/)[^/?]+")
REDACTED = "[redacted]"


def redact_target(target: str) -> str:
    """A request target (path and query) with secret query values and secret path segments replaced."""
    parts = urlsplit(target)
    path = _SECRET_PATHS.sub(lambda m: m.group(1) + REDACTED, parts.path)
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, REDACTED if k in SECRET_PARAMETERS else v) for k, v in pairs], safe="[]")
    return urlunsplit((parts.scheme, parts.netloc, path, query, parts.fragment))


class RedactSecrets(logging.Filter):
    """Rewrites the request target of uvicorn access records: ``(client, method, target, http_version, status)``."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str):
            record.args = (*args[:2], redact_target(args[2]), *args[3:])
        return True


def install() -> None:
    logger = logging.getLogger("uvicorn.access")
    if not any(isinstance(f, RedactSecrets) for f in logger.filters):
        logger.addFilter(RedactSecrets())
