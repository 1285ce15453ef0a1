"""The durable jobs table's entry point shared by every process that creates upstream work (ARCHITECTURE.md).

The gateway (notification receiver) and the workers both create job rows, and neither may import the other, so
the row-creating half of the job lifecycle lives here beside the model; the running half is workers/jobs.py.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds.store.models import Job

QUEUED, RUNNING, DEFERRED, DONE, FAILED, DEAD = "queued", "running", "deferred", "done", "failed", "dead"
STATES = (QUEUED, RUNNING, DEFERRED, DONE, FAILED, DEAD)
QUEUES = ("http", "sftp", "translate", "notify")
MAX_ATTEMPTS = 8


def utcnow() -> datetime:
    return datetime.now(UTC)


def enqueue(session: Session, kind: str, payload: dict[str, Any], dedupe_key: str | None = None, *,
            queue: str = "translate", max_attempts: int = MAX_ATTEMPTS, now: datetime | None = None) -> Job:
    """The job for ``dedupe_key``, created ``queued`` if there is none yet (whatever state an existing one is in).

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
        return existing
    now = now or utcnow()
    job = Job(job_id=job_id, kind=kind, queue=queue, dedupe_key=key, payload=dict(payload), state=QUEUED,
              attempts=0, max_attempts=max_attempts, created=now, modified=now)
    try:
        with session.begin_nested():
            session.add(job)
    except IntegrityError:
        existing = session.scalar(select(Job).where(Job.dedupe_key == key))
        if existing is None:
            raise
        return existing
    return job
