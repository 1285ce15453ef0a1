"""The ESPI notification receiver: custodians POST a BatchList here (FB_39 PUSH, espi.md §4.1).

``POST /espi/1_1/Notification`` (the path OpenESPI third parties use; each URI's custodian is found by host and
path prefix) and ``POST /custodians/{custodian_id}/notify`` (one URL per custodian). The body is parsed with
espi.notification; each URI is checked by bridge.notifications (nothing we are merely told about is fetched unless it
belongs to a configured custodian), refused URIs are logged without their query, and accepted ones become rows of
the jobs table. The answer is 200 with an empty body as soon as the rows are committed: fetching is the workers'.

Publishing: the committed jobs (new ones, and deferred jobs the BatchList resumes) are sent to the workers by the
gateway's JobPublisher (gateway/job_publisher.py) off the request path. Without Redis, or when publishing fails, the
committed row alone is durable and the workers' reconciler publishes it later (workers.jobs.lost).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bridge import metrics
from bridge.notifications import Accepted, Refused, accept_notification, owner_of
from cds.store import ops
from cds.store.ops import Activity
from espi.errors import EspiError, XmlSecurityError
from espi.notification import parse_batch_list
from gateway.routes.common import gateway_of, in_session

log = logging.getLogger(__name__)

CONTENT_TYPES = frozenset({"application/atom+xml", "application/xml", "text/xml"})

def _bad(status: int, message: str) -> Response:
    metrics.notifications.labels("refused").inc()
    return PlainTextResponse(message, status_code=status)


async def _receive(request: Request, custodian_id: str | None) -> Response:
    gateway = gateway_of(request)
    config = gateway.config
    custodian = None
    if custodian_id is not None:
        custodian = next((c for c in config.custodians if c.id == custodian_id), None)
        if custodian is None:
            return _bad(404, f"no custodian {custodian_id!r}")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES:
        return _bad(415, "a BatchList must be sent as application/atom+xml, application/xml or text/xml")
    body = await request.body()
    peer = request.client.host if request.client else "unknown"
    try:
        batch = parse_batch_list(body, f"notification from {peer}")
    except XmlSecurityError as error:
        log.warning("hostile notification refused: %s", error)
        return _bad(400, str(error))
    except EspiError as error:
        log.info("malformed notification: %s", error)
        return _bad(400, str(error))

    now = datetime.now(UTC)
    groups: dict[str, tuple[Any, list[str]]] = {}
    refused: list[Refused] = []
    for uri in batch.resources:
        owner = custodian or owner_of(config.custodians, uri)
        if owner is None:
            refused.append(Refused(uri, "no configured custodian owns this URI"))
        else:
            groups.setdefault(owner.id, (owner, []))[1].append(uri)

    counted: dict[str, tuple[int, int]] = {}  # custodian id ("" for none) → (URIs accepted, refused)

    def store(session) -> list[Accepted]:
        accepted: list[Accepted] = []
        for owner, uris in groups.values():
            jobs, refusals = accept_notification(session, owner, uris, now)
            accepted += jobs
            refused.extend(refusals)
            counted[owner.id] = (len(uris) - len(refusals), len(refusals))
        return accepted

    accepted = await in_session(request, store) if groups else []
    if counted:
        await _record_activity(request, counted, now)
    unowned = len(batch.resources) - sum(len(uris) for _owner, uris in groups.values())
    if unowned:
        counted[""] = (0, unowned)
    metrics.notifications.labels("received").inc()
    for custodian_id, (taken, refusals) in counted.items():
        if taken:
            metrics.notification_uris.labels(custodian_id, "accepted").inc(taken)
        if refusals:
            metrics.notification_uris.labels(custodian_id, "refused").inc(refusals)
    for item in refused:
        log.warning("notification URI refused (%s): %s", item.reason, item.loggable)
    if accepted:
        log.info("notification from %s: %d job(s), %d duplicate URI(s) dropped", peer, len(accepted),
                 batch.duplicates)
    # The jobs are published after the commit by the gateway's JobPublisher thread: Redis never delays the 200.
    return Response(status_code=200)


async def _record_activity(request: Request, counted: dict[str, tuple[int, int]], now: datetime) -> None:
    """The dashboard's "last notification" and counts, in a short transaction after the jobs' (never holding a lock
    while they are written); the jobs are committed whatever becomes of it."""
    activity = Activity()
    for custodian_id, (taken, refusals) in counted.items():
        activity.notifications(custodian_id, accepted=taken, refused=refusals, at=now)
    try:
        await in_session(request, lambda session: ops.flush(session, activity, now))
    except Exception as error:  # figures for the dashboard only
        log.warning("notification activity not recorded (%s)", error)


async def generic(request: Request) -> Response:
    return await _receive(request, None)


async def per_custodian(request: Request) -> Response:
    return await _receive(request, request.path_params["custodian_id"])


def routes() -> list[Route]:
    return [
        Route("/espi/1_1/Notification", generic, methods=["POST"]),
        Route("/custodians/{custodian_id}/notify", per_custodian, methods=["POST"]),
    ]
