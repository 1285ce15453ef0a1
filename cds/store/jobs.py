"""The durable jobs table's entry point shared by every process that creates upstream work (ARCHITECTURE.md).

The gateway (notification receiver) and the workers both create job rows, and neither may import the other, so
the row-creating half of the job lifecycle lives here beside the model; the running half is workers/jobs.py.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds.store.models import Job

QUEUED, RUNNING, DEFERRED, DONE, FAILED, DEAD = "queued", "running", "deferred", "done", "failed", "dead"
STATES = (QUEUED, RUNNING, DEFERRED, DONE, FAILED, DEAD)
QUEUES = ("http", "sftp", "translate", "notify")
MAX_ATTEMPTS = 8
#: ``session.info`` key: (job_id, queue) of the jobs this session created, to publish once its transaction commits
#: (:func:`take_new_jobs`). Publishing before the commit could run a job whose row is not visible yet.
NEW_JOBS = "greenbridge.new_jobs"
#: Payload key counting the runs of the current request that ended ``deferred`` (a custodian answering 202 to
#: every poll is given up on after a number of them); a new request starts again from none.
DEFERRED_RUNS = "deferred_runs"

#: The request being served (the gateway's X-Request-Id) or the job being run, in this context: jobs created or
#: asked for again in it record it (``Job.request_id``), and log records carry it (bridge.logs). Set by the
#: gateway's middleware per request and by the worker per run; contextvars follow a request into the threadpool.
REQUEST_ID: ContextVar[str | None] = ContextVar("greenbridge_request_id", default=None)
#: The job a worker is running in this context (log records carry it).
JOB_ID: ContextVar[str | None] = ContextVar("greenbridge_job_id", default=None)
_REQUEST_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


def valid_request_id(value: str | None) -> bool:
    """Whether ``value`` may be used as a request id: 1-64 letters, digits, ``.``, ``_``, ``:``, ``-`` (what
    proxies generate: nginx's hex ``$request_id``, UUIDs); nothing that could forge a log line or a label."""
    return bool(value) and _REQUEST_ID.fullmatch(value) is not None


def new_request_id() -> str:
    return uuid.uuid4().hex


def _custodian_of(payload: dict[str, Any]) -> str | None:
    custodian = payload.get("custodian_id")
    return custodian[:64] if isinstance(custodian, str) and custodian else None


def utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue(session: Session, kind: str, payload: dict[str, Any], dedupe_key: str | None = None, *,
            queue: str = "translate", max_attempts: int = MAX_ATTEMPTS, now: datetime | None = None) -> Job:
    """The job for ``dedupe_key``, created ``queued`` if there is none yet (whatever state an existing one is in):
    work that is done once (a revocation, one part of one bulk delivery). Work a notification asks for again uses
    :func:`request_run`.

    Safe against a concurrent enqueue of the same key: the insert runs in a savepoint and a unique-key conflict
    returns the other transaction's row. Publish the job id only after the caller's transaction commits.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {', '.join(QUEUES)}, not {queue!r}")
    if max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    job_id = uuid.uuid4().hex
    key = dedupe_key or f"{kind}:{job_id}"
    existing = session.scalar(select(Job).where(Job.dedupe_key == key))
    if existing is not None:
        if existing.state == QUEUED:  # publish again: harmless (claims are guarded), and heals a lost message
            session.info.setdefault(NEW_JOBS, []).append((existing.job_id, existing.queue))
        return existing
    now = now or utcnow()
    job = Job(job_id=job_id, kind=kind, queue=queue, dedupe_key=key, payload=dict(payload), state=QUEUED,
              attempts=0, max_attempts=max_attempts, created=now, modified=now, generation=1, rerun=False,
              custodian_id=_custodian_of(payload), request_id=REQUEST_ID.get())
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        existing = session.scalar(select(Job).where(Job.dedupe_key == key))
        if existing is None:
            raise
        return existing
    session.info.setdefault(NEW_JOBS, []).append((job.job_id, job.queue))
    return job


def request_run(session: Session, kind: str, payload: dict[str, Any], dedupe_key: str, *, queue: str,
                now: datetime | None = None, max_attempts: int = MAX_ATTEMPTS) -> Job:
    """A run of the work ``dedupe_key`` names that starts after now (a notification said the resource changed).

    One row per key, asked again rather than duplicated; what happens depends on the state of the existing row:

    * none: created ``queued``;
    * ``queued`` (not started): coalesced; it is published again (harmless, and heals a lost message);
    * ``running``: marked ``rerun``: the end of that run queues exactly one more (workers.jobs), however many
      notifications arrive meanwhile;
    * ``deferred`` (waiting for a custodian's 202 to be ready, or for its polling time): made due now;
    * ``failed`` (waiting to retry): coalesced, keeping its backoff and attempts: an upstream that is failing is
      not hammered because it sent a notification, and the retry fetches the resource as it is then;
    * ``done`` or ``dead``: re-armed ``queued`` with this payload and a fresh series of attempts: a finished job
      never blocks later notifications.

    Every request but the running one's raises ``generation`` now (the rerun raises it when it is queued), so what
    a run creates (bulk parts) is keyed apart from what an earlier request's run created. Each change is a
    guarded UPDATE on the state it read; when a worker changed the row in between, the row is read again.
    """
    if queue not in QUEUES:
        raise ValueError(f"queue must be one of {', '.join(QUEUES)}, not {queue!r}")
    now = now or utcnow()
    for _ in range(8):  # each turn follows a state change made by another process meanwhile; a few suffice
        job = session.scalar(select(Job).where(Job.dedupe_key == dedupe_key)
                             .execution_options(populate_existing=True))
        if job is None:
            created = _insert(session, kind, payload, dedupe_key, queue, max_attempts, now)
            if created is not None:
                return created
            continue
        guard = update(Job).where(Job.job_id == job.job_id, Job.state == job.state)
        asker = REQUEST_ID.get()
        asked = {"request_id": asker} if asker else {}  # the latest request asking is the one its run logs
        again = {"generation": Job.generation + 1, "modified": now, **asked}
        publish = True
        if job.state == QUEUED:
            change = guard.values(**again)
        elif job.state == RUNNING:
            change, publish = guard.values(rerun=True, **asked), False
        elif job.state == DEFERRED:  # due now and published after the commit: the reconciler need not publish it
            change = guard.values(run_after=now, published_at=now, **again)
        elif job.state == FAILED:
            change, publish = guard.values(**again), False
        else:  # done or dead
            change = guard.values(state=QUEUED, payload=dict(payload), run_after=None, finished=None, lease_until=None,
                                  waiting_for=None, rerun=False, max_attempts=Job.attempts + max_attempts, **again)
        if session.execute(change.execution_options(synchronize_session=False)).rowcount != 1:
            continue
        job = session.get(Job, job.job_id, populate_existing=True)
        if publish:
            session.info.setdefault(NEW_JOBS, []).append((job.job_id, job.queue))
        return job
    raise RuntimeError(f"job {dedupe_key!r} kept changing state while a run was requested")


def _insert(session: Session, kind: str, payload: dict[str, Any], key: str, queue: str, max_attempts: int,
            now: datetime) -> Job | None:
    """A new ``queued`` row for ``key``, or None when a concurrent transaction inserted it first."""
    job = Job(job_id=uuid.uuid4().hex, kind=kind, queue=queue, dedupe_key=key, payload=dict(payload), state=QUEUED,
              attempts=0, max_attempts=max_attempts, created=now, modified=now, generation=1, rerun=False,
              custodian_id=_custodian_of(payload), request_id=REQUEST_ID.get())
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        return None
    session.info.setdefault(NEW_JOBS, []).append((job.job_id, job.queue))
    return job


def take_new_jobs(session: Session) -> list[tuple[str, str]]:
    """The (job_id, queue) pairs created or resumed through ``session`` since the last call, forgotten here.

    Call after the commit to publish them; after a rollback call it too and drop the result (the rows are gone).
    """
    return session.info.pop(NEW_JOBS, [])


def waiting_key(custodian_id: str, uri: str) -> str:
    """What a deferred job waits for: custodian and the resource's URI without query or fragment (a BatchList may
    name the resource with another published window than the request had; OpenESPI's third party also matches
    notifications to resources with the query stripped)."""
    parts = urlsplit(uri.strip())
    resource = f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"
    return hashlib.sha256(f"{custodian_id}\n{resource}".encode()).hexdigest()


def resume_waiting(session: Session, key: str, now: datetime | None = None) -> list[Job]:
    """Make the deferred jobs waiting for ``key`` due at once (a notification named their resource); returns them.

    They stay ``deferred`` with ``run_after`` = now, so the next claim runs them; published after the commit (and
    marked so: the reconciler does not publish them again for that due time).
    """
    now = now or utcnow()
    ids = list(session.scalars(select(Job.job_id).where(Job.waiting_for == key, Job.state == DEFERRED)))
    if not ids:
        return []
    asker = REQUEST_ID.get()
    session.execute(
        update(Job).where(Job.job_id.in_(ids), Job.state == DEFERRED)
        .values(run_after=now, published_at=now, modified=now, **({"request_id": asker} if asker else {}))
        .execution_options(synchronize_session=False)
    )
    resumed = list(session.scalars(select(Job).where(Job.job_id.in_(ids)).execution_options(populate_existing=True)))
    session.info.setdefault(NEW_JOBS, []).extend((job.job_id, job.queue) for job in resumed)
    return resumed


def fresh_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload for a new request of the same work: without the counts of the previous request's runs."""
    return {key: value for key, value in payload.items() if key != DEFERRED_RUNS}


def requeue(session: Session, job_id: str, *, now: datetime | None = None) -> Job | None:
    """An operator's retry (``greenbridge jobs retry``, the ops dashboard's button): a ``dead`` or ``failed`` job
    becomes ``queued`` again with a fresh series of attempts (``max_attempts`` raised by :data:`MAX_ATTEMPTS`; the
    count itself stays, as the fencing token of workers.jobs). None when the job is not dead or failed. The caller
    publishes it after the commit (it is noted for that). Here, beside the model, because the gateway (the
    dashboard) and the workers' command line both retry, and neither may import the other."""
    now = now or utcnow()
    current = session.get(Job, job_id, populate_existing=True)
    if current is None:
        return None
    asker = REQUEST_ID.get()
    # the same request tried again (its generation stays: a bulk's parts already stored are not stored twice)
    result = session.execute(
        update(Job)
        .where(Job.job_id == job_id, Job.state.in_((DEAD, FAILED)))
        .values(state=QUEUED, run_after=None, finished=None, modified=now, waiting_for=None,
                max_attempts=Job.attempts + MAX_ATTEMPTS, payload=fresh_payload(current.payload),
                **({"request_id": asker} if asker else {}))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    job = session.get(Job, job_id, populate_existing=True)
    session.info.setdefault(NEW_JOBS, []).append((job.job_id, job.queue))
    return job
