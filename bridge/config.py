"""Gateway configuration: one immutable object built once at startup and passed in.

Sources, later ones winning: embedded defaults, a TOML file (``GREENBRIDGE_CONFIG`` or ``--config``), then
``GREENBRIDGE_*`` environment variables for the settings an operator changes per deployment (see docs/configuration.md).
Nothing here reads the environment at import time.
"""

from __future__ import annotations

import base64
import hashlib
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
    # Every URL we fetch because a custodian (or a notification) told us to must be on one of these hosts.
    hosts: tuple[str, ...] = ()
    application_information_url: str = ""
    sftp: SftpConfig | None = None
    coverage: dict[str, Any] | None = None  # the WG1-01 coverage entry for this custodian's customers
    # The scope strings the custodian offers us, verbatim as in its ApplicationInformation (``FB=…;…``): the consent
    # hop asks for the narrowest of them that covers a CDS request (bridge.custodian_scopes.narrowest_scope).
    scopes: tuple[str, ...] = ()

    def __repr__(self) -> str:  # never print the secret
        return f"CustodianConfig(id={self.id!r}, resource_url={self.resource_url!r}, client_id={self.client_id!r})"


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
    # A custodian's 202 Accepted waits this long for its BatchList before the workers poll again (issue 6 item 3).
    deferred_timeout_seconds: int = 3600
    # How long a running job's lease lasts; its worker renews it every third of that. A job whose worker was killed
    # is taken over by the next run once its lease ran out (workers.jobs).
    job_lease_seconds: int = 60
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
    "GREENBRIDGE_OPERATOR_USER": "operator_user",
    "GREENBRIDGE_OPERATOR_PASSWORD": "operator_password",
    "GREENBRIDGE_JSON_LOGS": "json_logs",
    "GREENBRIDGE_TRUST_REQUEST_ID": "trust_request_id",
    "GREENBRIDGE_METRICS_DIR": "metrics_dir",
}
_INT_KEYS = {
    "max_body_bytes", "message_max_bytes", "access_token_seconds", "refresh_token_seconds",
    "authorization_code_seconds", "par_seconds", "auth_failures_per_minute", "auth_address_failures_per_minute",
    "page_size", "deferred_timeout_seconds", "job_lease_seconds",
}
_STR_KEYS = {"issuer", "database_url", "redis_url", "secret_key", "timezone", "segment_history", "operator_user",
             "operator_password"}
_BOOL_KEYS = {"json_logs", "trust_request_id"}
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


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
                if word not in _TRUE + _FALSE:
                    raise ConfigError(f"environment: {name} must be 1/true/yes/on or 0/false/no/off, got "
                                      f"{environ[name]!r}")
                values[key] = word in _TRUE
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
                customers.append(TestCustomer(str(entry["customer_id"]), str(entry["name"]), str(entry["password"])))
            except KeyError as missing:
                raise ConfigError(f"{where}: missing {missing}") from None
        values["test_customers"] = tuple(customers)
    return values


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
    """A [[custodians]] table: endpoints, credentials, allowed hosts, optional SFTP and coverage entry."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be a table")
    entry = dict(entry)
    known = {"id", "name", "client_id", "client_secret", "client_secret_env", "hosts", "application_information_url",
             "sftp", "coverage", "scopes", *_CUSTODIAN_URLS}
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
    # The configured endpoints' own hosts are always allowed; `hosts` adds others (e.g. a separate bulk host).
    all_hosts = tuple(dict.fromkeys([*(urlsplit(u).hostname for u in (*urls.values(), info_url) if u), *hosts]))
    scopes = entry.get("scopes", [])
    if not isinstance(scopes, list) or not all(isinstance(s, str) and s.strip() for s in scopes):
        raise ConfigError(f"{where}: scopes must be an array of the custodian's scope strings (FB=…)")
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
        id=entry["id"], name=entry["name"], client_id=entry["client_id"], client_secret=secret, hosts=all_hosts,
        application_information_url=info_url, sftp=sftp, coverage=coverage,
        scopes=tuple(s.strip() for s in scopes), **urls,
    )


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
