"""What each upstream authorization covers, and which authorizations a bulk entry that names no subscription
belongs to (ESPI bulk delivery, espi.md §4.2 and §7; the href forms read by :mod:`espi.bulk`).

An ESPI Authorization covers the UsagePoints the customer chose at the custodian; its subscription's feed holds
exactly them. Custodians that write bulk feeds with hrefs below the customer (``…/RetailCustomer/{C}/UsagePoint/
{U}/…``) name no subscription, so the bulk split (:func:`espi.bulk.split_bulk`) asks :class:`BulkOwners` which
authorizations hold an entry:

* :func:`record_usage_points`: whenever an authorization's data is stored (a subscription fetch, a bulk part), the
  UsagePoints its document held are recorded for it (``upstream_usage_points``: the ``{C}`` and ``{U}`` of their
  hrefs), and the authorization learns its RetailCustomer id when its hrefs name one (else it comes from
  ``customerResourceURI``, :func:`bridge.upstream.bind`).
* An entry naming UsagePoint ``U`` (and maybe customer ``C``) belongs to every live (unrevoked) authorization of
  the custodian recorded as holding ``U`` for that customer — a UsagePoint shared under two authorizations goes to
  both. A UsagePoint recorded from hrefs naming no customer (``…/Subscription/{S}/UsagePoint/{U}``, where ids are
  the custodian's own and unique) matches whatever customer an entry names, unless its authorization's
  RetailCustomer is known to be another. When none is recorded: to the customer's only live authorization; or,
  when the customer has several, to the only one whose UsagePoints were never recorded (a recorded one would have
  matched). Anything else is not guessed: the entry stays unplaced, and the reason is kept
  (:attr:`BulkOwners.misses`) for the job's report.
* An entry naming customer ``C`` but no UsagePoint (customer data: accounts, agreements…) belongs to each of the
  customer's live authorizations whose scope has a retail-customer Function Block (51–70).
* Shared resources (ReadingType, LocalTimeParameters) are never asked about: the split copies them into the parts
  that link to them.

Answers are cached per (customer, UsagePoint) for one split (entries of one UsagePoint come together), so a bulk of
any size costs one indexed query per UsagePoint, and memory stays bounded. Each lookup runs in a short transaction
of its own: the split's caller commits other work meanwhile (the fan-out), and on SQLite a read transaction held
open across those commits could no longer write.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Iterable
from datetime import datetime

from sqlalchemy import select, tuple_
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from cds.store.models import UpstreamAuthorization, UpstreamUsagePoint
from espi.bulk import retail_customer_of, usage_point_ref
from espi.scope import ScopeError, parse_scope

#: Function Blocks of retail customer (PII) data: FB_51 … FB_70 (espi.md §5).
CUSTOMER_BLOCKS = frozenset(range(51, 71))
_LENGTH = 128  # upstream_usage_points.retail_customer / usage_point


def record_usage_points(session: Session, row: UpstreamAuthorization, hrefs: Iterable[str], now: datetime) -> int:
    """Record the UsagePoints named by ``hrefs`` (a stored document's UsagePoint ``self`` hrefs) as covered by
    ``row``; returns how many were new. Idempotent, and safe against a concurrent run recording the same ones."""
    refs = {(customer or "", point) for customer, point in filter(None, map(usage_point_ref, hrefs))
            if len(point) <= _LENGTH and len(customer or "") <= _LENGTH}
    if not refs:
        return 0
    customers = {customer for customer, _point in refs if customer}
    if row.retail_customer is None and len(customers) == 1:
        row.retail_customer = customers.pop()
    known = {(customer, point) for customer, point in session.execute(select(
        UpstreamUsagePoint.retail_customer, UpstreamUsagePoint.usage_point).where(
        UpstreamUsagePoint.upstream_id == row.id))}
    new = sorted(refs - known)
    if new:
        dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
        session.execute(dialect.insert(UpstreamUsagePoint).values([
            {"upstream_id": row.id, "custodian_id": row.custodian_id, "retail_customer": customer,
             "usage_point": point, "first_seen": now, "last_seen": now} for customer, point in new])
            .on_conflict_do_nothing())
    seen_again = sorted(refs & known)
    if seen_again:
        session.execute(UpstreamUsagePoint.__table__.update().where(
            UpstreamUsagePoint.upstream_id == row.id,
            tuple_(UpstreamUsagePoint.retail_customer, UpstreamUsagePoint.usage_point).in_(seen_again))
            .values(last_seen=now))
    return len(new)


class BulkOwners:
    """``owners_of`` for :func:`espi.bulk.split_bulk` over custodian ``custodian_id``'s live authorizations, read
    through ``sessions``: owner names are the authorizations' ids as strings (see the module docstring for the
    rules). :attr:`misses` counts, per reason, the distinct UsagePoints and customers that could not be placed."""

    def __init__(self, sessions: sessionmaker[Session], custodian_id: str, cache_size: int = 4096) -> None:
        self._sessions = sessions
        self._custodian_id = custodian_id
        self._cache: OrderedDict[tuple[str, str | None, str | None], tuple[str, ...]] = OrderedDict()
        self._cache_size = cache_size
        self.misses: Counter[str] = Counter()
        #: UsagePoints placed by their customer alone (no authorization had recorded them yet)
        self.placed_by_customer = 0

    def __call__(self, href: str) -> tuple[str, ...]:
        ref = usage_point_ref(href)
        key: tuple[str, str | None, str | None]
        if ref is not None:
            key = ("usage_point", ref[0], ref[1])
        else:
            customer = retail_customer_of(href)
            if customer is None:
                return ()  # neither customer nor UsagePoint: the split's link rules decide
            key = ("customer", customer, None)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        with self._sessions() as session:
            found = self._usage_point(session, key[1], key[2]) if key[0] == "usage_point" else \
                self._customer_data(session, key[1])
        self._cache[key] = found
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return found

    # -- the rules ----------------------------------------------------------------------------------------------

    def _live(self, query):
        return query.where(UpstreamAuthorization.custodian_id == self._custodian_id,
                           UpstreamAuthorization.revoked.is_(None))

    def _usage_point(self, session: Session, customer: str | None, point: str) -> tuple[str, ...]:
        rows = session.execute(self._live(
            select(UpstreamUsagePoint.upstream_id, UpstreamUsagePoint.retail_customer,
                   UpstreamAuthorization.retail_customer)
            .join(UpstreamAuthorization, UpstreamAuthorization.id == UpstreamUsagePoint.upstream_id)
            .where(UpstreamUsagePoint.custodian_id == self._custodian_id, UpstreamUsagePoint.usage_point == point)
        )).all()
        holders: dict[int, str] = {}
        for upstream_id, recorded, of_row in rows:
            known = recorded or of_row or ""
            if customer is not None and known and known != customer:
                continue  # the same UsagePoint id of another customer (ids per customer at some custodians)
            holders[upstream_id] = known
        if holders:
            if customer is None and len(set(holders.values()) - {""}) > 1:
                self.misses[f"UsagePoint {point} is held by authorizations of several customers"] += 1
                return ()
            return tuple(str(upstream_id) for upstream_id in sorted(holders))
        if customer is None:
            self.misses["no live authorization is known to hold the UsagePoint"] += 1
            return ()
        candidates = list(session.scalars(self._live(select(UpstreamAuthorization.id).where(
            UpstreamAuthorization.retail_customer == customer)).order_by(UpstreamAuthorization.id)))
        if len(candidates) > 1:  # those with recorded UsagePoints would have matched above
            recorded = set(session.scalars(select(UpstreamUsagePoint.upstream_id).distinct().where(
                UpstreamUsagePoint.upstream_id.in_(candidates))))
            unknown = [c for c in candidates if c not in recorded]
            candidates = unknown if len(unknown) == 1 else candidates
        if len(candidates) == 1:
            self.placed_by_customer += 1
            return (str(candidates[0]),)
        if not candidates:
            self.misses["no live authorization of its customer"] += 1
        else:
            self.misses["its customer has several live authorizations and none is known to hold the UsagePoint"] += 1
        return ()

    def _customer_data(self, session: Session, customer: str) -> tuple[str, ...]:
        rows = session.execute(self._live(select(UpstreamAuthorization.id, UpstreamAuthorization.scope).where(
            UpstreamAuthorization.retail_customer == customer)).order_by(UpstreamAuthorization.id)).all()
        owners = tuple(str(row_id) for row_id, scope in rows if _customer_scope(scope))
        if not owners:
            self.misses["customer data of a customer with no live authorization to customer data"] += 1
        return owners


def _customer_scope(scope: str | None) -> bool:
    try:
        return bool(CUSTOMER_BLOCKS & set(parse_scope(scope or "").function_blocks))
    except ScopeError:
        return False
