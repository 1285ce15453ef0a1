"""The Clients API (CDS-WG1-02 §5): list, get and replace the Client objects of one registration.

PUT is an RFC 7592 §2.2 full replacement (§5.5):

* Editable: ``redirect_uris``, ``client_name``, ``client_uri``, ``logo_uri``, ``tos_uri``, ``policy_uri``, ``scope``,
  ``contacts``, ``cds_status``, ``cds_default_scope``, ``cds_default_redirect_uri``,
  ``cds_default_authorization_details``, and the extra ``cds_*`` values submitted at registration (such as
  ``cds_company_name``; strings, numbers or booleans), which this server documents as Client fields.
* Immutable: ``client_id``, ``client_id_issued_at``, ``client_secret``, ``client_secret_expires_at``,
  ``grant_types``, ``response_types``, ``token_endpoint_auth_method``, ``cds_created``, ``cds_modified``,
  ``cds_client_uri``, ``cds_server_metadata``, ``cds_status_options``. Submitting one with its current value (or
  a current credential's secret/expiry) is fine; a different value is 400 naming the field. A stale
  ``cds_modified`` therefore fails, which protects against lost updates.
* ``authorization_details_types`` follows from ``scope``; when submitted it must equal what the new scope gives.
* Omitted editable fields return to the server default: ``client_name`` → the ``client_id``, ``contacts`` → [],
  the URIs and extra ``cds_*`` values → absent, ``scope`` → the scope the Client was registered with (read from
  the changelog), ``cds_status`` → the first of ``cds_status_options`` (the status it was created with);
  for Clients with ``response_types``: ``redirect_uris`` → [the server-created default redirect URI],
  ``cds_default_scope`` → the scope, ``cds_default_redirect_uri`` → the server default if listed, else the first
  redirect URI, ``cds_default_authorization_details`` → []. Unknown fields not starting with ``cds_`` are ignored.
* Everything is applied synchronously (200); nothing here needs review, so no 202 and no ``field_changes``.
* A Client set to ``disabled`` stops authenticating (the OAuth server refuses disabled clients); its tokens are
  revoked and its unexpired secrets get ``client_secret_expires_at`` = now (§7.2: the time it was disabled).
* Every change writes one changelog Message listing the changed fields (§5.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cds import authorization_details as rar
from cds.api_errors import bad_request, no_decimals, not_found, page_link, paginate, space_list
from cds.credentials import expire_credential
from cds.messages import changelog
from cds.registration import CLIENT_ADMIN, MAX_TEXT, URI_FIELDS, RegistrationError, check_metadata, client_json
from cds.secrets import SecretBox
from cds.store.models import Client, Credential, Message, Token
from cds.urls import Urls

IMMUTABLE = (
    "client_id", "client_id_issued_at", "client_secret", "client_secret_expires_at", "grant_types",
    "response_types", "token_endpoint_auth_method", "cds_created", "cds_modified", "cds_client_uri",
    "cds_server_metadata", "cds_status_options",
)
EDITABLE = (
    "redirect_uris", "client_name", *URI_FIELDS, "scope", "contacts", "cds_status", "cds_default_scope",
    "cds_default_redirect_uri", "cds_default_authorization_details",
)
DERIVED = ("authorization_details_types",)
_LIST_FIELDS = frozenset({"grant_types", "response_types", "cds_status_options"})
_DATETIME_FIELDS = frozenset({"cds_created", "cds_modified"})
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
MAX_NAME = MAX_TEXT  # registration bounds the same values at registration


def _invalid(description: str) -> Exception:
    return bad_request(description, "invalid_client_metadata")


def _owned(session: Session, registration_id: str, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None or client.registration_id != registration_id:
        raise not_found("client")
    return client


# ---------------------------------------------------------------------------------------------- list and get
def list_clients(
    session: Session, registration_id: str, query: Mapping[str, str], *, urls: Urls, page_size: int,
) -> dict[str, Any]:
    """``GET {cds_clients_api}`` (§5.3): filter ``client_ids``; ``cds_modified`` descending."""
    statement = select(Client).where(Client.registration_id == registration_id)
    params: dict[str, str] = {}
    client_ids = space_list(query, "client_ids")
    if client_ids:
        statement = statement.where(Client.client_id.in_(client_ids))
        params["client_ids"] = " ".join(client_ids)
    page = paginate(
        session, statement, modified_column=Client.modified, id_column=Client.client_id,
        id_of=lambda c: c.client_id, modified_of=lambda c: c.modified, cursor=query.get("cursor"),
        page_size=page_size, link=lambda cursor: page_link(urls.clients_api, params, cursor),
    )
    return {"clients": [client_json(c, urls) for c in page.items], "next": page.next, "previous": page.previous}


def get_client(session: Session, registration_id: str, client_id: str, *, urls: Urls) -> dict[str, Any]:
    return client_json(_owned(session, registration_id, client_id), urls)


# ---------------------------------------------------------------------------------------------- PUT helpers
def _same_datetime(submitted: Any, current: str) -> bool:
    if not isinstance(submitted, str):
        return False
    try:
        return datetime.fromisoformat(submitted.replace("Z", "+00:00")) == \
            datetime.fromisoformat(current.replace("Z", "+00:00"))
    except ValueError:
        return False


def _check_immutable(session: Session, client: Client, body: Mapping[str, Any], current: dict[str, Any],
                     box: SecretBox) -> None:
    credentials = None
    for name in IMMUTABLE:
        if name not in body:
            continue
        value = body[name]
        if name in ("client_secret", "client_secret_expires_at"):
            if credentials is None:
                credentials = session.scalars(select(Credential).where(Credential.client_id == client.client_id)).all()
            if name == "client_secret":
                same = isinstance(value, str) and any(box.matches(value, c.secret_hash) for c in credentials)
            else:
                same = isinstance(value, int) and not isinstance(value, bool) and any(
                    c.expires_at == value for c in credentials)
        elif name in _DATETIME_FIELDS:
            same = _same_datetime(value, current[name])
        elif name in _LIST_FIELDS:
            same = isinstance(value, list) and all(isinstance(v, str) for v in value) and \
                sorted(value) == sorted(current[name])
        elif name == "client_id_issued_at":
            same = isinstance(value, int) and not isinstance(value, bool) and value == current[name]
        else:
            same = value == current[name]
        if not same:
            raise _invalid(f"{name} cannot be changed (WG1-02 §5.5); omit it or send its current value")


def _registered_scope(session: Session, client: Client, urls: Urls) -> str:
    """The scope a Client was registered with: the first scope change in its changelog kept the old value."""
    messages = session.scalars(
        select(Message).where(Message.registration_id == client.registration_id,
                              Message.related_uri == urls.client(client.client_id),
                              Message.related_type == "client", Message.creator.is_(None))
        .order_by(Message.created.asc(), Message.message_id.asc())
    ).all()
    for message in messages:
        for change in message.updates_requested or ():
            if change.get("field") == "scope" and isinstance(change.get("previous_value"), str):
                return change["previous_value"]
    return client.scope


def _new_scope(value: Any, client: Client, descriptions: Mapping[str, Any]) -> list[str]:
    if not isinstance(value, str):
        raise _invalid("scope must be a space-separated string")
    scopes = list(dict.fromkeys(value.split()))
    if not scopes:
        raise _invalid("scope must name at least one scope")
    is_admin = client.client_id == client.registration_id
    if is_admin:
        if scopes != [CLIENT_ADMIN]:
            raise _invalid("the Client Admin client's scope is exactly cds_client_admin")
        return scopes
    if CLIENT_ADMIN in scopes:
        raise _invalid("cds_client_admin belongs to the registration's Client Admin client only")
    unknown = [s for s in scopes if s not in descriptions]
    if unknown:
        raise _invalid(f"scopes {' '.join(unknown)} are not offered by this server")
    for scope_id in scopes:
        description = descriptions[scope_id]
        methods = list(description.token_endpoint_auth_methods_supported)
        compatible = (
            sorted(description.response_types_supported) == sorted(client.response_types)
            and sorted(description.grant_types_supported) == sorted(client.grant_types)
            and (client.token_endpoint_auth_method in methods if client.token_endpoint_auth_method else not methods)
        )
        if not compatible:
            raise _invalid(f"scope {scope_id} needs other response types, grant types or authentication than "
                           "this Client has; it belongs to another Client")
    # A scope gated by registration requirements (e.g. internal review of direct access) is reviewed when it is
    # registered; adding it later through PUT would skip that review.
    held = set(client.scope.split())
    gated = [s for s in scopes if s not in held and descriptions[s].registration_requirements]
    if gated:
        raise _invalid(f"scopes {' '.join(gated)} need review at registration; register them anew")
    admin_types = [s for s in scopes if descriptions[s].type == "cds_grant_admin"]
    if admin_types and len(admin_types) != len(scopes):
        raise _invalid("Grant Admin scopes cannot share a Client with other scopes")
    return scopes


def _redirect_uri_ok(uri: Any, urls: Urls) -> bool:
    if not isinstance(uri, str) or len(uri) > 2000 or any(c.isspace() for c in uri) or "#" in uri:
        return False
    if uri == urls.default_redirect_uri:
        return True
    try:
        parts = urlsplit(uri)
        host = parts.hostname
    except ValueError:
        return False
    if not host or parts.username is not None or parts.password is not None:
        return False
    return parts.scheme == "https" or (parts.scheme == "http" and host in LOOPBACK)


def _new_redirect_uris(body: Mapping[str, Any], client: Client, urls: Urls) -> list[str]:
    value = body.get("redirect_uris")
    if not client.response_types:
        if value not in (None, []):
            raise bad_request("redirect_uris must be [] for a Client without response_types", "invalid_redirect_uri")
        return []
    if value is None:
        return [urls.default_redirect_uri]
    if not isinstance(value, list) or not value:
        raise bad_request("redirect_uris must be a non-empty array of URLs", "invalid_redirect_uri")
    for uri in value:
        if not _redirect_uri_ok(uri, urls):
            raise bad_request(f"redirect_uri {uri!r} must be an absolute https URL (http only for loopback hosts) "
                              "without a fragment", "invalid_redirect_uri")
    if len(set(value)) != len(value):
        raise bad_request("redirect_uris lists a URL twice", "invalid_redirect_uri")
    return list(value)


def _check_uri(value: Any, name: str) -> str:
    if not isinstance(value, str) or len(value) > 2000:
        raise _invalid(f"{name} must be a URL")
    try:
        parts = urlsplit(value)
    except ValueError:
        raise _invalid(f"{name} must be a URL") from None
    if parts.scheme not in ("https", "http") or not parts.netloc or any(c.isspace() for c in value):
        raise _invalid(f"{name} must be an absolute http(s) URL")
    return value


# ---------------------------------------------------------------------------------------------- PUT
def replace_client(
    session: Session,
    registration_id: str,
    client_id: str,
    body: Any,
    *,
    urls: Urls,
    box: SecretBox,
    descriptions: Mapping[str, Any],
    timezone: str,
    now: datetime,
) -> dict[str, Any]:
    """``PUT {cds_client_uri}`` (§5.5): validate everything, apply synchronously, log the change, return 200."""
    client = _owned(session, registration_id, client_id)
    if not isinstance(body, Mapping):
        raise _invalid("the body must be a JSON object (a Client object)")
    current = client_json(client, urls)
    _check_immutable(session, client, body, current, box)
    is_code = bool(client.response_types)

    scope_value = body.get("scope")
    if scope_value is None:
        scope_value = _registered_scope(session, client, urls)
    scopes = _new_scope(scope_value, client, descriptions)
    types = sorted({t for s in scopes for t in descriptions[s].authorization_details_types_supported})
    if "authorization_details_types" in body:
        submitted = body["authorization_details_types"]
        if not isinstance(submitted, list) or sorted(map(str, submitted)) != types or \
                not all(isinstance(t, str) for t in submitted):
            raise _invalid(f"authorization_details_types follows from scope; for this scope it is {types}")

    redirect_uris = _new_redirect_uris(body, client, urls)

    client_name = body.get("client_name")
    if client_name is None:
        client_name = client.client_id
    if not isinstance(client_name, str) or not client_name.strip() or len(client_name) > MAX_NAME:
        raise _invalid(f"client_name must be a non-empty string of at most {MAX_NAME} characters")
    contacts = body.get("contacts")
    if contacts is None:
        contacts = []
    uris = {name: _check_uri(body[name], name) for name in URI_FIELDS if body.get(name) is not None}
    try:
        check_metadata({"client_name": client_name, "contacts": contacts, **uris})
    except RegistrationError as error:
        raise _invalid(str(error)) from None

    status = body.get("cds_status")
    if status is None:
        status = client.status_options[0]
    if status not in client.status_options:
        raise _invalid(f"cds_status must be one of {client.status_options}")

    default_scope = default_redirect = default_details = None
    if is_code:
        default_scope = body.get("cds_default_scope")
        if default_scope is None:
            default_scope = " ".join(scopes)
        if not isinstance(default_scope, str) or not default_scope.split():
            raise _invalid("cds_default_scope must name at least one scope of the Client")
        outside = [s for s in default_scope.split() if s not in scopes]
        if outside:
            raise _invalid(f"cds_default_scope names scopes the Client does not have: {' '.join(outside)}")
        default_scope = " ".join(dict.fromkeys(default_scope.split()))
        default_redirect = body.get("cds_default_redirect_uri")
        if default_redirect is None:
            default_redirect = urls.default_redirect_uri if urls.default_redirect_uri in redirect_uris \
                else redirect_uris[0]
        if default_redirect not in redirect_uris:
            raise bad_request("cds_default_redirect_uri must be one of redirect_uris", "invalid_redirect_uri")
        default_details = body.get("cds_default_authorization_details")
        if default_details is None:
            default_details = []
        if not isinstance(default_details, list):
            raise _invalid("cds_default_authorization_details must be an array of objects")
        try:
            default_details = rar.parse_authorization_details(default_details)
            rar.validate_authorization_details(
                default_details, scopes=default_scope.split(), descriptions=descriptions, client_types=types,
                timezone=timezone, now=now, flow="authorization_code",
            )
        except rar.AuthorizationDetailsError as error:
            raise _invalid(f"cds_default_authorization_details: {error.description}") from None
        no_decimals(default_details, "cds_default_authorization_details")
    else:
        for name in ("cds_default_scope", "cds_default_redirect_uri", "cds_default_authorization_details"):
            if body.get(name) is not None:
                raise _invalid(f"{name} is only for Clients with response_types")

    known = {*IMMUTABLE, *EDITABLE, *DERIVED}
    extra = dict(uris)
    for key, value in body.items():
        if key in known or not key.startswith("cds_") or value is None:
            continue
        if not isinstance(value, str | int | bool) or (isinstance(value, str) and len(value) > MAX_NAME):
            raise _invalid(f"{key}: this server keeps extra cds_* fields as strings, numbers or booleans")
        extra[key] = value

    new = {
        "scope": " ".join(scopes),
        "authorization_details_types": types,
        "redirect_uris": redirect_uris,
        "client_name": client_name,
        "contacts": list(contacts),
        "cds_status": status,
    }
    old = {
        "scope": client.scope,
        "authorization_details_types": list(client.authorization_details_types),
        "redirect_uris": list(client.redirect_uris),
        "client_name": client.client_name,
        "contacts": list(client.contacts),
        "cds_status": client.status,
    }
    if is_code:
        new.update({"cds_default_scope": default_scope, "cds_default_redirect_uri": default_redirect,
                    "cds_default_authorization_details": default_details})
        old.update({"cds_default_scope": client.default_scope, "cds_default_redirect_uri": client.default_redirect_uri,
                    "cds_default_authorization_details": list(client.default_authorization_details or [])})
    old_extra = dict(client.extra or {})
    for key in sorted(set(old_extra) | set(extra)):
        old[key] = old_extra.get(key)
        new[key] = extra.get(key)
    changes = [{"field": key, "previous_value": old[key], "new_value": new[key]}
               for key in new if old[key] != new[key] or type(old[key]) is not type(new[key])]
    if not changes:
        return current

    client.scope = new["scope"]
    client.authorization_details_types = types
    client.redirect_uris = redirect_uris
    client.client_name = client_name
    client.contacts = list(contacts)
    client.extra = extra
    if is_code:
        client.default_scope = default_scope
        client.default_redirect_uri = default_redirect
        client.default_authorization_details = default_details
    was_disabled = client.status == "disabled"
    client.status = status
    client.modified = now

    changelog(
        session, registration_id, related_uri=urls.client(client.client_id), related_type="client",
        name="Client updated",
        description=f"Client {client.client_id} changed: {', '.join(c['field'] for c in changes)}.",
        changes=changes, box=box, now=now,
    )
    if status == "disabled" and not was_disabled:
        _disable(session, client, urls=urls, box=box, now=now)
    session.flush()
    return client_json(client, urls)


def _disable(session: Session, client: Client, *, urls: Urls, box: SecretBox, now: datetime) -> None:
    """A disabled Client's tokens die now and its secrets expire at the time it was disabled (§7.2)."""
    session.execute(update(Token).where(Token.client_id == client.client_id)
                    .values(access_revoked=True, refresh_revoked=True))
    epoch = int(now.timestamp())
    for credential in session.scalars(select(Credential).where(Credential.client_id == client.client_id)).all():
        if credential.expires_at == 0 or credential.expires_at > epoch:
            expire_credential(session, credential, epoch, urls=urls, box=box, now=now,
                              reason=f"Client {client.client_id} was disabled:")
