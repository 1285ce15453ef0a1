"""Timestamps of the CDS admin APIs and metadata: RFC 3339 in UTC with a ``Z`` (CDS-WG1-02 §4–8, WG1-01 §3).

Whole seconds are written without a fraction; an instant that has microseconds keeps them, so a value read back
compares equal to the one stored. Dates and instants a client sends are read by :func:`parse_instant` and
:func:`within_calendar`, which refuse the calendar's first and last day (what Python cannot shift or convert).
"""

from __future__ import annotations

from datetime import UTC, date, datetime


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")


#: The first and the last day of the calendar are refused in anything a client sends: an instant there cannot be
#: shown in every time zone (offsets reach ±14 h) nor moved by a day, and Python's datetime raises instead.
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, 23, 59, 59, 999999, tzinfo=UTC)


class OutOfCalendar(ValueError):
    """A date or instant at the calendar's edge (see :data:`EARLIEST`, :data:`LATEST`)."""

    def __init__(self) -> None:
        super().__init__(f"out of range: dates must lie between {EARLIEST.date()} and {LATEST.date()}")


def within_calendar(value: datetime | date) -> datetime | date:
    """``value`` unchanged when it lies between :data:`EARLIEST` and :data:`LATEST`; :class:`OutOfCalendar` else.

    A naive datetime is compared as if it were UTC.
    """
    if isinstance(value, datetime):
        try:
            moment = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        except OverflowError:
            raise OutOfCalendar() from None
        if not EARLIEST <= moment <= LATEST:
            raise OutOfCalendar()
    elif not EARLIEST.date() <= value <= LATEST.date():
        raise OutOfCalendar()
    return value


def parse_instant(text: str) -> datetime:
    """An RFC 3339 ``date-time`` with an offset (``Z`` or ``±hh:mm``) → the same instant in UTC.

    ``ValueError`` when it is not one, has no offset, or lies at the calendar's edge (:class:`OutOfCalendar`).
    """
    value = datetime.fromisoformat(text.upper().replace("Z", "+00:00"))
    if value.tzinfo is None:
        raise ValueError(f"{text!r} has no offset")
    return within_calendar(value).astimezone(UTC)
