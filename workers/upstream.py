"""The job kinds that talk to legacy custodians (issue 6; ARCHITECTURE.md "The bridge flow"; espi.md §3, §4, §7).

* ``fetch_subscription``: with ``upstream_id``, GET ``Batch/Subscription/{id}`` with that authorization's token (the
  first fetch after consent, or one authorization's share of a notification), translate, upsert under the Grant's
  customer, and activate a pending Grant. A ``202 Accepted`` defers the job until the BatchList naming the resource
  arrives, or until ``deferred_timeout_seconds`` have passed, when it polls again (espi.md §4.3). Without it (a
  BatchList named the subscription), it asks one such job per live authorization of the subscription for a run:
  each unit of upstream work is its own job, so one failure retries only what it failed (issue 12 item 7).
* ``fetch_bulk``: a bulk feed announced by a BatchList, over REST (``Batch/Bulk/{id}`` with the client token,
  FB_35) or SFTP (FB_34, espi.sftp: pinned host key, key authentication, resumable download); the feed is split per
  subscription (espi.bulk), entries naming no subscription (``…/RetailCustomer/{C}/UsagePoint/{U}/…``) per
  authorization holding their UsagePoint or customer (bridge.coverage), and each part becomes an
  ``ingest_bulk_part`` job (the fan-out, on the translate queue). What cannot be placed is counted (entries and
  readings) in the job's result and warning, and logged as a WARNING.
* ``ingest_bulk_part``: one subscription's (or one authorization's) part of a bulk, stored under each Grant whose
  upstream authorization has that subscription (or under that authorization's Grant).
* ``sync_authorization``: a BatchList named an Authorization (PSH002): read it with the client token; a revoked or
  denied one (status 0 or 2) revokes the CDS Grant behind it (bridge.lifecycle.revoke_from_upstream).
* ``sync_application_information``: a BatchList named our ApplicationInformation (PSH001): report scope changes.
* ``revoke_upstream``: the CDS Grant ended: ``DELETE Authorization/{id}`` at the custodian (FB_44 with the client
  token), then the authorization is marked revoked; its tokens are never used again. A custodian that answers 405
  or 501 cannot revoke: the authorization ends on our side and the job's result says so.

Custodian errors become outcomes by what they mean (:func:`_failure`, espi.custodian_client.CustodianError):
no answer, 408, 429 and 5xx are retried; other 4xx, 405/501 and refused OAuth requests are permanent.

Only the custodian's own resources (issue 13 item 1): every handler checks the URI it is about to act on against
the custodian's configured endpoints (bridge.upstream.origins: scheme, host, port and path) before it asks for a
token or connects anywhere (:func:`_own`), and the client checks every request and redirect again. What a fetched
document says is trusted only for resources we know: an Authorization entry changes a Grant only when its
authorizationURI and self href both name an authorization stored for that custodian (:func:`sync_authorization`);
a bulk part reaches a Grant only through that custodian's stored authorizations (:func:`ingest_bulk_part`).

Client tokens (issue 13 item 2): the client and registration access tokens are kept in the store, encrypted, and
shared by every worker process until they are due (:func:`client_token`); a 401 to a request made with one drops
it and the request is made once more with a new one.

Every write is an idempotent upsert (bridge.ingest) into the Grant's data set, remembering the authorization that
brought it, and the UsagePoints each stored document held are recorded for its authorization (bridge.coverage), so
a re-run after a lost acknowledgement or a killed worker stores nothing twice. A rotated refresh token is committed
in its own transaction at once, whatever the run's outcome: losing it would lose the customer's authorization.

No store transaction is open while a custodian is asked anything (issue 13 item 8; workers.kinds): each handler
reads what the call needs in a short transaction, calls with none open, and then writes in short fenced ones
(workers.kinds.writing): data in bounded batches, then what depends on the whole document (the UsagePoints it
held, the Grant's activation) in a last one, which reads the Grant again under a row lock so that a revocation
committed meanwhile is never overwritten. Token refreshes of one authorization take turns through a claim on its
row (:func:`refresh`), not through a lock held across the custodian's answer.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from bridge import coverage, lifecycle, metrics, upstream
from cds.secrets import SecretBox
from cds.store.models import Grant, Job, UpstreamAuthorization
from cds.urls import Urls
from espi.custodian_client import CustodianClient, CustodianError, Deferred, Fetched
from espi.private_files import open_private, private_dir
from workers import jobs
from workers.kinds import activity, after_commit, readings_stored, register, sessions_for, warn, writing

log = logging.getLogger(__name__)

#: A token is refreshed when it expires within this margin (clock skew, the duration of a download).
REFRESH_MARGIN = timedelta(seconds=120)
#: After this many runs a job that keeps being deferred (the custodian answers 202 to every poll) gives up.
MAX_DEFERRED_RUNS = 48


@dataclass(frozen=True)
class Context:
    config: Any
    box: SecretBox
    urls: Urls
    now: datetime

    def custodian(self, custodian_id: Any) -> Any:
        for custodian in self.config.custodians:
            if custodian.id == custodian_id:
                return custodian
        raise jobs.PermanentError(f"no custodian {custodian_id!r} is configured")

    def client(self, custodian: Any) -> CustodianClient:
        return upstream.client(custodian, self.config.issuer, download_dir=self.downloads(), activity=activity(),
                               timeout=self.config.custodian_timeout_seconds)

    def downloads(self) -> Path:
        return private_dir(Path(self.config.data_dir) / "downloads")


def context(config: Any) -> Context:
    return Context(config, SecretBox(config.fernet_key, config.derived_key("token-hash")), Urls(config.issuer),
                   datetime.now(UTC).replace(microsecond=0))


def _failure(error: CustodianError, what: str) -> Exception:
    """A custodian error as the job outcome, by what it means (espi.custodian_client.CustodianError.transient):
    refused URLs, client errors (4xx but 408 and 429) and refused OAuth requests are permanent; server errors,
    408, 429, timeouts and connection failures are transient."""
    if not error.transient:
        return jobs.PermanentError(f"{what}: {error}")
    # 429 / 503 usually say when to come back: honoured (capped at a day) over the backoff when later
    return jobs.RetryLater(f"{what}: {error}", retry_after=jobs.retry_after_seconds(error.retry_after))


def _defer(ctx: Context, job: Job, custodian_id: str, answer: Deferred) -> Exception:
    """The job's outcome for a 202: wait for the BatchList (or poll after the timeout); give up after
    :data:`MAX_DEFERRED_RUNS` runs. ``requested`` is kept: the resuming BatchList is compared with it."""
    runs = int(job.payload.get(jobs.DEFERRED_RUNS, 0)) + 1  # this request's runs answered 202, this one included
    if runs >= MAX_DEFERRED_RUNS:
        return jobs.PermanentError(f"{jobs_uri(answer.url)}: still 202 Accepted after {runs} runs")
    wait = max(ctx.config.deferred_timeout_seconds, answer.retry_after or 0)
    return jobs.Defer(ctx.now + timedelta(seconds=wait), f"202 Accepted for {jobs_uri(answer.url)}; waiting for "
                      "the custodian's notification", waiting_for=jobs.waiting_key(custodian_id, answer.url),
                      payload={"requested": answer.url})


def jobs_uri(uri: str) -> str:
    from bridge.notifications import loggable_uri

    return loggable_uri(uri)


def _own(custodian: Any, uri: str) -> str:
    """``uri`` when it is one of the custodian's resources (bridge.upstream.origins); else the job ends: nothing is
    fetched and no token is asked for. A row made before the check existed, or a configuration that changed since
    the notification, ends here."""
    reason = upstream.origins(custodian).refusal(uri)
    if reason is not None:
        raise jobs.PermanentError(f"{jobs_uri(uri)} is not one of custodian {custodian.id}'s resources ({reason}); "
                                  "nothing fetched")
    return uri


# ------------------------------------------------------------------------------------------------------ tokens


def _due(tokens: Any, now: datetime) -> bool:
    return tokens.expires_at is not None and tokens.expires_at <= now + REFRESH_MARGIN


def access_token(ctx: Context, client: CustodianClient, row: UpstreamAuthorization) -> str:
    tokens = upstream.tokens_of(ctx.box, row)
    if _due(tokens, ctx.now) and tokens.refresh_token:
        return refresh(ctx, client, row.id, tokens.access_token)
    return tokens.access_token


#: How long a refresh claim holds (:func:`refresh`): longer than one token request can take (the custodian client's
#: timeouts are 60 s), so a claim runs out only when its worker died.
REFRESH_CLAIM = timedelta(seconds=300)
#: How often a run waiting for another's refresh looks again.
REFRESH_POLL_SECONDS = 0.2


def refresh(ctx: Context, client: CustodianClient, row_id: int, stale: str) -> str:
    """Refresh the authorization's tokens and commit them in a transaction of their own (see module docstring).

    Refreshes of one authorization take turns: custodians rotate refresh tokens, and a second refresh with the old
    one would fail for good. A run claims the row (a guarded UPDATE setting ``refresh_claim`` until
    :data:`REFRESH_CLAIM` from now, committed at once), asks the custodian with no transaction open, then stores the
    new tokens and releases the claim; a run that finds the row claimed waits for the claim to go and then reads
    the tokens again; a run that finds them already replaced since it read ``stale`` uses the new ones. A claim
    left by a dead worker runs out. A refresh token the custodian refuses (``invalid_grant``) means the
    authorization is gone: the Grant ``needs_authorization`` (committed here) and the job ends."""
    sessions = sessions_for(ctx.config)
    claim = uuid.uuid4().hex
    give_up = time.monotonic() + REFRESH_CLAIM.total_seconds() + 60
    while True:
        with sessions() as session, session.begin():
            now = jobs.utcnow()
            row = session.get(UpstreamAuthorization, row_id, populate_existing=True)
            if row is None:
                raise jobs.PermanentError(f"authorization {row_id} is gone")
            current = upstream.tokens_of(ctx.box, row)
            if current.access_token != stale and not _due(current, ctx.now):
                return current.access_token  # another run refreshed meanwhile
            if not current.refresh_token:
                raise jobs.PermanentError(f"authorization {row_id}: the access token expired and there is no "
                                          "refresh token; the customer must authorize again")
            claimed = session.execute(
                update(UpstreamAuthorization)
                .where(UpstreamAuthorization.id == row_id,
                       or_(UpstreamAuthorization.refresh_claimed_until.is_(None),
                           UpstreamAuthorization.refresh_claimed_until < now))
                .values(refresh_claim=claim, refresh_claimed_until=now + REFRESH_CLAIM)
                .execution_options(synchronize_session=False)
            ).rowcount == 1
        if claimed:
            break
        # another run is refreshing: its tokens will do (a dead run's claim runs out, and then this run claims)
        if time.monotonic() > give_up:
            raise jobs.RetryLater(f"authorization {row_id}: other runs kept refreshing its tokens")
        time.sleep(REFRESH_POLL_SECONDS)
    try:
        fresh = client.refresh(current.refresh_token)  # no transaction open while the custodian answers
    except CustodianError as error:
        with sessions() as session, session.begin():
            _release(session, row_id, claim)
            if error.oauth_error in REFUSED_GRANT:
                grant = session.get(Grant, row.grant_id, with_for_update=True)
                if grant is not None:
                    lifecycle.needs_authorization(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now,
                                                  why=f"the data custodian refused to renew its authorization "
                                                      f"({error.oauth_error}); the customer must authorize again")
        if error.oauth_error in REFUSED_GRANT:
            raise jobs.PermanentError(f"authorization {row_id}: the custodian refused the refresh token "
                                      f"({error.oauth_error}); the customer must authorize again") from None
        raise _failure(error, f"authorization {row_id}: token refresh") from None
    except BaseException:
        with sessions() as session, session.begin():
            _release(session, row_id, claim)
        raise
    # The custodian's answer is the truth now (the old refresh token is spent), so it is stored whoever holds the
    # claim by then; only this run's claim is released.
    values: dict[str, Any] = {"access_token_encrypted": ctx.box.encrypt(fresh.access_token),
                              "expires_at": fresh.expires_at, "modified": ctx.now}
    if fresh.refresh_token:
        values["refresh_token_encrypted"] = ctx.box.encrypt(fresh.refresh_token)
    with sessions() as session, session.begin():
        session.execute(update(UpstreamAuthorization).where(UpstreamAuthorization.id == row_id).values(**values)
                        .execution_options(synchronize_session=False))
        _release(session, row_id, claim)
    log.info("authorization %s: tokens refreshed", row_id)
    return fresh.access_token


def _release(session: Session, row_id: int, claim: str) -> None:
    session.execute(update(UpstreamAuthorization)
                    .where(UpstreamAuthorization.id == row_id, UpstreamAuthorization.refresh_claim == claim)
                    .values(refresh_claim=None, refresh_claimed_until=None)
                    .execution_options(synchronize_session=False))


#: Token endpoint answers to a refresh that mean the authorization itself is gone (RFC 6749 §5.2).
REFUSED_GRANT = frozenset({"invalid_grant", "unauthorized_client"})


#: The client_credentials scope of a registration_access_token (ThirdParty_Registration_Access, espi.md §6.3).
REGISTRATION_SCOPE = "FB=36_40"


#: How long a worker may take to ask for a client token before another may ask (the token request's lease).
TOKEN_REQUEST_LEASE = timedelta(seconds=90)
#: How often a worker waiting for another's token request looks at the store.
TOKEN_POLL_SECONDS = 0.2


def client_token(ctx: Context, client: CustodianClient, custodian: Any, scope: str | None = None) -> str:
    """A client_access_token (Authorization, Batch/Bulk), or with ``scope`` another client_credentials token (the
    registration token), from the store while it is usable (bridge.upstream.cached_client_token); else one worker
    asks the custodian and the others wait for its answer: one token request per token lifetime.

    Each look and claim is a short transaction of its own; the token request itself holds none."""
    sessions = sessions_for(ctx.config)
    while True:
        now = datetime.now(UTC)
        with sessions() as session, session.begin():
            token, seen = upstream.cached_client_token(session, ctx.box, custodian, scope, now)
            if token is not None:
                return token
            claimed = upstream.claim_client_token_request(session, custodian, scope, now, TOKEN_REQUEST_LEASE, seen)
        if claimed:
            break
        time.sleep(TOKEN_POLL_SECONDS)  # another worker is asking; its lease bounds the wait
    try:
        tokens = client.client_credentials(scope)
    except CustodianError as error:
        with sessions() as session, session.begin():
            upstream.release_client_token_request(session, custodian, scope)
        raise _failure(error, "client_credentials token") from None
    except BaseException:
        with sessions() as session, session.begin():
            upstream.release_client_token_request(session, custodian, scope)
        raise
    with sessions() as session, session.begin():
        upstream.store_client_token(session, ctx.box, custodian, scope, tokens, datetime.now(UTC))
    log.info("custodian %s: new client token%s", custodian.id, f" ({scope})" if scope else "")
    return tokens.access_token


def with_client_token(ctx: Context, client: CustodianClient, custodian: Any, call: Any, scope: str | None = None
                      ) -> Any:
    """``call(token)`` with the custodian's client token; a 401 (the custodian ended the token before it expired)
    drops the stored token and calls once more with a new one."""
    token = client_token(ctx, client, custodian, scope)
    try:
        return call(token)
    except CustodianError as error:
        if error.status != 401:
            raise
    with sessions_for(ctx.config)() as session, session.begin():
        upstream.forget_client_token(session, ctx.box, custodian, scope, token)
    return call(client_token(ctx, client, custodian, scope))


# ---------------------------------------------------------------------------------------------- storing data


def store_file(session: Session, ctx: Context, path: Path, grant: Grant, source: str,
               row: UpstreamAuthorization) -> str:
    """Translate ``path`` (what authorization ``row`` brought) and upsert it into the Grant's data set in bounded
    batches, each a short fenced transaction (bridge.ingest, workers.kinds.writing); then, in a last one, record
    the UsagePoints it held as ``row``'s and activate a pending Grant. ``grant`` and ``row`` were read before: the
    last transaction reads them again (the Grant under a row lock), so a change committed meanwhile (a revocation)
    is never overwritten."""
    from bridge.ingest import IngestError, ingest_file, translate_options_for
    from espi.errors import EspiError

    try:
        report = ingest_file(session, path, customer_id=grant.customer_id, source=source[:256],
                             options=translate_options_for(ctx.config), now=ctx.now, data_set=grant.data_set,
                             upstream_id=row.id, batch_transaction=lambda: writing(session))
    except (EspiError, IngestError) as error:  # the document itself is wrong: fetching it again cannot help
        raise jobs.PermanentError(f"{source}: {error}") from None
    with writing(session):  # once the data is stored
        current_row = session.get(UpstreamAuthorization, row.id, populate_existing=True)
        current_grant = session.get(Grant, grant.grant_id, populate_existing=True, with_for_update=True)
        if current_row is not None:
            coverage.record_usage_points(session, current_row, report.usage_point_hrefs, ctx.now)
        if current_grant is not None:
            lifecycle.activate(session, current_grant, urls=ctx.urls, box=ctx.box, now=ctx.now)
    readings_stored(session, row.custodian_id, report)
    return report.summary()


# ---------------------------------------------------------------------------------------------------- handlers


def _first_fetch_grant(session: Session, job: Job) -> Grant | None:
    """The Grant a first fetch (the one after consent, naming its ``upstream_id``) is for; None for other fetches."""
    if job.payload.get("upstream_id") is None:
        return None
    row = session.get(UpstreamAuthorization, job.payload["upstream_id"])
    return session.get(Grant, row.grant_id) if row is not None else None


def _first_fetch_dead(session: Session, job: Job, config: Any, error: str) -> None:
    """A first fetch gave up: its pending Grant becomes ``errored``."""
    grant = _first_fetch_grant(session, job)
    if grant is not None:
        ctx = context(config)
        lifecycle.first_fetch_failed(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now, error=error)


def _first_fetch_waits(session: Session, job: Job, config: Any, at: datetime) -> None:
    """A first fetch will try again at ``at`` (a 202, a retry): its pending Grant's ``eta`` follows."""
    grant = _first_fetch_grant(session, job)
    if grant is not None:
        lifecycle.data_expected(grant, at, now=context(config).now)


@register("fetch_subscription", queue="http", on_dead=_first_fetch_dead, on_wait=_first_fetch_waits)
def fetch_subscription(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``uri`` (the subscription, maybe with a published window) and ``upstream_id``
    (the authorization whose token fetches it: the first fetch after consent, or one notification's fan-out).

    Without ``upstream_id`` (a BatchList named the subscription) the job fetches nothing itself: it asks one fetch
    job per live authorization of the subscription for a run (bridge.lifecycle.request_fetch), so an upstream
    failure for one authorization retries that authorization's fetch alone."""
    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = job.payload.get("requested") or job.payload.get("uri")
    if not uri:
        raise jobs.PermanentError("fetch_subscription needs a subscription URI")
    _own(custodian, uri)
    if job.payload.get("upstream_id") is None:
        with writing(session):
            return _fan_out_fetches(session, ctx, custodian.id, job.payload.get("uri") or uri)
    with session.begin():  # what the fetch needs; no transaction stays open across the custodian's answer
        row = session.get(UpstreamAuthorization, job.payload["upstream_id"])
        grant = session.get(Grant, row.grant_id) if row is not None else None
    if row is None or row.revoked is not None or not upstream.has_tokens(row):
        return f"authorization {job.payload['upstream_id']}: revoked, gone or without tokens; nothing fetched"
    if grant is None or not lifecycle.keeps_syncing(grant, ctx.now):
        if grant is not None:
            with writing(session):
                grant = session.get(Grant, grant.grant_id, populate_existing=True, with_for_update=True)
                if grant is not None and not lifecycle.keeps_syncing(grant, ctx.now):
                    lifecycle.sync_ended(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now)
        return f"grant {row.grant_id}: not syncing ({grant.status if grant else 'gone'})"
    client = ctx.client(custodian)
    token = access_token(ctx, client, row)
    try:
        answer = client.get(uri, token)
    except CustodianError as error:
        if error.status != 401 or not upstream.tokens_of(ctx.box, row).refresh_token:
            raise _failure(error, f"GET {jobs_uri(uri)}") from None
        try:  # the custodian expired the token early: refresh once and ask again
            answer = client.get(uri, refresh(ctx, client, row.id, token))
        except CustodianError as again:
            raise _failure(again, f"GET {jobs_uri(uri)}") from None
    if isinstance(answer, Deferred):
        raise _defer(ctx, job, custodian.id, answer)
    assert isinstance(answer, Fetched)
    try:  # once read the download goes, whatever the outcome: a retry fetches afresh
        return f"grant {grant.grant_id}: " + store_file(session, ctx, answer.path, grant,
                                                        f"{custodian.id}:{jobs_uri(uri)}", row)
    finally:
        answer.path.unlink(missing_ok=True)


def _fan_out_fetches(session: Session, ctx: Context, custodian_id: str, uri: str) -> str:
    """One fetch job per live authorization of the notified subscription (published after the commit)."""
    rows = lifecycle.authorizations_for_resource(session, custodian_id, uri)
    if not rows:
        log.info("no live authorization of custodian %s has %s; nothing fetched", custodian_id, jobs_uri(uri))
        return f"no live authorization for {jobs_uri(uri)}"
    asked, skipped = [], []
    for row in rows:
        grant = session.get(Grant, row.grant_id)
        if grant is None or not lifecycle.keeps_syncing(grant, ctx.now):
            if grant is not None:
                lifecycle.sync_ended(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now)
            skipped.append(f"grant {row.grant_id}: not syncing ({grant.status if grant else 'gone'})")
            continue
        fetch = lifecycle.request_fetch(session, row, uri, ctx.now)
        asked.append(f"{fetch.job_id} ({fetch.state})")
    return "; ".join([f"{len(asked)} fetch job(s) asked for: {', '.join(asked) or 'none'}", *skipped])


@register("fetch_bulk", queue="http")
def fetch_bulk(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``uri`` (``…/Batch/Bulk/{id}`` or ``sftp://…``). Downloads, splits per subscription
    (and per authorization for entries naming none, bridge.coverage) and queues one ``ingest_bulk_part`` job per
    part and authorization (published at once); reports what could not be placed."""
    from espi.bulk import split_bulk
    from espi.errors import EspiError

    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = _own(custodian, job.payload.get("requested") or job.payload.get("uri") or "")
    if uri.lower().startswith("sftp://"):
        path = _sftp_download(ctx, custodian, uri, job)
    else:
        client = ctx.client(custodian)
        try:
            answer = with_client_token(ctx, client, custodian, lambda token: client.get(uri, token))
        except CustodianError as error:
            raise _failure(error, f"GET {jobs_uri(uri)}") from None
        if isinstance(answer, Deferred):
            raise _defer(ctx, job, custodian.id, answer)
        path = answer.path
    # The parts live until their ingest jobs are done; the directory is named by this job and request (its
    # generation), so a re-run of it splits into the same place and the (deduplicated) part jobs find their files,
    # while the next notification of the same bulk makes new parts and new part jobs. Each part is fanned out as
    # soon as the split completes it (espi.bulk on_part): its jobs are committed and published at once, so the
    # translate workers start while the split goes on.
    parts_dir = private_dir(Path(config.data_dir) / "bulk" / f"{job.job_id}-{job.generation}")
    fan_out = _FanOut(ctx, session, job, custodian.id, jobs_uri(uri))
    owners = coverage.BulkOwners(sessions_for(config), custodian.id)
    try:
        split = split_bulk(path, parts_dir, on_part=fan_out.part, owners_of=owners)
    except EspiError as error:  # the file itself is wrong: neither it nor a retry is of any use
        path.unlink(missing_ok=True)
        if not fan_out.queued:
            _remove_dir(parts_dir)
        raise jobs.PermanentError(f"{jobs_uri(uri)}: {error}") from None
    after_commit(session, lambda: path.unlink(missing_ok=True))
    if not fan_out.queued:
        after_commit(session, lambda: _remove_dir(parts_dir))
    else:  # the parts' ingest jobs may all be done already: the directory goes with the last of them, or now
        after_commit(session, lambda: _remove_empty_dir(parts_dir))
    unplaced = _unplaced(split, fan_out, owners)
    if unplaced:
        # Never stored: no live authorization of ours covers them (another third party's, revoked, or entries
        # whose owner cannot be told). Counted, so that nothing is lost in silence.
        warn(session, f"bulk {jobs_uri(uri)}: {unplaced}")
    return (f"{len(split.parts)} subscription part(s), {len(split.owner_parts)} authorization part(s), "
            f"{fan_out.queued} ingest job(s), {len(fan_out.unclaimed)} unclaimed, "
            f"{len(split.unassigned)} entries ({split.unassigned_readings} readings) not placed")


def _unplaced(split: Any, fan_out: _FanOut, owners: coverage.BulkOwners) -> str:
    """What of a bulk was stored nowhere, counted, with the reasons (empty when everything was placed)."""
    parts = []
    if fan_out.unclaimed:
        parts.append(f"{len(fan_out.unclaimed)} subscription part(s) ({fan_out.unclaimed_readings} readings) with "
                     f"no live authorization: {', '.join(fan_out.unclaimed[:20])}")
    if split.unassigned:
        reasons = Counter(entry.reason for entry in split.unassigned)
        examples = "; ".join(f"line {e.line}: {jobs_uri(e.self_href or '(no self href)')}"
                             for e in split.unassigned[:3])
        owner_reasons = "; ".join(f"{reason} ({count})" for reason, count in owners.misses.most_common(5))
        parts.append(f"{len(split.unassigned)} entries ({split.unassigned_readings} readings) placed in no part: "
                     + "; ".join(f"{reason} ({count})" for reason, count in reasons.most_common(5))
                     + (f"; UsagePoints and customers without an owner: {owner_reasons}" if owner_reasons else "")
                     + f"; first: {examples}")
    return "; ".join(parts)


class _FanOut:
    """``on_part`` of a bulk split: one ``ingest_bulk_part`` job per authorization of the part's subscription (or,
    for an authorization's own part, for that authorization), committed in a transaction of its own and published
    at once. Idempotent (dedupe keys name the bulk job and its generation, the subscription or owner part, and the
    authorization): a re-run of the bulk job finds the jobs it made, and a part whose job is already done is not
    kept; a later notification of the bulk (a new generation) makes new ones."""

    def __init__(self, ctx: Context, session: Session, job: Job, custodian_id: str, bulk: str) -> None:
        self.ctx, self.session, self.job, self.custodian_id, self.bulk = ctx, session, job, custodian_id, bulk
        self.queued = 0
        self.unclaimed: list[str] = []
        self.unclaimed_readings = 0
        self._unclaimed_readings: dict[str, int] = {}

    def _rows(self, session: Session, part: Any) -> list[UpstreamAuthorization]:
        if part.owner is None:
            return lifecycle.authorizations_for_subscription(session, self.custodian_id, part.subscription)
        row = session.get(UpstreamAuthorization, int(part.owner))  # owner names are authorization ids
        return [row] if row is not None and row.revoked is None and row.custodian_id == self.custodian_id else []

    def part(self, part: Any) -> None:
        path = part.path
        label = part.subscription if part.owner is None else f"authorization-{part.owner}"
        # a part handed over again (espi.bulk: more of it came later) is a job of its own, holding all of the part
        revision = f":r{part.revision}" if part.revision > 1 else ""
        # the run's own short transaction (the split holds none open): committed and published at once
        with writing(self.session) as session:
            rows = self._rows(session, part)
            files = []
            for index, row in enumerate(rows):
                # each ingest job owns its file (a hard link for a subscription behind several grants), so the
                # first to finish cannot remove another's part
                own = path if index == 0 else _link(path, path.with_name(f"{path.stem}-{row.id}{path.suffix}"))
                queued = jobs.enqueue(session, "ingest_bulk_part",
                                      {"custodian_id": self.custodian_id, "upstream_id": row.id,
                                       "path": str(own), "subscription_id": label, "bulk": self.bulk},
                                      f"bulk-part:{self.job.job_id}:{self.job.generation}:{label}:{row.id}{revision}",
                                      queue="translate", now=self.ctx.now)
                files.append((own, queued.state))
        if not rows:
            if label not in self._unclaimed_readings:
                self.unclaimed.append(label)
            # a revision holds the whole part: its readings replace those of the first hand-over
            self.unclaimed_readings += part.readings - self._unclaimed_readings.get(label, 0)
            self._unclaimed_readings[label] = part.readings
            path.unlink(missing_ok=True)
        for own, state in files:
            if state in (jobs.DONE, jobs.DEAD):  # a re-run of the bulk: that part was already dealt with
                own.unlink(missing_ok=True)
        self.queued += len(rows)


def _sftp_download(ctx: Context, custodian: Any, uri: str, job: Job) -> Path:
    from espi import sftp

    if custodian.sftp is None:
        raise jobs.PermanentError(f"custodian {custodian.id} has no SFTP configuration")
    try:
        _host, _port, _user, remote = sftp.parse_sftp_uri(uri)
        # named by the job and request: two bulk sets with the same file name never share a .part
        downloaded = sftp.download(custodian.sftp, remote, ctx.downloads() / "sftp",
                                   dest_name=f"{job.job_id}-{job.generation}-{Path(remote).name}",
                                   timeout=ctx.config.custodian_timeout_seconds)
        transferred = max(0, downloaded.size - downloaded.resumed_from)  # this run's bytes, not the resumed ones
        metrics.sftp_bytes.labels(custodian.id).inc(transferred)
        run = activity()
        if run is not None:
            run.sftp_bytes(custodian.id, transferred)
    except ValueError as error:
        raise jobs.PermanentError(f"{jobs_uri(uri)}: {error}") from None
    except sftp.SftpTransientError as error:
        raise jobs.RetryLater(f"{jobs_uri(uri)}: {error}") from None
    except sftp.SftpError as error:
        raise jobs.PermanentError(f"{jobs_uri(uri)}: {error}") from None
    return downloaded.path


@register("ingest_bulk_part", queue="translate")
def ingest_bulk_part(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``upstream_id``, ``path`` (one subscription's or authorization's part of a bulk
    feed), ``subscription_id`` (the part's label: the subscription id, or ``authorization-{id}``)."""
    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    with session.begin():
        row = session.get(UpstreamAuthorization, job.payload.get("upstream_id"))
        grant = session.get(Grant, row.grant_id) if row is not None else None
    path = Path(job.payload.get("path") or "")
    if row is None:
        raise jobs.PermanentError(f"upstream authorization {job.payload.get('upstream_id')} is gone")
    # A part reaches a Grant only through an authorization of the custodian whose configured origin the bulk came
    # from, and only the authorization it was placed for (its subscription's, or the one the part names).
    _own(custodian, job.payload.get("bulk") or "")
    label = str(job.payload.get("subscription_id") or "")
    placed_for = label == f"authorization-{row.id}" or (not label.startswith("authorization-")
                                                        and label == row.subscription_id)
    if row.custodian_id != custodian.id or not placed_for:
        path.unlink(missing_ok=True)
        raise jobs.PermanentError(f"bulk part {label!r} is not for authorization {row.id} of custodian "
                                  f"{custodian.id}; not stored")
    if row.revoked is not None or grant is None or not lifecycle.keeps_syncing(grant, ctx.now):
        after_commit(session, lambda: path.unlink(missing_ok=True))
        return f"grant {row.grant_id}: not syncing; part skipped"
    if not path.is_file():
        raise jobs.PermanentError(f"{path}: bulk part missing (was the data directory cleaned?)")
    summary = store_file(session, ctx, path, grant, f"{row.custodian_id}:{job.payload.get('bulk')}"
                                                    f"#{job.payload.get('subscription_id')}", row)
    after_commit(session, lambda: _remove_part(path))
    return f"grant {grant.grant_id}: {summary}"


def _link(source: Path, target: Path) -> Path:
    target.unlink(missing_ok=True)  # a re-run of the same bulk job links again
    try:
        os.link(source, target)
    except OSError:  # a file system without hard links
        with open(source, "rb") as original, open_private(target, "wb") as copy:
            shutil.copyfileobj(original, copy)
    return target


def _remove_dir(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _remove_empty_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.rmdir()  # fails while parts remain


def _remove_part(path: Path) -> None:
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()  # the bulk's directory goes with its last part (fails while others remain)


def _admin_feed(ctx: Context, job: Job, custodian: Any, uri: str, scope: str | None = None) -> Any:
    """GET an administrative resource (Authorization, ApplicationInformation) with a client_credentials token and
    parse it; the download is removed once read. A 202 defers the job; the custodian's errors propagate as
    :class:`CustodianError` for the caller to judge."""
    from espi.errors import EspiError
    from espi.feed import read_feed

    client = ctx.client(custodian)
    answer = with_client_token(ctx, client, custodian, lambda token: client.get(uri, token), scope)
    if isinstance(answer, Deferred):
        raise _defer(ctx, job, custodian.id, answer)
    try:
        return read_feed(answer.path)
    except EspiError as error:
        raise jobs.PermanentError(f"{jobs_uri(uri)}: {error}") from None
    finally:
        answer.path.unlink(missing_ok=True)


@register("sync_authorization", queue="http")
def sync_authorization(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``uri`` (``Authorization`` or ``Authorization/{id}``). A revoked or denied
    Authorization revokes the CDS Grant(s) behind it."""
    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = _own(custodian, job.payload.get("requested") or job.payload.get("uri") or "")
    try:
        feed = _admin_feed(ctx, job, custodian, uri)  # no transaction open while the custodian answers
    except CustodianError as error:
        if error.status in (404, 410):  # the custodian forgot the Authorization: it no longer authorizes anything
            with writing(session):
                return _revoke_rows(session, ctx,
                                    lifecycle.authorizations_for_authorization(session, custodian.id, uri),
                                    f"the data custodian no longer knows the authorization ({error.status})")
        raise _failure(error, f"GET {jobs_uri(uri)}") from None
    with writing(session):
        return _apply_authorizations(session, ctx, custodian, feed, uri)


def _apply_authorizations(session: Session, ctx: Context, custodian: Any, feed: Any, uri: str) -> str:
    """What a fetched Authorization feed says, applied to the grants behind its Authorizations."""
    from bridge.custodian_scopes import AUTHORIZATION_STATUS

    outcomes = []
    for entry in feed.entries:
        for resource in entry.resources:
            if resource.name != "Authorization":
                continue
            authorization = resource.value
            status = AUTHORIZATION_STATUS.get(authorization.status, "suspended")
            rows, named, why = _known_authorization(session, custodian, authorization.authorization_uri,
                                                    entry.self_href)
            if why:
                outcomes.append(f"{jobs_uri(named or '(no URI)')}: {why}; nothing changed")
            elif status == "revoked":
                outcomes.append(_revoke_rows(session, ctx, rows, f"the customer revoked the authorization at "
                                                                 f"{custodian.name}"))
            else:
                outcomes.append(f"{jobs_uri(named)}: {status}, {len(rows)} grant(s) unchanged")
    return "; ".join(outcomes) or "no Authorization in the answer"


def _known_authorization(session: Session, custodian: Any, authorization_uri: str | None, self_href: str | None
                         ) -> tuple[list[UpstreamAuthorization], str | None, str | None]:
    """The stored authorizations an Authorization entry speaks for, the URI it names, and why it speaks for none
    (None when it does). Its ``authorizationURI`` and its ``self`` href (each when present, at least one) must be
    the custodian's resources and name the same stored authorization: a document is believed only about the
    resources we know, never about whatever another of its hrefs points at."""
    named = [uri for uri in (authorization_uri, self_href) if uri]
    if not named:
        return [], None, "the entry names no authorizationURI and has no self href"
    foreign = upstream.foreign_uris(custodian, authorizationURI=authorization_uri, self=self_href)
    if foreign:
        return [], named[0], f"not the custodian's resources ({'; '.join(foreign)})"
    if len({upstream.resource_key(uri) for uri in named}) > 1:
        return [], named[0], "its authorizationURI and self href name different resources"
    rows = lifecycle.authorizations_for_authorization(session, custodian.id, named[0])
    if not rows:
        return [], named[0], "no authorization of ours has this authorizationURI"
    return rows, named[0], None


def _revoke_rows(session: Session, ctx: Context, rows: list[UpstreamAuthorization], why: str) -> str:
    changed = [row.grant_id for row in rows
               if lifecycle.revoke_from_upstream(session, row, urls=ctx.urls, box=ctx.box, now=ctx.now, why=why)]
    return f"{len(rows)} authorization(s) ended, grant(s) revoked: {', '.join(changed) or 'none'}"


@register("revoke_upstream", queue="http")
def revoke_upstream(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``upstream_id``. ``DELETE`` the custodian's Authorization with the client token;
    a 404/410 means it is already gone. The row is marked revoked either way once the custodian agreed.

    A custodian that answers 405 or 501 cannot revoke an Authorization over its API (FB_44 is optional): asking
    again cannot help, and the Grant has ended on our side anyway. The row is marked revoked (its tokens are never
    used again) and the job ends ``done`` with a result saying so: the customer can still revoke at the utility."""
    ctx = context(config)
    with session.begin():
        row = session.get(UpstreamAuthorization, job.payload.get("upstream_id"))
    if row is None or row.revoked is not None:
        return "already revoked"
    custodian = ctx.custodian(row.custodian_id)
    if not row.authorization_uri:
        _mark_revoked(session, row.id, ctx.now)
        return "no authorizationURI known; marked revoked"
    _own(custodian, row.authorization_uri)
    client = ctx.client(custodian)
    try:
        # no transaction open while the custodian answers
        with_client_token(ctx, client, custodian, lambda token: client.delete(row.authorization_uri, token))
    except CustodianError as error:
        if error.not_supported:
            _mark_revoked(session, row.id, ctx.now)
            log.warning("custodian %s cannot revoke authorization %s (DELETE answered %s); ended on our side only: "
                        "the customer may revoke it at the utility", custodian.id, jobs_uri(row.authorization_uri),
                        error.status)
            return (f"custodian {custodian.id} cannot revoke (DELETE answered {error.status}); authorization "
                    f"{jobs_uri(row.authorization_uri)} ended on our side only, its tokens are never used again")
        if error.status not in (404, 410):
            raise _failure(error, f"DELETE {jobs_uri(row.authorization_uri)}") from None
    _mark_revoked(session, row.id, ctx.now)
    return f"authorization {jobs_uri(row.authorization_uri)} revoked at {custodian.id}"


def _mark_revoked(session: Session, row_id: int, now: datetime) -> None:
    """The authorization ends on our side (its tokens are never used again), in a short fenced transaction."""
    with writing(session):
        session.execute(update(UpstreamAuthorization)
                        .where(UpstreamAuthorization.id == row_id, UpstreamAuthorization.revoked.is_(None))
                        .values(revoked=now, modified=now).execution_options(synchronize_session=False))



@register("sync_application_information", queue="http")
def sync_application_information(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``uri``. The custodian changed our registration (PSH001): read it with a
    registration_access_token (client_credentials, scope FB=36_40) and report
    how its offered scope strings differ from the configured ones. The configuration is the operator's: offered
    scopes are never changed behind their back, but a custodian that withdrew a scope the consent hop asks for
    must be noticed (the job's result and a warning in the log say which)."""

    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = _own(custodian, job.payload.get("requested") or job.payload.get("uri") or "")
    try:
        feed = _admin_feed(ctx, job, custodian, uri, REGISTRATION_SCOPE)
    except CustodianError as error:
        raise _failure(error, f"GET {jobs_uri(uri)}") from None
    offered = {scope for entry in feed.entries for resource in entry.resources
               if resource.name == "ApplicationInformation" for scope in resource.value.scopes}
    withdrawn = sorted(set(custodian.scopes) - offered)
    added = sorted(offered - set(custodian.scopes))
    if withdrawn:
        log.warning("custodian %s no longer offers configured scope(s) %s; update its scopes", custodian.id,
                    "; ".join(withdrawn))
    return (f"{len(offered)} scope(s) offered; withdrawn from the configuration's: {len(withdrawn)}; "
            f"new, not configured: {len(added)}")
