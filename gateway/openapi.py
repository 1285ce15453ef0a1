"""The gateway's OpenAPI 3.1 document (``/openapi.json``) and the data of its human reference page (``/docs/api``).

Every route the gateway serves is an entry of :data:`OPERATIONS`, keyed by (method, path) exactly as the route is
declared; ``tests/test_openapi.py`` fails for a route without an entry (and for an entry without a route), so a new
endpoint is added here with its route. An entry says, in a few calls, what a client must send (parameters, body,
credentials) and every answer it may get: :func:`json`, :func:`html`, :func:`text`, :func:`redirect` and
:func:`errors` build the responses, the schemas of CDS objects come from :mod:`cds.schemas`.

Security schemes: ``clientSecretBasic`` (RFC 6749 §2.3.1, the only client authentication of this server),
``clientAdminBearer`` (a ``cds_client_admin`` token, WG1-02 §5–8) and ``customerDataBearer`` (a token of a
customer-data scope, or of its Grant Admin scope, WG3-01 §10), both RFC 6750 bearer tokens, and ``oauth2`` naming
the flows and scopes for tools that read them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cds.schemas import DATA_LISTINGS, SCHEMAS, STRING, ref
from cds.urls import Urls

Schema = dict[str, Any]
PATHS = Urls("")  # the published paths, without scheme and host

# ---------------------------------------------------------------------------------------------- responses


def json(description: str, schema: Schema, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def html(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/html": {"schema": STRING}}}


def text(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"text/plain": {"schema": STRING}}}


def redirect(description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"Location": {"schema": {"type": "string"},
                                                                  "description": "where the browser goes next"}}}


def empty(description: str) -> dict[str, Any]:
    return {"description": description}


ERROR = ref("OAuthError")
ERROR_TEXTS = {
    400: "Invalid request: a malformed body, parameter or cursor, or a URL with a NUL or a control character",
    401: "Missing or invalid credentials (WWW-Authenticate says which)",
    403: "The credentials do not allow this (insufficient_scope, access_denied)",
    404: "No such object, or one of another registration (WG1-02 tenancy)",
    405: "Method not allowed",
    413: "The body is larger than this endpoint accepts (max_body_bytes; message_max_bytes for Messages)",
    415: "Unsupported content type",
    429: "Too many failed client authentications from this address for this client (cds.auth_throttle); "
         "Retry-After says when to try again",
}


def errors(*statuses: int, plain: tuple[int, ...] = ()) -> dict[int, dict[str, Any]]:
    """JSON error answers (``{"error", "error_description"}``) for ``statuses``; ``plain`` ones are text."""
    answers: dict[int, dict[str, Any]] = {}
    for status in statuses:
        answer = json(ERROR_TEXTS[status], ERROR)
        if status in plain:  # the request-limits middleware and the HTML side answer these in other forms too
            answer["content"]["text/plain"] = {"schema": STRING}
        answers[status] = answer
    return answers


NOT_MODIFIED = {304: empty("Not modified (If-None-Match matched the ETag)")}
ETAG = {"ETag": {"schema": {"type": "string"}, "description": "strong entity tag of the document"}}

# ---------------------------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Operation:
    summary: str
    tag: str
    responses: dict[int, dict[str, Any]]
    description: str = ""
    security: tuple[str, ...] = ()  # scheme names; empty: public
    parameters: tuple[dict[str, Any], ...] = ()
    body: dict[str, Any] | None = None  # media type → schema
    body_required: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def as_openapi(self, operation_id: str) -> dict[str, Any]:
        document: dict[str, Any] = {"operationId": operation_id, "summary": self.summary, "tags": [self.tag]}
        if self.description:
            document["description"] = self.description
        if self.parameters:
            document["parameters"] = list(self.parameters)
        if self.body is not None:
            document["requestBody"] = {"required": self.body_required,
                                       "content": {media: {"schema": schema} for media, schema in self.body.items()}}
        document["responses"] = {str(status): answer for status, answer in sorted(with_limits(self.responses).items())}
        document["security"] = [{name: []} for name in self.security] if self.security else []
        return {**document, **self.extra}


def query(name: str, description: str, schema: Schema | None = None, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": required, "description": description,
            "schema": schema or {"type": "string"}}


def path_param(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "description": description, "schema": {"type": "string"}}


CURSOR = query("cursor", "An opaque page position: follow the next/previous links as given")
IDS = "space-separated"
FORM = "application/x-www-form-urlencoded"
BASIC = ("clientSecretBasic",)
ADMIN = ("clientAdminBearer",)
DATA = ("customerDataBearer",)
HTML_ERRORS = {400: html("The Invalid Request Error page (WG3-01 §9.1.1)")}
#: What any request may get from the request-limits middleware (gateway.request_limits) and Starlette before its
#: route runs: merged into every operation's answers (as_openapi), beside what the route itself answers.
BOUNDED = errors(400, 413, plain=(400, 413))


def with_limits(responses: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    merged = {status: {**answer, "content": dict(answer.get("content", {}))} for status, answer in responses.items()}
    for status, answer in BOUNDED.items():
        if status not in merged:
            merged[status] = answer
            continue
        merged[status]["content"] = {**answer["content"], **merged[status]["content"]}
    return {status: {k: v for k, v in answer.items() if k != "content" or v} for status, answer in merged.items()}


def _form(properties: dict[str, Schema], required: tuple[str, ...] = ()) -> dict[str, Schema]:
    schema: Schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    return {FORM: schema}


TOKEN_FORM = _form({
    "grant_type": {"type": "string", "enum": ["client_credentials", "authorization_code", "refresh_token"]},
    "scope": STRING, "authorization_details": {"type": "string", "description": "JSON (RFC 9396)"},
    "code": STRING, "redirect_uri": STRING, "code_verifier": STRING, "refresh_token": STRING,
}, ("grant_type",))
PAR_FORM = _form({
    "response_type": {"type": "string", "enum": ["code"]}, "client_id": STRING, "redirect_uri": STRING,
    "scope": STRING, "state": STRING, "code_challenge": STRING,
    "code_challenge_method": {"type": "string", "enum": ["S256"]},
    "authorization_details": {"type": "string", "description": "JSON (RFC 9396)"}, "cds_grant_id": STRING,
}, ("response_type", "client_id", "code_challenge", "code_challenge_method"))
TOKEN_FORM_ONLY = _form({"token": STRING, "token_type_hint": STRING}, ("token",))
CONSENT_FORM = _form({"consent": STRING, "decision": {"type": "string", "enum": ["approve", "decline"]},
                      "customer_id": STRING, "password": STRING, "custodian": STRING}, ("consent",))
XML_BODY = {media: {"type": "string", "description": "an ESPI BatchList (espi.md §4.1)"}
            for media in ("application/atom+xml", "application/xml", "text/xml")}


def _discovery() -> dict[tuple[str, str], Operation]:
    public = {**NOT_MODIFIED}
    return {
        ("GET", "/.well-known/cds-server-metadata.json"): Operation(
            "CDS Server Metadata (WG1-01 §3)", "Discovery",
            {200: json("The server's metadata", ref("ServerMetadata"), ETAG), **public}),
        ("GET", "/.well-known/carbon-data-spec.json"): Operation(
            "CDS Server Metadata at the legacy path (CDSC-WG1-01 until 2025)", "Discovery",
            {200: json("The same object as /.well-known/cds-server-metadata.json", ref("ServerMetadata"), ETAG),
             **public}),
        ("GET", "/cds/coverage"): Operation(
            "Coverage entries (WG1-01 §4)", "Discovery",
            {200: json("A page of coverage entries, newest first", ref("CoverageListing"), ETAG), **public},
            parameters=(query("ids", f"Only these coverage entry ids ({IDS})"), CURSOR)),
        ("GET", "/.well-known/oauth-authorization-server"): Operation(
            "Authorization Server Metadata (RFC 8414, WG1-02 §3)", "Discovery",
            {200: json("Endpoints, scopes and their descriptions", ref("AuthorizationServerMetadata"), ETAG),
             **public}),
        ("GET", "/cds-api/v1/clients/{client_id}/cds-server-metadata"): Operation(
            "A client's CDS Server Metadata (WG1-02 §5.2 cds_server_metadata)", "Discovery",
            {200: json("Metadata whose oauth_metadata is the client's own", ref("ServerMetadata"), ETAG), **public,
             **errors(401, 403, 404)},
            security=ADMIN, parameters=(path_param("client_id", "A client of the caller's registration"),)),
        ("GET", "/cds-api/v1/clients/{client_id}/oauth-metadata"): Operation(
            "A client's Authorization Server Metadata (its scopes only)", "Discovery",
            {200: json("RFC 8414 metadata restricted to the client's scopes", ref("AuthorizationServerMetadata"),
                       ETAG), **public, **errors(401, 403, 404)},
            security=ADMIN, parameters=(path_param("client_id", "A client of the caller's registration"),)),
        ("GET", "/test-accounts"): Operation(
            "The sandbox test customers' logins (cds_test_accounts)", "Pages", {200: html("The page")}),
        ("GET", "/register"): Operation(
            "How to register a client (cds_human_registration)", "Pages", {200: html("The page")}),
        ("GET", "/docs"): Operation(
            "Documentation: support, OAuth policy, terms, metadata URLs", "Pages",
            {200: html("The page")}),
        ("GET", "/docs/{page}"): Operation(
            "Documentation of scopes and fields (the documentation URLs of the metadata)", "Pages",
            {200: html("The page"), 404: html("No such page")},
            parameters=(path_param("page", "A documentation page the metadata links to"),)),
    }


def _oauth() -> dict[tuple[str, str], Operation]:
    machine = {**errors(401, 429)}
    return {
        ("POST", "/oauth/token"): Operation(
            "Token endpoint (RFC 6749 §3.2): client_credentials, authorization_code with PKCE, refresh_token",
            "OAuth", {200: json("Tokens", ref("TokenResponse")), **machine},
            security=BASIC, body=TOKEN_FORM),
        ("POST", "/oauth/par"): Operation(
            "Pushed Authorization Request (RFC 9126): required before /oauth/authorize", "OAuth",
            {201: json("A one-time request_uri", ref("PushedAuthorizationResponse")), **machine},
            security=BASIC, body=PAR_FORM),
        ("POST", "/oauth/introspect"): Operation(
            "Token introspection (RFC 7662)", "OAuth",
            {200: json("Whether the token is active, and what it allows", ref("IntrospectionResponse")),
             **machine},
            security=BASIC, body=TOKEN_FORM_ONLY),
        ("POST", "/oauth/revoke"): Operation(
            "Token revocation (RFC 7009)", "OAuth",
            {200: json("Revoked (or unknown: the same answer)", {"type": "object"}), **machine},
            security=BASIC, body=TOKEN_FORM_ONLY),
        ("POST", "/oauth/register"): Operation(
            "Dynamic client registration (RFC 7591, WG1-02 §4)", "OAuth",
            {201: json("The admin client and its secret; the other clients are in the Clients API",
                       ref("RegistrationResponse"))},
            body={"application/json": ref("RegistrationRequest")}),
        ("GET", "/oauth/authorize"): Operation(
            "Authorization endpoint: the consent page (WG3-01 §9)", "Consent",
            {200: html("The consent page"), 302: redirect("An error sent back to the client's redirect URI"),
             **HTML_ERRORS},
            parameters=(query("client_id", "The client"), query("request_uri", "From /oauth/par"))),
        ("POST", "/oauth/authorize"): Operation(
            "The consent form: approve (signing in, or choosing the utility) or decline", "Consent",
            {200: html("The receipt's confirmation page after approval (its Continue button makes the code), or the "
                       "form again, with what to correct"),
             302: redirect("Back to the client with an error (declined, or a request no longer valid)"),
             303: redirect("On to the customer's utility (the upstream authorization)"),
             401: html("The form again: customer number or password incorrect"), **HTML_ERRORS},
            body=CONSENT_FORM),
        ("POST", "/oauth/authorize/continue"): Operation(
            "Continue to the client after the receipt's confirmation page: the authorization code is made now",
            "Consent",
            {303: redirect("Back to the client with a code, or access_denied when the customer revoked meanwhile"),
             **HTML_ERRORS},
            body=_form({"continue": STRING}, ("continue",)),
            description="The continuation is one-time and lasts 30 minutes; an expired, forged or spent one shows "
                        "an error page (the authorization stands: the receipt manages it)."),
        ("GET", "/oauth/default-redirect"): Operation(
            "The default redirect URI of sandbox clients: shows the receipt (WG1-02 §4.3)", "Consent",
            {200: html("The Authorization Receipt"), **HTML_ERRORS},
            parameters=(query("code", "The authorization code"), query("state", "The client's state"),
                        query("error", "An error"), query("error_description", "Its description"))),
        ("GET", "/custodians/{custodian_id}/callback"): Operation(
            "The customer's utility sends the customer back here (the upstream authorization's redirect URI)",
            "Consent",
            {200: html("The receipt's confirmation page (its Continue button makes the code)"),
             302: redirect("Back to the client with an error"), **HTML_ERRORS,
             404: html("No such custodian")},
            parameters=(path_param("custodian_id", "A configured custodian"), query("code", "The utility's code"),
                        query("state", "Our state"), query("error", "The utility's error"))),
        ("GET", "/receipts/{handle}"): Operation(
            "An Authorization Receipt (WG3-01 §9.3): its unguessable URL is the credential", "Consent",
            {200: html("The receipt, with a revoke button while the Grant gives access"),
             404: html("No receipt at this address")},
            parameters=(path_param("handle", "The receipt's secret handle"),)),
        ("POST", "/receipts/{handle}/revoke"): Operation(
            "Revoke the receipt's Grant without logging in (WG3-01 §9.4)", "Consent",
            {303: redirect("Back to the receipt, now showing the Grant revoked"),
             404: html("No receipt at this address")},
            parameters=(path_param("handle", "The receipt's secret handle"),)),
    }


def _admin() -> dict[tuple[str, str], Operation]:
    def call(summary: str, answer: dict[int, dict[str, Any]], *, body: str | None = None,
             parameters: tuple[dict[str, Any], ...] = (), found: bool = True) -> Operation:
        statuses = (401, 403, 404) if found else (401, 403)
        return Operation(summary, "Admin APIs", {**answer, **errors(*statuses)}, security=ADMIN,
                         parameters=parameters, body={"application/json": ref(body)} if body else None)

    client_id = path_param("client_id", "A client of the caller's registration")
    credential_id = path_param("credential_id", "A credential of the caller's registration")
    grant_id = path_param("grant_id", "A grant of a client of the caller's registration")
    message_id = path_param("message_id", "A message of the caller's registration")
    after = query("after", "Created at or after (RFC 3339)")
    before = query("before", "Created at or before (RFC 3339)")
    return {
        ("GET", PATHS.clients_api): call(
            "Clients of the caller's registration (WG1-02 §5.3)",
            {200: json("A page of clients, last modified first", ref("ClientListing"))},
            parameters=(query("client_ids", f"Only these clients ({IDS})"), CURSOR), found=False),
        ("GET", PATHS.client("{client_id}")): call(
            "A client (WG1-02 §5.4)", {200: json("The client", ref("Client"))}, parameters=(client_id,)),
        ("PUT", PATHS.client("{client_id}")): call(
            "Replace a client's editable fields (WG1-02 §5.5)", {200: json("The client", ref("Client"))},
            body="ClientUpdate", parameters=(client_id,)),
        ("GET", PATHS.credentials_api): call(
            "Credentials (WG1-02 §7.3)", {200: json("A page of credentials", ref("CredentialListing"))},
            parameters=(query("credential_ids", IDS), query("client_ids", IDS), after, before, CURSOR), found=False),
        ("POST", PATHS.credentials_api): call(
            "A new client secret (WG1-02 §7.4)", {201: json("The credential", ref("Credential"))},
            body="CredentialCreate", found=True),
        ("GET", PATHS.credential("{credential_id}")): call(
            "A credential (WG1-02 §7.5)", {200: json("The credential", ref("Credential"))},
            parameters=(credential_id,)),
        ("PATCH", PATHS.credential("{credential_id}")): call(
            "Expire a credential (WG1-02 §7.6)", {200: json("The credential", ref("Credential"))},
            body="CredentialUpdate", parameters=(credential_id,)),
        ("GET", PATHS.grants_api): call(
            "Grants (WG1-02 §8.4)", {200: json("A page of grants", ref("GrantListing"))},
            parameters=(*(query(name, IDS) for name in ("grant_ids", "client_ids", "statuses", "scopes", "parents",
                                                         "states", "receipt_confirmations")), after, before, CURSOR),
            found=False),
        ("GET", PATHS.grant("{grant_id}")): call(
            "A grant (WG1-02 §8.6)", {200: json("The grant", ref("Grant"))}, parameters=(grant_id,)),
        ("PATCH", PATHS.grant("{grant_id}")): call(
            "Close a grant (WG1-02 §8.7)", {200: json("The grant", ref("Grant"))}, body="GrantUpdate",
            parameters=(grant_id,)),
        ("GET", PATHS.messages_api): call(
            "Messages: outstanding, unread and read (WG1-02 §6.3)",
            {200: json("Messages by state", ref("MessageListing"))},
            parameters=(query("list", "Only one list", {"type": "string", "enum": ["outstanding", "unread", "read"]}),
                        CURSOR), found=False),
        ("POST", PATHS.messages_api): call(
            "Send a message (WG1-02 §6.4)", {201: json("The message", ref("Message"))}, body="MessageCreate",
            found=True),
        ("GET", PATHS.message("{message_id}")): call(
            "A message (WG1-02 §6.5)", {200: json("The message", ref("Message"))}, parameters=(message_id,)),
        ("PATCH", PATHS.message("{message_id}")): call(
            "Mark a message read or change its status (WG1-02 §6.6)", {200: json("The message", ref("Message"))},
            body="MessageUpdate", parameters=(message_id,)),
    }


def _data() -> dict[tuple[str, str], Operation]:
    from cds.data_api import FILTERS

    operations = {}
    for listing, (_item, listing_schema) in DATA_LISTINGS.items():
        parameters = [query(name, f"Filter ({IDS} values; dates as RFC 3339 full-dates)") for name in
                      FILTERS[listing]]
        operations[("GET", PATHS.data_api(listing))] = Operation(
            f"{listing.replace('_', ' ').capitalize()} the token's grant may read (WG3-01 §10)", "Customer data",
            {200: json("A page, projected by the grant's authorization details", ref(listing_schema)),
             **errors(401, 403)},
            security=DATA, parameters=(*parameters, CURSOR))
    return operations


def _notifications() -> dict[tuple[str, str], Operation]:
    answers = {200: empty("Accepted: the jobs are stored (fetching is the workers')"), 400: text("Not a BatchList"),
               415: text(ERROR_TEXTS[415]), 413: json(ERROR_TEXTS[413], ERROR)}
    return {
        ("POST", "/espi/1_1/Notification"): Operation(
            "ESPI BatchList notification (FB_39 PUSH); each URI's custodian is found by host and path", "ESPI",
            answers, body=XML_BODY,
            description="Every URI must belong to a configured custodian's hosts; others are refused and logged."),
        ("POST", "/custodians/{custodian_id}/notify"): Operation(
            "ESPI BatchList notification for one custodian", "ESPI",
            {**answers, 404: text("No such custodian")}, body=XML_BODY,
            parameters=(path_param("custodian_id", "A configured custodian"),)),
    }


OPERATOR = ("operatorBasic",)
_OPERATOR_REFUSALS = {
    401: text("Sign in as the operator (HTTP Basic; WWW-Authenticate)"),
    404: text("The dashboard is off: no operator_password is configured"),
    429: text("Too many failed sign-ins from this address; Retry-After says when to try again"),
}


def _operations_dashboard() -> dict[tuple[str, str], Operation]:
    """The ops team's pages (docs/operations.md) and the Prometheus exposition."""
    return {
        ("GET", "/ops"): Operation(
            "The ops dashboard: queues, workers, jobs per custodian and kind, the last hour's activity, grants, "
            "deferred requests, dead jobs with a Retry button", "Operations",
            {200: html("The dashboard"), **_OPERATOR_REFUSALS}, security=OPERATOR),
        ("GET", "/ops/status"): Operation(
            "The dashboard as JSON (what greenbridge status prints)", "Operations",
            {200: json("The bridge's state", {"type": "object"}), **_OPERATOR_REFUSALS}, security=OPERATOR),
        ("POST", "/ops/jobs/{job_id}/retry"): Operation(
            "Retry a dead or failed job with a fresh series of attempts (the dashboard's form)", "Operations",
            {303: redirect("Back to /ops, saying whether the job was queued again"),
             400: text("Not the dashboard's form"), 403: text("A missing, stale or forged form token"),
             **_OPERATOR_REFUSALS},
            security=OPERATOR, parameters=(path_param("job_id", "The job"),),
            body=_form({"csrf": STRING}, ("csrf",))),
        ("GET", "/metrics"): Operation(
            "Prometheus text exposition of the gateway's and the local workers' processes", "Operations",
            {200: {"description": "The metrics", "content": {"text/plain": {"schema": STRING}}}}),
    }


def demo_operations() -> dict[tuple[str, str], Operation]:
    """The Try-it walkthrough's pages: served only when the demo is on (``demo``)."""
    return {
        ("GET", "/try"): Operation("Try it: the demo third party's start page", "Pages",
                                   {200: html("The walkthrough's start, or its progress")}),
        ("POST", "/try/start"): Operation(
            "Start the walkthrough: the demo client registers, pushes its request and sends the browser on", "Pages",
            {303: redirect("To the consent page"), 403: html("A forged or stale form")},
            body=_form({"csrf": STRING}, ("csrf",))),
        ("GET", "/try/callback"): Operation(
            "The demo client's redirect URI: it exchanges the code", "Pages",
            {303: redirect("To the usage page"), **HTML_ERRORS},
            parameters=(query("code", "The authorization code"), query("state", "The demo client's state"),
                        query("error", "An error"))),
        ("GET", "/try/usage"): Operation(
            "The granted usage as a chart of daily kWh per meter, next to the raw CDS JSON", "Pages",
            {200: html("The usage page (reloads itself while the grant is pending)"),
             303: redirect("Back to /try without a walkthrough")}),
    }


def _operations_and_reference() -> dict[tuple[str, str], Operation]:
    return {
        ("GET", "/healthz"): Operation(
            "Liveness and readiness for load balancers: 200 when the store answers", "Operations",
            {200: json("Ready", {"type": "object", "properties": {"status": {"const": "ok"}}}),
             503: json("The store does not answer (the error's type, never its text)",
                       {"type": "object", "properties": {"status": {"const": "unavailable"}, "store": STRING}})}),
        ("GET", "/"): Operation("The landing page: what greenbridge is, the bridge's live state, Try it", "Pages",
                                {200: html("The landing page")}),
        ("GET", "/openapi.json"): Operation(
            "This document (OpenAPI 3.1)", "Reference", {200: json("The document", {"type": "object"})}),
        ("GET", "/docs/api"): Operation(
            "This document as a page", "Reference", {200: html("The API reference")}),
    }


def operations() -> dict[tuple[str, str], Operation]:
    """(method, route path) → what it takes and answers: one entry for every route of gateway.routes."""
    return {**_operations_and_reference(), **_discovery(), **_oauth(), **_admin(), **_data(), **_notifications(),
            **_operations_dashboard()}


TAGS = [
    ("Discovery", "CDS-WG1-01 server metadata and coverage, RFC 8414 metadata (WG1-02 §3)"),
    ("OAuth", "Token, PAR, introspection, revocation and registration (RFC 6749, 9126, 7662, 7009, 7591)"),
    ("Consent", "The customer's pages: consent (WG3-01 §9), the utility's callback, receipts"),
    ("Admin APIs", "CDS-WG1-02 Clients, Credentials, Grants and Messages"),
    ("Customer data", "CDS-WG3-01 §10 listings over translated Green Button data"),
    ("ESPI", "Notifications from Green Button data custodians"),
    ("Pages", "Human pages the metadata links to"),
    ("Operations", "For load balancers and operators"),
    ("Reference", "This document"),
]


def security_schemes(urls: Urls, scopes: list[str]) -> dict[str, Any]:
    described = {scope: scope for scope in scopes}
    return {
        "clientSecretBasic": {"type": "http", "scheme": "basic",
                              "description": "client_id and client_secret (RFC 6749 §2.3.1), the only client "
                                             "authentication method of this server"},
        "clientAdminBearer": {"type": "http", "scheme": "bearer",
                              "description": "An access token of scope cds_client_admin (client_credentials), "
                                             "RFC 6750"},
        "customerDataBearer": {"type": "http", "scheme": "bearer",
                               "description": "An access token of a customer-data scope (a customer's consent, "
                                              "direct access) or of its Grant Admin scope, RFC 6750"},
        "operatorBasic": {"type": "http", "scheme": "basic",
                          "description": "The operator's name and password (operator_user, operator_password)"},
        "oauth2": {"type": "oauth2", "description": "The flows: pushed authorization requests (RFC 9126) with "
                                                    "PKCE S256 and client_secret_basic",
                   "flows": {"clientCredentials": {"tokenUrl": urls.token_endpoint, "scopes": described},
                             "authorizationCode": {"authorizationUrl": urls.authorization_endpoint,
                                                   "tokenUrl": urls.token_endpoint,
                                                   "refreshUrl": urls.token_endpoint, "scopes": described}}},
    }


def document(urls: Urls, *, title: str, description: str, version: str, scopes: list[str],
             demo: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a gateway published at ``urls`` offering ``scopes`` (and, with ``demo``, the
    Try-it pages it then serves)."""
    paths: dict[str, dict[str, Any]] = {}
    for (method, path), operation in {**operations(), **(demo_operations() if demo else {})}.items():
        name = "".join(c if c.isalnum() else "_" for c in path.strip("/")).strip("_") or "root"
        operation_id = f"{method.lower()}_{name}"
        paths.setdefault(path, {})[method.lower()] = operation.as_openapi(operation_id)
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "description": description, "version": version,
                 "license": {"name": "Apache-2.0", "identifier": "Apache-2.0"}},
        "servers": [{"url": urls.base}],
        "tags": [{"name": name, "description": text_} for name, text_ in TAGS],
        "paths": paths,
        "components": {"schemas": SCHEMAS, "securitySchemes": security_schemes(urls, scopes)},
    }
