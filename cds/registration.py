"""Dynamic client registration (CDS-WG1-02 §4, on RFC 7591) and the Client object (WG1-02 §5.2).

One registration yields several Client objects sharing a ``registration_id``:

* the Client Admin client (scope exactly ``cds_client_admin``, client_credentials, client_secret_basic; §4.2);
* one client per group of the other requested scopes with equal response types, grant types and token endpoint
  auth method (§4.3 allows combining such scopes); code-flow clients start in ``sandbox`` with the server-created
  default redirect URI (§4.3);
* one Grant Admin client per ``grant_admin_scope`` named by a requested scope (§4.3);
* one client for the requested direct-access scopes (WG3-01 §6.2, ``cds_query_*``), never shared with other scopes
  (WG3-01 §4.11: direct-access and consent scopes must not share a Client object). Direct access reads the data of
  any customer the Client can name, so this client is created ``disabled`` with ``cds_status_options``
  ``["disabled"]`` (the Client cannot enable it through PUT, and a disabled client cannot authenticate) until an
  operator has done the ``internal_review`` its scopes require and runs ``greenbridge client enable``. A server
  notification about the pending review is written to the registration's Messages;
* one Credential for every client with a token endpoint auth method.

RFC 7591 metadata values are checked with Authlib's ``ClientMetadataClaims``; the CDS rules (``cds_client_admin``
required, only CDS scopes, submitted ``redirect_uris`` ignored) are ours.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from authlib.oauth2.rfc7591.claims import ClientMetadataClaims
from joserfc.errors import JoseError
from sqlalchemy.orm import Session

from cds.messages import changelog
from cds.secrets import SecretBox
from cds.store.models import Client, Credential
from cds.timestamps import rfc3339
from cds.urls import Urls

CLIENT_ADMIN = "cds_client_admin"
DIRECT_ACCESS_PREFIX = "cds_query_"  # WG3-01 §6.2 scope types
# RFC 7591 §2 fields a client may submit and later edit through PUT (WG1-02 §5.5).
URI_FIELDS = ("client_uri", "logo_uri", "tos_uri", "policy_uri")
MAX_TEXT = 1000  # a client name, a contact, a URI, an extra cds_* value
MAX_CONTACTS = 20
MAX_EXTRA = 50


class RegistrationError(ValueError):
    """Invalid client metadata: HTTP 400 with RFC 7591 error ``invalid_client_metadata``."""

    error = "invalid_client_metadata"


def scopes_of(scope: Any) -> list[str]:
    if scope is None:
        return []
    if not isinstance(scope, str):
        raise RegistrationError("scope must be a space-separated string")
    return scope.split()


def check_metadata(body: Mapping[str, Any]) -> None:
    """RFC 7591 §2 value checks (URIs, contacts, names) through Authlib's claims class, and their sizes: these values
    are shown on consent pages and in every Client object."""
    standard = {k: body[k] for k in ("client_name", "contacts", *URI_FIELDS) if k in body}
    for key in ("client_name",):
        if key in standard and (not isinstance(standard[key], str) or len(standard[key]) > MAX_TEXT):
            raise RegistrationError(f"{key} must be a string of at most {MAX_TEXT} characters")
    if "contacts" in standard and (
        not isinstance(standard["contacts"], list) or len(standard["contacts"]) > MAX_CONTACTS
        or not all(isinstance(c, str) and len(c) <= MAX_TEXT for c in standard["contacts"])
    ):
        raise RegistrationError(f"contacts must be an array of at most {MAX_CONTACTS} strings")
    for key in URI_FIELDS:
        if key in standard and (not isinstance(standard[key], str) or len(standard[key]) > MAX_TEXT):
            raise RegistrationError(f"{key} must be a URL string of at most {MAX_TEXT} characters")
    claims = ClientMetadataClaims(standard, {})
    try:
        claims.validate()
    except JoseError as error:
        raise RegistrationError(getattr(error, "description", None) or str(error)) from None


def register(
    session: Session,
    body: Any,
    *,
    descriptions: Mapping[str, Any],
    box: SecretBox,
    urls: Urls,
    now: datetime | None = None,
) -> dict[str, Any]:
    """Create every Client object of a registration; return the admin client's Client Information Response."""
    if not isinstance(body, dict):
        raise RegistrationError("the registration request must be a JSON object")
    requested = scopes_of(body.get("scope"))
    if CLIENT_ADMIN not in requested:
        raise RegistrationError("scope must include cds_client_admin (WG1-02 §4.1)")
    unknown = [s for s in requested if s not in descriptions]
    if unknown:
        raise RegistrationError(
            f"scopes {unknown} are not CDS scopes of this server; CDS and non-CDS scopes cannot be mixed (WG1-02 §4.1)"
        )
    check_metadata(body)
    now = now or datetime.now(UTC)
    registration_id = box.new_id()
    client_name = body.get("client_name")
    contacts = list(body.get("contacts") or [])
    extra = {k: body[k] for k in URI_FIELDS if k in body}
    # Submitted cds_* registration values are kept as documented extra client fields (WG1-02 §5.2), bounded as a
    # Client PUT bounds them.
    submitted = {k: v for k, v in body.items() if k.startswith("cds_") and isinstance(v, str | int | bool)}
    if len(submitted) > MAX_EXTRA or any(isinstance(v, str) and len(v) > MAX_TEXT for v in submitted.values()):
        raise RegistrationError(f"at most {MAX_EXTRA} cds_* fields of at most {MAX_TEXT} characters are kept")
    extra.update(submitted)

    def new_client(client_id: str, scopes: list[str], *, status: str, options: list[str]) -> Client:
        scope_objects = [descriptions[s] for s in scopes]
        response_types = sorted({r for d in scope_objects for r in d.response_types_supported})
        grant_types = sorted({g for d in scope_objects for g in d.grant_types_supported})
        auth_methods = sorted({m for d in scope_objects for m in d.token_endpoint_auth_methods_supported})
        details_types = sorted({t for d in scope_objects for t in d.authorization_details_types_supported})
        client = Client(
            client_id=client_id,
            registration_id=registration_id,
            client_id_issued_at=int(now.timestamp()),
            created=now,
            modified=now,
            scope=" ".join(scopes),
            redirect_uris=[urls.default_redirect_uri] if response_types else [],
            token_endpoint_auth_method=auth_methods[0] if auth_methods else None,
            grant_types=grant_types,
            response_types=response_types,
            client_name=client_name or client_id,
            contacts=contacts,
            authorization_details_types=details_types,
            status=status,
            status_options=options,
            default_scope=" ".join(scopes) if response_types else None,
            default_redirect_uri=urls.default_redirect_uri if response_types else None,
            default_authorization_details=[] if response_types else None,
            extra=dict(extra),
        )
        session.add(client)
        return client

    admin = new_client(registration_id, [CLIENT_ADMIN], status="production", options=["production"])
    groups: dict[tuple, list[str]] = {}
    grant_admin_scopes: list[str] = []
    for scope_id in requested:
        if scope_id == CLIENT_ADMIN:
            continue
        d = descriptions[scope_id]
        key = (tuple(d.response_types_supported), tuple(d.grant_types_supported),
               tuple(d.token_endpoint_auth_methods_supported))
        if is_direct_access(d):
            key = ("direct_access", *key)  # never together with any other kind of scope
        groups.setdefault(key, []).append(scope_id)
        if d.grant_admin_scope and d.grant_admin_scope not in grant_admin_scopes:
            grant_admin_scopes.append(d.grant_admin_scope)
    for ga in grant_admin_scopes:
        d = descriptions[ga]
        key = (tuple(d.response_types_supported), tuple(d.grant_types_supported),
               tuple(d.token_endpoint_auth_methods_supported))
        if ga not in groups.get(key, []):
            # Grant Admin gets its own client even when requested alongside other client_credentials scopes.
            groups.setdefault(("grant_admin", ga), []).append(ga)
    created = [admin]
    for key, scopes in groups.items():
        is_code = any(descriptions[s].response_types_supported for s in scopes)
        if key[0] == "direct_access":
            client = new_client(box.new_id(), scopes, status="disabled", options=["disabled"])
            created.append(client)
            _review_notice(session, client, urls=urls, box=box, now=now)
        elif is_code:
            created.append(new_client(box.new_id(), scopes, status="sandbox", options=["sandbox", "disabled"]))
        else:
            created.append(new_client(box.new_id(), scopes, status="production", options=["production", "disabled"]))
    secrets: dict[str, str] = {}
    for client in created:
        if client.token_endpoint_auth_method:
            secrets[client.client_id] = new_credential(session, client, box=box, now=now)
    session.flush()
    response = client_json(admin, urls)
    response["client_secret"] = secrets[admin.client_id]
    return response


def is_direct_access(description: Any) -> bool:
    """A WG3-01 §6.2 direct-access scope: a ``cds_query_*`` type without response types."""
    return description.type.startswith(DIRECT_ACCESS_PREFIX) and not description.response_types_supported


def _review_notice(session: Session, client: Client, *, urls: Urls, box: SecretBox, now: datetime) -> None:
    """The server notification that a direct-access Client waits for the operator's review (internal_review)."""
    changelog(
        session, client.registration_id, related_uri=urls.client(client.client_id), related_type="client",
        name="Direct access: internal review pending",
        description=f"Client {client.client_id} ({client.scope}) reads the data of any customer it names, so the "
                    "operator of this server reviews it before enabling it (registration requirement "
                    "cds_internal_review). Until then it is disabled and cannot get tokens. Send a "
                    "production_request Message for this Client with what the review needs.",
        changes=[], box=box, now=now,
    )


def new_credential(session: Session, client: Client, *, box: SecretBox, now: datetime) -> str:
    """Create a client_secret Credential (WG1-02 §7.2) and return the secret in clear (shown to the caller once here;
    the Credentials API decrypts it again later)."""
    secret = box.new_secret()
    session.add(Credential(
        credential_id=box.new_id(),
        client_id=client.client_id,
        registration_id=client.registration_id,
        created=now,
        modified=now,
        type="client_secret",
        secret_hash=box.hash(secret),
        secret_encrypted=box.encrypt(secret),
        expires_at=0,
    ))
    return secret


def client_json(client: Client, urls: Urls) -> dict[str, Any]:
    """The Client object (WG1-02 §5.2): required fields always, the defaults when response types exist."""
    body: dict[str, Any] = {
        "client_id": client.client_id,
        "client_id_issued_at": client.client_id_issued_at,
        "scope": client.scope,
        "redirect_uris": list(client.redirect_uris),
        "response_types": list(client.response_types),
        "grant_types": list(client.grant_types),
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "client_name": client.client_name,
        "contacts": list(client.contacts),
        "authorization_details_types": list(client.authorization_details_types),
        "cds_created": rfc3339(client.created),
        "cds_modified": rfc3339(client.modified),
        "cds_client_uri": urls.client(client.client_id),
        "cds_status": client.status,
        "cds_status_options": list(client.status_options),
        "cds_server_metadata": urls.client_server_metadata(client.client_id),
    }
    if client.response_types:
        body["cds_default_scope"] = client.default_scope or ""
        body["cds_default_redirect_uri"] = client.default_redirect_uri
        body["cds_default_authorization_details"] = list(client.default_authorization_details or [])
    for key, value in (client.extra or {}).items():
        body.setdefault(key, value)
    return body
