"""Loading translated Green Button data into the store (reading it back: cds.store.objects).

CDS-WG3-01 §10 (the shared conventions of the customer-data APIs) gives every data object three timestamps:
``cds_created`` (when the server first had it), ``cds_modified`` (its last change, not counting ``cds_synced``) and
``cds_synced`` (its last validation against the source of truth; for cached data, the last batch that carried it).
The translator is stateless and stamps all three with the translation time; this module keeps them honest:

* an object is upserted by its stable id (docs/mapping.md §2), so re-ingesting a file creates nothing;
* its body is the object's JSON without the three timestamps, written canonically (sorted keys, decimals as exact
  JSON numbers, never floats), and ``body_hash`` (SHA-256 of those bytes) decides between *modified* (the body
  changed: ``cds_modified`` and ``cds_synced`` move, ``cds_created`` stays) and *confirmed* (same body: only
  ``cds_synced`` moves);
* an object already stored for another customer (or data set) is never taken over: :class:`IngestError`, and the
  caller's transaction rolls back, so nothing of the file is stored.

**Data sets** (docs/mapping.md §2.3). Every row belongs to a customer and a *data set*: "" for the customer's own
data (``greenbridge ingest --customer``), or the set of the grant whose upstream authorizations brought it
(``Grant.data_set``). A data set's ids are namespaced by it (:func:`id_namespace`), so the same ESPI object reached
through two grants is two rows with two ids, each grant seeing only what its own authorization brought. Rows also
remember the upstream authorization whose data created or last changed them (``upstream_id``).

Usage segments stream from the translation and are written in batches, so memory stays flat however many readings
a file holds. Sort and filter keys the listing APIs need (statement/section dates, account and contract numbers,
segment bounds) are copied into columns.

**Transactions.** By default everything is written in the caller's transaction (``greenbridge ingest``: a file that
fails leaves nothing behind). The workers pass ``batch_transaction`` instead (issue 13 item 8): each batch of at
most :data:`BATCH_SIZE` objects is then written and committed in a short transaction of its own, so a large file
never holds the store's write lock for longer than one batch (on SQLite the gateway's writes wait behind it). Every
batch is an upsert keyed by stable ids and decides created/modified/confirmed against what is stored when it runs,
so an ingest that stopped half-way and runs again converges to the rows one whole ingest makes: what the first
run stored keeps its ``cds_created`` (and ``cds_modified`` when its body is the same), only ``cds_synced`` moves.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from bridge.from_espi import LISTINGS, ReadingAccount, TranslateOptions, Translation, translate
from cds.projection import segment_serving
from cds.store.models import DataObject, UsageSegmentRow
from cds.store.objects import ID_FIELDS, OBJECT_KINDS, TIMESTAMPS

if TYPE_CHECKING:
    from bridge.config import GatewayConfig

#: The gateway's natural-key strategy (docs/mapping.md §2.1, D13): ``href`` scoped by the customer. Every ESPI entry
#: has a self href (GBA REST), while ``uuid`` silently merges distinct objects at custodians that repeat ids.
KEY_STRATEGY = "href"
#: The custodian key inside every id; the deployment's id secret already makes ids deployment-specific.
CUSTODIAN = "default"
BATCH_SIZE = 1000

# Same number handling as cds.jsonenc (Decimal → exact JSON number), plus sorted keys: the body bytes, and so the
# hash, do not depend on the order the translator happens to build its dicts in.
_canonical = msgspec.json.Encoder(decimal_format="number", order="sorted")
_NUMBER_LENGTH = 128  # DataObject/UsageSegmentRow account_number and contract_number columns


class IngestError(ValueError):
    """The file cannot be stored (e.g. one of its objects belongs to another customer); nothing of it is kept."""


@dataclass
class IngestReport:
    """What one ingest did, per listing name (every name of ``LISTINGS`` is present)."""

    source: str
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LISTINGS, 0))
    modified: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LISTINGS, 0))
    #: unchanged objects seen again: only their cds_synced moved
    confirmed: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LISTINGS, 0))
    #: readings the translation read from the file (None when unknown)
    readings: int | None = None
    #: the ``self`` hrefs of the file's UsagePoint entries (what the data covers: bridge.coverage records them)
    usage_point_hrefs: tuple[str, ...] = ()
    #: where each reading went: placed, or not placed by reason (docs/mapping.md §4.11; None when unknown)
    reading_account: ReadingAccount | None = None

    def total(self, kind: str) -> int:
        return self.created[kind] + self.modified[kind] + self.confirmed[kind]

    def summary(self) -> str:
        """One line: totals, then created/modified/confirmed per listing that had objects."""
        created, modified, confirmed = (sum(d.values()) for d in (self.created, self.modified, self.confirmed))
        parts = [f"{kind} {self.created[kind]}/{self.modified[kind]}/{self.confirmed[kind]}"
                 for kind in LISTINGS if self.total(kind)]
        readings = f"{self.readings} readings; " if self.readings is not None else ""
        account = self.reading_account
        if account is not None and account.placed != account.read:
            readings = f"{account.summary()}; "  # what was not placed, and why
        detail = f" ({', '.join(parts)} created/modified/confirmed)" if parts else ""
        return f"{readings}{created} created, {modified} modified, {confirmed} confirmed{detail}"


# ------------------------------------------------------------------------------------------------------ writing


def translate_options_for(config: GatewayConfig) -> TranslateOptions:
    """The gateway's pinned translation options (ids must never change between ingests of one deployment).

    * id secret: ``config.derived_key("ids")`` as hex (so ``greenbridge translate --id-secret HEX --key-strategy href
      --subscription CUSTOMER`` reproduces the gateway's ids when debugging). It derives from the deployment's
      ``secret_key``: rotating that key renames every object.
    * key strategy: ``href`` (see KEY_STRATEGY); :func:`ingest_file` scopes it by the customer id.
    * time zone: not set. TranslateOptions.timezone is not a fallback: a configured zone always wins over the file's
      LocalTimeParameters (espi.local_time.zone_for), and without a zone the translator already falls back to UTC.
    """
    return TranslateOptions(id_secret=config.derived_key("ids").hex(), custodian=CUSTODIAN,
                            key_strategy=KEY_STRATEGY)


def id_namespace(custodian: str, data_set: str) -> str:
    """The ``custodian`` part of every id (cds.ids) of a data set's objects: the custodian key alone for the
    customer's own set (the ids ``greenbridge translate --custodian KEY`` prints), ``KEY/{data set}`` for a grant's."""
    return f"{custodian}/{data_set}" if data_set else custodian


#: A factory of the short transactions a batched ingest commits each batch in (``with batch_transaction(): …``, on
#: the session passed along; None: everything in the caller's transaction).
BatchTransaction = Callable[[], contextlib.AbstractContextManager[Any]]


def ingest_file(session: Session, path: str | os.PathLike, *, customer_id: str, source: str | None = None,
                options: TranslateOptions | None = None, now: datetime | None = None, data_set: str = "",
                upstream_id: int | None = None, batch_transaction: BatchTransaction | None = None,
                batch_size: int = BATCH_SIZE, on_read: Callable[[int], None] | None = None) -> IngestReport:
    """Translates the Green Button file at ``path`` and stores it for ``customer_id`` in ``data_set`` (see
    :func:`ingest_translation`).

    Without ``options``, the development id secret and the gateway's key strategy are used (tests, one-off use); the
    gateway passes :func:`translate_options_for`. Options without a subscription get ``customer_id`` as theirs, so
    href keys and the synthetic account are scoped by the customer; ids are namespaced by the data set
    (:func:`id_namespace`). Translation errors (``espi.errors.EspiError``) name the file and line; the caller's
    transaction must roll back on any exception (with ``batch_transaction``, the batches before it stay stored).
    ``on_read`` is called with the bytes read (progress bars).
    """
    now = _utc_now(now)
    options = options or TranslateOptions(key_strategy=KEY_STRATEGY)
    if options.subscription is None:
        options = replace(options, subscription=customer_id)
    options = replace(options, now=now, custodian=id_namespace(options.custodian, data_set))
    path = os.fspath(path)
    with translate(path, options, name=path, on_read=on_read) as translation:
        return ingest_translation(session, translation, customer_id=customer_id,
                                  source=source if source is not None else Path(path).name, now=now,
                                  data_set=data_set, upstream_id=upstream_id, batch_transaction=batch_transaction,
                                  batch_size=batch_size)


def ingest_translation(session: Session, translation: Translation, *, customer_id: str, source: str,
                       now: datetime, data_set: str = "", upstream_id: int | None = None,
                       batch_transaction: BatchTransaction | None = None, batch_size: int = BATCH_SIZE
                       ) -> IngestReport:
    """Upserts every object of ``translation`` for ``customer_id`` in ``data_set``, recording ``upstream_id`` as the
    authorization that brought what it creates or changes; flushes, never commits, unless ``batch_transaction`` is
    given: then each batch (``batch_size`` objects) is written inside ``with batch_transaction():`` (which commits
    it), and the next batch is translated with no transaction open (see "Transactions" above).

    New objects get created = modified = synced = ``now``; an unchanged body moves only synced; a changed body is
    replaced and moves modified and synced. ``now`` is kept to whole seconds (what the API shows). Raises
    :class:`IngestError` when an object with the same id is stored for another customer or data set.
    """
    if not customer_id or len(customer_id) > 128:
        raise IngestError(f"customer id must be 1-128 characters, got {customer_id!r}")
    if len(data_set) > 64:
        raise IngestError(f"data set must be at most 64 characters, got {data_set!r}")
    now = _utc_now(now)
    report = IngestReport(source=source, readings=translation.reading_count,
                          usage_point_hrefs=tuple(getattr(translation, "usage_point_hrefs", ())))
    writer = _Writer(session, customer_id, data_set, upstream_id, source[:256], now, report,
                     batched=batch_transaction is not None)
    transaction = batch_transaction or contextlib.nullcontext
    numbers = _Numbers()
    for kind in OBJECT_KINDS:
        numbers.learn(kind, translation.listing(kind))
    for kind in OBJECT_KINDS:
        rows = (writer.object_row(kind, obj, numbers) for obj in translation.listing(kind))
        for batch in _batches(rows, batch_size):  # built before its transaction opens
            with transaction():
                writer.upsert(DataObject, DataObject.object_id, kind, batch)
    segments = (writer.segment_row(obj, numbers) for obj in translation.usage_segments())
    for batch in _batches(segments, batch_size):
        with transaction():
            writer.upsert(UsageSegmentRow, UsageSegmentRow.segment_id, "usage_segments", batch)
    report.reading_account = translation.reading_account()
    if batch_transaction is None:
        session.flush()
    return report


class _Numbers:
    """Account and contract numbers by id, from the small objects of one translation (O(customers), not readings)."""

    def __init__(self) -> None:
        self.accounts: dict[str, str | None] = {}
        self.contracts: dict[str, tuple[str | None, str | None, str | None]] = {}  # number, account id, account no.
        self.servicepoint_contracts: dict[str, list[str]] = {}

    def learn(self, kind: str, objects: Iterable[dict[str, Any]]) -> None:
        for obj in objects:
            if kind == "accounts":
                self.accounts[obj["cds_account_id"]] = _number(obj.get("account_number"))
            elif kind == "service_contracts":
                self.contracts[obj["cds_servicecontract_id"]] = (
                    _number(obj.get("contract_number")), obj.get("cds_account_id"), _number(obj.get("account_number")))
            elif kind == "service_points":
                self.servicepoint_contracts[obj["cds_servicepoint_id"]] = list(obj.get("current_servicecontracts")
                                                                               or ())

    def of(self, kind: str, obj: dict[str, Any]) -> tuple[str | None, str | None]:
        """(account_number, contract_number) of an object: its own, else its related account's and contract's."""
        account_number = _number(obj.get("account_number"))
        contract_number = _number(obj.get("contract_number"))
        if account_number is not None and (contract_number is not None or kind == "accounts"):
            return account_number, contract_number
        contract_ids: list[str] = []
        if kind == "service_contracts":
            contract_ids.append(obj["cds_servicecontract_id"])
        contract_ids += obj.get("related_servicecontracts") or ()
        contract_ids += obj.get("current_servicecontracts") or ()
        for servicepoint in obj.get("current_servicepoints") or ():  # meter devices
            contract_ids += self.servicepoint_contracts.get(servicepoint, ())
        contracts = [self.contracts[c] for c in contract_ids if c in self.contracts]
        if contract_number is None and kind != "accounts":
            contract_number = next((c[0] for c in contracts if c[0] is not None), None)
        if account_number is None:
            account_ids = [obj["cds_account_id"]] if obj.get("cds_account_id") else []
            account_ids += obj.get("related_accounts") or ()
            account_ids += [c[1] for c in contracts if c[1]]
            account_number = next((n for n in (self.accounts.get(a) for a in account_ids) if n is not None), None)
            if account_number is None:
                account_number = next((c[2] for c in contracts if c[2] is not None), None)
        return account_number, contract_number


class _Writer:
    def __init__(self, session: Session, customer_id: str, data_set: str, upstream_id: int | None, source: str,
                 now: datetime, report: IngestReport, batched: bool = False):
        self.session = session
        self.batched = batched
        self.customer_id = customer_id
        self.data_set = data_set
        self.upstream_id = upstream_id
        self.source = source
        self.now = now
        self.report = report

    def object_row(self, kind: str, obj: dict[str, Any], numbers: _Numbers) -> dict[str, Any]:
        body, digest = _body(obj)
        account_number, contract_number = numbers.of(kind, obj)
        sort_date = obj.get("statement_date") if kind == "bill_statements" else \
            obj.get("start_date") if kind == "bill_sections" else None
        return {"kind": kind, "object_id": obj[ID_FIELDS[kind]], "body": body, "body_hash": digest,
                "sort_date": sort_date, "account_number": account_number, "contract_number": contract_number}

    def segment_row(self, obj: dict[str, Any], numbers: _Numbers) -> dict[str, Any]:
        body, digest = _body(obj)
        account_number, contract_number = numbers.of("usage_segments", obj)
        serving, shape = segment_serving(body) or (None, None)
        return {"segment_id": obj["cds_usagesegment_id"], "segment_start": _parse_utc(obj["segment_start"]),
                "segment_end": _parse_utc(obj["segment_end"]), "body": body, "body_hash": digest,
                "account_number": account_number, "contract_number": contract_number, "serving": serving,
                "serving_shape": shape}

    def upsert(self, model: type, id_column, kind: str, rows: list[dict[str, Any]]) -> None:
        """One batch: look the ids up, then insert the new, replace the changed and confirm the unchanged rows."""
        id_name = id_column.key
        by_id = {row[id_name]: row for row in rows}  # a repeated id in one batch: the last one wins
        query = select(id_column, model.customer_id, model.data_set, model.body_hash, model.account_number,
                       model.contract_number).where(id_column.in_(list(by_id)))
        if model is DataObject:
            query = query.where(DataObject.kind == kind)
        existing = {row[0]: row for row in self.session.execute(query)}
        inserts, changes, confirmed, renumbered = [], [], [], []
        for object_id, row in by_id.items():
            old = existing.get(object_id)
            if old is None:
                inserts.append(row | {"customer_id": self.customer_id, "data_set": self.data_set,
                                      "upstream_id": self.upstream_id, "source": self.source,
                                      "created": self.now, "modified": self.now, "synced": self.now})
            elif (old.customer_id, old.data_set) != (self.customer_id, self.data_set):
                kept = "the batches before this one stay stored" if self.batched else "nothing of this file was stored"
                raise IngestError(f"{kind} object {object_id} ({self.source}) is already stored for customer "
                                  f"{old.customer_id!r}{_in_set(old.data_set)}, not {self.customer_id!r}"
                                  f"{_in_set(self.data_set)}; {kept}")
            elif old.body_hash != row["body_hash"]:
                changes.append(row | {"source": self.source, "upstream_id": self.upstream_id,
                                      "modified": self.now, "synced": self.now})
            else:
                confirmed.append(object_id)
                if (old.account_number, old.contract_number) != (row["account_number"], row["contract_number"]):
                    renumbered.append({id_name: object_id, "account_number": row["account_number"],
                                       "contract_number": row["contract_number"]} |
                                      ({"kind": kind} if model is DataObject else {}))
        if inserts:
            self.session.execute(model.__table__.insert(), inserts)
        if changes:
            self.session.execute(update(model), changes)  # ORM bulk UPDATE by primary key
        if renumbered:
            self.session.execute(update(model), renumbered)
        if confirmed:
            statement = update(model).where(id_column.in_(confirmed)).values(synced=self.now)
            if model is DataObject:
                statement = statement.where(DataObject.kind == kind)
            self.session.execute(statement, execution_options={"synchronize_session": False})
        self.report.created[kind] += len(inserts)
        self.report.modified[kind] += len(changes)
        self.report.confirmed[kind] += len(confirmed)


def _in_set(data_set: str) -> str:
    return f" (data set {data_set!r})" if data_set else ""


def _body(obj: dict[str, Any]) -> tuple[str, str]:
    """The stored body (canonical JSON without the cds_* timestamps) and its SHA-256 hex."""
    data = _canonical.encode({k: v for k, v in obj.items() if k not in TIMESTAMPS})
    return data.decode(), hashlib.sha256(data).hexdigest()


def _number(value: Any) -> str | None:
    """An account or contract number usable as a filter key: a non-empty string that fits the column."""
    if isinstance(value, str) and value.strip() and len(value) <= _NUMBER_LENGTH:
        return value
    return None


def _parse_utc(value: str) -> datetime:
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise IngestError(f"datetime without offset in a translated object: {value!r}")
    return parsed.astimezone(UTC)


def _utc_now(now: datetime | None) -> datetime:
    if now is None:
        now = datetime.now(UTC)
    elif now.tzinfo is None:
        raise ValueError(f"naive datetime {now!r}: pass a UTC-aware time")
    return now.astimezone(UTC).replace(microsecond=0)


def _batches(rows: Iterator[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for row in rows:
        batch.append(row)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch
