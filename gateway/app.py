"""The Starlette application: ``create_app(config)`` builds everything explicitly; no import-time side effects.

``uvicorn --factory gateway.app:create_app`` builds the configuration from the environment (GREENBRIDGE_*).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from bridge.config import GatewayConfig, load_config
from cds.urls import Urls
from gateway import logsafe
from gateway.context import build_gateway
from gateway.observability import RequestObservability
from gateway.request_limits import RequestLimits
from gateway.routes import routes

log = logging.getLogger("greenbridge.gateway")


def create_app(config: GatewayConfig | None = None) -> Starlette:
    config = config or load_config()
    logsafe.install()
    gateway = build_gateway(config)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        yield {"gateway": gateway}
        gateway.publisher.stop()
        gateway.engine.dispose()

    async def http_error(request: Request, exc: HTTPException):
        if request.url.path.startswith(("/oauth/", "/cds-api/")) and exc.status_code in (404, 405):
            return JSONResponse({"error": "not_found" if exc.status_code == 404 else "method_not_allowed",
                                 "error_description": exc.detail}, status_code=exc.status_code,
                                headers=exc.headers)
        return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)

    limits = {("POST", Urls("").messages_api): config.message_max_bytes}  # attachments (WG1-02 §6.4)
    # Request ids and metrics see every request, the refused ones too; the body limits come after them.
    middleware = [Middleware(RequestObservability, trust_request_id=config.trust_request_id,
                             json_logs=config.json_logs),
                  Middleware(RequestLimits, default_limit=config.max_body_bytes, limits=limits)]
    if config.trusted_proxies:
        # The client address every route sees (notify sources, authentication limits): X-Forwarded-For read right
        # to left from the connecting proxy, believed only from the configured ones (uvicorn's implementation).
        middleware.insert(0, Middleware(ProxyHeadersMiddleware, trusted_hosts=list(config.trusted_proxies)))
    app = Starlette(
        routes=routes(config),
        lifespan=lifespan,
        middleware=middleware,
        exception_handlers={HTTPException: http_error},
    )
    app.state.gateway = gateway
    return app
