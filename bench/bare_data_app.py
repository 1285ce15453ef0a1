"""The baseline for bench/data_api.py: a bare Starlette endpoint answering prepared JSON documents.

Served by uvicorn exactly like the gateway (``uvicorn --factory bare_data_app:create_app --app-dir bench``), so the
difference between the two is the gateway's own work (token lookup, grant checks, loading and projecting the
customer's objects, the usage-segment query, trimming and rendering):

* ``GET <any path>?<query>``: the bytes stored under that exact request target (raw path and query string, as the
  client sent them), with the gateway's ``Content-Type`` and ``Cache-Control: no-store``/``Pragma: no-cache``
  headers; an unknown target is a 404. bench/data_api.py writes the documents to a JSON file (request target →
  the gateway's response text, fetched once from the gateway) and names it in ``BENCH_DATA_DOCUMENTS``; they are
  encoded to bytes once at startup, so a request costs a route match, a dictionary look-up and the response.
* ``GET /healthz``: readiness for tests/servers.py.
"""

from __future__ import annotations

import json
import os

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

HEADERS = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def create_app() -> Starlette:
    path = os.environ.get("BENCH_DATA_DOCUMENTS")
    documents: dict[str, bytes] = {}
    if path:
        with open(path, encoding="utf-8") as source:
            documents = {target: text.encode() for target, text in json.load(source).items()}

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def document(request: Request) -> Response:
        target = request.scope["raw_path"].decode("latin-1")
        if request.scope["query_string"]:
            target += "?" + request.scope["query_string"].decode("latin-1")
        body = documents.get(target)
        if body is None:
            return JSONResponse({"error": "not_found", "target": target}, status_code=404)
        return Response(body, media_type="application/json", headers=HEADERS)

    return Starlette(routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/{path:path}", document, methods=["GET"]),
    ])
