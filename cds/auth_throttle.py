"""Throttling failed client authentication (RFC 6749 §2.3.1: an endpoint taking client passwords "MUST protect"
itself "against brute force attacks"), built so that it cannot be turned on a victim.

* **A correct secret is never refused.** Secrets are checked first; only a failed authentication meets a limit.
  Our client secrets are 384-bit random values the server generates (cds.secrets), which no rate of guessing
  reaches, so the limits are not what keeps a secret: they bound what failing requests cost and tell a broken
  client to stop. Refusing the right secret would protect nothing and hand anyone who knows a ``client_id`` (every
  authorization URL shows one) a switch that locks its owner out.
* **Failures count per (client id, address).** An attacker failing from address A blocks (client, A) only: the
  owner authenticating from B, and the owner presenting the right secret from A itself (a shared NAT), go through,
  and that success clears the pair's count. After ``per_client_address`` failures within ``window_seconds`` the
  pair is blocked: further failures get 429 with ``Retry-After``. Each new block lasts twice the previous one
  (``window_seconds``, 2×, 4×… up to ``max_block_seconds``); the doubling restarts after a success, or after
  ``max_block_seconds`` without failures.
* **Per address, only noise.** Every failure from an address (unknown client ids, malformed or missing credentials
  included) also counts for the address, with a higher limit (``per_address``) and the same backoff. A blocked
  address slows failing requests only: a correct secret sent from it still authenticates.

Counts are kept in the store (``auth_failures``), so they hold across the gateway's processes; keys are digests
(client ids and addresses come from the request). While a key is blocked its failures are not written again: a
flood of failures costs one lookup each.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from cds.store.models import AuthFailure


@dataclass(frozen=True)
class AuthLimits:
    per_client_address: int = 10
    per_address: int = 100
    window_seconds: int = 60
    max_block_seconds: int = 3600


def _digest(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8", "backslashreplace")).hexdigest()


def failure_keys(client_id: str | None, address: str) -> tuple[str | None, str]:
    """(the pair's key or None without a client id, the address's key)."""
    return (_digest("client-address", client_id, address) if client_id else None), _digest("address", address)


def blocked_for(session: Session, client_id: str | None, address: str, now: int) -> int:
    """Seconds until a *failing* request of this client id from this address is heard again (0: not blocked)."""
    keys = [key for key in failure_keys(client_id, address) if key]
    until = session.scalars(select(AuthFailure.blocked_until).where(AuthFailure.key.in_(keys))).all()
    return max([u - now for u in until if u > now], default=0)


def clear(session: Session, client_id: str, address: str) -> None:
    """A successful authentication: the pair starts again from nothing (the address keeps its count)."""
    pair, _ = failure_keys(client_id, address)
    # Every successful authentication asks: a column read, and a write only when there is something to clear (a
    # DELETE of nothing would still take SQLite's write lock before the request's own writes).
    if session.execute(select(AuthFailure.key).where(AuthFailure.key == pair)).first() is not None:
        session.execute(delete(AuthFailure).where(AuthFailure.key == pair),
                        execution_options={"synchronize_session": False})


def record_failure(session: Session, client_id: str | None, address: str, now: int, limits: AuthLimits) -> None:
    """Count one failure for the pair (when the client exists: ``client_id``) and for the address, blocking a key
    that reaches its limit, and commit: the count must outlive the error response, whose transaction is rolled
    back. The session must hold nothing else (client authentication comes first in every request)."""
    pair, by_address = failure_keys(client_id, address)
    for attempt in range(2):
        try:
            for key, limit in ((pair, limits.per_client_address), (by_address, limits.per_address)):
                if key is not None:
                    _count(session, key, limit, now, limits)
            session.execute(delete(AuthFailure).where(AuthFailure.last_failure < now - limits.max_block_seconds,
                                                      AuthFailure.blocked_until < now))
            session.commit()
            return
        except IntegrityError:  # a concurrent first failure of the same key inserted it first: count again
            session.rollback()
            if attempt:
                raise


def _count(session: Session, key: str, limit: int, now: int, limits: AuthLimits) -> None:
    row = session.get(AuthFailure, key)
    if row is None:
        row = AuthFailure(key=key, window_start=now, failures=0, blocks=0, blocked_until=0, last_failure=now)
        session.add(row)
    if now - row.last_failure > limits.max_block_seconds:
        row.blocks = 0  # quiet long enough: the backoff starts over
    if now - row.window_start >= limits.window_seconds:
        row.window_start, row.failures = now, 0
    row.failures += 1
    row.last_failure = now
    if row.failures >= limit:
        row.blocks += 1
        block = min(limits.window_seconds * 2 ** min(row.blocks - 1, 30), limits.max_block_seconds)
        row.blocked_until = now + block
        row.window_start, row.failures = row.blocked_until, 0
    session.flush()
