"""The Credentials API (CDS-WG1-02 §7): list, get, create and expire client secrets.

* Secrets are stored encrypted and shown again, decrypted, in every Credential object, listings included (§7.2).
* ``client_secret_expires_at`` may only move earlier: from now up to the current value, or anything from now on
  when the current value is 0 (never). A value at or before now (a past value is taken as "now", since clocks
  differ) disables the secret at once and revokes every access and refresh token issued with it (§7.5). A secret
  is never changed in place.
* Every creation and change is logged as a changelog Message (§7.3).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from cds.api_errors import bad_request, not_found, page_link, paginate, query_datetime, space_list
from cds.messages import changelog
from cds.registration import new_credential
from cds.secrets import SecretBox
from cds.store.models import Client, Credential, Token
from cds.timestamps import rfc3339
from cds.urls import Urls

#: The store keeps expiries in a 32-bit integer column (PostgreSQL ``integer``): 2038-01-19T03:14:07Z at the latest.
MAX_EXPIRES_AT = 2**31 - 1


def credential_json(credential: Credential, urls: Urls, box: SecretBox) -> dict[str, Any]:
    """The Credential object (§7.2); the only ``type`` is ``client_secret``."""
    return {
        "credential_id": credential.credential_id,
        "uri": urls.credential(credential.credential_id),
        "client_id": credential.client_id,
        "created": rfc3339(credential.created),
        "modified": rfc3339(credential.modified),
        "type": credential.type,
        "client_secret": box.decrypt(credential.secret_encrypted),
        "client_secret_expires_at": credential.expires_at,
    }


def _owned(session: Session, registration_id: str, credential_id: str) -> Credential:
    credential = session.get(Credential, credential_id)
    if credential is None or credential.registration_id != registration_id:
        raise not_found("credential")
    return credential


def list_credentials(
    session: Session, registration_id: str, query: Mapping[str, str], *, urls: Urls, box: SecretBox,
    page_size: int,
) -> dict[str, Any]:
    """``GET {cds_credentials_api}`` (§7.3): filters ``credential_ids``, ``client_ids``, ``after``/``before``."""
    statement = select(Credential).where(Credential.registration_id == registration_id)
    params: dict[str, str] = {}
    credential_ids = space_list(query, "credential_ids")
    if credential_ids:
        statement = statement.where(Credential.credential_id.in_(credential_ids))
        params["credential_ids"] = " ".join(credential_ids)
    client_ids = space_list(query, "client_ids")
    if client_ids:
        statement = statement.where(Credential.client_id.in_(client_ids))
        params["client_ids"] = " ".join(client_ids)
    after = query_datetime(query, "after")
    if after is not None:
        statement = statement.where(Credential.created >= after)
        params["after"] = query["after"]
    before = query_datetime(query, "before")
    if before is not None:
        statement = statement.where(Credential.created <= before)
        params["before"] = query["before"]
    page = paginate(
        session, statement, modified_column=Credential.modified, id_column=Credential.credential_id,
        id_of=lambda c: c.credential_id, modified_of=lambda c: c.modified, cursor=query.get("cursor"),
        page_size=page_size, link=lambda cursor: page_link(urls.credentials_api, params, cursor),
    )
    return {"credentials": [credential_json(c, urls, box) for c in page.items], "next": page.next,
            "previous": page.previous}


def get_credential(
    session: Session, registration_id: str, credential_id: str, *, urls: Urls, box: SecretBox,
) -> dict[str, Any]:
    return credential_json(_owned(session, registration_id, credential_id), urls, box)


def create_credential(
    session: Session, registration_id: str, body: Any, *, urls: Urls, box: SecretBox, now: datetime,
) -> dict[str, Any]:
    """``POST {cds_credentials_api}`` with ``{"client_id"}`` (§7.4): a new secret for a Client of the registration."""
    if not isinstance(body, Mapping):
        raise bad_request("the body must be a JSON object with client_id")
    client_id = body.get("client_id")
    if not isinstance(client_id, str) or not client_id:
        raise bad_request("client_id is required (a string)")
    client = session.get(Client, client_id)
    if client is None or client.registration_id != registration_id:
        raise bad_request("client_id is not a Client of this registration")
    if not client.token_endpoint_auth_method:
        raise bad_request("this Client has no token_endpoint_auth_method, so it uses no credentials")
    secret = new_credential(session, client, box=box, now=now)
    session.flush()
    credential = session.scalar(select(Credential).where(Credential.secret_hash == box.hash(secret)))
    changelog(
        session, registration_id, related_uri=urls.credential(credential.credential_id), related_type="credential",
        name="Credential created", description=f"A new client_secret Credential was created for Client {client_id}.",
        changes=[{"field": "credential_id", "previous_value": None, "new_value": credential.credential_id}],
        box=box, now=now,
    )
    return credential_json(credential, urls, box)


def revoke_tokens_of_credential(session: Session, credential_id: str) -> int:
    """Revoke every access and refresh token issued with this credential; returns how many rows changed."""
    result = session.execute(
        update(Token).where(Token.credential_id == credential_id).values(access_revoked=True, refresh_revoked=True)
    )
    return result.rowcount or 0


def expire_credential(
    session: Session, credential: Credential, expires_at: int, *, urls: Urls, box: SecretBox, now: datetime,
    reason: str,
) -> None:
    """Set a new expiry and log it; an expiry at or before now also revokes the credential's tokens."""
    previous = credential.expires_at
    credential.expires_at = expires_at
    credential.modified = now
    disabled = expires_at <= int(now.timestamp())
    if disabled:
        revoke_tokens_of_credential(session, credential.credential_id)
    changelog(
        session, credential.registration_id, related_uri=urls.credential(credential.credential_id),
        related_type="credential", name="Credential disabled" if disabled else "Credential expiry changed",
        description=f"{reason} client_secret_expires_at changed from {previous} to {expires_at}"
                    + (" (the secret no longer works and its tokens were revoked)." if disabled else "."),
        changes=[{"field": "client_secret_expires_at", "previous_value": previous, "new_value": expires_at}],
        box=box, now=now,
    )


def modify_credential(
    session: Session, registration_id: str, credential_id: str, body: Any, *, urls: Urls, box: SecretBox,
    now: datetime,
) -> dict[str, Any]:
    """``PATCH {uri}`` (§7.5): only ``client_secret_expires_at``, only earlier."""
    credential = _owned(session, registration_id, credential_id)
    if not isinstance(body, Mapping):
        raise bad_request("the body must be a JSON object")
    if "client_secret_expires_at" not in body:
        raise bad_request("client_secret_expires_at is the only field that can be changed, and it is missing")
    value = body["client_secret_expires_at"]
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_EXPIRES_AT:
        raise bad_request("client_secret_expires_at must be an integer from 0 to "
                          f"{MAX_EXPIRES_AT} (seconds since the epoch)")
    current = credential.expires_at
    if value == current:
        return credential_json(credential, urls, box)
    epoch_now = int(now.timestamp())
    if current != 0:
        if current <= epoch_now:
            raise bad_request("this credential has already expired; create a new one instead")
        if value == 0 or value > current:
            raise bad_request(f"client_secret_expires_at can only move earlier: at most {current}")
    expire_credential(session, credential, max(value, epoch_now) if value else 0, urls=urls, box=box, now=now,
                      reason="The Client changed the expiry:")
    return credential_json(credential, urls, box)
