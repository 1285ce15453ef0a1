"""The upstream hop of the consent flow (issue 5): a legacy custodian's OAuth authorization behind a CDS Grant.

After the customer approves a CDS request and picks their utility, the gateway sends them to that custodian's
authorize page (ESPI §6.4) and finishes the CDS flow when the custodian redirects back:

* :func:`start` keeps the approved, validated CDS request server-side (a ``pushed_requests`` row of kind
  ``"upstream"``) under the hash of a random ``state`` sent upstream; :func:`take` is its one-time, time-limited
  lookup, tied to the custodian the state was issued for. Nothing the custodian's redirect carries is trusted but
  that state.
* :func:`bind` keeps the custodian's tokens against the new Grant, encrypted with the :class:`~cds.secrets.SecretBox`
  (the workers send them to the custodian; no API returns them, no log shows them); :func:`tokens_of` decrypts.
* :func:`customer_key` is the Grant's ``customer_id`` for the custodian's customer. A Grant's first upstream
  authorization (:func:`bind`, :func:`link_imported`) gives it a data set of its own (``Grant.data_set``,
  docs/mapping.md §2.3): what that authorization brings is stored and read there, apart from what other
  authorizations of the same customer bring.
* :func:`link_imported` / :func:`imported_grant_id`: an existing ESPI Authorization migrated to a server-created Grant
  (``greenbridge custodian import-authorizations``) is linked to it by a row without tokens
  (``access_token_encrypted`` empty: the gateway never received them), one per custodian and ``authorizationURI``.
* :func:`origins`: where the custodian's resources lie; :func:`foreign_uris` checks what a token response or an
  Authorization names before it is stored (issue 13 item 1).
* The custodian's client_credentials tokens (the client and registration access tokens, ESPI §6.3) are kept
  encrypted in ``custodian_tokens`` and shared by every worker process (:func:`cached_client_token`): one token
  request per token lifetime, the request itself leased to one process at a time
  (:func:`claim_client_token_request`, :func:`store_client_token`; issue 13 item 2).

Plain parameters in; nothing here reads configuration or does network I/O.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import urlsplit

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bridge import metrics
from cds.secrets import SecretBox
from cds.store.models import CustodianToken, Grant, PushedRequest, UpstreamAuthorization
from cds.store.ops import Activity
from espi.bulk import retail_customer_of
from espi.custodian_client import CustodianClient, CustodianEndpoints, CustodianTokens
from espi.origins import CustodianOrigins

KIND = "upstream"
#: How long the customer may take at the custodian's pages (WG3-01 §9.1 asks for at least ten minutes).
PENDING_SECONDS = 30 * 60
#: The ``eta`` of a Grant waiting for its first data from the custodian (CDS-WG1-02 §8.2 ``pending``); the fetch
#: itself comes with the workers (issue 6).
PENDING_ETA = timedelta(hours=1)


class CustodianSettings(Protocol):
    """What :func:`endpoints` needs of a configured custodian (bridge.config.CustodianConfig)."""

    id: str
    resource_url: str
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str
    application_information_url: str
    bulk_url: str
    sftp: Any


def resource_key(uri: str | None) -> str:
    """A resource URI compared without query, fragment, trailing slash or case of scheme and host (OpenESPI's third
    party also strips the query before matching a notification to an Authorization's resourceURI, espi.md §4.1)."""
    if not uri:
        return ""
    parts = urlsplit(uri.strip())
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}{parts.path.rstrip('/')}"


def uri_digest(uri: str | None) -> str | None:
    """The indexed lookup key of a resource URI (sha256 of :func:`resource_key`), None without a URI."""
    return hashlib.sha256(resource_key(uri).encode()).hexdigest() if uri else None


def subscription_id_of(uri: str | None) -> str | None:
    """``{id}`` of a ``…/Subscription/{id}`` resource URI (an Authorization's resourceURI), else None."""
    segments = [s for s in urlsplit(uri or "").path.split("/") if s]
    for index in range(len(segments) - 1, 0, -1):
        if segments[index - 1] == "Subscription":
            return segments[index][:128]
    return None


def lookup_keys(resource_uri: str | None, authorization_uri: str | None) -> dict[str, str | None]:
    """The lookup columns of an upstream_authorizations row."""
    return {"resource_digest": uri_digest(resource_uri), "authorization_digest": uri_digest(authorization_uri),
            "subscription_id": subscription_id_of(resource_uri)}


def _retail_customer(customer_resource_uri: str | None) -> str | None:
    found = retail_customer_of(customer_resource_uri)
    return found[:128] if found else None


def callback_url(issuer: str, custodian_id: str) -> str:
    """Our redirect URI at the custodian (registered there as the third party's redirect URI)."""
    return f"{issuer.rstrip('/')}/custodians/{custodian_id}/callback"


def origins(custodian: CustodianSettings) -> CustodianOrigins:
    """Where the custodian's resources lie (espi.origins): under its resource endpoint, its ApplicationInformation
    URL and its bulk endpoint (scheme, host, port and path prefix), or on its SFTP server (and remote_dir). The one
    answer to "may we act on this URI for this custodian", wherever a URI comes from."""
    sftp = getattr(custodian, "sftp", None)
    return CustodianOrigins.of(
        [custodian.resource_url, getattr(custodian, "application_information_url", ""),
         getattr(custodian, "bulk_url", "")],
        sftp_host=sftp.host if sftp else None, sftp_port=sftp.port if sftp else 22,
        sftp_remote_dir=str(sftp.remote_dir or "") if sftp else "")


def foreign_uris(custodian: CustodianSettings, **uris: str | None) -> list[str]:
    """``"name: reason"`` for each of the named URIs (e.g. ``resourceURI=…``) that is not one of the custodian's
    resources; empty when all are (or absent). What a custodian's answer names is stored, and later fetched or
    sent a token, only when this is empty."""
    found = origins(custodian)
    return [f"{name}: {reason}" for name, uri in uris.items()
            if uri and (reason := found.refusal(uri)) is not None]


def endpoints(custodian: CustodianSettings) -> CustodianEndpoints:
    """The custodian's endpoints; every URL the client fetches must be one of its resources (:func:`origins`;
    ForeignURLError otherwise)."""
    return CustodianEndpoints(resource_url=custodian.resource_url, authorize_url=custodian.authorize_url,
                              token_url=custodian.token_url, client_id=custodian.client_id,
                              client_secret=custodian.client_secret, origins=origins(custodian))


def client(custodian: CustodianSettings, issuer: str, *, activity: Activity | None = None,
           **options: Any) -> CustodianClient:
    """The custodian's client; each of its HTTP exchanges is counted (bridge.metrics: requests by status, latency)
    and, with ``activity``, recorded for the ops dashboard (cds.store.ops)."""
    return CustodianClient(endpoints(custodian), redirect_uri=callback_url(issuer, custodian.id),
                           observer=observer(custodian.id, activity), **options)


def observer(custodian_id: str, activity: Activity | None = None) -> Callable[[str, str, int | None, float], None]:
    """What a custodian client reports each exchange to: the Prometheus families and, when given, ``activity``."""

    def observe(method: str, url: str, status: int | None, seconds: float) -> None:
        metrics.observe_upstream(custodian_id, method, status, seconds)
        if activity is not None:
            activity.upstream(custodian_id, status=status, milliseconds=round(seconds * 1000),
                              at=datetime.now(UTC), error=None if status is not None and status < 400 else
                              f"{method} {urlsplit(url).path} answered {status or 'nothing'}")

    return observe


def start(session: Session, box: SecretBox, *, client_id: str, request: dict[str, str], custodian_id: str,
          scope: str, now: int | None = None) -> str:
    """Keep the approved CDS request while the customer is at the custodian; returns the upstream ``state``."""
    state = box.new_secret(32)
    now = int(time.time()) if now is None else now
    session.add(PushedRequest(
        handle_hash=box.hash(state), kind=KIND, client_id=client_id,
        parameters={"request": dict(request), "custodian_id": custodian_id, "scope": scope},
        expires_at=now + PENDING_SECONDS,
    ))
    session.flush()
    return state


def take(session: Session, box: SecretBox, state: str | None, custodian_id: str) -> dict[str, Any] | None:
    """The pending request of ``state`` (deleted: one use), or None when unknown, expired or another custodian's.

    The caller commits, so a replayed state finds nothing even when what follows fails.
    """
    if not state:
        return None
    row = session.get(PushedRequest, box.hash(state))
    if row is None or row.kind != KIND:
        return None
    session.delete(row)
    session.flush()
    pending = dict(row.parameters)
    if row.expires_at <= int(time.time()) or pending.get("custodian_id") != custodian_id:
        return None
    return pending


def customer_key(custodian_id: str, tokens: CustodianTokens) -> str:
    """The Grant's ``customer_id`` for the custodian's customer: ``{custodian}:{URI}`` with the customer's
    RetailCustomer resource when the custodian names it (stable across authorizations), else the Authorization's
    URI; hashed when longer than the column allows."""
    uri = tokens.customer_resource_uri or tokens.authorization_uri or tokens.resource_uri
    if not uri:
        raise ValueError("the custodian's token response names no resource to key the customer on")
    key = f"{custodian_id}:{uri}"
    if len(key) > 128:
        key = f"{custodian_id}:sha256:{hashlib.sha256(uri.encode()).hexdigest()[:40]}"
    return key


def own_data_set(session: Session, grant_id: str) -> None:
    """A Grant bound to its first upstream authorization gets a data set of its own, named by the Grant. A Grant
    that already has upstream authorizations keeps the data set it reads: a re-authorization (``cds_grant_id``)
    continues the same data and ids, and a Grant made before data sets existed keeps its customer's ("")."""
    grant = session.get(Grant, grant_id)
    if grant is None or grant.data_set:
        return
    earlier = session.scalars(select(UpstreamAuthorization.id).where(UpstreamAuthorization.grant_id == grant_id)
                              .limit(1)).first()
    if earlier is None:
        grant.data_set = grant_id


def bind(session: Session, box: SecretBox, *, grant_id: str, custodian_id: str, customer_id: str, scope: str,
         tokens: CustodianTokens, now: datetime | None = None) -> UpstreamAuthorization:
    """Store the custodian's tokens (encrypted) and ESPI URIs against ``grant_id`` (see :func:`own_data_set`)."""
    now = now or datetime.now(UTC)
    own_data_set(session, grant_id)
    row = UpstreamAuthorization(
        grant_id=grant_id, custodian_id=custodian_id, customer_id=customer_id, scope=tokens.scope or scope,
        access_token_encrypted=box.encrypt(tokens.access_token),
        refresh_token_encrypted=box.encrypt(tokens.refresh_token) if tokens.refresh_token else None,
        expires_at=tokens.expires_at, resource_uri=tokens.resource_uri, authorization_uri=tokens.authorization_uri,
        customer_resource_uri=tokens.customer_resource_uri, created=now, modified=now,
        retail_customer=_retail_customer(tokens.customer_resource_uri),
        **lookup_keys(tokens.resource_uri, tokens.authorization_uri),
    )
    session.add(row)
    session.flush()
    return row


def authorizations_of(session: Session, grant_id: str) -> list[UpstreamAuthorization]:
    return list(session.scalars(select(UpstreamAuthorization).where(UpstreamAuthorization.grant_id == grant_id)
                                .order_by(UpstreamAuthorization.id)))


def tokens_of(box: SecretBox, row: UpstreamAuthorization) -> CustodianTokens:
    """The stored authorization with its tokens decrypted (for the workers; never for an API answer).
    ``ValueError`` for an imported Authorization's row, which holds none (:func:`has_tokens`)."""
    if not has_tokens(row):
        raise ValueError(f"upstream authorization {row.authorization_uri} was imported: the gateway holds no tokens")
    return CustodianTokens(
        access_token=box.decrypt(row.access_token_encrypted),
        refresh_token=box.decrypt(row.refresh_token_encrypted) if row.refresh_token_encrypted else None,
        expires_at=row.expires_at, scope=row.scope, resource_uri=row.resource_uri,
        authorization_uri=row.authorization_uri, customer_resource_uri=row.customer_resource_uri,
    )


#: ``access_token_encrypted`` of an imported Authorization's row: no token was ever issued to the gateway.
NO_TOKEN = ""


def has_tokens(row: UpstreamAuthorization) -> bool:
    return row.access_token_encrypted != NO_TOKEN


def imported_grant_id(session: Session, custodian_id: str, authorization_uri: str) -> str | None:
    """The Grant already linked to the custodian's Authorization ``authorization_uri`` (imported or consented)."""
    return session.scalars(select(UpstreamAuthorization.grant_id).where(
        UpstreamAuthorization.custodian_id == custodian_id,
        UpstreamAuthorization.authorization_uri == authorization_uri).limit(1)).first()


def link_imported(session: Session, *, grant_id: str, custodian_id: str, customer_id: str, scope: str,
                  resource_uri: str | None, authorization_uri: str, customer_resource_uri: str | None,
                  now: datetime | None = None) -> UpstreamAuthorization:
    """Link a server-created Grant to the existing ESPI Authorization it was migrated from (no tokens; see
    :func:`own_data_set`)."""
    now = now or datetime.now(UTC)
    own_data_set(session, grant_id)
    row = UpstreamAuthorization(
        grant_id=grant_id, custodian_id=custodian_id, customer_id=customer_id, scope=scope,
        access_token_encrypted=NO_TOKEN, refresh_token_encrypted=None, expires_at=None, resource_uri=resource_uri,
        authorization_uri=authorization_uri, customer_resource_uri=customer_resource_uri, created=now, modified=now,
        retail_customer=_retail_customer(customer_resource_uri), **lookup_keys(resource_uri, authorization_uri),
    )
    session.add(row)
    session.flush()
    return row


# ------------------------------------------------------------------------------------- client_credentials tokens

#: A client token is used until this long before it expires (or half its lifetime, when that is shorter), so a
#: request never leaves with a token about to die.
CLIENT_TOKEN_MARGIN = timedelta(seconds=120)
#: How long a token answered without ``expires_in`` is used (a 401 ends it earlier: :func:`forget_client_token`).
CLIENT_TOKEN_DEFAULT_LIFETIME = timedelta(hours=1)


def client_key(box: SecretBox, custodian: CustodianSettings) -> str:
    """Names the credentials and token endpoint a cached token was issued to (keyed hash: no secret stored)."""
    return box.hash(f"{custodian.token_url}\n{custodian.client_id}\n{custodian.client_secret}")


def _token_row(session: Session, custodian_id: str, scope: str | None, *, fresh: bool = False
               ) -> CustodianToken | None:
    return session.get(CustodianToken, (custodian_id, scope or ""), populate_existing=fresh)


def _usable(row: CustodianToken, now: datetime) -> bool:
    if not row.access_token_encrypted or row.expires_at is None:
        return False
    margin = CLIENT_TOKEN_MARGIN
    if row.obtained is not None:
        margin = min(margin, (row.expires_at - row.obtained) / 2)
    return now < row.expires_at - margin


def cached_client_token(session: Session, box: SecretBox, custodian: CustodianSettings, scope: str | None,
                        now: datetime) -> tuple[str | None, datetime | None]:
    """The custodian's stored client token for ``scope`` ("" or None: the plain client token) while it is usable
    and issued to the configured credentials, else None; and when the stored one was obtained (the version a
    :func:`claim_client_token_request` must still find)."""
    row = _token_row(session, custodian.id, scope, fresh=True)
    if row is None:
        return None, None
    if row.client_key != client_key(box, custodian) or not _usable(row, now):
        return None, row.obtained
    try:
        return box.decrypt(row.access_token_encrypted), row.obtained
    except ValueError:  # stored under another secret key: ask again
        return None, row.obtained


def claim_client_token_request(session: Session, custodian: CustodianSettings, scope: str | None, now: datetime,
                               lease: timedelta, seen: datetime | None) -> bool:
    """Take the lease to ask the custodian for a new token (the caller commits, then asks, then
    :func:`store_client_token` or :func:`release_client_token_request`); False while another process holds it, or
    when a token was stored since the caller looked (``seen``: the ``obtained`` it read). A guarded UPDATE, or an
    insert in a savepoint, so exactly one of concurrent claims wins and none follows a request that just ended."""
    version = CustodianToken.obtained.is_(None) if seen is None else CustodianToken.obtained == seen
    claimed = update(CustodianToken).where(
        CustodianToken.custodian_id == custodian.id, CustodianToken.scope == (scope or ""), version,
        or_(CustodianToken.requesting_until.is_(None), CustodianToken.requesting_until <= now),
    ).values(requesting_until=now + lease)
    if session.execute(claimed.execution_options(synchronize_session=False)).rowcount == 1:
        return True
    if _token_row(session, custodian.id, scope, fresh=True) is not None:
        return False
    try:
        with session.begin_nested():
            session.add(CustodianToken(custodian_id=custodian.id, scope=scope or "", client_key="",
                                       requesting_until=now + lease))
    except IntegrityError:
        return False
    return True


def store_client_token(session: Session, box: SecretBox, custodian: CustodianSettings, scope: str | None,
                       tokens: CustodianTokens, now: datetime) -> None:
    """Keep a new client token (encrypted) for every worker process, and end the request's lease."""
    row = _token_row(session, custodian.id, scope, fresh=True)
    if row is None:
        row = CustodianToken(custodian_id=custodian.id, scope=scope or "")
        session.add(row)
    row.client_key = client_key(box, custodian)
    row.access_token_encrypted = box.encrypt(tokens.access_token)
    row.obtained = now
    row.expires_at = tokens.expires_at or now + CLIENT_TOKEN_DEFAULT_LIFETIME
    row.requesting_until = None


def release_client_token_request(session: Session, custodian: CustodianSettings, scope: str | None) -> None:
    """The token request failed: the next process may ask at once."""
    session.execute(update(CustodianToken).where(CustodianToken.custodian_id == custodian.id,
                                                 CustodianToken.scope == (scope or ""))
                    .values(requesting_until=None).execution_options(synchronize_session=False))


def forget_client_token(session: Session, box: SecretBox, custodian: CustodianSettings, scope: str | None,
                        token: str) -> None:
    """The custodian refused ``token`` (401) before it expired: drop it, unless another process already stored a
    newer one."""
    row = _token_row(session, custodian.id, scope, fresh=True)
    if row is None or not row.access_token_encrypted:
        return
    try:
        stored = box.decrypt(row.access_token_encrypted)
    except ValueError:
        stored = None
    if stored in (None, token):
        row.access_token_encrypted = None
        row.expires_at = None
