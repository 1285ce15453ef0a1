"""What a request may be before any route sees it: its body size (RFC 9110 §15.5.14, 413 Content Too Large) and a
URL without NUL.

One ASGI middleware, so every route answers the same way:

* a body larger than the route's limit is 413 with ``{"error": "invalid_request", "error_description"}``, whether
  the client declared its length (refused before the app runs, so nothing is authenticated, parsed or stored) or
  streamed it chunked (refused as soon as the count passes the limit while the route reads it). Starlette's own
  limit answered a declared length in plain text and a chunked one in JSON; this replaces it. The limit is
  ``max_body_bytes``, or a larger one for the few routes that need it (``POST`` Messages, attachments);
* a NUL in the path or the query string is 400 ``invalid_request``: no store can hold it (PostgreSQL text refuses
  it) and no identifier or filter of ours contains one. (Invalid UTF-8 in percent-escapes of a query is replaced by
  U+FFFD by Starlette and so reaches no store as bytes it cannot encode.)
"""

from __future__ import annotations

from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _BodyTooLarge(Exception):
    """Raised out of ``receive`` when a streamed body passes the limit; answered by the middleware."""


def _error(status: int, description: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "error_description": description}, status_code=status,
                        headers={"Cache-Control": "no-store", "Connection": "close"} if status == 413 else None)


def too_large(limit: int) -> JSONResponse:
    return _error(413, f"The request body is larger than this endpoint accepts ({limit} bytes).")


class RequestLimits:
    """ASGI middleware: body size limits per (method, path), default ``default_limit``; NUL-free URLs."""

    def __init__(self, app: ASGIApp, *, default_limit: int, limits: Mapping[tuple[str, str], int] | None = None
                 ) -> None:
        self.app = app
        self.default_limit = default_limit
        self.limits = dict(limits or {})

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope.get("path", "") or b"%00" in scope.get("query_string", b"") or \
                b"\x00" in scope.get("query_string", b""):
            await _error(400, "The URL must not contain NUL (%00).")(scope, receive, send)
            return
        limit = self.limits.get((scope["method"], scope.get("path", "")), self.default_limit)
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.strip().isdigit() and int(declared) > limit:
            await too_large(limit)(scope, receive, send)
            return

        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except _BodyTooLarge:
            if not started:  # else the route answered before reading all of it: nothing more can be said
                await too_large(limit)(scope, receive, send)
