"""The Try-it walkthrough's pages (issue 14 item 1; the demo third party is gateway.demo): on only when configured
(``[gateway] demo``; the embedded bridge turns it on). Thin: cookie, CSRF and rendering; the steps are
gateway.demo.walkthrough's."""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bridge.config import GatewayConfig
from gateway.demo.client import DemoClientError
from gateway.demo.sessions import COOKIE, SESSION_SECONDS
from gateway.demo.walkthrough import WINDOW_DAYS, Walkthrough, WalkthroughError, requested_details
from gateway.pages import html_page
from gateway.routes.common import ApiError, gateway_of, read_form

log = logging.getLogger("greenbridge.demo")
REFRESH_SECONDS = 2


def routes(config: GatewayConfig) -> list[Route]:
    if not config.demo:
        return []
    walkthrough = Walkthrough(config)
    secure = config.issuer.startswith("https://")

    def session_of(request: Request) -> str | None:
        return walkthrough.cookie.read(request.cookies.get(COOKIE))

    def page(request: Request, name: str, context: dict, status: int = 200) -> Response:
        return html_page(request, gateway_of(request), name,
                         {"window_days": WINDOW_DAYS, "timezone": config.timezone, **context}, status=status)

    def failed(request: Request, message: str, status: int = 400) -> Response:
        return page(request, "try_error.html", {"message": message}, status)

    async def intro(request: Request) -> Response:
        session_id = session_of(request)
        cookie = None
        if session_id is None:
            session_id, cookie = walkthrough.cookie.new()
        state = walkthrough.state(session_id)
        response = page(request, "try.html", {"csrf": walkthrough.csrf_token(session_id),
                                              "details": requested_details(config.zone),
                                              "custodians": config.custodians, "has_data": bool(state.get("tokens")),
                                              "test_customers": config.test_customers})
        if cookie is not None:
            response.set_cookie(COOKIE, cookie, max_age=SESSION_SECONDS, path="/try", secure=secure, httponly=True,
                                samesite="lax")
        return response

    async def start(request: Request) -> Response:
        session_id = session_of(request)
        try:
            form = dict(await read_form(request))
        except ApiError as error:
            return failed(request, error.description)
        if session_id is None or not walkthrough.csrf_ok(session_id, form.get("csrf", "")):
            return failed(request, "This form has expired (or cookies are off); open the walkthrough again.", 403)
        try:
            authorize_url = await walkthrough.start(session_id)
        except DemoClientError as error:
            log.warning("try-it: the demo client could not start: %s", error)
            return failed(request, f"The demo application could not talk to this server: {error}", 502)
        return RedirectResponse(authorize_url, status_code=303)

    async def callback(request: Request) -> Response:
        try:
            await walkthrough.finish(session_of(request), dict(request.query_params))
        except WalkthroughError as error:
            return failed(request, str(error))
        except DemoClientError as error:
            log.warning("try-it: the code exchange failed: %s", error)
            return failed(request, f"The demo application could not finish: {error}", 502)
        return RedirectResponse(config.url("/try/usage"), status_code=303)

    async def usage(request: Request) -> Response:
        try:
            progress = await walkthrough.progress(session_of(request))
        except DemoClientError as error:
            log.warning("try-it: reading the grant or its data failed: %s", error)
            return failed(request, f"The demo application could not read your data: {error}", 502)
        if progress.stage == "none":
            return RedirectResponse(config.url("/try"), status_code=303)
        # while the grant is pending the page reloads itself (a meta refresh: progress without JavaScript)
        return page(request, "try_usage.html", {"progress": progress, "refresh": REFRESH_SECONDS})

    return [Route("/try", intro, methods=["GET"]), Route("/try/start", start, methods=["POST"]),
            Route("/try/callback", callback, methods=["GET"]), Route("/try/usage", usage, methods=["GET"])]
