"""The bridge's state for the ops team (docs/operations.md "The ops dashboard"): :func:`collect_status` gathers it
from the store (cds.store.ops: bounded queries), the broker (queue lengths) and the workers (a Celery ping), as one
JSON-able dictionary. The gateway renders it at ``/ops`` and serves it at ``/ops/status``, ``greenbridge status``
prints it, and ``/metrics`` turns it into gauges (bridge.metrics.state_families).

Every probe of the broker is bounded by a short timeout and reported, not raised: a dashboard must still show the
store when Redis is down, and say that Redis is down.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from cds.store import ops
from cds.store.jobs import QUEUES
from cds.store.models import Job

#: Seconds a broker or worker probe may take.
BROKER_TIMEOUT = 2.0
WORKER_PING_TIMEOUT = 1.0
#: How many jobs the lists show (dead, deferred, latest errors).
LIST_LIMIT = 50
ERRORS_SHOWN = 10
WINDOW = timedelta(hours=1)


def _when(value: datetime | None) -> str | None:
    return value.astimezone(UTC).isoformat() if value is not None else None


def job_json(job: Job) -> dict[str, Any]:
    return {"job_id": job.job_id, "kind": job.kind, "queue": job.queue, "state": job.state,
            "custodian": job.custodian_id or "", "attempts": job.attempts, "max_attempts": job.max_attempts,
            "last_error": job.last_error, "created": _when(job.created), "modified": _when(job.modified),
            "run_after": _when(job.run_after), "request_id": job.request_id}


def broker_state(redis_url: str, queues: Iterable[str] = QUEUES, timeout: float = BROKER_TIMEOUT) -> dict[str, Any]:
    """``{"reachable", "queues": {name: messages waiting}, "unacked", "error"?}`` from the Redis broker (kombu's
    view of Celery's queues: the list of each queue and its priority lists)."""
    if not redis_url:
        return {"reachable": False, "queues": {}, "unacked": 0, "error": "no broker configured (redis_url)"}
    from kombu import Connection

    options = {"socket_timeout": timeout, "socket_connect_timeout": timeout, "max_retries": 0}
    try:
        with Connection(redis_url, connect_timeout=timeout, transport_options=options) as connection:
            connection.ensure_connection(max_retries=1, timeout=timeout)
            channel = connection.default_channel
            sizes = {name: int(channel._size(name)) for name in queues}
            unacked = int(channel.client.hlen(channel.unacked_key))
    except Exception as error:  # any failure means "not reachable now"; the type and message, never the URL
        return {"reachable": False, "queues": {}, "unacked": 0, "error": f"{type(error).__name__}: {error}"[:300]}
    return {"reachable": True, "queues": sizes, "unacked": unacked}


def workers_online(redis_url: str, timeout: float = WORKER_PING_TIMEOUT) -> list[dict[str, Any]] | None:
    """The workers answering a broadcast within ``timeout`` and the queues each consumes; None when the broker
    could not be asked."""
    if not redis_url:
        return None
    from celery import Celery

    app = Celery("greenbridge-ops", broker=redis_url, set_as_current=False)
    app.conf.update(broker_connection_timeout=timeout, broker_connection_retry=False,
                    broker_transport_options={"socket_connect_timeout": timeout, "socket_timeout": timeout + 1,
                                              "max_retries": 0})
    try:
        replies = app.control.inspect(timeout=timeout).active_queues() or {}
    except Exception:  # the broker is down: said by broker_state
        return None
    finally:
        app.close()
    return [{"name": name, "queues": sorted(queue["name"] for queue in answered or [])}
            for name, answered in sorted(replies.items())]


def _activity(session: Session, now: datetime) -> tuple[list[dict[str, Any]], dict[str, dict[str, int]]]:
    """The last hour minute by minute (every minute present, all custodians added up) and per custodian."""
    start = ops.minute_of(now - WINDOW) + timedelta(minutes=1)
    minutes = {start + timedelta(minutes=i): {"readings": 0, "upstream_requests": 0, "upstream_errors": 0,
                                              "notifications": 0, "sftp_bytes": 0} for i in range(60)}
    per_custodian: dict[str, dict[str, int]] = {}
    for row in ops.activity_since(session, start):
        bucket = minutes.get(row.minute)
        if bucket is None:
            continue
        totals = per_custodian.setdefault(row.custodian_id, {"readings": 0, "upstream_requests": 0,
                                                             "upstream_errors": 0, "upstream_ms": 0,
                                                             "notifications": 0, "notifications_refused": 0,
                                                             "sftp_bytes": 0})
        for name in totals:
            totals[name] += getattr(row, name)
        for name in bucket:
            bucket[name] += getattr(row, name)
    series = [{"minute": _when(minute), **values} for minute, values in sorted(minutes.items())]
    return series, per_custodian


def collect_status(sessions: sessionmaker[Session], config: Any, *, now: datetime | None = None,
                   ping_workers: bool = True, broker: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything the ops dashboard shows, as JSON-able data (times in RFC 3339 UTC)."""
    now = now or datetime.now(UTC)
    with sessions() as session:
        counts = ops.job_counts(session, now)
        dead_total, dead = ops.jobs_in(session, "dead", LIST_LIMIT)
        deferred_total, deferred = ops.deferred_waiting(session, LIST_LIMIT)
        errors = ops.latest_errors(session, ERRORS_SHOWN)
        grants = ops.grants_by_status(session)
        series, per_custodian = _activity(session, now)
        health = ops.custodian_health(session)
    custodians = []
    names = {custodian.id: custodian.name for custodian in config.custodians}
    for custodian_id in sorted(set(names) | set(health) | {c for c in per_custodian if c}):
        row = health.get(custodian_id)
        hour = per_custodian.get(custodian_id, {})
        requests = hour.get("upstream_requests", 0)
        custodians.append({
            "id": custodian_id, "name": names.get(custodian_id, custodian_id), "configured": custodian_id in names,
            "last_success": _when(row.last_success) if row else None,
            "last_failure": _when(row.last_failure) if row else None,
            "last_error": row.last_error if row else None,
            "last_latency_ms": row.last_latency_ms if row else None,
            "last_notification": _when(row.last_notification) if row else None,
            "requests_last_hour": requests, "errors_last_hour": hour.get("upstream_errors", 0),
            "mean_latency_ms_last_hour": (hour.get("upstream_ms", 0) // requests) if requests else None,
            "readings_last_hour": hour.get("readings", 0), "notifications_last_hour": hour.get("notifications", 0),
            "notifications_refused_last_hour": hour.get("notifications_refused", 0),
        })
    for row in counts:
        for key in ("oldest_waiting", "last_error_at"):
            row[key] = _when(row[key])
    return {
        "generated": _when(now),
        "broker": broker if broker is not None else broker_state(config.redis_url),
        "workers": workers_online(config.redis_url) if ping_workers else None,
        "jobs": counts,
        "dead": {"count": dead_total, "jobs": [job_json(job) for job in dead]},
        "deferred": {"count": deferred_total, "jobs": [job_json(job) for job in deferred]},
        "errors": [job_json(job) for job in errors],
        "grants": grants,
        "activity": series,
        "custodians": custodians,
    }
