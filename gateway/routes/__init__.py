"""All gateway routes, grouped by the spec part they serve."""

from __future__ import annotations

from starlette.routing import BaseRoute

from bridge.config import GatewayConfig


def routes(config: GatewayConfig) -> list[BaseRoute]:
    from gateway.routes import (
        admin,
        api_reference,
        dashboard,
        data,
        demo,
        discovery,
        landing,
        notifications,
        oauth,
        ops,
    )

    # api_reference before discovery: its /docs/api would be taken by /docs/{page}. Every route here has an entry
    # in gateway/openapi.py (tests/test_openapi.py).
    return [*ops.routes(), *api_reference.routes(), *discovery.routes(), *oauth.routes(), *admin.routes(config),
            *data.routes(config), *notifications.routes(), *landing.routes(), *demo.routes(config),
            *dashboard.routes()]
