"""The durable jobs table's entry point shared by every process that creates upstream work (ARCHITECTURE.md).

The gateway (notification receiver) and the workers both create job rows, and neither may import the other, so
the row-creating half of the job lifecycle lives here beside the model; the running half is workers/jobs.py.
"""

from __future__ import annotations

import hashlib
import uuid
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
              attempts=0, max_attempts=max_attempts, created=now, modified=now, generation=1, rerun=False)
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
        again = {"generation": Job.generation + 1, "modified": now}
        publish = True
        if job.state == QUEUED:
            change = guard.values(**again)
        elif job.state == RUNNING:
            change, publish = guard.values(rerun=True), False
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
              attempts=0, max_attempts=max_attempts, created=now, modified=now, generation=1, rerun=False)
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
    session.execute(
        update(Job).where(Job.job_id.in_(ids), Job.state == DEFERRED)
        .values(run_after=now, published_at=now, modified=now).execution_options(synchronize_session=False)
    )
    resumed = list(session.scalars(select(Job).where(Job.job_id.in_(ids)).execution_options(populate_existing=True)))
    session.info.setdefault(NEW_JOBS, []).extend((job.job_id, job.queue) for job in resumed)
    return resumed
