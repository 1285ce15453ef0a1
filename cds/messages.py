"""The Messages API (CDS-WG1-02 §6): the Message object, the list with its three views, create, get, mark read,
and the changelog Messages that every Client, Credential and Grant change writes (§5.3, §7.3, §8).

Decisions documented here:

* Changelog entries are ``notification`` Messages created by the Server (``creator`` null, ``read`` false,
  ``status`` complete) whose ``related_uri``/``related_type`` name the changed object and whose
  ``updates_requested`` lists each changed field with ``previous_value``/``new_value`` (never a secret).
* The list answers ``outstanding`` (status ``open`` or ``pending``), ``unread`` and ``read`` (they overlap), each
  paged on its own; a ``*_next``/``*_previous`` link carries ``list=<name>`` and fills only that list.
* ``previous_uri`` may be omitted on create (read as null): both specification examples omit it. When given, it
  must name a Message of the same registration; a ``client_submission`` must answer a ``server_request``, which
  then moves from ``open`` to ``pending``.
* ``related_type`` is required with ``related_uri``, except that it defaults to ``client`` for the
  ``grant_request`` and ``production_request`` types, whose ``related_uri`` is a Client URI (§6.2; the WG3-01
  grant-request example omits it).
* A ``related_uri`` that is the URL of one of our Clients, Credentials, Grants or Messages must name one of this
  registration's (issue 13: a Message could point at another registration's Client); one of another registration
  is refused exactly like one that does not exist, so nothing is revealed. Other URLs (``more_info`` pages…) are free.
* ``grants_requested`` entries are validated like a token request for the target Client: the Client of this
  registration named by ``related_uri`` (its ``authorization_details_types``), or the registration's Clients when
  ``related_uri`` is absent. Entries are stored as submitted, relative dates stay relative.
* ``amount`` is a decimal kept digit for digit; ``currency`` (ISO 4217, three capitals) goes with it.
* Attachments: ``data`` must be standard Base64; the decoded total above the Server limit (at least 10 MB) is
  413 Content Too Large.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cds import authorization_details as rar
from cds.api_errors import (
    Page,
    bad_request,
    no_decimals,
    not_found,
    page_link,
    paginate,
    space_list,
    too_large,
)
from cds.secrets import SecretBox
from cds.store.models import Client, Credential, Grant, Message
from cds.timestamps import rfc3339
from cds.urls import Urls

CLIENT_TYPES = ("private_message", "production_request", "support_request", "grant_request", "client_submission")
COMPLETE_ON_CREATE = frozenset({"private_message", "client_submission"})
OUTSTANDING = ("open", "pending")
LISTS = ("outstanding", "unread", "read")
RELATED_TYPES = frozenset({
    "more_info", "documentation", "support", "online_form", "pdf_form", "payment_form", "payment_receipt",
    "client_list", "client", "grant_list", "grant", "message_list", "message", "credential_list", "credential",
})
_MIME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_BASE64 = re.compile(r"^[A-Za-z0-9+/]*={0,2}$")
MAX_TEXT = 100_000


def message_json(message: Message, urls: Urls) -> dict[str, Any]:
    """The Message object (WG1-02 §6.2): required fields always, optional ones when set."""
    body: dict[str, Any] = {
        "message_id": message.message_id,
        "uri": urls.message(message.message_id),
        "previous_uri": message.previous_uri,
        "type": message.type,
        "read": message.read,
        "creator": message.creator,
        "created": rfc3339(message.created),
        "modified": rfc3339(message.modified),
        "status": message.status,
        "name": message.name,
        "description": message.description,
    }
    optional = {
        "updates_requested": message.updates_requested,
        "grants_requested": message.grants_requested,
        "attachments": message.attachments,
        "related_uri": message.related_uri,
        "related_type": message.related_type,
        "amount": message.amount,
        "currency": message.currency,
    }
    body.update({key: value for key, value in optional.items() if value is not None})
    return body


def changelog(
    session: Session,
    registration_id: str,
    *,
    related_uri: str,
    related_type: str,
    name: str,
    description: str,
    changes: list[dict[str, Any]],
    box: SecretBox,
    now: datetime,
) -> Message:
    """Record a change after registration as a Server notification (WG1-02 §5.3, §7.3: the changelog)."""
    message = Message(
        message_id=box.new_id(),
        registration_id=registration_id,
        previous_uri=None,
        type="notification",
        read=False,
        creator=None,
        created=now,
        modified=now,
        status="complete",
        name=name,
        description=description,
        updates_requested=changes or None,
        related_uri=related_uri,
        related_type=related_type,
    )
    session.add(message)
    return message


def _owned(session: Session, registration_id: str, message_id: str) -> Message:
    message = session.get(Message, message_id)
    if message is None or message.registration_id != registration_id:
        raise not_found("message")
    return message


# ---------------------------------------------------------------------------------------------- list and get
def list_messages(
    session: Session, registration_id: str, query: Mapping[str, str], *, urls: Urls, page_size: int,
) -> dict[str, Any]:
    """``GET {cds_messages_api}`` (§6.3): the outstanding, unread and read lists, ``modified`` descending."""
    message_ids = space_list(query, "message_ids")
    only = query.get("list")
    if only is not None and only not in LISTS:
        raise bad_request(f"list must be one of {', '.join(LISTS)}")
    cursor = query.get("cursor")
    if cursor and only is None:
        raise bad_request("a cursor belongs to one list: follow the *_next/*_previous links as given")
    params = {"message_ids": " ".join(message_ids)} if message_ids else {}
    base = select(Message).where(Message.registration_id == registration_id)
    if message_ids:
        base = base.where(Message.message_id.in_(message_ids))
    conditions = {
        "outstanding": Message.status.in_(OUTSTANDING),
        "unread": Message.read.is_(False),
        "read": Message.read.is_(True),
    }
    body: dict[str, Any] = {}
    for name in LISTS:
        page = Page()
        if only is None or only == name:
            page = paginate(
                session, base.where(conditions[name]),
                modified_column=Message.modified, id_column=Message.message_id,
                id_of=lambda m: m.message_id, modified_of=lambda m: m.modified,
                cursor=cursor if only == name else None, page_size=page_size,
                link=lambda c, name=name: page_link(urls.messages_api, {**params, "list": name}, c),
            )
        body[name] = [message_json(m, urls) for m in page.items]
        body[f"{name}_next"] = page.next
        body[f"{name}_previous"] = page.previous
    return body


def get_message(session: Session, registration_id: str, message_id: str, *, urls: Urls) -> dict[str, Any]:
    return message_json(_owned(session, registration_id, message_id), urls)


# ---------------------------------------------------------------------------------------------- create
def _text(body: Mapping[str, Any], key: str) -> str:
    if key not in body:
        raise bad_request(f"{key} is required")
    value = body[key]
    if not isinstance(value, str):
        raise bad_request(f"{key} must be a string")
    if len(value) > MAX_TEXT:
        raise bad_request(f"{key} is longer than {MAX_TEXT} characters")
    return value


def _url(value: Any, key: str) -> str:
    if not isinstance(value, str) or not re.match(r"^https?://[^\s/?#]+[^\s]*$", value) or len(value) > 2000:
        raise bad_request(f"{key} must be an http(s) URL")
    return value


def _message_id_of(uri: str, urls: Urls) -> str | None:
    prefix = urls.messages_api + "/"
    if uri.startswith(prefix) and "/" not in uri[len(prefix):] and uri[len(prefix):]:
        return uri[len(prefix):]
    return None


def _client_id_of(uri: str, urls: Urls) -> str | None:
    prefix = urls.clients_api + "/"
    if uri.startswith(prefix) and "/" not in uri[len(prefix):] and uri[len(prefix):]:
        return uri[len(prefix):]
    return None


def _names_own_object(session: Session, registration_id: str, uri: str, urls: Urls) -> bool:
    """False when ``uri`` is the URL of one of our Clients, Credentials, Grants or Messages that is not this
    registration's (or does not exist: the two are answered alike, nothing is revealed); True for any other URL."""
    kinds = ((urls.clients_api, Client), (urls.credentials_api, Credential), (urls.grants_api, Grant),
             (urls.messages_api, Message))
    for prefix, model in kinds:
        object_id = uri[len(prefix) + 1:] if uri.startswith(prefix + "/") else None
        if object_id is not None:
            found = session.get(model, object_id.split("/", 1)[0]) if object_id else None
            return found is not None and found.registration_id == registration_id
    return True


def _updates_requested(value: Any) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise bad_request("updates_requested must be a non-empty array of Client Update Request objects")
    updates = []
    for index, item in enumerate(value):
        if not isinstance(item, Mapping):
            raise bad_request(f"updates_requested[{index}] must be an object")
        if not isinstance(item.get("field"), str) or not item["field"]:
            raise bad_request(f"updates_requested[{index}].field is required (a string)")
        update = {"field": item["field"]}
        for key in ("name", "description"):
            if item.get(key) is not None:
                if not isinstance(item[key], str):
                    raise bad_request(f"updates_requested[{index}].{key} must be a string")
                update[key] = item[key]
        if item.get("uri") is not None:
            update["uri"] = _url(item["uri"], f"updates_requested[{index}].uri")
        updates.append(update)
    return updates


def _grants_requested(
    session: Session, registration_id: str, value: Any, target: str | None, *, urls: Urls,
    descriptions: Mapping[str, Any], timezone: str, now: datetime,
) -> list[dict[str, Any]]:
    if not isinstance(value, list) or not value:
        raise bad_request("grants_requested must be a non-empty array of Client Grant Request objects")
    clients = session.scalars(select(Client).where(Client.registration_id == registration_id)).all()
    target_id = _client_id_of(target, urls) if target else None
    if target is not None and target_id is None:
        raise bad_request("related_uri of a grant_request must be the cds_client_uri the grants are for")
    own = {c.client_id: c for c in clients}
    if target_id is None:
        client_types = sorted({t for c in clients for t in c.authorization_details_types})
    else:  # a Client of this registration (create_message checked related_uri)
        client_types = list(own[target_id].authorization_details_types)
    requested = []
    for index, item in enumerate(value):
        where = f"grants_requested[{index}]"
        if not isinstance(item, Mapping):
            raise bad_request(f"{where} must be an object")
        scope = item.get("scope")
        if not isinstance(scope, str) or not scope.split():
            raise bad_request(f"{where}.scope is required (a space-separated string)")
        unknown = [s for s in scope.split() if s not in descriptions]
        if unknown:
            raise bad_request(f"{where}.scope names scopes this server does not offer: {' '.join(unknown)}")
        if not isinstance(item.get("authorization_details"), list):
            raise bad_request(f"{where}.authorization_details is required: an array ([] when the scope is enough)")
        try:
            details = rar.parse_authorization_details(item["authorization_details"])
            rar.validate_authorization_details(
                details, scopes=scope.split(), descriptions=descriptions, client_types=client_types,
                timezone=timezone, now=now, flow="client_credentials",
            )
        except rar.AuthorizationDetailsError as error:
            raise bad_request(f"{where}: {error.description}", "invalid_authorization_details") from None
        requested.append({"scope": " ".join(scope.split()),
                          "authorization_details": no_decimals(details, f"{where}.authorization_details")})
    return requested


def _attachments(value: Any, max_bytes: int) -> list[dict[str, str]]:
    if not isinstance(value, list):
        raise bad_request("attachments must be an array of Message Attachment objects")
    total = 0
    attachments = []
    for index, item in enumerate(value):
        where = f"attachments[{index}]"
        if not isinstance(item, Mapping):
            raise bad_request(f"{where} must be an object")
        for key in ("filename", "mime_type", "data"):
            if not isinstance(item.get(key), str):
                raise bad_request(f"{where}.{key} is required (a string)")
        filename, mime_type, data = item["filename"], item["mime_type"], item["data"]
        if not filename.strip() or len(filename) > 255 or any(c in filename for c in "/\\\0"):
            raise bad_request(f"{where}.filename must be a plain file name")
        if not _MIME.match(mime_type):
            raise bad_request(f"{where}.mime_type must be a MIME type such as application/pdf "
                              "(application/octet-stream when unknown)")
        if len(data) % 4 or not _BASE64.match(data):
            raise bad_request(f"{where}.data must be standard Base64 (RFC 4648 §4, padded)")
        try:
            decoded = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            raise bad_request(f"{where}.data must be standard Base64 (RFC 4648 §4, padded)") from None
        total += len(decoded)
        if total > max_bytes:
            raise too_large(f"attachments are larger than this server's limit of {max_bytes} bytes")
        attachments.append({"filename": filename, "mime_type": mime_type, "data": data})
    return attachments


def _amount(value: Any) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, int | Decimal):
        raise bad_request("amount must be a JSON number")
    amount = Decimal(value)
    if not amount.is_finite() or len(str(amount)) > 60:
        raise bad_request("amount must be a finite decimal of at most 60 characters")
    return amount


def create_message(
    session: Session,
    registration_id: str,
    creator: str,
    body: Any,
    *,
    urls: Urls,
    box: SecretBox,
    descriptions: Mapping[str, Any],
    timezone: str,
    max_attachment_bytes: int,
    now: datetime,
) -> dict[str, Any]:
    """``POST {cds_messages_api}`` (§6.4): validate, let the Server fill its fields, return the 201 body."""
    if not isinstance(body, Mapping):
        raise bad_request("the body must be a JSON object (a Message)")
    type_ = body.get("type")
    if type_ not in CLIENT_TYPES:
        raise bad_request(f"type must be one of {', '.join(CLIENT_TYPES)}")
    name = _text(body, "name")
    description = _text(body, "description")
    if type_ == "client_submission" and (name or description):
        raise bad_request("a client_submission has name and description \"\"")

    previous_uri = body.get("previous_uri")
    previous: Message | None = None
    if previous_uri is not None:
        previous_uri = _url(previous_uri, "previous_uri")
        previous_id = _message_id_of(previous_uri, urls)
        previous = session.get(Message, previous_id) if previous_id else None
        if previous is None or previous.registration_id != registration_id:
            raise bad_request("previous_uri must be the uri of a Message of this registration")
    if type_ == "client_submission" and (previous is None or previous.type != "server_request"):
        raise bad_request("a client_submission answers a server_request: previous_uri must be its uri")

    related_uri = body.get("related_uri")
    related_type = body.get("related_type")
    if related_uri is not None:
        related_uri = _url(related_uri, "related_uri")
        if not _names_own_object(session, registration_id, related_uri, urls):
            raise bad_request("related_uri names no object of this registration")
        if related_type is None and type_ in ("grant_request", "production_request"):
            related_type = "client"
        if related_type is None:
            raise bad_request("related_type is required with related_uri")
    if related_type is not None:
        if related_uri is None:
            raise bad_request("related_type needs related_uri")
        if not isinstance(related_type, str) or related_type not in RELATED_TYPES:
            raise bad_request(f"related_type must be one of {', '.join(sorted(RELATED_TYPES))}")

    updates = body.get("updates_requested")
    if updates is not None:
        updates = _updates_requested(updates)
    elif type_ == "client_submission":
        raise bad_request("a client_submission needs updates_requested")

    grants = body.get("grants_requested")
    if grants is not None or type_ == "grant_request":
        if type_ != "grant_request":
            raise bad_request("grants_requested belongs to grant_request messages")
        if grants is None:
            raise bad_request("a grant_request needs grants_requested")
        grants = _grants_requested(session, registration_id, grants, related_uri, urls=urls,
                                   descriptions=descriptions, timezone=timezone, now=now)

    attachments = body.get("attachments")
    if attachments is not None:
        attachments = _attachments(attachments, max_attachment_bytes)

    amount = body.get("amount")
    currency = body.get("currency")
    if amount is not None:
        amount = _amount(amount)
        if currency is None:
            raise bad_request("currency (ISO 4217) is required with amount")
    if currency is not None:
        if amount is None:
            raise bad_request("currency goes with amount")
        if not isinstance(currency, str) or not _CURRENCY.match(currency):
            raise bad_request("currency must be an ISO 4217 code such as USD")

    message = Message(
        message_id=box.new_id(),
        registration_id=registration_id,
        previous_uri=previous_uri,
        type=type_,
        read=True,
        creator=creator,
        created=now,
        modified=now,
        status="complete" if type_ in COMPLETE_ON_CREATE else "pending",
        name=name,
        description=description,
        updates_requested=updates,
        grants_requested=grants,
        attachments=attachments,
        related_uri=related_uri,
        related_type=related_type,
        amount=amount,
        currency=currency,
    )
    session.add(message)
    if type_ == "client_submission" and previous is not None and previous.status == "open":
        previous.status = "pending"
        previous.modified = now
    session.flush()
    return message_json(message, urls)


# ---------------------------------------------------------------------------------------------- modify
def modify_message(
    session: Session, registration_id: str, message_id: str, body: Any, *, urls: Urls, now: datetime,
) -> dict[str, Any]:
    """``PATCH {uri}`` (§6.6): only ``read`` (a boolean) changes; other fields are ignored."""
    message = _owned(session, registration_id, message_id)
    if not isinstance(body, Mapping):
        raise bad_request("the body must be a JSON object")
    if "read" not in body or not isinstance(body["read"], bool):
        raise bad_request("read must be true or false")
    if message.read != body["read"]:
        message.read = body["read"]
        message.modified = now
    return message_json(message, urls)
