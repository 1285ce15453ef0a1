"""Configuration of the sandbox custodian: one immutable object, built once (TOML file, flags, environment).

Sources, later ones winning: the defaults below, a TOML file (``--config FILE`` or ``GREENBRIDGE_SANDBOX_CONFIG``),
``GREENBRIDGE_SANDBOX_*`` environment variables (so that ``uvicorn --factory sandbox.app:create_sandbox_app``
and tests can configure a child process), then command-line flags. Nothing here reads the environment at import
time; :func:`load_sandbox_config` is handed the environment (a mapping) explicitly.

The TOML file has a ``[sandbox]`` table (the scalar fields of :class:`SandboxConfig`), any number of
``[[third_parties]]`` (:class:`ThirdParty`) and, optionally, ``[[customers]]`` (:class:`CustomerSpec`, explicit
files per customer). See docs/sandbox.md.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from datetime import date
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from espi.generate import FeedSpec
from espi.scope import ScopeError, format_scope, parse_scope

#: Scope strings a third party is offered when the configuration names none (ApplicationInformation.scope). The
#: first is a typical CMD subscription, the second the classic OpenESPI/harness scope, the third adds the retail
#: customer (PII) blocks (customerResourceURI), the last ties the subscription into bulk set ``1`` (``BR=1``).
DEFAULT_SCOPES: tuple[str, ...] = (
    "FB=1_3_4_5_13_14_15_16_31_32_37_39;IntervalDuration=900_3600;BlockDuration=daily;HistoryLength=13;"
    "SubscriptionFrequency=daily",
    "FB=4_5_15;IntervalDuration=3600;BlockDuration=monthly;HistoryLength=13",
    "FB=1_3_4_5_10_11_12_13_14_15_16_31_37_39_51_53_54_56_58;IntervalDuration=900_3600_86400;BlockDuration=daily;"
    "HistoryLength=13",
    "FB=1_3_4_5_13_14_35_37_39;IntervalDuration=900;BlockDuration=daily;BR=1",
)

DEFAULT_BASE_URL = "http://127.0.0.1:8900"
#: ``DELETE Authorization/{id}``: revoked (204), or the custodian offers no DELETE (405, 501)
DELETE_AUTHORIZATION_STATUSES = (204, 405, 501)
HREF_STYLES = ("subscription", "retail_customer")
CUSTOMER_RESOURCE_URIS = ("customer_data", "always")
ENV_PREFIX = "GREENBRIDGE_SANDBOX_"


class SandboxConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the source and key."""


@dataclass(frozen=True)
class ThirdParty:
    """A registered third party (its ApplicationInformation): OAuth client, redirect URIs, notify URI, scopes."""

    client_id: str = "third_party"
    client_secret: str = field(default="secret", repr=False)
    client_name: str = "Greenbridge (CDS gateway)"
    redirect_uris: tuple[str, ...] = ("http://127.0.0.1:8080/espi/1_1/OAuthCallBack",)
    notify_uri: str = "http://127.0.0.1:8080/espi/1_1/Notification"
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    #: The registration_access_token stored in its ApplicationInformation; random at start-up when empty.
    registration_access_token: str = field(default="", repr=False)
    software_id: str = "greenbridge"
    software_version: str = "0.1.0"


@dataclass(frozen=True)
class CustomerSpec:
    """A sandbox customer given explicitly: sign-in id, password, and the files holding their data."""

    id: str
    password: str = ""
    name: str = ""
    #: An ESPI Atom feed with the customer's usage data (UsagePoints, MeterReadings, IntervalBlocks…)
    usage: Path | None = None
    #: An ESPI customer (``cust:``) feed, served at Batch/RetailCustomer/{id} (customerResourceURI)
    customer_data: Path | None = None


@dataclass(frozen=True)
class SandboxConfig:
    #: Public base URL; endpoints are {base}/oauth/authorize, {base}/oauth/token, {base}/espi/1_1/resource/…
    base_url: str = DEFAULT_BASE_URL
    data_custodian_id: str = "greenbridge-sandbox"
    name: str = "Greenbridge sandbox data custodian"
    #: A directory of ESPI XML files: one customer per usage-data file (customer files paired by name prefix)
    data_dir: Path | None = None
    #: Generated customers (espi.generate); None: 3 when neither data_dir nor customers are given, else none
    generate_customers: int | None = None
    generate_days: int = 31
    #: Traits of real files (espi.generate.TRAITS) the generated customers' feeds carry, each where the customer's
    #: profile can (directional summaries and link conflicts need the net-metering customer, reverse-only an electric
    #: last UsagePoint): the field's warts, served by the sandbox for the bridge to cope with
    generate_traits: tuple[str, ...] = ()
    generate_start: date = date(2025, 1, 1)
    customers: tuple[CustomerSpec, ...] = ()
    #: Password of every customer that has none of its own (listed on the home page: it is a sandbox)
    customer_password: str = "sandbox"
    third_parties: tuple[ThirdParty, ...] = (ThirdParty(),)
    #: The custodian's own administrative client (OpenESPI's ``data_custodian``): client_credentials gives a
    #: data_custodian_access_token, or an upload_access_token with scope FB=45
    admin_client_id: str = "data_custodian"
    admin_client_secret: str = field(default="secret", repr=False)
    #: Seconds: answer 202 to Batch/Subscription and Batch/Bulk GETs and POST a BatchList after this delay
    defer: float = 0.0
    #: How long a deferred request stays ready (answered 200) after its notification
    defer_ready_seconds: float = 3600.0
    #: Write bulk feeds as files here (SFTP delivery, FB_34)
    bulk_dir: Path | None = None
    #: Base URI of bulk_dir as the third party's SFTP sees it (``sftp://user@host:port/path``); when empty,
    #: bulk notifications name the REST URI {resource}/Batch/Bulk/{bulkId}
    sftp_uri: str = ""
    #: How Batch/Subscription and Batch/Bulk answers write hrefs: "subscription" (OpenESPI's
    #: ``…/Subscription/{id}/UsagePoint/{u}/…``) or "retail_customer" (``…/RetailCustomer/{n}/UsagePoint/{u}/…``,
    #: naming the customer but no subscription; a bulk then carries each of a customer's entries once, however
    #: many of the third party's subscriptions hold it)
    href_style: str = "subscription"
    #: When token responses name ``customerResourceURI`` (``…/Batch/RetailCustomer/{n}``): "customer_data" (the
    #: scope has a retail-customer Function Block and the customer has customer data) or "always" (every customer
    #: grant, as in the GBA contract example ``token-response-subscription.json`` and at field custodians: one
    #: customer's authorizations then all name the same customer)
    customer_resource_uri: str = "customer_data"
    #: POST BatchLists when a customer's data grows (upload, or /sandbox/customers/{id}/advance)
    notify_on_new_data: bool = True
    #: New-data BatchLists name the plain ``Batch/Subscription/{id}``, the same URI every time, as real custodians
    #: do; true: with the new IntervalBlocks' window as ``published-min``/``published-max``
    notify_window: bool = False
    #: Seconds a ``Batch/Subscription`` or ``Batch/Bulk`` answer is held after its body was built (a slow
    #: custodian: data that arrives meanwhile is not in it, and the third party's fetch is still running)
    response_delay: float = 0.0
    #: Status of ``DELETE Authorization/{id}``: 204 (revoked, notified), or 405 / 501 for a custodian that cannot
    #: revoke over its API (FB_44 without DELETE; nothing changes)
    delete_authorization_status: int = 204
    notify_attempts: int = 4
    notify_backoff: float = 0.5
    notify_timeout: float = 10.0
    access_token_seconds: int = 3600
    authorization_code_seconds: int = 600
    #: authorizedPeriod duration of new Authorizations (seconds; 0 = no end)
    authorization_seconds: int = 31_536_000
    #: Issue a new refresh token on every refresh (default: keep it, as OpenESPI/Spring does)
    rotate_refresh_tokens: bool = False
    #: Key for the signed sign-in tickets of the authorize page; random at start-up when empty
    secret_key: str = field(default="", repr=False)

    def __post_init__(self) -> None:
        parts = urlsplit(self.base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise SandboxConfigError(f"base_url must be an absolute http(s) URL, not {self.base_url!r}")
        if parts.query or parts.fragment:
            raise SandboxConfigError("base_url must not have a query or fragment")
        object.__setattr__(self, "base_url", self.base_url.rstrip("/"))
        if self.defer < 0 or self.notify_attempts < 1 or self.notify_backoff < 0:
            raise SandboxConfigError("defer and notify_backoff must be ≥ 0 and notify_attempts ≥ 1")
        if self.response_delay < 0:
            raise SandboxConfigError("response_delay must be ≥ 0")
        if self.delete_authorization_status not in DELETE_AUTHORIZATION_STATUSES:
            raise SandboxConfigError(f"delete_authorization_status must be one of "
                                     f"{', '.join(map(str, DELETE_AUTHORIZATION_STATUSES))}, "
                                     f"not {self.delete_authorization_status}")
        if (self.generate_customers is not None and self.generate_customers < 0) or self.generate_days < 1:
            raise SandboxConfigError("generate_customers must be ≥ 0 and generate_days ≥ 1")
        object.__setattr__(self, "generate_traits", tuple(dict.fromkeys(self.generate_traits)))
        try:  # names and combinations, as the generator checks them
            FeedSpec(net_metering=True, traits=frozenset(self.generate_traits))
        except ValueError as error:
            raise SandboxConfigError(f"generate_traits: {error}") from None
        if not self.third_parties:
            raise SandboxConfigError("at least one third party must be registered")
        ids = [tp.client_id for tp in self.third_parties] + [self.admin_client_id]
        if len(set(ids)) != len(ids):
            raise SandboxConfigError(f"client ids must be unique: {ids}")
        for tp in self.third_parties:
            if not tp.client_id or not tp.client_secret or not tp.redirect_uris:
                raise SandboxConfigError(f"third party {tp.client_id!r} needs client_id, client_secret and a "
                                         "redirect URI")
            for scope in tp.scopes:
                try:
                    parse_scope(scope)
                except ScopeError as error:
                    raise SandboxConfigError(f"third party {tp.client_id}: scope {scope!r}: {error}") from None
        if self.customer_resource_uri not in CUSTOMER_RESOURCE_URIS:
            raise SandboxConfigError(f"customer_resource_uri must be one of {', '.join(CUSTOMER_RESOURCE_URIS)}, "
                                     f"not {self.customer_resource_uri!r}")
        if self.href_style not in HREF_STYLES:
            raise SandboxConfigError(f"href_style must be one of {', '.join(HREF_STYLES)}, not {self.href_style!r}")
        if self.sftp_uri and not self.sftp_uri.startswith("sftp://"):
            raise SandboxConfigError(f"sftp_uri must start with sftp://, not {self.sftp_uri!r}")

    # ----- derived URLs -----
    @property
    def resource_endpoint(self) -> str:
        """{DataCustodianResourceEndpoint}"""
        return f"{self.base_url}/espi/1_1/resource"

    @property
    def authorization_endpoint(self) -> str:
        return f"{self.base_url}/oauth/authorize"

    @property
    def token_endpoint(self) -> str:
        return f"{self.base_url}/oauth/token"

    @property
    def mount_path(self) -> str:
        """The path part of base_url ('' at the root): every route is served below it."""
        return urlsplit(self.base_url).path.rstrip("/")

    @property
    def generated_count(self) -> int:
        if self.generate_customers is not None:
            return self.generate_customers
        return 0 if (self.data_dir is not None or self.customers) else 3

    def with_overrides(self, **changes: Any) -> SandboxConfig:
        return replace(self, **changes)


# ----------------------------------------------------------------------------------------------------------------
# Loading
# ----------------------------------------------------------------------------------------------------------------
_SCALARS = {f.name for f in fields(SandboxConfig)} - {"customers", "third_parties"}
_PATHS = {"data_dir", "bulk_dir"}


def _canonical_scopes(scopes: Any, where: str) -> tuple[str, ...]:
    if isinstance(scopes, str) or not isinstance(scopes, list | tuple):
        raise SandboxConfigError(f"{where}: scopes must be a list of scope strings")
    result = []
    for scope in scopes:
        try:
            result.append(format_scope(parse_scope(str(scope))))
        except ScopeError as error:
            raise SandboxConfigError(f"{where}: scope {scope!r}: {error}") from None
    return tuple(result)


def _third_party(table: Mapping[str, Any], where: str) -> ThirdParty:
    known = {f.name for f in fields(ThirdParty)}
    values = dict(table)
    if "redirect_uri" in values and "redirect_uris" not in values:
        values["redirect_uris"] = [values.pop("redirect_uri")]
    unknown = set(values) - known
    if unknown:
        raise SandboxConfigError(f"{where}: unknown keys {sorted(unknown)}")
    if "redirect_uris" in values:
        uris = values["redirect_uris"]
        values["redirect_uris"] = (uris,) if isinstance(uris, str) else tuple(uris)
    if "scopes" in values:
        values["scopes"] = _canonical_scopes(values["scopes"], where)
    return ThirdParty(**values)


def _customer(table: Mapping[str, Any], where: str, base: Path) -> CustomerSpec:
    known = {f.name for f in fields(CustomerSpec)}
    unknown = set(table) - known
    if unknown or "id" not in table:
        raise SandboxConfigError(f"{where}: needs 'id'; unknown keys {sorted(unknown)}")
    values = dict(table)
    for key in ("usage", "customer_data"):
        if values.get(key):
            values[key] = (base / values[key]).resolve()
    if not values.get("usage"):
        raise SandboxConfigError(f"{where}: 'usage' (an ESPI usage feed file) is required")
    return CustomerSpec(**values)


def _coerce(name: str, value: Any, where: str) -> Any:
    target = str(SandboxConfig.__dataclass_fields__[name].type)
    try:
        if name in _PATHS:
            return Path(value) if value not in (None, "") else None
        if name == "generate_start":
            return value if isinstance(value, date) else date.fromisoformat(str(value))
        if name == "generate_traits":  # a TOML list, or "a,b" from the environment and flags
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        if target == "bool":
            if isinstance(value, str):
                lowered = value.strip().lower()
                if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                    raise ValueError(value)
                return lowered in ("1", "true", "yes", "on")
            return bool(value)
        if target in ("int", "int | None"):
            return int(value)
        if target == "float":
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise SandboxConfigError(f"{where}: invalid value {value!r} for {name}") from None


def load_sandbox_config(path: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
                        **overrides: Any) -> SandboxConfig:
    """Defaults, then the TOML file, then ``GREENBRIDGE_SANDBOX_*`` from ``env``, then ``overrides``.

    ``overrides`` are SandboxConfig fields, plus ``client_id``, ``client_secret``, ``redirect_uris``,
    ``notify_uri``, ``scopes`` and ``client_name``, which change the first third party (the one the flags
    describe). None values are ignored, so argparse results can be passed as they are.
    """
    env = env or {}
    path = path or env.get(ENV_PREFIX + "CONFIG") or None
    values: dict[str, Any] = {}
    third_parties: list[ThirdParty] | None = None
    customers: tuple[CustomerSpec, ...] = ()
    if path:
        file = Path(path)
        try:
            document = tomllib.loads(file.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as error:
            raise SandboxConfigError(f"{file}: {error}") from None
        unknown = set(document) - {"sandbox", "third_parties", "customers"}
        if unknown:
            raise SandboxConfigError(f"{file}: unknown tables {sorted(unknown)}")
        table = document.get("sandbox", {})
        for key, value in table.items():
            if key not in _SCALARS:
                raise SandboxConfigError(f"{file}: [sandbox] unknown key {key!r}")
            values[key] = _coerce(key, value, f"{file}: [sandbox]")
        for key in _PATHS:
            if values.get(key) is not None and not values[key].is_absolute():
                values[key] = (file.parent / values[key]).resolve()
        if "third_parties" in document:
            third_parties = [_third_party(t, f"{file}: [[third_parties]] #{i + 1}")
                             for i, t in enumerate(document["third_parties"])]
        customers = tuple(_customer(c, f"{file}: [[customers]] #{i + 1}", file.parent)
                          for i, c in enumerate(document.get("customers", [])))
    for key in _SCALARS:
        raw = env.get(ENV_PREFIX + key.upper())
        if raw is not None and raw != "":
            values[key] = _coerce(key, raw, f"${ENV_PREFIX}{key.upper()}")
    first: dict[str, Any] = {}
    for key in ("client_id", "client_secret", "notify_uri", "client_name"):
        raw = env.get(ENV_PREFIX + key.upper())
        if raw:
            first[key] = raw
    if env.get(ENV_PREFIX + "REDIRECT_URI"):
        first["redirect_uris"] = tuple(u for u in env[ENV_PREFIX + "REDIRECT_URI"].split() if u)
    if env.get(ENV_PREFIX + "SCOPES"):
        first["scopes"] = _canonical_scopes(env[ENV_PREFIX + "SCOPES"].split("|"), f"${ENV_PREFIX}SCOPES")
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("client_id", "client_secret", "notify_uri", "client_name"):
            first[key] = value
        elif key == "redirect_uris":
            first[key] = (value,) if isinstance(value, str) else tuple(value)
        elif key == "scopes":
            first[key] = _canonical_scopes(list(value), "--scope")
        elif key in _SCALARS:
            values[key] = _coerce(key, value, f"--{key.replace('_', '-')}")
        else:
            raise SandboxConfigError(f"unknown setting {key!r}")
    if first:
        parties = list(third_parties) if third_parties else [ThirdParty()]
        parties[0] = replace(parties[0], **first)
        third_parties = parties
    if third_parties is not None:
        values["third_parties"] = tuple(third_parties)
    if customers:
        values["customers"] = customers
    try:
        return SandboxConfig(**values)
    except TypeError as error:  # pragma: no cover - keys are checked above
        raise SandboxConfigError(str(error)) from None
