"""The landing page at ``/`` (issue 14 item 1): what greenbridge is, the bridge's live state, and the way to try it."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from cds.store.overview import store_overview
from gateway.pages import html_page
from gateway.routes.common import gateway_of, in_session


async def landing(request: Request) -> Response:
    gateway = gateway_of(request)
    overview = await in_session(request, store_overview)
    custodians = [{"id": c.id, "name": c.name} for c in gateway.config.custodians]
    return html_page(request, gateway, "landing.html", {
        "config": gateway.config,
        "custodians": custodians,
        "overview": overview,
        "demo": bool(gateway.config.demo),
    })


def routes() -> list[Route]:
    return [Route("/", landing, methods=["GET"])]
