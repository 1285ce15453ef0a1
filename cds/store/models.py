"""The gateway's tables (SQLAlchemy 2 declarative); migrations in cds/store/migrations mirror them.

Tenancy: one dynamic registration (CDS-WG1-02 §4) creates several Client objects; they share a ``registration_id``
(the admin Client's ``client_id``). A ``cds_client_admin`` token sees exactly the clients, credentials, grants and
messages of its own registration.

Secrets: access tokens, refresh tokens, authorization codes, PAR handles and receipt URLs are stored only as
keyed hashes; client secrets are stored encrypted (the Credentials API must show them again, WG1-02 §7) plus a
keyed hash used to authenticate.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, Boolean, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from cds.store.types import ExactDecimal, UTCDateTime


class Base(DeclarativeBase):
    type_annotation_map: ClassVar = {
        datetime: UTCDateTime, Decimal: ExactDecimal, dict[str, Any]: JSON, list[Any]: JSON,
    }


class Client(Base):
    """A CDS Client object (WG1-02 §5.2)."""

    __tablename__ = "clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    registration_id: Mapped[str] = mapped_column(String(64), index=True)
    client_id_issued_at: Mapped[int] = mapped_column(Integer)
    created: Mapped[datetime]
    modified: Mapped[datetime] = mapped_column(index=True)
    scope: Mapped[str] = mapped_column(Text, default="")
    redirect_uris: Mapped[list[Any]] = mapped_column(default=list)
    token_endpoint_auth_method: Mapped[str | None] = mapped_column(String(64))
    grant_types: Mapped[list[Any]] = mapped_column(default=list)
    response_types: Mapped[list[Any]] = mapped_column(default=list)
    client_name: Mapped[str] = mapped_column(Text)
    contacts: Mapped[list[Any]] = mapped_column(default=list)
    authorization_details_types: Mapped[list[Any]] = mapped_column(default=list)
    status: Mapped[str] = mapped_column(String(16))
    status_options: Mapped[list[Any]] = mapped_column(default=list)
    default_scope: Mapped[str | None] = mapped_column(Text)
    default_redirect_uri: Mapped[str | None] = mapped_column(Text)
    default_authorization_details: Mapped[list[Any] | None] = mapped_column(JSON)
    # Editable RFC 7591 URIs (client_uri, logo_uri, tos_uri, policy_uri) and submitted cds_* registration values.
    extra: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # The customer whose data a direct-access (cds_query_*) client reads, bound by the operator when enabling it;
    # None: its grants reach no customer data.
    customer_id: Mapped[str | None] = mapped_column(String(128))


class Credential(Base):
    """A client secret (WG1-02 §7)."""

    __tablename__ = "credentials"

    credential_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    registration_id: Mapped[str] = mapped_column(String(64), index=True)
    created: Mapped[datetime]
    modified: Mapped[datetime] = mapped_column(index=True)
    type: Mapped[str] = mapped_column(String(32), default="client_secret")
    secret_hash: Mapped[str] = mapped_column(String(64), unique=True)
    secret_encrypted: Mapped[str] = mapped_column(Text)
    expires_at: Mapped[int] = mapped_column(Integer, default=0)


class Token(Base):
    """An access token and its refresh token (RFC 6749 §1.4–1.5), hashed."""

    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    credential_id: Mapped[str | None] = mapped_column(String(64), index=True)
    grant_id: Mapped[str | None] = mapped_column(String(64), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(Text, default="")
    authorization_details: Mapped[list[Any]] = mapped_column(default=list)
    issued_at: Mapped[int] = mapped_column(Integer)
    expires_in: Mapped[int] = mapped_column(Integer)
    refresh_expires_at: Mapped[int | None] = mapped_column(Integer)
    access_revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    refresh_revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # The tokens descending from one issuance share it: a code exchange (the code's hash, so a replayed code finds
    # what it issued) and every refresh rotation after it. Revoking a refresh token or reusing one revokes the family.
    family_id: Mapped[str | None] = mapped_column(String(64), index=True)


class AuthorizationCode(Base):
    """A one-time authorization code (RFC 6749 §4.1.2) bound to its PKCE challenge (RFC 7636)."""

    __tablename__ = "authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"))
    redirect_uri: Mapped[str] = mapped_column(Text)
    scope: Mapped[str] = mapped_column(Text)
    authorization_details: Mapped[list[Any]] = mapped_column(default=list)
    code_challenge: Mapped[str] = mapped_column(String(128))
    code_challenge_method: Mapped[str] = mapped_column(String(16))
    # The redirect_uri as sent in the authorization request (None when the client default was used): RFC 6749
    # §4.1.3 requires the token request to repeat it exactly when it was sent.
    requested_redirect_uri: Mapped[str | None] = mapped_column(Text)
    grant_id: Mapped[str] = mapped_column(String(64))
    customer_id: Mapped[str] = mapped_column(String(128))
    auth_time: Mapped[int] = mapped_column(Integer)
    expires_at: Mapped[int] = mapped_column(Integer)


class PushedRequest(Base):
    """A pushed authorization request (RFC 9126): one-time ``request_uri``, short TTL."""

    __tablename__ = "pushed_requests"

    handle_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    # "par": a request_uri from the PAR endpoint; "consent": a validated request while the consent form is open;
    # "upstream": an approved request waiting for the custodian's redirect (the hash is of the upstream ``state``).
    kind: Mapped[str] = mapped_column(String(16), default="par")
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"))
    parameters: Mapped[dict[str, Any]]
    expires_at: Mapped[int] = mapped_column(Integer, index=True)


class Grant(Base):
    """A CDS Grant (WG1-02 §8.2)."""

    __tablename__ = "grants"

    grant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("clients.client_id"), index=True)
    registration_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str | None] = mapped_column(String(128), index=True)
    created: Mapped[datetime]
    modified: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(32))
    scope: Mapped[str] = mapped_column(Text, default="")
    authorization_details: Mapped[list[Any]] = mapped_column(default=list)
    enabled_scope: Mapped[str] = mapped_column(Text, default="")
    enabled_authorization_details: Mapped[list[Any]] = mapped_column(default=list)
    states: Mapped[list[Any]] = mapped_column(default=list)
    receipt_confirmations: Mapped[list[Any]] = mapped_column(default=list)
    replacing: Mapped[list[Any]] = mapped_column(default=list)
    replaced_by: Mapped[list[Any]] = mapped_column(default=list)
    parent: Mapped[str | None] = mapped_column(String(64))
    children: Mapped[list[Any]] = mapped_column(default=list)
    not_before: Mapped[datetime | None]
    not_after: Mapped[datetime | None]
    eta: Mapped[datetime | None]
    expires: Mapped[datetime | None]
    # The stored customer data this grant reads (DataObject.data_set, UsageSegmentRow.data_set): "" for its
    # customer's own data set (loaded for the customer, read by local-consent and direct-access grants), else a
    # set of its own, named by the grant, holding exactly what its upstream authorizations brought (docs/mapping.md
    # §2.3). Chosen when the first upstream authorization is bound; never changes.
    data_set: Mapped[str] = mapped_column(String(64), default="", server_default="")


class UpstreamAuthorization(Base):
    """A legacy custodian's OAuth authorization behind a Grant (issue 5): its tokens, encrypted, and ESPI URIs.

    The tokens are sent to the custodian only (the workers decrypt them); no API returns them and no log shows them.
    """

    __tablename__ = "upstream_authorizations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.grant_id"), index=True)
    custodian_id: Mapped[str] = mapped_column(String(64), index=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    scope: Mapped[str] = mapped_column(Text)  # the custodian scope string, verbatim
    access_token_encrypted: Mapped[str] = mapped_column(Text)
    refresh_token_encrypted: Mapped[str | None] = mapped_column(Text)
    expires_at: Mapped[datetime | None]
    resource_uri: Mapped[str | None] = mapped_column(Text)
    authorization_uri: Mapped[str | None] = mapped_column(Text)
    customer_resource_uri: Mapped[str | None] = mapped_column(Text)
    created: Mapped[datetime]
    modified: Mapped[datetime]
    # Set when either side ended the authorization (the customer at the custodian, or a CDS revocation that the
    # workers carried upstream); a revoked authorization is never fetched with again.
    revoked: Mapped[datetime | None]
    # Lookup keys of the URIs above (bridge.upstream.uri_digest, subscription_id_of): a notification or a bulk part
    # finds its authorizations with one indexed query, however many customers the custodian has.
    resource_digest: Mapped[str | None] = mapped_column(String(64), index=True)
    authorization_digest: Mapped[str | None] = mapped_column(String(64), index=True)
    subscription_id: Mapped[str | None] = mapped_column(String(128), index=True)
    # The custodian's RetailCustomer id ({C} of its ``…/RetailCustomer/{C}`` hrefs): from customerResourceURI, or
    # learned from the hrefs of the data it brought; how a bulk entry naming the customer but no subscription finds
    # its authorization (bridge.coverage).
    retail_customer: Mapped[str | None] = mapped_column(String(128))
    # A token refresh in progress (workers.upstream.refresh): its claim and until when the claim holds. Refreshes of
    # one authorization take turns through it, without holding a store transaction across the custodian's answer:
    # custodians rotate refresh tokens, so a second refresh with the old one would end the authorization.
    refresh_claim: Mapped[str | None] = mapped_column(String(32))
    refresh_claimed_until: Mapped[datetime | None]


class UpstreamUsagePoint(Base):
    """A UsagePoint an upstream authorization's data held (recorded when its data is stored): what the authorization
    covers, so that a bulk entry naming a UsagePoint but no subscription finds the authorizations holding it
    (bridge.coverage). ``retail_customer`` is "" when the UsagePoint's hrefs name no customer."""

    __tablename__ = "upstream_usage_points"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    upstream_id: Mapped[int] = mapped_column(ForeignKey("upstream_authorizations.id"), index=True)
    custodian_id: Mapped[str] = mapped_column(String(64))
    retail_customer: Mapped[str] = mapped_column(String(128), default="")
    usage_point: Mapped[str] = mapped_column(String(128))
    first_seen: Mapped[datetime]
    last_seen: Mapped[datetime]


class Receipt(Base):
    """An Authorization Receipt (WG3-01 §9.4) at a random URL; the handle is stored hashed."""

    __tablename__ = "receipts"

    handle_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    confirmation: Mapped[str] = mapped_column(String(32), unique=True)
    grant_id: Mapped[str] = mapped_column(ForeignKey("grants.grant_id"), index=True)
    created: Mapped[datetime]
    snapshot: Mapped[dict[str, Any]]
    superseded_by: Mapped[str | None] = mapped_column(String(32))


class Message(Base):
    """A CDS Message (WG1-02 §6.2); also the changelog of every Client, Credential and Grant change."""

    __tablename__ = "messages"

    message_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    registration_id: Mapped[str] = mapped_column(String(64), index=True)
    previous_uri: Mapped[str | None] = mapped_column(Text)
    type: Mapped[str] = mapped_column(String(32))
    read: Mapped[bool] = mapped_column(Boolean, default=False)
    creator: Mapped[str | None] = mapped_column(String(64))
    created: Mapped[datetime]
    modified: Mapped[datetime] = mapped_column(index=True)
    status: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(Text, default="")
    description: Mapped[str] = mapped_column(Text, default="")
    updates_requested: Mapped[list[Any] | None] = mapped_column(JSON)
    grants_requested: Mapped[list[Any] | None] = mapped_column(JSON)
    attachments: Mapped[list[Any] | None] = mapped_column(JSON)
    related_uri: Mapped[str | None] = mapped_column(Text)
    related_type: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[Decimal | None]
    currency: Mapped[str | None] = mapped_column(String(3))


class AuthFailure(Base):
    """Failed client authentications of one key, for throttling them (cds.auth_throttle): a (client id, address)
    pair, or an address alone. Times are epoch seconds."""

    __tablename__ = "auth_failures"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)  # a digest (cds.auth_throttle.failure_keys)
    window_start: Mapped[int] = mapped_column(Integer)  # failures counts those since this time
    failures: Mapped[int] = mapped_column(Integer, default=0)
    blocks: Mapped[int] = mapped_column(Integer, default=0)  # how many times the limit was reached: the backoff
    blocked_until: Mapped[int] = mapped_column(Integer, default=0)
    last_failure: Mapped[int] = mapped_column(Integer, index=True)


class RateWindow(Base):
    """How much of a rate one key spent in its current fixed window (the notifications a custodian's BatchLists
    asked for per minute, bridge.notifications.spend). Times are epoch seconds."""

    __tablename__ = "rate_windows"

    key: Mapped[str] = mapped_column(String(160), primary_key=True)
    window_start: Mapped[int] = mapped_column(Integer)
    count: Mapped[int] = mapped_column(Integer, default=0)


class CustodianToken(Base):
    """A custodian's client_credentials token (the third party's client or registration access token, ESPI §6.3),
    kept encrypted and shared by every worker process until it is due (bridge.upstream.cached_client_token):
    one token request per token lifetime. ``scope`` is "" for the plain client token. ``client_key`` names the
    credentials and token endpoint it was issued to (changing them invalidates it). ``requesting_until`` is the
    lease of the one process asking the custodian for a new token."""

    __tablename__ = "custodian_tokens"

    custodian_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    scope: Mapped[str] = mapped_column(String(128), primary_key=True)
    client_key: Mapped[str] = mapped_column(String(64))
    access_token_encrypted: Mapped[str | None] = mapped_column(Text)
    obtained: Mapped[datetime | None]
    expires_at: Mapped[datetime | None]
    requesting_until: Mapped[datetime | None]


Index("ix_grants_registration_modified", Grant.registration_id, Grant.modified)


class DataObject(Base):
    """A translated CDS customer-data object other than a usage segment (WG3-01 §10): accounts, service contracts,
    service points, meter devices, bill statements, bill sections.

    ``body`` is the object's JSON (exact decimals, written by cds.jsonenc) without the three ``cds_*`` timestamps,
    which live in columns; ``body_hash`` decides whether a re-ingest changed it (``cds_modified``) or only confirmed
    it (``cds_synced``). Sort and filter keys the API needs are copied into columns.
    """

    __tablename__ = "data_objects"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # the listing name, e.g. "service_contracts"
    object_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    # The data set the object belongs to (Grant.data_set): "" for the customer's own, else a grant's; its id is
    # namespaced by it (docs/mapping.md §2.3), so one ESPI object reached through two grants is two rows.
    data_set: Mapped[str] = mapped_column(String(64), default="", server_default="")
    # The upstream authorization whose data created or last changed it (None: loaded for the customer, or stored
    # before this was recorded and not attributable).
    upstream_id: Mapped[int | None] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(String(256), default="")
    created: Mapped[datetime]
    modified: Mapped[datetime]
    synced: Mapped[datetime]
    body: Mapped[str] = mapped_column(Text)
    body_hash: Mapped[str] = mapped_column(String(64))
    sort_date: Mapped[str | None] = mapped_column(String(10))  # statement_date / start_date, ISO
    account_number: Mapped[str | None] = mapped_column(String(128))
    contract_number: Mapped[str | None] = mapped_column(String(128))


class UsageSegmentRow(Base):
    """A translated Usage Segment (WG3-01 §10.8); the body keeps formats and values exactly."""

    __tablename__ = "usage_segments"

    segment_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[str] = mapped_column(String(128))
    data_set: Mapped[str] = mapped_column(String(64), default="", server_default="")  # as DataObject.data_set
    upstream_id: Mapped[int | None] = mapped_column(Integer)  # as DataObject.upstream_id
    source: Mapped[str] = mapped_column(String(256), default="")
    created: Mapped[datetime]
    modified: Mapped[datetime]
    synced: Mapped[datetime]
    segment_start: Mapped[datetime]
    segment_end: Mapped[datetime]
    body: Mapped[str] = mapped_column(Text)
    body_hash: Mapped[str] = mapped_column(String(64))
    account_number: Mapped[str | None] = mapped_column(String(128))
    contract_number: Mapped[str | None] = mapped_column(String(128))
    # What the listing serves the segment from when a grant keeps it whole, written with the body
    # (cds.projection.segment_serving): the JSON after the id and timestamps, and what a grant's decision reads.
    # NULL: served from the body.
    serving: Mapped[str | None] = mapped_column(Text)
    serving_shape: Mapped[str | None] = mapped_column(Text)


Index("ix_data_objects_customer_set_kind", DataObject.customer_id, DataObject.data_set, DataObject.kind)
Index("ix_usage_segments_customer_set_start", UsageSegmentRow.customer_id, UsageSegmentRow.data_set,
      UsageSegmentRow.segment_start)
Index("ix_upstream_authorizations_custodian_customer", UpstreamAuthorization.custodian_id,
      UpstreamAuthorization.retail_customer)
Index("ix_upstream_usage_points_custodian_point", UpstreamUsagePoint.custodian_id, UpstreamUsagePoint.usage_point)
Index("uq_upstream_usage_points_upstream_point", UpstreamUsagePoint.upstream_id, UpstreamUsagePoint.retail_customer,
      UpstreamUsagePoint.usage_point, unique=True)


class Job(Base):
    """One durable unit of upstream work (issue 6; workers/jobs.py owns its state machine).

    A Celery message carries only ``job_id``; this row is the truth. ``state`` is queued, running, deferred, done,
    failed (will be retried at ``run_after``) or dead (gave up). ``attempts`` counts claims and doubles as the
    fencing token of the current run; ``lease_until`` bounds how long a running claim is trusted before the
    reconciler re-enqueues it. ``dedupe_key`` names the work (one row per key): enqueueing is idempotent, and a
    notification asks the same row for another run (cds.store.jobs.request_run): ``generation`` counts those
    requests (what a run creates is keyed by it), and ``rerun`` records one that arrived while a run was going, so
    the end of that run queues the next. ``result`` is the last run's summary (or note) for operators.
    """

    __tablename__ = "jobs"

    job_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(64))
    queue: Mapped[str] = mapped_column(String(16))
    dedupe_key: Mapped[str] = mapped_column(String(255), unique=True)
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    run_after: Mapped[datetime | None]
    lease_until: Mapped[datetime | None]
    created: Mapped[datetime]
    modified: Mapped[datetime]
    started: Mapped[datetime | None]
    finished: Mapped[datetime | None]
    # A deferred job (HTTP 202) waits for a BatchList naming this resource: a digest of custodian and URI path
    # (cds.store.jobs.waiting_key), so the notification receiver finds the job to resume with one indexed lookup.
    waiting_for: Mapped[str | None] = mapped_column(String(64))
    # How many times the work was requested (a notification asks again), and whether a request came while it ran.
    generation: Mapped[int] = mapped_column(Integer, default=1)
    rerun: Mapped[bool] = mapped_column(Boolean, default=False)
    # What the last successful run did (its summary line), and what it wants the operator to see although it
    # succeeded (e.g. bulk entries it could not place); each successful run replaces both.
    result: Mapped[str | None] = mapped_column(Text)
    warning: Mapped[str | None] = mapped_column(Text)
    # When the job's last Celery message was sent, or becomes deliverable (a countdown): the reconciler publishes a
    # due job once per due time (``published_at < run_after``) and a stale one once per staleness period, however
    # long the workers lag (workers.jobs.lost).
    published_at: Mapped[datetime | None]
    # The custodian the work is for (its payload's ``custodian_id``; None for work of no custodian): the ops
    # dashboard counts jobs per custodian with an index rather than by reading every payload.
    custodian_id: Mapped[str | None] = mapped_column(String(64))
    # The id of the request that asked for the latest run (X-Request-Id, docs/operations.md): the worker that
    # runs it logs it, so one id follows a notification or a consent from the gateway into the jobs it made.
    request_id: Mapped[str | None] = mapped_column(String(64))


Index("ix_jobs_state_run_after", Job.state, Job.run_after)
Index("ix_jobs_waiting_for", Job.waiting_for)
# The ops dashboard and /metrics: counts and the oldest waiting job per state, custodian and kind read this index
# alone; the latest errors, dead jobs and the last hour's done jobs are ranges of the second.
Index("ix_jobs_state_custodian_kind_created", Job.state, Job.custodian_id, Job.kind, Job.created)
Index("ix_jobs_state_modified", Job.state, Job.modified)
Index("ix_grants_status", Grant.status)


class OpsMinute(Base):
    """What the bridge did in one minute for one custodian ("" for work of none): the ops dashboard's charts of
    the last hour (ingest throughput, upstream error rate). Workers add to it after each job run; the gateway adds
    the notifications it received. Rows older than a day are pruned by the reconciler, so the table stays small."""

    __tablename__ = "ops_minutes"

    minute: Mapped[datetime] = mapped_column(primary_key=True)
    custodian_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    readings: Mapped[int] = mapped_column(BigInteger, default=0)
    upstream_requests: Mapped[int] = mapped_column(Integer, default=0)
    upstream_errors: Mapped[int] = mapped_column(Integer, default=0)
    upstream_ms: Mapped[int] = mapped_column(BigInteger, default=0)  # the requests' latencies added up
    notifications: Mapped[int] = mapped_column(Integer, default=0)  # resource URIs accepted from BatchLists
    notifications_refused: Mapped[int] = mapped_column(Integer, default=0)
    sftp_bytes: Mapped[int] = mapped_column(BigInteger, default=0)


class OpsCustodian(Base):
    """A custodian's health as the ops dashboard shows it: the last successful and failed upstream request (with
    its error and latency) and the last notification received. One row per custodian, kept (unlike OpsMinute): a
    custodian silent for a week must show when it last answered."""

    __tablename__ = "ops_custodians"

    custodian_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_success: Mapped[datetime | None]
    last_failure: Mapped[datetime | None]
    last_error: Mapped[str | None] = mapped_column(Text)
    last_latency_ms: Mapped[int | None] = mapped_column(Integer)
    last_notification: Mapped[datetime | None]
