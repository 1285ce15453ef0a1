"""Accepting a custodian's BatchList notification (ESPI §4.1, FB_39): which URIs we act on, how much work one
notification may cause, who may send one, and one durable job per accepted URI.

**Only the custodian's own resources** (issue 13 item 1). A notification only *tells* us something changed, and
anyone who reaches the notify URL can send one; nothing it names is fetched unless it is one of a configured
custodian's resources (bridge.upstream.origins, espi.origins: the scheme, host and port of a configured endpoint,
default ports normalised, and a path under the endpoint's; or the custodian's SFTP server). The workers check the
same before every request. Everything else is refused, with a reason, and never becomes a job.

**Bounded work** (item 2). Of one POST at most ``notification_uri_cap`` distinct URIs are acted on per custodian
(the rest refused and counted), and a custodian's notifications may act on at most
``notification_jobs_per_minute`` URIs per minute (counted in the store, ``rate_windows``, so every gateway process
shares it). A POST that does not fit is refused as a whole with :class:`RateLimited` (the receiver answers 429
with ``Retry-After``): ESPI custodians detect a failed POST and send it again later (PSH004), and accepting part of
a BatchList while answering 200 would drop the rest in silence. :func:`refusals_line` is the one log line of what
a POST had refused.

**Notification sources** (item 3). A custodian may name the networks its BatchLists come from and HTTP Basic
credentials it sends (``[custodians.notify]``); :func:`source_refusal` says whether a request meets them.

Each accepted URI becomes a row of the jobs table (issue 6), kind by what the URI names (espi.notification
:func:`classify_resource`). The dedupe key is the custodian plus the normalized URI, query included (the
published-min/max window is part of what is asked): one row per resource, which every notification asks for
another run (issue 12; cds.store.jobs.request_run): custodians name the same ``Batch/Subscription/{id}``,
``Batch/Bulk/{id}`` or ``Authorization/{id}`` in every BatchList, and each time it means "fetch it again". A job
that has not started absorbs the notification; one that is running runs once more after it; one that is done or
dead is queued again.

A ``Batch/Subscription`` job fetches nothing itself: it fans out one fetch job per live upstream authorization of
the subscription (workers.upstream), so one authorization's failure retries only its own fetch.

A deferred job (the custodian answered 202) waiting for a resource the BatchList names is resumed instead
(issue 6 item 3): when it asked for exactly that URI (and, for a subscription, such jobs cover every live
authorization of it), no other job is asked for. The rows are written through cds.store.jobs (shared with the
workers); the caller owns the transaction, and the gateway publishes the jobs after it commits; an unpublished row
is picked up by the workers' reconciler.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge.lifecycle import authorizations_for_resource, notified_uri
from bridge.upstream import origins
from cds.store.jobs import request_run, resume_waiting, waiting_key
from cds.store.models import Job, RateWindow
from espi.notification import NotificationResource, ResourceKind, classify_resource

DEDUPE_MAX = 255  # the jobs.dedupe_key column
#: The rate window of :func:`spend` (``notification_jobs_per_minute``).
RATE_WINDOW_SECONDS = 60

#: Job kind and Celery queue for each resource kind a notification may name; other kinds are refused.
JOB_KINDS: dict[ResourceKind, tuple[str, str]] = {
    ResourceKind.SUBSCRIPTION: ("fetch_subscription", "http"),
    ResourceKind.BULK: ("fetch_bulk", "http"),
    ResourceKind.SFTP_BULK: ("fetch_bulk", "sftp"),
    ResourceKind.AUTHORIZATION: ("sync_authorization", "http"),
    ResourceKind.APPLICATION_INFORMATION: ("sync_application_information", "http"),
}


@dataclass(frozen=True)
class Accepted:
    job_id: str
    kind: str
    queue: str
    state: str
    uri: str


@dataclass(frozen=True)
class Refused:
    uri: str
    reason: str

    @property
    def loggable(self) -> str:
        return loggable_uri(self.uri)


def loggable_uri(uri: str) -> str:
    """The URI without user info, query or fragment, for logs (tidy, and nothing a custodian put there leaks)."""
    head = uri.split("#", 1)[0].split("?", 1)[0]
    try:
        parts = urlsplit(head)
        netloc = parts.netloc.rpartition("@")[2]
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))[:300]
    except ValueError:
        return head[:300]


def refusal(custodian: Any, uri: str) -> str | None:
    """Why ``uri`` is not one of ``custodian``'s resources (a CustodianConfig; bridge.upstream.origins), or None."""
    return origins(custodian).refusal(uri)


def owner_of(custodians: Any, uri: str) -> Any | None:
    """The first custodian ``uri`` belongs to (generic notification endpoint), or None."""
    return next((c for c in custodians if refusal(c, uri) is None), None)


def by_custodian(custodians: Sequence[Any], uris: Sequence[str], custodian: Any | None = None
                 ) -> tuple[list[tuple[Any, list[str]]], list[Refused]]:
    """A BatchList's URIs grouped by the custodian each is for (``custodian`` for its own notify URL; else the
    custodian owning the URI), in custodian id order, and the URIs no configured custodian owns."""
    groups: dict[str, tuple[Any, list[str]]] = {}
    refused: list[Refused] = []
    owners = [(c, origins(c)) for c in custodians] if custodian is None else []
    for uri in uris:
        owner = custodian or next((c for c, found in owners if found.allows(uri)), None)
        if owner is None:
            refused.append(Refused(uri, "no configured custodian owns this URI"))
        else:
            groups.setdefault(owner.id, (owner, []))[1].append(uri)
    return [groups[key] for key in sorted(groups)], refused


def normalized(resource: NotificationResource) -> str:
    """The URI with scheme and host lower-cased, the fragment dropped and the published window canonical."""
    return notified_uri(resource.uri)


def _same_request(requested: Any, target: str) -> bool:
    return isinstance(requested, str) and normalized(classify_resource(requested)) == target


def dedupe_key(custodian_id: str, uri: str) -> str:
    key = f"notification:{custodian_id}:{uri}"
    if len(key) <= DEDUPE_MAX:
        return key
    return f"notification:{custodian_id}:sha256:{hashlib.sha256(uri.encode()).hexdigest()}"


@dataclass(frozen=True)
class NotificationLimits:
    """Bounded work per notification for one custodian (issue 13 item 2)."""

    uri_cap: int
    per_minute: int


def limits_for(config: Any, custodian: Any) -> NotificationLimits:
    """The custodian's own limits, else the gateway's (``[gateway] notification_uri_cap`` and
    ``notification_jobs_per_minute``)."""
    return NotificationLimits(
        uri_cap=getattr(custodian, "notification_uri_cap", None) or config.notification_uri_cap,
        per_minute=getattr(custodian, "notification_jobs_per_minute", None) or config.notification_jobs_per_minute)


class RateLimited(Exception):
    """A custodian's notifications asked for more than its ``notification_jobs_per_minute``: nothing of the POST is
    acted on (the caller rolls its transaction back); ``retry_after`` seconds until its window has room."""

    def __init__(self, custodian_id: str, asked: int, retry_after: int) -> None:
        super().__init__(f"custodian {custodian_id}: {asked} URI(s) over its notification rate; "
                         f"retry after {retry_after} s")
        self.custodian_id = custodian_id
        self.asked = asked
        self.retry_after = retry_after


def spend(session: Session, key: str, amount: int, limit: int, now: datetime) -> int:
    """Count ``amount`` against ``limit`` per minute for ``key`` in the caller's transaction; 0 when it fits, else
    the seconds until the next window (nothing counted).

    Fixed windows aligned on the minute, one row per key. Each step is a guarded UPDATE (written before anything
    is read), so concurrent receivers in several processes serialize on the row and never both spend the last
    room; a missing row is inserted in a savepoint, and a concurrent insert makes the loop read again.
    """
    seconds = int(now.timestamp())
    window = seconds - seconds % RATE_WINDOW_SECONDS
    wait = window + RATE_WINDOW_SECONDS - seconds
    if amount > limit:
        return wait
    for _ in range(4):
        same = update(RateWindow).where(RateWindow.key == key, RateWindow.window_start == window,
                                        RateWindow.count + amount <= limit).values(count=RateWindow.count + amount)
        if session.execute(same.execution_options(synchronize_session=False)).rowcount == 1:
            return 0
        fresh = update(RateWindow).where(RateWindow.key == key, RateWindow.window_start < window) \
            .values(window_start=window, count=amount)
        if session.execute(fresh.execution_options(synchronize_session=False)).rowcount == 1:
            return 0
        if session.get(RateWindow, key, populate_existing=True) is not None:
            return wait  # this window's row exists and has no room left
        try:
            with session.begin_nested():
                session.add(RateWindow(key=key, window_start=window, count=amount))
            return 0
        except IntegrityError:
            continue  # another receiver created it meanwhile: count against that
    raise RuntimeError(f"rate window {key!r} kept changing")


def accept_notification(session: Session, custodian: Any, uris: Any, now: datetime,
                        limits: NotificationLimits | None = None) -> tuple[list[Accepted], list[Refused]]:
    """Checks each URI against ``custodian`` and asks for a run of the job of each accepted one, in the caller's
    transaction.

    Returns the accepted jobs (a repeated URI's job, asked again: queued, or marked to run once more after the run
    going on) and the refused URIs with their reasons. Nothing is fetched here. The rows are changed in the order
    of their keys, so two receivers handling the same BatchList at once never wait for each other in a cycle.

    With ``limits``, distinct URIs beyond ``uri_cap`` are refused, and the rest are counted against the custodian's
    rate (:func:`spend`, before any job row is touched): :class:`RateLimited` when they do not fit.
    """
    wanted: list[tuple[str, int, str, NotificationResource]] = []
    refused: list[Refused] = []
    seen: set[str] = set()
    own = origins(custodian)
    for index, uri in enumerate(uris):
        reason = own.refusal(uri)
        resource = classify_resource(uri)
        if reason is None and resource.kind not in JOB_KINDS:
            reason = f"resource kind {resource.kind.value} is not acted on"
        if reason is not None:
            refused.append(Refused(uri, reason))
            continue
        target = normalized(resource)
        key = dedupe_key(custodian.id, target)
        if key in seen:
            continue
        if limits is not None and len(wanted) >= limits.uri_cap:
            refused.append(Refused(uri, f"over the cap of {limits.uri_cap} URIs acted on per notification"))
            continue
        seen.add(key)
        wanted.append((key, index, target, resource))
    if limits is not None and wanted:
        wait = spend(session, f"notification:{custodian.id}", len(wanted), limits.per_minute, now)
        if wait:
            raise RateLimited(custodian.id, len(wanted), wait)
    accepted: list[tuple[int, Accepted]] = []
    for key, index, target, resource in sorted(wanted, key=lambda item: item[0]):
        kind, queue = JOB_KINDS[resource.kind]
        # A deferred job (HTTP 202) waiting for this resource resumes now; when it asked for exactly this URI, it
        # is the fetch the notification announces and no other job is asked for.
        resumed = resume_waiting(session, waiting_key(custodian.id, target), now)
        accepted += [(index, Accepted(job.job_id, job.kind, job.queue, job.state, target)) for job in resumed]
        if _announced(session, custodian.id, resource, target, resumed):
            continue
        payload = {
            "custodian_id": custodian.id, "uri": target, "resource": resource.kind.value,
            "resource_id": resource.resource_id,
            "published_min": resource.published_min.isoformat() if resource.published_min else None,
            "published_max": resource.published_max.isoformat() if resource.published_max else None,
        }
        job = request_run(session, kind, payload, key, queue=queue, now=now)
        accepted.append((index, Accepted(job.job_id, job.kind, job.queue, job.state, target)))
    return [item for _index, item in sorted(accepted, key=lambda pair: pair[0])], refused


def refusals_line(refused: Sequence[Refused], examples: int = 3) -> str:
    """What one POST had refused, for one log line: the count, each reason with its count, the first URIs (without
    query or user information). However many URIs a POST names, it costs one line."""
    reasons = Counter(item.reason for item in refused)
    listed = "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common(10))
    if len(reasons) > 10:
        listed += f"; {len(reasons) - 10} other reason(s)"
    first = ", ".join(item.loggable for item in refused[:examples])
    return f"{len(refused)} URI(s) refused: {listed}; first: {first}"


# ------------------------------------------------------------------------------------------ notification sources


@dataclass(frozen=True)
class SourceRefusal:
    """A request that does not meet a custodian's notify sources: 403 (address) or 401 (credentials)."""

    status: int
    reason: str


def source_refusal(custodian: Any, address: str | None, authorization: str | None) -> SourceRefusal | None:
    """Whether a notification from ``address`` (the client address, after trusted proxies) with the
    ``Authorization`` header ``authorization`` may speak for ``custodian`` (its ``[custodians.notify]``); None when
    it may, or when the custodian restricts nothing."""
    notify = getattr(custodian, "notify", None)
    if notify is None:
        return None
    if notify.sources:
        try:
            ip = ipaddress.ip_address(address or "")
        except ValueError:
            return SourceRefusal(403, f"source {str(address)[:64]!r} is not an IP address; custodian {custodian.id} "
                                      "accepts notifications from configured networks only")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not any(ip in network for network in notify.networks):
            return SourceRefusal(403, f"source {ip} is not one of custodian {custodian.id}'s notify sources")
    if notify.user and not _basic_matches(authorization, notify.user, notify.password):
        return SourceRefusal(401, f"custodian {custodian.id}'s notifications need its HTTP Basic credentials")
    return None


def _basic_matches(header: str | None, user: str, password: str) -> bool:
    """RFC 7617 Basic credentials equal to ``user:password`` (compared in constant time over the decoded bytes)."""
    scheme, _, token = (header or "").strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        presented = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    return hmac.compare_digest(presented, f"{user}:{password}".encode())


def _announced(session: Session, custodian_id: str, resource: NotificationResource, target: str,
               resumed: list[Job]) -> bool:
    """Whether the resumed deferred jobs are the whole of what the notification asks: some asked for exactly
    ``target`` and, for a subscription, those cover every live authorization of it (one fetch job each; a job
    without an authorization fetches for all of them)."""
    exact = [job for job in resumed if _same_request(job.payload.get("requested"), target)]
    if not exact:
        return False
    if resource.kind is not ResourceKind.SUBSCRIPTION or any(job.payload.get("upstream_id") is None
                                                             for job in exact):
        return True
    covered = {job.payload.get("upstream_id") for job in exact}
    return all(row.id in covered for row in authorizations_for_resource(session, custodian_id, target))
