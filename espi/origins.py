"""Which URIs are a data custodian's own resources (ESPI REQ.21 §3: everything a third party fetches lies under the
custodian's ``{DataCustodianResourceEndpoint}``; §4.1 BatchList URIs; §7 SFTP bulk files).

A custodian's documents and notifications name resources by absolute URI, and a notification can come from anyone
who reaches the notify URL. A URI is acted on only when it lies under an endpoint configured for the custodian: the
same origin (RFC 6454 §4: scheme, host and port, an omitted port being the scheme's default, RFC 3986 §6.2.3) and
a path under the endpoint's path, segment by segment. For ``sftp://`` the endpoint is the configured SFTP server
(its host, and its port when the URI names one: downloads always connect to the configured server) and, when it is
absolute, its remote directory.

:meth:`CustodianOrigins.refusal` is the one check, used wherever a URI we were told about is acted on: the
notification receiver, the workers before each request (redirects included), and URIs read from fetched documents
and token responses before they are stored.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

#: RFC 3986 §6.2.3: a port equal to the scheme's default is the same as none (RFC 9110 §4.2, RFC 4251 for SSH).
DEFAULT_PORTS = {"http": 80, "https": 443, "sftp": 22}
URI_MAX = 4096
_WHITESPACE_OR_CONTROL = re.compile(r"[\s\x00-\x1f\x7f]")


@dataclass(frozen=True)
class Endpoint:
    """An origin and a path prefix: ``https://dc.example/espi/1_1/resource`` → (https, dc.example, 443, path)."""

    scheme: str
    host: str
    port: int
    path: str  # without a trailing slash; "" for the whole origin

    @classmethod
    def of(cls, url: str) -> Endpoint:
        """The endpoint of a configured URL (``ValueError`` when it has no scheme or host)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http, https or sftp URL with a host: {url!r}")
        return cls(scheme, parts.hostname.lower(), parts.port or DEFAULT_PORTS[scheme],
                   posixpath.normpath(unquote(parts.path)).rstrip("/") if parts.path.strip("/") else "")

    def holds(self, scheme: str, host: str, port: int, path: str) -> bool:
        return ((scheme, host, port) == (self.scheme, self.host, self.port)
                and (not self.path or path == self.path or path.startswith(self.path + "/")))

    def __str__(self) -> str:
        return f"{self.scheme}://{self.host}:{self.port}{self.path or '/'}"


@dataclass(frozen=True)
class CustodianOrigins:
    """The endpoints a custodian's resources may lie under: its resource endpoint and any other configured one
    (ApplicationInformation, a separate bulk endpoint) for ``http(s)``, and its SFTP server for ``sftp``."""

    endpoints: tuple[Endpoint, ...]
    sftp: Endpoint | None = None

    @classmethod
    def of(cls, urls: Iterable[str], sftp_host: str | None = None, sftp_port: int = 22,
           sftp_remote_dir: str = "") -> CustodianOrigins:
        sftp = None
        if sftp_host:
            remote = sftp_remote_dir if sftp_remote_dir.startswith("/") else ""
            sftp = Endpoint("sftp", sftp_host.lower(), sftp_port, posixpath.normpath(remote).rstrip("/")
                            if remote.strip("/") else "")
        return cls(tuple(dict.fromkeys(Endpoint.of(url) for url in urls if url)), sftp)

    def refusal(self, uri: str) -> str | None:
        """Why ``uri`` is not one of the custodian's resources, or None when it is."""
        if len(uri) > URI_MAX:
            return f"URI longer than {URI_MAX} characters"
        if _WHITESPACE_OR_CONTROL.search(uri):
            return "URI contains whitespace or control characters"
        try:
            parts = urlsplit(uri)
            host = (parts.hostname or "").lower()
            port = parts.port
        except ValueError:
            return "malformed URI"
        scheme = parts.scheme.lower()
        if scheme not in DEFAULT_PORTS:
            return f"scheme {scheme or '(none)'} is not allowed"
        if parts.password is not None or (parts.username is not None and scheme != "sftp"):
            # espi.md §7: an sftp URI may name the SFTP user (the configured one logs in); never a password
            return "URI carries user information"
        if not host:
            return "URI has no host"
        path = unquote(parts.path)
        if any(segment in (".", "..") for segment in path.split("/")) or "\\" in path:
            return "path has dot segments"
        if scheme == "sftp":
            if self.sftp is None:
                return "custodian has no SFTP configuration"
            # Downloads always go to the configured server; a URI without a port names it whatever port it listens
            # on (custodians announce sftp://host/path), one with a port must name that port.
            if host != self.sftp.host or (port is not None and port != self.sftp.port):
                return f"{host}:{port or DEFAULT_PORTS[scheme]} is not the custodian's SFTP server"
            if not self.sftp.holds(scheme, host, self.sftp.port, posixpath.normpath(path)):
                return "path is not under the custodian's SFTP remote_dir"
            return None
        port = port or DEFAULT_PORTS[scheme]
        origin = (scheme, host, port)
        same_origin = [e for e in self.endpoints if (e.scheme, e.host, e.port) == origin]
        if not same_origin:
            return f"origin {scheme}://{host}:{port} is not the custodian's"
        if not any(e.holds(scheme, host, port, posixpath.normpath(path) if path else "/") for e in same_origin):
            return "path is not under the custodian's resource endpoint"
        return None

    def allows(self, uri: str) -> bool:
        return self.refusal(uri) is None
