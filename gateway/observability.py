"""What every request leaves behind for the ops team (docs/operations.md "Metrics", "Logs and request ids"): one
ASGI middleware around the whole application.

* **Request id.** A client's ``X-Request-Id`` is taken only when the configuration trusts it
  (``trust_request_id``: the gateway is reached through a proxy that sets or overwrites it, as nginx's
  ``proxy_set_header X-Request-Id $request_id``) and it is 1-64 letters, digits, ``.``, ``_``, ``:`` or ``-``;
  otherwise a random one is made. It is answered in ``X-Request-Id``, set in the request's context
  (cds.store.jobs.REQUEST_ID: the jobs the request creates record it, its log lines carry it) and logged.
* **Metrics.** ``greenbridge_http_requests_total`` and ``greenbridge_http_request_duration_seconds`` by route
  template (Starlette's matched route, ``/cds-api/v1/grants/{grant_id}``; never the raw path, which holds ids and
  secrets; ``unmatched`` when no route matched) and status.
* **Request lines.** With JSON logs, one line per request (method, route, redacted target, status, duration,
  client, request id) replaces uvicorn's access line, which knows neither the route nor the request id.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge import metrics
from cds.store.jobs import REQUEST_ID, new_request_id, valid_request_id
from gateway import logsafe

log = logging.getLogger("greenbridge.http")
HEADER = "x-request-id"


def route_template(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) and path else "unmatched"


class RequestObservability:
    """ASGI middleware: request id, HTTP metrics and (``json_logs``) a structured line per request."""

    def __init__(self, app: ASGIApp, *, trust_request_id: bool, json_logs: bool) -> None:
        self.app = app
        self.trust_request_id = trust_request_id
        self.json_logs = json_logs
        # Label children bound once per (method, route, status): a request then costs an increment and an
        # observation, not a label look-up (routes and statuses are few: the keys stay bounded).
        self._counters: dict[tuple[str, str, int], Any] = {}
        self._histograms: dict[tuple[str, str], Any] = {}

    def _record(self, method: str, route: str, status: int, seconds: float) -> None:
        counter = self._counters.get((method, route, status))
        if counter is None:
            counter = self._counters[(method, route, status)] = metrics.http_requests.labels(method, route,
                                                                                            str(status))
        histogram = self._histograms.get((method, route))
        if histogram is None:
            histogram = self._histograms[(method, route)] = metrics.http_duration.labels(method, route)
        counter.inc()
        histogram.observe(seconds)

    def request_id(self, scope: Scope) -> str:
        if self.trust_request_id:
            given = Headers(scope=scope).get(HEADER)
            if given is not None and valid_request_id(given.strip()):
                return given.strip()
        return new_request_id()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = self.request_id(scope)
        token = REQUEST_ID.set(request_id)
        status = 500  # what the client gets when the app fails before answering (ServerErrorMiddleware's)
        elapsed = metrics.timed()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = elapsed()
            route = route_template(scope)
            method = scope.get("method", "")
            self._record(method, route, status, seconds)
            if self.json_logs:
                target = scope.get("path", "") + (f"?{scope['query_string'].decode('latin-1')}"
                                                  if scope.get("query_string") else "")
                client = scope.get("client")
                log.info("%s %s %d", method, route, status, extra={
                    "method": method, "route": route, "target": logsafe.redact_target(target), "status": status,
                    "duration_ms": round(seconds * 1000, 1), "client": client[0] if client else None})
            REQUEST_ID.reset(token)
