"""All gateway routes, grouped by the spec part they serve."""

from __future__ import annotations

from starlette.routing import BaseRoute

from bridge.config import GatewayConfig


def routes(config: GatewayConfig) -> list[BaseRoute]:
    from gateway.routes import admin, dashboard, data, demo, discovery, landing, notifications, oauth, ops

    return [*ops.routes(), *discovery.routes(), *oauth.routes(), *admin.routes(config), *data.routes(config),
            *notifications.routes(), *landing.routes(), *demo.routes(config), *dashboard.routes()]
