"""Publishing the jobs the gateway creates (ARCHITECTURE.md "Durable work"): after the commit, off the request path.

The gateway creates job rows in its transactions (the notification receiver, the consent callback's first fetch, a
revocation to carry upstream); cds.store.jobs.enqueue notes each new or resumed job in ``session.info``. The
publisher listens to the gateway's sessions: after a commit it hands those ids to one background thread that sends
``gb.run_job`` by name through a Celery producer (the gateway never imports ``workers``); after a rollback it drops
them (the rows are gone). A request never waits for Redis, and a lost publish (Redis down, process killed) costs
only latency: the committed ``queued`` row is found by the workers' reconciler (workers.jobs.lost).
"""

from __future__ import annotations

import logging
import queue
import threading
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from cds.store.jobs import take_new_jobs

log = logging.getLogger(__name__)

_STOP = object()


class JobPublisher:
    """Sends ``gb.run_job(job_id)`` to each committed job's queue; a no-op without a Redis URL."""

    def __init__(self, redis_url: str) -> None:
        self.redis_url = redis_url
        self._pending: queue.Queue[Any] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._producer: Any = None

    def attach(self, sessions: sessionmaker[Session]) -> None:
        event.listen(sessions, "after_commit", self._after_commit)
        event.listen(sessions, "after_rollback", take_new_jobs)

    def _after_commit(self, session: Session) -> None:
        jobs = take_new_jobs(session)
        if jobs and self.redis_url:
            self._start()
            for job in jobs:
                self._pending.put(job)

    def _start(self) -> None:
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="greenbridge-job-publisher", daemon=True)
                self._thread.start()

    def _producer_app(self) -> Any:
        if self._producer is None:
            from celery import Celery

            app = Celery("greenbridge-gateway", broker=self.redis_url, set_as_current=False)
            app.conf.update(task_serializer="json", broker_connection_timeout=3,
                            broker_transport_options={"socket_connect_timeout": 3, "socket_timeout": 5,
                                                      "max_retries": 1})
            self._producer = app
        return self._producer

    def _run(self) -> None:
        while True:
            item = self._pending.get()
            if item is _STOP:
                return
            job_id, queue_name = item
            try:
                self._producer_app().send_task("gb.run_job", args=(job_id,), queue=queue_name, retry=False)
            except Exception as error:  # the row is committed: the reconciler publishes it later
                log.warning("job %s not published (%s); the reconciler will", job_id, error)

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is pending (bounded by ``timeout``), then end the thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._pending.put(_STOP)
        thread.join(timeout)
