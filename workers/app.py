"""The Celery application on Redis, built from the gateway configuration: ``make_celery(config)``.

Nothing here builds an app at import time. For ``celery -A`` there is a lazy module attribute:
``celery -A workers.app:app worker`` builds the app from ``load_config()`` (``GREENBRIDGE_CONFIG`` and
``GREENBRIDGE_*``) the first time ``workers.app.app`` is read, once per process. ``greenbridge worker`` and
``greenbridge beat`` build it themselves from ``--config``.

The reliable configuration (docs: ../shared/reference/ecosystem.md §2.1, Celery ``docs/userguide/configuration.rst``):

* acks late, reject (requeue) on worker loss, prefetch 1: a message is removed from Redis only after its task ran,
  a killed pool process puts it back, and a worker never hoards messages other workers could run;
* one visibility timeout (:data:`VISIBILITY_TIMEOUT`) for the broker transport, the result-backend transport and
  the top-level setting; every task time limit and every retry countdown stays well below it, so Redis never
  restores a message that is still running or waiting (the redelivery loop of celery#2599/kombu#337). Longer
  waits (long backoff, a distant Retry-After, a deferred 202) live in the jobs table and the reconciler re-publishes
  them when due;
* bounded broker connections (socket timeouts, health checks, 3 publish retries) so a dead Redis fails fast;
* no result backend: outcomes are recorded in the jobs table, the single source of truth;
* queues ``http``, ``sftp``, ``translate`` and ``notify``; a job's queue is chosen by its kind (workers.kinds);
* task events on (received, started, succeeded, failed, and sent for the tasks the workers publish), so Flower and
  ``celery events`` see the workers (docs/operations.md "Flower"); without a listener they cost one Redis PUBLISH
  each.

``make_celery`` takes any object with the ``GatewayConfig`` attributes it reads (``redis_url``, ``database_url``,
``data_dir`` and what bridge.ingest needs); only the lazy ``app`` attribute loads one (bridge.config.load_config).
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from kombu import Queue

from workers.jobs import QUEUES, RETRY_COUNTDOWN_MAX

VISIBILITY_TIMEOUT = 2 * 3600  # seconds; must exceed the longest task and the longest countdown
TASK_TIME_LIMIT = 3600  # hard limit per task (pool process killed); < VISIBILITY_TIMEOUT
TASK_SOFT_TIME_LIMIT = 3300  # SoftTimeLimitExceeded first, so the job is recorded as failed
RECONCILE_EVERY = 60.0  # seconds between reconciler runs (beat)
DEFAULT_QUEUE = "translate"

assert TASK_SOFT_TIME_LIMIT < TASK_TIME_LIMIT < VISIBILITY_TIMEOUT
assert RETRY_COUNTDOWN_MAX < VISIBILITY_TIMEOUT


def celery_settings(config: Any) -> dict[str, Any]:
    """The Celery settings for ``config`` (a GatewayConfig); exposed for tests and documentation."""
    if not getattr(config, "redis_url", ""):
        raise ValueError("the workers need a Redis URL: set redis_url in the configuration or GREENBRIDGE_REDIS_URL "
                         "(for example redis://127.0.0.1:6379/0)")
    transport = {
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "socket_timeout": 10,
        "socket_connect_timeout": 5,
        "health_check_interval": 25,
        "max_retries": 3,
    }
    return {
        "broker_url": config.redis_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": {"visibility_timeout": VISIBILITY_TIMEOUT},
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "broker_connection_retry_on_startup": True,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_max_tasks_per_child": 200,
        "task_time_limit": TASK_TIME_LIMIT,
        "task_soft_time_limit": TASK_SOFT_TIME_LIMIT,
        "task_queues": [Queue(name, routing_key=name) for name in QUEUES],
        "task_default_queue": DEFAULT_QUEUE,
        "task_routes": {"gb.reconcile": {"queue": "notify"}},
        "beat_schedule": {
            "reconcile-jobs": {"task": "gb.reconcile", "schedule": RECONCILE_EVERY},
        },
        "beat_schedule_filename": str(config.data_dir / "celerybeat-schedule"),
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }


def make_celery(config: Any) -> Celery:
    """A Celery app for ``config``, with the greenbridge tasks (workers.tasks) registered on it."""
    import workers.tasks  # noqa: F401 - registers gb.run_job and gb.reconcile (shared tasks)

    app = Celery("greenbridge", set_as_current=False)
    app.conf.update(celery_settings(config))
    app.greenbridge_config = config
    return app


_app: Celery | None = None


def __getattr__(name: str) -> Any:
    """``workers.app.app``: the app from ``load_config()``, built on first access (for ``celery -A workers.app``)."""
    global _app
    if name != "app":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    if _app is None:
        from bridge.config import load_config

        _app = make_celery(load_config())
    return _app
