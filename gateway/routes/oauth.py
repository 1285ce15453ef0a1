"""OAuth routes: token, PAR, introspection, revocation, registration, authorization and consent, receipts.

Thin: each reads the request in async code, then hands plain data to gateway.oauth (Authlib) or cds.* in the
threadpool.
"""

from __future__ import annotations

import hmac
import logging
import smtplib
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio
from authlib.consts import default_json_headers
from authlib.oauth2 import OAuth2Error
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route
from starlette.templating import Jinja2Templates

from bridge import consent_hop, lifecycle, metrics, upstream
from bridge.config import CustodianConfig, GatewayConfig
from bridge.custodian_scopes import CustodianCannotProvide
from cds import consent, receipt_mail
from cds.grants import NO_ACCESS, effective_status
from cds.registration import RegistrationError, register
from cds.store.models import AuthorizationCode, Client, Grant, PushedRequest, Receipt
from espi.custodian_client import CustodianError
from espi.starlette_oauth import GatewayRequest, RedirectResponse
from gateway.oauth import fast_token
from gateway.oauth.server import parameter_problem
from gateway.routes.common import (
    ApiError,
    CdsJSONResponse,
    gateway_of,
    in_session,
    oauth_call,
    oauth_request,
    read_form,
    read_json,
    store_limiter,
)

log = logging.getLogger("greenbridge.oauth")
templates = Jinja2Templates(directory=str(Path(__file__).resolve().parent.parent / "templates"))
CONSENT_SECONDS = 30 * 60  # WG3-01 §9.1: the session lasts while the customer is active plus at least 10 minutes


def _page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> HTMLResponse:
    gateway = gateway_of(request)
    base = {"server_name": gateway.config.server.name, "support_url": gateway.config.server.support}
    response = templates.TemplateResponse(request, name, {**base, **context}, status_code=status)
    response.headers["Cache-Control"] = "no-store"
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; form-action 'self' *"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def invalid_request_page(request: Request, error: str, description: str, status: int = 400) -> HTMLResponse:
    """The Invalid Request Error page (WG3-01 §9.1.1): shown, not redirected, when the redirect is not trusted."""
    return _page(request, "error.html",
                 {"title": "Invalid authorization request", "error": error, "description": description}, status)


# ----------------------------------------------------------------------------------------------------------------
# Token endpoint, PAR, introspection, revocation (machine endpoints)
# ----------------------------------------------------------------------------------------------------------------
async def read_oauth_form(request: Request) -> list[tuple[str, str]]:
    """The form of a machine OAuth endpoint: read_form, then every parameter of RFC 6749 syntax and length."""
    form = await read_form(request)
    problem = parameter_problem(dict(form))
    if problem:
        raise ApiError(400, "invalid_request", problem)
    return form


async def token(request: Request) -> Response:
    try:
        form = await read_oauth_form(request)
    except ApiError as error:
        return error.response()
    gateway = gateway_of(request)
    # On the general threadpool: concurrent token requests of one process must run side by side (a refresh token's
    # guarded rotation is decided between them, tests/test_token_lifecycle.py).
    plain = fast_token.candidate(form, request.headers, request.client.host if request.client else "") \
        if gateway.config.token_fast_path else None
    if plain is not None:
        if plain.grant_type == "client_credentials":
            # it waits on no other request (reads, then one INSERT): the store's few threads, less GIL contention
            body = await anyio.to_thread.run_sync(fast_token.issue, gateway, plain, limiter=store_limiter(request))
        else:
            body = await run_in_threadpool(fast_token.issue, gateway, plain)
        if body is not None:
            metrics.tokens_issued.labels(plain.grant_type).inc()
            return gateway.oauth.handle_response(200, body, default_json_headers)
    oauth_req = oauth_request(request, form=form)
    response = await oauth_call(request, lambda session: gateway.oauth.create_token_response(oauth_req))
    if response.status_code == 200:  # only issued tokens: the grant type is then one the server supports
        metrics.tokens_issued.labels(dict(form).get("grant_type", "")).inc()
    return response


async def pushed_authorization_request(request: Request) -> Response:
    try:
        form = await read_oauth_form(request)
    except ApiError as error:
        return error.response()
    oauth_req = oauth_request(request, form=form)
    gateway = gateway_of(request)

    def push(session: Session) -> Response:
        try:
            body = gateway.oauth.push_authorization_request(oauth_req)
        except OAuth2Error as error:
            error.redirect_uri = None  # PAR answers errors directly, never by redirect (RFC 9126 §2.3)
            return gateway.oauth.handle_error_response(oauth_req, error)
        return gateway.oauth.handle_response(201, body, [])

    return await oauth_call(request, push)


def _endpoint(name: str):
    async def endpoint(request: Request) -> Response:
        try:
            form = await read_oauth_form(request)
        except ApiError as error:
            return error.response()
        oauth_req = oauth_request(request, form=form)
        gateway = gateway_of(request)
        return await oauth_call(request, lambda session: gateway.oauth.create_endpoint_response(name, oauth_req))

    return endpoint


async def registration(request: Request) -> Response:
    """RFC 7591 dynamic registration, CDS profile (WG1-02 §4)."""
    gateway = gateway_of(request)
    try:
        body = await read_json(request)
        result = await in_session(request, lambda session: register(
            session, body, descriptions=gateway.descriptions, box=gateway.box, urls=gateway.urls))
    except ApiError as error:
        return CdsJSONResponse({"error": "invalid_client_metadata", "error_description": error.description},
                               status_code=400)
    except RegistrationError as error:
        return CdsJSONResponse({"error": error.error, "error_description": str(error)}, status_code=400)
    log.info("registered client %s", result["client_id"])
    return CdsJSONResponse(result, status_code=201, headers={"Cache-Control": "no-store"})


# ----------------------------------------------------------------------------------------------------------------
# Authorization endpoint and consent form
# ----------------------------------------------------------------------------------------------------------------
def _redirect_error(redirect_uri: str, error: str, description: str, state: str | None) -> Response:
    params = {"error": error, "error_description": description}
    if state:
        params["state"] = state
    separator = "&" if "?" in redirect_uri else "?"
    return RedirectResponse(redirect_uri + separator + urlencode(params))


def _trusted_redirect(session: Session, client_id: str | None, redirect_uri: str | None) -> str | None:
    client = session.get(Client, client_id) if client_id else None
    if client is None:
        return None
    if redirect_uri:
        return redirect_uri if redirect_uri in client.redirect_uris else None
    return client.default_redirect_uri


async def authorize(request: Request) -> Response:
    gateway = gateway_of(request)
    query = list(request.query_params.multi_items())
    params = dict(query)
    client_id = params.get("client_id")
    request_uri = params.get("request_uri")

    def start(session: Session) -> Response:
        if not request_uri:
            trusted = _trusted_redirect(session, client_id, params.get("redirect_uri"))
            description = "This server requires pushed authorization requests (RFC 9126): send request_uri."
            problem = parameter_problem(params)
            if problem:  # shown here rather than echoed back in a redirect
                return invalid_request_page(request, "invalid_request", problem)
            if trusted is None:
                return invalid_request_page(request, "invalid_request", description)
            return _redirect_error(trusted, "invalid_request", description, params.get("state"))
        stored = gateway.oauth.run(session, gateway.oauth.take_pushed_request, request_uri, client_id)
        session.commit()  # the request_uri is spent even if what follows fails
        if stored is None:
            return invalid_request_page(
                request, "invalid_request_uri", "The request_uri is unknown, expired, already used, or not yours.")
        return _validate_and_render(request, session, stored)

    return await _with_session(request, start)


async def _with_session(request: Request, fn) -> Response:
    from starlette.concurrency import run_in_threadpool

    gateway = gateway_of(request)

    def call() -> Response:
        with gateway.sessions() as session:
            response = fn(session)
            session.commit()
            return response

    return await run_in_threadpool(call)


def _validate(request: Request, session: Session, params: dict[str, str]) -> tuple[Any, GatewayRequest]:
    gateway = gateway_of(request)
    oauth_req = GatewayRequest("GET", gateway.urls.authorization_endpoint, {}, query=params.items(),
                               remote_addr=request.client.host if request.client else "")
    grant = gateway.oauth.run(session, gateway.oauth.get_consent_grant, oauth_req)
    return grant, oauth_req


def _oauth_error_response(request: Request, error: OAuth2Error, state: str | None) -> Response:
    if error.redirect_uri:
        return _redirect_error(error.redirect_uri, error.error, error.description or error.error, state)
    return invalid_request_page(request, error.error, error.description or error.error)


def _check_grant_id(session: Session, params: dict[str, str], client_id: str) -> tuple[str | None, str | None]:
    """WG1-02 §8.3 step 2: a ``cds_grant_id`` must name a grant of this client (before login)."""
    grant_id = params.get("cds_grant_id") or None
    if grant_id is None:
        return None, None
    grant = session.get(Grant, grant_id)
    if grant is None or grant.client_id != client_id:
        return None, "cds_grant_id_invalid_value"
    return grant_id, None


def _validate_and_render(request: Request, session: Session, params: dict[str, str],
                         error_text: str | None = None, customer_id: str | None = None,
                         error_status: int = 401) -> Response:
    gateway = gateway_of(request)
    try:
        _grant, oauth_req = _validate(request, session, params)
    except OAuth2Error as error:
        return _oauth_error_response(request, error, params.get("state"))
    redirect_uri = params.get("redirect_uri") or oauth_req.client.get_default_redirect_uri()
    _grant_id, grant_error = _check_grant_id(session, params, oauth_req.client.get_client_id())
    if grant_error:
        return _redirect_error(redirect_uri, grant_error, "cds_grant_id does not name a grant of this client",
                               params.get("state"))
    _implied, implied_error = _implied_custodian(gateway, oauth_req.scope)
    if implied_error:
        return _redirect_error(redirect_uri, "invalid_scope", implied_error, params.get("state"))
    handle = gateway.box.new_secret(32)
    session.add(PushedRequest(handle_hash=gateway.box.hash(handle), kind="consent",
                              client_id=oauth_req.client.get_client_id(), parameters=params,
                              expires_at=int(time.time()) + CONSENT_SECONDS))
    client: Client = oauth_req.client.row
    return _page(request, "consent.html", {
        "client_name": client.client_name,
        "client_uri": (client.extra or {}).get("client_uri"),
        "requests": consent.request_sections(oauth_req.scope, oauth_req.details.effective, gateway.descriptions,
                                             gateway.config.zone),
        "consent": handle,
        "action": gateway.urls.authorization_endpoint,
        "error": error_text,
        "customer_id": customer_id,
        # With custodians configured the customer picks their utility and signs in there (the upstream hop);
        # without, the local test customers sign in here. Custodian-specific scopes (cds_usage_sandbox) imply
        # their custodian: it is the only choice, preselected. Each utility shows what it will not provide
        # (bridge.consent_hop); one that can provide nothing of the request is shown but cannot be chosen.
        "custodians": [{"id": option.custodian.id, "name": option.custodian.name, "omitted": option.omitted,
                        "refusal": option.refusal} for option in _options(gateway, oauth_req)],
    }, status=error_status if error_text else 200)


def _options(gateway: Any, oauth_req: GatewayRequest) -> list[consent_hop.CustodianOption]:
    details = oauth_req.details
    return consent_hop.options(gateway.config.custodians, oauth_req.scope, details.effective,
                               descriptions=gateway.descriptions, scope_custodians=gateway.scope_custodians,
                               now=details.now or datetime.now(UTC), timezone=gateway.config.timezone)


async def decide(request: Request) -> Response:
    """The consent form's POST: approve (after signing in the test customer) or decline."""
    gateway = gateway_of(request)
    try:
        form = dict(await read_form(request))
    except ApiError as error:
        return invalid_request_page(request, error.error, error.description)

    def finish(session: Session) -> Response:
        handle = form.get("consent", "")
        row = session.get(PushedRequest, gateway.box.hash(handle)) if handle else None
        if row is None or row.kind != "consent" or row.expires_at <= int(time.time()):
            return invalid_request_page(request, "invalid_request",
                                        "This authorization form has expired; start again from the application.")
        params = dict(row.parameters)
        session.delete(row)
        try:
            _grant, oauth_req = _validate(request, session, params)
        except OAuth2Error as error:
            return _oauth_error_response(request, error, params.get("state"))
        state = params.get("state")
        redirect_uri = params.get("redirect_uri") or oauth_req.client.get_default_redirect_uri()
        if form.get("decision") != "approve":
            return _redirect_error(redirect_uri, "access_denied", "The customer declined the request.", state)
        if gateway.config.custodians:
            return _start_upstream(request, session, params, form, oauth_req, redirect_uri)
        customer = _authenticate_customer(gateway.config, form.get("customer_id", ""), form.get("password", ""))
        if customer is None:
            session.rollback()  # keep the form usable: the consent row stays
            return _validate_and_render(request, session, params, "Customer number or password is incorrect.",
                                        form.get("customer_id"))
        grant_id, grant_error = _check_grant_id(session, params, oauth_req.client.get_client_id())
        if grant_error:
            return _redirect_error(redirect_uri, grant_error, "cds_grant_id is not valid", state)
        if grant_id:
            existing = session.get(Grant, grant_id)
            if existing.customer_id not in (None, customer):
                return _redirect_error(redirect_uri, "cds_grant_id_invalid_user",
                                       "cds_grant_id belongs to another customer", state)
        record, receipt_handle = consent.approve(
            session, oauth_req.client.row, scope=oauth_req.scope, authorization_details=oauth_req.details.effective,
            customer_id=customer, state=state, grant_id=grant_id, descriptions=gateway.descriptions, box=gateway.box,
            zone=gateway.config.zone,
        )
        log.info("customer approved grant %s for client %s (receipt %s)", record.grant_id, record.client_id,
                 record.receipt_confirmations[-1])
        email = next((c.email for c in gateway.config.test_customers if c.customer_id == customer), "")
        return _approved_page(request, session, params, record, receipt_handle, customer, narrowed=False,
                              email=email)

    return await _with_session(request, finish)


# ----------------------------------------------------------------------------------------------------------------
# After approval (issue 14 item 6): the customer keeps their receipt, then continues to the third party
# ----------------------------------------------------------------------------------------------------------------
def _approved_page(request: Request, session: Session, params: dict[str, str], record: Grant, receipt_handle: str,
                   customer: str, *, narrowed: bool, email: str | None) -> Response:
    """The confirmation page shown between approval and the redirect: the receipt's link to bookmark or copy (the
    consent page promised it), the receipt by e-mail when an address is known and SMTP is configured, and a button
    that continues to the client. The authorization code is made only when the customer continues (its lifetime is
    a minute; reading and copying may take longer): the continuation is kept one-time, like the consent form."""
    gateway = gateway_of(request)
    handle = gateway.box.new_secret(32)
    session.add(PushedRequest(handle_hash=gateway.box.hash(handle), kind="continue", client_id=record.client_id,
                              parameters={"request": params, "grant_id": record.grant_id, "customer": customer,
                                          "narrowed": narrowed},
                              expires_at=int(time.time()) + CONSENT_SECONDS))
    receipt_row = session.get(Receipt, gateway.box.hash(receipt_handle))
    context = consent.receipt_context(receipt_row, record)
    receipt_url = gateway.urls.receipt(receipt_handle)
    smtp = gateway.config.smtp
    mailed_to = email if email and smtp is not None else None
    response = _page(request, "approved.html", {
        **context,
        "receipt_url": receipt_url,
        "continue_action": gateway.urls.authorization_endpoint + "/continue",
        "continuation": handle,
        "client_name": record_client_name(session, record),
        "mailed_to": _masked(mailed_to) if mailed_to else None,
    })
    if mailed_to:
        notice = receipt_mail.ReceiptNotice(
            to=mailed_to, receipt_url=receipt_url, confirmation=context["receipt"]["confirmation"],
            client_name=context["snapshot"]["client_name"], created_local=context["receipt"]["created_local"],
            server_name=gateway.config.server.name)
        # after the response (and the commit that makes the receipt exist): a slow mail server never holds the page
        response.background = BackgroundTask(_mail_receipt, notice, smtp)
    return response


def record_client_name(session: Session, record: Grant) -> str:
    client = session.get(Client, record.client_id)
    return client.client_name if client is not None else record.client_id


def _masked(address: str) -> str:
    """``a•••@example.com``: enough for the customer to recognise, little for anyone looking over their shoulder."""
    local, _at, domain = address.rpartition("@")
    return f"{local[:1]}•••@{domain}"


def _mail_receipt(notice: receipt_mail.ReceiptNotice, smtp: Any) -> None:
    """Send the receipt; a failure is logged (never the link: it is the customer's revoke credential)."""
    server = receipt_mail.MailServer(host=smtp.host, port=smtp.port, sender=smtp.sender, tls=smtp.tls,
                                     username=smtp.username, password=smtp.password,
                                     timeout_seconds=smtp.timeout_seconds)
    try:
        receipt_mail.send(receipt_mail.receipt_message(notice, smtp.sender), server)
    except (OSError, smtplib.SMTPException) as error:
        log.warning("receipt %s could not be sent by e-mail: %s: %s", notice.confirmation, type(error).__name__,
                    error)
        return
    log.info("receipt %s sent by e-mail", notice.confirmation)


async def continue_to_client(request: Request) -> Response:
    """The confirmation page's Continue button: the authorization response (code and state) to the client's
    redirect URI (RFC 6749 §4.1.2), unless the customer revoked the grant from the receipt meanwhile."""
    gateway = gateway_of(request)
    try:
        form = dict(await read_form(request))
    except ApiError as error:
        return invalid_request_page(request, error.error, error.description)

    def finish(session: Session) -> Response:
        handle = form.get("continue", "")
        row = session.get(PushedRequest, gateway.box.hash(handle)) if handle else None
        if row is None or row.kind != "continue" or row.expires_at <= int(time.time()):
            return invalid_request_page(request, "invalid_request", "This page has expired or was already used. "
                                        "Your authorization stands: manage it from your receipt.")
        taken = dict(row.parameters)
        session.delete(row)
        params: dict[str, str] = taken["request"]
        try:
            grant, oauth_req = _validate(request, session, params)
        except OAuth2Error as error:
            return _oauth_error_response(request, error, params.get("state"))
        record = session.get(Grant, taken["grant_id"])
        redirect_uri = params.get("redirect_uri") or oauth_req.client.get_default_redirect_uri()
        if record is None or effective_status(record) in NO_ACCESS:
            return _redirect_error(redirect_uri, "access_denied", "The customer revoked the authorization.",
                                   params.get("state"))
        if taken.get("narrowed"):
            gateway.oauth.narrow_consent(oauth_req, record.enabled_scope, record.enabled_authorization_details)
        oauth_req.grant_record = record
        oauth_req.user = taken["customer"]
        return gateway.oauth.run(session, gateway.oauth.create_authorization_response, oauth_req, taken["customer"],
                                 grant)

    response = await _with_session(request, finish)
    if response.status_code == 302:
        response.status_code = 303  # answering a POST: the browser follows with a GET
    return response


# ----------------------------------------------------------------------------------------------------------------
# The upstream hop (issue 5): the customer's custodian authorizes us, then the CDS flow finishes
# ----------------------------------------------------------------------------------------------------------------
def custodian_zone(config: GatewayConfig, custodian: CustodianConfig):
    """The zone a custodian's customers read dates in: its configured local time, else the gateway's."""
    from zoneinfo import ZoneInfo

    return ZoneInfo(custodian.timezone) if custodian.timezone else config.zone


def _custodian(config: GatewayConfig, custodian_id: str | None) -> CustodianConfig | None:
    return next((c for c in config.custodians if c.id == custodian_id), None) if custodian_id else None


def _implied_custodian(gateway: Any, scope: str | None) -> tuple[str | None, str | None]:
    return consent_hop.implied_custodian(gateway.scope_custodians, scope)


def _start_upstream(request: Request, session: Session, params: dict[str, str], form: dict[str, str],
                    oauth_req: GatewayRequest, redirect_uri: str) -> Response:
    """Approved with a utility chosen: keep the request under a fresh ``state`` and send the customer upstream."""
    gateway = gateway_of(request)
    state = params.get("state")
    implied, implied_error = _implied_custodian(gateway, oauth_req.scope)
    if implied_error:
        return _redirect_error(redirect_uri, "invalid_scope", implied_error, state)
    chosen = form.get("custodian") or implied
    if implied is not None and chosen != implied:
        session.rollback()  # keep the form usable: the consent row stays
        name = _custodian(gateway.config, implied).name
        return _validate_and_render(request, session, params,
                                    f"This application asked for data from {name}; only {name} can authorize it.",
                                    error_status=400)
    custodian = _custodian(gateway.config, chosen)
    if custodian is None:
        session.rollback()  # keep the form usable: the consent row stays
        return _validate_and_render(request, session, params, "Choose your utility to continue.",
                                    error_status=400)
    _grant_id, grant_error = _check_grant_id(session, params, oauth_req.client.get_client_id())
    if grant_error:
        return _redirect_error(redirect_uri, grant_error, "cds_grant_id is not valid", state)
    details = oauth_req.details
    try:
        plan = consent_hop.plan_for(custodian, oauth_req.scope, details.effective, descriptions=gateway.descriptions,
                                    scope_custodians=gateway.scope_custodians, now=details.now or datetime.now(UTC),
                                    timezone=gateway.config.timezone)
    except CustodianCannotProvide as error:
        # The page offered this utility as unable (or the configuration changed since): ask again, never fail the
        # client's request after the customer approved something that can still go to another utility.
        session.rollback()  # keep the form usable: the consent row stays
        return _validate_and_render(request, session, params, f"{custodian.name} cannot provide this request: "
                                    f"{error}", error_status=400)
    scope = plan.scope
    upstream_state = upstream.start(session, gateway.box, client_id=oauth_req.client.get_client_id(),
                                    request=params, custodian_id=custodian.id, scope=scope)
    location = upstream.client(custodian, gateway.config.issuer).authorization_url(scope, upstream_state)
    log.info("consent for client %s continues at custodian %s", oauth_req.client.get_client_id(), custodian.id)
    return Response(status_code=303, headers={"Location": location, "Cache-Control": "no-store",
                                              "Referrer-Policy": "no-referrer"})


async def custodian_callback(request: Request) -> Response:
    """The custodian's redirect back (``/custodians/{id}/callback``): only our stored ``state`` is trusted."""
    from starlette.concurrency import run_in_threadpool

    gateway = gateway_of(request)
    custodian = _custodian(gateway.config, request.path_params["custodian_id"])
    if custodian is None:
        return invalid_request_page(request, "invalid_request", "No such data custodian.", 404)
    query = request.url.query
    params = dict(request.query_params)
    expired = "This authorization has expired or was already completed; start again from the application."

    def take(session: Session) -> Response | dict[str, Any]:
        pending = upstream.take(session, gateway.box, params.get("state"), custodian.id)
        session.commit()  # the state is spent whatever follows
        if pending is None:
            return invalid_request_page(request, "invalid_request", expired)
        return pending

    taken = await _with_session(request, take)
    if isinstance(taken, Response):
        return taken
    cds_params: dict[str, str] = taken["request"]
    cds_state = cds_params.get("state")
    tokens = None
    failure: tuple[str, str] | None = None
    if "error" in params:
        failure = ("access_denied", f"{custodian.name} did not authorize the request.")
    else:
        client = upstream.client(custodian, gateway.config.issuer)
        try:
            # our own callback URL with the custodian's query: Authlib checks the state and reads the code
            tokens = await run_in_threadpool(client.exchange_code,
                                             f"{upstream.callback_url(gateway.config.issuer, custodian.id)}?{query}",
                                             params.get("state", ""))
        except CustodianError as error:
            log.warning("code exchange with custodian %s failed: %s", custodian.id, error)
            failure = ("temporarily_unavailable", f"{custodian.name} could not complete the authorization.")

    def finish(session: Session) -> Response:
        try:
            _grant, oauth_req = _validate(request, session, cds_params)
        except OAuth2Error as error:
            return _oauth_error_response(request, error, cds_state)
        redirect_uri = cds_params.get("redirect_uri") or oauth_req.client.get_default_redirect_uri()
        if failure is not None:
            return _redirect_error(redirect_uri, failure[0], failure[1], cds_state)
        foreign = upstream.foreign_uris(custodian, resourceURI=tokens.resource_uri,
                                        authorizationURI=tokens.authorization_uri,
                                        customerResourceURI=tokens.customer_resource_uri)
        if foreign:  # never stored: the workers would fetch them with the customer's token
            log.warning("custodian %s named URIs that are not its resources: %s", custodian.id, "; ".join(foreign))
            return _redirect_error(redirect_uri, "temporarily_unavailable",
                                   f"{custodian.name} answered with resources outside its configured endpoint.",
                                   cds_state)
        try:
            customer = upstream.customer_key(custodian.id, tokens)
        except ValueError:
            return _redirect_error(redirect_uri, "temporarily_unavailable",
                                   f"{custodian.name} answered without naming the authorization.", cds_state)
        grant_id, grant_error = _check_grant_id(session, cds_params, oauth_req.client.get_client_id())
        if grant_error:
            return _redirect_error(redirect_uri, grant_error, "cds_grant_id is not valid", cds_state)
        if grant_id and session.get(Grant, grant_id).customer_id not in (None, customer):
            return _redirect_error(redirect_uri, "cds_grant_id_invalid_user",
                                   "cds_grant_id belongs to another customer", cds_state)
        now = datetime.now(UTC)
        granted = tokens.scope.strip() or taken["scope"]  # the utility may grant less than was asked
        try:
            plan = consent_hop.plan_for(custodian, oauth_req.scope, oauth_req.details.effective,
                                        descriptions=gateway.descriptions, scope_custodians=gateway.scope_custodians,
                                        now=oauth_req.details.now or now, timezone=gateway.config.timezone,
                                        offered=[granted])
        except CustodianCannotProvide as error:
            log.warning("custodian %s granted %r, which serves none of the request: %s", custodian.id, granted, error)
            return _redirect_error(redirect_uri, "access_denied",
                                   f"{custodian.name} authorized none of the requested data.", cds_state)
        record, receipt_handle = consent.approve(
            session, oauth_req.client.row, scope=oauth_req.scope, authorization_details=oauth_req.details.effective,
            customer_id=customer, state=cds_state, grant_id=grant_id, descriptions=gateway.descriptions,
            box=gateway.box, zone=custodian_zone(gateway.config, custodian), now=now, eta=now + upstream.PENDING_ETA,
            enabled_scope=" ".join(plan.enabled_scopes), enabled_authorization_details=plan.enabled_details,
            omitted=[o.text for o in plan.omissions],
        )
        row = upstream.bind(session, gateway.box, grant_id=record.grant_id, custodian_id=custodian.id,
                            customer_id=customer, scope=granted, tokens=tokens, now=now)
        lifecycle.first_fetch(session, row, now)  # published once this transaction commits (gateway.job_publisher)
        log.info("custodian %s authorized grant %s for client %s (receipt %s)", custodian.id, record.grant_id,
                 record.client_id, record.receipt_confirmations[-1])
        # the custodian's customer data, when an earlier authorization of this customer brought an address
        return _approved_page(request, session, cds_params, record, receipt_handle, customer,
                              narrowed=not plan.complete, email=consent.contact_email(session, customer))

    return await _with_session(request, finish)


def _authenticate_customer(config: GatewayConfig, customer_id: str, password: str) -> str | None:
    for customer in config.test_customers:
        if hmac.compare_digest(customer.customer_id.encode(), customer_id.encode()) and hmac.compare_digest(
            customer.password.encode(), password.encode()
        ):
            return customer.customer_id
    return None


# ----------------------------------------------------------------------------------------------------------------
# Default redirect URI and receipts (WG1-02 §4.3, WG3-01 §9.3–9.4)
# ----------------------------------------------------------------------------------------------------------------
async def default_redirect(request: Request) -> Response:
    gateway = gateway_of(request)
    params = request.query_params
    if "error" in params:
        return _page(request, "error.html", {
            "title": "The authorization did not complete",
            "error": params.get("error", ""),
            "description": params.get("error_description", ""),
        }, status=400)
    code = params.get("code", "")

    def show(session: Session) -> Response:
        row = session.get(AuthorizationCode, gateway.box.hash(code)) if code else None
        grant = session.get(Grant, row.grant_id) if row else None
        receipt = None
        if grant is not None:
            receipt = session.query(Receipt).filter(Receipt.grant_id == grant.grant_id,
                                                    Receipt.superseded_by.is_(None)).first()
        if receipt is None:
            return _page(request, "error.html", {"title": "Unknown authorization", "error": "invalid_request",
                                                 "description": "This link does not name an authorization."}, 400)
        return _page(request, "receipt.html", {**consent.receipt_context(receipt, grant), "revoke_action": None})

    return await _with_session(request, show)


def _receipt_not_found(request: Request) -> HTMLResponse:
    return _page(request, "error.html", {"title": "Receipt not found", "error": "not_found",
                                         "description": "No receipt exists at this address."}, 404)


async def receipt(request: Request) -> Response:
    gateway = gateway_of(request)
    handle = request.path_params["handle"]

    def show(session: Session) -> Response:
        found = consent.receipt_view(session, gateway.box, handle)
        if found is None:
            return _receipt_not_found(request)
        context = consent.receipt_context(*found)
        context["status"] = effective_status(found[1])
        return _page(request, "receipt.html", {**context, "revoke_action": gateway.urls.receipt(handle) + "/revoke"})

    return await _with_session(request, show)


async def revoke_from_receipt(request: Request) -> Response:
    """Revoke without login (WG3-01 §9.4): the unguessable receipt URL is the credential."""
    gateway = gateway_of(request)
    handle = request.path_params["handle"]

    def revoke(session: Session) -> Response:
        found = consent.receipt_view(session, gateway.box, handle)
        if found is None:
            return _receipt_not_found(request)
        _receipt, grant = found
        if effective_status(grant) not in NO_ACCESS:
            gateway.grant_closed(session, grant.grant_id, datetime.now(UTC))  # revoke at the custodian too
            grant.status = "revoked"
            grant.enabled_scope = ""
            grant.enabled_authorization_details = []
            grant.modified = datetime.now(UTC)
            log.info("customer revoked grant %s from its receipt", grant.grant_id)
        return RedirectResponse(gateway.urls.receipt(handle))

    response = await _with_session(request, revoke)
    if isinstance(response, RedirectResponse):
        response.status_code = 303
    return response


def routes() -> list[Route]:
    return [
        Route("/oauth/token", token, methods=["POST"]),
        Route("/oauth/par", pushed_authorization_request, methods=["POST"]),
        Route("/oauth/introspect", _endpoint("introspection"), methods=["POST"]),
        Route("/oauth/revoke", _endpoint("revocation"), methods=["POST"]),
        Route("/oauth/register", registration, methods=["POST"]),
        Route("/oauth/authorize", authorize, methods=["GET"]),
        Route("/oauth/authorize", decide, methods=["POST"]),
        Route("/oauth/authorize/continue", continue_to_client, methods=["POST"]),
        Route("/oauth/default-redirect", default_redirect, methods=["GET"]),
        Route("/custodians/{custodian_id}/callback", custodian_callback, methods=["GET"]),
        Route("/receipts/{handle}", receipt, methods=["GET"]),
        Route("/receipts/{handle}/revoke", revoke_from_receipt, methods=["POST"]),
    ]
