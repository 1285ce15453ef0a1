"""The baseline for bench/gateway.py: the smallest Starlette application doing what the two measured endpoints do.

Served by uvicorn exactly like the gateway (``uvicorn --factory bare_app:create_app --app-dir bench``), so the
difference between the two is the gateway's own work:

* ``GET /metadata``: a constant JSON document rendered by ``JSONResponse`` on every request. bench/gateway.py
  passes the gateway's own metadata document in ``BENCH_METADATA_JSON`` so that both answer the same bytes;
  without it, a stand-in document of about the same size is used.
* ``POST /token``: reads an ``application/x-www-form-urlencoded`` body with ``request.form()`` and answers a small
  JSON object shaped like a token response (no authentication, no storage, no hashing).
* ``GET /healthz``: readiness for tests/servers.py.
"""

from __future__ import annotations

import json
import os
import secrets

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# Used when BENCH_METADATA_JSON is absent: shaped like CDS-WG1-01 server metadata, about 1.5 KB.
STAND_IN_METADATA = {
    "issuer": "http://127.0.0.1:8080",
    "cds_metadata_version": "v1",
    "cds_metadata_url": "http://127.0.0.1:8080/.well-known/cds-server-metadata.json",
    "name": "bare",
    "description": "A constant document of about the size of the gateway's server metadata",
    "website": "http://127.0.0.1:8080/",
    "documentation": "http://127.0.0.1:8080/docs",
    "support": "http://127.0.0.1:8080/support",
    "created": "2026-01-01T00:00:00Z",
    "updated": "2026-01-01T00:00:00Z",
    "capabilities": ["coverage", "oauth"],
    "coverage": "http://127.0.0.1:8080/cds-api/v1/coverage",
    "oauth_authorization_server": "http://127.0.0.1:8080/.well-known/oauth-authorization-server",
    "scopes_supported": [f"scope_{n}" for n in range(24)],
    "token_endpoint": "http://127.0.0.1:8080/oauth/token",
    "token_endpoint_auth_methods_supported": ["client_secret_basic"],
    "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
    "code_challenge_methods_supported": ["S256"],
    "registration_endpoint": "http://127.0.0.1:8080/oauth/register",
    "pushed_authorization_request_endpoint": "http://127.0.0.1:8080/oauth/par",
    "introspection_endpoint": "http://127.0.0.1:8080/oauth/introspect",
    "revocation_endpoint": "http://127.0.0.1:8080/oauth/revoke",
}


def create_app() -> Starlette:
    raw = os.environ.get("BENCH_METADATA_JSON")
    document = json.loads(raw) if raw else STAND_IN_METADATA

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def metadata(request: Request) -> Response:
        return JSONResponse(document)

    async def token(request: Request) -> Response:
        form = await request.form()
        return JSONResponse({"access_token": secrets.token_urlsafe(48), "token_type": "Bearer", "expires_in": 3600,
                             "scope": form.get("scope", "")}, headers={"Cache-Control": "no-store"})

    return Starlette(routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metadata", metadata, methods=["GET"]),
        Route("/token", token, methods=["POST"]),
    ])
