"""Timestamps of the CDS admin APIs and metadata: RFC 3339 in UTC with a ``Z`` (CDS-WG1-02 §4–8, WG1-01 §3).

Whole seconds are written without a fraction; an instant that has microseconds keeps them, so a value read back
compares equal to the one stored.
"""

from __future__ import annotations

from datetime import UTC, datetime


def rfc3339(value: datetime | None) -> str | None:
    if value is None:
        return None
    value = value.astimezone(UTC)
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text.replace("+00:00", "Z")
