"""The ESPI notification receiver: custodians POST a BatchList here (FB_39 PUSH, espi.md §4.1).

``POST /espi/1_1/Notification`` (the path OpenESPI third parties use; each URI's custodian is found by its origin
and path) and ``POST /custodians/{custodian_id}/notify`` (one URL per custodian). What is checked, in order
(bridge.notifications has the rules; docs/security.md the threat model):

1. who sends it: a custodian with ``[custodians.notify]`` accepts notifications only from its networks (403) and
   with its HTTP Basic credentials (401). On its own notify URL this is checked before the body is read; on the
   shared URL every custodian whose URIs the BatchList names must accept the request, or none of it is acted on;
2. the body: a BatchList (415 for another content type, 400 for a malformed or hostile document);
3. each URI: acted on only when it is one of a configured custodian's resources; at most the custodian's
   ``notification_uri_cap`` distinct URIs per POST;
4. the custodian's rate (``notification_jobs_per_minute``): a POST that does not fit is answered 429 with
   ``Retry-After`` and nothing of it is kept; ESPI custodians send a BatchList again when a POST fails (PSH004).

Accepted URIs become rows of the jobs table and the answer is 200 with an empty body once they are committed;
fetching is the workers'. Whatever a POST had refused is logged as one WARNING line (counts by reason, the first
URIs without their query).

Publishing: the committed jobs (new ones, and deferred jobs the BatchList resumes) are sent to the workers by the
gateway's JobPublisher (gateway/job_publisher.py) off the request path. Without Redis, or when publishing fails, the
committed row alone is durable and the workers' reconciler publishes it later (workers.jobs.lost).
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from bridge import metrics
from bridge.notifications import (
    Accepted,
    RateLimited,
    Refused,
    SourceRefusal,
    accept_notification,
    by_custodian,
    limits_for,
    refusals_line,
    source_refusal,
)
from cds.store import ops
from cds.store.ops import Activity
from espi.errors import EspiError, XmlSecurityError
from espi.notification import parse_batch_list
from gateway.routes.common import gateway_of, in_session

log = logging.getLogger(__name__)

CONTENT_TYPES = frozenset({"application/atom+xml", "application/xml", "text/xml"})
BASIC_CHALLENGE = 'Basic realm="greenbridge notifications", charset="UTF-8"'


def _bad(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    metrics.notifications.labels("refused").inc()
    return PlainTextResponse(message, status_code=status, headers=headers)


def _source_refused(refusal: SourceRefusal, peer: str) -> Response:
    log.warning("notification from %s refused: %s", peer, refusal.reason)
    headers = {"WWW-Authenticate": BASIC_CHALLENGE} if refusal.status == 401 else None
    return _bad(refusal.status, refusal.reason, headers)


async def _receive(request: Request, custodian_id: str | None) -> Response:
    gateway = gateway_of(request)
    config = gateway.config
    peer = request.client.host if request.client else ""
    authorization = request.headers.get("authorization")
    custodian = None
    if custodian_id is not None:
        custodian = next((c for c in config.custodians if c.id == custodian_id), None)
        if custodian is None:
            return _bad(404, f"no custodian {custodian_id!r}")
        refused_source = source_refusal(custodian, peer, authorization)
        if refused_source is not None:
            return _source_refused(refused_source, peer)
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in CONTENT_TYPES:
        return _bad(415, "a BatchList must be sent as application/atom+xml, application/xml or text/xml")
    body = await request.body()
    try:
        batch = parse_batch_list(body, f"notification from {peer or 'unknown'}")
    except XmlSecurityError as error:
        log.warning("hostile notification refused: %s", error)
        return _bad(400, str(error))
    except EspiError as error:
        log.info("malformed notification: %s", error)
        return _bad(400, str(error))

    # thousands of URIs fit in a body: checked off the event loop
    groups, refused = await run_in_threadpool(by_custodian, config.custodians, batch.resources, custodian)
    if custodian is None:
        # The shared URL speaks for every custodian it names: each of them must accept this sender.
        problems = [p for owner, _uris in groups if (p := source_refusal(owner, peer, authorization)) is not None]
        if problems:
            return _source_refused(max(problems, key=lambda p: p.status), peer)  # 403 before 401

    now = datetime.now(UTC)
    counted: dict[str, tuple[int, int]] = {}  # custodian id ("" for none) → (URIs accepted, refused)

    def store(session) -> tuple[list[Accepted], list[Refused]]:
        accepted: list[Accepted] = []
        refusals: list[Refused] = []
        for owner, uris in groups:
            jobs, refused_here = accept_notification(session, owner, uris, now, limits_for(config, owner))
            accepted += jobs
            refusals += refused_here
            counted[owner.id] = (len(uris) - len(refused_here), len(refused_here))
        return accepted, refusals

    try:
        accepted, refused_uris = await in_session(request, store) if groups else ([], [])
    except RateLimited as limited:  # nothing of the POST was kept: the custodian sends it again (PSH004)
        log.warning("notification from %s refused: %s", peer, limited)
        return _bad(429, f"too many notifications for custodian {limited.custodian_id}; send this BatchList again "
                         f"in {limited.retry_after} s", {"Retry-After": str(limited.retry_after)})
    if counted:
        await _record_activity(request, counted, now)
    unowned = len(refused)  # before the custodians' own refusals: the URIs no configured custodian owns
    if unowned:
        counted[""] = (0, unowned)
    metrics.notifications.labels("received").inc()
    for owner_id, (taken, refusals) in counted.items():
        if taken:
            metrics.notification_uris.labels(owner_id, "accepted").inc(taken)
        if refusals:
            metrics.notification_uris.labels(owner_id, "refused").inc(refusals)
    refused += refused_uris
    if refused:
        log.warning("notification from %s: %s", peer, refusals_line(refused))
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
