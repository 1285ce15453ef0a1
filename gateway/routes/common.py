"""Shared plumbing for routes: the gateway object, sessions in the threadpool, body parsing, CDS error bodies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qsl

import anyio
import anyio.to_thread
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from cds.json_input import JsonInputError, forbidden_character, parse_json
from cds.jsonenc import encode
from espi.starlette_oauth import GatewayRequest
from gateway.context import Gateway

T = TypeVar("T")
#: No OAuth request has more parameters than this; the cap bounds what a form body can make us parse and store.
MAX_FORM_FIELDS = 100


class ApiError(Exception):
    """An error answered as JSON ``{"error", "error_description"}`` with an HTTP status."""

    def __init__(self, status: int, error: str, description: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description
        self.headers = headers or {}

    def response(self) -> Response:
        return JSONResponse({"error": self.error, "error_description": self.description},
                            status_code=self.status, headers=self.headers)


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def store_limiter(request: Request) -> anyio.CapacityLimiter:
    """The threads of this process for requests that only use the store and never wait on one another (the
    customer-data listings; ``[gateway] store_threads``), made once per application on its event loop."""
    state = request.app.state
    limiter = getattr(state, "store_limiter", None)
    if limiter is None:
        limiter = state.store_limiter = anyio.CapacityLimiter(gateway_of(request).config.store_threads)
    return limiter


async def in_session(request: Request, fn: Callable[[Session], T], *, store_only: bool = False) -> T:
    """Run ``fn(session)`` in the threadpool inside one transaction (committed unless it raises). ``store_only``:
    ``fn`` waits on nothing but the store, so it runs on the store's few threads (:func:`store_limiter`)."""
    gateway = gateway_of(request)

    def call() -> T:
        with gateway.sessions() as session, session.begin():
            return fn(session)

    if store_only:
        return await anyio.to_thread.run_sync(call, limiter=store_limiter(request))
    return await run_in_threadpool(call)


async def oauth_call(request: Request, fn: Callable[[Session], Response], *, store_only: bool = False) -> Response:
    """Run an Authlib call with the session bound; commit only when the answer is a success or a redirect.
    ``store_only`` as for :func:`in_session`."""
    gateway = gateway_of(request)

    def call() -> Response:
        with gateway.sessions() as session:
            response = gateway.oauth.run(session, fn, session)
            if response.status_code < 400:
                session.commit()
            else:
                session.rollback()
            return response

    if store_only:
        return await anyio.to_thread.run_sync(call, limiter=store_limiter(request))
    return await run_in_threadpool(call)


async def read_form(request: Request) -> list[tuple[str, str]]:
    """An application/x-www-form-urlencoded body as pairs (RFC 6749 §3.2 requires that content type).

    Bytes and percent-escapes must both be UTF-8 (nothing is silently replaced), and no value may hold NUL.
    """
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    body = await request.body()
    if content_type != "application/x-www-form-urlencoded":
        raise ApiError(400, "invalid_request", "The body must be application/x-www-form-urlencoded")
    try:
        pairs = parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body),
                          errors="strict", max_num_fields=MAX_FORM_FIELDS)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "invalid_request", "The form body is not valid urlencoded UTF-8 "
                       f"(at most {MAX_FORM_FIELDS} fields)") from None
    for name, value in pairs:
        problem = forbidden_character(name) or forbidden_character(value)
        if problem:
            raise ApiError(400, "invalid_request", f"Form parameters must not contain {problem}")
    return pairs


async def read_json(request: Request) -> Any:
    """A JSON body, read as cds.json_input reads every JSON from the network (depth, strings, numbers)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json" and not content_type.endswith("+json"):
        raise ApiError(400, "invalid_request", "The body must be application/json")
    body = await request.body()
    try:
        return parse_json(body)
    except JsonInputError as error:
        raise ApiError(400, "invalid_request", f"The body is not valid JSON: {error}") from None


def oauth_request(request: Request, *, query=(), form=()) -> GatewayRequest:
    """The Authlib request of a machine endpoint. Its URI is the endpoint's published URL (issuer + path), never one
    built from the Host header: that header is the client's to choose, and Authlib refuses a non-loopback http URI
    by raising (a 500 for any Host the client liked)."""
    return GatewayRequest(
        request.method,
        gateway_of(request).urls.base + request.url.path,
        request.headers,
        query=query,
        form=form,
        remote_addr=request.client.host if request.client else "",
    )


class CdsJSONResponse(JSONResponse):
    """JSON with Decimals written digit for digit (msgspec, see cds.jsonenc)."""

    def render(self, content: Any) -> bytes:
        return encode(content)
