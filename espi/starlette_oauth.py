"""Starlette ⇄ Authlib adapters (Authlib's server core is synchronous and framework-neutral).

The body is read in async code first; these objects carry the already-parsed parameters into the threadpool where
the Authlib server runs (ecosystem notes §1.2). Shared by both authorization servers we run: the CDS gateway
(gateway/oauth) and the sandbox custodian (sandbox/); it lives in espi, the bottom layer, the one package both may
import.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from urllib.parse import unquote_plus

from authlib.oauth2.rfc6749.requests import OAuth2Payload, OAuth2Request
from starlette.responses import JSONResponse, Response

_BASE64 = re.compile(r"[A-Za-z0-9+/]+={0,2}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class MalformedBasicAuth(ValueError):
    """An ``Authorization: Basic`` header that is not credentials as RFC 6749 §2.3.1 encodes them."""


def basic_credentials(headers: Mapping[str, str]) -> tuple[str, str] | None:
    """``client_secret_basic`` (RFC 6749 §2.3.1, RFC 7617): the (client_id, client_secret) of an ``Authorization:
    Basic`` header; None when the request has no Basic credentials; :class:`MalformedBasicAuth` when the header is
    Basic but not base64 of UTF-8 ``id:secret`` with both parts form-urlencoded, or holds control characters.

    The one parser of Basic credentials for both authorization servers (Authlib's decodes without checking, so
    bytes that are not UTF-8 used to raise out of it).
    """
    header = headers.get("Authorization") or headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    token = token.strip()
    if not _BASE64.fullmatch(token) or len(token) % 4:
        raise MalformedBasicAuth("the Basic credentials are not base64")
    try:
        decoded = base64.b64decode(token, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise MalformedBasicAuth("the Basic credentials are not base64 of UTF-8 text") from None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        raise MalformedBasicAuth("the Basic credentials have no ':' between client_id and client_secret")
    try:
        client_id, secret = (unquote_plus(part, errors="strict") for part in (client_id, secret))
    except UnicodeDecodeError:
        raise MalformedBasicAuth("the client_id or client_secret has a percent-escape that is not UTF-8") from None
    if _CONTROL.search(client_id) or _CONTROL.search(secret):
        raise MalformedBasicAuth("the client_id or client_secret contains a control character")
    return client_id, secret


class FormPayload(OAuth2Payload):
    """Query and form parameters merged (form wins), keeping every value for duplicate detection."""

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        datalist: defaultdict[str, list] = defaultdict(list)
        for key, value in pairs:
            datalist[key].append(value)
        self._datalist = datalist
        self._data = {key: values[0] for key, values in datalist.items()}

    @property
    def data(self) -> dict[str, str]:
        return self._data

    @property
    def datalist(self) -> defaultdict[str, list]:
        return self._datalist


class GatewayRequest(OAuth2Request):
    """An OAuth2Request built from parameters already read from a Starlette request (or from a stored PAR)."""

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Mapping[str, str],
        *,
        query: Iterable[tuple[str, str]] = (),
        form: Iterable[tuple[str, str]] = (),
        remote_addr: str = "",
    ) -> None:
        super().__init__(method, uri, headers=headers)
        self._query = list(query)
        self._form = list(form)
        self.payload = FormPayload([*self._query, *self._form])
        self.remote_addr = remote_addr
        # Set by the grants and the client authentication for the rest of the request.
        self.credential_id: str | None = None
        self.grant_record = None
        self.grant_created = False
        self.details = None

    @property
    def args(self) -> dict[str, str]:
        return dict(self._query)

    @property
    def form(self) -> dict[str, str]:
        return dict(self._form)


class RedirectResponse(Response):
    """A 302 whose ``location`` Authlib extensions may read and rewrite (RFC 9207 support needs it)."""

    def __init__(self, location: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status_code=302, headers={**(headers or {}), "Location": location})

    @property
    def location(self) -> str:
        return self.headers["location"]

    @location.setter
    def location(self, value: str) -> None:
        self.headers["location"] = value


class StarletteServerMixin:
    """The three AuthorizationServer hooks Authlib leaves to the framework, for Starlette."""

    def create_oauth2_request(self, request):
        if not isinstance(request, GatewayRequest):
            raise TypeError("OAuth requests are built from the already-read body before calling the server")
        return request

    def handle_response(self, status: int, body, headers) -> Response:
        headers = dict(headers or [])
        if status in (301, 302, 303) and "Location" in headers:
            return RedirectResponse(headers.pop("Location"), headers=headers)
        if isinstance(body, dict):
            response = JSONResponse(body, status_code=status, headers=headers)
        else:
            response = Response(body or "", status_code=status, headers=headers)
        response.headers["Cache-Control"] = "no-store"
        response.headers["Pragma"] = "no-cache"
        return response

    def send_signal(self, name, *args, **kwargs) -> None:
        return None
