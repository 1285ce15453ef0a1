"""Errors and request-parameter handling shared by the CDS-WG1-02 admin APIs (§5 Clients, §6 Messages,
§7 Credentials, §8 Grants).

* :class:`CdsApiError` carries an HTTP status, an error code and a description; the routes answer it as
  ``{"error", "error_description"}``. A row of another registration is reported exactly like a missing one (404).
* List filters are URL query parameters; multi-value filters are space-separated and combine as an intersection
  (WG1-02 §5.3, §6.3, §7.3, §8.5). ``after``/``before`` are inclusive RFC 3339 datetimes.
* Lists are ordered by their modified timestamp, newest first, ties broken by the identifier (ascending), and cut
  into pages of at most ``page_size`` items. Pages are keyset pages: ``next``/``previous`` are full URLs carrying
  the same filters plus an opaque ``cursor`` that names the (modified, id) position to continue from, so a page
  never repeats or skips rows because rows were added in front of it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import Session

from cds.json_input import parse_json
from cds.timestamps import OutOfCalendar, parse_instant


class CdsApiError(Exception):
    """An admin API error: HTTP ``status`` with ``error`` and a human ``description``."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


def bad_request(description: str, error: str = "invalid_request") -> CdsApiError:
    return CdsApiError(400, error, description)


def not_found(kind: str) -> CdsApiError:
    """404 for an unknown identifier and for one of another registration alike (no tenancy oracle)."""
    return CdsApiError(404, "not_found", f"No such {kind}")


def too_large(description: str) -> CdsApiError:
    return CdsApiError(413, "invalid_request", description)


# ---------------------------------------------------------------------------------------------- query parameters
def space_list(query: Mapping[str, str], name: str) -> list[str] | None:
    """A space-separated multi-value filter; ``None`` when absent or blank (no filtering)."""
    raw = query.get(name)
    if raw is None:
        return None
    values = list(dict.fromkeys(raw.split()))
    return values or None


_OFFSET_SPACE = re.compile(r" (\d{2}:\d{2})$")


def query_datetime(query: Mapping[str, str], name: str) -> datetime | None:
    """An RFC 3339 date-time filter value (``after``/``before``); 400 when malformed or without an offset.

    A ``+`` in an unencoded offset arrives as a space after form decoding; it is put back.
    """
    raw = query.get(name)
    if raw is None or not raw.strip():
        return None
    text = _OFFSET_SPACE.sub(r"+\1", raw.strip())
    if "T" not in text.upper():
        raise bad_request(f"{name} must be an RFC 3339 date-time with a time and an offset")
    try:
        return parse_instant(text)
    except OutOfCalendar as error:
        raise bad_request(f"{name} is {error}") from None
    except ValueError:
        raise bad_request(f"{name} must be an RFC 3339 date-time with a time and an offset, "
                          "e.g. 2024-01-01T00:00:00Z") from None


def query_dict(items: list[tuple[str, str]]) -> dict[str, str]:
    """Query pairs → one value per name; a repeated multi-value filter is joined with spaces."""
    result: dict[str, str] = {}
    for key, value in items:
        result[key] = f"{result[key]} {value}" if key in result else value
    return result


def no_decimals(value: Any, what: str) -> Any:
    """Refuse non-integer numbers in values stored in JSON columns (those cannot keep a decimal exact)."""
    if isinstance(value, Decimal | float):
        raise bad_request(f"{what} must not contain non-integer numbers")
    if isinstance(value, Mapping):
        for item in value.values():
            no_decimals(item, what)
    elif isinstance(value, list | tuple):
        for item in value:
            no_decimals(item, what)
    return value


# ---------------------------------------------------------------------------------------------- keyset pages
@dataclass
class Page:
    items: list[Any] = field(default_factory=list)
    next: str | None = None
    previous: str | None = None


def _encode_cursor(direction: str, modified: datetime, key: str) -> str:
    raw = json.dumps([direction, modified.astimezone(UTC).isoformat(timespec="microseconds"), key])
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[str, datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        direction, modified, key = parse_json(raw)
        if direction not in ("n", "p") or not isinstance(key, str) or not isinstance(modified, str):
            raise ValueError(direction)
        return direction, parse_instant(modified), key
    except (binascii.Error, ValueError, TypeError):
        raise bad_request("cursor is not a cursor of this list; follow the next/previous links as given") from None


def page_link(base: str, params: Mapping[str, str], cursor: str) -> str:
    """A full URL to another page: ``base`` with the filters (spaces as %20) and the cursor."""
    return base + "?" + urlencode({**params, "cursor": cursor}, quote_via=quote)


def paginate(
    session: Session,
    statement: Select,
    *,
    modified_column: Any,
    id_column: Any,
    id_of: Callable[[Any], str],
    modified_of: Callable[[Any], datetime],
    cursor: str | None,
    page_size: int,
    link: Callable[[str], str],
    keep: Callable[[Any], bool] | None = None,
) -> Page:
    """One page of ``statement`` (already filtered), ``modified`` descending then id ascending.

    ``keep`` is an exact filter applied in Python to what SQL could only narrow down (JSON array members); rows
    are then read in batches until the page is full, so pages keep their size.
    """
    page_size = max(1, page_size)
    direction, moment, key = ("n", None, None) if not cursor else _decode_cursor(cursor)
    forward = direction == "n"
    if forward:
        ordered = statement.order_by(modified_column.desc(), id_column.asc())
    else:
        ordered = statement.order_by(modified_column.asc(), id_column.desc())
    wanted = page_size + 1
    batch = wanted if keep is None else max(wanted * 4, 50)
    found: list[Any] = []
    position = (moment, key) if moment is not None else None
    while len(found) < wanted:
        query = ordered
        if position is not None:
            at, ident = position
            if forward:
                query = query.where(or_(modified_column < at, and_(modified_column == at, id_column > ident)))
            else:
                query = query.where(or_(modified_column > at, and_(modified_column == at, id_column < ident)))
        rows = session.scalars(query.limit(batch)).all()
        for row in rows:
            if keep is None or keep(row):
                found.append(row)
                if len(found) == wanted:
                    break
        if len(rows) < batch:
            break
        position = (modified_of(rows[-1]), id_of(rows[-1]))
    more = len(found) > page_size
    items = found[:page_size]
    if not forward:
        items.reverse()
    page = Page(items=items)
    if not items:
        return page
    first, last = items[0], items[-1]
    if forward:
        if more:
            page.next = link(_encode_cursor("n", modified_of(last), id_of(last)))
        if cursor:
            page.previous = link(_encode_cursor("p", modified_of(first), id_of(first)))
    else:
        page.next = link(_encode_cursor("n", modified_of(last), id_of(last)))
        if more:
            page.previous = link(_encode_cursor("p", modified_of(first), id_of(first)))
    return page
