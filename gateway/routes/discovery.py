"""CDS-WG1-01 discovery and RFC 8414 metadata routes."""

from __future__ import annotations

from starlette.routing import Route


def routes() -> list[Route]:
    return []
