"""CDS-WG1-02 admin APIs: Clients (§5), Messages (§6), Credentials (§7), Grants (§8).

Thin routes: each authenticates the Bearer ``cds_client_admin`` token (RFC 6750: 401/403 with
``WWW-Authenticate``), reads the JSON body only after that, and hands plain data to ``cds.clients``,
``cds.credentials``, ``cds.grants`` and ``cds.messages`` inside one transaction. The caller's registration is the
token client's ``registration_id``; the functions never see rows of another registration (those are 404).

Bodies: ``application/json`` (or ``+json``) only, read by cds.json_input (nesting, strings, numbers); a wrong
content type or malformed JSON is 400. The app-wide body limit is ``max_body_bytes``; the Messages POST route has
its own, ``message_max_bytes`` (at least 10 MB for attachments, WG1-02 §6.4), and a larger body is 413 (both in
gateway.request_limits).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from bridge.config import GatewayConfig
from cds import clients, credentials, grants, messages
from cds.api_errors import CdsApiError, query_dict
from cds.registration import CLIENT_ADMIN
from cds.urls import Urls
from gateway.context import Gateway
from gateway.oauth.server import BearerError
from gateway.routes.common import ApiError, CdsJSONResponse, gateway_of, in_session, read_json

NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


@dataclass(frozen=True)
class Call:
    """One authenticated admin API call, as plain data."""

    gateway: Gateway
    registration_id: str
    client_id: str
    path: dict[str, str]
    query: dict[str, str]
    body: Any
    now: datetime


Work = Callable[[Session, Call], dict[str, Any]]


async def _caller(request: Request) -> tuple[str, str]:
    """The bearer token's (registration_id, client_id); BearerError when it does not allow the admin APIs."""
    gateway = gateway_of(request)
    header = request.headers.get("authorization")

    def check(session: Session) -> tuple[str, str]:
        context = gateway.oauth.run(session, gateway.oauth.authenticate_bearer, header, CLIENT_ADMIN)
        return context.client.registration_id, context.client.client_id

    return await in_session(request, check)


def _endpoint(work: Work, *, with_body: bool = False, status: int = 200):
    async def endpoint(request: Request) -> Response:
        gateway = gateway_of(request)
        try:
            registration_id, client_id = await _caller(request)
            body = await read_json(request) if with_body else None
            call = Call(gateway, registration_id, client_id, dict(request.path_params),
                        query_dict(request.query_params.multi_items()), body, datetime.now(UTC))
            result = await in_session(request, lambda session: work(session, call))
        except BearerError as error:
            response = error.response()
            response.headers.update(NO_STORE)
            return response
        except ApiError as error:
            return CdsJSONResponse({"error": error.error, "error_description": error.description},
                                   status_code=error.status, headers=NO_STORE)
        except CdsApiError as error:
            return CdsJSONResponse(error.body(), status_code=error.status, headers=NO_STORE)
        return CdsJSONResponse(result, status_code=status, headers=NO_STORE)

    return endpoint


# ---------------------------------------------------------------------------------------------- Clients (§5)
def _list_clients(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return clients.list_clients(session, call.registration_id, call.query, urls=g.urls, page_size=g.config.page_size)


def _get_client(session: Session, call: Call) -> dict[str, Any]:
    return clients.get_client(session, call.registration_id, call.path["client_id"], urls=call.gateway.urls)


def _put_client(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return clients.replace_client(session, call.registration_id, call.path["client_id"], call.body, urls=g.urls,
                                  box=g.box, descriptions=g.descriptions, timezone=g.config.timezone, now=call.now)


# ---------------------------------------------------------------------------------------------- Credentials (§7)
def _list_credentials(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return credentials.list_credentials(session, call.registration_id, call.query, urls=g.urls, box=g.box,
                                        page_size=g.config.page_size)


def _get_credential(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return credentials.get_credential(session, call.registration_id, call.path["credential_id"], urls=g.urls,
                                      box=g.box)


def _create_credential(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return credentials.create_credential(session, call.registration_id, call.body, urls=g.urls, box=g.box,
                                         now=call.now)


def _patch_credential(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return credentials.modify_credential(session, call.registration_id, call.path["credential_id"], call.body,
                                         urls=g.urls, box=g.box, now=call.now)


# ---------------------------------------------------------------------------------------------- Grants (§8)
def _list_grants(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return grants.list_grants(session, call.registration_id, call.query, urls=g.urls, page_size=g.config.page_size,
                              now=call.now)


def _get_grant(session: Session, call: Call) -> dict[str, Any]:
    return grants.get_grant(session, call.registration_id, call.path["grant_id"], urls=call.gateway.urls,
                            now=call.now)


def _patch_grant(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return grants.modify_grant(session, call.registration_id, call.path["grant_id"], call.body, urls=g.urls,
                               box=g.box, descriptions=g.descriptions, timezone=g.config.timezone, now=call.now,
                               on_close=g.grant_closed)


# ---------------------------------------------------------------------------------------------- Messages (§6)
def _list_messages(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return messages.list_messages(session, call.registration_id, call.query, urls=g.urls,
                                  page_size=g.config.page_size)


def _get_message(session: Session, call: Call) -> dict[str, Any]:
    return messages.get_message(session, call.registration_id, call.path["message_id"], urls=call.gateway.urls)


def _create_message(session: Session, call: Call) -> dict[str, Any]:
    g = call.gateway
    return messages.create_message(session, call.registration_id, call.client_id, call.body, urls=g.urls, box=g.box,
                                   descriptions=g.descriptions, timezone=g.config.timezone,
                                   max_attachment_bytes=g.config.message_max_bytes, now=call.now)


def _patch_message(session: Session, call: Call) -> dict[str, Any]:
    return messages.modify_message(session, call.registration_id, call.path["message_id"], call.body,
                                   urls=call.gateway.urls, now=call.now)


def routes(config: GatewayConfig) -> list[Route]:
    paths = Urls("")  # the same URLs as published, without scheme and host
    return [
        Route(paths.clients_api, _endpoint(_list_clients), methods=["GET"]),
        Route(paths.client("{client_id}"), _endpoint(_get_client), methods=["GET"]),
        Route(paths.client("{client_id}"), _endpoint(_put_client, with_body=True), methods=["PUT"]),
        Route(paths.credentials_api, _endpoint(_list_credentials), methods=["GET"]),
        Route(paths.credentials_api, _endpoint(_create_credential, with_body=True, status=201), methods=["POST"]),
        Route(paths.credential("{credential_id}"), _endpoint(_get_credential), methods=["GET"]),
        Route(paths.credential("{credential_id}"), _endpoint(_patch_credential, with_body=True), methods=["PATCH"]),
        Route(paths.grants_api, _endpoint(_list_grants), methods=["GET"]),
        Route(paths.grant("{grant_id}"), _endpoint(_get_grant), methods=["GET"]),
        Route(paths.grant("{grant_id}"), _endpoint(_patch_grant, with_body=True), methods=["PATCH"]),
        Route(paths.messages_api, _endpoint(_list_messages), methods=["GET"]),
        # Its larger body limit (message_max_bytes) is set with the others in gateway.request_limits (app.py).
        Route(paths.messages_api, _endpoint(_create_message, with_body=True, status=201), methods=["POST"]),
        Route(paths.message("{message_id}"), _endpoint(_get_message), methods=["GET"]),
        Route(paths.message("{message_id}"), _endpoint(_patch_message, with_body=True), methods=["PATCH"]),
    ]
