"""Publishing the jobs the gateway creates (ARCHITECTURE.md "Durable work"): after the commit, off the request path.

The gateway creates job rows in its transactions (the notification receiver, the consent callback's first fetch, a
revocation to carry upstream); cds.store.jobs.enqueue notes each new or resumed job in ``session.info``. The
publisher listens to the gateway's sessions: after a commit it hands those ids to one background thread that sends
``gb.run_job`` by name through a Celery producer (the gateway never imports ``workers``); after a rollback it drops
them (the rows are gone). A request never waits for Redis.

While Redis does not answer, the thread keeps what it could not send (up to :data:`UNSENT_MAX` jobs, once each)
and tries again after 0.5 s, doubling to :data:`RETRY_MAX`: once Redis answers again every kept job is sent within
seconds (issue 13 item 9), not at the reconciler's next look at stale jobs (15 minutes). What a stopped or killed
gateway still held, and what did not fit, costs only latency: the committed ``queued`` row is found by the workers'
reconciler (workers.jobs.lost).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

from cds.store.jobs import take_new_jobs

log = logging.getLogger(__name__)

_STOP = object()
RETRY_FIRST = 0.5  # seconds before the first retry once Redis stopped answering
RETRY_MAX = 5.0  # the retries' interval doubles up to this
UNSENT_MAX = 100_000  # jobs kept while Redis is away (about 100 bytes each); the reconciler publishes the rest


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
        unsent: dict[str, str] = {}  # job id → queue, in the order they came; a job is kept once
        retry_at, delay, dropped = 0.0, RETRY_FIRST, 0
        while True:
            try:
                item = self._pending.get(timeout=max(0.0, retry_at - time.monotonic()) if unsent else None)
            except queue.Empty:
                item = None
            stop = False
            while item is not None:  # take everything that is waiting, without sending yet
                if item is _STOP:
                    stop = True
                elif item[0] in unsent or len(unsent) < UNSENT_MAX:
                    unsent[item[0]] = item[1]
                else:
                    dropped += 1
                try:
                    item = self._pending.get_nowait()
                except queue.Empty:
                    item = None
            if stop or not unsent or time.monotonic() >= retry_at:
                failed = self._send(unsent, first_failure=delay == RETRY_FIRST)
                if failed is None:
                    if delay > RETRY_FIRST:
                        log.info("Redis answers again: the jobs held meanwhile are published")
                    retry_at, delay = 0.0, RETRY_FIRST
                else:
                    retry_at, delay = time.monotonic() + delay, min(delay * 2, RETRY_MAX)
            if dropped:
                log.warning("%d job(s) not kept for publishing (%d held already); the reconciler will", dropped,
                            len(unsent))
                dropped = 0
            if stop:
                if unsent:
                    log.warning("%d job(s) not published before stopping; the reconciler will", len(unsent))
                return

    def _send(self, unsent: dict[str, str], first_failure: bool) -> Exception | None:
        """Sends the kept jobs in order until one fails (Redis away: the rest wait for the next try)."""
        for job_id, queue_name in list(unsent.items()):
            try:
                self._producer_app().send_task("gb.run_job", args=(job_id,), queue=queue_name, retry=False)
            except Exception as error:  # the row is committed: kept, and sent when Redis answers
                if first_failure:
                    log.warning("job %s not published (%s); %d job(s) kept and retried until Redis answers",
                                job_id, error, len(unsent))
                return error
            del unsent[job_id]
        return None

    def stop(self, timeout: float = 5.0) -> None:
        """Send what is pending (bounded by ``timeout``), then end the thread."""
        thread = self._thread
        if thread is None or not thread.is_alive():
            return
        self._pending.put(_STOP)
        thread.join(timeout)
