"""The sandbox data custodian as a Starlette application: ``create_sandbox_app(config)``.

``uvicorn --factory sandbox.app:create_sandbox_app`` builds the configuration from the environment
(``GREENBRIDGE_SANDBOX_CONFIG`` and ``GREENBRIDGE_SANDBOX_*``, see :mod:`sandbox.config`). Endpoints, all below
the path of ``base_url``:

* ``GET /`` (home page: endpoints, customers and passwords, authorizations, notifications), ``GET /healthz``,
  ``GET /sandbox.json`` (the same as JSON), ``POST /sandbox/customers/{id}/advance`` (a generated customer's data
  grows by ``days``), ``POST /sandbox/authorizations/{id}/revoke`` (the customer revokes at the custodian),
  ``POST /sandbox/outage`` (the next requests of the resource API answer 503 or 429);
* ``GET|POST /oauth/authorize`` (sign-in and consent page), ``POST /oauth/token``;
* ``/espi/1_1/resource/…``: the ESPI REST API (:func:`resource`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
import math
import os
import re
import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

from authlib.oauth2 import OAuth2Error
from lxml import etree
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.templating import Jinja2Templates

from espi import authorization as espi_authorization
from espi import usage as espi_usage
from espi.atom import FeedReader
from espi.errors import EspiError
from espi.namespaces import local_name
from espi.notification import normalized_query_time
from espi.starlette_oauth import GatewayRequest
from espi.xmlsafe import secure_parse
from sandbox import data as sandbox_data
from sandbox.config import SandboxConfig, load_sandbox_config
from sandbox.data import Customer, DataSet, EntryRecord
from sandbox.notify import Deferrals, Notifier
from sandbox.oauth import SandboxOAuth, SandboxUser, describe_scope, offered_scope_for
from sandbox.resources import (
    ATOM_MEDIA_TYPE,
    INVALID_QUERY,
    Query,
    QueryError,
    bare_document,
    batch_entries,
    entry_document,
    feed_document,
    own_entry,
    parse_query,
    resource_element,
)
from sandbox.store import (
    ACTIVE,
    DENIED,
    REVOKED,
    AuthorizationRecord,
    Registration,
    Store,
    TokenRecord,
    is_customer_scope,
)

log = logging.getLogger("greenbridge.sandbox")
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
OAUTH_PARAMETERS = ("response_type", "client_id", "redirect_uri", "scope", "state", "code_challenge",
                    "code_challenge_method")
TICKET_SECONDS = 30 * 60
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]+")
#: the first ``Subscription/{id}`` path segment pair of an href
_SUBSCRIPTION_SEGMENT = re.compile(r"(^|/)Subscription/[^/?#]+")


@dataclass
class Outage:
    """The next ``remaining`` ESPI resource requests are answered ``status`` with ``Retry-After`` (a custodian's
    back end down, or throttling: the transient failures of the field)."""

    status: int
    remaining: int
    retry_after: int

    def as_json(self) -> dict[str, int]:
        return {"status": self.status, "remaining": self.remaining, "retry_after": self.retry_after}


@dataclass
class Sandbox:
    """Everything a route needs, built once per application."""

    config: SandboxConfig
    store: Store
    oauth: SandboxOAuth
    notifier: Notifier
    deferrals: Deferrals
    secret: bytes
    #: Batch answers being held for ``response_delay`` right now (shown in /sandbox.json)
    held_responses: int = 0
    #: An outage of the resource API set through ``POST /sandbox/outage`` (None: the API answers)
    outage: Outage | None = None

    @property
    def resource(self) -> str:
        return self.config.resource_endpoint

    # ----- notifications -----
    def registration_of(self, client_id: str) -> Registration | None:
        return self.store.registrations.get(client_id)

    def notify(self, client_id: str, uris: list[str], reason: str, delay: float = 0.0, before=None) -> None:
        registration = self.registration_of(client_id)
        if registration is None or not registration.party.notify_uri:
            if before is not None:
                before()
            return
        self.notifier.notify(registration.party.notify_uri, uris, reason, delay, before)

    def announce_new_data(self, customer: Customer, changed: list[EntryRecord]) -> list[str]:
        """BatchLists for the subscriptions ``changed`` entries belong to (notify_on_new_data)."""
        if not changed or not self.config.notify_on_new_data:
            return []
        low, high = sandbox_data.window(changed)
        touched = {r.usage_point for r in changed}
        by_client: dict[str, list[str]] = {}
        for subscription in self.store.subscriptions_of_customer(customer):
            positions = {customer.usage.usage_point_position(u) for u in subscription.usage_points}
            if None not in touched and not (touched & positions):
                continue
            uris = by_client.setdefault(subscription.client_id, [])
            if subscription.bulk_ids:
                for bulk_id in subscription.bulk_ids:
                    uris.append(self.bulk_uri(subscription.client_id, bulk_id, write=True))
                continue
            uri = f"{self.resource}/Batch/Subscription/{subscription.id}"
            if self.config.notify_window and low is not None and high is not None:
                uri += (f"?published-min={normalized_query_time(low)}"
                        f"&published-max={normalized_query_time(high, ceil=True)}")
            uris.append(uri)
        for client_id, uris in by_client.items():
            self.notify(client_id, uris, "new data")
        return [u for uris in by_client.values() for u in uris]

    # ----- bulk -----
    def bulk_file(self, client_id: str, bulk_id: str) -> Path:
        return Path(self.config.bulk_dir) / _SAFE_NAME.sub("-", client_id) / f"{_SAFE_NAME.sub('-', bulk_id)}.xml"

    def bulk_uri(self, client_id: str, bulk_id: str, write: bool) -> str:
        """Where the third party gets bulk set ``bulk_id``: the sftp:// file when SFTP is configured, else REST."""
        if write and self.config.bulk_dir is not None:
            self.write_bulk(client_id, bulk_id, Query())
        if self.config.bulk_dir is not None and self.config.sftp_uri:
            relative = self.bulk_file(client_id, bulk_id).relative_to(Path(self.config.bulk_dir)).as_posix()
            return f"{self.config.sftp_uri.rstrip('/')}/{relative}"
        return f"{self.resource}/Batch/Bulk/{bulk_id}"

    def bulk_document(self, client_id: str | None, bulk_id: str, query: Query) -> bytes:
        """The bulk feed: every subscription in bulk set ``bulk_id``, its entries' hrefs under its own id; with
        ``href_style`` "retail_customer", each entry (by ``self`` href) once, however many subscriptions hold it."""
        entries: list[bytes] = []
        seen: set[bytes] = set()
        for record in sorted(self.store.authorizations.values(), key=lambda a: a.id):
            if record.role != "access" or not record.active or bulk_id not in record.bulk_ids:
                continue
            if client_id is not None and record.client_id != client_id:
                continue
            for entry in self.bulk_entries(record, subscription_entries(record, None, query)):
                if self.config.href_style == "retail_customer":
                    # the customer's entry is written the same whatever subscription holds it: once is enough
                    digest = hashlib.sha256(entry).digest()
                    if digest in seen:
                        continue
                    seen.add(digest)
                entries.append(entry)
        return feed_document(f"{self.resource}/Batch/Bulk/{bulk_id}", "Bulk", "Green Button Bulk Feed", entries)

    def bulk_entries(self, record: AuthorizationRecord, entries: list[bytes]) -> list[bytes]:
        """One subscription's entries as a Batch answer or a bulk feed carries them (one identity per resource,
        however it is delivered).

        ``href_style`` "subscription", like OpenESPI: every href names the subscription. The source's
        ``…/Subscription/{x}/…`` becomes ``…/Subscription/{record.id}/…``; hrefs of UsagePoint data that name no
        subscription get a ``Subscription/{record.id}/`` prefix (after the resource endpoint, else the host); other
        hrefs (ReadingType, LocalTimeParameters: shared resources) get an ``Authorization/{record.id}/`` prefix, so
        that two customers' ``…/ReadingType/1`` never collide.

        ``href_style`` "retail_customer": every href is below the customer, ``{resource}/RetailCustomer/{n}/…``,
        naming no subscription: the source's ``…/Subscription/{x}`` (and what precedes it) is replaced by it, other
        hrefs not already below ``RetailCustomer/{n}`` are prefixed with it.

        The same rewrite applies to every link (self, up, related), so the link graph resolves as before; links to
        web pages (``text/…``, e.g. the GBA certificate) and the entries' content and ids are left as they are."""
        if self.config.href_style == "retail_customer":
            return self._retail_customer_entries(record, entries)
        subscription = str(record.id)
        trees = [secure_parse(xml, name=f"subscription {record.id}").getroot() for xml in entries]
        usage_hrefs: set[str] = set()
        for entry in trees:
            kinds = {local_name(c.tag) for c in entry.iterfind("{*}content/*") if isinstance(c.tag, str)}
            if kinds & sandbox_data.USAGE_POINT_KINDS:
                usage_hrefs.update((link.get("href") or "").strip() for link in entry.iterfind("{*}link")
                                   if link.get("rel") in ("self", "up"))

        def prefixed(href: str, prefix: str) -> str:
            if href.startswith(self.resource + "/"):
                return f"{self.resource}/{prefix}{href[len(self.resource):]}"
            parts = urlsplit(href)
            if parts.scheme and parts.netloc:
                head = f"{parts.scheme}://{parts.netloc}"
                return f"{head}/{prefix}/{href[len(head):].lstrip('/')}"
            return f"/{prefix}{href}" if href.startswith("/") else f"{prefix}/{href}"

        def rewrite(href: str) -> str:
            named, count = _SUBSCRIPTION_SEGMENT.subn(rf"\g<1>Subscription/{subscription}", href, count=1)
            if count:
                return named
            if href in usage_hrefs:
                return prefixed(href, f"Subscription/{subscription}")
            return prefixed(href, f"Authorization/{subscription}")

        rewritten = []
        for entry in trees:
            for link in entry.iterfind("{*}link"):
                href = (link.get("href") or "").strip()
                if href and not (link.get("type") or "").startswith("text/"):
                    link.set("href", rewrite(href))
            rewritten.append(etree.tostring(entry, encoding="UTF-8"))
        return rewritten

    def _retail_customer_entries(self, record: AuthorizationRecord, entries: list[bytes]) -> list[bytes]:
        customer = f"RetailCustomer/{record.customer.number}"
        below = f"{self.resource}/{customer}"

        def rewrite(href: str) -> str:
            found = _SUBSCRIPTION_SEGMENT.search(href)
            if found is not None:
                return below + href[found.end():]
            if re.search(rf"(^|/){customer}(/|$)", href):
                return href
            if href.startswith(self.resource + "/"):
                return below + href[len(self.resource):]
            parts = urlsplit(href)
            tail = href[len(f"{parts.scheme}://{parts.netloc}"):] if parts.scheme and parts.netloc else href
            return f"{below}/{tail.lstrip('/')}"

        rewritten = []
        for xml in entries:
            entry = secure_parse(xml, name=f"subscription {record.id}").getroot()
            for link in entry.iterfind("{*}link"):
                href = (link.get("href") or "").strip()
                if href and not (link.get("type") or "").startswith("text/"):
                    link.set("href", rewrite(href))
            rewritten.append(etree.tostring(entry, encoding="UTF-8"))
        return rewritten

    def write_bulk(self, client_id: str, bulk_id: str, query: Query) -> Path:
        path = self.bulk_file(client_id, bulk_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".xml.part")
        partial.write_bytes(self.bulk_document(client_id, bulk_id, query))
        os.replace(partial, path)
        log.info("bulk feed %s written", path)
        return path

    # ----- sign-in tickets of the authorize page -----
    def ticket(self, login: str, client_id: str, state: str) -> str:
        """A signed sign-in for the consent step, bound to the client and the request's state (no cookie needed)."""
        expires = int(time.time()) + TICKET_SECONDS
        payload = f"{login}\n{expires}\n{_digest(client_id)}\n{_digest(state)}"
        mac = hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest()
        return base64.urlsafe_b64encode(f"{payload}\n{mac}".encode()).decode()

    def check_ticket(self, ticket: str, client_id: str, state: str) -> Customer | None:
        try:
            login, expires, ticket_client, ticket_state, mac = base64.urlsafe_b64decode(ticket).decode().split("\n")
        except (ValueError, UnicodeDecodeError):
            return None
        payload = f"{login}\n{expires}\n{ticket_client}\n{ticket_state}"
        good = hmac.compare_digest(mac, hmac.new(self.secret, payload.encode(), hashlib.sha256).hexdigest())
        if not good or int(expires) < time.time() or (ticket_client, ticket_state) != (_digest(client_id),
                                                                                       _digest(state)):
            return None
        return self.store.customer_by_login(login)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def sandbox_of(request: Request) -> Sandbox:
    return request.app.state.sandbox


# ----------------------------------------------------------------------------------------------------------------
# Responses
# ----------------------------------------------------------------------------------------------------------------
def atom(body: bytes, status: int = 200) -> Response:
    return Response(body, status_code=status, media_type=ATOM_MEDIA_TYPE)


def accepted(sandbox: Sandbox) -> Response:
    """202 Accepted (espi.md §4.3): empty body; a BatchList will name the data. Retry-After is the defer delay."""
    headers = {"Retry-After": str(math.ceil(sandbox.config.defer))} if sandbox.config.defer > 0 else {}
    return Response(b"", status_code=202, media_type=ATOM_MEDIA_TYPE, headers=headers)


def problem(status: int, text: str, error: str | None = None) -> Response:
    headers = {}
    if status == 401:
        headers["WWW-Authenticate"] = f'Bearer error="{error}"' if error else 'Bearer realm="espi"'
    elif status == 403:
        headers["WWW-Authenticate"] = 'Bearer error="insufficient_scope"'
    return PlainTextResponse(text + "\n", status_code=status, headers=headers)


def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
    sandbox = sandbox_of(request)
    base = {"custodian": sandbox.config.name, "base": sandbox.config.mount_path}
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' *"
    return response


def wants_html(request: Request) -> bool:
    return "text/html" in request.headers.get("accept", "")


# ----------------------------------------------------------------------------------------------------------------
# Home page and sandbox controls
# ----------------------------------------------------------------------------------------------------------------
def _state(sandbox: Sandbox) -> dict[str, Any]:
    config = sandbox.config
    return {
        "data_custodian_id": config.data_custodian_id,
        "authorization_endpoint": config.authorization_endpoint,
        "token_endpoint": config.token_endpoint,
        "resource_endpoint": config.resource_endpoint,
        "switches": {"defer": config.defer, "bulk_dir": str(config.bulk_dir) if config.bulk_dir else None,
                     "sftp_uri": config.sftp_uri or None, "notify_on_new_data": config.notify_on_new_data,
                     "notify_window": config.notify_window, "response_delay": config.response_delay,
                     "delete_authorization_status": config.delete_authorization_status,
                     "href_style": config.href_style, "customer_resource_uri": config.customer_resource_uri},
        "held_responses": sandbox.held_responses,
        "outage": sandbox.outage.as_json() if sandbox.outage is not None else None,
        "third_parties": [
            {"client_id": r.party.client_id, "client_name": r.party.client_name, "application_information_id": r.id,
             "registration_client_uri": f"{config.resource_endpoint}/ApplicationInformation/{r.id}",
             "redirect_uris": list(r.party.redirect_uris), "notify_uri": r.party.notify_uri,
             "scopes": list(r.party.scopes)}
            for r in sandbox.store.registrations.values()],
        "customers": [
            {"id": c.login, "password": c.password, "name": c.name, "retail_customer_id": c.number,
             "source": c.source, "usage_points": c.usage.usage_point_ids, "customer_data": c.customer_data is not None,
             "generated": c.spec is not None}
            for c in sandbox.store.customers],
        "authorizations": [
            {"id": a.id, "client_id": a.client_id, "grant_type": a.grant_type, "role": a.role, "scope": a.scope,
             "status": a.status if a.active or a.status != ACTIVE else REVOKED,
             "customer": a.customer.login if a.customer else None, "usage_points": list(a.usage_points)}
            for a in sorted(sandbox.store.authorizations.values(), key=lambda a: a.id)],
        "notifications": [n.as_json() for n in sandbox.notifier.history],
    }


async def home(request: Request) -> Response:
    sandbox = sandbox_of(request)
    state = _state(sandbox)
    for party in state["third_parties"]:
        party["described"] = [(s, describe_scope(s)) for s in party["scopes"]]
    return page(request, "home.html", {"state": state})


async def state_json(request: Request) -> Response:
    return JSONResponse(_state(sandbox_of(request)))


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


async def advance(request: Request) -> Response:
    """A generated customer's data grows by ``days`` (default 1): new IntervalBlocks, then notifications."""
    sandbox = sandbox_of(request)
    customer = sandbox.store.customer_by_login(request.path_params["customer"])
    if customer is None:
        return JSONResponse({"error": "no such customer"}, status_code=404)
    form = await request.form()
    try:
        days = int(form.get("days") or request.query_params.get("days") or 1)
    except ValueError:
        days = 0
    if customer.spec is None or not 1 <= days <= 366:
        return JSONResponse({"error": "only generated customers grow, by 1 to 366 days"}, status_code=400)
    with sandbox.store.lock:
        dataset, changed = sandbox_data.grow_generated(customer, days)
        customer.usage = dataset
    notified = sandbox.announce_new_data(customer, changed)
    low, high = sandbox_data.window(changed)
    if wants_html(request):
        return RedirectResponse(f"{sandbox.config.mount_path}/", status_code=303)
    return JSONResponse({"customer": customer.login, "days": customer.spec.days, "changed_entries": len(changed),
                         "published_min": normalized_query_time(low) if low else None,
                         "published_max": normalized_query_time(high, ceil=True) if high else None,
                         "notified": notified})


async def customer_revoke(request: Request) -> Response:
    """The customer revokes an authorization at the custodian; the third party is notified (PSH002)."""
    sandbox = sandbox_of(request)
    record = sandbox.store.authorizations.get(_int(request.path_params["authorization_id"]))
    if record is None:
        return JSONResponse({"error": "no such authorization"}, status_code=404)
    if record.status == ACTIVE:
        sandbox.store.set_status(record, REVOKED)
        sandbox.notify(record.client_id, [f"{sandbox.resource}/Authorization/{record.id}"], "revoked by customer")
    if wants_html(request):
        return RedirectResponse(f"{sandbox.config.mount_path}/", status_code=303)
    return JSONResponse({"id": record.id, "status": record.status})


async def outage(request: Request) -> Response:
    """The next ``requests`` (1 to 1000) ESPI resource requests, whoever sends them, are answered ``status`` (a 5xx,
    or 429; default 503) with ``Retry-After: retry_after`` (default 1): an outage or throttling at the custodian.
    ``requests=0`` ends it."""
    sandbox = sandbox_of(request)
    form = await request.form()
    try:
        requests = int(form.get("requests") or 1)
        status = int(form.get("status") or 503)
        retry_after = int(form.get("retry_after") or 1)
    except ValueError:
        requests = -1
    if not 0 <= requests <= 1000 or not (500 <= status <= 599 or status == 429) or not 0 <= retry_after <= 3600:
        return JSONResponse({"error": "requests 0-1000, status 5xx or 429, retry_after 0-3600 seconds"},
                            status_code=400)
    sandbox.outage = Outage(status, requests, retry_after) if requests else None
    return JSONResponse({"outage": sandbox.outage.as_json() if sandbox.outage else None})


def _int(text: str) -> int:
    return int(text) if text.isdigit() else -1


# ----------------------------------------------------------------------------------------------------------------
# OAuth
# ----------------------------------------------------------------------------------------------------------------
async def token(request: Request) -> Response:
    sandbox = sandbox_of(request)
    body = (await request.body()).decode("utf-8", "replace")
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    form = parse_qsl(body, keep_blank_values=True) if content_type == "application/x-www-form-urlencoded" else []
    query = list(request.query_params.multi_items())
    # The legacy OpenESPI third party sends the token parameters in the query string of the POST: read both.
    # The URI is the public one (base_url): Authlib refuses plain http except on loopback.
    oauth_request = GatewayRequest("POST", sandbox.config.token_endpoint, request.headers, query=query,
                                   form=[*query, *form],
                                   remote_addr=request.client.host if request.client else "")
    with sandbox.store.lock:
        return sandbox.oauth.create_token_response(oauth_request)


def _oauth_params(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in pairs if k in OAUTH_PARAMETERS]


def _authorize_error(request: Request, sandbox: Sandbox, oauth_request: GatewayRequest, error: OAuth2Error):
    if error.redirect_uri:
        return sandbox.oauth.handle_error_response(oauth_request, error)
    status = 401 if error.error == "invalid_client" else 400
    return page(request, "error.html", {"error": error.error, "description": error.description or ""}, status)


def _consent_context(sandbox: Sandbox, grant, params: list[tuple[str, str]]) -> dict[str, Any]:
    client = grant.request.client
    requested = getattr(grant.request, "espi_scope", None)
    choices = [requested] if requested else list(client.party.scopes)
    return {"client": client.party, "params": params, "requested": requested,
            "choices": [(s, describe_scope(s)) for s in choices]}


async def authorize(request: Request) -> Response:
    sandbox = sandbox_of(request)
    if request.method == "GET":
        pairs = list(request.query_params.multi_items())
        form = None
    else:
        form = await request.form()
        pairs = [(k, v) for k, v in form.multi_items() if isinstance(v, str)]
    params = _oauth_params(pairs)
    oauth_request = GatewayRequest("GET", sandbox.config.authorization_endpoint, request.headers, query=params)
    try:
        grant = sandbox.oauth.get_consent_grant(oauth_request)
    except OAuth2Error as error:
        return _authorize_error(request, sandbox, oauth_request, error)
    context = _consent_context(sandbox, grant, params)
    if form is None:
        return page(request, "authorize.html", {**context, "step": "signin"})

    client_id = grant.request.client.get_client_id()
    state = grant.request.payload.state or ""
    if form.get("decision") == "deny":
        return sandbox.oauth.create_authorization_response(oauth_request, grant_user=None, grant=grant)
    ticket = form.get("ticket")
    if ticket:
        customer = sandbox.check_ticket(str(ticket), client_id, state)
    else:
        customer = sandbox.store.check_password(str(form.get("customer_id") or ""), str(form.get("password") or ""))
    if customer is None:
        message = "Your sign-in has expired; sign in again." if ticket else "Unknown customer id or wrong password."
        return page(request, "authorize.html", {**context, "step": "signin", "message": message}, 401)
    ticket = sandbox.ticket(customer.login, client_id, state)
    consent = {**context, "step": "consent", "customer": customer, "ticket": ticket}
    if form.get("decision") != "approve":
        return page(request, "authorize.html", consent)

    chosen = str(form.get("espi_scope") or context["requested"] or "")
    if not chosen and len(grant.request.client.party.scopes) == 1:
        chosen = grant.request.client.party.scopes[0]
    try:
        if not chosen:
            raise ValueError("Choose what to share.")
        scope = offered_scope_for(grant.request.client.party, chosen)
        if context["requested"] and scope != context["requested"]:
            raise ValueError("The third party asked for another scope.")
    except (ValueError, OAuth2Error) as error:
        text = error.description if isinstance(error, OAuth2Error) else str(error)
        return page(request, "authorize.html", {**consent, "message": text}, 400)
    available = customer.usage.usage_point_ids
    picked = [u for u in form.getlist("usage_point") if u in available]
    if form.get("step") == "consent" and not picked:
        return page(request, "authorize.html", {**consent, "message": "Choose at least one service."}, 400)
    user = SandboxUser(customer, scope, tuple(picked or available))
    log.info("customer %s approved %s for %s", customer.login, scope, client_id)
    return sandbox.oauth.create_authorization_response(oauth_request, grant_user=user, grant=grant)


# ----------------------------------------------------------------------------------------------------------------
# ESPI resources
# ----------------------------------------------------------------------------------------------------------------
class Refused(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def _bearer(request: Request, sandbox: Sandbox) -> TokenRecord:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if not header:
        raise Refused(problem(401, "Bearer token required"))
    if scheme.lower() != "bearer" or not value.strip():
        raise Refused(problem(401, "Authorization must be 'Bearer <token>'", "invalid_request"))
    record = sandbox.store.lookup_token(value.strip())
    if record is None:
        raise Refused(problem(401, "Unknown, expired or revoked token", "invalid_token"))
    return record


def _allow(token: TokenRecord, *roles: str) -> None:
    if token.role not in roles:
        raise Refused(problem(403, f"A {token.role} token may not call this resource"))


def subscription_entries(record: AuthorizationRecord, only: str | None, query: Query) -> list[bytes]:
    """The Batch entries of a subscription (its approved UsagePoints), or of one of them."""
    dataset = record.customer.usage
    positions = {dataset.usage_point_position(u) for u in record.usage_points} - {None}
    if only is not None:
        position = dataset.usage_point_position(only)
        if position is None or position not in positions:
            raise Refused(problem(404, "No such UsagePoint in this subscription"))
        positions = {position}
    return batch_entries(dataset.entries, positions, query)


def _subscription(sandbox: Sandbox, token: TokenRecord, subscription_id: str) -> AuthorizationRecord:
    _allow(token, "access", "data_custodian")
    record = sandbox.store.authorizations.get(_int(subscription_id))
    if token.role == "access" and (record is None or record.id != token.authorization_id):
        raise Refused(problem(403, "This token is not for that subscription"))
    if record is None or record.role != "access":
        raise Refused(problem(404, "No such subscription"))
    if not record.active:
        raise Refused(problem(403, "The authorization of this subscription is not active"))
    return record


def _one(records: list[EntryRecord], rid: str, what: str) -> EntryRecord:
    for record in records:
        if record.rid == rid:
            return record
    raise Refused(problem(404, f"No such {what}"))


def _collection(sandbox: Sandbox, path: str, kind: str, records: list[EntryRecord], query: Query) -> Response:
    return atom(feed_document(f"{sandbox.resource}/{path}", kind, f"{kind} feed",
                              [r.xml for r in query.select(records)]))


def _usage_point_resources(sandbox: Sandbox, path: str, record: AuthorizationRecord, rest: list[str],
                           query: Query) -> Response:
    """``Subscription/{s}/UsagePoint[/{u}[/{Kind}[/{id}[/IntervalBlock[/{id}]]]]]`` (resource level, FB_32)."""
    dataset: DataSet = record.customer.usage
    approved = [dataset.entries[i] for i in dataset.usage_points if dataset.entries[i].rid in record.usage_points]
    if not rest:
        return _collection(sandbox, path, "UsagePoint", approved, query)
    point = _one(approved, rest[0], "UsagePoint")
    if len(rest) == 1:
        return atom(entry_document(point.xml))
    kind = rest[1]
    if kind not in sandbox_data.USAGE_POINT_CHILDREN:
        raise Refused(problem(404, f"No {kind} resources"))
    children = dataset.children(point.usage_point, kind)
    if len(rest) == 2:
        return _collection(sandbox, path, kind, children, query)
    child = _one(children, rest[2], kind)
    if len(rest) == 3:
        return atom(entry_document(child.xml))
    if kind != "MeterReading" or rest[3] != "IntervalBlock" or len(rest) > 5:
        raise Refused(problem(404, "No such resource"))
    blocks = dataset.blocks_of(child)
    if len(rest) == 4:
        return _collection(sandbox, path, "IntervalBlock", blocks, query)
    return atom(entry_document(_one(blocks, rest[4], "IntervalBlock").xml))


def _shared(sandbox: Sandbox, token: TokenRecord, path: str, kind: str, rest: list[str], query: Query) -> Response:
    """``ReadingType[/{id}]`` and ``LocalTimeParameters[/{id}]``: of the token's customer (DC: everyone's)."""
    _allow(token, "access", "data_custodian")
    if token.role == "access":
        customers = [sandbox.store.authorizations[token.authorization_id].customer]
    else:
        customers = sandbox.store.customers
    records = [r for c in customers for r in c.usage.shared(kind)]
    if not rest:
        return _collection(sandbox, path, kind, records, query)
    if len(rest) > 1:
        raise Refused(problem(404, "No such resource"))
    return atom(entry_document(_one(records, rest[0], kind).xml))


def application_information(sandbox: Sandbox, registration: Registration) -> bytes:
    config, party = sandbox.config, registration.party
    resource = config.resource_endpoint
    bulk = config.sftp_uri if (config.bulk_dir is not None and config.sftp_uri) else f"{resource}/Batch/Bulk"
    info = espi_authorization.ApplicationInformation(
        data_custodian_id=config.data_custodian_id, data_custodian_application_status=1,
        authorization_server_uri=config.base_url, third_party_notify_uri=party.notify_uri,
        authorization_server_authorization_endpoint=config.authorization_endpoint,
        authorization_server_token_endpoint=config.token_endpoint, data_custodian_bulk_request_uri=bulk,
        data_custodian_resource_endpoint=resource, client_secret=party.client_secret,
        client_name=party.client_name, redirect_uris=party.redirect_uris, client_id=party.client_id,
        software_id=party.software_id, software_version=party.software_version,
        client_id_issued_at=registration.issued_at, client_secret_expires_at=0,
        token_endpoint_auth_method="client_secret_basic", scopes=party.scopes,
        grant_types=("authorization_code", "client_credentials", "refresh_token"), response_types="code",
        registration_client_uri=f"{resource}/ApplicationInformation/{registration.id}",
        registration_access_token=registration.registration_access_token,
    )
    return own_entry(f"{resource}/ApplicationInformation/{registration.id}", f"{resource}/ApplicationInformation",
                     "ApplicationInformation", resource_element(info, "ApplicationInformation"),
                     title=party.client_name, published=registration.issued_at, updated=registration.issued_at)


def authorization_entry(sandbox: Sandbox, record: AuthorizationRecord, related_resource: bool = False) -> bytes:
    resource = sandbox.resource
    status = record.status if (record.active or record.status != ACTIVE) else REVOKED
    uris = sandbox.oauth.uris(record)
    value = espi_authorization.Authorization(
        authorized_period=espi_usage.DateTimeInterval(duration=record.authorized_duration, start=record.created)
        if record.role == "access" else None,
        status=status, expires_at=record.expires_at, grant_type=record.grant_type, scope=record.scope,
        token_type="Bearer", resource_uri=uris["resourceURI"], authorization_uri=uris["authorizationURI"],
        customer_resource_uri=uris.get("customerResourceURI"))
    registration = sandbox.registration_of(record.client_id)
    related = []
    if related_resource and record.role == "access":
        related.append((uris["resourceURI"], "espi-feed/Subscription"))
    elif registration is not None:
        related.append((f"{resource}/ApplicationInformation/{registration.id}", "espi-entry/ApplicationInformation"))
    return own_entry(f"{resource}/Authorization/{record.id}", f"{resource}/Authorization", "Authorization",
                     resource_element(value, "Authorization"), title=f"Authorization {record.id}",
                     published=record.created, updated=record.updated or record.created, related=related)


def _customer_data_allowed(record: AuthorizationRecord) -> bool:
    return (record.customer is not None and record.customer.customer_data is not None
            and is_customer_scope(record.scope))


def _authorization_status(body: bytes) -> int:
    try:
        for item in FeedReader(body, name="PUT body"):
            for resource in getattr(item, "resources", ()):
                if resource.name == "Authorization" and resource.value.status is not None:
                    return resource.value.status
    except EspiError:
        pass
    raise Refused(problem(400, "The body must be an Authorization (entry or bare resource) with a status"))


def _request_uri(request: Request, sandbox: Sandbox, path: str) -> str:
    """The URI of a resource request in one canonical spelling (``:`` unescaped in the query), so that the URI a
    BatchList names matches the third party's next GET however its HTTP library escapes the query."""
    pairs = request.query_params.multi_items()
    query = "&".join(f"{quote(k, safe='-')}={quote(v, safe=':')}" for k, v in pairs)
    return f"{sandbox.resource}/{path}" + (f"?{query}" if query else "")


def _deferred(request: Request, sandbox: Sandbox, token: TokenRecord, path: str, build) -> Response:
    """202 and a later BatchList (``defer``), or the document when the request is ready (or not deferred)."""
    if sandbox.config.defer <= 0 or sandbox.registration_of(token.client_id) is None:
        return atom(build())
    uri = _request_uri(request, sandbox, path)
    key = (token.client_id, uri)
    if sandbox.deferrals.is_ready(key):
        return atom(build())
    if sandbox.deferrals.start(key):
        sandbox.notify(token.client_id, [uri], "deferred request ready", delay=sandbox.config.defer,
                       before=lambda: sandbox.deferrals.mark_ready(key))
    return accepted(sandbox)


def _bulk(request: Request, sandbox: Sandbox, token: TokenRecord, path: str, bulk_id: str, query: Query) -> Response:
    _allow(token, "client", "data_custodian")
    client_id = token.client_id if token.role == "client" else None
    if client_id is None or sandbox.config.bulk_dir is None:
        return _deferred(request, sandbox, token, path, lambda: sandbox.bulk_document(client_id, bulk_id, query))
    # Bulk files for SFTP (FB_34): the feed is written now, and the BatchList names the file (or the REST URI).
    sandbox.write_bulk(client_id, bulk_id, query)
    if sandbox.config.sftp_uri:
        sandbox.notify(client_id, [sandbox.bulk_uri(client_id, bulk_id, write=False)], "bulk file ready",
                       delay=sandbox.config.defer)
        return accepted(sandbox)
    key = (client_id, _request_uri(request, sandbox, path))
    if sandbox.deferrals.is_ready(key):
        return atom(sandbox.bulk_file(client_id, bulk_id).read_bytes())
    if sandbox.deferrals.start(key):
        sandbox.notify(client_id, [key[1]], "bulk feed ready", delay=sandbox.config.defer,
                       before=lambda: sandbox.deferrals.mark_ready(key))
    return accepted(sandbox)


async def resource(request: Request) -> Response:
    sandbox = sandbox_of(request)
    outage = sandbox.outage
    if outage is not None and outage.remaining > 0:
        outage.remaining -= 1
        return PlainTextResponse("The data custodian is unavailable; try again later\n", status_code=outage.status,
                                 headers={"Retry-After": str(outage.retry_after)})
    path = request.path_params["path"].strip("/")
    segments = [s for s in path.split("/") if s]
    body = await request.body() if request.method in ("PUT", "POST") else b""
    try:
        token = _bearer(request, sandbox)
        try:
            query = parse_query(dict(request.query_params)) if request.method == "GET" else Query()
        except QueryError:
            return problem(400, INVALID_QUERY)
        with sandbox.store.lock:
            response = _dispatch(request, sandbox, token, path, segments, query, body)
    except Refused as refused:
        return refused.response
    if sandbox.config.response_delay > 0 and response.status_code == 200 and segments[:1] == ["Batch"] \
            and segments[1:2] in (["Subscription"], ["Bulk"]):
        # a slow custodian: the body is what the data was when the request came; the lock is not held meanwhile
        sandbox.held_responses += 1
        try:
            await asyncio.sleep(sandbox.config.response_delay)
        finally:
            sandbox.held_responses -= 1
    return response


def _dispatch(request: Request, sandbox: Sandbox, token: TokenRecord, path: str, segments: list[str], query: Query,
              body: bytes) -> Response:
    method = request.method
    head = segments[0] if segments else ""
    store = sandbox.store
    if head == "Authorization" and len(segments) == 2 and method == "DELETE" \
            and sandbox.config.delete_authorization_status != 204:
        return _no_delete(sandbox.config.delete_authorization_status)
    if head == "Authorization" and len(segments) == 2 and method in ("PUT", "DELETE"):
        return _change_authorization(sandbox, token, segments[1], method, body)
    if head == "Batch" and segments[1:2] == ["RetailCustomer"] and method == "POST":
        return _upload(sandbox, token, segments, body)
    if method != "GET":
        raise Refused(problem(405, "Method not allowed"))

    if head == "ReadServiceStatus" and len(segments) == 1:
        _allow(token, "client", "data_custodian", "upload")
        return atom(bare_document(resource_element(espi_usage.ServiceStatus(current_status=1), "ServiceStatus",
                                                 default_namespace=True)))
    if head == "ApplicationInformation":
        _allow(token, "registration", "data_custodian")
        registrations = list(store.registrations.values())
        if token.role == "registration":
            registrations = [r for r in registrations if r.party.client_id == token.client_id]
        if len(segments) == 1:
            _allow(token, "data_custodian")
            return atom(feed_document(f"{sandbox.resource}/ApplicationInformation", "ApplicationInformation",
                                      "ApplicationInformation feed",
                                      [application_information(sandbox, r) for r in registrations]))
        wanted = store.registration_by_id(segments[1]) if len(segments) == 2 else None
        if wanted is None and token.role == "data_custodian":
            raise Refused(problem(404, "No such ApplicationInformation"))
        if wanted is None or wanted not in registrations:
            raise Refused(problem(403, "Not this token's ApplicationInformation"))
        return atom(entry_document(application_information(sandbox, wanted)))
    if head == "Authorization":
        if len(segments) == 1:
            _allow(token, "client", "data_custodian")
            records = sorted(store.authorizations.values(), key=lambda a: a.id)
            if token.role == "client":
                records = [a for a in records if a.client_id == token.client_id]
            return atom(feed_document(f"{sandbox.resource}/Authorization", "Authorization", "Authorization feed",
                                      [authorization_entry(sandbox, a) for a in records]))
        record = store.authorizations.get(_int(segments[1])) if len(segments) == 2 else None
        if token.role in ("client", "data_custodian"):
            if record is None or (token.role == "client" and record.client_id != token.client_id):
                raise Refused(problem(404 if token.role == "data_custodian" or record is None else 403,
                                      "No such Authorization of this third party"))
        elif record is None or record.id != token.authorization_id:
            raise Refused(problem(403, "Only the token's own Authorization"))
        return atom(entry_document(authorization_entry(sandbox, record, related_resource=token.role == "access")))
    if head == "Batch" and len(segments) >= 3 and segments[1] == "Subscription":
        record = _subscription(sandbox, token, segments[2])
        rest = segments[3:]
        if rest and (rest[0] != "UsagePoint" or len(rest) > 2):
            raise Refused(problem(404, "No such resource"))
        only = rest[1] if len(rest) == 2 else None
        # 404 now, not after a 202; hrefs as the bulk feed has them (one identity per resource, however delivered)
        entries = sandbox.bulk_entries(record, subscription_entries(record, only, query))
        return _deferred(request, sandbox, token, path, lambda: feed_document(
            f"{sandbox.resource}/{path}", "Subscription" if not rest else "UsagePoint",
            "Green Button Subscription Feed", entries))
    if head == "Batch" and len(segments) == 3 and segments[1] == "Bulk":
        return _bulk(request, sandbox, token, path, segments[2], query)
    if head == "Batch" and len(segments) >= 3 and segments[1] == "RetailCustomer":
        return _retail_customer(sandbox, token, path, segments, query)
    if head == "Subscription" and len(segments) >= 3 and segments[2] == "UsagePoint":
        record = _subscription(sandbox, token, segments[1])
        return _usage_point_resources(sandbox, path, record, segments[3:], query)
    if head in ("ReadingType", "LocalTimeParameters"):
        return _shared(sandbox, token, path, head, segments[1:], query)
    raise Refused(problem(404, "No such resource"))


def _retail_customer(sandbox: Sandbox, token: TokenRecord, path: str, segments: list[str], query: Query) -> Response:
    customer = sandbox.store.customer_by_number(segments[2])
    if len(segments) == 3:
        _allow(token, "access", "upload", "data_custodian")
        if token.role == "access":
            record = sandbox.store.authorizations[token.authorization_id]
            if customer is None or record.customer is not customer or not _customer_data_allowed(record):
                raise Refused(problem(403, "Customer data is not in this token's scope"))
        if customer is None or customer.customer_data is None:
            raise Refused(problem(404, "No customer data"))
        return atom(feed_document(f"{sandbox.resource}/{path}", "RetailCustomer", "Green Button Customer Feed",
                                  [r.xml for r in customer.customer_data.entries]))
    _allow(token, "upload", "data_custodian")
    if customer is None:
        raise Refused(problem(404, "No such RetailCustomer"))
    rest = segments[3:]
    if rest[0] != "UsagePoint" or len(rest) > 2:
        raise Refused(problem(404, "No such resource"))
    only = None
    if len(rest) == 2:
        only = customer.usage.usage_point_position(rest[1])
        if only is None:
            raise Refused(problem(404, "No such UsagePoint"))
    entries = batch_entries(customer.usage.entries, None if only is None else {only}, query)
    return Response(feed_document(f"{sandbox.resource}/{path}", "UsagePoint", "Green Button Download", entries),
                    media_type=ATOM_MEDIA_TYPE,
                    headers={"Content-Disposition": "attachment; filename=GreenButtonDownload.xml"})


def _upload(sandbox: Sandbox, token: TokenRecord, segments: list[str], body: bytes) -> Response:
    """``POST Batch/RetailCustomer/{id}/UsagePoint``: new usage data for a customer (MDM → DC), then BatchLists."""
    _allow(token, "upload", "data_custodian")
    if len(segments) != 4 or segments[3] != "UsagePoint":
        raise Refused(problem(404, "No such resource"))
    customer = sandbox.store.customer_by_number(segments[2])
    if customer is None:
        raise Refused(problem(404, "No such RetailCustomer"))
    try:
        merged = sandbox_data.merge_upload(customer.usage, body, f"upload for {customer.login}")
    except EspiError as error:
        raise Refused(problem(400, f"Not a usable Green Button feed: {error}")) from None
    if not merged.usage_points:
        raise Refused(problem(400, "The merged data has no UsagePoint"))
    changed = sandbox_data.changed_entries(customer.usage, merged)
    customer.usage = merged
    sandbox.announce_new_data(customer, changed)
    return PlainTextResponse(f"{len(changed)} entries new or changed\n")


def _no_delete(status: int) -> Response:
    """A custodian without DELETE Authorization (``delete_authorization_status``): 405 with the methods it does
    allow (RFC 9110 §15.5.6), or 501 Not Implemented. Nothing changes and nobody is notified."""
    if status == 405:
        return PlainTextResponse("Method not allowed\n", status_code=405, headers={"Allow": "GET, PUT"})
    return PlainTextResponse("Revoking an Authorization with DELETE is not implemented\n", status_code=status)


def _change_authorization(sandbox: Sandbox, token: TokenRecord, authorization_id: str, method: str,
                          body: bytes) -> Response:
    """PUT/DELETE ``Authorization/{id}`` (FB_44, client_access_token): revoke or deny, then a BatchList (PSH002)."""
    _allow(token, "client", "data_custodian")
    record = sandbox.store.authorizations.get(_int(authorization_id))
    if record is None or (token.role == "client" and record.client_id != token.client_id):
        raise Refused(problem(404 if record is None else 403, "No such Authorization of this third party"))
    status = REVOKED if method == "DELETE" else _authorization_status(body)
    if status not in (REVOKED, ACTIVE, DENIED):
        raise Refused(problem(400, f"Unknown Authorization status {status}"))
    if status == ACTIVE and record.status != ACTIVE:
        raise Refused(problem(400, "A revoked or denied Authorization cannot be reactivated; authorize again"))
    if status != record.status:
        sandbox.store.set_status(record, status)
        sandbox.notify(record.client_id, [f"{sandbox.resource}/Authorization/{record.id}"],
                       "revoked" if status == REVOKED else "denied")
    if method == "DELETE":
        return Response(status_code=204)
    return atom(entry_document(authorization_entry(sandbox, record)))


# ----------------------------------------------------------------------------------------------------------------
# The application
# ----------------------------------------------------------------------------------------------------------------
def build_sandbox(config: SandboxConfig) -> Sandbox:
    customers = sandbox_data.load_customers(config)
    store = Store(config, customers)
    secret = config.secret_key.encode() if config.secret_key else secrets.token_bytes(32)
    return Sandbox(config, store, SandboxOAuth(config, store),
                   Notifier(config.notify_attempts, config.notify_backoff, config.notify_timeout),
                   Deferrals(config.defer_ready_seconds), secret)


def create_sandbox_app(config: SandboxConfig | None = None) -> Starlette:
    """The sandbox custodian; without ``config``, from GREENBRIDGE_SANDBOX_CONFIG and GREENBRIDGE_SANDBOX_*."""
    config = config or load_sandbox_config(env=os.environ)
    sandbox = build_sandbox(config)
    log.info("sandbox custodian at %s: %d customers, %d third parties", config.base_url, len(sandbox.store.customers),
             len(sandbox.store.registrations))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await sandbox.notifier.start()
        try:
            yield
        finally:
            await sandbox.notifier.stop()

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Route("/sandbox.json", state_json),
        Route("/sandbox/customers/{customer}/advance", advance, methods=["POST"]),
        Route("/sandbox/authorizations/{authorization_id}/revoke", customer_revoke, methods=["POST"]),
        Route("/sandbox/outage", outage, methods=["POST"]),
        Route("/oauth/authorize", authorize, methods=["GET", "POST"]),
        Route("/oauth/token", token, methods=["POST"]),
        Route("/espi/1_1/resource/{path:path}", resource, methods=["GET", "PUT", "DELETE", "POST"]),
    ]
    if config.mount_path:
        routes = [Mount(config.mount_path, routes=routes)]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.sandbox = sandbox
    return app
