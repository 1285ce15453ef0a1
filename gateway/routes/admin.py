"""CDS-WG1-02 admin APIs: Clients, Credentials, Grants, Messages."""

from __future__ import annotations

from starlette.routing import Route

from gateway.config import GatewayConfig


def routes(config: GatewayConfig) -> list[Route]:
    return []
