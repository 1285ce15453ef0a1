"""A peer that records every request it receives and answers what the test told it to: the "other port of the
custodian's host" of issue 13 (a forged feed, a token, a redirect), or a custodian serving forged documents at its
configured origin. ``uvicorn apps.listener:create_app --factory --app-dir tests``.

Control endpoints (never recorded): ``GET /__listener/requests`` (what was received: method, path with query,
whether an Authorization header came), ``POST /__listener/reset``, ``PUT /__listener/answers`` with a JSON object
``{path: {"status", "content_type", "body", "headers"}}`` (path without query; ``"*"`` answers every other path).
Everything else is recorded, then answered from that table (404 when nothing is set).
"""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

CONTROL = "/__listener/"


def create_app() -> Starlette:
    received: list[dict[str, Any]] = []
    answers: dict[str, dict[str, Any]] = {}

    async def requests(request: Request) -> Response:
        return JSONResponse(received)

    async def reset(request: Request) -> Response:
        received.clear()
        return JSONResponse({"cleared": True})

    async def set_answers(request: Request) -> Response:
        answers.clear()
        answers.update(await request.json())
        return JSONResponse({"answers": sorted(answers)})

    async def anything(request: Request) -> Response:
        body = await request.body()
        received.append({"method": request.method, "path": request.url.path, "query": request.url.query,
                         "authorization": "authorization" in request.headers, "body": body.decode("latin-1")})
        answer = answers.get(request.url.path) or answers.get("*")
        if answer is None:
            return Response(status_code=404)
        return Response(answer.get("body", "").encode(), status_code=answer.get("status", 200),
                        media_type=answer.get("content_type", "application/atom+xml"),
                        headers=answer.get("headers") or {})

    return Starlette(routes=[
        Route(CONTROL + "requests", requests, methods=["GET"]),
        Route(CONTROL + "reset", reset, methods=["POST"]),
        Route(CONTROL + "answers", set_answers, methods=["PUT"]),
        Route("/{path:path}", anything, methods=["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH"]),
    ])
