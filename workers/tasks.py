"""The Celery tasks: thin wrappers over the jobs table (workers.jobs) and the handlers of each job kind.

``gb.run_job(job_id)`` claims the job (a guarded UPDATE: a duplicate or redelivered message claims nothing), runs
the handler registered for its kind, and records the outcome. ``gb.reconcile()`` (beat) re-publishes the jobs whose
message may have been lost, and ends runs whose worker died on their last attempt.

**What a run guarantees** (issue 13 item 8). The handler runs with no store transaction open and makes its network
calls outside any: it reads in short transactions and writes in short ones (workers.kinds.writing), each committed
only while the run still holds the job, so a run taken over after its lease ran out stores nothing more. Data is
written in bounded batches of idempotent upserts keyed by stable ids (bridge.ingest), and what depends on the data
being complete (a Grant's activation, the UsagePoints recorded for its authorization) is written after the last
batch. ``done`` is recorded after the handler's last write, in a transaction of its own guarded by the run's
attempt. A run that dies (a killed worker, a lost lease) or fails half-way leaves the batches it committed; the
next run writes them again and converges to the same rows (``cds_created`` of what the first run stored is kept,
``cds_synced`` moves), so nothing is stored twice and nothing is lost.

A handler is a plain function ``handler(session, job, config)``; it raises :class:`workers.jobs.RetryLater`,
:class:`workers.jobs.PermanentError` or :class:`workers.jobs.Defer` to choose the outcome; any other exception is
a transient failure (retried with backoff until ``max_attempts``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

from celery import shared_task
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from bridge import metrics
from cds.store import ops
from cds.store.jobs import JOB_ID, REQUEST_ID
from cds.store.models import Job
from workers import jobs

# The upstream job kinds register themselves on import (workers.kinds).
from workers import upstream as _upstream  # noqa: F401
from workers.kinds import (
    AFTER_COMMIT,
    HANDLERS,
    PUBLISH,
    RUN,
    RUN_ACTIVITY,
    WARNING,
    Kind,
    Superseded,
    queue_for,
    readings_stored,
    register,
    sessions_for,
    writing,
)

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------------ handlers


@register("ingest_file", queue="translate")
def ingest_file(session: Session, job: Job, config: Any) -> str:
    """Payload ``{"path": FILE, "customer_id": ID, "source"?: NAME}``: translate a Green Button file and upsert
    its objects for the customer (bridge.ingest: stable ids, so a re-run confirms rather than duplicates)."""
    from bridge.ingest import IngestError, translate_options_for
    from bridge.ingest import ingest_file as ingest
    from espi.errors import EspiError

    path, customer = job.payload.get("path"), job.payload.get("customer_id")
    if not isinstance(path, str) or not isinstance(customer, str) or not customer:
        raise jobs.PermanentError("ingest_file needs a payload with path and customer_id")
    try:
        report = ingest(session, path, customer_id=customer, source=job.payload.get("source"),
                        options=translate_options_for(config), batch_transaction=lambda: writing(session))
        readings_stored(session, job.custodian_id, report)
    except FileNotFoundError as exc:
        raise jobs.PermanentError(f"{path}: no such file") from exc
    except (EspiError, IngestError) as exc:  # the file itself is wrong: retrying cannot help
        raise jobs.PermanentError(f"{path}: {exc}") from exc
    return report.summary()


# --------------------------------------------------------------------------------------------------- the runtime

def publish(app: Any, job: Job, *, countdown: float | None = None) -> None:
    """Send ``gb.run_job(job_id)`` to the job's queue; call after the transaction that wrote the job committed."""
    app.send_task("gb.run_job", args=(job.job_id,), queue=job.queue, countdown=countdown)


def submit(app: Any, session: Session, kind: str, payload: dict[str, Any], dedupe_key: str | None = None,
           **options: Any) -> Job:
    """Enqueue (idempotently, in its own transaction) and publish; returns the job."""
    with session.begin():
        job = jobs.enqueue(session, kind, payload, dedupe_key, queue=queue_for(kind), **options)
    if job.state == jobs.QUEUED:
        publish(app, job)
    return job


def _drop_pending(session: Session) -> None:
    jobs.take_new_jobs(session)
    session.info.pop(AFTER_COMMIT, None)
    session.info.pop(WARNING, None)


def execute(config: Any, job_id: str, publish_job: Callable[[str, str], Any] | None = None
            ) -> jobs.Outcome | None:
    """Claim and run one job, recording its outcome; None when there was nothing to run (not runnable).

    Jobs the handler created (fan-out, follow-ups) are passed to ``publish_job(job_id, queue)`` once the
    transaction that created them has committed. Raises :class:`workers.jobs.StoreUnreachable` when the store
    could not be reached to claim the job or to record its outcome (the caller tries again later).
    """
    sessions = sessions_for(config)
    lease = float(getattr(config, "job_lease_seconds", jobs.LEASE_SECONDS))
    # autobegin off: nothing the handler does opens a transaction it did not open on purpose (workers.kinds)
    with sessions(autobegin=False) as session:
        try:
            with session.begin():
                job = jobs.claim(session, job_id, lease_seconds=lease)
        except Exception as error:
            if jobs.store_unreachable(error):
                raise jobs.StoreUnreachable(error, claimed=False) from error
            raise
        if job is None:
            log.info("job %s: not runnable, message dropped", job_id)
            return None
        # the claimed run as it stands: a rolled-back write of the handler cannot expire it
        session.expunge(job)
        kind = HANDLERS.get(job.kind)
        _drop_pending(session)
        session.info[PUBLISH] = publish_job
        session.info[RUN] = (job.job_id, job.attempts, lease)
        # The run's log records carry the request that asked for it and the job (bridge.logs); jobs it creates
        # record the same request id; what it did upstream is added to the ops activity when it ends.
        context = (REQUEST_ID.set(job.request_id), JOB_ID.set(job.job_id), RUN_ACTIVITY.set(ops.Activity()))
        log.info("job %s (%s) started: attempt %d/%d, request %s", job.job_id, job.kind, job.attempts,
                 job.max_attempts, job.request_id or "-")
        elapsed = metrics.timed()
        outcome: jobs.Outcome | None = None
        try:
            with _Heartbeat(sessions, job, lease):
                outcome = _run(session, job, kind, config, publish_job)
            return outcome
        except Exception as error:  # the outcome could not be recorded
            if jobs.store_unreachable(error):
                raise jobs.StoreUnreachable(error, claimed=True) from error
            raise
        finally:
            metrics.task_runtime.labels(job.kind, outcome.state if outcome is not None else "superseded").observe(
                elapsed())
            _record_activity(sessions, RUN_ACTIVITY.get())
            for var, token in zip((REQUEST_ID, JOB_ID, RUN_ACTIVITY), context, strict=True):
                var.reset(token)


def _record_activity(sessions: sessionmaker[Session], activity: ops.Activity | None) -> None:
    """Add what the run did to the ops activity, in a transaction of its own (counted whatever the outcome)."""
    if not activity:
        return
    try:
        with sessions() as session, session.begin():
            ops.flush(session, activity, jobs.utcnow())
    except Exception as error:  # figures for the dashboard only: the job's outcome is recorded
        log.warning("ops activity not recorded (%s)", error)


def _run(session: Session, job: Job, kind: Kind | None, config: Any,
         publish_job: Callable[[str, str], Any] | None) -> jobs.Outcome | None:
    try:
        if kind is None:
            raise jobs.PermanentError(f"no handler for job kind {job.kind!r}")
        result = kind.handler(session, job, config)  # its own short transactions (workers.kinds)
        warning = session.info.pop(WARNING, None)
        with session.begin():  # after the handler's last write
            outcome = jobs.done(session, job, result=None if result is None else str(result), warning=warning)
            if outcome is None:
                raise Superseded(f"job {job.job_id}: run {job.attempts} no longer holds the job")
        if warning:
            log.warning("job %s (%s) done with a warning: %s (%s)", job.job_id, job.kind, warning, result)
        else:
            log.info("job %s (%s) done: %s", job.job_id, job.kind, result)
        if outcome.state == jobs.QUEUED:
            log.info("job %s (%s): notified during the run; queued again", job.job_id, job.kind)
        _after_commit(session, publish_job)
        return outcome
    except Superseded:
        _drop_pending(session)
        log.warning("job %s: lease lost during the run; the current run records the outcome", job.job_id)
        return None
    # Each outcome below is recorded in a transaction of its own. An outcome may be ``queued`` instead (a
    # notification asked for another run meanwhile): it is published after the commit.
    except jobs.Defer as exc:
        _drop_pending(session)
        with session.begin():
            outcome = jobs.deferred(session, job, exc.until, waiting_for=exc.waiting_for, message=str(exc),
                                    payload=exc.payload)
            if outcome is not None and outcome.state == jobs.DEFERRED and outcome.run_after is not None:
                _on_wait(session, job, kind, config, outcome.run_after)
        if outcome is not None:
            log.info("job %s (%s) deferred until %s: %s", job.job_id, job.kind, outcome.run_after.isoformat(), exc)
        return outcome
    except jobs.PermanentError as exc:
        _drop_pending(session)
        log.warning("job %s (%s) dead: %s", job.job_id, job.kind, exc)
        with session.begin():
            outcome = jobs.dead(session, job, str(exc))
            _ended_badly(session, job, kind, config, str(exc), outcome)
        return _published_if_queued(session, job, outcome, publish_job)
    except Exception as exc:  # transient by default; bounded by max_attempts
        _drop_pending(session)
        log.warning("job %s (%s) attempt %d failed: %s", job.job_id, job.kind, job.attempts, exc)
        retry_after = exc.retry_after if isinstance(exc, jobs.RetryLater) else None
        error = f"{type(exc).__name__}: {exc}"
        with session.begin():
            outcome = jobs.failed(session, job, error, retry_after=retry_after,
                                  backoff=getattr(config, "job_retry_seconds", jobs.BACKOFF_BASE))
            _ended_badly(session, job, kind, config, error, outcome)
        return _published_if_queued(session, job, outcome, publish_job)


def _ended_badly(session: Session, job: Job, kind: Kind | None, config: Any, error: str,
                 outcome: jobs.Outcome | None) -> None:
    """In the transaction recording a failed or dead outcome: ``on_dead`` when the job gave up for good,
    ``on_wait`` when a retry is due later."""
    if outcome is not None and outcome.state == jobs.DEAD:
        _on_dead(session, job, kind, config, error)
    elif outcome is not None and outcome.state == jobs.FAILED and outcome.run_after is not None:
        _on_wait(session, job, kind, config, outcome.run_after)


def _published_if_queued(session: Session, job: Job, outcome: jobs.Outcome | None,
                         publish_job: Callable[[str, str], Any] | None) -> jobs.Outcome | None:
    """After the outcome's commit: a job that a notification queued again instead is published."""
    if outcome is not None and outcome.state == jobs.QUEUED:
        log.info("job %s (%s): notified during the run; queued again", job.job_id, job.kind)
        _after_commit(session, publish_job)
    else:
        jobs.take_new_jobs(session)
    return outcome


def _on_dead(session: Session, job: Job, kind: Kind | None, config: Any, error: str) -> None:
    if kind is None or kind.on_dead is None:
        return
    try:
        with session.begin_nested():
            kind.on_dead(session, job, config, error)
    except Exception as failure:  # the job's own outcome is recorded regardless
        log.warning("job %s (%s): on_dead failed: %s", job.job_id, job.kind, failure)


def _on_wait(session: Session, job: Job, kind: Kind | None, config: Any, at: datetime) -> None:
    if kind is None or kind.on_wait is None:
        return
    try:
        with session.begin_nested():
            kind.on_wait(session, job, config, at)
    except Exception as failure:  # the job's own outcome is recorded regardless
        log.warning("job %s (%s): on_wait failed: %s", job.job_id, job.kind, failure)


def _after_commit(session: Session, publish_job: Callable[[str, str], Any] | None) -> None:
    for action in session.info.pop(AFTER_COMMIT, []):
        try:
            action()
        except Exception as error:  # cleanup only: the job's outcome is already recorded
            log.warning("after-commit action failed: %s", error)
    for job_id, queue in jobs.take_new_jobs(session):
        if publish_job is None:
            continue  # left to the reconciler
        try:
            publish_job(job_id, queue)
        except Exception as error:
            log.warning("job %s not published (%s); the reconciler will", job_id, error)


class _Heartbeat:
    """Renews a running job's lease every third of it, in a thread with its own connection, until the run ends."""

    def __init__(self, sessions: sessionmaker[Session], job: Job, lease: float) -> None:
        self.sessions, self.job_id, self.attempt, self.lease = sessions, job.job_id, job.attempts, lease
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._beat, name=f"lease-{job.job_id}", daemon=True)

    def __enter__(self) -> _Heartbeat:
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopped.set()
        self.thread.join(5)

    def _beat(self) -> None:
        probe = Job(job_id=self.job_id, attempts=self.attempt)
        while not self.stopped.wait(self.lease / 3):
            try:
                with self.sessions() as session, session.begin():
                    if not jobs.renew(session, probe, lease_seconds=self.lease):
                        return  # the run ended or was taken over
            except Exception as error:  # e.g. SQLite busy while the run writes: the next beat tries again
                log.warning("job %s: lease not renewed (%s)", self.job_id, error)


@shared_task(name="gb.run_job", bind=True, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def run_job(self, job_id: str) -> str | None:
    """Run job ``job_id``; a retry due soon is re-published with a countdown (and recorded as published for that
    due time, so the reconciler does not publish it again), a later one left to the reconciler."""
    config = self.app.greenbridge_config
    try:
        outcome = execute(config, job_id, lambda new_id, queue: self.app.send_task(
            "gb.run_job", args=(new_id,), queue=queue))
    except jobs.StoreUnreachable as error:
        # This message must not be dropped (acked with the exception it would leave the job to the reconciler, up
        # to RECONCILE_STALE_AFTER later): it is sent again with a growing countdown. A run that claimed the job
        # before losing the store keeps its lease, so the next delivery comes once the lease expired.
        retries = self.request.retries
        countdown = jobs.store_retry_countdown(
            retries, base=float(getattr(config, "job_retry_seconds", jobs.BACKOFF_BASE)),
            lease=float(getattr(config, "job_lease_seconds", jobs.LEASE_SECONDS)) + 1 if error.claimed else 0.0)
        log.warning("job %s: the store is unreachable (%s); message sent again in %.0f s (%d/%d)", job_id, error,
                    countdown, retries + 1, jobs.STORE_RETRIES)
        raise self.retry(exc=error, countdown=countdown, max_retries=jobs.STORE_RETRIES) from None
    if outcome is None:
        return None
    if outcome.state in (jobs.FAILED, jobs.DEFERRED) and outcome.run_after is not None:
        delay = (outcome.run_after - jobs.utcnow()).total_seconds()
        if delay <= jobs.RETRY_COUNTDOWN_MAX:
            with sessions_for(config)() as session:
                job = jobs.get(session, job_id)
            if job is not None:
                publish(self.app, job, countdown=max(0.0, delay))
                with sessions_for(config)() as session, session.begin():
                    jobs.mark_published(session, job_id, outcome.run_after)
    return outcome.state


def reconcile_jobs(config: Any, send: Callable[[Job], Any], *, stale_after: float | None = None,
                   now: datetime | None = None) -> int:
    """One reconciler pass (workers.jobs.lost): runs whose worker died on their last attempt end ``dead`` with
    their kind's ``on_dead`` in the same transaction; then every job whose message may be lost is passed to
    ``send`` once, after the commit. A job ``send`` fails for is published by the next pass. Returns how many
    were sent."""
    now = now or jobs.utcnow()

    def gave_up(job: Job, error: str) -> None:
        log.warning("job %s (%s) dead: %s", job.job_id, job.kind, error)
        _on_dead(session, job, HANDLERS.get(job.kind), config, error)

    with sessions_for(config)() as session, session.begin():
        found = jobs.lost(session, stale_after=jobs.RECONCILE_STALE_AFTER if stale_after is None else stale_after,
                          now=now, gave_up=gave_up)
        ops.prune(session, now)  # the dashboard's activity of more than a day ago
    unsent = []
    for job in found:
        try:
            send(job)
        except Exception as error:
            log.warning("reconciler: job %s not published (%s); the next pass will", job.job_id, error)
            unsent.append(job.job_id)
    if unsent:
        with sessions_for(config)() as session, session.begin():
            session.execute(update(Job).where(Job.job_id.in_(unsent), Job.published_at == now)
                            .values(published_at=None).execution_options(synchronize_session=False))
    if found:
        log.info("reconciler published %d job(s)", len(found) - len(unsent))
    return len(found) - len(unsent)


@shared_task(name="gb.reconcile", bind=True, acks_late=True, ignore_result=True)
def reconcile(self, stale_after: float | None = None) -> int:
    """Re-publish every job whose message may be lost (:func:`reconcile_jobs`); returns how many were published."""
    return reconcile_jobs(self.app.greenbridge_config, lambda job: publish(self.app, job), stale_after=stale_after)
