"""ISO 4217 numeric → alphabetic currency codes, for ReadingType/UsageSummary ``currency`` (espi.md §1.4).

ESPI carries currencies as ISO 4217 *numbers* (840, 124 …) and CDS wants the letters ("USD", "CAD"). The
schema lists only 14 numbers (:data:`espi.codes.CURRENCY`), but the list is open and a custodian may send any
ISO code, so this module asks the maintained ISO table shipped with ``pycountry`` instead of keeping a
hand-written copy that would go stale (mapping-notes §3.4).
"""

from __future__ import annotations

import re
from functools import cache

import pycountry

_DIGITS = re.compile(r"[0-9]{1,3}")

#: Numbers that name no money: ESPI's own 0 "other", and ISO's 999 XXX ("no currency is involved") and
#: 963 XTS ("reserved for testing"). A cost in one of these cannot be shown in a currency, so the caller
#: falls back to the custodian's configured default, exactly as for 0.
NOT_A_CURRENCY = frozenset({0, 963, 999})


def currency_alpha(numeric: int | str | None) -> str | None:
    """The ISO 4217 alphabetic code for an ISO numeric code: ``840 → "USD"``, ``124 → "CAD"``.

    Returns None for ESPI 0 ("other"), the ISO no-currency/test codes (:data:`NOT_A_CURRENCY`), numbers
    ISO does not assign, and anything that is not a code at all (negative, above 999, ``True``, ``None``).
    Element text such as ``" 036 "`` is accepted. Never raises: an unknown currency is data to report.
    """
    if isinstance(numeric, bool) or numeric is None:
        return None
    if isinstance(numeric, str):
        text = numeric.strip(" \t\r\n")
        if not _DIGITS.fullmatch(text):
            return None
        numeric = int(text)
    if not isinstance(numeric, int) or not 0 <= numeric <= 999:
        return None
    return _alpha(numeric)


@cache
def _alpha(numeric: int) -> str | None:
    # The translator asks once per series; the key space is 0..999, so an unbounded cache stays small.
    if numeric in NOT_A_CURRENCY:
        return None
    record = pycountry.currencies.get(numeric=f"{numeric:03d}")
    return None if record is None else record.alpha_3
