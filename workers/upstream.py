"""The job kinds that talk to legacy custodians (issue 6; ARCHITECTURE.md "The bridge flow"; espi.md §3, §4, §7).

* ``fetch_subscription``: GET ``Batch/Subscription/{id}`` with the customer's token (the first fetch after consent,
  or a BatchList naming the subscription), translate, upsert under the Grant's customer, and activate a pending
  Grant. A ``202 Accepted`` defers the job until the BatchList naming the resource arrives, or until
  ``deferred_timeout_seconds`` have passed, when it polls again (espi.md §4.3).
* ``fetch_bulk``: a bulk feed announced by a BatchList, over REST (``Batch/Bulk/{id}`` with the client token,
  FB_35) or SFTP (FB_34, espi.sftp: pinned host key, key authentication, resumable download); the feed is split per
  subscription (espi.bulk) and each part becomes an ``ingest_bulk_part`` job (the fan-out, on the translate queue).
* ``ingest_bulk_part``: one subscription's part of a bulk, stored under each Grant whose upstream authorization has
  that subscription.
* ``sync_authorization``: a BatchList named an Authorization (PSH002): read it with the client token; a revoked or
  denied one (status 0 or 2) revokes the CDS Grant behind it (bridge.lifecycle.revoke_from_upstream).
* ``sync_application_information``: a BatchList named our ApplicationInformation (PSH001): report scope changes.
* ``revoke_upstream``: the CDS Grant ended: ``DELETE Authorization/{id}`` at the custodian (FB_44 with the client
  token), then the authorization is marked revoked; its tokens are never used again.

Every write is an idempotent upsert (bridge.ingest), so a re-run after a lost acknowledgement or a killed worker
stores nothing twice. A rotated refresh token is committed in its own transaction at once, whatever the run's
outcome: losing it would lose the customer's authorization.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from bridge import lifecycle, upstream
from cds.secrets import SecretBox
from cds.store.models import Grant, Job, UpstreamAuthorization
from cds.urls import Urls
from espi.custodian_client import CustodianClient, CustodianError, Deferred, Fetched, ForeignURLError
from espi.private_files import open_private, private_dir
from workers import jobs
from workers.kinds import after_commit, publish_now, register, sessions_for

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
        return upstream.client(custodian, self.config.issuer, download_dir=self.downloads())

    def downloads(self) -> Path:
        return private_dir(Path(self.config.data_dir) / "downloads")


def context(config: Any) -> Context:
    return Context(config, SecretBox(config.fernet_key, config.derived_key("token-hash")), Urls(config.issuer),
                   datetime.now(UTC).replace(microsecond=0))


def _failure(error: CustodianError, what: str) -> Exception:
    """A custodian error as the job outcome: refused URLs and client errors are permanent, the rest transient."""
    if isinstance(error, ForeignURLError):
        return jobs.PermanentError(f"{what}: {error}")
    if error.status is not None and 400 <= error.status < 500 and error.status not in (408, 429):
        return jobs.PermanentError(f"{what}: {error}")
    # 429 / 503 usually say when to come back: honoured (capped at a day) over the backoff when later
    return jobs.RetryLater(f"{what}: {error}", retry_after=jobs.retry_after_seconds(error.retry_after))


def _defer(ctx: Context, job: Job, custodian_id: str, answer: Deferred) -> Exception:
    """The job's outcome for a 202: wait for the BatchList (or poll after the timeout); give up after
    :data:`MAX_DEFERRED_RUNS` runs. ``requested`` is kept: the resuming BatchList is compared with it."""
    if job.attempts >= MAX_DEFERRED_RUNS:
        return jobs.PermanentError(f"{jobs_uri(answer.url)}: still 202 Accepted after {job.attempts} runs")
    wait = max(ctx.config.deferred_timeout_seconds, answer.retry_after or 0)
    return jobs.Defer(ctx.now + timedelta(seconds=wait), f"202 Accepted for {jobs_uri(answer.url)}; waiting for "
                      "the custodian's notification", waiting_for=jobs.waiting_key(custodian_id, answer.url),
                      payload={"requested": answer.url})


def jobs_uri(uri: str) -> str:
    from bridge.notifications import loggable_uri

    return loggable_uri(uri)


# ------------------------------------------------------------------------------------------------------ tokens


def _due(tokens: Any, now: datetime) -> bool:
    return tokens.expires_at is not None and tokens.expires_at <= now + REFRESH_MARGIN


def access_token(ctx: Context, client: CustodianClient, row: UpstreamAuthorization) -> str:
    tokens = upstream.tokens_of(ctx.box, row)
    if _due(tokens, ctx.now) and tokens.refresh_token:
        return refresh(ctx, client, row.id, tokens.access_token)
    return tokens.access_token


def refresh(ctx: Context, client: CustodianClient, row_id: int, stale: str) -> str:
    """Refresh the authorization's tokens and commit them in a transaction of their own (see module docstring).

    Refreshes of one authorization are serialized: the row is write-locked first (an UPDATE, which locks on
    PostgreSQL and SQLite alike), and a run that finds the tokens already replaced since it read ``stale`` uses
    the new ones: custodians rotate refresh tokens, and a second refresh with the old one would fail for good.
    A refresh token the custodian refuses (``invalid_grant``) means the authorization is gone: the Grant
    ``needs_authorization`` (committed here) and the job ends."""
    refused: CustodianError | None = None
    with sessions_for(ctx.config)() as session, session.begin():
        session.execute(update(UpstreamAuthorization).where(UpstreamAuthorization.id == row_id)
                        .values(modified=UpstreamAuthorization.modified))
        row = session.get(UpstreamAuthorization, row_id, populate_existing=True)
        current = upstream.tokens_of(ctx.box, row)
        if current.access_token != stale and not _due(current, ctx.now):
            return current.access_token  # another run refreshed meanwhile
        if not current.refresh_token:
            raise jobs.PermanentError(f"authorization {row_id}: the access token expired and there is no refresh "
                                      "token; the customer must authorize again")
        try:
            fresh = client.refresh(current.refresh_token)
        except CustodianError as error:
            if error.oauth_error not in REFUSED_GRANT:
                raise _failure(error, f"authorization {row_id}: token refresh") from None
            refused = error
            grant = session.get(Grant, row.grant_id)
            if grant is not None:
                lifecycle.needs_authorization(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now,
                                           why=f"the data custodian refused to renew its authorization "
                                               f"({error.oauth_error}); the customer must authorize again")
        else:
            row.access_token_encrypted = ctx.box.encrypt(fresh.access_token)
            if fresh.refresh_token:
                row.refresh_token_encrypted = ctx.box.encrypt(fresh.refresh_token)
            row.expires_at = fresh.expires_at
            row.modified = ctx.now
    if refused is not None:
        raise jobs.PermanentError(f"authorization {row_id}: the custodian refused the refresh token "
                                  f"({refused.oauth_error}); the customer must authorize again")
    log.info("authorization %s: tokens refreshed", row_id)
    return fresh.access_token


#: Token endpoint answers to a refresh that mean the authorization itself is gone (RFC 6749 §5.2).
REFUSED_GRANT = frozenset({"invalid_grant", "unauthorized_client"})


#: The client_credentials scope of a registration_access_token (ThirdParty_Registration_Access, espi.md §6.3).
REGISTRATION_SCOPE = "FB=36_40"


def client_token(ctx: Context, client: CustodianClient, scope: str | None = None) -> str:
    """A client_access_token (Authorization, Batch/Bulk), or with ``scope`` another client_credentials token."""
    try:
        return client.client_credentials(scope).access_token
    except CustodianError as error:
        raise _failure(error, "client_credentials token") from None


# ---------------------------------------------------------------------------------------------- storing data


def store_file(session: Session, ctx: Context, path: Path, grant: Grant, source: str) -> str:
    """Translate ``path`` and upsert it under the Grant's customer; a pending Grant becomes active."""
    from bridge.ingest import IngestError, ingest_file, translate_options_for
    from espi.errors import EspiError

    try:
        report = ingest_file(session, path, customer_id=grant.customer_id, source=source[:256],
                             options=translate_options_for(ctx.config), now=ctx.now)
    except (EspiError, IngestError) as error:  # the document itself is wrong: fetching it again cannot help
        raise jobs.PermanentError(f"{source}: {error}") from None
    lifecycle.activate(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now)
    return report.summary()


# ---------------------------------------------------------------------------------------------------- handlers


def _first_fetch_dead(session: Session, job: Job, config: Any, error: str) -> None:
    """A first fetch (the one after consent) gave up: its pending Grant becomes ``errored``."""
    if job.payload.get("upstream_id") is None:
        return
    row = session.get(UpstreamAuthorization, job.payload["upstream_id"])
    grant = session.get(Grant, row.grant_id) if row is not None else None
    if grant is not None:
        ctx = context(config)
        lifecycle.first_fetch_failed(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now, error=error)


@register("fetch_subscription", queue="http", on_dead=_first_fetch_dead)
def fetch_subscription(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``uri`` (the subscription, maybe with a published window) and, for the first
    fetch after consent, ``upstream_id``."""
    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = job.payload.get("requested") or job.payload.get("uri")
    if job.payload.get("upstream_id") is not None:
        row = session.get(UpstreamAuthorization, job.payload["upstream_id"])
        rows = [row] if row is not None and row.revoked is None and upstream.has_tokens(row) else []
        uri = job.payload.get("requested") or (row.resource_uri if row is not None else None)
    else:
        rows = lifecycle.authorizations_for_resource(session, custodian.id, uri or "")
    if not uri:
        raise jobs.PermanentError("fetch_subscription needs a subscription URI")
    summaries = []
    for row in rows:
        grant = session.get(Grant, row.grant_id)
        if grant is None or not lifecycle.keeps_syncing(grant, ctx.now):
            if grant is not None:
                lifecycle.sync_ended(session, grant, urls=ctx.urls, box=ctx.box, now=ctx.now)
            summaries.append(f"grant {row.grant_id}: not syncing ({grant.status if grant else 'gone'})")
            continue
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
            summaries.append(f"grant {grant.grant_id}: " + store_file(session, ctx, answer.path, grant,
                                                                       f"{custodian.id}:{jobs_uri(uri)}"))
        finally:
            answer.path.unlink(missing_ok=True)
    if not rows:
        log.info("no live authorization of custodian %s has %s; nothing fetched", custodian.id, jobs_uri(uri))
        return f"no live authorization for {jobs_uri(uri)}"
    return "; ".join(summaries)


@register("fetch_bulk", queue="http")
def fetch_bulk(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``uri`` (``…/Batch/Bulk/{id}`` or ``sftp://…``). Downloads, splits per subscription
    and queues one ``ingest_bulk_part`` job per part (published after the commit)."""
    from espi.bulk import split_bulk
    from espi.errors import EspiError

    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = job.payload.get("requested") or job.payload.get("uri") or ""
    if uri.lower().startswith("sftp://"):
        path = _sftp_download(ctx, custodian, uri, job)
    else:
        client = ctx.client(custodian)
        try:
            answer = client.get(uri, client_token(ctx, client))
        except CustodianError as error:
            raise _failure(error, f"GET {jobs_uri(uri)}") from None
        if isinstance(answer, Deferred):
            raise _defer(ctx, job, custodian.id, answer)
        path = answer.path
    # The parts live until their ingest jobs are done; the directory is named by this job, so a re-run of it
    # splits into the same place and the (deduplicated) part jobs find their files. Each part is fanned out as
    # soon as the split completes it (espi.bulk on_part): its jobs are committed and published at once, so the
    # translate workers start while the split goes on.
    parts_dir = private_dir(Path(config.data_dir) / "bulk" / job.job_id)
    fan_out = _FanOut(ctx, session, job, custodian.id, jobs_uri(uri))
    try:
        split = split_bulk(path, parts_dir, on_part=fan_out.part)
    except EspiError as error:  # the file itself is wrong: neither it nor a retry is of any use
        path.unlink(missing_ok=True)
        if not fan_out.queued:
            _remove_dir(parts_dir)
        raise jobs.PermanentError(f"{jobs_uri(uri)}: {error}") from None
    if fan_out.unclaimed:
        # Never stored: no Grant of ours covers these subscriptions (another third party's, or revoked).
        log.warning("bulk %s: %d subscription(s) with no live authorization skipped: %s", jobs_uri(uri),
                    len(fan_out.unclaimed), ", ".join(fan_out.unclaimed[:20]))
    after_commit(session, lambda: path.unlink(missing_ok=True))
    if not fan_out.queued:
        after_commit(session, lambda: _remove_dir(parts_dir))
    return (f"{len(split.parts)} subscription part(s), {fan_out.queued} ingest job(s), "
            f"{len(fan_out.unclaimed)} unclaimed")


class _FanOut:
    """``on_part`` of a bulk split: one ``ingest_bulk_part`` job per authorization of the part's subscription,
    committed in a transaction of its own and published at once. Idempotent (dedupe keys name the bulk job, the
    subscription and the authorization): a re-run of the bulk job finds the jobs it made, and a part whose job is
    already done is not kept."""

    def __init__(self, ctx: Context, session: Session, job: Job, custodian_id: str, bulk: str) -> None:
        self.ctx, self.session, self.job, self.custodian_id, self.bulk = ctx, session, job, custodian_id, bulk
        self.queued = 0
        self.unclaimed: list[str] = []

    def part(self, part: Any) -> None:
        subscription_id, path = part.subscription, part.path
        made: list[tuple[str, str]] = []
        with sessions_for(self.ctx.config)() as session:
            with session.begin():
                rows = lifecycle.authorizations_for_subscription(session, self.custodian_id, subscription_id)
                files = []
                for index, row in enumerate(rows):
                    # each ingest job owns its file (a hard link for a subscription behind several grants), so
                    # the first to finish cannot remove another's part
                    own = path if index == 0 else _link(path, path.with_name(f"{path.stem}-{row.id}{path.suffix}"))
                    queued = jobs.enqueue(session, "ingest_bulk_part",
                                          {"custodian_id": self.custodian_id, "upstream_id": row.id,
                                           "path": str(own), "subscription_id": subscription_id, "bulk": self.bulk},
                                          f"bulk-part:{self.job.job_id}:{subscription_id}:{row.id}",
                                          queue="translate", now=self.ctx.now)
                    files.append((own, queued.state))
            made = jobs.take_new_jobs(session)
        for job_id, queue in made:
            publish_now(self.session, job_id, queue)
        if not rows:
            self.unclaimed.append(subscription_id)
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
        # named by the job: two bulk sets with the same file name never share a .part
        downloaded = sftp.download(custodian.sftp, remote, ctx.downloads() / "sftp",
                                   dest_name=f"{job.job_id}-{Path(remote).name}")
    except ValueError as error:
        raise jobs.PermanentError(f"{jobs_uri(uri)}: {error}") from None
    except sftp.SftpTransientError as error:
        raise jobs.RetryLater(f"{jobs_uri(uri)}: {error}") from None
    except sftp.SftpError as error:
        raise jobs.PermanentError(f"{jobs_uri(uri)}: {error}") from None
    return downloaded.path


@register("ingest_bulk_part", queue="translate")
def ingest_bulk_part(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``upstream_id``, ``path`` (one subscription's part of a bulk feed)."""
    ctx = context(config)
    row = session.get(UpstreamAuthorization, job.payload.get("upstream_id"))
    path = Path(job.payload.get("path") or "")
    if row is None:
        raise jobs.PermanentError(f"upstream authorization {job.payload.get('upstream_id')} is gone")
    grant = session.get(Grant, row.grant_id)
    if row.revoked is not None or grant is None or not lifecycle.keeps_syncing(grant, ctx.now):
        after_commit(session, lambda: path.unlink(missing_ok=True))
        return f"grant {row.grant_id}: not syncing; part skipped"
    if not path.is_file():
        raise jobs.PermanentError(f"{path}: bulk part missing (was the data directory cleaned?)")
    summary = store_file(session, ctx, path, grant, f"{row.custodian_id}:{job.payload.get('bulk')}"
                                                    f"#{job.payload.get('subscription_id')}")
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
    answer = client.get(uri, client_token(ctx, client, scope))
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
    from bridge.custodian_scopes import AUTHORIZATION_STATUS

    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = job.payload.get("requested") or job.payload.get("uri") or ""
    try:
        feed = _admin_feed(ctx, job, custodian, uri)
    except CustodianError as error:
        if error.status in (404, 410):  # the custodian forgot the Authorization: it no longer authorizes anything
            return _revoke_rows(session, ctx, lifecycle.authorizations_for_authorization(session, custodian.id, uri),
                                f"the data custodian no longer knows the authorization ({error.status})")
        raise _failure(error, f"GET {jobs_uri(uri)}") from None
    outcomes = []
    for entry in feed.entries:
        for resource in entry.resources:
            if resource.name != "Authorization":
                continue
            authorization = resource.value
            status = AUTHORIZATION_STATUS.get(authorization.status, "suspended")
            named = authorization.authorization_uri or entry.self_href or uri
            rows = lifecycle.authorizations_for_authorization(session, custodian.id, named)
            if status == "revoked":
                outcomes.append(_revoke_rows(session, ctx, rows, f"the customer revoked the authorization at "
                                                                 f"{custodian.name}"))
            else:
                outcomes.append(f"{jobs_uri(named)}: {status}, {len(rows)} grant(s) unchanged")
    return "; ".join(outcomes) or "no Authorization in the answer"


def _revoke_rows(session: Session, ctx: Context, rows: list[UpstreamAuthorization], why: str) -> str:
    changed = [row.grant_id for row in rows
               if lifecycle.revoke_from_upstream(session, row, urls=ctx.urls, box=ctx.box, now=ctx.now, why=why)]
    return f"{len(rows)} authorization(s) ended, grant(s) revoked: {', '.join(changed) or 'none'}"


@register("revoke_upstream", queue="http")
def revoke_upstream(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``upstream_id``. ``DELETE`` the custodian's Authorization with the client token;
    a 404/410 means it is already gone. The row is marked revoked either way once the custodian agreed."""
    ctx = context(config)
    row = session.get(UpstreamAuthorization, job.payload.get("upstream_id"))
    if row is None or row.revoked is not None:
        return "already revoked"
    custodian = ctx.custodian(row.custodian_id)
    if not row.authorization_uri:
        row.revoked = ctx.now
        return "no authorizationURI known; marked revoked"
    client = ctx.client(custodian)
    try:
        client.delete(row.authorization_uri, client_token(ctx, client))
    except CustodianError as error:
        if error.status not in (404, 410):
            raise _failure(error, f"DELETE {jobs_uri(row.authorization_uri)}") from None
    row.revoked = ctx.now
    row.modified = ctx.now
    return f"authorization {jobs_uri(row.authorization_uri)} revoked at {custodian.id}"



@register("sync_application_information", queue="http")
def sync_application_information(session: Session, job: Job, config: Any) -> str:
    """Payload: ``custodian_id``, ``uri``. The custodian changed our registration (PSH001): read it with a
    registration_access_token (client_credentials, scope FB=36_40) and report
    how its offered scope strings differ from the configured ones. The configuration is the operator's: offered
    scopes are never changed behind their back, but a custodian that withdrew a scope the consent hop asks for
    must be noticed (the job's result and a warning in the log say which)."""

    ctx = context(config)
    custodian = ctx.custodian(job.payload.get("custodian_id"))
    uri = job.payload.get("requested") or job.payload.get("uri") or ""
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
