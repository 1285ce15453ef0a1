"""The Starlette application: ``create_app(config)`` builds everything explicitly; no import-time side effects.

``uvicorn --factory gateway.app:create_app`` builds the configuration from the environment (GREENBRIDGE_*).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse

from cds.custodian_scopes import custodian_scope_ids, merge_offers, offered_scopes
from cds.scopes import build_scope_descriptions
from cds.secrets import SecretBox
from cds.store.engine import make_engine, make_sessionmaker
from cds.store.migrate import upgrade
from cds.urls import Urls
from gateway import logsafe
from gateway.config import GatewayConfig, load_config
from gateway.job_publisher import JobPublisher
from gateway.oauth.server import GatewayServer

log = logging.getLogger("greenbridge.gateway")


@dataclass
class Gateway:
    """Everything a route needs, built once per application."""

    config: GatewayConfig
    urls: Urls
    engine: Engine
    sessions: sessionmaker[Session]
    box: SecretBox
    descriptions: dict[str, Any]
    oauth: GatewayServer
    #: Custodian-specific scope id (``cds_usage_sandbox``) → the custodian it implies (issue 5, item 3a).
    scope_custodians: dict[str, str] = field(default_factory=dict)
    #: Sends the jobs each committed transaction created to the workers (gateway.job_publisher).
    publisher: JobPublisher | None = None


def build_gateway(config: GatewayConfig, *, migrate: bool = True) -> Gateway:
    urls = Urls(config.issuer)
    engine = make_engine(config.database_url)
    if migrate:
        upgrade(engine)
    box = SecretBox(config.fernet_key, config.derived_key("token-hash"))
    generic = build_scope_descriptions(
        documentation_base=urls.documentation, timezone=config.timezone, segment_history=config.segment_history,
        coverages=[entry["id"] for entry in config.coverage],
    )
    descriptions, scope_custodians = with_custodian_scopes(config, generic, urls)
    oauth = GatewayServer(config, descriptions, box, urls)
    sessions = make_sessionmaker(engine)
    publisher = JobPublisher(config.redis_url)
    publisher.attach(sessions)
    return Gateway(config, urls, engine, sessions, box, descriptions, oauth, scope_custodians, publisher)


def with_custodian_scopes(config: GatewayConfig, generic: dict[str, Any], urls: Urls
                          ) -> tuple[dict[str, Any], dict[str, str]]:
    """The gateway's generic descriptions merged with every custodian's offer (``cds_usage_{custodian}`` …, from
    its configured scope strings; cds.custodian_scopes, docs/mapping.md §11), and which custodian each of those
    scope ids implies."""
    coverage_ids = {entry["id"] for entry in config.coverage}
    offers: list[dict[str, Any]] = []
    scope_custodians: dict[str, str] = {}
    for custodian in config.custodians:
        if not custodian.scopes:
            continue
        offer = offered_scopes(custodian.id, custodian.scopes, documentation_base=urls.documentation,
                               timezone=config.timezone, custodian_name=custodian.name,
                               coverages=[custodian.id] if custodian.id in coverage_ids else [])
        offers.append(offer)
        scope_custodians.update(dict.fromkeys(custodian_scope_ids(offer, custodian.id), custodian.id))
    return merge_offers([generic, *offers]), scope_custodians


def create_app(config: GatewayConfig | None = None) -> Starlette:
    from gateway.routes import routes

    config = config or load_config()
    logsafe.install()
    gateway = build_gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"gateway": gateway}
        gateway.publisher.stop()
        gateway.engine.dispose()

    async def too_large(request: Request, exc: HTTPException):
        if exc.status_code == 413:
            return JSONResponse(
                {"error": "invalid_request", "error_description": "Request body too large"}, status_code=413
            )
        if request.url.path.startswith(("/oauth/", "/cds-api/")) and exc.status_code in (404, 405):
            return JSONResponse({"error": "not_found" if exc.status_code == 404 else "method_not_allowed",
                                 "error_description": exc.detail}, status_code=exc.status_code,
                                headers=exc.headers)
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)

    app = Starlette(
        routes=routes(config),
        lifespan=lifespan,
        max_body_size=config.max_body_bytes,
        exception_handlers={HTTPException: too_large},
    )
    app.state.gateway = gateway
    return app
