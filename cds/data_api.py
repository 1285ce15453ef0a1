"""The CDS-WG3-01 §10 customer data listings over the store: filters, ordering and pages, projected by grant.

``list_objects`` answers ``GET {cds_*_api}`` for accounts, service contracts, service points, meter devices, bill
statements, bill sections and usage segments with the exact wrapper ``{"<listing>": [...], "next", "previous"}``.
What a token sees comes from :mod:`cds.projection` (an :class:`~cds.projection.Access`); this module adds:

* **Filters** (cds-spec §4.9), space-separated values, several filters intersected. They match the *projected*
  object only, so a filter never tests a field the token cannot see (``account_numbers`` on a contract whose account
  number is hidden matches nothing, and so does a number filter through a related object that is not visible or
  whose number is hidden). Meter devices take ``meter_number`` (the spec's singular) and ``meter_numbers``.
  ``before``/``after`` are inclusive: dates on ``statement_date`` (statements), ``start_date`` ≤ ``before`` and
  ``end_date`` ≥ ``after`` (sections); RFC 3339 datetimes on ``segment_start`` ≤ ``before`` and ``segment_end`` ≥
  ``after`` (usage segments, after trimming). ``q`` exists on accounts, service contracts, service points and meter
  devices (:func:`cds.projection.q_matches`); on the other listings it is a 400. Unknown parameters are ignored and
  are not carried into the page links.
* **Order.** Accounts, contracts, service points, meters: ``cds_modified`` descending, then id ascending. Bill
  statements: ``statement_date`` descending, ``cds_modified`` descending, id. Bill sections: account number,
  contract number (of the first related contract that has one), ``start_date`` ascending, ``cds_modified``
  descending, id. Usage segments: account number, contract number (the columns the ingest derives from the related
  objects), stored ``segment_start`` ascending, ``cds_modified`` descending, stored id. Missing numbers sort as ``""``
  first; strings compare by code point on both backends (PostgreSQL's ``C`` collation).
* **Pages** of at most ``page_size`` items (never more than 100). ``next``/``previous`` are full URLs with the same
  filters and an opaque ``cursor`` naming the listing, the direction and the *stored id* of the last (first) item;
  the server looks that object's sort key up again, so the cursor carries no number or date a grant might not see.
  A cursor of another listing, a malformed one, or one whose object is gone is a 400 (start again without it).
* **Data sets.** Only the objects of the grant's data set are read (``data_set``: a grant's own set, holding what
  its upstream authorizations brought, or "" for the customer's own; DataObject.data_set): every query is keyed
  by (customer, data set), the leading columns of the listings' indexes, so a grant never sees objects another
  authorization of the same customer brought (docs/mapping.md §2.3).
* **Usage segments** can be many (one per meter, series and local day): the customer, the grant's windows, the
  ``sync_until`` creation cut, ``before``/``after`` and id filters narrow them in SQL, rows are read in key order
  in batches (only the columns needed), and each is trimmed (:func:`cds.projection.trim_segment`) and projected in
  Python until the page is full, by :class:`cds.projection.StoredSegments`: Value Sets that need no change are
  written as stored, never parsed into numbers. A trimmed segment has a derived id; ``cds_usagesegment_ids``
  matches the id the client was shown. The customer's other objects are read only when a filter or the meter
  narrowing needs them (:class:`CustomerObjects`).

Errors are :class:`cds.api_errors.CdsApiError` (400 ``invalid_request`` with a description).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import String, and_, bindparam, case, func, literal, or_, select, type_coerce
from sqlalchemy.orm import Session

from cds.api_errors import CdsApiError, bad_request, page_link, query_datetime, space_list
from cds.json_input import parse_json
from cds.projection import ID_FIELDS, LISTINGS, NEEDS_BODY, Access, StoredSegments, listing_of, project, q_matches
from cds.store.models import DataObject, UsageSegmentRow
from cds.store.objects import data_object, rfc3339
from cds.timestamps import OutOfCalendar, within_calendar
from cds.urls import Urls

__all__ = ["FILTERS", "MAX_PAGE_SIZE", "CustomerObjects", "group_objects", "list_objects"]

MAX_PAGE_SIZE = 100
_LIKE_LIMIT = 50  # at most this many LIKE alternatives in one SQL narrowing
_SAFE_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: The filters of each listing (cds-spec §4.9); ``q`` only where the spec has it.
FILTERS: Mapping[str, tuple[str, ...]] = {
    "accounts": ("cds_account_ids", "customer_numbers", "account_numbers", "account_statuses", "q"),
    "service_contracts": ("cds_servicecontract_ids", "account_numbers", "contract_numbers", "contract_statuses",
                          "contract_types", "service_types", "q"),
    "service_points": ("cds_servicepoint_ids", "servicepoint_numbers", "current_servicecontracts",
                       "previous_servicecontracts", "q"),
    "meter_devices": ("cds_meterdevice_ids", "meter_number", "meter_numbers", "current_servicepoints",
                      "previous_servicepoints", "q"),
    "bill_statements": ("cds_billstatement_ids", "before", "after", "cds_account_ids", "account_numbers"),
    "bill_sections": ("cds_billsection_ids", "before", "after", "cds_billstatement_ids", "cds_account_ids",
                      "account_numbers", "cds_servicecontract_ids", "contract_numbers"),
    "usage_segments": ("cds_usagesegment_ids", "before", "after", "cds_account_ids", "account_numbers",
                       "cds_servicecontract_ids", "contract_numbers", "cds_servicepoint_ids", "servicepoint_numbers",
                       "cds_meterdevice_ids", "meter_numbers", "cds_billsection_ids"),
}
_DATE_FILTERS = {"bill_statements": ("statement_date", "statement_date"), "bill_sections": ("start_date", "end_date")}
#: Number filters matched through related objects: filter → (listing of the related objects, their number field).
_NUMBERS = {"account_numbers": ("accounts", "account_number"),
            "contract_numbers": ("service_contracts", "contract_number"),
            "servicepoint_numbers": ("service_points", "servicepoint_number"),
            "meter_numbers": ("meter_devices", "meter_number")}
#: Id filters on a usage segment's related arrays.
_SEGMENT_LINKS = {"cds_account_ids": "related_accounts", "cds_servicecontract_ids": "related_servicecontracts",
                  "cds_servicepoint_ids": "related_servicepoints", "cds_meterdevice_ids": "related_meterdevices",
                  "cds_billsection_ids": "related_billsections"}
_SEGMENT_NUMBER_LINKS = {"account_numbers": "related_accounts", "contract_numbers": "related_servicecontracts",
                         "servicepoint_numbers": "related_servicepoints", "meter_numbers": "related_meterdevices"}


_OBJECT_LISTINGS = tuple(listing for listing in LISTINGS if listing != "usage_segments")


def group_objects(objects: Sequence[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """``load_objects`` output → listing name → objects."""
    grouped: dict[str, list[Mapping[str, Any]]] = {listing: [] for listing in _OBJECT_LISTINGS}
    for obj in objects:
        listing = listing_of(obj)
        if listing in grouped:
            grouped[listing].append(obj)
    return grouped


class CustomerObjects(Mapping[str, Sequence[Mapping[str, Any]]]):
    """The customers' non-segment objects of one data set by listing, as
    ``group_objects(load_objects(session, customer_ids, data_set=data_set))`` gives them, each listing read from
    the store when first used: a usage-segment page needs none of them, or only the meter ids (:meth:`ids`).
    :meth:`load_all` reads them all at once (what :func:`cds.projection.grant_access` needs) and :meth:`version`
    names the state of the rows :func:`~cds.projection.grant_access` depends on, so that
    a caller may keep an Access for as long as the version stays the same."""

    def __init__(self, session: Session, customer_ids: Sequence[str], data_set: str = "") -> None:
        self._session = session
        self._customer_ids = list(customer_ids)
        self.data_set = data_set
        self._loaded: dict[str, list[Mapping[str, Any]]] = {}
        self._ids: dict[str, frozenset[str]] = {}

    def __getitem__(self, listing: str) -> list[Mapping[str, Any]]:
        if listing not in _OBJECT_LISTINGS:
            raise KeyError(listing)
        found = self._loaded.get(listing)
        if found is None:
            found = self._loaded[listing] = [data_object(row) for row in self._session.scalars(
                self._rows().where(DataObject.kind == listing).order_by(DataObject.object_id))]
        return found

    def __iter__(self):
        return iter(_OBJECT_LISTINGS)

    def __len__(self) -> int:
        return len(_OBJECT_LISTINGS)

    def ids(self, listing: str) -> frozenset[str]:
        """The ids of the listing's objects (their stored ids, without reading the objects when not loaded)."""
        if listing in self._loaded:
            return frozenset(obj.get(ID_FIELDS[listing]) for obj in self._loaded[listing])
        found = self._ids.get(listing)
        if found is None:
            found = self._ids[listing] = frozenset(self._session.scalars(
                select(DataObject.object_id).where(self._owned(), DataObject.kind == listing)))
        return found

    def remember_ids(self, listing: str, ids: frozenset[str]) -> None:
        """The ids :meth:`ids` would read, known from an earlier read of the same :meth:`version`."""
        self._ids[listing] = ids

    def version(self) -> str:
        """A digest of every object's body hash and creation time (what an Access depends on: bodies, through
        ``body_hash``, and ``cds_created``); one indexed query, no body read. Timestamps move by whole seconds, so
        they alone could miss a change made within the same second as the previous one: the hashes do not."""
        return _digest(self._session.execute(select(DataObject.body_hash, _CREATED_TEXT).where(self._owned())))

    def load_all(self) -> str:
        """Reads every listing (as ``load_objects``, in one query); returns the :meth:`version` of the rows read."""
        loaded: dict[str, list[Mapping[str, Any]]] = {listing: [] for listing in _OBJECT_LISTINGS}
        keys = []
        for row, created in self._session.execute(self._rows().add_columns(_CREATED_TEXT).order_by(
                DataObject.kind, DataObject.object_id)):
            obj = data_object(row)
            listing = listing_of(obj)
            if listing in loaded:
                loaded[listing].append(obj)
            keys.append((row.body_hash, created))
        self._loaded = loaded
        return _digest(keys)

    def _rows(self) -> Any:
        return select(DataObject).where(self._owned())

    def _owned(self) -> Any:
        return and_(DataObject.customer_id.in_(self._customer_ids), DataObject.data_set == self.data_set)


_CREATED_TEXT = type_coerce(DataObject.created, String).label("created_text")  # as stored: no datetime parsing


def _digest(rows: Any) -> str:
    return hashlib.sha256("\n".join(sorted(f"{body_hash} {created}" for body_hash, created in rows)).encode()
                          ).hexdigest()


def list_objects(session: Session, listing: str, *, access: Access, customer_ids: Sequence[str],
                 params: Mapping[str, str], urls: Urls, page_size: int,
                 objects: Mapping[str, Sequence[Mapping[str, Any]]] | None = None, data_set: str = ""
                 ) -> dict[str, Any]:
    """One page of ``listing`` for a grant's ``access`` over ``customer_ids``' data in ``data_set`` (see the module
    docstring).

    ``params``: the query parameters (one string each; repeated parameters joined with spaces). ``objects``: the
    customers' non-segment objects of the data set by listing, when the caller already loaded them (for
    :func:`grant_access`).
    """
    if listing not in FILTERS:
        raise ValueError(f"unknown listing {listing!r}")
    if objects is None:
        objects = CustomerObjects(session, customer_ids, data_set)
    size = max(1, min(int(page_size), MAX_PAGE_SIZE))
    request = _Request.parse(listing, params)
    cursor = _decode_cursor(params.get("cursor"), listing)
    context = _Context(access, objects)

    def link(value: str) -> str:
        return page_link(urls.data_api(listing), request.link_params, value)

    if not access.includes(listing):
        page = _Page()
    elif listing == "usage_segments":
        page = _segments_page(session, context, request, list(customer_ids), data_set, cursor, size, link)
    else:
        page = _objects_page(listing, context, request, cursor, size, link)
    return {listing: page.items, "next": page.next, "previous": page.previous}


# --------------------------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------------------------
@dataclass
class _Request:
    listing: str
    lists: dict[str, set[str]] = field(default_factory=dict)
    before: Any = None
    after: Any = None
    q: str | None = None
    link_params: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, listing: str, params: Mapping[str, str]) -> _Request:
        request = cls(listing)
        if "q" in params and "q" not in FILTERS[listing]:
            raise bad_request(f"q is not a filter of the {listing} listing")
        for name in FILTERS[listing]:
            if name in ("before", "after"):
                if listing == "usage_segments":
                    value = query_datetime(params, name)
                else:
                    value = _query_date(params, name)
                if value is not None:
                    setattr(request, name, value)
                    request.link_params[name] = params[name].strip()
            elif name == "q":
                if params.get("q") is not None and params["q"].strip():
                    request.q = params["q"].strip()
                    request.link_params["q"] = request.q
            else:
                values = space_list(params, name)
                if values:
                    request.lists[name] = set(values)
                    request.link_params[name] = " ".join(values)
        if "meter_number" in request.lists:  # the spec's singular name on meter devices; both given: intersected
            singular = request.lists.pop("meter_number")
            request.lists["meter_numbers"] = request.lists.get("meter_numbers", singular) & singular
        return request


def _query_date(params: Mapping[str, str], name: str) -> date | None:
    raw = params.get(name)
    if raw is None or not raw.strip():
        return None
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", raw.strip()):
            raise ValueError(raw)
        return within_calendar(date.fromisoformat(raw.strip()))
    except OutOfCalendar as error:
        raise bad_request(f"{name} is {error}") from None
    except ValueError:
        raise bad_request(f"{name} must be an RFC 3339 full-date, e.g. 2024-01-31") from None


# --------------------------------------------------------------------------------------------------------------
# Cursors
# --------------------------------------------------------------------------------------------------------------
def _encode_cursor(listing: str, direction: str, object_id: str) -> str:
    raw = json.dumps([listing, direction, object_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None, listing: str) -> tuple[str, str] | None:
    if cursor is None or not cursor.strip():
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor.strip() + "=" * (-len(cursor.strip()) % 4))
        name, direction, object_id = parse_json(raw)
        if name != listing or direction not in ("n", "p") or not isinstance(object_id, str):
            raise ValueError(name)
        return direction, object_id
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise bad_request("cursor is not a cursor of this listing; follow the next/previous links as given") \
            from None


def _gone() -> CdsApiError:
    return bad_request("the cursor's position no longer exists; start again from the first page")


@dataclass
class _Page:
    items: list[Any] = field(default_factory=list)
    next: str | None = None
    previous: str | None = None


def _links(page: _Page, ids: list[str], listing: str, forward: bool, more: bool, had_cursor: bool,
           link: Callable[[str], str]) -> _Page:
    if not ids:
        return page
    first, last = ids[0], ids[-1]
    if forward:
        if more:
            page.next = link(_encode_cursor(listing, "n", last))
        if had_cursor:
            page.previous = link(_encode_cursor(listing, "p", first))
    else:
        page.next = link(_encode_cursor(listing, "n", last))
        if more:
            page.previous = link(_encode_cursor(listing, "p", first))
    return page


# --------------------------------------------------------------------------------------------------------------
# Projected lookups shared by the filters
# --------------------------------------------------------------------------------------------------------------
class _Context:
    def __init__(self, access: Access, objects: Mapping[str, Sequence[Mapping[str, Any]]]) -> None:
        self.access = access
        self.objects = objects
        self._numbers: dict[tuple[str, str], dict[str, set[str]]] = {}
        self._contract_numbers: dict[str, str] | None = None

    def ids_with_number(self, filter_name: str, values: set[str]) -> set[str]:
        """Visible objects whose *visible* number (per ``_NUMBERS[filter_name]``) is one of ``values``."""
        listing, key = _NUMBERS[filter_name]
        table = self._numbers.get((listing, key))
        if table is None:
            table = {}
            for obj in self.objects.get(listing, ()):
                projected = project(listing, obj, self.access)
                if projected is not None and isinstance(projected.get(key), str):
                    table.setdefault(projected[key], set()).add(projected[ID_FIELDS[listing]])
            self._numbers[(listing, key)] = table
        return set().union(*(table.get(v, set()) for v in values))

    def ids(self, listing: str) -> frozenset[str]:
        """The ids of all the customers' objects of ``listing`` (visible or not)."""
        if isinstance(self.objects, CustomerObjects):
            return self.objects.ids(listing)
        return frozenset(obj.get(ID_FIELDS[listing]) for obj in self.objects.get(listing, ()))

    def raw_contract_number(self, contract_id: str) -> str | None:
        if self._contract_numbers is None:
            self._contract_numbers = {c["cds_servicecontract_id"]: c["contract_number"]
                                      for c in self.objects.get("service_contracts", ())
                                      if isinstance(c.get("contract_number"), str)}
        return self._contract_numbers.get(contract_id)


# --------------------------------------------------------------------------------------------------------------
# The small listings (everything but usage segments): in memory
# --------------------------------------------------------------------------------------------------------------
def _microseconds(value: Any) -> int:
    moment = datetime.fromisoformat(str(value).replace("Z", "+00:00")).astimezone(UTC)
    delta = moment - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def _object_key(listing: str, obj: Mapping[str, Any], context: _Context) -> tuple:
    object_id = obj[ID_FIELDS[listing]]
    modified = -_microseconds(obj["cds_modified"])
    if listing == "bill_statements":
        try:
            day = -date.fromisoformat(obj.get("statement_date")).toordinal()
        except (TypeError, ValueError):
            day = 0
        return (day, modified, object_id)
    if listing == "bill_sections":
        account = obj.get("account_number") if isinstance(obj.get("account_number"), str) else ""
        contract = next((n for n in (context.raw_contract_number(c) for c in obj.get("related_servicecontracts") or ())
                         if n is not None), "")
        return (account, contract, str(obj.get("start_date") or ""), modified, object_id)
    return (modified, object_id)


def _object_matches(listing: str, obj: Mapping[str, Any], request: _Request, context: _Context) -> bool:
    for name, values in request.lists.items():
        if listing == "bill_sections" and name == "contract_numbers":  # through the related contracts
            if not set(obj.get("related_servicecontracts") or ()) & context.ids_with_number(name, values):
                return False
            continue
        key = _FILTER_FIELDS[listing].get(name)
        if key is None:
            continue
        value = obj.get(key)
        members = set(value) if isinstance(value, list) else ({value} if isinstance(value, str) else set())
        if not members & values:
            return False
    if listing in _DATE_FILTERS:
        start_key, end_key = _DATE_FILTERS[listing]
        if request.before is not None and not _date_at_most(obj.get(start_key), request.before):
            return False
        if request.after is not None and not _date_at_least(obj.get(end_key), request.after):
            return False
    return request.q is None or q_matches(listing, obj, request.q)


#: Filter → the field of the projected object it tests (scalars or arrays: any member).
_FILTER_FIELDS: Mapping[str, Mapping[str, str]] = {
    "accounts": {"cds_account_ids": "cds_account_id", "customer_numbers": "customer_number",
                 "account_numbers": "account_number", "account_statuses": "account_status"},
    "service_contracts": {"cds_servicecontract_ids": "cds_servicecontract_id", "account_numbers": "account_number",
                          "contract_numbers": "contract_number", "contract_statuses": "contract_status",
                          "contract_types": "contract_types", "service_types": "service_types"},
    "service_points": {"cds_servicepoint_ids": "cds_servicepoint_id", "servicepoint_numbers": "servicepoint_number",
                       "current_servicecontracts": "current_servicecontracts",
                       "previous_servicecontracts": "previous_servicecontracts"},
    "meter_devices": {"cds_meterdevice_ids": "cds_meterdevice_id", "meter_numbers": "meter_number",
                      "current_servicepoints": "current_servicepoints",
                      "previous_servicepoints": "previous_servicepoints"},
    "bill_statements": {"cds_billstatement_ids": "cds_billstatement_id", "cds_account_ids": "cds_account_id",
                        "account_numbers": "account_number"},
    "bill_sections": {"cds_billsection_ids": "cds_billsection_id", "cds_billstatement_ids": "cds_billstatement_id",
                      "cds_account_ids": "cds_account_id", "account_numbers": "account_number",
                      "cds_servicecontract_ids": "related_servicecontracts"},
}


def _date_at_most(value: Any, limit: date) -> bool:
    try:
        return date.fromisoformat(value) <= limit
    except (TypeError, ValueError):
        return False


def _date_at_least(value: Any, limit: date) -> bool:
    try:
        return date.fromisoformat(value) >= limit
    except (TypeError, ValueError):
        return False


def _objects_page(listing: str, context: _Context, request: _Request, cursor: tuple[str, str] | None, size: int,
                  link: Callable[[str], str]) -> _Page:
    raw = context.objects.get(listing, ())
    rows: list[tuple[tuple, dict[str, Any]]] = []
    for obj in raw:
        projected = project(listing, obj, context.access)
        if projected is not None and _object_matches(listing, projected, request, context):
            rows.append((_object_key(listing, obj, context), projected))
    rows.sort(key=lambda row: row[0])
    forward = cursor is None or cursor[0] == "n"
    if cursor is not None:
        anchor = next((obj for obj in raw if obj.get(ID_FIELDS[listing]) == cursor[1]), None)
        if anchor is None:
            raise _gone()
        key = _object_key(listing, anchor, context)
        rows = [row for row in rows if row[0] > key] if forward else [row for row in rows if row[0] < key]
    if forward:
        chosen, more = rows[:size], len(rows) > size
    else:
        chosen, more = rows[-size:], len(rows) > size
    items = [projected for _, projected in chosen]
    ids = [row[0][-1] for row in chosen]
    return _links(_Page(items=items), ids, listing, forward, more, cursor is not None, link)


# --------------------------------------------------------------------------------------------------------------
# Usage segments: narrowed and ordered in SQL, trimmed and projected in Python
# --------------------------------------------------------------------------------------------------------------
def _keyset(columns: list[tuple[Any, bool]], values: tuple, forward: bool) -> Any:
    """Rows strictly after (``forward``) or before ``values`` in the order of ``columns`` ((column, ascending))."""
    condition = None
    for (column, ascending), value in reversed(list(zip(columns, values, strict=True))):
        later = column > value if ascending == forward else column < value
        condition = later if condition is None else or_(later, and_(column == value, condition))
    return condition


def _segments_page(session: Session, context: _Context, request: _Request, customer_ids: list[str], data_set: str,
                   cursor: tuple[str, str] | None, size: int, link: Callable[[str], str]) -> _Page:
    access = context.access
    rules = access.segment_rules
    if not rules or not customer_ids:
        return _Page()
    table = UsageSegmentRow
    starts, ends = [r.start for r in rules], [r.end for r in rules]
    hull_start = None if None in starts else min(starts)
    hull_end = None if None in ends else max(ends)
    cuts = [r.created_until for r in rules]
    cut = None if None in cuts else max(cuts)
    # The customer, data set, windows and before/after are parameters of statements built once per shape
    # (_filtered, _key_query); only list filters and meter narrowing (values in the SQL text) build anew.
    dialect = session.get_bind().dialect.name
    shape = (len(customer_ids) == 1, hull_start is not None, hull_end is not None, cut is not None,
             request.before is not None, request.after is not None)
    params: dict[str, Any] = {"data_set": data_set, "hull_start": hull_start, "hull_end": hull_end, "cut": cut,
                              "before": request.before, "after": request.after}
    params["customers" if len(customer_ids) > 1 else "customer"] = customer_ids if len(customer_ids) > 1 \
        else customer_ids[0]
    base = statement = _filtered(shape)
    exact: list[Callable[[dict[str, Any]], bool]] = []
    ids = request.lists.get("cds_usagesegment_ids")
    if ids is not None:
        if len(rules) == 1:
            straddling = []
            if hull_start is not None:
                straddling.append(table.segment_start < hull_start)
            if hull_end is not None:
                straddling.append(table.segment_end > hull_end)
            statement = statement.where(or_(table.segment_id.in_(sorted(ids)), *straddling))
        exact.append(lambda s: s["cds_usagesegment_id"] in ids)
    for name, key in _SEGMENT_LINKS.items():
        values = request.lists.get(name)
        if values is None:
            continue
        statement = _narrow_by_ids(statement, values)
        exact.append(lambda s, key=key, values=values: bool(set(s.get(key) or ()) & values))
    for name, key in _SEGMENT_NUMBER_LINKS.items():
        values = request.lists.get(name)
        if values is None:
            continue
        matching = context.ids_with_number(name, values)
        if not matching:
            return _Page()
        statement = _narrow_by_ids(statement, matching)
        exact.append(lambda s, key=key, matching=matching: bool(set(s.get(key) or ()) & matching))
    if len(rules) == 1:
        statement = _narrow_by_meters(statement, rules[0].anchors.get("meter_devices", frozenset()), context)
    # before/after: SQL compares the stored instants, which only a trimmed segment changes (checked when served)
    window: list[Callable[[dict[str, Any]], bool]] = []
    if request.before is not None:
        window.append(lambda s: _at(s["segment_start"]) <= request.before)
    if request.after is not None:
        window.append(lambda s: _at(s["segment_end"]) >= request.after)

    columns = _order_columns(dialect)
    forward = cursor is None or cursor[0] == "n"
    position: tuple | None = None
    if cursor is not None:
        anchor = session.execute(select(table.customer_id, table.data_set, *_KEY_COLUMNS)
                                 .where(table.segment_id == cursor[1])).first()
        if anchor is None or anchor.customer_id not in customer_ids or anchor.data_set != data_set:
            raise _gone()
        position = _row_key(anchor)

    wanted = size + 1
    batch = wanted
    found: list[tuple[str, Any]] = []
    segments = StoredSegments(access)
    stamps: dict[datetime, str] = {}  # a page's rows share a few timestamps (one ingest): each formatted once

    def stamp(moment: datetime) -> str:
        text = stamps.get(moment)
        if text is None:
            text = stamps[moment] = rfc3339(moment)
        return text

    # Without Python-side filters a segment is only written out: its JSON text, from its stored serving when the
    # grant keeps it whole (the body is then not even read), else from its body (StoredSegments.serve_json); the
    # page's ids are found first in key order (a sort over the small key columns only), then their texts by id.
    # Filters need the projected object (StoredSegments.serve).
    ordered = None  # only list filters and meter narrowing build their query (else _key_query's, built once)
    connection = session.connection()
    while len(found) < wanted:
        if exact or statement is not base:
            if ordered is None:
                ordered = statement.order_by(*(column.asc() if ascending == forward else column.desc()
                                               for column, ascending in columns)
                                             ).with_only_columns(*(_SEGMENT_COLUMNS if exact else _KEY_COLUMNS))
            query = ordered if position is None else ordered.where(_keyset(columns, position, forward))
            keys = connection.execute(query.limit(batch), params).all()
        else:
            keyset = {} if position is None else dict(zip(_KEYSET_NAMES, position, strict=True))
            keys = connection.execute(_key_query(dialect, shape, forward, position is not None, batch),
                                      {**params, **keyset}).all()
        if exact:
            rows = keys
            served_rows = [segments.serve(stamp(row.created), stamp(row.modified), stamp(row.synced), row.body)
                           for row in rows]
        else:
            texts = {row.segment_id: row for row in connection.execute(
                _SERVING_BY_ID, {"ids": [key.segment_id for key in keys]})} if keys else {}
            rows = [texts[key.segment_id] for key in keys if key.segment_id in texts]  # none gone meanwhile
            served_rows = _serve_stored(connection, segments, rows, window)
        for row, served in zip(rows, served_rows, strict=True):
            if served is not None and (not exact or all(check(served) for check in (*exact, *window))):
                found.append((row.segment_id, served))
                if len(found) == wanted:
                    break
        if len(keys) < batch:
            break
        position = _row_key(keys[-1])
    more = len(found) > size
    found = found[:size]
    if not forward:
        found.reverse()
    page = _Page(items=[served for _, served in found])
    return _links(page, [row_id for row_id, _ in found], "usage_segments", forward, more, cursor is not None, link)


_STATEMENTS: dict[tuple, Any] = {}  # built once per shape (a few per process), immutable, shared by threads
_KEYSET_NAMES = ("k_account", "k_contract", "k_start", "k_modified", "k_id")


def _filtered(shape: tuple[bool, ...]) -> Any:
    """The usage segments of the customer(s) and data set inside the windows (bound parameters ``customer`` or
    ``customers``, ``data_set``, ``hull_start``, ``hull_end``, ``cut``, ``before``, ``after``, as ``shape`` has
    them), selecting the listing's columns."""
    found = _STATEMENTS.get(("filtered", shape))
    if found is None:
        one, hull_start, hull_end, cut, before, after = shape
        table = UsageSegmentRow
        instant = table.segment_start.type
        customer = table.customer_id == bindparam("customer") if one else \
            table.customer_id.in_(bindparam("customers", expanding=True))
        found = select(*_SEGMENT_COLUMNS).where(customer, table.data_set == bindparam("data_set"))
        if hull_start:
            found = found.where(table.segment_end > bindparam("hull_start", type_=instant))
        if hull_end:
            found = found.where(table.segment_start < bindparam("hull_end", type_=instant))
        if cut:
            found = found.where(table.created <= bindparam("cut", type_=instant))
        if before:
            found = found.where(table.segment_start <= bindparam("before", type_=instant))
        if after:
            found = found.where(table.segment_end >= bindparam("after", type_=instant))
        found = _STATEMENTS.setdefault(("filtered", shape), found)
    return found


def _order_columns(dialect: str) -> list[tuple[Any, bool]]:
    """The listing's order: (column, ascending) for account number, contract number (``""`` first, code point
    order on both backends), segment start, modified (newest first), id."""
    found = _STATEMENTS.get(("order", dialect))
    if found is None:
        table = UsageSegmentRow
        text = [func.coalesce(column, literal("")) for column in (table.account_number, table.contract_number)]
        if dialect == "postgresql":
            text = [expression.collate("C") for expression in text]
        found = _STATEMENTS.setdefault(("order", dialect), [
            (text[0], True), (text[1], True), (table.segment_start, True), (table.modified, False),
            (table.segment_id, True)])
    return found


def _key_query(dialect: str, shape: tuple[bool, ...], forward: bool, after_position: bool, batch: int) -> Any:
    """The page's key columns in the listing's order (backwards for a ``previous`` page), after the position
    bound as ``k_account`` … ``k_id`` when ``after_position``: :func:`_filtered` ordered and limited, built once
    per shape."""
    key = ("keys", dialect, shape, forward, after_position, batch)
    found = _STATEMENTS.get(key)
    if found is None:
        columns = _order_columns(dialect)
        found = _filtered(shape).with_only_columns(*_KEY_COLUMNS).order_by(
            *(column.asc() if ascending == forward else column.desc() for column, ascending in columns))
        if after_position:
            types = (String(), String(), UsageSegmentRow.segment_start.type, UsageSegmentRow.modified.type,
                     String())
            found = found.where(_keyset(columns, tuple(bindparam(name, type_=kind) for name, kind in
                                                       zip(_KEYSET_NAMES, types, strict=True)), forward))
        found = _STATEMENTS.setdefault(key, found.limit(batch))
    return found


#: What the listing reads of a usage segment row: its sort key, then what serving it needs (not the whole entity).
_KEY_COLUMNS = (UsageSegmentRow.account_number, UsageSegmentRow.contract_number, UsageSegmentRow.segment_start,
                UsageSegmentRow.modified, UsageSegmentRow.segment_id)
_SEGMENT_COLUMNS = (*_KEY_COLUMNS, UsageSegmentRow.created, UsageSegmentRow.synced, UsageSegmentRow.body)
#: Without filters, the page's segments by id: the stored serving, and the body only where there is none. The
#: instants come as the driver gives them (:class:`_Instants` reads each distinct value once).
_SERVING_BY_ID = select(
    UsageSegmentRow.segment_id, *(type_coerce(column, String).label(column.key) for column in (
        UsageSegmentRow.created, UsageSegmentRow.modified, UsageSegmentRow.synced, UsageSegmentRow.segment_start,
        UsageSegmentRow.segment_end)),
    UsageSegmentRow.serving, UsageSegmentRow.serving_shape,
    case((UsageSegmentRow.serving.is_(None), UsageSegmentRow.body)).label("body"),
).where(UsageSegmentRow.segment_id.in_(bindparam("ids", expanding=True)))


class _Instants:
    """Stored instants as the driver returns them (SQLite: ISO text; PostgreSQL: a naive datetime, both UTC, what
    cds.store.types.UTCDateTime stores) → aware datetimes and RFC 3339 text, each distinct value converted once:
    a page's timestamps are a few values shared by many rows."""

    def __init__(self) -> None:
        self._moments: dict[Any, datetime] = {}
        self._texts: dict[Any, str] = {}

    def moment(self, raw: Any) -> datetime:
        found = self._moments.get(raw)
        if found is None:
            value = raw if isinstance(raw, datetime) else datetime.fromisoformat(raw)
            found = self._moments[raw] = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return found

    def text(self, raw: Any) -> str:
        found = self._texts.get(raw)
        if found is None:
            found = self._texts[raw] = rfc3339(self.moment(raw))
        return found


def _serve_stored(connection: Any, segments: StoredSegments, rows: Sequence[Any],
                  window: Sequence[Callable[[dict[str, Any]], bool]]) -> list[Any]:
    """Each row's JSON (msgspec.Raw) or None (not shared): from its stored serving, else from its body, read in one
    query for the rows that need it (a window's edges, a grant picking Value Set columns, an older body). A segment
    served from its serving is whole, so the SQL's before/after on the stored instants was its ``window`` check;
    one served from its body may be trimmed, so it is projected and checked."""
    served: list[Any] = []
    instants = _Instants()
    text, moment = instants.text, instants.moment
    for row in rows:
        if row.body is not None:
            served.append(NEEDS_BODY)
            continue
        served.append(segments.serve_stored(row.segment_id, text(row.created), text(row.modified), text(row.synced),
                                            moment(row.segment_start), moment(row.segment_end), row.serving,
                                            row.serving_shape))
    missing = [row.segment_id for row, answer in zip(rows, served, strict=True)
               if answer is NEEDS_BODY and row.body is None]
    bodies = dict(connection.execute(select(UsageSegmentRow.segment_id, UsageSegmentRow.body)
                                     .where(UsageSegmentRow.segment_id.in_(missing))).all()) if missing else {}
    for index, (row, answer) in enumerate(zip(rows, served, strict=True)):
        if answer is NEEDS_BODY:
            body = row.body if row.body is not None else bodies[row.segment_id]
            stamps = (text(row.created), text(row.modified), text(row.synced))
            if window:
                answer = segments.serve(*stamps, body)
                served[index] = answer if answer is not None and all(check(answer) for check in window) else None
            else:
                served[index] = segments.serve_json(*stamps, body)
    return served


def _row_key(row: Any) -> tuple:
    return (row.account_number or "", row.contract_number or "", row.segment_start, row.modified, row.segment_id)


def _at(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def _narrow_by_ids(statement: Any, values: set[str]) -> Any:
    """SQL narrowing to bodies that mention one of the ids (exactness comes from Python)."""
    if not values or len(values) > _LIKE_LIMIT or not all(_SAFE_ID.match(v) for v in values):
        return statement
    return statement.where(or_(*(UsageSegmentRow.body.like(f'%"{v}"%') for v in sorted(values))))


def _narrow_by_meters(statement: Any, meters: frozenset[str], context: _Context) -> Any:
    """With one rule whose meter selection is a small part of the customer's meters, only their segments (and those
    naming no meter) can be shared."""
    every = context.ids("meter_devices")
    if not meters or meters >= every or len(meters) > _LIKE_LIMIT or not all(_SAFE_ID.match(v) for v in meters):
        return statement
    return statement.where(or_(UsageSegmentRow.body.like('%"related_meterdevices":[]%'),
                               *(UsageSegmentRow.body.like(f'%"{v}"%') for v in sorted(meters))))
