"""What the ops team reads (ARCHITECTURE.md "the ops team that keeps the worker queue healthy"): the activity the
processes record, and the bounded queries the ops dashboard, ``/ops/status``, ``greenbridge status`` and
``/metrics`` run over the store.

Recording. A unit of work (a job run, a notification) collects what it did in an :class:`Activity` (upstream
requests with their status and latency, readings stored, SFTP bytes, notification URIs accepted or refused), per
custodian, and :func:`flush` adds it in one short transaction of its own: a row per minute and custodian
(``ops_minutes``, the charts of the last hour; pruned after a day by :func:`prune`) and the custodian's health
(``ops_custodians``: last success, last failure and its error, last latency, last notification; kept). Upserts add
to what other processes recorded in the same minute, so any number of gateways and workers may record at once.

Reading. Every query is bounded whatever the size of the store: counts per (state, custodian, kind) and the oldest
waiting job read one index (``ix_jobs_state_custodian_kind_created``), done jobs are counted over the last hour
only (``ix_jobs_state_modified``), lists are limited, and the activity table holds a day at most.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import case, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from cds.store.jobs import DEAD, DEFERRED, DONE, FAILED, QUEUED, RUNNING
from cds.store.models import Grant, Job, OpsCustodian, OpsMinute

#: Activity rows are kept this long (the dashboard shows the last hour; a day leaves room for a look back).
KEEP_ACTIVITY = timedelta(days=1)
#: Characters of an upstream error kept as a custodian's last error.
ERROR_MAX = 500
WAITING = (QUEUED, FAILED, DEFERRED)
OPEN_STATES = (QUEUED, RUNNING, DEFERRED, FAILED, DEAD)


def minute_of(moment: datetime) -> datetime:
    return moment.astimezone(UTC).replace(second=0, microsecond=0)


@dataclass
class CustodianActivity:
    """What one unit of work did for one custodian."""

    readings: int = 0
    upstream_requests: int = 0
    upstream_errors: int = 0
    upstream_ms: int = 0
    notifications: int = 0
    notifications_refused: int = 0
    sftp_bytes: int = 0
    last_success: datetime | None = None
    last_failure: datetime | None = None
    last_error: str | None = None
    last_latency_ms: int | None = None
    last_notification: datetime | None = None


@dataclass
class Activity:
    """Accumulates what a unit of work did, per custodian id ("" for none), until :func:`flush`. Thread-safe: a
    job's download may report from another thread than its run."""

    custodians: dict[str, CustodianActivity] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _of(self, custodian_id: str | None) -> CustodianActivity:
        return self.custodians.setdefault((custodian_id or "")[:64], CustodianActivity())

    def upstream(self, custodian_id: str | None, *, status: int | None, milliseconds: int, at: datetime,
                 error: str | None = None) -> None:
        """One HTTP exchange with a custodian: ``status`` None when no answer came (timeout, refused, reset).
        A 2xx or 3xx is a success; any other answer, or none, an error."""
        with self._lock:
            entry = self._of(custodian_id)
            entry.upstream_requests += 1
            entry.upstream_ms += max(0, milliseconds)
            entry.last_latency_ms = max(0, milliseconds)
            if status is not None and status < 400:
                entry.last_success = at
            else:
                entry.upstream_errors += 1
                entry.last_failure = at
                entry.last_error = (error or (f"HTTP {status}" if status else "no answer"))[:ERROR_MAX]

    def readings(self, custodian_id: str | None, count: int) -> None:
        with self._lock:
            self._of(custodian_id).readings += max(0, count)

    def sftp_bytes(self, custodian_id: str | None, count: int) -> None:
        with self._lock:
            self._of(custodian_id).sftp_bytes += max(0, count)

    def notifications(self, custodian_id: str | None, *, accepted: int, refused: int, at: datetime) -> None:
        with self._lock:
            entry = self._of(custodian_id)
            entry.notifications += accepted
            entry.notifications_refused += refused
            if accepted:
                entry.last_notification = at

    def __bool__(self) -> bool:
        return bool(self.custodians)


def _insert(session: Session, table: Any):
    return (postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert)(table)


def _later(column: Any, new: Any) -> Any:
    """SQL for the later of a stored time and the one being written (None keeps the stored one): two processes
    recording out of order never move a custodian's health back in time."""
    return case((new.is_(None), column), (column.is_(None), new), (new > column, new), else_=column)


def flush(session: Session, activity: Activity, now: datetime) -> None:
    """Add ``activity`` to the minute of ``now`` and to each custodian's health (the caller commits)."""
    minute = minute_of(now)
    with activity._lock:
        entries = sorted(activity.custodians.items())  # a fixed order: two flushes never wait on each other in a cycle
        activity.custodians = {}
    sums = ("readings", "upstream_requests", "upstream_errors", "upstream_ms", "notifications",
            "notifications_refused", "sftp_bytes")
    for custodian_id, entry in entries:
        values = {name: getattr(entry, name) for name in sums}
        if any(values.values()):
            statement = _insert(session, OpsMinute).values(minute=minute, custodian_id=custodian_id, **values)
            session.execute(statement.on_conflict_do_update(
                index_elements=[OpsMinute.minute, OpsMinute.custodian_id],
                set_={name: getattr(OpsMinute, name) + getattr(statement.excluded, name) for name in sums}))
        if not custodian_id or not (entry.last_success or entry.last_failure or entry.last_notification):
            continue
        health = {"last_success": entry.last_success, "last_failure": entry.last_failure,
                  "last_notification": entry.last_notification}
        statement = _insert(session, OpsCustodian).values(
            custodian_id=custodian_id, last_error=entry.last_error, last_latency_ms=entry.last_latency_ms, **health)
        excluded = statement.excluded
        newer_failure = case((excluded.last_failure.is_(None), False), (OpsCustodian.last_failure.is_(None), True),
                             else_=excluded.last_failure >= OpsCustodian.last_failure)
        session.execute(statement.on_conflict_do_update(
            index_elements=[OpsCustodian.custodian_id],
            set_={**{name: _later(getattr(OpsCustodian, name), getattr(excluded, name)) for name in health},
                  "last_error": case((newer_failure, excluded.last_error), else_=OpsCustodian.last_error),
                  "last_latency_ms": func.coalesce(excluded.last_latency_ms, OpsCustodian.last_latency_ms)}))


def prune(session: Session, now: datetime, keep: timedelta = KEEP_ACTIVITY) -> int:
    """Delete activity older than ``keep``; returns how many minutes (rows) went."""
    return session.execute(delete(OpsMinute).where(OpsMinute.minute < minute_of(now - keep))).rowcount or 0


# ---------------------------------------------------------------------------------------------------- reading


def job_counts(session: Session, now: datetime) -> list[dict[str, Any]]:
    """Per (custodian, kind): the count in each open state, the jobs done in the last hour, and the oldest waiting
    job's creation time (queued, failed or deferred)."""
    rows: dict[tuple[str, str], dict[str, Any]] = {}

    def row(custodian: str | None, kind: str) -> dict[str, Any]:
        return rows.setdefault((custodian or "", kind), {
            "custodian": custodian or "", "kind": kind, **dict.fromkeys(OPEN_STATES, 0), "done_last_hour": 0,
            "oldest_waiting": None, "last_error": None, "last_error_at": None})

    counted = session.execute(
        select(Job.state, Job.custodian_id, Job.kind, func.count(), func.min(Job.created))
        .where(Job.state.in_(OPEN_STATES)).group_by(Job.state, Job.custodian_id, Job.kind))
    for state, custodian, kind, count, oldest in counted:
        entry = row(custodian, kind)
        entry[state] = count
        if state in WAITING and oldest is not None and (entry["oldest_waiting"] is None or
                                                        oldest < entry["oldest_waiting"]):
            entry["oldest_waiting"] = oldest
    done = session.execute(
        select(Job.custodian_id, Job.kind, func.count())
        .where(Job.state == DONE, Job.modified >= now - timedelta(hours=1)).group_by(Job.custodian_id, Job.kind))
    for custodian, kind, count in done:
        row(custodian, kind)["done_last_hour"] = count
    for job in latest_errors(session, limit=200):
        entry = row(job.custodian_id, job.kind)
        if entry["last_error"] is None:
            entry["last_error"], entry["last_error_at"] = job.last_error, job.modified
    return [rows[key] for key in sorted(rows)]


def latest_errors(session: Session, limit: int = 20) -> list[Job]:
    """The failed and dead jobs that changed last, newest first."""
    found = []
    for state in (FAILED, DEAD):  # one range of ix_jobs_state_modified each
        found += session.scalars(select(Job).where(Job.state == state).order_by(Job.modified.desc()).limit(limit))
    return sorted(found, key=lambda job: job.modified, reverse=True)[:limit]


def jobs_in(session: Session, state: str, limit: int = 50) -> tuple[int, list[Job]]:
    """How many jobs are in ``state``, and the newest ``limit`` of them."""
    total = session.scalar(select(func.count()).select_from(Job).where(Job.state == state)) or 0
    rows = list(session.scalars(select(Job).where(Job.state == state).order_by(Job.modified.desc()).limit(limit)))
    return total, rows


def deferred_waiting(session: Session, limit: int = 50) -> tuple[int, list[Job]]:
    """Deferred jobs waiting for a custodian's notification (a 202 answered), oldest first."""
    waiting = (Job.state == DEFERRED, Job.waiting_for.is_not(None))
    total = session.scalar(select(func.count()).select_from(Job).where(*waiting)) or 0
    rows = list(session.scalars(select(Job).where(*waiting).order_by(Job.modified).limit(limit)))
    return total, rows


def grants_by_status(session: Session) -> dict[str, int]:
    return dict(session.execute(select(Grant.status, func.count()).group_by(Grant.status)).all())


def activity_since(session: Session, since: datetime) -> list[OpsMinute]:
    """Every activity row from ``since`` on (a day at most), oldest first."""
    return list(session.scalars(select(OpsMinute).where(OpsMinute.minute >= minute_of(since))
                                .order_by(OpsMinute.minute, OpsMinute.custodian_id)))


def custodian_health(session: Session) -> dict[str, OpsCustodian]:
    return {row.custodian_id: row for row in session.scalars(select(OpsCustodian))}
