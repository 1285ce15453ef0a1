"""The store side of the bridge flow (ARCHITECTURE.md "The bridge flow"): which Grant a custodian's resource feeds,
and what happens to the Grant as its upstream authorization lives and ends.

Grant lifecycle (CDS-WG1-02 §8.2 statuses; issue 6 item 7):

* the consent hop creates the Grant ``pending`` with an ``eta`` and what the customer approved enabled (WG1-02
  §8.2: ``pending`` is valid; its tokens read what has arrived, empty lists at first), and :func:`first_fetch`
  queues the fetch of the customer's subscription; while that fetch waits (a ``202 Accepted``, a retry after a
  failure) :func:`data_expected` moves the ``eta`` to its next attempt;
* :func:`activate`: once the first data is stored the Grant becomes ``active``, its ``eta`` cleared (a changelog
  Message records it, as every Grant change does); :func:`first_fetch_failed` makes it ``errored`` when the first
  fetch gives up;
* later BatchList notifications bring new data; :func:`keeps_syncing` stops fetching after the details'
  ``sync_until`` (what is stored stays visible as the projection allows; :func:`sync_ended` marks it ``stopped``)
  and after ``expires``;
* a refresh token the custodian refuses makes it :func:`needs_authorization` (the customer authorizes again with
  ``cds_grant_id``; the consent hop then makes it ``pending`` again);
* a CDS-side end (the customer's revocation from the receipt, the client closing the Grant) calls
  :func:`end_upstream`, which queues ``revoke_upstream`` jobs: the workers revoke the custodian's Authorization;
* an upstream revocation (a BatchList naming the Authorization, whose status then reads 0 Revoked or 2 Denied)
  calls :func:`revoke_from_upstream`: the Grant becomes ``revoked`` and its tokens stop working at once.

Resource matching (espi.md §4.1): a notification's ``Batch/Subscription/{id}`` URI is matched to an authorization's
``resourceURI`` with the query stripped, and each matching authorization gets a fetch job of its own
(:func:`request_fetch`); a bulk part is matched by its subscription id. Revoked authorizations never
fetch; imported ones without tokens (bridge.upstream.has_tokens) receive bulk parts only.

Plain functions over a session; no network, no configuration reading.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.upstream import resource_key, subscription_id_of, uri_digest
from cds.grants import FINAL, effective_status
from cds.messages import changelog
from cds.secrets import SecretBox
from cds.store.jobs import enqueue, request_run
from cds.store.models import Grant, Job, Token, UpstreamAuthorization
from cds.urls import Urls
from espi.notification import classify_resource

JOB_KEY_MAX = 255  # the jobs.dedupe_key column

#: The statuses a Grant may still receive data in (a ``future`` Grant is fetched ahead of its start; an ``errored``
#: one is tried again when the custodian announces data; bulk deliveries may still reach one that
#: ``needs_authorization``, whose own token no longer works).
FETCHING = frozenset({"pending", "active", "partial", "future", "errored", "delayed", "needs_authorization"})


def notified_uri(uri: str) -> str:
    """A resource URI as notification and fetch jobs name it: scheme and host lower-cased, the fragment dropped and
    a published window in canonical form (espi.notification), so each spelling of one request is one job."""
    parts = urlsplit(classify_resource(uri.strip()).normalized_uri())
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path, parts.query, ""))


def fetch_key(upstream_id: int, uri: str) -> str:
    """The job fetching ``uri`` (a subscription, maybe with a published window) for one upstream authorization."""
    key = f"fetch:{upstream_id}:{notified_uri(uri)}"
    if len(key) <= JOB_KEY_MAX:
        return key
    return f"fetch:{upstream_id}:sha256:{hashlib.sha256(notified_uri(uri).encode()).hexdigest()}"


def request_fetch(session: Session, row: UpstreamAuthorization, uri: str, now: datetime) -> Job:
    """A fetch of ``uri`` with this authorization's token, as its own job (one upstream failure retries only the
    authorization it failed for); asked again, never duplicated, when the resource is notified again
    (cds.store.jobs.request_run). Published after the commit."""
    return request_run(session, "fetch_subscription",
                       {"custodian_id": row.custodian_id, "upstream_id": row.id, "uri": notified_uri(uri)},
                       fetch_key(row.id, uri), queue="http", now=now)


def first_fetch(session: Session, row: UpstreamAuthorization, now: datetime) -> Job:
    """Queue the first fetch of a new upstream authorization's subscription (published after the commit). It is
    the same job later notifications of the plain subscription URI ask again."""
    return request_fetch(session, row, row.resource_uri or "", now)


def _unrevoked(query: Any) -> Any:
    return query.where(UpstreamAuthorization.revoked.is_(None))


def _live(query: Any) -> Any:
    """Unrevoked and holding the customer's tokens (so it can fetch the subscription itself)."""
    return _unrevoked(query).where(UpstreamAuthorization.access_token_encrypted != "")


def authorizations_for_resource(session: Session, custodian_id: str, uri: str) -> list[UpstreamAuthorization]:
    """The live authorizations whose subscription ``uri`` names (query stripped), oldest first."""
    key = resource_key(uri)
    rows = session.scalars(_live(select(UpstreamAuthorization).where(
        UpstreamAuthorization.custodian_id == custodian_id, UpstreamAuthorization.resource_digest == uri_digest(uri)))
        .order_by(UpstreamAuthorization.id))
    return [row for row in rows if resource_key(row.resource_uri) == key]


def authorizations_for_subscription(session: Session, custodian_id: str, subscription_id: str
                                    ) -> list[UpstreamAuthorization]:
    """The unrevoked authorizations whose resourceURI is ``…/Subscription/{subscription_id}`` (a bulk part's owner),
    imported ones included: a bulk is delivered with the client's credentials, so it is how the data of
    Authorizations migrated without customer tokens arrives."""
    rows = session.scalars(_unrevoked(select(UpstreamAuthorization).where(
        UpstreamAuthorization.custodian_id == custodian_id, UpstreamAuthorization.subscription_id == subscription_id))
        .order_by(UpstreamAuthorization.id))
    return [row for row in rows if subscription_id_of(row.resource_uri) == subscription_id]


def authorizations_for_authorization(session: Session, custodian_id: str, uri: str) -> list[UpstreamAuthorization]:
    """Every authorization (live or not) whose authorizationURI is ``uri`` (query stripped)."""
    key = resource_key(uri)
    rows = session.scalars(select(UpstreamAuthorization).where(
        UpstreamAuthorization.custodian_id == custodian_id, UpstreamAuthorization.authorization_digest ==
        uri_digest(uri)).order_by(UpstreamAuthorization.id))
    return [row for row in rows if resource_key(row.authorization_uri) == key]


def keeps_syncing(grant: Grant, now: datetime) -> bool:
    """Whether new data should still be fetched for ``grant``: a status with access or pending, before every
    entry's ``sync_until`` (an entry without one syncs for the Grant's life)."""
    if effective_status(grant, now) not in FETCHING:
        return False
    ends = [entry.get("sync_until") for entry in grant.authorization_details if isinstance(entry, dict)]
    if not ends or any(end in (None, "") for end in ends):
        return True
    latest = max(_instant(end) for end in ends)
    return latest is None or now < latest


def _instant(value: Any) -> datetime | None:
    from datetime import UTC

    try:
        moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _log_change(session: Session, grant: Grant, before: dict[str, Any], *, urls: Urls, box: SecretBox,
                now: datetime, why: str) -> None:
    after = {"status": grant.status, "enabled_scope": grant.enabled_scope,
             "enabled_authorization_details": list(grant.enabled_authorization_details)}
    changes = [{"field": key, "previous_value": before[key], "new_value": after[key]}
               for key in after if before[key] != after[key]]
    if changes:
        changelog(session, grant.registration_id, related_uri=urls.grant(grant.grant_id), related_type="grant",
                  name="Grant updated", description=f"Grant {grant.grant_id} of Client {grant.client_id}: {why}.",
                  changes=changes, box=box, now=now)


def _before(grant: Grant) -> dict[str, Any]:
    return {"status": grant.status, "enabled_scope": grant.enabled_scope,
            "enabled_authorization_details": list(grant.enabled_authorization_details)}


#: Statuses of a Grant whose feed runs on schedule (``partial``: on schedule for what its utility provides).
SYNCED = frozenset({"active", "partial"})
#: Statuses that stored data turns into ``active``: waiting for the first data, or its fetch failed before.
ACTIVATED_BY_DATA = frozenset({"pending", "errored"})


def is_narrowed(grant: Grant) -> bool:
    """Whether the Grant enables less than it was granted (its utility cannot provide part of it)."""
    return (set(grant.enabled_scope.split()) != set(grant.scope.split())
            or grant.enabled_authorization_details != grant.authorization_details)


def activate(session: Session, grant: Grant, *, urls: Urls, box: SecretBox, now: datetime) -> bool:
    """A ``pending`` (or ``errored``) Grant whose data is stored becomes ``active``, or ``partial`` when the consent
    hop enabled less than was requested (WG1-02 §8.2: access limited to the ``enabled_*`` values; what was left out
    is on the receipt). A Grant from before partial grants existed has nothing enabled yet: it gets everything."""
    if grant.status not in ACTIVATED_BY_DATA:
        return False
    before = _before(grant)
    if not grant.enabled_scope:
        grant.enabled_scope = grant.scope
        grant.enabled_authorization_details = list(grant.authorization_details)
    grant.status = "partial" if is_narrowed(grant) else "active"
    grant.eta = None
    grant.modified = now
    _log_change(session, grant, before, urls=urls, box=box, now=now,
                why="the customer's data arrived from the data custodian")
    return True


def data_expected(grant: Grant, at: datetime, *, now: datetime) -> bool:
    """The first fetch of a ``pending`` Grant will try again at ``at`` (after a ``202 Accepted`` or a failure): its
    ``eta`` moves there, so clients read the next real chance of data rather than a time already past. The estimate
    is no change a client must be told of: no changelog Message."""
    if at.microsecond:  # whole seconds, rounded up: never earlier than the attempt
        at = at.replace(microsecond=0) + timedelta(seconds=1)
    if grant.status != "pending" or grant.eta == at:
        return False
    grant.eta = at
    grant.modified = now
    return True


def first_fetch_failed(session: Session, grant: Grant, *, urls: Urls, box: SecretBox, now: datetime,
                       error: str) -> bool:
    """The first fetch gave up: a ``pending`` Grant becomes ``errored`` (WG1-02 §8.2: internal error), so the
    client sees it instead of an ``eta`` that never comes; data arriving later still activates it."""
    if grant.status != "pending":
        return False
    before = _before(grant)
    grant.status = "errored"
    grant.eta = None
    grant.modified = now
    _log_change(session, grant, before, urls=urls, box=box, now=now,
                why=f"the customer's data could not be fetched from the data custodian ({error[:200]})")
    return True


def sync_ended(session: Session, grant: Grant, *, urls: Urls, box: SecretBox, now: datetime) -> bool:
    """An ``active`` (or ``partial``) Grant past its ``sync_until`` becomes ``stopped`` (WG1-02 §8.2: the feed
    stopped, existing data is still accessible) the first time a notification finds it so."""
    if grant.status not in SYNCED or effective_status(grant, now) not in SYNCED or keeps_syncing(grant, now):
        return False
    before = _before(grant)
    grant.status = "stopped"
    grant.modified = now
    _log_change(session, grant, before, urls=urls, box=box, now=now, why="sync_until passed; no new data is fetched")
    return True


def needs_authorization(session: Session, grant: Grant, *, urls: Urls, box: SecretBox, now: datetime,
                        why: str) -> bool:
    """The custodian stopped honouring the authorization (its refresh token was refused): the Grant waits for the
    customer to authorize again (WG1-02 §8.2 ``needs_authorization``: a Grant Authorization Request with
    ``cds_grant_id``); the data already stored stays readable."""
    if grant.status in FINAL or grant.status == "needs_authorization":
        return False
    before = _before(grant)
    grant.status = "needs_authorization"
    grant.eta = None  # an estimate only while pending (WG1-02 §8.1)
    grant.modified = now
    _log_change(session, grant, before, urls=urls, box=box, now=now, why=why)
    return True


def revoke_from_upstream(session: Session, row: UpstreamAuthorization, *, urls: Urls, box: SecretBox,
                         now: datetime, why: str) -> bool:
    """The custodian's Authorization ended: mark the row, and revoke its Grant (tokens dead at once) unless the Grant
    still has another live upstream authorization. True when the Grant changed."""
    if row.revoked is None:
        row.revoked = now
        row.modified = now
    others = session.scalars(_unrevoked(select(UpstreamAuthorization.id).where(
        UpstreamAuthorization.grant_id == row.grant_id, UpstreamAuthorization.id != row.id))).first()
    grant = session.get(Grant, row.grant_id)
    if grant is None or others is not None or grant.status in FINAL:
        return False
    before = _before(grant)
    grant.status = "revoked"
    grant.enabled_scope = ""
    grant.enabled_authorization_details = []
    grant.eta = None
    grant.modified = now
    session.execute(update(Token).where(Token.grant_id == grant.grant_id)
                    .values(access_revoked=True, refresh_revoked=True))
    _log_change(session, grant, before, urls=urls, box=box, now=now, why=why)
    return True


def end_upstream(session: Session, grant_id: str, now: datetime) -> list[Job]:
    """The Grant ended on the CDS side: queue the revocation of each of its unrevoked upstream authorizations
    (imported ones too: the revocation uses the client's token)."""
    rows = session.scalars(_unrevoked(select(UpstreamAuthorization).where(UpstreamAuthorization.grant_id == grant_id)))
    return [enqueue(session, "revoke_upstream", {"custodian_id": row.custodian_id, "upstream_id": row.id},
                    f"revoke-upstream:{row.id}", queue="http", now=now) for row in rows]
