"""The ops dashboard (docs/operations.md "The ops dashboard"), its JSON twin and the Prometheus endpoint.

* ``GET /ops``: the bridge's state (bridge.ops.collect_status) as a server-rendered page: queues, workers online,
  jobs per custodian and kind, charts of the last hour (inline SVG, no scripts), custodians' health, grants, the
  deferred requests waiting for a notification, dead jobs with a retry button, the latest errors;
* ``GET /ops/status``: the same as JSON (``greenbridge status --json`` prints the same document);
* ``POST /ops/jobs/{job_id}/retry``: a dead (or failed) job queued again with fresh attempts
  (cds.store.jobs.requeue, as ``greenbridge jobs retry``), published to the workers after the commit;
* ``GET /metrics``: the Prometheus text exposition (bridge.metrics), unauthenticated like other exporters: it holds
  counts, route templates, custodian ids and kinds, never an identifier of a customer or a secret.

The operator signs in with HTTP Basic (RFC 7617) against ``operator_user``/``operator_password`` from the
configuration. There is no default password: without one the dashboard answers 404. Both parts are compared in
constant time (digests of equal length), failures are throttled per address as client authentications are
(cds.auth_throttle; a right password is never refused), and the retry form carries a CSRF token (an HMAC of the
operator and its time under a key derived from the secret key, valid for 12 hours): a browser that holds the Basic
credentials sends them with any site's form, the token it cannot read.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bridge import metrics, ops
from cds import auth_throttle
from cds.store.jobs import requeue
from gateway.context import Gateway
from gateway.routes.common import gateway_of, read_form

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
REALM = 'Basic realm="greenbridge operations", charset="UTF-8"'
CSRF_SECONDS = 12 * 3600
#: The client id under which the operator's failed sign-ins are counted (cds.auth_throttle keys by client id and
#: address); no CDS client id has this form.
THROTTLE_ID = "ops-dashboard-operator"
#: Chart geometry (SVG user units).
CHART_WIDTH, CHART_HEIGHT = 600, 120


class _Refused(Exception):
    def __init__(self, response: Response) -> None:
        self.response = response


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def basic_credentials(request: Request) -> tuple[str, str] | None:
    """The (user, password) of an ``Authorization: Basic`` header as browsers send it (RFC 7617: UTF-8 ``user:
    password``, nothing percent-encoded); None when absent or malformed."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(token.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, colon, password = decoded.partition(":")
    return (user, password) if colon else None


def _operator(request: Request) -> str:
    """The signed-in operator's name, or :class:`_Refused` with the answer (404 when the dashboard is off, 401 to
    ask for credentials, 429 while failures from this address are blocked)."""
    config = gateway_of(request).config
    if not config.operator_password:
        raise _Refused(PlainTextResponse("The ops dashboard is off: set operator_password (GREENBRIDGE_OPERATOR_"
                                         "PASSWORD) in the configuration.", status_code=404))
    given = basic_credentials(request) or ("", "")
    # both compared, always, in constant time: neither the name nor the password leaks through timing
    right = hmac.compare_digest(_digest(given[0]), _digest(config.operator_user)) & \
        hmac.compare_digest(_digest(given[1]), _digest(config.operator_password))
    if right:
        return config.operator_user
    raise _Refused(_Unauthorized(given != ("", "")))


class _Unauthorized(Response):
    def __init__(self, failed: bool) -> None:
        super().__init__("Sign in as the operator (see docs/operations.md).", status_code=401,
                         headers={"WWW-Authenticate": REALM, "Cache-Control": "no-store"}, media_type="text/plain")
        self.failed = failed


async def _signed_in(request: Request) -> str:
    """:func:`_operator`, with failed attempts counted per address (cds.auth_throttle) off the event loop."""
    try:
        return _operator(request)
    except _Refused as refused:
        response = refused.response
        if isinstance(response, _Unauthorized) and response.failed:
            await run_in_threadpool(_count_failure, gateway_of(request), request.client.host if request.client
                                    else "", response)
        raise


def _count_failure(gateway: Gateway, address: str, response: Response) -> None:
    now = int(time.time())
    limits = auth_throttle.AuthLimits(per_client_address=gateway.config.auth_failures_per_minute,
                                      per_address=gateway.config.auth_address_failures_per_minute)
    with gateway.sessions() as session, session.begin():
        retry_after = auth_throttle.blocked_for(session, THROTTLE_ID, address, now)
        if retry_after:
            raise _Refused(PlainTextResponse("Too many failed sign-ins; try again later.", status_code=429,
                                             headers={"Retry-After": str(retry_after)}))
        auth_throttle.record_failure(session, THROTTLE_ID, address, now, limits)


def csrf_token(gateway: Gateway, operator: str, issued: int | None = None) -> str:
    issued = int(time.time()) if issued is None else issued
    mac = hmac.new(gateway.config.derived_key("ops-csrf"), f"{operator}\x00{issued}".encode(), "sha256")
    return f"{issued}.{mac.hexdigest()}"


def csrf_valid(gateway: Gateway, operator: str, token: str, now: int | None = None) -> bool:
    issued, _, _mac = token.partition(".")
    if not issued.isdigit():
        return False
    now = int(time.time()) if now is None else now
    if not 0 <= now - int(issued) <= CSRF_SECONDS:
        return False
    return hmac.compare_digest(csrf_token(gateway, operator, int(issued)), token)


def _headers(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Content-Security-Policy"] = ("default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; "
                                                   "form-action 'self'; frame-ancestors 'none'")
    return response


# ------------------------------------------------------------------------------------------------------ charts


def bars(series: list[dict[str, Any]], key: str, *, overlay: str | None = None) -> dict[str, Any]:
    """An SVG bar chart of ``series[i][key]`` per minute (and ``overlay``, drawn over it in another colour): the
    bars' geometry, the scale's top and the labels of the first and last minute."""
    top = max([row[key] for row in series] + [1])
    width = CHART_WIDTH / max(1, len(series))
    shapes = []
    for index, row in enumerate(series):
        minute = datetime.fromisoformat(row["minute"]).strftime("%H:%M")
        for name, css in ((key, "bar"), (overlay, "overlay")):
            if name is None or not row[name]:
                continue
            height = CHART_HEIGHT * row[name] / top
            shapes.append({"x": round(index * width + 1, 1), "y": round(CHART_HEIGHT - height, 1),
                           "width": round(max(1.0, width - 2), 1), "height": round(height, 1), "css": css,
                           "title": f"{minute} UTC: {row[name]} {name.replace('_', ' ')}"})
    first = datetime.fromisoformat(series[0]["minute"]).strftime("%H:%M") if series else ""
    last = datetime.fromisoformat(series[-1]["minute"]).strftime("%H:%M") if series else ""
    return {"shapes": shapes, "top": top, "first": first, "last": last, "width": CHART_WIDTH,
            "height": CHART_HEIGHT, "total": sum(row[key] for row in series),
            "overlay_total": sum(row[overlay] for row in series) if overlay else None}


# ------------------------------------------------------------------------------------------------------ routes


def _status(gateway: Gateway, *, ping_workers: bool) -> dict[str, Any]:
    return ops.collect_status(gateway.sessions, gateway.config, ping_workers=ping_workers)


async def dashboard(request: Request) -> Response:
    try:
        operator = await _signed_in(request)
    except _Refused as refused:
        return refused.response
    gateway = gateway_of(request)
    status = await run_in_threadpool(_status, gateway, ping_workers=True)
    context = {
        "server_name": gateway.config.server.name, "support_url": gateway.config.server.support,
        "status": status, "operator": operator, "csrf": csrf_token(gateway, operator),
        "throughput": bars(status["activity"], "readings"),
        "upstream": bars(status["activity"], "upstream_requests", overlay="upstream_errors"),
        "retried": request.query_params.get("retried"), "not_retried": request.query_params.get("not_retried"),
    }
    return _headers(templates.TemplateResponse(request, "ops.html", context))


async def status_json(request: Request) -> Response:
    try:
        await _signed_in(request)
    except _Refused as refused:
        return refused.response
    status = await run_in_threadpool(_status, gateway_of(request), ping_workers=True)
    return _headers(JSONResponse(status))


async def retry(request: Request) -> Response:
    try:
        operator = await _signed_in(request)
    except _Refused as refused:
        return refused.response
    gateway = gateway_of(request)
    try:
        form = dict(await read_form(request))
    except Exception:
        return PlainTextResponse("The body must be the dashboard's form.", status_code=400)
    if not csrf_valid(gateway, operator, form.get("csrf", "")):
        return PlainTextResponse("The form is stale or was not sent by the dashboard: reload /ops and try again.",
                                 status_code=403)
    job_id = request.path_params["job_id"]

    def queue_again() -> bool:
        with gateway.sessions() as session, session.begin():
            return requeue(session, job_id) is not None  # published by the gateway's JobPublisher after the commit

    queued = await run_in_threadpool(queue_again)
    return RedirectResponse(f"/ops?{'retried' if queued else 'not_retried'}={job_id}", status_code=303)


async def prometheus(request: Request) -> Response:
    gateway = gateway_of(request)

    def expose() -> bytes:
        state = metrics.state_families(_status(gateway, ping_workers=False))
        return metrics.exposition(gateway.config.metrics_dir, state)

    return Response(await run_in_threadpool(expose), media_type=metrics.CONTENT_TYPE,
                    headers={"Cache-Control": "no-store"})


def routes() -> list[Route]:
    return [
        Route("/ops", dashboard, methods=["GET"]),
        Route("/ops/status", status_json, methods=["GET"]),
        Route("/ops/jobs/{job_id}/retry", retry, methods=["POST"]),
        Route("/metrics", prometheus, methods=["GET"]),
    ]
