"""Discovery routes: CDS-WG1-01 server metadata and coverage, RFC 8414 metadata (WG1-02 §3), per-client metadata
(WG1-02 §5.2 ``cds_server_metadata``) and the human pages the metadata links to.

Public JSON documents (metadata, coverage, OAuth metadata) need no authentication (WG1-01 §8.1), are cacheable
for five minutes, carry a strong ETag and answer ``If-None-Match`` with 304 (weak comparison, and ``*``; RFC 9110
§13.1.2), and allow any origin (``Access-Control-Allow-Origin: *``) so browser tools can read them.

The legacy path ``/.well-known/carbon-data-spec.json`` (CDSC-WG1-01 until 2025) serves the same current-format
object as ``/.well-known/cds-server-metadata.json``, with ``cds_metadata_url`` naming the new path, rather than a
301 (WG1-01 §5 describes the redirect for a *domain* move; here the domain stays). Clients that do not follow
redirects keep working, and those that read ``cds_metadata_url`` learn the canonical address.

Coverage pagination: the ``cursor`` query parameter (opaque keyset token, see :mod:`cds.metadata`); ``ids`` is a
space-separated id filter (absent or blank: no filter). An unknown cursor is a 400 ``invalid_request``.

The client-specific documents require a Bearer ``cds_client_admin`` token of the same registration as the client
(401 with ``WWW-Authenticate`` otherwise, 404 for a client of another registration, so existence is not revealed).
Their ``cds_metadata_url`` is their own URL (the canonical URL of that object) and ``oauth_metadata`` points to the
client-specific RFC 8414 document, restricted to the client's scopes.

Human pages: ``/test-accounts`` (sandbox logins, public by design), ``/register`` (how to register dynamically),
``/docs`` (anchors #support, #policy, #terms, the metadata URLs) and ``/docs/{page}`` for each documentation page
the scope descriptions link to (WG1-01: resources linked from public metadata must be reachable publicly).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from cds.metadata import (
    InvalidCursor,
    client_oauth_metadata_url,
    coverage_listing,
    etag,
    oauth_metadata,
    server_metadata,
)
from cds.scopes import metadata_json
from cds.store.models import Client
from gateway.oauth.server import BearerError
from gateway.routes.common import ApiError, CdsJSONResponse, gateway_of, in_session

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
PUBLIC_CACHE = "public, max-age=300"
PRIVATE_CACHE = "private, no-cache"
CORS = {"Access-Control-Allow-Origin": "*"}
CLIENT_ADMIN = "cds_client_admin"


# ----------------------------------------------------------------------------------------------------------------
# Conditional GET
# ----------------------------------------------------------------------------------------------------------------
def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(if_none_match: str | None, tag: str) -> bool:
    """``If-None-Match`` matches ``tag`` (RFC 9110 §13.1.2: weak comparison; ``*`` matches any current entity)."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    return any(_opaque(candidate) == _opaque(tag) for candidate in if_none_match.split(","))


def _document(request: Request, document: Any, headers: dict[str, str]) -> Response:
    tag = etag(document)
    headers = {**headers, "ETag": tag}
    if not_modified(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return CdsJSONResponse(document, headers=headers)


def _public(request: Request, document: Any) -> Response:
    return _document(request, document, {"Cache-Control": PUBLIC_CACHE, **CORS})


def _public_error(error: ApiError) -> Response:
    response = error.response()
    response.headers.update({"Cache-Control": "no-store", **CORS})
    return response


# ----------------------------------------------------------------------------------------------------------------
# Public JSON documents
# ----------------------------------------------------------------------------------------------------------------
async def cds_server_metadata(request: Request) -> Response:
    gateway = gateway_of(request)
    return _public(request, server_metadata(gateway.config, gateway.urls))


async def coverage(request: Request) -> Response:
    gateway = gateway_of(request)
    ids_text = " ".join(request.query_params.getlist("ids")).split()
    ids = ids_text or None
    cursor = request.query_params.get("cursor") or None
    try:
        listing = coverage_listing(gateway.config.coverage, ids=ids, cursor=cursor,
                                   page_size=gateway.config.page_size, urls=gateway.urls)
    except InvalidCursor as error:
        return _public_error(ApiError(400, "invalid_request", str(error)))
    return _public(request, listing)


async def authorization_server_metadata(request: Request) -> Response:
    gateway = gateway_of(request)
    return _public(request, oauth_metadata(gateway.config, gateway.urls, gateway.descriptions))


# ----------------------------------------------------------------------------------------------------------------
# Client-specific documents (WG1-02 §5.2)
# ----------------------------------------------------------------------------------------------------------------
async def _client_scopes(request: Request) -> list[str] | Response:
    """The scopes of the path's client, after checking the caller's cds_client_admin token; or the error answer."""
    gateway = gateway_of(request)
    client_id = request.path_params["client_id"]
    authorization = request.headers.get("authorization")

    def load(session: Session) -> list[str] | Response:
        try:
            context = gateway.oauth.run(session, gateway.oauth.authenticate_bearer, authorization, CLIENT_ADMIN)
        except BearerError as error:
            return error.response()
        target = session.get(Client, client_id)
        caller = context.client
        if target is None or caller is None or target.registration_id != caller.registration_id:
            return ApiError(404, "not_found", "No client with this id").response()
        return target.scope.split()

    return await in_session(request, load)


def _private(request: Request, document: Any) -> Response:
    return _document(request, document, {"Cache-Control": PRIVATE_CACHE, "Vary": "Authorization"})


async def client_server_metadata(request: Request) -> Response:
    scopes = await _client_scopes(request)
    if isinstance(scopes, Response):
        return scopes
    gateway = gateway_of(request)
    client_id = request.path_params["client_id"]
    document = server_metadata(gateway.config, gateway.urls,
                               metadata_url=gateway.urls.client_server_metadata(client_id),
                               oauth_metadata_url=client_oauth_metadata_url(gateway.urls, client_id))
    return _private(request, document)


async def client_oauth_metadata(request: Request) -> Response:
    scopes = await _client_scopes(request)
    if isinstance(scopes, Response):
        return scopes
    gateway = gateway_of(request)
    return _private(request, oauth_metadata(gateway.config, gateway.urls, gateway.descriptions,
                                            client_scopes=scopes))


# ----------------------------------------------------------------------------------------------------------------
# Human pages: test accounts, registration help, documentation
# ----------------------------------------------------------------------------------------------------------------
def _page(request: Request, name: str, context: dict[str, Any], *, status: int = 200,
          cache: str = PUBLIC_CACHE) -> HTMLResponse:
    gateway = gateway_of(request)
    base = {"server_name": gateway.config.server.name, "support_url": gateway.config.server.support,
            "urls": gateway.urls}
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
    response.headers["Cache-Control"] = cache
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


async def test_accounts(request: Request) -> Response:
    gateway = gateway_of(request)
    return _page(request, "test_accounts.html", {"customers": gateway.config.test_customers})


async def human_registration(request: Request) -> Response:
    gateway = gateway_of(request)
    scopes = [{"id": scope_id, "name": desc["name"], "description": desc["description"], "type": desc["type"]}
              for scope_id, desc in metadata_json(gateway.descriptions).items()]
    return _page(request, "register.html", {"scopes": scopes, "client_admin": CLIENT_ADMIN})


def _reference(gateway: Any) -> dict[str, list[dict[str, str]]]:
    """Documentation page → its entries (anchor, name, description), from every ``documentation`` URL under /docs/
    in the scope descriptions (scopes, fields, choices), so each link the metadata publishes resolves."""
    prefix = gateway.urls.documentation + "/"
    pages: dict[str, list[dict[str, str]]] = {}
    seen: set[tuple[str, str]] = set()

    def walk(value: Any) -> None:
        if isinstance(value, dict):
            url = value.get("documentation")
            if isinstance(url, str) and url.startswith(prefix):
                parts = urlsplit(url)
                page = url[len(prefix):].split("#", 1)[0]
                key = (page, parts.fragment)
                if page and "/" not in page and key not in seen:
                    seen.add(key)
                    pages.setdefault(page, []).append({
                        "anchor": parts.fragment, "id": str(value.get("id", "")),
                        "name": str(value.get("name", "")), "description": str(value.get("description", ""))})
            for item in value.values():
                walk(item)
        elif isinstance(value, list):
            for item in value:
                walk(item)

    walk(metadata_json(gateway.descriptions))
    return pages


async def docs(request: Request) -> Response:
    gateway = gateway_of(request)
    return _page(request, "docs.html", {"page": None, "pages": sorted(_reference(gateway)),
                                        "config": gateway.config})


async def docs_page(request: Request) -> Response:
    gateway = gateway_of(request)
    page = request.path_params["page"]
    pages = _reference(gateway)
    if page not in pages:
        return _page(request, "docs.html", {"page": page, "entries": None, "pages": sorted(pages),
                                            "config": gateway.config}, status=404, cache="no-store")
    return _page(request, "docs.html", {"page": page, "entries": pages[page], "pages": sorted(pages),
                                        "config": gateway.config})


def _path(url: str) -> str:
    return urlsplit(url).path


def routes() -> list[Route]:
    from cds.urls import Urls

    urls = Urls("http://placeholder")  # only the paths are used; the issuer's own path prefix is not supported
    return [
        Route(_path(urls.server_metadata), cds_server_metadata, methods=["GET"]),
        Route(_path(urls.legacy_server_metadata), cds_server_metadata, methods=["GET"]),
        Route(_path(urls.coverage), coverage, methods=["GET"]),
        Route(_path(urls.oauth_metadata), authorization_server_metadata, methods=["GET"]),
        Route(_path(urls.client_server_metadata("{client_id}")), client_server_metadata, methods=["GET"]),
        Route(_path(client_oauth_metadata_url(urls, "{client_id}")), client_oauth_metadata, methods=["GET"]),
        Route(_path(urls.test_accounts), test_accounts, methods=["GET"]),
        Route(_path(urls.human_registration), human_registration, methods=["GET"]),
        Route(_path(urls.documentation), docs, methods=["GET"]),
        Route(_path(urls.documentation) + "/{page}", docs_page, methods=["GET"]),
    ]
