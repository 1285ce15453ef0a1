"""The demo third party's CDS client: everything over HTTP against the issuer, as any third party would do it.

Discovery (RFC 8414 metadata), dynamic registration (WG1-02 §4) and the Clients and Credentials APIs (§5, §7) to
find the code-flow client, its secret, and to set the redirect URI to the demo's callback (§5.5); PAR with PKCE S256
(RFC 9126, RFC 7636), the code exchange and refresh (RFC 6749 §4.1.3, §6), the Grants API (§8) and the usage
segments listing (WG3-01 §10.7). JSON numbers are read as Decimal.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

import httpx2

SCOPE = "cds_usage_1"
#: At most this many pages of usage segments are read for the chart (a month of hourly data is one or two).
MAX_PAGES = 20


class DemoClientError(Exception):
    """The server answered the demo client with an error (or not at all); the message says which step."""


@dataclass
class Registration:
    """What registration gave the demo third party: the Client Admin client and the code-flow client."""

    admin_id: str
    admin_secret: str
    client_id: str
    client_secret: str
    redirect_uri: str

    def to_json(self) -> dict[str, str]:
        return asdict(self)


def _json(response: httpx2.Response, step: str) -> Any:
    if response.status_code >= 400:
        try:
            body = response.json()
            detail = f"{body.get('error')}: {body.get('error_description')}"
        except ValueError:
            detail = response.text[:200]
        raise DemoClientError(f"{step}: HTTP {response.status_code} {detail}")
    return json.loads(response.text, parse_float=Decimal)


class DemoClient:
    def __init__(self, issuer: str, redirect_uri: str, *, timeout: float = 30.0) -> None:
        self.issuer = issuer.rstrip("/")
        self.redirect_uri = redirect_uri
        self.timeout = timeout
        self._metadata: dict[str, Any] | None = None
        self._admin_tokens: dict[str, tuple[str, float]] = {}

    def _http(self) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(timeout=self.timeout, follow_redirects=False)

    def _own(self, url: str, step: str) -> str:
        """Every URL the demo fetches is this server's: the metadata and ``next`` links are only followed there."""
        if url != self.issuer and not url.startswith(self.issuer + "/"):
            raise DemoClientError(f"{step}: {url!r} is not on this server ({self.issuer})")
        return url

    async def _call(self, step: str, method: str, url: str, **kwargs: Any) -> Any:
        url = self._own(url, step)
        try:
            async with self._http() as http:
                response = await http.request(method, url, **kwargs)
        except httpx2.HTTPError as error:
            raise DemoClientError(f"{step}: {self.issuer} did not answer ({type(error).__name__})") from None
        return _json(response, step)

    async def metadata(self) -> dict[str, Any]:
        if self._metadata is None:
            self._metadata = await self._call("discovery", "GET",
                                              f"{self.issuer}/.well-known/oauth-authorization-server")
        return self._metadata

    async def register(self, client_name: str) -> Registration:
        meta = await self.metadata()
        registered = await self._call("registration", "POST", meta["registration_endpoint"], json={
            "scope": f"cds_client_admin {SCOPE}", "client_name": client_name})
        admin = (registered["client_id"], registered["client_secret"])
        token = await self._admin_token(*admin)
        headers = {"Authorization": f"Bearer {token}"}
        clients = (await self._call("client listing", "GET", meta["cds_clients_api"], headers=headers))["clients"]
        usage = next(c for c in clients if SCOPE in c["scope"].split())
        credentials = await self._call("credential listing", "GET", meta["cds_credentials_api"], headers=headers,
                                       params={"client_ids": usage["client_id"]})
        secret = credentials["credentials"][0]["client_secret"]
        # The server created the client with its own default redirect URI; the demo receives the code itself.
        await self._call("client update", "PUT", f"{meta['cds_clients_api']}/{usage['client_id']}", headers=headers,
                         json={**_plain(usage), "redirect_uris": [self.redirect_uri],
                               "cds_default_redirect_uri": self.redirect_uri})
        return Registration(admin[0], admin[1], usage["client_id"], secret, self.redirect_uri)

    async def _admin_token(self, admin_id: str, admin_secret: str) -> str:
        cached = self._admin_tokens.get(admin_id)
        if cached and cached[1] > time.monotonic() + 30:
            return cached[0]
        meta = await self.metadata()
        answer = await self._call("client admin token", "POST", meta["token_endpoint"], auth=(admin_id, admin_secret),
                                  data={"grant_type": "client_credentials", "scope": "cds_client_admin"})
        self._admin_tokens[admin_id] = (answer["access_token"], time.monotonic() + int(answer["expires_in"]))
        return answer["access_token"]

    async def push(self, registration: Registration, details: list[dict[str, Any]]) -> dict[str, str]:
        """PAR with PKCE S256; returns the browser's authorize URL, the verifier and the state to keep."""
        meta = await self.metadata()
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        state = secrets.token_urlsafe(24)
        pushed = await self._call(
            "pushed authorization request", "POST", meta["pushed_authorization_request_endpoint"],
            auth=(registration.client_id, registration.client_secret),
            data={"response_type": "code", "client_id": registration.client_id,
                  "redirect_uri": registration.redirect_uri, "scope": SCOPE, "state": state,
                  "code_challenge": challenge, "code_challenge_method": "S256",
                  "authorization_details": json.dumps(details)})
        query = urlencode({"client_id": registration.client_id, "request_uri": pushed["request_uri"]})
        return {"authorize_url": f"{meta['authorization_endpoint']}?{query}", "verifier": verifier, "state": state}

    async def exchange(self, registration: Registration, code: str, verifier: str) -> dict[str, Any]:
        meta = await self.metadata()
        tokens = await self._call("code exchange", "POST", meta["token_endpoint"],
                                  auth=(registration.client_id, registration.client_secret),
                                  data={"grant_type": "authorization_code", "code": code,
                                        "redirect_uri": registration.redirect_uri, "code_verifier": verifier})
        return _kept(tokens)

    async def refresh(self, registration: Registration, refresh_token: str) -> dict[str, Any]:
        meta = await self.metadata()
        tokens = await self._call("token refresh", "POST", meta["token_endpoint"],
                                  auth=(registration.client_id, registration.client_secret),
                                  data={"grant_type": "refresh_token", "refresh_token": refresh_token})
        return _kept(tokens)

    async def grant(self, registration: Registration, grant_id: str) -> dict[str, Any]:
        meta = await self.metadata()
        token = await self._admin_token(registration.admin_id, registration.admin_secret)
        return await self._call("grant", "GET", f"{meta['cds_grants_api']}/{grant_id}",
                                headers={"Authorization": f"Bearer {token}"})

    async def usage_segments(self, access_token: str) -> tuple[list[dict[str, Any]], list[str]]:
        """Every usage segment the token reads (up to :data:`MAX_PAGES` pages), and each page's raw JSON text."""
        meta = await self.metadata()
        url: str | None = meta["cds_usagesegments_api"]
        segments: list[dict[str, Any]] = []
        pages: list[str] = []
        try:
            async with self._http() as http:
                while url and len(pages) < MAX_PAGES:
                    response = await http.get(self._own(url, "usage segments"),
                                              headers={"Authorization": f"Bearer {access_token}"})
                    body = _json(response, "usage segments")
                    pages.append(response.text)
                    segments += body["usage_segments"]
                    url = body.get("next")
        except httpx2.HTTPError as error:
            raise DemoClientError(f"usage segments: {self.issuer} did not answer ({type(error).__name__})") from None
        return segments, pages


def _kept(tokens: dict[str, Any]) -> dict[str, Any]:
    """What the demo keeps of a token response (JSON-ready: the session store writes it)."""
    return {"access_token": tokens["access_token"], "refresh_token": tokens.get("refresh_token"),
            "expires_at": time.time() + int(tokens.get("expires_in", 3600)),
            "grant_ids": list(tokens.get("cds_grant_ids") or []),
            "authorization_details": json.loads(json.dumps(tokens.get("authorization_details") or [], default=str))}


def _plain(client: dict[str, Any]) -> dict[str, Any]:
    """A Client object as JSON-ready data (numbers read as Decimal go back as JSON numbers)."""
    return json.loads(json.dumps(client, default=lambda value: int(value) if value == int(value) else str(value)))
