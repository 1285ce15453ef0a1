"""Stored CDS data objects: the store's rows read back as CDS-WG3-01 objects.

Every data object is stored as its JSON body without the three §10 timestamps (``cds_created``, ``cds_modified``,
``cds_synced``), which live in columns; reading a row puts them back, numbers exact (Decimal, never float). The
writing side is the ingest (bridge.ingest), which fills these rows from translated Green Button data.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from datetime import UTC, datetime
from decimal import Decimal
from functools import lru_cache
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from cds.store.models import DataObject, UsageSegmentRow

#: The id field of each listing's objects.
ID_FIELDS = {
    "usage_segments": "cds_usagesegment_id",
    "service_points": "cds_servicepoint_id",
    "meter_devices": "cds_meterdevice_id",
    "bill_sections": "cds_billsection_id",
    "bill_statements": "cds_billstatement_id",
    "accounts": "cds_account_id",
    "service_contracts": "cds_servicecontract_id",
}
#: The listings stored in ``data_objects`` (everything but usage segments), in ingest order.
OBJECT_KINDS = ("accounts", "service_contracts", "service_points", "meter_devices", "bill_statements", "bill_sections")
TIMESTAMPS = ("cds_created", "cds_modified", "cds_synced")


def load_objects(session: Session, customer_ids: Collection[str], kind: str | None = None, *,
                 data_set: str = "") -> list[dict[str, Any]]:
    """The stored non-segment objects of these customers in ``data_set`` (a grant's, or "" for the customers' own;
    see DataObject.data_set), of one listing ``kind`` or all, as full CDS objects in (kind, id) order; see
    :func:`data_object`."""
    query = select(DataObject).where(DataObject.customer_id.in_(list(customer_ids)), DataObject.data_set == data_set)
    if kind is not None:
        query = query.where(DataObject.kind == kind)
    query = query.order_by(DataObject.kind, DataObject.object_id)
    return [data_object(row) for row in session.scalars(query)]


def data_object(row: DataObject) -> dict[str, Any]:
    """A DataObject row as its CDS object: id and cds_* timestamps first, decimals as Decimal, integers as int."""
    return _object(ID_FIELDS[row.kind], row)


def segment_object(row: UsageSegmentRow) -> dict[str, Any]:
    """A UsageSegmentRow as its CDS Usage Segment (like :func:`data_object`)."""
    return _object("cds_usagesegment_id", row)


def _object(id_field: str, row: DataObject | UsageSegmentRow) -> dict[str, Any]:
    body = decode_body(row.body)
    obj = {id_field: body.pop(id_field), "cds_created": rfc3339(row.created), "cds_modified": rfc3339(row.modified),
           "cds_synced": rfc3339(row.synced)}
    obj.update(body)
    return obj


def decode_body(body: str | bytes) -> Any:
    """A stored body as Python objects: integers as int, every other number as Decimal (never float).

    msgspec with a Decimal hook (given each number's exact text) gives what ``json.loads(body,
    parse_float=Decimal)`` gives, several times faster; a body msgspec refuses (e.g. ``NaN``, which ingest never
    writes) goes through the standard library as before."""
    try:
        return _decoder.decode(body)
    except msgspec.DecodeError:
        return json.loads(body, parse_float=Decimal)


_decoder = msgspec.json.Decoder(float_hook=Decimal)


@lru_cache(maxsize=4096)
def rfc3339(moment: datetime) -> str:
    """``YYYY-MM-DDThh:mm:ssZ`` (the store keeps whole seconds for these timestamps; rows ingested together share
    them, hence the small cache)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
