"""Operations routes: liveness/readiness for load balancers."""

from __future__ import annotations

from sqlalchemy import text
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.routes.common import in_session


async def healthz(request: Request) -> Response:
    """200 when the store answers; 503 otherwise (the gateway cannot serve anything without it)."""
    try:
        await in_session(request, lambda session: session.execute(text("SELECT 1")).scalar_one())
    except Exception as error:  # any store failure means "not ready"; the type is reported, never the URL
        return JSONResponse({"status": "unavailable", "store": type(error).__name__}, status_code=503)
    return JSONResponse({"status": "ok"}, headers={"Cache-Control": "no-store"})


def routes() -> list[Route]:
    return [Route("/healthz", healthz, methods=["GET"])]
