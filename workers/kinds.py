"""The job kinds and what their handlers may ask of the run they are in.

A kind is registered with :func:`register` (its handler, its queue, what happens when it gives up); the runtime in
workers.tasks claims a job, looks its kind up here and runs the handler. Handlers (workers.tasks, workers.upstream)
import only this module and workers.jobs, never the runtime, so the runtime can import them to register them.

**Short transactions** (issue 13 item 8). A handler gets a session with no transaction open, which never opens one
by itself (``autobegin=False``): it reads in ``with session.begin():`` blocks, makes its network calls with no
transaction open (a SQLite write lock or a PostgreSQL row lock held across a custodian's answer would stall the
gateway's writes), and writes in ``with writing(session):`` blocks, each a short transaction that commits only while
the run still holds the job (:func:`writing`). Data is written in bounded, idempotent batches (bridge.ingest), so a
run that dies half-way leaves some batches stored, and the next run converges to the same rows.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from celery.signals import worker_process_init
from sqlalchemy.orm import Session, sessionmaker

from bridge import metrics
from cds.store.models import Job
from cds.store.ops import Activity
from workers import jobs

log = logging.getLogger(__name__)

Handler = Callable[[Session, Job, Any], Any]


@dataclass(frozen=True)
class Kind:
    handler: Handler
    queue: str
    #: ``on_dead(session, job, config, error)``: what else must happen when a job of this kind gives up (in the
    #: transaction that records ``dead``), e.g. telling the Grant waiting for it.
    on_dead: Callable[[Session, Job, Any, str], Any] | None = None
    #: ``on_wait(session, job, config, at)``: what else must happen when a run ends with the job to run again at
    #: ``at`` (deferred by a 202, or failed with a retry due), in the transaction that records it, e.g. moving the
    #: ``eta`` of the Grant waiting for it.
    on_wait: Callable[[Session, Job, Any, datetime], Any] | None = None


HANDLERS: dict[str, Kind] = {}


def register(kind: str, *, queue: str, on_dead: Callable[[Session, Job, Any, str], Any] | None = None,
             on_wait: Callable[[Session, Job, Any, datetime], Any] | None = None) -> Callable[[Handler], Handler]:
    """Decorator: ``handler`` runs the jobs of ``kind``, published to ``queue``."""
    if queue not in jobs.QUEUES:
        raise ValueError(f"queue must be one of {', '.join(jobs.QUEUES)}, not {queue!r}")

    def decorate(handler: Handler) -> Handler:
        HANDLERS[kind] = Kind(handler, queue, on_dead, on_wait)
        return handler

    return decorate


def queue_for(kind: str) -> str:
    if kind not in HANDLERS:
        raise KeyError(f"no handler for job kind {kind!r}")
    return HANDLERS[kind].queue


# ------------------------------------------------------------------------------------ what a handler may ask

_sessions: dict[str, sessionmaker[Session]] = {}


def sessions_for(config: Any) -> sessionmaker[Session]:
    """One engine per database URL and process (made lazily, so never shared across a fork)."""
    factory = _sessions.get(config.database_url)
    if factory is None:
        from cds.store.engine import make_engine, make_sessionmaker

        factory = _sessions[config.database_url] = make_sessionmaker(make_engine(config.database_url))
    return factory


@worker_process_init.connect
def _forget_engines(**_kwargs: Any) -> None:
    _sessions.clear()  # a forked pool process opens its own connections


AFTER_COMMIT = "greenbridge.after_commit"
PUBLISH = "greenbridge.publish"
WARNING = "greenbridge.warning"
#: ``session.info`` key: (job id, attempt, lease seconds) of the run the session serves (set by workers.tasks).
RUN = "greenbridge.run"


class Superseded(Exception):
    """The run no longer holds its job (its lease ran out and another run took the job over): nothing more of it
    may be stored; the current run records the outcome."""


@contextlib.contextmanager
def writing(session: Session) -> Iterator[Session]:
    """One short write transaction of the run: the block's writes commit only if, at the end of the block, the run
    still holds the job; otherwise they roll back and :class:`Superseded` ends the run.

    The check is the lease renewal, a guarded UPDATE of the job row fenced by the run's attempt, made last so that
    row locks are taken in the order the end of a run takes them (data, grant, job). It holds the job row until the
    commit: a run taking the job over waits for it, then finds the lease renewed and claims nothing. Jobs the
    block created are published once it has committed (the reconciler publishes them if that fails)."""
    job_id, attempt, lease = session.info[RUN]
    try:
        with session.begin():
            yield session
            session.flush()
            if not jobs.renew(session, Job(job_id=job_id, attempts=attempt), lease_seconds=lease):
                raise Superseded(f"job {job_id}: run {attempt} no longer holds the job; its last writes rolled back")
    except BaseException:
        jobs.take_new_jobs(session)  # rolled back: those rows are gone
        raise
    for new_id, queue in jobs.take_new_jobs(session):
        publish_now(session, new_id, queue)


def warn(session: Session, message: str) -> None:
    """Record that the run succeeded with something the operator must see (e.g. data it could not place): kept in
    the job's ``warning`` when it is done, logged as a WARNING, and shown by ``greenbridge jobs``. Several warnings
    of one run are joined."""
    earlier = session.info.get(WARNING)
    session.info[WARNING] = f"{earlier}; {message}" if earlier else message


def publish_now(session: Session, job_id: str, queue: str) -> bool:
    """Publish a job committed outside the run's transaction (a fan-out that starts before the run ends) with the
    run's publisher; False when there is none (the reconciler will)."""
    publisher = session.info.get(PUBLISH)
    if publisher is None:
        return False
    try:
        publisher(job_id, queue)
    except Exception as error:
        log.warning("job %s not published (%s); the reconciler will", job_id, error)
        return False
    return True


def after_commit(session: Session, action: Callable[[], Any]) -> None:
    """Run ``action`` once the handler's transaction has committed (e.g. delete a downloaded file only when what
    was read from it is stored); dropped when the run fails."""
    session.info.setdefault(AFTER_COMMIT, []).append(action)


#: What the run in this context did for the ops dashboard (upstream requests, readings, SFTP bytes); the runtime
#: (workers.tasks.execute) sets it for each run and adds it to the store when the run ends (cds.store.ops.flush).
RUN_ACTIVITY: ContextVar[Activity | None] = ContextVar("greenbridge_run_activity", default=None)


def activity() -> Activity | None:
    return RUN_ACTIVITY.get()


def readings_stored(session: Session, custodian_id: str | None, report: Any) -> None:
    """Count the readings an ingest placed (bridge.ingest.IngestReport), once the run's transaction committed:
    the ``greenbridge_readings_stored_total`` family and the dashboard's throughput."""
    account = getattr(report, "reading_account", None)
    count = account.placed if account is not None else (getattr(report, "readings", None) or 0)
    run = RUN_ACTIVITY.get()

    def count_them() -> None:
        metrics.readings_stored.labels(custodian_id or "").inc(count)
        if run is not None:
            run.readings(custodian_id, count)

    if count:
        after_commit(session, count_them)
