"""Accepting a custodian's BatchList notification: which URIs we trust, and one durable job per accepted URI.

A notification only *tells* us something changed; nothing it names is fetched unless it belongs to a configured
custodian: ``https`` (``http`` only on loopback) on one of the custodian's ``hosts`` with a path under its resource
URL's path (or its ApplicationInformation URL's), or ``sftp`` on the custodian's configured SFTP host. Everything
else is refused, with a reason, and never becomes a job.

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

import hashlib
import posixpath
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from sqlalchemy.orm import Session

from bridge.lifecycle import authorizations_for_resource, notified_uri
from cds.store.jobs import request_run, resume_waiting, waiting_key
from cds.store.models import Job
from espi.notification import NotificationResource, ResourceKind, classify_resource

LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
URI_MAX = 4096
DEDUPE_MAX = 255  # the jobs.dedupe_key column

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


def _path_under(path: str, prefix: str) -> bool:
    prefix = prefix.rstrip("/")
    return not prefix or path == prefix or path.startswith(prefix + "/")


def refusal(custodian: Any, uri: str) -> str | None:
    """Why ``uri`` does not belong to ``custodian`` (a CustodianConfig), or None when it does."""
    if len(uri) > URI_MAX:
        return f"URI longer than {URI_MAX} characters"
    if any(c.isspace() or ord(c) < 0x20 for c in uri):
        return "URI contains whitespace or control characters"
    try:
        parts = urlsplit(uri)
        host = (parts.hostname or "").lower()
        port = parts.port
    except ValueError:
        return "malformed URI"
    scheme = parts.scheme.lower()
    if parts.password is not None or (parts.username is not None and scheme != "sftp"):
        # espi.md §7: an sftp URI may name the SFTP user (we log in as the configured one); never a password
        return "URI carries user information"
    if not host:
        return "URI has no host"
    path = unquote(parts.path)
    if any(segment in (".", "..") for segment in path.split("/")) or "\\" in path:
        return "path has dot segments"
    if scheme == "sftp":
        sftp = getattr(custodian, "sftp", None)
        if sftp is None:
            return "custodian has no SFTP configuration"
        if host != sftp.host.lower() or (port is not None and port != sftp.port):
            return f"SFTP host {host} is not the custodian's SFTP host"
        remote_dir = str(getattr(sftp, "remote_dir", ".") or ".")
        if remote_dir.startswith("/") and not _path_under(posixpath.normpath(path), remote_dir):
            return "path is not under the custodian's SFTP remote_dir"
        return None
    if scheme not in ("https", "http"):
        return f"scheme {scheme or '(none)'} is not allowed"
    if scheme == "http" and host not in LOOPBACK:
        return "http is allowed only on loopback; use https"
    if host not in {h.lower() for h in custodian.hosts}:
        return f"host {host} is not one of the custodian's hosts"
    prefixes = [urlsplit(url).path for url in (custodian.resource_url, custodian.application_information_url) if url]
    if not any(_path_under(posixpath.normpath(path) if path else "/", prefix) for prefix in prefixes):
        return "path is not under the custodian's resource URL"
    return None


def owner_of(custodians: Any, uri: str) -> Any | None:
    """The first custodian ``uri`` belongs to (generic notification endpoint), or None."""
    return next((c for c in custodians if refusal(c, uri) is None), None)


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


def accept_notification(session: Session, custodian: Any, uris: Any, now: datetime
                        ) -> tuple[list[Accepted], list[Refused]]:
    """Checks each URI against ``custodian`` and asks for a run of the job of each accepted one, in the caller's
    transaction.

    Returns the accepted jobs (a repeated URI's job, asked again: queued, or marked to run once more after the run
    going on) and the refused URIs with their reasons. Nothing is fetched here. The rows are changed in the order
    of their keys, so two receivers handling the same BatchList at once never wait for each other in a cycle.
    """
    wanted: list[tuple[str, int, str, NotificationResource]] = []
    refused: list[Refused] = []
    seen: set[str] = set()
    for index, uri in enumerate(uris):
        reason = refusal(custodian, uri)
        resource = classify_resource(uri)
        if reason is None and resource.kind not in JOB_KINDS:
            reason = f"resource kind {resource.kind.value} is not acted on"
        if reason is not None:
            refused.append(Refused(uri, reason))
            continue
        target = normalized(resource)
        key = dedupe_key(custodian.id, target)
        if key not in seen:
            seen.add(key)
            wanted.append((key, index, target, resource))
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
