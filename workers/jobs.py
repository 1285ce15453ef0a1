"""The jobs table API: every unit of upstream work is a durable row with a guarded state machine.

States: ``queued`` → ``running`` → ``done``; a run may instead end ``deferred`` (until a time or a notification),
``failed`` (retried at ``run_after`` with exponential backoff and jitter, or at the upstream's Retry-After, whichever
is later) or ``dead`` (permanent error, or ``max_attempts`` used up). Celery messages carry only the job id.

Every state change is one ``UPDATE … WHERE job_id = :id AND state = :expected`` (and, for the end of a run,
``attempts = :attempt``: the attempt number is the run's fencing token), so two workers never both run a job, and
a worker whose lease expired cannot overwrite the outcome of the run that replaced it. Callers own the transaction.

A notification that arrives while a job runs marks it ``rerun`` (cds.store.jobs.request_run); the end of that run
honours it in the same guarded UPDATE: ``done`` or ``dead`` becomes ``queued`` again (a new request, fresh attempts),
``deferred`` becomes due at once, ``failed`` keeps its retry (which is the run owed). The functions ending a run
return the resulting :class:`Outcome` (None when the run was no longer the current one); a job queued again is
noted for publishing after the commit (:func:`cds.store.jobs.take_new_jobs`).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from sqlalchemy import and_, case, or_, select, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

# Creating jobs (enqueue) and the states and queues are shared with the gateway: cds/store/jobs.py.
from cds.store.jobs import (  # noqa: F401  (re-exported: workers.jobs is the jobs API of the workers)
    DEAD,
    DEFERRED,
    DEFERRED_RUNS,
    DONE,
    FAILED,
    MAX_ATTEMPTS,
    NEW_JOBS,
    QUEUED,
    QUEUES,
    RUNNING,
    STATES,
    enqueue,
    fresh_payload,
    requeue,
    take_new_jobs,
    utcnow,
    waiting_key,
)
from cds.store.models import Job

BACKOFF_BASE = 5.0  # seconds before the first retry (upper bound; see backoff_delay)
BACKOFF_MAX = 600.0  # cap of the exponential part
RETRY_AFTER_MAX = 24 * 3600.0  # an upstream's Retry-After is honoured up to a day
# A run's lease; the running worker renews it every third of it (workers.tasks heartbeat), so a live run is never
# taken over, and the run of a killed worker is reclaimable within a lease (config: job_lease_seconds).
LEASE_SECONDS = 60
ERROR_MAX = 2000  # characters of last_error kept
RETRY_COUNTDOWN_MAX = 600  # seconds: a retry due sooner is re-published with a countdown, a later one by the reconciler
RECONCILE_STALE_AFTER = 900.0  # a queued job untouched this long is re-published by the reconciler
# A message whose run could not reach the store (workers.tasks.run_job) is sent again after job_retry_seconds,
# doubling up to STORE_RETRY_MAX, STORE_RETRIES times (about 5 minutes with the defaults); past that the job is
# still queued or running in the store and the reconciler publishes it (the bound: RECONCILE_STALE_AFTER).
STORE_RETRY_MAX = 60.0
STORE_RETRIES = 10


class JobError(Exception):
    """Base of the outcomes a handler may raise on purpose."""


class PermanentError(JobError):
    """Retrying cannot help (bad file, refused request): the job goes straight to ``dead``."""


class RetryLater(JobError):
    """A transient failure; ``retry_after`` (seconds, from an HTTP Retry-After) sets the earliest retry."""

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Defer(JobError):
    """The upstream accepted the request for later (HTTP 202): the job waits, ``deferred``, until ``until`` (the
    polling fallback) or until a BatchList names ``waiting_for`` (:func:`cds.store.jobs.waiting_key`)."""

    def __init__(self, until: datetime, message: str = "deferred", waiting_for: str | None = None,
                 payload: dict[str, Any] | None = None):
        super().__init__(message)
        self.until = until
        self.waiting_for = waiting_for
        self.payload = payload or {}  # merged into the job's payload (what was asked, for the resume)


@dataclass(frozen=True)
class Outcome:
    state: str
    run_after: datetime | None = None


def get(session: Session, job_id: str) -> Job | None:
    return session.get(Job, job_id, populate_existing=True)


class StoreUnreachable(JobError):
    """A run could not reach the store (:func:`store_unreachable`): before claiming its job (``claimed`` False: the
    job is as it was) or after (it stays ``running`` until its lease runs out)."""

    def __init__(self, error: BaseException, *, claimed: bool) -> None:
        super().__init__(f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}")
        self.claimed = claimed


def store_unreachable(error: BaseException) -> bool:
    """Whether ``error`` says the store itself is away (refused or dropped connection, a server shutting down,
    SQLite busy) rather than anything about a job: the run can be tried again as it stands."""
    if isinstance(error, OperationalError | InterfaceError):
        return True
    return isinstance(error, DBAPIError) and error.connection_invalidated


def store_retry_countdown(retries: int, *, base: float = BACKOFF_BASE, lease: float = 0.0) -> float:
    """Seconds before a message that met an unreachable store is delivered again (``retries`` already sent):
    ``base`` doubling up to :data:`STORE_RETRY_MAX`, and never before ``lease`` has run out (a run claimed before the
    store went away keeps its lease; the next delivery takes it over once it expired)."""
    return max(min(STORE_RETRY_MAX, base * 2 ** retries), lease)


def claim(session: Session, job_id: str, *, lease_seconds: float = LEASE_SECONDS,
          now: datetime | None = None) -> Job | None:
    """Start a run: the job becomes ``running`` with ``attempts + 1`` and a lease, or None when it is not runnable.

    Runnable: ``queued``; ``deferred``/``failed`` whose ``run_after`` has come; ``running`` whose lease expired
    (its worker died). A message for a job that is done, dead, not yet due or running elsewhere claims nothing, nor
    does one for a job whose attempts are used up (a deferred job may always resume: waiting is not failing).
    """
    now = now or utcnow()
    runnable = or_(
        Job.state == QUEUED,
        and_(Job.state.in_((DEFERRED, FAILED)), or_(Job.run_after.is_(None), Job.run_after <= now)),
        and_(Job.state == RUNNING, Job.lease_until < now),
    )
    result = session.execute(
        update(Job)
        .where(Job.job_id == job_id, runnable, or_(Job.attempts < Job.max_attempts, Job.state == DEFERRED))
        .values(state=RUNNING, attempts=Job.attempts + 1, lease_until=now + timedelta(seconds=lease_seconds),
                started=now, modified=now, run_after=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    return get(session, job_id)


def renew(session: Session, job: Job, *, lease_seconds: float = LEASE_SECONDS, now: datetime | None = None) -> bool:
    """Extend the lease of run ``job.attempts`` (the heartbeat of a live run); False once the run is not current."""
    now = now or utcnow()
    result = session.execute(
        update(Job)
        .where(Job.job_id == job.job_id, Job.state == RUNNING, Job.attempts == job.attempts)
        .values(lease_until=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


def _finish_run(session: Session, job: Job, now: datetime | None, marked: bool | None = None,
                guard: tuple[Any, ...] = (), **values: Any) -> bool:
    """Ends the run ``job.attempts`` of a running job; False when that run is no longer the current one (or, with
    ``marked`` given, when the job's ``rerun`` mark is not that; or when a ``guard`` condition does not hold)."""
    now = now or utcnow()
    where = [Job.job_id == job.job_id, Job.state == RUNNING, Job.attempts == job.attempts, *guard]
    if marked is not None:
        where.append(Job.rerun == marked)
    result = session.execute(
        update(Job).where(*where)
        .values(modified=now, lease_until=None, **values)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


_fresh = fresh_payload


def _ended(session: Session, job: Job, state: str, now: datetime, guard: tuple[Any, ...] = (),
           **values: Any) -> Outcome | None:
    """Ends the run in ``state`` (``done`` or ``dead``), or, when a notification asked for another run meanwhile,
    queues the job again as a new request (fresh attempts, next generation) and notes it for publishing.

    Two guarded UPDATEs, the first for an unmarked job: a mark set between them makes the first match nothing
    and the second match; a mark that comes after the first finds the job ended and re-arms it itself."""
    if _finish_run(session, job, now, marked=False, guard=guard, state=state, finished=now, **values):
        return Outcome(state)
    current = get(session, job.job_id)
    if current is None or not _finish_run(session, job, now, marked=True, guard=guard, state=QUEUED, finished=None,
                                          rerun=False, payload=_fresh(current.payload),
                                          generation=Job.generation + 1, max_attempts=Job.attempts + MAX_ATTEMPTS,
                                          **values):
        return None
    session.info.setdefault(NEW_JOBS, []).append((job.job_id, job.queue))
    return Outcome(QUEUED)


def done(session: Session, job: Job, *, result: str | None = None, warning: str | None = None,
         now: datetime | None = None) -> Outcome | None:
    """The run succeeded; ``result`` (its summary) and ``warning`` (what the operator must see although it
    succeeded) replace the last run's. ``queued`` again when a rerun is owed."""
    now = now or utcnow()
    return _ended(session, job, DONE, now, last_error=None, waiting_for=None,
                  result=None if result is None else str(result)[:ERROR_MAX],
                  warning=None if warning is None else str(warning)[:ERROR_MAX])


def deferred(session: Session, job: Job, until: datetime, *, waiting_for: str | None = None,
             message: str | None = None, payload: dict[str, Any] | None = None,
             now: datetime | None = None) -> Outcome | None:
    """The upstream will answer later: wait until ``until``, or until a notification names ``waiting_for``;
    ``payload`` entries are merged into the job's payload and :data:`DEFERRED_RUNS` counts this run. When a
    notification arrived during the run (maybe the very one announcing the data is ready), it is due at once."""
    now = now or utcnow()
    merged = {**job.payload, **(payload or {}), DEFERRED_RUNS: int(job.payload.get(DEFERRED_RUNS, 0)) + 1}
    values = {"state": DEFERRED, "waiting_for": waiting_for, "last_error": message, "payload": merged}
    if _finish_run(session, job, now, marked=False, run_after=until, **values):
        return Outcome(DEFERRED, until)
    if _finish_run(session, job, now, marked=True, run_after=now, rerun=False, generation=Job.generation + 1,
                   **values):
        return Outcome(DEFERRED, now)
    return None


def dead(session: Session, job: Job, error: str, *, now: datetime | None = None,
         guard: tuple[Any, ...] = ()) -> Outcome | None:
    """The run gave up for good; ``queued`` again (a new request) when a notification arrived during it. ``guard``:
    further conditions the job row must meet (the reconciler: its lease has still expired)."""
    now = now or utcnow()
    return _ended(session, job, DEAD, now, guard, last_error=error[:ERROR_MAX])


def backoff_delay(attempt: int, *, base: float = BACKOFF_BASE, cap: float = BACKOFF_MAX,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds before retry number ``attempt`` (1-based): "equal jitter" over ``min(cap, base·2^(attempt-1))``.

    The result lies in ``[d/2, d]``: exponential growth keeps a struggling upstream from being hammered, the random
    half spreads the retries of many jobs that failed together, and the fixed half keeps a floor (full jitter can
    retry at once).
    """
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return ceiling / 2 + rand() * ceiling / 2


def retry_after_seconds(value: str | None, *, now: datetime | None = None) -> float | None:
    """An HTTP ``Retry-After`` (RFC 9110 §10.2.3: delay-seconds or an HTTP-date) in seconds, or None if unusable."""
    if value is None or not value.strip():
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_MAX)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    seconds = (moment - (now or utcnow())).total_seconds()
    return min(max(seconds, 0.0), RETRY_AFTER_MAX)


def failed(session: Session, job: Job, error: str, *, retry_after: float | None = None, now: datetime | None = None,
           rand: Callable[[], float] = random.random, backoff: float = BACKOFF_BASE) -> Outcome | None:
    """Records a failed run: ``failed`` with the next ``run_after``, or ``dead`` when the attempts are used up.

    The delay is :func:`backoff_delay` for this attempt (from ``backoff`` seconds, the configured
    ``job_retry_seconds``), raised to ``retry_after`` (capped at a day) when the
    upstream gave one. None when the run was no longer the current one (nothing changed).
    """
    now = now or utcnow()
    if job.attempts >= job.max_attempts:
        return dead(session, job, f"attempt {job.attempts}/{job.max_attempts}: {error}", now=now)
    delay = backoff_delay(job.attempts, base=backoff, rand=rand)
    if retry_after is not None:
        delay = max(delay, min(retry_after, RETRY_AFTER_MAX))
    at = now + timedelta(seconds=delay)
    # a rerun owed is the retry itself: it runs as a new request (the next generation)
    if not _finish_run(session, job, now, state=FAILED, run_after=at, last_error=error[:ERROR_MAX], rerun=False,
                       generation=Job.generation + case((Job.rerun.is_(True), 1), else_=0)):
        return None
    return Outcome(FAILED, at)


def mark_published(session: Session, job_id: str, run_after: datetime, *, at: datetime | None = None) -> bool:
    """Record that a message for the job's due time ``run_after`` was sent (with a countdown: ``at`` is when it
    becomes deliverable, by default ``run_after``), so the reconciler does not publish that due time again. False
    when the job has moved on meanwhile (claimed, or due at another time)."""
    result = session.execute(
        update(Job)
        .where(Job.job_id == job_id, Job.state.in_((DEFERRED, FAILED)), Job.run_after == run_after)
        .values(published_at=at or run_after)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


#: ``last_error`` of a run whose lease ran out on its last attempt.
LAST_TRY = "lease expired on the last attempt (the worker died or hung)"


def lost(session: Session, *, stale_after: float, now: datetime | None = None, limit: int = 1000,
         gave_up: Callable[[Job, str], Any] | None = None) -> list[Job]:
    """Jobs whose Celery message may be gone, to publish again (the reconciler); each is published once per reason,
    however long the workers lag (``published_at`` records the last message; duplicates would be harmless, but a
    backlog re-published every minute floods the broker):

    * ``queued`` and untouched for ``stale_after`` seconds (Redis flushed, or the publish after commit never
      happened), then again once per ``stale_after`` while it stays queued;
    * ``deferred``/``failed`` whose ``run_after`` has come and for which no message was sent since (retries too
      long to hold as a Celery countdown), then again once per ``stale_after`` while no worker claims it;
    * ``running`` whose lease expired (the worker died): claimable again, published once after the lease ran out
      (then once per ``stale_after``); or, when its attempts are used up, ``dead``, and ``gave_up(job, error)`` runs
      in this transaction (the job kind's ``on_dead``: a Grant waiting for a first fetch becomes ``errored``); or
      ``queued`` afresh instead when a notification asked for another run during it.

    Every returned job gets ``published_at = now``: call in a transaction and publish them after it commits.
    """
    now = now or utcnow()
    cutoff = now - timedelta(seconds=stale_after)
    expired = and_(Job.state == RUNNING, Job.lease_until < now)
    rearmed = []
    for job in session.scalars(select(Job).where(expired, Job.attempts >= Job.max_attempts).order_by(Job.created)
                               .limit(limit).execution_options(populate_existing=True)).all():
        # one guarded UPDATE per job, as at the end of any run: a mark set meanwhile queues it afresh instead
        outcome = dead(session, job, LAST_TRY, now=now, guard=(Job.lease_until < now,))
        if outcome is not None and outcome.state == DEAD and gave_up is not None:
            gave_up(job, LAST_TRY)
        elif outcome is not None and outcome.state == QUEUED:
            rearmed.append(job.job_id)
    take_new_jobs(session)  # the re-armed jobs are returned below: published by the caller
    not_since = or_(Job.published_at.is_(None), Job.published_at < cutoff)
    rows = list(session.scalars(
        select(Job)
        .where(or_(
            and_(Job.state == QUEUED, Job.modified < cutoff, not_since),
            and_(Job.state.in_((DEFERRED, FAILED)), Job.run_after <= now,
                 or_(Job.published_at.is_(None), Job.published_at < Job.run_after, Job.published_at < cutoff)),
            and_(expired, Job.attempts < Job.max_attempts,
                 or_(Job.published_at.is_(None), Job.published_at < Job.lease_until, Job.published_at < cutoff)),
            Job.job_id.in_(rearmed),
        ))
        .order_by(Job.created)
        .limit(limit)
        .execution_options(populate_existing=True)
    ))
    if rows:
        session.execute(
            update(Job).where(Job.job_id.in_([job.job_id for job in rows])).values(published_at=now)
            .execution_options(synchronize_session=False)
        )
    return rows
