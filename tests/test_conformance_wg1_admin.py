"""Conformance with the remaining CDS-WG1-02 examples (Clients, Messages, Credentials, Grants, Grant Admin token;
WG1-02 §12.5–12.21) and the WG3-01 examples that are WG1-02 objects (§13.1.2–13.4.3): the gateway produces the
equivalent object over its HTTP API, and it has the same keys and JSON value types as the example.

The shape comparison is ``compare`` from test_conformance_wg1 (see its docstring: null in the example matches
anything, arrays compare element shapes against the merged example elements, maps keyed by ids compare values).
Its exemption tables are keyed by that module's examples, so this module filters ``compare``'s findings through
its own tables below, one per example file, each entry with the reason:

* ``EXTRA_KEYS``: keys our object has and the example lacks, only where the spec requires them (errata of the
  example) or where the spec explicitly allows them (marked "allowed");
* ``MISSING_KEYS``: keys the example has and ours may lack;
* ``TYPE_EXEMPT``: paths where our JSON type differs because the example is wrong;
* ``RAR_BY_TYPE``: ``authorization_details`` arrays whose entries are of a RAR type this server does not have (the
  keys of an entry depend on its type). Their contents are checked against our own AS metadata instead
  (``test_our_authorization_details_follow_our_metadata``); arrays not listed compare strictly.

``test_every_exemption_is_still_needed`` fails when an exemption no longer matches a finding.
Runs on SQLite only: this is about shapes, which the store backend does not change.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from gateway_helpers import BASE_URL, Registration, bearer, consent_flow, gateway_client, make_config, token
from test_conformance_wg1 import compare, json_type, load

from cds import authorization_details as rar
from cds.grants import create_grant
from cds.store.models import Client

API = "/cds-api/v1"
WG1_SCOPE = "cds_client_admin cds_usage_1"
# The WG3-01 §13.1.2 request without its direct-access scopes cds_query_accounts_1 / cds_query_bill_statements_1:
# here they need internal review and a client of their own (tests/test_direct_access.py), which would change the
# set of clients the example shows; cds_accounts_1 (the consent-scope equivalent) stands in for the accounts one.
WG3_SCOPE = "cds_client_admin cds_grant_admin_1 cds_accounts_1 cds_service_contracts_1 cds_usage_1"
RAR_KEYS = ("authorization_details", "enabled_authorization_details", "cds_default_authorization_details")

CONTACTS = "erratum (cds-spec §6.3): `contacts` is a REQUIRED Client field (WG1-02 §5.2), missing in every example"
CODE_ONLY = ("the example has it only on its code-flow Client too: REQUIRED only when response_types is non-empty "
             "(WG1-02 §5.2); test_code_flow_clients_have_their_defaults checks ours")
COMPANY = ("a registration value this server documents as a Client field (WG1-02 §5.2 MAY); like the example, only "
           "the Client whose PUT set it has it")
PURPOSES = ("WG3-01 §8 OPTIONAL `cds_purposes`: this server offers no `purpose` field (no purposes), so its "
            "Clients have none")
UPDATES = ("allowed, not required: OPTIONAL Message field (WG1-02 §6.2); our changelog notifications list the "
           "changed fields in it (cds/messages.py). The only added key the spec does not require")
FILES_RAR = ("the example's RAR type cds_server_provided_files_01 is not offered here (no Server-Provided Files "
             "scope, §3.12 optional); our entries are checked against our AS metadata")
AD_RAR = ("the example's `…ad` RAR types (cds-spec §6.1 item 1) and `purpose`: ours use the scope id as type "
          "(WG1-02 §3.4) and offer no purpose; our entries are checked against our AS metadata")
PARENT = "erratum (cds-spec §6.3): WG3 grants show `\"parent\": []`; WG1-02 §8.2 says string or null"
STATES = "erratum (cds-spec §6.1 item 17): `states` is a REQUIRED Grant field (WG1-02 §8.2), missing in WG3-01"
GRANT_IDS = ("erratum (cds-spec §6.3): a Grant Admin token reads an existing grant and creates or modifies none, so "
             "cds_grant_ids MUST be absent (WG1-02 §8.4); test_grant_admin_token_has_no_cds_grant_ids checks ours")
CLIENT_NAME = "`client_name` is a REQUIRED Client field (WG1-02 §5.2; defaults to the client_id), missing here"
RELATED_TYPE = ("erratum: `related_type` is REQUIRED when `related_uri` is present (WG1-02 §6.2); the WG3 list "
                "example has it for the same message")


EXTRA_KEYS: dict[str, dict[str, str]] = {
    "wg1-02_clients-list.json": {"$.clients[].contacts": CONTACTS},
    "wg1-02_client-get.json": {"$.contacts": CONTACTS},
    "wg1-02_client-modify-response.json": {
        "$.contacts": CONTACTS,
        "$.client_name": CLIENT_NAME + " (the PUT example omits it, so ours is reset to the default, §5.5)",
    },
    "wg1-02_messages-list.json": {"$.unread[].updates_requested": UPDATES},
    "wg1-02_message-get.json": {"$.updates_requested": UPDATES},
    "wg1-02_message-modify-response.json": {"$.updates_requested": UPDATES},
    "wg3-01_clients-list.json": {"$.clients[].contacts": CONTACTS},
    "wg3-01_client-registration-response.json": {"$.contacts": CONTACTS},
    "wg3-01_client-modify-response.json": {"$.contacts": CONTACTS},
    "wg3-01_grants-list-customer-authorized.json": {"$.grants[].states": STATES},
    "wg3-01_grant-get-server-created.json": {"$.states": STATES, "$.grants[].states": STATES},
    "wg3-01_message-grant-request-create-response.json": {"$.related_type": RELATED_TYPE},
}

MISSING_KEYS: dict[str, dict[str, str]] = {
    "wg1-02_clients-list.json": {
        "$.clients[].cds_default_scope": CODE_ONLY,
        "$.clients[].cds_default_redirect_uri": CODE_ONLY,
        "$.clients[].cds_default_authorization_details": CODE_ONLY,
        "$.clients[].cds_company_name": COMPANY,
    },
    "wg1-02_token-response-grant-admin-server-provided-files.json": {"$.cds_grant_ids": GRANT_IDS},
    "wg3-01_clients-list.json": {
        "$.clients[].cds_default_scope": CODE_ONLY,
        "$.clients[].cds_default_redirect_uri": CODE_ONLY,
        "$.clients[].cds_default_authorization_details": CODE_ONLY,
        "$.clients[].cds_purposes": PURPOSES,
    },
    "wg3-01_client-modify-response.json": {"$.cds_purposes": PURPOSES},
}

TYPE_EXEMPT: dict[str, dict[str, str]] = {
    "wg3-01_grants-list-customer-authorized.json": {"$.grants[].parent": PARENT},
    "wg3-01_grant-get-server-created.json": {"$.parent": PARENT, "$.grants[].parent": PARENT},
}

RAR_BY_TYPE: dict[str, dict[str, str]] = {
    "wg1-02_grants-list.json": {"$.grants[].authorization_details[]": FILES_RAR,
                                "$.grants[].enabled_authorization_details[]": FILES_RAR},
    "wg1-02_grant-get.json": {"$.authorization_details[]": FILES_RAR, "$.enabled_authorization_details[]": FILES_RAR},
    # Closing empties enabled_authorization_details (§8.2), so only authorization_details is compared.
    "wg1-02_grant-modify-response.json": {"$.authorization_details[]": FILES_RAR},
    "wg3-01_grants-list-customer-authorized.json": {"$.grants[].authorization_details[]": AD_RAR,
                                                    "$.grants[].enabled_authorization_details[]": AD_RAR},
    "wg3-01_token-response-authorization-code.json": {"$.authorization_details[]": AD_RAR},
}

# (case id, example file, the part of the example ours is compared with). A case id names one produced object.
CASES: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("wg1-02 clients list", "wg1-02_clients-list.json", lambda e: e),
    ("wg1-02 client get", "wg1-02_client-get.json", lambda e: e),
    ("wg1-02 client PUT", "wg1-02_client-modify-response.json", lambda e: e),
    ("wg1-02 messages list", "wg1-02_messages-list.json", lambda e: e),
    ("wg1-02 message create", "wg1-02_message-create-response.json", lambda e: e),
    ("wg1-02 message get", "wg1-02_message-get.json", lambda e: e),
    ("wg1-02 message PATCH", "wg1-02_message-modify-response.json", lambda e: e),
    ("wg1-02 credentials list", "wg1-02_credentials-list.json", lambda e: e),
    ("wg1-02 credential create", "wg1-02_credential-create-response.json", lambda e: e),
    ("wg1-02 credential get", "wg1-02_credential-get.json", lambda e: e),
    ("wg1-02 credential PATCH", "wg1-02_credential-modify-response.json", lambda e: e),
    ("wg1-02 grants list", "wg1-02_grants-list.json", lambda e: e),
    ("wg1-02 grant get", "wg1-02_grant-get.json", lambda e: e),
    ("wg1-02 grant PATCH", "wg1-02_grant-modify-response.json", lambda e: e),
    ("wg1-02 grant admin details", "wg1-02_authorization-details-grant-admin-token-request.json", lambda e: e),
    ("wg1-02 grant admin token", "wg1-02_token-response-grant-admin-server-provided-files.json", lambda e: e),
    ("wg3-01 registration", "wg3-01_client-registration-response.json", lambda e: e),
    ("wg3-01 admin token", "wg3-01_token-response-client-admin.json", lambda e: e),
    ("wg3-01 clients list", "wg3-01_clients-list.json", lambda e: e),
    ("wg3-01 credentials list", "wg3-01_credentials-list.json", lambda e: e),
    ("wg3-01 client PUT", "wg3-01_client-modify-response.json", lambda e: e),
    ("wg3-01 code token", "wg3-01_token-response-authorization-code.json", lambda e: e),
    ("wg3-01 grants list", "wg3-01_grants-list-customer-authorized.json", lambda e: e),
    # WG3-01 §13.4.3 wraps the single grant of GET /grants/{id} in a list (cds-spec §6.1 item 15). We follow
    # WG1-02 §8.6 and return a bare Grant: it is compared with the list's element. The wrapper shape is what our
    # Grants list answers for `grant_ids={id}`; that is compared with the whole example.
    ("wg3-01 server grant get", "wg3-01_grant-get-server-created.json", lambda e: e["grants"][0]),
    ("wg3-01 server grant listed", "wg3-01_grant-get-server-created.json", lambda e: e),
    ("wg3-01 grant request create", "wg3-01_message-grant-request-create-response.json", lambda e: e),
    ("wg3-01 grant request listed", "wg3-01_messages-list-grant-request-reply.json", lambda e: e),
]


# ----------------------------------------------------------------------------------------------------------------
# Comparison with this module's exemptions
# ----------------------------------------------------------------------------------------------------------------
def _exemption(name: str, problem: str) -> tuple[str, str] | None:
    """(table, path) of the exemption that covers one ``compare`` finding, or None."""
    path, _, kind = problem.partition(": ")
    for prefix in RAR_BY_TYPE.get(name, {}):
        if path.startswith(prefix + "."):
            return "RAR_BY_TYPE", prefix
    label, table = {"not in the example": ("EXTRA_KEYS", EXTRA_KEYS),
                    "missing": ("MISSING_KEYS", MISSING_KEYS)}.get(kind, ("TYPE_EXEMPT", TYPE_EXEMPT))
    return (label, path) if path in table.get(name, {}) else None


def findings(ours: Any, example: Any, name: str) -> list[str]:
    # compare() is called with this module's case name, for which test_conformance_wg1 has no exemptions.
    return sorted(set(compare(ours, example, name)))


def differences(ours: Any, example: Any, name: str) -> list[str]:
    return [p for p in findings(ours, example, name) if _exemption(name, p) is None]


# ----------------------------------------------------------------------------------------------------------------
# The gateway side
# ----------------------------------------------------------------------------------------------------------------
def rel(url: str) -> str:
    assert url.startswith(BASE_URL + "/"), url
    return url[len(BASE_URL):]


def adapted(name: str, *, drop: tuple[str, ...] = (), **values: Any) -> dict[str, Any]:
    """An example request with our ids, URLs and scopes in place of the example's: the same keys (minus ``drop``)."""
    example = load(name)
    assert set(values) <= set(example) and set(drop) <= set(example), (name, set(values) - set(example))
    return {key: values.get(key, value) for key, value in example.items() if key not in drop}


class Api:
    """The HTTP calls of one registration, authenticated with its Client Admin token."""

    def __init__(self, client, body: dict[str, Any]) -> None:
        self.client = client
        response = client.post("/oauth/register", json=body)
        assert response.status_code == 201, response.text
        self.registration_response = response.json()
        self.registration = Registration(self.registration_response["client_id"],
                                         self.registration_response["client_secret"])
        self.admin_token = token(client, self.registration.admin_auth, "cds_client_admin")
        self.headers = bearer(self.admin_token["access_token"])
        for item in self.get(f"{API}/clients")["clients"]:
            self.registration.clients[item["client_id"]] = item
        for item in self.get(f"{API}/credentials")["credentials"]:
            self.registration.secrets[item["client_id"]] = item["client_secret"]

    def call(self, method: str, url: str, status: int = 200, **kwargs: Any) -> Any:
        response = self.client.request(method, rel(url) if url.startswith("http") else url, headers=self.headers,
                                       **kwargs)
        assert response.status_code == status, (method, url, response.text)
        return response.json()

    def get(self, url: str, **kwargs: Any) -> Any:
        return self.call("GET", url, **kwargs)

    def code_client(self) -> dict[str, Any]:
        return next(c for c in self.registration.clients.values() if c["response_types"])


def wg1_02(client, produced: dict[str, Any]) -> None:
    """WG1-02 §12.5–12.19 on a registration for cds_client_admin and cds_usage_1 (admin, code-flow and Grant Admin
    Clients). Registered without cds_company_name: the example's Client Admin has none (its PUT example adds one)."""
    api = Api(client, {"scope": WG1_SCOPE, "client_name": "My App Name"})
    code = api.code_client()
    consent = consent_flow(client, api.registration, "cds_usage_1")
    grant_id = consent["cds_grant_ids"][0]

    # §12.19: a Grant Admin client_credentials token for the grant the customer just authorized.
    details = [{**entry, "client_id": code["client_id"], "grant_id": grant_id}
               for entry in load("wg1-02_authorization-details-grant-admin-token-request.json")]
    produced["wg1-02 grant admin details"] = details
    produced["wg1-02 grant admin token"] = token(client, api.registration.auth_for("cds_grant_admin_1"),
                                                 "cds_grant_admin_1", authorization_details=details)

    # §12.9 and an outstanding production_request like the one in §12.8.
    produced["wg1-02 message create"] = api.call(
        "POST", f"{API}/messages", 201, json=load("wg1-02_message-create-request.json"))
    api.call("POST", f"{API}/messages", 201, json={
        "type": "production_request", "name": "Production access request", "description": "Please review us.",
        "related_uri": code["cds_client_uri"], "related_type": "client"})

    # §12.12–12.15
    created = api.call("POST", f"{API}/credentials", 201,
                       json=adapted("wg1-02_credential-create-request.json", client_id=code["client_id"]))
    produced["wg1-02 credential create"] = created
    produced["wg1-02 credential get"] = api.get(created["uri"])
    # The example's 1760125049 (2025-10-10) is now in the past; an hour from now keeps the secret working.
    produced["wg1-02 credential PATCH"] = api.call("PATCH", created["uri"], json=adapted(
        "wg1-02_credential-modify-request.json", client_secret_expires_at=int(time.time()) + 3600))
    produced["wg1-02 credentials list"] = api.get(f"{API}/credentials")

    # §12.5–12.7: the PUT example sent to our code-flow Client (its default redirect URI plus a new one).
    new_redirect = "https://client.example.com/my-new-redirect"
    produced["wg1-02 client PUT"] = api.call("PUT", code["cds_client_uri"], json=adapted(
        "wg1-02_client-modify-request.json", scope="cds_usage_1",
        redirect_uris=[code["cds_default_redirect_uri"], new_redirect],
        authorization_details_types=["cds_usage_1"], cds_default_scope="cds_usage_1",
        cds_default_redirect_uri=new_redirect))
    produced["wg1-02 client get"] = api.get(api.registration_response["cds_client_uri"])
    produced["wg1-02 clients list"] = api.get(f"{API}/clients")

    # §12.8, 12.10, 12.11: a Server-created (changelog) notification, unread, then marked read.
    messages = api.get(f"{API}/messages")
    produced["wg1-02 messages list"] = messages
    notification = next(m for m in messages["unread"] if m["type"] == "notification")
    produced["wg1-02 message get"] = api.get(notification["uri"])
    produced["wg1-02 message PATCH"] = api.call(
        "PATCH", notification["uri"], json=load("wg1-02_message-modify-request.json"))

    # §12.16–12.18 (closing the consent grant last: the Grant Admin token above needed it enabled).
    produced["wg1-02 grants list"] = api.get(f"{API}/grants")
    grant_uri = f"{BASE_URL}{API}/grants/{grant_id}"
    produced["wg1-02 grant get"] = api.get(grant_uri)
    produced["wg1-02 grant PATCH"] = api.call("PATCH", grant_uri, json=load("wg1-02_grant-modify-request.json"))
    produced["wg1-02 code client"] = code


def wg3_01(client, produced: dict[str, Any]) -> None:
    """WG3-01 §13.1.2–13.4.3 on a registration for the consent scopes of the example (see WG3_SCOPE)."""
    # invite_code dropped: this server defines no such registration field (only cds_internal_review, of type
    # internal_review, for the direct-access scopes).
    api = Api(client, adapted("wg3-01_client-registration-request.json", drop=("invite_code",), scope=WG3_SCOPE))
    produced["wg3-01 registration"] = api.registration_response
    produced["wg3-01 admin token"] = api.admin_token  # the first one: it created the admin Grant (§8.4)
    produced["wg3-01 clients list"] = api.get(f"{API}/clients")
    produced["wg3-01 credentials list"] = api.get(f"{API}/credentials")
    code = api.code_client()

    # §13.4.1–13.4.2: a grant_request for our code-flow Client, listed before anything else wrote a Message (the
    # example's unread request_update is a Server answer this server has no way to write; it is compared with
    # nothing). Ours also lists the pending grant_request under outstanding, as WG1-02 §6.3 says; the example's
    # outstanding list is empty (an inconsistency of the example), so it too is compared with nothing.
    request = load("wg3-01_message-grant-request-create-request.json")
    request["related_uri"] = code["cds_client_uri"]
    request["grants_requested"] = [
        {"scope": "cds_accounts_1",
         "authorization_details": [{**entry, "type": "cds_accounts_1"} for entry in wanted["authorization_details"]]}
        for wanted in request["grants_requested"]]
    message = api.call("POST", f"{API}/messages", 201, json=request)
    produced["wg3-01 grant request create"] = message
    listed = api.get(f"{API}/messages")
    assert listed["unread"] == [], listed["unread"]
    produced["wg3-01 grant request listed"] = listed

    # §13.3.3, §13.3.6
    produced["wg3-01 code token"] = consent_flow(client, api.registration, "cds_service_contracts_1 cds_usage_1")
    produced["wg3-01 grants list"] = api.get(f"{API}/grants", params={"client_ids": code["client_id"]})

    # §13.4.3: the Server grants the request (there is no HTTP API for that: the operator's side, in the store).
    gateway = client.app.state.gateway
    with gateway.sessions() as session, session.begin():
        row = session.get(Client, code["client_id"])
        wanted = message["grants_requested"][0]
        checked = rar.validate_authorization_details(
            rar.parse_authorization_details(wanted["authorization_details"]), scopes=wanted["scope"].split(),
            descriptions=gateway.descriptions, client_types=row.authorization_details_types,
            timezone=gateway.config.timezone, now=datetime.now(UTC), flow="client_credentials")
        assert checked.effective  # the request is one the Server can grant
        server_grant_id = create_grant(session, row, scope=wanted["scope"],
                                       authorization_details=wanted["authorization_details"],
                                       box=gateway.box).grant_id
    produced["wg3-01 server grant get"] = api.get(f"{API}/grants/{server_grant_id}")
    produced["wg3-01 server grant listed"] = api.get(f"{API}/grants", params={"grant_ids": server_grant_id})

    # §13.3.1: the PUT example without cds_purposes (see PURPOSES).
    produced["wg3-01 client PUT"] = api.call("PUT", code["cds_client_uri"], json=adapted(
        "wg3-01_client-modify-request.json", drop=("cds_purposes",), scope=code["scope"],
        redirect_uris=[code["cds_default_redirect_uri"], "https://energy-app.example.com/redirect"],
        authorization_details_types=code["authorization_details_types"], cds_default_scope=code["scope"],
        cds_default_redirect_uri=code["cds_default_redirect_uri"]))


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, Any]:
    """Every object under test, produced once over HTTP by one gateway (SQLite)."""
    tmp_path = tmp_path_factory.mktemp("conformance-admin")
    produced: dict[str, Any] = {}
    with gateway_client(make_config(tmp_path)) as client:
        produced["oauth metadata"] = client.get("/.well-known/oauth-authorization-server").json()
        wg1_02(client, produced)
        wg3_01(client, produced)
    return produced


# ----------------------------------------------------------------------------------------------------------------
# Tests
# ----------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("case", "name", "part"), CASES, ids=[case for case, _, _ in CASES])
def test_same_shape_as_the_example(produced, case, name, part):
    assert differences(produced[case], part(load(name)), name) == []


def test_every_exemption_is_still_needed(produced):
    """Each exemption covers a finding of at least one case of its example; stale ones must go."""
    used: set[tuple[str, str, str]] = set()
    for case, name, part in CASES:
        for problem in findings(produced[case], part(load(name)), name):
            exemption = _exemption(name, problem)
            if exemption is not None:
                used.add((name, *exemption))
    declared = {(name, label, path) for label, table in (("EXTRA_KEYS", EXTRA_KEYS), ("MISSING_KEYS", MISSING_KEYS),
                                                         ("TYPE_EXEMPT", TYPE_EXEMPT), ("RAR_BY_TYPE", RAR_BY_TYPE))
                for name, paths in table.items() for path in paths}
    assert sorted(declared - used) == []


def test_the_adapted_requests_keep_the_example_keys(produced):
    """The requests we sent are the examples with our values (checked in ``adapted``); the Grant Admin request's
    authorization_details, and our token's echo of it, have exactly the example's keys and types."""
    name = "wg1-02_authorization-details-grant-admin-token-request.json"
    assert compare(produced["wg1-02 grant admin token"]["authorization_details"], load(name), name) == []
    assert produced["wg1-02 grant admin token"]["authorization_details"] == produced["wg1-02 grant admin details"]


def test_grant_admin_token_has_no_cds_grant_ids(produced):
    """WG1-02 §8.4: cds_grant_ids is absent when no grant was created or modified; a Grant Admin token only reads
    the grant it names. The §12.19 example (and WG3 §13.3.7/§13.4.4) show one anyway: an erratum."""
    ours = produced["wg1-02 grant admin token"]
    assert "cds_grant_ids" not in ours
    assert ours["scope"] == "cds_grant_admin_1"
    assert "refresh_token" not in ours  # client_credentials (RFC 6749 §4.4.3)


def test_code_flow_clients_have_their_defaults(produced):
    """The merged-list exemptions CODE_ONLY do not hide a code-flow Client without the fields REQUIRED for it."""
    for case in ("wg1-02 clients list", "wg3-01 clients list"):
        for item in produced[case]["clients"]:
            has = {"cds_default_scope", "cds_default_redirect_uri", "cds_default_authorization_details"} & set(item)
            assert (len(has) == 3) == bool(item["response_types"]), (case, item)
    assert produced["wg1-02 client PUT"]["cds_company_name"] == "My Company Name"


def test_no_server_provided_files_scope(produced):
    """wg1-02_server-provided-files-list.json and wg1-02_server-provided-file-get.json have no equivalent here.

    The Server-Provided Files API (WG1-02 §9, cds-spec §3.12) is reached only with Grant Admin tokens for grants of
    a `cds_server_provided_files` scope, and offering such a scope is optional. This gateway translates Green
    Button data and has no ad-hoc files to provide, so it offers none; then `cds_server_provided_files_api`, REQUIRED
    only with such a scope (WG1-02 §3.2), must not be published either.
    """
    metadata = produced["oauth metadata"]
    assert "cds_server_provided_files_api" not in metadata
    types = {d["type"] for d in metadata["cds_scope_descriptions"].values()}
    assert "cds_server_provided_files" not in types


def _rar_entries(document: Any, path: str = "$") -> Iterator[tuple[str, Any]]:
    if isinstance(document, dict):
        for key, value in document.items():
            if key in RAR_KEYS and isinstance(value, list):
                for index, entry in enumerate(value):
                    yield f"{path}.{key}[{index}]", entry
            else:
                yield from _rar_entries(value, f"{path}.{key}")
    elif isinstance(document, list):
        for index, value in enumerate(document):
            yield from _rar_entries(value, f"{path}[{index}]")


# The JSON types a field of each WG1-02 §3.9 / WG3-01 §5.1 format may take.
FORMAT_TYPES = {
    "boolean": {"boolean"}, "string": {"string"}, "string_or_null": {"string", "null"},
    "string_list": {"array"}, "string_list_or_null": {"array", "null"},
    "choice": {"string"}, "choice_or_null": {"string", "null"},
    "choice_list": {"array"}, "choice_list_or_null": {"array", "null"},
    "relative_or_absolute_date": {"string"}, "relative_or_absolute_datetime": {"string"},
    "int": {"number"}, "decimal": {"number"}, "jwk_or_null": {"object", "null"},
}


def test_our_authorization_details_follow_our_metadata(produced):
    """Every RAR entry we produced (where RAR_BY_TYPE skips the example's) has a type and fields of our metadata."""
    metadata = produced["oauth metadata"]
    fields: dict[str, dict[str, str]] = {}
    for description in metadata["cds_scope_descriptions"].values():
        for field in description["authorization_details_fields_supported"]:
            for type_ in field["for_types"]:
                fields.setdefault(type_, {})[field["id"]] = field["format"]
    seen = 0
    for case, _, _ in CASES:
        for where, entry in _rar_entries(produced[case]):
            seen += 1
            assert isinstance(entry, dict) and entry.get("type") in metadata["authorization_details_types_supported"]
            for key, value in entry.items():
                if key == "type":
                    continue
                assert key in fields[entry["type"]], (case, where, key)
                assert json_type(value) in FORMAT_TYPES[fields[entry["type"]][key]], (case, where, key, value)
    assert seen >= 10


def test_the_filter_applies_only_listed_exemptions():
    assert differences({"contacts": []}, {}, "wg1-02_client-get.json") == []
    assert differences({"contacts": []}, {}, "wg1-02_credential-get.json") == ["$.contacts: not in the example"]
    assert differences({"authorization_details": [{"x": 1}]}, {"authorization_details": [{"y": 1}]},
                       "wg1-02_grant-get.json") == []
    assert differences({"parent": None}, {"parent": []}, "wg3-01_grant-get-server-created.json") == []
    assert differences({"parent": None}, {"parent": []}, "wg3-01_grants-list-customer-authorized.json") == [
        "$.parent: null where the example has array"]
    assert differences({}, {"a": 1}, "wg1-02_grant-get.json") == ["$.a: missing"]
