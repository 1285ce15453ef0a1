"""Server-rendered HTML pages of the gateway that are not part of an OAuth exchange: the landing page and the
Try-it walkthrough. Same headers as the other human pages: no framing, no referrer, a CSP allowing nothing remote
(styles inline, no script: the pages work without JavaScript)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent / "templates"))
CSP = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' *"


def html_page(request: Request, gateway: Any, name: str, context: dict[str, Any], *, status: int = 200,
              cache: str = "no-store") -> HTMLResponse:
    base = {"server_name": gateway.config.server.name, "support_url": gateway.config.server.support,
            "urls": gateway.urls}
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
    response.headers["Cache-Control"] = cache
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = CSP
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
