"""Gateway configuration: one immutable object built once at startup and passed in.

Sources, later ones winning: embedded defaults, a TOML file (``GREENBRIDGE_CONFIG`` or ``--config``), then
``GREENBRIDGE_*`` environment variables for the settings an operator changes per deployment (see docs/configuration.md).
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from espi.private_files import private_dir


class ConfigError(ValueError):
    """A configuration value is missing or invalid; the message names the source and key."""


@dataclass(frozen=True)
class ServerInfo:
    """The WG1-01 metadata fields describing the entity that runs this server (CDS-WG1-01 §3.2)."""

    name: str = "greenbridge"
    description: str = "CDS gateway in front of Green Button Connect My Data systems"
    website: str = ""
    documentation: str = ""
    support: str = ""
    created: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    updated: datetime = datetime(2026, 1, 1, tzinfo=UTC)
    op_policy_uri: str = ""
    op_tos_uri: str = ""


@dataclass(frozen=True)
class TestCustomer:
    """A local customer the consent page can sign in (until a legacy custodian stands behind it)."""

    customer_id: str
    name: str
    password: str
    #: Where the Authorization Receipt is sent after approval, when SMTP is configured (issue 14 item 6).
    email: str = ""


@dataclass(frozen=True)
class SftpConfig:
    """Where a custodian's bulk files are fetched over SFTP (ESPI FB_34), with the server's pinned host key."""

    host: str
    user: str
    key_path: Path
    host_key: str  # "ssh-ed25519 AAAA…" as in known_hosts: never trust on first use
    port: int = 22
    remote_dir: str = "."


@dataclass(frozen=True)
class NotifySources:
    """Who may notify for a custodian (issue 13 item 3): the networks its BatchLists come from (``sources``, CIDRs;
    empty: any) and HTTP Basic credentials it sends with them (RFC 7617; ``user`` empty: none asked)."""

    sources: tuple[str, ...] = ()
    user: str = ""
    password: str = field(default="", repr=False)

    @property
    def networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        return tuple(ipaddress.ip_network(source, strict=False) for source in self.sources)


@dataclass(frozen=True)
class CustodianConfig:
    """One legacy Green Button data custodian behind the gateway (issue 5).

    ``client_secret`` may be given directly (tests, sandbox) or, better, through ``client_secret_env``: the name of an
    environment variable read at startup, so the secret stays out of configuration files.
    """

    id: str
    name: str
    resource_url: str  # the ESPI resource endpoint, e.g. https://dc.example/espi/1_1/resource
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str
    # Every URI we act on because a custodian (or a notification) named it must lie under one of the configured
    # endpoints (resource_url, application_information_url, bulk_url: same scheme, host and port, path under
    # theirs), or on the SFTP server for sftp:// (bridge.upstream.origins, espi.origins).
    application_information_url: str = ""
    bulk_url: str = ""  # where REST bulk files are served when not under resource_url
    sftp: SftpConfig | None = None
    coverage: dict[str, Any] | None = None  # the WG1-01 coverage entry for this custodian's customers
    # The scope strings the custodian offers us, verbatim as in its ApplicationInformation (``FB=…;…``): the consent
    # hop asks for the narrowest of them that covers a CDS request (bridge.custodian_scopes.narrowest_scope).
    scopes: tuple[str, ...] = ()
    # Who may notify (networks, Basic credentials); None: anyone who reaches the notify URL (issue 13 item 3).
    notify: NotifySources | None = None
    # Bounded work per notification (issue 13 item 2); None: the gateway's notification_uri_cap and
    # notification_jobs_per_minute.
    notification_uri_cap: int | None = None
    notification_jobs_per_minute: int | None = None
    # The custodian's local time zone (IANA): its customers' receipts show dates in it; default the gateway's.
    timezone: str = ""

    def __repr__(self) -> str:  # never print the secret
        return f"CustodianConfig(id={self.id!r}, resource_url={self.resource_url!r}, client_id={self.client_id!r})"


@dataclass(frozen=True)
class SmtpConfig:
    """The mail server the gateway sends Authorization Receipts through (``[smtp]``; issue 14 item 6).

    ``tls``: "starttls" (RFC 3207, the default), "tls" (implicit TLS, RFC 8314) or "none" (loopback relays only).
    ``password`` comes from the environment variable named by ``password_env``, never from the file.
    """

    host: str
    sender: str  # the From address
    port: int = 587
    tls: str = "starttls"
    username: str = ""
    password: str = ""
    timeout_seconds: int = 10

    def __repr__(self) -> str:  # never print the password
        return f"SmtpConfig(host={self.host!r}, port={self.port}, tls={self.tls!r}, sender={self.sender!r})"


@dataclass(frozen=True)
class GatewayConfig:
    issuer: str = "http://127.0.0.1:8080"
    database_url: str = ""
    redis_url: str = ""
    data_dir: Path = Path("var")
    # Key material for secrets at rest (client secrets) and for HMAC token hashing; derived per purpose.
    secret_key: str = ""
    timezone: str = "UTC"
    server: ServerInfo = field(default_factory=ServerInfo)
    coverage: tuple[dict[str, Any], ...] = ()
    custodians: tuple[CustodianConfig, ...] = ()
    test_customers: tuple[TestCustomer, ...] = ()
    max_body_bytes: int = 1024 * 1024
    message_max_bytes: int = 16 * 1024 * 1024
    access_token_seconds: int = 3600
    refresh_token_seconds: int = 90 * 24 * 3600
    authorization_code_seconds: int = 60
    par_seconds: int = 90
    segment_history: str = "P3Y"
    # Failed client authentications per (client id, address), and per address, in a minute before that key is
    # blocked with a doubling backoff; a correct secret is never refused (cds.auth_throttle, docs/security.md).
    auth_failures_per_minute: int = 10
    auth_address_failures_per_minute: int = 100
    page_size: int = 100
    # Threads per gateway process for the customer-data listings (they only read the store): under load more
    # threads only contend for the GIL (bench/data_api.py at 16 connections: 5.1, 6.7, 8.3 ms of CPU per page with
    # 1, 2, 4 threads); more processes (serve --workers) scale instead.
    store_threads: int = 1
    # The token endpoint answers a plain client_credentials or refresh_token request in a few Core statements
    # (gateway.oauth.fast_token); false sends every request through Authlib (the same answers, slower).
    token_fast_path: bool = True
    # A custodian's 202 Accepted waits this long for its BatchList before the workers poll again (issue 6 item 3).
    deferred_timeout_seconds: int = 3600
    # How long a running job's lease lasts; its worker renews it every third of that. A job whose worker was killed
    # is taken over by the next run once its lease ran out (workers.jobs).
    job_lease_seconds: int = 60
    # A failed job's first retry comes within this many seconds, doubling with each attempt (with jitter; capped at
    # 600 s) (workers.jobs.backoff_delay); and how long a worker waits for a custodian's answer (each HTTP request).
    job_retry_seconds: int = 5
    custodian_timeout_seconds: int = 60
    # Bounded work per notification (issue 13 item 2): URIs acted on per BatchList POST (the rest refused and
    # counted in the log), and URIs acted on per custodian and minute (beyond it a POST is answered 429).
    notification_uri_cap: int = 100
    notification_jobs_per_minute: int = 300
    # The reverse proxies whose X-Forwarded-For is believed (addresses or CIDRs; read right to left, uvicorn's
    # ProxyHeadersMiddleware): the client address every route sees (notify sources, authentication limits).
    trusted_proxies: tuple[str, ...] = ()
    # The Try-it walkthrough: a demo third party built into the gateway (gateway/demo). None: not configured, which
    # means off, except that `greenbridge serve` running the embedded bridge turns it on (GREENBRIDGE_DEMO).
    demo: bool | None = None
    # Receipts by email (issue 14 item 6): None sends none.
    smtp: SmtpConfig | None = None
    # Operations (docs/operations.md): the operator's credential for /ops (HTTP Basic; no default: without a
    # password the dashboard is off), structured JSON logs, whether a client's X-Request-Id is taken (only behind a
    # proxy that sets it), and the directory of the processes' Prometheus files (default <data_dir>/metrics).
    operator_user: str = "operator"
    operator_password: str = field(default="", repr=False)
    json_logs: bool = False
    trust_request_id: bool = False
    metrics_dir: Path | None = None

    # ----- derived values -----
    @property
    def base_url(self) -> str:
        return self.issuer.rstrip("/")

    def url(self, path: str) -> str:
        return self.base_url + path

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def derived_key(self, purpose: str) -> bytes:
        """32 bytes for one purpose (``"fernet"``, ``"token-hash"``…), so one leaked use does not expose others."""
        return hashlib.sha256(f"greenbridge:{purpose}:".encode() + self.secret_key.encode()).digest()

    @property
    def fernet_key(self) -> bytes:
        return base64.urlsafe_b64encode(self.derived_key("fernet"))

    def with_overrides(self, **changes: Any) -> GatewayConfig:
        return replace(self, **changes)


_ENV = {
    "GREENBRIDGE_ISSUER": "issuer",
    "GREENBRIDGE_PUBLIC_URL": "issuer",
    "GREENBRIDGE_DATABASE_URL": "database_url",
    "GREENBRIDGE_REDIS_URL": "redis_url",
    "GREENBRIDGE_DATA_DIR": "data_dir",
    "GREENBRIDGE_SECRET_KEY": "secret_key",
    "GREENBRIDGE_TIMEZONE": "timezone",
    "GREENBRIDGE_DEFERRED_TIMEOUT_SECONDS": "deferred_timeout_seconds",
    "GREENBRIDGE_JOB_LEASE_SECONDS": "job_lease_seconds",
    "GREENBRIDGE_JOB_RETRY_SECONDS": "job_retry_seconds",
    "GREENBRIDGE_CUSTODIAN_TIMEOUT_SECONDS": "custodian_timeout_seconds",
    "GREENBRIDGE_DEMO": "demo",
    "GREENBRIDGE_OPERATOR_USER": "operator_user",
    "GREENBRIDGE_OPERATOR_PASSWORD": "operator_password",
    "GREENBRIDGE_JSON_LOGS": "json_logs",
    "GREENBRIDGE_TRUST_REQUEST_ID": "trust_request_id",
    "GREENBRIDGE_METRICS_DIR": "metrics_dir",
}
_INT_KEYS = {
    "max_body_bytes", "message_max_bytes", "access_token_seconds", "refresh_token_seconds",
    "authorization_code_seconds", "par_seconds", "auth_failures_per_minute", "auth_address_failures_per_minute",
    "page_size", "deferred_timeout_seconds", "job_lease_seconds", "notification_uri_cap",
    "notification_jobs_per_minute", "job_retry_seconds", "custodian_timeout_seconds", "store_threads",
}
_STR_KEYS = {"issuer", "database_url", "redis_url", "secret_key", "timezone", "segment_history", "operator_user",
             "operator_password"}
_BOOL_KEYS = {"demo", "json_logs", "trust_request_id", "token_fast_path"}
_BOOL_WORDS = {"1": True, "true": True, "on": True, "yes": True, "0": False, "false": False, "off": False, "no": False}
_SMTP_TLS = ("starttls", "tls", "none")


def load_config(path: str | os.PathLike | None = None, environ: Mapping[str, str] | None = None) -> GatewayConfig:
    """Build the configuration from defaults, the TOML file at ``path`` (or $GREENBRIDGE_CONFIG) and the environment."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    path = path or environ.get("GREENBRIDGE_CONFIG") or None
    source = "defaults"
    if path:
        source = str(path)
        try:
            with open(path, "rb") as handle:
                document = tomllib.load(handle)
        except FileNotFoundError:
            raise ConfigError(f"{path}: configuration file not found") from None
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{path}: {error}") from None
        values.update(_from_toml(document, source, environ))
    for name, key in _ENV.items():
        if environ.get(name):
            values[key] = environ[name]
            if key in _INT_KEYS:
                problem = f"environment: {name} must be a positive integer, got {environ[name]!r}"
                try:
                    values[key] = int(environ[name])
                except ValueError:
                    raise ConfigError(problem) from None
                if values[key] <= 0:
                    raise ConfigError(problem)
            elif key in _BOOL_KEYS:
                word = environ[name].strip().lower()
                if word not in _BOOL_WORDS:
                    raise ConfigError(f"environment: {name} must be on or off, got {environ[name]!r}")
                values[key] = _BOOL_WORDS[word]
    for key in ("data_dir", "metrics_dir"):
        if key in values:
            values[key] = Path(values[key])
    config = GatewayConfig(**values)
    return _finish(config, source)


def _from_toml(document: dict[str, Any], source: str, environ: Mapping[str, str]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    gateway = dict(document.get("gateway", {}))
    for key, value in gateway.items():
        if key in _INT_KEYS:
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{source}: [gateway] {key} must be a positive integer, got {value!r}")
            values[key] = value
        elif key in _STR_KEYS:
            if not isinstance(value, str):
                raise ConfigError(f"{source}: [gateway] {key} must be a string, got {value!r}")
            values[key] = value
        elif key in _BOOL_KEYS:
            if not isinstance(value, bool):
                raise ConfigError(f"{source}: [gateway] {key} must be true or false, got {value!r}")
            values[key] = value
        elif key in ("data_dir", "metrics_dir"):
            values[key] = Path(value)
        elif key == "trusted_proxies":
            values[key] = _networks(value, f"{source}: [gateway] trusted_proxies")
        else:
            raise ConfigError(f"{source}: [gateway] unknown key {key!r}")
    if "server" in document:
        server = dict(document["server"])
        known = set(ServerInfo.__dataclass_fields__)
        unknown = set(server) - known
        if unknown:
            raise ConfigError(f"{source}: [server] unknown keys {sorted(unknown)}")
        for key in ("created", "updated"):
            if key in server:
                server[key] = _datetime(server[key], f"{source}: [server] {key}")
        values["server"] = ServerInfo(**server)
    if "coverage" in document:
        entries = document["coverage"]
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: coverage must be an array of tables ([[coverage]])")
        values["coverage"] = tuple(_coverage_entry(entry, f"{source}: [[coverage]] #{i + 1}")
                                   for i, entry in enumerate(entries))
    if "custodians" in document:
        entries = document["custodians"]
        if not isinstance(entries, list):
            raise ConfigError(f"{source}: custodians must be an array of tables ([[custodians]])")
        values["custodians"] = tuple(_custodian(entry, f"{source}: [[custodians]] #{i + 1}", environ)
                                     for i, entry in enumerate(entries))
    if "test_customers" in document:
        customers = []
        for i, entry in enumerate(document["test_customers"]):
            where = f"{source}: [[test_customers]] #{i + 1}"
            try:
                customer = TestCustomer(str(entry["customer_id"]), str(entry["name"]), str(entry["password"]))
            except KeyError as missing:
                raise ConfigError(f"{where}: missing {missing}") from None
            if "email" in entry:
                customers.append(replace(customer, email=_email(entry["email"], f"{where}: email")))
            else:
                customers.append(customer)
        values["test_customers"] = tuple(customers)
    if "smtp" in document:
        values["smtp"] = _smtp(document["smtp"], f"{source}: [smtp]", environ)
    return values


def _email(value: Any, where: str) -> str:
    """An addr-spec (``local@domain``) as configured: one address, no display name, no line breaks."""
    from email.errors import HeaderParseError
    from email.headerregistry import Address

    if not isinstance(value, str) or not value or any(c in value for c in "\r\n<>,; \t"):
        raise ConfigError(f"{where} must be one e-mail address (local@domain), got {value!r}")
    try:
        Address(addr_spec=value)
    except (ValueError, IndexError, HeaderParseError):
        raise ConfigError(f"{where} must be one e-mail address (local@domain), got {value!r}") from None
    if "@" not in value:
        raise ConfigError(f"{where} must be one e-mail address (local@domain), got {value!r}")
    return value


def _smtp(table: Any, where: str, environ: Mapping[str, str]) -> SmtpConfig:
    """The ``[smtp]`` table: host, port, from, tls, optional username and password_env, timeout_seconds."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = sorted(set(table) - {"host", "port", "from", "tls", "username", "password_env", "timeout_seconds"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    host = table.get("host")
    if not isinstance(host, str) or not host:
        raise ConfigError(f"{where}: host is required (the mail server's name or address)")
    sender = _email(table.get("from"), f"{where}: from")
    tls = table.get("tls", "starttls")
    if tls not in _SMTP_TLS:
        raise ConfigError(f"{where}: tls must be one of {list(_SMTP_TLS)}, got {tls!r}")
    port = table.get("port", 465 if tls == "tls" else 587)
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ConfigError(f"{where}: port must be a TCP port")
    timeout = table.get("timeout_seconds", 10)
    if not isinstance(timeout, int) or isinstance(timeout, bool) or timeout <= 0:
        raise ConfigError(f"{where}: timeout_seconds must be a positive integer")
    username = table.get("username", "")
    if not isinstance(username, str):
        raise ConfigError(f"{where}: username must be a string")
    password = ""
    if "password_env" in table:
        name = table["password_env"]
        password = environ.get(name, "") if isinstance(name, str) else ""
        if not password:
            raise ConfigError(f"{where}: environment variable {name!r} (password_env) is not set")
    if password and not username:
        raise ConfigError(f"{where}: password_env needs username")
    return SmtpConfig(host=host, sender=sender, port=port, tls=tls, username=username, password=password,
                      timeout_seconds=timeout)


_CUSTODIAN_URLS = ("resource_url", "authorize_url", "token_url")


def _http_url(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key} is required (a URL)")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.fragment:
        raise ConfigError(f"{where}: {key} must be an http(s) URL without fragment: {value!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"{where}: {key} must use https except on loopback: {value!r}")
    return value


def _custodian(entry: Any, where: str, environ: Mapping[str, str]) -> CustodianConfig:
    """A [[custodians]] table: endpoints, credentials, notify sources and limits, optional SFTP and coverage entry."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    entry = dict(entry)
    known = {"id", "name", "client_id", "client_secret", "client_secret_env", "hosts", "application_information_url",
             "bulk_url", "sftp", "coverage", "scopes", "notify", "notification_uri_cap",
             "notification_jobs_per_minute", "timezone", *_CUSTODIAN_URLS}
    unknown = sorted(set(entry) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    for key in ("id", "name", "client_id"):
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ConfigError(f"{where}: {key} is required (a non-empty string)")
    if not all(c.isalnum() or c in "-_" for c in entry["id"]):
        raise ConfigError(f"{where}: id may contain only letters, digits, '-' and '_'")
    urls = {key: _http_url(entry.get(key), where, key) for key in _CUSTODIAN_URLS}
    info_url = entry.get("application_information_url", "")
    if info_url:
        _http_url(info_url, where, "application_information_url")
    bulk_url = entry.get("bulk_url", "")
    if bulk_url:
        _http_url(bulk_url, where, "bulk_url")
    if "client_secret_env" in entry:
        name = entry["client_secret_env"]
        secret = environ.get(name, "") if isinstance(name, str) else ""
        if not secret:
            raise ConfigError(f"{where}: environment variable {name!r} (client_secret_env) is not set")
    else:
        secret = entry.get("client_secret")
        if not isinstance(secret, str) or not secret:
            raise ConfigError(f"{where}: client_secret or client_secret_env is required")
    hosts = entry.get("hosts", [])
    if not isinstance(hosts, list) or not all(isinstance(h, str) and h for h in hosts):
        raise ConfigError(f"{where}: hosts must be an array of host names")
    # `hosts` used to widen what was fetched to whole hosts (any port, any path). What is acted on now lies under a
    # configured endpoint, so `hosts` is accepted only when it adds nothing; a host it would add must become an
    # endpoint (bulk_url) rather than be silently dropped.
    endpoint_hosts = {(urlsplit(u).hostname or "").lower() for u in (*urls.values(), info_url, bulk_url) if u}
    extra = sorted({h.lower() for h in hosts} - endpoint_hosts)
    if extra:
        raise ConfigError(f"{where}: hosts {extra} would widen what is fetched beyond the configured endpoints; "
                          "hosts no longer does: name where bulk files are served with bulk_url (scheme, host, "
                          "port and path), and remove hosts")
    scopes = entry.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s.strip() for s in scopes):
        raise ConfigError(f"{where}: scopes must be an array of the custodian's scope strings (FB=…)")
    timezone = entry.get("timezone", "")
    if timezone:
        try:
            ZoneInfo(timezone)
        except (ZoneInfoNotFoundError, ValueError, TypeError):
            raise ConfigError(f"{where}: timezone is not an IANA zone name: {timezone!r}") from None
    sftp = None
    if "sftp" in entry:
        table = entry["sftp"]
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: sftp must be a table")
        for key in ("host", "user", "key_path", "host_key"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise ConfigError(f"{where}: sftp.{key} is required")
        if len(table["host_key"].split()) < 2:
            raise ConfigError(f"{where}: sftp.host_key must be 'TYPE BASE64' as in known_hosts (pinned host key)")
        port = table.get("port", 22)
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ConfigError(f"{where}: sftp.port must be a TCP port")
        sftp = SftpConfig(host=table["host"], user=table["user"], key_path=Path(table["key_path"]),
                          host_key=table["host_key"], port=port, remote_dir=str(table.get("remote_dir", ".")))
    limits = {}
    for key in ("notification_uri_cap", "notification_jobs_per_minute"):
        if key in entry:
            value = entry[key]
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{where}: {key} must be a positive integer, got {value!r}")
            limits[key] = value
    notify = _notify_sources(entry["notify"], f"{where}: notify", environ) if "notify" in entry else None
    coverage = None
    if "coverage" in entry:
        table = dict(entry["coverage"])
        table.setdefault("id", entry["id"])
        table.setdefault("entity_name", entry["name"])
        table.setdefault("name", f"{entry['name']} Green Button customers")
        table.setdefault("type", "logical")
        table.setdefault("role", "aggregator")
        table.setdefault("capabilities", ["oauth"])
        coverage = _coverage_entry(table, f"{where}: coverage")
    return CustodianConfig(
        id=entry["id"], name=entry["name"], client_id=entry["client_id"], client_secret=secret,
        application_information_url=info_url, bulk_url=bulk_url, sftp=sftp, coverage=coverage,
        scopes=tuple(s.strip() for s in scopes), notify=notify, timezone=timezone, **limits, **urls,
    )


#: A notify password is compared in constant time but not throttled: it must be too long to guess.
NOTIFY_PASSWORD_MIN = 16


def _notify_sources(table: Any, where: str, environ: Mapping[str, str]) -> NotifySources:
    """``[custodians.notify]``: ``sources`` (CIDRs), ``user`` with ``password_env`` (or ``password``)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    unknown = sorted(set(table) - {"sources", "user", "password", "password_env"})
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}")
    sources = _networks(table.get("sources", []), f"{where}.sources")
    user = table.get("user", "")
    if not isinstance(user, str) or ":" in user or any(ord(c) < 0x20 or ord(c) == 0x7F for c in user):
        raise ConfigError(f"{where}: user must be a string without ':' or control characters")
    if "password_env" in table:
        name = table["password_env"]
        password = environ.get(name, "") if isinstance(name, str) else ""
        if not password:
            raise ConfigError(f"{where}: environment variable {name!r} (password_env) is not set")
    else:
        password = table.get("password", "")
        if not isinstance(password, str):
            raise ConfigError(f"{where}: password must be a string")
    if bool(user) != bool(password):
        raise ConfigError(f"{where}: user and password (or password_env) go together")
    if password and len(password) < NOTIFY_PASSWORD_MIN:
        raise ConfigError(f"{where}: the password must have at least {NOTIFY_PASSWORD_MIN} characters (a random "
                          "value: it is not throttled)")
    if not sources and not user:
        raise ConfigError(f"{where}: give sources, or user and password, or both")
    return NotifySources(sources=sources, user=user, password=password)


def _networks(value: Any, where: str) -> tuple[str, ...]:
    """An array of IP addresses or networks (CIDR), each normalised (``10.0.0.1`` → ``10.0.0.1/32``)."""
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where} must be an array of addresses or networks (CIDR)")
    networks = []
    for item in value:
        try:
            networks.append(str(ipaddress.ip_network(item.strip(), strict=False)))
        except ValueError:
            raise ConfigError(f"{where}: {item!r} is not an IP address or network (CIDR)") from None
    return tuple(networks)


def _datetime(value: Any, where: str) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ConfigError(f"{where}: not an RFC 3339 datetime: {value!r}") from None
    else:
        raise ConfigError(f"{where}: not a datetime: {value!r}")
    if parsed.tzinfo is None:
        raise ConfigError(f"{where}: datetime needs a UTC offset: {value!r}")
    return parsed.astimezone(UTC)


_COVERAGE_REQUIRED = ("id", "entity_name", "country", "name", "type", "role")
_COVERAGE_TYPES = {"geographic", "logical"}
_ROLES = {"authoritative", "official", "aggregator"}
_INFRASTRUCTURE = {
    "distribution_utility", "metering_provider", "supplier", "generator", "market_operator",
    "distribution_service_operator", "transmission_service_operator", "service_provider",
}
_COMMODITIES = {"electricity", "natural_gas", "fuel_oil", "water", "wastewater", "trash", "distributed_energy"}


def _coverage_entry(entry: Any, where: str) -> dict[str, Any]:
    """A coverage entry as configured, checked against CDS-WG1-01 §4.3 (values kept as plain JSON data)."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    entry = dict(entry)
    for key in _COVERAGE_REQUIRED:
        if not isinstance(entry.get(key), str) or not entry[key]:
            raise ConfigError(f"{where}: {key} is required (a non-empty string)")
    if entry["type"] not in _COVERAGE_TYPES:
        raise ConfigError(f"{where}: type must be one of {sorted(_COVERAGE_TYPES)}")
    if entry["role"] not in _ROLES:
        raise ConfigError(f"{where}: role must be one of {sorted(_ROLES)}")
    if len(entry["country"]) != 2 or not entry["country"].isupper():
        raise ConfigError(f"{where}: country must be an ISO 3166 alpha-2 code")
    for key, allowed in (("infrastructure_types", _INFRASTRUCTURE), ("commodity_types", _COMMODITIES)):
        values = entry.setdefault(key, [])
        bad = [v for v in values if v not in allowed]
        if bad:
            raise ConfigError(f"{where}: unknown {key} {bad}")
    capabilities = entry.setdefault("capabilities", [])
    if "coverage" in capabilities:
        raise ConfigError(f"{where}: capabilities must not contain 'coverage'")
    entry.setdefault("entity_abbreviation", None)
    if "map_resource" in entry and "map_content_type" not in entry:
        raise ConfigError(f"{where}: map_content_type is required with map_resource")
    if entry["type"] == "geographic" and not ({"map_resource", "geojson_resource"} & set(entry)):
        raise ConfigError(f"{where}: a geographic entry needs map_resource or geojson_resource")
    for key in ("created", "updated"):
        entry[key] = _datetime(entry.get(key, "2026-01-01T00:00:00Z"), f"{where}: {key}")
    return entry


def _finish(config: GatewayConfig, source: str) -> GatewayConfig:
    parts = urlsplit(config.issuer)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ConfigError(f"{source}: issuer must be an http(s) URL without query or fragment: {config.issuer!r}")
    if parts.scheme == "http" and parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ConfigError(f"{source}: issuer must use https except on loopback: {config.issuer!r}")
    try:
        ZoneInfo(config.timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"{source}: timezone is not an IANA zone name: {config.timezone!r}") from None
    custodian_ids = [c.id for c in config.custodians]
    if len(custodian_ids) != len(set(custodian_ids)):
        raise ConfigError(f"{source}: custodian ids must be unique")
    for custodian in config.custodians:
        cap = custodian.notification_uri_cap or config.notification_uri_cap
        rate = custodian.notification_jobs_per_minute or config.notification_jobs_per_minute
        if rate < cap:  # a full notification must fit in a minute, or a custodian retrying it would never get in
            raise ConfigError(f"{source}: custodian {custodian.id}: notification_jobs_per_minute ({rate}) must be at "
                              f"least notification_uri_cap ({cap})")
    # Each custodian with a coverage table appears as a coverage entry: one CDS front for several utilities.
    custodian_coverage = tuple(c.coverage for c in config.custodians if c.coverage is not None)
    if custodian_coverage:
        config = replace(config, coverage=(*config.coverage, *custodian_coverage))
    ids = [entry["id"] for entry in config.coverage]
    if len(ids) != len(set(ids)):
        raise ConfigError(f"{source}: coverage entry ids must be unique")
    changes: dict[str, Any] = {}
    if not config.operator_user or ":" in config.operator_user:
        raise ConfigError(f"{source}: operator_user must be a non-empty name without ':' (HTTP Basic)")
    if config.metrics_dir is None:
        changes["metrics_dir"] = config.data_dir / "metrics"
    if not config.database_url:
        changes["database_url"] = f"sqlite+pysqlite:///{(config.data_dir / 'greenbridge.db').resolve()}"
    if not config.secret_key:
        changes["secret_key"] = _local_secret(config.data_dir)
    server = config.server
    docs = config.base_url + "/docs"
    defaults = {"website": config.base_url + "/", "documentation": docs, "support": docs + "#support",
                "op_policy_uri": docs + "#policy", "op_tos_uri": docs + "#terms"}
    server_changes = {k: v for k, v in defaults.items() if not getattr(server, k)}
    if server_changes:
        changes["server"] = replace(server, **server_changes)
    if not config.test_customers:
        changes["test_customers"] = (TestCustomer("customer-1", "Alex Example", "sandbox"),)
    return replace(config, **changes) if changes else config


def _local_secret(data_dir: Path) -> str:
    """A per-installation random key kept in the data directory (0600), created on first use.

    Production sets GREENBRIDGE_SECRET_KEY; the embedded default must still never be a constant shared by every
    installation, or encrypted secrets would be readable by anyone with the source.
    """
    path = data_dir / "secret.key"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    private_dir(data_dir)
    key = base64.urlsafe_b64encode(os.urandom(32)).decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process (a uvicorn worker) created it first: use theirs
        return path.read_text().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return key
