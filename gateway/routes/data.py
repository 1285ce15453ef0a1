"""CDS-WG3-01 customer data listings (§10): accounts, service contracts, service points, meter devices, bill
statements, bill sections, usage segments."""

from __future__ import annotations

from starlette.routing import Route

from gateway.config import GatewayConfig


def routes(config: GatewayConfig) -> list[Route]:
    return []
