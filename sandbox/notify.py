"""BatchList notifications (FB_39 PUSH, espi.md §4) and deferred answers (HTTP 202, §4.3).

A notification is the library's BatchList (:func:`espi.notification.build_batch_list`) POSTed to the third
party's ``thirdPartyNotifyUri`` as ``application/atom+xml`` (the GBA contract), without credentials. A failed POST
(transport error or non-2xx answer) is logged and retried with exponential backoff (PSH004: detect and log failed
POSTs, retry later); the third party must accept duplicates, so a retry never asks whether a previous attempt
perhaps arrived. Every attempt is kept in a short log shown on the home page and in ``/sandbox.json``.

Deferred requests: the first GET of a Batch resource answers 202 and schedules its notification; once the
notification has been sent, the same request (path and query) is answered 200 for ``defer_ready_seconds``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import httpx2

from espi.notification import build_batch_list
from sandbox.resources import ATOM_MEDIA_TYPE

log = logging.getLogger("greenbridge.sandbox.notify")


@dataclass
class Attempt:
    """One notification: where, what, and how it went."""

    notify_uri: str
    resources: tuple[str, ...]
    reason: str
    created: float = field(default_factory=time.time)
    attempts: int = 0
    status: str = "pending"  # pending, delivered, failed
    last_error: str = ""

    def as_json(self) -> dict:
        return {"notify_uri": self.notify_uri, "resources": list(self.resources), "reason": self.reason,
                "created": round(self.created, 3), "attempts": self.attempts, "status": self.status,
                "last_error": self.last_error}


class Notifier:
    """Posts BatchLists in background tasks of the running event loop (start() and stop() in the lifespan)."""

    def __init__(self, attempts: int, backoff: float, timeout: float) -> None:
        self.attempts = attempts
        self.backoff = backoff
        self.timeout = timeout
        self.history: collections.deque[Attempt] = collections.deque(maxlen=200)
        self._tasks: set[asyncio.Task] = set()
        self._client: httpx2.AsyncClient | None = None

    async def start(self) -> None:
        self._client = httpx2.AsyncClient(timeout=self.timeout, follow_redirects=False, trust_env=False)

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def spawn(self, coroutine: Awaitable) -> asyncio.Task:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def notify(self, notify_uri: str, resources: Iterable[str], reason: str, delay: float = 0.0,
               before: Callable[[], None] | None = None) -> Attempt:
        """Schedules the POST of a BatchList naming ``resources``; ``before`` runs just before the first attempt."""
        attempt = Attempt(notify_uri, tuple(dict.fromkeys(resources)), reason)
        self.history.append(attempt)
        self.spawn(self._deliver(attempt, delay, before))
        return attempt

    async def _deliver(self, attempt: Attempt, delay: float, before: Callable[[], None] | None) -> None:
        if delay:
            await asyncio.sleep(delay)
        if before is not None:
            before()
        body = build_batch_list(attempt.resources)
        for n in range(1, self.attempts + 1):
            attempt.attempts = n
            try:
                if self._client is None:
                    raise RuntimeError("the notifier is not running")
                response = await self._client.post(attempt.notify_uri, content=body,
                                                   headers={"Content-Type": ATOM_MEDIA_TYPE})
                if 200 <= response.status_code < 300:
                    attempt.status = "delivered"
                    attempt.last_error = ""
                    log.info("notified %s (%s): %s", attempt.notify_uri, attempt.reason, " ".join(attempt.resources))
                    return
                attempt.last_error = f"HTTP {response.status_code}"
            except (httpx2.HTTPError, OSError, RuntimeError) as error:
                attempt.last_error = f"{type(error).__name__}: {error}"
            log.warning("notification to %s failed (attempt %d of %d): %s", attempt.notify_uri, n, self.attempts,
                        attempt.last_error)
            if n < self.attempts:
                await asyncio.sleep(self.backoff * 2 ** (n - 1))
        attempt.status = "failed"
        log.error("notification to %s given up after %d attempts: %s", attempt.notify_uri, self.attempts,
                  " ".join(attempt.resources))


class Deferrals:
    """Requests answered 202: pending until their notification is sent, then ready (200) for a while."""

    def __init__(self, ready_seconds: float) -> None:
        self.ready_seconds = ready_seconds
        self._pending: set[tuple[str, str]] = set()
        self._ready: dict[tuple[str, str], float] = {}

    def is_ready(self, key: tuple[str, str]) -> bool:
        until = self._ready.get(key)
        if until is None:
            return False
        if until < time.monotonic():
            del self._ready[key]
            return False
        return True

    def start(self, key: tuple[str, str]) -> bool:
        """True when this request was not pending yet (the caller schedules its notification)."""
        if key in self._pending:
            return False
        self._pending.add(key)
        return True

    def mark_ready(self, key: tuple[str, str]) -> None:
        self._pending.discard(key)
        self._ready[key] = time.monotonic() + self.ready_seconds
