"""All gateway routes, grouped by the spec part they serve."""

from __future__ import annotations

from starlette.routing import BaseRoute

from bridge.config import GatewayConfig


def routes(config: GatewayConfig) -> list[BaseRoute]:
    from gateway.routes import admin, dashboard, data, discovery, notifications, oauth, ops

    return [*ops.routes(), *discovery.routes(), *oauth.routes(), *admin.routes(config), *data.routes(config),
            *notifications.routes(), *dashboard.routes()]
