"""Rich Authorization Requests for CDS: parse and validate ``authorization_details`` (RFC 9396).

The vocabulary comes from the Scope Descriptions of the Authorization Server Metadata: each scope lists the RAR
``type`` values it accepts (``authorization_details_types_supported``) and one Authorization Details Field object
per key an entry may carry (CDS-WG1-02 §3.8 field object, §3.9 formats, §3.10 Choice; CDS-WG3-01 §7 fields).
Every error is an :class:`AuthorizationDetailsError`, which the OAuth layer reports as the RFC 9396 error
``invalid_authorization_details``.

Rules implemented here (spec facts; the spec reference is ``shared/reference/cds-spec.md``):

* an entry's ``type`` must be allowed by a requested scope (and by the Client's ``authorization_details_types``);
  keys other than ``type`` must be fields offered for that type; ``is_required`` fields must be present;
* values are checked against ``format``, ``maximum``/``minimum`` and ``choices``; decimals must be exact
  (``Decimal``), never ``float``;
* omitted fields take their ``default`` (WG3-01 §6), including for scopes requested without any entry;
* relative durations become absolute in the server's ``cds_timezone`` (WG1-02 §3.9, WG3-01 §7.3): subtracted for
  the start-type fields, added for the others; ``"infinite"`` stays as it is;
* one Grant Admin entry per request (WG1-02 §3.3.2); one ``jwk`` for all entries (WG3-01 §7.4.6);
  ``merge_selection_with`` consistency (WG3-01 §7.4.2); the per-scope-type rejections of WG3-01 §6.1;
* server policy for direct access (``cds_query_*``, WG3-01 §6.2 MAY): at least one preselection field must list
  values, and ``_all``/``_include_future`` are refused there;
* consent scopes never echo preselection fields (WG3-01 §6), except the program lists of the program scopes.

Durations are RFC 3339 Appendix A durations with integer components in ``Y M W D T H M S`` order (``W`` alone).
Calendar components (years, months, weeks, days) move the wall-clock date in the server timezone, keeping the
local time; time components (hours, minutes, seconds) are exact elapsed time. A local time that does not exist
(spring-forward gap) resolves to the same instant as the earlier offset would give, i.e. one hour later on the
wall clock; an ambiguous one (fall-back) resolves to its first occurrence. A duration without calendar
components starts from the exact instant ``now``.

Descriptions may be :class:`cds.scopes.ScopeDescription` objects or their JSON form (``to_json()``, or the
``cds_scope_descriptions`` map of any server's metadata): everything here works on the JSON form.
"""

from __future__ import annotations

import base64
import binascii
import calendar
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cds.json_input import JsonInputError, parse_json
from cds.timestamps import parse_instant, within_calendar

__all__ = [
    "CONSENT_FLOWS",
    "FLOWS",
    "INFINITE",
    "PRESELECTION_FIELDS",
    "START_FIELDS",
    "AuthorizationDetailsError",
    "Duration",
    "ValidatedDetails",
    "format_date",
    "format_datetime",
    "is_reduction",
    "load_timezone",
    "parse_authorization_details",
    "parse_duration",
    "resolve_date_value",
    "validate_authorization_details",
]

INFINITE = "infinite"

#: Fields whose relative values are subtracted from "now" (the start of a historical window, WG3-01 §7.3).
START_FIELDS = frozenset({"segment_start", "start_date", "statement_date_start"})

#: WG3-01 §7.1 preselection fields: never echoed by customer-consent scopes (WG3-01 §6) ...
PRESELECTION_FIELDS = frozenset({
    "account_numbers", "account_programs", "contract_numbers", "service_types", "service_programs",
    "servicepoint_numbers", "servicepoint_types", "premise_numbers", "meter_numbers", "meter_types", "meter_apps",
    "aggregation_numbers", "addresses",
})
#: ... except these, which the program scopes keep (scope type → field).
ECHOED_PRESELECTIONS = {"cds_account_programs": frozenset({"account_programs"}),
                        "cds_service_programs": frozenset({"service_programs"})}

#: Direct-access scope types (WG3-01 §6.2) start with this; their entries need a preselection (server policy).
DIRECT_ACCESS_PREFIX = "cds_query_"
#: Preselection values that only mean something on the authorization form (WG3-01 §7.1).
FORM_ONLY_VALUES = frozenset({"_all", "_include_future"})

#: The grant types this module knows; the consent ones hide preselections in what is echoed.
FLOWS = frozenset({"authorization_code", "refresh_token", "client_credentials"})
CONSENT_FLOWS = frozenset({"authorization_code", "refresh_token"})

GRANT_ADMIN_TYPE = "cds_grant_admin"
DATE_FORMATS = frozenset({"relative_or_absolute_date", "relative_or_absolute_datetime"})
CHOICE_FORMATS = frozenset({"choice", "choice_or_null", "choice_list", "choice_list_or_null"})
KNOWN_FORMATS = frozenset({
    "int", "decimal", "string", "string_or_null", "string_list", "string_list_or_null", "boolean",
    "relative_or_absolute_date", "relative_or_absolute_datetime", "choice", "choice_or_null", "choice_list",
    "choice_list_or_null", "jwk_or_null",
})
#: JWK members that only a private (or symmetric) key has (RFC 7518 §6.2.2, §6.3.2, §6.4.1)
PRIVATE_JWK_MEMBERS = frozenset({"d", "p", "q", "dp", "dq", "qi", "oth", "k"})
MIN_RSA_BITS = 2048
MAX_RAW_LENGTH = 65536


class AuthorizationDetailsError(ValueError):
    """An invalid ``authorization_details`` value; OAuth error ``invalid_authorization_details`` (RFC 9396 §5).

    ``description`` is the human message for ``error_description``: it names the entry index, the type and the
    field when they are known.
    """

    error = "invalid_authorization_details"

    def __init__(self, description: str):
        super().__init__(description)
        self.description = description


def _where(index: int | None, type_: str | None = None, field_id: str | None = None) -> str:
    parts = []
    if index is not None:
        parts.append(f"authorization_details[{index}]")
    if type_ is not None:
        parts.append(f"(type {type_!r})")
    if field_id is not None:
        parts.append(f"field {field_id!r}")
    return " ".join(parts)


def _fail(message: str, index: int | None = None, type_: str | None = None,
          field_id: str | None = None) -> NoReturn:
    where = _where(index, type_, field_id)
    raise AuthorizationDetailsError(f"{where}: {message}" if where else message)


# --------------------------------------------------------------------------------------------------------------
# Parsing
# --------------------------------------------------------------------------------------------------------------


def parse_authorization_details(raw: str | list | None, *, max_length: int = MAX_RAW_LENGTH) -> list[dict]:
    """The ``authorization_details`` request parameter → a list of entries (dicts), ``[]`` when absent.

    ``raw`` is the form-decoded JSON text, or an already-decoded list. Non-integer numbers become ``Decimal``
    (never ``float``); ``NaN``/``Infinity`` and duplicate object keys are refused. The value must be a JSON array of
    objects, each with a non-empty string ``type`` (RFC 9396 §2). The entries are returned as new dicts.
    """
    if raw is None:
        return []
    if isinstance(raw, (bytes, bytearray)):
        _fail("authorization_details must be text, not bytes")
    if isinstance(raw, str):
        if len(raw) > max_length:
            _fail(f"authorization_details is longer than {max_length} characters")
        if not raw.strip():
            _fail("authorization_details is empty; it must be a JSON array")
        try:
            value = parse_json(raw)
        except JsonInputError as exc:
            _fail(f"authorization_details is not valid JSON: {exc}")
    else:
        value = raw
    if not isinstance(value, list):
        _fail(f"authorization_details must be a JSON array of objects, not {_json_type(value)}")
    entries = []
    for index, entry in enumerate(value):
        if not isinstance(entry, Mapping):
            _fail(f"must be a JSON object, not {_json_type(entry)}", index)
        type_ = entry.get("type")
        if "type" not in entry:
            _fail("the 'type' member is missing", index)
        if not isinstance(type_, str) or not type_:
            _fail("'type' must be a non-empty string", index)
        entries.append(dict(entry))
    return entries


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, (int, Decimal)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


# --------------------------------------------------------------------------------------------------------------
# Durations and dates
# --------------------------------------------------------------------------------------------------------------

_DURATION = re.compile(
    r"P(?:(?P<weeks>\d{1,6})W"
    r"|(?=\d|T\d)(?:(?P<years>\d{1,6})Y)?(?:(?P<months>\d{1,6})M)?(?:(?P<days>\d{1,7})D)?"
    r"(?:T(?=\d)(?:(?P<hours>\d{1,8})H)?(?:(?P<minutes>\d{1,9})M)?(?:(?P<seconds>\d{1,10})S)?)?)"
)
_ABS_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
_ABS_DATETIME = re.compile(r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})")


@dataclass(frozen=True, slots=True)
class Duration:
    """An RFC 3339 duration: calendar part (years, months, days incl. weeks) and exact time part (seconds)."""

    years: int = 0
    months: int = 0
    days: int = 0
    seconds: int = 0

    @property
    def has_time(self) -> bool:
        return self.seconds != 0

    def calendar_months(self) -> int:
        return self.years * 12 + self.months


def parse_duration(text: str, *, date_only: bool = False) -> Duration:
    """``"P3Y"``, ``"P0D"``, ``"P30DT2H"``, ``"PT0S"``, ``"P2W"`` → :class:`Duration`; ``ValueError`` otherwise.

    ``date_only`` refuses a time part (a relative date has no H/M/S, WG1-02 §3.9), even a zero one.
    """
    match = _DURATION.fullmatch(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"{text!r} is not an RFC 3339 duration (e.g. P3Y, P0D, P30DT2H, PT0S)")
    parts = {name: int(value) for name, value in match.groupdict().items() if value is not None}
    if date_only and "T" in text:
        raise ValueError(f"{text!r} has a time part; a relative date is a duration of years, months, weeks or days")
    return Duration(
        years=parts.get("years", 0),
        months=parts.get("months", 0),
        days=parts.get("days", 0) + 7 * parts.get("weeks", 0),
        seconds=parts.get("hours", 0) * 3600 + parts.get("minutes", 0) * 60 + parts.get("seconds", 0),
    )


def _shift_date(day: date, months: int, days: int) -> date:
    """Calendar arithmetic: months first (day clamped to the month's length), then days."""
    total = day.year * 12 + (day.month - 1) + months
    year, month = divmod(total, 12)
    month += 1
    if not 1 <= year <= 9999:
        raise OverflowError("date out of range")
    shifted = date(year, month, min(day.day, calendar.monthrange(year, month)[1]))
    return shifted + timedelta(days=days)


def _shift(now: datetime, duration: Duration, sign: int, tz: ZoneInfo, *, as_date: bool) -> date | datetime:
    local = now.astimezone(tz)
    try:
        if as_date:
            return _shift_date(local.date(), sign * duration.calendar_months(), sign * duration.days)
        if duration.calendar_months() == 0 and duration.days == 0:
            wall = local  # no calendar move: keep the exact instant (even the second 01:30 of a fall-back night)
        else:
            wall_date = _shift_date(local.date(), sign * duration.calendar_months(), sign * duration.days)
            wall = datetime.combine(wall_date, local.time().replace(fold=0), tzinfo=tz)
        instant = wall.astimezone(UTC) + timedelta(seconds=sign * duration.seconds)
        return instant.astimezone(tz)
    except (OverflowError, ValueError) as exc:
        raise ValueError(f"the duration is out of range ({exc})") from None


def format_date(value: date) -> str:
    return value.isoformat()


def format_datetime(value: datetime) -> str:
    """RFC 3339, seconds (microseconds only when present); ``Z`` for a zero offset."""
    text = value.isoformat(timespec="microseconds" if value.microsecond else "seconds")
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def resolve_date_value(value: Any, *, datetime_format: bool, subtract: bool, tz: ZoneInfo,
                       now: datetime) -> str | date | datetime:
    """A relative-or-absolute date (time) → ``"infinite"``, a ``date`` or an aware ``datetime`` in ``tz``.

    Relative values are taken from ``now`` in ``tz``, backwards when ``subtract``. ``ValueError`` when malformed.
    """
    if value == INFINITE:
        return INFINITE
    if not isinstance(value, str):
        raise ValueError(f"must be a string (a date{'time' if datetime_format else ''}, a duration or "
                         f"'infinite'), not {_json_type(value)}")
    if value.startswith("P"):
        duration = parse_duration(value, date_only=not datetime_format)
        return _shift(now, duration, -1 if subtract else 1, tz, as_date=not datetime_format)
    if datetime_format:
        if not _ABS_DATETIME.fullmatch(value):
            raise ValueError(f"{value!r} is not an RFC 3339 date-time with an offset, a duration or 'infinite'")
        try:
            parsed = parse_instant(value)
        except ValueError as exc:
            raise ValueError(f"{value!r} is not a valid date-time ({exc})") from None
        return parsed.astimezone(tz)
    if not _ABS_DATE.fullmatch(value):
        raise ValueError(f"{value!r} is not an RFC 3339 full-date (YYYY-MM-DD), a duration or 'infinite'")
    try:
        return within_calendar(date.fromisoformat(value))
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a valid date ({exc})") from None


def load_timezone(name: str) -> ZoneInfo:
    """An IANA timezone; ``ValueError`` (not ``KeyError``) when unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError) as exc:
        raise ValueError(f"unknown IANA timezone {name!r}") from exc


def _render(resolved: str | date | datetime) -> str:
    if isinstance(resolved, datetime):
        return format_datetime(resolved)
    if isinstance(resolved, date):
        return format_date(resolved)
    return resolved


def _order_key(resolved: str | date | datetime, *, subtract: bool) -> tuple:
    """Sort key where "infinite" is −∞ for start fields (all history) and +∞ for the others (open-ended)."""
    if resolved == INFINITE:
        return (0,) if subtract else (2,)
    return (1, resolved)


# --------------------------------------------------------------------------------------------------------------
# Value checks per format
# --------------------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class _Context:
    tz: ZoneInfo
    now: datetime
    index: int | None
    type_: str


def _b64url_int(text: Any, what: str, length: int | None = None) -> int:
    if not isinstance(text, str) or not text or not re.fullmatch(r"[A-Za-z0-9_-]+", text):
        raise ValueError(f"JWK member {what!r} must be base64url text")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError(f"JWK member {what!r} is not valid base64url") from None
    if length is not None and len(raw) != length:
        raise ValueError(f"JWK member {what!r} must encode {length} bytes")
    return int.from_bytes(raw, "big")


def check_jwk(value: Any) -> dict:
    """A public encryption JWK (RFC 7517 §4): EC P-256 or RSA ≥ 2048 bits, ``use`` = ``enc`` when present.

    Returns a copy; ``ValueError`` when it is not such a key (private members, wrong curve, off-curve point …).
    """
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if not isinstance(value, Mapping):
        raise ValueError(f"must be a JWK object or null, not {_json_type(value)}")
    private = PRIVATE_JWK_MEMBERS & set(value)
    if private:
        raise ValueError(f"must be a public key; private member(s) {sorted(private)} present")
    if "use" in value and value["use"] != "enc":
        raise ValueError("JWK 'use' must be 'enc'")
    if "key_ops" in value:
        ops = value["key_ops"]
        if not isinstance(ops, list) or not ops or not set(ops) <= {"encrypt", "wrapKey", "deriveKey", "deriveBits"}:
            raise ValueError("JWK 'key_ops' must only allow encryption operations")
    kty = value.get("kty")
    if kty == "EC":
        if value.get("crv") != "P-256":
            raise ValueError("EC JWKs must use crv 'P-256'")
        x = _b64url_int(value.get("x"), "x", 32)
        y = _b64url_int(value.get("y"), "y", 32)
        try:
            ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        except ValueError:
            raise ValueError("the EC point is not on the P-256 curve") from None
    elif kty == "RSA":
        n = _b64url_int(value.get("n"), "n")
        e = _b64url_int(value.get("e"), "e")
        try:
            key = rsa.RSAPublicNumbers(e, n).public_key()
        except ValueError as exc:
            raise ValueError(f"not a valid RSA public key ({exc})") from None
        if key.key_size < MIN_RSA_BITS:
            raise ValueError(f"RSA keys must have at least {MIN_RSA_BITS} bits")
    else:
        raise ValueError("JWK 'kty' must be 'EC' (P-256) or 'RSA'")
    return json.loads(json.dumps(dict(value)))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, Decimal)) and not isinstance(value, bool)


def _check_number(fd: Mapping, value: Any, fmt: str) -> int | Decimal:
    if isinstance(value, float):
        raise ValueError("floats are not accepted; decimals must be exact (parse JSON with parse_float=Decimal)")
    if fmt == "int":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"must be an integer, not {_json_type(value)}")
    else:
        if not _is_number(value):
            raise ValueError(f"must be a decimal number, not {_json_type(value)}")
        if isinstance(value, Decimal) and not value.is_finite():
            raise ValueError("must be a finite number")
    maximum, minimum = fd.get("maximum"), fd.get("minimum")
    if _is_number(minimum) and value < minimum:
        raise ValueError(f"{value} is below the minimum {minimum}")
    if _is_number(maximum) and value > maximum:
        raise ValueError(f"{value} is above the maximum {maximum}")
    return value


def _check_length(fd: Mapping, length: int, what: str) -> None:
    maximum, minimum = fd.get("maximum"), fd.get("minimum")
    if _is_number(minimum) and length < minimum:
        raise ValueError(f"{what} {length} is below the minimum {minimum}")
    if _is_number(maximum) and length > maximum:
        raise ValueError(f"{what} {length} is above the maximum {maximum}")


def _check_choices(fd: Mapping, value: Any, as_list: bool) -> Any:
    ids = [choice["id"] for choice in fd.get("choices") or ()]
    if as_list:
        if not isinstance(value, list):
            raise ValueError(f"must be an array of choice ids, not {_json_type(value)}")
        if not value:
            raise ValueError("must not be an empty array (send null for none)" if fd["format"].endswith("_or_null")
                             else "must not be an empty array")
        seen = set()
        for item in value:
            if not isinstance(item, str) or item not in ids:
                raise ValueError(f"{item!r} is not one of the choices {ids}")
            if item in seen:
                raise ValueError(f"{item!r} is listed twice")
            seen.add(item)
        return list(value)
    if not isinstance(value, str) or value not in ids:
        raise ValueError(f"{value!r} is not one of the choices {ids}")
    return value


def _check_date_value(fd: Mapping, value: Any, ctx: _Context) -> str:
    fmt = fd["format"]
    datetime_format = fmt == "relative_or_absolute_datetime"
    subtract = fd["id"] in START_FIELDS
    resolved = resolve_date_value(value, datetime_format=datetime_format, subtract=subtract, tz=ctx.tz, now=ctx.now)
    key = _order_key(resolved, subtract=subtract)
    bounds = {}
    for name in ("maximum", "minimum"):
        if fd.get(name) is not None:
            try:
                bound = resolve_date_value(fd[name], datetime_format=datetime_format, subtract=subtract,
                                           tz=ctx.tz, now=ctx.now)
            except ValueError as exc:
                raise ValueError(f"the server's {name} {fd[name]!r} is unusable ({exc})") from None
            bounds[name] = (bound, _order_key(bound, subtract=subtract))
    # For start fields the maximum is the furthest back, the minimum the closest to now (WG1-02 §3.8).
    low_name, high_name = ("maximum", "minimum") if subtract else ("minimum", "maximum")
    if low_name in bounds and key < bounds[low_name][1]:
        limit = bounds[low_name][0]
        relation = "further back than" if subtract else "earlier than"
        raise ValueError(f"{_render(resolved)} ({value}) is {relation} the {low_name} {fd[low_name]!r} "
                         f"({_render(limit)})")
    if high_name in bounds and key > bounds[high_name][1]:
        limit = bounds[high_name][0]
        relation = "later than" if subtract else "further ahead than"
        raise ValueError(f"{_render(resolved)} ({value}) is {relation} the {high_name} {fd[high_name]!r} "
                         f"({_render(limit)})")
    return _render(resolved)


def _check_value(fd: Mapping, value: Any, ctx: _Context) -> Any:
    """The checked (and, for dates, absolute) value of one field; ``ValueError`` with the reason otherwise."""
    fmt = fd["format"]
    if fmt not in KNOWN_FORMATS:
        raise ValueError(f"the server offers this field with an unsupported format {fmt!r}")
    if value is None:
        if fmt.endswith("_or_null"):
            return None
        raise ValueError("must not be null")
    if isinstance(value, float):
        raise ValueError("floats are not accepted; numbers must be exact (parse JSON with parse_float=Decimal)")
    if fmt in ("int", "decimal"):
        return _check_number(fd, value, fmt)
    if fmt in ("string", "string_or_null"):
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_json_type(value)}")
        _check_length(fd, len(value), "length")
        return value
    if fmt in ("string_list", "string_list_or_null"):
        if not isinstance(value, list):
            raise ValueError(f"must be an array of strings, not {_json_type(value)}")
        if not value:
            raise ValueError("must not be an empty array (send null for none)" if fmt.endswith("_or_null")
                             else "must not be an empty array")
        for item in value:
            if not isinstance(item, str):
                raise ValueError(f"array items must be strings, not {_json_type(item)}")
        _check_length(fd, sum(len(item) for item in value), "combined length")
        return list(value)
    if fmt == "boolean":
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false, not {_json_type(value)}")
        return value
    if fmt in DATE_FORMATS:
        return _check_date_value(fd, value, ctx)
    if fmt in CHOICE_FORMATS:
        return _check_choices(fd, value, as_list=fmt.startswith("choice_list"))
    return check_jwk(value)  # jwk_or_null


# --------------------------------------------------------------------------------------------------------------
# Validation of a request
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ValidatedDetails:
    """The outcome of :func:`validate_authorization_details`.

    ``effective``: every entry with defaults filled and durations absolute (what the Grant stores and enforces).
    ``echoed``: the same entries as the token response / Grant ``authorization_details`` show them (consent scopes
    drop their preselection fields). ``scopes``: the scope id of each entry, parallel to both lists. ``now``: the
    reference moment relative values were resolved at (None when the entries were not resolved here).
    """

    effective: list[dict] = field(default_factory=list)
    echoed: list[dict] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    now: datetime | None = None


def _description_json(description: Any) -> dict:
    return description.to_json() if hasattr(description, "to_json") else dict(description)


def _normalise_descriptions(descriptions: Mapping[str, Any]) -> dict[str, dict]:
    return {scope_id: _description_json(description) for scope_id, description in descriptions.items()}


def _fields_for(description: Mapping, type_: str) -> list[Mapping]:
    return [fd for fd in description.get("authorization_details_fields_supported") or ()
            if type_ in (fd.get("for_types") or ())]


def _is_consent(description: Mapping) -> bool:
    return bool(description.get("response_types_supported"))


def _fill_entry(entry: Mapping, index: int | None, type_: str, description: Mapping, ctx: _Context) -> dict:
    fields = _fields_for(description, type_)
    offered = {fd["id"]: fd for fd in fields}
    unknown = [key for key in entry if key != "type" and key not in offered]
    if unknown:
        _fail(f"unknown field(s) {sorted(unknown)}; this type accepts {sorted(offered)}", index, type_)
    result: dict[str, Any] = {"type": type_}
    for fd in fields:
        fid = fd["id"]
        if fid in entry:
            raw_value, source = entry[fid], "value"
        elif fd.get("is_required"):
            if index is None:
                _fail(f"scope {description['id']!r} needs an authorization_details entry of type {type_!r}: "
                      f"field {fid!r} is required")
            _fail("is required", index, type_, fid)
        elif "default" in fd:
            raw_value, source = fd["default"], "default"
        else:
            continue
        try:
            result[fid] = _check_value(fd, raw_value, ctx)
        except ValueError as exc:
            if source == "default":
                _fail(f"the server default {raw_value!r} is unusable: {exc}", index, type_, fid)
            _fail(str(exc), index, type_, fid)
    return result


def _scope_type_rules(entry: Mapping, index: int | None, type_: str, description: Mapping) -> None:
    """The per-scope-type rejections of WG3-01 §6.1 (customer-consent scopes) and the direct-access policy."""
    scope_type = description.get("type")
    checks: list[tuple[bool, str, str]] = []
    if scope_type == "cds_account_programs":
        checks.append((entry.get("account_programs", "") is None, "account_programs", "must not be null"))
    elif scope_type == "cds_service_programs":
        checks.append((entry.get("service_programs", "") is None, "service_programs", "must not be null"))
    elif scope_type == "cds_aggregation_consent":
        checks += [
            (entry.get("aggregation_numbers", "") is None, "aggregation_numbers", "must not be null"),
            (entry.get("premise_numbers", "") is None, "premise_numbers", "must not be null"),
            (entry.get("error_if_no_preselections") is False, "error_if_no_preselections", "must be true"),
            (entry.get("allow_scope_modifications") is True, "allow_scope_modifications", "must be false"),
        ]
    for failed, fid, message in checks:
        if failed:
            _fail(f"{message} for a {scope_type} scope", index, type_, fid)
    if isinstance(scope_type, str) and scope_type.startswith(DIRECT_ACCESS_PREFIX) and not _is_consent(description):
        _direct_access_rules(entry, index, type_, description)


def _direct_access_rules(entry: Mapping, index: int | None, type_: str, description: Mapping) -> None:
    """Server policy for direct access (WG3-01 §6.2: Servers MAY require preselections and reject unbounded token
    requests): a ``cds_query_*`` entry must list values in at least one offered preselection field, and the
    authorization-form values ``_all``/``_include_future`` have no place there. ``cds_query_aggregations`` is
    exempt (anonymized data; the spec's guard there is a required ``q=`` on the API)."""
    if description.get("type") == "cds_query_aggregations":
        return
    offered = sorted(fd["id"] for fd in _fields_for(description, type_) if fd["id"] in PRESELECTION_FIELDS)
    if not offered:
        return
    for fid in offered:
        value = entry.get(fid)
        if isinstance(value, list) and FORM_ONLY_VALUES & set(value):
            _fail(f"{sorted(FORM_ONLY_VALUES & set(value))} select on the authorization form; direct access must "
                  "name the objects themselves", index, type_, fid)
    if all(entry.get(fid) is None for fid in offered):
        _fail(f"direct access must be bounded by a preselection: at least one of {offered} must list values "
              "(this server rejects unbounded cds_query_* token requests, WG3-01 §6.2)", index, type_)


def _field_shape(fd: Mapping) -> tuple:
    choices = tuple(sorted(json.dumps(choice, sort_keys=True, default=str) for choice in fd.get("choices") or ()))
    return (fd.get("format"), fd.get("maximum"), fd.get("minimum"), choices)


def _check_merges(effective: list[dict], scopes_of: list[str], descs: Mapping[str, Mapping],
                  indexes: list[int | None]) -> None:
    """``merge_selection_with`` (WG3-01 §7.4.2): a non-null value names another requested scope whose entry is
    also merged and shares the selection type, purpose and ``allow_scope_modifications``; shared preselection fields
    have identical field objects and values, preselection fields offered by only one side are null."""
    position = {scope_id: pos for pos, scope_id in enumerate(scopes_of)}
    for pos, entry in enumerate(effective):
        target = entry.get("merge_selection_with")
        if target is None:
            continue
        index, type_ = indexes[pos], entry["type"]
        scope_id = scopes_of[pos]
        if target == scope_id:
            _fail("names its own scope", index, type_, "merge_selection_with")
        if target not in position:
            _fail(f"{target!r} is not another scope of this request", index, type_, "merge_selection_with")
        other = effective[position[target]]
        if other.get("merge_selection_with") is None:
            _fail(f"scope {target!r} is not merged (its merge_selection_with is null)", index, type_,
                  "merge_selection_with")
        for fid in ("authorization_form_selection_type", "purpose", "allow_scope_modifications"):
            if entry.get(fid) != other.get(fid):
                _fail(f"{fid} differs from scope {target!r} ({entry.get(fid)!r} ≠ {other.get(fid)!r})", index,
                      type_, "merge_selection_with")
        mine = {fd["id"]: fd for fd in _fields_for(descs[scope_id], type_) if fd["id"] in PRESELECTION_FIELDS}
        theirs = {fd["id"]: fd for fd in _fields_for(descs[target], other["type"]) if fd["id"] in PRESELECTION_FIELDS}
        for fid in sorted(mine.keys() & theirs.keys()):
            if _field_shape(mine[fid]) != _field_shape(theirs[fid]):
                _fail(f"shared preselection field {fid!r} is offered differently by scope {target!r}", index,
                      type_, "merge_selection_with")
            if entry.get(fid) != other.get(fid):
                _fail(f"preselection {fid!r} differs from scope {target!r}", index, type_, "merge_selection_with")
        for fid in sorted(mine.keys() - theirs.keys()):
            if entry.get(fid) is not None:
                _fail(f"preselection {fid!r} must be null: scope {target!r} does not offer it", index, type_,
                      "merge_selection_with")


def validate_authorization_details(
    details: Sequence[Mapping],
    *,
    scopes: Iterable[str],
    descriptions: Mapping[str, Any],
    client_types: Iterable[str] | None,
    timezone: str,
    now: datetime,
    flow: str,
) -> ValidatedDetails:
    """Validate parsed ``authorization_details`` for a request of ``scopes`` and return the effective entries.

    * ``descriptions``: scope id → ScopeDescription (or its JSON). Requested scopes that are not in it (``openid``
      …) are ignored here; scope checks belong to the caller.
    * ``client_types``: the Client's ``authorization_details_types``, or ``None`` to skip that check.
    * ``timezone``: the server's ``cds_timezone``; ``now``: the aware reference moment (user approval for
      ``authorization_code``, the first token request for ``client_credentials``).
    * ``flow``: ``authorization_code``, ``refresh_token`` or ``client_credentials``; the consent flows drop the
      preselection fields of consent scopes from ``echoed``.

    Effective entries come in request order, followed by a default entry ``{"type": <scope's RAR type>, ...}`` for
    each requested scope that offers RAR types but got no entry. Raises :class:`AuthorizationDetailsError`.
    """
    if flow not in FLOWS:
        raise ValueError(f"unknown flow {flow!r}; expected one of {sorted(FLOWS)}")
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    tz = load_timezone(timezone)
    descs = _normalise_descriptions(descriptions)
    requested = [scope_id for scope_id in dict.fromkeys(scopes) if scope_id in descs]

    owner: dict[str, str] = {}  # RAR type → requested scope id
    for scope_id in requested:
        for type_ in descs[scope_id].get("authorization_details_types_supported") or ():
            owner.setdefault(type_, scope_id)
    known_types = {type_ for desc in descs.values() for type_ in desc.get("authorization_details_types_supported")
                   or ()}
    allowed_types = None if client_types is None else set(client_types)

    grant_admin = [scope_id for scope_id in requested if descs[scope_id].get("type") == GRANT_ADMIN_TYPE]
    if grant_admin:
        if len(requested) > 1:
            _fail(f"a Grant Admin scope ({grant_admin[0]!r}) must be requested alone, not with "
                  f"{[s for s in requested if s != grant_admin[0]]}")
        if len(details) != 1:
            _fail(f"a Grant Admin request needs exactly one authorization_details entry, not {len(details)}")

    effective: list[dict] = []
    scopes_of: list[str] = []
    indexes: list[int | None] = []
    seen_types: dict[str, int] = {}
    for index, entry in enumerate(details):
        if not isinstance(entry, Mapping):
            _fail(f"must be a JSON object, not {_json_type(entry)}", index)
        type_ = entry.get("type")
        if not isinstance(type_, str) or not type_:
            _fail("'type' must be a non-empty string", index)
        if type_ not in known_types:
            _fail("unknown authorization_details type", index, type_)
        if allowed_types is not None and type_ not in allowed_types:
            _fail("the client is not registered for this type", index, type_)
        if type_ not in owner:
            _fail("no requested scope supports this type; add its scope to the scope parameter", index, type_)
        if type_ in seen_types:
            _fail(f"duplicate entry; authorization_details[{seen_types[type_]}] has the same type", index, type_)
        seen_types[type_] = index
        scope_id = owner[type_]
        ctx = _Context(tz=tz, now=now, index=index, type_=type_)
        filled = _fill_entry(entry, index, type_, descs[scope_id], ctx)
        _scope_type_rules(filled, index, type_, descs[scope_id])
        effective.append(filled)
        scopes_of.append(scope_id)
        indexes.append(index)

    covered = set(scopes_of)
    for scope_id in requested:
        types = descs[scope_id].get("authorization_details_types_supported") or ()
        if scope_id in covered or not types:
            continue
        type_ = scope_id if scope_id in types else types[0]
        if allowed_types is not None and type_ not in allowed_types:
            continue  # the client cannot hold this type; scope checks will reject the scope if they must
        ctx = _Context(tz=tz, now=now, index=None, type_=type_)
        filled = _fill_entry({"type": type_}, None, type_, descs[scope_id], ctx)
        _scope_type_rules(filled, None, type_, descs[scope_id])
        effective.append(filled)
        scopes_of.append(scope_id)
        indexes.append(None)

    jwk_values = [(pos, entry["jwk"]) for pos, entry in enumerate(effective) if "jwk" in entry]
    for pos, value in jwk_values[1:]:
        if value != jwk_values[0][1]:
            first = indexes[jwk_values[0][0]]
            _fail(f"jwk differs from the one of authorization_details[{first}] (type "
                  f"{effective[jwk_values[0][0]]['type']!r}); every scope must carry the same jwk",
                  indexes[pos], effective[pos]["type"], "jwk")

    _check_merges(effective, scopes_of, descs, indexes)

    echoed = []
    for entry, scope_id in zip(effective, scopes_of, strict=True):
        desc = descs[scope_id]
        if flow in CONSENT_FLOWS and _is_consent(desc):
            keep = ECHOED_PRESELECTIONS.get(desc.get("type"), frozenset())
            echoed.append({k: v for k, v in entry.items() if k not in PRESELECTION_FIELDS or k in keep})
        else:
            echoed.append(dict(entry))
    return ValidatedDetails(effective=effective, echoed=echoed, scopes=scopes_of, now=now)


# --------------------------------------------------------------------------------------------------------------
# Grant PATCH: is a change a pure reduction?
# --------------------------------------------------------------------------------------------------------------

#: Fields where a null value means "no restriction" (direct access) – a list is narrower than null.
_NULL_IS_WIDEST = PRESELECTION_FIELDS
#: Fields where a null value means "nothing" – null is narrower than any list.
_NULL_IS_NARROWEST = frozenset({"include_usage_segment_value_types"})
_ADDED_FIELDS = frozenset({"sync_until", "expires", "segment_end", "end_date", "statement_date_end"})


def _absolute(value: str) -> date | datetime | None:
    if _ABS_DATETIME.fullmatch(value):
        try:
            return parse_instant(value)
        except ValueError:
            return None
    if _ABS_DATE.fullmatch(value):
        try:
            return within_calendar(date.fromisoformat(value))
        except ValueError:
            return None
    return None


def _value_narrower_or_equal(fid: str, old: Any, new: Any) -> bool:
    if old == new and type(old) is type(new):
        return True
    if isinstance(old, bool) or isinstance(new, bool):
        return old is True and new is False
    if fid in START_FIELDS or fid in _ADDED_FIELDS:
        if not isinstance(old, str) or not isinstance(new, str):
            return False
        later_is_narrower = fid in START_FIELDS
        if old == INFINITE:
            return new == INFINITE or _absolute(new) is not None
        if new == INFINITE:
            return False
        old_at, new_at = _absolute(old), _absolute(new)
        if old_at is None or new_at is None or type(old_at) is not type(new_at):
            return False
        return new_at >= old_at if later_is_narrower else new_at <= old_at
    if old is None:
        return fid in _NULL_IS_WIDEST and isinstance(new, list) and bool(new)
    if new is None:
        return fid in _NULL_IS_NARROWEST
    if isinstance(old, list) and isinstance(new, list):
        hashable = all(isinstance(item, str) for item in old + new)
        return hashable and bool(new) and set(new) <= set(old)
    return False


def is_reduction(old: Sequence[Mapping], new: Sequence[Mapping]) -> bool:
    """True when ``new`` grants no more access than ``old`` (Grant PATCH without re-authorization, WG1-02 §8).

    Both are *effective* lists (validated: defaults filled, dates absolute). Conservative by design: it returns
    True only when every change is provably narrowing, and False for anything it cannot judge.

    * every ``new`` type appears in ``old`` (once each); dropping whole entries is a reduction;
    * a field present in ``old`` must stay present; a field absent from ``old`` may appear only as ``false``;
    * booleans may only go from true to false;
    * start fields (``segment_start``, ``start_date``, ``statement_date_start``) may only move later, the others
      (``sync_until``, ``expires``, ``segment_end``, ``end_date``, ``statement_date_end``) only earlier;
      ``"infinite"`` may become a date but not the other way round; relative values are never judged;
    * lists may only lose items (never become empty); a preselection null ("no filter") may become a list;
      ``include_usage_segment_value_types`` may become null (no values);
    * everything else (strings, numbers, choices, ``jwk``, ``merge_selection_with`` …) must stay equal.
      Special preselection values such as ``"_all"`` are compared as plain strings.
    """
    old_by_type: dict[str, Mapping] = {}
    for entry in old:
        if not isinstance(entry, Mapping) or entry.get("type") in old_by_type:
            return False
        old_by_type[entry.get("type")] = entry
    seen: set[Any] = set()
    for entry in new:
        if not isinstance(entry, Mapping):
            return False
        type_ = entry.get("type")
        if type_ not in old_by_type or type_ in seen:
            return False
        seen.add(type_)
        before = old_by_type[type_]
        if any(fid not in entry for fid in before):
            return False
        for fid, value in entry.items():
            if fid == "type":
                continue
            if fid not in before:
                if value is not False:
                    return False
                continue
            if not _value_narrower_or_equal(fid, before[fid], value):
                return False
    return True
