"""The Connect My Data third-party client: OAuth 2 toward a data custodian and GETs of ESPI resources.

ESPI REQ.21 §3 (REST API), §6.4 (OAuth flows used by CMD), FB_37 (query parameters), FB_39 and the HTTP 202
pattern (deferred delivery). Authlib's httpx client does the OAuth 2 requests (RFC 6749 authorization code with
state, refresh, client credentials); this module adds what ESPI adds:

* the token response's ``resourceURI``, ``authorizationURI`` and ``customerResourceURI`` are kept;
* every URL fetched (redirects included) must be one of the custodian's own resources, under a configured
  endpoint with the same scheme, host and port (espi.origins; a notification or a token response could otherwise
  make us send a bearer token anywhere, another port of the custodian's host included): :class:`ForeignURLError`
  before any connection is made;
* resource bodies are streamed to a file (Batch feeds can be gigabytes), then parsed from there;
* a ``202 Accepted`` is a :class:`Deferred` answer, not an error: the custodian will announce the data with a
  BatchList notification;
* every HTTP exchange (OAuth and resources) is reported to an optional ``observer(method, url, status, seconds)``:
  the status and the time until the answer's headers, or status None when no answer came (the caller's metrics).

Plain parameters in, plain results out; nothing here reads configuration or touches the store.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx2
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.httpx_client import OAuth2Client
from authlib.oauth2.rfc6749.errors import OAuth2Error

from espi.errors import EspiError
from espi.origins import CustodianOrigins

# What the OAuth calls raise: the custodian's RFC 6749 error, a state mismatch, or a transport failure.
_OAUTH_ERRORS = (OAuthError, OAuth2Error, httpx2.HTTPError, ValueError)

QUERY_PARAMETERS = ("published-min", "published-max", "updated-min", "updated-max", "max-results", "start-index",
                    "depth")


#: HTTP statuses of a custodian's answer worth asking again (RFC 9110 §15.5.9 408, RFC 6585 §4 429); every other
#: 4xx means the request itself is refused. Every 5xx is worth asking again, but for methods (below).
TRANSIENT_CLIENT_ERRORS = frozenset({408, 429})
#: The custodian does not offer the method on the resource at all (RFC 9110 §15.5.6 405, §15.6.2 501), e.g. a
#: DELETE Authorization (FB_44 is optional): asking again cannot help.
UNSUPPORTED_METHOD = frozenset({405, 501})
#: RFC 6749 §5.2 / §4.1.2.1 error codes meaning "try again later" rather than "refused".
TRANSIENT_OAUTH_ERRORS = frozenset({"temporarily_unavailable", "server_error"})


class CustodianError(EspiError):
    """The custodian answered with an error (the HTTP status and a short excerpt of the body); ``retry_after`` is
    its Retry-After header, verbatim (RFC 9110 §10.2.3: seconds or an HTTP date), when it sent one.

    :attr:`transient` says what the answer means for asking again: no answer at all (timeout, connection refused
    or reset: ``status`` None), 408, 429 and 5xx are transient; other 4xx, 405/501 (:attr:`not_supported`) and an
    OAuth error code other than ``temporarily_unavailable``/``server_error`` are not."""

    def __init__(self, message: str, status: int | None = None, retry_after: str | None = None,
                 oauth_error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.oauth_error = oauth_error  # the RFC 6749 §5.2 error code of a token endpoint answer

    @property
    def not_supported(self) -> bool:
        return self.status in UNSUPPORTED_METHOD

    @property
    def transient(self) -> bool:
        if self.oauth_error is not None:
            return self.oauth_error in TRANSIENT_OAUTH_ERRORS
        if self.status is None:
            return True
        if self.not_supported:
            return False
        return self.status >= 500 or self.status in TRANSIENT_CLIENT_ERRORS


class ForeignURLError(CustodianError):
    """A URL that is not one of the custodian's resources (espi.origins): never fetched, never sent a token."""

    @property
    def transient(self) -> bool:
        return False


@dataclass(frozen=True)
class CustodianEndpoints:
    """A custodian's OAuth endpoints and client credentials, and where its resources lie: ``origins`` (default:
    under ``resource_url`` only). The token and authorize URLs are configured, never taken from what we are told."""

    resource_url: str
    authorize_url: str
    token_url: str
    client_id: str
    client_secret: str = field(repr=False)
    origins: CustodianOrigins | None = None

    def refusal(self, url: str) -> str | None:
        """Why ``url`` is not fetched with this custodian's tokens, or None (an http(s) URL of its resources)."""
        if urlsplit(url).scheme.lower() not in ("http", "https"):
            return "not an http(s) URL"
        origins = self.origins or CustodianOrigins.of([self.resource_url])
        return origins.refusal(url)

    def allowed(self, url: str) -> bool:
        return self.refusal(url) is None

    def check(self, url: str) -> str:
        reason = self.refusal(url)
        if reason is not None:
            raise ForeignURLError(f"{_loggable(url)!r} is not one of the custodian's resources ({reason}); "
                                  "not fetched")
        return url


def _loggable(url: str) -> str:
    """``url`` without user information, query or fragment (errors end up in logs and job rows)."""
    head = url.split("#", 1)[0].split("?", 1)[0]
    try:
        parts = urlsplit(head)
        return urlunsplit((parts.scheme, parts.netloc.rpartition("@")[2], parts.path, "", ""))[:300]
    except ValueError:
        return head[:300]


@dataclass(frozen=True)
class CustodianTokens:
    """A custodian's token response (ESPI §6.4): the OAuth fields plus the ESPI resource URIs."""

    access_token: str = field(repr=False)
    refresh_token: str | None = field(repr=False, default=None)
    expires_at: datetime | None = None
    scope: str = ""
    resource_uri: str | None = None
    authorization_uri: str | None = None
    customer_resource_uri: str | None = None

    @classmethod
    def from_response(cls, body: Mapping[str, Any]) -> CustodianTokens:
        if not body.get("access_token"):
            raise CustodianError("token response without access_token")
        expires_at = None
        if body.get("expires_at"):
            expires_at = datetime.fromtimestamp(int(body["expires_at"]), UTC)
        elif body.get("expires_in"):
            expires_at = datetime.now(UTC).replace(microsecond=0) + _seconds(body["expires_in"])
        return cls(
            access_token=body["access_token"], refresh_token=body.get("refresh_token"), expires_at=expires_at,
            scope=body.get("scope", "") or "", resource_uri=body.get("resourceURI"),
            authorization_uri=body.get("authorizationURI"), customer_resource_uri=body.get("customerResourceURI"),
        )


def _seconds(value: Any):
    from datetime import timedelta

    return timedelta(seconds=int(value))


@dataclass(frozen=True)
class Fetched:
    """A resource body saved to ``path`` (200 OK)."""

    url: str
    path: Path
    content_type: str
    size: int


@dataclass(frozen=True)
class Deferred:
    """``202 Accepted``: the custodian queued the request and will notify (ESPI §4.3)."""

    url: str
    retry_after: int | None = None


def with_query(url: str, **params: Any) -> str:
    """``url`` with FB_37 query parameters added; datetimes are written ``YYYY-MM-DDThh:mm:ssZ`` (OpenESPI rejects
    fractions and offsets)."""
    extra = []
    for name, value in params.items():
        name = name.replace("_", "-")
        if name not in QUERY_PARAMETERS:
            raise ValueError(f"not an ESPI query parameter: {name}")
        if value is None:
            continue
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError(f"{name} needs a UTC-aware datetime")
            value = value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        extra.append((name, str(value)))
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(extra, safe=":")) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


#: ``observer(method, url, status, seconds)``: one HTTP exchange with the custodian (status None: no answer).
Observer = Callable[[str, str, "int | None", float], None]
_STARTED, _ANSWERED = "greenbridge.started", "greenbridge.answered"


class CustodianClient:
    """One custodian's OAuth client and resource fetcher (synchronous; the workers call it from Celery tasks)."""

    def __init__(self, endpoints: CustodianEndpoints, *, redirect_uri: str | None = None, timeout: float = 60,
                 download_dir: str | os.PathLike | None = None, observer: Observer | None = None) -> None:
        self.endpoints = endpoints
        self.redirect_uri = redirect_uri
        self.timeout = timeout
        self.download_dir = Path(download_dir) if download_dir else Path(tempfile.gettempdir())
        self.observer = observer
        endpoints.check(endpoints.resource_url)

    # ----- what each exchange reports (httpx event hooks: every request, redirects and token calls included) -----
    def _hooks(self) -> dict[str, Any]:
        if self.observer is None:
            return {}

        def started(request: httpx2.Request) -> None:
            request.extensions[_STARTED] = time.perf_counter()

        def answered(response: httpx2.Response) -> None:
            request = response.request
            request.extensions[_ANSWERED] = True
            self._report(request.method, str(request.url), response.status_code, request.extensions.get(_STARTED))

        return {"event_hooks": {"request": [started], "response": [answered]}}

    def _report(self, method: str, url: str, status: int | None, started: float | None) -> None:
        if self.observer is None:
            return
        with contextlib.suppress(Exception):  # a broken observer must never fail the exchange it observes
            self.observer(method, url, status, time.perf_counter() - started if started is not None else 0.0)

    def _no_answer(self, method: str, url: str, error: BaseException, started: float) -> None:
        """A transport failure before any answer (so no hook ran) is reported with status None."""
        if not isinstance(error, httpx2.TransportError):
            return
        try:
            request = error.request
        except RuntimeError:
            request = None
        if request is None or not request.extensions.get(_ANSWERED):
            self._report(method, url, None, started)

    def _oauth(self, **kwargs: Any) -> OAuth2Client:
        return OAuth2Client(self.endpoints.client_id, self.endpoints.client_secret,
                            token_endpoint_auth_method="client_secret_basic", timeout=self.timeout, **self._hooks(),
                            **kwargs)

    # ----- OAuth (ESPI §6.4) -----
    def authorization_url(self, scope: str, state: str) -> str:
        """The custodian's authorize URL for ``scope`` (a legacy scope string) with our ``state``."""
        with self._oauth(redirect_uri=self.redirect_uri, scope=scope) as client:
            url, _state = client.create_authorization_url(self.endpoints.authorize_url, state=state)
        return url

    def exchange_code(self, callback_url: str, state: str) -> CustodianTokens:
        """Exchange the code of the custodian's redirect (``callback_url``); checks ``state`` (CSRF)."""
        parts = urlsplit(callback_url)
        params = dict(pair.split("=", 1) for pair in parts.query.split("&") if "=" in pair)
        if "error" in params:
            raise CustodianError(f"the custodian refused the authorization: {params.get('error')}")
        started = time.perf_counter()
        with self._oauth(redirect_uri=self.redirect_uri, state=state) as client:
            try:
                token = client.fetch_token(self.endpoints.token_url, authorization_response=callback_url)
            except _OAUTH_ERRORS as error:
                self._no_answer("POST", self.endpoints.token_url, error, started)
                raise CustodianError(f"code exchange failed: {error}") from None
        return CustodianTokens.from_response(token)

    def refresh(self, refresh_token: str) -> CustodianTokens:
        started = time.perf_counter()
        with self._oauth() as client:
            try:
                token = client.refresh_token(self.endpoints.token_url, refresh_token=refresh_token)
            except _OAUTH_ERRORS as error:
                self._no_answer("POST", self.endpoints.token_url, error, started)
                code = getattr(error, "error", None)
                raise CustodianError(f"token refresh failed: {error}",
                                     oauth_error=code if isinstance(code, str) else None) from None
        return CustodianTokens.from_response(token)

    def client_credentials(self, scope: str | None = None) -> CustodianTokens:
        """The third party's client token (``client_access_token``: Authorization resources, Batch/Bulk)."""
        started = time.perf_counter()
        with self._oauth(scope=scope) as client:
            try:
                token = client.fetch_token(self.endpoints.token_url, grant_type="client_credentials")
            except _OAUTH_ERRORS as error:
                self._no_answer("POST", self.endpoints.token_url, error, started)
                code = getattr(error, "error", None)
                raise CustodianError(f"client_credentials token failed: {error}",
                                     oauth_error=code if isinstance(code, str) else None) from None
        return CustodianTokens.from_response(token)

    # ----- resources (ESPI §3) -----
    def resource(self, path: str) -> str:
        """An absolute URL for ``path`` relative to the resource endpoint (``Batch/Subscription/5``)."""
        return self.endpoints.resource_url.rstrip("/") + "/" + path.lstrip("/")

    def get(self, url: str, access_token: str, _hops: int = 0, **query: Any) -> Fetched | Deferred:
        """GET ``url`` with the bearer token, streaming a 200 body to a file; a 202 is :class:`Deferred`."""
        url = self.endpoints.check(with_query(url, **query) if query else url)
        if _hops > 5:
            raise CustodianError(f"GET {url}: too many redirects")
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/atom+xml"}
        fd, name = tempfile.mkstemp(prefix="gb-espi-", suffix=".xml.part", dir=self.download_dir)
        path = Path(name)
        started = time.perf_counter()
        try:
            with os.fdopen(fd, "wb") as out, \
                    httpx2.Client(timeout=self.timeout, follow_redirects=False, **self._hooks()) as http, \
                    http.stream("GET", url, headers=headers) as response:
                if response.status_code == 202:
                    return Deferred(url, _retry_after(response.headers.get("retry-after")))
                if response.status_code in (301, 302, 303, 307, 308):
                    # Redirects are followed only to the custodian's own resources, with the token.
                    location = response.headers.get("location", "")
                    target = str(httpx2.URL(url).join(location))
                    reason = self.endpoints.refusal(target)
                    raise ForeignURLError(f"redirect to {_loggable(target)!r} not followed ({reason})") if reason \
                        else _Redirect(target)
                if response.status_code != 200:
                    excerpt = response.read()[:300].decode("utf-8", "replace")
                    raise CustodianError(f"GET {url} answered {response.status_code}: {excerpt}",
                                         response.status_code, response.headers.get("retry-after"))
                size = 0
                for chunk in response.iter_bytes(1 << 16):
                    out.write(chunk)
                    size += len(chunk)
                content_type = response.headers.get("content-type", "")
            final = path.with_suffix("")  # drop .part: complete
            path.rename(final)
            path = final
            return Fetched(url, final, content_type, size)
        except _Redirect as redirect:
            path.unlink(missing_ok=True)
            return self.get(redirect.target, access_token, _hops + 1)
        except httpx2.HTTPError as error:
            path.unlink(missing_ok=True)
            self._no_answer("GET", url, error, started)
            raise CustodianError(f"GET {url} failed: {error}") from None
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        finally:
            if path.suffix == ".part":
                path.unlink(missing_ok=True)

    def delete(self, url: str, access_token: str) -> int:
        """DELETE ``url`` (e.g. an Authorization, FB_44) with the bearer token; the 2xx status, else CustodianError."""
        url = self.endpoints.check(url)
        started = time.perf_counter()
        try:
            with httpx2.Client(timeout=self.timeout, follow_redirects=False, **self._hooks()) as http:
                response = http.delete(url, headers={"Authorization": f"Bearer {access_token}"})
        except httpx2.HTTPError as error:
            self._no_answer("DELETE", url, error, started)
            raise CustodianError(f"DELETE {url} failed: {error}") from None
        if not 200 <= response.status_code < 300:
            raise CustodianError(f"DELETE {url} answered {response.status_code}: "
                                 f"{response.text[:300]}", response.status_code, response.headers.get("retry-after"))
        return response.status_code

    def subscription(self, subscription_uri: str, access_token: str, **query: Any) -> Fetched | Deferred:
        """``Batch/Subscription/{id}`` (the Authorization's resourceURI): the customer's whole authorised data."""
        return self.get(subscription_uri, access_token, **query)

    def usage_point(self, subscription_uri: str, usage_point_id: str, access_token: str,
                    **query: Any) -> Fetched | Deferred:
        return self.get(f"{subscription_uri.rstrip('/')}/UsagePoint/{usage_point_id}", access_token, **query)

    def application_information(self, url: str, registration_token: str) -> Fetched | Deferred:
        return self.get(url, registration_token)

    def authorizations(self, client_token: str, **query: Any) -> Fetched | Deferred:
        return self.get(self.resource("Authorization"), client_token, **query)

    def authorization(self, url: str, client_token: str) -> Fetched | Deferred:
        return self.get(url, client_token)

    def bulk(self, bulk_id: str, client_token: str, **query: Any) -> Fetched | Deferred:
        return self.get(self.resource(f"Batch/Bulk/{bulk_id}"), client_token, **query)

    def service_status(self, client_token: str) -> Fetched | Deferred:
        return self.get(self.resource("ReadServiceStatus"), client_token)


class _Redirect(Exception):
    def __init__(self, target: str) -> None:
        super().__init__(target)
        self.target = target


def _retry_after(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return max(0, int(value.strip()))
    except ValueError:
        return None
