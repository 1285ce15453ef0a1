"""A tiny Starlette app for tests/test_servers.py: ``uvicorn apps.hello:create_app --factory --app-dir tests``."""

from __future__ import annotations

import html
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse
from starlette.routing import Route


async def index(request: Request) -> HTMLResponse:
    name = html.escape(os.environ.get("GREENBRIDGE_HELLO_NAME", "world"))
    return HTMLResponse(
        "<!doctype html><html><head><title>greenbridge hello</title></head>"
        f'<body><h1 id="greeting">Hello, {name}!</h1><p>pid {os.getpid()}</p></body></html>'
    )


async def healthz(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def create_app() -> Starlette:
    return Starlette(routes=[Route("/", index), Route("/healthz", healthz)])
