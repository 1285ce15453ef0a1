"""Direct access (CDS-WG3-01 §6.2, ``cds_query_*``) over HTTP: registration creates a disabled, separate Client;
the operator's ``greenbridge client enable`` after review; bounded token requests only; echoed preselections."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import REPO
from gateway_helpers import bearer, gateway_client, make_config, register, token

from cds.store.models import Message
from cds.store.models import Token as TokenRow
from cds.urls import Urls
from greenbridge import cli
from greenbridge.commands.client import ClientCommandError, list_clients, set_client_status

SCOPE = "cds_client_admin cds_usage_1 cds_query_usage_1 cds_query_meter_devices_1"
BOUNDED = {"type": "cds_query_usage_1", "meter_numbers": ["123"], "sync_until": "P0D", "segment_start": "P30D",
           "segment_end": "P0D"}
MESSAGES = "/cds-api/v1/messages"


@pytest.fixture
def config(tmp_path):
    return make_config(tmp_path)


@pytest.fixture
def client(config):
    with gateway_client(config) as test_client:
        yield test_client


def direct_token(client, auth, details, scope="cds_query_usage_1"):
    return client.post("/oauth/token", auth=auth, data={"grant_type": "client_credentials", "scope": scope,
                                                        "authorization_details": json.dumps(details)})


def test_registration_creates_a_disabled_direct_access_client_of_its_own(client):
    registration = register(client, SCOPE)
    direct = registration.client_for("cds_query_usage_1")
    consent = registration.client_for("cds_usage_1")
    admin = registration.client_for("cds_grant_admin_1")
    assert len({direct["client_id"], consent["client_id"], admin["client_id"], registration.admin_id}) == 4
    # Both direct-access scopes on one Client, and nothing else (WG3-01 §4.11: never shared with consent scopes).
    assert direct["scope"] == "cds_query_usage_1 cds_query_meter_devices_1"
    assert consent["scope"] == "cds_usage_1" and admin["scope"] == "cds_grant_admin_1"
    assert (direct["cds_status"], direct["cds_status_options"]) == ("disabled", ["disabled"])
    assert (direct["grant_types"], direct["response_types"], direct["redirect_uris"]) == (["client_credentials"], [],
                                                                                         [])
    assert direct["token_endpoint_auth_method"] == "client_secret_basic"
    assert direct["authorization_details_types"] == ["cds_query_meter_devices_1", "cds_query_usage_1"]
    assert "cds_default_scope" not in direct
    assert direct["client_id"] in registration.secrets  # a credential exists (WG1-02 §4.3), unusable while disabled
    assert consent["cds_status"] == "sandbox"

    # The pending review is announced in the registration's Messages.
    admin_token = token(client, registration.admin_auth, "cds_client_admin")["access_token"]
    messages = client.get(MESSAGES, headers=bearer(admin_token)).json()["unread"]
    notice = [m for m in messages if m.get("related_uri") == direct["cds_client_uri"]]
    assert len(notice) == 1
    assert (notice[0]["type"], notice[0]["creator"], notice[0]["related_type"]) == ("notification", None, "client")
    assert "cds_internal_review" in notice[0]["description"]

    # The Client cannot enable itself: cds_status_options is ["disabled"].
    response = client.put(direct["cds_client_uri"].replace("http://localhost", ""), headers=bearer(admin_token),
                          json={**direct, "cds_status": "production"})
    assert response.status_code == 400, response.text
    assert "cds_status" in response.json()["error_description"]


def test_direct_access_alone_creates_no_grant_admin_client(client):
    registration = register(client, "cds_client_admin cds_query_accounts_1")
    assert sorted(c["scope"] for c in registration.clients.values()) == ["cds_client_admin", "cds_query_accounts_1"]


def test_token_only_after_the_operator_enables_and_only_bounded(client, config):
    registration = register(client, SCOPE)
    direct = registration.client_for("cds_query_usage_1")
    auth = registration.auth_for("cds_query_usage_1")
    refused = direct_token(client, auth, [BOUNDED])
    assert refused.status_code == 401, refused.text
    assert refused.json()["error"] == "invalid_client"

    enabled = set_client_status(config, direct["client_id"], "enable")
    assert (enabled["cds_status"], enabled["cds_status_options"]) == ("production", ["production", "disabled"])

    # Unbounded: no preselection at all → invalid_authorization_details naming the rule.
    unbounded = direct_token(client, auth, [{k: v for k, v in BOUNDED.items() if k != "meter_numbers"}])
    assert unbounded.status_code == 400, unbounded.text
    assert unbounded.json()["error"] == "invalid_authorization_details"
    assert "bounded by a preselection" in unbounded.json()["error_description"]
    assert "meter_numbers" in unbounded.json()["error_description"]
    everything = direct_token(client, auth, [{**BOUNDED, "meter_numbers": ["_all"]}])
    assert everything.status_code == 400 and everything.json()["error"] == "invalid_authorization_details"
    bare = client.post("/oauth/token", auth=auth, data={"grant_type": "client_credentials",
                                                        "scope": "cds_query_usage_1"})
    assert bare.status_code == 400 and bare.json()["error"] == "invalid_authorization_details"  # sync_until …

    response = direct_token(client, auth, [BOUNDED])
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scope"] == "cds_query_usage_1" and "refresh_token" not in body
    assert len(body["cds_grant_ids"]) == 1
    [echoed] = body["authorization_details"]
    # Direct access echoes its preselection (WG3-01 §6 hides it only for consent scopes), defaults filled in,
    # relative values absolute.
    assert echoed["type"] == "cds_query_usage_1" and echoed["meter_numbers"] == ["123"]
    assert echoed["include_usage_segments"] is True and echoed["include_meter_numbers"] is False
    assert echoed["account_numbers"] is None
    assert len(echoed["include_usage_segment_value_types"]) >= 5
    for fid in ("sync_until", "segment_start", "segment_end"):
        assert echoed[fid][:2] == "20" and "T" in echoed[fid], fid
    assert echoed["segment_start"] < echoed["segment_end"]
    grant = client.get(f"/cds-api/v1/grants/{body['cds_grant_ids'][0]}",
                       headers=bearer(token(client, registration.admin_auth, "cds_client_admin")["access_token"]))
    assert grant.status_code == 200, grant.text

    # The other direct-access scope of the same Client, bounded by an account number.
    meters = direct_token(client, auth, [{"type": "cds_query_meter_devices_1", "sync_until": "infinite",
                                          "account_numbers": ["A-1"]}], scope="cds_query_meter_devices_1")
    assert meters.status_code == 200, meters.text


def test_enable_and_disable_write_changelog_messages_and_disable_revokes(client, config):
    registration = register(client, SCOPE)
    direct = registration.client_for("cds_query_usage_1")
    auth = registration.auth_for("cds_query_usage_1")
    set_client_status(config, direct["client_id"], "enable")
    assert set_client_status(config, direct["client_id"], "enable")["cds_status"] == "production"  # idempotent
    access = token(client, auth, "cds_query_usage_1", authorization_details=[BOUNDED])["access_token"]

    disabled = set_client_status(config, direct["client_id"], "disable")
    assert (disabled["cds_status"], disabled["cds_status_options"]) == ("disabled", ["disabled"])
    assert direct_token(client, auth, [BOUNDED]).json()["error"] == "invalid_client"
    gateway = client.app.state.gateway
    with gateway.sessions() as session:
        rows = session.query(TokenRow).filter(TokenRow.client_id == direct["client_id"]).all()
        assert rows and all(row.access_revoked for row in rows)
        changes = session.query(Message).filter(Message.related_uri == Urls(config.issuer).client(
            direct["client_id"]), Message.name.in_(["Client enabled", "Client disabled"])).order_by(
            Message.created).all()
        assert [m.name for m in changes] == ["Client enabled", "Client disabled"]  # the no-op wrote nothing
        for message in changes:
            assert (message.type, message.creator, message.related_type, message.status) == \
                ("notification", None, "client", "complete")
        assert changes[0].updates_requested == [
            {"field": "cds_status", "previous_value": "disabled", "new_value": "production"},
            {"field": "cds_status_options", "previous_value": ["disabled"], "new_value": ["production", "disabled"]}]
    assert access  # issued while enabled; revoked above


def test_list_and_errors(client, config):
    registration = register(client, SCOPE)
    direct = registration.client_for("cds_query_usage_1")
    disabled = list_clients(config, status="disabled")
    assert [c["client_id"] for c in disabled] == [direct["client_id"]]
    assert {c["client_id"] for c in list_clients(config)} == set(registration.clients)
    with pytest.raises(ClientCommandError, match="no client"):
        set_client_status(config, "nope", "enable")
    with pytest.raises(ClientCommandError, match="unknown action"):
        set_client_status(config, direct["client_id"], "promote")
    # A code-flow Client returns to sandbox (its production Client would be a new Client object, WG1-02 §4.3).
    consent = registration.client_for("cds_usage_1")
    set_client_status(config, consent["client_id"], "disable")
    assert set_client_status(config, consent["client_id"], "enable")["cds_status_options"] == ["sandbox", "disabled"]


def test_the_command_line(client, config, tmp_path, monkeypatch, capsys):
    registration = register(client, SCOPE)
    direct = registration.client_for("cds_query_usage_1")
    environ = {"GREENBRIDGE_DATA_DIR": str(tmp_path / "var"), "GREENBRIDGE_ISSUER": config.issuer,
               "GREENBRIDGE_SECRET_KEY": config.secret_key}
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    config_file = str(tmp_path / "greenbridge.toml")
    assert cli.main(["client", "--config", config_file, "list", "--status", "disabled"]) == 0
    assert capsys.readouterr().out.split("\t")[0] == direct["client_id"]
    assert cli.main(["client", "enable", direct["client_id"], "--config", config_file]) == 0
    assert "production" in capsys.readouterr().out
    assert cli.main(["client", "disable", "nope", "--config", config_file]) == 1
    assert "no client" in capsys.readouterr().err
    # And as a separate process against the same store, as an operator runs it.
    result = subprocess.run([sys.executable, "-m", "greenbridge", "client", "--config", config_file, "list",
                             "--json"], capture_output=True, text=True, cwd=REPO, timeout=120,
                            env={**os.environ, **environ})
    assert result.returncode == 0, result.stderr
    listed = {c["client_id"]: c for c in json.loads(result.stdout)}
    assert listed[direct["client_id"]]["cds_status"] == "production"
    assert token(client, registration.auth_for("cds_query_usage_1"), "cds_query_usage_1",
                 authorization_details=[BOUNDED])["cds_grant_ids"]


def test_metadata_publishes_the_direct_access_scopes_and_data_apis(client):
    body = client.get("/.well-known/oauth-authorization-server").json()
    urls = Urls("http://localhost")
    assert body["cds_usagesegments_api"] == urls.usagesegments_api
    assert body["cds_meterdevices_api"] == urls.meterdevices_api
    assert body["cds_billsection_api"] == urls.billsection_api
    assert "cds_aggregations_api" not in body and "cds_eacs_api" not in body
    usage = body["cds_scope_descriptions"]["cds_query_usage_1"]
    assert usage["registration_requirements"] == ["cds_internal_review"]
    assert body["cds_registration_fields"]["cds_internal_review"]["type"] == "internal_review"
    assert "client_credentials" in body["grant_types_supported"]
    assert "cds_query_usage_1" in body["authorization_details_types_supported"]

    # The direct-access Client's own metadata: its scopes (no Grant Admin scope: grant_admin_scope is null), the
    # registration field they reference, the same data-API URLs.
    registration = register(client, SCOPE)
    admin_token = token(client, registration.admin_auth, "cds_client_admin")["access_token"]
    direct = registration.client_for("cds_query_usage_1")
    server = client.get(direct["cds_server_metadata"].replace("http://localhost", ""), headers=bearer(admin_token))
    assert server.status_code == 200, server.text
    own = client.get(server.json()["oauth_metadata"].replace("http://localhost", ""), headers=bearer(admin_token))
    assert own.status_code == 200, own.text
    own = own.json()
    assert sorted(own["cds_scope_descriptions"]) == ["cds_query_meter_devices_1", "cds_query_usage_1"]
    assert list(own["cds_registration_fields"]) == ["cds_internal_review"]
    assert own["cds_usagesegments_api"] == body["cds_usagesegments_api"]
    consent = registration.client_for("cds_usage_1")
    theirs = client.get(consent["cds_server_metadata"].replace("http://localhost", ""), headers=bearer(admin_token))
    theirs = client.get(theirs.json()["oauth_metadata"].replace("http://localhost", ""), headers=bearer(admin_token))
    assert theirs.json()["cds_registration_fields"] == {}
    assert theirs.json()["cds_usagesegments_api"] == body["cds_usagesegments_api"]


def test_the_preselection_rule_in_the_rar_validator():
    """cds/authorization_details.py: cds_query_* entries must be bounded; consent scopes are untouched."""
    from datetime import UTC, datetime

    from cds import authorization_details as rar
    from cds.scopes import build_scope_descriptions, metadata_json

    descriptions = metadata_json(build_scope_descriptions(documentation_base="https://g.example/docs",
                                                          timezone="UTC"))
    now = datetime(2026, 11, 22, tzinfo=UTC)

    def check(entry, scope="cds_query_usage_1", flow="client_credentials"):
        return rar.validate_authorization_details([entry], scopes=[scope], descriptions=descriptions,
                                                  client_types=None, timezone="UTC", now=now, flow=flow)

    assert check(BOUNDED).echoed[0]["meter_numbers"] == ["123"]
    assert check({**BOUNDED, "meter_numbers": None, "addresses": ["1 Main St"]}).effective[0]["addresses"]
    for value, message in ((None, "bounded by a preselection"), (["_all"], "authorization form"),
                           (["123", "_include_future"], "authorization form")):
        with pytest.raises(rar.AuthorizationDetailsError, match=message) as caught:
            check({**BOUNDED, "meter_numbers": value})
        assert caught.value.error == "invalid_authorization_details"
    # Consent scopes keep their null preselections (the customer selects on the form).
    assert check({"type": "cds_usage_1"}, scope="cds_usage_1", flow="authorization_code").effective[0][
        "meter_numbers"] is None
    # Aggregated direct access is exempt (as another server might offer it).
    aggregations = json.loads(json.dumps(descriptions["cds_query_usage_1"]))
    aggregations.update(id="cds_query_aggregations_1", type="cds_query_aggregations",
                        authorization_details_types_supported=["cds_query_aggregations_1"])
    for fd in aggregations["authorization_details_fields_supported"]:
        fd["for_types"] = ["cds_query_aggregations_1"]
    unbounded = {**BOUNDED, "type": "cds_query_aggregations_1", "meter_numbers": None}
    assert rar.validate_authorization_details([unbounded], scopes=["cds_query_aggregations_1"],
                                              descriptions={"cds_query_aggregations_1": aggregations},
                                              client_types=None, timezone="UTC", now=now, flow="client_credentials")


def test_an_enabled_client_cannot_add_reviewed_scopes_through_put(client, config):
    registration = register(client, "cds_client_admin cds_query_meter_devices_1")
    direct = registration.client_for("cds_query_meter_devices_1")
    set_client_status(config, direct["client_id"], "enable")
    admin = token(client, registration.admin_auth, "cds_client_admin")["access_token"]
    current = client.get(direct["cds_client_uri"], headers=bearer(admin)).json()
    response = client.put(direct["cds_client_uri"], headers=bearer(admin),
                          json={**current, "scope": "cds_query_meter_devices_1 cds_query_usage_1"})
    assert response.status_code == 400 and "review" in response.json()["error_description"]
    unchanged = client.get(direct["cds_client_uri"], headers=bearer(admin)).json()
    assert unchanged["scope"] == "cds_query_meter_devices_1"
    # narrowing an already reviewed client stays possible
    response = client.put(direct["cds_client_uri"], headers=bearer(admin), json=unchanged)
    assert response.status_code == 200


def test_bound_direct_access_reads_only_its_customer_and_preselection(client, config, sample):
    """The operator binds a reviewed direct-access client to one customer; its tokens read that customer's data,
    narrowed by the preselection it must send; an unbound client reads nothing."""
    from bridge.ingest import ingest_file

    with client.app.state.gateway.sessions() as session, session.begin():
        ingest_file(session, sample("hydroone_Retail_Customer_redacted.xml"), customer_id="customer-1")
        ingest_file(session, sample("cmdtest_threeusagepointsonecustomer.xml"), customer_id="customer-2")
    registration = register(client, "cds_client_admin cds_query_accounts_1")
    direct = registration.client_for("cds_query_accounts_1")
    auth = registration.auth_for("cds_query_accounts_1")

    set_client_status(config, direct["client_id"], "enable")
    unbound = token(client, auth, "cds_query_accounts_1",
                    authorization_details=[{"type": "cds_query_accounts_1", "account_numbers": ["x"],
                                            "sync_until": "P0D"}])
    assert client.get("/cds-api/v1/accounts", headers=bearer(unbound["access_token"])).status_code == 403

    with pytest.raises(ClientCommandError):  # only direct-access clients are bound
        set_client_status(config, registration.admin_id, "enable", customer_id="customer-1")
    set_client_status(config, direct["client_id"], "enable", customer_id="customer-1")
    with pytest.raises(ClientCommandError, match="already bound"):
        set_client_status(config, direct["client_id"], "enable", customer_id="customer-2")

    with client.app.state.gateway.sessions() as session:
        from cds.store.objects import load_objects

        numbers = [a.get("account_number") for a in load_objects(session, ["customer-1"], "accounts")]
    numbers = [n for n in numbers if n]
    assert numbers, "the customer sample holds account numbers"
    details = [{"type": "cds_query_accounts_1", "account_numbers": [numbers[0]], "sync_until": "P0D",
                "include_account_numbers": True}]
    bound = token(client, auth, "cds_query_accounts_1", authorization_details=details)
    accounts = client.get("/cds-api/v1/accounts", headers=bearer(bound["access_token"])).json()["accounts"]
    assert [a["account_number"] for a in accounts] == [numbers[0]]
    # the preselection is echoed for direct access, and narrows: another number sees nothing
    assert bound["authorization_details"][0]["account_numbers"] == [numbers[0]]
    other = token(client, auth, "cds_query_accounts_1", authorization_details=[
        {**details[0], "account_numbers": ["no-such-account"]}])
    assert client.get("/cds-api/v1/accounts", headers=bearer(other["access_token"])).json()["accounts"] == []
