"""The API reference: ``/openapi.json`` (the OpenAPI 3.1 document of every gateway endpoint, gateway.openapi) and
``/docs/api``, the same rendered as a page on the server (no script, nothing loaded from elsewhere)."""

from __future__ import annotations

import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from gateway import openapi
from gateway.routes.common import CdsJSONResponse, gateway_of

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
CACHE = "public, max-age=300"


def _version() -> str:
    try:
        return version("greenbridge")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0"


def api_document(request: Request) -> dict[str, Any]:
    """The gateway's document, built once per application (it depends on the configuration only)."""
    found = getattr(request.app.state, "openapi_document", None)
    if found is None:
        gateway = gateway_of(request)
        found = openapi.document(gateway.urls, title=f"{gateway.config.server.name} API",
                                 description=gateway.config.server.description, version=_version(),
                                 scopes=sorted(gateway.descriptions), demo=bool(gateway.config.demo))
        request.app.state.openapi_document = found
    return found


async def openapi_json(request: Request) -> Response:
    return CdsJSONResponse(api_document(request), headers={"Cache-Control": CACHE,
                                                           "Access-Control-Allow-Origin": "*"})


def _schema_text(schema: dict[str, Any]) -> str:
    """A schema in a few words for the page: a reference's name, an array of what, or the JSON types."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "oneOf" in schema:
        return " or ".join(_schema_text(choice) for choice in schema["oneOf"])
    kind = schema.get("type", "any")
    if kind == "array":
        return f"array of {_schema_text(schema.get('items', {}))}"
    if isinstance(kind, list):
        kind = " or ".join(kind)
    if "enum" in schema:
        return f"{kind}: {' | '.join(map(str, schema['enum']))}"
    return f"{kind} ({schema['format']})" if "format" in schema else kind


async def reference_page(request: Request) -> Response:
    document = api_document(request)
    gateway = gateway_of(request)
    by_tag: dict[str, list[dict[str, Any]]] = {tag["name"]: [] for tag in document["tags"]}
    for path, methods in document["paths"].items():
        for method, operation in methods.items():
            body = operation.get("requestBody", {}).get("content", {})
            by_tag[operation["tags"][0]].append({
                "method": method.upper(), "path": path, "id": operation["operationId"], "operation": operation,
                "body": [(media, _schema_text(spec["schema"])) for media, spec in body.items()],
                "responses": [(status, answer["description"],
                               [(media, _schema_text(spec["schema"])) for media, spec in
                                answer.get("content", {}).items()])
                              for status, answer in operation["responses"].items()],
                "parameters": [(p["name"], p["in"], p.get("required", False), p.get("description", ""))
                               for p in operation.get("parameters", [])],
                "security": [name for requirement in operation["security"] for name in requirement]})
    schemas = [{"name": name, "description": schema.get("description", ""),
                "properties": [(prop, _schema_text(spec), prop in schema.get("required", []))
                               for prop, spec in schema.get("properties", {}).items()]}
               for name, schema in document["components"]["schemas"].items()]
    response = templates.TemplateResponse(request, "api_reference.html", {
        "server_name": gateway.config.server.name, "support_url": gateway.config.server.support,
        "document": document, "by_tag": by_tag, "schemas": schemas,
        "schemes": document["components"]["securitySchemes"], "json_url": gateway.urls.base + "/openapi.json",
        "pretty": lambda value: json.dumps(value, indent=1)})
    response.headers["Cache-Control"] = CACHE
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def routes() -> list[Route]:
    # Before discovery's /docs/{page}, which would take /docs/api otherwise.
    return [Route("/openapi.json", openapi_json, methods=["GET"]), Route("/docs/api", reference_page,
                                                                          methods=["GET"])]
